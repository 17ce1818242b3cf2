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
use crate::app::AppState;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    error: Option<String>,
}

/// `?next=` (where to go after signing in) and `?error=`.
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
            && !n.contains('\\')
    })
    .map(str::to_owned)
}

/// `GET /login`.
pub async fn form(Query(q): Query<LoginQuery>) -> Response {
    page(&LoginPage {
        next: safe_next(q.next.as_deref()).unwrap_or_default(),
        error: q
            .error
            .map(|e| clickward_core::truncate_utf8(&e, 200).to_owned()),
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
        .append_pair("error", "Wrong username, password or API key.")
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
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://").map(|(_, rest)| rest.to_owned()))
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host));
        if !same {
            return super::PageError::Forbidden("This form was sent from another site.".into())
                .into_response();
        }
    }
    let next = safe_next(Some(&f.next));
    let key = f.api_key.trim();
    if !key.is_empty() {
        if key.len() > 256 {
            return failed(&f.next);
        }
        let hash = crate::auth::hash_key(key);
        return match app.0.store.find_api_key(hash).await {
            Ok(Some(_)) => {
                let jar = session::start_key(&app, jar, hash);
                let to = next.unwrap_or_else(|| "/dashboard".to_owned());
                (jar, secure(Redirect::to(&to).into_response())).into_response()
            }
            _ => failed(&f.next),
        };
    }
    if f.username.len() > 200 || f.password.len() > 1024 {
        return failed(&f.next);
    }
    let user = match app.0.store.find_user(f.username.trim().to_owned()).await {
        Ok(Some(u)) => u,
        _ => {
            // Same work as a wrong password, so timing does not tell which
            // usernames exist.
            let _ = session::verify_password(&f.password, DUMMY_HASH);
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
        return failed(&f.next);
    }
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

/// A well-formed argon2id hash of nothing anyone types.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3M3Rj7B2yJ8TmE5oWvYQ1m8r0m5qfPqQ2kQkZx0c6pA";

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
            .append_pair(
                "error",
                "This sign-in link is not valid any more; ask for a new one.",
            )
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
