//! The batch job: the master dataset → the `ohlcv` batch view, up to the batch horizon
//! (DESIGN §5).
//!
//! Each run computes the horizon H from the archiver's committed progress, recomputes every
//! 1-minute window that starts before H from the committed master-dataset files with the same
//! view code as the speed layer ([`prism_core::ohlcv`]), writes the rows as a new batch-view
//! version, and then publishes (H, version) in one transaction; older versions are deleted
//! afterwards. A run is skipped when neither H nor the archive moved since the last one,
//! unless it was requested explicitly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::batch_run::{BatchRunReport, BatchRunRequest};
use prism_core::config::ARCHIVER_CONSUMER;
use prism_core::event::QUOTES_TOPIC;
use prism_core::log::EventLog;
use prism_core::ohlcv::{ohlcv_contribution, Ohlcv, OhlcvKey, OhlcvRow, OHLCV_WINDOW_MS};
use prism_core::store::{ConsumerOffset, ViewStore};
use prism_core::time::DAY_MS;
use prism_core::window::{window_start, Interval};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::master::{MasterDataset, MasterFile};
use crate::{telemetry, BatchError};

/// Settings of the batch job.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The master dataset (a local folder or object storage).
    pub master: MasterDataset,
    /// Allowed lateness, ms: the horizon trails each partition's archive by this much.
    pub allowed_lateness_ms: i64,
    /// Time between scheduled runs.
    pub interval: Duration,
}

/// The batch horizon H (UTC ms) for the archiver's committed progress and the log's end
/// offsets: the newest 1-minute window boundary that every partition's archive has passed by
/// the allowed lateness. A partition whose archive has caught up with the log's end offset is
/// idle and does not hold H back (like Flink's `withIdleness`); when all are idle, the most
/// advanced partition sets H. `None` while nothing is archived.
pub fn batch_horizon(archive: &[ConsumerOffset], log_end: &[i64], allowed_lateness_ms: i64) -> Option<i64> {
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
    Some(window_start(edge.saturating_sub(allowed_lateness_ms), OHLCV_WINDOW_MS))
}

/// Runs one batch job now. `previous` is the archive progress of the last run; the run is
/// skipped (returning `Ok(None)`) when `force` is false and nothing moved.
///
/// Errors: [`BatchError`].
pub async fn run_batch_once<L: EventLog>(
    config: &BatchConfig,
    log: &L,
    store: &ViewStore,
    previous: &mut Option<(Option<i64>, Vec<i64>)>,
    force: bool,
) -> Result<Option<BatchRunReport>, BatchError> {
    let started = Instant::now();
    let archive = store.consumer_offsets(ARCHIVER_CONSUMER, QUOTES_TOPIC).await?;
    let log_end = log.end_offsets(QUOTES_TOPIC).await?;
    let state = store.serving_state().await?;
    let computed = batch_horizon(&archive, &log_end, config.allowed_lateness_ms);
    // H never moves back.
    let horizon = match (computed, state.batch_horizon_ms) {
        (Some(h), Some(old)) => Some(h.max(old)),
        (h, old) => h.or(old),
    };
    let progress = (horizon, archive.iter().map(|o| o.next_offset).collect::<Vec<_>>());
    if !force && previous.as_ref() == Some(&progress) {
        return Ok(None);
    }
    let Some(horizon) = horizon else {
        *previous = Some(progress);
        return Ok(Some(BatchRunReport {
            view_version: None,
            batch_horizon_ms: None,
            files_read: 0,
            events: 0,
            rows: 0,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }));
    };

    let committed: Vec<i64> = (0..log_end.len() as i32)
        .map(|p| archive.iter().find(|o| o.partition == p).map_or(0, |o| o.next_offset))
        .collect();
    let report = build_and_publish(config, store, committed, horizon, started).await?;
    *previous = Some(progress);
    Ok(Some(report))
}

/// Recomputes the batch view below `horizon` from the files committed below `committed`
/// offsets (per partition), writes it as a new version and publishes (horizon, version).
/// `started` is when the run began (for the report's elapsed time).
///
/// Errors: [`BatchError`].
pub async fn build_and_publish(
    config: &BatchConfig,
    store: &ViewStore,
    committed: Vec<i64>,
    horizon: i64,
    started: Instant,
) -> Result<BatchRunReport, BatchError> {
    store.delete_unpublished_batch_rows().await?;
    let version = store.next_batch_version().await?;
    // The recompute runs on a blocking thread and hands over finished hours (and days) of rows;
    // they are written as they come, so memory holds about one hour of the master dataset.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<IntervalRows>>(4);
    let master = config.master.clone();
    let runtime = tokio::runtime::Handle::current();
    let reader = tokio::task::spawn_blocking(move || {
        recompute_streaming(&master, &runtime, &committed, horizon, &mut |chunk| {
            tx.blocking_send(chunk).map_err(|_| BatchError::Task("the batch writer stopped".into()))
        })
    });
    let mut rows_written = 0u64;
    let mut pending = RowsByInterval::new();
    while let Some(chunk) = rx.recv().await {
        for (interval_ms, rows) in chunk {
            pending.entry(interval_ms).or_default().extend(rows);
        }
        if pending.values().map(Vec::len).sum::<usize>() >= 50_000 {
            rows_written += write_pending(store, version, &mut pending).await?;
        }
    }
    rows_written += write_pending(store, version, &mut pending).await?;
    let (files_read, events) = reader.await.map_err(|e| BatchError::Task(e.to_string()))??;
    store.publish_batch_version(version, horizon, rows_written as i64, events as i64).await?;
    store.delete_unpublished_batch_rows().await?;

    let report = BatchRunReport {
        view_version: Some(version),
        batch_horizon_ms: Some(horizon),
        files_read,
        events,
        rows: rows_written,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    metrics::counter!(telemetry::BATCH_RUNS_TOTAL).increment(1);
    metrics::gauge!(telemetry::BATCH_HORIZON_MS).set(horizon as f64);
    metrics::histogram!(telemetry::BATCH_RUN_SECONDS).record(started.elapsed().as_secs_f64());
    tracing::info!(
        version, horizon = %prism_core::time::format_rfc3339(horizon), files = files_read, events,
        rows = report.rows, elapsed_ms = report.elapsed_ms, "batch view published"
    );
    Ok(report)
}

/// Rows of one interval: (interval length in ms, rows).
pub type IntervalRows = (i64, Vec<OhlcvRow>);

async fn write_pending(
    store: &ViewStore,
    version: i64,
    pending: &mut RowsByInterval,
) -> Result<u64, BatchError> {
    let mut written = 0;
    for (interval_ms, rows) in std::mem::take(pending) {
        store.write_batch_rows(version, interval_ms, &rows).await?;
        written += rows.len() as u64;
    }
    Ok(written)
}

/// Recomputes the batch view from every committed event (offset below `committed[partition]`)
/// with event time before `horizon`, one hour partition at a time (a 1-minute window never
/// crosses an hour). For each hour it emits the 1-minute rows and their 5m, 15m and 1h
/// roll-ups; 1d roll-ups are emitted when their UTC day is complete. Returns (files read,
/// events aggregated).
///
/// Runs on a blocking thread: it waits for the dataset's reads on `runtime`.
///
/// Errors: [`BatchError::Master`] when a file cannot be listed or read; whatever `emit` returns.
pub fn recompute_streaming(
    master: &MasterDataset,
    runtime: &tokio::runtime::Handle,
    committed: &[i64],
    horizon: i64,
    emit: &mut dyn FnMut(Vec<IntervalRows>) -> Result<(), BatchError>,
) -> Result<(u64, u64), BatchError> {
    let files: Vec<MasterFile> = runtime.block_on(master.list_files(QUOTES_TOPIC))?
        .into_iter()
        // Only committed files; and Hive partition pruning: an hour at or after H holds nothing
        // before H.
        .filter(|f| f.last_offset < committed.get(f.partition as usize).copied().unwrap_or(0) && f.hour_start_ms < horizon)
        .collect();
    let (mut files_read, mut events) = (0u64, 0u64);
    let mut days: HashMap<OhlcvKey, Ohlcv> = HashMap::new();
    let mut current_day: Option<i64> = None;
    let mut last_progress = Instant::now();
    let total = files.len();
    for hour in files.chunk_by(|a, b| a.hour_start_ms == b.hour_start_ms) {
        let hour_start = hour[0].hour_start_ms;
        let day = window_start(hour_start, DAY_MS);
        if current_day.is_some_and(|d| d != day) {
            emit(vec![(DAY_MS, sorted(std::mem::take(&mut days)))])?;
        }
        current_day = Some(day);
        let mut minutes: HashMap<OhlcvKey, Ohlcv> = HashMap::new();
        for f in hour {
            files_read += 1;
            for row in runtime.block_on(master.read_file(f))? {
                if row.quote.ts >= horizon {
                    continue;
                }
                let (key, contribution) = ohlcv_contribution(&row.quote, row.pos);
                let agg = minutes.entry(key).or_default();
                *agg = agg.merge(&contribution);
                events += 1;
            }
        }
        let minute_rows = sorted(minutes);
        let mut chunk = Vec::with_capacity(4);
        for interval in [Interval::M5, Interval::M15, Interval::H1] {
            chunk.push((interval.size_ms(), roll_up(&minute_rows, interval.size_ms())));
        }
        for r in roll_up(&minute_rows, DAY_MS) {
            let agg = days.entry(r.key).or_default();
            *agg = agg.merge(&r.agg);
        }
        chunk.push((OHLCV_WINDOW_MS, minute_rows));
        emit(chunk)?;
        if last_progress.elapsed() >= Duration::from_secs(5) {
            tracing::info!(files_done = files_read, files_total = total, events, "batch job progress");
            last_progress = Instant::now();
        }
    }
    if !days.is_empty() {
        emit(vec![(DAY_MS, sorted(days))])?;
    }
    Ok((files_read, events))
}

fn sorted(map: HashMap<OhlcvKey, Ohlcv>) -> Vec<OhlcvRow> {
    let mut rows: Vec<OhlcvRow> = map.into_iter().map(|(key, agg)| OhlcvRow { key, agg }).collect();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// Merges rows into windows of `size_ms` (the monoid's roll-up), sorted by key.
fn roll_up(rows: &[OhlcvRow], size_ms: i64) -> Vec<OhlcvRow> {
    let mut out: HashMap<OhlcvKey, Ohlcv> = HashMap::new();
    for r in rows {
        let key = OhlcvKey { symbol: r.key.symbol.clone(), window_start_ms: window_start(r.key.window_start_ms, size_ms) };
        let agg = out.entry(key).or_default();
        *agg = agg.merge(&r.agg);
    }
    sorted(out)
}

/// Batch-view rows keyed by interval length, ms.
pub type RowsByInterval = std::collections::BTreeMap<i64, Vec<OhlcvRow>>;

/// The whole recompute collected in memory, by interval (for tests and small datasets):
/// (rows by interval length in ms, files read, events).
///
/// Errors: as [`recompute_streaming`].
pub async fn recompute(
    master: &MasterDataset,
    committed: &[i64],
    horizon: i64,
) -> Result<(RowsByInterval, u64, u64), BatchError> {
    let (master, committed, runtime) = (master.clone(), committed.to_vec(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        let mut all = RowsByInterval::new();
        let (files, events) = recompute_streaming(&master, &runtime, &committed, horizon, &mut |chunk| {
            for (interval, rows) in chunk {
                all.entry(interval).or_default().extend(rows);
            }
            Ok(())
        })?;
        for rows in all.values_mut() {
            rows.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok((all, files, events))
    })
    .await
    .map_err(|e| BatchError::Task(e.to_string()))?
}

/// Runs the batch job every `config.interval` and whenever a request arrives on `requests`,
/// until `cancel` fires.
///
/// Errors: [`BatchError`] from a scheduled run (a requested run's error goes to its requester).
pub async fn run_batch_layer<L: EventLog>(
    config: BatchConfig,
    log: Arc<L>,
    store: ViewStore,
    requests: &mut mpsc::Receiver<BatchRunRequest>,
    cancel: CancellationToken,
) -> Result<(), BatchError> {
    let mut previous = None;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // A run in progress is abandoned on shutdown rather than awaited (a full recompute can take
    // minutes): nothing of it is published, and its unpublished rows are deleted by the next run.
    let abandoned = || tracing::info!("batch run abandoned on shutdown; nothing of it was published");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {
                tokio::select! {
                    r = run_batch_once(&config, &*log, &store, &mut previous, false) => { r?; }
                    _ = cancel.cancelled() => { abandoned(); break; }
                }
            }
            Some(reply) = requests.recv() => {
                let result = tokio::select! {
                    r = run_batch_once(&config, &*log, &store, &mut previous, true) => r,
                    _ = cancel.cancelled() => { abandoned(); break; }
                };
                let answer = match result {
                    Ok(report) => report.ok_or_else(|| "nothing to do".to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(answer);
            }
        }
    }
    tracing::info!("batch layer stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(p: i32, next: i64, max: Option<i64>) -> ConsumerOffset {
        ConsumerOffset { partition: p, next_offset: next, max_event_ts_ms: max }
    }

    #[test]
    fn horizon_waits_for_the_slowest_active_partition() {
        let archive = [off(0, 10, Some(600_000)), off(1, 5, Some(300_000))];
        assert_eq!(batch_horizon(&archive, &[20, 20], 5_000), Some(240_000));
        // Partition 1 caught up with the log: idle, so it no longer holds H back.
        assert_eq!(batch_horizon(&archive, &[20, 5], 5_000), Some(540_000));
        // All idle: the most advanced partition sets H.
        assert_eq!(batch_horizon(&archive, &[10, 5], 5_000), Some(540_000));
        // A partition with unarchived data and nothing archived holds everything back.
        assert_eq!(batch_horizon(&[off(0, 10, Some(600_000))], &[10, 3], 5_000), None);
        // An empty partition never does.
        assert_eq!(batch_horizon(&[off(0, 10, Some(600_000))], &[10, 0], 5_000), Some(540_000));
        assert_eq!(batch_horizon(&[], &[0, 0], 5_000), None);
    }
}
