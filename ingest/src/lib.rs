//! Prism ingest: sources → the event log (DESIGN §2).
//!
//! - [`access_log`]: Apache/nginx `common` and `combined` access-log lines and JSON lines, parsed
//!   into the fields of a `prism.access_logs` event (the log-file source's parser).
//! - [`cdc_value`]: PostgreSQL column values → the JSON of a CDC envelope.
//! - [`feed`]: the historical feed of daily bars (the stock-quote lab's source).
//! - [`pgoutput`]: a decoder for PostgreSQL's `pgoutput` logical replication messages (the CDC
//!   source's protocol).
//! - [`http`]: `POST /v1/events/quotes`, HTTP ingest of JSON / NDJSON quotes.
//! - [`telemetry`]: the metric names this crate emits.

pub mod access_log;
pub mod cdc_value;
pub mod feed;
pub mod http;
pub mod pgoutput;
pub mod telemetry;
