//! The admin API of fraud rules and excluded traffic: `/api/v1/rules`
//! (the same fields as the catalogue's `[[rules]]`) and
//! `/api/v1/exclusions` (addresses are hashed at once; none is stored or
//! shown).

use crate::http::error::{ApiJson, ApiPath};
use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use clickward_core::fraud::RuleSpec;
use clickward_core::id::Slug;
use clickward_store::{Exclusion, StoredRule};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::ApiError;
use crate::http::auth::Authorized;
use crate::http::error::ApiQuery;
use crate::http::paging::{self, Page, PageArgs};
use crate::process::app::AppState;
use crate::services::fraud::{ExcludeWhat, RuleSaveError};

type ApiResult<T> = Result<T, ApiError>;

impl From<RuleSaveError> for ApiError {
    fn from(e: RuleSaveError) -> Self {
        match e {
            RuleSaveError::Invalid(m) => ApiError::invalid(m),
            RuleSaveError::Store(s) => s.into(),
        }
    }
}

/// `GET /api/v1/rules`: every rule as written, with its owner.
#[utoipa::path(get, path = "/rules", tag = "rules", params(PageArgs), responses((status = 200, body = Page<StoredRule>)))]
pub async fn list_rules(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<StoredRule>>> {
    let all = app.0.fraud_rules.rules().await?;
    Ok(Json(app.0.cursors.page_all(
        "rules",
        all,
        &q,
        paging::MAX_LIMIT,
        |r| r.spec.id.clone(),
    )?))
}

/// `PUT /api/v1/rules/{id}` with the rule's fields (`check`, `action`,
/// `program`, `affiliate`, `limit`, `window`, …; `id` may be left out) →
/// 200 with the stored rule. A field a check does not take, an unknown
/// field, a bad window or country: 400/422 naming the rule and the field,
/// and nothing changes.
#[utoipa::path(put, path = "/rules/{id}", tag = "rules", params(("id" = String, Path, description = "The rule id")), request_body = clickward_core::fraud::RuleSpec, responses((status = 200, description = "The rule as stored", body = Object)))]
pub async fn put_rule(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut v): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let Value::Object(map) = &mut v else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    match map.get("id") {
        None => {
            map.insert("id".into(), Value::String(id.clone()));
        }
        Some(Value::String(given)) if *given == id => {}
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "the body's id differs from the path's {id:?}"
            )));
        }
    }
    let spec: RuleSpec = serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("rule {id:?}: {e}")))?;
    app.0
        .fraud_rules
        .save_rule(spec, app.0.clock.now_micros())
        .await?;
    let stored = app
        .0
        .fraud_rules
        .rules()
        .await?
        .into_iter()
        .find(|r| r.spec.id == id)
        .ok_or_else(|| ApiError::not_found(format!("rule {id:?}")))?;
    Ok(Json(json!(stored)))
}

/// `DELETE /api/v1/rules/{id}` → 204, or 404.
#[utoipa::path(delete, path = "/rules/{id}", tag = "rules", params(("id" = String, Path, description = "The rule id")), responses((status = 204, description = "Removed")))]
pub async fn delete_rule(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if app.0.fraud_rules.delete_rule(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("rule {id:?} not found")))
    }
}

/// `GET /api/v1/exclusions`: every entry (label, kind, affiliate; never an
/// address).
#[utoipa::path(get, path = "/exclusions", tag = "exclusions", params(PageArgs), responses((status = 200, body = Page<Exclusion>)))]
pub async fn list_exclusions(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<Exclusion>>> {
    let all = app.0.fraud_rules.exclusions().await?;
    Ok(Json(app.0.cursors.page_all(
        "exclusions",
        all,
        &q,
        paging::MAX_LIMIT,
        |e| e.id,
    )?))
}

/// The body of `POST /api/v1/exclusions`.
#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludeBody {
    /// An address to exclude (IPv4 or IPv6).
    ip: Option<String>,
    /// Exclude the address this request comes from.
    #[serde(default)]
    current_visitor: bool,
    /// Make a browser token (its URL sets the exclusion cookie).
    #[serde(default)]
    browser: bool,
    /// What to call it ("office", "Mia's laptop").
    label: Option<String>,
    /// This affiliate's own traffic (self-referral) instead of the
    /// merchant's or publisher's.
    affiliate: Option<Slug>,
}

/// `POST /api/v1/exclusions` `{"ip": "203.0.113.7" | "current_visitor": true
/// | "browser": true, "label", "affiliate"}` → 201 with the entry (and, for
/// a browser, the `url` that marks it). The address is hashed at once.
#[utoipa::path(post, path = "/exclusions", tag = "exclusions", request_body = ExcludeBody, responses((status = 201, description = "The entry", body = Object)))]
pub async fn add_exclusion(
    _: Authorized,
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<ExcludeBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let what = match (&b.ip, b.current_visitor, b.browser) {
        (Some(ip), false, false) => ExcludeWhat::Ip(ip.trim().parse::<IpAddr>().map_err(|_| {
            ApiError::invalid(format!(
                "ip: {:?} is not an IPv4 or IPv6 address",
                clickward_core::truncate_utf8(ip, 60)
            ))
        })?),
        (None, true, false) => ExcludeWhat::Ip(super::client_of(&app, peer, &headers)),
        (None, false, true) => ExcludeWhat::Browser,
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of ip, current_visitor: true, browser: true",
            ));
        }
    };
    let (e, token) = app
        .0
        .fraud_rules
        .exclude(
            what,
            b.label.unwrap_or_default(),
            b.affiliate,
            app.0.clock.now_micros(),
        )
        .await?;
    let mut v = json!(e);
    if let (Some(t), Value::Object(m)) = (token, &mut v) {
        m.insert("url".into(), Value::String(format!("/exclude?t={t}")));
    }
    Ok((StatusCode::CREATED, Json(v)))
}

/// `DELETE /api/v1/exclusions/{id}` → 204, or 404.
#[utoipa::path(delete, path = "/exclusions/{id}", tag = "exclusions", params(("id" = i64, Path, description = "The entry id")), responses((status = 204, description = "Removed")))]
pub async fn remove_exclusion(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    if app.0.fraud_rules.remove_exclusion(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("exclusion {id} not found")))
    }
}
