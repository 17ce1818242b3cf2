//! `clickward payout`: preview and create batches.

use super::slug;
use clap::Subcommand;
use clickward_core::money::Currency;
use clickward_store::Store;
use std::path::PathBuf;

/// `clickward payout …`
#[derive(Debug, Subcommand)]
pub enum PayoutCmd {
    /// The affiliate's approved, unpaid balance per program and currency.
    Preview {
        /// Affiliate slug.
        #[arg(long)]
        affiliate: String,
    },
    /// Pay the eligible balance in one currency; idempotent by --key.
    Create {
        /// Affiliate slug.
        #[arg(long)]
        affiliate: String,
        /// ISO 4217 code.
        #[arg(long)]
        currency: String,
        /// Idempotency key (default: affiliate-currency-YYYY-MM-DD, UTC).
        #[arg(long)]
        key: Option<String>,
        /// Also write the batch as CSV for the payment provider.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

/// Runs `clickward payout …`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, cmd: PayoutCmd) -> anyhow::Result<()> {
    match cmd {
        PayoutCmd::Preview { affiliate } => {
            let lines = store.payout_preview(slug(&affiliate, "affiliate")?).await?;
            outln!(
                "{:<24} {:<8} {:>16} {:>16}  eligible",
                "program",
                "currency",
                "payable",
                "minimum"
            );
            for l in lines {
                let cur = Currency::parse(&l.currency)?;
                outln!(
                    "{:<24} {:<8} {:>16} {:>16}  {}",
                    l.program,
                    l.currency,
                    cur.format(l.payable_minor),
                    cur.format(l.min_payout_minor),
                    if l.eligible { "yes" } else { "no" }
                );
            }
        }
        PayoutCmd::Create {
            affiliate,
            currency,
            key,
            csv,
        } => {
            let cur = Currency::parse(&currency)?;
            let key = key.unwrap_or_else(|| {
                format!(
                    "{affiliate}-{}-{}",
                    cur.code(),
                    jiff::Timestamp::now().strftime("%Y-%m-%d")
                )
            });
            let batch_id = ulid::Ulid::generate();
            let p = store
                .create_payout(
                    slug(&affiliate, "affiliate")?,
                    cur,
                    key,
                    batch_id,
                    "cli".to_owned(),
                )
                .await?;
            let verb = if p.created {
                "created"
            } else {
                "already existed (same key; nothing changed)"
            };
            outln!(
                "payout {} {verb}: {} {} to {} for {} conversions",
                p.batch_id,
                cur.format(p.amount_minor),
                p.currency,
                p.affiliate,
                p.conversions
            );
            if let Some(path) = csv {
                let mut w = csv::Writer::from_path(&path)?;
                w.write_record([
                    "batch_id",
                    "affiliate",
                    "currency",
                    "amount",
                    "amount_minor",
                    "conversions",
                    "key",
                    "created_at",
                ])?;
                let created = jiff::Timestamp::from_microsecond(p.created_at)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                w.write_record([
                    p.batch_id.as_str(),
                    clickward_core::spreadsheet_text(&p.affiliate).as_ref(),
                    p.currency.as_str(),
                    cur.format(p.amount_minor).as_str(),
                    p.amount_minor.to_string().as_str(),
                    p.conversions.to_string().as_str(),
                    clickward_core::spreadsheet_text(&p.key).as_ref(),
                    created.as_str(),
                ])?;
                w.flush()?;
                outln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
