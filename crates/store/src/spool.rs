//! A node's click spool: a small local SQLite file where the redirect path
//! commits clicks when the shared store is PostgreSQL, so that
//! `durability = "sync"` still means "on this node's disk" and a redirect
//! never waits on the network. A shipper moves clicks from here to the
//! shared store in batches and removes them only after the shared store
//! committed them (shipping is idempotent by `click_id`, so a batch shipped
//! twice after a lost answer changes nothing).

use std::path::Path;
use std::sync::{Arc, Mutex};

use clickward_core::Micros;
use clickward_core::click::NewClick;
use rusqlite::{Connection, OptionalExtension, params};

use crate::{StoreError, Synchronous};

/// The spool. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    conn: Arc<Mutex<Connection>>,
}

/// What the spool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Clicks waiting to be shipped.
    pub clicks: u64,
    /// Timestamp (UTC µs) of the oldest waiting click.
    pub oldest: Option<Micros>,
    /// Clicks the shared store refused for good, kept aside (see
    /// [`Spool::set_aside`]).
    pub set_aside: u64,
}

/// An erasure request kept on a node's disk while the shared store was down
/// (see [`Spool::hold_erasures`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldErasure {
    /// `era_` + ULID, the id its receipt already gave the requester.
    pub id: String,
    /// What to erase.
    pub subject: crate::privacy::Subject,
    /// Who asked.
    pub actor: String,
    /// UTC µs.
    pub received_at: Micros,
}

impl Spool {
    /// Opens (creating if needed) the spool file.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the file cannot be opened or created.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        crate::sqlite::configure_wal(&conn, sync)?;
        // One row per click: its time (for the lag) and the click as JSON.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, \
             click TEXT NOT NULL); \
             CREATE TABLE IF NOT EXISTS set_aside (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, \
             click TEXT NOT NULL, reason TEXT NOT NULL, at INTEGER NOT NULL); \
             CREATE TABLE IF NOT EXISTS held_erasures (id TEXT PRIMARY KEY, subject TEXT NOT NULL, \
             actor TEXT NOT NULL, received_at INTEGER NOT NULL);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut c = conn.lock().map_err(|_| {
                    StoreError::Task("the spool lock was poisoned by an earlier panic".to_owned())
                })?;
                f(&mut c)
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
        }
    }

    /// Anonymises spooled clicks (waiting and set aside) of an erasure:
    /// those with one of `keys` (or `previous_keys`), one of `click_ids`,
    /// or `sub` in sub1..sub5 lose their visitor keys (a fresh random key
    /// per erased key), sub-ids and referrer, as `crate::privacy` does to
    /// stored clicks. Returns how many changed.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the spool cannot be read or written.
    pub fn erase(
        &self,
        keys: Vec<clickward_core::click::VisitorKey>,
        click_ids: Vec<clickward_core::id::ClickId>,
        sub: Option<String>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.with(move |c| {
            let tx = c.transaction()?;
            let mut fresh = std::collections::BTreeMap::new();
            let mut changed = 0;
            for table in ["spool", "set_aside"] {
                let rows: Vec<(i64, String)> = tx
                    .prepare(&format!("SELECT seq, click FROM {table}"))?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                for (seq, text) in rows {
                    let Ok(mut k) = serde_json::from_str::<NewClick>(&text) else {
                        continue;
                    };
                    let hit = keys.contains(&k.visitor_key)
                        || k.previous_keys.iter().any(|p| keys.contains(p))
                        || click_ids.contains(&k.click_id)
                        || sub
                            .as_ref()
                            .is_some_and(|v| k.params.subs.iter().flatten().any(|s| s == v));
                    if !hit {
                        continue;
                    }
                    let mut key = |old: clickward_core::click::VisitorKey| {
                        *fresh.entry(old).or_insert_with(|| {
                            let mut r = [0u8; 16];
                            rand::fill(&mut r[..]);
                            clickward_core::click::VisitorKey(r)
                        })
                    };
                    k.visitor_key = key(k.visitor_key);
                    k.previous_keys = k.previous_keys.iter().map(|p| key(*p)).collect();
                    k.params.subs = Default::default();
                    k.referrer = None;
                    let text = serde_json::to_string(&k)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    changed +=
                        tx.prepare(&format!("UPDATE {table} SET click = ?2 WHERE seq = ?1"))?
                            .execute(rusqlite::params![seq, text])? as u64;
                }
            }
            tx.commit()?;
            Ok(changed)
        })
    }

    /// Keeps erasure requests the shared store could not take (it was
    /// down) on this node's disk, in one transaction, until
    /// [`Spool::release_erasure`] says the store has them. An id already
    /// held is left as it was.
    ///
    /// # Errors
    /// When the file cannot be written; none of them is held then.
    pub async fn hold_erasures(&self, held: Vec<HeldErasure>) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = crate::sqlite::begin_write(c)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO held_erasures (id, subject, actor, received_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                for h in &held {
                    st.execute(params![h.id, h.subject.to_text()?, h.actor, h.received_at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The erasures held on this node, oldest first.
    ///
    /// # Errors
    /// When the file cannot be read or a held subject does not parse.
    pub async fn held_erasures(&self) -> Result<Vec<HeldErasure>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, subject, actor, received_at FROM held_erasures ORDER BY received_at, id",
            )?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let subject: String = r.get(1)?;
                out.push(HeldErasure {
                    id: r.get(0)?,
                    subject: crate::privacy::Subject::from_text(&subject)?,
                    actor: r.get(2)?,
                    received_at: r.get(3)?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Forgets a held erasure (the shared store has it now), zeroing the
    /// freed space: the subject is personal data.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub async fn release_erasure(&self, id: String) -> Result<(), StoreError> {
        self.with(move |c| {
            c.pragma_update(None, "secure_delete", true)?;
            let out = c.execute("DELETE FROM held_erasures WHERE id = ?1", [&id]);
            c.pragma_update(None, "secure_delete", false)?;
            out?;
            Ok(())
        })
        .await
    }

    /// Commits a batch of clicks (one transaction).
    ///
    /// # Errors
    /// When the file cannot be written; nothing of the batch is kept then.
    pub async fn append(&self, clicks: Arc<Vec<NewClick>>) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = crate::sqlite::begin_write(c)?;
            {
                let mut st = tx.prepare_cached("INSERT INTO spool (ts, click) VALUES (?1, ?2)")?;
                for click in clicks.iter() {
                    let json = serde_json::to_string(click)
                        .map_err(|e| StoreError::Corrupt(format!("spooling a click: {e}")))?;
                    st.execute(params![click.ts, json])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The oldest `limit` clicks with their sequence numbers, oldest first.
    ///
    /// # Errors
    /// When the file cannot be read or a row is not a click.
    pub async fn peek(&self, limit: usize) -> Result<Vec<(i64, NewClick)>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached("SELECT seq, click FROM spool ORDER BY seq LIMIT ?1")?;
            let mut rows = st.query([i64::try_from(limit).unwrap_or(i64::MAX)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let json: String = r.get(1)?;
                let click = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("spooled click: {e}")))?;
                out.push((r.get(0)?, click));
            }
            Ok(out)
        })
        .await
    }

    /// Forgets the clicks from `first` through `last` (they are shipped).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub async fn remove_range(&self, first: i64, last: i64) -> Result<(), StoreError> {
        self.with(move |c| {
            c.prepare_cached("DELETE FROM spool WHERE seq BETWEEN ?1 AND ?2")?
                .execute([first, last])?;
            Ok(())
        })
        .await
    }

    /// Moves click `seq` out of the way of the rest: the shared store
    /// refused it for `reason` and always will. Kept (in `set_aside`, in the
    /// spool file) for an operator to look at; never shipped again.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub async fn set_aside(&self, seq: i64, reason: String) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = crate::sqlite::begin_write(c)?;
            tx.execute(
                "INSERT OR IGNORE INTO set_aside (seq, ts, click, reason, at) \
                 SELECT seq, ts, click, ?2, ?3 FROM spool WHERE seq = ?1",
                params![seq, reason, crate::common::now_micros()],
            )?;
            tx.execute("DELETE FROM spool WHERE seq = ?1", [seq])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Forgets every click up to and including `seq` (they are shipped).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub async fn remove_through(&self, seq: i64) -> Result<(), StoreError> {
        self.with(move |c| {
            c.prepare_cached("DELETE FROM spool WHERE seq <= ?1")?
                .execute([seq])?;
            Ok(())
        })
        .await
    }

    /// How many clicks wait, and how old the oldest is.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub async fn stats(&self) -> Result<SpoolStats, StoreError> {
        self.with(|c| {
            let clicks: i64 = c.query_row("SELECT COUNT(*) FROM spool", [], |r| r.get(0))?;
            let set_aside: i64 = c.query_row("SELECT COUNT(*) FROM set_aside", [], |r| r.get(0))?;
            let oldest: Option<Micros> = c
                .query_row("SELECT ts FROM spool ORDER BY seq LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(SpoolStats {
                clicks: u64::try_from(clicks).unwrap_or(0),
                oldest,
                set_aside: u64::try_from(set_aside).unwrap_or(0),
            })
        })
        .await
    }
}
