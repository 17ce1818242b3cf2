//! What a node does when the store is a shared PostgreSQL: ship its spool,
//! follow catalogue changes of other nodes, and exchange live events.
//!
//! - The shipper moves spooled clicks to PostgreSQL in batches of
//!   `storage.ship_batch`, oldest first, and removes them from the spool
//!   only after PostgreSQL committed them; while PostgreSQL is unreachable it
//!   retries with backoff (100 ms doubling to 5 s) and redirects go on,
//!   committing to the spool.
//! - Catalogue: a NOTIFY on `clickward_catalog` (sent by a trigger on every
//!   program, affiliate or link change, whichever node or CLI made it)
//!   refreshes the link cache at once; the 0.5 s poll stays as a fallback.
//! - Live events: each node's own events are sent in NOTIFY payloads of at
//!   most ~7.5 KB on `clickward_events`, tagged with the node's id; events of
//!   other nodes are published into the local hub, so a dashboard connected
//!   to any node sees every node's clicks. Live events are best effort: one
//!   that cannot be sent is counted, never retried (the click itself is safe
//!   in the spool).

use std::sync::Arc;
use std::time::Duration;

use clickward_core::Micros;
use clickward_core::click::NewClick;
use clickward_store::{CATALOG_CHANNEL, EVENTS_CHANNEL, PRIVACY_CHANNEL, Spool, Store};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::services::events::{EventHub, LiveEvent, Numbered};
use crate::services::links::LinkCache;
use crate::telemetry;

/// Largest NOTIFY payload this node sends (PostgreSQL's limit is 8,000 bytes).
const PAYLOAD_MAX: usize = 7_500;

/// Starts the shipper. It runs until `stop`, then ships what the spool
/// holds for at most `final_wait` more (what is left ships at the next start).
pub fn spawn_shipper(
    spool: Spool,
    store: Arc<dyn Store>,
    batch: usize,
    dedup_window: Micros,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    final_wait: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && *stop.borrow() {
                deadline = Some(tokio::time::Instant::now() + final_wait);
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return;
            }
            let shipped = ship_once(&spool, store.as_ref(), batch, dedup_window).await;
            match shipped {
                Ok(0) => {
                    delay = Duration::from_millis(100);
                    if deadline.is_some() {
                        return;
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = stop.changed() => {}
                    }
                }
                Ok(_) => delay = Duration::from_millis(100),
                Err(e) => {
                    metrics::counter!(telemetry::SHIP_ERRORS_TOTAL).increment(1);
                    tracing::warn!(
                        "shipping clicks to PostgreSQL failed, retrying in {delay:?}: {e}"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

/// Ships one batch from `spool` to `store`; returns how many clicks it
/// moved. A batch the store refuses for its data (`StoreError::Rejected`)
/// is split in halves, in order, until the clicks it refuses are found;
/// those are set aside (counted, shown in `/readyz`) so one bad row never
/// holds up the rest.
///
/// # Errors
/// Store and spool errors other than a refusal of the data (retried by the
/// caller).
pub async fn ship_once(
    spool: &Spool,
    store: &dyn Store,
    batch: usize,
    dedup_window: Micros,
) -> Result<usize, clickward_store::StoreError> {
    let items = spool.peek(batch).await?;
    if items.is_empty() {
        record_spool(spool).await;
        return Ok(0);
    }
    let mut parts = vec![items];
    let mut shipped = 0;
    // Depth first, left before right: clicks reach the store in spool
    // order, so unique flags are decided in order of arrival.
    while let Some(part) = parts.pop() {
        let (Some(first), Some(last)) = (part.first().map(|p| p.0), part.last().map(|p| p.0))
        else {
            continue;
        };
        let clicks: Arc<Vec<NewClick>> = Arc::new(part.iter().map(|(_, c)| c.clone()).collect());
        match store.write_clicks(clicks.clone(), dedup_window).await {
            Ok(written) => {
                // Committed in PostgreSQL: now it may leave the spool. A
                // crash between the two ships it again, which changes
                // nothing (by click_id).
                spool.remove_range(first, last).await?;
                crate::services::ingest::record_quality(&clicks, &written);
                metrics::counter!(telemetry::SHIPPED_CLICKS_TOTAL).increment(clicks.len() as u64);
                shipped += clicks.len();
            }
            Err(clickward_store::StoreError::Rejected(reason)) if part.len() == 1 => {
                tracing::error!(
                    click_id = %part[0].1.click_id,
                    "the shared store refuses this click for good ({reason}); set aside in the spool's set_aside table"
                );
                spool.set_aside(first, reason).await?;
                metrics::counter!(telemetry::SET_ASIDE_CLICKS_TOTAL).increment(1);
            }
            Err(clickward_store::StoreError::Rejected(_)) => {
                let mut left = part;
                let right = left.split_off(left.len() / 2);
                parts.push(right);
                parts.push(left);
            }
            Err(e) => {
                record_spool(spool).await;
                return if shipped > 0 { Ok(shipped) } else { Err(e) };
            }
        }
    }
    record_spool(spool).await;
    Ok(shipped)
}

/// Sets the spool gauges from the spool as it is now.
pub async fn record_spool(spool: &Spool) {
    if let Ok(stats) = spool.stats().await {
        metrics::gauge!(telemetry::SPOOL_CLICKS).set(stats.clicks as f64);
        metrics::gauge!(telemetry::SHIP_LAG_SECONDS).set(ship_lag_seconds(stats.oldest));
    }
}

/// Seconds since the oldest spooled click (0 when the spool is empty).
pub fn ship_lag_seconds(oldest: Option<Micros>) -> f64 {
    let now = crate::clock::Clock::now_micros(&crate::clock::SystemClock);
    oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1e6)
}

/// Starts the tasks that exchange catalogue notices and live events with
/// the other nodes. `None` when the store has no other nodes.
pub fn spawn_exchange(
    store: Arc<dyn Store>,
    links: Arc<LinkCache>,
    events: Arc<EventHub>,
    privacy: Arc<super::privacy::PrivacyService<dyn Store>>,
    stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let mut notices = store.subscribe()?;
    let node = ulid::Ulid::generate().to_string();
    let (tx, rx) = mpsc::channel(16_384);
    events.forward_to(tx);
    let sender = tokio::spawn(send_events(store.clone(), node.clone(), rx, stop.clone()));
    let mut stop = stop;
    Some(tokio::spawn(async move {
        loop {
            let notice = tokio::select! {
                n = notices.recv() => n,
                _ = stop.wait_for(|s| *s) => break,
            };
            match notice {
                Ok(n) if n.channel == CATALOG_CHANNEL => {
                    if let Err(e) = links.refresh_if_changed(store.as_ref()).await {
                        tracing::warn!("link cache refresh failed: {e}");
                    }
                }
                Ok(n) if n.channel == EVENTS_CHANNEL => receive_events(&events, &node, &n.payload),
                Ok(n) if n.channel == PRIVACY_CHANNEL => privacy.on_notice(&n.payload).await,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                    tracing::warn!("{k} notices from other nodes were missed; refreshing links");
                    if let Err(e) = links.refresh_if_changed(store.as_ref()).await {
                        tracing::warn!("link cache refresh failed: {e}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        sender.abort();
    }))
}

/// The payload of a NOTIFY on [`EVENTS_CHANNEL`].
#[derive(serde::Serialize, serde::Deserialize)]
struct Batch {
    node: String,
    events: Vec<serde_json::Value>,
}

fn receive_events(events: &EventHub, me: &str, payload: &str) {
    let Ok(batch) = serde_json::from_str::<Batch>(payload) else {
        tracing::warn!("ignoring a malformed live-event notice from another node");
        return;
    };
    if batch.node == me {
        return;
    }
    for e in batch.events {
        events.publish(LiveEvent::Remote(e));
    }
}

async fn send_events(
    store: Arc<dyn Store>,
    node: String,
    mut rx: mpsc::Receiver<Arc<Numbered>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: Vec<Arc<Numbered>> = Vec::new();
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut pending, 256) => n,
            _ = stop.wait_for(|s| *s) => return,
        };
        if n == 0 {
            return;
        }
        // Cut the events into payloads under the NOTIFY limit.
        let mut events: Vec<serde_json::Value> = Vec::new();
        let mut size = 64 + node.len();
        for e in pending.drain(..) {
            let Ok(v) = serde_json::to_value(&e.event) else {
                continue;
            };
            let len = v.to_string().len() + 1;
            if len + 64 + node.len() > PAYLOAD_MAX {
                metrics::counter!(telemetry::EVENTS_NOT_FORWARDED_TOTAL).increment(1);
                continue;
            }
            if size + len > PAYLOAD_MAX {
                send(&*store, &node, std::mem::take(&mut events)).await;
                size = 64 + node.len();
            }
            size += len;
            events.push(v);
        }
        if !events.is_empty() {
            send(&*store, &node, events).await;
        }
    }
}

async fn send(store: &dyn Store, node: &str, events: Vec<serde_json::Value>) {
    let k = events.len() as u64;
    let batch = Batch {
        node: node.to_owned(),
        events,
    };
    let Ok(payload) = serde_json::to_string(&batch) else {
        return;
    };
    if let Err(e) = store.publish(EVENTS_CHANNEL, payload).await {
        metrics::counter!(telemetry::EVENTS_NOT_FORWARDED_TOTAL).increment(k);
        tracing::debug!("live events not sent to other nodes: {e}");
    }
}
