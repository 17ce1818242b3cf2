//! Attribution: which click earns a conversion, and whether it still may.
//!
//! An explicit click id beats the first-party cookie (the merchant's server
//! knows which click it is reporting; a cookie may be stale or shared). The
//! click must belong to the conversion's program and lie inside the program's
//! attribution window before the conversion; a conversion cannot precede its
//! click (a minute of clock skew between servers is tolerated).

use crate::{MICROS_PER_SEC, Micros};

/// Clock skew tolerated between the tracker and the merchant's server.
pub const SKEW_TOLERANCE: Micros = 60 * MICROS_PER_SEC;

/// How a click was found for a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Sent explicitly (postback or API).
    ClickId,
    /// Read from the first-party attribution cookie.
    Cookie,
}

/// Why a click cannot earn a conversion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributionError {
    /// Older than the window.
    #[error(
        "the click is {age_s} s older than the conversion; the program's attribution window is {window_s} s"
    )]
    OutsideWindow {
        /// Click to conversion, seconds.
        age_s: i64,
        /// Window, seconds.
        window_s: i64,
    },
    /// The conversion happened before the click.
    #[error("the conversion is dated {0} s before its click")]
    BeforeClick(i64),
}

/// Checks the window and returns the click-to-conversion time (CTIT), µs
/// (0 when within the skew tolerance before the click).
///
/// # Errors
/// [`AttributionError`].
pub fn ctit(
    click_ts: Micros,
    conversion_ts: Micros,
    window: Micros,
) -> Result<Micros, AttributionError> {
    let d = conversion_ts.saturating_sub(click_ts);
    if d < -SKEW_TOLERANCE {
        return Err(AttributionError::BeforeClick(-d / MICROS_PER_SEC));
    }
    if d > window {
        return Err(AttributionError::OutsideWindow {
            age_s: d / MICROS_PER_SEC,
            window_s: window / MICROS_PER_SEC,
        });
    }
    Ok(d.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * MICROS_PER_SEC;

    #[test]
    fn window_edges() {
        assert_eq!(
            ctit(0, 5 * MICROS_PER_SEC, 30 * DAY),
            Ok(5 * MICROS_PER_SEC)
        );
        assert_eq!(ctit(0, 30 * DAY, 30 * DAY), Ok(30 * DAY));
        assert!(matches!(
            ctit(0, 30 * DAY + 1, 30 * DAY),
            Err(AttributionError::OutsideWindow { .. })
        ));
        assert_eq!(ctit(100 * MICROS_PER_SEC, 50 * MICROS_PER_SEC, DAY), Ok(0));
        assert!(matches!(
            ctit(DAY, 0, 30 * DAY),
            Err(AttributionError::BeforeClick(86_400))
        ));
    }
}
