//! The redirect path's encrypted cookies: the visitor cookie and the
//! programs' attribution cookies.
//!
//! Same format as the `cookie` crate's private jar, which the dashboard and
//! the conversion pixel keep using and which reads what is sealed here (and
//! the other way round, tested below): standard padded base64 of
//! nonce (12 random bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes), with
//! the cookie's name as associated data, under the encryption half of the
//! server's cookie key.
//!
//! Why not the jar here: it expands the AES key for every cookie it seals or
//! opens, and writes `Set-Cookie` through `fmt` with percent-encoding. With
//! two cookies per human click that was ≈10% of a redirect's CPU (profile of
//! `bench/run.sh`, docs/benchmarks.md). The cipher here is expanded once per
//! process; the header is written straight into one buffer.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum_extra::extract::cookie::Key;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Seals and opens cookie values with one expanded key. Cheap to share.
pub struct CookieSealer {
    aead: Aes256Gcm,
}

impl CookieSealer {
    /// A sealer for `key`'s encryption half (the same 32 bytes the private
    /// jar uses).
    pub fn new(key: &Key) -> Self {
        Self {
            aead: Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(key.encryption())),
        }
    }

    /// The sealed form of `value` for the cookie `name` (base64, no characters
    /// that need escaping in a cookie: RFC 6265 `cookie-octet`).
    pub fn seal(&self, name: &str, value: &str) -> String {
        let mut data = Vec::with_capacity(NONCE_LEN + value.len() + TAG_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        data.extend_from_slice(&nonce);
        data.extend_from_slice(value.as_bytes());
        // AES-GCM fails only for messages beyond 64 GiB; a cookie value is
        // bounded by the header size long before that.
        let tag = self
            .aead
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                name.as_bytes(),
                &mut data[NONCE_LEN..],
            )
            .unwrap_or_default();
        data.extend_from_slice(&tag);
        STANDARD.encode(&data)
    }

    /// The value sealed in `sealed` for the cookie `name`; `None` when it was
    /// not sealed by this key for this name, or was changed (a tampered or
    /// foreign cookie is simply not ours).
    pub fn open(&self, name: &str, sealed: &str) -> Option<String> {
        let mut data = STANDARD.decode(sealed).ok()?;
        if data.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let split = data.len() - TAG_LEN;
        let (head, tag) = data.split_at_mut(split);
        let (nonce, msg) = head.split_at_mut(NONCE_LEN);
        let tag = *Tag::from_slice(tag);
        self.aead
            .decrypt_in_place_detached(Nonce::from_slice(nonce), name.as_bytes(), msg, &tag)
            .ok()?;
        String::from_utf8(msg.to_vec()).ok()
    }
}

/// What the request's `Cookie` headers hold under `name`.
pub enum Found {
    /// No cookie of that name.
    Absent,
    /// A cookie of that name that does not open (tampered, foreign, old key).
    Rejected,
    /// The opened value.
    Valid(String),
}

/// Finds the cookie `name` in the request and opens it. Parsing (including
/// the percent-decoding the private jar's own cookies need) is the `cookie`
/// crate's.
pub fn find(sealer: &CookieSealer, headers: &HeaderMap, name: &str) -> Found {
    let mut found = Found::Absent;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for c in cookie::Cookie::split_parse_encoded(value).flatten() {
            if c.name() != name {
                continue;
            }
            match sealer.open(name, c.value()) {
                Some(v) => return Found::Valid(v),
                None => found = Found::Rejected,
            }
        }
    }
    found
}

/// The value of a plain (not sealed) cookie `name`, such as a consent
/// banner's; `None` when the request has none.
pub fn plain(headers: &HeaderMap, name: &str) -> Option<String> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for c in cookie::Cookie::split_parse_encoded(value).flatten() {
            if c.name() == name {
                return Some(c.value().to_owned());
            }
        }
    }
    None
}

/// A `Set-Cookie` value for a sealed cookie:
/// `name=value; HttpOnly; SameSite=Lax[; Secure]; Path=/; Max-Age=seconds`.
/// `None` when the name or value holds bytes a header cannot carry (ours
/// never do).
pub fn set_cookie(name: &str, sealed: &str, max_age_s: i64, secure: bool) -> Option<HeaderValue> {
    let mut max_age = itoa::Buffer::new();
    let max_age = max_age.format(max_age_s);
    let mut out = Vec::with_capacity(name.len() + sealed.len() + 64 + max_age.len());
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(sealed.as_bytes());
    out.extend_from_slice(b"; HttpOnly; SameSite=Lax");
    if secure {
        out.extend_from_slice(b"; Secure");
    }
    out.extend_from_slice(b"; Path=/; Max-Age=");
    out.extend_from_slice(max_age.as_bytes());
    HeaderValue::from_bytes(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum_extra::extract::PrivateCookieJar;
    use axum_extra::extract::cookie::Cookie;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(cookie).expect("header"),
        );
        h
    }

    #[test]
    fn the_private_jar_opens_what_is_sealed_here() {
        let key = Key::generate();
        let sealer = CookieSealer::new(&key);
        let sealed = sealer.seal("cw_vid", "0123abcd");
        let jar = PrivateCookieJar::from_headers(&headers(&format!("cw_vid={sealed}")), key);
        assert_eq!(
            jar.get("cw_vid").map(|c| c.value().to_owned()).as_deref(),
            Some("0123abcd")
        );
    }

    #[test]
    fn what_the_private_jar_set_opens_here() {
        // As a browser sends back a cookie set before this module existed:
        // the jar's Set-Cookie value, percent-encoding included.
        let key = Key::generate();
        let jar = PrivateCookieJar::new(key.clone()).add(Cookie::new("cw_p_acme", "v|a|b|1"));
        let resp = axum::response::IntoResponse::into_response((jar, ()));
        let set = resp
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("one cookie");
        let pair = set.split(';').next().expect("name=value");
        // The jar percent-encodes base64's `/` and `=` (35 sealed bytes end
        // in one `=` of padding); that is what a browser sends back.
        assert!(pair.ends_with("%3D"), "{pair}");
        let sealer = CookieSealer::new(&key);
        match find(&sealer, &headers(pair), "cw_p_acme") {
            Found::Valid(v) => assert_eq!(v, "v|a|b|1"),
            _ => panic!("jar cookie did not open: {pair}"),
        }
    }

    #[test]
    fn tampered_foreign_and_renamed_cookies_do_not_open() {
        let key = Key::generate();
        let sealer = CookieSealer::new(&key);
        let sealed = sealer.seal("cw_vid", "abc");
        // Another key.
        assert!(
            CookieSealer::new(&Key::generate())
                .open("cw_vid", &sealed)
                .is_none()
        );
        // Another name (the name is authenticated).
        assert!(sealer.open("cw_other", &sealed).is_none());
        // One bit flipped.
        let mut raw = STANDARD.decode(&sealed).expect("base64");
        raw[NONCE_LEN] ^= 1;
        assert!(sealer.open("cw_vid", &STANDARD.encode(&raw)).is_none());
        // Not base64, too short.
        assert!(sealer.open("cw_vid", "%%%").is_none());
        assert!(sealer.open("cw_vid", "AAAA").is_none());
        assert!(matches!(
            find(&sealer, &headers("cw_vid=AAAA; x=1"), "cw_vid"),
            Found::Rejected
        ));
        assert!(matches!(
            find(&sealer, &headers("x=1"), "cw_vid"),
            Found::Absent
        ));
    }

    #[test]
    fn set_cookie_carries_the_attributes() {
        let v = set_cookie("cw_vid", "QUJD+/==", 3600, true).expect("header");
        assert_eq!(
            v.to_str().expect("ascii"),
            "cw_vid=QUJD+/==; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600"
        );
        let v = set_cookie("cw_vid", "QUJD", 60, false).expect("header");
        assert!(!v.to_str().expect("ascii").contains("Secure"));
    }
}
