//! The privacy concern's types and trait: erasure and access requests by
//! data subject, their receipts, and the redaction both backends apply.
//! Backends: `sqlite/privacy.rs`, `postgres/privacy.rs`.
//!
//! What erasure does to each table (docs/privacy.md): clicks keep the
//! facts reports are built from (time, link, program, affiliate, src,
//! device, OS, browser, country, region, city, referrer host, bot and
//! fraud verdicts, uniqueness) and lose the visitor key (replaced by a
//! fresh random key per erased visitor, so a later rescore still sees one
//! visitor), sub1..sub5 and the full referrer; conversions keep amounts,
//! commission, status, attribution and the same facts, and lose the order
//! id (`erased:` + the conversion id), sub1..sub5, adv_sub1..adv_sub5, the
//! buyer's address hash and the replay fingerprint; the dedup state of the
//! visitor is deleted; outbox events and deliveries about the conversions
//! are redacted the same way; delivery attempts lose their URL's path and
//! query and the receiver's answer; stored idempotent answers are deleted.
//! Rollups and the ledger are not touched: the numbers do not move.

use clickward_core::Micros;
use clickward_core::click::VisitorKey;
use clickward_core::id::{ClickId, ConversionId};
use serde::{Deserialize, Serialize};

use crate::{ClickRow, ConversionRow, StoreError, StoreFuture};

/// Whose data a request is about. Exactly one selector per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A visitor key (from the `cw_vid` cookie, unsealed, or given as hex).
    Visitor(VisitorKey),
    /// One click, and the conversions attributed to it.
    Click(ClickId),
    /// Conversions with this order id (of one program, when given), and
    /// their clicks.
    Order {
        /// The merchant's order id, exactly.
        order_id: String,
        /// A program slug, to narrow the match.
        program: Option<String>,
    },
    /// One conversion, and its click.
    Conversion(ConversionId),
    /// Clicks and conversions with this exact value in sub1..sub5 (or a
    /// conversion's adv_sub1..adv_sub5), e.g. an e-mail an affiliate put in
    /// `sub1`; and the conversions of those clicks.
    Sub(String),
}

impl Subject {
    /// The selector's name in receipts (never its value).
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Visitor(_) => "visitor",
            Subject::Click(_) => "click",
            Subject::Order { .. } => "order",
            Subject::Conversion(_) => "conversion",
            Subject::Sub(_) => "sub",
        }
    }

    /// The stored form while the request is pending (cleared when done).
    pub(crate) fn to_text(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The inverse of [`Subject::to_text`].
    pub(crate) fn from_text(text: &str) -> Result<Self, StoreError> {
        serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("a pending erasure's subject: {e}")))
    }
}

/// Rows changed per table by one erasure (0 where nothing matched, and on
/// every run after the first).
#[derive(utoipa::ToSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureCounts {
    /// Clicks anonymised.
    pub clicks: u64,
    /// Dedup entries (visitor × link) deleted.
    pub visitor_links: u64,
    /// Conversions anonymised.
    pub conversions: u64,
    /// Stored idempotent answers deleted.
    pub idempotency_keys: u64,
    /// Outbox events redacted.
    pub outbox: u64,
    /// Deliveries (webhook, postback, e-mail) redacted.
    pub deliveries: u64,
    /// Delivery attempts (URL and answer) redacted.
    pub delivery_attempts: u64,
    /// Clicks anonymised in node spools (PostgreSQL nodes, not yet shipped).
    pub spooled_clicks: u64,
    /// Live events dropped from the in-memory buffer of the node that ran it.
    pub live_events: u64,
}

/// Where a request is.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Stored; not finished yet (it is retried until it is).
    Received,
    /// Finished; `counts` says what changed.
    Done,
    /// Could not be carried out; `error` says why.
    Failed,
}

impl RequestStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Received => "received",
            RequestStatus::Done => "done",
            RequestStatus::Failed => "failed",
        }
    }

    /// The inverse of [`RequestStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "received" => Some(RequestStatus::Received),
            "done" => Some(RequestStatus::Done),
            "failed" => Some(RequestStatus::Failed),
            _ => None,
        }
    }
}

/// The receipt of an erasure: no personal data, only what was asked by
/// whom, when, and what changed.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// `era_` + ULID.
    pub id: String,
    /// The selector's kind (`visitor`, `click`, `order`, `conversion`, `sub`).
    pub subject: String,
    /// Where it is.
    pub status: RequestStatus,
    /// Rows changed per table, once done.
    pub counts: Option<ErasureCounts>,
    /// Why it failed, or the last error of an attempt that will be retried.
    pub error: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// Who asked: `key:<id>`, `user:<name>`, `cli`.
    pub actor: String,
    /// UTC µs.
    pub received_at: Micros,
    /// UTC µs.
    pub done_at: Option<Micros>,
}

/// What one run of an erasure changed, for the caller to finish in memory:
/// the receipt, and the ids and keys that were erased (never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erased {
    /// The receipt after the run.
    pub receipt: Receipt,
    /// Clicks anonymised by this run.
    pub click_ids: Vec<ClickId>,
    /// Conversions anonymised by this run.
    pub conversion_ids: Vec<ConversionId>,
    /// The visitor keys those clicks had.
    pub visitor_keys: Vec<VisitorKey>,
    /// The subject, when this run erased (to finish in memory and in node
    /// spools; never stored again).
    pub subject: Option<Subject>,
}

impl Erased {
    /// A run that changed nothing (the request was already finished).
    pub fn unchanged(receipt: Receipt) -> Self {
        Self {
            receipt,
            click_ids: Vec::new(),
            conversion_ids: Vec::new(),
            visitor_keys: Vec::new(),
            subject: None,
        }
    }
}

/// Everything stored about a subject (`GET /api/v1/privacy/export`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectData {
    /// Its clicks, oldest first.
    pub clicks: Vec<ClickRow>,
    /// Its conversions, oldest first.
    pub conversions: Vec<ConversionRow>,
    /// Deliveries about those conversions, with their payloads.
    pub deliveries: Vec<serde_json::Value>,
}

/// Erasure and access requests. An erasure is stored first
/// ([`PrivacyStore::receive_erasure`]) and carried out in one transaction
/// ([`PrivacyStore::run_erasure`]), so a crash leaves it received and the
/// next run does all of it; a run after it is done changes nothing.
pub trait PrivacyStore: Send + Sync + 'static {
    /// Stores a request for `subject` as `received` (the subject is kept
    /// only until it is done). An id already stored is left as it was and
    /// its receipt returned (a request held on a node while the store was
    /// down may be handed over twice).
    fn receive_erasure(
        &self,
        id: String,
        subject: Subject,
        actor: String,
        now: Micros,
    ) -> StoreFuture<'_, Receipt>;

    /// Carries out a received erasure (a done or failed one is returned as
    /// it is, with no ids). Appends a `privacy.erasure` event to the outbox
    /// in the same transaction. [`StoreError::NotFound`] for an unknown id.
    fn run_erasure(&self, id: String, now: Micros) -> StoreFuture<'_, Erased>;

    /// Carries out several received erasures (a batch), each as
    /// [`PrivacyStore::run_erasure`] in its own transaction, so redirects
    /// keep their turns between them; a backend may find the clicks of all
    /// of them in one pass. One result per id, in order; the whole call
    /// fails only when none could be tried.
    fn run_erasures(
        &self,
        ids: Vec<String>,
        now: Micros,
        pace: Pace,
    ) -> StoreFuture<'_, Vec<Result<Erased, StoreError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let t = std::time::Instant::now();
                out.push(self.run_erasure(id, now).await);
                pace.rest(t.elapsed()).await;
            }
            Ok(out)
        })
    }

    /// Notes a failed attempt: `permanent` marks it failed, else it stays
    /// received (retried) with the error.
    fn erasure_attempt_failed(
        &self,
        id: String,
        error: String,
        permanent: bool,
    ) -> StoreFuture<'_, ()>;

    /// Ids of received erasures, oldest first.
    fn pending_erasures(&self) -> StoreFuture<'_, Vec<String>>;

    /// The newest receipts, newest first (by id, which starts with the
    /// time received); with `before`, only those whose id sorts before it
    /// (the keyset of the next page).
    fn receipts(&self, before: Option<String>, limit: u32) -> StoreFuture<'_, Vec<Receipt>>;

    /// One receipt.
    fn receipt(&self, id: String) -> StoreFuture<'_, Option<Receipt>>;

    /// Everything stored about `subject` (the same selection as erasure).
    fn subject_data(&self, subject: Subject) -> StoreFuture<'_, SubjectData>;

    /// Deletes receipts finished before `before` (UTC µs); returns how many.
    fn purge_receipts(&self, before: Micros) -> StoreFuture<'_, u64>;

    /// `[retention] conversion_fields`: clears sub1..sub5, adv_sub1..adv_sub5
    /// and the buyer's address hash of at most `batch` conversions received
    /// before `before` (UTC µs); returns how many changed. Amounts,
    /// statuses, attribution and the order id stay.
    fn purge_conversion_fields(&self, before: Micros, batch: u32) -> StoreFuture<'_, u64>;

    /// `[retention] deliveries` / `postbacks`: deletes at most `batch`
    /// finished deliveries (delivered or dead) to endpoints of `kind` that
    /// finished before `before` (UTC µs), with their attempts; returns how
    /// many. Pending deliveries are never purged.
    fn purge_deliveries(
        &self,
        kind: clickward_core::delivery::EndpointKind,
        before: Micros,
        batch: u32,
    ) -> StoreFuture<'_, u64>;
}

/// How much of the machine a batch of erasures may take: after each piece
/// of work it rests long enough that its work is at most this share of the
/// time it runs, so that redirects keep their speed (a batch of 10,000 has
/// a month; a redirect has milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    share: f64,
}

impl Pace {
    /// No rest: one erasure asked for now.
    pub const FULL: Pace = Pace { share: 1.0 };

    /// At most `share` (0.01 to 1) of the time at work.
    pub fn share(share: f64) -> Self {
        Self {
            share: share.clamp(0.01, 1.0),
        }
    }

    /// `true` when it never rests.
    pub fn is_full(self) -> bool {
        self.share >= 1.0
    }

    /// Longest rest after one piece of work. The pieces are sized to take
    /// tens of ms, so their rests are about a second; a piece that took
    /// long (a pass over a large table) gets its whole rest up to this, so
    /// that the share holds (a 2 s cap measured 0.93 of redirects during a
    /// batch of 10,000 instead of at least 0.95).
    pub const MAX_REST: std::time::Duration = std::time::Duration::from_secs(60);

    /// Rests after `worked` (at most [`Pace::MAX_REST`]).
    pub async fn rest(self, worked: std::time::Duration) {
        if !self.is_full() {
            tokio::time::sleep(worked.mul_f64(1.0 / self.share - 1.0).min(Self::MAX_REST)).await;
        }
    }
}

/// The rows [`PrivacyStore::purge_conversion_fields`] changes (then the
/// backend's limit).
pub(crate) const CONVERSION_FIELDS_DUE: &str = "SELECT id FROM conversions WHERE received_at < $1 \
     AND (sub1 IS NOT NULL OR sub2 IS NOT NULL OR sub3 IS NOT NULL OR sub4 IS NOT NULL \
     OR sub5 IS NOT NULL OR adv_sub1 IS NOT NULL OR adv_sub2 IS NOT NULL OR adv_sub3 IS NOT NULL \
     OR adv_sub4 IS NOT NULL OR adv_sub5 IS NOT NULL OR ip_hash IS NOT NULL) LIMIT $2";

/// Clears the fields of the conversions a [`CONVERSION_FIELDS_DUE`] selects.
pub(crate) const CONVERSION_FIELDS_CLEAR: &str = "UPDATE conversions SET sub1 = NULL, \
     sub2 = NULL, sub3 = NULL, sub4 = NULL, sub5 = NULL, adv_sub1 = NULL, adv_sub2 = NULL, \
     adv_sub3 = NULL, adv_sub4 = NULL, adv_sub5 = NULL, ip_hash = NULL WHERE id IN";

/// The deliveries [`PrivacyStore::purge_deliveries`] deletes.
pub(crate) const DELIVERIES_DUE: &str = "SELECT d.id FROM deliveries d \
     JOIN endpoints e ON e.id = d.endpoint_id WHERE e.kind = $1 AND d.done_at IS NOT NULL \
     AND d.done_at < $2 AND d.status IN ('delivered', 'dead') LIMIT $3";

/// The columns both backends read receipts with (then a `WHERE`).
pub(crate) const RECEIPT_SELECT: &str = "SELECT id, subject, status, counts, error, attempts, \
     actor, received_at, done_at FROM privacy_requests";

/// A receipt from its stored columns, in [`RECEIPT_SELECT`]'s order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn receipt_from(
    id: String,
    subject: String,
    status: &str,
    counts: Option<String>,
    error: Option<String>,
    attempts: i64,
    actor: String,
    received_at: Micros,
    done_at: Option<Micros>,
) -> Result<Receipt, StoreError> {
    Ok(Receipt {
        id,
        subject,
        status: RequestStatus::parse(status)
            .ok_or_else(|| StoreError::Corrupt(format!("privacy request status {status:?}")))?,
        counts: counts
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("privacy request counts: {e}")))?,
        error,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        actor,
        received_at,
        done_at,
    })
}

/// The rows a subject selects: clicks (id, visitor key) and conversions
/// (row id, conversion id), deduplicated, in id order.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    pub clicks: std::collections::BTreeMap<[u8; 16], [u8; 16]>,
    pub conversions: std::collections::BTreeMap<i64, ConversionId>,
}

impl Selection {
    /// The visitor keys of the selected clicks, and the subject's own.
    pub fn visitor_keys(&self, subject: &Subject) -> std::collections::BTreeSet<[u8; 16]> {
        let mut keys: std::collections::BTreeSet<[u8; 16]> =
            self.clicks.values().copied().collect();
        if let Subject::Visitor(k) = subject {
            keys.insert(k.0);
        }
        keys
    }

    /// What was selected, as the caller's [`Erased`].
    pub fn erased(&self, receipt: Receipt, subject: &Subject) -> Erased {
        Erased {
            receipt,
            click_ids: self
                .clicks
                .keys()
                .map(|b| ClickId::from_bytes(*b))
                .collect(),
            conversion_ids: self.conversions.values().copied().collect(),
            visitor_keys: self
                .visitor_keys(subject)
                .into_iter()
                .map(VisitorKey)
                .collect(),
            subject: Some(subject.clone()),
        }
    }
}

/// A 16-byte value from a stored blob.
pub(crate) fn bytes16(v: Vec<u8>, what: &str) -> Result<[u8; 16], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 16 bytes")))
}

/// Whether a stored payload is about one of `erased` (a conversion event).
pub(crate) fn is_about(payload: &str, erased: &[ConversionId]) -> bool {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v.get("conversion")?
                .get("conversion_id")?
                .as_str()?
                .parse::<ConversionId>()
                .ok()
        })
        .is_some_and(|id| erased.contains(&id))
}

/// The order id an erased conversion keeps: unique per conversion, so the
/// `(program, event, order_id)` key still holds.
pub(crate) fn erased_order_id(id: ConversionId) -> String {
    format!("erased:{id}")
}

/// Redacts an outbox or delivery payload about an erased conversion:
/// `order_id` becomes its erased form, `subs` and `adv_subs` become nulls.
/// `None` when the payload is not about one of `erased` or already redacted.
pub(crate) fn redact_payload(payload: &str, erased: &[ConversionId]) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let conv = v.get_mut("conversion")?.as_object_mut()?;
    let id: ConversionId = conv.get("conversion_id")?.as_str()?.parse().ok()?;
    if !erased.contains(&id) {
        return None;
    }
    let before = serde_json::Value::Object(conv.clone());
    conv.insert("order_id".into(), erased_order_id(id).into());
    let nulls = serde_json::json!([null, null, null, null, null]);
    conv.insert("subs".into(), nulls.clone());
    conv.insert("adv_subs".into(), nulls);
    if serde_json::Value::Object(conv.clone()) == before {
        return None;
    }
    serde_json::to_string(&v).ok()
}

/// A delivery attempt's URL after erasure: scheme and host only (a
/// postback template puts click ids, order ids and sub-ids in the path and
/// query).
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{scheme}://{host}/(erased)")
}

/// The `privacy.erasure` event: the ids receivers may hold, never the
/// subject's value.
pub(crate) fn erasure_event(e: &Erased) -> serde_json::Value {
    serde_json::json!({
        "erasure": {
            "id": e.receipt.id,
            "subject": e.receipt.subject,
            "click_ids": e.click_ids,
            "conversion_ids": e.conversion_ids,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_about_erased_conversions_lose_order_and_subs_once() {
        let id: ConversionId = "01JDQ3Z8Y7W6V5T4S3R2Q1P0NM".parse().unwrap();
        let other: ConversionId = "01JDQ3Z8Y7W6V5T4S3R2Q1P0NN".parse().unwrap();
        let p = serde_json::json!({"v": 1, "conversion": {
            "conversion_id": id, "order_id": "A-1001", "amount_minor": 4200,
            "subs": ["jane@example.com", null, null, null, null],
            "adv_subs": ["x", null, null, null, null]}})
        .to_string();
        assert_eq!(redact_payload(&p, &[other]), None);
        let r = redact_payload(&p, &[id]).unwrap();
        assert!(!r.contains("A-1001") && !r.contains("jane@") && !r.contains("\"x\""));
        assert!(r.contains("4200") && r.contains(&format!("erased:{id}")));
        assert_eq!(redact_payload(&r, &[id]), None, "already redacted");
        assert_eq!(redact_payload("not json", &[id]), None);
    }

    #[test]
    fn urls_keep_only_their_host() {
        assert_eq!(
            redact_url("https://aff.example:8443/pb/ABC?sub1=jane%40example.com&order=7"),
            "https://aff.example:8443/(erased)"
        );
        assert_eq!(redact_url("mailto"), "://mailto/(erased)");
    }
}
