//! The Kappa hand-off (DESIGN §6; Druid's realtime hand-off): finalized windows of a realtime
//! version become immutable segments, written by the stream job instead of a batch job, so a
//! query over years reads a handful of segments while the realtime store holds only the open
//! windows.
//!
//! A pass ([`handoff_once`]):
//! 1. takes the **finalized watermark** W = min over the partitions that hold events of
//!    (partition's max event time − allowed lateness), from the offsets the speed layer committed
//!    with its rows; a partition that holds events none of which were read yet holds W back
//!    entirely (no pass), and an empty partition is idle and ignored (Flink's idle sources); the
//!    new segment horizon is W rounded down to the view's largest interval (a UTC day for
//!    `ohlcv`), so every bucket before it, at every interval, is complete;
//! 2. rebuilds each [`Chunk`] that gains finalized windows, or whose chunk changes (the months
//!    of a year that closed become one year chunk): its rows = the segments of the current
//!    manifest it covers + the realtime base rows of the newly finalized range rolled up to every
//!    interval, merged by the view's monoid (a bucket split across the old horizon merges its two
//!    parts);
//! 3. publishes the new manifest and horizon in one store transaction
//!    ([`ViewStore::publish_handoff`]); the speed layer then drops the realtime rows behind the
//!    horizon and skips events behind it (late beyond the allowed lateness: counted in
//!    `prism_speed_behind_horizon_events_total`, not applied — Kappa has no batch layer to
//!    correct them);
//! 4. expires manifests retired longer than the grace period and deletes segment files no
//!    manifest lists.
//!
//! After a switch from Lambda the first pass starts from the published batch version (same
//! view definition), carrying its segments over. One hand-off runs per view.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::chunk::Chunk;
use prism_core::config::speed_consumer;
use prism_core::log::{EventLog, LogError};
use prism_core::objects::{ObjectError, ObjectLocation};
use prism_core::segment::{segment_path, SegmentError, SegmentFile, SegmentMeta, SegmentWriter, ROW_GROUP_ROWS};
use prism_core::store::{SegmentRecord, StoreError, ViewStore};
use prism_core::time::now_ms;
use prism_core::view::{for_each_interval, Monoid, View, ViewRow};
use prism_core::window::window_start;
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// Settings of the hand-off.
#[derive(Debug, Clone)]
pub struct HandoffConfig {
    /// The realtime version whose windows are handed off.
    pub realtime_version: i64,
    /// Time between passes.
    pub interval: Duration,
    /// How long a retired manifest's segments stay readable (longer than any query).
    pub grace: Duration,
    /// Where segments are written (`segments/<view>/…` under it): a local folder or S3.
    pub location: ObjectLocation,
}

/// The hand-off's flags (each with a `PRISM_*` environment fallback), flattened into
/// `prism up` and `prism speed-layer`; used in Kappa mode only.
#[derive(Debug, Clone, clap::Args)]
pub struct HandoffArgs {
    /// Kappa mode: time between hand-offs of finalized windows to segments.
    #[arg(long, env = "PRISM_HANDOFF_INTERVAL", default_value = "5s", value_parser = prism_core::config::parse_duration)]
    pub handoff_interval: Duration,
}

impl HandoffArgs {
    /// The hand-off's settings for realtime version 1, writing segments under `location`.
    pub fn config(&self, location: ObjectLocation) -> HandoffConfig {
        HandoffConfig { realtime_version: 1, interval: self.handoff_interval, grace: Duration::from_secs(600), location }
    }
}

/// Errors of a hand-off pass.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The view store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A segment could not be read or written.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The segment store failed.
    #[error(transparent)]
    Objects(#[from] ObjectError),
    /// The event log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Claiming the version's partitions (bulk catch-up) failed.
    #[error(transparent)]
    Consumer(#[from] prism_core::consumer::ConsumerError),
    /// A blocking task failed.
    #[error("hand-off task: {0}")]
    Task(String),
}

/// What one pass published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffReport {
    /// The manifest published (a version number shared with batch versions).
    pub segment_version: i64,
    /// The new segment horizon, UTC ms.
    pub segment_horizon_ms: i64,
    /// Segments written.
    pub segments_built: usize,
    /// Segments carried over from the previous manifest.
    pub segments_carried: usize,
    /// Realtime base rows handed off.
    pub rows_handed_off: usize,
}

/// How often an idle hand-off (no pass published) expires retired manifests and their files
/// (or every grace period, if shorter).
const IDLE_EXPIRY_EVERY: Duration = Duration::from_secs(30);

/// Runs a hand-off pass of `view` every `config.interval` until `cancel` fires. A failed pass is
/// logged and retried at the next tick (nothing of it is published). A pass that publishes
/// expires what outlived the grace period; while none does, that is done every
/// [`IDLE_EXPIRY_EVERY`], so that a replayed view's old segments go without new events.
///
/// Errors: none so far; the signature leaves room for persistent failures.
pub async fn run_handoff<V: View, L: EventLog>(
    view: Arc<V>,
    config: HandoffConfig,
    store: ViewStore,
    log: Arc<L>,
    cancel: CancellationToken,
) -> Result<(), HandoffError> {
    telemetry::describe();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expired_at = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let pass = handoff_once(&view, &config, &store, &*log).await;
        if matches!(pass, Ok(Some(_))) {
            expired_at = started;
        } else if expired_at.elapsed() >= IDLE_EXPIRY_EVERY.min(config.grace) {
            // Nothing new was final: retired manifests (a replay's predecessor) still expire.
            expired_at = started;
            if let Err(e) = expire(view.name(), &config, &store).await {
                tracing::warn!(view = %view.name(), error = %e, "expiring retired segment versions failed; retrying later");
            }
        }
        match pass {
            Ok(Some(r)) => {
                metrics::counter!(telemetry::HANDOFFS_TOTAL, "view" => view.name().to_string()).increment(1);
                metrics::gauge!(telemetry::SEGMENT_HORIZON_MS, "view" => view.name().to_string()).set(r.segment_horizon_ms as f64);
                tracing::info!(view = %view.name(), version = r.segment_version, horizon = %prism_core::time::format_rfc3339(r.segment_horizon_ms),
                    built = r.segments_built, carried = r.segments_carried, rows = r.rows_handed_off,
                    elapsed_ms = started.elapsed().as_millis() as u64, "finalized windows handed off to segments");
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!(telemetry::HANDOFF_FAILURES_TOTAL, "view" => view.name().to_string()).increment(1);
                tracing::warn!(view = %view.name(), error = %e, "hand-off failed; retrying at the next interval");
            }
        }
    }
}

/// The finalized watermark of realtime version `version` of `view`: min over the partitions of
/// its source topic that hold events of (max event time read − allowed lateness), UTC ms. `None`
/// before any event was read, and while a partition holds events of which none was read yet
/// (its event time is unknown: it could be far behind the others). Empty partitions are idle
/// and ignored.
///
/// Errors: [`HandoffError`] when the store or the log cannot be read.
pub async fn finalized_watermark<V: View, L: EventLog>(
    view: &V,
    version: i64,
    store: &ViewStore,
    log: &L,
) -> Result<Option<i64>, HandoffError> {
    // The log ends first: a partition empty then and written later is idle for this pass.
    let ends = log.end_offsets(view.source_topic()).await?;
    let offsets = store.consumer_offsets(&speed_consumer(view.name(), version), view.source_topic()).await?;
    let read = |p: usize| offsets.iter().find(|o| o.partition == p as i32).map_or((0, None), |o| (o.next_offset, o.max_event_ts_ms));
    let (next, max_ts): (Vec<i64>, Vec<Option<i64>>) = (0..ends.len()).map(read).unzip();
    Ok(watermark_of(&ends, &next, &max_ts, view.allowed_lateness_ms()))
}

/// The finalized-watermark rule on its inputs, indexed by partition: the log end offsets, the
/// next offset to read and the max event time read (UTC ms). Min over the partitions that hold
/// events of (max event time − `allowed_lateness_ms`); `None` while one holds events none of
/// which was read, or before any was; empty partitions are ignored.
pub(crate) fn watermark_of(ends: &[i64], next: &[i64], max_ts: &[Option<i64>], allowed_lateness_ms: i64) -> Option<i64> {
    let mut min: Option<i64> = None;
    for (p, end) in ends.iter().enumerate() {
        match max_ts.get(p).copied().flatten() {
            Some(m) => min = Some(min.map_or(m, |x| x.min(m))),
            None if *end > next.get(p).copied().unwrap_or(0) => return None,
            None => {}
        }
    }
    min.map(|m| m.saturating_sub(allowed_lateness_ms))
}

/// One hand-off pass (see the module docs); `None` when nothing new is final.
///
/// Errors: [`HandoffError`]; nothing is published then.
pub async fn handoff_once<V: View, L: EventLog>(
    view: &Arc<V>,
    config: &HandoffConfig,
    store: &ViewStore,
    log: &L,
) -> Result<Option<HandoffReport>, HandoffError> {
    let rv = config.realtime_version;
    let Some(watermark) = finalized_watermark(&**view, rv, store, log).await? else { return Ok(None) };
    let largest = view.intervals_ms().last().copied().unwrap_or(view.window_ms());
    let target = window_start(watermark, largest);
    let state = store.handoff_state(view.name(), rv).await?;
    if state.segment_horizon_ms.is_some_and(|h| h >= target) {
        return Ok(None);
    }
    let base_ms = view.window_ms();
    let from = match state.segment_horizon_ms {
        Some(h) => h,
        None => match store.earliest_realtime_window(&**view, rv, base_ms).await? {
            Some(first) if first < target => first,
            _ => return Ok(None),
        },
    };
    let manifest = match state.segment_version {
        Some(v) => store.batch_segments(view.name(), v).await?,
        None => Vec::new(),
    };
    // Chunks to build: those gaining windows in [from, target), and those whose chunk changed
    // under the new horizon (a closed year's months).
    let mut chunks = BTreeSet::new();
    let mut t = from;
    while t < target {
        let Some(c) = Chunk::of(t, target) else { break };
        chunks.insert(c);
        t = c.end_ms;
    }
    for s in &manifest {
        if let Some(c) = Chunk::of(s.chunk_start_ms, target) {
            if (c.start_ms, c.end_ms) != (s.chunk_start_ms, s.chunk_end_ms) {
                chunks.insert(c);
            }
        }
    }
    let version = store.begin_batch_version(view.name(), &view.fingerprint()).await?;
    let overlaps = |s: &SegmentRecord, c: &Chunk| s.chunk_start_ms < c.end_ms && s.chunk_end_ms > c.start_ms;
    let mut segments: Vec<SegmentRecord> = manifest.iter().filter(|s| !chunks.iter().any(|c| overlaps(s, c))).cloned().collect();
    let carried = segments.len();
    let mut handed_off = 0usize;
    for chunk in &chunks {
        let old: Vec<&SegmentRecord> = manifest.iter().filter(|s| overlaps(s, chunk)).collect();
        let (lo, hi) = (from.max(chunk.start_ms), target.min(chunk.end_ms));
        let base = if lo < hi { store.realtime_rows_between(&**view, rv, base_ms, lo, hi).await? } else { Vec::new() };
        handed_off += base.len();
        // Each old segment's footer is read once; its rows interval by interval.
        let mut old_files = Vec::with_capacity(old.len());
        for s in &old {
            old_files.push(SegmentFile::open(&config.location, &s.path.as_str().into()).await?);
        }
        let meta = SegmentMeta::for_chunk(&**view, chunk, target);
        let events = old.iter().map(|s| s.events).sum::<i64>() + base.iter().map(|r| view.events_in(&r.agg)).sum::<i64>();
        let (task_view, location, runtime, span) = (view.clone(), config.location.clone(), tokio::runtime::Handle::current(), *chunk);
        // The old rows are read an interval at a time as the build needs them (on this blocking
        // thread, through the runtime): a year of them at every interval at once held 160 MB.
        // At low priority: a request to serving gets a core first (prism_core::background).
        let (bytes, rows) = prism_core::background::run_at_low_priority("prism-handoff-segment", move || {
            build_segment(&*task_view, &meta, base, |interval| {
                runtime.block_on(async {
                    let mut rows = Vec::new();
                    for file in &old_files {
                        rows.extend(file.read_rows(&location, &*task_view, interval, None, span.start_ms, span.end_ms).await?);
                    }
                    Ok(rows)
                })
            })
        })
        .await
        .map_err(|e| HandoffError::Task(e.to_string()))??;
        let path = segment_path(view.name(), chunk, version);
        config.location.put_atomic(&path, bytes.into()).await?;
        segments.push(SegmentRecord {
            chunk_start_ms: chunk.start_ms,
            chunk_end_ms: chunk.end_ms,
            covered_until_ms: target.min(chunk.end_ms),
            path: path.to_string(),
            rows,
            events,
            inputs: "handoff".into(),
        });
    }
    segments.sort_by_key(|s| s.chunk_start_ms);
    store.publish_handoff(view.name(), rv, version, target, &segments, state.segment_version).await?;
    expire(view.name(), config, store).await?;
    Ok(Some(HandoffReport {
        segment_version: version,
        segment_horizon_ms: target,
        segments_built: chunks.len(),
        segments_carried: carried,
        rows_handed_off: handed_off,
    }))
}

/// Writes one chunk's segment: at each interval (ascending), `old(interval)` (the rows the
/// chunk's earlier segments hold at that interval, in any order) merged with `base` (the newly
/// finalized base rows, sorted by key and window start) rolled up to it. Returns the file and
/// its row count.
///
/// Memory: one interval's old rows at a time, and the merge streams into the writer a row
/// group at a time, so a year chunk of the lab (half a million base rows) is held about twice
/// (base and its old rows), not four times.
///
/// Errors: what `old` returns; [`SegmentError::Format`] from the writer.
pub(crate) fn build_segment<V: View>(
    view: &V,
    meta: &SegmentMeta,
    base: Vec<ViewRow<V::Agg>>,
    mut old: impl FnMut(i64) -> Result<Vec<ViewRow<V::Agg>>, SegmentError>,
) -> Result<(Vec<u8>, i64), SegmentError> {
    let mut writer = SegmentWriter::new(view, meta)?;
    let mut total = 0i64;
    let mut group = Vec::with_capacity(ROW_GROUP_ROWS);
    // Each interval's new rows rolled up as the batch job rolls them (`for_each_interval`).
    for_each_interval(view.intervals_ms(), base, |interval, rows| -> Result<(), SegmentError> {
        let old_rows = sorted_unique(old(interval)?);
        total += write_merged(&mut writer, interval, rows, old_rows, &mut group)?;
        Ok(())
    })?;
    Ok((writer.finish()?, total))
}

/// Rows sorted by (key, window start) with one row per window (rows of a window that several
/// old segments hold are merged by the monoid).
fn sorted_unique<A: Monoid>(mut rows: Vec<ViewRow<A>>) -> Vec<ViewRow<A>> {
    fn id<A>(r: &ViewRow<A>) -> (&str, i64) {
        (r.key.as_str(), r.window_start_ms)
    }
    if rows.is_sorted_by(|a, b| id(a) < id(b)) {
        return rows;
    }
    rows.sort_by(|a, b| id(a).cmp(&id(b)));
    rows.dedup_by(|next, kept| {
        let same = id(next) == id(kept);
        if same {
            kept.agg.merge_from(&next.agg);
        }
        same
    });
    rows
}

/// Writes `new` (sorted, one row per window) merged with `old` (the same) at `interval`, a row
/// group at a time through `group`; the rows written.
fn write_merged<V: View>(
    writer: &mut SegmentWriter<'_, V>,
    interval: i64,
    new: &[ViewRow<V::Agg>],
    old: Vec<ViewRow<V::Agg>>,
    group: &mut Vec<ViewRow<V::Agg>>,
) -> Result<i64, SegmentError> {
    if old.is_empty() {
        writer.write_interval(interval, new)?;
        return Ok(new.len() as i64);
    }
    let mut written = 0i64;
    let (mut new, mut old) = (new.iter().peekable(), old.into_iter().peekable());
    group.clear();
    loop {
        let row = match (new.peek(), old.peek()) {
            (None, None) => break,
            (Some(_), None) => new.next().cloned(),
            (None, Some(_)) => old.next(),
            (Some(a), Some(b)) => match (a.key.as_str(), a.window_start_ms).cmp(&(b.key.as_str(), b.window_start_ms)) {
                std::cmp::Ordering::Less => new.next().cloned(),
                std::cmp::Ordering::Greater => old.next(),
                std::cmp::Ordering::Equal => {
                    let (a, b) = (new.next(), old.next());
                    a.map(|a| {
                        let mut row = a.clone();
                        if let Some(b) = b {
                            row.agg.merge_from(&b.agg);
                        }
                        row
                    })
                }
            },
        };
        group.extend(row);
        if group.len() == ROW_GROUP_ROWS {
            writer.write_interval(interval, group)?;
            written += group.len() as i64;
            group.clear();
        }
    }
    if !group.is_empty() {
        writer.write_interval(interval, group)?;
        written += group.len() as i64;
        group.clear();
    }
    Ok(written)
}

/// Expires manifests retired longer than the grace period and deletes segment files of the view
/// no manifest lists that are older than the grace period (leftovers of a pass that never
/// published). The age matters: during a replay two hand-offs of one view run, and a file the
/// other one has written but not yet published is young and unlisted.
async fn expire(view: &str, config: &HandoffConfig, store: &ViewStore) -> Result<(), HandoffError> {
    let cutoff = now_ms() - config.grace.as_millis() as i64;
    store.expire_batch_versions(view, cutoff).await?;
    let referenced: HashSet<String> = store.referenced_segment_paths(view).await?.into_iter().collect();
    for meta in config.location.list(&format!("segments/{view}")).await? {
        if !referenced.contains(meta.location.as_ref()) && meta.last_modified.timestamp_millis() < cutoff {
            config.location.delete(&meta.location).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_core::consumer::StoreConsumer;
    use prism_core::event::QUOTES_TOPIC;
    use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
    use prism_core::log::NewRecord;
    use prism_core::store::ConsumerOffset;
    use prism_core::view::ohlcv::OhlcvView;

    /// With no new final window (here: no event at all), the hand-off still expires a retired
    /// manifest after its grace and deletes the files only it listed.
    #[tokio::test]
    async fn an_idle_hand_off_still_expires_retired_manifests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log"));
        log.ensure_topic(QUOTES_TOPIC, 1).await.expect("topic");
        let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
        let location = ObjectLocation::local(&dir.path().join("master")).expect("location");
        let view = Arc::new(OhlcvView::standard(5_000));
        let record = |path: &str| SegmentRecord {
            chunk_start_ms: 0,
            chunk_end_ms: 86_400_000,
            covered_until_ms: 86_400_000,
            path: path.into(),
            rows: 1,
            events: 1,
            inputs: "handoff".into(),
        };
        let (old, new) = ("segments/ohlcv/a/v1.parquet", "segments/ohlcv/a/v2.parquet");
        for (path, previous) in [(old, None), (new, Some(1))] {
            location.put_atomic(&path.into(), b"x".to_vec().into()).await.expect("put");
            let version = store.begin_batch_version("ohlcv", &view.fingerprint()).await.expect("begin");
            store.publish_handoff("ohlcv", 1, version, 86_400_000, &[record(path)], previous).await.expect("publish");
        }
        let config =
            HandoffConfig { realtime_version: 1, interval: Duration::from_millis(50), grace: Duration::from_millis(500), location };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_handoff(view.clone(), config.clone(), store.clone(), log.clone(), stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let present: Vec<String> =
                config.location.list("segments/ohlcv").await.expect("list").into_iter().map(|m| m.location.to_string()).collect();
            if !present.contains(&old.to_string()) {
                assert!(present.contains(&new.to_string()), "the current manifest's file is kept");
                break;
            }
            assert!(Instant::now() < deadline, "the retired manifest's file outlived its grace by 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        task.await.expect("joined").expect("stopped");
    }

    /// A partition holding events none of which was read blocks the hand-off (it could be far
    /// behind); an empty one is idle; otherwise the min over partitions − lateness.
    #[tokio::test]
    async fn unread_partitions_hold_the_finalized_watermark_back_and_empty_ones_are_idle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log");
        log.ensure_topic(QUOTES_TOPIC, 3).await.expect("topic");
        let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
        let view = OhlcvView::standard(5_000);
        let consumer = speed_consumer("ohlcv", 1);
        assert_eq!(finalized_watermark(&view, 1, &store, &log).await.expect("watermark"), None, "nothing read");

        // Keys of two partitions (of three) get events; nothing of them is read yet.
        let mut keys = Vec::new();
        for i in 0.. {
            let key = format!("K{i}");
            let p = prism_core::log::partitioner::partition_for_key(key.as_bytes(), 3);
            if !keys.iter().any(|(q, _)| *q == p) {
                keys.push((p, key));
            }
            if keys.len() == 2 {
                break;
            }
        }
        let (read_p, read_key) = keys[0].clone();
        let (unread_p, unread_key) = keys[1].clone();
        log.append(QUOTES_TOPIC, vec![NewRecord::new(read_key.as_str(), "{}"), NewRecord::new(unread_key.as_str(), "{}")])
            .await
            .expect("append");
        let claimed = StoreConsumer::claim(&store, &consumer, QUOTES_TOPIC, &[0, 1, 2], "test").await.expect("claim");
        let commit = |offsets: Vec<ConsumerOffset>| {
            let (store, view, consumer, leases) = (store.clone(), view.clone(), consumer.clone(), claimed.leases.clone());
            async move { store.commit_realtime(&view, &consumer, 1, &[], &offsets, &leases, None, &[]).await.expect("commit") }
        };
        let day = 86_400_000;
        commit(vec![ConsumerOffset { partition: read_p, next_offset: 1, max_event_ts_ms: Some(10 * day) }]).await;
        assert_eq!(
            finalized_watermark(&view, 1, &store, &log).await.expect("watermark"),
            None,
            "partition {unread_p} holds an unread event: its event time is unknown"
        );
        commit(vec![ConsumerOffset { partition: unread_p, next_offset: 1, max_event_ts_ms: Some(3 * day) }]).await;
        assert_eq!(
            finalized_watermark(&view, 1, &store, &log).await.expect("watermark"),
            Some(3 * day - 5_000),
            "the min over the partitions that hold events; the empty one is idle"
        );
    }
}
