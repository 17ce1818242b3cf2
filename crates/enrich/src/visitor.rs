//! The visitor key: identifies a browser for dedup without storing its IP.
//!
//! `key = BLAKE3-keyed(salt_of_the_UTC_day, "ip-ua\0" ‖ ip(16 bytes) ‖ ua)`,
//! truncated to 16 bytes. Salts are random, one per UTC day, and destroyed
//! once no dedup window can reach them (see `clickward_core::dedup`), after
//! which no key can be linked back to an address, even by us.
//!
//! A visitor with the first-party cookie is identified by the key stored in
//! the cookie instead, which does not change at midnight.

use std::net::IpAddr;

use clickward_core::click::VisitorKey;

/// A daily salt: 32 random bytes.
pub type Salt = [u8; 32];

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match crate::ip::canonical(ip) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The visitor key of `(ip, user agent)` under `salt`.
pub fn visitor_key(salt: &Salt, ip: IpAddr, ua: &[u8]) -> VisitorKey {
    let mut h = blake3::Hasher::new_keyed(salt);
    h.update(b"ip-ua\0");
    h.update(&ip_bytes(ip));
    h.update(ua);
    truncate(h.finalize())
}

/// A visitor key from an opaque identifier (an imported visitor id column),
/// under a fixed key, so the same id always gives the same key.
pub fn imported_visitor_key(key: &Salt, id: &[u8]) -> VisitorKey {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"imported\0");
    h.update(id);
    truncate(h.finalize())
}

fn truncate(hash: blake3::Hash) -> VisitorKey {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    VisitorKey(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_visitor_same_day_same_key_and_salt_changes_it() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.5".parse().unwrap();
        assert_eq!(visitor_key(&a, ip, b"ua"), visitor_key(&a, mapped, b"ua"));
        assert_ne!(visitor_key(&a, ip, b"ua"), visitor_key(&b, ip, b"ua"));
        assert_ne!(visitor_key(&a, ip, b"ua"), visitor_key(&a, ip, b"ub"));
    }
}
