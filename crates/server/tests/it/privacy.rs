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
        let rows = v["deliveries"].as_array().unwrap().clone();
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
    assert_eq!(list[0]["amount_minor"], 8000, "{list}");
    assert!(list[0]["order_id"].as_str().unwrap().starts_with("erased:"));
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
    assert_eq!(receipts.as_array().unwrap().len(), 2);
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
    assert_eq!(receipts.as_array().unwrap().len(), 2, "nothing was stored");
    assert_eq!(app.clicks("s1").await.len(), 2);
}

/// An erasure accepted in a batch survives kill -9 before it ran and is
/// finished at the next start.
#[tokio::test]
async fn an_erasure_received_before_a_crash_is_finished_on_restart() {
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
    let r = c
        .post(format!("{base}/api/v1/privacy/erasures"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"batch": [{"sub": "crash@example.com"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["receipts"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["receipts"][0]["status"], "received");
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, base) = spawn_serve(&data, &seed_catalog(), &[]).await;
    let done = eventually(Duration::from_secs(30), "the erasure to finish", || {
        let (c, url, key) = (
            c.clone(),
            format!("{base}/api/v1/privacy/erasures/{id}"),
            key.clone(),
        );
        async move {
            let v: serde_json::Value = c
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["status"] == "done").then_some(v)
        }
    })
    .await;
    assert_eq!(done["counts"]["clicks"], 1, "{done}");
    child.kill().unwrap();
    child.wait().unwrap();
}
