//! Sign-in and sign-out: `/login` (password or API key), `/login/magic`,
//! `/logout`.

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::PrivateCookieJar;
use clickward_store::{UserInput, UserRole};
use serde::Deserialize;

use super::{page, secure, session};
use crate::process::app::AppState;

/// Failed sign-ins a client may make before it has to wait.
const FREE_FAILURES: u32 = 5;
/// The first wait after [`FREE_FAILURES`], µs; each further failure doubles
/// it, up to [`MAX_DELAY_US`].
const FIRST_DELAY_US: i64 = 1_000_000;
/// Longest wait between two attempts of one client, µs (15 minutes).
const MAX_DELAY_US: i64 = 15 * 60 * 1_000_000;
/// A client's failures are forgotten this long after its last one, µs.
const FORGET_AFTER_US: i64 = 60 * 60 * 1_000_000;
/// Clients tracked at most.
const MAX_TRACKED: usize = 10_000;
/// How long a sign-in waits for a password check slot before it is told
/// the server is busy.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Guards sign-in against guessing, without making it a weapon against
/// the account's owner:
///
/// - failures are counted per client address (an IPv6 client by its /64),
///   not per account: after [`FREE_FAILURES`] a client waits 1 s, 2 s, 4 s …
///   (at most 15 min) before each next attempt, and is refused without a
///   check until then; the owner signing in from elsewhere is not slowed;
/// - a success from a client forgets its failures; a client's record is
///   forgotten an hour after its last failure; when [`MAX_TRACKED`] clients
///   are tracked, the forgotten and then the least-failing go first, so
///   guessing many names never resets the guesser's own record;
/// - password checks (argon2id, ~19 MiB each) run at most one per two
///   cores at a time, so a flood of sign-ins can neither grow memory nor
///   take the cores redirects need; a sign-in that waits more than 5 s for
///   a check is told to retry;
/// - every failure costs one check: unknown names and passwordless
///   (magic-link) users are checked against a dummy hash.
///
/// In memory, per node: it slows guessing; it is no audit log.
pub struct SignInGuard {
    failures: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, i64)>>,
    checks: tokio::sync::Semaphore,
}

impl Default for SignInGuard {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            failures: Default::default(),
            checks: tokio::sync::Semaphore::new((cores / 2).max(1)),
        }
    }
}

/// The wait after `n` failures, µs.
fn delay_after(n: u32) -> i64 {
    if n < FREE_FAILURES {
        return 0;
    }
    let doublings = (n - FREE_FAILURES).min(20);
    (FIRST_DELAY_US << doublings).min(MAX_DELAY_US)
}

/// The address a client is counted under: IPv6 clients choose freely
/// within their /64.
fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            std::net::IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

impl SignInGuard {
    /// `true` when `client` may try now.
    fn allowed(&self, client: std::net::IpAddr, now: i64) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&client_key(client))
            .is_none_or(|&(n, last)| now - last >= delay_after(n))
    }

    fn failed(&self, client: std::net::IpAddr, now: i64) {
        let client = client_key(client);
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&client) {
            map.retain(|_, &mut (_, last)| now - last <= FORGET_AFTER_US);
            if map.len() >= MAX_TRACKED
                && let Some(least) = map
                    .iter()
                    .min_by_key(|(_, (n, last))| (*n, *last))
                    .map(|(k, _)| *k)
            {
                map.remove(&least);
            }
        }
        let e = map.entry(client).or_insert((0, now));
        if now - e.1 > FORGET_AFTER_US {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
    }

    fn succeeded(&self, client: std::net::IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client_key(client));
    }

    /// Checks `password` against `phc` (a dummy hash when `None`, which
    /// never matches) in a check slot; `None` when no slot came free in
    /// time.
    async fn check(&self, password: &str, phc: Option<&str>) -> Option<bool> {
        let _slot = tokio::time::timeout(CHECK_WAIT, self.checks.acquire())
            .await
            .ok()?
            .ok()?;
        let real = phc.is_some_and(|h| !h.is_empty());
        let phc = match phc {
            Some(h) if real => h.to_owned(),
            _ => dummy_hash().to_owned(),
        };
        let password = password.to_owned();
        // argon2 is deliberately slow: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || session::verify_password(&password, &phc))
            .await
            .unwrap_or(false);
        Some(ok && real)
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    error: Option<String>,
}

/// `?next=` (where to go after signing in) and `?error=` (a code:
/// `credentials`, `limit`, `busy` or `magic`).
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
                "limit" => "Too many failed sign-ins from your address; wait a little (longer after each failure) and try again.",
                "busy" => "The server is busy checking other sign-ins; try again in a moment.",
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
    to_login("credentials", Some(next))
}

/// Back to the sign-in form with an error code (and where to go after).
fn to_login(error: &str, next: Option<&str>) -> Response {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("error", error);
    if let Some(n) = next {
        q.append_pair("next", n);
    }
    secure(Redirect::to(&format!("/login?{}", q.finish())).into_response())
}

/// `POST /login`.
pub async fn submit(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
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
    let guard = &app.0.sign_in;
    let client = crate::http::client_of(&app, peer, &headers);
    if let Some(l) =
        crate::http::over_limit(&app, crate::services::limits::Class::Login, client).await
    {
        return l.into_response();
    }
    if !guard.allowed(client, now) {
        metrics::counter!(crate::telemetry::SIGN_IN_THROTTLED_TOTAL).increment(1);
        return to_login("limit", None);
    }
    let key = f.api_key.trim();
    if !key.is_empty() {
        let hash = crate::services::keys::hash_key(key);
        let found = if key.len() > 256 {
            None
        } else {
            app.0.store.find_api_key(hash).await.ok().flatten()
        };
        if found.is_none() {
            guard.failed(client, now);
            return failed(&f.next);
        }
        guard.succeeded(client);
        let jar = session::start_key(&app, jar, hash);
        // A key session is an admin one: the portal is not its to visit.
        let to = next
            .filter(|n| n.starts_with("/dashboard"))
            .unwrap_or_else(|| "/dashboard".to_owned());
        return (jar, secure(Redirect::to(&to).into_response())).into_response();
    }
    if f.username.len() > 200 || f.password.len() > 1024 {
        guard.failed(client, now);
        return failed(&f.next);
    }
    // Every answer below costs one password check, so timing tells nothing
    // about which names exist or which users sign in by magic link.
    let user = app
        .0
        .store
        .find_user(f.username.trim().to_owned())
        .await
        .ok()
        .flatten();
    let phc = user.as_ref().and_then(|u| u.password_hash.as_deref());
    let Some(ok) = guard.check(&f.password, phc).await else {
        return to_login("busy", Some(&f.next));
    };
    let Some(user) = user.filter(|_| ok) else {
        guard.failed(client, now);
        return failed(&f.next);
    };
    guard.succeeded(client);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guessing_from_many_addresses_never_evicts_a_busy_guesser() {
        let g = SignInGuard::default();
        let guesser: std::net::IpAddr = "203.0.113.5".parse().unwrap();
        for i in 0..8 {
            g.failed(guesser, i);
        }
        for i in 0..(MAX_TRACKED as u32 + 50) {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            g.failed(ip, 100);
        }
        assert!(!g.allowed(guesser, 101), "the guesser's record was evicted");
        assert!(g.failures.lock().unwrap().len() <= MAX_TRACKED);
        // One /64 is one client.
        let a: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for i in 0..FREE_FAILURES {
            g.failed(a, i64::from(i));
        }
        assert!(!g.allowed(b, 10));
    }

    #[test]
    fn the_wait_doubles_and_is_capped() {
        assert_eq!(delay_after(FREE_FAILURES - 1), 0);
        assert_eq!(delay_after(FREE_FAILURES), FIRST_DELAY_US);
        assert_eq!(delay_after(FREE_FAILURES + 3), 8 * FIRST_DELAY_US);
        assert_eq!(delay_after(u32::MAX), MAX_DELAY_US);
    }
}
