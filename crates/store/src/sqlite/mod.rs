//! The SQLite store: WAL, one writer connection used for batched transactions
//! (group commit), and a small pool of reader connections.
//!
//! Every call runs on tokio's blocking pool. The writer is a `std` mutex, not
//! a tokio one: it is only ever held inside blocking tasks, never across an
//! `.await`.

use crate::{
    ConversionFilter, ConversionStore, Payout, PayoutLine, ReportQuery, ReportRow, ReportStore,
    StoreError, StoreFuture,
};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod accounts;
mod catalog;
mod clicks;
mod cluster;
mod conversions;
mod delivery;
mod fraud;
mod integration;
mod outbox;
mod privacy;
mod rollups;

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
    /// Set when an erasure's WAL truncation found a reader in the way: the
    /// checkpointer tries again until it succeeds.
    truncate_wal: std::sync::atomic::AtomicBool,
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
        configure(&writer, opts.synchronous).map_err(|e| damaged_if_corrupt(e, path))?;
        check_integrity(&writer, path)?;
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
            truncate_wal: std::sync::atomic::AtomicBool::new(false),
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

    /// Folds the WAL into the database and truncates it, so that what an
    /// erasure overwrote does not linger in old WAL frames: at once when no
    /// reader holds an older snapshot, else the checkpointer retries every
    /// 250 ms until it can (never blocking the writer to wait for readers).
    pub(crate) async fn truncate_wal(&self) {
        let done = self
            .write(|c| {
                c.busy_timeout(std::time::Duration::ZERO)?;
                let busy = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                });
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(busy.is_ok_and(|b| b == 0))
            })
            .await;
        if !matches!(done, Ok(true)) {
            self.inner
                .truncate_wal
                .store(true, std::sync::atomic::Ordering::Release);
        }
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
                // An erasure's truncation that a reader was in the way of.
                if inner
                    .truncate_wal
                    .swap(false, std::sync::atomic::Ordering::AcqRel)
                {
                    let done = conn
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                            r.get::<_, i64>(0)
                        })
                        .is_ok_and(|busy| busy == 0);
                    if !done {
                        inner
                            .truncate_wal
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                }
            }
        })
        .map_err(|e| StoreError::Task(format!("starting the checkpoint thread: {e}")))?;
    Ok(())
}

/// Databases up to this size are checked in full when opened (`PRAGMA
/// quick_check`, roughly a second per GB here); larger ones only by the
/// cheap checks, so a start never waits minutes.
const FULL_CHECK_UP_TO: u64 = 1 << 30;

/// The error that names a damaged database file and the way out.
fn damaged(path: &Path, what: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "the database {} is damaged ({what}); restore it from a backup, or move it (and its -wal file) away to start with an empty one",
        path.display()
    ))
}

/// SQLite's "malformed" and "not a database" as [`damaged`]; other errors
/// as they are.
fn damaged_if_corrupt(e: StoreError, path: &Path) -> StoreError {
    match &e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            damaged(path, &e.to_string())
        }
        _ => e,
    }
}

/// Refuses a damaged database at open, naming the file and the way out,
/// instead of failing every write later.
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let damaged = |what: String| damaged(path, &what);
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal = std::fs::metadata(&wal_path).map_or(0, |m| m.len());
    let pages = |pragma: &str| -> Result<u64, StoreError> {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| damaged(e.to_string()))
    };
    // Cheap: a file shorter than its own header says was cut off (with no
    // WAL holding the missing pages).
    if wal == 0 && size > 0 && pages("page_count")? * pages("page_size")? > size {
        return Err(damaged("the file is shorter than its header says".into()));
    }
    if size <= FULL_CHECK_UP_TO {
        let problems: Vec<String> = conn
            .prepare("PRAGMA quick_check(5)")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| damaged(e.to_string()))?;
        if problems.iter().any(|p| p != "ok") {
            return Err(damaged(problems.join("; ")));
        }
    }
    Ok(())
}

/// Starts a write transaction that takes the write lock at once.
///
/// A deferred transaction that reads and then writes cannot wait for the
/// lock: in WAL mode SQLite answers `SQLITE_BUSY` at once when another
/// connection (a CLI command beside the server, a second store in a test)
/// committed since the read began. Taking the lock up front makes it wait
/// the busy timeout like any other writer.
pub(crate) fn begin_write(c: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Task("a store connection lock was poisoned by an earlier panic".to_owned())
}
