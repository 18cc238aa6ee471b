//! Prism speed layer: the event log → realtime views (DESIGN §5).
//!
//! Generic over the [`View`]: one consumer per view and realtime version
//! (`speed-layer.<view>.v<N>`) reads every partition of the view's source topic from the
//! offsets stored **in the view store**, folds each event into its base window (update mode: a
//! window changes with every event), and commits the changed rows — pre-rolled at every interval
//! the view serves ([`window_cache`]) — together with the consumed offsets in one store
//! transaction every commit interval. After a crash it resumes from those offsets, so each event
//! counts exactly once.
//!
//! Malformed records go to `prism.dlq` with the reason. Late events (behind their partition's
//! watermark) are still applied and counted in metrics; in Lambda mode the batch job corrects
//! them anyway. The reported realtime watermark is the max event time over all partitions −
//! allowed lateness (DESIGN §4).
//! Realtime windows older than the published batch horizon are deleted once a batch version
//! covers them, and in Lambda mode an event whose base window starts before the published
//! horizon H is not folded at all: serving reads such windows from the batch view only (DESIGN
//! §5: realtime rows are read from H on, and H never moves back), so a speed layer catching up
//! on history it is behind the batch layer on skips it instead of building rows to delete.
//!
//! Scale-out: [`run_speed_layer_in_group`] runs one of several instances that split the
//! partitions through a Kafka consumer group. On revoke it commits and releases its partitions;
//! on assign it claims their leases in the view store (fencing any former owner) and resumes
//! from their stored offsets and windows. [`run_speed_layer`] owns every partition.

pub mod bulk;
mod commit;
mod group;
pub mod handoff;
pub mod telemetry;
pub mod versions;
pub mod window_cache;

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, HashMap};

use prism_core::config::{speed_consumer, Architecture};
use prism_core::consumer::StoreConsumer;
use prism_core::event::{DeadLetter, LogPosition, DLQ_TOPIC};
use prism_core::log::kafka_group::GroupMembership;
use prism_core::log::{EventLog, LogError, LogRecord};
use prism_core::store::{EntityWrites, RealtimeRow, StoreError, ViewStore};
use prism_core::time::now_ms;
use prism_core::view::{EntitySeq, View};
use prism_core::window::{window_start, Watermark};
use tokio_util::sync::CancellationToken;
use window_cache::{cache_floor, WindowCache};

/// A commit is also taken once this many base windows changed since the last one, whatever
/// `commit_max_events` says: it bounds the rows of one store transaction (and the memory they
/// take) when every event opens a window of its own (the lab's one trade a minute).
const COMMIT_MAX_DIRTY_WINDOWS: usize = 20_000;

/// How often the speed layer reports its consumer lag.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of the speed layer.
#[derive(Debug, Clone)]
pub struct SpeedConfig {
    /// Realtime view version this instance builds.
    pub view_version: i64,
    /// Commit at least this often while events flow.
    pub commit_interval: Duration,
    /// Commit after this many events even before the interval.
    pub commit_max_events: usize,
    /// Partitions of the view's source topic if the speed layer has to create it.
    pub partitions: i32,
    /// Which segment horizon the speed layer drops realtime windows behind and skips events
    /// behind.
    pub horizon: HorizonSource,
    /// This instance's name in partition leases (`/v1/status` shows it as the owner).
    pub instance_id: String,
    /// Commit (which renews the partition leases) at least this often, even when idle.
    pub lease_renew_interval: Duration,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        SpeedConfig {
            view_version: 1,
            commit_interval: Duration::from_millis(100),
            commit_max_events: 100_000,
            partitions: 4,
            horizon: HorizonSource::BatchHorizon,
            instance_id: format!("speed-layer-{}", std::process::id()),
            lease_renew_interval: Duration::from_secs(2),
        }
    }
}

/// The speed layer's flags (each with a `PRISM_*` environment fallback), flattened into
/// `prism up` and `prism speed-layer`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpeedArgs {
    /// Commit (realtime rows and offsets, in one transaction) at least this often while events
    /// flow.
    #[arg(long, env = "PRISM_COMMIT_INTERVAL", default_value = "100ms", value_parser = prism_core::config::parse_duration)]
    pub commit_interval: Duration,
    /// Commit after this many events even before the interval.
    #[arg(long, env = "PRISM_COMMIT_MAX_EVENTS", default_value_t = 100_000)]
    pub commit_max_events: usize,
}

impl SpeedArgs {
    /// The speed layer's settings for these flags, `partitions` of the source topic and the
    /// deployment's `architecture`; the rest at [`SpeedConfig::default`].
    pub fn config(&self, partitions: i32, architecture: Architecture) -> SpeedConfig {
        SpeedConfig {
            commit_interval: self.commit_interval,
            commit_max_events: self.commit_max_events.max(1),
            partitions,
            horizon: match architecture {
                Architecture::Lambda => HorizonSource::BatchHorizon,
                Architecture::Kappa => HorizonSource::Handoff,
            },
            ..SpeedConfig::default()
        }
    }
}

/// Where the speed layer reads the segment horizon H: realtime windows whose buckets end at or
/// before H are dropped (segments serve them) and events whose base window starts before H are
/// skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HorizonSource {
    /// Lambda: the published batch horizon (the view pointer).
    BatchHorizon,
    /// Kappa: this realtime version's hand-off horizon ([`handoff`]).
    Handoff,
    /// Never drop or skip (a speed layer measured alone).
    None,
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
    /// A commit's task panicked or was cancelled.
    #[error("the speed layer's commit task failed: {0}")]
    CommitTask(String),
    /// A standalone instance found its partitions claimed by another instance.
    #[error(
        "partitions {partitions:?} of {consumer} were claimed by another instance; run several speed layers only as one consumer group"
    )]
    Fenced {
        /// Consumer name.
        consumer: String,
        /// Partitions lost.
        partitions: Vec<i32>,
    },
}

/// The speed layer's state between commits.
struct SpeedState<V: View> {
    view: Arc<V>,
    consumer_name: String,
    config: SpeedConfig,
    consumer: StoreConsumer,
    /// One window cache per owned partition.
    caches: BTreeMap<i32, WindowCache<V::Agg>>,
    /// Views tracking entities ([`View::tracks_entities`]): per owned partition, the last
    /// sequence applied per entity (committed or pending).
    seen: BTreeMap<i32, HashMap<String, EntitySeq>>,
    /// Entity writes since the last commit.
    entities: EntityWrites,
    /// Append time (UTC ms) of the oldest record applied since the last commit.
    oldest_uncommitted_ms: Option<i64>,
    /// Partitions come from a consumer group (a lost lease is then routine, not an error).
    in_group: bool,
    events_since_commit: usize,
    dropped_through_ms: Option<i64>,
    wrote_behind_horizon: bool,
    /// The published batch horizon last read (Lambda mode): base windows before it are skipped.
    skip_before_ms: Option<i64>,
    /// Last successful commit (which renewed the leases).
    last_renewal: Instant,
    /// Last change of the owned partitions.
    assigned_at: Instant,
    /// The commit running, if any ([`commit`]).
    inflight: Option<commit::InFlight<V::Agg>>,
    /// Rows of a refused commit, sent again with the next one.
    carry: Vec<RealtimeRow<V::Agg>>,
    /// The last commit's row buffer, emptied, for the next one.
    spare_rows: Vec<RealtimeRow<V::Agg>>,
}

/// Runs the speed layer of `view` on every partition of its source topic until `cancel` fires,
/// then commits what it holds and returns.
///
/// Errors: [`SpeedError`] when the log or the store fails, or [`SpeedError::Fenced`] when
/// another instance claims its partitions.
pub async fn run_speed_layer<V: View, L: EventLog>(
    view: Arc<V>,
    config: SpeedConfig,
    log: Arc<L>,
    store: ViewStore,
    cancel: CancellationToken,
) -> Result<(), SpeedError> {
    run(view, config, log, store, None, cancel).await
}

/// Runs one speed-layer instance of `view` in a consumer group (`membership`, joined with group
/// id [`speed_consumer`]`(view, version)`): it consumes only the partitions the group assigns
/// it. Leaves the group on return.
///
/// Errors: [`SpeedError`] when the log or the store fails.
pub async fn run_speed_layer_in_group<V: View, L: EventLog>(
    view: Arc<V>,
    config: SpeedConfig,
    log: Arc<L>,
    store: ViewStore,
    membership: GroupMembership,
    cancel: CancellationToken,
) -> Result<(), SpeedError> {
    run(view, config, log, store, Some(membership), cancel).await
}

async fn run<V: View, L: EventLog>(
    view: Arc<V>,
    config: SpeedConfig,
    log: Arc<L>,
    store: ViewStore,
    mut membership: Option<GroupMembership>,
    cancel: CancellationToken,
) -> Result<(), SpeedError> {
    telemetry::describe();
    let topic = view.source_topic();
    let partitions = log.ensure_topic(topic, config.partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let mut state = SpeedState::new(view, config, membership.is_some());
    if membership.is_none() {
        state.assign(&(0..partitions).collect::<Vec<_>>(), &store).await?;
    }
    tracing::info!(consumer = %state.consumer_name, instance = %state.config.instance_id, partitions,
        group = membership.is_some(), "speed layer starting");
    let mut last_commit = Instant::now();
    let mut last_orphan_check = Instant::now();
    let mut last_lag_report = Instant::now();
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
            // the windows it covers), or at once when enough events or changed windows are
            // waiting. A commit runs while the next events are folded; at the interval a running
            // commit is not waited for (the next one takes what came meanwhile: group commit),
            // at the bounds it is.
            let full = state.events_since_commit >= state.config.commit_max_events
                || state.caches.values().map(WindowCache::dirty_windows).sum::<usize>() >= COMMIT_MAX_DIRTY_WINDOWS;
            let running = state.inflight.as_ref().is_some_and(|f| !f.is_done());
            if full || (last_commit.elapsed() >= state.config.commit_interval && !running) {
                state.finish_commit(&store).await?;
                state.start_commit(&store).await?;
                last_commit = Instant::now();
            }
            if last_lag_report.elapsed() >= LAG_REPORT_INTERVAL {
                last_lag_report = Instant::now();
                state.report_lag(&*log).await?;
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

impl<V: View> SpeedState<V> {
    fn new(view: Arc<V>, config: SpeedConfig, in_group: bool) -> Self {
        SpeedState {
            consumer_name: speed_consumer(view.name(), config.view_version),
            consumer: StoreConsumer::new(view.source_topic()),
            view,
            config,
            caches: BTreeMap::new(),
            seen: BTreeMap::new(),
            entities: EntityWrites::default(),
            oldest_uncommitted_ms: None,
            in_group,
            events_since_commit: 0,
            dropped_through_ms: None,
            wrote_behind_horizon: false,
            skip_before_ms: None,
            last_renewal: Instant::now(),
            assigned_at: Instant::now(),
            inflight: None,
            carry: Vec::new(),
            spare_rows: Vec::new(),
        }
    }

    fn topic(&self) -> &str {
        self.view.source_topic()
    }

    /// Takes `partitions` (the whole assignment): claims their leases, then resumes from their
    /// stored offsets and warms each partition's window cache from its floors on.
    async fn assign(&mut self, partitions: &[i32], store: &ViewStore) -> Result<(), SpeedError> {
        if !self.consumer.offsets.is_empty() {
            // An assignment without a revoke first (not expected of the eager protocol): keep
            // what was done, then start over from the store.
            self.commit(store).await?;
            let owned = self.consumer.partitions();
            self.release(&owned);
        }
        self.consumer = StoreConsumer::claim(store, &self.consumer_name, self.topic(), partitions, &self.config.instance_id).await?;
        let lateness = self.view.allowed_lateness_ms();
        let intervals = self.view.intervals_ms().to_vec();
        self.caches.clear();
        self.seen.clear();
        self.entities.clear();
        for o in self.consumer.offsets.clone() {
            if self.view.tracks_entities() {
                let seen = store.entity_sequences(&*self.view, self.config.view_version, o.partition).await?;
                self.seen.insert(o.partition, seen);
            }
            // A partition that never saw an event has nothing stored; the others need their rows
            // from each interval's floor on.
            let floors: Vec<Option<i64>> = intervals.iter().map(|i| o.max_event_ts_ms.map(|m| cache_floor(m, lateness, *i))).collect();
            let mut rows = Vec::new();
            for (interval, floor) in intervals.iter().zip(&floors) {
                let Some(floor) = floor else { continue };
                let stored =
                    store.realtime_rows_of_partition_at(&*self.view, self.config.view_version, o.partition, *interval, *floor).await?;
                rows.extend(stored.into_iter().map(|r| (r.interval_ms, r.row)));
            }
            self.caches.insert(o.partition, WindowCache::new(&intervals, rows, floors));
        }
        self.events_since_commit = 0;
        self.assigned_at = Instant::now();
        metrics::gauge!(telemetry::ASSIGNED_PARTITIONS, "view" => self.view.name().to_string()).set(self.caches.len() as f64);
        tracing::info!(consumer = %self.consumer_name, partitions = ?self.consumer.partitions(),
            offsets = ?self.consumer.next_offsets(), "speed layer owns partitions");
        Ok(())
    }

    /// Sets `prism_speed_consumer_lag_events{view, partition}`: the log end offset minus the
    /// next offset to read, per owned partition.
    async fn report_lag<L: EventLog>(&self, log: &L) -> Result<(), SpeedError> {
        let ends = log.end_offsets(self.topic()).await?;
        for o in &self.consumer.offsets {
            let end = usize::try_from(o.partition).ok().and_then(|p| ends.get(p)).copied().unwrap_or(0);
            let next = o.next_offset;
            metrics::gauge!(telemetry::CONSUMER_LAG_EVENTS, "view" => self.view.name().to_string(), "partition" => o.partition.to_string())
                .set((end - next).max(0) as f64);
        }
        Ok(())
    }

    /// Forgets `partitions` and their uncommitted windows.
    fn release(&mut self, partitions: &[i32]) {
        self.consumer.release(partitions);
        self.carry.retain(|r| !partitions.contains(&r.partition));
        self.caches.retain(|p, _| !partitions.contains(p));
        self.seen.retain(|p, _| !partitions.contains(p));
        self.entities.forget(partitions);
        self.assigned_at = Instant::now();
        metrics::gauge!(telemetry::ASSIGNED_PARTITIONS, "view" => self.view.name().to_string()).set(self.caches.len() as f64);
    }

    async fn apply<L: EventLog>(&mut self, records: &[LogRecord], log: &L, store: &ViewStore) -> Result<(), SpeedError> {
        let view = self.view.clone();
        let (base_ms, lateness) = (view.window_ms(), view.allowed_lateness_ms());
        let mut dead = Vec::new();
        let mut late = 0u64;
        let mut behind_horizon = 0u64;
        let mut duplicates = 0u64;
        if let Some(first) = records.iter().map(|r| r.timestamp_ms).min() {
            self.oldest_uncommitted_ms = Some(self.oldest_uncommitted_ms.map_or(first, |o| o.min(first)));
        }
        for r in records {
            let pos = LogPosition { partition: r.partition, offset: r.offset };
            match view.parse_record(Some(&r.key), &r.value) {
                Ok(event) => {
                    if let Some(change) = view.entity_change(&event) {
                        let seen = self.seen.entry(r.partition).or_default();
                        if seen.get(change.entity).is_some_and(|last| change.seq <= *last) {
                            // A redelivery (at-least-once source): applied already.
                            duplicates += 1;
                            self.consumer.advance(r, Some(view.event_time(&event)));
                            self.events_since_commit += 1;
                            continue;
                        }
                        seen.insert(change.entity.to_string(), change.seq);
                        self.entities.record(&change, r.partition);
                    }
                    let ts = view.event_time(&event);
                    // Late = behind its own partition's progress (stream time per partition, as
                    // in Kafka Streams); partitions advance at their own pace.
                    let partition_max = self.consumer.index_of(r.partition).and_then(|i| self.consumer.offsets[i].max_event_ts_ms);
                    if Watermark::new(partition_max, lateness).is_late(ts) {
                        late += 1;
                    }
                    let (key, start) = (view.key(&event), window_start(ts, base_ms));
                    if self.skip_before_ms.is_some_and(|h| start < h) {
                        behind_horizon += 1;
                        self.consumer.advance(r, Some(ts));
                        self.events_since_commit += 1;
                        continue;
                    }
                    let Some(cache) = self.caches.get_mut(&r.partition) else {
                        return Err(SpeedError::Log(LogError::OutOfRange(format!(
                            "record from partition {}, which this instance does not own ({:?})",
                            r.partition,
                            self.consumer.partitions()
                        ))));
                    };
                    let contribution = view.contribution(&event, pos);
                    if !cache.try_apply(key, start, &contribution) {
                        // Older than the cache's floor and not held: the store has the window.
                        let stored = store.realtime_row(&*view, self.config.view_version, base_ms, key, start, r.partition).await?;
                        cache.load_base(key, start, stored);
                        cache.apply(key, start, &contribution);
                    }
                    self.consumer.advance(r, Some(ts));
                }
                Err(e) => {
                    dead.push(dead_letter(&*view, r, &e));
                    self.consumer.advance(r, None);
                }
            }
            self.events_since_commit += 1;
        }
        let name = view.name().to_string();
        metrics::counter!(telemetry::EVENTS_TOTAL, "view" => name.clone()).increment(records.len() as u64);
        if late > 0 {
            metrics::counter!(telemetry::LATE_EVENTS_TOTAL, "view" => name.clone()).increment(late);
        }
        if behind_horizon > 0 {
            metrics::counter!(telemetry::BEHIND_HORIZON_EVENTS_TOTAL, "view" => name.clone()).increment(behind_horizon);
        }
        if duplicates > 0 {
            metrics::counter!(telemetry::DUPLICATE_EVENTS_TOTAL, "view" => name).increment(duplicates);
        }
        if !dead.is_empty() {
            log.append(DLQ_TOPIC, dead).await?;
        }
        Ok(())
    }
}

/// The dead-letter record of a malformed record `r` of `view`'s source topic (DESIGN §3: the
/// rejected bytes, `topic/partition@offset`, the reason, the time), counted in
/// `prism_speed_dead_letters_total` and logged.
pub(crate) fn dead_letter<V: View>(view: &V, r: &LogRecord, reason: &prism_core::event::EventError) -> prism_core::log::NewRecord {
    metrics::counter!(telemetry::DEAD_LETTERS_TOTAL, "view" => view.name().to_string()).increment(1);
    tracing::warn!(partition = r.partition, offset = r.offset, reason = %reason, "malformed event to the dead-letter topic");
    let letter = DeadLetter {
        source: format!("{}/{}@{}", view.source_topic(), r.partition, r.offset),
        reason: reason.to_string(),
        payload: String::from_utf8_lossy(&r.value).into_owned(),
        rejected_at_ms: now_ms(),
    };
    letter.into_record(r.key.clone())
}
