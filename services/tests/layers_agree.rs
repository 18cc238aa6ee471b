//! Property: on any set of events, in any arrival order, the batch layer (archiver + batch
//! job, into segments) and the speed layer (pre-rolled realtime rows) produce identical `ohlcv`
//! rows at every interval, and the serving merge at any batch horizon answers every interval
//! exactly as a direct computation from the events. Runs the real components over a real
//! embedded log, SQLite view store and local segment store, and queries the real HTTP API.
//! Kappa's hand-off is checked the same way, on the embedded log with SQLite and on Kafka with
//! PostgreSQL (private test servers).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use prism::app::{build_app, AppParts};
use prism_batch::archiver::{run_archiver, ArchiverConfig};
use prism_batch::batch_job::{build_and_publish, BatchConfig};
use prism_batch::master::MasterDataset;
use prism_core::config::{speed_consumer, Architecture, ARCHIVER_CONSUMER};
use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};
use prism_core::log::{EventLog, NewRecord};
use prism_core::segment::SegmentFile;
use prism_core::store::ViewStore;
use prism_core::view::ohlcv::{Ohlcv, OhlcvRow, OhlcvView};
use prism_core::view::{roll_up, View, ViewRegistry, ViewRow};
use prism_core::window::window_start;
use prism_serving::segments::SegmentReader;
use prism_speed::bulk::bulk_catch_up;
use prism_speed::handoff::{handoff_once, HandoffConfig};
use prism_speed::{run_speed_layer, HorizonSource, SpeedConfig};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const T0: i64 = 1_704_205_800_000; // 2024-01-02T14:30:00Z
const SPAN_MS: i64 = 3 * 3_600_000; // three hours
const SYMBOLS: [&str; 3] = ["AAA", "BBB", "CCC"];

fn arb_events() -> impl Strategy<Value = Vec<Quote>> {
    arb_events_over(SPAN_MS)
}

fn arb_events_over(span_ms: i64) -> impl Strategy<Value = Vec<Quote>> {
    proptest::collection::vec((0usize..3, 0..span_ms, 1i128..5_000, 1i64..500), 1..300).prop_map(|v| {
        v.into_iter()
            .map(|(s, dt, cents, size)| Quote {
                symbol: SYMBOLS[s].to_string(),
                ts: T0 + dt,
                price: Decimal6::from_units(cents * 10_000),
                size,
                bid: None,
                ask: None,
                exchange: None,
            })
            .collect()
    })
}

async fn wait_for(store: &ViewStore, consumer: &str, ends: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let offsets = store.consumer_offsets(consumer, QUOTES_TOPIC).await.expect("offsets");
        if ends.iter().enumerate().all(|(p, e)| *e == 0 || offsets.iter().any(|o| o.partition == p as i32 && o.next_offset == *e)) {
            return;
        }
        assert!(Instant::now() < deadline, "{consumer} did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A served bar as compared: (start ms, "open high low close notional", volume, trades).
type ServedBar = (i64, String, i64, i64);

/// Rows by interval, sorted by (key, window start).
type ByInterval = BTreeMap<i64, Vec<OhlcvRow>>;

/// What one run produced.
struct Outcome {
    /// The speed layer's realtime rows, every interval.
    realtime: ByInterval,
    /// The published batch version's segment rows, every interval.
    batch: ByInterval,
    /// Base rows computed directly from the events (all, and those before H).
    direct_all: Vec<OhlcvRow>,
    direct_before: Vec<OhlcvRow>,
    /// `/v1/bars` answers per (symbol, interval name): (start ms, open, high, low, close, volume, trades).
    served: BTreeMap<(String, String), Vec<ServedBar>>,
}

fn rows_of(events: &[(Quote, prism_core::event::LogPosition)], view: &OhlcvView) -> Vec<OhlcvRow> {
    let mut by: BTreeMap<(String, i64), Ohlcv> = BTreeMap::new();
    for (q, pos) in events {
        let c = view.contribution(q, *pos);
        by.entry((q.symbol.clone(), window_start(q.ts, 60_000))).and_modify(|a| *a = a.merge(&c)).or_insert(c);
    }
    by.into_iter().map(|((key, window_start_ms), agg)| ViewRow { key, window_start_ms, agg }).collect()
}

/// A fresh folder with an embedded log (`prism.quotes` of `partitions`) and a SQLite view store.
async fn embedded(partitions: i32) -> (tempfile::TempDir, Arc<EmbeddedLog>, ViewStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(
        EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig { fsync: FsyncPolicy::Never, ..Default::default() }).expect("log"),
    );
    log.ensure_topic(QUOTES_TOPIC, partitions).await.expect("topic");
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
    (dir, log, store)
}

async fn run_layers(events: Vec<Quote>, partitions: i32, chunk: usize, horizon: i64) -> Outcome {
    let (dir, log, store) = embedded(partitions).await;
    let view = Arc::new(OhlcvView::standard(5_000));

    let positioned = append(&*log, &events, chunk).await;
    let ends = log.end_offsets(QUOTES_TOPIC).await.expect("ends");

    let stop = CancellationToken::new();
    let speed = SpeedConfig { partitions, commit_max_events: 37, ..SpeedConfig::default() };
    let speed_task = tokio::spawn(run_speed_layer(view.clone(), speed, log.clone(), store.clone(), stop.clone()));
    let master = MasterDataset::local(&dir.path().join("master")).expect("master dataset");
    let archiver =
        ArchiverConfig { flush_rows: 53, flush_interval: Duration::from_millis(20), ..ArchiverConfig::new(master.clone(), partitions) };
    let archiver_task = tokio::spawn(run_archiver(archiver, log.clone(), store.clone(), stop.clone()));
    wait_for(&store, &speed_consumer("ohlcv", 1), &ends).await;
    wait_for(&store, ARCHIVER_CONSUMER, &ends).await;
    stop.cancel();
    speed_task.await.expect("join").expect("speed layer");
    archiver_task.await.expect("join").expect("archiver");

    let mut realtime = ByInterval::new();
    for p in 0..partitions {
        for r in store.realtime_rows_of_partition(&*view, 1, p, i64::MIN).await.expect("realtime rows") {
            realtime.entry(r.interval_ms).or_default().push(r.row);
        }
    }
    for rows in realtime.values_mut() {
        rows.sort_by(|a, b| (&a.key, a.window_start_ms).cmp(&(&b.key, b.window_start_ms)));
    }
    let config = BatchConfig::new(master.clone());
    build_and_publish(&view, &config, &store, &ends, horizon, true, Instant::now()).await.expect("batch job");
    let mut batch = ByInterval::new();
    let version = store.view_pointer("ohlcv").await.expect("pointer").batch_version.expect("published");
    for s in store.batch_segments("ohlcv", version).await.expect("manifest") {
        let file = SegmentFile::open(master.location(), &s.path.as_str().into()).await.expect("segment");
        for &interval in view.intervals_ms() {
            let rows = file.read_rows(master.location(), &*view, interval, None, i64::MIN, i64::MAX).await.expect("rows");
            batch.entry(interval).or_default().extend(rows);
        }
    }

    let served = served_bars(&log, &store, Architecture::Lambda, master.location()).await;
    let direct_all = rows_of(&positioned, &view);
    let before: Vec<_> = positioned.iter().filter(|(q, _)| q.ts < horizon).cloned().collect();
    let direct_before = rows_of(&before, &view);
    store.close().await;
    Outcome { realtime, batch, direct_all, direct_before, served }
}

/// Appends `events` to the log in batches of `chunk`; returns each with its log position.
async fn append<L: EventLog>(log: &L, events: &[Quote], chunk: usize) -> Vec<(Quote, prism_core::event::LogPosition)> {
    let mut positioned = Vec::new();
    for batch in events.chunks(chunk) {
        let records = batch.iter().map(|q| NewRecord::new(q.symbol.clone(), q.to_json())).collect();
        let positions = log.append(QUOTES_TOPIC, records).await.expect("append");
        positioned.extend(batch.iter().cloned().zip(positions));
    }
    positioned
}

/// Every symbol's `/v1/bars` answer at every interval, through the real HTTP app.
async fn served_bars<L: EventLog>(
    log: &Arc<L>,
    store: &ViewStore,
    architecture: Architecture,
    segments: &prism_core::objects::ObjectLocation,
) -> BTreeMap<(String, String), Vec<ServedBar>> {
    let app = build_app(AppParts {
        log: log.clone(),
        store: store.clone(),
        architecture,
        views: ViewRegistry::standard(5_000),
        segments: Some(SegmentReader::new(segments.clone(), 10_000)),
        batch_trigger: None,
        replays: None,
        max_body_bytes: 1 << 20,
        idempotency_window: std::time::Duration::from_secs(3600),
        auth: prism_serving::auth::AuthArgs::default(),
    });
    let mut served = BTreeMap::new();
    for symbol in SYMBOLS {
        for interval in ["1m", "5m", "15m", "1h", "1d"] {
            let uri = format!("/v1/bars/{symbol}?interval={interval}&limit=100000");
            let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).expect("request")).await.expect("answer");
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 26).await.expect("body");
            let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            let bars = if status == 404 {
                Vec::new()
            } else {
                assert_eq!(status, 200, "{json}");
                json["bars"]
                    .as_array()
                    .expect("bars")
                    .iter()
                    .map(|b| {
                        let start =
                            chrono::DateTime::parse_from_rfc3339(b["start"].as_str().expect("start")).expect("rfc3339").timestamp_millis();
                        let ohlc = format!("{} {} {} {} {}", b["open"], b["high"], b["low"], b["close"], b["notional"]);
                        (start, ohlc, b["volume"].as_i64().expect("volume"), b["trades"].as_i64().expect("trades"))
                    })
                    .collect()
            };
            served.insert((symbol.to_string(), interval.to_string()), bars);
        }
    }
    served
}

/// Kappa: the speed layer over every event, then a hand-off pass while it runs (it drops the
/// rows behind the new horizon); returns the events with positions, the hand-off horizon and
/// the served bars. On an embedded log and a SQLite view store.
async fn run_kappa(events: Vec<Quote>, partitions: i32, chunk: usize) -> KappaOutcome {
    let (dir, log, store) = embedded(partitions).await;
    run_kappa_on(log, store, dir.path(), events, partitions, chunk).await
}

/// The events with their log positions, the hand-off horizon, the served bars, the events the
/// published segments say they hold.
type KappaOutcome = (Vec<(Quote, prism_core::event::LogPosition)>, Option<i64>, BTreeMap<(String, String), Vec<ServedBar>>, i64);

/// [`run_kappa`] on any event log (with an empty `prism.quotes` of `partitions`) and view
/// store (fresh); segments under `dir`.
async fn run_kappa_on<L: EventLog>(
    log: Arc<L>,
    store: ViewStore,
    dir: &std::path::Path,
    events: Vec<Quote>,
    partitions: i32,
    chunk: usize,
) -> KappaOutcome {
    let view = Arc::new(OhlcvView::standard(5_000));
    let positioned = append(&*log, &events, chunk).await;
    let ends = log.end_offsets(QUOTES_TOPIC).await.expect("ends");
    let stop = CancellationToken::new();
    let speed = SpeedConfig { partitions, commit_max_events: 37, horizon: HorizonSource::Handoff, ..SpeedConfig::default() };
    let speed_task = tokio::spawn(run_speed_layer(view.clone(), speed, log.clone(), store.clone(), stop.clone()));
    wait_for(&store, &speed_consumer("ohlcv", 1), &ends).await;
    let location = MasterDataset::local(&dir.join("segments")).expect("segment store").location().clone();
    let handoff = HandoffConfig {
        realtime_version: 1,
        interval: Duration::from_secs(1),
        grace: Duration::from_secs(600),
        location: location.clone(),
    };
    let report = handoff_once(&view, &handoff, &store, &*log).await.expect("hand-off");
    // Let the speed layer commit once more: it drops the rows behind the new horizon.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    speed_task.await.expect("join").expect("speed layer");
    let served = served_bars(&log, &store, Architecture::Kappa, &location).await;
    let mut segment_events = 0;
    if let Some(r) = &report {
        segment_events = store.batch_segments("ohlcv", r.segment_version).await.expect("segments").iter().map(|s| s.events).sum();
    }
    store.close().await;
    (positioned, report.map(|r| r.segment_horizon_ms), served, segment_events)
}

/// Checks a Kappa outcome against a direct computation over the positioned events: every
/// interval's bars, and the hand-off horizon (min over partitions of (max event time −
/// lateness), to a UTC day; no hand-off when that is not after the first window).
fn check_kappa(outcome: KappaOutcome) -> Result<(), TestCaseError> {
    let (positioned, horizon, served, segment_events) = outcome;
    let view = OhlcvView::standard(5_000);
    let direct = rows_of(&positioned, &view);
    for ((symbol, interval), bars) in &served {
        let ms = match interval.as_str() {
            "1m" => 60_000,
            "5m" => 300_000,
            "15m" => 900_000,
            "1h" => 3_600_000,
            _ => 86_400_000,
        };
        let want: Vec<_> = rolled(&direct, ms).iter().filter(|r| &r.key == symbol).map(as_bar).collect();
        prop_assert_eq!(bars, &want, "{} {}", symbol, interval);
    }
    let mut max_by_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for (q, pos) in &positioned {
        let m = max_by_partition.entry(pos.partition).or_insert(q.ts);
        *m = (*m).max(q.ts);
    }
    let watermark = max_by_partition.values().min().copied().unwrap_or(0) - 5_000;
    let target = window_start(watermark, 86_400_000);
    let first = positioned.iter().map(|(q, _)| window_start(q.ts, 60_000)).min().unwrap_or(0);
    prop_assert_eq!(horizon, (target > first).then_some(target));
    // The segments count every event before the horizon.
    let before = positioned.iter().filter(|(q, _)| horizon.is_some_and(|h| window_start(q.ts, 60_000) < h)).count();
    prop_assert_eq!(segment_events, before as i64);
    Ok(())
}

fn rolled(base: &[OhlcvRow], interval: i64) -> Vec<OhlcvRow> {
    if interval == 60_000 {
        base.to_vec()
    } else {
        roll_up(base, interval)
    }
}

fn as_bar(r: &OhlcvRow) -> (i64, String, i64, i64) {
    let a = r.agg;
    let q = |d: Option<Decimal6>| format!("\"{}\"", d.map(|d| d.to_string()).unwrap_or_default());
    let ohlc = format!("{} {} {} {} {}", q(a.open.map(|p| p.price)), q(a.high), q(a.low), q(a.close.map(|p| p.price)), q(Some(a.notional)));
    (r.window_start_ms, ohlc, a.volume, a.trades)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Kappa: events over three days in any order; after a hand-off of the finalized days,
    /// segments + realtime rows answer every interval exactly as a direct computation, and the
    /// hand-off horizon is the finalized watermark rounded down to a UTC day.
    #[test]
    fn kappa_hand_off_serves_exact_bars(
        events in arb_events_over(3 * 86_400_000).prop_shuffle(),
        partitions in 1i32..4,
        chunk in 1usize..64,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        check_kappa(runtime.block_on(run_kappa(events, partitions, chunk)))?;
    }

    #[test]
    fn batch_and_speed_layers_agree(
        events in arb_events().prop_shuffle(),
        partitions in 1i32..4,
        chunk in 1usize..64,
        horizon_minute in -1i64..(SPAN_MS / 60_000 + 2),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let horizon = T0 + horizon_minute * 60_000;
        let out = runtime.block_on(run_layers(events, partitions, chunk, horizon));
        let empty = Vec::new();
        for interval in OhlcvView::standard(5_000).intervals_ms().to_vec() {
            // The speed layer saw everything, pre-rolled at every interval; the batch job
            // everything before H.
            prop_assert_eq!(out.realtime.get(&interval).unwrap_or(&empty), &rolled(&out.direct_all, interval), "realtime at {}", interval);
            prop_assert_eq!(out.batch.get(&interval).unwrap_or(&empty), &rolled(&out.direct_before, interval), "batch at {}", interval);
        }
        // The serving merge at H answers every interval as a direct computation over all events.
        for ((symbol, interval), bars) in &out.served {
            let ms = match interval.as_str() { "1m" => 60_000, "5m" => 300_000, "15m" => 900_000, "1h" => 3_600_000, _ => 86_400_000 };
            let want: Vec<_> = rolled(&out.direct_all, ms).iter().filter(|r| &r.key == symbol).map(as_bar).collect();
            prop_assert_eq!(bars, &want, "{} {}", symbol, interval);
        }
    }

}

/// Kappa bulk catch-up of a fresh version over `first` (sorted by event time, so nothing is
/// late), then the streaming speed layer resuming from where it stopped over `more` and a
/// hand-off pass; returns what [`check_kappa`] checks, and the bulk report's horizon.
async fn run_bulk(first: Vec<Quote>, more: Vec<Quote>, partitions: i32) -> (KappaOutcome, Option<i64>) {
    let (dir, log, store) = embedded(partitions).await;
    let view = Arc::new(OhlcvView::standard(5_000));
    let mut positioned = append(&*log, &first, 7).await;
    let location = MasterDataset::local(&dir.path().join("segments")).expect("segment store").location().clone();
    let handoff = HandoffConfig {
        realtime_version: 1,
        interval: Duration::from_secs(1),
        grace: Duration::from_secs(600),
        location: location.clone(),
    };
    let done = std::sync::atomic::AtomicI64::new(0);
    let report = bulk_catch_up(&view, &handoff, "test", &*log, &store, &done, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("bulk")
        .expect("a fresh version");
    assert_eq!(report.events, first.len() as i64);
    assert_eq!(report.skipped, 0, "sorted events are never late");
    let ends = log.end_offsets(QUOTES_TOPIC).await.expect("ends");
    let offsets = store.consumer_offsets(&speed_consumer("ohlcv", 1), QUOTES_TOPIC).await.expect("offsets");
    for (p, end) in ends.iter().enumerate() {
        assert_eq!(
            offsets.iter().find(|o| o.partition == p as i32).map(|o| o.next_offset),
            Some(*end),
            "bulk committed partition {p} to its end"
        );
    }
    assert!(
        bulk_catch_up(&view, &handoff, "test", &*log, &store, &done, &tokio_util::sync::CancellationToken::new())
            .await
            .expect("bulk")
            .is_none(),
        "only a fresh version"
    );
    positioned.extend(append(&*log, &more, 7).await);
    let ends = log.end_offsets(QUOTES_TOPIC).await.expect("ends");
    let stop = CancellationToken::new();
    let speed = SpeedConfig { partitions, commit_max_events: 37, horizon: HorizonSource::Handoff, ..SpeedConfig::default() };
    let speed_task = tokio::spawn(run_speed_layer(view.clone(), speed, log.clone(), store.clone(), stop.clone()));
    wait_for(&store, &speed_consumer("ohlcv", 1), &ends).await;
    let pass = handoff_once(&view, &handoff, &store, &*log).await.expect("hand-off");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    speed_task.await.expect("join").expect("speed layer");
    let served = served_bars(&log, &store, Architecture::Kappa, &location).await;
    let state = store.handoff_state("ohlcv", 1).await.expect("state");
    let mut segment_events = 0;
    if let Some(v) = state.segment_version {
        segment_events = store.batch_segments("ohlcv", v).await.expect("segments").iter().map(|s| s.events).sum();
    }
    store.close().await;
    let horizon = pass.map(|r| r.segment_horizon_ms).or(report.segment_horizon_ms);
    ((positioned, horizon, served, segment_events), report.segment_horizon_ms)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, max_shrink_iters: 16, ..ProptestConfig::default() })]

    /// The same Kappa property over Kafka and PostgreSQL: a private broker and database for
    /// each case (Tansu 0.6 cannot recreate a deleted topic, so each case gets a new broker).
    #[test]
    fn kappa_hand_off_serves_exact_bars_on_kafka_and_postgres(
        events in arb_events_over(3 * 86_400_000).prop_shuffle(),
        partitions in 1i32..4,
        chunk in 1usize..64,
    ) {
        let env = common::TestEnv::start();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        check_kappa(runtime.block_on(async {
            let log = KafkaLog::connect(KafkaLogConfig::new(env.var("PRISM_KAFKA_BROKERS"))).await.expect("connect");
            log.ensure_topic(QUOTES_TOPIC, partitions).await.expect("topic");
            let store = ViewStore::open_url(&env.var("PRISM_DATABASE_URL"), Duration::from_secs(10)).await.expect("store");
            let dir = tempfile::tempdir().expect("tempdir");
            run_kappa_on(Arc::new(log), store, dir.path(), events, partitions, chunk).await
        }))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Kappa bulk catch-up: events over about three years (sorted by event time), folded in bulk
    /// into segments (closed years as they close) and realtime rows; then more events through
    /// the streaming speed layer, which resumes from the bulk's offsets. Every interval answers
    /// exactly as a direct computation, and the segments count every event before the horizon.
    #[test]
    fn kappa_bulk_catch_up_serves_exact_bars(
        mut quotes in arb_events_over(3 * 365 * 86_400_000),
        split in 1usize..300,
        partitions in 1i32..4,
    ) {
        quotes.sort_by_key(|q| q.ts);
        // At least one event for the bulk path (an empty log is not a catch-up: the streaming
        // path starts at once).
        let split = split.min(quotes.len());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let (outcome, bulk_horizon) = runtime.block_on(run_bulk(quotes[..split].to_vec(), quotes[split..].to_vec(), partitions));
        let (positioned, horizon, served, segment_events) = outcome;
        let view = OhlcvView::standard(5_000);
        let direct = rows_of(&positioned, &view);
        for ((symbol, interval), bars) in &served {
            let ms = match interval.as_str() { "1m" => 60_000, "5m" => 300_000, "15m" => 900_000, "1h" => 3_600_000, _ => 86_400_000 };
            let want: Vec<_> = rolled(&direct, ms).iter().filter(|r| &r.key == symbol).map(as_bar).collect();
            prop_assert_eq!(bars, &want, "{} {}", symbol, interval);
        }
        let before = positioned.iter().filter(|(q, _)| horizon.is_some_and(|h| window_start(q.ts, 60_000) < h)).count();
        prop_assert_eq!(segment_events, before as i64);
        // The bulk horizon is the finalized watermark of the first part, to a UTC day.
        if let Some(h) = bulk_horizon {
            prop_assert_eq!(h % 86_400_000, 0);
        }
    }
}
