//! Conversion routes: S2S postback, JSON API (with Idempotency-Key), status
//! changes, balances. The work is in [`crate::services::conversions::ConversionService::intake`].

use crate::http::error::ApiPath;
use crate::services::conversions::ConversionView;
use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clickward_core::conversion::{ConversionReport, ConversionStatus};
use clickward_core::id::{ConversionId, Slug};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::ApiError;
use crate::http::auth::Authorized;
use crate::http::error::ApiQuery;
use crate::http::paging::{self, Page};
use crate::process::app::AppState;
use crate::services::conversions::{Answer, Via, conversion_json};
use clickward_store::{ConversionFilter, IdempotencyClaim, KeyScope};

/// Largest postback or API body read, bytes.
const MAX_BODY: usize = 16 * 1024;

fn answer(a: Answer) -> Response {
    let mut r = (a.status, Json(a.body)).into_response();
    if a.status == StatusCode::SERVICE_UNAVAILABLE {
        // A click on its way: senders retry 5xx; tell them when.
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}

/// `GET|POST /postback?click_id=…&order_id=…&amount=…&token=…`.
///
/// POST bodies are `application/x-www-form-urlencoded`; their pairs follow
/// the query's, and a signature then covers the body instead of the query.
pub async fn postback(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    if parts.method == Method::HEAD {
        // A safe method never records anything (a link checker or a proxy
        // probing the URL must not mint conversions).
        return answer(Answer {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: json!({"status": "malformed", "reason": "HEAD changes nothing: report a conversion with GET or POST"}),
        });
    }
    let body = if parts.method == Method::POST {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return answer(Answer {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    body: json!({"status": "malformed", "reason": format!("body larger than {MAX_BODY} bytes")}),
                });
            }
        }
    } else {
        Bytes::new()
    };
    let query = parts.uri.query().unwrap_or_default();
    let body_text = String::from_utf8_lossy(&body);
    let decode = |b: &[u8]| -> Vec<(String, String)> {
        url::form_urlencoded::parse(b)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    let (in_query, in_body) = (decode(query.as_bytes()), decode(&body));
    if let Err(reason) = fields_once(&in_query, &in_body) {
        return answer(Answer {
            status: StatusCode::BAD_REQUEST,
            body: json!({"status": "malformed", "reason": reason}),
        });
    }
    let pairs: Vec<(String, String)> = in_query.into_iter().chain(in_body).collect();
    let get = |names: &[&str]| {
        pairs
            .iter()
            .find(|(k, v)| names.contains(&k.as_str()) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let report = ConversionReport::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let ip = super::client_of(&app, peer, &parts.headers);
    if let Some(l) = super::over_limit(&app, crate::services::limits::Class::Postback, ip).await {
        return l.into_response();
    }
    let signed = if body.is_empty() {
        query
    } else {
        body_text.as_ref()
    };
    let via = Via::Postback {
        raw_query: signed,
        token: get(&["token", "security_token", "verification_token"]),
        signature: get(&["signature"]),
        ip,
    };
    let a = app.0.conversions.intake(&report, None, via).await;
    let outcome = a.body["status"].as_str().unwrap_or("error").to_owned();
    metrics::counter!(
        crate::telemetry::POSTBACKS_TOTAL,
        "status" => a.status.as_str().to_owned(),
        "outcome" => outcome
    )
    .increment(1);
    answer(a)
}

/// Every field of a postback is read from one place, once: a field given
/// twice (under one name or two aliases, `order_id` and `txid`) is refused,
/// and so is a signed POST whose query carries fields beside its body: the
/// signature covers the body only, so every field used must be there.
fn fields_once(query: &[(String, String)], body: &[(String, String)]) -> Result<(), String> {
    let mut seen: Vec<(&'static str, String)> = Vec::new();
    let mut in_query = Vec::new();
    for (part, pairs) in [("query", query), ("body", body)] {
        for (k, _) in pairs {
            let Some(field) = clickward_core::conversion::canonical_field(k) else {
                continue;
            };
            if part == "query" {
                in_query.push(k.clone());
            }
            if let Some((_, first)) = seen.iter().find(|(f, _)| *f == field) {
                return Err(format!(
                    "{field} is given twice (as {first} and as {}); give each field once",
                    clickward_core::truncate_utf8(k, 40)
                ));
            }
            seen.push((field, clickward_core::truncate_utf8(k, 40).to_owned()));
        }
    }
    let signed = seen.iter().any(|(f, _)| *f == "signature");
    if signed && !body.is_empty() && !in_query.is_empty() {
        return Err(format!(
            "a signed POST carries its fields in the body only (the signature covers the body); found {} in the query",
            in_query.join(", ")
        ));
    }
    Ok(())
}

/// How long a request waits for another with the same Idempotency-Key to
/// finish before it is told to retry.
const IDEMPOTENCY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A claim this old (µs) belongs to a process that died mid-work and is
/// taken over (the conversion, if it was recorded, is then found again by
/// its order id).
const IDEMPOTENCY_STALE_US: i64 = 60 * clickward_core::MICROS_PER_SEC;

/// Claims `key` for this request, or answers it: `None` when this request
/// holds the key and must do the work; otherwise the answer to send (the
/// first request's stored answer, 422 for another request under the same
/// key, 409 when the first is still working after [`IDEMPOTENCY_WAIT`]).
async fn claim_key(app: &AppState, key: &str, print: &[u8]) -> Option<Response> {
    let deadline = tokio::time::Instant::now() + IDEMPOTENCY_WAIT;
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        let claim = app
            .0
            .store
            .claim_idempotency_key(key.to_owned(), print.to_vec(), IDEMPOTENCY_STALE_US)
            .await;
        let fp = match &claim {
            Ok(IdempotencyClaim::Claimed) => return None,
            Ok(IdempotencyClaim::Working(fp) | IdempotencyClaim::Done(fp, _, _)) => fp,
            Err(e) => return Some(ApiError::internal(e).into_response()),
        };
        if fp.as_slice() != print {
            return Some(answer(Answer {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: json!({"status": "invalid", "reason": "Idempotency-Key was used before with a different request"}),
            }));
        }
        if let Ok(IdempotencyClaim::Done(_, status, stored)) = claim {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let body: Value = serde_json::from_str(&stored).unwrap_or(Value::Null);
            return Some(
                (
                    status,
                    [(
                        header::HeaderName::from_static("idempotent-replayed"),
                        "true",
                    )],
                    Json(body),
                )
                    .into_response(),
            );
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Some(
                (
                    StatusCode::CONFLICT,
                    [(header::RETRY_AFTER, "1")],
                    Json(json!({"status": "in_progress", "reason": "a request with this Idempotency-Key is still being processed; retry later for its answer"})),
                )
                    .into_response(),
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

/// `POST /api/v1/conversions` (admin key), JSON:
/// `{"click_id", "order_id", "amount": "12.34", "currency", "event", "status",
/// "occurred_at", "adv_sub1".."adv_sub5"}`. Amounts are strings (or
/// integers): JSON decimals are floats and money is never a float.
/// An `Idempotency-Key` header makes a retry return the first answer.
#[utoipa::path(post, operation_id = "create_conversion", path = "/conversions", tag = "conversions", params(("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key answer the first answer")), request_body = Object, responses((status = 200, description = "Already recorded (a replay)", body = IntakeAnswer), (status = 201, description = "Recorded", body = IntakeAnswer), (status = 401, description = "No or an unknown API key", body = crate::http::error::ErrorBody), (status = 403, description = "Not an admin key", body = crate::http::error::ErrorBody), (status = "4XX", description = "Not recorded, with the reason", body = IntakeAnswer)))]
pub async fn create(
    Authorized(key): Authorized,
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if key.scope != KeyScope::Admin {
        return ApiError::forbidden("recording conversions needs an admin key").into_response();
    }
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if idem.is_some_and(|k| k.len() > 255) {
        return ApiError::bad_request("Idempotency-Key is longer than 255 bytes").into_response();
    }
    // A body that does not parse changed nothing and claims no key, so the
    // corrected request may reuse it (as Stripe keeps no answer for a
    // request that failed validation). The fingerprint is of the parsed
    // request (its fields, in a fixed order): the same JSON with its keys in
    // another order is the same request.
    let (report, print) = match parse_json_report(&body) {
        Ok(parsed) => parsed,
        Err(reason) => {
            return answer(Answer {
                status: StatusCode::BAD_REQUEST,
                body: json!({"status": "malformed", "reason": reason}),
            });
        }
    };
    if let Some(k) = idem
        && let Some(done) = claim_key(&app, k, &print).await
    {
        return done;
    }
    let a = app
        .0
        .conversions
        .intake(
            &report,
            None,
            Via::Api {
                actor: format!("api:{}", key.prefix),
            },
        )
        .await;
    // Server errors are not stored: a retry may succeed.
    if let Some(k) = idem {
        let saved = if a.status.as_u16() < 500 {
            app.0
                .store
                .save_idempotent_response(
                    k.to_owned(),
                    print,
                    a.status.as_u16(),
                    a.body.to_string(),
                )
                .await
        } else {
            app.0.store.release_idempotency_key(k.to_owned()).await
        };
        if let Err(e) = saved {
            tracing::warn!("saving the answer of an Idempotency-Key: {e}");
        }
    }
    answer(a)
}

/// The fields `POST /api/v1/conversions` takes (the postback's aliases are
/// for senders that cannot choose their names; the JSON API names each field
/// once, as the link API does, and refuses others).
const JSON_FIELDS: [&str; 13] = [
    "click_id",
    "order_id",
    "amount",
    "currency",
    "event",
    "status",
    "occurred_at",
    "adv_sub1",
    "adv_sub2",
    "adv_sub3",
    "adv_sub4",
    "adv_sub5",
    "ip",
];

/// The report in a JSON body, and the fingerprint of the request: BLAKE3 of
/// its fields sorted by name, so key order does not matter.
fn parse_json_report(body: &[u8]) -> Result<(ConversionReport, Vec<u8>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("body must be a JSON object".to_owned());
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in map {
        if !JSON_FIELDS.contains(&k.as_str()) {
            return Err(format!(
                "unknown field {:?}; the fields are {}",
                clickward_core::truncate_utf8(&k, 64),
                JSON_FIELDS.join(", ")
            ));
        }
        let text = match v {
            Value::String(s) => s,
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            Value::Number(_) => {
                return Err(format!(
                    "{k} must be a string like \"12.34\": JSON decimals are floats"
                ));
            }
            Value::Null => continue,
            _ => return Err(format!("{k} must be a string")),
        };
        pairs.push((k, text));
    }
    pairs.sort();
    let mut print = blake3::Hasher::new();
    for (k, v) in &pairs {
        // Length-prefixed, so no two field lists hash alike.
        print.update(&(k.len() as u64).to_le_bytes());
        print.update(k.as_bytes());
        print.update(&(v.len() as u64).to_le_bytes());
        print.update(v.as_bytes());
    }
    let report = ConversionReport::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok((report, print.finalize().as_bytes().to_vec()))
}

/// What conversion intake answers (docs/postbacks.md, "Answers"): the
/// same words as a postback's.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: answers are built as JSON
pub struct IntakeAnswer {
    /// `created`, `duplicate`, `updated`, `invalid`, `unattributed`,
    /// `rejected`, `held`, `forbidden`, `rate_limited`, `unavailable`, …
    status: String,
    /// Why, when it was not recorded as asked.
    reason: Option<String>,
    /// The conversion's id, when there is one.
    #[schema(value_type = Option<clickward_core::id::ConversionId>)]
    conversion_id: Option<String>,
    /// The conversion as stored.
    conversion: Option<ConversionView>,
}

#[derive(utoipa::IntoParams, Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    affiliate: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/conversions?status=&affiliate=&limit=&cursor=`: newest
/// first (in the order they were stored), up to 1,000 a page.
#[utoipa::path(get, operation_id = "list_conversions", path = "/conversions", tag = "conversions", params(ListQuery), responses((status = 200, body = Page<ConversionView>)))]
pub async fn list(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Value>>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            ConversionStatus::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown status {s:?}")))?,
        ),
    };
    let affiliate = match q.affiliate.as_deref() {
        None | Some("") => None,
        Some(s) => {
            Some(Slug::parse(s).map_err(|e| ApiError::bad_request(format!("affiliate {e}")))?)
        }
    };
    let limit = paging::limit(q.limit.as_deref(), paging::MAX_LIMIT)?;
    let before = app
        .0
        .cursors
        .open::<ConversionId>("conversions", q.cursor.as_deref())?;
    let rows = app
        .0
        .store
        .list_conversions(ConversionFilter {
            status,
            affiliate,
            before,
            limit: limit + 1,
        })
        .await?;
    let page = app
        .0
        .cursors
        .page("conversions", rows, limit, |r| r.conversion_id);
    Ok(Json(Page {
        items: page.items.iter().map(conversion_json).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn parse_id(s: &str) -> Result<ConversionId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::not_found("no such conversion"))
}

/// `GET /api/v1/conversions/{id}`.
#[utoipa::path(get, operation_id = "get_conversion", path = "/conversions/{id}", tag = "conversions", params(("id" = clickward_core::id::ConversionId, Path, description = "The conversion id")), responses((status = 200, body = ConversionView)))]
pub async fn get(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(conversion_json(
        &app.0.store.get_conversion(parse_id(&id)?).await?,
    )))
}

#[derive(utoipa::ToSchema, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Change {
    reason: Option<String>,
}

/// The actions of `POST /api/v1/conversions/{id}/{action}`, for the
/// document (the handler reads the path segment itself).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ConversionAction {
    Approve,
    Reject,
    Reverse,
}

/// `POST /api/v1/conversions/{id}/{approve|reject|reverse}` with an optional
/// `{"reason": "…"}`; appends ledger entries, never edits. 409 when the
/// lifecycle forbids the change.
#[utoipa::path(post, operation_id = "change_conversion", path = "/conversions/{id}/{action}", tag = "conversions", params(("id" = clickward_core::id::ConversionId, Path, description = "The conversion id"), ("action" = inline(ConversionAction), Path, description = "The lifecycle change")), request_body = Option<Change>, responses((status = 200, description = "The conversion after the change", body = ConversionView)))]
pub async fn change(
    Authorized(key): Authorized,
    State(app): State<AppState>,
    ApiPath((id, action)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let to = match action.as_str() {
        "approve" => ConversionStatus::Approved,
        "reject" => ConversionStatus::Rejected,
        "reverse" => ConversionStatus::Reversed,
        _ => {
            return Err(ApiError::not_found(
                "actions are approve, reject and reverse",
            ));
        }
    };
    let change: Change = if body.is_empty() {
        Change::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let row = app
        .0
        .conversions
        .change_status(
            parse_id(&id)?,
            to,
            format!("api:{}", key.prefix),
            change.reason,
        )
        .await?;
    Ok(Json(conversion_json(&row)))
}

/// `GET /api/v1/balances`: ledger sums by affiliate, currency and bucket.
#[utoipa::path(get, operation_id = "balances", path = "/balances", tag = "conversions", params(paging::NoArgs), responses((status = 200, description = "Ledger sums by affiliate, currency and bucket", body = Vec<Object>)))]
pub async fn balances(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(_): ApiQuery<paging::NoArgs>,
) -> Result<Json<Value>, ApiError> {
    let rows = app.0.store.balances(None).await?;
    Ok(Json(json!(rows)))
}

/// The method guard for `/postback`.
pub fn postback_methods() -> axum::routing::MethodRouter<AppState> {
    axum::routing::get(postback).post(postback)
}

/// A transparent 1×1 GIF (43 bytes).
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// `GET /pixel.gif?order_id=…&amount=…[&event=…][&program=slug]` for
/// same-domain setups: attributed by the first-party attribution cookie only
/// (a `click_id` in the query is ignored: the encrypted cookie is what makes
/// a pixel trustworthy). Always answers the GIF, never an error page; the
/// outcome is in the status code and `X-Clickward-Status` /
/// `X-Clickward-Reason`.
pub async fn pixel(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let ip = super::client_of(&app, peer, &parts.headers);
    if let Some(l) = super::over_limit(&app, crate::services::limits::Class::Pixel, ip).await {
        // Still the GIF, as every pixel answer; the 429 and Retry-After say why.
        let mut r = pixel_answer(Answer {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: l.body,
        });
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(l.retry_after_s));
        return r;
    }
    let query = parts.uri.query().unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        // A page cannot choose the click (the cookie does), approve its own
        // conversion, or name another buyer address than its own.
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "click_id"
                    | "transaction_id"
                    | "cid"
                    | "clickid"
                    | "subid"
                    | "sid"
                    | "status"
                    | "ip"
                    | "customer_ip"
                    | "user_ip"
            )
        })
        .collect();
    let program = pairs
        .iter()
        .find(|(k, _)| k == "program")
        .map(|(_, v)| v.clone());
    let sig = pairs
        .iter()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.clone());
    let jar = axum_extra::extract::PrivateCookieJar::from_headers(
        &parts.headers,
        app.0.cookie_key.clone(),
    );
    let cookies: Vec<(String, String)> = jar
        .iter()
        .filter_map(|c| {
            let slug = c
                .name()
                .strip_prefix(crate::services::links::ATTRIBUTION_COOKIE_PREFIX)?
                .to_owned();
            Some((slug, c.value().to_owned()))
        })
        .collect();
    let chosen = match &program {
        Some(p) => cookies.iter().find(|(slug, _)| slug == p),
        None if cookies.len() == 1 => cookies.first(),
        None => None,
    };
    let cookie_click = chosen
        .and_then(|(_, v)| super::tracking::AttributionValue::decode(v))
        .map(|v| v.click_id);
    let a = if cookie_click.is_none() && cookies.len() > 1 && program.is_none() {
        Answer {
            status: StatusCode::BAD_REQUEST,
            body: json!({"status": "malformed", "reason": "several programs' cookies: say which with program="}),
        }
    } else {
        let report =
            ConversionReport::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        app.0
            .conversions
            .intake(
                &report,
                cookie_click,
                Via::Pixel {
                    sig: sig.as_deref(),
                    ip,
                },
            )
            .await
    };
    pixel_answer(a)
}

/// A pixel's answer: always the GIF, the outcome in the status code and
/// `X-Clickward-Status` / `X-Clickward-Reason`.
fn pixel_answer(a: Answer) -> Response {
    let kind = a.body["status"].as_str().unwrap_or("error").to_owned();
    let reason = a.body["reason"].as_str().unwrap_or_default();
    let reason = HeaderValue::from_str(
        &reason.replace(|c: char| !c.is_ascii() || c.is_ascii_control(), " "),
    )
    .unwrap_or(HeaderValue::from_static(""));
    (
        a.status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::HeaderName::from_static("x-clickward-status"),
                HeaderValue::from_str(&kind).unwrap_or(HeaderValue::from_static("error")),
            ),
            (
                header::HeaderName::from_static("x-clickward-reason"),
                reason,
            ),
        ],
        PIXEL_GIF,
    )
        .into_response()
}
