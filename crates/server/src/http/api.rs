//! The admin API: programs, affiliates, links (create, read, list, update,
//! disable/enable) and clicks (list, read). JSON in and out.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use clickward_core::id::{ClickId, LinkCode, Slug};
use clickward_core::link::{Affiliate, Destination, Program, RedirectStatus, Status, UtmDefaults};
use clickward_store::{AffiliateInput, LinkInput, LinkRecord, ProgramInput, SaveMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Authorized;
use crate::http::ApiError;

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

async fn refresh(app: &AppState) -> ApiResult<()> {
    app.0.links.refresh(app.0.store.as_ref()).await?;
    Ok(())
}

// ---- programs ---------------------------------------------------------------

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ProgramBody {
    slug: Slug,
    name: Option<String>,
    #[serde(default)]
    status: Status,
}

impl ProgramBody {
    fn input(self) -> ProgramInput {
        ProgramInput {
            name: self.name.unwrap_or_else(|| self.slug.to_string()),
            slug: self.slug,
            status: self.status,
            settings: None,
        }
    }
}

pub async fn list_programs(
    _: Authorized,
    State(app): State<AppState>,
) -> ApiResult<Json<Vec<Program>>> {
    Ok(Json(app.0.store.list_programs().await?))
}

pub async fn get_program(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Program>> {
    Ok(Json(app.0.store.get_program(parse_slug(&slug)?).await?))
}

pub async fn create_program(
    _: Authorized,
    State(app): State<AppState>,
    Json(v): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    let b: ProgramBody = body(v)?;
    let p = app
        .0
        .store
        .save_program(b.input(), SaveMode::Create)
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

pub async fn update_program(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
    Json(patch): Json<Value>,
) -> ApiResult<Json<Program>> {
    let cur = app.0.store.get_program(parse_slug(&slug)?).await?;
    let merged = merge(
        to_value(&ProgramBody {
            slug: cur.slug.clone(),
            name: Some(cur.name),
            status: cur.status,
        })?,
        patch,
    )?;
    let b: ProgramBody = body(merged)?;
    if b.slug != cur.slug {
        return Err(ApiError::invalid("a slug cannot be changed"));
    }
    let p = app
        .0
        .store
        .save_program(b.input(), SaveMode::Update)
        .await?;
    refresh(&app).await?;
    Ok(Json(p))
}

async fn set_program_status(
    app: &AppState,
    slug: &str,
    status: Status,
) -> ApiResult<Json<Program>> {
    let cur = app.0.store.get_program(parse_slug(slug)?).await?;
    let p = app
        .0
        .store
        .save_program(
            ProgramInput {
                slug: cur.slug,
                name: cur.name,
                status,
                settings: None,
            },
            SaveMode::Update,
        )
        .await?;
    refresh(app).await?;
    Ok(Json(p))
}

pub async fn disable_program(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Program>> {
    set_program_status(&app, &slug, Status::Disabled).await
}

pub async fn enable_program(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Program>> {
    set_program_status(&app, &slug, Status::Active).await
}

// ---- affiliates -------------------------------------------------------------

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AffiliateBody {
    slug: Slug,
    name: Option<String>,
    #[serde(default)]
    status: Status,
}

impl AffiliateBody {
    fn input(self) -> AffiliateInput {
        AffiliateInput {
            name: self.name.unwrap_or_else(|| self.slug.to_string()),
            slug: self.slug,
            status: self.status,
        }
    }
}

pub async fn list_affiliates(
    _: Authorized,
    State(app): State<AppState>,
) -> ApiResult<Json<Vec<Affiliate>>> {
    Ok(Json(app.0.store.list_affiliates().await?))
}

pub async fn get_affiliate(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Affiliate>> {
    Ok(Json(app.0.store.get_affiliate(parse_slug(&slug)?).await?))
}

pub async fn create_affiliate(
    _: Authorized,
    State(app): State<AppState>,
    Json(v): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    let b: AffiliateBody = body(v)?;
    let a = app
        .0
        .store
        .save_affiliate(b.input(), SaveMode::Create)
        .await?;
    Ok((StatusCode::CREATED, Json(a)))
}

pub async fn update_affiliate(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
    Json(patch): Json<Value>,
) -> ApiResult<Json<Affiliate>> {
    let cur = app.0.store.get_affiliate(parse_slug(&slug)?).await?;
    let merged = merge(
        to_value(&AffiliateBody {
            slug: cur.slug.clone(),
            name: Some(cur.name),
            status: cur.status,
        })?,
        patch,
    )?;
    let b: AffiliateBody = body(merged)?;
    if b.slug != cur.slug {
        return Err(ApiError::invalid("a slug cannot be changed"));
    }
    let a = app
        .0
        .store
        .save_affiliate(b.input(), SaveMode::Update)
        .await?;
    refresh(&app).await?;
    Ok(Json(a))
}

async fn set_affiliate_status(
    app: &AppState,
    slug: &str,
    status: Status,
) -> ApiResult<Json<Affiliate>> {
    let cur = app.0.store.get_affiliate(parse_slug(slug)?).await?;
    let a = app
        .0
        .store
        .save_affiliate(
            AffiliateInput {
                slug: cur.slug,
                name: cur.name,
                status,
            },
            SaveMode::Update,
        )
        .await?;
    refresh(app).await?;
    Ok(Json(a))
}

pub async fn disable_affiliate(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Affiliate>> {
    set_affiliate_status(&app, &slug, Status::Disabled).await
}

pub async fn enable_affiliate(
    _: Authorized,
    State(app): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Affiliate>> {
    set_affiliate_status(&app, &slug, Status::Active).await
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
    tracking_paths: [String; 3],
}

impl LinkView {
    fn of(r: &LinkRecord) -> Self {
        let c = r.link.code.as_str();
        LinkView {
            link: LinkBody::of(r),
            redirects: r.redirects,
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
    let rec = app.0.store.save_link(b.input()?, SaveMode::Create).await?;
    refresh(&app).await?;
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
    let rec = app.0.store.save_link(b.input()?, SaveMode::Update).await?;
    refresh(&app).await?;
    Ok(Json(LinkView::of(&rec)))
}

async fn set_link_status(app: &AppState, code: &str, status: Status) -> ApiResult<Json<LinkView>> {
    let cur = app.0.store.get_link(parse_code(code)?).await?;
    let mut b = LinkBody::of(&cur);
    b.status = status;
    let rec = app.0.store.save_link(b.input()?, SaveMode::Update).await?;
    refresh(app).await?;
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

// ---- clicks -----------------------------------------------------------------

#[derive(Deserialize)]
pub struct ClickListQuery {
    link: Option<String>,
    limit: Option<String>,
}

/// Most clicks one list call returns.
const MAX_CLICK_LIMIT: u32 = 1000;

pub async fn list_clicks(
    _: Authorized,
    State(app): State<AppState>,
    Query(q): Query<ClickListQuery>,
) -> ApiResult<Json<Vec<clickward_store::ClickRow>>> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_CLICK_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={MAX_CLICK_LIMIT}")))?,
    };
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
