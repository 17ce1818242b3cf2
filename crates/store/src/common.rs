//! Small helpers both backends share: reading stored values back into core
//! types, and the tables of named things. No SQL dialect here.

use std::time::{SystemTime, UNIX_EPOCH};

use clickward_core::Micros;
use clickward_core::id::Slug;
use clickward_core::link::Status;

use crate::{KeyScope, StoreError};

/// Now, UTC µs (for `created_at` / `updated_at` columns).
pub(crate) fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A stored value that does not parse: a defect or a hand-edited row.
pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

pub(crate) fn status_of(s: &str) -> Result<Status, StoreError> {
    Status::parse(s).ok_or_else(|| corrupt("status", s))
}

pub(crate) fn slug_of(s: &str) -> Result<Slug, StoreError> {
    Slug::parse(s).map_err(|_| corrupt("slug", s))
}

/// A 16-byte id column (click, conversion, payout batch).
pub(crate) fn ulid_of(b: Vec<u8>, what: &str) -> Result<ulid::Ulid, StoreError> {
    let a: [u8; 16] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 16 bytes")))?;
    Ok(ulid::Ulid::from_bytes(a))
}

pub(crate) fn scope_of(s: &str) -> Result<KeyScope, StoreError> {
    match s {
        "admin" => Ok(KeyScope::Admin),
        "read" => Ok(KeyScope::Read),
        other => Err(corrupt("key scope", other)),
    }
}

pub(crate) fn role_of(s: &str) -> Result<crate::UserRole, StoreError> {
    match s {
        "admin" => Ok(crate::UserRole::Admin),
        "affiliate" => Ok(crate::UserRole::Affiliate),
        other => Err(corrupt("user role", other)),
    }
}

/// Programs or affiliates (same shape: slug, name, status), by table.
#[derive(Clone, Copy)]
pub(crate) enum Named {
    Programs,
    Affiliates,
}

impl Named {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Named::Programs => "programs",
            Named::Affiliates => "affiliates",
        }
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            Named::Programs => "program",
            Named::Affiliates => "affiliate",
        }
    }
}
