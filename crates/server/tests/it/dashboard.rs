//! The dashboard and the portal over plain HTTP: sign-in, sessions, CSRF,
//! the wall between affiliates, escaping and the security headers. (The same
//! pages in a real browser: `browser.rs`.)

use clickward::dashboard::session;
use clickward_store::prelude::*;
use clickward_store::{UserInput, UserRole};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, SET_COOKIE};

use crate::helpers::*;

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Adds a user with a password (or none) straight to the store.
pub async fn add_user(app: &TestApp, name: &str, affiliate: Option<&str>, password: Option<&str>) {
    app.store
        .save_user(UserInput {
            username: name.into(),
            role: if affiliate.is_some() {
                UserRole::Affiliate
            } else {
                UserRole::Admin
            },
            affiliate: affiliate.map(|a| clickward_core::id::Slug::parse(a).unwrap()),
            password_hash: password.map(|p| session::hash_password(p).unwrap()),
            changed_at: NOON - 1,
        })
        .await
        .unwrap();
}

/// Sends the sign-in form with `fields`.
async fn post_login(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(app.url("/login"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// The `cw_session=…` pair a response set, if any.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("cw_session=") && !v.starts_with("cw_session=;"))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// Signs in with a password; returns the cookie to send.
pub async fn sign_in(app: &TestApp, user: &str, password: &str) -> String {
    let r = post_login(
        app,
        &[("username", user), ("password", password), ("next", "")],
    )
    .await;
    assert_eq!(r.status(), 303, "sign-in answers with a redirect");
    let full = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("cw_session="))
        .expect("a session cookie")
        .to_owned();
    assert!(
        full.contains("HttpOnly") && full.contains("SameSite=Lax") && full.contains("Path=/"),
        "{full}"
    );
    session_cookie(&r).expect("a session cookie")
}

pub async fn get(app: &TestApp, cookie: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn pages_need_a_session_of_the_right_kind() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    add_user(
        &app,
        "gg",
        Some("gourmet_guide"),
        Some("gourmet guide secret"),
    )
    .await;

    let r = app
        .client
        .get(app.url("/dashboard/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login?next=%2Fdashboard%2Flive");

    // A wrong password: back to the form, no session.
    let r = post_login(
        &app,
        &[("username", "merchant"), ("password", "wrong password!")],
    )
    .await;
    assert!(location(&r).starts_with("/login?error="));
    assert!(session_cookie(&r).is_none());

    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let r = get(&app, &admin, "/dashboard").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"kpi-clicks\""), "overview tiles");
    assert!(
        html.contains("DB-IP"),
        "the DB-IP attribution where geo data is shown"
    );
    assert_eq!(get(&app, &admin, "/portal").await.status(), 404);

    let aff = sign_in(&app, "gg", "gourmet guide secret").await;
    let r = get(&app, &aff, "/portal").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("/r/solare"), "their own link");
    assert!(
        !html.contains("rakuten_sim") && !html.contains("techblog"),
        "nothing of another affiliate"
    );
    assert_eq!(get(&app, &aff, "/portal/links/solare").await.status(), 200);
    // techblog's link, and a link that does not exist: the same 404.
    assert_eq!(
        get(&app, &aff, "/portal/links/rakuten_sim").await.status(),
        404
    );
    assert_eq!(get(&app, &aff, "/portal/links/nope").await.status(), 404);
    // The builder's QR code: of their own link only.
    let html = get(&app, &aff, "/portal/links/solare?src=flyer")
        .await
        .text()
        .await
        .unwrap();
    let qr = html
        .split("href=\"")
        .find(|h| h.starts_with("/portal/links/solare/qr?") && h.contains("png"))
        .map(|h| h.split('"').next().unwrap_or_default().to_owned());
    assert!(
        qr.as_deref().is_some_and(|h| h.contains("src=flyer")),
        "{html}"
    );
    let r = get(&app, &aff, "/portal/links/solare/qr?src=flyer&format=png").await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["content-type"].to_str().unwrap()
        ),
        (200, "image/png")
    );
    assert_eq!(
        get(&app, &aff, "/portal/links/rakuten_sim/qr")
            .await
            .status(),
        404
    );
    assert_eq!(
        get(&app, &admin, "/dashboard/links/rakuten_sim/qr")
            .await
            .status(),
        200
    );
    assert_eq!(get(&app, &aff, "/dashboard").await.status(), 404);
    assert_eq!(
        get(&app, &aff, "/dashboard/conversions").await.status(),
        404
    );
    // The tiles' JSON is the session's affiliate's, whatever the query asks:
    // one click for gourmet_guide, two for techblog; gg sees its one.
    for path in [
        "/r/solare?src=t",
        "/r/rakuten_sim?src=t",
        "/r/rakuten_sim?src=u",
    ] {
        assert_eq!(app.get_ua(path, CHROME).await.status(), 302);
    }
    for query in ["", "?affiliate=techblog"] {
        let mine: serde_json::Value = get(&app, &aff, &format!("/portal/kpis{query}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(mine["kpi-clicks"], "1", "{query}");
    }

    // A tampered cookie is no session.
    let mut forged = aff.clone();
    forged.pop();
    forged.push(if aff.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(get(&app, &forged, "/portal").await.status(), 303);
}

#[tokio::test]
async fn forms_change_things_only_with_the_session_token_from_our_own_pages() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let html = get(&app, &admin, "/dashboard/links")
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&html);
    let form = |token: &str| {
        vec![
            ("csrf", token.to_owned()),
            ("code", "form-made".to_owned()),
            ("program", "vendors".to_owned()),
            ("affiliate", "gourmet_guide".to_owned()),
            (
                "destination",
                "https://shop.example/?c={click_id}".to_owned(),
            ),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>, origin: Option<&str>| {
        let mut rb = app
            .client
            .post(app.url("/dashboard/links"))
            .header(COOKIE, admin.clone())
            .form(&fields);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        rb.send()
    };
    assert_eq!(
        post(form("not-the-token"), None).await.unwrap().status(),
        403
    );
    assert_eq!(post(form(""), None).await.unwrap().status(), 403);
    let cross = post(form(&csrf), Some("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert_eq!(
        app.api_get("/api/v1/links/form-made").await.0,
        404,
        "nothing made"
    );

    let r = post(form(&csrf), Some(app.base.as_str())).await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).starts_with("/dashboard/links/form-made?msg=Link+form-made+created.&n="),
        "{}",
        location(&r)
    );
    // The notice shows on the page the redirect leads to; a crafted one does not.
    let page = get(&app, &admin, &location(&r)).await.text().await.unwrap();
    assert!(page.contains("Link form-made created."));
    let crafted = get(
        &app,
        &admin,
        "/dashboard/links?msg=Your+account+is+suspended",
    )
    .await;
    assert!(!crafted.text().await.unwrap().contains("suspended"));
    let crafted = get(&app, &admin, "/login?error=Call+this+number").await;
    assert!(!crafted.text().await.unwrap().contains("number"));
    let (s, link) = app.api_get("/api/v1/links/form-made").await;
    assert_eq!(s, 200);
    assert_eq!(link["affiliate"], "gourmet_guide");
    // The new link redirects at once.
    let r = app.get_ua("/r/form-made", CHROME).await;
    assert_eq!(r.status(), 302);

    // A bad destination is refused with the reason, and nothing changes.
    let mut bad = form(&csrf);
    bad[1].1 = "form-bad".into();
    bad[4].1 = "javascript:alert(1)".into();
    let r = post(bad, None).await.unwrap();
    assert!(
        location(&r).starts_with("/dashboard/links?error="),
        "{}",
        location(&r)
    );
    assert_eq!(app.api_get("/api/v1/links/form-bad").await.0, 404);
}

#[tokio::test]
async fn a_read_only_key_session_reads_but_cannot_post() {
    let app = TestApp::start().await;
    let (secret, hash, prefix) = clickward::services::keys::new_key();
    app.store
        .create_api_key(hash, prefix, clickward_store::KeyScope::Read, None)
        .await
        .unwrap();
    let r = post_login(&app, &[("api_key", secret.as_str())]).await;
    let cookie = session_cookie(&r).expect("session");
    let r = get(&app, &cookie, "/dashboard/conversions").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("name=\"csrf\""),
        "no forms for a read-only session"
    );
    let r = app
        .client
        .post(app.url("/dashboard/affiliates"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "x"), ("slug", "sneaky")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.api_get("/api/v1/affiliates/sneaky").await.0, 404);
}

#[tokio::test]
async fn sessions_end_when_idle_when_the_password_changes_and_on_logout() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let cookie = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    assert_eq!(get(&app, &cookie, "/dashboard").await.status(), 200);

    // 29 minutes idle is fine (and moves "last seen"); 31 more is not.
    app.clock.set(NOON + 29 * 60_000_000);
    let r = get(&app, &cookie, "/dashboard").await;
    assert_eq!(r.status(), 200);
    let refreshed = session_cookie(&r).expect("last seen moved");
    app.clock.set(NOON + 60 * 60_000_000);
    assert_eq!(get(&app, &refreshed, "/dashboard").await.status(), 303);
    assert_eq!(get(&app, &cookie, "/dashboard").await.status(), 303);

    // A new password ends the sessions made with the old one.
    let cookie = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    assert_eq!(get(&app, &cookie, "/dashboard").await.status(), 200);
    app.store
        .save_user(UserInput {
            username: "merchant".into(),
            role: UserRole::Admin,
            affiliate: None,
            password_hash: Some(session::hash_password("another long password").unwrap()),
            changed_at: NOON + 60 * 60_000_000 + 1,
        })
        .await
        .unwrap();
    assert_eq!(get(&app, &cookie, "/dashboard").await.status(), 303);

    // Logout clears the cookie.
    let cookie = sign_in(&app, "merchant", "another long password").await;
    let r = app
        .client
        .post(app.url("/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let cleared = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with("cw_session=") && v.contains("Max-Age=0"));
    assert!(cleared, "logout removes the session cookie");
}

#[tokio::test]
async fn a_magic_link_signs_an_affiliate_in_once() {
    let app = TestApp::start().await;
    add_user(&app, "tb", Some("techblog"), None).await;
    let user = app.store.find_user("tb".into()).await.unwrap().unwrap();
    let key =
        clickward::process::secrets::cookie_key(&app.data_dir().join("data/secrets")).unwrap();
    let token = session::magic_token(key.signing(), &user, NOON);
    let path = format!("/login/magic?t={token}");
    let r = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(location(&r), "/portal");
    let cookie = session_cookie(&r).expect("signed in");
    let html = get(&app, &cookie, "/portal").await.text().await.unwrap();
    assert!(html.contains("rakuten_sim"), "techblog's own link");
    // The same link again: refused.
    let r = app.client.get(app.url(&path)).send().await.unwrap();
    assert!(location(&r).starts_with("/login?error="));
    assert!(session_cookie(&r).is_none());
    // An expired one too.
    let user = app.store.find_user("tb".into()).await.unwrap().unwrap();
    let old = session::magic_token(key.signing(), &user, NOON - session::MAGIC_LINK_TTL_US - 1);
    let r = app
        .client
        .get(app.url(&format!("/login/magic?t={old}")))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("/login?error="));
}

#[tokio::test]
async fn values_from_visitors_are_text_on_every_page() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    add_user(
        &app,
        "gg",
        Some("gourmet_guide"),
        Some("gourmet guide secret"),
    )
    .await;
    let payload = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let src: String = url::form_urlencoded::byte_serialize(payload.as_bytes()).collect();
    let r = app
        .client
        .get(app.url(&format!("/r/solare?src={src}&sub1={src}")))
        .header("user-agent", CHROME)
        .header("referer", format!("https://evil.example/{payload}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let aff = sign_in(&app, "gg", "gourmet guide secret").await;
    for (cookie, path) in [
        (&admin, "/dashboard"),
        (&admin, "/dashboard/live"),
        (
            &admin,
            "/dashboard/links/solare?src=%3Cscript%3Ealert(3)%3C%2Fscript%3E",
        ),
        (&aff, "/portal"),
        (
            &aff,
            "/portal/links/solare?sub1=%22%3E%3Cscript%3Ealert(4)%3C%2Fscript%3E",
        ),
    ] {
        let html = get(&app, cookie, path).await.text().await.unwrap();
        assert!(!html.contains("<script>alert"), "{path} runs the payload");
        assert!(!html.contains("<img src=x"), "{path} makes an element");
        assert!(
            !html.contains("\"><script"),
            "{path} breaks out of an attribute"
        );
    }
    let live = get(&app, &admin, "/dashboard/live")
        .await
        .text()
        .await
        .unwrap();
    // askama writes numeric entities; either spelling is the text "<script>".
    assert!(
        live.contains("&#60;script&#62;alert(1)") || live.contains("&lt;script&gt;alert(1)"),
        "src shown as text"
    );
    assert!(live.contains("evil.example"), "the referrer is shown");
}

/// Sends the sign-in form as the client at `ip` (behind a trusted proxy).
async fn post_login_from(app: &TestApp, ip: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(app.url("/login"))
        .header("x-forwarded-for", ip)
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_guesser_is_slowed_down_and_the_owner_is_not() {
    let app = TestApp::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let guesser = "203.0.113.5";
    let wrong = [("username", "merchant"), ("password", "guess guess guess")];
    let right = [("username", "merchant"), ("password", ADMIN_PASSWORD)];
    for _ in 0..5 {
        let r = post_login_from(&app, guesser, &wrong).await;
        assert!(
            location(&r).starts_with("/login?error=credentials"),
            "{}",
            location(&r)
        );
    }
    // The guesser must now wait, whatever it sends.
    let r = post_login_from(&app, guesser, &right).await;
    assert!(
        location(&r).starts_with("/login?error=limit"),
        "{}",
        location(&r)
    );
    assert!(session_cookie(&r).is_none());
    let page = app
        .client
        .get(app.url(&location(&r)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Too many failed sign-ins from your address"),
        "{page}"
    );
    // The owner, elsewhere, signs in with the right password at once; an
    // API key from elsewhere works too.
    let r = post_login_from(&app, "198.51.100.7", &right).await;
    assert!(session_cookie(&r).is_some(), "{}", location(&r));
    for _ in 0..12 {
        post_login_from(&app, guesser, &[("api_key", "cwk_wrong_wrong_wrong")]).await;
    }
    let r = post_login_from(&app, "198.51.100.8", &[("api_key", app.admin_key.as_str())]).await;
    assert!(session_cookie(&r).is_some(), "{}", location(&r));
    // The wait grows: after 1 s one more try, then 2 s.
    app.clock.set(NOON + 1_000_000);
    let r = post_login_from(&app, guesser, &wrong).await;
    assert!(
        location(&r).starts_with("/login?error=credentials"),
        "{}",
        location(&r)
    );
    app.clock.set(NOON + 2_000_000);
    let r = post_login_from(&app, guesser, &wrong).await;
    assert!(
        location(&r).starts_with("/login?error=limit"),
        "{}",
        location(&r)
    );
    // Once the wait is over, the right password works from there too.
    app.clock.set(NOON + 60 * 60_000_000);
    let r = post_login_from(&app, guesser, &right).await;
    assert!(session_cookie(&r).is_some(), "{}", location(&r));
}

#[tokio::test]
async fn behind_a_proxy_forms_from_the_public_address_are_accepted() {
    let app = TestApp::start_with(|c| {
        c.dashboard.public_url = Some("https://t.example.com".into());
    })
    .await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let html = get(&app, &admin, "/dashboard/links")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("https://t.example.com/r/solare"),
        "links on the public address"
    );
    let csrf = csrf_of(&html);
    let post = |origin: &'static str, slug: &'static str| {
        app.client
            .post(app.url("/dashboard/affiliates"))
            .header(COOKIE, &admin)
            .header("origin", origin)
            .form(&[("csrf", csrf.as_str()), ("slug", slug)])
            .send()
    };
    // The proxy rewrote Host to 127.0.0.1:port; the page was on the public address.
    assert_eq!(
        post("https://t.example.com", "via_proxy")
            .await
            .unwrap()
            .status(),
        303
    );
    assert_eq!(app.api_get("/api/v1/affiliates/via_proxy").await.0, 200);
    assert_eq!(
        post("https://t.example.com.evil.example", "evil")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(app.api_get("/api/v1/affiliates/evil").await.0, 404);
}

#[tokio::test]
async fn programs_and_affiliates_made_through_forms_work_at_once() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    for (base, slug) in [
        ("/dashboard/programs", "newprog"),
        ("/dashboard/affiliates", "newaff"),
    ] {
        let html = get(&app, &admin, base).await.text().await.unwrap();
        let r = app
            .client
            .post(app.url(base))
            .header(COOKIE, &admin)
            .form(&[
                ("csrf", csrf_of(&html).as_str()),
                ("slug", slug),
                ("name", "New one"),
            ])
            .send()
            .await
            .unwrap();
        assert!(
            location(&r).starts_with(&format!("{base}/{slug}?msg=")),
            "{}",
            location(&r)
        );
        let page = get(&app, &admin, &location(&r)).await.text().await.unwrap();
        assert!(page.contains("New one"), "{base}");
    }
    // The new program's page shows postback URLs with its own token.
    let p = app
        .store
        .get_program(clickward_core::id::Slug::parse("newprog").unwrap())
        .await
        .unwrap();
    let token = app
        .store
        .program_settings(p.id)
        .await
        .unwrap()
        .postback_token
        .unwrap();
    let page = get(&app, &admin, "/dashboard/programs/newprog")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("security_token={token}")),
        "TUNE postback URL with the token"
    );
    // An existing slug is refused with the reason, nothing changes.
    let html = get(&app, &admin, "/dashboard/affiliates")
        .await
        .text()
        .await
        .unwrap();
    let r = app
        .client
        .post(app.url("/dashboard/affiliates"))
        .header(COOKIE, &admin)
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("slug", "newaff"),
            ("name", "Other"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        location(&r).starts_with("/dashboard/affiliates?error="),
        "{}",
        location(&r)
    );
    let (_, a) = app.api_get("/api/v1/affiliates/newaff").await;
    assert_eq!(a["name"], "New one");
}

#[tokio::test]
async fn out_of_range_dates_and_a_control_character_in_next_are_answered_not_500() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    add_user(
        &app,
        "gg",
        Some("gourmet_guide"),
        Some("gourmet guide secret"),
    )
    .await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let affiliate = sign_in(&app, "gg", "gourmet guide secret").await;
    for (cookie, path) in [
        (&admin, "/dashboard?to=9999-12-31"),
        (&admin, "/dashboard?from=1990-01-01"),
        (
            &admin,
            "/dashboard/links/solare?from=0001-01-01&to=9999-12-31",
        ),
        (&affiliate, "/portal?to=9999-12-31"),
        (&affiliate, "/portal?from=1990-01-01&tz=Asia/Tokyo"),
    ] {
        let r = get(&app, cookie, path).await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("showing the last 7 days"),
            "{path} says nothing: {html}"
        );
    }
    let r = post_login(
        &app,
        &[
            ("username", "merchant"),
            ("password", ADMIN_PASSWORD),
            ("next", "/dashboard/\u{0}"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let to = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        !to.contains('\u{0}') && to.starts_with("/dashboard"),
        "{to}"
    );
}

/// The program page's settings and override forms say what the catalogue
/// can; what they save is what the API then shows, and a bad field is
/// named on the page with nothing changed.
#[tokio::test]
async fn the_program_page_configures_settings_and_overrides() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let html = get(&app, &admin, "/dashboard/programs/vendors")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("default=10%, lead=2.00"), "{html}");
    let csrf = csrf_of(&html);
    let post = |path: &'static str, fields: Vec<(&'static str, &'static str)>| {
        let mut f: Vec<(&str, String)> = vec![("csrf", csrf.clone())];
        f.extend(fields.into_iter().map(|(k, v)| (k, v.to_owned())));
        app.client
            .post(app.url(path))
            .header(COOKIE, admin.clone())
            .form(&f)
            .send()
    };
    let settings = |commission: &'static str| {
        vec![
            ("currency", "GBP"),
            ("cookie_window", "14d"),
            ("attribution_window", "14d"),
            ("attribution", "last_click"),
            ("commission", commission),
            ("hold", "manual"),
            ("min_payout", "20.00"),
            ("click_id_param", ""),
            ("postback_ips", ""),
            ("postback_secret", ""),
        ]
    };
    let r = post(
        "/dashboard/programs/vendors/settings",
        settings("default=12.5%"),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(location(&r).contains("msg="), "{}", location(&r));
    let (_, v) = app.api_get("/api/v1/programs/vendors").await;
    assert_eq!(v["currency"], "GBP");
    assert_eq!(v["commission_text"], "default=12.5%");
    assert_eq!(v["hold"], serde_json::Value::Null);
    assert_eq!(v["min_payout"], "20.00");
    assert_eq!(v["owner"], "admin");
    // A bad rate: named, nothing saved.
    let r = post(
        "/dashboard/programs/vendors/settings",
        settings("default=lots"),
    )
    .await
    .unwrap();
    let back = location(&r);
    assert!(
        back.contains("error=") && back.contains("commission"),
        "{back}"
    );
    let (_, v) = app.api_get("/api/v1/programs/vendors").await;
    assert_eq!(v["commission_text"], "default=12.5%");
    // An override, shown on the page; then removed.
    let r = post(
        "/dashboard/programs/vendors/commissions",
        vec![
            ("affiliate", "gourmet_guide"),
            ("commission", "default=15%"),
        ],
    )
    .await
    .unwrap();
    assert!(location(&r).contains("msg="), "{}", location(&r));
    let html = get(&app, &admin, "/dashboard/programs/vendors")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("default=15%"), "{html}");
    let (_, v) = app.api_get("/api/v1/programs/vendors/commissions").await;
    assert_eq!(v["items"][0]["affiliate"], "gourmet_guide");
    post(
        "/dashboard/programs/vendors/commissions",
        vec![("affiliate", "gourmet_guide"), ("commission", "")],
    )
    .await
    .unwrap();
    let (_, v) = app.api_get("/api/v1/programs/vendors/commissions").await;
    assert_eq!(v["items"], serde_json::json!([]));
}

/// What a link puts in a range parameter is echoed quoted and cut short in
/// the page's note, never as a sentence of its own.
#[tokio::test]
async fn a_crafted_range_value_is_cut_in_the_note() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    for path in [
        "/dashboard?tz=Your%20account%20is%20locked.%20Call%20555-0100%20now%20to%20restore%20it",
        "/dashboard?from=Your%20account%20is%20locked.%20Call%20555-0100%20now%20to%20restore%20it",
    ] {
        let html = get(&app, &admin, path).await.text().await.unwrap();
        assert!(!html.contains("555-0100"), "{path}: {html}");
        assert!(html.contains("Your account is locked"), "{path}: no note");
    }
}

#[tokio::test]
async fn the_fraud_page_adds_rules_and_exclusions_and_shows_what_they_did() {
    let app = TestApp::start().await;
    add_user(&app, "merchant", None, Some(ADMIN_PASSWORD)).await;
    let admin = sign_in(&app, "merchant", ADMIN_PASSWORD).await;
    let html = get(&app, &admin, "/dashboard/fraud")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No rules yet"), "{html}");
    let csrf = csrf_of(&html);
    let post = |path: &'static str, fields: Vec<(&'static str, &'static str)>| {
        let mut f: Vec<(&str, String)> = vec![("csrf", csrf.clone())];
        f.extend(fields.into_iter().map(|(k, v)| (k, v.to_owned())));
        app.client
            .post(app.url(path))
            .header(COOKIE, admin.clone())
            .form(&f)
            .send()
    };
    let rule = |settings: &'static str| {
        vec![
            ("id", "flood"),
            ("check", "visitor_velocity"),
            ("action", "reject"),
            ("program", "vendors"),
            ("affiliate", ""),
            ("settings", settings),
        ]
    };
    // A bad window is named; nothing is saved.
    let r = post(
        "/dashboard/fraud/rules",
        rule("limit = 1, window = \"soon\""),
    )
    .await
    .unwrap();
    assert!(
        location(&r).contains("error=") && location(&r).contains("window"),
        "{}",
        location(&r)
    );
    let (_, rules) = app.api_get("/api/v1/rules").await;
    assert_eq!(rules["items"], serde_json::json!([]));
    let r = post(
        "/dashboard/fraud/rules",
        rule("limit = 1, window = \"60s\""),
    )
    .await
    .unwrap();
    assert!(location(&r).contains("msg="), "{}", location(&r));
    // Two clicks of one visitor: the second is invalid, and the page says why.
    for _ in 0..2 {
        assert_eq!(app.get_ua("/r/solare", CHROME).await.status(), 302);
    }
    let html = get(&app, &admin, "/dashboard/fraud")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("<code>flood</code>"), "{html}");
    assert!(
        html.contains("2 clicks from this visitor on this link in 1 min; limit 1"),
        "{html}"
    );
    // The overview counts it.
    let kpis: serde_json::Value = get(&app, &admin, "/dashboard/kpis")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kpis["kpi-invalid"], "1", "{kpis}");
    // "Exclude this browser" marks the admin's own browser.
    let r = post(
        "/dashboard/fraud/exclusions",
        vec![("ip", ""), ("label", "my laptop"), ("browser", "1")],
    )
    .await
    .unwrap();
    let cookie = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("cw_ex="))
        .expect("the exclusion cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = app
        .client
        .get(app.url("/r/boardbrew"))
        .header("user-agent", IPHONE)
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(
        app.clicks("boardbrew").await[0]["verdict"]["reason"],
        "excluded internal traffic (my laptop)"
    );
    let r = post(
        "/dashboard/fraud/exclusions",
        vec![("ip", "not an address"), ("label", "x")],
    )
    .await
    .unwrap();
    assert!(location(&r).contains("error="), "{}", location(&r));
}
