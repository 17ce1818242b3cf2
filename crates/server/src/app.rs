//! The running server: shared state, start-up, background tasks, shutdown.
//!
//! [`Server::start`] is a function of (config, listener, clock), so tests run
//! the real server on port 0 with an injected clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum_extra::extract::cookie::Key;
use clickward_enrich::geo::GeoDb;
use clickward_enrich::ua::UaParser;
use clickward_store::{SqliteOptions, SqliteStore, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog;
use crate::clock::Clock;
use crate::config::Validated;
use crate::ingest::{Ingest, IngestTask};
use crate::links::LinkCache;
use crate::secrets::{self, Salts};
use crate::telemetry;

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub cfg: Validated,
    pub store: Arc<dyn Store>,
    pub links: LinkCache,
    pub ua: UaParser,
    pub geo: Option<GeoDb>,
    pub salts: Salts,
    pub cookie_key: Key,
    pub clock: Arc<dyn Clock>,
    pub ingest: Ingest,
    pub metrics: telemetry::HotMetrics,
    pub prometheus: PrometheusHandle,
    pub shutting_down: AtomicBool,
    pub geo_error_logged: AtomicBool,
    pub events: crate::events::EventHub,
    /// Becomes `true` when the server stops (ends live streams).
    pub stop: watch::Receiver<bool>,
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
                self.0.store.apply_catalog(cat).await?;
            }
            ensure_postback_tokens(self.0.store.as_ref()).await?;
            self.0.links.refresh(self.0.store.as_ref()).await?;
            anyhow::Ok(())
        }
        .await;
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(telemetry::CATALOG_RELOADS_TOTAL, "result" => label).increment(1);
        result
    }
}

/// Gives every program without a postback token a random one, so postbacks
/// can be authenticated from the start (`clickward program list` shows it).
///
/// # Errors
/// Store errors.
pub async fn ensure_postback_tokens(store: &dyn Store) -> anyhow::Result<()> {
    for p in store.list_programs().await? {
        let mut settings = store.program_settings(p.id).await?;
        if settings.postback_token.is_none() {
            settings.postback_token = Some(crate::auth::new_token());
            store.save_program_settings(p.slug, settings).await?;
        }
    }
    Ok(())
}

/// Opens the SQLite store in the configured data directory.
///
/// # Errors
/// When the directory or database cannot be created or opened.
pub fn open_store(cfg: &Validated) -> anyhow::Result<SqliteStore> {
    secrets::ensure_private_dir(&cfg.config.data_dir)?;
    let path = cfg.config.data_dir.join("clickward.db");
    SqliteStore::open(
        &path,
        &SqliteOptions {
            synchronous: cfg.config.storage.synchronous.into(),
            ..SqliteOptions::default()
        },
    )
    .with_context(|| format!("opening database {}", path.display()))
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
        let prometheus = telemetry::metrics_handle();
        let metrics = telemetry::HotMetrics::register();
        let geo = if cfg.config.geoip.is_empty() {
            None
        } else {
            Some(GeoDb::open(&cfg.config.geoip)?)
        };
        let store: Arc<dyn Store> = Arc::new(open_store(&cfg)?);
        let secrets_dir = cfg.config.data_dir.join("secrets");
        let cookie_key = secrets::cookie_key(&secrets_dir)?;
        let salts = Salts::load(&secrets_dir, cfg.dedup_window)?;
        let ua = UaParser::new(20_000).context("building the user-agent parser")?;
        let (ingest, ingest_task) = Ingest::start(
            store.clone(),
            &cfg.config.ingest,
            cfg.config.durability,
            cfg.dedup_window,
        );
        let (stop, stopped) = watch::channel(false);
        let state = AppState(Arc::new(Inner {
            links: LinkCache::new(cfg.redirect),
            cfg,
            store,
            ua,
            geo,
            salts,
            cookie_key,
            clock,
            ingest,
            metrics,
            prometheus,
            shutting_down: AtomicBool::new(false),
            geo_error_logged: AtomicBool::new(false),
            events: crate::events::EventHub::new(),
            stop: stopped.clone(),
        }));
        state.reload_catalog().await?;

        let addr = listener.local_addr()?;
        let background = spawn_background(state.clone(), stopped.clone());
        let app = crate::http::router(state.clone());
        let serve_state = state.clone();
        let handle = tokio::spawn(async move {
            let mut stopped_rx = stopped;
            let shutdown = async move {
                let _ = stopped_rx.wait_for(|s| *s).await;
            };
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving")?;
            // Every handler has returned; now write what is queued.
            serve_state.0.shutting_down.store(true, Ordering::SeqCst);
            drain(ingest_task).await;
            background.abort();
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

async fn drain(task: IngestTask) {
    task.drain().await;
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
                        let lag = (state.0.clock.now_micros() - w).max(0) as f64 / 1e6;
                        metrics::gauge!(telemetry::ROLLUP_LAG_SECONDS).set(lag);
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
                    let before = state.0.clock.now_micros() - state.0.cfg.dedup_window;
                    if let Err(e) = state.0.store.purge_dedup(before).await {
                        tracing::warn!("dedup purge failed: {e}");
                    }
                }
            }
        }
    })
}
