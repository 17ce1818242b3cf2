//! Property-based fuzzing over real HTTP: random query strings (and POST
//! bodies) against `/postback` and the tracking routes, with the cases
//! attackers found first (NUL bytes, fields given twice, broken and
//! non-UTF-8 percent-encoding, huge values) as seeds. Bounded:
//! `CLICKWARD_FUZZ_CASES` random cases per target (default 200), so it runs
//! in CI on every push.
//!
//! What must hold whatever is sent: no 5xx but the documented 503
//! `click_pending`; every JSON answer parses; no conversion is recorded
//! without the program's credentials; every redirect goes to the link's own
//! host with a `Location` that is a valid URL; the server still answers.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::helpers::*;

/// Keys the handlers read (and a few they do not).
const KEYS: &[&str] = &[
    "click_id",
    "transaction_id",
    "cid",
    "order_id",
    "txid",
    "amount",
    "currency",
    "status",
    "event",
    "et",
    "token",
    "signature",
    "occurred_at",
    "adv_sub",
    "src",
    "sub1",
    "sub5",
    "program",
    "utm_source",
    "zz",
];

/// The seeds: what broke the tracker before (issue 20).
const SEEDS: &[&str] = &[
    "src=%00",
    "src=a%00b&sub1=%00",
    "order_id=a&order_id=b&click_id=01JD7Q2V3N7C8X0M2Y4Z6A8B0C&token=x",
    "click_id=%ff%fe%fd&order_id=%c3%28&amount=1",
    "amount=1e3&order_id=x&click_id=01JD7Q2V3N7C8X0M2Y4Z6A8B0C",
    "amount=NaN&amount=-1&order_id=%zz",
    "src=%zz%&sub1=%%%",
    "token=x&token=y&signature=zz",
    "occurred_at=99999999999999999999&order_id=1",
    "src=%E2%80%AE%E2%80%8Bsrc&sub1=%0d%0aSet-Cookie:%20x=1",
    "status=approved&status=pending",
    "=&&&=&==",
];

/// One `key=value` pair: a known or random key, a value of random bytes
/// percent-encoded, raw printable text, or a stray `%`.
fn pair() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        proptest::sample::select(KEYS).prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect::<String>()),
        "[ -~]{0,40}".prop_map(|s| s.replace(['&', '#', ' '], "")),
        Just("%".to_owned()),
        Just("x".repeat(5000)),
    ];
    (key, value).prop_map(|(k, v)| format!("{k}={v}"))
}

fn query() -> impl Strategy<Value = String> {
    proptest::collection::vec(pair(), 0..8).prop_map(|p| p.join("&"))
}

fn cases() -> u32 {
    std::env::var("CLICKWARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Checks one postback request (GET with `q`, or POST with `q` as body).
async fn postback(app: &TestApp, q: &str, post: bool) -> Result<(), String> {
    let r = if post {
        app.client
            .post(app.url("/postback"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(q.to_owned())
            .send()
            .await
    } else {
        app.client
            .get(app.url(&format!("/postback?{q}")))
            .send()
            .await
    }
    .map_err(|e| format!("{q}: {e}"))?;
    let status = r.status().as_u16();
    let body: serde_json::Value = r
        .json()
        .await
        .map_err(|e| format!("{q}: the answer is not JSON: {e}"))?;
    if status >= 500 && !(status == 503 && body["status"] == "click_pending") {
        return Err(format!("{q}: {status} {body}"));
    }
    if status == 200 || status == 201 {
        return Err(format!("{q}: recorded without credentials: {body}"));
    }
    Ok(())
}

/// Checks one tracking request.
async fn track(app: &TestApp, q: &str) -> Result<(), String> {
    let r = app
        .client
        .get(app.url(&format!("/r/solare?{q}")))
        .header("user-agent", IPHONE)
        .send()
        .await
        .map_err(|e| format!("{q}: {e}"))?;
    let status = r.status().as_u16();
    if status != 302 {
        return Err(format!("{q}: {status}"));
    }
    let to = location(&r);
    let url = url::Url::parse(&to).map_err(|e| format!("{q}: Location {to:?}: {e}"))?;
    if url.host_str() != Some("solare.example") || to.contains([' ', '\0', '\r', '\n']) {
        return Err(format!("{q}: Location {to:?}"));
    }
    Ok(())
}

fn run(target: &str, check: impl Fn(&str) -> Result<(), String>) {
    for seed in SEEDS {
        if let Err(e) = check(seed) {
            panic!("{target}, seed {seed:?}: {e}");
        }
    }
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&query(), |q| check(&q).map_err(TestCaseError::fail));
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
}

#[test]
fn postback_parsing_survives_anything() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(TestApp::start());
    run("GET /postback", |q| rt.block_on(postback(&app, q, false)));
    run("POST /postback", |q| rt.block_on(postback(&app, q, true)));
    let alive = rt.block_on(async { app.get_ua("/healthz", CHROME).await.status().as_u16() });
    assert_eq!(alive, 200);
    assert_eq!(
        rt.block_on(async { app.api_get("/api/v1/conversions").await.1["items"].clone() }),
        serde_json::json!([])
    );
}

#[test]
fn the_tracking_query_survives_anything() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(TestApp::start());
    run("GET /r/solare", |q| rt.block_on(track(&app, q)));
    // Every redirect was recorded once, whatever its query held (sync
    // durability: each was answered after its commit).
    let clicks = rt.block_on(app.clicks("solare")).len();
    assert_eq!(clicks, SEEDS.len() + cases() as usize);
}
