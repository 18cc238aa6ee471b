//! The batch job: the master dataset → batch views as versioned segments, up to the batch
//! horizon (DESIGN §5). Generic over the [`View`]; it runs every view of the registry.
//!
//! One run of one view:
//! 1. ends versions no reader can still use (retired longer than the grace period, or left
//!    `building` by a run that never published) and deletes their segment files, and any file
//!    under `segments/<view>/` that no manifest lists;
//! 2. computes the horizon H from the archiver's committed progress (H never moves back);
//! 3. lists the committed master-dataset files and groups them into [`Chunk`]s;
//! 4. carries over every chunk whose segment in the published version was built from the same
//!    inputs and range with the same view definition; builds the others (all of them on a full
//!    rebuild: asked for, or a changed view fingerprint), two at a time;
//! 5. publishes the new version (manifest + H) with one pointer update.
//!
//! A run is skipped when neither H nor the archive moved since the last one, unless asked for.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::batch_run::{BatchRunReport, BatchRunRequest};
use prism_core::config::ARCHIVER_CONSUMER;
use prism_core::log::EventLog;
use prism_core::store::{ConsumerOffset, SegmentRecord, ViewStore};
use prism_core::time::now_ms;
use prism_core::window::window_start;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::build::{build_chunk, BuiltSegment, ChunkBuild};
use crate::chunks::{Chunk, ChunkInputs};
use crate::master::MasterDataset;
use crate::views::BatchView;
use crate::{telemetry, BatchError};
use prism_core::view::RegisteredView;

/// Settings of the batch job.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The master dataset (a local folder or object storage); segments go under its
    /// `segments/` prefix.
    pub master: MasterDataset,
    /// Time between scheduled runs.
    pub interval: Duration,
    /// How long a retired version's segments stay readable (longer than any query).
    pub segment_grace: Duration,
    /// Chunks built at once (each on a blocking thread).
    pub parallelism: usize,
    /// How often to check whether the archiver has caught up with the log after lagging; a
    /// catch-up triggers a run at once instead of at the next scheduled one. `None`: runs only
    /// on schedule and on request.
    pub catch_up_check: Option<Duration>,
}

impl BatchConfig {
    /// Settings with the defaults: runs every 60 s and after each catch-up of the archiver
    /// (checked every second), 10-minute grace, 2 chunks at once.
    pub fn new(master: MasterDataset) -> BatchConfig {
        BatchConfig {
            master,
            interval: Duration::from_secs(60),
            segment_grace: Duration::from_secs(600),
            parallelism: 2,
            catch_up_check: Some(Duration::from_secs(1)),
        }
    }
}

/// The batch job's flags (each with a `PRISM_*` environment fallback), flattened into
/// `prism up` and `prism batch-layer`.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// Time between scheduled batch runs (`60s`, `500ms`, `5m`).
    #[arg(long, env = "PRISM_BATCH_INTERVAL", default_value = "60s", value_parser = prism_core::config::parse_duration)]
    pub batch_interval: Duration,
    /// Run the batch job only on schedule and on request, not also each time the archiver
    /// catches up with the log.
    #[arg(long, env = "PRISM_NO_BATCH_ON_CATCH_UP")]
    pub no_batch_on_catch_up: bool,
    /// Chunks a batch run builds at once, each on its own thread (more is faster on more cores
    /// and takes more memory: a year chunk of the lab holds about half a million rows).
    #[arg(long, env = "PRISM_BATCH_PARALLELISM", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub batch_parallelism: u16,
}

impl BatchArgs {
    /// The batch job's settings for these flags over `master`; the rest at [`BatchConfig::new`].
    pub fn config(&self, master: MasterDataset) -> BatchConfig {
        let mut batch =
            BatchConfig { interval: self.batch_interval, parallelism: usize::from(self.batch_parallelism), ..BatchConfig::new(master) };
        if self.no_batch_on_catch_up {
            batch.catch_up_check = None;
        }
        batch
    }
}

/// The batch horizon H (UTC ms) for the archiver's committed progress and the log's end
/// offsets: the newest boundary of `window_ms` windows that every partition's archive has
/// passed by the allowed lateness. A partition whose archive has caught up with the log's end
/// offset is idle and does not hold H back (like Flink's `withIdleness`); when all are idle, the
/// most advanced partition sets H. `None` while nothing is archived.
pub fn batch_horizon(archive: &[ConsumerOffset], log_end: &[i64], allowed_lateness_ms: i64, window_ms: i64) -> Option<i64> {
    let active: Vec<Option<i64>> = log_end
        .iter()
        .enumerate()
        .filter_map(|(p, end)| {
            let a = archive.iter().find(|o| o.partition == p as i32);
            let next = a.map_or(0, |o| o.next_offset);
            (next < *end).then(|| a.and_then(|o| o.max_event_ts_ms))
        })
        .collect();
    let edge = if active.is_empty() {
        archive.iter().filter_map(|o| o.max_event_ts_ms).max()?
    } else {
        // An active partition with nothing archived yet holds everything back.
        active.into_iter().collect::<Option<Vec<i64>>>()?.into_iter().min()?
    };
    Some(window_start(edge.saturating_sub(allowed_lateness_ms), window_ms))
}

/// What the last run of a view saw: (H, archive offsets). A scheduled run with the same
/// progress is skipped.
pub type RunProgress = (Option<i64>, Vec<i64>);

/// Runs the batch job of `view` now. `previous` is the progress of its last run; the run is
/// skipped (returning `Ok(None)`) when `force` is false and nothing moved. `full` rebuilds
/// every chunk.
///
/// Errors: [`BatchError`].
pub async fn run_batch_once<V, L>(
    view: &Arc<V>,
    config: &BatchConfig,
    log: &L,
    store: &ViewStore,
    previous: &mut Option<RunProgress>,
    force: bool,
    full: bool,
) -> Result<Option<BatchRunReport>, BatchError>
where
    V: BatchView,
    L: EventLog,
{
    let started = Instant::now();
    let topic = view.source_topic();
    let archive = store.consumer_offsets(ARCHIVER_CONSUMER, topic).await?;
    let log_end = log.end_offsets(topic).await?;
    let pointer = store.view_pointer(view.name()).await?;
    let computed = batch_horizon(&archive, &log_end, view.allowed_lateness_ms(), view.window_ms());
    // H never moves back.
    let horizon = match (computed, pointer.batch_horizon_ms) {
        (Some(h), Some(old)) => Some(h.max(old)),
        (h, old) => h.or(old),
    };
    let progress = (horizon, archive.iter().map(|o| o.next_offset).collect::<Vec<_>>());
    // Also when the run is skipped: a version retired by a full rebuild expires after its
    // grace period even if no new event arrives.
    expire_versions(view.name(), config, store).await?;
    if !force && previous.as_ref() == Some(&progress) {
        return Ok(None);
    }
    let Some(horizon) = horizon else {
        *previous = Some(progress);
        return Ok(Some(empty_report(view.name(), started)));
    };
    let committed: Vec<i64> =
        (0..log_end.len() as i32).map(|p| archive.iter().find(|o| o.partition == p).map_or(0, |o| o.next_offset)).collect();
    let report = build_and_publish(view, config, store, &committed, horizon, full, started).await?;
    *previous = Some(progress);
    Ok(Some(report))
}

fn empty_report(view: &str, started: Instant) -> BatchRunReport {
    BatchRunReport {
        view: view.to_string(),
        view_version: None,
        batch_horizon_ms: None,
        full: false,
        segments_built: 0,
        segments_carried: 0,
        files_read: 0,
        events: 0,
        rows: 0,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// Ends unusable versions and deletes segment files no remaining manifest lists. Only one batch
/// job runs per view, so a file no manifest lists is a leftover of a run that never published.
async fn expire_versions(view: &str, config: &BatchConfig, store: &ViewStore) -> Result<(), BatchError> {
    let cutoff = now_ms() - config.segment_grace.as_millis() as i64;
    let expired = store.expire_batch_versions(view, cutoff).await?;
    let referenced: HashSet<String> = store.referenced_segment_paths(view).await?.into_iter().collect();
    let location = config.master.location();
    let mut removed = 0usize;
    for meta in location.list(&format!("segments/{view}")).await? {
        if !referenced.contains(meta.location.as_ref()) {
            location.delete(&meta.location).await?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(view, removed, expired_versions = expired.len(), "removed segment files no version uses");
    }
    Ok(())
}

/// Builds the version of `view` for horizon `horizon` from the files committed below
/// `committed` offsets (per partition) and publishes it.
///
/// Errors: [`BatchError`].
pub async fn build_and_publish<V>(
    view: &Arc<V>,
    config: &BatchConfig,
    store: &ViewStore,
    committed: &[i64],
    horizon: i64,
    full: bool,
    started: Instant,
) -> Result<BatchRunReport, BatchError>
where
    V: BatchView,
{
    let fingerprint = view.fingerprint();
    let published = store.published_batch_version(view.name()).await?;
    let full = full || published.as_ref().is_none_or(|p| p.fingerprint != fingerprint);
    let previous: BTreeMap<i64, SegmentRecord> = match &published {
        Some(p) if !full => store.batch_segments(view.name(), p.version).await?.into_iter().map(|s| (s.chunk_start_ms, s)).collect(),
        _ => BTreeMap::new(),
    };
    let plan = plan_chunks(&config.master, view.source_topic(), committed, horizon).await?;
    let version = store.begin_batch_version(view.name(), &fingerprint).await?;
    let mut segments: Vec<SegmentRecord> = Vec::with_capacity(plan.len());
    let mut to_build = Vec::new();
    for build in plan {
        match previous.get(&build.chunk.start_ms) {
            Some(s) if s.chunk_end_ms == build.chunk.end_ms && s.covered_until_ms == build.covered_until_ms && s.inputs == build.inputs => {
                segments.push(s.clone());
            }
            _ => to_build.push(build),
        }
    }
    let carried = segments.len() as u64;
    let total = to_build.len();
    let built = build_chunks(view, config, version, to_build).await?;
    let (mut files_read, mut events, mut rows) = (0u64, 0u64, 0u64);
    for b in built {
        files_read += b.files_read;
        events += b.record.events as u64;
        rows += b.record.rows as u64;
        segments.push(b.record);
    }
    segments.sort_by_key(|s| s.chunk_start_ms);
    store.publish_batch_version(view.name(), version, horizon, &segments).await?;
    let report = BatchRunReport {
        view: view.name().to_string(),
        view_version: Some(version),
        batch_horizon_ms: Some(horizon),
        full,
        segments_built: total as u64,
        segments_carried: carried,
        files_read,
        events,
        rows,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    let name = view.name().to_string();
    metrics::counter!(telemetry::BATCH_RUNS_TOTAL, "view" => name.clone()).increment(1);
    metrics::counter!(telemetry::SEGMENTS_BUILT_TOTAL, "view" => name.clone()).increment(total as u64);
    metrics::gauge!(telemetry::BATCH_HORIZON_MS, "view" => name.clone()).set(horizon as f64);
    metrics::histogram!(telemetry::BATCH_RUN_SECONDS, "view" => name).record(started.elapsed().as_secs_f64());
    tracing::info!(
        view = %view.name(), version, horizon = %prism_core::time::format_rfc3339(horizon), full, built = total, carried,
        files = files_read, events, rows, elapsed_ms = report.elapsed_ms, "batch view published"
    );
    Ok(report)
}

/// The chunks a version for horizon `horizon` holds, with their committed files and inputs.
async fn plan_chunks(master: &MasterDataset, topic: &str, committed: &[i64], horizon: i64) -> Result<Vec<ChunkBuild>, BatchError> {
    let mut chunks: BTreeMap<Chunk, (Vec<_>, ChunkInputs)> = BTreeMap::new();
    for f in master.list_files(topic).await? {
        // Only committed files; and Hive partition pruning: a day at or after H holds nothing
        // before H.
        if f.last_offset >= committed.get(f.partition as usize).copied().unwrap_or(0) || f.day_start_ms >= horizon {
            continue;
        }
        let Some(chunk) = Chunk::of(f.day_start_ms, horizon) else { continue };
        let (files, inputs) = chunks.entry(chunk).or_default();
        inputs.add_file(f.partition, f.last_offset);
        files.push(f);
    }
    Ok(chunks
        .into_iter()
        .map(|(chunk, (files, inputs))| ChunkBuild { chunk, covered_until_ms: chunk.end_ms.min(horizon), files, inputs: inputs.encode() })
        .collect())
}

/// Builds `builds` on background threads (`prism_core::background`), `config.parallelism` at a
/// time, logging progress.
async fn build_chunks<V>(
    view: &Arc<V>,
    config: &BatchConfig,
    version: i64,
    builds: Vec<ChunkBuild>,
) -> Result<Vec<BuiltSegment>, BatchError>
where
    V: BatchView,
{
    let total = builds.len();
    let mut pending = builds.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut done = Vec::with_capacity(total);
    let mut last_progress = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    loop {
        while running.len() < config.parallelism.max(1) {
            let Some(build) = pending.next() else { break };
            let (view, master, runtime) = (view.clone(), config.master.clone(), runtime.clone());
            // Below serving's priority: a batch run during a catch-up must not slow answers.
            running.spawn(prism_core::background::run_at_low_priority("batch chunk build", move || {
                build_chunk(&view, &master, &runtime, version, &build)
            }));
        }
        let Some(next) = running.join_next().await else { break };
        // The join, the background pool, then the build itself.
        let built = next.map_err(|e| BatchError::Task(e.to_string()))??;
        done.push(built?);
        if last_progress.elapsed() >= Duration::from_secs(5) {
            tracing::info!(view = %view.name(), version, segments_done = done.len(), segments_total = total, "batch run progress");
            last_progress = Instant::now();
        }
    }
    Ok(done)
}

/// Whether the archiver has archived everything the log holds on `topic` now.
async fn archive_caught_up<L: EventLog>(log: &L, store: &ViewStore, topic: &str) -> Result<bool, BatchError> {
    let archive = store.consumer_offsets(ARCHIVER_CONSUMER, topic).await?;
    let ends = log.end_offsets(topic).await?;
    Ok(ends.iter().enumerate().all(|(p, end)| archive.iter().find(|o| o.partition == p as i32).map_or(0, |o| o.next_offset) >= *end))
}

/// Runs the batch job of every view in `views` every `config.interval`, once each time the
/// archiver catches up with the log after lagging behind it, and whenever a request arrives on
/// `requests`, until `cancel` fires.
///
/// Errors: [`BatchError`] from a scheduled run (a requested run's error goes to its requester).
pub async fn run_batch_layer<L>(
    views: Vec<RegisteredView>,
    config: BatchConfig,
    log: Arc<L>,
    store: ViewStore,
    requests: &mut mpsc::Receiver<BatchRunRequest>,
    cancel: CancellationToken,
) -> Result<(), BatchError>
where
    L: EventLog,
{
    let mut previous: Vec<Option<RunProgress>> = vec![None; views.len()];
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // A run in progress is abandoned on shutdown rather than awaited: nothing of it is
    // published, and the next run deletes what it wrote.
    let abandoned = || tracing::info!("batch run abandoned on shutdown; nothing of it was published");
    let mut catch_up = tokio::time::interval(config.catch_up_check.unwrap_or(Duration::from_secs(3600)));
    catch_up.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let topics: Vec<String> = views.iter().map(|v| v.source_topic().to_string()).collect();
    let topic = (!topics.is_empty() && config.catch_up_check.is_some()).then_some(&topics);
    let mut lagging = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = catch_up.tick(), if topic.is_some() => {
                let mut caught_up = true;
                for t in topics.iter() {
                    caught_up &= archive_caught_up(&*log, &store, t).await?;
                }
                if !caught_up {
                    lagging = true;
                } else if lagging {
                    lagging = false;
                    tracing::info!("the archiver caught up with the log: running the batch job");
                    tokio::select! {
                        r = run_all(&views, &config, &*log, &store, &mut previous, false, false) => scheduled_run_done(r),
                        _ = cancel.cancelled() => { abandoned(); break; }
                    }
                }
            }
            _ = ticker.tick() => {
                tokio::select! {
                    r = run_all(&views, &config, &*log, &store, &mut previous, false, false) => scheduled_run_done(r),
                    _ = cancel.cancelled() => { abandoned(); break; }
                }
            }
            Some(request) = requests.recv() => {
                let result = tokio::select! {
                    r = run_all(&views, &config, &*log, &store, &mut previous, true, request.full) => r,
                    _ = cancel.cancelled() => { abandoned(); break; }
                };
                let _ = request.reply.send(result.map_err(|e| e.to_string()));
            }
        }
    }
    tracing::info!("batch layer stopped");
    Ok(())
}

/// A scheduled (or catch-up) run that failed is logged and counted, not fatal: nothing of it
/// was published, what it wrote is deleted by the next run, and the next tick retries (a
/// requested run answers its error to the caller instead).
fn scheduled_run_done(result: Result<Vec<BatchRunReport>, BatchError>) {
    if let Err(e) = result {
        metrics::counter!(telemetry::BATCH_RUN_FAILURES_TOTAL).increment(1);
        tracing::error!(error = %e, "scheduled batch run failed; nothing of it was published; the next run retries");
    }
}

/// Runs every view's batch job once, in registry order.
async fn run_all<L>(
    views: &[RegisteredView],
    config: &BatchConfig,
    log: &L,
    store: &ViewStore,
    previous: &mut [Option<RunProgress>],
    force: bool,
    full: bool,
) -> Result<Vec<BatchRunReport>, BatchError>
where
    L: EventLog,
{
    let mut reports = Vec::new();
    for (view, prev) in views.iter().zip(previous.iter_mut()) {
        let report = prism_core::with_view!(view, v => run_batch_once(v, config, log, store, prev, force, full).await?);
        if let Some(r) = report {
            reports.push(r);
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(p: i32, next: i64, max: Option<i64>) -> ConsumerOffset {
        ConsumerOffset { partition: p, next_offset: next, max_event_ts_ms: max }
    }

    #[test]
    fn horizon_waits_for_the_slowest_active_partition() {
        let m = 60_000;
        let archive = [off(0, 10, Some(600_000)), off(1, 5, Some(300_000))];
        assert_eq!(batch_horizon(&archive, &[20, 20], 5_000, m), Some(240_000));
        // Partition 1 caught up with the log: idle, so it no longer holds H back.
        assert_eq!(batch_horizon(&archive, &[20, 5], 5_000, m), Some(540_000));
        // All idle: the most advanced partition sets H.
        assert_eq!(batch_horizon(&archive, &[10, 5], 5_000, m), Some(540_000));
        // A partition with unarchived data and nothing archived holds everything back.
        assert_eq!(batch_horizon(&[off(0, 10, Some(600_000))], &[10, 3], 5_000, m), None);
        // An empty partition never does.
        assert_eq!(batch_horizon(&[off(0, 10, Some(600_000))], &[10, 0], 5_000, m), Some(540_000));
        assert_eq!(batch_horizon(&[], &[0, 0], 5_000, m), None);
        // Aligned to the view's window.
        assert_eq!(batch_horizon(&[off(0, 10, Some(600_000))], &[10], 0, 7 * m), Some(7 * m * (600_000 / (7 * m))));
    }
}
