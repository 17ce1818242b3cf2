//! Erasure and access requests (docs/privacy.md): a request is stored
//! first, carried out in one store transaction, then finished in memory
//! (this node's live buffer and click spool; other nodes through a cluster
//! notice). A request that could not be carried out stays received and is
//! retried every minute and at start, so it is never reported done before
//! it is.

use std::sync::Arc;

use clickward_core::Micros;
use clickward_store::{
    ClusterStore, Erased, HeldErasure, PRIVACY_CHANNEL, PrivacyStore, Receipt, RequestStatus,
    Spool, StoreError, Subject, SubjectData,
};

use super::events::EventHub;
use crate::clock::Clock;

/// The error a held erasure's receipt carries until the store has it.
pub const HELD: &str = "the shared store is unavailable: held on this node's disk, \
     carried out once the store is back (never reported done before it is)";

/// The share of the machine received erasures carried out in the
/// background may take (docs/privacy.md, "Speed"): redirects keep theirs.
const BATCH_PACE_SHARE: f64 = 0.04;

/// Received erasures carried out per store call (one scan of the clicks).
const RUN_CHUNK: usize = 10_000;

/// What every node drops from memory and its spool after an erasure (the
/// payload of a [`PRIVACY_CHANNEL`] notice; sent, never stored).
#[derive(serde::Serialize, serde::Deserialize)]
struct Forget {
    click_ids: Vec<clickward_core::id::ClickId>,
    conversion_ids: Vec<String>,
    visitor_keys: Vec<clickward_core::click::VisitorKey>,
    sub: Option<String>,
}

/// Erasures, exports and receipts.
pub struct PrivacyService<S: ?Sized> {
    store: Arc<S>,
    events: Arc<EventHub>,
    spool: Option<Spool>,
    clock: Arc<dyn Clock>,
    /// Held while received erasures are being carried out (one run at a
    /// time: a batch and the minute's retry never race each other).
    running: tokio::sync::Mutex<()>,
    /// Held while held erasures are handed over (one hand-over at a time).
    handing: tokio::sync::Mutex<()>,
}

impl<S: PrivacyStore + ClusterStore + ?Sized> PrivacyService<S> {
    /// A service over `store`, finishing erasures in `events` and `spool`.
    pub fn new(
        store: Arc<S>,
        events: Arc<EventHub>,
        spool: Option<Spool>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            events,
            spool,
            clock,
            running: tokio::sync::Mutex::new(()),
            handing: tokio::sync::Mutex::new(()),
        }
    }

    /// Stores an erasure of `subject` asked by `actor` and carries it out.
    /// The receipt is `done` with its counts, or `received` with the error
    /// of the attempt when the store failed half way (retried).
    ///
    /// # Errors
    /// When the request itself cannot be stored (nothing was received).
    pub async fn erase(&self, subject: Subject, actor: &str) -> Result<Receipt, StoreError> {
        let mut received = self.receive(vec![subject], actor).await?;
        let received = received
            .pop()
            .ok_or_else(|| StoreError::Task("no receipt".to_owned()))?;
        if received.error.as_deref() == Some(HELD) {
            return Ok(received);
        }
        let outcome = self
            .store
            .run_erasure(received.id.clone(), self.clock.now_micros())
            .await;
        match self.settle(&received.id, outcome).await {
            Ok(r) => Ok(r),
            Err(e) => Ok(Receipt {
                error: Some(e.to_string()),
                attempts: received.attempts + 1,
                ..received
            }),
        }
    }

    /// Stores erasures of `subjects` for the background run (a batch:
    /// carried out at once in the background, else within a minute or at
    /// the next start); their receipts, in order. While the shared store is
    /// unavailable, a node with a spool holds the rest on its own disk
    /// instead (their receipts stay `received` with [`HELD`] as the error)
    /// and hands them over once the store is back.
    ///
    /// # Errors
    /// When a request can be neither stored nor held (that one and the rest
    /// were not received; those before it were).
    pub async fn receive(
        &self,
        subjects: Vec<Subject>,
        actor: &str,
    ) -> Result<Vec<Receipt>, StoreError> {
        let mut out = Vec::with_capacity(subjects.len());
        let mut rest = subjects.into_iter();
        while let Some(subject) = rest.next() {
            let id = format!("era_{}", ulid::Ulid::generate());
            let now = self.clock.now_micros();
            let stored = self
                .store
                .receive_erasure(id.clone(), subject.clone(), actor.to_owned(), now)
                .await;
            match (stored, &self.spool) {
                (Ok(r), _) => out.push(r),
                (Err(StoreError::Unavailable(why)), Some(spool)) => {
                    tracing::warn!(
                        "the shared store is unavailable ({why}): erasures are held on this node"
                    );
                    let first = HeldErasure {
                        id,
                        subject,
                        actor: actor.to_owned(),
                        received_at: now,
                    };
                    let held: Vec<HeldErasure> = std::iter::once(first)
                        .chain(rest.map(|subject| HeldErasure {
                            id: format!("era_{}", ulid::Ulid::generate()),
                            subject,
                            actor: actor.to_owned(),
                            received_at: now,
                        }))
                        .collect();
                    spool.hold_erasures(held.clone()).await?;
                    out.extend(held.into_iter().map(|h| Receipt {
                        id: h.id,
                        subject: h.subject.kind().to_owned(),
                        status: RequestStatus::Received,
                        counts: None,
                        error: Some(HELD.to_owned()),
                        attempts: 0,
                        actor: h.actor,
                        received_at: h.received_at,
                        done_at: None,
                    }));
                    break;
                }
                (Err(e), _) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Hands the erasures held on this node (see [`PrivacyService::receive`])
    /// over to the store, then carries out what is pending; returns how
    /// many were handed over. Called every few seconds: a no-op while
    /// nothing is held, and while the store is still down.
    pub async fn hand_over(&self) -> usize {
        let Some(spool) = &self.spool else { return 0 };
        let Ok(_handing) = self.handing.try_lock() else {
            return 0;
        };
        let held = match spool.held_erasures().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("held erasures not read from the spool: {e}");
                return 0;
            }
        };
        let mut moved = 0;
        for h in held {
            let id = h.id.clone();
            if let Err(e) = self
                .store
                .receive_erasure(h.id, h.subject, h.actor, h.received_at)
                .await
            {
                tracing::debug!("held erasures wait for the store: {e}");
                break;
            }
            // Held twice at worst (stored, then a crash before this): the
            // store keeps the first.
            if let Err(e) = spool.release_erasure(id).await {
                tracing::warn!("a handed-over erasure stays in the spool (handed over again): {e}");
            }
            moved += 1;
        }
        if moved > 0 {
            tracing::info!("{moved} erasures held on this node handed over to the store");
            while self.retry_pending().await > 0 {}
        }
        moved
    }

    /// Finishes one run's outcome: in memory when it erased, noted on the
    /// request when it failed.
    async fn settle(
        &self,
        id: &str,
        outcome: Result<Erased, StoreError>,
    ) -> Result<Receipt, StoreError> {
        match outcome {
            Ok(e) => {
                self.finish(&e).await;
                Ok(e.receipt)
            }
            Err(e) => {
                // Corrupt stored data will not heal by itself: say so.
                let permanent = matches!(e, StoreError::Corrupt(_));
                tracing::warn!("erasure {id} not finished (retried: {}): {e}", !permanent);
                if let Err(e2) = self
                    .store
                    .erasure_attempt_failed(id.to_owned(), e.to_string(), permanent)
                    .await
                {
                    tracing::warn!("erasure {id}: the failed attempt was not noted: {e2}");
                }
                Err(e)
            }
        }
    }

    /// Drops what a finished run erased from this node's memory and spool,
    /// and tells the other nodes to do the same.
    async fn finish(&self, e: &Erased) {
        let Some(subject) = &e.subject else { return };
        let forget = Forget {
            click_ids: e.click_ids.clone(),
            conversion_ids: e.conversion_ids.iter().map(ToString::to_string).collect(),
            visitor_keys: e.visitor_keys.clone(),
            sub: match subject {
                Subject::Sub(v) => Some(v.clone()),
                _ => None,
            },
        };
        let (spooled, live) = self.forget_here(&forget).await;
        tracing::info!(
            "erasure {} done: {} clicks, {} conversions, {spooled} spooled clicks, {live} live events",
            e.receipt.id,
            e.click_ids.len(),
            e.conversion_ids.len()
        );
        match serde_json::to_string(&forget) {
            // A notice is at most 7,999 bytes; a subject with more ids than
            // that is finished on the other nodes by their spool shippers
            // (nothing spooled is older than the erasure's matches) and
            // their live buffers age out.
            Ok(p) if p.len() < 7_999 => {
                if let Err(err) = self.store.publish(PRIVACY_CHANNEL, p).await {
                    tracing::warn!("erasure {}: other nodes not told: {err}", e.receipt.id);
                }
            }
            Ok(_) => tracing::warn!(
                "erasure {}: too many ids for a notice; other nodes' live buffers keep them until they age out",
                e.receipt.id
            ),
            Err(_) => {}
        }
    }

    async fn forget_here(&self, f: &Forget) -> (u64, u64) {
        let live = self.events.forget(&f.click_ids, &f.conversion_ids);
        let spooled = match &self.spool {
            Some(spool) => spool
                .erase(f.visitor_keys.clone(), f.click_ids.clone(), f.sub.clone())
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!("the spool could not be searched for erased clicks: {e}");
                    0
                }),
            None => 0,
        };
        (spooled, live)
    }

    /// A [`PRIVACY_CHANNEL`] notice from a node that finished an erasure.
    pub async fn on_notice(&self, payload: &str) {
        match serde_json::from_str::<Forget>(payload) {
            Ok(f) => {
                self.forget_here(&f).await;
            }
            Err(_) => tracing::warn!("ignoring a malformed erasure notice from another node"),
        }
    }

    /// Carries out every received erasure (after a batch, at start and
    /// every minute), oldest first, one at a time; returns how many
    /// finished. A call while another runs returns 0 at once (that one
    /// reads the list again when it is done).
    pub async fn retry_pending(&self) -> usize {
        let Ok(_running) = self.running.try_lock() else {
            return 0;
        };
        let pending = match self.store.pending_erasures().await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("pending erasures not read: {e}");
                return 0;
            }
        };
        let mut done = 0;
        // One pass over the clicks finds a whole chunk's visitors (the
        // store runs each erasure in its own transaction, redirects taking
        // their turns between them).
        for chunk in pending.chunks(RUN_CHUNK) {
            let outcomes = match self
                .store
                .run_erasures(
                    chunk.to_vec(),
                    self.clock.now_micros(),
                    clickward_store::Pace::share(BATCH_PACE_SHARE),
                )
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!("received erasures not carried out (retried in a minute): {e}");
                    return done;
                }
            };
            for (id, outcome) in chunk.iter().zip(outcomes) {
                if self.settle(id, outcome).await.is_ok() {
                    done += 1;
                }
            }
            tokio::task::yield_now().await;
        }
        done
    }

    /// One receipt.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn receipt(&self, id: &str) -> Result<Option<Receipt>, StoreError> {
        self.store.receipt(id.to_owned()).await
    }

    /// The newest receipts, newest first; with `before` (a receipt id),
    /// those older than it.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn receipts(
        &self,
        before: Option<String>,
        limit: u32,
    ) -> Result<Vec<Receipt>, StoreError> {
        self.store.receipts(before, limit).await
    }

    /// Everything stored about `subject`.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn export(&self, subject: Subject) -> Result<SubjectData, StoreError> {
        self.store.subject_data(subject).await
    }

    /// Applies `[retention]` (hourly): each kept period in µs, `None`
    /// keeps forever. Purges run in batches of 10,000 rows with a yield
    /// between them, so the redirect path keeps its share of the store.
    /// Returns rows changed per kind: conversion fields, webhook and e-mail
    /// deliveries, postback deliveries, receipts.
    pub async fn apply_retention(&self, keep: [Option<Micros>; 4]) -> [u64; 4] {
        use clickward_core::delivery::EndpointKind;
        const BATCH: u32 = 10_000;
        let now = self.clock.now_micros();
        let mut done = [0u64; 4];
        let [fields, deliveries, postbacks, receipts] = keep;
        let before = |k: Option<Micros>| k.map(|k| now.saturating_sub(k));
        if let Some(b) = before(fields) {
            done[0] = drain(|| self.store.purge_conversion_fields(b, BATCH)).await;
        }
        if let Some(b) = before(deliveries) {
            for kind in [EndpointKind::Webhook, EndpointKind::Email] {
                done[1] += drain(|| self.store.purge_deliveries(kind, b, BATCH)).await;
            }
        }
        if let Some(b) = before(postbacks) {
            done[2] = drain(|| {
                self.store
                    .purge_deliveries(EndpointKind::Postback, b, BATCH)
            })
            .await;
        }
        if let Some(b) = before(receipts) {
            done[3] = self.store.purge_receipts(b).await.unwrap_or_else(|e| {
                tracing::warn!("retention: receipts not purged: {e}");
                0
            });
        }
        if done.iter().any(|n| *n > 0) {
            tracing::info!(
                "retention: {} conversions' raw fields cleared, {} webhook and e-mail deliveries, {} postback deliveries and {} receipts deleted",
                done[0],
                done[1],
                done[2],
                done[3]
            );
        }
        done
    }
}

/// Runs a batch purge until it finds nothing (or fails); the rows changed.
async fn drain<F, Fut>(mut batch: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        match batch().await {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) => {
                tracing::warn!("retention purge stopped (retried next hour): {e}");
                return total;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// A request's selector as given (API body or query, CLI flags): exactly
/// one of the fields, `program` only with `order_id`.
#[derive(utoipa::ToSchema, utoipa::IntoParams, Debug, Default, serde::Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// The `cw_vid` cookie's value as the visitor's browser holds it.
    pub visitor: Option<String>,
    /// A visitor key, 32 hex characters (as `GET /api/v1/clicks` shows it).
    pub visitor_key: Option<String>,
    /// A click id.
    pub click_id: Option<String>,
    /// A merchant's order id.
    pub order_id: Option<String>,
    /// The program of `order_id` (slug).
    pub program: Option<String>,
    /// A conversion id.
    pub conversion_id: Option<String>,
    /// A value of sub1..sub5 (or adv_sub1..adv_sub5), exactly.
    pub sub: Option<String>,
}

impl Selector {
    /// The subject; `open_cookie` unseals a `cw_vid` value.
    ///
    /// # Errors
    /// A sentence naming the field: none or several given, a cookie this
    /// server did not issue, a malformed id or key.
    pub fn subject(&self, open_cookie: impl Fn(&str) -> Option<String>) -> Result<Subject, String> {
        let given = [
            self.visitor.is_some(),
            self.visitor_key.is_some(),
            self.click_id.is_some(),
            self.order_id.is_some(),
            self.conversion_id.is_some(),
            self.sub.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err(
                "give exactly one of visitor, visitor_key, click_id, order_id, conversion_id, sub"
                    .to_owned(),
            );
        }
        if self.program.is_some() && self.order_id.is_none() {
            return Err("program narrows order_id only".to_owned());
        }
        let nonempty = |name: &str, v: &str| {
            let t = v.trim();
            if t.is_empty() || t.len() > 1024 {
                Err(format!("{name}: empty or over 1,024 bytes"))
            } else {
                Ok(t.to_owned())
            }
        };
        if let Some(v) = &self.visitor {
            let v = nonempty("visitor", v)?;
            // Browsers and tools may hand over the value percent-encoded.
            let decoded = percent_encoding::percent_decode_str(&v)
                .decode_utf8()
                .map(|d| d.into_owned())
                .unwrap_or(v.clone());
            // A raw value pasted into a query string has its `+` read as
            // spaces; base64 holds no spaces.
            let key = open_cookie(&decoded)
                .or_else(|| open_cookie(&v))
                .or_else(|| open_cookie(&v.replace(' ', "+")))
                .and_then(|hex| clickward_core::click::VisitorKey::from_hex(&hex))
                .ok_or("visitor: not a cw_vid cookie value this server issued (tampered, cut short, or from another installation)")?;
            return Ok(Subject::Visitor(key));
        }
        if let Some(v) = &self.visitor_key {
            return clickward_core::click::VisitorKey::from_hex(v.trim())
                .map(Subject::Visitor)
                .ok_or_else(|| "visitor_key: not 32 hex characters".to_owned());
        }
        if let Some(v) = &self.click_id {
            return v.trim().parse().map(Subject::Click).map_err(|_| {
                "click_id: not a click id (26 characters of Crockford base32)".to_owned()
            });
        }
        if let Some(v) = &self.order_id {
            return Ok(Subject::Order {
                order_id: nonempty("order_id", v)?,
                program: self.program.as_ref().map(|p| p.trim().to_owned()),
            });
        }
        if let Some(v) = &self.conversion_id {
            return v.trim().parse().map(Subject::Conversion).map_err(|_| {
                "conversion_id: not a conversion id (26 characters of Crockford base32)".to_owned()
            });
        }
        Ok(Subject::Sub(nonempty(
            "sub",
            self.sub.as_deref().unwrap_or_default(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_takes_exactly_one_subject_and_names_what_is_wrong() {
        let none = |_: &str| None;
        assert!(
            Selector::default()
                .subject(none)
                .unwrap_err()
                .contains("exactly one")
        );
        let two = Selector {
            sub: Some("a".into()),
            click_id: Some("b".into()),
            ..Selector::default()
        };
        assert!(two.subject(none).unwrap_err().contains("exactly one"));
        let bad = Selector {
            visitor: Some("forged".into()),
            ..Selector::default()
        };
        assert!(bad.subject(none).unwrap_err().starts_with("visitor:"));
        let ok = Selector {
            visitor: Some("sealed%3D".into()),
            ..Selector::default()
        };
        let hex = "00112233445566778899aabbccddeeff";
        let subject = ok
            .subject(|v| (v == "sealed=").then(|| hex.to_owned()))
            .unwrap();
        assert_eq!(subject.kind(), "visitor");
        let stray = Selector {
            program: Some("shop".into()),
            sub: Some("x".into()),
            ..Selector::default()
        };
        assert!(stray.subject(none).unwrap_err().contains("order_id only"));
        let order = Selector {
            order_id: Some(" A-1 ".into()),
            program: Some("shop".into()),
            ..Selector::default()
        };
        assert_eq!(
            order.subject(none).unwrap(),
            Subject::Order {
                order_id: "A-1".into(),
                program: Some("shop".into())
            }
        );
    }
}
