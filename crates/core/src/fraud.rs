//! Fraud and abuse rules: what a rule says, which rule applies where, and the
//! verdict a click or a conversion gets, with the sentence that explains it.
//!
//! A rule is a [`Check`] with an [`Action`] and a scope (global, one program,
//! one affiliate, or one program × affiliate). Rules are written as
//! [`RuleSpec`] (the same fields in the catalogue's `[[rules]]`, the admin
//! API's JSON and the CLI) and compiled by [`Rule::compile`], which names the
//! rule and the field of any mistake.
//!
//! **Most specific wins**, per [`Check::family`]: for one link or conversion,
//! a rule scoped to its program × affiliate beats one scoped to its affiliate,
//! which beats its program, which beats a global rule. `allow` at a more
//! specific scope turns a family off there.
//!
//! Evaluation is pure: the caller measures the signals (velocity counts, the
//! network of the address, whether it is excluded traffic) and
//! [`ClickRules::evaluate`] / [`ConversionRules::evaluate`] return the
//! strongest tripped rule (`block` > `reject` > `hold` > `flag`), or `None`.
//! Rule families and who offers them: ../shared/reference/affiliate-platforms.md §4.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Micros;

/// What a tripped rule does.
#[derive(
    utoipa::ToSchema,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing: turns the family off at this scope.
    Allow,
    /// Kept and counted as usual; shown with its reason.
    Flag,
    /// Conversions only: recorded pending and never approved by the hold
    /// period (an admin decides).
    Hold,
    /// A click is counted in `invalid_clicks` (still redirected); a
    /// conversion is refused with 422 and stored as rejected.
    Reject,
    /// Clicks only: as `reject`, and the visitor is sent to the program's
    /// fallback destination (or shown a "not available" page) instead of the
    /// merchant.
    Block,
}

impl Action {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Flag => "flag",
            Action::Hold => "hold",
            Action::Reject => "reject",
            Action::Block => "block",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allow" => Action::Allow,
            "flag" => Action::Flag,
            "hold" => Action::Hold,
            "reject" => Action::Reject,
            "block" => Action::Block,
            _ => return None,
        })
    }

    /// `true` for `reject` and `block`: the click is invalid.
    pub fn invalidates(self) -> bool {
        matches!(self, Action::Reject | Action::Block)
    }
}

/// The query keys that mark a paid-search or paid-social click: Google Ads
/// (`gclid`, and `gbraid` / `wbraid` for iOS app and web-to-app), Meta
/// (`fbclid`), Microsoft Advertising (`msclkid`), TikTok (`ttclid`). Each
/// platform's auto-tagging documentation names its key.
pub const PAID_SEARCH_KEYS: [&str; 6] =
    ["gclid", "gbraid", "wbraid", "fbclid", "msclkid", "ttclid"];

/// The built-in flag of a click from the link's own affiliate (an exclusion
/// entry of that affiliate matched it); a conversion of such a click trips
/// the `self_referral` conversion rule.
pub const SELF_REFERRAL: &str = "self_referral";

/// What a cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapMetric {
    /// Human clicks.
    Clicks,
    /// Accepted conversions.
    Conversions,
    /// Commission of accepted conversions, minor units of the program's currency.
    Payout,
}

/// The calendar period a cap resets on, in the program's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapPeriod {
    /// A local calendar day.
    Day,
    /// A local calendar month.
    Month,
}

/// What one cap counter is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapPer {
    /// One counter per program.
    Program,
    /// One counter per affiliate, across programs.
    Affiliate,
    /// One counter per program × affiliate.
    ProgramAffiliate,
}

/// A cap: at most `limit` of `metric` per `period` per `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    /// What is counted.
    pub metric: CapMetric,
    /// When it resets.
    pub period: CapPeriod,
    /// What one counter is for.
    pub per: CapPer,
    /// The most allowed per period: a count, or minor units for payout.
    pub limit: i64,
    /// `true`: beyond the cap conversions are rejected (`cap_reached`) and
    /// clicks go to the fallback; `false`: flagged and told (`cap.reached`).
    pub hard: bool,
}

/// Which anonymous networks an `anonymous` rule catches (GeoIP2
/// Anonymous-IP's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnonymousKinds {
    /// `is_anonymous_vpn`.
    pub vpn: bool,
    /// `is_tor_exit_node`.
    pub tor: bool,
    /// `is_public_proxy`.
    pub proxy: bool,
    /// `is_residential_proxy`.
    pub residential_proxy: bool,
}

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// More than `limit` clicks by one visitor on one link within `window`.
    VisitorVelocity {
        /// Most clicks allowed in the window.
        limit: u32,
        /// Window, µs.
        window: Micros,
    },
    /// More than `limit` clicks on one link (all visitors) within `window`.
    LinkVelocity {
        /// Most clicks allowed in the window.
        limit: u32,
        /// Window, µs.
        window: Micros,
    },
    /// From a hosting or data-centre network: the ASN database's number is on
    /// the hosting list ([`HOSTING_ASNS`] plus `asns`), or the anonymous-IP
    /// database says `is_hosting_provider`.
    Hosting {
        /// More ASNs to treat as hosting.
        asns: Vec<u32>,
    },
    /// From a VPN, Tor exit or proxy, per the anonymous-IP database.
    Anonymous(AnonymousKinds),
    /// Country allow list (when not empty) and block list, ISO 3166-1 alpha-2.
    Countries {
        /// Only these, when not empty.
        allow: Vec<String>,
        /// Never these.
        block: Vec<String>,
    },
    /// Referrer host allow list (when not empty) and block list; an entry
    /// `example.com` also matches its subdomains. A click without a referrer
    /// passes.
    Referrers {
        /// Only these, when not empty.
        allow: Vec<String>,
        /// Never these.
        block: Vec<String>,
    },
    /// A paid-search click id ([`PAID_SEARCH_KEYS`] or `keys`) on an
    /// affiliate link: the program forbids PPC on its brand.
    PaidSearch {
        /// The query keys looked for.
        keys: Vec<String>,
    },
    /// The merchant's or publisher's own traffic (`clickward exclude`).
    Excluded,
    /// Click-to-conversion time outside `[min, max]`.
    Ctit {
        /// Shortest allowed, µs.
        min: Option<Micros>,
        /// Longest allowed, µs.
        max: Option<Micros>,
    },
    /// The buyer is the affiliate's own traffic (an exclusion entry of that
    /// affiliate matched the click or the conversion).
    SelfReferral,
    /// More than `limit` conversions of one affiliate from one buyer address
    /// within `window`.
    DuplicateIp {
        /// Most conversions allowed in the window.
        limit: u32,
        /// Window, µs.
        window: Micros,
    },
    /// After `min_clicks` human clicks in `window`, a conversion rate above
    /// `max_bp` (basis points).
    ConversionRate {
        /// Clicks needed before the rate is judged.
        min_clicks: u32,
        /// Highest allowed rate, basis points (2000 = 20%).
        max_bp: u32,
        /// Window the clicks and conversions are counted in, µs.
        window: Micros,
    },
    /// The conversion's country differs from the click's.
    GeoMismatch,
    /// A cap.
    Cap(Cap),
}

/// ASNs of hosting and cloud networks, treated as data-centre traffic by the
/// `hosting` rule: AWS (16509, 14618), Google and Google Cloud (15169,
/// 396982), Microsoft Azure (8075), DigitalOcean (14061), OVH (16276),
/// Hetzner (24940), Akamai / Linode (63949, 35994), Vultr / Choopa (20473),
/// Oracle Cloud (31898), Alibaba Cloud (45102), Tencent Cloud (132203),
/// Scaleway (12876), Contabo (51167), Leaseweb (60781), M247 (9009),
/// IONOS (8560), Hostinger (47583), IBM Cloud / SoftLayer (36351). A rule's
/// `asns` adds more.
pub const HOSTING_ASNS: [u32; 21] = [
    16509, 14618, 15169, 396982, 8075, 14061, 16276, 24940, 63949, 35994, 20473, 31898, 45102,
    132203, 12876, 51167, 60781, 9009, 8560, 47583, 36351,
];

impl Check {
    /// The family a rule overrides at a more specific scope: the check's name,
    /// and for caps also what they count, when, and per what.
    pub fn family(&self) -> String {
        match self {
            Check::Cap(c) => format!(
                "cap:{}:{}:{}",
                cap_metric_name(c.metric),
                cap_period_name(c.period),
                cap_per_name(c.per)
            ),
            other => other.name().to_owned(),
        }
    }

    /// The `check` name in a [`RuleSpec`].
    pub fn name(&self) -> &'static str {
        match self {
            Check::VisitorVelocity { .. } => "visitor_velocity",
            Check::LinkVelocity { .. } => "link_velocity",
            Check::Hosting { .. } => "hosting",
            Check::Anonymous(_) => "anonymous",
            Check::Countries { .. } => "countries",
            Check::Referrers { .. } => "referrers",
            Check::PaidSearch { .. } => "paid_search",
            Check::Excluded => "excluded",
            Check::Ctit { .. } => "ctit",
            Check::SelfReferral => "self_referral",
            Check::DuplicateIp { .. } => "duplicate_ip",
            Check::ConversionRate { .. } => "conversion_rate",
            Check::GeoMismatch => "geo_mismatch",
            Check::Cap(_) => "cap",
        }
    }

    /// `true` when the check judges clicks (on the redirect path); else it
    /// judges conversions at intake. Caps judge both (clicks caps clicks).
    pub fn on_clicks(&self) -> bool {
        match self {
            Check::VisitorVelocity { .. }
            | Check::LinkVelocity { .. }
            | Check::Hosting { .. }
            | Check::Anonymous(_)
            | Check::Countries { .. }
            | Check::Referrers { .. }
            | Check::PaidSearch { .. }
            | Check::Excluded => true,
            Check::Cap(c) => c.metric == CapMetric::Clicks,
            _ => false,
        }
    }
}

fn cap_metric_name(m: CapMetric) -> &'static str {
    match m {
        CapMetric::Clicks => "clicks",
        CapMetric::Conversions => "conversions",
        CapMetric::Payout => "payout",
    }
}

fn cap_period_name(p: CapPeriod) -> &'static str {
    match p {
        CapPeriod::Day => "day",
        CapPeriod::Month => "month",
    }
}

fn cap_per_name(p: CapPer) -> &'static str {
    match p {
        CapPer::Program => "program",
        CapPer::Affiliate => "affiliate",
        CapPer::ProgramAffiliate => "program_affiliate",
    }
}

/// A count or an amount as written: `10`, or `"500.00"` for a payout cap (in
/// the program's currency).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Limit {
    /// A whole number.
    Count(i64),
    /// Decimal text (payout caps, in the program's currency).
    Text(String),
}

/// A rule as written in the catalogue (`[[rules]]`), the admin API (JSON)
/// and the CLI: every field a check may take; the ones a check does not
/// take must be absent. Unknown fields are refused by name.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Id: letters, digits, `-` and `_`, at most 64 bytes; shown with every
    /// verdict.
    pub id: String,
    /// What it looks at: `visitor_velocity`, `link_velocity`, `hosting`,
    /// `anonymous`, `countries`, `referrers`, `paid_search`, `excluded`,
    /// `ctit`, `self_referral`, `duplicate_ip`, `conversion_rate`,
    /// `geo_mismatch`, `cap`.
    pub check: String,
    /// `allow`, `flag`, `hold` (conversion checks), `reject`, `block` (click
    /// checks).
    pub action: String,
    /// Scope: this program's slug only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Scope: this affiliate's slug only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affiliate: Option<String>,
    /// Velocity, duplicate IP, caps: the most allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// Velocity, duplicate IP, conversion rate: the window (`60s`, `1h`, `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Countries or referrer hosts allowed (the only ones, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Countries or referrer hosts blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<Vec<String>>,
    /// CTIT: shortest allowed click-to-conversion time (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// CTIT: longest allowed (default: none beyond the attribution window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// Conversion rate: clicks needed before judging (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_clicks: Option<u32>,
    /// Conversion rate: highest allowed, `"20%"` (default 20%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<String>,
    /// Caps: `clicks`, `conversions`, `payout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Caps: `day` or `month` (in the program's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Caps: `program`, `affiliate` or `program_affiliate` (default: the
    /// rule's own scope; `program` for a global rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// Caps: `hard` (default) or `soft`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Hosting: more ASNs; anonymous: not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asns: Option<Vec<u32>>,
    /// Anonymous: which kinds (`vpn`, `tor`, `proxy`, `residential_proxy`;
    /// default all); paid search: which query keys (default
    /// [`PAID_SEARCH_KEYS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
}

/// A rule that does not compile: the rule's id, the field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule:?}: {field}: {message}")]
pub struct RuleError {
    /// The rule's id as written.
    pub rule: String,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Id, shown with every verdict.
    pub id: Arc<str>,
    /// Scope: program slug.
    pub program: Option<String>,
    /// Scope: affiliate slug.
    pub affiliate: Option<String>,
    /// What it does when tripped.
    pub action: Action,
    /// What it looks at.
    pub check: Check,
}

/// Parses a duration like `60s`, `1h 30m`, `30d` or `PT24H` into µs (days are
/// 24 h). Shared with the configuration's durations.
///
/// # Errors
/// A message naming the text.
pub fn parse_window(s: &str) -> Result<Micros, String> {
    crate::parse_duration(s).and_then(|d| {
        i64::try_from(d.as_micros()).map_err(|_| format!("duration {s:?} is too long"))
    })
}

fn percent_bp(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let n = t.strip_suffix('%').unwrap_or(t).trim();
    let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
    let bad = || format!("{s:?} is not a percentage like \"20%\" or \"2.5%\"");
    if whole.is_empty()
        || frac.len() > 2
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let w: u32 = whole.parse().map_err(|_| bad())?;
    let f: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let bp = w
        .checked_mul(100)
        .and_then(|w| w.checked_add(f))
        .ok_or_else(bad)?;
    if bp > 10_000 {
        return Err(format!("{s:?} is above 100%"));
    }
    Ok(bp)
}

impl Rule {
    /// Compiles a spec. `payout_minor` parses a payout cap's amount in the
    /// program's currency (the caller knows it; a global payout cap needs
    /// the same currency everywhere).
    ///
    /// # Errors
    /// [`RuleError`] naming the rule and the field: an unknown check or
    /// action, an action the check cannot take (`hold` on a click, `block`
    /// on a conversion), a bad window, an unknown country code, a negative
    /// or zero cap, a field the check does not take.
    pub fn compile(
        spec: &RuleSpec,
        payout_minor: &dyn Fn(&str) -> Result<i64, String>,
    ) -> Result<Rule, RuleError> {
        let err = |field: &'static str, message: String| RuleError {
            rule: spec.id.clone(),
            field,
            message,
        };
        let id = spec.id.trim();
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(
                "id",
                "must be 1 to 64 letters, digits, '-' or '_'".into(),
            ));
        }
        let action = Action::parse(spec.action.trim()).ok_or_else(|| {
            err(
                "action",
                format!(
                    "{:?} is not allow, flag, hold, reject or block",
                    spec.action
                ),
            )
        })?;
        // `allow` only names a family to turn off: its numbers may be left out.
        let allow = action == Action::Allow;
        let window = |default: Option<&str>| -> Result<Micros, RuleError> {
            let text = spec
                .window
                .as_deref()
                .or(default)
                .or(allow.then_some("1s"))
                .ok_or_else(|| err("window", "is required for this check (e.g. \"60s\")".into()))?;
            let w = parse_window(text).map_err(|m| err("window", m))?;
            if w <= 0 {
                return Err(err("window", "must be longer than zero".into()));
            }
            Ok(w)
        };
        let count = |default: Option<i64>| -> Result<i64, RuleError> {
            let n = match (&spec.limit, default) {
                (Some(Limit::Count(n)), _) => *n,
                (Some(Limit::Text(t)), _) => t
                    .trim()
                    .parse()
                    .map_err(|_| err("limit", format!("{t:?} is not a whole number")))?,
                (None, Some(d)) => d,
                (None, None) if allow => 1,
                (None, None) => return Err(err("limit", "is required for this check".into())),
            };
            if n < 0 {
                return Err(err("limit", format!("{n} is negative")));
            }
            Ok(n)
        };
        let small =
            |n: i64| u32::try_from(n).map_err(|_| err("limit", format!("{n} is too large")));
        let countries =
            |field: &'static str, v: &Option<Vec<String>>| -> Result<Vec<String>, RuleError> {
                v.iter()
                    .flatten()
                    .map(|c| {
                        let c = c.trim().to_ascii_uppercase();
                        if is_country_code(&c) {
                            Ok(c)
                        } else {
                            Err(err(
                                field,
                                format!("{c:?} is not an ISO 3166-1 alpha-2 country code"),
                            ))
                        }
                    })
                    .collect()
            };
        let hosts =
            |field: &'static str, v: &Option<Vec<String>>| -> Result<Vec<String>, RuleError> {
                v.iter()
                    .flatten()
                    .map(|h| {
                        let h = h.trim().trim_start_matches("*.").to_ascii_lowercase();
                        let host = crate::click::referrer_host(&h).unwrap_or_default();
                        if host.is_empty() || host.contains(' ') {
                            Err(err(field, format!("{h:?} is not a host name")))
                        } else {
                            Ok(host)
                        }
                    })
                    .collect()
            };
        let check = match spec.check.trim() {
            "visitor_velocity" => Check::VisitorVelocity {
                limit: small(count(None)?)?,
                window: window(None)?,
            },
            "link_velocity" => Check::LinkVelocity {
                limit: small(count(None)?)?,
                window: window(None)?,
            },
            "hosting" => Check::Hosting {
                asns: spec.asns.clone().unwrap_or_default(),
            },
            "anonymous" => {
                let mut k = AnonymousKinds::default();
                match &spec.kinds {
                    None => {
                        k = AnonymousKinds {
                            vpn: true,
                            tor: true,
                            proxy: true,
                            residential_proxy: true,
                        }
                    }
                    Some(list) => {
                        for kind in list {
                            match kind.trim() {
                                "vpn" => k.vpn = true,
                                "tor" => k.tor = true,
                                "proxy" => k.proxy = true,
                                "residential_proxy" => k.residential_proxy = true,
                                other => {
                                    return Err(err(
                                        "kinds",
                                        format!(
                                            "{other:?} is not vpn, tor, proxy or residential_proxy"
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
                Check::Anonymous(k)
            }
            "countries" => {
                let allow_list = countries("allow", &spec.allow)?;
                let block = countries("block", &spec.block)?;
                if allow_list.is_empty() && block.is_empty() && !allow {
                    return Err(err("allow", "give allow or block (country codes)".into()));
                }
                Check::Countries {
                    allow: allow_list,
                    block,
                }
            }
            "referrers" => {
                let allow_list = hosts("allow", &spec.allow)?;
                let block = hosts("block", &spec.block)?;
                if allow_list.is_empty() && block.is_empty() && !allow {
                    return Err(err("allow", "give allow or block (host names)".into()));
                }
                Check::Referrers {
                    allow: allow_list,
                    block,
                }
            }
            "paid_search" => Check::PaidSearch {
                keys: match &spec.kinds {
                    Some(k) if !k.is_empty() => k.iter().map(|k| k.trim().to_owned()).collect(),
                    _ => PAID_SEARCH_KEYS.iter().map(|k| (*k).to_owned()).collect(),
                },
            },
            "excluded" => Check::Excluded,
            "ctit" => {
                let dur =
                    |field: &'static str, v: Option<&str>| -> Result<Option<Micros>, RuleError> {
                        v.map(|t| parse_window(t).map_err(|m| err(field, m)))
                            .transpose()
                    };
                let min = dur(
                    "min",
                    spec.min.as_deref().or(spec.max.is_none().then_some("10s")),
                )?;
                let max = dur("max", spec.max.as_deref())?;
                if let (Some(a), Some(b)) = (min, max)
                    && a >= b
                {
                    return Err(err("max", "must be longer than min".into()));
                }
                Check::Ctit { min, max }
            }
            "self_referral" => Check::SelfReferral,
            "duplicate_ip" => Check::DuplicateIp {
                limit: small(count(Some(1))?)?,
                window: window(Some("24h"))?,
            },
            "conversion_rate" => Check::ConversionRate {
                min_clicks: spec.min_clicks.unwrap_or(10),
                max_bp: percent_bp(spec.max_rate.as_deref().unwrap_or("20%"))
                    .map_err(|m| err("max_rate", m))?,
                window: window(Some("30d"))?,
            },
            "geo_mismatch" => Check::GeoMismatch,
            "cap" => {
                let metric = match spec.metric.as_deref().map(str::trim) {
                    Some("clicks") => CapMetric::Clicks,
                    Some("conversions") => CapMetric::Conversions,
                    Some("payout") => CapMetric::Payout,
                    other => {
                        return Err(err(
                            "metric",
                            format!(
                                "{:?} is not clicks, conversions or payout",
                                other.unwrap_or("")
                            ),
                        ));
                    }
                };
                let period = match spec.period.as_deref().map(str::trim) {
                    Some("day") | None => CapPeriod::Day,
                    Some("month") => CapPeriod::Month,
                    Some(other) => {
                        return Err(err("period", format!("{other:?} is not day or month")));
                    }
                };
                let per = match spec.per.as_deref().map(str::trim) {
                    None => match (&spec.program, &spec.affiliate) {
                        (_, None) => CapPer::Program,
                        (None, Some(_)) => CapPer::Affiliate,
                        (Some(_), Some(_)) => CapPer::ProgramAffiliate,
                    },
                    Some("program") => CapPer::Program,
                    Some("affiliate") => CapPer::Affiliate,
                    Some("program_affiliate") => CapPer::ProgramAffiliate,
                    Some(other) => {
                        return Err(err(
                            "per",
                            format!("{other:?} is not program, affiliate or program_affiliate"),
                        ));
                    }
                };
                let hard = match spec.mode.as_deref().map(str::trim) {
                    None | Some("hard") => true,
                    Some("soft") => false,
                    Some(other) => {
                        return Err(err("mode", format!("{other:?} is not hard or soft")));
                    }
                };
                let limit = match (metric, &spec.limit) {
                    (CapMetric::Payout, Some(Limit::Text(t))) => {
                        payout_minor(t).map_err(|m| err("limit", m))?
                    }
                    (CapMetric::Payout, Some(Limit::Count(n))) => {
                        payout_minor(&n.to_string()).map_err(|m| err("limit", m))?
                    }
                    _ => count(None)?,
                };
                if limit <= 0 && !allow {
                    return Err(err("limit", format!("{limit} must be above zero")));
                }
                Check::Cap(Cap {
                    metric,
                    period,
                    per,
                    limit,
                    hard,
                })
            }
            other => {
                return Err(err(
                    "check",
                    format!(
                        "{other:?} is not one of visitor_velocity, link_velocity, hosting, anonymous, countries, referrers, paid_search, excluded, ctit, self_referral, duplicate_ip, conversion_rate, geo_mismatch, cap"
                    ),
                ));
            }
        };
        // Fields the check does not take are mistakes, not silence.
        let takes: &[&str] = match &check {
            Check::VisitorVelocity { .. } | Check::LinkVelocity { .. } => &["limit", "window"],
            Check::DuplicateIp { .. } => &["limit", "window"],
            Check::Hosting { .. } => &["asns"],
            Check::Anonymous(_) | Check::PaidSearch { .. } => &["kinds"],
            Check::Countries { .. } | Check::Referrers { .. } => &["allow", "block"],
            Check::Ctit { .. } => &["min", "max"],
            Check::ConversionRate { .. } => &["min_clicks", "max_rate", "window"],
            Check::Cap(_) => &["metric", "period", "per", "mode", "limit"],
            Check::Excluded | Check::SelfReferral | Check::GeoMismatch => &[],
        };
        let given = [
            ("limit", spec.limit.is_some()),
            ("window", spec.window.is_some()),
            ("allow", spec.allow.is_some()),
            ("block", spec.block.is_some()),
            ("min", spec.min.is_some()),
            ("max", spec.max.is_some()),
            ("min_clicks", spec.min_clicks.is_some()),
            ("max_rate", spec.max_rate.is_some()),
            ("metric", spec.metric.is_some()),
            ("period", spec.period.is_some()),
            ("per", spec.per.is_some()),
            ("mode", spec.mode.is_some()),
            ("asns", spec.asns.is_some()),
            ("kinds", spec.kinds.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(f, g)| *g && !takes.contains(f)) {
            return Err(err(
                "check",
                format!("{} does not take {field}", check.name()),
            ));
        }
        let clicks = check.on_clicks();
        match action {
            Action::Hold if clicks => {
                return Err(err(
                    "action",
                    format!(
                        "{} judges clicks; hold is for conversion checks (use flag or reject)",
                        check.name()
                    ),
                ));
            }
            Action::Block if !clicks => {
                return Err(err(
                    "action",
                    format!(
                        "{} judges conversions; block is for click checks (use reject)",
                        check.name()
                    ),
                ));
            }
            _ => {}
        }
        let slug = |field: &'static str, v: &Option<String>| -> Result<Option<String>, RuleError> {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    crate::id::Slug::parse(s)
                        .map(|s| s.as_str().to_owned())
                        .map_err(|e| err(field, e.to_string()))
                })
                .transpose()
        };
        Ok(Rule {
            id: id.into(),
            program: slug("program", &spec.program)?,
            affiliate: slug("affiliate", &spec.affiliate)?,
            action,
            check,
        })
    }

    /// How specific the scope is: 3 program × affiliate, 2 affiliate,
    /// 1 program, 0 global.
    pub fn specificity(&self) -> u8 {
        match (&self.program, &self.affiliate) {
            (Some(_), Some(_)) => 3,
            (None, Some(_)) => 2,
            (Some(_), None) => 1,
            (None, None) => 0,
        }
    }

    /// `true` when the rule's scope covers this program and affiliate.
    pub fn covers(&self, program: &str, affiliate: Option<&str>) -> bool {
        self.program.as_deref().is_none_or(|p| p == program)
            && self
                .affiliate
                .as_deref()
                .is_none_or(|a| affiliate == Some(a))
    }
}

/// `true` for two ASCII capital letters (ISO 3166-1 alpha-2 shape; the
/// user-assigned `XK` for Kosovo is accepted, as GeoIP databases use it).
fn is_country_code(c: &str) -> bool {
    c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())
}

/// The rules that apply to one program × affiliate, most specific per family
/// (`allow` dropped).
pub fn effective<'a>(rules: &'a [Rule], program: &str, affiliate: Option<&str>) -> Vec<&'a Rule> {
    let mut best: Vec<&Rule> = Vec::new();
    for r in rules.iter().filter(|r| r.covers(program, affiliate)) {
        let fam = r.check.family();
        match best.iter_mut().find(|b| b.check.family() == fam) {
            Some(b) if r.specificity() > b.specificity() => *b = r,
            Some(_) => {}
            None => best.push(r),
        }
    }
    best.retain(|r| r.action != Action::Allow);
    best
}

/// A verdict: the rule that decided, what it does, and why, in a sentence.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The rule's id (`rate_limited` for the built-in rate limit).
    pub rule: String,
    /// What it does.
    pub action: Action,
    /// "7 clicks from this visitor on this link in 60 s; limit 5".
    pub reason: String,
}

fn stronger(a: Option<Verdict>, b: Verdict) -> Option<Verdict> {
    match a {
        Some(a) if a.action >= b.action => Some(a),
        _ => Some(b),
    }
}

/// A duration for a sentence: `45 s`, `10 min`, `2 h`, `30 d`.
pub fn duration_words(us: Micros) -> String {
    let s = us / crate::MICROS_PER_SEC;
    if s != 0 && s % 86_400 == 0 {
        format!("{} d", s / 86_400)
    } else if s != 0 && s % 3600 == 0 {
        format!("{} h", s / 3600)
    } else if s != 0 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// What the redirect knows of the address a click came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Its organisation.
    pub org: Option<String>,
    /// `is_hosting_provider` of the anonymous-IP database.
    pub hosting: bool,
    /// The anonymous-IP database's kinds of this address.
    pub anonymous: AnonymousKinds,
}

/// What a click's rules are given.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClickSignals<'a> {
    /// Country code from GeoIP.
    pub country: Option<&'a str>,
    /// Host of the referrer.
    pub referrer_host: Option<&'a str>,
    /// The first paid-search key found in the query, for links of an affiliate.
    pub query_keys: &'a [&'a str],
    /// The address's network (when a network database is configured).
    pub network: Option<&'a Network>,
    /// The label of the exclusion entry the click matched (merchant's or
    /// publisher's own traffic).
    pub excluded: Option<&'a str>,
    /// The click matched an exclusion entry of the link's own affiliate.
    pub own_affiliate: bool,
    /// Clicks by this visitor on this link in the visitor-velocity window,
    /// this one included.
    pub visitor_clicks: u32,
    /// Clicks on this link in the link-velocity window, this one included.
    pub link_clicks: u32,
    /// `true` when the link has an affiliate.
    pub affiliate_link: bool,
}

/// The click rules of one link, compiled when the link cache is built.
#[derive(Debug, Clone, Default)]
pub struct ClickRules {
    rules: Vec<Rule>,
}

impl ClickRules {
    /// The click rules among `effective` ones.
    pub fn new(effective: &[&Rule]) -> Self {
        Self {
            rules: effective
                .iter()
                .filter(|r| r.check.on_clicks() && !matches!(r.check, Check::Cap(_)))
                .map(|r| (*r).clone())
                .collect(),
        }
    }

    /// `true` when no click rule applies (the redirect skips evaluation).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The visitor-velocity window (µs) and limit, if that rule applies.
    pub fn visitor_window(&self) -> Option<(Micros, u32)> {
        self.rules.iter().find_map(|r| match r.check {
            Check::VisitorVelocity { window, limit } => Some((window, limit)),
            _ => None,
        })
    }

    /// The link-velocity window (µs) and limit, if that rule applies.
    pub fn link_window(&self) -> Option<(Micros, u32)> {
        self.rules.iter().find_map(|r| match r.check {
            Check::LinkVelocity { window, limit } => Some((window, limit)),
            _ => None,
        })
    }

    /// `true` when a rule needs the address's network.
    pub fn wants_network(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.check, Check::Hosting { .. } | Check::Anonymous(_)))
    }

    /// The strongest tripped rule, or `None`.
    pub fn evaluate(&self, s: &ClickSignals<'_>) -> Option<Verdict> {
        let mut out = None;
        for r in &self.rules {
            if let Some(reason) = click_reason(&r.check, s) {
                out = stronger(
                    out,
                    Verdict {
                        rule: r.id.to_string(),
                        action: r.action,
                        reason,
                    },
                );
            }
        }
        out
    }
}

fn host_matches(host: &str, entry: &str) -> bool {
    host == entry
        || host
            .strip_suffix(entry)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn click_reason(check: &Check, s: &ClickSignals<'_>) -> Option<String> {
    match check {
        Check::VisitorVelocity { limit, window } => (s.visitor_clicks > *limit).then(|| {
            format!(
                "{} clicks from this visitor on this link in {}; limit {limit}",
                s.visitor_clicks,
                duration_words(*window)
            )
        }),
        Check::LinkVelocity { limit, window } => (s.link_clicks > *limit).then(|| {
            format!(
                "{} clicks on this link in {}; limit {limit}",
                s.link_clicks,
                duration_words(*window)
            )
        }),
        Check::Hosting { asns } => {
            let n = s.network?;
            let listed = n
                .asn
                .is_some_and(|a| HOSTING_ASNS.contains(&a) || asns.contains(&a));
            (listed || n.hosting).then(|| match (n.asn, &n.org) {
                (Some(a), Some(o)) if listed => format!("from a hosting network: AS{a} {o}"),
                (Some(a), None) if listed => format!("from a hosting network: AS{a}"),
                _ => "from a hosting provider's address (anonymous-IP database)".to_owned(),
            })
        }
        Check::Anonymous(k) => {
            let a = s.network?.anonymous;
            let hit = [
                (k.tor && a.tor, "a Tor exit node"),
                (k.vpn && a.vpn, "a VPN"),
                (k.proxy && a.proxy, "a public proxy"),
                (
                    k.residential_proxy && a.residential_proxy,
                    "a residential proxy",
                ),
            ]
            .into_iter()
            .find(|(h, _)| *h)?;
            Some(format!("from {} (anonymous-IP database)", hit.1))
        }
        Check::Countries { allow, block } => {
            let c = s.country?;
            if block.iter().any(|b| b == c) {
                Some(format!("country {c} is blocked for this program"))
            } else if !allow.is_empty() && !allow.iter().any(|a| a == c) {
                Some(format!(
                    "country {c} is not among the allowed ({})",
                    allow.join(", ")
                ))
            } else {
                None
            }
        }
        Check::Referrers { allow, block } => {
            let h = s.referrer_host?;
            if block.iter().any(|b| host_matches(h, b)) {
                Some(format!("referrer {h} is blocked"))
            } else if !allow.is_empty() && !allow.iter().any(|a| host_matches(h, a)) {
                Some(format!("referrer {h} is not among the allowed sites"))
            } else {
                None
            }
        }
        Check::PaidSearch { keys } => {
            if !s.affiliate_link {
                return None;
            }
            let k = s.query_keys.iter().find(|q| keys.iter().any(|k| k == *q))?;
            Some(format!(
                "paid-search click id {k} on an affiliate link; this program forbids PPC"
            ))
        }
        Check::Excluded => s
            .excluded
            .map(|label| format!("excluded internal traffic ({label})")),
        _ => None,
    }
}

/// What a conversion's rules are given.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConversionSignals<'a> {
    /// Click-to-conversion time, µs.
    pub ctit: Option<Micros>,
    /// The buyer matched an exclusion entry of the click's affiliate, or the
    /// click did.
    pub self_referral: bool,
    /// Earlier conversions of this affiliate from this buyer address in the
    /// duplicate-IP window (this one not included).
    pub same_ip_conversions: Option<u32>,
    /// Human clicks and conversions of this affiliate in the program in the
    /// conversion-rate window (this one included).
    pub clicks_and_conversions: Option<(u64, u64)>,
    /// The click's country.
    pub click_country: Option<&'a str>,
    /// The buyer's country (from the conversion's address).
    pub conversion_country: Option<&'a str>,
    /// The click's own verdict, when it was rejected or blocked.
    pub click_verdict: Option<&'a Verdict>,
}

/// The conversion rules of one program × affiliate.
#[derive(Debug, Clone, Default)]
pub struct ConversionRules {
    rules: Vec<Rule>,
}

impl ConversionRules {
    /// The conversion rules (and caps) among `effective` ones.
    pub fn new(effective: &[&Rule]) -> Self {
        Self {
            rules: effective
                .iter()
                .filter(|r| !r.check.on_clicks() || matches!(r.check, Check::Cap(_)))
                .map(|r| (*r).clone())
                .collect(),
        }
    }

    /// The duplicate-IP window, if that rule applies.
    pub fn duplicate_ip_window(&self) -> Option<Micros> {
        self.rules.iter().find_map(|r| match r.check {
            Check::DuplicateIp { window, .. } => Some(window),
            _ => None,
        })
    }

    /// The conversion-rate window, if that rule applies.
    pub fn conversion_rate_window(&self) -> Option<Micros> {
        self.rules.iter().find_map(|r| match r.check {
            Check::ConversionRate { window, .. } => Some(window),
            _ => None,
        })
    }

    /// The caps that apply, with their rule ids.
    pub fn caps(&self) -> impl Iterator<Item = (&str, &Cap)> {
        self.rules.iter().filter_map(|r| match &r.check {
            Check::Cap(c) => Some((&*r.id, c)),
            _ => None,
        })
    }

    /// The strongest tripped rule (caps are decided by the store), or `None`.
    /// A conversion of a click that was rejected or blocked is held at least,
    /// with the click's reason.
    pub fn evaluate(&self, s: &ConversionSignals<'_>) -> Option<Verdict> {
        let mut out = s
            .click_verdict
            .filter(|v| v.action.invalidates())
            .map(|v| Verdict {
                rule: v.rule.clone(),
                action: Action::Hold,
                reason: format!("its click was judged invalid: {}", v.reason),
            });
        for r in &self.rules {
            if let Some(reason) = conversion_reason(&r.check, s) {
                out = stronger(
                    out,
                    Verdict {
                        rule: r.id.to_string(),
                        action: r.action,
                        reason,
                    },
                );
            }
        }
        out
    }
}

fn conversion_reason(check: &Check, s: &ConversionSignals<'_>) -> Option<String> {
    match check {
        Check::Ctit { min, max } => {
            let t = s.ctit?;
            if let Some(m) = min
                && t < *m
            {
                return Some(format!(
                    "converted {} after the click; minimum {}",
                    duration_words(t),
                    duration_words(*m)
                ));
            }
            if let Some(m) = max
                && t > *m
            {
                return Some(format!(
                    "converted {} after the click; maximum {}",
                    duration_words(t - t % crate::MICROS_PER_SEC),
                    duration_words(*m)
                ));
            }
            None
        }
        Check::SelfReferral => s
            .self_referral
            .then(|| "the buyer is the affiliate's own traffic (self-referral)".to_owned()),
        Check::DuplicateIp { limit, window } => {
            let n = s.same_ip_conversions?;
            (n >= *limit).then(|| {
                format!(
                    "{} conversions of this affiliate from this buyer's address in {}; limit {limit}",
                    n + 1,
                    duration_words(*window)
                )
            })
        }
        Check::ConversionRate {
            min_clicks,
            max_bp,
            window,
        } => {
            let (clicks, conversions) = s.clicks_and_conversions?;
            if clicks < u64::from(*min_clicks) || clicks == 0 {
                return None;
            }
            let bp = conversions.saturating_mul(10_000) / clicks;
            (bp > u64::from(*max_bp)).then(|| {
                format!(
                    "conversion rate {}.{:02}% ({conversions} of {clicks} clicks in {}); maximum {}.{:02}%",
                    bp / 100,
                    bp % 100,
                    duration_words(*window),
                    max_bp / 100,
                    max_bp % 100
                )
            })
        }
        Check::GeoMismatch => {
            let (a, b) = (s.click_country?, s.conversion_country?);
            (a != b).then(|| format!("click from {a}, conversion from {b}"))
        }
        _ => None,
    }
}

/// One cap counter a conversion (or click) takes from, decided by the store
/// in the same transaction as the conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapClaim {
    /// The cap's rule id.
    pub rule: String,
    /// The counter: `conversions:program=3`, `payout:program=3:affiliate=7`.
    pub key: String,
    /// The period: `2026-12-02` or `2026-12` (program's time zone).
    pub period: String,
    /// How much this takes (1, or the commission in minor units).
    pub amount: i64,
    /// The cap.
    pub limit: i64,
    /// Hard (reject beyond) or soft (flag beyond).
    pub hard: bool,
    /// The cap in words: "10 conversions a day for this program".
    pub words: String,
}

impl CapClaim {
    /// The verdict of what this hard cap refuses (`action`: `reject` for a
    /// conversion, `block` for a click): "cap reached: 10 conversions a day
    /// for this program (10 of 10 used)".
    pub fn refused(&self, action: Action) -> Verdict {
        Verdict {
            rule: self.rule.clone(),
            action,
            reason: format!(
                "cap reached: {} ({} of {} used)",
                self.words, self.limit, self.limit
            ),
        }
    }

    /// The `flag` of what this soft cap let through with `used` taken.
    pub fn over_soft(&self, used: i64) -> Verdict {
        Verdict {
            rule: self.rule.clone(),
            action: Action::Flag,
            reason: format!("over a soft cap: {} ({used} used)", self.words),
        }
    }
}

/// What a cap claim is about: the conversion's (or click's) program,
/// affiliate, time, and commission (for payout caps), with the program's
/// time zone and currency.
#[derive(Debug, Clone, Copy)]
pub struct CapSubject<'a> {
    /// Program id.
    pub program_id: i64,
    /// Affiliate id; `None` counts on no affiliate cap.
    pub affiliate_id: Option<i64>,
    /// When, UTC µs.
    pub ts: Micros,
    /// The program's time zone (its days and months).
    pub tz: &'a jiff::tz::TimeZone,
    /// Commission, minor units (what a payout cap counts).
    pub commission: i64,
    /// The program's currency.
    pub currency: crate::money::Currency,
}

/// The claims of one conversion (or click) on the caps that apply.
pub fn cap_claims<'a>(
    caps: impl Iterator<Item = (&'a str, &'a Cap)>,
    metric: CapMetric,
    subject: &CapSubject<'_>,
) -> Vec<CapClaim> {
    let CapSubject {
        program_id,
        affiliate_id,
        ts,
        tz,
        commission,
        currency,
    } = *subject;
    let Some(date) = crate::report::local_date(ts, tz) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (rule, cap) in caps {
        let counts = matches!(
            (metric, cap.metric),
            (CapMetric::Clicks, CapMetric::Clicks)
                | (
                    CapMetric::Conversions,
                    CapMetric::Conversions | CapMetric::Payout
                )
        );
        if !counts {
            continue;
        }
        let (key, whom) = match (cap.per, affiliate_id) {
            (CapPer::Program, _) => (format!("program={program_id}"), "this program"),
            (CapPer::Affiliate, Some(a)) => (format!("affiliate={a}"), "this affiliate"),
            (CapPer::ProgramAffiliate, Some(a)) => (
                format!("program={program_id}:affiliate={a}"),
                "this affiliate in this program",
            ),
            // A conversion without an affiliate counts on no affiliate cap.
            (_, None) => continue,
        };
        let period = match cap.period {
            CapPeriod::Day => format!("{date}"),
            CapPeriod::Month => format!("{:04}-{:02}", date.year(), date.month()),
        };
        let when = match cap.period {
            CapPeriod::Day => "a day",
            CapPeriod::Month => "a month",
        };
        let (amount, words) = match cap.metric {
            CapMetric::Clicks => (1, format!("{} clicks {when} for {whom}", cap.limit)),
            CapMetric::Conversions => (1, format!("{} conversions {when} for {whom}", cap.limit)),
            CapMetric::Payout => (
                commission,
                format!(
                    "{} {} of commission {when} for {whom}",
                    currency.format(cap.limit),
                    currency.code()
                ),
            ),
        };
        out.push(CapClaim {
            rule: rule.to_owned(),
            key: format!("{}:{key}", cap_metric_name(cap.metric)),
            period,
            amount,
            limit: cap.limit,
            hard: cap.hard,
            words,
        });
    }
    out
}

#[cfg(test)]
mod tests;
