//! Two registered views of one source (`--views ohlcv,ohlcv_30s`): every layer runs both, and
//! they agree at every interval both serve; the 30-second view also serves `30s` bars.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_view_agrees_with_the_minute_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.feed.no_feed = true;
    config.deployment.views = vec!["ohlcv".into(), "ohlcv_30s".into()];
    let up = start(config).await;
    // Trades at varied seconds over two days: several per 30-second window, some alone.
    let mut body = String::new();
    let mut windows_30s = BTreeSet::new();
    let mut state: u64 = 7;
    for day in ["2024-05-06", "2024-05-07"] {
        for i in 0..120u64 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let second = (i * 17 + (state >> 40) % 13) % 3_600;
            let ts = format!("{day}T14:{:02}:{:02}Z", second / 60, second % 60);
            windows_30s.insert(format!("{day}T14:{:02}:{:02}Z", second / 60, (second % 60) / 30 * 30));
            body.push_str(&format!(
                "{{\"symbol\":\"AAPL\",\"ts\":\"{ts}\",\"price\":\"{}.{:02}\",\"size\":{}}}\n",
                180 + (state >> 50) % 7,
                (state >> 33) % 100,
                1 + (state >> 45) % 500
            ));
        }
    }
    let resp = up
        .client
        .post(format!("{}/v1/events/quotes", up.base))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert!(resp.status().is_success(), "{}", resp.status());
    settle_and_run_batch(&up.client, &up.base, false, Duration::from_secs(120)).await;

    for interval in ["1m", "5m", "1h", "1d"] {
        let (_, minute) = up.get(&format!("/v1/bars/AAPL?interval={interval}&view=ohlcv&limit=100000")).await;
        let (_, thirty) = up.get(&format!("/v1/bars/AAPL?interval={interval}&view=ohlcv_30s&limit=100000")).await;
        assert!(minute["bars"].as_array().is_some_and(|b| !b.is_empty()), "{minute}");
        // Values agree; the layer of the bars near the horizon may not (each view's batch
        // horizon is a boundary of its own window).
        let values = |v: &Value| bar_values(v["bars"].as_array().expect("bars"));
        assert_eq!(values(&minute), values(&thirty), "{interval}: both views give the same bars");
    }
    let (code, bars_30s) = up.get("/v1/bars/AAPL?interval=30s&view=ohlcv_30s&limit=100000").await;
    assert_eq!(code, 200, "{bars_30s}");
    let starts: BTreeSet<String> =
        bars_30s["bars"].as_array().expect("bars").iter().filter_map(|b| b["start"].as_str().map(str::to_string)).collect();
    assert_eq!(starts, windows_30s, "one 30s bar per window with trades");
    let total = |v: &Value| v["bars"].as_array().expect("bars").iter().map(|b| b["volume"].as_i64().unwrap_or(0)).sum::<i64>();
    let (_, daily) = up.get("/v1/bars/AAPL?interval=1d&view=ohlcv_30s").await;
    assert_eq!(total(&bars_30s), total(&daily), "30s bars hold every share");
    let (code, refused) = up.get("/v1/bars/AAPL?interval=30s&view=ohlcv").await;
    assert_eq!(code, 400, "the minute view does not serve 30s bars: {refused}");
    let (_, status) = up.get("/v1/status").await;
    let fingerprints: Vec<&str> = status["views"].as_array().expect("views").iter().filter_map(|v| v["fingerprint"].as_str()).collect();
    assert_eq!(fingerprints.len(), 2);
    assert_ne!(fingerprints[0], fingerprints[1], "the bar length is part of the definition");
    up.stop().await;
}
