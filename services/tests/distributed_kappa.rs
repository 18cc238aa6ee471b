//! Kappa mode distributed: `prism ingest-api`, `prism speed-layer` (with the hand-off) and
//! `prism serving` as separate processes over Kafka and PostgreSQL (private test servers, so
//! that the topics are this test's), segments in a shared folder, answer exactly like an
//! embedded `prism up --architecture kappa` given the same posts; `prism archiver` and
//! `prism batch-layer` refuse to start.

mod common;

use std::time::{Duration, Instant};

use common::*;
use prism_core::config::Architecture;
use serde_json::Value;

/// The serving version's speed layer is at the log end, and the segment horizon is set.
async fn kappa_settled(client: &reqwest::Client, base: &str) -> Option<String> {
    let (code, status) = get_json(client, base, "/v1/status").await;
    let serving = format!("speed-layer.ohlcv.v{}", status["realtime_version"]);
    let at_end = status["partitions"].as_array().is_some_and(|ps| {
        ps.iter().all(|p| {
            p["log_end_offset"] == 0
                || p["consumers"].as_array().is_some_and(|cs| cs.iter().any(|c| c["consumer"] == serving.as_str() && c["lag"] == 0))
        })
    });
    (code == 200 && at_end).then(|| status["segment_horizon"].as_str().map(str::to_string)).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kappa_microservices_equal_the_embedded_kappa_run() {
    let env = TestEnv::start();
    let work = tempfile::tempdir().expect("tempdir");
    let bodies = lab_day_bodies(work.path());
    let client = prism::http_client();
    let envs = vec![
        ("PRISM_KAFKA_BROKERS", env.var("PRISM_KAFKA_BROKERS")),
        ("PRISM_DATABASE_URL", env.var("PRISM_DATABASE_URL")),
        ("PRISM_PARTITIONS", "2".to_string()),
        ("PRISM_ARCHITECTURE", "kappa".to_string()),
        ("PRISM_HANDOFF_INTERVAL", "200ms".to_string()),
        ("PRISM_MASTER_DATASET", work.path().join("segments-store").display().to_string()),
    ];
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let base = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let mut processes = Processes(vec![("ingest-api".to_string(), spawn("ingest-api", ports[0], &envs))]);
    wait_ready(&client, &base(0), "ingest-api").await;
    for (i, service) in [(1, "speed-layer"), (2, "serving")] {
        processes.0.push((service.to_string(), spawn(service, ports[i], &envs)));
    }
    wait_ready(&client, &base(1), "speed-layer").await;
    wait_ready(&client, &base(2), "serving").await;
    // No batch layer in Kappa mode: those services say why and exit non-zero.
    for (i, service) in [(3, "archiver"), (4, "batch-layer")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_prism"))
            .arg(service)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PRISM_HTTP_ADDR", format!("127.0.0.1:{}", ports[i]))
            .output()
            .expect("run");
        assert!(!output.status.success(), "{service} refuses Kappa mode");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("does not run in a kappa deployment"), "{service}: {stderr}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.feed.no_feed = true;
    config.deployment.partitions = 2;
    config.deployment.architecture = Architecture::Kappa;
    config.handoff.handoff_interval = Duration::from_millis(200);
    let embedded = start(config).await;

    post_all(&client, &base(0), &bodies).await;
    post_all(&embedded.client, &embedded.base, &bodies).await;

    // Both caught up and handed off to the same horizon (the watermark of the same events).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let distributed = kappa_settled(&client, &base(2)).await;
        let reference = kappa_settled(&embedded.client, &embedded.base).await;
        if distributed.is_some() && distributed == reference {
            break;
        }
        assert!(Instant::now() < deadline, "no common segment horizon: distributed {distributed:?}, embedded {reference:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, one) = get_json(&client, &base(2), "/v1/bars/AAPL?interval=1d").await;
    assert_eq!(one["architecture"], "kappa");
    assert_eq!(one["batch_horizon"], Value::Null);
    let distributed = every_bar(&client, &base(2)).await;
    let reference = every_bar(&embedded.client, &embedded.base).await;
    assert_same_bars(&reference, &distributed, "distributed Kappa bars differ from the embedded Kappa run's");
    assert!(
        distributed.iter().flat_map(|(_, bars)| bars).any(|b| b["layer"] == "segment"),
        "the distributed hand-off wrote segments that serving read"
    );
    embedded.stop().await;
    for (name, child) in &mut processes.0 {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let status = child.wait().expect("wait");
        assert!(status.success(), "{name} exits 0 on SIGTERM: {status}");
    }
}
