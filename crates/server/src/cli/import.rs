//! `clickward import`: bring click history from another redirector's log.
//!
//! CSV with a header row; columns by name (any order, case-insensitive):
//! `timestamp` and `code` (required), `src`, `user_agent`, `ip`,
//! `visitor_key`, `referrer`, `sub1`..`sub5`. Timestamps are RFC 3339
//! (`2026-11-20T10:00:00Z`, any offset), `YYYY-MM-DD HH:MM:SS` (read as UTC)
//! or Unix seconds / milliseconds.
//!
//! Rows go through the same classification as live clicks (user agent, bot
//! list, GeoIP) and the same dedup, in timestamp order. An IP is hashed with
//! the row's user agent under the import key (`secrets/import.key`, see
//! `process::secrets::import_key`) and never stored; the same visitor gets
//! the same key in every import, so imported clicks dedup against each other
//! across runs.
//!
//! Click ids are derived from what a row says (its parsed time and its
//! values), not from its bytes or its line, so rows imported before add
//! nothing: the same file again, re-sorted, re-exported, with another header
//! order, or another file that overlaps it. Rows that agree in every value
//! are one click.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use clickward_core::Micros;
use clickward_core::click::{NewClick, TrackingParams, VisitorKey, normalize_referrer};
use clickward_core::id::ClickId;
use clickward_enrich::bot::{self, RequestShape};
use clickward_enrich::geo::GeoDb;
use clickward_enrich::ua::UaParser;
use clickward_enrich::visitor::imported_visitor_key;
use clickward_store::Store;

use crate::process::config::Validated;
use clap::Args;
use std::path::PathBuf;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Rows read.
    pub rows: usize,
    /// Clicks stored.
    pub imported: usize,
    /// Rows whose click was already stored (an earlier import of the same file).
    pub already_present: usize,
    /// Rows skipped, with line number and reason (first 20 kept).
    pub skipped: Vec<(u64, String)>,
    /// Total rows skipped.
    pub skipped_count: usize,
}

/// How an imported row identifies its visitor.
enum Visitor {
    /// A visitor id column, hashed under a fixed key.
    Key(VisitorKey),
    /// An IP, hashed with the user agent under the import key.
    Ip(IpAddr, Vec<u8>),
}

struct Row {
    line: u64,
    ts: Micros,
    id_seed: [u8; 32],
    click: NewClick,
    visitor: Visitor,
}

/// Imports a CSV file.
///
/// # Errors
/// When the file cannot be read, lacks a `timestamp` or `code` column, or the
/// store fails. Bad rows are skipped and listed in the summary, not fatal.
pub async fn import_csv(
    store: &dyn Store,
    ua_parser: &UaParser,
    geo: Option<&GeoDb>,
    path: &Path,
    dedup_window: Micros,
    import_key: &[u8; 32],
) -> anyhow::Result<ImportSummary> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("reading the header row of {}", path.display()))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(c_ts), Some(c_code)) = (col("timestamp"), col("code")) else {
        bail!(
            "{}: the header row must name a \"timestamp\" and a \"code\" column (found: {})",
            path.display(),
            headers.join(", ")
        );
    };
    let (c_src, c_ua, c_ip, c_vk, c_ref) = (
        col("src"),
        col("user_agent"),
        col("ip"),
        col("visitor_key"),
        col("referrer"),
    );
    let c_subs: Vec<Option<usize>> = (1..=5).map(|i| col(&format!("sub{i}"))).collect();

    let links: HashMap<String, clickward_store::LinkRecord> = store
        .list_links()
        .await?
        .into_iter()
        .map(|r| (r.link.code.to_string(), r))
        .collect();
    let mut summary = ImportSummary::default();
    let skip = |s: &mut ImportSummary, line: u64, why: String| {
        s.skipped_count += 1;
        if s.skipped.len() < 20 {
            s.skipped.push((line, why));
        }
    };
    let imported_key = *blake3::hash(b"clickward import visitor ids").as_bytes();

    let mut rows = Vec::new();
    for (i, rec) in reader.byte_records().enumerate() {
        let line = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(2);
        summary.rows += 1;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                skip(&mut summary, line, format!("unreadable row: {e}"));
                continue;
            }
        };
        let field = |c: Option<usize>| -> Option<String> {
            c.and_then(|c| rec.get(c))
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let ts = match field(Some(c_ts)).map(|t| clickward_core::parse_timestamp(&t)) {
            Some(Ok(ts)) => ts,
            Some(Err(e)) => {
                skip(&mut summary, line, e);
                continue;
            }
            None => {
                skip(&mut summary, line, "empty timestamp".to_owned());
                continue;
            }
        };
        let code = field(Some(c_code)).unwrap_or_default();
        let Some(link) = links.get(&code) else {
            skip(&mut summary, line, format!("unknown link code {code:?}"));
            continue;
        };
        let ua = field(c_ua).unwrap_or_default().into_bytes();
        let info = ua_parser.parse(&ua);
        let ip = match field(c_ip) {
            None => None,
            Some(s) => match s.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    skip(
                        &mut summary,
                        line,
                        "ip column is not an IP address".to_owned(),
                    );
                    continue;
                }
            },
        };
        let geo_row = match (geo, ip) {
            (Some(db), Some(ip)) => db.lookup(ip).ok().flatten().unwrap_or_default(),
            _ => Default::default(),
        };
        let subs: [Option<String>; 5] = std::array::from_fn(|i| field(c_subs[i]));
        let src = field(c_src);
        let pairs: Vec<(&str, &str)> = src
            .iter()
            .map(|s| ("src", s.as_str()))
            .chain(subs.iter().enumerate().filter_map(|(i, s)| {
                s.as_deref()
                    .map(|v| (["sub1", "sub2", "sub3", "sub4", "sub5"][i], v))
            }))
            .collect();
        let params = TrackingParams::from_pairs(pairs);
        let id_seed = row_identity(
            ts,
            &code,
            &[
                src.as_deref(),
                subs[0].as_deref(),
                subs[1].as_deref(),
                subs[2].as_deref(),
                subs[3].as_deref(),
                subs[4].as_deref(),
                field(c_ref).as_deref(),
                field(c_vk).as_deref(),
                ip.map(|i| clickward_enrich::ip::canonical(i).to_string())
                    .as_deref(),
            ],
            &ua,
        );
        let visitor = match (field(c_vk), ip) {
            (Some(vk), _) => Visitor::Key(imported_visitor_key(&imported_key, vk.as_bytes())),
            (None, Some(ip)) => Visitor::Ip(ip, ua.clone()),
            // No way to tell visitors apart: each such row is its own visitor.
            (None, None) => {
                let mut k = [0u8; 16];
                k.copy_from_slice(&id_seed[16..]);
                Visitor::Key(VisitorKey(k))
            }
        };
        rows.push(Row {
            line,
            ts,
            id_seed,
            visitor,
            click: NewClick {
                click_id: ClickId::from_parts(0, 0),
                ts,
                link_id: link.link.id,
                program_id: link.program_id,
                affiliate_id: link.affiliate_id,
                params,
                referrer: field(c_ref).and_then(|r| normalize_referrer(&r)),
                device: info.device,
                os: info.os.as_deref().map(str::to_owned),
                browser: info.browser.as_deref().map(str::to_owned),
                bot: bot::classify(RequestShape::default(), info.bot),
                country: geo_row.country,
                region: geo_row.region,
                city: geo_row.city,
                visitor_key: VisitorKey([0; 16]),
                previous_keys: Vec::new(),
                verdict: None,
                consent: Default::default(),
            },
        });
    }

    // Dedup decides in time order, as it would have live.
    rows.sort_by_key(|r| (r.ts, r.line));
    let span = rows.first().map(|r| r.ts).zip(rows.last().map(|r| r.ts));
    let mut batch = Vec::with_capacity(5000);
    for mut row in rows {
        let ms = u64::try_from(row.ts.div_euclid(1000)).unwrap_or(0);
        let mut rand = [0u8; 16];
        rand.copy_from_slice(&row.id_seed[..16]);
        row.click.click_id = ClickId::from_parts(ms, u128::from_be_bytes(rand));
        match &row.visitor {
            Visitor::Key(k) => row.click.visitor_key = *k,
            Visitor::Ip(ip, ua) => {
                row.click.visitor_key = clickward_enrich::visitor::visitor_key(import_key, *ip, ua);
            }
        }
        batch.push(row.click);
        if batch.len() == 5000 {
            flush(store, &mut batch, dedup_window, &mut summary).await?;
        }
    }
    flush(store, &mut batch, dedup_window, &mut summary).await?;
    // History may land before the rollup watermark: recompute its range.
    if let Some((first, last)) = span {
        store.rollup(first, last + 1).await?;
    }
    Ok(summary)
}

/// A row's identity: BLAKE3 over its parsed time, link code, values and
/// user agent, each length-prefixed, so the same click in any file, order or
/// header layout has the same id.
fn row_identity(ts: Micros, code: &str, values: &[Option<&str>], ua: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("clickward import row identity v2");
    h.update(&ts.to_le_bytes());
    let mut put = |b: Option<&[u8]>| match b {
        None => {
            h.update(&[0]);
        }
        Some(b) => {
            h.update(&[1]);
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
    };
    put(Some(code.as_bytes()));
    for v in values {
        put(v.map(str::as_bytes));
    }
    put(Some(ua));
    *h.finalize().as_bytes()
}

async fn flush(
    store: &dyn Store,
    batch: &mut Vec<NewClick>,
    window: Micros,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let out = store
        .write_clicks(Arc::new(std::mem::take(batch)), window)
        .await?;
    for o in out {
        if o.inserted {
            summary.imported += 1;
        } else {
            summary.already_present += 1;
        }
    }
    Ok(())
}

/// `clickward import` arguments.
#[derive(Debug, Args)]
#[command(after_help = IMPORT_HELP)]
pub struct ImportArgs {
    /// CSV file with a header row (columns below).
    pub file: PathBuf,
}

/// The columns, as `clickward import --help` shows them.
const IMPORT_HELP: &str = "\
CSV with a header row; columns by name, in any order, case-insensitive:
  timestamp     required: RFC 3339 (2026-11-20T10:00:00Z, any offset),
                \"YYYY-MM-DD HH:MM:SS\" (read as UTC), or Unix seconds
                (milliseconds from 1e12 on)
  code          required: the link code (the link must exist)
  ip            the visitor's IP: hashed with user_agent, never stored
  visitor_key   or a visitor id of the old system (hashed), instead of ip
  user_agent    classified as live clicks are (device, browser, bots)
  src, referrer, sub1..sub5   optional
Rows go through the same classification and dedup as live clicks, in
timestamp order. Importing rows that were imported before adds nothing.
An import in which every row is skipped exits with an error.";

/// Runs `clickward import`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(v: &Validated, store: &dyn Store, args: ImportArgs) -> anyhow::Result<()> {
    let ua = UaParser::new(20_000)?;
    let geo = if v.config.geoip.is_empty() {
        None
    } else {
        Some(GeoDb::open(&v.config.geoip)?)
    };
    let key = crate::process::secrets::import_key(&v.config.data_dir.join("secrets"))?;
    let s = import_csv(store, &ua, geo.as_ref(), &args.file, v.dedup_window, &key).await?;
    outln!(
        "{} rows: {} clicks imported, {} already present, {} skipped",
        s.rows,
        s.imported,
        s.already_present,
        s.skipped_count
    );
    for (line, why) in &s.skipped {
        outln!("  line {line}: {why}");
    }
    if s.rows > 0 && s.skipped_count == s.rows {
        bail!(
            "every row of {} was skipped; nothing was imported",
            args.file.display()
        );
    }
    Ok(())
}
