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
    AffiliateInput, CatalogInput, LinkInput, PgOptions, PgStore, ProgramInput, ReportQuery,
    SaveMode, SqliteOptions, SqliteStore, Store, StoreError,
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
            eprintln!(
                "!!! SKIPPED on PostgreSQL: CLICKWARD_TEST_PG is not set \
                 (e.g. postgres://postgres@127.0.0.1:5432/test) !!!"
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
    s.apply_catalog(CatalogInput {
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
    })
    .await
    .unwrap();
    (g, s)
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

both!(catalog_saves_conflicts_and_disables);
async fn catalog_saves_conflicts_and_disables(b: Backend) {
    let (_d, s) = store(b).await;
    let links = s.list_links().await.unwrap();
    assert_eq!(links.len(), 2);
    assert!(links.iter().all(|l| l.redirects));
    let err = s
        .save_program(
            ProgramInput {
                slug: slug("shop"),
                name: "x".into(),
                status: Status::Active,
                settings: None,
            },
            SaveMode::Create,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let v0 = s.catalog_version().await.unwrap();
    s.save_affiliate(
        AffiliateInput {
            slug: slug("blog"),
            name: "Blog".into(),
            status: Status::Disabled,
        },
        SaveMode::Update,
    )
    .await
    .unwrap();
    assert!(s.catalog_version().await.unwrap() > v0);
    let a = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    assert!(
        !a.redirects,
        "a link of a disabled affiliate must not redirect"
    );
    let err = s
        .get_link(LinkCode::parse("zzz").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
}

both!(unique_is_decided_per_visitor_and_link_within_the_window);
async fn unique_is_decided_per_visitor_and_link_within_the_window(b: Backend) {
    let (_d, s) = store(b).await;
    let t0 = 100 * MICROS_PER_DAY + 10 * HOUR;
    let mut bot = click(1, t0 + 3, 9, 4);
    bot.bot = Some(BotReason::UaPattern);
    let out = s
        .write_clicks(
            std::sync::Arc::new(vec![
                click(1, t0, 1, 1),
                click(1, t0 + 2 * MICROS_PER_SEC, 1, 2), // double tap
                click(2, t0 + 2 * MICROS_PER_SEC, 1, 3), // other link
                bot,
            ]),
            WINDOW,
        )
        .await
        .unwrap();
    let uniques: Vec<bool> = out.iter().map(|o| o.unique).collect();
    assert_eq!(uniques, vec![true, false, true, false]);
    // Within the window in a later batch: still a duplicate; after it: unique.
    let out = s
        .write_clicks(
            std::sync::Arc::new(vec![
                click(1, t0 + 23 * HOUR, 1, 5),
                click(1, t0 + 24 * HOUR, 1, 6),
            ]),
            WINDOW,
        )
        .await
        .unwrap();
    assert_eq!(
        out.iter().map(|o| o.unique).collect::<Vec<_>>(),
        vec![false, true]
    );
}

both!(previous_day_key_keeps_a_midnight_double_tap_single);
async fn previous_day_key_keeps_a_midnight_double_tap_single(b: Backend) {
    let (_d, s) = store(b).await;
    let midnight = 200 * MICROS_PER_DAY;
    let before = click(1, midnight - MICROS_PER_SEC, 1, 1);
    let mut after = click(1, midnight + MICROS_PER_SEC, 2, 2); // new day, new salt, new key
    after.previous_keys = vec![VisitorKey([1; 16])];
    let out = s
        .write_clicks(std::sync::Arc::new(vec![before, after]), WINDOW)
        .await
        .unwrap();
    assert_eq!(
        out.iter().map(|o| o.unique).collect::<Vec<_>>(),
        vec![true, false]
    );
}

both!(replayed_click_ids_change_nothing);
async fn replayed_click_ids_change_nothing(b: Backend) {
    let (_d, s) = store(b).await;
    let c = click(1, 300 * MICROS_PER_DAY, 1, 7);
    let first = s
        .write_clicks(std::sync::Arc::new(vec![c.clone()]), WINDOW)
        .await
        .unwrap();
    let again = s
        .write_clicks(std::sync::Arc::new(vec![c.clone()]), WINDOW)
        .await
        .unwrap();
    assert!(first[0].inserted && first[0].unique);
    assert!(!again[0].inserted && !again[0].unique);
    assert_eq!(s.list_clicks(None, 10).await.unwrap().len(), 1);
    let row = s.get_click(c.click_id).await.unwrap();
    assert!(row.unique);
    assert_eq!(row.link, "a");
}

both!(report_groups_by_local_day_and_dimension);
async fn report_groups_by_local_day_and_dimension(b: Backend) {
    let (_d, s) = store(b).await;
    let tz = TimeZone::get("Asia/Tokyo").unwrap();
    // 2026-11-20 14:59:59 UTC is 23:59:59 on the 20th in Tokyo; a second
    // later is the 21st.
    let base: jiff::Timestamp = "2026-11-20T14:59:59Z".parse().unwrap();
    let t = base.as_microsecond();
    let mut bot = click(2, t + MICROS_PER_SEC, 5, 3);
    bot.bot = Some(BotReason::Head);
    s.write_clicks(
        std::sync::Arc::new(vec![
            click(1, t, 1, 1),
            click(1, t + MICROS_PER_SEC, 2, 2),
            bot,
        ]),
        WINDOW,
    )
    .await
    .unwrap();
    let b = buckets(date(2026, 11, 20), date(2026, 11, 21), &tz, TimeGrain::Day).unwrap();
    let rows = s
        .click_report(ReportQuery {
            start: b[0].start,
            end: b[1].end,
            buckets: Some(b),
            dims: vec![Dimension::Time(TimeGrain::Day), Dimension::Link],
            filters: vec![],
            raw_only: false,
            by_click_time: false,
        })
        .await
        .unwrap();
    let flat: Vec<(Vec<Option<String>>, i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.keys.clone(),
                r.counts.gross_clicks,
                r.counts.bot_clicks,
                r.counts.unique_clicks,
            )
        })
        .collect();
    assert_eq!(
        flat,
        vec![
            (vec![Some("2026-11-20".into()), Some("a".into())], 1, 0, 1),
            (vec![Some("2026-11-21".into()), Some("a".into())], 1, 0, 1),
            (vec![Some("2026-11-21".into()), Some("b".into())], 1, 1, 0),
        ]
    );
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

mod ledger {
    use super::*;
    use clickward_core::conversion::{ConversionStatus, LedgerBucket};
    use clickward_core::id::ConversionId;
    use clickward_core::money::Currency;
    use clickward_store::{ClickFacts, NewConversion, Recorded};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Create {
            affiliate: usize,
            commission: i64,
            approved: bool,
        },
        Approve(usize),
        Reject(usize),
        Reverse(usize),
        Payout(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..2, 0i64..100_000, any::<bool>()).prop_map(
                |(affiliate, commission, approved)| Op::Create {
                    affiliate,
                    commission,
                    approved
                }
            ),
            (0usize..40).prop_map(Op::Approve),
            (0usize..40).prop_map(Op::Reject),
            (0usize..40).prop_map(Op::Reverse),
            (0usize..2).prop_map(Op::Payout),
        ]
    }

    const AFFILIATES: [&str; 2] = ["blog", "news"];

    async fn run(b: Backend, ops: Vec<Op>) {
        let (_d, s) = store(b).await;
        s.save_affiliate(
            AffiliateInput {
                slug: slug("news"),
                name: "News".into(),
                status: Status::Active,
            },
            SaveMode::Create,
        )
        .await
        .unwrap();
        let affiliate_ids = [
            s.get_affiliate(slug("blog")).await.unwrap().id,
            s.get_affiliate(slug("news")).await.unwrap().id,
        ];
        let usd = Currency::parse("USD").unwrap();
        // Model: (affiliate index, commission, status) per conversion.
        let mut model: Vec<(usize, i64, ConversionStatus, ConversionId)> = Vec::new();
        let mut paid_model = [0i64; 2];
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Create {
                    affiliate,
                    commission,
                    approved,
                } => {
                    let id =
                        ConversionId(ulid::Ulid::from_parts(1, u128::try_from(n).unwrap() + 1));
                    let status = if approved {
                        ConversionStatus::Approved
                    } else {
                        ConversionStatus::Pending
                    };
                    let facts = ClickFacts {
                        click_id: ClickId::from_parts(1, u128::try_from(n).unwrap()),
                        ts: 0,
                        link_id: 1,
                        program_id: 1,
                        affiliate_id: Some(affiliate_ids[affiliate]),
                        affiliate_active: true,
                        src: None,
                        subs: Default::default(),
                    };
                    let r = s
                        .record_conversion(NewConversion {
                            conversion_id: id,
                            program_id: 1,
                            event: "sale".into(),
                            order_id: format!("o{n}"),
                            click: Some((facts, 0, "click_id")),
                            amount: None,
                            currency: usd,
                            commission,
                            status,
                            occurred_at: 0,
                            received_at: 0,
                            adv_subs: Default::default(),
                            fingerprint: [0; 32],
                            actor: "test".into(),
                        })
                        .await
                        .unwrap();
                    assert!(matches!(r, Recorded::Created(_)));
                    model.push((affiliate, commission, status, id));
                }
                Op::Approve(i) | Op::Reject(i) | Op::Reverse(i) => {
                    let Some(entry) = model.get_mut(i) else {
                        continue;
                    };
                    let to = match op {
                        Op::Approve(_) => ConversionStatus::Approved,
                        Op::Reject(_) => ConversionStatus::Rejected,
                        _ => ConversionStatus::Reversed,
                    };
                    let allowed =
                        clickward_core::conversion::transition(entry.2, to, entry.1).is_ok();
                    let got = s
                        .set_conversion_status(entry.3, to, "test".into(), None)
                        .await;
                    assert_eq!(got.is_ok(), allowed, "{:?} -> {to:?}", entry.2);
                    if allowed {
                        entry.2 = to;
                    }
                }
                Op::Payout(a) => {
                    let p = s
                        .create_payout(
                            slug(AFFILIATES[a]),
                            usd,
                            format!("k{n}"),
                            ulid::Ulid::from_parts(2, u128::try_from(n).unwrap()),
                            "test".into(),
                        )
                        .await
                        .unwrap();
                    // Same key again: same batch, nothing changes.
                    let again = s
                        .create_payout(
                            slug(AFFILIATES[a]),
                            usd,
                            format!("k{n}"),
                            ulid::Ulid::from_parts(3, u128::try_from(n).unwrap()),
                            "test".into(),
                        )
                        .await
                        .unwrap();
                    assert!(!again.created);
                    assert_eq!(again.batch_id, p.batch_id);
                    paid_model[a] += p.amount_minor;
                    for e in model
                        .iter_mut()
                        .filter(|e| e.0 == a && e.2 == ConversionStatus::Approved)
                    {
                        e.2 = ConversionStatus::Paid;
                    }
                }
            }
            // Invariants, per affiliate (one currency here).
            let balances = s.balances(None).await.unwrap();
            for (a, name) in AFFILIATES.iter().enumerate() {
                let sum = |b: Option<LedgerBucket>| -> i64 {
                    balances
                        .iter()
                        .filter(|x| {
                            x.affiliate.as_deref() == Some(*name) && b.is_none_or(|b| x.bucket == b)
                        })
                        .map(|x| x.minor)
                        .sum()
                };
                let live: i64 = model
                    .iter()
                    .filter(|e| {
                        e.0 == a
                            && matches!(
                                e.2,
                                ConversionStatus::Pending
                                    | ConversionStatus::Approved
                                    | ConversionStatus::Paid
                            )
                    })
                    .map(|e| e.1)
                    .sum();
                let pending: i64 = model
                    .iter()
                    .filter(|e| e.0 == a && e.2 == ConversionStatus::Pending)
                    .map(|e| e.1)
                    .sum();
                assert_eq!(sum(None), live, "ledger total of {name}");
                assert_eq!(
                    sum(Some(LedgerBucket::Pending)),
                    pending,
                    "pending of {name}"
                );
                assert_eq!(
                    sum(Some(LedgerBucket::Paid)),
                    paid_model[a],
                    "paid of {name}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// Balances always equal the sum of the ledger's entries and what the
        /// lifecycle says, whatever the order of conversions, approvals,
        /// rejections, reversals and payouts.
        #[test]
        fn balances_add_up_to_the_cent(ops in prop::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(run(Backend::Sqlite, ops));
        }

        /// The same on PostgreSQL.
        #[test]
        fn balances_add_up_to_the_cent_on_postgres(ops in prop::collection::vec(op(), 1..40)) {
            if let Some(b) = pg() {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
                rt.block_on(run(b, ops));
            }
        }
    }
}

mod rollups {
    use super::*;
    use clickward_core::report::{Dimension as D, TimeGrain as G};
    use proptest::prelude::*;

    const DAY0: i64 = 20_000 * MICROS_PER_DAY; // 2024-10-04

    #[derive(Debug, Clone)]
    struct C {
        offset_s: i64,
        link: i64,
        src: Option<u8>,
        country: Option<u8>,
        mobile: bool,
        bot: bool,
        visitor: u8,
        conversion: Option<Conv>,
    }

    /// A conversion reported some time after a click: attributed to it or
    /// not, in USD or JPY, and what happens to it afterwards.
    #[derive(Debug, Clone)]
    struct Conv {
        delay_s: i64,
        amount: i64,
        attributed: bool,
        fate: Fate,
    }

    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Pending,
        Approved,
        Rejected,
        Reversed,
        Paid,
    }

    fn click_strategy() -> impl Strategy<Value = C> {
        let conv = (
            0i64..(2 * 86_400),
            0i64..100_000,
            prop::bool::weighted(0.8),
            prop::sample::select(vec![
                Fate::Pending,
                Fate::Approved,
                Fate::Rejected,
                Fate::Reversed,
                Fate::Paid,
            ]),
        )
            .prop_map(|(delay_s, amount, attributed, fate)| Conv {
                delay_s,
                amount,
                attributed,
                fate,
            });
        (
            0i64..(4 * 86_400),
            1i64..=2,
            prop::option::of(0u8..3),
            prop::option::of(0u8..3),
            any::<bool>(),
            prop::bool::weighted(0.2),
            0u8..12,
            prop::option::weighted(0.3, conv),
        )
            .prop_map(
                |(offset_s, link, src, country, mobile, bot, visitor, conversion)| C {
                    offset_s,
                    link,
                    src,
                    country,
                    mobile,
                    bot,
                    visitor,
                    conversion,
                },
            )
    }

    /// Records each click's conversion (after the clicks are written) and
    /// moves it to its fate through the store's lifecycle.
    async fn convert(s: &S, clicks: &[C], ids: &[ClickId]) {
        use clickward_core::conversion::ConversionStatus as S;
        use clickward_core::id::ConversionId;
        use clickward_core::money::Currency;
        use clickward_store::NewConversion;
        for (i, (c, click_id)) in clicks.iter().zip(ids).enumerate() {
            let Some(v) = &c.conversion else { continue };
            let ts = DAY0 + c.offset_s * MICROS_PER_SEC;
            let occurred_at = ts + v.delay_s * MICROS_PER_SEC;
            let facts = if v.attributed {
                s.click_facts(*click_id).await.unwrap()
            } else {
                None
            };
            let id = ConversionId(ulid::Ulid::from_parts(1, u128::try_from(i).unwrap() + 1));
            let currency = Currency::parse(if v.amount % 2 == 0 { "USD" } else { "JPY" }).unwrap();
            s.record_conversion(NewConversion {
                conversion_id: id,
                program_id: 1,
                event: "sale".into(),
                order_id: format!("o{i}"),
                click: facts.map(|f| (f, occurred_at - ts, "click_id")),
                amount: Some(v.amount),
                currency,
                commission: v.amount / 10,
                status: S::Pending,
                occurred_at,
                received_at: occurred_at,
                adv_subs: Default::default(),
                fingerprint: [0; 32],
                actor: "test".into(),
            })
            .await
            .unwrap();
            let path: &[S] = match v.fate {
                Fate::Pending => &[],
                Fate::Approved => &[S::Approved],
                Fate::Rejected => &[S::Rejected],
                Fate::Reversed => &[S::Approved, S::Reversed],
                Fate::Paid => &[S::Approved, S::Paid],
            };
            for to in path {
                if *to == S::Paid {
                    // Payouts are per affiliate; this one pays every
                    // approved conversion of the test affiliate.
                    s.create_payout(
                        slug("blog"),
                        currency,
                        format!("pay{i}"),
                        ulid::Ulid::from_parts(2, u128::try_from(i).unwrap()),
                        "test".into(),
                    )
                    .await
                    .unwrap();
                } else {
                    s.set_conversion_status(id, *to, "test".into(), None)
                        .await
                        .unwrap();
                }
            }
        }
    }

    fn dims_strategy() -> impl Strategy<Value = Vec<D>> {
        prop::sample::select(vec![
            vec![],
            vec![D::Time(G::Day)],
            vec![D::Time(G::Hour), D::Src],
            vec![D::Src],
            vec![D::Time(G::Day), D::Link],
            vec![D::Program, D::Affiliate],
            vec![D::Time(G::Week), D::Country, D::Device],
            vec![D::Device],
            vec![D::Time(G::Month), D::Link, D::Src],
            vec![D::Time(G::Day), D::Browser],
        ])
    }

    #[allow(clippy::too_many_arguments)] // the property's inputs, as proptest draws them
    async fn run(
        b: Backend,
        clicks: Vec<C>,
        now_offset_s: i64,
        dims: Vec<D>,
        tz: &str,
        twice: bool,
        filter: Option<(D, &str)>,
        by_click_time: bool,
    ) {
        let (_d, s) = store(b).await;
        let mut sorted = clicks;
        sorted.sort_by_key(|c| c.offset_s);
        let batch: Vec<NewClick> = sorted
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut n = click(
                    c.link,
                    DAY0 + c.offset_s * MICROS_PER_SEC,
                    c.visitor,
                    u128::try_from(i).unwrap(),
                );
                n.params.src = c.src.map(|v| format!("s{v}"));
                n.country = c
                    .country
                    .map(|v| ["JP", "IN", "NP"][usize::from(v)].to_owned());
                n.device = if c.mobile {
                    DeviceType::Mobile
                } else {
                    DeviceType::Desktop
                };
                n.bot = c.bot.then_some(BotReason::UaPattern);
                n
            })
            .collect();
        let ids: Vec<ClickId> = batch.iter().map(|c| c.click_id).collect();
        s.write_clicks(std::sync::Arc::new(batch), WINDOW)
            .await
            .unwrap();
        convert(&s, &sorted, &ids).await;
        // Roll up to a random point inside the data, so reports mix rollups
        // and raw clicks.
        let now = DAY0 + now_offset_s * MICROS_PER_SEC;
        catch_up(&s, now).await;
        if twice {
            // Recomputing a range (again) changes nothing.
            s.rollup(DAY0, DAY0 + 5 * MICROS_PER_DAY).await.unwrap();
            s.rollup(DAY0 + 3600 * MICROS_PER_SEC, DAY0 + 2 * MICROS_PER_DAY)
                .await
                .unwrap();
        }
        let tz = TimeZone::get(tz).unwrap();
        let grain = dims.iter().find_map(|d| match d {
            D::Time(g) => Some(*g),
            _ => None,
        });
        let (from, to) = (date(2024, 10, 3), date(2024, 10, 9));
        let (start, end) = clickward_core::report::date_range(from, to, &tz).unwrap();
        let q = ReportQuery {
            start,
            end,
            buckets: grain.map(|g| buckets(from, to, &tz, g).unwrap()),
            dims: dims.clone(),
            filters: filter
                .map(|(d, v)| vec![(d, v.to_owned())])
                .unwrap_or_default(),
            raw_only: false,
            by_click_time,
        };
        planned_equals_raw(s.as_ref(), q, ("dims", &dims)).await;
    }

    /// A database holding conversions from before conversion rollups (schema
    /// V5) gets them filled by the upgrade (V6, and V7's hourly and daily
    /// levels): the money of reports read through rollups is right at once,
    /// with no `clickward rollup` needed.
    #[tokio::test]
    async fn upgrading_fills_conversion_rollups_from_existing_conversions() {
        let (g, s) = store(Backend::Sqlite).await;
        let Guard::Sqlite(dir) = &g else {
            unreachable!("opened on SQLite")
        };
        let conv = |amount, fate| {
            Some(Conv {
                delay_s: 3600,
                amount,
                attributed: true,
                fate,
            })
        };
        let clicks = vec![
            C {
                offset_s: 100,
                link: 1,
                src: Some(1),
                country: Some(0),
                mobile: true,
                bot: false,
                visitor: 1,
                conversion: conv(1000, Fate::Approved),
            },
            C {
                offset_s: 86_400 + 100,
                link: 2,
                src: None,
                country: Some(1),
                mobile: false,
                bot: false,
                visitor: 2,
                conversion: conv(2000, Fate::Rejected),
            },
            C {
                offset_s: 2 * 86_400,
                link: 2,
                src: None,
                country: None,
                mobile: false,
                bot: false,
                visitor: 3,
                conversion: conv(3000, Fate::Pending),
            },
        ];
        let batch: Vec<NewClick> = clicks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut n = click(
                    c.link,
                    DAY0 + c.offset_s * MICROS_PER_SEC,
                    c.visitor,
                    u128::try_from(i).unwrap(),
                );
                n.country = c.country.map(|v| ["JP", "IN"][usize::from(v)].to_owned());
                n
            })
            .collect();
        let ids: Vec<ClickId> = batch.iter().map(|c| c.click_id).collect();
        s.write_clicks(std::sync::Arc::new(batch), WINDOW)
            .await
            .unwrap();
        convert(&s, &clicks, &ids).await;
        drop(s);
        // Take the database back to V5: what V6 to V9 added goes, their
        // history rows too. (A later migration must be undone here as well.)
        let path = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        let levels: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND (name GLOB 'rollup_*_h' OR name GLOB 'rollup_*_d')",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(levels.len(), 12, "{levels:?}");
        for t in levels {
            conn.execute_batch(&format!("DROP TABLE {t}")).unwrap();
        }
        conn.execute_batch(
            "DROP TABLE rollup_conv_link; DROP TABLE rollup_conv_src; DROP TABLE rollup_conv_geo; \
             DROP INDEX conversions_occurred; DROP INDEX conversions_click_time; \
             ALTER TABLE conversions DROP COLUMN country; ALTER TABLE conversions DROP COLUMN device; \
             ALTER TABLE conversions DROP COLUMN browser; ALTER TABLE conversions DROP COLUMN os; \
             ALTER TABLE conversions DROP COLUMN referrer_host; \
             DROP TABLE users; DROP INDEX payouts_affiliate; DROP INDEX conversions_affiliate; \
             DROP INDEX ledger_sums; CREATE INDEX ledger_affiliate ON ledger (affiliate_id, currency, bucket); \
             DELETE FROM refinery_schema_history WHERE version IN (6, 7, 8, 9);",
        )
        .unwrap();
        drop(conn);
        let s = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
        let tz = TimeZone::get("UTC").unwrap();
        let (from, to) = (date(2024, 10, 4), date(2024, 10, 7));
        let (start, end) = clickward_core::report::date_range(from, to, &tz).unwrap();
        for dims in [vec![D::Country, D::Device], vec![D::Time(G::Day), D::Link]] {
            let q = ReportQuery {
                start,
                end,
                buckets: Some(buckets(from, to, &tz, G::Day).unwrap()),
                dims: dims.clone(),
                filters: vec![],
                raw_only: false,
                by_click_time: false,
            };
            planned_equals_raw(&s, q, &dims).await;
        }
        let by_country = s
            .click_report(ReportQuery {
                start,
                end,
                buckets: None,
                dims: vec![D::Country],
                filters: vec![],
                raw_only: false,
                by_click_time: false,
            })
            .await
            .unwrap();
        let money: Vec<(Option<String>, i64, Option<i64>)> = by_country
            .iter()
            .map(|r| {
                (
                    r.keys[0].clone(),
                    r.money.conversions,
                    r.money.revenue.values().next().copied(),
                )
            })
            .collect();
        // The rejected conversion (IN) counts for nothing; the JPY 1000 one
        // keeps its click's country through the upgrade.
        assert_eq!(
            money,
            vec![
                (None, 1, Some(3000)),
                (Some("IN".into()), 0, None),
                (Some("JP".into()), 1, Some(1000)),
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
        /// Reports read through rollups equal a GROUP BY over the raw clicks
        /// and conversions, for random data (conversions rejected, reversed
        /// and paid after the fact), random watermarks, dimensions, time
        /// zones (including +05:30, +05:45 and a DST zone) and time bases.
        #[test]
        fn rollup_reports_equal_raw_group_by(
            clicks in prop::collection::vec(click_strategy(), 1..200),
            now_offset_s in 0i64..(5 * 86_400),
            dims in dims_strategy(),
            tz in prop::sample::select(vec!["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"]),
            twice in any::<bool>(),
            filter in prop::option::of(prop::sample::select(vec![
                (D::Link, "a"), (D::Program, "shop"), (D::Affiliate, "blog"), (D::Src, "s1"), (D::Country, "JP"), (D::Device, "mobile"), (D::Sub(0), "x"),
            ])),
            by_click_time in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(run(Backend::Sqlite, clicks, now_offset_s, dims, tz, twice, filter, by_click_time));
        }

        /// The same on PostgreSQL (click rollups; its money is always read
        /// from the conversion rows).
        #[test]
        fn rollup_reports_equal_raw_group_by_on_postgres(
            clicks in prop::collection::vec(click_strategy(), 1..200),
            now_offset_s in 0i64..(5 * 86_400),
            dims in dims_strategy(),
            tz in prop::sample::select(vec!["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"]),
            twice in any::<bool>(),
            filter in prop::option::of(prop::sample::select(vec![
                (D::Link, "a"), (D::Program, "shop"), (D::Affiliate, "blog"), (D::Src, "s1"), (D::Country, "JP"), (D::Device, "mobile"), (D::Sub(0), "x"),
            ])),
            by_click_time in any::<bool>(),
        ) {
            if let Some(b) = pg() {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
                rt.block_on(run(b, clicks, now_offset_s, dims, tz, twice, filter, by_click_time));
            }
        }
    }
}

both!(reports_before_the_watermark_come_from_rollups);
async fn reports_before_the_watermark_come_from_rollups(b: Backend) {
    let (d, s) = store(b).await;
    let t0 = 100 * MICROS_PER_DAY;
    let clicks: Vec<NewClick> = (0..50)
        .map(|i| {
            click(
                1 + i % 2,
                t0 + i * 60 * MICROS_PER_SEC,
                u8::try_from(i % 7).unwrap(),
                u128::try_from(i).unwrap(),
            )
        })
        .collect();
    s.write_clicks(std::sync::Arc::new(clicks), WINDOW)
        .await
        .unwrap();
    let q = ReportQuery {
        start: t0 - MICROS_PER_DAY,
        end: t0 + MICROS_PER_DAY,
        buckets: None,
        dims: vec![Dimension::Link],
        filters: vec![],
        raw_only: false,
        by_click_time: false,
    };
    let before = s.click_report(q.clone()).await.unwrap();
    catch_up(&s, t0 + MICROS_PER_DAY).await;
    // Remove the raw clicks behind the store's back: the rollups still answer.
    assert_eq!(d.exec("DELETE FROM clicks").await, 50);
    let after = s.click_report(q.clone()).await.unwrap();
    assert_eq!(after, before);
    assert!(
        s.click_report(ReportQuery {
            raw_only: true,
            ..q
        })
        .await
        .unwrap()
        .is_empty()
    );
}

both!(retention_purges_raw_clicks_behind_the_watermark_only);
async fn retention_purges_raw_clicks_behind_the_watermark_only(b: Backend) {
    let (_d, s) = store(b).await;
    let t0 = 100 * MICROS_PER_DAY;
    let clicks: Vec<NewClick> = (0..300)
        .map(|i| {
            click(
                1 + i % 2,
                t0 + i * 600 * MICROS_PER_SEC,
                u8::try_from(i % 9).unwrap(),
                u128::try_from(i).unwrap(),
            )
        })
        .collect();
    s.write_clicks(std::sync::Arc::new(clicks), WINDOW)
        .await
        .unwrap();
    // Roll up the first day only.
    let w = catch_up(&s, t0 + MICROS_PER_DAY).await;
    let q = ReportQuery {
        start: t0 - MICROS_PER_DAY,
        end: t0 + 4 * MICROS_PER_DAY,
        buckets: Some(
            buckets(
                date(1970, 4, 10),
                date(1970, 4, 13),
                &TimeZone::UTC,
                TimeGrain::Day,
            )
            .unwrap(),
        ),
        dims: vec![Dimension::Time(TimeGrain::Day), Dimension::Link],
        filters: vec![],
        raw_only: false,
        by_click_time: false,
    };
    let before = s.click_report(q.clone()).await.unwrap();
    // Asked to purge everything: only what lies before the watermark goes.
    let mut purged = 0;
    loop {
        let n = s.purge_clicks(t0 + 10 * MICROS_PER_DAY, 50).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 50);
        purged += n;
    }
    let expected = (0..300)
        .filter(|i| t0 + i * 600 * MICROS_PER_SEC < w)
        .count() as u64;
    assert_eq!(purged, expected);
    assert!(purged > 0 && purged < 300);
    assert_eq!(
        s.click_report(q).await.unwrap(),
        before,
        "reports over purged periods still answer"
    );
}

both!(local_days_are_exact_in_dst_and_offset_zones);
/// Day boundaries in zones with DST and with half- and quarter-hour offsets,
/// on hand-built clicks with known answers, read through rollups and raw.
async fn local_days_are_exact_in_dst_and_offset_zones(b: Backend) {
    let (_d, s) = store(b).await;
    let at = |t: &str| -> i64 { t.parse::<jiff::Timestamp>().unwrap().as_microsecond() };
    let instants = [
        // New York, spring forward 2026-03-08 (day of 23 h: 05:00Z .. 04:00Z next day).
        "2026-03-08T04:59:59Z", // 03-07 23:59:59 EST
        "2026-03-08T05:00:00Z", // 03-08 00:00 EST
        "2026-03-09T03:59:59Z", // 03-08 23:59:59 EDT
        "2026-03-09T04:00:00Z", // 03-09 00:00 EDT
        // New York, fall back 2026-11-01 (day of 25 h: 04:00Z .. 05:00Z next day).
        "2026-11-01T04:00:00Z", // 11-01 00:00 EDT
        "2026-11-01T05:30:00Z", // 01:30 EDT (first)
        "2026-11-01T06:30:00Z", // 01:30 EST (second)
        "2026-11-02T04:59:59Z", // 11-01 23:59:59 EST
        "2026-11-02T05:00:00Z", // 11-02 00:00 EST
        // Kolkata +05:30: 2026-06-01 starts at 2026-05-31T18:30Z.
        "2026-05-31T18:29:59Z",
        "2026-05-31T18:30:00Z",
        // Kathmandu +05:45: 2026-06-01 starts at 2026-05-31T18:15Z.
        "2026-05-31T18:14:59Z",
        "2026-05-31T18:15:00Z",
    ];
    let mut clicks: Vec<NewClick> = instants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            click(
                1,
                at(t),
                u8::try_from(i).unwrap(),
                u128::try_from(i).unwrap(),
            )
        })
        .collect();
    clicks.sort_by_key(|c| c.ts);
    s.write_clicks(std::sync::Arc::new(clicks), WINDOW)
        .await
        .unwrap();
    let days = |tz: &'static str, from: jiff::civil::Date, to: jiff::civil::Date| {
        let s = s.clone();
        async move {
            let tz = TimeZone::get(tz).unwrap();
            let (start, end) = clickward_core::report::date_range(from, to, &tz).unwrap();
            let q = ReportQuery {
                start,
                end,
                buckets: Some(buckets(from, to, &tz, TimeGrain::Day).unwrap()),
                dims: vec![Dimension::Time(TimeGrain::Day)],
                filters: vec![],
                raw_only: false,
                by_click_time: false,
            };
            let rows = s.click_report(q).await.unwrap();
            rows.into_iter()
                .map(|r| (r.keys[0].clone().unwrap(), r.counts.gross_clicks))
                .collect::<Vec<_>>()
        }
    };
    let check = |label: &str, got: Vec<(String, i64)>, want: &[(&str, i64)]| {
        let want: Vec<(String, i64)> = want.iter().map(|(d, n)| ((*d).to_owned(), *n)).collect();
        assert_eq!(got, want, "{label}");
    };
    for pass in ["raw", "rollups"] {
        if pass == "rollups" {
            catch_up(&s, at("2026-12-01T00:00:00Z")).await;
        }
        check(
            pass,
            days("America/New_York", date(2026, 3, 7), date(2026, 3, 9)).await,
            &[("2026-03-07", 1), ("2026-03-08", 2), ("2026-03-09", 1)],
        );
        check(
            pass,
            days("America/New_York", date(2026, 10, 31), date(2026, 11, 2)).await,
            &[("2026-11-01", 4), ("2026-11-02", 1)],
        );
        check(
            pass,
            days("Asia/Kolkata", date(2026, 5, 31), date(2026, 6, 1)).await,
            &[("2026-05-31", 3), ("2026-06-01", 1)],
        );
        check(
            pass,
            days("Asia/Kathmandu", date(2026, 5, 31), date(2026, 6, 1)).await,
            &[("2026-05-31", 1), ("2026-06-01", 3)],
        );
    }
}

both!(reports_group_by_referrer_host);
async fn reports_group_by_referrer_host(b: Backend) {
    let (_d, s) = store(b).await;
    let t0 = 200 * MICROS_PER_DAY;
    let mut a = click(1, t0, 1, 1);
    a.referrer = Some("https://Qiita.com/u/items/1".into());
    let mut b = click(1, t0 + 1, 2, 2);
    b.referrer = Some("https://qiita.com/other".into());
    let c = click(2, t0 + 2, 3, 3);
    s.write_clicks(std::sync::Arc::new(vec![a, b, c]), WINDOW)
        .await
        .unwrap();
    let rows = s
        .click_report(ReportQuery {
            start: t0,
            end: t0 + MICROS_PER_DAY,
            buckets: None,
            dims: vec![Dimension::ReferrerHost],
            filters: vec![],
            raw_only: false,
            by_click_time: false,
        })
        .await
        .unwrap();
    let got: Vec<(Option<String>, i64)> = rows
        .iter()
        .map(|r| (r.keys[0].clone(), r.counts.gross_clicks))
        .collect();
    assert_eq!(got, vec![(None, 1), (Some("qiita.com".into()), 2)]);
}

/// PostgreSQL only: several nodes share one database.
mod shared {
    use super::*;

    /// A second "node": another store (its own pool) on the same schema.
    async fn second_node(g: &Guard) -> S {
        let Guard::Pg { config, .. } = g else {
            unreachable!("opened on PostgreSQL")
        };
        Arc::new(
            PgStore::connect_with(config.clone(), &PgOptions { pool_size: 4 })
                .await
                .unwrap(),
        )
    }

    /// A double tap whose two clicks reach the database through two nodes at
    /// the same moment counts once, however the batches interleave.
    #[tokio::test]
    async fn a_double_tap_across_nodes_counts_once() {
        let Some(b) = pg() else { return };
        let (g, a) = store(b).await;
        let other = second_node(&g).await;
        let t0 = 400 * MICROS_PER_DAY;
        for round in 0..20u8 {
            let ts = t0 + i64::from(round) * 2 * WINDOW;
            let one = Arc::new(vec![click(1, ts, round, u128::from(round) * 2)]);
            let two = Arc::new(vec![click(
                1,
                ts + MICROS_PER_SEC,
                round,
                u128::from(round) * 2 + 1,
            )]);
            let (x, y) = tokio::join!(a.write_clicks(one, WINDOW), other.write_clicks(two, WINDOW));
            let uniques = [x.unwrap()[0].unique, y.unwrap()[0].unique];
            assert_eq!(
                uniques.iter().filter(|u| **u).count(),
                1,
                "round {round}: {uniques:?}"
            );
        }
    }

    /// A click that reaches PostgreSQL after its bucket was rolled up (a
    /// node's spool drained after an outage) is counted in reports at once.
    #[tokio::test]
    async fn clicks_arriving_behind_the_watermark_are_counted() {
        let Some(b) = pg() else { return };
        let (_g, s) = store(b).await;
        let t0 = 100 * MICROS_PER_DAY;
        let early: Vec<NewClick> = (0..10)
            .map(|i| {
                click(
                    1,
                    t0 + i * 60 * MICROS_PER_SEC,
                    1,
                    u128::try_from(i).unwrap(),
                )
            })
            .collect();
        s.write_clicks(Arc::new(early), WINDOW).await.unwrap();
        let w = catch_up(&s, t0 + MICROS_PER_DAY).await;
        assert!(w > t0 + 10 * 60 * MICROS_PER_SEC);
        let mut late: Vec<NewClick> = (0..5)
            .map(|i| {
                click(
                    2,
                    t0 + i * 90 * MICROS_PER_SEC,
                    2,
                    100 + u128::try_from(i).unwrap(),
                )
            })
            .collect();
        late[0].bot = Some(BotReason::Head);
        late[1].params.src = Some("late".into());
        s.write_clicks(Arc::new(late), WINDOW).await.unwrap();
        for dims in [
            vec![Dimension::Link],
            vec![Dimension::Src],
            vec![Dimension::Country, Dimension::Device],
        ] {
            let q = ReportQuery {
                start: t0 - MICROS_PER_DAY,
                end: t0 + MICROS_PER_DAY,
                buckets: None,
                dims: dims.clone(),
                filters: vec![],
                raw_only: false,
                by_click_time: false,
            };
            let planned = planned_equals_raw(s.as_ref(), q, &dims).await;
            let gross: i64 = planned.iter().map(|r| r.counts.gross_clicks).sum();
            assert_eq!(gross, 15, "{dims:?}");
        }
    }

    /// A schema written by a newer clickward is refused with a clear error.
    #[tokio::test]
    async fn a_schema_from_a_newer_clickward_is_refused() {
        let Some(b) = pg() else { return };
        let (g, s) = store(b).await;
        drop(s);
        g.exec(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (999, 'future', '2030-01-01T00:00:00Z', '1')",
        )
        .await;
        let Guard::Pg { config, .. } = &g else {
            unreachable!()
        };
        let err = PgStore::connect_with(config.clone(), &PgOptions::default())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Migration(_)), "{err}");
        assert!(err.to_string().contains("newer clickward"), "{err}");
    }

    /// A link change made through one node is announced to the others.
    #[tokio::test]
    async fn catalogue_changes_are_announced_to_other_nodes() {
        let Some(b) = pg() else { return };
        let (g, a) = store(b).await;
        let other = second_node(&g).await;
        let mut notices = other.subscribe().unwrap();
        // The listener announces itself once it listens.
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), notices.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.channel, clickward_store::CATALOG_CHANNEL);
        let mut link = a.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
        link.link.status = Status::Disabled;
        a.save_link(
            LinkInput {
                code: link.link.code.clone(),
                program: link.link.program.clone(),
                affiliate: link.link.affiliate.clone(),
                destination: link.link.destination.clone(),
                redirect: None,
                utm: UtmDefaults::new(),
                status: Status::Disabled,
            },
            SaveMode::Update,
        )
        .await
        .unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(1), notices.recv())
            .await
            .expect("a notice within a second")
            .unwrap();
        assert_eq!(n.channel, clickward_store::CATALOG_CHANNEL);
        assert_eq!(
            n.payload,
            other.catalog_version().await.unwrap().to_string()
        );
        a.publish(clickward_store::EVENTS_CHANNEL, "{\"x\":1}".into())
            .await
            .unwrap();
        let e = tokio::time::timeout(std::time::Duration::from_secs(1), notices.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.channel.as_str(), e.payload.as_str()),
            (clickward_store::EVENTS_CHANNEL, "{\"x\":1}")
        );
    }
}

both!(users_are_saved_found_and_tied_to_an_affiliate);
async fn users_are_saved_found_and_tied_to_an_affiliate(b: Backend) {
    use clickward_store::{UserInput, UserRole};
    let (_d, s) = store(b).await;
    let u = s
        .save_user(UserInput {
            username: "ana".into(),
            role: UserRole::Affiliate,
            affiliate: Some(slug("blog")),
            password_hash: Some("$argon2id$first".into()),
            changed_at: 1_000,
        })
        .await
        .unwrap();
    assert_eq!(u.affiliate.as_deref(), Some("blog"));
    assert_eq!(u.credentials_changed_at, 1_000);
    // Saving again replaces it (same id) and moves the credentials time.
    let again = s
        .save_user(UserInput {
            username: "ana".into(),
            role: UserRole::Affiliate,
            affiliate: Some(slug("blog")),
            password_hash: Some("$argon2id$second".into()),
            changed_at: 2_000,
        })
        .await
        .unwrap();
    assert_eq!(again.id, u.id);
    assert_eq!(again.credentials_changed_at, 2_000);
    let found = s.get_user(u.id).await.unwrap().unwrap();
    assert_eq!(found.password_hash.as_deref(), Some("$argon2id$second"));
    assert_eq!(s.find_user("ana".into()).await.unwrap(), Some(found));
    assert_eq!(s.find_user("nobody".into()).await.unwrap(), None);
    // An affiliate user needs an existing affiliate; an admin has none.
    let err = s
        .save_user(UserInput {
            username: "ghost".into(),
            role: UserRole::Affiliate,
            affiliate: Some(slug("no_such")),
            password_hash: None,
            changed_at: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let admin = s
        .save_user(UserInput {
            username: "boss".into(),
            role: UserRole::Admin,
            affiliate: None,
            password_hash: None,
            changed_at: 1,
        })
        .await
        .unwrap();
    assert_eq!(admin.role, UserRole::Admin);
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["ana", "boss"]);
}

both!(api_keys_are_listed_and_revoked);
async fn api_keys_are_listed_and_revoked(b: Backend) {
    use clickward_store::KeyScope;
    let (_d, s) = store(b).await;
    let k1 = s
        .create_api_key(
            [1; 32],
            "cwk_one".into(),
            KeyScope::Admin,
            Some("ci".into()),
        )
        .await
        .unwrap();
    let k2 = s
        .create_api_key([2; 32], "cwk_two".into(), KeyScope::Read, None)
        .await
        .unwrap();
    assert_eq!(
        s.list_api_keys().await.unwrap(),
        vec![k1.clone(), k2.clone()]
    );
    s.revoke_api_key(k1.id).await.unwrap();
    assert_eq!(s.list_api_keys().await.unwrap(), vec![k2]);
    assert_eq!(
        s.find_api_key([1; 32]).await.unwrap(),
        None,
        "revoked keys do not sign in"
    );
    assert!(matches!(
        s.revoke_api_key(k1.id).await,
        Err(StoreError::NotFound(_))
    ));
}

both!(conversions_and_payouts_are_listed_per_affiliate);
async fn conversions_and_payouts_are_listed_per_affiliate(b: Backend) {
    use clickward_core::conversion::ConversionStatus;
    use clickward_core::id::ConversionId;
    use clickward_core::money::Currency;
    use clickward_store::{ConversionFilter, NewConversion};
    let (_d, s) = store(b).await;
    // Link a (id 1) belongs to blog; link b (id 2) to nobody.
    let t0 = 1_800_000_000_000_000;
    let mut c1 = click(1, t0, 1, 1);
    c1.affiliate_id = Some(1);
    let c2 = click(2, t0 + 1, 2, 2);
    s.write_clicks(Arc::new(vec![c1.clone(), c2.clone()]), WINDOW)
        .await
        .unwrap();
    let usd = Currency::parse("USD").unwrap();
    for (i, c) in [&c1, &c2].into_iter().enumerate() {
        let facts = s.click_facts(c.click_id).await.unwrap().unwrap();
        s.record_conversion(NewConversion {
            conversion_id: ConversionId(ulid::Ulid::from_parts(9, u128::try_from(i).unwrap())),
            program_id: 1,
            event: "sale".into(),
            order_id: format!("order{i}"),
            click: Some((facts, 1_000, "click_id")),
            amount: Some(10_000),
            currency: usd,
            commission: 1_000,
            status: ConversionStatus::Approved,
            occurred_at: t0 + 1_000,
            received_at: t0 + 1_000,
            adv_subs: Default::default(),
            fingerprint: [0; 32],
            actor: "test".into(),
        })
        .await
        .unwrap();
    }
    let of = |affiliate: Option<&str>, status| ConversionFilter {
        status,
        affiliate: affiliate.map(slug),
        limit: 10,
    };
    let blog = s.list_conversions(of(Some("blog"), None)).await.unwrap();
    assert_eq!(blog.len(), 1);
    assert_eq!(blog[0].order_id, "order0");
    assert_eq!(s.list_conversions(of(None, None)).await.unwrap().len(), 2);
    assert!(
        s.list_conversions(of(Some("blog"), Some(ConversionStatus::Pending)))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.list_payouts(None, 10).await.unwrap().is_empty());
    let p = s
        .create_payout(
            slug("blog"),
            usd,
            "nov".into(),
            ulid::Ulid::from_parts(3, 3),
            "test".into(),
        )
        .await
        .unwrap();
    let listed = s.list_payouts(Some(slug("blog")), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].batch_id, p.batch_id);
    assert_eq!(listed[0].amount_minor, 1_000);
    assert!(
        s.list_payouts(Some(slug("other")), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Balances of one affiliate: theirs only; of all: the unattributed too.
    let blog = s.balances(Some(slug("blog"))).await.unwrap();
    assert!(!blog.is_empty());
    assert!(blog.iter().all(|b| b.affiliate.as_deref() == Some("blog")));
    let all = s.balances(None).await.unwrap();
    assert!(all.iter().any(|b| b.affiliate.is_none()), "{all:?}");
    assert!(all.len() > blog.len());
}
