//! Request builders, one per kind of endpoint (as vector's sinks have): a
//! leased delivery in, the HTTP request to send out.

use clickward_core::delivery::{EndpointKind, UrlTemplate};
use clickward_core::money::Currency;
use clickward_store::{HttpMethod, LeasedDelivery};

use super::http::OutboundRequest;

/// The request for delivery `d`, signed at `sent_at_s` (Unix seconds, the
/// `webhook-timestamp`), with `now_us` deciding whether a rotated-out
/// secret still signs. `Err` is a sentence for the delivery log when the
/// endpoint's stored settings cannot make a request (the attempt fails
/// and is retried like any other).
pub fn build(d: &LeasedDelivery, sent_at_s: i64, now_us: i64) -> Result<OutboundRequest, String> {
    match d.endpoint.kind {
        EndpointKind::Webhook => webhook(d, sent_at_s, now_us),
        EndpointKind::Postback => postback(d),
        EndpointKind::Email => Err("mail is sent by the mailer, not over HTTP".to_owned()),
    }
}

/// The JSON body of a webhook: `{"id","type","timestamp","data"}`, the
/// envelope the Standard Webhooks spec recommends, `timestamp` being when
/// the event happened (RFC 3339, UTC) and `data` its payload.
pub fn webhook_body(
    event_id: &str,
    kind: &str,
    event_ts_us: i64,
    payload: &serde_json::Value,
) -> Vec<u8> {
    let ts = jiff::Timestamp::from_microsecond(event_ts_us)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let body =
        serde_json::json!({ "id": event_id, "type": kind, "timestamp": ts, "data": payload });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A Standard Webhooks request: `webhook-id` (the event id, the same on
/// every retry), `webhook-timestamp`, and `webhook-signature` `v1,<base64
/// HMAC-SHA256 of id.timestamp.body>`, once per secret while a rotated-out
/// one is still valid (space-separated, as the spec allows).
fn webhook(d: &LeasedDelivery, sent_at_s: i64, now_us: i64) -> Result<OutboundRequest, String> {
    let body = webhook_body(&d.event_id, &d.kind, d.event_ts, &d.payload);
    let mut secrets = vec![d.endpoint.secret.as_str()];
    if let Some((old, until)) = &d.endpoint.previous_secret
        && *until > now_us
    {
        secrets.push(old);
    }
    let mut signature = String::new();
    for s in secrets {
        let sig = standardwebhooks::Webhook::new(s)
            .and_then(|w| w.sign(&d.event_id, sent_at_s, &body))
            .map_err(|e| format!("the endpoint's signing secret is unusable: {e}"))?;
        if !signature.is_empty() {
            signature.push(' ');
        }
        signature.push_str(&sig);
    }
    Ok(OutboundRequest {
        method: reqwest::Method::POST,
        url: d.endpoint.url.clone(),
        headers: vec![
            (standardwebhooks::HEADER_WEBHOOK_ID, d.event_id.clone()),
            (
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                sent_at_s.to_string(),
            ),
            (standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature),
        ],
        body: Some(("application/json", body)),
    })
}

/// The macro values of a conversion event's payload (`{"conversion":
/// {…}}` as the API shows a conversion): amounts in the currency's decimals
/// (`12.50`), `{timestamp}` the conversion's time in Unix seconds, `{status}`
/// its status after the change, `{event}` its conversion event (`sale`).
pub fn postback_values(payload: &serde_json::Value) -> Vec<(&'static str, String)> {
    let c = &payload["conversion"];
    let text = |k: &str| c[k].as_str().unwrap_or("").to_owned();
    let currency = Currency::parse(c["currency"].as_str().unwrap_or("")).ok();
    let money = |k: &str| match (c[k].as_i64(), currency) {
        (Some(minor), Some(cur)) => cur.format(minor),
        _ => String::new(),
    };
    let sub = |i: usize| c["subs"][i].as_str().unwrap_or("").to_owned();
    vec![
        ("click_id", text("click_id")),
        ("conversion_id", text("conversion_id")),
        ("order_id", text("order_id")),
        ("event", text("event")),
        ("status", text("status")),
        ("amount", money("amount_minor")),
        ("payout", money("commission_minor")),
        ("currency", text("currency")),
        ("sub1", sub(0)),
        ("sub2", sub(1)),
        ("sub3", sub(2)),
        ("sub4", sub(3)),
        ("sub5", sub(4)),
        ("src", text("src")),
        ("program", text("program")),
        ("affiliate", text("affiliate")),
        (
            "timestamp",
            c["occurred_at"]
                .as_i64()
                .map(|us| (us / 1_000_000).to_string())
                .unwrap_or_default(),
        ),
        ("link", text("link")),
    ]
}

/// An affiliate postback: the template with its macros expanded; a POST
/// also carries the values as a form body.
fn postback(d: &LeasedDelivery) -> Result<OutboundRequest, String> {
    let template = UrlTemplate::parse(&d.endpoint.url, EndpointKind::Postback)
        .map_err(|e| format!("the stored postback template is refused: {e}"))?;
    let values = postback_values(&d.payload);
    let url = template.expand(|m| {
        values
            .iter()
            .find(|(k, _)| *k == m)
            .map(|(_, v)| v.as_str())
    });
    let (method, body) = match d.endpoint.method {
        HttpMethod::Get => (reqwest::Method::GET, None),
        HttpMethod::Post => (
            reqwest::Method::POST,
            Some((
                "application/x-www-form-urlencoded",
                serde_urlencoded::to_string(&values)
                    .unwrap_or_default()
                    .into_bytes(),
            )),
        ),
    };
    Ok(OutboundRequest {
        method,
        url,
        headers: vec![("clickward-event-id", d.event_id.clone())],
        body,
    })
}
