//! `clickward affiliate`: add, list.

use super::slug;
use clap::Subcommand;
use clickward_core::link::Status;
use clickward_store::{AffiliateInput, SaveMode, Store};

/// `clickward affiliate …`
#[derive(Debug, Subcommand)]
pub enum AffiliateCmd {
    /// Create an affiliate.
    Add {
        /// Slug.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List affiliates.
    List,
}

/// Runs `clickward affiliate …`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, cmd: AffiliateCmd) -> anyhow::Result<()> {
    match cmd {
        AffiliateCmd::Add { slug: s, name } => {
            let a = store
                .save_affiliate(
                    AffiliateInput {
                        name: name.unwrap_or_else(|| s.clone()),
                        slug: slug(&s, "affiliate")?,
                        status: Status::Active,
                    },
                    SaveMode::Create,
                )
                .await?;
            outln!("created affiliate {}", a.slug);
        }
        AffiliateCmd::List => {
            for a in store.list_affiliates().await? {
                outln!(
                    "{:<24} {:<10} {:<8} {}",
                    a.slug,
                    a.status.as_str(),
                    a.owner.as_str(),
                    a.name
                );
            }
        }
    }
    Ok(())
}
