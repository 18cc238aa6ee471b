//! Every metric the ingest crate emits, named once (Prometheus names, `_total` for counters).

/// Trades the historical feed appended to the log.
pub const FEED_EVENTS_TOTAL: &str = "prism_feed_events_total";
/// Input rows the historical feed refused (also sent to the dead-letter topic).
pub const FEED_ROWS_REFUSED_TOTAL: &str = "prism_feed_rows_refused_total";
/// Events accepted by HTTP ingest and appended to the log.
pub const HTTP_EVENTS_ACCEPTED_TOTAL: &str = "prism_ingest_http_events_accepted_total";
/// Events in batches HTTP ingest refused.
pub const HTTP_EVENTS_REFUSED_TOTAL: &str = "prism_ingest_http_events_refused_total";
