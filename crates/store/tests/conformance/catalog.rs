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
