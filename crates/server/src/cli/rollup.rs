//! `clickward rollup`: recompute a range, or catch up to now.

use anyhow::bail;
use clap::Args;
use clickward_core::report::{self};
use clickward_store::Store;
use jiff::tz::TimeZone;

/// `clickward rollup` arguments. Without --from/--to, rolls up everything
/// settled since the watermark.
#[derive(Debug, Args)]
pub struct RollupArgs {
    /// First UTC date (YYYY-MM-DD) to recompute.
    #[arg(long)]
    pub from: Option<jiff::civil::Date>,
    /// Last UTC date, inclusive.
    #[arg(long)]
    pub to: Option<jiff::civil::Date>,
}

/// Runs `clickward rollup`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, args: RollupArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    match (args.from, args.to) {
        (Some(from), to) => {
            let to = to.unwrap_or(from);
            let (s, e) = report::date_range(from, to, &TimeZone::UTC)?;
            store.rollup(s, e).await?;
            outln!(
                "recomputed rollups {from} .. {to} (UTC) in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        (None, Some(_)) => bail!("--to needs --from"),
        (None, None) => {
            let now = jiff::Timestamp::now().as_microsecond();
            let mut last = None;
            loop {
                let w = store.advance_rollups(now).await?;
                if Some(w) == last {
                    break;
                }
                last = Some(w);
            }
            let w = last.and_then(|w| jiff::Timestamp::from_microsecond(w).ok());
            outln!(
                "rolled up to {} in {:.1} s",
                w.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
