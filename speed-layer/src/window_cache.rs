//! The speed layer's in-memory windows of one partition, for any view.
//!
//! Every event updates its base window (update mode). The realtime view is pre-rolled: each
//! commit also folds what changed since the last commit into the row of every longer interval
//! the view serves, so that serving answers a 13-year `1d` query from daily rows, never from
//! millions of 1-minute rows.
//!
//! A base window keeps its full aggregate and the *delta* since the last commit (the merge of the
//! events applied since); a commit merges each delta into the longer intervals' rows, which the
//! cache holds too. Because merge is associative and commutative, the rolled rows equal a
//! roll-up of the base rows.
//!
//! A key always arrives on the same partition, so the cache is trimmed by that partition's own
//! progress: per interval, rows older than one bucket before the partition's watermark leave
//! memory (they stay in the store, which answers for them when a late event needs them).

use std::collections::{BTreeMap, HashMap};

use prism_core::store::RealtimeRow;
use prism_core::view::{Monoid, RowId, ViewRow};
use prism_core::window::window_start;

/// One base window.
#[derive(Debug, Clone)]
struct Base<A> {
    full: A,
    /// Merge of the events applied since the last commit; `None`: clean.
    delta: Option<A>,
}

/// One partition's windows of one view.
#[derive(Debug)]
pub struct WindowCache<A> {
    /// Every interval the view serves, shortest (the base window) first.
    intervals_ms: Vec<i64>,
    /// Base windows by key, then window start (a fast hasher: keys are looked up per event).
    base: foldhash::HashMap<String, BTreeMap<i64, Base<A>>>,
    /// Rows of the longer intervals.
    rolled: foldhash::HashMap<RowId, A>,
    /// Per interval (same order as `intervals_ms`): every stored row of this partition starting
    /// at or after the floor is in memory; `None`: nothing stored yet.
    floors_ms: Vec<Option<i64>>,
    /// A trim kept changed base windows below the base floor: trim again after the next commit.
    kept_below_floor: bool,
    /// Base windows changed since the last [`WindowCache::take_commit`].
    dirty: usize,
}

impl<A: Monoid> WindowCache<A> {
    /// A cache holding `rows` (interval ms, row), complete from `floors_ms` on (one per interval
    /// of `intervals_ms`; `None`: nothing stored).
    pub fn new(intervals_ms: &[i64], rows: impl IntoIterator<Item = (i64, ViewRow<A>)>, floors_ms: Vec<Option<i64>>) -> Self {
        let mut cache = WindowCache {
            intervals_ms: intervals_ms.to_vec(),
            base: foldhash::HashMap::default(),
            rolled: foldhash::HashMap::default(),
            floors_ms,
            kept_below_floor: false,
            dirty: 0,
        };
        for (interval_ms, row) in rows {
            let Some(i) = cache.intervals_ms.iter().position(|x| *x == interval_ms) else { continue };
            if cache.floors_ms[i].is_some_and(|f| row.window_start_ms < f) {
                continue;
            }
            if i == 0 {
                cache.base.entry(row.key).or_default().insert(row.window_start_ms, Base { full: row.agg, delta: None });
            } else {
                cache.rolled.insert(RowId { interval_ms, key: row.key, window_start_ms: row.window_start_ms }, row.agg);
            }
        }
        cache
    }

    fn base_ms(&self) -> i64 {
        self.intervals_ms[0]
    }

    /// Whether the cache can apply an event to this base window without the store: the window
    /// is held, or newer than the floor (so nothing is stored for it).
    pub fn knows_base(&self, key: &str, window_start_ms: i64) -> bool {
        self.base.get(key).is_some_and(|w| w.contains_key(&window_start_ms)) || self.floors_ms[0].is_none_or(|f| window_start_ms >= f)
    }

    /// Loads a base window read from the store (`None`: not stored) before applying to it.
    pub fn load_base(&mut self, key: &str, window_start_ms: i64, stored: Option<A>) {
        let windows = self.base.entry(key.to_string()).or_default();
        windows.entry(window_start_ms).or_insert(Base { full: stored.unwrap_or_else(A::empty), delta: None });
    }

    /// Applies one event's aggregate to its base window (call [`WindowCache::knows_base`] first
    /// and load the window when it says no).
    pub fn apply(&mut self, key: &str, window_start_ms: i64, contribution: &A) {
        let windows = match self.base.get_mut(key) {
            Some(w) => w,
            None => self.base.entry(key.to_string()).or_default(),
        };
        let entry = windows.entry(window_start_ms).or_insert_with(|| Base { full: A::empty(), delta: None });
        Self::fold(entry, contribution, &mut self.dirty);
    }

    /// [`WindowCache::knows_base`] and [`WindowCache::apply`] in one lookup (the speed layer's
    /// per-event path): applies and returns `true` when the cache knows the window, else changes
    /// nothing and returns `false` (load the window with [`WindowCache::load_base`], then apply).
    pub fn try_apply(&mut self, key: &str, window_start_ms: i64, contribution: &A) -> bool {
        let new_ok = self.floors_ms[0].is_none_or(|f| window_start_ms >= f);
        let windows = match self.base.get_mut(key) {
            Some(w) => w,
            None if new_ok => self.base.entry(key.to_string()).or_default(),
            None => return false,
        };
        let entry = match windows.entry(window_start_ms) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) if new_ok => e.insert(Base { full: A::empty(), delta: None }),
            std::collections::btree_map::Entry::Vacant(_) => return false,
        };
        Self::fold(entry, contribution, &mut self.dirty);
        true
    }

    /// Merges `contribution` into a base window and its delta, in place.
    fn fold(entry: &mut Base<A>, contribution: &A, dirty: &mut usize) {
        entry.full.merge_from(contribution);
        match &mut entry.delta {
            Some(d) => d.merge_from(contribution),
            None => {
                *dirty += 1;
                entry.delta = Some(contribution.clone());
            }
        }
    }

    /// Among `deltas` (from [`WindowCache::rolled_deltas`]), the rolled rows whose current value
    /// the cache cannot give (older than their floor and not held): read them from the store and
    /// pass them to [`WindowCache::take_commit`].
    pub fn rolled_misses(&self, deltas: &BTreeMap<RowId, A>) -> Vec<RowId> {
        let mut out = Vec::new();
        for id in deltas.keys() {
            let i = self.intervals_ms.iter().position(|x| *x == id.interval_ms).unwrap_or(0);
            if !self.rolled.contains_key(id) && self.floors_ms[i].is_some_and(|f| id.window_start_ms < f) {
                out.push(id.clone());
            }
        }
        out
    }

    /// The deltas of the longer intervals: each dirty base window's delta merged into its bucket
    /// at every longer interval. A key's windows come in time order, so consecutive windows of
    /// one bucket are merged before the bucket is looked up.
    pub fn rolled_deltas(&self) -> BTreeMap<RowId, A> {
        let mut out: BTreeMap<RowId, A> = BTreeMap::new();
        let longer = &self.intervals_ms[1..];
        let mut runs: Vec<Option<(i64, A)>> = vec![None; longer.len()];
        for (key, windows) in &self.base {
            for (start, w) in windows {
                let Some(delta) = &w.delta else { continue };
                for (run, &interval_ms) in runs.iter_mut().zip(longer) {
                    let bucket = window_start(*start, interval_ms);
                    match run {
                        Some((b, acc)) if *b == bucket => acc.merge_from(delta),
                        _ => {
                            if let Some((b, acc)) = run.replace((bucket, delta.clone())) {
                                Self::add_rolled(&mut out, interval_ms, key, b, acc);
                            }
                        }
                    }
                }
            }
            for (run, &interval_ms) in runs.iter_mut().zip(longer) {
                if let Some((b, acc)) = run.take() {
                    Self::add_rolled(&mut out, interval_ms, key, b, acc);
                }
            }
        }
        out
    }

    fn add_rolled(out: &mut BTreeMap<RowId, A>, interval_ms: i64, key: &str, window_start_ms: i64, delta: A) {
        match out.entry(RowId { interval_ms, key: key.to_string(), window_start_ms }) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge_from(&delta),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(delta);
            }
        }
    }

    /// Takes the rows the next commit writes, appending them to `out` as `partition`'s:
    /// dirty base windows, and every longer-interval row they touch (held value, or `stored`
    /// for [`WindowCache::rolled_misses`], or empty, merged with its delta from `deltas`). The
    /// cache moves on at once: the base windows are clean and the rolled rows hold their new
    /// values, so events can be applied while the commit runs. If the commit is refused, the
    /// caller sends these rows again with its next commit (each is a full value, so a newer
    /// row of the same id supersedes it).
    pub fn take_commit(&mut self, partition: i32, deltas: BTreeMap<RowId, A>, stored: &HashMap<RowId, A>, out: &mut Vec<RealtimeRow<A>>) {
        let base_ms = self.base_ms();
        self.dirty = 0;
        for (key, windows) in &mut self.base {
            for (start, w) in windows.iter_mut() {
                if w.delta.take().is_some() {
                    let row = ViewRow { key: key.clone(), window_start_ms: *start, agg: w.full.clone() };
                    out.push(RealtimeRow { interval_ms: base_ms, partition, row });
                }
            }
        }
        for (id, delta) in deltas {
            let current = self.rolled.get(&id).or_else(|| stored.get(&id)).cloned().unwrap_or_else(A::empty);
            let agg = current.merge(&delta);
            let row = ViewRow { key: id.key.clone(), window_start_ms: id.window_start_ms, agg: agg.clone() };
            out.push(RealtimeRow { interval_ms: id.interval_ms, partition, row });
            self.rolled.insert(id, agg);
        }
    }

    /// Base windows changed since the last commit was taken (each is a row to write, and
    /// memory held until then).
    pub fn dirty_windows(&self) -> usize {
        self.dirty
    }

    /// After a commit succeeded: per interval, the rows older than one bucket before the
    /// partition's watermark (`partition_max_ts_ms` − `allowed_lateness_ms`) leave memory,
    /// but for base windows changed since (late events applied while the commit ran): the store
    /// now answers for what left. Call it only once no commit is running, so that the store
    /// holds every row that leaves.
    pub fn committed(&mut self, partition_max_ts_ms: Option<i64>, allowed_lateness_ms: i64) {
        let Some(max) = partition_max_ts_ms else { return };
        for (i, &interval_ms) in self.intervals_ms.iter().enumerate() {
            let floor = cache_floor(max, allowed_lateness_ms, interval_ms);
            let retrim = i == 0 && self.kept_below_floor;
            if self.floors_ms[i].is_some_and(|f| floor <= f) && !retrim {
                continue;
            }
            let floor = self.floors_ms[i].map_or(floor, |f| f.max(floor));
            self.floors_ms[i] = Some(floor);
            if i == 0 {
                let mut kept = false;
                self.base.retain(|_, windows| {
                    // Split at the floor (moves whole nodes; removing the old windows one by one
                    // shifted every later window of their nodes), then put back the dirty ones.
                    let above = windows.split_off(&floor);
                    let below = std::mem::replace(windows, above);
                    for (start, w) in below {
                        if w.delta.is_some() {
                            kept = true;
                            windows.insert(start, w);
                        }
                    }
                    !windows.is_empty()
                });
                self.kept_below_floor = kept;
            } else {
                self.rolled.retain(|id, _| id.interval_ms != interval_ms || id.window_start_ms >= floor);
            }
        }
    }

    /// Rows held (every interval).
    pub fn len(&self) -> usize {
        self.base.values().map(BTreeMap::len).sum::<usize>() + self.rolled.len()
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One bucket of `interval_ms` before the watermark of a partition whose max event time is
/// `max_ts_ms`: the cache keeps rows from here on.
pub fn cache_floor(max_ts_ms: i64, allowed_lateness_ms: i64, interval_ms: i64) -> i64 {
    window_start(max_ts_ms.saturating_sub(allowed_lateness_ms), interval_ms).saturating_sub(interval_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_core::decimal::Decimal6;
    use prism_core::view::ohlcv::{EventKey, Ohlcv};

    const M: i64 = 60_000;

    /// No base window holds a delta (checked on the windows, not on the counter).
    fn clean(c: &WindowCache<Ohlcv>) -> bool {
        c.base.values().all(|w| w.values().all(|b| b.delta.is_none()))
    }

    /// A commit's rows as (interval ms, row).
    fn take(c: &mut WindowCache<Ohlcv>, stored: &HashMap<RowId, Ohlcv>) -> Vec<(i64, ViewRow<Ohlcv>)> {
        let mut out = Vec::new();
        let d = c.rolled_deltas();
        c.take_commit(0, d, stored, &mut out);
        out.into_iter().map(|r| (r.interval_ms, r.row)).collect()
    }

    fn trade(minute: i64, price: i128) -> Ohlcv {
        Ohlcv::of_trade(EventKey { ts_ms: minute * M, partition: 0, offset: minute }, Decimal6::from_units(price), 1)
    }

    #[test]
    fn rolls_deltas_into_longer_intervals_and_trims_by_floor() {
        let mut c: WindowCache<Ohlcv> = WindowCache::new(&[M, 5 * M], [], vec![None, None]);
        assert!(c.knows_base("S", 0), "a fresh partition has nothing stored");
        for m in [0, 1, 6] {
            c.apply("S", m * M, &trade(m, 100 + m as i128));
        }
        assert!(c.rolled_misses(&c.rolled_deltas()).is_empty());
        assert_eq!(c.dirty_windows(), 3, "three minutes changed");
        let rows = take(&mut c, &HashMap::new());
        assert!(clean(&c), "taking a commit leaves the cache clean");
        assert_eq!(c.dirty_windows(), 0);
        let by = |interval: i64, start: i64| rows.iter().find(|(i, r)| *i == interval && r.window_start_ms == start).map(|(_, r)| r.agg);
        assert_eq!(rows.len(), 5, "3 minutes and 2 five-minute buckets");
        assert_eq!(by(5 * M, 0).map(|a| a.trades), Some(2));
        assert_eq!(by(5 * M, 5 * M).map(|a| a.trades), Some(1));
        // An event applied while that commit runs (a late one, at minute 1) survives its trim.
        c.apply("S", M, &trade(1, 99));
        c.committed(Some(6 * M), 0);
        assert!(!clean(&c), "the late window is still dirty");
        assert_eq!(c.dirty_windows(), 1, "one window changed since the take");
        assert!(c.knows_base("S", M), "a dirty window stays in memory below the floor");
        let rows = take(&mut c, &HashMap::new());
        let five = rows.iter().find(|(i, r)| *i == 5 * M && r.window_start_ms == 0).map(|(_, r)| r.agg);
        assert_eq!(five.map(|a| a.trades), Some(3), "the held 5-minute row took the late delta");
        c.committed(Some(6 * M), 0);
        assert!(!c.knows_base("S", M), "clean again: it left memory");
        // A second commit merges only the new delta into the held 5-minute row.
        c.apply("S", 7 * M, &trade(7, 90));
        let rows = take(&mut c, &HashMap::new());
        assert_eq!(rows.len(), 2);
        let five = rows.iter().find(|(i, _)| *i == 5 * M).map(|(_, r)| r.agg);
        assert_eq!(five.map(|a| (a.trades, a.low.map(|l| l.units()))), Some((2, Some(90))));
        c.committed(Some(20 * M), 0);
        // Floors: base 19m, 5m bucket 10m: everything older left memory.
        assert_eq!(c.len(), 0);
        assert!(!c.knows_base("S", 7 * M), "older than the floor: ask the store");
        assert!(c.knows_base("S", 19 * M));
        // A late event: its rolled row is a miss the store must answer.
        c.load_base("S", 7 * M, Some(trade(7, 90)));
        c.apply("S", 7 * M, &trade(7, 95));
        let deltas = c.rolled_deltas();
        assert_eq!(c.rolled_misses(&deltas), vec![RowId { interval_ms: 5 * M, key: "S".into(), window_start_ms: 5 * M }]);
        let stored: HashMap<RowId, Ohlcv> =
            c.rolled_misses(&deltas).into_iter().map(|id| (id, trade(6, 101).merge(&trade(7, 90)))).collect();
        let rows = take(&mut c, &stored);
        let five = rows.iter().find(|(i, _)| *i == 5 * M).map(|(_, r)| r.agg);
        assert_eq!(five.map(|a| a.trades), Some(3));
    }

    /// `try_apply` is `knows_base` + `apply` in one lookup: it refuses exactly the windows
    /// `knows_base` refuses, and folds the same as `apply` otherwise.
    #[test]
    fn try_apply_matches_knows_base_then_apply() {
        let mut a: WindowCache<Ohlcv> = WindowCache::new(&[M, 5 * M, 60 * M], [], vec![None, None, None]);
        let mut b: WindowCache<Ohlcv> = WindowCache::new(&[M, 5 * M, 60 * M], [], vec![None, None, None]);
        let events = [("S", 3), ("T", 4), ("S", 3), ("S", 12), ("T", 61), ("S", 14)];
        for (key, m) in events {
            assert!(a.try_apply(key, m * M, &trade(m, 100 + m as i128)));
            assert!(b.knows_base(key, m * M));
            b.apply(key, m * M, &trade(m, 100 + m as i128));
        }
        assert_eq!(a.dirty_windows(), b.dirty_windows());
        assert_eq!(a.rolled_deltas(), b.rolled_deltas());
        let (mut ra, mut rb) = (take(&mut a, &HashMap::new()), take(&mut b, &HashMap::new()));
        for rows in [&mut ra, &mut rb] {
            rows.sort_by(|x, y| (x.0, &x.1.key, x.1.window_start_ms).cmp(&(y.0, &y.1.key, y.1.window_start_ms)));
        }
        assert_eq!(ra, rb);
        // S's minutes 12 and 14 share a 5-minute bucket; all of S's share an hour.
        let hour_s = ra.iter().find(|(i, r)| *i == 60 * M && r.key == "S").map(|(_, r)| r.agg.trades);
        assert_eq!(hour_s, Some(4));
        let five_s = ra.iter().find(|(i, r)| *i == 5 * M && r.key == "S" && r.window_start_ms == 10 * M).map(|(_, r)| r.agg.trades);
        assert_eq!(five_s, Some(2));
        a.committed(Some(200 * M), 0);
        // Below the floor and not held: refused, nothing changed.
        assert!(!a.knows_base("S", 3 * M));
        assert!(!a.try_apply("S", 3 * M, &trade(3, 1)));
        assert!(!a.try_apply("NEW", 3 * M, &trade(3, 1)), "a new key below the floor too");
        assert_eq!(a.dirty_windows(), 0);
        assert!(a.try_apply("NEW", 199 * M, &trade(199, 1)), "a new key above the floor is new");
    }
}
