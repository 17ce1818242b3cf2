//! The admin API of outbound delivery: webhook and affiliate postback
//! endpoints (`/api/v1/webhooks`, `/api/v1/postbacks`), the delivery log
//! (`/api/v1/deliveries`) and replays. JSON in and out; an endpoint's
//! signing secret is in the answer of its creation and of a rotation only.

use crate::http::error::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use clickward_core::delivery::EndpointKind;
use clickward_core::id::Slug;
use clickward_store::{DeliveryQuery, Endpoint};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::ApiError;
use crate::http::auth::Authorized;
use crate::http::error::ApiQuery;
use crate::http::paging::{self, Page, PageArgs};
use crate::process::app::AppState;
use crate::services::delivery::{ActionDone, DeliveryError, EndpointSpec};

type ApiResult<T> = Result<T, ApiError>;

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Invalid(m) => ApiError::invalid(m),
            DeliveryError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            DeliveryError::Store(s) => s.into(),
        }
    }
}

fn spec(v: Value) -> ApiResult<EndpointSpec> {
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn with_secret(e: &Endpoint, secret: &str) -> ApiResult<Value> {
    let mut v = serde_json::to_value(e).map_err(ApiError::internal)?;
    if let Value::Object(m) = &mut v {
        m.insert("secret".to_owned(), Value::String(secret.to_owned()));
    }
    Ok(v)
}

async fn list(app: &AppState, kind: EndpointKind, q: &PageArgs) -> ApiResult<Json<Page<Endpoint>>> {
    let all: Vec<Endpoint> = app
        .0
        .delivery
        .list(None)
        .await?
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect();
    // Ids are `ep_` + ULID: creation order.
    Ok(Json(app.0.cursors.page_all(
        kind.as_str(),
        all,
        q,
        paging::MAX_LIMIT,
        |e| e.id.clone(),
    )?))
}

async fn create(
    app: &AppState,
    kind: EndpointKind,
    v: Value,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (e, secret) = app.0.delivery.add(kind, spec(v)?).await?;
    Ok((StatusCode::CREATED, Json(with_secret(&e, &secret)?)))
}

/// `GET /api/v1/webhooks`: the merchant's webhook endpoints.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", params(PageArgs), responses((status = 200, body = Page<Endpoint>)))]
pub async fn list_webhooks(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<Endpoint>>> {
    list(&app, EndpointKind::Webhook, &q).await
}

/// `POST /api/v1/webhooks` `{"url", "events": ["conversion.*"], "program",
/// "affiliate", "description"}` → 201 with the endpoint and its `secret`.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = EndpointSpec, responses((status = 201, description = "The endpoint with its signing `secret` (shown once)", body = Object)))]
pub async fn create_webhook(
    _: Authorized,
    State(app): State<AppState>,
    ApiJson(v): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    create(&app, EndpointKind::Webhook, v).await
}

/// `GET /api/v1/postbacks`: every affiliate's postback endpoints.
#[utoipa::path(get, path = "/postbacks", tag = "webhooks", params(PageArgs), responses((status = 200, body = Page<Endpoint>)))]
pub async fn list_postbacks(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<Endpoint>>> {
    list(&app, EndpointKind::Postback, &q).await
}

/// `POST /api/v1/postbacks` `{"affiliate", "url": "https://…?cid={click_id}",
/// "method": "GET", "events": ["conversion.approved"], "program"}` → 201.
#[utoipa::path(post, path = "/postbacks", tag = "webhooks", request_body = EndpointSpec, responses((status = 201, description = "The endpoint with its signing `secret` (shown once)", body = Object)))]
pub async fn create_postback(
    _: Authorized,
    State(app): State<AppState>,
    ApiJson(v): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    create(&app, EndpointKind::Postback, v).await
}

/// `GET /api/v1/webhooks/{id}` (any endpoint, webhook or postback).
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The endpoint id (`ep_` + ULID)")), responses((status = 200, body = Endpoint)))]
pub async fn get_endpoint(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Endpoint>> {
    Ok(Json(app.0.delivery.get(&id).await?))
}

/// `PATCH /api/v1/webhooks/{id}`: `url`, `method`, `events`, `description`.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The endpoint id (`ep_` + ULID)")), request_body = EndpointSpec, responses((status = 200, body = Endpoint)))]
pub async fn update_endpoint(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(v): ApiJson<Value>,
) -> ApiResult<Json<Endpoint>> {
    Ok(Json(app.0.delivery.change(&id, spec(v)?).await?))
}

/// The actions of `POST /api/v1/webhooks/{id}/{action}`, for the document
/// (the service reads the path segment itself).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
enum EndpointAction {
    Disable,
    Enable,
    RotateSecret,
    Test,
}

/// `POST /api/v1/webhooks/{id}/{action}`: `disable`, `enable`,
/// `rotate-secret` (answers the new `secret`; the old one signs beside it
/// for 24 h), `test` (queues a `webhook.test` event; answers its
/// `delivery`).
#[utoipa::path(post, path = "/webhooks/{id}/{action}", tag = "webhooks", params(("id" = String, Path, description = "The endpoint id (`ep_` + ULID)"), ("action" = inline(EndpointAction), Path, description = "What to do")), responses((status = 200, body = Object)))]
pub async fn endpoint_action(
    key: Authorized,
    State(app): State<AppState>,
    ApiPath((id, action)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let who = format!("API key {}", key.0.prefix);
    let v = match app.0.delivery.act(&id, &action, &who).await? {
        ActionDone::Changed(e) => serde_json::to_value(e).map_err(ApiError::internal)?,
        ActionDone::Rotated(e, secret) => with_secret(&e, &secret)?,
        ActionDone::Tested(n) => json!({ "delivery": n }),
    };
    Ok(Json(v))
}

/// The body of `POST /api/v1/webhooks/{id}/replay`.
#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Event filter (default `*`).
    events: Option<Vec<String>>,
    /// RFC 3339 or Unix seconds.
    from: String,
    /// RFC 3339 or Unix seconds (exclusive).
    to: String,
}

/// `POST /api/v1/webhooks/{id}/replay` `{"events": ["conversion.*"],
/// "from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z"}`: sends
/// those events to the endpoint again; answers `{"replayed": n}`.
#[utoipa::path(post, path = "/webhooks/{id}/replay", tag = "webhooks", params(("id" = String, Path, description = "The endpoint id (`ep_` + ULID)")), request_body = ReplayBody, responses((status = 200, description = "How many deliveries were queued", body = Object)))]
pub async fn replay_range(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(v): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b: ReplayBody =
        serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let from = clickward_core::parse_timestamp(&b.from)
        .map_err(|e| ApiError::invalid(format!("from: {e}")))?;
    let to = clickward_core::parse_timestamp(&b.to)
        .map_err(|e| ApiError::invalid(format!("to: {e}")))?;
    let events = b.events.unwrap_or_else(|| vec!["*".to_owned()]);
    let n = app.0.delivery.replay_range(&id, events, from, to).await?;
    Ok(Json(json!({ "replayed": n })))
}

/// The query of `GET /api/v1/deliveries`.
#[derive(utoipa::IntoParams, Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    endpoint: Option<String>,
    status: Option<String>,
    affiliate: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// Rows one delivery list returns at most.
const MAX_DELIVERIES: u32 = 1000;

/// `GET /api/v1/deliveries?endpoint=ep_…&status=dead&affiliate=&limit=100&cursor=`:
/// the delivery log, newest first.
#[utoipa::path(get, path = "/deliveries", tag = "deliveries", params(DeliveriesQuery), responses((status = 200, body = Page<clickward_store::DeliveryRow>)))]
pub async fn list_deliveries(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Page<clickward_store::DeliveryRow>>> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_DELIVERIES).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={MAX_DELIVERIES}")))?,
    };
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "pending" | "delivered" | "dead")
    {
        return Err(ApiError::bad_request(
            "status must be pending, delivered or dead",
        ));
    }
    let before = app
        .0
        .cursors
        .open::<i64>("deliveries", q.cursor.as_deref())?;
    let affiliate = match q.affiliate.as_deref() {
        None => None,
        Some(s) => {
            Some(Slug::parse(s).map_err(|e| ApiError::bad_request(format!("affiliate: {e}")))?)
        }
    };
    let rows = app
        .0
        .delivery
        .deliveries(DeliveryQuery {
            endpoint: q.endpoint,
            affiliate,
            status: q.status,
            before,
            limit: limit + 1,
        })
        .await?;
    Ok(Json(
        app.0.cursors.page("deliveries", rows, limit, |r| r.id),
    ))
}

fn delivery_id(s: &str) -> ApiResult<i64> {
    s.parse()
        .map_err(|_| ApiError::not_found(format!("delivery {s:?}")))
}

/// `GET /api/v1/deliveries/{id}`: the delivery and every attempt (status,
/// latency, the first KiB of the answer).
#[utoipa::path(get, path = "/deliveries/{id}", tag = "deliveries", params(("id" = i64, Path, description = "The delivery id")), responses((status = 200, description = "The delivery and its attempts", body = Object)))]
pub async fn get_delivery(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let (row, attempts) = app.0.delivery.delivery(delivery_id(&id)?).await?;
    let mut v = serde_json::to_value(row).map_err(ApiError::internal)?;
    if let Value::Object(m) = &mut v {
        m.insert(
            "attempts_log".to_owned(),
            serde_json::to_value(attempts).map_err(ApiError::internal)?,
        );
    }
    Ok(Json(v))
}

/// `POST /api/v1/deliveries/{id}/replay`: sends it again now (a dead
/// letter too), with the same `webhook-id`.
#[utoipa::path(post, path = "/deliveries/{id}/replay", tag = "deliveries", params(("id" = i64, Path, description = "The delivery id")), responses((status = 202, description = "Queued to be sent again now")))]
pub async fn replay_delivery(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.0.delivery.replay(delivery_id(&id)?).await?;
    Ok(StatusCode::ACCEPTED)
}
