//! Outbound delivery: the outbox fanned out to endpoints exactly once,
//! leases that two nodes never share, attempts that move deliveries on,
//! endpoints disabled by 410 or a day of failures, replays.

use super::*;
use clickward_core::delivery::EndpointKind;
use clickward_store::{
    AttemptNext, AttemptRecord, DeliveryQuery, Endpoint, EndpointChange, HttpMethod, NewEndpoint,
};

fn endpoint(events: &[&str], affiliate: Option<&str>) -> NewEndpoint {
    NewEndpoint {
        kind: EndpointKind::Webhook,
        url: "https://hooks.example/in".into(),
        method: HttpMethod::Post,
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        program: None,
        affiliate: affiliate.map(slug),
        description: "test".into(),
        secret: "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=".into(),
    }
}

async fn new_affiliate(s: &S, name: &str) {
    s.save_affiliate(
        AffiliateInput {
            slug: slug(name),
            name: name.into(),
            status: Status::Active,
        },
        SaveMode::Create,
    )
    .await
    .unwrap();
}

async fn of(s: &S, e: &Endpoint) -> Vec<clickward_store::DeliveryRow> {
    s.deliveries(DeliveryQuery {
        endpoint: Some(e.id.clone()),
        limit: 1000,
        ..DeliveryQuery::default()
    })
    .await
    .unwrap()
}

fn attempt(id: i64, owner: &str, at: i64, next: AttemptNext) -> AttemptRecord {
    AttemptRecord {
        delivery_id: id,
        owner: owner.into(),
        at,
        url: "https://hooks.example/in".into(),
        status: Some(match next {
            AttemptNext::Delivered => 200,
            AttemptNext::Gone => 410,
            _ => 503,
        }),
        error: None,
        latency_us: 1500,
        response: "ok".into(),
        next,
        disable_after_us: 24 * HOUR,
    }
}

both!(dispatch_fans_each_event_out_once_to_the_endpoints_that_want_it);
async fn dispatch_fans_each_event_out_once_to_the_endpoints_that_want_it(b: Backend) {
    let (_d, s) = store(b).await;
    let all_affiliates = s
        .create_endpoint(endpoint(&["affiliate.*"], None))
        .await
        .unwrap();
    let links = s
        .create_endpoint(endpoint(&["link.*"], None))
        .await
        .unwrap();
    let blogs = s
        .create_endpoint(endpoint(&["*"], Some("blog")))
        .await
        .unwrap();
    let off = s.create_endpoint(endpoint(&["*"], None)).await.unwrap();
    s.update_endpoint(
        off.id.clone(),
        EndpointChange {
            enabled: Some((false, "disabled by test".into())),
            ..EndpointChange::default()
        },
    )
    .await
    .unwrap();
    // blog renamed (affiliate.updated about blog), another made.
    s.save_affiliate(
        AffiliateInput {
            slug: slug("blog"),
            name: "Blog, renamed".into(),
            status: Status::Active,
        },
        SaveMode::Update,
    )
    .await
    .unwrap();
    new_affiliate(&s, "other").await;
    // The catalogue's events happened before any endpoint existed: read,
    // sent to nobody. Then the two changes, and webhook.disabled of `off`.
    let mut read = 0;
    loop {
        match s.dispatch(1_000, 2).await.unwrap() {
            0 => break,
            n => read += n,
        }
    }
    assert!(read >= 3, "{read}");
    assert_eq!(s.dispatch(1_000, 500).await.unwrap(), 0, "nothing new");
    let got = of(&s, &all_affiliates).await;
    let mut kinds: Vec<_> = got.iter().map(|d| d.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["affiliate.created", "affiliate.updated"]);
    assert!(
        got.iter()
            .all(|d| d.status == "pending" && d.attempts == 0 && d.next_attempt_at == Some(1_000))
    );
    assert!(of(&s, &links).await.is_empty());
    let blog: Vec<_> = of(&s, &blogs).await.into_iter().map(|d| d.kind).collect();
    assert_eq!(blog, ["affiliate.updated"], "only events about blog");
    assert!(
        of(&s, &off).await.is_empty(),
        "a disabled endpoint gets nothing"
    );
    let told = s.outbox_after(0, 1000).await.unwrap();
    let disabled: Vec<_> = told
        .iter()
        .filter(|e| e.kind == "webhook.disabled")
        .collect();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].payload["webhook"]["id"], off.id.as_str());
    assert!(
        !disabled[0].payload.to_string().contains("whsec_"),
        "no secret in events"
    );
    // The portal's view of blog: its postbacks' deliveries, never the
    // merchant's webhook filtered on blog.
    let portal = s
        .deliveries(DeliveryQuery {
            affiliate: Some(slug("blog")),
            limit: 100,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert!(portal.is_empty(), "{portal:?}");
    // An endpoint made now gets none of what was already dispatched.
    let late = s.create_endpoint(endpoint(&["*"], None)).await.unwrap();
    assert_eq!(s.dispatch(1_000, 500).await.unwrap(), 0);
    assert!(of(&s, &late).await.is_empty());
}

both!(two_nodes_never_lease_the_same_delivery_and_an_expired_lease_is_taken_over);
async fn two_nodes_never_lease_the_same_delivery_and_an_expired_lease_is_taken_over(b: Backend) {
    let (_d, s) = store(b).await;
    let e = s
        .create_endpoint(endpoint(&["affiliate.created"], None))
        .await
        .unwrap();
    for i in 0..20 {
        new_affiliate(&s, &format!("aff{i}")).await;
    }
    while s.dispatch(1_000, 500).await.unwrap() > 0 {}
    assert_eq!(of(&s, &e).await.len(), 20);
    // Two nodes at once, each asking for more than half.
    let (a, b2) = tokio::join!(
        s.lease("n1".into(), 1_000, 61_000, 15),
        s.lease("n2".into(), 1_000, 61_000, 15)
    );
    let (a, b2) = (a.unwrap(), b2.unwrap());
    let mut ids: Vec<i64> = a.iter().chain(&b2).map(|d| d.id).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a delivery leased twice");
    assert_eq!(n, 20, "every due delivery leased by one of them");
    assert!(
        a.iter()
            .all(|d| d.endpoint.secret.starts_with("whsec_") && d.event_id.starts_with("evt_"))
    );
    // While leased, nobody else gets them.
    assert!(
        s.lease("n3".into(), 2_000, 62_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // n1's attempt on a delivery n2 holds moves nothing.
    let theirs = b2.first().map_or(a[0].id, |d| d.id);
    let holder = if b2.is_empty() { "n1" } else { "n2" };
    let other = if holder == "n1" { "n2" } else { "n1" };
    assert_eq!(
        s.record_attempt(attempt(theirs, other, 3_000, AttemptNext::Delivered))
            .await
            .unwrap(),
        None
    );
    let (row, log) = s.delivery(theirs).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.attempts, log.len()),
        ("pending", 0, 0)
    );
    // n1 and n2 die; after the leases end, n3 takes all 20 over.
    let taken = s.lease("n3".into(), 61_001, 121_001, 100).await.unwrap();
    assert_eq!(taken.len(), 20);
    s.record_attempt(attempt(taken[0].id, "n3", 61_002, AttemptNext::Delivered))
        .await
        .unwrap();
    let (row, log) = s.delivery(taken[0].id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.attempts, row.last_status),
        ("delivered", 1, Some(200))
    );
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].n, log[0].status, log[0].latency_us),
        (1, Some(200), 1500)
    );
    assert!(
        s.lease("n4".into(), 200_000, 260_000, 100)
            .await
            .unwrap()
            .len()
            == 19,
        "a delivered one is never sent again"
    );
}

both!(attempts_move_deliveries_on_and_failing_endpoints_are_disabled);
async fn attempts_move_deliveries_on_and_failing_endpoints_are_disabled(b: Backend) {
    let (_d, s) = store(b).await;
    let gone = s
        .create_endpoint(endpoint(&["affiliate.created"], None))
        .await
        .unwrap();
    let flaky = s
        .create_endpoint(endpoint(&["affiliate.created"], None))
        .await
        .unwrap();
    new_affiliate(&s, "x1").await;
    while s.dispatch(0, 500).await.unwrap() > 0 {}
    let leased = s.lease("n".into(), 0, 60_000, 10).await.unwrap();
    assert_eq!(leased.len(), 2);
    let to = |e: &Endpoint| leased.iter().find(|d| d.endpoint.id == e.id).unwrap().id;
    // A retry waits for its time.
    s.record_attempt(attempt(
        to(&flaky),
        "n",
        1_000,
        AttemptNext::RetryAt(5_000_000),
    ))
    .await
    .unwrap();
    let (row, _) = s.delivery(to(&flaky)).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.next_attempt_at),
        ("pending", Some(5_000_000))
    );
    assert!(
        s.lease("n".into(), 4_999_999, 5_060_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|d| d.id != to(&flaky))
    );
    // 410: the endpoint is disabled at once, told as webhook.disabled.
    let disabled = s
        .record_attempt(attempt(to(&gone), "n", 2_000, AttemptNext::Gone))
        .await
        .unwrap()
        .expect("disabled");
    assert_eq!(disabled.id, gone.id);
    let g = s.endpoint(gone.id.clone()).await.unwrap().unwrap();
    assert!(!g.enabled);
    assert!(g.disabled_reason.unwrap().contains("410"));
    let (row, _) = s.delivery(to(&gone)).await.unwrap().unwrap();
    assert_eq!(row.status, "dead");
    // The flaky one keeps failing for a day without a success: disabled.
    let again = s.lease("n".into(), 5_000_000, 5_060_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    let day = 24 * HOUR;
    assert_eq!(
        s.record_attempt(attempt(
            again[0].id,
            "n",
            1_000 + day / 2,
            AttemptNext::RetryAt(1_000 + day)
        ))
        .await
        .unwrap(),
        None,
        "half a day of failures: still enabled"
    );
    let last = s
        .lease("n".into(), 1_000 + day, 2_000 + day, 10)
        .await
        .unwrap();
    let off = s
        .record_attempt(attempt(last[0].id, "n", 1_000 + day, AttemptNext::Dead))
        .await
        .unwrap()
        .expect("a day of failures disables it");
    assert!(
        off.disabled_reason.unwrap().contains("24 h"),
        "reason names the day"
    );
    let (row, log) = s.delivery(last[0].id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.attempts, log.len()),
        ("dead", 3, 3)
    );
    let told: Vec<_> = s
        .outbox_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "webhook.disabled")
        .collect();
    assert_eq!(told.len(), 2);
    // Enabled again, a dead letter replayed: pending now, attempts kept.
    s.update_endpoint(
        flaky.id.clone(),
        EndpointChange {
            enabled: Some((true, String::new())),
            ..EndpointChange::default()
        },
    )
    .await
    .unwrap();
    let f = s.endpoint(flaky.id.clone()).await.unwrap().unwrap();
    assert!(f.enabled && f.failing_since.is_none() && f.disabled_reason.is_none());
    assert!(s.replay_delivery(last[0].id, 9 * day).await.unwrap());
    assert!(!s.replay_delivery(999_999, 9 * day).await.unwrap());
    let back = s
        .lease("n".into(), 9 * day, 9 * day + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].id, back[0].attempts), (last[0].id, 3));
    // Dead letters are listed by status.
    let dead = s
        .deliveries(DeliveryQuery {
            status: Some("dead".into()),
            limit: 10,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "the 410 one");
}

both!(replays_of_a_range_and_test_events_reach_one_endpoint);
async fn replays_of_a_range_and_test_events_reach_one_endpoint(b: Backend) {
    let (_d, s) = store(b).await;
    let e = s.create_endpoint(endpoint(&["*"], None)).await.unwrap();
    let other = s.create_endpoint(endpoint(&["*"], None)).await.unwrap();
    new_affiliate(&s, "r1").await;
    new_affiliate(&s, "r2").await;
    while s.dispatch(0, 500).await.unwrap() > 0 {}
    for d in s.lease("n".into(), 0, 60_000, 100).await.unwrap() {
        s.record_attempt(attempt(d.id, "n", 10, AttemptNext::Delivered))
            .await
            .unwrap();
    }
    // Every affiliate event of all time, to `e` only.
    let n = s
        .replay_events(e.id.clone(), vec!["affiliate.*".into()], 0, i64::MAX, 100)
        .await
        .unwrap();
    assert!(n >= 3, "the seed's blog and r1, r2: {n}");
    let again = s.lease("n".into(), 100, 60_000, 100).await.unwrap();
    assert_eq!(again.len() as u64, n);
    assert!(
        again
            .iter()
            .all(|d| d.endpoint.id == e.id && d.kind.starts_with("affiliate."))
    );
    // A test event to `other`.
    let id = s
        .enqueue(
            other.id.clone(),
            "evt_01JD0000000000000000000000".into(),
            "webhook.test".into(),
            serde_json::json!({"v": 1}),
            200,
        )
        .await
        .unwrap();
    let t = s.lease("n".into(), 200, 60_000, 100).await.unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].id, t[0].kind.as_str(), t[0].endpoint.id.as_str()),
        (id, "webhook.test", other.id.as_str())
    );
    assert!(matches!(
        s.replay_events("ep_nope".into(), vec!["*".into()], 0, 1, 0)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.endpoint("nope".into()).await.unwrap(), None);
    // A postback filtered on an unknown affiliate is refused by name.
    let mut pb = endpoint(&["conversion.created"], Some("nobody"));
    pb.kind = EndpointKind::Postback;
    assert!(
        matches!(s.create_endpoint(pb).await, Err(StoreError::NotFound(m)) if m.contains("nobody"))
    );
    // The portal's view: only endpoints filtered on its affiliate.
    let mine = s
        .create_endpoint(endpoint(&["conversion.*"], Some("blog")))
        .await
        .unwrap();
    let listed = s.endpoints(Some(slug("blog"))).await.unwrap();
    assert_eq!(
        listed.iter().map(|x| x.id.clone()).collect::<Vec<_>>(),
        [mine.id]
    );
    assert_eq!(s.endpoints(None).await.unwrap().len(), 3);
}

both!(retention_deletes_finished_deliveries_of_one_kind_and_keeps_pending_ones);
async fn retention_deletes_finished_deliveries_of_one_kind_and_keeps_pending_ones(b: Backend) {
    let (_d, s) = store(b).await;
    let e = s
        .create_endpoint(endpoint(&["affiliate.*"], None))
        .await
        .unwrap();
    for i in 0..3 {
        new_affiliate(&s, &format!("kept{i}")).await;
    }
    while s.dispatch(1_000, 500).await.unwrap() > 0 {}
    let leased = s.lease("n1".into(), 1_000, 61_000, 10).await.unwrap();
    assert_eq!(leased.len(), 3);
    // Two finished at 2,000 (one delivered, one dead), one still pending.
    s.record_attempt(attempt(leased[0].id, "n1", 2_000, AttemptNext::Delivered))
        .await
        .unwrap();
    s.record_attempt(attempt(leased[1].id, "n1", 2_000, AttemptNext::Dead))
        .await
        .unwrap();
    s.record_attempt(attempt(
        leased[2].id,
        "n1",
        2_000,
        AttemptNext::RetryAt(9_000),
    ))
    .await
    .unwrap();
    // Not old enough, or another kind: nothing.
    assert_eq!(
        s.purge_deliveries(EndpointKind::Webhook, 2_000, 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.purge_deliveries(EndpointKind::Postback, 5_000, 100)
            .await
            .unwrap(),
        0
    );
    // In batches: one, then the other, then none; the pending one stays.
    assert_eq!(
        s.purge_deliveries(EndpointKind::Webhook, 5_000, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.purge_deliveries(EndpointKind::Webhook, 5_000, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.purge_deliveries(EndpointKind::Webhook, 5_000, 1)
            .await
            .unwrap(),
        0
    );
    let left = of(&s, &e).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].id, left[0].status.as_str()),
        (leased[2].id, "pending")
    );
}
