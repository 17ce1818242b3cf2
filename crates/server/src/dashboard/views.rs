//! What every page shares (header, navigation, notices) and value formatting.

use clickward_core::money::Currency;
use serde::Deserialize;

use super::session::{Session, Who};
use crate::process::app::AppState;

/// The frame of every page: title, navigation, who is signed in, the form
/// token, and the notices to show.
pub struct Chrome {
    /// Page title.
    pub title: String,
    /// Navigation entry to mark current.
    pub section: &'static str,
    /// Signed-in name.
    pub user: String,
    /// CSRF token for the page's forms.
    pub csrf: String,
    /// `true` on portal pages.
    pub portal: bool,
    /// `false` for read-only sessions (forms are hidden).
    pub can_write: bool,
    /// The DB-IP attribution is shown (pages with geo data).
    pub geo: bool,
    /// A notice after a successful form (`?msg=`).
    pub msg: Option<String>,
    /// A problem to show (`?error=`, or a bad range).
    pub error: Option<String>,
    /// Navigation: `(section, path, label)`.
    pub nav: &'static [(&'static str, &'static str, &'static str)],
}

/// `?msg=` or `?error=` after a form redirected back, with `n=`, the
/// notice's signature: a page shows only notices our own redirects made, so
/// a crafted link cannot put a sentence of its own on our pages.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    /// Success notice.
    pub msg: Option<String>,
    /// Problem notice.
    pub error: Option<String>,
    /// Signature (see [`back`]).
    pub n: Option<String>,
}

impl Notice {
    /// A notice made here (`kind` is `msg` or `error`), signed.
    pub fn signed(app: &AppState, kind: &str, text: &str) -> Self {
        let n = Some(notice_sig(app, kind, text));
        let text = Some(text.to_owned());
        match kind {
            "msg" => Notice {
                msg: text,
                error: None,
                n,
            },
            _ => Notice {
                msg: None,
                error: text,
                n,
            },
        }
    }
}

/// HMAC-SHA256 of `kind:text` under the server's signing key, first 12
/// bytes, hex.
fn notice_sig(app: &AppState, kind: &str, text: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(app.0.cookie_key.signing()) else {
        return String::new();
    };
    mac.update(b"notice:");
    mac.update(kind.as_bytes());
    mac.update(b":");
    mac.update(text.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..12])
}

impl Chrome {
    /// A page's frame.
    pub fn new(session: &Session, title: impl Into<String>, section: &'static str) -> Self {
        let (portal, can_write) = match &session.who {
            Who::Admin { can_write, .. } => (false, *can_write),
            Who::Affiliate { .. } => (true, false),
        };
        Chrome {
            title: title.into(),
            section,
            user: session.name().to_owned(),
            csrf: session.csrf.clone(),
            portal,
            can_write,
            geo: false,
            msg: None,
            error: None,
            nav: if portal { &PORTAL_NAV } else { &ADMIN_NAV },
        }
    }

    /// With the notice of the query, when its signature is ours.
    pub fn notice(mut self, app: &AppState, n: &Notice) -> Self {
        let sig = n.n.as_deref().unwrap_or_default();
        let signed = |kind: &str, text: &Option<String>| {
            text.as_deref()
                .filter(|t| !t.is_empty() && !sig.is_empty() && notice_sig(app, kind, t) == sig)
                .map(str::to_owned)
        };
        self.msg = signed("msg", &n.msg);
        if self.error.is_none() {
            self.error = signed("error", &n.error);
        }
        self
    }

    /// With the DB-IP attribution (required by its CC BY 4.0 licence where
    /// geo data is shown).
    pub fn with_geo(mut self) -> Self {
        self.geo = true;
        self
    }

    /// With a problem to show.
    pub fn problem(mut self, p: Option<String>) -> Self {
        if p.is_some() {
            self.error = p;
        }
        self
    }
}

/// Navigation of the dashboard: `(section, path, label)`.
pub const ADMIN_NAV: [(&str, &str, &str); 11] = [
    ("overview", "/dashboard", "Overview"),
    ("live", "/dashboard/live", "Live"),
    ("links", "/dashboard/links", "Links"),
    ("affiliates", "/dashboard/affiliates", "Affiliates"),
    ("programs", "/dashboard/programs", "Programs"),
    ("conversions", "/dashboard/conversions", "Conversions"),
    ("payouts", "/dashboard/payouts", "Payouts"),
    ("webhooks", "/dashboard/webhooks", "Webhooks"),
    ("fraud", "/dashboard/fraud", "Fraud"),
    ("settings", "/dashboard/settings", "Settings"),
    ("api", "/dashboard/api", "API"),
];

/// Navigation of the portal.
pub const PORTAL_NAV: [(&str, &str, &str); 1] = [("portal", "/portal", "Your numbers")];

/// UTC µs as `2026-11-21 12:34:56 UTC`.
pub fn utc(us: i64) -> String {
    clickward_core::utc_text(us)
}

/// Minor units as `49.90 USD`.
pub fn money(minor: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => format!("{} {currency}", c.format(minor)),
        Err(_) => format!("{minor} {currency} (minor units)"),
    }
}

/// `Some(s)` or `–`.
pub fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("–").to_owned()
}

/// A redirect back to `path` with a signed notice (`kind` is `msg` or
/// `error`; the text is cut to 300 bytes), 303.
pub fn back(app: &AppState, path: &str, kind: &str, text: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let text = clickward_core::truncate_utf8(text, 300);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(kind, text)
        .append_pair("n", &notice_sig(app, kind, text))
        .finish();
    let sep = if path.contains('?') { '&' } else { '?' };
    axum::response::Redirect::to(&format!("{path}{sep}{q}")).into_response()
}

/// What a link code keeps unescaped in a path (RFC 3986 unreserved).
const CODE_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A tracking URL of `code` with src and sub-ids filled in (empty ones
/// left out), on the public base.
pub fn tracking_url(base: &str, code: &str, src: &str, subs: &[String; 5]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    if !src.trim().is_empty() {
        q.append_pair("src", src.trim());
        any = true;
    }
    for (i, s) in subs.iter().enumerate() {
        if !s.trim().is_empty() {
            q.append_pair(&format!("sub{}", i + 1), s.trim());
            any = true;
        }
    }
    let path = format!(
        "{base}/r/{}",
        percent_encoding::utf8_percent_encode(code, CODE_SET)
    );
    if any {
        format!("{path}?{}", q.finish())
    } else {
        path
    }
}

/// The link builder's query: `src`, `sub1`..`sub5`.
#[derive(Debug, Default, Deserialize)]
pub struct BuilderQuery {
    /// Placement.
    #[serde(default)]
    pub src: String,
    /// sub1.
    #[serde(default)]
    pub sub1: String,
    /// sub2.
    #[serde(default)]
    pub sub2: String,
    /// sub3.
    #[serde(default)]
    pub sub3: String,
    /// sub4.
    #[serde(default)]
    pub sub4: String,
    /// sub5.
    #[serde(default)]
    pub sub5: String,
}

/// The query of a page's QR code image: format, size, the builder's ids.
#[derive(Debug, Default, Deserialize)]
pub struct QrPageQuery {
    /// `svg` (default) or `png`.
    pub format: Option<String>,
    /// Side, px.
    pub size: Option<u32>,
    /// The ids in the link.
    #[serde(flatten)]
    pub builder: BuilderQuery,
}

impl QrPageQuery {
    /// The format and size asked (bad ones: SVG, the default size).
    pub fn image(&self) -> (crate::services::qr::QrFormat, u32) {
        (
            self.format
                .as_deref()
                .and_then(crate::services::qr::QrFormat::parse)
                .unwrap_or(crate::services::qr::QrFormat::Svg),
            self.size.unwrap_or(crate::services::qr::DEFAULT_SIZE),
        )
    }
}

/// `{prefix}/{code}/qr?src=…&sub1=…&` for the builder's QR image and
/// download links (the page adds `format=`).
pub fn qr_path(prefix: &str, code: &str, b: &BuilderQuery) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("src", &b.src)].into_iter().chain(
        ["sub1", "sub2", "sub3", "sub4", "sub5"]
            .into_iter()
            .zip([&b.sub1, &b.sub2, &b.sub3, &b.sub4, &b.sub5]),
    ) {
        if !v.trim().is_empty() {
            q.append_pair(k, v.trim());
        }
    }
    let q = q.finish();
    format!(
        "{prefix}/{}/qr?{q}{}",
        percent_encoding::utf8_percent_encode(code, CODE_SET),
        if q.is_empty() { "" } else { "&" }
    )
}

impl BuilderQuery {
    /// sub1..sub5.
    pub fn subs(&self) -> [String; 5] {
        [
            self.sub1.clone(),
            self.sub2.clone(),
            self.sub3.clone(),
            self.sub4.clone(),
            self.sub5.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_urls_encode_what_they_carry() {
        let subs = [
            "a b".to_owned(),
            String::new(),
            "<x>".to_owned(),
            String::new(),
            String::new(),
        ];
        assert_eq!(
            tracking_url("https://t.example.com", "solare", "qiita&x=1", &subs),
            "https://t.example.com/r/solare?src=qiita%26x%3D1&sub1=a+b&sub3=%3Cx%3E"
        );
        assert_eq!(
            tracking_url("http://h", "a-b", "", &Default::default()),
            "http://h/r/a-b"
        );
    }
}
