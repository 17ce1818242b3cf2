//! Report shapes: dimensions, metrics and time buckets.
//!
//! Time buckets are computed here, in the report's IANA time zone, as exact
//! UTC `[start, end)` intervals; the store counts clicks inside each interval.
//! A day is therefore 23 or 25 hours on DST change days, and +05:30 or +05:45
//! zones cut days at their own midnight.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::Serialize;

use crate::Micros;

/// Size of a time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeGrain {
    /// One local hour (labelled with its local start and offset).
    Hour,
    /// One local calendar day.
    Day,
    /// One ISO week, Monday to Sunday, labelled by its Monday.
    Week,
    /// One calendar month, labelled `YYYY-MM`.
    Month,
}

/// A column a report can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// A time bucket.
    Time(TimeGrain),
    /// Link code.
    Link,
    /// Program slug.
    Program,
    /// Affiliate slug.
    Affiliate,
    /// Placement.
    Src,
    /// `sub1`..`sub5` (index 0..=4).
    Sub(usize),
    /// Country code.
    Country,
    /// Region (first-level subdivision) name, from GeoIP.
    Region,
    /// City name, from GeoIP.
    City,
    /// Device type.
    Device,
    /// Browser family.
    Browser,
    /// OS family.
    Os,
    /// Host of the referrer.
    ReferrerHost,
    /// What the fraud rules did (`flag`, `reject`, `block`, `hold`; none for
    /// a clean click or conversion). Read from raw rows.
    Verdict,
    /// The fraud rule that decided. Read from raw rows.
    Rule,
}

/// Every dimension's name, as `--by`, `group_by` and filters take them.
pub const DIMENSION_NAMES: &str = "hour day week month link program affiliate src sub1..sub5 country region city device browser os referrer_host verdict rule";

/// A group-by name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dimension {0:?}; known: {DIMENSION_NAMES}")]
pub struct DimensionError(pub String);

impl FromStr for Dimension {
    type Err = DimensionError;
    fn from_str(s: &str) -> Result<Self, DimensionError> {
        Ok(match s.trim() {
            "hour" => Dimension::Time(TimeGrain::Hour),
            "day" => Dimension::Time(TimeGrain::Day),
            "week" => Dimension::Time(TimeGrain::Week),
            "month" => Dimension::Time(TimeGrain::Month),
            "link" => Dimension::Link,
            "program" => Dimension::Program,
            "affiliate" => Dimension::Affiliate,
            "src" => Dimension::Src,
            "sub1" => Dimension::Sub(0),
            "sub2" => Dimension::Sub(1),
            "sub3" => Dimension::Sub(2),
            "sub4" => Dimension::Sub(3),
            "sub5" => Dimension::Sub(4),
            "country" => Dimension::Country,
            "region" => Dimension::Region,
            "city" => Dimension::City,
            "device" => Dimension::Device,
            "browser" => Dimension::Browser,
            "os" => Dimension::Os,
            "referrer_host" => Dimension::ReferrerHost,
            "verdict" => Dimension::Verdict,
            "rule" => Dimension::Rule,
            other => return Err(DimensionError(other.to_owned())),
        })
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Dimension::Time(TimeGrain::Hour) => "hour",
            Dimension::Time(TimeGrain::Day) => "day",
            Dimension::Time(TimeGrain::Week) => "week",
            Dimension::Time(TimeGrain::Month) => "month",
            Dimension::Link => "link",
            Dimension::Program => "program",
            Dimension::Affiliate => "affiliate",
            Dimension::Src => "src",
            Dimension::Sub(i) => return write!(f, "sub{}", i + 1),
            Dimension::Country => "country",
            Dimension::Region => "region",
            Dimension::City => "city",
            Dimension::Device => "device",
            Dimension::Browser => "browser",
            Dimension::Os => "os",
            Dimension::ReferrerHost => "referrer_host",
            Dimension::Verdict => "verdict",
            Dimension::Rule => "rule",
        };
        f.write_str(s)
    }
}

/// A time bucket: a label and its exact UTC interval `[start, end)` in µs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Local label: `2026-03-08`, `2026-W10` style Monday date, `2026-03`,
    /// or `2026-03-08T01:00-05:00` for hours.
    pub label: String,
    /// Inclusive start, UTC µs.
    pub start: Micros,
    /// Exclusive end, UTC µs.
    pub end: Micros,
}

/// Why a report range could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// `from` is after `to`.
    #[error("from ({0}) is after to ({1})")]
    Reversed(Date, Date),
    /// The range would make too many buckets.
    #[error("the range makes more than {0} time buckets; use a coarser grain or a shorter range")]
    TooManyBuckets(usize),
    /// jiff could not place a date in the zone (out of range).
    #[error("date out of range: {0}")]
    OutOfRange(String),
}

/// Most buckets one report may ask for (10 years of days, ~1 year of hours).
pub const MAX_BUCKETS: usize = 10_000;

fn micros(z: &Zoned) -> Micros {
    // Timestamps in a report range are far inside i64 µs.
    z.timestamp().as_microsecond()
}

/// The UTC interval covering local dates `from..=to` in `tz`.
///
/// # Errors
/// [`RangeError`] when `from > to` or a date cannot be placed in the zone.
pub fn date_range(from: Date, to: Date, tz: &TimeZone) -> Result<(Micros, Micros), RangeError> {
    if from > to {
        return Err(RangeError::Reversed(from, to));
    }
    let err = |e: jiff::Error| RangeError::OutOfRange(e.to_string());
    let start = from
        .to_zoned(tz.clone())
        .map_err(err)?
        .start_of_day()
        .map_err(err)?;
    let end = to
        .tomorrow()
        .map_err(err)?
        .to_zoned(tz.clone())
        .map_err(err)?
        .start_of_day()
        .map_err(err)?;
    Ok((micros(&start), micros(&end)))
}

/// Splits local dates `from..=to` in `tz` into buckets of `grain`, clipped to
/// the range. Every instant of the range is in exactly one bucket.
///
/// # Errors
/// [`RangeError`] as for [`date_range`], or when more than [`MAX_BUCKETS`]
/// buckets would be made.
pub fn buckets(
    from: Date,
    to: Date,
    tz: &TimeZone,
    grain: TimeGrain,
) -> Result<Vec<Bucket>, RangeError> {
    let (range_start, range_end) = date_range(from, to, tz)?;
    let err = |e: jiff::Error| RangeError::OutOfRange(e.to_string());
    let mut out = Vec::new();
    let mut cur = from
        .to_zoned(tz.clone())
        .map_err(err)?
        .start_of_day()
        .map_err(err)?;
    // Align the first bucket to the grain's natural start (clipped below).
    cur = match grain {
        TimeGrain::Hour | TimeGrain::Day => cur,
        TimeGrain::Week => {
            let back = i64::from(cur.date().weekday().to_monday_zero_offset());
            cur.date()
                .checked_sub(back.days())
                .map_err(err)?
                .to_zoned(tz.clone())
                .map_err(err)?
                .start_of_day()
                .map_err(err)?
        }
        TimeGrain::Month => cur
            .date()
            .first_of_month()
            .to_zoned(tz.clone())
            .map_err(err)?
            .start_of_day()
            .map_err(err)?,
    };
    while micros(&cur) < range_end {
        if out.len() >= MAX_BUCKETS {
            return Err(RangeError::TooManyBuckets(MAX_BUCKETS));
        }
        let next = match grain {
            TimeGrain::Hour => cur.checked_add(1.hour()).map_err(err)?,
            TimeGrain::Day => cur.tomorrow().map_err(err)?.start_of_day().map_err(err)?,
            TimeGrain::Week => cur
                .date()
                .checked_add(7.days())
                .map_err(err)?
                .to_zoned(tz.clone())
                .map_err(err)?
                .start_of_day()
                .map_err(err)?,
            TimeGrain::Month => cur
                .date()
                .checked_add(1.month())
                .map_err(err)?
                .to_zoned(tz.clone())
                .map_err(err)?
                .start_of_day()
                .map_err(err)?,
        };
        let label = match grain {
            TimeGrain::Hour => cur.strftime("%Y-%m-%dT%H:%M%:z").to_string(),
            TimeGrain::Day | TimeGrain::Week => cur.date().to_string(),
            TimeGrain::Month => cur.strftime("%Y-%m").to_string(),
        };
        out.push(Bucket {
            label,
            start: micros(&cur).max(range_start),
            end: micros(&next).min(range_end),
        });
        cur = next;
    }
    Ok(out)
}

/// The local calendar date of a UTC timestamp in `tz`.
pub fn local_date(ts: Micros, tz: &TimeZone) -> Option<Date> {
    Timestamp::from_microsecond(ts)
        .ok()
        .map(|t| t.to_zoned(tz.clone()).date())
}

/// Click counts of one report row (DESIGN.md §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClickCounts {
    /// Every recorded hit on a known link, bots and duplicates included.
    pub gross_clicks: i64,
    /// Hits classified as automated.
    pub bot_clicks: i64,
    /// Hits rejected by a fraud rule.
    pub invalid_clicks: i64,
    /// First human click of a visitor on a link within the dedup window.
    pub unique_clicks: i64,
}

impl ClickCounts {
    /// Human clicks: gross − bot − invalid.
    pub fn clicks(&self) -> i64 {
        self.gross_clicks - self.bot_clicks - self.invalid_clicks
    }

    /// Human clicks that were not unique: clicks − unique.
    pub fn duplicate_clicks(&self) -> i64 {
        self.clicks() - self.unique_clicks
    }

    /// Adds another row's counts.
    pub fn add(&mut self, o: &ClickCounts) {
        self.gross_clicks += o.gross_clicks;
        self.bot_clicks += o.bot_clicks;
        self.invalid_clicks += o.invalid_clicks;
        self.unique_clicks += o.unique_clicks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn tokyo_day_starts_at_15_utc() {
        let b = buckets(
            date(2026, 11, 20),
            date(2026, 11, 21),
            &tz("Asia/Tokyo"),
            TimeGrain::Day,
        )
        .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].label, "2026-11-20");
        let start = Timestamp::from_microsecond(b[0].start).unwrap();
        assert_eq!(start.to_string(), "2026-11-19T15:00:00Z");
        assert_eq!(b[0].end, b[1].start);
    }

    #[test]
    fn dst_days_are_23_and_25_hours() {
        let ny = tz("America/New_York");
        let b = buckets(date(2026, 3, 8), date(2026, 3, 8), &ny, TimeGrain::Day).unwrap();
        assert_eq!(b[0].end - b[0].start, 23 * 3_600_000_000);
        let b = buckets(date(2026, 11, 1), date(2026, 11, 1), &ny, TimeGrain::Day).unwrap();
        assert_eq!(b[0].end - b[0].start, 25 * 3_600_000_000);
        let hours = buckets(date(2026, 11, 1), date(2026, 11, 1), &ny, TimeGrain::Hour).unwrap();
        assert_eq!(hours.len(), 25);
    }

    #[test]
    fn kathmandu_quarter_hour_offset() {
        let b = buckets(
            date(2026, 1, 1),
            date(2026, 1, 1),
            &tz("Asia/Kathmandu"),
            TimeGrain::Day,
        )
        .unwrap();
        let start = Timestamp::from_microsecond(b[0].start).unwrap();
        assert_eq!(start.to_string(), "2025-12-31T18:15:00Z");
    }

    #[test]
    fn weeks_and_months_are_clipped_to_the_range() {
        let utc = TimeZone::UTC;
        let b = buckets(
            date(2026, 11, 18),
            date(2026, 11, 24),
            &utc,
            TimeGrain::Week,
        )
        .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].label, "2026-11-16");
        let (s, e) = date_range(date(2026, 11, 18), date(2026, 11, 24), &utc).unwrap();
        assert_eq!(b[0].start, s);
        assert_eq!(b[1].end, e);
        let m = buckets(date(2026, 1, 31), date(2026, 3, 1), &utc, TimeGrain::Month).unwrap();
        assert_eq!(
            m.iter().map(|b| b.label.as_str()).collect::<Vec<_>>(),
            vec!["2026-01", "2026-02", "2026-03"]
        );
    }

    #[test]
    fn reversed_range_is_an_error() {
        assert!(matches!(
            date_range(date(2026, 2, 1), date(2026, 1, 1), &TimeZone::UTC),
            Err(RangeError::Reversed(..))
        ));
    }
}
