//! SQL for API keys and dashboard users.

use super::{AccountStore, PgStore};
use crate::common::{USER_SELECT, now_micros, role_of, scope_of};
use crate::{ApiKey, KeyScope, StoreError, StoreFuture, User, UserInput};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

pub(super) async fn user_where(
    c: &impl GenericClient,
    cond: &str,
    arg: &(dyn ToSql + Sync),
) -> Result<Option<User>, StoreError> {
    c.query_opt(&format!("{USER_SELECT} WHERE {cond}"), &[arg])
        .await?
        .as_ref()
        .map(user_from)
        .transpose()
}

pub(super) fn user_from(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.try_get(0)?,
        username: r.try_get(1)?,
        role: role_of(&r.try_get::<_, String>(2)?)?,
        affiliate: r.try_get(3)?,
        password_hash: r.try_get(4)?,
        credentials_changed_at: r.try_get(5)?,
        email: r.try_get(6)?,
        notify_conversions: r.try_get(7)?,
    })
}

impl AccountStore for PgStore {
    fn create_api_key(
        &self,
        hash: [u8; 32],
        prefix: String,
        scope: KeyScope,
        label: Option<String>,
    ) -> StoreFuture<'_, ApiKey> {
        Box::pin(async move {
            let c = self.client().await?;
            let id: i64 = c
                .query_one(
                    "INSERT INTO api_keys (prefix, hash, scope, label, created_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &prefix,
                        &hash.as_slice(),
                        &scope.as_str(),
                        &label,
                        &now_micros(),
                    ],
                )
                .await?
                .try_get(0)?;
            Ok(ApiKey {
                id,
                prefix,
                scope,
                label,
            })
        })
    }

    fn find_api_key(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>> {
        Box::pin(async move {
            let c = self.client().await?;
            let Some(r) = c
                .query_opt(
                    "SELECT id, prefix, scope, label FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
                    &[&hash.as_slice()],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(ApiKey {
                id: r.try_get(0)?,
                prefix: r.try_get(1)?,
                scope: scope_of(&r.try_get::<_, String>(2)?)?,
                label: r.try_get(3)?,
            }))
        })
    }

    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(
                "SELECT id, prefix, scope, label FROM api_keys WHERE revoked_at IS NULL ORDER BY id",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ApiKey {
                    id: r.try_get(0)?,
                    prefix: r.try_get(1)?,
                    scope: scope_of(&r.try_get::<_, String>(2)?)?,
                    label: r.try_get(3)?,
                })
            })
            .collect()
        })
    }

    fn revoke_api_key(&self, id: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            let n = c
                .execute(
                    "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &now_micros()],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("API key {id}")));
            }
            Ok(())
        })
    }

    fn save_user(&self, u: UserInput) -> StoreFuture<'_, User> {
        Box::pin(async move {
            let c = self.client().await?;
            let affiliate_id: Option<i64> = match &u.affiliate {
                Some(slug) => Some(
                    c.query_opt(
                        "SELECT id FROM affiliates WHERE slug = $1",
                        &[&slug.as_str()],
                    )
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("affiliate {slug}")))?
                    .try_get(0)?,
                ),
                None => None,
            };
            c.execute(
                "INSERT INTO users (username, role, affiliate_id, password_hash, credentials_changed_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (username) DO UPDATE SET role = excluded.role, \
                 affiliate_id = excluded.affiliate_id, password_hash = excluded.password_hash, \
                 credentials_changed_at = excluded.credentials_changed_at",
                &[
                    &u.username,
                    &u.role.as_str(),
                    &affiliate_id,
                    &u.password_hash,
                    &u.changed_at,
                ],
            )
            .await?;
            user_where(&**c, "u.username = $1", &u.username)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("user {}", u.username)))
        })
    }

    fn find_user(&self, username: String) -> StoreFuture<'_, Option<User>> {
        Box::pin(async move {
            let c = self.client().await?;
            user_where(&**c, "u.username = $1", &username).await
        })
    }

    fn get_user(&self, id: i64) -> StoreFuture<'_, Option<User>> {
        Box::pin(async move {
            let c = self.client().await?;
            user_where(&**c, "u.id = $1", &id).await
        })
    }

    fn list_users(&self) -> StoreFuture<'_, Vec<User>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.query(&format!("{USER_SELECT} ORDER BY u.username"), &[])
                .await?
                .iter()
                .map(user_from)
                .collect()
        })
    }

    fn set_user_email(
        &self,
        username: String,
        email: Option<String>,
        notify_conversions: bool,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let c = self.client().await?;
            Ok(c.execute(
                "UPDATE users SET email = $2, notify_conversions = $3 WHERE username = $1",
                &[&username, &email, &notify_conversions],
            )
            .await?
                > 0)
        })
    }
}
