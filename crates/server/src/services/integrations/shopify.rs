//! Shopify webhooks (`POST /integrations/shopify/{program}`).
//!
//! Signature: `X-Shopify-Hmac-Sha256`, the base64 HMAC-SHA256 of the raw
//! body with the app's client secret (shopify.dev, "Verify webhooks").
//! The topic is `X-Shopify-Topic`; the event id `X-Shopify-Webhook-Id`
//! (else `X-Shopify-Event-Id`).
//!
//! Topics:
//! - `orders/create`: a `sale` whose order id is the order's `id`, amount
//!   `total_price` in `currency`, attributed by the click id in a note
//!   attribute named like the program's `click_param` (`cw_click`), else in
//!   that query parameter of `landing_site`.
//! - `refunds/create`: the successful `refund` transactions of the refund
//!   taken off the order's conversion in proportion to the order's total
//!   (idempotent on the refund id).

use axum::http::StatusCode;
use base64::Engine;
use clickward_core::conversion::ConversionReport;
use clickward_core::money::Currency;
use clickward_core::program::ShopifySettings;
use clickward_store::EventKey;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{IntegrationService, Payment, answer, count, id_text, ignored};
use crate::services::conversions::Answer;

/// The `source` of everything Shopify's webhooks make.
pub const SOURCE: &str = "shopify";

/// The request headers Shopify's webhooks carry.
#[derive(Debug, Default)]
pub struct Headers<'a> {
    /// `X-Shopify-Hmac-Sha256`.
    pub hmac: Option<&'a str>,
    /// `X-Shopify-Topic` (`orders/create`).
    pub topic: Option<&'a str>,
    /// `X-Shopify-Webhook-Id`, else `X-Shopify-Event-Id`.
    pub event_id: Option<&'a str>,
}

/// Checks `X-Shopify-Hmac-Sha256` (base64) over `body` with any of
/// `secrets`.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn verify(header: &str, body: &[u8], secrets: &[String]) -> Result<(), String> {
    let sig = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .map_err(|_| "X-Shopify-Hmac-Sha256 is not base64".to_owned())?;
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("X-Shopify-Hmac-Sha256 does not match this endpoint's secret".to_owned())
}

/// The click id of an order: its note attribute `param`, else `param` in
/// its landing-site URL (a path with a query, as Shopify stores it).
fn click_of(order: &Value, param: &str) -> Option<String> {
    let noted = order
        .get("note_attributes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("name").and_then(Value::as_str) == Some(param))
        .and_then(|a| a.get("value").and_then(id_text));
    noted.or_else(|| {
        let landing = order.get("landing_site").and_then(Value::as_str)?;
        let base = url::Url::parse("https://shop.invalid/").ok()?;
        let url = base.join(landing).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == param)
            .and_then(|(_, v)| id_text(&Value::String(v.into_owned())))
    })
}

impl IntegrationService {
    /// Verifies and handles one Shopify webhook for program `slug`.
    pub async fn shopify(&self, slug: &str, h: Headers<'_>, body: &[u8]) -> Answer {
        let a = self.shopify_inner(slug, h, body).await;
        count(SOURCE, &a);
        a
    }

    async fn shopify_inner(&self, slug: &str, h: Headers<'_>, body: &[u8]) -> Answer {
        let (program_id, settings) = match self.program(slug).await {
            Ok(p) => p,
            Err(a) => return a,
        };
        let Some(cfg) = settings.shopify.clone() else {
            return answer(
                StatusCode::NOT_FOUND,
                "not_configured",
                "no such program, or it is not set up for this platform",
            );
        };
        let Some(hmac) = h.hmac else {
            return answer(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no X-Shopify-Hmac-Sha256 header",
            );
        };
        if let Err(reason) = verify(hmac, body, &cfg.secrets) {
            return answer(StatusCode::UNAUTHORIZED, "unauthorized", reason);
        }
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return answer(StatusCode::BAD_REQUEST, "malformed", "the body is not JSON");
        };
        let topic = h.topic.unwrap_or("").trim().to_owned();
        let Some(resource) = doc.get("id").and_then(id_text) else {
            return answer(StatusCode::BAD_REQUEST, "malformed", "no id in the body");
        };
        let event_id = h
            .event_id
            .map(|e| Value::String(e.to_owned()))
            .and_then(|e| id_text(&e))
            .unwrap_or_else(|| format!("{topic}:{resource}"));
        let key = EventKey {
            program_id,
            source: SOURCE,
            event_id,
        };
        self.once(
            key,
            self.shopify_event(program_id, &cfg, &topic, &doc, resource),
        )
        .await
    }

    async fn shopify_event(
        &self,
        program_id: i64,
        cfg: &ShopifySettings,
        topic: &str,
        doc: &Value,
        id: String,
    ) -> Answer {
        match topic {
            "orders/create" => {
                let (Some(total), Some(currency)) = (
                    doc.get("total_price").and_then(Value::as_str),
                    doc.get("currency").and_then(Value::as_str),
                ) else {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        "an order needs total_price and currency",
                    );
                };
                let total_minor = match Currency::parse(currency)
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.parse_amount(total).map_err(|e| e.to_string()))
                {
                    Ok(m) => m,
                    Err(e) => return answer(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e),
                };
                let click = click_of(doc, &cfg.click_param);
                let pay = Payment {
                    report: ConversionReport {
                        click_id: click.clone(),
                        order_id: Some(id.clone()),
                        amount: Some(total.to_owned()),
                        currency: Some(currency.to_owned()),
                        event: Some("sale".to_owned()),
                        occurred_at: doc
                            .get("created_at")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        ..ConversionReport::default()
                    },
                    renewal: false,
                    no_click: click.is_none().then(|| {
                        format!(
                            "no {p} note attribute and no {p} in landing_site",
                            p = cfg.click_param
                        )
                    }),
                    refs: vec![id],
                    total: Some(total_minor),
                };
                self.convert(program_id, cfg.unknown_click, SOURCE, pay)
                    .await
            }
            "refunds/create" => {
                let Some(order) = doc.get("order_id").and_then(id_text) else {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        "a refund needs order_id",
                    );
                };
                let mut refunded: i64 = 0;
                for t in doc
                    .get("transactions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let kind = t.get("kind").and_then(Value::as_str);
                    let status = t.get("status").and_then(Value::as_str);
                    if kind != Some("refund") || status != Some("success") {
                        continue;
                    }
                    let amount = t.get("amount").and_then(Value::as_str).unwrap_or("");
                    let currency = t.get("currency").and_then(Value::as_str).unwrap_or("");
                    match Currency::parse(currency)
                        .map_err(|e| e.to_string())
                        .and_then(|c| c.parse_amount(amount).map_err(|e| e.to_string()))
                    {
                        Ok(m) => refunded = refunded.saturating_add(m),
                        Err(e) => {
                            return answer(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e);
                        }
                    }
                }
                if refunded == 0 {
                    return ignored("no successful refund transaction (a restock only)");
                }
                self.refund(
                    program_id,
                    SOURCE,
                    vec![order],
                    format!("refund:{id}"),
                    refunded,
                    None,
                )
                .await
            }
            other => ignored(format!(
                "topic {:?} makes no conversion",
                clickward_core::truncate_utf8(other, 80)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_is_checked_over_the_raw_body_and_click_ids_are_found_where_shops_put_them() {
        let body = br#"{"id":820982911946154508}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"shpss_secret").unwrap();
        mac.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let secrets = vec!["shpss_secret".to_owned()];
        assert_eq!(verify(&sig, body, &secrets), Ok(()));
        assert!(verify(&sig, br#"{"id":820982911946154509}"#, &secrets).is_err());
        assert!(verify("not base64!", body, &secrets).is_err());
        assert!(verify(&sig, body, &["other".to_owned()]).is_err());

        let order: Value = serde_json::from_str(
            r#"{"landing_site":"/products/mug?utm_source=x&cw_click=01JABCDEF","note_attributes":[]}"#,
        )
        .unwrap();
        assert_eq!(click_of(&order, "cw_click").as_deref(), Some("01JABCDEF"));
        let noted: Value = serde_json::from_str(
            r#"{"landing_site":"/?cw_click=A","note_attributes":[{"name":"cw_click","value":"B"}]}"#,
        )
        .unwrap();
        assert_eq!(click_of(&noted, "cw_click").as_deref(), Some("B"));
        assert_eq!(
            click_of(&serde_json::json!({"landing_site": null}), "cw_click"),
            None
        );
    }
}
