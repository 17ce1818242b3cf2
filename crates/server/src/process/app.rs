//! The running server: shared state, start-up, background tasks, shutdown.
//!
//! [`assemble`] builds the state and starts the background work for a
//! [`Shape`]; [`Server::start`] (config, listener, clock) serves it on a
//! listener, so tests run the real server on port 0 with an injected clock,
//! and [`Function::start`] hands its router to a Lambda runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum_extra::extract::cookie::Key;
use clickward_enrich::geo::GeoDb;
use clickward_enrich::ua::UaParser;
use clickward_store::{PgOptions, PgStore, Spool, SqliteOptions, SqliteStore, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::process::catalog;
use crate::process::config::Validated;
use crate::process::secrets::{self, Salts};
use crate::services::catalog::CatalogService;
use crate::services::conversions::ConversionService;
use crate::services::delivery::{DeliveryService, DeliverySettings};
use crate::services::events::EventHub;
use crate::services::ingest::{Ingest, IngestSettings, Sink};
use crate::services::links::LinkCache;
use crate::telemetry;

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub cfg: Validated,
    pub store: Arc<dyn Store>,
    pub links: Arc<LinkCache>,
    pub ua: UaParser,
    pub geo: Option<Arc<GeoDb>>,
    pub salts: Salts,
    pub cookie_key: Key,
    /// `cookie_key` expanded once, for the redirect path's cookies.
    pub cookie_sealer: crate::http::CookieSealer,
    pub clock: Arc<dyn Clock>,
    pub ingest: Ingest,
    pub metrics: telemetry::HotMetrics,
    pub prometheus: PrometheusHandle,
    pub shutting_down: AtomicBool,
    pub geo_error_logged: AtomicBool,
    pub events: Arc<EventHub>,
    /// Catalogue writes (API, dashboard).
    pub catalog: CatalogService,
    /// Conversion intake and status changes.
    pub conversions: ConversionService,
    /// Stripe's and Shopify's webhooks.
    pub integrations: crate::services::integrations::IntegrationService,
    /// Webhook and postback endpoints, the delivery log, replays.
    pub delivery: DeliveryService,
    /// The node's click spool, when the store is a shared PostgreSQL.
    pub spool: Option<Spool>,
    /// Becomes `true` when the server stops (ends live streams).
    pub stop: watch::Receiver<bool>,
    /// Sign-in throttle and password check slots (see `dashboard::login`).
    pub sign_in: crate::dashboard::SignInGuard,
    /// Velocity counters, network files, the exclusion key.
    pub fraud: crate::services::fraud::FraudParts,
    /// Fraud rules and exclusion entries (API, dashboard).
    pub fraud_rules: crate::services::fraud::FraudService,
    /// Per-client rate limits of the public endpoints.
    pub limits: crate::services::limits::Limits,
    /// Erasure and access requests.
    pub privacy: Arc<crate::services::privacy::PrivacyService<dyn Store>>,
    /// API keys verified lately, for answers while the store is down.
    pub api_keys: crate::services::keys::KeyCache,
    /// Seals and opens the admin API's list cursors.
    pub cursors: crate::http::paging::Cursors,
}

/// The buyer facts of an address: its keyed hash and GeoIP country (a
/// lookup error is no country).
fn buyer_lookup(
    geo: Option<Arc<GeoDb>>,
    key: [u8; 32],
) -> crate::services::conversions::BuyerLookup {
    Arc::new(move |ip| crate::services::fraud::Buyer {
        ip_hash: Some(crate::services::fraud::address_hash(&key, ip)),
        country: geo
            .as_ref()
            .and_then(|g| g.lookup(ip).ok().flatten())
            .and_then(|g| g.country),
    })
}

impl AppState {
    /// Active links in the cache.
    pub fn links_len(&self) -> usize {
        self.0.links.len()
    }

    /// Re-reads the catalogue file (if configured) into the store and the
    /// link cache. A bad file changes nothing and returns its error.
    ///
    /// # Errors
    /// The catalogue's or the store's error.
    pub async fn reload_catalog(&self) -> anyhow::Result<()> {
        let result = async {
            if let Some(path) = &self.0.cfg.config.catalog {
                let cat = catalog::load(path)?;
                let applied = self.0.store.apply_catalog(cat.input).await?;
                let kept = self
                    .0
                    .store
                    .apply_file_rules(cat.rules, self.0.clock.now_micros())
                    .await?;
                if !kept.is_empty() {
                    tracing::warn!(
                        "catalogue {}: rules left as they are, because they were changed through the API, CLI or dashboard: {}",
                        path.display(),
                        kept.join(", ")
                    );
                }
                tracing::info!(
                    "catalogue {}: {} entries applied, {} unchanged",
                    path.display(),
                    applied.applied,
                    applied.unchanged
                );
                if !applied.drifted.is_empty() {
                    tracing::warn!(
                        "catalogue {}: left as they are, because they were changed through the API, CLI or dashboard since (the file no longer owns them): {}",
                        path.display(),
                        applied.drifted.join(", ")
                    );
                }
            }
            crate::services::catalog::ensure_postback_tokens(self.0.store.as_ref()).await?;
            self.0.links.refresh(self.0.store.as_ref()).await?;
            anyhow::Ok(())
        }
        .await;
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(telemetry::CATALOG_RELOADS_TOTAL, "result" => label).increment(1);
        result
    }
}

/// Opens the configured store: PostgreSQL when `storage.url` is set
/// (migrating it), else SQLite in the data directory.
///
/// # Errors
/// When the directory or database cannot be created, opened or reached, or
/// its schema is newer than this binary.
pub async fn open_store(cfg: &Validated) -> anyhow::Result<Arc<dyn Store>> {
    secrets::check_data_dir(
        &cfg.config.data_dir,
        cfg.config.storage.url.is_none(),
        cfg.config.init,
    )?;
    secrets::ensure_private_dir(&cfg.config.data_dir)?;
    if let Some(url) = &cfg.config.storage.url {
        let opts = PgOptions {
            pool_size: cfg.config.storage.pool_size,
        };
        // The URL may hold a password: name the setting, not the value.
        let store = PgStore::connect(url, &opts)
            .await
            .context("opening the PostgreSQL store of storage.url")?;
        return Ok(Arc::new(store));
    }
    let path = cfg.config.data_dir.join("clickward.db");
    let store = SqliteStore::open(
        &path,
        &SqliteOptions {
            synchronous: cfg.config.storage.synchronous.into(),
            ..SqliteOptions::default()
        },
    )
    .with_context(|| format!("opening database {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Opens the node's click spool (used with a PostgreSQL store).
fn open_spool(cfg: &Validated) -> anyhow::Result<Spool> {
    let path = cfg.config.data_dir.join("spool.db");
    Spool::open(&path, cfg.config.storage.synchronous.into())
        .with_context(|| format!("opening the click spool {}", path.display()))
}

/// A started server.
pub struct Server {
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    handle: JoinHandle<anyhow::Result<()>>,
    state: AppState,
}

impl Server {
    /// Opens the store, applies the catalogue, loads enrichment data and
    /// starts serving on `listener`. Everything that can be wrong with the
    /// config, the catalogue or the GeoIP files fails here, before the first
    /// request.
    ///
    /// # Errors
    /// A message naming the file or setting at fault.
    pub async fn start(
        cfg: Validated,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Server> {
        let Assembled {
            state,
            stop,
            stopped,
            ingest_task,
            ship_stop,
            shipper,
            exchange,
            deliverer,
            streamer,
        } = assemble(cfg, clock, Shape::Server).await?;
        let addr = listener.local_addr()?;
        let background = spawn_background(state.clone(), stopped.clone());
        let app = crate::http::router(state.clone());
        let serve_state = state.clone();
        let http = &state.0.cfg.config.http;
        let limits = crate::process::listen::Limits {
            header_read_timeout: http.header_read_timeout,
            connections_per_client: http.connections_per_client,
            trusted: state.0.cfg.trusted.clone(),
        };
        let handle = tokio::spawn(async move {
            let stopped_rx = stopped;
            crate::process::listen::serve(listener, app, limits, stopped_rx)
                .await
                .context("serving")?;
            // Every handler has returned; now write what is queued.
            serve_state.0.shutting_down.store(true, Ordering::SeqCst);
            let lost = ingest_task.drain().await;
            // Then ship what the spool holds, for a few seconds at most;
            // the rest stays on disk and ships at the next start.
            let _ = ship_stop.send(true);
            if let Some(shipper) = shipper {
                let _ = shipper.await;
            }
            if let Some(exchange) = exchange {
                exchange.abort();
            }
            background.abort();
            deliverer.abort();
            // The stream's thread ends with `stopped`; it is not waited for
            // (what it had not published is published at the next start).
            drop(streamer);
            if lost > 0 {
                anyhow::bail!(
                    "{lost} clicks could not be written before shutdown (the database refused every write for {:?}; see the log above)",
                    crate::services::ingest::GIVE_UP_AT_SHUTDOWN
                );
            }
            Ok(())
        });
        Ok(Server {
            addr,
            stop,
            handle,
            state,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The shared state (for tests and the CLI).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts a graceful shutdown: stop accepting, finish in-flight requests,
    /// write every queued click.
    pub fn shutdown(&self) {
        self.state.0.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
    }

    /// Waits until the server has stopped and every click is written.
    ///
    /// # Errors
    /// When serving failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.handle.await.context("server task")?
    }
}

/// Where the tracker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `clickward serve`: its own listener; with PostgreSQL, redirects
    /// commit to the node's spool and a shipper moves the clicks on.
    Server,
    /// A function answering one request per invocation (`crates/lambda`).
    /// Between invocations the process is frozen and may be dropped with its
    /// disk, so nothing is left to run after an answer: a click is committed
    /// to the store itself before its redirect is sent (no spool, durability
    /// `sync` whatever the config says).
    Function,
}

/// The state and the work running beside the requests, as [`assemble`]
/// started them.
pub struct Assembled {
    /// What every handler reads.
    pub state: AppState,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
    ingest_task: crate::services::ingest::IngestTask,
    ship_stop: watch::Sender<bool>,
    shipper: Option<JoinHandle<()>>,
    exchange: Option<JoinHandle<()>>,
    deliverer: JoinHandle<()>,
    streamer: Option<std::thread::JoinHandle<()>>,
}

/// Opens the store, applies the catalogue, loads enrichment data and starts
/// the background work of `shape`. Everything that can be wrong with the
/// config, the catalogue or the GeoIP files fails here, before the first
/// request.
///
/// # Errors
/// A message naming the file or setting at fault.
pub async fn assemble(
    cfg: Validated,
    clock: Arc<dyn Clock>,
    shape: Shape,
) -> anyhow::Result<Assembled> {
    let prometheus = telemetry::metrics_handle();
    let metrics = telemetry::HotMetrics::register();
    telemetry::announce();
    let geo = if cfg.config.geoip.is_empty() {
        None
    } else {
        Some(Arc::new(GeoDb::open(&cfg.config.geoip)?))
    };
    let store = open_store(&cfg).await?;
    // With PostgreSQL, redirects commit to the local spool and a shipper
    // moves the clicks on; they never wait on the network.
    let spool = match (&cfg.config.storage.url, shape) {
        (Some(_), Shape::Server) => Some(open_spool(&cfg)?),
        _ => None,
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let sink = match &spool {
        Some(spool) => Sink::Spool {
            spool: spool.clone(),
            wake: wake.clone(),
        },
        None => Sink::Store(store.clone()),
    };
    let secrets_dir = cfg.config.data_dir.join("secrets");
    let cookie_key = secrets::cookie_key(&secrets_dir)?;
    let salts = Salts::load(&secrets_dir, cfg.dedup_window)?;
    let fraud = crate::services::fraud::FraudParts {
        velocity: Default::default(),
        click_caps: Default::default(),
        network: if cfg.config.network.is_empty() {
            None
        } else {
            Some(clickward_enrich::network::NetworkDb::open(
                &cfg.config.network,
            )?)
        },
        exclusion_key: crate::services::fraud::exclusion_key(cookie_key.master()),
    };
    let ua = UaParser::new(20_000).context("building the user-agent parser")?;
    let ingest_cfg = &cfg.config.ingest;
    let (ingest, ingest_task) = Ingest::start(
        sink,
        IngestSettings {
            queue_capacity: ingest_cfg.queue_capacity,
            max_batch: ingest_cfg.max_batch,
            queue_full_wait: ingest_cfg.queue_full_wait,
            commit_timeout: ingest_cfg.commit_timeout,
            durability: match shape {
                Shape::Server => cfg.config.durability,
                Shape::Function => crate::services::ingest::Durability::Sync,
            },
        },
        cfg.dedup_window,
    );
    let (stop, stopped) = watch::channel(false);
    let links = Arc::new(LinkCache::new(cfg.redirect));
    let events = Arc::new(EventHub::new());
    let catalog = CatalogService::new(store.clone(), links.clone());
    let conversions = ConversionService::new(
        store.clone(),
        events.clone(),
        clock.clone(),
        cfg.rates.clone(),
        links.clone(),
        buyer_lookup(geo.clone(), fraud.exclusion_key),
    );
    let integrations = crate::services::integrations::IntegrationService::new(
        store.clone(),
        conversions.clone(),
        clock.clone(),
    );
    let outbound = crate::services::delivery::http::Outbound::new(
        cfg.config.outbound.allow_private,
        cfg.config.outbound.timeout,
    )
    .context("building the outbound HTTP client")?;
    let delivery = DeliveryService::new(store.clone(), clock.clone(), outbound.clone());
    let limits = cfg.limits;
    let privacy = Arc::new(crate::services::privacy::PrivacyService::new(
        store.clone(),
        events.clone(),
        spool.clone(),
        clock.clone(),
    ));
    let shared_limits = cfg.config.limits.shared.then(|| {
        let shared: Arc<dyn clickward_store::ClusterStore> = store.clone();
        shared
    });
    let fraud_rules = crate::services::fraud::FraudService::new(
        store.clone(),
        links.clone(),
        fraud.exclusion_key,
    );
    let state = AppState(Arc::new(Inner {
        delivery,
        links: links.clone(),
        catalog,
        conversions,
        integrations,
        cfg,
        store,
        ua,
        geo,
        salts,
        cookie_sealer: crate::http::CookieSealer::new(&cookie_key),
        cursors: crate::http::paging::Cursors::new(cookie_key.signing()),
        cookie_key,
        clock,
        ingest,
        metrics,
        prometheus,
        shutting_down: AtomicBool::new(false),
        geo_error_logged: AtomicBool::new(false),
        events: events.clone(),
        spool: spool.clone(),
        stop: stopped.clone(),
        sign_in: Default::default(),
        fraud_rules,
        limits: crate::services::limits::Limits::new(limits, shared_limits),
        privacy: privacy.clone(),
        api_keys: Default::default(),
        fraud,
    }));
    state.reload_catalog().await?;
    // Every node must hash visitors with the same daily salts.
    let today = clickward_core::utc_day(state.0.clock.now_micros());
    state
        .0
        .salts
        .sync_shared(state.0.store.as_ref(), today)
        .await
        .context("agreeing on visitor salts through the shared store")?;
    let (ship_stop, ship_stopped) = watch::channel(false);
    let shipper = spool.map(|spool| {
        crate::services::cluster::spawn_shipper(
            spool,
            state.0.store.clone(),
            state.0.cfg.config.storage.ship_batch,
            state.0.cfg.dedup_window,
            wake,
            ship_stopped,
            Duration::from_secs(5),
        )
    });
    let exchange = crate::services::cluster::spawn_exchange(
        state.0.store.clone(),
        links,
        events,
        privacy.clone(),
        stopped.clone(),
    );

    let mail_cfg = &state.0.cfg.config.mail;
    let mailer = match &mail_cfg.smtp {
        Some(url) => Some(Arc::new(crate::services::mail::Mailer::new(
            url,
            &mail_cfg.from,
            &mail_cfg.admin,
            state
                .0
                .cfg
                .config
                .dashboard
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", state.0.cfg.config.listen)),
        )?)),
        None => None,
    };
    state
        .0
        .delivery
        .ensure_mail_endpoint(mailer.is_some())
        .await
        .context("making the e-mail endpoint")?;
    let out = &state.0.cfg.config.outbound;
    let deliverer = crate::services::delivery::spawn_worker(
        state.0.store.clone(),
        state.0.clock.clone(),
        outbound,
        mailer,
        DeliverySettings {
            retry: state.0.cfg.retry_schedule.clone(),
            concurrency: out.concurrency,
            per_endpoint: out.per_endpoint,
            lease: out.lease,
            poll: out.poll,
        },
        stopped.clone(),
    );
    if state.0.cfg.config.stream.nats.is_some() {
        crate::services::stream::init_cursors(state.0.store.as_ref())
            .await
            .context("starting the NATS stream's cursors")?;
    }
    let streamer = state.0.cfg.config.stream.nats.clone().map(|url| {
        let st = &state.0.cfg.config.stream;
        crate::services::stream::spawn(
            state.0.store.clone(),
            crate::services::stream::StreamSettings {
                url,
                stream: st.name.clone(),
                batch: st.batch,
                duplicate_window: st.duplicate_window,
            },
            stopped.clone(),
        )
    });
    let streamer = streamer.transpose().context("starting the NATS stream")?;
    Ok(Assembled {
        state,
        stop,
        stopped,
        ingest_task,
        ship_stop,
        shipper,
        exchange,
        deliverer,
        streamer,
    })
}

/// The tracker as a function (`Shape::Function`): the router every
/// invocation goes through, and the state it reads.
pub struct Function {
    /// The same router `clickward serve` serves. It holds the background
    /// work (ingest writer, catalogue refresh, rollups), which stops when the
    /// last clone of it is dropped: whoever drives it keeps it alive.
    pub router: axum::Router,
    /// What every handler reads.
    pub state: AppState,
}

/// What a [`Function`]'s router keeps alive: dropping [`Assembled`] closes
/// the ingest writer (a redirect would then record nothing).
#[derive(Clone)]
struct KeepAlive(#[allow(dead_code)] Arc<(Assembled, JoinHandle<()>)>);

impl Function {
    /// Assembles the tracker for one-request-per-invocation hosting.
    ///
    /// # Errors
    /// As [`assemble`].
    pub async fn start(cfg: Validated, clock: Arc<dyn Clock>) -> anyhow::Result<Function> {
        let parts = assemble(cfg, clock, Shape::Function).await?;
        let state = parts.state.clone();
        let background = spawn_background(state.clone(), parts.stopped.clone());
        let keep = KeepAlive(Arc::new((parts, background)));
        Ok(Function {
            router: crate::http::router(state.clone()).layer(axum::Extension(keep)),
            state,
        })
    }
}

/// Deletes raw clicks past retention, 10k per transaction so that ingest
/// interleaves; the store never deletes past the rollup watermark.
async fn purge_old_clicks(state: &AppState, keep: clickward_core::Micros) {
    let cutoff = state.0.clock.now_micros() - keep;
    let mut total = 0u64;
    loop {
        match state.0.store.purge_clicks(cutoff, 10_000).await {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => {
                tracing::warn!("retention purge failed: {e}");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    if total > 0 {
        tracing::info!("retention: deleted {total} raw clicks older than the retention period");
    }
}

fn spawn_background(state: AppState, mut stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        // Dedup state and retention: hourly (the first tick is immediate).
        let mut purge = tokio::time::interval(Duration::from_secs(3600));
        let mut approve = tokio::time::interval(Duration::from_secs(60));
        let mut rollup = tokio::time::interval(Duration::from_secs(10));
        let mut salts = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = async { let _ = stopped.wait_for(|s| *s).await; } => return,
                _ = poll.tick() => {
                    // Catalogue changes made by another process (the CLI).
                    if let Err(e) = state.0.links.refresh_if_changed(state.0.store.as_ref()).await {
                        tracing::warn!("link cache refresh failed: {e}");
                    }
                }
                _ = upkeep.tick() => {
                    // Erasures held on this node while PostgreSQL was down
                    // (beside the loop: a long run must not hold up the rest).
                    if state.0.spool.is_some() {
                        let privacy = state.0.privacy.clone();
                        tokio::spawn(async move { privacy.hand_over().await });
                    }
                    state.0.prometheus.run_upkeep();
                    metrics::gauge!(telemetry::QUEUE_DEPTH).set(state.0.ingest.depth() as f64);
                }
                _ = rollup.tick() => {
                    // Catch up chunk by chunk; the writer is free between chunks.
                    let mut last = None;
                    loop {
                        match state.0.store.advance_rollups(state.0.clock.now_micros()).await {
                            Ok(w) if Some(w) != last => last = Some(w),
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!("rollup failed: {e}");
                                break;
                            }
                        }
                    }
                    if let Some(w) = last {
                        // A watermark of 0: no click was ever settled, so nothing waits.
                        let lag = if w == 0 {
                            0.0
                        } else {
                            (state.0.clock.now_micros() - w).max(0) as f64 / 1e6
                        };
                        metrics::gauge!(telemetry::ROLLUP_LAG_SECONDS).set(lag);
                    }
                }
                _ = salts.tick() => {
                    // Clients whose rate limits have recovered are forgotten.
                    state.0.limits.sweep().await;
                    // Erasures a failure left received are carried out
                    // (beside the loop: a long run must not hold up the rest).
                    let privacy = state.0.privacy.clone();
                    tokio::spawn(async move { privacy.retry_pending().await });
                    // Tomorrow's salt is agreed on well before midnight.
                    let today = clickward_core::utc_day(state.0.clock.now_micros());
                    if let Err(e) = state.0.salts.sync_shared(state.0.store.as_ref(), today).await {
                        tracing::warn!("visitor salt sync failed (retried in a minute): {e}");
                    }
                }
                _ = approve.tick() => {
                    // Hold periods: pending conversions become approved.
                    if let Err(e) = state.0.store.approve_due(state.0.clock.now_micros()).await {
                        tracing::warn!("automatic approval failed: {e}");
                    }
                }
                _ = purge.tick() => {
                    if let Some(keep) = state.0.cfg.retention_clicks {
                        purge_old_clicks(&state, keep).await;
                    }
                    let r = state.0.cfg.retention;
                    state
                        .0
                        .privacy
                        .apply_retention([r.conversion_fields, r.deliveries, r.postbacks, r.receipts])
                        .await;
                    let before = state.0.clock.now_micros() - state.0.cfg.dedup_window;
                    if let Err(e) = state.0.store.purge_dedup(before).await {
                        tracing::warn!("dedup purge failed: {e}");
                    }
                }
            }
        }
    })
}
