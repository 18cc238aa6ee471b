//! Reading Kafka partitions at explicit offsets: **one consumer client per topic** (per
//! concurrent consumer position), its partitions assigned by hand and split into one queue each.
//!
//! librdkafka fetches every partition a client is assigned in one fetch request per broker and
//! delivers them into one queue; `rd_kafka_queue_get_partition` (rdkafka's
//! [`StreamConsumer::split_partition_queue`]) gives each partition its own queue, so a caller
//! reading partition 3 never sees partition 1's records. The split is made before the partition
//! is assigned (librdkafka leaves a queue the application forwarded alone when a fetch starts),
//! and the client's main queue is served by a task of its own, as rdkafka asks, for errors and
//! events.
//!
//! Positions are explicit (never Kafka's committed offsets): a partition is added to the
//! client's assignment with `incremental_assign` at the offset asked for, and moved with
//! `incremental_unassign` + `incremental_assign` (librdkafka drops what it had prefetched from
//! the old position by op version). Several positions in one partition at once (a realtime
//! version and its replay) use several clients: at most [`MAX_CLIENTS_PER_TOPIC`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::kafka::kafka;
use super::{LogError, LogRecord};

/// Consumer clients kept per topic (each holds one position per partition); past this, a read
/// waits for a busy partition reader.
pub const MAX_CLIENTS_PER_TOPIC: usize = 4;

/// Consumer errors that librdkafka reports while it recovers by itself (a broker restarting,
/// a connection reset): not a reason to stop reading.
pub(super) fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::PartitionEOF
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

/// One partition of one client: its own queue and the offset it delivers next.
pub(super) struct PartitionReader {
    consumer: Arc<StreamConsumer>,
    queue: StreamPartitionQueue<DefaultConsumerContext>,
    topic: String,
    partition: i32,
    /// The offset the next record will have; -1 before the partition is assigned.
    next_offset: i64,
}

impl PartitionReader {
    /// Puts the partition at `offset` in the client's assignment (moving it when it is
    /// elsewhere); a no-op when it is there already.
    fn position(&mut self, offset: i64) -> Result<(), LogError> {
        if self.next_offset == offset {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset)).map_err(kafka("positioning a reader"))?;
        if self.next_offset >= 0 {
            self.consumer.incremental_unassign(&tpl).map_err(kafka("unassigning a partition"))?;
            self.next_offset = -1;
        }
        self.consumer.incremental_assign(&tpl).map_err(kafka("assigning a partition"))?;
        self.next_offset = offset;
        Ok(())
    }

    /// Up to `max_records` records from `from_offset` on, waiting up to `max_wait` for the
    /// first (the [`super::EventLog::read`] contract).
    pub(super) async fn read(&mut self, from_offset: i64, max_records: usize, max_wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        self.position(from_offset)?;
        let mut out = Vec::new();
        let mut wait = max_wait;
        while out.len() < max_records {
            let message = match tokio::time::timeout(wait, self.queue.recv()).await {
                Err(_) => break,
                Ok(Err(e)) if is_transient(&e) => {
                    // librdkafka reconnects by itself; the caller simply polls again.
                    tracing::debug!(error = %e, "transient Kafka consumer error");
                    break;
                }
                Ok(m) => m.map_err(kafka("reading"))?,
            };
            // Anything before the asked offset is a stale prefetch from an earlier position.
            if message.offset() < self.next_offset {
                continue;
            }
            out.push(to_log_record(&message));
            self.next_offset = message.offset() + 1;
            wait = Duration::from_millis(1);
        }
        Ok(out)
    }
}

fn to_log_record<M: Message>(m: &M) -> LogRecord {
    let headers = m
        .headers()
        .map(|h| h.iter().map(|Header { key, value }| (key.to_string(), value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
        .unwrap_or_default();
    LogRecord {
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
        key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
    }
}

/// One consumer client of a topic and the partitions it reads.
struct TopicClient {
    consumer: Arc<StreamConsumer>,
    partitions: HashMap<i32, Arc<Mutex<PartitionReader>>>,
    /// Serves the client's main queue (errors, events); aborted with the client.
    events: tokio::task::JoinHandle<()>,
}

impl Drop for TopicClient {
    fn drop(&mut self) {
        self.events.abort();
    }
}

impl TopicClient {
    fn new(config: ClientConfig, topic: &str) -> Result<TopicClient, LogError> {
        let consumer: Arc<StreamConsumer> = Arc::new(config.create().map_err(kafka("creating a reader"))?);
        let serve = consumer.clone();
        let topic = topic.to_string();
        let events = tokio::spawn(async move {
            loop {
                match serve.recv().await {
                    // Cannot happen while every partition is split before it is assigned; a
                    // record here would never reach its partition's reader, so say so loudly.
                    Ok(m) => tracing::error!(
                        topic = %topic,
                        partition = m.partition(),
                        offset = m.offset(),
                        "a Kafka record arrived on a reader client's main queue instead of its partition queue"
                    ),
                    Err(e) if is_transient(&e) => tracing::debug!(error = %e, "transient Kafka reader error"),
                    Err(e) => {
                        tracing::warn!(topic = %topic, error = %e, "Kafka reader client error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(TopicClient { consumer, partitions: HashMap::new(), events })
    }

    /// Adds `partition` to this client: splits its queue off (before any assignment, so its
    /// records never reach the main queue); the reader assigns it at its first read.
    fn add_partition(&mut self, topic: &str, partition: i32) -> Result<Arc<Mutex<PartitionReader>>, LogError> {
        let queue = self.consumer.split_partition_queue(topic, partition).ok_or_else(|| LogError::Io {
            context: format!("Kafka: a queue for {topic} partition {partition}"),
            source: std::io::Error::other("librdkafka has no such topic partition"),
        })?;
        let reader = Arc::new(Mutex::new(PartitionReader {
            consumer: self.consumer.clone(),
            queue,
            topic: topic.to_string(),
            partition,
            next_offset: -1,
        }));
        self.partitions.insert(partition, reader.clone());
        Ok(reader)
    }
}

/// The readers of every topic this process reads, by topic.
#[derive(Default)]
pub(super) struct Readers {
    topics: Mutex<HashMap<String, Vec<TopicClient>>>,
}

impl Readers {
    /// A reader for `partition` of `topic`, locked: preferably an idle one already positioned
    /// at `from_offset` (a consumer's next read), else any idle one (repositioned by its read),
    /// else a new one on a client that does not read this partition yet, else on a new client;
    /// past [`MAX_CLIENTS_PER_TOPIC`] it waits for a busy one. `config` makes a new client.
    pub(super) async fn reader(
        &self,
        topic: &str,
        partition: i32,
        from_offset: i64,
        config: impl FnOnce() -> ClientConfig,
    ) -> Result<OwnedMutexGuard<PartitionReader>, LogError> {
        let pick = {
            let mut topics = self.topics.lock().await;
            let clients = topics.entry(topic.to_string()).or_default();
            let mut idle: Vec<OwnedMutexGuard<PartitionReader>> =
                clients.iter().filter_map(|c| c.partitions.get(&partition)).filter_map(|r| r.clone().try_lock_owned().ok()).collect();
            if let Some(i) = idle.iter().position(|r| r.next_offset == from_offset) {
                Ok(idle.swap_remove(i))
            } else if let Some(r) = idle.pop() {
                Ok(r)
            } else {
                let free = clients.iter().position(|c| !c.partitions.contains_key(&partition));
                let client = match free {
                    Some(i) => Some(&mut clients[i]),
                    None if clients.len() < MAX_CLIENTS_PER_TOPIC => {
                        clients.push(TopicClient::new(config(), topic)?);
                        clients.last_mut()
                    }
                    None => None,
                };
                match client {
                    Some(client) => {
                        let reader = client.add_partition(topic, partition)?;
                        Ok(reader.try_lock_owned().map_err(|_| LogError::Io {
                            context: "Kafka: a new reader".into(),
                            source: std::io::Error::other("locked at creation"),
                        })?)
                    }
                    // Every client reads this partition and every such reader is busy: wait
                    // for the first.
                    None => Err(clients.iter().find_map(|c| c.partitions.get(&partition).cloned())),
                }
            }
        };
        match pick {
            Ok(guard) => Ok(guard),
            Err(Some(busy)) => Ok(busy.lock_owned().await),
            Err(None) => Err(LogError::Io {
                context: format!("Kafka: a reader for {topic} partition {partition}"),
                source: std::io::Error::other("no client"),
            }),
        }
    }

    /// How many consumer clients read `topic` (one per concurrent position in a partition).
    pub(super) async fn clients(&self, topic: &str) -> usize {
        self.topics.lock().await.get(topic).map_or(0, Vec::len)
    }
}
