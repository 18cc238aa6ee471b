//! Prism ingest: sources → the event log (DESIGN §2).
//!
//! - [`append`]: the one append path of every source (validate → append → flush → count →
//!   dead-letter) and the recovery of a source's position from the log.
//! - [`access_log`] (from `prism-formats`): Apache/nginx `common` and `combined` access-log lines and JSON lines, parsed
//!   into the fields of a `prism.access_logs` event (the log-file source's parser).
//! - [`cdc`]: the CDC source `prism ingest-cdc`: PostgreSQL logical replication (`pgoutput`) of
//!   the tables of a publication into `prism.cdc.<db>.<schema>.<table>` (Debezium-style
//!   envelopes keyed by the primary key), an initial snapshot then the stream, at least once
//!   (the slot is confirmed only past what the log acknowledged).
//! - [`cdc_value`]: PostgreSQL column values → the JSON of a CDC envelope.
//! - [`feed`]: the historical feed of daily bars (the stock-quote lab's source).
//! - [`pgoutput`] (from `prism-formats`): a decoder for PostgreSQL's `pgoutput` logical replication messages (the CDC
//!   source's protocol).
//! - [`logs`]: the log-file source `prism ingest-logs`: tails access logs through rotation into
//!   `prism.access_logs` (exactly once across crashes, recovered from record headers) and
//!   refused lines into `prism.dlq`.
//! - [`http`]: `POST /v1/events/quotes`, HTTP ingest of JSON / NDJSON quotes.
//! - [`poller`]: the quote poller `prism quote-poller`: polls a JSON quote API per symbol into
//!   `prism.quotes`, skipping unchanged quotes (each distinct quote once across restarts,
//!   recovered from record headers); refused answers into `prism.dlq`.
//! - [`quote_sim`]: `prism quote-sim`, a simulated exchange quote API (deterministic random
//!   walks) for the poller.
//! - [`tail`]: follows log files matching glob patterns through rotation, handing out complete
//!   lines with their byte positions (the log-file source's file-following core).
//! - [`telemetry`]: the metric names this crate emits.

pub use prism_formats::{access_log, pgoutput};
pub mod append;
pub mod cdc;
pub mod cdc_value;
pub mod feed;
pub mod http;
pub mod logs;
pub mod poller;
pub mod quote_sim;
pub mod tail;
pub mod telemetry;
