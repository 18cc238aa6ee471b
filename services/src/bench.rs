//! `prism bench`: throughput of each layer on one workload, printed as a JSON report.
//!
//! Workload: a JSONL file of `{"symbol": "S001", "ts": <UTC ms>, "price": 123.45, "size": 100}`
//! lines, a Parquet file with those columns, or `--generate N` such events (500 symbols, event
//! times 1 ms apart with up to 2 s of arrival jitter, a random walk of prices on a cent grid;
//! deterministic for a given `--seed`); read a chunk at a time ([`crate::bench_workload`]), so
//! the workload never sits in memory whole and the peak RSS is the layers'.
//!
//! Stages, measured one after another on a fresh folder: embedded-log append, speed layer
//! (log → view store), archiver (log → Parquet) and batch job (a full recompute of the Parquet
//! master dataset into a published batch view). The
//! report gives events/s per stage and the process's peak RSS (VmHWM). Numbers are for this
//! machine and build profile; run with `--release` for meaningful ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use prism_batch::archiver::{run_archiver, ArchiverConfig};
use prism_batch::batch_job::{build_and_publish, BatchConfig};
use prism_batch::master::MasterDataset;
use prism_core::config::{speed_consumer, ARCHIVER_CONSUMER};
use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::{EventLog, NewRecord};
use prism_core::replay::ReplayCommand;
use prism_core::store::ViewStore;
use prism_core::time::MINUTE_MS;
use prism_core::view::ohlcv::OhlcvView;
use prism_core::view::View;
use prism_core::window::window_start;
use prism_speed::versions::{run_versions, VersionsConfig};
use prism_speed::{run_speed_layer, SpeedConfig};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bench_workload::Workload;
pub use crate::bench_workload::{generate_workload, read_workload};
use crate::up::DataDir;

/// Flags of `prism bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchConfig {
    /// Workload file: JSONL (`.jsonl`/`.ndjson`) or Parquet (`.parquet`).
    #[arg(long, env = "PRISM_BENCH_WORKLOAD", conflicts_with = "generate")]
    pub workload: Option<PathBuf>,
    /// Generate this many events instead of reading a file (default 1,000,000).
    #[arg(long, env = "PRISM_BENCH_GENERATE")]
    pub generate: Option<usize>,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Partitions of `prism.quotes`.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Folder to work in (created fresh; removed afterwards unless --keep). Default: a new
    /// folder under the system temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working folder.
    #[arg(long)]
    pub keep: bool,
    /// Also measure the Kafka path against these brokers (`host:port`).
    #[arg(long, env = "PRISM_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// The broker's name and version for the report (e.g. `tansu 0.6.0`, `kafka 3.9`).
    #[arg(long, env = "PRISM_BENCH_BROKER", default_value = "unnamed broker")]
    pub broker_name: String,
    /// View store for the Kafka path (a fresh database); default: a SQLite file.
    #[arg(long)]
    pub kafka_database_url: Option<String>,
    /// Delete `prism.quotes` and `prism.dlq` on the brokers first (test brokers only).
    #[arg(long)]
    pub kafka_reset_topics: bool,
    /// End-to-end latency samples on the Kafka path.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Write the batch job's `ohlcv` 1-minute rows to this CSV, without a header: symbol,
    /// window start (UTC ms), open, high, low, close, volume, vwap, trades — sorted by symbol and
    /// window start, to compare row for row with other engines' output.
    #[arg(long)]
    pub rows_out: Option<PathBuf>,
    /// The speed layer's commit settings (as `prism up`'s).
    #[command(flatten)]
    pub speed: prism_speed::SpeedArgs,
}

/// The report `prism bench` prints.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Prism version.
    pub prism_version: String,
    /// Build profile (`release` or `debug`).
    pub profile: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Where the workload came from: the file's last three path components, or how it was
    /// generated.
    pub workload: String,
    /// Events in the workload.
    pub events: usize,
    /// Distinct symbols.
    pub symbols: usize,
    /// One entry per stage.
    pub stages: Vec<StageResult>,
    /// The Kafka path, when `--kafka-brokers` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<crate::bench_kafka::KafkaReport>,
    /// Peak resident set size of the process, bytes (Linux VmHWM).
    pub peak_rss_bytes: Option<u64>,
}

/// One measured stage.
#[derive(Debug, Serialize)]
pub struct StageResult {
    /// `log_append`, `speed_layer`, `replay` (the replay runner rebuilding the view into version
    /// 2 from offset 0, until the switch), `archiver`, `batch_job`, `http_ingest` (8 clients
    /// posting 1,000-line NDJSON batches into a fresh embedded log, [`crate::bench_http`]).
    pub stage: String,
    /// Events processed.
    pub events: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// events / seconds.
    pub events_per_second: f64,
}

pub(crate) fn stage(name: &str, events: u64, elapsed: Duration) -> StageResult {
    let seconds = elapsed.as_secs_f64();
    StageResult { stage: name.into(), events, seconds, events_per_second: if seconds > 0.0 { events as f64 / seconds } else { 0.0 } }
}

/// Runs the benchmark. Errors: workload or I/O problems, with context.
pub async fn run_bench(config: BenchConfig) -> anyhow::Result<BenchReport> {
    let (mut workload, source) = open_workload(&config)?;
    let dir = match &config.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("prism-bench-{}", std::process::id())),
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut result = bench_in(&dir, &config, &mut workload).await;
    if result.is_ok() {
        // HTTP ingest into a fresh log of its own, from the workload's start again.
        let http = match open_workload(&config) {
            Ok((again, _)) => crate::bench_http::http_ingest_stage(&dir.join("http"), again, config.partitions).await,
            Err(e) => Err(e),
        };
        match (http, &mut result) {
            (Ok(s), Ok((stages, _, _))) => stages.push(s),
            (Err(e), _) => result = Err(e),
            _ => {}
        }
    }
    let kafka = match (&result, &config.kafka_brokers) {
        (Ok((_, _, quotes)), Some(brokers)) => {
            let kafka = crate::bench_kafka::KafkaBench {
                brokers,
                broker_name: &config.broker_name,
                database_url: config.kafka_database_url.as_deref(),
                reset_topics: config.kafka_reset_topics,
                partitions: config.partitions,
                dir: &dir,
                latency_samples: config.latency_samples,
            };
            Some(crate::bench_kafka::run_kafka_bench(kafka, quotes).await)
        }
        _ => None,
    };
    if !config.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (stages, summary, _) = result?;
    let kafka = kafka.transpose()?;
    Ok(BenchReport {
        prism_version: env!("CARGO_PKG_VERSION").into(),
        profile: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        workload: source,
        events: summary.events,
        symbols: summary.symbols.len(),
        stages,
        kafka,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// The workload of `config` from its start, and how to name it in the report.
fn open_workload(config: &BenchConfig) -> anyhow::Result<(Workload, String)> {
    Ok(match (&config.workload, config.generate) {
        // The file's name and its folder's, not the whole path: reports are committed, and a
        // machine's own paths do not belong in them.
        (Some(path), _) => {
            let tail: Vec<String> = path.iter().rev().take(3).map(|c| c.to_string_lossy().into_owned()).collect();
            (Workload::open(path)?, tail.into_iter().rev().collect::<Vec<_>>().join("/"))
        }
        (None, n) => {
            let n = n.unwrap_or(1_000_000);
            (Workload::generated(n, config.seed), format!("generated: {n} events, 500 symbols, seed {}", config.seed))
        }
    })
}

/// What the append stage saw of the workload.
#[derive(Default)]
struct Summary {
    events: usize,
    symbols: std::collections::HashSet<String>,
    newest_ms: i64,
}

/// Runs the stages; returns their results, the workload's summary and, for the Kafka path
/// (which replays the same events), the events themselves — otherwise nothing is kept, and
/// the workload streams through a chunk at a time.
async fn bench_in(dir: &Path, config: &BenchConfig, workload: &mut Workload) -> anyhow::Result<(Vec<StageResult>, Summary, Vec<Quote>)> {
    let dirs = DataDir::new(dir);
    let log = Arc::new(EmbeddedLog::open(
        &dirs.log,
        EmbeddedLogConfig { fsync: FsyncPolicy::Interval(Duration::from_secs(1)), ..Default::default() },
    )?);
    log.ensure_topic(QUOTES_TOPIC, config.partitions).await?;
    let store = ViewStore::open_sqlite(&dirs.store).await?;
    let mut stages = Vec::new();

    // Only the appends are timed, not reading and parsing the file.
    let mut summary = Summary { newest_ms: i64::MIN, ..Summary::default() };
    let mut kept = Vec::new();
    let mut appending = Duration::ZERO;
    loop {
        let chunk = workload.next_chunk()?;
        if chunk.is_empty() {
            break;
        }
        summary.events += chunk.len();
        for q in &chunk {
            summary.newest_ms = summary.newest_ms.max(q.ts);
            if !summary.symbols.contains(&q.symbol) {
                summary.symbols.insert(q.symbol.clone());
            }
        }
        let started = Instant::now();
        for part in chunk.chunks(1_000) {
            let records = part.iter().map(|q| NewRecord::new(q.symbol.clone(), q.to_json())).collect();
            log.append(QUOTES_TOPIC, records).await?;
        }
        appending += started.elapsed();
        if config.kafka_brokers.is_some() {
            kept.extend(chunk);
        }
    }
    if summary.events == 0 {
        bail!("the workload has no events");
    }
    let started = Instant::now();
    log.flush().await?;
    let n = summary.events as u64;
    stages.push(stage("log_append", n, appending + started.elapsed()));
    let ends = log.end_offsets(QUOTES_TOPIC).await?;

    let view = Arc::new(OhlcvView::standard(prism_core::window::DEFAULT_ALLOWED_LATENESS_MS));
    let started = Instant::now();
    let stop = CancellationToken::new();
    let speed = tokio::spawn(run_speed_layer(
        view.clone(),
        SpeedConfig {
            partitions: config.partitions,
            commit_interval: config.speed.commit_interval,
            commit_max_events: config.speed.commit_max_events.max(1),
            ..SpeedConfig::default()
        },
        log.clone(),
        store.clone(),
        stop.clone(),
    ));
    wait_for_consumer(&store, &speed_consumer(view.name(), 1), &ends).await?;
    stages.push(stage("speed_layer", n, started.elapsed()));
    stop.cancel();
    speed.await??;

    let segments = MasterDataset::local(&dir.join("replay-segments"))?.location().clone();
    stages.push(replay_stage(view.clone(), log.clone(), store.clone(), config.partitions, n, segments).await?);

    let started = Instant::now();
    let stop = CancellationToken::new();
    let master = MasterDataset::local(&dirs.master)?;
    let archiver = ArchiverConfig::new(master.clone(), config.partitions);
    let task = tokio::spawn(run_archiver(archiver, log.clone(), store.clone(), stop.clone()));
    wait_for_consumer(&store, ARCHIVER_CONSUMER, &ends).await?;
    stages.push(stage("archiver", n, started.elapsed()));
    stop.cancel();
    task.await??;

    // A full recompute: the horizon is placed past the newest event, so the batch job reads,
    // aggregates, writes and publishes the whole workload.
    let started = Instant::now();
    let batch = BatchConfig::new(master);
    let horizon = window_start(summary.newest_ms, MINUTE_MS) + MINUTE_MS;
    let report = build_and_publish(&view, &batch, &store, &ends, horizon, true, started).await?;
    stages.push(stage("batch_job", report.events, started.elapsed()));
    if let Some(path) = &config.rows_out {
        write_rows_csv(&store, &batch.master, &view, path).await?;
    }
    store.close().await;
    Ok((stages, summary, kept))
}

/// Writes the published batch version's 1-minute rows as CSV (see `--rows-out`).
async fn write_rows_csv(store: &ViewStore, master: &MasterDataset, view: &OhlcvView, path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let version = store.view_pointer(view.name()).await?.batch_version.context("no batch version was published")?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let mut rows = Vec::new();
    for s in store.batch_segments(view.name(), version).await? {
        let file = prism_core::segment::SegmentFile::open(master.location(), &s.path.as_str().into()).await?;
        rows.extend(file.read_rows(master.location(), view, view.window_ms(), None, i64::MIN, i64::MAX).await?);
    }
    rows.sort_by(|a, b| (&a.key, a.window_start_ms).cmp(&(&b.key, b.window_start_ms)));
    for r in rows {
        let a = r.agg;
        let price = |p: Option<Decimal6>| p.map(|p| p.to_string()).unwrap_or_default();
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            r.key,
            r.window_start_ms,
            price(a.open.map(|p| p.price)),
            price(a.high),
            price(a.low),
            price(a.close.map(|p| p.price)),
            a.volume,
            price(a.vwap()),
            a.trades
        )?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) async fn wait_for_consumer(store: &ViewStore, consumer: &str, ends: &[i64]) -> anyhow::Result<()> {
    loop {
        let offsets = store.consumer_offsets(consumer, QUOTES_TOPIC).await?;
        let caught_up =
            ends.iter().enumerate().all(|(p, end)| *end == 0 || offsets.iter().any(|o| o.partition == p as i32 && o.next_offset >= *end));
        if caught_up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Peak RSS of this process (Linux `VmHWM`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A Kappa replay (DESIGN §6) through the replay runner: version 2 of `view` built from offset 0
/// of `log` (bulk catch-up into segments under `segments`, then the streaming speed layer) while
/// version 1 serves, timed until the switch; `events` is the log's size for the rate. Stops the
/// runner before returning.
///
/// Errors: the runner refusing or ending the replay other than by a switch, or failing.
pub(crate) async fn replay_stage<L: EventLog>(
    view: Arc<OhlcvView>,
    log: Arc<L>,
    store: ViewStore,
    partitions: i32,
    events: u64,
    segments: prism_core::objects::ObjectLocation,
) -> anyhow::Result<StageResult> {
    let stop = CancellationToken::new();
    let (commands, requests) = tokio::sync::mpsc::channel(4);
    let versions = VersionsConfig {
        speed: SpeedConfig { partitions, horizon: prism_speed::HorizonSource::Handoff, ..SpeedConfig::default() },
        handoff: Some(prism_speed::handoff::HandoffConfig {
            realtime_version: 1,
            interval: Duration::from_secs(1),
            grace: Duration::from_secs(600),
            location: segments,
        }),
        grace: Duration::from_secs(600),
    };
    let runner = tokio::spawn(run_versions(view, versions, log, store, requests, stop.clone()));
    let started = Instant::now();
    let (reply, answer) = tokio::sync::oneshot::channel();
    commands.send(ReplayCommand::Start { switch_lag: 0, reply }).await.map_err(|_| anyhow::anyhow!("the replay runner stopped"))?;
    let id = answer.await?.map_err(|e| anyhow::anyhow!("replay refused: {e}"))?.id;
    loop {
        let (reply, answer) = tokio::sync::oneshot::channel();
        commands.send(ReplayCommand::List { reply }).await.map_err(|_| anyhow::anyhow!("the replay runner stopped"))?;
        match answer.await?.into_iter().find(|r| r.id == id).map(|r| r.state) {
            Some(state) if state == "switched" => break,
            Some(state) if state == "replaying" => tokio::time::sleep(Duration::from_millis(20)).await,
            other => bail!("the replay ended {other:?}"),
        }
    }
    let report = stage("replay", events, started.elapsed());
    stop.cancel();
    runner.await?.map_err(anyhow::Error::msg)?;
    Ok(report)
}
