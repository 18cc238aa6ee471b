//! The JSON error body of every endpoint: `{"error": "…"}` with a 4xx/5xx status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// What went wrong and, for a 4xx, what to send instead.
    pub error: String,
    #[serde(skip)]
    #[schema(ignore)]
    status: u16,
}

impl ApiError {
    /// 400 Bad Request.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 400 }
    }

    /// 404 Not Found.
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 404 }
    }

    /// 409 Conflict.
    pub fn conflict(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 409 }
    }

    /// 503 Service Unavailable: a dependency (store, log, batch layer) failed.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 503 }
    }
}

impl<E: std::error::Error> From<E> for ApiError {
    fn from(e: E) -> Self {
        tracing::error!(error = %e, "request failed on a dependency");
        ApiError::unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}
