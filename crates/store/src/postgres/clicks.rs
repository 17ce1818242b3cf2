//! SQL for clicks: batches shipped from the nodes' spools (unique flags decided
//! under per-(link, visitor) advisory locks), reading back, export, retention.

use crate::common::ulid_of;
use crate::plan::id_floor;
use crate::{ClickFacts, ClickRow, ClickSink, ClickWritten, StoreError, StoreFuture};
use clickward_core::Micros;
use clickward_core::click::{NewClick, VisitorKey, referrer_host};
use clickward_core::dedup;
use clickward_core::id::{ClickId, LinkCode};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::rollups::{add_late, watermark};
use super::{ClickStore, DEDUP_LOCK_CLASS, PgStore, ROLLUP_LOCK, refs};

pub(super) const CLICK_SELECT: &str = "SELECT c.click_id, c.ts, l.code, p.slug, a.slug, c.src, c.sub1, c.sub2, \
     c.sub3, c.sub4, c.sub5, c.referrer, c.device, c.os, c.browser, c.bot_reason, c.invalid_reason, \
     c.country, c.region, c.city, c.visitor_key, c.is_unique, c.verdict, c.verdict_rule, \
     c.verdict_reason, c.consent FROM clicks c \
     JOIN links l ON l.id = c.link_id JOIN programs p ON p.id = c.program_id \
     LEFT JOIN affiliates a ON a.id = c.affiliate_id";

pub(super) fn click_from(r: &Row) -> Result<ClickRow, StoreError> {
    let id = ulid_of(r.try_get(0)?, "click_id")?;
    let vk: Vec<u8> = r.try_get(20)?;
    let vk: [u8; 16] = vk
        .try_into()
        .map_err(|_| StoreError::Corrupt("visitor_key is not 16 bytes".to_owned()))?;
    Ok(ClickRow {
        click_id: ClickId(id),
        ts: r.try_get(1)?,
        link: r.try_get(2)?,
        program: r.try_get(3)?,
        affiliate: r.try_get(4)?,
        src: r.try_get(5)?,
        subs: [
            r.try_get(6)?,
            r.try_get(7)?,
            r.try_get(8)?,
            r.try_get(9)?,
            r.try_get(10)?,
        ],
        referrer: r.try_get(11)?,
        device: r.try_get(12)?,
        os: r.try_get(13)?,
        browser: r.try_get(14)?,
        bot_reason: r.try_get(15)?,
        invalid_reason: r.try_get(16)?,
        country: r.try_get(17)?,
        region: r.try_get(18)?,
        city: r.try_get(19)?,
        visitor_key: VisitorKey(vk).to_hex(),
        unique: r.try_get(21)?,
        verdict: crate::common::verdict_of(r.try_get(22)?, r.try_get(23)?, r.try_get(24)?)?,
        consent: r
            .try_get::<_, Option<String>>(25)?
            .unwrap_or_else(|| "cookie".to_owned()),
    })
}

/// Writes a batch of clicks (see [`ClickStore::write_clicks`]) inside `tx`.
pub(super) async fn insert_clicks(
    tx: &tokio_postgres::Transaction<'_>,
    clicks: &[NewClick],
    window: Micros,
) -> Result<Vec<ClickWritten>, StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&ROLLUP_LOCK])
        .await?;
    let w = watermark(tx).await?;
    let ids: Vec<Vec<u8>> = clicks
        .iter()
        .map(|c| c.click_id.to_bytes().to_vec())
        .collect();
    let mut stored: std::collections::HashSet<Vec<u8>> = tx
        .query(
            "SELECT click_id FROM clicks WHERE click_id = ANY($1)",
            &[&ids],
        )
        .await?
        .into_iter()
        .map(|r| r.try_get::<_, Vec<u8>>(0))
        .collect::<Result<_, _>>()?;
    // Every (link, visitor key) a human click of the batch reads, locked in
    // one order (no deadlock between batches), then read once.
    let mut pairs: Vec<(i64, Vec<u8>)> = clicks
        .iter()
        .filter(|c| c.is_human())
        .flat_map(|c| {
            std::iter::once(&c.visitor_key)
                .chain(c.previous_keys.iter())
                .map(|k| (c.link_id, k.0.to_vec()))
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    let mut last: HashMap<(i64, Vec<u8>), Micros> = HashMap::new();
    if !pairs.is_empty() {
        let (links, keys): (Vec<i64>, Vec<Vec<u8>>) = pairs.iter().cloned().unzip();
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, h) FROM (SELECT DISTINCT \
             hashtext(u.l::text || ':' || encode(u.k, 'hex')) AS h \
             FROM unnest($2::int8[], $3::bytea[]) AS u(l, k) ORDER BY h) AS s",
            &[&DEDUP_LOCK_CLASS, &links, &keys],
        )
        .await?;
        for r in tx
            .query(
                "SELECT v.link_id, v.visitor_key, v.last_unique FROM visitor_links v \
                 JOIN unnest($1::int8[], $2::bytea[]) AS u(l, k) \
                 ON v.link_id = u.l AND v.visitor_key = u.k",
                &[&links, &keys],
            )
            .await?
        {
            last.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
    }
    let mut out = Vec::with_capacity(clicks.len());
    let mut rows: Vec<(&NewClick, bool)> = Vec::with_capacity(clicks.len());
    let mut remembered: BTreeMap<(i64, Vec<u8>), Micros> = BTreeMap::new();
    for (c, id) in clicks.iter().zip(&ids) {
        // A click already stored (a batch shipped again after a lost
        // answer, a replayed import) changes nothing.
        if !stored.insert(id.clone()) {
            out.push(ClickWritten {
                inserted: false,
                unique: false,
            });
            continue;
        }
        let unique = c.is_human() && {
            let seen = std::iter::once(&c.visitor_key)
                .chain(c.previous_keys.iter())
                .filter_map(|k| last.get(&(c.link_id, k.0.to_vec())).copied())
                .max();
            dedup::is_unique(c.ts, seen, window)
        };
        if unique {
            let k = (c.link_id, c.visitor_key.0.to_vec());
            let v = last.entry(k.clone()).or_insert(c.ts);
            *v = (*v).max(c.ts);
            let r = remembered.entry(k).or_insert(c.ts);
            *r = (*r).max(c.ts);
        }
        rows.push((c, unique));
        out.push(ClickWritten {
            inserted: true,
            unique,
        });
    }
    if !rows.is_empty() {
        insert_rows(tx, &rows).await?;
    }
    if !remembered.is_empty() {
        let (keys, ts): (Vec<(i64, Vec<u8>)>, Vec<Micros>) = remembered.into_iter().unzip();
        let (links, vks): (Vec<i64>, Vec<Vec<u8>>) = keys.into_iter().unzip();
        tx.execute(
            "INSERT INTO visitor_links (link_id, visitor_key, last_unique) \
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::int8[]) \
             ON CONFLICT (link_id, visitor_key) DO UPDATE SET \
             last_unique = GREATEST(visitor_links.last_unique, excluded.last_unique)",
            &[&links, &vks, &ts],
        )
        .await?;
    }
    let late: Vec<(&NewClick, bool)> = rows.into_iter().filter(|(c, _)| c.ts < w).collect();
    if !late.is_empty() {
        add_late(tx, &late).await?;
    }
    Ok(out)
}

/// One `INSERT … SELECT FROM unnest(…)` for the batch's new clicks.
pub(super) async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[(&NewClick, bool)],
) -> Result<(), StoreError> {
    let n = rows.len();
    let mut id = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut link = Vec::with_capacity(n);
    let mut program = Vec::with_capacity(n);
    let mut affiliate = Vec::with_capacity(n);
    let mut text: [Vec<Option<String>>; 19] = Default::default();
    let mut vk = Vec::with_capacity(n);
    let mut uniq = Vec::with_capacity(n);
    for (c, unique) in rows {
        id.push(c.click_id.to_bytes().to_vec());
        ts.push(c.ts);
        link.push(c.link_id);
        program.push(c.program_id);
        affiliate.push(c.affiliate_id);
        let p = &c.params;
        let values = [
            p.src.clone(),
            p.subs[0].clone(),
            p.subs[1].clone(),
            p.subs[2].clone(),
            p.subs[3].clone(),
            p.subs[4].clone(),
            c.referrer.clone(),
            Some(c.device.as_str().to_owned()),
            c.os.clone(),
            c.browser.clone(),
            c.bot.map(|b| b.as_str().to_owned()),
            c.country.clone(),
            c.region.clone(),
            c.city.clone(),
            c.verdict
                .as_ref()
                .filter(|v| v.action.invalidates())
                .map(|v| v.rule.clone()),
            c.verdict.as_ref().map(|v| v.action.as_str().to_owned()),
            c.verdict.as_ref().map(|v| v.rule.clone()),
            c.verdict.as_ref().map(|v| v.reason.clone()),
            crate::common::consent_column(c.consent).map(str::to_owned),
        ];
        for (col, v) in text.iter_mut().zip(values) {
            col.push(v);
        }
        vk.push(c.visitor_key.0.to_vec());
        uniq.push(*unique);
    }
    let hosts: Vec<Option<String>> = rows
        .iter()
        .map(|(c, _)| c.referrer.as_deref().and_then(referrer_host))
        .collect();
    let [
        src,
        s1,
        s2,
        s3,
        s4,
        s5,
        referrer,
        device,
        os,
        browser,
        bot,
        country,
        region,
        city,
        invalid,
        verdict,
        verdict_rule,
        verdict_reason,
        consent,
    ] = &text;
    tx.execute(
        "INSERT INTO clicks (click_id, ts, link_id, program_id, affiliate_id, src, sub1, sub2, sub3, \
         sub4, sub5, referrer, device, os, browser, bot_reason, country, region, city, visitor_key, \
         is_unique, referrer_host, invalid_reason, verdict, verdict_rule, verdict_reason, consent) \
         SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
         $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], \
         $20::bytea[], $21::bool[], $22::text[], $23::text[], $24::text[], $25::text[], \
         $26::text[], $27::text[]) ON CONFLICT (click_id) DO NOTHING",
        &[
            &id,
            &ts,
            &link,
            &program,
            &affiliate,
            src,
            s1,
            s2,
            s3,
            s4,
            s5,
            referrer,
            device,
            os,
            browser,
            bot,
            country,
            region,
            city,
            &vk,
            &uniq,
            &hosts,
            invalid,
            verdict,
            verdict_rule,
            verdict_reason,
            consent,
        ],
    )
    .await?;
    Ok(())
}

impl ClickStore for PgStore {
    fn write_clicks(
        &self,
        clicks: Arc<Vec<NewClick>>,
        dedup_window: Micros,
    ) -> StoreFuture<'_, Vec<ClickWritten>> {
        Box::pin(async move { in_tx!(self, |tx| insert_clicks(tx, &clicks, dedup_window).await?) })
    }

    fn clicks_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<(i64, ClickRow)>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql = CLICK_SELECT.replacen(" FROM clicks c", ", c.seq FROM clicks c", 1);
            let rows = c
                .query(
                    &format!("{sql} WHERE c.seq > $1 ORDER BY c.seq LIMIT $2"),
                    &[&after, &i64::from(limit)],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(26)?, click_from(r)?)))
                .collect()
        })
    }

    fn click_seq_head(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.query_one("SELECT COALESCE((SELECT seq FROM clicks WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1), 0)", &[])
                .await?
                .try_get(0)?)
        })
    }

    fn seq_is_commit_order(&self) -> bool {
        false
    }

    fn list_clicks(&self, link: Option<LinkCode>, limit: u32) -> StoreFuture<'_, Vec<ClickRow>> {
        Box::pin(async move {
            let c = self.client().await?;
            let limit = i64::from(limit);
            let rows = match link {
                Some(code) => {
                    c.query(
                        &format!(
                            "{CLICK_SELECT} WHERE c.link_id = (SELECT id FROM links WHERE code = $1) \
                             ORDER BY c.click_id DESC LIMIT $2"
                        ),
                        &[&code.as_str(), &limit],
                    )
                    .await?
                }
                None => {
                    c.query(
                        &format!("{CLICK_SELECT} ORDER BY c.click_id DESC LIMIT $1"),
                        &[&limit],
                    )
                    .await?
                }
            };
            rows.iter().map(click_from).collect()
        })
    }

    fn page_clicks(&self, q: crate::ClickQuery) -> StoreFuture<'_, Vec<ClickRow>> {
        Box::pin(async move {
            let c = self.client().await?;
            let (tail, values) = crate::page::click_page(&q);
            let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = values
                .into_iter()
                .map(|v| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                    match v {
                        crate::page::Bound::Text(t) => Box::new(t),
                        crate::page::Bound::Int(i) => Box::new(i),
                        crate::page::Bound::Bytes(b) => Box::new(b),
                    }
                })
                .collect();
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
                .iter()
                .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let st = c.prepare_cached(&format!("{CLICK_SELECT}{tail}")).await?;
            let rows = c.query(&st, &refs).await?;
            rows.iter().map(click_from).collect()
        })
    }

    fn get_click(&self, id: ClickId) -> StoreFuture<'_, ClickRow> {
        Box::pin(async move {
            let c = self.client().await?;
            match c
                .query_opt(
                    &format!("{CLICK_SELECT} WHERE c.click_id = $1"),
                    &[&id.to_bytes().as_slice()],
                )
                .await?
            {
                Some(r) => click_from(&r),
                None => Err(StoreError::NotFound(format!("click {id}"))),
            }
        })
    }

    fn export_clicks(
        &self,
        start: Micros,
        end: Micros,
        mut sink: ClickSink,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            use futures::TryStreamExt;
            let c = self.client().await?;
            let params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
                Box::new(id_floor(start)),
                Box::new(id_floor(end)),
                Box::new(start),
                Box::new(end),
            ];
            let rows = c
                .query_raw(
                    &format!(
                        "{CLICK_SELECT} WHERE c.click_id >= $1 AND c.click_id < $2 AND c.ts >= $3 \
                         AND c.ts < $4 ORDER BY c.click_id"
                    ),
                    refs(&params),
                )
                .await?;
            futures::pin_mut!(rows);
            let mut n = 0u64;
            while let Some(r) = rows.try_next().await? {
                sink(&click_from(&r)?).map_err(|e| StoreError::Task(format!("export: {e}")))?;
                n += 1;
            }
            Ok(n)
        })
    }

    fn purge_clicks(&self, before: Micros, limit: u32) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                let cutoff = before.min(watermark(tx).await?);
                tx.execute(
                    "DELETE FROM clicks WHERE click_id IN \
                     (SELECT click_id FROM clicks WHERE click_id < $1 AND ts < $2 LIMIT $3)",
                    &[&id_floor(cutoff), &cutoff, &i64::from(limit)],
                )
                .await?
            })
        })
    }

    fn purge_dedup(&self, before: Micros) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.execute(
                "DELETE FROM visitor_links WHERE last_unique < $1",
                &[&before],
            )
            .await?)
        })
    }

    fn click_facts(&self, id: ClickId) -> StoreFuture<'_, Option<ClickFacts>> {
        Box::pin(async move {
            let c = self.client().await?;
            let Some(r) = c
                .query_opt(
                    "SELECT c.ts, c.link_id, c.program_id, c.affiliate_id, a.status, c.src, c.sub1, \
                     c.sub2, c.sub3, c.sub4, c.sub5, c.country, c.verdict, c.verdict_rule, \
                     c.verdict_reason FROM clicks c \
                     LEFT JOIN affiliates a ON a.id = c.affiliate_id WHERE c.click_id = $1",
                    &[&id.to_bytes().as_slice()],
                )
                .await?
            else {
                return Ok(None);
            };
            let status: Option<String> = r.try_get(4)?;
            Ok(Some(ClickFacts {
                click_id: id,
                ts: r.try_get(0)?,
                link_id: r.try_get(1)?,
                program_id: r.try_get(2)?,
                affiliate_id: r.try_get(3)?,
                affiliate_active: status.as_deref() != Some("disabled"),
                src: r.try_get(5)?,
                subs: [
                    r.try_get(6)?,
                    r.try_get(7)?,
                    r.try_get(8)?,
                    r.try_get(9)?,
                    r.try_get(10)?,
                ],
                country: r.try_get(11)?,
                verdict: crate::common::verdict_of(r.try_get(12)?, r.try_get(13)?, r.try_get(14)?)?,
            }))
        })
    }
}
