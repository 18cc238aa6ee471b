//! End to end with separate processes: lab trades posted to `prism ingest-api` → Kafka →
//! `prism speed-layer` + `prism archiver` + `prism batch-layer` → PostgreSQL (views) and S3
//! (the master dataset, on the test's S3-compatible server) → `prism serving`,
//! whose `/v1/bars` answers equal an embedded `prism up` run's answers exactly (same trades,
//! same posts), for every symbol and interval. Needs the servers `./infra/test.sh` starts
//! (`PRISM_KAFKA_BROKERS`, `PRISM_DATABASE_URL`); without them it fails.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use prism_core::event::{DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microservices_over_kafka_and_postgres_equal_the_embedded_run() {
    let brokers = std::env::var("PRISM_KAFKA_BROKERS").expect("PRISM_KAFKA_BROKERS is not set: run ./infra/test.sh");
    let pg = std::env::var("PRISM_DATABASE_URL").expect("PRISM_DATABASE_URL is not set: run ./infra/test.sh");
    let work = tempfile::tempdir().expect("tempdir");
    let bodies = lab_day_bodies(work.path());
    let client = prism::http_client();

    let s3 = std::env::var("PRISM_TEST_S3_ENDPOINT").expect("PRISM_TEST_S3_ENDPOINT is not set: run ./infra/test.sh");
    let envs = vec![
        ("PRISM_KAFKA_BROKERS", brokers),
        ("PRISM_DATABASE_URL", fresh_database(&pg).await),
        ("PRISM_PARTITIONS", "2".to_string()),
        // The master dataset on object storage (the S3-compatible test server).
        ("PRISM_MASTER_DATASET", format!("s3://prism-test/distributed-{}", std::process::id())),
        ("AWS_ENDPOINT", s3),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
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
    let embedded = embedded_reference(dir.path(), 2).await;

    post_all(&client, &base(0), &bodies).await;
    post_all(&embedded.client, &embedded.base, &bodies).await;

    // Settle both, then run their batch jobs.
    wait_caught_up(&client, &base(4), false, Duration::from_secs(300)).await;
    // A full rebuild: the batch layer may already have run on its own when the archiver caught up.
    let run = client.post(format!("{}/v1/admin/batch-runs?full=true", base(3))).send().await.expect("batch run");
    assert_eq!(run.status().as_u16(), 201);
    let report: serde_json::Value = run.json().await.expect("batch run report");
    let run = &report["runs"][0];
    assert!(run["files_read"].as_u64().unwrap_or(0) > 0, "the batch job read the archive from S3: {report}");
    assert!(run["segments_built"].as_u64().unwrap_or(0) > 0, "the batch job wrote segments to S3, which serving reads: {report}");
    let refused = client.post(format!("{}/v1/admin/batch-runs", base(4))).send().await.expect("POST to serving");
    assert_eq!(refused.status().as_u16(), 409, "serving has no batch layer of its own");
    settle_and_run_batch(&embedded.client, &embedded.base, false, Duration::from_secs(300)).await;

    let (_, status) = get_json(&client, &base(4), "/v1/status").await;
    assert!(status["batch_horizon"].is_string(), "{status}");
    let distributed = every_bar(&client, &base(4)).await;
    let reference = every_bar(&embedded.client, &embedded.base).await;
    assert_same_bars(&reference, &distributed, "distributed bars differ from the embedded run's");
    embedded.stop().await;

    // Graceful stop: every service exits 0 on SIGTERM.
    for (name, child) in &mut processes.0 {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let status = child.wait().expect("wait");
        assert!(status.success(), "{name} exits 0 on SIGTERM: {status}");
    }
}
