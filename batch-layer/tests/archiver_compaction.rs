//! The archiver with compaction over a real embedded log and SQLite view store: the master
//! dataset ends with one visible day file per (partition, UTC day), and the rows a reader sees
//! are the log's events, every field, each exactly once — after a catch-up, on the schedule,
//! and across a restart.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{sorted, visible_rows, DAY, T0};
use prism_batch::archiver::{run_archiver, ArchiverConfig};
use prism_batch::master::{ArchivedQuote, MasterDataset};
use prism_batch::BatchError;
use prism_core::config::ARCHIVER_CONSUMER;
use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::{EventLog, NewRecord};
use prism_core::store::ViewStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SYMBOLS: [&str; 6] = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"];

/// Event `i`: spread over three UTC days and every symbol, optional fields varied.
fn event(i: i64, symbol: Option<&str>) -> Quote {
    let price = (i % 5_000 + 1) as i128 * 10_000;
    Quote {
        symbol: symbol.unwrap_or(SYMBOLS[i as usize % SYMBOLS.len()]).to_string(),
        ts: T0 + (i * 7_919 * 60_000) % (3 * DAY),
        price: Decimal6::from_units(price),
        size: 1 + i % 700,
        bid: (i % 3 == 0).then(|| Decimal6::from_units(price - 1)),
        ask: (i % 2 == 0).then(|| Decimal6::from_units(price + 1)),
        exchange: (i % 4 == 0).then(|| "XNAS".to_string()),
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    log: Arc<EmbeddedLog>,
    store: ViewStore,
    master: MasterDataset,
    /// Every valid event appended, with its log position.
    expected: Vec<ArchivedQuote>,
}

impl Rig {
    async fn new(partitions: i32) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = EmbeddedLogConfig { fsync: FsyncPolicy::Never, ..Default::default() };
        let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), config).expect("log"));
        log.ensure_topic(QUOTES_TOPIC, partitions).await.expect("topic");
        let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
        let master = MasterDataset::local(&dir.path().join("master")).expect("master dataset");
        Rig { _dir: dir, log, store, master, expected: Vec::new() }
    }

    /// Appends events `range` (all with `symbol`, so one partition, when given) and a malformed
    /// record, in one call.
    async fn append(&mut self, range: std::ops::Range<i64>, symbol: Option<&str>) {
        let quotes: Vec<Quote> = range.map(|i| event(i, symbol)).collect();
        let mut records: Vec<NewRecord> = quotes.iter().map(|q| NewRecord::new(q.symbol.clone(), q.to_json())).collect();
        records.push(NewRecord::new("AAA", b"not a quote".to_vec()));
        let positions = self.log.append(QUOTES_TOPIC, records).await.expect("append");
        self.expected.extend(quotes.into_iter().zip(positions).map(|(quote, pos)| ArchivedQuote { record: quote, pos }));
    }

    fn start(&self, config: ArchiverConfig) -> (CancellationToken, JoinHandle<Result<(), BatchError>>) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_archiver(config, self.log.clone(), self.store.clone(), stop.clone()));
        (stop, task)
    }

    /// Waits until the archiver committed the whole log and the dataset shows one visible file
    /// per (partition, day); with `settled`, also no superseded file left.
    async fn wait_compacted(&self, settled: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ends = self.log.end_offsets(QUOTES_TOPIC).await.expect("ends");
            let offsets = self.store.consumer_offsets(ARCHIVER_CONSUMER, QUOTES_TOPIC).await.expect("offsets");
            let committed = ends
                .iter()
                .enumerate()
                .all(|(p, end)| *end == 0 || offsets.iter().any(|o| o.partition == p as i32 && o.next_offset == *end));
            let all = self.master.list_all_files(QUOTES_TOPIC).await.expect("list all");
            let mut per_group: BTreeMap<(i32, i64), usize> = BTreeMap::new();
            for f in all.iter().filter(|f| f.superseded_since.is_none()) {
                *per_group.entry((f.file.partition, f.file.day_start_ms)).or_default() += 1;
            }
            let one_each = per_group.values().all(|n| *n == 1);
            if committed && one_each && (!settled || all.iter().all(|f| f.superseded_since.is_none())) {
                return;
            }
            assert!(Instant::now() < deadline, "not compacted in time: committed {committed}, files per group {per_group:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What a reader sees equals the events, each once; every file is a day file.
    async fn assert_exactly_once(&self, when: &str) {
        assert_eq!(visible_rows(&self.master).await, sorted(self.expected.clone()), "{when}");
        let files = self.master.list_files(QUOTES_TOPIC).await.expect("list");
        assert!(files.iter().all(|f| f.legacy_hour.is_none()), "{when}");
        let groups: std::collections::BTreeSet<(i32, i64)> =
            self.expected.iter().map(|r| (r.pos.partition, r.record.ts.div_euclid(DAY) * DAY)).collect();
        assert_eq!(files.len(), groups.len(), "{when}: one file per (partition, day) with events");
    }
}

#[tokio::test]
async fn the_archiver_compacts_once_it_has_caught_up_and_across_a_restart() {
    let mut rig = Rig::new(3).await;
    rig.append(0..600, None).await;
    // Compaction only when catching up after a backlog (more than `flush_rows` per flush); the
    // schedule is too far away to matter.
    let config = ArchiverConfig {
        flush_rows: 7,
        flush_interval: Duration::from_millis(10),
        compact_interval: Duration::from_secs(3600),
        compact_grace: Duration::ZERO,
        ..ArchiverConfig::new(rig.master.clone(), 3)
    };
    let (stop, task) = rig.start(config.clone());
    rig.wait_compacted(true).await;
    rig.assert_exactly_once("after the backlog").await;

    // More events for days that already have a merged file.
    rig.append(600..900, None).await;
    rig.wait_compacted(true).await;
    rig.assert_exactly_once("after live events").await;
    stop.cancel();
    task.await.expect("join").expect("archiver");

    // A restart removes uncommitted files only; merged files are committed and stay.
    let before = rig.master.list_all_files(QUOTES_TOPIC).await.expect("list all");
    let (stop, task) = rig.start(config);
    rig.append(900..1_000, Some("CCC")).await;
    rig.wait_compacted(true).await;
    rig.assert_exactly_once("after a restart").await;
    stop.cancel();
    task.await.expect("join").expect("archiver");
    let after = rig.master.list_all_files(QUOTES_TOPIC).await.expect("list all");
    let ccc = rig.expected.last().expect("events").pos.partition;
    for f in before.iter().filter(|f| f.file.partition != ccc) {
        assert!(after.contains(f), "{} untouched by the restart", f.file.location);
    }
}

#[tokio::test]
async fn the_archiver_compacts_on_its_schedule_and_keeps_superseded_files_for_the_grace_period() {
    let mut rig = Rig::new(2).await;
    let config = ArchiverConfig {
        flush_rows: 1_000_000,
        flush_interval: Duration::from_millis(10),
        compact_interval: Duration::from_millis(300),
        compact_grace: Duration::from_secs(3600),
        ..ArchiverConfig::new(rig.master.clone(), 2)
    };
    let (stop, task) = rig.start(config);
    // A trickle: many small flushes, never a backlog.
    for chunk in 0..12 {
        rig.append(chunk * 5..chunk * 5 + 5, None).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    rig.wait_compacted(false).await;
    rig.assert_exactly_once("after the trickle").await;
    let all = rig.master.list_all_files(QUOTES_TOPIC).await.expect("list all");
    let visible = all.iter().filter(|f| f.superseded_since.is_none()).count();
    assert!(all.len() > visible, "small files were merged and are kept for the grace period: {} files, {visible} visible", all.len());
    stop.cancel();
    task.await.expect("join").expect("archiver");
    rig.assert_exactly_once("after the stop").await;
}

#[tokio::test]
async fn a_view_store_without_archiver_progress_never_empties_an_archived_dataset() {
    let mut rig = Rig::new(2).await;
    rig.append(0..300, None).await;
    let config = ArchiverConfig { flush_interval: Duration::from_millis(10), ..ArchiverConfig::new(rig.master.clone(), 2) };
    let (stop, task) = rig.start(config.clone());
    rig.wait_compacted(false).await;
    stop.cancel();
    task.await.expect("join").expect("archiver");
    let before = rig.master.list_all_files(QUOTES_TOPIC).await.expect("list");
    assert!(!before.is_empty());

    // The same dataset with a new, empty view store (say the old one was lost or mistyped).
    let other = tempfile::tempdir().expect("tempdir");
    let fresh = ViewStore::open_sqlite(&other.path().join("views.sqlite")).await.expect("store");
    let err = run_archiver(config.clone(), rig.log.clone(), fresh.clone(), CancellationToken::new()).await.expect_err("refused");
    assert!(matches!(err, BatchError::ForeignMasterDataset { files, .. } if files == before.len()), "{err}");
    assert!(err.to_string().contains("another view store"), "{err}");
    assert_eq!(rig.master.list_all_files(QUOTES_TOPIC).await.expect("list"), before, "nothing deleted");
    assert!(fresh.consumer_offsets(ARCHIVER_CONSUMER, QUOTES_TOPIC).await.expect("offsets").is_empty(), "nothing claimed");

    // An empty dataset is claimed before anything is written: progress 0 on every partition.
    let empty = MasterDataset::local(&other.path().join("master")).expect("dataset");
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_archiver(ArchiverConfig::new(empty, 2), rig.log.clone(), fresh.clone(), stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while fresh.consumer_offsets(ARCHIVER_CONSUMER, QUOTES_TOPIC).await.expect("offsets").len() < 2 {
        assert!(Instant::now() < deadline, "the archiver recorded its progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.expect("join").expect("archiver");
}
