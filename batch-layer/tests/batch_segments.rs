//! Batch views as versioned segments, over a real embedded log, archiver and SQLite view store:
//! an incremental run after a new trading day equals a full rebuild row for row at every
//! interval, carrying the unchanged chunks over; and a version retired by a newer one keeps its
//! segment files readable through the grace period, after which they are deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use prism_batch::archiver::{run_archiver, ArchiverConfig};
use prism_batch::batch_job::{run_batch_layer, BatchConfig};
use prism_batch::master::MasterDataset;
use prism_core::batch_run::{BatchRunReport, BatchRunRequest};
use prism_core::config::ARCHIVER_CONSUMER;
use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::{EventLog, NewRecord};
use prism_core::segment::SegmentFile;
use prism_core::store::ViewStore;
use prism_core::view::ohlcv::{Ohlcv, OhlcvView};
use prism_core::view::{View, ViewRow};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400_000;
/// 2011-03-01T14:30:00Z: three years of days before the newest one put year and month chunks
/// in play.
const START: i64 = 1_298_989_800_000;
const SYMBOLS: [&str; 3] = ["AAA", "BBB", "CCC"];

/// A few trades a day for each symbol on `days` consecutive days from `first_day`.
fn trades(first_day: i64, days: i64) -> Vec<Quote> {
    let mut out = Vec::new();
    for d in first_day..first_day + days {
        for (s, symbol) in SYMBOLS.iter().enumerate() {
            for t in 0..4i64 {
                let n = d * 31 + s as i64 * 7 + t;
                out.push(Quote {
                    symbol: symbol.to_string(),
                    ts: START + d * DAY + t * 97_000 + s as i64 * 1_000,
                    price: Decimal6::from_units(10_000_000 + (n * 7_919 % 50_000) as i128),
                    size: 1 + n % 300,
                    bid: None,
                    ask: None,
                    exchange: None,
                });
            }
        }
    }
    out
}

struct Rig {
    dir: tempfile::TempDir,
    log: Arc<EmbeddedLog>,
    store: ViewStore,
    master: MasterDataset,
    view: Arc<OhlcvView>,
    requests: mpsc::Sender<BatchRunRequest>,
    stop: CancellationToken,
}

impl Rig {
    async fn new(grace: Duration) -> Rig {
        Rig::scheduled(grace, Duration::from_secs(3600)).await
    }

    /// A rig whose batch layer also runs on its own every `interval`.
    async fn scheduled(grace: Duration, interval: Duration) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = EmbeddedLogConfig { fsync: FsyncPolicy::Never, ..Default::default() };
        let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), config).expect("log"));
        log.ensure_topic(QUOTES_TOPIC, 2).await.expect("topic");
        let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
        let master = MasterDataset::local(&dir.path().join("master")).expect("master dataset");
        let view = Arc::new(OhlcvView::standard(5_000));
        let stop = CancellationToken::new();
        let archiver = ArchiverConfig { flush_interval: Duration::from_millis(20), ..ArchiverConfig::new(master.clone(), 2) };
        tokio::spawn(run_archiver(archiver, log.clone(), store.clone(), stop.clone()));
        let batch = BatchConfig { interval, segment_grace: grace, catch_up_check: None, ..BatchConfig::new(master.clone()) };
        let (requests, mut incoming) = mpsc::channel(1);
        let (l, s, c, views) = (log.clone(), store.clone(), stop.clone(), vec![prism_core::view::RegisteredView::Ohlcv(view.clone())]);
        tokio::spawn(async move { run_batch_layer(views, batch, l, s, &mut incoming, c).await });
        Rig { dir, log, store, master, view, requests, stop }
    }

    /// Appends `quotes` and waits until the archiver has committed the whole log.
    async fn append_archived(&self, quotes: &[Quote]) {
        let records = quotes.iter().map(|q| NewRecord::new(q.symbol.clone(), q.to_json())).collect();
        self.log.append(QUOTES_TOPIC, records).await.expect("append");
        let ends = self.log.end_offsets(QUOTES_TOPIC).await.expect("ends");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let offsets = self.store.consumer_offsets(ARCHIVER_CONSUMER, QUOTES_TOPIC).await.expect("offsets");
            let done = ends
                .iter()
                .enumerate()
                .all(|(p, end)| *end == 0 || offsets.iter().any(|o| o.partition == p as i32 && o.next_offset == *end));
            if done {
                return;
            }
            assert!(Instant::now() < deadline, "the archiver did not commit the log: {offsets:?} of {ends:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run(&self, full: bool) -> BatchRunReport {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.send(BatchRunRequest { full, reply }).await.expect("request");
        let mut reports = answer.await.expect("answer").expect("the run succeeds");
        assert_eq!(reports.len(), 1, "one view");
        reports.remove(0)
    }

    /// Every row of the published version at every interval, sorted, and its segment paths.
    async fn published_rows(&self) -> (i64, Vec<(i64, ViewRow<Ohlcv>)>, Vec<String>) {
        let version = self.store.published_batch_version("ohlcv").await.expect("version").expect("a version is published");
        let segments = self.store.batch_segments("ohlcv", version.version).await.expect("segments");
        let mut rows = Vec::new();
        for s in &segments {
            let file = SegmentFile::open(self.master.location(), &ObjectPath::from(s.path.as_str())).await.expect("segment opens");
            for &interval in self.view.intervals_ms() {
                for r in file.read_rows(self.master.location(), &*self.view, interval, None, i64::MIN, i64::MAX).await.expect("rows") {
                    rows.push((interval, r));
                }
            }
        }
        rows.sort_by(|(ia, a), (ib, b)| (ia, &a.key, a.window_start_ms).cmp(&(ib, &b.key, b.window_start_ms)));
        (version.version, rows, segments.into_iter().map(|s| s.path).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_run_after_a_new_day_equals_a_full_rebuild_row_for_row() {
    let rig = Rig::new(Duration::from_secs(600)).await;
    rig.append_archived(&trades(0, 1_100)).await;
    let first = rig.run(false).await;
    assert!(first.segments_built > 2, "year and month chunks: {first:?}");

    // One new trading day: only the chunk holding it (and the one H moved past) is rebuilt.
    rig.append_archived(&trades(1_100, 1)).await;
    let incremental = rig.run(false).await;
    assert!(!incremental.full);
    assert!(incremental.segments_carried > 0, "unchanged chunks carried over: {incremental:?}");
    assert!(incremental.segments_built < first.segments_built, "{incremental:?} vs {first:?}");
    let (v_incremental, rows_incremental, _) = rig.published_rows().await;

    let full = rig.run(true).await;
    assert!(full.full);
    assert_eq!(full.segments_carried, 0, "{full:?}");
    let (v_full, rows_full, _) = rig.published_rows().await;
    assert!(v_full > v_incremental);
    assert!(!rows_full.is_empty());
    assert_eq!(rows_incremental.len(), rows_full.len(), "row count");
    for (a, b) in rows_incremental.iter().zip(&rows_full) {
        assert_eq!(a, b, "incremental and full rows differ");
    }
    // The newest day is in the batch view only up to H; its trades up to there are counted.
    let daily: i64 = rows_full.iter().filter(|(i, _)| *i == DAY).map(|(_, r)| r.agg.trades).sum();
    assert_eq!(daily as u64, full.events, "every event before H counted once in the daily rows");
    rig.stop.cancel();
    drop(rig.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_version_stays_readable_through_the_grace_period_then_its_files_go() {
    let grace = Duration::from_secs(2);
    let rig = Rig::new(grace).await;
    rig.append_archived(&trades(0, 60)).await;
    rig.run(false).await;
    let (v1, rows_v1, paths_v1) = rig.published_rows().await;

    // A full rebuild retires v1; its files are still there and read as before.
    let retired_at = Instant::now();
    rig.run(true).await;
    let (v2, _, paths_v2) = rig.published_rows().await;
    assert!(v2 > v1);
    let only_v1: Vec<&String> = paths_v1.iter().filter(|p| !paths_v2.contains(p)).collect();
    assert!(!only_v1.is_empty(), "a full rebuild writes new segment files");
    rig.run(true).await; // expiry runs at the start of every run: v1 is within its grace
    assert!(retired_at.elapsed() < grace, "the test machine is too slow for a {grace:?} grace");
    let mut again = Vec::new();
    for p in &only_v1 {
        let file = SegmentFile::open(rig.master.location(), &ObjectPath::from(p.as_str())).await.expect("v1's segment is still readable");
        for &interval in rig.view.intervals_ms() {
            for r in file.read_rows(rig.master.location(), &*rig.view, interval, None, i64::MIN, i64::MAX).await.expect("rows") {
                again.push((interval, r));
            }
        }
    }
    assert!(!again.is_empty());
    assert!(again.iter().all(|row| rows_v1.contains(row)), "v1's files still hold v1's rows");

    // After the grace, the next run deletes the files no live version lists.
    tokio::time::sleep(grace + Duration::from_millis(300)).await;
    rig.run(true).await;
    let (_, _, live) = rig.published_rows().await;
    let present: HashSet<String> =
        rig.master.location().list("segments/ohlcv").await.expect("list").into_iter().map(|m| m.location.to_string()).collect();
    for p in &only_v1 {
        assert!(!present.contains(*p), "{p} was deleted after the grace period");
    }
    for p in &live {
        assert!(present.contains(p), "{p} of the published version is kept");
    }
    rig.stop.cancel();
}

/// Scheduled runs with nothing new to do are skipped, but a retired version still expires
/// after its grace period and its files go: nothing waits for the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_version_goes_after_its_grace_even_when_no_event_arrives() {
    let grace = Duration::from_secs(1);
    let rig = Rig::scheduled(grace, Duration::from_millis(200)).await;
    rig.append_archived(&trades(0, 20)).await;
    rig.run(false).await;
    let (_, _, paths_v1) = rig.published_rows().await;
    rig.run(true).await;
    let (_, _, paths_v2) = rig.published_rows().await;
    let only_v1: Vec<&String> = paths_v1.iter().filter(|p| !paths_v2.contains(p)).collect();
    assert!(!only_v1.is_empty(), "a full rebuild writes new segment files");
    let deadline = Instant::now() + grace + Duration::from_secs(20);
    loop {
        let present: HashSet<String> =
            rig.master.location().list("segments/ohlcv").await.expect("list").into_iter().map(|m| m.location.to_string()).collect();
        if only_v1.iter().all(|p| !present.contains(*p)) {
            assert!(paths_v2.iter().all(|p| present.contains(p)), "the published version's files are kept");
            break;
        }
        assert!(Instant::now() < deadline, "v1's files outlived its grace period by 20 s: {only_v1:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.stop.cancel();
}
