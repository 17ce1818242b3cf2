//! SQL for erasure and access requests (`crate::privacy`) on PostgreSQL:
//! one transaction per erasure, on the database every node shares.

use clickward_core::Micros;
use clickward_core::delivery::EndpointKind;
use clickward_core::id::ConversionId;
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::common::ulid_of;
use crate::privacy::{
    CONVERSION_FIELDS_CLEAR, CONVERSION_FIELDS_DUE, DELIVERIES_DUE, Erased, ErasureCounts,
    PrivacyStore, RECEIPT_SELECT, Receipt, Selection, Subject, SubjectData, bytes16,
    erased_order_id, erasure_event, is_about, receipt_from, redact_payload, redact_url,
};
use crate::{StoreError, StoreFuture};

async fn receipt(c: &impl GenericClient, id: &str) -> Result<Option<Receipt>, StoreError> {
    let Some(r) = c
        .query_opt(&format!("{RECEIPT_SELECT} WHERE id = $1"), &[&id])
        .await?
    else {
        return Ok(None);
    };
    let status: String = r.try_get(2)?;
    Ok(Some(receipt_from(
        r.try_get(0)?,
        r.try_get(1)?,
        &status,
        r.try_get(3)?,
        r.try_get(4)?,
        i64::from(r.try_get::<_, i32>(5)?),
        r.try_get(6)?,
        r.try_get(7)?,
        r.try_get(8)?,
    )?))
}

/// Adds clicks (`sql` selects click_id, visitor_key) to `sel`.
async fn add_clicks(
    c: &impl GenericClient,
    sel: &mut Selection,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    for r in c.query(sql, p).await? {
        sel.clicks.insert(
            bytes16(r.try_get(0)?, "click_id")?,
            bytes16(r.try_get(1)?, "visitor_key")?,
        );
    }
    Ok(())
}

/// Adds conversions (`sql` selects id, conversion_id) to `sel`.
async fn add_conversions(
    c: &impl GenericClient,
    sel: &mut Selection,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    for r in c.query(sql, p).await? {
        let id = ConversionId(ulid_of(r.try_get(1)?, "conversion_id")?);
        sel.conversions.insert(r.try_get(0)?, id);
    }
    Ok(())
}

/// The rows `subject` selects; `live`: only rows not erased yet.
async fn select(
    c: &impl GenericClient,
    subject: &Subject,
    live: bool,
) -> Result<Selection, StoreError> {
    let only = if live { " AND erased_at IS NULL" } else { "" };
    let clicks = "SELECT click_id, visitor_key FROM clicks WHERE ";
    let convs = "SELECT id, conversion_id FROM conversions WHERE ";
    let mut sel = Selection::default();
    match subject {
        Subject::Visitor(k) => {
            let k = k.0.as_slice();
            add_clicks(
                c,
                &mut sel,
                &format!("{clicks}visitor_key = $1{only}"),
                &[&k],
            )
            .await?;
        }
        Subject::Click(id) => {
            let id = id.to_bytes();
            let id = id.as_slice();
            add_clicks(c, &mut sel, &format!("{clicks}click_id = $1{only}"), &[&id]).await?;
        }
        Subject::Sub(v) => {
            let sql = format!(
                "{clicks}(sub1 = $1 OR sub2 = $1 OR sub3 = $1 OR sub4 = $1 OR sub5 = $1){only}"
            );
            add_clicks(c, &mut sel, &sql, &[v]).await?;
        }
        Subject::Order { .. } | Subject::Conversion(_) => {}
    }
    match subject {
        Subject::Order { order_id, program } => {
            let sql = format!(
                "{convs}order_id = $1 AND ($2::text IS NULL OR program_id = \
                 (SELECT id FROM programs WHERE slug = $2::text)){only}"
            );
            add_conversions(c, &mut sel, &sql, &[order_id, program]).await?;
        }
        Subject::Conversion(id) => {
            let id = id.0.to_bytes();
            let id = id.as_slice();
            let sql = format!("{convs}conversion_id = $1{only}");
            add_conversions(c, &mut sel, &sql, &[&id]).await?;
        }
        Subject::Sub(v) => {
            let sql = format!(
                "{convs}(sub1 = $1 OR sub2 = $1 OR sub3 = $1 OR sub4 = $1 OR sub5 = $1 \
                 OR adv_sub1 = $1 OR adv_sub2 = $1 OR adv_sub3 = $1 OR adv_sub4 = $1 \
                 OR adv_sub5 = $1){only}"
            );
            add_conversions(c, &mut sel, &sql, &[v]).await?;
        }
        Subject::Visitor(_) | Subject::Click(_) => {}
    }
    // The same person's other rows: the conversions of the clicks, the
    // clicks of the conversions.
    let click_ids: Vec<[u8; 16]> = sel.clicks.keys().copied().collect();
    for id in click_ids {
        let id = id.as_slice();
        let sql = format!("{convs}click_id = $1{only}");
        add_conversions(c, &mut sel, &sql, &[&id]).await?;
    }
    let conv_ids: Vec<i64> = sel.conversions.keys().copied().collect();
    for id in conv_ids {
        let sql =
            format!("{clicks}click_id = (SELECT click_id FROM conversions WHERE id = $1){only}");
        add_clicks(c, &mut sel, &sql, &[&id]).await?;
    }
    Ok(sel)
}

/// Erases what `sel` selected (inside the caller's transaction).
async fn erase(
    c: &impl GenericClient,
    subject: &Subject,
    sel: &Selection,
    now: Micros,
) -> Result<ErasureCounts, StoreError> {
    let mut n = ErasureCounts::default();
    // One fresh random key per erased visitor key (see sqlite/privacy.rs).
    let mut fresh = std::collections::BTreeMap::new();
    for key in sel.visitor_keys(subject) {
        let mut r = [0u8; 16];
        rand::fill(&mut r[..]);
        fresh.insert(key, r);
        n.visitor_links += c
            .execute(
                "DELETE FROM visitor_links WHERE visitor_key = $1",
                &[&key.as_slice()],
            )
            .await?;
    }
    for (id, key) in &sel.clicks {
        let r = fresh.get(key).copied().unwrap_or_default();
        n.clicks += c
            .execute(
                "UPDATE clicks SET visitor_key = $2, sub1 = NULL, sub2 = NULL, sub3 = NULL, \
                 sub4 = NULL, sub5 = NULL, referrer = NULL, erased_at = $3 \
                 WHERE click_id = $1 AND erased_at IS NULL",
                &[&id.as_slice(), &r.as_slice(), &now],
            )
            .await?;
    }
    let erased: Vec<ConversionId> = sel.conversions.values().copied().collect();
    for (row, id) in &sel.conversions {
        n.conversions += c
            .execute(
                "UPDATE conversions SET order_id = $2, sub1 = NULL, sub2 = NULL, sub3 = NULL, \
                 sub4 = NULL, sub5 = NULL, adv_sub1 = NULL, adv_sub2 = NULL, adv_sub3 = NULL, \
                 adv_sub4 = NULL, adv_sub5 = NULL, ip_hash = NULL, fingerprint = '\\x'::bytea, \
                 erased_at = $3 WHERE id = $1 AND erased_at IS NULL",
                &[row, &erased_order_id(*id), &now],
            )
            .await?;
        let text = id.to_string();
        n.idempotency_keys += c
            .execute(
                "DELETE FROM idempotency_keys WHERE strpos(body, $1) > 0",
                &[&text],
            )
            .await?;
        for r in c
            .query(
                "SELECT seq, payload FROM outbox WHERE strpos(payload, $1) > 0",
                &[&text],
            )
            .await?
        {
            let (seq, payload): (i64, String) = (r.try_get(0)?, r.try_get(1)?);
            if let Some(p) = redact_payload(&payload, &erased) {
                n.outbox += c
                    .execute("UPDATE outbox SET payload = $2 WHERE seq = $1", &[&seq, &p])
                    .await?;
            }
        }
        for r in c
            .query(
                "SELECT id, payload FROM deliveries WHERE strpos(payload, $1) > 0",
                &[&text],
            )
            .await?
        {
            let (delivery, payload): (i64, String) = (r.try_get(0)?, r.try_get(1)?);
            if !is_about(&payload, &erased) {
                continue;
            }
            if let Some(p) = redact_payload(&payload, &erased) {
                n.deliveries += c
                    .execute(
                        "UPDATE deliveries SET payload = $2, \
                         last_error = CASE WHEN last_error IS NULL THEN NULL ELSE '(erased)' END \
                         WHERE id = $1",
                        &[&delivery, &p],
                    )
                    .await?;
            }
            for a in c
                .query(
                    "SELECT n, url, response FROM delivery_attempts WHERE delivery_id = $1",
                    &[&delivery],
                )
                .await?
            {
                let (k, url, response): (i32, String, String) =
                    (a.try_get(0)?, a.try_get(1)?, a.try_get(2)?);
                let redacted = redact_url(&url);
                if redacted == url && response.is_empty() {
                    continue;
                }
                n.delivery_attempts += c
                    .execute(
                        "UPDATE delivery_attempts SET url = $3, response = '', \
                         error = CASE WHEN error IS NULL THEN NULL ELSE '(erased)' END \
                         WHERE delivery_id = $1 AND n = $2",
                        &[&delivery, &k, &redacted],
                    )
                    .await?;
            }
        }
    }
    Ok(n)
}

async fn subject_data(
    c: &impl GenericClient,
    subject: &Subject,
) -> Result<SubjectData, StoreError> {
    let sel = select(c, subject, false).await?;
    let mut clicks = Vec::new();
    for id in sel.clicks.keys() {
        if let Some(r) = c
            .query_opt(
                &format!("{} WHERE c.click_id = $1", super::clicks::CLICK_SELECT),
                &[&id.as_slice()],
            )
            .await?
        {
            clicks.push(super::clicks::click_from(&r)?);
        }
    }
    let mut conversions = Vec::new();
    let mut deliveries = Vec::new();
    let erased: Vec<ConversionId> = sel.conversions.values().copied().collect();
    for id in &erased {
        conversions.push(super::conversions::get_conversion(c, *id).await?);
        for r in c
            .query(
                "SELECT d.id, e.kind, d.type, d.status, d.attempts, d.created_at, d.payload \
                 FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id \
                 WHERE strpos(d.payload, $1) > 0 ORDER BY d.id",
                &[&id.to_string()],
            )
            .await?
        {
            let payload: String = r.try_get(6)?;
            if !is_about(&payload, &erased) {
                continue;
            }
            deliveries.push(serde_json::json!({
                "id": r.try_get::<_, i64>(0)?,
                "endpoint_kind": r.try_get::<_, String>(1)?,
                "type": r.try_get::<_, String>(2)?,
                "status": r.try_get::<_, String>(3)?,
                "attempts": r.try_get::<_, i32>(4)?,
                "created_at": r.try_get::<_, i64>(5)?,
                "payload": serde_json::from_str::<serde_json::Value>(&payload)
                    .unwrap_or(serde_json::Value::Null),
            }));
        }
    }
    clicks.sort_by_key(|k| k.ts);
    conversions.sort_by_key(|v| v.received_at);
    Ok(SubjectData {
        clicks,
        conversions,
        deliveries,
    })
}

impl PrivacyStore for PgStore {
    fn receive_erasure(
        &self,
        id: String,
        subject: Subject,
        actor: String,
        now: Micros,
    ) -> StoreFuture<'_, Receipt> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO privacy_requests (id, subject, selector, status, actor, received_at) \
                 VALUES ($1, $2, $3, 'received', $4, $5) ON CONFLICT (id) DO NOTHING",
                &[&id, &subject.kind(), &subject.to_text()?, &actor, &now],
            )
            .await?;
            receipt(&**c, &id)
                .await?
                .ok_or_else(|| StoreError::NotFound(id))
        })
    }

    fn run_erasure(&self, id: String, now: Micros) -> StoreFuture<'_, Erased> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let guard = client.transaction().await?;
            let tx: &tokio_postgres::Transaction<'_> = &guard;
            // FOR UPDATE: two nodes running the same request take turns; the
            // second sees it done.
            let Some(row) = tx
                .query_opt(
                    "SELECT status, selector FROM privacy_requests WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await?
            else {
                guard.rollback().await?;
                return Err(StoreError::NotFound(format!("privacy request {id}")));
            };
            let (status, selector): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
            let (Some(selector), "received") = (selector, status.as_str()) else {
                let r = receipt(tx, &id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                // Ended here, not by a rollback queued on drop: the
                // connection goes back to the pool with no lock held.
                guard.rollback().await?;
                return Ok(Erased::unchanged(r));
            };
            let subject = Subject::from_text(&selector)?;
            let sel = select(tx, &subject, true).await?;
            let counts = erase(tx, &subject, &sel, now).await?;
            let counts_text =
                serde_json::to_string(&counts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute(
                "UPDATE privacy_requests SET status = 'done', selector = NULL, counts = $2, \
                 error = NULL, attempts = attempts + 1, done_at = $3 WHERE id = $1",
                &[&id, &counts_text, &now],
            )
            .await?;
            let r = receipt(tx, &id)
                .await?
                .ok_or_else(|| StoreError::NotFound(id.clone()))?;
            let erased = sel.erased(r, &subject);
            if !erased.click_ids.is_empty() || !erased.conversion_ids.is_empty() {
                super::outbox::append(
                    tx,
                    clickward_core::event::PRIVACY_ERASURE,
                    erasure_event(&erased),
                )
                .await?;
            }
            guard.commit().await?;
            Ok(erased)
        })
    }

    fn erasure_attempt_failed(
        &self,
        id: String,
        error: String,
        permanent: bool,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "UPDATE privacy_requests SET attempts = attempts + 1, error = $2, \
                 status = CASE WHEN $3 THEN 'failed' ELSE status END, \
                 selector = CASE WHEN $3 THEN NULL ELSE selector END, \
                 done_at = CASE WHEN $3 THEN $4 ELSE done_at END \
                 WHERE id = $1 AND status = 'received'",
                &[&id, &error, &permanent, &crate::common::now_micros()],
            )
            .await?;
            Ok(())
        })
    }

    fn pending_erasures(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(
                "SELECT id FROM privacy_requests WHERE status = 'received' ORDER BY received_at",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
        })
    }

    fn receipts(&self, before: Option<String>, limit: u32) -> StoreFuture<'_, Vec<Receipt>> {
        Box::pin(async move {
            let c = self.client().await?;
            let ids: Vec<String> = c
                .query(
                    "SELECT id FROM privacy_requests WHERE ($2::text IS NULL OR id < $2::text) \
                     ORDER BY id DESC LIMIT $1",
                    &[&i64::from(limit), &before],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(r) = receipt(&**c, &id).await? {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    fn receipt(&self, id: String) -> StoreFuture<'_, Option<Receipt>> {
        Box::pin(async move {
            let c = self.client().await?;
            receipt(&**c, &id).await
        })
    }

    fn subject_data(&self, subject: Subject) -> StoreFuture<'_, SubjectData> {
        Box::pin(async move {
            let c = self.client().await?;
            subject_data(&**c, &subject).await
        })
    }

    fn purge_conversion_fields(&self, before: Micros, batch: u32) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.execute(
                &format!("{CONVERSION_FIELDS_CLEAR} ({CONVERSION_FIELDS_DUE})"),
                &[&before, &i64::from(batch)],
            )
            .await?)
        })
    }

    fn purge_deliveries(
        &self,
        kind: EndpointKind,
        before: Micros,
        batch: u32,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let ids: Vec<i64> = tx
                .query(
                    DELIVERIES_DUE,
                    &[&kind.as_str(), &before, &i64::from(batch)],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            tx.execute(
                "DELETE FROM delivery_attempts WHERE delivery_id = ANY($1)",
                &[&ids],
            )
            .await?;
            tx.execute("DELETE FROM deliveries WHERE id = ANY($1)", &[&ids])
                .await?;
            tx.commit().await?;
            Ok(ids.len() as u64)
        })
    }

    fn purge_receipts(&self, before: Micros) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.execute(
                "DELETE FROM privacy_requests WHERE status != 'received' AND done_at < $1",
                &[&before],
            )
            .await?)
        })
    }
}
