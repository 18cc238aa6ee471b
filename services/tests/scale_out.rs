//! Scale-out: two `prism speed-layer` instances in one Kafka consumer group split the partitions
//! of `prism.quotes`; one is SIGKILLed mid-stream; once its session times out the survivor takes
//! its partitions over (claiming their leases, which fences the dead instance) and resumes them
//! from the offsets in PostgreSQL. The final bars equal an uninterrupted embedded run's exactly.
//! Private servers (`infra/test-env.sh`), so the topics are this test's alone.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use prism_core::config::speed_consumer;
use prism_core::event::QUOTES_TOPIC;
use prism_core::store::ViewStore;

/// The owners of the speed layer's partition leases, by partition.
async fn owners(store: &ViewStore) -> Vec<(i32, String)> {
    let consumer = speed_consumer(1);
    store
        .leases(QUOTES_TOPIC)
        .await
        .expect("read leases")
        .into_iter()
        .filter(|l| l.consumer == consumer)
        .map(|l| (l.partition, l.owner))
        .collect()
}

/// Waits until the 4 partitions' leases are held exactly by `want` (each holding at least one).
async fn wait_owners(store: &ViewStore, want: &[&str], timeout: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = owners(store).await;
        let holders: BTreeSet<&str> = now.iter().map(|(_, o)| o.as_str()).collect();
        if now.len() == 4 && holders == want.iter().copied().collect() {
            return now;
        }
        assert!(Instant::now() < deadline, "leases never settled on {want:?}: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speed_layers_split_partitions_and_the_survivor_takes_over() {
    let t0 = Instant::now();
    let env = TestEnv::start();
    let work = tempfile::tempdir().expect("tempdir");
    let bodies = lab_day_bodies_with(work.path(), 200);
    let client = reqwest::Client::new();
    let envs = vec![
        ("PRISM_KAFKA_BROKERS", env.var("PRISM_KAFKA_BROKERS")),
        ("PRISM_DATABASE_URL", env.var("PRISM_DATABASE_URL")),
        ("PRISM_PARTITIONS", "4".to_string()),
        ("PRISM_MASTER_DATASET", work.path().join("master").display().to_string()),
        ("PRISM_KAFKA_SESSION_TIMEOUT", "6s".to_string()),
    ];
    let store = ViewStore::connect_postgres(&env.var("PRISM_DATABASE_URL"), Duration::from_secs(10)).await.expect("view store");
    let services = ["ingest-api", "archiver", "serving"];
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let bases: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let mut processes = Processes(vec![(services[0].to_string(), spawn(services[0], ports[0], &envs))]);
    wait_ready(&client, &bases[0], services[0]).await;
    for (i, service) in services.iter().enumerate().skip(1) {
        processes.0.push((service.to_string(), spawn(service, ports[i], &envs)));
    }
    for (i, name) in ["speed-a", "speed-b"].into_iter().enumerate() {
        let mut own = envs.clone();
        own.push(("PRISM_INSTANCE_ID", name.to_string()));
        processes.0.push((name.to_string(), spawn("speed-layer", ports[3 + i], &own)));
    }
    for (i, base) in bases.iter().enumerate() {
        wait_ready(&client, base, &format!("service {i}")).await;
    }

    // The group splits the partitions between the two instances.
    let split = wait_owners(&store, &["speed-a", "speed-b"], Duration::from_secs(60)).await;
    eprintln!("scale-out: split {split:?} at {:?}", t0.elapsed());
    let third = bodies.len() / 3;
    post_all(&client, &bases[0], &bodies[..third]).await;
    wait_caught_up(&client, &bases[2], false, Duration::from_secs(120)).await;
    let (_, status) = get_json(&client, &bases[2], "/v1/status").await;
    let speed_owners: BTreeSet<String> = status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .flat_map(|p| p["consumers"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["consumer"] == speed_consumer(1).as_str())
        .filter_map(|c| c["owner"].as_str().map(str::to_string))
        .collect();
    assert_eq!(speed_owners, ["speed-a".to_string(), "speed-b".to_string()].into(), "both instances committed: {status}");

    // Mid-stream, instance B dies without a word (SIGKILL: no revoke, no final commit).
    let half = third + third / 2;
    let posting = {
        let (client, base, bodies) = (client.clone(), bases[0].clone(), bodies[third..2 * third].to_vec());
        tokio::spawn(async move { post_all(&client, &base, &bodies).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = processes.0.iter_mut().find(|(n, _)| n == "speed-b").expect("speed-b");
    b.1.kill().expect("SIGKILL speed-b");
    b.1.wait().expect("reap speed-b");
    eprintln!("scale-out: speed-b killed at {:?} (posting {} of {} bodies)", t0.elapsed(), half, bodies.len());
    posting.await.expect("posting task");

    // After the session timeout the survivor owns every partition and catches up alone.
    let taken = wait_owners(&store, &["speed-a"], Duration::from_secs(90)).await;
    eprintln!("scale-out: survivor owns {taken:?} at {:?}", t0.elapsed());
    post_all(&client, &bases[0], &bodies[2 * third..]).await;
    wait_caught_up(&client, &bases[2], false, Duration::from_secs(180)).await;
    eprintln!("scale-out: caught up at {:?}", t0.elapsed());

    // The same posts to an uninterrupted embedded run.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.no_feed = true;
    config.partitions = 4;
    let embedded = start(config).await;
    post_all(&embedded.client, &embedded.base, &bodies).await;
    // No batch run on either side: every bar comes from the realtime views.
    wait_caught_up(&embedded.client, &embedded.base, false, Duration::from_secs(300)).await;
    let survived = every_bar(&client, &bases[2]).await;
    let reference = every_bar(&embedded.client, &embedded.base).await;
    for ((name, want), (_, have)) in reference.iter().zip(&survived) {
        assert!(!want.is_empty(), "{name}");
        let first_diff = want.iter().zip(have).position(|(w, h)| w != h);
        assert!(
            want.len() == have.len() && first_diff.is_none(),
            "{name}: bars after the takeover differ from an uninterrupted run's ({} vs {} bars); first difference: {:?}",
            want.len(),
            have.len(),
            first_diff.map(|i| (&want[i], &have[i]))
        );
        assert!(want.iter().all(|b| b["layer"] == "realtime"), "{name}: the comparison is of realtime views");
    }
    embedded.stop().await;
    drop(processes);
}
