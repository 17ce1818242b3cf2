//! Program settings that govern conversions: currency, windows, attribution
//! model, commission plan, hold period, postback authentication.

use serde::{Deserialize, Serialize};

use crate::commission::CommissionPlan;
use crate::money::Currency;

/// Which click a conversion goes to when a visitor clicked several links of
/// one program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
}

/// How a click may identify its visitor (docs/privacy.md, "Consent").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
        }
    }
}
