//! The event log (DESIGN §7): partitioned, append-only, offset-addressed topics.
//!
//! [`EventLog`] has the shape of a Kafka client's data path so that the embedded log
//! ([`embedded::EmbeddedLog`], the single-machine default) and Kafka ([`kafka::KafkaLog`]) are
//! interchangeable.
//! Records are keyed; the key picks the partition with Kafka's default partitioner
//! ([`partitioner::partition_for_key`]), so a key lands in the same partition on both.

pub mod embedded;
pub mod kafka;
pub mod kafka_group;
pub mod kafka_reader;
pub mod partitioner;
mod record;

use std::future::Future;
use std::time::Duration;

pub use record::{LogRecord, NewRecord};

use crate::event::LogPosition;

/// Errors of an event log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error on the log's files, with what was being done.
    #[error("event log I/O error while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record failed its CRC-32C check or its frame is inconsistent (outside the tail, which
    /// is cut on open instead).
    #[error("event log corrupt: {0}")]
    Corrupt(String),
    /// A partition or offset that does not exist.
    #[error("{0}")]
    OutOfRange(String),
    /// A record that cannot be stored (too large, bad header).
    #[error("record refused: {0}")]
    Refused(String),
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LogError::Io { context: context.into(), source }
    }
}

/// Kappa mode's precondition (DESIGN §6; Kreps, *Questioning the Lambda Architecture*): every
/// partition of `topic` still holds every offset from 0, so that a view can be rebuilt by
/// replaying it.
///
/// Errors: [`LogError::OutOfRange`] naming the topic, the partition and its first missing
/// offset; the log's own errors.
pub async fn check_log_complete<L: EventLog>(log: &L, topic: &str) -> Result<(), LogError> {
    for (partition, start) in log.start_offsets(topic).await?.into_iter().enumerate() {
        if start > 0 {
            return Err(LogError::OutOfRange(format!(
                "Kappa mode needs the whole log, but {topic} partition {partition} starts at offset {start}: offsets 0..{start} \
                 are gone (first missing offset 0; retention, DeleteRecords or a removed segment file), so views cannot be rebuilt \
                 by replaying it. Run Lambda mode, whose master dataset keeps every event"
            )));
        }
    }
    Ok(())
}

/// A partitioned, append-only log of keyed records (Kafka's model).
///
/// Offsets are dense per partition, starting at 0. `end_offsets()[p]` is the offset the next
/// record of partition `p` will get (Kafka's "log end offset" / high watermark).
pub trait EventLog: Send + Sync + 'static {
    /// Creates `topic` with `partitions` partitions if it does not exist; returns the
    /// partition count it has.
    fn ensure_topic(&self, topic: &str, partitions: i32) -> impl Future<Output = Result<i32, LogError>> + Send;

    /// Appends records durably per the log's fsync policy; each goes to the partition its key
    /// hashes to. Returns each record's position, in input order. Records of one partition
    /// keep their input order.
    fn append(&self, topic: &str, records: Vec<NewRecord>) -> impl Future<Output = Result<Vec<LogPosition>, LogError>> + Send;

    /// Reads up to `max_records` records of one partition from `from_offset` on, waiting up to
    /// `max_wait` for the first one when none is there yet (an empty result is not an error).
    fn read(
        &self,
        topic: &str,
        partition: i32,
        from_offset: i64,
        max_records: usize,
        max_wait: Duration,
    ) -> impl Future<Output = Result<Vec<LogRecord>, LogError>> + Send;

    /// Log end offset of every partition of `topic`, indexed by partition.
    fn end_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<i64>, LogError>> + Send;

    /// Log start offset of every partition of `topic` (the first offset still held: 0 unless
    /// retention or `DeleteRecords` removed the head, or a segment file is gone), indexed by
    /// partition.
    fn start_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<i64>, LogError>> + Send;

    /// Forces everything appended so far to stable storage (used on graceful shutdown).
    fn flush(&self) -> impl Future<Output = Result<(), LogError>> + Send;
}
