//! Store behaviour every backend must show. Runs against SQLite (a fresh file
//! per test); the PostgreSQL backend will run the same cases.

#![allow(clippy::unwrap_used)]

use clickward_core::click::{BotReason, DeviceType, NewClick, TrackingParams, VisitorKey};
use clickward_core::id::{ClickId, LinkCode, Slug};
use clickward_core::link::{Status, UtmDefaults};
use clickward_core::report::{Dimension, TimeGrain, buckets};
use clickward_core::{MICROS_PER_DAY, MICROS_PER_SEC};
use clickward_store::{
    AffiliateInput, CatalogInput, LinkInput, ProgramInput, ReportQuery, SaveMode, SqliteOptions,
    SqliteStore, Store, StoreError,
};
use jiff::civil::date;
use jiff::tz::TimeZone;

const HOUR: i64 = 3600 * MICROS_PER_SEC;
const WINDOW: i64 = 24 * HOUR;

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db"), &SqliteOptions::default()).unwrap();
    s.apply_catalog(CatalogInput {
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
    (dir, s)
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

#[tokio::test]
async fn catalog_saves_conflicts_and_disables() {
    let (_d, s) = store().await;
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

#[tokio::test]
async fn unique_is_decided_per_visitor_and_link_within_the_window() {
    let (_d, s) = store().await;
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

#[tokio::test]
async fn previous_day_key_keeps_a_midnight_double_tap_single() {
    let (_d, s) = store().await;
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

#[tokio::test]
async fn replayed_click_ids_change_nothing() {
    let (_d, s) = store().await;
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

#[tokio::test]
async fn report_groups_by_local_day_and_dimension() {
    let (_d, s) = store().await;
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
