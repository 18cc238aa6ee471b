//! `POST /v1/admin/batch-runs`: run the batch job now.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use prism_core::batch_run::{BatchRunReport, BatchRunRequest};
use prism_core::log::EventLog;
use prism_core::time::format_rfc3339;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::ServingState;

/// How long a requested batch run may take before the request gives up (the run goes on).
pub const BATCH_RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Query parameters of `POST /v1/admin/batch-runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchRunQuery {
    /// Rebuild every segment instead of only the chunks whose master data changed.
    pub full: Option<bool>,
}

/// What a requested batch run did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchRunResponse {
    /// One entry per registered view.
    pub runs: Vec<ViewBatchRun>,
}

/// What a batch run did for one view.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ViewBatchRun {
    /// The view.
    pub view: String,
    /// Batch-view version published; null when nothing is archived yet.
    pub view_version: Option<i64>,
    /// Batch horizon it covers, RFC 3339.
    pub batch_horizon: Option<String>,
    /// Whether every segment was rebuilt.
    pub full: bool,
    /// Segments built.
    pub segments_built: u64,
    /// Segments carried over unchanged from the previous version.
    pub segments_carried: u64,
    /// Master-dataset files read.
    pub files_read: u64,
    /// Events aggregated into the segments built.
    pub events: u64,
    /// Rows in the segments built.
    pub rows: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

impl From<BatchRunReport> for ViewBatchRun {
    fn from(r: BatchRunReport) -> Self {
        ViewBatchRun {
            view: r.view,
            view_version: r.view_version,
            batch_horizon: r.batch_horizon_ms.map(format_rfc3339),
            full: r.full,
            segments_built: r.segments_built,
            segments_carried: r.segments_carried,
            files_read: r.files_read,
            events: r.events,
            rows: r.rows,
            elapsed_ms: r.elapsed_ms,
        }
    }
}

/// Runs the batch job of every registered view now and answers when their versions are
/// published.
#[utoipa::path(
    post,
    path = "/v1/admin/batch-runs",
    tag = "admin",
    params(BatchRunQuery),
    responses(
        (status = 201, description = "Batch views recomputed and published", body = BatchRunResponse),
        (status = 400, description = "Bad parameter", body = ApiError),
        (status = 409, description = "No batch layer here (Kappa mode, or a serving process of the distributed deployment)", body = ApiError),
        (status = 503, description = "The batch run failed or timed out", body = ApiError)
    )
)]
pub async fn post_batch_run<L: EventLog>(
    State(state): State<ServingState<L>>,
    query: Result<Query<BatchRunQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<BatchRunResponse>), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(trigger) = state.batch_trigger.as_ref() else {
        return Err(ApiError::conflict(match state.architecture {
            prism_core::config::Architecture::Kappa => "kappa mode has no batch layer".to_string(),
            prism_core::config::Architecture::Lambda => {
                "this process runs no batch layer: send POST /v1/admin/batch-runs to the batch-layer service".to_string()
            }
        }));
    };
    let (tx, rx) = oneshot::channel();
    trigger
        .send(BatchRunRequest { full: q.full.unwrap_or(false), reply: tx })
        .await
        .map_err(|_| ApiError::unavailable("the batch layer is not running"))?;
    let reports = tokio::time::timeout(BATCH_RUN_TIMEOUT, rx)
        .await
        .map_err(|_| ApiError::unavailable("the batch run did not finish in time; it goes on"))?
        .map_err(|_| ApiError::unavailable("the batch layer stopped during the run"))?
        .map_err(|e| ApiError::internal(&format!("batch run failed: {e}")))?;
    Ok((StatusCode::CREATED, Json(BatchRunResponse { runs: reports.into_iter().map(ViewBatchRun::from).collect() })))
}
