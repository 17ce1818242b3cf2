//! SQL for conversions, the ledger, payouts and idempotency keys.

use clickward_core::Micros;
use clickward_core::conversion::{self, ConversionStatus, LedgerBucket};
use clickward_core::fraud::Action;
use clickward_core::id::{ClickId, ConversionId, Slug};
use clickward_core::money::Currency;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{ConversionFilter, ConversionStore, Payout, PayoutLine, SqliteStore, StoreFuture};
use crate::common::{
    CONVERSION_SELECT, PAYOUT_SELECT, corrupt, eligible_programs, now_micros, ulid_of,
};
use crate::{Balance, ConversionRow, NewConversion, Recorded, StoreError};

/// The id of a program or affiliate by slug (`table` is ours, not input).
pub(super) fn id_of(
    c: &Connection,
    table: &str,
    kind: &str,
    slug: &str,
) -> Result<i64, StoreError> {
    c.query_row(
        &format!("SELECT id FROM {table} WHERE slug = ?1"),
        [slug],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("{kind} {slug:?}")))
}

fn conversion_from(r: &Row<'_>) -> Result<ConversionRow, StoreError> {
    let status: String = r.get(16)?;
    Ok(ConversionRow {
        conversion_id: ConversionId(ulid_of(r.get(0)?, "conversion_id")?),
        program: r.get(1)?,
        event: r.get(2)?,
        order_id: r.get(3)?,
        click_id: r
            .get::<_, Option<Vec<u8>>>(4)?
            .map(|b| ulid_of(b, "click_id").map(ClickId))
            .transpose()?,
        link: r.get(5)?,
        affiliate: r.get(6)?,
        src: r.get(7)?,
        subs: [r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?],
        amount_minor: r.get(13)?,
        commission_minor: r.get(14)?,
        currency: r.get(15)?,
        status: ConversionStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        occurred_at: r.get(17)?,
        received_at: r.get(18)?,
        ctit_us: r.get(19)?,
        attributed_by: r.get(20)?,
        adv_subs: [r.get(21)?, r.get(22)?, r.get(23)?, r.get(24)?, r.get(25)?],
        fingerprint: r.get(26)?,
        held: r.get(27)?,
        verdict: crate::common::verdict_of(r.get(28)?, r.get(29)?, r.get(30)?)?,
        gross_amount_minor: r.get(31)?,
        gross_commission_minor: r.get(32)?,
    })
}

pub(super) fn get_conversion(
    c: &Connection,
    id: ConversionId,
) -> Result<ConversionRow, StoreError> {
    let mut st = c.prepare_cached(&format!("{CONVERSION_SELECT} WHERE v.conversion_id = ?1"))?;
    let mut rows = st.query([id.0.to_bytes().as_slice()])?;
    match rows.next()? {
        Some(r) => conversion_from(r),
        None => Err(StoreError::NotFound(format!("conversion {id}"))),
    }
}

pub(super) fn list_conversions(
    c: &Connection,
    f: &crate::ConversionFilter,
) -> Result<Vec<ConversionRow>, StoreError> {
    // Two statements, so that a page after the first walks the row id
    // from its cursor instead of from the newest.
    let keyset = if f.before.is_some() {
        " AND v.id < (SELECT id FROM conversions WHERE conversion_id = ?4)"
    } else {
        " AND ?4 IS NULL"
    };
    let mut st = c.prepare_cached(&format!(
        "{CONVERSION_SELECT} WHERE (?1 IS NULL OR v.status = ?1) AND (?2 IS NULL OR a.slug = ?2)\
         {keyset} ORDER BY v.id DESC LIMIT ?3"
    ))?;
    let mut rows = st.query(params![
        f.status.map(ConversionStatus::as_str),
        f.affiliate.as_ref().map(Slug::as_str),
        f.limit,
        f.before.map(|b| b.0.to_bytes().to_vec()),
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(conversion_from(r)?);
    }
    Ok(out)
}

/// Who and why of a set of ledger entries for one conversion.
struct Posting<'a> {
    conversion: i64,
    affiliate: Option<i64>,
    currency: &'a str,
    kind: &'a str,
    actor: &'a str,
    reason: Option<&'a str>,
}

fn append_entries(
    c: &Connection,
    p: &Posting<'_>,
    entries: &[(LedgerBucket, i64)],
) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(
        "INSERT INTO ledger (conversion_id, affiliate_id, currency, bucket, amount, kind, actor, reason, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let now = now_micros();
    for (bucket, amount) in entries {
        st.execute(params![
            p.conversion,
            p.affiliate,
            p.currency,
            bucket.as_str(),
            amount,
            p.kind,
            p.actor,
            p.reason,
            now
        ])?;
    }
    Ok(())
}

/// Inside the caller's transaction.
pub(super) fn record_conversion(c: &Connection, v: &NewConversion) -> Result<Recorded, StoreError> {
    let existing: Option<Vec<u8>> = c
        .prepare_cached(
            "SELECT conversion_id FROM conversions WHERE program_id = ?1 AND event = ?2 AND order_id = ?3",
        )?
        .query_row(params![v.program_id, v.event, v.order_id], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        let row = get_conversion(c, ConversionId(ulid_of(id, "conversion_id")?))?;
        return Ok(if row.fingerprint == v.fingerprint {
            Recorded::Replay(row)
        } else {
            Recorded::Conflict(row)
        });
    }
    // A conversion reported approved that a hard cap may still refuse is
    // recorded pending first and approved once its claims are taken, so a
    // refusal moves it pending → rejected through the lifecycle.
    let provisional = v.status == ConversionStatus::Approved && v.caps.iter().any(|c| c.hard);
    let status = if provisional {
        ConversionStatus::Pending
    } else {
        v.status
    };
    let (facts, ctit, by) = match &v.click {
        Some((f, ctit, by)) => (Some(f), Some(*ctit), Some(*by)),
        None => (None, None, None),
    };
    let sub = |i: usize| facts.and_then(|f| f.subs[i].clone());
    c.prepare_cached(
        "INSERT INTO conversions (conversion_id, program_id, event, order_id, click_id, link_id, affiliate_id, \
         src, sub1, sub2, sub3, sub4, sub5, amount, currency, commission, status, occurred_at, received_at, \
         ctit_us, attributed_by, adv_sub1, adv_sub2, adv_sub3, adv_sub4, adv_sub5, fingerprint) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, \
         ?22, ?23, ?24, ?25, ?26, ?27)",
    )?
    .execute(params![
        v.conversion_id.0.to_bytes().as_slice(),
        v.program_id,
        v.event,
        v.order_id,
        facts.map(|f| f.click_id.to_bytes().to_vec()),
        facts.map(|f| f.link_id),
        facts.and_then(|f| f.affiliate_id),
        facts.and_then(|f| f.src.clone()),
        sub(0),
        sub(1),
        sub(2),
        sub(3),
        sub(4),
        v.amount,
        v.currency.code(),
        v.commission,
        status.as_str(),
        v.occurred_at,
        v.received_at,
        ctit,
        by,
        v.adv_subs[0],
        v.adv_subs[1],
        v.adv_subs[2],
        v.adv_subs[3],
        v.adv_subs[4],
        v.fingerprint.as_slice(),
    ])?;
    let id = c.last_insert_rowid();
    let (verdict, rule, reason) = crate::common::verdict_columns(v.verdict.as_ref());
    c.prepare_cached(
        "UPDATE conversions SET held = ?2, verdict = ?3, verdict_rule = ?4, verdict_reason = ?5, \
         ip_hash = ?6, buyer_country = ?7 WHERE id = ?1",
    )?
    .execute(params![
        id,
        v.held,
        verdict,
        rule,
        reason,
        v.ip_hash.as_ref().map(|h| h.as_slice()),
        v.buyer_country
    ])?;
    if facts.is_some() {
        c.prepare_cached(
            "UPDATE conversions SET (country, region, city, device, browser, os, referrer_host) = \
             (SELECT k.country, k.region, k.city, k.device, k.browser, k.os, k.referrer_host FROM clicks k \
             WHERE k.click_id = conversions.click_id) WHERE id = ?1",
        )?
        .execute([id])?;
    }
    if status.counted() {
        super::rollups::apply_conversion(c, id, 1)?;
    }
    let affiliate = facts.and_then(|f| f.affiliate_id);
    let mut entries = conversion::created(v.commission);
    if status == ConversionStatus::Approved {
        entries.extend(
            conversion::transition(
                ConversionStatus::Pending,
                ConversionStatus::Approved,
                v.commission,
            )
            .map_err(|e| StoreError::Refused(e.to_string()))?,
        );
    }
    let posting = Posting {
        conversion: id,
        affiliate,
        currency: v.currency.code(),
        kind: "created",
        actor: &v.actor,
        reason: None,
    };
    append_entries(c, &posting, &entries)?;
    // A conversion the rules reject takes nothing from a cap; one a hard cap
    // refuses is rejected through the lifecycle (ledger, rollups, event).
    let rejection = match &v.verdict {
        Some(verdict) if verdict.action == Action::Reject => Some(verdict.clone()),
        _ => take_caps(c, id, v)?,
    };
    let row = get_conversion(c, v.conversion_id)?;
    super::outbox::append(
        c,
        clickward_core::event::CONVERSION_CREATED,
        crate::common::conversion_event(&row, rejection.is_some()),
    )?;
    if let Some(verdict) = rejection {
        let (a, rule, reason) = crate::common::verdict_columns(Some(&verdict));
        c.prepare_cached(
            "UPDATE conversions SET verdict = ?2, verdict_rule = ?3, verdict_reason = ?4 WHERE id = ?1",
        )?
        .execute(params![id, a, rule, reason])?;
        let row = set_status_told(
            c,
            v.conversion_id,
            ConversionStatus::Rejected,
            &format!("rule:{}", verdict.rule),
            Some(&verdict.reason),
            true,
        )?;
        return Ok(Recorded::Created(row));
    }
    if provisional && !v.held {
        let row = set_status(
            c,
            v.conversion_id,
            ConversionStatus::Approved,
            &v.actor,
            None,
        )?;
        return Ok(Recorded::Created(row));
    }
    Ok(Recorded::Created(get_conversion(c, v.conversion_id)?))
}

/// Takes the conversion's claims from their cap counters, all or none
/// (`cap_usage`, in the caller's transaction: SQLite's one writer makes it
/// atomic). A hard cap that is full: nothing is taken and the verdict that
/// rejects is returned. A soft one: taken beyond the limit, the conversion
/// flagged. The claim that fills a cap tells `cap.reached`.
fn take_caps(
    c: &Connection,
    id: i64,
    v: &NewConversion,
) -> Result<Option<clickward_core::fraud::Verdict>, StoreError> {
    let mut taken: Vec<(&clickward_core::fraud::CapClaim, i64)> = Vec::new();
    for claim in &v.caps {
        let used: i64 = c
            .prepare_cached("SELECT used FROM cap_usage WHERE cap_key = ?1 AND period = ?2")?
            .query_row(params![claim.key, claim.period], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if claim.hard && used + claim.amount > claim.limit {
            return Ok(Some(claim.refused(Action::Reject)));
        }
        taken.push((claim, used));
    }
    let mut flag = None;
    for (claim, used) in taken {
        c.prepare_cached(
            "INSERT INTO cap_usage (cap_key, period, used) VALUES (?1, ?2, ?3) \
             ON CONFLICT (cap_key, period) DO UPDATE SET used = used + excluded.used",
        )?
        .execute(params![claim.key, claim.period, claim.amount])?;
        let after = used + claim.amount;
        if used < claim.limit && after >= claim.limit {
            super::outbox::append(
                c,
                clickward_core::event::CAP_REACHED,
                crate::common::cap_event(claim, after),
            )?;
        }
        if !claim.hard && after > claim.limit && flag.is_none() {
            flag = Some(claim.over_soft(after));
        }
    }
    if let (Some(f), None) = (&flag, &v.verdict) {
        let (a, rule, reason) = crate::common::verdict_columns(Some(f));
        c.prepare_cached(
            "UPDATE conversions SET verdict = ?2, verdict_rule = ?3, verdict_reason = ?4 WHERE id = ?1",
        )?
        .execute(params![id, a, rule, reason])?;
    }
    Ok(None)
}

/// Inside the caller's transaction.
pub(super) fn set_status(
    c: &Connection,
    id: ConversionId,
    to: ConversionStatus,
    actor: &str,
    reason: Option<&str>,
) -> Result<ConversionRow, StoreError> {
    set_status_told(c, id, to, actor, reason, false)
}

/// [`set_status`], with `refused` marking the event of a conversion refused
/// at intake (see `common::conversion_event`).
fn set_status_told(
    c: &Connection,
    id: ConversionId,
    to: ConversionStatus,
    actor: &str,
    reason: Option<&str>,
    refused: bool,
) -> Result<ConversionRow, StoreError> {
    let (rowid, from, commission, affiliate, currency): (i64, String, i64, Option<i64>, String) = c
        .query_row(
            "SELECT id, status, commission, affiliate_id, currency FROM conversions WHERE conversion_id = ?1",
            [id.0.to_bytes().as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("conversion {id}")))?;
    let from = ConversionStatus::parse(&from).ok_or_else(|| corrupt("status", &from))?;
    let entries = conversion::transition(from, to, commission)
        .map_err(|e| StoreError::Refused(e.to_string()))?;
    c.execute(
        "UPDATE conversions SET status = ?2 WHERE id = ?1",
        params![rowid, to.as_str()],
    )?;
    match (from.counted(), to.counted()) {
        (true, false) => super::rollups::apply_conversion(c, rowid, -1)?,
        (false, true) => super::rollups::apply_conversion(c, rowid, 1)?,
        _ => {}
    }
    let posting = Posting {
        conversion: rowid,
        affiliate,
        currency: &currency,
        kind: to.as_str(),
        actor,
        reason,
    };
    append_entries(c, &posting, &entries)?;
    let row = get_conversion(c, id)?;
    if let Some(kind) = clickward_core::event::conversion_status_event(to) {
        super::outbox::append(c, kind, crate::common::conversion_event(&row, refused))?;
    }
    Ok(row)
}

/// Inside the caller's transaction: see [`ConversionStore::refund_conversion`].
pub(super) fn refund(c: &Connection, r: &crate::RefundInput) -> Result<crate::Refund, StoreError> {
    use crate::common::{RefundStep, refund_step};
    type Found = (
        i64,
        String,
        Option<i64>,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        String,
    );
    let (rowid, status, amount, commission, gross_amount, gross_commission, affiliate, currency): Found = c
        .query_row(
            "SELECT id, status, amount, commission, gross_amount, gross_commission, affiliate_id, \
             currency FROM conversions WHERE conversion_id = ?1",
            [r.conversion_id.0.to_bytes().as_slice()],
            |x| {
                Ok((
                    x.get(0)?,
                    x.get(1)?,
                    x.get(2)?,
                    x.get(3)?,
                    x.get(4)?,
                    x.get(5)?,
                    x.get(6)?,
                    x.get(7)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("conversion {}", r.conversion_id)))?;
    let status = ConversionStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?;
    let stored: Option<i64> = c
        .prepare_cached(
            "SELECT refunded FROM conversion_refunds WHERE conversion = ?1 AND refund_key = ?2",
        )?
        .query_row(params![rowid, r.key], |x| x.get(0))
        .optional()?;
    if stored.is_some_and(|s| s >= r.refunded)
        || matches!(
            status,
            ConversionStatus::Rejected | ConversionStatus::Reversed
        )
    {
        return Ok(crate::Refund::Unchanged(get_conversion(
            c,
            r.conversion_id,
        )?));
    }
    c.prepare_cached(
        "INSERT INTO conversion_refunds (conversion, refund_key, refunded, total, actor, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (conversion, refund_key) DO UPDATE SET \
         refunded = excluded.refunded, total = excluded.total, actor = excluded.actor, at = excluded.at",
    )?
    .execute(params![rowid, r.key, r.refunded, r.total, r.actor, now_micros()])?;
    // Every refund of it, this one last (its total is the base).
    let mut refunds: Vec<(i64, i64)> = {
        let mut st = c.prepare_cached(
            "SELECT refunded, total FROM conversion_refunds WHERE conversion = ?1 AND refund_key <> ?2",
        )?;
        let rows = st.query_map(params![rowid, r.key], |x| Ok((x.get(0)?, x.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    refunds.push((r.refunded, r.total));
    let reason = format!("refund {}", r.key);
    match refund_step(
        status,
        (amount, commission),
        (gross_amount, gross_commission),
        &refunds,
    )? {
        RefundStep::Nothing => Ok(crate::Refund::Unchanged(get_conversion(
            c,
            r.conversion_id,
        )?)),
        RefundStep::Whole(to) => Ok(crate::Refund::Changed(set_status(
            c,
            r.conversion_id,
            to,
            &r.actor,
            Some(&reason),
        )?)),
        RefundStep::Cut {
            amount,
            commission,
            entry,
            gross,
        } => {
            // Counted before and after: the rollups lose the old and gain
            // the new amounts.
            super::rollups::apply_conversion(c, rowid, -1)?;
            c.execute(
                "UPDATE conversions SET amount = ?2, commission = ?3, gross_amount = ?4, \
                 gross_commission = ?5 WHERE id = ?1",
                params![rowid, amount, commission, gross.0, gross.1],
            )?;
            super::rollups::apply_conversion(c, rowid, 1)?;
            let posting = Posting {
                conversion: rowid,
                affiliate,
                currency: &currency,
                kind: "refund",
                actor: &r.actor,
                reason: Some(&reason),
            };
            append_entries(c, &posting, &[entry])?;
            let row = get_conversion(c, r.conversion_id)?;
            super::outbox::append(
                c,
                clickward_core::event::CONVERSION_REFUNDED,
                crate::common::refund_event(&row, r),
            )?;
            Ok(crate::Refund::Changed(row))
        }
    }
}

/// Inside the caller's transaction.
pub(super) fn approve_due(c: &Connection, now: Micros) -> Result<u64, StoreError> {
    let due: Vec<Vec<u8>> = {
        let mut st = c.prepare_cached(
            "SELECT v.conversion_id FROM conversions v JOIN programs p ON p.id = v.program_id \
             WHERE v.status = 'pending' AND NOT v.held AND p.hold_s IS NOT NULL \
             AND v.received_at + p.hold_s * 1000000 <= ?1",
        )?;
        let rows = st.query_map([now], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let n = due.len();
    for id in due {
        set_status(
            c,
            ConversionId(ulid_of(id, "conversion_id")?),
            ConversionStatus::Approved,
            "auto:hold",
            Some("hold period passed"),
        )?;
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) fn balances(
    c: &Connection,
    affiliate: Option<&str>,
) -> Result<Vec<Balance>, StoreError> {
    // Two statements: with `?1 IS NULL OR …` in one, SQLite would not use
    // the index for the one affiliate.
    let mut st = match affiliate {
        None => c.prepare_cached(
            "SELECT a.slug, l.currency, l.bucket, SUM(l.amount) FROM ledger l LEFT JOIN affiliates a \
             ON a.id = l.affiliate_id GROUP BY l.affiliate_id, l.currency, l.bucket \
             ORDER BY a.slug, l.currency, l.bucket",
        )?,
        Some(_) => c.prepare_cached(
            "SELECT a.slug, l.currency, l.bucket, SUM(l.amount) FROM ledger l JOIN affiliates a \
             ON a.id = l.affiliate_id WHERE a.slug = ?1 GROUP BY l.currency, l.bucket \
             ORDER BY l.currency, l.bucket",
        )?,
    };
    let mut rows = match affiliate {
        None => st.query([])?,
        Some(a) => st.query([a])?,
    };
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let bucket: String = r.get(2)?;
        out.push(Balance {
            affiliate: r.get(0)?,
            currency: r.get(1)?,
            bucket: LedgerBucket::parse(&bucket).ok_or_else(|| corrupt("bucket", &bucket))?,
            minor: r.get(3)?,
        });
    }
    Ok(out)
}

/// Claims `key` for a request (see [`crate::IdempotencyClaim`]); a claim
/// working for longer than `stale_after` µs (its process died mid-work) is
/// taken over.
pub(super) fn claim_idempotency_key(
    c: &mut Connection,
    key: &str,
    fingerprint: &[u8],
    stale_after: i64,
) -> Result<crate::IdempotencyClaim, StoreError> {
    let tx = super::begin_write(c)?;
    let now = now_micros();
    let inserted = tx.execute(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) VALUES (?1, ?2, 0, '', ?3) \
         ON CONFLICT (key) DO NOTHING",
        params![key, fingerprint, now],
    )?;
    let claim = if inserted == 1 {
        crate::IdempotencyClaim::Claimed
    } else {
        let (fp, status, body, at): (Vec<u8>, u16, String, i64) = tx.query_row(
            "SELECT fingerprint, status, body, created_at FROM idempotency_keys WHERE key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        match status {
            0 if at < now - stale_after => {
                tx.execute(
                    "UPDATE idempotency_keys SET fingerprint = ?2, created_at = ?3 WHERE key = ?1",
                    params![key, fingerprint, now],
                )?;
                crate::IdempotencyClaim::Claimed
            }
            0 => crate::IdempotencyClaim::Working(fp),
            _ => crate::IdempotencyClaim::Done(fp, status, body),
        }
    };
    tx.commit()?;
    Ok(claim)
}

pub(super) fn save_idempotent_response(
    c: &Connection,
    key: &str,
    fingerprint: &[u8],
    status: u16,
    body: &str,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (key) DO UPDATE SET status = excluded.status, body = excluded.body \
         WHERE idempotency_keys.status = 0 AND idempotency_keys.fingerprint = excluded.fingerprint",
        params![key, fingerprint, status, body, now_micros()],
    )?;
    Ok(())
}

pub(super) fn payout_preview(
    c: &Connection,
    affiliate: &str,
) -> Result<Vec<crate::PayoutLine>, StoreError> {
    let aid = id_of(c, "affiliates", "affiliate", affiliate)?;
    let mut st = c.prepare_cached(
        "SELECT p.slug, l.currency, SUM(l.amount), p.min_payout FROM ledger l \
         JOIN conversions v ON v.id = l.conversion_id JOIN programs p ON p.id = v.program_id \
         WHERE l.affiliate_id = ?1 AND l.bucket = 'payable' GROUP BY p.id, l.currency ORDER BY p.slug, l.currency",
    )?;
    let mut rows = st.query([aid])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let payable: i64 = r.get(2)?;
        let min: i64 = r.get(3)?;
        out.push(crate::PayoutLine {
            program: r.get(0)?,
            currency: r.get(1)?,
            payable_minor: payable,
            min_payout_minor: min,
            eligible: payable > 0 && payable >= min,
        });
    }
    Ok(out)
}

pub(super) fn list_payouts(
    c: &Connection,
    affiliate: Option<&str>,
    limit: u32,
) -> Result<Vec<crate::Payout>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "{PAYOUT_SELECT} WHERE (?1 IS NULL OR a.slug = ?1) ORDER BY o.id DESC LIMIT ?2"
    ))?;
    let mut rows = st.query(params![affiliate, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(payout_from(r)?);
    }
    Ok(out)
}

fn payout_from(r: &Row<'_>) -> Result<crate::Payout, StoreError> {
    Ok(crate::Payout {
        batch_id: ulid_of(r.get(0)?, "batch_id")?.to_string(),
        key: r.get(1)?,
        affiliate: r.get(2)?,
        currency: r.get(3)?,
        amount_minor: r.get(4)?,
        conversions: r.get(5)?,
        created_at: r.get(6)?,
        created: false,
    })
}

fn payout_by_key(c: &Connection, key: &str) -> Result<Option<crate::Payout>, StoreError> {
    let mut st = c.prepare_cached(&format!("{PAYOUT_SELECT} WHERE o.key = ?1"))?;
    let mut rows = st.query([key])?;
    rows.next()?.map(payout_from).transpose()
}

/// Inside the caller's transaction.
pub(super) fn create_payout(
    c: &Connection,
    affiliate: &str,
    currency: Currency,
    key: &str,
    batch_id: ulid::Ulid,
    actor: &str,
) -> Result<crate::Payout, StoreError> {
    if let Some(existing) = payout_by_key(c, key)? {
        return Ok(existing);
    }
    let aid = id_of(c, "affiliates", "affiliate", affiliate)?;
    let lines = payout_preview(c, affiliate)?;
    let eligible = eligible_programs(affiliate, currency, &lines)?;
    let now = now_micros();
    c.execute(
        "INSERT INTO payouts (batch_id, key, affiliate_id, currency, amount, conversions, actor, created_at) \
         VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?6)",
        params![batch_id.to_bytes().as_slice(), key, aid, currency.code(), actor, now],
    )?;
    let payout_id = c.last_insert_rowid();
    let mut amount = 0i64;
    let mut count = 0i64;
    let mut entry = c.prepare_cached(
        "INSERT INTO ledger (conversion_id, payout_id, affiliate_id, currency, bucket, amount, kind, actor, \
         reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9)",
    )?;
    for program in eligible {
        // Approved conversions become paid.
        let approved: Vec<(i64, i64, Vec<u8>)> = {
            let mut st = c.prepare_cached(
                "SELECT v.id, v.commission, v.conversion_id FROM conversions v JOIN programs p ON p.id = v.program_id \
                 WHERE p.slug = ?1 AND v.affiliate_id = ?2 AND v.currency = ?3 AND v.status = 'approved'",
            )?;
            let rows = st.query_map(params![program, aid, currency.code()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, commission, public_id) in &approved {
            let entries = conversion::transition(
                ConversionStatus::Approved,
                ConversionStatus::Paid,
                *commission,
            )
            .map_err(|e| StoreError::Refused(e.to_string()))?;
            c.execute("UPDATE conversions SET status = 'paid' WHERE id = ?1", [id])?;
            for (bucket, a) in entries {
                entry.execute(params![
                    id,
                    payout_id,
                    aid,
                    currency.code(),
                    bucket.as_str(),
                    a,
                    "paid",
                    actor,
                    now
                ])?;
            }
            amount += commission;
            count += 1;
            let row = get_conversion(
                c,
                ConversionId(ulid_of(public_id.clone(), "conversion_id")?),
            )?;
            super::outbox::append(
                c,
                "conversion.paid",
                serde_json::json!({ "conversion": row }),
            )?;
        }
        // What is still in `payable` for this program now is the clawbacks of
        // reversed paid conversions: net them against this payout.
        let rest: i64 = c.query_row(
            "SELECT COALESCE(SUM(l.amount), 0) FROM ledger l JOIN conversions v ON v.id = l.conversion_id \
             JOIN programs p ON p.id = v.program_id WHERE p.slug = ?1 AND l.affiliate_id = ?2 \
             AND l.currency = ?3 AND l.bucket = 'payable'",
            params![program, aid, currency.code()],
            |r| r.get(0),
        )?;
        if rest != 0 {
            for (bucket, a) in [(LedgerBucket::Payable, -rest), (LedgerBucket::Paid, rest)] {
                entry.execute(params![
                    Option::<i64>::None,
                    payout_id,
                    aid,
                    currency.code(),
                    bucket.as_str(),
                    a,
                    "netted",
                    actor,
                    now
                ])?;
            }
            amount += rest;
        }
    }
    c.execute(
        "UPDATE payouts SET amount = ?2, conversions = ?3 WHERE id = ?1",
        params![payout_id, amount, count],
    )?;
    let mut p =
        payout_by_key(c, key)?.ok_or_else(|| StoreError::Corrupt("payout vanished".to_owned()))?;
    p.created = true;
    super::outbox::append(
        c,
        clickward_core::event::PAYOUT_CREATED,
        serde_json::json!({ "payout": p }),
    )?;
    Ok(p)
}

impl ConversionStore for SqliteStore {
    fn record_conversion(&self, v: NewConversion) -> StoreFuture<'_, Recorded> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let out = record_conversion(&tx, &v)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn get_conversion(&self, id: ConversionId) -> StoreFuture<'_, ConversionRow> {
        self.read(move |c| get_conversion(c, id))
    }

    fn list_conversions(&self, f: ConversionFilter) -> StoreFuture<'_, Vec<ConversionRow>> {
        self.read(move |c| list_conversions(c, &f))
    }

    fn list_payouts(&self, affiliate: Option<Slug>, limit: u32) -> StoreFuture<'_, Vec<Payout>> {
        self.read(move |c| list_payouts(c, affiliate.as_ref().map(Slug::as_str), limit))
    }

    fn set_conversion_status(
        &self,
        id: ConversionId,
        to: ConversionStatus,
        actor: String,
        reason: Option<String>,
    ) -> StoreFuture<'_, ConversionRow> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let row = set_status(&tx, id, to, &actor, reason.as_deref())?;
            tx.commit()?;
            Ok(row)
        })
    }

    fn refund_conversion(&self, r: crate::RefundInput) -> StoreFuture<'_, crate::Refund> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let out = refund(&tx, &r)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn approve_due(&self, now: Micros) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let n = approve_due(&tx, now)?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn balances(&self, affiliate: Option<Slug>) -> StoreFuture<'_, Vec<Balance>> {
        self.read(move |c| balances(c, affiliate.as_ref().map(Slug::as_str)))
    }

    fn payout_preview(&self, affiliate: Slug) -> StoreFuture<'_, Vec<PayoutLine>> {
        self.read(move |c| payout_preview(c, affiliate.as_str()))
    }

    fn create_payout(
        &self,
        affiliate: Slug,
        currency: Currency,
        key: String,
        batch_id: ulid::Ulid,
        actor: String,
    ) -> StoreFuture<'_, Payout> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let p = create_payout(&tx, affiliate.as_str(), currency, &key, batch_id, &actor)?;
            tx.commit()?;
            Ok(p)
        })
    }

    fn claim_idempotency_key(
        &self,
        key: String,
        fingerprint: Vec<u8>,
        stale_after: i64,
    ) -> StoreFuture<'_, crate::IdempotencyClaim> {
        self.write(move |c| claim_idempotency_key(c, &key, &fingerprint, stale_after))
    }

    fn release_idempotency_key(&self, key: String) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM idempotency_keys WHERE key = ?1 AND status = 0",
                [&key],
            )?;
            Ok(())
        })
    }

    fn save_idempotent_response(
        &self,
        key: String,
        fingerprint: Vec<u8>,
        status: u16,
        body: String,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| save_idempotent_response(c, &key, &fingerprint, status, &body))
    }
}
