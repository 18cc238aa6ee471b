//! A consumer of one topic whose positions live in the view store (DESIGN §5): it resumes from
//! the offsets it committed together with its results, not from the log's own bookkeeping, and
//! polls its partitions round-robin.

use std::time::Duration;

use crate::log::{EventLog, LogError, LogRecord};
use crate::store::{ConsumerOffset, StoreError, ViewStore};

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

/// Positions in every partition of a topic, and a round-robin cursor over them.
#[derive(Debug, Clone)]
pub struct StoreConsumer {
    /// Topic consumed.
    pub topic: String,
    /// One entry per partition, indexed by partition: the next offset to read and the max event
    /// time consumed so far. Advance them as records are processed; commit them with the results.
    pub offsets: Vec<ConsumerOffset>,
    next_partition: usize,
    idle_partitions: usize,
}

impl StoreConsumer {
    /// Resumes `consumer` on `topic` (with `partitions` partitions) from its committed offsets;
    /// partitions it never committed start at offset 0.
    ///
    /// Errors: [`ConsumerError::Store`] when the offsets cannot be read.
    pub async fn resume(store: &ViewStore, consumer: &str, topic: &str, partitions: i32) -> Result<Self, ConsumerError> {
        let stored = store.consumer_offsets(consumer, topic).await?;
        let offsets = (0..partitions)
            .map(|p| {
                stored.iter().find(|o| o.partition == p).copied().unwrap_or(ConsumerOffset {
                    partition: p,
                    next_offset: 0,
                    max_event_ts_ms: None,
                })
            })
            .collect();
        Ok(StoreConsumer { topic: topic.to_string(), offsets, next_partition: 0, idle_partitions: 0 })
    }

    /// The next offset of every partition, indexed by partition.
    pub fn next_offsets(&self) -> Vec<i64> {
        self.offsets.iter().map(|o| o.next_offset).collect()
    }

    /// Reads up to `max_records` from the next partition in turn, from its next offset. Waits up
    /// to [`IDLE_WAIT`] only after every partition came back empty once. Does not advance the
    /// offsets: the caller does, as it processes the records.
    ///
    /// Errors: [`ConsumerError::Log`].
    pub async fn poll<L: EventLog>(&mut self, log: &L, max_records: usize) -> Result<Vec<LogRecord>, ConsumerError> {
        if self.offsets.is_empty() {
            tokio::time::sleep(IDLE_WAIT).await;
            return Ok(Vec::new());
        }
        let p = self.next_partition;
        self.next_partition = (p + 1) % self.offsets.len();
        let wait = if self.idle_partitions >= self.offsets.len() { IDLE_WAIT } else { Duration::ZERO };
        let records = log.read(&self.topic, p as i32, self.offsets[p].next_offset, max_records, wait).await?;
        self.idle_partitions = if records.is_empty() { self.idle_partitions + 1 } else { 0 };
        Ok(records)
    }

    /// Marks `record` consumed: its partition's next offset moves past it, and `event_ts_ms`
    /// (when the record carried a valid event) raises the partition's max event time.
    pub fn advance(&mut self, record: &LogRecord, event_ts_ms: Option<i64>) {
        if let Some(o) = self.offsets.get_mut(record.partition as usize) {
            o.next_offset = record.offset + 1;
            if let Some(ts) = event_ts_ms {
                o.max_event_ts_ms = Some(o.max_event_ts_ms.map_or(ts, |m| m.max(ts)));
            }
        }
    }
}
