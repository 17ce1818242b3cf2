//! Bot classification from the user agent and the shape of the request.
//!
//! Two lists and one parser decide: npm `isbot`'s generic patterns,
//! crawler-user-agents' named crawlers, and uap-core's parse (its `Spider`
//! device family, its browser, OS and device names), weighed in
//! [`BotDetector::classify_parsed`].
//!
//! The pattern list is npm `isbot` 5.2.3 (Unlicense), vendored verbatim in
//! `data/isbot-patterns.json`. isbot is written for JavaScript regexes; six of
//! its patterns use look-around, which Rust's `regex` does not have. Each is
//! rewritten below as a core pattern plus a check of the text just before or
//! after the match. A test keeps the vendored list and this table in step.
//!
//! Everything is matched on ASCII bytes with `unicode(false)`: Unicode `\w` and
//! `\b` push `regex` off its fast paths and cost ~4× per user agent.

use clickward_core::click::BotReason;
use regex::bytes::{Regex, RegexBuilder};

const ISBOT_PATTERNS: &str = include_str!("../data/isbot-patterns.json");

/// The `pattern` of every entry of crawler-user-agents (MIT), the list the
/// corpus in `../shared/data/user-agents` comes with: named crawlers, matched
/// case-sensitively as that project specifies.
const CRAWLER_PATTERNS: &str = include_str!("../data/crawler-patterns.json");

/// A look-around pattern of isbot, rewritten: `core` must match and the text
/// right before the match must not end with any of `not_before`, the text
/// right after must not start with any of `not_after`.
struct LookAround {
    source: &'static str,
    core: &'static str,
    not_before: &'static [&'static str],
    not_after: &'static [&'static str],
}

const LOOK_AROUNDS: &[LookAround] = &[
    LookAround {
        source: "(?:^|[^g])news(?!sapphire)",
        core: "(?:^|[^g])news",
        not_before: &[],
        not_after: &["sapphire"],
    },
    LookAround {
        source: "(?<! channel/|google/)google(?!(?:wv|app|/google| pixel))",
        core: "google",
        not_before: &[" channel/", "google/"],
        not_after: &["wv", "app", "/google", " pixel"],
    },
    LookAround {
        source: "(?<! cu)bots?(?:\\b|_)",
        core: "bots?(?:\\b|_)",
        not_before: &[" cu"],
        not_after: &[],
    },
    LookAround {
        source: "(?<!cam)scan",
        core: "scan",
        not_before: &["cam"],
        not_after: &[],
    },
    LookAround {
        source: "(?<!lib)http",
        core: "http",
        not_before: &["lib"],
        not_after: &[],
    },
    LookAround {
        source: "java(?!;)",
        core: "java",
        not_before: &[],
        not_after: &[";"],
    },
];

/// Link-preview fetchers ("unfurlers"): they fetch a link because it was
/// pasted into a chat or a post, not because a person clicked it. Checked
/// before the general list so the reason says what happened.
const PREVIEW_FETCHERS: &[&str] = &[
    "slackbot",
    "slack-imgproxy",
    "discordbot",
    "facebookexternalhit",
    "facebookcatalog",
    "meta-externalagent",
    "twitterbot",
    "whatsapp/",
    "telegrambot",
    "linkedinbot",
    "skypeuripreview",
    "pinterestbot",
    "redditbot",
    "embedly",
    "iframely",
    "mastodon/",
    "bluesky cardyb",
    "vkshare",
    "bitlybot",
    "google-pagerenderer",
    "microsoftpreview",
];

/// Why the vendored pattern list could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum BotListError {
    /// The JSON file is not a list of strings.
    #[error("isbot pattern list is not a JSON list of strings: {0}")]
    Json(#[from] serde_json::Error),
    /// A pattern did not compile.
    #[error("bot pattern does not compile: {0}")]
    Regex(#[from] regex::Error),
}

/// JavaScript reads `-` after a class escape inside brackets (`[\\w\\d-.]`)
/// as a literal; Rust's `regex` calls it an invalid range. Escape it.
fn js_to_rust(pattern: &str) -> String {
    pattern.replace("\\d-.", "\\d\\-.")
}

struct CompiledLookAround {
    core: Regex,
    not_before: &'static [&'static str],
    not_after: &'static [&'static str],
}

/// Classifies user agents as bots. Build once, share (it is `Sync`).
pub struct BotDetector {
    plain: Regex,
    look_arounds: Vec<CompiledLookAround>,
    preview: Regex,
    crawlers: Regex,
}

/// What uap-core's parser made of a user agent: the facts the bot decision
/// weighs against the pattern lists. `None`/`"Other"` mean "not recognised".
#[derive(Debug, Clone, Copy, Default)]
pub struct Parsed<'a> {
    /// Browser family (uap-core `user_agent_parsers`), e.g. "Chrome Mobile".
    pub browser: Option<&'a str>,
    /// OS family (uap-core `os_parsers`), e.g. "Android".
    pub os: Option<&'a str>,
    /// Device family (uap-core `device_parsers`); `"Spider"` is uap-core's
    /// name for crawlers.
    pub device: Option<&'a str>,
    /// Device model (uap-core `model_replacement`), e.g. "M bot 54".
    pub model: Option<&'a str>,
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(64 << 20)
        .dfa_size_limit(32 << 20)
        .build()
}

impl BotDetector {
    /// Compiles the vendored isbot list.
    ///
    /// # Errors
    /// [`BotListError`] if the vendored data is broken (a build defect, caught
    /// by the tests).
    pub fn new() -> Result<Self, BotListError> {
        let list: Vec<String> = serde_json::from_str(ISBOT_PATTERNS)?;
        let plain: Vec<String> = list
            .into_iter()
            .filter(|p| !LOOK_AROUNDS.iter().any(|l| l.source == p))
            .map(|p| format!("(?:{})", js_to_rust(&p)))
            .collect();
        let look_arounds = LOOK_AROUNDS
            .iter()
            .map(|l| {
                Ok(CompiledLookAround {
                    core: build(l.core)?,
                    not_before: l.not_before,
                    not_after: l.not_after,
                })
            })
            .collect::<Result<Vec<_>, regex::Error>>()?;
        let preview = PREVIEW_FETCHERS
            .iter()
            .map(|p| regex::escape(p))
            .collect::<Vec<_>>()
            .join("|");
        let crawlers: Vec<String> = serde_json::from_str(CRAWLER_PATTERNS)?;
        let crawlers = crawlers
            .iter()
            .map(|p| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|");
        Ok(Self {
            plain: build(&plain.join("|"))?,
            look_arounds,
            preview: build(&preview)?,
            crawlers: RegexBuilder::new(&crawlers)
                .unicode(false)
                .size_limit(64 << 20)
                .dfa_size_limit(32 << 20)
                .build()?,
        })
    }

    /// Classifies a user agent with what uap-core parsed from it: `None` for
    /// a browser, else the reason. The order is the decision:
    ///
    /// 1. empty → [`BotReason::EmptyUa`]; a link-preview fetcher →
    ///    [`BotReason::PreviewFetcher`]; uap-core's device family `Spider` →
    ///    [`BotReason::UaPattern`], whatever else the agent says.
    /// 2. An agent without a browser's full shape (uap-core names a browser
    ///    and an OS, and a rendering engine is named) and not of an
    ///    [`IN_APP_AND_REGIONAL`] family: a named crawler of
    ///    crawler-user-agents or any isbot pattern makes it a bot; one in
    ///    which uap-core recognises nothing, naming no engine and not
    ///    starting `Mozilla/`, is [`BotReason::NoBrowser`] (isbot's misses are
    ///    mostly such agents).
    /// 3. A browser-shaped or in-app agent is judged with its device model
    ///    and platform tokens blanked (a maker names the device "Discovery
    ///    108C" or "M bot 54", a TV declares `CE-HTML/1.0`): a contact URL
    ///    makes it a bot; otherwise, unless its family is in-app or regional,
    ///    a named crawler or an isbot pattern in the rest does.
    ///
    /// isbot's false positives are exactly what steps 2 and 3 spare: in-app
    /// browsers, webviews, TVs and regional browsers whose device names and
    /// product tokens contain generic words ("discovery", "tools",
    /// "Catcher", "Sogou", "java"). A bot dressed as a browser copies Chrome,
    /// Safari or Firefox and adds its own name, which stays visible.
    pub fn classify_parsed(&self, ua: &[u8], parsed: Parsed<'_>) -> Option<BotReason> {
        if ua.iter().all(u8::is_ascii_whitespace) {
            return Some(BotReason::EmptyUa);
        }
        if self.preview.is_match(ua) {
            return Some(BotReason::PreviewFetcher);
        }
        if parsed.device == Some("Spider") {
            return Some(BotReason::UaPattern);
        }
        let trusted = parsed
            .browser
            .is_some_and(|f| IN_APP_AND_REGIONAL.contains(&f));
        if !trusted && !is_browser_shape(ua, parsed) {
            if self.crawlers.is_match(ua) || self.isbot(ua) {
                return Some(BotReason::UaPattern);
            }
            let unknown =
                parsed.browser.is_none() && parsed.os.is_none() && parsed.device.is_none();
            if unknown && !has_engine(ua) && !ua.starts_with(b"Mozilla/") {
                return Some(BotReason::NoBrowser);
            }
            return None;
        }
        // A device is named by its maker ("Discovery 108C", "M bot 54",
        // "Radar 4G", "HTC Butterfly"): the words of its name say nothing of
        // the client.
        let mut masked = ua.to_vec();
        for name in [parsed.device, parsed.model].into_iter().flatten() {
            blank(&mut masked, name.as_bytes(), b"");
        }
        blank_platform(&mut masked);
        if has_contact_url(&masked)
            || !trusted && (self.crawlers.is_match(&masked) || self.isbot(&masked))
        {
            return Some(BotReason::UaPattern);
        }
        None
    }

    fn isbot(&self, ua: &[u8]) -> bool {
        self.plain.is_match(ua) || self.look_arounds.iter().any(|l| l.matches(ua))
    }

    /// Classifies a user agent by the isbot list alone (the classification
    /// before uap-core's parse was weighed): `None` for a browser, else
    /// [`BotReason::EmptyUa`], [`BotReason::PreviewFetcher`] or
    /// [`BotReason::UaPattern`]. Kept as the reference the corpus tests
    /// compare [`Self::classify_parsed`] with; clicks use the latter.
    pub fn classify_ua(&self, ua: &[u8]) -> Option<BotReason> {
        if ua.iter().all(u8::is_ascii_whitespace) {
            return Some(BotReason::EmptyUa);
        }
        if self.preview.is_match(ua) {
            return Some(BotReason::PreviewFetcher);
        }
        if self.isbot(ua) {
            return Some(BotReason::UaPattern);
        }
        None
    }
}

/// Rendering-engine tokens: every browser names one (Blink and WebKit say
/// `AppleWebKit/` and `KHTML`, Gecko `Gecko/`, Trident `Trident/` or
/// `MSIE `, Presto `Presto/`).
const ENGINE_TOKENS: &[&[u8]] = &[
    b"AppleWebKit/",
    b"Gecko/",
    b"Trident/",
    b"MSIE ",
    b"Presto/",
    b"KHTML",
];

/// uap-core's browser families for in-app browsers, webviews and regional or
/// device browsers. isbot's and crawler-user-agents' generic words are not
/// trusted against these (their product tokens say "tools", "Catcher",
/// "Sogou", "Viber", their shapes are app-specific); uap-core's `Spider` and a
/// contact URL still are. Measured with `examples/bot_eval.rs`: on the
/// corpora used, the bots these families cover all carry one of the two,
/// save one agent crawler-user-agents lists by an in-app browser's own
/// string ("… Mobile Safari/537.36 MetaIAB Facebook").
pub const IN_APP_AND_REGIONAL: &[&str] = &[
    // In-app browsers and webviews.
    "Facebook",
    "Facebook Messenger",
    "Instagram",
    "LINE",
    "WeChat",
    "Twitter",
    "Pinterest",
    "Snapchat",
    "Chrome Mobile WebView",
    "Mobile Safari UI/WKWebView",
    // Regional, feature-phone and device browsers.
    "UC Browser",
    "QQ Browser",
    "QQ Browser Mobile",
    "QQ Browser Mini",
    "Sogou Explorer",
    "Baidu Browser",
    "Baidu Explorer",
    "Dolfin",
    "NetFront",
    "NetFront NX",
    "Opera Mini",
    "Opera Mobile",
    "Samsung Internet",
    "MiuiBrowser",
    "Yandex Browser",
    "Coc Coc",
    "Whale",
    "Amazon Silk",
    "Puffin",
    "Obigo",
    "Polaris",
    "Nokia Browser",
    "Ovi Browser",
    "Nokia Services (WAP) Browser",
    "BlackBerry WebKit",
    "UP.Browser",
    "webOS Browser",
    "Tizen Browser",
    "HbbTV",
];

/// Tokens a device's platform declares: the Android OS build (the maker's,
/// like the model; crawler-user-agents lists one crawler by a build id many
/// real phones share) and the standards TV and feature-phone browsers name
/// (CEA-2014 `CE-HTML/1.0`, ETSI TS 102 796 `HbbTV/1.x`, J2ME
/// `Profile/MIDP-2.0`, `Configuration/CLDC-1.1`), which isbot's
/// `\b\w+/1\.0;` and `java` read as a script's.
const PLATFORM_TOKENS: &[&[u8]] = &[
    b"Build/",
    b"CE-HTML/",
    b"HbbTV/",
    b"Profile/MIDP",
    b"Configuration/CLDC",
    b"JavaPlatform/",
    b"Java/Jbed",
];

/// Blanks each [`PLATFORM_TOKENS`] token up to the next `;`, `)` or space
/// (for `Build/`, up to `;` or `)`: build ids may hold spaces).
fn blank_platform(ua: &mut [u8]) {
    for token in PLATFORM_TOKENS {
        let stops: &[u8] = if *token == b"Build/" { b";)" } else { b"; )" };
        blank(ua, token, stops);
    }
}

/// Overwrites with spaces every occurrence of `needle` (ASCII case ignored)
/// and what follows it up to, not including, the first byte of `stops`
/// (nothing when `stops` is empty).
fn blank(ua: &mut [u8], needle: &[u8], stops: &[u8]) {
    if needle.len() < 2 {
        return;
    }
    let mut i = 0;
    while i + needle.len() <= ua.len() {
        if !ua[i..i + needle.len()].eq_ignore_ascii_case(needle) {
            i += 1;
            continue;
        }
        let mut end = i + needle.len();
        if !stops.is_empty() {
            end = ua[end..]
                .iter()
                .position(|b| stops.contains(b))
                .map_or(ua.len(), |p| end + p);
        }
        ua[i..end].fill(b' ');
        i = end;
    }
}

/// A browser never names a web address to contact; a crawler dressed as an
/// in-app browser does ("Twitter for iPhone BrandVerity/1.0
/// (http://www.brandverity.com/…)").
fn has_contact_url(ua: &[u8]) -> bool {
    ua.windows(7).any(|w| w.eq_ignore_ascii_case(b"http://"))
        || ua.windows(8).any(|w| w.eq_ignore_ascii_case(b"https://"))
}

fn has_engine(ua: &[u8]) -> bool {
    ENGINE_TOKENS
        .iter()
        .any(|t| ua.windows(t.len()).any(|w| w == *t))
}

/// uap-core recognises a browser on an OS, and the agent names a rendering
/// engine: the full shape of a browser.
fn is_browser_shape(ua: &[u8], parsed: Parsed<'_>) -> bool {
    parsed.browser.is_some() && parsed.os.is_some() && has_engine(ua)
}

impl BotDetector {
    /// Which isbot pattern (its source text) or preview fetcher a user agent
    /// matches, for measuring and explaining the list; `None` when none does.
    /// Slow (compiles each pattern): not for the request path.
    pub fn matched_pattern(&self, ua: &[u8]) -> Option<String> {
        if let Some(m) = self.preview.find(ua) {
            return Some(String::from_utf8_lossy(m.as_bytes()).into_owned());
        }
        let crawlers: Vec<String> = serde_json::from_str(CRAWLER_PATTERNS).ok()?;
        for source in crawlers {
            let re = RegexBuilder::new(&source).unicode(false).build().ok()?;
            if re.is_match(ua) {
                return Some(format!("crawler-user-agents {source}"));
            }
        }
        let list: Vec<String> = serde_json::from_str(ISBOT_PATTERNS).ok()?;
        for source in list {
            if let Some(l) = LOOK_AROUNDS.iter().find(|l| l.source == source) {
                let compiled = CompiledLookAround {
                    core: build(l.core).ok()?,
                    not_before: l.not_before,
                    not_after: l.not_after,
                };
                if compiled.matches(ua) {
                    return Some(source);
                }
            } else if build(&js_to_rust(&source)).ok()?.is_match(ua) {
                return Some(source);
            }
        }
        None
    }
}

impl CompiledLookAround {
    fn matches(&self, ua: &[u8]) -> bool {
        self.core.find_iter(ua).any(|m| {
            let before = &ua[..m.start()];
            let after = &ua[m.end()..];
            !self
                .not_before
                .iter()
                .any(|p| ends_with_ignore_case(before, p.as_bytes()))
                && !self
                    .not_after
                    .iter()
                    .any(|p| starts_with_ignore_case(after, p.as_bytes()))
        })
    }
}

fn ends_with_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[hay.len() - needle.len()..].eq_ignore_ascii_case(needle)
}

fn starts_with_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

/// Request-shape signals that no user-agent list can see.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestShape {
    /// The method was `HEAD`.
    pub head: bool,
    /// `Sec-Purpose` or `Purpose` contains `prefetch`, or `X-Moz: prefetch`.
    pub prefetch: bool,
}

/// The final bot decision for one request: request shape first (a HEAD or a
/// prefetch from a real browser is still not a click), then the user agent.
pub fn classify(shape: RequestShape, ua_reason: Option<BotReason>) -> Option<BotReason> {
    if shape.head {
        Some(BotReason::Head)
    } else if shape.prefetch {
        Some(BotReason::Prefetch)
    } else {
        ua_reason
    }
}

/// `true` when a `Sec-Purpose`, `Purpose` or `X-Moz` header value announces a
/// prefetch or prerender (Fetch spec `Sec-Purpose: prefetch[;prerender]`).
pub fn is_prefetch_header(value: &[u8]) -> bool {
    value
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"prefetch"))
        || value
            .windows(9)
            .any(|w| w.eq_ignore_ascii_case(b"prerender"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_look_around_of_the_vendored_list_is_rewritten() {
        let list: Vec<String> = serde_json::from_str(ISBOT_PATTERNS).unwrap();
        let with_look_around: Vec<&String> = list
            .iter()
            .filter(|p| p.contains("(?<") || p.contains("(?=") || p.contains("(?!"))
            .collect();
        assert_eq!(with_look_around.len(), LOOK_AROUNDS.len());
        for p in with_look_around {
            assert!(
                LOOK_AROUNDS.iter().any(|l| l.source == p),
                "look-around pattern {p:?} has no rewrite"
            );
        }
    }

    #[test]
    fn look_around_rewrites_behave_like_the_originals() {
        let d = BotDetector::new().unwrap();
        let bot = |ua: &str| d.classify_ua(ua.as_bytes()).is_some();
        // (?<!cam)scan
        assert!(bot("Mozilla/5.0 (compatible; Netscan/1.0)"));
        assert!(!bot(
            "Mozilla/5.0 CamScanner/6.0 (Linux; Android 12) Mobile"
        ));
        // java(?!;)
        assert!(bot("Java/1.8.0_151"));
        // (?<! cu)bots?
        assert!(bot("Mozilla/5.0 (compatible; SomeBot/2.0)"));
        assert!(!bot(
            "Mozilla/5.0 (Linux; Android 11; Cubot X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"
        ));
        // google(?!app|wv...)
        assert!(!bot(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GoogleApp/300.0 Mobile/15E148 Safari/604.1"
        ));
        assert!(bot("Mozilla/5.0 (compatible; Google-InspectionTool/1.0)"));
    }

    #[test]
    fn preview_fetchers_have_their_own_reason() {
        let d = BotDetector::new().unwrap();
        for ua in [
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Twitterbot/1.0",
            "WhatsApp/2.23.20.0 A",
            "TelegramBot (like TwitterBot)",
        ] {
            assert_eq!(
                d.classify_ua(ua.as_bytes()),
                Some(BotReason::PreviewFetcher),
                "{ua}"
            );
        }
    }

    #[test]
    fn request_shape_wins_over_user_agent() {
        let head = RequestShape {
            head: true,
            prefetch: false,
        };
        assert_eq!(classify(head, None), Some(BotReason::Head));
        let pre = RequestShape {
            head: false,
            prefetch: true,
        };
        assert_eq!(classify(pre, None), Some(BotReason::Prefetch));
        assert_eq!(classify(RequestShape::default(), None), None);
        assert!(is_prefetch_header(b"prefetch;prerender"));
        assert!(is_prefetch_header(b"Prefetch"));
        assert!(!is_prefetch_header(b"navigate"));
    }

    #[test]
    fn empty_user_agent_is_a_bot() {
        let d = BotDetector::new().unwrap();
        assert_eq!(d.classify_ua(b""), Some(BotReason::EmptyUa));
        assert_eq!(d.classify_ua(b"   "), Some(BotReason::EmptyUa));
    }
}
