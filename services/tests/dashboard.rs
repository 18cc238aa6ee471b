//! The live dashboard at `/` in headless Chromium (Debian's, driven by playwright-core through
//! `infra/dashboard-check.cjs`): on the stock-quote lab after a batch run it renders 13 years of
//! daily candlesticks from the bars stream, coloured by layer, with the batch horizon named, the
//! consumer lag of every partition from the status stream, and no script error. The streams are
//! checked directly too. `PRISM_DASHBOARD_SCREENSHOT=docs/dashboard.png` keeps the screenshot
//! (the README's).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_live_data_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.deployment.partitions = 2;
    let up = start(config).await;
    settle_and_run_batch(&up.client, &up.base, true, Duration::from_secs(240)).await;

    // The streams: the first event at once, as the page gets it.
    let mut stream = up.client.get(format!("{}/v1/bars/AAPL/stream?interval=1d", up.base)).send().await.expect("stream");
    assert_eq!(stream.status().as_u16(), 200);
    assert!(stream.headers()["content-type"].to_str().unwrap_or("").starts_with("text/event-stream"));
    let mut received = String::new();
    while !received.contains("\n\n") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await.expect("an event in time").expect("chunk").expect("open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.starts_with("event: bars\ndata: {"), "{}", &received[..received.len().min(200)]);
    let data: Value = serde_json::from_str(received.lines().nth(1).and_then(|l| l.strip_prefix("data: ")).expect("data")).expect("JSON");
    assert_eq!(data["symbol"], "AAPL");
    let (code, _) = get_json(&up.client, &up.base, "/v1/bars/NOPE/stream").await;
    assert_eq!(code, 404, "a bad stream request is an HTTP error, not a stream of them");

    // Left open on purpose: the stop below must not wait for an event stream to end.
    let _open_stream = stream;
    let screenshot =
        std::env::var("PRISM_DASHBOARD_SCREENSHOT").map(std::path::PathBuf::from).unwrap_or_else(|_| dir.path().join("dashboard.png"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/dashboard-check.cjs");
    std::env::var("PRISM_TEST_PLAYWRIGHT").expect("PRISM_TEST_PLAYWRIGHT is not set: run ./infra/test.sh, which installs playwright-core");
    let out = Command::new("node").arg(script).arg(format!("{}/", up.base)).arg(&screenshot).output().expect("run node");
    assert!(out.status.success(), "dashboard check: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("the check's JSON");
    let dashboard = &shown["dashboard"];
    assert!(dashboard["bars"].as_u64().unwrap_or(0) > 3000, "13 years of daily bars: {shown}");
    let layers: Vec<&str> = dashboard["layers"].as_array().expect("layers").iter().filter_map(Value::as_str).collect();
    assert!(layers.contains(&"batch"), "bars before the horizon come from the batch view: {shown}");
    assert!(dashboard["horizon"].is_string(), "{shown}");
    assert_eq!(shown["architecture"], "lambda");
    assert!(shown["horizons"].as_str().unwrap_or("").contains("batch horizon 20"), "{shown}");
    assert!(shown["canvases"].as_u64().unwrap_or(0) > 0, "the chart is drawn: {shown}");
    assert!(shown["lagRows"].as_u64().unwrap_or(0) >= 2, "lag of every partition: {shown}");
    assert_eq!(shown["symbols"].as_array().map(Vec::len), Some(5), "{shown}");
    assert_eq!(shown["connection"], "live", "{shown}");
    assert_eq!(shown["pageErrors"], serde_json::json!([]), "{shown}");
    assert!(std::fs::metadata(&screenshot).map(|m| m.len() > 10_000).unwrap_or(false), "a screenshot");
    up.stop().await;
}

/// At most `MAX_STREAMS` event streams are served at once; one more is a 503 with a reason, and
/// closing a stream frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.feed.no_feed = true;
    let up = start(config).await;
    let mut open = Vec::new();
    for _ in 0..prism_serving::dashboard::MAX_STREAMS {
        let stream = up.client.get(format!("{}/v1/status/stream", up.base)).send().await.expect("stream");
        assert_eq!(stream.status().as_u16(), 200);
        open.push(stream);
    }
    let refused = up.client.get(format!("{}/v1/status/stream", up.base)).send().await.expect("stream");
    assert_eq!(refused.status().as_u16(), 503);
    let reason: Value = refused.json().await.expect("JSON");
    assert!(reason["error"].as_str().unwrap_or("").contains("event streams are open"), "{reason}");
    drop(open.pop());
    // The server notices the closed connection at its next write (an event, or the keep-alive).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let again = up.client.get(format!("{}/v1/status/stream", up.base)).send().await.expect("stream");
        if again.status().as_u16() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed stream's slot was not freed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(open);
    up.stop().await;
}
