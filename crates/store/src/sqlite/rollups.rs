//! Reports and rollups: recompute a range (idempotent), advance the watermark,
//! and answer reports from the smallest rollup that covers them (raw clicks
//! after the watermark).

use std::collections::{BTreeMap, HashMap};

use clickward_core::Micros;
use clickward_core::report::{Bucket, ClickCounts, Dimension};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use super::{ReportQuery, ReportRow, ReportStore, SqliteStore, StoreFuture};
use crate::StoreError;
pub(super) use crate::plan::split;
use crate::plan::{BUCKET, CHUNK, Cube, LEVELS, SETTLE, ceil, floor, id_floor, tile};

type Counts = [i64; 4];

/// Small integer ids for text values, so grouping a row costs no allocation
/// (a value is copied once, the first time it is seen). NULL is "".
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn id(&mut self, v: rusqlite::types::ValueRef<'_>) -> Result<u32, StoreError> {
        let text = match v {
            rusqlite::types::ValueRef::Null => "",
            other => other
                .as_str()
                .map_err(|e| StoreError::Corrupt(format!("rollup text column: {e}")))?,
        };
        if let Some(id) = self.ids.get(text) {
            return Ok(*id);
        }
        let id = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.insert(text.to_owned(), id);
        Ok(id)
    }

    /// The values, indexed by id.
    fn into_texts(self) -> Vec<String> {
        let mut texts = vec![String::new(); self.ids.len()];
        for (text, id) in self.ids {
            if let Some(slot) = texts.get_mut(id as usize) {
                *slot = text;
            }
        }
        texts
    }
}

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
    // One pass over the range's clicks feeds all three rollups, grouped in
    // hash maps: three GROUP BYs each scanned the rows and sorted them
    // (measured in docs/benchmarks.md). Text values are interned so a row
    // costs no allocation.
    let mut st = c.prepare(
        "SELECT link_id, ts, program_id, IFNULL(affiliate_id, 0), src, country, device, \
         bot_reason IS NOT NULL, invalid_reason IS NOT NULL, is_unique \
         FROM clicks WHERE click_id >= ?1 AND click_id < ?2 AND ts >= ?3 AND ts < ?4",
    )?;
    let mut rows = st.query(params![id_floor(s), id_floor(e), s, e])?;
    let mut names = Interner::default();
    let mut link: HashMap<(i64, i64, i64, i64), Counts> = HashMap::new();
    let mut src: HashMap<(i64, u32), Counts> = HashMap::new();
    let mut geo: HashMap<(i64, u32, u32), Counts> = HashMap::new();
    while let Some(r) = rows.next()? {
        let ts: i64 = r.get(1)?;
        let bucket = floor(ts);
        let k: Counts = [
            1,
            r.get::<_, bool>(7)?.into(),
            r.get::<_, bool>(8)?.into(),
            r.get(9)?,
        ];
        let add = |into: &mut Counts| {
            for (a, b) in into.iter_mut().zip(k) {
                *a += b;
            }
        };
        add(link
            .entry((r.get(0)?, bucket, r.get(2)?, r.get(3)?))
            .or_default());
        add(src.entry((bucket, names.id(r.get_ref(4)?)?)).or_default());
        let (country, device) = (names.id(r.get_ref(5)?)?, names.id(r.get_ref(6)?)?);
        add(geo.entry((bucket, country, device)).or_default());
    }
    let by_id = names.into_texts();
    let name = |id: u32| by_id.get(id as usize).cloned().unwrap_or_default();
    agg.link = link
        .into_iter()
        .map(|((l, b, p, a), k)| (l, b, p, a, k))
        .collect();
    agg.src = src.into_iter().map(|((b, v), k)| (b, name(v), k)).collect();
    agg.geo = geo
        .into_iter()
        .map(|((b, country, device), k)| (b, name(country), name(device), k))
        .collect();
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
    cascade(c, false, a.s, a.e)
}

/// Recomputes the hourly and daily rows over `[start, end)` (widened to
/// whole hours and days) from the finer level, after its 15-minute rows
/// changed. Inside the caller's transaction; reads a day of hourly rows at
/// most per table, whatever the range's clicks.
fn cascade(c: &Connection, conv: bool, start: Micros, end: Micros) -> Result<(), StoreError> {
    for cube in Cube::ALL {
        let table = cube.table(conv);
        let (keys, metrics) = cube.columns(conv);
        let sums: Vec<String> = metrics.split(", ").map(|m| format!("SUM({m})")).collect();
        let sums = sums.join(", ");
        for pair in LEVELS.windows(2) {
            let [(finer, _), (suffix, w)] = pair else {
                continue;
            };
            let (s, e) = (start.div_euclid(*w) * w, (end + w - 1).div_euclid(*w) * w);
            c.prepare_cached(&format!(
                "DELETE FROM {table}{suffix} WHERE bucket >= ?1 AND bucket < ?2"
            ))?
            .execute(params![s, e])?;
            c.prepare_cached(&format!(
                "INSERT INTO {table}{suffix} (bucket, {keys}, {metrics}) \
                 SELECT (bucket / {w}) * {w}, {keys}, {sums} FROM {table}{finer} \
                 WHERE bucket >= ?1 AND bucket < ?2 GROUP BY 1, {keys}"
            ))?
            .execute(params![s, e])?;
        }
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

impl Cube {
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

    /// The rollup table's key columns (besides `bucket`) and its metric
    /// columns.
    fn columns(self, conv: bool) -> (&'static str, &'static str) {
        const CLICKS: &str = "gross, bot, invalid, uniq";
        const MONEY: &str = "conversions, revenue, payout";
        match (self, conv) {
            (Cube::Link, false) => ("link_id, program_id, affiliate_key", CLICKS),
            (Cube::Src, false) => ("src", CLICKS),
            (Cube::Geo, false) => ("country, device", CLICKS),
            (Cube::Link, true) => (
                "basis, link_key, program_id, affiliate_key, currency",
                MONEY,
            ),
            (Cube::Src, true) => ("basis, src, currency", MONEY),
            (Cube::Geo, true) => ("basis, country, device, currency", MONEY),
        }
    }
}

/// A rollup row's group before names are looked up: report bucket index,
/// id columns (link, program, affiliate; 0 = none) and interned text columns
/// (src, or country and device; then currency).
type GroupKey = (usize, [i64; 3], [u32; 3]);

/// Rollup rows summed per report bucket and cube group, with the interned
/// text values by id.
struct Scan {
    groups: HashMap<GroupKey, [i64; 4]>,
    texts: Vec<String>,
}

/// Reads the rollup rows under `buckets`, each bucket tiled by the coarsest
/// levels that fit it, in a range scan per run of tiles, and sums them in
/// hash maps. (A SQL `GROUP BY` over a join with the buckets sorted every
/// row in a temporary b-tree.)
/// `basis` picks the conversion rollups' time basis (0 occurred, 1 click);
/// `None` reads the click rollups.
fn scan(
    c: &Connection,
    cube: Cube,
    basis: Option<i64>,
    buckets: &[Bucket],
    filters: &[(Dimension, String)],
) -> Result<Scan, StoreError> {
    let mut out = Scan {
        groups: HashMap::new(),
        texts: Vec::new(),
    };
    let conv = basis.is_some();
    // Text dimensions go to slots 0 and 1 of the group key, a conversion
    // rollup's currency to slot 2.
    let (ints, texts) = match (cube, conv) {
        (Cube::Link, false) => ("link_id, program_id, affiliate_key", ", '', ''"),
        (Cube::Link, true) => ("link_key, program_id, affiliate_key", ", '', ''"),
        (Cube::Src, _) => ("0, 0, 0", ", src, ''"),
        (Cube::Geo, _) => ("0, 0, 0", ", country, device"),
    };
    let texts = format!("{texts}{}", if conv { ", currency" } else { ", ''" });
    let metrics = if conv {
        "conversions, revenue, payout, 0"
    } else {
        "gross, bot, invalid, uniq"
    };
    // Parameters 1 and 2 are each run's range.
    let mut args: Vec<Value> = vec![Value::Integer(0), Value::Integer(0)];
    let mut conds = vec!["bucket >= ? AND bucket < ?".to_owned()];
    if let Some(b) = basis {
        conds.push("basis = ?".to_owned());
        args.push(Value::Integer(b));
    }
    let link_col = if conv { "link_key" } else { "link_id" };
    for (d, v) in filters {
        let cond = match d {
            Dimension::Link => format!("{link_col} = (SELECT id FROM links WHERE code = ?)"),
            Dimension::Program => "program_id = (SELECT id FROM programs WHERE slug = ?)".into(),
            Dimension::Affiliate => {
                "affiliate_key = (SELECT id FROM affiliates WHERE slug = ?)".into()
            }
            Dimension::Src => "src = ?".into(),
            Dimension::Country => "country = ?".into(),
            Dimension::Device => "device = ?".into(),
            // Time is the range; `pick` chose a cube holding every other filter.
            _ => continue,
        };
        conds.push(cond);
        args.push(Value::Text(v.clone()));
    }
    // Each report bucket's tiles, per level: `(from, to, report bucket)`,
    // in time order; adjacent tiles of a level are read by one range scan.
    let mut tiles: [Vec<(Micros, Micros, usize)>; 3] = Default::default();
    for (i, b) in buckets.iter().enumerate() {
        for (level, from, to) in tile(b.start, b.end) {
            tiles[level].push((from, to, i));
        }
    }
    let mut ids = Interner::default();
    for (level, (suffix, _)) in LEVELS.iter().enumerate() {
        let level_tiles = &tiles[level];
        let Some(first) = level_tiles.first() else {
            continue;
        };
        let mut runs = vec![(first.0, first.1)];
        for (from, to, _) in &level_tiles[1..] {
            match runs.last_mut() {
                Some(run) if run.1 == *from => run.1 = *to,
                _ => runs.push((*from, *to)),
            }
        }
        let sql = format!(
            "SELECT bucket, {ints}, {metrics}{texts} FROM {}{suffix} WHERE {}",
            cube.table(conv),
            conds.join(" AND ")
        );
        let mut st = c.prepare(&sql)?;
        for (from, to) in runs {
            args[0] = Value::Integer(from);
            args[1] = Value::Integer(to);
            let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
            while let Some(r) = rows.next()? {
                let at: Micros = r.get(0)?;
                let k = level_tiles.partition_point(|t| t.0 <= at);
                let Some(&(_, end, b)) = k.checked_sub(1).and_then(|k| level_tiles.get(k)) else {
                    continue;
                };
                if at >= end {
                    continue;
                }
                let mut t = [0u32; 3];
                for (slot, col) in t.iter_mut().zip(8..) {
                    *slot = ids.id(r.get_ref(col)?)?;
                }
                let sums = out
                    .groups
                    .entry((b, [r.get(1)?, r.get(2)?, r.get(3)?], t))
                    .or_default();
                for (i, m) in sums.iter_mut().enumerate() {
                    *m += r.get::<_, i64>(4 + i)?;
                }
            }
        }
    }
    out.texts = ids.into_texts();
    Ok(out)
}

/// A scanned group with its report keys and currency (empty for clicks),
/// and its four sums.
type Keyed = (Vec<Option<String>>, String, [i64; 4]);

/// Report keys of scanned groups: dimension values in query order (names
/// looked up once per distinct id), and the currency for conversion scans.
fn keys_of(
    c: &Connection,
    buckets: &[Bucket],
    dims: &[Dimension],
    scan: Scan,
) -> Result<Vec<Keyed>, StoreError> {
    let mut names: HashMap<(u8, i64), Option<String>> = HashMap::new();
    let mut name = |table: u8, id: i64| -> Result<Option<String>, StoreError> {
        if id == 0 {
            return Ok(None);
        }
        if let Some(n) = names.get(&(table, id)) {
            return Ok(n.clone());
        }
        let sql = match table {
            0 => "SELECT code FROM links WHERE id = ?1",
            1 => "SELECT slug FROM programs WHERE id = ?1",
            _ => "SELECT slug FROM affiliates WHERE id = ?1",
        };
        let n: Option<String> = c
            .prepare_cached(sql)?
            .query_row([id], |r| r.get(0))
            .optional()?;
        names.insert((table, id), n.clone());
        Ok(n)
    };
    let text = |id: u32| {
        scan.texts
            .get(id as usize)
            .filter(|t| !t.is_empty())
            .cloned()
    };
    let mut out = Vec::with_capacity(scan.groups.len());
    for ((b, ints, t), sums) in &scan.groups {
        let mut keys = Vec::with_capacity(dims.len());
        for d in dims {
            keys.push(match d {
                Dimension::Time(_) => buckets.get(*b).map(|b| b.label.clone()),
                Dimension::Link => name(0, ints[0])?,
                Dimension::Program => name(1, ints[1])?,
                Dimension::Affiliate => name(2, ints[2])?,
                Dimension::Src | Dimension::Country => text(t[0]),
                Dimension::Device => text(t[1]),
                // `pick` never chooses a cube without the dimension.
                _ => None,
            });
        }
        out.push((keys, text(t[2]).unwrap_or_default(), *sums));
    }
    Ok(out)
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
    let scanned = scan(c, cube, None, buckets, filters)?;
    let mut out: BTreeMap<Vec<Option<String>>, ClickCounts> = BTreeMap::new();
    for (keys, _, [gross, bot, invalid, uniq]) in keys_of(c, buckets, dims, scanned)? {
        out.entry(keys).or_default().add(&ClickCounts {
            gross_clicks: gross,
            bot_clicks: bot,
            invalid_clicks: invalid,
            unique_clicks: uniq,
        });
    }
    out.retain(|_, k| k.gross_clicks > 0);
    Ok(out)
}

/// Conversion totals from a conversion rollup (exact for every bucket, no
/// watermark), in minor units. `by_click_time` reads the click-time basis.
pub(super) fn money(
    c: &Connection,
    cube: Cube,
    buckets: &[Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
    by_click_time: bool,
) -> Result<Vec<MoneyRow>, StoreError> {
    let scanned = scan(c, cube, Some(i64::from(by_click_time)), buckets, filters)?;
    let mut sums: BTreeMap<(Vec<Option<String>>, String), [i64; 3]> = BTreeMap::new();
    for (keys, currency, [n, revenue, payout, _]) in keys_of(c, buckets, dims, scanned)? {
        let s = sums.entry((keys, currency)).or_default();
        s[0] += n;
        s[1] += revenue;
        s[2] += payout;
    }
    // Groups whose conversions were all rejected or reversed.
    Ok(sums
        .into_iter()
        .filter(|(_, s)| s[0] > 0)
        .map(|((keys, currency), s)| (keys, currency, s))
        .collect())
}

pub(super) use crate::plan::MoneyRow;

/// Statuses whose conversions reports count.
pub(super) const COUNTED: &str = "('pending', 'approved', 'paid')";

/// The time expression over `conversions` of each basis (0: occurred,
/// 1: click time), and the index on it. Range scans name the index: left to
/// itself the planner took `conversions_status` for the status list and
/// read every conversion for each 6-hour chunk.
pub(super) const BASES: [(i64, &str, &str); 2] = [
    (0, "occurred_at", "conversions_occurred"),
    (
        1,
        "(occurred_at - IFNULL(ctit_us, 0))",
        "conversions_click_time",
    ),
];

/// Adds (`sign` 1) or takes away (`sign` -1) one conversion, by row id, in
/// every conversion rollup. Inside the transaction that records it or
/// changes its status, so the rollups never disagree with the rows.
pub(super) fn apply_conversion(c: &Connection, rowid: i64, sign: i64) -> Result<(), StoreError> {
    for cube in Cube::ALL {
        let table = cube.table(true);
        let (cols, exprs) = cube.conv_keys();
        for (basis, t, _) in BASES {
            for (suffix, w) in LEVELS {
                c.prepare_cached(&format!(
                    "INSERT INTO {table}{suffix} (basis, bucket, {cols}, currency, conversions, revenue, payout) \
                     SELECT {basis}, ({t} / {w}) * {w}, {exprs}, currency, ?2, ?2 * IFNULL(amount, 0), \
                     ?2 * commission FROM conversions WHERE id = ?1 \
                     ON CONFLICT (basis, bucket, {cols}, currency) DO UPDATE SET \
                     conversions = conversions + excluded.conversions, revenue = revenue + excluded.revenue, \
                     payout = payout + excluded.payout"
                ))?
                .execute(params![rowid, sign])?;
                if sign < 0 {
                    c.prepare_cached(&format!(
                        "DELETE FROM {table}{suffix} WHERE basis = {basis} AND conversions = 0 AND bucket = \
                         (SELECT ({t} / {w}) * {w} FROM conversions WHERE id = ?1)"
                    ))?
                    .execute([rowid])?;
                }
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
        for (basis, t, index) in BASES {
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
                     SUM(IFNULL(amount, 0)), SUM(commission) FROM conversions INDEXED BY {index} \
                     WHERE {t} >= ?1 AND {t} < ?2 AND status IN {COUNTED} GROUP BY {}",
                    group.join(", ")
                ),
                params![s, e],
            )?;
        }
    }
    cascade(c, true, s, e)
}

pub(super) fn raw_counts(
    conn: &Connection,
    buckets: &[clickward_core::report::Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
) -> Result<std::collections::BTreeMap<Vec<Option<String>>, ClickCounts>, StoreError> {
    let mut out = std::collections::BTreeMap::new();
    if buckets.is_empty() {
        return Ok(out);
    }
    let (values, mut args) = bucket_values(buckets);
    let cols: Vec<&str> = dims.iter().map(|d| crate::plan::dim_column(*d)).collect();
    let select_keys = if cols.is_empty() {
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
    let where_ = filter_sql(filters, crate::plan::dim_column, &mut args);
    // The click_id range narrows each bucket through the primary key; the
    // ts condition keeps the answer exact whatever the ids say.
    let sql = format!(
        "WITH {values} \
         SELECT {select_keys} COUNT(*), COUNT(c.bot_reason), COUNT(c.invalid_reason), \
         COALESCE(SUM(c.is_unique), 0) \
         FROM b JOIN clicks c ON c.click_id >= b.sid AND c.click_id < b.eid \
         AND c.ts >= b.s AND c.ts < b.e \
         JOIN links l ON l.id = c.link_id JOIN programs p ON p.id = c.program_id \
         LEFT JOIN affiliates a ON a.id = c.affiliate_id {where_} {group}"
    );
    let mut st = conn.prepare(&sql)?;
    let n = cols.len();
    let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(r.get::<_, Option<String>>(i)?);
        }
        let counts = ClickCounts {
            gross_clicks: r.get(n)?,
            bot_clicks: r.get(n + 1)?,
            invalid_clicks: r.get(n + 2)?,
            unique_clicks: r.get(n + 3)?,
        };
        if counts.gross_clicks > 0 {
            out.insert(keys, counts);
        }
    }
    Ok(out)
}

/// The `VALUES` rows `(label, first id, end id, start µs, end µs)` of report
/// buckets, and their parameters.
pub(crate) fn bucket_values(buckets: &[clickward_core::report::Bucket]) -> (String, Vec<Value>) {
    // Up to this many buckets are bound one variable per value; more (an
    // hourly report over a year is 8,760) would pass SQLite's limit of
    // 32,766 variables, so they go as one JSON text instead.
    const AS_VARIABLES_UP_TO: usize = 2_000;
    if buckets.len() > AS_VARIABLES_UP_TO {
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let rows: Vec<serde_json::Value> = buckets
            .iter()
            .map(|b| {
                serde_json::json!([
                    b.label,
                    hex(id_floor(b.start)),
                    hex(id_floor(b.end)),
                    b.start,
                    b.end
                ])
            })
            .collect();
        let cte = "b(label, sid, eid, s, e) AS (SELECT j.value ->> 0, unhex(j.value ->> 1), \
                   unhex(j.value ->> 2), j.value ->> 3, j.value ->> 4 FROM json_each(?) j)"
            .to_owned();
        return (
            cte,
            vec![Value::Text(serde_json::Value::Array(rows).to_string())],
        );
    }
    let mut args = Vec::with_capacity(buckets.len() * 5);
    let mut values = String::with_capacity(buckets.len() * 12 + 40);
    values.push_str("b(label, sid, eid, s, e) AS (VALUES ");
    for (i, b) in buckets.iter().enumerate() {
        if i > 0 {
            values.push(',');
        }
        values.push_str("(?,?,?,?,?)");
        args.push(Value::Text(b.label.clone()));
        args.push(Value::Blob(id_floor(b.start)));
        args.push(Value::Blob(id_floor(b.end)));
        args.push(Value::Integer(b.start));
        args.push(Value::Integer(b.end));
    }
    values.push(')');
    (values, args)
}

/// `WHERE a = ? AND b = ?` for equality filters (values appended to `args`).
pub(super) fn filter_sql(
    filters: &[(Dimension, String)],
    column: impl Fn(Dimension) -> &'static str,
    args: &mut Vec<Value>,
) -> String {
    let mut parts = Vec::new();
    for (d, v) in filters {
        if matches!(d, Dimension::Time(_)) {
            continue;
        }
        parts.push(format!("{} = ?", column(*d)));
        args.push(Value::Text(v.clone()));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", parts.join(" AND "))
    }
}

pub(super) fn report_conn(
    conn: &Connection,
    q: &ReportQuery,
) -> Result<Vec<ReportRow>, StoreError> {
    let buckets = q.buckets.clone().unwrap_or_else(|| {
        vec![clickward_core::report::Bucket {
            label: String::new(),
            start: q.start,
            end: q.end,
        }]
    });
    // Clicks before the rollup watermark come from the smallest rollup that
    // holds the report's dimensions; after it, and for reports no rollup
    // holds, from raw clicks. The sum is exact either way.
    let w = watermark(conn)?;
    let needed: Vec<Dimension> = q
        .dims
        .iter()
        .copied()
        .chain(q.filters.iter().map(|(d, _)| *d))
        .collect();
    let planned = match (q.raw_only, crate::plan::Cube::pick(&needed)) {
        (false, Some(cube)) => split(&buckets, w).map(|parts| (cube, parts)),
        _ => None,
    };
    let click_counts = match &planned {
        Some((cube, (rolled, raw))) => {
            let mut counts = counts(conn, *cube, rolled, &q.dims, &q.filters)?;
            for (k, c) in raw_counts(conn, raw, &q.dims, &q.filters)? {
                counts.entry(k).or_default().add(&c);
            }
            counts
        }
        None => raw_counts(conn, &buckets, &q.dims, &q.filters)?,
    };
    // Conversion rollups are exact for every bucket (no watermark), so they
    // serve whenever the dimensions fit one and the buckets are whole
    // 15-minute UTC spans.
    let money = match &planned {
        Some((cube, _)) => money(conn, *cube, &buckets, &q.dims, &q.filters, q.by_click_time)?,
        None => raw_money(conn, q, &buckets)?,
    };
    Ok(crate::plan::assemble(click_counts, money))
}

/// Conversion totals grouped straight from the conversion rows:
/// `(keys, currency, [conversions, revenue, payout])`, minor units.
pub(super) fn raw_money(
    conn: &Connection,
    q: &ReportQuery,
    buckets: &[clickward_core::report::Bucket],
) -> Result<Vec<crate::plan::MoneyRow>, StoreError> {
    let n = q.dims.len();
    let (values, mut args) = bucket_values(buckets);
    let conv_cols: Vec<&str> = q
        .dims
        .iter()
        .map(|d| crate::plan::conversion_dim_column(*d))
        .collect();
    let select_keys = if conv_cols.is_empty() {
        String::new()
    } else {
        format!("{}, ", conv_cols.join(", "))
    };
    let group: Vec<String> = (1..=conv_cols.len() + 1).map(|i| i.to_string()).collect();
    let where_ = filter_sql(&q.filters, crate::plan::conversion_dim_column, &mut args);
    // The click's time is the conversion's time minus its CTIT: the
    // expression of the `conversions_click_time` index, unqualified (no
    // other joined table has these columns) so the index matches it.
    let (_, vt, index) = BASES[usize::from(q.by_click_time)];
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
        "WITH {values} \
         SELECT {select_keys} v.currency, COUNT(*), COALESCE(SUM(v.amount), 0), SUM(v.commission) \
         FROM b JOIN conversions v INDEXED BY {index} ON {vt} >= b.s AND {vt} < b.e \
         AND v.status IN {} \
         {joins} {where_} GROUP BY {}",
        COUNTED,
        group.join(", ")
    );
    let mut st = conn.prepare(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(r.get::<_, Option<String>>(i)?);
        }
        out.push((
            keys,
            r.get(n)?,
            [r.get(n + 1)?, r.get(n + 2)?, r.get(n + 3)?],
        ));
    }
    Ok(out)
}

impl ReportStore for SqliteStore {
    fn click_report(&self, q: ReportQuery) -> StoreFuture<'_, Vec<ReportRow>> {
        self.read(move |c| report_conn(c, &q))
    }

    fn rollup(&self, start: Micros, end: Micros) -> StoreFuture<'_, ()> {
        let this = self.clone();
        Box::pin(async move {
            // Chunked; each chunk is aggregated on a reader and swapped in by
            // a short write, so ingest never waits on the scan.
            let mut from = start;
            while from < end {
                let to = (from + crate::plan::CHUNK).min(end);
                let agg = this.read(move |c| aggregate(c, from, to)).await?;
                this.write(move |c| {
                    let tx = super::begin_write(c)?;
                    replace(&tx, &agg)?;
                    recompute_conversions(&tx, from, to)?;
                    tx.commit()?;
                    Ok(())
                })
                .await?;
                from = to;
            }
            Ok(())
        })
    }

    fn advance_rollups(&self, now: Micros) -> StoreFuture<'_, Micros> {
        let this = self.clone();
        Box::pin(async move {
            let Some((from, to)) = this.read(move |c| next_chunk(c, now)).await? else {
                return this.read(watermark).await;
            };
            let agg = this.read(move |c| aggregate(c, from, to)).await?;
            this.write(move |c| {
                let tx = super::begin_write(c)?;
                // Another advancer may have moved on meanwhile: only move a
                // watermark that is still where this chunk starts.
                let w = watermark(&tx)?;
                if w == 0 || w == from {
                    replace(&tx, &agg)?;
                    set_watermark(&tx, to)?;
                }
                let w = watermark(&tx)?;
                tx.commit()?;
                Ok(w)
            })
            .await
        })
    }
}
