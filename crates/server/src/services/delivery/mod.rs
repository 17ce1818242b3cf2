//! Outbound delivery: webhooks (merchant side) and affiliate postbacks
//! (partner side), sent from the transactional outbox, at least once, with
//! a stable id, retried on a schedule, dead-lettered, replayable.
//!
//! The pipeline, modelled on vector's sinks:
//! - **dispatch** (store): outbox events past a cursor become one delivery
//!   per endpoint that wants them, in one transaction with the cursor;
//! - **lease** (store): due deliveries are leased to this node (PostgreSQL:
//!   `FOR UPDATE SKIP LOCKED`), so two nodes never send the same attempt;
//! - **build** ([`sink`]): a delivery becomes a signed Standard Webhooks
//!   request or an expanded postback URL;
//! - **send** ([`http`]): one attempt through the guarded client;
//! - **classify** (`clickward_core::delivery`): delivered, retry at the
//!   next step of the schedule, dead letter, or 410 (endpoint disabled);
//!   the store records the attempt and moves the delivery.
//!
//! [`DeliveryService`] is what the API, the CLI, the dashboard and the
//! portal call to manage endpoints and replay deliveries.

pub mod http;
pub mod sink;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickward_core::Micros;
use clickward_core::delivery::{
    self as rules, AttemptVerdict, EndpointError, EndpointKind, UrlTemplate,
};
use clickward_core::id::Slug;
use clickward_store::{
    AttemptNext, AttemptRecord, AttemptRow, DeliveryQuery, DeliveryRow, Endpoint, EndpointChange,
    HttpMethod, LeasedDelivery, NewEndpoint, Store, StoreError,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::services::mail::Mailer;
use crate::telemetry;
use http::Outbound;

/// How the worker sends (from `[outbound]`).
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Waits before the 2nd, 3rd, … attempt.
    pub retry: Vec<Duration>,
    /// Attempts in flight on this node.
    pub concurrency: usize,
    /// Attempts in flight to one endpoint.
    pub per_endpoint: usize,
    /// How long a lease lasts.
    pub lease: Duration,
    /// How often the outbox and the due deliveries are looked at.
    pub poll: Duration,
}

/// Why an endpoint change was refused (each a 4xx for the API).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Bad settings: the sentence names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such endpoint, program, affiliate or delivery.
    #[error("{0} not found")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DeliveryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => DeliveryError::NotFound(what),
            other => DeliveryError::Store(other),
        }
    }
}

/// What [`DeliveryService::act`] did.
#[derive(Debug)]
pub enum ActionDone {
    /// Disabled or enabled: the endpoint now.
    Changed(Endpoint),
    /// A new secret (shown once) and the endpoint.
    Rotated(Endpoint, String),
    /// A `webhook.test` delivery queued, by id.
    Tested(i64),
}

/// What an endpoint is told to be, from the API, CLI, dashboard or portal.
#[derive(utoipa::ToSchema, Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// A webhook URL, or a postback URL template (`{click_id}`, `{sub1}` …);
    /// absolute http(s). Required on create.
    #[schema(pattern = r"^https?://[^\s/?#]+")]
    pub url: Option<String>,
    /// `GET` or `POST` (postbacks; webhooks are always `POST`).
    #[schema(pattern = "^(GET|POST)$")]
    pub method: Option<String>,
    /// Event filter: `*`, `conversion.*`, `payout.created`, …
    #[schema(schema_with = clickward_core::schema::event_filter)]
    pub events: Option<Vec<String>>,
    /// Only events about this program.
    #[schema(value_type = Option<clickward_core::id::Slug>)]
    pub program: Option<String>,
    /// Only events about this affiliate (a postback's owner).
    #[schema(value_type = Option<clickward_core::id::Slug>)]
    pub affiliate: Option<String>,
    /// Free text.
    pub description: Option<String>,
}

/// The events a postback fires on when none are named.
pub const DEFAULT_POSTBACK_EVENTS: [&str; 1] = ["conversion.created"];

/// The longest description kept, characters.
const MAX_DESCRIPTION: usize = 500;

/// Endpoint management and replays.
#[derive(Clone)]
pub struct DeliveryService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    outbound: Outbound,
}

impl DeliveryService {
    /// A service over `store`; `outbound` judges URLs as the sender will.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, outbound: Outbound) -> Self {
        Self {
            store,
            clock,
            outbound,
        }
    }

    fn check_url(&self, url: &str, kind: EndpointKind) -> Result<(), DeliveryError> {
        let template = UrlTemplate::parse(url, kind)
            .map_err(|e| DeliveryError::Invalid(format!("url: {e}")))?;
        // Judge the URL with every macro empty: the host is fixed.
        if let Some(why) = self.outbound.refusal(&template.expand(|_| None)) {
            return Err(DeliveryError::Invalid(format!("url: {why}")));
        }
        Ok(())
    }

    fn check_events(events: &[String], kind: EndpointKind) -> Result<(), DeliveryError> {
        rules::check_filter(events).map_err(|e| DeliveryError::Invalid(format!("events: {e}")))?;
        if kind == EndpointKind::Postback
            && let Some(bad) = events
                .iter()
                .find(|e| !(e.starts_with("conversion.") || e.as_str() == "conversion.*"))
        {
            return Err(DeliveryError::Invalid(format!(
                "events: {}",
                EndpointError::NotConversion(bad.clone())
            )));
        }
        Ok(())
    }

    fn method(kind: EndpointKind, given: Option<&str>) -> Result<HttpMethod, DeliveryError> {
        let m = match given {
            None => match kind {
                EndpointKind::Webhook | EndpointKind::Email => HttpMethod::Post,
                EndpointKind::Postback => HttpMethod::Get,
            },
            Some(t) => HttpMethod::parse(t).ok_or_else(|| {
                DeliveryError::Invalid(format!("method: {t:?} is neither GET nor POST"))
            })?,
        };
        if kind == EndpointKind::Webhook && m != HttpMethod::Post {
            return Err(DeliveryError::Invalid(
                "method: a webhook is always sent as POST".to_owned(),
            ));
        }
        Ok(m)
    }

    fn description(d: Option<String>) -> Result<Option<String>, DeliveryError> {
        match d {
            Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(DeliveryError::Invalid(format!(
                "description: at most {MAX_DESCRIPTION} characters"
            ))),
            Some(d) => Ok(Some(clickward_core::clean_text(&d, MAX_DESCRIPTION))),
            None => Ok(None),
        }
    }

    /// Adds an endpoint of `kind`; returns it and its signing secret
    /// (`whsec_…`, shown once). A postback must name its affiliate.
    ///
    /// # Errors
    /// [`DeliveryError::Invalid`] naming the field; `NotFound` for an
    /// unknown program or affiliate.
    pub async fn add(
        &self,
        kind: EndpointKind,
        spec: EndpointSpec,
    ) -> Result<(Endpoint, String), DeliveryError> {
        if kind == EndpointKind::Email {
            return Err(DeliveryError::Invalid(
                "the e-mail endpoint is made by [mail] in the config".to_owned(),
            ));
        }
        let url = spec
            .url
            .ok_or_else(|| DeliveryError::Invalid("url: required".to_owned()))?;
        self.check_url(&url, kind)?;
        let method = Self::method(kind, spec.method.as_deref())?;
        let events = spec.events.unwrap_or_else(|| match kind {
            EndpointKind::Webhook | EndpointKind::Email => vec!["*".to_owned()],
            EndpointKind::Postback => DEFAULT_POSTBACK_EVENTS.map(String::from).to_vec(),
        });
        Self::check_events(&events, kind)?;
        let slug = |field: &str, v: Option<String>| {
            v.map(|s| Slug::parse(&s).map_err(|e| DeliveryError::Invalid(format!("{field}: {e}"))))
                .transpose()
        };
        let program = slug("program", spec.program)?;
        let affiliate = slug("affiliate", spec.affiliate)?;
        if kind == EndpointKind::Postback && affiliate.is_none() {
            return Err(DeliveryError::Invalid(
                "affiliate: a postback belongs to one affiliate".to_owned(),
            ));
        }
        let secret = new_secret();
        let e = self
            .store
            .create_endpoint(NewEndpoint {
                kind,
                url,
                method,
                events,
                program,
                affiliate,
                description: Self::description(spec.description)?.unwrap_or_default(),
                secret: secret.clone(),
            })
            .await?;
        Ok((e, secret))
    }

    /// Makes the built-in e-mail endpoint exist and be enabled when a relay
    /// is configured (`mail`), and disables it when none is (its mail
    /// waits, and is sent once a relay is configured and it is enabled).
    ///
    /// # Errors
    /// The store's.
    pub async fn ensure_mail_endpoint(&self, mail: bool) -> Result<(), DeliveryError> {
        let existing = self
            .store
            .endpoints(None)
            .await?
            .into_iter()
            .find(|e| e.kind == EndpointKind::Email);
        match (existing, mail) {
            (None, true) => {
                self.store
                    .create_endpoint(NewEndpoint {
                        kind: EndpointKind::Email,
                        url: "mailto:".to_owned(),
                        method: HttpMethod::Post,
                        events: crate::services::mail::MAIL_EVENTS
                            .map(String::from)
                            .to_vec(),
                        program: None,
                        affiliate: None,
                        description: "e-mail through the [mail] relay".to_owned(),
                        secret: new_secret(),
                    })
                    .await?;
            }
            (Some(e), true) if !e.enabled && e.disabled_reason.as_deref() == Some(NO_RELAY) => {
                self.set_enabled(&e.id, true, "the config").await?;
            }
            (Some(e), false) if e.enabled => {
                self.update(
                    &e.id,
                    EndpointChange {
                        enabled: Some((false, NO_RELAY.to_owned())),
                        ..EndpointChange::default()
                    },
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Changes an endpoint's URL, method, events or description (its
    /// program and affiliate filters stay).
    ///
    /// # Errors
    /// As [`DeliveryService::add`]; `NotFound` for an unknown endpoint.
    pub async fn change(&self, id: &str, spec: EndpointSpec) -> Result<Endpoint, DeliveryError> {
        let e = self.get(id).await?;
        if spec.program.is_some() || spec.affiliate.is_some() {
            return Err(DeliveryError::Invalid(
                "program and affiliate filters cannot change; add a new endpoint".to_owned(),
            ));
        }
        if let Some(url) = &spec.url {
            self.check_url(url, e.kind)?;
        }
        let method = match &spec.method {
            Some(m) => Some(Self::method(e.kind, Some(m))?),
            None => None,
        };
        if let Some(ev) = &spec.events {
            Self::check_events(ev, e.kind)?;
        }
        let change = EndpointChange {
            url: spec.url,
            method,
            events: spec.events,
            description: Self::description(spec.description)?,
            ..EndpointChange::default()
        };
        self.update(id, change).await
    }

    async fn update(&self, id: &str, change: EndpointChange) -> Result<Endpoint, DeliveryError> {
        self.store
            .update_endpoint(id.to_owned(), change)
            .await?
            .ok_or_else(|| DeliveryError::NotFound(format!("endpoint {id:?}")))
    }

    /// One endpoint.
    ///
    /// # Errors
    /// `NotFound`, or the store's error.
    pub async fn get(&self, id: &str) -> Result<Endpoint, DeliveryError> {
        self.store
            .endpoint(id.to_owned())
            .await?
            .ok_or_else(|| DeliveryError::NotFound(format!("endpoint {id:?}")))
    }

    /// Endpoints, newest first; with `affiliate`, only its own.
    ///
    /// # Errors
    /// The store's error.
    pub async fn list(&self, affiliate: Option<Slug>) -> Result<Vec<Endpoint>, DeliveryError> {
        Ok(self.store.endpoints(affiliate).await?)
    }

    /// Enables (clearing its failure record) or disables an endpoint.
    ///
    /// # Errors
    /// `NotFound`, or the store's error.
    pub async fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
        who: &str,
    ) -> Result<Endpoint, DeliveryError> {
        let reason = format!("disabled by {who}");
        self.update(
            id,
            EndpointChange {
                enabled: Some((enabled, reason)),
                ..EndpointChange::default()
            },
        )
        .await
    }

    /// Runs an endpoint action by its name in the API, CLI, dashboard and
    /// portal: `disable`, `enable`, `rotate-secret`, `test`.
    ///
    /// # Errors
    /// `NotFound` for an unknown endpoint or action; the store's error.
    pub async fn act(
        &self,
        id: &str,
        action: &str,
        who: &str,
    ) -> Result<ActionDone, DeliveryError> {
        Ok(match action {
            "disable" => ActionDone::Changed(self.set_enabled(id, false, who).await?),
            "enable" => ActionDone::Changed(self.set_enabled(id, true, who).await?),
            "rotate-secret" => {
                let (e, secret) = self.rotate_secret(id).await?;
                ActionDone::Rotated(e, secret)
            }
            "test" => ActionDone::Tested(self.test(id).await?),
            other => {
                return Err(DeliveryError::NotFound(format!(
                    "action {other:?} (one of disable, enable, rotate-secret, test)"
                )));
            }
        })
    }

    /// A new signing secret; the old one keeps signing beside it for 24 h
    /// (receivers accept either while they switch). Returns the new secret.
    ///
    /// # Errors
    /// `NotFound`, or the store's error.
    pub async fn rotate_secret(&self, id: &str) -> Result<(Endpoint, String), DeliveryError> {
        let secret = new_secret();
        let until = SystemClock.now_micros() + ROTATION_OVERLAP_US;
        let e = self
            .update(
                id,
                EndpointChange {
                    rotate: Some((secret.clone(), until)),
                    ..EndpointChange::default()
                },
            )
            .await?;
        Ok((e, secret))
    }

    /// Queues a `webhook.test` event to one endpoint; returns the delivery id.
    ///
    /// # Errors
    /// `NotFound`, or the store's error.
    pub async fn test(&self, id: &str) -> Result<i64, DeliveryError> {
        let e = self.get(id).await?;
        let event_id = clickward_core::event::event_id_text(ulid::Ulid::generate());
        let payload = serde_json::json!({
            "v": clickward_core::event::PAYLOAD_VERSION,
            "webhook": { "id": e.id, "kind": e.kind.as_str(), "description": e.description },
            // What a postback's macros take, so a template can be tried.
            "conversion": {
                "conversion_id": "test", "click_id": "test", "order_id": "test", "event": "sale",
                "status": "pending", "amount_minor": 1000, "commission_minor": 100, "currency": "USD",
                "program": e.program, "affiliate": e.affiliate, "subs": [null, null, null, null, null],
                "occurred_at": self.clock.now_micros(),
            }
        });
        Ok(self
            .store
            .enqueue(
                e.id,
                event_id,
                clickward_core::event::WEBHOOK_TEST.to_owned(),
                payload,
                self.clock.now_micros(),
            )
            .await?)
    }

    /// Deliveries, newest first.
    ///
    /// # Errors
    /// The store's error.
    pub async fn deliveries(&self, q: DeliveryQuery) -> Result<Vec<DeliveryRow>, DeliveryError> {
        Ok(self.store.deliveries(q).await?)
    }

    /// One delivery with its attempts.
    ///
    /// # Errors
    /// `NotFound`, or the store's error.
    pub async fn delivery(&self, id: i64) -> Result<(DeliveryRow, Vec<AttemptRow>), DeliveryError> {
        self.store
            .delivery(id)
            .await?
            .ok_or_else(|| DeliveryError::NotFound(format!("delivery {id}")))
    }

    /// Sends a delivery again now (a dead letter too).
    ///
    /// # Errors
    /// `NotFound`, or the store's error.
    pub async fn replay(&self, id: i64) -> Result<(), DeliveryError> {
        if self
            .store
            .replay_delivery(id, self.clock.now_micros())
            .await?
        {
            Ok(())
        } else {
            Err(DeliveryError::NotFound(format!("delivery {id}")))
        }
    }

    /// Sends every event of `patterns` from `from` to `to` (UTC µs) to
    /// endpoint `id` again; returns how many.
    ///
    /// # Errors
    /// A bad filter or range, `NotFound`, or the store's error.
    pub async fn replay_range(
        &self,
        id: &str,
        patterns: Vec<String>,
        from: Micros,
        to: Micros,
    ) -> Result<u64, DeliveryError> {
        rules::check_filter(&patterns)
            .map_err(|e| DeliveryError::Invalid(format!("events: {e}")))?;
        if from >= to {
            return Err(DeliveryError::Invalid("from must be before to".to_owned()));
        }
        Ok(self
            .store
            .replay_events(id.to_owned(), patterns, from, to, self.clock.now_micros())
            .await?)
    }
}

/// Why the e-mail endpoint is disabled when no relay is configured.
const NO_RELAY: &str = "no [mail] relay is configured";

/// How long a rotated-out secret keeps signing beside the new one: 24 h.
pub const ROTATION_OVERLAP_US: Micros = 24 * 3_600_000_000;

/// A signing secret: `whsec_` + base64 of 24 random bytes (the Standard
/// Webhooks format).
pub fn new_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes[..]);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Starts the delivery worker: dispatches the outbox, leases due
/// deliveries and sends them until `stopped`. Attempts in flight when it
/// stops are abandoned: their leases expire (or, on SQLite, are released
/// at the next start) and they are sent again with the same id.
pub fn spawn_worker(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    outbound: Outbound,
    mailer: Option<Arc<Mailer>>,
    settings: DeliverySettings,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let owner = format!("node-{}", ulid::Ulid::generate());
        if let Err(e) = store.release_leases().await {
            tracing::warn!("releasing delivery leases of the last run failed: {e}");
        }
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        let per_endpoint: Arc<Mutex<HashMap<String, Arc<Semaphore>>>> = Arc::default();
        let mut tick = tokio::time::interval(settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lease_us = i64::try_from(settings.lease.as_micros()).unwrap_or(i64::MAX / 4);
        let settings = Arc::new(settings);
        loop {
            tokio::select! {
                _ = async { let _ = stopped.wait_for(|s| *s).await; } => return,
                _ = tick.tick() => {}
            }
            let now = clock.now_micros();
            loop {
                match store.dispatch(now, 500).await {
                    Ok(0) => break,
                    Ok(n) => {
                        metrics::counter!(telemetry::DELIVERY_EVENTS_DISPATCHED_TOTAL)
                            .increment(u64::from(n));
                    }
                    Err(e) => {
                        metrics::counter!(telemetry::DELIVERY_ERRORS_TOTAL).increment(1);
                        tracing::warn!("delivery dispatch failed (retried): {e}");
                        break;
                    }
                }
            }
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let leased = match store
                .lease(
                    owner.clone(),
                    now,
                    now + lease_us,
                    u32::try_from(free).unwrap_or(u32::MAX),
                )
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    metrics::counter!(telemetry::DELIVERY_ERRORS_TOTAL).increment(1);
                    tracing::warn!("leasing deliveries failed (retried): {e}");
                    continue;
                }
            };
            for d in leased {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let gate = {
                    let mut map = per_endpoint
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    map.entry(d.endpoint.id.clone())
                        .or_insert_with(|| Arc::new(Semaphore::new(settings.per_endpoint)))
                        .clone()
                };
                let (store, clock, outbound, settings, owner, mailer) = (
                    store.clone(),
                    clock.clone(),
                    outbound.clone(),
                    settings.clone(),
                    owner.clone(),
                    mailer.clone(),
                );
                tokio::spawn(async move {
                    let _slot = slot;
                    let Ok(_gate) = gate.acquire_owned().await else {
                        return;
                    };
                    let sender = Sender {
                        outbound: &outbound,
                        mailer: mailer.as_deref(),
                    };
                    attempt(store.as_ref(), clock.as_ref(), sender, &settings, owner, d).await;
                });
            }
        }
    })
}

/// What sends an attempt: HTTP for webhooks and postbacks, the mailer
/// for the e-mail endpoint.
#[derive(Clone, Copy)]
struct Sender<'a> {
    outbound: &'a Outbound,
    mailer: Option<&'a Mailer>,
}

impl Sender<'_> {
    /// Sends `d` once: `(where it went, the answer, the verdict)`.
    async fn send(
        self,
        store: &dyn Store,
        d: &LeasedDelivery,
    ) -> (String, http::OutboundAnswer, AttemptVerdict) {
        if d.endpoint.kind == EndpointKind::Email {
            let Some(m) = self.mailer else {
                let none = http::OutboundAnswer {
                    status: None,
                    error: Some(NO_RELAY.to_owned()),
                    latency: Duration::ZERO,
                    response: String::new(),
                };
                return ("mailto:".to_owned(), none, AttemptVerdict::Retry);
            };
            let out = m.deliver(store, d).await;
            let answer = http::OutboundAnswer {
                status: None,
                error: (!out.sent).then(|| out.note.clone()),
                latency: out.latency,
                response: if out.sent {
                    clickward_core::truncate_utf8(&out.note, http::RESPONSE_KEEP).to_owned()
                } else {
                    String::new()
                },
            };
            let verdict = if out.sent {
                AttemptVerdict::Delivered
            } else {
                AttemptVerdict::Retry
            };
            return (format!("mailto:{}", out.to), answer, verdict);
        }
        let wall = SystemClock.now_micros();
        match sink::build(d, wall / 1_000_000, wall) {
            Ok(req) => {
                let url = req.url.clone();
                let answer = self.outbound.send(req).await;
                let verdict = match answer.error {
                    // A redirect is never followed: it is not a delivery.
                    Some(_) => AttemptVerdict::Retry,
                    None => rules::classify(answer.status),
                };
                (url, answer, verdict)
            }
            Err(why) => (
                d.endpoint.url.clone(),
                http::OutboundAnswer {
                    status: None,
                    error: Some(why),
                    latency: Duration::ZERO,
                    response: String::new(),
                },
                AttemptVerdict::Retry,
            ),
        }
    }
}

/// Sends one leased delivery and records what happened.
async fn attempt(
    store: &dyn Store,
    clock: &dyn Clock,
    sender: Sender<'_>,
    settings: &DeliverySettings,
    owner: String,
    d: LeasedDelivery,
) {
    let at = clock.now_micros();
    let (url, answer, verdict) = sender.send(store, &d).await;
    let failed = d.attempts + 1;
    let next = match verdict {
        AttemptVerdict::Delivered => AttemptNext::Delivered,
        AttemptVerdict::Gone => AttemptNext::Gone,
        AttemptVerdict::Retry => {
            match rules::retry_after(&settings.retry, failed, rand::random::<f64>()) {
                Some(wait) => AttemptNext::RetryAt(clock.now_micros() + wait),
                None => AttemptNext::Dead,
            }
        }
    };
    let result = match next {
        AttemptNext::Delivered => "delivered",
        AttemptNext::RetryAt(_) => "retry",
        AttemptNext::Dead => "dead",
        AttemptNext::Gone => "gone",
    };
    metrics::counter!(telemetry::DELIVERY_ATTEMPTS_TOTAL, "kind" => d.endpoint.kind.as_str(), "result" => result)
        .increment(1);
    let record = AttemptRecord {
        delivery_id: d.id,
        owner,
        at,
        url,
        status: answer.status,
        error: answer.error,
        latency_us: i64::try_from(answer.latency.as_micros()).unwrap_or(i64::MAX),
        response: answer.response,
        next,
        disable_after_us: i64::try_from(rules::DISABLE_AFTER_FAILING.as_micros())
            .unwrap_or(i64::MAX),
    };
    // The attempt was made; recording it must not be lost to a busy
    // database. Until it is recorded the lease keeps others off, and if it
    // never is, the delivery is sent again with the same id.
    let mut wait = Duration::from_millis(50);
    for _ in 0..8 {
        match store.record_attempt(record.clone()).await {
            Ok(Some(disabled)) => {
                metrics::counter!(telemetry::DELIVERY_ENDPOINTS_DISABLED_TOTAL).increment(1);
                tracing::warn!(
                    "endpoint {} ({}) disabled: {}",
                    disabled.id,
                    disabled.description,
                    disabled.disabled_reason.as_deref().unwrap_or("")
                );
                return;
            }
            Ok(None) => return,
            Err(e) => {
                metrics::counter!(telemetry::DELIVERY_ERRORS_TOTAL).increment(1);
                tracing::warn!("recording delivery {} failed (retried): {e}", d.id);
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}
