//! The admin API: keys and scopes, CRUD, clicks.

use clickward_store::prelude::*;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn keys_are_required_and_scoped() {
    let app = TestApp::start().await;
    let r = app
        .client
        .get(app.url("/api/v1/links"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = app
        .client
        .get(app.url("/api/v1/links"))
        .bearer_auth("cwk_not_a_key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    let (read_key, hash, prefix) = clickward::services::keys::new_key();
    use clickward_store::prelude::*;
    app.store
        .create_api_key(hash, prefix, clickward_store::KeyScope::Read, None)
        .await
        .unwrap();
    let r = app
        .client
        .get(app.url("/api/v1/links"))
        .bearer_auth(&read_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = app
        .client
        .post(app.url("/api/v1/programs"))
        .bearer_auth(&read_key)
        .json(&json!({"slug": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn programs_affiliates_and_links_round_trip() {
    let app = TestApp::start().await;
    let (s, v) = app
        .api_send(
            Method::POST,
            "/api/v1/programs",
            json!({"slug": "shoes", "name": "Shoe shop"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = app
        .api_send(Method::POST, "/api/v1/programs", json!({"slug": "shoes"}))
        .await;
    assert_eq!(s, 409);
    let (s, v) = app
        .api_send(
            Method::POST,
            "/api/v1/affiliates",
            json!({"slug": "runner_blog"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .api_send(
            Method::POST,
            "/api/v1/links",
            json!({
                "code": "shoes-spring",
                "program": "shoes",
                "affiliate": "runner_blog",
                "destination": "https://shoes.example/spring?cid={click_id}",
                "utm": {"utm_source": "runner_blog", "utm_content": "{sub1}"}
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["redirects"], true);
    assert_eq!(v["tracking_paths"][0], "/r/shoes-spring");
    // It redirects right away.
    let r = app.get_ua("/r/shoes-spring?sub1=hero", CHROME).await;
    assert_eq!(r.status().as_u16(), 302);
    let loc = location(&r);
    assert!(
        loc.starts_with("https://shoes.example/spring?cid="),
        "{loc}"
    );
    assert!(
        loc.ends_with("&utm_content=hero&utm_source=runner_blog"),
        "{loc}"
    );

    // PATCH changes only what it names.
    let (s, v) = app
        .api_send(
            Method::PATCH,
            "/api/v1/links/shoes-spring",
            json!({"redirect": 307}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["redirect"], 307);
    assert_eq!(v["affiliate"], "runner_blog");
    assert_eq!(
        app.get_ua("/r/shoes-spring", CHROME)
            .await
            .status()
            .as_u16(),
        307
    );

    // Bad input is refused with a reason and changes nothing.
    for (body, status) in [
        (json!({"redirect": 301}), 400),
        (json!({"destination": "https://{src}.example/"}), 422),
        (json!({"destination": "javascript:alert(1)"}), 422),
        (json!({"code": "renamed"}), 422),
        (json!({"colour": "red"}), 400),
    ] {
        let (s, v) = app
            .api_send(Method::PATCH, "/api/v1/links/shoes-spring", body.clone())
            .await;
        assert_eq!(s, status, "{body} -> {v}");
        assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    }
    let (_, v) = app.api_get("/api/v1/links/shoes-spring").await;
    assert_eq!(v["redirect"], 307);
    assert_eq!(
        v["destination"],
        "https://shoes.example/spring?cid={click_id}"
    );
    let (s, _) = app
        .api_send(
            Method::POST,
            "/api/v1/links",
            json!({"code": "x", "program": "nope", "destination": "https://a.example/"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app.api_get("/api/v1/links/does-not-exist").await;
    assert_eq!(s, 404);
    let (s, v) = app.api_get("/api/v1/programs").await;
    assert_eq!(s, 200);
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["slug"] == "shoes")
    );
}

#[tokio::test]
async fn clicks_are_listed_newest_first_and_read_by_id() {
    let app = TestApp::start().await;
    for (i, src) in ["a", "b", "c"].iter().enumerate() {
        app.clock.set(NOON + i64::try_from(i).unwrap() * 1_000_000);
        app.get_ua(&format!("/ref/puesto?src={src}"), CHROME).await;
    }
    app.get_ua("/ref/solare", CHROME).await;
    let (s, v) = app.api_get("/api/v1/clicks?link=puesto&limit=2").await;
    assert_eq!(s, 200);
    let srcs: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["src"].as_str().unwrap())
        .collect();
    assert_eq!(srcs, vec!["c", "b"]);
    let id = v["items"][0]["click_id"].as_str().unwrap().to_owned();
    let (s, c) = app.api_get(&format!("/api/v1/clicks/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(c["ts"], NOON + 2_000_000);
    assert!(c.get("ip").is_none(), "a click has no IP field");
    let (s, _) = app
        .api_get("/api/v1/clicks/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await;
    assert_eq!(s, 404);
    let (s, _) = app.api_get("/api/v1/clicks/garbage").await;
    assert_eq!(s, 404);
    let (s, _) = app.api_get("/api/v1/clicks?limit=0").await;
    assert_eq!(s, 400);
    let (s, v) = app.api_get("/api/v1/clicks").await;
    assert_eq!(s, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_program_made_through_the_api_can_take_postbacks_at_once() {
    let app = TestApp::start().await;
    let (s, v) = app
        .api_send(Method::POST, "/api/v1/programs", json!({"slug": "fresh"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let p = app
        .store
        .get_program(clickward_core::id::Slug::parse("fresh").unwrap())
        .await
        .unwrap();
    let token = app
        .store
        .program_settings(p.id)
        .await
        .unwrap()
        .postback_token;
    assert!(
        token.is_some_and(|t| t.len() >= 32),
        "a postback token without a restart"
    );
}

/// Reads every page of `path` (which has its own query), asking for the
/// next page with `cursor`; `between` runs after each page.
async fn every_page(
    app: &TestApp,
    path: &str,
    mut between: impl AsyncFnMut(usize),
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for n in 0.. {
        let (s, v) = app.api_get(&format!("{path}&cursor={cursor}")).await;
        assert_eq!(s, 200, "{v}");
        out.extend(v["items"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
        between(n).await;
        assert!(n < 100, "paging does not end");
    }
    out
}

const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

#[tokio::test]
async fn every_click_is_read_once_page_by_page_while_clicks_come_in() {
    let app = TestApp::start().await;
    for i in 0..25 {
        app.clock.set(NOON + i * 1_000_000);
        app.get_ua(&format!("/r/puesto?src=s{i}"), CHROME).await;
    }
    app.get_ua("/r/solare", GOOGLEBOT).await;
    let ids = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter()
            .map(|c| c["click_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut later = 0;
    // Newest first: clicks that arrive meanwhile are newer than the cursor.
    let newest = every_page(&app, "/api/v1/clicks?limit=7", async |_| {
        later += 1;
        app.clock.set(NOON + (100 + later) * 1_000_000);
        app.get_ua(&format!("/r/puesto?src=late{later}"), CHROME)
            .await;
    })
    .await;
    assert_eq!(newest.len(), 26, "the 26 there when paging began");
    let newest_ids = ids(&newest);
    let mut sorted = newest_ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(newest_ids, sorted, "newest first, no repeats");
    // Oldest first: they come at the end, each once.
    let before = 26 + later;
    let oldest = every_page(&app, "/api/v1/clicks?order=oldest&limit=7", async |n| {
        if n == 0 {
            app.clock.set(NOON + 500 * 1_000_000);
            app.get_ua("/r/puesto?src=during", CHROME).await;
        }
    })
    .await;
    let oldest_ids = ids(&oldest);
    assert_eq!(
        oldest.len() as i64,
        before + 1,
        "every click, the new one last"
    );
    assert_eq!(oldest.last().unwrap()["src"], "during");
    let unique: std::collections::BTreeSet<&String> = oldest_ids.iter().collect();
    assert_eq!(unique.len(), oldest_ids.len());

    // Filters.
    let count = async |q: &str| {
        every_page(
            &app,
            &format!("/api/v1/clicks?limit=1000&{q}"),
            async |_| {},
        )
        .await
        .len()
    };
    assert_eq!(count("link=solare").await, 1);
    assert_eq!(count("bot=true").await, 1);
    assert_eq!(count("bot=false").await as i64, before);
    assert_eq!(
        count("unique=true").await,
        1,
        "one visitor, one unique click"
    );
    assert_eq!(count("program=nope").await, 0);
    assert_eq!(count("verdict=none").await as i64, before + 1);
    assert_eq!(count("verdict=flag").await, 0);
    let from = "2026-11-20T12:00:05Z";
    assert_eq!(
        NOON, 1_795_176_000_000_000,
        "the instant above is NOON + 5 s"
    );
    assert_eq!(
        count(&format!("from={from}&to={}", NOON + 10_000_000)).await,
        5
    );

    // Bad arguments and cursors are refused, naming what is wrong.
    let (_, first) = app.api_get("/api/v1/clicks?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    tampered[2] = if tampered[2] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (_, convs) = app.api_get("/api/v1/links?limit=1").await;
    let other = convs["next_cursor"].as_str().unwrap().to_owned();
    for (q, word) in [
        (format!("cursor={tampered}"), "cursor"),
        (format!("cursor={other}"), "cursor"),
        (format!("order=oldest&cursor={cursor}"), "cursor"),
        ("order=sideways".to_owned(), "order"),
        ("verdict=maybe".to_owned(), "verdict"),
        ("from=yesterday".to_owned(), "from"),
        ("bot=perhaps".to_owned(), "bot"),
        ("limit=10001".to_owned(), "limit"),
        ("offset=10".to_owned(), "offset"),
    ] {
        let (s, v) = app.api_get(&format!("/api/v1/clicks?{q}")).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(v["reason"].as_str().unwrap().contains(word), "{q}: {v}");
    }
    let (s, v) = app
        .api_get(&format!("/api/v1/clicks?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["items"][0]["click_id"], first["items"][0]["click_id"]);
}

#[tokio::test]
async fn every_list_pages_and_refuses_keys_it_does_not_take() {
    let app = TestApp::start().await;
    for i in 0..5 {
        let (s, v) = app
            .api_send(
                Method::POST,
                "/api/v1/affiliates",
                json!({"slug": format!("paged-{i}"), "name": format!("Paged {i}")}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let slugs: Vec<String> = every_page(&app, "/api/v1/affiliates?limit=2", async |_| {})
        .await
        .iter()
        .map(|a| a["slug"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = slugs.clone();
    sorted.sort();
    assert_eq!(slugs, sorted);
    assert!(
        slugs.iter().filter(|s| s.starts_with("paged-")).count() == 5,
        "{slugs:?}"
    );
    for list in [
        "programs",
        "affiliates",
        "links",
        "clicks",
        "conversions",
        "webhooks",
        "postbacks",
        "deliveries",
        "rules",
        "exclusions",
        "payouts",
        "keys",
        "users",
        "privacy/erasures",
    ] {
        let (s, v) = app.api_get(&format!("/api/v1/{list}?limit=1")).await;
        assert_eq!(s, 200, "{list}: {v}");
        assert!(
            v["items"].is_array() && v.get("next_cursor").is_some(),
            "{list}: {v}"
        );
        let (s, v) = app.api_get(&format!("/api/v1/{list}?offset=1")).await;
        assert_eq!(s, 400, "{list}: {v}");
        assert!(
            v["reason"].as_str().unwrap().contains("offset"),
            "{list}: {v}"
        );
    }
    let (s, v) = app.api_get("/api/v1/balances?page=2").await;
    assert_eq!(s, 400, "{v}");
    // Users and keys show no secret.
    let (_, keys) = app.api_get("/api/v1/keys").await;
    assert!(!keys.to_string().contains("hash"), "{keys}");
}

/// The text a PNG QR code holds, read by an independent decoder.
fn read_qr(png: &[u8]) -> Option<String> {
    let mut r = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .ok()?;
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).ok()?;
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    grids.first()?.decode().ok().map(|(_, text)| text)
}

#[tokio::test]
async fn a_links_qr_code_scans_as_its_tracking_url_with_the_ids() {
    let app = TestApp::start().await;
    let get = |path: &str| {
        app.client
            .get(app.url(path))
            .bearer_auth(&app.admin_key)
            .send()
    };
    let r = get("/api/v1/links/solare/qr?format=png&src=print&sub1=flyer%207")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.bytes().await.unwrap();
    let url = read_qr(&png).expect("a QR code that scans");
    assert_eq!(url, app.url("/r/solare?src=print&sub1=flyer+7"));
    // The scanned link redirects and records its ids.
    let r = app
        .get_ua(url.trim_start_matches(&app.url("")), CHROME)
        .await;
    assert_eq!(r.status().as_u16(), 302);
    let clicks = app.clicks("solare").await;
    assert_eq!(
        (&clicks[0]["src"], &clicks[0]["subs"][0]),
        (&json!("print"), &json!("flyer 7"))
    );
    let r = get("/api/v1/links/solare/qr").await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.unwrap().starts_with("<svg "));
    for (path, status) in [
        ("/api/v1/links/solare/qr?format=gif", 400),
        ("/api/v1/links/solare/qr?size=10", 400),
        ("/api/v1/links/solare/qr?color=red", 400),
        ("/api/v1/links/nope/qr", 404),
    ] {
        assert_eq!(get(path).await.unwrap().status().as_u16(), status, "{path}");
    }
    let (s, _) = app
        .api_get(&format!("/api/v1/links/solare/qr?src={}", "x".repeat(3000)))
        .await;
    assert_eq!(s, 422);
}
