//! Sign-in and sign-out: `/login` (password or API key), `/login/magic`,
//! `/logout`.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::PrivateCookieJar;
use clickward_store::{UserInput, UserRole};
use serde::Deserialize;

use super::{page, secure, session};
use crate::process::app::AppState;

/// Failed sign-ins allowed per name (or per "API key") within
/// [`FAILURE_WINDOW_US`] before further attempts are refused until the window
/// has passed. In memory, per node: it slows guessing, it is no audit log.
const MAX_FAILURES: u32 = 10;
/// See [`MAX_FAILURES`]: 15 minutes, µs.
const FAILURE_WINDOW_US: i64 = 15 * 60 * 1_000_000;
/// Names tracked at most (the oldest window is dropped beyond it).
const MAX_TRACKED: usize = 10_000;

/// Recent failed sign-ins: name → (failures, start of the window, UTC µs).
#[derive(Default)]
pub struct SignInFailures(std::sync::Mutex<std::collections::HashMap<String, (u32, i64)>>);

impl SignInFailures {
    /// `true` when `name` may try now.
    fn allowed(&self, name: &str, now: i64) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name)
            .is_none_or(|(n, since)| *n < MAX_FAILURES || now - since > FAILURE_WINDOW_US)
    }

    fn failed(&self, name: &str, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED
            && !map.contains_key(name)
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let e = map.entry(name.to_owned()).or_insert((0, now));
        if now - e.1 > FAILURE_WINDOW_US {
            *e = (0, now);
        }
        e.0 += 1;
    }

    fn succeeded(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    error: Option<String>,
}

/// `?next=` (where to go after signing in) and `?error=` (a code:
/// `credentials`, `limit` or `magic`).
#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

/// Only our own pages are allowed as `next` (no open redirect).
fn safe_next(next: Option<&str>) -> Option<String> {
    next.filter(|n| {
        (n.starts_with("/dashboard") || n.starts_with("/portal"))
            && !n.contains("//")
            && !n.chars().any(char::is_control)
            && !n.contains('\\')
    })
    .map(str::to_owned)
}

/// `GET /login`.
pub async fn form(Query(q): Query<LoginQuery>) -> Response {
    page(&LoginPage {
        next: safe_next(q.next.as_deref()).unwrap_or_default(),
        // Codes, not text: a crafted link cannot put words on this page.
        error: q.error.as_deref().and_then(|code| {
            let text = match code {
                "credentials" => "Wrong username, password or API key.",
                "limit" => "Too many failed sign-ins; wait 15 minutes and try again.",
                "magic" => "This sign-in link is not valid any more; ask for a new one.",
                _ => return None,
            };
            Some(text.to_owned())
        }),
    })
}

/// The sign-in form: a username and password, or an API key.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    next: String,
}

fn failed(next: &str) -> Response {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("error", "credentials")
        .append_pair("next", next)
        .finish();
    secure(Redirect::to(&format!("/login?{q}")).into_response())
}

/// `POST /login`.
pub async fn submit(
    State(app): State<AppState>,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    // Login CSRF: a sign-in must come from our own login page.
    if !super::same_origin(&app, &headers) {
        return super::PageError::Forbidden("This form was sent from another site.".into())
            .into_response();
    }
    let next = safe_next(Some(&f.next));
    let now = app.0.clock.now_micros();
    let failures = &app.0.sign_in_failures;
    let key = f.api_key.trim();
    // Keys are guessed as a whole: one counter for all of them.
    let name = if key.is_empty() {
        f.username.trim().to_lowercase()
    } else {
        " api key".to_owned()
    };
    if !failures.allowed(&name, now) {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("error", "limit")
            .finish();
        return secure(Redirect::to(&format!("/login?{q}")).into_response());
    }
    if !key.is_empty() {
        let hash = crate::services::keys::hash_key(key);
        let found = if key.len() > 256 {
            None
        } else {
            app.0.store.find_api_key(hash).await.ok().flatten()
        };
        if found.is_none() {
            failures.failed(&name, now);
            return failed(&f.next);
        }
        failures.succeeded(&name);
        let jar = session::start_key(&app, jar, hash);
        // A key session is an admin one: the portal is not its to visit.
        let to = next
            .filter(|n| n.starts_with("/dashboard"))
            .unwrap_or_else(|| "/dashboard".to_owned());
        return (jar, secure(Redirect::to(&to).into_response())).into_response();
    }
    if f.username.len() > 200 || f.password.len() > 1024 {
        return failed(&f.next);
    }
    let user = match app.0.store.find_user(f.username.trim().to_owned()).await {
        Ok(Some(u)) => u,
        _ => {
            // Same work as a wrong password, so timing does not tell which
            // usernames exist.
            let password = f.password.clone();
            let _ = tokio::task::spawn_blocking(move || {
                session::verify_password(&password, dummy_hash())
            })
            .await;
            failures.failed(&name, now);
            return failed(&f.next);
        }
    };
    let password = f.password.clone();
    let phc = user.password_hash.clone().unwrap_or_default();
    // argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || session::verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    if !ok {
        failures.failed(&name, now);
        return failed(&f.next);
    }
    failures.succeeded(&name);
    let home = match user.role {
        UserRole::Admin => "/dashboard",
        UserRole::Affiliate => "/portal",
    };
    let to = next
        .filter(|n| n.starts_with(home.trim_end_matches('/')))
        .unwrap_or_else(|| home.to_owned());
    let jar = session::start_user(&app, jar, &user);
    (jar, secure(Redirect::to(&to).into_response())).into_response()
}

/// A real argon2id hash (same parameters as users' ones) of a random
/// password, made once: checking it costs what checking a user's does.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        session::hash_password(&crate::services::keys::new_token()).unwrap_or_default()
    })
}

#[derive(Deserialize)]
pub struct MagicQuery {
    t: Option<String>,
}

/// `GET /login/magic?t=…`: signs in with a magic link (once: signing in
/// moves the user's credentials time, which the token names).
pub async fn magic(
    State(app): State<AppState>,
    jar: PrivateCookieJar,
    Query(q): Query<MagicQuery>,
) -> Response {
    let now = app.0.clock.now_micros();
    let bad = || {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("error", "magic")
            .finish();
        secure(Redirect::to(&format!("/login?{q}")).into_response())
    };
    let Some((uid, creds)) =
        q.t.as_deref()
            .filter(|t| t.len() <= 200)
            .and_then(|t| session::check_magic_token(app.0.cookie_key.signing(), t, now))
    else {
        return bad();
    };
    let Ok(Some(user)) = app.0.store.get_user(uid).await else {
        return bad();
    };
    if user.credentials_changed_at != creds {
        return bad();
    }
    let affiliate = match user
        .affiliate
        .as_deref()
        .map(clickward_core::id::Slug::parse)
    {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return bad(),
        None => None,
    };
    // Used: saving the user again moves its credentials time past the token.
    let saved = app
        .0
        .store
        .save_user(UserInput {
            username: user.username.clone(),
            role: user.role,
            affiliate,
            password_hash: user.password_hash.clone(),
            changed_at: now.max(user.credentials_changed_at + 1),
        })
        .await;
    let Ok(user) = saved else {
        return bad();
    };
    let home = match user.role {
        UserRole::Admin => "/dashboard",
        UserRole::Affiliate => "/portal",
    };
    let jar = session::start_user(&app, jar, &user);
    (jar, secure(Redirect::to(home).into_response())).into_response()
}

/// `POST /logout`: ends the session (no CSRF check: the worst a forged
/// logout does is sign someone out).
pub async fn logout(jar: PrivateCookieJar) -> Response {
    (
        session::end(jar),
        secure(Redirect::to("/login").into_response()),
    )
        .into_response()
}
