//! The transactional outbox: events written with the changes they report.

use super::*;
use clickward_core::conversion::ConversionStatus;
use clickward_core::id::ConversionId;
use clickward_core::money::Currency;
use clickward_store::{ClickFacts, NewConversion, Recorded};

both!(every_money_change_writes_one_outbox_event_in_its_transaction);
async fn every_money_change_writes_one_outbox_event_in_its_transaction(b: Backend) {
    let (_d, s) = store(b).await;
    let usd = Currency::parse("USD").unwrap();
    let blog = s.get_affiliate(slug("blog")).await.unwrap();
    let link = s.get_link(LinkCode::parse("a").unwrap()).await.unwrap();
    let new = |order: &str, n: u128| NewConversion {
        conversion_id: ConversionId(ulid::Ulid::from_parts(1, n)),
        program_id: link.program_id,
        event: "sale".into(),
        order_id: order.into(),
        click: Some((
            ClickFacts {
                click_id: ClickId::from_parts(1, n),
                ts: 0,
                link_id: link.link.id,
                program_id: link.program_id,
                affiliate_id: Some(blog.id),
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
        currency: usd,
        commission: 1_000,
        status: ConversionStatus::Pending,
        occurred_at: 0,
        received_at: 0,
        adv_subs: Default::default(),
        fingerprint: [n as u8; 32],
        actor: "test".into(),
        held: false,
        verdict: None,
        ip_hash: None,
        buyer_country: None,
        caps: Vec::new(),
    };
    let kinds = |evs: &[clickward_store::OutboxEvent]| -> Vec<String> {
        evs.iter().map(|e| e.kind.clone()).collect()
    };
    // From after the catalogue's own events (see the case below).
    let start = s
        .outbox_after(0, 100)
        .await
        .unwrap()
        .last()
        .map_or(0, |e| e.seq);
    let Recorded::Created(c1) = s.record_conversion(new("o1", 1)).await.unwrap() else {
        panic!("not created");
    };
    // A replay changes nothing and tells nothing.
    assert!(matches!(
        s.record_conversion(new("o1", 1)).await.unwrap(),
        Recorded::Replay(_)
    ));
    // A refused change neither.
    assert!(
        s.set_conversion_status(
            c1.conversion_id,
            ConversionStatus::Reversed,
            "t".into(),
            None
        )
        .await
        .is_err()
    );
    s.set_conversion_status(
        c1.conversion_id,
        ConversionStatus::Approved,
        "t".into(),
        None,
    )
    .await
    .unwrap();
    let payout = s
        .create_payout(
            slug("blog"),
            usd,
            "k1".into(),
            ulid::Ulid::from_parts(2, 1),
            "t".into(),
        )
        .await
        .unwrap();
    // The same key again: the first batch, no second event.
    s.create_payout(
        slug("blog"),
        usd,
        "k1".into(),
        ulid::Ulid::from_parts(2, 2),
        "t".into(),
    )
    .await
    .unwrap();
    let all = s.outbox_after(start, 100).await.unwrap();
    assert_eq!(
        kinds(&all),
        [
            "conversion.created",
            "conversion.approved",
            "conversion.paid",
            "payout.created"
        ]
    );
    for (i, e) in all.iter().enumerate() {
        assert!(e.id.starts_with("evt_") && e.id.len() == 30, "{}", e.id);
        assert_eq!(e.payload["v"], 1);
        if i > 0 {
            assert!(e.seq > all[i - 1].seq);
            assert_ne!(e.id, all[i - 1].id);
        }
    }
    assert_eq!(
        all[0].payload["conversion"]["conversion_id"],
        c1.conversion_id.to_string()
    );
    assert_eq!(all[2].payload["conversion"]["status"], "paid");
    assert_eq!(all[3].payload["payout"]["batch_id"], payout.batch_id);
    // Reading on from a cursor.
    let rest = s.outbox_after(all[1].seq, 100).await.unwrap();
    assert_eq!(kinds(&rest), ["conversion.paid", "payout.created"]);
    assert_eq!(s.outbox_after(all[3].seq, 100).await.unwrap(), vec![]);
}

both!(catalogue_changes_are_told_once_and_never_with_credentials);
async fn catalogue_changes_are_told_once_and_never_with_credentials(b: Backend) {
    use clickward_core::program::ProgramSettings;
    let (_d, s) = open(&b).await;
    let kinds = |evs: Vec<clickward_store::OutboxEvent>| -> Vec<String> {
        evs.into_iter().map(|e| e.kind).collect()
    };
    s.apply_catalog(seed()).await.unwrap();
    let first = s.outbox_after(0, 100).await.unwrap();
    let cursor = first.last().unwrap().seq;
    assert_eq!(
        kinds(first),
        [
            "program.created",
            "affiliate.created",
            "link.created",
            "link.created"
        ]
    );
    // The same file again, and a save of what is there: nothing to tell.
    s.apply_catalog(seed()).await.unwrap();
    s.save_link(seed().links[1].clone(), SaveMode::Update)
        .await
        .unwrap();
    assert_eq!(s.outbox_after(cursor, 100).await.unwrap(), vec![]);
    let mut a = seed().links[0].clone();
    a.status = Status::Disabled;
    s.save_link(a.clone(), SaveMode::Update).await.unwrap();
    a.status = Status::Active;
    s.save_link(a.clone(), SaveMode::Update).await.unwrap();
    a.destination = "https://shop.example/new".into();
    s.save_link(a, SaveMode::Update).await.unwrap();
    // A settings change alone, with a postback secret.
    let mut p = seed().programs[0].clone();
    let mut settings = ProgramSettings::new(Currency::parse("EUR").unwrap());
    settings.postback_token = Some("tok-never-told".into());
    settings.postback_secret = Some("secret-never-told".into());
    p.settings = Some(settings);
    s.save_program(p, SaveMode::Update).await.unwrap();
    let rest = s.outbox_after(cursor, 100).await.unwrap();
    let text = serde_json::to_string(&rest).unwrap();
    assert!(!text.contains("never-told"), "{text}");
    assert_eq!(
        rest[2].payload["link"]["destination"],
        "https://shop.example/new"
    );
    assert_eq!(
        kinds(rest),
        [
            "link.disabled",
            "link.enabled",
            "link.updated",
            "program.updated"
        ]
    );
}
