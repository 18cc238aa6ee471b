//! The `prism` binary's library: one module per subcommand, plus what they share.
//!
//! - [`up`]: everything in one process on embedded defaults.
//! - [`micro`]: the microservices of the distributed deployment (Kafka + PostgreSQL);
//!   [`sources`]: its ingest source services (log files).
//! - [`bench`]: the benchmark that prints a JSON report ([`bench_kafka`]: its Kafka path);
//!   [`bench_lab`]: the stock-quote lab measured end to end; [`bench_workload`]: its workloads,
//!   read a chunk at a time.
//! - [`app`]: the HTTP application (routes, OpenAPI, Swagger UI, metrics).
//! - [`lab`]: the bundled stock-quote lab data.

pub mod app;
pub mod bench;
pub mod bench_http;
pub mod bench_kafka;
pub mod bench_lab;
pub mod bench_workload;
pub mod group_versions;
pub mod lab;
pub mod micro;
pub mod replay_agent;
pub mod replay_cli;
pub mod sources;
pub mod up;

/// An HTTP client for Prism's own tools (the bench, the tests). The workspace builds `reqwest`
/// with rustls but without a built-in crypto provider (see the root `Cargo.toml`), so this
/// installs rustls' ring provider first; a second install is a no-op.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
