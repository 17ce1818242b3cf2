//! The binary as a user runs it: config and catalogue errors, CLI commands,
//! the report in a time zone, CSV import.

use std::process::Command;

use crate::helpers::*;

#[test]
fn bad_config_and_catalogue_stop_the_start_with_a_named_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 4] = [
        (
            "config.toml",
            "listen = \"127.0.0.1:0\"\nredirect_staus = 302\n",
            "redirect_staus",
        ),
        (
            "config.toml",
            "listen = \"127.0.0.1:0\"\nredirect_status = 301\n",
            "301",
        ),
        (
            "links.toml",
            "[[programs]]\nslug = \"p\"\n[[links]]\ncode = \"a\"\nprogram = \"p\"\ndestination = \"https://a.example/\"\n[[links]]\ncode = \"a\"\nprogram = \"p\"\ndestination = \"https://b.example/\"\n",
            "\"a\" is declared twice",
        ),
        (
            "links.toml",
            "[[programs]]\nslug = \"p\"\n[[links]]\ncode = \"a\"\nprogram = \"p\"\ndestination = \"https://a.example/\"\nredirect = 308\n",
            "308",
        ),
    ];
    for (file, content, expect) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, content).unwrap();
        let args: Vec<String> = if file == "config.toml" {
            vec![
                "--config".into(),
                path.display().to_string(),
                "serve".into(),
            ]
        } else {
            vec![
                "serve".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--catalog".into(),
                path.display().to_string(),
            ]
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = clickward(&dir.path().join("data"), &args);
        assert!(!out.status.success(), "{file} with {expect} was accepted");
        let t = text(&out);
        assert!(t.contains(expect), "expected {expect:?} in: {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
}

#[test]
fn cli_manages_the_catalogue_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ok = |args: &[&str]| {
        let o = clickward(&data, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["program", "add", "--slug", "shop", "--name", "Shop"]);
    ok(&["affiliate", "add", "--slug", "blog"]);
    ok(&[
        "link",
        "add",
        "--code",
        "spring",
        "--program",
        "shop",
        "--affiliate",
        "blog",
        "--destination",
        "https://shop.example/?c={click_id}",
        "--utm",
        "utm_source=blog",
    ]);
    assert!(ok(&["link", "list"]).contains("spring"));
    assert!(ok(&["program", "list"]).contains("shop"));
    assert!(ok(&["affiliate", "list"]).contains("blog"));
    let key = ok(&["key", "create", "--scope", "read"]);
    assert!(key.trim().starts_with("cwk_"), "{key}");
    ok(&["link", "disable", "spring"]);
    assert!(ok(&["link", "list"]).contains("inactive"));
    let o = clickward(
        &data,
        &[
            "link",
            "add",
            "--code",
            "bad",
            "--program",
            "shop",
            "--destination",
            "https://a.example/",
            "--redirect",
            "301",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("301"), "{}", text(&o));
}

#[tokio::test]
async fn cli_changes_reach_a_running_server() {
    let app = TestApp::start().await;
    let data = app.data_dir().join("data");
    let o = clickward(&data, &["link", "disable", "gbvintners"]);
    assert!(o.status.success(), "{}", text(&o));
    eventually(
        std::time::Duration::from_secs(5),
        "the link to stop redirecting",
        || async {
            (app.get_ua("/ref/gbvintners", CHROME)
                .await
                .status()
                .as_u16()
                == 404)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn report_cuts_days_in_the_asked_time_zone() {
    let app = TestApp::start().await;
    // 2026-11-20 14:59:59Z is 23:59:59 in Tokyo; two seconds later it is the 21st.
    let t = 1_795_186_799_000_000;
    app.clock.set(t);
    app.get_ua("/go?id=rakuten_sim&src=qiita", IPHONE).await;
    app.clock.set(t + 2_000_000);
    app.get_ua("/go?id=rakuten_sim&src=qiita", IPHONE).await;
    app.get_ua(
        "/go?id=rakuten_sim&src=zenn",
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
    )
    .await;
    let data = app.data_dir().join("data");
    let o = clickward(
        &data,
        &[
            "report",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-21",
            "--tz",
            "Asia/Tokyo",
            "--by",
            "day,link,src",
            "--format",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "day,link,src,gross_clicks,bot_clicks,invalid_clicks,clicks,unique_clicks,duplicate_clicks,conversions,revenue,payout,cr,epc\n\
         2026-11-20,rakuten_sim,qiita,1,0,0,1,1,0,0,,,0.00%,\n\
         2026-11-21,rakuten_sim,qiita,1,0,0,1,0,1,0,,,,\n\
         2026-11-21,rakuten_sim,zenn,1,1,0,0,0,0,0,,,,\n"
    );
    // The API answers the same numbers.
    let r = app
        .client
        .get(app.url("/api/v1/reports?from=2026-11-20&to=2026-11-21&tz=Asia/Tokyo&group_by=day,link,src&format=csv"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), String::from_utf8_lossy(&o.stdout));
    let (s, v) = app
        .api_get("/api/v1/reports?from=2026-11-20&to=2026-11-21&tz=Asia/Tokyo&group_by=day")
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["totals"]["gross_clicks"], 3);
    assert_eq!(v["rows"][1]["duplicate_clicks"], 1);
    // Sorted, paginated, as NDJSON; totals still cover every row.
    let o = clickward(
        &data,
        &[
            "report",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-21",
            "--tz",
            "Asia/Tokyo",
            "--by",
            "src",
            "--sort",
            "-gross_clicks",
            "--limit",
            "1",
            "--format",
            "ndjson",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["src"], "qiita");
    assert_eq!(lines[0]["gross_clicks"], 2);
    assert_eq!(lines[1]["totals"]["gross_clicks"], 3);
    let o = clickward(&data, &["report", "--by", "src", "--sort", "colour"]);
    assert!(!o.status.success());
    // Filters: the CLI's --filter and the API's dimension keys.
    let o = clickward(
        &data,
        &[
            "report",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-21",
            "--tz",
            "Asia/Tokyo",
            "--by",
            "src",
            "--filter",
            "src=zenn",
            "--format",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "src,gross_clicks,bot_clicks,invalid_clicks,clicks,unique_clicks,duplicate_clicks,conversions,revenue,payout,cr,epc\nzenn,1,1,0,0,0,0,0,,,,\n"
    );
    let (s, v) = app.api_get("/api/v1/reports?from=2026-11-20&to=2026-11-21&tz=Asia/Tokyo&group_by=day&link=rakuten_sim&src=qiita").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totals"]["gross_clicks"], 2);
    let (s, _) = app.api_get("/api/v1/reports?colour=red").await;
    assert_eq!(s, 400, "unknown dimension");
    let (s, v) = app.api_get("/api/v1/reports?tz=Mars/Olympus").await;
    assert_eq!(s, 400);
    assert!(v["reason"].as_str().unwrap().contains("Mars/Olympus"));
    // In UTC all three fall on the 20th.
    let o = clickward(
        &data,
        &[
            "report",
            "--from",
            "2026-11-20",
            "--tz",
            "UTC",
            "--by",
            "day",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.lines().nth(1).is_some_and(
            |l| l.starts_with("2026-11-20") && l.split_whitespace().nth(1) == Some("3")
        ),
        "{out}"
    );
    let o = clickward(&data, &["report", "--tz", "Mars/Olympus"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("Mars/Olympus"));
}

#[test]
fn import_brings_history_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let catalog = seed_catalog();
    // Apply the seed catalogue through a short-lived server start is not
    // needed: the CLI can create what the import refers to.
    let _ = &catalog;
    assert!(
        clickward(&data, &["program", "add", "--slug", "shop"])
            .status
            .success()
    );
    assert!(
        clickward(
            &data,
            &[
                "link",
                "add",
                "--code",
                "old",
                "--program",
                "shop",
                "--destination",
                "https://shop.example/"
            ]
        )
        .status
        .success()
    );
    let csv = dir.path().join("history.csv");
    std::fs::write(
        &csv,
        format!(
            "timestamp,code,src,user_agent,ip,referrer\n\
             2026-11-01T10:00:00Z,old,mail,\"{IPHONE}\",192.0.2.10,https://mail.example/\n\
             2026-11-01T10:00:02Z,old,mail,\"{IPHONE}\",192.0.2.10,\n\
             2026-11-01 11:00:00,old,,Googlebot/2.1 (+http://www.google.com/bot.html),192.0.2.11,\n\
             1793534400,old,x,\"{CHROME}\",192.0.2.12,\n\
             yesterday,old,,\"{CHROME}\",192.0.2.13,\n\
             2026-11-01T10:00:00Z,gone,,\"{CHROME}\",192.0.2.14,\n"
        ),
    )
    .unwrap();
    let o = clickward(&data, &["import", csv.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("6 rows: 4 clicks imported, 0 already present, 2 skipped"),
        "{t}"
    );
    assert!(t.contains("line 6") && t.contains("yesterday"), "{t}");
    assert!(t.contains("line 7") && t.contains("\"gone\""), "{t}");
    let o = clickward(&data, &["import", csv.to_str().unwrap()]);
    assert!(
        text(&o).contains("0 clicks imported, 4 already present"),
        "{}",
        text(&o)
    );
    let o = clickward(
        &data,
        &[
            "report",
            "--from",
            "2026-11-01",
            "--by",
            "link",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "link,gross_clicks,bot_clicks,invalid_clicks,clicks,unique_clicks,duplicate_clicks,conversions,revenue,payout,cr,epc\nold,4,1,0,3,2,1,0,,,0.00%,\n"
    );
}

#[tokio::test]
async fn sighup_reloads_the_catalogue_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("links.toml");
    let base_text = std::fs::read_to_string(seed_catalog()).unwrap();
    std::fs::write(&catalog, &base_text).unwrap();
    let (mut child, base) = spawn_serve(&dir.path().join("data"), &catalog, &[]).await;
    let c = client();
    let status = |path: &'static str| {
        let c = c.clone();
        let url = format!("{base}{path}");
        async move { c.get(url).send().await.ok().map(|r| r.status().as_u16()) }
    };
    assert_eq!(status("/r/autumn").await, Some(404));

    let added = format!(
        "{base_text}\n[[links]]\ncode = \"autumn\"\nprogram = \"vendors\"\ndestination = \"https://autumn.example/\"\n"
    );
    std::fs::write(&catalog, added).unwrap();
    let hup = |pid: u32| {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(hup(child.id()).success());
    eventually(
        std::time::Duration::from_secs(5),
        "the new link after SIGHUP",
        || async { (status("/r/autumn").await == Some(302)).then_some(()) },
    )
    .await;

    // A broken file is refused whole; the running catalogue stays.
    std::fs::write(&catalog, "[[links]]\ncode = \"x\"\nredirect = 301\n").unwrap();
    assert!(hup(child.id()).success());
    // Give the reload a chance to (wrongly) apply, then check nothing moved.
    eventually(
        std::time::Duration::from_secs(5),
        "the server to keep answering",
        || async { (status("/healthz").await == Some(200)).then_some(()) },
    )
    .await;
    assert_eq!(status("/r/autumn").await, Some(302));
    assert_eq!(status("/ref/solare").await, Some(302));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

#[test]
fn gen_writes_a_realistic_history_that_reports_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let uas = shared_data().join("user-agents/top-mobile.json");
    let o = clickward(
        &data,
        &[
            "gen",
            "--clicks",
            "5000",
            "--days",
            "3",
            "--links",
            "4",
            "--affiliates",
            "2",
            "--bot-pct",
            "10",
            "--double-tap-pct",
            "20",
            "--conversions-per-10k",
            "500",
            "--visitors",
            "3000",
            "--user-agents",
            uas.to_str().unwrap(),
        ],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("generated 5000 clicks"), "{t}");
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let from = today
        .checked_sub(jiff::Span::new().days(4))
        .unwrap()
        .to_string();
    let o = clickward(
        &data,
        &[
            "report",
            "--from",
            &from,
            "--to",
            &today.to_string(),
            "--by",
            "link",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &v["totals"];
    assert_eq!(t["gross_clicks"], 5000);
    let bots = t["bot_clicks"].as_i64().unwrap();
    assert!((300..=700).contains(&bots), "bots {bots}");
    let dup = t["duplicate_clicks"].as_i64().unwrap();
    assert!(dup >= 500, "double taps must show as duplicates: {dup}");
    let conversions = t["conversions"].as_i64().unwrap();
    assert!(
        conversions > 50 && conversions <= t["unique_clicks"].as_i64().unwrap(),
        "{t}"
    );
    assert_eq!(v["rows"].as_array().unwrap().len(), 4);
    // The raw export has every click, once.
    let o = clickward(
        &data,
        &["export", "--from", &from, "--to", &today.to_string()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let csv = String::from_utf8_lossy(&o.stdout);
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("click_id,ts,link,program")
    );
    let ids: std::collections::HashSet<&str> =
        lines.map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(ids.len(), 5000);
}

/// A report of thousands of rows comes over HTTP streamed (chunked, no
/// Content-Length), whole in every format, and adds up to its totals.
#[tokio::test]
async fn large_reports_stream_whole() {
    let app = TestApp::start().await;
    let data = app.data_dir().join("data");
    let ua = shared_data().join("user-agents/top-desktop.json");
    let o = clickward(
        &data,
        &[
            "gen",
            "--clicks",
            "4000",
            "--days",
            "7",
            "--links",
            "30",
            "--user-agents",
            ua.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let today = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::UTC)
        .date();
    let range = format!(
        "from={}&to={}",
        today.checked_sub(jiff::Span::new().days(9)).unwrap(),
        today.checked_add(jiff::Span::new().days(1)).unwrap()
    );
    let get = |format: &str| {
        app.client
            .get(app.url(&format!(
                "/api/v1/reports?{range}&group_by=hour,link&format={format}"
            )))
            .bearer_auth(&app.admin_key)
            .send()
    };
    let r = get("json").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "a streamed body has no length: {:?}",
        r.headers()
    );
    let v: serde_json::Value = r.json().await.unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.len() > 1000, "{} rows", rows.len());
    let sum: i64 = rows
        .iter()
        .map(|r| r["gross_clicks"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, 4000);
    assert_eq!(v["totals"]["gross_clicks"], 4000);
    let csv = get("csv").await.unwrap().text().await.unwrap();
    assert_eq!(csv.lines().count(), rows.len() + 1, "header + every row");
    let ndjson = get("ndjson").await.unwrap().text().await.unwrap();
    let lines: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), rows.len() + 1, "every row + totals");
    assert_eq!(lines[..rows.len()], rows[..]);
    assert_eq!(lines[rows.len()]["totals"], v["totals"]);
}

#[test]
fn cli_adds_users_with_a_password_from_stdin_and_prints_magic_links() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let made = clickward(
        &data,
        &["affiliate", "add", "--slug", "gg", "--name", "Gourmet"],
    );
    assert!(made.status.success(), "{}", text(&made));
    let add = |args: &[&str], stdin: &str| clickward_with_input(&data, args, stdin);
    let short = add(&["user", "add", "boss", "--admin"], "short\n");
    assert!(!short.status.success());
    assert!(
        text(&short).contains("at least 10 characters"),
        "{}",
        text(&short)
    );
    let ok = add(&["user", "add", "boss", "--admin"], "a long passphrase\n");
    assert!(ok.status.success(), "{}", text(&ok));
    let ghost = add(
        &["user", "add", "x", "--affiliate", "nobody"],
        "a long passphrase\n",
    );
    assert!(!ghost.status.success());
    assert!(text(&ghost).contains("nobody"), "{}", text(&ghost));
    let aff = add(
        &["user", "add", "ana", "--affiliate", "gg", "--no-password"],
        "",
    );
    assert!(aff.status.success(), "{}", text(&aff));
    let list = text(&clickward(&data, &["user", "list"]));
    assert!(
        list.contains("boss") && list.contains("ana") && list.contains("gg"),
        "{list}"
    );
    let link = clickward(
        &data,
        &[
            "user",
            "magic-link",
            "ana",
            "--base",
            "https://t.example.com/",
        ],
    );
    let url = String::from_utf8_lossy(&link.stdout).trim().to_owned();
    assert!(
        url.starts_with("https://t.example.com/login/magic?t="),
        "{url}"
    );
    assert!(
        !clickward(&data, &["user", "magic-link", "nobody"])
            .status
            .success()
    );
}
