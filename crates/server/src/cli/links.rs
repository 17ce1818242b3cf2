//! `clickward link`: add, list, disable.

use super::slug;
use crate::services::reports::parse_kv;
use anyhow::Context;
use clap::Subcommand;
use clickward_core::id::{LinkCode, Slug};
use clickward_core::link::{Destination, RedirectStatus, Status, UtmDefaults};
use clickward_store::{LinkInput, SaveMode, Store};

/// `clickward link …`
#[derive(Debug, Subcommand)]
pub enum LinkCmd {
    /// Create a link.
    Add {
        /// Code used in /r/{code}, /ref/{code}, /go?id={code}.
        #[arg(long)]
        code: String,
        /// Program slug.
        #[arg(long)]
        program: String,
        /// Affiliate slug.
        #[arg(long)]
        affiliate: Option<String>,
        /// Destination URL; may use {click_id} {code} {affiliate} {program} {src} {sub1}..{sub5}.
        #[arg(long)]
        destination: String,
        /// 302 (default) or 307.
        #[arg(long)]
        redirect: Option<u16>,
        /// UTM default, e.g. --utm utm_source=newsletter (repeatable).
        #[arg(long, value_parser = parse_kv)]
        utm: Vec<(String, String)>,
    },
    /// List links.
    List,
    /// Disable a link (it answers 404 or the fallback URL; its clicks stay).
    Disable {
        /// Link code.
        code: String,
    },
}

/// Runs `clickward link …`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, cmd: LinkCmd) -> anyhow::Result<()> {
    match cmd {
        LinkCmd::Add {
            code,
            program,
            affiliate,
            destination,
            redirect,
            utm,
        } => {
            let utm: UtmDefaults = utm.into_iter().collect();
            Destination::compile(&destination, &utm)?;
            let redirect = redirect.map(RedirectStatus::from_code).transpose()?;
            let rec = store
                .save_link(
                    LinkInput {
                        code: LinkCode::parse(&code)
                            .with_context(|| format!("link code {code:?}"))?,
                        program: slug(&program, "program")?,
                        affiliate: affiliate.map(|a| slug(&a, "affiliate")).transpose()?,
                        destination,
                        redirect,
                        utm,
                        status: Status::Active,
                    },
                    SaveMode::Create,
                )
                .await?;
            outln!("created link {} -> {}", rec.link.code, rec.link.destination);
        }
        LinkCmd::List => {
            outln!(
                "{:<24} {:<10} {:<16} {:<16} {:<8} destination",
                "code",
                "status",
                "program",
                "affiliate",
                "owner"
            );
            for r in store.list_links().await? {
                let status = if r.redirects { "active" } else { "inactive" };
                outln!(
                    "{:<24} {:<10} {:<16} {:<16} {:<8} {}",
                    r.link.code,
                    status,
                    r.link.program,
                    r.link.affiliate.as_ref().map(Slug::as_str).unwrap_or("-"),
                    r.link.owner.as_str(),
                    r.link.destination
                );
            }
        }
        LinkCmd::Disable { code } => {
            let cur = store
                .get_link(LinkCode::parse(&code).with_context(|| format!("link code {code:?}"))?)
                .await?;
            let l = cur.link;
            store
                .save_link(
                    LinkInput {
                        code: l.code,
                        program: l.program,
                        affiliate: l.affiliate,
                        destination: l.destination,
                        redirect: l.redirect,
                        utm: l.utm,
                        status: Status::Disabled,
                    },
                    SaveMode::Update,
                )
                .await?;
            outln!("disabled link {code}");
        }
    }
    Ok(())
}
