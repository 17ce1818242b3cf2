//! Live events: one per click and per conversion change, fanned out to
//! Server-Sent-Events subscribers.
//!
//! Publishing never waits: events go into a bounded ring (for resumption)
//! and a broadcast channel. A subscriber that falls more than the channel's
//! capacity behind is dropped with a logged reason; the redirect is never
//! slowed by a reader.
//!
//! Ids are consecutive integers that start, at each process start, at the
//! Unix time in µs, so they grow across restarts (a process would need to
//! publish more than one event per µs of its life to overlap the next).
//! `Last-Event-ID` resumes without gaps while the ring still holds the next
//! event; older than that, the stream starts with a `gap` event saying how
//! many were missed. An id this process never issued (one from before a
//! restart, or another node's) cannot be resumed: the stream starts with a
//! `gap` event whose count is unknown, then goes on live.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use clickward_core::id::ClickId;
use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for resumption.
pub const RING: usize = 10_000;
/// Events a subscriber may fall behind before it is dropped.
pub const LAG: usize = 4_096;

/// One live event. Never carries an IP.
// Events live behind `Arc`s in the ring; the variants' size difference costs
// nothing worth an extra allocation per click.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A recorded click.
    Click {
        /// Click id (a ULID string in JSON).
        click_id: ClickId,
        /// UTC µs.
        ts: i64,
        /// Link code.
        link: Arc<str>,
        /// Program slug.
        program: Arc<str>,
        /// Affiliate slug.
        affiliate: Option<Arc<str>>,
        /// Placement.
        src: Option<String>,
        /// sub1..sub5.
        subs: [Option<String>; 5],
        /// Device class.
        device: &'static str,
        /// OS family.
        os: Option<String>,
        /// Browser family.
        browser: Option<String>,
        /// Country code.
        country: Option<String>,
        /// Normalized referrer (no query or fragment), as stored.
        referrer: Option<String>,
        /// Bot reason; `None` for a human click.
        bot_reason: Option<&'static str>,
        /// The fraud verdict (flag, reject, block) with rule and reason.
        verdict: Option<clickward_core::fraud::Verdict>,
        /// How the pipeline took it: `recorded`, `unconfirmed`, `dropped`.
        outcome: &'static str,
        /// Time to answer the redirect, µs.
        redirect_us: u64,
    },
    /// A conversion created or changed.
    Conversion {
        /// The conversion as the API shows it.
        conversion: serde_json::Value,
        /// `created`, `approved`, `rejected`, `reversed`, `paid`.
        change: String,
    },
    /// An event of another node sharing the PostgreSQL store, as that node
    /// serialized it (a `click` or `conversion` object).
    #[serde(untagged)]
    Remote(serde_json::Value),
}

/// A published event with its id.
#[derive(Debug)]
pub struct Numbered {
    /// Consecutive id.
    pub id: u64,
    /// The event.
    pub event: LiveEvent,
}

/// Whether `e` is about one of the clicks or conversions (ids as text).
fn about(e: &LiveEvent, click_ids: &[ClickId], conversion_ids: &[String]) -> bool {
    let about_conversion = |c: &serde_json::Value| {
        let id = |k: &str| c.get(k).and_then(serde_json::Value::as_str);
        id("conversion_id").is_some_and(|i| conversion_ids.iter().any(|x| x == i))
            || id("click_id").is_some_and(|i| click_ids.iter().any(|x| x.to_string() == i))
    };
    match e {
        LiveEvent::Click { click_id, .. } => click_ids.contains(click_id),
        LiveEvent::Conversion { conversion, .. } => about_conversion(conversion),
        LiveEvent::Remote(v) => {
            v.get("click_id")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|i| click_ids.iter().any(|x| x.to_string() == i))
                || v.get("conversion").is_some_and(about_conversion)
        }
    }
}

/// The hub. Cheap to share (`Arc`).
pub struct EventHub {
    /// The first id this process issues.
    first: u64,
    next: AtomicU64,
    ring: Mutex<VecDeque<Arc<Numbered>>>,
    tx: broadcast::Sender<Arc<Numbered>>,
    /// With a shared store: this node's own events, for the other nodes.
    outbox: std::sync::OnceLock<tokio::sync::mpsc::Sender<Arc<Numbered>>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// An empty hub whose ids start at the Unix time in µs (see the module
    /// docs).
    pub fn new() -> Self {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        Self::starting_at(now_us.max(1))
    }

    /// An empty hub whose first id is `first` (≥ 1).
    pub fn starting_at(first: u64) -> Self {
        let (tx, _) = broadcast::channel(LAG);
        Self {
            first: first.max(1),
            next: AtomicU64::new(first.max(1)),
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            tx,
            outbox: std::sync::OnceLock::new(),
        }
    }

    /// From now on, hands each event this node publishes to `outbox` too
    /// (never waiting: when it is full the event stays local and is counted).
    /// Events of other nodes ([`LiveEvent::Remote`]) are not handed on.
    pub fn forward_to(&self, outbox: tokio::sync::mpsc::Sender<Arc<Numbered>>) {
        let _ = self.outbox.set(outbox);
    }

    /// Publishes an event; never blocks on readers.
    pub fn publish(&self, event: LiveEvent) {
        // Single node (no outbox): nothing more than the ring and the channel.
        let outbox = self
            .outbox
            .get()
            .filter(|_| !matches!(event, LiveEvent::Remote(_)));
        let n = self.publish_here(event, outbox.is_some());
        if let (Some(n), Some(out)) = (n, outbox)
            && out.try_send(n).is_err()
        {
            metrics::counter!(crate::telemetry::EVENTS_NOT_FORWARDED_TOTAL).increment(1);
        }
    }

    /// Rings and broadcasts; returns the event when `keep` (to forward it).
    fn publish_here(&self, event: LiveEvent, keep: bool) -> Option<Arc<Numbered>> {
        // The ring lock orders ids and ring entries; it is held for a push.
        let Ok(mut ring) = self.ring.lock() else {
            return None;
        };
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let n = Arc::new(Numbered { id, event });
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(n.clone());
        // No receivers is fine: the ring keeps it for a later resume.
        let kept = keep.then(|| n.clone());
        let _ = self.tx.send(n);
        kept
    }

    /// Drops buffered events about erased clicks and conversions (an
    /// erasure): a client resuming later does not get them replayed (it is
    /// told they were missed). Returns how many were dropped.
    pub fn forget(&self, click_ids: &[ClickId], conversion_ids: &[String]) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let before = ring.len();
        ring.retain(|n| !about(&n.event, click_ids, conversion_ids));
        (before - ring.len()) as u64
    }

    /// Subscribes, resuming after `last_id` when given. Returns the events to
    /// replay first, how many were lost before them (older than the ring),
    /// and the live receiver; events in the receiver with ids already
    /// replayed must be skipped by the caller (see [`Subscription`]).
    pub fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        let (rx, replay, next_live, ours) = {
            let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            // Subscribing under the lock: no event can fall between the
            // snapshot and the receiver.
            let rx = self.tx.subscribe();
            let next_live = self.next.load(Ordering::SeqCst);
            // Only ids this process issued can be resumed.
            let ours = last_id.filter(|&l| l.saturating_add(1) >= self.first && l < next_live);
            let replay: Vec<Arc<Numbered>> = match ours {
                Some(last) => ring.iter().filter(|n| n.id > last).cloned().collect(),
                None => Vec::new(),
            };
            (rx, replay, next_live, ours)
        };
        let missed = match (ours, replay.first()) {
            (Some(last), Some(first)) => Some(first.id.saturating_sub(last + 1)),
            (Some(last), None) => Some(next_live.saturating_sub(last + 1)),
            (None, _) if last_id.is_some() => None,
            (None, _) => Some(0),
        };
        Subscription {
            replay,
            missed,
            resume_after: ours.unwrap_or(next_live - 1),
            rx,
        }
    }
}

/// A new subscription.
pub struct Subscription {
    /// Events to send first, oldest first.
    pub replay: Vec<Arc<Numbered>>,
    /// Events that were asked for but are no longer kept; `None` when the
    /// resumed id is not one this process issued (how many is unknown).
    pub missed: Option<u64>,
    /// The id the stream continues after: live events with this id or
    /// lower were replayed already (or precede the subscription).
    pub resume_after: u64,
    /// Live events.
    pub rx: broadcast::Receiver<Arc<Numbered>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(n: u64) -> LiveEvent {
        LiveEvent::Conversion {
            conversion: serde_json::json!({ "n": n }),
            change: "created".into(),
        }
    }

    #[test]
    fn resume_replays_exactly_what_was_missed() {
        let hub = EventHub::starting_at(1);
        for n in 0..5 {
            hub.publish(conv(n));
        }
        let s = hub.subscribe(Some(2));
        assert_eq!(
            s.replay.iter().map(|n| n.id).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(s.missed, Some(0));
        let s = hub.subscribe(Some(5));
        assert!(s.replay.is_empty());
        assert_eq!(s.missed, Some(0));
    }

    #[test]
    fn too_old_a_resume_reports_the_gap() {
        let hub = EventHub::starting_at(1);
        for n in 0..(RING as u64 + 10) {
            hub.publish(conv(n));
        }
        let s = hub.subscribe(Some(3));
        assert_eq!(s.replay.first().map(|n| n.id), Some(11));
        assert_eq!(s.missed, Some(7));
    }

    #[test]
    fn an_id_this_process_never_issued_is_an_unknown_gap_then_live() {
        let hub = EventHub::starting_at(1_000);
        for n in 0..3 {
            hub.publish(conv(n));
        }
        // From before a restart, and from the future (another node).
        for last in [5, 999_999] {
            let s = hub.subscribe(Some(last));
            assert!(s.replay.is_empty());
            assert_eq!(s.missed, None, "{last}");
            assert_eq!(s.resume_after, 1_002, "{last}");
        }
        // The last id before the first is ours to resume from.
        let s = hub.subscribe(Some(999));
        assert_eq!(s.replay.len(), 3);
        assert_eq!(s.missed, Some(0));
    }
}
