//! The historical feed resumes without duplicates: trades that reached the log after the last
//! checkpoint are found in the log and not appended again.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use prism_core::event::{DeadLetter, DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::{EventLog, LogRecord, NewRecord};
use prism_core::store::ViewStore;
use prism_ingest::feed::{run_feed, FeedConfig, FeedSpeed};
use tokio_util::sync::CancellationToken;

const CSV: &str = "Date,Open,High,Low,Close,Volume\n\
    2010-01-04,10,11,9,10.5,1000\n\
    2010-01-05,10.5,12,10,11,2000\n\
    2010-01-06,11,11.5,10.25,11.25,1500\n\
    2010-01-07,bad,1,1,1,1\n\
    2010-01-08,11.25,11.25,11.25,11.25,3\n\
    2010-01-05,1,1,1,1,9\n";

fn config(file: &std::path::Path) -> FeedConfig {
    FeedConfig { files: vec![file.to_path_buf()], symbol: Some("ACME".into()), trades_per_day: 8, speed: FeedSpeed::Max, partitions: 2 }
}

async fn total(log: &EmbeddedLog) -> i64 {
    log.end_offsets(QUOTES_TOPIC).await.expect("ends").iter().sum()
}

/// Every record of `prism.quotes`, partition by partition.
async fn read_all(log: &EmbeddedLog) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for p in 0..log.end_offsets(QUOTES_TOPIC).await.expect("ends").len() {
        out.extend(log.read(QUOTES_TOPIC, p as i32, 0, 10_000, Duration::ZERO).await.expect("read"));
    }
    out
}

#[tokio::test]
async fn resumes_after_a_lost_checkpoint_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("acme.csv");
    std::fs::File::create(&file).and_then(|mut f| f.write_all(CSV.as_bytes())).expect("csv");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log"));
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");

    let appended = run_feed(config(&file), log.clone(), store.clone(), CancellationToken::new()).await.expect("feed");
    // 8 + 8 + 8 + 3 trades (the last day has 3 shares: one trade per share); the bad row and the
    // second bar for 2010-01-05 refused.
    assert_eq!(appended, 27);
    assert_eq!(total(&log).await, 27);
    let mut checkpoint = store.feed_checkpoints().await.expect("checkpoints").pop().expect("one feed");
    assert!(checkpoint.done);
    assert_eq!(checkpoint.rows_refused, 2);
    let counters = store.ingest_counters().await.expect("counters");
    assert_eq!((counters[0].accepted, counters[0].refused), (27, 2));
    // Both refused rows are on the dead-letter topic, each naming its file and line.
    let letters = log.read(DLQ_TOPIC, 0, 0, 10, Duration::ZERO).await.expect("read the DLQ");
    let mut sources: Vec<String> =
        letters.iter().map(|r| serde_json::from_slice::<DeadLetter>(&r.value).expect("a dead letter").source).collect();
    sources.sort();
    let name = file.display().to_string();
    assert_eq!(sources, vec![format!("feed:{name}:5"), format!("feed:{name}:7")]);

    // As if the process died right after appending everything but before its checkpoints:
    // rewind the checkpoint to the start.
    checkpoint.next_seq = 0;
    checkpoint.days_done = 0;
    checkpoint.done = false;
    checkpoint.end_offsets = vec![0, 0];
    store.save_feed_checkpoint(&checkpoint, -27, 0).await.expect("rewind");
    let again = run_feed(config(&file), log.clone(), store.clone(), CancellationToken::new()).await.expect("feed again");
    assert_eq!(again, 0, "nothing appended twice");
    assert_eq!(total(&log).await, 27);
    let counters = store.ingest_counters().await.expect("counters");
    assert_eq!(counters[0].accepted, 27, "recovered trades are counted once");
    let recovered = store.feed_checkpoints().await.expect("checkpoints").pop().expect("one feed");
    assert!(recovered.done, "every day was in the log: the feed is complete");
    assert_eq!(recovered.days_done, checkpoint.days_total);
    assert_eq!(recovered.feed_date.as_deref(), Some("2010-01-08"));

    // A crash in the middle of a day: a fresh data dir whose log holds the clean run's first
    // 12 trades (day 1 and half of day 2) and whose checkpoint is the initial one.
    let crashed = dir.path().join("crashed");
    let log_b = Arc::new(EmbeddedLog::open(crashed.join("log"), EmbeddedLogConfig::default()).expect("log"));
    let store_b = ViewStore::open_sqlite(&crashed.join("views.sqlite")).await.expect("store");
    let stopped = CancellationToken::new();
    stopped.cancel();
    assert_eq!(run_feed(config(&file), log_b.clone(), store_b.clone(), stopped).await.expect("initial checkpoint"), 0);
    let clean = read_all(&log).await;
    assert_eq!(clean.len(), 27);
    let first: Vec<NewRecord> = clean[..12]
        .iter()
        .map(|r| NewRecord { key: r.key.clone(), value: r.value.clone(), headers: r.headers.clone(), timestamp_ms: r.timestamp_ms })
        .collect();
    log_b.append(QUOTES_TOPIC, first).await.expect("append the first 12");
    let resumed = run_feed(config(&file), log_b.clone(), store_b.clone(), CancellationToken::new()).await.expect("resume");
    assert_eq!(resumed, 15, "only the trades missing from the log are appended");
    let after = read_all(&log_b).await;
    let strip = |rs: &[LogRecord]| rs.iter().map(|r| (r.key.clone(), r.value.clone(), r.headers.clone())).collect::<Vec<_>>();
    assert_eq!(strip(&after), strip(&clean), "the resumed log equals the clean run's, record for record");
    assert_eq!(store_b.ingest_counters().await.expect("counters")[0].accepted, 27);

    // Other settings on the same data are refused with a clear message.
    let mut other = config(&file);
    other.trades_per_day = 9;
    let err = run_feed(other, log.clone(), store.clone(), CancellationToken::new()).await.expect_err("refused");
    assert!(err.to_string().contains("other settings"), "{err}");
}

/// A crash in the middle of one append: the embedded log writes a batch partition after
/// partition (Kafka sends one per partition), so a trading day can reach partition 0 and not
/// partition 1. The resumed feed appends the trades partition 1 misses, and nothing twice.
#[tokio::test]
async fn completes_an_append_that_reached_one_partition_and_not_the_other() {
    use prism_core::log::partitioner::partition_for_key;
    use prism_ingest::feed::FEED_SEQ_HEADER;

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("four.csv");
    let symbols = ["AAA", "BBB", "CCC", "DDD", "EEE"];
    let mut csv = String::from("Ticker,Date,Open,High,Low,Close,Volume\n");
    for date in ["2011-03-01", "2011-03-02", "2011-03-03"] {
        for s in symbols {
            csv.push_str(&format!("{s},{date},10,11,9,10.5,1000\n"));
        }
    }
    std::fs::write(&file, csv).expect("csv");
    let partitions: Vec<i32> = symbols.iter().map(|s| partition_for_key(s.as_bytes(), 2)).collect();
    assert!(partitions.contains(&0) && partitions.contains(&1), "the symbols use both partitions: {partitions:?}");
    let config = FeedConfig { files: vec![file.clone()], symbol: None, trades_per_day: 8, speed: FeedSpeed::Max, partitions: 2 };
    let per_day = 8 * symbols.len() as i64;

    let clean_log = Arc::new(EmbeddedLog::open(dir.path().join("clean/log"), EmbeddedLogConfig::default()).expect("log"));
    let clean_store = ViewStore::open_sqlite(&dir.path().join("clean.sqlite")).await.expect("store");
    assert_eq!(run_feed(config.clone(), clean_log.clone(), clean_store, CancellationToken::new()).await.expect("feed"), 3 * per_day);
    let clean = read_all(&clean_log).await;

    // The crashed run: its initial checkpoint, day 1 whole, and day 2 only in partition 0.
    let log = Arc::new(EmbeddedLog::open(dir.path().join("torn/log"), EmbeddedLogConfig::default()).expect("log"));
    let store = ViewStore::open_sqlite(&dir.path().join("torn.sqlite")).await.expect("store");
    let stopped = CancellationToken::new();
    stopped.cancel();
    assert_eq!(run_feed(config.clone(), log.clone(), store.clone(), stopped).await.expect("initial checkpoint"), 0);
    let seq = |r: &LogRecord| std::str::from_utf8(r.header(FEED_SEQ_HEADER).expect("seq")).expect("utf-8").parse::<i64>().expect("number");
    let landed: Vec<NewRecord> = clean
        .iter()
        .filter(|r| seq(r) < per_day || (r.partition == 0 && seq(r) < 2 * per_day))
        .map(|r| NewRecord { key: r.key.clone(), value: r.value.clone(), headers: r.headers.clone(), timestamp_ms: r.timestamp_ms })
        .collect();
    let landed_n = landed.len() as i64;
    log.append(QUOTES_TOPIC, landed).await.expect("append what landed");
    assert!(landed_n > per_day && landed_n < 2 * per_day, "day 2 landed in one partition only: {landed_n}");

    let resumed = run_feed(config, log.clone(), store.clone(), CancellationToken::new()).await.expect("resume");
    assert_eq!(resumed, 3 * per_day - landed_n, "what partition 1 missed of day 2, then day 3");
    let strip = |rs: &[LogRecord]| rs.iter().map(|r| (r.partition, r.key.clone(), r.value.clone(), r.headers.clone())).collect::<Vec<_>>();
    assert_eq!(strip(&read_all(&log).await), strip(&clean), "every trade once, in each partition's order");
    assert_eq!(store.ingest_counters().await.expect("counters")[0].accepted, 3 * per_day, "each trade counted once");
    assert!(store.feed_checkpoints().await.expect("checkpoints").pop().expect("one feed").done);
}
