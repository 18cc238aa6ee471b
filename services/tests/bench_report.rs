//! `prism bench` produces an honest report: every stage processes the whole workload, read
//! from a generated set, a JSONL file or a Parquet file.

mod common;

use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use prism::bench::{generate_workload, read_workload, run_bench, BenchConfig};

fn config(dir: &std::path::Path) -> BenchConfig {
    BenchConfig {
        workload: None,
        generate: Some(3_000),
        seed: 7,
        partitions: 2,
        dir: Some(dir.join("work")),
        keep: false,
        kafka_brokers: None,
        broker_name: "unnamed broker".into(),
        kafka_database_url: None,
        kafka_reset_topics: false,
        latency_samples: 20,
        rows_out: Some(dir.join("rows.csv")),
        // Small commits: many run while events are folded (the pipelined path).
        speed: prism_speed::SpeedArgs { commit_interval: std::time::Duration::from_millis(5), commit_max_events: 100 },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_workload_runs_every_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run_bench(config(dir.path())).await.expect("bench");
    assert_eq!(report.events, 3_000);
    let distinct: std::collections::HashSet<String> = generate_workload(3_000, 7).into_iter().map(|q| q.symbol).collect();
    assert_eq!(report.symbols, distinct.len());
    assert!(distinct.len() > 450 && distinct.iter().all(|s| s.len() == 4 && s.starts_with('S')), "500 symbols S000..S499");
    let names: Vec<&str> = report.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(names, ["log_append", "speed_layer", "replay", "archiver", "batch_job", "http_ingest"]);
    let http = report.stages.iter().find(|s| s.stage == "http_ingest").expect("http stage");
    assert_eq!(http.events, 3_000, "every event posted, and the log holds each once");
    for s in &report.stages {
        assert_eq!(s.events, 3_000, "{s:?}");
        assert!(s.events_per_second > 0.0 && s.seconds > 0.0, "{s:?}");
    }
    assert!(report.peak_rss_bytes.unwrap_or(0) > 1 << 20);
    assert!(!dir.path().join("work").exists(), "the working folder is removed");
    let json = serde_json::to_value(&report).expect("json");
    assert!(json["stages"][0]["events_per_second"].is_number());
    // --rows-out: the batch view's 1-minute rows, one per (symbol, minute), every trade counted.
    let csv = std::fs::read_to_string(dir.path().join("rows.csv")).expect("rows.csv");
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 9), "9 columns");
    assert_eq!(rows.iter().map(|r| r[8].parse::<u64>().expect("trades")).sum::<u64>(), 3_000);
    let keys: Vec<(&str, i64)> = rows.iter().map(|r| (r[0], r[1].parse::<i64>().expect("window start"))).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted by symbol and window, no duplicates");
}

#[test]
fn generated_workload_is_deterministic_and_valid() {
    let a = generate_workload(1_000, 3);
    assert_eq!(a, generate_workload(1_000, 3));
    assert_ne!(a, generate_workload(1_000, 4));
    assert!(a.iter().all(|q| q.validate().is_ok()));
    let span = a.iter().map(|q| q.ts).max().unwrap_or(0) - a.iter().map(|q| q.ts).min().unwrap_or(0);
    assert!(span > 1_000 && span < 1_000 + 2_000, "1 ms apart with up to 2 s of jitter: {span}");
}

#[test]
fn reads_jsonl_and_parquet_workloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jsonl = dir.path().join("w.jsonl");
    let mut f = std::fs::File::create(&jsonl).expect("create");
    writeln!(f, r#"{{"symbol": "S001", "ts": 1704205800000, "price": 123.45, "size": 100}}"#).expect("write");
    writeln!(f).expect("blank line");
    writeln!(f, r#"{{"symbol": "S002", "ts": 1704205800001, "price": "7.000001", "size": 1}}"#).expect("write");
    drop(f);
    let quotes = read_workload(&jsonl).expect("jsonl");
    assert_eq!(quotes.len(), 2);
    assert_eq!(quotes[1].price.units(), 7_000_001);

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"symbol\": \"S\", \"ts\": 1, \"price\": 1.1234567, \"size\": 1}\n").expect("write");
    let err = read_workload(&bad).expect_err("7 decimals refused");
    assert!(format!("{err:#}").contains("bad.jsonl:1"), "{err:#}");

    let schema = Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("price", DataType::Decimal128(10, 2), false),
        Field::new("size", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["S001", "S002"])),
        Arc::new(TimestampMillisecondArray::from(vec![1_704_205_800_000, 1_704_205_800_500])),
        Arc::new(Decimal128Array::from(vec![12_345, 99]).with_precision_and_scale(10, 2).expect("decimal")),
        Arc::new(Int64Array::from(vec![100, 5])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let parquet_path = dir.path().join("w.parquet");
    let file = std::fs::File::create(&parquet_path).expect("create");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let quotes = read_workload(&parquet_path).expect("parquet");
    assert_eq!(quotes.len(), 2);
    assert_eq!(quotes[0].price.units(), 123_450_000);
    assert_eq!(quotes[1].price.units(), 990_000);
    assert_eq!(quotes[1].ts, 1_704_205_800_500);
}

/// The Kafka path, against private servers (it resets `prism.quotes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_path_reports_produce_speed_layer_replay_and_latency() {
    let env = common::TestEnv::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.kafka_brokers = Some(env.var("PRISM_KAFKA_BROKERS"));
    config.kafka_database_url = Some(env.var("PRISM_DATABASE_URL"));
    config.broker_name = "tansu 0.6.0".into();
    config.kafka_reset_topics = true;
    let report = run_bench(config.clone()).await.expect("bench");
    let kafka = report.kafka.expect("a Kafka section");
    assert_eq!(kafka.broker, format!("tansu 0.6.0 at {}", env.var("PRISM_KAFKA_BROKERS")));
    assert!(!kafka.librdkafka.is_empty());
    let names: Vec<&str> = kafka.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(names, ["ingest_api_produce", "speed_layer_from_kafka", "replay"]);
    assert!(kafka.stages[..2].iter().all(|s| s.events == 3_000 && s.events_per_second > 0.0));
    let l = &kafka.end_to_end_latency_ms;
    assert_eq!(l.samples, 20);
    // The replay reads the whole topic: the workload and the latency probes.
    assert_eq!(kafka.stages[2].events, 3_000 + 20);
    assert!(kafka.stages[2].events_per_second > 0.0);
    assert!(l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");

    // Without the reset flag, a used topic is refused rather than measured wrongly.
    config.kafka_reset_topics = false;
    config.kafka_database_url = None;
    let err = run_bench(config).await.expect_err("non-empty topic refused");
    assert!(format!("{err:#}").contains("already holds"), "{err:#}");
}
