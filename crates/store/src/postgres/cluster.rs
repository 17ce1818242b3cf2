//! What nodes share through PostgreSQL: visitor salts, and catalogue changes
//! and live events by LISTEN/NOTIFY.

use super::{CATALOG_CHANNEL, Channels, ClusterStore, EVENTS_CHANNEL, PRIVACY_CHANNEL, PgStore};
use crate::{Micros, Notice, StoreError, StoreFuture};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;

/// One LISTEN session: returns when the connection ends.
pub(super) async fn listen_once(
    config: &tokio_postgres::Config,
    channels: &Channels,
    tx: &broadcast::Sender<Notice>,
) -> Result<(), StoreError> {
    use futures::StreamExt;
    let (client, mut conn) = config.connect(NoTls).await?;
    let (msgs_tx, mut msgs) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if msgs_tx.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(StoreError::from(e)),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!(
            "LISTEN {}; LISTEN {}; LISTEN {}",
            channels.wire(CATALOG_CHANNEL),
            channels.wire(EVENTS_CHANNEL),
            channels.wire(PRIVACY_CHANNEL)
        ))
        .await?;
    // Whatever changed while no one listened.
    let _ = tx.send(Notice {
        channel: CATALOG_CHANNEL.to_owned(),
        payload: String::new(),
    });
    while let Some(n) = msgs.recv().await {
        let _ = tx.send(Notice {
            channel: channels.named(n.channel()),
            payload: n.payload().to_owned(),
        });
    }
    drop(client);
    driver.await.map_err(|e| StoreError::Task(e.to_string()))?
}

impl ClusterStore for PgStore {
    fn shared_salt(
        &self,
        day: i64,
        candidate: [u8; 32],
        keep_from: i64,
    ) -> StoreFuture<'_, Option<[u8; 32]>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute("DELETE FROM visitor_salts WHERE day < $1", &[&keep_from])
                .await?;
            c.execute(
                "INSERT INTO visitor_salts (day, salt) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING",
                &[&day, &candidate.as_slice()],
            )
            .await?;
            let salt: Vec<u8> = c
                .query_one("SELECT salt FROM visitor_salts WHERE day = $1", &[&day])
                .await?
                .try_get(0)?;
            let salt: [u8; 32] = salt
                .try_into()
                .map_err(|_| StoreError::Corrupt("a visitor salt is not 32 bytes".to_owned()))?;
            Ok(Some(salt))
        })
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Notice>> {
        self.listen();
        Some(self.notices.subscribe())
    }

    fn publish(&self, channel: &'static str, payload: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            let wire = self.channels.wire(channel);
            c.execute("SELECT pg_notify($1, $2)", &[&wire, &payload])
                .await?;
            Ok(())
        })
    }

    fn take_shared_rate(
        &self,
        class: &'static str,
        client: [u8; 16],
        interval_us: i64,
        tolerance_us: i64,
    ) -> StoreFuture<'_, Option<Option<Micros>>> {
        Box::pin(async move {
            let c = self.client().await?;
            // GCRA in one statement, so two nodes taking the same client's
            // last slot serialise on its row: the update happens only when
            // the new arrival time stays within the tolerance; otherwise
            // the row is read back for the wait. The database's clock is
            // the only clock, so nodes' clock skew cannot widen a limit.
            let row = c
                .query_one(
                    "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS t), \
                     taken AS ( \
                       INSERT INTO rate_limits AS r (class, client, tat) \
                       SELECT $1, $2, t + $3 FROM now \
                       ON CONFLICT (class, client) DO UPDATE \
                         SET tat = greatest(r.tat, (SELECT t FROM now)) + $3 \
                         WHERE greatest(r.tat, (SELECT t FROM now)) + $3 - (SELECT t FROM now) <= $4 \
                       RETURNING 1) \
                     SELECT EXISTS (SELECT 1 FROM taken), \
                            (SELECT r.tat + $3 - $4 - now.t FROM rate_limits r, now \
                              WHERE r.class = $1 AND r.client = $2)",
                    &[&class, &client.as_slice(), &interval_us, &tolerance_us],
                )
                .await?;
            let taken: bool = row.try_get(0)?;
            if taken {
                return Ok(Some(None));
            }
            // A row another node inserted after this statement's snapshot
            // is not seen: wait one interval.
            let wait: Option<i64> = row.try_get(1)?;
            Ok(Some(Some(wait.unwrap_or(interval_us).max(1))))
        })
    }

    fn sweep_shared_rates(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.execute(
                "DELETE FROM rate_limits \
                 WHERE tat < (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
                &[],
            )
            .await?)
        })
    }
}
