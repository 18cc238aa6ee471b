//! The archiver: `prism.quotes` → the Parquet master dataset (DESIGN §5).
//!
//! It reads every partition from the offsets committed in the view store (consumer
//! `archiver`), buffers rows, and on each flush writes one file per (partition, UTC event day),
//! each made visible atomically, and only then commits the new offsets together with the max
//! event time archived per partition (which the batch horizon is computed from). On start it
//! deletes files written after the last committed offsets (a crash between write and commit):
//! they are written again from the log, so no row is lost or archived twice.
//!
//! It also runs [compaction](crate::compaction) of the files it committed, between polls (never
//! during a flush): every `compact_interval`, and as soon as it has caught up with the log after
//! a backlog (a poll that filled its batch, or a flush forced by `flush_rows`) — e.g. right after
//! a bulk load, so the batch job reads one file per (partition, day). It does not compact after
//! every flush of a live trickle, which would rewrite the day's file every second.
//!
//! A failed compaction pass is logged, counted (`prism_archiver_compaction_failures_total`) and
//! retried at the next scheduled time; the files stay consistent whatever the pass did. Only a
//! *persistent* storage failure ([`MasterError::is_persistent`](crate::master::MasterError::is_persistent):
//! access denied, bad credentials, an unsupported operation, a full or read-only disk) stops the
//! archiver with the error, as retrying cannot help and the operator must act. A store that is
//! merely down fails the next flush anyway, which stops the archiver (its supervisor restarts it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use prism_core::config::ARCHIVER_CONSUMER;
use prism_core::consumer::StoreConsumer;
use prism_core::event::{LogPosition, QUOTES_TOPIC};
use prism_core::log::EventLog;
use prism_core::store::{ConsumerOffset, ViewStore};
use tokio_util::sync::CancellationToken;

use crate::compaction::{compact, DEFAULT_GRACE};
use crate::master::{day_start, Archived, MasterDataset, MasterRecord, RecordKind};
use crate::{telemetry, BatchError};

/// Records read per poll.
const MAX_POLL: usize = 10_000;
/// Master-dataset files a flush writes at once, at most.
const WRITES_IN_FLIGHT: usize = 8;
/// Rows being encoded at once across those files: many small files overlap (a historical
/// catch-up writes hundreds of day files a flush), few large ones go one by one (their
/// encoding buffers are what would add up).
const ROWS_IN_FLIGHT: usize = 50_000;

/// Settings of the archiver.
#[derive(Debug, Clone)]
pub struct ArchiverConfig {
    /// The topic to archive (`prism.quotes`, `prism.access_logs` or a CDC table's topic).
    pub topic: String,
    /// The master dataset (a local folder or object storage).
    pub master: MasterDataset,
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush at least this often while rows are buffered.
    pub flush_interval: Duration,
    /// Partitions of `prism.quotes` if the archiver has to create it.
    pub partitions: i32,
    /// Time between compaction passes; zero turns compaction off.
    pub compact_interval: Duration,
    /// How long a file superseded by compaction stays readable (for readers that listed it
    /// before) before it is deleted.
    pub compact_grace: Duration,
}

impl ArchiverConfig {
    /// These settings for `topic`.
    pub fn for_topic(mut self, topic: &str) -> ArchiverConfig {
        self.topic = topic.to_string();
        self
    }

    /// The defaults for `master` and `partitions`: archive `prism.quotes`, flush at 200 000 rows
    /// or every second, compact every 60 s, delete superseded files after 10 minutes.
    pub fn new(master: MasterDataset, partitions: i32) -> ArchiverConfig {
        ArchiverConfig {
            topic: QUOTES_TOPIC.to_string(),
            master,
            flush_rows: 200_000,
            flush_interval: Duration::from_secs(1),
            partitions,
            compact_interval: Duration::from_secs(60),
            compact_grace: DEFAULT_GRACE,
        }
    }
}

/// The archiver's flags (each with a `PRISM_*` environment fallback), flattened into `prism up`
/// and `prism archiver`.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiverArgs {
    /// Time between compaction passes of the master dataset (small files of a (partition, UTC
    /// day) rewritten into one).
    #[arg(long, env = "PRISM_COMPACT_INTERVAL", default_value = "60s", value_parser = prism_core::config::parse_duration)]
    pub compact_interval: Duration,
    /// How long a file superseded by compaction stays readable before it is deleted (longer
    /// than any batch run, so a run that listed it can still read it).
    #[arg(long, env = "PRISM_COMPACT_GRACE", default_value = "10m", value_parser = prism_core::config::parse_duration)]
    pub compact_grace: Duration,
}

impl ArchiverArgs {
    /// The archiver's settings for these flags over `master`, for a topic of `partitions`; the
    /// rest at [`ArchiverConfig::new`].
    pub fn config(&self, master: MasterDataset, partitions: i32) -> ArchiverConfig {
        ArchiverConfig {
            compact_interval: self.compact_interval,
            compact_grace: self.compact_grace,
            ..ArchiverConfig::new(master, partitions)
        }
    }
}

/// Before the first file is written, the archiver records its progress (offset 0 of every
/// partition) in the view store; a store without that record on a dataset with files is
/// therefore another store's dataset, which [`remove_uncommitted`](MasterDataset::remove_uncommitted)
/// would otherwise empty.
///
/// Errors: [`BatchError::ForeignMasterDataset`], or the store or dataset failing.
async fn claim_master_dataset(master: &MasterDataset, topic: &str, store: &ViewStore, partitions: i32) -> Result<(), BatchError> {
    if !store.consumer_offsets(ARCHIVER_CONSUMER, topic).await?.is_empty() {
        return Ok(());
    }
    let files = master.list_all_files(topic).await?.len();
    if files > 0 {
        return Err(BatchError::ForeignMasterDataset { dataset: master.url().to_string(), files });
    }
    let start: Vec<ConsumerOffset> =
        (0..partitions).map(|partition| ConsumerOffset { partition, next_offset: 0, max_event_ts_ms: None }).collect();
    store.commit_offsets(ARCHIVER_CONSUMER, topic, &start).await?;
    Ok(())
}

/// Runs the archiver until `cancel` fires; flushes and commits before returning (a compaction
/// pass in progress is abandoned, which is safe).
///
/// Errors: [`BatchError`] when the log, the store or the master dataset fails (compaction: only
/// persistent failures, see the module docs).
pub async fn run_archiver<L: EventLog>(
    config: ArchiverConfig,
    log: Arc<L>,
    store: ViewStore,
    cancel: CancellationToken,
) -> Result<(), BatchError> {
    let kind =
        RecordKind::of(&config.topic).ok_or_else(|| BatchError::Task(format!("topic {} has no master-dataset format", config.topic)))?;
    crate::with_record!(kind, R => archive::<R, L>(config, log, store, cancel).await)
}

/// Runs one archiver per topic of `topics` (each with `config`'s settings) until `cancel` fires
/// or one fails.
///
/// Errors: the first [`BatchError`] of any of them (the others are then stopped).
pub async fn run_archivers<L: EventLog>(
    config: ArchiverConfig,
    topics: Vec<String>,
    log: Arc<L>,
    store: ViewStore,
    cancel: CancellationToken,
) -> Result<(), BatchError> {
    let stop = cancel.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    for topic in &topics {
        tasks.spawn(run_archiver(config.clone().for_topic(topic), log.clone(), store.clone(), stop.clone()));
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        let done = done.map_err(|e| BatchError::Task(e.to_string())).and_then(|r| r);
        if let Err(e) = done {
            stop.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

async fn archive<R: MasterRecord, L: EventLog>(
    config: ArchiverConfig,
    log: Arc<L>,
    store: ViewStore,
    cancel: CancellationToken,
) -> Result<(), BatchError> {
    telemetry::describe();
    let topic = config.topic.clone();
    let topic = topic.as_str();
    let partitions = log.ensure_topic(topic, config.partitions).await?;
    claim_master_dataset(&config.master, topic, &store, partitions).await?;
    let mut consumer = StoreConsumer::resume(&store, ARCHIVER_CONSUMER, topic, partitions).await?;
    // Per partition (index = partition): what the master dataset holds committed.
    let mut committed = consumer.next_offsets();
    let removed = config.master.remove_uncommitted(topic, &committed).await?;
    if removed > 0 {
        tracing::warn!(removed, "archiver removed files written after its last commit; they will be written again");
    }
    tracing::info!(partitions, offsets = ?committed, "archiver starting");

    let mut buffer: Vec<Archived<R>> = Vec::new();
    let mut consumed_since_flush = 0usize;
    let mut last_flush = Instant::now();
    let mut last_compaction = Instant::now();
    // Consecutive empty polls (a round of them means caught up) and whether there was a backlog.
    let (mut empty_polls, mut behind) = (0usize, false);
    loop {
        let records = tokio::select! {
            r = consumer.poll(&*log, MAX_POLL) => r?,
            _ = cancel.cancelled() => break,
        };
        behind |= records.len() >= MAX_POLL;
        empty_polls = if records.is_empty() { empty_polls + 1 } else { 0 };
        for r in &records {
            // Malformed records are the speed layer's to dead-letter; the archive skips them.
            match R::from_log(&r.key, &r.value) {
                Ok(record) => {
                    consumer.advance(r, Some(record.event_time()));
                    buffer.push(Archived { record, pos: LogPosition { partition: r.partition, offset: r.offset } });
                }
                Err(_) => {
                    metrics::counter!(telemetry::ARCHIVER_SKIPPED_TOTAL, "topic" => topic.to_string()).increment(1);
                    consumer.advance(r, None);
                }
            }
            consumed_since_flush += 1;
        }
        if consumed_since_flush > 0 && (buffer.len() >= config.flush_rows || last_flush.elapsed() >= config.flush_interval) {
            behind |= buffer.len() >= config.flush_rows;
            flush(&config, &store, &mut buffer, &consumer.offsets).await?;
            committed = consumer.next_offsets();
            consumed_since_flush = 0;
            last_flush = Instant::now();
        }

        let caught_up = consumed_since_flush == 0 && empty_polls >= consumer.offsets.len().max(1);
        let due = last_compaction.elapsed() >= config.compact_interval || (caught_up && behind);
        if config.compact_interval.is_zero() || !due {
            continue;
        }
        behind = false;
        let pass = tokio::select! {
            r = compact(&config.master, topic, &committed, config.compact_grace) => r,
            _ = cancel.cancelled() => {
                tracing::info!("compaction pass abandoned on shutdown (safe: it resumes at the next start)");
                break;
            }
        };
        last_compaction = Instant::now();
        if let Err(e) = pass {
            if e.is_persistent() {
                tracing::error!(error = %e, "compaction failed persistently; stopping the archiver");
                return Err(e.into());
            }
            metrics::counter!(telemetry::ARCHIVER_COMPACTION_FAILURES_TOTAL).increment(1);
            tracing::warn!(error = %e, retry_in_s = config.compact_interval.as_secs_f64(), "compaction failed; retrying at the next opportunity");
        }
    }
    if consumed_since_flush > 0 {
        flush(&config, &store, &mut buffer, &consumer.offsets).await?;
    }
    tracing::info!("archiver stopped after its final flush");
    Ok(())
}

/// Writes the buffer as one file per (partition, UTC day), then commits the offsets.
async fn flush<R: MasterRecord>(
    config: &ArchiverConfig,
    store: &ViewStore,
    buffer: &mut Vec<Archived<R>>,
    offsets: &[ConsumerOffset],
) -> Result<(), BatchError> {
    let started = Instant::now();
    let rows = std::mem::take(buffer);
    let count = rows.len();
    let mut groups: BTreeMap<(i32, i64), Vec<Archived<R>>> = BTreeMap::new();
    for row in rows {
        groups.entry((row.pos.partition, day_start(row.record.event_time()))).or_default().push(row);
    }
    let files = groups.len();
    // Files are independent until the offsets commit below makes them all count at once, so
    // their encoding and fsyncs overlap; a crash part way leaves uncommitted files, which the
    // next start removes.
    futures_util::stream::iter(groups.into_values())
        .map(|group| config.master.write_file(&config.topic, group))
        .buffer_unordered((ROWS_IN_FLIGHT / (count / files.max(1)).max(1)).clamp(1, WRITES_IN_FLIGHT))
        .try_collect::<Vec<_>>()
        .await?;
    store.commit_offsets(ARCHIVER_CONSUMER, &config.topic, offsets).await?;
    metrics::counter!(telemetry::ARCHIVED_EVENTS_TOTAL, "topic" => config.topic.clone()).increment(count as u64);
    metrics::counter!(telemetry::ARCHIVED_FILES_TOTAL, "topic" => config.topic.clone()).increment(files as u64);
    metrics::histogram!(telemetry::ARCHIVER_FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
    tracing::debug!(rows = count, files, elapsed_ms = started.elapsed().as_millis() as u64, "archiver flushed");
    Ok(())
}
