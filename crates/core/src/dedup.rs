//! When a human click is unique.
//!
//! Rule: a human click is unique when the same visitor has no *unique* click
//! on the same link in the `window` before it (default 24 h, rolling). So a
//! visitor who taps twice, or a hundred times, within the window counts once,
//! and counts again once the window since their last unique click has passed.
//! Measuring from the last unique click (not the last click) keeps a visitor
//! who clicks every hour from never counting again.
//!
//! The visitor key is salted per UTC day, so a visitor's key changes at
//! midnight UTC. To keep a double tap across midnight from counting twice, the
//! decision looks up the visitor's keys under every salt still inside the
//! window ([`salt_days`]).

use crate::{MICROS_PER_DAY, Micros, utc_day};

/// `true` when a human click at `ts` is unique, given the time of the
/// visitor's last unique click on the link (any key), if any.
pub fn is_unique(ts: Micros, last_unique: Option<Micros>, window: Micros) -> bool {
    match last_unique {
        None => true,
        // A clock step backwards (or an import out of order) must not make a
        // second unique: anything at or after `last - window` is inside.
        Some(last) => ts.saturating_sub(last) >= window || ts < last.saturating_sub(window),
    }
}

/// The UTC days whose salts can hold a previous key of a visitor clicking at
/// `ts`, newest first: the click's own day and every earlier day that
/// overlaps `[ts - window, ts]`.
pub fn salt_days(ts: Micros, window: Micros) -> impl Iterator<Item = i64> {
    let today = utc_day(ts);
    let first = utc_day(ts.saturating_sub(window.max(0)));
    (first..=today).rev()
}

/// How many daily salts must be kept so that [`salt_days`] always finds them:
/// the window in whole days, rounded up, plus today.
pub fn salts_to_keep(window: Micros) -> usize {
    let days = (window.max(0) + MICROS_PER_DAY - 1) / MICROS_PER_DAY;
    usize::try_from(days)
        .unwrap_or(usize::MAX)
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MICROS_PER_SEC;

    const H: i64 = 3600 * MICROS_PER_SEC;

    #[test]
    fn double_tap_counts_once() {
        let w = 24 * H;
        assert!(is_unique(100 * H, None, w));
        assert!(!is_unique(100 * H + 2 * MICROS_PER_SEC, Some(100 * H), w));
        assert!(!is_unique(100 * H + 24 * H - 1, Some(100 * H), w));
        assert!(is_unique(100 * H + 24 * H, Some(100 * H), w));
    }

    #[test]
    fn clock_going_back_does_not_make_a_second_unique() {
        let w = 24 * H;
        assert!(!is_unique(100 * H - 5 * MICROS_PER_SEC, Some(100 * H), w));
        assert!(is_unique(100 * H - 25 * H, Some(100 * H), w));
    }

    #[test]
    fn salt_days_cover_midnight() {
        let w = 24 * H;
        let just_after_midnight = 10 * MICROS_PER_DAY + MICROS_PER_SEC;
        assert_eq!(
            salt_days(just_after_midnight, w).collect::<Vec<_>>(),
            vec![10, 9]
        );
        assert_eq!(salts_to_keep(w), 2);
        assert_eq!(salts_to_keep(36 * H), 3);
        assert_eq!(salts_to_keep(0), 1);
    }
}
