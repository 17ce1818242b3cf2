//! Fraud rules, exclusion entries and caps: caps taken in the conversion's
//! own transaction, atomically, from one store or from two nodes.

use super::*;
use clickward_core::conversion::ConversionStatus;
use clickward_core::fraud::{Action, CapClaim, Limit, RuleSpec, Verdict};
use clickward_core::id::ConversionId;
use clickward_core::money::Currency;
use clickward_store::{
    ClickFacts, ExclusionKind, NewConversion, NewExclusion, Recorded, RuleOwner,
};

fn rule(id: &str) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        check: "visitor_velocity".into(),
        action: "reject".into(),
        limit: Some(Limit::Count(5)),
        window: Some("60s".into()),
        ..RuleSpec::default()
    }
}

both!(file_rules_leave_admin_rules_alone_and_drop_their_own_stale_ones);
async fn file_rules_leave_admin_rules_alone_and_drop_their_own_stale_ones(b: Backend) {
    let (_d, s) = store(b).await;
    let v0 = s.catalog_version().await.unwrap();
    let kept = s
        .apply_file_rules(vec![rule("a"), rule("b")], 1)
        .await
        .unwrap();
    assert!(kept.is_empty());
    assert!(
        s.catalog_version().await.unwrap() > v0,
        "rules are part of the catalogue version"
    );
    // An admin takes "b"; the file then changes "b" and drops "a".
    let mut b2 = rule("b");
    b2.action = "flag".into();
    s.save_rule(b2, RuleOwner::Admin, 2).await.unwrap();
    let kept = s
        .apply_file_rules(vec![rule("b"), rule("c")], 3)
        .await
        .unwrap();
    assert_eq!(kept, ["b"]);
    let rules = s.rules().await.unwrap();
    let ids: Vec<(&str, &str, RuleOwner)> = rules
        .iter()
        .map(|r| (r.spec.id.as_str(), r.spec.action.as_str(), r.owner))
        .collect();
    assert_eq!(
        ids,
        [
            ("b", "flag", RuleOwner::Admin),
            ("c", "reject", RuleOwner::File)
        ]
    );
    // The same file again writes nothing.
    let v = s.catalog_version().await.unwrap();
    s.apply_file_rules(vec![rule("b"), rule("c")], 4)
        .await
        .unwrap();
    assert_eq!(s.catalog_version().await.unwrap(), v);
    assert!(s.delete_rule("c".into()).await.unwrap());
    assert!(!s.delete_rule("c".into()).await.unwrap());
}

both!(exclusions_are_hashes_with_an_optional_affiliate_and_refuse_a_twin);
async fn exclusions_are_hashes_with_an_optional_affiliate_and_refuse_a_twin(b: Backend) {
    let (_d, s) = store(b).await;
    let e = s
        .add_exclusion(NewExclusion {
            hash: [7; 16],
            kind: ExclusionKind::Ip,
            label: "office".into(),
            affiliate: None,
            created_at: 5,
        })
        .await
        .unwrap();
    let own = s
        .add_exclusion(NewExclusion {
            hash: [8; 16],
            kind: ExclusionKind::Browser,
            label: "blog's laptop".into(),
            affiliate: Some(slug("blog")),
            created_at: 6,
        })
        .await
        .unwrap();
    assert_eq!(own.affiliate.as_deref(), Some("blog"));
    let twin = s
        .add_exclusion(NewExclusion {
            hash: [7; 16],
            kind: ExclusionKind::Ip,
            label: "again".into(),
            affiliate: None,
            created_at: 7,
        })
        .await;
    assert!(matches!(twin, Err(StoreError::Conflict(_))), "{twin:?}");
    let unknown = s
        .add_exclusion(NewExclusion {
            hash: [9; 16],
            kind: ExclusionKind::Ip,
            label: "x".into(),
            affiliate: Some(slug("nobody")),
            created_at: 7,
        })
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
    let all = s.exclusions().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].hash, [7; 16]);
    assert!(s.remove_exclusion(e.id).await.unwrap());
    assert_eq!(s.exclusions().await.unwrap().len(), 1);
}

fn conversion(
    program_id: i64,
    affiliate: i64,
    link_id: i64,
    n: u128,
    caps: Vec<CapClaim>,
) -> NewConversion {
    NewConversion {
        conversion_id: ConversionId(ulid::Ulid::from_parts(1, n)),
        program_id,
        event: "sale".into(),
        order_id: format!("o-{n}"),
        click: Some((
            ClickFacts {
                click_id: ClickId::from_parts(1, n),
                ts: 0,
                link_id,
                program_id,
                affiliate_id: Some(affiliate),
                affiliate_active: true,
                src: None,
                subs: Default::default(),
                country: None,
                verdict: None,
            },
            0,
            "click_id",
        )),
        amount: Some(10_000),
        currency: Currency::parse("USD").unwrap(),
        commission: 1_000,
        status: ConversionStatus::Pending,
        occurred_at: 0,
        received_at: 0,
        adv_subs: Default::default(),
        fingerprint: [n as u8; 32],
        actor: "test".into(),
        held: false,
        verdict: None,
        ip_hash: Some([3; 16]),
        buyer_country: Some("DE".into()),
        caps,
    }
}

fn cap(hard: bool, limit: i64) -> CapClaim {
    CapClaim {
        rule: "daily".into(),
        key: "conversions:program=1".into(),
        period: "2026-12-02".into(),
        amount: 1,
        limit,
        hard,
        words: format!("{limit} conversions a day for this program"),
    }
}

/// 50 conversions at once against a hard cap of 10, from `nodes` stores on
/// one database: exactly 10 are accepted, 40 stored rejected with the cap's
/// rule and sentence, one `cap.reached` event.
async fn fifty_against_ten(nodes: Vec<S>) {
    let link = nodes[0]
        .get_link(LinkCode::parse("a").unwrap())
        .await
        .unwrap();
    let blog = nodes[0].get_affiliate(slug("blog")).await.unwrap();
    let results = futures::future::join_all((0..50u128).map(|n| {
        let s = nodes[usize::try_from(n).unwrap() % nodes.len()].clone();
        let c = conversion(
            link.program_id,
            blog.id,
            link.link.id,
            n + 1,
            vec![cap(true, 10)],
        );
        async move { s.record_conversion(c).await.unwrap() }
    }))
    .await;
    let statuses: Vec<ConversionStatus> = results
        .iter()
        .map(|r| match r {
            Recorded::Created(row) => row.status,
            other => panic!("{other:?}"),
        })
        .collect();
    let accepted = statuses
        .iter()
        .filter(|s| **s == ConversionStatus::Pending)
        .count();
    assert_eq!(accepted, 10, "{statuses:?}");
    for r in &results {
        if let Recorded::Created(row) = r
            && row.status == ConversionStatus::Rejected
        {
            let v = row.verdict.as_ref().unwrap();
            assert_eq!((v.rule.as_str(), v.action), ("daily", Action::Reject));
            assert!(v.reason.contains("10 conversions a day"), "{}", v.reason);
        }
    }
    let usage = nodes[0].cap_usage(vec!["2026-12-02".into()]).await.unwrap();
    assert_eq!(
        usage,
        [(
            "conversions:program=1".to_owned(),
            "2026-12-02".to_owned(),
            10
        )]
    );
    let events = nodes[0].outbox_after(0, 1000).await.unwrap();
    let reached = events.iter().filter(|e| e.kind == "cap.reached").count();
    assert_eq!(reached, 1);
    // The 40 refused are marked `refused` in both their events (affiliate
    // postbacks skip them); the 10 accepted are not.
    let refused = |kind: &str| {
        events
            .iter()
            .filter(|e| e.kind == kind && e.payload["refused"] == true)
            .count()
    };
    assert_eq!(refused("conversion.created"), 40);
    assert_eq!(refused("conversion.rejected"), 40);
    let created = events
        .iter()
        .filter(|e| e.kind == "conversion.created")
        .count();
    assert_eq!(created, 50);
}

both!(fifty_concurrent_conversions_against_a_hard_cap_of_ten_accept_ten);
async fn fifty_concurrent_conversions_against_a_hard_cap_of_ten_accept_ten(b: Backend) {
    let (_d, s) = store(b).await;
    fifty_against_ten(vec![s]).await;
}

#[tokio::test]
async fn two_postgres_nodes_share_a_hard_cap_without_leaking() {
    let Some(b) = pg() else { return };
    let (g, s) = store(b).await;
    let other = super::cluster::second_node(&g).await;
    fifty_against_ten(vec![s, other]).await;
}

both!(a_soft_cap_flags_beyond_and_a_rejected_conversion_takes_nothing);
async fn a_soft_cap_flags_beyond_and_a_rejected_conversion_takes_nothing(b: Backend) {
    let (_d, s) = store(b).await;
    let link = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    let blog = s.get_affiliate(slug("blog")).await.unwrap();
    let mut flagged = Vec::new();
    for n in 1..=3u128 {
        let Recorded::Created(row) = s
            .record_conversion(conversion(
                link.program_id,
                blog.id,
                link.link.id,
                n,
                vec![cap(false, 2)],
            ))
            .await
            .unwrap()
        else {
            panic!("not created");
        };
        assert_eq!(row.status, ConversionStatus::Pending);
        flagged.push(row.verdict.map(|v| v.action));
    }
    assert_eq!(flagged, [None, None, Some(Action::Flag)]);
    // A conversion the rules reject is stored rejected and takes no slot.
    let mut c = conversion(
        link.program_id,
        blog.id,
        link.link.id,
        9,
        vec![cap(false, 2)],
    );
    c.verdict = Some(Verdict {
        rule: "fast".into(),
        action: Action::Reject,
        reason: "converted 3 s after the click; minimum 10 s".into(),
    });
    let Recorded::Created(row) = s.record_conversion(c.clone()).await.unwrap() else {
        panic!("not created");
    };
    assert_eq!(row.status, ConversionStatus::Rejected);
    assert_eq!(row.verdict.as_ref().map(|v| v.rule.as_str()), Some("fast"));
    let usage = s.cap_usage(vec!["2026-12-02".into()]).await.unwrap();
    assert_eq!(usage[0].2, 3);
    // Its retry is the same rejected conversion.
    let again = s.record_conversion(c).await.unwrap();
    assert!(matches!(again, Recorded::Replay(r) if r.status == ConversionStatus::Rejected));
    // Same buyer address, same affiliate: counted for the duplicate-IP rule
    // (the rejected one is not).
    assert_eq!(s.same_ip_conversions(blog.id, [3; 16], 0).await.unwrap(), 3);
    assert_eq!(s.same_ip_conversions(blog.id, [4; 16], 0).await.unwrap(), 0);
}

both!(judged_clicks_are_stored_with_their_verdict_counted_invalid_and_listed);
async fn judged_clicks_are_stored_with_their_verdict_counted_invalid_and_listed(b: Backend) {
    let (_d, s) = store(b).await;
    let link = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    let t0 = 300 * MICROS_PER_DAY + HOUR;
    let judged = |action: Action, rule: &str| {
        Some(Verdict {
            rule: rule.into(),
            action,
            reason: format!("{rule} said so"),
        })
    };
    let mut clicks = Vec::new();
    for (n, verdict) in [
        (1u8, None),
        (2, judged(Action::Flag, "spam")),
        (3, judged(Action::Reject, "flood")),
    ] {
        let mut c = click(link.link.id, t0 + i64::from(n), n, u128::from(n));
        c.program_id = link.program_id;
        c.verdict = verdict;
        clicks.push(c);
    }
    let written = s
        .write_clicks(Arc::new(clicks.clone()), WINDOW)
        .await
        .unwrap();
    // The rejected click is not human: never unique.
    assert_eq!(
        written.iter().map(|w| w.unique).collect::<Vec<_>>(),
        [true, true, false]
    );
    let facts = s.click_facts(clicks[2].click_id).await.unwrap().unwrap();
    assert_eq!(
        facts.verdict.as_ref().map(|v| v.rule.as_str()),
        Some("flood")
    );
    let row = s.get_click(clicks[2].click_id).await.unwrap();
    assert_eq!(row.invalid_reason.as_deref(), Some("flood"));
    assert_eq!(
        s.get_click(clicks[1].click_id)
            .await
            .unwrap()
            .invalid_reason,
        None
    );
    let q = ReportQuery {
        start: t0 - HOUR,
        end: t0 + HOUR,
        buckets: None,
        dims: vec![],
        filters: vec![],
        raw_only: true,
        by_click_time: false,
    };
    let r = s.click_report(q).await.unwrap();
    assert_eq!(
        (
            r[0].counts.gross_clicks,
            r[0].counts.invalid_clicks,
            r[0].counts.clicks()
        ),
        (3, 1, 2)
    );
    let counts = s.verdict_counts(t0 - HOUR).await.unwrap();
    let mut seen: Vec<(String, String, i64)> = counts
        .iter()
        .map(|c| (c.rule.clone(), c.action.clone(), c.count))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("flood".into(), "reject".into(), 1),
            ("spam".into(), "flag".into(), 1)
        ]
    );
    assert!(counts.iter().all(|c| c.what == "click" && c.day == 300));
    let recent = s.recent_verdicts(t0 - HOUR, 10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].reason, "flood said so");
    assert_eq!(recent[0].id, clicks[2].click_id.to_string());

    // Re-scoring's side: read back in time order, verdicts changed in bulk.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let n = s
        .scan_clicks(
            t0 - HOUR,
            t0 + HOUR,
            Some(link.program_id),
            Box::new(move |c| {
                sink.lock()
                    .unwrap()
                    .push((c.click_id, c.verdict.as_ref().map(|v| v.action)));
                true
            }),
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (clicks[0].click_id, None),
            (clicks[1].click_id, Some(Action::Flag)),
            (clicks[2].click_id, Some(Action::Reject)),
        ]
    );
    let changed = s
        .set_click_verdicts(vec![
            (clicks[0].click_id, judged(Action::Reject, "geo")),
            (clicks[2].click_id, None),
        ])
        .await
        .unwrap();
    assert_eq!(changed, 2);
    let first = s.get_click(clicks[0].click_id).await.unwrap();
    assert_eq!(first.invalid_reason.as_deref(), Some("geo"));
    assert!(!first.unique, "a click made invalid loses its unique flag");
    let third = s.get_click(clicks[2].click_id).await.unwrap();
    assert_eq!((third.invalid_reason, third.verdict), (None, None));
    assert!(!third.unique, "made valid again, it does not regain it");
}

both!(a_conversion_reported_approved_is_refused_by_a_full_hard_cap_through_the_lifecycle);
async fn a_conversion_reported_approved_is_refused_by_a_full_hard_cap_through_the_lifecycle(
    b: Backend,
) {
    let (_d, s) = store(b).await;
    let link = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    let blog = s.get_affiliate(slug("blog")).await.unwrap();
    let mut statuses = Vec::new();
    for n in 1..=2u128 {
        let mut c = conversion(
            link.program_id,
            blog.id,
            link.link.id,
            n,
            vec![cap(true, 1)],
        );
        c.status = ConversionStatus::Approved;
        let Recorded::Created(row) = s.record_conversion(c).await.unwrap() else {
            panic!("not created");
        };
        statuses.push(row.status);
    }
    assert_eq!(
        statuses,
        [ConversionStatus::Approved, ConversionStatus::Rejected]
    );
    // The first one's commission is payable, the refused one's is nowhere.
    let balances = s.balances(Some(slug("blog"))).await.unwrap();
    let payable: i64 = balances
        .iter()
        .filter(|b| b.bucket == clickward_core::conversion::LedgerBucket::Payable)
        .map(|b| b.minor)
        .sum();
    let pending: i64 = balances
        .iter()
        .filter(|b| b.bucket == clickward_core::conversion::LedgerBucket::Pending)
        .map(|b| b.minor)
        .sum();
    assert_eq!((payable, pending), (1_000, 0));
}
