//! Small helpers both backends share: reading stored values back into core
//! types, and the tables of named things. No SQL dialect here.

use std::time::{SystemTime, UNIX_EPOCH};

use clickward_core::Micros;
use clickward_core::id::{LinkCode, Slug};
use clickward_core::link::{Affiliate, Link, Owner, Program, RedirectStatus, Status, UtmDefaults};
use clickward_core::money::Currency;
use clickward_core::program::{AttributionModel, ProgramSettings};

use crate::{KeyScope, LinkRecord, StoreError};

/// Now, UTC µs (for `created_at` / `updated_at` columns).
pub(crate) fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A stored value that does not parse: a defect or a hand-edited row.
pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

pub(crate) fn status_of(s: &str) -> Result<Status, StoreError> {
    Status::parse(s).ok_or_else(|| corrupt("status", s))
}

pub(crate) fn slug_of(s: &str) -> Result<Slug, StoreError> {
    Slug::parse(s).map_err(|_| corrupt("slug", s))
}

/// A 16-byte id column (click, conversion, payout batch).
pub(crate) fn ulid_of(b: Vec<u8>, what: &str) -> Result<ulid::Ulid, StoreError> {
    let a: [u8; 16] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 16 bytes")))?;
    Ok(ulid::Ulid::from_bytes(a))
}

pub(crate) fn scope_of(s: &str) -> Result<KeyScope, StoreError> {
    match s {
        "admin" => Ok(KeyScope::Admin),
        "read" => Ok(KeyScope::Read),
        other => Err(corrupt("key scope", other)),
    }
}

pub(crate) fn role_of(s: &str) -> Result<crate::UserRole, StoreError> {
    match s {
        "admin" => Ok(crate::UserRole::Admin),
        "affiliate" => Ok(crate::UserRole::Affiliate),
        other => Err(corrupt("user role", other)),
    }
}

/// Programs or affiliates (same shape: slug, name, status), by table.
#[derive(Clone, Copy)]
pub(crate) enum Named {
    Programs,
    Affiliates,
}

impl Named {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Named::Programs => "programs",
            Named::Affiliates => "affiliates",
        }
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            Named::Programs => "program",
            Named::Affiliates => "affiliate",
        }
    }
}

/// A `(id, slug, name, status)` row of `programs`.
/// `(id, slug, name, status, owner)` of a program or affiliate row.
pub(crate) type NamedRow = (i64, Slug, String, Status, Owner);

pub(crate) fn program_of((id, slug, name, status, owner): NamedRow) -> Program {
    Program {
        owner,
        id,
        slug,
        name,
        status,
    }
}

/// A `(id, slug, name, status)` row of `affiliates`.
pub(crate) fn affiliate_of((id, slug, name, status, owner): NamedRow) -> Affiliate {
    Affiliate {
        owner,
        id,
        slug,
        name,
        status,
    }
}

/// The query both backends read links with; [`LinkColumns`] in its order.
pub(crate) const LINK_SELECT: &str = "SELECT l.id, l.code, p.slug, a.slug, l.destination, \
     l.redirect, l.utm, l.status, l.program_id, l.affiliate_id, p.status, a.status, \
     l.catalog_digest IS NULL \
     FROM links l JOIN programs p ON p.id = l.program_id \
     LEFT JOIN affiliates a ON a.id = l.affiliate_id";

/// A row of [`LINK_SELECT`] as stored values.
pub(crate) struct LinkColumns {
    pub id: i64,
    pub code: String,
    pub program: String,
    pub affiliate: Option<String>,
    pub destination: String,
    pub redirect: Option<i64>,
    pub utm: String,
    pub status: String,
    pub program_id: i64,
    pub affiliate_id: Option<i64>,
    pub program_status: String,
    pub affiliate_status: Option<String>,
    /// `catalog_digest IS NULL`: made or changed outside the catalogue file.
    pub admin_owned: bool,
}

impl LinkColumns {
    /// The link, and whether it redirects now: it, its program and its
    /// affiliate (if any) all active.
    pub(crate) fn record(self) -> Result<LinkRecord, StoreError> {
        let utm: UtmDefaults =
            serde_json::from_str(&self.utm).map_err(|_| corrupt("utm", &self.utm))?;
        let redirect = self
            .redirect
            .map(|c| {
                u16::try_from(c)
                    .ok()
                    .and_then(|c| RedirectStatus::from_code(c).ok())
                    .ok_or_else(|| corrupt("redirect", &c.to_string()))
            })
            .transpose()?;
        let status = status_of(&self.status)?;
        let program_status = status_of(&self.program_status)?;
        let affiliate_status = self
            .affiliate_status
            .as_deref()
            .map(status_of)
            .transpose()?;
        Ok(LinkRecord {
            link: Link {
                id: self.id,
                code: LinkCode::parse(&self.code).map_err(|_| corrupt("link code", &self.code))?,
                program: slug_of(&self.program)?,
                affiliate: self.affiliate.as_deref().map(slug_of).transpose()?,
                destination: self.destination,
                redirect,
                utm,
                status,
                owner: owner_of(self.admin_owned),
            },
            program_id: self.program_id,
            affiliate_id: self.affiliate_id,
            redirects: status == Status::Active
                && program_status == Status::Active
                && affiliate_status != Some(Status::Disabled),
        })
    }
}

/// The stored `clicks.consent`: NULL for the cookie mode (every click
/// before consent modes existed was one), the name otherwise.
pub(crate) fn consent_column(m: clickward_core::program::ConsentMode) -> Option<&'static str> {
    match m {
        clickward_core::program::ConsentMode::Cookie => None,
        clickward_core::program::ConsentMode::Cookieless => Some("cookieless"),
    }
}

/// The query both backends read a program's settings with (then
/// `WHERE id = …`); [`SettingsColumns`] in its order.
pub(crate) const SETTINGS_SELECT: &str = "SELECT currency, cookie_window_s, attribution_window_s, \
     attribution, commission, hold_s, postback_token, postback_secret, postback_ips, \
     click_id_param, min_payout, pixel, pixel_max_amount, timezone, fallback_url, consent, integrations FROM programs";

/// A row of [`SETTINGS_SELECT`] as stored values.
pub(crate) struct SettingsColumns {
    pub currency: String,
    pub cookie_window_s: i64,
    pub attribution_window_s: i64,
    pub attribution: String,
    pub commission: String,
    pub hold_s: Option<i64>,
    pub postback_token: Option<String>,
    pub postback_secret: Option<String>,
    pub postback_ips: String,
    pub click_id_param: Option<String>,
    pub min_payout: i64,
    pub pixel: String,
    pub pixel_max_amount: Option<i64>,
    pub timezone: String,
    pub fallback_url: Option<String>,
    pub consent: String,
    pub integrations: Option<String>,
}

/// The stored `programs.integrations`: `{"stripe": …, "shopify": …}`, or
/// NULL when neither is set.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Integrations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe: Option<clickward_core::program::StripeSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shopify: Option<clickward_core::program::ShopifySettings>,
}

/// The `programs.integrations` value of `s`.
pub(crate) fn integrations_column(s: &ProgramSettings) -> Result<Option<String>, StoreError> {
    if s.stripe.is_none() && s.shopify.is_none() {
        return Ok(None);
    }
    serde_json::to_string(&Integrations {
        stripe: s.stripe.clone(),
        shopify: s.shopify.clone(),
    })
    .map(Some)
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SettingsColumns {
    /// The settings; a value this binary cannot read is [`StoreError::Corrupt`].
    pub(crate) fn settings(self) -> Result<ProgramSettings, StoreError> {
        let Self {
            currency,
            attribution,
            commission,
            postback_ips,
            ..
        } = &self;
        let integrations: Integrations = match &self.integrations {
            None => Integrations::default(),
            Some(t) => serde_json::from_str(t).map_err(|_| corrupt("integrations", t))?,
        };
        Ok(ProgramSettings {
            currency: Currency::parse(currency).map_err(|_| corrupt("currency", currency))?,
            cookie_window_s: self.cookie_window_s,
            attribution_window_s: self.attribution_window_s,
            attribution: AttributionModel::parse(attribution)
                .ok_or_else(|| corrupt("attribution", attribution))?,
            commission: serde_json::from_str(commission)
                .map_err(|_| corrupt("commission plan", commission))?,
            hold_s: self.hold_s,
            postback_ips: serde_json::from_str(postback_ips)
                .map_err(|_| corrupt("postback_ips", postback_ips))?,
            postback_token: self.postback_token,
            postback_secret: self.postback_secret,
            click_id_param: self.click_id_param,
            min_payout: self.min_payout,
            pixel: clickward_core::program::PixelMode::parse(&self.pixel)
                .ok_or_else(|| corrupt("pixel", &self.pixel))?,
            pixel_max_amount: self.pixel_max_amount,
            timezone: self.timezone,
            fallback_url: self.fallback_url,
            consent: clickward_core::program::ConsentMode::parse(&self.consent)
                .ok_or_else(|| corrupt("consent", &self.consent))?,
            stripe: integrations.stripe,
            shopify: integrations.shopify,
        })
    }
}

/// An outbox row for an event with `body` (merged into a versioned
/// payload): `(event id bytes, payload JSON, ts)`.
pub(crate) fn outbox_row(body: serde_json::Value) -> Result<(Vec<u8>, String, Micros), StoreError> {
    let ts = now_micros();
    let id = ulid::Ulid::generate();
    let mut payload = serde_json::json!({ "v": clickward_core::event::PAYLOAD_VERSION });
    if let (Some(p), serde_json::Value::Object(b)) = (payload.as_object_mut(), body) {
        p.extend(b);
    }
    let text = serde_json::to_string(&payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((id.to_bytes().to_vec(), text, ts))
}

/// The outbox type of a catalogue save of a `kind` (`program`,
/// `affiliate`, `link`): `.created` for a new item; for a changed one
/// `.disabled` or `.enabled` when its status moved, else `.updated`;
/// `None` when nothing changed.
pub(crate) fn catalog_event(
    kind: &str,
    before: Option<Status>,
    after: Status,
    changed: bool,
) -> Option<String> {
    let what = match before {
        None => "created",
        Some(_) if !changed => return None,
        Some(b) if b != after && after == Status::Disabled => "disabled",
        Some(b) if b != after => "enabled",
        Some(_) => "updated",
    };
    Some(format!("{kind}.{what}"))
}

/// The payload of a program or affiliate event (never its settings: they
/// hold postback credentials).
pub(crate) fn named_payload(
    kind: &str,
    slug: &Slug,
    name: &str,
    status: Status,
) -> serde_json::Value {
    serde_json::json!({ kind: { "slug": slug.as_str(), "name": name, "status": status.as_str() } })
}

/// The payload of a link event.
pub(crate) fn link_payload(l: &crate::LinkInput) -> serde_json::Value {
    serde_json::json!({ "link": {
        "code": l.code.as_str(),
        "program": l.program.as_str(),
        "affiliate": l.affiliate.as_ref().map(Slug::as_str),
        "destination": l.destination,
        "redirect": l.redirect.map(clickward_core::link::RedirectStatus::code),
        "utm": l.utm,
        "status": l.status.as_str(),
    }})
}

/// An outbox row read back.
pub(crate) fn outbox_event(
    seq: i64,
    id: &[u8],
    kind: String,
    ts: Micros,
    payload: &str,
) -> Result<crate::OutboxEvent, StoreError> {
    let id = ulid_of(id.to_vec(), "event_id")?;
    Ok(crate::OutboxEvent {
        seq,
        id: clickward_core::event::event_id_text(id),
        kind,
        ts,
        payload: serde_json::from_str(payload).map_err(|_| corrupt("event payload", payload))?,
    })
}

/// The query both backends read conversions with (then a `WHERE`).
pub(crate) const CONVERSION_SELECT: &str = "SELECT v.conversion_id, p.slug, v.event, v.order_id, v.click_id, l.code, \
     a.slug, v.src, v.sub1, v.sub2, v.sub3, v.sub4, v.sub5, v.amount, v.commission, v.currency, v.status, \
     v.occurred_at, v.received_at, v.ctit_us, v.attributed_by, v.adv_sub1, v.adv_sub2, v.adv_sub3, \
     v.adv_sub4, v.adv_sub5, v.fingerprint, v.held, v.verdict, v.verdict_rule, v.verdict_reason, \
     v.gross_amount, v.gross_commission FROM conversions v JOIN programs p ON p.id = v.program_id \
     LEFT JOIN links l ON l.id = v.link_id LEFT JOIN affiliates a ON a.id = v.affiliate_id";

/// The query both backends read users with (then a `WHERE`).
pub(crate) const USER_SELECT: &str = "SELECT u.id, u.username, u.role, a.slug, u.password_hash, \
     u.credentials_changed_at, u.email, u.notify_conversions FROM users u \
     LEFT JOIN affiliates a ON a.id = u.affiliate_id";

/// The query both backends read payout batches with (then a `WHERE`).
pub(crate) const PAYOUT_SELECT: &str = "SELECT o.batch_id, o.key, a.slug, o.currency, o.amount, o.conversions, \
     o.created_at FROM payouts o JOIN affiliates a ON a.id = o.affiliate_id";

/// The programs whose payable balance in `currency` a payout may pay, or
/// [`StoreError::Refused`] naming why there is nothing to pay (no balance,
/// a negative one, or one below the program's minimum), so that no empty
/// batch is ever made.
pub(crate) fn eligible_programs(
    affiliate: &str,
    currency: clickward_core::money::Currency,
    lines: &[crate::PayoutLine],
) -> Result<Vec<String>, StoreError> {
    let code = currency.code();
    let mine: Vec<&crate::PayoutLine> = lines.iter().filter(|l| l.currency == code).collect();
    let eligible: Vec<String> = mine
        .iter()
        .filter(|l| l.eligible)
        .map(|l| l.program.clone())
        .collect();
    if !eligible.is_empty() {
        return Ok(eligible);
    }
    if mine.is_empty() {
        return Err(StoreError::Refused(format!(
            "nothing to pay: affiliate {affiliate:?} has no {code} balance; nothing was created"
        )));
    }
    let why: Vec<String> = mine
        .iter()
        .map(|l| {
            format!(
                "{}: payable {}, minimum {}",
                l.program,
                currency.format(l.payable_minor),
                currency.format(l.min_payout_minor)
            )
        })
        .collect();
    Err(StoreError::Refused(format!(
        "nothing to pay: affiliate {affiliate:?} has no positive {code} balance that reaches its program's minimum ({}); nothing was created",
        why.join("; ")
    )))
}

/// The owner of a row from its `catalog_digest IS NULL` (see [`Owner`]).
pub(crate) fn owner_of(admin_owned: bool) -> Owner {
    if admin_owned {
        Owner::Admin
    } else {
        Owner::Catalog
    }
}

/// The digest of a catalogue entry as the file declares it: BLAKE3 of its
/// `Debug` text. An entry whose digest is the one stored with its item was
/// applied before and is not applied again (so a reload never undoes an edit
/// made since); a new clickward version that prints an entry differently
/// applies it once more, which changes nothing for items the file owns.
pub(crate) fn entry_digest(entry: &impl std::fmt::Debug) -> [u8; 32] {
    *blake3::hash(format!("{entry:?}").as_bytes()).as_bytes()
}

/// What [`crate::CatalogStore::apply_catalog`] found for one entry.
pub(crate) enum EntryState {
    /// No such item yet.
    New,
    /// Owned by the file and applied with this very entry: nothing to do.
    Unchanged,
    /// Owned by the file, applied before with another entry: apply.
    Changed,
    /// Made or changed outside the file: left alone, reported.
    Drifted,
}

/// The state of an entry from the stored digest of its item (`None`: no
/// item; `Some(None)`: admin-owned).
pub(crate) fn entry_state(stored: Option<Option<Vec<u8>>>, digest: &[u8; 32]) -> EntryState {
    match stored {
        None => EntryState::New,
        Some(None) => EntryState::Drifted,
        Some(Some(d)) if d.as_slice() == digest.as_slice() => EntryState::Unchanged,
        Some(Some(_)) => EntryState::Changed,
    }
}

/// Counts an entry in `out` and says whether to apply it.
pub(crate) fn should_apply(
    stored: Option<Option<Vec<u8>>>,
    digest: &[u8; 32],
    what: impl FnOnce() -> String,
    out: &mut crate::CatalogApplied,
) -> bool {
    match entry_state(stored, digest) {
        EntryState::New | EntryState::Changed => {
            out.applied += 1;
            true
        }
        EntryState::Unchanged => {
            out.unchanged += 1;
            false
        }
        EntryState::Drifted => {
            out.drifted.push(what());
            false
        }
    }
}

/// A catalogue entry's item: where it is stored, and the entry's digest.
pub(crate) struct Item<'a> {
    /// `programs`, `affiliates` or `links` (ours, never input).
    pub table: &'static str,
    /// `slug` or `code`.
    pub key: &'static str,
    /// Its slug or code.
    pub value: &'a str,
    kind: &'static str,
    /// [`entry_digest`] of the entry.
    pub digest: [u8; 32],
}

impl<'a> Item<'a> {
    pub(crate) fn new(
        table: &'static str,
        key: &'static str,
        value: &'a str,
        kind: &'static str,
        entry: &impl std::fmt::Debug,
    ) -> Self {
        Item {
            table,
            key,
            value,
            kind,
            digest: entry_digest(entry),
        }
    }

    /// `link "a"`, as drift is reported.
    pub(crate) fn name(&self) -> String {
        format!("{} {:?}", self.kind, self.value)
    }
}

/// The query both backends read endpoints with (then a `WHERE`).
pub(crate) const ENDPOINT_SELECT: &str = "SELECT e.id, e.kind, e.url, e.method, e.events, p.slug, a.slug, \
     e.description, e.enabled, e.disabled_reason, e.failing_since, e.created_at, e.secret, \
     e.previous_secret, e.previous_until FROM endpoints e LEFT JOIN programs p ON p.id = e.program_id \
     LEFT JOIN affiliates a ON a.id = e.affiliate_id";

/// An endpoint row as [`ENDPOINT_SELECT`] reads it.
pub(crate) struct EndpointColumns {
    pub id: Vec<u8>,
    pub kind: String,
    pub url: String,
    pub method: String,
    pub events: String,
    pub program: Option<String>,
    pub affiliate: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<Micros>,
    pub created_at: Micros,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_until: Option<Micros>,
}

impl EndpointColumns {
    pub(crate) fn record(self) -> Result<crate::Endpoint, StoreError> {
        let id = ulid_of(self.id, "endpoint id")?;
        Ok(crate::Endpoint {
            id: format!("ep_{id}"),
            kind: clickward_core::delivery::EndpointKind::parse(&self.kind)
                .ok_or_else(|| corrupt("endpoint kind", &self.kind))?,
            url: self.url,
            method: crate::HttpMethod::parse(&self.method)
                .ok_or_else(|| corrupt("endpoint method", &self.method))?,
            events: serde_json::from_str(&self.events)
                .map_err(|_| corrupt("endpoint events", &self.events))?,
            program: self.program,
            affiliate: self.affiliate,
            description: self.description,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            failing_since: self.failing_since,
            created_at: self.created_at,
            secret: self.secret,
            previous_secret: self.previous_secret.zip(self.previous_until),
        })
    }
}

/// The 16 id bytes of `ep_<ULID>`; `None` for any other text (no such
/// endpoint).
pub(crate) fn endpoint_key(id: &str) -> Option<Vec<u8>> {
    let u = ulid::Ulid::from_string(id.strip_prefix("ep_")?).ok()?;
    Some(u.to_bytes().to_vec())
}

/// The 16 id bytes of `evt_<ULID>`.
pub(crate) fn event_key(id: &str) -> Result<Vec<u8>, StoreError> {
    id.strip_prefix("evt_")
        .and_then(|u| ulid::Ulid::from_string(u).ok())
        .map(|u| u.to_bytes().to_vec())
        .ok_or_else(|| corrupt("event id", id))
}

/// The endpoint filter's JSON column.
pub(crate) fn events_json(events: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(events).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The payload of `conversion.created`: `{"conversion": row}`, with
/// `"refused": true` when the rules or a hard cap refused it at intake (the
/// `conversion.rejected` that follows in the same transaction says why).
pub(crate) fn conversion_event(row: &crate::ConversionRow, refused: bool) -> serde_json::Value {
    let mut body = serde_json::json!({ "conversion": row });
    if refused {
        body["refused"] = serde_json::Value::Bool(true);
    }
    body
}

/// Which of `endpoints` (enabled ones) want `event`: those made before it
/// happened whose filters pass it.
pub(crate) fn wanted_by<'e>(
    endpoints: &'e [crate::Endpoint],
    event: &crate::OutboxEvent,
) -> impl Iterator<Item = &'e crate::Endpoint> {
    endpoints.iter().filter(move |e| {
        e.enabled
            && e.created_at <= event.ts
            && clickward_core::delivery::endpoint_wants(
                e.kind,
                &e.events,
                e.program.as_deref(),
                e.affiliate.as_deref(),
                &event.kind,
                &event.payload,
            )
    })
}

/// The payload of `webhook.disabled` (never the URL, which may carry a
/// receiver's token, nor the secret).
pub(crate) fn endpoint_disabled_payload(e: &crate::Endpoint, reason: &str) -> serde_json::Value {
    serde_json::json!({ "webhook": {
        "id": e.id,
        "kind": e.kind.as_str(),
        "description": e.description,
        "program": e.program,
        "affiliate": e.affiliate,
        "reason": reason,
    }})
}

/// The query both backends read deliveries with (then a `WHERE`).
pub(crate) const DELIVERY_SELECT: &str = "SELECT d.id, d.endpoint_id, d.event_id, d.type, d.status, \
     d.attempts, d.next_at, d.last_status, d.last_error, d.created_at, d.done_at FROM deliveries d";

/// A delivery row as [`DELIVERY_SELECT`] reads it.
pub(crate) struct DeliveryColumns {
    pub id: i64,
    pub endpoint: Vec<u8>,
    pub event: Vec<u8>,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub next_at: Option<Micros>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Micros,
    pub done_at: Option<Micros>,
}

impl DeliveryColumns {
    pub(crate) fn record(self) -> Result<crate::DeliveryRow, StoreError> {
        Ok(crate::DeliveryRow {
            id: self.id,
            endpoint: format!("ep_{}", ulid_of(self.endpoint, "endpoint id")?),
            event_id: clickward_core::event::event_id_text(ulid_of(self.event, "event id")?),
            kind: self.kind,
            next_attempt_at: if self.status == "pending" {
                self.next_at
            } else {
                None
            },
            status: self.status,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            last_status: self.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: self.last_error,
            created_at: self.created_at,
            done_at: self.done_at,
        })
    }
}

/// How an attempt moves its delivery: `(status, next_at, done_at)`.
pub(crate) fn attempt_outcome(
    a: &crate::AttemptRecord,
) -> (&'static str, Option<Micros>, Option<Micros>) {
    match a.next {
        crate::AttemptNext::Delivered => ("delivered", None, Some(a.at)),
        crate::AttemptNext::RetryAt(t) => ("pending", Some(t), None),
        crate::AttemptNext::Dead | crate::AttemptNext::Gone => ("dead", None, Some(a.at)),
    }
}

/// Why an endpoint is disabled after attempt `a`, given when it started
/// failing (`None`: it stays enabled).
pub(crate) fn disable_reason(a: &crate::AttemptRecord, failing_since: Micros) -> Option<String> {
    if a.next == crate::AttemptNext::Gone {
        return Some("the receiver answered 410 Gone".to_owned());
    }
    if a.next != crate::AttemptNext::Delivered && a.at - failing_since >= a.disable_after_us {
        let hours = a.disable_after_us / 3_600_000_000;
        return Some(format!("failing for {hours} h without a success"));
    }
    None
}

/// How long a gap in the outbox's `seq` may be a transaction still
/// committing on another node, µs. Transactions that write events take
/// milliseconds; a gap older than this is a sequence value burned by a
/// rolled-back transaction, and is passed over.
pub(crate) const OUTBOX_GAP_WAIT_US: Micros = 10_000_000;

/// How many of `events` (read in `seq` order after `cursor`) a reader may
/// take without skipping an event that is still committing: up to the first
/// gap in `seq` whose next event is younger than [`OUTBOX_GAP_WAIT_US`].
/// (PostgreSQL allocates `seq` before commit, so a lower one can appear
/// after a higher one was read.)
pub(crate) fn settled_prefix(cursor: i64, events: &[crate::OutboxEvent], now: Micros) -> usize {
    let mut expect = cursor + 1;
    for (i, e) in events.iter().enumerate() {
        if e.seq != expect && now - e.ts < OUTBOX_GAP_WAIT_US {
            return i;
        }
        expect = e.seq + 1;
    }
    events.len()
}

/// A verdict from its three stored columns (action, rule, sentence); `None`
/// when the action is absent. An action this binary does not know is
/// [`StoreError::Corrupt`].
pub(crate) fn verdict_of(
    action: Option<String>,
    rule: Option<String>,
    reason: Option<String>,
) -> Result<Option<clickward_core::fraud::Verdict>, StoreError> {
    let Some(a) = action else {
        return Ok(None);
    };
    Ok(Some(clickward_core::fraud::Verdict {
        action: clickward_core::fraud::Action::parse(&a).ok_or_else(|| corrupt("verdict", &a))?,
        rule: rule.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
    }))
}

/// The three stored columns of a verdict.
pub(crate) fn verdict_columns(
    v: Option<&clickward_core::fraud::Verdict>,
) -> (Option<&'static str>, Option<&str>, Option<&str>) {
    match v {
        Some(v) => (Some(v.action.as_str()), Some(&v.rule), Some(&v.reason)),
        None => (None, None, None),
    }
}

/// A stored rule from its columns.
pub(crate) fn stored_rule(
    spec: &str,
    owner: &str,
    updated_at: Micros,
) -> Result<crate::StoredRule, StoreError> {
    Ok(crate::StoredRule {
        spec: serde_json::from_str(spec).map_err(|_| corrupt("rule spec", spec))?,
        owner: match owner {
            "file" => crate::RuleOwner::File,
            "admin" => crate::RuleOwner::Admin,
            other => return Err(corrupt("rule owner", other)),
        },
        updated_at,
    })
}

/// The body of a `cap.reached` event: the rule, the counter, the period and
/// how much is used.
pub(crate) fn cap_event(claim: &clickward_core::fraud::CapClaim, used: i64) -> serde_json::Value {
    serde_json::json!({
        "rule": claim.rule,
        "cap": claim.key,
        "period": claim.period,
        "limit": claim.limit,
        "used": used,
        "hard": claim.hard,
        "words": claim.words,
    })
}

/// Judged clicks by UTC day, rule, action, affiliate (then `?1`/`$1` = the
/// lowest click id, as bytes).
pub(crate) const CLICK_VERDICT_COUNTS: &str = "SELECT c.ts / 86400000000, c.verdict_rule, c.verdict, a.slug, COUNT(*) \
     FROM clicks c LEFT JOIN affiliates a ON a.id = c.affiliate_id \
     WHERE c.verdict IS NOT NULL AND c.click_id >= {1} GROUP BY 1, 2, 3, 4 ORDER BY 1 DESC, 5 DESC";

/// Judged conversions by UTC day (of receipt), rule, action, affiliate.
pub(crate) const CONVERSION_VERDICT_COUNTS: &str = "SELECT v.received_at / 86400000000, v.verdict_rule, v.verdict, a.slug, COUNT(*) \
     FROM conversions v LEFT JOIN affiliates a ON a.id = v.affiliate_id \
     WHERE v.verdict IS NOT NULL AND v.received_at >= {1} GROUP BY 1, 2, 3, 4 ORDER BY 1 DESC, 5 DESC";

/// The newest judged clicks (then the lowest click id and a limit).
pub(crate) const RECENT_CLICK_VERDICTS: &str = "SELECT c.click_id, c.ts, p.slug, a.slug, c.verdict_rule, c.verdict, c.verdict_reason \
     FROM clicks c JOIN programs p ON p.id = c.program_id LEFT JOIN affiliates a ON a.id = c.affiliate_id \
     WHERE c.verdict IS NOT NULL AND c.click_id >= {1} ORDER BY c.click_id DESC LIMIT {2}";

/// The newest judged conversions (then the lowest receipt time and a limit).
pub(crate) const RECENT_CONVERSION_VERDICTS: &str = "SELECT v.conversion_id, v.received_at, p.slug, a.slug, v.verdict_rule, v.verdict, v.verdict_reason \
     FROM conversions v JOIN programs p ON p.id = v.program_id LEFT JOIN affiliates a ON a.id = v.affiliate_id \
     WHERE v.verdict IS NOT NULL AND v.received_at >= {1} ORDER BY v.received_at DESC LIMIT {2}";

/// Placeholders `{1}`, `{2}` as `?1, ?2` (SQLite) or `$1, $2` (PostgreSQL).
pub(crate) fn with_params(sql: &str, mark: char) -> String {
    sql.replace("{1}", &format!("{mark}1"))
        .replace("{2}", &format!("{mark}2"))
}

/// Newest first across both kinds, `limit` of each at most.
pub(crate) fn newest_first(mut rows: Vec<crate::VerdictRow>) -> Vec<crate::VerdictRow> {
    rows.sort_by_key(|r| std::cmp::Reverse(r.ts));
    rows
}

/// Clicks for re-scoring (then lowest and highest click id, the time range,
/// an optional program id).
pub(crate) const SCAN_CLICKS: &str = "SELECT click_id, ts, link_id, program_id, affiliate_id, visitor_key, country, \
     referrer_host, bot_reason IS NOT NULL, verdict, verdict_rule, verdict_reason FROM clicks \
     WHERE click_id >= {1} AND click_id < {2} AND ts >= {3} AND ts < {4} AND ({5} IS NULL OR program_id = {5}) \
     ORDER BY click_id";

/// Conversions for re-scoring, with their click's country and verdict (then
/// the receipt range and an optional program id).
pub(crate) const SCAN_CONVERSIONS: &str = "SELECT v.conversion_id, v.program_id, v.affiliate_id, v.received_at, v.ctit_us, \
     v.status, v.held, v.ip_hash, v.buyer_country, k.country, k.verdict, k.verdict_rule, k.verdict_reason, \
     v.verdict, v.verdict_rule, v.verdict_reason FROM conversions v LEFT JOIN clicks k ON k.click_id = v.click_id \
     WHERE v.received_at >= {1} AND v.received_at < {2} AND ({3} IS NULL OR v.program_id = {3}) \
     ORDER BY v.received_at, v.id";

/// One click's verdict columns, by click id (`{1}`..`{5}`: verdict, rule,
/// reason, invalid_reason, click id); a click made invalid loses its unique flag.
pub(crate) const SET_CLICK_VERDICT: &str = "UPDATE clicks SET verdict = {1}, verdict_rule = {2}, verdict_reason = {3}, \
     invalid_reason = {4}, is_unique = CASE WHEN {4} IS NULL THEN is_unique ELSE {6} END WHERE click_id = {5}";

/// Placeholders `{1}`…`{6}` as `?N` (SQLite) or `$N` (PostgreSQL).
pub(crate) fn with_all_params(sql: &str, mark: char) -> String {
    (1..=6).fold(sql.to_owned(), |s, i| {
        s.replace(&format!("{{{i}}}"), &format!("{mark}{i}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, ts: Micros) -> crate::OutboxEvent {
        crate::OutboxEvent {
            seq,
            id: String::new(),
            kind: String::new(),
            ts,
            payload: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_fresh_gap_in_the_outbox_holds_readers_back_and_an_old_one_does_not() {
        let now = 100 * OUTBOX_GAP_WAIT_US;
        // 5 is missing; 6 was written just now: 5 may still commit.
        let fresh = [ev(3, now), ev(4, now), ev(6, now)];
        assert_eq!(settled_prefix(2, &fresh, now), 2);
        // The same gap, long ago: a rolled-back transaction's number.
        let old = [ev(3, 0), ev(4, 0), ev(6, 0), ev(7, now)];
        assert_eq!(settled_prefix(2, &old, now), 4);
        // A gap right after the cursor.
        assert_eq!(settled_prefix(0, &[ev(2, now)], now), 0);
        assert_eq!(settled_prefix(1, &[ev(2, now)], now), 1);
    }
}

/// What a refund does to a conversion (both backends apply it in the
/// refund's transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefundStep {
    /// Rejected or reversed already: nothing to cut.
    Nothing,
    /// Cut to what is left: the new amount and commission, the ledger entry
    /// (bucket, negative minor units), and the gross to keep.
    Cut {
        amount: Option<i64>,
        commission: i64,
        entry: (clickward_core::conversion::LedgerBucket, i64),
        gross: (Option<i64>, i64),
    },
    /// Refunded in full: moved to this status (with what is left of the
    /// commission, as any status change).
    Whole(clickward_core::conversion::ConversionStatus),
}

/// The [`RefundStep`] of a conversion now `status` with `amount` and
/// `commission` (and its gross, if partly refunded before) once its refunds
/// are `refunds` (each `(refunded, total)`, the new one last): the refunded
/// share is their sum on the last one's total.
pub(crate) fn refund_step(
    status: clickward_core::conversion::ConversionStatus,
    (amount, commission): (Option<i64>, i64),
    (gross_amount, gross_commission): (Option<i64>, Option<i64>),
    refunds: &[(i64, i64)],
) -> Result<RefundStep, StoreError> {
    use clickward_core::conversion::{ConversionStatus as S, LedgerBucket};
    if matches!(status, S::Rejected | S::Reversed) {
        return Ok(RefundStep::Nothing);
    }
    let Some(&(_, base)) = refunds.last() else {
        return Ok(RefundStep::Nothing);
    };
    let mut refunded: i128 = 0;
    for &(r, total) in refunds {
        if total <= 0 || r < 0 {
            return Err(StoreError::Refused(format!(
                "a refund of {r} of a payment of {total} (minor units) cannot be applied"
            )));
        }
        refunded += i128::from(r) * i128::from(base) / i128::from(total);
    }
    let refunded = i64::try_from(refunded).unwrap_or(i64::MAX);
    // A conversion is never partly refunded past its gross: the gross is
    // what it had before the first cut.
    let gross = (
        if gross_commission.is_some() {
            gross_amount
        } else {
            amount
        },
        gross_commission.unwrap_or(commission),
    );
    let left = clickward_core::conversion::after_refunds(gross.0, gross.1, refunded, base)
        .map_err(|e| StoreError::Refused(e.to_string()))?;
    if left.full {
        return Ok(RefundStep::Whole(if status == S::Pending {
            S::Rejected
        } else {
            S::Reversed
        }));
    }
    if left.commission == commission && left.amount == amount {
        return Ok(RefundStep::Nothing);
    }
    let bucket = if status == S::Pending {
        LedgerBucket::Pending
    } else {
        LedgerBucket::Payable
    };
    Ok(RefundStep::Cut {
        amount: left.amount,
        commission: left.commission,
        entry: (bucket, left.commission - commission),
        gross,
    })
}

/// The payload of `conversion.refunded`: the conversion as it stands after
/// the cut, and the refund (`{"key","refunded","total"}`, minor units of
/// the payment).
pub(crate) fn refund_event(
    row: &crate::ConversionRow,
    r: &crate::RefundInput,
) -> serde_json::Value {
    serde_json::json!({
        "conversion": row,
        "refund": { "key": r.key, "refunded": r.refunded, "total": r.total },
    })
}
