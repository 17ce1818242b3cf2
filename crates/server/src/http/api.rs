//! The admin API: programs, affiliates, links (create, read, list, update,
//! disable/enable) and clicks (list, read). JSON in and out.

use crate::http::error::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clickward_core::id::{ClickId, LinkCode, Slug};
use clickward_core::link::{Destination, RedirectStatus, Status, UtmDefaults};
use clickward_store::{ClickQuery, LinkInput, LinkRecord, SaveMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::ApiError;
use crate::http::auth::Authorized;
use crate::http::error::ApiQuery;
use crate::http::paging::{self, MAX_LIMIT, Page, PageArgs};
use crate::process::app::AppState;
use crate::services::catalog::{NamedBody, NamedResource};
use crate::services::programs::{self, ProgramSpec, ProgramView};
use clickward_core::link::Affiliate;

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

/// `GET /api/v1/affiliates?limit=&cursor=`: by slug.
pub async fn list_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<R>>> {
    let all = R::list(app.0.store.as_ref()).await?;
    Ok(Json(app.0.cursors.page_all(
        R::KIND,
        all,
        &q,
        MAX_LIMIT,
        |r| r.body().slug,
    )?))
}

pub async fn get_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<R>> {
    Ok(Json(
        R::get(app.0.store.as_ref(), parse_slug(&slug)?).await?,
    ))
}

pub async fn create_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    ApiJson(v): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let b: NamedBody = body(v)?;
    let saved = app.0.catalog.save_named::<R>(b, SaveMode::Create).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

pub async fn update_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(patch): ApiJson<Value>,
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
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<R>> {
    set_named_status(&app, &slug, Status::Disabled).await
}

pub async fn enable_named<R: NamedResource>(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<R>> {
    set_named_status(&app, &slug, Status::Active).await
}

// The affiliate routes: the named-resource handlers above, typed, so the
// OpenAPI document names each operation (utoipa's `routes!` takes no
// generic handlers).

/// `GET /api/v1/affiliates`: affiliates by slug, paged.
#[utoipa::path(get, path = "/affiliates", tag = "affiliates", params(PageArgs), responses((status = 200, body = Page<Affiliate>)))]
pub async fn list_affiliates(
    a: Authorized,
    s: State<AppState>,
    q: ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<Affiliate>>> {
    list_named::<Affiliate>(a, s, q).await
}

/// `POST /api/v1/affiliates` `{"slug", "name", "status"}` → 201 with the affiliate; 409 when the slug is taken.
#[utoipa::path(post, path = "/affiliates", tag = "affiliates", request_body = NamedBody, responses((status = 201, description = "Created", body = Affiliate)))]
pub async fn create_affiliate(
    a: Authorized,
    s: State<AppState>,
    b: ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    create_named::<Affiliate>(a, s, b).await
}

/// `GET /api/v1/affiliates/{slug}`: one affiliate.
#[utoipa::path(get, path = "/affiliates/{slug}", tag = "affiliates", params(("slug" = clickward_core::id::Slug, Path, description = "The affiliate's slug")), responses((status = 200, body = Affiliate)))]
pub async fn get_affiliate(
    a: Authorized,
    s: State<AppState>,
    p: ApiPath<String>,
) -> ApiResult<Json<Affiliate>> {
    get_named::<Affiliate>(a, s, p).await
}

/// `PATCH /api/v1/affiliates/{slug}` `{"name", "status"}`: fields left out are kept.
#[utoipa::path(patch, path = "/affiliates/{slug}", tag = "affiliates", params(("slug" = clickward_core::id::Slug, Path, description = "The affiliate's slug")), request_body = NamedPatch, responses((status = 200, body = Affiliate)))]
pub async fn update_affiliate(
    a: Authorized,
    s: State<AppState>,
    p: ApiPath<String>,
    b: ApiJson<Value>,
) -> ApiResult<Json<Affiliate>> {
    update_named::<Affiliate>(a, s, p, b).await
}

/// `POST /api/v1/affiliates/{slug}/disable`: their links answer as unknown codes (`fallback_url` or 404) and their conversions are refused (422) until enabled.
#[utoipa::path(post, path = "/affiliates/{slug}/disable", tag = "affiliates", params(("slug" = clickward_core::id::Slug, Path, description = "The affiliate's slug")), responses((status = 200, body = Affiliate)))]
pub async fn disable_affiliate(
    a: Authorized,
    s: State<AppState>,
    p: ApiPath<String>,
) -> ApiResult<Json<Affiliate>> {
    disable_named::<Affiliate>(a, s, p).await
}

/// `POST /api/v1/affiliates/{slug}/enable`: undoes disable.
#[utoipa::path(post, path = "/affiliates/{slug}/enable", tag = "affiliates", params(("slug" = clickward_core::id::Slug, Path, description = "The affiliate's slug")), responses((status = 200, body = Affiliate)))]
pub async fn enable_affiliate(
    a: Authorized,
    s: State<AppState>,
    p: ApiPath<String>,
) -> ApiResult<Json<Affiliate>> {
    enable_named::<Affiliate>(a, s, p).await
}

/// A PATCH of a program's or affiliate's name or status.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: the body is merged as JSON
pub struct NamedPatch {
    /// Display name.
    name: Option<String>,
    /// Active or disabled.
    status: Option<Status>,
}

/// A PATCH of a link: any of its fields but the code.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: the body is merged as JSON
pub struct LinkPatch {
    program: Option<Slug>,
    affiliate: Option<Slug>,
    destination: Option<String>,
    redirect: Option<RedirectStatus>,
    utm: Option<UtmDefaults>,
    status: Option<Status>,
}

/// A page of `GET /api/v1/outbox`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: built as JSON
pub struct OutboxPage {
    /// Events after the cursor, oldest first (docs/events.md).
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
    /// The cursor to ask with next (`after=`).
    next: i64,
}

/// The documented keys of `GET /api/v1/reports` (any other key filters on
/// the dimension it names: `link=solare`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // a schema only: read as `ReportParams`
pub struct ReportQueryDoc {
    /// First day, `YYYY-MM-DD`, in `tz`.
    #[param(value_type = Option<String>, format = Date)]
    from: Option<String>,
    /// Last day, inclusive.
    #[param(value_type = Option<String>, format = Date)]
    to: Option<String>,
    /// IANA time zone of the days (`UTC`).
    tz: Option<String>,
    /// Dimensions, comma-separated (`day,link,src`).
    group_by: Option<String>,
    /// `json`, `ndjson` or `csv`.
    format: Option<String>,
    /// `conversion` (default) or `click`.
    time_basis: Option<String>,
    /// A metric, `-` first for descending (`-clicks`).
    sort: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

// ---- programs: everything the catalogue can say ------------------------------

/// `GET /api/v1/programs?limit=&cursor=`: by slug, with their settings.
#[utoipa::path(get, path = "/programs", tag = "programs", params(PageArgs), responses((status = 200, description = "Programs by slug", body = Page<ProgramView>)))]
pub async fn list_programs(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<ProgramView>>> {
    let store = app.0.store.as_ref();
    let page = app.0.cursors.page_all(
        "program",
        store.list_programs().await?,
        &q,
        MAX_LIMIT,
        |p| p.slug.to_string(),
    )?;
    let mut items = Vec::with_capacity(page.items.len());
    for p in page.items {
        items.push(programs::view(store, p).await?);
    }
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// `GET /api/v1/programs/{slug}`: one program with its commission plan and postback settings (the token; secrets only as whether they are set).
#[utoipa::path(get, path = "/programs/{slug}", tag = "programs", params(("slug" = clickward_core::id::Slug, Path, description = "The program's slug")), responses((status = 200, body = ProgramView)))]
pub async fn get_program(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<ProgramView>> {
    let store = app.0.store.as_ref();
    let p = store.get_program(parse_slug(&slug)?).await?;
    Ok(Json(programs::view(store, p).await?))
}

/// `POST /api/v1/programs` with a program (`slug` required) → 201; defaults as `ProgramSpec` says; 409 when the slug is taken.
#[utoipa::path(post, path = "/programs", tag = "programs", request_body = ProgramSpec, responses((status = 201, description = "Created", body = ProgramView)))]
pub async fn create_program(
    _: Authorized,
    State(app): State<AppState>,
    ApiJson(v): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let spec: ProgramSpec = body(v)?;
    let saved = app.0.catalog.create_program(&spec).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// `PATCH /api/v1/programs/{slug}`: fields left out are kept; `null` clears `hold`, `click_id_param`, `pixel_max_amount`, `fallback_url`, `stripe`, `shopify`.
#[utoipa::path(patch, path = "/programs/{slug}", tag = "programs", params(("slug" = clickward_core::id::Slug, Path, description = "The program's slug")), request_body = ProgramSpec, responses((status = 200, description = "Changed; absent fields are kept", body = ProgramView)))]
pub async fn update_program(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(v): ApiJson<Value>,
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

/// `POST /api/v1/programs/{slug}/disable`: its links answer as unknown codes (`fallback_url` or 404) until enabled.
#[utoipa::path(post, path = "/programs/{slug}/disable", tag = "programs", params(("slug" = clickward_core::id::Slug, Path, description = "The program's slug")), responses((status = 200, body = ProgramView)))]
pub async fn disable_program(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<ProgramView>> {
    set_program_status(&app, &slug, Status::Disabled).await
}

/// `POST /api/v1/programs/{slug}/enable`: undoes disable.
#[utoipa::path(post, path = "/programs/{slug}/enable", tag = "programs", params(("slug" = clickward_core::id::Slug, Path, description = "The program's slug")), responses((status = 200, body = ProgramView)))]
pub async fn enable_program(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<ProgramView>> {
    set_program_status(&app, &slug, Status::Active).await
}

/// `GET /api/v1/programs/{slug}/commissions?limit=&cursor=`: by affiliate.
#[utoipa::path(get, path = "/programs/{slug}/commissions", tag = "programs", params(("slug" = clickward_core::id::Slug, Path, description = "The program's slug"), PageArgs), responses((status = 200, body = Page<programs::OverrideView>)))]
pub async fn list_overrides(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<programs::OverrideView>>> {
    let all = programs::overrides(app.0.store.as_ref(), parse_slug(&slug)?).await?;
    Ok(Json(app.0.cursors.page_all(
        "commission",
        all,
        &q,
        MAX_LIMIT,
        |o| o.affiliate.clone(),
    )?))
}

/// `PUT /api/v1/programs/{slug}/commissions/{affiliate}` body.
#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    commission: programs::CommissionSpec,
}

/// `PUT /api/v1/programs/{slug}/commissions/{affiliate}` `{"commission"}`: this affiliate's own plan in the program (from the next conversion).
#[utoipa::path(put, path = "/programs/{slug}/commissions/{affiliate}", tag = "programs", params(("slug" = clickward_core::id::Slug, Path, description = "The program's slug"), ("affiliate" = clickward_core::id::Slug, Path, description = "The affiliate's slug")), request_body = OverrideBody, responses((status = 200, description = "The program's overrides after the change", body = Vec<programs::OverrideView>)))]
pub async fn put_override(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath((slug, affiliate)): ApiPath<(String, String)>,
    ApiJson(v): ApiJson<Value>,
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

/// `DELETE /api/v1/programs/{slug}/commissions/{affiliate}`: the affiliate earns the program's plan again (from the next conversion).
#[utoipa::path(delete, path = "/programs/{slug}/commissions/{affiliate}", tag = "programs", params(("slug" = clickward_core::id::Slug, Path, description = "The program's slug"), ("affiliate" = clickward_core::id::Slug, Path, description = "The affiliate's slug")), responses((status = 204, description = "Removed (or there was none)")))]
pub async fn delete_override(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath((slug, affiliate)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    app.0
        .catalog
        .set_override(parse_slug(&slug)?, parse_slug(&affiliate)?, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- links ------------------------------------------------------------------

/// A link in and out of the API.
#[derive(utoipa::ToSchema, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    code: LinkCode,
    program: Slug,
    #[serde(default)]
    affiliate: Option<Slug>,
    /// Where the visitor is sent: an absolute http(s) URL, which may hold
    /// `{click_id}`, `{sub1}` … placeholders (docs/api.md, "Links").
    #[schema(pattern = r"^https?://[^\s/?#]+")]
    destination: String,
    #[serde(default)]
    redirect: Option<RedirectStatus>,
    #[serde(default)]
    #[schema(value_type = UtmDoc)]
    utm: UtmDefaults,
    #[serde(default)]
    status: Status,
}

/// A link's UTM defaults as the document shows them: the keys of
/// `clickward_core::link::UTM_KEYS`, each added to the destination unless
/// it already has it.
#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct UtmDoc {
    utm_source: Option<String>,
    utm_medium: Option<String>,
    utm_campaign: Option<String>,
    utm_content: Option<String>,
    utm_term: Option<String>,
    utm_id: Option<String>,
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
#[derive(utoipa::ToSchema, Serialize)]
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

/// `GET /api/v1/links?limit=&cursor=`: by code.
#[utoipa::path(get, path = "/links", tag = "links", params(PageArgs), responses((status = 200, description = "Links by code", body = Page<LinkView>)))]
pub async fn list_links(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<LinkView>>> {
    let page = app.0.cursors.page_all(
        "link",
        app.0.store.list_links().await?,
        &q,
        MAX_LIMIT,
        |l| l.link.code.to_string(),
    )?;
    Ok(Json(Page {
        items: page.items.iter().map(LinkView::of).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `GET /api/v1/links/{code}`: one link, whether it redirects now and its tracking paths.
#[utoipa::path(get, path = "/links/{code}", tag = "links", params(("code" = clickward_core::id::LinkCode, Path, description = "The link's code")), responses((status = 200, body = LinkView)))]
pub async fn get_link(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<LinkView>> {
    Ok(Json(LinkView::of(
        &app.0.store.get_link(parse_code(&code)?).await?,
    )))
}

/// `POST /api/v1/links` `{"code", "program", "affiliate", "destination", "redirect", "utm", "status"}` → 201 with the link and its tracking paths; 404 for an unknown program or affiliate, 409 when the code is taken.
#[utoipa::path(post, path = "/links", tag = "links", request_body = LinkBody, responses((status = 201, description = "Created", body = LinkView)))]
pub async fn create_link(
    _: Authorized,
    State(app): State<AppState>,
    ApiJson(v): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let b: LinkBody = body(v)?;
    let rec = app
        .0
        .catalog
        .save_link(b.input()?, SaveMode::Create)
        .await?;
    Ok((StatusCode::CREATED, Json(LinkView::of(&rec))))
}

/// `PATCH /api/v1/links/{code}`: fields left out are kept; the link becomes admin-owned (the catalogue file leaves it alone).
#[utoipa::path(patch, path = "/links/{code}", tag = "links", params(("code" = clickward_core::id::LinkCode, Path, description = "The link's code")), request_body = LinkPatch, responses((status = 200, description = "Changed; absent fields are kept", body = LinkView)))]
pub async fn update_link(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(code): ApiPath<String>,
    ApiJson(patch): ApiJson<Value>,
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

/// `POST /api/v1/links/{code}/disable`: the link answers as an unknown code (`fallback_url` or 404) until enabled.
#[utoipa::path(post, path = "/links/{code}/disable", tag = "links", params(("code" = clickward_core::id::LinkCode, Path, description = "The link's code")), responses((status = 200, body = LinkView)))]
pub async fn disable_link(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<LinkView>> {
    set_link_status(&app, &code, Status::Disabled).await
}

/// `POST /api/v1/links/{code}/enable`: undoes disable.
#[utoipa::path(post, path = "/links/{code}/enable", tag = "links", params(("code" = clickward_core::id::LinkCode, Path, description = "The link's code")), responses((status = 200, body = LinkView)))]
pub async fn enable_link(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<LinkView>> {
    set_link_status(&app, &code, Status::Active).await
}

// ---- outbox -----------------------------------------------------------------

#[derive(utoipa::IntoParams, Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/outbox?after=SEQ&limit=N`: outbox events after a cursor
/// (docs/events.md), oldest first; `next` is the cursor to ask with next.
#[utoipa::path(get, operation_id = "outbox", path = "/outbox", tag = "events", params(OutboxQuery), responses((status = 200, body = OutboxPage)))]
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
    let limit = paging::limit(q.limit.as_deref(), MAX_LIMIT)?;
    let events = app.0.store.outbox_after(after, limit).await?;
    let next = events.last().map_or(after, |e| e.seq);
    Ok(Json(serde_json::json!({ "events": events, "next": next })))
}

// ---- clicks -----------------------------------------------------------------

/// The query of `GET /api/v1/clicks`.
#[derive(utoipa::IntoParams, Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClickListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    /// `newest` (default) or `oldest` first.
    order: Option<String>,
    link: Option<String>,
    affiliate: Option<String>,
    program: Option<String>,
    /// RFC 3339 instant or UTC µs, inclusive.
    from: Option<String>,
    /// RFC 3339 instant or UTC µs, exclusive.
    to: Option<String>,
    bot: Option<String>,
    unique: Option<String>,
    /// `none`, or an action: `flag`, `hold`, `reject`, `block`.
    verdict: Option<String>,
}

/// Most clicks in one page.
pub const MAX_CLICK_PAGE: u32 = 10_000;

/// An instant of a list's time range: RFC 3339 (`2026-12-01T00:00:00Z`,
/// any offset) or UTC µs.
fn instant(name: &str, v: &str) -> ApiResult<clickward_core::Micros> {
    if let Ok(us) = v.parse::<i64>() {
        return Ok(us);
    }
    v.parse::<jiff::Timestamp>()
        .map(|t| t.as_microsecond())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{name}: not an RFC 3339 instant (2026-12-01T00:00:00Z) or UTC microseconds"
            ))
        })
}

fn flag(name: &str, v: &str) -> ApiResult<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be true or false"
        ))),
    }
}

/// `GET /api/v1/clicks?limit=&cursor=&order=newest|oldest&link=&affiliate=`
/// `&program=&from=&to=&bot=&unique=&verdict=`: clicks by click id (time
/// order), newest first unless `order=oldest`; up to 10,000 a page.
#[utoipa::path(get, path = "/clicks", tag = "clicks", params(ClickListQuery), responses((status = 200, body = Page<clickward_store::ClickRow>)))]
pub async fn list_clicks(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ClickListQuery>,
) -> ApiResult<Json<Page<clickward_store::ClickRow>>> {
    let limit = paging::limit(q.limit.as_deref(), MAX_CLICK_PAGE)?;
    let some = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let slug = |name: &str, v: &Option<String>| -> ApiResult<Option<Slug>> {
        some(v)
            .map(|s| Slug::parse(&s).map_err(|e| ApiError::bad_request(format!("{name}: {e}"))))
            .transpose()
    };
    let oldest_first = match q.order.as_deref() {
        None | Some("") | Some("newest") => false,
        Some("oldest") => true,
        Some(_) => return Err(ApiError::bad_request("order must be newest or oldest")),
    };
    // The cursor names its order: one taken newest-first cannot page the
    // other way.
    let list = if oldest_first {
        "clicks-oldest"
    } else {
        "clicks"
    };
    let verdict = match some(&q.verdict).as_deref() {
        None => None,
        Some("none") => Some(None),
        Some(a @ ("flag" | "hold" | "reject" | "block")) => Some(Some(a.to_owned())),
        Some(_) => {
            return Err(ApiError::bad_request(
                "verdict must be none, flag, hold, reject or block",
            ));
        }
    };
    let query = ClickQuery {
        link: some(&q.link)
            .map(|c| LinkCode::parse(&c).map_err(|e| ApiError::bad_request(format!("link: {e}"))))
            .transpose()?,
        affiliate: slug("affiliate", &q.affiliate)?,
        program: slug("program", &q.program)?,
        from: some(&q.from).map(|v| instant("from", &v)).transpose()?,
        to: some(&q.to).map(|v| instant("to", &v)).transpose()?,
        bot: some(&q.bot).map(|v| flag("bot", &v)).transpose()?,
        unique: some(&q.unique).map(|v| flag("unique", &v)).transpose()?,
        verdict,
        after: app.0.cursors.open::<ClickId>(list, q.cursor.as_deref())?,
        oldest_first,
        limit: limit + 1,
    };
    let rows = app.0.store.page_clicks(query).await?;
    Ok(Json(app.0.cursors.page(list, rows, limit, |c| c.click_id)))
}

/// `GET /api/v1/clicks/{click_id}`: one click with its classification and dedup facts (never an IP).
#[utoipa::path(get, path = "/clicks/{click_id}", tag = "clicks", params(("click_id" = clickward_core::id::ClickId, Path, description = "The click id")), responses((status = 200, body = clickward_store::ClickRow)))]
pub async fn get_click(
    _: Authorized,
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
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
#[utoipa::path(get, operation_id = "report", path = "/reports", tag = "reports", params(ReportQueryDoc), responses((status = 200, description = "Rows of the report: JSON, NDJSON or CSV by `format`", content((Object = "application/json"), ("application/x-ndjson"), ("text/csv")))))]
pub async fn report(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(p): ApiQuery<ReportParams>,
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

// ---- keys, users, payouts -----------------------------------------------------

fn admin_only(key: &Authorized, what: &str) -> ApiResult<()> {
    if key.0.scope != clickward_store::KeyScope::Admin {
        return Err(ApiError::forbidden(format!("{what} need an admin key")));
    }
    Ok(())
}

/// `GET /api/v1/keys?limit=&cursor=`: API keys by id (prefix, scope,
/// label; never the key), unrevoked ones only. Admin keys only.
#[utoipa::path(get, path = "/keys", tag = "keys", params(PageArgs), responses((status = 200, body = Page<clickward_store::ApiKey>)))]
pub async fn list_keys(
    key: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<clickward_store::ApiKey>>> {
    admin_only(&key, "API keys")?;
    let all = app.0.store.list_api_keys().await?;
    Ok(Json(app.0.cursors.page_all(
        "keys",
        all,
        &q,
        MAX_LIMIT,
        |k| k.id,
    )?))
}

/// A dashboard or portal user as the API shows it (no password hash).
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct UserView {
    id: i64,
    username: String,
    role: clickward_store::UserRole,
    /// The affiliate's slug, for `affiliate` users.
    affiliate: Option<String>,
    email: Option<String>,
    /// `false`: signs in by magic link only.
    has_password: bool,
    notify_conversions: bool,
}

/// `GET /api/v1/users?limit=&cursor=`: users by id. Admin keys only.
#[utoipa::path(get, path = "/users", tag = "users", params(PageArgs), responses((status = 200, body = Page<UserView>)))]
pub async fn list_users(
    key: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageArgs>,
) -> ApiResult<Json<Page<UserView>>> {
    admin_only(&key, "users")?;
    let all: Vec<UserView> = app
        .0
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| UserView {
            id: u.id,
            username: u.username,
            role: u.role,
            affiliate: u.affiliate,
            email: u.email,
            has_password: u.password_hash.is_some(),
            notify_conversions: u.notify_conversions,
        })
        .collect();
    Ok(Json(app.0.cursors.page_all(
        "users",
        all,
        &q,
        MAX_LIMIT,
        |u| u.id,
    )?))
}

/// The query of `GET /api/v1/payouts`.
#[derive(utoipa::IntoParams, Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PayoutQuery {
    affiliate: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/payouts?affiliate=&limit=&cursor=`: payout batches by
/// batch id (oldest first).
#[utoipa::path(get, path = "/payouts", tag = "payouts", params(PayoutQuery), responses((status = 200, body = Page<clickward_store::Payout>)))]
pub async fn list_payouts(
    _: Authorized,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PayoutQuery>,
) -> ApiResult<Json<Page<clickward_store::Payout>>> {
    let affiliate = match q.affiliate.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_slug(s)?),
    };
    let all = app.0.store.list_payouts(affiliate, u32::MAX).await?;
    let args = PageArgs {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(app.0.cursors.page_all(
        "payouts",
        all,
        &args,
        MAX_LIMIT,
        |p| p.batch_id.clone(),
    )?))
}

// ---- QR codes -------------------------------------------------------------------

/// The query of `GET /api/v1/links/{code}/qr`.
#[derive(utoipa::IntoParams, Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QrQuery {
    /// `svg` (default) or `png`.
    format: Option<String>,
    /// Image side, px (64..=2048, default 512).
    size: Option<String>,
    #[serde(default)]
    src: String,
    #[serde(default)]
    sub1: String,
    #[serde(default)]
    sub2: String,
    #[serde(default)]
    sub3: String,
    #[serde(default)]
    sub4: String,
    #[serde(default)]
    sub5: String,
}

/// `GET /api/v1/links/{code}/qr?format=svg|png&size=512&src=&sub1=…&sub5=`:
/// the QR code of the link's public tracking URL (`/r/{code}` on
/// `[dashboard] public_url`, else the host asked) with those ids.
#[utoipa::path(get, path = "/links/{code}/qr", tag = "links", params(("code" = clickward_core::id::LinkCode, Path, description = "The link's code"), QrQuery), responses((status = 200, description = "The QR code of the public tracking URL", content(("image/svg+xml"), ("image/png")))))]
pub async fn link_qr(
    _: Authorized,
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<QrQuery>,
) -> ApiResult<Response> {
    let rec = app.0.store.get_link(parse_code(&code)?).await?;
    let format = match q.format.as_deref() {
        None | Some("") => crate::services::qr::QrFormat::Svg,
        Some(f) => crate::services::qr::QrFormat::parse(f)
            .ok_or_else(|| ApiError::bad_request("format must be svg or png"))?,
    };
    let size = match q.size.as_deref() {
        None | Some("") => crate::services::qr::DEFAULT_SIZE,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (crate::services::qr::MIN_SIZE..=crate::services::qr::MAX_SIZE).contains(n))
            .ok_or_else(|| ApiError::bad_request("size must be 64..=2048 (px)"))?,
    };
    let base = crate::dashboard::public_base(&app, &headers);
    let builder = crate::dashboard::BuilderQuery {
        src: q.src,
        sub1: q.sub1,
        sub2: q.sub2,
        sub3: q.sub3,
        sub4: q.sub4,
        sub5: q.sub5,
    };
    crate::dashboard::qr_image(&base, rec.link.code.as_str(), &builder, format, size)
        .map_err(ApiError::invalid)
}
