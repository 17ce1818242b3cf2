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
    assert!(v.as_array().unwrap().iter().any(|p| p["slug"] == "shoes"));
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
    let srcs: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["src"].as_str().unwrap())
        .collect();
    assert_eq!(srcs, vec!["c", "b"]);
    let id = v[0]["click_id"].as_str().unwrap().to_owned();
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
    assert_eq!(v.as_array().unwrap().len(), 4);
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
