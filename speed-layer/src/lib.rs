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
//!
//! Scale-out: [`run_speed_layer_in_group`] runs one of several instances that split the
//! partitions through a Kafka consumer group. On revoke it commits and releases its partitions;
//! on assign it claims their leases in the view store (fencing any former owner) and resumes
//! from their stored offsets and windows. [`run_speed_layer`] owns every partition.

mod group;
pub mod telemetry;
pub mod window_cache;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::config::speed_consumer;
use prism_core::event::{DeadLetter, LogPosition, Quote, DLQ_TOPIC, QUOTES_TOPIC};
use std::collections::BTreeMap;

use prism_core::log::kafka_group::GroupMembership;
use prism_core::log::{EventLog, LogError, LogRecord};
use prism_core::ohlcv::{ohlcv_contribution, OhlcvRow};
use prism_core::consumer::StoreConsumer;
use prism_core::store::{StoreError, ViewStore};
use window_cache::{cache_floor, WindowCache};
use prism_core::time::now_ms;
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
    /// This instance's name in partition leases (`/v1/status` shows it as the owner).
    pub instance_id: String,
    /// Commit (which renews the partition leases) at least this often, even when idle.
    pub lease_renew_interval: Duration,
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
            instance_id: format!("speed-layer-{}", std::process::id()),
            lease_renew_interval: Duration::from_secs(2),
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
    /// A standalone instance found its partitions claimed by another instance.
    #[error("partitions {partitions:?} of {consumer} were claimed by another instance; run several speed layers only as one consumer group")]
    Fenced {
        /// Consumer name.
        consumer: String,
        /// Partitions lost.
        partitions: Vec<i32>,
    },
}

/// The speed layer's state between commits.
struct SpeedState {
    consumer_name: String,
    config: SpeedConfig,
    consumer: StoreConsumer,
    /// One window cache per owned partition.
    caches: BTreeMap<i32, WindowCache>,
    /// Partitions come from a consumer group (a lost lease is then routine, not an error).
    in_group: bool,
    events_since_commit: usize,
    dropped_through_ms: Option<i64>,
    wrote_behind_horizon: bool,
    /// Last successful commit (which renewed the leases).
    last_renewal: Instant,
    /// Last change of the owned partitions.
    assigned_at: Instant,
}

/// Runs the speed layer on every partition until `cancel` fires, then commits what it holds
/// and returns.
///
/// Errors: [`SpeedError`] when the log or the store fails, or [`SpeedError::Fenced`] when
/// another instance claims its partitions.
pub async fn run_speed_layer<L: EventLog>(
    config: SpeedConfig,
    log: Arc<L>,
    store: ViewStore,
    cancel: CancellationToken,
) -> Result<(), SpeedError> {
    run(config, log, store, None, cancel).await
}

/// Runs one speed-layer instance of a consumer group (`membership`, joined with group id
/// [`speed_consumer`]`(view_version)`): it consumes only the partitions the group assigns it.
/// Leaves the group on return.
///
/// Errors: [`SpeedError`] when the log or the store fails.
pub async fn run_speed_layer_in_group<L: EventLog>(
    config: SpeedConfig,
    log: Arc<L>,
    store: ViewStore,
    membership: GroupMembership,
    cancel: CancellationToken,
) -> Result<(), SpeedError> {
    run(config, log, store, Some(membership), cancel).await
}

async fn run<L: EventLog>(
    config: SpeedConfig,
    log: Arc<L>,
    store: ViewStore,
    mut membership: Option<GroupMembership>,
    cancel: CancellationToken,
) -> Result<(), SpeedError> {
    let partitions = log.ensure_topic(QUOTES_TOPIC, config.partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let mut state = SpeedState::new(config, membership.is_some());
    if membership.is_none() {
        state.assign(&(0..partitions).collect::<Vec<_>>(), &store).await?;
    }
    tracing::info!(consumer = %state.consumer_name, instance = %state.config.instance_id, partitions,
        group = membership.is_some(), "speed layer starting");
    let mut last_commit = Instant::now();
    let mut last_orphan_check = Instant::now();
    let result = loop {
        if let Some(m) = membership.as_mut() {
            if let Err(e) = state.follow_group(m, &store).await {
                break Err(e);
            }
            if last_orphan_check.elapsed() >= m.config().session_timeout {
                last_orphan_check = Instant::now();
                if let Err(e) = state.adopt_orphans(m, &store, partitions).await {
                    break Err(e);
                }
            }
        }
        let records = tokio::select! {
            r = state.consumer.poll(&*log, 5_000) => r,
            _ = cancel.cancelled() => break Ok(()),
        };
        let step = async {
            let records = records?;
            if !records.is_empty() {
                state.apply(&records, &*log, &store).await?;
            }
            // Commit every interval (also with nothing new, to follow the batch horizon and drop
            // the windows it covers) or once enough events are waiting.
            if state.events_since_commit >= state.config.commit_max_events || last_commit.elapsed() >= state.config.commit_interval {
                state.commit(&store).await?;
                last_commit = Instant::now();
            }
            Ok::<(), SpeedError>(())
        };
        if let Err(e) = step.await {
            break Err(e);
        }
    };
    let result = match result {
        Ok(()) => state.commit(&store).await,
        Err(e) => Err(e),
    };
    if let Some(m) = membership {
        m.leave().await;
    }
    result?;
    tracing::info!(consumer = %state.consumer_name, "speed layer stopped after its final commit");
    Ok(())
}

impl SpeedState {
    fn new(config: SpeedConfig, in_group: bool) -> SpeedState {
        SpeedState {
            consumer_name: speed_consumer(config.view_version),
            consumer: StoreConsumer::new(QUOTES_TOPIC),
            config,
            caches: BTreeMap::new(),
            in_group,
            events_since_commit: 0,
            dropped_through_ms: None,
            wrote_behind_horizon: false,
            last_renewal: Instant::now(),
            assigned_at: Instant::now(),
        }
    }

    /// Takes `partitions` (the whole assignment): claims their leases, then resumes from their
    /// stored offsets and warms each partition's window cache from its floor on.
    async fn assign(&mut self, partitions: &[i32], store: &ViewStore) -> Result<(), SpeedError> {
        if !self.consumer.offsets.is_empty() {
            // An assignment without a revoke first (not expected of the eager protocol): keep
            // what was done, then start over from the store.
            self.commit(store).await?;
            let owned = self.consumer.partitions();
            self.release(&owned);
        }
        self.consumer = StoreConsumer::claim(store, &self.consumer_name, QUOTES_TOPIC, partitions, &self.config.instance_id).await?;
        let lateness = self.config.allowed_lateness_ms;
        let floors: BTreeMap<i32, Option<i64>> =
            self.consumer.offsets.iter().map(|o| (o.partition, o.max_event_ts_ms.map(|m| cache_floor(m, lateness)))).collect();
        // Partitions that never saw an event have nothing stored; the others need their rows
        // from their floor on.
        let mut by_partition: BTreeMap<i32, Vec<OhlcvRow>> = floors.keys().map(|p| (*p, Vec::new())).collect();
        if let Some(lowest) = floors.values().flatten().min() {
            for row in store.realtime_rows_since(self.config.view_version, *lowest).await? {
                let p = row.agg.open.map_or(-1, |o| o.key.partition);
                if let Some(rows) = by_partition.get_mut(&p) {
                    rows.push(row);
                }
            }
        }
        self.caches = by_partition.into_iter().map(|(p, rows)| (p, WindowCache::new(rows, floors.get(&p).copied().flatten()))).collect();
        self.events_since_commit = 0;
        self.assigned_at = Instant::now();
        metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(self.caches.len() as f64);
        tracing::info!(consumer = %self.consumer_name, partitions = ?self.consumer.partitions(),
            offsets = ?self.consumer.next_offsets(), "speed layer owns partitions");
        Ok(())
    }

    /// Forgets `partitions` and their uncommitted windows.
    fn release(&mut self, partitions: &[i32]) {
        self.consumer.release(partitions);
        self.caches.retain(|p, _| !partitions.contains(p));
        self.assigned_at = Instant::now();
        metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(self.caches.len() as f64);
    }

    async fn apply<L: EventLog>(&mut self, records: &[LogRecord], log: &L, store: &ViewStore) -> Result<(), SpeedError> {
        let mut dead = Vec::new();
        for r in records {
            let pos = LogPosition { partition: r.partition, offset: r.offset };
            match Quote::from_json(&r.value) {
                Ok(quote) => {
                    // Late = behind its own partition's progress (stream time per partition, as
                    // in Kafka Streams); partitions advance at their own pace.
                    let partition_max = self.consumer.index_of(r.partition).and_then(|i| self.consumer.offsets[i].max_event_ts_ms);
                    if Watermark::new(partition_max, self.config.allowed_lateness_ms).is_late(quote.ts) {
                        metrics::counter!(telemetry::LATE_EVENTS_TOTAL).increment(1);
                    }
                    let (key, contribution) = ohlcv_contribution(&quote, pos);
                    let Some(cache) = self.caches.get_mut(&r.partition) else {
                        return Err(SpeedError::Log(LogError::OutOfRange(format!(
                            "record from partition {}, which this instance does not own ({:?})",
                            r.partition,
                            self.consumer.partitions()
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
                        rejected_at_ms: now_ms(),
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
        let rows: Vec<OhlcvRow> = self.caches.values().flat_map(|c| c.dirty_rows()).collect();
        if let Some(h) = horizon {
            self.wrote_behind_horizon |= rows.iter().any(|r| r.key.window_start_ms < h);
        }
        let drop_before = horizon.filter(|h| self.wrote_behind_horizon || self.dropped_through_ms.is_none_or(|d| *h > d));
        let renew = !self.consumer.leases.is_empty() && self.last_renewal.elapsed() >= self.config.lease_renew_interval;
        if rows.is_empty() && drop_before.is_none() && self.events_since_commit == 0 && !renew {
            return Ok(());
        }
        let c = &self.consumer;
        match store.commit_realtime(&self.consumer_name, QUOTES_TOPIC, self.config.view_version, &rows, &c.offsets, &c.leases, drop_before).await {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => return self.fenced(store).await,
            Err(e) => return Err(e.into()),
        }
        self.last_renewal = Instant::now();
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
        for offset in &self.consumer.offsets {
            if let Some(cache) = self.caches.get_mut(&offset.partition) {
                cache.committed(offset.max_event_ts_ms, lateness);
            }
        }
        metrics::gauge!(telemetry::CACHED_WINDOWS).set(self.caches.values().map(WindowCache::len).sum::<usize>() as f64);
        Ok(())
    }

    /// A commit was refused because another instance claimed some of this instance's
    /// partitions. In a group that is a rebalance this instance has not heard of yet: drop those
    /// partitions' uncommitted windows (their new owner recomputes them from the stored offsets)
    /// and commit the rest. Standalone, it is an operator error.
    async fn fenced(&mut self, store: &ViewStore) -> Result<(), SpeedError> {
        let lost = store.lost_leases(&self.consumer_name, QUOTES_TOPIC, &self.consumer.leases).await?;
        metrics::counter!(telemetry::FENCED_COMMITS_TOTAL).increment(1);
        if !self.in_group {
            return Err(SpeedError::Fenced { consumer: self.consumer_name.clone(), partitions: lost });
        }
        tracing::warn!(consumer = %self.consumer_name, partitions = ?lost,
            "partitions claimed by another instance: dropping their uncommitted windows");
        if lost.is_empty() {
            // The leases moved and came back between the commit and this look: retry next time.
            return Ok(());
        }
        self.release(&lost);
        Box::pin(self.commit(store)).await
    }
}
