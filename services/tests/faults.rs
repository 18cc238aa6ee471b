//! Faults: the distributed deployment loses its broker, then its database, while running; the
//! services retry with backoff and report not-ready, then resume, and the final bars equal an
//! undisturbed embedded run's exactly. The test starts private servers with
//! `infra/test-env.sh` (so restarting them disturbs no other test) and stops them at the end.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn ready(client: &reqwest::Client, base: &str) -> bool {
    matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
}

/// Waits until every service reports ready again.
async fn all_ready(client: &reqwest::Client, bases: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for base in bases {
        while !ready(client, base).await {
            assert!(Instant::now() < deadline, "{base} did not become ready again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_recover_from_broker_and_database_restarts() {
    let t0 = Instant::now();
    let env = TestEnv::start();
    let work = tempfile::tempdir().expect("tempdir");
    let bodies = lab_day_bodies(work.path());
    let client = prism::http_client();
    let envs = vec![
        ("PRISM_KAFKA_BROKERS", env.var("PRISM_KAFKA_BROKERS")),
        ("PRISM_DATABASE_URL", env.var("PRISM_DATABASE_URL")),
        ("PRISM_PARTITIONS", "2".to_string()),
        ("PRISM_MASTER_DATASET", work.path().join("master").display().to_string()),
        ("PRISM_BATCH_INTERVAL", "1h".to_string()),
        ("PRISM_CONNECT_TIMEOUT", "3s".to_string()),
    ];
    let services = ["ingest-api", "speed-layer", "archiver", "batch-layer", "serving"];
    let ports: Vec<u16> = services.iter().map(|_| free_port()).collect();
    let bases: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let mut processes = Processes(vec![(services[0].to_string(), spawn(services[0], ports[0], &envs))]);
    wait_ready(&client, &bases[0], services[0]).await;
    for (i, service) in services.iter().enumerate().skip(1) {
        processes.0.push((service.to_string(), spawn(service, ports[i], &envs)));
    }
    all_ready(&client, &bases).await;

    eprintln!("faults: started at {:?}", t0.elapsed());
    let third = bodies.len() / 3;
    post_all(&client, &bases[0], &bodies[..third]).await;
    wait_caught_up(&client, &bases[4], false, Duration::from_secs(120)).await;

    // The broker dies (SIGKILL) and comes back a second later: readiness drops, then returns.
    eprintln!("faults: phase 1 caught up at {:?}", t0.elapsed());
    env.run("restart-broker");
    all_ready(&client, &bases).await;
    eprintln!("faults: ready after broker restart at {:?}", t0.elapsed());
    post_all(&client, &bases[0], &bodies[third..2 * third]).await;
    wait_caught_up(&client, &bases[4], false, Duration::from_secs(180)).await;

    // PostgreSQL stops immediately (as after a crash) and restarts.
    eprintln!("faults: phase 2 caught up at {:?}", t0.elapsed());
    env.run("restart-postgres");
    all_ready(&client, &bases).await;
    eprintln!("faults: ready after postgres restart at {:?}", t0.elapsed());
    post_all(&client, &bases[0], &bodies[2 * third..]).await;
    wait_caught_up(&client, &bases[4], false, Duration::from_secs(180)).await;

    eprintln!("faults: phase 3 caught up at {:?}", t0.elapsed());
    // The batch layer may still be backing off: retry its run until it answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.post(format!("{}/v1/admin/batch-runs", bases[3])).send().await;
        if matches!(&r, Ok(r) if r.status().as_u16() == 201) {
            break;
        }
        assert!(Instant::now() < deadline, "batch run kept failing: {r:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    eprintln!("faults: batch run done at {:?}", t0.elapsed());
    // The same posts to an undisturbed embedded run.
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = embedded_reference(dir.path(), 2).await;
    post_all(&embedded.client, &embedded.base, &bodies).await;
    settle_and_run_batch(&embedded.client, &embedded.base, false, Duration::from_secs(300)).await;

    let recovered = every_bar(&client, &bases[4]).await;
    let reference = every_bar(&embedded.client, &embedded.base).await;
    assert_same_bars(&reference, &recovered, "bars after the faults differ from an undisturbed run's");
    let (_, status) = get_json(&client, &bases[4], "/v1/status").await;
    let accepted = status["ingest"][0]["accepted"].as_i64().unwrap_or(-1);
    let log_end: i64 = status["partitions"].as_array().expect("partitions").iter().map(|p| p["log_end_offset"].as_i64().unwrap_or(0)).sum();
    assert_eq!(log_end, accepted, "every accepted event is in the log exactly once: {status}");
    embedded.stop().await;
    drop(processes);
}

/// A service whose HTTP port is taken exits at start with an error naming the address, instead
/// of running its component without `/healthz` or `/readyz` (which left an orchestrator waiting
/// on a service that would never report ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_port_is_taken_exits_naming_the_address() {
    let env = TestEnv::start();
    let work = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind(("127.0.0.1", free_port())).expect("bind");
    let addr = taken.local_addr().expect("addr");
    for service in ["ingest-api", "ingest-logs"] {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_prism"))
                .arg(service)
                .env("PRISM_HTTP_ADDR", addr.to_string())
                .env("PRISM_KAFKA_BROKERS", env.var("PRISM_KAFKA_BROKERS"))
                .env("PRISM_DATABASE_URL", env.var("PRISM_DATABASE_URL"))
                .env("PRISM_DATA_DIR", work.path().join(service))
                .env("PRISM_TAIL", work.path().join("access.log").display().to_string())
                .env("PRISM_LOG", "warn")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{service} kept running on a taken port"))
        .expect("run prism");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{service} exited 0: {stderr}");
        assert!(stderr.contains(&format!("binding {service}'s HTTP address {addr}")), "{service}: {stderr}");
    }
    drop(taken);
}
