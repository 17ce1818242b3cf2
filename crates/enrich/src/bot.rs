//! Bot classification from the user agent and the shape of the request.
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
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(64 << 20)
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
        Ok(Self {
            plain: build(&plain.join("|"))?,
            look_arounds,
            preview: build(&preview)?,
        })
    }

    /// Classifies a user agent alone: `None` for a browser, else the reason
    /// ([`BotReason::EmptyUa`], [`BotReason::PreviewFetcher`] or
    /// [`BotReason::UaPattern`]).
    pub fn classify_ua(&self, ua: &[u8]) -> Option<BotReason> {
        if ua.iter().all(u8::is_ascii_whitespace) {
            return Some(BotReason::EmptyUa);
        }
        if self.preview.is_match(ua) {
            return Some(BotReason::PreviewFetcher);
        }
        if self.plain.is_match(ua) || self.look_arounds.iter().any(|l| l.matches(ua)) {
            return Some(BotReason::UaPattern);
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
