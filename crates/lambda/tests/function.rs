//! The tracker as a Lambda function, fed API Gateway HTTP API (payload 2.0)
//! events as the runtime hands them over (`lambda_http::request::from_str`,
//! the runtime's own parsing): redirects with the visitor cookie, a double
//! tap counted once, HEAD and a prefetch counted as bots, a postback
//! replayed 100 times recorded once, and every click committed before its
//! answer. Real user agents from ../shared/data.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use clickward::clock::SystemClock;
use clickward::process::app::Function;
use clickward_lambda::{Env, service};
use clickward_store::prelude::*;
use clickward_store::{SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use tower::ServiceExt;

const CATALOG: &str = r#"
[[programs]]
slug = "shop"
currency = "USD"
postback_token = "tok-shop"
commission = { default = { type = "share", bps = 1000 } }

[[affiliates]]
slug = "blog"

[[links]]
code = "summer"
program = "shop"
affiliate = "blog"
destination = "https://shop.example/sale?cid={click_id}"
"#;

fn shared_data() -> PathBuf {
    if let Ok(dir) = std::env::var("CLICKWARD_SHARED_DATA") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("../shared/data"))
        .find(|p| p.join("user-agents").is_dir())
        .expect("../shared/data not found beside the repository")
}

/// The first browser of the top-mobile corpus.
fn mobile_browser() -> String {
    let path = shared_data().join("user-agents/top-mobile.json");
    let list: Vec<String> =
        serde_json::from_slice(&std::fs::read(&path).expect("top-mobile.json")).expect("a list");
    list.into_iter().next().expect("one user agent")
}

struct Lambda {
    router: axum::Router,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

async fn function() -> Lambda {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("links.toml");
    std::fs::write(&catalog, CATALOG).unwrap();
    let env = Env {
        data_dir: Some(dir.path().join("data")),
        catalog: Some(catalog),
        viewer_header: Some("cloudfront-viewer-address".into()),
        ..Env::default()
    };
    let cfg = env.config().unwrap().validate().unwrap();
    let f = Function::start(cfg, Arc::new(SystemClock)).await.unwrap();
    let store = SqliteStore::open(
        &dir.path().join("data/clickward.db"),
        &SqliteOptions::default(),
    )
    .unwrap();
    Lambda {
        router: service(f.router, env.viewer_header),
        store,
        _dir: dir,
    }
}

/// An API Gateway v2 event as the service sends it for `method path?query`.
fn event(method: &str, path: &str, query: &str, headers: Value, cookies: &[String]) -> String {
    let mut h = json!({
        "host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "x-forwarded-proto": "https",
    });
    for (k, v) in headers.as_object().unwrap() {
        h[k] = v.clone();
    }
    let mut e = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": h,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "130.176.0.10",
                "userAgent": headers["user-agent"].as_str().unwrap_or("")
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "06/Dec/2026:22:00:00 +0000",
            "timeEpoch": 1_796_594_400_000_i64
        },
        "isBase64Encoded": false
    });
    if !cookies.is_empty() {
        e["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        let params: serde_json::Map<String, Value> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect();
        e["queryStringParameters"] = Value::Object(params);
    }
    e.to_string()
}

/// Runs one event through the function: status, headers, body.
async fn invoke(l: &Lambda, event: &str) -> (u16, axum::http::HeaderMap, String) {
    let req = lambda_http::request::from_str(event).expect("an API Gateway v2 event");
    let (parts, body) = req.into_parts();
    let bytes = body.to_vec();
    let req = axum::http::Request::from_parts(parts, Body::from(bytes));
    let r = l.router.clone().oneshot(req).await.expect("infallible");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn set_cookies(h: &axum::http::HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_link_redirects_and_its_click_is_stored_before_the_answer() {
    let l = function().await;
    let ua = mobile_browser();
    let viewer = json!({"user-agent": ua, "cloudfront-viewer-address": "198.51.100.7:46532"});

    let (status, headers, _) = invoke(
        &l,
        &event("GET", "/r/summer", "src=newsletter", viewer.clone(), &[]),
    )
    .await;
    assert_eq!(status, 302);
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://shop.example/sale?cid="),
        "{location}"
    );
    let cookies = set_cookies(&headers);
    assert!(
        cookies.iter().any(|c| c.starts_with("cw_vid=")),
        "{cookies:?}"
    );
    // Committed when the answer left: nothing may run after it.
    let clicks = l.store.list_clicks(None, 100).await.unwrap();
    assert_eq!(
        clicks.len(),
        1,
        "the click is in the store with its redirect"
    );
    let first = &clicks[0];
    assert_eq!(first.src.as_deref(), Some("newsletter"));
    assert!(first.unique && first.bot_reason.is_none(), "{first:?}");
    assert!(
        location.ends_with(&first.click_id.to_string()),
        "{location}"
    );

    // A double tap: the same visitor, cookie and all, a moment later.
    let (status, _, _) = invoke(
        &l,
        &event(
            "GET",
            "/r/summer",
            "src=newsletter",
            viewer.clone(),
            &cookies,
        ),
    )
    .await;
    assert_eq!(status, 302);
    let clicks = l.store.list_clicks(None, 100).await.unwrap();
    assert_eq!(clicks.len(), 2, "both taps are recorded");
    assert_eq!(
        clicks.iter().filter(|c| c.unique).count(),
        1,
        "counted once"
    );

    // The same browser from another viewer address is another visitor only
    // by its cookie: without it, the address decides (CloudFront's edge
    // address, 130.176.0.10, is the same for both).
    let other = json!({"user-agent": ua, "cloudfront-viewer-address": "2001:db8::7:443"});
    invoke(&l, &event("GET", "/r/summer", "", other, &[])).await;
    let clicks = l.store.list_clicks(None, 100).await.unwrap();
    assert_eq!(
        clicks.iter().filter(|c| c.unique).count(),
        2,
        "another viewer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_and_prefetches_are_counted_as_bots() {
    let l = function().await;
    let ua = mobile_browser();
    let (status, _, _) = invoke(
        &l,
        &event("HEAD", "/r/summer", "", json!({"user-agent": ua}), &[]),
    )
    .await;
    assert_eq!(status, 302);
    let prefetch = json!({"user-agent": ua, "sec-purpose": "prefetch"});
    let (status, _, _) = invoke(&l, &event("GET", "/ref/summer", "", prefetch, &[])).await;
    assert_eq!(status, 302);
    let clicks = l.store.list_clicks(None, 100).await.unwrap();
    assert_eq!(clicks.len(), 2);
    for c in &clicks {
        assert!(c.bot_reason.is_some() && !c.unique, "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postback_replayed_a_hundred_times_is_one_conversion() {
    let l = function().await;
    let ua = mobile_browser();
    let (_, headers, _) = invoke(
        &l,
        &event(
            "GET",
            "/go",
            "id=summer&src=feed",
            json!({"user-agent": ua}),
            &[],
        ),
    )
    .await;
    let location = headers["location"].to_str().unwrap().to_owned();
    let click = location.rsplit('=').next().unwrap().to_owned();
    let query = format!("click_id={click}&order_id=ORD-9&amount=80.00&token=tok-shop");
    let merchant = json!({"user-agent": "shop-backend/2.1"});
    let (first, _, body) = invoke(
        &l,
        &event("GET", "/postback", &query, merchant.clone(), &[]),
    )
    .await;
    assert_eq!(first, 201, "{body}");
    for _ in 0..99 {
        let (again, _, body) = invoke(
            &l,
            &event("GET", "/postback", &query, merchant.clone(), &[]),
        )
        .await;
        assert_eq!(again, 200, "a replay: {body}");
        assert!(body.contains("duplicate"), "{body}");
    }
    let all = l
        .store
        .list_conversions(clickward_store::ConversionFilter {
            status: None,
            affiliate: None,
            before: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "one conversion for 100 postbacks");
    assert_eq!(all[0].amount_minor, Some(8000), "80.00 USD in cents");
}
