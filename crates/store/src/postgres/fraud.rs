//! SQL for fraud rules, exclusions and cap counters (their use inside a
//! conversion's transaction is in `conversions.rs`).

use clickward_core::Micros;
use clickward_core::fraud::RuleSpec;
use tokio_postgres::{GenericClient, Row};

use super::PgStore;
use crate::common::{
    CLICK_VERDICT_COUNTS, CONVERSION_VERDICT_COUNTS, RECENT_CLICK_VERDICTS,
    RECENT_CONVERSION_VERDICTS, SCAN_CLICKS, SCAN_CONVERSIONS, SET_CLICK_VERDICT, corrupt,
    newest_first, stored_rule, with_all_params, with_params,
};
use crate::{
    Exclusion, ExclusionKind, FraudStore, NewExclusion, RuleOwner, StoreError, StoreFuture,
    StoredRule,
};

fn spec_json(spec: &RuleSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))
}

async fn upsert_rule(
    c: &impl GenericClient,
    spec: &RuleSpec,
    owner: RuleOwner,
    now: Micros,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO fraud_rules (id, spec, owner, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, owner = excluded.owner, \
         updated_at = excluded.updated_at",
        &[&spec.id, &spec_json(spec)?, &owner.as_str(), &now],
    )
    .await?;
    Ok(())
}

fn exclusion_from(r: &Row) -> Result<Exclusion, StoreError> {
    let hash: Vec<u8> = r.try_get(1)?;
    let kind: String = r.try_get(2)?;
    Ok(Exclusion {
        id: r.try_get(0)?,
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("exclusion hash is not 16 bytes".into()))?,
        kind: match kind.as_str() {
            "ip" => ExclusionKind::Ip,
            "browser" => ExclusionKind::Browser,
            other => return Err(corrupt("exclusion kind", other)),
        },
        label: r.try_get(3)?,
        affiliate: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

const EXCLUSION_SELECT: &str = "SELECT e.id, e.hash, e.kind, e.label, a.slug, e.created_at \
     FROM exclusions e LEFT JOIN affiliates a ON a.id = e.affiliate_id";

impl FraudStore for PgStore {
    fn rules(&self) -> StoreFuture<'_, Vec<StoredRule>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT spec, owner, updated_at FROM fraud_rules ORDER BY id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| stored_rule(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
                .collect()
        })
    }

    fn save_rule(&self, spec: RuleSpec, owner: RuleOwner, now: Micros) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            upsert_rule(&**c, &spec, owner, now).await
        })
    }

    fn delete_rule(&self, id: String) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.execute("DELETE FROM fraud_rules WHERE id = $1", &[&id])
                .await?
                > 0)
        })
    }

    fn apply_file_rules(&self, specs: Vec<RuleSpec>, now: Micros) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                let mut kept = Vec::new();
                let mut file_ids: Vec<String> = Vec::new();
                for spec in &specs {
                    let found = tx
                        .query_opt(
                            "SELECT owner, spec FROM fraud_rules WHERE id = $1 FOR UPDATE",
                            &[&spec.id],
                        )
                        .await?;
                    let found: Option<(String, String)> = match found {
                        Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
                        None => None,
                    };
                    match found {
                        Some((owner, _)) if owner == "admin" => kept.push(spec.id.clone()),
                        Some((_, stored)) if stored == spec_json(spec)? => {}
                        _ => upsert_rule(tx, spec, RuleOwner::File, now).await?,
                    }
                    file_ids.push(spec.id.clone());
                }
                tx.execute(
                    "DELETE FROM fraud_rules WHERE owner = 'file' AND NOT (id = ANY($1))",
                    &[&file_ids],
                )
                .await?;
                kept
            })
        })
    }

    fn add_exclusion(&self, e: NewExclusion) -> StoreFuture<'_, Exclusion> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                let affiliate: Option<i64> = match &e.affiliate {
                    Some(slug) => Some(
                        super::catalog::id_of(tx, crate::common::Named::Affiliates, slug.as_str())
                            .await?,
                    ),
                    None => None,
                };
                let row = tx
                    .query_opt(
                        "INSERT INTO exclusions (hash, kind, label, affiliate_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING RETURNING id",
                        &[
                            &e.hash.as_slice(),
                            &e.kind.as_str(),
                            &e.label,
                            &affiliate,
                            &e.created_at,
                        ],
                    )
                    .await?
                    .ok_or_else(|| StoreError::Conflict("this exclusion entry".into()))?;
                let id: i64 = row.try_get(0)?;
                let r = tx
                    .query_one(&format!("{EXCLUSION_SELECT} WHERE e.id = $1"), &[&id])
                    .await?;
                exclusion_from(&r)?
            })
        })
    }

    fn exclusions(&self) -> StoreFuture<'_, Vec<Exclusion>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = c
                .query(&format!("{EXCLUSION_SELECT} ORDER BY e.id"), &[])
                .await?;
            rows.iter().map(exclusion_from).collect()
        })
    }

    fn remove_exclusion(&self, id: i64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.execute("DELETE FROM exclusions WHERE id = $1", &[&id])
                .await?
                > 0)
        })
    }

    fn same_ip_conversions(
        &self,
        affiliate_id: i64,
        ip_hash: [u8; 16],
        since: Micros,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM conversions WHERE affiliate_id = $1 AND ip_hash = $2 \
                     AND received_at >= $3 AND status IN ('pending', 'approved', 'paid')",
                    &[&affiliate_id, &ip_hash.as_slice(), &since],
                )
                .await?
                .try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn verdict_counts(&self, since: Micros) -> StoreFuture<'_, Vec<crate::VerdictCount>> {
        Box::pin(async move {
            let c = self.client().await?;
            let floor = crate::plan::id_floor(since);
            let clicks = c
                .query(&with_params(CLICK_VERDICT_COUNTS, '$'), &[&floor])
                .await?;
            let conversions = c
                .query(&with_params(CONVERSION_VERDICT_COUNTS, '$'), &[&since])
                .await?;
            let mut out = Vec::new();
            for (what, rows) in [("click", clicks), ("conversion", conversions)] {
                for r in rows {
                    out.push(crate::VerdictCount {
                        what,
                        day: r.try_get(0)?,
                        rule: r.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                        action: r.try_get(2)?,
                        affiliate: r.try_get(3)?,
                        count: r.try_get(4)?,
                    });
                }
            }
            Ok(out)
        })
    }

    fn recent_verdicts(
        &self,
        since: Micros,
        limit: u32,
    ) -> StoreFuture<'_, Vec<crate::VerdictRow>> {
        Box::pin(async move {
            let c = self.client().await?;
            let limit = i64::from(limit);
            let floor = crate::plan::id_floor(since);
            let clicks = c
                .query(&with_params(RECENT_CLICK_VERDICTS, '$'), &[&floor, &limit])
                .await?;
            let conversions = c
                .query(
                    &with_params(RECENT_CONVERSION_VERDICTS, '$'),
                    &[&since, &limit],
                )
                .await?;
            let mut out = Vec::new();
            for (what, rows) in [("click", clicks), ("conversion", conversions)] {
                for r in rows {
                    let id: Vec<u8> = r.try_get(0)?;
                    let id: [u8; 16] = id
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("id is not 16 bytes".into()))?;
                    out.push(crate::VerdictRow {
                        what,
                        id: ulid::Ulid::from_bytes(id).to_string(),
                        ts: r.try_get(1)?,
                        program: r.try_get(2)?,
                        affiliate: r.try_get(3)?,
                        rule: r.try_get::<_, Option<String>>(4)?.unwrap_or_default(),
                        action: r.try_get(5)?,
                        reason: r.try_get::<_, Option<String>>(6)?.unwrap_or_default(),
                    });
                }
            }
            Ok(newest_first(out))
        })
    }

    fn scan_clicks(
        &self,
        start: Micros,
        end: Micros,
        program_id: Option<i64>,
        mut sink: crate::JudgeSink,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            use futures::TryStreamExt;
            let c = self.client().await?;
            let sql = with_all_params(SCAN_CLICKS, '$').replace("$5 IS NULL", "$5::int8 IS NULL");
            let lo = crate::plan::id_floor(start);
            let hi = crate::plan::id_floor(end.saturating_add(1000));
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&lo, &hi, &start, &end, &program_id];
            let rows = c.query_raw(&sql, params).await?;
            futures::pin_mut!(rows);
            let mut n = 0u64;
            while let Some(r) = rows.try_next().await? {
                let id: Vec<u8> = r.try_get(0)?;
                let vk: Vec<u8> = r.try_get(5)?;
                let click = crate::JudgeableClick {
                    click_id: clickward_core::id::ClickId::from_bytes(
                        id.try_into()
                            .map_err(|_| StoreError::Corrupt("click_id is not 16 bytes".into()))?,
                    ),
                    ts: r.try_get(1)?,
                    link_id: r.try_get(2)?,
                    program_id: r.try_get(3)?,
                    affiliate_id: r.try_get(4)?,
                    visitor_key: vk
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("visitor_key is not 16 bytes".into()))?,
                    country: r.try_get(6)?,
                    referrer_host: r.try_get(7)?,
                    bot: r.try_get(8)?,
                    verdict: crate::common::verdict_of(
                        r.try_get(9)?,
                        r.try_get(10)?,
                        r.try_get(11)?,
                    )?,
                };
                n += 1;
                if !sink(&click) {
                    break;
                }
            }
            Ok(n)
        })
    }

    fn set_click_verdicts(
        &self,
        changes: Vec<(
            clickward_core::id::ClickId,
            Option<clickward_core::fraud::Verdict>,
        )>,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                let sql = with_all_params(SET_CLICK_VERDICT, '$')
                    .replace("$4 IS NULL", "$4::text IS NULL");
                let st = tx.prepare(&sql).await?;
                let mut n = 0u64;
                for (id, v) in &changes {
                    let (a, rule, reason) = crate::common::verdict_columns(v.as_ref());
                    let invalid = v
                        .as_ref()
                        .filter(|v| v.action.invalidates())
                        .map(|v| v.rule.as_str());
                    n += tx
                        .execute(
                            &st,
                            &[
                                &a,
                                &rule,
                                &reason,
                                &invalid,
                                &id.to_bytes().as_slice(),
                                &false,
                            ],
                        )
                        .await?;
                }
                n
            })
        })
    }

    fn scan_conversions(
        &self,
        start: Micros,
        end: Micros,
        program_id: Option<i64>,
    ) -> StoreFuture<'_, Vec<crate::JudgeableConversion>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql =
                with_all_params(SCAN_CONVERSIONS, '$').replace("$3 IS NULL", "$3::int8 IS NULL");
            let rows = c.query(&sql, &[&start, &end, &program_id]).await?;
            rows.iter()
                .map(|r| {
                    let id: Vec<u8> = r.try_get(0)?;
                    let status: String = r.try_get(5)?;
                    let ip: Option<Vec<u8>> = r.try_get(7)?;
                    Ok(crate::JudgeableConversion {
                        conversion_id: clickward_core::id::ConversionId(ulid::Ulid::from_bytes(
                            id.try_into().map_err(|_| {
                                StoreError::Corrupt("conversion_id is not 16 bytes".into())
                            })?,
                        )),
                        program_id: r.try_get(1)?,
                        affiliate_id: r.try_get(2)?,
                        received_at: r.try_get(3)?,
                        ctit_us: r.try_get(4)?,
                        status: clickward_core::conversion::ConversionStatus::parse(&status)
                            .ok_or_else(|| corrupt("status", &status))?,
                        held: r.try_get(6)?,
                        ip_hash: ip.and_then(|b| b.try_into().ok()),
                        buyer_country: r.try_get(8)?,
                        click_country: r.try_get(9)?,
                        click_verdict: crate::common::verdict_of(
                            r.try_get(10)?,
                            r.try_get(11)?,
                            r.try_get(12)?,
                        )?,
                        verdict: crate::common::verdict_of(
                            r.try_get(13)?,
                            r.try_get(14)?,
                            r.try_get(15)?,
                        )?,
                    })
                })
                .collect()
        })
    }

    fn set_conversion_verdict(
        &self,
        id: clickward_core::id::ConversionId,
        verdict: Option<clickward_core::fraud::Verdict>,
        held: bool,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            let (a, rule, reason) = crate::common::verdict_columns(verdict.as_ref());
            c.execute(
                "UPDATE conversions SET verdict = $1, verdict_rule = $2, verdict_reason = $3, held = $4 \
                 WHERE conversion_id = $5",
                &[&a, &rule, &reason, &held, &id.0.to_bytes().as_slice()],
            )
            .await?;
            Ok(())
        })
    }

    fn cap_usage(&self, periods: Vec<String>) -> StoreFuture<'_, Vec<(String, String, i64)>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT cap_key, period, used FROM cap_usage WHERE period = ANY($1) \
                     ORDER BY cap_key, period",
                    &[&periods],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
        })
    }
}
