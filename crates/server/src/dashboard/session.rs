//! Dashboard and portal sessions.
//!
//! A session is one cookie, `cw_session`, encrypted and authenticated with
//! the server's cookie key (AES-256-GCM, axum-extra's `PrivateCookieJar`),
//! HttpOnly, SameSite=Lax, holding who signed in, when, when they were
//! last seen and the session's CSRF token. There is no session table: every
//! request re-checks the cookie against the store (the user still exists
//! with the same password, or the API key is still unrevoked), so changing a
//! password or revoking a key ends the sessions made with it.
//!
//! Decisions: idle expiry refreshes `seen` at most once a minute (one
//! `Set-Cookie` a minute, not one per request); logout clears the cookie
//! (a copied cookie stays valid until its idle or absolute expiry, which is
//! why both are short by default, see `[dashboard]` in the config).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum_extra::extract::PrivateCookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine;
use clickward_store::{KeyScope, User, UserRole};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::process::app::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cw_session";

/// How often a session's last-seen time is rewritten, µs.
const SEEN_GRANULARITY_US: i64 = 60_000_000;

/// How long a magic link stays valid, µs (15 minutes).
pub const MAGIC_LINK_TTL_US: i64 = 15 * 60 * 1_000_000;

/// What the cookie holds (JSON, then encrypted).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// User id; 0 for a session signed in with an API key.
    uid: i64,
    /// SHA-256 of the API key, hex, for key sessions.
    #[serde(default)]
    key: Option<String>,
    /// Signed in at, UTC µs.
    iat: i64,
    /// Last request, UTC µs.
    seen: i64,
    /// CSRF token of the session (base64url, 24 random bytes).
    csrf: String,
}

/// Who a valid session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The merchant side: the whole dashboard.
    Admin {
        /// Shown in the header.
        name: String,
        /// `false` for a session opened with a read-only API key: forms are
        /// refused.
        can_write: bool,
    },
    /// One affiliate: the portal only.
    Affiliate {
        /// Shown in the header.
        name: String,
        /// The affiliate's slug: every portal query is filtered by it.
        slug: String,
    },
}

/// A checked session, put in the request's extensions by the gate.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub who: Who,
    /// The token every form of this session carries.
    pub csrf: String,
    stored: Stored,
}

impl Session {
    /// The name shown in the header.
    pub fn name(&self) -> &str {
        match &self.who {
            Who::Admin { name, .. } | Who::Affiliate { name, .. } => name,
        }
    }
}

fn random_token() -> String {
    crate::services::keys::new_token()
}

fn cookie_of(app: &AppState, stored: &Stored) -> Cookie<'static> {
    let value = serde_json::to_string(stored).unwrap_or_default();
    let mut c = Cookie::new(SESSION_COOKIE, value);
    c.set_http_only(true);
    // Lax, not Strict: a magic link opened from a mail client, and any
    // bookmark followed from another site, must arrive signed in. Forms are
    // guarded by the CSRF token and the Origin check, not by the cookie.
    c.set_same_site(SameSite::Lax);
    c.set_path("/");
    c.set_secure(app.0.cfg.config.cookie_secure);
    c
}

/// Starts a session for a user (password or magic link).
pub fn start_user(app: &AppState, jar: PrivateCookieJar, user: &User) -> PrivateCookieJar {
    let now = app.0.clock.now_micros();
    jar.add(cookie_of(
        app,
        &Stored {
            uid: user.id,
            key: None,
            // Never before the credentials it was made with.
            iat: now.max(user.credentials_changed_at),
            seen: now,
            csrf: random_token(),
        },
    ))
}

/// Starts an admin session for an API key (its SHA-256).
pub fn start_key(app: &AppState, jar: PrivateCookieJar, key_hash: [u8; 32]) -> PrivateCookieJar {
    let now = app.0.clock.now_micros();
    jar.add(cookie_of(
        app,
        &Stored {
            uid: 0,
            key: Some(hex::encode(key_hash)),
            iat: now,
            seen: now,
            csrf: random_token(),
        },
    ))
}

/// Ends the session.
pub fn end(jar: PrivateCookieJar) -> PrivateCookieJar {
    let mut c = Cookie::from(SESSION_COOKIE);
    c.set_path("/");
    jar.remove(c)
}

/// Checks the session cookie: `None` when there is none, it does not
/// decrypt, it has expired, or what it names is gone. The `bool` says the
/// cookie should be re-issued (to move `seen`); the jar then holds it.
pub async fn resolve(
    app: &AppState,
    jar: PrivateCookieJar,
) -> (Option<(Session, bool)>, PrivateCookieJar) {
    let Some(stored) = jar
        .get(SESSION_COOKIE)
        .and_then(|c| serde_json::from_str::<Stored>(c.value()).ok())
    else {
        return (None, jar);
    };
    let d = &app.0.cfg.config.dashboard;
    let now = app.0.clock.now_micros();
    let idle = i64::try_from(d.session_idle.as_micros()).unwrap_or(i64::MAX);
    let max = i64::try_from(d.session_max.as_micros()).unwrap_or(i64::MAX);
    let fresh = now.saturating_sub(stored.seen) <= idle
        && now.saturating_sub(stored.iat) <= max
        && stored.iat <= now + SEEN_GRANULARITY_US;
    if !fresh {
        return (None, jar);
    }
    let who = match who_of(app, &stored).await {
        Some(w) => w,
        None => return (None, jar),
    };
    let refresh = now - stored.seen >= SEEN_GRANULARITY_US;
    let mut stored = stored;
    let jar = if refresh {
        stored.seen = now;
        jar.add(cookie_of(app, &stored))
    } else {
        jar
    };
    let session = Session {
        who,
        csrf: stored.csrf.clone(),
        stored,
    };
    (Some((session, refresh)), jar)
}

/// `true` while `session` would still be accepted: within its maximum age,
/// and what it names still there (a user whose credentials did not change,
/// a key not revoked). Long-lived responses (the live stream) ask as they
/// go, so they end with their session.
pub async fn still_valid(app: &AppState, session: &Session) -> bool {
    let now = app.0.clock.now_micros();
    let max = i64::try_from(app.0.cfg.config.dashboard.session_max.as_micros()).unwrap_or(i64::MAX);
    now.saturating_sub(session.stored.iat) <= max && who_of(app, &session.stored).await.is_some()
}

async fn who_of(app: &AppState, s: &Stored) -> Option<Who> {
    let store = app.0.store.as_ref();
    if s.uid == 0 {
        let hash: [u8; 32] = hex::decode(s.key.as_deref()?).ok()?.try_into().ok()?;
        let key = store.find_api_key(hash).await.ok()??;
        return Some(Who::Admin {
            name: key
                .label
                .clone()
                .unwrap_or_else(|| format!("key {}…", key.prefix)),
            can_write: key.scope == KeyScope::Admin,
        });
    }
    let user = store.get_user(s.uid).await.ok()??;
    // A new password (or role) ends the sessions signed in before it.
    if user.credentials_changed_at > s.iat {
        return None;
    }
    Some(match (user.role, user.affiliate) {
        (UserRole::Admin, _) => Who::Admin {
            name: user.username,
            can_write: true,
        },
        (UserRole::Affiliate, Some(slug)) => Who::Affiliate {
            name: user.username,
            slug,
        },
        (UserRole::Affiliate, None) => return None,
    })
}

/// `true` when `presented` is this session's CSRF token (constant time).
pub fn csrf_ok(session: &Session, presented: &str) -> bool {
    let a = session.stored.csrf.as_bytes();
    let b = presented.as_bytes();
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hashes a password for storage: argon2id with the crate's default
/// parameters (RFC 9106's second recommended option), PHC string.
///
/// # Errors
/// When the password is shorter than 10 characters or hashing fails.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        password.chars().count() >= 10,
        "a password needs at least 10 characters"
    );
    let mut salt = [0u8; 16];
    rand::fill(&mut salt[..]);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

/// Checks a password against a stored PHC hash. A malformed stored hash
/// never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        metrics::counter!(crate::telemetry::PASSWORD_CHECKS_TOTAL).increment(1);
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn magic_mac(app_key: &[u8], payload: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_key).ok()?;
    mac.update(b"magic:");
    mac.update(payload.as_bytes());
    Some(mac)
}

/// A magic sign-in token for `user`, valid [`MAGIC_LINK_TTL_US`] from `now`
/// and only once: it names the user's current credentials time, which
/// signing in with it moves on.
/// Shape: `{user id}.{credentials µs}.{expiry µs}.{HMAC-SHA256, base64url}`.
pub fn magic_token(signing_key: &[u8], user: &User, now: i64) -> String {
    let payload = format!(
        "{}.{}.{}",
        user.id,
        user.credentials_changed_at,
        now + MAGIC_LINK_TTL_US
    );
    let sig = magic_mac(signing_key, &payload)
        .map(|m| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("{payload}.{sig}")
}

/// Checks a magic token: `(user id, credentials µs)` when it is authentic
/// and not expired at `now`. The caller still compares the credentials time
/// with the stored user's.
pub fn check_magic_token(signing_key: &[u8], token: &str, now: i64) -> Option<(i64, i64)> {
    let (payload, sig) = token.rsplit_once('.')?;
    let mut parts = payload.splitn(3, '.');
    let uid: i64 = parts.next()?.parse().ok()?;
    let creds: i64 = parts.next()?.parse().ok()?;
    let expires: i64 = parts.next()?.parse().ok()?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .ok()?;
    magic_mac(signing_key, payload)?.verify_slice(&sig).ok()?;
    (now <= expires).then_some((uid, creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 7,
            username: "ana".into(),
            role: UserRole::Affiliate,
            affiliate: Some("ana".into()),
            password_hash: None,
            credentials_changed_at: 1_000,
            email: None,
            notify_conversions: false,
        }
    }

    #[test]
    fn magic_tokens_are_checked_for_signature_and_expiry() {
        let key = [9u8; 32];
        let t = magic_token(&key, &user(), 5_000);
        assert_eq!(check_magic_token(&key, &t, 5_000), Some((7, 1_000)));
        assert_eq!(
            check_magic_token(&key, &t, 5_000 + MAGIC_LINK_TTL_US + 1),
            None
        );
        assert_eq!(check_magic_token(&[8u8; 32], &t, 5_000), None);
        let forged = t.replacen("7.", "8.", 1);
        assert_eq!(check_magic_token(&key, &forged, 5_000), None);
        assert_eq!(check_magic_token(&key, "garbage", 5_000), None);
    }

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(hash_password("short").is_err());
    }
}
