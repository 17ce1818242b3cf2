//! The PostgreSQL store: the shared truth of a multi-node deployment.
//!
//! Every node talks to it through a connection pool (deadpool-postgres over
//! tokio-postgres). What must be right across nodes is decided here, in the
//! database, never in one node's memory:
//! - a click's unique flag: the batch that stores a visitor's click on a link
//!   holds a transaction advisory lock on that (link, visitor key) pair, so
//!   a double tap landing on two nodes counts once;
//! - conversion idempotency: `INSERT … ON CONFLICT DO NOTHING` against
//!   `UNIQUE (program_id, event, order_id)`;
//! - rollups: advanced and recomputed under an exclusive advisory lock (one
//!   node at a time); click batches hold it shared, and add a click that
//!   arrives behind the watermark (a spool drained after an outage) to its
//!   bucket's rollup rows in the same transaction, so reports stay exact.
//!
//! Catalogue changes and live events reach every node by LISTEN/NOTIFY
//! ([`PgStore::listen`]).

use crate::{Notice, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

/// Runs `f` in a transaction on a pooled connection and commits.
macro_rules! in_tx {
    ($this:expr, |$tx:ident| $body:expr) => {{
        let mut client = $this.client().await?;
        let guard = client.transaction().await?;
        let out = {
            let $tx: &tokio_postgres::Transaction<'_> = &guard;
            $body
        };
        guard.commit().await?;
        Ok(out)
    }};
}

use crate::{
    AccountStore, CatalogStore, ClickStore, ClusterStore, ConversionStore, OutboxStore, ReportStore,
};

mod accounts;
mod catalog;
mod clicks;
mod cluster;
mod conversions;
mod delivery;
mod fraud;
mod integration;
mod outbox;
mod privacy;
mod rollups;

use cluster::listen_once;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The advisory lock (one `bigint` key) that rollup maintenance holds
/// exclusively and click batches hold shared.
const ROLLUP_LOCK: i64 = 0x636c_6963_6b77_6172; // "clickwar"

/// The class (first `int4` key) of the per-(link, visitor) dedup locks.
const DEDUP_LOCK_CLASS: i32 = 0x6377; // "cw"

/// The NOTIFY channel of catalogue changes (payload: the new version).
pub const CATALOG_CHANNEL: &str = "clickward_catalog";

/// The NOTIFY channel of live events (payload: the publisher's JSON).
pub const EVENTS_CHANNEL: &str = "clickward_events";

/// The NOTIFY channel of finished erasures: every node drops the erased
/// clicks from its spool and live buffer (payload: the ids and keys, never
/// stored).
pub const PRIVACY_CHANNEL: &str = "clickward_privacy";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message ("duplicate key value violates …") is the
        // useful part; tokio-postgres' Display says only "db error".
        match e.as_db_error() {
            // Class 22, data exception: this data can never be stored, so
            // retrying it would hold up everything behind it.
            Some(db) if db.code().code().starts_with("22") => {
                StoreError::Rejected(format!("{} ({})", db.message(), db.code().code()))
            }
            Some(db) => StoreError::Postgres(format!("{} ({})", db.message(), db.code().code())),
            None if e.is_closed() => StoreError::Unavailable(e.to_string()),
            None => StoreError::Postgres(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(format!("connection pool: {e}"))
    }
}

/// How to connect to PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections kept in the pool.
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self { pool_size: 16 }
    }
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    notices: broadcast::Sender<Notice>,
    listening: Arc<std::sync::atomic::AtomicBool>,
    /// Appended to the NOTIFY channel names ([`Channels`]).
    channels: Channels,
}

/// NOTIFY channels are one namespace per database, not per schema: two
/// installations in one database (each in its own schema, through the URL's
/// `options=-c search_path=…`) would hear each other's catalogue changes and,
/// worse, each other's live events. Outside `public` the names carry a
/// digest of the schema, computed by the database itself
/// (`clickward_channel_suffix`, migration V16, which the catalogue trigger
/// uses too); in `public` (the default) they are the documented names.
#[derive(Clone, Debug, Default)]
pub(crate) struct Channels {
    suffix: String,
}

impl Channels {
    /// The database's name of `channel` (one of the `*_CHANNEL` constants).
    pub(crate) fn wire(&self, channel: &str) -> String {
        format!("{channel}{}", self.suffix)
    }

    /// The constant a received channel name stands for.
    pub(crate) fn named(&self, wire: &str) -> String {
        wire.strip_suffix(self.suffix.as_str())
            .filter(|_| !self.suffix.is_empty())
            .unwrap_or(wire)
            .to_owned()
    }
}

type Args = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Appends a parameter and returns its placeholder (`$n`).
fn bind(args: &mut Args, v: impl ToSql + Sync + Send + 'static) -> String {
    args.push(Box::new(v));
    format!("${}", args.len())
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db?…`), brings the
    /// schema up to date and opens the pool.
    ///
    /// # Errors
    /// [`StoreError::Migration`] when the database holds migrations this
    /// binary does not know (a newer clickward wrote it) or one fails;
    /// [`StoreError::Postgres`] when the URL is malformed or the server
    /// cannot be reached.
    pub async fn connect(url: &str, opts: &PgOptions) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Postgres(format!("storage.url: {e}")))?;
        Self::connect_with(config, opts).await
    }

    /// [`PgStore::connect`] with a parsed configuration (tests use it to put
    /// each test in its own schema through `options`).
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    pub async fn connect_with(
        config: tokio_postgres::Config,
        opts: &PgOptions,
    ) -> Result<Self, StoreError> {
        let (mut client, conn) = config.connect(NoTls).await?;
        let driver = tokio::spawn(conn);
        let migrated = embedded::migrations::runner()
            .set_abort_missing(true)
            .set_abort_divergent(true)
            .run_async(&mut client)
            .await
            .map_err(|e| {
                StoreError::Migration(format!(
                    "{e} (a database written by a newer clickward cannot be opened by this one)"
                ))
            });
        let suffix = match &migrated {
            Ok(_) => client
                .query_one("SELECT clickward_channel_suffix(current_schema())", &[])
                .await?
                .try_get::<_, String>(0)?,
            Err(_) => String::new(),
        };
        let channels = Channels { suffix };
        drop(client);
        let _ = driver.await;
        migrated?;
        let mgr = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(2))
            .build()
            .map_err(|e| StoreError::Postgres(format!("connection pool: {e}")))?;
        let (notices, _) = broadcast::channel(4096);
        Ok(Self {
            pool,
            config,
            notices,
            listening: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            channels,
        })
    }

    /// Starts (once) a task holding a dedicated connection that LISTENs on
    /// [`CATALOG_CHANNEL`] and [`EVENTS_CHANNEL`] and passes every
    /// notification to [`ClusterStore::subscribe`]rs. It reconnects with backoff;
    /// after a reconnect it sends a `Notice` on the catalogue channel with an
    /// empty payload, since changes may have been missed meanwhile.
    pub fn listen(&self) {
        if self
            .listening
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let config = self.config.clone();
        let tx = self.notices.clone();
        let channels = self.channels.clone();
        let weak = Arc::downgrade(&self.listening);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            while weak.upgrade().is_some() {
                match listen_once(&config, &channels, &tx).await {
                    Ok(()) => delay = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!("LISTEN connection lost, reconnecting in {delay:?}: {e}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}
