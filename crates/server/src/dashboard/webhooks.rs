//! Outbound delivery pages: the merchant's webhooks and every affiliate
//! postback with the delivery log (`/dashboard/webhooks`,
//! `/dashboard/deliveries/{id}`), and an affiliate's own postbacks in the
//! portal (`/portal/postbacks`). Handlers call `services::delivery`; a
//! portal session only ever sees and changes postbacks filtered on its own
//! affiliate (another's answers 404).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Form};
use clickward_core::delivery::EndpointKind;
use clickward_core::id::Slug;
use clickward_store::{DeliveryQuery, DeliveryRow, Endpoint};
use serde::Deserialize;

use super::admin::PageResult;
use super::portal::affiliate_of;
use super::session::Session;
use super::views::{Chrome, Notice, back, utc};
use super::{PageError, page};
use crate::process::app::AppState;
use crate::services::delivery::{ActionDone, DeliveryError, EndpointSpec};

impl From<DeliveryError> for PageError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::NotFound(_) => PageError::NotFound,
            other => PageError::Internal(other.to_string()),
        }
    }
}

/// Every program's slug, for the forms' program choice.
async fn program_slugs(app: &AppState) -> Result<Vec<String>, PageError> {
    Ok(app
        .0
        .store
        .list_programs()
        .await?
        .into_iter()
        .map(|p| p.slug.as_str().to_owned())
        .collect())
}

/// An endpoint line.
pub struct EndpointItem {
    pub id: String,
    pub kind: &'static str,
    pub url: String,
    pub method: &'static str,
    pub events: String,
    pub scope: String,
    pub description: String,
    pub enabled: bool,
    pub state: String,
}

fn endpoint_item(e: &Endpoint) -> EndpointItem {
    let scope = match (&e.program, &e.affiliate) {
        (None, None) => "all".to_owned(),
        (p, a) => [
            p.as_ref().map(|p| format!("program {p}")),
            a.as_ref().map(|a| format!("affiliate {a}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", "),
    };
    let state = if !e.enabled {
        format!("disabled: {}", e.disabled_reason.as_deref().unwrap_or(""))
    } else if let Some(since) = e.failing_since {
        format!("failing since {}", utc(since))
    } else {
        "enabled".to_owned()
    };
    EndpointItem {
        id: e.id.clone(),
        kind: e.kind.as_str(),
        url: e.url.clone(),
        method: e.method.as_str(),
        events: e.events.join(", "),
        scope,
        description: e.description.clone(),
        enabled: e.enabled,
        state,
    }
}

/// A delivery line.
pub struct DeliveryItem {
    pub id: i64,
    pub endpoint: String,
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    pub last: String,
    pub next: String,
    pub created: String,
}

fn delivery_item(d: &DeliveryRow) -> DeliveryItem {
    let last = match (d.last_status, &d.last_error) {
        (_, Some(e)) => e.clone(),
        (Some(s), None) => s.to_string(),
        (None, None) => "—".to_owned(),
    };
    DeliveryItem {
        id: d.id,
        endpoint: d.endpoint.clone(),
        kind: d.kind.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        last,
        next: d.next_attempt_at.map(utc).unwrap_or_else(|| "—".to_owned()),
        created: utc(d.created_at),
    }
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    c: Chrome,
    endpoints: Vec<EndpointItem>,
    deliveries: Vec<DeliveryItem>,
    new_secret: Option<(String, String)>,
    status: String,
    programs: Vec<String>,
}

/// The page's query: notices and a delivery status filter.
#[derive(Deserialize, Default)]
pub struct WebhooksQuery {
    #[serde(flatten)]
    notice: Notice,
    status: Option<String>,
}

/// `GET /dashboard/webhooks`: endpoints and the delivery log (`?status=dead`
/// lists dead letters).
pub async fn webhooks(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<WebhooksQuery>,
) -> PageResult {
    webhooks_page(&app, &s, &q.notice, q.status, None).await
}

async fn webhooks_page(
    app: &AppState,
    s: &Session,
    notice: &Notice,
    status: Option<String>,
    new_secret: Option<(String, String)>,
) -> PageResult {
    let status = status.filter(|s| matches!(s.as_str(), "pending" | "delivered" | "dead"));
    let endpoints = app
        .0
        .delivery
        .list(None)
        .await?
        .iter()
        .map(endpoint_item)
        .collect();
    let deliveries = app
        .0
        .delivery
        .deliveries(DeliveryQuery {
            status: status.clone(),
            limit: 100,
            ..DeliveryQuery::default()
        })
        .await?
        .iter()
        .map(delivery_item)
        .collect();
    let programs = program_slugs(app).await?;
    Ok(page(&WebhooksPage {
        c: Chrome::new(s, "Webhooks", "webhooks").notice(app, notice),
        endpoints,
        deliveries,
        new_secret,
        status: status.unwrap_or_default(),
        programs,
    }))
}

/// The add-webhook form.
#[derive(Deserialize)]
pub struct WebhookForm {
    url: String,
    #[serde(default)]
    events: String,
    #[serde(default)]
    program: String,
    #[serde(default)]
    description: String,
}

fn events_of(text: &str) -> Option<Vec<String>> {
    let v: Vec<String> = text
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    (!v.is_empty()).then_some(v)
}

/// `POST /dashboard/webhooks`: adds a webhook and shows its secret once.
pub async fn add_webhook(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<WebhookForm>,
) -> PageResult {
    let spec = EndpointSpec {
        url: Some(f.url.trim().to_owned()),
        events: events_of(&f.events),
        program: Some(f.program).filter(|p| !p.is_empty()),
        description: Some(f.description),
        ..EndpointSpec::default()
    };
    match app.0.delivery.add(EndpointKind::Webhook, spec).await {
        Ok((e, secret)) => {
            let notice = Notice::signed(
                &app,
                "msg",
                "Webhook added. Copy its signing secret now: it is not shown again.",
            );
            webhooks_page(&app, &s, &notice, None, Some((e.id, secret))).await
        }
        Err(DeliveryError::Invalid(m)) => Ok(back(&app, "/dashboard/webhooks", "error", &m)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /dashboard/webhooks/{id}/{action}`: `disable`, `enable`,
/// `rotate-secret` (shows the new secret once), `test`.
pub async fn endpoint_action(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path((id, action)): Path<(String, String)>,
) -> PageResult {
    let who = format!("{} (dashboard)", s.name());
    let done = match app.0.delivery.act(&id, &action, &who).await? {
        ActionDone::Rotated(e, secret) => {
            let notice = Notice::signed(
                &app,
                "msg",
                "New secret made; the old one signs beside it for 24 hours.",
            );
            return webhooks_page(&app, &s, &notice, None, Some((e.id, secret))).await;
        }
        other => done_text(&other, "Endpoint"),
    };
    Ok(back(&app, "/dashboard/webhooks", "msg", &done))
}

/// The notice after a disable, enable or test of a `noun` (`Endpoint`, `Postback`).
fn done_text(done: &ActionDone, noun: &str) -> String {
    match done {
        ActionDone::Changed(e) if e.enabled => format!("{noun} enabled."),
        ActionDone::Changed(_) => format!("{noun} disabled."),
        ActionDone::Tested(n) => format!("Test event queued as delivery {n}."),
        ActionDone::Rotated(..) => "New secret made.".to_owned(),
    }
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    c: Chrome,
    d: DeliveryItem,
    event_id: String,
    attempts: Vec<(u32, String, String, String, String, String)>,
    replay_to: String,
}

fn attempt_lines(
    attempts: &[clickward_store::AttemptRow],
) -> Vec<(u32, String, String, String, String, String)> {
    attempts
        .iter()
        .map(|a| {
            (
                a.n,
                utc(a.at),
                a.url.clone(),
                a.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "—".to_owned()),
                format!("{:.1} ms", a.latency_us as f64 / 1000.0),
                a.error.clone().unwrap_or_else(|| a.response.clone()),
            )
        })
        .collect()
}

/// `GET /dashboard/deliveries/{id}`: one delivery's attempts (status,
/// latency, the first KiB of each answer), with a replay button.
pub async fn delivery(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
    Query(n): Query<Notice>,
) -> PageResult {
    let (row, attempts) = app.0.delivery.delivery(id).await?;
    Ok(page(&DeliveryPage {
        c: Chrome::new(&s, format!("Delivery {id}"), "webhooks").notice(&app, &n),
        event_id: row.event_id.clone(),
        d: delivery_item(&row),
        attempts: attempt_lines(&attempts),
        replay_to: format!("/dashboard/deliveries/{id}/replay"),
    }))
}

/// `POST /dashboard/deliveries/{id}/replay`.
pub async fn replay(State(app): State<AppState>, Path(id): Path<i64>) -> PageResult {
    app.0.delivery.replay(id).await?;
    Ok(back(
        &app,
        &format!("/dashboard/deliveries/{id}"),
        "msg",
        "Queued again; it is sent with the same webhook-id.",
    ))
}

// ---- the portal: an affiliate's own postbacks ------------------------------

/// The portal's postbacks and their recent deliveries, for `me` only.
pub struct PortalPostbacks {
    pub endpoints: Vec<EndpointItem>,
    pub deliveries: Vec<DeliveryItem>,
    pub programs: Vec<String>,
}

/// What the portal shows of `me`'s postbacks.
///
/// # Errors
/// The store's.
pub async fn portal_postbacks(app: &AppState, me: &Slug) -> Result<PortalPostbacks, PageError> {
    let endpoints = app
        .0
        .delivery
        .list(Some(me.clone()))
        .await?
        .iter()
        .filter(|e| e.kind == EndpointKind::Postback)
        .map(endpoint_item)
        .collect();
    let deliveries = app
        .0
        .delivery
        .deliveries(DeliveryQuery {
            affiliate: Some(me.clone()),
            limit: 20,
            ..DeliveryQuery::default()
        })
        .await?
        .iter()
        .map(delivery_item)
        .collect();
    let programs = program_slugs(app).await?;
    Ok(PortalPostbacks {
        endpoints,
        deliveries,
        programs,
    })
}

/// The portal's add-postback form.
#[derive(Deserialize)]
pub struct PostbackForm {
    url: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    program: String,
    /// Checkbox values: created, approved, rejected, reversed, paid.
    #[serde(default)]
    on_created: Option<String>,
    #[serde(default)]
    on_approved: Option<String>,
    #[serde(default)]
    on_rejected: Option<String>,
    #[serde(default)]
    on_reversed: Option<String>,
    #[serde(default)]
    on_paid: Option<String>,
}

/// `POST /portal/postbacks`: the affiliate adds a postback for itself.
pub async fn portal_add(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<PostbackForm>,
) -> PageResult {
    let me = affiliate_of(&s)?;
    let events: Vec<String> = [
        ("created", &f.on_created),
        ("approved", &f.on_approved),
        ("rejected", &f.on_rejected),
        ("reversed", &f.on_reversed),
        ("paid", &f.on_paid),
    ]
    .into_iter()
    .filter(|(_, on)| on.is_some())
    .map(|(s, _)| format!("conversion.{s}"))
    .collect();
    let spec = EndpointSpec {
        url: Some(f.url.trim().to_owned()),
        method: Some(f.method).filter(|m| !m.is_empty()),
        events: (!events.is_empty()).then_some(events),
        program: Some(f.program).filter(|p| !p.is_empty()),
        affiliate: Some(me.as_str().to_owned()),
        description: Some(format!("postback of {}", me.as_str())),
    };
    match app.0.delivery.add(EndpointKind::Postback, spec).await {
        Ok(_) => Ok(back(&app, "/portal", "msg", "Postback added.")),
        Err(DeliveryError::Invalid(m)) => Ok(back(&app, "/portal", "error", &m)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /portal/postbacks/{id}/{action}`: `disable`, `enable`, `test`,
/// only on the affiliate's own postbacks.
pub async fn portal_action(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let me = affiliate_of(&s)?;
    let e = app.0.delivery.get(&id).await?;
    if e.kind != EndpointKind::Postback || e.affiliate.as_deref() != Some(me.as_str()) {
        return Err(PageError::NotFound);
    }
    // The portal may not rotate (postbacks are not signed) or do more.
    if !matches!(action.as_str(), "disable" | "enable" | "test") {
        return Err(PageError::NotFound);
    }
    let who = format!("{} (portal)", s.name());
    let done = app.0.delivery.act(&id, &action, &who).await?;
    Ok(back(&app, "/portal", "msg", &done_text(&done, "Postback")))
}
