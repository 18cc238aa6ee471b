//! The microservices of the distributed deployment (DESIGN §8, issue: Kafka + PostgreSQL):
//! `ingest-api`, `speed-layer`, `archiver`, `batch-layer` and `serving`, each its own process
//! against Kafka (the event log) and PostgreSQL (the view store).
//!
//! Every service: flags with `PRISM_*` env fallbacks; `/healthz`, `/readyz` (ready only while the
//! brokers and the database answer), `/metrics`; graceful shutdown on SIGTERM; a clear error and
//! a non-zero exit when a dependency is unreachable at start. A dependency that goes away while
//! running makes the layer fail, and [`supervise`] restarts it with exponential backoff: every
//! layer resumes from the offsets it committed in the view store, so nothing is lost or counted
//! twice.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use clap::Args;
use prism_batch::archiver::{run_archivers, ArchiverArgs};
use prism_batch::batch_job::{run_batch_layer, BatchArgs};
use prism_batch::master::MasterDataset;
use prism_core::config::{parse_duration, Architecture, Component, DeploymentArgs, MasterDatasetArgs};
use prism_core::event::{DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};
use prism_core::log::{check_log_complete, EventLog};
use prism_core::store::ViewStore;
use prism_ingest::http::IngestArgs;
use prism_serving::auth::{protect, AuthArgs};
use prism_serving::ops::{OpsState, ReadinessCheck};
use prism_serving::segments::SegmentReader;
use prism_serving::ServingState;
use prism_speed::handoff::HandoffArgs;
use prism_speed::{SpeedArgs, SpeedConfig};
use tokio_util::sync::CancellationToken;

use crate::app::{docs_router, metrics_renderer, SEGMENT_CACHE_ROWS};
use crate::group_versions::{run_group_versions, GroupVersionsConfig};

/// What every microservice connects to, and the deployment's shared flags.
#[derive(Debug, Clone, Args)]
pub struct Deps {
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    #[arg(long, env = "PRISM_KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// View store URL: `postgres://user@host:port/db` (or `sqlite://path` for one machine).
    #[arg(long, env = "PRISM_DATABASE_URL")]
    pub database_url: String,
    /// Replication factor of topics Prism creates.
    #[arg(long, env = "PRISM_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// How long to wait for a dependency before giving up (at start) or retrying (later).
    #[arg(long, env = "PRISM_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Architecture, partitions, allowed lateness.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
    /// API tokens of the services with write, admin or read endpoints.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Flags of `prism ingest-api`.
#[derive(Debug, Clone, Args)]
pub struct IngestApiConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address.
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: SocketAddr,
    /// HTTP ingest.
    #[command(flatten)]
    pub ingest: IngestArgs,
}

/// Flags of `prism speed-layer`.
#[derive(Debug, Clone, Args)]
pub struct SpeedLayerConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address (ops endpoints).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8082")]
    pub http_addr: SocketAddr,
    /// The speed layer.
    #[command(flatten)]
    pub speed: SpeedArgs,
    /// Kappa mode: where the hand-off writes segments (the `segments/` prefix serving reads).
    #[command(flatten)]
    pub master: MasterDatasetArgs,
    /// Kappa mode: the hand-off of finalized windows to segments.
    #[command(flatten)]
    pub handoff: HandoffArgs,
    /// Kappa mode: do not run the hand-off in this instance. Exactly one speed-layer instance of
    /// a Kappa deployment runs it (the others pass this flag).
    #[arg(long, env = "PRISM_NO_HANDOFF")]
    pub no_handoff: bool,
    /// This instance's name in the partition leases (shown as the owner in `/v1/status`).
    /// Default: `$HOSTNAME-<pid>`.
    #[arg(long, env = "PRISM_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Kafka `session.timeout.ms` of the speed layers' consumer group: how long a silent
    /// (crashed) instance keeps its partitions before the others take them over.
    #[arg(long, env = "PRISM_KAFKA_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub session_timeout: Duration,
}

/// Flags of `prism archiver`.
#[derive(Debug, Clone, Args)]
pub struct ArchiverServiceConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address (ops endpoints).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8083")]
    pub http_addr: SocketAddr,
    /// The master dataset, shared with the batch layer and serving.
    #[command(flatten)]
    pub master: MasterDatasetArgs,
    /// The archiver.
    #[command(flatten)]
    pub archiver: ArchiverArgs,
}

/// Flags of `prism batch-layer`.
#[derive(Debug, Clone, Args)]
pub struct BatchLayerConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address (ops endpoints and `POST /v1/admin/batch-runs`).
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8084")]
    pub http_addr: SocketAddr,
    /// The master dataset the batch job reads and writes segments into.
    #[command(flatten)]
    pub master: MasterDatasetArgs,
    /// The batch job.
    #[command(flatten)]
    pub batch: BatchArgs,
}

/// Flags of `prism serving`.
#[derive(Debug, Clone, Args)]
pub struct ServingServiceConfig {
    /// Brokers, view store and shared settings.
    #[command(flatten)]
    pub deps: Deps,
    /// HTTP address of the query API.
    #[arg(long, env = "PRISM_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// The master dataset, whose `segments/` hold the batch views serving reads.
    #[command(flatten)]
    pub master: MasterDatasetArgs,
}

/// Connects to the brokers and the view store, creating the topics; a clear error when either
/// cannot be reached.
pub async fn connect(deps: &Deps) -> anyhow::Result<(Arc<KafkaLog>, ViewStore)> {
    deps.deployment.validate().map_err(anyhow::Error::msg)?;
    let log = KafkaLog::connect(kafka_config(deps))
        .await
        .with_context(|| format!("cannot reach the Kafka brokers at {} (PRISM_KAFKA_BROKERS)", deps.kafka_brokers))?;
    tracing::info!(brokers = %deps.kafka_brokers, "the brokers answer");
    log.ensure_topic(QUOTES_TOPIC, deps.deployment.partitions).await.context("creating prism.quotes")?;
    log.ensure_topic(DLQ_TOPIC, 1).await.context("creating prism.dlq")?;
    let views = deps.deployment.registry().map_err(anyhow::Error::msg)?;
    for topic in views.views().iter().map(|v| v.source_topic()) {
        log.ensure_topic(topic, deps.deployment.partitions).await.with_context(|| format!("creating {topic}"))?;
        if deps.deployment.architecture == Architecture::Kappa {
            check_log_complete(&log, topic).await.context("switching to Kappa mode")?;
        }
    }
    tracing::info!("the topics exist");
    let store =
        ViewStore::open_url(&deps.database_url, deps.connect_timeout).await.context("cannot open the view store (PRISM_DATABASE_URL)")?;
    tracing::info!("the view store is open");
    Ok((Arc::new(log), store))
}

fn kafka_config(deps: &Deps) -> KafkaLogConfig {
    let mut kafka = KafkaLogConfig::new(deps.kafka_brokers.clone());
    kafka.replication_factor = deps.replication_factor;
    kafka.request_timeout = deps.connect_timeout;
    kafka.unlimited_retention = deps.deployment.architecture == Architecture::Kappa;
    kafka
}

/// `/readyz` also asks the brokers for the log end offsets.
fn kafka_ready(log: Arc<KafkaLog>) -> ReadinessCheck {
    Arc::new(move || {
        let log = log.clone();
        Box::pin(async move { log.end_offsets(QUOTES_TOPIC).await.map(|_| ()).map_err(|e| e.to_string()) })
    })
}

/// The ops endpoints; `/readyz` checks the store, the brokers and, when given, the master dataset.
pub(crate) fn ops(store: &ViewStore, log: &Arc<KafkaLog>, master: Option<&MasterDataset>) -> Router {
    ops_with(store, log, master.map(|m| master_ready(m.clone())).into_iter().collect())
}

/// The ops endpoints; `/readyz` checks the store, the brokers and each of `checks`.
pub(crate) fn ops_with(store: &ViewStore, log: &Arc<KafkaLog>, checks: Vec<ReadinessCheck>) -> Router {
    let mut all = vec![kafka_ready(log.clone())];
    all.extend(checks);
    prism_serving::ops::router(OpsState { store: store.clone(), extra_check: Some(all_ready(all)), metrics: metrics_renderer() })
}

/// Restarts of a failed component by [`supervise`], labelled `component`.
pub const COMPONENT_RESTARTS_TOTAL: &str = "prism_component_restarts_total";

/// Runs a restartable component until `stop` fires: on failure it logs, counts
/// `prism_component_restarts_total`, waits (200 ms doubling to 10 s) and starts it again.
pub async fn supervise<F, Fut, E>(name: &'static str, stop: CancellationToken, mut start: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        match start().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if stop.is_cancelled() {
                    return Err(anyhow::anyhow!("{name} failed while stopping: {e}"));
                }
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(200);
                }
                metrics::counter!(COMPONENT_RESTARTS_TOTAL, "component" => name).increment(1);
                tracing::warn!(component = name, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "component failed; restarting from its committed offsets");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Runs a service: its HTTP app and, optionally, a supervised component, until `shutdown`.
/// Binds `addr` first, so a taken port fails the start before the component runs; stops the
/// component first (it flushes and commits), then the HTTP server.
///
/// Errors: `addr` cannot be bound, the component failed, or the HTTP server did.
pub(crate) async fn run_service<Fut>(
    name: &'static str,
    addr: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
    component: Option<Fut>,
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {name}'s HTTP address {addr}"))?;
    tracing::info!(service = name, addr = %listener.local_addr()?, "listening");
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(crate::app::serve_until(listener, app, http_stop.clone()));
    let result = match component {
        Some(c) => c.await,
        None => {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    http_stop.cancel();
    let served = http.await.map_err(|e| anyhow::anyhow!("HTTP task: {e}"))?;
    result.and(served)
}

/// `prism ingest-api`: HTTP ingest into Kafka.
pub async fn run_ingest_api(config: IngestApiConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (log, store) = connect(&config.deps).await?;
    let ingest = prism_ingest::http::IngestState::new(log.clone(), store.clone(), config.ingest.idempotency_window);
    let app = protect(prism_ingest::http::router(ingest, config.ingest.max_body_bytes), &config.deps.auth)
        .merge(ops(&store, &log, None))
        .merge(docs_router());
    let done = run_service::<std::future::Ready<anyhow::Result<()>>>("ingest-api", config.http_addr, app, shutdown, None).await;
    log.flush().await.context("flushing the producer")?;
    store.close().await;
    done
}

/// `prism speed-layer`: Kafka → realtime views in the view store, for every registered view.
/// Per view, every instance joins the consumer group `speed-layer.<view>.v<N>`; the group splits
/// the partitions among the instances.
pub async fn run_speed_layer_service(config: SpeedLayerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (log, store) = connect(&config.deps).await?;
    let instance_id = config.instance_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "speed-layer".into());
        format!("{host}-{}", std::process::id())
    });
    let architecture = config.deps.deployment.architecture;
    let speed = SpeedConfig { instance_id: instance_id.clone(), ..config.speed.config(config.deps.deployment.partitions, architecture) };
    let kafka = kafka_config(&config.deps);
    let mut members = tokio::task::JoinSet::new();
    let handoff_master = if architecture.runs(Component::Handoff) && !config.no_handoff {
        Some(open_master(&config.master.master_dataset).await?)
    } else {
        None
    };
    for v in config.deps.deployment.registry().map_err(anyhow::Error::msg)?.views() {
        let versions = GroupVersionsConfig {
            speed: speed.clone(),
            handoff: handoff_master.as_ref().map(|m| config.handoff.config(m.location().clone())),
            kappa: architecture == Architecture::Kappa,
            grace: crate::up::REALTIME_VERSION_GRACE,
            kafka: kafka.clone(),
            session_timeout: config.session_timeout,
            instance_id: instance_id.clone(),
        };
        prism_core::with_view!(v, view => members.spawn(run_group_versions(view.clone(), versions, log.clone(), store.clone(), shutdown.clone())));
    }
    let component = async move {
        let mut result = Ok(());
        while let Some(done) = members.join_next().await {
            let done = done.map_err(|e| anyhow::anyhow!("speed layer task: {e}")).and_then(|r| r);
            if result.is_ok() {
                result = done;
            }
        }
        result
    };
    let done = run_service("speed-layer", config.http_addr, ops(&store, &log, None), shutdown, Some(component)).await;
    store.close().await;
    done
}

/// Opens the master dataset and checks that it answers (a clear error at start otherwise).
async fn open_master(spec: &str) -> anyhow::Result<MasterDataset> {
    let master = MasterDataset::open(spec).with_context(|| format!("cannot open the master dataset {spec:?} (PRISM_MASTER_DATASET)"))?;
    master.check().await.with_context(|| format!("cannot reach the master dataset {spec:?} (PRISM_MASTER_DATASET)"))?;
    Ok(master)
}

/// `/readyz` also lists the master dataset (object storage can go away like any server).
fn master_ready(master: MasterDataset) -> ReadinessCheck {
    Arc::new(move || {
        let master = master.clone();
        Box::pin(async move { master.check().await.map_err(|e| e.to_string()) })
    })
}

/// Ready when every check passes; the first failure says why not.
fn all_ready(checks: Vec<ReadinessCheck>) -> ReadinessCheck {
    Arc::new(move || {
        let futures: Vec<_> = checks.iter().map(|c| c()).collect();
        Box::pin(async move {
            for f in futures {
                f.await?;
            }
            Ok(())
        })
    })
}

/// `prism archiver`: Kafka → the Parquet master dataset.
pub async fn run_archiver_service(config: ArchiverServiceConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.deps.deployment.architecture.require(Component::Archiver).map_err(anyhow::Error::msg)?;
    let (log, store) = connect(&config.deps).await?;
    let master = open_master(&config.master.master_dataset).await?;
    let archiver = config.archiver.config(master.clone(), config.deps.deployment.partitions);
    // Every topic a registered view reads is archived (each into its own dataset folder).
    let topics = config.deps.deployment.registry().map_err(anyhow::Error::msg)?.source_topics();
    let (l, s, stop) = (log.clone(), store.clone(), shutdown.clone());
    let component = async move {
        supervise("archiver", stop.clone(), || run_archivers(archiver.clone(), topics.clone(), l.clone(), s.clone(), stop.clone())).await
    };
    let done = run_service("archiver", config.http_addr, ops(&store, &log, Some(&master)), shutdown, Some(component)).await;
    store.close().await;
    done
}

/// `prism batch-layer`: the master dataset → batch views, on a schedule and on
/// `POST /v1/admin/batch-runs`.
pub async fn run_batch_layer_service(config: BatchLayerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.deps.deployment.architecture.require(Component::BatchLayer).map_err(anyhow::Error::msg)?;
    let (log, store) = connect(&config.deps).await?;
    let master = open_master(&config.master.master_dataset).await?;
    let (trigger, requests) = tokio::sync::mpsc::channel(4);
    let views = config.deps.deployment.registry().map_err(anyhow::Error::msg)?;
    let admin_state = ServingState {
        store: store.clone(),
        log: log.clone(),
        architecture: config.deps.deployment.architecture,
        views: views.clone(),
        segments: None,
        batch_trigger: Some(trigger),
        replays: None,
    };
    let admin = Router::new()
        .route("/v1/admin/batch-runs", axum::routing::post(prism_serving::admin::post_batch_run::<KafkaLog>))
        .with_state(admin_state);
    let app = protect(admin, &config.deps.auth).merge(ops(&store, &log, Some(&master)));
    let batch = config.batch.config(master);
    let batch_views = views.views().to_vec();
    let requests = Arc::new(tokio::sync::Mutex::new(requests));
    let (l, s, stop) = (log.clone(), store.clone(), shutdown.clone());
    let component = async move {
        supervise("batch layer", stop.clone(), || {
            let (batch, l, s, stop, requests, views) =
                (batch.clone(), l.clone(), s.clone(), stop.clone(), requests.clone(), batch_views.clone());
            async move {
                let mut requests = requests.lock().await;
                run_batch_layer(views, batch, l, s, &mut requests, stop).await
            }
        })
        .await
    };
    let done = run_service("batch-layer", config.http_addr, app, shutdown, Some(component)).await;
    store.close().await;
    done
}

/// `prism serving`: the query API over the view store and the batch-view segments.
pub async fn run_serving_service(config: ServingServiceConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (log, store) = connect(&config.deps).await?;
    let master = open_master(&config.master.master_dataset).await?;
    let views = config.deps.deployment.registry().map_err(anyhow::Error::msg)?;
    let state = ServingState {
        store: store.clone(),
        log: log.clone(),
        architecture: config.deps.deployment.architecture,
        views: views.clone(),
        segments: Some(SegmentReader::new(master.location().clone(), SEGMENT_CACHE_ROWS)),
        batch_trigger: None,
        // Replays are recorded in the store; the speed-layer instances build them.
        replays: Some(crate::replay_agent::spawn_store_agents(&views, log.clone(), store.clone(), shutdown.child_token())),
    };
    let app = protect(prism_serving::router(state), &config.deps.auth).merge(ops(&store, &log, Some(&master))).merge(docs_router());
    let done = run_service::<std::future::Ready<anyhow::Result<()>>>("serving", config.http_addr, app, shutdown, None).await;
    store.close().await;
    done
}
