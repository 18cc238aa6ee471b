//! Building one chunk's batch-view segment from the master dataset: every committed event of
//! the chunk before its covered-until instant, folded into base windows with the view's own
//! monoid, rolled up to every interval the view serves, written as one immutable segment.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use prism_core::segment::{segment_path, SegmentMeta, SegmentWriter};
use prism_core::store::SegmentRecord;
use prism_core::view::{for_each_interval, EntitySeq, Monoid, ViewRow};
use prism_core::window::window_start;

use crate::chunks::Chunk;
use crate::master::{MasterDataset, MasterFile};
use crate::views::BatchView;
use crate::BatchError;

/// Master-dataset files of one chunk fetched, decoded and folded at once.
const FOLDS_IN_FLIGHT: usize = 2;

/// One chunk to build: which files, up to which instant.
#[derive(Debug, Clone)]
pub struct ChunkBuild {
    /// The chunk.
    pub chunk: Chunk,
    /// Events before this instant are aggregated: min(chunk end, H), UTC ms.
    pub covered_until_ms: i64,
    /// The committed master-dataset files of the chunk.
    pub files: Vec<MasterFile>,
    /// What it is built from ([`crate::chunks::ChunkInputs::encode`]).
    pub inputs: String,
}

/// A built (or carried-over) segment and what building it read.
#[derive(Debug, Clone)]
pub struct BuiltSegment {
    /// Its manifest entry.
    pub record: SegmentRecord,
    /// Master-dataset files read (0 when carried over).
    pub files_read: u64,
}

/// The base windows of a chunk's keys, as a fold builds them: per key, windows in the order
/// events arrived, an event of the same window as the one before merged into it. Master-dataset
/// files hold a key's events in log order (a key lives in one partition), which is close to
/// event-time order, so the windows need little sorting and no per-window hashing.
struct KeyedWindows<A> {
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    keys: Vec<(String, Vec<(i64, A)>)>,
    events: i64,
    /// Views over an at-least-once change stream: each distinct change (entity, sequence) once,
    /// with its (key, window start, contribution); a redelivered change is an exact repeat in
    /// the same window, so in the same chunk.
    changes: HashMap<(String, EntitySeq), (String, i64, A), foldhash::fast::RandomState>,
}

impl<A: Monoid> KeyedWindows<A> {
    fn new() -> Self {
        KeyedWindows { index: HashMap::default(), keys: Vec::new(), events: 0, changes: HashMap::default() }
    }

    fn windows_of(&mut self, key: &str) -> &mut Vec<(i64, A)> {
        let slot = match self.index.get(key) {
            Some(&slot) => slot,
            None => {
                self.index.insert(key.to_string(), self.keys.len());
                self.keys.push((key.to_string(), Vec::new()));
                self.keys.len() - 1
            }
        };
        &mut self.keys[slot].1
    }

    /// Adds one event's contribution to window `start` of `key`.
    fn add(&mut self, key: &str, start: i64, contribution: A) {
        let windows = self.windows_of(key);
        match windows.last_mut() {
            Some((last, agg)) if *last == start => agg.merge_from(&contribution),
            _ => windows.push((start, contribution)),
        }
        self.events += 1;
    }

    /// Appends another fold's windows (of later files) after these.
    /// Records one change (the first of its redeliveries counts).
    fn add_change(&mut self, entity: &str, seq: EntitySeq, key: &str, start: i64, contribution: A) {
        self.changes.entry((entity.to_string(), seq)).or_insert_with(|| (key.to_string(), start, contribution));
    }

    fn absorb(&mut self, other: KeyedWindows<A>) {
        for (id, change) in other.changes {
            self.changes.entry(id).or_insert(change);
        }
        self.events += other.events;
        for (key, windows) in other.keys {
            self.windows_of(&key).extend(windows);
        }
    }

    /// The base rows, sorted by (key, window start), each window merged once.
    fn into_rows(mut self) -> Vec<ViewRow<A>> {
        for (_, (key, start, contribution)) in std::mem::take(&mut self.changes) {
            self.add(&key, start, contribution);
        }
        let mut keys = self.keys;
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut rows: Vec<ViewRow<A>> = Vec::with_capacity(keys.iter().map(|(_, w)| w.len()).sum());
        for (key, mut windows) in keys {
            if !windows.is_sorted_by_key(|(start, _)| *start) {
                // Stable and run-aware: a few late events cost a few merges, not a full sort.
                windows.sort_by_key(|(start, _)| *start);
            }
            let first = rows.len();
            for (window_start_ms, agg) in windows {
                let own = rows.len() > first;
                match rows.last_mut() {
                    Some(ViewRow { window_start_ms: last, agg: held, .. }) if own && *last == window_start_ms => held.merge_from(&agg),
                    _ => rows.push(ViewRow { key: key.clone(), window_start_ms, agg }),
                }
            }
        }
        rows
    }
}

/// Builds and writes the segment of `build` for batch version `version`. Runs on a blocking
/// thread: it waits for the dataset's I/O on `runtime`, and files are decoded and folded
/// [`FOLDS_IN_FLIGHT`] at a time on blocking threads of their own, their folds appended in file
/// order.
///
/// Errors: [`BatchError`] when a file cannot be read or the segment cannot be written.
pub fn build_chunk<V>(
    view: &Arc<V>,
    master: &MasterDataset,
    runtime: &tokio::runtime::Handle,
    version: i64,
    build: &ChunkBuild,
) -> Result<BuiltSegment, BatchError>
where
    V: BatchView,
{
    let base_ms = view.window_ms();
    let (chunk_start, covered_until) = (build.chunk.start_ms, build.covered_until_ms);
    let mut folds = futures_util::stream::iter(build.files.iter().cloned())
        .map(|file| {
            let (master, view) = (master.clone(), view.clone());
            runtime.spawn(async move {
                master
                    .fold_file(&file, KeyedWindows::new(), move |acc, record: &V::Record, pos| {
                        // A record the view refuses is dead-lettered by the speed layer: skipped.
                        let _ = view.with_event(record, |event| {
                            let ts = view.event_time(event);
                            if ts < covered_until && ts >= chunk_start {
                                let (key, start) = (view.key(event), window_start(ts, base_ms));
                                match view.entity_change(event) {
                                    Some(change) => acc.add_change(change.entity, change.seq, key, start, view.contribution(event, pos)),
                                    None => acc.add(key, start, view.contribution(event, pos)),
                                }
                            }
                        });
                    })
                    .await
            })
        })
        .buffered(FOLDS_IN_FLIGHT);
    let mut windows = KeyedWindows::new();
    while let Some(joined) = runtime.block_on(folds.next()) {
        windows.absorb(joined.map_err(|e| BatchError::Task(format!("folding a master-dataset file: {e}")))??);
    }
    drop(folds);
    let changes = windows.changes.len() as i64;
    let events = windows.events + changes;
    let base = windows.into_rows();
    let meta = SegmentMeta::for_chunk(&**view, &build.chunk, build.covered_until_ms);
    // Interval by interval, each rolled up from the previous one where intervals nest.
    let mut writer = SegmentWriter::new(view.as_ref(), &meta)?;
    let mut rows = 0i64;
    for_each_interval(view.intervals_ms(), base, |interval_ms, interval_rows| {
        rows += interval_rows.len() as i64;
        writer.write_interval(interval_ms, interval_rows)
    })?;
    let bytes = writer.finish()?;
    let path = segment_path(view.name(), &build.chunk, version);
    runtime.block_on(master.location().put_atomic(&path, bytes.into()))?;
    Ok(BuiltSegment {
        record: SegmentRecord {
            chunk_start_ms: build.chunk.start_ms,
            chunk_end_ms: build.chunk.end_ms,
            covered_until_ms: build.covered_until_ms,
            path: path.to_string(),
            rows,
            events,
            inputs: build.inputs.clone(),
        },
        files_read: build.files.len() as u64,
    })
}
