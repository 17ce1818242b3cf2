//! Stripe webhooks (`POST /integrations/stripe/{program}`).
//!
//! Signature: `Stripe-Signature: t=<unix s>,v1=<hex>[,v1=…]`, each `v1` an
//! HMAC-SHA256 with the endpoint's secret of `"{t}.{raw body}"`; events
//! older (or newer) than the tolerance are refused, as Stripe's libraries
//! do (stripe.com/docs/webhooks, "Verify webhook signatures manually").
//!
//! Events (stripe.com/docs/api/events/types):
//! - `checkout.session.completed`: the click id in `client_reference_id`
//!   (what `/cw.js` fills) or `metadata.cw_click`. One-time payments
//!   (`mode = payment`, paid) become a `sale` whose order id is the payment
//!   intent; subscriptions only remember the customer's click (their first
//!   `invoice.paid` is the sale). `checkout.session.async_payment_succeeded`
//!   is the same once a delayed payment method has paid.
//! - `invoice.paid` (and `invoice.payment_succeeded`, the same invoice): the
//!   first payment (`billing_reason = subscription_create`) a `sale`, later
//!   ones a `renewal` when the program's `recurring` rule pays them;
//!   attributed to the customer's remembered click (or metadata). Order id:
//!   the invoice id.
//! - `charge.refunded`: `amount_refunded` of `amount` refunded from the
//!   conversion its invoice or payment intent names, in proportion.
//! - `customer.subscription.deleted`: renewals after it earn nothing.
//!
//! Amounts are Stripe's integers in the smallest unit of the currency,
//! read with the currency's ISO 4217 exponent.

use axum::http::StatusCode;
use clickward_core::conversion::ConversionReport;
use clickward_core::money::Currency;
use clickward_core::program::StripeSettings;
use clickward_store::EventKey;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{IntegrationService, Payment, answer, count, id_text, ignored};
use crate::services::conversions::Answer;

/// The `source` of everything Stripe's events make.
pub const SOURCE: &str = "stripe";

/// Metadata keys that may hold the click id, after `client_reference_id`.
const CLICK_KEYS: [&str; 3] = ["cw_click", "click_id", "clickward_click"];

/// A first invoice whose customer is not remembered yet is answered 503
/// (its `checkout.session.completed` may still be on its way: Stripe does
/// not keep order) for this long after the event, then handled without.
const CUSTOMER_GRACE_S: i64 = 3600;

/// Checks `Stripe-Signature` over `body` with any of `secrets`, at `now_s`
/// (Unix s) with `tolerance_s`.
///
/// # Errors
/// A sentence saying what is wrong (no header parts, too old, no match).
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[String],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), String> {
    let mut t: Option<&str> = None;
    let mut v1: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some(v),
            Some(("v1", v)) => {
                if let Ok(b) = hex::decode(v) {
                    v1.push(b);
                }
            }
            _ => {}
        }
    }
    let (Some(t), false) = (t, v1.is_empty()) else {
        return Err("Stripe-Signature has no t= and v1= signature".to_owned());
    };
    let ts: i64 = t
        .parse()
        .map_err(|_| "Stripe-Signature's t= is not Unix seconds".to_owned())?;
    if (now_s - ts).abs() > tolerance_s {
        return Err(format!(
            "Stripe-Signature's timestamp is {} s from this server's time; at most {tolerance_s} s is accepted (a replayed or delayed event)",
            now_s - ts
        ));
    }
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        if v1.iter().any(|sig| mac.clone().verify_slice(sig).is_ok()) {
            return Ok(());
        }
    }
    Err("no v1 signature of Stripe-Signature matches this endpoint's secret".to_owned())
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn int_of(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_i64)
}

/// A click id in `metadata` objects (the first that has one).
fn click_in<'a>(metas: impl IntoIterator<Item = Option<&'a Value>>) -> Option<String> {
    metas
        .into_iter()
        .flatten()
        .find_map(|m| CLICK_KEYS.iter().find_map(|k| m.get(k).and_then(id_text)))
}

/// A Stripe amount (smallest unit of `currency`) as the decimal text intake
/// reads; `Err` for a currency ISO 4217 does not know.
fn money(minor: i64, currency: &str) -> Result<(String, String), Answer> {
    let c = Currency::parse(currency)
        .map_err(|e| answer(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()))?;
    Ok((c.format(minor), c.code().to_owned()))
}

impl IntegrationService {
    /// Verifies and handles one Stripe event for program `slug`.
    pub async fn stripe(&self, slug: &str, signature: Option<&str>, body: &[u8]) -> Answer {
        let a = self.stripe_inner(slug, signature, body).await;
        count(SOURCE, &a);
        a
    }

    async fn stripe_inner(&self, slug: &str, signature: Option<&str>, body: &[u8]) -> Answer {
        let (program_id, settings) = match self.program(slug).await {
            Ok(p) => p,
            Err(a) => return a,
        };
        let Some(cfg) = settings.stripe.clone() else {
            return answer(
                StatusCode::NOT_FOUND,
                "not_configured",
                "no such program, or it is not set up for this platform",
            );
        };
        let Some(signature) = signature else {
            return answer(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no Stripe-Signature header",
            );
        };
        if let Err(reason) = verify(
            signature,
            body,
            &cfg.secrets,
            self.now() / 1_000_000,
            cfg.tolerance_s,
        ) {
            return answer(StatusCode::UNAUTHORIZED, "unauthorized", reason);
        }
        let Ok(event) = serde_json::from_slice::<Value>(body) else {
            return answer(StatusCode::BAD_REQUEST, "malformed", "the body is not JSON");
        };
        let (Some(id), Some(kind)) = (
            event.get("id").and_then(id_text),
            str_of(&event, &["type"]).map(str::to_owned),
        ) else {
            return answer(
                StatusCode::BAD_REQUEST,
                "malformed",
                "not a Stripe event: no id or type",
            );
        };
        let key = EventKey {
            program_id,
            source: SOURCE,
            event_id: id,
        };
        self.once(key, self.stripe_event(program_id, &cfg, &kind, &event))
            .await
    }

    async fn stripe_event(
        &self,
        program_id: i64,
        cfg: &StripeSettings,
        kind: &str,
        event: &Value,
    ) -> Answer {
        let Some(obj) = event.get("data").and_then(|d| d.get("object")) else {
            return answer(StatusCode::BAD_REQUEST, "malformed", "no data.object");
        };
        let created = int_of(event, &["created"]).unwrap_or(self.now() / 1_000_000);
        match kind {
            // A delayed payment method (SEPA, ACH) completes unpaid, then
            // succeeds: the second is the sale (same order id either way).
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                self.checkout(program_id, cfg, obj, created).await
            }
            "invoice.paid" | "invoice.payment_succeeded" => {
                self.invoice(program_id, cfg, obj, created).await
            }
            "charge.refunded" => {
                let (Some(charge), Some(total), Some(refunded)) = (
                    obj.get("id").and_then(id_text),
                    int_of(obj, &["amount"]),
                    int_of(obj, &["amount_refunded"]),
                ) else {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        "a charge needs id, amount and amount_refunded",
                    );
                };
                let mut refs: Vec<String> = ["invoice", "payment_intent"]
                    .iter()
                    .filter_map(|k| obj.get(k).and_then(id_text))
                    .collect();
                refs.push(charge.clone());
                // The charge's refunded total only grows: one key per charge.
                self.refund(program_id, SOURCE, refs, charge, refunded, Some(total))
                    .await
            }
            "customer.subscription.deleted" => {
                let Some(customer) = obj
                    .get("customer")
                    .and_then(id_text)
                    .map(|c| super::opaque(SOURCE, &c))
                else {
                    return answer(StatusCode::BAD_REQUEST, "malformed", "no customer");
                };
                let ended = int_of(obj, &["ended_at"])
                    .or(int_of(obj, &["canceled_at"]))
                    .unwrap_or(created);
                match self
                    .store()
                    .mark_customer(
                        program_id,
                        SOURCE,
                        customer,
                        None,
                        Some(ended.saturating_mul(1_000_000)),
                    )
                    .await
                {
                    Ok(Some(_)) => answer(
                        StatusCode::OK,
                        "ended",
                        "the subscription ended: later invoices earn no commission",
                    ),
                    Ok(None) => ignored("a customer this program never saw with a click"),
                    Err(e) => super::internal(e),
                }
            }
            other => ignored(format!(
                "event type {:?} makes no conversion",
                clickward_core::truncate_utf8(other, 80)
            )),
        }
    }

    async fn checkout(
        &self,
        program_id: i64,
        cfg: &StripeSettings,
        obj: &Value,
        created: i64,
    ) -> Answer {
        let click = obj
            .get("client_reference_id")
            .and_then(id_text)
            .or_else(|| click_in([obj.get("metadata")]));
        let customer = obj
            .get("customer")
            .and_then(id_text)
            .map(|c| super::opaque(SOURCE, &c));
        if let Some(customer) = &customer {
            let click_id = click.as_deref().and_then(|c| c.parse().ok());
            if let Err(e) = self
                .store()
                .remember_customer(program_id, SOURCE, customer.clone(), click_id, self.now())
                .await
            {
                return super::internal(e);
            }
        }
        match str_of(obj, &["mode"]) {
            Some("subscription") => {
                return answer(
                    StatusCode::OK,
                    "remembered",
                    "a subscription: its customer's click is kept, and its invoices make the conversions",
                );
            }
            Some("payment") => {}
            _ => return ignored("a checkout that takes no payment"),
        }
        if str_of(obj, &["payment_status"]) != Some("paid") {
            return ignored(
                "a checkout not paid yet (delayed payment methods): nothing to attribute",
            );
        }
        let (Some(session), Some(total), Some(currency)) = (
            obj.get("id").and_then(id_text),
            int_of(obj, &["amount_total"]),
            str_of(obj, &["currency"]),
        ) else {
            return answer(
                StatusCode::BAD_REQUEST,
                "malformed",
                "a checkout session needs id, amount_total and currency",
            );
        };
        let (amount, currency) = match money(total, currency) {
            Ok(m) => m,
            Err(a) => return a,
        };
        let intent = obj.get("payment_intent").and_then(id_text);
        let order = intent.clone().unwrap_or_else(|| session.clone());
        let pay = Payment {
            report: ConversionReport {
                click_id: click.clone(),
                order_id: Some(order),
                amount: Some(amount),
                currency: Some(currency),
                event: Some("sale".to_owned()),
                occurred_at: Some(created.to_string()),
                ..ConversionReport::default()
            },
            renewal: false,
            no_click: click
                .is_none()
                .then(|| "no click id in client_reference_id or metadata.cw_click".to_owned()),
            refs: [Some(session), intent].into_iter().flatten().collect(),
            total: Some(total),
        };
        self.convert(program_id, cfg.unknown_click, SOURCE, pay)
            .await
    }

    async fn invoice(
        &self,
        program_id: i64,
        cfg: &StripeSettings,
        obj: &Value,
        created: i64,
    ) -> Answer {
        let (Some(invoice), Some(paid), Some(currency)) = (
            obj.get("id").and_then(id_text),
            int_of(obj, &["amount_paid"]),
            str_of(obj, &["currency"]),
        ) else {
            return answer(
                StatusCode::BAD_REQUEST,
                "malformed",
                "an invoice needs id, amount_paid and currency",
            );
        };
        if paid <= 0 {
            return ignored("nothing was paid (a trial or a credit)");
        }
        let paid_at = int_of(obj, &["status_transitions", "paid_at"]).unwrap_or(created);
        let paid_at_us = paid_at.saturating_mul(1_000_000);
        let reason = str_of(obj, &["billing_reason"]);
        let customer_id = obj
            .get("customer")
            .and_then(id_text)
            .map(|c| super::opaque(SOURCE, &c));
        // The subscription's metadata (set at checkout), in the places
        // Stripe's API versions put it.
        let meta_click = click_in([
            obj.get("subscription_details")
                .and_then(|d| d.get("metadata")),
            obj.get("parent")
                .and_then(|p| p.get("subscription_details"))
                .and_then(|d| d.get("metadata")),
            obj.get("metadata"),
        ]);
        let customer = match &customer_id {
            Some(c) => match self.store().customer(program_id, SOURCE, c.clone()).await {
                Ok(None) if meta_click.is_some() => {
                    // Remembered now: the recurring rule counts this
                    // customer's later invoices from this one.
                    let click_id = meta_click.as_deref().and_then(|k| k.parse().ok());
                    match self
                        .store()
                        .remember_customer(program_id, SOURCE, c.clone(), click_id, self.now())
                        .await
                    {
                        Ok(found) => Some(found),
                        Err(e) => return super::internal(e),
                    }
                }
                Ok(found) => found,
                Err(e) => return super::internal(e),
            },
            None => None,
        };
        let first = reason == Some("subscription_create")
            || customer.is_none_or(|c| c.first_paid_at.is_none());
        if customer.is_none()
            && meta_click.is_none()
            && first
            && self.now() / 1_000_000 - created < CUSTOMER_GRACE_S
        {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "customer_pending",
                "this customer's checkout.session.completed has not arrived yet (Stripe does not keep order); retry: nothing was recorded",
            );
        }
        if let Some(c) = &customer {
            if c.ended_at.is_some_and(|e| paid_at_us > e) {
                return ignored("the subscription ended before this payment");
            }
            let since = c.first_paid_at.unwrap_or(paid_at_us);
            if !cfg.recurring.earns(first, since, paid_at_us) {
                return ignored(format!(
                    "a renewal the program's recurring rule ({}) pays nothing for",
                    cfg.recurring.text()
                ));
            }
        }
        let click = meta_click.or_else(|| customer.and_then(|c| c.click_id).map(|c| c.to_string()));
        let (amount, currency) = match money(paid, currency) {
            Ok(m) => m,
            Err(a) => return a,
        };
        let refs: Vec<String> = [
            Some(invoice.clone()),
            obj.get("payment_intent").and_then(id_text),
            obj.get("charge").and_then(id_text),
        ]
        .into_iter()
        .flatten()
        .collect();
        let pay = Payment {
            report: ConversionReport {
                click_id: click.clone(),
                order_id: Some(invoice),
                amount: Some(amount),
                currency: Some(currency),
                event: Some(if first { "sale" } else { "renewal" }.to_owned()),
                occurred_at: Some(paid_at.to_string()),
                ..ConversionReport::default()
            },
            renewal: !first,
            // No customer id in the reason: answers are kept.
            no_click: click.is_none().then(|| {
                match (&customer_id, customer.is_some()) {
                    (Some(_), true) => "the customer came without a click id",
                    (Some(_), false) => "the customer was never seen with a click id",
                    (None, _) => "no customer and no click id in the invoice",
                }
                .to_owned()
            }),
            refs,
            total: Some(paid),
        };
        let a = self
            .convert(program_id, cfg.unknown_click, SOURCE, pay)
            .await;
        if a.status.is_success()
            && let Some(c) = customer_id
            && let Err(e) = self
                .store()
                .mark_customer(program_id, SOURCE, c, Some(paid_at_us), None)
                .await
        {
            return super::internal(e);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_verify_as_stripe_makes_them_and_nothing_else_does() {
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let secrets = vec!["whsec_old".to_owned(), "whsec_new".to_owned()];
        let t = 1_700_000_000;
        let good = sign("whsec_new", t, body);
        // Several v1 values (Stripe sends one per active secret), a v0 too.
        let header = format!("t={t},v1={},v1={good},v0=abc", sign("whsec_other", t, body));
        assert_eq!(verify(&header, body, &secrets, t + 10, 300), Ok(()));
        // Too old, from the future, tampered, unsigned.
        assert!(
            verify(&header, body, &secrets, t + 301, 300)
                .unwrap_err()
                .contains("timestamp")
        );
        assert!(verify(&header, body, &secrets, t - 301, 300).is_err());
        assert!(verify(&header, br#"{"id":"evt_2"}"#, &secrets, t, 300).is_err());
        assert!(verify(&format!("t={t}"), body, &secrets, t, 300).is_err());
        assert!(verify("garbage", body, &secrets, t, 300).is_err());
        assert!(verify(&format!("t=x,v1={good}"), body, &secrets, t, 300).is_err());
        assert!(verify(&header, body, &["whsec_other2".to_owned()], t, 300).is_err());
    }
}
