//! The catalogue: saves, conflicts, disabling.

use super::*;

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

both!(the_file_applies_only_its_changed_entries_and_leaves_admin_edits_alone);
async fn the_file_applies_only_its_changed_entries_and_leaves_admin_edits_alone(b: Backend) {
    use clickward_core::link::Owner;
    let (_d, s) = store(b).await;
    let code = |c: &str| LinkCode::parse(c).unwrap();
    assert_eq!(
        s.get_link(code("a")).await.unwrap().link.owner,
        Owner::Catalog
    );
    assert_eq!(
        s.get_program(slug("shop")).await.unwrap().owner,
        Owner::Catalog
    );
    // The same file again: nothing to apply.
    let again = s.apply_catalog(seed()).await.unwrap();
    assert_eq!((again.applied, again.unchanged), (0, 4), "{again:?}");
    assert!(again.drifted.is_empty());
    // An admin disables link a and renames the affiliate.
    let mut a = seed().links[0].clone();
    a.status = Status::Disabled;
    s.save_link(a, SaveMode::Update).await.unwrap();
    let mut blog = seed().affiliates[0].clone();
    blog.name = "Blog (renamed)".into();
    s.save_affiliate(blog, SaveMode::Update).await.unwrap();
    assert_eq!(
        s.get_link(code("a")).await.unwrap().link.owner,
        Owner::Admin
    );
    // A save that changes nothing takes nothing from the file.
    s.save_link(seed().links[1].clone(), SaveMode::Update)
        .await
        .unwrap();
    assert_eq!(
        s.get_link(code("b")).await.unwrap().link.owner,
        Owner::Catalog
    );
    // The file changes link b; its a and blog entries are as before.
    let mut cat = seed();
    cat.links[1].destination = "https://shop.example/b2".into();
    let r = s.apply_catalog(cat).await.unwrap();
    assert_eq!(r.applied, 1, "{r:?}");
    assert_eq!(
        r.drifted,
        vec!["affiliate \"blog\"".to_owned(), "link \"a\"".to_owned()]
    );
    let a = s.get_link(code("a")).await.unwrap();
    assert_eq!(
        a.link.status,
        Status::Disabled,
        "the admin's disable was undone"
    );
    assert_eq!(
        s.get_affiliate(slug("blog")).await.unwrap().name,
        "Blog (renamed)"
    );
    let b = s.get_link(code("b")).await.unwrap();
    assert_eq!(b.link.destination, "https://shop.example/b2");
    assert_eq!(b.link.owner, Owner::Catalog);
}

both!(admin_settings_and_overrides_take_a_program_from_the_file);
async fn admin_settings_and_overrides_take_a_program_from_the_file(b: Backend) {
    use clickward_core::commission::{CommissionPlan, Rate};
    use clickward_core::link::Owner;
    use clickward_core::money::Currency;
    use clickward_core::program::ProgramSettings;
    let flat = |amount| CommissionPlan {
        default: Some(Rate::Flat { amount }),
        events: Default::default(),
    };
    // The file declares the program's settings and one override.
    let mut cat = seed();
    cat.programs[0].settings = Some(ProgramSettings::new(Currency::parse("EUR").unwrap()));
    cat.commissions = vec![(slug("shop"), slug("blog"), flat(100))];
    let (_d, s) = open(&b).await;
    s.apply_catalog(cat.clone()).await.unwrap();
    let shop = s.get_program(slug("shop")).await.unwrap();
    assert_eq!(shop.owner, Owner::Catalog);
    assert_eq!(
        s.affiliate_commissions(slug("shop")).await.unwrap(),
        vec![(slug("blog"), flat(100))]
    );
    // Saving the settings that are there through the admin path changes
    // no owner; a token given to a program (as at start) neither.
    let mut input = cat.programs[0].clone();
    input.settings = Some(s.program_settings(shop.id).await.unwrap());
    s.save_program(input.clone(), SaveMode::Update)
        .await
        .unwrap();
    let mut with_token = s.program_settings(shop.id).await.unwrap();
    with_token.postback_token = Some("tok".into());
    s.save_program_settings(slug("shop"), with_token)
        .await
        .unwrap();
    assert_eq!(
        s.get_program(slug("shop")).await.unwrap().owner,
        Owner::Catalog
    );
    // An admin's override takes the program: the file's override is left
    // alone from then on.
    s.save_affiliate_commission(slug("shop"), slug("blog"), Some(flat(250)))
        .await
        .unwrap();
    assert_eq!(
        s.get_program(slug("shop")).await.unwrap().owner,
        Owner::Admin
    );
    let r = s.apply_catalog(cat.clone()).await.unwrap();
    assert!(r.drifted.contains(&"program \"shop\"".to_owned()), "{r:?}");
    assert_eq!(
        s.affiliate_commissions(slug("shop")).await.unwrap(),
        vec![(slug("blog"), flat(250))]
    );
    // On a program the file still owns, a settings change by an admin takes
    // it too.
    let mut other = cat.clone();
    other.programs[0].slug = slug("other");
    other.links.clear();
    other.commissions.clear();
    s.apply_catalog(other.clone()).await.unwrap();
    let mut input = other.programs[0].clone();
    let mut settings = ProgramSettings::new(Currency::parse("EUR").unwrap());
    settings.min_payout = 5_000;
    input.settings = Some(settings);
    s.save_program(input, SaveMode::Update).await.unwrap();
    let o = s.get_program(slug("other")).await.unwrap();
    assert_eq!(o.owner, Owner::Admin);
    s.apply_catalog(other).await.unwrap();
    assert_eq!(s.program_settings(o.id).await.unwrap().min_payout, 5_000);
    // Removing an override.
    s.save_affiliate_commission(slug("shop"), slug("blog"), None)
        .await
        .unwrap();
    assert!(
        s.affiliate_commissions(slug("shop"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.affiliate_commissions(slug("nope")).await,
        Err(StoreError::NotFound(_))
    ));
}
