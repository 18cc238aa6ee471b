//! The view store's contract. Each test body takes a fresh store, so every backend runs the
//! same bodies (SQLite now; PostgreSQL joins through `backends()`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use prism_core::decimal::Decimal6;
use prism_core::store::{ConsumerOffset, DropBehind, FeedCheckpoint, PartitionLease, RealtimeRow, SegmentRecord, StoreError, ViewStore};
use prism_core::view::ohlcv::{EventKey, Ohlcv, OhlcvView};
use prism_core::view::ViewRow;

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
    let url = std::env::var("PRISM_DATABASE_URL").expect("PRISM_DATABASE_URL is not set: run ./infra/test.sh, which starts PostgreSQL");
    let name = format!("prism_test_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect to the test server");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{name}")
}

const M: i64 = 60_000;

fn view() -> OhlcvView {
    OhlcvView::standard(5_000)
}

fn agg(minute: i64, price_units: i128, size: i64, offset: i64) -> Ohlcv {
    Ohlcv::of_trade(EventKey { ts_ms: minute * M + 1, partition: 1, offset }, Decimal6::from_units(price_units), size)
}

/// A realtime row of `symbol` at `interval_ms`.
fn rt(interval_ms: i64, symbol: &str, minute: i64, a: Ohlcv) -> RealtimeRow<Ohlcv> {
    RealtimeRow { interval_ms, partition: 1, row: ViewRow { key: symbol.into(), window_start_ms: minute * M, agg: a } }
}

fn off(partition: i32, next_offset: i64, max: Option<i64>) -> ConsumerOffset {
    ConsumerOffset { partition, next_offset, max_event_ts_ms: max }
}

#[tokio::test]
async fn realtime_rows_and_offsets_commit_together() {
    let v = view();
    for (name, store, _dir) in backends().await {
        assert!(store.consumer_offsets("c", "prism.quotes").await.expect("offsets").is_empty(), "{name}");
        let a = rt(M, "AAA", 10, agg(10, 1_500_000, 10, 0));
        let b = rt(M, "BBB", 10, agg(10, 2_000_000, 5, 1));
        let a_hour = rt(3_600_000, "AAA", 0, a.row.agg);
        store
            .commit_realtime(&v, "c", 1, &[a.clone(), b.clone(), a_hour.clone()], &[off(0, 2, Some(600_001))], &[], None, &[])
            .await
            .expect("commit");
        assert_eq!(store.consumer_offsets("c", "prism.quotes").await.expect("offsets"), vec![off(0, 2, Some(600_001))], "{name}");
        // An upsert replaces the row; other versions and views are separate.
        let a2 = rt(M, "AAA", 10, a.row.agg.merge(&agg(10, 1_400_000, 1, 7)));
        store
            .commit_realtime(&v, "c", 1, std::slice::from_ref(&a2), &[off(0, 8, Some(600_001)), off(1, 3, None)], &[], None, &[])
            .await
            .expect("commit");
        store.commit_realtime(&v, "c", 2, &[rt(M, "AAA", 10, agg(10, 9_000_000, 1, 9))], &[], &[], None, &[]).await.expect("commit v2");
        let other = OhlcvView::with_window("ohlcv_30s", 30_000, 5_000);
        store
            .commit_realtime(&other, "c30", 1, &[rt(30_000, "AAA", 10, agg(10, 9_000_000, 1, 9))], &[], &[], None, &[])
            .await
            .expect("commit other view");
        let mut rows = store.realtime_rows_of_partition(&v, 1, 1, i64::MIN).await.expect("rows");
        rows.sort_by(|x, y| (x.interval_ms, &x.row.key).cmp(&(y.interval_ms, &y.row.key)));
        assert_eq!(rows, vec![a2.clone(), b.clone(), a_hour.clone()], "{name}");
        assert_eq!(store.realtime_row(&v, 1, M, "AAA", 10 * M, 0).await.expect("row"), Some(a2.row.agg), "{name}");
        assert_eq!(store.realtime_row(&v, 1, M, "ZZZ", 0, 0).await.expect("row"), None);
        assert!(store.realtime_rows_of_partition(&v, 1, 0, i64::MIN).await.expect("rows").is_empty(), "{name}: by partition");
        assert!(store.realtime_rows_of_partition(&v, 1, 1, 11 * M).await.expect("rows").is_empty(), "{name}");
        // One interval at a time, each from its own floor (the speed layer's warm cache).
        let mut minutes = store.realtime_rows_of_partition_at(&v, 1, 1, M, 10 * M).await.expect("rows");
        minutes.sort_by(|x, y| x.row.key.cmp(&y.row.key));
        assert_eq!(minutes, vec![a2.clone(), b.clone()], "{name}: the 1-minute rows only");
        assert_eq!(
            store.realtime_rows_of_partition_at(&v, 1, 1, 3_600_000, 0).await.expect("rows"),
            vec![a_hour.clone()],
            "{name}: the hour"
        );
        assert!(store.realtime_rows_of_partition_at(&v, 1, 1, 3_600_000, M).await.expect("rows").is_empty(), "{name}: from its floor");
        assert_eq!(store.realtime_keys(&v, 1).await.expect("keys"), Vec::<String>::new(), "{name}: no daily rows yet");
        // Dropping behind H deletes the rows whose bucket ended by H, at every interval.
        let h = 61 * M;
        store
            .commit_realtime(
                &v,
                "c",
                1,
                &[rt(M, "AAA", 62, agg(62, 1_000_000, 1, 10))],
                &[],
                &[],
                Some(DropBehind { batch_horizon_ms: h }),
                &[],
            )
            .await
            .expect("drop");
        let rows = store.realtime_rows_of_partition(&v, 1, 1, i64::MIN).await.expect("rows");
        let left: Vec<(i64, i64)> = rows.iter().map(|r| (r.interval_ms, r.row.window_start_ms / M)).collect();
        assert_eq!(left, vec![(M, 62)], "{name}: the 1h bucket 0-60 ended by H and went too");
        assert_eq!(store.realtime_rows_of_partition(&v, 2, 1, i64::MIN).await.expect("rows").len(), 1, "{name}: version 2 kept");
        assert_eq!(store.realtime_rows_of_partition(&other, 1, 1, i64::MIN).await.expect("rows").len(), 1, "{name}: the other view kept");
    }
}

#[tokio::test]
async fn a_claimed_partition_fences_its_former_owner() {
    let v = view();
    let t = "prism.quotes";
    for (name, store, _dir) in backends().await {
        let a = store.claim_partitions("c", t, &[0, 1], "instance-a", 1_000).await.expect("claim a");
        assert_eq!(a, vec![PartitionLease { partition: 0, epoch: 1 }, PartitionLease { partition: 1, epoch: 1 }], "{name}");
        store
            .commit_realtime(
                &v,
                "c",
                1,
                &[rt(M, "AAA", 1, agg(1, 1_000_000, 1, 0))],
                &[off(0, 1, Some(60_001)), off(1, 0, None)],
                &a,
                None,
                &[],
            )
            .await
            .expect("owner commits");

        // Instance B takes partition 1 over (a rebalance A has not heard of yet).
        let b = store.claim_partitions("c", t, &[1], "instance-b", 2_000).await.expect("claim b");
        assert_eq!(b, vec![PartitionLease { partition: 1, epoch: 2 }], "{name}");
        let refused = store
            .commit_realtime(
                &v,
                "c",
                1,
                &[rt(M, "BBB", 1, agg(1, 5_000_000, 9, 3))],
                &[off(0, 2, Some(60_001)), off(1, 4, Some(60_001))],
                &a,
                None,
                &[],
            )
            .await;
        assert!(matches!(refused, Err(StoreError::Fenced { held: 1, expected: 2, .. })), "{name}: {refused:?}");
        // Nothing of the fenced commit was written: neither rows nor offsets.
        assert_eq!(store.realtime_rows_of_partition(&v, 1, 1, i64::MIN).await.expect("rows").len(), 1, "{name}");
        assert_eq!(store.consumer_offsets("c", t).await.expect("offsets"), vec![off(0, 1, Some(60_001)), off(1, 0, None)], "{name}");
        assert_eq!(store.lost_leases("c", t, &a).await.expect("lost"), vec![1], "{name}");

        // A keeps partition 0; B commits partition 1.
        store.commit_realtime(&v, "c", 1, &[], &[off(0, 2, Some(60_001))], &a[..1], None, &[]).await.expect("a keeps partition 0");
        store.commit_realtime(&v, "c", 1, &[], &[off(1, 4, None)], &b, None, &[]).await.expect("b owns partition 1");
        let leases = store.leases(t).await.expect("leases");
        let owners: Vec<(i32, i64, &str, i64)> = leases.iter().map(|l| (l.partition, l.epoch, l.owner.as_str(), l.claimed_at_ms)).collect();
        assert_eq!(owners, vec![(0, 1, "instance-a", 1_000), (1, 2, "instance-b", 2_000)], "{name}");
        // The commits renewed the leases they checked (claims were stamped in 1970).
        assert!(leases.iter().all(|l| l.renewed_at_ms > 1_700_000_000_000), "{name}: {leases:?}");
        // Another consumer's leases are separate.
        assert_eq!(store.claim_partitions("d", t, &[1], "x", 0).await.expect("claim d")[0].epoch, 1, "{name}");
    }
}

#[tokio::test]
async fn money_survives_beyond_i64() {
    let v = view();
    for (name, store, _dir) in backends().await {
        // Notional past i64's 9.2e18 micro-units: 10^12 shares at 10^6 per share.
        let big = Ohlcv::of_trade(
            EventKey { ts_ms: 0, partition: 0, offset: 0 },
            Decimal6::from_units(999_999_999_999_999_999),
            1_000_000_000_000,
        );
        store.commit_realtime(&v, "c", 1, &[rt(M, "BIG", 0, big)], &[], &[], None, &[]).await.expect("commit");
        let back = store.realtime_row(&v, 1, M, "BIG", 0, 0).await.expect("row").expect("present");
        assert_eq!(back, big, "{name}");
        assert_eq!(back.notional.units(), 999_999_999_999_999_999i128 * 1_000_000_000_000, "{name}");
    }
}

/// A snapshot's realtime rows are the rows written, exactly and in window order, on every
/// backend (SQLite packs them into one value per part; see `store::packed`): of the asked key
/// and interval only, at most `max_rows` of them, money past `i64` and text columns included.
#[tokio::test]
async fn a_snapshot_reads_realtime_rows_back_exactly() {
    use prism_core::view::access::{Access, AccessView};
    use prism_core::view::Monoid;
    let v = view();
    for (name, store, _dir) in backends().await {
        let big = Ohlcv::of_trade(
            EventKey { ts_ms: 7 * M, partition: 0, offset: 9 },
            Decimal6::from_units(999_999_999_999_999_999),
            1_000_000_000_000,
        );
        let mut written: Vec<RealtimeRow<Ohlcv>> =
            (0..300).map(|m| rt(M, "AAA", m, agg(m, 1_000_000 + 37 * m as i128, 1 + m, m))).collect();
        written[7].row.agg = written[7].row.agg.merge(&big);
        let noise = [rt(M, "AAB", 3, agg(3, 5, 1, 1)), rt(3_600_000, "AAA", 0, agg(0, 5, 1, 1))];
        // Written newest first: the order read is the store's.
        let mut all: Vec<_> = written.iter().rev().cloned().collect();
        all.extend(noise);
        store.commit_realtime(&v, "c", 1, &all, &[], &[], None, &[]).await.expect("commit");
        let snap = store.view_snapshot(&v, "AAA", M, 0, 1_000 * M, 1_000).await.expect("snapshot");
        assert_eq!(snap.realtime, written.iter().map(|r| r.row.clone()).collect::<Vec<_>>(), "{name}");
        assert!(snap.realtime_base.is_empty(), "{name}: no batch version, so no bucket holds H");
        let first = store.view_snapshot(&v, "AAA", M, 5 * M, 1_000 * M, 10).await.expect("snapshot");
        assert_eq!(first.realtime, written[5..15].iter().map(|r| r.row.clone()).collect::<Vec<_>>(), "{name}: max_rows from `from`");

        let access = AccessView::standard(5_000);
        let hits = Access::of_request(512, Some(3)).merge(&Access::of_request(2_048, Some(1_500))).merge(&Access::of_request(1, None));
        let row =
            RealtimeRow { interval_ms: M, partition: 0, row: ViewRow { key: "example.org 2xx".into(), window_start_ms: 4 * M, agg: hits } };
        store.commit_realtime(&access, "c", 1, std::slice::from_ref(&row), &[], &[], None, &[]).await.expect("commit access");
        let snap = store.view_snapshot(&access, "example.org 2xx", M, 0, 1_000 * M, 10).await.expect("snapshot");
        assert_eq!(snap.realtime, vec![row.row], "{name}");
    }
}

/// The hand-off's read of every key's rows between two times returns each (key, window) once,
/// partitions merged, sorted by (key, window), however many rows: SQLite reads them in pages
/// of 20,000 (`store::packed`), and these rows put a page boundary between two partitions of
/// one key's window.
#[tokio::test]
async fn rows_between_two_times_come_back_whole_across_pages() {
    use prism_core::view::changes::{Changes, ChangesView};
    let v = ChangesView::from_spec("lab.public.t:rows", 5_000).expect("spec");
    let (keys, partitions) = (6_700, 3);
    let key = |k: i64| format!("k{k:05}");
    let mut rows = Vec::new();
    for window in [10, 11] {
        for k in 0..keys {
            for partition in 0..partitions {
                let agg = Changes { changes: 1 + k * 10 + i64::from(partition) + window };
                rows.push(RealtimeRow { interval_ms: M, partition, row: ViewRow { key: key(k), window_start_ms: window * M, agg } });
            }
        }
    }
    // Outside the range or the interval: not read.
    let outside = |interval_ms: i64, window: i64| RealtimeRow {
        interval_ms,
        partition: 0,
        row: ViewRow { key: key(0), window_start_ms: window * M, agg: Changes { changes: 1_000 } },
    };
    rows.extend([outside(M, 9), outside(M, 12), outside(3_600_000, 0)]);
    for (name, store, _dir) in backends().await {
        store.commit_realtime(&v, "s", 1, &rows, &[], &[], None, &[]).await.expect("rows");
        let got = store.realtime_rows_between(&v, 1, M, 10 * M, 12 * M).await.expect("between");
        assert_eq!(got.len(), 2 * keys as usize, "{name}");
        for (i, r) in got.iter().enumerate() {
            let (k, window) = (i as i64 / 2, 10 + i as i64 % 2);
            let want: i64 = (0..partitions).map(|p| 1 + k * 10 + i64::from(p) + window).sum();
            assert_eq!((r.key.as_str(), r.window_start_ms, r.agg.changes), (key(k).as_str(), window * M, want), "{name}: row {i}");
        }
    }
}

fn segment(chunk: i64, covered: i64, path: &str) -> SegmentRecord {
    SegmentRecord {
        chunk_start_ms: chunk,
        chunk_end_ms: chunk + 100 * M,
        covered_until_ms: covered,
        path: path.into(),
        rows: 3,
        events: 5,
        inputs: "0:9".into(),
    }
}

#[tokio::test]
async fn batch_versions_publish_atomically_and_expire_after_grace() {
    let v = view();
    for (name, store, _dir) in backends().await {
        let p = store.view_pointer("ohlcv").await.expect("pointer");
        assert_eq!((p.batch_version, p.batch_horizon_ms, p.realtime_version), (None, None, 1), "{name}");
        let v1 = store.begin_batch_version("ohlcv", "fp1").await.expect("begin");
        assert_eq!(v1, 1);
        // Being built: serving does not see it.
        let snap = store.view_snapshot(&v, "AAA", M, 0, 1_000 * M, 100).await.expect("snapshot");
        assert!(snap.segments.is_empty() && snap.pointer.batch_version.is_none(), "{name}");
        store
            .publish_batch_version("ohlcv", v1, 150 * M, &[segment(0, 100 * M, "s/a-v1"), segment(100 * M, 150 * M, "s/b-v1")])
            .await
            .expect("publish");
        assert!(store.publish_batch_version("ohlcv", v1, 150 * M, &[]).await.is_err(), "{name}: published once");
        let published = store.published_batch_version("ohlcv").await.expect("read").expect("published");
        assert_eq!((published.version, published.fingerprint.as_str(), published.rows, published.events), (1, "fp1", 6, 10), "{name}");
        // Realtime rows from H on; segments overlapping [from, min(to, H)).
        store
            .commit_realtime(&v, "c", 1, &[rt(M, "AAA", 149, agg(149, 7, 1, 1)), rt(M, "AAA", 150, agg(150, 8, 1, 2))], &[], &[], None, &[])
            .await
            .expect("rt");
        let snap = store.view_snapshot(&v, "AAA", M, 0, 1_000 * M, 100).await.expect("snapshot");
        assert_eq!(snap.max_event_ts_ms, None, "{name}: consumer c is not the served version's speed layer");
        // The served version's high-water mark comes in the same read: the latest over partitions.
        let speed = prism_core::config::speed_consumer("ohlcv", 1);
        store
            .commit_realtime(&v, &speed, 1, &[], &[off(0, 5, Some(151 * M)), off(1, 2, Some(170 * M)), off(2, 1, None)], &[], None, &[])
            .await
            .expect("offsets");
        store
            .commit_realtime(&v, &prism_core::config::speed_consumer("ohlcv", 2), 2, &[], &[off(0, 9, Some(900 * M))], &[], None, &[])
            .await
            .expect("v2 offsets");
        let snap = store.view_snapshot(&v, "AAA", M, 0, 1_000 * M, 100).await.expect("snapshot");
        assert_eq!(snap.max_event_ts_ms, Some(170 * M), "{name}: version 1's offsets only");
        assert_eq!(snap.pointer.batch_horizon_ms, Some(150 * M), "{name}");
        assert_eq!(snap.segments.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), vec!["s/a-v1", "s/b-v1"], "{name}");
        assert_eq!(snap.realtime.iter().map(|r| r.window_start_ms / M).collect::<Vec<_>>(), vec![150], "{name}");
        let snap = store.view_snapshot(&v, "AAA", M, 120 * M, 1_000 * M, 100).await.expect("snapshot");
        assert_eq!(snap.segments.len(), 1, "{name}: pruned by time");
        let snap = store.view_snapshot(&v, "AAA", M, 0, 50 * M, 100).await.expect("snapshot");
        assert_eq!(snap.segments.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), vec!["s/a-v1"], "{name}: pruned by to");
        assert!(snap.realtime.is_empty(), "{name}: nothing after H below to");
        // At 1h with H inside the hour 120..180: base rows from H to the hour's end, hours after.
        store
            .commit_realtime(
                &v,
                "c",
                1,
                &[rt(3_600_000, "AAA", 180, agg(181, 9, 1, 3)), rt(3_600_000, "AAA", 120, agg(150, 9, 1, 3))],
                &[],
                &[],
                None,
                &[],
            )
            .await
            .expect("rt");
        let snap = store.view_snapshot(&v, "AAA", 3_600_000, 0, 1_000 * M, 100).await.expect("snapshot");
        assert_eq!(snap.realtime_base.iter().map(|r| r.window_start_ms / M).collect::<Vec<_>>(), vec![150], "{name}");
        assert_eq!(snap.realtime.iter().map(|r| r.window_start_ms / M).collect::<Vec<_>>(), vec![180], "{name}");

        // Version 2 carries b over, rebuilds a; v1 is retired, not yet expired.
        let v2 = store.begin_batch_version("ohlcv", "fp1").await.expect("begin");
        let abandoned = store.begin_batch_version("ohlcv", "fp1").await.expect("begin");
        assert_eq!((v2, abandoned), (2, 3), "{name}");
        store
            .publish_batch_version("ohlcv", v2, 160 * M, &[segment(0, 100 * M, "s/a-v2"), segment(100 * M, 150 * M, "s/b-v1")])
            .await
            .expect("publish v2");
        assert_eq!(store.view_pointer("ohlcv").await.expect("pointer").batch_version, Some(2), "{name}");
        assert_eq!(store.batch_segments("ohlcv", 1).await.expect("v1").len(), 2, "{name}: v1 readable during its grace period");
        let long_ago = 1_000_000;
        let gone = store.expire_batch_versions("ohlcv", long_ago).await.expect("expire");
        assert!(gone.is_empty(), "{name}: nothing retired before the cutoff, and the abandoned build had no manifest: {gone:?}");
        let gone = store.expire_batch_versions("ohlcv", prism_core::time::now_ms() + 1_000).await.expect("expire");
        assert_eq!(gone, vec!["s/a-v1".to_string()], "{name}: only the file no remaining version uses");
        assert!(store.batch_segments("ohlcv", 1).await.expect("v1").is_empty(), "{name}");
        let mut paths = store.referenced_segment_paths("ohlcv").await.expect("paths");
        paths.sort();
        assert_eq!(paths, vec!["s/a-v2".to_string(), "s/b-v1".to_string()], "{name}");
        assert_eq!(store.begin_batch_version("ohlcv", "fp2").await.expect("begin"), 4, "{name}: numbers never reused");
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

/// Writers that read before they write (a version expiry, a batch publish) and writers that
/// commit often (the speed layer, the archiver) run at the same time on one store: each waits
/// for the others instead of failing. On SQLite a deferred transaction that reads first gets
/// `database is locked` at once when another writer commits before its first write; write
/// transactions therefore start with `BEGIN IMMEDIATE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_wait_for_each_other() {
    for (name, store, _dir) in backends().await {
        let committer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..300i64 {
                    let offsets = [off(0, i + 1, Some(i * M)), off(1, i + 1, Some(i * M))];
                    store.commit_offsets("archiver", "prism.quotes", &offsets).await?;
                }
                Ok::<_, StoreError>(())
            })
        };
        let mut expiries = 0;
        while !committer.is_finished() {
            let v = store.begin_batch_version("ohlcv", "fp").await.unwrap_or_else(|e| panic!("{name}: begin: {e}"));
            store
                .expire_batch_versions("ohlcv", prism_core::time::now_ms() + 86_400_000)
                .await
                .unwrap_or_else(|e| panic!("{name}: expiry: {e}"));
            assert!(v > 0);
            expiries += 1;
        }
        committer.await.expect("join").unwrap_or_else(|e| panic!("{name}: offsets commit: {e}"));
        assert!(expiries > 0, "{name}: the two writers overlapped");
    }
}

/// Kappa hand-off manifests: each realtime version keeps its own manifest and horizon; only the
/// serving version's move the pointer; a Lambda batch version the pointer held is adopted and
/// retired by the first hand-off; a later batch publish (Kappa → Lambda) retires the hand-off.
#[tokio::test]
async fn handoff_manifests_follow_their_realtime_version() {
    for (name, store, _dir) in backends().await {
        // Lambda left batch version 1 with H = 150 min.
        let b1 = store.begin_batch_version("ohlcv", "fp").await.expect("begin");
        store.publish_batch_version("ohlcv", b1, 150 * M, &[segment(0, 100 * M, "s/a-v1")]).await.expect("publish");
        let adopted = store.handoff_state("ohlcv", 1).await.expect("state");
        assert_eq!((adopted.segment_version, adopted.segment_horizon_ms), (Some(b1), Some(150 * M)), "{name}: adopted");
        store.record_realtime_fingerprint("ohlcv", 1, "fp").await.expect("fingerprint");
        assert_eq!(
            store.handoff_state("ohlcv", 1).await.expect("state"),
            adopted,
            "{name}: a recorded fingerprint does not hide the batch version"
        );
        let built = store.record_realtime_fingerprint("ohlcv", 1, "fp-new").await.expect("fingerprint");
        assert_eq!(built, "fp", "{name}: the fingerprint a version was built with is kept");
        assert_eq!(store.handoff_state("ohlcv", 2).await.expect("state"), Default::default(), "{name}: a new version starts empty");

        // The serving version's hand-off moves the pointer and retires the batch version.
        let h1 = store.begin_batch_version("ohlcv", "fp").await.expect("begin");
        store.publish_handoff("ohlcv", 1, h1, 1_440 * M, &[segment(0, 1_440 * M, "s/day-v2")], Some(b1)).await.expect("hand off");
        assert!(store.publish_handoff("ohlcv", 1, h1, 1_440 * M, &[], Some(b1)).await.is_err(), "{name}: published once");
        let p = store.view_pointer("ohlcv").await.expect("pointer");
        assert_eq!((p.batch_version, p.batch_horizon_ms, p.realtime_version), (Some(h1), Some(1_440 * M), 1), "{name}");
        assert!(store.published_batch_version("ohlcv").await.expect("read").is_none(), "{name}: a hand-off is not a batch version");
        let gone = store.expire_batch_versions("ohlcv", prism_core::time::now_ms() + 1_000).await.expect("expire");
        assert_eq!(gone, vec!["s/a-v1".to_string()], "{name}: the adopted batch version was retired");

        // Another realtime version (a replay) hands off without touching the pointer.
        let h2 = store.begin_batch_version("ohlcv", "fp").await.expect("begin");
        store.publish_handoff("ohlcv", 2, h2, 720 * M, &[segment(0, 720 * M, "s/half-v3")], None).await.expect("hand off v2");
        let p = store.view_pointer("ohlcv").await.expect("pointer");
        assert_eq!(p.batch_version, Some(h1), "{name}: serving is unchanged");
        let s2 = store.handoff_state("ohlcv", 2).await.expect("state");
        assert_eq!((s2.segment_version, s2.segment_horizon_ms), (Some(h2), Some(720 * M)), "{name}");

        // Kappa → Lambda: the first batch publish retires the serving hand-off manifest.
        let b2 = store.begin_batch_version("ohlcv", "fp").await.expect("begin");
        store.publish_batch_version("ohlcv", b2, 2_000 * M, &[segment(0, 1_440 * M, "s/day-v5")]).await.expect("publish");
        let gone = store.expire_batch_versions("ohlcv", prism_core::time::now_ms() + 1_000).await.expect("expire");
        assert_eq!(gone, vec!["s/day-v2".to_string()], "{name}: the hand-off manifest was retired by the batch publish");
    }
}

/// Idempotency-key claims on both backends: first claim, in progress, done, takeover of an
/// abandoned claim (with the end offsets saved by the first holder), and expiry.
#[tokio::test]
async fn idempotency_keys_are_claimed_once() {
    use prism_core::store::IdempotencyClaim;
    for (name, store, _dir) in backends().await {
        let now = 1_700_000_000_000i64;
        let (window, stale) = (3_600_000, 30_000);
        let claim = |key: &'static str, hash: &'static str, ends: Vec<i64>, at: i64| {
            let store = store.clone();
            async move { store.claim_idempotency_key(key, hash, &ends, at, window, stale).await.expect("claim") }
        };
        assert_eq!(claim("a", "h1", vec![4, 5], now).await, IdempotencyClaim::Claimed, "{name}");
        assert_eq!(claim("a", "h1", vec![9, 9], now + 1).await, IdempotencyClaim::InProgress { request_hash: "h1".into() }, "{name}");
        assert_eq!(claim("a", "h2", vec![9, 9], now + 1).await, IdempotencyClaim::InProgress { request_hash: "h1".into() }, "{name}");
        // Stale: taken over once, with the first holder's end offsets.
        assert_eq!(claim("a", "h1", vec![9, 9], now + stale + 1).await, IdempotencyClaim::TakenOver { end_offsets: vec![4, 5] }, "{name}");
        assert_eq!(
            claim("a", "h1", vec![9, 9], now + stale + 2).await,
            IdempotencyClaim::InProgress { request_hash: "h1".into() },
            "{name}"
        );
        store.complete_idempotency_key("a", 202, "{\"accepted\":2}").await.expect("complete");
        let done = IdempotencyClaim::Done { request_hash: "h1".into(), status: 202, response: "{\"accepted\":2}".into() };
        assert_eq!(claim("a", "h1", vec![], now + 10).await, done, "{name}");
        // An abandoned claim is stale at once.
        assert_eq!(claim("b", "h", vec![1], now).await, IdempotencyClaim::Claimed, "{name}");
        store.abandon_idempotency_key("b").await.expect("abandon");
        assert_eq!(claim("b", "h", vec![2], now + 1).await, IdempotencyClaim::TakenOver { end_offsets: vec![1] }, "{name}");
        // Past the window, a key is free again.
        assert_eq!(claim("a", "h9", vec![], now + window + 1).await, IdempotencyClaim::Claimed, "{name}");
    }
}

/// The `changes` view's store side: a key spread over partitions keeps a row per partition
/// (read back merged by the hand-off's reader), and entity writes merge by sequence in any order
/// — the last state wins, a redelivered sequence never moves `seen` back, a tombstone for a
/// moved key hides the old row, a truncate hides every older row.
#[tokio::test]
async fn partition_spread_rows_and_entities_merge_by_sequence() {
    use prism_core::store::EntityWrites;
    use prism_core::view::changes::{Changes, ChangesView};
    use prism_core::view::{EntityChange, EntitySeq, View};
    let v = ChangesView::from_spec("lab.public.t:rows", 5_000).expect("spec");
    let seq = |major: i64, minor: i64| EntitySeq { major, minor };
    let change = |entity: &'static str, s: EntitySeq, state: Option<&'static str>, deleted: bool, moved_from: Option<&'static str>| {
        EntityChange { entity, seq: s, state, deleted, moved_from }
    };
    for (name, store, _dir) in backends().await {
        let row = |partition: i32, n: i64| RealtimeRow {
            interval_ms: M,
            partition,
            row: ViewRow { key: "c".into(), window_start_ms: 10 * M, agg: Changes { changes: n } },
        };
        store.commit_realtime(&v, "s", 1, &[row(0, 2), row(1, 3)], &[], &[], None, &[]).await.expect("rows");
        store.commit_realtime(&v, "s", 1, &[row(1, 4)], &[], &[], None, &[]).await.expect("rows again");
        assert_eq!(store.realtime_row(&v, 1, M, "c", 10 * M, 0).await.expect("row"), Some(Changes { changes: 2 }), "{name}");
        assert_eq!(store.realtime_row(&v, 1, M, "c", 10 * M, 1).await.expect("row"), Some(Changes { changes: 4 }), "{name}");
        let merged = store.realtime_rows_between(&v, 1, M, 0, 100 * M).await.expect("between");
        assert_eq!(merged.len(), 1, "{name}");
        assert_eq!(merged[0].agg, Changes { changes: 6 }, "{name}");

        // Partition 0 applies id 1's insert and update and id 3's insert; on partition 1 an update
        // moves id 3 to id 4 (the former key lives on partition 0).
        let mut first = EntityWrites::default();
        first.record(&change(r#"{"id":1}"#, seq(10, 1), Some(r#"{"id":1,"v":1}"#), false, None), 0);
        first.record(&change(r#"{"id":1}"#, seq(20, 5), Some(r#"{"id":1,"v":2}"#), false, None), 0);
        first.record(&change(r#"{"id":3}"#, seq(15, 2), Some(r#"{"id":3}"#), false, None), 0);
        assert_eq!(first.len(), 2);
        let mut second = EntityWrites::default();
        second.record(&change(r#"{"id":4}"#, seq(30, 1), Some(r#"{"id":4}"#), false, Some(r#"{"id":3}"#)), 1);
        // The tombstone commits before the key's own (older) insert: order must not matter.
        store.commit_realtime(&v, "s", 1, &[], &[], &[], None, &second.take_sorted()).await.expect("tombstone first");
        store.commit_realtime(&v, "s", 1, &[], &[], &[], None, &first.take_sorted()).await.expect("own writes");
        let e1 = store.entity(v.name(), 1, r#"{"id":1}"#).await.expect("read").expect("id 1");
        assert_eq!((e1.state_seq, e1.deleted, e1.state.as_deref()), (seq(20, 5), false, Some(r#"{"id":1,"v":2}"#)), "{name}");
        let e3 = store.entity(v.name(), 1, r#"{"id":3}"#).await.expect("read").expect("id 3");
        assert!(e3.deleted && e3.state.is_none(), "{name}: the moved key is gone");
        let seen0 = store.entity_sequences(&v, 1, 0).await.expect("seen 0");
        assert_eq!(seen0.get(r#"{"id":3}"#), Some(&seq(15, 2)), "{name}: its own partition still knows what it applied");
        assert_eq!(seen0.get(r#"{"id":1}"#), Some(&seq(20, 5)), "{name}");
        // A redelivery of the older insert moves nothing back.
        let mut again = EntityWrites::default();
        again.record(&change(r#"{"id":1}"#, seq(10, 1), Some(r#"{"id":1,"v":1}"#), false, None), 0);
        store.commit_realtime(&v, "s", 1, &[], &[], &[], None, &again.take_sorted()).await.expect("redelivery");
        assert_eq!(store.entity(v.name(), 1, r#"{"id":1}"#).await.expect("read").expect("id 1").state_seq, seq(20, 5), "{name}");
        assert_eq!(store.entity_sequences(&v, 1, 0).await.expect("seen")[r#"{"id":1}"#], seq(20, 5), "{name}");
        assert_eq!(store.live_entities(v.name(), 1).await.expect("count"), 2, "{name}: ids 1 and 4");
        // A truncate (entity {}) hides every older row; a later insert is live again.
        let mut truncate = EntityWrites::default();
        truncate.record(&change("{}", seq(40, 1), None, true, None), 1);
        truncate.record(&change(r#"{"id":9}"#, seq(50, 1), Some(r#"{"id":9}"#), false, None), 1);
        store.commit_realtime(&v, "s", 1, &[], &[], &[], None, &truncate.take_sorted()).await.expect("truncate");
        assert_eq!(store.live_entities(v.name(), 1).await.expect("count"), 1, "{name}: only id 9");
    }
}
