//! Prism ingest: sources → the event log (DESIGN §2).
//!
//! - [`feed`]: the historical feed of daily bars (the stock-quote lab's source).
//! - [`http`]: `POST /v1/events/quotes`, HTTP ingest of JSON / NDJSON quotes.
//! - [`telemetry`]: the metric names this crate emits.

pub mod feed;
pub mod http;
pub mod telemetry;
