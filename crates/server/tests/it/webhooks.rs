//! Webhooks and affiliate postbacks over real HTTP, received by a Python
//! server that checks every signature with the Standard Webhooks reference
//! library (`standardwebhooks` from PyPI; tests/receiver/webhook_receiver.py).

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// The receiver process; killed when dropped.
pub struct Receiver {
    child: Child,
    pub base: String,
    http: reqwest::Client,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts the receiver on a free port; `None`, after saying so loudly,
    /// where Python's `standardwebhooks` is missing outside CI
    /// (`scripts/test.sh` installs it).
    pub fn start() -> Option<Receiver> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/receiver/webhook_receiver.py");
        if !available(
            python_has("standardwebhooks"),
            "Python's standardwebhooks (pip install standardwebhooks)",
        ) {
            return None;
        }
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .unwrap()
            .parse()
            .unwrap();
        Some(Receiver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: client(),
        })
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub async fn received(&self) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/_received", self.base))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// Records whose path starts with `path`.
    pub async fn at(&self, path: &str) -> Vec<Value> {
        self.received()
            .await
            .into_iter()
            .filter(|r| r["path"].as_str().unwrap().starts_with(path))
            .collect()
    }

    pub async fn control(&self, v: Value) {
        self.http
            .post(format!("{}/_control", self.base))
            .json(&v)
            .send()
            .await
            .unwrap();
    }

    pub async fn trust(&self, secret: &str) {
        self.http
            .post(format!("{}/_secret", self.base))
            .json(&json!({ "secret": secret }))
            .send()
            .await
            .unwrap();
    }
}

const CATALOG: &str = r#"
[[programs]]
slug = "shop"
currency = "USD"
commission = { default = { type = "share", bps = 1000 } }
postback_token = "tok-shop"

[[programs]]
slug = "other"
postback_token = "tok-other"

[[affiliates]]
slug = "solare"

[[affiliates]]
slug = "boardbrew"

[[links]]
code = "s1"
program = "shop"
affiliate = "solare"
destination = "https://shop.example/?cid={click_id}"

[[links]]
code = "b1"
program = "shop"
affiliate = "boardbrew"
destination = "https://shop.example/b?cid={click_id}"
"#;

/// A server with the catalogue above that may send to 127.0.0.1.
pub async fn app_with(
    tweak: impl FnOnce(&mut clickward::process::config::Config),
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, CATALOG).unwrap();
    let app = TestApp::start_with(|c| {
        c.catalog = Some(path.clone());
        c.outbound.allow_private = true;
        tweak(c);
    })
    .await;
    (app, dir)
}

async fn click(app: &TestApp, code: &str) -> String {
    let r = app
        .get_ua(&format!("/r/{code}?src=review&sub1=a%20b"), IPHONE)
        .await;
    assert_eq!(r.status().as_u16(), 302);
    location(&r).rsplit("cid=").next().unwrap().to_owned()
}

/// Reports a sale of 80.00 for the click; the answer's status and body.
async fn report_sale(app: &TestApp, click_id: &str, order: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(&format!(
            "/postback?click_id={click_id}&order_id={order}&amount=80.00&token=tok-shop"
        )))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub async fn convert(app: &TestApp, click_id: &str, order: &str) -> Value {
    let (status, body) = report_sale(app, click_id, order).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Adds an endpoint through the API; returns its id and secret.
pub async fn add(app: &TestApp, path: &str, body: Value) -> (String, String) {
    let (s, v) = app.api_send(Method::POST, path, body).await;
    assert_eq!(s, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// The outbox events of type `kind`.
async fn events_of(app: &TestApp, kind: &str) -> Vec<Value> {
    let (_, v) = app.api_get("/api/v1/outbox?limit=1000").await;
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn one_conversion_makes_one_signed_delivery_per_matching_endpoint_and_its_affiliate_postback()
{
    let Some(rx) = Receiver::start() else { return };
    let (app, _d) = app_with(|_| {}).await;
    let hook = |p: &str| format!("{}{p}", rx.base);
    let (a, sa) = add(&app, "/api/v1/webhooks", json!({"url": hook("/hook-a"), "events": ["conversion.*"], "program": "shop", "description": "CRM"})).await;
    let (_, sb) = add(
        &app,
        "/api/v1/webhooks",
        json!({"url": hook("/hook-b"), "events": ["*"]}),
    )
    .await;
    let (_, sc) = add(
        &app,
        "/api/v1/webhooks",
        json!({"url": hook("/hook-c"), "events": ["*"], "program": "other"}),
    )
    .await;
    let (_, sd) = add(
        &app,
        "/api/v1/webhooks",
        json!({"url": hook("/hook-d"), "events": ["payout.created"]}),
    )
    .await;
    for s in [&sa, &sb, &sc, &sd] {
        assert!(s.starts_with("whsec_"));
        rx.trust(s).await;
    }
    let template = hook(
        "/pb-solare?cid={click_id}&conv={conversion_id}&amt={amount}&pay={payout}&cur={currency}&s1={sub1}&src={src}&st={status}&ev={event}",
    );
    add(
        &app,
        "/api/v1/postbacks",
        json!({"url": template, "affiliate": "solare", "events": ["conversion.created"]}),
    )
    .await;
    add(
        &app,
        "/api/v1/postbacks",
        json!({"url": hook("/pb-boardbrew?cid={click_id}"), "affiliate": "boardbrew"}),
    )
    .await;
    // The secret is shown once: never in a read.
    let (_, list) = app.api_get("/api/v1/webhooks").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    assert!(!list.to_string().contains("whsec_"), "{list}");

    let cid = click(&app, "s1").await;
    let conv = convert(&app, &cid, "ORD-1").await;
    let conv_id = conv["conversion"]["conversion_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = events_of(&app, "conversion.created").await;
    assert_eq!(created.len(), 1);
    let evt = created[0]["id"].as_str().unwrap().to_owned();

    eventually(
        Duration::from_secs(20),
        "deliveries to a, b and solare's postback",
        || async {
            let got = rx.received().await;
            (got.len() >= 3).then_some(())
        },
    )
    .await;
    // Nothing more arrives: wait until the log shows every delivery done.
    eventually(
        Duration::from_secs(20),
        "the delivery log to settle",
        || async {
            let (_, v) = app.api_get("/api/v1/deliveries").await;
            let rows = v["items"].as_array().unwrap().clone();
            (rows.len() == 3 && rows.iter().all(|r| r["status"] == "delivered")).then_some(rows)
        },
    )
    .await;
    for path in ["/hook-a", "/hook-b"] {
        let got = rx.at(path).await;
        assert_eq!(got.len(), 1, "{path}: {got:?}");
        let r = &got[0];
        assert_eq!(r["valid"], true, "the reference library verifies it: {r}");
        assert_eq!(r["id"], evt.as_str(), "webhook-id is the event id");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["type"], "conversion.created");
        assert_eq!(body["id"], evt.as_str());
        assert_eq!(
            body["data"]["conversion"]["conversion_id"],
            conv_id.as_str()
        );
        assert_eq!(body["data"]["conversion"]["commission_minor"], 800);
        assert!(
            !r["body"].as_str().unwrap().contains("127.0.0.1"),
            "no IP leaves the box"
        );
    }
    assert!(
        rx.at("/hook-c").await.is_empty(),
        "filtered on another program"
    );
    assert!(rx.at("/hook-d").await.is_empty(), "filtered on payouts");
    assert!(
        rx.at("/pb-boardbrew").await.is_empty(),
        "another affiliate's conversion"
    );
    let pb = rx.at("/pb-solare").await;
    assert_eq!(pb.len(), 1);
    assert_eq!(pb[0]["method"], "GET");
    assert_eq!(
        pb[0]["query"],
        format!("cid={cid}&conv={conv_id}&amt=80.00&pay=8.00&cur=USD&s1=a%20b&src=review&st=pending&ev=sale").as_str()
    );
    // The delivery log: one attempt, 200, the receiver's answer.
    let (_, v) = app
        .api_get(&format!("/api/v1/deliveries?endpoint={a}"))
        .await;
    let rows = v["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["event_id"], evt.as_str());
    let (s, d) = app
        .api_get(&format!("/api/v1/deliveries/{}", rows[0]["id"]))
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["attempts_log"][0]["status"], 200);
    assert!(d["attempts_log"][0]["latency_us"].as_i64().unwrap() > 0);
}

/// A conversion the rules refuse at intake (422 to the merchant) is told to
/// the merchant's webhook, marked `refused`, and never to the affiliate's
/// postback, even one subscribed to every conversion event; the next,
/// accepted conversion is told to both.
#[tokio::test]
async fn a_conversion_refused_at_intake_reaches_webhooks_but_never_the_affiliates_postback() {
    let Some(rx) = Receiver::start() else { return };
    let (app, _d) = app_with(|_| {}).await;
    let hook = |p: &str| format!("{}{p}", rx.base);
    let (_, secret) = add(
        &app,
        "/api/v1/webhooks",
        json!({"url": hook("/hook"), "events": ["conversion.*"]}),
    )
    .await;
    rx.trust(&secret).await;
    add(
        &app,
        "/api/v1/postbacks",
        json!({"url": hook("/pb?cid={click_id}&st={status}"), "affiliate": "solare", "events": ["conversion.*"]}),
    )
    .await;
    let (s, v) = app
        .api_send(
            Method::PUT,
            "/api/v1/rules/too-fast",
            json!({"check": "ctit", "action": "reject", "min": "10s", "program": "shop"}),
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");
    app.clock.set(NOON);
    let fast = click(&app, "s1").await;
    app.clock.set(NOON + 2_000_000);
    let (status, body) = report_sale(&app, &fast, "FAST").await;
    assert_eq!(status, 422, "{body}");
    app.clock.set(NOON + 10_000_000);
    let slow = click(&app, "s1").await;
    app.clock.set(NOON + 60_000_000);
    convert(&app, &slow, "SLOW").await;

    // The webhook hears created + rejected of the refused one and created
    // of the accepted one; the postback only the accepted one.
    let rows = eventually(Duration::from_secs(20), "four deliveries done", || async {
        let (_, v) = app.api_get("/api/v1/deliveries").await;
        let rows = v["items"].as_array().unwrap().clone();
        (rows.len() == 4 && rows.iter().all(|r| r["status"] == "delivered")).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 4);
    let pb = rx.at("/pb").await;
    assert_eq!(pb.len(), 1, "{pb:?}");
    assert_eq!(pb[0]["query"], format!("cid={slow}&st=pending").as_str());
    let hooks = rx.at("/hook").await;
    let mut told: Vec<(String, Option<bool>, String)> = hooks
        .iter()
        .map(|h| {
            let body: Value = serde_json::from_str(h["body"].as_str().unwrap()).unwrap();
            (
                body["type"].as_str().unwrap().to_owned(),
                body["data"]["refused"].as_bool(),
                body["data"]["conversion"]["order_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    told.sort();
    assert_eq!(
        told,
        vec![
            ("conversion.created".into(), None, "SLOW".into()),
            ("conversion.created".into(), Some(true), "FAST".into()),
            ("conversion.rejected".into(), Some(true), "FAST".into()),
        ]
    );
}

#[tokio::test]
async fn bad_endpoints_are_refused_by_name_and_change_nothing() {
    let (app, _d) = app_with(|c| c.outbound.allow_private = false).await;
    for (path, body, says) in [
        (
            "/api/v1/webhooks",
            json!({"url": "ftp://hooks.example/x"}),
            "http(s)",
        ),
        (
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example/x", "events": ["conversion.aproved"]}),
            "conversion.aproved",
        ),
        (
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example/x?c={click_id}"}),
            "macros are for affiliate postbacks",
        ),
        (
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example/x", "method": "GET"}),
            "POST",
        ),
        (
            "/api/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/x"}),
            "allow_private",
        ),
        (
            "/api/v1/webhooks",
            json!({"url": "http://169.254.169.254/latest/meta-data"}),
            "private",
        ),
        (
            "/api/v1/webhooks",
            json!({"url": "http://localhost:8080/x"}),
            "private",
        ),
        (
            "/api/v1/postbacks",
            json!({"url": "https://aff.example/?c={clickid}", "affiliate": "solare"}),
            "unknown macro {clickid}",
        ),
        (
            "/api/v1/postbacks",
            json!({"url": "https://{sub1}.example/", "affiliate": "solare"}),
            "host must be fixed",
        ),
        (
            "/api/v1/postbacks",
            json!({"url": "https://aff.example/?c={click_id}"}),
            "affiliate",
        ),
        (
            "/api/v1/postbacks",
            json!({"url": "https://aff.example/?c={click_id}", "affiliate": "solare", "events": ["payout.created"]}),
            "conversion events only",
        ),
    ] {
        let (s, v) = app.api_send(Method::POST, path, body.clone()).await;
        assert_eq!(s, 422, "{body} → {v}");
        assert!(v["reason"].as_str().unwrap().contains(says), "{body} → {v}");
    }
    let (s, v) = app
        .api_send(
            Method::POST,
            "/api/v1/webhooks",
            json!({"url": "https://h.example/", "colour": "red"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = app
        .api_send(
            Method::POST,
            "/api/v1/postbacks",
            json!({"url": "https://a.example/?c={click_id}", "affiliate": "nobody"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (_, list) = app.api_get("/api/v1/webhooks").await;
    let (_, pbs) = app.api_get("/api/v1/postbacks").await;
    assert_eq!(
        (
            list["items"].as_array().unwrap().len(),
            pbs["items"].as_array().unwrap().len()
        ),
        (0, 0)
    );
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_refused_when_connecting() {
    let Some(rx) = Receiver::start() else { return };
    let (app, _d) = app_with(|c| c.outbound.allow_private = false).await;
    // A name (not an address) that this machine resolves to loopback: the
    // URL's text passes, the connection would reach the receiver, the
    // guard refuses it.
    let host = hostname_resolving_privately().await;
    let url = format!("http://{host}:{}/hook-ssrf", rx.port());
    let (id, _) = add(
        &app,
        "/api/v1/webhooks",
        json!({"url": url, "events": ["*"]}),
    )
    .await;
    let (s, v) = app
        .api_send(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/test"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = v["delivery"].as_i64().unwrap();
    let log = eventually(Duration::from_secs(20), "the refused attempt", || async {
        let (_, v) = app.api_get(&format!("/api/v1/deliveries/{d}")).await;
        (v["attempts"].as_i64().unwrap_or(0) >= 1).then_some(v)
    })
    .await;
    let err = log["attempts_log"][0]["error"].as_str().unwrap();
    assert!(err.contains("private"), "{err}");
    assert_eq!(
        log["status"], "pending",
        "refused like any failure: retried later"
    );
    assert!(
        rx.received().await.is_empty(),
        "nothing reached the receiver"
    );
}

/// The machine's own host name, which resolves to a private or loopback
/// address here (containers and CI machines alike).
async fn hostname_resolving_privately() -> String {
    let name = std::fs::read_to_string("/etc/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let addrs: Vec<_> = tokio::net::lookup_host((name.as_str(), 80))
        .await
        .unwrap()
        .collect();
    assert!(
        addrs
            .iter()
            .all(|a| clickward::services::delivery::http::is_forbidden(a.ip())),
        "{name} resolves to {addrs:?}"
    );
    name
}

#[tokio::test]
async fn a_receiver_down_for_two_minutes_gets_everything_after_each_id_the_same_every_time() {
    let Some(rx) = Receiver::start() else { return };
    let (app, _d) =
        app_with(|c| c.outbound.retry = vec!["5s".into(), "5m".into(), "30m".into()]).await;
    let (ep, secret) = add(
        &app,
        "/api/v1/webhooks",
        json!({"url": format!("{}/hook", rx.base), "events": ["conversion.created"]}),
    )
    .await;
    rx.trust(&secret).await;
    rx.control(json!({"status": 503})).await;
    for i in 0..5 {
        let cid = click(&app, "s1").await;
        convert(&app, &cid, &format!("DOWN-{i}")).await;
    }
    let failed_once = || async {
        let (_, v) = app
            .api_get(&format!("/api/v1/deliveries?endpoint={ep}"))
            .await;
        let rows = v["items"].as_array().unwrap().clone();
        (rows.len() == 5
            && rows
                .iter()
                .all(|r| r["attempts"] == 1 && r["status"] == "pending"))
        .then_some(rows)
    };
    let rows = eventually(
        Duration::from_secs(20),
        "a first failed attempt each",
        failed_once,
    )
    .await;
    let first_retry = rows[0]["next_attempt_at"].as_i64().unwrap() - NOON;
    assert!(
        (4_500_000..=5_500_000).contains(&first_retry),
        "5 s ± 10%: {first_retry}"
    );
    // Two minutes pass: the 5 s retry fails too, the next waits 5 min.
    app.clock.set(NOON + 120_000_000);
    eventually(
        Duration::from_secs(20),
        "a second failed attempt each",
        || async {
            let (_, v) = app
                .api_get(&format!("/api/v1/deliveries?endpoint={ep}"))
                .await;
            let rows = v["items"].as_array().unwrap().clone();
            rows.iter().all(|r| r["attempts"] == 2).then_some(())
        },
    )
    .await;
    // Back up; five minutes later everything arrives.
    rx.control(json!({"status": 200})).await;
    app.clock.set(NOON + 120_000_000 + 330_000_000);
    eventually(
        Duration::from_secs(20),
        "every delivery delivered",
        || async {
            let (_, v) = app
                .api_get(&format!("/api/v1/deliveries?endpoint={ep}"))
                .await;
            let rows = v["items"].as_array().unwrap().clone();
            rows.iter()
                .all(|r| r["status"] == "delivered" && r["attempts"] == 3)
                .then_some(())
        },
    )
    .await;
    let got = rx.at("/hook").await;
    assert_eq!(got.len(), 15, "three attempts of five events");
    let ids: std::collections::BTreeSet<String> = events_of(&app, "conversion.created")
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5);
    for id in &ids {
        let same: Vec<_> = got.iter().filter(|r| r["id"] == id.as_str()).collect();
        assert_eq!(same.len(), 3, "{id}");
        assert!(
            same.iter()
                .all(|r| r["valid"] == true && r["body"] == same[0]["body"]),
            "{id}: an exact retry"
        );
    }
}

#[tokio::test]
async fn bad_receivers_get_counted_retries_and_redirects_go_on_meanwhile() {
    let Some(slow) = Receiver::start() else {
        return;
    };
    let Some(big) = Receiver::start() else { return };
    let Some(moved) = Receiver::start() else {
        return;
    };
    let Some(gone) = Receiver::start() else {
        return;
    };
    let (app, _d) = app_with(|c| {
        c.outbound.timeout = Duration::from_secs(1);
        c.outbound.lease = Duration::from_secs(10);
    })
    .await;
    slow.control(json!({"delay_s": 60})).await;
    big.control(json!({"body_bytes": 5_000_000})).await;
    moved
        .control(json!({"redirect": "https://elsewhere.example/"}))
        .await;
    gone.control(json!({"status": 410})).await;
    let closed = free_port();
    let mut ids = Vec::new();
    for (base, path) in [
        (slow.base.clone(), "/hook-slow"),
        (big.base.clone(), "/hook-big"),
        (moved.base.clone(), "/hook-moved"),
        (gone.base.clone(), "/hook-gone"),
        (format!("http://127.0.0.1:{closed}"), "/hook-closed"),
    ] {
        let (id, _) = add(
            &app,
            "/api/v1/webhooks",
            json!({"url": format!("{base}{path}"), "events": ["*"]}),
        )
        .await;
        let (s, _) = app
            .api_send(
                Method::POST,
                &format!("/api/v1/webhooks/{id}/test"),
                json!({}),
            )
            .await;
        assert_eq!(s, 200);
        ids.push(id);
    }
    // While the slow receiver hangs, redirects are answered.
    for _ in 0..20 {
        let r = app.get_ua("/r/s1", CHROME).await;
        assert_eq!(r.status().as_u16(), 302);
    }
    let attempt_of = |id: String| {
        let app = &app;
        async move {
            eventually(Duration::from_secs(30), "an attempt", || {
                let id = id.clone();
                async move {
                    let (_, v) = app
                        .api_get(&format!("/api/v1/deliveries?endpoint={id}"))
                        .await;
                    let d = v["items"][0].clone();
                    (d["attempts"].as_i64().unwrap_or(0) >= 1).then_some(d)
                }
            })
            .await
        }
    };
    let slow_d = attempt_of(ids[0].clone()).await;
    assert_eq!(slow_d["status"], "pending");
    assert!(
        slow_d["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{slow_d}"
    );
    let big_d = attempt_of(ids[1].clone()).await;
    assert_eq!(big_d["status"], "delivered");
    let (_, detail) = app
        .api_get(&format!("/api/v1/deliveries/{}", big_d["id"]))
        .await;
    assert_eq!(
        detail["attempts_log"][0]["response"]
            .as_str()
            .unwrap()
            .len(),
        1024,
        "only the first KiB is kept"
    );
    let moved_d = attempt_of(ids[2].clone()).await;
    assert_eq!(moved_d["status"], "pending");
    assert_eq!(moved_d["last_status"], 302);
    assert!(
        moved_d["last_error"]
            .as_str()
            .unwrap()
            .contains("not followed"),
        "{moved_d}"
    );
    let m: Vec<_> = moved
        .at("/")
        .await
        .into_iter()
        .filter(|r| r["body"].as_str().unwrap().contains("webhook.test"))
        .collect();
    assert_eq!(
        m.len(),
        1,
        "sent once, and the redirect not followed: {m:?}"
    );
    let gone_d = attempt_of(ids[3].clone()).await;
    assert_eq!(gone_d["status"], "dead");
    let (_, ep) = app.api_get(&format!("/api/v1/webhooks/{}", ids[3])).await;
    assert_eq!(ep["enabled"], false);
    assert!(ep["disabled_reason"].as_str().unwrap().contains("410"));
    assert_eq!(
        events_of(&app, "webhook.disabled").await.len(),
        1,
        "the admin is told"
    );
    let closed_d = attempt_of(ids[4].clone()).await;
    assert_eq!(closed_d["status"], "pending");
    assert!(
        closed_d["last_error"].as_str().unwrap().contains("connect"),
        "{closed_d}"
    );
    let retries = metric_in(
        &app.metrics_text().await,
        "clickward_delivery_attempts_total{kind=\"webhook\",result=\"retry\"}",
    );
    assert!(retries.unwrap_or(0.0) >= 3.0, "counted: {retries:?}");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_and_replays_keep_the_id() {
    let Some(old_rx) = Receiver::start() else {
        return;
    };
    let (app, _d) = app_with(|_| {}).await;
    let (id, old) = add(
        &app,
        "/api/v1/webhooks",
        json!({"url": format!("{}/hook", old_rx.base), "events": ["*"]}),
    )
    .await;
    old_rx.trust(&old).await;
    let (s, v) = app
        .api_send(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let new = v["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let Some(new_rx) = Receiver::start() else {
        return;
    };
    new_rx.trust(&new).await;
    // One endpoint, two receivers: point it at the new one half way.
    let (_, v) = app
        .api_send(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/test"),
            json!({}),
        )
        .await;
    let first = v["delivery"].as_i64().unwrap();
    eventually(Duration::from_secs(20), "the test event", || async {
        (!old_rx.at("/hook").await.is_empty()).then_some(())
    })
    .await;
    let (s, _) = app
        .api_send(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            json!({"url": format!("{}/hook", new_rx.base)}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .api_send(
            Method::POST,
            &format!("/api/v1/deliveries/{first}/replay"),
            json!({}),
        )
        .await;
    assert_eq!(s, 202);
    eventually(Duration::from_secs(20), "the replay", || async {
        (!new_rx.at("/hook").await.is_empty()).then_some(())
    })
    .await;
    let a = &old_rx.at("/hook").await[0];
    let b = &new_rx.at("/hook").await[0];
    assert_eq!(a["valid"], true, "the old secret still verifies: {a}");
    assert_eq!(b["valid"], true, "the new one too: {b}");
    assert_eq!(a["id"], b["id"], "a replay keeps the webhook-id");
    assert_eq!(
        a["headers"]["webhook-signature"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    // Disabled: nothing is sent; enabled: it is.
    let (s, _) = app
        .api_send(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/disable"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = app
        .api_send(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/test"),
            json!({}),
        )
        .await;
    let held = v["delivery"].as_i64().unwrap();
    let (_, d) = app.api_get(&format!("/api/v1/deliveries/{held}")).await;
    assert_eq!(
        (d["status"].as_str(), d["attempts"].as_i64()),
        (Some("pending"), Some(0))
    );
    let (s, _) = app
        .api_send(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/enable"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    eventually(
        Duration::from_secs(20),
        "the held test after enabling",
        || async {
            let (_, d) = app.api_get(&format!("/api/v1/deliveries/{held}")).await;
            (d["status"] == "delivered").then_some(())
        },
    )
    .await;
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> (u16, String) {
    let r = app
        .client
        .get(app.url(path))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn token_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn form(
    app: &TestApp,
    cookie: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header(reqwest::header::COOKIE, cookie)
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_merchant_adds_a_webhook_in_the_dashboard_and_an_affiliate_its_postback_in_the_portal() {
    use crate::dashboard::{ADMIN_PASSWORD, add_user, sign_in};
    let Some(rx) = Receiver::start() else { return };
    let (app, _d) = app_with(|_| {}).await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    add_user(&app, "sol", Some("solare"), Some("solare's own secret")).await;
    add_user(
        &app,
        "bb",
        Some("boardbrew"),
        Some("boardbrew's own secret"),
    )
    .await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let sol = sign_in(&app, "sol", "solare's own secret").await;
    let bb = sign_in(&app, "bb", "boardbrew's own secret").await;

    let (s, html) = page(&app, &admin, "/dashboard/webhooks").await;
    assert_eq!(s, 200);
    let csrf = token_of(&html);
    let hook = format!("{}/hook-dash", rx.base);
    let r = form(
        &app,
        &admin,
        "/dashboard/webhooks",
        &[
            ("csrf", &csrf),
            ("url", &hook),
            ("events", "conversion.*"),
            ("program", "shop"),
            ("description", "CRM"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    let at = html
        .find("id=\"new-secret\" readonly value=\"")
        .expect("the secret, once")
        + 32;
    let secret = html[at..].split('"').next().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    rx.trust(&secret).await;
    let (_, again) = page(&app, &admin, "/dashboard/webhooks").await;
    assert!(
        again.contains("hook-dash") && !again.contains(&secret),
        "listed, secret never again"
    );

    let (_, portal) = page(&app, &sol, "/portal").await;
    let pcsrf = token_of(&portal);
    let template = format!(
        "{}/pb-sol?cid={{click_id}}&payout={{payout}}&cur={{currency}}",
        rx.base
    );
    let r = form(
        &app,
        &sol,
        "/portal/postbacks",
        &[
            ("csrf", &pcsrf),
            ("url", &template),
            ("method", "GET"),
            ("program", ""),
            ("on_created", "1"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(location(&r).contains("msg="), "{}", location(&r));
    let r = form(
        &app,
        &sol,
        "/portal/postbacks",
        &[
            ("csrf", &pcsrf),
            ("url", "https://aff.example/?c={clickid}"),
            ("on_created", "1"),
        ],
    )
    .await;
    assert!(
        location(&r).contains("error=") && location(&r).contains("clickid"),
        "a bad macro is named: {}",
        location(&r)
    );
    let (_, pbs) = app.api_get("/api/v1/postbacks").await;
    let pbs = pbs["items"].as_array().unwrap();
    assert_eq!(pbs.len(), 1);
    assert_eq!(pbs[0]["affiliate"], "solare");
    let sol_id = pbs[0]["id"].as_str().unwrap().to_owned();
    // Another affiliate cannot touch it, and does not see it.
    let (_, bb_portal) = page(&app, &bb, "/portal").await;
    let bcsrf = token_of(&bb_portal);
    let r = form(
        &app,
        &bb,
        &format!("/portal/postbacks/{sol_id}/disable"),
        &[("csrf", &bcsrf)],
    )
    .await;
    assert_eq!(r.status().as_u16(), 404);
    assert!(!bb_portal.contains("pb-sol"));

    let cid = click(&app, "s1").await;
    convert(&app, &cid, "DASH-1").await;
    eventually(
        Duration::from_secs(20),
        "the webhook and the postback",
        || async {
            (rx.at("/hook-dash").await.len() == 1 && rx.at("/pb-sol").await.len() == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(rx.at("/hook-dash").await[0]["valid"], true);
    assert_eq!(
        rx.at("/pb-sol").await[0]["query"],
        format!("cid={cid}&payout=8.00&cur=USD").as_str()
    );
    let (_, d) = app.api_get("/api/v1/deliveries").await;
    let ids: Vec<i64> = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let delivered = eventually(
        Duration::from_secs(20),
        "the log to say delivered",
        || async {
            let (_, html) = page(&app, &admin, "/dashboard/webhooks?status=delivered").await;
            (html.matches("<td>delivered</td>").count() == 2).then_some(html)
        },
    )
    .await;
    assert!(delivered.contains("conversion.created"));
    let (s, detail) = page(&app, &admin, &format!("/dashboard/deliveries/{}", ids[0])).await;
    assert_eq!(s, 200);
    assert!(detail.contains("<td>200</td>"), "{detail}");
    let (_, mine) = page(&app, &sol, "/portal").await;
    assert!(
        mine.contains("pb-sol") && mine.contains("<td>delivered</td>"),
        "the affiliate sees its delivery"
    );
    let (_, theirs) = page(&app, &bb, "/portal").await;
    assert!(
        !theirs.contains("<td>delivered</td>"),
        "and nobody else does"
    );
    // The portal has no delivery detail pages: they belong to the merchant.
    let (s, _) = page(&app, &sol, &format!("/dashboard/deliveries/{}", ids[0])).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn kill_9_mid_delivery_loses_nothing_and_the_resend_carries_the_same_id() {
    let Some(rx) = Receiver::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let catalog = dir.path().join("links.toml");
    std::fs::write(&catalog, CATALOG).unwrap();
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(&cfg, "[outbound]\nallow_private = true\n").unwrap();
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let (mut child, base) = spawn_serve(&data, &catalog, &[("CLICKWARD_CONFIG", &cfg_s)]).await;
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_clickward"))
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let added = cli(&[
        "webhook",
        "add",
        "--url",
        &format!("{}/hook", rx.base),
        "--events",
        "conversion.created",
    ]);
    let secret = added
        .lines()
        .find_map(|l| l.strip_prefix("secret "))
        .unwrap()
        .to_owned();
    rx.trust(&secret).await;
    // The receiver holds the first attempt for 5 s: clickward dies meanwhile.
    rx.control(json!({"delay_s": 5})).await;
    let c = client();
    let r = c
        .get(format!("{base}/r/s1"))
        .header("user-agent", IPHONE)
        .send()
        .await
        .unwrap();
    let cid = location(&r).rsplit("cid=").next().unwrap().to_owned();
    let r = c
        .get(format!(
            "{base}/postback?click_id={cid}&order_id=K-1&amount=10.00&token=tok-shop"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    eventually(
        Duration::from_secs(20),
        "the first attempt to arrive",
        || async { (!rx.at("/hook").await.is_empty()).then_some(()) },
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    rx.control(json!({"delay_s": 0})).await;
    let (mut child, _) = spawn_serve(&data, &catalog, &[("CLICKWARD_CONFIG", &cfg_s)]).await;
    let got = eventually(
        Duration::from_secs(30),
        "the delivery sent again",
        || async {
            let got = rx.at("/hook").await;
            (got.len() >= 2).then_some(got)
        },
    )
    .await;
    assert!(
        got.iter()
            .all(|r| r["valid"] == true && r["id"] == got[0]["id"] && r["body"] == got[0]["body"]),
        "{got:?}"
    );
    let log = cli(&["webhook", "deliveries"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("delivered"), "{log}");
    assert_eq!(log.lines().count(), 1, "one delivery, sent twice: {log}");
}
