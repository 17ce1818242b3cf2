//! Unique clicks: double taps, midnight, the visitor cookie.

use reqwest::header::{HeaderMap, HeaderValue};

use crate::helpers::*;

const SEC: i64 = 1_000_000;

fn uniques(clicks: &[serde_json::Value]) -> usize {
    clicks.iter().filter(|c| c["unique"] == true).count()
}

#[tokio::test]
async fn a_double_tap_counts_once() {
    let app = TestApp::start().await;
    app.get_ua("/ref/wholefoods", IPHONE).await;
    app.clock.set(NOON + 2 * SEC);
    app.get_ua("/ref/wholefoods", IPHONE).await;
    let clicks = app.clicks("wholefoods").await;
    assert_eq!(clicks.len(), 2);
    assert_eq!(uniques(&clicks), 1);
    // Another browser on the same IP is another visitor.
    app.get_ua("/ref/wholefoods", CHROME).await;
    assert_eq!(uniques(&app.clicks("wholefoods").await), 2);
}

#[tokio::test]
async fn a_double_tap_across_midnight_utc_counts_once() {
    let app = TestApp::start().await;
    let midnight = NOON + 12 * 3600 * SEC;
    app.clock.set(midnight - SEC);
    app.get_ua("/ref/wholefoods", IPHONE).await;
    app.clock.set(midnight + SEC);
    app.get_ua("/ref/wholefoods", IPHONE).await;
    let clicks = app.clicks("wholefoods").await;
    assert_eq!(clicks.len(), 2);
    assert_eq!(
        uniques(&clicks),
        1,
        "the salt changed at midnight but the visitor did not"
    );
    assert_ne!(clicks[0]["visitor_key"], clicks[1]["visitor_key"]);
}

#[tokio::test]
async fn the_window_is_rolling_from_the_last_unique_click() {
    let app = TestApp::start().await;
    app.get_ua("/ref/wholefoods", IPHONE).await;
    app.clock.set(NOON + 23 * 3600 * SEC);
    app.get_ua("/ref/wholefoods", IPHONE).await;
    app.clock.set(NOON + 24 * 3600 * SEC);
    app.get_ua("/ref/wholefoods", IPHONE).await;
    let clicks = app.clicks("wholefoods").await;
    let flags: Vec<bool> = clicks.iter().rev().map(|c| c["unique"] == true).collect();
    assert_eq!(flags, vec![true, false, true]);
}

#[tokio::test]
async fn the_visitor_cookie_identifies_the_visitor_and_a_forged_one_is_ignored() {
    let app = TestApp::start().await;
    let first = app.get_ua("/ref/wholefoods", IPHONE).await;
    let set_cookie = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("cw_vid="))
        .expect("a visitor cookie");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // Same browser, new network (another IP through a trusted proxy would
    // differ too): the cookie keeps it one visitor, a day later still.
    app.clock.set(NOON + 13 * 3600 * SEC);
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static(IPHONE));
    h.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    let again = app.get_with("/ref/wholefoods", h).await;
    assert!(
        !again
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("cw_vid=")),
        "a valid visitor cookie is not reissued"
    );
    let clicks = app.clicks("wholefoods").await;
    assert_eq!(uniques(&clicks), 1);
    assert_eq!(clicks[0]["visitor_key"], clicks[1]["visitor_key"]);

    // A tampered cookie is not trusted: the click falls back to IP + UA.
    let before = app.metric("clickward_cookie_rejected_total").await;
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static(CHROME));
    h.insert("cookie", HeaderValue::from_static("cw_vid=AAAAforgedBBBB"));
    let r = app.get_with("/ref/wholefoods", h).await;
    assert_eq!(r.status().as_u16(), 302);
    assert!(r.headers().get("set-cookie").is_some());
    assert_eq!(
        app.metric("clickward_cookie_rejected_total").await,
        before + 1
    );
    assert_eq!(uniques(&app.clicks("wholefoods").await), 2);
}
