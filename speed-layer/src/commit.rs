//! The speed layer's commits, pipelined: a commit's store transaction (changed rows, entity
//! writes and offsets, after the lease check) runs as its own task while the speed layer goes on
//! reading, parsing and folding the next events — on two cores the JSON and the SQL overlap.
//!
//! At most one commit runs at a time, and it is finished (its outcome applied to the state)
//! before the next one is taken, before partitions change hands and at shutdown. Taking a commit
//! moves the window caches on at once ([`WindowCache::take_commit`]); the caches leave rows to
//! the store only after the commit that wrote them succeeded ([`WindowCache::committed`]), and
//! the rows a store read may need (rolled rows older than the cache floor) are read only while
//! no commit runs, so every read sees every row written before it.
//!
//! A commit refused because another instance claimed a partition (fencing) wrote nothing: the
//! partitions lost are dropped, and the rows of the others are sent again with the next commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use prism_core::store::{DropBehind, EntityWrite, RealtimeRow, StoreError, ViewStore};
use prism_core::time::now_ms;
use prism_core::view::{RowId, View};
use prism_core::window::Watermark;
use tokio::task::JoinHandle;

use crate::window_cache::WindowCache;
use crate::{telemetry, HorizonSource, SpeedError, SpeedState};

/// A commit's row buffer is kept for the next one up to this capacity (rows).
const SPARE_ROWS_KEPT: usize = 200_000;

/// What a commit task gives back: the store's answer, and the rows and entity writes it carried
/// (sent again after a refusal).
type CommitOutcome<A> = (Result<(), StoreError>, Vec<RealtimeRow<A>>, Vec<(String, EntityWrite)>);

/// A commit handed to the store and not finished yet.
pub(crate) struct InFlight<A> {
    task: JoinHandle<CommitOutcome<A>>,
    /// The horizon whose windows the commit drops, if any.
    drop_before: Option<i64>,
    /// Append time (UTC ms) of the oldest record the commit covers.
    oldest_ms: Option<i64>,
    started: Instant,
    /// Each partition's max event time at the commit (UTC ms): the caches trim by it.
    max_ts: Vec<(i32, Option<i64>)>,
}

impl<A> InFlight<A> {
    /// True once the store transaction ended (the commit can be finished without waiting).
    pub(crate) fn is_done(&self) -> bool {
        self.task.is_finished()
    }
}

impl<V: View> SpeedState<V> {
    /// Commits everything applied so far and waits for it (finishing a running commit first).
    ///
    /// Errors: [`SpeedError`] from the store; [`SpeedError::Fenced`] standalone.
    pub(crate) async fn commit(&mut self, store: &ViewStore) -> Result<(), SpeedError> {
        self.finish_commit(store).await?;
        self.start_commit(store).await?;
        self.finish_commit(store).await
    }

    /// Takes a commit of everything applied since the last one and starts its store transaction
    /// as a task (nothing when nothing changed and no lease needs renewing). Call
    /// [`SpeedState::finish_commit`] first: one commit runs at a time.
    pub(crate) async fn start_commit(&mut self, store: &ViewStore) -> Result<(), SpeedError> {
        debug_assert!(self.inflight.is_none(), "one commit at a time");
        let started = Instant::now();
        let view = self.view.clone();
        let horizon = match self.config.horizon {
            HorizonSource::BatchHorizon => store.view_pointer(view.name()).await?.batch_horizon_ms,
            HorizonSource::Handoff => store.handoff_state(view.name(), self.config.view_version).await?.segment_horizon_ms,
            HorizonSource::None => None,
        };
        self.skip_before_ms = horizon;
        // Rolled rows the caches cannot give come from the store first (no commit is running,
        // so the store has every row the caches let go of).
        let mut stored: HashMap<RowId, V::Agg> = HashMap::new();
        let mut deltas = BTreeMap::new();
        for (p, cache) in &self.caches {
            let d = cache.rolled_deltas();
            for id in cache.rolled_misses(&d) {
                if let Some(agg) =
                    store.realtime_row(&*view, self.config.view_version, id.interval_ms, &id.key, id.window_start_ms, *p).await?
                {
                    stored.insert(id, agg);
                }
            }
            deltas.insert(*p, d);
        }
        // The row buffer of the last commit, reused (a fresh one per commit costs page faults).
        let mut fresh = std::mem::take(&mut self.spare_rows);
        fresh.clear();
        for (p, cache) in self.caches.iter_mut() {
            cache.take_commit(*p, deltas.remove(p).unwrap_or_default(), &stored, &mut fresh);
        }
        let rows = supersede(std::mem::take(&mut self.carry), fresh);
        if let Some(h) = horizon {
            self.wrote_behind_horizon |= rows.iter().any(|r| r.row.window_start_ms < h);
        }
        let drop_before = horizon.filter(|h| self.wrote_behind_horizon || self.dropped_through_ms.is_none_or(|d| *h > d));
        let renew = !self.consumer.leases.is_empty() && self.last_renewal.elapsed() >= self.config.lease_renew_interval;
        if rows.is_empty() && drop_before.is_none() && self.events_since_commit == 0 && !renew {
            return Ok(());
        }
        let entities = self.entities.take_sorted();
        let (offsets, leases) = (self.consumer.offsets.clone(), self.consumer.leases.clone());
        let max_ts = offsets.iter().map(|o| (o.partition, o.max_event_ts_ms)).collect();
        let (store, consumer, version) = (store.clone(), self.consumer_name.clone(), self.config.view_version);
        let task = tokio::spawn(async move {
            let drop_behind = drop_before.map(|h| DropBehind { batch_horizon_ms: h });
            let result = store.commit_realtime(&*view, &consumer, version, &rows, &offsets, &leases, drop_behind, &entities).await;
            (result, rows, entities)
        });
        self.events_since_commit = 0;
        self.inflight = Some(InFlight { task, drop_before, oldest_ms: self.oldest_uncommitted_ms.take(), started, max_ts });
        // Tokio puts a task spawned on a worker into that worker's LIFO slot, which no other
        // worker may steal, and the speed layer's loop does not yield while the embedded log has
        // records (its reads return at once). Without this yield the commit would not start until
        // the loop next waited — for this very commit, at the next bound — so the SQL ran while
        // the loop stood still: `perf` showed the two alternating, the process at one core of two.
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Waits for the running commit, if any, and applies its outcome: on success the leases
    /// count as renewed and the caches trim; refused (fenced), its rows wait for the next commit
    /// and the partitions lost are dropped ([`SpeedState::fenced`]).
    ///
    /// Errors: [`SpeedError`] from the store or the task; [`SpeedError::Fenced`] standalone.
    pub(crate) async fn finish_commit(&mut self, store: &ViewStore) -> Result<(), SpeedError> {
        let Some(f) = self.inflight.take() else { return Ok(()) };
        let (result, rows, entities) = f.task.await.map_err(|e| SpeedError::CommitTask(e.to_string()))?;
        match result {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => {
                // Nothing was written: the rows and entity writes go with the next commit
                // (newer rows of the same windows supersede them), the offsets too.
                let owned = self.consumer.partitions();
                self.carry =
                    supersede(rows.into_iter().filter(|r| owned.contains(&r.partition)).collect(), std::mem::take(&mut self.carry));
                self.entities.restore(entities);
                self.oldest_uncommitted_ms = match (self.oldest_uncommitted_ms, f.oldest_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                return self.fenced(store).await;
            }
            Err(e) => return Err(e.into()),
        }
        let mut rows = rows;
        rows.clear();
        if rows.capacity() <= SPARE_ROWS_KEPT {
            self.spare_rows = rows;
        }
        self.last_renewal = Instant::now();
        if let Some(h) = f.drop_before {
            self.dropped_through_ms = Some(h);
            self.wrote_behind_horizon = false;
        }
        let view = self.view.clone();
        let name = view.name().to_string();
        metrics::counter!(telemetry::COMMITS_TOTAL, "view" => name.clone()).increment(1);
        if let Some(oldest) = f.oldest_ms {
            let seconds = (now_ms() - oldest).max(0) as f64 / 1000.0;
            metrics::histogram!(telemetry::END_TO_END_SECONDS, "view" => name.clone()).record(seconds);
        }
        metrics::histogram!(telemetry::COMMIT_SECONDS, "view" => name.clone()).record(f.started.elapsed().as_secs_f64());
        let max_ts = f.max_ts.iter().filter_map(|(_, m)| *m).max();
        if let Some(w) = Watermark::new(max_ts, view.allowed_lateness_ms()).current_ms() {
            metrics::gauge!(telemetry::WATERMARK_MS, "view" => name.clone()).set(w as f64);
        }
        let lateness = view.allowed_lateness_ms();
        for (p, max) in f.max_ts {
            if let Some(cache) = self.caches.get_mut(&p) {
                cache.committed(max, lateness);
            }
        }
        metrics::gauge!(telemetry::CACHED_WINDOWS, "view" => name).set(self.caches.values().map(WindowCache::len).sum::<usize>() as f64);
        Ok(())
    }

    /// A commit was refused because another instance claimed some of this instance's
    /// partitions. In a group that is a rebalance this instance has not heard of yet: drop those
    /// partitions' uncommitted windows (their new owner recomputes them from the stored offsets)
    /// and commit the rest. Standalone, it is an operator error.
    async fn fenced(&mut self, store: &ViewStore) -> Result<(), SpeedError> {
        let lost = store.lost_leases(&self.consumer_name, self.topic(), &self.consumer.leases).await?;
        metrics::counter!(telemetry::FENCED_COMMITS_TOTAL, "view" => self.view.name().to_string()).increment(1);
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

/// `older` rows (of a refused commit) that no `newer` row of the same window replaces, then the
/// newer rows: each row is a full value, so the newest of a window is the one to write.
fn supersede<A>(older: Vec<RealtimeRow<A>>, newer: Vec<RealtimeRow<A>>) -> Vec<RealtimeRow<A>> {
    if older.is_empty() {
        return newer;
    }
    let ids: HashSet<(i32, i64, &str, i64)> =
        newer.iter().map(|r| (r.partition, r.interval_ms, r.row.key.as_str(), r.row.window_start_ms)).collect();
    let mut out: Vec<RealtimeRow<A>> =
        older.into_iter().filter(|r| !ids.contains(&(r.partition, r.interval_ms, r.row.key.as_str(), r.row.window_start_ms))).collect();
    out.extend(newer);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use prism_core::store::ViewStore;
    use prism_core::view::ohlcv::OhlcvView;

    use crate::{HorizonSource, SpeedConfig, SpeedState};

    /// A commit's store transaction runs while the speed layer goes on without awaiting anything
    /// (as it does while the embedded log has records): taken on one worker of two, it must not
    /// wait in that worker's LIFO slot for the loop to yield.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_runs_while_the_loop_keeps_its_worker_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
        let config = SpeedConfig { horizon: HorizonSource::None, partitions: 1, ..SpeedConfig::default() };
        let mut state = SpeedState::new(Arc::new(OhlcvView::standard(5_000)), config, false);
        state.assign(&[0], &store).await.expect("assign");
        // On a worker, as the speed layer runs (a test's own body runs outside the workers).
        let on_worker = tokio::spawn(async move {
            // Nothing folded: the commit carries the offsets only, which is still a transaction.
            state.events_since_commit = 1;
            state.start_commit(&store).await.expect("start");
            // Busy without an await, like the fold over records the log returned at once.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !state.inflight.as_ref().expect("a commit was taken").is_done() {
                assert!(Instant::now() < deadline, "the commit did not run while this worker stayed busy for 10 s");
                std::thread::sleep(Duration::from_millis(1));
            }
            state.finish_commit(&store).await.expect("finish");
        });
        on_worker.await.expect("the worker's task");
    }
}
