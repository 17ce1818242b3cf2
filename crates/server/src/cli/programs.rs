//! `clickward program`: add, list (with postback tokens).

use super::slug;
use clap::Subcommand;
use clickward_core::link::Status;
use clickward_store::{ProgramInput, SaveMode, Store};

/// `clickward program …`
#[derive(Debug, Subcommand)]
pub enum ProgramCmd {
    /// Create a program.
    Add {
        /// Slug.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List programs.
    List,
}

/// Runs `clickward program …`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, cmd: ProgramCmd) -> anyhow::Result<()> {
    match cmd {
        ProgramCmd::Add { slug: s, name } => {
            let p = store
                .save_program(
                    ProgramInput {
                        name: name.unwrap_or_else(|| s.clone()),
                        slug: slug(&s, "program")?,
                        status: Status::Active,
                        settings: None,
                    },
                    SaveMode::Create,
                )
                .await?;
            outln!("created program {}", p.slug);
        }
        ProgramCmd::List => {
            crate::services::catalog::ensure_postback_tokens(store).await?;
            outln!(
                "{:<24} {:<10} {:<8} {:<34} {:<8} name",
                "slug",
                "status",
                "currency",
                "postback token",
                "owner"
            );
            for p in store.list_programs().await? {
                let s = store.program_settings(p.id).await?;
                outln!(
                    "{:<24} {:<10} {:<8} {:<34} {:<8} {}",
                    p.slug,
                    p.status.as_str(),
                    s.currency,
                    s.postback_token.as_deref().unwrap_or("-"),
                    p.owner.as_str(),
                    p.name
                );
            }
        }
    }
    Ok(())
}
