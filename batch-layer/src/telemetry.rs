//! Every metric the batch layer emits, named once.

/// Events written to the master dataset.
pub const ARCHIVED_EVENTS_TOTAL: &str = "prism_archiver_events_total";
/// Parquet files written to the master dataset.
pub const ARCHIVED_FILES_TOTAL: &str = "prism_archiver_files_total";
/// Malformed records the archiver skipped (the speed layer dead-letters them).
pub const ARCHIVER_SKIPPED_TOTAL: &str = "prism_archiver_skipped_total";
/// Duration of one archiver flush (files + offset commit), seconds.
pub const ARCHIVER_FLUSH_SECONDS: &str = "prism_archiver_flush_seconds";
/// Batch views published.
pub const BATCH_RUNS_TOTAL: &str = "prism_batch_runs_total";
/// Duration of one batch run, seconds.
pub const BATCH_RUN_SECONDS: &str = "prism_batch_run_seconds";
/// The published batch horizon, UTC ms.
pub const BATCH_HORIZON_MS: &str = "prism_batch_horizon_ms";
