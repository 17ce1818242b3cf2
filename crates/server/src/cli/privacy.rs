//! `clickward privacy`: erase or export what is stored about a visitor, a
//! click, an order, a conversion or a sub-id value; list receipts
//! (docs/privacy.md).

use std::sync::Arc;

use clap::{Args, Subcommand};
use clickward_store::{RequestStatus, Store};

use crate::clock::SystemClock;
use crate::process::config::Validated;
use crate::services::events::EventHub;
use crate::services::privacy::{PrivacyService, Selector};

/// Privacy requests.
#[derive(Debug, Subcommand)]
pub enum PrivacyCmd {
    /// Erase everything stored about one subject; prints the receipt.
    Erase(SubjectArgs),
    /// Print everything stored about one subject as JSON.
    Export(SubjectArgs),
    /// List the newest receipts.
    List {
        /// How many (default 20).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// Exactly one subject.
#[derive(Debug, Args)]
pub struct SubjectArgs {
    /// The `cw_vid` cookie's value as the visitor's browser holds it.
    #[arg(long)]
    visitor: Option<String>,
    /// A visitor key (32 hex characters).
    #[arg(long)]
    visitor_key: Option<String>,
    /// A click id.
    #[arg(long = "click")]
    click_id: Option<String>,
    /// A merchant's order id.
    #[arg(long = "order")]
    order_id: Option<String>,
    /// The program of `--order` (slug).
    #[arg(long)]
    program: Option<String>,
    /// A conversion id.
    #[arg(long = "conversion")]
    conversion_id: Option<String>,
    /// A value of sub1..sub5 or adv_sub1..adv_sub5, exactly.
    #[arg(long)]
    sub: Option<String>,
}

impl SubjectArgs {
    fn selector(self) -> Selector {
        Selector {
            visitor: self.visitor,
            visitor_key: self.visitor_key,
            click_id: self.click_id,
            order_id: self.order_id,
            program: self.program,
            conversion_id: self.conversion_id,
            sub: self.sub,
        }
    }
}

/// Runs a `privacy` command.
///
/// # Errors
/// A bad subject (naming the flag), or the store's error.
pub async fn run(v: &Validated, store: Arc<dyn Store>, cmd: PrivacyCmd) -> anyhow::Result<()> {
    // The CLI is no node: no spool, no live buffer of its own; on
    // PostgreSQL the nodes hear of the erasure by notice.
    let svc = PrivacyService::new(
        store,
        Arc::new(EventHub::new()),
        None,
        Arc::new(SystemClock),
    );
    let subject = |args: SubjectArgs| -> anyhow::Result<clickward_store::Subject> {
        let key = crate::process::secrets::cookie_key(&v.config.data_dir.join("secrets"))?;
        let sealer = crate::http::CookieSealer::new(&key);
        args.selector()
            .subject(|c| sealer.open(crate::http::VISITOR_COOKIE, c))
            .map_err(|e| anyhow::anyhow!("{e} (flags: {FLAGS})"))
    };
    match cmd {
        PrivacyCmd::Erase(args) => {
            let r = svc.erase(subject(args)?, "cli").await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            if r.status != RequestStatus::Done {
                anyhow::bail!(
                    "erasure {} is received, not done ({}); a running server retries it every minute",
                    r.id,
                    r.error.unwrap_or_default()
                );
            }
        }
        PrivacyCmd::Export(args) => {
            let s = subject(args)?;
            let kind = s.kind();
            let d = svc.export(s).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "subject": kind,
                    "clicks": d.clicks,
                    "conversions": d.conversions,
                    "deliveries": d.deliveries,
                }))?
            );
        }
        PrivacyCmd::List { limit } => {
            for r in svc.receipts(None, limit.clamp(1, 1000)).await? {
                let counts = r
                    .counts
                    .map(|c| serde_json::to_string(&c).unwrap_or_default())
                    .unwrap_or_default();
                println!(
                    "{}  {:<10} {:<8} {:<12} {counts}",
                    r.id,
                    r.subject,
                    r.status.as_str(),
                    r.actor
                );
            }
        }
    }
    Ok(())
}

/// The selector's API field names, as the CLI spells them.
const FLAGS: &str = "visitor = --visitor, visitor_key = --visitor-key, click_id = --click, \
     order_id = --order, program = --program, conversion_id = --conversion, sub = --sub";
