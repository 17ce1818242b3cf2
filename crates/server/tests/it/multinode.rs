//! Two clickward processes on one PostgreSQL: a private cluster this test
//! starts with `initdb` on its own port (so it can stop it; the machine's
//! shared server is never touched). Needs PostgreSQL's server binaries; runs
//! in CI (`CI=true` fails without them), skips loudly elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// A private PostgreSQL cluster, stopped and deleted on drop.
struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `initdb` and `postgres` refuse to run as root: run them as `postgres`.
    as_postgres: bool,
}

/// PostgreSQL's server binaries (`initdb`, `pg_ctl`), if installed.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.push(PathBuf::from("/usr/local/bin"));
    dirs.into_iter().rev().find(|d| d.join("initdb").exists())
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let Some(bin) = pg_bin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the multi-node test: PostgreSQL server binaries (initdb) are missing"
            );
            skipped("multi-node test: no initdb found (install postgresql)");
            return None;
        };
        let root = String::from_utf8_lossy(&Command::new("id").arg("-u").output().ok()?.stdout)
            .trim()
            == "0";
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pg");
        std::fs::create_dir(&data).unwrap();
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the cluster directory");
        }
        let c = Cluster {
            _dir: dir,
            data,
            bin,
            port: free_port(),
            as_postgres: root,
        };
        let ok = c
            .run(
                "initdb",
                &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            )
            .success();
        assert!(ok, "initdb failed");
        c.up();
        Some(c)
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::ExitStatus {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args)
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off",
            self.port
        );
        let ok = self
            .run("pg_ctl", &["-w", "-t", "60", "-o", &opts, "start", "-D"])
            .success();
        assert!(ok, "pg_ctl start failed");
    }

    fn down(&self) {
        let ok = self
            .run("pg_ctl", &["-w", "-m", "fast", "stop", "-D"])
            .success();
        assert!(ok, "pg_ctl stop failed");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-m", "immediate", "stop", "-D"]);
    }
}

/// A clickward process on the cluster.
struct Node {
    child: Child,
    base: String,
    data: PathBuf,
}

impl Node {
    async fn start(dir: &Path, name: &str, url: &str) -> Node {
        Self::start_with(dir, name, url, &[]).await
    }

    async fn start_with(dir: &Path, name: &str, url: &str, env: &[(&str, &str)]) -> Node {
        let data = dir.join(name);
        let mut all = vec![("CLICKWARD_DATABASE_URL", url)];
        all.extend_from_slice(env);
        let (child, base) = spawn_serve(&data, &seed_catalog(), &all).await;
        Node { child, base, data }
    }

    async fn readyz(&self) -> serde_json::Value {
        client()
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI against the cluster; returns stdout.
fn cli(url: &str, data: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_clickward"))
        .env("CLICKWARD_DATABASE_URL", url)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A distinct, real-looking desktop Chrome per visitor.
fn chrome(n: u32) -> String {
    CHROME.replace("153.0.0.0", &format!("153.0.{n}.0"))
}

async fn total(node: &Node, key: &str, query: &str) -> serde_json::Value {
    let r = client()
        .get(format!(
            "{}/api/v1/reports?from=2020-01-01&to=2040-01-01&{query}",
            node.base
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["totals"].clone()
}

async fn drained(nodes: &[&Node]) {
    eventually(Duration::from_secs(60), "the spools to drain", || async {
        for n in nodes {
            if n.readyz().await["spool_clicks"] != 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_truth() {
    let Some(pg) = Cluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let a = Node::start(dir.path(), "a", &url).await;
    let b = Node::start(dir.path(), "b", &url).await;
    let key = cli(&url, &a.data, &["key", "create", "--scope", "admin"])
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let c = client();

    // Clicks through both nodes, and one visitor's double tap across them.
    for i in 0..20u32 {
        for (node, n) in [(&a, i), (&b, 1000 + i)] {
            let r = c
                .get(format!("{}/go?id=rakuten_sim&src=both", node.base))
                .header("user-agent", chrome(n))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 302);
        }
    }
    for node in [&a, &b] {
        let r = c
            .get(format!("{}/go?id=rakuten_sim&src=tap", node.base))
            .header("user-agent", chrome(5000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 302);
    }
    drained(&[&a, &b]).await;
    for node in [&a, &b] {
        let t = total(node, &key, "group_by=link&link=rakuten_sim").await;
        assert_eq!(t["gross_clicks"], 42, "{t}");
        assert_eq!(t["unique_clicks"], 41, "the double tap counts once: {t}");
        let t = total(node, &key, "group_by=src&src=tap").await;
        assert_eq!(t["gross_clicks"], 2, "{t}");
        assert_eq!(t["unique_clicks"], 1, "{t}");
    }

    // A link disabled through node A stops redirecting on node B within 1 s.
    let r = c
        .post(format!("{}/api/v1/links/a8_nisa/disable", a.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let disabled_at = Instant::now();
    eventually(Duration::from_secs(1), "node B to stop redirecting", || {
        let c = c.clone();
        let url = format!("{}/go?id=a8_nisa", b.base);
        async move {
            let r = c.get(url).header("user-agent", CHROME).send().await.ok()?;
            (r.status().as_u16() == 404).then_some(())
        }
    })
    .await;
    assert!(disabled_at.elapsed() < Duration::from_secs(1));

    // PostgreSQL away for 10 s under load through both nodes: redirects go
    // on, no answered click is lost, and the report is exact afterwards.
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4u32 {
        let base = if w % 2 == 0 { &a.base } else { &b.base }.clone();
        let (c, answered, failed, stop) =
            (c.clone(), answered.clone(), failed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let url = format!("{base}/go?id=amazon_kindle&src=outage&sub1={w}-{n}");
                match c
                    .get(url)
                    .header("user-agent", chrome(w * 100_000 + n))
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 302 => {
                        let loc = location(&r);
                        let id = loc.rsplit("ascsubtag=").next().unwrap_or_default();
                        answered.lock().unwrap().push(id.to_owned());
                    }
                    Ok(r) => failed.lock().unwrap().push(r.status().to_string()),
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    eventually(Duration::from_secs(20), "load to build up", || {
        let n = answered.lock().unwrap().len();
        async move { (n >= 100).then_some(()) }
    })
    .await;
    pg.down();
    let before_outage = answered.lock().unwrap().len();
    // The outage itself lasts 10 s (this is the scenario, not a wait).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = answered.lock().unwrap().len() - before_outage;
    assert!(during > 100, "redirects kept answering: {during}");
    let spooled = a.readyz().await["spool_clicks"].as_u64().unwrap()
        + b.readyz().await["spool_clicks"].as_u64().unwrap();
    assert!(
        spooled > 0,
        "clicks wait in the spools while PostgreSQL is down"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    // With the load stopped and PostgreSQL still down, the spool gauge
    // reads what /readyz reads.
    for node in [&a, &b] {
        let ready = node.readyz().await["spool_clicks"].as_u64().unwrap();
        let gauge = metric_at(&node.base, "clickward_spool_clicks").await;
        assert_eq!(gauge, Some(ready as f64));
    }
    pg.up();
    assert!(
        failed.lock().unwrap().is_empty(),
        "{:?}",
        failed.lock().unwrap()
    );
    drained(&[&a, &b]).await;
    let answered = answered.lock().unwrap().clone();
    for node in [&a, &b] {
        let t = total(node, &key, "group_by=src&src=outage").await;
        assert_eq!(t["gross_clicks"], answered.len(), "{t}");
        assert_eq!(t["unique_clicks"], answered.len(), "{t}");
    }
    // Every answered click id is stored (a sample, through node B).
    for id in answered.iter().step_by(answered.len() / 50 + 1) {
        let r = c
            .get(format!("{}/api/v1/clicks/{id}", b.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "click {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_send_the_same_attempt() {
    let Some(rx) = crate::webhooks::Receiver::start() else {
        return;
    };
    let Some(pg) = Cluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(&cfg, "[outbound]\nallow_private = true\npoll = \"5ms\"\n").unwrap();
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let env = [("CLICKWARD_CONFIG", cfg_s.as_str())];
    let a = Node::start_with(dir.path(), "a", &url, &env).await;
    let b = Node::start_with(dir.path(), "b", &url, &env).await;
    let key = cli(&url, &a.data, &["key", "create", "--scope", "admin"]);
    let key = key
        .split_whitespace()
        .find(|w| w.starts_with("cwk_"))
        .unwrap()
        .to_owned();
    let added = Command::new(env!("CARGO_BIN_EXE_clickward"))
        .env("CLICKWARD_DATABASE_URL", &url)
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&a.data)
        .args([
            "webhook",
            "add",
            "--url",
            &format!("{}/hook", rx.base),
            "--events",
            "affiliate.created",
        ])
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let out = String::from_utf8_lossy(&added.stdout).into_owned();
    rx.trust(out.lines().find_map(|l| l.strip_prefix("secret ")).unwrap())
        .await;
    // 60 events made on both nodes at once; both nodes dispatch and lease.
    let c = client();
    let mut jobs = Vec::new();
    for i in 0..60 {
        let node = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (c, key) = (c.clone(), key.clone());
        jobs.push(tokio::spawn(async move {
            let r = c
                .post(format!("{node}/api/v1/affiliates"))
                .bearer_auth(key)
                .json(&serde_json::json!({"slug": format!("aff{i}"), "name": format!("Affiliate {i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
        }));
    }
    for j in jobs {
        j.await.unwrap();
    }
    let got = eventually(Duration::from_secs(60), "60 deliveries", || async {
        let got = rx.at("/hook").await;
        (got.len() >= 60).then_some(got)
    })
    .await;
    // Let a second sender, if there were one, show itself.
    let log = eventually(Duration::from_secs(30), "every delivery recorded", || {
        let (url, data) = (url.clone(), a.data.clone());
        async move {
            let log = cli(&url, &data, &["webhook", "deliveries", "--limit", "1000"]);
            (log.lines().count() == 60 && log.lines().all(|l| l.contains("delivered")))
                .then_some(log)
        }
    })
    .await;
    let got_now = rx.at("/hook").await;
    assert_eq!(
        got_now.len(),
        60,
        "no attempt sent twice: {} requests",
        got_now.len()
    );
    let ids: std::collections::HashSet<&str> =
        got.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 60, "each event once");
    assert!(got.iter().all(|r| r["valid"] == true));
    assert!(log.lines().all(|l| l.contains("attempts 1 ")), "{log}");
}

/// `[limits] shared = true`: one client's postbacks spread over two nodes
/// are limited once, not once per node (per node, 12 requests at 6/min
/// over two nodes would all pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_limit_holds_across_nodes() {
    let Some(pg) = Cluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(&cfg, "[limits]\nshared = true\npostback = \"6/min\"\n").unwrap();
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let env = [("CLICKWARD_CONFIG", cfg_s.as_str())];
    let a = Node::start_with(dir.path(), "a", &url, &env).await;
    let b = Node::start_with(dir.path(), "b", &url, &env).await;
    let c = client();
    let jobs = (0..12).map(|i| {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let url = format!("{base}/postback?token=nope&click_id=x&order_id=o{i}");
        let c = c.clone();
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(jobs).await;
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(limited, 6, "{statuses:?}");
}

/// An erasure asked of one node reaches the click another node took; with
/// PostgreSQL down it is received (held on the node's disk, never reported
/// done before it is) and carried out once PostgreSQL is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_on_one_node_reaches_every_node_and_waits_for_postgresql() {
    let Some(pg) = Cluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let a = Node::start(dir.path(), "a", &url).await;
    let b = Node::start(dir.path(), "b", &url).await;
    let key = cli(&url, &a.data, &["key", "create", "--scope", "admin"]);
    let key = key
        .split_whitespace()
        .find(|w| w.starts_with("cwk_"))
        .unwrap()
        .to_owned();
    let c = client();
    let r = c
        .get(format!("{}/ref/solare?sub1=erase-me%40example.com", a.base))
        .header("user-agent", chrome(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    drained(&[&a, &b]).await;
    // Node b has seen the key while PostgreSQL was up.
    let r = c
        .get(format!("{}/api/v1/privacy/erasures", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    pg.down();
    let r = c
        .post(format!("{}/api/v1/privacy/erasures", b.base))
        .bearer_auth(&key)
        .json(&serde_json::json!({"sub": "erase-me@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "received", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("held on this node"),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_owned();
    // A key this node never saw is still refused.
    let r = c
        .post(format!("{}/api/v1/privacy/erasures", b.base))
        .bearer_auth("cwk_not-a-key")
        .json(&serde_json::json!({"sub": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    // Nothing is reported while PostgreSQL is down, and the click is intact.
    let r = c
        .get(format!("{}/api/v1/privacy/erasures/{id}", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    pg.up();
    let v: serde_json::Value = eventually(Duration::from_secs(60), "the held erasure done", || {
        let (c, id, key) = (c.clone(), id.clone(), key.clone());
        let base = a.base.clone();
        async move {
            let r = c
                .get(format!("{base}/api/v1/privacy/erasures/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            (v["status"] == "done").then_some(v)
        }
    })
    .await;
    assert_eq!(v["counts"]["clicks"], 1, "{v}");
    let clicks: serde_json::Value = c
        .get(format!("{}/api/v1/clicks?limit=10", a.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = clicks.to_string();
    assert!(!text.contains("erase-me"), "{text}");
}
