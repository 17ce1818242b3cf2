//! API keys and dashboard users.

use super::*;

both!(users_are_saved_found_and_tied_to_an_affiliate);
async fn users_are_saved_found_and_tied_to_an_affiliate(b: Backend) {
    use clickward_store::{UserInput, UserRole};
    let (_d, s) = store(b).await;
    let u = s
        .save_user(UserInput {
            username: "ana".into(),
            role: UserRole::Affiliate,
            affiliate: Some(slug("blog")),
            password_hash: Some("$argon2id$first".into()),
            changed_at: 1_000,
        })
        .await
        .unwrap();
    assert_eq!(u.affiliate.as_deref(), Some("blog"));
    assert_eq!(u.credentials_changed_at, 1_000);
    // Saving again replaces it (same id) and moves the credentials time.
    let again = s
        .save_user(UserInput {
            username: "ana".into(),
            role: UserRole::Affiliate,
            affiliate: Some(slug("blog")),
            password_hash: Some("$argon2id$second".into()),
            changed_at: 2_000,
        })
        .await
        .unwrap();
    assert_eq!(again.id, u.id);
    assert_eq!(again.credentials_changed_at, 2_000);
    let found = s.get_user(u.id).await.unwrap().unwrap();
    assert_eq!(found.password_hash.as_deref(), Some("$argon2id$second"));
    assert_eq!(s.find_user("ana".into()).await.unwrap(), Some(found));
    assert_eq!(s.find_user("nobody".into()).await.unwrap(), None);
    // An affiliate user needs an existing affiliate; an admin has none.
    let err = s
        .save_user(UserInput {
            username: "ghost".into(),
            role: UserRole::Affiliate,
            affiliate: Some(slug("no_such")),
            password_hash: None,
            changed_at: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let admin = s
        .save_user(UserInput {
            username: "boss".into(),
            role: UserRole::Admin,
            affiliate: None,
            password_hash: None,
            changed_at: 1,
        })
        .await
        .unwrap();
    assert_eq!(admin.role, UserRole::Admin);
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["ana", "boss"]);
}

both!(api_keys_are_listed_and_revoked);
async fn api_keys_are_listed_and_revoked(b: Backend) {
    use clickward_store::KeyScope;
    let (_d, s) = store(b).await;
    let k1 = s
        .create_api_key(
            [1; 32],
            "cwk_one".into(),
            KeyScope::Admin,
            Some("ci".into()),
        )
        .await
        .unwrap();
    let k2 = s
        .create_api_key([2; 32], "cwk_two".into(), KeyScope::Read, None)
        .await
        .unwrap();
    assert_eq!(
        s.list_api_keys().await.unwrap(),
        vec![k1.clone(), k2.clone()]
    );
    s.revoke_api_key(k1.id).await.unwrap();
    assert_eq!(s.list_api_keys().await.unwrap(), vec![k2]);
    assert_eq!(
        s.find_api_key([1; 32]).await.unwrap(),
        None,
        "revoked keys do not sign in"
    );
    assert!(matches!(
        s.revoke_api_key(k1.id).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Two stores on one SQLite file (the server and a CLI command beside it)
/// writing at once both succeed: a write that reads first waits for the
/// lock instead of failing with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_sqlite_file_write_at_once_without_busy_errors() {
    use clickward_store::prelude::*;
    use clickward_store::{UserInput, UserRole};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
    a.apply_catalog(seed()).await.unwrap();
    let b = SqliteStore::open(&path, &SqliteOptions::default()).unwrap();
    let writer = |s: SqliteStore, who: &'static str| {
        tokio::spawn(async move {
            for i in 0..150 {
                // An affiliate user: the save reads the affiliate, then writes.
                s.save_user(UserInput {
                    username: format!("{who}{i}"),
                    role: UserRole::Affiliate,
                    affiliate: Some(slug("blog")),
                    password_hash: None,
                    changed_at: i,
                })
                .await
                .map_err(|e| format!("{who} save {i}: {e}"))?;
            }
            Ok::<(), String>(())
        })
    };
    let (ra, rb) = tokio::join!(writer(a.clone(), "a"), writer(b, "b"));
    ra.unwrap().unwrap();
    rb.unwrap().unwrap();
    assert!(a.find_user("a149".into()).await.unwrap().is_some());
    assert!(a.find_user("b149".into()).await.unwrap().is_some());
}
