//! SQL for the platform integrations' memory (`crate::integration`).

use clickward_core::Micros;
use clickward_core::id::{ClickId, ConversionId};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::common::ulid_of;
use crate::{Customer, EventKey, IntegrationStore, StoreError, StoreFuture};

fn customer(
    c: &Connection,
    program_id: i64,
    source: &str,
    customer: &str,
) -> Result<Option<Customer>, StoreError> {
    type Found = (Option<Vec<u8>>, Option<i64>, Option<i64>);
    let row: Option<Found> = c
        .prepare_cached(
            "SELECT click_id, first_paid_at, ended_at FROM integration_customers \
             WHERE program_id = ?1 AND source = ?2 AND customer = ?3",
        )?
        .query_row(params![program_id, source, customer], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    row.map(|(click, first_paid_at, ended_at)| {
        Ok(Customer {
            click_id: click
                .map(|b| ulid_of(b, "click_id").map(ClickId))
                .transpose()?,
            first_paid_at,
            ended_at,
        })
    })
    .transpose()
}

impl IntegrationStore for SqliteStore {
    fn integration_answer(&self, key: EventKey) -> StoreFuture<'_, Option<(u16, String)>> {
        self.read(move |c| {
            let row: Option<(i64, String)> = c
                .prepare_cached(
                    "SELECT status, body FROM integration_events \
                     WHERE program_id = ?1 AND source = ?2 AND event_id = ?3",
                )?
                .query_row(params![key.program_id, key.source, key.event_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(row.map(|(s, b)| (u16::try_from(s).unwrap_or(200), b)))
        })
    }

    fn save_integration_answer(
        &self,
        key: EventKey,
        status: u16,
        body: String,
        at: Micros,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO integration_events (program_id, source, event_id, status, body, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )?
            .execute(params![key.program_id, key.source, key.event_id, status, body, at])?;
            Ok(())
        })
    }

    fn name_conversion(
        &self,
        program_id: i64,
        source: &'static str,
        refs: Vec<String>,
        conversion: ConversionId,
        total: Option<i64>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO integration_refs (program_id, source, ref, conversion_id, total) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                )?;
                for r in &refs {
                    st.execute(params![
                        program_id,
                        source,
                        r,
                        conversion.0.to_bytes().as_slice(),
                        total
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn named_conversion(
        &self,
        program_id: i64,
        source: &'static str,
        refs: Vec<String>,
    ) -> StoreFuture<'_, Option<(ConversionId, Option<i64>)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT conversion_id, total FROM integration_refs \
                 WHERE program_id = ?1 AND source = ?2 AND ref = ?3",
            )?;
            for r in &refs {
                let found: Option<(Vec<u8>, Option<i64>)> = st
                    .query_row(params![program_id, source, r], |x| {
                        Ok((x.get(0)?, x.get(1)?))
                    })
                    .optional()?;
                if let Some((id, total)) = found {
                    return Ok(Some((ConversionId(ulid_of(id, "conversion_id")?), total)));
                }
            }
            Ok(None)
        })
    }

    fn remember_customer(
        &self,
        program_id: i64,
        source: &'static str,
        who: String,
        click: Option<ClickId>,
        at: Micros,
    ) -> StoreFuture<'_, Customer> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            tx.prepare_cached(
                "INSERT INTO integration_customers (program_id, source, customer, click_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (program_id, source, customer) \
                 DO UPDATE SET click_id = COALESCE(integration_customers.click_id, excluded.click_id)",
            )?
            .execute(params![
                program_id,
                source,
                who,
                click.map(|c| c.0.to_bytes().to_vec()),
                at
            ])?;
            let out = customer(&tx, program_id, source, &who)?.unwrap_or_default();
            tx.commit()?;
            Ok(out)
        })
    }

    fn customer(
        &self,
        program_id: i64,
        source: &'static str,
        who: String,
    ) -> StoreFuture<'_, Option<Customer>> {
        self.read(move |c| customer(c, program_id, source, &who))
    }

    fn mark_customer(
        &self,
        program_id: i64,
        source: &'static str,
        who: String,
        paid_at: Option<Micros>,
        ended_at: Option<Micros>,
    ) -> StoreFuture<'_, Option<Customer>> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            tx.prepare_cached(
                "UPDATE integration_customers SET \
                 first_paid_at = CASE WHEN ?4 IS NULL THEN first_paid_at \
                   WHEN first_paid_at IS NULL OR ?4 < first_paid_at THEN ?4 ELSE first_paid_at END, \
                 ended_at = COALESCE(ended_at, ?5) \
                 WHERE program_id = ?1 AND source = ?2 AND customer = ?3",
            )?
            .execute(params![program_id, source, who, paid_at, ended_at])?;
            let out = customer(&tx, program_id, source, &who)?;
            tx.commit()?;
            Ok(out)
        })
    }
}
