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

    /// The rollup table and the joins its dimension columns need.
    fn from(self) -> (&'static str, &'static str) {
        match self {
            Cube::Link => (
                "rollup_link r",
                "JOIN links l ON l.id = r.link_id JOIN programs p ON p.id = r.program_id \
                 LEFT JOIN affiliates a ON a.id = NULLIF(r.affiliate_key, 0)",
            ),
            Cube::Src => ("rollup_src r", ""),
            Cube::Geo => ("rollup_geo r", ""),
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
            Dimension::Device => "r.device",
            // `pick` never chooses a cube without the dimension.
            _ => "NULL",
        }
    }
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
    // Same bucket rows as raw reports; the id bounds go unused here.
    let (values, mut args) = super::bucket_values(buckets);
    let cols: Vec<&str> = dims.iter().map(|d| cube.column(*d)).collect();
    let keys = if cols.is_empty() {
        String::new()
    } else {
        format!("{}, ", cols.join(", "))
    };
    let group = if cols.is_empty() {
        String::new()
    } else {
        let n: Vec<String> = (1..=cols.len()).map(|i| i.to_string()).collect();
        format!("GROUP BY {}", n.join(", "))
    };
    let conds: Vec<String> = filters
        .iter()
        .filter(|(d, _)| !matches!(d, Dimension::Time(_)))
        .map(|(d, v)| {
            args.push(Value::Text(v.clone()));
            format!("{} = ?", cube.column(*d))
        })
        .collect();
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let (table, joins) = cube.from();
    let sql = format!(
        "WITH b(label, sid, eid, s, e) AS (VALUES {values}) SELECT {keys} SUM(r.gross), SUM(r.bot), SUM(r.invalid), \
         SUM(r.uniq) FROM b JOIN {table} ON r.bucket >= b.s AND r.bucket < b.e {joins} {where_} {group}"
    );
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
    let n = cols.len();
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
