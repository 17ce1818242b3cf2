//! Commission plans: what an affiliate earns for a conversion.
//!
//! A rate is a flat amount (CPA), a revenue share in basis points, or both
//! (hybrid, TUNE's `cpa_both`). A plan has a default rate and per-event rates
//! (lead vs sale). Per-affiliate overrides use the same shape.
//!
//! Resolution, most specific first: the affiliate's rate for the event, the
//! program's rate for the event, the affiliate's default, the program's
//! default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::money::{BasisPoints, Currency, MAX_MINOR};

/// One rate.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rate {
    /// A flat amount per conversion, minor units of the program currency.
    Flat {
        /// Minor units.
        amount: i64,
    },
    /// A share of the sale amount.
    Share {
        /// Basis points of the amount.
        bps: BasisPoints,
    },
    /// Flat plus share.
    Hybrid {
        /// Minor units.
        amount: i64,
        /// Basis points of the amount.
        bps: BasisPoints,
    },
}

/// A plan: a default rate and rates per event name.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommissionPlan {
    /// Rate for events without their own.
    #[serde(default)]
    pub default: Option<Rate>,
    /// Rates by event name (`sale`, `lead`, `signup`, …).
    #[serde(default)]
    pub events: BTreeMap<String, Rate>,
}

/// Why a commission could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommissionError {
    /// A share rate applies but the conversion has no amount.
    #[error("event {0:?} pays a revenue share, so it needs an amount")]
    AmountRequired(String),
    /// Flat amounts outside 0..=MAX_MINOR.
    #[error("flat commission {0} is out of range")]
    FlatOutOfRange(i64),
    /// A rate for a name that no conversion can have (see
    /// [`crate::conversion::parse_event`]: events arrive lower-cased).
    #[error("{0}")]
    BadEvent(String),
}

impl Rate {
    fn check(&self) -> Result<(), CommissionError> {
        match *self {
            Rate::Flat { amount } | Rate::Hybrid { amount, .. }
                if !(0..=MAX_MINOR).contains(&amount) =>
            {
                Err(CommissionError::FlatOutOfRange(amount))
            }
            _ => Ok(()),
        }
    }

    /// The commission for a conversion of `amount` minor units (if any).
    ///
    /// # Errors
    /// [`CommissionError::AmountRequired`] when a share applies and there is
    /// no amount.
    pub fn commission(&self, event: &str, amount: Option<i64>) -> Result<i64, CommissionError> {
        self.check()?;
        let share = |bps: BasisPoints| {
            amount
                .map(|a| bps.apply(a))
                .ok_or_else(|| CommissionError::AmountRequired(event.to_owned()))
        };
        match *self {
            Rate::Flat { amount } => Ok(amount),
            Rate::Share { bps } => share(bps),
            Rate::Hybrid { amount, bps } => Ok(amount + share(bps)?),
        }
    }
}

impl CommissionPlan {
    /// Checks every rate, and that every event it names is one a
    /// conversion can have (a rate for `Lead` would never apply).
    ///
    /// # Errors
    /// The first invalid rate or event name.
    pub fn validate(&self) -> Result<(), CommissionError> {
        for event in self.events.keys() {
            if crate::conversion::parse_event(event).as_deref() != Ok(event.as_str()) {
                return Err(CommissionError::BadEvent(format!(
                    "event {event:?} is not 1-32 characters of a-z 0-9 _ -"
                )));
            }
        }
        self.default
            .iter()
            .chain(self.events.values())
            .try_for_each(Rate::check)
    }
}

/// Percent with at most two decimals (`10`, `2.5`, `12.34`) as basis points.
fn percent_bps(text: &str) -> Result<BasisPoints, String> {
    let bad = || format!("{text:?} is not a percentage like 10% or 2.5%");
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 3 || !digits(int) || !digits(frac) || frac.len() > 2 {
        return Err(bad());
    }
    if text.contains('.') && frac.is_empty() {
        return Err(bad());
    }
    let whole: u32 = int.parse().map_err(|_| bad())?;
    let hundredths: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    BasisPoints::new(whole * 100 + hundredths).map_err(|e| e.to_string())
}

fn percent_text(bps: BasisPoints) -> String {
    let (whole, rest) = (bps.get() / 100, bps.get() % 100);
    match rest {
        0 => format!("{whole}%"),
        r if r % 10 == 0 => format!("{whole}.{}%", r / 10),
        r => format!("{whole}.{r:02}%"),
    }
}

impl Rate {
    /// Parses a rate as people write it in the CLI and the dashboard: `10%`
    /// (a share; at most two decimals, `2.5%` = 250 bps), `2.00` (a flat
    /// amount in major units of `currency`), `2.00+10%` (both, TUNE's
    /// `cpa_both`).
    ///
    /// # Errors
    /// A sentence naming what is wrong: not a number, too precise for the
    /// currency, above 100%, out of range.
    pub fn parse_text(text: &str, currency: Currency) -> Result<Rate, String> {
        let t = text.trim();
        let flat = |a: &str| currency.parse_amount(a.trim()).map_err(|e| e.to_string());
        let rate = match t.split_once('+') {
            Some((a, p)) => {
                let p = p.trim();
                let bps =
                    percent_bps(p.strip_suffix('%').ok_or_else(|| {
                        format!("{t:?}: the part after + is a percentage like 10%")
                    })?)?;
                Rate::Hybrid {
                    amount: flat(a)?,
                    bps,
                }
            }
            None => match t.strip_suffix('%') {
                Some(p) => Rate::Share {
                    bps: percent_bps(p.trim())?,
                },
                None => Rate::Flat { amount: flat(t)? },
            },
        };
        rate.check().map_err(|e| e.to_string())?;
        Ok(rate)
    }

    /// The rate as [`Rate::parse_text`] reads it: `10%`, `2.00`, `2.00+10%`.
    pub fn text(&self, currency: Currency) -> String {
        match *self {
            Rate::Flat { amount } => currency.format(amount),
            Rate::Share { bps } => percent_text(bps),
            Rate::Hybrid { amount, bps } => {
                format!("{}+{}", currency.format(amount), percent_text(bps))
            }
        }
    }
}

impl CommissionPlan {
    /// Parses a plan as people write it: comma-separated `event=rate` pairs
    /// with [`Rate::parse_text`] rates, `default` naming the rate of events
    /// without their own (`default=10%, lead=2.00`); a bare rate is the
    /// default. Empty text is the empty plan (pays nothing).
    ///
    /// # Errors
    /// A sentence naming the pair at fault, or an event named twice.
    pub fn parse_text(text: &str, currency: Currency) -> Result<CommissionPlan, String> {
        let mut plan = CommissionPlan::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (event, rate) = match part.split_once('=') {
                Some((e, r)) => (crate::conversion::parse_event(e)?, r),
                None => ("default".to_owned(), part),
            };
            let event = event.as_str();
            let rate = Rate::parse_text(rate, currency).map_err(|e| format!("{event}: {e}"))?;
            let twice = if event == "default" {
                plan.default.replace(rate).is_some()
            } else {
                plan.events.insert(event.to_owned(), rate).is_some()
            };
            if twice {
                return Err(format!("{event} is given twice"));
            }
        }
        Ok(plan)
    }

    /// The plan as [`CommissionPlan::parse_text`] reads it; empty for the
    /// empty plan.
    pub fn text(&self, currency: Currency) -> String {
        self.default
            .iter()
            .map(|r| format!("default={}", r.text(currency)))
            .chain(
                self.events
                    .iter()
                    .map(|(e, r)| format!("{e}={}", r.text(currency))),
            )
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The rate for `event`: affiliate event, program event, affiliate default,
/// program default; `None` when nothing applies (the conversion earns 0).
pub fn resolve<'a>(
    program: &'a CommissionPlan,
    affiliate: Option<&'a CommissionPlan>,
    event: &str,
) -> Option<&'a Rate> {
    affiliate
        .and_then(|a| a.events.get(event))
        .or_else(|| program.events.get(event))
        .or_else(|| affiliate.and_then(|a| a.default.as_ref()))
        .or(program.default.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bps(v: u32) -> BasisPoints {
        BasisPoints::new(v).unwrap()
    }

    #[test]
    fn plans_read_and_write_as_people_type_them() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        let p = CommissionPlan::parse_text("default=10%, lead=2.00, sale=1.50+2.5%", usd).unwrap();
        assert_eq!(p.default, Some(Rate::Share { bps: bps(1000) }));
        assert_eq!(p.events["lead"], Rate::Flat { amount: 200 });
        assert_eq!(
            p.events["sale"],
            Rate::Hybrid {
                amount: 150,
                bps: bps(250)
            }
        );
        assert_eq!(p.text(usd), "default=10%, lead=2.00, sale=1.50+2.5%");
        assert_eq!(CommissionPlan::parse_text(&p.text(usd), usd).unwrap(), p);
        assert_eq!(
            CommissionPlan::parse_text("12.34%", usd).unwrap().default,
            Some(Rate::Share { bps: bps(1234) })
        );
        assert_eq!(
            CommissionPlan::parse_text("500", jpy).unwrap().default,
            Some(Rate::Flat { amount: 500 })
        );
        assert_eq!(
            CommissionPlan::parse_text(" ", usd).unwrap(),
            CommissionPlan::default()
        );
        for bad in [
            "101%",
            "1.234%",
            "2.001",
            "-1",
            "lead=",
            "lead=2, lead=3",
            "10%, default=5%",
            "x y=1",
            "1e3",
            "2+3",
        ] {
            assert!(CommissionPlan::parse_text(bad, usd).is_err(), "{bad}");
        }
        assert!(CommissionPlan::parse_text("1.5", jpy).is_err());
        // Event names are what conversions carry: lower-cased on input, and
        // a table naming an event no conversion can have is refused.
        let p = CommissionPlan::parse_text("Lead=2.00", usd).unwrap();
        assert_eq!(p.events.keys().collect::<Vec<_>>(), ["lead"]);
        let mut table = CommissionPlan::default();
        table.events.insert("Lead".into(), Rate::Flat { amount: 1 });
        assert!(matches!(
            table.validate(),
            Err(CommissionError::BadEvent(_))
        ));
    }

    #[test]
    fn models() {
        assert_eq!(Rate::Flat { amount: 500 }.commission("sale", None), Ok(500));
        assert_eq!(
            Rate::Share { bps: bps(1250) }.commission("sale", Some(10_000)),
            Ok(1250)
        );
        assert_eq!(
            Rate::Hybrid {
                amount: 100,
                bps: bps(500)
            }
            .commission("sale", Some(2_000)),
            Ok(200)
        );
        assert_eq!(
            Rate::Share { bps: bps(500) }.commission("sale", None),
            Err(CommissionError::AmountRequired("sale".into()))
        );
    }

    #[test]
    fn most_specific_rate_wins() {
        let program = CommissionPlan {
            default: Some(Rate::Share { bps: bps(1000) }),
            events: [("lead".to_owned(), Rate::Flat { amount: 100 })].into(),
        };
        let vip = CommissionPlan {
            default: Some(Rate::Share { bps: bps(1500) }),
            events: BTreeMap::new(),
        };
        assert_eq!(
            resolve(&program, None, "sale"),
            Some(&Rate::Share { bps: bps(1000) })
        );
        assert_eq!(
            resolve(&program, Some(&vip), "sale"),
            Some(&Rate::Share { bps: bps(1500) })
        );
        // The program's lead rate is more specific than the affiliate default.
        assert_eq!(
            resolve(&program, Some(&vip), "lead"),
            Some(&Rate::Flat { amount: 100 })
        );
        assert_eq!(resolve(&CommissionPlan::default(), None, "sale"), None);
    }

    #[test]
    fn plans_read_from_json() {
        let p: CommissionPlan = serde_json::from_str(
            r#"{"default":{"type":"hybrid","amount":100,"bps":500},"events":{"lead":{"type":"flat","amount":50}}}"#,
        )
        .unwrap();
        assert!(p.validate().is_ok());
        assert!(
            serde_json::from_str::<CommissionPlan>(r#"{"default":{"type":"share","bps":20000}}"#)
                .is_err()
        );
        let neg: CommissionPlan =
            serde_json::from_str(r#"{"default":{"type":"flat","amount":-5}}"#).unwrap();
        assert!(neg.validate().is_err());
    }
}
