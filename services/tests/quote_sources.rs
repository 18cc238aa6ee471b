//! The quote poller and the quote simulator end to end: `prism up --no-feed --poll-url …`
//! polls an in-process simulator, and the bars served for the polled symbol count exactly the
//! distinct quotes the poller appended (and equal the bars computed from the simulator's walk);
//! `prism quote-sim` serves its API as a process, and `prism quote-poller` refuses to start
//! without a URL.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::EventLog;
use prism_ingest::quote_sim::{quote_at, serve_quote_sim, SimConfig, SimQuote, Simulator};
use tokio_util::sync::CancellationToken;

/// The value of the sample `name` (with its labels, as exposed) in `/metrics`; 0 when absent.
async fn metric(up: &Running, name: &str) -> u64 {
    let text = up.client.get(format!("{}/metrics", up.base)).send().await.expect("GET /metrics").text().await.expect("text");
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().expect("a sample value") as u64)
        .next()
        .unwrap_or(0)
}

const APPENDED: &str = r#"prism_ingest_events_appended_total{source="poller"}"#;

async fn wait_appended(up: &Running, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(up, APPENDED).await < at_least {
        assert!(Instant::now() < deadline, "the poller did not append {at_least} quotes in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_quotes_become_bars() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The simulator's clock moves only when the test says: each move is one new quote.
    let (seed, step_ms) = (21, 1_000);
    let t0 = prism_core::time::now_ms() / step_ms * step_ms;
    let now = Arc::new(AtomicI64::new(t0));
    let clock = now.clone();
    let sim = Simulator::new(SimConfig { symbols: vec!["AAPL".into(), "MSFT".into()], seed, step: Duration::from_millis(step_ms as u64) })
        .expect("sim")
        .with_clock(move || clock.load(Ordering::SeqCst));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim_addr = listener.local_addr().expect("addr");
    let sim_stop = CancellationToken::new();
    tokio::spawn(serve_quote_sim(Arc::new(sim), listener, sim_stop.clone()));

    let mut config = test_config(dir.path());
    config.feed.no_feed = true;
    config.poll.poll_url = Some(format!("http://{sim_addr}/v1/quotes/{{symbol}}"));
    config.poll.poll_symbols = vec!["AAPL".into()];
    config.poll.poll_interval = Duration::from_millis(50);
    let up = start(config).await;

    let steps = 6;
    wait_appended(&up, 1).await;
    for k in 1..steps {
        now.fetch_add(step_ms, Ordering::SeqCst);
        wait_appended(&up, k + 1).await;
    }
    // Polls keep seeing the last quote: none of them appends it again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let appended = metric(&up, APPENDED).await;
    assert!(metric(&up, "prism_poller_unchanged_total").await >= 5, "polls every 50 ms saw unchanged quotes");
    assert!(metric(&up, "prism_poller_last_success_timestamp_seconds").await > 0);
    wait_caught_up(&up.client, &up.base, false, Duration::from_secs(60)).await;

    let served: Vec<SimQuote> = (0..steps as i64).map(|i| quote_at(seed, "AAPL", step_ms, t0 + i * step_ms)).collect();
    let bars = all_bars(&up.client, &up.base, "AAPL", "1m").await;
    let trades: i64 = bars.iter().map(|b| b["trades"].as_i64().expect("trades")).sum();
    assert_eq!((appended, trades), (steps, steps as i64), "each distinct quote appended and counted once: {bars:?}");
    // The bars of what the simulator served, minute by minute.
    let mut minutes: BTreeMap<i64, Vec<&SimQuote>> = BTreeMap::new();
    for q in &served {
        minutes.entry(q.time_ms.div_euclid(60_000)).or_default().push(q);
    }
    assert_eq!(bars.len(), minutes.len(), "{bars:?}");
    for (bar, (minute, qs)) in bars.iter().zip(&minutes) {
        let prices: Vec<Decimal6> = qs.iter().map(|q| q.last).collect();
        let want = (
            prism_core::time::format_rfc3339(minute * 60_000),
            prices[0].to_string(),
            prices.iter().max().expect("high").to_string(),
            prices.iter().min().expect("low").to_string(),
            prices[prices.len() - 1].to_string(),
            qs.iter().map(|q| q.size).sum::<i64>(),
        );
        let got = (
            bar["start"].as_str().expect("start").to_string(),
            bar["open"].as_str().expect("open").to_string(),
            bar["high"].as_str().expect("high").to_string(),
            bar["low"].as_str().expect("low").to_string(),
            bar["close"].as_str().expect("close").to_string(),
            bar["volume"].as_i64().expect("volume"),
        );
        assert_eq!(got, want, "{bar}");
    }
    let (code, msft) = up.get("/v1/bars/MSFT").await;
    assert!(code == 404 || msft["bars"].as_array().is_some_and(|b| b.is_empty()), "MSFT is not polled: {msft}");
    up.stop().await;
    sim_stop.cancel();

    // The log holds each served quote once, as the simulator served it.
    let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("reopen the log");
    let mut in_log = Vec::new();
    for p in 0..log.end_offsets(QUOTES_TOPIC).await.expect("ends").len() {
        for r in log.read(QUOTES_TOPIC, p as i32, 0, 10_000, Duration::ZERO).await.expect("read") {
            in_log.push(Quote::from_json(&r.value).expect("a valid quote"));
        }
    }
    let want: Vec<Quote> = served
        .iter()
        .map(|s| Quote {
            symbol: s.symbol.clone(),
            ts: s.time_ms,
            price: s.last,
            size: s.size,
            bid: Some(s.bid),
            ask: Some(s.ask),
            exchange: None,
        })
        .collect();
    assert_eq!(in_log, want);
}

#[tokio::test]
async fn the_simulator_and_the_poller_run_as_commands() {
    let port = free_port();
    let mut sim = Processes(vec![(
        "quote-sim".into(),
        spawn("quote-sim", port, &[("PRISM_SIM_SYMBOLS", "AAPL,BRK.B".into()), ("PRISM_SIM_STEP", "200ms".into())]),
    )]);
    let client = prism::http_client();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "prism quote-sim did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, q) = get_json(&client, &base, "/v1/quotes/BRK.B").await;
    assert_eq!(code, 200, "{q}");
    assert_eq!(q["symbol"], "BRK.B");
    for field in ["bid", "ask", "last"] {
        let price: Decimal6 = q[field].as_str().expect("a decimal string").parse().expect("a decimal");
        assert!(price > Decimal6::ZERO, "{q}");
    }
    assert!(q["size"].as_i64().is_some_and(|s| s > 0) && q["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{q}");
    let (code, all) = get_json(&client, &base, "/v1/quotes").await;
    let symbols: Vec<&str> = all["quotes"].as_array().expect("quotes").iter().filter_map(|q| q["symbol"].as_str()).collect();
    assert_eq!((code, symbols), (200, vec!["AAPL", "BRK.B"]));
    let (code, err) = get_json(&client, &base, "/v1/quotes/XYZ").await;
    assert!(code == 404 && err["error"].as_str().is_some_and(|e| e.contains("XYZ")), "{err}");
    if let Some((_, child)) = sim.0.first_mut() {
        let _ = child.kill();
    }

    // `prism quote-poller` checks its flags before it connects to anything.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["quote-poller", "--kafka-brokers", "127.0.0.1:1", "--database-url", "postgres://u@127.0.0.1:1/db", "--poll-symbols", "AAPL"])
        .env("PRISM_LOG", "warn")
        .output()
        .expect("run prism quote-poller");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--poll-url"), "{stderr}");
}
