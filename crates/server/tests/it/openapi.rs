//! The admin API's OpenAPI document against the server that serves it: the
//! document names every route with its security and the one error shape,
//! the server answers bad requests in that shape, and schemathesis (PyPI,
//! installed by .ci/run) finds no 5xx and no answer that contradicts the
//! document, stateful links included. Outside CI a missing `st` skips the
//! schemathesis test, loudly.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::*;

/// Every path of `/api/v1`, as clients are told they exist. A route added or
/// removed changes the contract: this list, docs/api.md and the README.
const PATHS: &[&str] = &[
    "/affiliates",
    "/affiliates/{slug}",
    "/affiliates/{slug}/disable",
    "/affiliates/{slug}/enable",
    "/balances",
    "/clicks",
    "/clicks/{click_id}",
    "/conversions",
    "/conversions/{id}",
    "/conversions/{id}/{action}",
    "/deliveries",
    "/deliveries/{id}",
    "/deliveries/{id}/replay",
    "/events",
    "/events/url",
    "/exclusions",
    "/exclusions/{id}",
    "/keys",
    "/links",
    "/links/{code}",
    "/links/{code}/disable",
    "/links/{code}/enable",
    "/links/{code}/qr",
    "/outbox",
    "/payouts",
    "/postbacks",
    "/privacy/erasures",
    "/privacy/erasures/{id}",
    "/privacy/export",
    "/programs",
    "/programs/{slug}",
    "/programs/{slug}/commissions",
    "/programs/{slug}/commissions/{affiliate}",
    "/programs/{slug}/disable",
    "/programs/{slug}/enable",
    "/reports",
    "/rules",
    "/rules/{id}",
    "/users",
    "/webhooks",
    "/webhooks/{id}",
    "/webhooks/{id}/replay",
    "/webhooks/{id}/{action}",
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    // Public: it describes, it holds nothing.
    let r = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.expect("the document is JSON")
}

/// Every `"$ref"` value in `v`.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                out.insert(r.clone());
            }
            o.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_names_every_route_with_its_security_and_the_error_shape() {
    let app = TestApp::start().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "/api/v1");

    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(paths, PATHS.iter().copied().collect(), "the routes changed");

    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let error = &schemas["Error"];
    assert_eq!(error["required"], json!(["error", "reason"]), "{error}");

    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} points outside the schemas"));
        assert!(schemas.contains_key(name), "{r} names no schema");
    }

    let mut ids = BTreeSet::new();
    let mut links = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            if path != "/events" {
                assert_eq!(
                    op["security"],
                    json!([{"api_key": []}]),
                    "{m} {path} needs a key"
                );
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{m} {path} has no success answer"
            );
            assert_eq!(
                responses["5XX"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{m} {path}"
            );
            // Conversion intake answers its 4xx in the postback words.
            if id != "create_conversion" {
                assert_eq!(
                    responses["4XX"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{m} {path}"
                );
            }
            for r in responses.values() {
                for l in r["links"].as_object().into_iter().flat_map(|l| l.values()) {
                    assert!(l.get("operation_id").is_none(), "{l}");
                    links.push(l["operationId"].as_str().expect("operationId").to_owned());
                }
            }
        }
    }
    assert!(links.len() >= 20, "{links:?}");
    for to in &links {
        assert!(ids.contains(to), "a link names no operation: {to}");
    }
    let create =
        &doc["paths"]["/programs"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(create["allOf"][1]["required"], json!(["slug"]), "{create}");
}

#[tokio::test]
async fn bad_requests_are_answered_in_the_documented_shape() {
    let app = TestApp::start().await;
    let shape = |v: &Value| {
        v["error"].is_string()
            && v["reason"].as_str().is_some_and(|r| !r.is_empty())
            && v.as_object().is_some_and(|o| o.len() == 2)
    };
    let send = |b: reqwest::RequestBuilder| async move {
        let r = b.send().await.expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, ct, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let links = app.url("/api/v1/links");
    let cases = [
        (
            "malformed JSON",
            app.client
                .post(&links)
                .bearer_auth(&app.admin_key)
                .header("content-type", "application/json")
                .body("{\"code\": "),
            400,
        ),
        (
            "no JSON content type",
            app.client
                .post(&links)
                .bearer_auth(&app.admin_key)
                .body("{}"),
            415,
        ),
        (
            "a field of the wrong type",
            app.client
                .post(&links)
                .bearer_auth(&app.admin_key)
                .json(&json!({"code": 7, "program": "shop", "destination": "https://x.example/"})),
            400,
        ),
        ("no key", app.client.get(&links), 401),
        (
            "an unknown query key",
            app.client
                .get(app.url("/api/v1/links?colour=red"))
                .bearer_auth(&app.admin_key),
            400,
        ),
        (
            "a path that names nothing",
            app.client
                .get(app.url("/api/v1/nothing-here"))
                .bearer_auth(&app.admin_key),
            404,
        ),
    ];
    for (what, req, want) in cases {
        let (status, ct, v) = send(req).await;
        assert_eq!(status, want, "{what}: {v}");
        assert!(ct.starts_with("application/json"), "{what}: {ct}");
        assert!(shape(&v), "{what}: {v}");
    }
    // Nothing was created by any of them.
    let (s, v) = app.api_get("/api/v1/links?limit=1000").await;
    assert_eq!(s, 200);
    let codes: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["code"].as_str())
        .collect();
    assert!(!codes.contains(&"7"), "{codes:?}");
}

/// Runs `st` with `args` against the app; answers its exit status and
/// its output.
async fn schemathesis(st: &std::path::Path, app: &TestApp, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(st);
    cmd.arg("run")
        .arg(app.url("/api/v1/openapi.json"))
        .arg("--url")
        .arg(app.url("/api/v1"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", app.admin_key))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            // An endless event stream: its own tests read it (it/stream.rs).
            "--exclude-path",
            "/events",
            "--no-color",
        ])
        .args(args)
        // Its cache of failures (.schemathesis/) stays out of the repo.
        .current_dir(app.dir.path());
    // The server answers on this test's runtime: wait off it.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("st runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The number before "covered" on the stateful phase's "API Links:" line.
fn links_covered(out: &str) -> usize {
    out.lines()
        .find(|l| l.contains("API Links:"))
        .and_then(|l| l.split("API Links:").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let Some(st) = tool("st") else { return };
    let app = TestApp::start_with(|c| {
        // Thousands of requests from one address in a minute.
        c.limits.api = "1000000/min".into();
        c.limits.postback = "1000000/min".into();
    })
    .await;

    // Every operation on its own: the documented examples, the boundary
    // values of each schema, then generated requests, valid and not.
    let (ok, out) = schemathesis(
        &st,
        &app,
        &[
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--seed",
            "1",
        ],
    )
    .await;
    assert!(ok, "schemathesis found problems:\n{out}");
    // Its warnings (404-heavy operations, generated data the server refuses
    // as invalid) are about generation, not answers: they stay warnings.
    assert!(!out.contains("FAILURES"), "{out}");

    let count = |list: &'static str| {
        let app = &app;
        async move {
            let (s, v) = app.api_get(list).await;
            assert_eq!(s, 200, "{v}");
            v["items"].as_array().map_or(0, Vec::len)
        }
    };
    const LISTS: [&str; 2] = [
        "/api/v1/programs?limit=1000",
        "/api/v1/affiliates?limit=1000",
    ];
    let mut before = Vec::new();
    for list in LISTS {
        before.push(count(list).await);
    }

    // Sequences that follow the document's links: create → read → update
    // → disable, a program's link, an affiliate's postback.
    let (ok, out) = schemathesis(
        &st,
        &app,
        &[
            "--phases",
            "stateful",
            "--mode",
            "positive",
            "--max-examples",
            "100",
            "--max-time",
            "40",
        ],
    )
    .await;
    assert!(ok, "schemathesis found problems in sequences:\n{out}");
    let covered = links_covered(&out);
    eprintln!("schemathesis followed {covered} of the document's links");
    assert!(covered >= 5, "only {covered} links were followed:\n{out}");

    // The sequences began where they should: with programs and affiliates
    // made through the API.
    for (list, before) in LISTS.into_iter().zip(before) {
        let after = count(list).await;
        assert!(
            after > before,
            "{list}: the sequences made none ({before} → {after})"
        );
    }
}

#[tokio::test]
async fn the_dashboard_reference_shows_every_operation_from_the_document() {
    use crate::dashboard::{ADMIN_PASSWORD, add_user, get, sign_in};
    let app = TestApp::start().await;
    let doc = document(&app).await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let r = get(&app, &admin, "/dashboard/api").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            // The path as the document has it (askama escapes only `<>&"'`).
            let heading = format!("<code>{} /api/v1{path}</code>", m.to_ascii_uppercase());
            assert!(html.contains(&heading), "missing {heading}");
        }
    }
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            html.contains(&format!("id=\"schema-{name}\"")),
            "schema {name}"
        );
    }
    // Every in-page link lands on something.
    let mut rest = html.as_str();
    while let Some(i) = rest.find("href=\"#") {
        let tail = &rest[i + 7..];
        let end = tail.find('"').unwrap();
        let target = &tail[..end];
        assert!(
            html.contains(&format!("id=\"{target}\"")),
            "#{target} is nowhere"
        );
        rest = &tail[end..];
    }
    // The affiliate portal has no such page.
    add_user(
        &app,
        "gg",
        Some("gourmet_guide"),
        Some("gourmet guide secret"),
    )
    .await;
    let aff = sign_in(&app, "gg", "gourmet guide secret").await;
    assert_eq!(get(&app, &aff, "/dashboard/api").await.status(), 404);
}
