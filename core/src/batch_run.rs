//! The contract between whoever asks for a batch run (the serving layer's
//! `POST /v1/admin/batch-runs`) and the batch layer that performs it. Layers never import each
//! other, so the request travels over a channel whose types live here.

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// What one batch run did for one view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchRunReport {
    /// The view.
    pub view: String,
    /// The batch-view version written and published; `None` when nothing could be computed
    /// (no archived data yet).
    pub view_version: Option<i64>,
    /// The batch horizon H it covers, UTC ms.
    pub batch_horizon_ms: Option<i64>,
    /// Whether every chunk was rebuilt (asked for, or the view's definition changed).
    pub full: bool,
    /// Segments built by this run.
    pub segments_built: u64,
    /// Segments carried over from the previous version unchanged.
    pub segments_carried: u64,
    /// Master-dataset files read.
    pub files_read: u64,
    /// Events aggregated into the segments built (those with event time before H).
    pub events: u64,
    /// Rows in the segments built (every interval).
    pub rows: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// A request for a batch run now: `full` rebuilds every chunk; the answer (one report per
/// registered view, or the error text) comes back on `reply`.
#[derive(Debug)]
pub struct BatchRunRequest {
    /// Rebuild every chunk instead of only the changed ones.
    pub full: bool,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Vec<BatchRunReport>, String>>,
}

/// The handle that requests batch runs.
pub type BatchTrigger = mpsc::Sender<BatchRunRequest>;
