//! The merchant's pages under `/dashboard`. Thin: read through the store and
//! the report engine, write through the same paths as the admin API.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use clickward_core::conversion::ConversionStatus;
use clickward_core::id::{LinkCode, Slug};
use clickward_core::link::{Affiliate, Destination, Program, RedirectStatus, Status};
use clickward_core::report::Dimension;
use clickward_store::{ConversionFilter, KeyScope, LinkInput, LinkRecord, SaveMode, StoreFuture};
use serde::Deserialize;
use std::collections::BTreeMap;

use super::session::Session;
use super::stats::{self, Kpi, Range, RangeQuery, TopTable};
use super::views::{self, BuilderQuery, Chrome, Notice, back, money, or_dash, utc};
use super::{PageError, page, public_base};
use crate::process::app::AppState;
use crate::services::catalog::{NamedBody, NamedResource};

type PageResult = Result<Response, PageError>;

/// Range and notices of a page's query.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(flatten)]
    range: RangeQuery,
    #[serde(flatten)]
    notice: Notice,
    /// Search text (lists).
    q: Option<String>,
    /// Status filter (conversions).
    status: Option<String>,
}

/// Stats block of a page: range form, tiles and chart.
pub struct StatsView {
    pub range: Range,
    pub kpis: Vec<Kpi>,
    /// The chart's data, JSON (put in a `data-` attribute, escaped).
    pub series_json: String,
    /// `from=…&to=…&tz=…` for the live refresh.
    pub range_qs: String,
    /// Filter of the live refresh (`link=…`), empty for none.
    pub filter_qs: String,
}

pub(super) async fn stats_view(
    app: &AppState,
    range: Range,
    filters: &[(Dimension, String)],
) -> Result<StatsView, PageError> {
    let (kpis, series) = stats::overview(app.0.store.as_ref(), &range, filters).await?;
    let filter_qs = filters
        .iter()
        .fold(
            url::form_urlencoded::Serializer::new(String::new()),
            |mut s, (d, v)| {
                s.append_pair(&d.to_string(), v);
                s
            },
        )
        .finish();
    Ok(StatsView {
        range_qs: range.query_string(),
        series_json: serde_json::to_string(&series).unwrap_or_default(),
        kpis,
        range,
        filter_qs,
    })
}

// ---- overview ---------------------------------------------------------------

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    c: Chrome,
    stats: StatsView,
    tops: Vec<TopTable>,
}

/// `GET /dashboard/`: tiles, chart and top tables for a range.
pub async fn overview(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let store = app.0.store.as_ref();
    let range = Range::parse(&q.range, app.0.clock.now_micros());
    let r = &range;
    // Five reports at once: the store has several readers.
    let top = |title, dim| async move {
        stats::top(store, r, title, dim, &[], 10)
            .await
            .map_err(PageError::from)
    };
    let (stats, links, affiliates, srcs, countries) = futures::try_join!(
        stats_view(&app, range.clone(), &[]),
        top("Top links", Dimension::Link),
        top("Top affiliates", Dimension::Affiliate),
        top("Top src", Dimension::Src),
        top("Top countries", Dimension::Country),
    )?;
    let tops = vec![links, affiliates, srcs, countries];
    let c = Chrome::new(&s, "Overview", "overview")
        .notice(&app, &q.notice)
        .problem(stats.range.problem.clone())
        .with_geo();
    Ok(page(&OverviewPage { c, stats, tops }))
}

/// `GET /dashboard/kpis?from&to&tz[&link=…]`: the tiles as JSON
/// (`{"kpi-clicks": "12", …}`), for the live refresh.
pub async fn kpis_json(
    State(app): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, PageError> {
    let filters = [
        (Dimension::Link, "link"),
        (Dimension::Affiliate, "affiliate"),
        (Dimension::Program, "program"),
    ]
    .into_iter()
    .filter_map(|(d, key)| q.get(key).map(|v| (d, v.clone())))
    .collect::<Vec<_>>();
    tiles_json(&app, &q, &filters).await
}

/// The tiles for the range of query `q` (`from`, `to`, `tz`) under
/// `filters`, as `{"kpi-clicks": "12", …}`: the live refresh of the
/// dashboard's and the portal's pages.
pub(super) async fn tiles_json(
    app: &AppState,
    q: &BTreeMap<String, String>,
    filters: &[(Dimension, String)],
) -> Result<Json<serde_json::Value>, PageError> {
    let range = Range::parse(
        &RangeQuery {
            from: q.get("from").cloned(),
            to: q.get("to").cloned(),
            tz: q.get("tz").cloned(),
        },
        app.0.clock.now_micros(),
    );
    let tiles = stats::tiles(app.0.store.as_ref(), &range, filters).await?;
    Ok(Json(serde_json::Value::Object(
        tiles
            .into_iter()
            .map(|k| (k.id.to_owned(), serde_json::Value::String(k.value)))
            .collect(),
    )))
}

// ---- live -------------------------------------------------------------------

/// A row of the live table (server-rendered ones are the latest clicks).
pub struct LiveRow {
    pub time: String,
    pub kind: &'static str,
    pub link: String,
    pub affiliate: String,
    pub src: String,
    pub class: &'static str,
    pub reason: String,
    pub country: String,
    pub referrer: String,
    pub device: String,
    pub browser: String,
    pub redirect: String,
}

#[derive(Template)]
#[template(path = "live.html")]
struct LivePage {
    c: Chrome,
    rows: Vec<LiveRow>,
}

/// `GET /dashboard/live`: the latest clicks, then the live stream.
pub async fn live(State(app): State<AppState>, Extension(s): Extension<Session>) -> PageResult {
    let clicks = app.0.store.list_clicks(None, 50).await?;
    let rows = clicks
        .into_iter()
        .map(|k| LiveRow {
            time: utc(k.ts),
            kind: "click",
            link: k.link,
            affiliate: or_dash(k.affiliate.as_deref()),
            src: or_dash(k.src.as_deref()),
            class: if k.bot_reason.is_some() {
                "bot"
            } else {
                "human"
            },
            reason: or_dash(k.bot_reason.as_deref()),
            country: or_dash(k.country.as_deref()),
            referrer: or_dash(k.referrer.as_deref()),
            device: k.device,
            browser: or_dash(k.browser.as_deref()),
            redirect: "–".to_owned(),
        })
        .collect();
    Ok(page(&LivePage {
        c: Chrome::new(&s, "Live", "live").with_geo(),
        rows,
    }))
}

/// `GET /dashboard/events`: the live event stream (SSE) for a signed-in
/// dashboard; the same stream as `GET /api/v1/events`.
pub async fn events(State(app): State<AppState>, headers: HeaderMap) -> Response {
    crate::http::live_stream(app, &headers, None)
}

// ---- links ------------------------------------------------------------------

/// A link as the list shows it.
pub struct LinkItem {
    pub code: String,
    pub program: String,
    pub affiliate: String,
    pub destination: String,
    pub status: &'static str,
    pub redirects: bool,
    pub url: String,
}

pub(super) fn link_item(r: &LinkRecord, base: &str) -> LinkItem {
    LinkItem {
        code: r.link.code.as_str().to_owned(),
        program: r.link.program.as_str().to_owned(),
        affiliate: or_dash(r.link.affiliate.as_ref().map(Slug::as_str)),
        destination: r.link.destination.clone(),
        status: r.link.status.as_str(),
        redirects: r.redirects,
        url: views::tracking_url(base, r.link.code.as_str(), "", &Default::default()),
    }
}

#[derive(Template)]
#[template(path = "links.html")]
struct LinksPage {
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
async fn owner_slugs(app: &AppState) -> Result<(Vec<String>, Vec<String>), PageError> {
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

fn form_link(
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
struct LinkPage {
    c: Chrome,
    link: LinkItem,
    redirect: String,
    stats: StatsView,
    builder: BuilderQuery,
    builder_codes: Option<Vec<String>>,
    builder_link: String,
    built: String,
    programs: Vec<String>,
    affiliates: Vec<String>,
}

/// The query of a link page: range, notices and the builder's fields.
#[derive(Deserialize, Default)]
pub struct ItemQuery {
    #[serde(flatten)]
    range: RangeQuery,
    #[serde(flatten)]
    notice: Notice,
    #[serde(flatten)]
    builder: BuilderQuery,
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
        programs,
        affiliates,
    }))
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

// ---- affiliates and programs -----------------------------------------------
//
// Both have the same shape (slug, name, status): one set of handlers serves
// both, typed by the resource, and writes through the API's `save_named`.

/// A program or an affiliate as the dashboard shows it.
pub trait NamedPage: NamedResource {
    /// Page title of the list.
    const TITLE: &'static str;
    /// Navigation entry.
    const SECTION: &'static str;
    /// Path of the list (items are below it).
    const BASE: &'static str;
    /// The report dimension its pages filter by.
    const DIM: Dimension;
    /// `true` when the link belongs to it.
    fn owns(&self, link: &LinkRecord) -> bool;
    /// Copy-paste postback URLs for its page (programs only).
    fn postbacks<'a>(
        &'a self,
        app: &'a AppState,
        base: &'a str,
    ) -> StoreFuture<'a, Vec<PostbackExample>>;
}

impl NamedPage for Affiliate {
    const TITLE: &'static str = "Affiliates";
    const SECTION: &'static str = "affiliates";
    const BASE: &'static str = "/dashboard/affiliates";
    const DIM: Dimension = Dimension::Affiliate;
    fn owns(&self, link: &LinkRecord) -> bool {
        link.link.affiliate.as_ref() == Some(&self.slug)
    }
    fn postbacks<'a>(
        &'a self,
        _: &'a AppState,
        _: &'a str,
    ) -> StoreFuture<'a, Vec<PostbackExample>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

impl NamedPage for Program {
    const TITLE: &'static str = "Programs";
    const SECTION: &'static str = "programs";
    const BASE: &'static str = "/dashboard/programs";
    const DIM: Dimension = Dimension::Program;
    fn owns(&self, link: &LinkRecord) -> bool {
        link.link.program == self.slug
    }
    fn postbacks<'a>(
        &'a self,
        app: &'a AppState,
        base: &'a str,
    ) -> StoreFuture<'a, Vec<PostbackExample>> {
        Box::pin(async move {
            let settings = app.0.store.program_settings(self.id).await?;
            Ok(postback_examples(
                base,
                settings.postback_token.as_deref().unwrap_or(""),
            ))
        })
    }
}

/// A program or an affiliate in a list.
pub struct NamedItem {
    pub slug: String,
    pub name: String,
    pub status: &'static str,
}

impl NamedItem {
    fn of<R: NamedResource>(r: &R) -> Self {
        let b = r.body();
        NamedItem {
            name: b.name.unwrap_or_else(|| b.slug.as_str().to_owned()),
            slug: b.slug.as_str().to_owned(),
            status: b.status.as_str(),
        }
    }
}

#[derive(Template)]
#[template(path = "named_list.html")]
struct NamedListPage {
    c: Chrome,
    kind: &'static str,
    base: &'static str,
    q: String,
    items: Vec<NamedItem>,
}

/// `GET /dashboard/affiliates?q=`, `GET /dashboard/programs?q=`: list,
/// search and the create form.
pub async fn named_list<R: NamedPage>(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let needle = q.q.clone().unwrap_or_default();
    let n = needle.trim().to_lowercase();
    let items = R::list(app.0.store.as_ref())
        .await?
        .iter()
        .map(NamedItem::of)
        .filter(|i| n.is_empty() || i.slug.contains(&n) || i.name.to_lowercase().contains(&n))
        .collect();
    Ok(page(&NamedListPage {
        c: Chrome::new(&s, R::TITLE, R::SECTION).notice(&app, &q.notice),
        kind: R::KIND,
        base: R::BASE,
        q: needle,
        items,
    }))
}

/// The program / affiliate form.
#[derive(Deserialize)]
pub struct NamedForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
}

fn form_status(s: &str) -> Result<Status, String> {
    match s.trim() {
        "" | "active" => Ok(Status::Active),
        "disabled" => Ok(Status::Disabled),
        other => Err(format!("status {other:?} is not active or disabled")),
    }
}

/// Saves the form as the API would (`save_named`); returns the slug.
async fn save_form<R: NamedPage>(
    app: &AppState,
    f: &NamedForm,
    slug: &str,
    mode: SaveMode,
) -> Result<String, String> {
    let slug = Slug::parse(slug.trim()).map_err(|e| format!("slug {e}"))?;
    let name = Some(clickward_core::truncate_utf8(f.name.trim(), 200).to_owned())
        .filter(|n| !n.is_empty());
    let body = NamedBody {
        slug: slug.clone(),
        name,
        status: form_status(&f.status)?,
    };
    app.0
        .catalog
        .save_named::<R>(body, mode)
        .await
        .map_err(|e| e.to_string())?;
    Ok(slug.as_str().to_owned())
}

/// `POST /dashboard/affiliates`, `POST /dashboard/programs`.
pub async fn create_named<R: NamedPage>(
    State(app): State<AppState>,
    Form(f): Form<NamedForm>,
) -> Response {
    match save_form::<R>(&app, &f, &f.slug, SaveMode::Create).await {
        Ok(slug) => back(
            &app,
            &format!("{}/{slug}", R::BASE),
            "msg",
            &format!("Created {} {slug}.", R::KIND),
        ),
        Err(e) => back(&app, R::BASE, "error", &e),
    }
}

/// `POST /dashboard/affiliates/{slug}`, `POST /dashboard/programs/{slug}`.
pub async fn update_named<R: NamedPage>(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    Form(f): Form<NamedForm>,
) -> Response {
    let path = format!("{}/{slug}", R::BASE);
    match save_form::<R>(&app, &f, &slug, SaveMode::Update).await {
        Ok(_) => back(&app, &path, "msg", "Saved."),
        Err(e) => back(&app, &path, "error", &e),
    }
}

/// Copy-paste postback URLs of a program, one per dialect (docs/postbacks.md).
pub struct PostbackExample {
    pub dialect: &'static str,
    pub url: String,
}

fn postback_examples(base: &str, token: &str) -> Vec<PostbackExample> {
    let t: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    vec![
        PostbackExample {
            dialect: "Generic",
            url: format!(
                "{base}/postback?click_id={{click_id}}&order_id={{order_id}}&amount={{amount}}&currency=USD&token={t}"
            ),
        },
        PostbackExample {
            dialect: "TUNE / HasOffers",
            url: format!(
                "{base}/postback?transaction_id={{aff_sub}}&conversion_unique_id={{adv_unique1}}&amount={{sale_amount}}&adv_sub={{adv_sub}}&security_token={t}"
            ),
        },
        PostbackExample {
            dialect: "Everflow",
            url: format!(
                "{base}/postback?transaction_id={{sub1}}&order_id={{order_id}}&amount={{sale_amount}}&adv1={{adv1}}&verification_token={t}"
            ),
        },
        PostbackExample {
            dialect: "Voluum",
            url: format!(
                "{base}/postback?cid={{externalid}}&txid={{transaction_id}}&amount={{payout}}&currency=USD&et={{event_type}}&token={t}"
            ),
        },
        PostbackExample {
            dialect: "Prosper202",
            url: format!(
                "{base}/postback?subid=[[subid]]&txid=[[transaction_id]]&amount=[[payout]]&token={t}"
            ),
        },
    ]
}

#[derive(Template)]
#[template(path = "named_item.html")]
struct NamedItemPage {
    c: Chrome,
    base: &'static str,
    item: NamedItem,
    stats: StatsView,
    links: Vec<LinkItem>,
    postbacks: Vec<PostbackExample>,
}

/// `GET /dashboard/affiliates/{slug}`, `GET /dashboard/programs/{slug}`:
/// stats, links, (for programs) postback URLs, edit form.
pub async fn named_item<R: NamedPage>(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Query(q): Query<ItemQuery>,
) -> PageResult {
    let slug = Slug::parse(&slug).map_err(|_| PageError::NotFound)?;
    let r = R::get(app.0.store.as_ref(), slug.clone()).await?;
    let base = public_base(&app, &headers);
    let stats = stats_view(
        &app,
        Range::parse(&q.range, app.0.clock.now_micros()),
        &[(R::DIM, slug.as_str().to_owned())],
    )
    .await?;
    let links = app
        .0
        .store
        .list_links()
        .await?
        .iter()
        .filter(|l| r.owns(l))
        .map(|l| link_item(l, &base))
        .collect();
    let postbacks = r.postbacks(&app, &base).await?;
    let item = NamedItem::of(&r);
    let mut kind = R::KIND.to_owned();
    if let Some(first) = kind.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    Ok(page(&NamedItemPage {
        c: Chrome::new(&s, format!("{kind} {}", item.name), R::SECTION)
            .notice(&app, &q.notice)
            .problem(stats.range.problem.clone()),
        base: R::BASE,
        item,
        stats,
        links,
        postbacks,
    }))
}

// ---- conversions and payouts ------------------------------------------------

/// A conversion row.
pub struct ConversionItem {
    pub id: String,
    pub time: String,
    pub program: String,
    pub affiliate: String,
    pub link: String,
    pub src: String,
    pub event: String,
    pub order_id: String,
    pub amount: String,
    pub commission: String,
    pub status: &'static str,
    /// Actions the lifecycle allows now.
    pub actions: Vec<&'static str>,
}

/// As the conversions pages show a stored conversion.
pub fn conversion_item(c: &clickward_store::ConversionRow) -> ConversionItem {
    let actions = match c.status {
        ConversionStatus::Pending => vec!["approve", "reject"],
        ConversionStatus::Approved => vec!["reverse"],
        ConversionStatus::Paid => vec!["reverse"],
        _ => vec![],
    };
    ConversionItem {
        id: c.conversion_id.to_string(),
        time: utc(c.occurred_at),
        program: c.program.clone(),
        affiliate: or_dash(c.affiliate.as_deref()),
        link: or_dash(c.link.as_deref()),
        src: or_dash(c.src.as_deref()),
        event: c.event.clone(),
        order_id: c.order_id.clone(),
        amount: c
            .amount_minor
            .map(|a| money(a, &c.currency))
            .unwrap_or_else(|| "–".to_owned()),
        commission: money(c.commission_minor, &c.currency),
        status: c.status.as_str(),
        actions,
    }
}

#[derive(Template)]
#[template(path = "conversions.html")]
struct ConversionsPage {
    c: Chrome,
    status: String,
    statuses: [&'static str; 5],
    rows: Vec<ConversionItem>,
}

/// `GET /dashboard/conversions?status=`: the latest 200, with actions.
pub async fn conversions(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let status_text = q.status.clone().unwrap_or_default();
    let status = ConversionStatus::parse(status_text.trim());
    let rows = app
        .0
        .store
        .list_conversions(ConversionFilter {
            status,
            affiliate: None,
            limit: 200,
        })
        .await?
        .iter()
        .map(conversion_item)
        .collect();
    let mut c = Chrome::new(&s, "Conversions", "conversions").notice(&app, &q.notice);
    if status.is_none() && !status_text.trim().is_empty() {
        c = c.problem(Some(format!("unknown status {status_text:?}; showing all")));
    }
    Ok(page(&ConversionsPage {
        c,
        status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        statuses: ["pending", "approved", "rejected", "reversed", "paid"],
        rows,
    }))
}

/// An approve / reject / reverse form.
#[derive(Deserialize)]
pub struct ChangeForm {
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    back: String,
}

/// `POST /dashboard/conversions/{id}`: approve, reject or reverse (as
/// `POST /api/v1/conversions/{id}/{action}`), recorded with the user's name.
pub async fn change_conversion(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Form(f): Form<ChangeForm>,
) -> Response {
    let path = if f.back.starts_with("/dashboard/conversions") {
        f.back.clone()
    } else {
        "/dashboard/conversions".to_owned()
    };
    let to = match f.action.as_str() {
        "approve" => ConversionStatus::Approved,
        "reject" => ConversionStatus::Rejected,
        "reverse" => ConversionStatus::Reversed,
        other => return back(&app, &path, "error", &format!("unknown action {other:?}")),
    };
    let Ok(id) = id.parse() else {
        return PageError::NotFound.into_response();
    };
    let actor = format!("dashboard:{}", s.name());
    let reason = Some(f.reason).filter(|r| !r.trim().is_empty());
    match app.0.conversions.change_status(id, to, actor, reason).await {
        Ok(row) => back(
            &app,
            &path,
            "msg",
            &format!("Conversion {} is {}.", row.order_id, row.status.as_str()),
        ),
        Err(e) => back(&app, &path, "error", &e.to_string()),
    }
}

/// A balance line.
pub struct BalanceItem {
    pub affiliate: String,
    pub bucket: &'static str,
    pub amount: String,
}

/// A payout batch line.
pub struct PayoutItem {
    pub batch: String,
    pub affiliate: String,
    pub amount: String,
    pub conversions: i64,
    pub time: String,
}

/// Balances as lines.
pub fn balance_items(rows: &[clickward_store::Balance]) -> Vec<BalanceItem> {
    rows.iter()
        .map(|b| BalanceItem {
            affiliate: or_dash(b.affiliate.as_deref()),
            bucket: b.bucket.as_str(),
            amount: money(b.minor, &b.currency),
        })
        .collect()
}

/// Payout batches as lines.
pub fn payout_items(rows: &[clickward_store::Payout]) -> Vec<PayoutItem> {
    rows.iter()
        .map(|p| PayoutItem {
            batch: p.batch_id.clone(),
            affiliate: p.affiliate.clone(),
            amount: money(p.amount_minor, &p.currency),
            conversions: p.conversions,
            time: utc(p.created_at),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "payouts.html")]
struct PayoutsPage {
    c: Chrome,
    balances: Vec<BalanceItem>,
    payouts: Vec<PayoutItem>,
}

/// `GET /dashboard/payouts`: ledger balances and the latest batches.
pub async fn payouts(State(app): State<AppState>, Extension(s): Extension<Session>) -> PageResult {
    let balances = balance_items(&app.0.store.balances(None).await?);
    let payouts = payout_items(&app.0.store.list_payouts(None, 200).await?);
    Ok(page(&PayoutsPage {
        c: Chrome::new(&s, "Payouts", "payouts"),
        balances,
        payouts,
    }))
}

// ---- settings -----------------------------------------------------------------

/// An API key line.
pub struct KeyItem {
    pub id: i64,
    pub prefix: String,
    pub scope: &'static str,
    pub label: String,
}

/// Postback URLs of one program.
pub struct ProgramPostbacks {
    pub slug: String,
    pub examples: Vec<PostbackExample>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    c: Chrome,
    keys: Vec<KeyItem>,
    new_key: Option<String>,
    users: Vec<(String, &'static str, String)>,
    programs: Vec<ProgramPostbacks>,
}

/// `GET /dashboard/settings`: API keys, users and postback URLs. A created
/// key is shown once, in the answer to the form's POST (never in a URL).
pub async fn settings(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> PageResult {
    settings_page(&app, &s, &headers, &q.notice, None).await
}

async fn settings_page(
    app: &AppState,
    s: &Session,
    headers: &HeaderMap,
    notice: &Notice,
    new_key: Option<String>,
) -> PageResult {
    let base = public_base(app, headers);
    let keys = app
        .0
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .map(|k| KeyItem {
            id: k.id,
            prefix: k.prefix,
            scope: k.scope.as_str(),
            label: or_dash(k.label.as_deref()),
        })
        .collect();
    let users = app
        .0
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| (u.username, u.role.as_str(), or_dash(u.affiliate.as_deref())))
        .collect();
    let mut programs = Vec::new();
    for p in app.0.store.list_programs().await? {
        let settings = app.0.store.program_settings(p.id).await?;
        programs.push(ProgramPostbacks {
            slug: p.slug.as_str().to_owned(),
            examples: postback_examples(&base, settings.postback_token.as_deref().unwrap_or("")),
        });
    }
    Ok(page(&SettingsPage {
        c: Chrome::new(s, "Settings", "settings").notice(app, notice),
        keys,
        new_key,
        users,
        programs,
    }))
}

/// The new-key form.
#[derive(Deserialize)]
pub struct KeyForm {
    scope: String,
    #[serde(default)]
    label: String,
}

/// `POST /dashboard/settings/keys`: creates a key and shows it once.
pub async fn create_key(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<KeyForm>,
) -> PageResult {
    let scope = match f.scope.as_str() {
        "admin" => KeyScope::Admin,
        "read" => KeyScope::Read,
        other => {
            return Ok(back(
                &app,
                "/dashboard/settings",
                "error",
                &format!("scope {other:?} is not admin or read"),
            ));
        }
    };
    let (secret, hash, prefix) = crate::services::keys::new_key();
    let label = Some(clickward_core::truncate_utf8(f.label.trim(), 100).to_owned())
        .filter(|l| !l.is_empty());
    app.0
        .store
        .create_api_key(hash, prefix, scope, label)
        .await?;
    settings_page(
        &app,
        &s,
        &headers,
        &Notice::signed(
            &app,
            "msg",
            "Key created. Copy it now: it is not shown again.",
        ),
        Some(secret),
    )
    .await
}

/// `POST /dashboard/settings/keys/{id}/revoke`.
pub async fn revoke_key(State(app): State<AppState>, Path(id): Path<i64>) -> Response {
    match app.0.store.revoke_api_key(id).await {
        Ok(()) => back(&app, "/dashboard/settings", "msg", "Key revoked."),
        Err(e) => back(&app, "/dashboard/settings", "error", &e.to_string()),
    }
}
