//! Conversions: what a postback reports, its lifecycle, and the ledger
//! entries each change makes.
//!
//! Lifecycle: `pending → approved → paid`; `pending → rejected`;
//! `approved | paid → reversed` (refund or chargeback). Nothing is edited in
//! place: every change appends ledger entries that move the commission
//! between three buckets per affiliate and currency:
//!
//! | change | entries |
//! |---|---|
//! | new conversion (pending) | pending +c |
//! | approve | pending −c, payable +c |
//! | reject (from pending) | pending −c |
//! | pay (payout batch) | payable −c, paid +c |
//! | reverse (from approved) | payable −c |
//! | reverse (from paid) | payable −c (a clawback netted against later payouts) |
//!
//! So for every conversion the sum of its entries is `c` while it stands
//! (pending, approved, paid) and 0 once rejected or reversed.

use serde::{Deserialize, Serialize};

use crate::truncate_utf8;

/// Where a conversion stands.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversionStatus {
    /// Waiting for approval (manual, or automatic after the hold period).
    Pending,
    /// Approved; its commission is payable.
    Approved,
    /// Refused before approval.
    Rejected,
    /// Included in a payout batch.
    Paid,
    /// Refunded or charged back after approval or payment.
    Reversed,
}

impl ConversionStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Paid => "paid",
            Self::Reversed => "reversed",
        }
    }

    /// `true` for the statuses reports count as conversions (with their
    /// revenue and payout): pending, approved, paid. Rejected and reversed
    /// conversions are left out.
    pub fn counted(self) -> bool {
        matches!(self, Self::Pending | Self::Approved | Self::Paid)
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "paid" => Self::Paid,
            "reversed" => Self::Reversed,
            _ => return None,
        })
    }
}

/// A bucket of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerBucket {
    /// Earned, not yet approved.
    Pending,
    /// Approved and not yet paid (clawbacks make it go down).
    Payable,
    /// Paid out.
    Paid,
}

impl LedgerBucket {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Payable => "payable",
            Self::Paid => "paid",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "payable" => Self::Payable,
            "paid" => Self::Paid,
            _ => return None,
        })
    }
}

/// A status change that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {} conversion cannot become {}", .from.as_str(), .to.as_str())]
pub struct TransitionError {
    /// Current status.
    pub from: ConversionStatus,
    /// Asked-for status.
    pub to: ConversionStatus,
}

/// The ledger entries `(bucket, minor units)` of moving a conversion whose
/// commission is `commission` from `from` to `to`.
///
/// # Errors
/// [`TransitionError`] for changes the lifecycle does not allow (anything
/// out of `rejected` or `reversed`, approving a paid conversion, …).
pub fn transition(
    from: ConversionStatus,
    to: ConversionStatus,
    commission: i64,
) -> Result<Vec<(LedgerBucket, i64)>, TransitionError> {
    use ConversionStatus as S;
    let c = commission;
    Ok(match (from, to) {
        (S::Pending, S::Approved) => vec![(LedgerBucket::Pending, -c), (LedgerBucket::Payable, c)],
        (S::Pending, S::Rejected) => vec![(LedgerBucket::Pending, -c)],
        (S::Approved, S::Paid) => vec![(LedgerBucket::Payable, -c), (LedgerBucket::Paid, c)],
        (S::Approved | S::Paid, S::Reversed) => vec![(LedgerBucket::Payable, -c)],
        _ => return Err(TransitionError { from, to }),
    })
}

/// The entry of a new (pending) conversion.
pub fn created(commission: i64) -> Vec<(LedgerBucket, i64)> {
    vec![(LedgerBucket::Pending, commission)]
}

/// What is left of a conversion after refunds (see [`after_refunds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refunded {
    /// The amount left, minor units (`None` when it had none).
    pub amount: Option<i64>,
    /// The commission left, minor units.
    pub commission: i64,
    /// Everything was refunded: the conversion is reversed (or rejected
    /// while pending), not reduced.
    pub full: bool,
}

/// What a refund cannot be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    /// The total paid is not positive.
    #[error("a refund of a payment of {0} minor units cannot be shared out")]
    NoTotal(i64),
    /// A refund below zero.
    #[error("a refund of {0} minor units is negative")]
    Negative(i64),
}

/// The amount and commission left of a conversion whose gross (before any
/// refund) were `gross_amount` and `gross_commission`, once `refunded` of
/// the `total` the buyer paid is refunded (both in the currency of the
/// payment, minor units: the platform's numbers, whatever the program's
/// currency). Each is cut in the same proportion; the cut is rounded down,
/// so a partial refund never takes more than its share, and the refunds of
/// a whole payment take all of it (`full`). Refunding more than `total`
/// counts as refunding all of it.
///
/// # Errors
/// [`RefundError`] for a `total` ≤ 0 or a negative `refunded`.
pub fn after_refunds(
    gross_amount: Option<i64>,
    gross_commission: i64,
    refunded: i64,
    total: i64,
) -> Result<Refunded, RefundError> {
    if total <= 0 {
        return Err(RefundError::NoTotal(total));
    }
    if refunded < 0 {
        return Err(RefundError::Negative(refunded));
    }
    if refunded >= total {
        return Ok(Refunded {
            amount: gross_amount.map(|_| 0),
            commission: 0,
            full: true,
        });
    }
    let left = |gross: i64| {
        let cut = i128::from(gross) * i128::from(refunded) / i128::from(total);
        // |cut| <= |gross|: it fits.
        gross - i64::try_from(cut).unwrap_or(gross)
    };
    Ok(Refunded {
        amount: gross_amount.map(left),
        commission: left(gross_commission),
        full: false,
    })
}

/// Longest accepted order id, bytes.
pub const MAX_ORDER_ID_LEN: usize = 255;
/// Longest kept advertiser sub value, bytes.
pub const MAX_ADV_SUB_LEN: usize = 255;

/// The fields of a conversion report, read from a postback query, a form or
/// JSON, before validation against the program.
///
/// Key names (DESIGN.md §4 and the platforms' postback docs):
/// click id `click_id | transaction_id` (TUNE, Everflow) `| cid | clickid`
/// (Voluum) `| subid | sid` (Prosper202); order id `order_id | txid` (Voluum)
/// `| conversion_unique_id` (TUNE) `| external_id` (Tapfiliate) `| invoice_id`
/// (Dub); `amount | sale_amount`; `currency`; event `event | et` (Voluum)
/// `| goal`; `status`; `occurred_at`; advertiser subs `adv_sub1..5`
/// (`adv_sub, adv_sub2..5` TUNE, `adv1..5` Everflow).
/// The first occurrence of a key wins; empty values count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionReport {
    /// Click id as sent.
    pub click_id: Option<String>,
    /// Order id as sent.
    pub order_id: Option<String>,
    /// Amount as sent (decimal text).
    pub amount: Option<String>,
    /// Currency code as sent.
    pub currency: Option<String>,
    /// Event name as sent.
    pub event: Option<String>,
    /// Status as sent (`pending`, `approved`, `rejected`).
    pub status: Option<String>,
    /// RFC 3339 or Unix seconds, as sent.
    pub occurred_at: Option<String>,
    /// Advertiser subs.
    pub adv_subs: [Option<String>; 5],
    /// The buyer's address as the merchant saw it (`ip`, `customer_ip`,
    /// `user_ip`), for the conversion fraud rules; hashed at intake, never
    /// stored.
    pub buyer_ip: Option<String>,
}

/// The field a postback key names, by its canonical name (`txid` →
/// `order_id`), for the keys [`ConversionReport::from_pairs`] reads, plus the
/// credentials (`token` and its TUNE / Everflow spellings, `signature`).
/// Sources: TUNE (`transaction_id`, `adv_sub`, `security_token`), Everflow
/// (`verification_token`, `adv1`..`adv5`), Voluum (`cid`, `txid`, `et`),
/// Prosper202 (`subid`).
pub fn canonical_field(key: &str) -> Option<&'static str> {
    Some(match key {
        "click_id" | "transaction_id" | "cid" | "clickid" | "subid" | "sid" => "click_id",
        "order_id" | "txid" | "conversion_unique_id" | "external_id" | "invoice_id" => "order_id",
        "amount" | "sale_amount" => "amount",
        "currency" => "currency",
        "event" | "et" | "goal" => "event",
        "status" => "status",
        "occurred_at" => "occurred_at",
        "adv_sub1" | "adv_sub" | "adv1" => "adv_sub1",
        "adv_sub2" | "adv2" => "adv_sub2",
        "adv_sub3" | "adv3" => "adv_sub3",
        "adv_sub4" | "adv4" => "adv_sub4",
        "adv_sub5" | "adv5" => "adv_sub5",
        "token" | "security_token" | "verification_token" => "token",
        "signature" => "signature",
        "ip" | "customer_ip" | "user_ip" => "ip",
        _ => return None,
    })
}

impl ConversionReport {
    /// Reads the recognised keys from decoded pairs; others are ignored.
    pub fn from_pairs<'a, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut r = ConversionReport::default();
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            let slot = match canonical_field(k) {
                Some("click_id") => &mut r.click_id,
                Some("order_id") => &mut r.order_id,
                Some("amount") => &mut r.amount,
                Some("currency") => &mut r.currency,
                Some("event") => &mut r.event,
                Some("status") => &mut r.status,
                Some("occurred_at") => &mut r.occurred_at,
                Some("adv_sub1") => &mut r.adv_subs[0],
                Some("adv_sub2") => &mut r.adv_subs[1],
                Some("adv_sub3") => &mut r.adv_subs[2],
                Some("adv_sub4") => &mut r.adv_subs[3],
                Some("adv_sub5") => &mut r.adv_subs[4],
                Some("ip") => &mut r.buyer_ip,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.to_owned());
            }
        }
        for s in r.adv_subs.iter_mut().flatten() {
            *s = crate::clean_text(s, MAX_ADV_SUB_LEN);
        }
        r
    }
}

/// An event name: 1–32 of `a-z 0-9 _ -` (lower-cased on input).
///
/// # Errors
/// A message naming the value.
pub fn parse_event(s: &str) -> Result<String, String> {
    let e = s.trim().to_ascii_lowercase();
    let ok = !e.is_empty()
        && e.len() <= 32
        && e.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(e)
    } else {
        Err(format!(
            "event {:?} is not 1-32 characters of a-z 0-9 _ -",
            truncate_utf8(s, 40)
        ))
    }
}

/// An order id: 1–255 bytes, no control characters.
///
/// # Errors
/// A message naming the problem.
pub fn parse_order_id(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("order_id is empty".to_owned());
    }
    if t.len() > MAX_ORDER_ID_LEN {
        return Err(format!(
            "order_id is {} bytes long; at most {MAX_ORDER_ID_LEN} are allowed",
            t.len()
        ));
    }
    if t.chars().any(char::is_control) {
        return Err("order_id contains control characters".to_owned());
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConversionStatus as S;
    use proptest::prelude::*;

    #[test]
    fn dialects_fill_the_same_fields() {
        let tune = ConversionReport::from_pairs([
            ("transaction_id", "C1"),
            ("conversion_unique_id", "O1"),
            ("amount", "9.99"),
            ("adv_sub", "x"),
        ]);
        let voluum = ConversionReport::from_pairs([
            ("cid", "C1"),
            ("txid", "O1"),
            ("amount", "9.99"),
            ("et", "sale"),
        ]);
        let prosper = ConversionReport::from_pairs([("subid", "C1"), ("invoice_id", "O1")]);
        assert_eq!(tune.click_id.as_deref(), Some("C1"));
        assert_eq!(tune.order_id.as_deref(), Some("O1"));
        assert_eq!(tune.adv_subs[0].as_deref(), Some("x"));
        assert_eq!(voluum.event.as_deref(), Some("sale"));
        assert_eq!(prosper.click_id, voluum.click_id);
    }

    #[test]
    fn lifecycle_refuses_what_it_must() {
        assert!(transition(S::Pending, S::Approved, 5).is_ok());
        assert!(transition(S::Rejected, S::Approved, 5).is_err());
        assert!(transition(S::Reversed, S::Approved, 5).is_err());
        assert!(transition(S::Paid, S::Approved, 5).is_err());
        assert!(transition(S::Pending, S::Reversed, 5).is_err());
        assert!(transition(S::Pending, S::Paid, 5).is_err());
    }

    #[test]
    fn order_ids_and_events_are_bounded() {
        assert!(parse_order_id(&"x".repeat(10 * 1024)).is_err());
        assert!(parse_order_id(" ").is_err());
        assert!(parse_order_id("a\u{0}b").is_err());
        assert_eq!(parse_order_id(" ORD-1 "), Ok("ORD-1".to_owned()));
        assert_eq!(parse_event("Sale"), Ok("sale".to_owned()));
        assert!(parse_event("sale; drop").is_err());
    }

    fn status() -> impl Strategy<Value = ConversionStatus> {
        prop::sample::select(vec![
            S::Pending,
            S::Approved,
            S::Rejected,
            S::Paid,
            S::Reversed,
        ])
    }

    proptest! {
        /// Whatever sequence of changes is tried, a conversion's entries sum
        /// to its commission while it stands and to 0 once it does not.
        #[test]
        fn entries_sum_to_what_the_status_says(c in 0i64..1_000_000, steps in prop::collection::vec(status(), 0..12)) {
            let mut st = S::Pending;
            let mut sum: i64 = created(c).iter().map(|(_, a)| a).sum();
            for to in steps {
                if let Ok(entries) = transition(st, to, c) {
                    sum += entries.iter().map(|(_, a)| a).sum::<i64>();
                    st = to;
                }
                let expected = match st { S::Pending | S::Approved | S::Paid => c, S::Rejected | S::Reversed => 0 };
                prop_assert_eq!(sum, expected);
            }
        }
    }
}

#[cfg(test)]
mod refund_tests {
    use super::*;

    #[test]
    fn partial_refunds_cut_amount_and_commission_in_proportion_and_all_of_it_takes_all() {
        // $100.00 order, $12.34 commission; $25 of $100 refunded.
        let r = after_refunds(Some(10_000), 1_234, 2_500, 10_000).unwrap();
        assert_eq!(r.amount, Some(7_500));
        // 1234 * 0.25 = 308.5: the cut rounds down, 926 left.
        assert_eq!(r.commission, 926);
        assert!(!r.full);
        // The program converted EUR 90.00 from USD 100.00 at intake: the
        // share is the payment's, so a third of USD refunds a third of EUR.
        let r = after_refunds(Some(9_000), 900, 3_333, 9_999).unwrap();
        assert_eq!((r.amount, r.commission), (Some(6_000), 600));
        let all = after_refunds(Some(10_000), 1_234, 10_000, 10_000).unwrap();
        assert_eq!((all.amount, all.commission, all.full), (Some(0), 0, true));
        assert!(after_refunds(None, 500, 20_000, 10_000).unwrap().full);
        assert_eq!(
            after_refunds(None, 500, 0, 10_000).unwrap(),
            Refunded {
                amount: None,
                commission: 500,
                full: false
            }
        );
        assert_eq!(
            after_refunds(Some(1), 1, 1, 0),
            Err(RefundError::NoTotal(0))
        );
        assert_eq!(
            after_refunds(Some(1), 1, -1, 5),
            Err(RefundError::Negative(-1))
        );
    }
}
