//! Pure planning shared by the SQLite and PostgreSQL stores: rollup bucket
//! arithmetic, which rollup answers a report, and where the watermark cuts
//! a report's buckets, how its parts add up, and the column names of report
//! dimensions (the same in both dialects).

use clickward_core::Micros;
use clickward_core::id::ClickId;
use std::collections::BTreeMap;

use clickward_core::report::{Bucket, ClickCounts, Dimension};

use crate::ReportRow;

/// Rollup bucket: 15 minutes, UTC, µs.
pub(crate) const BUCKET: i64 = 15 * 60 * 1_000_000;
/// Clicks are rolled up once their bucket ended this long ago, so that
/// clicks still in the ingest queue land before their bucket is rolled.
pub(crate) const SETTLE: i64 = 60 * 1_000_000;
/// Largest range recomputed in one transaction (the writer is free between).
pub(crate) const CHUNK: i64 = 6 * 3600 * 1_000_000;

/// UTC hour and day, µs.
pub(crate) const HOUR: i64 = 3600 * 1_000_000;
pub(crate) const DAY: i64 = 24 * HOUR;

/// Rollup levels, finest first: table suffix and bucket width (µs, UTC).
/// Each coarser row is the sum of the finer rows under it (SQLite V7,
/// PostgreSQL V4).
pub(crate) const LEVELS: [(&str, i64); 3] = [("", BUCKET), ("_h", HOUR), ("_d", DAY)];

/// Tiles `[s, e)` (15-minute aligned) with the fewest rollup rows: whole UTC
/// days where they fit, whole hours next to them, 15-minute buckets at the
/// ragged ends. Returns `(level, from, to)` runs in time order.
pub(crate) fn tile(s: Micros, e: Micros) -> Vec<(usize, Micros, Micros)> {
    let mut out: Vec<(usize, Micros, Micros)> = Vec::new();
    let mut t = s;
    while t < e {
        let level = (0..LEVELS.len())
            .rev()
            .find(|&l| t % LEVELS[l].1 == 0 && t + LEVELS[l].1 <= e)
            .unwrap_or(0);
        let w = LEVELS[level].1;
        // Whole units of this level, up to where a coarser one may start.
        let mut to = e.div_euclid(w) * w;
        if let Some((_, coarser)) = LEVELS.get(level + 1) {
            to = to.min((t.div_euclid(*coarser) + 1) * coarser);
        }
        let to = to.max(t + w).min(e);
        match out.last_mut() {
            Some(last) if last.0 == level && last.2 == t => last.2 = to,
            _ => out.push((level, t, to)),
        }
        t = to;
    }
    out
}

/// The 15-minute bucket holding `ts` (µs).
pub(crate) fn floor(ts: Micros) -> Micros {
    ts.div_euclid(BUCKET) * BUCKET
}

/// The first bucket start at or after `ts` (µs).
pub(crate) fn ceil(ts: Micros) -> Micros {
    floor(ts + BUCKET - 1)
}

/// The first click id at or after `ts` (µs): the ULID of its millisecond
/// with zero randomness. Valid because a click's id millisecond is `ts / 1000`.
pub(crate) fn id_floor(ts: Micros) -> Vec<u8> {
    let ms = u64::try_from(ts.div_euclid(1000)).unwrap_or(0);
    ClickId::from_parts(ms, 0).to_bytes().to_vec()
}

/// A set of dimensions a rollup table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cube {
    Link,
    Src,
    Geo,
}

impl Cube {
    /// The smallest rollup that holds every non-time dimension of a report.
    pub(crate) fn pick(dims: &[Dimension]) -> Option<Cube> {
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

    /// Every cube.
    pub(crate) const ALL: [Cube; 3] = [Cube::Link, Cube::Src, Cube::Geo];
}

/// Splits report buckets at the watermark: the parts before it (for the
/// rollup) and after it (for raw clicks). `None` when a boundary is not on a
/// 15-minute UTC instant (then everything is read raw).
pub(crate) fn split(buckets: &[Bucket], w: Micros) -> Option<(Vec<Bucket>, Vec<Bucket>)> {
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

/// The column of a report dimension over `clicks c` joined with `links l`,
/// `programs p`, `affiliates a` and buckets `b`.
pub(crate) fn dim_column(d: Dimension) -> &'static str {
    match d {
        Dimension::Time(_) => "b.label",
        Dimension::Link => "l.code",
        Dimension::Program => "p.slug",
        Dimension::Affiliate => "a.slug",
        Dimension::Src => "c.src",
        Dimension::Sub(0) => "c.sub1",
        Dimension::Sub(1) => "c.sub2",
        Dimension::Sub(2) => "c.sub3",
        Dimension::Sub(3) => "c.sub4",
        Dimension::Sub(_) => "c.sub5",
        Dimension::Country => "c.country",
        Dimension::Region => "c.region",
        Dimension::City => "c.city",
        Dimension::Device => "c.device",
        Dimension::Browser => "c.browser",
        Dimension::Os => "c.os",
        Dimension::ReferrerHost => "c.referrer_host",
        Dimension::Verdict => "c.verdict",
        Dimension::Rule => "c.verdict_rule",
    }
}

/// The column of a report dimension over `conversions v` (joins as for
/// [`dim_column`]).
pub(crate) fn conversion_dim_column(d: Dimension) -> &'static str {
    match d {
        Dimension::Time(_) => "b.label",
        Dimension::Link => "l.code",
        Dimension::Program => "p.slug",
        Dimension::Affiliate => "a.slug",
        Dimension::Src => "v.src",
        Dimension::Sub(0) => "v.sub1",
        Dimension::Sub(1) => "v.sub2",
        Dimension::Sub(2) => "v.sub3",
        Dimension::Sub(3) => "v.sub4",
        Dimension::Sub(_) => "v.sub5",
        Dimension::Country => "v.country",
        Dimension::Region => "v.region",
        Dimension::City => "v.city",
        Dimension::Device => "v.device",
        Dimension::Browser => "v.browser",
        Dimension::Os => "v.os",
        Dimension::ReferrerHost => "v.referrer_host",
        Dimension::Verdict => "v.verdict",
        Dimension::Rule => "v.verdict_rule",
    }
}

/// Conversion totals of one report group in one currency:
/// `(dimension values, currency, [conversions, revenue, payout])`, minor units.
pub(crate) type MoneyRow = (Vec<Option<String>>, String, [i64; 3]);

/// Report rows from click counts and conversion totals by group, in key order.
pub(crate) fn assemble(
    counts: BTreeMap<Vec<Option<String>>, ClickCounts>,
    money: Vec<MoneyRow>,
) -> Vec<ReportRow> {
    let mut out: BTreeMap<Vec<Option<String>>, ReportRow> = counts
        .into_iter()
        .map(|(keys, counts)| {
            (
                keys.clone(),
                ReportRow {
                    keys,
                    counts,
                    money: Default::default(),
                },
            )
        })
        .collect();
    for (keys, currency, [conversions, revenue, payout]) in money {
        let row = out.entry(keys.clone()).or_insert_with(|| ReportRow {
            keys,
            counts: ClickCounts::default(),
            money: Default::default(),
        });
        row.money.conversions += conversions;
        *row.money.revenue.entry(currency.clone()).or_default() += revenue;
        *row.money.payout.entry(currency).or_default() += payout;
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60 * 1_000_000;

    #[test]
    fn tiles_take_the_coarsest_rows_that_fit() {
        // Three whole UTC days: one run of daily rows.
        assert_eq!(tile(DAY, 4 * DAY), vec![(2, DAY, 4 * DAY)]);
        // An Asia/Kolkata day, 18:30 to 18:30 UTC: two quarter hours,
        // hours to midnight, the next day's hours, two quarter hours.
        let (s, e) = (18 * HOUR + 30 * M, DAY + 18 * HOUR + 30 * M);
        assert_eq!(
            tile(s, e),
            vec![
                (0, s, 19 * HOUR),
                (1, 19 * HOUR, DAY + 18 * HOUR),
                (0, DAY + 18 * HOUR, e),
            ]
        );
        // A Tokyo week (15:00 UTC to 15:00 UTC): hours, days, hours.
        let (s, e) = (15 * HOUR, 7 * DAY + 15 * HOUR);
        assert_eq!(
            tile(s, e),
            vec![(1, s, DAY), (2, DAY, 7 * DAY), (1, 7 * DAY, e)]
        );
        assert_eq!(
            tile(5 * BUCKET, 6 * BUCKET),
            vec![(0, 5 * BUCKET, 6 * BUCKET)]
        );
        assert!(tile(DAY, DAY).is_empty());
    }
}
