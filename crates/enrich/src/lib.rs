//! clickward-enrich: from a request's raw facts to what a click records.
//!
//! CPU-bound and cached, so it can run on the redirect path:
//! - [`ua`]: browser, OS and device class from the user agent (ua-parser with
//!   the vendored uap-core 0.18.0 `regexes.yaml`, Apache-2.0), cached by UA;
//! - [`bot`]: bot classification (vendored npm `isbot` 5.2.3 pattern list,
//!   Unlicense, plus link-preview fetchers and request-shape signals);
//! - [`geo`]: country, region and city from an mmdb file (MaxMind GeoIP2 /
//!   GeoLite2 layout or the flat ip-location-db / DB-IP layout);
//! - [`network`]: ASN, hosting, VPN / Tor / proxy from ASN and anonymous-IP
//!   mmdb files (the `hosting` and `anonymous` fraud rules);
//! - [`ip`]: the client IP behind trusted proxies;
//! - [`visitor`]: the keyed BLAKE3 visitor key.
//!
//! Nothing here writes anywhere; the raw IP lives only in the caller's stack.

pub mod bot;
pub mod geo;
pub mod ip;
pub mod network;
pub mod ua;
pub mod visitor;
