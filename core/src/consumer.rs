//! A consumer of one topic whose positions live in the view store (DESIGN §5): it resumes from
//! the offsets it committed together with its results, not from the log's own bookkeeping, and
//! polls its partitions round-robin. It owns either every partition or the ones a consumer
//! group assigned it ([`StoreConsumer::claim`]), with leases that fence an earlier owner.

use std::time::Duration;

use crate::log::{EventLog, LogError, LogRecord};
use crate::store::{ConsumerOffset, PartitionLease, StoreError, ViewStore};

/// How long a poll waits for data after a whole round of partitions came back empty.
pub const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Errors of [`StoreConsumer`].
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The view store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Positions in the partitions of a topic that this consumer owns, and a round-robin cursor
/// over them.
#[derive(Debug, Clone)]
pub struct StoreConsumer {
    /// Topic consumed.
    pub topic: String,
    /// One entry per owned partition, in ascending partition order: the next offset to read and
    /// the max event time consumed so far. Advance them as records are processed; commit them
    /// with the results.
    pub offsets: Vec<ConsumerOffset>,
    /// The leases held on the owned partitions (same order as `offsets`), to be checked by every
    /// commit; empty for a consumer that does not fence (one instance by design, e.g. the
    /// archiver).
    pub leases: Vec<PartitionLease>,
    next_partition: usize,
    idle_partitions: usize,
}

impl StoreConsumer {
    /// A consumer of `topic` that owns no partition yet.
    pub fn new(topic: &str) -> Self {
        StoreConsumer { topic: topic.to_string(), offsets: Vec::new(), leases: Vec::new(), next_partition: 0, idle_partitions: 0 }
    }

    /// Resumes `consumer` on every partition of `topic` (`partitions` of them) from its
    /// committed offsets, without leases; partitions it never committed start at offset 0.
    ///
    /// Errors: [`ConsumerError::Store`] when the offsets cannot be read.
    pub async fn resume(store: &ViewStore, consumer: &str, topic: &str, partitions: i32) -> Result<Self, ConsumerError> {
        let all: Vec<i32> = (0..partitions).collect();
        let offsets = stored_offsets(store, consumer, topic, &all).await?;
        Ok(StoreConsumer { topic: topic.to_string(), offsets, leases: Vec::new(), next_partition: 0, idle_partitions: 0 })
    }

    /// Claims `partitions` of `topic` for instance `owner` of `consumer` (bumping their lease
    /// epochs, which fences any earlier holder), then resumes them from the committed offsets.
    ///
    /// Errors: [`ConsumerError::Store`].
    pub async fn claim(store: &ViewStore, consumer: &str, topic: &str, partitions: &[i32], owner: &str) -> Result<Self, ConsumerError> {
        let mut partitions = partitions.to_vec();
        partitions.sort_unstable();
        partitions.dedup();
        let leases = store.claim_partitions(consumer, topic, &partitions, owner, crate::time::now_ms()).await?;
        let offsets = stored_offsets(store, consumer, topic, &partitions).await?;
        Ok(StoreConsumer { topic: topic.to_string(), offsets, leases, next_partition: 0, idle_partitions: 0 })
    }

    /// The owned partitions, ascending.
    pub fn partitions(&self) -> Vec<i32> {
        self.offsets.iter().map(|o| o.partition).collect()
    }

    /// The position of `partition` in `offsets` (and `leases`), if owned.
    pub fn index_of(&self, partition: i32) -> Option<usize> {
        self.offsets.binary_search_by_key(&partition, |o| o.partition).ok()
    }

    /// Stops consuming `partitions` (revoked, or fenced by another instance): forgets their
    /// positions and leases.
    pub fn release(&mut self, partitions: &[i32]) {
        self.offsets.retain(|o| !partitions.contains(&o.partition));
        self.leases.retain(|l| !partitions.contains(&l.partition));
        self.next_partition = 0;
        self.idle_partitions = 0;
    }

    /// The next offset of every owned partition, in partition order.
    pub fn next_offsets(&self) -> Vec<i64> {
        self.offsets.iter().map(|o| o.next_offset).collect()
    }

    /// Reads up to `max_records` from the next owned partition in turn, from its next offset.
    /// Waits up to [`IDLE_WAIT`] only after every partition came back empty once (or when none
    /// is owned). Does not advance the offsets: the caller does, as it processes the records.
    ///
    /// Errors: [`ConsumerError::Log`].
    pub async fn poll<L: EventLog>(&mut self, log: &L, max_records: usize) -> Result<Vec<LogRecord>, ConsumerError> {
        if self.offsets.is_empty() {
            tokio::time::sleep(IDLE_WAIT).await;
            return Ok(Vec::new());
        }
        let i = self.next_partition % self.offsets.len();
        self.next_partition = (i + 1) % self.offsets.len();
        let wait = if self.idle_partitions >= self.offsets.len() { IDLE_WAIT } else { Duration::ZERO };
        let o = self.offsets[i];
        let records = log.read(&self.topic, o.partition, o.next_offset, max_records, wait).await?;
        self.idle_partitions = if records.is_empty() { self.idle_partitions + 1 } else { 0 };
        Ok(records)
    }

    /// Marks `record` consumed: its partition's next offset moves past it, and `event_ts_ms`
    /// (when the record carried a valid event) raises the partition's max event time. Records of
    /// partitions not owned are ignored.
    pub fn advance(&mut self, record: &LogRecord, event_ts_ms: Option<i64>) {
        if let Some(i) = self.index_of(record.partition) {
            let o = &mut self.offsets[i];
            o.next_offset = record.offset + 1;
            if let Some(ts) = event_ts_ms {
                o.max_event_ts_ms = Some(o.max_event_ts_ms.map_or(ts, |m| m.max(ts)));
            }
        }
    }
}

/// The committed offsets of `partitions` (ascending), offset 0 for those never committed.
async fn stored_offsets(store: &ViewStore, consumer: &str, topic: &str, partitions: &[i32]) -> Result<Vec<ConsumerOffset>, ConsumerError> {
    let stored = store.consumer_offsets(consumer, topic).await?;
    Ok(partitions
        .iter()
        .map(|&p| {
            stored.iter().find(|o| o.partition == p).copied().unwrap_or(ConsumerOffset {
                partition: p,
                next_offset: 0,
                max_event_ts_ms: None,
            })
        })
        .collect())
}
