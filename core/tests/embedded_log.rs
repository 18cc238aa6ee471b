//! The embedded event log: append, read, reopen, torn tail, CRC mismatch, segment roll.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::partitioner::partition_for_key;
use prism_core::log::{EventLog, LogError, NewRecord};

const TOPIC: &str = "t";
const NO_WAIT: Duration = Duration::ZERO;

fn config(segment_bytes: u64) -> EmbeddedLogConfig {
    EmbeddedLogConfig { fsync: FsyncPolicy::Always, segment_bytes }
}

fn record(key: &str, i: usize) -> NewRecord {
    NewRecord::new(key, format!("value-{i}")).with_header("seq", i.to_string())
}

fn segments(dir: &Path, partition: i32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(dir.join(TOPIC).join(partition.to_string())).expect("partition dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

#[tokio::test]
async fn append_read_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), config(64 << 20)).expect("open");
    assert_eq!(log.ensure_topic(TOPIC, 3).await.expect("topic"), 3);
    let keys = ["AAPL", "IBM", "MSFT", "GOOG", "FB"];
    let records: Vec<NewRecord> = (0..100).map(|i| record(keys[i % 5], i)).collect();
    let positions = log.append(TOPIC, records.clone()).await.expect("append");
    assert_eq!(positions.len(), 100);
    for (i, pos) in positions.iter().enumerate() {
        assert_eq!(pos.partition, partition_for_key(keys[i % 5].as_bytes(), 3));
    }
    let ends = log.end_offsets(TOPIC).await.expect("ends");
    assert_eq!(ends.iter().sum::<i64>(), 100);

    // Every record reads back at its position, with key, value and headers.
    for (i, pos) in positions.iter().enumerate() {
        let got = log.read(TOPIC, pos.partition, pos.offset, 1, NO_WAIT).await.expect("read");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset, pos.offset);
        assert_eq!(got[0].value, records[i].value);
        assert_eq!(got[0].header("seq"), Some(i.to_string().as_bytes()));
    }
    // Reading at the end returns nothing after the wait; past the end is an error.
    let at_end = log.read(TOPIC, 0, ends[0], 10, Duration::from_millis(20)).await.expect("read at end");
    assert!(at_end.is_empty());
    assert!(matches!(log.read(TOPIC, 0, ends[0] + 1, 10, NO_WAIT).await, Err(LogError::OutOfRange(_))));
    assert!(matches!(log.read(TOPIC, 7, 0, 10, NO_WAIT).await, Err(LogError::OutOfRange(_))));
    drop(log);

    let log = EmbeddedLog::open(dir.path(), config(64 << 20)).expect("reopen");
    assert_eq!(log.end_offsets(TOPIC).await.expect("ends"), ends);
    assert_eq!(log.ensure_topic(TOPIC, 8).await.expect("existing topic keeps its partitions"), 3);
    let p = positions[0].partition;
    let all = log.read(TOPIC, p, 0, 1000, NO_WAIT).await.expect("read all");
    assert_eq!(all.len() as i64, ends[p as usize]);
    assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as i64));
    // Appends continue at the old end.
    let more = log.append(TOPIC, vec![record("AAPL", 100)]).await.expect("append after reopen");
    let pa = partition_for_key(b"AAPL", 3);
    assert_eq!(more[0].offset, ends[pa as usize]);
}

#[tokio::test]
async fn segments_roll_and_read_across() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), config(1_000)).expect("open");
    log.ensure_topic(TOPIC, 1).await.expect("topic");
    for i in 0..50 {
        log.append(TOPIC, vec![record("k", i)]).await.expect("append");
    }
    assert!(segments(dir.path(), 0).len() > 2, "small segments roll");
    let all = log.read(TOPIC, 0, 3, 1000, NO_WAIT).await.expect("read across segments");
    assert_eq!(all.len(), 47);
    assert_eq!(all[0].value, b"value-3");
    assert_eq!(all[46].value, b"value-49");
    drop(log);
    let log = EmbeddedLog::open(dir.path(), config(1_000)).expect("reopen");
    assert_eq!(log.end_offsets(TOPIC).await.expect("ends"), vec![50]);
}

/// Kappa mode refuses a log whose head is gone, naming the topic, the partition and the offset
/// it starts at.
#[tokio::test]
async fn a_log_without_its_first_segment_is_not_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), config(1_000)).expect("open");
    log.ensure_topic(TOPIC, 1).await.expect("topic");
    for i in 0..50 {
        log.append(TOPIC, vec![record("k", i)]).await.expect("append");
    }
    prism_core::log::check_log_complete(&log, TOPIC).await.expect("whole");
    drop(log);
    let first = segments(dir.path(), 0).into_iter().min().expect("a segment");
    std::fs::remove_file(&first).expect("remove the first segment");
    let log = EmbeddedLog::open(dir.path(), config(1_000)).expect("reopen");
    let start = log.start_offsets(TOPIC).await.expect("starts")[0];
    assert!(start > 0, "the head is gone");
    let refused = prism_core::log::check_log_complete(&log, TOPIC).await.expect_err("not whole").to_string();
    assert!(refused.contains(&format!("{TOPIC} partition 0 starts at offset {start}")), "{refused}");
}

#[tokio::test]
async fn torn_tail_is_cut_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), config(64 << 20)).expect("open");
    log.ensure_topic(TOPIC, 1).await.expect("topic");
    log.append(TOPIC, (0..10).map(|i| record("k", i)).collect()).await.expect("append");
    drop(log);
    let seg = segments(dir.path(), 0).pop().expect("segment");
    let len = fs::metadata(&seg).expect("meta").len();
    // A torn write: half of a frame's header and body at the tail.
    let mut f = OpenOptions::new().append(true).open(&seg).expect("open segment");
    f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 9, 9]).expect("write torn tail");
    drop(f);

    let log = EmbeddedLog::open(dir.path(), config(64 << 20)).expect("reopen cuts the tail");
    assert_eq!(log.end_offsets(TOPIC).await.expect("ends"), vec![10]);
    assert_eq!(fs::metadata(&seg).expect("meta").len(), len, "file cut back to the last whole record");
    let pos = log.append(TOPIC, vec![record("k", 10)]).await.expect("append after recovery");
    assert_eq!(pos[0].offset, 10);
    let all = log.read(TOPIC, 0, 0, 100, NO_WAIT).await.expect("read");
    assert_eq!(all.len(), 11);
    assert_eq!(all[10].value, b"value-10");
}

#[tokio::test]
async fn crc_mismatch_cuts_the_tail_from_the_bad_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), config(64 << 20)).expect("open");
    log.ensure_topic(TOPIC, 1).await.expect("topic");
    log.append(TOPIC, (0..10).map(|i| record("k", i)).collect()).await.expect("append");
    drop(log);
    let seg = segments(dir.path(), 0).pop().expect("segment");
    let mut bytes = fs::read(&seg).expect("read segment");
    let frame = bytes.len() / 10; // all frames have the same size here
    bytes[7 * frame + 20] ^= 0x55; // flip a bit inside record 7's body
    fs::write(&seg, &bytes).expect("write back");

    let log = EmbeddedLog::open(dir.path(), config(64 << 20)).expect("reopen");
    assert_eq!(log.end_offsets(TOPIC).await.expect("ends"), vec![7], "records 7.. are cut");
    let all = log.read(TOPIC, 0, 0, 100, NO_WAIT).await.expect("read");
    assert_eq!(
        all.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
        (0..7).map(|i| format!("value-{i}").into_bytes()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn crc_mismatch_in_a_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), config(500)).expect("open");
    log.ensure_topic(TOPIC, 1).await.expect("topic");
    for i in 0..30 {
        log.append(TOPIC, vec![record("k", i)]).await.expect("append");
    }
    drop(log);
    let first = segments(dir.path(), 0).remove(0);
    let mut bytes = fs::read(&first).expect("read");
    bytes[12] ^= 0x01;
    fs::write(&first, &bytes).expect("write");
    match EmbeddedLog::open(dir.path(), config(500)) {
        Err(LogError::Corrupt(msg)) => assert!(msg.contains("CRC"), "{msg}"),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, got an open log"),
    }
}

#[tokio::test]
async fn read_waits_for_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(EmbeddedLog::open(dir.path(), config(64 << 20)).expect("open"));
    log.ensure_topic(TOPIC, 1).await.expect("topic");
    let reader = {
        let log = log.clone();
        tokio::spawn(async move { log.read(TOPIC, 0, 0, 10, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.append(TOPIC, vec![record("k", 0)]).await.expect("append");
    let got = tokio::time::timeout(Duration::from_secs(5), reader).await.expect("woken before its deadline").expect("join").expect("read");
    assert_eq!(got.len(), 1);
}

#[test]
fn fsync_policy_parses() {
    assert_eq!("always".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Always));
    assert_eq!("never".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Never));
    assert_eq!("interval:250".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Interval(Duration::from_millis(250))));
    assert!("sometimes".parse::<FsyncPolicy>().is_err());
}
