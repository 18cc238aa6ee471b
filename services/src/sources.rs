//! The ingest source services of the distributed deployment (issue 9): each runs one source into
//! Kafka with its own checkpoint, `/healthz`, `/readyz` and `/metrics`, and stops gracefully
//! (finish the batch in flight, save the checkpoint) on SIGTERM.
//!
//! - `prism ingest-logs`: tails access-log files into `prism.access_logs`
//!   ([`prism_ingest::logs`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use prism_ingest::logs::{run_log_tailer, LogsArgs};
use tokio_util::sync::CancellationToken;

use crate::micro::{connect, ops, run_service, Deps};

/// Flags of `prism ingest-logs`.
#[derive(Debug, Clone, Args)]
pub struct IngestLogsConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address (ops endpoints).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8085")]
    pub http_addr: SocketAddr,
    /// Where the tailer keeps its checkpoints (`tail-checkpoints.json`); one folder per
    /// instance, kept across restarts.
    #[arg(long, env = "PRISM_DATA_DIR", default_value = "./prism-ingest-logs")]
    pub data_dir: PathBuf,
    /// The files to tail.
    #[command(flatten)]
    pub logs: LogsArgs,
}

/// `prism ingest-logs`: access-log files → `prism.access_logs` in Kafka.
///
/// Errors: no `--tail` pattern, Kafka or the view store unreachable, the data dir not writable,
/// or a failure of the tailer (logged; the process exits non-zero and a restart resumes from the
/// checkpoint).
pub async fn run_ingest_logs(config: IngestLogsConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let tailer = config.logs.config(config.data_dir.join("tail-checkpoints.json"), config.deps.deployment.partitions);
    anyhow::ensure!(!tailer.globs.is_empty(), "nothing to tail: give --tail GLOB (PRISM_TAIL)");
    let (log, store) = connect(&config.deps).await?;
    let (l, stop) = (log.clone(), shutdown.clone());
    let component = async move {
        let stats = run_log_tailer(tailer, l, stop).await.context("log-file tailer")?;
        tracing::info!(lines = stats.lines_read, appended = stats.appended, dead_lettered = stats.dead_lettered, "log-file tailer stopped");
        Ok(())
    };
    let done = run_service("ingest-logs", config.http_addr, ops(&store, &log, None), shutdown, Some(component)).await;
    store.close().await;
    done
}
