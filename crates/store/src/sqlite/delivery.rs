//! SQL for outbound delivery: endpoints, the fan-out of outbox events into
//! deliveries, leases, attempts and replays. SQLite has one writer, so a
//! write transaction is all the exclusion leases need.

use clickward_core::Micros;
use clickward_core::id::Slug;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::common::{
    DELIVERY_SELECT, DeliveryColumns, ENDPOINT_SELECT, EndpointColumns, attempt_outcome,
    disable_reason, endpoint_disabled_payload, endpoint_key, event_key, events_json, now_micros,
    outbox_event, wanted_by,
};
use crate::{
    AttemptRecord, AttemptRow, DeliveryQuery, DeliveryRow, DeliveryStore, Endpoint, EndpointChange,
    LeasedDelivery, NewEndpoint, OutboxEvent, StoreError, StoreFuture,
};

/// A due delivery as the lease query reads it: id, endpoint, event id,
/// type, event time, payload, attempts.
type Picked = (i64, Vec<u8>, Vec<u8>, String, i64, String, i64);

fn endpoint_row(r: &Row<'_>) -> rusqlite::Result<EndpointColumns> {
    Ok(EndpointColumns {
        id: r.get(0)?,
        kind: r.get(1)?,
        url: r.get(2)?,
        method: r.get(3)?,
        events: r.get(4)?,
        program: r.get(5)?,
        affiliate: r.get(6)?,
        description: r.get(7)?,
        enabled: r.get(8)?,
        disabled_reason: r.get(9)?,
        failing_since: r.get(10)?,
        created_at: r.get(11)?,
        secret: r.get(12)?,
        previous_secret: r.get(13)?,
        previous_until: r.get(14)?,
    })
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<DeliveryColumns> {
    Ok(DeliveryColumns {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        event: r.get(2)?,
        kind: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        next_at: r.get(6)?,
        last_status: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        done_at: r.get(10)?,
    })
}

fn endpoint_by_key(c: &Connection, key: &[u8]) -> Result<Option<Endpoint>, StoreError> {
    c.prepare_cached(&format!("{ENDPOINT_SELECT} WHERE e.id = ?1"))?
        .query_row(params![key], endpoint_row)
        .optional()?
        .map(EndpointColumns::record)
        .transpose()
}

fn enabled_endpoints(c: &Connection) -> Result<Vec<Endpoint>, StoreError> {
    let mut st = c.prepare_cached(&format!("{ENDPOINT_SELECT} WHERE e.enabled = 1"))?;
    let rows = st.query_map([], endpoint_row)?;
    rows.map(|r| {
        r.map_err(StoreError::from)
            .and_then(EndpointColumns::record)
    })
    .collect()
}

fn insert_delivery(
    c: &Connection,
    endpoint: &[u8],
    event: &OutboxEvent,
    now: Micros,
    again: bool,
) -> Result<usize, StoreError> {
    let payload =
        serde_json::to_string(&event.payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // A replay makes an existing delivery pending again; a fan-out never
    // touches one that exists (the dispatch cursor moved past it).
    let sql = if again {
        "INSERT INTO deliveries (endpoint_id, event_id, type, event_ts, payload, status, next_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7) ON CONFLICT (endpoint_id, event_id) DO UPDATE SET \
         status = 'pending', next_at = ?6, done_at = NULL, lease_owner = NULL, lease_until = NULL"
    } else {
        "INSERT INTO deliveries (endpoint_id, event_id, type, event_ts, payload, status, next_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7) ON CONFLICT (endpoint_id, event_id) DO NOTHING"
    };
    Ok(c.prepare_cached(sql)?.execute(params![
        endpoint,
        event_key(&event.id)?,
        event.kind,
        event.ts,
        payload,
        now,
        now_micros()
    ])?)
}

fn outbox_rows(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(p)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: Vec<u8> = r.get(1)?;
        let payload: String = r.get(4)?;
        out.push(outbox_event(
            r.get(0)?,
            &id,
            r.get(2)?,
            r.get(3)?,
            &payload,
        )?);
    }
    Ok(out)
}

/// Disables endpoint `key` with `reason` and tells `webhook.disabled`.
fn disable(c: &Connection, key: &[u8], reason: &str) -> Result<Option<Endpoint>, StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE endpoints SET enabled = 0, disabled_reason = ?2 WHERE id = ?1 AND enabled = 1",
        )?
        .execute(params![key, reason])?;
    let Some(e) = endpoint_by_key(c, key)? else {
        return Ok(None);
    };
    if n == 0 {
        return Ok(None);
    }
    super::outbox::append(
        c,
        clickward_core::event::WEBHOOK_DISABLED,
        endpoint_disabled_payload(&e, reason),
    )?;
    Ok(Some(e))
}

impl DeliveryStore for SqliteStore {
    fn create_endpoint(&self, e: NewEndpoint) -> StoreFuture<'_, Endpoint> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let id = ulid::Ulid::generate().to_bytes().to_vec();
            let program = match &e.program {
                Some(slug) => Some(named_id(&tx, "programs", slug)?),
                None => None,
            };
            let affiliate = match &e.affiliate {
                Some(slug) => Some(named_id(&tx, "affiliates", slug)?),
                None => None,
            };
            tx.prepare_cached(
                "INSERT INTO endpoints (id, kind, url, method, events, program_id, affiliate_id, description, \
                 secret, enabled, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10)",
            )?
            .execute(params![
                id,
                e.kind.as_str(),
                e.url,
                e.method.as_str(),
                events_json(&e.events)?,
                program,
                affiliate,
                e.description,
                e.secret,
                now_micros()
            ])?;
            let out = endpoint_by_key(&tx, &id)?
                .ok_or_else(|| StoreError::Corrupt("endpoint vanished".to_owned()))?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn endpoints(&self, affiliate: Option<Slug>) -> StoreFuture<'_, Vec<Endpoint>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "{ENDPOINT_SELECT} WHERE ?1 IS NULL OR a.slug = ?1 ORDER BY e.id DESC"
            ))?;
            let rows = st.query_map(params![affiliate.as_ref().map(Slug::as_str)], endpoint_row)?;
            rows.map(|r| {
                r.map_err(StoreError::from)
                    .and_then(EndpointColumns::record)
            })
            .collect()
        })
    }

    fn endpoint(&self, id: String) -> StoreFuture<'_, Option<Endpoint>> {
        self.read(move |c| match endpoint_key(&id) {
            Some(key) => endpoint_by_key(c, &key),
            None => Ok(None),
        })
    }

    fn update_endpoint(
        &self,
        id: String,
        change: EndpointChange,
    ) -> StoreFuture<'_, Option<Endpoint>> {
        self.write(move |c| {
            let Some(key) = endpoint_key(&id) else {
                return Ok(None);
            };
            let tx = super::begin_write(c)?;
            if endpoint_by_key(&tx, &key)?.is_none() {
                return Ok(None);
            }
            if let Some(url) = &change.url {
                tx.execute("UPDATE endpoints SET url = ?2 WHERE id = ?1", params![key, url])?;
            }
            if let Some(m) = change.method {
                tx.execute("UPDATE endpoints SET method = ?2 WHERE id = ?1", params![key, m.as_str()])?;
            }
            if let Some(ev) = &change.events {
                tx.execute("UPDATE endpoints SET events = ?2 WHERE id = ?1", params![key, events_json(ev)?])?;
            }
            if let Some(d) = &change.description {
                tx.execute("UPDATE endpoints SET description = ?2 WHERE id = ?1", params![key, d])?;
            }
            if let Some((secret, until)) = &change.rotate {
                tx.execute(
                    "UPDATE endpoints SET previous_secret = secret, previous_until = ?3, secret = ?2 WHERE id = ?1",
                    params![key, secret, until],
                )?;
            }
            match &change.enabled {
                Some((true, _)) => {
                    tx.execute(
                        "UPDATE endpoints SET enabled = 1, disabled_reason = NULL, failing_since = NULL WHERE id = ?1",
                        params![key],
                    )?;
                }
                Some((false, reason)) => {
                    disable(&tx, &key, reason)?;
                }
                None => {}
            }
            let out = endpoint_by_key(&tx, &key)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn dispatch(&self, now: Micros, limit: u32) -> StoreFuture<'_, u32> {
        let inner = self.clone();
        Box::pin(async move {
            // Most calls find nothing new: ask a reader first, so an idle
            // dispatcher never takes the write lock from click ingest.
            let behind = inner
                .read(|c| {
                    Ok(c.prepare_cached(
                        "SELECT (SELECT seq FROM delivery_cursors WHERE name = 'outbox') < \
                         (SELECT COALESCE(MAX(seq), 0) FROM outbox)",
                    )?
                    .query_row([], |r| r.get::<_, bool>(0))?)
                })
                .await?;
            if !behind {
                return Ok(0);
            }
            inner
                .write(move |c| {
                    let tx = super::begin_write(c)?;
                    let cursor: i64 = tx.query_row(
                        "SELECT seq FROM delivery_cursors WHERE name = 'outbox'",
                        [],
                        |r| r.get(0),
                    )?;
                    let events = outbox_rows(
                        &tx,
                        "SELECT seq, event_id, type, ts, payload FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                        params![cursor, limit],
                    )?;
                    let endpoints = enabled_endpoints(&tx)?;
                    for ev in &events {
                        for e in wanted_by(&endpoints, ev) {
                            let key = endpoint_key(&e.id)
                                .ok_or_else(|| StoreError::Corrupt(e.id.clone()))?;
                            insert_delivery(&tx, &key, ev, now, false)?;
                        }
                    }
                    if let Some(last) = events.last() {
                        tx.execute(
                            "UPDATE delivery_cursors SET seq = ?1 WHERE name = 'outbox'",
                            params![last.seq],
                        )?;
                    }
                    tx.commit()?;
                    Ok(u32::try_from(events.len()).unwrap_or(u32::MAX))
                })
                .await
        })
    }

    fn lease(
        &self,
        owner: String,
        now: Micros,
        until: Micros,
        limit: u32,
    ) -> StoreFuture<'_, Vec<LeasedDelivery>> {
        let inner = self.clone();
        Box::pin(async move {
            // Most polls find nothing due: ask a reader first, so an idle
            // worker never takes the write lock from click ingest.
            let due = inner
                .read(move |c| {
                    Ok(c.prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id \
                         WHERE d.status = 'pending' AND d.next_at <= ?1 AND e.enabled = 1 \
                         AND (d.lease_until IS NULL OR d.lease_until < ?1))",
                    )?
                    .query_row(params![now], |r| r.get::<_, bool>(0))?)
                })
                .await?;
            if !due {
                return Ok(Vec::new());
            }
            inner.lease_due(owner, now, until, limit).await
        })
    }

    fn record_attempt(&self, a: AttemptRecord) -> StoreFuture<'_, Option<Endpoint>> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let held: Option<(i64, Vec<u8>)> = tx
                .prepare_cached("SELECT attempts, endpoint_id FROM deliveries WHERE id = ?1 AND lease_owner = ?2")?
                .query_row(params![a.delivery_id, a.owner], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            // The lease expired and another node took the delivery over: its
            // attempt is the one that counts.
            let Some((attempts, key)) = held else {
                return Ok(None);
            };
            tx.prepare_cached(
                "INSERT INTO delivery_attempts (delivery_id, n, at, url, status_code, error, latency_us, response) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                a.delivery_id,
                attempts + 1,
                a.at,
                a.url,
                a.status,
                a.error,
                a.latency_us,
                a.response
            ])?;
            let (status, next_at, done_at) = attempt_outcome(&a);
            tx.prepare_cached(
                "UPDATE deliveries SET attempts = attempts + 1, status = ?2, next_at = ?3, done_at = ?4, \
                 last_status = ?5, last_error = ?6, lease_owner = NULL, lease_until = NULL WHERE id = ?1",
            )?
            .execute(params![a.delivery_id, status, next_at, done_at, a.status, a.error])?;
            let mut disabled = None;
            if a.next == crate::AttemptNext::Delivered {
                tx.prepare_cached("UPDATE endpoints SET failing_since = NULL WHERE id = ?1")?
                    .execute(params![key])?;
            } else {
                let since: Micros = tx
                    .prepare_cached(
                        "UPDATE endpoints SET failing_since = COALESCE(failing_since, ?2) WHERE id = ?1 \
                         RETURNING failing_since",
                    )?
                    .query_row(params![key, a.at], |r| r.get(0))?;
                if let Some(reason) = disable_reason(&a, since) {
                    disabled = disable(&tx, &key, &reason)?;
                }
            }
            tx.commit()?;
            Ok(disabled)
        })
    }

    fn release_leases(&self) -> StoreFuture<'_, u64> {
        self.write(|c| {
            Ok(c.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL",
                [],
            )? as u64)
        })
    }

    fn deliveries(&self, q: DeliveryQuery) -> StoreFuture<'_, Vec<DeliveryRow>> {
        self.read(move |c| {
            let endpoint = match &q.endpoint {
                Some(id) => match endpoint_key(id) {
                    Some(k) => Some(k),
                    None => return Ok(Vec::new()),
                },
                None => None,
            };
            let mut st = c.prepare_cached(&format!(
                "{DELIVERY_SELECT} WHERE (?1 IS NULL OR d.endpoint_id = ?1) AND (?2 IS NULL OR d.status = ?2) \
                 AND (?3 IS NULL OR d.id < ?3) AND (?4 IS NULL OR d.endpoint_id IN \
                 (SELECT e.id FROM endpoints e JOIN affiliates a ON a.id = e.affiliate_id WHERE a.slug = ?4 AND e.kind = 'postback')) \
                 ORDER BY d.id DESC LIMIT ?5"
            ))?;
            let rows = st.query_map(
                params![
                    endpoint,
                    q.status,
                    q.before,
                    q.affiliate.as_ref().map(Slug::as_str),
                    q.limit
                ],
                delivery_row,
            )?;
            rows.map(|r| r.map_err(StoreError::from).and_then(DeliveryColumns::record))
                .collect()
        })
    }

    fn delivery(&self, id: i64) -> StoreFuture<'_, Option<(DeliveryRow, Vec<AttemptRow>)>> {
        self.read(move |c| {
            let Some(row) = c
                .prepare_cached(&format!("{DELIVERY_SELECT} WHERE d.id = ?1"))?
                .query_row(params![id], delivery_row)
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(
                "SELECT n, at, url, status_code, error, latency_us, response FROM delivery_attempts \
                 WHERE delivery_id = ?1 ORDER BY n",
            )?;
            let attempts = st
                .query_map(params![id], |r| {
                    Ok(AttemptRow {
                        n: r.get(0)?,
                        at: r.get(1)?,
                        url: r.get(2)?,
                        status: r.get(3)?,
                        error: r.get(4)?,
                        latency_us: r.get(5)?,
                        response: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((row.record()?, attempts)))
        })
    }

    fn replay_delivery(&self, id: i64, now: Micros) -> StoreFuture<'_, bool> {
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE deliveries SET status = 'pending', next_at = ?2, done_at = NULL, lease_owner = NULL, \
                 lease_until = NULL WHERE id = ?1",
                params![id, now],
            )? > 0)
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
        self.write(move |c| {
            let Some(key) = endpoint_key(&id) else {
                return Err(StoreError::NotFound(format!("endpoint {id:?}")));
            };
            let tx = super::begin_write(c)?;
            let Some(e) = endpoint_by_key(&tx, &key)? else {
                return Err(StoreError::NotFound(format!("endpoint {id:?}")));
            };
            let events = outbox_rows(
                &tx,
                "SELECT seq, event_id, type, ts, payload FROM outbox WHERE ts >= ?1 AND ts < ?2 ORDER BY seq",
                params![from, to],
            )?;
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
                    n += insert_delivery(&tx, &key, ev, now, true)? as u64;
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }

    fn cursor(&self, name: &'static str) -> StoreFuture<'_, Option<i64>> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT seq FROM delivery_cursors WHERE name = ?1")?
                    .query_row(params![name], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    fn set_cursor(&self, name: &'static str, seq: i64) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO delivery_cursors (name, seq) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            )?
            .execute(params![name, seq])?;
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
        self.write(move |c| {
            let Some(key) = endpoint_key(&id) else {
                return Err(StoreError::NotFound(format!("endpoint {id:?}")));
            };
            let tx = super::begin_write(c)?;
            if endpoint_by_key(&tx, &key)?.is_none() {
                return Err(StoreError::NotFound(format!("endpoint {id:?}")));
            }
            let ev = OutboxEvent {
                seq: 0,
                id: event_id,
                kind,
                ts: now,
                payload,
            };
            insert_delivery(&tx, &key, &ev, now, true)?;
            let id: i64 = tx.query_row(
                "SELECT id FROM deliveries WHERE endpoint_id = ?1 AND event_id = ?2",
                params![key, event_key(&ev.id)?],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(id)
        })
    }
}

impl SqliteStore {
    /// Leases due deliveries (see [`DeliveryStore::lease`]).
    fn lease_due(
        &self,
        owner: String,
        now: Micros,
        until: Micros,
        limit: u32,
    ) -> StoreFuture<'_, Vec<LeasedDelivery>> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let picked: Vec<Picked> = {
                let mut st = tx.prepare_cached(
                    "SELECT d.id, d.endpoint_id, d.event_id, d.type, d.event_ts, d.payload, d.attempts \
                     FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id \
                     WHERE d.status = 'pending' AND d.next_at <= ?1 AND e.enabled = 1 \
                     AND (d.lease_until IS NULL OR d.lease_until < ?1) ORDER BY d.next_at LIMIT ?2",
                )?;
                let rows = st.query_map(params![now, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(picked.len());
            let mut endpoints: Vec<Endpoint> = Vec::new();
            for (id, ep, ev, kind, event_ts, payload, attempts) in picked {
                tx.prepare_cached("UPDATE deliveries SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1")?
                    .execute(params![id, owner, until])?;
                let ep_id = format!("ep_{}", crate::common::ulid_of(ep.clone(), "endpoint id")?);
                let endpoint = match endpoints.iter().find(|e| e.id == ep_id) {
                    Some(e) => e.clone(),
                    None => {
                        let e = endpoint_by_key(&tx, &ep)?
                            .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} has no endpoint")))?;
                        endpoints.push(e.clone());
                        e
                    }
                };
                out.push(LeasedDelivery {
                    id,
                    endpoint,
                    event_id: clickward_core::event::event_id_text(crate::common::ulid_of(ev, "event id")?),
                    kind,
                    event_ts,
                    payload: serde_json::from_str(&payload)
                        .map_err(|_| crate::common::corrupt("delivery payload", &payload))?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                });
            }
            tx.commit()?;
            Ok(out)
        })
    }
}

fn named_id(c: &Connection, table: &str, slug: &Slug) -> Result<i64, StoreError> {
    let what = if table == "programs" {
        "program"
    } else {
        "affiliate"
    };
    c.prepare_cached(&format!("SELECT id FROM {table} WHERE slug = ?1"))?
        .query_row(params![slug.as_str()], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("{what} {:?}", slug.as_str())))
}
