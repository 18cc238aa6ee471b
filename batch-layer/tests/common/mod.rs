//! Helpers shared by the batch layer's tests: quotes, the two storage backends, reading what a
//! reader sees, and files of the previous layout and schema.
#![allow(dead_code)]

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use parquet::arrow::ArrowWriter;
use prism_batch::master::{ArchivedQuote, MasterDataset};
use prism_core::decimal::Decimal6;
use prism_core::event::{LogPosition, Quote};

pub const TOPIC: &str = "prism.quotes";
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 86_400_000;
/// 2024-01-02T14:30:00Z.
pub const T0: i64 = 1_704_205_800_000;

/// A quote at (partition, offset) with every optional field varied by offset: all present,
/// all absent, or some.
pub fn quote(partition: i32, offset: i64, ts: i64, units: i128) -> ArchivedQuote {
    let (bid, ask, exchange) = match offset.rem_euclid(3) {
        0 => (Some(Decimal6::from_units(units - 1)), Some(Decimal6::from_units(units + 1)), Some(format!("X{partition}N"))),
        1 => (None, None, None),
        _ => (Some(Decimal6::from_units(999_999_999_999_999_999)), None, Some(String::new())),
    };
    ArchivedQuote {
        record: Quote { symbol: format!("S{partition}"), ts, price: Decimal6::from_units(units), size: 100 + offset, bid, ask, exchange },
        pos: LogPosition { partition, offset },
    }
}

/// Rows in (partition, offset) order, for multiset comparisons.
pub fn sorted(mut rows: Vec<ArchivedQuote>) -> Vec<ArchivedQuote> {
    rows.sort_by_key(|r| (r.pos.partition, r.pos.offset));
    rows
}

/// What a reader sees: the rows of every visible file, in (partition, offset) order (a row
/// in two visible files appears twice).
pub async fn visible_rows(master: &MasterDataset) -> Vec<ArchivedQuote> {
    let mut rows = Vec::new();
    for f in master.list_files(TOPIC).await.expect("list") {
        rows.extend(master.read_file(&f).await.expect("read"));
    }
    sorted(rows)
}

/// Points the `AWS_*` settings at the test server (each test binary runs in its own process).
pub fn s3_env() -> String {
    let endpoint = std::env::var("PRISM_TEST_S3_ENDPOINT")
        .expect("PRISM_TEST_S3_ENDPOINT is not set: run ./infra/test.sh, which starts the S3 server");
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

/// The same dataset contract on a fresh local folder and a fresh S3 prefix (`tag` keeps tests
/// of one run apart). Without the S3 server this fails: it never skips.
pub fn backends(tag: &str) -> Vec<(&'static str, MasterDataset, tempfile::TempDir)> {
    s3_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let local = MasterDataset::open(&dir.path().join("master").display().to_string()).expect("local dataset");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let s3 = MasterDataset::open(&format!("s3://prism-test/{tag}-{}-{nanos}", std::process::id())).expect("s3 dataset");
    vec![("local", local, dir), ("s3", s3, tempfile::tempdir().expect("tempdir"))]
}

/// A Parquet file of the first schema (no bid, ask, exchange), as the first archiver wrote it.
pub fn first_schema_file(rows: &[ArchivedQuote]) -> Bytes {
    let schema = Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("price", DataType::Decimal128(18, 6), false),
        Field::new("size", DataType::Int64, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.record.symbol.as_str()))),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.record.ts)).with_timezone("UTC")),
        Arc::new(
            Decimal128Array::from_iter_values(rows.iter().map(|r| r.record.price.units()))
                .with_precision_and_scale(18, 6)
                .expect("decimal"),
        ),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.record.size))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.pos.partition))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.pos.offset))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).expect("writer");
    writer.write(&batch).expect("write");
    Bytes::from(writer.into_inner().expect("finish"))
}

/// Writes `rows` (of one partition, one hour) as a file of the previous layout and schema,
/// `quotes/date=YYYY-MM-DD/hour=HH/<topic>-<p>-<first>-<last>.parquet`; returns its location.
pub async fn put_hour_file(master: &MasterDataset, rows: &[ArchivedQuote]) -> ObjectPath {
    let first = rows.iter().map(|r| r.pos.offset).min().expect("rows");
    let last = rows.iter().map(|r| r.pos.offset).max().expect("rows");
    let t = chrono::DateTime::from_timestamp_millis(rows[0].record.ts).expect("ts");
    let path = ObjectPath::from(format!(
        "quotes/date={}/hour={}/{TOPIC}-{}-{first}-{last}.parquet",
        t.format("%Y-%m-%d"),
        t.format("%H"),
        rows[0].pos.partition
    ));
    master.location().put_atomic(&path, first_schema_file(rows)).await.expect("put hour file");
    path
}

/// Rows without the fields the first schema did not store.
pub fn without_extras(rows: &[ArchivedQuote]) -> Vec<ArchivedQuote> {
    rows.iter()
        .cloned()
        .map(|mut r| {
            (r.record.bid, r.record.ask, r.record.exchange) = (None, None, None);
            r
        })
        .collect()
}
