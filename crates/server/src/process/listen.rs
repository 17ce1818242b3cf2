//! The HTTP listener: hyper's HTTP/1 server with a header read timeout and
//! a bound on the connections one client address may hold, so slow or
//! greedy clients cannot tie up the process (the body read timeout is a
//! layer of the router, see `http::router`).
//!
//! Shutdown is graceful and bounded: on `stop` the listener closes, idle
//! connections are closed, requests in flight may finish for
//! [`DRAIN_FOR`], and what is still open then is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// How long requests in flight may take to finish once shutdown began.
pub const DRAIN_FOR: Duration = Duration::from_secs(20);

/// What the listener enforces.
pub struct Limits {
    /// See `HttpConfig::header_read_timeout`.
    pub header_read_timeout: Duration,
    /// See `HttpConfig::connections_per_client`.
    pub connections_per_client: usize,
    /// Peers exempt from the per-client bound (trusted proxies).
    pub trusted: Vec<IpNet>,
}

/// Open connections per client address.
#[derive(Default)]
struct Open(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a client; gives its place back when dropped.
struct Slot {
    open: Arc<Open>,
    ip: IpAddr,
}

impl Open {
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            open: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.open.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` turns `true`, then shuts down
/// gracefully within [`DRAIN_FOR`].
///
/// # Errors
/// None today (accept errors such as running out of file descriptors are
/// logged and retried); the `Result` leaves room.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Open::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let ip = peer.ip();
        let slot = if limits.trusted.iter().any(|n| n.contains(&ip)) {
            None
        } else {
            match open.take(ip, limits.connections_per_client) {
                Some(s) => Some(s),
                None => {
                    metrics::counter!(crate::telemetry::CONNECTIONS_REFUSED_TOTAL).increment(1);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_FOR, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: requests still in flight after {DRAIN_FOR:?} were dropped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_places_back_when_connections_close() {
        let open = Arc::new(Open::default());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let a = open.take(ip, 2).unwrap();
        let _b = open.take(ip, 2).unwrap();
        assert!(open.take(ip, 2).is_none());
        assert!(open.take("203.0.113.10".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(open.take(ip, 2).is_some());
    }
}
