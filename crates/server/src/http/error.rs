//! The admin API's error answer: a status and a JSON body
//! `{"error": "<kind>", "reason": "<what is wrong>"}`.
//!
//! Client errors say what is wrong; server errors are logged with their cause
//! and answered with an opaque reason.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clickward_store::StoreError;
use serde_json::json;

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    reason: String,
}

impl ApiError {
    /// 400 with a reason.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            reason: reason.into(),
        }
    }

    /// 422 with a reason.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "invalid",
            reason: reason.into(),
        }
    }

    /// 404 with a reason.
    pub fn not_found(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            reason: reason.into(),
        }
    }

    /// 401.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            reason: reason.into(),
        }
    }

    /// 403.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "forbidden",
            reason: reason.into(),
        }
    }

    /// 503 with a reason (the store cannot be reached; the cause is logged).
    pub fn unavailable(reason: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        tracing::warn!("unavailable: {cause}");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable",
            reason: reason.into(),
        }
    }

    /// 500; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {cause}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            reason: "internal error; see the server log".to_owned(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self::not_found(e.to_string()),
            StoreError::Unavailable(_) => Self::unavailable(
                "the database cannot be reached; nothing was done; try again",
                e,
            ),
            StoreError::Conflict(_) | StoreError::Refused(_) => Self {
                status: StatusCode::CONFLICT,
                kind: "conflict",
                reason: e.to_string(),
            },
            other => Self::internal(other),
        }
    }
}

impl From<crate::services::programs::SpecError> for ApiError {
    fn from(e: crate::services::programs::SpecError) -> Self {
        match e {
            crate::services::programs::SpecError::Invalid(m) => Self::invalid(m),
            crate::services::programs::SpecError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.kind, "reason": self.reason }));
        let mut resp = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// `Query<T>` whose rejection is an [`ApiError`] (400 with the reason in the
/// error body) instead of axum's plain-text one. With
/// `#[serde(deny_unknown_fields)]` on `T`, an unknown key (`offset`,
/// `before`) is a 400 naming the key, so a pager never silently gets the
/// first page again.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q)
            .map(ApiQuery)
            .map_err(|e| ApiError::bad_request(format!("query: {e}")))
    }
}

/// The error body every admin API failure answers with, as the OpenAPI
/// document names it (`Error`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// The kind: `bad_request`, `invalid`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `rate_limited`, `unavailable`, `internal`.
    pub error: String,
    /// What is wrong, in a sentence.
    pub reason: String,
}

/// `Json<T>` whose rejection (no JSON content type, malformed JSON, a body
/// of the wrong shape) is an [`ApiError`] in the one error shape instead of
/// axum's plain text.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(ApiError {
                status: if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                } else if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                },
                kind: "bad_request",
                reason: r.body_text(),
            }),
        }
    }
}

/// `Path<T>` whose rejection (a segment that is not UTF-8, not a number)
/// is a 404 in the one error shape: such a path names nothing.
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|r| ApiError::not_found(format!("path: {}", r.body_text())))
    }
}
