//! `/api/v1/privacy/*`: erasures with receipts, and the export of what is
//! stored about a visitor or an order (docs/privacy.md). Admin keys only:
//! both reach personal data.

use crate::http::error::ApiPath;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Authorized;
use super::error::{ApiError, ApiQuery};
use super::paging::{self, Page, PageArgs};
use crate::process::app::AppState;
use crate::services::privacy::Selector;
use clickward_store::{KeyScope, Receipt, RequestStatus, Subject};

type ApiResult<T> = Result<T, ApiError>;

/// At most this many subjects in one batch.
const MAX_BATCH: usize = 10_000;

fn admin(key: &Authorized) -> Result<(), ApiError> {
    if key.0.scope != KeyScope::Admin {
        return Err(ApiError::forbidden(
            "privacy requests reach personal data: they need an admin key",
        ));
    }
    Ok(())
}

fn subject(app: &AppState, s: &Selector) -> Result<Subject, String> {
    let sealer = &app.0.cookie_sealer;
    s.subject(|v| sealer.open(super::tracking::VISITOR_COOKIE, v))
}

/// The body of `POST /api/v1/privacy/erasures`: one selector, or a batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ErasureBody {
    Batch { batch: Vec<Selector> },
    One(Selector),
}

/// `POST /api/v1/privacy/erasures` with one selector (`{"visitor": "<cw_vid
/// value>"}`, `visitor_key`, `click_id`, `order_id` [+ `program`],
/// `conversion_id` or `sub`): carried out at once, 201 with the receipt
/// (`done`, counts per table), or 202 with it `received` when the store
/// failed half way (retried every minute; never done before it is) or the
/// shared PostgreSQL is down (held on this node's disk until it is back). With
/// `{"batch": [selector, …]}` (at most 10,000): every request is stored,
/// then carried out in the background one at a time (and, after a crash,
/// at the next start); 202 with the receipts. A bad selector is a 422 naming it, and nothing is stored.
#[utoipa::path(post, operation_id = "create_erasure", path = "/privacy/erasures", tag = "privacy", request_body = ErasureBody, responses((status = 201, description = "Done: the receipt", body = Object), (status = 202, description = "Received: a batch, or retried until it is done", body = Object)))]
pub async fn erase(
    key: Authorized,
    State(app): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin(&key)?;
    let body: ErasureBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a selector or {{\"batch\": [selectors]}}: {e}"
        ))
    })?;
    let actor = format!("key:{}", key.0.prefix);
    let p = &app.0.privacy;
    match body {
        ErasureBody::One(s) => {
            let r = p
                .erase(subject(&app, &s).map_err(ApiError::invalid)?, &actor)
                .await
                .map_err(not_received)?;
            let status = if r.status == RequestStatus::Done {
                StatusCode::CREATED
            } else {
                StatusCode::ACCEPTED
            };
            Ok((status, Json(json!(r))))
        }
        ErasureBody::Batch { batch } => {
            if batch.is_empty() || batch.len() > MAX_BATCH {
                return Err(ApiError::invalid(format!(
                    "batch: 1 to {MAX_BATCH} selectors, not {}",
                    batch.len()
                )));
            }
            // Every selector is checked before any is stored.
            let subjects = batch
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    subject(&app, s).map_err(|e| ApiError::invalid(format!("batch[{i}]: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let receipts = p.receive(subjects, &actor).await.map_err(not_received)?;
            // Carried out in the background from now.
            let worker = p.clone();
            tokio::spawn(async move { while worker.retry_pending().await > 0 {} });
            Ok((StatusCode::ACCEPTED, Json(json!({ "receipts": receipts }))))
        }
    }
}

/// A request the store could not take: nothing was received (a batch may
/// have been taken in part: its receipts are listed).
fn not_received(e: clickward_store::StoreError) -> ApiError {
    ApiError::unavailable(
        "the store cannot be reached: this request was not received; send it again \
         (receipts already listed in GET /api/v1/privacy/erasures were)",
        e,
    )
}

/// `GET /api/v1/privacy/erasures?limit=100&cursor=` → receipts, newest
/// first.
#[utoipa::path(get, operation_id = "list_erasures", path = "/privacy/erasures", tag = "privacy", params(PageArgs), responses((status = 200, body = Page<Receipt>)))]
pub async fn list(
    key: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<Receipt>>> {
    admin(&key)?;
    let limit = paging::limit(q.limit.as_deref(), paging::MAX_LIMIT)?;
    let before = app
        .0
        .cursors
        .open::<String>("erasures", q.cursor.as_deref())?;
    let rows = app.0.privacy.receipts(before, limit + 1).await?;
    Ok(Json(
        app.0
            .cursors
            .page("erasures", rows, limit, |r| r.id.clone()),
    ))
}

/// `GET /api/v1/privacy/erasures/{id}` → one receipt, or 404.
#[utoipa::path(get, operation_id = "get_erasure", path = "/privacy/erasures/{id}", tag = "privacy", params(("id" = String, Path, description = "The receipt id (`era_` + ULID)")), responses((status = 200, description = "The receipt", body = Object)))]
pub async fn get(
    key: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    admin(&key)?;
    match app.0.privacy.receipt(&id).await? {
        Some(r) => Ok(Json(json!(r))),
        None => Err(ApiError::not_found(format!("no privacy request {id:?}"))),
    }
}

/// `GET /api/v1/privacy/export?visitor=…` (or any one selector of the
/// erasure) → `{"subject", "clicks", "conversions", "deliveries"}`:
/// everything stored about them, the same selection as erasure.
#[utoipa::path(get, operation_id = "export_privacy", path = "/privacy/export", tag = "privacy", params(Selector), responses((status = 200, description = "Everything held about the subject", body = Object)))]
pub async fn export(
    key: Authorized,
    State(app): State<AppState>,
    ApiQuery(s): ApiQuery<Selector>,
) -> ApiResult<Json<Value>> {
    admin(&key)?;
    let subject = subject(&app, &s).map_err(ApiError::invalid)?;
    let kind = subject.kind();
    let data = app.0.privacy.export(subject).await?;
    Ok(Json(json!({
        "subject": kind,
        "clicks": data.clicks,
        "conversions": data.conversions,
        "deliveries": data.deliveries,
    })))
}
