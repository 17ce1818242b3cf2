//! SQL for outbound delivery: endpoints, the fan-out of outbox events into
//! deliveries, leases, attempts and replays. Several nodes run this at
//! once: dispatch holds the cursor row's lock, leases are taken with
//! `FOR UPDATE SKIP LOCKED`, and an attempt moves its delivery only while
//! its node still holds the lease.

use clickward_core::Micros;
use clickward_core::id::Slug;
use tokio_postgres::{GenericClient, Row};

use super::PgStore;
use crate::common::{
    DELIVERY_SELECT, DeliveryColumns, ENDPOINT_SELECT, EndpointColumns, attempt_outcome, corrupt,
    disable_reason, endpoint_disabled_payload, endpoint_key, event_key, events_json, now_micros,
    outbox_event, settled_prefix, ulid_of, wanted_by,
};
use crate::{
    AttemptRecord, AttemptRow, DeliveryQuery, DeliveryRow, DeliveryStore, Endpoint, EndpointChange,
    LeasedDelivery, NewEndpoint, OutboxEvent, StoreError, StoreFuture,
};

fn endpoint_from(r: &Row) -> Result<Endpoint, StoreError> {
    EndpointColumns {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        url: r.try_get(2)?,
        method: r.try_get(3)?,
        events: r.try_get(4)?,
        program: r.try_get(5)?,
        affiliate: r.try_get(6)?,
        description: r.try_get(7)?,
        enabled: r.try_get(8)?,
        disabled_reason: r.try_get(9)?,
        failing_since: r.try_get(10)?,
        created_at: r.try_get(11)?,
        secret: r.try_get(12)?,
        previous_secret: r.try_get(13)?,
        previous_until: r.try_get(14)?,
    }
    .record()
}

fn delivery_from(r: &Row) -> Result<DeliveryRow, StoreError> {
    DeliveryColumns {
        id: r.try_get(0)?,
        endpoint: r.try_get(1)?,
        event: r.try_get(2)?,
        kind: r.try_get(3)?,
        status: r.try_get(4)?,
        attempts: i64::from(r.try_get::<_, i32>(5)?),
        next_at: r.try_get(6)?,
        last_status: r.try_get::<_, Option<i32>>(7)?.map(i64::from),
        last_error: r.try_get(8)?,
        created_at: r.try_get(9)?,
        done_at: r.try_get(10)?,
    }
    .record()
}

fn outbox_from(r: &Row) -> Result<OutboxEvent, StoreError> {
    let id: Vec<u8> = r.try_get(1)?;
    let payload: String = r.try_get(4)?;
    outbox_event(r.try_get(0)?, &id, r.try_get(2)?, r.try_get(3)?, &payload)
}

async fn endpoint_by_key(
    c: &impl GenericClient,
    key: &[u8],
) -> Result<Option<Endpoint>, StoreError> {
    c.query_opt(&format!("{ENDPOINT_SELECT} WHERE e.id = $1"), &[&key])
        .await?
        .as_ref()
        .map(endpoint_from)
        .transpose()
}

async fn insert_delivery(
    c: &impl GenericClient,
    endpoint: &[u8],
    event: &OutboxEvent,
    now: Micros,
    again: bool,
) -> Result<u64, StoreError> {
    let payload =
        serde_json::to_string(&event.payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // A replay makes an existing delivery pending again; a fan-out never
    // touches one that exists.
    let on_conflict = if again {
        "DO UPDATE SET status = 'pending', next_at = $6, done_at = NULL, lease_owner = NULL, lease_until = NULL"
    } else {
        "DO NOTHING"
    };
    Ok(c.execute(
        &format!(
            "INSERT INTO deliveries (endpoint_id, event_id, type, event_ts, payload, status, next_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) ON CONFLICT (endpoint_id, event_id) {on_conflict}"
        ),
        &[&endpoint, &event_key(&event.id)?, &event.kind, &event.ts, &payload, &now, &now_micros()],
    )
    .await?)
}

/// Disables endpoint `key` with `reason` and tells `webhook.disabled`.
async fn disable(
    c: &impl GenericClient,
    key: &[u8],
    reason: &str,
) -> Result<Option<Endpoint>, StoreError> {
    let n = c
        .execute(
            "UPDATE endpoints SET enabled = FALSE, disabled_reason = $2 WHERE id = $1 AND enabled",
            &[&key, &reason],
        )
        .await?;
    let Some(e) = endpoint_by_key(c, key).await? else {
        return Ok(None);
    };
    if n == 0 {
        return Ok(None);
    }
    super::outbox::append(
        c,
        clickward_core::event::WEBHOOK_DISABLED,
        endpoint_disabled_payload(&e, reason),
    )
    .await?;
    Ok(Some(e))
}

async fn named_id(c: &impl GenericClient, table: &str, slug: &Slug) -> Result<i64, StoreError> {
    let what = if table == "programs" {
        "program"
    } else {
        "affiliate"
    };
    c.query_opt(
        &format!("SELECT id FROM {table} WHERE slug = $1"),
        &[&slug.as_str()],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .ok_or_else(|| StoreError::NotFound(format!("{what} {:?}", slug.as_str())))
}

impl DeliveryStore for PgStore {
    fn create_endpoint(&self, e: NewEndpoint) -> StoreFuture<'_, Endpoint> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                let id = ulid::Ulid::generate().to_bytes().to_vec();
                let program = match &e.program {
                    Some(slug) => Some(named_id(tx, "programs", slug).await?),
                    None => None,
                };
                let affiliate = match &e.affiliate {
                    Some(slug) => Some(named_id(tx, "affiliates", slug).await?),
                    None => None,
                };
                tx.execute(
                    "INSERT INTO endpoints (id, kind, url, method, events, program_id, affiliate_id, description, \
                     secret, enabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, TRUE, $10)",
                    &[
                        &id,
                        &e.kind.as_str(),
                        &e.url,
                        &e.method.as_str(),
                        &events_json(&e.events)?,
                        &program,
                        &affiliate,
                        &e.description,
                        &e.secret,
                        &now_micros(),
                    ],
                )
                .await?;
                endpoint_by_key(tx, &id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("endpoint vanished".to_owned()))?
            })
        })
    }

    fn endpoints(&self, affiliate: Option<Slug>) -> StoreFuture<'_, Vec<Endpoint>> {
        Box::pin(async move {
            let c = self.client().await?;
            let slug = affiliate.as_ref().map(Slug::as_str);
            c.query(
                &format!(
                    "{ENDPOINT_SELECT} WHERE $1::TEXT IS NULL OR a.slug = $1 ORDER BY e.id DESC"
                ),
                &[&slug],
            )
            .await?
            .iter()
            .map(endpoint_from)
            .collect()
        })
    }

    fn endpoint(&self, id: String) -> StoreFuture<'_, Option<Endpoint>> {
        Box::pin(async move {
            let Some(key) = endpoint_key(&id) else {
                return Ok(None);
            };
            let c = self.client().await?;
            endpoint_by_key(&**c, &key).await
        })
    }

    fn update_endpoint(
        &self,
        id: String,
        change: EndpointChange,
    ) -> StoreFuture<'_, Option<Endpoint>> {
        Box::pin(async move {
            let Some(key) = endpoint_key(&id) else {
                return Ok(None);
            };
            in_tx!(self, |tx| {
                if tx
                    .query_opt("SELECT 1 FROM endpoints WHERE id = $1 FOR UPDATE", &[&key])
                    .await?
                    .is_none()
                {
                    return Ok(None);
                }
                if let Some(url) = &change.url {
                    tx.execute("UPDATE endpoints SET url = $2 WHERE id = $1", &[&key, url])
                        .await?;
                }
                if let Some(m) = change.method {
                    tx.execute(
                        "UPDATE endpoints SET method = $2 WHERE id = $1",
                        &[&key, &m.as_str()],
                    )
                    .await?;
                }
                if let Some(ev) = &change.events {
                    tx.execute(
                        "UPDATE endpoints SET events = $2 WHERE id = $1",
                        &[&key, &events_json(ev)?],
                    )
                    .await?;
                }
                if let Some(d) = &change.description {
                    tx.execute(
                        "UPDATE endpoints SET description = $2 WHERE id = $1",
                        &[&key, d],
                    )
                    .await?;
                }
                if let Some((secret, until)) = &change.rotate {
                    tx.execute(
                        "UPDATE endpoints SET previous_secret = secret, previous_until = $3, secret = $2 WHERE id = $1",
                        &[&key, secret, until],
                    )
                    .await?;
                }
                match &change.enabled {
                    Some((true, _)) => {
                        tx.execute(
                            "UPDATE endpoints SET enabled = TRUE, disabled_reason = NULL, failing_since = NULL \
                             WHERE id = $1",
                            &[&key],
                        )
                        .await?;
                    }
                    Some((false, reason)) => {
                        disable(tx, &key, reason).await?;
                    }
                    None => {}
                }
                endpoint_by_key(tx, &key).await?
            })
        })
    }

    fn dispatch(&self, now: Micros, limit: u32) -> StoreFuture<'_, u32> {
        Box::pin(async move {
            {
                // Most calls find nothing new: a plain read first.
                let c = self.client().await?;
                let behind: bool = c
                    .query_one(
                        "SELECT (SELECT seq FROM delivery_cursors WHERE name = 'outbox') < \
                         (SELECT COALESCE(MAX(seq), 0) FROM outbox)",
                        &[],
                    )
                    .await?
                    .try_get(0)?;
                if !behind {
                    return Ok(0);
                }
            }
            in_tx!(self, |tx| {
                // The cursor row's lock makes one node at a time dispatch.
                let cursor: i64 = tx
                    .query_one(
                        "SELECT seq FROM delivery_cursors WHERE name = 'outbox' FOR UPDATE",
                        &[],
                    )
                    .await?
                    .try_get(0)?;
                let rows = tx
                    .query(
                        "SELECT seq, event_id, type, ts, payload FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2",
                        &[&cursor, &i64::from(limit)],
                    )
                    .await?;
                let mut events = rows
                    .iter()
                    .map(outbox_from)
                    .collect::<Result<Vec<_>, _>>()?;
                // A lower seq may still be committing on another node: stop
                // before a fresh gap, so it is not skipped.
                events.truncate(settled_prefix(cursor, &events, now_micros()));
                let endpoints: Vec<Endpoint> = tx
                    .query(&format!("{ENDPOINT_SELECT} WHERE e.enabled"), &[])
                    .await?
                    .iter()
                    .map(endpoint_from)
                    .collect::<Result<_, _>>()?;
                for ev in &events {
                    for e in wanted_by(&endpoints, ev) {
                        let key =
                            endpoint_key(&e.id).ok_or_else(|| StoreError::Corrupt(e.id.clone()))?;
                        insert_delivery(tx, &key, ev, now, false).await?;
                    }
                }
                if let Some(last) = events.last() {
                    tx.execute(
                        "UPDATE delivery_cursors SET seq = $1 WHERE name = 'outbox'",
                        &[&last.seq],
                    )
                    .await?;
                }
                u32::try_from(events.len()).unwrap_or(u32::MAX)
            })
        })
    }

    fn lease(
        &self,
        owner: String,
        now: Micros,
        until: Micros,
        limit: u32,
    ) -> StoreFuture<'_, Vec<LeasedDelivery>> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                let rows = tx
                    .query(
                        "UPDATE deliveries d SET lease_owner = $2, lease_until = $3 FROM ( \
                         SELECT d2.id FROM deliveries d2 JOIN endpoints e ON e.id = d2.endpoint_id \
                         WHERE d2.status = 'pending' AND d2.next_at <= $1 AND e.enabled \
                         AND (d2.lease_until IS NULL OR d2.lease_until < $1) \
                         ORDER BY d2.next_at LIMIT $4 FOR UPDATE OF d2 SKIP LOCKED) pick \
                         WHERE d.id = pick.id \
                         RETURNING d.id, d.endpoint_id, d.event_id, d.type, d.event_ts, d.payload, d.attempts",
                        &[&now, &owner, &until, &i64::from(limit)],
                    )
                    .await?;
                let mut endpoints: Vec<Endpoint> = Vec::new();
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let id: i64 = r.try_get(0)?;
                    let ep: Vec<u8> = r.try_get(1)?;
                    let ep_id = format!("ep_{}", ulid_of(ep.clone(), "endpoint id")?);
                    let endpoint = match endpoints.iter().find(|e| e.id == ep_id) {
                        Some(e) => e.clone(),
                        None => {
                            let e = endpoint_by_key(tx, &ep).await?.ok_or_else(|| {
                                StoreError::Corrupt(format!("delivery {id} has no endpoint"))
                            })?;
                            endpoints.push(e.clone());
                            e
                        }
                    };
                    let payload: String = r.try_get(5)?;
                    out.push(LeasedDelivery {
                        id,
                        endpoint,
                        event_id: clickward_core::event::event_id_text(ulid_of(
                            r.try_get(2)?,
                            "event id",
                        )?),
                        kind: r.try_get(3)?,
                        event_ts: r.try_get(4)?,
                        payload: serde_json::from_str(&payload)
                            .map_err(|_| corrupt("delivery payload", &payload))?,
                        attempts: u32::try_from(r.try_get::<_, i32>(6)?).unwrap_or(0),
                    });
                }
                out
            })
        })
    }

    fn record_attempt(&self, a: AttemptRecord) -> StoreFuture<'_, Option<Endpoint>> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                let held = tx
                    .query_opt(
                        "SELECT attempts, endpoint_id FROM deliveries WHERE id = $1 AND lease_owner = $2 FOR UPDATE",
                        &[&a.delivery_id, &a.owner],
                    )
                    .await?;
                // The lease expired and another node took the delivery over:
                // its attempt is the one that counts.
                let Some(held) = held else {
                    return Ok(None);
                };
                let attempts: i32 = held.try_get(0)?;
                let key: Vec<u8> = held.try_get(1)?;
                let status = a.status.map(i32::from);
                tx.execute(
                    "INSERT INTO delivery_attempts (delivery_id, n, at, url, status_code, error, latency_us, response) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[&a.delivery_id, &(attempts + 1), &a.at, &a.url, &status, &a.error, &a.latency_us, &a.response],
                )
                .await?;
                let (state, next_at, done_at) = attempt_outcome(&a);
                tx.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, status = $2, next_at = $3, done_at = $4, \
                     last_status = $5, last_error = $6, lease_owner = NULL, lease_until = NULL WHERE id = $1",
                    &[&a.delivery_id, &state, &next_at, &done_at, &status, &a.error],
                )
                .await?;
                let mut disabled = None;
                if a.next == crate::AttemptNext::Delivered {
                    tx.execute(
                        "UPDATE endpoints SET failing_since = NULL WHERE id = $1",
                        &[&key],
                    )
                    .await?;
                } else {
                    let since: Micros = tx
                        .query_one(
                            "UPDATE endpoints SET failing_since = COALESCE(failing_since, $2) WHERE id = $1 \
                             RETURNING failing_since",
                            &[&key, &a.at],
                        )
                        .await?
                        .try_get(0)?;
                    if let Some(reason) = disable_reason(&a, since) {
                        disabled = disable(tx, &key, &reason).await?;
                    }
                }
                disabled
            })
        })
    }

    fn release_leases(&self) -> StoreFuture<'_, u64> {
        // Other nodes may hold live leases: they expire instead.
        Box::pin(async { Ok(0) })
    }

    fn deliveries(&self, q: DeliveryQuery) -> StoreFuture<'_, Vec<DeliveryRow>> {
        Box::pin(async move {
            let endpoint = match &q.endpoint {
                Some(id) => match endpoint_key(id) {
                    Some(k) => Some(k),
                    None => return Ok(Vec::new()),
                },
                None => None,
            };
            let c = self.client().await?;
            let affiliate = q.affiliate.as_ref().map(Slug::as_str);
            c.query(
                &format!(
                    "{DELIVERY_SELECT} WHERE ($1::BYTEA IS NULL OR d.endpoint_id = $1) \
                     AND ($2::TEXT IS NULL OR d.status = $2) AND ($3::BIGINT IS NULL OR d.id < $3) \
                     AND ($4::TEXT IS NULL OR d.endpoint_id IN (SELECT e.id FROM endpoints e \
                     JOIN affiliates a ON a.id = e.affiliate_id WHERE a.slug = $4 AND e.kind = 'postback')) \
                     ORDER BY d.id DESC LIMIT $5"
                ),
                &[
                    &endpoint,
                    &q.status,
                    &q.before,
                    &affiliate,
                    &i64::from(q.limit),
                ],
            )
            .await?
            .iter()
            .map(delivery_from)
            .collect()
        })
    }

    fn delivery(&self, id: i64) -> StoreFuture<'_, Option<(DeliveryRow, Vec<AttemptRow>)>> {
        Box::pin(async move {
            let c = self.client().await?;
            let Some(row) = c
                .query_opt(&format!("{DELIVERY_SELECT} WHERE d.id = $1"), &[&id])
                .await?
            else {
                return Ok(None);
            };
            let attempts = c
                .query(
                    "SELECT n, at, url, status_code, error, latency_us, response FROM delivery_attempts \
                     WHERE delivery_id = $1 ORDER BY n",
                    &[&id],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(AttemptRow {
                        n: u32::try_from(r.try_get::<_, i32>(0)?).unwrap_or(0),
                        at: r.try_get(1)?,
                        url: r.try_get(2)?,
                        status: r.try_get::<_, Option<i32>>(3)?.and_then(|s| u16::try_from(s).ok()),
                        error: r.try_get(4)?,
                        latency_us: r.try_get(5)?,
                        response: r.try_get(6)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Some((delivery_from(&row)?, attempts)))
        })
    }

    fn replay_delivery(&self, id: i64, now: Micros) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.execute(
                "UPDATE deliveries SET status = 'pending', next_at = $2, done_at = NULL, lease_owner = NULL, \
                 lease_until = NULL WHERE id = $1",
                &[&id, &now],
            )
            .await?
                > 0)
        })
    }

    fn replay_events(
        &self,
        id: String,
        patterns: Vec<String>,
        from: Micros,
        to: Micros,
        now: Micros,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let Some(key) = endpoint_key(&id) else {
                return Err(StoreError::NotFound(format!("endpoint {id:?}")));
            };
            in_tx!(self, |tx| {
                let Some(e) = endpoint_by_key(tx, &key).await? else {
                    return Err(StoreError::NotFound(format!("endpoint {id:?}")));
                };
                let events = tx
                    .query(
                        "SELECT seq, event_id, type, ts, payload FROM outbox WHERE ts >= $1 AND ts < $2 ORDER BY seq",
                        &[&from, &to],
                    )
                    .await?
                    .iter()
                    .map(outbox_from)
                    .collect::<Result<Vec<_>, _>>()?;
                let mut n = 0;
                for ev in &events {
                    if clickward_core::delivery::endpoint_wants(
                        e.kind,
                        &patterns,
                        e.program.as_deref(),
                        e.affiliate.as_deref(),
                        &ev.kind,
                        &ev.payload,
                    ) {
                        n += insert_delivery(tx, &key, ev, now, true).await?;
                    }
                }
                n
            })
        })
    }

    fn cursor(&self, name: &'static str) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(
                c.query_opt("SELECT seq FROM delivery_cursors WHERE name = $1", &[&name])
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?,
            )
        })
    }

    fn set_cursor(&self, name: &'static str, seq: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO delivery_cursors (name, seq) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                &[&name, &seq],
            )
            .await?;
            Ok(())
        })
    }

    fn enqueue(
        &self,
        id: String,
        event_id: String,
        kind: String,
        payload: serde_json::Value,
        now: Micros,
    ) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let Some(key) = endpoint_key(&id) else {
                return Err(StoreError::NotFound(format!("endpoint {id:?}")));
            };
            in_tx!(self, |tx| {
                if endpoint_by_key(tx, &key).await?.is_none() {
                    return Err(StoreError::NotFound(format!("endpoint {id:?}")));
                }
                let ev = OutboxEvent {
                    seq: 0,
                    id: event_id,
                    kind,
                    ts: now,
                    payload,
                };
                insert_delivery(tx, &key, &ev, now, true).await?;
                let id: i64 = tx
                    .query_one(
                        "SELECT id FROM deliveries WHERE endpoint_id = $1 AND event_id = $2",
                        &[&key, &event_key(&ev.id)?],
                    )
                    .await?
                    .try_get(0)?;
                id
            })
        })
    }
}
