//! clickward-core: the vocabulary and rules of the tracker, with no I/O and no async.
//!
//! # Layout
//! - [`id`]: identifiers that enter from outside (`LinkCode`, `Slug`) and the
//!   [`ClickId`](id::ClickId) (a ULID).
//! - [`link`]: programs, affiliates and tracking links; the destination template
//!   with its macros and UTM defaults, compiled once and expanded per click.
//! - [`click`]: the click record, its classification (bot reasons, device type)
//!   and the tracking parameters read from a request (`src`, `sub1..sub5`).
//! - [`dedup`]: when a human click is unique.
//! - [`event`] and [`delivery`]: the outbox's event catalogue, and the rules
//!   of sending events out (filters, retry schedule, postback templates).
//! - [`fraud`]: rules with actions, their scopes, click and conversion
//!   verdicts with their sentences, cap claims.
//! - [`report`]: report dimensions, metrics and time buckets in an IANA time zone.
//!
//! # Invariants
//! - Timestamps are UTC microseconds since the Unix epoch ([`Micros`]).
//! - Everything here is deterministic given its inputs: the clock, randomness and
//!   secrets are passed in by the caller.

pub mod attribution;
pub mod click;
pub mod commission;
pub mod conversion;
pub mod dedup;
pub mod delivery;
pub mod event;
pub mod fraud;
pub mod id;
pub mod link;
pub mod money;
pub mod program;
pub mod report;
pub mod schema;

/// A UTC timestamp in microseconds since the Unix epoch.
pub type Micros = i64;

/// Microseconds in one second.
pub const MICROS_PER_SEC: i64 = 1_000_000;
/// Microseconds in one UTC day (86 400 s; UTC days have no leap seconds in Unix time).
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// The UTC day number (days since 1970-01-01) of a timestamp; negative before 1970.
pub fn utc_day(ts: Micros) -> i64 {
    ts.div_euclid(MICROS_PER_DAY)
}

/// Truncates `s` to at most `max` bytes without splitting a UTF-8 character.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Text from visitors and senders as it is stored, the same on every store:
/// control characters (NUL, C0, DEL, C1; `char::is_control`) removed, then
/// cut to `max` bytes on a character boundary. PostgreSQL refuses NUL in
/// text and spreadsheets and terminals act on the others, so they never get
/// past the edge.
pub fn clean_text(s: &str, max: usize) -> String {
    truncate_utf8(&without_controls(s), max).to_owned()
}

/// `s` without control characters (`char::is_control`), borrowed when it
/// has none.
fn without_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// A text cell as a spreadsheet opens it harmlessly (OWASP, "CSV
/// Injection"): control characters removed, and a value that starts with
/// `=`, `+`, `-`, `@`, a tab or a carriage return (which Excel, LibreOffice
/// and Google Sheets read as a formula) prefixed with `'`, which they show
/// as text. For cells of text that came from outside (sub-ids, referrers,
/// names, keys); numbers clickward writes itself are left as they are.
pub fn spreadsheet_text(s: &str) -> std::borrow::Cow<'_, str> {
    let risky = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let cleaned = without_controls(s);
    if risky {
        format!("'{cleaned}").into()
    } else {
        cleaned
    }
}

/// Parses a timestamp as imports and conversion reports give it into UTC µs:
/// RFC 3339 (`2026-11-20T14:59:59Z`, any offset), `YYYY-MM-DD HH:MM:SS`
/// (UTC), or Unix seconds (milliseconds from 1e12 on).
///
/// # Errors
/// A message quoting the value.
pub fn parse_timestamp(s: &str) -> Result<Micros, String> {
    let s = s.trim();
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_microsecond());
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        let z = dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| format!("timestamp {s:?}: {e}"))?;
        return Ok(z.timestamp().as_microsecond());
    }
    if let Ok(n) = s.parse::<i64>() {
        // Anything past 1e12 is milliseconds (1e12 s is the year 33658).
        return if n.abs() >= 1_000_000_000_000 {
            n.checked_mul(1000)
        } else {
            n.checked_mul(MICROS_PER_SEC)
        }
        .ok_or_else(|| format!("timestamp {s:?} out of range"));
    }
    Err(format!(
        "timestamp {s:?} is not RFC 3339, \"YYYY-MM-DD HH:MM:SS\" or Unix seconds"
    ))
}

/// Parses "24h", "50ms", "1h 30m" or "PT24H" into a non-negative duration.
/// Days and weeks are fixed lengths (24 h, 7 × 24 h): windows are measured
/// in elapsed time, not calendar days.
///
/// # Errors
/// A message naming the text.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad =
        |e: jiff::Error| format!("{s:?} is not a duration like \"30d\", \"24h\" or \"50ms\": {e}");
    let span: jiff::Span = s.trim().parse().map_err(bad)?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(bad)?;
    std::time::Duration::try_from(d).map_err(|_| format!("duration {s:?} is negative"))
}

/// A UTC timestamp as people read it: `2026-12-02 07:40:20 UTC` (the µs
/// number itself when out of range).
pub fn utc_text(us: Micros) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_day_splits_at_midnight() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(MICROS_PER_DAY - 1), 0);
        assert_eq!(utc_day(MICROS_PER_DAY), 1);
        assert_eq!(utc_day(-1), -1);
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("日本語", 4), "日");
        assert_eq!(truncate_utf8("日本語", 6), "日本");
    }

    #[test]
    fn timestamps_in_common_shapes() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Ok(MICROS_PER_SEC));
        assert_eq!(
            parse_timestamp("1970-01-01T09:00:01+09:00"),
            Ok(MICROS_PER_SEC)
        );
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:02"),
            Ok(2 * MICROS_PER_SEC)
        );
        assert_eq!(parse_timestamp("3"), Ok(3 * MICROS_PER_SEC));
        assert_eq!(parse_timestamp("1700000000123"), Ok(1_700_000_000_123_000));
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("99999999999999999999").is_err());
    }

    #[test]
    fn clean_text_removes_control_characters_then_cuts() {
        assert_eq!(clean_text("a\0b\u{7f}c\u{9b}d\te", 100), "abcde");
        assert_eq!(clean_text("plain", 3), "pla");
        assert_eq!(clean_text("\0\0", 10), "");
        assert_eq!(clean_text("日本\0語", 6), "日本");
    }

    #[test]
    fn spreadsheet_text_defuses_formulas() {
        assert_eq!(spreadsheet_text("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_text("+1+1,cmd"), "'+1+1,cmd");
        assert_eq!(spreadsheet_text("-2"), "'-2");
        assert_eq!(spreadsheet_text("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_text("\tx"), "'x");
        assert_eq!(spreadsheet_text("a\0b"), "ab");
        assert_eq!(spreadsheet_text("qiita"), "qiita");
    }
}
