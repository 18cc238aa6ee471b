//! The quote poller end to end against the quote simulator, in-process: every quote appended is
//! one the simulator served (re-derived from its pure walk), each distinct quote is appended once
//! — across restarts, a crash between an append and the checkpoint, and a lost checkpoint —,
//! refused answers reach `prism.dlq` with the reason, and a source that is down, slow or answers
//! 404 is an error the poller outlives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::routing::get;
use axum::Router;
use prism_core::event::{DeadLetter, Quote, DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::{EventLog, LogRecord};
use prism_ingest::append::{POSITION_HEADER, SOURCE_HEADER};
use prism_ingest::poller::{run_quote_poller, PollerArgs, PollerConfig, PollerError, PollerStats};
use prism_ingest::quote_sim::{quote_at, serve_quote_sim, SimConfig, Simulator};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every record of `topic`, partition by partition.
async fn read_topic(log: &EmbeddedLog, topic: &str) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for p in 0..log.end_offsets(topic).await.expect("ends").len() {
        let mut offset = 0;
        loop {
            let records = log.read(topic, p as i32, offset, 10_000, Duration::ZERO).await.expect("read");
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            out.extend(records);
        }
    }
    out
}

/// The embedded log under `dir`, with the poller's topics (so the test can read them at once).
async fn open_log(dir: &Path) -> Arc<EmbeddedLog> {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).expect("log");
    log.ensure_topic(QUOTES_TOPIC, 3).await.expect("topic");
    log.ensure_topic(DLQ_TOPIC, 1).await.expect("topic");
    Arc::new(log)
}

/// The quotes on `prism.quotes`, each checked to be a valid quote with the poller's headers.
async fn quotes(log: &EmbeddedLog) -> Vec<Quote> {
    let mut out = Vec::new();
    for r in read_topic(log, QUOTES_TOPIC).await {
        let q = Quote::from_json(&r.value).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.value)));
        assert_eq!(r.key, q.symbol.as_bytes(), "keyed by symbol");
        assert_eq!(r.header(SOURCE_HEADER), Some(format!("poller:{}", q.symbol).as_bytes()));
        assert_eq!(r.header(POSITION_HEADER), Some(format!("{}:{}:{}", q.ts, q.price, q.size).as_bytes()));
        out.push(q);
    }
    out
}

async fn letters(log: &EmbeddedLog) -> Vec<DeadLetter> {
    read_topic(log, DLQ_TOPIC).await.iter().map(|r| serde_json::from_slice(&r.value).expect("a dead letter")).collect()
}

/// Serves `app` on `addr` until the token fires.
async fn serve(app: Router, addr: &str) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await }).await });
    (addr, stop)
}

/// Serves `sim` on 127.0.0.1 (an ephemeral port unless `addr` names one).
async fn serve_sim(sim: Simulator, addr: &str) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(serve_quote_sim(Arc::new(sim), listener, stop.clone()));
    (addr, stop)
}

fn poller_config(url: String, symbols: &[&str], checkpoint: &Path, interval: Duration) -> PollerConfig {
    let args = PollerArgs {
        poll_url: Some(url),
        poll_symbols: symbols.iter().map(|s| s.to_string()).collect(),
        poll_interval: interval,
        ..PollerArgs::default()
    };
    args.config(checkpoint.to_path_buf(), 3).expect("poller config")
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<PollerStats, PollerError>>,
}

fn start(config: PollerConfig, log: &Arc<EmbeddedLog>) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_quote_poller(config, log.clone(), stop.clone()));
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> PollerStats {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops promptly")
            .expect("join")
            .expect("the poller stops cleanly")
    }
}

/// Waits (up to 30 s) until `done` holds for the log.
async fn wait_for<F: AsyncFn(&EmbeddedLog) -> bool>(log: &EmbeddedLog, what: &str, done: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(log).await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn per_symbol(quotes: &[Quote]) -> BTreeMap<String, Vec<Quote>> {
    let mut by: BTreeMap<String, Vec<Quote>> = BTreeMap::new();
    for q in quotes {
        by.entry(q.symbol.clone()).or_default().push(q.clone());
    }
    by
}

/// The quote the simulator served at `q.ts`, as the poller should have appended it.
fn served(seed: u64, step_ms: i64, q: &Quote) -> Quote {
    let s = quote_at(seed, &q.symbol, step_ms, q.ts);
    Quote { symbol: s.symbol, ts: s.time_ms, price: s.last, size: s.size, bid: Some(s.bid), ask: Some(s.ask), exchange: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_each_quote_the_simulator_served_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(&dir.path().join("log")).await;
    let (seed, step_ms) = (11, 300);
    let sim = Simulator::new(SimConfig { symbols: vec!["AAPL".into(), "MSFT".into()], seed, step: Duration::from_millis(step_ms as u64) })
        .expect("sim");
    let (addr, _sim) = serve_sim(sim, "127.0.0.1:0").await;
    let checkpoint = dir.path().join("poller.json");
    let config = poller_config(format!("http://{addr}/v1/quotes/{{symbol}}"), &["AAPL", "MSFT"], &checkpoint, Duration::from_millis(25));

    let poller = start(config.clone(), &log);
    wait_for(&log, "four quotes of each symbol", async |log| {
        let by = per_symbol(&quotes(log).await);
        by.len() == 2 && by.values().all(|q| q.len() >= 4)
    })
    .await;
    let first = poller.stop().await;
    let appended = quotes(&log).await;
    assert_eq!(first.appended, appended.len() as u64, "{first:?}");
    assert_eq!((first.errors, first.dead_lettered), (0, 0), "{first:?}");
    assert!(first.unchanged > 0, "polls every 25 ms see each 300 ms step more than once: {first:?}");

    // A restart (from the checkpoint) goes on after what is already there.
    let poller = start(config, &log);
    let before = appended.len();
    wait_for(&log, "two more quotes", async |log| quotes(log).await.len() >= before + 2).await;
    let second = poller.stop().await;
    let all = quotes(&log).await;
    assert_eq!(second.appended as usize, all.len() - before, "{second:?}");

    for (symbol, qs) in per_symbol(&all) {
        for q in &qs {
            assert_eq!(q, &served(seed, step_ms, q), "{symbol}: appended what the simulator served at {}", q.ts);
        }
        for pair in qs.windows(2) {
            assert!(pair[0].ts < pair[1].ts, "{symbol}: a quote appended twice, or out of order: {:?} then {:?}", pair[0], pair[1]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_appends_nothing_already_appended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let mut log = open_log(&log_dir).await;
    // A frozen clock: the simulator serves the same quotes until the test moves it.
    let day = 19_800 * 86_400_000;
    let now = Arc::new(AtomicI64::new(day + 36_000_000));
    let clock = now.clone();
    let sim = Simulator::new(SimConfig { symbols: vec!["AAPL".into(), "MSFT".into()], seed: 5, step: Duration::from_secs(1) })
        .expect("sim")
        .with_clock(move || clock.load(Ordering::SeqCst));
    let (addr, _sim) = serve_sim(sim, "127.0.0.1:0").await;
    let checkpoint = dir.path().join("poller.json");
    let config = poller_config(format!("http://{addr}/v1/quotes/{{symbol}}"), &["AAPL", "MSFT"], &checkpoint, Duration::from_millis(20));
    // Runs the poller until it has polled every symbol several times after `want` quotes are
    // in the log; returns what it did.
    let run = async |log: &Arc<EmbeddedLog>, want: usize| {
        let poller = start(config.clone(), log);
        wait_for(log, &format!("{want} quotes"), async |log| quotes(log).await.len() >= want).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        poller.stop().await
    };

    let first = run(&log, 2).await;
    assert_eq!(first.appended, 2, "one quote per symbol: {first:?}");
    assert!(first.unchanged >= 2, "{first:?}");
    let after_first = std::fs::read(&checkpoint).expect("checkpoint saved");

    let again = run(&log, 2).await;
    assert_eq!((again.appended, quotes(&log).await.len()), (0, 2), "a restart from the checkpoint: {again:?}");
    assert!(again.unchanged >= 2, "{again:?}");

    // The next step: one new quote per symbol.
    now.fetch_add(1_000, Ordering::SeqCst);
    let next = run(&log, 4).await;
    assert_eq!(next.appended, 2, "{next:?}");

    // A crash after the append, before the checkpoint save: the old checkpoint, and the log
    // reopened. The records past its offsets say what landed.
    drop(log);
    log = open_log(&log_dir).await;
    std::fs::write(&checkpoint, &after_first).expect("restore the old checkpoint");
    let crashed = run(&log, 4).await;
    assert_eq!((crashed.appended, quotes(&log).await.len()), (0, 4), "recovered from the log: {crashed:?}");

    // A lost checkpoint: the topic is scanned from its start.
    std::fs::remove_file(&checkpoint).expect("remove the checkpoint");
    let lost = run(&log, 4).await;
    assert_eq!((lost.appended, quotes(&log).await.len()), (0, 4), "recovered from the whole log: {lost:?}");

    let all = quotes(&log).await;
    for q in &all {
        assert_eq!(q, &served(5, 1_000, q));
    }
    let times: Vec<i64> = per_symbol(&all).values().flat_map(|qs| qs.iter().map(|q| q.ts)).collect();
    assert_eq!(times, [day + 36_000_000, day + 36_001_000, day + 36_000_000, day + 36_001_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_answers_are_dead_lettered_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(&dir.path().join("log")).await;
    let app = Router::new().route(
        "/q/{symbol}",
        get(|UrlPath(symbol): UrlPath<String>| async move {
            match symbol.as_str() {
                "ABC" => r#"{"last":"abc"}"#,
                "HTML" => "<html>busy</html>",
                "NEG" => r#"{"last":"-1","size":100,"time":"2024-01-01T00:00:00Z"}"#,
                _ => r#"{"last":"10.5","size":100,"time":"2024-01-01T00:00:00Z"}"#,
            }
        }),
    );
    let (addr, _server) = serve(app, "127.0.0.1:0").await;
    let config = poller_config(
        format!("http://{addr}/q/{{symbol}}"),
        &["ABC", "HTML", "NEG", "GOOD"],
        &dir.path().join("p.json"),
        Duration::from_millis(20),
    );
    let poller = start(config, &log);
    wait_for(&log, "three dead letters and a quote", async |log| letters(log).await.len() >= 3 && !quotes(log).await.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = poller.stop().await;

    let mut letters = letters(&log).await;
    letters.sort_by(|a, b| a.source.cmp(&b.source));
    let got: Vec<(String, String)> = letters.iter().map(|l| (l.source.clone(), l.payload.clone())).collect();
    let want = [
        (format!("poll:http://{addr}/q/ABC"), r#"{"last":"abc"}"#.to_string()),
        (format!("poll:http://{addr}/q/HTML"), "<html>busy</html>".to_string()),
        (format!("poll:http://{addr}/q/NEG"), r#"{"last":"-1","size":100,"time":"2024-01-01T00:00:00Z"}"#.to_string()),
    ];
    assert_eq!(got, want, "each refusal once, however often it is polled");
    assert!(letters[0].reason.contains(r#"price at "/last": not a decimal number: "abc""#), "{}", letters[0].reason);
    assert!(letters[1].reason.starts_with("not JSON"), "{}", letters[1].reason);
    assert!(letters[2].reason.contains("price must be > 0"), "{}", letters[2].reason);
    let quotes = quotes(&log).await;
    assert_eq!(quotes.len(), 1, "{quotes:?}");
    assert_eq!((quotes[0].symbol.as_str(), quotes[0].price.to_string().as_str(), quotes[0].bid), ("GOOD", "10.500000", None));
    assert_eq!((stats.appended, stats.dead_lettered), (1, 3), "{stats:?}");
    assert!(stats.errors >= 3 * 2 && stats.errors == stats.polls - stats.appended - stats.unchanged, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_down_slow_or_404_is_an_error_the_poller_outlives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(&dir.path().join("log")).await;
    // A port nothing listens on (yet).
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut config = poller_config(
        format!("http://{addr}/v1/quotes/{{symbol}}"),
        &["AAPL", "NOPE"],
        &dir.path().join("p.json"),
        Duration::from_millis(20),
    );
    config.request_timeout = Duration::from_millis(300);
    let poller = start(config, &log);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poller.task.is_finished(), "the poller keeps polling an unreachable source");

    // The source comes up: AAPL is served, NOPE is a 404.
    let sim = Simulator::new(SimConfig { symbols: vec!["AAPL".into()], seed: 1, step: Duration::from_secs(3600) }).expect("sim");
    let (_, _sim) = serve_sim(sim, &addr.to_string()).await;
    wait_for(&log, "a quote", async |log| !quotes(log).await.is_empty()).await;
    let stats = poller.stop().await;
    assert_eq!(stats.appended, 1, "{stats:?}");
    assert!(stats.errors >= 4, "connection refused, then 404s: {stats:?}");
    assert!(letters(&log).await.is_empty(), "HTTP errors are not dead-lettered");

    // A source that does not answer in time: a timeout, and the other symbol goes on.
    let app = Router::new().route(
        "/q/{symbol}",
        get(|UrlPath(symbol): UrlPath<String>| async move {
            if symbol == "SLOW" {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            format!(r#"{{"last":"1.25","size":10,"time":{}}}"#, prism_core::time::now_ms())
        }),
    );
    let (slow_addr, _server) = serve(app, "127.0.0.1:0").await;
    let mut config = poller_config(
        format!("http://{slow_addr}/q/{{symbol}}"),
        &["SLOW", "FAST"],
        &dir.path().join("p2.json"),
        Duration::from_millis(20),
    );
    config.request_timeout = Duration::from_millis(200);
    let poller = start(config, &log);
    wait_for(&log, "three FAST quotes", async |log| quotes(log).await.iter().filter(|q| q.symbol == "FAST").count() >= 3).await;
    let stats = poller.stop().await;
    assert!(stats.errors >= 2 && stats.appended >= 3, "timeouts counted, FAST polled on: {stats:?}");
    assert!(quotes(&log).await.iter().all(|q| q.symbol != "SLOW"));
}
