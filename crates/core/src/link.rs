//! Programs, affiliates and tracking links, and how a link's destination
//! becomes the `Location` of one click.
//!
//! A destination is a URL template. Macros (`{click_id} {code} {affiliate}
//! {program} {src} {sub1}..{sub5}`, DESIGN.md §4) are replaced by the
//! click's values, percent-encoded. Macros may appear only after the host:
//! nothing from the request ever chooses where the visitor is sent.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::id::{LinkCode, Slug};

/// Longest accepted destination template, in bytes.
pub const MAX_DESTINATION_LEN: usize = 4096;

/// Whether a program, affiliate or link currently works.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Works normally.
    #[default]
    Active,
    /// Kept for history; its links answer 404 (or the fallback URL).
    Disabled,
}

impl Status {
    /// The stored spelling: `active` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disabled => "disabled",
        }
    }

    /// Parses the stored spelling; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Status::Active),
            "disabled" => Some(Status::Disabled),
            _ => None,
        }
    }
}

/// The status code of a tracking redirect.
///
/// Only temporary redirects exist: 301 and 308 are cached by browsers, and a
/// cached redirect never reaches the tracker again, so its clicks vanish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedirectStatus {
    /// 302 Found (the default).
    #[default]
    Found,
    /// 307 Temporary Redirect (keeps the method; some merchants ask for it).
    Temporary,
}

/// Why a redirect status was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectStatusError {
    /// 301 or 308 were asked for.
    #[error(
        "redirect status {0} is permanent: browsers cache it and later clicks are never recorded; use 302 or 307"
    )]
    Permanent(u16),
    /// Any other number.
    #[error("redirect status {0} is not a redirect clickward sends; use 302 or 307")]
    Unsupported(u16),
}

impl RedirectStatus {
    /// Parses 302 or 307.
    ///
    /// # Errors
    /// [`RedirectStatusError::Permanent`] for 301/308, `Unsupported` otherwise.
    pub fn from_code(code: u16) -> Result<Self, RedirectStatusError> {
        match code {
            302 => Ok(Self::Found),
            307 => Ok(Self::Temporary),
            301 | 308 => Err(RedirectStatusError::Permanent(code)),
            other => Err(RedirectStatusError::Unsupported(other)),
        }
    }

    /// The HTTP status code.
    pub fn code(self) -> u16 {
        match self {
            Self::Found => 302,
            Self::Temporary => 307,
        }
    }
}

impl Serialize for RedirectStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.code())
    }
}

impl<'de> Deserialize<'de> for RedirectStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(d)?;
        Self::from_code(code).map_err(serde::de::Error::custom)
    }
}

/// Who owns an item's settings: the catalogue file, or the people editing
/// it through the API, the CLI or the dashboard.
///
/// The rule: the catalogue file applies an entry when the entry changed
/// since it was last applied, and only to items it owns. An item made or
/// changed through the API, CLI or dashboard is the admins' from then on:
/// a reload or restart leaves it as it is and reports it as drifted from
/// the file (README, "Who owns an item").
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// Declared in the catalogue file, as last applied.
    #[default]
    Catalog,
    /// Made or last changed through the API, the CLI or the dashboard.
    Admin,
}

impl Owner {
    /// `catalog` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Catalog => "catalog",
            Owner::Admin => "admin",
        }
    }
}

/// A program (offer, campaign): what is promoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Program {
    /// Database id.
    pub id: i64,
    /// Public name used in URLs, the CLI and the `{program}` macro.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Active or disabled; a disabled program's links do not redirect.
    pub status: Status,
    /// Who owns its settings.
    pub owner: Owner,
}

/// An affiliate (publisher, partner): who sends traffic.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Affiliate {
    /// Database id.
    pub id: i64,
    /// Public name used in URLs, the CLI and the `{affiliate}` macro.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Active or disabled; a disabled affiliate's links do not redirect.
    pub status: Status,
    /// Who owns its settings.
    pub owner: Owner,
}

/// UTM parameters added to the destination when it does not already carry them
/// (GA4 reads `utm_source`, `utm_medium`, `utm_campaign`, `utm_content`,
/// `utm_term`, `utm_id`). Values may use the destination macros.
pub type UtmDefaults = BTreeMap<String, String>;

/// The UTM keys a link may default (Google Analytics 4 campaign parameters).
pub const UTM_KEYS: [&str; 6] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "utm_id",
];

/// A tracking link as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Database id.
    pub id: i64,
    /// The code in `/r/{code}`.
    pub code: LinkCode,
    /// The program it promotes.
    pub program: Slug,
    /// The affiliate it belongs to, if any.
    pub affiliate: Option<Slug>,
    /// Destination template (see [`Destination`]).
    pub destination: String,
    /// 302 or 307.
    pub redirect: Option<RedirectStatus>,
    /// UTM defaults.
    pub utm: UtmDefaults,
    /// Active or disabled.
    pub status: Status,
    /// Who owns its settings.
    pub owner: Owner,
}

/// A value a macro can insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Macro {
    /// `{click_id}`: the click's ULID.
    ClickId,
    /// `{code}`: the link code.
    Code,
    /// `{affiliate}`: the affiliate slug (empty when none).
    Affiliate,
    /// `{program}`: the program slug.
    Program,
    /// `{src}`: placement from the request (empty when absent).
    Src,
    /// `{sub1}`..`{sub5}`: sub-ids from the request, index 0..=4.
    Sub(usize),
}

impl Macro {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "click_id" => Macro::ClickId,
            "code" => Macro::Code,
            "affiliate" => Macro::Affiliate,
            "program" => Macro::Program,
            "src" => Macro::Src,
            "sub1" => Macro::Sub(0),
            "sub2" => Macro::Sub(1),
            "sub3" => Macro::Sub(2),
            "sub4" => Macro::Sub(3),
            "sub5" => Macro::Sub(4),
            _ => return None,
        })
    }
}

/// The names accepted between braces, for error messages.
pub const MACRO_NAMES: &str = "{click_id} {code} {affiliate} {program} {src} {sub1}..{sub5}";

/// Why a destination template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Longer than [`MAX_DESTINATION_LEN`].
    #[error("destination is {0} bytes long; at most {MAX_DESTINATION_LEN} are allowed")]
    TooLong(usize),
    /// Not an absolute `http`/`https` URL with a host.
    #[error("destination {0:?} is not an absolute http(s) URL: {1}")]
    NotHttpUrl(String, String),
    /// A macro (or a brace) in the scheme, host or port.
    #[error("destination {0:?} has a macro before its path; the host must be fixed")]
    MacroInHost(String),
    /// `{name}` is not a known macro.
    #[error("unknown macro {{{0}}}; known macros: {MACRO_NAMES}")]
    UnknownMacro(String),
    /// A `{` without a matching `}`.
    #[error("unclosed '{{' in destination {0:?}")]
    Unclosed(String),
    /// A UTM default key that is not one of [`UTM_KEYS`].
    #[error(
        "unknown UTM key {0:?}; known keys: utm_source utm_medium utm_campaign utm_content utm_term utm_id"
    )]
    UnknownUtmKey(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Lit(String),
    Macro(Macro),
}

/// The characters a macro value keeps unencoded: RFC 3986 unreserved.
pub(crate) const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a destination's literal text keeps as it is: URL syntax and `%`
/// escapes stay; a space, a quote, `<>\^`|` and control characters (and,
/// by `utf8_percent_encode`, every non-ASCII byte) are percent-encoded, so
/// `Location` always carries a valid URL.
pub(crate) const LITERAL: &AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'|');

fn literal(text: &str) -> Segment {
    Segment::Lit(utf8_percent_encode(text, LITERAL).to_string())
}

/// Segments of URL text: literal text made safe with [`literal`].
fn compile_segments(t: &str) -> Result<Vec<Segment>, DestinationError> {
    segments(t, literal)
}

/// Segments of a UTM value: literal text kept as written (it is encoded
/// as a query value when expanded).
fn value_segments(t: &str) -> Result<Vec<Segment>, DestinationError> {
    segments(t, |l| Segment::Lit(l.to_owned()))
}

fn segments(t: &str, literal: fn(&str) -> Segment) -> Result<Vec<Segment>, DestinationError> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| DestinationError::Unclosed(t.to_owned()))?;
        let name = &after[..close];
        let m =
            Macro::parse(name).ok_or_else(|| DestinationError::UnknownMacro(name.to_owned()))?;
        out.push(Segment::Macro(m));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(literal(rest));
    }
    Ok(out)
}

/// The values of one click that macros insert.
#[derive(Debug, Clone, Copy, Default)]
pub struct MacroValues<'a> {
    /// The click id, as text.
    pub click_id: &'a str,
    /// The link code.
    pub code: &'a str,
    /// The affiliate slug or "".
    pub affiliate: &'a str,
    /// The program slug.
    pub program: &'a str,
    /// `src` or "".
    pub src: &'a str,
    /// `sub1`..`sub5`, "" when absent.
    pub subs: [&'a str; 5],
}

impl MacroValues<'_> {
    fn get(&self, m: Macro) -> &str {
        match m {
            Macro::ClickId => self.click_id,
            Macro::Code => self.code,
            Macro::Affiliate => self.affiliate,
            Macro::Program => self.program,
            Macro::Src => self.src,
            Macro::Sub(i) => self.subs.get(i).copied().unwrap_or(""),
        }
    }
}

/// A destination template compiled once per link, expanded once per click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    main: Vec<Segment>,
    /// `(key, value template)` of UTM defaults absent from the template's query.
    utm: Vec<(String, Vec<Segment>)>,
    has_query: bool,
    fragment: Option<Vec<Segment>>,
}

impl Destination {
    /// Compiles a destination template and the link's UTM defaults.
    ///
    /// # Errors
    /// [`DestinationError`] when the template is too long, not an absolute
    /// http(s) URL, has a macro or brace before its path, names an unknown
    /// macro, or a UTM key is unknown.
    pub fn compile(template: &str, utm: &UtmDefaults) -> Result<Self, DestinationError> {
        if template.len() > MAX_DESTINATION_LEN {
            return Err(DestinationError::TooLong(template.len()));
        }
        // Check the shape with every macro replaced by a harmless value.
        let probe = compile_segments(template)?
            .iter()
            .map(|s| match s {
                Segment::Lit(l) => l.as_str(),
                Segment::Macro(_) => "x",
            })
            .collect::<String>();
        let url = url::Url::parse(&probe)
            .map_err(|e| DestinationError::NotHttpUrl(template.to_owned(), e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(DestinationError::NotHttpUrl(
                template.to_owned(),
                "scheme must be http or https, with a host".to_owned(),
            ));
        }
        let authority_end = template
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| {
                template[start..]
                    .find(['/', '?', '#'])
                    .map(|j| start + j)
                    .or(Some(template.len()))
            })
            .unwrap_or(template.len());
        if template[..authority_end].contains(['{', '}']) {
            return Err(DestinationError::MacroInHost(template.to_owned()));
        }

        let (main_t, fragment) = match template.split_once('#') {
            // Macros expand in the fragment too (`#ref={src}`).
            Some((m, f)) => (m, Some(compile_segments(f)?)),
            None => (template, None),
        };
        let query = main_t.split_once('?').map(|(_, q)| q);
        let present = |key: &str| {
            query.is_some_and(|q| {
                q.split('&')
                    .any(|pair| pair.split('=').next().is_some_and(|k| k == key))
            })
        };
        let mut utm_segments = Vec::new();
        for (k, v) in utm {
            if !UTM_KEYS.contains(&k.as_str()) {
                return Err(DestinationError::UnknownUtmKey(k.clone()));
            }
            if !present(k) {
                utm_segments.push((k.clone(), value_segments(v)?));
            }
        }
        Ok(Self {
            main: compile_segments(main_t)?,
            utm: utm_segments,
            has_query: query.is_some(),
            fragment,
        })
    }

    /// Also appends the click id under `key` (a program's `click_id_param`
    /// for cookieless S2S tracking), unless the template's query has `key`.
    pub fn with_click_id_param(mut self, key: &str) -> Self {
        let present = self.main.iter().any(|s| match s {
            Segment::Lit(l) => l.contains(&format!("?{key}=")) || l.contains(&format!("&{key}=")),
            Segment::Macro(_) => false,
        });
        if !present {
            self.utm
                .push((key.to_owned(), vec![Segment::Macro(Macro::ClickId)]));
        }
        self
    }

    /// Builds the `Location` for one click.
    pub fn expand(&self, v: &MacroValues<'_>) -> String {
        let mut out = String::with_capacity(256);
        for seg in &self.main {
            push_segment(&mut out, seg, v);
        }
        let mut sep = if self.has_query {
            if out.ends_with('?') || out.ends_with('&') {
                ""
            } else {
                "&"
            }
        } else {
            "?"
        };
        let mut value = String::new();
        for (k, segs) in &self.utm {
            value.clear();
            for seg in segs {
                match seg {
                    // A literal UTM value is data, not URL syntax: encode it too.
                    Segment::Lit(l) => {
                        let _ = write!(value, "{}", utf8_percent_encode(l, VALUE));
                    }
                    Segment::Macro(_) => push_segment(&mut value, seg, v),
                }
            }
            // `utm_content={src}` on a click without src adds nothing.
            if value.is_empty() {
                continue;
            }
            out.push_str(sep);
            out.push_str(k);
            out.push('=');
            out.push_str(&value);
            sep = "&";
        }
        if let Some(f) = &self.fragment {
            out.push('#');
            for seg in f {
                push_segment(&mut out, seg, v);
            }
        }
        out
    }
}

fn push_segment(out: &mut String, seg: &Segment, v: &MacroValues<'_>) {
    match seg {
        Segment::Lit(l) => out.push_str(l),
        Segment::Macro(m) => {
            let _ = write!(out, "{}", utf8_percent_encode(v.get(*m), VALUE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utm(pairs: &[(&str, &str)]) -> UtmDefaults {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn values() -> MacroValues<'static> {
        MacroValues {
            click_id: "01HZY0000000000000000000AB",
            code: "solare",
            affiliate: "blog",
            program: "solare",
            src: "qiita article&x=1",
            subs: ["s1", "", "", "", "日本"],
        }
    }

    #[test]
    fn fragments_expand_and_literal_spaces_are_encoded() {
        let d = Destination::compile(
            "https://m.example/summer sale/é?q=a b&c=%20#ref={src}&x=1 2",
            &UtmDefaults::default(),
        )
        .unwrap();
        let out = d.expand(&values());
        assert_eq!(
            out,
            "https://m.example/summer%20sale/%C3%A9?q=a%20b&c=%20#ref=qiita%20article%26x%3D1&x=1%202"
        );
        assert!(url::Url::parse(&out).is_ok());
        assert!(!out.contains(' '));
    }

    #[test]
    fn macros_are_replaced_and_encoded() {
        let d = Destination::compile(
            "https://m.example/p?cid={click_id}&src={src}&s5={sub5}",
            &UtmDefaults::new(),
        )
        .unwrap();
        assert_eq!(
            d.expand(&values()),
            "https://m.example/p?cid=01HZY0000000000000000000AB&src=qiita%20article%26x%3D1&s5=%E6%97%A5%E6%9C%AC"
        );
    }

    #[test]
    fn utm_defaults_are_added_only_when_absent() {
        let d = Destination::compile(
            "https://m.example/p?utm_source=keep#top",
            &utm(&[
                ("utm_source", "clickward"),
                ("utm_medium", "affiliate"),
                ("utm_content", "{src}"),
            ]),
        )
        .unwrap();
        assert_eq!(
            d.expand(&values()),
            "https://m.example/p?utm_source=keep&utm_content=qiita%20article%26x%3D1&utm_medium=affiliate#top"
        );
        let no_src = MacroValues {
            src: "",
            ..values()
        };
        assert_eq!(
            d.expand(&no_src),
            "https://m.example/p?utm_source=keep&utm_medium=affiliate#top",
            "a UTM default whose macro is empty is left out"
        );
        let bare = Destination::compile(
            "https://m.example",
            &utm(&[("utm_campaign", "spring sale")]),
        )
        .unwrap();
        assert_eq!(
            bare.expand(&values()),
            "https://m.example?utm_campaign=spring%20sale"
        );
    }

    #[test]
    fn click_id_param_is_appended_once() {
        let d = Destination::compile("https://m.example/p?x=1#f", &UtmDefaults::new())
            .unwrap()
            .with_click_id_param("aff_click");
        assert_eq!(
            d.expand(&values()),
            "https://m.example/p?x=1&aff_click=01HZY0000000000000000000AB#f"
        );
        let d = Destination::compile(
            "https://m.example/?aff_click={click_id}",
            &UtmDefaults::new(),
        )
        .unwrap()
        .with_click_id_param("aff_click");
        assert_eq!(
            d.expand(&values()),
            "https://m.example/?aff_click=01HZY0000000000000000000AB"
        );
    }

    #[test]
    fn host_cannot_come_from_a_macro() {
        let e = Destination::compile("https://{src}.example/", &UtmDefaults::new());
        assert!(matches!(e, Err(DestinationError::MacroInHost(_))));
        let e = Destination::compile("https://{src}", &UtmDefaults::new());
        assert!(matches!(e, Err(DestinationError::MacroInHost(_))));
    }

    #[test]
    fn bad_templates_are_named() {
        assert!(matches!(
            Destination::compile("https://m.example/{nope}", &UtmDefaults::new()),
            Err(DestinationError::UnknownMacro(n)) if n == "nope"
        ));
        assert!(matches!(
            Destination::compile("ftp://m.example/", &UtmDefaults::new()),
            Err(DestinationError::NotHttpUrl(..))
        ));
        assert!(matches!(
            Destination::compile("/relative", &UtmDefaults::new()),
            Err(DestinationError::NotHttpUrl(..))
        ));
        assert!(matches!(
            Destination::compile("https://m.example/{src", &UtmDefaults::new()),
            Err(DestinationError::Unclosed(_))
        ));
        assert!(matches!(
            Destination::compile("https://m.example/", &utm(&[("utm_evil", "x")])),
            Err(DestinationError::UnknownUtmKey(_))
        ));
    }

    #[test]
    fn permanent_redirects_are_refused() {
        assert_eq!(RedirectStatus::from_code(302), Ok(RedirectStatus::Found));
        assert_eq!(
            RedirectStatus::from_code(307),
            Ok(RedirectStatus::Temporary)
        );
        assert_eq!(
            RedirectStatus::from_code(301),
            Err(RedirectStatusError::Permanent(301))
        );
        assert_eq!(
            RedirectStatus::from_code(308),
            Err(RedirectStatusError::Permanent(308))
        );
        assert!(RedirectStatus::from_code(200).is_err());
    }
}
