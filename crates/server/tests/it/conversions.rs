//! Conversions over real HTTP: postbacks, replays, concurrency, rejections,
//! hold-period approval, reversal, the API with Idempotency-Key.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::*;

const CATALOG: &str = r#"
[[programs]]
slug = "shop"
currency = "USD"
commission = { default = { type = "share", bps = 1000 }, events = { lead = { type = "flat", amount = 150 } } }
hold = "72h"
attribution_window = "30d"
postback_token = "tok-shop"
pixel = "on"
pixel_max_amount = "100.00"

[[programs]]
slug = "signed"
currency = "JPY"
commission = { default = { type = "flat", amount = 500 } }
postback_token = "tok-signed"
postback_secret = "s3cret"
postback_ips = ["10.9.9.9"]
pixel = "signed"

[[programs]]
slug = "quiet"

[[programs]]
slug = "firsty"
attribution = "first_click"
pixel = "on"
click_id_param = "aff_click"
cookie_window = "7d"
commission = { default = { type = "flat", amount = 300 } }

[[affiliates]]
slug = "solare"

[[affiliates]]
slug = "boardbrew"

[[links]]
code = "f1"
program = "firsty"
affiliate = "solare"
destination = "https://first.example/landing"

[[links]]
code = "f2"
program = "firsty"
affiliate = "boardbrew"
destination = "https://first.example/landing?x=1"

[[affiliates]]
slug = "gone"

[[commissions]]
program = "shop"
affiliate = "boardbrew"
commission = { default = { type = "hybrid", amount = 100, bps = 1500 } }

[[links]]
code = "bb"
program = "shop"
affiliate = "boardbrew"
destination = "https://shop.example/bb?cid={click_id}"

[[links]]
code = "solare"
program = "shop"
affiliate = "solare"
destination = "https://shop.example/?cid={click_id}"

[[links]]
code = "gone"
program = "shop"
affiliate = "gone"
destination = "https://shop.example/g?cid={click_id}"

[[links]]
code = "q"
program = "quiet"
affiliate = "solare"
destination = "https://quiet.example/?cid={click_id}"

[[links]]
code = "sig"
program = "signed"
affiliate = "solare"
destination = "https://jp.example/?cid={click_id}"
"#;

async fn app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, CATALOG).unwrap();
    let app = TestApp::start_with(|c| c.catalog = Some(path.clone())).await;
    (app, dir)
}

async fn click(app: &TestApp, code: &str) -> String {
    let r = app.get_ua(&format!("/ref/{code}?src=review"), IPHONE).await;
    assert_eq!(r.status().as_u16(), 302);
    location(&r).rsplit("cid=").next().unwrap().to_owned()
}

async fn postback(app: &TestApp, query: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(&format!("/postback?{query}")))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn conversions(app: &TestApp) -> Vec<Value> {
    let (s, v) = app.api_get("/api/v1/conversions?limit=1000").await;
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().cloned().unwrap()
}

async fn payable(app: &TestApp, affiliate: &str) -> i64 {
    let (_, v) = app.api_get("/api/v1/balances").await;
    v.as_array()
        .unwrap()
        .iter()
        .filter(|b| b["affiliate"] == affiliate && b["bucket"] == "payable")
        .map(|b| b["minor"].as_i64().unwrap())
        .sum()
}

#[tokio::test]
async fn a_click_and_its_postback_make_one_conversion_with_the_right_commission() {
    let (app, _d) = app().await;
    let id = click(&app, "solare").await;
    let q =
        format!("transaction_id={id}&order_id=A-1&amount=123.45&token=tok-shop&adv_sub=basket7");
    let (s, v) = postback(&app, &q).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"], "created");
    let c = &v["conversion"];
    assert_eq!(c["affiliate"], "solare");
    assert_eq!(c["link"], "solare");
    assert_eq!(c["src"], "review");
    assert_eq!(c["amount"], "123.45");
    // 10% of 12,345 cents is 1,234.5: half to even gives 1,234.
    assert_eq!(c["commission_minor"], 1234);
    assert_eq!(c["commission"], "12.34");
    assert_eq!(c["status"], "pending");
    assert_eq!(c["attributed_by"], "click_id");
    assert_eq!(c["adv_subs"][0], "basket7");

    // The same postback 100 times: one conversion, 200 with the original.
    for _ in 0..100 {
        let (s, again) = postback(&app, &q).await;
        assert_eq!(s, 200);
        assert_eq!(again["status"], "duplicate");
        assert_eq!(again["conversion"]["conversion_id"], c["conversion_id"]);
    }
    // 20 at once, for a new order: exactly one 201.
    let q2 = format!("click_id={id}&order_id=A-2&amount=10&token=tok-shop");
    let results = futures::future::join_all((0..20).map(|_| postback(&app, &q2))).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let replays = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, replays), (1, 19));
    // A VIP affiliate's override: 1.00 + 15% of 10.00.
    let vip = click(&app, "bb").await;
    let (s, v) = postback(
        &app,
        &format!("click_id={vip}&order_id=V-1&amount=10.00&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["commission"], "2.50");
    assert_eq!(v["conversion"]["affiliate"], "boardbrew");
    // A lead pays its own flat rate.
    let (s, v) = postback(&app, &format!("cid={id}&txid=L-1&et=lead&token=tok-shop")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["commission_minor"], 150);
    assert_eq!(conversions(&app).await.len(), 4);
}

#[tokio::test]
async fn every_bad_postback_is_refused_with_its_code_and_stores_nothing() {
    let (app, _d) = app().await;
    let id = click(&app, "solare").await;
    let gone = click(&app, "gone").await;
    let (s, _) = postback(
        &app,
        &format!("click_id={id}&order_id=O-0&amount=5&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 201);
    let long = "x".repeat(10 * 1024);
    let forty = "1".repeat(40);
    let cases: Vec<(String, u16)> = vec![
        (
            format!("click_id={id}&order_id=O-0&amount=6&token=tok-shop"),
            409,
        ),
        (
            "click_id=01ARZ3NDEKTSV4RRFFQ69G5FAV&order_id=O-1&token=tok-shop".into(),
            404,
        ),
        ("click_id=garbage&order_id=O-1&token=tok-shop".into(), 404),
        ("order_id=O-1&token=tok-shop".into(), 404),
        (format!("click_id={id}&order_id=O-1&token=wrong"), 401),
        (format!("click_id={id}&order_id=O-1"), 401),
        (
            format!("click_id={id}&order_id=O-1&amount=1e3&token=tok-shop"),
            422,
        ),
        (
            format!("click_id={id}&order_id=O-1&amount=-5&token=tok-shop"),
            422,
        ),
        (
            format!("click_id={id}&order_id=O-1&amount=12.345&token=tok-shop"),
            422,
        ),
        (
            format!("click_id={id}&order_id=O-1&amount=NaN&token=tok-shop"),
            422,
        ),
        (
            format!("click_id={id}&order_id=O-1&amount={forty}&token=tok-shop"),
            422,
        ),
        (
            format!("click_id={id}&order_id=O-1&amount=5&currency=ZZZ&token=tok-shop"),
            422,
        ),
        (
            format!("click_id={id}&order_id=O-1&amount=5&currency=EUR&token=tok-shop"),
            422,
        ),
        (format!("click_id={id}&order_id={long}&token=tok-shop"), 400),
        (format!("click_id={id}&token=tok-shop"), 400),
        (
            format!("click_id={id}&order_id=O-1&status=maybe&token=tok-shop"),
            400,
        ),
        // A share needs an amount.
        (format!("click_id={id}&order_id=O-1&token=tok-shop"), 422),
    ];
    for (q, want) in &cases {
        let (s, v) = postback(&app, q).await;
        assert_eq!(s, *want, "{} -> {v}", &q[..q.len().min(80)]);
        assert_ne!(v["status"], "created");
        assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    }
    // A click of another program, with this program's token.
    let other = {
        let r = app.get_ua("/r/f1", IPHONE).await;
        location(&r).rsplit("aff_click=").next().unwrap().to_owned()
    };
    let (s, v) = postback(
        &app,
        &format!("click_id={other}&order_id=X-1&amount=5&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 401, "{v}");
    // A disabled affiliate earns nothing.
    app.api_send(Method::POST, "/api/v1/affiliates/gone/disable", json!({}))
        .await;
    let (s, v) = postback(
        &app,
        &format!("click_id={gone}&order_id=G-1&amount=5&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    // Outside the 30-day window.
    app.clock.set(NOON + 31 * 86_400_000_000);
    let (s, v) = postback(
        &app,
        &format!("click_id={id}&order_id=O-9&amount=5&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("window"), "{v}");
    assert_eq!(
        conversions(&app).await.len(),
        1,
        "a rejection stored something"
    );
    let metrics = app.metrics_text().await;
    for outcome in [
        "unauthorized",
        "malformed",
        "invalid",
        "unknown_click",
        "conflict",
    ] {
        assert!(
            metrics.contains(&format!("outcome=\"{outcome}\"")),
            "rejections by reason: {outcome}"
        );
    }
}

fn sign(secret: &str, query: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(query.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn signatures_and_ip_allowlists() {
    let (app, _d) = app().await;
    let id = click(&app, "sig").await;
    let xff = |ip: &str| {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-forwarded-for", ip.parse().unwrap());
        h
    };
    let q = format!("click_id={id}&order_id=J-1&amount=1500");
    let good = format!("{q}&signature={}", sign("s3cret", &q));
    // Without a trusted proxy the peer is 127.0.0.1: not on the allowlist.
    let r = app
        .client
        .get(app.url(&format!("/postback?{good}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    drop(app);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, CATALOG).unwrap();
    let app = TestApp::start_with(|c| {
        c.catalog = Some(path.clone());
        c.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let id = click(&app, "sig").await;
    let q = format!("click_id={id}&order_id=J-1&amount=1500");
    let good = format!("{q}&signature={}", sign("s3cret", &q));
    // A valid signature over other parameters.
    let forged = format!(
        "click_id={id}&order_id=J-1&amount=9999&signature={}",
        sign("s3cret", &q)
    );
    let get = |query: String, ip: &'static str| {
        let c = app.client.clone();
        let url = app.url(&format!("/postback?{query}"));
        let h = xff(ip);
        async move {
            c.get(url)
                .headers(h)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        get(forged, "10.9.9.9").await,
        401,
        "signature over other parameters"
    );
    assert_eq!(
        get(good.clone(), "10.1.1.1").await,
        401,
        "address not allowed"
    );
    assert_eq!(get(good, "10.9.9.9").await, 201);
    let c = &conversions(&app).await[0];
    assert_eq!(c["currency"], "JPY");
    assert_eq!(c["amount"], "1500");
    assert_eq!(c["commission"], "500");
}

#[tokio::test]
async fn hold_period_approval_reversal_and_balances_add_up() {
    let (app, _d) = app().await;
    let id = click(&app, "solare").await;
    for (order, amount) in [("H-1", "100.00"), ("H-2", "50.00")] {
        let (s, _) = postback(
            &app,
            &format!("click_id={id}&order_id={order}&amount={amount}&token=tok-shop"),
        )
        .await;
        assert_eq!(s, 201);
    }
    assert_eq!(payable(&app, "solare").await, 0);
    // Not yet: the hold is 72 h.
    use clickward_store::prelude::*;
    assert_eq!(
        app.store
            .approve_due(NOON + 71 * 3_600_000_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.store
            .approve_due(NOON + 72 * 3_600_000_000)
            .await
            .unwrap(),
        2
    );
    assert_eq!(payable(&app, "solare").await, 1000 + 500);
    let all = conversions(&app).await;
    assert!(all.iter().all(|c| c["status"] == "approved"));
    // A refund after approval is a negative adjustment, not an edit.
    let h2 = all.iter().find(|c| c["order_id"] == "H-2").unwrap();
    let path = format!(
        "/api/v1/conversions/{}/reverse",
        h2["conversion_id"].as_str().unwrap()
    );
    let (s, v) = app
        .api_send(Method::POST, &path, json!({"reason": "refund #88"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "reversed");
    assert_eq!(payable(&app, "solare").await, 1000);
    let (s, _) = app.api_send(Method::POST, &path, json!({})).await;
    assert_eq!(s, 409, "a reversed conversion cannot be reversed again");
    // The ledger refuses edits.
    let conn = rusqlite::Connection::open(app.data_dir().join("data/clickward.db")).unwrap();
    assert!(conn.execute("UPDATE ledger SET amount = 0", []).is_err());
    assert!(conn.execute("DELETE FROM ledger", []).is_err());
}

#[tokio::test]
async fn the_api_honours_idempotency_keys_and_refuses_float_amounts() {
    let (app, _d) = app().await;
    let id = click(&app, "solare").await;
    let send = |body: Value, key: Option<&'static str>| {
        let mut r = app
            .client
            .post(app.url("/api/v1/conversions"))
            .bearer_auth(&app.admin_key)
            .json(&body);
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        async move {
            let r = r.send().await.unwrap();
            let replayed = r.headers().contains_key("idempotent-replayed");
            (
                r.status().as_u16(),
                replayed,
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let body = json!({"click_id": id, "order_id": "API-1", "amount": "20.00"});
    let (s1, r1, v1) = send(body.clone(), Some("k-1")).await;
    assert_eq!((s1, r1), (201, false), "{v1}");
    let (s2, r2, v2) = send(body.clone(), Some("k-1")).await;
    assert_eq!((s2, r2), (201, true));
    assert_eq!(v1, v2, "a retry with the same key gets the first answer");
    let (s3, _, _) = send(
        json!({"click_id": id, "order_id": "API-2", "amount": "1"}),
        Some("k-1"),
    )
    .await;
    assert_eq!(s3, 422, "a key reused for another request");
    let (s4, _, v4) = send(
        json!({"click_id": id, "order_id": "API-3", "amount": 12.5}),
        None,
    )
    .await;
    assert_eq!(s4, 400, "{v4}");
    let (s5, _, _) = send(
        json!({"click_id": id, "order_id": "API-4", "amount": 12}),
        None,
    )
    .await;
    assert_eq!(s5, 201);
    assert_eq!(conversions(&app).await.len(), 2);

    // A malformed body under a key changes nothing and holds no claim: the
    // corrected request under the same key is recorded, where a claim left
    // behind made it wait 10 s for a 409 (found by schemathesis).
    let (s6, _, v6) = send(
        json!({"click_id": id, "order_id": "API-5", "bogus": 1}),
        Some("k-2"),
    )
    .await;
    assert_eq!(s6, 400, "{v6}");
    let (s7, r7, v7) = send(
        json!({"click_id": id, "order_id": "API-5", "amount": "3.00"}),
        Some("k-2"),
    )
    .await;
    assert_eq!((s7, r7), (201, false), "{v7}");
    assert_eq!(conversions(&app).await.len(), 3);
}

/// `name=value` of every cookie a response sets.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect()
}

async fn pixel(app: &TestApp, query: &str, cookies: &[String]) -> (u16, String, Vec<u8>) {
    let mut r = app.client.get(app.url(&format!("/pixel.gif?{query}")));
    if !cookies.is_empty() {
        r = r.header("cookie", cookies.join("; "));
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "image/gif");
    let kind = r.headers()["x-clickward-status"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, kind, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn the_pixel_converts_from_the_cookie_the_redirect_set() {
    let (app, _d) = app().await;
    let r = app.get_ua("/ref/solare?src=footer", IPHONE).await;
    let cookies = set_cookies(&r);
    assert!(
        cookies.iter().any(|c| c.starts_with("cw_at_shop=")),
        "{cookies:?}"
    );
    let sc = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let at = sc.iter().find(|c| c.starts_with("cw_at_shop=")).unwrap();
    assert!(
        at.contains("HttpOnly") && at.contains("SameSite=Lax") && at.contains("Max-Age=2592000"),
        "{at}"
    );
    assert!(
        !at.contains("Secure"),
        "plain http without a trusted proxy: {at}"
    );
    // A bot gets no attribution cookie.
    let bot = app.get_ua("/ref/solare", "facebookexternalhit/1.1").await;
    assert!(set_cookies(&bot).is_empty());

    let (s, kind, body) = pixel(&app, "order_id=P-1&amount=30.00", &cookies).await;
    assert_eq!((s, kind.as_str()), (201, "created"));
    assert!(body.starts_with(b"GIF89a"));
    let c = &conversions(&app).await[0];
    assert_eq!(c["attributed_by"], "cookie");
    assert_eq!(c["affiliate"], "solare");
    assert_eq!(c["src"], "footer");
    assert_eq!(c["commission"], "3.00");
    // Replayed pixel: 200, still a GIF.
    let (s, kind, _) = pixel(&app, "order_id=P-1&amount=30.00", &cookies).await;
    assert_eq!((s, kind.as_str()), (200, "duplicate"));
    // No cookie, or a forged one: a GIF with 404, nothing stored.
    let (s, _, body) = pixel(&app, "order_id=P-2&amount=1", &[]).await;
    assert_eq!(s, 404);
    assert!(body.starts_with(b"GIF89a"));
    let (s, _, _) = pixel(
        &app,
        "order_id=P-3&amount=1",
        &["cw_at_shop=forged".to_owned()],
    )
    .await;
    assert_eq!(s, 404);
    // A page cannot approve its own conversion.
    let (s, _, _) = pixel(&app, "order_id=P-5&amount=1&status=approved", &cookies).await;
    assert_eq!(s, 201);
    let p5 = conversions(&app)
        .await
        .into_iter()
        .find(|c| c["order_id"] == "P-5")
        .unwrap();
    assert_eq!(p5["status"], "pending");
    // A click id in the query is not trusted on the pixel.
    let other = click(&app, "solare").await;
    let (s, _, _) = pixel(
        &app,
        &format!("order_id=P-4&amount=1&click_id={other}"),
        &[],
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(conversions(&app).await.len(), 2, "P-1 and P-5 only");
}

#[tokio::test]
async fn first_click_keeps_its_cookie_and_click_ids_are_appended() {
    let (app, _d) = app().await;
    let r1 = app.get_ua("/r/f1", IPHONE).await;
    let loc = location(&r1);
    assert!(
        loc.starts_with("https://first.example/landing?aff_click="),
        "{loc}"
    );
    let first = set_cookies(&r1);
    let r2 = app
        .client
        .get(app.url("/r/f2"))
        .header("user-agent", IPHONE)
        .header("cookie", first.join("; "))
        .send()
        .await
        .unwrap();
    assert!(location(&r2).starts_with("https://first.example/landing?x=1&aff_click="));
    assert!(
        !set_cookies(&r2)
            .iter()
            .any(|c| c.starts_with("cw_at_firsty=")),
        "first click: the existing cookie stays"
    );
    let (s, _, _) = pixel(&app, "order_id=F-1&program=firsty", &first).await;
    assert_eq!(s, 201);
    assert_eq!(conversions(&app).await[0]["affiliate"], "solare");

    // Last click (the default): the second click's cookie replaces the first.
    let a = app.get_ua("/ref/solare", IPHONE).await;
    let b = app
        .client
        .get(app.url("/ref/gone"))
        .header("user-agent", IPHONE)
        .header("cookie", set_cookies(&a).join("; "))
        .send()
        .await
        .unwrap();
    let latest = set_cookies(&b);
    assert!(latest.iter().any(|c| c.starts_with("cw_at_shop=")));
    let (s, _, _) = pixel(&app, "order_id=L-1&amount=10&program=shop", &latest).await;
    assert_eq!(s, 201);
    assert_eq!(conversions(&app).await[0]["affiliate"], "gone");
}

fn cli(app: &TestApp, args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_clickward"))
        .arg("--data-dir")
        .arg(app.data_dir().join("data"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{args:?}: {text}");
    text
}

#[tokio::test]
async fn payout_batches_are_idempotent_and_net_clawbacks() {
    let (app, _d) = app().await;
    let id = click(&app, "solare").await;
    for (order, amount) in [("B-1", "100.00"), ("B-2", "40.00"), ("B-3", "7.00")] {
        let (s, _) = postback(
            &app,
            &format!("click_id={id}&order_id={order}&amount={amount}&token=tok-shop"),
        )
        .await;
        assert_eq!(s, 201);
    }
    let all = conversions(&app).await;
    let id_of = |order: &str| {
        all.iter().find(|c| c["order_id"] == order).unwrap()["conversion_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    cli(&app, &["conversion", "approve", &id_of("B-1")]);
    cli(
        &app,
        &[
            "conversion",
            "approve",
            &id_of("B-2"),
            "--reason",
            "checked",
        ],
    );
    cli(
        &app,
        &[
            "conversion",
            "reject",
            &id_of("B-3"),
            "--reason",
            "test order",
        ],
    );
    let preview = cli(&app, &["payout", "preview", "--affiliate", "solare"]);
    assert!(
        preview.contains("14.00") && preview.contains("yes"),
        "{preview}"
    );

    let csv = app.data_dir().join("batch.csv");
    let out = cli(
        &app,
        &[
            "payout",
            "create",
            "--affiliate",
            "solare",
            "--currency",
            "USD",
            "--key",
            "nov",
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("created: 14.00 USD to solare for 2 conversions"),
        "{out}"
    );
    let again = cli(
        &app,
        &[
            "payout",
            "create",
            "--affiliate",
            "solare",
            "--currency",
            "USD",
            "--key",
            "nov",
        ],
    );
    assert!(again.contains("already existed"), "{again}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("batch_id,affiliate,currency,amount,amount_minor,conversions"),
        "{text}"
    );
    assert!(text.contains(",solare,USD,14.00,1400,2,nov,"), "{text}");
    assert_eq!(payable(&app, "solare").await, 0);

    // A chargeback after payment: the clawback is netted against the next payout.
    cli(
        &app,
        &[
            "conversion",
            "reverse",
            &id_of("B-2"),
            "--reason",
            "chargeback",
        ],
    );
    assert_eq!(payable(&app, "solare").await, -400);
    let (s, _) = postback(
        &app,
        &format!("click_id={id}&order_id=B-4&amount=100.00&status=approved&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 201);
    let out = cli(
        &app,
        &[
            "payout",
            "create",
            "--affiliate",
            "solare",
            "--currency",
            "USD",
            "--key",
            "dec",
        ],
    );
    assert!(out.contains("created: 6.00 USD"), "{out}");
    assert_eq!(payable(&app, "solare").await, 0);
    let listed = cli(&app, &["conversion", "list", "--status", "reversed"]);
    assert!(listed.contains("reversed"), "{listed}");
    // Reports count standing conversions (B-1 paid, B-4 paid): 2 of 1 unique click.
    let report = cli(
        &app,
        &[
            "report",
            "--from",
            "2026-11-20",
            "--by",
            "link",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        report,
        "link,gross_clicks,bot_clicks,invalid_clicks,clicks,unique_clicks,duplicate_clicks,conversions,revenue,payout,cr,epc\n\
         solare,1,0,0,1,1,0,2,200.00 USD,20.00 USD,200.00%,20.00 USD\n"
    );
}

#[tokio::test]
async fn another_currency_is_converted_once_when_a_rate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, CATALOG).unwrap();
    let app = TestApp::start_with(|c| {
        c.catalog = Some(path.clone());
        c.rates.insert("EUR/USD".into(), "1.10".into());
    })
    .await;
    let id = click(&app, "solare").await;
    let (s, v) = postback(
        &app,
        &format!("click_id={id}&order_id=E-1&amount=10.00&currency=EUR&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["currency"], "USD");
    assert_eq!(v["conversion"]["amount"], "11.00");
    assert_eq!(v["conversion"]["commission"], "1.10");
    let (s, _) = postback(
        &app,
        &format!("click_id={id}&order_id=E-2&amount=10&currency=GBP&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 422, "no GBP/USD rate");
}

#[tokio::test]
async fn cookies_are_secure_behind_an_https_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, CATALOG).unwrap();
    let app = TestApp::start_with(|c| {
        c.catalog = Some(path.clone());
        c.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let r = app
        .client
        .get(app.url("/ref/solare"))
        .header("user-agent", IPHONE)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let all: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|c| c.contains("Secure")), "{all:?}");
}

#[tokio::test]
async fn money_can_be_reported_by_conversion_time_or_click_time() {
    let (app, _d) = app().await;
    let id = click(&app, "solare").await; // 2026-11-20T12:00Z
    // Reported the next morning, after it occurred (a future occurred_at is refused).
    app.clock.set(NOON + 22 * 3600 * 1_000_000);
    let (s, v) = postback(&app, &format!("click_id={id}&order_id=T-1&amount=10.00&occurred_at=2026-11-21T09:00:00Z&token=tok-shop")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["ctit_s"], 21 * 3600);
    let by = |basis: &'static str| {
        let c = app.client.clone();
        let url = app.url(&format!(
            "/api/v1/reports?from=2026-11-20&to=2026-11-21&group_by=day&time_basis={basis}"
        ));
        let key = app.admin_key.clone();
        async move {
            let v: Value = c
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["day"].as_str().unwrap().to_owned(),
                        r["conversions"].as_i64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by("conversion").await,
        vec![("2026-11-20".to_owned(), 0), ("2026-11-21".to_owned(), 1)]
    );
    assert_eq!(by("click").await, vec![("2026-11-20".to_owned(), 1)]);
}

#[tokio::test]
async fn the_pixel_is_off_unless_a_program_turns_it_on_and_limited_when_on() {
    use clickward_store::ConversionStore as _;
    use hmac::{Hmac, KeyInit, Mac};
    let (app, _d) = app().await;
    // Off (the default): refused, nothing stored.
    let quiet = set_cookies(&app.get_ua("/ref/q", IPHONE).await);
    let (s, kind, body) = pixel(&app, "order_id=Q-1&amount=5", &quiet).await;
    assert_eq!((s, kind.as_str()), (403, "forbidden"));
    assert!(body.starts_with(b"GIF89a"));
    // On: within its bound, and held for review.
    let shop = set_cookies(&app.get_ua("/ref/solare", IPHONE).await);
    let (s, _, _) = pixel(&app, "order_id=P-big&amount=150.00", &shop).await;
    assert_eq!(s, 422, "above pixel_max_amount");
    let (s, _, _) = pixel(&app, "order_id=P-ok&amount=40.00", &shop).await;
    assert_eq!(s, 201);
    let c = conversions(&app).await;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["held"], true);
    // The hold period does not approve it; an admin can.
    let approved = app
        .store
        .approve_due(NOON + 100 * 3_600_000_000)
        .await
        .unwrap();
    assert_eq!(approved, 0);
    assert_eq!(conversions(&app).await[0]["status"], "pending");
    let id = c[0]["conversion_id"].as_str().unwrap().to_owned();
    let (s, v) = app
        .api_send(
            reqwest::Method::POST,
            &format!("/api/v1/conversions/{id}/approve"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Signed: only with the merchant's signature of this order and amount.
    let signed = set_cookies(&app.get_ua("/ref/sig", IPHONE).await);
    let (s, _, _) = pixel(&app, "order_id=S-1&amount=5000&program=signed", &signed).await;
    assert_eq!(s, 401);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(b"order_id=S-1&amount=5000");
    let sig = hex::encode(mac.finalize().into_bytes());
    let (s, _, _) = pixel(
        &app,
        &format!("order_id=S-1&amount=9000&program=signed&sig={sig}"),
        &signed,
    )
    .await;
    assert_eq!(s, 401, "the signature is of another amount");
    let (s, _, _) = pixel(
        &app,
        &format!("order_id=S-1&amount=5000&program=signed&sig={sig}"),
        &signed,
    )
    .await;
    assert_eq!(s, 201);
    let s1 = conversions(&app)
        .await
        .into_iter()
        .find(|c| c["order_id"] == "S-1")
        .unwrap();
    assert_eq!(s1["held"], false);
}

/// A postback, an approval and a refused change, as the outbox tells
/// them: one event per change that happened, in order, with stable ids.
#[tokio::test]
async fn the_outbox_tells_each_money_change_once() {
    let (app, _d) = app().await;
    // The catalogue's own events come first; read on from after them.
    let (_, v) = app.api_get("/api/v1/outbox?limit=1000").await;
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"].as_str().unwrap().ends_with(".created")),
        "{v}"
    );
    let start = v["next"].clone();
    let id = click(&app, "solare").await;
    let (s, v) = postback(
        &app,
        &format!("click_id={id}&order_id=E-1&amount=10&token=tok-shop"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let cid = v["conversion"]["conversion_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same postback again, and a refused reversal: nothing new.
    postback(
        &app,
        &format!("click_id={id}&order_id=E-1&amount=10&token=tok-shop"),
    )
    .await;
    let (s, _) = app
        .api_send(
            reqwest::Method::POST,
            &format!("/api/v1/conversions/{cid}/reverse"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = app
        .api_send(
            reqwest::Method::POST,
            &format!("/api/v1/conversions/{cid}/approve"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = app.api_get(&format!("/api/v1/outbox?after={start}")).await;
    assert_eq!(s, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["conversion.created", "conversion.approved"]);
    assert_eq!(
        events[0]["payload"]["conversion"]["conversion_id"],
        cid.as_str()
    );
    assert_eq!(events[0]["payload"]["v"], 1);
    assert!(events[0]["id"].as_str().unwrap().starts_with("evt_"));
    // No IP address anywhere in what leaves the box.
    assert!(!v.to_string().contains("127.0.0.1"));
    // From the cursor on: nothing yet.
    let (_, more) = app
        .api_get(&format!("/api/v1/outbox?after={}", v["next"]))
        .await;
    assert_eq!(more["events"], serde_json::json!([]));
    assert_eq!(more["next"], v["next"]);
    let (s, _) = app.api_get("/api/v1/outbox?after=-1").await;
    assert_eq!(s, 400);
}
