//! Money: integer minor units with an ISO 4217 currency. No floats, anywhere.
//!
//! Minor-unit exponents come from the `iso_currency` crate's ISO 4217 table
//! (JPY 0, USD 2, KWD 3). Amounts arrive as decimal text ("12.34") and are
//! parsed exactly; anything that is not a plain non-negative decimal with at
//! most the currency's number of fraction digits is refused.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest accepted amount in minor units (10^15: a quadrillion cents), far
/// below `i64::MAX`, so sums of many amounts cannot overflow.
pub const MAX_MINOR: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency with a defined minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// Why a currency or amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not an ISO 4217 code, or one without a minor unit (XAU, XDR…).
    #[error("unknown currency {0:?} (an ISO 4217 code with a minor unit, like USD, JPY, KWD)")]
    UnknownCurrency(String),
    /// Not a plain non-negative decimal number.
    #[error("amount {0:?} is not a plain decimal number like 12.34")]
    NotDecimal(String),
    /// More fraction digits than the currency has.
    #[error("amount {amount:?} has more than {exponent} decimal places for {currency}")]
    TooPrecise {
        /// The text.
        amount: String,
        /// The currency.
        currency: Currency,
        /// Its exponent.
        exponent: u8,
    },
    /// Larger than [`MAX_MINOR`] minor units.
    #[error("amount {0:?} is too large")]
    TooLarge(String),
    /// Two currencies in one operation.
    #[error("currency mismatch: {0} and {1}")]
    Mismatch(Currency, Currency),
}

impl Currency {
    /// Parses a code (case-insensitive).
    ///
    /// # Errors
    /// [`MoneyError::UnknownCurrency`].
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let upper = code.trim().to_ascii_uppercase();
        let unknown = || MoneyError::UnknownCurrency(code.chars().take(16).collect());
        let c = iso_currency::Currency::from_code(&upper).ok_or_else(unknown)?;
        let exponent = c
            .exponent()
            .and_then(|e| u8::try_from(e).ok())
            .ok_or_else(unknown)?;
        let bytes = upper.as_bytes();
        if bytes.len() != 3 {
            return Err(unknown());
        }
        Ok(Self {
            code: [bytes[0], bytes[1], bytes[2]],
            exponent,
        })
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// Digits after the decimal point (JPY 0, USD 2, KWD 3).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// Parses a decimal amount in this currency into minor units.
    ///
    /// Accepted: `12`, `12.3`, `12.34`, `0.5`, `.5` is not; trailing zeros
    /// past the exponent are accepted when they change nothing (`12.340`).
    ///
    /// # Errors
    /// [`MoneyError::NotDecimal`] for signs, exponents (`1e3`), `NaN`,
    /// separators or anything else; [`MoneyError::TooPrecise`] for `12.345`
    /// in USD; [`MoneyError::TooLarge`] above [`MAX_MINOR`].
    pub fn parse_amount(&self, text: &str) -> Result<i64, MoneyError> {
        let t = text.trim();
        let shown = || t.chars().take(40).collect::<String>();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (t.contains('.') && frac.is_empty()) {
            return Err(MoneyError::NotDecimal(shown()));
        }
        let exp = usize::from(self.exponent);
        let (kept, extra) = frac.split_at(frac.len().min(exp));
        if extra.bytes().any(|b| b != b'0') {
            return Err(MoneyError::TooPrecise {
                amount: shown(),
                currency: *self,
                exponent: self.exponent,
            });
        }
        let int = int.trim_start_matches('0');
        if int.len() > 16 {
            return Err(MoneyError::TooLarge(shown()));
        }
        let mut minor: i64 = 0;
        for b in int
            .bytes()
            .chain(kept.bytes())
            .chain(std::iter::repeat_n(b'0', exp - kept.len()))
        {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(|| MoneyError::TooLarge(shown()))?;
        }
        if minor > MAX_MINOR {
            return Err(MoneyError::TooLarge(shown()));
        }
        Ok(minor)
    }

    /// Formats minor units as a decimal string ("12.34", "-0.05", "1000").
    pub fn format(&self, minor: i64) -> String {
        let exp = u32::from(self.exponent);
        if exp == 0 {
            return minor.to_string();
        }
        let unit = 10i64.pow(exp);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        let unit = unit.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / unit,
            abs % unit,
            width = usize::from(self.exponent)
        )
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: integer minor units and a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (cents for USD, yen for JPY, fils for KWD). Negative for
    /// adjustments.
    pub minor: i64,
    /// Currency.
    pub currency: Currency,
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency.format(self.minor), self.currency)
    }
}

/// An exchange rate: how many units of the target currency one unit of the
/// source currency buys, as exact decimal text ("1.0850", "157.25").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeRate {
    /// The rate × 10^`scale`.
    num: i128,
    /// Decimal places of `num`.
    scale: u32,
}

/// Why a rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exchange rate {0:?} is not a positive decimal with at most 12 decimal places")]
pub struct RateError(pub String);

impl ExchangeRate {
    /// Parses a positive decimal ("1.085", "157.25"), ≤ 12 decimal places.
    ///
    /// # Errors
    /// [`RateError`].
    pub fn parse(text: &str) -> Result<Self, RateError> {
        let t = text.trim();
        let bad = || RateError(t.chars().take(40).collect());
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 12 || int.len() > 12 {
            return Err(bad());
        }
        let num: i128 = format!("{int}{frac}").parse().map_err(|_| bad())?;
        if num == 0 {
            return Err(bad());
        }
        Ok(Self {
            num,
            scale: u32::try_from(frac.len()).map_err(|_| bad())?,
        })
    }

    /// Converts `minor` units of `from` into minor units of `to`, rounded
    /// half to even once.
    ///
    /// # Errors
    /// [`MoneyError::TooLarge`] when the result leaves the accepted range.
    pub fn convert(&self, minor: i64, from: Currency, to: Currency) -> Result<i64, MoneyError> {
        let pow = |e: u32| 10i128.pow(e);
        let n = i128::from(minor) * self.num * pow(u32::from(to.exponent));
        let d = pow(self.scale) * pow(u32::from(from.exponent));
        let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
        let q = match (2 * r).cmp(&d) {
            std::cmp::Ordering::Less => q,
            std::cmp::Ordering::Greater => q + 1,
            std::cmp::Ordering::Equal => q + (q & 1),
        };
        i64::try_from(q)
            .ok()
            .filter(|v| v.abs() <= MAX_MINOR)
            .ok_or_else(|| MoneyError::TooLarge(format!("{minor} {from} converted to {to}")))
    }
}

/// A share in basis points: 1 bp = 0.01%, 10 000 bp = 100%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct BasisPoints(u32);

/// A share above 100%.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} basis points is more than 100% (10000)")]
pub struct BasisPointsError(pub u32);

impl BasisPoints {
    /// 0..=10 000.
    ///
    /// # Errors
    /// [`BasisPointsError`] above 10 000.
    pub fn new(bp: u32) -> Result<Self, BasisPointsError> {
        if bp > 10_000 {
            Err(BasisPointsError(bp))
        } else {
            Ok(Self(bp))
        }
    }

    /// The value.
    pub fn get(self) -> u32 {
        self.0
    }

    /// `minor × bp / 10 000`, rounded half to even (banker's rounding), so
    /// that rounding errors do not drift one way over many conversions.
    pub fn apply(self, minor: i64) -> i64 {
        let n = i128::from(minor) * i128::from(self.0);
        let q = n.div_euclid(10_000);
        let r = n.rem_euclid(10_000);
        let q = match (r * 2).cmp(&10_000) {
            std::cmp::Ordering::Less => q,
            std::cmp::Ordering::Greater => q + 1,
            std::cmp::Ordering::Equal => q + (q & 1),
        };
        // |minor| ≤ MAX_MINOR and bp ≤ 10 000 keep this inside i64.
        i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX })
    }
}

impl TryFrom<u32> for BasisPoints {
    type Error = BasisPointsError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<BasisPoints> for u32 {
    fn from(b: BasisPoints) -> u32 {
        b.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(c: &str) -> Currency {
        Currency::parse(c).unwrap()
    }

    #[test]
    fn exponents_come_from_iso_4217() {
        assert_eq!(cur("JPY").exponent(), 0);
        assert_eq!(cur("usd").exponent(), 2);
        assert_eq!(cur("KWD").exponent(), 3);
        assert!(Currency::parse("XAU").is_err(), "no minor unit");
        assert!(Currency::parse("ABC").is_err());
        assert!(Currency::parse("").is_err());
    }

    #[test]
    fn amounts_parse_exactly_or_not_at_all() {
        let usd = cur("USD");
        assert_eq!(usd.parse_amount("12.34"), Ok(1234));
        assert_eq!(usd.parse_amount("12.3"), Ok(1230));
        assert_eq!(usd.parse_amount("12"), Ok(1200));
        assert_eq!(usd.parse_amount("0.05"), Ok(5));
        assert_eq!(usd.parse_amount("12.340"), Ok(1234));
        assert_eq!(cur("JPY").parse_amount("1500"), Ok(1500));
        assert_eq!(cur("KWD").parse_amount("1.234"), Ok(1234));
        for bad in [
            "1e3", "-5", "+5", "NaN", "inf", "1,000", "12.", ".5", "", " ", "0x10", "1 000", "１２",
        ] {
            assert!(
                matches!(usd.parse_amount(bad), Err(MoneyError::NotDecimal(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            usd.parse_amount("12.345"),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            cur("JPY").parse_amount("10.5"),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            usd.parse_amount("1234567890123456789012345678901234567890"),
            Err(MoneyError::TooLarge(_))
        ));
        assert!(matches!(
            usd.parse_amount("10000000000000.01"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn half_even_rounding() {
        let bp = BasisPoints::new(1000).unwrap(); // 10%
        assert_eq!(bp.apply(125), 12); // 12.5 -> 12 (even)
        assert_eq!(bp.apply(135), 14); // 13.5 -> 14 (even)
        assert_eq!(bp.apply(126), 13); // 12.6 -> 13
        assert_eq!(bp.apply(-125), -12);
        assert_eq!(
            BasisPoints::new(10_000).unwrap().apply(MAX_MINOR),
            MAX_MINOR
        );
        assert!(BasisPoints::new(10_001).is_err());
    }

    #[test]
    fn exchange_rates_convert_exactly_once() {
        let r = ExchangeRate::parse("1.0850").unwrap();
        // 10.00 EUR -> 10.85 USD
        assert_eq!(r.convert(1000, cur("EUR"), cur("USD")), Ok(1085));
        // 1,000 JPY at 0.0064 USD/JPY -> 6.40 USD
        let jpy = ExchangeRate::parse("0.0064").unwrap();
        assert_eq!(jpy.convert(1000, cur("JPY"), cur("USD")), Ok(640));
        // 0.125 KWD at 100 JPY/KWD is 12.5 JPY -> 12 (half to even)
        let one = ExchangeRate::parse("100").unwrap();
        assert_eq!(one.convert(125, cur("KWD"), cur("JPY")), Ok(12));
        for bad in ["0", "-1", "1e3", "abc", "1.0000000000001", ""] {
            assert!(ExchangeRate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(cur("USD").format(1234), "12.34");
        assert_eq!(cur("USD").format(-5), "-0.05");
        assert_eq!(cur("JPY").format(1500), "1500");
        assert_eq!(cur("KWD").format(1), "0.001");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(minor in 0i64..MAX_MINOR, c in prop::sample::select(vec!["USD", "JPY", "KWD", "EUR"])) {
            let c = cur(c);
            prop_assert_eq!(c.parse_amount(&c.format(minor)), Ok(minor));
        }

        #[test]
        fn rounding_is_within_half_a_unit(minor in -MAX_MINOR..MAX_MINOR, bp in 0u32..=10_000) {
            let exact = i128::from(minor) * i128::from(bp);
            let got = i128::from(BasisPoints::new(bp).unwrap().apply(minor)) * 10_000;
            prop_assert!((got - exact).abs() <= 5_000);
        }
    }
}
