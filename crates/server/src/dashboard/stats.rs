//! Numbers for the pages: KPI tiles, the time series and top tables, all
//! from the report engine the API uses (`Store::click_report` over rollups),
//! so a page and `GET /api/v1/reports` never disagree.

use clickward_core::report::{Dimension, TimeGrain};
use clickward_store::{ReportQuery, ReportRow, Store};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::services::reports::{div_half_even, metric, metric_values, totals_of};

/// The range picker's query: `from`, `to` (local dates, inclusive) and `tz`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RangeQuery {
    /// First local date, `YYYY-MM-DD`.
    pub from: Option<String>,
    /// Last local date, `YYYY-MM-DD`.
    pub to: Option<String>,
    /// IANA zone.
    pub tz: Option<String>,
}

/// Longest range a page shows, days (ten years of daily buckets, under the
/// report engine's bucket limit).
const MAX_DAYS: i32 = 3_660;

/// A checked range.
#[derive(Debug, Clone)]
pub struct Range {
    /// First local date.
    pub from: Date,
    /// Last local date.
    pub to: Date,
    /// Zone name as given.
    pub tz_name: String,
    tz: TimeZone,
    /// What was wrong with the query (the defaults were used instead).
    pub problem: Option<String>,
}

impl Range {
    /// The query's range, or the last 7 days (today included) in UTC with a
    /// note of what was wrong.
    pub fn parse(q: &RangeQuery, now_us: i64) -> Range {
        // What the link said is shown quoted inside our sentence and cut
        // short, so a crafted link cannot put a sentence of its own on the
        // page (the signed-notice rule, `views::back`).
        fn echo(s: &str) -> String {
            let cut = clickward_core::truncate_utf8(s, 24);
            let more = if cut.len() < s.len() { "…" } else { "" };
            format!(
                "{:?}",
                format!("{}{more}", clickward_core::clean_text(cut, 24))
            )
        }
        let now = jiff::Timestamp::from_microsecond(now_us).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let tz_name =
            q.tz.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or("UTC");
        let mut problem = None;
        let (tz_name, tz) = match TimeZone::get(tz_name) {
            Ok(tz) => (tz_name.to_owned(), tz),
            Err(_) => {
                problem = Some(format!("unknown time zone {}; showing UTC", echo(tz_name)));
                ("UTC".to_owned(), TimeZone::UTC)
            }
        };
        let today = now.to_zoned(tz.clone()).date();
        let date = |s: &Option<String>| -> Result<Option<Date>, String> {
            match s.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(t) => t
                    .parse::<Date>()
                    .map(Some)
                    .map_err(|_| format!("{} is not a date (YYYY-MM-DD)", echo(t))),
            }
        };
        let default_from = today
            .checked_sub(jiff::Span::new().days(6))
            .unwrap_or(today);
        let (from, to) = match (date(&q.from), date(&q.to)) {
            (Ok(f), Ok(t)) => {
                let to = t.unwrap_or(today);
                let from =
                    f.unwrap_or_else(|| to.checked_sub(jiff::Span::new().days(6)).unwrap_or(to));
                if from > to {
                    problem = Some(format!(
                        "from {from} is after to {to}; showing the last 7 days"
                    ));
                    (default_from, today)
                } else {
                    (from, to)
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                problem = Some(format!("{e}; showing the last 7 days"));
                (default_from, today)
            }
        };
        // A range the report engine cannot tile (a year past 9999, more
        // day buckets than a report may have) is a note, not a failure.
        let (from, to) = if (to - from).get_days() >= MAX_DAYS
            || clickward_core::report::date_range(from, to, &tz).is_err()
        {
            problem = Some(format!(
                "{from} to {to} is more than a page can show (at most {MAX_DAYS} days); showing the last 7 days"
            ));
            (default_from, today)
        } else {
            (from, to)
        };
        Range {
            from,
            to,
            tz_name,
            tz,
            problem,
        }
    }

    /// Days in the range.
    fn days(&self) -> i64 {
        (self.to - self.from).get_days().into()
    }

    /// `from=…&to=…&tz=…`, for links and for the live refresh.
    pub fn query_string(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("from", &self.from.to_string())
            .append_pair("to", &self.to.to_string())
            .append_pair("tz", &self.tz_name)
            .finish()
    }

    fn query(
        &self,
        dims: Vec<Dimension>,
        filters: &[(Dimension, String)],
    ) -> anyhow::Result<ReportQuery> {
        let (start, end) = clickward_core::report::date_range(self.from, self.to, &self.tz)?;
        let grain = dims.iter().find_map(|d| match d {
            Dimension::Time(g) => Some(*g),
            _ => None,
        });
        let buckets = match grain {
            Some(g) => Some(clickward_core::report::buckets(
                self.from, self.to, &self.tz, g,
            )?),
            None => None,
        };
        Ok(ReportQuery {
            start,
            end,
            buckets,
            dims,
            filters: filters.to_vec(),
            raw_only: false,
            by_click_time: false,
        })
    }
}

/// One KPI tile.
#[derive(Debug, Clone, Serialize)]
pub struct Kpi {
    /// Element id (`kpi-clicks`), also the key of the live refresh JSON.
    pub id: &'static str,
    /// Label.
    pub label: &'static str,
    /// Value as shown.
    pub value: String,
}

/// `12345678.90 USD; 500 JPY` as `12,345,678.90 USD; 500 JPY`: thousands
/// separators in the integer part of every number (display only; the API
/// and exports keep plain numbers).
pub fn grouped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 3);
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &chars[start..i];
        // Digits after a decimal point are a fraction: no separators.
        let fraction = start > 0 && chars[start - 1] == '.';
        for (k, d) in digits.iter().enumerate() {
            if !fraction && k > 0 && (digits.len() - k).is_multiple_of(3) {
                out.push(',');
            }
            out.push(*d);
        }
    }
    out
}

/// Tiles: clicks, unique clicks, bot share, conversions, revenue, payout,
/// CR (conversions / unique clicks), EPC (payout / unique clicks); the same
/// definitions and rounding as the report API.
pub fn kpis(rows: &[ReportRow]) -> Vec<Kpi> {
    let (c, m) = totals_of(rows);
    let v = metric_values(&c, &m);
    let bot_share = if c.gross_clicks > 0 {
        let bp = div_half_even(
            i128::from(c.bot_clicks) * 10_000,
            i128::from(c.gross_clicks),
        );
        format!("{}.{:02}%", bp / 100, bp % 100)
    } else {
        "–".to_owned()
    };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "–".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut tiles = vec![
        Kpi {
            id: "kpi-clicks",
            label: "Clicks",
            value: metric(&v, "clicks").to_owned(),
        },
        Kpi {
            id: "kpi-unique",
            label: "Unique clicks",
            value: metric(&v, "unique_clicks").to_owned(),
        },
        Kpi {
            id: "kpi-bots",
            label: "Bot share",
            value: bot_share,
        },
        Kpi {
            id: "kpi-invalid",
            label: "Invalid clicks",
            value: metric(&v, "invalid_clicks").to_owned(),
        },
        Kpi {
            id: "kpi-conversions",
            label: "Conversions",
            value: metric(&v, "conversions").to_owned(),
        },
        Kpi {
            id: "kpi-revenue",
            label: "Revenue",
            value: or_dash(metric(&v, "revenue")),
        },
        Kpi {
            id: "kpi-payout",
            label: "Payout",
            value: or_dash(metric(&v, "payout")),
        },
        Kpi {
            id: "kpi-cr",
            label: "CR",
            value: or_dash(metric(&v, "cr")),
        },
        Kpi {
            id: "kpi-epc",
            label: "EPC",
            value: or_dash(metric(&v, "epc")),
        },
    ];
    for k in &mut tiles {
        k.value = grouped(&k.value);
    }
    tiles
}

/// The chart's data: bucket labels and three series (clicks, unique clicks,
/// bot clicks), as JSON for uPlot (`{"labels": [...], "clicks": [...], …}`).
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Bucket labels (local).
    pub labels: Vec<String>,
    /// Bucket starts, UTC seconds (uPlot's x axis).
    pub x: Vec<i64>,
    /// Human clicks per bucket.
    pub clicks: Vec<i64>,
    /// Unique clicks per bucket.
    pub unique: Vec<i64>,
    /// Bot clicks per bucket.
    pub bots: Vec<i64>,
}

/// A row of a top table.
#[derive(Debug, Clone)]
pub struct TopRow {
    /// Dimension value (`–` for none).
    pub key: String,
    /// Human clicks (as shown).
    pub clicks: String,
    /// Unique clicks (as shown).
    pub unique: String,
    /// Conversions (as shown).
    pub conversions: String,
    /// Revenue text (per currency).
    pub revenue: String,
}

/// A top table (by link, affiliate, src or country).
#[derive(Debug, Clone)]
pub struct TopTable {
    /// Heading.
    pub title: &'static str,
    /// Rows, most clicks first.
    pub rows: Vec<TopRow>,
}

/// KPI tiles and the series for a range, optionally filtered (the portal
/// filters by its affiliate; item pages by their link, affiliate or program).
///
/// # Errors
/// Store errors, or a range the engine refuses.
pub async fn overview(
    store: &dyn Store,
    range: &Range,
    filters: &[(Dimension, String)],
) -> anyhow::Result<(Vec<Kpi>, Series)> {
    // Hours for a range of up to two days, days beyond.
    let grain = if range.days() < 2 {
        TimeGrain::Hour
    } else {
        TimeGrain::Day
    };
    let q = range.query(vec![Dimension::Time(grain)], filters)?;
    let buckets = q.buckets.clone().unwrap_or_default();
    let rows = store.click_report(q).await?;
    let kpis = kpis(&rows);
    let mut series = Series {
        labels: Vec::with_capacity(buckets.len()),
        x: Vec::with_capacity(buckets.len()),
        clicks: vec![0; buckets.len()],
        unique: vec![0; buckets.len()],
        bots: vec![0; buckets.len()],
    };
    for b in &buckets {
        series.labels.push(b.label.clone());
        series.x.push(b.start / 1_000_000);
    }
    for r in &rows {
        let Some(Some(label)) = r.keys.first() else {
            continue;
        };
        if let Some(i) = buckets.iter().position(|b| &b.label == label) {
            series.clicks[i] += r.counts.clicks();
            series.unique[i] += r.counts.unique_clicks;
            series.bots[i] += r.counts.bot_clicks;
        }
    }
    Ok((kpis, series))
}

/// Just the tiles (the live refresh asks for these once a second at most).
///
/// # Errors
/// As [`overview`].
pub async fn tiles(
    store: &dyn Store,
    range: &Range,
    filters: &[(Dimension, String)],
) -> anyhow::Result<Vec<Kpi>> {
    let rows = store.click_report(range.query(vec![], filters)?).await?;
    Ok(kpis(&rows))
}

/// The top `n` values of `dim` by human clicks.
///
/// # Errors
/// As [`overview`].
pub async fn top(
    store: &dyn Store,
    range: &Range,
    title: &'static str,
    dim: Dimension,
    filters: &[(Dimension, String)],
    n: usize,
) -> anyhow::Result<TopTable> {
    let mut rows = store.click_report(range.query(vec![dim], filters)?).await?;
    // Stable: ties keep the engine's (value) order.
    rows.sort_by_key(|r| std::cmp::Reverse(r.counts.clicks()));
    let rows = rows
        .into_iter()
        .filter(|r| r.counts.gross_clicks > 0 || r.money.conversions > 0)
        .take(n)
        .map(|r| {
            let v = metric_values(&r.counts, &r.money);
            TopRow {
                key: r
                    .keys
                    .first()
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "–".to_owned()),
                clicks: grouped(metric(&v, "clicks")),
                unique: grouped(metric(&v, "unique_clicks")),
                conversions: grouped(metric(&v, "conversions")),
                revenue: if metric(&v, "revenue").is_empty() {
                    "–".to_owned()
                } else {
                    grouped(metric(&v, "revenue"))
                },
            }
        })
        .collect();
    Ok(TopTable { title, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators_but_fractions_do_not() {
        assert_eq!(grouped("3005357"), "3,005,357");
        assert_eq!(
            grouped("5964801.50 USD; 500 JPY"),
            "5,964,801.50 USD; 500 JPY"
        );
        assert_eq!(grouped("0.12345 USD"), "0.12345 USD");
        assert_eq!(grouped("2.04%"), "2.04%");
        assert_eq!(grouped("–"), "–");
        assert_eq!(grouped("-1234.5"), "-1,234.5");
    }

    #[test]
    fn a_bad_range_falls_back_to_the_last_seven_days_and_says_why() {
        let now = 1_763_726_400_000_000; // 2025-11-21T12:00:00Z
        let r = Range::parse(
            &RangeQuery {
                from: Some("2025-11-30".into()),
                to: Some("2025-11-01".into()),
                tz: Some("Asia/Tokyo".into()),
            },
            now,
        );
        assert_eq!(r.from.to_string(), "2025-11-15");
        assert_eq!(r.to.to_string(), "2025-11-21");
        assert!(r.problem.as_deref().is_some_and(|p| p.contains("after")));
        let r = Range::parse(
            &RangeQuery {
                tz: Some("Mars/Olympus".into()),
                ..RangeQuery::default()
            },
            now,
        );
        assert_eq!(r.tz_name, "UTC");
        assert!(r.problem.is_some());
        let r = Range::parse(&RangeQuery::default(), now);
        assert_eq!(r.days(), 6);
        assert!(r.problem.is_none());
    }
}
