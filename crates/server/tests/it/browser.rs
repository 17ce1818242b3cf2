//! The dashboard and the portal in a real browser: Debian's Chromium driven
//! through chromedriver (WebDriver) with fantoccini. `.ci/run` installs both;
//! without them these tests say loudly that they skipped, and under
//! `CI=true` they fail instead.
//!
//! Screenshots of the overview and live pages are written to
//! `target/screenshots/` (or `$CLICKWARD_SCREENSHOTS`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::dashboard::{ADMIN_PASSWORD, add_user};
use crate::helpers::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process and a browser session; both end on drop.
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

/// Starts Chromium headless with a real desktop user agent from
/// ../shared/data (a headless one would be classified as a bot, rightly).
/// `None` when Chromium or chromedriver is missing outside CI.
async fn browser() -> Option<Browser> {
    browser_with(&[]).await
}

/// [`browser`] with extra Chromium switches.
async fn browser_with(extra: &[&str]) -> Option<Browser> {
    let missing = [CHROMEDRIVER, CHROMIUM]
        .into_iter()
        .find(|p| !std::path::Path::new(p).exists());
    if let Some(m) = missing {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{m} is missing: .ci/run installs Debian's chromium and chromium-driver"
        );
        skipped(&format!(
            "browser tests need {m} (apt-get install chromium chromium-driver)"
        ));
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let ua: Vec<String> = serde_json::from_slice(
        &std::fs::read(shared_data().join("user-agents/top-desktop.json")).unwrap(),
    )
    .unwrap();
    let ua = ua.iter().find(|u| u.contains("Chrome/")).unwrap().clone();
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--window-size=1280,1000",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(str::to_owned)
    .collect();
    args.push(format!("--user-agent={ua}"));
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    let client = loop {
        let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        b.capabilities(caps.clone());
        match b.connect(&url).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "no browser session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    Some(Browser {
        client: Some(client),
        driver,
        _profile: profile,
    })
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("CLICKWARD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots")
        })
}

async fn save_screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls a JavaScript expression until it is `true`, or panics after `deadline`.
async fn until_js(c: &Client, deadline: Duration, what: &str, expr: &str) {
    let start = Instant::now();
    loop {
        let v = c
            .execute(&format!("return !!({expr});"), vec![])
            .await
            .unwrap();
        if v == json!(true) {
            return;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the page at `path` (after a click that navigates) has loaded.
async fn until_path(c: &Client, path: &str) {
    let start = Instant::now();
    loop {
        let here = c.current_url().await.unwrap();
        let ready = c
            .execute("return document.readyState === 'complete';", vec![])
            .await
            .unwrap();
        if here.path() == path && ready == json!(true) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still at {here}, not {path}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Types `text` into the element `at`.
async fn type_in(c: &Client, at: Locator<'_>, text: &str) {
    c.find(at).await.unwrap().send_keys(text).await.unwrap();
}

/// Clicks the element `at`.
async fn click_on(c: &Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

/// Chooses `value` in the select element `at`.
async fn select_in(c: &Client, at: Locator<'_>, value: &str) {
    c.find(at)
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

async fn sign_in(c: &Client, app: &TestApp, user: &str, password: &str) {
    c.goto(&app.url("/login")).await.unwrap();
    fill_sign_in(c, user, password).await;
}

/// Fills and sends the sign-in form of the page the browser is on.
async fn fill_sign_in(c: &Client, user: &str, password: &str) {
    type_in(c, Locator::Id("username"), user).await;
    type_in(c, Locator::Id("password"), password).await;
    click_on(c, Locator::Id("sign-in")).await;
}

/// Opens `path` in a second tab and comes back to the first.
async fn open_in_second_tab(c: &Client, app: &TestApp, path: &str) {
    let first = c.window().await.unwrap();
    let tab = c.new_window(true).await.unwrap();
    c.switch_to_window(tab.handle).await.unwrap();
    c.goto(&app.url(path)).await.unwrap();
    c.close_window().await.unwrap();
    c.switch_to_window(first).await.unwrap();
}

const XSS: &str = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";

#[tokio::test]
async fn a_merchant_signs_in_makes_a_link_sees_its_clicks_live_and_approves_a_conversion() {
    let app = TestApp::start().await;
    let Some(b) = browser().await else { return };
    let c = b.c();
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;

    // Not signed in: the sign-in page, then back where we wanted to go.
    c.goto(&app.url("/dashboard/links")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
    fill_sign_in(c, "merchant", ADMIN_PASSWORD).await;
    until_path(c, "/dashboard/links").await;

    // Create a link through the form. Its destination is this server, so
    // the second tab lands somewhere real on this closed network.
    type_in(c, Locator::Id("link-code"), "browser-made").await;
    select_in(c, Locator::Id("link-program"), "vendors").await;
    select_in(c, Locator::Id("link-affiliate"), "gourmet_guide").await;
    type_in(
        c,
        Locator::Id("link-destination"),
        &app.url("/healthz?c={click_id}"),
    )
    .await;
    click_on(c, Locator::Id("create-link")).await;
    until_path(c, "/dashboard/links/browser-made").await;
    assert!(text_of(c, ".notice.ok").await.contains("created"));
    let (s, link) = app.api_get("/api/v1/links/browser-made").await;
    assert_eq!(s, 200, "{link}");

    // Live page: a click made in a second tab appears within 1 s.
    c.goto(&app.url("/dashboard/live")).await.unwrap();
    until_js(
        c,
        Duration::from_secs(5),
        "the live stream to connect",
        "document.getElementById('live-status').textContent === 'Live.'",
    )
    .await;
    open_in_second_tab(c, &app, "/r/browser-made?src=second_tab").await;
    let clicked = Instant::now();
    until_js(
        c,
        Duration::from_secs(1),
        "the click on the live page within 1 s",
        "Array.from(document.querySelectorAll('#live-rows tr')).some(tr => \
         tr.textContent.includes('browser-made') && tr.textContent.includes('second_tab'))",
    )
    .await;
    eprintln!(
        "click shown on the live page {:?} after its redirect",
        clicked.elapsed()
    );
    let row = text_of(c, "#live-rows tr:first-child").await;
    assert!(
        row.contains("human") && row.contains("gourmet_guide"),
        "{row}"
    );

    // A visitor's XSS attempt in src and referrer, while the page is open
    // (inserted by the script) and after a reload (rendered by the server).
    let src: String = url::form_urlencoded::byte_serialize(XSS.as_bytes()).collect();
    let r = app
        .client
        .get(app.url(&format!("/r/browser-made?src={src}")))
        .header("user-agent", CHROME)
        .header("referer", format!("https://evil.example/{XSS}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    for round in ["live", "reloaded"] {
        if round == "reloaded" {
            c.goto(&app.url("/dashboard/live")).await.unwrap();
        }
        until_js(
            c,
            Duration::from_secs(2),
            "the payload shown as text",
            "Array.from(document.querySelectorAll('#live-rows td')).some(td => \
             td.textContent.includes('<script>window.__xss=1</script>'))",
        )
        .await;
        let ran = c
            .execute(
                "return [window.__xss === undefined, \
                 document.querySelectorAll('#live-rows img, #live-rows script').length, \
                 Array.from(document.querySelectorAll('#live-rows td')).some(td => td.textContent.includes('evil.example'))];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            ran,
            json!([true, 0, true]),
            "{round}: no script ran, no element made, referrer shown"
        );
    }
    save_screenshot(c, "live.png").await;

    // Overview: the clicks tile moves by itself when a click comes in.
    c.goto(&app.url("/dashboard")).await.unwrap();
    until_js(
        c,
        Duration::from_secs(5),
        "the overview's live stream",
        "document.getElementById('live-status').textContent === 'Live.'",
    )
    .await;
    let before: i64 = text_of(c, "#kpi-clicks")
        .await
        .replace(',', "")
        .parse()
        .unwrap();
    open_in_second_tab(c, &app, "/r/browser-made?src=overview_tab").await;
    until_js(
        c,
        Duration::from_secs(3),
        "the clicks tile to move",
        &format!(
            "document.getElementById('kpi-clicks').textContent === '{}'",
            before + 1
        ),
    )
    .await;
    // The chart was drawn.
    until_js(
        c,
        Duration::from_secs(2),
        "the chart",
        "document.querySelector('#chart canvas') !== null",
    )
    .await;
    save_screenshot(c, "overview.png").await;
    // On a phone-sized window the page fits its width (tables scroll inside
    // their own boxes) and the navigation stays reachable.
    c.set_window_size(390, 844).await.unwrap();
    until_js(
        c,
        Duration::from_secs(2),
        "the page to fit a phone's width",
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
    )
    .await;
    save_screenshot(c, "overview-phone.png").await;
    c.set_window_size(1280, 1000).await.unwrap();

    // Approve a conversion from the conversions page.
    let click_id = app.clicks("browser-made").await[0]["click_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = app
        .api_send(
            reqwest::Method::POST,
            "/api/v1/conversions",
            json!({"click_id": click_id, "order_id": "browser-1", "amount": "49.90"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["conversion"]["conversion_id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.goto(&app.url("/dashboard/conversions?status=pending"))
        .await
        .unwrap();
    click_on(
        c,
        Locator::Css("button[aria-label='approve order browser-1']"),
    )
    .await;
    until_js(
        c,
        Duration::from_secs(5),
        "the approval notice",
        "(document.querySelector('.notice.ok') || {}).textContent?.includes('approved')",
    )
    .await;
    c.goto(&app.url("/dashboard/conversions")).await.unwrap();
    assert_eq!(
        text_of(c, &format!("#conversion-{id} .status")).await,
        "approved"
    );
    let (_, v) = app.api_get(&format!("/api/v1/conversions/{id}")).await;
    assert_eq!(v["status"], "approved", "{v}");
    b.close().await;
}

#[tokio::test]
async fn an_affiliate_sees_only_their_own_data() {
    let app = TestApp::start().await;
    let Some(b) = browser().await else { return };
    let c = b.c();
    add_user(
        &app,
        "gg",
        Some("gourmet_guide"),
        Some("gourmet guide secret"),
    )
    .await;
    // A click on each affiliate's link.
    for path in ["/r/solare?src=mine", "/r/rakuten_sim?src=theirs"] {
        assert_eq!(app.get_ua(path, CHROME).await.status(), 302);
    }
    sign_in(c, &app, "gg", "gourmet guide secret").await;
    until_path(c, "/portal").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("/r/solare"), "their link");
    assert!(
        !page.contains("rakuten_sim"),
        "not another affiliate's link"
    );
    assert_eq!(text_of(c, "#kpi-clicks").await, "1", "only their own click");
    // The link builder fills in src and sub-ids.
    select_in(c, Locator::Css("form.builder #builder-link"), "solare").await;
    type_in(
        c,
        Locator::Css("form.builder input[name='src']"),
        "newsletter",
    )
    .await;
    type_in(c, Locator::Css("form.builder input[name='sub1']"), "nov").await;
    click_on(c, Locator::Css("form.builder button[type='submit']")).await;
    until_js(
        c,
        Duration::from_secs(5),
        "the built link",
        "(document.getElementById('built-url') || {}).value?.includes('newsletter')",
    )
    .await;
    let built = c
        .find(Locator::Id("built-url"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(
        built.ends_with("/r/solare?src=newsletter&sub1=nov"),
        "{built}"
    );
    // Another affiliate's link page, and the merchant's dashboard: 404.
    for path in [
        "/portal/links/rakuten_sim",
        "/dashboard",
        "/dashboard/links/solare",
    ] {
        c.goto(&app.url(path)).await.unwrap();
        assert_eq!(text_of(c, "h1").await, "404", "{path}");
    }
    c.goto(&app.url("/portal/links/solare")).await.unwrap();
    assert_eq!(text_of(c, "h1").await, "Link solare");
    b.close().await;
}

#[tokio::test]
async fn pages_are_readable_in_dark_mode() {
    let app = TestApp::start().await;
    let Some(b) = browser_with(&["--force-dark-mode"]).await else {
        return;
    };
    let c = b.c();
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    assert_eq!(app.get_ua("/r/solare?src=dark", CHROME).await.status(), 302);
    sign_in(c, &app, "merchant", ADMIN_PASSWORD).await;
    until_path(c, "/dashboard").await;
    // The dark palette applies: dark background, light text, and enough
    // contrast between them (WCAG relative luminance ratio >= 7).
    let colours = c
        .execute(
            "const rgb = s => s.match(/\\d+/g).slice(0, 3).map(Number);\
             const lum = ([r, g, b]) => { const f = v => { v /= 255; \
               return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; \
               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };\
             const bg = lum(rgb(getComputedStyle(document.body).backgroundColor));\
             const fg = lum(rgb(getComputedStyle(document.querySelector('#kpi-clicks')).color));\
             return [bg < 0.05, (Math.max(bg, fg) + 0.05) / (Math.min(bg, fg) + 0.05)];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(colours[0], json!(true), "dark background: {colours}");
    assert!(colours[1].as_f64().unwrap() >= 7.0, "contrast: {colours}");
    save_screenshot(c, "overview-dark.png").await;
    b.close().await;
}

/// A merchant's site on another host than the tracker (`localhost` against
/// the tracker's `127.0.0.1`): a landing page and a later page that load
/// `/cw.js` under a CSP that admits only the tracker's scripts, and a
/// checkout that echoes what its form posted.
async fn merchant_site(tracker: String) -> (u16, tokio::task::JoinHandle<()>) {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tag = clickward::http::script::snippet(&tracker, 30).replace(" async", "");
    let page = move |title: &'static str| {
        let tag = tag.clone();
        let csp = format!("default-src 'self'; script-src {tracker}");
        move || async move {
            (
                [("content-security-policy", csp)],
                axum::response::Html(format!(
                    "<!doctype html><title>{title}</title>{tag}\
                     <form data-cw id=\"f\" action=\"/checkout\" method=\"post\"><button id=\"buy\">Buy</button></form>\
                     <a id=\"pay\" href=\"https://buy.stripe.com/test_14k5nU\">Pay</a>"
                )),
            )
                .into_response()
        }
    };
    let app = axum::Router::new()
        .route("/landing", axum::routing::get(page("landing")))
        .route("/pricing", axum::routing::get(page("pricing")))
        .route(
            "/checkout",
            axum::routing::post(|body: String| async move {
                axum::response::Html(format!("<pre id=\"got\">{body}</pre>"))
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

#[tokio::test]
async fn cw_js_keeps_the_click_on_the_merchants_own_site_and_hands_it_to_checkout() {
    let Some(b) = browser().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("links.toml");
    std::fs::write(
        &catalog,
        "[[programs]]\nslug = \"saas\"\nclick_id_param = \"cw_click\"\ncookie_window = \"30d\"\n\n[[affiliates]]\nslug = \"solare\"\n",
    )
    .unwrap();
    let app = TestApp::start_with(|c| c.catalog = Some(catalog.clone())).await;
    // The merchant's pages name the tracker; its link names the merchant.
    let (merchant, _site) = merchant_site(app.base.clone()).await;
    let (s, v) = app
        .api_send(
            reqwest::Method::POST,
            "/api/v1/links",
            json!({
                "code": "m1",
                "program": "saas",
                "affiliate": "solare",
                "destination": format!("http://localhost:{merchant}/landing?plan=pro"),
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let c = b.c();

    // Script size, headers: what the issue promises a merchant.
    let r = app.client.get(app.url("/cw.js")).send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.bytes().await.unwrap().len() < 2048);

    c.goto(&app.url("/r/m1")).await.unwrap();
    until_path(c, "/landing").await;
    let here = c.current_url().await.unwrap();
    assert_eq!(here.host_str(), Some("localhost"), "{here}");
    let id = here
        .query_pairs()
        .find(|(k, _)| k == "cw_click")
        .map(|(_, v)| v.into_owned())
        .expect("the redirect puts the click id in the landing URL");
    until_js(
        c,
        Duration::from_secs(10),
        "cw.js to run",
        "window.clickward && window.clickward.click",
    )
    .await;
    let got = c
        .execute(
            "return [window.clickward.click, document.cookie, \
             document.querySelector('form[data-cw] input[name=cw_click]').value, \
             document.getElementById('pay').href];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(got[0], json!(id));
    assert!(
        got[1].as_str().unwrap().contains(&format!("cw_click={id}")),
        "{got}"
    );
    assert_eq!(got[2], json!(id));
    assert_eq!(
        got[3],
        json!(format!(
            "https://buy.stripe.com/test_14k5nU?client_reference_id={id}"
        ))
    );

    // A later page without the parameter reads it back from the merchant's
    // own cookie, and the checkout form posts it.
    c.goto(&format!("http://localhost:{merchant}/pricing"))
        .await
        .unwrap();
    until_js(
        c,
        Duration::from_secs(10),
        "cw.js to read its cookie",
        "window.clickward && window.clickward.click",
    )
    .await;
    click_on(c, Locator::Id("buy")).await;
    until_path(c, "/checkout").await;
    assert_eq!(text_of(c, "#got").await, format!("cw_click={id}"));

    // The id is the click the tracker recorded.
    let clicks = app.clicks("m1").await;
    assert_eq!(clicks.len(), 1);
    assert_eq!(clicks[0]["click_id"], json!(id));
    b.close().await;
}
