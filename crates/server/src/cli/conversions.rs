//! `clickward conversion`: list, approve, reject, reverse.

use anyhow::Context;
use clap::Subcommand;
use clickward_core::conversion::ConversionStatus;
use clickward_core::money::Currency;
use clickward_store::Store;

/// `clickward conversion …`
#[derive(Debug, Subcommand)]
pub enum ConversionCmd {
    /// Newest first.
    List {
        /// Only this status: pending, approved, rejected, paid, reversed.
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Approve a pending conversion.
    Approve {
        /// Conversion id.
        id: String,
        /// Why (kept in the ledger).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a pending conversion.
    Reject {
        /// Conversion id.
        id: String,
        /// Why (kept in the ledger).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reverse an approved or paid conversion (refund, chargeback).
    Reverse {
        /// Conversion id.
        id: String,
        /// Why (kept in the ledger).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub(super) async fn conversion_command(
    store: &dyn Store,
    cmd: ConversionCmd,
) -> anyhow::Result<()> {
    let (id, to, reason) = match cmd {
        ConversionCmd::List { status, limit } => {
            let status = status
                .map(|s| {
                    ConversionStatus::parse(&s).with_context(|| format!("unknown status {s:?}"))
                })
                .transpose()?;
            outln!(
                "{:<26} {:<10} {:<16} {:<16} {:<10} {:>12} {:>12} cur order",
                "conversion",
                "status",
                "program",
                "affiliate",
                "event",
                "amount",
                "commission"
            );
            let filter = clickward_store::ConversionFilter {
                status,
                affiliate: None,
                before: None,
                limit,
            };
            for c in store.list_conversions(filter).await? {
                let cur = Currency::parse(&c.currency)?;
                outln!(
                    "{:<26} {:<10} {:<16} {:<16} {:<10} {:>12} {:>12} {} {}",
                    c.conversion_id.to_string(),
                    c.status.as_str(),
                    c.program,
                    c.affiliate.as_deref().unwrap_or("-"),
                    c.event,
                    c.amount_minor
                        .map(|a| cur.format(a))
                        .unwrap_or_else(|| "-".to_owned()),
                    cur.format(c.commission_minor),
                    c.currency,
                    c.order_id
                );
            }
            return Ok(());
        }
        ConversionCmd::Approve { id, reason } => (id, ConversionStatus::Approved, reason),
        ConversionCmd::Reject { id, reason } => (id, ConversionStatus::Rejected, reason),
        ConversionCmd::Reverse { id, reason } => (id, ConversionStatus::Reversed, reason),
    };
    let id = id
        .parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not a conversion id"))?;
    let row = store
        .set_conversion_status(id, to, "cli".to_owned(), reason)
        .await?;
    outln!(
        "conversion {} is {}",
        row.conversion_id,
        row.status.as_str()
    );
    Ok(())
}
