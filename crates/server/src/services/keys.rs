//! Secrets handed to people: API keys and URL tokens. A key is `cwk_` + 43
//! characters of base64url (32 random bytes); only its SHA-256 is stored, so
//! a leaked database leaks no key.

use base64::Engine;
use sha2::{Digest, Sha256};

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

/// API keys this node verified lately, by hash, so that a request with a
/// good key is still answered (a privacy request still received) while the
/// shared store is unavailable. Only consulted then: with the store up every
/// request is checked against it, and a revoked key is forgotten at its next
/// use.
#[derive(Default)]
pub struct KeyCache {
    keys: std::sync::Mutex<
        std::collections::HashMap<[u8; 32], (clickward_store::ApiKey, std::time::Instant)>,
    >,
}

impl KeyCache {
    /// How long a verification is trusted while the store is unavailable.
    pub const TRUST: std::time::Duration = std::time::Duration::from_secs(3600);
    /// Keys remembered at most (more, and the oldest memory is dropped whole).
    const MAX: usize = 10_000;

    /// Notes what the store answered for `hash`: a key, or none (unknown or
    /// revoked: forgotten).
    pub fn remember(&self, hash: [u8; 32], key: Option<&clickward_store::ApiKey>) {
        let Ok(mut keys) = self.keys.lock() else {
            return;
        };
        match key {
            Some(k) => {
                if keys.len() >= Self::MAX {
                    keys.clear();
                }
                keys.insert(hash, (k.clone(), std::time::Instant::now()));
            }
            None => {
                keys.remove(&hash);
            }
        }
    }

    /// The key for `hash` if the store gave it within [`KeyCache::TRUST`].
    pub fn recall(&self, hash: &[u8; 32]) -> Option<clickward_store::ApiKey> {
        let keys = self.keys.lock().ok()?;
        keys.get(hash)
            .filter(|(_, at)| at.elapsed() < Self::TRUST)
            .map(|(k, _)| k.clone())
    }
}
