//! Conversions and the ledger: lifecycle property test, listing, payouts.

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
    /// A refund of conversion `.0` under key `.1`: `.2` of a total of 100.
    Refund(usize, usize, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..2, 0i64..100_000, any::<bool>()).prop_map(|(affiliate, commission, approved)| {
            Op::Create {
                affiliate,
                commission,
                approved,
            }
        }),
        (0usize..40).prop_map(Op::Approve),
        (0usize..40).prop_map(Op::Reject),
        (0usize..40).prop_map(Op::Reverse),
        (0usize..2).prop_map(Op::Payout),
        (0usize..8, 0usize..2, 0i64..=100).prop_map(|(i, k, r)| Op::Refund(i, k, r)),
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
    // Per conversion: its gross commission and what each refund key refunded.
    let mut refunds: Vec<(i64, [i64; 2])> = Vec::new();
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Create {
                affiliate,
                commission,
                approved,
            } => {
                let id = ConversionId(ulid::Ulid::from_parts(1, u128::try_from(n).unwrap() + 1));
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
                    country: None,
                    verdict: None,
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
                        held: false,
                        verdict: None,
                        ip_hash: None,
                        buyer_country: None,
                        caps: Vec::new(),
                    })
                    .await
                    .unwrap();
                assert!(matches!(r, Recorded::Created(_)));
                model.push((affiliate, commission, status, id));
                refunds.push((commission, [0, 0]));
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
                let allowed = clickward_core::conversion::transition(entry.2, to, entry.1).is_ok();
                let got = s
                    .set_conversion_status(entry.3, to, "test".into(), None)
                    .await;
                assert_eq!(got.is_ok(), allowed, "{:?} -> {to:?}", entry.2);
                if allowed {
                    entry.2 = to;
                }
            }
            Op::Refund(i, key, refunded) => {
                let Some(entry) = model.get_mut(i) else {
                    continue;
                };
                let got = s
                    .refund_conversion(clickward_store::RefundInput {
                        conversion_id: entry.3,
                        key: format!("r{key}"),
                        refunded,
                        total: 100,
                        actor: "test".into(),
                    })
                    .await
                    .unwrap();
                let (gross, keys) = &mut refunds[i];
                if !entry.2.counted() || keys[key] >= refunded {
                    assert!(
                        matches!(got, clickward_store::Refund::Unchanged(_)),
                        "{got:?}"
                    );
                    continue;
                }
                keys[key] = refunded;
                let left =
                    clickward_core::conversion::after_refunds(None, *gross, keys[0] + keys[1], 100)
                        .unwrap();
                let row = match got {
                    clickward_store::Refund::Changed(row) => row,
                    clickward_store::Refund::Unchanged(row) => {
                        assert!(!left.full && left.commission == entry.1, "{row:?}");
                        row
                    }
                };
                if left.full {
                    entry.2 = if entry.2 == ConversionStatus::Pending {
                        ConversionStatus::Rejected
                    } else {
                        ConversionStatus::Reversed
                    };
                } else {
                    entry.1 = left.commission;
                    assert_eq!(
                        row.gross_commission_minor.unwrap_or(row.commission_minor),
                        *gross
                    );
                }
                assert_eq!(row.status, entry.2);
                assert_eq!(row.commission_minor, entry.1);
            }
            Op::Payout(a) => {
                let p = match s
                    .create_payout(
                        slug(AFFILIATES[a]),
                        usd,
                        format!("k{n}"),
                        ulid::Ulid::from_parts(2, u128::try_from(n).unwrap()),
                        "test".into(),
                    )
                    .await
                {
                    Ok(p) => p,
                    Err(StoreError::Refused(why)) => {
                        // Refused only when the preview, which a payout pays
                        // from, has nothing eligible; and no batch was made.
                        let preview = s.payout_preview(slug(AFFILIATES[a])).await.unwrap();
                        assert!(
                            !preview.iter().any(|l| l.currency == "USD" && l.eligible),
                            "refused with {preview:?}: {why}"
                        );
                        assert!(why.starts_with("nothing to pay"), "{why}");
                        let listed = s
                            .list_payouts(Some(slug(AFFILIATES[a])), 1000)
                            .await
                            .unwrap();
                        assert!(listed.iter().all(|p| p.key != format!("k{n}")));
                        continue;
                    }
                    Err(e) => panic!("payout: {e}"),
                };
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
    /// rejections, reversals, partial and whole refunds, and payouts.
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
            held: false,
            verdict: None,
            ip_hash: None,
            buyer_country: None,
            caps: Vec::new(),
        })
        .await
        .unwrap();
    }
    let of = |affiliate: Option<&str>, status| ConversionFilter {
        status,
        affiliate: affiliate.map(slug),
        before: None,
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

both!(one_of_many_concurrent_claims_of_an_idempotency_key_wins);
async fn one_of_many_concurrent_claims_of_an_idempotency_key_wins(b: Backend) {
    use clickward_store::IdempotencyClaim;
    let (_d, s) = store(b).await;
    let claims = futures::future::join_all((0..20).map(|i| {
        let s = s.clone();
        // Half send the first request's fingerprint, half another.
        let fp = vec![u8::from(i % 2 == 1)];
        async move {
            s.claim_idempotency_key("k-1".into(), fp, 60_000_000)
                .await
                .unwrap()
        }
    }))
    .await;
    let won: Vec<_> = claims
        .iter()
        .filter(|c| **c == IdempotencyClaim::Claimed)
        .collect();
    assert_eq!(won.len(), 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, IdempotencyClaim::Claimed | IdempotencyClaim::Working(_))),
        "{claims:?}"
    );
    // The winner's fingerprint is the one the others see.
    let Some(IdempotencyClaim::Working(fp)) = claims
        .iter()
        .find(|c| matches!(c, IdempotencyClaim::Working(_)))
        .cloned()
    else {
        panic!("nobody saw the claim working: {claims:?}");
    };
    // Another fingerprint cannot store its answer under the key; the
    // winner's answer is what every later claim gets.
    let other = vec![1 - fp[0]];
    s.save_idempotent_response("k-1".into(), other, 201, "{\"x\":2}".into())
        .await
        .unwrap();
    s.save_idempotent_response("k-1".into(), fp.clone(), 201, "{\"x\":1}".into())
        .await
        .unwrap();
    assert_eq!(
        s.claim_idempotency_key("k-1".into(), fp.clone(), 60_000_000)
            .await
            .unwrap(),
        IdempotencyClaim::Done(fp.clone(), 201, "{\"x\":1}".into())
    );
    // A released claim can be claimed again; a finished one is not released.
    s.claim_idempotency_key("k-2".into(), fp.clone(), 60_000_000)
        .await
        .unwrap();
    s.release_idempotency_key("k-2".into()).await.unwrap();
    s.release_idempotency_key("k-1".into()).await.unwrap();
    assert_eq!(
        s.claim_idempotency_key("k-2".into(), fp.clone(), 60_000_000)
            .await
            .unwrap(),
        IdempotencyClaim::Claimed
    );
    assert!(matches!(
        s.claim_idempotency_key("k-1".into(), fp.clone(), 60_000_000)
            .await
            .unwrap(),
        IdempotencyClaim::Done(..)
    ));
    // A claim left working by a dead process is taken over once stale.
    s.claim_idempotency_key("k-3".into(), fp.clone(), 60_000_000)
        .await
        .unwrap();
    assert_eq!(
        s.claim_idempotency_key("k-3".into(), fp.clone(), -1)
            .await
            .unwrap(),
        IdempotencyClaim::Claimed
    );
}
