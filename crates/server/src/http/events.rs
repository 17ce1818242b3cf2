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

/// How often an open stream checks that its credential still holds.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

#[derive(utoipa::IntoParams, Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    key: Option<i64>,
    expires: Option<i64>,
    sig: Option<String>,
    last_event_id: Option<u64>,
}

fn url_mac(app: &AppState, key_id: i64, expires: i64) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(app.0.cookie_key.signing()).ok()?;
    mac.update(format!("events:{key_id}:{expires}").as_bytes());
    Some(mac)
}

/// What a live stream was opened with; the stream ends when it no longer
/// holds (checked every [`RECHECK_EVERY`]).
pub enum StreamCredential {
    /// An API key, by id: holds while the key is not revoked.
    Key(i64),
    /// A signed URL made with key `key_id`: holds until `expires_s` (Unix
    /// seconds) and while that key is not revoked.
    SignedUrl {
        /// The key that made the URL.
        key_id: i64,
        /// Unix seconds.
        expires_s: i64,
    },
    /// A dashboard session: holds while the session would be accepted.
    Session(crate::dashboard::session::Session),
}

impl StreamCredential {
    async fn holds(&self, app: &AppState) -> bool {
        let key_alive = |id: i64| async move {
            app.0
                .store
                .list_api_keys()
                .await
                .is_ok_and(|keys| keys.iter().any(|k| k.id == id))
        };
        match self {
            StreamCredential::Key(id) => key_alive(*id).await,
            StreamCredential::SignedUrl { key_id, expires_s } => {
                *expires_s >= app.0.clock.now_micros() / 1_000_000 && key_alive(*key_id).await
            }
            StreamCredential::Session(s) => crate::dashboard::session::still_valid(app, s).await,
        }
    }
}

/// `GET /api/v1/events/url` (any key): a URL valid for five minutes and
/// while the key that asked for it is not revoked.
#[utoipa::path(get, operation_id = "event_stream_url", path = "/events/url", tag = "events", responses((status = 200, description = "A signed stream URL valid for five minutes", body = Object)))]
pub async fn signed_url(
    Authorized(key): Authorized,
    State(app): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let expires = app.0.clock.now_micros() / 1_000_000 + SIGNED_URL_TTL_S;
    let mac = url_mac(&app, key.id, expires).ok_or_else(|| ApiError::internal("events key"))?;
    let sig = hex::encode(mac.finalize().into_bytes());
    Ok(Json(json!({
        "url": format!("/api/v1/events?key={}&expires={expires}&sig={sig}", key.id),
        "expires": expires,
    })))
}

/// `GET /api/v1/events`.
#[utoipa::path(get, operation_id = "event_stream", path = "/events", tag = "events", params(EventsQuery), responses((status = 200, description = "Server-sent events", body = String, content_type = "text/event-stream")))]
pub async fn stream(
    auth: Result<Authorized, ApiError>,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    // A signed URL that was given must be right: say so, rather than ask for
    // the key it stands in for.
    let credential = match (q.key, q.expires, q.sig.as_deref()) {
        (Some(key_id), Some(exp), Some(sig)) => {
            let valid = hex::decode(sig)
                .ok()
                .zip(url_mac(&app, key_id, exp))
                .is_some_and(|(s, mac)| mac.verify_slice(&s).is_ok());
            if !valid {
                return ApiError::unauthorized(
                    "the signed events URL is invalid (altered or not made by this server); get a new one from /api/v1/events/url",
                )
                .into_response();
            }
            let c = StreamCredential::SignedUrl {
                key_id,
                expires_s: exp,
            };
            if !c.holds(&app).await {
                return ApiError::unauthorized(
                    "the signed events URL has expired, or the key that made it was revoked; get a new one from /api/v1/events/url",
                )
                .into_response();
            }
            c
        }
        (None, None, None) => match auth {
            Ok(Authorized(key)) => StreamCredential::Key(key.id),
            Err(e) => return e.into_response(),
        },
        _ => {
            return ApiError::bad_request("a signed events URL needs key, expires and sig")
                .into_response();
        }
    };
    live_stream(app, &headers, q.last_event_id, credential)
}

/// The SSE response of the live stream, resuming after `Last-Event-ID` (the
/// header, else `last_event_id`). The caller has authenticated the request
/// with `credential`; the stream ends when that no longer holds.
pub fn live_stream(
    app: AppState,
    headers: &HeaderMap,
    last_event_id: Option<u64>,
    credential: StreamCredential,
) -> Response {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(last_event_id);
    Sse::new(events(app, last, credential))
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

fn events(
    app: AppState,
    last: Option<u64>,
    credential: StreamCredential,
) -> impl Stream<Item = Result<Event, Infallible>> {
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
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = futures::stream::unfold(
        (sub.rx, stop, last_sent, recheck, app, credential),
        |(mut rx, mut stop, mut last_sent, mut recheck, app, credential)| async move {
            loop {
                tokio::select! {
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return None,
                    _ = recheck.tick() => {
                        if !credential.holds(&app).await {
                            return None;
                        }
                    }
                    msg = rx.recv() => match msg {
                        Ok(n) if n.id <= last_sent => continue,
                        Ok(n) => {
                            last_sent = n.id;
                            return Some((
                                Ok(sse_event(&n)),
                                (rx, stop, last_sent, recheck, app, credential),
                            ));
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
