//! SQL for the platform integrations' memory (`crate::integration`).

use clickward_core::Micros;
use clickward_core::id::{ClickId, ConversionId};
use tokio_postgres::GenericClient;

use super::PgStore;
use crate::common::ulid_of;
use crate::{Customer, EventKey, IntegrationStore, StoreError, StoreFuture};

async fn customer(
    c: &impl GenericClient,
    program_id: i64,
    source: &str,
    customer: &str,
) -> Result<Option<Customer>, StoreError> {
    let row = c
        .query_opt(
            "SELECT click_id, first_paid_at, ended_at FROM integration_customers \
             WHERE program_id = $1 AND source = $2 AND customer = $3",
            &[&program_id, &source, &customer],
        )
        .await?;
    row.map(|r| {
        Ok(Customer {
            click_id: r
                .try_get::<_, Option<Vec<u8>>>(0)?
                .map(|b| ulid_of(b, "click_id").map(ClickId))
                .transpose()?,
            first_paid_at: r.try_get(1)?,
            ended_at: r.try_get(2)?,
        })
    })
    .transpose()
}

impl IntegrationStore for PgStore {
    fn integration_answer(&self, key: EventKey) -> StoreFuture<'_, Option<(u16, String)>> {
        Box::pin(async move {
            let c = self.client().await?;
            let row = c
                .query_opt(
                    "SELECT status, body FROM integration_events \
                     WHERE program_id = $1 AND source = $2 AND event_id = $3",
                    &[&key.program_id, &key.source, &key.event_id],
                )
                .await?;
            row.map(|r| {
                let s: i32 = r.try_get(0)?;
                Ok((u16::try_from(s).unwrap_or(200), r.try_get(1)?))
            })
            .transpose()
        })
    }

    fn save_integration_answer(
        &self,
        key: EventKey,
        status: u16,
        body: String,
        at: Micros,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO integration_events (program_id, source, event_id, status, body, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &key.program_id,
                    &key.source,
                    &key.event_id,
                    &i32::from(status),
                    &body,
                    &at,
                ],
            )
            .await?;
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
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO integration_refs (program_id, source, ref, conversion_id, total) \
                 SELECT $1, $2, r, $4, $5 FROM unnest($3::text[]) AS r ON CONFLICT DO NOTHING",
                &[
                    &program_id,
                    &source,
                    &refs,
                    &conversion.0.to_bytes().as_slice(),
                    &total,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn named_conversion(
        &self,
        program_id: i64,
        source: &'static str,
        refs: Vec<String>,
    ) -> StoreFuture<'_, Option<(ConversionId, Option<i64>)>> {
        Box::pin(async move {
            let c = self.client().await?;
            for r in &refs {
                let row = c
                    .query_opt(
                        "SELECT conversion_id, total FROM integration_refs \
                         WHERE program_id = $1 AND source = $2 AND ref = $3",
                        &[&program_id, &source, r],
                    )
                    .await?;
                if let Some(row) = row {
                    return Ok(Some((
                        ConversionId(ulid_of(row.try_get(0)?, "conversion_id")?),
                        row.try_get(1)?,
                    )));
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
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO integration_customers (program_id, source, customer, click_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (program_id, source, customer) \
                 DO UPDATE SET click_id = COALESCE(integration_customers.click_id, excluded.click_id)",
                &[
                    &program_id,
                    &source,
                    &who,
                    &click.map(|c| c.0.to_bytes().to_vec()),
                    &at,
                ],
            )
            .await?;
            Ok(customer(&**c, program_id, source, &who)
                .await?
                .unwrap_or_default())
        })
    }

    fn customer(
        &self,
        program_id: i64,
        source: &'static str,
        who: String,
    ) -> StoreFuture<'_, Option<Customer>> {
        Box::pin(async move {
            let c = self.client().await?;
            customer(&**c, program_id, source, &who).await
        })
    }

    fn mark_customer(
        &self,
        program_id: i64,
        source: &'static str,
        who: String,
        paid_at: Option<Micros>,
        ended_at: Option<Micros>,
    ) -> StoreFuture<'_, Option<Customer>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "UPDATE integration_customers SET \
                 first_paid_at = CASE WHEN $4::int8 IS NULL THEN first_paid_at \
                   WHEN first_paid_at IS NULL OR $4::int8 < first_paid_at THEN $4::int8 ELSE first_paid_at END, \
                 ended_at = COALESCE(ended_at, $5::int8) \
                 WHERE program_id = $1 AND source = $2 AND customer = $3",
                &[&program_id, &source, &who, &paid_at, &ended_at],
            )
            .await?;
            customer(&**c, program_id, source, &who).await
        })
    }
}
