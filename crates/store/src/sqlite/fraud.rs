//! SQL for fraud rules, exclusions and cap counters (their use inside a
//! conversion's transaction is in `conversions.rs`).

use clickward_core::Micros;
use clickward_core::fraud::RuleSpec;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::common::{
    CLICK_VERDICT_COUNTS, CONVERSION_VERDICT_COUNTS, RECENT_CLICK_VERDICTS,
    RECENT_CONVERSION_VERDICTS, SCAN_CLICKS, SCAN_CONVERSIONS, SET_CLICK_VERDICT, corrupt,
    newest_first, stored_rule, with_all_params, with_params,
};
use crate::{
    Exclusion, ExclusionKind, FraudStore, NewExclusion, RuleOwner, StoreError, StoreFuture,
    StoredRule,
};
use rusqlite::types::Value as SqlValue;

fn spec_json(spec: &RuleSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn upsert_rule(
    c: &Connection,
    spec: &RuleSpec,
    owner: RuleOwner,
    now: Micros,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO fraud_rules (id, spec, owner, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, owner = excluded.owner, \
         updated_at = excluded.updated_at",
    )?
    .execute(params![spec.id, spec_json(spec)?, owner.as_str(), now])?;
    Ok(())
}

fn exclusion_from(r: &rusqlite::Row<'_>) -> Result<Exclusion, StoreError> {
    let hash: Vec<u8> = r.get(1)?;
    let kind: String = r.get(2)?;
    Ok(Exclusion {
        id: r.get(0)?,
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("exclusion hash is not 16 bytes".into()))?,
        kind: match kind.as_str() {
            "ip" => ExclusionKind::Ip,
            "browser" => ExclusionKind::Browser,
            other => return Err(corrupt("exclusion kind", other)),
        },
        label: r.get(3)?,
        affiliate: r.get(4)?,
        created_at: r.get(5)?,
    })
}

const EXCLUSION_SELECT: &str = "SELECT e.id, e.hash, e.kind, e.label, a.slug, e.created_at \
     FROM exclusions e LEFT JOIN affiliates a ON a.id = e.affiliate_id";

impl FraudStore for SqliteStore {
    fn rules(&self) -> StoreFuture<'_, Vec<StoredRule>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT spec, owner, updated_at FROM fraud_rules ORDER BY id")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let spec: String = r.get(0)?;
                let owner: String = r.get(1)?;
                out.push(stored_rule(&spec, &owner, r.get(2)?)?);
            }
            Ok(out)
        })
    }

    fn save_rule(&self, spec: RuleSpec, owner: RuleOwner, now: Micros) -> StoreFuture<'_, ()> {
        self.write(move |c| upsert_rule(c, &spec, owner, now))
    }

    fn delete_rule(&self, id: String) -> StoreFuture<'_, bool> {
        self.write(move |c| Ok(c.execute("DELETE FROM fraud_rules WHERE id = ?1", [id])? > 0))
    }

    fn apply_file_rules(&self, specs: Vec<RuleSpec>, now: Micros) -> StoreFuture<'_, Vec<String>> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let mut kept = Vec::new();
            {
                let mut owner_of =
                    tx.prepare_cached("SELECT owner, spec FROM fraud_rules WHERE id = ?1")?;
                let mut file_ids: Vec<String> = Vec::new();
                for spec in &specs {
                    let found: Option<(String, String)> = owner_of
                        .query_row([&spec.id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    match found {
                        Some((owner, _)) if owner == "admin" => kept.push(spec.id.clone()),
                        // Unchanged: no write, so the catalogue version (and
                        // every node's link cache) stays as it is.
                        Some((_, stored)) if stored == spec_json(spec)? => {}
                        _ => upsert_rule(&tx, spec, RuleOwner::File, now)?,
                    }
                    file_ids.push(spec.id.clone());
                }
                let mut st =
                    tx.prepare_cached("SELECT id FROM fraud_rules WHERE owner = 'file'")?;
                let stale: Vec<String> =
                    st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                for id in stale.into_iter().filter(|id| !file_ids.contains(id)) {
                    tx.execute("DELETE FROM fraud_rules WHERE id = ?1", [id])?;
                }
            }
            tx.commit()?;
            Ok(kept)
        })
    }

    fn add_exclusion(&self, e: NewExclusion) -> StoreFuture<'_, Exclusion> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let affiliate: Option<i64> = match &e.affiliate {
                Some(slug) => Some(
                    tx.query_row(
                        "SELECT id FROM affiliates WHERE slug = ?1",
                        [slug.as_str()],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| {
                        StoreError::NotFound(format!("affiliate {:?}", slug.as_str()))
                    })?,
                ),
                None => None,
            };
            let n = tx.execute(
                "INSERT INTO exclusions (hash, kind, label, affiliate_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (hash) DO NOTHING",
                params![
                    e.hash.as_slice(),
                    e.kind.as_str(),
                    e.label,
                    affiliate,
                    e.created_at
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict("this exclusion entry".into()));
            }
            let id = tx.last_insert_rowid();
            let out =
                tx.query_row(&format!("{EXCLUSION_SELECT} WHERE e.id = ?1"), [id], |r| {
                    Ok(exclusion_from(r))
                })??;
            tx.commit()?;
            Ok(out)
        })
    }

    fn exclusions(&self) -> StoreFuture<'_, Vec<Exclusion>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("{EXCLUSION_SELECT} ORDER BY e.id"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(exclusion_from(r)?);
            }
            Ok(out)
        })
    }

    fn remove_exclusion(&self, id: i64) -> StoreFuture<'_, bool> {
        self.write(move |c| Ok(c.execute("DELETE FROM exclusions WHERE id = ?1", [id])? > 0))
    }

    fn same_ip_conversions(
        &self,
        affiliate_id: i64,
        ip_hash: [u8; 16],
        since: Micros,
    ) -> StoreFuture<'_, u64> {
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM conversions WHERE affiliate_id = ?1 AND ip_hash = ?2 \
                     AND received_at >= ?3 AND status IN ('pending', 'approved', 'paid')",
                )?
                .query_row(params![affiliate_id, ip_hash.as_slice(), since], |r| {
                    r.get(0)
                })?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn verdict_counts(&self, since: Micros) -> StoreFuture<'_, Vec<crate::VerdictCount>> {
        self.read(move |c| {
            let mut out = Vec::new();
            for (what, sql, from) in [
                (
                    "click",
                    CLICK_VERDICT_COUNTS,
                    SqlValue::Blob(crate::plan::id_floor(since)),
                ),
                (
                    "conversion",
                    CONVERSION_VERDICT_COUNTS,
                    SqlValue::Integer(since),
                ),
            ] {
                let mut st = c.prepare_cached(&with_params(sql, '?'))?;
                let mut rows = st.query([from])?;
                while let Some(r) = rows.next()? {
                    out.push(crate::VerdictCount {
                        what,
                        day: r.get(0)?,
                        rule: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        action: r.get(2)?,
                        affiliate: r.get(3)?,
                        count: r.get(4)?,
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
        self.read(move |c| {
            let mut out = Vec::new();
            for (what, sql, from) in [
                (
                    "click",
                    RECENT_CLICK_VERDICTS,
                    SqlValue::Blob(crate::plan::id_floor(since)),
                ),
                (
                    "conversion",
                    RECENT_CONVERSION_VERDICTS,
                    SqlValue::Integer(since),
                ),
            ] {
                let mut st = c.prepare_cached(&with_params(sql, '?'))?;
                let mut rows = st.query(params![from, limit])?;
                while let Some(r) = rows.next()? {
                    let id: Vec<u8> = r.get(0)?;
                    let id: [u8; 16] = id
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("id is not 16 bytes".into()))?;
                    out.push(crate::VerdictRow {
                        what,
                        id: ulid::Ulid::from_bytes(id).to_string(),
                        ts: r.get(1)?,
                        program: r.get(2)?,
                        affiliate: r.get(3)?,
                        rule: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        action: r.get(5)?,
                        reason: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
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
        self.read(move |c| {
            let mut st = c.prepare(&with_all_params(SCAN_CLICKS, '?'))?;
            let mut rows = st.query(params![
                crate::plan::id_floor(start),
                crate::plan::id_floor(end.saturating_add(1000)),
                start,
                end,
                program_id
            ])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let id: Vec<u8> = r.get(0)?;
                let vk: Vec<u8> = r.get(5)?;
                let click = crate::JudgeableClick {
                    click_id: clickward_core::id::ClickId::from_bytes(
                        id.try_into()
                            .map_err(|_| StoreError::Corrupt("click_id is not 16 bytes".into()))?,
                    ),
                    ts: r.get(1)?,
                    link_id: r.get(2)?,
                    program_id: r.get(3)?,
                    affiliate_id: r.get(4)?,
                    visitor_key: vk
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("visitor_key is not 16 bytes".into()))?,
                    country: r.get(6)?,
                    referrer_host: r.get(7)?,
                    bot: r.get(8)?,
                    verdict: crate::common::verdict_of(r.get(9)?, r.get(10)?, r.get(11)?)?,
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
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let mut n = 0u64;
            {
                let mut st = tx.prepare_cached(&with_all_params(SET_CLICK_VERDICT, '?'))?;
                for (id, v) in &changes {
                    let (a, rule, reason) = crate::common::verdict_columns(v.as_ref());
                    let invalid = v
                        .as_ref()
                        .filter(|v| v.action.invalidates())
                        .map(|v| v.rule.as_str());
                    n += st.execute(params![
                        a,
                        rule,
                        reason,
                        invalid,
                        id.to_bytes().as_slice(),
                        0
                    ])? as u64;
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }

    fn scan_conversions(
        &self,
        start: Micros,
        end: Micros,
        program_id: Option<i64>,
    ) -> StoreFuture<'_, Vec<crate::JudgeableConversion>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&with_all_params(SCAN_CONVERSIONS, '?'))?;
            let mut rows = st.query(params![start, end, program_id])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let id: Vec<u8> = r.get(0)?;
                let status: String = r.get(5)?;
                let ip: Option<Vec<u8>> = r.get(7)?;
                out.push(crate::JudgeableConversion {
                    conversion_id: clickward_core::id::ConversionId(ulid::Ulid::from_bytes(
                        id.try_into().map_err(|_| {
                            StoreError::Corrupt("conversion_id is not 16 bytes".into())
                        })?,
                    )),
                    program_id: r.get(1)?,
                    affiliate_id: r.get(2)?,
                    received_at: r.get(3)?,
                    ctit_us: r.get(4)?,
                    status: clickward_core::conversion::ConversionStatus::parse(&status)
                        .ok_or_else(|| corrupt("status", &status))?,
                    held: r.get(6)?,
                    ip_hash: ip.and_then(|b| b.try_into().ok()),
                    buyer_country: r.get(8)?,
                    click_country: r.get(9)?,
                    click_verdict: crate::common::verdict_of(r.get(10)?, r.get(11)?, r.get(12)?)?,
                    verdict: crate::common::verdict_of(r.get(13)?, r.get(14)?, r.get(15)?)?,
                });
            }
            Ok(out)
        })
    }

    fn set_conversion_verdict(
        &self,
        id: clickward_core::id::ConversionId,
        verdict: Option<clickward_core::fraud::Verdict>,
        held: bool,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let (a, rule, reason) = crate::common::verdict_columns(verdict.as_ref());
            c.execute(
                "UPDATE conversions SET verdict = ?1, verdict_rule = ?2, verdict_reason = ?3, held = ?4 \
                 WHERE conversion_id = ?5",
                params![a, rule, reason, held, id.0.to_bytes().as_slice()],
            )?;
            Ok(())
        })
    }

    fn cap_usage(&self, periods: Vec<String>) -> StoreFuture<'_, Vec<(String, String, i64)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT cap_key, period, used FROM cap_usage WHERE period = ?1 ORDER BY cap_key",
            )?;
            let mut out = Vec::new();
            for p in &periods {
                let mut rows = st.query([p])?;
                while let Some(r) = rows.next()? {
                    out.push((r.get(0)?, r.get(1)?, r.get(2)?));
                }
            }
            Ok(out)
        })
    }
}
