//! The admin API: programs, affiliates, links (create, read, list, update,
//! disable/enable) and clicks (list, read). JSON in and out.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clickward_core::id::{ClickId, LinkCode, Slug};
use clickward_core::link::{Destination, RedirectStatus, Status, UtmDefaults};
use clickward_store::{LinkInput, LinkRecord, SaveMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::ApiError;
use crate::http::auth::Authorized;
use crate::http::error::ApiQuery;
use crate::process::app::AppState;
use crate::services::catalog::{NamedBody, NamedResource};
use crate::services::programs::{self, ProgramSpec, ProgramView};

type ApiResult<T> = Result<T, ApiError>;

fn parse_slug(s: &str) -> ApiResult<Slug> {
    Slug::parse(s).map_err(|e| ApiError::not_found(format!("slug {e}")))
}

fn parse_code(s: &str) -> ApiResult<LinkCode> {
    LinkCode::parse(s).map_err(|e| ApiError::not_found(format!("link code {e}")))
}

fn body<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Merges a PATCH object into the current JSON of a resource.
fn merge(mut current: Value, patch: Value) -> ApiResult<Value> {
    let (Value::Object(cur), Value::Object(p)) = (&mut current, patch) else {
        return Err(ApiError::bad_request("a PATCH body must be a JSON object"));
    };
    for (k, v) in p {
        cur.insert(k, v);
    }
    Ok(current)
}

fn to_value<T: Serialize>(t: &T) -> ApiResult<Value> {
    serde_json::to_value(t).map_err(ApiError::internal)
}

// ---- programs and affiliates ---------------------------------------------
//
// One set of handlers serves both names-and-status shapes, typed by the
// resource (`services::catalog::NamedResource`); programs take and show
// their settings as well (below).

pub async fn list_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
) -> ApiResult<Json<Vec<R>>> {
    Ok(Json(R::list(app.0.store.as_ref()).await?))
}

pub async fn get_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<R>> {
    Ok(Json(
        R::get(app.0.store.as_ref(), parse_slug(&slug)?).await?,
    ))
}

pub async fn create_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    Json(v): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    let b: NamedBody = body(v)?;
    let saved = app.0.catalog.save_named::<R>(b, SaveMode::Create).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

pub async fn update_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
    Json(patch): Json<Value>,
) -> ApiResult<Json<R>> {
    let cur = R::get(app.0.store.as_ref(), parse_slug(&slug)?).await?;
    let cur_slug = cur.body().slug;
    let merged = merge(to_value(&cur.body())?, patch)?;
    let b: NamedBody = body(merged)?;
    if b.slug != cur_slug {
        return Err(ApiError::invalid(format!(
            "a {} slug cannot be changed",
            R::KIND
        )));
    }
    Ok(Json(
        app.0.catalog.save_named::<R>(b, SaveMode::Update).await?,
    ))
}

async fn set_named_status<R: NamedResource>(
    app: &AppState,
    slug: &str,
    status: Status,
) -> ApiResult<Json<R>> {
    let mut b = R::get(app.0.store.as_ref(), parse_slug(slug)?)
        .await?
        .body();
    b.status = status;
    Ok(Json(
        app.0.catalog.save_named::<R>(b, SaveMode::Update).await?,
    ))
}

pub async fn disable_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<R>> {
    set_named_status(&app, &slug, Status::Disabled).await
}

pub async fn enable_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<R>> {
    set_named_status(&app, &slug, Status::Active).await
}

// ---- programs: everything the catalogue can say ------------------------------

pub async fn list_programs(
    _: Authorized,
    State(app): State<AppState>,
) -> ApiResult<Json<Vec<ProgramView>>> {
    let store = app.0.store.as_ref();
    let mut out = Vec::new();
    for p in store.list_programs().await? {
        out.push(programs::view(store, p).await?);
    }
    Ok(Json(out))
}

pub async fn get_program(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<ProgramView>> {
    let store = app.0.store.as_ref();
    let p = store.get_program(parse_slug(&slug)?).await?;
    Ok(Json(programs::view(store, p).await?))
}

pub async fn create_program(
    _: Authorized,
    State(app): State<AppState>,
    Json(v): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    let spec: ProgramSpec = body(v)?;
    let saved = app.0.catalog.create_program(&spec).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

pub async fn update_program(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
    Json(v): Json<Value>,
) -> ApiResult<Json<ProgramView>> {
    if !v.is_object() {
        return Err(ApiError::bad_request("a PATCH body must be a JSON object"));
    }
    let spec: ProgramSpec = body(v)?;
    Ok(Json(
        app.0
            .catalog
            .update_program(parse_slug(&slug)?, &spec)
            .await?,
    ))
}

async fn set_program_status(
    app: &AppState,
    slug: &str,
    status: Status,
) -> ApiResult<Json<ProgramView>> {
    let spec = ProgramSpec {
        status: Some(status),
        ..ProgramSpec::default()
    };
    Ok(Json(
        app.0
            .catalog
            .update_program(parse_slug(slug)?, &spec)
            .await?,
    ))
}

pub async fn disable_program(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<ProgramView>> {
    set_program_status(&app, &slug, Status::Disabled).await
}

pub async fn enable_program(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<ProgramView>> {
    set_program_status(&app, &slug, Status::Active).await
}

pub async fn list_overrides(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Vec<programs::OverrideView>>> {
    Ok(Json(
        programs::overrides(app.0.store.as_ref(), parse_slug(&slug)?).await?,
    ))
}

/// `PUT /api/v1/programs/{slug}/commissions/{affiliate}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    commission: programs::CommissionSpec,
}

pub async fn put_override(
    _: Authorized,
    State(app): State<AppState>,
    Path((slug, affiliate)): Path<(String, String)>,
    Json(v): Json<Value>,
) -> ApiResult<Json<Vec<programs::OverrideView>>> {
    let b: OverrideBody = body(v)?;
    let program = parse_slug(&slug)?;
    app.0
        .catalog
        .set_override(
            program.clone(),
            parse_slug(&affiliate)?,
            Some(&b.commission),
        )
        .await?;
    Ok(Json(
        programs::overrides(app.0.store.as_ref(), program).await?,
    ))
}

pub async fn delete_override(
    _: Authorized,
    State(app): State<AppState>,
    Path((slug, affiliate)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    app.0
        .catalog
        .set_override(parse_slug(&slug)?, parse_slug(&affiliate)?, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- links ------------------------------------------------------------------

/// A link in and out of the API.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    code: LinkCode,
    program: Slug,
    #[serde(default)]
    affiliate: Option<Slug>,
    destination: String,
    #[serde(default)]
    redirect: Option<RedirectStatus>,
    #[serde(default)]
    utm: UtmDefaults,
    #[serde(default)]
    status: Status,
}

impl LinkBody {
    fn input(self) -> ApiResult<LinkInput> {
        Destination::compile(&self.destination, &self.utm)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(LinkInput {
            code: self.code,
            program: self.program,
            affiliate: self.affiliate,
            destination: self.destination,
            redirect: self.redirect,
            utm: self.utm,
            status: self.status,
        })
    }

    fn of(r: &LinkRecord) -> Self {
        LinkBody {
            code: r.link.code.clone(),
            program: r.link.program.clone(),
            affiliate: r.link.affiliate.clone(),
            destination: r.link.destination.clone(),
            redirect: r.link.redirect,
            utm: r.link.utm.clone(),
            status: r.link.status,
        }
    }
}

/// A link as the API shows it: what was saved, whether it redirects now
/// (link, program and affiliate all active) and its tracking paths.
#[derive(Serialize)]
pub struct LinkView {
    #[serde(flatten)]
    link: LinkBody,
    redirects: bool,
    /// `catalog` (the file applies its entry) or `admin` (made or changed
    /// through the API, CLI or dashboard; the file leaves it alone).
    owner: clickward_core::link::Owner,
    tracking_paths: [String; 3],
}

impl LinkView {
    fn of(r: &LinkRecord) -> Self {
        let c = r.link.code.as_str();
        LinkView {
            link: LinkBody::of(r),
            redirects: r.redirects,
            owner: r.link.owner,
            tracking_paths: [
                format!("/r/{c}"),
                format!("/ref/{c}"),
                format!("/go?id={c}"),
            ],
        }
    }
}

pub async fn list_links(
    _: Authorized,
    State(app): State<AppState>,
) -> ApiResult<Json<Vec<LinkView>>> {
    Ok(Json(
        app.0
            .store
            .list_links()
            .await?
            .iter()
            .map(LinkView::of)
            .collect(),
    ))
}

pub async fn get_link(
    _: Authorized,
    State(app): State<AppState>,
    Path(code): Path<String>,
) -> ApiResult<Json<LinkView>> {
    Ok(Json(LinkView::of(
        &app.0.store.get_link(parse_code(&code)?).await?,
    )))
}

pub async fn create_link(
    _: Authorized,
    State(app): State<AppState>,
    Json(v): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    let b: LinkBody = body(v)?;
    let rec = app
        .0
        .catalog
        .save_link(b.input()?, SaveMode::Create)
        .await?;
    Ok((StatusCode::CREATED, Json(LinkView::of(&rec))))
}

pub async fn update_link(
    _: Authorized,
    State(app): State<AppState>,
    Path(code): Path<String>,
    Json(patch): Json<Value>,
) -> ApiResult<Json<LinkView>> {
    let cur = app.0.store.get_link(parse_code(&code)?).await?;
    let merged = merge(to_value(&LinkBody::of(&cur))?, patch)?;
    let b: LinkBody = body(merged)?;
    if b.code != cur.link.code {
        return Err(ApiError::invalid(
            "a link code cannot be changed; create a new link",
        ));
    }
    let rec = app
        .0
        .catalog
        .save_link(b.input()?, SaveMode::Update)
        .await?;
    Ok(Json(LinkView::of(&rec)))
}

async fn set_link_status(app: &AppState, code: &str, status: Status) -> ApiResult<Json<LinkView>> {
    let cur = app.0.store.get_link(parse_code(code)?).await?;
    let mut b = LinkBody::of(&cur);
    b.status = status;
    let rec = app
        .0
        .catalog
        .save_link(b.input()?, SaveMode::Update)
        .await?;
    Ok(Json(LinkView::of(&rec)))
}

pub async fn disable_link(
    _: Authorized,
    State(app): State<AppState>,
    Path(code): Path<String>,
) -> ApiResult<Json<LinkView>> {
    set_link_status(&app, &code, Status::Disabled).await
}

pub async fn enable_link(
    _: Authorized,
    State(app): State<AppState>,
    Path(code): Path<String>,
) -> ApiResult<Json<LinkView>> {
    set_link_status(&app, &code, Status::Active).await
}

// ---- outbox -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/outbox?after=SEQ&limit=N`: outbox events after a cursor
/// (docs/events.md), oldest first; `next` is the cursor to ask with next.
pub async fn outbox(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> ApiResult<Json<Value>> {
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request("after must be a cursor (0 or a seq)"))?,
    };
    let limit = list_limit(q.limit.as_deref())?;
    let events = app.0.store.outbox_after(after, limit).await?;
    let next = events.last().map_or(after, |e| e.seq);
    Ok(Json(serde_json::json!({ "events": events, "next": next })))
}

// ---- clicks -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickListQuery {
    link: Option<String>,
    limit: Option<String>,
}

/// Most rows one list call (clicks, outbox events) returns.
const MAX_LIST_LIMIT: u32 = 1000;

/// A list's `limit=`: 100 when absent, else 1..=[`MAX_LIST_LIMIT`].
fn list_limit(text: Option<&str>) -> ApiResult<u32> {
    match text {
        None | Some("") => Ok(100),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={MAX_LIST_LIMIT}"))),
    }
}

pub async fn list_clicks(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ClickListQuery>,
) -> ApiResult<Json<Vec<clickward_store::ClickRow>>> {
    let limit = list_limit(q.limit.as_deref())?;
    let link = match q.link.as_deref() {
        None | Some("") => None,
        Some(c) => {
            Some(LinkCode::parse(c).map_err(|e| ApiError::bad_request(format!("link code {e}")))?)
        }
    };
    Ok(Json(app.0.store.list_clicks(link, limit).await?))
}

pub async fn get_click(
    _: Authorized,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<clickward_store::ClickRow>> {
    let id: ClickId = id
        .parse()
        .map_err(|e| ApiError::not_found(format!("click id: {e}")))?;
    Ok(Json(app.0.store.get_click(id).await?))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such API route")
}

// ---- reports ------------------------------------------------------------------

#[derive(Deserialize)]
pub struct ReportParams {
    from: Option<jiff::civil::Date>,
    to: Option<jiff::civil::Date>,
    tz: Option<String>,
    group_by: Option<String>,
    format: Option<String>,
    time_basis: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    /// Every other key names a dimension to filter on (`link=solare`).
    #[serde(flatten)]
    filters: std::collections::BTreeMap<String, String>,
}

/// `GET /api/v1/reports?from=YYYY-MM-DD&to=YYYY-MM-DD&tz=Asia/Tokyo&group_by=day,link,src`
/// `&format=json|ndjson|csv&time_basis=conversion|click&sort=-clicks&limit=&offset=`
/// plus dimension filters (`link=solare`): the report `clickward report`
/// prints (same engine, same numbers).
pub async fn report(
    _: Authorized,
    State(app): State<AppState>,
    Query(p): Query<ReportParams>,
) -> Response {
    let format = match p.format.as_deref() {
        None | Some("json") => crate::services::reports::Format::Json,
        Some("csv") => crate::services::reports::Format::Csv,
        Some("ndjson") => crate::services::reports::Format::Ndjson,
        Some(other) => {
            return ApiError::bad_request(format!("format {other:?} is not json, ndjson or csv"))
                .into_response();
        }
    };
    let time_basis = match p.time_basis.as_deref() {
        None | Some("conversion") => crate::services::reports::TimeBasis::Conversion,
        Some("click") => crate::services::reports::TimeBasis::Click,
        Some(other) => {
            return ApiError::bad_request(format!(
                "time_basis {other:?} is not click or conversion"
            ))
            .into_response();
        }
    };
    let args = crate::services::reports::ReportArgs {
        from: p.from,
        to: p.to,
        tz: p.tz.unwrap_or_else(|| "UTC".to_owned()),
        by: p.group_by.unwrap_or_else(|| "day".to_owned()),
        filters: p.filters.into_iter().collect(),
        time_basis,
        sort: p.sort,
        limit: p.limit,
        offset: p.offset.unwrap_or(0),
        format,
    };
    let now = jiff::Timestamp::from_microsecond(app.0.clock.now_micros())
        .unwrap_or_else(|_| jiff::Timestamp::now());
    match crate::services::reports::report_text_at(app.0.store.as_ref(), &args, now).await {
        Ok(output) => {
            let ct = match format {
                crate::services::reports::Format::Csv => "text/csv; charset=utf-8",
                crate::services::reports::Format::Ndjson => "application/x-ndjson",
                _ => "application/json",
            };
            // Streamed (chunked) a few hundred rows at a time: a large report
            // is never held as one string on top of its rows.
            let chunks =
                futures::stream::iter(output.map(|chunk| {
                    Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk))
                }));
            (
                [(axum::http::header::CONTENT_TYPE, ct)],
                axum::body::Body::from_stream(chunks),
            )
                .into_response()
        }
        // The store's own failures are ours, not the caller's: logged, and
        // never sent (their text may carry SQL).
        Err(e) if e.downcast_ref::<clickward_store::StoreError>().is_some() => {
            ApiError::internal(format!("{e:#}")).into_response()
        }
        Err(e) => ApiError::bad_request(format!("{e:#}")).into_response(),
    }
}
