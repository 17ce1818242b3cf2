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

use crate::bot::{BotDetector, Parsed};

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

    /// The bot detector this parser classifies with.
    pub fn bots(&self) -> &BotDetector {
        &self.bots
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
        let bot = self.bots.classify_parsed(
            ua.as_bytes(),
            Parsed {
                browser: browser.as_deref(),
                os: os_family.as_deref(),
                device: Some(dev_family).filter(|f| *f != "Other"),
                model: dev.as_ref().and_then(|d| d.model.as_deref()),
            },
        );
        // uap-core's `Spider` is a bot verdict already.
        let device = if bot.is_some() {
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

    /// isbot alone flags each of these real browsers (a bot-like word in a
    /// device name, a TV standard, an in-app product token, an app's own
    /// shape); uap-core's parse clears them.
    #[test]
    fn in_app_regional_and_device_browsers_are_not_bots() {
        let p = parser();
        for ua in [
            // Device models that contain isbot words.
            "Mozilla/5.0 (Linux; Android 7.0; M bot 54) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/78.0.3904.96 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 5.1; Discovery 108C) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/75.0.3770.89 Safari/537.36",
            "Mozilla/5.0 (compatible; MSIE 9.0; Windows Phone OS 7.5; Trident/5.0; IEMobile/9.0; HTC; Radar 4G)",
            // An Android build id that crawler-user-agents lists as a crawler.
            "Mozilla/5.0 (Linux; Android 15; RMX5101 Build/AP3A.240617.008; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/141.0.7390.97 Mobile Safari/537.36",
            // In-app browsers and webviews.
            "[FBAN/FB4A;FBAV/80.0.0.21.65;FBBV/31390006;FBDM/{density=1.5,width=480,height=786};FBLC/pt_BR;FBCR/VIVO;FBMF/LGE;FBBD/lge;FBPN/com.facebook.katana;FBDV/LG-H342;FBSV/5.0.1;FBOP/19;FBCA/armeabi-v7a:armeabi;]",
            "Mozilla/5.0 (Linux; Android 8.1; COR-AL10 Build/HUAWEICOR-AL10; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/57.0.2987.132 MQQBrowser/6.2 TBS/044408 Mobile Safari/537.36 MMWEBID/347 MicroMessenger/7.0.1380(0x2700003A) Process/tools NetType/WIFI Language/zh_CN",
            // Regional browsers.
            "dv(iPh10,2);pr(UCBrowser/13.9.8.1767);ov(15_4_1);ss(375x667);bt(UC);pm(0);bv(0);nm(0);im(0);nt(2);",
            // TV and feature-phone browsers naming their platform standards.
            "Opera/9.80 (Linux mips; U; NETRANGEMMH; Sharp; HbbTV/1.1.1; CE-HTML/1.0; LE542E; FT; LC:deu; CC:che;; en) Presto/2.9.167 Version/11.50",
            "Mozilla/5.0 (Linux; U; Android 1.6; fr-fr; LG-GT540 ; Build/Donut) AppleWebKit/528.5+ (KHTML, like Gecko) Version/3.1.2 Mobile Safari/525.20.1 Java/Jbed/7.0 Profile/MIDP-2.1 Configuration/CLDC-1.1 MMS/LG-Android-MMS-V1.0/1.2",
        ] {
            assert_eq!(p.parse(ua.as_bytes()).bot, None, "{ua}");
            assert!(
                p.bots().matched_pattern(ua.as_bytes()).is_some(),
                "a pattern list alone matches: {ua}"
            );
        }
    }

    /// Bots that copy a browser's user agent and add their own name are still
    /// bots: the masking only covers the device and platform tokens.
    #[test]
    fn bots_dressed_as_browsers_and_bare_scripts_are_bots() {
        let p = parser();
        for ua in [
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36 CloudflareObservatory/1.0",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko; Google Search Console) Chrome/41.0.2272.118 Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (Linux; Android 11; Pixel 5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/W.X.Y.Z Mobile Safari/537.36 Prerender (+https://github.com/prerender/prerender)",
            // An in-app family, but with a contact address: a brand monitor.
            "Mozilla/5.0 (iPhone; CPU iPhone OS 7_0 like Mac OS X) AppleWebKit/537.51.1 (KHTML, like Gecko) Mobile/11A465 Twitter for iPhone BrandVerity/1.0 (http://www.brandverity.com/why-is-brandverity-visiting-me)",
        ] {
            assert_eq!(
                p.parse(ua.as_bytes()).bot,
                Some(BotReason::UaPattern),
                "{ua}"
            );
            assert_eq!(p.parse(ua.as_bytes()).device, DeviceType::Bot, "{ua}");
        }
        let bare = "amazon-kendra-customer-id-<AccountID>";
        assert_eq!(
            p.bots().classify_ua(bare.as_bytes()),
            None,
            "isbot alone misses it"
        );
        assert_eq!(p.parse(bare.as_bytes()).bot, Some(BotReason::NoBrowser));
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
