//! The compose stack's host-process twin end to end: `infra/stack.sh up` runs every service of
//! docker-compose.yml as a process, from the repository's `.env` (with the test's overrides: its
//! private servers, a small feed, the architecture), in Lambda and in Kappa mode. Then every
//! source lands in its view: the historical feed's bars equal an embedded `prism up` fed the
//! same file, the quote poller's symbols have bars, the flights played into the lab database
//! are counted by `/v1/changes`, access-log lines by `/v1/access`; the API token guards writes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "stack-t0ken";

/// Runs `infra/stack.sh down` when dropped (a failed assertion leaves no process behind).
struct Stack {
    envs: Vec<(String, String)>,
}

impl Stack {
    fn run(&self, command: &str) -> std::process::Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/stack.sh");
        Command::new("bash")
            .arg(script)
            .arg(command)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run stack.sh")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let out = self.run("down");
        if !out.status.success() {
            eprintln!("stack.sh down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The first `days` trading days of AAPL and MSFT from the lab file, as a CSV.
fn small_feed(dir: &Path, days: usize) -> PathBuf {
    let bars = read_lab_csv();
    let path = dir.join("feed.csv");
    let mut file = std::fs::File::create(&path).expect("feed file");
    writeln!(file, "Ticker,Date,Open,High,Low,Close,Volume,Adj Close").expect("write");
    for symbol in ["AAPL", "MSFT"] {
        for b in bars.iter().filter(|b| b.symbol == symbol).take(days) {
            writeln!(file, "{},{},{},{},{},{},{},0", b.symbol, b.date, b.open, b.high, b.low, b.close, b.volume).expect("write");
        }
    }
    path
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

async fn stack_runs_every_source_into_its_view(architecture: &str) {
    let env = TestEnv::start();
    let work = tempfile::tempdir().expect("tempdir");
    let feed = small_feed(work.path(), 30);
    let base_port = free_ports(11);
    let stack = Stack {
        envs: vec![
            ("PRISM_STACK_DIR".into(), work.path().join("stack").display().to_string()),
            ("PRISM_STACK_PORT".into(), base_port.to_string()),
            ("PRISM_BIN".into(), env!("CARGO_BIN_EXE_prism").into()),
            ("PRISM_ARCHITECTURE".into(), architecture.into()),
            ("PRISM_PARTITIONS".into(), "2".into()),
            ("PRISM_FEED".into(), feed.display().to_string()),
            // As the reference run's (test_config).
            ("PRISM_FEED_TRADES_PER_DAY".into(), "4".into()),
            ("PRISM_POLL_SYMBOLS".into(), "SIMA,SIMB".into()),
            ("PRISM_SIM_STEP".into(), "100ms".into()),
            ("PRISM_POLL_INTERVAL".into(), "100ms".into()),
            ("PRISM_API_TOKEN".into(), TOKEN.into()),
            ("PRISM_BATCH_INTERVAL".into(), "1h".into()),
            ("PRISM_LOG".into(), "warn".into()),
            ("PRISM_KAFKA_BROKERS".into(), env.var("PRISM_KAFKA_BROKERS")),
            ("PRISM_DATABASE_URL".into(), env.var("PRISM_DATABASE_URL")),
            ("PRISM_TEST_S3_ENDPOINT".into(), env.var("PRISM_TEST_S3_ENDPOINT")),
        ],
    };
    let out = stack.run("up");
    assert!(out.status.success(), "stack.sh up: {}", String::from_utf8_lossy(&out.stderr));
    let client = prism::http_client();
    let serving = format!("http://127.0.0.1:{base_port}");
    let ingest = format!("http://127.0.0.1:{}", base_port + 1);

    // The feed's bars equal an embedded run fed the same file.
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(reference_dir.path());
    config.feed.feed = vec![feed.clone()];
    config.deployment.partitions = 2;
    let reference = start(config).await;
    wait_caught_up(&reference.client, &reference.base, true, Duration::from_secs(120)).await;
    let mut want = Vec::new();
    for symbol in ["AAPL", "MSFT"] {
        want.push(all_bars(&reference.client, &reference.base, symbol, "1m").await);
    }
    reference.stop().await;
    assert!(want.iter().all(|b| !b.is_empty()));
    wait_for("the feed's bars", Duration::from_secs(180), || {
        let (client, serving, want) = (client.clone(), serving.clone(), want.clone());
        async move {
            for (symbol, want) in ["AAPL", "MSFT"].iter().zip(&want) {
                let got = bar_values(&all_bars(&client, &serving, symbol, "1m").await);
                if got != bar_values(want) {
                    return Err(format!("{symbol}: {} of {} bars", got.len(), want.len()));
                }
            }
            Ok(())
        }
    })
    .await;

    // The simulated exchange, polled.
    wait_for("the poller's bars", Duration::from_secs(60), || {
        let (client, serving) = (client.clone(), serving.clone());
        async move {
            let (code, bars) = get_json(&client, &serving, "/v1/bars/SIMA?interval=1m").await;
            (code == 200 && bars["bars"].as_array().is_some_and(|b| !b.is_empty())).then_some(()).ok_or(format!("{code} {bars}"))
        }
    })
    .await;

    // The lab database, captured.
    let base_url = env.var("PRISM_DATABASE_URL");
    let flights = format!("{}/flights", base_url.rsplit_once('/').expect("db").0);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/lab/load_flights.py");
    let played = Command::new("python3").arg(script).args(["--database-url", &flights, "--limit", "60"]).output().expect("load_flights");
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));
    let summary: Value = serde_json::from_slice(&played.stdout).expect("summary");
    wait_for("the flights' changes", Duration::from_secs(90), || {
        let (client, serving, summary) = (client.clone(), serving.clone(), summary.clone());
        async move {
            let (code, answer) = get_json(&client, &serving, "/v1/changes/public.flights?interval=1d").await;
            let sum =
                |op: &str| -> i64 { answer["buckets"].as_array().map_or(0, |b| b.iter().filter_map(|x| x["by_op"][op].as_i64()).sum()) };
            let want = |f: &str| summary[f].as_i64().unwrap_or(-1);
            (code == 200 && sum("c") == want("inserts") && sum("u") == want("updates") && sum("d") == want("deletes"))
                .then_some(())
                .ok_or(format!("{code} {answer} vs {summary}"))
        }
    })
    .await;

    // An access log, tailed.
    let log = work.path().join("stack/access-logs/access.log");
    let lines: String =
        (0..25).map(|i| format!("10.0.0.{} - - [02/Jan/2024:10:{:02}:00 +0000] \"GET /x HTTP/1.1\" 200 {i}\n", i % 3, i % 60)).collect();
    std::fs::write(&log, lines).expect("write access log");
    wait_for("the access lines", Duration::from_secs(60), || {
        let (client, serving) = (client.clone(), serving.clone());
        async move {
            let (code, answer) = get_json(&client, &serving, "/v1/access?interval=1d").await;
            let n: i64 = answer["buckets"].as_array().map_or(0, |b| b.iter().filter_map(|x| x["requests"].as_i64()).sum());
            (code == 200 && n == 25).then_some(()).ok_or(format!("{code} {answer}"))
        }
    })
    .await;

    // Writes need the API token.
    let body = r#"{"symbol":"ZZZ","ts":"2024-01-02T14:30:00Z","price":"1.5","size":1}"#;
    let post = |token: Option<&str>| {
        let mut r = client.post(format!("{ingest}/v1/events/quotes")).header("content-type", "application/x-ndjson").body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(post(None).await.expect("POST").status().as_u16(), 401);
    assert_eq!(post(Some(TOKEN)).await.expect("POST").status().as_u16(), 202);
    if architecture == "lambda" {
        let batch = format!("http://127.0.0.1:{}/v1/admin/batch-runs", base_port + 4);
        let run = client.post(&batch).bearer_auth(TOKEN).send().await.expect("batch run");
        assert_eq!(run.status().as_u16(), 201, "{}", run.text().await.unwrap_or_default());
        let (_, bars) = get_json(&client, &serving, "/v1/bars/AAPL?interval=1d").await;
        assert!(bars["batch_horizon"].is_string(), "{bars}");
    }
    let (_, status) = get_json(&client, &serving, "/v1/status").await;
    assert_eq!(status["architecture"], architecture, "{status}");
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_runs_every_source_into_its_view_in_lambda_mode() {
    stack_runs_every_source_into_its_view("lambda").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_runs_every_source_into_its_view_in_kappa_mode() {
    stack_runs_every_source_into_its_view("kappa").await;
}
