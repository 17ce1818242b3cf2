//! The SQLite store: WAL, one writer connection used for batched transactions
//! (group commit), and a small pool of reader connections.
//!
//! Every call runs on tokio's blocking pool. The writer is a `std` mutex, not
//! a tokio one: it is only ever held inside blocking tasks, never across an
//! `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clickward_core::Micros;
use clickward_core::click::{NewClick, VisitorKey};
use clickward_core::dedup;
use clickward_core::id::{ClickId, LinkCode, Slug};
use clickward_core::link::{Affiliate, Program, RedirectStatus, Status};
use clickward_core::report::{ClickCounts, Dimension};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, params};

use clickward_core::commission::CommissionPlan;
use clickward_core::conversion::ConversionStatus;
use clickward_core::id::ConversionId;
use clickward_core::money::Currency;
use clickward_core::program::ProgramSettings;

use crate::{
    AffiliateInput, ApiKey, Balance, CatalogInput, ClickFacts, ClickRow, ClickSink, ClickWritten,
    ConversionFilter, ConversionRow, KeyScope, LinkInput, LinkRecord, NewConversion, Payout,
    PayoutLine, ProgramInput, Recorded, ReportQuery, ReportRow, SaveMode, Store, StoreError,
    StoreFuture, User, UserInput,
};

mod conversions;
mod rollups;

use crate::common::{
    LINK_SELECT, LinkColumns, Named, USER_SELECT, affiliate_of, now_micros, program_of, role_of,
    scope_of, slug_of, status_of,
};

pub(crate) use crate::plan::id_floor;

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

/// SQLite's `synchronous` setting for the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// WAL + `NORMAL`: a committed click survives a crash or `kill -9` of
    /// clickward; the last commits may be lost if the machine loses power.
    #[default]
    Normal,
    /// WAL + `FULL`: also survives power loss; each commit waits for fsync.
    Full,
}

/// How to open a SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous` setting.
    pub synchronous: Synchronous,
    /// Reader connections kept open.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            readers: 4,
        }
    }
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    max_readers: usize,
}

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// What every SQLite file clickward writes needs (the store and the spool):
/// a busy timeout, WAL, and the configured durability of a commit.
pub(crate) fn configure_wal(conn: &Connection, sync: Synchronous) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        },
    )?;
    Ok(())
}

fn configure(conn: &Connection, sync: Synchronous) -> Result<(), StoreError> {
    configure_wal(conn, sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema
    /// up to date.
    ///
    /// # Errors
    /// [`StoreError::Migration`] when the database holds migrations this
    /// binary does not know (it was written by a newer clickward) or a
    /// migration fails; [`StoreError::Sqlite`] when the file cannot be opened.
    pub fn open(path: &Path, opts: &SqliteOptions) -> Result<Self, StoreError> {
        let mut writer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&writer, opts.synchronous)?;
        embedded::migrations::runner()
            .set_abort_missing(true)
            .set_abort_divergent(true)
            .run(&mut writer)
            .map_err(|e| {
                StoreError::Migration(format!(
                    "{e} (a database written by a newer clickward cannot be opened by this one)"
                ))
            })?;
        // Checkpoints copy the WAL back into the database file; run inline
        // (SQLite's default, every 1000 pages) they stall the commit that
        // triggers them for milliseconds, and with sync durability every
        // redirect waiting on that commit. A background thread does them
        // instead, PASSIVE, so they never block the writer.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            max_readers: opts.readers.max(1),
        });
        spawn_checkpointer(Arc::downgrade(&inner), path.to_owned())?;
        Ok(Self { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn read<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = match inner.readers.lock().map_err(poisoned)?.pop() {
                    Some(c) => c,
                    None => {
                        let c = Connection::open_with_flags(
                            &inner.path,
                            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                        )?;
                        c.busy_timeout(std::time::Duration::from_secs(5))?;
                        c
                    }
                };
                let out = f(&conn);
                let mut pool = inner.readers.lock().map_err(poisoned)?;
                if pool.len() < inner.max_readers {
                    pool.push(conn);
                }
                out
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }

    fn write<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = inner.writer.lock().map_err(poisoned)?;
                f(&mut conn)
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}

/// How often the background checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

fn spawn_checkpointer(store: std::sync::Weak<Inner>, path: PathBuf) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(100))?;
    std::thread::Builder::new()
        .name("clickward-checkpoint".to_owned())
        .spawn(move || {
            // Runs while the store is alive; a last checkpoint on the way out.
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                let Some(inner) = store.upgrade() else {
                    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                    return;
                };
                // Pass 1, beside the writer: copies the bulk of the WAL.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!("WAL checkpoint failed (retried): {e}");
                    continue;
                }
                // Pass 2, holding the writer: copies the few frames committed
                // meanwhile, so the WAL is fully backfilled and the next
                // commit rewinds it instead of growing the file forever.
                let second = inner
                    .writer
                    .lock()
                    .map(|w| w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())));
                if let Ok(Err(e)) = second {
                    tracing::warn!("WAL checkpoint failed (retried): {e}");
                }
            }
        })
        .map_err(|e| StoreError::Task(format!("starting the checkpoint thread: {e}")))?;
    Ok(())
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Task("a store connection lock was poisoned by an earlier panic".to_owned())
}

fn link_from(row: &Row<'_>) -> Result<LinkRecord, StoreError> {
    LinkColumns {
        id: row.get(0)?,
        code: row.get(1)?,
        program: row.get(2)?,
        affiliate: row.get(3)?,
        destination: row.get(4)?,
        redirect: row.get(5)?,
        utm: row.get(6)?,
        status: row.get(7)?,
        program_id: row.get(8)?,
        affiliate_id: row.get(9)?,
        program_status: row.get(10)?,
        affiliate_status: row.get(11)?,
    }
    .record()
}

fn save_named_tx(
    tx: &Transaction<'_>,
    which: Named,
    slug: &Slug,
    name: &str,
    status: Status,
    mode: SaveMode,
) -> Result<(), StoreError> {
    let now = now_micros();
    let table = which.table();
    let exists: bool = tx
        .query_row(
            &format!("SELECT 1 FROM {table} WHERE slug = ?1"),
            [slug.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    let what = || format!("{} {:?}", which.kind(), slug.as_str());
    match (mode, exists) {
        (SaveMode::Create, true) => return Err(StoreError::Conflict(what())),
        (SaveMode::Update, false) => return Err(StoreError::NotFound(what())),
        _ => {}
    }
    if exists {
        tx.execute(
            &format!(
                "UPDATE {table} SET name = ?2, status = ?3, updated_at = ?4 WHERE slug = ?1 \
                 AND (name IS NOT ?2 OR status IS NOT ?3)"
            ),
            params![slug.as_str(), name, status.as_str(), now],
        )?;
    } else {
        tx.execute(
            &format!("INSERT INTO {table} (slug, name, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)"),
            params![slug.as_str(), name, status.as_str(), now],
        )?;
    }
    Ok(())
}

fn save_program_tx(
    tx: &Transaction<'_>,
    p: &ProgramInput,
    mode: SaveMode,
) -> Result<(), StoreError> {
    save_named_tx(tx, Named::Programs, &p.slug, &p.name, p.status, mode)?;
    if let Some(settings) = &p.settings {
        conversions::save_program_settings(tx, p.slug.as_str(), settings)?;
    }
    Ok(())
}

fn save_affiliate_tx(
    tx: &Transaction<'_>,
    a: &AffiliateInput,
    mode: SaveMode,
) -> Result<(), StoreError> {
    save_named_tx(tx, Named::Affiliates, &a.slug, &a.name, a.status, mode)
}

/// `(id, slug, name, status)` rows of programs or affiliates.
fn named_rows(
    c: &Connection,
    which: Named,
    slug: Option<&Slug>,
) -> Result<Vec<(i64, Slug, String, Status)>, StoreError> {
    let table = which.table();
    let sql = match slug {
        Some(_) => format!("SELECT id, slug, name, status FROM {table} WHERE slug = ?1"),
        None => format!("SELECT id, slug, name, status FROM {table} ORDER BY slug"),
    };
    let mut st = c.prepare_cached(&sql)?;
    let mut rows = match slug {
        Some(s) => st.query([s.as_str()])?,
        None => st.query([])?,
    };
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push((
            r.get(0)?,
            slug_of(&r.get::<_, String>(1)?)?,
            r.get(2)?,
            status_of(&r.get::<_, String>(3)?)?,
        ));
    }
    if let (Some(s), true) = (slug, out.is_empty()) {
        return Err(StoreError::NotFound(format!(
            "{} {:?}",
            which.kind(),
            s.as_str()
        )));
    }
    Ok(out)
}

fn save_link_tx(tx: &Transaction<'_>, l: &LinkInput, mode: SaveMode) -> Result<(), StoreError> {
    let now = now_micros();
    let program_id: i64 = tx
        .query_row(
            "SELECT id FROM programs WHERE slug = ?1",
            [l.program.as_str()],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("program {:?}", l.program.as_str())))?;
    let affiliate_id: Option<i64> = match &l.affiliate {
        None => None,
        Some(a) => Some(
            tx.query_row(
                "SELECT id FROM affiliates WHERE slug = ?1",
                [a.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("affiliate {:?}", a.as_str())))?,
        ),
    };
    let exists = tx
        .query_row(
            "SELECT 1 FROM links WHERE code = ?1",
            [l.code.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    match (mode, exists) {
        (SaveMode::Create, true) => {
            return Err(StoreError::Conflict(format!("link {:?}", l.code.as_str())));
        }
        (SaveMode::Update, false) => {
            return Err(StoreError::NotFound(format!("link {:?}", l.code.as_str())));
        }
        _ => {}
    }
    let utm = serde_json::to_string(&l.utm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let redirect = l.redirect.map(RedirectStatus::code);
    if exists {
        tx.execute(
            "UPDATE links SET program_id = ?2, affiliate_id = ?3, destination = ?4, redirect = ?5, \
             utm = ?6, status = ?7, updated_at = ?8 WHERE code = ?1 AND (program_id IS NOT ?2 \
             OR affiliate_id IS NOT ?3 OR destination IS NOT ?4 OR redirect IS NOT ?5 \
             OR utm IS NOT ?6 OR status IS NOT ?7)",
            params![
                l.code.as_str(),
                program_id,
                affiliate_id,
                l.destination,
                redirect,
                utm,
                l.status.as_str(),
                now
            ],
        )?;
    } else {
        tx.execute(
            "INSERT INTO links (code, program_id, affiliate_id, destination, redirect, utm, status, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![l.code.as_str(), program_id, affiliate_id, l.destination, redirect, utm, l.status.as_str(), now],
        )?;
    }
    Ok(())
}

fn get_link_conn(conn: &Connection, code: &str) -> Result<LinkRecord, StoreError> {
    let mut st = conn.prepare_cached(&format!("{LINK_SELECT} WHERE l.code = ?1"))?;
    let mut rows = st.query([code])?;
    match rows.next()? {
        Some(r) => link_from(r),
        None => Err(StoreError::NotFound(format!("link {code:?}"))),
    }
}

const CLICK_SELECT: &str = "SELECT c.click_id, c.ts, l.code, p.slug, a.slug, c.src, c.sub1, c.sub2, \
     c.sub3, c.sub4, c.sub5, c.referrer, c.device, c.os, c.browser, c.bot_reason, c.invalid_reason, \
     c.country, c.region, c.city, c.visitor_key, c.is_unique FROM clicks c \
     JOIN links l ON l.id = c.link_id JOIN programs p ON p.id = c.program_id \
     LEFT JOIN affiliates a ON a.id = c.affiliate_id";

fn click_from(r: &Row<'_>) -> Result<ClickRow, StoreError> {
    let id: Vec<u8> = r.get(0)?;
    let id: [u8; 16] = id
        .try_into()
        .map_err(|_| StoreError::Corrupt("click_id is not 16 bytes".to_owned()))?;
    let vk: Vec<u8> = r.get(20)?;
    let vk: [u8; 16] = vk
        .try_into()
        .map_err(|_| StoreError::Corrupt("visitor_key is not 16 bytes".to_owned()))?;
    Ok(ClickRow {
        click_id: ClickId::from_bytes(id),
        ts: r.get(1)?,
        link: r.get(2)?,
        program: r.get(3)?,
        affiliate: r.get(4)?,
        src: r.get(5)?,
        subs: [r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?],
        referrer: r.get(11)?,
        device: r.get(12)?,
        os: r.get(13)?,
        browser: r.get(14)?,
        bot_reason: r.get(15)?,
        invalid_reason: r.get(16)?,
        country: r.get(17)?,
        region: r.get(18)?,
        city: r.get(19)?,
        visitor_key: VisitorKey(vk).to_hex(),
        unique: r.get(21)?,
    })
}

fn raw_counts(
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
        "WITH b(label, sid, eid, s, e) AS (VALUES {values}) \
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
    let mut args = Vec::with_capacity(buckets.len() * 5);
    let mut values = String::with_capacity(buckets.len() * 12);
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
    (values, args)
}

/// `WHERE a = ? AND b = ?` for equality filters (values appended to `args`).
fn filter_sql(
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

fn report_conn(conn: &Connection, q: &ReportQuery) -> Result<Vec<ReportRow>, StoreError> {
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
    let w = rollups::watermark(conn)?;
    let needed: Vec<Dimension> = q
        .dims
        .iter()
        .copied()
        .chain(q.filters.iter().map(|(d, _)| *d))
        .collect();
    let planned = match (q.raw_only, crate::plan::Cube::pick(&needed)) {
        (false, Some(cube)) => rollups::split(&buckets, w).map(|parts| (cube, parts)),
        _ => None,
    };
    let click_counts = match &planned {
        Some((cube, (rolled, raw))) => {
            let mut counts = rollups::counts(conn, *cube, rolled, &q.dims, &q.filters)?;
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
        Some((cube, _)) => {
            rollups::money(conn, *cube, &buckets, &q.dims, &q.filters, q.by_click_time)?
        }
        None => raw_money(conn, q, &buckets)?,
    };
    Ok(crate::plan::assemble(click_counts, money))
}

/// Conversion totals grouped straight from the conversion rows:
/// `(keys, currency, [conversions, revenue, payout])`, minor units.
fn raw_money(
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
    let (_, vt, index) = rollups::BASES[usize::from(q.by_click_time)];
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
        "WITH b(label, sid, eid, s, e) AS (VALUES {values}) \
         SELECT {select_keys} v.currency, COUNT(*), COALESCE(SUM(v.amount), 0), SUM(v.commission) \
         FROM b JOIN conversions v INDEXED BY {index} ON {vt} >= b.s AND {vt} < b.e \
         AND v.status IN {} \
         {joins} {where_} GROUP BY {}",
        rollups::COUNTED,
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

fn write_clicks_conn(
    conn: &mut Connection,
    clicks: &[NewClick],
    window: Micros,
) -> Result<Vec<ClickWritten>, StoreError> {
    // Cached BEGIN/COMMIT: `Connection::transaction` parses its SQL on every
    // batch, which shows up at thousands of group commits per second.
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let committed = insert_clicks(conn, clicks, window).and_then(|out| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(out)
    });
    if committed.is_err() {
        // Leave no transaction open behind a failed batch; it is retried whole.
        let _ = conn.execute_batch("ROLLBACK");
    }
    committed
}

fn insert_clicks(
    tx: &Connection,
    clicks: &[NewClick],
    window: Micros,
) -> Result<Vec<ClickWritten>, StoreError> {
    let mut out = Vec::with_capacity(clicks.len());
    {
        let mut last_unique = tx.prepare_cached(
            "SELECT last_unique FROM visitor_links WHERE link_id = ?1 AND visitor_key = ?2",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO clicks (click_id, ts, link_id, program_id, affiliate_id, src, \
             sub1, sub2, sub3, sub4, sub5, referrer, device, os, browser, bot_reason, \
             invalid_reason, country, region, city, visitor_key, is_unique, referrer_host) VALUES (?1, \
             ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, NULL, ?17, ?18, ?19, ?20, \
             ?21, ?22)",
        )?;
        let mut remember = tx.prepare_cached(
            "INSERT INTO visitor_links (link_id, visitor_key, last_unique) VALUES (?1, ?2, ?3) \
             ON CONFLICT (link_id, visitor_key) DO UPDATE SET last_unique = \
             max(last_unique, excluded.last_unique)",
        )?;
        for c in clicks {
            let unique = if c.is_human() {
                let mut last: Option<Micros> = None;
                for key in std::iter::once(&c.visitor_key).chain(c.previous_keys.iter()) {
                    let found: Option<Micros> = last_unique
                        .query_row(params![c.link_id, key.0.as_slice()], |r| r.get(0))
                        .optional()?;
                    last = last.max(found);
                }
                dedup::is_unique(c.ts, last, window)
            } else {
                false
            };
            let p = &c.params;
            let inserted = insert.execute(params![
                c.click_id.to_bytes().as_slice(),
                c.ts,
                c.link_id,
                c.program_id,
                c.affiliate_id,
                p.src,
                p.subs[0],
                p.subs[1],
                p.subs[2],
                p.subs[3],
                p.subs[4],
                c.referrer,
                c.device.as_str(),
                c.os,
                c.browser,
                c.bot.map(|b| b.as_str()),
                c.country,
                c.region,
                c.city,
                c.visitor_key.0.as_slice(),
                unique,
                c.referrer
                    .as_deref()
                    .and_then(clickward_core::click::referrer_host),
            ])? == 1;
            if inserted && unique {
                remember.execute(params![c.link_id, c.visitor_key.0.as_slice(), c.ts])?;
            }
            out.push(ClickWritten {
                inserted,
                unique: unique && inserted,
            });
        }
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn save_program(&self, p: ProgramInput, mode: SaveMode) -> StoreFuture<'_, Program> {
        let this = self.clone();
        Box::pin(async move {
            let slug = p.slug.clone();
            this.write(move |c| {
                let tx = c.transaction()?;
                save_program_tx(&tx, &p, mode)?;
                tx.commit()?;
                Ok(())
            })
            .await?;
            this.get_program(slug).await
        })
    }

    fn list_programs(&self) -> StoreFuture<'_, Vec<Program>> {
        self.read(|c| {
            Ok(named_rows(c, Named::Programs, None)?
                .into_iter()
                .map(program_of)
                .collect())
        })
    }

    fn get_program(&self, slug: Slug) -> StoreFuture<'_, Program> {
        self.read(move |c| {
            let row = named_rows(c, Named::Programs, Some(&slug))?
                .into_iter()
                .next();
            row.map(program_of)
                .ok_or_else(|| StoreError::NotFound(format!("program {:?}", slug.as_str())))
        })
    }

    fn save_affiliate(&self, a: AffiliateInput, mode: SaveMode) -> StoreFuture<'_, Affiliate> {
        let this = self.clone();
        Box::pin(async move {
            let slug = a.slug.clone();
            this.write(move |c| {
                let tx = c.transaction()?;
                save_affiliate_tx(&tx, &a, mode)?;
                tx.commit()?;
                Ok(())
            })
            .await?;
            this.get_affiliate(slug).await
        })
    }

    fn list_affiliates(&self) -> StoreFuture<'_, Vec<Affiliate>> {
        self.read(|c| {
            Ok(named_rows(c, Named::Affiliates, None)?
                .into_iter()
                .map(affiliate_of)
                .collect())
        })
    }

    fn get_affiliate(&self, slug: Slug) -> StoreFuture<'_, Affiliate> {
        self.read(move |c| {
            let row = named_rows(c, Named::Affiliates, Some(&slug))?
                .into_iter()
                .next();
            row.map(affiliate_of)
                .ok_or_else(|| StoreError::NotFound(format!("affiliate {:?}", slug.as_str())))
        })
    }

    fn save_link(&self, l: LinkInput, mode: SaveMode) -> StoreFuture<'_, LinkRecord> {
        let code = l.code.clone();
        self.write(move |c| {
            let tx = c.transaction()?;
            save_link_tx(&tx, &l, mode)?;
            let rec = get_link_conn(&tx, code.as_str())?;
            tx.commit()?;
            Ok(rec)
        })
    }

    fn list_links(&self) -> StoreFuture<'_, Vec<LinkRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("{LINK_SELECT} ORDER BY l.code"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(link_from(r)?);
            }
            Ok(out)
        })
    }

    fn get_link(&self, code: LinkCode) -> StoreFuture<'_, LinkRecord> {
        self.read(move |c| get_link_conn(c, code.as_str()))
    }

    fn apply_catalog(&self, cat: CatalogInput) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let tx = c.transaction()?;
            for p in &cat.programs {
                save_program_tx(&tx, p, SaveMode::Upsert)?;
            }
            for a in &cat.affiliates {
                save_affiliate_tx(&tx, a, SaveMode::Upsert)?;
            }
            for l in &cat.links {
                save_link_tx(&tx, l, SaveMode::Upsert)?;
            }
            for (program, affiliate, plan) in &cat.commissions {
                conversions::save_affiliate_commission(
                    &tx,
                    program.as_str(),
                    affiliate.as_str(),
                    Some(plan),
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn catalog_version(&self) -> StoreFuture<'_, i64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT value FROM meta WHERE key = 'catalog_version'",
                [],
                |r| r.get(0),
            )?)
        })
    }

    fn write_clicks(
        &self,
        clicks: Arc<Vec<NewClick>>,
        dedup_window: Micros,
    ) -> StoreFuture<'_, Vec<ClickWritten>> {
        self.write(move |c| write_clicks_conn(c, &clicks, dedup_window))
    }

    fn list_clicks(&self, link: Option<LinkCode>, limit: u32) -> StoreFuture<'_, Vec<ClickRow>> {
        self.read(move |c| {
            let mut out = Vec::new();
            let mut push_all = |mut rows: rusqlite::Rows<'_>| -> Result<(), StoreError> {
                while let Some(r) = rows.next()? {
                    out.push(click_from(r)?);
                }
                Ok(())
            };
            match link {
                Some(code) => {
                    let mut st = c.prepare_cached(&format!(
                        "{CLICK_SELECT} WHERE c.link_id = (SELECT id FROM links WHERE code = ?1) \
                         ORDER BY c.click_id DESC LIMIT ?2"
                    ))?;
                    push_all(st.query(params![code.as_str(), limit])?)?;
                }
                None => {
                    let mut st = c.prepare_cached(&format!(
                        "{CLICK_SELECT} ORDER BY c.click_id DESC LIMIT ?1"
                    ))?;
                    push_all(st.query(params![limit])?)?;
                }
            }
            Ok(out)
        })
    }

    fn get_click(&self, id: ClickId) -> StoreFuture<'_, ClickRow> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!("{CLICK_SELECT} WHERE c.click_id = ?1"))?;
            let mut rows = st.query([id.to_bytes().as_slice()])?;
            match rows.next()? {
                Some(r) => click_from(r),
                None => Err(StoreError::NotFound(format!("click {id}"))),
            }
        })
    }

    fn export_clicks(
        &self,
        start: Micros,
        end: Micros,
        mut sink: ClickSink,
    ) -> StoreFuture<'_, u64> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "{CLICK_SELECT} WHERE c.click_id >= ?1 AND c.click_id < ?2 AND c.ts >= ?3 AND c.ts < ?4 \
                 ORDER BY c.click_id"
            ))?;
            let mut rows = st.query(params![id_floor(start), id_floor(end), start, end])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                sink(&click_from(r)?).map_err(|e| StoreError::Task(format!("export: {e}")))?;
                n += 1;
            }
            Ok(n)
        })
    }

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
                let agg = this.read(move |c| rollups::aggregate(c, from, to)).await?;
                this.write(move |c| {
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    rollups::replace(&tx, &agg)?;
                    rollups::recompute_conversions(&tx, from, to)?;
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
            let Some((from, to)) = this.read(move |c| rollups::next_chunk(c, now)).await? else {
                return this.read(rollups::watermark).await;
            };
            let agg = this.read(move |c| rollups::aggregate(c, from, to)).await?;
            this.write(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                // Another advancer may have moved on meanwhile: only move a
                // watermark that is still where this chunk starts.
                let w = rollups::watermark(&tx)?;
                if w == 0 || w == from {
                    rollups::replace(&tx, &agg)?;
                    rollups::set_watermark(&tx, to)?;
                }
                let w = rollups::watermark(&tx)?;
                tx.commit()?;
                Ok(w)
            })
            .await
        })
    }

    fn purge_clicks(&self, before: Micros, limit: u32) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let cutoff = before.min(rollups::watermark(&tx)?);
            let n = tx.execute(
                "DELETE FROM clicks WHERE click_id IN \
                 (SELECT click_id FROM clicks WHERE click_id < ?1 AND ts < ?2 LIMIT ?3)",
                params![id_floor(cutoff), cutoff, limit],
            )?;
            tx.commit()?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn purge_dedup(&self, before: Micros) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let n = c.execute("DELETE FROM visitor_links WHERE last_unique < ?1", [before])?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn program_settings(&self, program_id: i64) -> StoreFuture<'_, ProgramSettings> {
        self.read(move |c| conversions::program_settings(c, program_id))
    }

    fn save_program_settings(&self, slug: Slug, s: ProgramSettings) -> StoreFuture<'_, ()> {
        self.write(move |c| conversions::save_program_settings(c, slug.as_str(), &s))
    }

    fn affiliate_commission(
        &self,
        program_id: i64,
        affiliate_id: i64,
    ) -> StoreFuture<'_, Option<CommissionPlan>> {
        self.read(move |c| conversions::affiliate_commission(c, program_id, affiliate_id))
    }

    fn save_affiliate_commission(
        &self,
        program: Slug,
        affiliate: Slug,
        plan: Option<CommissionPlan>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            conversions::save_affiliate_commission(
                c,
                program.as_str(),
                affiliate.as_str(),
                plan.as_ref(),
            )
        })
    }

    fn click_facts(&self, id: ClickId) -> StoreFuture<'_, Option<ClickFacts>> {
        self.read(move |c| conversions::click_facts(c, id))
    }

    fn record_conversion(&self, v: NewConversion) -> StoreFuture<'_, Recorded> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = conversions::record_conversion(&tx, &v)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn get_conversion(&self, id: ConversionId) -> StoreFuture<'_, ConversionRow> {
        self.read(move |c| conversions::get_conversion(c, id))
    }

    fn list_conversions(&self, f: ConversionFilter) -> StoreFuture<'_, Vec<ConversionRow>> {
        self.read(move |c| conversions::list_conversions(c, &f))
    }

    fn list_payouts(&self, affiliate: Option<Slug>, limit: u32) -> StoreFuture<'_, Vec<Payout>> {
        self.read(move |c| {
            conversions::list_payouts(c, affiliate.as_ref().map(Slug::as_str), limit)
        })
    }

    fn set_conversion_status(
        &self,
        id: ConversionId,
        to: ConversionStatus,
        actor: String,
        reason: Option<String>,
    ) -> StoreFuture<'_, ConversionRow> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row = conversions::set_status(&tx, id, to, &actor, reason.as_deref())?;
            tx.commit()?;
            Ok(row)
        })
    }

    fn approve_due(&self, now: Micros) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = conversions::approve_due(&tx, now)?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn balances(&self, affiliate: Option<Slug>) -> StoreFuture<'_, Vec<Balance>> {
        self.read(move |c| conversions::balances(c, affiliate.as_ref().map(Slug::as_str)))
    }

    fn payout_preview(&self, affiliate: Slug) -> StoreFuture<'_, Vec<PayoutLine>> {
        self.read(move |c| conversions::payout_preview(c, affiliate.as_str()))
    }

    fn create_payout(
        &self,
        affiliate: Slug,
        currency: Currency,
        key: String,
        batch_id: ulid::Ulid,
        actor: String,
    ) -> StoreFuture<'_, Payout> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let p = conversions::create_payout(
                &tx,
                affiliate.as_str(),
                currency,
                &key,
                batch_id,
                &actor,
            )?;
            tx.commit()?;
            Ok(p)
        })
    }

    fn idempotent_response(&self, key: String) -> StoreFuture<'_, Option<(Vec<u8>, u16, String)>> {
        self.read(move |c| conversions::idempotent_response(c, &key))
    }

    fn save_idempotent_response(
        &self,
        key: String,
        fingerprint: Vec<u8>,
        status: u16,
        body: String,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            conversions::save_idempotent_response(c, &key, &fingerprint, status, &body)
        })
    }

    fn create_api_key(
        &self,
        hash: [u8; 32],
        prefix: String,
        scope: KeyScope,
        label: Option<String>,
    ) -> StoreFuture<'_, ApiKey> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO api_keys (prefix, hash, scope, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![prefix, hash.as_slice(), scope.as_str(), label, now_micros()],
            )?;
            Ok(ApiKey {
                id: c.last_insert_rowid(),
                prefix,
                scope,
                label,
            })
        })
    }

    fn find_api_key(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, prefix, scope, label FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
            )?;
            let mut rows = st.query([hash.as_slice()])?;
            match rows.next()? {
                Some(r) => Ok(Some(ApiKey {
                    id: r.get(0)?,
                    prefix: r.get(1)?,
                    scope: scope_of(&r.get::<_, String>(2)?)?,
                    label: r.get(3)?,
                })),
                None => Ok(None),
            }
        })
    }

    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, prefix, scope, label FROM api_keys WHERE revoked_at IS NULL ORDER BY id",
            )?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(ApiKey {
                    id: r.get(0)?,
                    prefix: r.get(1)?,
                    scope: scope_of(&r.get::<_, String>(2)?)?,
                    label: r.get(3)?,
                });
            }
            Ok(out)
        })
    }

    fn revoke_api_key(&self, id: i64) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let n = c.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now_micros()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("API key {id}")));
            }
            Ok(())
        })
    }

    fn save_user(&self, u: UserInput) -> StoreFuture<'_, User> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let affiliate_id: Option<i64> = match &u.affiliate {
                Some(slug) => Some(
                    tx.query_row(
                        "SELECT id FROM affiliates WHERE slug = ?1",
                        [slug.as_str()],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| StoreError::NotFound(format!("affiliate {slug}")))?,
                ),
                None => None,
            };
            let now = u.changed_at;
            tx.execute(
                "INSERT INTO users (username, role, affiliate_id, password_hash, credentials_changed_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (username) DO UPDATE SET role = excluded.role, \
                 affiliate_id = excluded.affiliate_id, password_hash = excluded.password_hash, \
                 credentials_changed_at = excluded.credentials_changed_at",
                params![u.username, u.role.as_str(), affiliate_id, u.password_hash, now],
            )?;
            let user = user_where(&tx, "u.username = ?1", &u.username)?
                .ok_or_else(|| StoreError::NotFound(format!("user {}", u.username)))?;
            tx.commit()?;
            Ok(user)
        })
    }

    fn find_user(&self, username: String) -> StoreFuture<'_, Option<User>> {
        self.read(move |c| user_where(c, "u.username = ?1", &username))
    }

    fn get_user(&self, id: i64) -> StoreFuture<'_, Option<User>> {
        self.read(move |c| user_where(c, "u.id = ?1", &id))
    }

    fn list_users(&self) -> StoreFuture<'_, Vec<User>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("{USER_SELECT} ORDER BY u.username"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(user_from(r)?);
            }
            Ok(out)
        })
    }
}

fn user_where(
    c: &Connection,
    cond: &str,
    arg: &dyn rusqlite::ToSql,
) -> Result<Option<User>, StoreError> {
    let mut st = c.prepare_cached(&format!("{USER_SELECT} WHERE {cond}"))?;
    let mut rows = st.query([arg])?;
    rows.next()?.map(user_from).transpose()
}

fn user_from(r: &Row<'_>) -> Result<User, StoreError> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        role: role_of(&r.get::<_, String>(2)?)?,
        affiliate: r.get(3)?,
        password_hash: r.get(4)?,
        credentials_changed_at: r.get(5)?,
    })
}
