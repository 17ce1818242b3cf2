//! Test harness: a real server on 127.0.0.1:0 with its own data directory and
//! an injectable clock, plus a client that does not follow redirects.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickward::Server;
use clickward::clock::ManualClock;
use clickward::process::config::Config;
use clickward_store::prelude::*;
use clickward_store::{KeyScope, SqliteOptions, SqliteStore};
use reqwest::header::HeaderMap;

/// 2026-11-20T12:00:00Z in µs.
pub const NOON: i64 = 1_795_176_000_000_000;

pub fn shared_data() -> PathBuf {
    if let Ok(dir) = std::env::var("CLICKWARD_SHARED_DATA") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/data"))
        .chain(manifest.ancestors().map(|a| a.join("../shared/data")))
        .find(|p| p.join("user-agents").is_dir())
        .expect("../shared/data not found beside the repository")
}

pub fn seed_catalog() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/links.toml")
}

pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Safari/537.36";
pub const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.6.1 Mobile/15E148 Safari/604.1";

pub struct TestApp {
    pub server: Option<Server>,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub store: SqliteStore,
    pub admin_key: String,
}

pub fn client() -> reqwest::Client {
    clickward::services::delivery::http::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config {
            data_dir: dir.path().join("data"),
            catalog: Some(seed_catalog()),
            ..Config::default()
        };
        tweak(&mut cfg);
        let clock = Arc::new(ManualClock::new(NOON));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = Server::start(cfg.validate().expect("config"), listener, clock.clone())
            .await
            .expect("server starts");
        let base = format!("http://{}", server.addr());
        let store = SqliteStore::open(
            &dir.path().join("data/clickward.db"),
            &SqliteOptions::default(),
        )
        .expect("store");
        let (admin_key, hash, prefix) = clickward::services::keys::new_key();
        store
            .create_api_key(hash, prefix, KeyScope::Admin, None)
            .await
            .expect("key");
        TestApp {
            server: Some(server),
            base,
            dir,
            clock,
            client: client(),
            store,
            admin_key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get_ua(&self, path: &str, ua: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("user-agent", ua)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_with(&self, path: &str, headers: HeaderMap) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .headers(headers)
            .send()
            .await
            .expect("request")
    }

    pub async fn api_get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn api_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The newest clicks (API), newest first.
    pub async fn clicks(&self, link: &str) -> Vec<serde_json::Value> {
        let (s, v) = self
            .api_get(&format!("/api/v1/clicks?link={link}&limit=1000"))
            .await;
        assert_eq!(s, 200, "{v}");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// The `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        let r = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        r.text().await.expect("metrics body")
    }

    /// The value of an unlabelled counter or gauge on `/metrics` (0 if absent).
    pub async fn metric(&self, name: &str) -> u64 {
        metric_at(&self.base, name).await.unwrap_or(0.0) as u64
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            s.wait().await.expect("clean stop");
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The real binary, `clickward --data-dir DATA serve` with `catalog` on a
/// free port and the extra environment `env`; returns the process and its
/// base URL once `/healthz` answers.
pub async fn spawn_serve(
    data: &Path,
    catalog: &Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_clickward"))
        .envs(env.iter().copied())
        .arg("--data-dir")
        .arg(data)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--catalog",
        ])
        .arg(catalog)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn clickward");
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    eventually(Duration::from_secs(60), "the server to listen", || {
        let c = c.clone();
        let url = format!("{base}/healthz");
        async move { c.get(url).send().await.ok().map(|_| ()) }
    })
    .await;
    (child, base)
}

/// Says loudly that the running test skipped itself, and names it in the
/// skip log (`CLICKWARD_SKIP_LOG`) that `scripts/test.sh` counts, so the
/// closing line says "skipped", never "passed". Callers assert first that
/// CI is not running: in CI nothing may skip.
pub fn skipped(why: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned();
    eprintln!("\n!!! SKIPPED {name}: {why} !!!\n");
    if let Ok(path) = std::env::var("CLICKWARD_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(f, "{name}");
        }
    }
}

/// `ok`, where what a test needs (`what`, with how to get it) is there;
/// otherwise a failure under CI (where nothing may skip) and a loud skip
/// elsewhere.
pub fn available(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: {what}"
        );
        skipped(&format!("missing: {what}"));
    }
    ok
}

/// Whether `python3 -c "import MODULE"` succeeds.
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The real binary: `clickward --data-dir DATA ARGS…`, run to its end.
pub fn clickward(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clickward"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CLICKWARD_CONFIG")
        .output()
        .expect("run clickward")
}

/// [`clickward`] with `stdin` written to its standard input.
pub fn clickward_with_input(data: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_clickward"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CLICKWARD_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run clickward");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("clickward ends")
}

/// The value of the unlabelled metric `name` in Prometheus text.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The value of the unlabelled metric `name` on the server at `base`.
pub async fn metric_at(base: &str, name: &str) -> Option<f64> {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    metric_in(&text, name)
}

/// Standard output and error of a finished command, together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The path of the program `name` on `PATH`, or `None` (outside CI only: in
/// CI a missing tool is a failure of .ci/run, which installs it).
pub fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing in CI: .ci/run installs it"
        );
        skipped(&format!("{name} is not installed (it runs in CI)"));
    }
    found
}
