//! The client IP of a request.
//!
//! The socket peer is the client unless the peer is a trusted proxy; then the
//! client is the right-most `X-Forwarded-For` entry that is not a trusted
//! proxy. Entries left of it were written by the client and prove nothing
//! (the same rule as crates.io's `crates_io_real_ip`).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at, from the right.
pub const MAX_XFF_ENTRIES: usize = 32;

/// Folds IPv4-mapped IPv6 (`::ffff:a.b.c.d`) to IPv4 so one client has one address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn parse_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // Some proxies append the port: "1.2.3.4:5678" or "[2001:db8::1]:443".
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// The client IP given the peer, the `X-Forwarded-For` header values in the
/// order received, and the trusted proxy networks.
///
/// Garbage entries are never trusted: if the walk from the right reaches an
/// entry that is not an address before it finds an untrusted one, the last
/// good address seen (a trusted proxy) is used.
pub fn client_ip<'a, I>(peer: IpAddr, xff_values: I, trusted: &[IpNet]) -> IpAddr
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    let peer = canonical(peer);
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return peer;
    }
    let mut last_good = peer;
    let mut seen = 0;
    for value in xff_values.into_iter().rev() {
        let Ok(value) = std::str::from_utf8(value) else {
            return last_good;
        };
        for entry in value.rsplit(',') {
            seen += 1;
            if seen > MAX_XFF_ENTRIES {
                return last_good;
            }
            let Some(ip) = parse_entry(entry).map(canonical) else {
                return last_good;
            };
            if !trusted.iter().any(|n| n.contains(&ip)) {
                return ip;
            }
            last_good = ip;
        }
    }
    last_good
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let got = client_ip(
            ip("198.51.100.7"),
            [b"1.1.1.1".as_slice()],
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn right_most_untrusted_entry_wins() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let got = client_ip(
            ip("127.0.0.1"),
            [b"6.6.6.6, 203.0.113.9, 10.1.2.3".as_slice()],
            &trusted,
        );
        assert_eq!(got, ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let got = client_ip(
            ip("127.0.0.1"),
            [b"6.6.6.6".as_slice(), b"203.0.113.10:5555".as_slice()],
            &trusted,
        );
        assert_eq!(got, ip("203.0.113.10"));
    }

    #[test]
    fn garbage_is_never_trusted() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                [b"not-an-ip, 10.0.0.2".as_slice()],
                &trusted
            ),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), [b"\xff\xfe".as_slice()], &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), std::iter::empty::<&[u8]>(), &trusted),
            ip("127.0.0.1")
        );
        let many = vec![b"10.0.0.1".as_slice(); 100];
        assert_eq!(client_ip(ip("127.0.0.1"), many, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn mapped_v6_is_folded() {
        assert_eq!(canonical(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let got = client_ip(
            ip("::ffff:127.0.0.1"),
            [b"[2001:db8::1]:443".as_slice()],
            &nets(&["127.0.0.1/32"]),
        );
        assert_eq!(got, ip("2001:db8::1"));
    }
}
