//! Reports as the CLI, the API and the dashboard ask for them: the arguments
//! ([`ReportArgs`]), the query they plan, and the output: rows and totals
//! rendered as a table, CSV, JSON or NDJSON,
//! a chunk at a time, so a large report streams to the HTTP client (or to
//! stdout) instead of being built as one string first.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use clickward_core::money::Currency;
use clickward_core::report::{self, ClickCounts, Dimension};
use clickward_store::{ConversionTotals, ReportQuery, ReportRow, Store};
use jiff::tz::TimeZone;

/// Rows per chunk: big enough that a chunk is a few tens of KB.
const ROWS_PER_CHUNK: usize = 512;

/// Report columns after the dimensions (docs/metrics.md is the glossary).
///
/// `revenue`, `payout` and `epc` are per currency ("12.34 USD; 500 JPY").
/// `cr` = conversions / unique_clicks, `epc` = payout / unique_clicks, each
/// rounded half to even (to 0.01% and to the currency's minor unit); empty
/// when there are no unique clicks.
const METRICS: [&str; 11] = [
    "gross_clicks",
    "bot_clicks",
    "invalid_clicks",
    "clicks",
    "unique_clicks",
    "duplicate_clicks",
    "conversions",
    "revenue",
    "payout",
    "cr",
    "epc",
];

/// The value of metric `name` (one of the report's columns) in a row of
/// [`metric_values`]; "" for a name that is not one.
pub(crate) fn metric<'a>(values: &'a [String], name: &str) -> &'a str {
    METRICS
        .iter()
        .position(|m| *m == name)
        .and_then(|i| values.get(i))
        .map_or("", String::as_str)
}

/// `n / d` rounded half to even, for non-negative `n` and positive `d`.
pub(crate) fn div_half_even(n: i128, d: i128) -> i128 {
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

fn money_text(m: &BTreeMap<String, i64>) -> String {
    m.iter()
        .map(|(c, v)| match Currency::parse(c) {
            Ok(cur) => format!("{} {c}", cur.format(*v)),
            Err(_) => format!("{v} {c}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn metric_values(c: &ClickCounts, m: &ConversionTotals) -> [String; 11] {
    let unique = i128::from(c.unique_clicks);
    let cr = if unique > 0 {
        let bp = div_half_even(i128::from(m.conversions) * 10_000, unique);
        format!("{}.{:02}%", bp / 100, bp % 100)
    } else {
        String::new()
    };
    let epc = if unique > 0 {
        money_text(
            &m.payout
                .iter()
                .map(|(cur, v)| {
                    let per = div_half_even(i128::from(*v), unique);
                    (cur.clone(), i64::try_from(per).unwrap_or(i64::MAX))
                })
                .collect(),
        )
    } else {
        String::new()
    };
    [
        c.gross_clicks.to_string(),
        c.bot_clicks.to_string(),
        c.invalid_clicks.to_string(),
        c.clicks().to_string(),
        c.unique_clicks.to_string(),
        c.duplicate_clicks().to_string(),
        m.conversions.to_string(),
        money_text(&m.revenue),
        money_text(&m.payout),
        cr,
        epc,
    ]
}

pub(crate) fn totals_of(rows: &[ReportRow]) -> (ClickCounts, ConversionTotals) {
    let mut total = ClickCounts::default();
    let mut total_money = ConversionTotals::default();
    for r in rows {
        total.add(&r.counts);
        total_money.add(&r.money);
    }
    (total, total_money)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Rows,
    Tail,
    Done,
}

/// A rendered report: an iterator of text chunks that concatenate to the
/// whole document (CSV header and rows; JSON `{"rows": [...], "totals": {}}`;
/// NDJSON rows then a `{"totals": {}}` line; an aligned table in one chunk,
/// since its column widths depend on every row).
pub struct ReportOutput {
    names: Vec<String>,
    rows: std::vec::IntoIter<ReportRow>,
    totals: (ClickCounts, ConversionTotals),
    format: Format,
    stage: Stage,
    first: bool,
}

impl ReportOutput {
    /// `names` are the dimension columns; `totals` cover every row of the
    /// report, also those a limit or offset left out of `rows`.
    pub fn new(
        names: Vec<String>,
        rows: Vec<ReportRow>,
        totals: (ClickCounts, ConversionTotals),
        format: Format,
    ) -> Self {
        Self {
            names,
            rows: rows.into_iter(),
            totals,
            format,
            stage: Stage::Head,
            first: true,
        }
    }

    fn json_obj(&self, keys: &[Option<String>], c: &ClickCounts, m: &ConversionTotals) -> String {
        let mut o = serde_json::Map::new();
        for (n, k) in self.names.iter().zip(keys) {
            o.insert(n.clone(), serde_json::json!(k));
        }
        for (n, v) in METRICS.iter().zip(metric_values(c, m)) {
            o.insert((*n).to_owned(), serde_json::json!(v));
        }
        o.insert("gross_clicks".into(), serde_json::json!(c.gross_clicks));
        o.insert("bot_clicks".into(), serde_json::json!(c.bot_clicks));
        o.insert("invalid_clicks".into(), serde_json::json!(c.invalid_clicks));
        o.insert("clicks".into(), serde_json::json!(c.clicks()));
        o.insert("unique_clicks".into(), serde_json::json!(c.unique_clicks));
        o.insert(
            "duplicate_clicks".into(),
            serde_json::json!(c.duplicate_clicks()),
        );
        o.insert("conversions".into(), serde_json::json!(m.conversions));
        o.insert("revenue_minor".into(), serde_json::json!(m.revenue));
        o.insert("payout_minor".into(), serde_json::json!(m.payout));
        serde_json::Value::Object(o).to_string()
    }

    fn row_text(&mut self, r: &ReportRow, out: &mut String) {
        match self.format {
            Format::Json => {
                out.push_str(if self.first { "\n" } else { ",\n" });
                out.push_str(&self.json_obj(&r.keys, &r.counts, &r.money));
            }
            Format::Ndjson => {
                out.push_str(&self.json_obj(&r.keys, &r.counts, &r.money));
                out.push('\n');
            }
            Format::Csv => {
                let key = |k: &Option<String>| k.clone().unwrap_or_else(|| "-".to_owned());
                // Dimension values came from visitors (src, sub-ids, referrer
                // hosts): defused for spreadsheets.
                let mut cells: Vec<String> = r
                    .keys
                    .iter()
                    .map(|k| csv_cell(&clickward_core::spreadsheet_text(&key(k))))
                    .collect();
                cells.extend(
                    metric_values(&r.counts, &r.money)
                        .iter()
                        .map(|v| csv_cell(v)),
                );
                out.push_str(&cells.join(","));
                out.push('\n');
            }
            Format::Table => {}
        }
        self.first = false;
    }

    fn table(&mut self) -> String {
        let names = &self.names;
        let key = |k: &Option<String>| k.clone().unwrap_or_else(|| "-".to_owned());
        let mut table: Vec<Vec<String>> = Vec::new();
        table.push(
            names
                .iter()
                .cloned()
                .chain(METRICS.iter().map(|m| (*m).to_owned()))
                .collect(),
        );
        for r in self.rows.by_ref() {
            let mut line: Vec<String> = r.keys.iter().map(key).collect();
            line.extend(metric_values(&r.counts, &r.money));
            table.push(line);
        }
        let mut tot: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, _)| {
                if i == 0 {
                    "total".to_owned()
                } else {
                    String::new()
                }
            })
            .collect();
        tot.extend(metric_values(&self.totals.0, &self.totals.1));
        table.push(tot);
        let cols = table.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                table
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (i, row) in table.iter().enumerate() {
            if i == table.len() - 1 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(rule.join("  ").trim_end());
                out.push('\n');
            }
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    let pad = widths[c].saturating_sub(s.chars().count());
                    if c >= names.len() {
                        format!("{}{s}", " ".repeat(pad))
                    } else {
                        format!("{s}{}", " ".repeat(pad))
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

impl Iterator for ReportOutput {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        match self.stage {
            Stage::Head => {
                self.stage = Stage::Rows;
                Some(match self.format {
                    Format::Table => {
                        self.stage = Stage::Done;
                        self.table()
                    }
                    Format::Csv => {
                        let header: Vec<&str> = self
                            .names
                            .iter()
                            .map(String::as_str)
                            .chain(METRICS)
                            .collect();
                        format!("{}\n", header.join(","))
                    }
                    Format::Json => "{\"rows\": [".to_owned(),
                    Format::Ndjson => String::new(),
                })
            }
            Stage::Rows => {
                let mut out = String::new();
                let mut n = 0;
                while n < ROWS_PER_CHUNK {
                    let Some(r) = self.rows.next() else { break };
                    self.row_text(&r, &mut out);
                    n += 1;
                }
                if n < ROWS_PER_CHUNK {
                    self.stage = Stage::Tail;
                }
                Some(out)
            }
            Stage::Tail => {
                self.stage = Stage::Done;
                let (c, m) = self.totals.clone();
                Some(match self.format {
                    Format::Json => {
                        let totals = self.json_obj(&[], &c, &m);
                        let open = if self.first { "" } else { "\n" };
                        format!("{open}],\n\"totals\": {totals}}}\n")
                    }
                    Format::Ndjson => format!("{{\"totals\": {}}}\n", self.json_obj(&[], &c, &m)),
                    Format::Csv | Format::Table => String::new(),
                })
            }
            Stage::Done => None,
        }
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Parses a `KEY=VALUE` command-line argument (`--filter`, `--utm`).
///
/// # Errors
/// When there is no `=`.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Output format of `clickward report`.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON document.
    Json,
    /// One JSON object per line (rows, then a `"totals"` line).
    Ndjson,
}

/// Which time puts a conversion in a time bucket.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum TimeBasis {
    /// When the conversion occurred (default).
    #[default]
    Conversion,
    /// When its click happened.
    Click,
}

/// `clickward report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// First local date, YYYY-MM-DD (default: today in --tz).
    #[arg(long)]
    pub from: Option<jiff::civil::Date>,
    /// Last local date, inclusive (default: --from).
    #[arg(long)]
    pub to: Option<jiff::civil::Date>,
    /// IANA time zone the dates and days are in.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Group by (every dimension's name, the list an unknown one names too).
    #[arg(
        long,
        default_value = "day",
        help = format!("Group by, comma separated: {}", clickward_core::report::DIMENSION_NAMES)
    )]
    pub by: String,
    /// Only clicks with this value, e.g. --filter link=solare (repeatable;
    /// any dimension but the time ones).
    #[arg(long = "filter", value_parser = parse_kv)]
    pub filters: Vec<(String, String)>,
    /// Bucket conversions by their own time or their click's.
    #[arg(long, value_enum, default_value_t)]
    pub time_basis: TimeBasis,
    /// Sort rows by a count column (gross_clicks, bot_clicks, invalid_clicks, clicks,
    /// unique_clicks, duplicate_clicks, conversions); prefix `-` for
    /// descending. Default: by the dimensions.
    #[arg(long, allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// At most this many rows (after --offset). Totals cover every row.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip this many rows.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Builds the report query for `args`.
///
/// # Errors
/// Unknown time zone or dimension, two time dimensions, bad range.
pub fn report_query(
    args: &ReportArgs,
    today: jiff::Timestamp,
) -> anyhow::Result<(ReportQuery, TimeZone)> {
    let tz = TimeZone::get(&args.tz).with_context(|| format!("unknown time zone {:?}", args.tz))?;
    let from = args
        .from
        .unwrap_or_else(|| today.to_zoned(tz.clone()).date());
    let to = args.to.unwrap_or(from);
    let dims = args
        .by
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse::<Dimension>)
        .collect::<Result<Vec<_>, _>>()?;
    let grains: Vec<_> = dims
        .iter()
        .filter_map(|d| match d {
            Dimension::Time(g) => Some(*g),
            _ => None,
        })
        .collect();
    if grains.len() > 1 {
        bail!("--by may name one of hour, day, week, month");
    }
    let filters = args
        .filters
        .iter()
        .map(|(k, v)| {
            let d: Dimension = k.parse()?;
            anyhow::ensure!(
                !matches!(d, Dimension::Time(_)),
                "--filter {k}: filter time with --from/--to"
            );
            Ok((d, v.clone()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (start, end) = report::date_range(from, to, &tz)?;
    let buckets = match grains.first() {
        Some(g) => Some(report::buckets(from, to, &tz, *g)?),
        None => None,
    };
    Ok((
        ReportQuery {
            start,
            end,
            buckets,
            dims,
            filters,
            raw_only: false,
            by_click_time: false,
        },
        tz,
    ))
}

/// The report as text in the chosen format.
///
/// # Errors
/// Query or store errors.
pub async fn report_text(store: &dyn Store, args: &ReportArgs) -> anyhow::Result<ReportOutput> {
    report_text_at(store, args, jiff::Timestamp::now()).await
}

/// [`report_text`] with "today" taken from `now`.
///
/// # Errors
/// Query or store errors.
pub async fn report_text_at(
    store: &dyn Store,
    args: &ReportArgs,
    now: jiff::Timestamp,
) -> anyhow::Result<ReportOutput> {
    let (mut q, _tz) = report_query(args, now)?;
    q.by_click_time = args.time_basis == TimeBasis::Click;
    let names: Vec<String> = q.dims.iter().map(ToString::to_string).collect();
    let mut rows = store.click_report(q).await?;
    let totals = totals_of(&rows);
    if let Some(sort) = &args.sort {
        let (desc, col) = sort
            .strip_prefix('-')
            .map_or((false, sort.as_str()), |c| (true, c));
        let key = |r: &ReportRow| -> anyhow::Result<i64> {
            let c = &r.counts;
            Ok(match col {
                "gross_clicks" => c.gross_clicks,
                "bot_clicks" => c.bot_clicks,
                "invalid_clicks" => c.invalid_clicks,
                "clicks" => c.clicks(),
                "unique_clicks" => c.unique_clicks,
                "duplicate_clicks" => c.duplicate_clicks(),
                "conversions" => r.money.conversions,
                other => bail!(
                    "--sort {other}: sort by gross_clicks, bot_clicks, invalid_clicks, clicks, unique_clicks, duplicate_clicks or conversions"
                ),
            })
        };
        key(&ReportRow {
            keys: vec![],
            counts: ClickCounts::default(),
            money: ConversionTotals::default(),
        })?;
        // Stable: ties keep the dimension order.
        rows.sort_by_key(|r| {
            let k = key(r).unwrap_or(0);
            if desc { -k } else { k }
        });
    }
    let rows: Vec<ReportRow> = rows
        .into_iter()
        .skip(args.offset)
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();
    Ok(ReportOutput::new(names, rows, totals, args.format))
}
