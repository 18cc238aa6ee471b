//! Golden files (events in → rows out, readable without Rust; DataFusion's sqllogictest habit)
//! pin the `ohlcv` view: `golden/ohlcv/events.jsonl` goes through `prism up`'s HTTP ingest, and
//! `/v1/bars` must answer `golden/ohlcv/expected.csv` (written by the independent Python oracle
//! `make_expected.py` beside it) at every interval — first from the speed layer alone, then
//! merged with the batch view after a batch run, then after a full rebuild. The events cover
//! ties on event time (broken by offset), out-of-order and late arrivals, minute, hour, day,
//! month and year boundaries, and prices with six decimals.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;

type Expected = BTreeMap<(String, String), Vec<Vec<String>>>;

fn golden_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ohlcv")
}

/// expected.csv by (interval, symbol): rows of [start, open, high, low, close, volume, notional, vwap, trades].
fn expected() -> Expected {
    let text = std::fs::read_to_string(golden_dir().join("expected.csv")).expect("expected.csv");
    let mut out = Expected::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<String> = line.split(',').map(str::to_string).collect();
        out.entry((f[0].clone(), f[1].clone())).or_default().push(f[2..].to_vec());
    }
    out
}

async fn check_all(up: &Running, expected: &Expected, stage: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    for ((interval, symbol), rows) in expected {
        let bars = all_bars(&up.client, &up.base, symbol, interval).await;
        assert_eq!(bars.len(), rows.len(), "{stage}: {symbol} {interval}: {bars:?}");
        for (bar, row) in bars.iter().zip(rows) {
            let ctx = format!("{stage}: {symbol} {interval} {bar}");
            assert_eq!(bar["start"], row[0].as_str(), "{ctx}");
            for (i, field) in ["open", "high", "low", "close"].iter().enumerate() {
                assert!(same_decimal(bar[*field].as_str().unwrap_or(""), &row[1 + i]), "{ctx}: {field} != {}", row[1 + i]);
            }
            assert_eq!(bar["volume"].as_i64().map(|v| v.to_string()), Some(row[5].clone()), "{ctx}");
            assert!(same_decimal(bar["notional"].as_str().unwrap_or(""), &row[6]), "{ctx}: notional");
            assert!(same_decimal(bar["vwap"].as_str().unwrap_or(""), &row[7]), "{ctx}: vwap");
            assert_eq!(bar["trades"].as_i64().map(|v| v.to_string()), Some(row[8].clone()), "{ctx}");
            *layers.entry(bar["layer"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        }
    }
    layers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ohlcv_golden_file_through_speed_batch_and_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.feed.no_feed = true;
    let up = start(config).await;
    let events = std::fs::read(golden_dir().join("events.jsonl")).expect("events.jsonl");
    let r = up
        .client
        .post(format!("{}/v1/events/quotes", up.base))
        .header("content-type", "application/x-ndjson")
        .body(events)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap_or_default());
    wait_caught_up(&up.client, &up.base, false, Duration::from_secs(120)).await;
    let expected = expected();
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), 48, "the golden file's rows");

    // The speed layer alone: every bar realtime.
    let layers = check_all(&up, &expected, "realtime").await;
    assert_eq!(layers.keys().collect::<Vec<_>>(), vec!["realtime"], "{layers:?}");

    // A batch run: H trails the newest event by the allowed lateness, so the last bars stay
    // realtime and everything before comes from the batch segments.
    let run = settle_and_run_batch(&up.client, &up.base, false, Duration::from_secs(60)).await;
    assert!(run["runs"][0]["segments_built"].as_u64().unwrap_or(0) >= 3, "one segment per month of 2024 with events: {run}");
    let layers = check_all(&up, &expected, "merged").await;
    assert!(layers.get("batch").copied().unwrap_or(0) >= 40, "{layers:?}");
    assert!(layers.contains_key("realtime"), "{layers:?}");

    // A full rebuild answers the same.
    let r = up.client.post(format!("{}/v1/admin/batch-runs?full=true", up.base)).send().await.expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["runs"][0]["full"], true, "{body}");
    assert_eq!(body["runs"][0]["segments_carried"], 0, "{body}");
    check_all(&up, &expected, "rebuilt").await;
    up.stop().await;
}
