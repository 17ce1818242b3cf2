//! SQL for API keys and dashboard users.

use super::SqliteStore;
use crate::common::{USER_SELECT, now_micros, role_of, scope_of};
use crate::{AccountStore, ApiKey, KeyScope, StoreError, StoreFuture, User, UserInput};
use rusqlite::{Connection, OptionalExtension, Row, params};

pub(super) fn user_where(
    c: &Connection,
    cond: &str,
    arg: &dyn rusqlite::ToSql,
) -> Result<Option<User>, StoreError> {
    let mut st = c.prepare_cached(&format!("{USER_SELECT} WHERE {cond}"))?;
    let mut rows = st.query([arg])?;
    rows.next()?.map(user_from).transpose()
}

pub(super) fn user_from(r: &Row<'_>) -> Result<User, StoreError> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        role: role_of(&r.get::<_, String>(2)?)?,
        affiliate: r.get(3)?,
        password_hash: r.get(4)?,
        credentials_changed_at: r.get(5)?,
        email: r.get(6)?,
        notify_conversions: r.get(7)?,
    })
}

impl AccountStore for SqliteStore {
    fn create_api_key(
        &self,
        hash: [u8; 32],
        prefix: String,
        scope: KeyScope,
        label: Option<String>,
    ) -> StoreFuture<'_, ApiKey> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO api_keys (prefix, hash, scope, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![prefix, hash.as_slice(), scope.as_str(), label, now_micros()],
            )?;
            Ok(ApiKey {
                id: c.last_insert_rowid(),
                prefix,
                scope,
                label,
            })
        })
    }

    fn find_api_key(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, prefix, scope, label FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
            )?;
            let mut rows = st.query([hash.as_slice()])?;
            match rows.next()? {
                Some(r) => Ok(Some(ApiKey {
                    id: r.get(0)?,
                    prefix: r.get(1)?,
                    scope: scope_of(&r.get::<_, String>(2)?)?,
                    label: r.get(3)?,
                })),
                None => Ok(None),
            }
        })
    }

    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, prefix, scope, label FROM api_keys WHERE revoked_at IS NULL ORDER BY id",
            )?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(ApiKey {
                    id: r.get(0)?,
                    prefix: r.get(1)?,
                    scope: scope_of(&r.get::<_, String>(2)?)?,
                    label: r.get(3)?,
                });
            }
            Ok(out)
        })
    }

    fn revoke_api_key(&self, id: i64) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let n = c.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now_micros()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("API key {id}")));
            }
            Ok(())
        })
    }

    fn save_user(&self, u: UserInput) -> StoreFuture<'_, User> {
        self.write(move |c| {
            let tx = super::begin_write(c)?;
            let affiliate_id: Option<i64> = match &u.affiliate {
                Some(slug) => Some(
                    tx.query_row(
                        "SELECT id FROM affiliates WHERE slug = ?1",
                        [slug.as_str()],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| StoreError::NotFound(format!("affiliate {slug}")))?,
                ),
                None => None,
            };
            let now = u.changed_at;
            tx.execute(
                "INSERT INTO users (username, role, affiliate_id, password_hash, credentials_changed_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (username) DO UPDATE SET role = excluded.role, \
                 affiliate_id = excluded.affiliate_id, password_hash = excluded.password_hash, \
                 credentials_changed_at = excluded.credentials_changed_at",
                params![u.username, u.role.as_str(), affiliate_id, u.password_hash, now],
            )?;
            let user = user_where(&tx, "u.username = ?1", &u.username)?
                .ok_or_else(|| StoreError::NotFound(format!("user {}", u.username)))?;
            tx.commit()?;
            Ok(user)
        })
    }

    fn find_user(&self, username: String) -> StoreFuture<'_, Option<User>> {
        self.read(move |c| user_where(c, "u.username = ?1", &username))
    }

    fn get_user(&self, id: i64) -> StoreFuture<'_, Option<User>> {
        self.read(move |c| user_where(c, "u.id = ?1", &id))
    }

    fn list_users(&self) -> StoreFuture<'_, Vec<User>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("{USER_SELECT} ORDER BY u.username"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(user_from(r)?);
            }
            Ok(out)
        })
    }

    fn set_user_email(
        &self,
        username: String,
        email: Option<String>,
        notify_conversions: bool,
    ) -> StoreFuture<'_, bool> {
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE users SET email = ?2, notify_conversions = ?3 WHERE username = ?1",
                params![username, email, notify_conversions],
            )? > 0)
        })
    }
}
