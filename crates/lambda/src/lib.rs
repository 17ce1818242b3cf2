//! clickward as an AWS Lambda function: the router `clickward serve` serves,
//! driven by the official runtime (`lambda_http`) with API Gateway HTTP API
//! (v2) events, one request per invocation (docs/serverless.md).
//!
//! What differs from a server, and why:
//! - **No socket.** Handlers read the caller's address as
//!   `ConnectInfo<SocketAddr>`; [`service`] puts it there from the event's
//!   `requestContext.http.sourceIp`, or from a CDN's viewer-address header
//!   when `CLICKWARD_VIEWER_HEADER` names one (CloudFront's
//!   `CloudFront-Viewer-Address`: behind CloudFront the source is an edge).
//! - **Nothing runs after an answer.** A frozen or recycled function would
//!   lose a click still in a queue or a local spool, so the tracker runs as
//!   `Shape::Function`: each click is committed to the store before its
//!   redirect is sent.
//! - **No disk to keep.** `/tmp` lives as long as one instance. The cookie
//!   key must be the same in every instance: it comes from
//!   `CLICKWARD_COOKIE_KEY` (base64 of 64 bytes) and is written where the
//!   server keeps it before the tracker starts. The store is PostgreSQL
//!   (`CLICKWARD_DATABASE_URL`); SQLite in `/tmp` is per instance, for local
//!   emulation only, and says so in the log.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use clickward::process::config::Config;
use lambda_http::request::RequestContext;

/// Where the data directory is when none is configured: the one writable
/// place a function has.
pub const DEFAULT_DATA_DIR: &str = "/tmp/clickward";

/// Settings read from the function's environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `CLICKWARD_CONFIG`: a config file in the deployment package.
    pub config: Option<PathBuf>,
    /// `CLICKWARD_DATA_DIR` (default [`DEFAULT_DATA_DIR`]).
    pub data_dir: Option<PathBuf>,
    /// `CLICKWARD_DATABASE_URL`: the shared PostgreSQL store.
    pub database_url: Option<String>,
    /// `CLICKWARD_CATALOG`: a catalogue file in the deployment package.
    pub catalog: Option<PathBuf>,
    /// `CLICKWARD_COOKIE_KEY`: base64 of the 64-byte cookie key.
    pub cookie_key: Option<String>,
    /// `CLICKWARD_COOKIE_KEY_PARAM`: the SSM SecureString holding it instead
    /// (read through the Parameters and Secrets extension, [`ssm_parameter`]).
    pub cookie_key_param: Option<String>,
    /// `CLICKWARD_VIEWER_HEADER`: the header a CDN puts the viewer's
    /// address in (`CloudFront-Viewer-Address`).
    pub viewer_header: Option<String>,
}

impl Env {
    /// Reads the process environment (empty values count as unset).
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Env {
            config: var("CLICKWARD_CONFIG").map(PathBuf::from),
            data_dir: var("CLICKWARD_DATA_DIR").map(PathBuf::from),
            database_url: var("CLICKWARD_DATABASE_URL"),
            catalog: var("CLICKWARD_CATALOG").map(PathBuf::from),
            cookie_key: var("CLICKWARD_COOKIE_KEY"),
            cookie_key_param: var("CLICKWARD_COOKIE_KEY_PARAM"),
            viewer_header: var("CLICKWARD_VIEWER_HEADER"),
        }
    }

    /// The tracker's config: the file's, then the environment's settings
    /// over it. The cookie key, when given, is written into the data
    /// directory's `secrets/cookie.key` first.
    ///
    /// # Errors
    /// A config file that does not load, a cookie key that is not base64 of
    /// at least 64 bytes, a data directory that cannot be written.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        cfg.data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if let Some(url) = &self.database_url {
            cfg.storage.url = Some(url.clone());
        }
        if let Some(c) = &self.catalog {
            cfg.catalog = Some(c.clone());
        }
        // Every cold start begins with an empty /tmp: a new directory is the
        // normal case here, not a lost one.
        cfg.init = true;
        if let Some(key) = &self.cookie_key {
            install_cookie_key(&cfg.data_dir, key)?;
        }
        if cfg.storage.url.is_none() {
            tracing::warn!(
                "no CLICKWARD_DATABASE_URL: SQLite in {} belongs to this instance alone (local emulation only)",
                cfg.data_dir.display()
            );
        }
        Ok(cfg)
    }
}

/// The port of the AWS Parameters and Secrets Lambda Extension
/// (`PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`, 2773 by default).
pub fn extension_port() -> u16 {
    std::env::var("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(2773)
}

/// The decrypted value of the SSM parameter `name`, from the AWS Parameters
/// and Secrets Lambda Extension listening on `localhost:port` (a layer; the
/// AWS SDK stays out of the function). `token` is the function's
/// `AWS_SESSION_TOKEN`, which the extension asks for in
/// `X-Aws-Parameters-Secrets-Token` (AWS Systems Manager User Guide, "Using
/// Parameter Store parameters in AWS Lambda functions").
///
/// # Errors
/// The extension cannot be reached, refuses (its status and body, which
/// never hold the value), or answers without `Parameter.Value`.
pub async fn ssm_parameter(port: u16, name: &str, token: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(&format!(
        "http://localhost:{port}/systemsmanager/parameters/get"
    ))?;
    url.query_pairs_mut()
        .append_pair("name", name)
        .append_pair("withDecryption", "true");
    // reqwest is built without a TLS provider of its own (the server
    // installs one); plain HTTP to localhost needs none, but the client
    // refuses to start without it.
    clickward::services::delivery::http::install_crypto_provider();
    let r = reqwest::Client::new()
        .get(url)
        .header("X-Aws-Parameters-Secrets-Token", token)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("asking the Parameters and Secrets extension for {name}"))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "the Parameters and Secrets extension answered {status} for {name}: {}",
        body.chars().take(200).collect::<String>()
    );
    let v: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("the extension's answer for {name} is not JSON"))?;
    v["Parameter"]["Value"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the extension's answer for {name} has no Parameter.Value"))
}

/// Writes `base64` (the cookie key) where the tracker reads its key.
///
/// # Errors
/// Not base64, fewer than 64 bytes, or the file cannot be written.
pub fn install_cookie_key(data_dir: &Path, base64: &str) -> anyhow::Result<()> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64.trim())
        .context("CLICKWARD_COOKIE_KEY is not base64")?;
    anyhow::ensure!(
        bytes.len() >= 64,
        "CLICKWARD_COOKIE_KEY holds {} bytes; the cookie key needs 64",
        bytes.len()
    );
    let dir = data_dir.join("secrets");
    clickward::process::secrets::ensure_private_dir(&dir)?;
    let path = dir.join("cookie.key");
    std::fs::write(&path, &bytes[..64]).with_context(|| format!("writing {}", path.display()))
}

/// The caller's address of a request from API Gateway: the viewer header's
/// address when `viewer_header` names one and the request carries it, else
/// the event's source IP, else unspecified (0.0.0.0, a request from
/// something that is not API Gateway, such as a test).
pub fn client_address(req: &Request, viewer_header: Option<&str>) -> SocketAddr {
    let viewer = viewer_header
        .and_then(|h| req.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .and_then(viewer_ip);
    let source = || match req.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(c)) => c
            .http
            .source_ip
            .as_deref()
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok()),
        _ => None,
    };
    let ip = viewer.or_else(source).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    SocketAddr::new(ip, 0)
}

/// The address of `198.51.100.7:46532`, `2001:db8::7:46532` (CloudFront
/// writes IPv6 without brackets, the port after the last colon) or a bare
/// address.
fn viewer_ip(v: &str) -> Option<IpAddr> {
    let v = v.trim();
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let (ip, port) = v.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.trim_matches(['[', ']']).parse().ok()
}

/// The router as the runtime drives it: each request gets the caller's
/// address first.
pub fn service(router: axum::Router, viewer_header: Option<String>) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |mut req: Request, next: Next| {
            let viewer = viewer_header.clone();
            async move {
                let addr = client_address(&req, viewer.as_deref());
                req.extensions_mut().insert(ConnectInfo(addr));
                let r: Response = next.run(req).await;
                r
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_addresses_as_cloudfront_writes_them() {
        assert_eq!(viewer_ip("198.51.100.7:46532"), "198.51.100.7".parse().ok());
        assert_eq!(viewer_ip("2001:db8::7:46532"), "2001:db8::7".parse().ok());
        assert_eq!(viewer_ip("[2001:db8::7]:443"), "2001:db8::7".parse().ok());
        assert_eq!(viewer_ip("203.0.113.9"), "203.0.113.9".parse().ok());
        assert_eq!(viewer_ip("not an address"), None);
        assert_eq!(viewer_ip("10.0.0.1:port"), None);
    }

    #[test]
    fn a_cookie_key_must_be_base64_of_64_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let e = install_cookie_key(dir.path(), &short).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        assert!(install_cookie_key(dir.path(), "%%%").is_err());
        let good = base64::engine::general_purpose::STANDARD.encode([9u8; 64]);
        install_cookie_key(dir.path(), &good).unwrap();
        let written = std::fs::read(dir.path().join("secrets/cookie.key")).unwrap();
        assert_eq!(written, vec![9u8; 64]);
    }
}

#[cfg(test)]
mod extension_tests {
    use super::*;
    use axum::extract::Query;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    /// A stand-in for the extension: it answers the documented request
    /// shape, and refuses a missing or wrong token as the extension does.
    async fn fake_extension() -> u16 {
        let app = axum::Router::new().route(
            "/systemsmanager/parameters/get",
            get(
                |headers: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    if headers.get("x-aws-parameters-secrets-token").and_then(|v| v.to_str().ok())
                        != Some("session-token")
                    {
                        return (StatusCode::UNAUTHORIZED, "not authorized".to_owned());
                    }
                    if q.get("withDecryption").map(String::as_str) != Some("true") {
                        return (StatusCode::BAD_REQUEST, "encrypted".to_owned());
                    }
                    match q.get("name").map(String::as_str) {
                        Some("/clickward/cookie-key") => (
                            StatusCode::OK,
                            serde_json::json!({"Parameter": {"Name": "/clickward/cookie-key", "Type": "SecureString", "Value": "a2V5"}}).to_string(),
                        ),
                        _ => (StatusCode::BAD_REQUEST, "ParameterNotFound".to_owned()),
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    #[tokio::test]
    async fn a_parameter_comes_decrypted_from_the_extension() {
        let port = fake_extension().await;
        let v = ssm_parameter(port, "/clickward/cookie-key", "session-token")
            .await
            .unwrap();
        assert_eq!(v, "a2V5");
        let e = ssm_parameter(port, "/clickward/cookie-key", "wrong")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("401"), "{e}");
        let e = ssm_parameter(port, "/nothing", "session-token")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("ParameterNotFound"), "{e}");
    }
}
