//! The Fraud page (`/dashboard/fraud`): rules (add, replace, delete),
//! excluded traffic (an address, or this browser), and what the rules did:
//! judged clicks and conversions by day, rule, action and affiliate, and the
//! newest with their reasons. Handlers call `services::fraud`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::{Extension, Form};
use clickward_core::fraud::RuleSpec;
use clickward_core::id::Slug;
use serde::Deserialize;

use super::admin::PageResult;
use super::session::Session;
use super::views::{Chrome, Notice, back, utc};
use super::{PageError, page};
use crate::process::app::AppState;
use crate::services::fraud::{ExcludeWhat, RuleSaveError};

const PAGE: &str = "/dashboard/fraud";
/// How far back the page looks.
const DAYS: i64 = 7;

/// A rule line.
pub struct RuleItem {
    pub id: String,
    pub check: String,
    pub action: String,
    pub scope: String,
    pub settings: String,
    pub owner: &'static str,
}

/// An exclusion line.
pub struct ExclusionItem {
    pub id: i64,
    pub kind: &'static str,
    pub label: String,
    pub affiliate: String,
    pub added: String,
}

/// A count line: kind, day, rule, action, affiliate, count.
pub struct CountItem {
    pub what: &'static str,
    pub day: String,
    pub rule: String,
    pub action: String,
    pub affiliate: String,
    pub count: i64,
}

/// A judged click or conversion.
pub struct VerdictItem {
    pub what: &'static str,
    pub id: String,
    pub at: String,
    pub program: String,
    pub affiliate: String,
    pub rule: String,
    pub action: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "fraud.html")]
struct FraudPage {
    c: Chrome,
    rules: Vec<RuleItem>,
    exclusions: Vec<ExclusionItem>,
    counts: Vec<CountItem>,
    recent: Vec<VerdictItem>,
    programs: Vec<String>,
    affiliates: Vec<String>,
}

/// A rule's fields other than id, check, action and scope, as TOML text.
fn settings_text(s: &RuleSpec) -> String {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        for k in ["id", "check", "action", "program", "affiliate"] {
            m.remove(k);
        }
        return m
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
    }
    String::new()
}

fn day_text(day: i64) -> String {
    utc(day * 86_400_000_000)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `GET /dashboard/fraud`.
pub async fn fraud(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(n): Query<Notice>,
) -> PageResult {
    let svc = &app.0.fraud_rules;
    let rules = svc
        .rules()
        .await?
        .into_iter()
        .map(|r| RuleItem {
            scope: match (&r.spec.program, &r.spec.affiliate) {
                (None, None) => "global".to_owned(),
                (Some(p), None) => format!("program {p}"),
                (None, Some(a)) => format!("affiliate {a}"),
                (Some(p), Some(a)) => format!("{p} × {a}"),
            },
            settings: settings_text(&r.spec),
            id: r.spec.id,
            check: r.spec.check,
            action: r.spec.action,
            owner: r.owner.as_str(),
        })
        .collect();
    let exclusions = svc
        .exclusions()
        .await?
        .into_iter()
        .map(|e| ExclusionItem {
            id: e.id,
            kind: e.kind.as_str(),
            label: e.label,
            affiliate: e.affiliate.unwrap_or_else(|| "—".into()),
            added: utc(e.created_at),
        })
        .collect();
    let since = app.0.clock.now_micros() - DAYS * 86_400_000_000;
    let counts = app
        .0
        .store
        .verdict_counts(since)
        .await?
        .into_iter()
        .map(|c| CountItem {
            what: c.what,
            day: day_text(c.day),
            rule: c.rule,
            action: c.action,
            affiliate: c.affiliate.unwrap_or_else(|| "—".into()),
            count: c.count,
        })
        .collect();
    let recent = app
        .0
        .store
        .recent_verdicts(since, 50)
        .await?
        .into_iter()
        .map(|v| VerdictItem {
            what: v.what,
            id: v.id,
            at: utc(v.ts),
            program: v.program,
            affiliate: v.affiliate.unwrap_or_else(|| "—".into()),
            rule: v.rule,
            action: v.action,
            reason: v.reason,
        })
        .collect();
    let programs = app
        .0
        .store
        .list_programs()
        .await?
        .into_iter()
        .map(|p| p.slug.as_str().to_owned())
        .collect();
    let affiliates = app
        .0
        .store
        .list_affiliates()
        .await?
        .into_iter()
        .map(|a| a.slug.as_str().to_owned())
        .collect();
    Ok(page(&FraudPage {
        c: Chrome::new(&s, "Fraud", "fraud").notice(&app, &n),
        rules,
        exclusions,
        counts,
        recent,
        programs,
        affiliates,
    }))
}

/// The rule form: the catalogue's fields, the check's own settings as
/// TOML (`limit = 5, window = "60s"`).
#[derive(Deserialize)]
pub struct RuleForm {
    id: String,
    check: String,
    action: String,
    #[serde(default)]
    program: String,
    #[serde(default)]
    affiliate: String,
    #[serde(default)]
    settings: String,
}

/// `POST /dashboard/fraud/rules`: creates or replaces a rule.
pub async fn save_rule(State(app): State<AppState>, Form(f): Form<RuleForm>) -> PageResult {
    let settings = f.settings.trim();
    let mut table: toml::Table =
        match toml::from_str::<toml::Table>(&format!("x = {{ {settings} }}")) {
            Ok(t) => match t.get("x") {
                Some(toml::Value::Table(t)) => t.clone(),
                _ => toml::Table::new(),
            },
            Err(e) => {
                return Ok(back(
                    &app,
                    PAGE,
                    "error",
                    &format!("rule {:?}: settings are not `key = value, …`: {e}", f.id),
                ));
            }
        };
    for (k, v) in [
        ("id", f.id.trim()),
        ("check", f.check.trim()),
        ("action", f.action.trim()),
        ("program", f.program.trim()),
        ("affiliate", f.affiliate.trim()),
    ] {
        if !v.is_empty() {
            table.insert(k.into(), toml::Value::String(v.into()));
        }
    }
    let spec: RuleSpec = match table.try_into() {
        Ok(s) => s,
        Err(e) => return Ok(back(&app, PAGE, "error", &format!("rule {:?}: {e}", f.id))),
    };
    match app
        .0
        .fraud_rules
        .save_rule(spec, app.0.clock.now_micros())
        .await
    {
        Ok(()) => Ok(back(
            &app,
            PAGE,
            "msg",
            &format!("Rule {} saved.", f.id.trim()),
        )),
        Err(RuleSaveError::Invalid(m)) => Ok(back(&app, PAGE, "error", &m)),
        Err(RuleSaveError::Store(e)) => Err(e.into()),
    }
}

/// `POST /dashboard/fraud/rules/{id}/delete`.
pub async fn delete_rule(State(app): State<AppState>, Path(id): Path<String>) -> PageResult {
    if !app.0.fraud_rules.delete_rule(&id).await? {
        return Err(PageError::NotFound);
    }
    Ok(back(&app, PAGE, "msg", &format!("Rule {id} deleted.")))
}

/// The exclusion form: an address, or (`browser`) the browser sending it.
#[derive(Deserialize)]
pub struct ExcludeForm {
    #[serde(default)]
    ip: String,
    #[serde(default)]
    browser: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    affiliate: String,
}

/// `POST /dashboard/fraud/exclusions`: excludes an address, or this
/// browser (its `cw_ex` cookie is set in the answer).
pub async fn add_exclusion(State(app): State<AppState>, Form(f): Form<ExcludeForm>) -> PageResult {
    let what = if !f.browser.is_empty() {
        ExcludeWhat::Browser
    } else {
        match f.ip.trim().parse() {
            Ok(ip) => ExcludeWhat::Ip(ip),
            Err(_) => {
                return Ok(back(
                    &app,
                    PAGE,
                    "error",
                    &format!("{:?} is not an IPv4 or IPv6 address", f.ip.trim()),
                ));
            }
        }
    };
    let affiliate = match f.affiliate.trim() {
        "" => None,
        a => match Slug::parse(a) {
            Ok(s) => Some(s),
            Err(e) => return Ok(back(&app, PAGE, "error", &format!("affiliate: {e}"))),
        },
    };
    let (e, token) = match app
        .0
        .fraud_rules
        .exclude(what, f.label, affiliate, app.0.clock.now_micros())
        .await
    {
        Ok(done) => done,
        Err(clickward_store::StoreError::Conflict(_)) => {
            return Ok(back(
                &app,
                PAGE,
                "error",
                "That address is already excluded.",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut r = back(&app, PAGE, "msg", &format!("Excluded ({}).", e.label));
    if let Some(t) = token {
        let sealed = app
            .0
            .cookie_sealer
            .seal(crate::services::fraud::EXCLUDE_COOKIE, &t);
        if let Some(c) = crate::http::exclusion_cookie(&app, &sealed) {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    Ok(r)
}

/// `POST /dashboard/fraud/exclusions/{id}/delete`.
pub async fn remove_exclusion(State(app): State<AppState>, Path(id): Path<i64>) -> PageResult {
    if !app.0.fraud_rules.remove_exclusion(id).await? {
        return Err(PageError::NotFound);
    }
    Ok(back(&app, PAGE, "msg", "Exclusion removed."))
}
