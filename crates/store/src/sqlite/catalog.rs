//! SQL for the catalogue: programs, affiliates, links, program settings and
//! per-affiliate commission overrides.

use crate::common::{
    Item, LINK_SELECT, LinkColumns, Named, NamedRow, affiliate_of, now_micros, owner_of,
    program_of, should_apply, slug_of, status_of,
};
use crate::{
    AffiliateInput, CatalogApplied, CatalogInput, CatalogStore, LinkInput, LinkRecord,
    ProgramInput, SaveMode, StoreError, StoreFuture,
};
use clickward_core::commission::CommissionPlan;
use clickward_core::id::{LinkCode, Slug};
use clickward_core::link::{Affiliate, Program, RedirectStatus, Status};
use clickward_core::program::ProgramSettings;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::{SqliteStore, conversions};
use crate::common::{
    SETTINGS_SELECT, SettingsColumns, catalog_event, corrupt, link_payload, named_payload,
};

pub(super) fn link_from(row: &Row<'_>) -> Result<LinkRecord, StoreError> {
    LinkColumns {
        id: row.get(0)?,
        code: row.get(1)?,
        program: row.get(2)?,
        affiliate: row.get(3)?,
        destination: row.get(4)?,
        redirect: row.get(5)?,
        utm: row.get(6)?,
        status: row.get(7)?,
        program_id: row.get(8)?,
        affiliate_id: row.get(9)?,
        program_status: row.get(10)?,
        affiliate_status: row.get(11)?,
        admin_owned: row.get(12)?,
    }
    .record()
}

pub(super) fn save_named_tx(
    tx: &Transaction<'_>,
    which: Named,
    slug: &Slug,
    name: &str,
    status: Status,
    mode: SaveMode,
) -> Result<bool, StoreError> {
    let now = now_micros();
    let table = which.table();
    let before: Option<String> = tx
        .query_row(
            &format!("SELECT status FROM {table} WHERE slug = ?1"),
            [slug.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let before = before.map(|s| status_of(&s)).transpose()?;
    let exists = before.is_some();
    let what = || format!("{} {:?}", which.kind(), slug.as_str());
    match (mode, exists) {
        (SaveMode::Create, true) => return Err(StoreError::Conflict(what())),
        (SaveMode::Update, false) => return Err(StoreError::NotFound(what())),
        _ => {}
    }
    let changed = if exists {
        tx.execute(
            &format!(
                "UPDATE {table} SET name = ?2, status = ?3, updated_at = ?4, \
                 catalog_digest = CASE WHEN ?5 THEN NULL ELSE catalog_digest END \
                 WHERE slug = ?1 AND (name IS NOT ?2 OR status IS NOT ?3)"
            ),
            params![
                slug.as_str(),
                name,
                status.as_str(),
                now,
                mode != SaveMode::Upsert
            ],
        )? == 1
    } else {
        tx.execute(
            &format!("INSERT INTO {table} (slug, name, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)"),
            params![slug.as_str(), name, status.as_str(), now],
        )?;
        true
    };
    // A change through the API, CLI or dashboard takes the item from the
    // file (in the UPDATE above; a new row starts with no digest).
    let event = catalog_event(which.kind(), before, status, changed);
    if let Some(kind) = &event {
        super::outbox::append(tx, kind, named_payload(which.kind(), slug, name, status))?;
    }
    Ok(event.is_some())
}

pub(super) fn save_program_tx(
    tx: &Transaction<'_>,
    p: &ProgramInput,
    mode: SaveMode,
) -> Result<(), StoreError> {
    let told = save_named_tx(tx, Named::Programs, &p.slug, &p.name, p.status, mode)?;
    let Some(settings) = &p.settings else {
        return Ok(());
    };
    let id = conversions::id_of(tx, "programs", "program", p.slug.as_str())?;
    let before = program_settings(tx, id)?;
    save_program_settings(tx, p.slug.as_str(), settings)?;
    if program_settings(tx, id)? != before {
        // An admin's change of settings takes the program from the file, as
        // a change of name or status does; saving what is there does not.
        if mode != SaveMode::Upsert {
            set_digest(tx, "programs", "slug", p.slug.as_str(), None)?;
        }
        if !told {
            super::outbox::append(
                tx,
                "program.updated",
                named_payload("program", &p.slug, &p.name, p.status),
            )?;
        }
    }
    Ok(())
}

pub(super) fn save_affiliate_tx(
    tx: &Transaction<'_>,
    a: &AffiliateInput,
    mode: SaveMode,
) -> Result<(), StoreError> {
    save_named_tx(tx, Named::Affiliates, &a.slug, &a.name, a.status, mode).map(|_| ())
}

/// `(id, slug, name, status, owner)` rows of programs or affiliates.
pub(super) fn named_rows(
    c: &Connection,
    which: Named,
    slug: Option<&Slug>,
) -> Result<Vec<NamedRow>, StoreError> {
    let table = which.table();
    let sql = match slug {
        Some(_) => format!(
            "SELECT id, slug, name, status, catalog_digest IS NULL FROM {table} WHERE slug = ?1"
        ),
        None => format!(
            "SELECT id, slug, name, status, catalog_digest IS NULL FROM {table} ORDER BY slug"
        ),
    };
    let mut st = c.prepare_cached(&sql)?;
    let mut rows = match slug {
        Some(s) => st.query([s.as_str()])?,
        None => st.query([])?,
    };
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push((
            r.get(0)?,
            slug_of(&r.get::<_, String>(1)?)?,
            r.get(2)?,
            status_of(&r.get::<_, String>(3)?)?,
            owner_of(r.get(4)?),
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

pub(super) fn save_link_tx(
    tx: &Transaction<'_>,
    l: &LinkInput,
    mode: SaveMode,
) -> Result<(), StoreError> {
    let now = now_micros();
    let program_id: i64 = tx
        .query_row(
            "SELECT id FROM programs WHERE slug = ?1",
            [l.program.as_str()],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("program {:?}", l.program.as_str())))?;
    let affiliate_id: Option<i64> = match &l.affiliate {
        None => None,
        Some(a) => Some(
            tx.query_row(
                "SELECT id FROM affiliates WHERE slug = ?1",
                [a.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("affiliate {:?}", a.as_str())))?,
        ),
    };
    let before: Option<String> = tx
        .query_row(
            "SELECT status FROM links WHERE code = ?1",
            [l.code.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let before = before.map(|s| status_of(&s)).transpose()?;
    let exists = before.is_some();
    match (mode, exists) {
        (SaveMode::Create, true) => {
            return Err(StoreError::Conflict(format!("link {:?}", l.code.as_str())));
        }
        (SaveMode::Update, false) => {
            return Err(StoreError::NotFound(format!("link {:?}", l.code.as_str())));
        }
        _ => {}
    }
    let utm = serde_json::to_string(&l.utm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let redirect = l.redirect.map(RedirectStatus::code);
    let changed = if exists {
        tx.execute(
            "UPDATE links SET program_id = ?2, affiliate_id = ?3, destination = ?4, redirect = ?5, \
             utm = ?6, status = ?7, updated_at = ?8, \
             catalog_digest = CASE WHEN ?9 THEN NULL ELSE catalog_digest END \
             WHERE code = ?1 AND (program_id IS NOT ?2 \
             OR affiliate_id IS NOT ?3 OR destination IS NOT ?4 OR redirect IS NOT ?5 \
             OR utm IS NOT ?6 OR status IS NOT ?7)",
            params![
                l.code.as_str(),
                program_id,
                affiliate_id,
                l.destination,
                redirect,
                utm,
                l.status.as_str(),
                now,
                mode != SaveMode::Upsert
            ],
        )? == 1
    } else {
        tx.execute(
            "INSERT INTO links (code, program_id, affiliate_id, destination, redirect, utm, status, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![l.code.as_str(), program_id, affiliate_id, l.destination, redirect, utm, l.status.as_str(), now],
        )?;
        true
    };
    if let Some(kind) = catalog_event("link", before, l.status, changed) {
        super::outbox::append(tx, &kind, link_payload(l))?;
    }
    Ok(())
}

/// Whether to apply a catalogue entry to its item (see
/// [`crate::common::should_apply`]), counting it in `out`.
fn decide(
    tx: &Transaction<'_>,
    item: &Item<'_>,
    out: &mut CatalogApplied,
) -> Result<bool, StoreError> {
    let stored = stored_digest(tx, item.table, item.key, item.value)?;
    Ok(should_apply(stored, &item.digest, || item.name(), out))
}

/// The stored digest of an item (see [`crate::common::entry_state`]);
/// `table` and `key` are ours, not input.
fn stored_digest(
    tx: &Transaction<'_>,
    table: &str,
    key: &str,
    value: &str,
) -> Result<Option<Option<Vec<u8>>>, StoreError> {
    Ok(tx
        .query_row(
            &format!("SELECT catalog_digest FROM {table} WHERE {key} = ?1"),
            [value],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()?)
}

/// Records who owns an item: the file (its entry's digest) or, with
/// `None`, the admins.
fn set_digest(
    tx: &Transaction<'_>,
    table: &str,
    key: &str,
    value: &str,
    digest: Option<&[u8; 32]>,
) -> Result<(), StoreError> {
    tx.execute(
        &format!("UPDATE {table} SET catalog_digest = ?2 WHERE {key} = ?1"),
        params![value, digest.map(|d| d.as_slice())],
    )?;
    Ok(())
}

pub(super) fn get_link_conn(conn: &Connection, code: &str) -> Result<LinkRecord, StoreError> {
    let mut st = conn.prepare_cached(&format!("{LINK_SELECT} WHERE l.code = ?1"))?;
    let mut rows = st.query([code])?;
    match rows.next()? {
        Some(r) => link_from(r),
        None => Err(StoreError::NotFound(format!("link {code:?}"))),
    }
}

pub(super) fn program_settings(
    c: &Connection,
    program_id: i64,
) -> Result<ProgramSettings, StoreError> {
    let mut st = c.prepare_cached(&format!("{SETTINGS_SELECT} WHERE id = ?1"))?;
    let mut rows = st.query([program_id])?;
    let r = rows
        .next()?
        .ok_or_else(|| StoreError::NotFound(format!("program #{program_id}")))?;
    SettingsColumns {
        currency: r.get(0)?,
        cookie_window_s: r.get(1)?,
        attribution_window_s: r.get(2)?,
        attribution: r.get(3)?,
        commission: r.get(4)?,
        hold_s: r.get(5)?,
        postback_token: r.get(6)?,
        postback_secret: r.get(7)?,
        postback_ips: r.get(8)?,
        click_id_param: r.get(9)?,
        min_payout: r.get(10)?,
        pixel: r.get(11)?,
        pixel_max_amount: r.get(12)?,
        timezone: r.get(13)?,
        fallback_url: r.get(14)?,
        consent: r.get(15)?,
        integrations: r.get(16)?,
    }
    .settings()
}

pub(super) fn save_program_settings(
    c: &Connection,
    slug: &str,
    s: &ProgramSettings,
) -> Result<(), StoreError> {
    let plan =
        serde_json::to_string(&s.commission).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let ips =
        serde_json::to_string(&s.postback_ips).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let integrations = crate::common::integrations_column(s)?;
    let n = c.execute(
        "UPDATE programs SET currency = ?2, cookie_window_s = ?3, attribution_window_s = ?4, \
         attribution = ?5, commission = ?6, hold_s = ?7, postback_token = COALESCE(?8, postback_token), \
         postback_secret = COALESCE(?9, postback_secret), \
         postback_ips = ?10, click_id_param = ?11, min_payout = ?12, updated_at = ?13, \
         pixel = ?14, pixel_max_amount = ?15, timezone = ?16, fallback_url = ?17, \
         consent = ?18, integrations = ?19 WHERE slug = ?1",
        params![
            slug,
            s.currency.code(),
            s.cookie_window_s,
            s.attribution_window_s,
            s.attribution.as_str(),
            plan,
            s.hold_s,
            s.postback_token,
            s.postback_secret,
            ips,
            s.click_id_param,
            s.min_payout,
            now_micros(),
            s.pixel.as_str(),
            s.pixel_max_amount,
            s.timezone,
            s.fallback_url,
            s.consent.as_str(),
            integrations
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("program {slug:?}")));
    }
    Ok(())
}

pub(super) fn affiliate_commission(
    c: &Connection,
    program_id: i64,
    affiliate_id: i64,
) -> Result<Option<CommissionPlan>, StoreError> {
    let plan: Option<String> = c
        .prepare_cached("SELECT commission FROM affiliate_commissions WHERE program_id = ?1 AND affiliate_id = ?2")?
        .query_row([program_id, affiliate_id], |r| r.get(0))
        .optional()?;
    plan.map(|p| serde_json::from_str(&p).map_err(|_| corrupt("commission plan", &p)))
        .transpose()
}

pub(super) fn save_affiliate_commission(
    c: &Connection,
    program: &str,
    affiliate: &str,
    plan: Option<&CommissionPlan>,
) -> Result<(), StoreError> {
    let pid = conversions::id_of(c, "programs", "program", program)?;
    let aid = conversions::id_of(c, "affiliates", "affiliate", affiliate)?;
    match plan {
        Some(p) => {
            let json = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            c.execute(
                "INSERT INTO affiliate_commissions (program_id, affiliate_id, commission) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (program_id, affiliate_id) DO UPDATE SET commission = excluded.commission",
                params![pid, aid, json],
            )?;
        }
        None => {
            c.execute(
                "DELETE FROM affiliate_commissions WHERE program_id = ?1 AND affiliate_id = ?2",
                params![pid, aid],
            )?;
        }
    }
    Ok(())
}

impl CatalogStore for SqliteStore {
    fn save_program(&self, p: ProgramInput, mode: SaveMode) -> StoreFuture<'_, Program> {
        let this = self.clone();
        Box::pin(async move {
            let slug = p.slug.clone();
            this.write(move |c| {
                let tx = super::begin_write(c)?;
                save_program_tx(&tx, &p, mode)?;
                tx.commit()?;
                Ok(())
            })
            .await?;
            this.get_program(slug).await
        })
    }

    fn list_programs(&self) -> StoreFuture<'_, Vec<Program>> {
        self.read(|c| {
            Ok(named_rows(c, Named::Programs, None)?
                .into_iter()
                .map(program_of)
                .collect())
        })
    }

    fn get_program(&self, slug: Slug) -> StoreFuture<'_, Program> {
        self.read(move |c| {
            let row = named_rows(c, Named::Programs, Some(&slug))?
                .into_iter()
                .next();
            row.map(program_of)
                .ok_or_else(|| StoreError::NotFound(format!("program {:?}", slug.as_str())))
        })
    }

    fn save_affiliate(&self, a: AffiliateInput, mode: SaveMode) -> StoreFuture<'_, Affiliate> {
        let this = self.clone();
        Box::pin(async move {
            let slug = a.slug.clone();
            this.write(move |c| {
                let tx = super::begin_write(c)?;
                save_affiliate_tx(&tx, &a, mode)?;
                tx.commit()?;
                Ok(())
            })
            .await?;
            this.get_affiliate(slug).await
        })
    }

    fn list_affiliates(&self) -> StoreFuture<'_, Vec<Affiliate>> {
        self.read(|c| {
            Ok(named_rows(c, Named::Affiliates, None)?
                .into_iter()
                .map(affiliate_of)
                .collect())
        })
    }

    fn get_affiliate(&self, slug: Slug) -> StoreFuture<'_, Affiliate> {
        self.read(move |c| {
            let row = named_rows(c, Named::Affiliates, Some(&slug))?
                .into_iter()
                .next();
            row.map(affiliate_of)
                .ok_or_else(|| StoreError::NotFound(format!("affiliate {:?}", slug.as_str())))
        })
    }

    fn save_link(&self, l: LinkInput, mode: SaveMode) -> StoreFuture<'_, LinkRecord> {
        let code = l.code.clone();
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            save_link_tx(&tx, &l, mode)?;
            let rec = get_link_conn(&tx, code.as_str())?;
            tx.commit()?;
            Ok(rec)
        })
    }

    fn list_links(&self) -> StoreFuture<'_, Vec<LinkRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("{LINK_SELECT} ORDER BY l.code"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(link_from(r)?);
            }
            Ok(out)
        })
    }

    fn get_link(&self, code: LinkCode) -> StoreFuture<'_, LinkRecord> {
        self.read(move |c| get_link_conn(c, code.as_str()))
    }

    fn apply_catalog(&self, cat: CatalogInput) -> StoreFuture<'_, CatalogApplied> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let mut out = CatalogApplied::default();
            for p in &cat.programs {
                let item = Item::new("programs", "slug", p.slug.as_str(), "program", p);
                if decide(&tx, &item, &mut out)? {
                    save_program_tx(&tx, p, SaveMode::Upsert)?;
                    set_digest(&tx, item.table, item.key, item.value, Some(&item.digest))?;
                }
            }
            for a in &cat.affiliates {
                let item = Item::new("affiliates", "slug", a.slug.as_str(), "affiliate", a);
                if decide(&tx, &item, &mut out)? {
                    save_affiliate_tx(&tx, a, SaveMode::Upsert)?;
                    set_digest(&tx, item.table, item.key, item.value, Some(&item.digest))?;
                }
            }
            for l in &cat.links {
                let item = Item::new("links", "code", l.code.as_str(), "link", l);
                if decide(&tx, &item, &mut out)? {
                    save_link_tx(&tx, l, SaveMode::Upsert)?;
                    set_digest(&tx, item.table, item.key, item.value, Some(&item.digest))?;
                }
            }
            for (program, affiliate, plan) in &cat.commissions {
                // A program's overrides belong to whoever owns the program.
                if matches!(
                    stored_digest(&tx, "programs", "slug", program.as_str())?,
                    Some(Some(_))
                ) {
                    save_affiliate_commission(
                        &tx,
                        program.as_str(),
                        affiliate.as_str(),
                        Some(plan),
                    )?;
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn catalog_version(&self) -> StoreFuture<'_, i64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT value FROM meta WHERE key = 'catalog_version'",
                [],
                |r| r.get(0),
            )?)
        })
    }

    fn program_settings(&self, program_id: i64) -> StoreFuture<'_, ProgramSettings> {
        self.read(move |c| program_settings(c, program_id))
    }

    fn save_program_settings(&self, slug: Slug, s: ProgramSettings) -> StoreFuture<'_, ()> {
        self.write(move |c| save_program_settings(c, slug.as_str(), &s))
    }

    fn affiliate_commission(
        &self,
        program_id: i64,
        affiliate_id: i64,
    ) -> StoreFuture<'_, Option<CommissionPlan>> {
        self.read(move |c| affiliate_commission(c, program_id, affiliate_id))
    }

    fn save_affiliate_commission(
        &self,
        program: Slug,
        affiliate: Slug,
        plan: Option<CommissionPlan>,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            save_affiliate_commission(&tx, program.as_str(), affiliate.as_str(), plan.as_ref())?;
            set_digest(&tx, "programs", "slug", program.as_str(), None)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn affiliate_commissions(&self, program: Slug) -> StoreFuture<'_, Vec<(Slug, CommissionPlan)>> {
        self.read(move |c| {
            let pid = conversions::id_of(c, "programs", "program", program.as_str())?;
            let mut st = c.prepare_cached(
                "SELECT a.slug, ac.commission FROM affiliate_commissions ac \
                 JOIN affiliates a ON a.id = ac.affiliate_id WHERE ac.program_id = ?1 ORDER BY a.slug",
            )?;
            let mut rows = st.query([pid])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let plan: String = r.get(1)?;
                out.push((
                    slug_of(&r.get::<_, String>(0)?)?,
                    serde_json::from_str(&plan).map_err(|_| corrupt("commission plan", &plan))?,
                ));
            }
            Ok(out)
        })
    }
}
