//! The `clickward` command line.
//!
//! Every command reads the same config (`--config`, `CLICKWARD_CONFIG`) and
//! data directory (`--data-dir`, `CLICKWARD_DATA_DIR`). Commands that change
//! the catalogue write to the database directly; a running server sees the
//! change within a second.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use clickward_core::id::Slug;
use clickward_store::Store;

/// `println!` that returns the write error instead of panicking, so a
/// closed pipe (`clickward conversion list | head -1`) ends the command
/// quietly (see [`is_closed_pipe`]).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)?
    }};
}

mod affiliates;
mod conversions;
pub mod export;
mod fraud;
pub mod generate;
pub mod import;
mod keys;
mod links;
mod payouts;
mod privacy;
mod programs;
mod report;
mod rollup;
mod users;
mod webhooks;

use affiliates::AffiliateCmd;
use conversions::ConversionCmd;
use export::ExportArgs;
use generate::GenArgs;
use import::ImportArgs;
use keys::KeyCmd;
use links::LinkCmd;
use payouts::PayoutCmd;
use programs::ProgramCmd;
use rollup::RollupArgs;
use users::UserCmd;

use crate::process::app::open_store;
use crate::process::config::{Config, Durability, Validated};
use crate::services::reports::ReportArgs;

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
    /// Start an empty database, or make new secrets, where a data directory
    /// that held them has lost them (otherwise that is an error: nothing is
    /// replaced silently).
    #[arg(long, global = true)]
    pub init: bool,
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
    /// Webhooks and affiliate postbacks: endpoints, deliveries, replays.
    #[command(subcommand)]
    Webhook(webhooks::WebhookCmd),
    /// Fraud rules: list, set, remove (docs/fraud.md).
    #[command(subcommand)]
    Rule(fraud::RuleCmd),
    /// Excluded traffic: your own addresses and browsers, or an affiliate's.
    #[command(subcommand)]
    Exclude(fraud::ExcludeCmd),
    /// Judge stored clicks and conversions again under today's rules.
    #[command(subcommand)]
    Fraud(fraud::FraudCmd),
    /// Privacy requests: erase or export a visitor's or an order's data.
    #[command(subcommand)]
    Privacy(privacy::PrivacyCmd),
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
    cfg.init = cli.init;
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
        Command::Link(cmd) => links::run(store, cmd).await?,
        Command::Affiliate(cmd) => affiliates::run(store, cmd).await?,
        Command::Program(cmd) => programs::run(store, cmd).await?,
        Command::Key(cmd) => keys::run(store, cmd).await?,
        Command::User(cmd) => users::user_command(&v, store, cmd).await?,
        Command::Conversion(cmd) => conversions::conversion_command(store, cmd).await?,
        Command::Payout(cmd) => payouts::run(store, cmd).await?,
        Command::Webhook(cmd) => webhooks::run(&v, opened.clone(), cmd).await?,
        Command::Rule(cmd) => fraud::rules(&v, opened.clone(), cmd).await?,
        Command::Exclude(cmd) => fraud::exclusions(&v, opened.clone(), cmd).await?,
        Command::Fraud(cmd) => fraud::fraud(opened.clone(), cmd).await?,
        Command::Privacy(cmd) => privacy::run(&v, opened.clone(), cmd).await?,
        Command::Report(args) => report::run(store, args).await?,
        Command::Export(args) => export::run(store, args).await?,
        Command::Rollup(args) => rollup::run(store, args).await?,
        Command::Gen(args) => generate::run(&v, store, args).await?,
        Command::Import(args) => import::run(&v, store, args).await?,
    }
    Ok(())
}

/// `true` when `e` is the reader of our standard output going away (a
/// closed pipe): not an error of the command, so it exits quietly with 0.
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
