//! Every metric the ingest crate emits, named once (Prometheus names, `_total` for counters).

/// Trades the historical feed appended to the log.
pub const FEED_EVENTS_TOTAL: &str = "prism_feed_events_total";
/// Input rows the historical feed refused (also sent to the dead-letter topic).
pub const FEED_ROWS_REFUSED_TOTAL: &str = "prism_feed_rows_refused_total";
/// Events accepted by HTTP ingest and appended to the log.
pub const HTTP_EVENTS_ACCEPTED_TOTAL: &str = "prism_ingest_http_events_accepted_total";
/// Events in batches HTTP ingest refused.
pub const HTTP_EVENTS_REFUSED_TOTAL: &str = "prism_ingest_http_events_refused_total";

/// Registers the HELP text of every ingest metric with the installed recorder (a no-op without
/// one; calling it again is harmless).
pub fn describe() {
    use metrics::describe_counter;
    describe_counter!(FEED_EVENTS_TOTAL, "Trades the historical feed appended to the log.");
    describe_counter!(FEED_ROWS_REFUSED_TOTAL, "Input rows the historical feed refused (also sent to the dead-letter topic).");
    describe_counter!(HTTP_EVENTS_ACCEPTED_TOTAL, "Events HTTP ingest accepted and appended to the log.");
    describe_counter!(HTTP_EVENTS_REFUSED_TOTAL, "Events in batches HTTP ingest refused (4xx).");
}
