//! Erasure: a visitor's raw rows lose what links them to the person, in one
//! transaction, while rollups and the ledger keep their numbers; a second
//! run changes nothing; export selects the same rows.

use super::*;
use clickward_core::conversion::ConversionStatus;
use clickward_core::id::ConversionId;
use clickward_core::money::Currency;
use clickward_store::{ClickFacts, ErasureCounts, NewConversion, Recorded, RequestStatus, Subject};

const EMAIL: &str = "jane.doe@example.com";

both!(erasing_a_visitor_anonymises_their_rows_and_keeps_the_numbers);
async fn erasing_a_visitor_anonymises_their_rows_and_keeps_the_numbers(b: Backend) {
    let (_g, s) = store(b).await;
    let t0 = 500 * MICROS_PER_DAY;
    // Jane (visitor 7): two clicks on two links, sub1 her e-mail; Max
    // (visitor 8): one click.
    let mut jane_a = click(1, t0, 7, 1);
    jane_a.params.subs[0] = Some(EMAIL.into());
    jane_a.referrer = Some("https://news.example/jane-profile".into());
    let jane_b = click(2, t0 + HOUR, 7, 2);
    let max = click(1, t0 + 2 * HOUR, 8, 3);
    s.write_clicks(Arc::new(vec![jane_a.clone(), jane_b, max]), WINDOW)
        .await
        .unwrap();
    let link = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    let Recorded::Created(conv) = s
        .record_conversion(NewConversion {
            conversion_id: ConversionId(ulid::Ulid::from_parts(9, 1)),
            program_id: link.program_id,
            event: "sale".into(),
            order_id: "ORD-JANE-1".into(),
            click: Some((
                ClickFacts {
                    click_id: jane_a.click_id,
                    ts: t0,
                    link_id: link.link.id,
                    program_id: link.program_id,
                    affiliate_id: None,
                    affiliate_active: true,
                    src: None,
                    subs: [Some(EMAIL.into()), None, None, None, None],
                    country: None,
                    verdict: None,
                },
                HOUR,
                "click_id",
            )),
            amount: Some(4_200),
            currency: Currency::parse("EUR").unwrap(),
            commission: 420,
            status: ConversionStatus::Pending,
            occurred_at: t0 + HOUR,
            received_at: t0 + HOUR,
            adv_subs: [Some("jane-crm-17".into()), None, None, None, None],
            fingerprint: [1; 32],
            actor: "test".into(),
            held: false,
            verdict: None,
            ip_hash: Some([5; 16]),
            buyer_country: None,
            caps: Vec::new(),
        })
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    catch_up(&s, t0 + 2 * MICROS_PER_DAY).await;
    let report = |s: S| async move {
        let mut rows = Vec::new();
        for raw_only in [false, true] {
            rows.push(
                s.click_report(ReportQuery {
                    start: t0 - MICROS_PER_DAY,
                    end: t0 + MICROS_PER_DAY,
                    buckets: None,
                    dims: vec![Dimension::Link, Dimension::Src],
                    filters: vec![],
                    raw_only,
                    by_click_time: false,
                })
                .await
                .unwrap(),
            );
        }
        rows
    };
    let before = report(s.clone()).await;
    let jane = Subject::Visitor(VisitorKey([7; 16]));

    let export = s.subject_data(jane.clone()).await.unwrap();
    assert_eq!(export.clicks.len(), 2);
    assert_eq!(export.conversions.len(), 1);
    assert_eq!(export.conversions[0].order_id, "ORD-JANE-1");

    let r = s
        .receive_erasure("era_1".into(), jane.clone(), "test".into(), t0)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.subject.as_str()),
        (RequestStatus::Received, "visitor")
    );
    assert_eq!(s.pending_erasures().await.unwrap(), ["era_1"]);
    let e = s.run_erasure("era_1".into(), t0 + 1).await.unwrap();
    assert_eq!(e.receipt.status, RequestStatus::Done);
    let counts = e.receipt.counts.unwrap();
    assert_eq!(
        (counts.clicks, counts.conversions, counts.visitor_links),
        (2, 1, 2),
        "{counts:?}"
    );
    assert!(
        counts.outbox >= 1,
        "the conversion's events are redacted: {counts:?}"
    );
    assert_eq!(e.click_ids.len(), 2);
    assert_eq!(e.conversion_ids, [conv.conversion_id]);
    assert!(s.pending_erasures().await.unwrap().is_empty());

    // Nothing that names Jane is left; Max is untouched; the numbers hold.
    let clicks = s.list_clicks(None, 100).await.unwrap();
    let jane_hex = VisitorKey([7; 16]).to_hex();
    for k in &clicks {
        assert_ne!(k.visitor_key, jane_hex);
        assert!(k.subs.iter().all(Option::is_none), "{:?}", k.subs);
        assert!(k.referrer.is_none());
    }
    assert!(
        clicks
            .iter()
            .any(|k| k.visitor_key == VisitorKey([8; 16]).to_hex())
    );
    let erased = s.get_conversion(conv.conversion_id).await.unwrap();
    assert_eq!(erased.order_id, format!("erased:{}", conv.conversion_id));
    assert!(
        erased
            .subs
            .iter()
            .chain(&erased.adv_subs)
            .all(Option::is_none)
    );
    assert_eq!(
        (erased.amount_minor, erased.commission_minor),
        (Some(4_200), 420)
    );
    assert_eq!(erased.click_id, Some(jane_a.click_id), "attribution stays");
    let events = s.outbox_after(0, 1000).await.unwrap();
    for ev in &events {
        let text = ev.payload.to_string();
        assert!(
            !text.contains("ORD-JANE-1") && !text.contains(EMAIL) && !text.contains("jane-crm"),
            "{}: {text}",
            ev.kind
        );
    }
    let told = events
        .iter()
        .find(|ev| ev.kind == "privacy.erasure")
        .expect("a privacy.erasure event");
    assert_eq!(told.payload["erasure"]["id"], "era_1");
    assert_eq!(
        told.payload["erasure"]["click_ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(report(s.clone()).await, before, "reports do not move");

    // Again: done, nothing changed, nothing told.
    s.receive_erasure("era_2".into(), jane.clone(), "test".into(), t0 + 2)
        .await
        .unwrap();
    let again = s.run_erasure("era_2".into(), t0 + 3).await.unwrap();
    assert_eq!(again.receipt.status, RequestStatus::Done);
    assert_eq!(again.receipt.counts, Some(ErasureCounts::default()));
    let told_again = s.outbox_after(0, 1000).await.unwrap();
    assert_eq!(told_again.len(), events.len());
    // A run of a finished request is a no-op.
    let rerun = s.run_erasure("era_1".into(), t0 + 4).await.unwrap();
    assert_eq!(rerun.receipt.counts, Some(counts));
    assert!(rerun.click_ids.is_empty());
    assert!(matches!(
        s.run_erasure("era_404".into(), t0).await,
        Err(StoreError::NotFound(_))
    ));
    let listed = s.receipts(None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(s.subject_data(jane).await.unwrap().clicks.is_empty());
}

both!(erasing_by_order_or_sub_value_reaches_the_same_person);
async fn erasing_by_order_or_sub_value_reaches_the_same_person(b: Backend) {
    let (_g, s) = store(b).await;
    let t0 = 600 * MICROS_PER_DAY;
    let mut a = click(1, t0, 3, 1);
    a.params.subs[2] = Some(EMAIL.into());
    let other = click(1, t0 + 1, 4, 2);
    s.write_clicks(Arc::new(vec![a, other]), WINDOW)
        .await
        .unwrap();
    s.receive_erasure("era_s".into(), Subject::Sub(EMAIL.into()), "t".into(), t0)
        .await
        .unwrap();
    let e = s.run_erasure("era_s".into(), t0).await.unwrap();
    assert_eq!(e.receipt.counts.map(|c| c.clicks), Some(1));
    assert_eq!(e.visitor_keys, [VisitorKey([3; 16])]);
    let clicks = s.list_clicks(None, 10).await.unwrap();
    assert!(
        clicks
            .iter()
            .all(|k| k.visitor_key != VisitorKey([3; 16]).to_hex())
    );
    assert!(
        clicks
            .iter()
            .any(|k| k.visitor_key == VisitorKey([4; 16]).to_hex())
    );
    // An order nobody placed: done, 0 rows.
    let nobody = Subject::Order {
        order_id: "NOPE".into(),
        program: Some("shop".into()),
    };
    s.receive_erasure("era_o".into(), nobody, "t".into(), t0)
        .await
        .unwrap();
    let e = s.run_erasure("era_o".into(), t0).await.unwrap();
    assert_eq!(e.receipt.status, RequestStatus::Done);
    assert_eq!(e.receipt.counts, Some(ErasureCounts::default()));
    // A permanent failure is reported failed and not retried.
    s.receive_erasure("era_f".into(), Subject::Sub("x".into()), "t".into(), t0)
        .await
        .unwrap();
    s.erasure_attempt_failed("era_f".into(), "broken".into(), true)
        .await
        .unwrap();
    let f = s.receipt("era_f".into()).await.unwrap().unwrap();
    assert_eq!(
        (f.status, f.error.as_deref()),
        (RequestStatus::Failed, Some("broken"))
    );
    assert!(s.pending_erasures().await.unwrap().is_empty());
}

both!(retention_clears_old_conversions_raw_fields_in_batches);
async fn retention_clears_old_conversions_raw_fields_in_batches(b: Backend) {
    let (_g, s) = store(b).await;
    let link = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    let mut ids = Vec::new();
    for (n, at) in [(1u128, 1_000i64), (2, 2_000), (3, 9_000)] {
        let Recorded::Created(c) = s
            .record_conversion(NewConversion {
                conversion_id: ConversionId(ulid::Ulid::from_parts(7, n)),
                program_id: link.program_id,
                event: "sale".into(),
                order_id: format!("R-{n}"),
                click: None,
                amount: Some(1_000),
                currency: Currency::parse("EUR").unwrap(),
                commission: 100,
                status: ConversionStatus::Pending,
                occurred_at: at,
                received_at: at,
                adv_subs: [Some(format!("crm-{n}")), None, None, None, None],
                fingerprint: [n as u8; 32],
                actor: "test".into(),
                held: false,
                verdict: None,
                ip_hash: Some([n as u8; 16]),
                buyer_country: None,
                caps: Vec::new(),
            })
            .await
            .unwrap()
        else {
            panic!("not created")
        };
        ids.push(c.conversion_id);
    }
    assert_eq!(s.purge_conversion_fields(5_000, 1).await.unwrap(), 1);
    assert_eq!(s.purge_conversion_fields(5_000, 10).await.unwrap(), 1);
    assert_eq!(s.purge_conversion_fields(5_000, 10).await.unwrap(), 0);
    for (id, cleared) in ids.iter().zip([true, true, false]) {
        let c = s.get_conversion(*id).await.unwrap();
        assert_eq!(c.adv_subs[0].is_none(), cleared, "{id}");
        assert_eq!(
            (c.amount_minor, c.order_id.starts_with("R-")),
            (Some(1_000), true)
        );
    }
}

both!(a_batch_of_erasures_finds_each_subjects_rows_in_one_call);
async fn a_batch_of_erasures_finds_each_subjects_rows_in_one_call(b: Backend) {
    let (_g, s) = store(b).await;
    let t0 = 700 * MICROS_PER_DAY;
    // Visitors 10, 11 and 12; visitor 12's second click carries the e-mail.
    let mut clicks = vec![
        click(1, t0, 10, 1),
        click(2, t0 + 1, 10, 2),
        click(1, t0 + 2, 11, 3),
        click(1, t0 + 3, 12, 4),
    ];
    clicks[3].params.subs[4] = Some(EMAIL.into());
    s.write_clicks(Arc::new(clicks), WINDOW).await.unwrap();
    let subjects = [
        ("era_b1", Subject::Visitor(VisitorKey([10; 16]))),
        ("era_b2", Subject::Sub(EMAIL.into())),
        ("era_b3", Subject::Visitor(VisitorKey([10; 16]))),
        ("era_b4", Subject::Visitor(VisitorKey([99; 16]))),
    ];
    for (id, subject) in &subjects {
        s.receive_erasure((*id).into(), subject.clone(), "t".into(), t0)
            .await
            .unwrap();
    }
    // Received twice (a node handing over what it held): kept once.
    let again = s
        .receive_erasure(
            "era_b1".into(),
            Subject::Sub("other".into()),
            "t".into(),
            t0,
        )
        .await
        .unwrap();
    assert_eq!(again.subject, "visitor");
    let ids: Vec<String> = subjects.iter().map(|(id, _)| (*id).to_owned()).collect();
    // Paced: the clicks are scanned in ranges, with rests between.
    let mut out = s
        .run_erasures(ids.clone(), t0, clickward_store::Pace::share(0.5))
        .await
        .unwrap();
    // An unknown id fails alone.
    out.extend(
        s.run_erasures(vec!["era_nope".into()], t0, clickward_store::Pace::FULL)
            .await
            .unwrap(),
    );
    let counts: Vec<Option<u64>> = out
        .iter()
        .map(|r| {
            r.as_ref()
                .ok()
                .and_then(|e| e.receipt.counts.map(|c| c.clicks))
        })
        .collect();
    // The same visitor asked twice in one batch: the second finds it done.
    assert_eq!(
        counts,
        [Some(2), Some(1), Some(0), Some(0), None],
        "{out:?}"
    );
    assert!(
        matches!(out[4], Err(StoreError::NotFound(_))),
        "{:?}",
        out[4]
    );
    let left: Vec<String> = s
        .list_clicks(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.visitor_key)
        .collect();
    assert!(left.contains(&VisitorKey([11; 16]).to_hex()), "{left:?}");
    for gone in [10u8, 12] {
        assert!(!left.contains(&VisitorKey([gone; 16]).to_hex()), "{left:?}");
    }
    assert!(s.pending_erasures().await.unwrap().is_empty());
    // Run again: nothing changes, every receipt as it was.
    let again = s
        .run_erasures(ids, t0, clickward_store::Pace::FULL)
        .await
        .unwrap();
    assert!(
        again
            .iter()
            .all(|r| r.as_ref().is_ok_and(|e| e.subject.is_none()))
    );
}
