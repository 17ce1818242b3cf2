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
