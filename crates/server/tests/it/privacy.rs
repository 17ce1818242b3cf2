//! No raw IP reaches the disk.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};

use crate::helpers::*;

const TEST_IPS: [&str; 3] = ["203.0.113.77", "198.51.100.23", "2001:db8:ab::42"];

fn needles(ip: &str) -> Vec<Vec<u8>> {
    let parsed: std::net::IpAddr = ip.parse().unwrap();
    let mut out = vec![ip.as_bytes().to_vec()];
    match parsed {
        std::net::IpAddr::V4(v4) => {
            out.push(v4.octets().to_vec());
            out.push(v4.to_ipv6_mapped().octets().to_vec());
        }
        std::net::IpAddr::V6(v6) => out.push(v6.octets().to_vec()),
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn the_data_directory_holds_no_test_ip_in_any_form() {
    let mut app = TestApp::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await;
    for ip in TEST_IPS {
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static(IPHONE));
        h.insert("x-forwarded-for", HeaderValue::from_str(ip).unwrap());
        h.insert(
            "referer",
            HeaderValue::from_str(&format!("https://blog.example/?ip={ip}")).unwrap(),
        );
        assert_eq!(
            app.get_with("/ref/solare?src=test", h)
                .await
                .status()
                .as_u16(),
            302
        );
    }
    // The same for history brought in through the importer.
    let csv = app.data_dir().join("history.csv");
    let mut text = String::from("timestamp,code,src,user_agent,ip,referrer\n");
    for ip in TEST_IPS {
        text.push_str(&format!(
            "2026-11-19T10:00:00Z,solare,old,\"{IPHONE}\",{ip},https://x.example/\n"
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let summary = clickward::cli::import::import_csv(
        &app.store,
        &clickward_enrich::ua::UaParser::new(100).unwrap(),
        None,
        &csv,
        86_400_000_000,
        &clickward::process::secrets::import_key(&app.data_dir().join("data/secrets")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(summary.imported, 3);
    std::fs::remove_file(&csv).unwrap();
    app.stop().await;

    let mut all = Vec::new();
    files(&app.data_dir().join("data"), &mut all);
    assert!(all.iter().any(|p| p.ends_with("clickward.db")));
    for path in all {
        let bytes = std::fs::read(&path).unwrap();
        for ip in TEST_IPS {
            for needle in needles(ip) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{} holds test IP {ip}",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn secrets_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::start().await;
    app.get_ua("/r/solare", CHROME).await;
    let secrets = app.data_dir().join("data/secrets");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&app.data_dir().join("data")), 0o700);
    assert_eq!(mode(&secrets.join("cookie.key")), 0o600);
    assert_eq!(mode(&secrets.join("visitor-salts.json")), 0o600);
    assert_eq!(std::fs::read(secrets.join("cookie.key")).unwrap().len(), 64);
}

const JANE_EMAIL: &str = "jane.doe@example.com";
const JANE_ORDER: &str = "ORD-JANE-77";

/// Whether any file under `dir` holds one of `needles`.
fn holders(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut all = Vec::new();
    files(dir, &mut all);
    let mut out = Vec::new();
    for path in all {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_slice()) {
                out.push(format!(
                    "{} holds {:?}",
                    path.display(),
                    String::from_utf8_lossy(n)
                ));
            }
        }
    }
    out
}

fn cw_vid(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find_map(|v| {
            v.strip_prefix("cw_vid=")
                .map(|rest| rest.split(';').next().unwrap().to_owned())
        })
        .expect("a visitor cookie")
}

/// The scenario of the issue: a visitor with clicks on two links, a
/// conversion, a webhook and a postback delivery; erased by their cookie;
/// then nothing on disk links back to them, every total holds, the
/// receivers are told, and a second erasure is done with nothing to do.
#[tokio::test]
async fn an_erased_visitor_leaves_nothing_behind_and_the_numbers_hold() {
    use crate::webhooks::{Receiver, add, app_with, convert};
    use reqwest::Method;
    use serde_json::{Value, json};
    let Some(rx) = Receiver::start() else { return };
    let (app, _d) = app_with(|_| {}).await;
    let (_, secret) = add(
        &app,
        "/api/v1/webhooks",
        json!({"url": format!("{}/hook", rx.base), "events": ["conversion.*", "privacy.erasure"]}),
    )
    .await;
    rx.trust(&secret).await;
    add(
        &app,
        "/api/v1/postbacks",
        json!({"url": format!("{}/pb?cid={{click_id}}&o={{order_id}}&s={{sub1}}", rx.base),
               "affiliate": "solare", "events": ["conversion.*"]}),
    )
    .await;

    // Jane: two links, her e-mail in sub1, her cookie on the second click.
    let first = app
        .client
        .get(app.url("/r/s1?src=review&sub1=jane.doe%40example.com"))
        .header("user-agent", CHROME)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 302);
    let cookie = cw_vid(&first);
    let cid = location(&first).rsplit("cid=").next().unwrap().to_owned();
    let second = app
        .client
        .get(app.url("/r/b1?src=sidebar"))
        .header("user-agent", CHROME)
        .header("cookie", format!("cw_vid={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status().as_u16(), 302);
    // Max: another browser, untouched by Jane's erasure.
    let max = app.get_ua("/r/s1?src=review&sub1=max", IPHONE).await;
    assert_eq!(max.status().as_u16(), 302);
    convert(&app, &cid, JANE_ORDER).await;
    eventually(Duration::from_secs(20), "both deliveries done", || async {
        let (_, v) = app.api_get("/api/v1/deliveries").await;
        let rows = v["items"].as_array().unwrap().clone();
        (rows.len() == 2 && rows.iter().all(|r| r["status"] == "delivered")).then_some(())
    })
    .await;
    let keys: Vec<String> = app
        .clicks("s1")
        .await
        .iter()
        .chain(app.clicks("b1").await.iter())
        .map(|c| c["visitor_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    let jane_key = keys
        .iter()
        .find(|k| keys.iter().filter(|o| o == k).count() == 2)
        .expect("Jane's two clicks share a key")
        .clone();
    let totals = || async {
        let (_, clicks) = app
            .api_get("/api/v1/reports?from=2026-11-20&to=2026-11-20&group_by=link,src")
            .await;
        let (_, conv) = app
            .api_get("/api/v1/reports?from=2026-11-20&to=2026-11-20&group_by=link&kind=conversions")
            .await;
        (clicks, conv)
    };
    let before = totals().await;
    let (s, export) = app
        .api_get(&format!("/api/v1/privacy/export?visitor={cookie}"))
        .await;
    assert_eq!(s, 200, "{export}");
    assert_eq!(export["clicks"].as_array().unwrap().len(), 2, "{export}");
    assert_eq!(export["conversions"][0]["order_id"], JANE_ORDER);
    assert_eq!(export["deliveries"].as_array().unwrap().len(), 2);

    let (s, r) = app
        .api_send(
            Method::POST,
            "/api/v1/privacy/erasures",
            json!({"visitor": cookie}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "done");
    let c = &r["counts"];
    assert_eq!(
        (c["clicks"].as_u64(), c["conversions"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(c["deliveries"], 2, "{r}");
    assert!(c["delivery_attempts"].as_u64().unwrap() >= 2, "{r}");
    assert!(c["outbox"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["id"].as_str().unwrap().starts_with("era_"));

    // Nothing on disk names Jane (the WAL is folded in and truncated).
    let key_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&jane_key[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let needles = vec![
        cookie.as_bytes().to_vec(),
        jane_key.as_bytes().to_vec(),
        key_bytes,
        JANE_ORDER.as_bytes().to_vec(),
        JANE_EMAIL.as_bytes().to_vec(),
        b"jane.doe%40example.com".to_vec(),
    ];
    let data = app.data_dir().join("data");
    eventually(Duration::from_secs(20), "no file to name Jane", || async {
        holders(&data, &needles).is_empty().then_some(())
    })
    .await;
    assert_eq!(totals().await, before, "every total holds");
    let (_, list) = app.api_get("/api/v1/conversions?limit=10").await;
    assert_eq!(list["items"][0]["amount_minor"], 8000, "{list}");
    assert!(
        list["items"][0]["order_id"]
            .as_str()
            .unwrap()
            .starts_with("erased:")
    );
    // Max keeps his key and sub-id.
    let still = app.clicks("s1").await;
    assert!(
        still
            .iter()
            .any(|c| c["subs"][0] == "max" && c["visitor_key"] != jane_key.as_str())
    );

    // The merchant's receiver hears of it, with ids only.
    let told = eventually(
        Duration::from_secs(20),
        "privacy.erasure delivered",
        || async {
            rx.at("/hook").await.into_iter().find_map(|h| {
                let body: Value = serde_json::from_str(h["body"].as_str().unwrap()).unwrap();
                (body["type"] == "privacy.erasure").then_some(body)
            })
        },
    )
    .await;
    assert_eq!(told["data"]["erasure"]["id"], r["id"]);
    assert_eq!(
        told["data"]["erasure"]["click_ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(!told.to_string().contains(JANE_ORDER));

    // Twice: done again, nothing left to change.
    let (s, again) = app
        .api_send(
            Method::POST,
            "/api/v1/privacy/erasures",
            json!({"visitor": cookie}),
        )
        .await;
    assert_eq!((s, &again["status"]), (201, &json!("done")), "{again}");
    assert!(
        again["counts"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == 0),
        "{again}"
    );
    let (_, receipts) = app.api_get("/api/v1/privacy/erasures").await;
    assert_eq!(receipts["items"].as_array().unwrap().len(), 2);
    let text = receipts.to_string();
    assert!(
        !text.contains(&cookie) && !text.contains(&jane_key),
        "{text}"
    );
    let (s, one) = app
        .api_get(&format!(
            "/api/v1/privacy/erasures/{}",
            r["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!((s, &one["counts"]), (200, &r["counts"]));

    // Bad input changes nothing and says what is wrong.
    for (body, needle) in [
        (json!({}), "exactly one"),
        (json!({"visitor": "AAAAforgedBBBB"}), "visitor:"),
        (json!({"click_id": "nope", "sub": "max"}), "exactly one"),
        (json!({"visitor_key": "xyz"}), "visitor_key:"),
    ] {
        let (s, v) = app
            .api_send(Method::POST, "/api/v1/privacy/erasures", body.clone())
            .await;
        assert_eq!(s, 422, "{body}: {v}");
        assert!(v.to_string().contains(needle), "{body}: {v}");
    }
    let (s, _) = app
        .api_get("/api/v1/privacy/export?visitor=x&color=red")
        .await;
    assert_eq!(s, 400, "an unknown key is refused");
    let (_, receipts) = app.api_get("/api/v1/privacy/erasures").await;
    assert_eq!(
        receipts["items"].as_array().unwrap().len(),
        2,
        "nothing was stored"
    );
    assert_eq!(app.clicks("s1").await.len(), 2);

    // The dashboard's settings list the receipts.
    crate::dashboard::add_user(&app, "dpo", None, Some("dpo password 1234")).await;
    let session = crate::dashboard::sign_in(&app, "dpo", "dpo password 1234").await;
    let html = crate::dashboard::get(&app, &session, "/dashboard/settings")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(r["id"].as_str().unwrap()), "{html}");
    assert!(
        html.contains("2 clicks, 1 conversions, 2 deliveries"),
        "{html}"
    );
    assert!(!html.contains(&jane_key));
}

/// A batch of erasures killed (-9) half way is finished on restart: every
/// receipt ends done, none twice, the matching click anonymised.
#[tokio::test]
async fn a_batch_of_erasures_killed_half_way_is_finished_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, base) = spawn_serve(&data, &seed_catalog(), &[]).await;
    let c = client();
    let r = c
        .get(format!("{base}/ref/solare?src=t&sub2=crash%40example.com"))
        .header("user-agent", CHROME)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let key = clickward(&data, &["key", "create", "--scope", "admin"]);
    let key = text(&key)
        .split_whitespace()
        .find(|w| w.starts_with("cwk_"))
        .unwrap()
        .to_owned();
    // The real subject last, behind 3,000 that match nothing.
    let mut batch: Vec<serde_json::Value> = (0..3000)
        .map(|i| serde_json::json!({"sub": format!("nobody-{i}")}))
        .collect();
    batch.push(serde_json::json!({"sub": "crash@example.com"}));
    let r = c
        .post(format!("{base}/api/v1/privacy/erasures"))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    let ids: Vec<String> = v["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3001);
    let last = ids.last().unwrap().clone();
    let get = |base: String, id: String| {
        let (c, key) = (c.clone(), key.clone());
        async move {
            c.get(format!("{base}/api/v1/privacy/erasures/{id}"))
                .bearer_auth(key)
                .send()
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()
        }
    };
    let before = get(base.clone(), last.clone()).await.unwrap();
    assert_eq!(before["status"], "received", "the kill must land mid-batch");
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, base) = spawn_serve(&data, &seed_catalog(), &[]).await;
    let done = eventually(Duration::from_secs(60), "the batch to finish", || {
        let (get, base, last) = (&get, base.clone(), last.clone());
        async move {
            let v = get(base, last).await?;
            (v["status"] == "done").then_some(v)
        }
    })
    .await;
    assert_eq!(done["counts"]["clicks"], 1, "{done}");
    assert_eq!(done["attempts"], 1, "run once: {done}");
    let r: serde_json::Value = c
        .get(format!("{base}/api/v1/privacy/erasures?limit=1000"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "done"),
        "{r}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

const CONSENT_CATALOG: &str = r#"
[[programs]]
slug = "quiet"
currency = "USD"
commission = { default = { type = "share", bps = 1000 } }
postback_token = "tok-quiet"
consent = "cookieless"

[[programs]]
slug = "plain"
postback_token = "tok-plain"

[[affiliates]]
slug = "solare"

[[links]]
code = "q1"
program = "quiet"
affiliate = "solare"
destination = "https://quiet.example/?cid={click_id}"

[[links]]
code = "p1"
program = "plain"
affiliate = "solare"
destination = "https://plain.example/?cid={click_id}"
"#;

async fn consent_app(
    tweak: impl FnOnce(&mut clickward::process::config::Config),
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.toml");
    std::fs::write(&path, CONSENT_CATALOG).unwrap();
    let app = TestApp::start_with(|c| {
        c.catalog = Some(path.clone());
        tweak(c);
    })
    .await;
    (app, dir)
}

/// Names of the cookies a response sets.
fn cookies_set(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split('=').next().unwrap().to_owned())
        .collect()
}

async fn visit(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.client.get(app.url(path)).header("user-agent", CHROME);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302, "{path} still redirects");
    r
}

/// Global Privacy Control: a cookieless program's visitor who sends
/// `Sec-GPC: 1` gets no cookie, is still redirected, recorded (once per
/// double tap, by the daily key) and attributed by click id; everyone else
/// keeps cookies; a bot with GPC is a bot.
#[tokio::test]
async fn gpc_visitors_of_a_cookieless_program_get_no_cookie_and_still_count() {
    let (app, _d) = consent_app(|_| {}).await;
    let gpc = [("sec-gpc", "1")];
    let first = visit(&app, "/r/q1?sub1=a", &gpc).await;
    assert!(cookies_set(&first).is_empty(), "{:?}", cookies_set(&first));
    let cid = location(&first).rsplit("cid=").next().unwrap().to_owned();
    // A double tap a second later: same daily key, counted once.
    app.clock.set(NOON + 1_000_000);
    let second = visit(&app, "/r/q1?sub1=a", &gpc).await;
    assert!(cookies_set(&second).is_empty());
    let clicks = app.clicks("q1").await;
    assert_eq!(clicks.len(), 2);
    assert!(
        clicks.iter().all(|c| c["consent"] == "cookieless"),
        "{clicks:?}"
    );
    assert_eq!(clicks.iter().filter(|c| c["unique"] == true).count(), 1);
    // Attribution by click id in a server-to-server postback.
    let r = app
        .client
        .get(app.url(&format!(
            "/postback?token=tok-quiet&click_id={cid}&order_id=Q-1&amount=10.00"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["conversion"]["link"], "q1", "{v}");

    // Without the signal, the same program sets its cookies.
    app.clock.set(NOON + 2_000_000);
    let no_signal = visit(&app, "/r/q1", &[]).await;
    let set = cookies_set(&no_signal);
    assert!(
        set.contains(&"cw_vid".to_owned()) && set.iter().any(|c| c.starts_with("cw_at_")),
        "{set:?}"
    );
    assert_eq!(app.clicks("q1").await[0]["consent"], "cookie");
    // A program in cookie mode keeps cookies for GPC visitors (today's
    // behaviour), and DNT means nothing unless configured.
    let plain = visit(&app, "/r/p1", &gpc).await;
    assert!(cookies_set(&plain).contains(&"cw_vid".to_owned()));
    let dnt = visit(&app, "/r/q1", &[("dnt", "1")]).await;
    assert!(!cookies_set(&dnt).is_empty());
    // A bot sending GPC: a bot, no cookie, recorded with the mode that applied.
    app.clock.set(NOON + 3_000_000);
    let r = app
        .client
        .head(app.url("/r/q1"))
        .header("user-agent", CHROME)
        .header("sec-gpc", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert!(cookies_set(&r).is_empty());
    let newest = &app.clicks("q1").await[0];
    assert_eq!(
        (&newest["bot_reason"], &newest["consent"]),
        (&serde_json::json!("head"), &serde_json::json!("cookieless"))
    );
    // A GPC visitor's old cookie is not read in cookieless mode: a new
    // key, not the cookie's.
    let cookie = no_signal
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("cw_vid=")
                .map(|r| r.split(';').next().unwrap().to_owned())
        })
        .unwrap();
    app.clock.set(NOON + 4_000_000);
    let with_cookie = app
        .client
        .get(app.url("/r/q1"))
        .header("user-agent", IPHONE)
        .header("sec-gpc", "1")
        .header("cookie", format!("cw_vid={cookie}"))
        .send()
        .await
        .unwrap();
    assert!(cookies_set(&with_cookie).is_empty());
    let clicks = app.clicks("q1").await;
    let by_cookie = clicks.iter().find(|c| c["consent"] == "cookie").unwrap();
    assert_ne!(
        clicks[0]["visitor_key"], by_cookie["visitor_key"],
        "the cookie was not used"
    );
}

/// `[privacy] consent_mode` overrides every program; `honor_dnt` makes DNT
/// count; the merchant's banner cookie grants or denies whatever the
/// browser says.
#[tokio::test]
async fn the_global_override_dnt_and_the_banner_cookie_decide_as_configured() {
    let (app, _d) = consent_app(|c| {
        c.privacy.consent_mode = Some("cookieless".into());
        c.privacy.honor_dnt = true;
        c.privacy.consent_cookie = Some("banner".into());
    })
    .await;
    assert!(cookies_set(&visit(&app, "/r/p1", &[("sec-gpc", "1")]).await).is_empty());
    assert!(cookies_set(&visit(&app, "/r/p1", &[("dnt", "1")]).await).is_empty());
    assert!(!cookies_set(&visit(&app, "/r/p1", &[]).await).is_empty());
    let denied = visit(&app, "/r/p1", &[("cookie", "banner=denied")]).await;
    assert!(cookies_set(&denied).is_empty());
    let granted = visit(
        &app,
        "/r/q1",
        &[("sec-gpc", "1"), ("cookie", "banner=granted")],
    )
    .await;
    assert!(cookies_set(&granted).contains(&"cw_vid".to_owned()));
    let unknown = visit(
        &app,
        "/r/q1",
        &[("sec-gpc", "1"), ("cookie", "banner=maybe")],
    )
    .await;
    assert!(
        cookies_set(&unknown).is_empty(),
        "an unknown value decides nothing"
    );

    // A typo in the mode stops the start with the key named.
    let mut cfg = clickward::process::config::Config::default();
    cfg.privacy.consent_mode = Some("cookies".into());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("privacy.consent_mode"), "{e}");
}
