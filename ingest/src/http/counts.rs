//! The `http` source's accepted/refused counters in the view store (`ingest_counters`, shown by
//! `/v1/status`), written with **group commit**: a request still answers only after its counts
//! are stored, but requests that arrive while a write is running share the next one, so eight
//! clients posting at full speed cost a few store transactions a second instead of one per
//! request (issue 11: each was a SQLite write transaction with its own WAL sync).

use prism_core::store::{StoreError, ViewStore};

/// Counts added in memory and not yet stored, and the generation they belong to.
#[derive(Debug, Default)]
struct Pending {
    accepted: i64,
    refused: i64,
    /// Bumped each time a write takes the pending counts.
    generation: u64,
}

/// One source's counters, written with group commit (see the module docs).
#[derive(Debug)]
pub(super) struct GroupedCounts {
    source: &'static str,
    pending: std::sync::Mutex<Pending>,
    /// Held by the one write in progress; holds the first generation not yet stored.
    turn: tokio::sync::Mutex<u64>,
}

impl GroupedCounts {
    /// Counters of source `source` (`http`).
    pub(super) fn new(source: &'static str) -> Self {
        GroupedCounts { source, pending: std::sync::Mutex::default(), turn: tokio::sync::Mutex::new(0) }
    }

    /// Adds `accepted` and `refused` and returns once they are stored: by a write this call
    /// runs, or by one that another call ran after these were added.
    ///
    /// Errors: [`StoreError`] when the write fails; the counts then stay pending and the next
    /// write stores them.
    pub(super) async fn add(&self, store: &ViewStore, accepted: i64, refused: i64) -> Result<(), StoreError> {
        if accepted == 0 && refused == 0 {
            return Ok(());
        }
        let mine = {
            let mut p = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            p.accepted += accepted;
            p.refused += refused;
            p.generation
        };
        let mut stored_below = self.turn.lock().await;
        if *stored_below > mine {
            return Ok(()); // a write that took them finished while this call waited its turn
        }
        let (generation, accepted, refused) = {
            let mut p = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let taken = (p.generation, p.accepted, p.refused);
            (p.accepted, p.refused) = (0, 0);
            p.generation += 1;
            taken
        };
        match store.add_ingest_counts(self.source, accepted, refused).await {
            Ok(()) => {
                *stored_below = generation + 1;
                Ok(())
            }
            Err(e) => {
                let mut p = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                p.accepted += accepted;
                p.refused += refused;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Concurrent adds are all stored, in fewer writes than adds, and each add returns only
    /// once its counts are in the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_adds_are_stored_in_shared_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ViewStore::open_sqlite(&dir.path().join("store.db")).await.expect("store");
        let counts = Arc::new(GroupedCounts::new("http"));
        let mut tasks = Vec::new();
        for i in 1..=64i64 {
            let (store, counts) = (store.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                counts.add(&store, i, i % 3).await.expect("add");
                // Once add returned, at least this call's counts are stored.
                let stored = store.ingest_counters().await.expect("read");
                let http = stored.iter().find(|c| c.source == "http").expect("http row");
                assert!(http.accepted >= i && http.refused >= i % 3);
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let stored = store.ingest_counters().await.expect("read");
        let http = stored.iter().find(|c| c.source == "http").expect("http row");
        assert_eq!((http.accepted, http.refused), ((1..=64).sum::<i64>(), (1..=64).map(|i| i % 3).sum::<i64>()));
        let writes = *counts.turn.lock().await;
        assert!(writes < 64, "64 concurrent adds took {writes} writes");
    }
}
