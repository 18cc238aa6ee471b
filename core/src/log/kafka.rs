//! The Kafka [`EventLog`] (DESIGN §7), on `rdkafka` (librdkafka).
//!
//! - Producer: idempotent (`enable.idempotence=true`, which implies `acks=all`), keyed
//!   partitioning with `murmur2_random`, librdkafka's name for the Java client's default
//!   partitioner — so [`super::partitioner::partition_for_key`] and every other Kafka client
//!   agree on where a key goes. No transactions (not needed: offsets live in the view store).
//! - Topics are created through the admin API with the configured partitions and replication
//!   factor.
//! - Reads use **one consumer client per topic**, its partitions assigned by hand at explicit
//!   offsets (never Kafka's committed offsets: the caller says where to read from, from what it
//!   stored in the view store) and split into a queue per partition ([`super::kafka_reader`]).
//!   A partition reader is re-positioned only when asked for another offset; a second position
//!   in the same partition at once (a replay next to the realtime version) takes a second client.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::kafka_reader::Readers;
use super::{EventLog, LogError, LogRecord, NewRecord};
use crate::event::LogPosition;

/// Settings of the Kafka log.
#[derive(Debug, Clone)]
pub struct KafkaLogConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Replication factor of topics Prism creates.
    pub replication_factor: i32,
    /// How long a request may take before it fails (metadata, produce queueing, flush).
    pub request_timeout: Duration,
    /// Client id prefix, shown in broker logs.
    pub client_id: String,
    /// Create topics with unlimited retention (`retention.ms=-1`, `retention.bytes=-1`): Kappa
    /// mode rebuilds views by replaying the log from offset 0, so it must keep everything.
    pub unlimited_retention: bool,
}

impl KafkaLogConfig {
    /// Defaults for `brokers`: replication factor 1, 10 s requests.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaLogConfig {
            brokers: brokers.into(),
            replication_factor: 1,
            request_timeout: Duration::from_secs(10),
            client_id: "prism".into(),
            unlimited_retention: false,
        }
    }
}

/// The Kafka-backed [`EventLog`].
pub struct KafkaLog {
    config: KafkaLogConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    metadata: Arc<BaseConsumer>,
    readers: Readers,
}

/// A librdkafka error as a [`LogError::Io`] saying what Prism was doing (`context`).
pub(super) fn kafka(context: &str) -> impl FnOnce(KafkaError) -> LogError + '_ {
    move |e| LogError::Io { context: format!("Kafka: {context}"), source: std::io::Error::other(e.to_string()) }
}

impl KafkaLog {
    /// (log start offset, log end offset) of every partition of `topic`.
    async fn watermarks(&self, topic: &str) -> Result<Vec<(i64, i64)>, LogError> {
        let n = self.partition_count(topic).await?.ok_or_else(|| LogError::OutOfRange(format!("no topic {topic:?} on the brokers")))?;
        let md = self.metadata.clone();
        let topic = topic.to_string();
        let timeout = self.config.request_timeout;
        tokio::task::spawn_blocking(move || {
            (0..n).map(|p| md.fetch_watermarks(&topic, p, timeout)).collect::<Result<Vec<(i64, i64)>, KafkaError>>()
        })
        .await
        .map_err(|e| LogError::Io { context: "Kafka watermark task".into(), source: std::io::Error::other(e.to_string()) })?
        .map_err(kafka("reading watermarks"))
    }

    /// Connects to the brokers and checks that they answer a metadata request.
    ///
    /// Errors: [`LogError::Io`] when a client cannot be created or no broker answers within the
    /// request timeout.
    pub async fn connect(config: KafkaLogConfig) -> Result<KafkaLog, LogError> {
        let timeout_ms = config.request_timeout.as_millis().to_string();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", format!("{}-producer", config.client_id))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("message.timeout.ms", &timeout_ms)
            .create()
            .map_err(kafka("creating the producer"))?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", format!("{}-admin", config.client_id))
            .create()
            .map_err(kafka("creating the admin client"))?;
        let metadata: BaseConsumer = base_consumer_config(&config, "metadata").create().map_err(kafka("creating the metadata client"))?;
        let metadata = Arc::new(metadata);
        let probe = metadata.clone();
        let timeout = config.request_timeout;
        tokio::task::spawn_blocking(move || probe.fetch_metadata(None, timeout).map(|_| ()))
            .await
            .map_err(|e| LogError::Io { context: "Kafka metadata task".into(), source: std::io::Error::other(e.to_string()) })?
            .map_err(kafka("reaching the brokers"))?;
        Ok(KafkaLog { config, producer, admin, metadata, readers: Readers::default() })
    }

    /// Deletes topics through the admin API (missing topics are not an error) and waits until
    /// the brokers no longer list them. For operators and tests that need a clean slate.
    ///
    /// Errors: [`LogError::Io`] when the brokers refuse or time out.
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<(), LogError> {
        let options = AdminOptions::new().operation_timeout(Some(Timeout::After(self.config.request_timeout)));
        let results = self.admin.delete_topics(topics, &options).await.map_err(kafka("deleting topics"))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => {
                    return Err(LogError::Io {
                        context: format!("Kafka: deleting topic {name}"),
                        source: std::io::Error::other(code.to_string()),
                    })
                }
            }
        }
        for topic in topics {
            for _ in 0..50 {
                if self.partition_count(topic).await?.is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<Option<i32>, LogError> {
        let md = self.metadata.clone();
        let topic_name = topic.to_string();
        let timeout = self.config.request_timeout;
        let md = tokio::task::spawn_blocking(move || md.fetch_metadata(Some(&topic_name), timeout))
            .await
            .map_err(|e| LogError::Io { context: "Kafka metadata task".into(), source: std::io::Error::other(e.to_string()) })?
            .map_err(kafka("reading topic metadata"))?;
        Ok(md.topics().iter().find(|t| t.name() == topic).and_then(|t| {
            let n = t.partitions().len() as i32;
            (t.error().is_none() && n > 0).then_some(n)
        }))
    }

    /// How many consumer clients this log keeps for reading `topic`: one per concurrent
    /// position in a partition, whatever the partition count (for tests and diagnostics).
    pub async fn reader_clients(&self, topic: &str) -> usize {
        self.readers.clients(topic).await
    }
}

fn base_consumer_config(config: &KafkaLogConfig, role: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", format!("{}-{role}", config.client_id))
        // Readers are assigned partitions explicitly; the group id is only a label here and no
        // offset is ever committed to Kafka (offsets live in the view store).
        .set("group.id", format!("{}-{role}", config.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        // Brokers that do not answer a fetch as soon as data arrives (Tansu 0.6 holds it for the
        // whole wait) would add up to this much latency to every event.
        .set("fetch.wait.max.ms", "50")
        .set("isolation.level", "read_uncommitted");
    c
}

impl EventLog for KafkaLog {
    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<i32, LogError> {
        if let Some(n) = self.partition_count(topic).await? {
            return Ok(n);
        }
        let mut new = NewTopic::new(topic, partitions.max(1), TopicReplication::Fixed(self.config.replication_factor));
        if self.config.unlimited_retention {
            new = new.set("retention.ms", "-1").set("retention.bytes", "-1");
        }
        let options = AdminOptions::new().operation_timeout(Some(Timeout::After(self.config.request_timeout)));
        let results = self.admin.create_topics(&[new], &options).await.map_err(kafka("creating a topic"))?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Io {
                        context: format!("Kafka: creating topic {name}"),
                        source: std::io::Error::other(code.to_string()),
                    })
                }
            }
        }
        // Metadata can lag topic creation by a moment.
        for _ in 0..50 {
            if let Some(n) = self.partition_count(topic).await? {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(LogError::OutOfRange(format!("topic {topic} was created but does not show in metadata")))
    }

    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<LogPosition>, LogError> {
        // Enqueue everything first (send_result does not wait), then collect the deliveries in
        // order; with idempotence on, librdkafka keeps each partition's order.
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (name, value) in &r.headers {
                headers = headers.insert(Header { key: name, value: Some(value) });
            }
            let mut record = FutureRecord::to(topic).key(&r.key).payload(&r.value).headers(headers).timestamp(r.timestamp_ms);
            let deadline = tokio::time::Instant::now() + self.config.request_timeout;
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if tokio::time::Instant::now() < deadline => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(kafka("producing")(e)),
                }
            }
        }
        let mut positions = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let delivered = d.await.map_err(|_| LogError::Io {
                context: "Kafka: producing".into(),
                source: std::io::Error::other("the producer was dropped before delivery"),
            })?;
            let d = delivered.map_err(|(e, _)| kafka("producing")(e))?;
            positions.push(LogPosition { partition: d.partition, offset: d.offset });
        }
        Ok(positions)
    }

    async fn read(
        &self,
        topic: &str,
        partition: i32,
        from_offset: i64,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<LogRecord>, LogError> {
        let config = || base_consumer_config(&self.config, &format!("reader-{topic}"));
        let mut reader = self.readers.reader(topic, partition, from_offset, config).await?;
        reader.read(from_offset, max_records, max_wait).await
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, LogError> {
        Ok(self.watermarks(topic).await?.into_iter().map(|(_, high)| high).collect())
    }

    async fn start_offsets(&self, topic: &str) -> Result<Vec<i64>, LogError> {
        Ok(self.watermarks(topic).await?.into_iter().map(|(low, _)| low).collect())
    }

    async fn flush(&self) -> Result<(), LogError> {
        let producer = self.producer.clone();
        let timeout = self.config.request_timeout;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| LogError::Io { context: "Kafka flush task".into(), source: std::io::Error::other(e.to_string()) })?
            .map_err(kafka("flushing the producer"))
    }
}
