//! The master dataset's contract, one body run on both backends: a local folder and an
//! S3-compatible object store (the moto server `./infra/test.sh` starts: `PRISM_TEST_S3_ENDPOINT`,
//! bucket `prism-test`). Without the server the test fails: it is never skipped.

use prism_batch::master::{ArchivedQuote, MasterDataset, MasterError};
use prism_core::decimal::Decimal6;
use prism_core::event::{LogPosition, Quote};

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_704_205_800_000; // 2024-01-02T14:30:00Z

fn quote(partition: i32, offset: i64, ts: i64, units: i128) -> ArchivedQuote {
    ArchivedQuote {
        quote: Quote { symbol: format!("S{partition}"), ts, price: Decimal6::from_units(units), size: 100 + offset, bid: None, ask: None, exchange: None },
        pos: LogPosition { partition, offset },
    }
}

/// Points the `AWS_*` settings at the test server (each test runs in its own process).
fn s3_env() -> String {
    let endpoint = std::env::var("PRISM_TEST_S3_ENDPOINT").expect("PRISM_TEST_S3_ENDPOINT is not set: run ./infra/test.sh, which starts the S3 server");
    for (k, v) in [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        std::env::set_var(k, v);
    }
    endpoint
}

async fn backends() -> Vec<(&'static str, MasterDataset, tempfile::TempDir)> {
    s3_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let local = MasterDataset::open(&dir.path().join("master").display().to_string()).expect("local dataset");
    let prefix = format!("s3://prism-test/run-{}-{}", std::process::id(), T0);
    let s3 = MasterDataset::open(&prefix).expect("s3 dataset");
    vec![("local", local, dir), ("s3", s3, tempfile::tempdir().expect("tempdir"))]
}

#[tokio::test]
async fn files_round_trip_list_by_hour_and_uncommitted_ones_are_removed() {
    for (name, master, _dir) in backends().await {
        master.check().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(master.list_files("prism.quotes").await.expect("list").is_empty(), "{name}");

        let hour_a = vec![quote(0, 0, T0, 1_500_000), quote(0, 1, T0 + 1, 123_456_789_012), quote(0, 2, T0 + 59_999, 1)];
        let hour_b = vec![quote(1, 0, T0 + HOUR, 7_000_000), quote(1, 1, T0 + HOUR + 5, 7_000_001)];
        let a = master.write_file("prism.quotes", hour_a.clone()).await.expect("write a");
        let b = master.write_file("prism.quotes", hour_b.clone()).await.expect("write b");
        assert_eq!(a.as_ref(), "quotes/date=2024-01-02/hour=14/prism.quotes-0-0-2.parquet", "{name}: Hive layout");
        assert_eq!(b.as_ref(), "quotes/date=2024-01-02/hour=15/prism.quotes-1-0-1.parquet", "{name}");
        // Another topic's file is not listed for this one.
        master.write_file("other", vec![quote(0, 9, T0, 1)]).await.expect("write other");

        let files = master.list_files("prism.quotes").await.expect("list");
        let parts: Vec<(i32, i64, i64, i64)> = files.iter().map(|f| (f.partition, f.first_offset, f.last_offset, f.hour_start_ms)).collect();
        let hour = |t: i64| t.div_euclid(HOUR) * HOUR;
        assert_eq!(parts, vec![(0, 0, 2, hour(T0)), (1, 0, 1, hour(T0 + HOUR))], "{name}");
        assert_eq!(master.read_file(&files[0]).await.expect("read a"), hour_a, "{name}: exact round trip");
        assert_eq!(master.read_file(&files[1]).await.expect("read b"), hour_b, "{name}");

        // Partition 1 never committed anything: its file goes; partition 0's stays.
        assert_eq!(master.remove_uncommitted("prism.quotes", &[3, 0]).await.expect("remove"), 1, "{name}");
        let left: Vec<i32> = master.list_files("prism.quotes").await.expect("list").iter().map(|f| f.partition).collect();
        assert_eq!(left, vec![0], "{name}");
    }
}

#[tokio::test]
async fn bad_locations_and_unreachable_stores_are_clear_errors() {
    for spec in ["ftp://host/x", "s3://", "s3:///prefix"] {
        match MasterDataset::open(spec) {
            Err(MasterError::Location(m)) => assert!(m.contains(spec), "{spec}: {m}"),
            other => panic!("{spec}: expected a location error, got {other:?}"),
        }
    }
    s3_env();
    // A closed port: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{closed}"));
    let master = MasterDataset::open("s3://prism-test/x").expect("opening does not connect");
    let err = master.check().await.expect_err("an unreachable store is not ready");
    assert!(matches!(err, MasterError::Store { .. }), "{err:?}");
}
