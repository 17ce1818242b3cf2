//! Links: list, search, create, per-link page with stats, edit form and
//! link builder.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use clickward_core::id::{LinkCode, Slug};
use clickward_core::link::{Destination, RedirectStatus};
use clickward_core::report::Dimension;
use clickward_store::{LinkInput, LinkRecord, SaveMode};
use serde::Deserialize;

use super::admin::{PageQuery, PageResult, StatsView, stats_view};
use super::named::form_status;
use super::session::Session;
use super::stats::{Range, RangeQuery};
use super::views::{self, BuilderQuery, Chrome, Notice, back, or_dash};
use super::{PageError, page, public_base};
use crate::process::app::AppState;

/// A link as the list shows it.
pub struct LinkItem {
    pub code: String,
    pub program: String,
    pub affiliate: String,
    pub destination: String,
    pub status: &'static str,
    pub redirects: bool,
    pub url: String,
    pub owner: &'static str,
}

pub(super) fn link_item(r: &LinkRecord, base: &str) -> LinkItem {
    LinkItem {
        code: r.link.code.as_str().to_owned(),
        program: r.link.program.as_str().to_owned(),
        affiliate: or_dash(r.link.affiliate.as_ref().map(Slug::as_str)),
        destination: r.link.destination.clone(),
        status: r.link.status.as_str(),
        redirects: r.redirects,
        owner: crate::services::catalog::owner_text(r.link.owner),
        url: views::tracking_url(base, r.link.code.as_str(), "", &Default::default()),
    }
}

#[derive(Template)]
#[template(path = "links.html")]
pub(super) struct LinksPage {
    c: Chrome,
    q: String,
    links: Vec<LinkItem>,
    programs: Vec<String>,
    affiliates: Vec<String>,
}

/// `GET /dashboard/links?q=`: list, search, and the create form.
pub async fn links(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let base = public_base(&app, &headers);
    let needle = q.q.clone().unwrap_or_default().trim().to_lowercase();
    let links = app
        .0
        .store
        .list_links()
        .await?
        .iter()
        .map(|r| link_item(r, &base))
        .filter(|l| {
            needle.is_empty()
                || [&l.code, &l.program, &l.affiliate, &l.destination]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&needle))
        })
        .collect();
    let (programs, affiliates) = owner_slugs(&app).await?;
    Ok(page(&LinksPage {
        c: Chrome::new(&s, "Links", "links").notice(&app, &q.notice),
        q: q.q.unwrap_or_default(),
        links,
        programs,
        affiliates,
    }))
}

/// Program and affiliate slugs, for the link forms' choices.
pub(super) async fn owner_slugs(app: &AppState) -> Result<(Vec<String>, Vec<String>), PageError> {
    let store = app.0.store.as_ref();
    let programs = store.list_programs().await?;
    let affiliates = store.list_affiliates().await?;
    Ok((
        programs
            .iter()
            .map(|p| p.slug.as_str().to_owned())
            .collect(),
        affiliates
            .iter()
            .map(|a| a.slug.as_str().to_owned())
            .collect(),
    ))
}

/// The link form (create and edit).
#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    program: String,
    #[serde(default)]
    affiliate: String,
    destination: String,
    #[serde(default)]
    redirect: String,
    #[serde(default)]
    status: String,
}

pub(super) fn form_link(
    f: &LinkForm,
    code: &str,
    utm: clickward_core::link::UtmDefaults,
) -> Result<LinkInput, String> {
    let code = LinkCode::parse(code.trim()).map_err(|e| format!("link code {e}"))?;
    let program = Slug::parse(f.program.trim()).map_err(|e| format!("program {e}"))?;
    let affiliate = match f.affiliate.trim() {
        "" | "–" => None,
        a => Some(Slug::parse(a).map_err(|e| format!("affiliate {e}"))?),
    };
    let redirect = match f.redirect.trim() {
        "" => None,
        r => Some(
            r.parse::<u16>()
                .map_err(|_| format!("redirect {r:?} is not a status code"))
                .and_then(|n| RedirectStatus::from_code(n).map_err(|e| e.to_string()))?,
        ),
    };
    let status = form_status(&f.status)?;
    let destination = f.destination.trim().to_owned();
    Destination::compile(&destination, &utm).map_err(|e| e.to_string())?;
    Ok(LinkInput {
        code,
        program,
        affiliate,
        destination,
        redirect,
        utm,
        status,
    })
}

/// `POST /dashboard/links`: creates a link (as `POST /api/v1/links`).
pub async fn create_link(State(app): State<AppState>, Form(f): Form<LinkForm>) -> Response {
    let input = match form_link(&f, &f.code, Default::default()) {
        Ok(i) => i,
        Err(e) => return back(&app, "/dashboard/links", "error", &e),
    };
    let code = input.code.as_str().to_owned();
    match app.0.catalog.save_link(input, SaveMode::Create).await {
        Ok(_) => back(
            &app,
            &format!("/dashboard/links/{code}"),
            "msg",
            &format!("Link {code} created."),
        ),
        Err(e) => back(&app, "/dashboard/links", "error", &e.to_string()),
    }
}

#[derive(Template)]
#[template(path = "link.html")]
pub(super) struct LinkPage {
    c: Chrome,
    link: LinkItem,
    redirect: String,
    stats: StatsView,
    builder: BuilderQuery,
    builder_codes: Option<Vec<String>>,
    builder_link: String,
    built: String,
    /// The built link's QR image path (the page adds `format=`).
    qr: String,
    programs: Vec<String>,
    affiliates: Vec<String>,
}

/// The query of a link page: range, notices and the builder's fields.
#[derive(Deserialize, Default)]
pub struct ItemQuery {
    #[serde(flatten)]
    pub(super) range: RangeQuery,
    #[serde(flatten)]
    pub(super) notice: Notice,
    #[serde(flatten)]
    pub(super) builder: BuilderQuery,
}

/// `GET /dashboard/links/{code}`: stats, edit form, link builder.
pub async fn link(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(code): Path<String>,
    Query(q): Query<ItemQuery>,
) -> PageResult {
    let code = LinkCode::parse(&code).map_err(|_| PageError::NotFound)?;
    let rec = app.0.store.get_link(code.clone()).await?;
    let base = public_base(&app, &headers);
    let stats = stats_view(
        &app,
        Range::parse(&q.range, app.0.clock.now_micros()),
        &[(Dimension::Link, code.as_str().to_owned())],
    )
    .await?;
    let built = views::tracking_url(&base, code.as_str(), &q.builder.src, &q.builder.subs());
    let qr = views::qr_path("/dashboard/links", code.as_str(), &q.builder);
    let (programs, affiliates) = owner_slugs(&app).await?;
    Ok(page(&LinkPage {
        c: Chrome::new(&s, format!("Link {}", code.as_str()), "links")
            .notice(&app, &q.notice)
            .problem(stats.range.problem.clone()),
        redirect: rec
            .link
            .redirect
            .map(|r| r.code().to_string())
            .unwrap_or_default(),
        link: link_item(&rec, &base),
        stats,
        builder: q.builder,
        builder_codes: None,
        builder_link: String::new(),
        built,
        qr,
        programs,
        affiliates,
    }))
}

/// `GET /dashboard/links/{code}/qr?format=svg|png&size=&src=&sub1=…`: the
/// QR code of the link's tracking URL with those ids.
pub async fn qr(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(code): Path<String>,
    Query(q): Query<views::QrPageQuery>,
) -> PageResult {
    let code = LinkCode::parse(&code).map_err(|_| PageError::NotFound)?;
    let rec = app.0.store.get_link(code).await?;
    let (format, size) = q.image();
    super::qr_image(
        &public_base(&app, &headers),
        rec.link.code.as_str(),
        &q.builder,
        format,
        size,
    )
    .map_err(|_| PageError::NotFound)
}

/// `POST /dashboard/links/{code}`: saves the edit form (as `PATCH
/// /api/v1/links/{code}`).
pub async fn update_link(
    State(app): State<AppState>,
    Path(code): Path<String>,
    Form(f): Form<LinkForm>,
) -> Response {
    let path = format!("/dashboard/links/{code}");
    // The form does not edit UTM defaults: keep the stored ones.
    let utm = match LinkCode::parse(&code) {
        Ok(c) => match app.0.store.get_link(c).await {
            Ok(cur) => cur.link.utm,
            Err(_) => return PageError::NotFound.into_response(),
        },
        Err(_) => return PageError::NotFound.into_response(),
    };
    let input = match form_link(&f, &code, utm) {
        Ok(i) => i,
        Err(e) => return back(&app, &path, "error", &e),
    };
    match app.0.catalog.save_link(input, SaveMode::Update).await {
        Ok(_) => back(&app, &path, "msg", "Saved."),
        Err(e) => back(&app, &path, "error", &e.to_string()),
    }
}
