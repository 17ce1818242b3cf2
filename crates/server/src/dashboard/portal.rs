//! The affiliate portal under `/portal`: the signed-in affiliate's own
//! links (with a link builder), stats, conversions, payouts and postbacks. Every query
//! is filtered by the session's affiliate on the server; another
//! affiliate's link answers 404, exactly as a link that does not exist.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use clickward_core::id::{LinkCode, Slug};
use clickward_core::report::Dimension;
use clickward_store::ConversionFilter;
use serde::Deserialize;

use super::admin::{StatsView, stats_view};
use super::conversions::{
    BalanceItem, ConversionItem, PayoutItem, balance_items, conversion_item, payout_items,
};
use super::links::{LinkItem, link_item};
use super::overview::tiles_json;
use super::session::{Session, Who};
use super::stats::{Range, RangeQuery};
use super::views::{self, BuilderQuery, Chrome, Notice};
use super::{PageError, page, public_base};
use crate::process::app::AppState;

type PageResult = Result<axum::response::Response, PageError>;

/// The page's query: range, notices, link builder.
#[derive(Deserialize, Default)]
pub struct PortalQuery {
    #[serde(flatten)]
    range: RangeQuery,
    #[serde(flatten)]
    notice: Notice,
    #[serde(flatten)]
    builder: BuilderQuery,
    /// The link the builder works on.
    link: Option<String>,
}

/// The signed-in affiliate, one of their own links and its record; 404 for
/// any other link (another affiliate's, or none).
async fn own_link(
    app: &AppState,
    s: &Session,
    code: &str,
) -> Result<(Slug, LinkCode, clickward_store::LinkRecord), PageError> {
    let me = affiliate_of(s)?;
    let code = LinkCode::parse(code).map_err(|_| PageError::NotFound)?;
    let rec = app.0.store.get_link(code.clone()).await?;
    if rec.link.affiliate.as_ref() != Some(&me) {
        return Err(PageError::NotFound);
    }
    Ok((me, code, rec))
}

/// The signed-in affiliate's slug (404 for an admin session).
pub(super) fn affiliate_of(s: &Session) -> Result<Slug, PageError> {
    match &s.who {
        Who::Affiliate { slug, .. } => Slug::parse(slug).map_err(|_| PageError::NotFound),
        Who::Admin { .. } => Err(PageError::NotFound),
    }
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    c: Chrome,
    affiliate: String,
    stats: StatsView,
    links: Vec<LinkItem>,
    builder: BuilderQuery,
    builder_codes: Option<Vec<String>>,
    builder_link: String,
    built: String,
    /// The built link's QR image path (the page adds `format=`).
    qr: String,
    rows: Vec<ConversionItem>,
    balances: Vec<BalanceItem>,
    payouts: Vec<PayoutItem>,
    postbacks: super::webhooks::PortalPostbacks,
}

/// `GET /portal/`: the affiliate's numbers, links and link builder,
/// conversions, balances and payouts.
pub async fn home(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<PortalQuery>,
) -> PageResult {
    let me = affiliate_of(&s)?;
    let base = public_base(&app, &headers);
    let stats = stats_view(
        &app,
        Range::parse(&q.range, app.0.clock.now_micros()),
        &[(Dimension::Affiliate, me.as_str().to_owned())],
    )
    .await?;
    let links: Vec<LinkItem> = app
        .0
        .store
        .list_links()
        .await?
        .iter()
        .filter(|r| r.link.affiliate.as_ref() == Some(&me))
        .map(|r| link_item(r, &base))
        .collect();
    // The builder only builds on the affiliate's own links.
    let builder_link = q
        .link
        .as_deref()
        .filter(|c| links.iter().any(|l| l.code == *c))
        .or_else(|| links.first().map(|l| l.code.as_str()))
        .unwrap_or_default()
        .to_owned();
    let (built, qr) = if builder_link.is_empty() {
        (String::new(), String::new())
    } else {
        (
            views::tracking_url(&base, &builder_link, &q.builder.src, &q.builder.subs()),
            views::qr_path("/portal/links", &builder_link, &q.builder),
        )
    };
    let conversions = app
        .0
        .store
        .list_conversions(ConversionFilter {
            status: None,
            affiliate: Some(me.clone()),
            before: None,
            limit: 100,
        })
        .await?
        .iter()
        .map(conversion_item)
        .collect();
    let balances: Vec<_> = app
        .0
        .store
        .balances(Some(me.clone()))
        .await?
        .into_iter()
        .filter(|b| b.affiliate.as_deref() == Some(me.as_str()))
        .collect();
    let payouts = app.0.store.list_payouts(Some(me.clone()), 100).await?;
    let codes = links.iter().map(|l| l.code.clone()).collect();
    Ok(page(&PortalPage {
        c: Chrome::new(&s, "Your numbers", "portal")
            .notice(&app, &q.notice)
            .problem(stats.range.problem.clone()),
        affiliate: me.as_str().to_owned(),
        stats,
        links,
        builder: q.builder,
        builder_codes: Some(codes),
        builder_link,
        built,
        qr,
        rows: conversions,
        balances: balance_items(&balances),
        payouts: payout_items(&payouts),
        postbacks: super::webhooks::portal_postbacks(&app, &me).await?,
    }))
}

#[derive(Template)]
#[template(path = "portal_link.html")]
struct PortalLinkPage {
    c: Chrome,
    link: LinkItem,
    stats: StatsView,
    builder: BuilderQuery,
    builder_codes: Option<Vec<String>>,
    builder_link: String,
    built: String,
    qr: String,
}

/// `GET /portal/links/{code}`: one of the affiliate's links; 404 for any
/// other (another affiliate's, or none).
pub async fn link(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(code): Path<String>,
    Query(q): Query<PortalQuery>,
) -> PageResult {
    let (me, code, rec) = own_link(&app, &s, &code).await?;
    let base = public_base(&app, &headers);
    // Both filters: the link, and (again) the affiliate.
    let stats = stats_view(
        &app,
        Range::parse(&q.range, app.0.clock.now_micros()),
        &[
            (Dimension::Link, code.as_str().to_owned()),
            (Dimension::Affiliate, me.as_str().to_owned()),
        ],
    )
    .await?;
    let built = views::tracking_url(&base, code.as_str(), &q.builder.src, &q.builder.subs());
    let qr = views::qr_path("/portal/links", code.as_str(), &q.builder);
    Ok(page(&PortalLinkPage {
        c: Chrome::new(&s, format!("Link {}", code.as_str()), "portal")
            .notice(&app, &q.notice)
            .problem(stats.range.problem.clone()),
        link: link_item(&rec, &base),
        stats,
        builder: q.builder,
        builder_codes: None,
        builder_link: String::new(),
        built,
        qr,
    }))
}

/// `GET /portal/links/{code}/qr?format=svg|png&size=&src=&sub1=…`: the QR
/// code of one of the affiliate's own links (404 for any other).
pub async fn qr(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(code): Path<String>,
    Query(q): Query<views::QrPageQuery>,
) -> PageResult {
    let (_, code, _) = own_link(&app, &s, &code).await?;
    let (format, size) = q.image();
    super::qr_image(
        &public_base(&app, &headers),
        code.as_str(),
        &q.builder,
        format,
        size,
    )
    .map_err(|_| PageError::NotFound)
}

/// `GET /portal/kpis?from&to&tz[&link=]`: the affiliate's tiles as JSON; the
/// affiliate filter is the session's, whatever the query says.
pub async fn kpis_json(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, PageError> {
    let me = affiliate_of(&s)?;
    let mut filters = vec![(Dimension::Affiliate, me.as_str().to_owned())];
    if let Some(link) = q.get("link") {
        filters.push((Dimension::Link, link.clone()));
    }
    tiles_json(&app, &q, &filters).await
}
