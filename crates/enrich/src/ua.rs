//! Browser, OS and device class from the user agent, cached.
//!
//! Parsing uses the `ua-parser` crate with uap-core 0.18.0's `regexes.yaml`
//! (Apache-2.0), vendored as JSON in `data/uap-regexes.json` (converted once
//! with PyYAML; the content is unchanged). A full parse costs ~9 µs; real
//! traffic repeats a few thousand user agents, so results are cached by the
//! user-agent string and the bot verdict is cached with them.

use std::sync::Arc;

use clickward_core::click::{BotReason, DeviceType};
use quick_cache::sync::Cache;

use crate::bot::BotDetector;

const UAP_REGEXES: &str = include_str!("../data/uap-regexes.json");

/// User agents longer than this many bytes are cut before parsing and
/// caching; nothing a browser sends is that long, and it bounds the work an
/// abusive header can cause.
pub const MAX_UA_LEN: usize = 1024;

/// What one user agent says about the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UaInfo {
    /// Browser family, e.g. "Chrome Mobile", "Instagram", "Safari".
    pub browser: Option<Arc<str>>,
    /// OS family, e.g. "iOS", "Android", "Windows".
    pub os: Option<Arc<str>>,
    /// Device class.
    pub device: DeviceType,
    /// Bot verdict from the user agent alone.
    pub bot: Option<BotReason>,
}

/// Why the user-agent parser could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UaError {
    /// The vendored regexes are not valid JSON of the uap-core shape.
    #[error("uap-core regexes do not load: {0}")]
    Json(#[from] serde_json::Error),
    /// A regex of the list did not compile.
    #[error("uap-core regexes do not compile: {0}")]
    Compile(String),
    /// The bot list did not compile.
    #[error(transparent)]
    Bot(#[from] crate::bot::BotListError),
}

/// Parses user agents into [`UaInfo`], with a cache. `Sync`; build once.
pub struct UaParser {
    extractor: ua_parser::Extractor<'static>,
    bots: BotDetector,
    cache: Cache<String, Arc<UaInfo>>,
}

impl UaParser {
    /// Builds the parser (≈100 ms: compiles ~1,200 regexes) with a cache of
    /// `cache_entries` distinct user agents.
    ///
    /// # Errors
    /// [`UaError`] if the vendored data is broken (a build defect).
    pub fn new(cache_entries: usize) -> Result<Self, UaError> {
        let regexes: ua_parser::Regexes<'static> = serde_json::from_str(UAP_REGEXES)?;
        let extractor =
            ua_parser::Extractor::try_from(regexes).map_err(|e| UaError::Compile(e.to_string()))?;
        Ok(Self {
            extractor,
            bots: BotDetector::new()?,
            cache: Cache::new(cache_entries.max(16)),
        })
    }

    /// Parses a user-agent header value (bytes; invalid UTF-8 is replaced).
    pub fn parse(&self, raw: &[u8]) -> Arc<UaInfo> {
        let raw = &raw[..raw.len().min(MAX_UA_LEN)];
        let ua = String::from_utf8_lossy(raw);
        if let Some(hit) = self.cache.get(ua.as_ref()) {
            return hit;
        }
        let info = Arc::new(self.parse_uncached(&ua));
        self.cache.insert(ua.into_owned(), info.clone());
        info
    }

    fn parse_uncached(&self, ua: &str) -> UaInfo {
        let bot = self.bots.classify_ua(ua.as_bytes());
        let (agent, os, dev) = self.extractor.extract(ua);
        // Families are captured from the header: no control character from
        // it may reach a stored click.
        let browser = agent
            .map(|a| a.family)
            .filter(|f| f != "Other")
            .map(|f| Arc::from(clickward_core::clean_text(&f, 128)));
        let os_family = os
            .map(|o| o.os)
            .filter(|f| f != "Other")
            .map(|f| Arc::from(clickward_core::clean_text(&f, 128)));
        let dev_family = dev.as_ref().map(|d| d.device.as_ref()).unwrap_or("Other");
        let dev_brand = dev.as_ref().and_then(|d| d.brand.as_deref()).unwrap_or("");
        let device = if bot.is_some() || dev_family == "Spider" {
            DeviceType::Bot
        } else {
            device_type(ua, dev_family, dev_brand, os_family.as_deref())
        };
        UaInfo {
            browser,
            os: os_family,
            device,
            bot,
        }
    }
}

fn contains_any(hay: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| hay.contains(n))
}

/// Device class from ua-parser's device family and brand, the OS family and a
/// few well-known tokens of the raw UA (Google's rule: Android without
/// "Mobile" is a tablet).
fn device_type(ua: &str, family: &str, brand: &str, os: Option<&str>) -> DeviceType {
    if contains_any(ua, &["PlayStation", "Xbox", "Nintendo"]) {
        return DeviceType::Console;
    }
    if contains_any(
        ua,
        &[
            "SmartTV",
            "SMART-TV",
            "Smart-TV",
            "SmartTv",
            "Web0S",
            "webOS.TV",
            "NetCast",
            "HbbTV",
            "AppleTV",
            "CrKey",
            "BRAVIA",
            "Roku",
            "AFTB",
            "AFTM",
            "AFTS",
            "AFTT",
            "GoogleTV",
            "Android TV",
            "Tizen 2",
            "Tizen 3",
            "Tizen 4",
            "Tizen 5",
            "Tizen 6",
            "Tizen 7",
        ],
    ) && !ua.contains("Mobile")
    {
        return DeviceType::Tv;
    }
    if family == "iPad"
        || contains_any(family, &["Tablet", "Kindle", "Galaxy Tab"])
        || brand == "Tablet"
        || ua.contains("Tablet")
        || ua.contains("iPad")
        || (ua.contains("Android") && !ua.contains("Mobile"))
    {
        return DeviceType::Tablet;
    }
    if matches!(
        os,
        Some("iOS" | "Android" | "Windows Phone" | "KaiOS" | "BlackBerry OS" | "Symbian OS")
    ) {
        return DeviceType::Mobile;
    }
    if ua.contains("Mobi") || family == "iPhone" {
        return DeviceType::Mobile;
    }
    match os {
        Some(
            "Windows" | "Mac OS X" | "Linux" | "Ubuntu" | "Fedora" | "Chrome OS" | "ChromeOS"
            | "Debian" | "FreeBSD" | "OpenBSD" | "NetBSD" | "Mandriva" | "Red Hat" | "SUSE"
            | "Gentoo" | "Arch Linux",
        ) => DeviceType::Desktop,
        Some(os) if os.starts_with("Windows") || os.starts_with("Mac") => DeviceType::Desktop,
        _ => DeviceType::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> UaParser {
        UaParser::new(1000).unwrap()
    }

    #[test]
    fn golden_user_agents_keep_their_families() {
        let p = parser();
        let cases: &[(&str, &str, &str, DeviceType)] = &[
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Safari/537.36",
                "Chrome",
                "Windows",
                DeviceType::Desktop,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.6.1 Mobile/15E148 Safari/604.1",
                "Mobile Safari",
                "iOS",
                DeviceType::Mobile,
            ),
            (
                "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Mobile Safari/537.36",
                "Chrome Mobile",
                "Android",
                DeviceType::Mobile,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                "Mobile Safari",
                "iOS",
                DeviceType::Tablet,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 300.0.0.0 (iPhone14,2; iOS 17_0; en_US)",
                "Instagram",
                "iOS",
                DeviceType::Mobile,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Safari/537.36",
                "Chrome",
                "Mac OS X",
                DeviceType::Desktop,
            ),
        ];
        for (ua, browser, os, device) in cases {
            let info = p.parse(ua.as_bytes());
            assert_eq!(info.browser.as_deref(), Some(*browser), "{ua}");
            assert_eq!(info.os.as_deref(), Some(*os), "{ua}");
            assert_eq!(info.device, *device, "{ua}");
            assert_eq!(info.bot, None, "{ua}");
        }
    }

    #[test]
    fn cached_answer_equals_fresh_answer() {
        let p = parser();
        let ua = b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        let first = p.parse(ua);
        let second = p.parse(ua);
        assert_eq!(first, second);
        assert_eq!(first.device, DeviceType::Bot);
        assert_eq!(first.bot, Some(BotReason::UaPattern));
    }

    #[test]
    fn invalid_utf8_and_huge_agents_do_not_panic() {
        let p = parser();
        let _ = p.parse(&[0xff, 0xfe, b'a', 0xc3]);
        let huge = vec![b'A'; 64 * 1024];
        // A user agent of nothing but letters is not a browser (isbot agrees).
        assert_eq!(p.parse(&huge).bot, Some(BotReason::UaPattern));
    }
}
