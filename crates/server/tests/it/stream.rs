//! The NATS JetStream stream: a real nats-server (Debian's `nats-server`,
//! started here on a free port with its own store), restarted in the middle
//! of a load run.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt as _;

use crate::helpers::*;

struct Nats {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    /// `None`, said loudly, where nats-server is not installed outside CI.
    fn start() -> Option<Nats> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the stream test: install nats-server"
            );
            skipped("nats-server is not installed (apt-get install nats-server)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(port, dir.path());
        Some(Nats { child, port, dir })
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, self.dir.path());
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every message of the stream: `Nats-Msg-Id` → (subject, how many times).
async fn read_all(url: &str) -> BTreeMap<String, (String, usize)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("CLICKWARD").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let total = stream.get_info().await.unwrap().state.messages as usize;
    let mut out: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut msgs = consumer.messages().await.unwrap();
    let mut seen = 0;
    while seen < total {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("the stream's messages")
            .unwrap()
            .unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            body["id"].as_str(),
            Some(id.as_str()),
            "Nats-Msg-Id is the message's id: {:?}",
            m.headers
        );
        out.entry(id)
            .or_insert_with(|| (m.subject.to_string(), 0))
            .1 += 1;
        seen += 1;
    }
    out
}

/// Messages the stream holds now (0 while the server or stream is not there).
async fn messages_in_stream(url: &str) -> usize {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    let Ok(stream) = js.get_stream("CLICKWARD").await else {
        return 0;
    };
    match stream.get_info().await {
        Ok(i) => i.state.messages as usize,
        Err(_) => 0,
    }
}

#[tokio::test]
async fn every_click_reaches_jetstream_once_per_id_across_a_nats_restart() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let url = nats.url();
    let app = TestApp::start_with(|c| c.stream.nats = Some(url.clone())).await;
    // Real browsers (from ../shared/data), so every click is a human one.
    let uas: Vec<String> = serde_json::from_slice(
        &std::fs::read(shared_data().join("user-agents/top-mobile.json")).unwrap(),
    )
    .unwrap();
    let burst = |n: usize, from: usize| {
        let app = &app;
        let uas = uas.clone();
        async move {
            for i in from..from + n {
                let r = app
                    .get_ua(&format!("/r/solare?src=s{i}"), &uas[i % uas.len()])
                    .await;
                assert_eq!(r.status().as_u16(), 302);
            }
        }
    };
    burst(150, 0).await;
    eventually(
        Duration::from_secs(30),
        "the first 150 clicks in the stream",
        || {
            let url = url.clone();
            async move { (messages_in_stream(&url).await >= 150).then_some(()) }
        },
    )
    .await;
    // NATS goes away; clicks go on; it comes back.
    nats.stop();
    burst(150, 150).await;
    nats.restart();
    eventually(
        Duration::from_secs(60),
        "all 300 clicks in the stream",
        || {
            let url = url.clone();
            async move { (messages_in_stream(&url).await >= 300).then_some(()) }
        },
    )
    .await;
    let got = read_all(&url).await;
    let clicks: Vec<_> = got
        .iter()
        .filter(|(id, _)| id.starts_with("clk_"))
        .collect();
    assert_eq!(clicks.len(), 300, "every click, each once");
    assert!(
        clicks
            .iter()
            .all(|(_, (subject, n))| *n == 1 && subject == "clickward.click.vendors")
    );
    let (_, v) = app.api_get("/api/v1/clicks?limit=1000").await;
    let stored: std::collections::BTreeSet<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("clk_{}", c["click_id"].as_str().unwrap()))
        .collect();
    let sent: std::collections::BTreeSet<String> =
        clicks.iter().map(|(id, _)| (*id).clone()).collect();
    assert_eq!(sent, stored, "exactly the stored clicks");
    let published = metric_in(
        &app.metrics_text().await,
        "clickward_stream_published_total{kind=\"click\"}",
    )
    .unwrap_or(0.0);
    assert!(published >= 300.0, "{published}");
}
