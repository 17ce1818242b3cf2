//! Every metric clickward exports, declared in one place, and the log setup.
//!
//! Metrics are recorded through the `metrics` facade and rendered by the
//! Prometheus exporter from our own `/metrics` route. Nothing here is ever
//! labelled with an IP, a visitor key or any other visitor value.

use std::sync::OnceLock;

use clickward_core::click::BotReason;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Tracking requests by outcome: `recorded` (committed, or queued with
/// `durability = "buffered"`), `unconfirmed` (sync commit did not finish
/// within `ingest.commit_timeout`; still queued), `dropped` (queue full past
/// `ingest.queue_full_wait`, or shutting down), `not_found` (unknown or
/// disabled code).
pub const CLICKS_TOTAL: &str = "clickward_clicks_total";
/// Recorded clicks classified as bots, by reason (`ua_pattern`, `head`, …).
pub const BOT_CLICKS_TOTAL: &str = "clickward_bot_clicks_total";
/// Human clicks a fraud rule judged, by action (`flag`, `reject`, `block`;
/// never labelled by rule id, which admins name freely).
pub const FRAUD_VERDICTS_TOTAL: &str = "clickward_fraud_click_verdicts_total";
/// Requests beyond a `[limits]` rate, by endpoint (`tracking`: recorded
/// invalid and redirected; the others answered 429).
pub const RATE_LIMITED_TOTAL: &str = "clickward_rate_limited_total";
/// Time from request to redirect answer, seconds (histogram).
pub const REDIRECT_SECONDS: &str = "clickward_redirect_duration_seconds";
/// Clicks waiting in the ingest queue.
pub const QUEUE_DEPTH: &str = "clickward_ingest_queue_depth";
/// Clicks per committed transaction (histogram).
pub const BATCH_SIZE: &str = "clickward_ingest_batch_size";
/// Failed click-batch writes (each is retried).
pub const WRITE_ERRORS_TOTAL: &str = "clickward_ingest_write_errors_total";
/// Clicks committed to the database.
pub const CLICKS_WRITTEN_TOTAL: &str = "clickward_ingest_clicks_written_total";
/// Human clicks written that were unique (dedup share = duplicate / (unique + duplicate)).
pub const UNIQUE_CLICKS_TOTAL: &str = "clickward_unique_clicks_total";
/// Human clicks written that were duplicates of a visitor's unique click.
pub const DUPLICATE_CLICKS_TOTAL: &str = "clickward_duplicate_clicks_total";
/// Oldest click of the last committed batch to its commit, seconds.
pub const INGEST_LAG_SECONDS: &str = "clickward_ingest_lag_seconds";
/// Now minus the rollup watermark, seconds (about a minute when current).
pub const ROLLUP_LAG_SECONDS: &str = "clickward_rollup_lag_seconds";
/// Visitor cookies that failed to decrypt (tampered or foreign), ignored.
pub const COOKIE_REJECTED_TOTAL: &str = "clickward_cookie_rejected_total";
/// GeoIP lookups that hit a corrupt record (click recorded without location).
pub const GEOIP_ERRORS_TOTAL: &str = "clickward_geoip_errors_total";
/// Postbacks by answered status code (`201`, `200`, `409`, `401`, …) and
/// outcome (`created`, `duplicate`, `conflict`, `unknown_click`, `invalid`,
/// `unauthorized`, `malformed`): rejected postbacks by reason.
pub const POSTBACKS_TOTAL: &str = "clickward_postbacks_total";
/// Platform webhooks (Stripe, Shopify) by source and answered outcome
/// (`created`, `refunded`, `ignored`, `unauthorized`, …).
pub const INTEGRATION_EVENTS_TOTAL: &str = "clickward_integration_events_total";
/// Catalogue reloads by result (`ok`, `error`).
pub const CATALOG_RELOADS_TOTAL: &str = "clickward_catalog_reloads_total";
/// Gauge: clicks in this node's spool, not yet in PostgreSQL.
pub const SPOOL_CLICKS: &str = "clickward_spool_clicks";
/// Gauge: age (s) of the oldest click in the spool; 0 when it is empty.
pub const SHIP_LAG_SECONDS: &str = "clickward_ship_lag_seconds";
/// Counter: clicks shipped from the spool to PostgreSQL.
pub const SHIPPED_CLICKS_TOTAL: &str = "clickward_shipped_clicks_total";
/// Counter: failed shipping attempts (retried with backoff).
pub const SHIP_ERRORS_TOTAL: &str = "clickward_ship_errors_total";
/// Counter: live events of this node not sent to the other nodes (the
/// forwarding queue was full or PostgreSQL did not take them).
pub const EVENTS_NOT_FORWARDED_TOTAL: &str = "clickward_events_not_forwarded_total";
/// Counter: spooled clicks the shared store refused for their data and
/// that were set aside so the rest could ship (see `/readyz`).
pub const SET_ASIDE_CLICKS_TOTAL: &str = "clickward_spool_set_aside_total";
/// Counter: connections closed on accept because their client address
/// already held `http.connections_per_client` open ones.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "clickward_connections_refused_total";
/// Counter: argon2id password checks run by sign-ins (one per password
/// sign-in that reached a check, whatever its outcome).
pub const PASSWORD_CHECKS_TOTAL: &str = "clickward_sign_in_password_checks_total";
/// Counter: sign-ins refused without a check because their client must
/// wait after failures.
pub const SIGN_IN_THROTTLED_TOTAL: &str = "clickward_sign_in_throttled_total";
/// Counter: delivery attempts (webhooks, affiliate postbacks), by `kind`
/// (`webhook`, `postback`) and `result` (`delivered`, `retry`, `dead`, `gone`).
pub const DELIVERY_ATTEMPTS_TOTAL: &str = "clickward_delivery_attempts_total";
/// Counter: events fanned out from the outbox into deliveries.
pub const DELIVERY_EVENTS_DISPATCHED_TOTAL: &str = "clickward_delivery_events_dispatched_total";
/// Counter: endpoints disabled by their receiver (410) or by failing 24 h.
pub const DELIVERY_ENDPOINTS_DISABLED_TOTAL: &str = "clickward_delivery_endpoints_disabled_total";
/// Counter: delivery store operations that failed (retried on the next poll).
pub const DELIVERY_ERRORS_TOTAL: &str = "clickward_delivery_errors_total";
/// Counter: messages published to NATS JetStream and acknowledged, by
/// `kind` (`click`, `event`).
pub const STREAM_PUBLISHED_TOTAL: &str = "clickward_stream_published_total";
/// Counter: failed connections or publishes to NATS (each retried).
pub const STREAM_ERRORS_TOTAL: &str = "clickward_stream_errors_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Counter: answers of the API, the dashboard and portal, `/postback` and
/// `/pixel.gif`, by status `class` (`2xx` … `5xx`). Redirects are counted
/// in [`CLICKS_TOTAL`] instead (the tracking routes stay out of this
/// layer).
pub const HTTP_RESPONSES_TOTAL: &str = "clickward_http_responses_total";

static RESPONSE_CLASSES: std::sync::OnceLock<[Counter; 5]> = std::sync::OnceLock::new();

fn response_classes() -> &'static [Counter; 5] {
    RESPONSE_CLASSES.get_or_init(|| {
        ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|c| metrics::counter!(HTTP_RESPONSES_TOTAL, "class" => c))
    })
}

/// Counts one answer in [`HTTP_RESPONSES_TOTAL`] (handles registered once).
pub fn count_response(status: axum::http::StatusCode) {
    let i = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
    response_classes()[i].increment(1);
}

/// Registers, at 0, every series the shipped dashboard and alert rules
/// (deploy/grafana, deploy/prometheus) read, so that each exists from the
/// first scrape: an alert on a series that does not exist yet never fires,
/// and a panel shows "no data" where the truth is zero.
pub fn announce() {
    for name in [
        WRITE_ERRORS_TOTAL,
        CLICKS_WRITTEN_TOTAL,
        UNIQUE_CLICKS_TOTAL,
        DUPLICATE_CLICKS_TOTAL,
        SHIPPED_CLICKS_TOTAL,
        SHIP_ERRORS_TOTAL,
        SET_ASIDE_CLICKS_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [
        INGEST_LAG_SECONDS,
        ROLLUP_LAG_SECONDS,
        QUEUE_DEPTH,
        SPOOL_CLICKS,
        SHIP_LAG_SECONDS,
    ] {
        metrics::gauge!(name).increment(0.0);
    }
    metrics::counter!(POSTBACKS_TOTAL, "status" => "201", "outcome" => "created").increment(0);
    for kind in ["webhook", "postback"] {
        for result in ["delivered", "retry", "dead", "gone"] {
            metrics::counter!(DELIVERY_ATTEMPTS_TOTAL, "kind" => kind, "result" => result)
                .increment(0);
        }
    }
    for c in response_classes() {
        c.increment(0);
    }
}

/// Handles of the metrics the redirect path touches, registered once: a
/// labelled `counter!` call hashes its key and looks it up on every use.
pub struct HotMetrics {
    /// `clicks_total{outcome="recorded"}`.
    pub recorded: Counter,
    /// `clicks_total{outcome="unconfirmed"}`.
    pub unconfirmed: Counter,
    /// `clicks_total{outcome="dropped"}`.
    pub dropped: Counter,
    /// `clicks_total{outcome="not_found"}`.
    pub not_found: Counter,
    /// `fraud_click_verdicts_total{action}`: flag, reject, block.
    pub verdicts: [Counter; 3],
    /// `rate_limited_total{endpoint="tracking"}`.
    pub tracking_limited: Counter,
    bots: [(BotReason, Counter); 5],
    /// [`REDIRECT_SECONDS`].
    pub redirect_seconds: Histogram,
    /// [`COOKIE_REJECTED_TOTAL`].
    pub cookie_rejected: Counter,
    /// [`GEOIP_ERRORS_TOTAL`].
    pub geoip_errors: Counter,
}

impl HotMetrics {
    /// Registers the handles with the installed recorder.
    pub fn register() -> Self {
        let outcome = |o: &'static str| metrics::counter!(CLICKS_TOTAL, "outcome" => o);
        let bot = |r: BotReason| {
            (
                r,
                metrics::counter!(BOT_CLICKS_TOTAL, "reason" => r.as_str()),
            )
        };
        Self {
            recorded: outcome("recorded"),
            unconfirmed: outcome("unconfirmed"),
            dropped: outcome("dropped"),
            not_found: outcome("not_found"),
            verdicts: ["flag", "reject", "block"]
                .map(|a| metrics::counter!(FRAUD_VERDICTS_TOTAL, "action" => a)),
            tracking_limited: metrics::counter!(RATE_LIMITED_TOTAL, "endpoint" => "tracking"),
            bots: [
                bot(BotReason::UaPattern),
                bot(BotReason::PreviewFetcher),
                bot(BotReason::Head),
                bot(BotReason::Prefetch),
                bot(BotReason::EmptyUa),
            ],
            redirect_seconds: metrics::histogram!(REDIRECT_SECONDS),
            cookie_rejected: metrics::counter!(COOKIE_REJECTED_TOTAL),
            geoip_errors: metrics::counter!(GEOIP_ERRORS_TOTAL),
        }
    }

    /// `bot_clicks_total{reason}`.
    pub fn bot_clicks(&self, r: BotReason) -> &Counter {
        self.bots
            .iter()
            .find(|(reason, _)| *reason == r)
            .map(|(_, c)| c)
            .unwrap_or(&self.bots[0].1)
    }
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REDIRECT_SECONDS.to_owned()),
                    &[
                        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(BATCH_SIZE.to_owned()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                            4096.0,
                        ],
                    )
                });
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(h) => h,
                // Another recorder is already installed (only possible when
                // embedding clickward); render from a detached one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,refinery_core=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
