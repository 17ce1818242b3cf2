//! The `clickward` command line.
//!
//! Every command reads the same config (`--config`, `CLICKWARD_CONFIG`) and
//! data directory (`--data-dir`, `CLICKWARD_DATA_DIR`). Commands that change
//! the catalogue write to the database directly; a running server sees the
//! change within a second.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use clickward_core::conversion::ConversionStatus;
use clickward_core::id::{LinkCode, Slug};
use clickward_core::link::{Destination, RedirectStatus, Status, UtmDefaults};
use clickward_core::money::Currency;
use clickward_core::report::{self};
use clickward_enrich::geo::GeoDb;
use clickward_enrich::ua::UaParser;
use clickward_store::{AffiliateInput, KeyScope, LinkInput, ProgramInput, SaveMode, Store};
use jiff::tz::TimeZone;

pub mod export;
pub mod generate;
pub mod import;

use crate::process::app::open_store;
use crate::process::config::{Config, Durability, Validated};
use crate::services::reports::{ReportArgs, report_text};

/// clickward: a self-hosted affiliate link tracker.
#[derive(Debug, Parser)]
#[command(name = "clickward", version, about)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true, env = "CLICKWARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (database and secrets). Default: ./clickward-data
    #[arg(long, global = true, env = "CLICKWARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tracker.
    Serve(ServeArgs),
    /// Manage tracking links.
    #[command(subcommand)]
    Link(LinkCmd),
    /// Manage affiliates.
    #[command(subcommand)]
    Affiliate(AffiliateCmd),
    /// Manage programs.
    #[command(subcommand)]
    Program(ProgramCmd),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Manage dashboard and portal users.
    #[command(subcommand)]
    User(UserCmd),
    /// Review conversions: list, approve, reject, reverse.
    #[command(subcommand)]
    Conversion(ConversionCmd),
    /// Pay affiliates: preview balances, create payout batches.
    #[command(subcommand)]
    Payout(PayoutCmd),
    /// Print click counts grouped by time and dimensions.
    Report(ReportArgs),
    /// Import click history from CSV.
    Import(ImportArgs),
    /// Write synthetic history (clicks and conversions) for tests and benchmarks.
    Gen(GenArgs),
    /// Recompute rollups for a range (idempotent), or catch up to now.
    Rollup(RollupArgs),
    /// Write raw clicks of a range as CSV to standard output.
    Export(ExportArgs),
}

/// `clickward serve` flags; each overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "CLICKWARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Catalogue TOML to load at start and on SIGHUP.
    #[arg(long, env = "CLICKWARD_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// "sync" (default) or "buffered".
    #[arg(long, env = "CLICKWARD_DURABILITY")]
    pub durability: Option<Durability>,
    /// GeoIP .mmdb file(s); repeat the flag or separate with commas.
    #[arg(long, env = "CLICKWARD_GEOIP", value_delimiter = ',')]
    pub geoip: Vec<PathBuf>,
}

/// `clickward link …`
#[derive(Debug, Subcommand)]
pub enum LinkCmd {
    /// Create a link.
    Add {
        /// Code used in /r/{code}, /ref/{code}, /go?id={code}.
        #[arg(long)]
        code: String,
        /// Program slug.
        #[arg(long)]
        program: String,
        /// Affiliate slug.
        #[arg(long)]
        affiliate: Option<String>,
        /// Destination URL; may use {click_id} {code} {affiliate} {program} {src} {sub1}..{sub5}.
        #[arg(long)]
        destination: String,
        /// 302 (default) or 307.
        #[arg(long)]
        redirect: Option<u16>,
        /// UTM default, e.g. --utm utm_source=newsletter (repeatable).
        #[arg(long, value_parser = parse_kv)]
        utm: Vec<(String, String)>,
    },
    /// List links.
    List,
    /// Disable a link (it answers 404 or the fallback URL; its clicks stay).
    Disable {
        /// Link code.
        code: String,
    },
}

/// `clickward affiliate …`
#[derive(Debug, Subcommand)]
pub enum AffiliateCmd {
    /// Create an affiliate.
    Add {
        /// Slug.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List affiliates.
    List,
}

/// `clickward program …`
#[derive(Debug, Subcommand)]
pub enum ProgramCmd {
    /// Create a program.
    Add {
        /// Slug.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List programs.
    List,
}

/// `clickward conversion …`
#[derive(Debug, Subcommand)]
pub enum ConversionCmd {
    /// Newest first.
    List {
        /// Only this status: pending, approved, rejected, paid, reversed.
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Approve a pending conversion.
    Approve {
        /// Conversion id.
        id: String,
        /// Why (kept in the ledger).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a pending conversion.
    Reject {
        /// Conversion id.
        id: String,
        /// Why (kept in the ledger).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reverse an approved or paid conversion (refund, chargeback).
    Reverse {
        /// Conversion id.
        id: String,
        /// Why (kept in the ledger).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `clickward payout …`
#[derive(Debug, Subcommand)]
pub enum PayoutCmd {
    /// The affiliate's approved, unpaid balance per program and currency.
    Preview {
        /// Affiliate slug.
        #[arg(long)]
        affiliate: String,
    },
    /// Pay the eligible balance in one currency; idempotent by --key.
    Create {
        /// Affiliate slug.
        #[arg(long)]
        affiliate: String,
        /// ISO 4217 code.
        #[arg(long)]
        currency: String,
        /// Idempotency key (default: affiliate-currency-YYYY-MM-DD, UTC).
        #[arg(long)]
        key: Option<String>,
        /// Also write the batch as CSV for the payment provider.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

/// Scope of a new key.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// Everything.
    Admin,
    /// GET only.
    Read,
}

/// `clickward key …`
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create an API key and print it once.
    Create {
        /// admin or read.
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// A note for people.
        #[arg(long)]
        label: Option<String>,
    },
}

/// `clickward user …`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user, or replace the one with this name (a new password ends
    /// its sessions). The password (at least 10 characters) is read from
    /// standard input, one line; with `--no-password` the user signs in by
    /// magic link only.
    Add {
        /// Sign-in name.
        name: String,
        /// A merchant-side user: the whole dashboard.
        #[arg(
            long,
            conflicts_with = "affiliate",
            required_unless_present = "affiliate"
        )]
        admin: bool,
        /// An affiliate's user: the portal, that affiliate's data only.
        #[arg(long)]
        affiliate: Option<String>,
        /// No password: magic links only.
        #[arg(long)]
        no_password: bool,
    },
    /// List users.
    List,
    /// Print a sign-in link for a user, valid once and for 15 minutes.
    MagicLink {
        /// Sign-in name.
        name: String,
        /// Base URL of the link (default `dashboard.public_url`, else
        /// `http://` + the listen address).
        #[arg(long)]
        base: Option<String>,
    },
}

/// `clickward rollup` arguments. Without --from/--to, rolls up everything
/// settled since the watermark.
#[derive(Debug, Args)]
pub struct RollupArgs {
    /// First UTC date (YYYY-MM-DD) to recompute.
    #[arg(long)]
    pub from: Option<jiff::civil::Date>,
    /// Last UTC date, inclusive.
    #[arg(long)]
    pub to: Option<jiff::civil::Date>,
}

/// `clickward export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// First local date, YYYY-MM-DD.
    #[arg(long)]
    pub from: jiff::civil::Date,
    /// Last local date, inclusive (default: --from).
    #[arg(long)]
    pub to: Option<jiff::civil::Date>,
    /// IANA time zone of the dates.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
}

/// `clickward gen` arguments.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Clicks to write.
    #[arg(long, default_value_t = 100_000)]
    pub clicks: u64,
    /// Days of history ending now.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Links.
    #[arg(long, default_value_t = 20)]
    pub links: u32,
    /// Affiliates.
    #[arg(long, default_value_t = 5)]
    pub affiliates: u32,
    /// Percent of clicks from bots.
    #[arg(long, default_value_t = 10)]
    pub bot_pct: u32,
    /// Percent of human clicks followed by a double tap.
    #[arg(long, default_value_t = 5)]
    pub double_tap_pct: u32,
    /// Conversions per 10 000 human unique clicks.
    #[arg(long, default_value_t = 200)]
    pub conversions_per_10k: u32,
    /// Distinct visitors.
    #[arg(long, default_value_t = 50_000)]
    pub visitors: u64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A JSON list of browser user agents (e.g. ../shared/data/user-agents/top-desktop.json).
    #[arg(long)]
    pub user_agents: Option<PathBuf>,
}

/// `clickward import` arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// CSV file (see `clickward_server::import` for its columns).
    pub file: PathBuf,
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Loads the config file (if any) and applies `--data-dir`.
///
/// # Errors
/// Config errors, naming the file and key.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Ok(url) = std::env::var("CLICKWARD_DATABASE_URL")
        && !url.is_empty()
    {
        cfg.storage.url = Some(url);
    }
    Ok(cfg)
}

/// Applies `serve` flags and validates.
///
/// # Errors
/// Config errors.
pub fn serve_config(mut cfg: Config, args: &ServeArgs) -> anyhow::Result<Validated> {
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(c) = &args.catalog {
        cfg.catalog = Some(c.clone());
    }
    if let Some(d) = args.durability {
        cfg.durability = d;
    }
    if !args.geoip.is_empty() {
        cfg.geoip = args.geoip.clone();
    }
    Ok(cfg.validate()?)
}

fn slug(s: &str, what: &str) -> anyhow::Result<Slug> {
    Slug::parse(s).with_context(|| format!("{what} {s:?}"))
}

/// Runs every command but `serve`.
///
/// # Errors
/// Whatever the command ran into, with context.
pub async fn run_command(cfg: Config, command: Command) -> anyhow::Result<()> {
    let v = cfg.validate()?;
    let opened = open_store(&v).await?;
    let store: &dyn Store = opened.as_ref();
    match command {
        Command::Serve(_) => bail!("serve is handled by main"),
        Command::Link(LinkCmd::Add {
            code,
            program,
            affiliate,
            destination,
            redirect,
            utm,
        }) => {
            let utm: UtmDefaults = utm.into_iter().collect();
            Destination::compile(&destination, &utm)?;
            let redirect = redirect.map(RedirectStatus::from_code).transpose()?;
            let rec = store
                .save_link(
                    LinkInput {
                        code: LinkCode::parse(&code)
                            .with_context(|| format!("link code {code:?}"))?,
                        program: slug(&program, "program")?,
                        affiliate: affiliate.map(|a| slug(&a, "affiliate")).transpose()?,
                        destination,
                        redirect,
                        utm,
                        status: Status::Active,
                    },
                    SaveMode::Create,
                )
                .await?;
            println!("created link {} -> {}", rec.link.code, rec.link.destination);
        }
        Command::Link(LinkCmd::List) => {
            println!(
                "{:<24} {:<10} {:<16} {:<16} destination",
                "code", "status", "program", "affiliate"
            );
            for r in store.list_links().await? {
                let status = if r.redirects { "active" } else { "inactive" };
                println!(
                    "{:<24} {:<10} {:<16} {:<16} {}",
                    r.link.code,
                    status,
                    r.link.program,
                    r.link.affiliate.as_ref().map(Slug::as_str).unwrap_or("-"),
                    r.link.destination
                );
            }
        }
        Command::Link(LinkCmd::Disable { code }) => {
            let cur = store
                .get_link(LinkCode::parse(&code).with_context(|| format!("link code {code:?}"))?)
                .await?;
            let l = cur.link;
            store
                .save_link(
                    LinkInput {
                        code: l.code,
                        program: l.program,
                        affiliate: l.affiliate,
                        destination: l.destination,
                        redirect: l.redirect,
                        utm: l.utm,
                        status: Status::Disabled,
                    },
                    SaveMode::Update,
                )
                .await?;
            println!("disabled link {code}");
        }
        Command::Affiliate(AffiliateCmd::Add { slug: s, name }) => {
            let a = store
                .save_affiliate(
                    AffiliateInput {
                        name: name.unwrap_or_else(|| s.clone()),
                        slug: slug(&s, "affiliate")?,
                        status: Status::Active,
                    },
                    SaveMode::Create,
                )
                .await?;
            println!("created affiliate {}", a.slug);
        }
        Command::Affiliate(AffiliateCmd::List) => {
            for a in store.list_affiliates().await? {
                println!("{:<24} {:<10} {}", a.slug, a.status.as_str(), a.name);
            }
        }
        Command::Program(ProgramCmd::Add { slug: s, name }) => {
            let p = store
                .save_program(
                    ProgramInput {
                        name: name.unwrap_or_else(|| s.clone()),
                        slug: slug(&s, "program")?,
                        status: Status::Active,
                        settings: None,
                    },
                    SaveMode::Create,
                )
                .await?;
            println!("created program {}", p.slug);
        }
        Command::Program(ProgramCmd::List) => {
            crate::services::catalog::ensure_postback_tokens(store).await?;
            println!(
                "{:<24} {:<10} {:<8} {:<34} name",
                "slug", "status", "currency", "postback token"
            );
            for p in store.list_programs().await? {
                let s = store.program_settings(p.id).await?;
                println!(
                    "{:<24} {:<10} {:<8} {:<34} {}",
                    p.slug,
                    p.status.as_str(),
                    s.currency,
                    s.postback_token.as_deref().unwrap_or("-"),
                    p.name
                );
            }
        }
        Command::Key(KeyCmd::Create { scope, label }) => {
            let (secret, hash, prefix) = crate::services::keys::new_key();
            let scope = match scope {
                ScopeArg::Admin => KeyScope::Admin,
                ScopeArg::Read => KeyScope::Read,
            };
            store.create_api_key(hash, prefix, scope, label).await?;
            eprintln!("created a {} key; it is shown only now:", scope.as_str());
            println!("{secret}");
        }
        Command::User(cmd) => user_command(&v, store, cmd).await?,
        Command::Conversion(cmd) => conversion_command(store, cmd).await?,
        Command::Payout(PayoutCmd::Preview { affiliate }) => {
            let lines = store.payout_preview(slug(&affiliate, "affiliate")?).await?;
            println!(
                "{:<24} {:<8} {:>16} {:>16}  eligible",
                "program", "currency", "payable", "minimum"
            );
            for l in lines {
                let cur = Currency::parse(&l.currency)?;
                println!(
                    "{:<24} {:<8} {:>16} {:>16}  {}",
                    l.program,
                    l.currency,
                    cur.format(l.payable_minor),
                    cur.format(l.min_payout_minor),
                    if l.eligible { "yes" } else { "no" }
                );
            }
        }
        Command::Payout(PayoutCmd::Create {
            affiliate,
            currency,
            key,
            csv,
        }) => {
            let cur = Currency::parse(&currency)?;
            let key = key.unwrap_or_else(|| {
                format!(
                    "{affiliate}-{}-{}",
                    cur.code(),
                    jiff::Timestamp::now().strftime("%Y-%m-%d")
                )
            });
            let batch_id = ulid::Ulid::generate();
            let p = store
                .create_payout(
                    slug(&affiliate, "affiliate")?,
                    cur,
                    key,
                    batch_id,
                    "cli".to_owned(),
                )
                .await?;
            let verb = if p.created {
                "created"
            } else {
                "already existed (same key; nothing changed)"
            };
            println!(
                "payout {} {verb}: {} {} to {} for {} conversions",
                p.batch_id,
                cur.format(p.amount_minor),
                p.currency,
                p.affiliate,
                p.conversions
            );
            if let Some(path) = csv {
                let mut w = csv::Writer::from_path(&path)?;
                w.write_record([
                    "batch_id",
                    "affiliate",
                    "currency",
                    "amount",
                    "amount_minor",
                    "conversions",
                    "key",
                    "created_at",
                ])?;
                let created = jiff::Timestamp::from_microsecond(p.created_at)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                w.write_record([
                    p.batch_id.as_str(),
                    p.affiliate.as_str(),
                    p.currency.as_str(),
                    cur.format(p.amount_minor).as_str(),
                    p.amount_minor.to_string().as_str(),
                    p.conversions.to_string().as_str(),
                    p.key.as_str(),
                    created.as_str(),
                ])?;
                w.flush()?;
                println!("wrote {}", path.display());
            }
        }
        Command::Report(args) => {
            let mut out = std::io::stdout().lock();
            for chunk in report_text(store, &args).await? {
                std::io::Write::write_all(&mut out, chunk.as_bytes())?;
            }
        }
        Command::Export(args) => {
            let tz = TimeZone::get(&args.tz)
                .with_context(|| format!("unknown time zone {:?}", args.tz))?;
            let (s, e) = report::date_range(args.from, args.to.unwrap_or(args.from), &tz)?;
            let started = std::time::Instant::now();
            let n = store
                .export_clicks(s, e, crate::cli::export::csv_sink(std::io::stdout()))
                .await?;
            eprintln!(
                "exported {n} clicks in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        Command::Rollup(args) => {
            let started = std::time::Instant::now();
            match (args.from, args.to) {
                (Some(from), to) => {
                    let to = to.unwrap_or(from);
                    let (s, e) = report::date_range(from, to, &TimeZone::UTC)?;
                    store.rollup(s, e).await?;
                    println!(
                        "recomputed rollups {from} .. {to} (UTC) in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                (None, Some(_)) => bail!("--to needs --from"),
                (None, None) => {
                    let now = jiff::Timestamp::now().as_microsecond();
                    let mut last = None;
                    loop {
                        let w = store.advance_rollups(now).await?;
                        if Some(w) == last {
                            break;
                        }
                        last = Some(w);
                    }
                    let w = last.and_then(|w| jiff::Timestamp::from_microsecond(w).ok());
                    println!(
                        "rolled up to {} in {:.1} s",
                        w.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        Command::Gen(args) => {
            let ua = UaParser::new(20_000)?;
            let user_agents: Vec<String> = match &args.user_agents {
                Some(p) => serde_json::from_slice(
                    &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("{} is not a JSON list of strings", p.display()))?,
                None => Vec::new(),
            };
            let spec = crate::cli::generate::GenSpec {
                clicks: args.clicks,
                days: args.days,
                links: args.links,
                affiliates: args.affiliates,
                bot_pct: args.bot_pct.min(100),
                double_tap_pct: args.double_tap_pct.min(100),
                conversion_per_10k: args.conversions_per_10k.min(10_000),
                visitors: args.visitors,
                seed: args.seed,
                end: jiff::Timestamp::now().as_microsecond(),
                user_agents,
                dedup_window: v.dedup_window,
            };
            let started = std::time::Instant::now();
            let s = crate::cli::generate::generate(store, &ua, &spec).await?;
            println!(
                "generated {} clicks and {} conversions in {:.1} s",
                s.clicks,
                s.conversions,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Import(args) => {
            let ua = UaParser::new(20_000)?;
            let geo = if v.config.geoip.is_empty() {
                None
            } else {
                Some(GeoDb::open(&v.config.geoip)?)
            };
            let s = crate::cli::import::import_csv(
                store,
                &ua,
                geo.as_ref(),
                &args.file,
                v.dedup_window,
            )
            .await?;
            println!(
                "{} rows: {} clicks imported, {} already present, {} skipped",
                s.rows, s.imported, s.already_present, s.skipped_count
            );
            for (line, why) in &s.skipped {
                println!("  line {line}: {why}");
            }
        }
    }
    Ok(())
}

async fn user_command(v: &Validated, store: &dyn Store, cmd: UserCmd) -> anyhow::Result<()> {
    use clickward_store::{UserInput, UserRole};
    match cmd {
        UserCmd::Add {
            name,
            admin,
            affiliate,
            no_password,
        } => {
            let name = name.trim().to_owned();
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_alphanumeric() || "._@-".contains(c)),
                "user name {name:?}: 1–64 letters, digits or . _ @ -"
            );
            let (role, affiliate) = match (admin, affiliate) {
                (true, _) => (UserRole::Admin, None),
                (false, Some(a)) => (UserRole::Affiliate, Some(slug(&a, "affiliate")?)),
                (false, None) => bail!("say --admin or --affiliate SLUG"),
            };
            let password_hash = if no_password {
                None
            } else {
                use std::io::IsTerminal;
                if std::io::stdin().is_terminal() {
                    // No echo control here: say so rather than pretend.
                    eprint!("password for {name} (shown as typed; or pipe it in): ");
                }
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                let password = line.trim_end_matches(['\r', '\n']);
                Some(crate::dashboard::session::hash_password(password)?)
            };
            let user = store
                .save_user(UserInput {
                    username: name,
                    role,
                    affiliate,
                    password_hash,
                    changed_at: jiff::Timestamp::now().as_microsecond(),
                })
                .await?;
            println!(
                "user {} ({}{})",
                user.username,
                user.role.as_str(),
                user.affiliate
                    .map(|a| format!(" of {a}"))
                    .unwrap_or_default()
            );
        }
        UserCmd::List => {
            println!("{:<32} {:<10} affiliate", "user", "role");
            for u in store.list_users().await? {
                println!(
                    "{:<32} {:<10} {}",
                    u.username,
                    u.role.as_str(),
                    u.affiliate.as_deref().unwrap_or("-")
                );
            }
        }
        UserCmd::MagicLink { name, base } => {
            let user = store
                .find_user(name.clone())
                .await?
                .with_context(|| format!("no user {name:?}"))?;
            let key = crate::process::secrets::cookie_key(&v.config.data_dir.join("secrets"))?;
            let token = crate::dashboard::session::magic_token(
                key.signing(),
                &user,
                jiff::Timestamp::now().as_microsecond(),
            );
            let base = base
                .or_else(|| v.config.dashboard.public_url.clone())
                .unwrap_or_else(|| format!("http://{}", v.config.listen));
            println!("{}/login/magic?t={token}", base.trim_end_matches('/'));
        }
    }
    Ok(())
}

async fn conversion_command(store: &dyn Store, cmd: ConversionCmd) -> anyhow::Result<()> {
    let (id, to, reason) = match cmd {
        ConversionCmd::List { status, limit } => {
            let status = status
                .map(|s| {
                    ConversionStatus::parse(&s).with_context(|| format!("unknown status {s:?}"))
                })
                .transpose()?;
            println!(
                "{:<26} {:<10} {:<16} {:<16} {:<10} {:>12} {:>12} cur",
                "conversion", "status", "program", "affiliate", "event", "amount", "commission"
            );
            let filter = clickward_store::ConversionFilter {
                status,
                affiliate: None,
                limit,
            };
            for c in store.list_conversions(filter).await? {
                let cur = Currency::parse(&c.currency)?;
                println!(
                    "{:<26} {:<10} {:<16} {:<16} {:<10} {:>12} {:>12} {}",
                    c.conversion_id.to_string(),
                    c.status.as_str(),
                    c.program,
                    c.affiliate.as_deref().unwrap_or("-"),
                    c.event,
                    c.amount_minor
                        .map(|a| cur.format(a))
                        .unwrap_or_else(|| "-".to_owned()),
                    cur.format(c.commission_minor),
                    c.currency
                );
            }
            return Ok(());
        }
        ConversionCmd::Approve { id, reason } => (id, ConversionStatus::Approved, reason),
        ConversionCmd::Reject { id, reason } => (id, ConversionStatus::Rejected, reason),
        ConversionCmd::Reverse { id, reason } => (id, ConversionStatus::Reversed, reason),
    };
    let id = id
        .parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not a conversion id"))?;
    let row = store
        .set_conversion_status(id, to, "cli".to_owned(), reason)
        .await?;
    println!(
        "conversion {} is {}",
        row.conversion_id,
        row.status.as_str()
    );
    Ok(())
}
