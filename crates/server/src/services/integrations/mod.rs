//! Platforms as conversion sources: Stripe's and Shopify's webhooks, made
//! into conversions, renewals and refunds (docs/integrations.md).
//!
//! Every event is verified with the program's secret before anything is
//! read from it (401, nothing stored), handled once per platform event id
//! (a replay gets the first answer and changes nothing), and answered 2xx
//! only when it was handled: a conversion made (or found the same), a
//! refund applied, or a considered `ignored` (an event type or payment that
//! earns nothing, with the reason). A 503 asks the platform to retry.
//!
//! | answer `status` | when |
//! |---|---|
//! | 201 `created`, 200 `duplicate` | a conversion, as intake answers |
//! | 200 `unattributed` | stored without a click (the program's `unknown_click = "store"`), with the reason |
//! | 200 `refunded`, `reversed`, `unchanged` | a refund applied, in full, or already |
//! | 200 `remembered`, `ended` | a customer's click kept; a subscription's end noted |
//! | 200 `ignored` | nothing to do, with the reason (counted) |
//! | 200 `rejected`, `cap_reached` | a fraud rule or cap refused it (stored rejected) |
//! | 401 `unauthorized` | bad, missing or old signature |
//! | 404 `not_configured` | no such program, or not set up for this platform |
//! | 400 `malformed` | not the platform's JSON |
//! | 422 `unknown_click`, `invalid` | refused (`unknown_click = "refuse"`; outside the window, a bad currency) |
//! | 503 `click_pending`, `customer_pending` | retry later |

pub mod shopify;
pub mod stripe;

use std::sync::Arc;

use axum::http::StatusCode;
use clickward_core::Micros;
use clickward_core::conversion::ConversionReport;
use clickward_core::id::ConversionId;
use clickward_core::program::{ProgramSettings, UnknownClick};
use clickward_store::{EventKey, Refund, RefundInput, Store, StoreError};
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::services::conversions::{Answer, ConversionService, Via};

/// Longest platform id kept (event ids, customers, invoices), bytes.
const MAX_ID_LEN: usize = 255;

/// The integrations, with what they use. Cheap to clone.
#[derive(Clone)]
pub struct IntegrationService {
    store: Arc<dyn Store>,
    conversions: ConversionService,
    clock: Arc<dyn Clock>,
}

/// `{"status": kind, "reason"}` with `status`: intake's answer shape.
pub(crate) use crate::services::conversions::reject as answer;

pub(crate) fn ignored(reason: impl Into<String>) -> Answer {
    answer(StatusCode::OK, "ignored", reason)
}

fn internal(e: StoreError) -> Answer {
    tracing::error!("integration event not handled: {e}");
    if matches!(e, StoreError::Unavailable(_)) {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database cannot be reached; retry: nothing was recorded",
        );
    }
    answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        "error",
        "internal error; see the server log",
    )
}

/// A platform id as text: a string, or a number (Shopify's ids), at most
/// [`MAX_ID_LEN`] bytes and printable.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    let t = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!t.is_empty() && t.len() <= MAX_ID_LEN && !t.chars().any(char::is_control)).then_some(t)
}

/// A platform's id (a customer, an invoice, a payment intent) as kept:
/// a BLAKE3 digest of `source:id`, so that the database never holds the
/// platform's handle on a person in clear (an erasure leaves nothing to
/// find) while the same id still finds what it named.
pub(crate) fn opaque(source: &str, id: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(source.as_bytes());
    h.update(b":");
    h.update(id.as_bytes());
    h.finalize().to_hex()[..32].to_owned()
}

/// What a payment becomes: the fields of the conversion report, the
/// platform ids that name it, and what was paid (minor units of its
/// currency) for later refunds.
pub(crate) struct Payment {
    pub report: ConversionReport,
    pub renewal: bool,
    /// Why no click id is in `report`, when none is.
    pub no_click: Option<String>,
    pub refs: Vec<String>,
    pub total: Option<i64>,
}

impl IntegrationService {
    /// A service over `store` that makes conversions with `conversions`
    /// and reads the time from `clock`.
    pub fn new(
        store: Arc<dyn Store>,
        conversions: ConversionService,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            conversions,
            clock,
        }
    }

    /// UTC µs now.
    pub(crate) fn now(&self) -> Micros {
        self.clock.now_micros()
    }

    /// The store.
    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The program `slug` and its settings; a 404 answer when there is no
    /// such program.
    pub(crate) async fn program(&self, slug: &str) -> Result<(i64, ProgramSettings), Answer> {
        let not = || {
            answer(
                StatusCode::NOT_FOUND,
                "not_configured",
                "no such program, or it is not set up for this platform",
            )
        };
        let Ok(slug) = slug.parse::<clickward_core::id::Slug>() else {
            return Err(not());
        };
        let p = match self.store.get_program(slug).await {
            Ok(p) => p,
            Err(StoreError::NotFound(_)) => return Err(not()),
            Err(e) => return Err(internal(e)),
        };
        match self.store.program_settings(p.id).await {
            Ok(s) => Ok((p.id, s)),
            Err(e) => Err(internal(e)),
        }
    }

    /// Handles an event once: a replay of `key` gets the answer kept for
    /// it; a 2xx answer of `handle` is kept.
    pub(crate) async fn once(
        &self,
        key: EventKey,
        handle: impl std::future::Future<Output = Answer>,
    ) -> Answer {
        match self.store.integration_answer(key.clone()).await {
            Ok(Some((status, kept))) => {
                let mut body: Value = serde_json::from_str(&kept).unwrap_or(Value::Null);
                // The conversion as it stands now (refunded, erased since).
                if let Some(id) = body
                    .get("conversion_id")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<ConversionId>().ok())
                {
                    match self.store.get_conversion(id).await {
                        Ok(row) => {
                            body["conversion"] =
                                crate::services::conversions::conversion_json(&row);
                        }
                        Err(e) => return internal(e),
                    }
                }
                if let Some(o) = body.as_object_mut() {
                    o.remove("conversion_id");
                }
                return Answer {
                    status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    body,
                };
            }
            Ok(None) => {}
            Err(e) => return internal(e),
        }
        let a = handle.await;
        if a.status.is_success() {
            // What a replay needs, and no personal data: the conversion by
            // its id (read again then), never its order id or subs.
            let body = json!({
                "status": a.body["status"],
                "reason": a.body["reason"],
                "conversion_id": a.body["conversion"]["conversion_id"],
            })
            .to_string();
            // Not kept: a replay handles it again, which changes nothing
            // (conversions and refunds are idempotent on their own ids).
            if let Err(e) = self
                .store
                .save_integration_answer(key, a.status.as_u16(), body, self.now())
                .await
            {
                tracing::warn!("integration answer not kept: {e}");
            }
        }
        a
    }

    /// A payment made into a conversion of program `program_id` by
    /// `actor`: attributed by its click id (intake's rules), else stored
    /// unattributed or refused as `unknown` says; the ids that name it are
    /// kept for refunds.
    pub(crate) async fn convert(
        &self,
        program_id: i64,
        unknown: UnknownClick,
        actor: &'static str,
        pay: Payment,
    ) -> Answer {
        let mut a = match (&pay.report.click_id, &pay.no_click) {
            (Some(_), _) => {
                self.conversions
                    .intake(
                        &pay.report,
                        None,
                        Via::Integration {
                            program_id,
                            actor,
                            renewal: pay.renewal,
                        },
                    )
                    .await
            }
            (None, reason) => answer(
                StatusCode::NOT_FOUND,
                "unknown_click",
                reason.clone().unwrap_or_else(|| "no click id".to_owned()),
            ),
        };
        if a.body["status"] == "unknown_click" {
            let reason = a.body["reason"]
                .as_str()
                .unwrap_or("unknown click")
                .to_owned();
            a = match unknown {
                UnknownClick::Refuse => {
                    answer(StatusCode::UNPROCESSABLE_ENTITY, "unknown_click", reason)
                }
                UnknownClick::Store => {
                    let mut report = pay.report.clone();
                    report.click_id = None;
                    self.conversions
                        .record_unattributed(program_id, &report, actor, &reason)
                        .await
                }
            };
        }
        // Stored, though refused by a rule: handled (a retry would get the
        // same refusal).
        if a.status == StatusCode::UNPROCESSABLE_ENTITY
            && matches!(a.body["status"].as_str(), Some("rejected" | "cap_reached"))
        {
            a.status = StatusCode::OK;
        }
        if a.status.is_success()
            && let Some(id) = a.body["conversion"]["conversion_id"]
                .as_str()
                .and_then(|t| t.parse::<ConversionId>().ok())
            && let Err(e) = self
                .store
                .name_conversion(
                    program_id,
                    actor,
                    pay.refs.iter().map(|r| opaque(actor, r)).collect(),
                    id,
                    pay.total,
                )
                .await
        {
            return internal(e);
        }
        a
    }

    /// Applies a refund of the conversion one of `refs` names: `refunded`
    /// of `total` under `key`; `ignored` when none does.
    pub(crate) async fn refund(
        &self,
        program_id: i64,
        actor: &'static str,
        refs: Vec<String>,
        key: String,
        refunded: i64,
        total: Option<i64>,
    ) -> Answer {
        let refs = refs.iter().map(|r| opaque(actor, r)).collect();
        let (conversion_id, known_total) =
            match self.store.named_conversion(program_id, actor, refs).await {
                Ok(Some(found)) => found,
                Ok(None) => {
                    // No ids in the reason: answers are kept.
                    return ignored(
                        "no conversion of this program is named by what this refund refunds",
                    );
                }
                Err(e) => return internal(e),
            };
        let Some(total) = total.or(known_total) else {
            return ignored("the payment's total is not known, so no share can be refunded");
        };
        let r = RefundInput {
            conversion_id,
            // A charge id in the ledger's reason would name the payment.
            key: opaque(actor, &key),
            refunded,
            total,
            actor: actor.to_owned(),
        };
        match self.store.refund_conversion(r).await {
            Ok(Refund::Changed(row)) => {
                let full = !row.status.counted();
                let conversion = crate::services::conversions::conversion_json(&row);
                Answer {
                    status: StatusCode::OK,
                    body: json!({
                        "status": if full { "reversed" } else { "refunded" },
                        "reason": if full { "refunded in full: the conversion is reversed" } else { "refunded in part: amount and commission cut in proportion" },
                        "conversion": conversion,
                    }),
                }
            }
            Ok(Refund::Unchanged(row)) => Answer {
                status: StatusCode::OK,
                body: json!({
                    "status": "unchanged",
                    "reason": "this refund was applied already, or the conversion is rejected or reversed",
                    "conversion": crate::services::conversions::conversion_json(&row),
                }),
            },
            Err(StoreError::Refused(reason)) => {
                answer(StatusCode::UNPROCESSABLE_ENTITY, "invalid", reason)
            }
            Err(e) => internal(e),
        }
    }
}

/// Counts a handled event in `clickward_integration_events_total`.
pub(crate) fn count(source: &'static str, a: &Answer) {
    let outcome = a.body["status"].as_str().unwrap_or("error").to_owned();
    metrics::counter!(crate::telemetry::INTEGRATION_EVENTS_TOTAL, "source" => source, "outcome" => outcome)
        .increment(1);
}
