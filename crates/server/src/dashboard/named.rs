//! Affiliates and programs: one generic set of pages (list, create, item
//! with stats, edit), typed by the resource; programs show their postback
//! URLs.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Form};
use clickward_core::id::Slug;
use clickward_core::link::{Affiliate, Program, Status};
use clickward_core::report::Dimension;
use clickward_store::{LinkRecord, SaveMode, StoreFuture};
use serde::Deserialize;

use super::admin::{PageQuery, PageResult, StatsView, stats_view};
use super::links::{ItemQuery, LinkItem, link_item};
use super::session::Session;
use super::stats::Range;
use super::views::{Chrome, back};
use super::{PageError, page, public_base};
use crate::process::app::AppState;
use crate::services::catalog::{NamedBody, NamedResource};
use crate::services::programs::{
    self, CommissionSpec, OverrideView, ProgramSpec, ProgramView, SpecError,
};

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
    /// Its settings panel: postback URLs, settings, overrides (programs
    /// only).
    fn panel<'a>(
        &'a self,
        app: &'a AppState,
        base: &'a str,
    ) -> StoreFuture<'a, Option<ProgramPanel>>;
}

impl NamedPage for Affiliate {
    const TITLE: &'static str = "Affiliates";
    const SECTION: &'static str = "affiliates";
    const BASE: &'static str = "/dashboard/affiliates";
    const DIM: Dimension = Dimension::Affiliate;
    fn owns(&self, link: &LinkRecord) -> bool {
        link.link.affiliate.as_ref() == Some(&self.slug)
    }
    fn panel<'a>(&'a self, _: &'a AppState, _: &'a str) -> StoreFuture<'a, Option<ProgramPanel>> {
        Box::pin(async { Ok(None) })
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
    fn panel<'a>(
        &'a self,
        app: &'a AppState,
        base: &'a str,
    ) -> StoreFuture<'a, Option<ProgramPanel>> {
        Box::pin(async move {
            let store = app.0.store.as_ref();
            let settings = store.program_settings(self.id).await?;
            let overrides = programs::overrides(store, self.slug.clone())
                .await
                .map_err(|e| match e {
                    SpecError::Store(s) => s,
                    SpecError::Invalid(m) => clickward_store::StoreError::Corrupt(m),
                })?;
            Ok(Some(ProgramPanel {
                postbacks: postback_examples(
                    base,
                    settings.postback_token.as_deref().unwrap_or(""),
                ),
                view: ProgramView::of(self.clone(), &settings),
                overrides,
                affiliates: store
                    .list_affiliates()
                    .await?
                    .into_iter()
                    .map(|a| a.slug.to_string())
                    .collect(),
            }))
        })
    }
}

/// A program's own part of its page.
pub struct ProgramPanel {
    /// Copy-paste postback URLs.
    pub postbacks: Vec<PostbackExample>,
    /// Its settings, in the catalogue's words.
    pub view: ProgramView,
    /// Per-affiliate commission overrides.
    pub overrides: Vec<OverrideView>,
    /// Affiliates an override can name.
    pub affiliates: Vec<String>,
}

/// A program or an affiliate in a list.
pub struct NamedItem {
    pub slug: String,
    pub name: String,
    pub status: &'static str,
    pub owner: &'static str,
}

impl NamedItem {
    fn of<R: NamedResource>(r: &R) -> Self {
        let b = r.body();
        NamedItem {
            name: b.name.unwrap_or_else(|| b.slug.as_str().to_owned()),
            slug: b.slug.as_str().to_owned(),
            status: b.status.as_str(),
            owner: crate::services::catalog::owner_text(r.owner()),
        }
    }
}

#[derive(Template)]
#[template(path = "named_list.html")]
pub(super) struct NamedListPage {
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

pub(super) fn form_status(s: &str) -> Result<Status, String> {
    match s.trim() {
        "" | "active" => Ok(Status::Active),
        "disabled" => Ok(Status::Disabled),
        other => Err(format!("status {other:?} is not active or disabled")),
    }
}

/// Saves the form as the API would (`save_named`); returns the slug.
pub(super) async fn save_form<R: NamedPage>(
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

pub(super) fn postback_examples(base: &str, token: &str) -> Vec<PostbackExample> {
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
pub(super) struct NamedItemPage {
    c: Chrome,
    base: &'static str,
    item: NamedItem,
    stats: StatsView,
    links: Vec<LinkItem>,
    program: Option<ProgramPanel>,
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
    let program = r.panel(&app, &base).await?;
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
        program,
    }))
}

/// The program settings form: every field in the catalogue's words; a
/// blank field keeps what is stored, except the click id key and the
/// postback IPs, whose blank means none.
#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    currency: String,
    #[serde(default)]
    cookie_window: String,
    #[serde(default)]
    attribution_window: String,
    #[serde(default)]
    attribution: String,
    #[serde(default)]
    commission: String,
    #[serde(default)]
    hold: String,
    #[serde(default)]
    min_payout: String,
    #[serde(default)]
    click_id_param: String,
    #[serde(default)]
    postback_ips: String,
    #[serde(default)]
    postback_secret: String,
    #[serde(default)]
    pixel: String,
    #[serde(default)]
    pixel_max_amount: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    fallback_url: String,
}

impl SettingsForm {
    fn spec(&self) -> Result<ProgramSpec, String> {
        let given = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let attribution = match self.attribution.trim() {
            "" => None,
            "last_click" => Some(clickward_core::program::AttributionModel::LastClick),
            "first_click" => Some(clickward_core::program::AttributionModel::FirstClick),
            other => {
                return Err(format!(
                    "attribution {other:?} is not last_click or first_click"
                ));
            }
        };
        Ok(ProgramSpec {
            currency: given(&self.currency),
            cookie_window: given(&self.cookie_window),
            attribution_window: given(&self.attribution_window),
            attribution,
            // The form always shows the plan: blank means "pays nothing".
            commission: Some(CommissionSpec::Text(self.commission.trim().to_owned())),
            hold: given(&self.hold).map(Some),
            min_payout: given(&self.min_payout),
            click_id_param: Some(given(&self.click_id_param)),
            postback_ips: Some(
                self.postback_ips
                    .split([',', ' ', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            postback_secret: given(&self.postback_secret),
            pixel: match self.pixel.trim() {
                "" => None,
                p => Some(
                    clickward_core::program::PixelMode::parse(p)
                        .ok_or_else(|| format!("pixel {p:?} is not off, on or signed"))?,
                ),
            },
            pixel_max_amount: Some(given(&self.pixel_max_amount)),
            timezone: given(&self.timezone),
            fallback_url: Some(given(&self.fallback_url)),
            ..ProgramSpec::default()
        })
    }
}

/// `POST /dashboard/programs/{slug}/settings`.
pub async fn update_program_settings(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    Form(f): Form<SettingsForm>,
) -> Response {
    let path = format!("{}/{slug}", <Program as NamedPage>::BASE);
    let result = async {
        let slug = Slug::parse(&slug).map_err(|e| format!("slug {e}"))?;
        let spec = f.spec()?;
        app.0
            .catalog
            .update_program(slug, &spec)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(_) => back(&app, &path, "msg", "Settings saved."),
        Err(e) => back(&app, &path, "error", &e),
    }
}

/// The override form: an affiliate and its rates (blank: remove).
#[derive(Deserialize)]
pub struct OverrideForm {
    #[serde(default)]
    affiliate: String,
    #[serde(default)]
    commission: String,
}

/// `POST /dashboard/programs/{slug}/commissions`.
pub async fn update_program_override(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    Form(f): Form<OverrideForm>,
) -> Response {
    let path = format!("{}/{slug}", <Program as NamedPage>::BASE);
    let result = async {
        let program = Slug::parse(&slug).map_err(|e| format!("slug {e}"))?;
        let affiliate = Slug::parse(f.affiliate.trim()).map_err(|e| format!("affiliate {e}"))?;
        let text = f.commission.trim();
        let plan = (!text.is_empty()).then(|| CommissionSpec::Text(text.to_owned()));
        app.0
            .catalog
            .set_override(program, affiliate.clone(), plan.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(if plan.is_some() {
            format!("{affiliate} now earns its own rates.")
        } else {
            format!("{affiliate} earns the program's rates again.")
        })
    }
    .await;
    match result {
        Ok(m) => back(&app, &path, "msg", &m),
        Err(e) => back(&app, &path, "error", &e),
    }
}
