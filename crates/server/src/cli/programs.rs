//! `clickward program`: add, set, show, list (with postback tokens), and
//! per-affiliate commission overrides. Flags say what the catalogue file
//! says, in its words (`services::programs::ProgramSpec`).

use super::slug;
use clap::{Args, Subcommand};
use clickward_core::link::Status;
use clickward_store::Store;

use crate::services::programs::{self, CommissionSpec, ProgramSpec, ProgramView};

/// Settings flags shared by `program add` and `program set`; each left out
/// takes the default (add) or keeps what is stored (set).
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// ISO 4217 currency of amounts and commissions (default USD).
    #[arg(long)]
    currency: Option<String>,
    /// Max-Age of the attribution cookie, e.g. 30d.
    #[arg(long)]
    cookie_window: Option<String>,
    /// Longest click-to-conversion time accepted, e.g. 30d.
    #[arg(long)]
    attribution_window: Option<String>,
    /// last_click or first_click.
    #[arg(long)]
    attribution: Option<String>,
    /// What affiliates earn, e.g. "default=10%, lead=2.00, sale=1.50+5%"
    /// (amounts in the program currency; a bare rate is the default).
    #[arg(long)]
    commission: Option<String>,
    /// Approve pending conversions this long after they arrive (e.g. 14d);
    /// "manual": only by hand.
    #[arg(long)]
    hold: Option<String>,
    /// Smallest payable balance paid out, e.g. 50.00.
    #[arg(long)]
    min_payout: Option<String>,
    /// Also append the click id to destinations under this query key.
    #[arg(long)]
    click_id_param: Option<String>,
    /// Stop appending the click id under an extra key.
    #[arg(long, conflicts_with = "click_id_param")]
    no_click_id_param: bool,
    /// Accept postbacks only from this IP or CIDR (repeat; replaces the list).
    #[arg(long = "postback-ip")]
    postback_ips: Vec<String>,
    /// Accept postbacks from anywhere again.
    #[arg(long, conflicts_with = "postback_ips")]
    any_postback_ip: bool,
    /// Set or rotate the token postbacks carry.
    #[arg(long)]
    postback_token: Option<String>,
    /// Set or rotate the HMAC key postbacks must then be signed with.
    #[arg(long)]
    postback_secret: Option<String>,
    /// What the conversion pixel may do: off, on (held for review) or
    /// signed (docs/postbacks.md).
    #[arg(long)]
    pixel: Option<String>,
    /// Largest amount a pixel may report, e.g. 100.00.
    #[arg(long)]
    pixel_max_amount: Option<String>,
    /// No bound on pixel amounts.
    #[arg(long, conflicts_with = "pixel_max_amount")]
    no_pixel_max_amount: bool,
    /// IANA time zone of the program's days (caps reset at its midnight),
    /// e.g. Asia/Tokyo.
    #[arg(long)]
    timezone: Option<String>,
    /// Where blocked and over-cap clicks go instead of the merchant.
    #[arg(long)]
    fallback_url: Option<String>,
    /// Blocked clicks get a "not available" page.
    #[arg(long, conflicts_with = "fallback_url")]
    no_fallback_url: bool,
    /// What visitors who send Global Privacy Control get: cookie or
    /// cookieless.
    #[arg(long)]
    consent: Option<String>,
}

impl SpecArgs {
    fn spec(
        self: Box<Self>,
        slug: Option<clickward_core::id::Slug>,
    ) -> anyhow::Result<ProgramSpec> {
        let attribution = match self.attribution.as_deref() {
            None => None,
            Some(a) => Some(
                serde_json::from_value(serde_json::Value::String(a.to_owned())).map_err(|_| {
                    anyhow::anyhow!("--attribution {a:?}: give last_click or first_click")
                })?,
            ),
        };
        let pixel = match self.pixel.as_deref() {
            None => None,
            Some(p) => Some(
                clickward_core::program::PixelMode::parse(p)
                    .ok_or_else(|| anyhow::anyhow!("--pixel {p:?}: give off, on or signed"))?,
            ),
        };
        let consent = match self.consent.as_deref() {
            None => None,
            Some(c) => Some(
                clickward_core::program::ConsentMode::parse(c)
                    .ok_or_else(|| anyhow::anyhow!("--consent {c:?}: give cookie or cookieless"))?,
            ),
        };
        Ok(ProgramSpec {
            slug,
            pixel,
            consent,
            // Platform endpoints are set through the API or the catalogue
            // file (their secrets do not belong in shell history).
            stripe: None,
            shopify: None,
            pixel_max_amount: if self.no_pixel_max_amount {
                Some(None)
            } else {
                self.pixel_max_amount.map(Some)
            },
            timezone: self.timezone,
            fallback_url: if self.no_fallback_url {
                Some(None)
            } else {
                self.fallback_url.map(Some)
            },
            name: self.name,
            status: None,
            currency: self.currency,
            cookie_window: self.cookie_window,
            attribution_window: self.attribution_window,
            attribution,
            commission: self.commission.map(CommissionSpec::Text),
            hold: self.hold.map(Some),
            postback_token: self.postback_token,
            postback_secret: self.postback_secret,
            postback_ips: if self.any_postback_ip {
                Some(Vec::new())
            } else if self.postback_ips.is_empty() {
                None
            } else {
                Some(self.postback_ips)
            },
            click_id_param: if self.no_click_id_param {
                Some(None)
            } else {
                self.click_id_param.map(Some)
            },
            min_payout: self.min_payout,
        })
    }
}

/// `clickward program …`
#[derive(Debug, Subcommand)]
pub enum ProgramCmd {
    /// Create a program with any of its settings.
    Add {
        /// Slug.
        #[arg(long)]
        slug: String,
        #[command(flatten)]
        spec: Box<SpecArgs>,
    },
    /// Change a program's settings (what is not given is kept). The program
    /// is then the admins': the catalogue file leaves it alone.
    Set {
        /// Program slug.
        slug: String,
        /// active or disabled.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        spec: Box<SpecArgs>,
    },
    /// Show a program's settings and commission overrides.
    Show {
        /// Program slug.
        slug: String,
    },
    /// Set or remove an affiliate's commission override in a program.
    Commission {
        /// Program slug.
        program: String,
        /// Affiliate slug.
        affiliate: String,
        /// The affiliate's rates, e.g. "default=12%" (they beat the
        /// program's for the events they name).
        #[arg(long, required_unless_present = "remove")]
        rate: Option<String>,
        /// Remove the override (the program's plan applies again).
        #[arg(long, conflicts_with = "rate")]
        remove: bool,
    },
    /// List programs.
    List,
}

fn status_arg(s: &str) -> anyhow::Result<Status> {
    match s {
        "active" => Ok(Status::Active),
        "disabled" => Ok(Status::Disabled),
        other => anyhow::bail!("--status {other:?}: give active or disabled"),
    }
}

fn print_view(v: &ProgramView) -> anyhow::Result<()> {
    let none = "-".to_owned();
    for (k, val) in [
        ("slug", v.slug.to_string()),
        ("name", v.name.clone()),
        ("status", v.status.as_str().to_owned()),
        ("owner", v.owner.as_str().to_owned()),
        ("currency", v.currency.clone()),
        ("cookie window", v.cookie_window.clone()),
        ("attribution window", v.attribution_window.clone()),
        ("attribution", v.attribution.as_str().to_owned()),
        (
            "commission",
            if v.commission_text.is_empty() {
                "none (pays 0)".to_owned()
            } else {
                v.commission_text.clone()
            },
        ),
        (
            "hold",
            v.hold.clone().unwrap_or_else(|| "manual approval".into()),
        ),
        ("min payout", v.min_payout.clone()),
        (
            "click id param",
            v.click_id_param.clone().unwrap_or(none.clone()),
        ),
        (
            "postback IPs",
            if v.postback_ips.is_empty() {
                "any".to_owned()
            } else {
                v.postback_ips.join(", ")
            },
        ),
        ("pixel", v.pixel.as_str().to_owned()),
        (
            "pixel max amount",
            v.pixel_max_amount
                .clone()
                .unwrap_or_else(|| "no bound".into()),
        ),
        ("timezone", v.timezone.clone()),
        ("consent (GPC)", v.consent.as_str().to_owned()),
        (
            "fallback URL",
            v.fallback_url
                .clone()
                .unwrap_or_else(|| "a \"not available\" page".into()),
        ),
        ("postback token", v.postback_token.clone().unwrap_or(none)),
        (
            "postback signed",
            if v.postback_signed { "yes" } else { "no" }.to_owned(),
        ),
    ] {
        outln!("{k:<20} {val}");
    }
    Ok(())
}

/// Runs `clickward program …`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, cmd: ProgramCmd) -> anyhow::Result<()> {
    match cmd {
        ProgramCmd::Add { slug: s, spec } => {
            let spec = spec.spec(Some(slug(&s, "program")?))?;
            let v = programs::create(store, &spec).await?;
            outln!("created program {}", v.slug);
            print_view(&v)?;
        }
        ProgramCmd::Set {
            slug: s,
            status,
            spec,
        } => {
            let mut spec = spec.spec(None)?;
            spec.status = status.as_deref().map(status_arg).transpose()?;
            let v = programs::update(store, slug(&s, "program")?, &spec).await?;
            outln!("saved program {}", v.slug);
            print_view(&v)?;
        }
        ProgramCmd::Show { slug: s } => {
            let p = store.get_program(slug(&s, "program")?).await?;
            let v = programs::view(store, p).await?;
            print_view(&v)?;
            let overrides = programs::overrides(store, v.slug.clone()).await?;
            for o in overrides {
                outln!("override {:<11} {}", o.affiliate, o.commission_text);
            }
        }
        ProgramCmd::Commission {
            program,
            affiliate,
            rate,
            remove,
        } => {
            let (p, a) = (slug(&program, "program")?, slug(&affiliate, "affiliate")?);
            let plan = if remove {
                None
            } else {
                rate.map(CommissionSpec::Text)
            };
            programs::set_override(store, p.clone(), a.clone(), plan.as_ref()).await?;
            match plan {
                Some(_) => outln!("{a} now earns its own rates in {p}"),
                None => outln!("{a} earns {p}'s rates again"),
            }
        }
        ProgramCmd::List => {
            crate::services::catalog::ensure_postback_tokens(store).await?;
            outln!(
                "{:<24} {:<10} {:<8} {:<34} {:<8} name",
                "slug",
                "status",
                "currency",
                "postback token",
                "owner"
            );
            for p in store.list_programs().await? {
                let s = store.program_settings(p.id).await?;
                outln!(
                    "{:<24} {:<10} {:<8} {:<34} {:<8} {}",
                    p.slug,
                    p.status.as_str(),
                    s.currency,
                    s.postback_token.as_deref().unwrap_or("-"),
                    p.owner.as_str(),
                    p.name
                );
            }
        }
    }
    Ok(())
}
