//! `clickward rule` and `clickward exclude`: fraud rules and excluded
//! traffic. A running server picks the change up within a second (the
//! catalogue version it polls).

use std::sync::Arc;

use clap::Subcommand;
use clickward_core::fraud::{Limit, RuleSpec};
use clickward_core::id::Slug;
use clickward_store::Store;

use crate::clock::{Clock, SystemClock};
use crate::process::config::Validated;
use crate::services::fraud::{ExcludeWhat, FraudService};
use crate::services::links::LinkCache;

/// `clickward rule …`
#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    /// List rules (id, scope, check, action, owner).
    List,
    /// Create or replace a rule; the fields are the catalogue's `[[rules]]`
    /// (docs/fraud.md).
    Set(Box<RuleArgs>),
    /// Delete a rule.
    Remove {
        /// Rule id.
        id: String,
    },
}

/// The fields of a rule.
#[derive(Debug, clap::Args)]
pub struct RuleArgs {
    /// Rule id (letters, digits, - and _).
    id: String,
    /// visitor_velocity, link_velocity, hosting, anonymous, countries,
    /// referrers, paid_search, excluded, ctit, self_referral, duplicate_ip,
    /// conversion_rate, geo_mismatch, cap.
    #[arg(long)]
    check: String,
    /// allow, flag, hold, reject, block.
    #[arg(long)]
    action: String,
    /// Only this program.
    #[arg(long)]
    program: Option<String>,
    /// Only this affiliate.
    #[arg(long)]
    affiliate: Option<String>,
    /// Velocity, duplicate IP, caps: the most allowed (a payout cap: an amount).
    #[arg(long)]
    limit: Option<String>,
    /// Window, e.g. 60s, 24h, 30d.
    #[arg(long)]
    window: Option<String>,
    /// Countries or referrer hosts allowed (comma-separated).
    #[arg(long, value_delimiter = ',')]
    allow: Option<Vec<String>>,
    /// Countries or referrer hosts blocked (comma-separated).
    #[arg(long, value_delimiter = ',')]
    block: Option<Vec<String>>,
    /// CTIT minimum.
    #[arg(long)]
    min: Option<String>,
    /// CTIT maximum.
    #[arg(long)]
    max: Option<String>,
    /// Conversion rate: clicks before judging.
    #[arg(long)]
    min_clicks: Option<u32>,
    /// Conversion rate: highest allowed, e.g. 20%.
    #[arg(long)]
    max_rate: Option<String>,
    /// Caps: clicks, conversions, payout.
    #[arg(long)]
    metric: Option<String>,
    /// Caps: day or month.
    #[arg(long)]
    period: Option<String>,
    /// Caps: program, affiliate, program_affiliate.
    #[arg(long)]
    per: Option<String>,
    /// Caps: hard or soft.
    #[arg(long)]
    mode: Option<String>,
    /// Hosting: more ASNs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    asns: Option<Vec<u32>>,
    /// Anonymous kinds or paid-search keys (comma-separated).
    #[arg(long, value_delimiter = ',')]
    kinds: Option<Vec<String>>,
}

impl RuleArgs {
    fn spec(self) -> RuleSpec {
        RuleSpec {
            id: self.id,
            check: self.check,
            action: self.action,
            program: self.program,
            affiliate: self.affiliate,
            limit: self.limit.map(|l| match l.trim().parse::<i64>() {
                Ok(n) => Limit::Count(n),
                Err(_) => Limit::Text(l),
            }),
            window: self.window,
            allow: self.allow,
            block: self.block,
            min: self.min,
            max: self.max,
            min_clicks: self.min_clicks,
            max_rate: self.max_rate,
            metric: self.metric,
            period: self.period,
            per: self.per,
            mode: self.mode,
            asns: self.asns,
            kinds: self.kinds,
        }
    }
}

/// `clickward fraud …`
#[derive(Debug, Subcommand)]
pub enum FraudCmd {
    /// Judge stored clicks and conversions again under today's rules: a
    /// dry run listing what would change (per rule, and the first rows),
    /// or with --apply, the change (verdicts, rollups, conversion statuses).
    Rescore {
        /// First UTC day.
        #[arg(long)]
        from: jiff::civil::Date,
        /// Last UTC day (default: --from).
        #[arg(long)]
        to: Option<jiff::civil::Date>,
        /// Only this program.
        #[arg(long)]
        program: Option<String>,
        /// Write the changes.
        #[arg(long)]
        apply: bool,
    },
}

/// Runs a `fraud` command.
///
/// # Errors
/// A bad range or program, a store error.
pub async fn fraud(store: Arc<dyn Store>, cmd: FraudCmd) -> anyhow::Result<()> {
    let FraudCmd::Rescore {
        from,
        to,
        program,
        apply,
    } = cmd;
    let (start, end) =
        clickward_core::report::date_range(from, to.unwrap_or(from), &jiff::tz::TimeZone::UTC)?;
    let program_id = match program {
        Some(p) => Some(store.get_program(Slug::parse(&p)?).await?.id),
        None => None,
    };
    let book = Arc::new(crate::services::fraud::RuleBook::load(store.as_ref()).await?);
    let r = crate::services::rescore::rescore(
        store.as_ref(),
        book,
        crate::services::rescore::RescoreArgs {
            from: start,
            to: end,
            program_id,
            apply,
        },
    )
    .await?;
    let verb = if apply { "changed" } else { "would change" };
    outln!(
        "{}{} clicks read in {:.2} s ({:.0} clicks/s), {} {verb}; {} conversions read, {} {verb}",
        if apply { "" } else { "dry run: " },
        r.clicks,
        r.click_seconds,
        r.clicks as f64 / r.click_seconds.max(1e-9),
        r.clicks_changed,
        r.conversions,
        r.conversions_changed
    );
    if !r.by_rule.is_empty() {
        outln!("{:<11} {:<24} {:<18} count", "of", "rule", "change");
        for ((kind, rule, change), n) in &r.by_rule {
            outln!("{kind:<11} {rule:<24} {change:<18} {n}");
        }
        outln!("first changes:");
        for line in &r.first {
            outln!("  {line}");
        }
        if !apply {
            outln!("run again with --apply to write them");
        }
    }
    Ok(())
}

/// `clickward exclude …`
#[derive(Debug, Subcommand)]
pub enum ExcludeCmd {
    /// Exclude an address (stored as a keyed hash, never the address), or a
    /// browser (prints a URL: open it in the browser to exclude).
    Add {
        /// The address, e.g. 203.0.113.7.
        #[arg(long, conflicts_with = "current_visitor")]
        ip: Option<String>,
        /// Exclude a browser of yours: prints the URL to open in it.
        #[arg(long, alias = "browser")]
        current_visitor: bool,
        /// What to call it.
        #[arg(long)]
        label: Option<String>,
        /// This affiliate's own traffic (self-referral) instead of the
        /// merchant's or publisher's.
        #[arg(long)]
        affiliate: Option<String>,
    },
    /// List entries.
    List,
    /// Remove an entry.
    Remove {
        /// Entry id.
        id: i64,
    },
}

fn service(v: &Validated, store: Arc<dyn Store>) -> anyhow::Result<FraudService> {
    let key = crate::process::secrets::cookie_key(&v.config.data_dir.join("secrets"))?;
    Ok(FraudService::new(
        store,
        Arc::new(LinkCache::new(v.redirect)),
        crate::services::fraud::exclusion_key(key.master()),
    ))
}

/// Runs a `rule` command.
///
/// # Errors
/// A rule that does not compile (naming the rule and field), a store error.
pub async fn rules(v: &Validated, store: Arc<dyn Store>, cmd: RuleCmd) -> anyhow::Result<()> {
    let svc = service(v, store)?;
    match cmd {
        RuleCmd::List => {
            outln!(
                "{:<24} {:<18} {:<8} {:<22} owner",
                "id",
                "check",
                "action",
                "scope"
            );
            for r in svc.rules().await? {
                let s = &r.spec;
                let scope = match (&s.program, &s.affiliate) {
                    (None, None) => "global".to_owned(),
                    (Some(p), None) => format!("program {p}"),
                    (None, Some(a)) => format!("affiliate {a}"),
                    (Some(p), Some(a)) => format!("{p} × {a}"),
                };
                outln!(
                    "{:<24} {:<18} {:<8} {:<22} {}",
                    s.id,
                    s.check,
                    s.action,
                    scope,
                    r.owner.as_str()
                );
            }
        }
        RuleCmd::Set(args) => {
            let spec = args.spec();
            let id = spec.id.clone();
            svc.save_rule(spec, SystemClock.now_micros()).await?;
            outln!("rule {id} saved");
        }
        RuleCmd::Remove { id } => {
            if !svc.delete_rule(&id).await? {
                anyhow::bail!("no rule {id:?}");
            }
            outln!("rule {id} removed");
        }
    }
    Ok(())
}

/// Runs an `exclude` command.
///
/// # Errors
/// A malformed address, an address already listed, an unknown affiliate.
pub async fn exclusions(
    v: &Validated,
    store: Arc<dyn Store>,
    cmd: ExcludeCmd,
) -> anyhow::Result<()> {
    let svc = service(v, store)?;
    match cmd {
        ExcludeCmd::Add {
            ip,
            current_visitor,
            label,
            affiliate,
        } => {
            let what =
                match (ip, current_visitor) {
                    (Some(ip), _) => ExcludeWhat::Ip(ip.trim().parse().map_err(|_| {
                        anyhow::anyhow!("--ip {ip:?} is not an IPv4 or IPv6 address")
                    })?),
                    (None, true) => ExcludeWhat::Browser,
                    (None, false) => anyhow::bail!("give --ip ADDRESS or --current-visitor"),
                };
            let affiliate = affiliate
                .map(|a| Slug::parse(&a).map_err(|e| anyhow::anyhow!("--affiliate {a:?}: {e}")))
                .transpose()?;
            let done = svc
                .exclude(
                    what,
                    label.unwrap_or_default(),
                    affiliate,
                    SystemClock.now_micros(),
                )
                .await;
            let (e, token) = match done {
                Ok(done) => done,
                // Adding what is there is done, not an error (a script may
                // run twice).
                Err(clickward_store::StoreError::Conflict(_)) => {
                    outln!("already excluded");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            outln!("exclusion {} added ({})", e.id, e.label);
            if let Some(t) = token {
                let base = v
                    .config
                    .dashboard
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", v.config.listen));
                outln!("open this in the browser to exclude: {base}/exclude?t={t}");
            }
        }
        ExcludeCmd::List => {
            outln!("{:<6} {:<8} {:<12} label", "id", "kind", "affiliate");
            for e in svc.exclusions().await? {
                outln!(
                    "{:<6} {:<8} {:<12} {}",
                    e.id,
                    e.kind.as_str(),
                    e.affiliate.as_deref().unwrap_or("-"),
                    e.label
                );
            }
        }
        ExcludeCmd::Remove { id } => {
            if !svc.remove_exclusion(id).await? {
                anyhow::bail!("no exclusion {id}");
            }
            outln!("exclusion {id} removed");
        }
    }
    Ok(())
}
