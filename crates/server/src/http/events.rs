//! `GET /api/v1/events`: the live event stream (Server-Sent Events).
//!
//! Authenticated by a bearer key, or for browsers (an `EventSource` cannot
//! send headers) by a short-lived signed URL from `GET /api/v1/events/url`.
//! `Last-Event-ID` (header, or `last_event_id=` in the query) resumes; see
//! [`crate::services::events`] for the guarantees.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::broadcast::error::RecvError;

use crate::http::ApiError;
use crate::http::auth::Authorized;
use crate::http::error::ApiQuery;
use crate::process::app::AppState;
use crate::services::events::Numbered;

/// How long a signed events URL stays valid.
const SIGNED_URL_TTL_S: i64 = 300;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    expires: Option<i64>,
    sig: Option<String>,
    last_event_id: Option<u64>,
}

fn url_mac(app: &AppState, expires: i64) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(app.0.cookie_key.signing()).ok()?;
    mac.update(format!("events:{expires}").as_bytes());
    Some(mac)
}

/// `GET /api/v1/events/url` (any key): a URL valid for five minutes.
pub async fn signed_url(
    _: Authorized,
    State(app): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let expires = app.0.clock.now_micros() / 1_000_000 + SIGNED_URL_TTL_S;
    let mac = url_mac(&app, expires).ok_or_else(|| ApiError::internal("events key"))?;
    let sig = hex::encode(mac.finalize().into_bytes());
    Ok(Json(json!({
        "url": format!("/api/v1/events?expires={expires}&sig={sig}"),
        "expires": expires,
    })))
}

/// `GET /api/v1/events`.
pub async fn stream(
    auth: Result<Authorized, ApiError>,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    // A signed URL that was given must be right: say so, rather than ask for
    // the key it stands in for.
    match (q.expires, q.sig.as_deref()) {
        (Some(exp), Some(sig)) => {
            let fresh = exp >= app.0.clock.now_micros() / 1_000_000;
            let valid = hex::decode(sig)
                .ok()
                .zip(url_mac(&app, exp))
                .is_some_and(|(s, mac)| mac.verify_slice(&s).is_ok());
            if !valid {
                return ApiError::unauthorized(
                    "the signed events URL is invalid (altered or not made by this server); get a new one from /api/v1/events/url",
                )
                .into_response();
            }
            if !fresh {
                return ApiError::unauthorized(
                    "the signed events URL has expired; get a new one from /api/v1/events/url",
                )
                .into_response();
            }
        }
        (None, None) => {
            if let Err(e) = auth {
                return e.into_response();
            }
        }
        _ => {
            return ApiError::bad_request("a signed events URL needs both expires and sig")
                .into_response();
        }
    }
    live_stream(app, &headers, q.last_event_id)
}

/// The SSE response of the live stream, resuming after `Last-Event-ID` (the
/// header, else `last_event_id`). The caller has authenticated the request.
pub fn live_stream(app: AppState, headers: &HeaderMap, last_event_id: Option<u64>) -> Response {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(last_event_id);
    Sse::new(events(app, last))
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response()
}

fn sse_event(n: &Numbered) -> Event {
    let kind = match &n.event {
        crate::services::events::LiveEvent::Click { .. } => "click",
        crate::services::events::LiveEvent::Conversion { .. } => "conversion",
        // Another node's event names its own type.
        crate::services::events::LiveEvent::Remote(v) => {
            match v.get("type").and_then(|t| t.as_str()) {
                Some("conversion") => "conversion",
                _ => "click",
            }
        }
    };
    Event::default()
        .id(n.id.to_string())
        .event(kind)
        .json_data(&n.event)
        .unwrap_or_else(|_| Event::default().comment("unserialisable event"))
}

fn events(app: AppState, last: Option<u64>) -> impl Stream<Item = Result<Event, Infallible>> {
    let sub = app.0.events.subscribe(last);
    let stop = app.0.stop.clone();
    let gap = match sub.missed {
        Some(0) => None,
        Some(n) => Some(json!({ "missed": n })),
        // Not an id of this process: a restart or another node.
        None => Some(json!({ "missed": null, "reason": "the stream restarted or this is another node; it goes on live from here" })),
    }
    .map(|data| Event::default().event("gap").data(data.to_string()));
    let last_sent = sub.replay.last().map_or(sub.resume_after, |n| n.id);
    let first: Vec<Result<Event, Infallible>> = gap
        .into_iter()
        .chain(sub.replay.iter().map(|n| sse_event(n)))
        .map(Ok)
        .collect();
    let live = futures::stream::unfold(
        (sub.rx, stop, last_sent),
        |(mut rx, mut stop, mut last_sent)| async move {
            loop {
                tokio::select! {
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return None,
                    msg = rx.recv() => match msg {
                        Ok(n) if n.id <= last_sent => continue,
                        Ok(n) => {
                            last_sent = n.id;
                            return Some((Ok(sse_event(&n)), (rx, stop, last_sent)));
                        }
                        Err(RecvError::Lagged(k)) => {
                            tracing::warn!(
                                "live events: a subscriber fell {k} events behind and was dropped; it may resume with Last-Event-ID"
                            );
                            return None;
                        }
                        Err(RecvError::Closed) => return None,
                    },
                }
            }
        },
    );
    futures::stream::iter(first).chain(live)
}
