//! Kappa mode end to end, in-process, on the bundled lab data (4 trades a day): the same
//! `/v1/bars` rows as Lambda mode; finalized windows handed off to segments and dropped from the
//! realtime store; no batch layer; a restart keeps the hand-off; a Lambda data dir switched to
//! Kappa carries its batch segments over.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use prism::up::UpConfig;
use prism_core::config::Architecture;
use prism_core::store::ViewStore;
use prism_core::view::ohlcv::OhlcvView;
use serde_json::Value;

const SYMBOLS: [&str; 5] = ["AAPL", "FB", "GOOG", "IBM", "MSFT"];
/// The lab's last trading day: the watermark never finalizes it, so it stays realtime.
const LAST_DAY: &str = "2013-03-01T00:00:00Z";

fn kappa_config(dir: &Path) -> UpConfig {
    let mut config = test_config(dir);
    config.deployment.architecture = Architecture::Kappa;
    config.handoff.handoff_interval = Duration::from_millis(200);
    config
}

/// Waits until the feed is done, the speed layer is at the log end and the segment horizon is
/// at least the lab's last day (a Lambda batch horizon carried over may be later in that day).
async fn wait_handed_off(up: &Running) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, status) = up.get("/v1/status").await;
        let feeds_done = status["feeds"].as_array().is_some_and(|f| !f.is_empty() && f.iter().all(|f| f["done"] == true));
        let at_end = status["partitions"].as_array().is_some_and(|ps| {
            ps.iter().all(|p| p["consumers"].as_array().is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["lag"] == 0)))
        });
        if code == 200 && feeds_done && at_end && status["segment_horizon"].as_str().is_some_and(|h| h >= LAST_DAY) {
            return;
        }
        assert!(Instant::now() < deadline, "kappa did not hand off up to {LAST_DAY}: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every symbol's bars at `interval`, without the `layer` field, and the layers seen.
async fn bars_without_layers(up: &Running, interval: &str) -> (Vec<Value>, std::collections::BTreeMap<String, usize>) {
    let mut rows = Vec::new();
    let mut layers = std::collections::BTreeMap::new();
    for symbol in SYMBOLS {
        let bars = all_bars(&up.client, &up.base, symbol, interval).await;
        for bar in &bars {
            *layers.entry(bar["layer"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
        }
        rows.extend(bar_values(&bars).into_iter().map(|bar| serde_json::json!([symbol, bar])));
    }
    (rows, layers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kappa_serves_lambdas_bars_from_handed_off_segments() {
    // Lambda first: the reference answers.
    let lambda_dir = tempfile::tempdir().expect("tempdir");
    let lambda = start(test_config(lambda_dir.path())).await;
    settle_and_run_batch(&lambda.client, &lambda.base, true, Duration::from_secs(300)).await;
    let (lambda_daily, _) = bars_without_layers(&lambda, "1d").await;
    let (lambda_hourly, _) = bars_without_layers(&lambda, "1h").await;
    lambda.stop().await;
    assert_eq!(lambda_daily.len(), 12_154, "the lab's daily bars");

    let dir = tempfile::tempdir().expect("tempdir");
    let kappa = start(kappa_config(dir.path())).await;
    wait_handed_off(&kappa).await;
    let (daily, layers) = bars_without_layers(&kappa, "1d").await;
    assert_eq!(daily, lambda_daily, "Kappa's daily bars equal Lambda's");
    assert_eq!(layers.get("segment"), Some(&(12_154 - 5)), "{layers:?}");
    assert_eq!(layers.get("realtime"), Some(&5), "the last day is still open: {layers:?}");
    let (hourly, _) = bars_without_layers(&kappa, "1h").await;
    assert_eq!(hourly, lambda_hourly, "Kappa's hourly bars equal Lambda's");

    let (_, one) = kappa.get("/v1/bars/AAPL?interval=1d&limit=1").await;
    assert_eq!(one["architecture"], "kappa");
    assert_eq!(one["batch_horizon"], Value::Null, "Kappa has no batch horizon");
    assert_eq!(one["segment_horizon"], LAST_DAY);
    let run = kappa.client.post(format!("{}/v1/admin/batch-runs", kappa.base)).send().await.expect("POST");
    assert_eq!(run.status().as_u16(), 409, "no batch layer in Kappa mode");
    let (_, status) = kappa.get("/v1/status").await;
    let consumers: Vec<&str> =
        status["partitions"][0]["consumers"].as_array().expect("consumers").iter().filter_map(|c| c["consumer"].as_str()).collect();
    assert!(!consumers.contains(&"archiver"), "no archiver in Kappa mode: {consumers:?}");
    kappa.stop().await;

    // Handed-off windows left the realtime store.
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
    let view = OhlcvView::standard(5_000);
    let last_day_ms = prism_core::time::parse_instant(LAST_DAY).expect("instant");
    let behind = store.realtime_rows_between(&view, 1, 60_000, i64::MIN, last_day_ms).await.expect("rows");
    assert!(behind.is_empty(), "{} realtime 1m rows behind the segment horizon", behind.len());
    let open = store.realtime_rows_between(&view, 1, 60_000, last_day_ms, i64::MAX).await.expect("rows");
    assert!(!open.is_empty(), "the open day stays realtime");
    store.close().await;

    // A restart serves the same bars from the hand-off it left.
    let again = start(kappa_config(dir.path())).await;
    wait_handed_off(&again).await;
    assert_eq!(bars_without_layers(&again, "1d").await.0, lambda_daily, "after a restart");
    again.stop().await;

    // Lambda → Kappa on one data dir: the batch version is carried over as the first segments
    // (its horizon is later than any day boundary the watermark finalizes), answers unchanged.
    let switched = start(kappa_config(lambda_dir.path())).await;
    wait_handed_off(&switched).await;
    let (daily, layers) = bars_without_layers(&switched, "1d").await;
    assert_eq!(daily, lambda_daily, "Lambda → Kappa keeps every bar");
    assert_eq!(layers.get("segment"), Some(&(12_154 - 5)), "{layers:?}");
    assert_eq!(layers.get("both"), Some(&5), "the last day straddles the carried-over horizon: {layers:?}");
    // New days move the watermark on: the hand-off rebuilds March 2013 from the batch segment
    // (covered until the batch horizon) and the realtime rows after it, and retires the batch
    // version.
    let trades = "{\"symbol\":\"AAPL\",\"ts\":\"2013-03-04T14:30:00Z\",\"price\":\"430.5\",\"size\":100}\n\
                  {\"symbol\":\"AAPL\",\"ts\":\"2013-03-06T15:00:00Z\",\"price\":\"431\",\"size\":50}\n";
    let resp = switched
        .client
        .post(format!("{}/v1/events/quotes", switched.base))
        .header("content-type", "application/x-ndjson")
        .body(trades)
        .send()
        .await
        .expect("POST");
    assert!(resp.status().is_success(), "ingest: {}", resp.status());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = switched.get("/v1/status").await;
        if status["segment_horizon"] == "2013-03-06T00:00:00Z" {
            break;
        }
        assert!(Instant::now() < deadline, "no hand-off to 2013-03-06: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut daily, layers) = bars_without_layers(&switched, "1d").await;
    let new_days: Vec<Value> = daily.iter().filter(|r| r[1]["start"].as_str().is_some_and(|s| s > LAST_DAY)).cloned().collect();
    daily.retain(|r| r[1]["start"].as_str().is_some_and(|s| s <= LAST_DAY));
    assert_eq!(daily, lambda_daily, "the carried-over days are unchanged after the hand-off rebuilt their chunk");
    assert_eq!(new_days.len(), 2, "{new_days:?}");
    assert_eq!(new_days[0][1]["trades"], 1);
    assert_eq!(layers.get("segment"), Some(&(12_154 + 1)), "everything before 2013-03-06 is in segments: {layers:?}");
    assert_eq!(layers.get("realtime"), Some(&1), "{layers:?}");
    switched.stop().await;
}

/// Lambda → Kappa is refused on a log whose head is gone (an embedded log without its first
/// segment file), naming the partition and where it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kappa_refuses_a_log_without_its_head() {
    use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
    use prism_core::log::{EventLog, NewRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let log = EmbeddedLog::open(&log_dir, EmbeddedLogConfig { segment_bytes: 2_000, ..Default::default() }).expect("open");
    log.ensure_topic("prism.quotes", 1).await.expect("topic");
    for i in 0..100 {
        let quote = format!("{{\"symbol\":\"AAPL\",\"ts\":{},\"price\":\"1\",\"size\":1}}", 1_000_000 + i);
        log.append("prism.quotes", vec![NewRecord::new("AAPL", quote)]).await.expect("append");
    }
    log.flush().await.expect("flush");
    drop(log);
    let partition_dir =
        std::fs::read_dir(log_dir.join("prism.quotes")).expect("topic dir").filter_map(|e| e.ok()).next().expect("a partition");
    let mut segments: Vec<_> =
        std::fs::read_dir(partition_dir.path()).expect("segments").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    segments.sort();
    assert!(segments.len() > 1, "small segments roll");
    std::fs::remove_file(&segments[0]).expect("remove the head");

    let mut config = kappa_config(dir.path());
    config.feed.no_feed = true;
    let refused = prism::up::run_up(config, tokio_util::sync::CancellationToken::new(), None).await.expect_err("refused");
    let message = format!("{refused:#}");
    assert!(message.contains("prism.quotes partition 0 starts at offset"), "{message}");
}
