//! The click record and its classification.

use serde::{Deserialize, Serialize};

use crate::Micros;
use crate::id::ClickId;

/// Longest kept `src` or `subN` value, in bytes; longer values are cut at a
/// character boundary (the click is still recorded).
pub const MAX_PARAM_LEN: usize = 255;
/// Longest kept referrer, in bytes, after its query and fragment are removed.
pub const MAX_REFERRER_LEN: usize = 512;

/// Why a hit was classified as automated. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BotReason {
    /// The user agent matched the bot pattern list (npm `isbot`, Unlicense).
    UaPattern,
    /// A link-preview fetcher (Slackbot, Discordbot, facebookexternalhit,
    /// Twitterbot, WhatsApp, TelegramBot, …) unfurling a shared link.
    PreviewFetcher,
    /// A `HEAD` request: no browser follows a link with HEAD.
    Head,
    /// A speculative fetch: `Sec-Purpose: prefetch`, `Purpose: prefetch` or
    /// `X-Moz: prefetch` (Fetch spec and browsers' speculation rules).
    Prefetch,
    /// No `User-Agent` header, or an empty one.
    EmptyUa,
    /// The user agent names no browser, OS, device or rendering engine
    /// (uap-core recognises nothing in it): a script, not a browser.
    NoBrowser,
}

impl BotReason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BotReason::UaPattern => "ua_pattern",
            BotReason::PreviewFetcher => "preview_fetcher",
            BotReason::Head => "head",
            BotReason::Prefetch => "prefetch",
            BotReason::EmptyUa => "empty_ua",
            BotReason::NoBrowser => "no_browser",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ua_pattern" => BotReason::UaPattern,
            "preview_fetcher" => BotReason::PreviewFetcher,
            "head" => BotReason::Head,
            "prefetch" => BotReason::Prefetch,
            "empty_ua" => BotReason::EmptyUa,
            "no_browser" => BotReason::NoBrowser,
            _ => return None,
        })
    }
}

/// Device class derived from the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// Desktop or laptop browser.
    Desktop,
    /// Phone.
    Mobile,
    /// Tablet.
    Tablet,
    /// Smart TV or set-top box.
    Tv,
    /// Game console.
    Console,
    /// Crawler, fetcher or other automated client.
    Bot,
    /// Could not tell.
    #[default]
    Unknown,
}

impl DeviceType {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Desktop => "desktop",
            DeviceType::Mobile => "mobile",
            DeviceType::Tablet => "tablet",
            DeviceType::Tv => "tv",
            DeviceType::Console => "console",
            DeviceType::Bot => "bot",
            DeviceType::Unknown => "unknown",
        }
    }

    /// Parses a stored name; unknown names give [`DeviceType::Unknown`].
    pub fn parse(s: &str) -> Self {
        match s {
            "desktop" => DeviceType::Desktop,
            "mobile" => DeviceType::Mobile,
            "tablet" => DeviceType::Tablet,
            "tv" => DeviceType::Tv,
            "console" => DeviceType::Console,
            "bot" => DeviceType::Bot,
            _ => DeviceType::Unknown,
        }
    }
}

/// A 16-byte keyed hash that identifies a browser without its IP
/// (see `clickward_enrich::visitor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VisitorKey(pub [u8; 16]);

impl VisitorKey {
    /// Lower-case hex, 32 characters.
    pub fn to_hex(self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 32 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
        }
        Some(Self(out))
    }
}

/// Placement and sub-ids read from a tracking request's query string.
///
/// Keys (DESIGN.md §4): `src` (alias `source`); `sub1..sub5` with the aliases
/// `aff_sub, aff_sub2..aff_sub5` (TUNE/HasOffers) and `s1..s5` (Prosper202).
/// The first occurrence of a parameter wins; empty values count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingParams {
    /// Placement (`src`).
    pub src: Option<String>,
    /// `sub1`..`sub5`.
    pub subs: [Option<String>; 5],
}

impl TrackingParams {
    /// Reads the parameters from decoded `(key, value)` pairs; other keys are
    /// ignored, long values are cut to [`MAX_PARAM_LEN`] bytes.
    pub fn from_pairs<'a, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut p = TrackingParams::default();
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            let slot = match k {
                "src" | "source" => &mut p.src,
                "sub1" | "aff_sub" | "s1" => &mut p.subs[0],
                "sub2" | "aff_sub2" | "s2" => &mut p.subs[1],
                "sub3" | "aff_sub3" | "s3" => &mut p.subs[2],
                "sub4" | "aff_sub4" | "s4" => &mut p.subs[3],
                "sub5" | "aff_sub5" | "s5" => &mut p.subs[4],
                _ => continue,
            };
            if slot.is_none() {
                let v = crate::clean_text(v, MAX_PARAM_LEN);
                if !v.is_empty() {
                    *slot = Some(v);
                }
            }
        }
        p
    }
}

/// Keeps the scheme, host and path of a referrer, cut to
/// [`MAX_REFERRER_LEN`] bytes. Query strings and fragments are dropped: they
/// often carry e-mail addresses, tokens or search terms, which a click record
/// does not need; so is userinfo (`user:pass@`), a credential. Control
/// characters are removed ([`crate::clean_text`]). Returns `None` for an
/// empty referrer.
pub fn normalize_referrer(raw: &str) -> Option<String> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let r = raw[..end].trim();
    // `scheme://user:pass@host/path` → `scheme://host/path`.
    let r: std::borrow::Cow<'_, str> = match r.split_once("://") {
        Some((scheme, rest)) => {
            let auth_end = rest.find('/').unwrap_or(rest.len());
            match rest[..auth_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]).into(),
                None => r.into(),
            }
        }
        None => r.into(),
    };
    let r = crate::clean_text(&r, MAX_REFERRER_LEN);
    (!r.is_empty()).then_some(r)
}

/// The lower-cased host of a (normalized) referrer: `https://Qiita.com/x` →
/// `qiita.com`; `None` when there is none.
pub fn referrer_host(referrer: &str) -> Option<String> {
    let rest = referrer
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(referrer);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    // Drop a `:port`, but not the colons of a bare IPv6 literal.
    let host = match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (h.ends_with(']') || !h.contains(':')) =>
        {
            h
        }
        _ => host,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Everything recorded about one click except its unique flag, which the
/// store decides when it writes the click (see [`crate::dedup`]).
///
/// There is no IP address here, by construction.
// Serde: a node's spool keeps clicks until they reach the shared store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewClick {
    /// The click's id (its ms timestamp equals `ts / 1000`).
    pub click_id: ClickId,
    /// When the request arrived, UTC µs.
    pub ts: Micros,
    /// The link's database id.
    pub link_id: i64,
    /// The link's program id.
    pub program_id: i64,
    /// The link's affiliate id, if any.
    pub affiliate_id: Option<i64>,
    /// Placement and sub-ids.
    pub params: TrackingParams,
    /// Normalized referrer (see [`normalize_referrer`]).
    pub referrer: Option<String>,
    /// Device class.
    pub device: DeviceType,
    /// OS family from ua-parser (e.g. "iOS", "Windows").
    pub os: Option<String>,
    /// Browser family from ua-parser (e.g. "Chrome Mobile", "Instagram").
    pub browser: Option<String>,
    /// Why it is a bot, or `None` for a human click.
    pub bot: Option<BotReason>,
    /// ISO 3166-1 alpha-2 country code from GeoIP.
    pub country: Option<String>,
    /// Region (first subdivision) name from GeoIP.
    pub region: Option<String>,
    /// City name from GeoIP.
    pub city: Option<String>,
    /// The visitor key stored with the click.
    pub visitor_key: VisitorKey,
    /// Keys the same visitor had under earlier salts still inside the dedup
    /// window (used for the unique decision only, never stored).
    pub previous_keys: Vec<VisitorKey>,
    /// What the fraud rules decided (`flag`, `reject`, `block`); `None` for
    /// a clean click. Never set on a bot click (a bot is already not human).
    #[serde(default)]
    pub verdict: Option<crate::fraud::Verdict>,
    /// Whether the click was taken with cookies or without (the visitor
    /// asked not to be tracked and the program is cookieless).
    #[serde(default)]
    pub consent: crate::program::ConsentMode,
}

impl NewClick {
    /// `true` when the click is a human click (neither bot nor invalid).
    pub fn is_human(&self) -> bool {
        self.bot.is_none() && !self.is_invalid()
    }

    /// `true` when a fraud rule rejected or blocked it (`invalid_clicks`).
    pub fn is_invalid(&self) -> bool {
        self.verdict
            .as_ref()
            .is_some_and(|v| v.action.invalidates())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_fill_the_same_slots_first_wins() {
        let p = TrackingParams::from_pairs([
            ("source", "qiita"),
            ("src", "ignored"),
            ("aff_sub", "a"),
            ("s2", "b"),
            ("sub5", ""),
            ("aff_sub5", "e"),
            ("other", "x"),
        ]);
        assert_eq!(p.src.as_deref(), Some("qiita"));
        assert_eq!(p.subs[0].as_deref(), Some("a"));
        assert_eq!(p.subs[1].as_deref(), Some("b"));
        assert_eq!(p.subs[4].as_deref(), Some("e"));
        assert!(p.subs[2].is_none());
    }

    #[test]
    fn long_values_are_cut_not_refused() {
        let long = "é".repeat(1000);
        let p = TrackingParams::from_pairs([("src", long.as_str())]);
        let src = p.src.unwrap_or_default();
        assert!(src.len() <= MAX_PARAM_LEN);
        assert!(src.chars().all(|c| c == 'é'));
    }

    #[test]
    fn referrer_loses_query_and_fragment() {
        assert_eq!(
            normalize_referrer("https://qiita.com/u/items/1?email=a@b.c#x").as_deref(),
            Some("https://qiita.com/u/items/1")
        );
        assert_eq!(normalize_referrer(""), None);
        assert_eq!(normalize_referrer("?q=1"), None);
    }

    #[test]
    fn referrer_loses_userinfo_and_control_characters() {
        assert_eq!(
            normalize_referrer("https://user:pass@x.example/p?q=1").as_deref(),
            Some("https://x.example/p")
        );
        assert_eq!(
            normalize_referrer("https://a@b@x.example/p/@home").as_deref(),
            Some("https://x.example/p/@home")
        );
        assert_eq!(
            normalize_referrer("https://x.example/\0p").as_deref(),
            Some("https://x.example/p")
        );
        assert_eq!(normalize_referrer("\0"), None);
        let p = TrackingParams::from_pairs([("src", "\0"), ("sub1", "a\0b")]);
        assert_eq!(p.src, None);
        assert_eq!(p.subs[0].as_deref(), Some("ab"));
    }

    #[test]
    fn referrer_hosts() {
        assert_eq!(
            referrer_host("https://Qiita.com/u/items/1").as_deref(),
            Some("qiita.com")
        );
        assert_eq!(
            referrer_host("http://blog.example:8080/x").as_deref(),
            Some("blog.example")
        );
        assert_eq!(
            referrer_host("android-app://com.google.android.gm/").as_deref(),
            Some("com.google.android.gm")
        );
        assert_eq!(
            referrer_host("https://user@host.example/").as_deref(),
            Some("host.example")
        );
        assert_eq!(referrer_host(""), None);
    }

    #[test]
    fn visitor_key_hex_round_trip() {
        let k = VisitorKey([0xab; 16]);
        assert_eq!(VisitorKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(VisitorKey::from_hex("zz"), None);
    }
}
