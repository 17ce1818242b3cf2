//! The PostgreSQL store: the shared truth of a multi-node deployment.
//!
//! Every node talks to it through a connection pool (deadpool-postgres over
//! tokio-postgres). What must be right across nodes is decided here, in the
//! database, never in one node's memory:
//! - a click's unique flag: the batch that stores a visitor's click on a link
//!   holds a transaction advisory lock on that (link, visitor key) pair, so
//!   a double tap landing on two nodes counts once;
//! - conversion idempotency: `INSERT … ON CONFLICT DO NOTHING` against
//!   `UNIQUE (program_id, event, order_id)`;
//! - rollups: advanced and recomputed under an exclusive advisory lock (one
//!   node at a time); click batches hold it shared, and add a click that
//!   arrives behind the watermark (a spool drained after an outage) to its
//!   bucket's rollup rows in the same transaction, so reports stay exact.
//!
//! Catalogue changes and live events reach every node by LISTEN/NOTIFY
//! ([`PgStore::listen`]).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clickward_core::Micros;
use clickward_core::click::{NewClick, VisitorKey, referrer_host};
use clickward_core::commission::CommissionPlan;
use clickward_core::conversion::{self, ConversionStatus, LedgerBucket};
use clickward_core::dedup;
use clickward_core::id::{ClickId, ConversionId, LinkCode, Slug};
use clickward_core::link::{Affiliate, Program, Status};
use clickward_core::money::Currency;
use clickward_core::program::ProgramSettings;
use clickward_core::report::{Bucket, ClickCounts, Dimension};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::broadcast;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls, Row};

use crate::plan::{self, BUCKET, CHUNK, Cube, LEVELS, SETTLE, id_floor};
use crate::{
    AffiliateInput, ApiKey, Balance, CatalogInput, ClickFacts, ClickRow, ClickSink, ClickWritten,
    ConversionFilter, ConversionRow, KeyScope, LinkInput, LinkRecord, NewConversion, Notice,
    Payout, PayoutLine, ProgramInput, Recorded, ReportQuery, ReportRow, SaveMode, Store,
    StoreError, StoreFuture, User, UserInput,
};

use crate::common::{
    CONVERSION_SELECT, LINK_SELECT, LinkColumns, Named, PAYOUT_SELECT, SETTINGS_SELECT,
    SettingsColumns, USER_SELECT, affiliate_of, corrupt, now_micros, program_of, role_of, scope_of,
    slug_of, status_of, ulid_of,
};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The advisory lock (one `bigint` key) that rollup maintenance holds
/// exclusively and click batches hold shared.
const ROLLUP_LOCK: i64 = 0x636c_6963_6b77_6172; // "clickwar"
/// The class (first `int4` key) of the per-(link, visitor) dedup locks.
const DEDUP_LOCK_CLASS: i32 = 0x6377; // "cw"

/// The NOTIFY channel of catalogue changes (payload: the new version).
pub const CATALOG_CHANNEL: &str = "clickward_catalog";
/// The NOTIFY channel of live events (payload: the publisher's JSON).
pub const EVENTS_CHANNEL: &str = "clickward_events";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message ("duplicate key value violates …") is the
        // useful part; tokio-postgres' Display says only "db error".
        match e.as_db_error() {
            Some(db) => StoreError::Postgres(format!("{} ({})", db.message(), db.code().code())),
            None => StoreError::Postgres(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Postgres(format!("connection pool: {e}"))
    }
}

/// How to connect to PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections kept in the pool.
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self { pool_size: 16 }
    }
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    notices: broadcast::Sender<Notice>,
    listening: Arc<std::sync::atomic::AtomicBool>,
}

type Args = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Appends a parameter and returns its placeholder (`$n`).
fn bind(args: &mut Args, v: impl ToSql + Sync + Send + 'static) -> String {
    args.push(Box::new(v));
    format!("${}", args.len())
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db?…`), brings the
    /// schema up to date and opens the pool.
    ///
    /// # Errors
    /// [`StoreError::Migration`] when the database holds migrations this
    /// binary does not know (a newer clickward wrote it) or one fails;
    /// [`StoreError::Postgres`] when the URL is malformed or the server
    /// cannot be reached.
    pub async fn connect(url: &str, opts: &PgOptions) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Postgres(format!("storage.url: {e}")))?;
        Self::connect_with(config, opts).await
    }

    /// [`PgStore::connect`] with a parsed configuration (tests use it to put
    /// each test in its own schema through `options`).
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    pub async fn connect_with(
        config: tokio_postgres::Config,
        opts: &PgOptions,
    ) -> Result<Self, StoreError> {
        let (mut client, conn) = config.connect(NoTls).await?;
        let driver = tokio::spawn(conn);
        let migrated = embedded::migrations::runner()
            .set_abort_missing(true)
            .set_abort_divergent(true)
            .run_async(&mut client)
            .await
            .map_err(|e| {
                StoreError::Migration(format!(
                    "{e} (a database written by a newer clickward cannot be opened by this one)"
                ))
            });
        drop(client);
        let _ = driver.await;
        migrated?;
        let mgr = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(2))
            .build()
            .map_err(|e| StoreError::Postgres(format!("connection pool: {e}")))?;
        let (notices, _) = broadcast::channel(4096);
        Ok(Self {
            pool,
            config,
            notices,
            listening: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// Starts (once) a task holding a dedicated connection that LISTENs on
    /// [`CATALOG_CHANNEL`] and [`EVENTS_CHANNEL`] and passes every
    /// notification to [`Store::subscribe`]rs. It reconnects with backoff;
    /// after a reconnect it sends a `Notice` on the catalogue channel with an
    /// empty payload, since changes may have been missed meanwhile.
    pub fn listen(&self) {
        if self
            .listening
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let config = self.config.clone();
        let tx = self.notices.clone();
        let weak = Arc::downgrade(&self.listening);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            while weak.upgrade().is_some() {
                match listen_once(&config, &tx).await {
                    Ok(()) => delay = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!("LISTEN connection lost, reconnecting in {delay:?}: {e}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// One LISTEN session: returns when the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    tx: &broadcast::Sender<Notice>,
) -> Result<(), StoreError> {
    use futures::StreamExt;
    let (client, mut conn) = config.connect(NoTls).await?;
    let (msgs_tx, mut msgs) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if msgs_tx.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(StoreError::from(e)),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!(
            "LISTEN {CATALOG_CHANNEL}; LISTEN {EVENTS_CHANNEL}"
        ))
        .await?;
    // Whatever changed while no one listened.
    let _ = tx.send(Notice {
        channel: CATALOG_CHANNEL.to_owned(),
        payload: String::new(),
    });
    while let Some(n) = msgs.recv().await {
        let _ = tx.send(Notice {
            channel: n.channel().to_owned(),
            payload: n.payload().to_owned(),
        });
    }
    drop(client);
    driver.await.map_err(|e| StoreError::Task(e.to_string()))?
}

fn link_from(row: &Row) -> Result<LinkRecord, StoreError> {
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
    }
    .record()
}

async fn save_named(
    c: &impl GenericClient,
    which: Named,
    slug: &Slug,
    name: &str,
    status: Status,
    mode: SaveMode,
) -> Result<(), StoreError> {
    let now = now_micros();
    let table = which.table();
    let what = || format!("{} {:?}", which.kind(), slug.as_str());
    // The row lock (or the unique index, for two creates) settles races
    // between nodes saving the same slug.
    let exists = c
        .query_opt(
            &format!("SELECT 1 FROM {table} WHERE slug = $1 FOR UPDATE"),
            &[&slug.as_str()],
        )
        .await?
        .is_some();
    match (mode, exists) {
        (SaveMode::Create, true) => return Err(StoreError::Conflict(what())),
        (SaveMode::Update, false) => return Err(StoreError::NotFound(what())),
        _ => {}
    }
    if exists {
        c.execute(
            &format!(
                "UPDATE {table} SET name = $2, status = $3, updated_at = $4 WHERE slug = $1 \
                 AND (name IS DISTINCT FROM $2 OR status IS DISTINCT FROM $3)"
            ),
            &[&slug.as_str(), &name, &status.as_str(), &now],
        )
        .await?;
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
    }
    Ok(())
}

async fn save_program_tx(
    c: &impl GenericClient,
    p: &ProgramInput,
    mode: SaveMode,
) -> Result<(), StoreError> {
    save_named(c, Named::Programs, &p.slug, &p.name, p.status, mode).await?;
    if let Some(settings) = &p.settings {
        save_program_settings(c, p.slug.as_str(), settings).await?;
    }
    Ok(())
}

async fn named_rows(
    c: &impl GenericClient,
    which: Named,
    slug: Option<&Slug>,
) -> Result<Vec<(i64, Slug, String, Status)>, StoreError> {
    let table = which.table();
    let rows = match slug {
        Some(s) => {
            c.query(
                &format!("SELECT id, slug, name, status FROM {table} WHERE slug = $1"),
                &[&s.as_str()],
            )
            .await?
        }
        None => {
            c.query(
                &format!("SELECT id, slug, name, status FROM {table} ORDER BY slug"),
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

async fn id_of(c: &impl GenericClient, which: Named, slug: &str) -> Result<i64, StoreError> {
    let table = which.table();
    let row = c
        .query_opt(&format!("SELECT id FROM {table} WHERE slug = $1"), &[&slug])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("{} {slug:?}", which.kind())))?;
    Ok(row.try_get(0)?)
}

async fn save_link_tx(
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
    let exists = c
        .query_opt(
            "SELECT 1 FROM links WHERE code = $1 FOR UPDATE",
            &[&l.code.as_str()],
        )
        .await?
        .is_some();
    let what = || format!("link {:?}", l.code.as_str());
    match (mode, exists) {
        (SaveMode::Create, true) => return Err(StoreError::Conflict(what())),
        (SaveMode::Update, false) => return Err(StoreError::NotFound(what())),
        _ => {}
    }
    let utm = serde_json::to_string(&l.utm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let redirect = l.redirect.map(|r| i32::from(r.code()));
    if exists {
        c.execute(
            "UPDATE links SET program_id = $2, affiliate_id = $3, destination = $4, redirect = $5, \
             utm = $6, status = $7, updated_at = $8 WHERE code = $1 AND (program_id IS DISTINCT FROM $2 \
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
            ],
        )
        .await?;
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
    }
    Ok(())
}

async fn get_link_c(c: &impl GenericClient, code: &str) -> Result<LinkRecord, StoreError> {
    match c
        .query_opt(&format!("{LINK_SELECT} WHERE l.code = $1"), &[&code])
        .await?
    {
        Some(r) => link_from(&r),
        None => Err(StoreError::NotFound(format!("link {code:?}"))),
    }
}

const CLICK_SELECT: &str = "SELECT c.click_id, c.ts, l.code, p.slug, a.slug, c.src, c.sub1, c.sub2, \
     c.sub3, c.sub4, c.sub5, c.referrer, c.device, c.os, c.browser, c.bot_reason, c.invalid_reason, \
     c.country, c.region, c.city, c.visitor_key, c.is_unique FROM clicks c \
     JOIN links l ON l.id = c.link_id JOIN programs p ON p.id = c.program_id \
     LEFT JOIN affiliates a ON a.id = c.affiliate_id";

fn click_from(r: &Row) -> Result<ClickRow, StoreError> {
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
    })
}

async fn watermark(c: &impl GenericClient) -> Result<Micros, StoreError> {
    let r = c
        .query_one("SELECT value FROM meta WHERE key = 'rollup_watermark'", &[])
        .await?;
    Ok(r.try_get(0)?)
}

/// Click counts of one rollup group: `[gross, bot, invalid, unique]`.
type Counts = [i64; 4];

/// Writes a batch of clicks (see [`Store::write_clicks`]) inside `tx`.
async fn insert_clicks(
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
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[(&NewClick, bool)],
) -> Result<(), StoreError> {
    let n = rows.len();
    let mut id = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut link = Vec::with_capacity(n);
    let mut program = Vec::with_capacity(n);
    let mut affiliate = Vec::with_capacity(n);
    let mut text: [Vec<Option<String>>; 14] = Default::default();
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
    ] = &text;
    tx.execute(
        "INSERT INTO clicks (click_id, ts, link_id, program_id, affiliate_id, src, sub1, sub2, sub3, \
         sub4, sub5, referrer, device, os, browser, bot_reason, country, region, city, visitor_key, \
         is_unique, referrer_host) \
         SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
         $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], \
         $20::bytea[], $21::bool[], $22::text[]) ON CONFLICT (click_id) DO NOTHING",
        &[
            &id, &ts, &link, &program, &affiliate, src, s1, s2, s3, s4, s5, referrer, device, os,
            browser, bot, country, region, city, &vk, &uniq, &hosts,
        ],
    )
    .await?;
    Ok(())
}

fn add_counts(into: &mut Counts, k: &Counts) {
    for (a, v) in into.iter_mut().zip(k) {
        *a += v;
    }
}

/// Adds clicks whose bucket is already rolled up to its rollup rows.
async fn add_late(
    tx: &tokio_postgres::Transaction<'_>,
    late: &[(&NewClick, bool)],
) -> Result<(), StoreError> {
    let mut link: BTreeMap<(i64, i64, i64, i64), Counts> = BTreeMap::new();
    let mut src: BTreeMap<(i64, String), Counts> = BTreeMap::new();
    let mut geo: BTreeMap<(i64, String, String), Counts> = BTreeMap::new();
    for (c, unique) in late {
        let b = plan::floor(c.ts);
        let k: Counts = [1, i64::from(c.bot.is_some()), 0, i64::from(*unique)];
        let add = |into: &mut Counts| {
            for (a, v) in into.iter_mut().zip(k) {
                *a += v;
            }
        };
        add(link
            .entry((c.link_id, b, c.program_id, c.affiliate_id.unwrap_or(0)))
            .or_default());
        add(src
            .entry((b, c.params.src.clone().unwrap_or_default()))
            .or_default());
        add(geo
            .entry((
                b,
                c.country.clone().unwrap_or_default(),
                c.device.as_str().to_owned(),
            ))
            .or_default());
    }
    const ADD: &str = "gross = t.gross + excluded.gross, bot = t.bot + excluded.bot, \
         invalid = t.invalid + excluded.invalid, uniq = t.uniq + excluded.uniq";
    // Every level gets the clicks: 15-minute rows and the hour and day
    // rows above them.
    for (suffix, width) in LEVELS {
        let at = |b: i64| b - b.rem_euclid(width);
        let mut l2: BTreeMap<(i64, i64, i64, i64), Counts> = BTreeMap::new();
        for ((l, b, p, a), k) in &link {
            add_counts(l2.entry((*l, at(*b), *p, *a)).or_default(), k);
        }
        let mut s2: BTreeMap<(i64, &str), Counts> = BTreeMap::new();
        for ((b, src), k) in &src {
            add_counts(s2.entry((at(*b), src.as_str())).or_default(), k);
        }
        let mut g2: BTreeMap<(i64, &str, &str), Counts> = BTreeMap::new();
        for ((b, country, device), k) in &geo {
            add_counts(
                g2.entry((at(*b), country.as_str(), device.as_str()))
                    .or_default(),
                k,
            );
        }
        for ((l, b, p, a), k) in l2 {
            tx.execute(
                &format!(
                    "INSERT INTO rollup_link{suffix} AS t (link_id, bucket, program_id, affiliate_key, \
                     gross, bot, invalid, uniq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (link_id, bucket, program_id, affiliate_key) DO UPDATE SET {ADD}"
                ),
                &[&l, &b, &p, &a, &k[0], &k[1], &k[2], &k[3]],
            )
            .await?;
        }
        for ((b, src), k) in s2 {
            tx.execute(
                &format!(
                    "INSERT INTO rollup_src{suffix} AS t (bucket, src, gross, bot, invalid, uniq) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (bucket, src) DO UPDATE SET {ADD}"
                ),
                &[&b, &src, &k[0], &k[1], &k[2], &k[3]],
            )
            .await?;
        }
        for ((b, country, device), k) in g2 {
            tx.execute(
                &format!(
                    "INSERT INTO rollup_geo{suffix} AS t (bucket, country, device, gross, bot, invalid, uniq) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (bucket, country, device) DO UPDATE SET {ADD}"
                ),
                &[&b, &country, &device, &k[0], &k[1], &k[2], &k[3]],
            )
            .await?;
        }
    }
    Ok(())
}

/// Replaces the click rollup rows of `[s, e)` (bucket aligned) from the raw
/// clicks, inside the caller's transaction (which holds [`ROLLUP_LOCK`]).
async fn replace_rollups(
    tx: &tokio_postgres::Transaction<'_>,
    s: Micros,
    e: Micros,
) -> Result<(), StoreError> {
    for t in ["rollup_link", "rollup_src", "rollup_geo"] {
        tx.execute(
            &format!("DELETE FROM {t} WHERE bucket >= $1 AND bucket < $2"),
            &[&s, &e],
        )
        .await?;
    }
    let range = "FROM clicks WHERE click_id >= $1 AND click_id < $2 AND ts >= $3 AND ts < $4";
    let metrics = "COUNT(*), COUNT(bot_reason), COUNT(invalid_reason), \
         COALESCE(SUM(is_unique::int), 0)::int8";
    let bucket = format!("(ts / {BUCKET}) * {BUCKET}");
    let (sid, eid) = (id_floor(s), id_floor(e));
    for sql in [
        format!(
            "INSERT INTO rollup_link (link_id, bucket, program_id, affiliate_key, gross, bot, invalid, uniq) \
             SELECT link_id, {bucket}, program_id, COALESCE(affiliate_id, 0), {metrics} {range} \
             GROUP BY 1, 2, 3, 4"
        ),
        format!(
            "INSERT INTO rollup_src (bucket, src, gross, bot, invalid, uniq) \
             SELECT {bucket}, COALESCE(src, ''), {metrics} {range} GROUP BY 1, 2"
        ),
        format!(
            "INSERT INTO rollup_geo (bucket, country, device, gross, bot, invalid, uniq) \
             SELECT {bucket}, COALESCE(country, ''), device, {metrics} {range} GROUP BY 1, 2, 3"
        ),
    ] {
        tx.execute(&sql, &[&sid, &eid, &s, &e]).await?;
    }
    // The hour and day rows over the range, summed again from the level
    // below (whole hours and days: the range is widened to them).
    for pair in LEVELS.windows(2) {
        let ((fine, _), (coarse, w)) = (pair[0], pair[1]);
        let (cs, ce) = (s - s.rem_euclid(w), e + (w - e.rem_euclid(w)) % w);
        let b = format!("bucket - bucket % {w}");
        for (t, keys, group) in [
            (
                "rollup_link",
                "link_id, bucket, program_id, affiliate_key",
                "link_id, 2, program_id, affiliate_key",
            ),
            ("rollup_src", "bucket, src", "1, src"),
            (
                "rollup_geo",
                "bucket, country, device",
                "1, country, device",
            ),
        ] {
            tx.execute(
                &format!("DELETE FROM {t}{coarse} WHERE bucket >= $1 AND bucket < $2"),
                &[&cs, &ce],
            )
            .await?;
            let select = keys.replace("bucket", &b);
            tx.execute(
                &format!(
                    "INSERT INTO {t}{coarse} ({keys}, gross, bot, invalid, uniq) \
                     SELECT {select}, SUM(gross)::int8, SUM(bot)::int8, SUM(invalid)::int8, SUM(uniq)::int8 \
                     FROM {t}{fine} WHERE bucket >= $1 AND bucket < $2 GROUP BY {group}"
                ),
                &[&cs, &ce],
            )
            .await?;
        }
    }
    Ok(())
}

/// `unnest(…) AS b(label, sid, eid, s, e)` over report buckets, its
/// parameters appended to `args`.
fn bucket_table(buckets: &[Bucket], args: &mut Args) -> String {
    let labels: Vec<String> = buckets.iter().map(|b| b.label.clone()).collect();
    let sids: Vec<Vec<u8>> = buckets.iter().map(|b| id_floor(b.start)).collect();
    let eids: Vec<Vec<u8>> = buckets.iter().map(|b| id_floor(b.end)).collect();
    let s: Vec<i64> = buckets.iter().map(|b| b.start).collect();
    let e: Vec<i64> = buckets.iter().map(|b| b.end).collect();
    format!(
        "unnest({}::text[], {}::bytea[], {}::bytea[], {}::int8[], {}::int8[]) AS b(label, sid, eid, s, e)",
        bind(args, labels),
        bind(args, sids),
        bind(args, eids),
        bind(args, s),
        bind(args, e)
    )
}

/// `WHERE a = $n AND …` for equality filters (time filters are the range).
fn filter_sql(
    filters: &[(Dimension, String)],
    column: impl Fn(Dimension) -> &'static str,
    args: &mut Args,
) -> String {
    let mut parts = Vec::new();
    for (d, v) in filters {
        if matches!(d, Dimension::Time(_)) {
            continue;
        }
        let p = bind(args, v.clone());
        parts.push(format!("{} = {p}", column(*d)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", parts.join(" AND "))
    }
}

fn select_and_group(cols: &[&str], extra: usize) -> (String, String) {
    let select = if cols.is_empty() {
        String::new()
    } else {
        format!("{}, ", cols.join(", "))
    };
    let n: Vec<String> = (1..=cols.len() + extra).map(|i| i.to_string()).collect();
    let group = if n.is_empty() {
        String::new()
    } else {
        format!("GROUP BY {}", n.join(", "))
    };
    (select, group)
}

fn counts_of(
    rows: Vec<Row>,
    n: usize,
) -> Result<BTreeMap<Vec<Option<String>>, ClickCounts>, StoreError> {
    let mut out = BTreeMap::new();
    for r in rows {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(r.try_get::<_, Option<String>>(i)?);
        }
        let counts = ClickCounts {
            gross_clicks: r.try_get(n)?,
            bot_clicks: r.try_get(n + 1)?,
            invalid_clicks: r.try_get(n + 2)?,
            unique_clicks: r.try_get(n + 3)?,
        };
        if counts.gross_clicks > 0 {
            out.insert(keys, counts);
        }
    }
    Ok(out)
}

async fn raw_counts(
    c: &impl GenericClient,
    buckets: &[Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
) -> Result<BTreeMap<Vec<Option<String>>, ClickCounts>, StoreError> {
    if buckets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = Args::new();
    let b = bucket_table(buckets, &mut args);
    let cols: Vec<&str> = dims.iter().map(|d| plan::dim_column(*d)).collect();
    let (select, group) = select_and_group(&cols, 0);
    let where_ = filter_sql(filters, plan::dim_column, &mut args);
    let sql = format!(
        "SELECT {select} COUNT(*), COUNT(c.bot_reason), COUNT(c.invalid_reason), \
         COALESCE(SUM(c.is_unique::int), 0)::int8 \
         FROM {b} JOIN clicks c ON c.click_id >= b.sid AND c.click_id < b.eid \
         AND c.ts >= b.s AND c.ts < b.e \
         JOIN links l ON l.id = c.link_id JOIN programs p ON p.id = c.program_id \
         LEFT JOIN affiliates a ON a.id = c.affiliate_id {where_} {group}"
    );
    counts_of(c.query(&sql, &refs(&args)).await?, dims.len())
}

/// A rollup's column for a report dimension.
fn rollup_column(d: Dimension) -> &'static str {
    match d {
        Dimension::Time(_) => "b.label",
        Dimension::Link => "l.code",
        Dimension::Program => "p.slug",
        Dimension::Affiliate => "a.slug",
        Dimension::Src => "NULLIF(r.src, '')",
        Dimension::Country => "NULLIF(r.country, '')",
        Dimension::Device => "NULLIF(r.device, '')",
        // `Cube::pick` never picks a rollup for other dimensions.
        _ => "NULL::text",
    }
}

/// Click counts from the rollup level `suffix` of `cube`: `buckets` are that
/// level's row buckets (start = the rows' `bucket`), labelled with the report
/// bucket they belong to.
async fn rollup_counts(
    c: &impl GenericClient,
    cube: Cube,
    suffix: &str,
    buckets: &[Bucket],
    dims: &[Dimension],
    filters: &[(Dimension, String)],
) -> Result<BTreeMap<Vec<Option<String>>, ClickCounts>, StoreError> {
    if buckets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = Args::new();
    let b = bucket_table(buckets, &mut args);
    let cols: Vec<&str> = dims.iter().map(|d| rollup_column(*d)).collect();
    let (select, group) = select_and_group(&cols, 0);
    let where_ = filter_sql(filters, rollup_column, &mut args);
    let (table, joins) = match cube {
        Cube::Link => (
            "rollup_link",
            "JOIN links l ON l.id = r.link_id JOIN programs p ON p.id = r.program_id \
             LEFT JOIN affiliates a ON a.id = r.affiliate_key",
        ),
        Cube::Src => ("rollup_src", ""),
        Cube::Geo => ("rollup_geo", ""),
    };
    let sql = format!(
        "SELECT {select} COALESCE(SUM(r.gross), 0)::int8, COALESCE(SUM(r.bot), 0)::int8, \
         COALESCE(SUM(r.invalid), 0)::int8, COALESCE(SUM(r.uniq), 0)::int8 \
         FROM {b} JOIN {table}{suffix} r ON r.bucket = b.s {joins} {where_} {group}"
    );
    counts_of(c.query(&sql, &refs(&args)).await?, dims.len())
}

/// Conversion totals grouped from the conversion rows.
async fn raw_money(
    c: &impl GenericClient,
    q: &ReportQuery,
    buckets: &[Bucket],
) -> Result<Vec<plan::MoneyRow>, StoreError> {
    if buckets.is_empty() {
        return Ok(Vec::new());
    }
    let n = q.dims.len();
    let mut args = Args::new();
    let b = bucket_table(buckets, &mut args);
    let cols: Vec<&str> = q
        .dims
        .iter()
        .map(|d| plan::conversion_dim_column(*d))
        .collect();
    let (select, group) = select_and_group(&cols, 1);
    let where_ = filter_sql(&q.filters, plan::conversion_dim_column, &mut args);
    let t = if q.by_click_time {
        "(v.occurred_at - COALESCE(v.ctit_us, 0))"
    } else {
        "v.occurred_at"
    };
    let uses = |d: Dimension| q.dims.contains(&d) || q.filters.iter().any(|(f, _)| *f == d);
    let mut joins = String::new();
    if uses(Dimension::Program) {
        joins.push_str(" JOIN programs p ON p.id = v.program_id");
    }
    if uses(Dimension::Link) {
        joins.push_str(" LEFT JOIN links l ON l.id = v.link_id");
    }
    if uses(Dimension::Affiliate) {
        joins.push_str(" LEFT JOIN affiliates a ON a.id = v.affiliate_id");
    }
    let sql = format!(
        "SELECT {select} v.currency, COUNT(*), COALESCE(SUM(v.amount), 0)::int8, \
         COALESCE(SUM(v.commission), 0)::int8 \
         FROM {b} JOIN conversions v ON {t} >= b.s AND {t} < b.e \
         AND v.status IN ('pending', 'approved', 'paid') {joins} {where_} {group}"
    );
    let mut out = Vec::new();
    for r in c.query(&sql, &refs(&args)).await? {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(r.try_get::<_, Option<String>>(i)?);
        }
        out.push((
            keys,
            r.try_get(n)?,
            [r.try_get(n + 1)?, r.try_get(n + 2)?, r.try_get(n + 3)?],
        ));
    }
    Ok(out)
}

async fn report(c: &impl GenericClient, q: &ReportQuery) -> Result<Vec<ReportRow>, StoreError> {
    let buckets = q.buckets.clone().unwrap_or_else(|| {
        vec![Bucket {
            label: String::new(),
            start: q.start,
            end: q.end,
        }]
    });
    let w = watermark(c).await?;
    let needed: Vec<Dimension> = q
        .dims
        .iter()
        .copied()
        .chain(q.filters.iter().map(|(d, _)| *d))
        .collect();
    let planned = match (q.raw_only, Cube::pick(&needed)) {
        (false, Some(cube)) => plan::split(&buckets, w).map(|parts| (cube, parts)),
        _ => None,
    };
    let counts = match planned {
        Some((cube, (rolled, raw))) => {
            // Each rolled bucket tiled with the coarsest rows that fit, and
            // each tile cut into its rows' buckets (with the report bucket's
            // label): rows then join their bucket by equality, a hash join,
            // instead of one index range scan per tile.
            let mut tiles: [Vec<Bucket>; 3] = Default::default();
            for b in &rolled {
                for (level, from, to) in plan::tile(b.start, b.end) {
                    let width = LEVELS[level].1;
                    let mut t = from;
                    while t < to {
                        tiles[level].push(Bucket {
                            label: b.label.clone(),
                            start: t,
                            end: t + width,
                        });
                        t += width;
                    }
                }
            }
            let mut counts = BTreeMap::new();
            for (level, (suffix, _)) in LEVELS.iter().enumerate() {
                let part =
                    rollup_counts(c, cube, suffix, &tiles[level], &q.dims, &q.filters).await?;
                for (k, v) in part {
                    counts.entry(k).or_insert_with(ClickCounts::default).add(&v);
                }
            }
            for (k, v) in raw_counts(c, &raw, &q.dims, &q.filters).await? {
                counts.entry(k).or_default().add(&v);
            }
            counts
        }
        None => raw_counts(c, &buckets, &q.dims, &q.filters).await?,
    };
    let money = raw_money(c, q, &buckets).await?;
    Ok(plan::assemble(counts, money))
}

async fn program_settings(
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
    }
    .settings()
}

async fn save_program_settings(
    c: &impl GenericClient,
    slug: &str,
    s: &ProgramSettings,
) -> Result<(), StoreError> {
    let plan =
        serde_json::to_string(&s.commission).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let ips =
        serde_json::to_string(&s.postback_ips).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let n = c
        .execute(
            "UPDATE programs SET currency = $2, cookie_window_s = $3, attribution_window_s = $4, \
             attribution = $5, commission = $6, hold_s = $7, \
             postback_token = COALESCE($8, postback_token), \
             postback_secret = COALESCE($9, postback_secret), \
             postback_ips = $10, click_id_param = $11, min_payout = $12, updated_at = $13 WHERE slug = $1",
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
            ],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("program {slug:?}")));
    }
    Ok(())
}

async fn save_affiliate_commission(
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

fn conversion_from(r: &Row) -> Result<ConversionRow, StoreError> {
    let status: String = r.try_get(16)?;
    Ok(ConversionRow {
        conversion_id: ConversionId(ulid_of(r.try_get(0)?, "conversion_id")?),
        program: r.try_get(1)?,
        event: r.try_get(2)?,
        order_id: r.try_get(3)?,
        click_id: r
            .try_get::<_, Option<Vec<u8>>>(4)?
            .map(|b| ulid_of(b, "click_id").map(ClickId))
            .transpose()?,
        link: r.try_get(5)?,
        affiliate: r.try_get(6)?,
        src: r.try_get(7)?,
        subs: [
            r.try_get(8)?,
            r.try_get(9)?,
            r.try_get(10)?,
            r.try_get(11)?,
            r.try_get(12)?,
        ],
        amount_minor: r.try_get(13)?,
        commission_minor: r.try_get(14)?,
        currency: r.try_get(15)?,
        status: ConversionStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        occurred_at: r.try_get(17)?,
        received_at: r.try_get(18)?,
        ctit_us: r.try_get(19)?,
        attributed_by: r.try_get(20)?,
        adv_subs: [
            r.try_get(21)?,
            r.try_get(22)?,
            r.try_get(23)?,
            r.try_get(24)?,
            r.try_get(25)?,
        ],
        fingerprint: r.try_get(26)?,
    })
}

async fn get_conversion(
    c: &impl GenericClient,
    id: ConversionId,
) -> Result<ConversionRow, StoreError> {
    match c
        .query_opt(
            &format!("{CONVERSION_SELECT} WHERE v.conversion_id = $1"),
            &[&id.0.to_bytes().as_slice()],
        )
        .await?
    {
        Some(r) => conversion_from(&r),
        None => Err(StoreError::NotFound(format!("conversion {id}"))),
    }
}

/// Who and why of a set of ledger entries for one conversion.
struct Posting<'a> {
    conversion: Option<i64>,
    payout: Option<i64>,
    affiliate: Option<i64>,
    currency: &'a str,
    kind: &'a str,
    actor: &'a str,
    reason: Option<&'a str>,
}

async fn append_entries(
    c: &impl GenericClient,
    p: &Posting<'_>,
    entries: &[(LedgerBucket, i64)],
) -> Result<(), StoreError> {
    let now = now_micros();
    for (bucket, amount) in entries {
        c.execute(
            "INSERT INTO ledger (conversion_id, payout_id, affiliate_id, currency, bucket, amount, kind, \
             actor, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &p.conversion,
                &p.payout,
                &p.affiliate,
                &p.currency,
                &bucket.as_str(),
                amount,
                &p.kind,
                &p.actor,
                &p.reason,
                &now,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn existing_conversion(
    c: &impl GenericClient,
    v: &NewConversion,
) -> Result<Option<Recorded>, StoreError> {
    let Some(r) = c
        .query_opt(
            "SELECT conversion_id FROM conversions WHERE program_id = $1 AND event = $2 AND order_id = $3",
            &[&v.program_id, &v.event, &v.order_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let row = get_conversion(c, ConversionId(ulid_of(r.try_get(0)?, "conversion_id")?)).await?;
    Ok(Some(if row.fingerprint == v.fingerprint {
        Recorded::Replay(row)
    } else {
        Recorded::Conflict(row)
    }))
}

async fn record_conversion(
    c: &impl GenericClient,
    v: &NewConversion,
) -> Result<Recorded, StoreError> {
    if let Some(found) = existing_conversion(c, v).await? {
        return Ok(found);
    }
    let (facts, ctit, by) = match &v.click {
        Some((f, ctit, by)) => (Some(f), Some(*ctit), Some(*by)),
        None => (None, None, None),
    };
    let sub = |i: usize| facts.and_then(|f| f.subs[i].clone());
    // Two nodes taking the same order at once: the unique index makes one
    // insert wait for the other and then do nothing.
    let inserted = c
        .query_opt(
            "INSERT INTO conversions (conversion_id, program_id, event, order_id, click_id, link_id, \
             affiliate_id, src, sub1, sub2, sub3, sub4, sub5, amount, currency, commission, status, \
             occurred_at, received_at, ctit_us, attributed_by, adv_sub1, adv_sub2, adv_sub3, adv_sub4, \
             adv_sub5, fingerprint, country, device, browser, os, referrer_host) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
             $20, $21, $22, $23, $24, $25, $26, $27, k.country, k.device, k.browser, k.os, k.referrer_host \
             FROM (SELECT 1) AS one LEFT JOIN clicks k ON k.click_id = $5 \
             ON CONFLICT (program_id, event, order_id) DO NOTHING RETURNING id",
            &[
                &v.conversion_id.0.to_bytes().as_slice(),
                &v.program_id,
                &v.event,
                &v.order_id,
                &facts.map(|f| f.click_id.to_bytes().to_vec()),
                &facts.map(|f| f.link_id),
                &facts.and_then(|f| f.affiliate_id),
                &facts.and_then(|f| f.src.clone()),
                &sub(0),
                &sub(1),
                &sub(2),
                &sub(3),
                &sub(4),
                &v.amount,
                &v.currency.code(),
                &v.commission,
                &v.status.as_str(),
                &v.occurred_at,
                &v.received_at,
                &ctit,
                &by,
                &v.adv_subs[0],
                &v.adv_subs[1],
                &v.adv_subs[2],
                &v.adv_subs[3],
                &v.adv_subs[4],
                &v.fingerprint.as_slice(),
            ],
        )
        .await?;
    let Some(inserted) = inserted else {
        return existing_conversion(c, v)
            .await?
            .ok_or_else(|| StoreError::Corrupt("conflicting conversion vanished".to_owned()));
    };
    let id: i64 = inserted.try_get(0)?;
    let mut entries = conversion::created(v.commission);
    if v.status == ConversionStatus::Approved {
        entries.extend(
            conversion::transition(
                ConversionStatus::Pending,
                ConversionStatus::Approved,
                v.commission,
            )
            .map_err(|e| StoreError::Conflict(e.to_string()))?,
        );
    }
    let posting = Posting {
        conversion: Some(id),
        payout: None,
        affiliate: facts.and_then(|f| f.affiliate_id),
        currency: v.currency.code(),
        kind: "created",
        actor: &v.actor,
        reason: None,
    };
    append_entries(c, &posting, &entries).await?;
    Ok(Recorded::Created(get_conversion(c, v.conversion_id).await?))
}

async fn set_status(
    c: &impl GenericClient,
    id: ConversionId,
    to: ConversionStatus,
    actor: &str,
    reason: Option<&str>,
) -> Result<ConversionRow, StoreError> {
    // The row lock serializes two nodes changing the same conversion.
    let r = c
        .query_opt(
            "SELECT id, status, commission, affiliate_id, currency FROM conversions \
             WHERE conversion_id = $1 FOR UPDATE",
            &[&id.0.to_bytes().as_slice()],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("conversion {id}")))?;
    let rowid: i64 = r.try_get(0)?;
    let from: String = r.try_get(1)?;
    let commission: i64 = r.try_get(2)?;
    let affiliate: Option<i64> = r.try_get(3)?;
    let currency: String = r.try_get(4)?;
    let from = ConversionStatus::parse(&from).ok_or_else(|| corrupt("status", &from))?;
    let entries = conversion::transition(from, to, commission)
        .map_err(|e| StoreError::Conflict(e.to_string()))?;
    c.execute(
        "UPDATE conversions SET status = $2 WHERE id = $1",
        &[&rowid, &to.as_str()],
    )
    .await?;
    let posting = Posting {
        conversion: Some(rowid),
        payout: None,
        affiliate,
        currency: &currency,
        kind: to.as_str(),
        actor,
        reason,
    };
    append_entries(c, &posting, &entries).await?;
    get_conversion(c, id).await
}

async fn payout_preview(
    c: &impl GenericClient,
    affiliate: &str,
) -> Result<Vec<PayoutLine>, StoreError> {
    let aid = id_of(c, Named::Affiliates, affiliate).await?;
    let rows = c
        .query(
            "SELECT p.slug, l.currency, SUM(l.amount)::int8, MIN(p.min_payout) FROM ledger l \
             JOIN conversions v ON v.id = l.conversion_id JOIN programs p ON p.id = v.program_id \
             WHERE l.affiliate_id = $1 AND l.bucket = 'payable' GROUP BY p.id, p.slug, l.currency \
             ORDER BY p.slug, l.currency",
            &[&aid],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let payable: i64 = r.try_get(2)?;
        let min: i64 = r.try_get(3)?;
        out.push(PayoutLine {
            program: r.try_get(0)?,
            currency: r.try_get(1)?,
            payable_minor: payable,
            min_payout_minor: min,
            eligible: payable > 0 && payable >= min,
        });
    }
    Ok(out)
}

async fn user_where(
    c: &impl GenericClient,
    cond: &str,
    arg: &(dyn ToSql + Sync),
) -> Result<Option<User>, StoreError> {
    c.query_opt(&format!("{USER_SELECT} WHERE {cond}"), &[arg])
        .await?
        .as_ref()
        .map(user_from)
        .transpose()
}

fn user_from(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.try_get(0)?,
        username: r.try_get(1)?,
        role: role_of(&r.try_get::<_, String>(2)?)?,
        affiliate: r.try_get(3)?,
        password_hash: r.try_get(4)?,
        credentials_changed_at: r.try_get(5)?,
    })
}

async fn payout_by_key(c: &impl GenericClient, key: &str) -> Result<Option<Payout>, StoreError> {
    c.query_opt(&format!("{PAYOUT_SELECT} WHERE o.key = $1"), &[&key])
        .await?
        .as_ref()
        .map(payout_from)
        .transpose()
}

fn payout_from(r: &Row) -> Result<Payout, StoreError> {
    Ok(Payout {
        batch_id: ulid_of(r.try_get(0)?, "batch_id")?.to_string(),
        key: r.try_get(1)?,
        affiliate: r.try_get(2)?,
        currency: r.try_get(3)?,
        amount_minor: r.try_get(4)?,
        conversions: r.try_get(5)?,
        created_at: r.try_get(6)?,
        created: false,
    })
}

async fn create_payout(
    c: &impl GenericClient,
    affiliate: &str,
    currency: Currency,
    key: &str,
    batch_id: ulid::Ulid,
    actor: &str,
) -> Result<Payout, StoreError> {
    let aid = id_of(c, Named::Affiliates, affiliate).await?;
    // One payout at a time per affiliate, whichever node runs it.
    c.execute("SELECT 1 FROM affiliates WHERE id = $1 FOR UPDATE", &[&aid])
        .await?;
    if let Some(existing) = payout_by_key(c, key).await? {
        return Ok(existing);
    }
    let now = now_micros();
    let payout_id: i64 = c
        .query_one(
            "INSERT INTO payouts (batch_id, key, affiliate_id, currency, amount, conversions, actor, \
             created_at) VALUES ($1, $2, $3, $4, 0, 0, $5, $6) RETURNING id",
            &[
                &batch_id.to_bytes().as_slice(),
                &key,
                &aid,
                &currency.code(),
                &actor,
                &now,
            ],
        )
        .await?
        .try_get(0)?;
    let eligible: Vec<String> = payout_preview(c, affiliate)
        .await?
        .into_iter()
        .filter(|l| l.eligible && l.currency == currency.code())
        .map(|l| l.program)
        .collect();
    let mut amount = 0i64;
    let mut count = 0i64;
    for program in eligible {
        let approved = c
            .query(
                "SELECT v.id, v.commission FROM conversions v JOIN programs p ON p.id = v.program_id \
                 WHERE p.slug = $1 AND v.affiliate_id = $2 AND v.currency = $3 AND v.status = 'approved' \
                 FOR UPDATE OF v",
                &[&program, &aid, &currency.code()],
            )
            .await?;
        for r in approved {
            let id: i64 = r.try_get(0)?;
            let commission: i64 = r.try_get(1)?;
            let entries = conversion::transition(
                ConversionStatus::Approved,
                ConversionStatus::Paid,
                commission,
            )
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
            c.execute(
                "UPDATE conversions SET status = 'paid' WHERE id = $1",
                &[&id],
            )
            .await?;
            let posting = Posting {
                conversion: Some(id),
                payout: Some(payout_id),
                affiliate: Some(aid),
                currency: currency.code(),
                kind: "paid",
                actor,
                reason: None,
            };
            append_entries(c, &posting, &entries).await?;
            amount += commission;
            count += 1;
        }
        // What is still payable for this program is the clawbacks of
        // reversed paid conversions: net them against this payout.
        let rest: i64 = c
            .query_one(
                "SELECT COALESCE(SUM(l.amount), 0)::int8 FROM ledger l \
                 JOIN conversions v ON v.id = l.conversion_id JOIN programs p ON p.id = v.program_id \
                 WHERE p.slug = $1 AND l.affiliate_id = $2 AND l.currency = $3 AND l.bucket = 'payable'",
                &[&program, &aid, &currency.code()],
            )
            .await?
            .try_get(0)?;
        if rest != 0 {
            let posting = Posting {
                conversion: None,
                payout: Some(payout_id),
                affiliate: Some(aid),
                currency: currency.code(),
                kind: "netted",
                actor,
                reason: None,
            };
            append_entries(
                c,
                &posting,
                &[(LedgerBucket::Payable, -rest), (LedgerBucket::Paid, rest)],
            )
            .await?;
            amount += rest;
        }
    }
    c.execute(
        "UPDATE payouts SET amount = $2, conversions = $3 WHERE id = $1",
        &[&payout_id, &amount, &count],
    )
    .await?;
    let mut p = payout_by_key(c, key)
        .await?
        .ok_or_else(|| StoreError::Corrupt("payout vanished".to_owned()))?;
    p.created = true;
    Ok(p)
}

/// Runs `f` in a transaction on a pooled connection and commits.
macro_rules! in_tx {
    ($this:expr, |$tx:ident| $body:expr) => {{
        let mut client = $this.client().await?;
        let guard = client.transaction().await?;
        let out = {
            let $tx: &tokio_postgres::Transaction<'_> = &guard;
            $body
        };
        guard.commit().await?;
        Ok(out)
    }};
}

impl Store for PgStore {
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

    fn apply_catalog(&self, cat: CatalogInput) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                for p in &cat.programs {
                    save_program_tx(tx, p, SaveMode::Upsert).await?;
                }
                for a in &cat.affiliates {
                    save_named(
                        tx,
                        Named::Affiliates,
                        &a.slug,
                        &a.name,
                        a.status,
                        SaveMode::Upsert,
                    )
                    .await?;
                }
                for l in &cat.links {
                    save_link_tx(tx, l, SaveMode::Upsert).await?;
                }
                for (program, affiliate, plan) in &cat.commissions {
                    save_affiliate_commission(tx, program.as_str(), affiliate.as_str(), Some(plan))
                        .await?;
                }
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

    fn write_clicks(
        &self,
        clicks: Arc<Vec<NewClick>>,
        dedup_window: Micros,
    ) -> StoreFuture<'_, Vec<ClickWritten>> {
        Box::pin(async move { in_tx!(self, |tx| insert_clicks(tx, &clicks, dedup_window).await?) })
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

    fn click_report(&self, q: ReportQuery) -> StoreFuture<'_, Vec<ReportRow>> {
        Box::pin(async move {
            let mut c = self.client().await?;
            // One snapshot: the watermark, the rollups and the raw clicks
            // after it must agree.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let rows = report(&*tx, &q).await?;
            tx.commit().await?;
            Ok(rows)
        })
    }

    fn rollup(&self, start: Micros, end: Micros) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut from = plan::floor(start);
            let end = plan::ceil(end);
            while from < end {
                let to = (from + CHUNK).min(end);
                let r: Result<(), StoreError> = in_tx!(self, |tx| {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
                        .await?;
                    replace_rollups(tx, from, to).await?
                });
                r?;
                from = to;
            }
            Ok(())
        })
    }

    fn advance_rollups(&self, now: Micros) -> StoreFuture<'_, Micros> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                // One node at a time; click batches wait meanwhile, so none
                // lands in a bucket between the aggregate and the watermark.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
                    .await?;
                let stored = watermark(tx).await?;
                let mut w = stored;
                let target = plan::floor(now - SETTLE);
                if w == 0 {
                    // The oldest click by id is the oldest by time (its id
                    // millisecond is its time's).
                    let first = tx
                        .query_opt("SELECT ts FROM clicks ORDER BY click_id LIMIT 1", &[])
                        .await?;
                    if let Some(r) = first {
                        w = plan::floor(r.try_get(0)?);
                    }
                }
                if w != 0 && target > w {
                    let to = target.min(w + CHUNK);
                    replace_rollups(tx, w, to).await?;
                    tx.execute(
                        "UPDATE meta SET value = $1 WHERE key = 'rollup_watermark'",
                        &[&to],
                    )
                    .await?;
                    to
                } else {
                    stored
                }
            })
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
            let c = self.client().await?;
            save_affiliate_commission(&**c, program.as_str(), affiliate.as_str(), plan.as_ref())
                .await
        })
    }

    fn click_facts(&self, id: ClickId) -> StoreFuture<'_, Option<ClickFacts>> {
        Box::pin(async move {
            let c = self.client().await?;
            let Some(r) = c
                .query_opt(
                    "SELECT c.ts, c.link_id, c.program_id, c.affiliate_id, a.status, c.src, c.sub1, \
                     c.sub2, c.sub3, c.sub4, c.sub5 FROM clicks c \
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
            }))
        })
    }

    fn record_conversion(&self, v: NewConversion) -> StoreFuture<'_, Recorded> {
        Box::pin(async move { in_tx!(self, |tx| record_conversion(tx, &v).await?) })
    }

    fn get_conversion(&self, id: ConversionId) -> StoreFuture<'_, ConversionRow> {
        Box::pin(async move {
            let c = self.client().await?;
            get_conversion(&**c, id).await
        })
    }

    fn list_conversions(&self, f: ConversionFilter) -> StoreFuture<'_, Vec<ConversionRow>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(
                &format!(
                    "{CONVERSION_SELECT} WHERE ($1::text IS NULL OR v.status = $1::text) \
                     AND ($2::text IS NULL OR a.slug = $2::text) ORDER BY v.id DESC LIMIT $3"
                ),
                &[
                    &f.status.map(ConversionStatus::as_str),
                    &f.affiliate.as_ref().map(Slug::as_str),
                    &i64::from(f.limit),
                ],
            )
            .await?
            .iter()
            .map(conversion_from)
            .collect()
        })
    }

    fn set_conversion_status(
        &self,
        id: ConversionId,
        to: ConversionStatus,
        actor: String,
        reason: Option<String>,
    ) -> StoreFuture<'_, ConversionRow> {
        Box::pin(async move {
            in_tx!(self, |tx| set_status(tx, id, to, &actor, reason.as_deref())
                .await?)
        })
    }

    fn approve_due(&self, now: Micros) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            in_tx!(self, |tx| {
                // SKIP LOCKED: another node approving the same batch takes
                // the rest instead of waiting.
                let due = tx
                    .query(
                        "SELECT v.conversion_id FROM conversions v JOIN programs p ON p.id = v.program_id \
                         WHERE v.status = 'pending' AND p.hold_s IS NOT NULL \
                         AND v.received_at + p.hold_s * 1000000 <= $1 FOR UPDATE OF v SKIP LOCKED",
                        &[&now],
                    )
                    .await?;
                let n = due.len();
                for r in due {
                    let id = ConversionId(ulid_of(r.try_get(0)?, "conversion_id")?);
                    set_status(
                        tx,
                        id,
                        ConversionStatus::Approved,
                        "auto:hold",
                        Some("hold period passed"),
                    )
                    .await?;
                }
                u64::try_from(n).unwrap_or(0)
            })
        })
    }

    fn balances(&self, affiliate: Option<Slug>) -> StoreFuture<'_, Vec<Balance>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT a.slug, l.currency, l.bucket, SUM(l.amount)::int8 FROM ledger l \
                     LEFT JOIN affiliates a ON a.id = l.affiliate_id \
                     WHERE $1::text IS NULL \
                        OR l.affiliate_id = (SELECT id FROM affiliates WHERE slug = $1::text) \
                     GROUP BY l.affiliate_id, a.slug, l.currency, l.bucket \
                     ORDER BY a.slug NULLS FIRST, l.currency, l.bucket",
                    &[&affiliate.as_ref().map(Slug::as_str)],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let bucket: String = r.try_get(2)?;
                out.push(Balance {
                    affiliate: r.try_get(0)?,
                    currency: r.try_get(1)?,
                    bucket: LedgerBucket::parse(&bucket)
                        .ok_or_else(|| corrupt("bucket", &bucket))?,
                    minor: r.try_get(3)?,
                });
            }
            Ok(out)
        })
    }

    fn payout_preview(&self, affiliate: Slug) -> StoreFuture<'_, Vec<PayoutLine>> {
        Box::pin(async move {
            let c = self.client().await?;
            payout_preview(&**c, affiliate.as_str()).await
        })
    }

    fn create_payout(
        &self,
        affiliate: Slug,
        currency: Currency,
        key: String,
        batch_id: ulid::Ulid,
        actor: String,
    ) -> StoreFuture<'_, Payout> {
        Box::pin(async move {
            in_tx!(self, |tx| create_payout(
                tx,
                affiliate.as_str(),
                currency,
                &key,
                batch_id,
                &actor
            )
            .await?)
        })
    }

    fn idempotent_response(&self, key: String) -> StoreFuture<'_, Option<(Vec<u8>, u16, String)>> {
        Box::pin(async move {
            let c = self.client().await?;
            let Some(r) = c
                .query_opt(
                    "SELECT fingerprint, status, body FROM idempotency_keys WHERE key = $1",
                    &[&key],
                )
                .await?
            else {
                return Ok(None);
            };
            let status: i32 = r.try_get(1)?;
            let status =
                u16::try_from(status).map_err(|_| corrupt("status", &status.to_string()))?;
            Ok(Some((r.try_get(0)?, status, r.try_get(2)?)))
        })
    }

    fn save_idempotent_response(
        &self,
        key: String,
        fingerprint: Vec<u8>,
        status: u16,
        body: String,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
                &[&key, &fingerprint, &i32::from(status), &body, &now_micros()],
            )
            .await?;
            Ok(())
        })
    }

    fn create_api_key(
        &self,
        hash: [u8; 32],
        prefix: String,
        scope: KeyScope,
        label: Option<String>,
    ) -> StoreFuture<'_, ApiKey> {
        Box::pin(async move {
            let c = self.client().await?;
            let id: i64 = c
                .query_one(
                    "INSERT INTO api_keys (prefix, hash, scope, label, created_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &prefix,
                        &hash.as_slice(),
                        &scope.as_str(),
                        &label,
                        &now_micros(),
                    ],
                )
                .await?
                .try_get(0)?;
            Ok(ApiKey {
                id,
                prefix,
                scope,
                label,
            })
        })
    }

    fn find_api_key(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>> {
        Box::pin(async move {
            let c = self.client().await?;
            let Some(r) = c
                .query_opt(
                    "SELECT id, prefix, scope, label FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
                    &[&hash.as_slice()],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(ApiKey {
                id: r.try_get(0)?,
                prefix: r.try_get(1)?,
                scope: scope_of(&r.try_get::<_, String>(2)?)?,
                label: r.try_get(3)?,
            }))
        })
    }

    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(
                "SELECT id, prefix, scope, label FROM api_keys WHERE revoked_at IS NULL ORDER BY id",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ApiKey {
                    id: r.try_get(0)?,
                    prefix: r.try_get(1)?,
                    scope: scope_of(&r.try_get::<_, String>(2)?)?,
                    label: r.try_get(3)?,
                })
            })
            .collect()
        })
    }

    fn revoke_api_key(&self, id: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            let n = c
                .execute(
                    "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &now_micros()],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("API key {id}")));
            }
            Ok(())
        })
    }

    fn list_payouts(&self, affiliate: Option<Slug>, limit: u32) -> StoreFuture<'_, Vec<Payout>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(
                &format!(
                    "{PAYOUT_SELECT} WHERE ($1::text IS NULL OR a.slug = $1::text) \
                     ORDER BY o.id DESC LIMIT $2"
                ),
                &[&affiliate.as_ref().map(Slug::as_str), &i64::from(limit)],
            )
            .await?
            .iter()
            .map(payout_from)
            .collect()
        })
    }

    fn save_user(&self, u: UserInput) -> StoreFuture<'_, User> {
        Box::pin(async move {
            let c = self.client().await?;
            let affiliate_id: Option<i64> = match &u.affiliate {
                Some(slug) => Some(
                    c.query_opt(
                        "SELECT id FROM affiliates WHERE slug = $1",
                        &[&slug.as_str()],
                    )
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("affiliate {slug}")))?
                    .try_get(0)?,
                ),
                None => None,
            };
            c.execute(
                "INSERT INTO users (username, role, affiliate_id, password_hash, credentials_changed_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (username) DO UPDATE SET role = excluded.role, \
                 affiliate_id = excluded.affiliate_id, password_hash = excluded.password_hash, \
                 credentials_changed_at = excluded.credentials_changed_at",
                &[
                    &u.username,
                    &u.role.as_str(),
                    &affiliate_id,
                    &u.password_hash,
                    &u.changed_at,
                ],
            )
            .await?;
            user_where(&**c, "u.username = $1", &u.username)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("user {}", u.username)))
        })
    }

    fn find_user(&self, username: String) -> StoreFuture<'_, Option<User>> {
        Box::pin(async move {
            let c = self.client().await?;
            user_where(&**c, "u.username = $1", &username).await
        })
    }

    fn get_user(&self, id: i64) -> StoreFuture<'_, Option<User>> {
        Box::pin(async move {
            let c = self.client().await?;
            user_where(&**c, "u.id = $1", &id).await
        })
    }

    fn list_users(&self) -> StoreFuture<'_, Vec<User>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(&format!("{USER_SELECT} ORDER BY u.username"), &[])
                .await?
                .iter()
                .map(user_from)
                .collect()
        })
    }

    fn shared_salt(
        &self,
        day: i64,
        candidate: [u8; 32],
        keep_from: i64,
    ) -> StoreFuture<'_, Option<[u8; 32]>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute("DELETE FROM visitor_salts WHERE day < $1", &[&keep_from])
                .await?;
            c.execute(
                "INSERT INTO visitor_salts (day, salt) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING",
                &[&day, &candidate.as_slice()],
            )
            .await?;
            let salt: Vec<u8> = c
                .query_one("SELECT salt FROM visitor_salts WHERE day = $1", &[&day])
                .await?
                .try_get(0)?;
            let salt: [u8; 32] = salt
                .try_into()
                .map_err(|_| StoreError::Corrupt("a visitor salt is not 32 bytes".to_owned()))?;
            Ok(Some(salt))
        })
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Notice>> {
        self.listen();
        Some(self.notices.subscribe())
    }

    fn publish(&self, channel: &'static str, payload: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            c.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .await?;
            Ok(())
        })
    }
}
