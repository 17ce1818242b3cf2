//! CSV export of raw clicks (`clickward export`).

use std::io::Write;

// Dropping the sink (at the end of the export) flushes the buffers.
use anyhow::Context;
use clap::Args;
use clickward_core::report;
use clickward_store::Store;
use clickward_store::{ClickRow, ClickSink};
use jiff::tz::TimeZone;

/// The header row.
pub const HEADER: &str = "click_id,ts,link,program,affiliate,src,sub1,sub2,sub3,sub4,sub5,referrer,device,os,browser,bot_reason,invalid_reason,country,region,city,unique\n";

/// A sink writing CSV (header first) to `out`, buffered.
pub fn csv_sink<W: Write + Send + 'static>(out: W) -> ClickSink {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(std::io::BufWriter::with_capacity(1 << 16, out));
    let mut header = false;
    Box::new(move |c: &ClickRow| {
        if !header {
            w.write_record(HEADER.trim_end().split(','))?;
            header = true;
        }
        let ts = jiff::Timestamp::from_microsecond(c.ts)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let id = c.click_id.to_string();
        // Every text cell came from outside: defused for spreadsheets.
        let o = |v: &Option<String>| {
            v.as_deref()
                .map(|s| clickward_core::spreadsheet_text(s).into_owned())
                .unwrap_or_default()
        };
        let t = |s: &str| clickward_core::spreadsheet_text(s).into_owned();
        w.write_record([
            id.as_str(),
            ts.as_str(),
            t(&c.link).as_str(),
            t(&c.program).as_str(),
            o(&c.affiliate).as_str(),
            o(&c.src).as_str(),
            o(&c.subs[0]).as_str(),
            o(&c.subs[1]).as_str(),
            o(&c.subs[2]).as_str(),
            o(&c.subs[3]).as_str(),
            o(&c.subs[4]).as_str(),
            o(&c.referrer).as_str(),
            c.device.as_str(),
            o(&c.os).as_str(),
            o(&c.browser).as_str(),
            o(&c.bot_reason).as_str(),
            o(&c.invalid_reason).as_str(),
            o(&c.country).as_str(),
            o(&c.region).as_str(),
            o(&c.city).as_str(),
            if c.unique { "1" } else { "0" },
        ])?;
        Ok(())
    })
}

/// `clickward export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// First local date, YYYY-MM-DD.
    #[arg(long)]
    pub from: jiff::civil::Date,
    /// Last local date, inclusive (default: today in --tz, so `--from`
    /// alone exports from that date onward).
    #[arg(long)]
    pub to: Option<jiff::civil::Date>,
    /// IANA time zone of the dates.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
}

/// Runs `clickward export`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, args: ExportArgs) -> anyhow::Result<()> {
    let tz = TimeZone::get(&args.tz).with_context(|| format!("unknown time zone {:?}", args.tz))?;
    let to = args
        .to
        .unwrap_or_else(|| jiff::Timestamp::now().to_zoned(tz.clone()).date());
    let (s, e) = report::date_range(args.from, to, &tz)?;
    let started = std::time::Instant::now();
    let n = store
        .export_clicks(s, e, crate::cli::export::csv_sink(std::io::stdout()))
        .await?;
    eprintln!(
        "exported {n} clicks in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
