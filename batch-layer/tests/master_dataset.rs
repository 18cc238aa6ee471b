//! The master dataset's contract, one body run on both backends: a local folder and an
//! S3-compatible object store (the moto server `./infra/test.sh` starts: `PRISM_TEST_S3_ENDPOINT`,
//! bucket `prism-test`). Without the server the test fails: it is never skipped.

mod common;

use bytes::Bytes;
use common::{backends, quote, s3_env, sorted, visible_rows, DAY, HOUR, T0, TOPIC};
use object_store::path::Path as ObjectPath;
use prism_batch::master::{day_start, MasterDataset, MasterError};

#[tokio::test]
async fn files_round_trip_losslessly_list_by_day_and_uncommitted_ones_are_removed() {
    for (name, master, _dir) in backends("round-trip") {
        master.check().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(master.list_files(TOPIC).await.expect("list").is_empty(), "{name}");

        // Every optional field present, absent, or partly (see `quote`); extreme prices.
        let p0_day1 = vec![quote(0, 0, T0, 1_500_000), quote(0, 1, T0 + 1, 123_456_789_012), quote(0, 2, T0 + 59_999, 1)];
        let p1_day1 = vec![quote(1, 0, T0 + HOUR, 7_000_000), quote(1, 1, T0 + HOUR + 5, 999_999_999_999_999_999)];
        let p1_day2 = vec![quote(1, 2, T0 + DAY, 7_000_002), quote(1, 3, T0 + DAY, 7_000_003), quote(1, 4, T0 + DAY + 1, 1)];
        let a = master.write_file(TOPIC, p0_day1.clone()).await.expect("write a");
        let b = master.write_file(TOPIC, p1_day1.clone()).await.expect("write b");
        // Rows are stored sorted by offset whatever order they come in.
        let c = master.write_file(TOPIC, p1_day2.iter().rev().cloned().collect()).await.expect("write c");
        assert_eq!(a.as_ref(), "quotes/date=2024-01-02/prism.quotes-0-0-2.parquet", "{name}: Hive day layout");
        assert_eq!(b.as_ref(), "quotes/date=2024-01-02/prism.quotes-1-0-1.parquet", "{name}");
        assert_eq!(c.as_ref(), "quotes/date=2024-01-03/prism.quotes-1-2-4.parquet", "{name}");
        // Another topic's file and the batch job's segments are not listed for this one.
        master.write_file("other", vec![quote(0, 9, T0, 1)]).await.expect("write other");
        let segment = ObjectPath::from("segments/ohlcv/v1/chunk-0.parquet");
        master.location().put_atomic(&segment, Bytes::from_static(b"not a quotes file")).await.expect("segment");

        // One file holds one partition and one UTC day.
        for bad in [vec![], vec![quote(0, 3, T0, 1), quote(0, 4, T0 + DAY, 1)], vec![quote(0, 3, T0, 1), quote(1, 5, T0, 1)]] {
            let err = master.write_file(TOPIC, bad).await.expect_err("refused");
            assert!(matches!(err, MasterError::Format { .. }), "{name}: {err}");
        }

        let files = master.list_files(TOPIC).await.expect("list");
        let parts: Vec<(i32, i64, i64, i64, Option<u32>)> =
            files.iter().map(|f| (f.partition, f.first_offset, f.last_offset, f.day_start_ms, f.legacy_hour)).collect();
        let day1 = day_start(T0);
        assert_eq!(day1, 1_704_153_600_000, "2024-01-02T00:00Z");
        assert_eq!(
            parts,
            vec![(0, 0, 2, day1, None), (1, 0, 1, day1, None), (1, 2, 4, day1 + DAY, None)],
            "{name}: by (day, partition, offset)"
        );
        assert_eq!(master.read_file(&files[0]).await.expect("read a"), p0_day1, "{name}: exact round trip");
        assert_eq!(master.read_file(&files[1]).await.expect("read b"), p1_day1, "{name}");
        assert_eq!(master.read_file(&files[2]).await.expect("read c"), p1_day2, "{name}");
        let all = sorted([p0_day1.clone(), p1_day1, p1_day2].concat());
        assert!(all.iter().any(|r| r.record.bid.is_some() && r.record.exchange.is_some()), "the data has every field");
        assert!(all.iter().any(|r| r.record.bid.is_none() && r.record.ask.is_none() && r.record.exchange.is_none()), "and none");
        assert_eq!(visible_rows(&master).await, all, "{name}");

        // Partition 1 never committed anything: its files go; partition 0's and the segment stay.
        assert_eq!(master.remove_uncommitted(TOPIC, &[3, 0]).await.expect("remove"), 2, "{name}");
        let left: Vec<i32> = master.list_files(TOPIC).await.expect("list").iter().map(|f| f.partition).collect();
        assert_eq!(left, vec![0], "{name}");
        assert_eq!(master.location().get(&segment).await.expect("segment kept").as_ref(), b"not a quotes file", "{name}");
        assert_eq!(visible_rows(&master).await, p0_day1, "{name}");
    }
}

#[tokio::test]
async fn an_unreadable_file_is_a_format_error_naming_it() {
    for (name, master, _dir) in backends("unreadable") {
        let path = ObjectPath::from(format!("quotes/date=2024-01-02/{TOPIC}-0-0-1.parquet"));
        master.location().put_atomic(&path, Bytes::from_static(b"PAR1 garbage")).await.expect("put");
        let files = master.list_files(TOPIC).await.expect("list");
        assert_eq!(files.len(), 1, "{name}");
        match master.read_file::<prism_core::event::Quote>(&files[0]).await {
            Err(MasterError::Format { file, .. }) => assert_eq!(file, path.as_ref(), "{name}"),
            other => panic!("{name}: expected a format error, got {other:?}"),
        }
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
    assert!(err.to_string().contains("listing"), "the message says what was being done: {err}");
    assert!(!err.is_persistent(), "a store that is down may come back: {err}");
}
