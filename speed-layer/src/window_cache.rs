//! The speed layer's in-memory windows, one cache per partition.
//!
//! A key (symbol) always arrives on the same partition, so each partition's cache can be
//! trimmed by that partition's own progress: windows older than one window before the
//! partition's watermark are evicted (they stay in the store). Partitions advance at different
//! event-time speeds (round-robin reads, skewed keys), and a single global floor would either
//! grow without bound or push a lagging partition's every event to a store lookup.

use std::collections::{HashMap, HashSet};

use prism_core::ohlcv::{Ohlcv, OhlcvKey, OhlcvRow, OHLCV_WINDOW_MS};
use prism_core::window::window_start;

/// One partition's windows.
#[derive(Debug, Default)]
pub struct WindowCache {
    rows: HashMap<OhlcvKey, Ohlcv>,
    /// Every stored window of this partition starting at or after the floor is in `rows`.
    floor_ms: Option<i64>,
    dirty: HashSet<OhlcvKey>,
}

impl WindowCache {
    /// A cache holding `rows`, complete from `floor_ms` on (`None`: complete, nothing stored).
    pub fn new(rows: impl IntoIterator<Item = OhlcvRow>, floor_ms: Option<i64>) -> Self {
        let rows = rows
            .into_iter()
            .filter(|r| floor_ms.is_none_or(|f| r.key.window_start_ms >= f))
            .map(|r| (r.key, r.agg))
            .collect();
        WindowCache { rows, floor_ms, dirty: HashSet::new() }
    }

    /// The window's current aggregate if the cache can answer for it: `Some(EMPTY)` for a window
    /// not stored; `None` when the window is older than the floor and must be read from the store.
    pub fn get(&self, key: &OhlcvKey) -> Option<Ohlcv> {
        match self.rows.get(key) {
            Some(agg) => Some(*agg),
            None if self.floor_ms.is_some_and(|f| key.window_start_ms < f) => None,
            None => Some(Ohlcv::EMPTY),
        }
    }

    /// Sets a window's aggregate and marks it for the next commit.
    pub fn put(&mut self, key: OhlcvKey, agg: Ohlcv) {
        self.dirty.insert(key.clone());
        self.rows.insert(key, agg);
    }

    /// The changed rows since the last [`WindowCache::committed`].
    pub fn dirty_rows(&self) -> impl Iterator<Item = OhlcvRow> + '_ {
        self.dirty.iter().filter_map(|k| self.rows.get(k).map(|agg| OhlcvRow { key: k.clone(), agg: *agg }))
    }

    /// After a commit: nothing is dirty, and windows before one window ahead of the
    /// partition's watermark (`partition_max_ts_ms` − `allowed_lateness_ms`) leave memory.
    pub fn committed(&mut self, partition_max_ts_ms: Option<i64>, allowed_lateness_ms: i64) {
        self.dirty.clear();
        let Some(max) = partition_max_ts_ms else { return };
        let floor = cache_floor(max, allowed_lateness_ms);
        if self.floor_ms.is_none_or(|f| floor > f) {
            self.rows.retain(|k, _| k.window_start_ms >= floor);
            self.floor_ms = Some(floor);
        }
    }

    /// Windows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no window is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// One window before the watermark of a partition whose max event time is `max_ts_ms`.
pub fn cache_floor(max_ts_ms: i64, allowed_lateness_ms: i64) -> i64 {
    window_start(max_ts_ms - allowed_lateness_ms, OHLCV_WINDOW_MS) - OHLCV_WINDOW_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_core::decimal::Decimal6;
    use prism_core::ohlcv::EventKey;

    fn key(minute: i64) -> OhlcvKey {
        OhlcvKey { symbol: "S".into(), window_start_ms: minute * 60_000 }
    }

    #[test]
    fn answers_for_windows_from_its_floor_on() {
        let agg = Ohlcv::of_trade(EventKey { ts_ms: 0, partition: 0, offset: 0 }, Decimal6::from_units(1), 1);
        let mut c = WindowCache::new([], None);
        assert_eq!(c.get(&key(1)), Some(Ohlcv::EMPTY), "a fresh partition has nothing stored");
        c.put(key(1), agg);
        c.put(key(10), agg);
        assert_eq!(c.dirty_rows().count(), 2);
        c.committed(Some(10 * 60_000 + 30_000), 5_000);
        assert_eq!(c.dirty_rows().count(), 0);
        assert_eq!(c.len(), 1, "window 1 left memory");
        assert_eq!(c.get(&key(1)), None, "older than the floor: ask the store");
        assert_eq!(c.get(&key(9)), Some(Ohlcv::EMPTY), "window 9 is at the floor and was never stored");
        assert_eq!(c.get(&key(10)), Some(agg));
    }
}
