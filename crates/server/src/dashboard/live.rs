//! The live page: the latest clicks rendered by the server, then the SSE
//! stream.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::admin::PageResult;
use super::page;
use super::session::Session;
use super::views::{Chrome, or_dash, utc};
use crate::process::app::AppState;

/// A row of the live table (server-rendered ones are the latest clicks).
pub struct LiveRow {
    pub time: String,
    pub kind: &'static str,
    pub link: String,
    pub affiliate: String,
    pub src: String,
    pub class: &'static str,
    pub reason: String,
    pub country: String,
    pub referrer: String,
    pub device: String,
    pub browser: String,
    pub redirect: String,
}

/// A row of the rate-limit table: one endpoint class.
pub struct LimitRow {
    pub endpoint: &'static str,
    pub rate: String,
    pub refused: u64,
}

#[derive(Template)]
#[template(path = "live.html")]
pub(super) struct LivePage {
    c: Chrome,
    rows: Vec<LiveRow>,
    limits: Vec<LimitRow>,
    /// "all nodes" or "this node".
    limit_scope: &'static str,
}

/// `GET /dashboard/live`: the latest clicks, then the live stream.
pub async fn live(State(app): State<AppState>, Extension(s): Extension<Session>) -> PageResult {
    let clicks = app.0.store.list_clicks(None, 50).await?;
    let rows = clicks
        .into_iter()
        .map(|k| LiveRow {
            time: utc(k.ts),
            kind: "click",
            link: k.link,
            affiliate: or_dash(k.affiliate.as_deref()),
            src: or_dash(k.src.as_deref()),
            // The same classes as the stream's rows (app.js).
            class: match (&k.bot_reason, &k.verdict) {
                (Some(_), _) => "bot",
                (None, Some(v)) if v.action.invalidates() => "invalid",
                (None, Some(_)) => "flagged",
                (None, None) => "human",
            },
            reason: match (&k.bot_reason, &k.verdict) {
                (Some(r), _) => r.clone(),
                (None, Some(v)) => format!("{}: {}", v.rule, v.reason),
                (None, None) => "–".to_owned(),
            },
            country: or_dash(k.country.as_deref()),
            referrer: or_dash(k.referrer.as_deref()),
            device: k.device,
            browser: or_dash(k.browser.as_deref()),
            redirect: "–".to_owned(),
        })
        .collect();
    let limits = &app.0.limits;
    Ok(page(&LivePage {
        c: Chrome::new(&s, "Live", "live").with_geo(),
        rows,
        limits: limits
            .state()
            .into_iter()
            .map(|c| LimitRow {
                endpoint: c.class.label(),
                rate: c.rate.map_or_else(|| "off".to_owned(), |r| r.text()),
                refused: c.refused,
            })
            .collect(),
        limit_scope: if limits.is_shared() {
            "shared by all nodes"
        } else {
            "per node"
        },
    }))
}

/// `GET /dashboard/events`: the live event stream (SSE) for a signed-in
/// dashboard; the same stream as `GET /api/v1/events`.
pub async fn events(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    crate::http::live_stream(
        app,
        &headers,
        None,
        crate::http::StreamCredential::Session(s),
    )
}
