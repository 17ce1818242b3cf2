//! Reports and rollups: planned reports equal a GROUP BY over raw rows, in
//! any zone, for random data (property tests).

use super::*;

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
            held: false,
            verdict: None,
            ip_hash: None,
            buyer_country: None,
            caps: Vec::new(),
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
                match s
                    .create_payout(
                        slug("blog"),
                        currency,
                        format!("pay{i}"),
                        ulid::Ulid::from_parts(2, u128::try_from(i).unwrap()),
                        "test".into(),
                    )
                    .await
                {
                    // A zero commission leaves nothing to pay: it stays
                    // approved, which reports count the same.
                    Ok(_) | Err(StoreError::Refused(_)) => {}
                    Err(e) => panic!("payout: {e}"),
                }
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
    // Take the database back to V5: what V6 to V19 added goes, their
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
         ALTER TABLE conversions DROP COLUMN region; ALTER TABLE conversions DROP COLUMN city; \
         ALTER TABLE programs DROP COLUMN catalog_digest; ALTER TABLE affiliates DROP COLUMN catalog_digest; \
         ALTER TABLE links DROP COLUMN catalog_digest; \
         ALTER TABLE programs DROP COLUMN pixel; ALTER TABLE programs DROP COLUMN pixel_max_amount; \
         ALTER TABLE conversions DROP COLUMN held; DROP TABLE outbox; \
         DROP TABLE delivery_attempts; DROP TABLE deliveries; DROP TABLE endpoints; \
         DROP TABLE delivery_cursors; DROP INDEX clicks_by_seq; ALTER TABLE clicks DROP COLUMN seq; \
         ALTER TABLE users DROP COLUMN email; ALTER TABLE users DROP COLUMN notify_conversions; \
         DROP TABLE users; DROP INDEX payouts_affiliate; DROP INDEX conversions_affiliate; \
         DROP INDEX ledger_sums; CREATE INDEX ledger_affiliate ON ledger (affiliate_id, currency, bucket); \
         DROP TABLE fraud_rules; DROP TABLE exclusions; DROP TABLE cap_usage; \
         DROP INDEX conversions_ip_hash; DROP INDEX conversions_judged; DROP INDEX clicks_judged; \
         ALTER TABLE clicks DROP COLUMN verdict; \
         ALTER TABLE clicks DROP COLUMN verdict_rule; ALTER TABLE clicks DROP COLUMN verdict_reason; \
         ALTER TABLE conversions DROP COLUMN verdict; ALTER TABLE conversions DROP COLUMN verdict_rule; \
         ALTER TABLE conversions DROP COLUMN verdict_reason; ALTER TABLE conversions DROP COLUMN ip_hash; \
         ALTER TABLE conversions DROP COLUMN buyer_country; ALTER TABLE programs DROP COLUMN timezone; \
         ALTER TABLE programs DROP COLUMN fallback_url; \
         DROP TABLE privacy_requests; DROP INDEX conversions_click; DROP INDEX conversions_order; \
         ALTER TABLE clicks DROP COLUMN erased_at; ALTER TABLE conversions DROP COLUMN erased_at; \
         ALTER TABLE programs DROP COLUMN consent; ALTER TABLE clicks DROP COLUMN consent; \
         DROP TABLE integration_events; DROP TABLE integration_refs; \
         DROP TABLE integration_customers; DROP TABLE conversion_refunds; \
         ALTER TABLE programs DROP COLUMN integrations; \
         ALTER TABLE conversions DROP COLUMN gross_amount; ALTER TABLE conversions DROP COLUMN gross_commission; \
         DELETE FROM refinery_schema_history WHERE version IN (6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19);",
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

both!(reports_group_clicks_and_money_by_region_and_city);
async fn reports_group_clicks_and_money_by_region_and_city(b: Backend) {
    use clickward_core::conversion::ConversionStatus;
    use clickward_core::id::ConversionId;
    use clickward_core::money::Currency;
    use clickward_store::NewConversion;
    let (_d, s) = store(b).await;
    let t0 = 210 * MICROS_PER_DAY;
    let mut a = click(1, t0, 1, 1);
    (a.country, a.region, a.city) = (
        Some("JP".into()),
        Some("Tokyo".into()),
        Some("Chiyoda".into()),
    );
    let mut b = click(1, t0 + 1, 2, 2);
    (b.country, b.region, b.city) = (
        Some("JP".into()),
        Some("Osaka".into()),
        Some("Osaka".into()),
    );
    let c = click(2, t0 + 2, 3, 3);
    s.write_clicks(Arc::new(vec![a.clone(), b, c]), WINDOW)
        .await
        .unwrap();
    let facts = s.click_facts(a.click_id).await.unwrap().unwrap();
    s.record_conversion(NewConversion {
        conversion_id: ConversionId(ulid::Ulid::from_parts(7, 1)),
        program_id: 1,
        event: "sale".into(),
        order_id: "tokyo-1".into(),
        click: Some((facts, 1_000, "click_id")),
        amount: Some(5_000),
        currency: Currency::parse("USD").unwrap(),
        commission: 500,
        status: ConversionStatus::Approved,
        occurred_at: t0 + 1_000,
        received_at: t0 + 1_000,
        adv_subs: Default::default(),
        fingerprint: [0; 32],
        actor: "test".into(),
        held: false,
        verdict: None,
        ip_hash: None,
        buyer_country: None,
        caps: Vec::new(),
    })
    .await
    .unwrap();
    let q = |dims: Vec<Dimension>, filters: Vec<(Dimension, String)>| ReportQuery {
        start: t0,
        end: t0 + MICROS_PER_DAY,
        buckets: None,
        dims,
        filters,
        raw_only: false,
        by_click_time: false,
    };
    let rows = planned_equals_raw(
        s.as_ref(),
        q(vec![Dimension::Region, Dimension::City], vec![]),
        "by region and city",
    )
    .await;
    let got: Vec<(Vec<Option<String>>, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.keys.clone(),
                r.counts.gross_clicks,
                r.money.revenue.get("USD").copied().unwrap_or(0),
            )
        })
        .collect();
    let k = |r: Option<&str>, c: Option<&str>| vec![r.map(str::to_owned), c.map(str::to_owned)];
    assert_eq!(
        got,
        vec![
            (k(None, None), 1, 0),
            (k(Some("Osaka"), Some("Osaka")), 1, 0),
            (k(Some("Tokyo"), Some("Chiyoda")), 1, 5_000),
        ]
    );
    let by_city = planned_equals_raw(
        s.as_ref(),
        q(
            vec![Dimension::Link],
            vec![(Dimension::City, "Chiyoda".into())],
        ),
        "by link in one city",
    )
    .await;
    assert_eq!(by_city.len(), 1);
    assert_eq!(by_city[0].counts.gross_clicks, 1);
    assert_eq!(by_city[0].money.conversions, 1);
}

both!(an_hourly_report_over_a_year_runs_within_the_bucket_limit);
async fn an_hourly_report_over_a_year_runs_within_the_bucket_limit(b: Backend) {
    let (_d, s) = store(b).await;
    let tz = TimeZone::get("UTC").unwrap();
    let (from, to) = (date(2025, 12, 1), date(2026, 11, 30));
    let start: jiff::Timestamp = "2026-03-01T10:30:00Z".parse().unwrap();
    let t = start.as_microsecond();
    s.write_clicks(
        Arc::new(
            (0..24u8)
                .map(|i| click(1, t + i64::from(i) * HOUR, i, u128::from(i) + 1))
                .collect(),
        ),
        WINDOW,
    )
    .await
    .unwrap();
    let b = buckets(from, to, &tz, TimeGrain::Hour).unwrap();
    assert!(b.len() > 8_000, "{}", b.len());
    let (start, end) = clickward_core::report::date_range(from, to, &tz).unwrap();
    let dims = vec![Dimension::Time(TimeGrain::Hour), Dimension::Sub(0)];
    let rows = planned_equals_raw(
        s.as_ref(),
        ReportQuery {
            start,
            end,
            buckets: Some(b),
            dims: dims.clone(),
            filters: vec![],
            raw_only: false,
            by_click_time: false,
        },
        &dims,
    )
    .await;
    let gross: i64 = rows.iter().map(|r| r.counts.gross_clicks).sum();
    assert_eq!(gross, 24);
    assert_eq!(rows.len(), 24);
}
