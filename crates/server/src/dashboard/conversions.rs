//! Conversions (filter, approve, reject, reverse) and payouts (balances,
//! batches).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use clickward_core::conversion::ConversionStatus;
use clickward_store::ConversionFilter;
use serde::Deserialize;

use super::admin::{PageQuery, PageResult};
use super::session::Session;
use super::views::{Chrome, back, money, or_dash, utc};
use super::{PageError, page};
use crate::process::app::AppState;

/// A conversion row.
pub struct ConversionItem {
    pub id: String,
    pub time: String,
    pub program: String,
    pub affiliate: String,
    pub link: String,
    pub src: String,
    pub event: String,
    pub order_id: String,
    pub amount: String,
    pub commission: String,
    pub status: &'static str,
    /// Held for review.
    pub held: bool,
    /// The fraud verdict, `rule: sentence`; empty when none.
    pub verdict: String,
    /// Actions the lifecycle allows now.
    pub actions: Vec<&'static str>,
}

/// As the conversions pages show a stored conversion.
pub fn conversion_item(c: &clickward_store::ConversionRow) -> ConversionItem {
    let actions = match c.status {
        ConversionStatus::Pending => vec!["approve", "reject"],
        ConversionStatus::Approved => vec!["reverse"],
        ConversionStatus::Paid => vec!["reverse"],
        _ => vec![],
    };
    ConversionItem {
        id: c.conversion_id.to_string(),
        time: utc(c.occurred_at),
        program: c.program.clone(),
        affiliate: or_dash(c.affiliate.as_deref()),
        link: or_dash(c.link.as_deref()),
        src: or_dash(c.src.as_deref()),
        event: c.event.clone(),
        order_id: c.order_id.clone(),
        amount: c
            .amount_minor
            .map(|a| money(a, &c.currency))
            .unwrap_or_else(|| "–".to_owned()),
        commission: money(c.commission_minor, &c.currency),
        status: c.status.as_str(),
        held: c.held,
        verdict: c
            .verdict
            .as_ref()
            .map(|v| format!("{}: {}", v.rule, v.reason))
            .unwrap_or_default(),
        actions,
    }
}

#[derive(Template)]
#[template(path = "conversions.html")]
pub(super) struct ConversionsPage {
    c: Chrome,
    status: String,
    statuses: [&'static str; 5],
    rows: Vec<ConversionItem>,
}

/// `GET /dashboard/conversions?status=`: the latest 200, with actions.
pub async fn conversions(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let status_text = q.status.clone().unwrap_or_default();
    let status = ConversionStatus::parse(status_text.trim());
    let rows = app
        .0
        .store
        .list_conversions(ConversionFilter {
            status,
            affiliate: None,
            before: None,
            limit: 200,
        })
        .await?
        .iter()
        .map(conversion_item)
        .collect();
    let mut c = Chrome::new(&s, "Conversions", "conversions").notice(&app, &q.notice);
    if status.is_none() && !status_text.trim().is_empty() {
        c = c.problem(Some(format!("unknown status {status_text:?}; showing all")));
    }
    Ok(page(&ConversionsPage {
        c,
        status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        statuses: ["pending", "approved", "rejected", "reversed", "paid"],
        rows,
    }))
}

/// An approve / reject / reverse form.
#[derive(Deserialize)]
pub struct ChangeForm {
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    back: String,
}

/// `POST /dashboard/conversions/{id}`: approve, reject or reverse (as
/// `POST /api/v1/conversions/{id}/{action}`), recorded with the user's name.
pub async fn change_conversion(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Form(f): Form<ChangeForm>,
) -> Response {
    let path = if f.back.starts_with("/dashboard/conversions") {
        f.back.clone()
    } else {
        "/dashboard/conversions".to_owned()
    };
    let to = match f.action.as_str() {
        "approve" => ConversionStatus::Approved,
        "reject" => ConversionStatus::Rejected,
        "reverse" => ConversionStatus::Reversed,
        other => return back(&app, &path, "error", &format!("unknown action {other:?}")),
    };
    let Ok(id) = id.parse() else {
        return PageError::NotFound.into_response();
    };
    let actor = format!("dashboard:{}", s.name());
    let reason = Some(f.reason).filter(|r| !r.trim().is_empty());
    match app.0.conversions.change_status(id, to, actor, reason).await {
        Ok(row) => back(
            &app,
            &path,
            "msg",
            &format!("Conversion {} is {}.", row.order_id, row.status.as_str()),
        ),
        Err(e) => back(&app, &path, "error", &e.to_string()),
    }
}

/// A balance line.
pub struct BalanceItem {
    pub affiliate: String,
    pub bucket: &'static str,
    pub amount: String,
}

/// A payout batch line.
pub struct PayoutItem {
    pub batch: String,
    pub affiliate: String,
    pub amount: String,
    pub conversions: i64,
    pub time: String,
}

/// Balances as lines.
pub fn balance_items(rows: &[clickward_store::Balance]) -> Vec<BalanceItem> {
    rows.iter()
        .map(|b| BalanceItem {
            affiliate: or_dash(b.affiliate.as_deref()),
            bucket: b.bucket.as_str(),
            amount: money(b.minor, &b.currency),
        })
        .collect()
}

/// Payout batches as lines.
pub fn payout_items(rows: &[clickward_store::Payout]) -> Vec<PayoutItem> {
    rows.iter()
        .map(|p| PayoutItem {
            batch: p.batch_id.clone(),
            affiliate: p.affiliate.clone(),
            amount: money(p.amount_minor, &p.currency),
            conversions: p.conversions,
            time: utc(p.created_at),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "payouts.html")]
pub(super) struct PayoutsPage {
    c: Chrome,
    balances: Vec<BalanceItem>,
    payouts: Vec<PayoutItem>,
}

/// `GET /dashboard/payouts`: ledger balances and the latest batches.
pub async fn payouts(State(app): State<AppState>, Extension(s): Extension<Session>) -> PageResult {
    let balances = balance_items(&app.0.store.balances(None).await?);
    let payouts = payout_items(&app.0.store.list_payouts(None, 200).await?);
    Ok(page(&PayoutsPage {
        c: Chrome::new(&s, "Payouts", "payouts"),
        balances,
        payouts,
    }))
}
