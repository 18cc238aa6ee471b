//! Property: on any set of events, in any arrival order, the batch layer (archiver + batch
//! job) and the speed layer produce identical `ohlcv` rows, and the serving merge at any batch
//! horizon gives the same bars as either layer alone. Runs the real components over a real
//! embedded log and SQLite view store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_batch::archiver::{run_archiver, ArchiverConfig};
use prism_batch::batch_job::recompute;
use prism_batch::master::MasterDataset;
use prism_core::config::{speed_consumer, ARCHIVER_CONSUMER};
use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::{EventLog, NewRecord};
use prism_core::ohlcv::{ohlcv_contribution, Ohlcv, OhlcvKey, OhlcvRow};
use prism_core::store::ViewStore;
use prism_core::window::Interval;
use prism_serving::merge::merge_bars;
use prism_speed::{run_speed_layer, SpeedConfig};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_704_205_800_000; // 2024-01-02T14:30:00Z
const SPAN_MS: i64 = 3 * 3_600_000; // three hours: several Hive hour partitions

fn arb_events() -> impl Strategy<Value = Vec<Quote>> {
    proptest::collection::vec((0usize..3, 0..SPAN_MS, 1i128..5_000, 1i64..500), 1..300).prop_map(|v| {
        v.into_iter()
            .map(|(s, dt, cents, size)| Quote {
                symbol: ["AAA", "BBB", "CCC"][s].to_string(),
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

/// Runs both layers over `events` appended in their given order; returns (speed rows, batch
/// rows below `horizon` by interval, the 1-minute rows computed directly from the events).
async fn run_layers(
    events: Vec<Quote>,
    partitions: i32,
    chunk: usize,
    horizon: i64,
) -> (Vec<OhlcvRow>, BTreeMap<i64, Vec<OhlcvRow>>, Vec<OhlcvRow>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig { fsync: FsyncPolicy::Never, ..Default::default() }).expect("log"));
    log.ensure_topic(QUOTES_TOPIC, partitions).await.expect("topic");
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");

    let mut expected: HashMap<OhlcvKey, Ohlcv> = HashMap::new();
    for batch in events.chunks(chunk) {
        let records = batch.iter().map(|q| NewRecord::new(q.symbol.clone(), q.to_json())).collect();
        let positions = log.append(QUOTES_TOPIC, records).await.expect("append");
        for (q, pos) in batch.iter().zip(positions) {
            let (key, c) = ohlcv_contribution(q, pos);
            let agg = expected.entry(key).or_default();
            *agg = agg.merge(&c);
        }
    }
    let ends = log.end_offsets(QUOTES_TOPIC).await.expect("ends");

    let stop = CancellationToken::new();
    let speed = SpeedConfig { partitions, commit_max_events: 37, ..SpeedConfig::default() };
    let speed_task = tokio::spawn(run_speed_layer(speed, log.clone(), store.clone(), stop.clone()));
    let master = MasterDataset::local(&dir.path().join("master")).expect("master dataset");
    let archiver = ArchiverConfig { master: master.clone(), flush_rows: 53, flush_interval: Duration::from_millis(20), partitions };
    let archiver_task = tokio::spawn(run_archiver(archiver, log.clone(), store.clone(), stop.clone()));
    wait_for(&store, &speed_consumer(1), &ends).await;
    wait_for(&store, ARCHIVER_CONSUMER, &ends).await;
    stop.cancel();
    speed_task.await.expect("join").expect("speed layer");
    archiver_task.await.expect("join").expect("archiver");

    let mut realtime = store.realtime_rows_since(1, i64::MIN).await.expect("realtime rows");
    realtime.sort_by(|a, b| a.key.cmp(&b.key));
    let (batch, _, _) = recompute(&master, &ends, horizon).await.expect("batch job");
    let mut expected: Vec<OhlcvRow> = expected.into_iter().map(|(key, agg)| OhlcvRow { key, agg }).collect();
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    (realtime, batch, expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn batch_and_speed_layers_agree(
        events in arb_events().prop_shuffle(),
        partitions in 1i32..4,
        chunk in 1usize..64,
        horizon_minute in -1i64..(SPAN_MS / 60_000 + 2),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let horizon = T0 + horizon_minute * 60_000;
        let (realtime, batch, expected) = runtime.block_on(run_layers(events, partitions, chunk, horizon));

        // The speed layer saw everything; the batch job everything before H, at every interval.
        prop_assert_eq!(&realtime, &expected);
        let expected_before: Vec<OhlcvRow> = expected.iter().filter(|r| r.key.window_start_ms < horizon).cloned().collect();
        let empty = Vec::new();
        prop_assert_eq!(batch.get(&60_000).unwrap_or(&empty), &expected_before);
        for symbol in ["AAA", "BBB", "CCC"] {
            let of = |rows: &[OhlcvRow]| rows.iter().filter(|r| r.key.symbol == symbol).cloned().collect::<Vec<_>>();
            for interval in Interval::ALL {
                let rolled: Vec<(i64, Ohlcv)> = of(batch.get(&interval.size_ms()).unwrap_or(&empty)).into_iter().map(|r| (r.key.window_start_ms, r.agg)).collect();
                let direct: Vec<(i64, Ohlcv)> = merge_bars(&of(&expected_before), &[], interval).into_iter().map(|b| (b.start_ms, b.agg)).collect();
                prop_assert_eq!(rolled, direct, "{} {:?}", symbol, interval);
            }
        }

        // The serving merge at H equals either layer alone, at every interval.
        let realtime_from: Vec<OhlcvRow> = realtime.iter().filter(|r| r.key.window_start_ms >= horizon).cloned().collect();
        let batch_1m = batch.get(&60_000).cloned().unwrap_or_default();
        for symbol in ["AAA", "BBB", "CCC"] {
            let of = |rows: &[OhlcvRow]| rows.iter().filter(|r| r.key.symbol == symbol).cloned().collect::<Vec<_>>();
            for interval in Interval::ALL {
                let merged = merge_bars(&of(&batch_1m), &of(&realtime_from), interval);
                let alone = merge_bars(&[], &of(&expected), interval);
                prop_assert_eq!(merged.len(), alone.len());
                for (m, a) in merged.iter().zip(&alone) {
                    prop_assert_eq!((m.start_ms, m.agg), (a.start_ms, a.agg));
                }
            }
        }
    }
}
