//! Bearer API keys. A key is `cwk_` + 43 characters of base64url (32 random
//! bytes); only its SHA-256 is stored, so a leaked database leaks no key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use base64::Engine;
use clickward_store::{ApiKey, KeyScope};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::http::ApiError;

/// Makes a new key: `(secret to show once, its hash, its display prefix)`.
pub fn new_key() -> (String, [u8; 32], String) {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes[..]);
    let secret = format!(
        "cwk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash_key(&secret);
    let prefix = secret.chars().take(12).collect();
    (secret, hash, prefix)
}

/// A random URL-safe token (24 bytes, 32 characters), for postback URLs.
pub fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a presented key.
pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A request authenticated by an API key whose scope allows its method:
/// `read` keys may only `GET`/`HEAD`; `admin` keys may do anything.
pub struct Authorized(pub ApiKey);

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be \"Bearer <api key>\""))?;
        let key = app
            .0
            .store
            .find_api_key(hash_key(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        let reading = parts.method == Method::GET || parts.method == Method::HEAD;
        if key.scope == KeyScope::Read && !reading {
            return Err(ApiError::forbidden("this API key may only read"));
        }
        Ok(Authorized(key))
    }
}
