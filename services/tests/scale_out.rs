//! Scale-out: a second `prism speed-layer` joins a running one while events flow, and the Kafka
//! consumer group splits the partitions of `prism.quotes` between them (the first commits on
//! revoke; each resumes its new partitions from the store); one is SIGKILLed mid-stream; once its session times out the survivor takes
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
    let consumer = speed_consumer("ohlcv", 1);
    store
        .leases(QUOTES_TOPIC)
        .await
        .expect("read leases")
        .into_iter()
        .filter(|l| l.consumer == consumer)
        .map(|l| (l.partition, l.owner))
        .collect()
}

/// Waits until the 4 partitions' leases are held exactly by `want`; returns them.
async fn wait_owners(store: &ViewStore, want: &[&str], timeout: Duration) -> Vec<(i32, String)> {
    wait_owners_of(store, 4, want, timeout).await;
    owners(store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speed_layers_split_partitions_and_the_survivor_takes_over() {
    let t0 = Instant::now();
    let env = TestEnv::start();
    let work = tempfile::tempdir().expect("tempdir");
    let bodies = lab_day_bodies_with(work.path(), 200);
    let client = prism::http_client();
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
    let speed = |name: &str, port: u16| {
        let mut own = envs.clone();
        own.push(("PRISM_INSTANCE_ID", name.to_string()));
        (name.to_string(), spawn("speed-layer", port, &own))
    };
    // One instance first: it owns every partition and consumes the first part.
    processes.0.push(speed("speed-a", ports[3]));
    for (i, base) in bases.iter().enumerate().take(4) {
        wait_ready(&client, base, &format!("service {i}")).await;
    }
    wait_owners(&store, &["speed-a"], Duration::from_secs(60)).await;
    let quarter = bodies.len() / 4;
    post_all(&client, &bases[0], &bodies[..quarter]).await;
    wait_caught_up(&client, &bases[2], false, Duration::from_secs(120)).await;

    // Scale out while events flow: the group revokes A's partitions (A commits and lets go) and
    // splits them between A and B, which resume from the committed offsets.
    let posting = {
        // Paced over the ~5 s a join takes, so the rebalance happens mid-stream.
        let (client, base, bodies) = (client.clone(), bases[0].clone(), bodies[quarter..2 * quarter].to_vec());
        tokio::spawn(async move {
            for body in bodies.chunks(1) {
                post_all(&client, &base, body).await;
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
        })
    };
    processes.0.push(speed("speed-b", ports[4]));
    wait_ready(&client, &bases[4], "speed-b").await;
    let split = wait_owners(&store, &["speed-a", "speed-b"], Duration::from_secs(60)).await;
    eprintln!("scale-out: split {split:?} at {:?}", t0.elapsed());
    posting.await.expect("posting task");
    wait_caught_up(&client, &bases[2], false, Duration::from_secs(120)).await;
    let (_, status) = get_json(&client, &bases[2], "/v1/status").await;
    let speed: Vec<serde_json::Value> = status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .flat_map(|p| p["consumers"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["consumer"] == speed_consumer("ohlcv", 1).as_str())
        .collect();
    let speed_owners: BTreeSet<&str> = speed.iter().filter_map(|c| c["owner"].as_str()).collect();
    assert_eq!(speed_owners, ["speed-a", "speed-b"].into(), "both instances committed: {status}");
    assert!(
        speed.len() == 4 && speed.iter().all(|c| c["owner_renewed_at"].as_str().is_some_and(|r| r.starts_with("20"))),
        "every owned partition shows its lease renewal: {status}"
    );
    let half = 2 * quarter;

    // Mid-stream, instance B dies without a word (SIGKILL: no revoke, no final commit).
    let rest = half + (bodies.len() - half) / 2;
    let posting = {
        let (client, base, bodies) = (client.clone(), bases[0].clone(), bodies[half..rest].to_vec());
        tokio::spawn(async move { post_all(&client, &base, &bodies).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = processes.0.iter_mut().find(|(n, _)| n == "speed-b").expect("speed-b");
    b.1.kill().expect("SIGKILL speed-b");
    b.1.wait().expect("reap speed-b");
    eprintln!("scale-out: speed-b killed at {:?} (posting bodies {half}..{rest} of {})", t0.elapsed(), bodies.len());
    posting.await.expect("posting task");

    // After the session timeout the survivor owns every partition and catches up alone.
    let taken = wait_owners(&store, &["speed-a"], Duration::from_secs(90)).await;
    eprintln!("scale-out: survivor owns {taken:?} at {:?}", t0.elapsed());
    post_all(&client, &bases[0], &bodies[rest..]).await;
    wait_caught_up(&client, &bases[2], false, Duration::from_secs(180)).await;
    eprintln!("scale-out: caught up at {:?}", t0.elapsed());

    // The same posts to an uninterrupted embedded run.
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = embedded_reference(dir.path(), 4).await;
    post_all(&embedded.client, &embedded.base, &bodies).await;
    // No batch run on either side: every bar comes from the realtime views.
    wait_caught_up(&embedded.client, &embedded.base, false, Duration::from_secs(300)).await;
    let survived = every_bar(&client, &bases[2]).await;
    let reference = every_bar(&embedded.client, &embedded.base).await;
    assert_same_bars(&reference, &survived, "bars after the takeover differ from an uninterrupted run's");
    for (name, want) in &reference {
        assert!(want.iter().all(|b| b["layer"] == "realtime"), "{name}: the comparison is of realtime views");
    }
    embedded.stop().await;
    drop(processes);
}

fn trades(symbols: &[&str], per_symbol: usize) -> Vec<prism_core::event::Quote> {
    let t0 = 1_704_205_800_000; // 2024-01-02T14:30:00Z
    symbols
        .iter()
        .flat_map(|s| {
            (0..per_symbol).map(move |i| prism_core::event::Quote {
                symbol: s.to_string(),
                ts: t0 + i as i64 * 7_000,
                price: prism_core::decimal::Decimal6::from_units(1_000_000 + i as i128),
                size: 1 + i as i64 % 7,
                bid: None,
                ask: None,
                exchange: None,
            })
        })
        .collect()
}

async fn append<L: prism_core::log::EventLog>(log: &L, quotes: &[prism_core::event::Quote]) {
    let records = quotes.iter().map(|q| prism_core::log::NewRecord::new(q.symbol.clone(), q.to_json())).collect();
    log.append(QUOTES_TOPIC, records).await.expect("append");
}

/// Trades in the realtime 1-minute rows of every partition.
async fn trades_in_views(store: &ViewStore) -> i64 {
    let view = prism_core::view::ohlcv::OhlcvView::standard(5_000);
    let mut trades = 0;
    for p in 0..2 {
        let rows = store.realtime_rows_of_partition(&view, 1, p, i64::MIN).await.expect("rows");
        trades += rows.iter().filter(|r| r.interval_ms == 60_000).map(|r| r.row.agg.trades).sum::<i64>();
    }
    trades
}

fn ohlcv() -> std::sync::Arc<prism_core::view::ohlcv::OhlcvView> {
    std::sync::Arc::new(prism_core::view::ohlcv::OhlcvView::standard(5_000))
}

/// A symbol whose key hashes to `partition` of 2.
fn symbol_on(partition: i32) -> &'static str {
    ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
        .into_iter()
        .find(|s| prism_core::log::partitioner::partition_for_key(s.as_bytes(), 2) == partition)
        .expect("a symbol per partition")
}

/// An instance in a group whose partition is claimed behind its back (a rebalance it has not
/// heard of, or an operator's mistake): its next commit is fenced, it drops that partition's
/// uncommitted work and keeps committing the other; when the claimer never renews the lease,
/// the instance finds the partition orphaned, rejoins the group and takes it back. Every trade
/// is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_group_member_drops_the_lost_partition_and_later_adopts_it() {
    use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};
    use prism_core::log::kafka_group::{GroupConfig, GroupMembership};
    use prism_core::log::EventLog;
    use prism_speed::{run_speed_layer_in_group, SpeedConfig};

    let env = TestEnv::start();
    let kafka = KafkaLogConfig::new(env.var("PRISM_KAFKA_BROKERS"));
    let log = std::sync::Arc::new(KafkaLog::connect(kafka.clone()).await.expect("broker"));
    log.ensure_topic(QUOTES_TOPIC, 2).await.expect("topic");
    let store = ViewStore::connect_postgres(&env.var("PRISM_DATABASE_URL"), Duration::from_secs(10)).await.expect("store");
    let group = GroupConfig {
        group_id: speed_consumer("ohlcv", 1),
        topic: QUOTES_TOPIC.to_string(),
        session_timeout: Duration::from_secs(6),
        revoke_timeout: Duration::from_secs(10),
    };
    let config = SpeedConfig { partitions: 2, instance_id: "a".into(), ..SpeedConfig::default() };
    let membership = GroupMembership::join(&kafka, &group, "a").expect("join");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_speed_layer_in_group(ohlcv(), config, log.clone(), store.clone(), membership, stop.clone()));
    wait_owners_of(&store, 2, &["a"], Duration::from_secs(60)).await;

    let (p0, p1) = (symbol_on(0), symbol_on(1));
    let intruder = store
        .claim_partitions(&speed_consumer("ohlcv", 1), QUOTES_TOPIC, &[1], "intruder", prism_core::time::now_ms())
        .await
        .expect("claim");
    let first = trades(&[p0, p1], 50);
    append(&*log, &first).await;
    // Partition 0 goes on; partition 1's work is fenced and dropped, its offset stays put.
    let deadline = Instant::now() + Duration::from_secs(30);
    while trades_in_views(&store).await < 50 {
        assert!(Instant::now() < deadline, "partition 0 did not go on after the fence");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let offsets = store.consumer_offsets(&speed_consumer("ohlcv", 1), QUOTES_TOPIC).await.expect("offsets");
    assert!(offsets.iter().all(|o| o.partition != 1 || o.next_offset == 0), "{offsets:?}");
    assert_eq!(trades_in_views(&store).await, 50, "only partition 0's trades are in the views");
    assert!(!task.is_finished(), "a fenced group member keeps running");
    let leases = store.leases(QUOTES_TOPIC).await.expect("leases");
    assert!(leases.iter().any(|l| l.partition == 1 && l.owner == "intruder" && l.epoch == intruder[0].epoch), "{leases:?}");

    // The intruder never renews: the member adopts partition 1 and counts its trades once.
    wait_owners_of(&store, 2, &["a"], Duration::from_secs(90)).await;
    append(&*log, &trades(&[p1], 10)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while trades_in_views(&store).await < 110 {
        assert!(Instant::now() < deadline, "partition 1 was not adopted: {} trades", trades_in_views(&store).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trades_in_views(&store).await, 110, "every trade counted exactly once");
    stop.cancel();
    task.await.expect("join").expect("the speed layer stops cleanly");
}

/// A standalone speed layer (no group) whose partition another instance claims stops with a
/// clear error instead of double counting.
#[tokio::test]
async fn a_fenced_standalone_speed_layer_stops_with_a_clear_error() {
    use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
    use prism_core::log::EventLog;
    use prism_speed::{run_speed_layer, SpeedConfig, SpeedError};

    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log"));
    log.ensure_topic(QUOTES_TOPIC, 2).await.expect("topic");
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
    let config = SpeedConfig { partitions: 2, instance_id: "first".into(), ..SpeedConfig::default() };
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_speed_layer(ohlcv(), config, log.clone(), store.clone(), stop.clone()));
    wait_owners_of(&store, 2, &["first"], Duration::from_secs(10)).await;
    store.claim_partitions(&speed_consumer("ohlcv", 1), QUOTES_TOPIC, &[0], "second", prism_core::time::now_ms()).await.expect("claim");
    append(&*log, &trades(&[symbol_on(0), symbol_on(1)], 5)).await;
    let result = tokio::time::timeout(Duration::from_secs(10), task).await.expect("the speed layer stops").expect("join");
    match result {
        Err(e @ SpeedError::Fenced { .. }) => assert!(e.to_string().contains("[0]"), "{e}"),
        other => panic!("expected a fenced error, got {other:?}"),
    }
    assert_eq!(trades_in_views(&store).await, 0, "nothing of the fenced commit was written");
}

/// Waits until the first `partitions` leases are held exactly by `want`.
async fn wait_owners_of(store: &ViewStore, partitions: usize, want: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = owners(store).await;
        let holders: BTreeSet<&str> = now.iter().map(|(_, o)| o.as_str()).collect();
        if now.len() == partitions && holders == want.iter().copied().collect() {
            return;
        }
        assert!(Instant::now() < deadline, "leases never settled on {want:?}: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
