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
