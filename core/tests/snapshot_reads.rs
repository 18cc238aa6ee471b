//! Serving's reads are one snapshot (DESIGN §5): on PostgreSQL, a reader that queries without
//! pause while batch versions publish (moving H) and the speed layer drops the realtime rows
//! behind H always sees a pointer, a manifest and realtime rows that belong together — the
//! realtime rows start exactly at the pointer's H and the manifest covers exactly up to it. The
//! same reader under `READ COMMITTED` sees windows vanish (rows already dropped for a newer H
//! while it still holds the older pointer), which proves the check can fail. Needs the test
//! server at `PRISM_DATABASE_URL` (started by `./infra/test.sh`); never skipped.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::decimal::Decimal6;
use prism_core::store::{DropBehind, RealtimeRow, SegmentRecord, ViewStore};
use prism_core::view::ohlcv::{EventKey, Ohlcv, OhlcvView};
use prism_core::view::ViewRow;

const M: i64 = 60_000;
const MINUTES: i64 = 400;

async fn fresh_postgres_store() -> ViewStore {
    use sqlx::Connection;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("PRISM_DATABASE_URL").expect("PRISM_DATABASE_URL is not set: run ./infra/test.sh, which starts PostgreSQL");
    let name = format!("prism_snap_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect to the test server");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    ViewStore::connect_postgres(&format!("{base}/{name}"), Duration::from_secs(10)).await.expect("store")
}

fn minute_row(minute: i64) -> RealtimeRow<Ohlcv> {
    let agg = Ohlcv::of_trade(EventKey { ts_ms: minute * M, partition: 0, offset: minute }, Decimal6::from_units(1_000_000), 1);
    RealtimeRow { interval_ms: M, partition: 0, row: ViewRow { key: "AAA".into(), window_start_ms: minute * M, agg } }
}

/// Publishes H = 1, 2, 3, … minutes as fast as it can: each version's one segment covers up to
/// H, and the speed layer's commit drops the realtime rows before H.
async fn publisher(store: ViewStore, view: Arc<OhlcvView>, stop: Arc<AtomicBool>) {
    let mut h = 1;
    while !stop.load(Ordering::Relaxed) && h < MINUTES {
        let version = store.begin_batch_version("ohlcv", "fp").await.expect("begin");
        let segment = SegmentRecord {
            chunk_start_ms: 0,
            chunk_end_ms: MINUTES * M,
            covered_until_ms: h * M,
            path: format!("segments/ohlcv/v{version}"),
            rows: h,
            events: h,
            inputs: String::new(),
        };
        store.publish_batch_version("ohlcv", version, h * M, &[segment]).await.expect("publish");
        store
            .commit_realtime(&*view, "speed", 1, &[], &[], &[], Some(DropBehind { batch_horizon_ms: h * M }), &[])
            .await
            .expect("drop behind H");
        h += 1;
    }
}

/// Reads for `duration`; returns (answers read, answers whose parts disagree).
async fn reader(store: ViewStore, view: Arc<OhlcvView>, duration: Duration) -> (u64, u64) {
    let (mut reads, mut torn) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < duration {
        let snap = store.view_snapshot(&*view, "AAA", M, 0, MINUTES * M, 10_000).await.expect("snapshot");
        reads += 1;
        let Some(h) = snap.pointer.batch_horizon_ms else { continue };
        let covered = snap.segments.iter().map(|s| s.covered_until_ms).max();
        let first_realtime = snap.realtime.first().map(|r| r.window_start_ms);
        let realtime_count = snap.realtime.len() as i64;
        if covered != Some(h) || first_realtime != Some(h) || realtime_count != MINUTES - h / M {
            torn += 1;
        }
    }
    (reads, torn)
}

async fn race(store: ViewStore, duration: Duration) -> (u64, u64) {
    let view = Arc::new(OhlcvView::standard(5_000));
    let rows: Vec<_> = (0..MINUTES).map(minute_row).collect();
    store.commit_realtime(&*view, "speed", 1, &rows, &[], &[], None, &[]).await.expect("realtime rows");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(publisher(store.clone(), view.clone(), stop.clone()));
    let result = reader(store, view, duration).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("publisher");
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_one_snapshot_while_versions_publish() {
    let (reads, torn) = race(fresh_postgres_store().await, Duration::from_secs(4)).await;
    assert!(reads > 100, "the reader ran: {reads} answers");
    assert_eq!(torn, 0, "{torn} of {reads} answers mixed two versions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_answers_tear_which_the_check_detects() {
    // The same race under READ COMMITTED: between the pointer read and the realtime read, a
    // newer H publishes and its drop deletes rows the answer needed.
    let store = fresh_postgres_store().await.with_read_committed_answers();
    let mut total = (0, 0);
    for _ in 0..5 {
        let (reads, torn) = race(store.clone(), Duration::from_secs(4)).await;
        total = (total.0 + reads, total.1 + torn);
        if total.1 > 0 {
            break;
        }
        // Another round: race() writes the rows back and publishes from H = 1 minute again.
    }
    assert!(total.1 > 0, "no torn answer in {} reads under READ COMMITTED: the check could not fail", total.0);
}
