//! Prism speed layer: the event log → realtime views (DESIGN §5).
//!
//! One consumer per realtime view version (`speed-layer.v<N>`) reads every partition of
//! `prism.quotes` from the offsets stored **in the view store**, folds each quote into its
//! 1-minute `ohlcv` window (update mode: a window changes with every event) and commits the
//! changed rows together with the consumed offsets in one store transaction every commit
//! interval. After a crash it resumes from those offsets, so each event counts exactly once.
//!
//! Malformed records go to `prism.dlq` with the reason. Late events (behind their partition's
//! watermark) are still applied and counted in metrics; in Lambda mode the batch job corrects
//! them anyway. The reported realtime watermark is the max event time over all partitions −
//! allowed lateness (DESIGN §4).
//! Realtime windows older than the published batch horizon are deleted once a batch version
//! covers them.

pub mod telemetry;
pub mod window_cache;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::config::speed_consumer;
use prism_core::event::{DeadLetter, LogPosition, Quote, DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::{EventLog, LogError, LogRecord};
use prism_core::ohlcv::{ohlcv_contribution, OhlcvRow};
use prism_core::consumer::StoreConsumer;
use prism_core::store::{StoreError, ViewStore};
use window_cache::{cache_floor, WindowCache};
use prism_core::window::Watermark;
use tokio_util::sync::CancellationToken;

/// Settings of the speed layer.
#[derive(Debug, Clone)]
pub struct SpeedConfig {
    /// Realtime view version this instance builds.
    pub view_version: i64,
    /// Allowed lateness for the watermark, ms.
    pub allowed_lateness_ms: i64,
    /// Commit at least this often while events flow.
    pub commit_interval: Duration,
    /// Commit after this many events even before the interval.
    pub commit_max_events: usize,
    /// Partitions of `prism.quotes` if the speed layer has to create it.
    pub partitions: i32,
    /// Whether to drop realtime windows behind the batch horizon (Lambda mode).
    pub drop_behind_batch_horizon: bool,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        SpeedConfig {
            view_version: 1,
            allowed_lateness_ms: prism_core::window::DEFAULT_ALLOWED_LATENESS_MS,
            commit_interval: Duration::from_millis(100),
            commit_max_events: 10_000,
            partitions: 4,
            drop_behind_batch_horizon: true,
        }
    }
}

/// Errors that stop the speed layer.
#[derive(Debug, thiserror::Error)]
pub enum SpeedError {
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The view store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Consuming the log failed.
    #[error(transparent)]
    Consumer(#[from] prism_core::consumer::ConsumerError),
}

/// The speed layer's state between commits.
struct SpeedState {
    consumer_name: String,
    config: SpeedConfig,
    consumer: StoreConsumer,
    /// One window cache per partition.
    caches: Vec<WindowCache>,
    events_since_commit: usize,
    dropped_through_ms: Option<i64>,
    wrote_behind_horizon: bool,
}

/// Runs the speed layer until `cancel` fires, then commits what it holds and returns.
///
/// Errors: [`SpeedError`] when the log or the store fails.
pub async fn run_speed_layer<L: EventLog>(
    config: SpeedConfig,
    log: Arc<L>,
    store: ViewStore,
    cancel: CancellationToken,
) -> Result<(), SpeedError> {
    let partitions = log.ensure_topic(QUOTES_TOPIC, config.partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let mut state = SpeedState::restore(config, partitions, &store).await?;
    tracing::info!(consumer = %state.consumer_name, partitions, offsets = ?state.consumer.next_offsets(), "speed layer starting");
    let mut last_commit = Instant::now();
    loop {
        let records = tokio::select! {
            r = state.consumer.poll(&*log, 5_000) => r?,
            _ = cancel.cancelled() => break,
        };
        if !records.is_empty() {
            state.apply(&records, &*log, &store).await?;
        }
        // Commit every interval (also with nothing new, to follow the batch horizon and drop
        // the windows it covers) or once enough events are waiting.
        if state.events_since_commit >= state.config.commit_max_events
            || last_commit.elapsed() >= state.config.commit_interval
        {
            state.commit(&store).await?;
            last_commit = Instant::now();
        }
    }
    state.commit(&store).await?;
    tracing::info!(consumer = %state.consumer_name, "speed layer stopped after its final commit");
    Ok(())
}

impl SpeedState {
    async fn restore(config: SpeedConfig, partitions: i32, store: &ViewStore) -> Result<SpeedState, SpeedError> {
        let consumer_name = speed_consumer(config.view_version);
        let consumer = StoreConsumer::resume(store, &consumer_name, QUOTES_TOPIC, partitions).await?;
        let floors: Vec<Option<i64>> = consumer
            .offsets
            .iter()
            .map(|o| o.max_event_ts_ms.map(|m| cache_floor(m, config.allowed_lateness_ms)))
            .collect();
        // Partitions that never saw an event have nothing stored; the others need their rows
        // from their floor on.
        let mut by_partition: Vec<Vec<OhlcvRow>> = (0..partitions).map(|_| Vec::new()).collect();
        if let Some(lowest) = floors.iter().flatten().min() {
            for row in store.realtime_rows_since(config.view_version, *lowest).await? {
                let p = row.agg.open.map_or(0, |o| o.key.partition) as usize;
                if let Some(rows) = by_partition.get_mut(p) {
                    rows.push(row);
                }
            }
        }
        let caches = by_partition.into_iter().zip(&floors).map(|(rows, floor)| WindowCache::new(rows, *floor)).collect();
        Ok(SpeedState {
            consumer_name,
            config,
            consumer,
            caches,
            events_since_commit: 0,
            dropped_through_ms: None,
            wrote_behind_horizon: false,
        })
    }

    async fn apply<L: EventLog>(&mut self, records: &[LogRecord], log: &L, store: &ViewStore) -> Result<(), SpeedError> {
        let mut dead = Vec::new();
        for r in records {
            let pos = LogPosition { partition: r.partition, offset: r.offset };
            match Quote::from_json(&r.value) {
                Ok(quote) => {
                    // Late = behind its own partition's progress (stream time per partition, as
                    // in Kafka Streams); partitions advance at their own pace.
                    let partition_max = self.consumer.offsets.get(r.partition as usize).and_then(|o| o.max_event_ts_ms);
                    if Watermark::new(partition_max, self.config.allowed_lateness_ms).is_late(quote.ts) {
                        metrics::counter!(telemetry::LATE_EVENTS_TOTAL).increment(1);
                    }
                    let (key, contribution) = ohlcv_contribution(&quote, pos);
                    let Some(cache) = self.caches.get_mut(r.partition as usize) else {
                        return Err(SpeedError::Log(prism_core::log::LogError::OutOfRange(format!(
                            "record from partition {} beyond the {} known",
                            r.partition,
                            self.consumer.offsets.len()
                        ))));
                    };
                    let current = match cache.get(&key) {
                        Some(agg) => agg,
                        None => store.realtime_row(self.config.view_version, &key).await?.unwrap_or_default(),
                    };
                    cache.put(key, current.merge(&contribution));
                    self.consumer.advance(r, Some(quote.ts));
                }
                Err(e) => {
                    metrics::counter!(telemetry::DEAD_LETTERS_TOTAL).increment(1);
                    tracing::warn!(partition = r.partition, offset = r.offset, reason = %e, "malformed event to the dead-letter topic");
                    let letter = DeadLetter {
                        source: format!("{QUOTES_TOPIC}/{}@{}", r.partition, r.offset),
                        reason: e.to_string(),
                        payload: String::from_utf8_lossy(&r.value).into_owned(),
                        rejected_at_ms: chrono_now_ms(),
                    };
                    dead.push(letter.into_record(r.key.clone()));
                    self.consumer.advance(r, None);
                }
            }
            self.events_since_commit += 1;
        }
        metrics::counter!(telemetry::EVENTS_TOTAL).increment(records.len() as u64);
        if !dead.is_empty() {
            log.append(DLQ_TOPIC, dead).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, store: &ViewStore) -> Result<(), SpeedError> {
        let started = Instant::now();
        let horizon = if self.config.drop_behind_batch_horizon {
            store.serving_state().await?.batch_horizon_ms
        } else {
            None
        };
        let rows: Vec<OhlcvRow> = self.caches.iter().flat_map(|c| c.dirty_rows()).collect();
        if let Some(h) = horizon {
            self.wrote_behind_horizon |= rows.iter().any(|r| r.key.window_start_ms < h);
        }
        let drop_before = horizon.filter(|h| self.wrote_behind_horizon || self.dropped_through_ms.is_none_or(|d| *h > d));
        if rows.is_empty() && drop_before.is_none() && self.events_since_commit == 0 {
            return Ok(());
        }
        store
            .commit_realtime(&self.consumer_name, QUOTES_TOPIC, self.config.view_version, &rows, &self.consumer.offsets, drop_before)
            .await?;
        if let Some(h) = drop_before {
            self.dropped_through_ms = Some(h);
            self.wrote_behind_horizon = false;
        }
        metrics::counter!(telemetry::COMMITS_TOTAL).increment(1);
        metrics::histogram!(telemetry::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        let max_ts = self.consumer.offsets.iter().filter_map(|o| o.max_event_ts_ms).max();
        if let Some(w) = Watermark::new(max_ts, self.config.allowed_lateness_ms).current_ms() {
            metrics::gauge!(telemetry::WATERMARK_MS).set(w as f64);
        }
        self.events_since_commit = 0;
        let lateness = self.config.allowed_lateness_ms;
        for (cache, offset) in self.caches.iter_mut().zip(&self.consumer.offsets) {
            cache.committed(offset.max_event_ts_ms, lateness);
        }
        metrics::gauge!(telemetry::CACHED_WINDOWS).set(self.caches.iter().map(WindowCache::len).sum::<usize>() as f64);
        Ok(())
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
