//! PostgreSQL only: several nodes share one database.

use super::*;

/// A second "node": another store (its own pool) on the same schema.
pub(super) async fn second_node(g: &Guard) -> S {
    let Guard::Pg { config, .. } = g else {
        unreachable!("opened on PostgreSQL")
    };
    Arc::new(
        PgStore::connect_with(config.clone(), &PgOptions { pool_size: 4 })
            .await
            .unwrap(),
    )
}

/// Disables link `a` of the seed catalogue: a catalogue change.
async fn disable_link_a(s: &S) {
    let link = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    s.save_link(
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
    disable_link_a(&a).await;
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

/// Two installations in one database, each in its own schema: neither hears
/// the other's catalogue changes or live events (NOTIFY channels are one
/// namespace per database; a shared name would hand one merchant's live
/// clicks to the other's dashboard).
#[tokio::test]
async fn installations_in_other_schemas_hear_nothing_of_each_other() {
    let Some(b) = pg() else { return };
    let (_ga, a) = store(b.clone()).await;
    let (gb, other) = store(b).await;
    let b_node = second_node(&gb).await;
    let mut heard = b_node.subscribe().unwrap();
    let hello = tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hello.payload, "", "the listener's own hello");
    // The other installation changes its catalogue and publishes an event…
    disable_link_a(&a).await;
    a.publish(clickward_store::EVENTS_CHANNEL, "{\"from\":\"a\"}".into())
        .await
        .unwrap();
    // …then this one publishes: notifications arrive in commit order, so
    // anything of the other's would come first.
    other
        .publish(clickward_store::EVENTS_CHANNEL, "{\"from\":\"b\"}".into())
        .await
        .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(2), heard.recv())
        .await
        .expect("this installation's own event")
        .unwrap();
    assert_eq!(
        (next.channel.as_str(), next.payload.as_str()),
        (clickward_store::EVENTS_CHANNEL, "{\"from\":\"b\"}"),
        "heard the other installation"
    );
}

/// The shared limiter: two nodes taking one client's requests at the same
/// moment allow exactly its burst between them, another client is not
/// touched, the wait is about one interval, and recovered state is swept.
#[tokio::test]
async fn two_nodes_share_one_rate_limit() {
    let Some(b) = pg() else { return };
    let (g, a) = store(b).await;
    let other = second_node(&g).await;
    // 10 requests per minute: one per 6 s, a burst of 10.
    let interval = 6 * MICROS_PER_SEC;
    let tolerance = 10 * interval;
    let takes = (0..30).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { other.clone() };
        async move {
            s.take_shared_rate("postback", [7; 16], interval, tolerance)
                .await
                .unwrap()
                .expect("PostgreSQL shares a limiter")
        }
    });
    let answers = futures::future::join_all(takes).await;
    let allowed = answers.iter().filter(|w| w.is_none()).count();
    assert_eq!(allowed, 10, "{answers:?}");
    for wait in answers.iter().flatten() {
        assert!(
            *wait > 0 && *wait <= interval,
            "a refused request waits at most one interval: {wait}"
        );
    }
    let fresh = a
        .take_shared_rate("postback", [8; 16], interval, tolerance)
        .await
        .unwrap();
    assert_eq!(fresh, Some(None), "another client has its own burst");
    let same_client_other_class = other
        .take_shared_rate("login", [7; 16], interval, tolerance)
        .await
        .unwrap();
    assert_eq!(same_client_other_class, Some(None));
    // Nothing has recovered yet: a minute of debt is ahead of the clock.
    assert_eq!(a.sweep_shared_rates().await.unwrap(), 0);
    let quick = 1;
    a.take_shared_rate("pixel", [9; 16], quick, quick)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while a.sweep_shared_rates().await.unwrap() == 0 {
        assert!(std::time::Instant::now() < deadline, "never swept");
        tokio::task::yield_now().await;
    }
}
