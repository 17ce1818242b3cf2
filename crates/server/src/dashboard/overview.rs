//! The overview page: tiles, chart and top tables for a range in a zone, and
//! the tiles' JSON the page polls.

use askama::Template;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use clickward_core::report::Dimension;
use std::collections::BTreeMap;

use super::admin::{PageQuery, PageResult, StatsView, stats_view};
use super::session::Session;
use super::stats::{self, Range, RangeQuery, TopTable};
use super::views::Chrome;
use super::{PageError, page};
use crate::process::app::AppState;

#[derive(Template)]
#[template(path = "overview.html")]
pub(super) struct OverviewPage {
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
