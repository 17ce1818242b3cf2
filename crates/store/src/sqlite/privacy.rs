//! SQL for erasure and access requests (`crate::privacy`): one transaction
//! per erasure.

use clickward_core::Micros;
use clickward_core::delivery::EndpointKind;
use clickward_core::id::{ClickId, ConversionId};
use std::collections::{BTreeSet, HashMap};

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::common::ulid_of;
use crate::privacy::{
    CONVERSION_FIELDS_CLEAR, CONVERSION_FIELDS_DUE, DELIVERIES_DUE, Erased, ErasureCounts, Pace,
    PrivacyStore, RECEIPT_SELECT, Receipt, Selection, Subject, SubjectData, bytes16,
    erased_order_id, erasure_event, is_about, receipt_from, redact_payload, redact_url,
};
use crate::{StoreError, StoreFuture};

fn receipt(c: &Connection, id: &str) -> Result<Option<Receipt>, StoreError> {
    let mut st = c.prepare_cached(&format!("{RECEIPT_SELECT} WHERE id = ?1"))?;
    let mut rows = st.query([id])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let status: String = r.get(2)?;
    Ok(Some(receipt_from(
        r.get(0)?,
        r.get(1)?,
        &status,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    )?))
}

/// Adds clicks (`sql` selects click_id, visitor_key) to `sel`.
fn add_clicks(
    c: &Connection,
    sel: &mut Selection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(p)?;
    while let Some(r) = rows.next()? {
        sel.clicks.insert(
            bytes16(r.get(0)?, "click_id")?,
            bytes16(r.get(1)?, "visitor_key")?,
        );
    }
    Ok(())
}

/// Adds conversions (`sql` selects id, conversion_id) to `sel`.
fn add_conversions(
    c: &Connection,
    sel: &mut Selection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(p)?;
    while let Some(r) = rows.next()? {
        let id = ConversionId(ulid_of(r.get(1)?, "conversion_id")?);
        sel.conversions.insert(r.get(0)?, id);
    }
    Ok(())
}

/// How [`select`] finds a visitor's or a sub-id's clicks: the one part of a
/// selection with no index behind it (a scan of `clicks`; an index on the
/// visitor key would cost every written click a page write, see
/// docs/benchmarks.md "Privacy").
#[derive(Clone, Copy)]
enum Scan {
    /// Scan every click.
    All,
    /// The scan was done in an earlier read snapshot (see [`plan`]): only
    /// clicks written since, `seq` above this (the `clicks_by_seq` index).
    After(i64),
    /// The batch's own scans found them (and [`advance`] finds the later
    /// ones): none here.
    Found,
}

/// The rows `subject` selects, added to `sel`; `live`: only rows not erased
/// yet.
fn select(
    c: &Connection,
    subject: &Subject,
    live: bool,
    scan: Scan,
    mut sel: Selection,
) -> Result<Selection, StoreError> {
    let only = if live { " AND erased_at IS NULL" } else { "" };
    let (after, seq) = match scan {
        Scan::All => ("", None),
        Scan::After(seq) => (" AND seq > ?2", Some(seq)),
        // No row has a seq above the largest there can be.
        Scan::Found => (" AND seq > ?2", Some(i64::MAX)),
    };
    let clicks = "SELECT click_id, visitor_key FROM clicks WHERE ";
    let convs = "SELECT id, conversion_id FROM conversions WHERE ";
    let scan_params = |first: rusqlite::types::Value| {
        rusqlite::params_from_iter(std::iter::once(first).chain(seq.map(Into::into)))
    };
    match subject {
        Subject::Visitor(k) => add_clicks(
            c,
            &mut sel,
            &format!("{clicks}visitor_key = ?1{only}{after}"),
            scan_params(k.0.to_vec().into()),
        )?,
        Subject::Click(id) => add_clicks(
            c,
            &mut sel,
            &format!("{clicks}click_id = ?1{only}"),
            [id.to_bytes().as_slice()],
        )?,
        Subject::Sub(v) => add_clicks(
            c,
            &mut sel,
            &format!(
                "{clicks}(sub1 = ?1 OR sub2 = ?1 OR sub3 = ?1 OR sub4 = ?1 OR sub5 = ?1){only}{after}"
            ),
            scan_params(v.clone().into()),
        )?,
        Subject::Order { .. } | Subject::Conversion(_) => {}
    }
    match subject {
        Subject::Order { order_id, program } => add_conversions(
            c,
            &mut sel,
            &format!(
                "{convs}order_id = ?1 AND (?2 IS NULL OR program_id = \
                 (SELECT id FROM programs WHERE slug = ?2)){only}"
            ),
            params![order_id, program],
        )?,
        Subject::Conversion(id) => add_conversions(
            c,
            &mut sel,
            &format!("{convs}conversion_id = ?1{only}"),
            [id.0.to_bytes().as_slice()],
        )?,
        Subject::Sub(v) => add_conversions(
            c,
            &mut sel,
            &format!(
                "{convs}(sub1 = ?1 OR sub2 = ?1 OR sub3 = ?1 OR sub4 = ?1 OR sub5 = ?1 \
                 OR adv_sub1 = ?1 OR adv_sub2 = ?1 OR adv_sub3 = ?1 OR adv_sub4 = ?1 \
                 OR adv_sub5 = ?1){only}"
            ),
            [v],
        )?,
        Subject::Visitor(_) | Subject::Click(_) => {}
    }
    // The same person's other rows: the conversions of the clicks, the
    // clicks of the conversions.
    let click_ids: Vec<[u8; 16]> = sel.clicks.keys().copied().collect();
    for id in click_ids {
        add_conversions(
            c,
            &mut sel,
            &format!("{convs}click_id = ?1{only}"),
            [id.as_slice()],
        )?;
    }
    let conv_ids: Vec<i64> = sel.conversions.keys().copied().collect();
    for id in conv_ids {
        add_clicks(
            c,
            &mut sel,
            &format!("{clicks}click_id = (SELECT click_id FROM conversions WHERE id = ?1){only}"),
            [id],
        )?;
    }
    Ok(sel)
}

/// At most this many visitor keys and sub-id values in one scan of [`plan`]
/// (bound parameters; SQLite allows 32,766).
const PLAN_CHUNK: usize = 10_000;

/// Where a read snapshot ended, per table: rows past these were written
/// after it (each is assigned in commit order by the one writer). They move
/// on as a batch runs ([`advance`]): under load thousands of clicks a
/// second come past them, and a batch writes an outbox event per erasure;
/// the writer should look at only the last few. The origins stay where the
/// batch began, for a conversion recorded since (rare).
#[derive(Debug, Clone, Copy)]
struct Horizon {
    click_seq: i64,
    outbox_seq: i64,
    delivery_id: i64,
    outbox_origin: i64,
    delivery_origin: i64,
}

/// What the read snapshot found for one request of a batch: its rows, and
/// the rows of the tables with no index to find them by (dedup state,
/// outbox, delivery log, idempotency keys).
#[derive(Debug, Default)]
struct Planned {
    sel: Selection,
    links: BTreeSet<(i64, [u8; 16])>,
    outbox: BTreeSet<i64>,
    deliveries: BTreeSet<i64>,
    idempotency: BTreeSet<String>,
}

/// What [`plan`] hands the write half: the horizon, each request's subject
/// (`None`: not received) and its plan.
type Plan = (Horizon, Vec<Option<Subject>>, Vec<Planned>);

/// What [`plan_start`] finds: the horizon, the subjects, and the first and
/// last click's ms.
type Start = (Horizon, Vec<Option<Subject>>, Option<(u64, u64)>);

/// Where a batch's read half starts, in one snapshot: the horizon, the
/// subjects, and the click ids the clicks table spans (for chunks).
fn plan_start(c: &Connection, ids: &[String]) -> Result<Start, StoreError> {
    let tx = c.unchecked_transaction()?;
    let max = |sql: &str| -> Result<i64, StoreError> {
        Ok(tx.prepare_cached(sql)?.query_row([], |r| r.get(0))?)
    };
    let outbox_seq = max("SELECT COALESCE(MAX(seq), 0) FROM outbox")?;
    let delivery_id = max("SELECT COALESCE(MAX(id), 0) FROM deliveries")?;
    let horizon = Horizon {
        click_seq: max(
            "SELECT COALESCE((SELECT seq FROM clicks WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1), 0)",
        )?,
        outbox_seq,
        delivery_id,
        outbox_origin: outbox_seq,
        delivery_origin: delivery_id,
    };
    let mut subjects: Vec<Option<Subject>> = Vec::with_capacity(ids.len());
    for id in ids {
        let selector: Option<String> = tx
            .prepare_cached(
                "SELECT selector FROM privacy_requests WHERE id = ?1 AND status = 'received'",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten();
        // A selector that does not parse is reported by `run`.
        subjects.push(selector.and_then(|t| Subject::from_text(&t).ok()));
    }
    let end = |sql: &str| -> Result<Option<u64>, StoreError> {
        let id: Option<Vec<u8>> = tx
            .prepare_cached(sql)?
            .query_row([], |r| r.get(0))
            .optional()?;
        id.map(|b| bytes16(b, "click_id").map(|b| ClickId::from_bytes(b).timestamp_ms()))
            .transpose()
    };
    let span = match (
        end("SELECT click_id FROM clicks ORDER BY click_id LIMIT 1")?,
        end("SELECT click_id FROM clicks ORDER BY click_id DESC LIMIT 1")?,
    ) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    Ok((horizon, subjects, span))
}

/// How long one piece of a paced plan's click scan aims to take: short,
/// so that its rest is short too.
const PIECE: std::time::Duration = std::time::Duration::from_millis(40);

/// Subjects whose indexed selections one piece of a paced plan makes.
const SELECT_GROUP: usize = 500;

/// A piece of the rest of a batch's read half, after its clicks were
/// scanned: while `from` < the number of subjects, what has indexes
/// (conversions by order, id and click; clicks by id) for `group` subjects
/// from `from` (returns where the next piece starts); then the dedup rows,
/// then the tables named by conversion id (returns `None`: done).
fn plan_rest(
    c: &Connection,
    subjects: &[Option<Subject>],
    out: &mut [Planned],
    from: usize,
    group: usize,
) -> Result<Option<usize>, StoreError> {
    let tx = c.unchecked_transaction()?;
    let n = subjects.len();
    if from < n {
        let to = (from + group).min(n);
        for (p, subject) in out[from..to].iter_mut().zip(&subjects[from..to]) {
            if let Some(subject) = subject {
                p.sel = select(&tx, subject, true, Scan::Found, std::mem::take(&mut p.sel))?;
            }
        }
        return Ok(Some(if to == n { n + 1 } else { to }));
    }
    if from == n + 1 {
        scan_links(&tx, subjects, out)?;
        return Ok(Some(n + 2));
    }
    scan_mentions(&tx, out, None)?;
    Ok(None)
}

/// Where a batch's time went (ms of work per phase, and of rest), logged at
/// debug level when it ends: what an operator tuning the pace looks at.
#[derive(Debug, Default)]
struct Spent {
    scan_ms: u128,
    rest_of_plan_ms: u128,
    advance_ms: u128,
    write_ms: u128,
    rested_ms: u128,
}

/// The read half of a batch of erasures, beside the writer (a scan of 10 M
/// clicks or of the outbox takes most of a second; the writer, and every
/// redirect waiting on it, must not wait for that): where the batch's
/// snapshot ends, and for each id what it selects, each scan done once for
/// the whole batch. At a [`Pace`] below full the clicks are scanned in 64
/// ranges of click id (time), resting between them. Requests not received
/// (or unknown) get nothing; [`run`] tells them apart.
async fn plan(
    store: &SqliteStore,
    ids: Vec<String>,
    pace: Pace,
    spent: &mut Spent,
) -> Result<Plan, StoreError> {
    let ids = std::sync::Arc::new(ids);
    let (mut horizon, subjects, span) = {
        let ids = ids.clone();
        store.read(move |c| plan_start(c, &ids)).await?
    };
    let mut out: Vec<Planned> = ids.iter().map(|_| Planned::default()).collect();
    let subjects = std::sync::Arc::new(subjects);
    if let (Some((first, last)), true) = (span, pace.is_full()) {
        // Asked for now: the scan split across the cores, each part in its
        // own read snapshot (all at or past the horizon).
        let parts = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 4) as u64;
        let step = ((last - first) / parts).max(1);
        let n = out.len();
        let reads = (0..parts).map(|k| {
            let lo = first + k * step;
            let hi = if k + 1 == parts { u64::MAX } else { lo + step };
            let s = subjects.clone();
            store.read(move |c| {
                let mut part: Vec<Planned> = (0..n).map(|_| Planned::default()).collect();
                scan_clicks(c, &s, &mut part, (lo, hi))?;
                Ok(part)
            })
        });
        let t = std::time::Instant::now();
        for part in futures::future::try_join_all(reads).await? {
            for (o, p) in out.iter_mut().zip(part) {
                o.sel.clicks.extend(p.sel.clicks);
            }
        }
        spent.scan_ms += t.elapsed().as_millis();
    } else if let Some((first, last)) = span {
        // Paced, each piece of the scan is sized to take about
        // `PIECE` (a first guess of a 64th, then adjusted by what the last
        // one took), so that every rest stays short and the share exact.
        let mut step = ((last - first) / 64).max(1);
        let mut lo = first;
        while lo <= last {
            let hi = if lo + step > last {
                u64::MAX
            } else {
                lo + step
            };
            let t = std::time::Instant::now();
            let (s, from) = (subjects.clone(), horizon.click_seq);
            let to;
            (out, to) = store
                .read(move |c| {
                    let tx = c.unchecked_transaction()?;
                    scan_clicks(&tx, &s, &mut out, (lo, hi))?;
                    // The last piece reaches to now: in its snapshot, the
                    // clicks written since the batch began are all in its
                    // range but those with older ids, found from the index.
                    // The horizon moves to its snapshot, so no pass reads
                    // the clicks of the scan's minutes again.
                    let to = if hi == u64::MAX {
                        Some(advance_clicks(&tx, &s, &mut out, from, Some(id_bound(lo)))?)
                    } else {
                        None
                    };
                    drop(tx);
                    Ok((out, to))
                })
                .await?;
            if let Some(to) = to {
                horizon.click_seq = to;
            }
            let worked = t.elapsed();
            spent.scan_ms += worked.as_millis();
            let r = std::time::Instant::now();
            pace.rest(worked).await;
            spent.rested_ms += r.elapsed().as_millis();
            let ratio = PIECE.as_secs_f64() / worked.as_secs_f64().max(1e-4);
            step = ((step as f64 * ratio.clamp(0.25, 4.0)) as u64).max(1);
            if hi == u64::MAX {
                break;
            }
            lo = hi;
        }
    }
    // The rest of the plan in pieces, each followed by its rest: the
    // indexed selections a group of subjects at a time, then the dedup
    // rows, then the mentions.
    let group = if pace.is_full() {
        subjects.len().max(1)
    } else {
        SELECT_GROUP
    };
    let mut from = 0;
    loop {
        let t = std::time::Instant::now();
        let s = subjects.clone();
        let last;
        (out, last) = store
            .read(move |c| {
                let done = plan_rest(c, &s, &mut out, from, group)?;
                Ok((out, done))
            })
            .await?;
        let worked = t.elapsed();
        spent.rest_of_plan_ms += worked.as_millis();
        let r = std::time::Instant::now();
        pace.rest(worked).await;
        spent.rested_ms += r.elapsed().as_millis();
        match last {
            Some(next) => from = next,
            None => break,
        }
    }
    let subjects = std::sync::Arc::try_unwrap(subjects).unwrap_or_else(|s| (*s).clone());
    Ok((horizon, subjects, out))
}

/// Moves the click horizon to the newest click for `subjects` (the
/// requests still to run, `out` their plans): the clicks written since
/// `from` that their visitors or sub-ids select (with their dedup rows)
/// join the plans. One pass over the new clicks (the `clicks_by_seq`
/// range), matched here: run beside the writer before each group, the range
/// is the few clicks of the last moments. Returns the new horizon.
fn advance(
    c: &Connection,
    subjects: &[Option<Subject>],
    out: &mut [Planned],
    from: Horizon,
) -> Result<Horizon, StoreError> {
    // One snapshot for both: the caller's transaction (the writer's), or
    // the reader's opened by the caller.
    let click_seq = advance_clicks(c, subjects, out, from.click_seq, None)?;
    let (outbox_seq, delivery_id) =
        scan_mentions(c, out, Some((from.outbox_seq, from.delivery_id)))?;
    Ok(Horizon {
        click_seq,
        outbox_seq,
        delivery_id,
        ..from
    })
}

/// The clicks part of [`advance`]; the new click horizon.
fn advance_clicks(
    c: &Connection,
    subjects: &[Option<Subject>],
    out: &mut [Planned],
    from: i64,
    below: Option<[u8; 16]>,
) -> Result<i64, StoreError> {
    let mut keys: HashMap<[u8; 16], Vec<usize>> = HashMap::new();
    let mut subs: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, subject) in subjects.iter().enumerate() {
        match subject {
            Some(Subject::Visitor(k)) => keys.entry(k.0).or_default().push(i),
            Some(Subject::Sub(v)) => subs.entry(v.as_str()).or_default().push(i),
            _ => {}
        }
    }
    // With `below`, only the clicks whose id is below it: the clicks_by_seq
    // index holds the id (the table's key), so the others cost an index
    // entry each, not a row.
    let mut st = c.prepare_cached(
        "SELECT click_id, visitor_key, sub1, sub2, sub3, sub4, sub5, link_id, seq FROM clicks \
         WHERE seq > ?1 AND click_id < ?2 AND erased_at IS NULL ORDER BY seq",
    )?;
    let mut rows = st.query(params![from, below.unwrap_or([0xff; 16]).as_slice()])?;
    let mut to = match below {
        None => from,
        Some(_) => c
            .prepare_cached(
                "SELECT COALESCE((SELECT seq FROM clicks WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1), 0)",
            )?
            .query_row([], |r| r.get::<_, i64>(0))?
            .max(from),
    };
    while let Some(r) = rows.next()? {
        to = to.max(r.get(8)?);
        let key = bytes16(r.get(1)?, "visitor_key")?;
        let mut who: Vec<usize> = keys.get(&key).cloned().unwrap_or_default();
        if !subs.is_empty() {
            for n in 2..7 {
                if let Some(sub) = r.get_ref(n)?.as_str_or_null().ok().flatten() {
                    who.extend(subs.get(sub).into_iter().flatten());
                }
            }
        }
        if who.is_empty() {
            continue;
        }
        let id = bytes16(r.get(0)?, "click_id")?;
        let link: i64 = r.get(7)?;
        for i in who {
            out[i].sel.clicks.insert(id, key);
            // The dedup row it may have made (deleted by key: none is fine).
            out[i].links.insert((link, key));
        }
    }
    Ok(to)
}

/// The smallest click id of millisecond `ms` (all ones for `u64::MAX`):
/// a bound of a range of click ids, whose first 48 bits are the ms.
fn id_bound(ms: u64) -> [u8; 16] {
    if ms == u64::MAX {
        [0xff; 16]
    } else {
        ClickId::from_parts(ms, 0).to_bytes()
    }
}

/// `(?from, …)` of `n` numbered placeholders.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The clicks of every visitor and sub-id subject of a batch, in one scan
/// per [`PLAN_CHUNK`] of them.
fn scan_clicks(
    tx: &Connection,
    subjects: &[Option<Subject>],
    out: &mut [Planned],
    (from_ms, to_ms): (u64, u64),
) -> Result<(), StoreError> {
    let mut keys: HashMap<[u8; 16], Vec<usize>> = HashMap::new();
    let mut subs: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, subject) in subjects.iter().enumerate() {
        match subject {
            Some(Subject::Visitor(k)) => keys.entry(k.0).or_default().push(i),
            Some(Subject::Sub(v)) => subs.entry(v.clone()).or_default().push(i),
            _ => {}
        }
    }
    let keys: Vec<_> = keys.into_iter().collect();
    let subs: Vec<_> = subs.into_iter().collect();
    let (mut k, mut v) = (&keys[..], &subs[..]);
    while !k.is_empty() || !v.is_empty() {
        let kn = k.len().min(PLAN_CHUNK);
        let vn = v.len().min(PLAN_CHUNK - kn);
        let (kc, vc) = (&k[..kn], &v[..vn]);
        (k, v) = (&k[kn..], &v[vn..]);
        let mut terms = Vec::new();
        if kn > 0 {
            terms.push(format!("visitor_key IN ({})", placeholders(1, kn)));
        }
        if vn > 0 {
            let l = placeholders(kn + 1, vn);
            terms.extend((1..=5).map(|n| format!("sub{n} IN ({l})")));
        }
        // One range of click ids (their first 48 bits are the ms).
        let sql = format!(
            "SELECT click_id, visitor_key, sub1, sub2, sub3, sub4, sub5 FROM clicks \
             WHERE click_id >= ?{lo} AND click_id < ?{hi} AND erased_at IS NULL AND ({})",
            terms.join(" OR "),
            lo = kn + vn + 1,
            hi = kn + vn + 2,
        );
        let bound = |ms: u64| rusqlite::types::Value::Blob(id_bound(ms).to_vec());
        let values = kc
            .iter()
            .map(|(key, _)| rusqlite::types::Value::Blob(key.to_vec()))
            .chain(
                vc.iter()
                    .map(|(sub, _)| rusqlite::types::Value::Text(sub.clone())),
            )
            .chain([bound(from_ms), bound(to_ms)]);
        let mut st = tx.prepare(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(values))?;
        let by_key: HashMap<&[u8; 16], &Vec<usize>> = kc.iter().map(|(k, w)| (k, w)).collect();
        let by_sub: HashMap<&str, &Vec<usize>> = vc.iter().map(|(s, w)| (s.as_str(), w)).collect();
        while let Some(r) = rows.next()? {
            let id = bytes16(r.get(0)?, "click_id")?;
            let key = bytes16(r.get(1)?, "visitor_key")?;
            let mut who: Vec<usize> = by_key.get(&key).map(|w| w.to_vec()).unwrap_or_default();
            for n in 2..7 {
                if let Some(sub) = r.get::<_, Option<String>>(n)? {
                    who.extend(by_sub.get(sub.as_str()).into_iter().flat_map(|w| w.iter()));
                }
            }
            for i in who {
                out[i].sel.clicks.insert(id, key);
            }
        }
    }
    Ok(())
}

/// The dedup rows (`visitor_links`, keyed by link first) of every visitor
/// key the batch erases, in one scan per [`PLAN_CHUNK`] keys.
fn scan_links(
    tx: &Connection,
    subjects: &[Option<Subject>],
    out: &mut [Planned],
) -> Result<(), StoreError> {
    let mut keys: HashMap<[u8; 16], Vec<usize>> = HashMap::new();
    for (i, (p, subject)) in out.iter().zip(subjects).enumerate() {
        if let Some(subject) = subject {
            for k in p.sel.visitor_keys(subject) {
                keys.entry(k).or_default().push(i);
            }
        }
    }
    let keys: Vec<_> = keys.into_iter().collect();
    for chunk in keys.chunks(PLAN_CHUNK) {
        let sql = format!(
            "SELECT link_id, visitor_key FROM visitor_links WHERE visitor_key IN ({})",
            placeholders(1, chunk.len())
        );
        let by_key: HashMap<&[u8; 16], &Vec<usize>> = chunk.iter().map(|(k, w)| (k, w)).collect();
        let mut st = tx.prepare(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(
            chunk.iter().map(|(k, _)| k.to_vec()),
        ))?;
        while let Some(r) = rows.next()? {
            let link: i64 = r.get(0)?;
            let key = bytes16(r.get(1)?, "visitor_key")?;
            for i in by_key.get(&key).into_iter().flat_map(|w| w.iter()) {
                out[*i].links.insert((link, key));
            }
        }
    }
    Ok(())
}

/// The outbox rows, deliveries and idempotency keys that name one of the
/// batch's conversions, in one pass over each table; with `since` (outbox
/// seq, delivery id), only the outbox rows and deliveries past those (the
/// idempotency keys of planned conversions were all there at the start).
/// Returns how far it looked: the last outbox seq and delivery id.
fn scan_mentions(
    tx: &Connection,
    out: &mut [Planned],
    since: Option<(i64, i64)>,
) -> Result<(i64, i64), StoreError> {
    let (outbox_from, delivery_from) = since.unwrap_or((0, 0));
    let mut reach = (outbox_from, delivery_from);
    let mut names: Vec<String> = Vec::new();
    let mut who: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, p) in out.iter().enumerate() {
        for id in p.sel.conversions.values() {
            let n = *index.entry(id.to_string()).or_insert_with_key(|name| {
                names.push(name.clone());
                who.push(Vec::new());
                names.len() - 1
            });
            who[n].push(i);
        }
    }
    let last = |sql: &str, from: i64| -> Result<i64, StoreError> {
        let n: i64 = tx.prepare_cached(sql)?.query_row([], |r| r.get(0))?;
        Ok(n.max(from))
    };
    reach.0 = last("SELECT COALESCE(MAX(seq), 0) FROM outbox", outbox_from)?;
    reach.1 = last("SELECT COALESCE(MAX(id), 0) FROM deliveries", delivery_from)?;
    if names.is_empty() {
        return Ok(reach);
    }
    let ac = aho_corasick::AhoCorasick::new(&names)
        .map_err(|e| StoreError::Task(format!("matching erased ids: {e}")))?;
    let mut each =
        |sql: &str, from: i64, add: &mut dyn FnMut(&mut Planned, &rusqlite::types::Value)| {
            let mut st = tx.prepare_cached(sql)?;
            let mut rows = st.query([from])?;
            while let Some(r) = rows.next()? {
                let key: rusqlite::types::Value = r.get(0)?;
                let text = r.get_ref(1)?.as_str().unwrap_or_default();
                let mut hit: BTreeSet<usize> = BTreeSet::new();
                for m in ac.find_iter(text) {
                    hit.extend(who[m.pattern().as_usize()].iter().copied());
                }
                for i in hit {
                    add(&mut out[i], &key);
                }
            }
            Ok::<(), StoreError>(())
        };
    let int = |v: &rusqlite::types::Value| match v {
        rusqlite::types::Value::Integer(i) => *i,
        _ => 0,
    };
    // Up to the snapshot's last row: `reach` says where the next pass starts.
    each(
        &format!(
            "SELECT seq, payload FROM outbox WHERE seq > ?1 AND seq <= {}",
            reach.0
        ),
        outbox_from,
        &mut |p, k| {
            p.outbox.insert(int(k));
        },
    )?;
    each(
        &format!(
            "SELECT id, payload FROM deliveries WHERE id > ?1 AND id <= {}",
            reach.1
        ),
        delivery_from,
        &mut |p, k| {
            p.deliveries.insert(int(k));
        },
    )?;
    if since.is_none() {
        each(
            "SELECT key, body FROM idempotency_keys WHERE ?1 = 0",
            0,
            &mut |p, k| {
                if let rusqlite::types::Value::Text(t) = k {
                    p.idempotency.insert(t.clone());
                }
            },
        )?;
    }
    Ok(reach)
}

/// Erases what `sel` selected (inside the caller's transaction); `planned`
/// holds what the read snapshot found up to `horizon` in the tables with
/// no index to search (rows past it are looked at here).
fn erase(
    c: &Connection,
    subject: &Subject,
    sel: &Selection,
    now: Micros,
    planned: &Planned,
    horizon: Horizon,
) -> Result<ErasureCounts, StoreError> {
    let mut n = ErasureCounts::default();
    // One fresh random key per erased visitor key: the clicks stay one
    // visitor to a later rescore, and link to nothing else.
    let mut fresh = std::collections::BTreeMap::new();
    for key in sel.visitor_keys(subject) {
        let mut r = [0u8; 16];
        rand::fill(&mut r[..]);
        fresh.insert(key, r);
    }
    for (link, key) in &planned.links {
        n.visitor_links += c
            .prepare_cached("DELETE FROM visitor_links WHERE link_id = ?1 AND visitor_key = ?2")?
            .execute(params![link, key.as_slice()])? as u64;
    }
    for (id, key) in &sel.clicks {
        let r = fresh.get(key).copied().unwrap_or_default();
        n.clicks += c
            .prepare_cached(
                "UPDATE clicks SET visitor_key = ?2, sub1 = NULL, sub2 = NULL, sub3 = NULL, \
                 sub4 = NULL, sub5 = NULL, referrer = NULL, erased_at = ?3 \
                 WHERE click_id = ?1 AND erased_at IS NULL",
            )?
            .execute(params![id.as_slice(), r.as_slice(), now])? as u64;
    }
    let erased: Vec<ConversionId> = sel.conversions.values().copied().collect();
    let planned_conversions: BTreeSet<ConversionId> =
        planned.sel.conversions.values().copied().collect();
    let mut outbox = planned.outbox.clone();
    let mut deliveries = planned.deliveries.clone();
    let mut idempotency = planned.idempotency.clone();
    for (row, id) in &sel.conversions {
        n.conversions += c
            .prepare_cached(
                "UPDATE conversions SET order_id = ?2, sub1 = NULL, sub2 = NULL, sub3 = NULL, \
                 sub4 = NULL, sub5 = NULL, adv_sub1 = NULL, adv_sub2 = NULL, adv_sub3 = NULL, \
                 adv_sub4 = NULL, adv_sub5 = NULL, ip_hash = NULL, fingerprint = X'', \
                 erased_at = ?3 WHERE id = ?1 AND erased_at IS NULL",
            )?
            .execute(params![row, erased_order_id(*id), now])? as u64;
        let text = id.to_string();
        let since = |sql: &str, from: i64| -> Result<Vec<i64>, StoreError> {
            Ok(c.prepare_cached(sql)?
                .query_map(params![from, &text], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
        };
        // Planned: the passes so far looked up to the horizon. Recorded
        // since the batch began: from its start.
        let known = planned_conversions.contains(id);
        outbox.extend(since(
            "SELECT seq FROM outbox WHERE seq > ?1 AND instr(payload, ?2) > 0",
            if known {
                horizon.outbox_seq
            } else {
                horizon.outbox_origin
            },
        )?);
        deliveries.extend(since(
            "SELECT id FROM deliveries WHERE id > ?1 AND instr(payload, ?2) > 0",
            if known {
                horizon.delivery_id
            } else {
                horizon.delivery_origin
            },
        )?);
        // A conversion the snapshot did not know (recorded since): its
        // idempotency key has no position to search from (rare).
        if !planned_conversions.contains(id) {
            let keys: Vec<String> = c
                .prepare_cached("SELECT key FROM idempotency_keys WHERE instr(body, ?1) > 0")?
                .query_map([&text], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            idempotency.extend(keys);
        }
    }
    for key in &idempotency {
        n.idempotency_keys += c
            .prepare_cached("DELETE FROM idempotency_keys WHERE key = ?1")?
            .execute([key])? as u64;
    }
    for seq in &outbox {
        let payload: Option<String> = c
            .prepare_cached("SELECT payload FROM outbox WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))
            .optional()?;
        if let Some(p) = payload.and_then(|p| redact_payload(&p, &erased)) {
            n.outbox += c
                .prepare_cached("UPDATE outbox SET payload = ?2 WHERE seq = ?1")?
                .execute(params![seq, p])? as u64;
        }
    }
    for delivery in &deliveries {
        let payload: Option<String> = c
            .prepare_cached("SELECT payload FROM deliveries WHERE id = ?1")?
            .query_row([delivery], |r| r.get(0))
            .optional()?;
        let Some(payload) = payload.filter(|p| is_about(p, &erased)) else {
            continue;
        };
        if let Some(p) = redact_payload(&payload, &erased) {
            n.deliveries += c
                .prepare_cached(
                    "UPDATE deliveries SET payload = ?2, \
                     last_error = CASE WHEN last_error IS NULL THEN NULL ELSE '(erased)' END \
                     WHERE id = ?1",
                )?
                .execute(params![delivery, p])? as u64;
        }
        let attempts: Vec<(i64, String, String)> = c
            .prepare_cached(
                "SELECT n, url, response FROM delivery_attempts WHERE delivery_id = ?1",
            )?
            .query_map([delivery], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (k, url, response) in attempts {
            let redacted = redact_url(&url);
            if redacted == url && response.is_empty() {
                continue;
            }
            n.delivery_attempts += c
                .prepare_cached(
                    "UPDATE delivery_attempts SET url = ?3, response = '', \
                     error = CASE WHEN error IS NULL THEN NULL ELSE '(erased)' END \
                     WHERE delivery_id = ?1 AND n = ?2",
                )?
                .execute(params![delivery, k, redacted])? as u64;
        }
    }
    Ok(n)
}

/// The write half of one erasure, inside the caller's transaction:
/// `planned` is what [`plan`] found for it up to `horizon`; the clicks
/// written since and everything with an index are selected here.
fn run(
    tx: &Connection,
    id: &str,
    now: Micros,
    horizon: Horizon,
    planned: Planned,
) -> Result<Erased, StoreError> {
    let found: Option<(String, Option<String>)> = tx
        .query_row(
            "SELECT status, selector FROM privacy_requests WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((status, selector)) = found else {
        return Err(StoreError::NotFound(format!("privacy request {id}")));
    };
    let (Some(selector), "received") = (selector, status.as_str()) else {
        let r = receipt(tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        return Ok(Erased::unchanged(r));
    };
    let subject = Subject::from_text(&selector)?;
    // What the snapshot found, less what another request erased since.
    let mut start = Selection::default();
    {
        let mut live =
            tx.prepare_cached("SELECT 1 FROM clicks WHERE click_id = ?1 AND erased_at IS NULL")?;
        for (id, key) in &planned.sel.clicks {
            if live.exists([id.as_slice()])? {
                start.clicks.insert(*id, *key);
            }
        }
    }
    let sel = select(tx, &subject, true, Scan::After(horizon.click_seq), start)?;
    let counts = erase(tx, &subject, &sel, now, &planned, horizon)?;
    let counts_text =
        serde_json::to_string(&counts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        "UPDATE privacy_requests SET status = 'done', selector = NULL, counts = ?2, \
         error = NULL, attempts = attempts + 1, done_at = ?3 WHERE id = ?1",
        params![id, counts_text, now],
    )?;
    let r = receipt(tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    let erased = sel.erased(r, &subject);
    if !erased.click_ids.is_empty() || !erased.conversion_ids.is_empty() {
        super::outbox::append(
            tx,
            clickward_core::event::PRIVACY_ERASURE,
            erasure_event(&erased),
        )?;
    }
    Ok(erased)
}

/// Erasures carried out per write transaction: one commit (one fsync) for
/// the group, each in its own savepoint, so one that fails leaves the rest.
const WRITE_GROUP: usize = 32;

fn subject_data(c: &Connection, subject: &Subject) -> Result<SubjectData, StoreError> {
    let sel = select(c, subject, false, Scan::All, Selection::default())?;
    let mut clicks = Vec::new();
    for id in sel.clicks.keys() {
        let mut st = c.prepare_cached(&format!(
            "{} WHERE c.click_id = ?1",
            super::clicks::CLICK_SELECT
        ))?;
        let mut rows = st.query([id.as_slice()])?;
        if let Some(r) = rows.next()? {
            clicks.push(super::clicks::click_from(r)?);
        }
    }
    let mut conversions = Vec::new();
    let mut deliveries = Vec::new();
    let erased: Vec<ConversionId> = sel.conversions.values().copied().collect();
    for id in &erased {
        conversions.push(super::conversions::get_conversion(c, *id)?);
        let mut st = c.prepare_cached(
            "SELECT d.id, e.kind, d.type, d.status, d.attempts, d.created_at, d.payload \
             FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id \
             WHERE instr(d.payload, ?1) > 0 ORDER BY d.id",
        )?;
        let mut rows = st.query([id.to_string()])?;
        while let Some(r) = rows.next()? {
            let payload: String = r.get(6)?;
            if !is_about(&payload, &erased) {
                continue;
            }
            deliveries.push(serde_json::json!({
                "id": r.get::<_, i64>(0)?,
                "endpoint_kind": r.get::<_, String>(1)?,
                "type": r.get::<_, String>(2)?,
                "status": r.get::<_, String>(3)?,
                "attempts": r.get::<_, i64>(4)?,
                "created_at": r.get::<_, i64>(5)?,
                "payload": serde_json::from_str::<serde_json::Value>(&payload)
                    .unwrap_or(serde_json::Value::Null),
            }));
        }
    }
    clicks.sort_by_key(|k| k.ts);
    conversions.sort_by_key(|v| v.received_at);
    Ok(SubjectData {
        clicks,
        conversions,
        deliveries,
    })
}

/// One write transaction over a group of erasures, each in a savepoint.
fn run_group(
    c: &mut Connection,
    work: Vec<(String, Option<Subject>, Planned)>,
    now: Micros,
    horizon: Horizon,
) -> Result<Vec<Result<Erased, StoreError>>, StoreError> {
    let mut tx = c.transaction()?;
    // The clicks committed since the last advance, once for the group.
    let (ids, subjects, mut plans): (Vec<String>, Vec<Option<Subject>>, Vec<Planned>) =
        work.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut i, mut s, mut p), (id, subject, plan)| {
                i.push(id);
                s.push(subject);
                p.push(plan);
                (i, s, p)
            },
        );
    let horizon = advance(&tx, &subjects, &mut plans, horizon)?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, planned) in ids.into_iter().zip(plans) {
        let sp = tx.savepoint()?;
        match run(&sp, &id, now, horizon, planned) {
            Ok(e) => {
                sp.commit()?;
                out.push(Ok(e));
            }
            // Dropping the savepoint rolls this one back.
            Err(e) => out.push(Err(e)),
        }
    }
    tx.commit()?;
    Ok(out)
}

impl PrivacyStore for SqliteStore {
    fn receive_erasure(
        &self,
        id: String,
        subject: Subject,
        actor: String,
        now: Micros,
    ) -> StoreFuture<'_, Receipt> {
        self.write(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO privacy_requests (id, subject, selector, status, actor, \
                 received_at) VALUES (?1, ?2, ?3, 'received', ?4, ?5)",
                params![id, subject.kind(), subject.to_text()?, actor, now],
            )?;
            receipt(c, &id)?.ok_or_else(|| StoreError::NotFound(id))
        })
    }

    fn run_erasure(&self, id: String, now: Micros) -> StoreFuture<'_, Erased> {
        Box::pin(async move {
            self.run_erasures(vec![id], now, Pace::FULL)
                .await?
                .pop()
                .unwrap_or_else(|| Err(StoreError::Task("no erasure was run".to_owned())))
        })
    }

    fn run_erasures(
        &self,
        ids: Vec<String>,
        now: Micros,
        pace: Pace,
    ) -> StoreFuture<'_, Vec<Result<Erased, StoreError>>> {
        Box::pin(async move {
            let mut spent = Spent::default();
            let (mut horizon, mut subjects, mut rest) =
                plan(self, ids.clone(), pace, &mut spent).await?;
            let mut out = Vec::with_capacity(ids.len());
            for group in ids.chunks(WRITE_GROUP) {
                {
                    // The clicks that came meanwhile, found beside the writer
                    // for the requests still to run.
                    let from = horizon;
                    let t = std::time::Instant::now();
                    let (to, s, r) = self
                        .read(move |c| {
                            let tx = c.unchecked_transaction()?;
                            let to = advance(&tx, &subjects, &mut rest, from)?;
                            drop(tx);
                            Ok((to, subjects, rest))
                        })
                        .await?;
                    spent.advance_ms += t.elapsed().as_millis();
                    (horizon, subjects, rest) = (to, s, r);
                }
                // The advance is not paced (its work follows the redirects'
                // rate); the group's writes are.
                let t = std::time::Instant::now();
                let n = group.len().min(rest.len());
                let later = rest.split_off(n);
                let later_subjects = subjects.split_off(n);
                let work: Vec<(String, Option<Subject>, Planned)> = group
                    .iter()
                    .cloned()
                    .zip(std::mem::replace(&mut subjects, later_subjects))
                    .zip(std::mem::replace(&mut rest, later))
                    .map(|((id, subject), plan)| (id, subject, plan))
                    .collect();
                let done = self
                    .write(move |c| {
                        // Erased values must not survive in free space: zero
                        // what the transaction frees.
                        c.pragma_update(None, "secure_delete", true)?;
                        let out = run_group(c, work, now, horizon);
                        c.pragma_update(None, "secure_delete", false)?;
                        out
                    })
                    .await;
                match done {
                    Ok(results) => out.extend(results),
                    Err(e) => {
                        let text = e.to_string();
                        out.push(Err(e));
                        out.extend((1..n).map(|_| Err(StoreError::Task(text.clone()))));
                    }
                }
                spent.write_ms += t.elapsed().as_millis();
                let r = std::time::Instant::now();
                pace.rest(t.elapsed()).await;
                spent.rested_ms += r.elapsed().as_millis();
            }
            tracing::debug!(erasures = ids.len(), ?spent, "erasure batch run");
            if out
                .iter()
                .any(|r| r.as_ref().is_ok_and(|e| e.subject.is_some()))
            {
                // Nor in the WAL: fold it into the database and truncate it,
                // now if no reader is in the way, else by the checkpointer.
                self.truncate_wal().await;
            }
            Ok(out)
        })
    }

    fn erasure_attempt_failed(
        &self,
        id: String,
        error: String,
        permanent: bool,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            c.execute(
                "UPDATE privacy_requests SET attempts = attempts + 1, error = ?2, \
                 status = CASE WHEN ?3 THEN 'failed' ELSE status END, \
                 selector = CASE WHEN ?3 THEN NULL ELSE selector END, \
                 done_at = CASE WHEN ?3 THEN ?4 ELSE done_at END \
                 WHERE id = ?1 AND status = 'received'",
                params![id, error, permanent, crate::common::now_micros()],
            )?;
            Ok(())
        })
    }

    fn pending_erasures(&self) -> StoreFuture<'_, Vec<String>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT id FROM privacy_requests WHERE status = 'received' ORDER BY received_at",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
        })
    }

    fn receipts(&self, before: Option<String>, limit: u32) -> StoreFuture<'_, Vec<Receipt>> {
        self.read(move |c| {
            let ids: Vec<String> = c
                .prepare_cached(
                    "SELECT id FROM privacy_requests WHERE (?2 IS NULL OR id < ?2) \
                     ORDER BY id DESC LIMIT ?1",
                )?
                .query_map(params![limit, before], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.iter()
                .filter_map(|id| receipt(c, id).transpose())
                .collect()
        })
    }

    fn receipt(&self, id: String) -> StoreFuture<'_, Option<Receipt>> {
        self.read(move |c| receipt(c, &id))
    }

    fn subject_data(&self, subject: Subject) -> StoreFuture<'_, SubjectData> {
        self.read(move |c| subject_data(c, &subject))
    }

    fn purge_conversion_fields(&self, before: Micros, batch: u32) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            // SQLite takes `$n` as `?n`.
            Ok(c.execute(
                &format!("{CONVERSION_FIELDS_CLEAR} ({CONVERSION_FIELDS_DUE})"),
                params![before, batch],
            )? as u64)
        })
    }

    fn purge_deliveries(
        &self,
        kind: EndpointKind,
        before: Micros,
        batch: u32,
    ) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let ids: Vec<i64> = tx
                .prepare_cached(DELIVERIES_DUE)?
                .query_map(params![kind.as_str(), before, batch], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                tx.prepare_cached("DELETE FROM delivery_attempts WHERE delivery_id = ?1")?
                    .execute([id])?;
                tx.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?
                    .execute([id])?;
            }
            tx.commit()?;
            Ok(ids.len() as u64)
        })
    }

    fn purge_receipts(&self, before: Micros) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM privacy_requests WHERE status != 'received' AND done_at < ?1",
                [before],
            )? as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickward_core::click::{DeviceType, NewClick, TrackingParams, VisitorKey};

    fn click(n: u128, visitor: u8) -> NewClick {
        NewClick {
            click_id: ClickId::from_parts(1_000, n),
            ts: 1_000_000,
            link_id: 1,
            program_id: 1,
            affiliate_id: None,
            params: TrackingParams::default(),
            referrer: None,
            device: DeviceType::Desktop,
            os: None,
            browser: None,
            bot: None,
            country: None,
            region: None,
            city: None,
            visitor_key: VisitorKey([visitor; 16]),
            previous_keys: vec![],
            verdict: None,
            consent: Default::default(),
        }
    }

    /// A click the visitor made after the batch's read snapshot (while the
    /// batch ran) is erased with the rest, and its dedup row goes too.
    #[test]
    fn clicks_written_after_the_plan_are_caught_up() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let path = dir.path().join("t.db");
        let _store = SqliteStore::open(&path, &crate::SqliteOptions::default())?;
        let mut c = Connection::open(&path)?;
        let window = 86_400_000_000;
        super::super::clicks::insert_clicks(&c, &[click(1, 7), click(2, 8)], window)?;
        c.execute(
            "INSERT INTO privacy_requests (id, subject, selector, status, actor, received_at) \
             VALUES ('era_t', 'visitor', ?1, 'received', 't', 0)",
            [Subject::Visitor(VisitorKey([7; 16])).to_text()?],
        )?;
        let (horizon, mut subjects, _) = plan_start(&c, &["era_t".to_owned()])?;
        let mut plans = vec![Planned::default()];
        scan_clicks(&c, &subjects, &mut plans, (0, u64::MAX))?;
        // In pieces of one subject, as a paced batch plans.
        let mut from = 0;
        while let Some(next) = plan_rest(&c, &subjects, &mut plans, from, 1)? {
            from = next;
        }
        assert_eq!(plans[0].sel.clicks.len(), 1);
        // Visitor 7 clicks again on another link, after the snapshot.
        let mut late = click(3, 7);
        late.link_id = 2;
        super::super::clicks::insert_clicks(&c, &[late], window)?;
        let work = vec![("era_t".to_owned(), subjects.remove(0), plans.remove(0))];
        let out = run_group(&mut c, work, 5, horizon)?;
        let counts = out[0].as_ref().ok().and_then(|e| e.receipt.counts);
        assert_eq!(counts.map(|n| (n.clicks, n.visitor_links)), Some((2, 2)));
        let left: i64 = c.query_row(
            "SELECT COUNT(*) FROM clicks WHERE visitor_key = ?1",
            [[7u8; 16].as_slice()],
            |r| r.get(0),
        )?;
        assert_eq!(left, 0);
        Ok(())
    }
}
