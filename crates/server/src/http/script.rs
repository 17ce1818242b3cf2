//! `GET /cw.js`: the first-party script for the merchant's own site
//! (`assets/cw.js`, under 2 KB, no dependencies, no inline code or `eval`,
//! so a strict CSP with this server in `script-src` admits it). It keeps
//! the click id of the landing URL in a cookie of the merchant's domain for
//! the program's cookie window and hands it to checkout (docs/integrations.md,
//! "cw.js").

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha384};

/// The script, as served.
pub const CW_JS: &[u8] = include_bytes!("../../assets/cw.js");

/// Its Subresource Integrity value (`sha384-<base64>`, W3C SRI), for the
/// `integrity` attribute the dashboard prints.
pub fn integrity() -> String {
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha384::digest(CW_JS))
    )
}

/// The tag a merchant pastes into their pages: the script from `base` (this
/// server's public URL), its integrity, and the program's cookie window in
/// days (`data-days`).
pub fn snippet(base: &str, days: i64) -> String {
    format!(
        r#"<script src="{base}/cw.js" integrity="{}" crossorigin="anonymous" data-days="{days}" async></script>"#,
        integrity()
    )
}

/// `GET /cw.js`: cacheable for an hour, readable cross-origin (SRI needs
/// CORS).
pub async fn serve() -> Response {
    let mut r = CW_JS.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
