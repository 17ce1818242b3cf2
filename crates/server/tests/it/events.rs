//! Live events over real HTTP (SSE): order, resume by Last-Event-ID, signed
//! URLs for browsers.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

#[derive(Debug)]
struct SseEvent {
    id: Option<u64>,
    kind: String,
    data: Value,
}

/// Reads events from an open SSE response until `want` non-comment events
/// arrived, or panics at the deadline.
async fn read_events(resp: &mut reqwest::Response, want: usize) -> Vec<SseEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out with {} of {want} events: {out:?}",
            out.len()
        );
        let Ok(Ok(Some(chunk))) = tokio::time::timeout(left, resp.chunk()).await else {
            panic!(
                "stream ended or timed out with {} of {want} events",
                out.len()
            );
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::from("message"), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !data.is_empty() {
                out.push(SseEvent {
                    id,
                    kind,
                    data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                });
            }
        }
    }
    out
}

async fn open(app: &TestApp, path: &str, last: Option<u64>, bearer: bool) -> reqwest::Response {
    let mut r = app.client.get(app.url(path));
    if bearer {
        r = r.bearer_auth(&app.admin_key);
    }
    if let Some(l) = last {
        r = r.header("last-event-id", l.to_string());
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn clicks_stream_in_order_and_resume_without_gaps() {
    let mut app = TestApp::start().await;
    let mut live = open(&app, "/api/v1/events", None, true).await;
    assert_eq!(live.status().as_u16(), 200);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    for (i, src) in ["a", "b", "c"].iter().enumerate() {
        app.clock.set(NOON + i64::try_from(i).unwrap() * 1_000_000);
        app.get_ua(&format!("/ref/solare?src={src}"), IPHONE).await;
    }
    app.get_ua("/ref/solare?src=d", "Twitterbot/1.0").await;
    let events = read_events(&mut live, 4).await;
    let srcs: Vec<&str> = events
        .iter()
        .map(|e| e.data["src"].as_str().unwrap())
        .collect();
    assert_eq!(srcs, vec!["a", "b", "c", "d"]);
    assert!(events.iter().all(|e| e.kind == "click"));
    let ids: Vec<u64> = events.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let first = &events[0].data;
    assert_eq!(first["link"], "solare");
    assert_eq!(first["device"], "mobile");
    assert_eq!(first["outcome"], "recorded");
    assert!(
        first["redirect_us"].as_u64().is_some_and(|us| us > 0),
        "{first}"
    );
    assert!(first.get("ip").is_none());
    assert_eq!(events[3].data["bot_reason"], "preview_fetcher");

    // Reconnect after the first: the rest comes again, in order, no gap.
    let mut resumed = open(&app, "/api/v1/events", Some(ids[0]), true).await;
    let again = read_events(&mut resumed, 3).await;
    assert_eq!(
        again.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        ids[1..].to_vec()
    );
    // And it goes on live.
    app.get_ua("/ref/solare?src=e", IPHONE).await;
    let next = read_events(&mut resumed, 1).await;
    assert_eq!(next[0].id, Some(ids[3] + 1));
    assert_eq!(next[0].data["src"], "e");
    // Open streams do not hold up a graceful shutdown.
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("shutdown with open event streams");
    drop((live, resumed));
}

#[tokio::test]
async fn browsers_use_a_short_lived_signed_url() {
    let app = TestApp::start().await;
    assert_eq!(
        open(&app, "/api/v1/events", None, false)
            .await
            .status()
            .as_u16(),
        401
    );
    let (s, v) = app.api_get("/api/v1/events/url").await;
    assert_eq!(s, 200);
    let url = v["url"].as_str().unwrap().to_owned();
    let mut live = open(&app, &url, None, false).await;
    assert_eq!(live.status().as_u16(), 200);
    app.get_ua("/go?id=rakuten_sim&src=x", IPHONE).await;
    let e = read_events(&mut live, 1).await;
    assert_eq!(e[0].data["link"], "rakuten_sim");
    let forged = url.replace("sig=", "sig=00");
    assert_eq!(
        open(&app, &forged, None, false).await.status().as_u16(),
        401
    );
    // Expired: the clock moved past the five minutes.
    app.clock.set(NOON + 301 * 1_000_000);
    assert_eq!(open(&app, &url, None, false).await.status().as_u16(), 401);
}

#[tokio::test]
async fn a_stream_resumed_after_a_restart_gets_a_gap_then_live_events() {
    let before = TestApp::start().await;
    let mut r = open(&before, "/api/v1/events", None, true).await;
    for _ in 0..3 {
        before.get_ua("/r/solare?src=before", IPHONE).await;
    }
    let seen = read_events(&mut r, 3).await;
    let last = seen.last().and_then(|e| e.id).expect("an id");
    drop(r);
    // A restarted server (or another node) never issued `last`.
    let after = TestApp::start().await;
    let mut r = open(&after, "/api/v1/events", Some(last), true).await;
    after.get_ua("/r/solare?src=after", IPHONE).await;
    let got = read_events(&mut r, 2).await;
    assert_eq!(got[0].kind, "gap", "{got:?}");
    assert!(got[0].data["missed"].is_null(), "{got:?}");
    assert_eq!(got[1].kind, "click", "{got:?}");
    assert_eq!(got[1].data["src"], "after", "{got:?}");
    assert!(
        got[1].id.expect("id") > last,
        "ids must grow across restarts: {got:?}"
    );
}

/// Waits (at most 10 s) for an open SSE response to end; `false` when it
/// is still open then.
async fn ends(resp: &mut reqwest::Response) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn streams_end_when_their_key_is_revoked_or_their_url_expires() {
    use clickward_store::prelude::*;
    let app = TestApp::start().await;
    let (key, hash, prefix) = clickward::services::keys::new_key();
    let made = app
        .store
        .create_api_key(hash, prefix, clickward_store::KeyScope::Read, None)
        .await
        .unwrap();
    let with_key = |path: &str| app.client.get(app.url(path)).bearer_auth(&key).send();
    let mut by_key = with_key("/api/v1/events").await.unwrap();
    assert_eq!(by_key.status().as_u16(), 200);
    let v: Value = with_key("/api/v1/events/url")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = v["url"].as_str().unwrap().to_owned();
    let mut by_url = open(&app, &url, None, false).await;
    assert_eq!(by_url.status().as_u16(), 200);
    app.get_ua("/r/solare?src=live", IPHONE).await;
    assert_eq!(read_events(&mut by_key, 1).await[0].data["src"], "live");
    assert_eq!(read_events(&mut by_url, 1).await[0].data["src"], "live");
    // Revoked: both streams end, and the URL it made opens nothing more.
    app.store.revoke_api_key(made.id).await.unwrap();
    assert!(ends(&mut by_key).await, "the key's stream outlived the key");
    assert!(ends(&mut by_url).await, "the URL's stream outlived its key");
    let r = open(&app, &url, None, false).await;
    assert_eq!(r.status().as_u16(), 401);
    // A URL's stream ends when the URL expires.
    let (_, v) = app.api_get("/api/v1/events/url").await;
    let url = v["url"].as_str().unwrap().to_owned();
    let mut by_url = open(&app, &url, None, false).await;
    assert_eq!(by_url.status().as_u16(), 200);
    app.clock.set(NOON + 301 * 1_000_000);
    assert!(ends(&mut by_url).await, "the stream outlived its URL");
    // The admin's own bearer stream goes on.
    let mut admin = open(&app, "/api/v1/events", None, true).await;
    app.get_ua("/r/solare?src=later", IPHONE).await;
    assert_eq!(read_events(&mut admin, 1).await[0].data["src"], "later");
}
