//! The log-file source as a service over Kafka: `prism ingest-logs` tails the real logstalgia
//! access log (fetched by `infra/test-env.sh`) plus generated lines through a rename rotation, is
//! SIGKILLed mid-stream and restarted, and `prism serving` (with `prism speed-layer` building the
//! `access` view in PostgreSQL) answers totals per status class equal to an independent count —
//! every line exactly once. Runs on private servers (`TestEnv`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// (requests, bytes) per status class of combined-format lines, counted by splitting at quotes.
fn count(lines: &[String]) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    for l in lines {
        let parts: Vec<&str> = l.split('"').collect();
        let mut after = parts[2].split_whitespace();
        let status: u16 = after.next().expect("status").parse().expect("numeric status");
        let bytes: i64 = after.next().map(|b| b.parse().unwrap_or(0)).unwrap_or(0);
        let e = out.entry(format!("{}xx", status / 100)).or_insert((0, 0));
        e.0 += 1;
        e.1 += bytes;
    }
    out
}

async fn served(client: &reqwest::Client, base: &str, class: &str) -> (i64, i64) {
    let (code, a) = get_json(client, base, &format!("/v1/access?status_class={class}&interval=1d")).await;
    assert_eq!(code, 200, "{a}");
    let buckets = a["buckets"].as_array().cloned().unwrap_or_default();
    (buckets.iter().map(|b| b["requests"].as_i64().unwrap_or(0)).sum(), buckets.iter().map(|b| b["bytes"].as_i64().unwrap_or(0)).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_logs_over_kafka_counts_every_line_once_across_a_sigkill() {
    let source = std::env::var("PRISM_TEST_ACCESS_LOG").expect("PRISM_TEST_ACCESS_LOG is not set: run ./infra/test.sh, which fetches it");
    let real: Vec<String> =
        std::fs::read_to_string(&source).expect("read").lines().filter(|l| !l.trim().is_empty()).map(String::from).collect();
    let env = TestEnv::start();
    let work = tempfile::tempdir().expect("tempdir");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let file = logs.join("access.log");
    let client = prism::http_client();
    let envs = vec![
        ("PRISM_KAFKA_BROKERS", env.var("PRISM_KAFKA_BROKERS")),
        ("PRISM_DATABASE_URL", env.var("PRISM_DATABASE_URL")),
        ("PRISM_PARTITIONS", "2".to_string()),
        ("PRISM_VIEWS", "ohlcv,access".to_string()),
        ("PRISM_MASTER_DATASET", work.path().join("master").display().to_string()),
        ("PRISM_TAIL", format!("{}/access.log*", logs.display())),
        ("PRISM_TAIL_POLL_INTERVAL", "50ms".to_string()),
        ("PRISM_DATA_DIR", work.path().join("tailer").display().to_string()),
    ];
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let base = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let services = ["ingest-logs", "speed-layer", "serving"];
    let mut written: Vec<String> = Vec::new();
    let write = |lines: &[String], written: &mut Vec<String>| {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&file).expect("open");
        for l in lines {
            writeln!(f, "{l}").expect("write");
        }
        f.sync_all().expect("sync");
        written.extend_from_slice(lines);
    };
    write(&real[..1_000], &mut written);
    let mut processes = Processes(services.iter().enumerate().map(|(i, s)| (s.to_string(), spawn(s, ports[i], &envs))).collect());
    for (i, s) in services.iter().enumerate() {
        wait_ready(&client, &base(i), s).await;
    }
    // More lines, a rename rotation, then SIGKILL of the tailer while lines keep coming.
    write(&real[1_000..2_000], &mut written);
    std::fs::rename(&file, logs.join("access.log.1")).expect("rename");
    for chunk in real[2_000..2_600].chunks(50) {
        write(chunk, &mut written);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tailer = &mut processes.0[0].1;
    let _ = Command::new("kill").arg("-KILL").arg(tailer.id().to_string()).status();
    let _ = tailer.wait();
    write(&real[2_600..], &mut written);
    processes.0[0].1 = spawn(services[0], ports[0], &envs);
    wait_ready(&client, &base(0), services[0]).await;

    let want = count(&written);
    let total: i64 = want.values().map(|(r, _)| r).sum();
    assert_eq!(total, real.len() as i64);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut have = BTreeMap::new();
        for class in want.keys() {
            have.insert(class.clone(), served(&client, &base(2), class).await);
        }
        if have == want {
            break;
        }
        let served_total: i64 = have.values().map(|(r, _)| r).sum();
        assert!(served_total <= total, "more requests served than lines written: {have:?} vs {want:?}");
        assert!(Instant::now() < deadline, "serving answers {have:?}, the file says {want:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Status shows the access topic's partitions with the speed layer's consumer caught up.
    let (_, status) = get_json(&client, &base(2), "/v1/status").await;
    let access: Vec<&serde_json::Value> =
        status["partitions"].as_array().expect("partitions").iter().filter(|p| p["topic"] == "prism.access_logs").collect();
    assert_eq!(access.len(), 2, "{status}");
    let lines: i64 = access.iter().map(|p| p["log_end_offset"].as_i64().unwrap_or(0)).sum();
    assert_eq!(lines, total, "each line once in the topic: {status}");
    for p in access {
        let speed = p["consumers"].as_array().expect("consumers").iter().find(|c| c["consumer"] == "speed-layer.access.v1").cloned();
        assert_eq!(speed.map(|c| c["lag"].clone()), Some(serde_json::json!(0)), "{p}");
    }
    let metrics = client.get(format!("{}/metrics", base(0))).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("prism_logs_lines_read_total"), "{metrics}");
    // A tailer whose folder cannot be listed is alive but not ready, and says why.
    let port = free_port();
    let mut bad_envs = envs.clone();
    bad_envs.retain(|(k, _)| *k != "PRISM_TAIL" && *k != "PRISM_DATA_DIR");
    bad_envs.push(("PRISM_TAIL", work.path().join("no-such-folder/*.log").display().to_string()));
    bad_envs.push(("PRISM_DATA_DIR", work.path().join("tailer-2").display().to_string()));
    processes.0.push(("ingest-logs (bad folder)".into(), spawn("ingest-logs", port, &bad_envs)));
    let bad = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{bad}/readyz")).send().await {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            assert_eq!(status, 503, "{text}");
            assert!(text.contains("no-such-folder"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "the second tailer never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(processes);
}
