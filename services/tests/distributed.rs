//! End to end with separate processes: lab trades posted to `prism ingest-api` → Kafka →
//! `prism speed-layer` + `prism archiver` + `prism batch-layer` → PostgreSQL → `prism serving`,
//! whose `/v1/bars` answers equal an embedded `prism up` run's answers exactly (same trades,
//! same posts), for every symbol and interval. Needs the servers `./infra/test.sh` starts
//! (`PRISM_KAFKA_BROKERS`, `PRISM_DATABASE_URL`); without them it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use prism_core::event::{DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};
use prism_ingest::feed::bars::read_bar_file;
use prism_ingest::feed::expand::expand_bar;
use serde_json::Value;

/// Children killed when the test ends, however it ends.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn fresh_database(url: &str) -> String {
    use sqlx::Connection;
    let name = format!("prism_dist_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(url).await.expect("connect to the test PostgreSQL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create");
    let (base, _) = url.rsplit_once('/').expect("database in URL");
    format!("{base}/{name}")
}

fn spawn(service: &str, port: u16, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism"));
    cmd.arg(service).env("PRISM_HTTP_ADDR", format!("127.0.0.1:{port}")).env("PRISM_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap_or_else(|e| panic!("spawn prism {service}: {e}"))
}

async fn wait_ready(client: &reqwest::Client, base: &str, what: &str) {
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

/// The lab subset's trades as NDJSON bodies, one trading day per body, in feed order.
fn lab_day_bodies(dir: &Path) -> Vec<String> {
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
        let mut trades: Vec<_> = day.iter().flat_map(|b| expand_bar(b, 20)).collect();
        trades.sort_by(|a, b| (a.ts, &a.symbol).cmp(&(b.ts, &b.symbol)));
        let lines: Vec<String> = trades.iter().map(|q| String::from_utf8_lossy(&q.to_json()).into_owned()).collect();
        bodies.push(lines.join("\n"));
    }
    bodies
}

async fn post_all(client: &reqwest::Client, base: &str, bodies: &[String]) {
    for body in bodies {
        let r = client.post(format!("{base}/v1/events/quotes")).body(body.clone()).send().await.expect("POST");
        let status = r.status().as_u16();
        assert_eq!(status, 202, "{}", r.text().await.unwrap_or_default());
    }
}

async fn every_bar(client: &reqwest::Client, base: &str) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for symbol in ["AAPL", "FB", "GOOG", "IBM", "MSFT"] {
        for interval in ["1m", "5m", "15m", "1h", "1d"] {
            out.push((format!("{symbol} {interval}"), all_bars(client, base, symbol, interval).await));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microservices_over_kafka_and_postgres_equal_the_embedded_run() {
    let brokers = std::env::var("PRISM_KAFKA_BROKERS").expect("PRISM_KAFKA_BROKERS is not set: run ./infra/test.sh");
    let pg = std::env::var("PRISM_DATABASE_URL").expect("PRISM_DATABASE_URL is not set: run ./infra/test.sh");
    let work = tempfile::tempdir().expect("tempdir");
    let bodies = lab_day_bodies(work.path());
    let client = reqwest::Client::new();

    let envs = vec![
        ("PRISM_KAFKA_BROKERS", brokers),
        ("PRISM_DATABASE_URL", fresh_database(&pg).await),
        ("PRISM_PARTITIONS", "2".to_string()),
        ("PRISM_MASTER_DATASET", work.path().join("master").display().to_string()),
        ("PRISM_BATCH_INTERVAL", "1h".to_string()),
    ];
    // Start from empty topics: the broker may have served earlier runs.
    let admin = KafkaLog::connect(KafkaLogConfig::new(envs[0].1.clone())).await.expect("connect to the broker");
    admin.delete_topics(&[QUOTES_TOPIC, DLQ_TOPIC]).await.expect("delete old topics");
    drop(admin);
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let base = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let services = ["ingest-api", "speed-layer", "archiver", "batch-layer", "serving"];
    // Start the ingest API first: it creates the topics the others consume.
    let mut processes = Processes(vec![(services[0].to_string(), spawn(services[0], ports[0], &envs))]);
    wait_ready(&client, &base(0), services[0]).await;
    for (i, service) in services.iter().enumerate().skip(1) {
        processes.0.push((service.to_string(), spawn(service, ports[i], &envs)));
    }
    for (i, service) in services.iter().enumerate() {
        wait_ready(&client, &base(i), service).await;
    }

    // The same posts to an embedded `prism up`.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.no_feed = true;
    config.partitions = 2;
    let embedded = start(config).await;

    post_all(&client, &base(0), &bodies).await;
    post_all(&embedded.client, &embedded.base, &bodies).await;

    // Settle both, then run their batch jobs.
    wait_caught_up(&client, &base(4), false, Duration::from_secs(300)).await;
    let run = client.post(format!("{}/v1/admin/batch-runs", base(3))).send().await.expect("batch run");
    assert_eq!(run.status().as_u16(), 201, "{}", run.text().await.unwrap_or_default());
    let refused = client.post(format!("{}/v1/admin/batch-runs", base(4))).send().await.expect("POST to serving");
    assert_eq!(refused.status().as_u16(), 409, "serving has no batch layer of its own");
    settle_and_run_batch(&embedded.client, &embedded.base, false, Duration::from_secs(300)).await;

    let (_, status) = get_json(&client, &base(4), "/v1/status").await;
    assert!(status["batch_horizon"].is_string(), "{status}");
    let distributed = every_bar(&client, &base(4)).await;
    let reference = every_bar(&embedded.client, &embedded.base).await;
    for ((name, want), (_, have)) in reference.iter().zip(&distributed) {
        assert!(!want.is_empty(), "{name}: the embedded run has bars");
        assert_eq!(want, have, "{name}: distributed bars differ from the embedded run's");
    }
    embedded.stop().await;

    // Graceful stop: every service exits 0 on SIGTERM.
    for (name, child) in &mut processes.0 {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let status = child.wait().expect("wait");
        assert!(status.success(), "{name} exits 0 on SIGTERM: {status}");
    }
}
