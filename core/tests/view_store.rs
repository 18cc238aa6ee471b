//! The view store's contract. Each test body takes a fresh store, so every backend runs the
//! same bodies (SQLite now; PostgreSQL joins through `backends()`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use prism_core::decimal::Decimal6;
use prism_core::ohlcv::{EventKey, Ohlcv, OhlcvKey, OhlcvRow};
use prism_core::store::{ConsumerOffset, FeedCheckpoint, PartitionLease, StoreError, ViewStore};

/// A fresh, empty store per backend, and the guard that keeps its files alive. PostgreSQL is
/// the server at `PRISM_DATABASE_URL` (started by `./infra/test.sh`); each call creates a new
/// database there. Without the server the tests fail: they are never skipped.
async fn backends() -> Vec<(&'static str, ViewStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("sqlite");
    let postgres = ViewStore::connect_postgres(&fresh_postgres_database().await, Duration::from_secs(10)).await.expect("postgres");
    vec![("sqlite", sqlite, dir), ("postgres", postgres, tempfile::tempdir().expect("tempdir"))]
}

/// Creates an empty database on the test server and returns its URL.
async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("PRISM_DATABASE_URL")
        .expect("PRISM_DATABASE_URL is not set: run ./infra/test.sh, which starts PostgreSQL");
    let name = format!("prism_test_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect to the test server");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{name}")
}

fn row(symbol: &str, minute: i64, price_units: i128, size: i64, offset: i64) -> OhlcvRow {
    let ts = minute * 60_000;
    OhlcvRow {
        key: OhlcvKey { symbol: symbol.into(), window_start_ms: ts },
        agg: Ohlcv::of_trade(EventKey { ts_ms: ts + 1, partition: 1, offset }, Decimal6::from_units(price_units), size),
    }
}

fn off(partition: i32, next_offset: i64, max: Option<i64>) -> ConsumerOffset {
    ConsumerOffset { partition, next_offset, max_event_ts_ms: max }
}

#[tokio::test]
async fn realtime_rows_and_offsets_commit_together() {
    for (name, store, _dir) in backends().await {
        assert!(store.consumer_offsets("c", "t").await.expect("offsets").is_empty(), "{name}");
        let a = row("AAA", 10, 1_500_000, 10, 0);
        let b = row("BBB", 10, 2_000_000, 5, 1);
        store.commit_realtime("c", "t", 1, &[a.clone(), b.clone()], &[off(0, 2, Some(600_001))], &[], None).await.expect("commit");
        assert_eq!(store.consumer_offsets("c", "t").await.expect("offsets"), vec![off(0, 2, Some(600_001))], "{name}");
        // An upsert replaces the row; other versions are separate.
        let a2 = OhlcvRow { key: a.key.clone(), agg: a.agg.merge(&row("AAA", 10, 1_400_000, 1, 7).agg) };
        store.commit_realtime("c", "t", 1, std::slice::from_ref(&a2), &[off(0, 8, Some(600_001)), off(1, 3, None)], &[], None).await.expect("commit");
        store.commit_realtime("c", "t", 2, &[row("AAA", 10, 9_000_000, 1, 9)], &[], &[], None).await.expect("commit v2");
        let mut rows = store.realtime_rows_since(1, i64::MIN).await.expect("rows");
        rows.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(rows, vec![a2.clone(), b.clone()], "{name}");
        assert_eq!(store.realtime_row(1, &a.key).await.expect("row"), Some(a2.agg), "{name}");
        assert_eq!(store.realtime_row(1, &OhlcvKey { symbol: "ZZZ".into(), window_start_ms: 0 }).await.expect("row"), None);
        assert_eq!(store.realtime_rows_since(1, 11 * 60_000).await.expect("rows"), vec![], "{name}");
        // Dropping behind a horizon deletes older windows of that version only.
        store.commit_realtime("c", "t", 1, &[row("AAA", 12, 1_000_000, 1, 10)], &[], &[], Some(11 * 60_000)).await.expect("drop");
        let rows = store.realtime_rows_since(1, i64::MIN).await.expect("rows");
        assert_eq!(rows.iter().map(|r| r.key.window_start_ms).collect::<Vec<_>>(), vec![12 * 60_000], "{name}");
        assert_eq!(store.realtime_rows_since(2, i64::MIN).await.expect("rows").len(), 1, "{name}");
    }
}

#[tokio::test]
async fn a_claimed_partition_fences_its_former_owner() {
    for (name, store, _dir) in backends().await {
        let a = store.claim_partitions("c", "t", &[0, 1], "instance-a", 1_000).await.expect("claim a");
        assert_eq!(a, vec![PartitionLease { partition: 0, epoch: 1 }, PartitionLease { partition: 1, epoch: 1 }], "{name}");
        store.commit_realtime("c", "t", 1, &[row("AAA", 1, 1_000_000, 1, 0)], &[off(0, 1, Some(60_001)), off(1, 0, None)], &a, None).await.expect("owner commits");

        // Instance B takes partition 1 over (a rebalance A has not heard of yet).
        let b = store.claim_partitions("c", "t", &[1], "instance-b", 2_000).await.expect("claim b");
        assert_eq!(b, vec![PartitionLease { partition: 1, epoch: 2 }], "{name}");
        let refused = store.commit_realtime("c", "t", 1, &[row("BBB", 1, 5_000_000, 9, 3)], &[off(0, 2, Some(60_001)), off(1, 4, Some(60_001))], &a, None).await;
        assert!(matches!(refused, Err(StoreError::Fenced { held: 1, expected: 2, .. })), "{name}: {refused:?}");
        // Nothing of the fenced commit was written: neither rows nor offsets.
        assert_eq!(store.realtime_rows_since(1, i64::MIN).await.expect("rows").len(), 1, "{name}");
        assert_eq!(store.consumer_offsets("c", "t").await.expect("offsets"), vec![off(0, 1, Some(60_001)), off(1, 0, None)], "{name}");
        assert_eq!(store.lost_leases("c", "t", &a).await.expect("lost"), vec![1], "{name}");

        // A keeps partition 0; B commits partition 1.
        store.commit_realtime("c", "t", 1, &[], &[off(0, 2, Some(60_001))], &a[..1], None).await.expect("a keeps partition 0");
        store.commit_realtime("c", "t", 1, &[], &[off(1, 4, None)], &b, None).await.expect("b owns partition 1");
        let leases = store.leases("t").await.expect("leases");
        let owners: Vec<(i32, i64, &str, i64)> = leases.iter().map(|l| (l.partition, l.epoch, l.owner.as_str(), l.claimed_at_ms)).collect();
        assert_eq!(owners, vec![(0, 1, "instance-a", 1_000), (1, 2, "instance-b", 2_000)], "{name}");
        // The commits renewed the leases they checked (claims were stamped in 1970).
        assert!(leases.iter().all(|l| l.renewed_at_ms > 1_700_000_000_000), "{name}: {leases:?}");
        // Another consumer's leases are separate.
        assert_eq!(store.claim_partitions("d", "t", &[1], "x", 0).await.expect("claim d")[0].epoch, 1, "{name}");
    }
}

#[tokio::test]
async fn money_survives_beyond_i64() {
    for (name, store, _dir) in backends().await {
        // Notional past i64's 9.2e18 micro-units: 10^12 shares at 10^6 per share.
        let big = Ohlcv::of_trade(EventKey { ts_ms: 0, partition: 0, offset: 0 }, Decimal6::from_units(999_999_999_999_999_999), 1_000_000_000_000);
        let key = OhlcvKey { symbol: "BIG".into(), window_start_ms: 0 };
        store.commit_realtime("c", "t", 1, &[OhlcvRow { key: key.clone(), agg: big }], &[], &[], None).await.expect("commit");
        let back = store.realtime_row(1, &key).await.expect("row").expect("present");
        assert_eq!(back, big, "{name}");
        assert_eq!(back.notional.units(), 999_999_999_999_999_999i128 * 1_000_000_000_000, "{name}");
    }
}

#[tokio::test]
async fn batch_versions_publish_atomically() {
    for (name, store, _dir) in backends().await {
        let state = store.serving_state().await.expect("state");
        assert_eq!((state.batch_version, state.batch_horizon_ms, state.realtime_version), (None, None, 1), "{name}");
        let v1 = store.next_batch_version().await.expect("version");
        assert_eq!(v1, 1);
        let rows: Vec<OhlcvRow> = (0..2_500).map(|m| row("AAA", m, 1_000_000 + m as i128, 1, m)).collect();
        store.write_batch_rows(v1, 60_000, &rows).await.expect("write");
        // Roll-ups as the batch job writes them: hours (partial last hour included) and the day.
        let hours: Vec<OhlcvRow> = (0..42)
            .map(|h| OhlcvRow { key: OhlcvKey { symbol: "AAA".into(), window_start_ms: h * 3_600_000 }, agg: rows[(h * 60) as usize].agg })
            .collect();
        store.write_batch_rows(v1, 3_600_000, &hours).await.expect("write hours");
        store.write_batch_rows(v1, 86_400_000, &[OhlcvRow { key: OhlcvKey { symbol: "AAA".into(), window_start_ms: 0 }, agg: rows[0].agg }]).await.expect("write day");
        // Written but unpublished: serving does not see it.
        let snap = store.bars_snapshot("AAA", i64::MIN, i64::MAX, 60_000, 10_000).await.expect("snapshot");
        assert!(snap.batch.is_empty(), "{name}");
        assert!(!store.symbol_known("AAA").await.expect("known"), "{name}");
        store.publish_batch_version(v1, 2_000 * 60_000, 2_500, 2_500).await.expect("publish");
        assert!(store.symbol_known("AAA").await.expect("known"), "{name}");
        // Batch rows are read below the horizon only, realtime rows from it on.
        store.commit_realtime("c", "t", 1, &[row("AAA", 1_999, 7, 1, 1), row("AAA", 2_000, 8, 1, 2)], &[], &[], None).await.expect("rt");
        let snap = store.bars_snapshot("AAA", i64::MIN, i64::MAX, 60_000, 10_000).await.expect("snapshot");
        assert_eq!(snap.batch.len(), 2_000, "{name}");
        assert_eq!(snap.realtime.iter().map(|r| r.key.window_start_ms).collect::<Vec<_>>(), vec![2_000 * 60_000], "{name}");
        let snap = store.bars_snapshot("AAA", 100 * 60_000, 110 * 60_000, 60_000, 5).await.expect("snapshot");
        assert_eq!(snap.batch.iter().map(|r| r.key.window_start_ms / 60_000).collect::<Vec<_>>(), vec![100, 101, 102, 103, 104], "{name}");
        assert_eq!(store.symbols().await.expect("symbols"), vec!["AAA".to_string()], "{name}");
        // At 1h: whole hours before H pre-rolled (H = minute 2000 = 33h 20m), then the 1-minute
        // rows of the hour holding H, then realtime from H.
        let snap = store.bars_snapshot("AAA", 30 * 3_600_000, i64::MAX, 3_600_000, 10_000).await.expect("snapshot");
        let starts: Vec<i64> = snap.batch.iter().map(|r| r.key.window_start_ms / 60_000).collect();
        assert_eq!(starts, [1800, 1860, 1920].into_iter().chain(1980..2000).collect::<Vec<_>>(), "{name}");
        assert_eq!(snap.batch[0].agg, rows[1800].agg, "{name}: the pre-rolled hour row");
        assert_eq!(snap.realtime.len(), 1, "{name}");

        // A second version replaces the first; leftovers of an unpublished run are deleted.
        let v2 = store.next_batch_version().await.expect("version");
        assert_eq!(v2, 2);
        store.write_batch_rows(v2, 60_000, &rows[..10]).await.expect("write v2");
        store.write_batch_rows(99, 60_000, &rows[..3]).await.expect("an abandoned run");
        assert_eq!(store.next_batch_version().await.expect("version"), 100, "{name}: above every written version");
        store.publish_batch_version(v2, 3_000 * 60_000, 10, 10).await.expect("publish v2");
        let deleted = store.delete_unpublished_batch_rows().await.expect("delete");
        assert_eq!(deleted, 2_500 + 42 + 1 + 3, "{name}");
        let snap = store.bars_snapshot("AAA", i64::MIN, i64::MAX, 60_000, 10_000).await.expect("snapshot");
        assert_eq!((snap.state.batch_version, snap.batch.len()), (Some(2), 10), "{name}");
    }
}

#[tokio::test]
async fn feed_checkpoints_and_counters() {
    for (name, store, _dir) in backends().await {
        assert_eq!(store.feed_checkpoint("f").await.expect("read"), None);
        let mut c = FeedCheckpoint {
            feed_id: "f".into(),
            fingerprint: "tpd=4".into(),
            next_seq: 10,
            end_offsets: vec![4, 6],
            days_done: 2,
            days_total: 9,
            rows_refused: 1,
            feed_date: Some("2001-01-02".into()),
            done: false,
        };
        store.save_feed_checkpoint(&c, 10, 1).await.expect("save");
        c.next_seq = 20;
        c.done = true;
        store.save_feed_checkpoint(&c, 10, 0).await.expect("save");
        assert_eq!(store.feed_checkpoint("f").await.expect("read"), Some(c.clone()), "{name}");
        assert_eq!(store.feed_checkpoints().await.expect("all"), vec![c], "{name}");
        store.add_ingest_counts("http", 3, 2).await.expect("count");
        let counters = store.ingest_counters().await.expect("counters");
        let by_source: Vec<(String, i64, i64)> = counters.into_iter().map(|c| (c.source, c.accepted, c.refused)).collect();
        assert_eq!(by_source, vec![("feed".into(), 20, 1), ("http".into(), 3, 2)], "{name}");
    }
}
