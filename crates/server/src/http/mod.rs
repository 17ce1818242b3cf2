//! Routes. Handlers are thin: extract, call core / enrich / store, answer.
//!
//! - tracking: `GET|HEAD /r/{code}` (canonical), `/ref/{code}`, `/go?id={code}`
//! - ops: `/healthz`, `/readyz`, `/metrics`
//! - admin API under `/api/v1` (bearer API keys), outbound delivery
//!   (`/webhooks`, `/postbacks`, `/deliveries`) in `webhooks`, fraud rules
//!   and excluded traffic (`/rules`, `/exclusions`) in `fraud`
//! - platform webhooks: `POST /integrations/{stripe,shopify}/{program}`

mod api;
pub mod auth;
mod conversions;
mod cookies;
pub(crate) mod error;
mod events;
mod fraud;
mod integrations;
mod ops;
pub mod paging;
mod privacy;
pub mod script;
mod tracking;
mod webhooks;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use clickward_core::link::Affiliate;

use crate::process::app::AppState;

pub use cookies::CookieSealer;
pub use error::ApiError;
pub use events::{StreamCredential, live_stream};
pub use tracking::VISITOR_COOKIE;

/// Largest request body the admin API reads, bytes.
const MAX_BODY: usize = 64 * 1024;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/programs",
            get(api::list_programs).post(api::create_program),
        )
        .route(
            "/programs/{slug}",
            get(api::get_program).patch(api::update_program),
        )
        .route("/programs/{slug}/disable", post(api::disable_program))
        .route("/programs/{slug}/enable", post(api::enable_program))
        .route("/programs/{slug}/commissions", get(api::list_overrides))
        .route(
            "/programs/{slug}/commissions/{affiliate}",
            axum::routing::put(api::put_override).delete(api::delete_override),
        )
        .route(
            "/affiliates",
            get(api::list_named::<Affiliate>).post(api::create_named::<Affiliate>),
        )
        .route(
            "/affiliates/{slug}",
            get(api::get_named::<Affiliate>).patch(api::update_named::<Affiliate>),
        )
        .route(
            "/affiliates/{slug}/disable",
            post(api::disable_named::<Affiliate>),
        )
        .route(
            "/affiliates/{slug}/enable",
            post(api::enable_named::<Affiliate>),
        )
        .route("/links", get(api::list_links).post(api::create_link))
        .route("/links/{code}", get(api::get_link).patch(api::update_link))
        .route("/links/{code}/disable", post(api::disable_link))
        .route("/links/{code}/enable", post(api::enable_link))
        .route("/links/{code}/qr", get(api::link_qr))
        .route(
            "/conversions",
            get(conversions::list).post(conversions::create),
        )
        .route("/conversions/{id}", get(conversions::get))
        .route("/conversions/{id}/{action}", post(conversions::change))
        .route("/balances", get(conversions::balances))
        .route("/events", get(events::stream))
        .route("/events/url", get(events::signed_url))
        .route("/reports", get(api::report))
        .route("/outbox", get(api::outbox))
        .route("/clicks", get(api::list_clicks))
        .route("/clicks/{click_id}", get(api::get_click))
        .route(
            "/webhooks",
            get(webhooks::list_webhooks).post(webhooks::create_webhook),
        )
        .route(
            "/postbacks",
            get(webhooks::list_postbacks).post(webhooks::create_postback),
        )
        .route(
            "/webhooks/{id}",
            get(webhooks::get_endpoint).patch(webhooks::update_endpoint),
        )
        .route("/webhooks/{id}/replay", post(webhooks::replay_range))
        .route("/webhooks/{id}/{action}", post(webhooks::endpoint_action))
        .route("/deliveries", get(webhooks::list_deliveries))
        .route("/deliveries/{id}", get(webhooks::get_delivery))
        .route("/deliveries/{id}/replay", post(webhooks::replay_delivery))
        .route("/rules", get(fraud::list_rules))
        .route(
            "/rules/{id}",
            axum::routing::put(fraud::put_rule).delete(fraud::delete_rule),
        )
        .route(
            "/exclusions",
            get(fraud::list_exclusions).post(fraud::add_exclusion),
        )
        .route(
            "/exclusions/{id}",
            axum::routing::delete(fraud::remove_exclusion),
        )
        .route(
            "/privacy/erasures",
            // A batch of 10,000 selectors is ~0.6 MB.
            get(privacy::list)
                .post(privacy::erase)
                .layer(axum::extract::DefaultBodyLimit::max(2 << 20)),
        )
        .route("/privacy/erasures/{id}", get(privacy::get))
        .route("/keys", get(api::list_keys))
        .route("/users", get(api::list_users))
        .route("/payouts", get(api::list_payouts))
        .route("/privacy/export", get(privacy::export))
        .fallback(api::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_api,
        ));
    // Answers counted by status class for the 5xx alert; the tracking
    // routes stay out of the layer (their outcomes are counted per click).
    let counted = Router::new()
        .route("/postback", conversions::postback_methods())
        .route("/pixel.gif", get(conversions::pixel))
        .nest("/integrations", integrations_router())
        .nest("/api/v1", api)
        .merge(crate::dashboard::router(state.clone()))
        .layer(axum::middleware::map_response(
            |r: axum::response::Response| async move {
                crate::telemetry::count_response(r.status());
                r
            },
        ));
    Router::new()
        .route("/r/{*code}", get(tracking::track_path))
        .route("/ref/{*code}", get(tracking::track_path))
        .route("/go", get(tracking::track_go))
        .route("/exclude", get(tracking::exclude_browser))
        .route("/cw.js", get(script::serve))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(counted)
        .fallback(tracking::not_found_page)
        // A body that trickles in is cut off (the head has its own timeout
        // in the listener).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.0.cfg.config.http.body_read_timeout,
        ))
        .with_state(state)
}

/// `/integrations/{stripe,shopify}/{program}`, with their own body limit.
fn integrations_router() -> Router<AppState> {
    Router::new()
        .route("/stripe/{program}", post(integrations::stripe))
        .route("/shopify/{program}", post(integrations::shopify))
        .layer(axum::extract::DefaultBodyLimit::max(integrations::MAX_BODY))
}

/// The client address of a request (behind trusted proxies).
pub(crate) fn client_of(
    app: &AppState,
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
) -> std::net::IpAddr {
    clickward_enrich::ip::client_ip(
        peer.ip(),
        headers
            .get_all("x-forwarded-for")
            .iter()
            .map(axum::http::HeaderValue::as_bytes),
        &app.0.cfg.trusted,
    )
}

/// A request beyond its `[limits]` rate: when to retry, and the body that
/// says so (`{"status": "rate_limited", "reason"}`).
pub(crate) struct Limited {
    /// `Retry-After`, seconds.
    pub retry_after_s: u64,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl Limited {
    /// The 429 as JSON with `Retry-After`.
    pub(crate) fn into_response(self) -> axum::response::Response {
        (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [(
                axum::http::header::RETRY_AFTER,
                self.retry_after_s.to_string(),
            )],
            axum::Json(self.body),
        )
            .into_response()
    }
}

/// Counts a request of `class` from `ip` against `[limits]`: `None` within
/// the limit, else what to answer (counted in `clickward_rate_limited_total`).
pub(crate) async fn over_limit(
    app: &AppState,
    class: crate::services::limits::Class,
    ip: std::net::IpAddr,
) -> Option<Limited> {
    let s = &app.0;
    let now = s.clock.now_micros();
    let (wait, rate) = s
        .limits
        .check(class, ip, || s.salts.limiter_key(now, ip))
        .await
        .err()?;
    metrics::counter!(crate::telemetry::RATE_LIMITED_TOTAL, "endpoint" => class.label())
        .increment(1);
    let after = crate::services::limits::retry_after_s(wait);
    Some(Limited {
        retry_after_s: after,
        body: serde_json::json!({
            "status": "rate_limited",
            "reason": format!("more than {} from this client; retry in {after} s", rate.text()),
        }),
    })
}

/// `[limits] api` on every `/api/v1` route.
async fn limit_api(
    axum::extract::State(app): axum::extract::State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let ip = client_of(&app, peer, req.headers());
    if let Some(l) = over_limit(&app, crate::services::limits::Class::Api, ip).await {
        return l.into_response();
    }
    next.run(req).await
}

/// The `cw_ex` cookie that marks a browser as excluded traffic, for 400
/// days, holding its sealed token.
pub(crate) fn exclusion_cookie(app: &AppState, sealed: &str) -> Option<axum::http::HeaderValue> {
    cookies::set_cookie(
        crate::services::fraud::EXCLUDE_COOKIE,
        sealed,
        400 * 86_400,
        app.0.cfg.config.cookie_secure,
    )
}
