//! `POST /v1/admin/batch-runs`: run the batch job now.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use prism_core::log::EventLog;
use prism_core::time::format_rfc3339;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::ServingState;

/// How long a requested batch run may take before the request gives up (the run goes on).
pub const BATCH_RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// What a requested batch run did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchRunResponse {
    /// Batch-view version published; null when nothing is archived yet.
    pub view_version: Option<i64>,
    /// Batch horizon it covers, RFC 3339.
    pub batch_horizon: Option<String>,
    /// Master-dataset files read.
    pub files_read: u64,
    /// Events aggregated.
    pub events: u64,
    /// Batch-view rows written.
    pub rows: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// Runs the batch job now and answers when its version is published.
#[utoipa::path(
    post,
    path = "/v1/admin/batch-runs",
    tag = "admin",
    responses(
        (status = 201, description = "Batch view recomputed and published", body = BatchRunResponse),
        (status = 409, description = "No batch layer here (Kappa mode, or a serving process of the distributed deployment)", body = ApiError),
        (status = 503, description = "The batch run failed or timed out", body = ApiError)
    )
)]
pub async fn post_batch_run<L: EventLog>(
    State(state): State<ServingState<L>>,
) -> Result<(StatusCode, Json<BatchRunResponse>), ApiError> {
    let Some(trigger) = state.batch_trigger.as_ref() else {
        return Err(ApiError::conflict(match state.architecture {
            prism_core::config::Architecture::Kappa => "kappa mode has no batch layer".to_string(),
            prism_core::config::Architecture::Lambda => {
                "this process runs no batch layer: send POST /v1/admin/batch-runs to the batch-layer service".to_string()
            }
        }));
    };
    let (tx, rx) = oneshot::channel();
    trigger.send(tx).await.map_err(|_| ApiError::unavailable("the batch layer is not running"))?;
    let report = tokio::time::timeout(BATCH_RUN_TIMEOUT, rx)
        .await
        .map_err(|_| ApiError::unavailable("the batch run did not finish in time; it goes on"))?
        .map_err(|_| ApiError::unavailable("the batch layer stopped during the run"))?
        .map_err(|e| ApiError::unavailable(format!("batch run failed: {e}")))?;
    Ok((
        StatusCode::CREATED,
        Json(BatchRunResponse {
            view_version: report.view_version,
            batch_horizon: report.batch_horizon_ms.map(format_rfc3339),
            files_read: report.files_read,
            events: report.events,
            rows: report.rows,
            elapsed_ms: report.elapsed_ms,
        }),
    ))
}
