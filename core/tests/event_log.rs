//! The event-log contract, written once and run against both implementations: the embedded
//! log and Kafka. The Kafka tests need a broker at `PRISM_KAFKA_BROKERS`, which
//! `./infra/test.sh` starts; without one they fail (they are never skipped).

use std::sync::Arc;
use std::time::Duration;

use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};
use prism_core::log::partitioner::partition_for_key;
use prism_core::log::{EventLog, NewRecord};

/// A topic name no other test run used.
fn fresh_topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("test.{name}.{}.{nanos}", std::process::id())
}

async fn keyed_append_reads_back_in_order<L: EventLog>(log: &L) {
    let topic = fresh_topic("append");
    assert_eq!(log.ensure_topic(&topic, 3).await.expect("create"), 3);
    assert_eq!(log.ensure_topic(&topic, 7).await.expect("exists"), 3, "an existing topic keeps its partitions");
    let keys = ["AAPL", "IBM", "MSFT", "GOOG", "FB"];
    let records: Vec<NewRecord> =
        (0..60).map(|i| NewRecord::new(keys[i % 5], format!("{{\"i\":{i}}}")).with_header("seq", i.to_string())).collect();
    let positions = log.append(&topic, records.clone()).await.expect("append");
    log.flush().await.expect("flush");
    assert_eq!(positions.len(), 60);
    let mut next = [0i64; 3];
    for (i, pos) in positions.iter().enumerate() {
        // Kafka's default partitioner: every client puts a key in the same partition.
        assert_eq!(pos.partition, partition_for_key(keys[i % 5].as_bytes(), 3), "record {i}");
        assert_eq!(pos.offset, next[pos.partition as usize], "dense offsets, input order kept per partition");
        next[pos.partition as usize] += 1;
    }
    assert_eq!(log.end_offsets(&topic).await.expect("ends"), next.to_vec());
    assert_eq!(log.start_offsets(&topic).await.expect("starts"), vec![0; 3], "nothing deleted: every log starts at 0");
    prism_core::log::check_log_complete(log, &topic).await.expect("a whole log passes Kappa's check");

    for p in 0..3 {
        let got = log.read(&topic, p, 0, 1_000, Duration::from_secs(5)).await.expect("read");
        let want: Vec<&NewRecord> = records.iter().zip(&positions).filter(|(_, pos)| pos.partition == p).map(|(r, _)| r).collect();
        // A read may return fewer than asked; keep reading until the partition's end.
        let mut got = got;
        while (got.len() as i64) < next[p as usize] {
            let more = log.read(&topic, p, got.len() as i64, 1_000, Duration::from_secs(5)).await.expect("read more");
            assert!(!more.is_empty(), "partition {p} stopped short");
            got.extend(more);
        }
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((&g.key, &g.value, &g.headers), (&w.key, &w.value, &w.headers));
        }
        assert!(got.iter().enumerate().all(|(i, r)| r.offset == i as i64 && r.partition == p));
    }
    // Reads start anywhere, and again from an earlier offset.
    let p = positions[0].partition;
    let tail = log.read(&topic, p, 5, 1_000, Duration::from_secs(5)).await.expect("read from 5");
    assert_eq!(tail.first().map(|r| r.offset), Some(5));
    let head = log.read(&topic, p, 1, 2, Duration::from_secs(5)).await.expect("read from 1");
    assert_eq!(head.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![1, 2]);
    // At the end: nothing, after waiting.
    let none = log.read(&topic, p, next[p as usize], 10, Duration::from_millis(300)).await.expect("read at end");
    assert!(none.is_empty());
}

async fn read_waits_for_a_later_append<L: EventLog>(log: Arc<L>) {
    let topic = fresh_topic("wait");
    log.ensure_topic(&topic, 1).await.expect("create");
    let reader = {
        let (log, topic) = (log.clone(), topic.clone());
        tokio::spawn(async move { log.read(&topic, 0, 0, 10, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    log.append(&topic, vec![NewRecord::new("k", "v")]).await.expect("append");
    let got = tokio::time::timeout(Duration::from_secs(20), reader).await.expect("in time").expect("join").expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, b"v");
}

fn embedded() -> (EmbeddedLog, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).expect("open"), dir)
}

async fn kafka() -> KafkaLog {
    let brokers = std::env::var("PRISM_KAFKA_BROKERS")
        .expect("PRISM_KAFKA_BROKERS is not set: run ./infra/test.sh, which starts a Kafka-protocol broker");
    KafkaLog::connect(KafkaLogConfig::new(brokers)).await.expect("connect to the broker")
}

mod embedded_log {
    use super::*;

    #[tokio::test]
    async fn keyed_append_reads_back_in_order() {
        let (log, _dir) = embedded();
        super::keyed_append_reads_back_in_order(&log).await;
    }

    #[tokio::test]
    async fn read_waits_for_a_later_append() {
        let (log, _dir) = embedded();
        super::read_waits_for_a_later_append(Arc::new(log)).await;
    }

    /// Many writers each appending then flushing at once (the HTTP ingest's pattern, grouped
    /// into shared fsync passes): every flush succeeds, and every record is there after the
    /// log is opened again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_are_grouped_and_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).expect("open"));
        log.ensure_topic("t", 3).await.expect("topic");
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..8 {
            let log = log.clone();
            tasks.spawn(async move {
                for i in 0..50 {
                    let records = (0..10).map(|k| NewRecord::new(format!("k{w}-{k}"), format!("{w}-{i}-{k}"))).collect();
                    log.append("t", records).await.expect("append");
                    log.flush().await.expect("flush");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer");
        }
        drop(log);
        let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).expect("reopen");
        let mut values = Vec::new();
        for p in 0..3 {
            for r in log.read("t", p, 0, 10_000, Duration::ZERO).await.expect("read") {
                values.push(String::from_utf8(r.value).expect("utf-8"));
            }
        }
        values.sort();
        values.dedup();
        assert_eq!(values.len(), 8 * 50 * 10, "every record once");
    }
}

mod kafka_log {
    use super::*;

    #[tokio::test]
    async fn keyed_append_reads_back_in_order() {
        super::keyed_append_reads_back_in_order(&kafka().await).await;
    }

    #[tokio::test]
    async fn read_waits_for_a_later_append() {
        super::read_waits_for_a_later_append(Arc::new(kafka().await)).await;
    }

    /// Issue 11: one consumer client per topic reads all its partitions (each through its own
    /// queue), and a second position in a partition at once takes a second client.
    #[tokio::test]
    async fn one_reader_client_per_topic_and_position() {
        let log = Arc::new(kafka().await);
        let topic = fresh_topic("clients");
        assert_eq!(log.ensure_topic(&topic, 4).await.expect("create"), 4);
        let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
        let positions = log.append(&topic, keys.iter().map(|k| NewRecord::new(k.as_str(), k.as_str())).collect()).await.expect("append");
        let ends = log.end_offsets(&topic).await.expect("ends");
        assert!(ends.iter().all(|&e| e > 1), "every partition has records: {ends:?}");
        // Interleaved reads of every partition, twice round: each answers its own partition only.
        let mut next = [0i64; 4];
        for _ in 0..2 {
            for p in 0..4 {
                let got = log.read(&topic, p, next[p as usize], 1, Duration::from_secs(10)).await.expect("read");
                assert_eq!(got.len(), 1, "partition {p}");
                assert_eq!((got[0].partition, got[0].offset), (p, next[p as usize]));
                let want = positions.iter().position(|pos| pos.partition == p && pos.offset == next[p as usize]).expect("appended");
                assert_eq!(got[0].key, keys[want].as_bytes());
                next[p as usize] += 1;
            }
        }
        assert_eq!(log.reader_clients(&topic).await, 1, "one client reads all four partitions");

        // Two positions in partition 0 at once (a replay next to the realtime version): one waits
        // at the end of the partition while the other reads from 0.
        let tail = {
            let (log, topic, end) = (log.clone(), topic.clone(), ends[0]);
            tokio::spawn(async move { log.read(&topic, 0, end, 10, Duration::from_secs(3)).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let head = log.read(&topic, 0, 0, 1_000, Duration::from_secs(10)).await.expect("read from 0");
        assert_eq!(head.first().map(|r| r.offset), Some(0));
        assert!(tail.await.expect("join").expect("read at the end").is_empty());
        assert_eq!(log.reader_clients(&topic).await, 2, "a second concurrent position takes a second client");

        // Moving a reader back and forth keeps the partition's order.
        for from in [3, 1, ends[0] - 1, 0] {
            let got = log.read(&topic, 0, from, 2, Duration::from_secs(10)).await.expect("reposition");
            assert_eq!(got.first().map(|r| r.offset), Some(from), "from {from}");
            assert!(got.windows(2).all(|w| w[1].offset == w[0].offset + 1));
        }
        assert_eq!(log.reader_clients(&topic).await, 2);
    }

    #[tokio::test]
    async fn connecting_to_nothing_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut config = KafkaLogConfig::new(format!("127.0.0.1:{port}"));
        config.request_timeout = Duration::from_secs(2);
        let err = KafkaLog::connect(config).await.err().expect("no broker there");
        assert!(err.to_string().contains("Kafka"), "{err}");
    }
}
