//! SQL for reports and rollups: the 15-minute, hourly and daily levels, late
//! clicks added behind the watermark, and reports tiled from them.

use super::{Args, PgStore, ROLLUP_LOCK, ReportStore, bind, refs};
use crate::plan::{self, BUCKET, CHUNK, Cube, LEVELS, SETTLE, id_floor};
use crate::{ReportQuery, ReportRow, StoreError, StoreFuture};
use clickward_core::Micros;
use clickward_core::click::NewClick;
use clickward_core::report::{Bucket, ClickCounts, Dimension};
use std::collections::BTreeMap;
use tokio_postgres::{GenericClient, Row};

pub(super) async fn watermark(c: &impl GenericClient) -> Result<Micros, StoreError> {
    let r = c
        .query_one("SELECT value FROM meta WHERE key = 'rollup_watermark'", &[])
        .await?;
    Ok(r.try_get(0)?)
}

/// Click counts of one rollup group: `[gross, bot, invalid, unique]`.
pub(super) type Counts = [i64; 4];

pub(super) fn add_counts(into: &mut Counts, k: &Counts) {
    for (a, v) in into.iter_mut().zip(k) {
        *a += v;
    }
}

/// Adds clicks whose bucket is already rolled up to its rollup rows.
pub(super) async fn add_late(
    tx: &tokio_postgres::Transaction<'_>,
    late: &[(&NewClick, bool)],
) -> Result<(), StoreError> {
    let mut link: BTreeMap<(i64, i64, i64, i64), Counts> = BTreeMap::new();
    let mut src: BTreeMap<(i64, String), Counts> = BTreeMap::new();
    let mut geo: BTreeMap<(i64, String, String), Counts> = BTreeMap::new();
    for (c, unique) in late {
        let b = plan::floor(c.ts);
        let k: Counts = [
            1,
            i64::from(c.bot.is_some()),
            i64::from(c.is_invalid()),
            i64::from(*unique),
        ];
        let add = |into: &mut Counts| {
            for (a, v) in into.iter_mut().zip(k) {
                *a += v;
            }
        };
        add(link
            .entry((c.link_id, b, c.program_id, c.affiliate_id.unwrap_or(0)))
            .or_default());
        add(src
            .entry((b, c.params.src.clone().unwrap_or_default()))
            .or_default());
        add(geo
            .entry((
                b,
                c.country.clone().unwrap_or_default(),
                c.device.as_str().to_owned(),
            ))
            .or_default());
    }
    const ADD: &str = "gross = t.gross + excluded.gross, bot = t.bot + excluded.bot, \
         invalid = t.invalid + excluded.invalid, uniq = t.uniq + excluded.uniq";
    // Every level gets the clicks: 15-minute rows and the hour and day
    // rows above them.
    for (suffix, width) in LEVELS {
        let at = |b: i64| b - b.rem_euclid(width);
        let mut l2: BTreeMap<(i64, i64, i64, i64), Counts> = BTreeMap::new();
        for ((l, b, p, a), k) in &link {
            add_counts(l2.entry((*l, at(*b), *p, *a)).or_default(), k);
        }
        let mut s2: BTreeMap<(i64, &str), Counts> = BTreeMap::new();
        for ((b, src), k) in &src {
            add_counts(s2.entry((at(*b), src.as_str())).or_default(), k);
        }
        let mut g2: BTreeMap<(i64, &str, &str), Counts> = BTreeMap::new();
        for ((b, country, device), k) in &geo {
            add_counts(
                g2.entry((at(*b), country.as_str(), device.as_str()))
                    .or_default(),
                k,
            );
        }
        for ((l, b, p, a), k) in l2 {
            tx.execute(
                &format!(
                    "INSERT INTO rollup_link{suffix} AS t (link_id, bucket, program_id, affiliate_key, \
                     gross, bot, invalid, uniq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (link_id, bucket, program_id, affiliate_key) DO UPDATE SET {ADD}"
                ),
                &[&l, &b, &p, &a, &k[0], &k[1], &k[2], &k[3]],
            )
            .await?;
        }
        for ((b, src), k) in s2 {
            tx.execute(
                &format!(
                    "INSERT INTO rollup_src{suffix} AS t (bucket, src, gross, bot, invalid, uniq) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (bucket, src) DO UPDATE SET {ADD}"
                ),
                &[&b, &src, &k[0], &k[1], &k[2], &k[3]],
            )
            .await?;
        }
        for ((b, country, device), k) in g2 {
            tx.execute(
                &format!(
                    "INSERT INTO rollup_geo{suffix} AS t (bucket, country, device, gross, bot, invalid, uniq) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (bucket, country, device) DO UPDATE SET {ADD}"
                ),
                &[&b, &country, &device, &k[0], &k[1], &k[2], &k[3]],
            )
            .await?;
        }
    }
    Ok(())
}

/// Replaces the click rollup rows of `[s, e)` (bucket aligned) from the raw
/// clicks, inside the caller's transaction (which holds [`ROLLUP_LOCK`]).
pub(super) async fn replace_rollups(
    tx: &tokio_postgres::Transaction<'_>,
    s: Micros,
    e: Micros,
) -> Result<(), StoreError> {
    for t in ["rollup_link", "rollup_src", "rollup_geo"] {
        tx.execute(
            &format!("DELETE FROM {t} WHERE bucket >= $1 AND bucket < $2"),
            &[&s, &e],
        )
        .await?;
    }
    let range = "FROM clicks WHERE click_id >= $1 AND click_id < $2 AND ts >= $3 AND ts < $4";
    let metrics = "COUNT(*), COUNT(bot_reason), COUNT(invalid_reason), \
         COALESCE(SUM(is_unique::int), 0)::int8";
    let bucket = format!("(ts / {BUCKET}) * {BUCKET}");
    let (sid, eid) = (id_floor(s), id_floor(e));
    for sql in [
        format!(
            "INSERT INTO rollup_link (link_id, bucket, program_id, affiliate_key, gross, bot, invalid, uniq) \
             SELECT link_id, {bucket}, program_id, COALESCE(affiliate_id, 0), {metrics} {range} \
             GROUP BY 1, 2, 3, 4"
        ),
        format!(
            "INSERT INTO rollup_src (bucket, src, gross, bot, invalid, uniq) \
             SELECT {bucket}, COALESCE(src, ''), {metrics} {range} GROUP BY 1, 2"
        ),
        format!(
            "INSERT INTO rollup_geo (bucket, country, device, gross, bot, invalid, uniq) \
             SELECT {bucket}, COALESCE(country, ''), device, {metrics} {range} GROUP BY 1, 2, 3"
        ),
    ] {
        tx.execute(&sql, &[&sid, &eid, &s, &e]).await?;
    }
    // The hour and day rows over the range, summed again from the level
    // below (whole hours and days: the range is widened to them).
    for pair in LEVELS.windows(2) {
        let ((fine, _), (coarse, w)) = (pair[0], pair[1]);
        let (cs, ce) = (s - s.rem_euclid(w), e + (w - e.rem_euclid(w)) % w);
        let b = format!("bucket - bucket % {w}");
        for (t, keys, group) in [
            (
                "rollup_link",
                "link_id, bucket, program_id, affiliate_key",
                "link_id, 2, program_id, affiliate_key",
            ),
            ("rollup_src", "bucket, src", "1, src"),
            (
                "rollup_geo",
                "bucket, country, device",
                "1, country, device",
            ),
        ] {
            tx.execute(
                &format!("DELETE FROM {t}{coarse} WHERE bucket >= $1 AND bucket < $2"),
                &[&cs, &ce],
            )
            .await?;
            let select = keys.replace("bucket", &b);
            tx.execute(
                &format!(
                    "INSERT INTO {t}{coarse} ({keys}, gross, bot, invalid, uniq) \
                     SELECT {select}, SUM(gross)::int8, SUM(bot)::int8, SUM(invalid)::int8, SUM(uniq)::int8 \
                     FROM {t}{fine} WHERE bucket >= $1 AND bucket < $2 GROUP BY {group}"
                ),
                &[&cs, &ce],
            )
            .await?;
        }
    }
    Ok(())
}

/// `unnest(…) AS b(label, sid, eid, s, e)` over report buckets, its
/// parameters appended to `args`.
pub(super) fn bucket_table(buckets: &[Bucket], args: &mut Args) -> String {
    let labels: Vec<String> = buckets.iter().map(|b| b.label.clone()).collect();
    let sids: Vec<Vec<u8>> = buckets.iter().map(|b| id_floor(b.start)).collect();
    let eids: Vec<Vec<u8>> = buckets.iter().map(|b| id_floor(b.end)).collect();
    let s: Vec<i64> = buckets.iter().map(|b| b.start).collect();
    let e: Vec<i64> = buckets.iter().map(|b| b.end).collect();
    format!(
        "unnest({}::text[], {}::bytea[], {}::bytea[], {}::int8[], {}::int8[]) AS b(label, sid, eid, s, e)",
        bind(args, labels),
        bind(args, sids),
        bind(args, eids),
        bind(args, s),
        bind(args, e)
    )
}

/// `WHERE a = $n AND …` for equality filters (time filters are the range).
pub(super) fn filter_sql(
    filters: &[(Dimension, String)],
    column: impl Fn(Dimension) -> &'static str,
    args: &mut Args,
) -> String {
    let mut parts = Vec::new();
    for (d, v) in filters {
        if matches!(d, Dimension::Time(_)) {
            continue;
        }
        let p = bind(args, v.clone());
        parts.push(format!("{} = {p}", column(*d)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", parts.join(" AND "))
    }
}

pub(super) fn select_and_group(cols: &[&str], extra: usize) -> (String, String) {
    let select = if cols.is_empty() {
        String::new()
    } else {
        format!("{}, ", cols.join(", "))
    };
    let n: Vec<String> = (1..=cols.len() + extra).map(|i| i.to_string()).collect();
    let group = if n.is_empty() {
        String::new()
    } else {
        format!("GROUP BY {}", n.join(", "))
    };
    (select, group)
}

pub(super) fn counts_of(
    rows: Vec<Row>,
    n: usize,
) -> Result<BTreeMap<Vec<Option<String>>, ClickCounts>, StoreError> {
    let mut out = BTreeMap::new();
    for r in rows {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(r.try_get::<_, Option<String>>(i)?);
        }
        let counts = ClickCounts {
            gross_clicks: r.try_get(n)?,
            bot_clicks: r.try_get(n + 1)?,
            invalid_clicks: r.try_get(n + 2)?,
            unique_clicks: r.try_get(n + 3)?,
        };
        if counts.gross_clicks > 0 {
            out.insert(keys, counts);
        }
    }
    Ok(out)
}

pub(super) async fn raw_counts(
    c: &impl GenericClient,
    buckets: &[Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
) -> Result<BTreeMap<Vec<Option<String>>, ClickCounts>, StoreError> {
    if buckets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = Args::new();
    let b = bucket_table(buckets, &mut args);
    let cols: Vec<&str> = dims.iter().map(|d| plan::dim_column(*d)).collect();
    let (select, group) = select_and_group(&cols, 0);
    let where_ = filter_sql(filters, plan::dim_column, &mut args);
    let sql = format!(
        "SELECT {select} COUNT(*), COUNT(c.bot_reason), COUNT(c.invalid_reason), \
         COALESCE(SUM(c.is_unique::int), 0)::int8 \
         FROM {b} JOIN clicks c ON c.click_id >= b.sid AND c.click_id < b.eid \
         AND c.ts >= b.s AND c.ts < b.e \
         JOIN links l ON l.id = c.link_id JOIN programs p ON p.id = c.program_id \
         LEFT JOIN affiliates a ON a.id = c.affiliate_id {where_} {group}"
    );
    counts_of(c.query(&sql, &refs(&args)).await?, dims.len())
}

/// A rollup's column for a report dimension.
pub(super) fn rollup_column(d: Dimension) -> &'static str {
    match d {
        Dimension::Time(_) => "b.label",
        Dimension::Link => "l.code",
        Dimension::Program => "p.slug",
        Dimension::Affiliate => "a.slug",
        Dimension::Src => "NULLIF(r.src, '')",
        Dimension::Country => "NULLIF(r.country, '')",
        Dimension::Device => "NULLIF(r.device, '')",
        // `Cube::pick` never picks a rollup for other dimensions.
        _ => "NULL::text",
    }
}

/// Click counts from the rollup level `suffix` of `cube`: `buckets` are that
/// level's row buckets (start = the rows' `bucket`), labelled with the report
/// bucket they belong to.
pub(super) async fn rollup_counts(
    c: &impl GenericClient,
    cube: Cube,
    suffix: &str,
    buckets: &[Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
) -> Result<BTreeMap<Vec<Option<String>>, ClickCounts>, StoreError> {
    if buckets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = Args::new();
    let b = bucket_table(buckets, &mut args);
    let cols: Vec<&str> = dims.iter().map(|d| rollup_column(*d)).collect();
    let (select, group) = select_and_group(&cols, 0);
    let where_ = filter_sql(filters, rollup_column, &mut args);
    let (table, joins) = match cube {
        Cube::Link => (
            "rollup_link",
            "JOIN links l ON l.id = r.link_id JOIN programs p ON p.id = r.program_id \
             LEFT JOIN affiliates a ON a.id = r.affiliate_key",
        ),
        Cube::Src => ("rollup_src", ""),
        Cube::Geo => ("rollup_geo", ""),
    };
    let sql = format!(
        "SELECT {select} COALESCE(SUM(r.gross), 0)::int8, COALESCE(SUM(r.bot), 0)::int8, \
         COALESCE(SUM(r.invalid), 0)::int8, COALESCE(SUM(r.uniq), 0)::int8 \
         FROM {b} JOIN {table}{suffix} r ON r.bucket = b.s {joins} {where_} {group}"
    );
    counts_of(c.query(&sql, &refs(&args)).await?, dims.len())
}

/// Conversion totals grouped from the conversion rows.
pub(super) async fn raw_money(
    c: &impl GenericClient,
    q: &ReportQuery,
    buckets: &[Bucket],
) -> Result<Vec<plan::MoneyRow>, StoreError> {
    if buckets.is_empty() {
        return Ok(Vec::new());
    }
    let n = q.dims.len();
    let mut args = Args::new();
    let b = bucket_table(buckets, &mut args);
    let cols: Vec<&str> = q
        .dims
        .iter()
        .map(|d| plan::conversion_dim_column(*d))
        .collect();
    let (select, group) = select_and_group(&cols, 1);
    let where_ = filter_sql(&q.filters, plan::conversion_dim_column, &mut args);
    let t = if q.by_click_time {
        "(v.occurred_at - COALESCE(v.ctit_us, 0))"
    } else {
        "v.occurred_at"
    };
    let uses = |d: Dimension| q.dims.contains(&d) || q.filters.iter().any(|(f, _)| *f == d);
    let mut joins = String::new();
    if uses(Dimension::Program) {
        joins.push_str(" JOIN programs p ON p.id = v.program_id");
    }
    if uses(Dimension::Link) {
        joins.push_str(" LEFT JOIN links l ON l.id = v.link_id");
    }
    if uses(Dimension::Affiliate) {
        joins.push_str(" LEFT JOIN affiliates a ON a.id = v.affiliate_id");
    }
    let sql = format!(
        "SELECT {select} v.currency, COUNT(*), COALESCE(SUM(v.amount), 0)::int8, \
         COALESCE(SUM(v.commission), 0)::int8 \
         FROM {b} JOIN conversions v ON {t} >= b.s AND {t} < b.e \
         AND v.status IN ('pending', 'approved', 'paid') {joins} {where_} {group}"
    );
    let mut out = Vec::new();
    for r in c.query(&sql, &refs(&args)).await? {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(r.try_get::<_, Option<String>>(i)?);
        }
        out.push((
            keys,
            r.try_get(n)?,
            [r.try_get(n + 1)?, r.try_get(n + 2)?, r.try_get(n + 3)?],
        ));
    }
    Ok(out)
}

pub(super) async fn report(
    c: &impl GenericClient,
    q: &ReportQuery,
) -> Result<Vec<ReportRow>, StoreError> {
    let buckets = q.buckets.clone().unwrap_or_else(|| {
        vec![Bucket {
            label: String::new(),
            start: q.start,
            end: q.end,
        }]
    });
    let w = watermark(c).await?;
    let needed: Vec<Dimension> = q
        .dims
        .iter()
        .copied()
        .chain(q.filters.iter().map(|(d, _)| *d))
        .collect();
    let planned = match (q.raw_only, Cube::pick(&needed)) {
        (false, Some(cube)) => plan::split(&buckets, w).map(|parts| (cube, parts)),
        _ => None,
    };
    let counts = match planned {
        Some((cube, (rolled, raw))) => {
            // Each rolled bucket tiled with the coarsest rows that fit, and
            // each tile cut into its rows' buckets (with the report bucket's
            // label): rows then join their bucket by equality, a hash join,
            // instead of one index range scan per tile.
            let mut tiles: [Vec<Bucket>; 3] = Default::default();
            for b in &rolled {
                for (level, from, to) in plan::tile(b.start, b.end) {
                    let width = LEVELS[level].1;
                    let mut t = from;
                    while t < to {
                        tiles[level].push(Bucket {
                            label: b.label.clone(),
                            start: t,
                            end: t + width,
                        });
                        t += width;
                    }
                }
            }
            let mut counts = BTreeMap::new();
            for (level, (suffix, _)) in LEVELS.iter().enumerate() {
                let part =
                    rollup_counts(c, cube, suffix, &tiles[level], &q.dims, &q.filters).await?;
                for (k, v) in part {
                    counts.entry(k).or_insert_with(ClickCounts::default).add(&v);
                }
            }
            for (k, v) in raw_counts(c, &raw, &q.dims, &q.filters).await? {
                counts.entry(k).or_default().add(&v);
            }
            counts
        }
        None => raw_counts(c, &buckets, &q.dims, &q.filters).await?,
    };
    let money = raw_money(c, q, &buckets).await?;
    Ok(plan::assemble(counts, money))
}

impl ReportStore for PgStore {
    fn click_report(&self, q: ReportQuery) -> StoreFuture<'_, Vec<ReportRow>> {
        Box::pin(async move {
            let mut c = self.client().await?;
            // One snapshot: the watermark, the rollups and the raw clicks
            // after it must agree.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let rows = report(&*tx, &q).await?;
            tx.commit().await?;
            Ok(rows)
        })
    }

    fn rollup(&self, start: Micros, end: Micros) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut from = plan::floor(start);
            let end = plan::ceil(end);
            while from < end {
                let to = (from + CHUNK).min(end);
                let r: Result<(), StoreError> = in_tx!(self, |tx| {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
                        .await?;
                    replace_rollups(tx, from, to).await?
                });
                r?;
                from = to;
            }
            Ok(())
        })
    }

    fn advance_rollups(&self, now: Micros) -> StoreFuture<'_, Micros> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                // One node at a time; click batches wait meanwhile, so none
                // lands in a bucket between the aggregate and the watermark.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
                    .await?;
                let stored = watermark(tx).await?;
                let mut w = stored;
                let target = plan::floor(now - SETTLE);
                if w == 0 {
                    // The oldest click by id is the oldest by time (its id
                    // millisecond is its time's).
                    let first = tx
                        .query_opt("SELECT ts FROM clicks ORDER BY click_id LIMIT 1", &[])
                        .await?;
                    if let Some(r) = first {
                        w = plan::floor(r.try_get(0)?);
                    }
                }
                if w != 0 && target > w {
                    let to = target.min(w + CHUNK);
                    replace_rollups(tx, w, to).await?;
                    tx.execute(
                        "UPDATE meta SET value = $1 WHERE key = 'rollup_watermark'",
                        &[&to],
                    )
                    .await?;
                    to
                } else {
                    stored
                }
            })
        })
    }
}
