//! What nodes share through PostgreSQL: visitor salts, and catalogue changes
//! and live events by LISTEN/NOTIFY.

use super::{CATALOG_CHANNEL, ClusterStore, EVENTS_CHANNEL, PgStore};
use crate::{Notice, StoreError, StoreFuture};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;

/// One LISTEN session: returns when the connection ends.
pub(super) async fn listen_once(
    config: &tokio_postgres::Config,
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
            "LISTEN {CATALOG_CHANNEL}; LISTEN {EVENTS_CHANNEL}"
        ))
        .await?;
    // Whatever changed while no one listened.
    let _ = tx.send(Notice {
        channel: CATALOG_CHANNEL.to_owned(),
        payload: String::new(),
    });
    while let Some(n) = msgs.recv().await {
        let _ = tx.send(Notice {
            channel: n.channel().to_owned(),
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
            c.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .await?;
            Ok(())
        })
    }
}
