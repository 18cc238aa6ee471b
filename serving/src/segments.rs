//! Reading batch-view segments for answers: footers and decoded row groups are cached, since a
//! segment never changes once written (a new version writes new files).
//!
//! Memory is bounded whatever clients ask: decoded row groups are kept up to a row budget and
//! evicted oldest first; a row group holds at most [`prism_core::segment::ROW_GROUP_ROWS`] rows.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use object_store::path::Path as ObjectPath;
use prism_core::objects::ObjectLocation;
use prism_core::segment::{SegmentError, SegmentFile};
use prism_core::view::{View, ViewRow};

/// Footers kept (each a few KB).
const MAX_FOOTERS: usize = 4_096;

type CachedRows = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
struct Cache {
    footers: HashMap<String, Arc<SegmentFile>>,
    footer_order: VecDeque<String>,
    groups: HashMap<(String, usize), (CachedRows, usize)>,
    group_order: VecDeque<(String, usize)>,
    rows_held: usize,
}

/// The segment store serving reads from, with its caches. Cheap to clone.
#[derive(Clone)]
pub struct SegmentReader {
    location: ObjectLocation,
    cache: Arc<Mutex<Cache>>,
    max_rows: usize,
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader").field("location", &self.location.url()).field("max_rows", &self.max_rows).finish()
    }
}

impl SegmentReader {
    /// Reads segments under `location` (the master dataset's root), caching up to `max_rows`
    /// decoded rows.
    pub fn new(location: ObjectLocation, max_rows: usize) -> Self {
        SegmentReader { location, cache: Arc::new(Mutex::new(Cache::default())), max_rows }
    }

    /// Where the segments are.
    pub fn location(&self) -> &ObjectLocation {
        &self.location
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn footer(&self, path: &str) -> Result<Arc<SegmentFile>, SegmentError> {
        if let Some(f) = self.lock().footers.get(path) {
            return Ok(f.clone());
        }
        let file = Arc::new(SegmentFile::open(&self.location, &ObjectPath::from(path)).await?);
        let mut cache = self.lock();
        cache.footers.insert(path.to_string(), file.clone());
        cache.footer_order.push_back(path.to_string());
        while cache.footer_order.len() > MAX_FOOTERS {
            if let Some(old) = cache.footer_order.pop_front() {
                cache.footers.remove(&old);
            }
        }
        Ok(file)
    }

    async fn row_group<V: View>(
        &self,
        view: &V,
        file: &SegmentFile,
        path: &str,
        index: usize,
    ) -> Result<Arc<Vec<ViewRow<V::Agg>>>, SegmentError> {
        let id = (path.to_string(), index);
        if let Some((rows, _)) = self.lock().groups.get(&id) {
            if let Ok(rows) = rows.clone().downcast::<Vec<ViewRow<V::Agg>>>() {
                return Ok(rows);
            }
        }
        let rows = Arc::new(file.read_row_group(&self.location, view, index).await?);
        let n = rows.len();
        let mut cache = self.lock();
        if n <= self.max_rows && !cache.groups.contains_key(&id) {
            cache.groups.insert(id.clone(), (rows.clone() as CachedRows, n));
            cache.group_order.push_back(id);
            cache.rows_held += n;
            while cache.rows_held > self.max_rows {
                let Some(old) = cache.group_order.pop_front() else { break };
                if let Some((_, m)) = cache.groups.remove(&old) {
                    cache.rows_held -= m;
                }
            }
        }
        Ok(rows)
    }

    /// Rows of `view` at `interval_ms` for `key` with window start in `[from_ms, to_ms)` from the
    /// segment at `path`, ascending by window start; at most `max_rows` of them (the earliest).
    ///
    /// Errors: [`SegmentError`] when the segment cannot be read.
    #[allow(clippy::too_many_arguments)]
    pub async fn rows<V: View>(
        &self,
        view: &V,
        path: &str,
        interval_ms: i64,
        key: &str,
        from_ms: i64,
        to_ms: i64,
        max_rows: usize,
    ) -> Result<Vec<ViewRow<V::Agg>>, SegmentError> {
        let file = self.footer(path).await?;
        let mut out = Vec::new();
        for (i, rg) in file.row_groups.iter().enumerate() {
            if out.len() >= max_rows {
                break;
            }
            if !rg.may_hold(interval_ms, Some(key), from_ms, to_ms) {
                continue;
            }
            let rows = self.row_group(view, &file, path, i).await?;
            // Sorted by (key, window start): find the key's rows without scanning the group.
            let start = rows.partition_point(|r| (r.key.as_str(), r.window_start_ms) < (key, from_ms));
            out.extend(rows[start..].iter().take_while(|r| r.key == key && r.window_start_ms < to_ms).take(max_rows - out.len()).cloned());
        }
        Ok(out)
    }

    /// Every key of `view` in the segment at `path` (from its rows at the view's longest
    /// interval).
    ///
    /// Errors: [`SegmentError`] when the segment cannot be read.
    pub async fn keys<V: View>(&self, view: &V, path: &str) -> Result<Vec<String>, SegmentError> {
        let file = self.footer(path).await?;
        let longest = view.intervals_ms().last().copied().unwrap_or(view.window_ms());
        let mut keys = Vec::new();
        for (i, rg) in file.row_groups.iter().enumerate() {
            if rg.interval_ms == longest {
                for r in self.row_group(view, &file, path, i).await?.iter() {
                    if keys.last() != Some(&r.key) {
                        keys.push(r.key.clone());
                    }
                }
            }
        }
        Ok(keys)
    }
}
