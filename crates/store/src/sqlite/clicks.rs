//! SQL for clicks: the batched writer with its dedup decision, reading back,
//! export, retention.

use super::{SqliteStore, id_floor, rollups};
use crate::{ClickFacts, ClickRow, ClickSink, ClickStore, ClickWritten, StoreError, StoreFuture};
use clickward_core::Micros;
use clickward_core::click::{NewClick, VisitorKey};
use clickward_core::dedup;
use clickward_core::id::{ClickId, LinkCode};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::sync::Arc;

pub(super) const CLICK_SELECT: &str = "SELECT c.click_id, c.ts, l.code, p.slug, a.slug, c.src, c.sub1, c.sub2, \
     c.sub3, c.sub4, c.sub5, c.referrer, c.device, c.os, c.browser, c.bot_reason, c.invalid_reason, \
     c.country, c.region, c.city, c.visitor_key, c.is_unique, c.verdict, c.verdict_rule, \
     c.verdict_reason, c.consent FROM clicks c \
     JOIN links l ON l.id = c.link_id JOIN programs p ON p.id = c.program_id \
     LEFT JOIN affiliates a ON a.id = c.affiliate_id";

pub(super) fn click_from(r: &Row<'_>) -> Result<ClickRow, StoreError> {
    let id: Vec<u8> = r.get(0)?;
    let id: [u8; 16] = id
        .try_into()
        .map_err(|_| StoreError::Corrupt("click_id is not 16 bytes".to_owned()))?;
    let vk: Vec<u8> = r.get(20)?;
    let vk: [u8; 16] = vk
        .try_into()
        .map_err(|_| StoreError::Corrupt("visitor_key is not 16 bytes".to_owned()))?;
    Ok(ClickRow {
        click_id: ClickId::from_bytes(id),
        ts: r.get(1)?,
        link: r.get(2)?,
        program: r.get(3)?,
        affiliate: r.get(4)?,
        src: r.get(5)?,
        subs: [r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?],
        referrer: r.get(11)?,
        device: r.get(12)?,
        os: r.get(13)?,
        browser: r.get(14)?,
        bot_reason: r.get(15)?,
        invalid_reason: r.get(16)?,
        country: r.get(17)?,
        region: r.get(18)?,
        city: r.get(19)?,
        visitor_key: VisitorKey(vk).to_hex(),
        unique: r.get(21)?,
        verdict: crate::common::verdict_of(r.get(22)?, r.get(23)?, r.get(24)?)?,
        consent: r
            .get::<_, Option<String>>(25)?
            .unwrap_or_else(|| "cookie".to_owned()),
    })
}

pub(super) fn write_clicks_conn(
    conn: &mut Connection,
    clicks: &[NewClick],
    window: Micros,
) -> Result<Vec<ClickWritten>, StoreError> {
    // Cached BEGIN/COMMIT: `Connection::transaction` parses its SQL on every
    // batch, which shows up at thousands of group commits per second.
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let committed = insert_clicks(conn, clicks, window).and_then(|out| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(out)
    });
    if committed.is_err() {
        // Leave no transaction open behind a failed batch; it is retried whole.
        let _ = conn.execute_batch("ROLLBACK");
    }
    committed
}

pub(super) fn insert_clicks(
    tx: &Connection,
    clicks: &[NewClick],
    window: Micros,
) -> Result<Vec<ClickWritten>, StoreError> {
    let mut out = Vec::with_capacity(clicks.len());
    // One writer: numbering the batch from the highest seq is commit order.
    let mut seq: i64 = tx
        .prepare_cached("SELECT COALESCE((SELECT seq FROM clicks WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1), 0)")?
        .query_row([], |r| r.get(0))?;
    {
        let mut last_unique = tx.prepare_cached(
            "SELECT last_unique FROM visitor_links WHERE link_id = ?1 AND visitor_key = ?2",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO clicks (click_id, ts, link_id, program_id, affiliate_id, src, \
             sub1, sub2, sub3, sub4, sub5, referrer, device, os, browser, bot_reason, \
             invalid_reason, country, region, city, visitor_key, is_unique, referrer_host, seq, verdict, \
             verdict_rule, verdict_reason, consent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
             ?11, ?12, ?13, ?14, ?15, ?16, ?24, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?25, ?26, ?27, ?28)",
        )?;
        let mut remember = tx.prepare_cached(
            "INSERT INTO visitor_links (link_id, visitor_key, last_unique) VALUES (?1, ?2, ?3) \
             ON CONFLICT (link_id, visitor_key) DO UPDATE SET last_unique = \
             max(last_unique, excluded.last_unique)",
        )?;
        for c in clicks {
            let unique = if c.is_human() {
                let mut last: Option<Micros> = None;
                for key in std::iter::once(&c.visitor_key).chain(c.previous_keys.iter()) {
                    let found: Option<Micros> = last_unique
                        .query_row(params![c.link_id, key.0.as_slice()], |r| r.get(0))
                        .optional()?;
                    last = last.max(found);
                }
                dedup::is_unique(c.ts, last, window)
            } else {
                false
            };
            let p = &c.params;
            let verdict = c.verdict.as_ref();
            let inserted = insert.execute(params![
                c.click_id.to_bytes().as_slice(),
                c.ts,
                c.link_id,
                c.program_id,
                c.affiliate_id,
                p.src,
                p.subs[0],
                p.subs[1],
                p.subs[2],
                p.subs[3],
                p.subs[4],
                c.referrer,
                c.device.as_str(),
                c.os,
                c.browser,
                c.bot.map(|b| b.as_str()),
                c.country,
                c.region,
                c.city,
                c.visitor_key.0.as_slice(),
                unique,
                c.referrer
                    .as_deref()
                    .and_then(clickward_core::click::referrer_host),
                seq + 1,
                verdict
                    .filter(|v| v.action.invalidates())
                    .map(|v| v.rule.as_str()),
                verdict.map(|v| v.action.as_str()),
                verdict.map(|v| v.rule.as_str()),
                verdict.map(|v| v.reason.as_str()),
                crate::common::consent_column(c.consent),
            ])? == 1;
            if inserted {
                seq += 1;
            }
            if inserted && unique {
                remember.execute(params![c.link_id, c.visitor_key.0.as_slice(), c.ts])?;
            }
            out.push(ClickWritten {
                inserted,
                unique: unique && inserted,
            });
        }
    }
    Ok(out)
}

pub(super) fn click_facts(c: &Connection, id: ClickId) -> Result<Option<ClickFacts>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT c.ts, c.link_id, c.program_id, c.affiliate_id, a.status, c.src, c.sub1, c.sub2, c.sub3, \
         c.sub4, c.sub5, c.country, c.verdict, c.verdict_rule, c.verdict_reason FROM clicks c LEFT JOIN affiliates a ON a.id = c.affiliate_id WHERE c.click_id = ?1",
    )?;
    let mut rows = st.query([id.to_bytes().as_slice()])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let status: Option<String> = r.get(4)?;
    Ok(Some(ClickFacts {
        click_id: id,
        ts: r.get(0)?,
        link_id: r.get(1)?,
        program_id: r.get(2)?,
        affiliate_id: r.get(3)?,
        affiliate_active: status.as_deref() != Some("disabled"),
        src: r.get(5)?,
        subs: [r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?],
        country: r.get(11)?,
        verdict: crate::common::verdict_of(r.get(12)?, r.get(13)?, r.get(14)?)?,
    }))
}

impl ClickStore for SqliteStore {
    fn write_clicks(
        &self,
        clicks: Arc<Vec<NewClick>>,
        dedup_window: Micros,
    ) -> StoreFuture<'_, Vec<ClickWritten>> {
        self.write(move |c| write_clicks_conn(c, &clicks, dedup_window))
    }

    fn list_clicks(&self, link: Option<LinkCode>, limit: u32) -> StoreFuture<'_, Vec<ClickRow>> {
        self.read(move |c| {
            let mut out = Vec::new();
            let mut push_all = |mut rows: rusqlite::Rows<'_>| -> Result<(), StoreError> {
                while let Some(r) = rows.next()? {
                    out.push(click_from(r)?);
                }
                Ok(())
            };
            match link {
                Some(code) => {
                    let mut st = c.prepare_cached(&format!(
                        "{CLICK_SELECT} WHERE c.link_id = (SELECT id FROM links WHERE code = ?1) \
                         ORDER BY c.click_id DESC LIMIT ?2"
                    ))?;
                    push_all(st.query(params![code.as_str(), limit])?)?;
                }
                None => {
                    let mut st = c.prepare_cached(&format!(
                        "{CLICK_SELECT} ORDER BY c.click_id DESC LIMIT ?1"
                    ))?;
                    push_all(st.query(params![limit])?)?;
                }
            }
            Ok(out)
        })
    }

    fn page_clicks(&self, q: crate::ClickQuery) -> StoreFuture<'_, Vec<ClickRow>> {
        self.read(move |c| {
            let (tail, values) = crate::page::click_page(&q);
            let mut st = c.prepare_cached(&format!("{CLICK_SELECT}{tail}"))?;
            let values = values.into_iter().map(|v| match v {
                crate::page::Bound::Text(t) => rusqlite::types::Value::Text(t),
                crate::page::Bound::Int(i) => rusqlite::types::Value::Integer(i),
                crate::page::Bound::Bytes(b) => rusqlite::types::Value::Blob(b),
            });
            let mut rows = st.query(rusqlite::params_from_iter(values))?;
            let mut out = Vec::with_capacity(q.limit as usize);
            while let Some(r) = rows.next()? {
                out.push(click_from(r)?);
            }
            Ok(out)
        })
    }

    fn clicks_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<(i64, ClickRow)>> {
        self.read(move |c| {
            let sql = CLICK_SELECT.replacen(" FROM clicks c", ", c.seq FROM clicks c", 1);
            let mut st =
                c.prepare_cached(&format!("{sql} WHERE c.seq > ?1 ORDER BY c.seq LIMIT ?2"))?;
            let mut rows = st.query(params![after, limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push((r.get(26)?, click_from(r)?));
            }
            Ok(out)
        })
    }

    fn click_seq_head(&self) -> StoreFuture<'_, i64> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT COALESCE((SELECT seq FROM clicks WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1), 0)")?
                    .query_row([], |r| r.get(0))?,
            )
        })
    }

    fn seq_is_commit_order(&self) -> bool {
        true
    }

    fn get_click(&self, id: ClickId) -> StoreFuture<'_, ClickRow> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!("{CLICK_SELECT} WHERE c.click_id = ?1"))?;
            let mut rows = st.query([id.to_bytes().as_slice()])?;
            match rows.next()? {
                Some(r) => click_from(r),
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
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "{CLICK_SELECT} WHERE c.click_id >= ?1 AND c.click_id < ?2 AND c.ts >= ?3 AND c.ts < ?4 \
                 ORDER BY c.click_id"
            ))?;
            let mut rows = st.query(params![id_floor(start), id_floor(end), start, end])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                sink(&click_from(r)?).map_err(|e| StoreError::Task(format!("export: {e}")))?;
                n += 1;
            }
            Ok(n)
        })
    }

    fn purge_clicks(&self, before: Micros, limit: u32) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let cutoff = before.min(rollups::watermark(&tx)?);
            let n = tx.execute(
                "DELETE FROM clicks WHERE click_id IN \
                 (SELECT click_id FROM clicks WHERE click_id < ?1 AND ts < ?2 LIMIT ?3)",
                params![id_floor(cutoff), cutoff, limit],
            )?;
            tx.commit()?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn purge_dedup(&self, before: Micros) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            let n = c.execute("DELETE FROM visitor_links WHERE last_unique < ?1", [before])?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn click_facts(&self, id: ClickId) -> StoreFuture<'_, Option<ClickFacts>> {
        self.read(move |c| click_facts(c, id))
    }
}
