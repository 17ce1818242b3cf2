//! Store behaviour every backend must show. Each case runs against SQLite (a
//! fresh file per test) and against PostgreSQL (a fresh schema per test) when
//! `CLICKWARD_TEST_PG` holds a server URL; without it the PostgreSQL cases
//! say loudly that they skipped, and under `CI=true` they fail instead.

#![allow(clippy::unwrap_used)]
use clickward_core::click::{BotReason, DeviceType, NewClick, TrackingParams, VisitorKey};
use clickward_core::id::{ClickId, LinkCode, Slug};
use clickward_core::link::{Status, UtmDefaults};
use clickward_core::report::{Dimension, TimeGrain, buckets};
use clickward_core::{MICROS_PER_DAY, MICROS_PER_SEC};

use clickward_store::{
    AffiliateInput, CatalogInput, ClickQuery, LinkInput, PgOptions, PgStore, ProgramInput,
    ReportQuery, ReportStore, SaveMode, SqliteOptions, SqliteStore, Store, StoreError,
};

use jiff::civil::date;

use jiff::tz::TimeZone;

use std::sync::Arc;

const HOUR: i64 = 3600 * MICROS_PER_SEC;

const WINDOW: i64 = 24 * HOUR;

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

/// The store under test.
type S = Arc<dyn Store>;

/// Which backend a case runs on.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite,
    /// The server URL of `CLICKWARD_TEST_PG`.
    Pg(String),
}

/// The server to run PostgreSQL cases on, or `None` (after saying so) to skip.
fn pg() -> Option<Backend> {
    match std::env::var("CLICKWARD_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(Backend::Pg(url)),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the PostgreSQL conformance cases: set CLICKWARD_TEST_PG"
            );
            skipped(
                "PostgreSQL case: CLICKWARD_TEST_PG is not set \
                 (e.g. postgres://postgres@127.0.0.1:5432/test)",
            );
            None
        }
    }
}

/// Runs `async fn $name(b: Backend)` on SQLite and, when configured, on
/// PostgreSQL, as the tests `$name::sqlite` and `$name::postgres`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(b) = super::pg() {
                    super::$name(b).await
                }
            }
        }
    };
}

mod accounts;
mod catalog;
mod clicks;
mod cluster;
mod conversions;
mod delivery;
mod fraud;
mod outbox;
mod privacy;
mod rollups;

/// Keeps a test's database alive and lets the test reach behind the store.
#[allow(clippy::large_enum_variant)] // one per test
enum Guard {
    Sqlite(tempfile::TempDir),
    Pg {
        config: tokio_postgres::Config,
        admin: String,
        schema: String,
    },
}

impl Guard {
    /// Runs a statement on the test's database behind the store's back;
    /// returns the rows it changed.
    async fn exec(&self, sql: &str) -> u64 {
        match self {
            Guard::Sqlite(d) => {
                let conn = rusqlite::Connection::open(d.path().join("t.db")).unwrap();
                conn.execute(sql, []).unwrap() as u64
            }
            Guard::Pg { config, .. } => {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client.execute(sql, &[]).await.unwrap()
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Pg { admin, schema, .. } = self {
            let (admin, schema) = (admin.clone(), schema.clone());
            // Drop runs inside the test's runtime: use a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// An empty, migrated store on `b` (a new SQLite file, or a new schema).
async fn open(b: &Backend) -> (Guard, S) {
    match b {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let s = SqliteStore::open(&dir.path().join("t.db"), &SqliteOptions::default()).unwrap();
            (Guard::Sqlite(dir), Arc::new(s))
        }
        Backend::Pg(url) => {
            let schema = format!(
                "cw_test_{}",
                ulid::Ulid::generate().to_string().to_lowercase()
            );
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .await
                .unwrap();
            let mut config: tokio_postgres::Config = url.parse().unwrap();
            config.options(format!("-c search_path={schema}"));
            let s = PgStore::connect_with(config.clone(), &PgOptions { pool_size: 4 })
                .await
                .unwrap();
            (
                Guard::Pg {
                    config,
                    admin: url.clone(),
                    schema,
                },
                Arc::new(s),
            )
        }
    }
}

/// [`open`] with the catalogue every case starts from: program `shop`,
/// affiliate `blog`, links `a` (of blog) and `b`.
async fn store(b: Backend) -> (Guard, S) {
    let (g, s) = open(&b).await;
    s.apply_catalog(seed()).await.unwrap();
    (g, s)
}

/// The catalogue [`store`] applies.
fn seed() -> CatalogInput {
    CatalogInput {
        commissions: vec![],
        programs: vec![ProgramInput {
            slug: slug("shop"),
            name: "Shop".into(),
            status: Status::Active,
            settings: None,
        }],
        affiliates: vec![AffiliateInput {
            slug: slug("blog"),
            name: "Blog".into(),
            status: Status::Active,
        }],
        links: vec![
            LinkInput {
                code: LinkCode::parse("a").unwrap(),
                program: slug("shop"),
                affiliate: Some(slug("blog")),
                destination: "https://shop.example/".into(),
                redirect: None,
                utm: UtmDefaults::new(),
                status: Status::Active,
            },
            LinkInput {
                code: LinkCode::parse("b").unwrap(),
                program: slug("shop"),
                affiliate: None,
                destination: "https://shop.example/b".into(),
                redirect: None,
                utm: UtmDefaults::new(),
                status: Status::Active,
            },
        ],
    }
}

fn click(link_id: i64, ts: i64, visitor: u8, n: u128) -> NewClick {
    NewClick {
        click_id: ClickId::from_parts(u64::try_from(ts / 1000).unwrap(), n),
        ts,
        link_id,
        program_id: 1,
        affiliate_id: None,
        params: TrackingParams {
            src: Some("article".into()),
            subs: Default::default(),
        },
        referrer: None,
        device: DeviceType::Mobile,
        os: None,
        browser: None,
        bot: None,
        country: None,
        region: None,
        city: None,
        visitor_key: VisitorKey([visitor; 16]),
        previous_keys: vec![],
        verdict: None,
        consent: Default::default(),
    }
}

/// Advances the rollups until the watermark stops moving; returns it.
async fn catch_up(s: &S, now: i64) -> i64 {
    let mut last = None;
    loop {
        let w = s.advance_rollups(now).await.unwrap();
        if Some(w) == last {
            return w;
        }
        last = Some(w);
    }
}

/// The planned report (rollups where they cover the range) after asserting
/// it equals the same query over raw clicks only.
async fn planned_equals_raw(
    s: &dyn Store,
    q: ReportQuery,
    what: impl std::fmt::Debug,
) -> Vec<clickward_store::ReportRow> {
    let planned = s.click_report(q.clone()).await.unwrap();
    let raw = s
        .click_report(ReportQuery {
            raw_only: true,
            ..q
        })
        .await
        .unwrap();
    assert_eq!(planned, raw, "{what:?}");
    planned
}

#[tokio::test]
async fn a_database_from_a_newer_clickward_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStore::open(&path, &SqliteOptions::default()).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'future', '2030-01-01T00:00:00Z', '1')",
        [],
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, &SqliteOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Migration(_)), "{err}");
    assert!(err.to_string().contains("newer clickward"), "{err}");
}

/// Says loudly that the running test skipped itself, and names it in the
/// skip log (`CLICKWARD_SKIP_LOG`) that `scripts/test.sh` counts, so the
/// closing line says "skipped", never "passed". Callers assert first that
/// CI is not running: in CI nothing may skip.
fn skipped(why: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned();
    eprintln!("\n!!! SKIPPED {name}: {why} !!!\n");
    if let Ok(path) = std::env::var("CLICKWARD_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(f, "{name}");
        }
    }
}
