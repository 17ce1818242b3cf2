//! The dashboard (`/dashboard`, merchant side) and the affiliate portal
//! (`/portal`): server-rendered askama pages, a little plain JavaScript and
//! uPlot, all compiled into the binary and served from `/assets/`.
//!
//! - Sign-in at `/login` (username + password from `clickward user add`, or
//!   an API key), `/login/magic?t=` (magic link from `clickward user
//!   magic-link`), `/logout`; see [`session`].
//! - Every `/dashboard` and `/portal` request passes [`gate`]: a valid
//!   session of the right kind (else a redirect to `/login`, or 404 for the
//!   other kind's pages), and for each POST the session's CSRF token and a
//!   same-origin `Origin`.
//! - Every page answers with a Content-Security-Policy without
//!   `unsafe-inline` (scripts and styles come from `/assets/` only), and
//!   every value from a visitor is escaped by askama.

mod admin;
mod api_ref;
mod assets;
mod conversions;
mod fraud;
mod links;
mod live;
mod login;
mod named;
mod overview;
mod portal;
pub mod session;
mod settings;
pub mod stats;
mod views;
mod webhooks;

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::PrivateCookieJar;
use clickward_core::link::{Affiliate, Program};
use clickward_store::StoreError;

use crate::process::app::AppState;
use session::{Session, Who};

pub use login::SignInGuard;
pub use views::BuilderQuery;

/// The QR code of a link's tracking URL on `base` with the builder's ids,
/// as an image answer (the API, the dashboard and the portal serve the
/// same). The reason when the URL is too long to encode.
pub fn qr_image(
    base: &str,
    code: &str,
    builder: &BuilderQuery,
    format: crate::services::qr::QrFormat,
    size: u32,
) -> Result<axum::response::Response, String> {
    let url = views::tracking_url(base, code, &builder.src, &builder.subs());
    let image = crate::services::qr::render(&url, format, size).map_err(|e| e.to_string())?;
    let name = format!("{code}.{}", format.extension());
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "private, max-age=300".to_owned()),
        ],
        image,
    )
        .into_response())
}

/// Largest form body a dashboard POST reads, bytes.
const MAX_FORM: usize = 64 * 1024;

/// The Content-Security-Policy of every page: no inline script or style,
/// nothing from another origin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The routes of the dashboard, the portal, sign-in and their assets.
pub fn router(state: AppState) -> Router<AppState> {
    let dashboard = Router::new()
        .route("/", get(overview::overview))
        .route("/kpis", get(overview::kpis_json))
        .route("/live", get(live::live))
        .route("/events", get(live::events))
        .route("/links", get(links::links).post(links::create_link))
        .route("/links/{code}", get(links::link).post(links::update_link))
        .route("/links/{code}/qr", get(links::qr))
        .route(
            "/affiliates",
            get(named::named_list::<Affiliate>).post(named::create_named::<Affiliate>),
        )
        .route(
            "/affiliates/{slug}",
            get(named::named_item::<Affiliate>).post(named::update_named::<Affiliate>),
        )
        .route(
            "/programs",
            get(named::named_list::<Program>).post(named::create_named::<Program>),
        )
        .route(
            "/programs/{slug}",
            get(named::named_item::<Program>).post(named::update_named::<Program>),
        )
        .route(
            "/programs/{slug}/settings",
            post(named::update_program_settings),
        )
        .route(
            "/programs/{slug}/commissions",
            post(named::update_program_override),
        )
        .route("/conversions", get(conversions::conversions))
        .route("/conversions/{id}", post(conversions::change_conversion))
        .route("/payouts", get(conversions::payouts))
        .route(
            "/webhooks",
            get(webhooks::webhooks).post(webhooks::add_webhook),
        )
        .route("/webhooks/{id}/{action}", post(webhooks::endpoint_action))
        .route("/deliveries/{id}", get(webhooks::delivery))
        .route("/deliveries/{id}/replay", post(webhooks::replay))
        .route("/fraud", get(fraud::fraud))
        .route("/fraud/rules", post(fraud::save_rule))
        .route("/fraud/rules/{id}/delete", post(fraud::delete_rule))
        .route("/fraud/exclusions", post(fraud::add_exclusion))
        .route(
            "/fraud/exclusions/{id}/delete",
            post(fraud::remove_exclusion),
        )
        .route("/settings", get(settings::settings))
        .route("/api", get(api_ref::api))
        .route("/settings/keys", post(settings::create_key))
        .route("/settings/keys/{id}/revoke", post(settings::revoke_key))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate));
    let portal = Router::new()
        .route("/", get(portal::home))
        .route("/kpis", get(portal::kpis_json))
        .route("/links/{code}", get(portal::link))
        .route("/links/{code}/qr", get(portal::qr))
        .route("/postbacks", post(webhooks::portal_add))
        .route("/postbacks/{id}/{action}", post(webhooks::portal_action))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state, gate));
    Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/login/magic", get(login::magic))
        .route("/logout", post(login::logout))
        .route("/assets/{name}", get(assets::serve))
        .nest("/dashboard", dashboard)
        .nest("/portal", portal)
}

/// Session cookies are encrypted with the server's cookie key.
impl axum::extract::FromRef<AppState> for axum_extra::extract::cookie::Key {
    fn from_ref(app: &AppState) -> Self {
        app.0.cookie_key.clone()
    }
}

/// Adds the security headers every page carries.
pub fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Renders a template as a page with the security headers.
pub fn page<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => {
            secure(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
        }
        Err(e) => PageError::Internal(e.to_string()).into_response(),
    }
}

/// Why a page could not be shown; rendered as a small HTML page.
#[derive(Debug)]
pub enum PageError {
    /// 404: no such thing, or not this session's to see.
    NotFound,
    /// 403 with a reason.
    Forbidden(String),
    /// 500; the detail is logged, not shown.
    Internal(String),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => PageError::NotFound,
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        PageError::Internal(format!("{e:#}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            PageError::NotFound => (StatusCode::NOT_FOUND, "Not found.".to_owned()),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            PageError::Internal(detail) => {
                tracing::error!("dashboard: {detail}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong; the server log says what.".to_owned(),
                )
            }
        };
        let html = ErrorPage {
            status: status.as_u16(),
            message: &message,
        }
        .render()
        .unwrap_or_else(|_| message.clone());
        secure(
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
        )
    }
}

async fn not_found() -> PageError {
    PageError::NotFound
}

/// The gate of `/dashboard` and `/portal`: a session of the right kind, and
/// for a POST a same-origin request carrying the session's CSRF token.
async fn gate(
    State(app): State<AppState>,
    jar: PrivateCookieJar,
    req: Request,
    next: Next,
) -> Response {
    // Nested routers see the path without its prefix; decide on the whole.
    let original = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.0.clone())
        .unwrap_or_else(|| req.uri().clone());
    let portal = original.path().starts_with("/portal");
    let (resolved, jar) = session::resolve(&app, jar).await;
    let Some((session, refreshed)) = resolved else {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let next_path = original
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let to = format!(
                "/login?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &next_path)
                    .finish()
            );
            return secure(Redirect::to(&to).into_response());
        }
        return PageError::Forbidden("Your session has ended; sign in again.".into())
            .into_response();
    };
    // The other kind's pages do not exist for this session.
    let allowed = match &session.who {
        Who::Admin { .. } => !portal,
        Who::Affiliate { .. } => portal,
    };
    if !allowed {
        return PageError::NotFound.into_response();
    }
    let req = if req.method() == Method::POST {
        match check_post(&app, &session, req).await {
            Ok(req) => req,
            Err(e) => return e.into_response(),
        }
    } else {
        req
    };
    let mut req = req;
    req.extensions_mut().insert(session);
    let response = next.run(req).await;
    if refreshed {
        (jar, response).into_response()
    } else {
        response
    }
}

/// A POST must come from our own pages: same `Origin` (when the browser
/// sends one), an admin session that may write, and the session's CSRF token
/// in the form. The body is read here (bounded) and handed on unchanged.
async fn check_post(app: &AppState, session: &Session, req: Request) -> Result<Request, PageError> {
    if !same_origin(app, req.headers()) {
        return Err(PageError::Forbidden(
            "This form was sent from another site.".into(),
        ));
    }
    if let Who::Admin {
        can_write: false, ..
    } = session.who
    {
        return Err(PageError::Forbidden(
            "This session was opened with a read-only API key.".into(),
        ));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| PageError::Forbidden("The form is too large.".into()))?;
    let token = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !session::csrf_ok(session, &token) {
        return Err(PageError::Forbidden(
            "The form's security token is missing or stale; reload the page and try again.".into(),
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// `false` when the browser says (`Origin`) that the request comes from a
/// page of another host than the one it is sent to (or than
/// `dashboard.public_url`, for proxies that rewrite `Host`). Browsers send
/// `Origin` with every POST; without one there is nothing to compare.
pub fn same_origin(app: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let public = app
        .0
        .cfg
        .config
        .dashboard
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization());
    if public.is_some() && origin.to_str().ok() == public.as_deref() {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .is_some_and(|u| {
            let authority = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                None => u.host_str().unwrap_or_default().to_owned(),
            };
            authority.eq_ignore_ascii_case(host)
        })
}

/// Where tracking links and postback URLs point: `dashboard.public_url`, or
/// the scheme and host the page was asked for.
pub fn public_base(app: &AppState, headers: &axum::http::HeaderMap) -> String {
    if let Some(u) = &app.0.cfg.config.dashboard.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    let scheme = if app.0.cfg.config.cookie_secure {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}
