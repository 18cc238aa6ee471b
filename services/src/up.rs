//! `prism up`: every layer in one process on embedded defaults (embedded log, SQLite view
//! store, local master dataset), fed by the stock-quote lab's historical feed. Which layers run
//! is the architecture's ([`prism_core::config::Architecture::runs`]): Lambda runs the speed
//! layer, the archiver and the batch job; Kappa the speed layer and its hand-off of finalized
//! windows to segments (under the master dataset's `segments/`, as in Lambda). With `--tail` the
//! log-file tailer runs too, and with `--poll-url` the quote poller (into `prism.quotes`,
//! checkpointing to `poller-checkpoint.json` in the data dir).
//!
//! The HTTP API runs on the caller's runtime; the layers and the intake run on a runtime of
//! their own whose threads have a raised nice value ([`prism_core::background::layers_runtime`]),
//! with a SQLite pool of their own opened there: while a catch-up keeps every core busy, a
//! query still gets a core first.
//!
//! Shutdown (SIGINT/SIGTERM or the caller's token) happens in stages: stop intake (the feed,
//! the tailer, the poller and the HTTP server), then let the speed layer, archiver and batch
//! layer flush and commit, then sync the log and close the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prism_batch::archiver::{run_archivers, ArchiverArgs};
use prism_batch::batch_job::{run_batch_layer, BatchArgs};
use prism_batch::master::MasterDataset;
use prism_core::background::layers_runtime;
use prism_core::config::{Architecture, Component, DeploymentArgs};
use prism_core::event::{DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::{check_log_complete, EventLog};
use prism_core::replay::ReplayControl;
use prism_core::store::ViewStore;
use prism_core::view::changes::ChangesView;
use prism_ingest::cdc::{changes_view_specs, run_cdc, CdcArgs};
use prism_ingest::feed::{run_feed, FeedArgs};
use prism_ingest::http::IngestArgs;
use prism_ingest::logs::{run_log_tailer, LogsArgs};
use prism_ingest::poller::{run_quote_poller, PollerArgs};
use prism_serving::segments::SegmentReader;
use prism_speed::handoff::HandoffArgs;
use prism_speed::versions::{run_versions, VersionsConfig};
use prism_speed::SpeedArgs;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::{build_app, AppParts, SEGMENT_CACHE_ROWS};
use crate::lab;

/// Flags of `prism up` (each with a `PRISM_*` environment fallback): its own, and each layer's
/// `Args` struct flattened in.
#[derive(Debug, Clone, Args)]
pub struct UpConfig {
    /// Folder for the log, the view store and the master dataset.
    #[arg(long, env = "PRISM_DATA_DIR", default_value = "./prism-data")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API (ingest, views, docs, metrics).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Embedded log fsync policy: `always`, `interval`, `interval:<ms>`, `never`.
    #[arg(long, env = "PRISM_FSYNC", default_value = "interval")]
    pub fsync: FsyncPolicy,
    /// Architecture, partitions, allowed lateness.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
    /// The historical feed.
    #[command(flatten)]
    pub feed: FeedArgs,
    /// HTTP ingest.
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// The speed layer.
    #[command(flatten)]
    pub speed: SpeedArgs,
    /// The archiver.
    #[command(flatten)]
    pub archiver: ArchiverArgs,
    /// The batch job (Lambda mode).
    #[command(flatten)]
    pub batch: BatchArgs,
    /// The hand-off of finalized windows to segments (Kappa mode).
    #[command(flatten)]
    pub handoff: HandoffArgs,
    /// Log-file tailing into `prism.access_logs` (with `--tail`; the `access` view then runs too).
    #[command(flatten)]
    pub logs: LogsArgs,
    /// Quote polling into `prism.quotes` (with `--poll-url`).
    #[command(flatten)]
    pub poll: PollerArgs,
    /// PostgreSQL change data capture into `prism.cdc.*` (with `--cdc-database-url`).
    #[command(flatten)]
    pub cdc: CdcArgs,
    /// API tokens (`PRISM_API_TOKEN` for writes and admin, `PRISM_READ_TOKEN` for reads).
    #[command(flatten)]
    pub auth: prism_serving::auth::AuthArgs,
}

/// How long a retired or cancelled realtime version's rows stay after a replay (longer than any
/// query).
pub const REALTIME_VERSION_GRACE: Duration = Duration::from_secs(600);

/// Paths under the data dir.
pub struct DataDir {
    /// The embedded log.
    pub log: PathBuf,
    /// The SQLite view store file.
    pub store: PathBuf,
    /// The master dataset root.
    pub master: PathBuf,
    /// The log-file tailer's checkpoints.
    pub tail_checkpoints: PathBuf,
    /// The quote poller's checkpoint.
    pub poller_checkpoint: PathBuf,
}

impl DataDir {
    /// The layout of `root`.
    pub fn new(root: &std::path::Path) -> Self {
        DataDir {
            log: root.join("log"),
            store: root.join("views.sqlite"),
            master: root.join("master"),
            tail_checkpoints: root.join("tail-checkpoints.json"),
            poller_checkpoint: root.join("poller-checkpoint.json"),
        }
    }
}

/// Runs everything until `shutdown` fires (or a component fails). `ready` receives the bound
/// HTTP address once the server listens.
pub async fn run_up(
    config: UpConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    config.deployment.validate().map_err(anyhow::Error::msg)?;
    let partitions = config.deployment.partitions;
    let dirs = DataDir::new(&config.data_dir);
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let feed_files = if config.feed.no_feed {
        Vec::new()
    } else if config.feed.feed.is_empty() {
        vec![lab::install_lab_data(&config.data_dir)?]
    } else {
        config.feed.feed.clone()
    };
    let feed = config.feed.config(feed_files, partitions).map_err(anyhow::Error::msg)?;
    let log = Arc::new(
        EmbeddedLog::open(&dirs.log, EmbeddedLogConfig { fsync: config.fsync, ..Default::default() })
            .context("opening the embedded event log")?,
    );
    let mut views = config.deployment.registry().map_err(anyhow::Error::msg)?;
    let logs = config.logs.config(dirs.tail_checkpoints.clone(), partitions);
    let cdc = match config.cdc.cdc_database_url.is_some() {
        true => Some(config.cdc.config(partitions)?),
        false => None,
    };
    let poller = if config.poll.enabled() { Some(config.poll.config(dirs.poller_checkpoint.clone(), partitions)?) } else { None };
    if !logs.globs.is_empty() {
        views = views.with_access(config.deployment.allowed_lateness_ms);
    }
    if let Some(cdc) = &cdc {
        // A changes view per published table (tables published later need a restart).
        for spec in changes_view_specs(cdc, &config.cdc.cdc_keep_rows).await.context("listing the tables to capture")? {
            let view = ChangesView::from_spec(spec.trim_start_matches("changes:"), config.deployment.allowed_lateness_ms)
                .map_err(|e| anyhow::anyhow!("cannot serve the changes of a published table: {e}"))?;
            views = views.with_changes(view);
        }
    }
    log.ensure_topic(QUOTES_TOPIC, partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    for v in views.views() {
        log.ensure_topic(v.source_topic(), partitions).await?;
        if config.deployment.architecture == Architecture::Kappa {
            check_log_complete(&*log, v.source_topic()).await.context("switching to Kappa mode")?;
        }
    }
    // Serving's pool here; the layers' pool on their runtime, so that its connections' worker
    // threads start there and keep the layers' priority.
    let serving_store = ViewStore::open_sqlite(&dirs.store).await.context("opening the view store")?;
    let layers_runtime = layers_runtime("prism-layers").context("starting the layers' runtime")?;
    let on_layers = layers_runtime.handle().clone();
    let path = dirs.store.clone();
    let store = on_layers.spawn(async move { ViewStore::open_sqlite(&path).await }).await?.context("opening the view store")?;
    // The metrics recorder before any component starts: the layers' runtime runs a task as soon
    // as it is spawned, and what a component counts before the recorder exists is lost (the
    // tailer's first file, the layers' HELP texts).
    crate::app::metrics_renderer();

    let intake = shutdown.child_token();
    let layers = CancellationToken::new();
    let mut intake_tasks: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    let mut layer_tasks: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();

    let architecture = config.deployment.architecture;
    let speed = config.speed.config(partitions, architecture);
    let master = MasterDataset::local(&dirs.master).context("opening the master dataset")?;
    let batch_views = views.views().to_vec();
    let archived_topics = views.source_topics();
    let mut replays = ReplayControl::new();
    for v in views.views() {
        // Each view's realtime versions: the serving one, and replays (DESIGN §6).
        let handoff = architecture.runs(Component::Handoff).then(|| config.handoff.config(master.location().clone()));
        let versions = VersionsConfig { speed: speed.clone(), handoff, grace: REALTIME_VERSION_GRACE };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        replays.insert(v.name().to_string(), tx);
        let (log, store, stop) = (log.clone(), store.clone(), layers.clone());
        prism_core::with_view!(v, view => {
            let view = view.clone();
            layer_tasks.spawn_on(
                async move {
                    run_versions(view, versions, log, store, rx, stop).await.map_err(anyhow::Error::msg).context("speed layer")?;
                    Ok("speed layer")
                },
                &on_layers,
            );
        });
    }
    if architecture.runs(Component::Archiver) {
        let archiver = config.archiver.config(master.clone(), partitions);
        layer_tasks
            .spawn_on(named("archiver", run_archivers(archiver, archived_topics, log.clone(), store.clone(), layers.clone())), &on_layers);
    }
    let segments = SegmentReader::new(master.location().clone(), SEGMENT_CACHE_ROWS);
    let mut batch_trigger = None;
    if architecture.runs(Component::BatchLayer) {
        let (batch_tx, mut batch_rx) = tokio::sync::mpsc::channel(4);
        batch_trigger = Some(batch_tx);
        let batch = config.batch.config(master);
        // The batch layer stops with the intake, not after it: a run in progress is abandoned
        // (nothing of it is published; a POST waiting for it gets a 503) instead of holding the
        // HTTP server's graceful shutdown for minutes.
        let (batch_log, batch_store, batch_stop) = (log.clone(), store.clone(), intake.clone());
        layer_tasks.spawn_on(
            named(
                "batch layer",
                async move { run_batch_layer(batch_views, batch, batch_log, batch_store, &mut batch_rx, batch_stop).await },
            ),
            &on_layers,
        );
    }
    if let FsyncPolicy::Interval(every) = config.fsync {
        layer_tasks.spawn_on(named("log sync", sync_log_every(log.clone(), every, layers.clone())), &on_layers);
    }

    if !feed.files.is_empty() {
        intake_tasks.spawn_on(named("historical feed", run_feed(feed, log.clone(), store.clone(), intake.clone())), &on_layers);
    }
    if !logs.globs.is_empty() {
        let (log, stop) = (log.clone(), intake.clone());
        intake_tasks.spawn_on(named("log-file tailer", run_log_tailer(logs, log, stop)), &on_layers);
    }
    let app = build_app(AppParts {
        log: log.clone(),
        store: serving_store.clone(),
        architecture,
        views,
        segments: Some(segments),
        batch_trigger,
        replays: Some(replays),
        max_body_bytes: config.ingest.max_body_bytes,
        idempotency_window: config.ingest.idempotency_window,
        auth: config.auth.clone(),
    });
    if let Some(poller) = poller {
        let (log, stop) = (log.clone(), intake.clone());
        intake_tasks.spawn_on(named("quote poller", run_quote_poller(poller, log, stop)), &on_layers);
    }
    if let Some(cdc) = cdc {
        let (log, stop) = (log.clone(), intake.clone());
        intake_tasks.spawn_on(named("change data capture", run_cdc(cdc, log, stop)), &on_layers);
    }
    let listener =
        tokio::net::TcpListener::bind(config.http_addr).await.with_context(|| format!("binding the HTTP API to {}", config.http_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "prism up: serving; API docs at /docs");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let server_stop = intake.clone();
    intake_tasks.spawn(async move {
        crate::app::serve_until(listener, app, server_stop).await?;
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
    serving_store.close().await;
    // Every task on it has finished: its idle threads are not waited for.
    drop(layers_runtime);
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
