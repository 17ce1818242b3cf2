//! Retroactive re-scoring (`clickward fraud rescore`): stored clicks and
//! conversions judged again under today's rules, as a dry run (what would
//! change, per rule, with the first rows) or applied (verdicts, the rollups
//! of the range, and conversion statuses through the normal lifecycle).
//! Idempotent: a second run changes nothing.
//!
//! What can be judged again is what is stored. Clicks: velocity (from the
//! stored visitor keys and times), countries, referrers. The address and the
//! query string are never stored, so a verdict of `hosting`, `anonymous`,
//! `paid_search`, `excluded`, `rate_limited` or `self_referral` stays as it
//! was. Conversions: every conversion check (CTIT, self-referral,
//! duplicate buyer address, geo mismatch) except the conversion rate (the
//! counts of the time are not kept: its verdict stays); a cap's verdict
//! stays (caps are decided when the conversion arrives). A click made
//! invalid loses its unique flag; one made valid again does not regain it
//! (the dedup decision was taken when it arrived).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use clickward_core::Micros;
use clickward_core::conversion::ConversionStatus;
use clickward_core::fraud::{Action, Check, ClickSignals, ConversionSignals, Verdict};
use clickward_store::{JudgeableClick, Store, StoreError};

use crate::services::fraud::{RuleBook, Velocity, link_key, visitor_key};

/// What to re-score.
#[derive(Debug, Clone, Copy)]
pub struct RescoreArgs {
    /// Start, UTC µs (clicks by their time, conversions by receipt).
    pub from: Micros,
    /// End (exclusive).
    pub to: Micros,
    /// Only this program.
    pub program_id: Option<i64>,
    /// Write the changes (else a dry run).
    pub apply: bool,
}

/// What a run found (and, applied, did).
#[derive(Debug, Default)]
pub struct RescoreReport {
    /// Clicks read in the range (bots included).
    pub clicks: u64,
    /// Clicks whose verdict changes.
    pub clicks_changed: u64,
    /// Conversions read.
    pub conversions: u64,
    /// Conversions whose verdict, hold or status changes.
    pub conversions_changed: u64,
    /// Changes by (kind, rule, `before → after`).
    pub by_rule: BTreeMap<(String, String, String), u64>,
    /// The first changes, one line each.
    pub first: Vec<String>,
    /// Seconds the clicks took to read and judge.
    pub click_seconds: f64,
}

const FIRST: usize = 20;
const BATCH: usize = 10_000;

fn label(v: Option<&Verdict>) -> &str {
    v.map_or("none", |v| v.action.as_str())
}

/// The rule ids whose verdicts re-scoring cannot judge again: built in,
/// or of a check that reads the address or the query string.
fn kept(book: &RuleBook, program_id: i64, v: &Verdict) -> bool {
    matches!(
        v.rule.as_str(),
        crate::services::fraud::BUILTIN_EXCLUDED
            | crate::services::limits::RATE_LIMITED
            | clickward_core::fraud::SELF_REFERRAL
    ) || book.check_of(program_id, &v.rule).is_some_and(|c| {
        matches!(
            c,
            Check::Hosting { .. }
                | Check::Anonymous(_)
                | Check::PaidSearch { .. }
                | Check::Excluded
        ) || matches!(c, Check::Cap(_))
    })
}

/// `true` for the click checks re-scoring can judge from stored clicks.
pub fn rescorable_click_check(c: &Check) -> bool {
    matches!(
        c,
        Check::VisitorVelocity { .. }
            | Check::LinkVelocity { .. }
            | Check::Countries { .. }
            | Check::Referrers { .. }
    )
}

fn stronger(a: Option<Verdict>, b: Option<Verdict>) -> Option<Verdict> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.action > a.action { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Re-scores `[from, to)` under the rules of `book`.
///
/// # Errors
/// When the store fails; an applied run that fails half way can be run
/// again (it is idempotent).
pub async fn rescore(
    store: &dyn Store,
    book: Arc<RuleBook>,
    args: RescoreArgs,
) -> Result<RescoreReport, StoreError> {
    let started = std::time::Instant::now();
    // Velocity looks back: read from the longest window before `from`.
    let lookback = book.longest_velocity_window();
    let judge = Arc::new(Mutex::new(ClickJudge {
        book: book.clone(),
        velocity: Velocity::default(),
        rules_of: HashMap::new(),
        changes: Vec::new(),
        report: RescoreReport::default(),
        args,
    }));
    let sink = judge.clone();
    let scanned = store
        .scan_clicks(
            args.from - lookback,
            args.to,
            args.program_id,
            Box::new(move |c| {
                if let Ok(mut j) = sink.lock() {
                    j.one(c);
                }
                true
            }),
        )
        .await?;
    let (changes, mut report) = {
        let mut j = judge
            .lock()
            .map_err(|_| StoreError::Task("rescore: a judge panicked".into()))?;
        (
            std::mem::take(&mut j.changes),
            std::mem::take(&mut j.report),
        )
    };
    report.clicks = scanned;
    report.click_seconds = started.elapsed().as_secs_f64();
    report.clicks_changed = u64::try_from(changes.len()).unwrap_or(u64::MAX);
    if args.apply && !changes.is_empty() {
        for batch in changes.chunks(BATCH) {
            store.set_click_verdicts(batch.to_vec()).await?;
        }
        store.rollup(args.from, args.to).await?;
    }
    rescore_conversions(store, &book, args, &mut report).await?;
    Ok(report)
}

/// The clicks' side of a run: velocity replayed in time order, the
/// re-scorable rules of each program × affiliate, the changes found.
struct ClickJudge {
    book: Arc<RuleBook>,
    velocity: Velocity,
    rules_of: HashMap<(i64, Option<i64>), clickward_core::fraud::ClickRules>,
    changes: Vec<(clickward_core::id::ClickId, Option<Verdict>)>,
    report: RescoreReport,
    args: RescoreArgs,
}

impl ClickJudge {
    fn one(&mut self, c: &JudgeableClick) {
        if c.bot {
            return;
        }
        let book = &self.book;
        let rules = self
            .rules_of
            .entry((c.program_id, c.affiliate_id))
            .or_insert_with(|| book.rescorable_click_rules(c.program_id, c.affiliate_id));
        let visitor_clicks = rules.visitor_window().map_or(0, |(w, l)| {
            self.velocity
                .hit(visitor_key(c.link_id, &c.visitor_key), c.ts, w, l)
        });
        let link_clicks = rules.link_window().map_or(0, |(w, l)| {
            self.velocity.hit(link_key(c.link_id), c.ts, w, l)
        });
        if c.ts < self.args.from {
            return;
        }
        let judged = rules.evaluate(&ClickSignals {
            country: c.country.as_deref(),
            referrer_host: c.referrer_host.as_deref(),
            visitor_clicks,
            link_clicks,
            affiliate_link: c.affiliate_id.is_some(),
            ..ClickSignals::default()
        });
        let keep = c.verdict.clone().filter(|v| kept(book, c.program_id, v));
        let new = stronger(keep, judged);
        if new == c.verdict {
            return;
        }
        let rule = new
            .as_ref()
            .or(c.verdict.as_ref())
            .map(|v| v.rule.clone())
            .unwrap_or_default();
        let change = format!("{} → {}", label(c.verdict.as_ref()), label(new.as_ref()));
        let report = &mut self.report;
        if report.first.len() < FIRST {
            report.first.push(format!(
                "click {} ({}): {change}{}",
                c.click_id,
                clickward_core::utc_text(c.ts),
                new.as_ref()
                    .map(|v| format!(": {}: {}", v.rule, v.reason))
                    .unwrap_or_default()
            ));
        }
        *report
            .by_rule
            .entry(("click".into(), rule, change))
            .or_default() += 1;
        self.changes.push((c.click_id, new));
    }
}

async fn rescore_conversions(
    store: &dyn Store,
    book: &RuleBook,
    args: RescoreArgs,
    report: &mut RescoreReport,
) -> Result<(), StoreError> {
    let conversions = store
        .scan_conversions(args.from, args.to, args.program_id)
        .await?;
    report.conversions = u64::try_from(conversions.len()).unwrap_or(u64::MAX);
    // Duplicate buyer addresses, counted in receipt order as intake did.
    let mut seen: HashMap<(i64, [u8; 16]), Vec<Micros>> = HashMap::new();
    for v in conversions {
        let Some((rules, _, _)) = book.conversion_rules(v.program_id, v.affiliate_id) else {
            continue;
        };
        let same_ip_conversions = match (rules.duplicate_ip_window(), v.affiliate_id, v.ip_hash) {
            (Some(w), Some(a), Some(h)) => {
                let times = seen.entry((a, h)).or_default();
                let n = times.iter().filter(|t| **t >= v.received_at - w).count();
                Some(u32::try_from(n).unwrap_or(u32::MAX))
            }
            _ => None,
        };
        if let (Some(a), Some(h), true) = (v.affiliate_id, v.ip_hash, v.status.counted()) {
            seen.entry((a, h)).or_default().push(v.received_at);
        }
        let own = |h: &[u8; 16]| {
            book.excluded(h)
                .is_some_and(|e| e.affiliate_id.is_some() && e.affiliate_id == v.affiliate_id)
        };
        let judged = rules.evaluate(&ConversionSignals {
            ctit: v.ctit_us,
            self_referral: v
                .click_verdict
                .as_ref()
                .is_some_and(|c| c.rule == clickward_core::fraud::SELF_REFERRAL)
                || v.ip_hash.as_ref().is_some_and(own),
            same_ip_conversions,
            // The counts at the time are not kept: a `conversion_rate`
            // verdict stays as it was and the check is not judged again.
            clicks_and_conversions: None,
            click_country: v.click_country.as_deref(),
            conversion_country: v.buyer_country.as_deref(),
            click_verdict: v.click_verdict.as_ref(),
        });
        let keep = v.verdict.clone().filter(|x| {
            kept(book, v.program_id, x)
                || book
                    .check_of(v.program_id, &x.rule)
                    .is_some_and(|c| matches!(c, Check::ConversionRate { .. }))
        });
        let new = stronger(keep, judged);
        if new == v.verdict {
            continue;
        }
        let change = format!("{} → {}", label(v.verdict.as_ref()), label(new.as_ref()));
        let rule = new
            .as_ref()
            .or(v.verdict.as_ref())
            .map(|x| x.rule.clone())
            .unwrap_or_default();
        *report
            .by_rule
            .entry(("conversion".into(), rule, change.clone()))
            .or_default() += 1;
        report.conversions_changed += 1;
        if report.first.len() < FIRST * 2 {
            report.first.push(format!(
                "conversion {} ({}): {change}{}",
                v.conversion_id,
                v.status.as_str(),
                new.as_ref()
                    .map(|x| format!(": {}: {}", x.rule, x.reason))
                    .unwrap_or_default()
            ));
        }
        if !args.apply {
            continue;
        }
        let pending = v.status == ConversionStatus::Pending;
        let held_by_rule = v.verdict.as_ref().is_some_and(|x| x.action == Action::Hold);
        let held = match new.as_ref().map(|x| x.action) {
            Some(Action::Hold) => pending || v.held,
            _ if held_by_rule => false,
            _ => v.held,
        };
        store
            .set_conversion_verdict(v.conversion_id, new.clone(), held)
            .await?;
        if let Some(x) = new
            .as_ref()
            .filter(|x| x.action == Action::Reject && pending)
        {
            store
                .set_conversion_status(
                    v.conversion_id,
                    ConversionStatus::Rejected,
                    format!("rule:{}", x.rule),
                    Some(x.reason.clone()),
                )
                .await?;
        }
    }
    Ok(())
}
