//! Program settings that govern conversions: currency, windows, attribution
//! model, commission plan, hold period, postback authentication.

use serde::{Deserialize, Serialize};

use crate::commission::CommissionPlan;
use crate::money::Currency;

/// Which click a conversion goes to when a visitor clicked several links of
/// one program.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributionModel {
    /// The latest click wins (a new click replaces the cookie).
    #[default]
    LastClick,
    /// The first click wins (an existing valid cookie is kept).
    FirstClick,
}

impl AttributionModel {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LastClick => "last_click",
            Self::FirstClick => "first_click",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "last_click" => Some(Self::LastClick),
            "first_click" => Some(Self::FirstClick),
            _ => None,
        }
    }
}

/// Default cookie and attribution window: 30 days, seconds.
pub const DEFAULT_WINDOW_S: i64 = 30 * 86_400;

/// A program's conversion settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSettings {
    /// Currency of amounts and commissions.
    pub currency: Currency,
    /// Max-Age of the attribution cookie, seconds.
    pub cookie_window_s: i64,
    /// Longest click-to-conversion time accepted, seconds.
    pub attribution_window_s: i64,
    /// Last or first click.
    pub attribution: AttributionModel,
    /// What affiliates earn.
    pub commission: CommissionPlan,
    /// Pending conversions are approved automatically this many seconds after
    /// they are received; `None` = only by hand.
    pub hold_s: Option<i64>,
    /// Token a postback must carry (`token=`); secret.
    pub postback_token: Option<String>,
    /// Key of the HMAC-SHA256 signature a postback may carry instead; secret.
    pub postback_secret: Option<String>,
    /// When not empty, postbacks are accepted only from these IPs / CIDRs.
    pub postback_ips: Vec<String>,
    /// Also append the click id to the destination under this query key.
    pub click_id_param: Option<String>,
    /// Smallest payable balance paid out, minor units.
    pub min_payout: i64,
    /// What the conversion pixel (`GET /pixel.gif`) may do.
    pub pixel: PixelMode,
    /// Largest amount a pixel may report, minor units; `None`: no bound.
    pub pixel_max_amount: Option<i64>,
    /// IANA time zone of the program's days (caps reset at its midnight).
    #[serde(default = "utc")]
    pub timezone: String,
    /// Where blocked and over-cap clicks are sent instead of the merchant;
    /// `None`: a "not available" page.
    #[serde(default)]
    pub fallback_url: Option<String>,
    /// What a visitor who asks not to be tracked (`Sec-GPC: 1`, or `DNT: 1`
    /// where configured) gets (docs/privacy.md, "Consent").
    #[serde(default)]
    pub consent: ConsentMode,
    /// Conversions from Stripe's webhooks (`POST /integrations/stripe/{program}`);
    /// `None`: that endpoint answers 404 for this program.
    #[serde(default)]
    pub stripe: Option<StripeSettings>,
    /// Conversions from Shopify's webhooks (`POST /integrations/shopify/{program}`);
    /// `None`: that endpoint answers 404 for this program.
    #[serde(default)]
    pub shopify: Option<ShopifySettings>,
}

/// A program's Stripe webhook endpoint (docs/integrations.md, "Stripe").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSettings {
    /// The endpoint's signing secrets (`whsec_…`); an event verifies with
    /// any of them (two while rotating). Secret.
    pub secrets: Vec<String>,
    /// Which subscription payments earn commission.
    #[serde(default)]
    pub recurring: Recurring,
    /// What a payment whose click is unknown becomes.
    #[serde(default)]
    pub unknown_click: UnknownClick,
    /// Oldest accepted signature timestamp, seconds before now (Stripe's
    /// libraries use 300).
    #[serde(default = "stripe_tolerance")]
    pub tolerance_s: i64,
}

fn stripe_tolerance() -> i64 {
    300
}

/// A program's Shopify webhook endpoint (docs/integrations.md, "Shopify").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifySettings {
    /// The app's client secret, the key of `X-Shopify-Hmac-Sha256`; several
    /// while rotating. Secret.
    pub secrets: Vec<String>,
    /// The landing-site query parameter, or order note attribute, that
    /// holds the click id (`cw_click`, what `/cw.js` keeps).
    #[serde(default = "click_param")]
    pub click_param: String,
    /// What an order whose click is unknown becomes.
    #[serde(default)]
    pub unknown_click: UnknownClick,
}

fn click_param() -> String {
    "cw_click".to_owned()
}

/// Which payments of a subscription earn commission (Rewardful's and
/// Dub's "recurring" choices). The first payment always does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recurring {
    /// Only the first payment (`"first"`).
    #[default]
    First,
    /// The payments of the first `n` months after the first one
    /// (`"12 months"`): an invoice created before the first payment's time
    /// plus `n` calendar months (UTC).
    Months(u32),
    /// Every payment while the subscription lasts (`"forever"`).
    Forever,
}

impl Recurring {
    /// `"first"`, `"forever"` or `"<n> months"`.
    pub fn text(self) -> String {
        match self {
            Self::First => "first".to_owned(),
            Self::Forever => "forever".to_owned(),
            Self::Months(n) => format!("{n} months"),
        }
    }

    /// Parses [`Recurring::text`]'s forms (`"1 month"` too).
    ///
    /// # Errors
    /// A sentence naming the accepted forms.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t {
            "first" => return Ok(Self::First),
            "forever" => return Ok(Self::Forever),
            _ => {}
        }
        let n = t
            .strip_suffix("months")
            .or_else(|| t.strip_suffix("month"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .filter(|n| (1..=1200).contains(n));
        n.map(Self::Months).ok_or_else(|| {
            format!(
                "recurring {:?} is not \"first\", \"forever\" or \"<1 to 1200> months\"",
                crate::truncate_utf8(t, 40)
            )
        })
    }

    /// Whether a payment at `paid_at` of a subscription first paid at
    /// `first_paid_at` (both UTC µs) earns commission; the first payment is
    /// the one with `paid_at == first_paid_at` or a `first` flag.
    pub fn earns(self, first: bool, first_paid_at: crate::Micros, paid_at: crate::Micros) -> bool {
        if first {
            return true;
        }
        match self {
            Self::First => false,
            Self::Forever => true,
            Self::Months(n) => {
                let Ok(start) = jiff::Timestamp::from_microsecond(first_paid_at) else {
                    return false;
                };
                let end = start
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .checked_add(jiff::Span::new().months(i64::from(n)));
                match end {
                    Ok(end) => paid_at < end.timestamp().as_microsecond(),
                    Err(_) => true,
                }
            }
        }
    }
}

impl Serialize for Recurring {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for Recurring {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = String::deserialize(d)?;
        Self::parse(&t).map_err(serde::de::Error::custom)
    }
}

/// What a platform's payment becomes when no click is known for it (no
/// click id in it, an unknown one, or a customer never seen with one).
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownClick {
    /// Stored as an unattributed conversion (no affiliate, no commission),
    /// answered 200 `unattributed` with the reason: revenue reports stay
    /// whole.
    #[default]
    Store,
    /// Not stored, answered 422 `unknown_click` (the platform retries and
    /// then gives up; its dashboard shows the refusal).
    Refuse,
}

/// How a click may identify its visitor (docs/privacy.md, "Consent").
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentMode {
    /// The visitor and attribution cookies, as for everyone.
    #[default]
    Cookie,
    /// No cookie is read or set: dedup by the daily keyed hash only, and
    /// conversions attribute only by click id in server-to-server postbacks.
    Cookieless,
}

impl ConsentMode {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cookie => "cookie",
            Self::Cookieless => "cookieless",
        }
    }

    /// From the stored or configured name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cookie" => Some(Self::Cookie),
            "cookieless" => Some(Self::Cookieless),
            _ => None,
        }
    }
}

fn utc() -> String {
    "UTC".to_owned()
}

/// What the conversion pixel may do for a program (docs/postbacks.md, "The
/// pixel"). A pixel is a URL any visitor's browser can be made to load, so
/// it is off unless the program turns it on.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelMode {
    /// Refused (403).
    #[default]
    Off,
    /// Accepted within `pixel_max_amount`; its conversions are held for
    /// review (never approved by the hold period).
    On,
    /// Accepted when it carries the merchant's signature of its order id
    /// and amount (made with `postback_secret` on the merchant's server);
    /// then treated as a postback.
    Signed,
}

impl PixelMode {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Signed => "signed",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "on" => Some(Self::On),
            "signed" => Some(Self::Signed),
            _ => None,
        }
    }
}

impl ProgramSettings {
    /// Settings with the defaults and the given currency.
    pub fn new(currency: Currency) -> Self {
        Self {
            currency,
            cookie_window_s: DEFAULT_WINDOW_S,
            attribution_window_s: DEFAULT_WINDOW_S,
            attribution: AttributionModel::LastClick,
            commission: CommissionPlan::default(),
            hold_s: None,
            postback_token: None,
            postback_secret: None,
            postback_ips: Vec::new(),
            click_id_param: None,
            min_payout: 0,
            pixel: PixelMode::Off,
            pixel_max_amount: None,
            timezone: "UTC".to_owned(),
            fallback_url: None,
            consent: ConsentMode::Cookie,
            stripe: None,
            shopify: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> crate::Micros {
        s.parse::<jiff::Timestamp>().unwrap().as_microsecond()
    }

    #[test]
    fn recurring_rules_read_as_typed_and_count_calendar_months() {
        assert_eq!(Recurring::parse("first"), Ok(Recurring::First));
        assert_eq!(Recurring::parse(" 12 months"), Ok(Recurring::Months(12)));
        assert_eq!(Recurring::parse("1 month"), Ok(Recurring::Months(1)));
        assert!(Recurring::parse("0 months").is_err());
        assert!(Recurring::parse("twelve months").is_err());
        assert_eq!(Recurring::Months(12).text(), "12 months");
        let first = at("2026-01-31T10:00:00Z");
        let r = Recurring::Months(1);
        assert!(r.earns(true, first, first));
        assert!(r.earns(false, first, at("2026-02-27T10:00:00Z")));
        // One calendar month after Jan 31 is Feb 28: the renewal on that
        // day is the second month.
        assert!(!r.earns(false, first, at("2026-02-28T10:00:00Z")));
        assert!(!Recurring::First.earns(false, first, at("2026-02-01T00:00:00Z")));
        assert!(Recurring::Forever.earns(false, first, at("2036-02-01T00:00:00Z")));
        let back: Recurring = serde_json::from_str("\"forever\"").unwrap();
        assert_eq!(back, Recurring::Forever);
    }
}
