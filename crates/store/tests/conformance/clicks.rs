//! Clicks: unique flags, replays, retention.

use super::*;

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

both!(clicks_are_read_back_in_insertion_order_so_late_ones_are_not_skipped);
async fn clicks_are_read_back_in_insertion_order_so_late_ones_are_not_skipped(b: Backend) {
    let (_d, s) = store(b).await;
    assert_eq!(s.click_seq_head().await.unwrap(), 0);
    let t0 = 200 * MICROS_PER_DAY;
    s.write_clicks(
        Arc::new(vec![click(1, t0 + 10, 1, 1), click(1, t0 + 20, 2, 2)]),
        WINDOW,
    )
    .await
    .unwrap();
    let first = s.clicks_after(0, 100).await.unwrap();
    assert_eq!(first.len(), 2);
    let cursor = first[1].0;
    assert_eq!(s.click_seq_head().await.unwrap(), cursor);
    // A click from an hour before, shipped late from a spool: its ULID sorts
    // first, its seq after the cursor.
    let late = click(1, t0 - HOUR, 3, 3);
    let again = click(1, t0 + 10, 1, 1); // the first again: not written twice
    s.write_clicks(Arc::new(vec![late.clone(), again]), WINDOW)
        .await
        .unwrap();
    let next = s.clicks_after(cursor, 100).await.unwrap();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].1.click_id, late.click_id);
    assert!(next[0].0 > cursor);
    let all: Vec<_> = s
        .clicks_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(q, c)| (q, c.click_id))
        .collect();
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ascending seq");
    assert_eq!(all.len(), 3);
    assert_eq!(s.clicks_after(0, 2).await.unwrap().len(), 2, "limit");
}

both!(a_page_of_clicks_filters_and_continues_after_its_cursor);
async fn a_page_of_clicks_filters_and_continues_after_its_cursor(b: Backend) {
    let (_d, s) = store(b).await;
    let t0 = 200 * MICROS_PER_DAY;
    let link_a = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    let mut clicks: Vec<NewClick> = (0..10u8)
        .map(|i| {
            let mut c = click(
                1 + i64::from(i % 2),
                t0 + i64::from(i) * MICROS_PER_SEC,
                i,
                u128::from(i),
            );
            // Link `a` belongs to affiliate `blog`.
            if i % 2 == 0 {
                c.affiliate_id = link_a.affiliate_id;
            }
            c
        })
        .collect();
    clicks[3].bot = Some(BotReason::UaPattern);
    s.write_clicks(Arc::new(clicks), WINDOW).await.unwrap();
    let q = |f: &dyn Fn(&mut ClickQuery)| {
        let mut q = ClickQuery::newest(100);
        f(&mut q);
        q
    };
    let ts = |rows: &[clickward_store::ClickRow]| {
        rows.iter()
            .map(|r| (r.ts - t0) / MICROS_PER_SEC)
            .collect::<Vec<_>>()
    };
    let all = s.page_clicks(q(&|_| {})).await.unwrap();
    assert_eq!(ts(&all), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    let page = s
        .page_clicks(q(&|q| {
            q.after = Some(all[2].click_id);
            q.limit = 3;
        }))
        .await
        .unwrap();
    assert_eq!(ts(&page), [6, 5, 4]);
    let page = s
        .page_clicks(q(&|q| {
            q.after = Some(all[2].click_id);
            q.oldest_first = true;
        }))
        .await
        .unwrap();
    assert_eq!(ts(&page), [8, 9]);
    let one = |f: &'static dyn Fn(&mut ClickQuery)| {
        let s = s.clone();
        async move { ts(&s.page_clicks(q(f)).await.unwrap()) }
    };
    assert_eq!(
        one(&|q| q.link = Some(LinkCode::parse("b").unwrap())).await,
        [9, 7, 5, 3, 1]
    );
    assert_eq!(
        one(&|q| q.affiliate = Some(Slug::parse("blog").unwrap())).await,
        [8, 6, 4, 2, 0]
    );
    assert_eq!(
        one(&|q| q.program = Some(Slug::parse("nope").unwrap())).await,
        Vec::<i64>::new()
    );
    assert_eq!(one(&|q| q.bot = Some(true)).await, [3]);
    assert_eq!(one(&|q| q.unique = Some(false)).await, [3]);
    assert_eq!(
        one(&|q| q.verdict = Some(Some("flag".into()))).await,
        Vec::<i64>::new()
    );
    assert_eq!(one(&|q| q.verdict = Some(None)).await.len(), 10);
    // A time range: from inclusive, to exclusive, to the microsecond.
    assert_eq!(
        one(&|q| {
            q.from = Some(200 * MICROS_PER_DAY + 2 * MICROS_PER_SEC);
            q.to = Some(200 * MICROS_PER_DAY + 5 * MICROS_PER_SEC);
        })
        .await,
        [4, 3, 2]
    );
    assert_eq!(
        one(&|q| {
            q.from = Some(200 * MICROS_PER_DAY + 2 * MICROS_PER_SEC + 1);
            q.to = Some(200 * MICROS_PER_DAY + 5 * MICROS_PER_SEC + 1);
        })
        .await,
        [5, 4, 3]
    );
}
