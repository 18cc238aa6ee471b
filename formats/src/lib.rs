//! Prism's parsers of formats it does not define (DESIGN §3 sources), kept in a crate of few
//! dependencies so that `cargo fuzz` builds them in seconds (`fuzz/`).
//!
//! - [`access_log`]: Apache/nginx `common` and `combined` access-log lines and JSON lines.
//! - [`pgoutput`]: PostgreSQL's `pgoutput` logical replication messages.
//! - [`time`]: event-time fields given as RFC 3339 text or UTC milliseconds.

pub mod access_log;
pub mod pgoutput;
pub mod time;
