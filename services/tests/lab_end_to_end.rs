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
    let run = settle_and_run_batch(&up.client, &up.base, true, Duration::from_secs(600)).await;
    assert!(run["runs"][0]["view_version"].as_i64().is_some(), "a batch version was published: {run}");

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

/// Other daily-bar files of the documented shape: gzip with a `symbol` column and its own
/// column order and date format, and a plain file without a symbol column (named by
/// `--feed-symbol`), with rows out of order and one bad row that is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_daily_bar_files_roll_up_exactly() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    // (symbol, date, open, high, low, close, volume): a random walk, deterministic.
    let mut bars = Vec::new();
    let mut state: u64 = 12345;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    for (symbol, base) in [("ZED", 2_000u64), ("QQQX", 50_000)] {
        let mut price = base; // cents
        for day in 0..120u64 {
            let date = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).expect("date") + chrono::Duration::days(day as i64);
            let open = price;
            let close = (price + next(200)).saturating_sub(100).max(100);
            let high = open.max(close) + next(150);
            let low = open.min(close).saturating_sub(next(150)).max(1);
            let volume = 1 + next(5_000_000);
            price = close;
            bars.push((symbol, date, open, high, low, close, volume));
        }
    }
    let cents = |c: u64| format!("{}.{:02}", c / 100, c % 100);
    let gz_path = dir.path().join("zed.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&gz_path).expect("create"), flate2::Compression::default());
    writeln!(gz, "DATE,Symbol,Close,Low,High,Open,Volume,Adj Close").expect("write");
    for (s, d, o, h, l, c, v) in bars.iter().filter(|b| b.0 == "ZED").rev() {
        writeln!(gz, "{} 00:00:00,{s},{},{},{},{},{v},0", d, cents(*c), cents(*l), cents(*h), cents(*o)).expect("write");
    }
    gz.finish().expect("gzip");
    let plain_path = dir.path().join("qqqx.csv");
    let mut plain = std::fs::File::create(&plain_path).expect("create");
    writeln!(plain, "date,open,high,low,close,volume").expect("write");
    for (_, d, o, h, l, c, v) in bars.iter().filter(|b| b.0 == "QQQX") {
        writeln!(plain, "{},{},{},{},{},{v}", d.format("%m/%d/%Y"), cents(*o), cents(*h), cents(*l), cents(*c)).expect("write");
    }
    writeln!(plain, "2021-01-01,5,4,6,5,100").expect("a bad row: high < low");
    drop(plain);

    let mut config = test_config(dir.path());
    config.data_dir = dir.path().join("data");
    config.feed.feed = vec![gz_path, plain_path];
    config.feed.feed_symbol = Some("QQQX".into());
    config.feed.feed_trades_per_day = 390;
    config.deployment.partitions = 3;
    let up = start(config).await;
    settle_and_run_batch(&up.client, &up.base, true, Duration::from_secs(300)).await;
    for symbol in ["ZED", "QQQX"] {
        let served = all_bars(&up.client, &up.base, symbol, "1d").await;
        let expected: Vec<_> = bars.iter().filter(|b| b.0 == symbol).collect();
        assert_eq!(served.len(), expected.len(), "{symbol}");
        for (bar, (_, d, o, h, l, c, v)) in served.iter().zip(expected) {
            assert_eq!(bar["start"], format!("{d}T00:00:00Z"));
            for (field, want) in [("open", o), ("high", h), ("low", l), ("close", c)] {
                assert!(same_decimal(bar[field].as_str().unwrap_or(""), &cents(*want)), "{symbol} {d} {field}: {bar}");
            }
            assert_eq!(bar["volume"].as_u64(), Some(*v), "{symbol} {d}");
            assert_eq!(bar["trades"].as_u64(), Some((*v).min(390)), "{symbol} {d}");
        }
    }
    let (_, status) = up.get("/v1/status").await;
    assert_eq!(status["feeds"][0]["rows_refused"], 1, "{status}");
    up.stop().await;
}
