//! End to end, in-process, over the bundled real data: every 1d bar of every symbol
//! (12,154 bars) equals the CSV's open, high, low, close and volume exactly, served through the
//! Lambda merge.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_daily_bar_equals_the_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = start(test_config(dir.path())).await;
    let run = settle_and_run_batch(&up.client, &up.base, Duration::from_secs(600)).await;
    assert!(run["view_version"].as_i64().is_some(), "a batch version was published: {run}");

    let csv = read_lab_csv();
    assert_eq!(csv.len(), 12_154, "the lab file has 12,154 bars");
    let (_, symbols) = up.get("/v1/symbols").await;
    assert_eq!(symbols["symbols"], serde_json::json!(["AAPL", "FB", "GOOG", "IBM", "MSFT"]));

    let mut checked = 0;
    let mut layers: HashMap<String, usize> = HashMap::new();
    for symbol in ["AAPL", "IBM", "MSFT", "GOOG", "FB"] {
        let bars = all_bars(&up.client, &up.base, symbol, "1d").await;
        let expected: Vec<&CsvBar> = csv.iter().filter(|b| b.symbol == symbol).collect();
        assert_eq!(bars.len(), expected.len(), "{symbol}: one 1d bar per CSV row");
        for (bar, row) in bars.iter().zip(&expected) {
            let start = bar["start"].as_str().expect("start");
            assert_eq!(&start[..10], row.date, "{symbol}: bar order");
            assert!(start.ends_with("T00:00:00Z"), "1d bars start at 00:00 UTC: {start}");
            for (field, want) in [("open", &row.open), ("high", &row.high), ("low", &row.low), ("close", &row.close)] {
                let got = bar[field].as_str().expect("price string");
                assert!(same_decimal(got, want), "{symbol} {}: {field} {got} != {want}", row.date);
            }
            assert_eq!(bar["volume"].as_i64(), Some(row.volume), "{symbol} {}: volume", row.date);
            *layers.entry(bar["layer"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            checked += 1;
        }
    }
    assert_eq!(checked, 12_154);
    // Everything before the horizon is served from the batch view; the lab's last day
    // (2013-03-01) straddles the horizon and merges both layers.
    assert_eq!(layers.get("both"), Some(&5), "{layers:?}");
    assert_eq!(layers.get("batch"), Some(&12_149), "{layers:?}");

    // The merge rule at 1m: windows before H come from the batch view, from H on realtime.
    let (_, last_day) = up.get("/v1/bars/AAPL?interval=1m&from=2013-03-01&to=2013-03-01").await;
    let horizon = last_day["batch_horizon"].as_str().expect("horizon").to_string();
    let bars = last_day["bars"].as_array().expect("bars");
    assert!(!bars.is_empty());
    for b in bars {
        let layer = if b["start"].as_str().expect("start") < horizon.as_str() { "batch" } else { "realtime" };
        assert_eq!(b["layer"], layer, "{b} vs horizon {horizon}");
    }
    up.stop().await;
}
