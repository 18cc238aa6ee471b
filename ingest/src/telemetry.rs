//! Every metric the ingest crate emits, named once (Prometheus names, `_total` for counters).

/// Events a source appended to its topic (label `source`: `http`, `feed`, `logs`, `cdc`,
/// `poller`), counted once the log took them.
pub const EVENTS_APPENDED_TOTAL: &str = "prism_ingest_events_appended_total";
/// Inputs a source refused and sent to `prism.dlq` with the reason (label `source`).
pub const EVENTS_DEAD_LETTERED_TOTAL: &str = "prism_ingest_events_dead_lettered_total";
/// HTTP requests answered from the idempotency-key record instead of appending again.
pub const HTTP_IDEMPOTENT_REPLAYS_TOTAL: &str = "prism_ingest_http_idempotent_replays_total";
/// Input rows the historical feed refused (also sent to the dead-letter topic).
pub const FEED_ROWS_REFUSED_TOTAL: &str = "prism_feed_rows_refused_total";
/// Events in batches HTTP ingest refused.
pub const HTTP_EVENTS_REFUSED_TOTAL: &str = "prism_ingest_http_events_refused_total";
/// Complete lines the log-file source read from its files (appended, refused or found already
/// in the log).
pub const LOGS_LINES_READ_TOTAL: &str = "prism_logs_lines_read_total";
/// Files the log-file source holds open.
pub const LOGS_OPEN_FILES: &str = "prism_logs_open_files";
/// Bytes the open files hold past where the log-file source has read (bytes).
pub const LOGS_BYTES_BEHIND: &str = "prism_logs_bytes_behind";
/// Seconds since the log-file source last saved its checkpoint while lines the log acknowledged
/// are not in it yet; 0 when the saved checkpoint is up to date.
pub const LOGS_CHECKPOINT_AGE_SECONDS: &str = "prism_logs_checkpoint_age_seconds";
/// Requests the quote poller made (one per symbol per interval).
pub const POLLER_POLLS_TOTAL: &str = "prism_poller_polls_total";
/// Valid quotes the quote poller got that equal the last appended for their symbol (skipped).
pub const POLLER_UNCHANGED_TOTAL: &str = "prism_poller_unchanged_total";
/// Polls that gave no valid quote (label `kind`: `connect`, `timeout`, `status`, `too_large`,
/// `body`, `request`, `invalid`).
pub const POLLER_ERRORS_TOTAL: &str = "prism_poller_errors_total";
/// When the quote poller last got a valid quote (UTC seconds since the epoch).
pub const POLLER_LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "prism_poller_last_success_timestamp_seconds";
/// Seconds since the quote poller last saved its checkpoint (when a poll starts).
pub const POLLER_CHECKPOINT_AGE_SECONDS: &str = "prism_poller_checkpoint_age_seconds";
/// Changes the CDC source appended (label `op`: `r` snapshot rows, `c`, `u`, `d`, `t`).
pub const CDC_CHANGES_TOTAL: &str = "prism_cdc_changes_total";
/// The WAL position (LSN, as a number) the CDC source last confirmed on its replication slot.
pub const CDC_CONFIRMED_LSN: &str = "prism_cdc_confirmed_lsn";
/// Transactions the CDC source appended and confirmed.
pub const CDC_TRANSACTIONS_TOTAL: &str = "prism_cdc_transactions_total";
/// WAL the CDC source's replication slot holds back (current WAL − confirmed flush LSN), bytes.
pub const CDC_SLOT_LAG_BYTES: &str = "prism_cdc_slot_lag_bytes";
/// How long the CDC slot's confirmed flush LSN (the source's checkpoint) has not moved, seconds.
pub const CDC_CHECKPOINT_AGE_SECONDS: &str = "prism_cdc_checkpoint_age_seconds";

/// Registers the HELP text of every ingest metric with the installed recorder (a no-op without
/// one; calling it again is harmless).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(EVENTS_APPENDED_TOTAL, "Events each ingest source appended to its topic, once the log took them.");
    describe_counter!(EVENTS_DEAD_LETTERED_TOTAL, "Inputs each ingest source refused and sent to prism.dlq with the reason.");
    describe_counter!(
        HTTP_IDEMPOTENT_REPLAYS_TOTAL,
        "HTTP ingest requests answered again from their Idempotency-Key record, appending nothing."
    );
    describe_counter!(FEED_ROWS_REFUSED_TOTAL, "Input rows the historical feed refused (also sent to the dead-letter topic).");
    describe_counter!(HTTP_EVENTS_REFUSED_TOTAL, "Events in batches HTTP ingest refused (4xx).");
    describe_counter!(
        LOGS_LINES_READ_TOTAL,
        "Complete lines the log-file source read from its files (appended, refused or found already in the log)."
    );
    describe_gauge!(LOGS_OPEN_FILES, "Files the log-file source holds open.");
    describe_gauge!(LOGS_BYTES_BEHIND, Unit::Bytes, "Bytes the open files hold past where the log-file source has read.");
    describe_gauge!(
        LOGS_CHECKPOINT_AGE_SECONDS,
        Unit::Seconds,
        "Seconds since the log-file source last saved its checkpoint while acknowledged lines are not in it yet (0 when up to date)."
    );
    describe_counter!(POLLER_POLLS_TOTAL, "Requests the quote poller made (one per symbol per interval).");
    describe_counter!(
        POLLER_UNCHANGED_TOTAL,
        "Valid quotes the quote poller got that equal the last appended for their symbol (same time, price and size; not appended)."
    );
    describe_counter!(
        POLLER_ERRORS_TOTAL,
        "Quote polls that gave no valid quote, by kind (connect, timeout, status, too_large, body, request; invalid: dead-lettered)."
    );
    describe_gauge!(
        POLLER_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When the quote poller last got a valid quote, UTC seconds since the epoch."
    );
    describe_counter!(CDC_CHANGES_TOTAL, "Changes the CDC source appended, by op (r snapshot rows, c, u, d, t).");
    describe_gauge!(
        CDC_CONFIRMED_LSN,
        "The WAL position (LSN as a number) the CDC source last confirmed on its replication slot (everything before it is in the log)."
    );
    describe_counter!(CDC_TRANSACTIONS_TOTAL, "Transactions the CDC source appended to the log and confirmed on its slot.");
    describe_gauge!(
        CDC_SLOT_LAG_BYTES,
        Unit::Bytes,
        "WAL the CDC source's replication slot holds back (current WAL position minus its confirmed flush LSN)."
    );
    describe_gauge!(
        POLLER_CHECKPOINT_AGE_SECONDS,
        Unit::Seconds,
        "Seconds since the quote poller last saved its checkpoint, when a poll starts (it saves after every poll's appends)."
    );
    describe_gauge!(
        CDC_CHECKPOINT_AGE_SECONDS,
        Unit::Seconds,
        "How long the CDC slot's confirmed flush LSN (the source's checkpoint) has not moved, to 5 s; it grows only while confirming stalls."
    );
}
