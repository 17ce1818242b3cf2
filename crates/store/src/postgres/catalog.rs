//! SQL for the catalogue: programs, affiliates, links, program settings and
//! per-affiliate commission overrides.

use super::{CatalogStore, PgStore};
use crate::common::{
    Item, NamedRow, catalog_event, link_payload, named_payload, owner_of, should_apply,
};
use crate::common::{
    LINK_SELECT, LinkColumns, Named, SETTINGS_SELECT, SettingsColumns, affiliate_of, corrupt,
    now_micros, program_of, slug_of, status_of,
};
use crate::{
    AffiliateInput, CatalogApplied, CatalogInput, LinkInput, LinkRecord, ProgramInput, SaveMode,
    StoreError, StoreFuture,
};
use clickward_core::commission::CommissionPlan;
use clickward_core::id::{LinkCode, Slug};
use clickward_core::link::{Affiliate, Program, Status};
use clickward_core::program::ProgramSettings;
use tokio_postgres::{GenericClient, Row};

pub(super) fn link_from(row: &Row) -> Result<LinkRecord, StoreError> {
    LinkColumns {
        id: row.try_get(0)?,
        code: row.try_get(1)?,
        program: row.try_get(2)?,
        affiliate: row.try_get(3)?,
        destination: row.try_get(4)?,
        redirect: row.try_get::<_, Option<i32>>(5)?.map(i64::from),
        utm: row.try_get(6)?,
        status: row.try_get(7)?,
        program_id: row.try_get(8)?,
        affiliate_id: row.try_get(9)?,
        program_status: row.try_get(10)?,
        affiliate_status: row.try_get(11)?,
        admin_owned: row.try_get(12)?,
    }
    .record()
}

pub(super) async fn save_named(
    c: &impl GenericClient,
    which: Named,
    slug: &Slug,
    name: &str,
    status: Status,
    mode: SaveMode,
) -> Result<(), StoreError> {
    save_named_told(c, which, slug, name, status, mode)
        .await
        .map(|_| ())
}

/// [`save_named`], saying whether it wrote an outbox event.
async fn save_named_told(
    c: &impl GenericClient,
    which: Named,
    slug: &Slug,
    name: &str,
    status: Status,
    mode: SaveMode,
) -> Result<bool, StoreError> {
    let now = now_micros();
    let table = which.table();
    let what = || format!("{} {:?}", which.kind(), slug.as_str());
    // The row lock (or the unique index, for two creates) settles races
    // between nodes saving the same slug.
    let before = match c
        .query_opt(
            &format!("SELECT status FROM {table} WHERE slug = $1 FOR UPDATE"),
            &[&slug.as_str()],
        )
        .await?
    {
        Some(r) => Some(status_of(&r.try_get::<_, String>(0)?)?),
        None => None,
    };
    let exists = before.is_some();
    match (mode, exists) {
        (SaveMode::Create, true) => return Err(StoreError::Conflict(what())),
        (SaveMode::Update, false) => return Err(StoreError::NotFound(what())),
        _ => {}
    }
    let changed = if exists {
        c.execute(
            &format!(
                "UPDATE {table} SET name = $2, status = $3, updated_at = $4, \
                 catalog_digest = CASE WHEN $5 THEN NULL ELSE catalog_digest END \
                 WHERE slug = $1 AND (name IS DISTINCT FROM $2 OR status IS DISTINCT FROM $3)"
            ),
            &[
                &slug.as_str(),
                &name,
                &status.as_str(),
                &now,
                &(mode != SaveMode::Upsert),
            ],
        )
        .await?
            == 1
    } else {
        let n = c
            .execute(
                &format!(
                    "INSERT INTO {table} (slug, name, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (slug) DO NOTHING"
                ),
                &[&slug.as_str(), &name, &status.as_str(), &now],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(what()));
        }
        true
    };
    // A change through the API, CLI or dashboard takes the item from the
    // file (in the UPDATE above; a new row starts with no digest).
    let event = catalog_event(which.kind(), before, status, changed);
    if let Some(kind) = &event {
        super::outbox::append(c, kind, named_payload(which.kind(), slug, name, status)).await?;
    }
    Ok(event.is_some())
}

/// Whether to apply a catalogue entry to its item (see
/// [`crate::common::should_apply`]), counting it in `out`.
async fn decide(
    c: &impl GenericClient,
    item: &Item<'_>,
    out: &mut CatalogApplied,
) -> Result<bool, StoreError> {
    let stored = stored_digest(c, item.table, item.key, item.value).await?;
    Ok(should_apply(stored, &item.digest, || item.name(), out))
}

/// The stored digest of an item (see [`crate::common::entry_state`]);
/// `table` and `key` are ours, not input.
async fn stored_digest(
    c: &impl GenericClient,
    table: &str,
    key: &str,
    value: &str,
) -> Result<Option<Option<Vec<u8>>>, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT catalog_digest FROM {table} WHERE {key} = $1 FOR UPDATE"),
            &[&value],
        )
        .await?;
    Ok(match row {
        None => None,
        Some(r) => Some(r.try_get::<_, Option<Vec<u8>>>(0)?),
    })
}

/// Records who owns an item: the file (its entry's digest) or, with
/// `None`, the admins.
async fn set_digest(
    c: &impl GenericClient,
    table: &str,
    key: &str,
    value: &str,
    digest: Option<&[u8; 32]>,
) -> Result<(), StoreError> {
    c.execute(
        &format!("UPDATE {table} SET catalog_digest = $2 WHERE {key} = $1"),
        &[&value, &digest.map(|d| d.as_slice())],
    )
    .await?;
    Ok(())
}

pub(super) async fn save_program_tx(
    c: &impl GenericClient,
    p: &ProgramInput,
    mode: SaveMode,
) -> Result<(), StoreError> {
    let told = save_named_told(c, Named::Programs, &p.slug, &p.name, p.status, mode).await?;
    let Some(settings) = &p.settings else {
        return Ok(());
    };
    let id = id_of(c, Named::Programs, p.slug.as_str()).await?;
    let before = program_settings(c, id).await?;
    save_program_settings(c, p.slug.as_str(), settings).await?;
    if program_settings(c, id).await? != before {
        // An admin's change of settings takes the program from the file, as
        // a change of name or status does; saving what is there does not.
        if mode != SaveMode::Upsert {
            set_digest(c, "programs", "slug", p.slug.as_str(), None).await?;
        }
        if !told {
            super::outbox::append(
                c,
                "program.updated",
                named_payload("program", &p.slug, &p.name, p.status),
            )
            .await?;
        }
    }
    Ok(())
}

pub(super) async fn named_rows(
    c: &impl GenericClient,
    which: Named,
    slug: Option<&Slug>,
) -> Result<Vec<NamedRow>, StoreError> {
    let table = which.table();
    let rows = match slug {
        Some(s) => {
            c.query(
                &format!(
                    "SELECT id, slug, name, status, catalog_digest IS NULL FROM {table} WHERE slug = $1"
                ),
                &[&s.as_str()],
            )
            .await?
        }
        None => {
            c.query(
                &format!(
                    "SELECT id, slug, name, status, catalog_digest IS NULL FROM {table} ORDER BY slug"
                ),
                &[],
            )
            .await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((
            r.try_get(0)?,
            slug_of(&r.try_get::<_, String>(1)?)?,
            r.try_get(2)?,
            status_of(&r.try_get::<_, String>(3)?)?,
            owner_of(r.try_get(4)?),
        ));
    }
    if let (Some(s), true) = (slug, out.is_empty()) {
        return Err(StoreError::NotFound(format!(
            "{} {:?}",
            which.kind(),
            s.as_str()
        )));
    }
    Ok(out)
}

pub(super) async fn id_of(
    c: &impl GenericClient,
    which: Named,
    slug: &str,
) -> Result<i64, StoreError> {
    let table = which.table();
    let row = c
        .query_opt(&format!("SELECT id FROM {table} WHERE slug = $1"), &[&slug])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("{} {slug:?}", which.kind())))?;
    Ok(row.try_get(0)?)
}

pub(super) async fn save_link_tx(
    c: &impl GenericClient,
    l: &LinkInput,
    mode: SaveMode,
) -> Result<(), StoreError> {
    let now = now_micros();
    let program_id = id_of(c, Named::Programs, l.program.as_str()).await?;
    let affiliate_id = match &l.affiliate {
        None => None,
        Some(a) => Some(id_of(c, Named::Affiliates, a.as_str()).await?),
    };
    let before = match c
        .query_opt(
            "SELECT status FROM links WHERE code = $1 FOR UPDATE",
            &[&l.code.as_str()],
        )
        .await?
    {
        Some(r) => Some(status_of(&r.try_get::<_, String>(0)?)?),
        None => None,
    };
    let exists = before.is_some();
    let what = || format!("link {:?}", l.code.as_str());
    match (mode, exists) {
        (SaveMode::Create, true) => return Err(StoreError::Conflict(what())),
        (SaveMode::Update, false) => return Err(StoreError::NotFound(what())),
        _ => {}
    }
    let utm = serde_json::to_string(&l.utm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let redirect = l.redirect.map(|r| i32::from(r.code()));
    let changed = if exists {
        c.execute(
            "UPDATE links SET program_id = $2, affiliate_id = $3, destination = $4, redirect = $5, \
             utm = $6, status = $7, updated_at = $8, \
             catalog_digest = CASE WHEN $9 THEN NULL ELSE catalog_digest END \
             WHERE code = $1 AND (program_id IS DISTINCT FROM $2 \
             OR affiliate_id IS DISTINCT FROM $3 OR destination IS DISTINCT FROM $4 \
             OR redirect IS DISTINCT FROM $5 OR utm IS DISTINCT FROM $6 OR status IS DISTINCT FROM $7)",
            &[
                &l.code.as_str(),
                &program_id,
                &affiliate_id,
                &l.destination,
                &redirect,
                &utm,
                &l.status.as_str(),
                &now,
                &(mode != SaveMode::Upsert),
            ],
        )
        .await?
            == 1
    } else {
        let n = c
            .execute(
                "INSERT INTO links (code, program_id, affiliate_id, destination, redirect, utm, status, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                 ON CONFLICT (code) DO NOTHING",
                &[
                    &l.code.as_str(),
                    &program_id,
                    &affiliate_id,
                    &l.destination,
                    &redirect,
                    &utm,
                    &l.status.as_str(),
                    &now,
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(what()));
        }
        true
    };
    if let Some(kind) = catalog_event("link", before, l.status, changed) {
        super::outbox::append(c, &kind, link_payload(l)).await?;
    }
    Ok(())
}

pub(super) async fn get_link_c(
    c: &impl GenericClient,
    code: &str,
) -> Result<LinkRecord, StoreError> {
    match c
        .query_opt(&format!("{LINK_SELECT} WHERE l.code = $1"), &[&code])
        .await?
    {
        Some(r) => link_from(&r),
        None => Err(StoreError::NotFound(format!("link {code:?}"))),
    }
}

pub(super) async fn program_settings(
    c: &impl GenericClient,
    program_id: i64,
) -> Result<ProgramSettings, StoreError> {
    let r = c
        .query_opt(&format!("{SETTINGS_SELECT} WHERE id = $1"), &[&program_id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("program #{program_id}")))?;
    SettingsColumns {
        currency: r.try_get(0)?,
        cookie_window_s: r.try_get(1)?,
        attribution_window_s: r.try_get(2)?,
        attribution: r.try_get(3)?,
        commission: r.try_get(4)?,
        hold_s: r.try_get(5)?,
        postback_token: r.try_get(6)?,
        postback_secret: r.try_get(7)?,
        postback_ips: r.try_get(8)?,
        click_id_param: r.try_get(9)?,
        min_payout: r.try_get(10)?,
        pixel: r.try_get(11)?,
        pixel_max_amount: r.try_get(12)?,
        timezone: r.try_get(13)?,
        fallback_url: r.try_get(14)?,
        consent: r.try_get(15)?,
        integrations: r.try_get(16)?,
    }
    .settings()
}

pub(super) async fn save_program_settings(
    c: &impl GenericClient,
    slug: &str,
    s: &ProgramSettings,
) -> Result<(), StoreError> {
    let plan =
        serde_json::to_string(&s.commission).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let ips =
        serde_json::to_string(&s.postback_ips).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let integrations = crate::common::integrations_column(s)?;
    let n = c
        .execute(
            "UPDATE programs SET currency = $2, cookie_window_s = $3, attribution_window_s = $4, \
             attribution = $5, commission = $6, hold_s = $7, \
             postback_token = COALESCE($8, postback_token), \
             postback_secret = COALESCE($9, postback_secret), \
             postback_ips = $10, click_id_param = $11, min_payout = $12, updated_at = $13, \
             pixel = $14, pixel_max_amount = $15, timezone = $16, fallback_url = $17, \
             consent = $18, integrations = $19 WHERE slug = $1",
            &[
                &slug,
                &s.currency.code(),
                &s.cookie_window_s,
                &s.attribution_window_s,
                &s.attribution.as_str(),
                &plan,
                &s.hold_s,
                &s.postback_token,
                &s.postback_secret,
                &ips,
                &s.click_id_param,
                &s.min_payout,
                &now_micros(),
                &s.pixel.as_str(),
                &s.pixel_max_amount,
                &s.timezone,
                &s.fallback_url,
                &s.consent.as_str(),
                &integrations,
            ],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("program {slug:?}")));
    }
    Ok(())
}

pub(super) async fn save_affiliate_commission(
    c: &impl GenericClient,
    program: &str,
    affiliate: &str,
    plan: Option<&CommissionPlan>,
) -> Result<(), StoreError> {
    let pid = id_of(c, Named::Programs, program).await?;
    let aid = id_of(c, Named::Affiliates, affiliate).await?;
    match plan {
        Some(p) => {
            let json = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            c.execute(
                "INSERT INTO affiliate_commissions (program_id, affiliate_id, commission) \
                 VALUES ($1, $2, $3) ON CONFLICT (program_id, affiliate_id) \
                 DO UPDATE SET commission = excluded.commission",
                &[&pid, &aid, &json],
            )
            .await?;
        }
        None => {
            c.execute(
                "DELETE FROM affiliate_commissions WHERE program_id = $1 AND affiliate_id = $2",
                &[&pid, &aid],
            )
            .await?;
        }
    }
    Ok(())
}

impl CatalogStore for PgStore {
    fn save_program(&self, p: ProgramInput, mode: SaveMode) -> StoreFuture<'_, Program> {
        Box::pin(async move {
            let slug = p.slug.clone();
            let r: Result<(), StoreError> =
                in_tx!(self, |tx| save_program_tx(tx, &p, mode).await?);
            r?;
            self.get_program(slug).await
        })
    }

    fn list_programs(&self) -> StoreFuture<'_, Vec<Program>> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(named_rows(&**c, Named::Programs, None)
                .await?
                .into_iter()
                .map(program_of)
                .collect())
        })
    }

    fn get_program(&self, slug: Slug) -> StoreFuture<'_, Program> {
        Box::pin(async move {
            let c = self.client().await?;
            named_rows(&**c, Named::Programs, Some(&slug))
                .await?
                .into_iter()
                .next()
                .map(program_of)
                .ok_or_else(|| StoreError::NotFound(format!("program {:?}", slug.as_str())))
        })
    }

    fn save_affiliate(&self, a: AffiliateInput, mode: SaveMode) -> StoreFuture<'_, Affiliate> {
        Box::pin(async move {
            let slug = a.slug.clone();
            let r: Result<(), StoreError> = in_tx!(self, |tx| save_named(
                tx,
                Named::Affiliates,
                &a.slug,
                &a.name,
                a.status,
                mode
            )
            .await?);
            r?;
            self.get_affiliate(slug).await
        })
    }

    fn list_affiliates(&self) -> StoreFuture<'_, Vec<Affiliate>> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(named_rows(&**c, Named::Affiliates, None)
                .await?
                .into_iter()
                .map(affiliate_of)
                .collect())
        })
    }

    fn get_affiliate(&self, slug: Slug) -> StoreFuture<'_, Affiliate> {
        Box::pin(async move {
            let c = self.client().await?;
            named_rows(&**c, Named::Affiliates, Some(&slug))
                .await?
                .into_iter()
                .next()
                .map(affiliate_of)
                .ok_or_else(|| StoreError::NotFound(format!("affiliate {:?}", slug.as_str())))
        })
    }

    fn save_link(&self, l: LinkInput, mode: SaveMode) -> StoreFuture<'_, LinkRecord> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                save_link_tx(tx, &l, mode).await?;
                get_link_c(tx, l.code.as_str()).await?
            })
        })
    }

    fn list_links(&self) -> StoreFuture<'_, Vec<LinkRecord>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(&format!("{LINK_SELECT} ORDER BY l.code"), &[])
                .await?
                .iter()
                .map(link_from)
                .collect()
        })
    }

    fn get_link(&self, code: LinkCode) -> StoreFuture<'_, LinkRecord> {
        Box::pin(async move {
            let c = self.client().await?;
            get_link_c(&**c, code.as_str()).await
        })
    }

    fn apply_catalog(&self, cat: CatalogInput) -> StoreFuture<'_, CatalogApplied> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                let mut out = CatalogApplied::default();
                for p in &cat.programs {
                    let item = Item::new("programs", "slug", p.slug.as_str(), "program", p);
                    if decide(tx, &item, &mut out).await? {
                        save_program_tx(tx, p, SaveMode::Upsert).await?;
                        set_digest(tx, item.table, item.key, item.value, Some(&item.digest))
                            .await?;
                    }
                }
                for a in &cat.affiliates {
                    let item = Item::new("affiliates", "slug", a.slug.as_str(), "affiliate", a);
                    if decide(tx, &item, &mut out).await? {
                        save_named(
                            tx,
                            Named::Affiliates,
                            &a.slug,
                            &a.name,
                            a.status,
                            SaveMode::Upsert,
                        )
                        .await?;
                        set_digest(tx, item.table, item.key, item.value, Some(&item.digest))
                            .await?;
                    }
                }
                for l in &cat.links {
                    let item = Item::new("links", "code", l.code.as_str(), "link", l);
                    if decide(tx, &item, &mut out).await? {
                        save_link_tx(tx, l, SaveMode::Upsert).await?;
                        set_digest(tx, item.table, item.key, item.value, Some(&item.digest))
                            .await?;
                    }
                }
                for (program, affiliate, plan) in &cat.commissions {
                    // A program's overrides belong to whoever owns the program.
                    if matches!(
                        stored_digest(tx, "programs", "slug", program.as_str()).await?,
                        Some(Some(_))
                    ) {
                        save_affiliate_commission(
                            tx,
                            program.as_str(),
                            affiliate.as_str(),
                            Some(plan),
                        )
                        .await?;
                    }
                }
                out
            })
        })
    }

    fn catalog_version(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(
                c.query_one("SELECT value FROM meta WHERE key = 'catalog_version'", &[])
                    .await?
                    .try_get(0)?,
            )
        })
    }

    fn program_settings(&self, program_id: i64) -> StoreFuture<'_, ProgramSettings> {
        Box::pin(async move {
            let c = self.client().await?;
            program_settings(&**c, program_id).await
        })
    }

    fn save_program_settings(&self, slug: Slug, s: ProgramSettings) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            save_program_settings(&**c, slug.as_str(), &s).await
        })
    }

    fn affiliate_commission(
        &self,
        program_id: i64,
        affiliate_id: i64,
    ) -> StoreFuture<'_, Option<CommissionPlan>> {
        Box::pin(async move {
            let c = self.client().await?;
            let plan: Option<String> = c
                .query_opt(
                    "SELECT commission FROM affiliate_commissions WHERE program_id = $1 AND affiliate_id = $2",
                    &[&program_id, &affiliate_id],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            plan.map(|p| serde_json::from_str(&p).map_err(|_| corrupt("commission plan", &p)))
                .transpose()
        })
    }

    fn save_affiliate_commission(
        &self,
        program: Slug,
        affiliate: Slug,
        plan: Option<CommissionPlan>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                save_affiliate_commission(tx, program.as_str(), affiliate.as_str(), plan.as_ref())
                    .await?;
                set_digest(tx, "programs", "slug", program.as_str(), None).await?;
            })
        })
    }

    fn affiliate_commissions(&self, program: Slug) -> StoreFuture<'_, Vec<(Slug, CommissionPlan)>> {
        Box::pin(async move {
            let c = self.client().await?;
            let pid = id_of(&**c, Named::Programs, program.as_str()).await?;
            let rows = c
                .query(
                    "SELECT a.slug, ac.commission FROM affiliate_commissions ac \
                     JOIN affiliates a ON a.id = ac.affiliate_id WHERE ac.program_id = $1 \
                     ORDER BY a.slug",
                    &[&pid],
                )
                .await?;
            let mut out = Vec::new();
            for r in rows {
                let plan: String = r.try_get(1)?;
                out.push((
                    slug_of(&r.try_get::<_, String>(0)?)?,
                    serde_json::from_str(&plan).map_err(|_| corrupt("commission plan", &plan))?,
                ));
            }
            Ok(out)
        })
    }
}
