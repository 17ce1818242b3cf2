//! Settings: API keys (create, shown once; revoke), users, postback URLs.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Form};
use clickward_store::KeyScope;
use serde::Deserialize;

use super::admin::{PageQuery, PageResult};
use super::named::{PostbackExample, postback_examples};
use super::session::Session;
use super::views::{Chrome, Notice, back, or_dash, utc};
use super::{page, public_base};
use crate::process::app::AppState;

/// An API key line.
pub struct KeyItem {
    pub id: i64,
    pub prefix: String,
    pub scope: &'static str,
    pub label: String,
}

/// Postback URLs of one program.
pub struct ProgramPostbacks {
    pub slug: String,
    pub examples: Vec<PostbackExample>,
    /// The `/cw.js` tag for the merchant's pages, with its integrity.
    pub script: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub(super) struct SettingsPage {
    c: Chrome,
    keys: Vec<KeyItem>,
    new_key: Option<String>,
    users: Vec<(String, &'static str, String)>,
    programs: Vec<ProgramPostbacks>,
    receipts: Vec<ReceiptRow>,
}

/// A privacy receipt as the settings page lists it.
pub struct ReceiptRow {
    pub id: String,
    pub subject: String,
    pub status: &'static str,
    pub changed: String,
    pub actor: String,
    pub received: String,
    pub done: String,
}

/// `GET /dashboard/settings`: API keys, users and postback URLs. A created
/// key is shown once, in the answer to the form's POST (never in a URL).
pub async fn settings(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> PageResult {
    settings_page(&app, &s, &headers, &q.notice, None).await
}

pub(super) async fn settings_page(
    app: &AppState,
    s: &Session,
    headers: &HeaderMap,
    notice: &Notice,
    new_key: Option<String>,
) -> PageResult {
    let base = public_base(app, headers);
    let keys = app
        .0
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .map(|k| KeyItem {
            id: k.id,
            prefix: k.prefix,
            scope: k.scope.as_str(),
            label: or_dash(k.label.as_deref()),
        })
        .collect();
    let users = app
        .0
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| (u.username, u.role.as_str(), or_dash(u.affiliate.as_deref())))
        .collect();
    let mut programs = Vec::new();
    for p in app.0.store.list_programs().await? {
        let settings = app.0.store.program_settings(p.id).await?;
        programs.push(ProgramPostbacks {
            slug: p.slug.as_str().to_owned(),
            examples: postback_examples(&base, settings.postback_token.as_deref().unwrap_or("")),
            script: crate::http::script::snippet(
                base.trim_end_matches('/'),
                (settings.cookie_window_s / 86_400).max(1),
            ),
        });
    }
    let receipts = app
        .0
        .privacy
        .receipts(None, 50)
        .await?
        .into_iter()
        .map(|r| ReceiptRow {
            changed: match (&r.counts, &r.error) {
                (Some(c), _) => format!(
                    "{} clicks, {} conversions, {} deliveries, {} events",
                    c.clicks, c.conversions, c.deliveries, c.outbox
                ),
                (None, Some(e)) => e.clone(),
                (None, None) => "–".to_owned(),
            },
            id: r.id,
            subject: r.subject,
            status: r.status.as_str(),
            actor: r.actor,
            received: utc(r.received_at),
            done: r.done_at.map_or_else(|| "–".to_owned(), utc),
        })
        .collect();
    Ok(page(&SettingsPage {
        c: Chrome::new(s, "Settings", "settings").notice(app, notice),
        keys,
        new_key,
        users,
        programs,
        receipts,
    }))
}

/// The new-key form.
#[derive(Deserialize)]
pub struct KeyForm {
    scope: String,
    #[serde(default)]
    label: String,
}

/// `POST /dashboard/settings/keys`: creates a key and shows it once.
pub async fn create_key(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<KeyForm>,
) -> PageResult {
    let scope = match f.scope.as_str() {
        "admin" => KeyScope::Admin,
        "read" => KeyScope::Read,
        other => {
            return Ok(back(
                &app,
                "/dashboard/settings",
                "error",
                &format!("scope {other:?} is not admin or read"),
            ));
        }
    };
    let (secret, hash, prefix) = crate::services::keys::new_key();
    let label = Some(clickward_core::truncate_utf8(f.label.trim(), 100).to_owned())
        .filter(|l| !l.is_empty());
    app.0
        .store
        .create_api_key(hash, prefix, scope, label)
        .await?;
    settings_page(
        &app,
        &s,
        &headers,
        &Notice::signed(
            &app,
            "msg",
            "Key created. Copy it now: it is not shown again.",
        ),
        Some(secret),
    )
    .await
}

/// `POST /dashboard/settings/keys/{id}/revoke`.
pub async fn revoke_key(State(app): State<AppState>, Path(id): Path<i64>) -> Response {
    match app.0.store.revoke_api_key(id).await {
        Ok(()) => back(&app, "/dashboard/settings", "msg", "Key revoked."),
        Err(e) => back(&app, "/dashboard/settings", "error", &e.to_string()),
    }
}
