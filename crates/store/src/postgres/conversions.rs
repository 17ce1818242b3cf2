//! SQL for conversions, the ledger, payouts and idempotency keys.

use crate::common::{
    CONVERSION_SELECT, Named, PAYOUT_SELECT, corrupt, eligible_programs, now_micros, ulid_of,
};
use crate::{
    Balance, ConversionFilter, ConversionRow, NewConversion, Payout, PayoutLine, Recorded,
    StoreError, StoreFuture,
};
use clickward_core::Micros;
use clickward_core::conversion::{self, ConversionStatus, LedgerBucket};
use clickward_core::fraud::Action;
use clickward_core::id::{ClickId, ConversionId, Slug};
use clickward_core::money::Currency;
use tokio_postgres::{GenericClient, Row};

use super::catalog::id_of;
use super::{ConversionStore, PgStore};

pub(super) fn conversion_from(r: &Row) -> Result<ConversionRow, StoreError> {
    let status: String = r.try_get(16)?;
    Ok(ConversionRow {
        conversion_id: ConversionId(ulid_of(r.try_get(0)?, "conversion_id")?),
        program: r.try_get(1)?,
        event: r.try_get(2)?,
        order_id: r.try_get(3)?,
        click_id: r
            .try_get::<_, Option<Vec<u8>>>(4)?
            .map(|b| ulid_of(b, "click_id").map(ClickId))
            .transpose()?,
        link: r.try_get(5)?,
        affiliate: r.try_get(6)?,
        src: r.try_get(7)?,
        subs: [
            r.try_get(8)?,
            r.try_get(9)?,
            r.try_get(10)?,
            r.try_get(11)?,
            r.try_get(12)?,
        ],
        amount_minor: r.try_get(13)?,
        commission_minor: r.try_get(14)?,
        currency: r.try_get(15)?,
        status: ConversionStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        occurred_at: r.try_get(17)?,
        received_at: r.try_get(18)?,
        ctit_us: r.try_get(19)?,
        attributed_by: r.try_get(20)?,
        adv_subs: [
            r.try_get(21)?,
            r.try_get(22)?,
            r.try_get(23)?,
            r.try_get(24)?,
            r.try_get(25)?,
        ],
        fingerprint: r.try_get(26)?,
        held: r.try_get(27)?,
        verdict: crate::common::verdict_of(r.try_get(28)?, r.try_get(29)?, r.try_get(30)?)?,
        gross_amount_minor: r.try_get(31)?,
        gross_commission_minor: r.try_get(32)?,
    })
}

pub(super) async fn get_conversion(
    c: &impl GenericClient,
    id: ConversionId,
) -> Result<ConversionRow, StoreError> {
    match c
        .query_opt(
            &format!("{CONVERSION_SELECT} WHERE v.conversion_id = $1"),
            &[&id.0.to_bytes().as_slice()],
        )
        .await?
    {
        Some(r) => conversion_from(&r),
        None => Err(StoreError::NotFound(format!("conversion {id}"))),
    }
}

/// Who and why of a set of ledger entries for one conversion.
pub(super) struct Posting<'a> {
    conversion: Option<i64>,
    payout: Option<i64>,
    affiliate: Option<i64>,
    currency: &'a str,
    kind: &'a str,
    actor: &'a str,
    reason: Option<&'a str>,
}

pub(super) async fn append_entries(
    c: &impl GenericClient,
    p: &Posting<'_>,
    entries: &[(LedgerBucket, i64)],
) -> Result<(), StoreError> {
    let now = now_micros();
    for (bucket, amount) in entries {
        c.execute(
            "INSERT INTO ledger (conversion_id, payout_id, affiliate_id, currency, bucket, amount, kind, \
             actor, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &p.conversion,
                &p.payout,
                &p.affiliate,
                &p.currency,
                &bucket.as_str(),
                amount,
                &p.kind,
                &p.actor,
                &p.reason,
                &now,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn existing_conversion(
    c: &impl GenericClient,
    v: &NewConversion,
) -> Result<Option<Recorded>, StoreError> {
    let Some(r) = c
        .query_opt(
            "SELECT conversion_id FROM conversions WHERE program_id = $1 AND event = $2 AND order_id = $3",
            &[&v.program_id, &v.event, &v.order_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let row = get_conversion(c, ConversionId(ulid_of(r.try_get(0)?, "conversion_id")?)).await?;
    Ok(Some(if row.fingerprint == v.fingerprint {
        Recorded::Replay(row)
    } else {
        Recorded::Conflict(row)
    }))
}

pub(super) async fn record_conversion(
    c: &impl GenericClient,
    v: &NewConversion,
) -> Result<Recorded, StoreError> {
    if let Some(found) = existing_conversion(c, v).await? {
        return Ok(found);
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
    // Two nodes taking the same order at once: the unique index makes one
    // insert wait for the other and then do nothing.
    let inserted = c
        .query_opt(
            "INSERT INTO conversions (conversion_id, program_id, event, order_id, click_id, link_id, \
             affiliate_id, src, sub1, sub2, sub3, sub4, sub5, amount, currency, commission, status, \
             occurred_at, received_at, ctit_us, attributed_by, adv_sub1, adv_sub2, adv_sub3, adv_sub4, \
             adv_sub5, fingerprint, country, region, city, device, browser, os, referrer_host) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
             $20, $21, $22, $23, $24, $25, $26, $27, k.country, k.region, k.city, k.device, k.browser, k.os, \
             k.referrer_host \
             FROM (SELECT 1) AS one LEFT JOIN clicks k ON k.click_id = $5 \
             ON CONFLICT (program_id, event, order_id) DO NOTHING RETURNING id",
            &[
                &v.conversion_id.0.to_bytes().as_slice(),
                &v.program_id,
                &v.event,
                &v.order_id,
                &facts.map(|f| f.click_id.to_bytes().to_vec()),
                &facts.map(|f| f.link_id),
                &facts.and_then(|f| f.affiliate_id),
                &facts.and_then(|f| f.src.clone()),
                &sub(0),
                &sub(1),
                &sub(2),
                &sub(3),
                &sub(4),
                &v.amount,
                &v.currency.code(),
                &v.commission,
                &status.as_str(),
                &v.occurred_at,
                &v.received_at,
                &ctit,
                &by,
                &v.adv_subs[0],
                &v.adv_subs[1],
                &v.adv_subs[2],
                &v.adv_subs[3],
                &v.adv_subs[4],
                &v.fingerprint.as_slice(),
            ],
        )
        .await?;
    let Some(inserted) = inserted else {
        return existing_conversion(c, v)
            .await?
            .ok_or_else(|| StoreError::Corrupt("conflicting conversion vanished".to_owned()));
    };
    let id: i64 = inserted.try_get(0)?;
    let (verdict, rule, reason) = crate::common::verdict_columns(v.verdict.as_ref());
    c.execute(
        "UPDATE conversions SET held = $2, verdict = $3, verdict_rule = $4, verdict_reason = $5, \
         ip_hash = $6, buyer_country = $7 WHERE id = $1",
        &[
            &id,
            &v.held,
            &verdict,
            &rule,
            &reason,
            &v.ip_hash.as_ref().map(|h| h.as_slice()),
            &v.buyer_country,
        ],
    )
    .await?;
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
        conversion: Some(id),
        payout: None,
        affiliate: facts.and_then(|f| f.affiliate_id),
        currency: v.currency.code(),
        kind: "created",
        actor: &v.actor,
        reason: None,
    };
    append_entries(c, &posting, &entries).await?;
    // As on SQLite: a rejected conversion takes nothing from a cap; one a
    // hard cap refuses is rejected through the lifecycle.
    let rejection = match &v.verdict {
        Some(verdict) if verdict.action == Action::Reject => Some(verdict.clone()),
        _ => take_caps(c, id, v).await?,
    };
    let row = get_conversion(c, v.conversion_id).await?;
    super::outbox::append(
        c,
        clickward_core::event::CONVERSION_CREATED,
        crate::common::conversion_event(&row, rejection.is_some()),
    )
    .await?;
    if let Some(verdict) = rejection {
        let (a, rule, reason) = crate::common::verdict_columns(Some(&verdict));
        c.execute(
            "UPDATE conversions SET verdict = $2, verdict_rule = $3, verdict_reason = $4 WHERE id = $1",
            &[&id, &a, &rule, &reason],
        )
        .await?;
        let row = set_status_told(
            c,
            v.conversion_id,
            ConversionStatus::Rejected,
            &format!("rule:{}", verdict.rule),
            Some(&verdict.reason),
            true,
        )
        .await?;
        return Ok(Recorded::Created(row));
    }
    if provisional && !v.held {
        let row = set_status(
            c,
            v.conversion_id,
            ConversionStatus::Approved,
            &v.actor,
            None,
        )
        .await?;
        return Ok(Recorded::Created(row));
    }
    Ok(Recorded::Created(get_conversion(c, v.conversion_id).await?))
}

/// Takes the conversion's claims from their cap counters, all or none, in
/// the caller's transaction. Each hard claim is one conditional upsert: the
/// row lock makes concurrent conversions (on any node) wait for each other
/// and the condition sees the latest count, so a cap never leaks. Claims are
/// taken in key order (no deadlock between two conversions) under a
/// savepoint that a full hard cap rolls back.
async fn take_caps(
    c: &impl GenericClient,
    id: i64,
    v: &NewConversion,
) -> Result<Option<clickward_core::fraud::Verdict>, StoreError> {
    if v.caps.is_empty() {
        return Ok(None);
    }
    let mut claims: Vec<&clickward_core::fraud::CapClaim> = v.caps.iter().collect();
    claims.sort_by(|a, b| (&a.key, &a.period).cmp(&(&b.key, &b.period)));
    c.batch_execute("SAVEPOINT caps").await?;
    let mut flag = None;
    let mut reached = Vec::new();
    for claim in claims {
        let used: Option<i64> = if claim.hard {
            if claim.amount > claim.limit {
                None
            } else {
                c.query_opt(
                    "INSERT INTO cap_usage AS u (cap_key, period, used) VALUES ($1, $2, $3) \
                     ON CONFLICT (cap_key, period) DO UPDATE SET used = u.used + excluded.used \
                     WHERE u.used + excluded.used <= $4 RETURNING used",
                    &[&claim.key, &claim.period, &claim.amount, &claim.limit],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
            }
        } else {
            Some(
                c.query_one(
                    "INSERT INTO cap_usage AS u (cap_key, period, used) VALUES ($1, $2, $3) \
                     ON CONFLICT (cap_key, period) DO UPDATE SET used = u.used + excluded.used \
                     RETURNING used",
                    &[&claim.key, &claim.period, &claim.amount],
                )
                .await?
                .try_get(0)?,
            )
        };
        let Some(after) = used else {
            c.batch_execute("ROLLBACK TO SAVEPOINT caps").await?;
            return Ok(Some(claim.refused(Action::Reject)));
        };
        if after - claim.amount < claim.limit && after >= claim.limit {
            reached.push((claim, after));
        }
        if !claim.hard && after > claim.limit && flag.is_none() {
            flag = Some(claim.over_soft(after));
        }
    }
    c.batch_execute("RELEASE SAVEPOINT caps").await?;
    for (claim, after) in reached {
        super::outbox::append(
            c,
            clickward_core::event::CAP_REACHED,
            crate::common::cap_event(claim, after),
        )
        .await?;
    }
    if let (Some(f), None) = (&flag, &v.verdict) {
        let (a, rule, reason) = crate::common::verdict_columns(Some(f));
        c.execute(
            "UPDATE conversions SET verdict = $2, verdict_rule = $3, verdict_reason = $4 WHERE id = $1",
            &[&id, &a, &rule, &reason],
        )
        .await?;
    }
    Ok(None)
}

pub(super) async fn set_status(
    c: &impl GenericClient,
    id: ConversionId,
    to: ConversionStatus,
    actor: &str,
    reason: Option<&str>,
) -> Result<ConversionRow, StoreError> {
    set_status_told(c, id, to, actor, reason, false).await
}

/// [`set_status`], with `refused` marking the event of a conversion refused
/// at intake (see `common::conversion_event`).
async fn set_status_told(
    c: &impl GenericClient,
    id: ConversionId,
    to: ConversionStatus,
    actor: &str,
    reason: Option<&str>,
    refused: bool,
) -> Result<ConversionRow, StoreError> {
    // The row lock serializes two nodes changing the same conversion.
    let r = c
        .query_opt(
            "SELECT id, status, commission, affiliate_id, currency FROM conversions \
             WHERE conversion_id = $1 FOR UPDATE",
            &[&id.0.to_bytes().as_slice()],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("conversion {id}")))?;
    let rowid: i64 = r.try_get(0)?;
    let from: String = r.try_get(1)?;
    let commission: i64 = r.try_get(2)?;
    let affiliate: Option<i64> = r.try_get(3)?;
    let currency: String = r.try_get(4)?;
    let from = ConversionStatus::parse(&from).ok_or_else(|| corrupt("status", &from))?;
    let entries = conversion::transition(from, to, commission)
        .map_err(|e| StoreError::Refused(e.to_string()))?;
    c.execute(
        "UPDATE conversions SET status = $2 WHERE id = $1",
        &[&rowid, &to.as_str()],
    )
    .await?;
    let posting = Posting {
        conversion: Some(rowid),
        payout: None,
        affiliate,
        currency: &currency,
        kind: to.as_str(),
        actor,
        reason,
    };
    append_entries(c, &posting, &entries).await?;
    let row = get_conversion(c, id).await?;
    if let Some(kind) = clickward_core::event::conversion_status_event(to) {
        super::outbox::append(c, kind, crate::common::conversion_event(&row, refused)).await?;
    }
    Ok(row)
}

/// Inside the caller's transaction: see [`ConversionStore::refund_conversion`].
pub(super) async fn refund(
    c: &impl GenericClient,
    r: &crate::RefundInput,
) -> Result<crate::Refund, StoreError> {
    use crate::common::{RefundStep, refund_step};
    // The row lock serializes two nodes refunding the same conversion.
    let row = c
        .query_opt(
            "SELECT id, status, amount, commission, gross_amount, gross_commission, affiliate_id, \
             currency FROM conversions WHERE conversion_id = $1 FOR UPDATE",
            &[&r.conversion_id.0.to_bytes().as_slice()],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("conversion {}", r.conversion_id)))?;
    let rowid: i64 = row.try_get(0)?;
    let status: String = row.try_get(1)?;
    let status = ConversionStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?;
    let amount: Option<i64> = row.try_get(2)?;
    let commission: i64 = row.try_get(3)?;
    let gross: (Option<i64>, Option<i64>) = (row.try_get(4)?, row.try_get(5)?);
    let affiliate: Option<i64> = row.try_get(6)?;
    let currency: String = row.try_get(7)?;
    let stored: Option<i64> = c
        .query_opt(
            "SELECT refunded FROM conversion_refunds WHERE conversion = $1 AND refund_key = $2",
            &[&rowid, &r.key],
        )
        .await?
        .map(|x| x.try_get(0))
        .transpose()?;
    if stored.is_some_and(|s| s >= r.refunded)
        || matches!(
            status,
            ConversionStatus::Rejected | ConversionStatus::Reversed
        )
    {
        return Ok(crate::Refund::Unchanged(
            get_conversion(c, r.conversion_id).await?,
        ));
    }
    c.execute(
        "INSERT INTO conversion_refunds (conversion, refund_key, refunded, total, actor, at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conversion, refund_key) DO UPDATE SET \
         refunded = excluded.refunded, total = excluded.total, actor = excluded.actor, at = excluded.at",
        &[&rowid, &r.key, &r.refunded, &r.total, &r.actor, &now_micros()],
    )
    .await?;
    let mut refunds: Vec<(i64, i64)> = c
        .query(
            "SELECT refunded, total FROM conversion_refunds WHERE conversion = $1 AND refund_key <> $2",
            &[&rowid, &r.key],
        )
        .await?
        .iter()
        .map(|x| Ok((x.try_get(0)?, x.try_get(1)?)))
        .collect::<Result<_, StoreError>>()?;
    refunds.push((r.refunded, r.total));
    let reason = format!("refund {}", r.key);
    match refund_step(status, (amount, commission), gross, &refunds)? {
        RefundStep::Nothing => Ok(crate::Refund::Unchanged(
            get_conversion(c, r.conversion_id).await?,
        )),
        RefundStep::Whole(to) => Ok(crate::Refund::Changed(
            set_status(c, r.conversion_id, to, &r.actor, Some(&reason)).await?,
        )),
        RefundStep::Cut {
            amount,
            commission,
            entry,
            gross,
        } => {
            c.execute(
                "UPDATE conversions SET amount = $2, commission = $3, gross_amount = $4, \
                 gross_commission = $5 WHERE id = $1",
                &[&rowid, &amount, &commission, &gross.0, &gross.1],
            )
            .await?;
            let posting = Posting {
                conversion: Some(rowid),
                payout: None,
                affiliate,
                currency: &currency,
                kind: "refund",
                actor: &r.actor,
                reason: Some(&reason),
            };
            append_entries(c, &posting, &[entry]).await?;
            let row = get_conversion(c, r.conversion_id).await?;
            super::outbox::append(
                c,
                clickward_core::event::CONVERSION_REFUNDED,
                crate::common::refund_event(&row, r),
            )
            .await?;
            Ok(crate::Refund::Changed(row))
        }
    }
}

pub(super) async fn payout_preview(
    c: &impl GenericClient,
    affiliate: &str,
) -> Result<Vec<PayoutLine>, StoreError> {
    let aid = id_of(c, Named::Affiliates, affiliate).await?;
    let rows = c
        .query(
            "SELECT p.slug, l.currency, SUM(l.amount)::int8, MIN(p.min_payout) FROM ledger l \
             JOIN conversions v ON v.id = l.conversion_id JOIN programs p ON p.id = v.program_id \
             WHERE l.affiliate_id = $1 AND l.bucket = 'payable' GROUP BY p.id, p.slug, l.currency \
             ORDER BY p.slug, l.currency",
            &[&aid],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let payable: i64 = r.try_get(2)?;
        let min: i64 = r.try_get(3)?;
        out.push(PayoutLine {
            program: r.try_get(0)?,
            currency: r.try_get(1)?,
            payable_minor: payable,
            min_payout_minor: min,
            eligible: payable > 0 && payable >= min,
        });
    }
    Ok(out)
}

pub(super) async fn payout_by_key(
    c: &impl GenericClient,
    key: &str,
) -> Result<Option<Payout>, StoreError> {
    c.query_opt(&format!("{PAYOUT_SELECT} WHERE o.key = $1"), &[&key])
        .await?
        .as_ref()
        .map(payout_from)
        .transpose()
}

pub(super) fn payout_from(r: &Row) -> Result<Payout, StoreError> {
    Ok(Payout {
        batch_id: ulid_of(r.try_get(0)?, "batch_id")?.to_string(),
        key: r.try_get(1)?,
        affiliate: r.try_get(2)?,
        currency: r.try_get(3)?,
        amount_minor: r.try_get(4)?,
        conversions: r.try_get(5)?,
        created_at: r.try_get(6)?,
        created: false,
    })
}

pub(super) async fn create_payout(
    c: &impl GenericClient,
    affiliate: &str,
    currency: Currency,
    key: &str,
    batch_id: ulid::Ulid,
    actor: &str,
) -> Result<Payout, StoreError> {
    let aid = id_of(c, Named::Affiliates, affiliate).await?;
    // One payout at a time per affiliate, whichever node runs it.
    c.execute("SELECT 1 FROM affiliates WHERE id = $1 FOR UPDATE", &[&aid])
        .await?;
    if let Some(existing) = payout_by_key(c, key).await? {
        return Ok(existing);
    }
    let lines = payout_preview(c, affiliate).await?;
    let eligible = eligible_programs(affiliate, currency, &lines)?;
    let now = now_micros();
    let payout_id: i64 = c
        .query_one(
            "INSERT INTO payouts (batch_id, key, affiliate_id, currency, amount, conversions, actor, \
             created_at) VALUES ($1, $2, $3, $4, 0, 0, $5, $6) RETURNING id",
            &[
                &batch_id.to_bytes().as_slice(),
                &key,
                &aid,
                &currency.code(),
                &actor,
                &now,
            ],
        )
        .await?
        .try_get(0)?;
    let mut amount = 0i64;
    let mut count = 0i64;
    for program in eligible {
        let approved = c
            .query(
                "SELECT v.id, v.commission, v.conversion_id FROM conversions v \
                 JOIN programs p ON p.id = v.program_id \
                 WHERE p.slug = $1 AND v.affiliate_id = $2 AND v.currency = $3 AND v.status = 'approved' \
                 FOR UPDATE OF v",
                &[&program, &aid, &currency.code()],
            )
            .await?;
        for r in approved {
            let id: i64 = r.try_get(0)?;
            let commission: i64 = r.try_get(1)?;
            let entries = conversion::transition(
                ConversionStatus::Approved,
                ConversionStatus::Paid,
                commission,
            )
            .map_err(|e| StoreError::Refused(e.to_string()))?;
            c.execute(
                "UPDATE conversions SET status = 'paid' WHERE id = $1",
                &[&id],
            )
            .await?;
            let posting = Posting {
                conversion: Some(id),
                payout: Some(payout_id),
                affiliate: Some(aid),
                currency: currency.code(),
                kind: "paid",
                actor,
                reason: None,
            };
            append_entries(c, &posting, &entries).await?;
            amount += commission;
            count += 1;
            let public_id: Vec<u8> = r.try_get(2)?;
            let row = get_conversion(c, ConversionId(ulid_of(public_id, "conversion_id")?)).await?;
            super::outbox::append(
                c,
                "conversion.paid",
                serde_json::json!({ "conversion": row }),
            )
            .await?;
        }
        // What is still payable for this program is the clawbacks of
        // reversed paid conversions: net them against this payout.
        let rest: i64 = c
            .query_one(
                "SELECT COALESCE(SUM(l.amount), 0)::int8 FROM ledger l \
                 JOIN conversions v ON v.id = l.conversion_id JOIN programs p ON p.id = v.program_id \
                 WHERE p.slug = $1 AND l.affiliate_id = $2 AND l.currency = $3 AND l.bucket = 'payable'",
                &[&program, &aid, &currency.code()],
            )
            .await?
            .try_get(0)?;
        if rest != 0 {
            let posting = Posting {
                conversion: None,
                payout: Some(payout_id),
                affiliate: Some(aid),
                currency: currency.code(),
                kind: "netted",
                actor,
                reason: None,
            };
            append_entries(
                c,
                &posting,
                &[(LedgerBucket::Payable, -rest), (LedgerBucket::Paid, rest)],
            )
            .await?;
            amount += rest;
        }
    }
    c.execute(
        "UPDATE payouts SET amount = $2, conversions = $3 WHERE id = $1",
        &[&payout_id, &amount, &count],
    )
    .await?;
    let mut p = payout_by_key(c, key)
        .await?
        .ok_or_else(|| StoreError::Corrupt("payout vanished".to_owned()))?;
    p.created = true;
    super::outbox::append(
        c,
        clickward_core::event::PAYOUT_CREATED,
        serde_json::json!({ "payout": p }),
    )
    .await?;
    Ok(p)
}

impl ConversionStore for PgStore {
    fn record_conversion(&self, v: NewConversion) -> StoreFuture<'_, Recorded> {
        Box::pin(async move { in_tx!(self, |tx| record_conversion(tx, &v).await?) })
    }

    fn get_conversion(&self, id: ConversionId) -> StoreFuture<'_, ConversionRow> {
        Box::pin(async move {
            let c = self.client().await?;
            get_conversion(&**c, id).await
        })
    }

    fn list_conversions(&self, f: ConversionFilter) -> StoreFuture<'_, Vec<ConversionRow>> {
        Box::pin(async move {
            let c = self.client().await?;
            // Two statements, so that a page after the first walks the id
            // index from its cursor instead of from the newest.
            let keyset = if f.before.is_some() {
                " AND v.id < (SELECT id FROM conversions WHERE conversion_id = $4::bytea)"
            } else {
                " AND $4::bytea IS NULL"
            };
            c.query(
                &format!(
                    "{CONVERSION_SELECT} WHERE ($1::text IS NULL OR v.status = $1::text) \
                     AND ($2::text IS NULL OR a.slug = $2::text){keyset} \
                     ORDER BY v.id DESC LIMIT $3"
                ),
                &[
                    &f.status.map(ConversionStatus::as_str),
                    &f.affiliate.as_ref().map(Slug::as_str),
                    &i64::from(f.limit),
                    &f.before.map(|b| b.0.to_bytes().to_vec()),
                ],
            )
            .await?
            .iter()
            .map(conversion_from)
            .collect()
        })
    }

    fn set_conversion_status(
        &self,
        id: ConversionId,
        to: ConversionStatus,
        actor: String,
        reason: Option<String>,
    ) -> StoreFuture<'_, ConversionRow> {
        Box::pin(async move {
            in_tx!(self, |tx| set_status(tx, id, to, &actor, reason.as_deref())
                .await?)
        })
    }

    fn refund_conversion(&self, r: crate::RefundInput) -> StoreFuture<'_, crate::Refund> {
        Box::pin(async move { in_tx!(self, |tx| refund(tx, &r).await?) })
    }

    fn approve_due(&self, now: Micros) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                // SKIP LOCKED: another node approving the same batch takes
                // the rest instead of waiting.
                let due = tx
                    .query(
                        "SELECT v.conversion_id FROM conversions v JOIN programs p ON p.id = v.program_id \
                         WHERE v.status = 'pending' AND NOT v.held AND p.hold_s IS NOT NULL \
                         AND v.received_at + p.hold_s * 1000000 <= $1 FOR UPDATE OF v SKIP LOCKED",
                        &[&now],
                    )
                    .await?;
                let n = due.len();
                for r in due {
                    let id = ConversionId(ulid_of(r.try_get(0)?, "conversion_id")?);
                    set_status(
                        tx,
                        id,
                        ConversionStatus::Approved,
                        "auto:hold",
                        Some("hold period passed"),
                    )
                    .await?;
                }
                u64::try_from(n).unwrap_or(0)
            })
        })
    }

    fn balances(&self, affiliate: Option<Slug>) -> StoreFuture<'_, Vec<Balance>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT a.slug, l.currency, l.bucket, SUM(l.amount)::int8 FROM ledger l \
                     LEFT JOIN affiliates a ON a.id = l.affiliate_id \
                     WHERE $1::text IS NULL \
                        OR l.affiliate_id = (SELECT id FROM affiliates WHERE slug = $1::text) \
                     GROUP BY l.affiliate_id, a.slug, l.currency, l.bucket \
                     ORDER BY a.slug NULLS FIRST, l.currency, l.bucket",
                    &[&affiliate.as_ref().map(Slug::as_str)],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let bucket: String = r.try_get(2)?;
                out.push(Balance {
                    affiliate: r.try_get(0)?,
                    currency: r.try_get(1)?,
                    bucket: LedgerBucket::parse(&bucket)
                        .ok_or_else(|| corrupt("bucket", &bucket))?,
                    minor: r.try_get(3)?,
                });
            }
            Ok(out)
        })
    }

    fn payout_preview(&self, affiliate: Slug) -> StoreFuture<'_, Vec<PayoutLine>> {
        Box::pin(async move {
            let c = self.client().await?;
            payout_preview(&**c, affiliate.as_str()).await
        })
    }

    fn create_payout(
        &self,
        affiliate: Slug,
        currency: Currency,
        key: String,
        batch_id: ulid::Ulid,
        actor: String,
    ) -> StoreFuture<'_, Payout> {
        Box::pin(async move {
            in_tx!(self, |tx| create_payout(
                tx,
                affiliate.as_str(),
                currency,
                &key,
                batch_id,
                &actor
            )
            .await?)
        })
    }

    fn claim_idempotency_key(
        &self,
        key: String,
        fingerprint: Vec<u8>,
        stale_after: i64,
    ) -> StoreFuture<'_, crate::IdempotencyClaim> {
        Box::pin(async move {
            let now = now_micros();
            in_tx!(self, |tx| {
                let inserted = tx
                    .execute(
                        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) \
                         VALUES ($1, $2, 0, '', $3) ON CONFLICT (key) DO NOTHING",
                        &[&key, &fingerprint, &now],
                    )
                    .await?;
                if inserted == 1 {
                    crate::IdempotencyClaim::Claimed
                } else {
                    // FOR UPDATE: two takeovers of a stale claim cannot both win.
                    let r = tx
                        .query_one(
                            "SELECT fingerprint, status, body, created_at FROM idempotency_keys \
                             WHERE key = $1 FOR UPDATE",
                            &[&key],
                        )
                        .await?;
                    let status: i32 = r.try_get(1)?;
                    let at: i64 = r.try_get(3)?;
                    match status {
                        0 if at < now - stale_after => {
                            tx.execute(
                                "UPDATE idempotency_keys SET fingerprint = $2, created_at = $3 \
                                 WHERE key = $1",
                                &[&key, &fingerprint, &now],
                            )
                            .await?;
                            crate::IdempotencyClaim::Claimed
                        }
                        0 => crate::IdempotencyClaim::Working(r.try_get(0)?),
                        _ => crate::IdempotencyClaim::Done(
                            r.try_get(0)?,
                            u16::try_from(status)
                                .map_err(|_| corrupt("status", &status.to_string()))?,
                            r.try_get(2)?,
                        ),
                    }
                }
            })
        })
    }

    fn release_idempotency_key(&self, key: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "DELETE FROM idempotency_keys WHERE key = $1 AND status = 0",
                &[&key],
            )
            .await?;
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
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE \
                 SET status = excluded.status, body = excluded.body \
                 WHERE idempotency_keys.status = 0 \
                 AND idempotency_keys.fingerprint = excluded.fingerprint",
                &[&key, &fingerprint, &i32::from(status), &body, &now_micros()],
            )
            .await?;
            Ok(())
        })
    }

    fn list_payouts(&self, affiliate: Option<Slug>, limit: u32) -> StoreFuture<'_, Vec<Payout>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(
                &format!(
                    "{PAYOUT_SELECT} WHERE ($1::text IS NULL OR a.slug = $1::text) \
                     ORDER BY o.id DESC LIMIT $2"
                ),
                &[&affiliate.as_ref().map(Slug::as_str), &i64::from(limit)],
            )
            .await?
            .iter()
            .map(payout_from)
            .collect()
        })
    }
}
