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

    // A replay through `prism serving`: recorded in the store, built by the speed-layer
    // instance as its own consumer group from offset 0, switched by it once caught up.
    let resp = client.post(format!("{}/v1/admin/replays?switch_lag=0", base(2))).send().await.expect("POST replay");
    assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().await.unwrap_or_default());
    let second = client.post(format!("{}/v1/admin/replays", base(2))).send().await.expect("POST second replay");
    assert_eq!(second.status().as_u16(), 409, "one replay per view at a time");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (code, replay) = get_json(&client, &base(2), "/v1/admin/replays/ohlcv.v2").await;
        assert_eq!(code, 200, "{replay}");
        if replay["state"] == "switched" {
            assert_eq!(replay["lag"], 0, "{replay}");
            break;
        }
        assert_eq!(replay["state"], "replaying", "{replay}");
        assert!(Instant::now() < deadline, "the distributed replay did not switch: {replay}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, status) = get_json(&client, &base(2), "/v1/status").await;
        if status["realtime_version"] == 2
            && kappa_settled(&client, &base(2)).await == kappa_settled(&embedded.client, &embedded.base).await
        {
            break;
        }
        assert!(Instant::now() < deadline, "version 2 did not settle: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let replayed = every_bar(&client, &base(2)).await;
    assert_same_bars(&reference, &replayed, "the distributed replay's bars differ from the embedded Kappa run's");

    // A cancelled replay leaves version 2 serving; the speed layer stops building version 3.
    let resp = client.post(format!("{}/v1/admin/replays", base(2))).send().await.expect("POST replay");
    assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().await.unwrap_or_default());
    let cancelled = client.delete(format!("{}/v1/admin/replays/ohlcv.v3", base(2))).send().await.expect("DELETE replay");
    assert_eq!(cancelled.status().as_u16(), 200);
    let body: Value = cancelled.json().await.expect("JSON");
    assert_eq!(body["state"], "cancelled", "{body}");
    let again = client.delete(format!("{}/v1/admin/replays/ohlcv.v3", base(2))).send().await.expect("DELETE again");
    assert_eq!(again.status().as_u16(), 404, "a cancelled replay is not running");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, status) = get_json(&client, &base(2), "/v1/status").await;
    assert_eq!(status["realtime_version"], 2, "{status}");
    assert_same_bars(&reference, &every_bar(&client, &base(2)).await, "a cancelled replay changed the answers");

    embedded.stop().await;
    for (name, child) in &mut processes.0 {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let status = child.wait().expect("wait");
        assert!(status.success(), "{name} exits 0 on SIGTERM: {status}");
    }
}

/// Lambda → Kappa on a Kafka topic whose first offsets retention deleted: the check names the
/// topic, the partition and where it starts, and `prism speed-layer --architecture kappa` exits
/// non-zero with that reason. (Tansu 0.6's SQLite engine has no DeleteRecords, so the gap is
/// made the other way Kafka loses a log's head: `retention.ms` under `cleanup.policy=delete`,
/// applied by the broker's maintenance every second here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kappa_refuses_a_kafka_log_whose_first_offsets_are_gone() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    use rdkafka::ClientConfig;

    let env = TestEnv::start_with(&[("PRISM_TEST_TANSU_MAINTENANCE", "1s")]);
    let brokers = env.var("PRISM_KAFKA_BROKERS");
    let mut client_config = ClientConfig::new();
    client_config.set("bootstrap.servers", &brokers);
    let admin: AdminClient<DefaultClientContext> = client_config.create().expect("admin client");
    let topic = NewTopic::new("prism.quotes", 2, TopicReplication::Fixed(1)).set("cleanup.policy", "delete").set("retention.ms", "600000");
    for result in admin.create_topics([&topic], &AdminOptions::new()).await.expect("create topics") {
        result.expect("prism.quotes created");
    }
    let producer: FutureProducer = client_config.clone().set("linger.ms", "0").create().expect("producer");
    let now = prism_core::time::now_ms();
    // Three events an hour old (past the 10-minute retention), then two new ones.
    for (i, ts) in [now - 3_600_000, now - 3_600_000, now - 3_600_000, now, now].into_iter().enumerate() {
        let value = format!(r#"{{"symbol":"AAPL","ts":{ts},"price":"1.5","size":{}}}"#, i + 1);
        producer
            .send(FutureRecord::to("prism.quotes").partition(0).key("AAPL").payload(&value).timestamp(ts), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        producer.flush(Duration::from_secs(10)).expect("flush");
    }
    let log = prism_core::log::kafka::KafkaLog::connect(prism_core::log::kafka::KafkaLogConfig::new(&brokers)).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let starts = prism_core::log::EventLog::start_offsets(&log, "prism.quotes").await.expect("start offsets");
        // Maintenance may run while the old events are produced: wait for all three to go.
        if starts == [3, 0] {
            break;
        }
        assert!(starts[0] <= 3, "retention deleted a new event: start offsets {starts:?}");
        assert!(Instant::now() < deadline, "the broker never applied retention to the three old events: start offsets {starts:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let refused = prism_core::log::check_log_complete(&log, "prism.quotes").await.expect_err("a log without its head").to_string();
    assert!(refused.contains("prism.quotes partition 0 starts at offset 3"), "{refused}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_prism"))
        .arg("speed-layer")
        .env("PRISM_KAFKA_BROKERS", &brokers)
        .env("PRISM_DATABASE_URL", env.var("PRISM_DATABASE_URL"))
        .env("PRISM_ARCHITECTURE", "kappa")
        .env("PRISM_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("run prism speed-layer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "Kappa mode refuses a log without its head: {stderr}");
    assert!(stderr.contains("switching to Kappa mode") && stderr.contains("prism.quotes partition 0 starts at offset 3"), "{stderr}");
}
