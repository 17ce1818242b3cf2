//! `/healthz` (the process answers), `/readyz` (it can take clicks, with
//! detail), `/metrics` (Prometheus text).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::process::app::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let shutting_down = app.0.shutting_down.load(Ordering::SeqCst);
    let db_ok = app.0.store.catalog_version().await.is_ok();
    // With a spool the node takes clicks while PostgreSQL is away: it stays
    // ready (taking every node out of the balancer would lose the clicks).
    let spool = match &app.0.spool {
        Some(s) => s.stats().await.ok(),
        None => None,
    };
    // Clicks that cannot be committed (a full disk, a damaged database, a
    // spool that refuses writes) make the node unready, so a balancer sends
    // visitors elsewhere while the queue is retried.
    let failing = app.0.ingest.health().failing_since();
    let ready = (db_ok || app.0.spool.is_some()) && !shutting_down && failing.is_none();
    let now = crate::clock::Clock::now_micros(&crate::clock::SystemClock);
    let mut body = json!({
        "ready": ready,
        "database": if db_ok { "ok" } else { "unreachable" },
        "click_writes": if failing.is_some() { "failing" } else { "ok" },
        "shutting_down": shutting_down,
        "links": app.0.links.len(),
        "ingest_queue_depth": app.0.ingest.depth(),
        "ingest_queue_capacity": app.0.ingest.capacity(),
        "durability": format!("{:?}", app.0.cfg.config.durability).to_lowercase(),
        "store": if app.0.spool.is_some() { "postgres" } else { "sqlite" },
    });
    if let Some(since) = failing {
        body["click_writes_failing_seconds"] = json!((now - since).max(0) / 1_000_000);
    }
    if let Some(stats) = spool {
        body["spool_clicks"] = json!(stats.clicks);
        body["spool_set_aside_clicks"] = json!(stats.set_aside);
        body["ship_lag_seconds"] = json!(crate::services::cluster::ship_lag_seconds(stats.oldest));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    // Gauges of state are read at scrape time, as `/readyz` reads them, so
    // both say the same number.
    if let Some(s) = &app.0.spool {
        crate::services::cluster::record_spool(s).await;
    }
    metrics::gauge!(crate::telemetry::QUEUE_DEPTH).set(app.0.ingest.depth() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.0.prometheus.render(),
    )
}
