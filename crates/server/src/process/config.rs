//! Server configuration: a TOML file (unknown keys are an error naming the
//! key), then environment variables, then command-line flags, validated once
//! before the listener binds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clickward_core::Micros;
use clickward_core::link::RedirectStatus;
use clickward_core::money::{Currency, ExchangeRate};
use clickward_store::Synchronous;
use ipnet::IpNet;
use serde::Deserialize;

pub use crate::services::ingest::Durability;

/// Ingest queue settings (`[ingest]`); see [`crate::services::ingest::IngestSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Clicks the queue holds before the overload policy applies.
    pub queue_capacity: usize,
    /// Most clicks written in one transaction.
    pub max_batch: usize,
    /// How long a redirect waits for room in a full queue before it is
    /// answered anyway and its click counted as `dropped` (e.g. "50ms").
    #[serde(with = "duration_text")]
    pub queue_full_wait: Duration,
    /// With `durability = "sync"`, how long a redirect waits for its commit
    /// before it is answered anyway and counted as `unconfirmed` (the click
    /// stays queued and is still written).
    #[serde(with = "duration_text")]
    pub commit_timeout: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            max_batch: 2_048,
            queue_full_wait: Duration::from_millis(50),
            commit_timeout: Duration::from_secs(2),
        }
    }
}

/// How long raw data is kept (docs/privacy.md, "Retention"). Each entry
/// is a duration (`"30d"`) or `"forever"`; purges run hourly in batches and
/// never touch rollups or the ledger, so reports keep their numbers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Raw clicks older than this ("400d") are deleted, in batches, once
    /// they are rolled up; rollups and conversions stay, so reports over the
    /// period still answer (for the dimensions the rollups hold). Default:
    /// keep raw clicks forever.
    pub clicks: Option<String>,
    /// Conversions' sub-ids, advertiser subs and buyer address hash
    /// (default `"400d"`; amounts, statuses, attribution and order ids stay).
    pub conversion_fields: String,
    /// Finished webhook and e-mail deliveries with their attempts (default
    /// `"30d"`).
    pub deliveries: String,
    /// Finished affiliate postback deliveries, the portal's postback log
    /// (default `"30d"`).
    pub postbacks: String,
    /// Finished privacy receipts (default `"1095d"`, three years: the
    /// proof an erasure was done).
    pub receipts: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            clicks: None,
            conversion_fields: "400d".into(),
            deliveries: "30d".into(),
            postbacks: "30d".into(),
            receipts: "1095d".into(),
        }
    }
}

/// How long each kind of data is kept, µs (`None`: forever).
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// `retention.clicks`.
    pub clicks: Option<Micros>,
    /// `retention.conversion_fields`.
    pub conversion_fields: Option<Micros>,
    /// `retention.deliveries`.
    pub deliveries: Option<Micros>,
    /// `retention.postbacks`.
    pub postbacks: Option<Micros>,
    /// `retention.receipts`.
    pub receipts: Option<Micros>,
}

/// `[privacy]`: how requests that ask not to be tracked are answered
/// (docs/privacy.md, "Consent").
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// `"cookie"` or `"cookieless"` for every program's visitors who send
    /// `Sec-GPC: 1`; unset: each program's own `consent` (default
    /// `cookie`).
    pub consent_mode: Option<String>,
    /// Treat `DNT: 1` like `Sec-GPC: 1` (default false: DNT is not a legal
    /// signal anywhere and most browsers dropped it).
    pub honor_dnt: bool,
    /// The name of the merchant's consent-banner cookie (first-party, on
    /// the tracking domain): `granted`/`true`/`1`/`yes`/`allow` gives
    /// cookies, `denied`/`false`/`0`/`no`/`deny` takes them away, whatever
    /// the browser's signal; other values decide nothing.
    pub consent_cookie: Option<String>,
}

/// Where the store lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite `synchronous` of the database (or, with `url`, of the node's
    /// click spool): `"normal"` (default; survives a process crash) or
    /// `"full"` (also survives power loss, slower).
    pub synchronous: SyncSetting,
    /// `postgres://user@host:port/db`: the shared store of a multi-node
    /// deployment (overridden by `CLICKWARD_DATABASE_URL`). Unset: SQLite in
    /// the data directory.
    pub url: Option<String>,
    /// PostgreSQL connections per node (default 16).
    pub pool_size: usize,
    /// Clicks per batch shipped from the spool to PostgreSQL (default 5000).
    pub ship_batch: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            synchronous: SyncSetting::default(),
            url: None,
            pool_size: 16,
            ship_batch: 5000,
        }
    }
}

/// The dashboard (`/dashboard`) and the affiliate portal (`/portal`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// A session ends after this long without a request (e.g. "30m").
    #[serde(with = "duration_text")]
    pub session_idle: Duration,
    /// A session ends this long after sign-in, however active (e.g. "12h").
    #[serde(with = "duration_text")]
    pub session_max: Duration,
    /// The address visitors reach clickward at (`https://t.example.com`),
    /// used in tracking links and postback URLs the pages show and in magic
    /// links. Unset: the address the page was requested at.
    pub public_url: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            public_url: None,
        }
    }
}

/// How the HTTP server treats slow or greedy clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after its last response) is closed (e.g. "10s").
    #[serde(with = "duration_text")]
    pub header_read_timeout: Duration,
    /// A request whose body has not arrived this long after its head is
    /// answered 408 (e.g. "30s").
    #[serde(with = "duration_text")]
    pub body_read_timeout: Duration,
    /// Open connections one client address may hold at once; more are
    /// closed on accept. Trusted proxies are not limited.
    pub connections_per_client: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            connections_per_client: 256,
        }
    }
}

/// `[outbound]`: how webhooks and affiliate postbacks are sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Send to loopback, private, link-local and cloud metadata addresses
    /// too. Off: such destinations are refused, by the address the name
    /// resolves to when connecting, not only by the URL's text.
    pub allow_private: bool,
    /// An attempt without a whole answer head this long after it started
    /// fails and is retried (e.g. "10s").
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Waits before the 2nd, 3rd, … attempt; after the last the delivery is
    /// a dead letter. Default: 5s, 5m, 30m, 2h, 5h, 10h, 10h (Standard
    /// Webhooks). Each wait is spread by ±10%.
    pub retry: Vec<String>,
    /// Attempts in flight at once on this node.
    pub concurrency: usize,
    /// Attempts in flight at once to one endpoint.
    pub per_endpoint: usize,
    /// How long a node holds a delivery it is sending; another node takes
    /// it over after that (e.g. "60s"; longer than `timeout`).
    #[serde(with = "duration_text")]
    pub lease: Duration,
    /// How often the outbox is looked at for new events (e.g. "25ms").
    #[serde(with = "duration_text")]
    pub poll: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            retry: ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .map(String::from)
                .to_vec(),
            concurrency: 64,
            per_endpoint: 8,
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(25),
        }
    }
}

/// `[limits]`: per-client rate limits (`"600/min"`, `"20/s"`, `"off"`), per
/// node. Tracking links never refuse a human: beyond `tracking` clicks are
/// recorded invalid (`rate_limited`) and still redirected; the others
/// answer 429 with `Retry-After`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `/r`, `/ref`, `/go` (default off: behind a proxy that is not in
    /// `trusted_proxies`, every visitor would look like one client).
    pub tracking: String,
    /// `/postback` (default 3000/min).
    pub postback: String,
    /// `/pixel.gif` (default 600/min).
    pub pixel: String,
    /// Dashboard and portal sign-in (default 30/min).
    pub login: String,
    /// `/api/v1/*` (default 3000/min).
    pub api: String,
    /// One limit for all nodes, kept in PostgreSQL (needs `storage.url`);
    /// default false: each node allows the rates by itself.
    pub shared: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            tracking: "off".into(),
            postback: "3000/min".into(),
            pixel: "600/min".into(),
            login: "30/min".into(),
            api: "3000/min".into(),
            shared: false,
        }
    }
}

/// `[mail]`: e-mail through an SMTP relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The relay: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS); user and password may be in
    /// the URL (`smtps://USER:PASS@email-smtp.eu-west-1.amazonaws.com`).
    /// Unset: no mail.
    pub smtp: Option<String>,
    /// The sender, `Name <address>` or `address`.
    pub from: String,
    /// Who is told of payouts created and endpoints disabled.
    pub admin: Vec<String>,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp: None,
            from: "clickward <clickward@localhost>".to_owned(),
            admin: Vec::new(),
        }
    }
}

/// `[stream]`: clicks and outbox events to NATS JetStream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// The NATS server, e.g. "nats://127.0.0.1:4222"; unset: no stream.
    pub nats: Option<String>,
    /// The JetStream stream (created with subjects `clickward.>` when absent).
    pub name: String,
    /// Messages per batch (1..=10000).
    pub batch: u32,
    /// How long JetStream drops a message id it has seen (set when the
    /// stream is created; longer than a NATS outage you want to ride out).
    #[serde(with = "duration_text")]
    pub duplicate_window: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            nats: None,
            name: "CLICKWARD".to_owned(),
            batch: 1000,
            duplicate_window: Duration::from_secs(3600),
        }
    }
}

/// Spelling of [`Synchronous`] in the config file.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyncSetting {
    /// WAL + NORMAL.
    #[default]
    Normal,
    /// WAL + FULL.
    Full,
}

impl From<SyncSetting> for Synchronous {
    fn from(s: SyncSetting) -> Self {
        match s {
            SyncSetting::Normal => Synchronous::Normal,
            SyncSetting::Full => Synchronous::Full,
        }
    }
}

/// The whole configuration. Every field has a default, so an empty file (or
/// none) is a working config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the database and secrets (created mode 0700).
    pub data_dir: PathBuf,
    /// Catalogue TOML loaded at start and on SIGHUP (programs, affiliates, links).
    pub catalog: Option<PathBuf>,
    /// See [`Durability`].
    pub durability: Durability,
    /// Default redirect status: 302 or 307 (301 and 308 are refused).
    pub redirect_status: u16,
    /// Where unknown or disabled codes send the visitor instead of a 404 page.
    pub fallback_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs or addresses).
    pub trusted_proxies: Vec<String>,
    /// Dedup window, e.g. "24h" (rolling; see `clickward_core::dedup`).
    #[serde(with = "duration_text")]
    pub dedup_window: Duration,
    /// GeoIP `.mmdb` files, asked in order (e.g. the DB-IP v4 and v6 files).
    pub geoip: Vec<PathBuf>,
    /// ASN and anonymous-IP `.mmdb` files (GeoLite2-ASN, GeoIP2-Anonymous-IP,
    /// ip-location-db ASN) for the `hosting` and `anonymous` fraud rules.
    pub network: Vec<PathBuf>,
    /// Mark the visitor cookie `Secure` (set it when served over https).
    pub cookie_secure: bool,
    /// Exchange rates for conversions reported in another currency than the
    /// program's: `"EUR/USD" = "1.0850"` (1 EUR buys 1.0850 USD). Without a
    /// rate such conversions are refused with 422.
    pub rates: std::collections::BTreeMap<String, String>,
    /// Ingest queue.
    pub ingest: IngestConfig,
    /// Retention.
    pub retention: RetentionConfig,
    /// SQLite.
    pub storage: StorageConfig,
    /// Dashboard and portal.
    pub dashboard: DashboardConfig,
    /// Slow and greedy clients.
    pub http: HttpConfig,
    /// Webhooks and affiliate postbacks going out.
    pub outbound: OutboundConfig,
    /// The stream of clicks and events to NATS JetStream.
    pub stream: StreamConfig,
    /// E-mail through an SMTP relay.
    pub mail: MailConfig,
    /// Per-client rate limits.
    pub limits: LimitsConfig,
    /// Consent signals.
    pub privacy: PrivacyConfig,
    /// `--init`: start a database or make secrets that are missing from a
    /// data directory that held them (never read from the file: it is a
    /// decision for the moment, not a setting).
    #[serde(skip)]
    pub init: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./clickward-data"),
            catalog: None,
            durability: Durability::Sync,
            redirect_status: 302,
            fallback_url: None,
            trusted_proxies: Vec::new(),
            dedup_window: Duration::from_secs(24 * 3600),
            geoip: Vec::new(),
            network: Vec::new(),
            cookie_secure: false,
            rates: Default::default(),
            ingest: IngestConfig::default(),
            retention: RetentionConfig::default(),
            storage: StorageConfig::default(),
            dashboard: DashboardConfig::default(),
            outbound: OutboundConfig::default(),
            stream: StreamConfig::default(),
            mail: MailConfig::default(),
            limits: LimitsConfig::default(),
            privacy: PrivacyConfig::default(),
            http: HttpConfig::default(),
            init: false,
        }
    }
}

/// A configuration that cannot be used, with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// TOML syntax, an unknown key or a wrong type.
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    /// A value is not acceptable.
    #[error("config: {0}")]
    Invalid(String),
}

/// A config after validation, with derived values.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The config as given.
    pub config: Config,
    /// Default redirect status.
    pub redirect: RedirectStatus,
    /// Parsed trusted proxies.
    pub trusted: Vec<IpNet>,
    /// Dedup window, µs.
    pub dedup_window: Micros,
    /// Raw-click retention, µs (`None`: keep).
    pub retention_clicks: Option<Micros>,
    /// Parsed exchange rates, (from, to) → rate.
    pub rates: std::collections::HashMap<(Currency, Currency), ExchangeRate>,
    /// `outbound.retry`, parsed.
    pub retry_schedule: Vec<Duration>,
    /// `[limits]`, parsed: tracking, postback, pixel, login, api.
    pub limits: [Option<crate::services::limits::Rate>; 5],
    /// `[privacy] consent_mode`, parsed: overrides every program's.
    pub consent_override: Option<clickward_core::program::ConsentMode>,
    /// `[retention]`, parsed.
    pub retention: Retention,
}

impl Config {
    /// Reads a config file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`] naming the file, and
    /// for an unknown key its name and position.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))
    }

    /// Checks every value and derives what the server needs.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn validate(self) -> Result<Validated, ConfigError> {
        let redirect = RedirectStatus::from_code(self.redirect_status)
            .map_err(|e| ConfigError::Invalid(format!("redirect_status: {e}")))?;
        let trusted = self
            .trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "trusted_proxies: {s:?} is not an IP address or CIDR"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(url) = &self.fallback_url {
            let ok = url::Url::parse(url)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "fallback_url: {url:?} is not an absolute http(s) URL"
                )));
            }
        }
        if let Some(url) = &self.dashboard.public_url {
            let ok = url::Url::parse(url)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none())
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "dashboard.public_url: {url:?} is not an absolute http(s) URL without a query"
                )));
            }
        }
        if self.dashboard.session_idle.is_zero() || self.dashboard.session_max.is_zero() {
            return Err(ConfigError::Invalid(
                "dashboard.session_idle and session_max must be longer than 0".into(),
            ));
        }
        if let Some(url) = &self.storage.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            // Never echo the URL: it may hold a password.
            return Err(ConfigError::Invalid(
                "storage.url must start with postgres:// or postgresql://".to_owned(),
            ));
        }
        if self.storage.pool_size == 0 || self.storage.ship_batch == 0 {
            return Err(ConfigError::Invalid(
                "storage.pool_size and storage.ship_batch must be at least 1".to_owned(),
            ));
        }
        if self.http.header_read_timeout.is_zero()
            || self.http.body_read_timeout.is_zero()
            || self.http.connections_per_client == 0
        {
            return Err(ConfigError::Invalid(
                "http.header_read_timeout, body_read_timeout and connections_per_client must be more than 0".to_owned(),
            ));
        }
        if self.dedup_window.is_zero() {
            return Err(ConfigError::Invalid(
                "dedup_window must be longer than zero".to_owned(),
            ));
        }
        if self.dedup_window > Duration::from_secs(366 * 86_400) {
            return Err(ConfigError::Invalid(
                "dedup_window is longer than a year".to_owned(),
            ));
        }
        if self.ingest.queue_capacity == 0 || self.ingest.max_batch == 0 {
            return Err(ConfigError::Invalid(
                "ingest.queue_capacity and ingest.max_batch must be at least 1".to_owned(),
            ));
        }
        let dedup_window = i64::try_from(self.dedup_window.as_micros()).unwrap_or(i64::MAX);
        let mut rates = std::collections::HashMap::new();
        for (pair, rate) in &self.rates {
            let bad = |why: String| ConfigError::Invalid(format!("rates.{pair:?}: {why}"));
            let (from, to) = pair
                .split_once('/')
                .ok_or_else(|| bad("the key must be FROM/TO, like \"EUR/USD\"".to_owned()))?;
            let from = Currency::parse(from).map_err(|e| bad(e.to_string()))?;
            let to = Currency::parse(to).map_err(|e| bad(e.to_string()))?;
            let r = ExchangeRate::parse(rate).map_err(|e| bad(e.to_string()))?;
            rates.insert((from, to), r);
        }
        let retention_clicks = match &self.retention.clicks {
            None => None,
            Some(t) => {
                let d = parse_duration(t)
                    .map_err(|e| ConfigError::Invalid(format!("retention.clicks: {e}")))?;
                if d < Duration::from_secs(86_400) {
                    return Err(ConfigError::Invalid(format!(
                        "retention.clicks: {t:?} is shorter than a day"
                    )));
                }
                Some(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            }
        };
        let out = &self.outbound;
        let retry_schedule = out
            .retry
            .iter()
            .map(|t| {
                parse_duration(t).map_err(|e| ConfigError::Invalid(format!("outbound.retry: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if out.concurrency == 0 || out.per_endpoint == 0 {
            return Err(ConfigError::Invalid(
                "outbound.concurrency and outbound.per_endpoint must be at least 1".to_owned(),
            ));
        }
        if out.timeout.is_zero() || out.lease <= out.timeout {
            return Err(ConfigError::Invalid(format!(
                "outbound.lease ({:?}) must be longer than outbound.timeout ({:?}), which must be above 0",
                out.lease, out.timeout
            )));
        }
        if let Some(url) = &self.stream.nats {
            let ok = url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "nats" | "tls" | "ws" | "wss"));
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "stream.nats: {url:?} is not a NATS URL like \"nats://127.0.0.1:4222\""
                )));
            }
        }
        if self.mail.smtp.is_some() {
            crate::services::mail::mailbox(&self.mail.from)
                .map_err(|e| ConfigError::Invalid(format!("mail.from: {e}")))?;
            for a in &self.mail.admin {
                crate::services::mail::mailbox(a)
                    .map_err(|e| ConfigError::Invalid(format!("mail.admin: {e}")))?;
            }
        }
        if !(1..=10_000).contains(&self.stream.batch) {
            return Err(ConfigError::Invalid(
                "stream.batch must be 1..=10000".to_owned(),
            ));
        }
        if self.stream.name.is_empty()
            || !self
                .stream
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::Invalid(format!(
                "stream.name: {:?} may hold only letters, digits, '_' and '-'",
                self.stream.name
            )));
        }
        if out.poll.is_zero() {
            return Err(ConfigError::Invalid(
                "outbound.poll must be above 0".to_owned(),
            ));
        }
        let l = &self.limits;
        let rate = |name: &str, text: &str| {
            crate::services::limits::Rate::parse(text)
                .map_err(|e| ConfigError::Invalid(format!("limits.{name}: {e}")))
        };
        let keep = |name: &str, t: &str| -> Result<Option<Micros>, ConfigError> {
            if t.trim() == "forever" {
                return Ok(None);
            }
            let d = parse_duration(t).map_err(|e| {
                ConfigError::Invalid(format!("retention.{name}: {e} (or \"forever\")"))
            })?;
            if d < Duration::from_secs(86_400) {
                return Err(ConfigError::Invalid(format!(
                    "retention.{name}: {t:?} is shorter than a day"
                )));
            }
            Ok(Some(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)))
        };
        let r = &self.retention;
        let retention = Retention {
            clicks: retention_clicks,
            conversion_fields: keep("conversion_fields", &r.conversion_fields)?,
            deliveries: keep("deliveries", &r.deliveries)?,
            postbacks: keep("postbacks", &r.postbacks)?,
            receipts: keep("receipts", &r.receipts)?,
        };
        let consent_override = match &self.privacy.consent_mode {
            None => None,
            Some(m) => Some(
                clickward_core::program::ConsentMode::parse(m.trim()).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "privacy.consent_mode: {m:?} is not \"cookie\" or \"cookieless\""
                    ))
                })?,
            ),
        };
        if let Some(name) = &self.privacy.consent_cookie
            && (name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        {
            return Err(ConfigError::Invalid(format!(
                "privacy.consent_cookie: {name:?} is not a cookie name (letters, digits, - _ .)"
            )));
        }
        if l.shared && self.storage.url.is_none() {
            return Err(ConfigError::Invalid(
                "limits.shared needs the PostgreSQL store (storage.url): one SQLite node already has one limiter".to_owned(),
            ));
        }
        let limits = [
            rate("tracking", &l.tracking)?,
            rate("postback", &l.postback)?,
            rate("pixel", &l.pixel)?,
            rate("login", &l.login)?,
            rate("api", &l.api)?,
        ];
        Ok(Validated {
            limits,
            consent_override,
            retention,
            retention_clicks,
            retry_schedule,
            config: self,
            redirect,
            trusted,
            dedup_window,
            rates,
        })
    }
}

/// Durations as text: "24h", "50ms", "1h 30m" (jiff's friendly format) or ISO
/// 8601 ("PT24H").
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

pub use clickward_core::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let e = toml::from_str::<Config>("listen = \"127.0.0.1:1\"\ndurabilty = \"sync\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("durabilty"), "{e}");
        let e = toml::from_str::<Config>("[ingest]\nqueue = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue"), "{e}");
    }

    #[test]
    fn retention_periods_have_defaults_and_typos_are_named() {
        let v = Config::default().validate().unwrap();
        let day = 86_400_000_000i64;
        assert_eq!(v.retention.conversion_fields, Some(400 * day));
        assert_eq!(v.retention.deliveries, Some(30 * day));
        assert_eq!(v.retention.receipts, Some(1095 * day));
        let c: Config = toml::from_str("[retention]\npostbacks = \"forever\"\n").unwrap();
        assert_eq!(c.validate().unwrap().retention.postbacks, None);
        for bad in [
            "[retention]\ndeliveries = \"a month\"\n",
            "[retention]\nreceipts = \"1h\"\n",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("retention."), "{e}");
        }
        let c: Config = toml::from_str("[privacy]\nconsent_cookie = \"a b\"\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("privacy.consent_cookie")
        );
    }

    #[test]
    fn a_bad_limit_or_a_shared_limit_without_postgresql_is_refused() {
        let c: Config = toml::from_str("[limits]\npostback = \"30/day\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("limits.postback") && e.contains("30/day"), "{e}");
        let c: Config = toml::from_str("[limits]\nshared = true\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("limits.shared needs the PostgreSQL store"),
            "{e}"
        );
        let c: Config = toml::from_str(
            "[storage]\nurl = \"postgres://db/clickward\"\n[limits]\nshared = true\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn permanent_redirect_is_refused() {
        let c: Config = toml::from_str("redirect_status = 301").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("redirect_status") && e.contains("301"), "{e}");
    }

    #[test]
    fn durations_and_proxies_parse() {
        let c: Config = toml::from_str(
            "dedup_window = \"12h\"\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n[ingest]\nqueue_full_wait = \"5ms\"\n",
        )
        .unwrap();
        assert_eq!(c.dedup_window, Duration::from_secs(12 * 3600));
        let v = c.validate().unwrap();
        assert_eq!(v.trusted.len(), 2);
        assert_eq!(v.config.ingest.queue_full_wait, Duration::from_millis(5));
        let bad: Config = toml::from_str("trusted_proxies = [\"nope\"]").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("nope"));
        assert!(toml::from_str::<Config>("dedup_window = \"soon\"").is_err());
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        let c: Config = toml::from_str("[retention]\nclicks = \"400d\"").unwrap();
        assert_eq!(
            c.validate().unwrap().retention_clicks,
            Some(400 * 86_400 * 1_000_000)
        );
        let c: Config = toml::from_str("[retention]\nclicks = \"1h\"").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("retention.clicks")
        );
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("PT24H"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("-5m").is_err());
    }
}
