//! The JSON error body of every endpoint: `{"error": "…"}` with a 4xx/5xx status (DESIGN §8).
//!
//! - a client mistake is a 4xx whose text says what to send instead;
//! - a dependency that is down (the view store, the event log or the segment store cannot be
//!   reached) is a 503 with a generic text;
//! - anything else is an internal failure: a 500 with a generic text and an error id; the
//!   details (which may hold SQL, paths or URLs) go only to the log, under that id.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prism_core::log::LogError;
use prism_core::objects::ObjectError;
use prism_core::segment::SegmentError;
use prism_core::store::StoreError;
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

static NEXT_ERROR_ID: AtomicU64 = AtomicU64::new(1);

impl ApiError {
    /// 400 Bad Request.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 400 }
    }

    /// 401 Unauthorized (a missing or wrong bearer token).
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 401 }
    }

    /// 404 Not Found.
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 404 }
    }

    /// 409 Conflict.
    pub fn conflict(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 409 }
    }

    /// 503 Service Unavailable: a dependency (store, log, batch layer) is down or busy. `msg` is
    /// shown to the client: keep internals out of it.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError { error: msg.into(), status: 503 }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// A dependency failure: logged with its details, answered 503 with `what` alone.
    fn dependency_down(what: &str, detail: &dyn std::fmt::Display) -> Self {
        let id = NEXT_ERROR_ID.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error_id = id, error = %detail, "{what} is unavailable");
        ApiError::unavailable(format!("{what} is unavailable; retry later (error id {id})"))
    }

    /// An internal failure: logged with its details, answered 500 with an error id.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        let id = NEXT_ERROR_ID.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error_id = id, error = %detail, "request failed");
        ApiError { error: format!("internal error (error id {id}); the server log has the details"), status: 500 }
    }
}

/// True for driver errors that mean the database cannot be reached right now.
fn store_unreachable(e: &StoreError) -> bool {
    let StoreError::Db { source, .. } = e else { return false };
    match source {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01-03 (shutdown, cannot connect now), 53
        // (insufficient resources), and SQLite's busy/locked.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") || c == "5" || c == "6" || c == "517"),
        _ => false,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if store_unreachable(&e) {
            ApiError::dependency_down("the view store", &e)
        } else {
            ApiError::internal(&e)
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io { .. } => ApiError::dependency_down("the event log", &e),
            _ => ApiError::internal(&e),
        }
    }
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        match &e {
            ObjectError::Store { source: object_store::Error::Generic { .. }, .. } => ApiError::dependency_down("the segment store", &e),
            _ => ApiError::internal(&e),
        }
    }
}

impl From<SegmentError> for ApiError {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::Object(o) => o.into(),
            other => ApiError::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_leak_nothing() {
        let e =
            StoreError::Db { context: "reading", source: sqlx::Error::Protocol("SELECT secret FROM /var/lib/prism/views.sqlite".into()) };
        let api = ApiError::from(e);
        assert_eq!(api.status(), 500);
        assert!(!api.error.contains("SELECT") && !api.error.contains("/var"), "{}", api.error);
        let down = ApiError::from(StoreError::Db { context: "reading", source: sqlx::Error::PoolTimedOut });
        assert_eq!(down.status(), 503);
        let log = ApiError::from(LogError::Io { context: "reading /data/log/x".into(), source: std::io::Error::other("disk") });
        assert_eq!(log.status(), 503);
        assert!(!log.error.contains("/data"), "{}", log.error);
        let corrupt = ApiError::from(LogError::Corrupt("segment /data/log/x at 5".into()));
        assert_eq!(corrupt.status(), 500);
        assert!(!corrupt.error.contains("/data"));
    }
}
