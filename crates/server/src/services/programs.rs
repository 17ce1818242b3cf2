//! Everything a program can be told, said the same way by the catalogue
//! file, the admin API, the CLI and the dashboard ([`ProgramSpec`]), and
//! what they show of it ([`ProgramView`]).
//!
//! Durations are written as in the configuration (`30d`, `12h`), money in
//! major units of the program currency (`50.00`), commission plans either
//! as the catalogue's table (`{ default = { type = "share", bps = 1000 } }`)
//! or as people type them (`default=10%, lead=2.00`, see
//! `CommissionPlan::parse_text`).

use clickward_core::commission::CommissionPlan;
use clickward_core::id::Slug;
use clickward_core::link::{Program, Status};
use clickward_core::money::Currency;
use clickward_core::program::{
    AttributionModel, PixelMode, ProgramSettings, ShopifySettings, StripeSettings, UnknownClick,
};
use clickward_store::{ProgramInput, SaveMode, Store, StoreError};
use serde::{Deserialize, Deserializer, Serialize};

/// A commission plan as the catalogue's table or as text.
#[derive(utoipa::ToSchema, Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CommissionSpec {
    /// `{ default = { type = "share", bps = 1000 }, events = { … } }`.
    Plan(CommissionPlan),
    /// `default=10%, lead=2.00` in the program currency.
    Text(String),
}

impl CommissionSpec {
    /// The plan, amounts read in `currency`.
    ///
    /// # Errors
    /// A sentence naming the bad rate.
    pub fn plan(&self, currency: Currency) -> Result<CommissionPlan, String> {
        let plan = match self {
            CommissionSpec::Plan(p) => p.clone(),
            CommissionSpec::Text(t) => CommissionPlan::parse_text(t, currency)?,
        };
        plan.validate().map_err(|e| e.to_string())?;
        Ok(plan)
    }
}

/// `null` (clear) apart from absent (keep): absent is `None`, `null` is
/// `Some(None)`.
fn clearable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A program as the catalogue file declares it and as the API, the CLI and
/// the dashboard create or change it. Every field may be left out: on
/// create it takes the default (USD, 30-day windows, last click, an empty
/// plan that pays 0, approval by hand, no minimum payout, a random postback
/// token); on change it keeps what is stored. In JSON, `"hold": null` and
/// `"click_id_param": null` clear those.
///
/// Postback credentials can be set and rotated, not removed: a token or a
/// secret left out keeps the stored one.
#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// Slug (required on create and in the catalogue; on change, when
    /// given, the program's own).
    pub slug: Option<Slug>,
    /// Display name (default: the slug).
    pub name: Option<String>,
    /// Active or disabled.
    pub status: Option<Status>,
    /// ISO 4217 code of amounts and commissions.
    #[schema(value_type = Option<clickward_core::money::Currency>)]
    pub currency: Option<String>,
    /// Max-Age of the attribution cookie (`30d`; the document shows days,
    /// any `jiff` span such as `36h` is taken).
    #[schema(pattern = r"^[1-9][0-9]{0,2}d$")]
    pub cookie_window: Option<String>,
    /// Longest click-to-conversion time accepted (`30d`).
    #[schema(pattern = r"^[1-9][0-9]{0,2}d$")]
    pub attribution_window: Option<String>,
    /// `last_click` or `first_click`.
    pub attribution: Option<AttributionModel>,
    /// What affiliates earn.
    pub commission: Option<CommissionSpec>,
    /// Pending conversions are approved this long after they arrive
    /// (`14d`); `null` or `"manual"`: only by hand.
    #[serde(default, deserialize_with = "clearable")]
    #[schema(value_type = Option<String>, pattern = r"^([1-9][0-9]{0,2}d|manual)$")]
    pub hold: Option<Option<String>>,
    /// Token a postback must carry; secret.
    pub postback_token: Option<String>,
    /// HMAC-SHA256 key; when set, postbacks must be signed. Secret.
    pub postback_secret: Option<String>,
    /// When not empty, postbacks are accepted only from these IPs / CIDRs.
    pub postback_ips: Option<Vec<String>>,
    /// Also append the click id to the destination under this query key.
    #[serde(default, deserialize_with = "clearable")]
    #[schema(value_type = Option<String>, pattern = r"^[A-Za-z0-9_]{1,32}$")]
    pub click_id_param: Option<Option<String>>,
    /// Smallest payable balance paid out (`50.00`).
    #[schema(pattern = r"^[0-9]{1,7}(\.[0-9]{1,2})?$")]
    pub min_payout: Option<String>,
    /// What the conversion pixel may do: `off` (the default), `on` (held
    /// for review, within `pixel_max_amount`) or `signed`.
    pub pixel: Option<PixelMode>,
    /// Largest amount a pixel may report (`100.00`); `null`: no bound.
    #[serde(default, deserialize_with = "clearable")]
    #[schema(value_type = Option<String>, pattern = r"^[0-9]{1,7}(\.[0-9]{1,2})?$")]
    pub pixel_max_amount: Option<Option<String>>,
    /// IANA time zone of the program's days (`Asia/Tokyo`); caps reset at
    /// its midnight. Default `UTC`.
    #[schema(schema_with = clickward_core::schema::time_zone)]
    pub timezone: Option<String>,
    /// Where blocked and over-cap clicks go instead of the merchant (an
    /// `http(s)` URL); `null`: a "not available" page.
    #[serde(default, deserialize_with = "clearable")]
    #[schema(value_type = Option<String>, pattern = r"^https?://[^\s/?#]+")]
    pub fallback_url: Option<Option<String>>,
    /// What visitors who send `Sec-GPC: 1` get: `cookie` (the default) or
    /// `cookieless` (docs/privacy.md, "Consent").
    pub consent: Option<clickward_core::program::ConsentMode>,
    /// Stripe's webhooks as a conversion source (docs/integrations.md);
    /// `null` turns it off.
    #[serde(default, deserialize_with = "clearable")]
    pub stripe: Option<Option<StripeSpec>>,
    /// Shopify's webhooks as a conversion source (docs/integrations.md);
    /// `null` turns it off.
    #[serde(default, deserialize_with = "clearable")]
    pub shopify: Option<Option<ShopifySpec>>,
}

/// A program's Stripe endpoint as told (every field may be left out on a
/// change: it keeps what is stored; `secrets` are needed the first time).
#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSpec {
    /// The endpoint's signing secrets (`whsec_…`), 1 to 4 (two while
    /// rotating). Secret: never shown again.
    pub secrets: Option<Vec<String>>,
    /// `first` (the default), `forever` or `<n> months`.
    pub recurring: Option<clickward_core::program::Recurring>,
    /// `store` (the default: unattributed) or `refuse`.
    pub unknown_click: Option<UnknownClick>,
    /// Oldest signature accepted (`5m`, the default).
    pub tolerance: Option<String>,
}

/// A program's Shopify endpoint as told (as [`StripeSpec`]).
#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifySpec {
    /// The app's client secrets, 1 to 4. Secret: never shown again.
    pub secrets: Option<Vec<String>>,
    /// Note attribute or landing-site parameter of the click id
    /// (`cw_click`, the default).
    pub click_param: Option<String>,
    /// `store` (the default: unattributed) or `refuse`.
    pub unknown_click: Option<UnknownClick>,
}

/// `secrets` checked: 1 to 4, each 1 to 256 printable characters.
fn secrets(
    what: &str,
    given: Option<&Vec<String>>,
    kept: Option<Vec<String>>,
) -> Result<Vec<String>, String> {
    let Some(given) = given else {
        return kept.ok_or_else(|| format!("{what}.secrets: give the endpoint's signing secret"));
    };
    if given.is_empty() || given.len() > 4 {
        return Err(format!("{what}.secrets: give 1 to 4 secrets"));
    }
    for v in given {
        if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
            return Err(format!(
                "{what}.secrets: each is 1 to 256 printable characters"
            ));
        }
    }
    Ok(given.clone())
}

impl StripeSpec {
    fn over(&self, base: Option<StripeSettings>) -> Result<StripeSettings, String> {
        let secrets = secrets(
            "stripe",
            self.secrets.as_ref(),
            base.as_ref().map(|b| b.secrets.clone()),
        )?;
        let mut s = base.unwrap_or(StripeSettings {
            secrets: Vec::new(),
            recurring: Default::default(),
            unknown_click: Default::default(),
            tolerance_s: 300,
        });
        s.secrets = secrets;
        if let Some(r) = self.recurring {
            s.recurring = r;
        }
        if let Some(u) = self.unknown_click {
            s.unknown_click = u;
        }
        if let Some(t) = &self.tolerance {
            s.tolerance_s = seconds("stripe.tolerance", t)?;
            if !(1..=86_400).contains(&s.tolerance_s) {
                return Err("stripe.tolerance: give 1s to 1d".to_owned());
            }
        }
        Ok(s)
    }
}

impl ShopifySpec {
    fn over(&self, base: Option<ShopifySettings>) -> Result<ShopifySettings, String> {
        let secrets = secrets(
            "shopify",
            self.secrets.as_ref(),
            base.as_ref().map(|b| b.secrets.clone()),
        )?;
        let mut s = base.unwrap_or(ShopifySettings {
            secrets: Vec::new(),
            click_param: "cw_click".to_owned(),
            unknown_click: Default::default(),
        });
        s.secrets = secrets;
        if let Some(p) = &self.click_param {
            let p = p.trim();
            if p.is_empty()
                || p.len() > 64
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "shopify.click_param: {p:?} is not 1 to 64 letters, digits, '_' or '-'"
                ));
            }
            s.click_param = p.to_owned();
        }
        if let Some(u) = self.unknown_click {
            s.unknown_click = u;
        }
        Ok(s)
    }
}

fn seconds(what: &str, text: &str) -> Result<i64, String> {
    let d = crate::process::config::parse_duration(text).map_err(|e| format!("{what}: {e}"))?;
    i64::try_from(d.as_secs()).map_err(|_| format!("{what}: {text:?} is too long"))
}

/// Seconds in the largest unit that divides them (`30d`, `36h`, `90s`).
pub fn duration_text(s: i64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s != 0 && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

impl ProgramSpec {
    /// The settings this spec gives on top of `base`: what it leaves out
    /// keeps `base`'s. Credentials left out are `None` (the store keeps the
    /// stored ones).
    ///
    /// # Errors
    /// A sentence naming the field at fault.
    pub fn settings_over(&self, base: ProgramSettings) -> Result<ProgramSettings, String> {
        let mut s = base;
        if let Some(c) = &self.currency {
            s.currency = Currency::parse(c).map_err(|e| format!("currency: {e}"))?;
        }
        if let Some(w) = &self.cookie_window {
            s.cookie_window_s = seconds("cookie_window", w)?;
        }
        if let Some(w) = &self.attribution_window {
            s.attribution_window_s = seconds("attribution_window", w)?;
        }
        if let Some(a) = self.attribution {
            s.attribution = a;
        }
        if let Some(c) = &self.commission {
            s.commission = c.plan(s.currency).map_err(|e| format!("commission: {e}"))?;
        }
        match &self.hold {
            None => {}
            Some(None) => s.hold_s = None,
            Some(Some(h)) if h.trim() == "manual" => s.hold_s = None,
            Some(Some(h)) => s.hold_s = Some(seconds("hold", h)?),
        }
        if let Some(ips) = &self.postback_ips {
            for ip in ips {
                if ip.parse::<ipnet::IpNet>().is_err() && ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(format!("postback_ips: {ip:?} is not an IP address or CIDR"));
                }
            }
            s.postback_ips = ips.clone();
        }
        match &self.click_id_param {
            None => {}
            Some(None) => s.click_id_param = None,
            Some(Some(p)) => {
                if p.is_empty()
                    || p.len() > 64
                    || !p
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!("click_id_param: {p:?} is not a plain query key"));
                }
                s.click_id_param = Some(p.clone());
            }
        }
        if let Some(m) = &self.min_payout {
            s.min_payout = s
                .currency
                .parse_amount(m)
                .map_err(|e| format!("min_payout: {e}"))?;
        }
        if let Some(p) = self.pixel {
            s.pixel = p;
        }
        match &self.pixel_max_amount {
            None => {}
            Some(None) => s.pixel_max_amount = None,
            Some(Some(m)) => {
                s.pixel_max_amount = Some(
                    s.currency
                        .parse_amount(m)
                        .map_err(|e| format!("pixel_max_amount: {e}"))?,
                );
            }
        }
        if let Some(tz) = &self.timezone {
            jiff::tz::TimeZone::get(tz.trim()).map_err(|_| {
                format!("timezone: {tz:?} is not an IANA time zone like \"Asia/Tokyo\" or \"UTC\"")
            })?;
            s.timezone = tz.trim().to_owned();
        }
        match &self.fallback_url {
            None => {}
            Some(None) => s.fallback_url = None,
            Some(Some(u)) => {
                let ok = url::Url::parse(u.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                if ok.is_none() {
                    return Err(format!(
                        "fallback_url: {u:?} is not an absolute http or https URL"
                    ));
                }
                s.fallback_url = Some(u.trim().to_owned());
            }
        }
        if let Some(c) = self.consent {
            s.consent = c;
        }
        match &self.stripe {
            None => {}
            Some(None) => s.stripe = None,
            Some(Some(spec)) => s.stripe = Some(spec.over(s.stripe.take())?),
        }
        match &self.shopify {
            None => {}
            Some(None) => s.shopify = None,
            Some(Some(spec)) => s.shopify = Some(spec.over(s.shopify.take())?),
        }
        if s.pixel == PixelMode::Signed
            && s.postback_secret.is_none()
            && self.postback_secret.is_none()
        {
            return Err("pixel = \"signed\" needs a postback_secret to sign with".to_owned());
        }
        for (what, v) in [
            ("postback_token", &self.postback_token),
            ("postback_secret", &self.postback_secret),
        ] {
            if let Some(v) = v
                && (v.is_empty() || v.len() > 256 || v.chars().any(char::is_control))
            {
                return Err(format!(
                    "{what}: give 1 to 256 printable characters (a long random one is best)"
                ));
            }
        }
        s.postback_token = self.postback_token.clone();
        s.postback_secret = self.postback_secret.clone();
        Ok(s)
    }

    /// The settings of a new program: the defaults with this spec on top.
    ///
    /// # Errors
    /// As [`ProgramSpec::settings_over`].
    pub fn new_settings(&self) -> Result<ProgramSettings, String> {
        let usd = Currency::parse("USD").map_err(|e| e.to_string())?;
        self.settings_over(ProgramSettings::new(usd))
    }
}

/// A program with its settings, as the API and the CLI show it: the
/// [`ProgramSpec`] fields in the same words (so a shown value can be sent
/// back), the postback secret only as whether one is set.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct ProgramView {
    /// Database id.
    pub id: i64,
    /// Slug.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Active or disabled.
    pub status: Status,
    /// `catalog` or `admin` (`clickward_core::link::Owner`).
    pub owner: clickward_core::link::Owner,
    /// ISO 4217 code.
    pub currency: String,
    /// `30d`-style.
    pub cookie_window: String,
    /// `30d`-style.
    pub attribution_window: String,
    /// `last_click` or `first_click`.
    pub attribution: AttributionModel,
    /// The plan as the catalogue writes it.
    pub commission: CommissionPlan,
    /// The plan as people type it (`default=10%, lead=2.00`).
    pub commission_text: String,
    /// `14d`-style; `null`: approval by hand.
    pub hold: Option<String>,
    /// The token postbacks carry (admins configure the merchant with it).
    pub postback_token: Option<String>,
    /// Whether postbacks must be signed (a secret is set; never shown).
    pub postback_signed: bool,
    /// Allowed postback sources; empty: any.
    pub postback_ips: Vec<String>,
    /// Extra query key for the click id on the destination.
    pub click_id_param: Option<String>,
    /// Decimal, program currency.
    pub min_payout: String,
    /// `off`, `on` or `signed`.
    pub pixel: PixelMode,
    /// Decimal, program currency; `null`: no bound.
    pub pixel_max_amount: Option<String>,
    /// IANA time zone of the program's days.
    pub timezone: String,
    /// Where blocked and over-cap clicks go.
    pub fallback_url: Option<String>,
    /// What visitors who send `Sec-GPC: 1` get.
    pub consent: clickward_core::program::ConsentMode,
    /// Stripe's webhooks, when set up (`POST /integrations/stripe/{slug}`).
    pub stripe: Option<IntegrationView>,
    /// Shopify's webhooks, when set up (`POST /integrations/shopify/{slug}`).
    pub shopify: Option<IntegrationView>,
}

/// A program's platform endpoint as shown: its settings, the number of
/// secrets (never the secrets).
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct IntegrationView {
    /// Where the platform sends its webhooks (a path on this server).
    pub endpoint: String,
    /// How many signing secrets are set.
    pub secrets: usize,
    /// Stripe: `first`, `forever` or `<n> months`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurring: Option<clickward_core::program::Recurring>,
    /// Stripe: oldest signature accepted (`5m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
    /// Shopify: where the click id is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click_param: Option<String>,
    /// `store` or `refuse`.
    pub unknown_click: UnknownClick,
}

impl ProgramView {
    /// `p` with its settings `s`.
    pub fn of(p: Program, s: &ProgramSettings) -> Self {
        let stripe_path = format!("/integrations/stripe/{}", p.slug);
        let shopify_path = format!("/integrations/shopify/{}", p.slug);
        ProgramView {
            id: p.id,
            slug: p.slug,
            name: p.name,
            status: p.status,
            owner: p.owner,
            currency: s.currency.code().to_owned(),
            cookie_window: duration_text(s.cookie_window_s),
            attribution_window: duration_text(s.attribution_window_s),
            attribution: s.attribution,
            commission: s.commission.clone(),
            commission_text: s.commission.text(s.currency),
            hold: s.hold_s.map(duration_text),
            postback_token: s.postback_token.clone(),
            postback_signed: s.postback_secret.is_some(),
            postback_ips: s.postback_ips.clone(),
            click_id_param: s.click_id_param.clone(),
            min_payout: s.currency.format(s.min_payout),
            pixel: s.pixel,
            pixel_max_amount: s.pixel_max_amount.map(|m| s.currency.format(m)),
            timezone: s.timezone.clone(),
            fallback_url: s.fallback_url.clone(),
            consent: s.consent,
            stripe: s.stripe.as_ref().map(|st| IntegrationView {
                endpoint: stripe_path,
                secrets: st.secrets.len(),
                recurring: Some(st.recurring),
                tolerance: Some(duration_text(st.tolerance_s)),
                click_param: None,
                unknown_click: st.unknown_click,
            }),
            shopify: s.shopify.as_ref().map(|sh| IntegrationView {
                endpoint: shopify_path,
                secrets: sh.secrets.len(),
                recurring: None,
                tolerance: None,
                click_param: Some(sh.click_param.clone()),
                unknown_click: sh.unknown_click,
            }),
        }
    }
}

/// What a spec could not do.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field is wrong; nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The store's answer (`Conflict`, `NotFound`, …).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A display name as stored: control characters removed, at most 200
/// bytes; the slug when none (or nothing printable) is given.
pub(crate) fn display_name(name: Option<&str>, slug: &Slug) -> String {
    let n = clickward_core::clean_text(name.unwrap_or("").trim(), 200);
    if n.is_empty() { slug.to_string() } else { n }
}

/// Creates a program from `spec` (slug required) with its settings and a
/// postback token, in one write.
///
/// # Errors
/// [`SpecError::Invalid`] for a missing slug or a bad field;
/// `Conflict` when the slug exists.
pub async fn create(store: &dyn Store, spec: &ProgramSpec) -> Result<ProgramView, SpecError> {
    let slug = spec
        .slug
        .clone()
        .ok_or_else(|| SpecError::Invalid("slug: a program needs a slug".into()))?;
    let mut settings = spec.new_settings().map_err(SpecError::Invalid)?;
    if settings.postback_token.is_none() {
        settings.postback_token = Some(crate::services::keys::new_token());
    }
    let input = ProgramInput {
        name: display_name(spec.name.as_deref(), &slug),
        slug: slug.clone(),
        status: spec.status.unwrap_or_default(),
        settings: Some(settings),
    };
    let p = store.save_program(input, SaveMode::Create).await?;
    view(store, p).await
}

/// Changes program `slug` by `spec`: what it leaves out is kept. A change
/// takes the program from the catalogue file (see `Owner`).
///
/// # Errors
/// [`SpecError::Invalid`] for a bad field or another slug in the spec;
/// `NotFound` for an unknown program.
pub async fn update(
    store: &dyn Store,
    slug: Slug,
    spec: &ProgramSpec,
) -> Result<ProgramView, SpecError> {
    if spec.slug.as_ref().is_some_and(|s| *s != slug) {
        return Err(SpecError::Invalid(
            "a program slug cannot be changed".into(),
        ));
    }
    let cur = store.get_program(slug.clone()).await?;
    let settings = spec
        .settings_over(store.program_settings(cur.id).await?)
        .map_err(SpecError::Invalid)?;
    let input = ProgramInput {
        name: match &spec.name {
            Some(n) => display_name(Some(n), &slug),
            None => cur.name,
        },
        slug,
        status: spec.status.unwrap_or(cur.status),
        settings: Some(settings),
    };
    let p = store.save_program(input, SaveMode::Update).await?;
    view(store, p).await
}

/// `p` with its stored settings.
///
/// # Errors
/// Store errors.
pub async fn view(store: &dyn Store, p: Program) -> Result<ProgramView, SpecError> {
    let s = store.program_settings(p.id).await?;
    Ok(ProgramView::of(p, &s))
}

/// A per-affiliate commission override as shown.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct OverrideView {
    /// Affiliate slug.
    pub affiliate: Slug,
    /// The plan as the catalogue writes it.
    pub commission: CommissionPlan,
    /// The plan as people type it.
    pub commission_text: String,
}

/// A program's overrides.
///
/// # Errors
/// `NotFound` for an unknown program.
pub async fn overrides(store: &dyn Store, program: Slug) -> Result<Vec<OverrideView>, SpecError> {
    let p = store.get_program(program.clone()).await?;
    let cur = store.program_settings(p.id).await?.currency;
    Ok(store
        .affiliate_commissions(program)
        .await?
        .into_iter()
        .map(|(affiliate, plan)| OverrideView {
            affiliate,
            commission_text: plan.text(cur),
            commission: plan,
        })
        .collect())
}

/// Sets (`Some`) or removes (`None`) an affiliate's override in a program;
/// the program is admin-owned afterwards.
///
/// # Errors
/// [`SpecError::Invalid`] for a bad plan; `NotFound` for an unknown
/// program or affiliate.
pub async fn set_override(
    store: &dyn Store,
    program: Slug,
    affiliate: Slug,
    plan: Option<&CommissionSpec>,
) -> Result<(), SpecError> {
    let p = store.get_program(program.clone()).await?;
    let plan = match plan {
        Some(spec) => {
            let cur = store.program_settings(p.id).await?.currency;
            Some(spec.plan(cur).map_err(SpecError::Invalid)?)
        }
        None => None,
    };
    store
        .save_affiliate_commission(program, affiliate, plan)
        .await?;
    Ok(())
}
