//! Helpers shared by the end-to-end tests: start `prism up` in-process or as a process, wait
//! until every layer has caught up, and read bars over HTTP like a user.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prism::up::{run_up, UpConfig};
use prism_batch::archiver::ArchiverArgs;
use prism_batch::batch_job::BatchArgs;
use prism_core::config::{Architecture, DeploymentArgs};
use prism_core::log::embedded::FsyncPolicy;
use prism_ingest::feed::bars::read_bar_file;
use prism_ingest::feed::expand::expand_bar;
use prism_ingest::feed::{FeedArgs, FeedSpeed};
use prism_ingest::http::IngestArgs;
use prism_speed::handoff::HandoffArgs;
use prism_speed::SpeedArgs;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An in-process `prism up`.
pub struct Running {
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

/// `prism up` settings for tests: port 0, 1 partition, batch runs only on request (not on a
/// schedule that matters, nor on catch-up).
pub fn test_config(data_dir: &Path) -> UpConfig {
    UpConfig {
        data_dir: data_dir.to_path_buf(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        fsync: FsyncPolicy::Never,
        deployment: DeploymentArgs {
            architecture: Architecture::Lambda,
            partitions: 1,
            allowed_lateness_ms: 5_000,
            views: vec!["ohlcv".into()],
        },
        feed: FeedArgs { feed: Vec::new(), no_feed: false, feed_symbol: None, feed_speed: FeedSpeed::Max, feed_trades_per_day: 4 },
        ingest: IngestArgs { max_body_bytes: 1 << 20, ..IngestArgs::default() },
        speed: SpeedArgs { commit_interval: Duration::from_millis(100), commit_max_events: 10_000 },
        archiver: ArchiverArgs { compact_interval: Duration::from_secs(60), compact_grace: Duration::from_secs(600) },
        batch: BatchArgs { batch_interval: Duration::from_secs(3600), no_batch_on_catch_up: true, batch_parallelism: 2 },
        handoff: HandoffArgs { handoff_interval: Duration::from_secs(1) },
        logs: prism_ingest::logs::LogsArgs {
            tail: Vec::new(),
            tail_poll_interval: Duration::from_millis(100),
            tail_rotate_wait: Duration::from_secs(5),
            tail_read_from_end: false,
        },
        poll: prism_ingest::poller::PollerArgs::default(),
        cdc: prism_ingest::cdc::CdcArgs::default(),
        auth: prism_serving::auth::AuthArgs::default(),
    }
}

pub async fn start(config: UpConfig) -> Running {
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(run_up(config, shutdown.clone(), Some(tx)));
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("prism up listens within 60 s")
        .expect("prism up reports its address");
    Running { base: format!("http://{addr}"), client: prism::http_client(), shutdown, handle }
}

impl Running {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        get_json(&self.client, &self.base, path).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("join").expect("prism up stops cleanly");
    }
}

pub async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let resp = client.get(format!("{base}{path}")).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until every consumer has reached the log end (and, with `expect_feed`, every feed is
/// done), then runs the batch job once and returns its answer.
pub async fn settle_and_run_batch(client: &reqwest::Client, base: &str, expect_feed: bool, timeout: Duration) -> Value {
    wait_caught_up(client, base, expect_feed, timeout).await;
    let resp = client.post(format!("{base}/v1/admin/batch-runs")).send().await.expect("POST batch run");
    assert_eq!(resp.status().as_u16(), 201, "batch run answers 201");
    resp.json().await.expect("batch run JSON")
}

/// Waits until every consumer is at the log end (and, with `expect_feed`, a feed exists and
/// every feed is done).
pub async fn wait_caught_up(client: &reqwest::Client, base: &str, expect_feed: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, status) = get_json(client, base, "/v1/status").await;
        if code == 200 && caught_up(&status, expect_feed) {
            return;
        }
        assert!(Instant::now() < deadline, "layers did not catch up in {timeout:?}: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn caught_up(status: &Value, expect_feed: bool) -> bool {
    let feeds = status["feeds"].as_array().cloned().unwrap_or_default();
    let feeds_done = (!expect_feed || !feeds.is_empty()) && feeds.iter().all(|f| f["done"] == true);
    let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
    let consumers_done = partitions.iter().all(|p| {
        let consumers = p["consumers"].as_array().cloned().unwrap_or_default();
        let end = p["log_end_offset"].as_i64().unwrap_or(-1);
        // Both the speed layer and the archiver must have committed, and be at the end: in
        // Lambda mode every view's topic has both; prism.quotes always has two readers.
        let readers = if p["topic"] == "prism.quotes" || status["architecture"] == "lambda" { 2 } else { 1 };
        (end == 0 || consumers.len() >= readers) && consumers.iter().all(|c| c["lag"] == 0)
    });
    feeds_done && consumers_done
}

/// Bars without their `layer` labels: a replay's switch, a hand-off or another view's horizon
/// may move a bar between segments and realtime rows, never change its values.
pub fn bar_values(bars: &[Value]) -> Vec<Value> {
    bars.iter()
        .map(|b| {
            let mut b = b.clone();
            if let Some(fields) = b.as_object_mut() {
                fields.remove("layer");
            }
            b
        })
        .collect()
}

/// Every bar of `symbol` at `interval`, following `next_from` pages.
pub async fn all_bars(client: &reqwest::Client, base: &str, symbol: &str, interval: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let path = match &from {
            Some(f) => format!("/v1/bars/{symbol}?interval={interval}&limit=100000&from={f}"),
            None => format!("/v1/bars/{symbol}?interval={interval}&limit=100000"),
        };
        let (code, body) = get_json(client, base, &path).await;
        assert_eq!(code, 200, "{path}: {body}");
        out.extend(body["bars"].as_array().cloned().unwrap_or_default());
        match body["next_from"].as_str() {
            Some(next) => from = Some(next.to_string()),
            None => return out,
        }
    }
}

/// One daily bar of the lab CSV, parsed independently of Prism's feed code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvBar {
    pub symbol: String,
    pub date: String,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: i64,
}

/// The repository's copy of the lab data.
pub fn lab_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/stocks-daily-2000-2013.csv.gz")
}

pub fn read_lab_csv() -> Vec<CsvBar> {
    let bytes = std::fs::read(lab_file()).expect("lab file");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).expect("gunzip");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            CsvBar {
                symbol: f[0].into(),
                date: f[1].into(),
                open: f[2].into(),
                high: f[3].into(),
                low: f[4].into(),
                close: f[5].into(),
                volume: f[6].parse::<f64>().expect("volume") as i64,
            }
        })
        .collect()
}

/// Decimal text equality by value (`118.5` == `118.500000`).
pub fn same_decimal(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        let (i, f) = s.split_once('.').unwrap_or((s, ""));
        let f = f.trim_end_matches('0');
        let i = i.trim_start_matches('0');
        format!("{}.{}", if i.is_empty() { "0" } else { i }, f)
    };
    norm(a) == norm(b)
}

// ---- Separate `prism` processes (the distributed deployment) ----

/// Children killed when the test ends, however it ends.
pub struct Processes(pub Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free port on 127.0.0.1 for a server a test starts later.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive free ports on 127.0.0.1, for servers a test starts later.
///
/// They lie below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`): between this
/// check and the server's bind, the many outgoing connections of a starting stack take local
/// ports from that range, and one of them taking a chosen port made a service fail to listen.
pub fn free_ports(n: u16) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(n).max(10_001));
    // A different start per process and call: tests run in parallel processes.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
        ^ (u64::from(std::process::id()) << 20)
        ^ CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let span = u64::from(high - low);
    for i in 0..span {
        let base = low + ((seed.wrapping_add(i.wrapping_mul(7_919))) % span) as u16;
        if (0..n).all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports below {ephemeral_low}");
}

pub async fn fresh_database(url: &str) -> String {
    use sqlx::Connection;
    let name = format!("prism_dist_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(url).await.expect("connect to the test PostgreSQL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create");
    let (base, _) = url.rsplit_once('/').expect("database in URL");
    format!("{base}/{name}")
}

pub fn spawn(service: &str, port: u16, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism"));
    cmd.arg(service)
        .env("PRISM_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("PRISM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap_or_else(|e| panic!("spawn prism {service}: {e}"))
}

pub async fn wait_ready(client: &reqwest::Client, base: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} not ready at {base}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lab subset's trades (20 per daily bar) as NDJSON bodies, one trading day per body, in
/// feed order.
pub fn lab_day_bodies(dir: &Path) -> Vec<String> {
    lab_day_bodies_with(dir, 20)
}

/// As [`lab_day_bodies`], with `trades_per_bar` trades per daily bar.
pub fn lab_day_bodies_with(dir: &Path, trades_per_bar: usize) -> Vec<String> {
    let subset: PathBuf = dir.join("lab-subset.csv");
    let mut csv = String::from("Ticker,Date,Open,High,Low,Close,Volume\n");
    for b in read_lab_csv().iter().filter(|b| b.date.as_str() >= "2012-05-18" && b.date.as_str() < "2012-07-01") {
        csv.push_str(&format!("{},{},{},{},{},{},{}\n", b.symbol, b.date, b.open, b.high, b.low, b.close, b.volume));
    }
    std::fs::write(&subset, csv).expect("write subset");
    let mut bars = read_bar_file(&subset, None).expect("read subset").bars;
    bars.sort_by(|a, b| (a.date, &a.symbol).cmp(&(b.date, &b.symbol)));
    let mut bodies = Vec::new();
    for day in bars.chunk_by(|a, b| a.date == b.date) {
        let mut trades: Vec<_> = day.iter().flat_map(|b| expand_bar(b, trades_per_bar)).collect();
        trades.sort_by(|a, b| (a.ts, &a.symbol).cmp(&(b.ts, &b.symbol)));
        let lines: Vec<String> = trades.iter().map(|q| String::from_utf8_lossy(&q.to_json()).into_owned()).collect();
        bodies.push(lines.join("\n"));
    }
    bodies
}

pub async fn post_all(client: &reqwest::Client, base: &str, bodies: &[String]) {
    for body in bodies {
        let r = client.post(format!("{base}/v1/events/quotes")).body(body.clone()).send().await.expect("POST");
        let status = r.status().as_u16();
        assert_eq!(status, 202, "{}", r.text().await.unwrap_or_default());
    }
}

/// An embedded `prism up` without the feed, on `partitions` partitions: the reference run the
/// distributed tests compare with.
pub async fn embedded_reference(dir: &Path, partitions: i32) -> Running {
    let mut config = test_config(dir);
    config.feed.no_feed = true;
    config.deployment.partitions = partitions;
    start(config).await
}

/// Asserts that `have` equals `reference` (both from [`every_bar`]) bar for bar, naming the
/// first difference; every series of the reference must have bars.
pub fn assert_same_bars(reference: &[(String, Vec<Value>)], have: &[(String, Vec<Value>)], what: &str) {
    assert_eq!(reference.len(), have.len(), "{what}: not the same series");
    for ((name, want), (_, got)) in reference.iter().zip(have) {
        assert!(!want.is_empty(), "{name}: the reference run has bars");
        let first_diff = want.iter().zip(got).position(|(w, h)| w != h);
        assert!(
            want.len() == got.len() && first_diff.is_none(),
            "{name}: {what} ({} vs {} bars); first difference: {:?}",
            want.len(),
            got.len(),
            first_diff.map(|i| (&want[i], &got[i]))
        );
    }
}

pub async fn every_bar(client: &reqwest::Client, base: &str) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for symbol in ["AAPL", "FB", "GOOG", "IBM", "MSFT"] {
        for interval in ["1m", "5m", "15m", "1h", "1d"] {
            out.push((format!("{symbol} {interval}"), all_bars(client, base, symbol, interval).await));
        }
    }
    out
}

/// Private PostgreSQL + Tansu, stopped on drop.
pub struct TestEnv {
    script: PathBuf,
    vars: HashMap<String, String>,
}

impl TestEnv {
    pub fn start() -> TestEnv {
        TestEnv::start_with(&[])
    }

    /// Private servers started with these extra environment variables for `infra/test-env.sh`
    /// (e.g. `PRISM_TEST_TANSU_MAINTENANCE`).
    pub fn start_with(envs: &[(&str, &str)]) -> TestEnv {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/test-env.sh");
        // With our PID, the script's watchdog stops the servers even if this process is killed.
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(std::process::id().to_string())
            .envs(envs.iter().copied())
            .output()
            .expect("run infra/test-env.sh");
        assert!(out.status.success(), "test-env start failed: {}", String::from_utf8_lossy(&out.stderr));
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TestEnv { script, vars }
    }

    pub fn var(&self, name: &str) -> String {
        self.vars.get(name).cloned().unwrap_or_else(|| panic!("test-env did not export {name}"))
    }

    pub fn run(&self, command: &str) {
        let out = Command::new("bash").arg(&self.script).arg(command).arg(self.var("PRISM_TEST_ENV_DIR")).output().expect("run test-env");
        assert!(out.status.success(), "test-env {command} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(&self.script).arg("stop").arg(self.var("PRISM_TEST_ENV_DIR")).output();
    }
}
