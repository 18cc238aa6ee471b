//! The contract between whoever asks for a batch run (the serving layer's
//! `POST /v1/admin/batch-runs`) and the batch layer that performs it. Layers never import each
//! other, so the request travels over a channel whose types live here.

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// What one batch run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchRunReport {
    /// The batch-view version written and published; `None` when nothing could be computed
    /// (no archived data yet).
    pub view_version: Option<i64>,
    /// The batch horizon H it covers, UTC ms.
    pub batch_horizon_ms: Option<i64>,
    /// Master-dataset files read.
    pub files_read: u64,
    /// Events aggregated (those with event time before H).
    pub events: u64,
    /// Batch-view rows written.
    pub rows: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// A request for a batch run now; the answer (or the error text) comes back on the sender.
pub type BatchRunRequest = oneshot::Sender<Result<BatchRunReport, String>>;

/// The handle that requests batch runs.
pub type BatchTrigger = mpsc::Sender<BatchRunRequest>;
