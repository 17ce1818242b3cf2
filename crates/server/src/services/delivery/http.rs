//! The outbound HTTP client every sink sends through: a timeout on the
//! whole answer head, redirects never followed, at most 1 KiB of an
//! answer read, and destinations on private networks refused by the
//! address a name resolves to when connecting (SSRF), not only by the URL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The most of an answer kept in the delivery log, bytes.
pub const RESPONSE_KEEP: usize = 1024;

/// Whether `ip` is one outbound requests may not reach unless
/// `[outbound] allow_private`: loopback, private (RFC 1918, RFC 4193),
/// link-local (the cloud metadata address 169.254.169.254 among them),
/// shared (RFC 6598), unspecified, multicast, broadcast, documentation,
/// benchmarking and reserved ranges; an IPv4-mapped or NAT64 IPv6 address
/// is judged by its IPv4 address.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            // 64:ff9b::/96 (NAT64) carries an IPv4 address in its last 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return forbidden_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (fd00:ec2::254 too)
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// A resolver that drops forbidden addresses from every answer, so the
/// check holds for the address actually connected to (a name that
/// resolves to 127.0.0.1 today and to a public address at creation time
/// is still refused).
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves only to private, loopback or link-local addresses, which outbound requests may not reach (set [outbound] allow_private = true to allow them)"
                )
                .into());
            }
            let out: Addrs = Box::new(addrs.into_iter());
            Ok(out)
        })
    }
}

/// Installs ring as the process's TLS crypto provider (once; later calls
/// do nothing). reqwest is built without one (`rustls-no-provider`), so
/// every HTTP client of the process, tests' included, needs this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// GET or POST.
    pub method: reqwest::Method,
    /// Absolute http(s) URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body (POST), with its content type.
    pub body: Option<(&'static str, Vec<u8>)>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundAnswer {
    /// The status, when an answer head arrived.
    pub status: Option<u16>,
    /// Why there was no usable answer (or a note on one: a redirect).
    pub error: Option<String>,
    /// Time to the answer head (or to the failure).
    pub latency: Duration,
    /// The first [`RESPONSE_KEEP`] bytes of the body, lossy UTF-8.
    pub response: String,
}

/// The client: one per process, cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl Outbound {
    /// A client with `timeout` per attempt.
    ///
    /// # Errors
    /// When the TLS configuration cannot be built.
    pub fn new(allow_private: bool, timeout: Duration) -> anyhow::Result<Self> {
        install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .user_agent(concat!("clickward/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(16);
        if !allow_private {
            b = b.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Self {
            client: b.build()?,
            allow_private,
            timeout,
        })
    }

    /// Why `url` may not be sent to, judged by its text (scheme, and an
    /// address written in it); names are judged again when connecting.
    pub fn refusal(&self, url: &str) -> Option<String> {
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return Some(format!("not a URL: {e}")),
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return Some("only http and https URLs are sent to".to_owned());
        }
        if self.allow_private {
            return None;
        }
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(d))
                if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") =>
            {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            _ => return None,
        };
        is_forbidden(ip).then(|| {
            format!(
                "{ip} is a private, loopback or link-local address, which outbound requests may not reach (set [outbound] allow_private = true to allow them)"
            )
        })
    }

    /// Sends `req` once. Never fails: every failure is an answer without a
    /// status and with its reason.
    pub async fn send(&self, req: OutboundRequest) -> OutboundAnswer {
        let started = Instant::now();
        if let Some(why) = self.refusal(&req.url) {
            return OutboundAnswer {
                status: None,
                error: Some(why),
                latency: Duration::ZERO,
                response: String::new(),
            };
        }
        let mut b = self.client.request(req.method, &req.url);
        for (k, v) in req.headers {
            b = b.header(k, v);
        }
        if let Some((ty, body)) = req.body {
            b = b.header(reqwest::header::CONTENT_TYPE, ty).body(body);
        }
        let mut resp = match b.send().await {
            Ok(r) => r,
            Err(e) => {
                return OutboundAnswer {
                    status: None,
                    error: Some(describe(&e, self.timeout)),
                    latency: started.elapsed(),
                    response: String::new(),
                };
            }
        };
        let latency = started.elapsed();
        let status = resp.status().as_u16();
        let error = resp.status().is_redirection().then(|| {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("redirect to {to:?} not followed")
        });
        // Only the first KiB is kept; the rest is never read (a receiver
        // answering 5 MB costs a KiB and a closed connection).
        let mut kept = Vec::with_capacity(RESPONSE_KEEP);
        while kept.len() < RESPONSE_KEEP {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    kept.extend_from_slice(&c[..c.len().min(RESPONSE_KEEP - kept.len())])
                }
                Ok(None) | Err(_) => break,
            }
        }
        OutboundAnswer {
            status: Some(status),
            error,
            latency,
            response: String::from_utf8_lossy(&kept).into_owned(),
        }
    }
}

/// A sentence for a failed request, without the URL (it may hold a token).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut why = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    // The innermost cause says what happened (refused, reset, DNS, TLS).
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    if e.is_connect() {
        format!("could not connect: {why}")
    } else {
        format!("request failed: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_forbidden_and_public_ones_are_not() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(is_forbidden(ip), "{bad} must be refused");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert!(!is_forbidden(ip), "{good} must be allowed");
        }
    }

    #[test]
    fn urls_naming_private_addresses_are_refused_by_their_text() {
        let o = Outbound::new(false, Duration::from_secs(1)).unwrap();
        assert!(o.refusal("http://127.0.0.1:9/x").is_some());
        assert!(o.refusal("http://[::1]/x").is_some());
        assert!(o.refusal("http://localhost/x").is_some());
        assert!(
            o.refusal("http://169.254.169.254/latest/meta-data")
                .is_some()
        );
        assert!(o.refusal("ftp://example.com/").is_some());
        assert!(o.refusal("https://example.com/hook").is_none());
        let open = Outbound::new(true, Duration::from_secs(1)).unwrap();
        assert!(open.refusal("http://127.0.0.1:9/x").is_none());
    }
}
