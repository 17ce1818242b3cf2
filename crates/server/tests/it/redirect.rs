//! Tracking routes: status codes, headers, macros, unknown codes, bad input.

use reqwest::header::{HeaderMap, HeaderValue};

use crate::helpers::*;

#[tokio::test]
async fn all_three_routes_redirect_with_302_and_no_store() {
    let app = TestApp::start().await;
    for path in ["/r/solare", "/ref/solare", "/go?id=solare"] {
        let r = app.get_ua(path, CHROME).await;
        assert_eq!(r.status().as_u16(), 302, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
        assert!(
            location(&r).starts_with("https://solare.example/?"),
            "{path}"
        );
    }
    assert_eq!(app.clicks("solare").await.len(), 3);
}

#[tokio::test]
async fn destination_gets_macros_and_utm_defaults() {
    let app = TestApp::start().await;
    let r = app
        .get_ua("/ref/solare?src=qiita%20sim%26x&sub1=a", CHROME)
        .await;
    let loc = location(&r);
    assert!(loc.contains("utm_source=gourmet_guide"), "{loc}");
    assert!(loc.contains("utm_medium=referral"), "{loc}");
    assert!(loc.contains("utm_content=qiita%20sim%26x"), "{loc}");
    // {click_id} is the id of the stored click.
    let r = app
        .get_ua("/go?id=amazon_kindle&src=qiita_sim_article", CHROME)
        .await;
    let loc = location(&r);
    let id = loc
        .rsplit("ascsubtag=")
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(id.len(), 26, "{loc}");
    let (s, click) = app.api_get(&format!("/api/v1/clicks/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(click["link"], "amazon_kindle");
    assert_eq!(click["src"], "qiita_sim_article");
    assert_eq!(click["affiliate"], "techblog");
    assert_eq!(click["browser"], "Chrome");
    assert_eq!(click["device"], "desktop");
}

#[tokio::test]
async fn query_keys_never_choose_the_host() {
    let app = TestApp::start().await;
    let r = app
        .get_ua(
            "/go?id=rakuten_sim&src=https://evil.example/&url=https://evil.example",
            CHROME,
        )
        .await;
    let loc = location(&r);
    assert!(
        loc.starts_with("https://network.mobile.rakuten.co.jp/?cid="),
        "{loc}"
    );
    assert!(loc.contains("src=https%3A%2F%2Fevil.example%2F"), "{loc}");
}

#[tokio::test]
async fn per_link_and_global_307() {
    let app = TestApp::start().await;
    assert_eq!(
        app.get_ua("/go?id=a8_nisa", CHROME).await.status().as_u16(),
        307
    );
    assert_eq!(
        app.get_ua("/ref/solare", CHROME).await.status().as_u16(),
        302
    );
    let app = TestApp::start_with(|c| c.redirect_status = 307).await;
    assert_eq!(
        app.get_ua("/ref/solare", CHROME).await.status().as_u16(),
        307
    );
}

#[tokio::test]
async fn unknown_and_malformed_codes_get_the_404_page_and_record_nothing() {
    let app = TestApp::start().await;
    let long = "x".repeat(10 * 1024);
    for path in [
        "/r/nope".to_owned(),
        "/ref/nope".to_owned(),
        "/go?id=nope".to_owned(),
        "/go".to_owned(),
        format!("/r/{long}"),
        "/r/%ff%fe".to_owned(),
        "/r/%zz".to_owned(),
        "/r/sol%61re%00".to_owned(),
    ] {
        let r = app.get_ua(&path, CHROME).await;
        assert_eq!(r.status().as_u16(), 404, "{}", &path[..path.len().min(40)]);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body = r.text().await.unwrap_or_default();
        assert!(body.contains("Link not found"), "{body}");
    }
    let (_, all) = app.api_get("/api/v1/clicks?limit=1000").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn fallback_url_replaces_the_404_page() {
    let app = TestApp::start_with(|c| c.fallback_url = Some("https://home.example/".into())).await;
    let r = app.get_ua("/r/nope", CHROME).await;
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(location(&r), "https://home.example/");
}

#[tokio::test]
async fn bad_query_encoding_is_recorded_not_refused() {
    let app = TestApp::start().await;
    let r = app
        .get_ua("/r/solare?src=%ff%fe%zz&sub1=%E6%97%A5", CHROME)
        .await;
    assert_eq!(r.status().as_u16(), 302);
    let c = &app.clicks("solare").await[0];
    assert_eq!(c["subs"][0], "日");
    assert!(
        c["src"].as_str().unwrap_or_default().contains('\u{fffd}'),
        "{c}"
    );
}

#[tokio::test]
async fn huge_headers_are_answered_and_bounded() {
    let app = TestApp::start().await;
    let big = "a".repeat(64 * 1024);
    let mut h = HeaderMap::new();
    h.insert(
        "user-agent",
        HeaderValue::from_str(&format!("{CHROME} {big}")).unwrap(),
    );
    h.insert(
        "referer",
        HeaderValue::from_str(&format!("https://blog.example/{big}")).unwrap(),
    );
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!("cw_vid={big}")).unwrap(),
    );
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_str(&format!("{big}, 1.2.3.4")).unwrap(),
    );
    let r = app
        .get_with(&format!("/r/solare?src={}", &big[..16 * 1024]), h)
        .await;
    assert_eq!(r.status().as_u16(), 302);
    let c = &app.clicks("solare").await[0];
    assert!(c["referrer"].as_str().unwrap_or_default().len() <= 512);
    assert!(c["src"].as_str().unwrap_or_default().len() <= 255);
}

#[tokio::test]
async fn disabled_links_stop_redirecting_at_once() {
    let app = TestApp::start().await;
    assert_eq!(
        app.get_ua("/ref/boardbrew", CHROME).await.status().as_u16(),
        302
    );
    let (s, v) = app
        .api_send(
            reqwest::Method::POST,
            "/api/v1/links/boardbrew/disable",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["redirects"], false);
    assert_eq!(
        app.get_ua("/ref/boardbrew", CHROME).await.status().as_u16(),
        404
    );
    // Disabling the affiliate stops every one of its links.
    app.api_send(
        reqwest::Method::POST,
        "/api/v1/links/boardbrew/enable",
        serde_json::json!({}),
    )
    .await;
    app.api_send(
        reqwest::Method::POST,
        "/api/v1/affiliates/gourmet_guide/disable",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        app.get_ua("/ref/boardbrew", CHROME).await.status().as_u16(),
        404
    );
    assert_eq!(
        app.get_ua("/ref/solare", CHROME).await.status().as_u16(),
        404
    );
    assert_eq!(
        app.get_ua("/go?id=amazon_kindle", CHROME)
            .await
            .status()
            .as_u16(),
        302
    );
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let app = TestApp::start().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, v) = app.api_get("/readyz").await;
    assert_eq!(s, 200);
    assert_eq!(v["ready"], true);
    assert_eq!(v["links"], 10);
    app.get_ua("/r/solare", CHROME).await;
    app.get_ua("/r/nope", CHROME).await;
    let text = app.metrics_text().await;
    for name in [
        "clickward_clicks_total{outcome=\"recorded\"}",
        "clickward_clicks_total{outcome=\"not_found\"}",
        "clickward_redirect_duration_seconds_bucket",
        "clickward_ingest_batch_size_bucket",
        "clickward_ingest_queue_depth",
        "clickward_unique_clicks_total",
        "clickward_ingest_lag_seconds",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
}
