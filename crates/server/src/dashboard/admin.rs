//! What the merchant's pages under `/dashboard` share: the page query
//! (range, zone, notice), the stats block of an item page. The pages live one
//! per file beside this one; all are thin: they read through the store and
//! the report engine and write through the same services as the admin API.

use axum::response::Response;
use clickward_core::report::Dimension;
use serde::Deserialize;

use super::PageError;
use super::stats::{self, Kpi, Range, RangeQuery};
use super::views::Notice;
use crate::process::app::AppState;

pub(super) type PageResult = Result<Response, PageError>;

/// Range and notices of a page's query.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(flatten)]
    pub(super) range: RangeQuery,
    #[serde(flatten)]
    pub(super) notice: Notice,
    /// Search text (lists).
    pub(super) q: Option<String>,
    /// Status filter (conversions).
    pub(super) status: Option<String>,
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
