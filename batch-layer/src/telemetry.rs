//! Every metric the batch layer emits, named once; [`describe`] gives each its HELP text.

/// Events written to the master dataset.
pub const ARCHIVED_EVENTS_TOTAL: &str = "prism_archiver_events_total";
/// Parquet files written to the master dataset.
pub const ARCHIVED_FILES_TOTAL: &str = "prism_archiver_files_total";
/// Malformed records the archiver skipped (the speed layer dead-letters them).
pub const ARCHIVER_SKIPPED_TOTAL: &str = "prism_archiver_skipped_total";
/// Duration of one archiver flush (files + offset commit), seconds.
pub const ARCHIVER_FLUSH_SECONDS: &str = "prism_archiver_flush_seconds";
/// Compaction passes of the archiver that failed (retried at the next opportunity).
pub const ARCHIVER_COMPACTION_FAILURES_TOTAL: &str = "prism_archiver_compaction_failures_total";
/// Merged master-dataset files written by compaction (one per (partition, UTC day) group).
pub const MASTER_COMPACTIONS_TOTAL: &str = "prism_master_compactions_total";
/// Small master-dataset files merged into larger ones by compaction.
pub const MASTER_FILES_COMPACTED_TOTAL: &str = "prism_master_files_compacted_total";
/// Superseded master-dataset files deleted after their grace period.
pub const MASTER_SUPERSEDED_FILES_REMOVED_TOTAL: &str = "prism_master_superseded_files_removed_total";
/// Batch views published.
pub const BATCH_RUNS_TOTAL: &str = "prism_batch_runs_total";
/// Scheduled batch runs that failed (nothing of them published; the next run retries).
pub const BATCH_RUN_FAILURES_TOTAL: &str = "prism_batch_run_failures_total";
/// Batch-view segments built (chunks rebuilt; carried-over segments are not counted).
pub const SEGMENTS_BUILT_TOTAL: &str = "prism_batch_segments_built_total";
/// Duration of one batch run, seconds.
pub const BATCH_RUN_SECONDS: &str = "prism_batch_run_seconds";
/// The published batch horizon, UTC ms.
pub const BATCH_HORIZON_MS: &str = "prism_batch_horizon_ms";

/// Registers the HELP text of every batch-layer metric with the installed recorder (a no-op
/// without one; calling it again is harmless). The archiver calls it when it starts.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(ARCHIVED_EVENTS_TOTAL, "Events written to the master dataset.");
    describe_counter!(ARCHIVED_FILES_TOTAL, "Parquet files the archiver wrote to the master dataset.");
    describe_counter!(ARCHIVER_SKIPPED_TOTAL, "Malformed records the archiver skipped (the speed layer dead-letters them).");
    describe_histogram!(ARCHIVER_FLUSH_SECONDS, Unit::Seconds, "Duration of one archiver flush (files and offset commit).");
    describe_counter!(ARCHIVER_COMPACTION_FAILURES_TOTAL, "Compaction passes of the archiver that failed and will be retried.");
    describe_counter!(MASTER_COMPACTIONS_TOTAL, "Merged master-dataset files written by compaction, one per (partition, UTC day) group.");
    describe_counter!(MASTER_FILES_COMPACTED_TOTAL, "Small master-dataset files merged into larger ones by compaction.");
    describe_counter!(MASTER_SUPERSEDED_FILES_REMOVED_TOTAL, "Superseded master-dataset files deleted after their grace period.");
    describe_counter!(BATCH_RUNS_TOTAL, "Batch-view versions published, per view.");
    describe_counter!(
        BATCH_RUN_FAILURES_TOTAL,
        "Scheduled batch runs that failed; nothing of them was published and the next run retries."
    );
    describe_counter!(SEGMENTS_BUILT_TOTAL, "Batch-view segments built by batch runs (carried-over segments are not counted).");
    describe_histogram!(BATCH_RUN_SECONDS, Unit::Seconds, "Duration of one batch run.");
    describe_gauge!(BATCH_HORIZON_MS, Unit::Milliseconds, "The published batch horizon, UTC milliseconds since the epoch.");
}
