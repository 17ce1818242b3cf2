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

use crate::money::{BasisPoints, MAX_MINOR};

/// One rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    /// Checks every rate.
    ///
    /// # Errors
    /// The first invalid rate.
    pub fn validate(&self) -> Result<(), CommissionError> {
        self.default
            .iter()
            .chain(self.events.values())
            .try_for_each(Rate::check)
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
