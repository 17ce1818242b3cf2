//! `POST /integrations/stripe/{program}` and `/integrations/shopify/{program}`:
//! the platforms' webhooks (see `services::integrations`).

use crate::http::error::ApiPath;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::process::app::AppState;
use crate::services::conversions::Answer;
use crate::services::integrations::shopify;

/// Largest webhook body read, bytes (a Shopify order with many lines is
/// tens of KB).
pub(crate) const MAX_BODY: usize = 1024 * 1024;

fn respond(a: Answer) -> Response {
    let mut r = (a.status, Json(a.body)).into_response();
    if a.status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    r
}

fn text<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /integrations/stripe/{program}`: one Stripe event, signed.
pub async fn stripe(
    State(app): State<AppState>,
    ApiPath(program): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(
        app.0
            .integrations
            .stripe(&program, text(&headers, "stripe-signature"), &body)
            .await,
    )
}

/// `POST /integrations/shopify/{program}`: one Shopify webhook, signed.
pub async fn shopify(
    State(app): State<AppState>,
    ApiPath(program): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = shopify::Headers {
        hmac: text(&headers, "x-shopify-hmac-sha256"),
        topic: text(&headers, "x-shopify-topic"),
        event_id: text(&headers, "x-shopify-webhook-id")
            .or_else(|| text(&headers, "x-shopify-event-id")),
    };
    respond(app.0.integrations.shopify(&program, h, &body).await)
}
