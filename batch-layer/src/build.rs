//! Building one chunk's batch-view segment from the master dataset: every committed event of
//! the chunk before its covered-until instant, folded into base windows with the view's own
//! monoid, rolled up to every interval the view serves, written as one immutable segment.

use std::collections::HashMap;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use prism_core::event::Quote;
use prism_core::segment::{SegmentMeta, SegmentWriter};
use prism_core::store::SegmentRecord;
use prism_core::view::{roll_up, Monoid, View, ViewRow};
use prism_core::window::window_start;

use crate::chunks::Chunk;
use crate::master::{MasterDataset, MasterFile};
use crate::BatchError;

/// Master-dataset files fetched and decoded ahead of the one being folded.
const DECODE_AHEAD: usize = 2;

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

/// Where a segment of `view` for `chunk`, built by batch version `version`, is stored.
pub fn segment_path(view: &str, chunk: &Chunk, version: i64) -> ObjectPath {
    ObjectPath::from(format!("segments/{view}/{}/v{version}.parquet", chunk.label()))
}

/// Builds and writes the segment of `build` for batch version `version`. Runs on a blocking
/// thread: it waits for the dataset's I/O on `runtime`.
///
/// Errors: [`BatchError`] when a file cannot be read or the segment cannot be written.
pub fn build_chunk<V>(
    view: &V,
    master: &MasterDataset,
    runtime: &tokio::runtime::Handle,
    version: i64,
    build: &ChunkBuild,
) -> Result<BuiltSegment, BatchError>
where
    V: View<Event = Quote>,
{
    let base_ms = view.window_ms();
    let mut windows: HashMap<String, HashMap<i64, V::Agg>> = HashMap::new();
    let mut events = 0i64;
    // A two-stage pipeline: the next files are fetched and decoded by tasks of their own while
    // this thread folds the current one.
    let mut decoded = futures_util::stream::iter(build.files.iter().cloned())
        .map(|file| {
            let master = master.clone();
            runtime.spawn(async move { master.read_file(&file).await })
        })
        .buffered(DECODE_AHEAD);
    while let Some(joined) = runtime.block_on(decoded.next()) {
        let rows = joined.map_err(|e| BatchError::Task(format!("decoding a master-dataset file: {e}")))??;
        for row in rows {
            let ts = view.event_time(&row.quote);
            if ts >= build.covered_until_ms || ts < build.chunk.start_ms {
                continue;
            }
            let contribution = view.contribution(&row.quote, row.pos);
            let key = view.key(&row.quote);
            let by_start = match windows.get_mut(key) {
                Some(w) => w,
                None => windows.entry(key.to_string()).or_default(),
            };
            let start = window_start(ts, base_ms);
            by_start.entry(start).and_modify(|a| *a = a.merge(&contribution)).or_insert(contribution);
            events += 1;
        }
    }
    drop(decoded);
    // Sorted by (key, window start): keys once, then each key's windows by their start.
    let mut keys: Vec<(String, HashMap<i64, V::Agg>)> = windows.into_iter().collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut base: Vec<ViewRow<V::Agg>> = Vec::with_capacity(keys.iter().map(|(_, w)| w.len()).sum());
    for (key, by_start) in keys {
        let mut starts: Vec<(i64, V::Agg)> = by_start.into_iter().collect();
        starts.sort_unstable_by_key(|(start, _)| *start);
        base.extend(starts.into_iter().map(|(window_start_ms, agg)| ViewRow { key: key.clone(), window_start_ms, agg }));
    }
    let meta = SegmentMeta {
        view: view.name().to_string(),
        fingerprint: view.fingerprint(),
        chunk_start_ms: build.chunk.start_ms,
        chunk_end_ms: build.chunk.end_ms,
        covered_until_ms: build.covered_until_ms,
    };
    // Interval by interval: each one is written, rolled up into the next (from the previous
    // interval when each divides the next, 1m → 5m → 15m → 1h → 1d, else from the base rows),
    // and dropped, so at most two intervals' rows are held at once.
    let mut writer = SegmentWriter::new(view, &meta)?;
    writer.write_interval(base_ms, &base)?;
    let mut rows = base.len() as i64;
    if view.intervals_ms().windows(2).all(|w| w[1] % w[0] == 0) {
        let mut finer = base;
        for &interval_ms in &view.intervals_ms()[1..] {
            let rolled = roll_up(&finer, interval_ms);
            writer.write_interval(interval_ms, &rolled)?;
            rows += rolled.len() as i64;
            finer = rolled;
        }
    } else {
        for &interval_ms in &view.intervals_ms()[1..] {
            let rolled = roll_up(&base, interval_ms);
            writer.write_interval(interval_ms, &rolled)?;
            rows += rolled.len() as i64;
        }
    }
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
