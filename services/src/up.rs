//! `prism up`: every layer in one process on embedded defaults (embedded log, SQLite view
//! store, local master dataset), fed by the stock-quote lab's historical feed.
//!
//! Shutdown (SIGINT/SIGTERM or the caller's token) happens in stages: stop intake (the feed
//! and the HTTP server), then let the speed layer, archiver and batch layer flush and commit,
//! then sync the log and close the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use prism_batch::archiver::{run_archiver, ArchiverConfig};
use prism_batch::batch_job::{run_batch_layer, BatchConfig};
use prism_batch::master::MasterDataset;
use prism_core::config::Architecture;
use prism_core::event::{DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::EventLog;
use prism_core::store::ViewStore;
use prism_core::view::{RegisteredView, ViewRegistry};
use prism_ingest::feed::{run_feed, FeedConfig, FeedSpeed};
use prism_serving::segments::SegmentReader;
use prism_speed::{run_speed_layer, SpeedConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::{build_app, AppParts, SEGMENT_CACHE_ROWS};
use crate::duration::parse_duration;
use crate::lab;

/// Flags of `prism up` (each with a `PRISM_*` environment fallback).
#[derive(Debug, Clone, Args)]
pub struct UpConfig {
    /// Folder for the log, the view store and the master dataset.
    #[arg(long, env = "PRISM_DATA_DIR", default_value = "./prism-data")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API (ingest, views, docs, metrics).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Daily-bar CSV files (plain or gzip) for the historical feed. Default: the bundled
    /// stock-quote lab file (AAPL, IBM, MSFT, GOOG, FB, 2000–2013).
    #[arg(long, env = "PRISM_FEED", num_args = 1.., value_delimiter = ',')]
    pub feed: Vec<PathBuf>,
    /// Run without the historical feed (events come only through HTTP ingest).
    #[arg(long, env = "PRISM_NO_FEED")]
    pub no_feed: bool,
    /// Symbol for feed files without a ticker/symbol column.
    #[arg(long, env = "PRISM_FEED_SYMBOL")]
    pub feed_symbol: Option<String>,
    /// `max`, or trading days per second.
    #[arg(long, env = "PRISM_FEED_SPEED", default_value = "max")]
    pub feed_speed: FeedSpeed,
    /// Trades generated per trading day and symbol (at least 4).
    #[arg(long, env = "PRISM_FEED_TRADES_PER_DAY", default_value_t = 390)]
    pub feed_trades_per_day: usize,
    /// Time between scheduled batch runs (`60s`, `500ms`, `5m`).
    #[arg(long, env = "PRISM_BATCH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub batch_interval: Duration,
    /// Run the batch job only on schedule and on request, not also each time the archiver
    /// catches up with the log.
    #[arg(long, env = "PRISM_NO_BATCH_ON_CATCH_UP")]
    pub no_batch_on_catch_up: bool,
    /// `lambda` (Kappa mode comes with its own issue).
    #[arg(long, env = "PRISM_ARCHITECTURE", default_value = "lambda")]
    pub architecture: Architecture,
    /// Partitions of `prism.quotes` when it is created.
    #[arg(long, env = "PRISM_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Embedded log fsync policy: `always`, `interval`, `interval:<ms>`, `never`.
    #[arg(long, env = "PRISM_FSYNC", default_value = "interval")]
    pub fsync: FsyncPolicy,
    /// Allowed lateness of event time, ms.
    #[arg(long, env = "PRISM_ALLOWED_LATENESS_MS", default_value_t = 5_000)]
    pub allowed_lateness_ms: i64,
    /// Speed-layer commit interval.
    #[arg(long, env = "PRISM_COMMIT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// Speed-layer commit after this many events.
    #[arg(long, env = "PRISM_COMMIT_MAX_EVENTS", default_value_t = 10_000)]
    pub commit_max_events: usize,
    /// Largest HTTP ingest body, bytes (413 past it).
    #[arg(long, env = "PRISM_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
}

/// Paths under the data dir.
pub struct DataDir {
    /// The embedded log.
    pub log: PathBuf,
    /// The SQLite view store file.
    pub store: PathBuf,
    /// The master dataset root.
    pub master: PathBuf,
}

impl DataDir {
    /// The layout of `root`.
    pub fn new(root: &std::path::Path) -> Self {
        DataDir { log: root.join("log"), store: root.join("views.sqlite"), master: root.join("master") }
    }
}

/// Runs everything until `shutdown` fires (or a component fails). `ready` receives the bound
/// HTTP address once the server listens.
pub async fn run_up(
    config: UpConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    if config.architecture == Architecture::Kappa {
        bail!("--architecture kappa is not available yet: this build runs the Lambda architecture only (Kappa replay is a later issue)");
    }
    if config.feed_trades_per_day < 4 {
        bail!("--feed-trades-per-day must be at least 4 (open, high, low and close need a trade each)");
    }
    if config.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let dirs = DataDir::new(&config.data_dir);
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let log = Arc::new(
        EmbeddedLog::open(&dirs.log, EmbeddedLogConfig { fsync: config.fsync, ..Default::default() })
            .context("opening the embedded event log")?,
    );
    log.ensure_topic(QUOTES_TOPIC, config.partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let store = ViewStore::open_sqlite(&dirs.store).await.context("opening the view store")?;
    let feed_files = if config.no_feed {
        Vec::new()
    } else if config.feed.is_empty() {
        vec![lab::install_lab_data(&config.data_dir)?]
    } else {
        config.feed.clone()
    };

    let intake = shutdown.child_token();
    let layers = CancellationToken::new();
    let mut intake_tasks: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    let mut layer_tasks: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    let (batch_tx, mut batch_rx) = tokio::sync::mpsc::channel(4);

    let views = ViewRegistry::standard(config.allowed_lateness_ms);
    let speed = SpeedConfig {
        commit_interval: config.commit_interval,
        commit_max_events: config.commit_max_events,
        partitions: config.partitions,
        ..SpeedConfig::default()
    };
    let mut ohlcv_views = Vec::new();
    for v in views.views() {
        let RegisteredView::Ohlcv(view) = v;
        ohlcv_views.push(view.clone());
        layer_tasks.spawn(named("speed layer", run_speed_layer(view.clone(), speed.clone(), log.clone(), store.clone(), layers.clone())));
    }
    let master = MasterDataset::local(&dirs.master).context("opening the master dataset")?;
    let archiver = ArchiverConfig::new(master.clone(), config.partitions);
    layer_tasks.spawn(named("archiver", run_archiver(archiver, log.clone(), store.clone(), layers.clone())));
    let segments = SegmentReader::new(master.location().clone(), SEGMENT_CACHE_ROWS);
    let mut batch = BatchConfig { interval: config.batch_interval, ..BatchConfig::new(master) };
    if config.no_batch_on_catch_up {
        batch.catch_up_check = None;
    }
    // The batch layer stops with the intake, not after it: a run in progress is abandoned
    // (nothing of it is published; a POST waiting for it gets a 503) instead of holding the
    // HTTP server's graceful shutdown for minutes.
    let (batch_log, batch_store, batch_stop) = (log.clone(), store.clone(), intake.clone());
    layer_tasks.spawn(named("batch layer", async move {
        run_batch_layer(ohlcv_views, batch, batch_log, batch_store, &mut batch_rx, batch_stop).await
    }));
    if let FsyncPolicy::Interval(every) = config.fsync {
        layer_tasks.spawn(named("log sync", sync_log_every(log.clone(), every, layers.clone())));
    }

    if !feed_files.is_empty() {
        let feed = FeedConfig {
            files: feed_files,
            symbol: config.feed_symbol.clone(),
            trades_per_day: config.feed_trades_per_day,
            speed: config.feed_speed,
            partitions: config.partitions,
        };
        intake_tasks.spawn(named("historical feed", run_feed(feed, log.clone(), store.clone(), intake.clone())));
    }
    let app = build_app(AppParts {
        log: log.clone(),
        store: store.clone(),
        architecture: config.architecture,
        views,
        segments: Some(segments),
        batch_trigger: Some(batch_tx),
        max_body_bytes: config.max_body_bytes,
    });
    let listener =
        tokio::net::TcpListener::bind(config.http_addr).await.with_context(|| format!("binding the HTTP API to {}", config.http_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "prism up: serving; API docs at /docs");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let server_stop = intake.clone();
    intake_tasks.spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { server_stop.cancelled().await }).await.context("HTTP server")?;
        Ok("HTTP server")
    });

    // Run until asked to stop or until a component fails.
    let mut failure: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            _ = intake.cancelled() => break,
            Some(done) = intake_tasks.join_next() => match flatten(done) {
                Ok(name) => tracing::info!(component = name, "finished"),
                Err(e) => { failure = Some(e); break; }
            },
            Some(done) = layer_tasks.join_next() => {
                match flatten(done) {
                    // The batch layer stops with the intake: once a stop is asked, that is expected.
                    Ok(name) if intake.is_cancelled() => tracing::info!(component = name, "stopped"),
                    Ok(name) => failure = Some(anyhow::anyhow!("{name} stopped unexpectedly")),
                    Err(e) => failure = Some(e),
                }
                break;
            }
        }
    }
    if let Some(e) = &failure {
        tracing::error!(error = %format!("{e:#}"), "a component failed; shutting down");
    }
    tracing::info!("stopping intake");
    intake.cancel();
    while let Some(done) = intake_tasks.join_next().await {
        if let Err(e) = flatten(done) {
            failure.get_or_insert(e);
        }
    }
    tracing::info!("flushing and committing the layers");
    layers.cancel();
    while let Some(done) = layer_tasks.join_next().await {
        if let Err(e) = flatten(done) {
            failure.get_or_insert(e);
        }
    }
    log.flush().await.context("syncing the event log")?;
    store.close().await;
    tracing::info!("prism up stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn named<E: Into<anyhow::Error>>(
    name: &'static str,
    task: impl std::future::Future<Output = Result<impl Sized, E>>,
) -> anyhow::Result<&'static str> {
    task.await.map_err(|e| e.into().context(name))?;
    Ok(name)
}

fn flatten(done: Result<anyhow::Result<&'static str>, tokio::task::JoinError>) -> anyhow::Result<&'static str> {
    done.map_err(|e| anyhow::anyhow!("a component panicked: {e}"))?
}

async fn sync_log_every(log: Arc<EmbeddedLog>, every: Duration, stop: CancellationToken) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => log.flush().await?,
        }
    }
}
