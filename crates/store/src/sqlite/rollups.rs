//! Click rollups: recompute a range (idempotent), advance the watermark, and
//! answer click counts from the smallest rollup that covers a report.

use std::collections::BTreeMap;

use clickward_core::Micros;
use clickward_core::report::{Bucket, ClickCounts, Dimension};
use rusqlite::types::Value;
use rusqlite::{Connection, params};

use super::id_floor;
use crate::StoreError;

/// Rollup bucket: 15 minutes, UTC, µs.
pub const BUCKET: i64 = 15 * 60 * 1_000_000;
/// Clicks are rolled up once their bucket ended this long ago, so that
/// clicks still in the ingest queue land before their bucket is rolled.
pub const SETTLE: i64 = 60 * 1_000_000;
/// Largest range recomputed in one transaction (the writer is free between).
pub const CHUNK: i64 = 6 * 3600 * 1_000_000;

fn floor(ts: Micros) -> Micros {
    ts.div_euclid(BUCKET) * BUCKET
}

fn ceil(ts: Micros) -> Micros {
    floor(ts + BUCKET - 1)
}

type Counts = [i64; 4];

/// The rollup rows of a range, computed by reading (no write lock held).
pub(super) struct Aggregate {
    s: Micros,
    e: Micros,
    link: Vec<(i64, i64, i64, i64, Counts)>,
    src: Vec<(i64, String, Counts)>,
    geo: Vec<(i64, String, String, Counts)>,
}

/// Computes the rollup rows of `[start, end)` (widened to whole buckets) from
/// the raw clicks. Read-only: run it on a reader so the writer, and every
/// redirect waiting on it, is not held while the GROUP BYs scan.
pub(super) fn aggregate(
    c: &Connection,
    start: Micros,
    end: Micros,
) -> Result<Aggregate, StoreError> {
    let (s, e) = (floor(start), ceil(end));
    let mut agg = Aggregate {
        s,
        e,
        link: Vec::new(),
        src: Vec::new(),
        geo: Vec::new(),
    };
    if e <= s {
        return Ok(agg);
    }
    let (sid, eid) = (id_floor(s), id_floor(e));
    let from = "FROM clicks WHERE click_id >= ?1 AND click_id < ?2 AND ts >= ?3 AND ts < ?4";
    let counts = "COUNT(*), COUNT(bot_reason), COUNT(invalid_reason), SUM(is_unique)";
    let bucket = format!("(ts / {BUCKET}) * {BUCKET}");
    let mut st = c.prepare(&format!(
        "SELECT link_id, {bucket}, program_id, IFNULL(affiliate_id, 0), {counts} {from} GROUP BY 1, 2, 3, 4"
    ))?;
    let mut rows = st.query(params![sid, eid, s, e])?;
    while let Some(r) = rows.next()? {
        agg.link.push((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            [r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
        ));
    }
    drop(rows);
    let mut st = c.prepare(&format!(
        "SELECT {bucket}, IFNULL(src, ''), {counts} {from} GROUP BY 1, 2"
    ))?;
    let mut rows = st.query(params![sid, eid, s, e])?;
    while let Some(r) = rows.next()? {
        agg.src.push((
            r.get(0)?,
            r.get(1)?,
            [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
        ));
    }
    drop(rows);
    let mut st = c.prepare(&format!(
        "SELECT {bucket}, IFNULL(country, ''), device, {counts} {from} GROUP BY 1, 2, 3"
    ))?;
    let mut rows = st.query(params![sid, eid, s, e])?;
    while let Some(r) = rows.next()? {
        agg.geo.push((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
        ));
    }
    Ok(agg)
}

/// Replaces the rollup rows of the aggregate's range (inside the caller's
/// transaction): short, whatever the number of clicks behind it.
pub(super) fn replace(c: &Connection, a: &Aggregate) -> Result<(), StoreError> {
    for t in ["rollup_link", "rollup_src", "rollup_geo"] {
        c.execute(
            &format!("DELETE FROM {t} WHERE bucket >= ?1 AND bucket < ?2"),
            params![a.s, a.e],
        )?;
    }
    let mut st = c.prepare_cached(
        "INSERT INTO rollup_link (link_id, bucket, program_id, affiliate_key, gross, bot, invalid, uniq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (l, b, p, af, k) in &a.link {
        st.execute(params![l, b, p, af, k[0], k[1], k[2], k[3]])?;
    }
    let mut st = c.prepare_cached(
        "INSERT INTO rollup_src (bucket, src, gross, bot, invalid, uniq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (b, src, k) in &a.src {
        st.execute(params![b, src, k[0], k[1], k[2], k[3]])?;
    }
    let mut st = c.prepare_cached(
        "INSERT INTO rollup_geo (bucket, country, device, gross, bot, invalid, uniq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (b, country, device, k) in &a.geo {
        st.execute(params![b, country, device, k[0], k[1], k[2], k[3]])?;
    }
    Ok(())
}

pub(super) fn watermark(c: &Connection) -> Result<Micros, StoreError> {
    Ok(c.query_row(
        "SELECT value FROM meta WHERE key = 'rollup_watermark'",
        [],
        |r| r.get(0),
    )?)
}

pub(super) fn set_watermark(c: &Connection, w: Micros) -> Result<(), StoreError> {
    c.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'rollup_watermark'",
        [w],
    )?;
    Ok(())
}

/// The next chunk the watermark can advance over at `now`, if any:
/// `(from, to)`, from the watermark (or the first click) up to at most
/// [`CHUNK`] later and never past the settled present.
pub(super) fn next_chunk(
    c: &Connection,
    now: Micros,
) -> Result<Option<(Micros, Micros)>, StoreError> {
    let target = floor(now - SETTLE);
    let mut w = watermark(c)?;
    if w == 0 {
        let first: Option<Micros> = c.query_row("SELECT MIN(ts) FROM clicks", [], |r| r.get(0))?;
        match first {
            Some(f) => w = floor(f),
            None => return Ok(None),
        }
    }
    if target <= w {
        return Ok(None);
    }
    Ok(Some((w, target.min(w + CHUNK))))
}

/// A set of dimensions a rollup table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cube {
    Link,
    Src,
    Geo,
}

impl Cube {
    /// The smallest rollup that holds every non-time dimension of a report.
    pub(super) fn pick(dims: &[Dimension]) -> Option<Cube> {
        let rest: Vec<Dimension> = dims
            .iter()
            .copied()
            .filter(|d| !matches!(d, Dimension::Time(_)))
            .collect();
        let within = |allowed: &[Dimension]| rest.iter().all(|d| allowed.contains(d));
        if within(&[Dimension::Src]) {
            Some(Cube::Src)
        } else if within(&[Dimension::Country, Dimension::Device]) {
            Some(Cube::Geo)
        } else if within(&[Dimension::Link, Dimension::Program, Dimension::Affiliate]) {
            Some(Cube::Link)
        } else {
            None
        }
    }

    /// The rollup table, of clicks or of conversions.
    fn table(self, conv: bool) -> &'static str {
        match (self, conv) {
            (Cube::Link, false) => "rollup_link",
            (Cube::Link, true) => "rollup_conv_link",
            (Cube::Src, false) => "rollup_src",
            (Cube::Src, true) => "rollup_conv_src",
            (Cube::Geo, false) => "rollup_geo",
            (Cube::Geo, true) => "rollup_conv_geo",
        }
    }

    /// The joins the table's dimension columns need (as `r`).
    fn joins(self, conv: bool) -> &'static str {
        match (self, conv) {
            (Cube::Link, false) => {
                "JOIN links l ON l.id = r.link_id JOIN programs p ON p.id = r.program_id \
                 LEFT JOIN affiliates a ON a.id = NULLIF(r.affiliate_key, 0)"
            }
            (Cube::Link, true) => {
                "LEFT JOIN links l ON l.id = NULLIF(r.link_key, 0) JOIN programs p ON p.id = r.program_id \
                 LEFT JOIN affiliates a ON a.id = NULLIF(r.affiliate_key, 0)"
            }
            _ => "",
        }
    }

    fn column(self, d: Dimension) -> &'static str {
        match d {
            Dimension::Time(_) => "b.label",
            Dimension::Link => "l.code",
            Dimension::Program => "p.slug",
            Dimension::Affiliate => "a.slug",
            Dimension::Src => "NULLIF(r.src, '')",
            Dimension::Country => "NULLIF(r.country, '')",
            Dimension::Device => "NULLIF(r.device, '')",
            // `pick` never chooses a cube without the dimension.
            _ => "NULL",
        }
    }

    /// The conversion rollup's key columns (after basis and bucket, before
    /// currency) and the expressions over `conversions` that fill them.
    fn conv_keys(self) -> (&'static str, &'static str) {
        match self {
            Cube::Link => (
                "link_key, program_id, affiliate_key",
                "IFNULL(link_id, 0), program_id, IFNULL(affiliate_id, 0)",
            ),
            Cube::Src => ("src", "IFNULL(src, '')"),
            Cube::Geo => ("country, device", "IFNULL(country, ''), IFNULL(device, '')"),
        }
    }

    const ALL: [Cube; 3] = [Cube::Link, Cube::Src, Cube::Geo];
}

/// A grouped SELECT over a rollup: `metrics` summed per report bucket and
/// dimension value (`extra` adds conditions and group columns after the
/// dimensions), with its parameters.
fn grouped(
    cube: Cube,
    conv: bool,
    buckets: &[Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
    metrics: &str,
    extra: Option<(&str, &str)>,
) -> (String, Vec<Value>) {
    // Same bucket rows as raw reports; the id bounds go unused here.
    let (values, mut args) = super::bucket_values(buckets);
    let mut cols: Vec<&str> = dims.iter().map(|d| cube.column(*d)).collect();
    let mut conds: Vec<String> = filters
        .iter()
        .filter(|(d, _)| !matches!(d, Dimension::Time(_)))
        .map(|(d, v)| {
            args.push(Value::Text(v.clone()));
            format!("{} = ?", cube.column(*d))
        })
        .collect();
    if let Some((cond, col)) = extra {
        conds.push(cond.to_owned());
        cols.push(col);
    }
    let keys: String = cols.iter().map(|c| format!("{c}, ")).collect();
    let group = if cols.is_empty() {
        String::new()
    } else {
        let n: Vec<String> = (1..=cols.len()).map(|i| i.to_string()).collect();
        format!("GROUP BY {}", n.join(", "))
    };
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let (table, joins) = (cube.table(conv), cube.joins(conv));
    let sql = format!(
        "WITH b(label, sid, eid, s, e) AS (VALUES {values}) SELECT {keys} {metrics} \
         FROM b JOIN {table} r ON r.bucket >= b.s AND r.bucket < b.e {joins} {where_} {group}"
    );
    (sql, args)
}

/// Click counts from a rollup for buckets that lie wholly before the
/// watermark (the caller clips them).
pub(super) fn counts(
    c: &Connection,
    cube: Cube,
    buckets: &[Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
) -> Result<BTreeMap<Vec<Option<String>>, ClickCounts>, StoreError> {
    let mut out = BTreeMap::new();
    if buckets.is_empty() {
        return Ok(out);
    }
    let (sql, args) = grouped(
        cube,
        false,
        buckets,
        dims,
        filters,
        "SUM(r.gross), SUM(r.bot), SUM(r.invalid), SUM(r.uniq)",
        None,
    );
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
    let n = dims.len();
    while let Some(r) = rows.next()? {
        let mut k = Vec::with_capacity(n);
        for i in 0..n {
            k.push(r.get::<_, Option<String>>(i)?);
        }
        let gross: Option<i64> = r.get(n)?;
        let Some(gross) = gross.filter(|g| *g > 0) else {
            continue;
        };
        out.insert(
            k,
            ClickCounts {
                gross_clicks: gross,
                bot_clicks: r.get(n + 1)?,
                invalid_clicks: r.get(n + 2)?,
                unique_clicks: r.get(n + 3)?,
            },
        );
    }
    Ok(out)
}

/// Conversion totals from a conversion rollup (exact for every bucket, no
/// watermark): `(keys, currency, conversions, revenue, payout)` rows, in
/// minor units. `by_click_time` reads the click-time basis.
pub(super) fn money(
    c: &Connection,
    cube: Cube,
    buckets: &[Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
    by_click_time: bool,
) -> Result<Vec<MoneyRow>, StoreError> {
    let mut out = Vec::new();
    if buckets.is_empty() {
        return Ok(out);
    }
    let basis = if by_click_time {
        "r.basis = 1"
    } else {
        "r.basis = 0"
    };
    let (sql, args) = grouped(
        cube,
        true,
        buckets,
        dims,
        filters,
        "SUM(r.conversions), SUM(r.revenue), SUM(r.payout)",
        Some((basis, "r.currency")),
    );
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
    let n = dims.len();
    while let Some(r) = rows.next()? {
        let mut k = Vec::with_capacity(n);
        for i in 0..n {
            k.push(r.get::<_, Option<String>>(i)?);
        }
        let currency: Option<String> = r.get(n)?;
        let conversions: Option<i64> = r.get(n + 1)?;
        // Groups whose rows a rejection emptied.
        let (Some(currency), Some(conversions)) = (currency, conversions.filter(|v| *v > 0)) else {
            continue;
        };
        out.push((k, currency, [conversions, r.get(n + 2)?, r.get(n + 3)?]));
    }
    Ok(out)
}

/// Conversion totals of one report group in one currency:
/// `(dimension values, currency, [conversions, revenue, payout])`, minor units.
pub(super) type MoneyRow = (Vec<Option<String>>, String, [i64; 3]);

/// Statuses whose conversions reports count.
pub(super) const COUNTED: &str = "('pending', 'approved', 'paid')";

/// The bucket expression over `conversions` of each basis (0: occurred,
/// 1: click time); the time expressions match the `conversions_occurred`
/// and `conversions_click_time` indexes.
const BASES: [(i64, &str); 2] = [
    (0, "occurred_at"),
    (1, "(occurred_at - IFNULL(ctit_us, 0))"),
];

/// Adds (`sign` 1) or takes away (`sign` -1) one conversion, by row id, in
/// every conversion rollup. Inside the transaction that records it or
/// changes its status, so the rollups never disagree with the rows.
pub(super) fn apply_conversion(c: &Connection, rowid: i64, sign: i64) -> Result<(), StoreError> {
    for cube in Cube::ALL {
        let table = cube.table(true);
        let (cols, exprs) = cube.conv_keys();
        for (basis, t) in BASES {
            c.prepare_cached(&format!(
                "INSERT INTO {table} (basis, bucket, {cols}, currency, conversions, revenue, payout) \
                 SELECT {basis}, ({t} / {BUCKET}) * {BUCKET}, {exprs}, currency, ?2, ?2 * IFNULL(amount, 0), \
                 ?2 * commission FROM conversions WHERE id = ?1 \
                 ON CONFLICT (basis, bucket, {cols}, currency) DO UPDATE SET \
                 conversions = conversions + excluded.conversions, revenue = revenue + excluded.revenue, \
                 payout = payout + excluded.payout"
            ))?
            .execute(params![rowid, sign])?;
            if sign < 0 {
                c.prepare_cached(&format!(
                    "DELETE FROM {table} WHERE basis = {basis} AND conversions = 0 AND bucket = \
                     (SELECT ({t} / {BUCKET}) * {BUCKET} FROM conversions WHERE id = ?1)"
                ))?
                .execute([rowid])?;
            }
        }
    }
    Ok(())
}

/// Recomputes the conversion rollups of `[start, end)` (widened to whole
/// buckets) from the conversion rows: replace, never add. Inside the
/// caller's write transaction (conversions are few; no reader pass, so no
/// conversion recorded meanwhile can be missed).
pub(super) fn recompute_conversions(
    c: &Connection,
    start: Micros,
    end: Micros,
) -> Result<(), StoreError> {
    let (s, e) = (floor(start), ceil(end));
    for cube in Cube::ALL {
        let table = cube.table(true);
        let (cols, exprs) = cube.conv_keys();
        let group: Vec<String> = (1..=cols.split(',').count() + 3)
            .map(|i| i.to_string())
            .collect();
        for (basis, t) in BASES {
            c.execute(
                &format!(
                    "DELETE FROM {table} WHERE basis = {basis} AND bucket >= ?1 AND bucket < ?2"
                ),
                params![s, e],
            )?;
            c.execute(
                &format!(
                    "INSERT INTO {table} (basis, bucket, {cols}, currency, conversions, revenue, payout) \
                     SELECT {basis}, ({t} / {BUCKET}) * {BUCKET}, {exprs}, currency, COUNT(*), \
                     SUM(IFNULL(amount, 0)), SUM(commission) FROM conversions \
                     WHERE {t} >= ?1 AND {t} < ?2 AND status IN {COUNTED} GROUP BY {}",
                    group.join(", ")
                ),
                params![s, e],
            )?;
        }
    }
    Ok(())
}

/// Splits report buckets at the watermark: the parts before it (for the
/// rollup) and after it (for raw clicks). `None` when a boundary is not on a
/// 15-minute UTC instant (then everything is read raw).
pub(super) fn split(buckets: &[Bucket], w: Micros) -> Option<(Vec<Bucket>, Vec<Bucket>)> {
    if buckets
        .iter()
        .any(|b| b.start % BUCKET != 0 || b.end % BUCKET != 0)
    {
        return None;
    }
    let mut rolled = Vec::new();
    let mut raw = Vec::new();
    for b in buckets {
        if b.start < w {
            rolled.push(Bucket {
                label: b.label.clone(),
                start: b.start,
                end: b.end.min(w),
            });
        }
        if b.end > w {
            raw.push(Bucket {
                label: b.label.clone(),
                start: b.start.max(w),
                end: b.end,
            });
        }
    }
    Some((rolled, raw))
}
