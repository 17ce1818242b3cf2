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
pub mod openapi;
mod ops;
pub mod paging;
mod privacy;
pub mod script;
mod tracking;
mod webhooks;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::process::app::AppState;

pub use cookies::CookieSealer;
pub use error::ApiError;
pub use events::{StreamCredential, live_stream};
pub use tracking::VISITOR_COOKIE;

/// Largest request body the admin API reads, bytes.
const MAX_BODY: usize = 64 * 1024;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let api = api
        .route("/openapi.json", get(openapi::serve))
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

/// Every `/api/v1` route (paths relative to it) with its OpenAPI operation:
/// the router and the document come from the same list, so neither can
/// miss a route ([`openapi::document_json`]).
pub(crate) fn api_routes() -> OpenApiRouter<AppState> {
    use api::*;
    let erasures = OpenApiRouter::new()
        .routes(routes!(privacy::list, privacy::erase))
        // A batch of 10,000 selectors is ~0.6 MB.
        .layer(axum::extract::DefaultBodyLimit::max(2 << 20));
    OpenApiRouter::new()
        .routes(routes!(list_programs, create_program))
        .routes(routes!(get_program, update_program))
        .routes(routes!(disable_program))
        .routes(routes!(enable_program))
        .routes(routes!(list_overrides))
        .routes(routes!(put_override, delete_override))
        .routes(routes!(list_affiliates, create_affiliate))
        .routes(routes!(get_affiliate, update_affiliate))
        .routes(routes!(disable_affiliate))
        .routes(routes!(enable_affiliate))
        .routes(routes!(list_links, create_link))
        .routes(routes!(get_link, update_link))
        .routes(routes!(disable_link))
        .routes(routes!(enable_link))
        .routes(routes!(link_qr))
        .routes(routes!(conversions::list, conversions::create))
        .routes(routes!(conversions::get))
        .routes(routes!(conversions::change))
        .routes(routes!(conversions::balances))
        .routes(routes!(events::stream))
        .routes(routes!(events::signed_url))
        .routes(routes!(report))
        .routes(routes!(outbox))
        .routes(routes!(list_clicks))
        .routes(routes!(get_click))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(webhooks::list_postbacks, webhooks::create_postback))
        .routes(routes!(webhooks::get_endpoint, webhooks::update_endpoint))
        .routes(routes!(webhooks::replay_range))
        .routes(routes!(webhooks::endpoint_action))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::get_delivery))
        .routes(routes!(webhooks::replay_delivery))
        .routes(routes!(fraud::list_rules))
        .routes(routes!(fraud::put_rule, fraud::delete_rule))
        .routes(routes!(fraud::list_exclusions, fraud::add_exclusion))
        .routes(routes!(fraud::remove_exclusion))
        .merge(erasures)
        .routes(routes!(privacy::get))
        .routes(routes!(list_keys))
        .routes(routes!(list_users))
        .routes(routes!(list_payouts))
        .routes(routes!(privacy::export))
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
    if let Some(mut l) = over_limit(&app, crate::services::limits::Class::Api, ip).await {
        // The admin API's one error shape (`error`, `reason`) beside the
        // `status` every limited answer carries.
        if let Some(o) = l.body.as_object_mut() {
            o.insert("error".to_owned(), serde_json::Value::from("rate_limited"));
        }
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
