//! The ingest source services of the distributed deployment (issue 9): each runs one source into
//! Kafka with its own checkpoint, `/healthz`, `/readyz` and `/metrics`, and stops gracefully
//! (finish the batch in flight, save the checkpoint) on SIGTERM.
//!
//! - `prism ingest-cdc`: PostgreSQL change data capture into `prism.cdc.*`
//!   ([`prism_ingest::cdc`]).
//! - `prism ingest-logs`: tails access-log files into `prism.access_logs`
//!   ([`prism_ingest::logs`]).
//! - `prism quote-poller`: polls a JSON quote API into `prism.quotes`
//!   ([`prism_ingest::poller`]).
//!
//! - `prism feed`: the historical feed (the stock-quote lab's daily bars as trades) into
//!   `prism.quotes` ([`prism_ingest::feed`]).
//!
//! And `prism quote-sim`, a simulated exchange quote API to poll ([`prism_ingest::quote_sim`];
//! no Kafka, no view store), and `prism healthcheck`, a container healthcheck.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use prism_ingest::cdc::{run_cdc, CdcArgs};
use prism_ingest::logs::{run_log_tailer, LogsArgs};
use prism_ingest::poller::{run_quote_poller as run_poller, PollerArgs};
use prism_ingest::quote_sim::{serve_quote_sim, SimArgs, Simulator};
use prism_serving::ops::ReadinessCheck;
use tokio_util::sync::CancellationToken;

use crate::micro::{connect, ops_with, run_service, Deps};

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
    let ready = files_ready(config.logs.tail.clone());
    let done = run_service("ingest-logs", config.http_addr, ops_with(&store, &log, vec![ready]), shutdown, Some(component)).await;
    store.close().await;
    done
}

/// Flags of `prism quote-poller`.
#[derive(Debug, Clone, Args)]
pub struct QuotePollerConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address (ops endpoints).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8086")]
    pub http_addr: SocketAddr,
    /// Where the poller keeps its checkpoint (`poller-checkpoint.json`); one folder per
    /// instance, kept across restarts.
    #[arg(long, env = "PRISM_DATA_DIR", default_value = "./prism-quote-poller")]
    pub data_dir: PathBuf,
    /// The quote API and the symbols to poll.
    #[command(flatten)]
    pub poll: PollerArgs,
}

/// The poller's checkpoint file in its data dir.
pub const POLLER_CHECKPOINT_FILE: &str = "poller-checkpoint.json";

/// `prism quote-poller`: a JSON quote API → `prism.quotes` in Kafka.
///
/// Errors: no `--poll-url` or `--poll-symbols` (or a bad one), Kafka or the view store
/// unreachable, the data dir not writable, or a failure of the event log or the checkpoint
/// (logged; the process exits non-zero and a restart resumes from the checkpoint and the log).
/// The quote API being down is not an error: it is polled again every interval.
pub async fn run_quote_poller(config: QuotePollerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let poller = config.poll.config(config.data_dir.join(POLLER_CHECKPOINT_FILE), config.deps.deployment.partitions)?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let (log, store) = connect(&config.deps).await?;
    let (l, stop) = (log.clone(), shutdown.clone());
    let component = async move {
        let stats = run_poller(poller, l, stop).await.context("quote poller")?;
        tracing::info!(
            polls = stats.polls,
            appended = stats.appended,
            unchanged = stats.unchanged,
            errors = stats.errors,
            "quote poller stopped"
        );
        Ok(())
    };
    let ready = api_ready(config.poll.poll_url.clone().unwrap_or_default(), config.poll.poll_symbols.first().cloned().unwrap_or_default());
    let done = run_service("quote-poller", config.http_addr, ops_with(&store, &log, vec![ready]), shutdown, Some(component)).await;
    store.close().await;
    done
}

/// Flags of `prism quote-sim`.
#[derive(Debug, Clone, Args)]
pub struct QuoteSimConfig {
    /// HTTP address of the simulated quote API.
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8090")]
    pub http_addr: SocketAddr,
    /// The symbols, seed and step of the simulation.
    #[command(flatten)]
    pub sim: SimArgs,
}

/// `prism quote-sim`: serves simulated quotes (`GET /v1/quotes/{symbol}`, `GET /v1/quotes`,
/// `/healthz`) until `shutdown`.
///
/// Errors: bad flags, or the address cannot be bound.
pub async fn run_quote_sim(config: QuoteSimConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sim = Simulator::new(config.sim.config().map_err(anyhow::Error::msg)?).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the quote simulator to {}", config.http_addr))?;
    serve_quote_sim(std::sync::Arc::new(sim), listener, shutdown).await.context("quote simulator")
}

/// Flags of `prism ingest-cdc`.
#[derive(Debug, Clone, Args)]
pub struct IngestCdcConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address (ops endpoints).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8087")]
    pub http_addr: SocketAddr,
    /// The database to capture, its slot, publication and schemas.
    #[command(flatten)]
    pub cdc: CdcArgs,
}

/// `prism ingest-cdc`: PostgreSQL logical replication (`pgoutput`) → `prism.cdc.<db>.<schema>.<table>`
/// in Kafka. Its checkpoint is the replication slot's confirmed flush LSN, which moves only after
/// Kafka acknowledged every change up to it (at-least-once; see `prism_ingest::cdc`).
///
/// Errors: no `--cdc-database-url`, Kafka, the view store or the captured database unreachable,
/// a published table without a key, or a failure of the stream (logged; the process exits
/// non-zero and a restart resumes from the slot).
pub async fn run_ingest_cdc(config: IngestCdcConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cdc = config.cdc.config(config.deps.deployment.partitions)?;
    let (log, store) = connect(&config.deps).await?;
    let ready = database_ready(cdc.database_url.clone());
    let (l, stop) = (log.clone(), shutdown.clone());
    let component = async move {
        let stats = run_cdc(cdc, l, stop).await.context("change data capture")?;
        tracing::info!(snapshot_rows = stats.snapshot_rows, changes = stats.changes, "change data capture stopped");
        Ok(())
    };
    let done = run_service("ingest-cdc", config.http_addr, ops_with(&store, &log, vec![ready]), shutdown, Some(component)).await;
    store.close().await;
    done
}

/// `/readyz` of `ingest-cdc`: the captured database answers within 2 s (its address and
/// password are never in the answer).
fn database_ready(url: String) -> ReadinessCheck {
    Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            match tokio::time::timeout(std::time::Duration::from_secs(2), prism_ingest::cdc::pg::ping(&url)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) | Err(_) => Err("the captured database does not answer".to_string()),
            }
        })
    })
}

/// `/readyz` of `ingest-logs`: the folder of every `--tail` pattern can be listed (the files
/// themselves may appear later).
fn files_ready(globs: Vec<String>) -> ReadinessCheck {
    Arc::new(move || {
        let globs = globs.clone();
        Box::pin(async move {
            for pattern in globs.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
                let dir = glob_folder(pattern);
                std::fs::read_dir(&dir).map_err(|e| format!("cannot list {} (from --tail {pattern:?}): {e}", dir.display()))?;
            }
            Ok(())
        })
    })
}

/// The folder a glob pattern starts in: its path up to the first component with a wildcard.
fn glob_folder(pattern: &str) -> PathBuf {
    let mut dir = PathBuf::new();
    let path = std::path::Path::new(pattern);
    let components: Vec<_> = path.components().collect();
    for (i, c) in components.iter().enumerate() {
        let text = c.as_os_str().to_string_lossy();
        if i + 1 == components.len() || text.contains(['*', '?', '[']) {
            break;
        }
        dir.push(c);
    }
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    }
}

/// `/readyz` of `quote-poller`: the quote API answers (any HTTP status) for the first symbol
/// within 2 s.
fn api_ready(template: String, symbol: String) -> ReadinessCheck {
    let client = crate::http_client();
    Arc::new(move || {
        let (client, url) = (client.clone(), template.replace("{symbol}", &symbol));
        Box::pin(async move {
            client
                .get(&url)
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("the quote API does not answer: {}", e.without_url()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_folders() {
        assert_eq!(glob_folder("/var/log/nginx/access.log*"), PathBuf::from("/var/log/nginx"));
        assert_eq!(glob_folder("/var/log/*/access.log"), PathBuf::from("/var/log"));
        assert_eq!(glob_folder("access.log"), PathBuf::from("."));
        assert_eq!(glob_folder("logs/access.log"), PathBuf::from("logs"));
    }
}

/// Flags of `prism feed`.
#[derive(Debug, Clone, Args)]
pub struct FeedServiceConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address (ops endpoints).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8088")]
    pub http_addr: SocketAddr,
    /// Where the lab's daily bars are unpacked when `--feed` names no file.
    #[arg(long, env = "PRISM_DATA_DIR", default_value = "./prism-feed")]
    pub data_dir: PathBuf,
    /// The files to replay as trades.
    #[command(flatten)]
    pub feed: prism_ingest::feed::FeedArgs,
}

/// `prism feed`: the historical feed (daily-bar CSV files replayed as trades; the stock-quote
/// lab's data by default) into `prism.quotes` in Kafka, resuming from its checkpoint in the view
/// store; the process stays up (ops endpoints) once the files are done.
///
/// Errors: Kafka or the view store unreachable, an unreadable file, or a failure of the feed.
pub async fn run_feed_service(config: FeedServiceConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let files = if config.feed.feed.is_empty() { vec![crate::lab::install_lab_data(&config.data_dir)?] } else { config.feed.feed.clone() };
    let feed = config.feed.config(files, config.deps.deployment.partitions).map_err(anyhow::Error::msg)?;
    let (log, store) = connect(&config.deps).await?;
    let (l, s, stop) = (log.clone(), store.clone(), shutdown.clone());
    let component = async move {
        let trades = prism_ingest::feed::run_feed(feed, l, s, stop.clone()).await.context("historical feed")?;
        tracing::info!(trades, "historical feed done; serving ops endpoints until stopped");
        stop.cancelled().await;
        Ok(())
    };
    let done = run_service("feed", config.http_addr, ops_with(&store, &log, Vec::new()), shutdown, Some(component)).await;
    store.close().await;
    done
}

/// Flags of `prism healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The URL to GET (a service's `/readyz`).
    #[arg(default_value = "http://127.0.0.1:8080/readyz")]
    pub url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = prism_core::config::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `prism healthcheck URL`: exits 0 when `URL` answers 2xx within the timeout (container
/// healthchecks without curl in the image).
///
/// Errors: no answer, or a non-2xx status (the body's first 200 bytes say why).
pub async fn run_healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let client = crate::http_client();
    let answer = client.get(&args.url).timeout(args.timeout).send().await.with_context(|| format!("GET {}", args.url))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{} answered {status}: {}", args.url, body.chars().take(200).collect::<String>());
    Ok(())
}
