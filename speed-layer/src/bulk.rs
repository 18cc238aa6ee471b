//! Bulk catch-up of a fresh Kappa realtime version (a replay from offset 0; DESIGN §6): the
//! history is folded in memory and written straight to segments, instead of going window by
//! window through the realtime store and back out through the hand-off.
//!
//! The streaming path writes every window to the view store, pre-rolled at every interval, and
//! the hand-off reads the finalized ones back, writes segments and deletes them again: on the
//! lab's one trade per minute that is several store rows written, read and deleted per event,
//! which bounds a replay to tens of thousands of events/s. A fresh version has nothing stored,
//! so [`bulk_catch_up`] instead
//! 1. snapshots the log end offsets E and reads every partition up to E in batches, always from
//!    the partition furthest behind in event time (so the partitions advance together and memory
//!    holds about one year of windows), folding each event into its base window in memory with
//!    the view's code (parse, key, event time, contribution, monoid);
//! 2. writes a closed year's segment as soon as the finalized watermark (as the hand-off
//!    computes it: min over the partitions that hold events of max event time − allowed
//!    lateness) passes the year's end, and drops its windows from memory — an event for a
//!    window already written is late beyond the allowed lateness and is skipped, as the
//!    streaming path skips events behind the segment horizon;
//! 3. at E, takes the segment horizon H = the finalized watermark rounded down to the view's
//!    largest interval, writes the remaining chunks before H, and publishes them as the
//!    version's hand-off manifest with horizon H ([`ViewStore::publish_handoff`]);
//! 4. then commits the windows from H on (pre-rolled at every interval) with offsets E, in one
//!    store transaction ([`ViewStore::commit_realtime`]), exactly what the streaming speed layer
//!    would hold there; it resumes from E.
//!
//! Crash safety follows from the order: a crash before 3 leaves nothing published (the written
//! files are unreferenced and expire); a crash between 3 and 4 leaves a manifest and no offsets,
//! so the streaming speed layer reads from offset 0 and skips every event behind H. The bulk
//! path runs only for a version with no offsets and no hand-off yet.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prism_core::chunk::Chunk;
use prism_core::config::speed_consumer;
use prism_core::consumer::StoreConsumer;
use prism_core::event::{LogPosition, DLQ_TOPIC};
use prism_core::log::EventLog;
use prism_core::segment::{segment_path, SegmentMeta};
use prism_core::store::{ConsumerOffset, EntityWrites, RealtimeRow, SegmentRecord, ViewStore};
use prism_core::view::{roll_up, EntitySeq, Monoid, View, ViewRow};
use prism_core::window::window_start;

use crate::handoff::{build_segment, watermark_of, HandoffConfig, HandoffError};
use crate::telemetry;

/// Records read from one partition per turn.
const BATCH: usize = 5_000;

/// What a bulk catch-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkReport {
    /// Events read (every partition up to the snapshot).
    pub events: i64,
    /// Events skipped: malformed (sent to the dead-letter topic), redelivered changes, or late
    /// beyond a segment already written.
    pub skipped: i64,
    /// The segment horizon published; `None` when nothing was final.
    pub segment_horizon_ms: Option<i64>,
    /// Segments written.
    pub segments: usize,
    /// Realtime rows committed (every interval).
    pub realtime_rows: usize,
}

/// The open base windows: per key, its partition and its windows sorted by start (one hash
/// lookup of the borrowed key per event; a key is allocated once).
///
/// A sorted vector per key, not a map: a key's events come in about event-time order, so a new
/// window is a push at the end and a window being filled is the last one ([`fold_into`]). On
/// the lab, where nearly every trade opens its own minute, a B-tree insert per event was a
/// third of the fold. A closed year leaves from the front, in order, and the vector keeps its
/// capacity for the next year (a hash table per key held a year of minutes at twice its rows).
type Windows<A> = foldhash::HashMap<String, (i32, KeyWindows<A>)>;

/// One key's open windows: (window start UTC ms, aggregate), sorted by start.
type KeyWindows<A> = Vec<(i64, A)>;

/// Folds `contribution` into the window starting at `start` of `by_start` (sorted by start,
/// one entry per window): into the last window, as a new last window, or — for an event
/// behind its key's latest window — into or before the window a binary search finds, which
/// moves the windows after it (few, for events late by less than the allowed lateness).
fn fold_into<A: Monoid>(by_start: &mut KeyWindows<A>, start: i64, contribution: A) {
    match by_start.last_mut() {
        Some((last, agg)) if *last == start => agg.merge_from(&contribution),
        Some((last, _)) if *last > start => match by_start.binary_search_by_key(&start, |(s, _)| *s) {
            Ok(i) => by_start[i].1.merge_from(&contribution),
            Err(i) => by_start.insert(i, (start, contribution)),
        },
        _ => by_start.push((start, contribution)),
    }
}

/// Catches version `config.realtime_version` of `view` up to the log's current end in bulk (see
/// the module docs), when it is fresh (no committed offsets, no hand-off) and the log holds
/// events; `Ok(None)` otherwise.
/// `done` counts the events read, for progress reports. When `cancel` fires, it stops between
/// two reads and returns `Ok(None)` having committed nothing (the written files are unreferenced
/// and expire); it never drops a store transaction half-way.
///
/// Errors: [`HandoffError`] when the log, the store or the segment store fails; nothing is
/// committed then, and the streaming path starts from what was published.
pub async fn bulk_catch_up<V: View, L: EventLog>(
    view: &Arc<V>,
    config: &HandoffConfig,
    instance_id: &str,
    log: &L,
    store: &ViewStore,
    done: &AtomicI64,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Option<BulkReport>, HandoffError> {
    let rv = config.realtime_version;
    let topic = view.source_topic();
    let consumer = speed_consumer(view.name(), rv);
    if !store.consumer_offsets(&consumer, topic).await?.is_empty() || store.handoff_state(view.name(), rv).await?.segment_version.is_some()
    {
        return Ok(None);
    }
    let started = Instant::now();
    let ends = log.end_offsets(topic).await?;
    if ends.iter().all(|e| *e == 0) {
        // Nothing to catch up on: the streaming path starts at once.
        return Ok(None);
    }
    let (base_ms, lateness) = (view.window_ms(), view.allowed_lateness_ms());
    let largest = view.intervals_ms().last().copied().unwrap_or(base_ms);
    let version = store.begin_batch_version(view.name(), &view.fingerprint()).await?;
    let mut next = vec![0i64; ends.len()];
    let mut max_ts: Vec<Option<i64>> = vec![None; ends.len()];
    let mut windows: Windows<V::Agg> = Windows::default();
    let mut written: Vec<SegmentRecord> = Vec::new();
    let mut writes = Writes::new();
    // Windows before this were written to segments; later events for them are late.
    let mut written_until = i64::MIN;
    let (mut events, mut skipped) = (0i64, 0i64);
    let mut dead = Vec::new();
    // Views over an at-least-once change stream: the last sequence per entity (an entity's
    // changes are on one partition, read in order) and what to store of them.
    let mut seen: foldhash::HashMap<String, EntitySeq> = foldhash::HashMap::default();
    let mut entities = EntityWrites::default();
    // Each turn reads the partition furthest behind in event time (one not read yet first), so
    // the partitions advance together and memory holds about the windows of the open year.
    while let Some(p) = (0..ends.len()).filter(|p| next[*p] < ends[*p]).min_by_key(|p| max_ts[*p].unwrap_or(i64::MIN)) {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let end = &ends[p];
        let partition = p as i32;
        let want = BATCH.min((*end - next[p]) as usize);
        let records = log.read(topic, partition, next[p], want, std::time::Duration::from_millis(100)).await?;
        for r in records.iter().take_while(|r| r.offset < *end) {
            next[p] = r.offset + 1;
            events += 1;
            let event = match view.parse_record(Some(&r.key), &r.value) {
                Ok(event) => event,
                Err(e) => {
                    // As the streaming path: to the dead-letter topic with the reason.
                    skipped += 1;
                    dead.push(crate::dead_letter(&**view, r, &e));
                    continue;
                }
            };
            let ts = view.event_time(&event);
            max_ts[p] = Some(max_ts[p].map_or(ts, |m| m.max(ts)));
            if let Some(change) = view.entity_change(&event) {
                if seen.get(change.entity).is_some_and(|last| change.seq <= *last) {
                    // A redelivery: applied already.
                    skipped += 1;
                    continue;
                }
                seen.insert(change.entity.to_string(), change.seq);
                entities.record(&change, partition);
            }
            let start = window_start(ts, base_ms);
            if start < written_until {
                skipped += 1;
                continue;
            }
            let contribution = view.contribution(&event, LogPosition { partition, offset: r.offset });
            let key = view.key(&event);
            let by_start = match windows.get_mut(key) {
                Some((_, w)) => w,
                None => &mut windows.entry(key.to_string()).or_insert_with(|| (partition, Vec::new())).1,
            };
            fold_into(by_start, start, contribution);
        }
        done.store(events, Ordering::Relaxed);
        // The embedded log's read returns at once, so without this the fold would hold its
        // runtime worker for the whole replay, and a request queued behind it would wait.
        tokio::task::yield_now().await;
        // Closed years behind the finalized watermark leave memory as segments.
        let watermark = watermark_of(&ends, &next, &max_ts, lateness);
        if let Some(year) = watermark.and_then(|w| Chunk::year_start(window_start(w, largest))) {
            if year > written_until {
                write_chunks(view, config, version, &mut windows, (year, year), &mut writes, &mut written).await?;
                written_until = year;
            }
        }
        if !dead.is_empty() {
            log.append(DLQ_TOPIC, std::mem::take(&mut dead)).await?;
        }
    }
    let horizon = watermark_of(&ends, &next, &max_ts, lateness).map(|w| window_start(w, largest)).filter(|h| *h > written_until);
    if let Some(h) = horizon {
        write_chunks(view, config, version, &mut windows, (h, h), &mut writes, &mut written).await?;
    }
    while let Some(done) = writes.join_next().await {
        written.push(done.map_err(|e| HandoffError::Task(e.to_string()))??);
    }
    let segment_horizon = horizon.or((written_until > i64::MIN).then_some(written_until));
    if let Some(h) = segment_horizon.filter(|_| !written.is_empty()) {
        written.sort_by_key(|s| s.chunk_start_ms);
        store.publish_handoff(view.name(), rv, version, h, &written, None).await?;
    }
    // The open windows, pre-rolled, with the offsets they cover.
    let mut rows = Vec::new();
    for (key, (partition, by_start)) in windows {
        let base: Vec<ViewRow<V::Agg>> =
            by_start.into_iter().map(|(start, agg)| ViewRow { key: key.clone(), window_start_ms: start, agg }).collect();
        for &interval_ms in &view.intervals_ms()[1..] {
            rows.extend(roll_up(&base, interval_ms).into_iter().map(|row| RealtimeRow { interval_ms, partition, row }));
        }
        rows.extend(base.into_iter().map(|row| RealtimeRow { interval_ms: base_ms, partition, row }));
    }
    let partitions: Vec<i32> = (0..ends.len() as i32).collect();
    let claimed = StoreConsumer::claim(store, &consumer, topic, &partitions, instance_id).await?;
    let offsets: Vec<ConsumerOffset> = partitions
        .iter()
        .map(|&p| ConsumerOffset { partition: p, next_offset: next[p as usize], max_event_ts_ms: max_ts[p as usize] })
        .collect();
    let committing = Instant::now();
    store.commit_realtime(&**view, &consumer, rv, &rows, &offsets, &claimed.leases, None, &entities.take_sorted()).await?;
    let commit_ms = committing.elapsed().as_millis() as u64;
    let report = BulkReport { events, skipped, segment_horizon_ms: segment_horizon, segments: written.len(), realtime_rows: rows.len() };
    metrics::counter!(telemetry::BULK_EVENTS_TOTAL, "view" => view.name().to_string()).increment(events as u64);
    tracing::info!(view = %view.name(), version = rv, events, skipped, segments = report.segments, realtime_rows = report.realtime_rows,
        horizon = ?segment_horizon.map(prism_core::time::format_rfc3339), elapsed_ms = started.elapsed().as_millis() as u64,
        realtime_commit_ms = commit_ms, "bulk catch-up: history folded into segments");
    Ok(Some(report))
}

/// Segment writes in flight while reading goes on.
type Writes = tokio::task::JoinSet<Result<SegmentRecord, HandoffError>>;

/// At most this many segment writes run beside the reading (each holds a chunk's rows: about
/// 130 MB for a year of the lab). Encoding a year's segment takes about three times as long
/// as reading and folding that year (the lab: 0.45 s against 0.17 s), so with one write in
/// flight the reading waited for the writer most of the time; two keep both cores busy
/// (lab replay 6.1–7.4 s → 3.8–4.0 s, peak RSS 0.37 → 0.51 GB).
const WRITES_IN_FLIGHT: usize = 2;

/// Takes every window starting before `until` out of `windows` and writes its chunk's segment
/// (chunks as the horizon `horizon` gives them, each covering up to `until`) in a task of
/// `writes`; finished writes' records go to `written`.
///
/// Memory: the earlier writes are waited for (down to [`WRITES_IN_FLIGHT`] − 1) before the
/// windows are taken, so that at most [`WRITES_IN_FLIGHT`] chunks' rows exist at once besides
/// the open windows, and each chunk's rows are allocated at their exact count.
async fn write_chunks<V: View>(
    view: &Arc<V>,
    config: &HandoffConfig,
    version: i64,
    windows: &mut Windows<V::Agg>,
    (until, horizon): (i64, i64),
    writes: &mut Writes,
    written: &mut Vec<SegmentRecord>,
) -> Result<(), HandoffError> {
    while writes.len() >= WRITES_IN_FLIGHT {
        if let Some(done) = writes.join_next().await {
            written.push(done.map_err(|e| HandoffError::Task(e.to_string()))??);
        }
    }
    // Keys in order, so that each chunk's rows come out sorted by (key, window start), as the
    // segment wants them.
    let mut keys: Vec<(&str, &mut KeyWindows<V::Agg>)> = windows.iter_mut().map(|(key, (_, by_start))| (key.as_str(), by_start)).collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    // Count each chunk's rows first (a chunk is a run of a key's sorted windows: one
    // `Chunk::of` and a binary search per key and chunk), to allocate them at their exact count.
    let mut counts: BTreeMap<Chunk, usize> = BTreeMap::new();
    for (_, by_start) in &keys {
        let mut closed = &by_start[..by_start.partition_point(|(start, _)| *start < until)];
        while let Some(&(first, _)) = closed.first() {
            let n = match Chunk::of(first, horizon) {
                Some(chunk) => {
                    let n = closed.partition_point(|(start, _)| *start < chunk.end_ms);
                    *counts.entry(chunk).or_default() += n;
                    n
                }
                None => 1,
            };
            closed = &closed[n..];
        }
    }
    let mut by_chunk: BTreeMap<Chunk, Vec<ViewRow<V::Agg>>> = counts.into_iter().map(|(c, n)| (c, Vec::with_capacity(n))).collect();
    for (key, by_start) in keys {
        let cut = by_start.partition_point(|(start, _)| *start < until);
        let mut current: Option<(Chunk, &mut Vec<ViewRow<V::Agg>>)> = None;
        for (start, agg) in by_start.drain(..cut) {
            if current.as_ref().is_none_or(|(c, _)| start >= c.end_ms) {
                current = Chunk::of(start, horizon).and_then(|c| by_chunk.get_mut(&c).map(|rows| (c, rows)));
            }
            if let Some((_, rows)) = current.as_mut() {
                rows.push(ViewRow { key: key.to_string(), window_start_ms: start, agg });
            }
        }
    }
    for (chunk, base) in by_chunk {
        while writes.len() >= WRITES_IN_FLIGHT {
            if let Some(done) = writes.join_next().await {
                written.push(done.map_err(|e| HandoffError::Task(e.to_string()))??);
            }
        }
        let (view, location) = (view.clone(), config.location.clone());
        writes.spawn(write_chunk(view, location, version, chunk, until, base));
    }
    Ok(())
}

/// Writes one chunk's segment from its base rows; its manifest record.
async fn write_chunk<V: View>(
    view: Arc<V>,
    location: prism_core::objects::ObjectLocation,
    version: i64,
    chunk: Chunk,
    until: i64,
    mut base: Vec<ViewRow<V::Agg>>,
) -> Result<SegmentRecord, HandoffError> {
    let events = base.iter().map(|r| view.events_in(&r.agg)).sum::<i64>();
    let meta = SegmentMeta::for_chunk(&*view, &chunk, until);
    let task_view = view.clone();
    // At low priority: a request to serving gets a core first (prism_core::background).
    let (bytes, rows) = prism_core::background::run_at_low_priority("prism-replay-segment", move || {
        // Written in key order already; sorted here only if that ever changes.
        let order =
            |a: &ViewRow<V::Agg>, b: &ViewRow<V::Agg>| (a.key.as_str(), a.window_start_ms).cmp(&(b.key.as_str(), b.window_start_ms));
        if !base.is_sorted_by(|a, b| order(a, b).is_le()) {
            base.sort_by(order);
        }
        build_segment(&*task_view, &meta, base, |_| Ok(Vec::new()))
    })
    .await
    .map_err(|e| HandoffError::Task(e.to_string()))??;
    let path = segment_path(view.name(), &chunk, version);
    location.put_atomic(&path, bytes.into()).await?;
    Ok(SegmentRecord {
        chunk_start_ms: chunk.start_ms,
        chunk_end_ms: chunk.end_ms,
        covered_until_ms: until.min(chunk.end_ms),
        path: path.to_string(),
        rows,
        events,
        inputs: "replay".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Sum(i64);

    impl Monoid for Sum {
        fn empty() -> Self {
            Sum(0)
        }
        fn merge(&self, other: &Self) -> Self {
            Sum(self.0 + other.0)
        }
    }

    proptest! {
        /// Whatever the order of the events, the windows are those of a map from start to sum:
        /// sorted by start, one per start.
        #[test]
        fn folds_like_an_ordered_map(events in proptest::collection::vec((0i64..40, 1i64..100), 0..200)) {
            let mut windows = Vec::new();
            let mut reference = BTreeMap::new();
            for (start, value) in events {
                fold_into(&mut windows, start, Sum(value));
                *reference.entry(start).or_insert(0) += value;
            }
            let expected: Vec<(i64, Sum)> = reference.into_iter().map(|(s, v)| (s, Sum(v))).collect();
            prop_assert_eq!(windows, expected);
        }
    }
}
