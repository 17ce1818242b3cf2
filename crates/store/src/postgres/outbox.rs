//! SQL for the transactional outbox: appended inside the transactions of
//! the changes it reports, read back in order.

use tokio_postgres::GenericClient;

use super::{OutboxStore, PgStore};
use crate::common::{outbox_event, outbox_row};
use crate::{OutboxEvent, StoreError, StoreFuture};

/// Appends an event of type `kind` with `body` (inside the caller's
/// transaction).
pub(super) async fn append(
    c: &impl GenericClient,
    kind: &str,
    body: serde_json::Value,
) -> Result<(), StoreError> {
    let (id, payload, ts) = outbox_row(body)?;
    c.execute(
        "INSERT INTO outbox (event_id, type, ts, payload) VALUES ($1, $2, $3, $4)",
        &[&id, &kind, &ts, &payload],
    )
    .await?;
    Ok(())
}

impl OutboxStore for PgStore {
    fn outbox_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<OutboxEvent>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT seq, event_id, type, ts, payload FROM outbox WHERE seq > $1 \
                     ORDER BY seq LIMIT $2",
                    &[&after, &i64::from(limit)],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id: Vec<u8> = r.try_get(1)?;
                let payload: String = r.try_get(4)?;
                out.push(outbox_event(
                    r.try_get(0)?,
                    &id,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    &payload,
                )?);
            }
            Ok(out)
        })
    }

    fn outbox_head(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.query_one("SELECT COALESCE(MAX(seq), 0) FROM outbox", &[])
                .await?
                .try_get(0)?)
        })
    }
}
