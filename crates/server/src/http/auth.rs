//! The bearer-key extractor of the admin API (keys are made and hashed by
//! `services::keys`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use clickward_store::{ApiKey, KeyScope, StoreError};

use crate::http::ApiError;
use crate::process::app::AppState;
use crate::services::keys::hash_key;

/// A request authenticated by an API key whose scope allows its method:
/// `read` keys may only `GET`/`HEAD`; `admin` keys may do anything.
pub struct Authorized(pub ApiKey);

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be \"Bearer <api key>\""))?;
        let hash = hash_key(token);
        let found = match app.0.store.find_api_key(hash).await {
            Ok(found) => {
                app.0.api_keys.remember(hash, found.as_ref());
                found
            }
            // The shared store is down: a key it gave lately still counts
            // (what the request then needs of the store answers for itself).
            Err(e @ StoreError::Unavailable(_)) => Some(app.0.api_keys.recall(&hash).ok_or(e)?),
            Err(e) => return Err(e.into()),
        };
        let key = found.ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        let reading = parts.method == Method::GET || parts.method == Method::HEAD;
        if key.scope == KeyScope::Read && !reading {
            return Err(ApiError::forbidden("this API key may only read"));
        }
        Ok(Authorized(key))
    }
}
