//! Conversion intake: the one function every path ends in (S2S postback,
//! JSON API, pixel), and its truthful answers.
//!
//! | answer | when |
//! |---|---|
//! | 201 `created` | a new conversion |
//! | 200 `duplicate` | the same (program, event, order id) with the same data: nothing changed, the original is returned |
//! | 409 `conflict` | the same (program, event, order id) with different data: nothing changed |
//! | 404 `unknown_click` | no such click id (or no click id and no attribution cookie) |
//! | 503 `click_pending` | a click id of the last 10 minutes not stored after a 2 s wait (on its way from a node's spool): retry, `Retry-After: 5` |
//! | 422 `invalid` | outside the attribution window, bad amount or currency, disabled affiliate, click of another program |
//! | 422 `rejected` | a fraud rule rejected it: stored rejected, with the rule and its sentence (a retry gets the same answer) |
//! | 422 `cap_reached` | a hard cap of the program or affiliate is full: stored rejected, as above |
//! | 401 `unauthorized` | bad postback token or signature, or a source IP not allowed |
//! | 400 `malformed` | missing or malformed fields |
//!
//! Never 200 on a rejection. Uniqueness is enforced by the database in the
//! same transaction as the insert (`UNIQUE (program_id, event, order_id)`),
//! so replays, concurrent duplicates and reordered retries make one
//! conversion.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use clickward_core::Micros;
use clickward_core::attribution;
use clickward_core::commission;
use clickward_core::conversion::{self, ConversionReport, ConversionStatus};
use clickward_core::fraud::{self, Action, CapClaim, ConversionSignals, Verdict};
use clickward_core::id::{ClickId, ConversionId};
use clickward_core::money::{Currency, ExchangeRate};
use clickward_store::{ClickFacts, ConversionRow, NewConversion, Recorded, Store, StoreError};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::services::events::EventHub;
use crate::services::fraud::Buyer;
use crate::services::links::LinkCache;

/// How the report arrived, and what authenticates it.
pub enum Via<'a> {
    /// `POST /api/v1/conversions` with an admin key (already checked).
    Api {
        /// Who, for the ledger (`api:<key prefix>`).
        actor: String,
    },
    /// `GET|POST /postback`: authenticated by the program's token, an
    /// HMAC-SHA256 signature of the query, and/or the source IP.
    Postback {
        /// The raw query string as received (for the signature).
        raw_query: &'a str,
        /// `token`, `security_token` (TUNE) or `verification_token` (Everflow).
        token: Option<&'a str>,
        /// `signature`: hex HMAC-SHA256 of the query without it.
        signature: Option<&'a str>,
        /// The client IP (behind trusted proxies).
        ip: IpAddr,
    },
    /// A platform's webhook (Stripe, Shopify), verified by
    /// `services::integrations`.
    Integration {
        /// The program whose endpoint received it: a click of another
        /// program is refused.
        program_id: i64,
        /// Who, for the ledger (`stripe`, `shopify`).
        actor: &'static str,
        /// A subscription's later payment: its customer was attributed by
        /// the first one, so the attribution window (which that first
        /// payment passed) does not apply again.
        renewal: bool,
    },
    /// `GET /pixel.gif`: same-domain setups, attributed by the cookie only,
    /// and only for programs that turned the pixel on (see
    /// `clickward_core::program::PixelMode`).
    Pixel {
        /// `sig`: hex HMAC-SHA256, with the program's postback secret, of
        /// [`pixel_signed_text`] (the merchant's server puts it on the page).
        sig: Option<&'a str>,
        /// The buyer's browser's address (behind trusted proxies).
        ip: IpAddr,
    },
}

/// What a signed pixel's `sig` covers: `order_id=<order id>&amount=<amount>`
/// with both exactly as sent in the pixel URL (decoded; an absent amount is
/// empty). The merchant's server computes it for each order, so a page
/// cannot invent orders or amounts.
pub fn pixel_signed_text(order_id: Option<&str>, amount: Option<&str>) -> String {
    format!(
        "order_id={}&amount={}",
        order_id.unwrap_or(""),
        amount.unwrap_or("")
    )
}

/// An answer: status code and JSON body.
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// `{"status": …, "reason": …, "conversion": …}`.
    pub body: Value,
}

pub(crate) fn reject(status: StatusCode, kind: &str, reason: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({ "status": kind, "reason": reason.into() }),
    }
}

/// Conversion intake and status changes, with what they use. Cheap to clone.
#[derive(Clone)]
pub struct ConversionService {
    store: Arc<dyn Store>,
    events: Arc<EventHub>,
    clock: Arc<dyn Clock>,
    rates: Arc<Rates>,
    links: Arc<LinkCache>,
    buyer_of: BuyerLookup,
}

/// What intake learns of a buyer's address: its keyed hash and country
/// (the caller holds the GeoIP files and the exclusion key).
pub type BuyerLookup = Arc<dyn Fn(IpAddr) -> Buyer + Send + Sync>;

/// Exchange rates by (from, to) currency, as configured in `[rates]`.
pub type Rates = HashMap<(Currency, Currency), ExchangeRate>;

/// A report's own fields, read (see `ConversionService::read_report`).
struct Read {
    order_id: String,
    event: String,
    status: ConversionStatus,
    /// In the program's currency, minor units.
    amount: Option<i64>,
    /// UTC µs.
    occurred_at: Micros,
}

/// Where a click was looked for.
enum Found {
    /// Stored: attribute to it.
    Stored(Box<ClickFacts>),
    /// Recent by its id's time, and still not stored after
    /// [`CLICK_GRACE`]: answered 503 with Retry-After, never 404.
    NotYet,
    /// Not stored, and too old to be on its way: 404.
    Unknown,
}

/// How long intake waits for a recent click that is not stored yet: a
/// redirect answered by another node (or, with `durability = "buffered"`,
/// by this one) may still be on its way to the store (a node's spool ships
/// in tens of ms, longer when PostgreSQL lags).
const CLICK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A click id whose time is at most this old (ms) and that is not stored
/// may still arrive: "not yet", not "unknown".
const RECENT_CLICK_MS: i64 = 10 * 60 * 1000;

impl ConversionService {
    /// The program a postback's credentials are for (`None` for the API and
    /// the pixel, which are authenticated otherwise): the one whose token
    /// matches, or whose secret verifies the signature, and whose IP
    /// allowlist (if any) admits the sender. `Err(Ok(reason))` is a 401.
    async fn postback_program(
        &self,
        via: &Via<'_>,
    ) -> Result<Option<i64>, Result<String, StoreError>> {
        if !matches!(via, Via::Postback { .. }) {
            return Ok(None);
        }
        let programs = self.store.list_programs().await.map_err(Err)?;
        let mut last = "missing token= (or signature=)".to_owned();
        for p in programs {
            let settings = self.store.program_settings(p.id).await.map_err(Err)?;
            match authenticate(via, &settings) {
                Ok(()) => return Ok(Some(p.id)),
                // The reason of a program these credentials name (its IP
                // allowlist, its demand for a signature) beats "no match".
                Err(Refusal::Named(reason)) => return Err(Ok(reason)),
                Err(Refusal::NotThis(reason)) => last = reason,
            }
        }
        Err(Ok(last))
    }

    /// The click's facts, waiting up to [`CLICK_GRACE`] for a recent one.
    async fn find_click(&self, id: ClickId, now: Micros) -> Result<Found, StoreError> {
        if let Some(c) = self.store.click_facts(id).await? {
            return Ok(Found::Stored(Box::new(c)));
        }
        let age_ms = now / 1000 - i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX);
        // A little ahead of us is another node's clock, not a forgery.
        if !(-MAX_CLOCK_SKEW_US / 1000..=RECENT_CLICK_MS).contains(&age_ms) {
            return Ok(Found::Unknown);
        }
        let deadline = tokio::time::Instant::now() + CLICK_GRACE;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            if let Some(c) = self.store.click_facts(id).await? {
                return Ok(Found::Stored(Box::new(c)));
            }
        }
        Ok(Found::NotYet)
    }

    /// A service over `store` that tells `events` of every change, reads the
    /// time from `clock`, converts other currencies with `rates`, judges
    /// conversions by the rules the link cache `links` holds, and learns of
    /// buyers' addresses with `buyer_of`.
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<EventHub>,
        clock: Arc<dyn Clock>,
        rates: Rates,
        links: Arc<LinkCache>,
        buyer_of: BuyerLookup,
    ) -> Self {
        Self {
            store,
            events,
            clock,
            rates: Arc::new(rates),
            links,
            buyer_of,
        }
    }

    /// The conversion rules' verdict and the cap claims of a conversion of
    /// `click` at `now`, given the buyer.
    async fn judge(
        &self,
        click: &ClickFacts,
        ctit: Micros,
        buyer: &Buyer,
        commission: i64,
        now: Micros,
    ) -> Result<(Option<Verdict>, Vec<CapClaim>), StoreError> {
        let book = self.links.rules();
        let Some((rules, tz, currency)) =
            book.conversion_rules(click.program_id, click.affiliate_id)
        else {
            return Ok((None, Vec::new()));
        };
        let own = |h: &[u8; 16]| {
            book.excluded(h)
                .is_some_and(|e| e.affiliate_id.is_some() && e.affiliate_id == click.affiliate_id)
        };
        let self_referral = click
            .verdict
            .as_ref()
            .is_some_and(|v| v.rule == fraud::SELF_REFERRAL)
            || buyer.ip_hash.as_ref().is_some_and(own);
        let same_ip_conversions = match (
            rules.duplicate_ip_window(),
            click.affiliate_id,
            buyer.ip_hash,
        ) {
            (Some(w), Some(a), Some(h)) => Some(
                u32::try_from(self.store.same_ip_conversions(a, h, now - w).await?)
                    .unwrap_or(u32::MAX),
            ),
            _ => None,
        };
        let clicks_and_conversions = match (rules.conversion_rate_window(), &click.affiliate_id) {
            (Some(w), Some(_)) => Some(self.activity(click, now - w, now).await?),
            _ => None,
        };
        let verdict = rules.evaluate(&ConversionSignals {
            ctit: Some(ctit),
            self_referral,
            same_ip_conversions,
            clicks_and_conversions,
            click_country: click.country.as_deref(),
            conversion_country: buyer.country.as_deref(),
            click_verdict: click.verdict.as_ref(),
        });
        let caps = if verdict.as_ref().is_some_and(|v| v.action == Action::Reject) {
            Vec::new()
        } else {
            fraud::cap_claims(
                rules.caps(),
                fraud::CapMetric::Conversions,
                &fraud::CapSubject {
                    program_id: click.program_id,
                    affiliate_id: click.affiliate_id,
                    ts: now,
                    tz,
                    commission,
                    currency,
                },
            )
        };
        Ok((verdict, caps))
    }

    /// Human clicks and conversions (this one included) of the click's
    /// affiliate in its program in `[since, now)`, from the report (rollups
    /// where settled, raw rows after).
    async fn activity(
        &self,
        click: &ClickFacts,
        since: Micros,
        now: Micros,
    ) -> Result<(u64, u64), StoreError> {
        use clickward_core::report::Dimension;
        // The rule book already knows the slugs: no catalogue read per conversion.
        let book = self.links.rules();
        let (Some((program, _, _)), Some(affiliate)) = (
            book.program_zone(click.program_id),
            book.affiliate_slug(click.affiliate_id),
        ) else {
            return Ok((0, 0));
        };
        let program = program.to_owned();
        let rows = self
            .store
            .click_report(clickward_store::ReportQuery {
                start: since - since.rem_euclid(1000),
                end: now - now.rem_euclid(1000) + 1000,
                buckets: None,
                dims: Vec::new(),
                filters: vec![
                    (Dimension::Program, program),
                    (Dimension::Affiliate, affiliate),
                ],
                raw_only: false,
                by_click_time: false,
            })
            .await?;
        let (clicks, conversions) = rows.iter().fold((0i64, 0i64), |(c, v), r| {
            (c + r.counts.clicks(), v + r.money.conversions)
        });
        Ok((
            u64::try_from(clicks).unwrap_or(0),
            u64::try_from(conversions).unwrap_or(0) + 1,
        ))
    }

    /// Moves a conversion to `to` (approve, reject, reverse) as `actor`, with a
    /// reason (cut to 1,000 bytes), and tells live subscribers. Shared by the API
    /// and the dashboard's forms.
    ///
    /// # Errors
    /// `NotFound`, or `Refused` when the lifecycle forbids the change.
    pub async fn change_status(
        &self,
        id: ConversionId,
        to: ConversionStatus,
        actor: String,
        reason: Option<String>,
    ) -> Result<ConversionRow, StoreError> {
        let reason = reason
            .map(|r| clickward_core::truncate_utf8(r.trim(), 1000).to_owned())
            .filter(|r| !r.is_empty());
        let row = self
            .store
            .set_conversion_status(id, to, actor, reason)
            .await?;
        self.events
            .publish(crate::services::events::LiveEvent::Conversion {
                conversion: conversion_json(&row),
                change: row.status.as_str().to_owned(),
            });
        Ok(row)
    }

    /// The report's own fields read against the program's `settings` at
    /// `now`: order id, event, status, the amount in the program's
    /// currency (converted at the configured rate), and when it happened.
    /// `Err` is the answer that refuses it.
    fn read_report(
        &self,
        report: &ConversionReport,
        settings: &clickward_core::program::ProgramSettings,
        now: Micros,
    ) -> Result<Read, Answer> {
        let s = self;
        let Some(order_id) = &report.order_id else {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "malformed",
                "missing order id (order_id, txid, conversion_unique_id, external_id, invoice_id)",
            ));
        };
        let order_id = match conversion::parse_order_id(order_id) {
            Ok(o) => o,
            Err(e) => return Err(reject(StatusCode::BAD_REQUEST, "malformed", e)),
        };
        let event = match report.event.as_deref().map(conversion::parse_event) {
            None => "sale".to_owned(),
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(reject(StatusCode::BAD_REQUEST, "malformed", e)),
        };
        let status = match report.status.as_deref().map(str::trim) {
            None | Some("pending") => ConversionStatus::Pending,
            Some("approved") => ConversionStatus::Approved,
            Some(other) => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    format!(
                        "status {:?} is not pending or approved",
                        clickward_core::truncate_utf8(other, 40)
                    ),
                ));
            }
        };
        let currency = match &report.currency {
            None => settings.currency,
            Some(c) => match Currency::parse(c) {
                Ok(c) => c,
                Err(e) => {
                    return Err(reject(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        e.to_string(),
                    ));
                }
            },
        };
        let rate = if currency == settings.currency {
            None
        } else {
            match s.rates.get(&(currency, settings.currency)) {
                Some(r) => Some(*r),
                None => {
                    return Err(reject(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        format!(
                            "currency {currency} differs from the program's {p} and no {currency}/{p} rate is configured",
                            p = settings.currency
                        ),
                    ));
                }
            }
        };
        let amount = match report.amount.as_deref().map(|a| currency.parse_amount(a)) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                return Err(reject(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    e.to_string(),
                ));
            }
        };
        // Amounts in another currency are converted once, at intake, into the
        // program's currency; the commission is computed on the converted amount.
        let amount = match (amount, rate) {
            (Some(a), Some(r)) => match r.convert(a, currency, settings.currency) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Err(reject(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        e.to_string(),
                    ));
                }
            },
            (a, _) => a,
        };
        let occurred_at = match report.occurred_at.as_deref() {
            None => now,
            Some(t) => match parse_time(t) {
                Some(ts) => ts,
                None => {
                    return Err(reject(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        "occurred_at is not RFC 3339 or Unix seconds",
                    ));
                }
            },
        };
        if occurred_at > now + MAX_CLOCK_SKEW_US {
            return Err(reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "occurred_at is {} s after the time this server received it; at most {} s of clock skew is allowed",
                    (occurred_at - now) / 1_000_000,
                    MAX_CLOCK_SKEW_US / 1_000_000
                ),
            ));
        }
        Ok(Read {
            order_id,
            event,
            status,
            amount,
            occurred_at,
        })
    }

    /// Tells live subscribers of a new conversion; its answer.
    fn created(&self, row: &ConversionRow, status: StatusCode, kind: &str, reason: &str) -> Answer {
        let conversion = conversion_json(row);
        self.events
            .publish(crate::services::events::LiveEvent::Conversion {
                conversion: conversion.clone(),
                change: "created".to_owned(),
            });
        Answer {
            status,
            body: json!({ "status": kind, "reason": reason, "conversion": conversion }),
        }
    }

    /// Records a report that no click earned (a platform's payment without
    /// a known click, where the program stores those): program
    /// `program_id`'s, no affiliate, no commission, as `actor`. Answers 200
    /// `unattributed` with `reason` (or `duplicate`, `conflict` as intake
    /// does); the report's fields are checked as intake checks them.
    pub async fn record_unattributed(
        &self,
        program_id: i64,
        report: &ConversionReport,
        actor: &'static str,
        reason: &str,
    ) -> Answer {
        let now = self.clock.now_micros();
        let settings = match self.store.program_settings(program_id).await {
            Ok(p) => p,
            Err(e) => return internal(e),
        };
        let Read {
            order_id,
            event,
            status,
            amount,
            occurred_at,
        } = match self.read_report(report, &settings, now) {
            Ok(r) => r,
            Err(a) => return a,
        };
        let fingerprint = *blake3::hash(
            serde_json::to_string(&json!([
                "unattributed",
                event,
                order_id,
                amount,
                settings.currency.code(),
                status.as_str(),
                report.occurred_at.as_ref().map(|_| occurred_at),
                report.adv_subs,
            ]))
            .unwrap_or_default()
            .as_bytes(),
        )
        .as_bytes();
        let new = NewConversion {
            conversion_id: ConversionId(ulid::Ulid::from_parts(
                u64::try_from(now / 1000).unwrap_or(0),
                rand::random::<u128>(),
            )),
            program_id,
            event,
            order_id,
            click: None,
            amount,
            currency: settings.currency,
            commission: 0,
            status,
            occurred_at,
            received_at: now,
            adv_subs: report.adv_subs.clone(),
            fingerprint,
            actor: actor.to_owned(),
            held: false,
            verdict: None,
            ip_hash: None,
            buyer_country: None,
            caps: Vec::new(),
        };
        match self.store.record_conversion(new).await {
            Ok(Recorded::Created(row)) => {
                self.created(&row, StatusCode::OK, "unattributed", reason)
            }
            Ok(Recorded::Replay(row)) => replay_answer(&row),
            Ok(Recorded::Conflict(row)) => conflict_answer(&row),
            Err(e) => internal(e),
        }
    }

    /// Validates, attributes, prices and records a conversion report.
    pub async fn intake(
        &self,
        report: &ConversionReport,
        cookie_click: Option<ClickId>,
        via: Via<'_>,
    ) -> Answer {
        let s = self;
        let now = s.clock.now_micros();

        // Credentials first: whether a click id exists is told only to a
        // caller who may report conversions (no 404-vs-401 oracle).
        let credited = match s.postback_program(&via).await {
            Ok(p) => p,
            Err(Ok(reason)) => return reject(StatusCode::UNAUTHORIZED, "unauthorized", reason),
            Err(Err(e)) => return internal(e),
        };

        // Which click: an explicit id beats the cookie.
        let (click_id, by) = match (&report.click_id, cookie_click) {
            (Some(text), _) => match text.trim().parse::<ClickId>() {
                Ok(id) => (id, "click_id"),
                Err(_) => {
                    return reject(StatusCode::NOT_FOUND, "unknown_click", "unknown click id");
                }
            },
            (None, Some(id)) => (id, "cookie"),
            (None, None) => {
                return reject(
                    StatusCode::NOT_FOUND,
                    "unknown_click",
                    "no click id (click_id, transaction_id, cid, clickid, subid) and no attribution cookie",
                );
            }
        };
        let click = match self.find_click(click_id, now).await {
            Ok(Found::Stored(c)) => *c,
            Ok(Found::NotYet) => {
                return reject(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "click_pending",
                    format!(
                        "click {click_id} is recent and not stored yet (it may still be on its way from a node's spool); retry: nothing was recorded"
                    ),
                );
            }
            Ok(Found::Unknown) => {
                return reject(
                    StatusCode::NOT_FOUND,
                    "unknown_click",
                    format!("unknown click id {click_id}"),
                );
            }
            Err(e) => return internal(e),
        };
        let settings = match s.store.program_settings(click.program_id).await {
            Ok(p) => p,
            Err(e) => return internal(e),
        };
        if let Via::Integration { program_id, .. } = via
            && program_id != click.program_id
        {
            return reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("click {click_id} is of another program than this endpoint's"),
            );
        }
        if credited.is_some_and(|p| p != click.program_id) {
            return reject(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "these postback credentials are not for the program of this click",
            );
        }
        let mut held = match &via {
            Via::Pixel { sig, .. } => match pixel_allows(&settings, report, *sig) {
                Ok(held) => held,
                Err(a) => return a,
            },
            _ => false,
        };

        let Read {
            order_id,
            event,
            status,
            amount,
            occurred_at,
        } = match self.read_report(report, &settings, now) {
            Ok(r) => r,
            Err(a) => return a,
        };
        let currency = settings.currency;
        if let (Via::Pixel { .. }, Some(max), Some(a)) = (&via, settings.pixel_max_amount, amount)
            && a > max
        {
            return reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "the pixel may report at most {} {currency} for this program; report larger orders by postback",
                    currency.format(max)
                ),
            );
        }
        if !click.affiliate_active {
            return reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "the click's affiliate is disabled",
            );
        }
        let window = match via {
            Via::Integration { renewal: true, .. } => i64::MAX,
            _ => settings.attribution_window_s.saturating_mul(1_000_000),
        };
        let ctit = match attribution::ctit(click.ts, occurred_at, window) {
            Ok(c) => c,
            Err(e) => return reject(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()),
        };
        let override_plan = match click.affiliate_id {
            Some(a) => match s.store.affiliate_commission(click.program_id, a).await {
                Ok(p) => p,
                Err(e) => return internal(e),
            },
            None => None,
        };
        let commission =
            match commission::resolve(&settings.commission, override_plan.as_ref(), &event) {
                None => 0,
                Some(rate) => match rate.commission(&event, amount) {
                    Ok(c) => c,
                    Err(e) => {
                        return reject(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string());
                    }
                },
            };

        let buyer_ip = match (report.buyer_ip.as_deref(), &via) {
            (Some(text), _) => match text.trim().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return reject(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        format!(
                            "ip {:?} is not an IPv4 or IPv6 address",
                            clickward_core::truncate_utf8(text, 60)
                        ),
                    );
                }
            },
            (None, Via::Pixel { ip, .. }) => Some(*ip),
            (None, _) => None,
        };
        let buyer = buyer_ip.map(|ip| (self.buyer_of)(ip)).unwrap_or_default();
        let (verdict, caps) = match self.judge(&click, ctit, &buyer, commission, now).await {
            Ok(v) => v,
            Err(e) => return internal(e),
        };
        held |= verdict.as_ref().is_some_and(|v| v.action == Action::Hold);

        // What makes a retry "the same report": everything sent except the time
        // of receipt (occurred_at only when it was sent).
        let fingerprint = *blake3::hash(
            serde_json::to_string(&json!([
                click_id.to_string(),
                event,
                order_id,
                amount,
                currency.code(),
                status.as_str(),
                report.occurred_at.as_ref().map(|_| occurred_at),
                report.adv_subs,
            ]))
            .unwrap_or_default()
            .as_bytes(),
        )
        .as_bytes();
        let actor = match &via {
            Via::Api { actor } => actor.clone(),
            Via::Postback { .. } => "postback".to_owned(),
            Via::Pixel { .. } => "pixel".to_owned(),
            Via::Integration { actor, .. } => (*actor).to_owned(),
        };
        // A held or rejected conversion starts pending, whatever was reported
        // (the fingerprint above keeps what was sent).
        let status = match verdict.as_ref().map(|v| v.action) {
            Some(Action::Hold | Action::Reject) => ConversionStatus::Pending,
            _ => status,
        };
        let new = NewConversion {
            conversion_id: ConversionId(ulid::Ulid::from_parts(
                u64::try_from(now / 1000).unwrap_or(0),
                rand::random::<u128>(),
            )),
            program_id: click.program_id,
            event,
            order_id,
            click: Some((click, ctit, by)),
            amount,
            currency,
            commission,
            status,
            occurred_at,
            received_at: now,
            adv_subs: report.adv_subs.clone(),
            fingerprint,
            actor,
            held,
            verdict,
            ip_hash: buyer.ip_hash,
            buyer_country: buyer.country,
            caps,
        };
        let cap_rules: Vec<String> = new.caps.iter().map(|c| c.rule.clone()).collect();
        match s.store.record_conversion(new).await {
            Ok(Recorded::Created(row) | Recorded::Replay(row))
                if row.status == ConversionStatus::Rejected && row.verdict.is_some() =>
            {
                // A retry of a refused report gets the same refusal.
                rejected_answer(&row, &cap_rules)
            }
            Ok(Recorded::Created(row)) => {
                s.created(&row, StatusCode::CREATED, "created", "new conversion")
            }
            Ok(Recorded::Replay(row)) => replay_answer(&row),
            Ok(Recorded::Conflict(row)) => conflict_answer(&row),
            Err(e) => internal(e),
        }
    }
}

/// The 200 of a report recorded before.
fn replay_answer(row: &ConversionRow) -> Answer {
    Answer {
        status: StatusCode::OK,
        body: json!({ "status": "duplicate", "reason": "exact replay of an accepted conversion; nothing changed", "conversion": conversion_json(row) }),
    }
}

/// The 409 of a report whose order id was recorded with other data.
fn conflict_answer(row: &ConversionRow) -> Answer {
    Answer {
        status: StatusCode::CONFLICT,
        body: json!({ "status": "conflict", "reason": "this order id was already reported for this program and event with different data; nothing changed", "conversion": conversion_json(row) }),
    }
}

/// The 422 of a conversion the rules rejected (stored rejected):
/// `cap_reached` when a hard cap refused it, else `rejected`; with the rule,
/// its sentence and the stored conversion.
fn rejected_answer(row: &ConversionRow, cap_rules: &[String]) -> Answer {
    let (rule, reason) = row
        .verdict
        .as_ref()
        .map(|v| (v.rule.as_str(), v.reason.as_str()))
        .unwrap_or_default();
    let kind = if cap_rules.iter().any(|r| r == rule) {
        "cap_reached"
    } else {
        "rejected"
    };
    Answer {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: json!({ "status": kind, "rule": rule, "reason": reason, "conversion": conversion_json(row) }),
    }
}

/// A conversion as answers and the API show it: money as decimal text
/// (in the currency's minor unit) and as minor units; times UTC µs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversionView {
    /// Its id (ULID).
    pub conversion_id: ConversionId,
    /// Program slug.
    pub program: String,
    /// Event name (`sale`, `lead`, …).
    pub event: String,
    /// The merchant's order id.
    pub order_id: String,
    /// The click it is attributed to; `null`: unattributed.
    pub click_id: Option<ClickId>,
    /// The click's link code.
    pub link: Option<String>,
    /// The click's affiliate slug.
    pub affiliate: Option<String>,
    /// The click's placement.
    pub src: Option<String>,
    /// The click's sub1..sub5.
    pub subs: [Option<String>; 5],
    /// Sale amount as decimal text (`"12.34"`).
    pub amount: Option<String>,
    /// Sale amount, minor units.
    pub amount_minor: Option<i64>,
    /// Commission as decimal text.
    pub commission: String,
    /// Commission, minor units.
    pub commission_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// `pending`, `approved`, `rejected`, `reversed` or `paid`.
    pub status: ConversionStatus,
    /// When it happened, UTC µs.
    pub occurred_at: i64,
    /// When it was recorded, UTC µs.
    pub received_at: i64,
    /// Click to conversion time (CTIT), seconds.
    pub ctit_s: Option<i64>,
    /// `click_id` or `cookie`.
    pub attributed_by: Option<String>,
    /// Held for review: the hold period never approves it (an admin does).
    pub held: bool,
    /// The fraud verdict with its rule and sentence.
    pub verdict: Option<Verdict>,
    /// adv_sub1..adv_sub5.
    pub adv_subs: [Option<String>; 5],
    /// Before the first partial refund (docs/integrations.md, "Refunds");
    /// `null` when never refunded in part.
    pub gross_amount_minor: Option<i64>,
    /// Before the first partial refund, minor units.
    pub gross_commission_minor: Option<i64>,
}

impl ConversionView {
    /// The view of a stored conversion.
    pub fn of(c: &ConversionRow) -> Self {
        let cur = Currency::parse(&c.currency).ok();
        let fmt = |m: i64| cur.map(|c| c.format(m)).unwrap_or_else(|| m.to_string());
        Self {
            conversion_id: c.conversion_id,
            program: c.program.clone(),
            event: c.event.clone(),
            order_id: c.order_id.clone(),
            click_id: c.click_id,
            link: c.link.clone(),
            affiliate: c.affiliate.clone(),
            src: c.src.clone(),
            subs: c.subs.clone(),
            amount: c.amount_minor.map(fmt),
            amount_minor: c.amount_minor,
            commission: fmt(c.commission_minor),
            commission_minor: c.commission_minor,
            currency: c.currency.clone(),
            status: c.status,
            occurred_at: c.occurred_at,
            received_at: c.received_at,
            ctit_s: c.ctit_us.map(|u| u / 1_000_000),
            attributed_by: c.attributed_by.clone(),
            held: c.held,
            verdict: c.verdict.clone(),
            adv_subs: c.adv_subs.clone(),
            gross_amount_minor: c.gross_amount_minor,
            gross_commission_minor: c.gross_commission_minor,
        }
    }
}

/// A conversion as answers show it ([`ConversionView`] as JSON).
pub fn conversion_json(c: &ConversionRow) -> Value {
    serde_json::to_value(ConversionView::of(c)).unwrap_or(Value::Null)
}

fn sha(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Why a program refused a postback's credentials.
enum Refusal {
    /// They are not this program's (wrong token, a signature its secret does
    /// not verify): another program may take them.
    NotThis(String),
    /// They are this program's, and it still refuses (its IP allowlist, or it
    /// demands a signature and got only its token).
    Named(String),
}

/// Checks a postback's credentials against one program's settings.
/// Whether the program's pixel takes this report: `Ok(held)` (held for
/// review when the pixel is merely on), or the refusal to send.
fn pixel_allows(
    s: &clickward_core::program::ProgramSettings,
    report: &ConversionReport,
    sig: Option<&str>,
) -> Result<bool, Answer> {
    use clickward_core::program::PixelMode;
    match s.pixel {
        PixelMode::Off => Err(reject(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the conversion pixel is off for this program (a program turns it on with pixel = \"on\" or \"signed\"; see docs/postbacks.md)",
        )),
        PixelMode::On => Ok(true),
        PixelMode::Signed => {
            let Some(secret) = &s.postback_secret else {
                return Err(reject(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this program's pixel must be signed but it has no postback_secret to sign with",
                ));
            };
            let text = pixel_signed_text(report.order_id.as_deref(), report.amount.as_deref());
            let verified = sig
                .and_then(|s| hex::decode(s.trim()).ok())
                .zip(Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok())
                .is_some_and(|(expected, mut mac)| {
                    mac.update(text.as_bytes());
                    mac.verify_slice(&expected).is_ok()
                });
            if verified {
                Ok(false)
            } else {
                Err(reject(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this program's pixel needs sig=, the merchant's HMAC-SHA256 of order_id=…&amount=… (docs/postbacks.md)",
                ))
            }
        }
    }
}

fn authenticate(
    via: &Via<'_>,
    s: &clickward_core::program::ProgramSettings,
) -> Result<(), Refusal> {
    let Via::Postback {
        raw_query,
        token,
        signature,
        ip,
    } = via
    else {
        return Ok(());
    };
    let signed_by_it = match (signature, &s.postback_secret) {
        (Some(sig), Some(secret)) => {
            let signed = strip_param(raw_query, "signature");
            let expected = hex::decode(sig.trim())
                .map_err(|_| Refusal::NotThis("signature is not hex".to_owned()))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|_| Refusal::NotThis("postback secret unusable".to_owned()))?;
            mac.update(signed.as_bytes());
            if mac.verify_slice(&expected).is_err() {
                return Err(Refusal::NotThis(
                    "signature does not match the request".to_owned(),
                ));
            }
            true
        }
        (Some(_), None) => {
            return Err(Refusal::NotThis(
                "no program with a postback secret verifies this signature".to_owned(),
            ));
        }
        (None, _) => false,
    };
    if !signed_by_it {
        match (token, &s.postback_token) {
            // Compare digests: equal-length, so the comparison leaks nothing useful.
            (Some(t), Some(want)) if sha(t) == sha(want) => {}
            (Some(_), _) => {
                return Err(Refusal::NotThis("postback token does not match".to_owned()));
            }
            (None, _) => {
                return Err(Refusal::NotThis(
                    "missing token= (or signature=)".to_owned(),
                ));
            }
        }
        if s.postback_secret.is_some() {
            // Turning signatures on must protect something: the token alone
            // no longer does.
            return Err(Refusal::Named(
                "this program signs its postbacks: a signature= (HMAC-SHA256, docs/postbacks.md) is required"
                    .to_owned(),
            ));
        }
    }
    if !s.postback_ips.is_empty() {
        let allowed = s.postback_ips.iter().any(|n| {
            n.parse::<ipnet::IpNet>()
                .map(|net| net.contains(ip))
                .or_else(|_| n.parse::<IpAddr>().map(|a| a == *ip))
                .unwrap_or(false)
        });
        if !allowed {
            return Err(Refusal::Named(
                "postbacks for this program are not accepted from this address".to_owned(),
            ));
        }
    }
    Ok(())
}

/// The query string without `name=…` pairs, as sent otherwise.
pub fn strip_param(raw: &str, name: &str) -> String {
    raw.split('&')
        .filter(|p| p.split('=').next() != Some(name))
        .collect::<Vec<_>>()
        .join("&")
}

/// How far in the future a conversion's `occurred_at` may be (a sender's
/// clock running ahead), µs: 5 minutes.
const MAX_CLOCK_SKEW_US: i64 = 300 * 1_000_000;

fn parse_time(s: &str) -> Option<i64> {
    clickward_core::parse_timestamp(s).ok()
}

fn internal(e: StoreError) -> Answer {
    tracing::error!("conversion intake failed: {e}");
    reject(
        StatusCode::INTERNAL_SERVER_ERROR,
        "error",
        "internal error; see the server log",
    )
}
