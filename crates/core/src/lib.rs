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
pub mod id;
pub mod link;
pub mod money;
pub mod program;
pub mod report;

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
}
