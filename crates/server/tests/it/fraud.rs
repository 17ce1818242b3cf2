//! Fraud rules over real HTTP: every click rule tripped just above its line
//! and passed just below, excluded traffic, the conversion rules with their
//! 422s and holds, hard caps under concurrency, and bad rules refused by name.

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use clickward::clock::Clock;

use crate::helpers::*;

const CATALOG: &str = r#"
[[programs]]
slug = "shop"
currency = "USD"
commission = { default = { type = "share", bps = 1000 } }
postback_token = "tok-shop"
attribution_window = "30d"
timezone = "Asia/Tokyo"
fallback_url = "https://shop.example/sorry"

[[programs]]
slug = "other"
currency = "JPY"
commission = { default = { type = "flat", amount = 500 } }
postback_token = "tok-other"

[[affiliates]]
slug = "mia"

[[affiliates]]
slug = "leo"

[[links]]
code = "mia"
program = "shop"
affiliate = "mia"
destination = "https://shop.example/?cid={click_id}"

[[links]]
code = "leo"
program = "shop"
affiliate = "leo"
destination = "https://shop.example/l?cid={click_id}"

[[links]]
code = "house"
program = "shop"
destination = "https://shop.example/h?cid={click_id}"

[[links]]
code = "jp"
program = "other"
affiliate = "leo"
destination = "https://jp.example/?cid={click_id}"
"#;

async fn app_with(extra: &str) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, format!("{CATALOG}\n{extra}")).unwrap();
    let geo = shared_data().join("geoip");
    let app = TestApp::start_with(|c| {
        c.catalog = Some(path.clone());
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.geoip = vec![geo.join("GeoIP2-City-Test.mmdb")];
        c.network = vec![
            geo.join("GeoLite2-ASN-Test.mmdb"),
            geo.join("GeoIP2-Anonymous-IP-Test.mmdb"),
        ];
    })
    .await;
    (app, dir)
}

/// A browser request from `ip` (behind the trusted proxy), with more headers.
fn from(ip: &str, extra: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static(CHROME));
    h.insert("x-forwarded-for", HeaderValue::from_str(ip).unwrap());
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

/// A request, after which the clock moves on 1 ms (so the newest click is
/// the last one made).
async fn go(app: &TestApp, path: &str, headers: HeaderMap) -> reqwest::Response {
    let r = app.get_with(path, headers).await;
    app.clock.set(app.clock.now_micros() + 1000);
    r
}

async fn put_rule(app: &TestApp, id: &str, body: Value) {
    let (s, v) = app
        .api_send(Method::PUT, &format!("/api/v1/rules/{id}"), body)
        .await;
    assert_eq!(s, 200, "rule {id}: {v}");
}

/// The newest click of `link`: its verdict (`null` when clean).
async fn last_verdict(app: &TestApp, link: &str) -> Value {
    app.clicks(link).await[0]["verdict"].clone()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Today's report totals (the day of NOON, UTC).
async fn totals(app: &TestApp) -> Value {
    let (s, v) = app
        .api_get("/api/v1/reports?from=2026-11-20&to=2026-11-20&group_by=day")
        .await;
    assert_eq!(s, 200, "{v}");
    v["totals"].clone()
}

#[tokio::test]
async fn every_click_rule_trips_above_its_line_and_not_below() {
    let (app, _d) = app_with("").await;
    put_rule(
        &app,
        "flood",
        json!({"check": "visitor_velocity", "action": "reject", "limit": 3, "window": "60s", "program": "shop", "affiliate": "mia"}),
    )
    .await;
    put_rule(
        &app,
        "geo",
        json!({"check": "countries", "action": "reject", "block": ["SE"], "program": "shop"}),
    )
    .await;
    put_rule(
        &app,
        "spam",
        json!({"check": "referrers", "action": "flag", "block": ["spam.example"], "affiliate": "leo"}),
    )
    .await;
    put_rule(
        &app,
        "ppc",
        json!({"check": "paid_search", "action": "reject", "program": "shop"}),
    )
    .await;
    put_rule(&app, "dc", json!({"check": "hosting", "action": "block"})).await;
    put_rule(
        &app,
        "vpn",
        json!({"check": "anonymous", "action": "reject", "kinds": ["vpn", "tor"]}),
    )
    .await;
    let gb = "2.2.3.4";

    // Velocity: three clicks in a minute pass, the fourth is invalid, and is
    // still redirected to the merchant.
    for i in 0..3 {
        app.clock.set(NOON + i * 10_000_000);
        let r = go(&app, "/r/mia", from(gb, &[])).await;
        assert_eq!(r.status().as_u16(), 302);
        assert!(last_verdict(&app, "mia").await.is_null());
    }
    app.clock.set(NOON + 30_000_000);
    let r = go(&app, "/r/mia", from(gb, &[])).await;
    assert!(
        location(&r).starts_with("https://shop.example/?cid="),
        "{}",
        location(&r)
    );
    let v = last_verdict(&app, "mia").await;
    assert_eq!(v["rule"], "flood");
    assert_eq!(v["action"], "reject");
    assert_eq!(
        v["reason"],
        "4 clicks from this visitor on this link in 1 min; limit 3"
    );
    assert_eq!(app.clicks("mia").await[0]["invalid_reason"], "flood");
    // Rejected clicks count too; once the window has moved past the first
    // three, the visitor is back under the limit.
    app.clock.set(NOON + 81_000_000);
    go(&app, "/r/mia", from(gb, &[])).await;
    assert!(last_verdict(&app, "mia").await.is_null());

    // Countries: SE is blocked for the program, US is not.
    go(&app, "/r/leo", from("89.160.20.112", &[])).await;
    let v = last_verdict(&app, "leo").await;
    assert_eq!(
        (v["rule"].as_str(), v["reason"].as_str()),
        (Some("geo"), Some("country SE is blocked for this program"))
    );
    go(&app, "/r/leo", from("216.160.83.56", &[])).await;
    assert!(last_verdict(&app, "leo").await.is_null());

    // Referrers: a subdomain of a blocked host is flagged (kept, valid).
    go(
        &app,
        "/r/leo",
        from(gb, &[("referer", "https://www.spam.example/top10?x=1")]),
    )
    .await;
    let v = last_verdict(&app, "leo").await;
    assert_eq!(
        (v["action"].as_str(), v["reason"].as_str()),
        (Some("flag"), Some("referrer www.spam.example is blocked"))
    );
    assert!(app.clicks("leo").await[0]["invalid_reason"].is_null());
    go(
        &app,
        "/r/leo",
        from("216.160.83.57", &[("referer", "https://notspam.example/")]),
    )
    .await;
    assert!(last_verdict(&app, "leo").await.is_null());

    // Paid search: a gclid on an affiliate link, not on the merchant's own.
    go(&app, "/r/leo?gclid=abc&src=x", from("216.160.83.58", &[])).await;
    let v = last_verdict(&app, "leo").await;
    assert_eq!(
        v["reason"],
        "paid-search click id gclid on an affiliate link; this program forbids PPC"
    );
    go(&app, "/r/house?gclid=abc", from("216.160.83.58", &[])).await;
    assert!(last_verdict(&app, "house").await.is_null());
    go(&app, "/r/leo?utm_source=news", from("216.160.83.59", &[])).await;
    assert!(last_verdict(&app, "leo").await.is_null());

    // Hosting (AS15169 in the ASN test file) is blocked: the program's
    // fallback, no attribution cookie. A residential network passes.
    let r = go(&app, "/r/leo", from("1.0.0.1", &[])).await;
    assert_eq!(location(&r), "https://shop.example/sorry");
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("cw_at_"))
    );
    let v = last_verdict(&app, "leo").await;
    assert_eq!(
        (v["rule"].as_str(), v["action"].as_str()),
        (Some("dc"), Some("block"))
    );
    assert_eq!(v["reason"], "from a hosting network: AS15169 Google Inc.");
    let r = go(&app, "/r/leo", from("1.128.0.1", &[])).await;
    assert!(location(&r).starts_with("https://shop.example/l?cid="));
    assert!(last_verdict(&app, "leo").await.is_null());

    // Anonymous: a VPN address is rejected; a hosting-provider-only address
    // is not what this rule (vpn, tor) looks for.
    go(&app, "/r/leo", from("1.2.0.1", &[])).await;
    assert_eq!(
        last_verdict(&app, "leo").await["reason"],
        "from a VPN (anonymous-IP database)"
    );

    // The report counts what the rules made invalid: flood, geo, ppc, dc,
    // vpn; the flag is not invalid.
    let t = totals(&app).await;
    assert_eq!(t["invalid_clicks"], 5, "{t}");
    assert_eq!(t["gross_clicks"], 15, "{t}");
    assert_eq!(t["clicks"], 10, "{t}");
    // And by rule: each rule's clicks, the flag counted as a click.
    let (s, r) = app
        .api_get("/api/v1/reports?from=2026-11-20&to=2026-11-20&group_by=rule,verdict")
        .await;
    assert_eq!(s, 200, "{r}");
    let by: std::collections::BTreeMap<String, (i64, i64)> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                format!(
                    "{}/{}",
                    row["rule"].as_str().unwrap_or("-"),
                    row["verdict"].as_str().unwrap_or("-")
                ),
                (
                    row["invalid_clicks"].as_i64().unwrap(),
                    row["clicks"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(by["flood/reject"], (1, 0), "{r}");
    assert_eq!(by["dc/block"], (1, 0), "{r}");
    assert_eq!(by["spam/flag"], (0, 1), "{r}");
    assert_eq!(by["-/-"], (0, 9), "{r}");
}

#[tokio::test]
async fn excluded_traffic_is_known_by_hash_only_and_counted_invalid() {
    let (app, _d) = app_with("").await;
    let (s, e) = app
        .api_send(
            Method::POST,
            "/api/v1/exclusions",
            json!({"ip": "203.0.113.7", "label": "office"}),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    assert!(
        !e.to_string().contains("203.0.113.7"),
        "the address is never shown: {e}"
    );
    go(&app, "/r/leo", from("203.0.113.7", &[])).await;
    assert_eq!(
        last_verdict(&app, "leo").await["reason"],
        "excluded internal traffic (office)"
    );
    go(&app, "/r/leo", from("203.0.113.8", &[])).await;
    assert!(last_verdict(&app, "leo").await.is_null());

    // A browser: the link the API answers sets the cookie; its clicks are
    // excluded from any address.
    let (s, b) = app
        .api_send(
            Method::POST,
            "/api/v1/exclusions",
            json!({"browser": true, "label": "proofreading"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let r = app
        .client
        .get(app.url(b["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("cw_ex="), "{cookie}");
    go(
        &app,
        "/go?id=leo&src=article",
        from("198.51.100.1", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(
        last_verdict(&app, "leo").await["reason"],
        "excluded internal traffic (proofreading)"
    );
    // A made-up token sets nothing.
    let r = app
        .client
        .get(app.url("/exclude?t=made-up"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().get("set-cookie").is_none());

    // Nothing in the database holds the address.
    let db = std::fs::read(app.data_dir().join("data/clickward.db")).unwrap();
    assert!(!db.windows(11).any(|w| w == b"203.0.113.7"));
    // Bad entries are refused by name and change nothing.
    for bad in [
        json!({"ip": "203.0.113"}),
        json!({"label": "x"}),
        json!({"ip": "1.1.1.1", "browser": true}),
    ] {
        let (s, v) = app
            .api_send(Method::POST, "/api/v1/exclusions", bad.clone())
            .await;
        assert_eq!(s, 422, "{bad}: {v}");
    }
    let (s, v) = app
        .api_send(
            Method::POST,
            "/api/v1/exclusions",
            json!({"ip": "203.0.113.7", "label": "again"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (_, list) = app.api_get("/api/v1/exclusions").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(totals(&app).await["invalid_clicks"], 2);
}

async fn click_id(app: &TestApp, link: &str, ip: &str) -> String {
    let r = go(app, &format!("/r/{link}"), from(ip, &[])).await;
    location(&r).rsplit("cid=").next().unwrap().to_owned()
}

async fn postback(app: &TestApp, query: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(&format!("/postback?token=tok-shop&{query}")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn conversion_rules_reject_hold_and_flag_with_their_reasons() {
    let (app, _d) = app_with("").await;
    put_rule(
        &app,
        "fast",
        json!({"check": "ctit", "action": "reject", "min": "10s", "program": "shop"}),
    )
    .await;
    put_rule(
        &app,
        "dup",
        json!({"check": "duplicate_ip", "action": "hold", "limit": 1, "window": "24h"}),
    )
    .await;
    put_rule(
        &app,
        "geo",
        json!({"check": "geo_mismatch", "action": "flag"}),
    )
    .await;

    // CTIT: 3 s after the click is refused (422, stored rejected, a retry
    // gets the same answer); 10 s passes.
    let fast = click_id(&app, "mia", "2.2.3.12").await;
    app.clock.set(NOON + 3_000_000);
    let (s, v) = postback(&app, &format!("click_id={fast}&order_id=o1&amount=50.00")).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["rule"], "fast");
    assert_eq!(v["reason"], "converted 3 s after the click; minimum 10 s");
    assert_eq!(v["conversion"]["status"], "rejected");
    let (s2, v2) = postback(&app, &format!("click_id={fast}&order_id=o1&amount=50.00")).await;
    assert_eq!((s2, &v2["reason"]), (422, &v["reason"]));
    let ok = click_id(&app, "mia", "2.2.3.13").await;
    app.clock.set(NOON + 13_000_000);
    let (s, v) = postback(
        &app,
        &format!("click_id={ok}&order_id=o2&amount=50.00&ip=2.2.3.12"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["conversion"]["verdict"].is_null(), "{v}");

    // Duplicate buyer address for one affiliate within 24 h: held, with the
    // sentence; another affiliate's buyer at that address is not.
    let again = click_id(&app, "mia", "2.2.3.14").await;
    app.clock.set(NOON + 30_000_000);
    let (s, v) = postback(
        &app,
        &format!("click_id={again}&order_id=o3&amount=20.00&ip=2.2.3.12"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["held"], true);
    assert_eq!(v["conversion"]["verdict"]["rule"], "dup");
    assert_eq!(
        v["conversion"]["verdict"]["reason"],
        "2 conversions of this affiliate from this buyer's address in 1 d; limit 1"
    );
    let leo = click_id(&app, "leo", "2.2.3.15").await;
    app.clock.set(NOON + 45_000_000);
    let (s, v) = postback(
        &app,
        &format!("click_id={leo}&order_id=o4&amount=20.00&ip=2.2.3.12"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["held"], false);

    // Geo mismatch: a GB click bought from SE is flagged.
    let gb = click_id(&app, "leo", "2.2.3.16").await;
    app.clock.set(NOON + 60_000_000);
    let (s, v) = postback(
        &app,
        &format!("click_id={gb}&order_id=o5&amount=20.00&ip=89.160.20.112"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["conversion"]["verdict"]["reason"],
        "click from GB, conversion from SE"
    );
    // A buyer address that is not one is a clear 400, and nothing is stored.
    let (s, v) = postback(
        &app,
        &format!("click_id={gb}&order_id=o6&amount=1.00&ip=nope"),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (_, list) = app.api_get("/api/v1/conversions?limit=100").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    // The rejected one left no commission behind.
    let (_, r) = app
        .api_get("/api/v1/reports?from=2026-11-20&to=2026-11-20&group_by=day")
        .await;
    assert_eq!(r["totals"]["conversions"], 4, "{r}");
}

#[tokio::test]
async fn self_referral_and_conversion_rate_outliers_hold_new_conversions() {
    let (app, _d) = app_with("").await;
    put_rule(
        &app,
        "self",
        json!({"check": "self_referral", "action": "reject"}),
    )
    .await;
    put_rule(
        &app,
        "cr",
        json!({"check": "conversion_rate", "action": "hold", "min_clicks": 3, "max_rate": "50%", "window": "30d"}),
    )
    .await;
    // Mia's own address: her clicks are flagged, her conversion refused.
    let (s, _) = app
        .api_send(
            Method::POST,
            "/api/v1/exclusions",
            json!({"ip": "198.51.100.20", "label": "mia at home", "affiliate": "mia"}),
        )
        .await;
    assert_eq!(s, 201);
    let own = click_id(&app, "mia", "198.51.100.20").await;
    let v = last_verdict(&app, "mia").await;
    assert_eq!(
        (v["rule"].as_str(), v["action"].as_str()),
        (Some("self_referral"), Some("flag"))
    );
    app.clock.set(NOON + 60_000_000);
    let (s, v) = postback(&app, &format!("click_id={own}&order_id=s1&amount=10.00")).await;
    assert_eq!((s, v["rule"].as_str()), (422, Some("self")), "{v}");
    // On Leo's link her address is just a visitor.
    let hers = click_id(&app, "leo", "198.51.100.20").await;
    assert!(last_verdict(&app, "leo").await.is_null());

    // Leo: 4 human clicks so far; conversions 1 and 2 are within 50%, the
    // third (3 of 4 = 75%) is held.
    let mut ids = vec![hers];
    for i in 0..3 {
        ids.push(click_id(&app, "leo", &format!("216.160.83.{}", 60 + i)).await);
    }
    for (n, id) in ids.iter().take(3).enumerate() {
        app.clock
            .set(NOON + 120_000_000 + i64::try_from(n).unwrap() * 1_000_000);
        let (s, v) = postback(&app, &format!("click_id={id}&order_id=cr{n}&amount=10.00")).await;
        assert_eq!(s, 201, "{v}");
        let held = v["conversion"]["held"].as_bool().unwrap();
        assert_eq!(held, n == 2, "conversion {n}: {v}");
        if held {
            assert_eq!(
                v["conversion"]["verdict"]["reason"],
                "conversion rate 75.00% (3 of 4 clicks in 30 d); maximum 50.00%"
            );
        }
    }
}

#[tokio::test]
async fn fifty_concurrent_postbacks_against_a_cap_of_ten_accept_exactly_ten() {
    let (app, _d) = app_with(
        r#"
[[rules]]
id = "daily"
check = "cap"
action = "reject"
metric = "conversions"
period = "day"
limit = 10
program = "shop"
"#,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(click_id(&app, "mia", &format!("10.1.{}.{}", i / 200, i % 200 + 1)).await);
    }
    app.clock.set(NOON + 60_000_000);
    let answers = futures::future::join_all(ids.iter().enumerate().map(|(n, id)| {
        let q = format!("click_id={id}&order_id=c{n}&amount=10.00");
        let app = &app;
        async move { postback(app, &q).await }
    }))
    .await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let capped: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 422)
        .map(|(_, v)| v)
        .collect();
    assert_eq!((created, capped.len()), (10, 40), "{answers:?}");
    assert!(capped.iter().all(|v| v["status"] == "cap_reached"));
    assert_eq!(
        capped[0]["reason"],
        "cap reached: 10 conversions a day for this program (10 of 10 used)"
    );
    // A new day in Tokyo (the program's zone) opens the cap again: NOON is
    // 21:00 there, so three hours on is tomorrow.
    let late = click_id(&app, "mia", "10.9.9.9").await;
    app.clock.set(NOON + 3 * 3_600_000_000 + 1);
    let (s, v) = postback(
        &app,
        &format!("click_id={late}&order_id=next-day&amount=10.00"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn a_bad_rule_is_refused_by_name_and_changes_nothing() {
    let (app, _d) = app_with("").await;
    for (body, words) in [
        (
            json!({"check": "visitor_velocity", "action": "reject", "limit": 5, "window": "soon"}),
            "window",
        ),
        (
            json!({"check": "countries", "action": "reject", "block": ["Germany"]}),
            "GERMANY",
        ),
        (
            json!({"check": "cap", "action": "reject", "metric": "conversions", "limit": -1}),
            "limit",
        ),
        (json!({"check": "ctit", "action": "block"}), "action"),
        (
            json!({"check": "excluded", "action": "reject", "program": "nope"}),
            "program",
        ),
        (
            json!({"check": "hosting", "action": "flag", "colour": "red"}),
            "colour",
        ),
        (
            json!({"check": "cap", "action": "reject", "metric": "payout", "limit": "1.5.0", "program": "shop"}),
            "limit",
        ),
    ] {
        let (s, v) = app
            .api_send(Method::PUT, "/api/v1/rules/bad", body.clone())
            .await;
        assert!(s == 400 || s == 422, "{body}: {s} {v}");
        let text = v.to_string();
        assert!(
            text.contains(words) && text.contains("bad"),
            "{body}: {text}"
        );
    }
    let (_, rules) = app.api_get("/api/v1/rules").await;
    assert_eq!(rules["items"], json!([]));

    // A catalogue with a bad rule does not start, naming it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(
        &path,
        format!("{CATALOG}\n[[rules]]\nid = \"flood\"\ncheck = \"visitor_velocity\"\naction = \"reject\"\nlimit = 5\n"),
    )
    .unwrap();
    let mut cfg = clickward::process::config::Config {
        data_dir: dir.path().join("data"),
        catalog: Some(path),
        ..Default::default()
    };
    cfg.init = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = clickward::Server::start(
        cfg.validate().unwrap(),
        listener,
        std::sync::Arc::new(clickward::clock::ManualClock::new(NOON)),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("flood") && err.contains("window"), "{err}");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_never_refuse_a_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, CATALOG).unwrap();
    let app = TestApp::start_with(|c| {
        c.catalog = Some(path.clone());
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.limits.tracking = "2/min".into();
        c.limits.postback = "3/min".into();
        c.limits.pixel = "1/min".into();
        c.limits.api = "20/min".into();
    })
    .await;
    // Tracking: the third click of a minute is still redirected, recorded
    // invalid with the reason; another client is not affected.
    for i in 0..3 {
        let r = go(&app, "/r/leo", from("198.51.100.7", &[])).await;
        assert_eq!(r.status().as_u16(), 302, "click {i}");
    }
    let v = last_verdict(&app, "leo").await;
    assert_eq!(v["rule"], "rate_limited");
    assert_eq!(
        v["reason"],
        "more clicks from this client than the limit of 2/min"
    );
    go(&app, "/r/leo", from("198.51.100.8", &[])).await;
    assert!(last_verdict(&app, "leo").await.is_null());

    // Postbacks: 3 a minute from one sender, the fourth is 429 with
    // Retry-After, and nothing is recorded for it.
    let id = click_id(&app, "mia", "198.51.100.9").await;
    let mut statuses = Vec::new();
    for n in 0..4 {
        let r = app
            .client
            .get(app.url(&format!(
                "/postback?token=tok-shop&click_id={id}&order_id=rl{n}&amount=10.00"
            )))
            .header("x-forwarded-for", "192.0.2.1")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status().as_u16() == 429 {
            let after: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&after), "{after}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["status"], "rate_limited");
        }
    }
    assert_eq!(statuses, [201, 201, 201, 429]);
    let r = app
        .client
        .get(app.url(&format!(
            "/postback?token=tok-shop&click_id={id}&order_id=rl9&amount=10.00"
        )))
        .header("x-forwarded-for", "192.0.2.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "another sender has its own limit");
    let (_, list) = app.api_get("/api/v1/conversions?limit=100").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 4);

    // The pixel still answers its GIF when limited.
    for limited in [false, true] {
        let r = app
            .client
            .get(app.url("/pixel.gif?order_id=p1"))
            .header("x-forwarded-for", "192.0.2.3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16() == 429, limited);
        assert_eq!(r.headers()["content-type"], "image/gif");
        assert_eq!(r.headers().contains_key("retry-after"), limited);
    }

    // The API: 20 a minute from the admin's address.
    let mut api_refused = 0;
    for _ in 0..25 {
        api_refused += usize::from(app.api_get("/api/v1/rules").await.0 == 429);
    }
    // The test's earlier reads took 3 of the 20.
    assert_eq!(api_refused, 8);
    let text = app.metrics_text().await;
    for endpoint in ["tracking", "postback", "pixel", "api"] {
        assert!(
            text.contains(&format!(
                "clickward_rate_limited_total{{endpoint=\"{endpoint}\"}}"
            )),
            "{endpoint}"
        );
    }

    // The Live page shows each limit and how often it was reached here,
    // and the rate-limited click as invalid with its rule.
    crate::dashboard::add_user(&app, "ops", None, Some("ops password 1234")).await;
    let cookie = crate::dashboard::sign_in(&app, "ops", "ops password 1234").await;
    let live = crate::dashboard::get(&app, &cookie, "/dashboard/live")
        .await
        .text()
        .await
        .unwrap();
    assert!(live.contains("Limits are per node"), "{live}");
    for row in [
        "<td>tracking</td><td>2/min</td><td class=\"num\">1</td>".to_owned(),
        "<td>postback</td><td>3/min</td><td class=\"num\">1</td>".to_owned(),
        "<td>pixel</td><td>1/min</td><td class=\"num\">1</td>".to_owned(),
        "<td>login</td><td>30/min</td><td class=\"num\">0</td>".to_owned(),
        format!("<td>api</td><td>20/min</td><td class=\"num\">{api_refused}</td>"),
    ] {
        assert!(live.contains(&row), "{row} not in the Live page");
    }
    assert!(
        live.contains("<td>invalid</td><td>rate_limited: more clicks from this client"),
        "the limited click is shown invalid with its rule"
    );
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn rescore_judges_history_under_todays_rules_dry_run_then_apply_idempotent() {
    let (app, _d) = app_with("").await;
    // History made before any rule: a visitor clicking five times in a
    // minute, a click from SE, a conversion three seconds after its click.
    for _ in 0..5 {
        go(&app, "/r/mia", from("2.2.3.4", &[])).await;
        app.clock.set(app.clock.now_micros() + 5_000_000);
    }
    go(&app, "/r/leo", from("89.160.20.112", &[])).await;
    let id = click_id(&app, "leo", "216.160.83.56").await;
    app.clock.set(app.clock.now_micros() + 3_000_000);
    let (s, v) = postback(&app, &format!("click_id={id}&order_id=r1&amount=10.00")).await;
    assert_eq!(s, 201, "{v}");
    let conversion = v["conversion"]["conversion_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(totals(&app).await["invalid_clicks"], 0);

    put_rule(
        &app,
        "flood",
        json!({"check": "visitor_velocity", "action": "reject", "limit": 3, "window": "60s"}),
    )
    .await;
    put_rule(
        &app,
        "geo",
        json!({"check": "countries", "action": "reject", "block": ["SE"]}),
    )
    .await;
    put_rule(
        &app,
        "fast",
        json!({"check": "ctit", "action": "reject", "min": "10s"}),
    )
    .await;
    let data = app.data_dir().join("data");
    let args = ["fraud", "rescore", "--from", "2026-11-20"];

    // Dry run: says what would change, changes nothing.
    let o = clickward(&data, &args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("dry run: 7 clicks read"), "{out}");
    assert!(
        out.contains("3 would change; 1 conversions read, 1 would change"),
        "{out}"
    );
    for line in ["click       flood", "click       geo", "conversion  fast"] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(
        out.contains("5 clicks from this visitor on this link in 1 min; limit 3"),
        "{out}"
    );
    assert_eq!(totals(&app).await["invalid_clicks"], 0);

    // Apply: verdicts, the report and the conversion's status follow.
    let mut applied = args.to_vec();
    applied.push("--apply");
    let o = clickward(&data, &applied);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("3 changed; 1 conversions read, 1 changed"),
        "{}",
        text(&o)
    );
    let t = totals(&app).await;
    assert_eq!(
        (t["invalid_clicks"].as_i64(), t["gross_clicks"].as_i64()),
        (Some(3), Some(7)),
        "{t}"
    );
    assert_eq!(app.clicks("mia").await[0]["verdict"]["rule"], "flood");
    let (_, c) = app
        .api_get(&format!("/api/v1/conversions/{conversion}"))
        .await;
    assert_eq!(c["status"], "rejected", "{c}");
    assert_eq!(
        c["verdict"]["reason"],
        "converted 3 s after the click; minimum 10 s"
    );
    assert_eq!(t["conversions"], 0, "{t}");

    // Again: nothing to do.
    let o = clickward(&data, &applied);
    assert!(
        text(&o).contains("0 changed; 1 conversions read, 0 changed"),
        "{}",
        text(&o)
    );

    // A rule removed: its verdicts go (the rejected conversion stays
    // rejected: the lifecycle does not un-reject).
    let (s, _) = app
        .api_send(Method::DELETE, "/api/v1/rules/flood", json!({}))
        .await;
    assert_eq!(s, 204);
    let o = clickward(&data, &applied);
    assert!(text(&o).contains("2 changed"), "{}", text(&o));
    assert_eq!(totals(&app).await["invalid_clicks"], 1);
}

#[tokio::test]
async fn clicks_beyond_a_hard_click_cap_go_to_the_fallback_and_count_invalid() {
    let (app, _d) = app_with(
        r#"
[[rules]]
id = "daily-clicks"
check = "cap"
action = "block"
metric = "clicks"
period = "day"
limit = 3
program = "shop"
"#,
    )
    .await;
    let mut places = Vec::new();
    for i in 0..5 {
        let r = go(&app, "/r/mia", from(&format!("216.160.83.{}", 56 + i), &[])).await;
        places.push(location(&r));
        if i == 1 {
            // A bot in between takes nothing from the cap.
            app.get_ua("/r/mia", "Googlebot/2.1 (+http://www.google.com/bot.html)")
                .await;
        }
    }
    assert!(
        places[..3]
            .iter()
            .all(|p| p.starts_with("https://shop.example/?cid=")),
        "{places:?}"
    );
    assert!(
        places[3..]
            .iter()
            .all(|p| p == "https://shop.example/sorry"),
        "{places:?}"
    );
    let v = last_verdict(&app, "mia").await;
    assert_eq!(
        (v["rule"].as_str(), v["action"].as_str()),
        (Some("daily-clicks"), Some("block"))
    );
    assert_eq!(
        v["reason"],
        "cap reached: 3 clicks a day for this program (3 of 3 used)"
    );
    let t = totals(&app).await;
    assert_eq!(
        (t["clicks"].as_i64(), t["invalid_clicks"].as_i64()),
        (Some(3), Some(2)),
        "{t}"
    );
    // Another program is not capped.
    let r = go(&app, "/r/jp", from("216.160.83.70", &[])).await;
    assert!(location(&r).starts_with("https://jp.example/"));
}
