//! SQL for the transactional outbox: appended inside the transactions of
//! the changes it reports, read back in order.

use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::common::{outbox_event, outbox_row};
use crate::{OutboxEvent, OutboxStore, StoreError, StoreFuture};

/// Appends an event of type `kind` with `body` (inside the caller's
/// transaction).
pub(super) fn append(
    c: &Connection,
    kind: &str,
    body: serde_json::Value,
) -> Result<(), StoreError> {
    let (id, payload, ts) = outbox_row(body)?;
    c.prepare_cached("INSERT INTO outbox (event_id, type, ts, payload) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, kind, ts, payload])?;
    Ok(())
}

impl OutboxStore for SqliteStore {
    fn outbox_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<OutboxEvent>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, event_id, type, ts, payload FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = st.query(params![after, limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let id: Vec<u8> = r.get(1)?;
                let payload: String = r.get(4)?;
                out.push(outbox_event(r.get(0)?, &id, r.get(2)?, r.get(3)?, &payload)?);
            }
            Ok(out)
        })
    }

    fn outbox_head(&self) -> StoreFuture<'_, i64> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM outbox")?
                    .query_row([], |r| r.get(0))?,
            )
        })
    }
}
