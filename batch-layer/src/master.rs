//! The master dataset: immutable Parquet files of every quote, Hive-partitioned by event date
//! and hour (DESIGN §5):
//!
//! `<root>/quotes/date=YYYY-MM-DD/hour=HH/<topic>-<partition>-<first offset>-<last offset>.parquet`
//!
//! Columns: `symbol` Utf8, `ts` Timestamp(ms, UTC), `price` Decimal128(18,6), `size` Int64,
//! `partition` Int32, `offset` Int64; zstd. Spark, Trino and DuckDB read the layout as is.
//! `<root>` is a local folder or an S3-compatible bucket/prefix ([`MasterDataset::open`]); every
//! file appears atomically (one PUT, or a local staging file renamed into place).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Decimal128Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use chrono::{DateTime, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use prism_core::decimal::Decimal6;
use prism_core::event::{LogPosition, Quote};

/// Errors of master-dataset I/O.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// A file or folder operation failed.
    #[error("master dataset I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The object store refused or failed a request (S3: network, credentials, bucket).
    #[error("master dataset {context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// What the object store said.
        #[source]
        source: object_store::Error,
    },
    /// The dataset location cannot be used.
    #[error("master dataset location {0}")]
    Location(String),
    /// Parquet or Arrow refused the data.
    #[error("master dataset file {file}: {reason}")]
    Format {
        /// The file.
        file: String,
        /// What Parquet/Arrow said.
        reason: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> MasterError {
    let context = context.into();
    move |source| MasterError::Io { context, source }
}

fn store_err(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> MasterError {
    let context = context.into();
    move |source| MasterError::Store { context, source }
}

/// One archived quote with its log position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedQuote {
    /// The quote (bid/ask/exchange are not archived by this version of the schema).
    pub quote: Quote,
    /// Where it was read from.
    pub pos: LogPosition,
}

/// The Arrow schema of a quotes file.
pub fn quotes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("price", DataType::Decimal128(18, 6), false),
        Field::new("size", DataType::Int64, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]))
}

/// The name parts of a committed quotes file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterFile {
    /// Location in the dataset (`quotes/date=…/hour=…/<name>.parquet`).
    pub location: ObjectPath,
    /// Log partition its rows came from.
    pub partition: i32,
    /// Smallest offset in the file.
    pub first_offset: i64,
    /// Largest offset in the file.
    pub last_offset: i64,
    /// Start of its hour partition, UTC ms.
    pub hour_start_ms: i64,
}

/// Hour partition start (UTC ms) of an event time.
pub fn hour_start(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(3_600_000) * 3_600_000
}

/// `quotes/date=YYYY-MM-DD/hour=HH` of an hour.
fn hour_prefix(hour_start_ms: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(hour_start_ms).unwrap_or_default();
    format!("{QUOTES_PREFIX}/date={}/hour={}", t.format("%Y-%m-%d"), t.format("%H"))
}

const QUOTES_PREFIX: &str = "quotes";

/// The master dataset's location: a local folder or an S3-compatible bucket (and prefix),
/// through the `object_store` crate. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MasterDataset {
    store: Arc<dyn ObjectStore>,
    /// The folder, when local: files are also fsynced there (object stores are durable on put).
    local_root: Option<PathBuf>,
    /// Where it is, for messages.
    url: String,
}

impl MasterDataset {
    /// Opens the dataset `spec` names:
    /// - a local path or `file:///path` (created if missing);
    /// - `s3://bucket[/prefix]`: credentials, region and endpoint come from the standard
    ///   `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    ///   `AWS_ENDPOINT` for S3-compatible servers such as MinIO, `AWS_ALLOW_HTTP=true` for
    ///   plain-HTTP endpoints); requests are path-style unless
    ///   `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    ///
    /// Errors: [`MasterError::Location`] for another scheme or a bad S3 configuration;
    /// [`MasterError::Io`] when the local folder cannot be created.
    pub fn open(spec: &str) -> Result<MasterDataset, MasterError> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(MasterError::Location(format!("{spec:?}: no bucket after s3://")));
            }
            // rustls needs a process-wide crypto provider; a second install is a harmless no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
            // A few quick retries, not the library's three minutes: a store that is down must
            // show as not ready, and the layer's supervisor retries with its own backoff.
            let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..RetryConfig::default() };
            let connect_timeout = AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout);
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
            if builder.get_config_value(&connect_timeout).is_none() {
                builder = builder.with_config(connect_timeout, "5s");
            }
            let s3 = builder
                .build()
                .map_err(|e| MasterError::Location(format!("{spec:?}: {e}")))?;
            let prefix = prefix.trim_matches('/');
            let store: Arc<dyn ObjectStore> =
                if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) };
            return Ok(MasterDataset { store, local_root: None, url: spec.to_string() });
        }
        if spec.contains("://") && !spec.starts_with("file://") {
            return Err(MasterError::Location(format!("{spec:?}: use a local path, file:///path or s3://bucket/prefix")));
        }
        MasterDataset::local(Path::new(spec.strip_prefix("file://").unwrap_or(spec)))
    }

    /// The dataset in local folder `root` (created if missing).
    ///
    /// Errors: [`MasterError::Io`], [`MasterError::Location`].
    pub fn local(root: &Path) -> Result<MasterDataset, MasterError> {
        std::fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        let fs = LocalFileSystem::new_with_prefix(root).map_err(|e| MasterError::Location(format!("{}: {e}", root.display())))?;
        Ok(MasterDataset { store: Arc::new(fs), local_root: Some(root.to_path_buf()), url: root.display().to_string() })
    }

    /// Where the dataset is (a folder or an `s3://` URL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks that the dataset answers (for `/readyz`): lists the quotes prefix.
    ///
    /// Errors: [`MasterError::Store`].
    pub async fn check(&self) -> Result<(), MasterError> {
        let prefix = ObjectPath::from(QUOTES_PREFIX);
        self.store.list_with_delimiter(Some(&prefix)).await.map(|_| ()).map_err(store_err(format!("{}: listing", self.url)))
    }

    /// Writes one file of rows (all from one partition and one hour) at its Hive location.
    /// The write is atomic: the object appears whole or not at all (a local file is written
    /// under a staging name, fsynced with its folder, then renamed). Returns its location.
    ///
    /// Errors: [`MasterError`].
    pub async fn write_file(&self, topic: &str, rows: Vec<ArchivedQuote>) -> Result<ObjectPath, MasterError> {
        let Some(first) = rows.first() else {
            return Err(MasterError::Format { file: self.url.clone(), reason: "no rows to write".into() });
        };
        let first_offset = rows.iter().map(|r| r.pos.offset).min().unwrap_or(0);
        let last_offset = rows.iter().map(|r| r.pos.offset).max().unwrap_or(0);
        let location = ObjectPath::from(format!(
            "{}/{topic}-{}-{first_offset}-{last_offset}.parquet",
            hour_prefix(hour_start(first.quote.ts)),
            first.pos.partition
        ));
        // Encoding (zstd) is CPU work: off the async threads.
        let at = location.clone();
        let bytes = tokio::task::spawn_blocking(move || encode(&rows, &at))
            .await
            .map_err(|e| MasterError::Format { file: location.to_string(), reason: format!("encoder task: {e}") })??;
        self.store.put(&location, PutPayload::from(bytes)).await.map_err(store_err(format!("writing {location}")))?;
        if let Some(root) = &self.local_root {
            // LocalFileSystem renames a finished staging file into place but does not fsync.
            let file = root.join(location.as_ref());
            tokio::task::spawn_blocking(move || sync_file_and_folder(&file))
                .await
                .map_err(|e| MasterError::Io { context: "fsync task".into(), source: std::io::Error::other(e.to_string()) })??;
        }
        Ok(location)
    }

    /// Lists the quotes files of `topic` (ignoring other objects), by hour, partition and offset.
    ///
    /// Errors: [`MasterError::Store`].
    pub async fn list_files(&self, topic: &str) -> Result<Vec<MasterFile>, MasterError> {
        let mut out = Vec::new();
        for meta in self.list_all().await? {
            if let Some(f) = parse_location(&meta.location, topic) {
                out.push(f);
            }
        }
        out.sort_by_key(|f| (f.hour_start_ms, f.partition, f.first_offset));
        Ok(out)
    }

    async fn list_all(&self) -> Result<Vec<ObjectMeta>, MasterError> {
        let prefix = ObjectPath::from(QUOTES_PREFIX);
        self.store.list(Some(&prefix)).try_collect().await.map_err(store_err(format!("{}: listing", self.url)))
    }

    /// Removes files whose rows were never committed (first offset at or past the committed
    /// next offset of their partition; the archiver writes them again) and `.tmp` leftovers of
    /// earlier versions. Returns how many objects were removed.
    ///
    /// Errors: [`MasterError::Store`].
    pub async fn remove_uncommitted(&self, topic: &str, committed_next: &[i64]) -> Result<usize, MasterError> {
        let mut removed = 0;
        for meta in self.list_all().await? {
            let uncommitted = match parse_location(&meta.location, topic) {
                Some(f) => f.first_offset >= committed_next.get(f.partition as usize).copied().unwrap_or(0),
                None => meta.location.as_ref().ends_with(".tmp"),
            };
            if uncommitted {
                self.store.delete(&meta.location).await.map_err(store_err(format!("removing {}", meta.location)))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Reads every row of a quotes file.
    ///
    /// Errors: [`MasterError::Store`] when it cannot be read, [`MasterError::Format`] when it is
    /// not a quotes file of this schema.
    pub async fn read_file(&self, file: &MasterFile) -> Result<Vec<ArchivedQuote>, MasterError> {
        let bytes = self
            .store
            .get(&file.location)
            .await
            .map_err(store_err(format!("reading {}", file.location)))?
            .bytes()
            .await
            .map_err(store_err(format!("reading {}", file.location)))?;
        decode(bytes, &file.location)
    }
}

fn sync_file_and_folder(file: &Path) -> Result<(), MasterError> {
    std::fs::File::open(file).and_then(|f| f.sync_all()).map_err(io(format!("syncing {}", file.display())))?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("syncing {}", dir.display())))?;
    }
    Ok(())
}

/// `quotes/date=YYYY-MM-DD/hour=HH/<topic>-<partition>-<first>-<last>.parquet` → its parts.
fn parse_location(location: &ObjectPath, topic: &str) -> Option<MasterFile> {
    let parts: Vec<String> = location.parts().map(|p| p.as_ref().to_string()).collect();
    let [quotes, date, hour, name] = parts.as_slice() else { return None };
    if quotes != QUOTES_PREFIX {
        return None;
    }
    let day = date.strip_prefix("date=")?;
    let h: u32 = hour.strip_prefix("hour=")?.parse().ok()?;
    let hour_start_ms = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?.and_hms_opt(h, 0, 0)?.and_utc().timestamp_millis();
    let (partition, first_offset, last_offset) = parse_name(name, topic)?;
    Some(MasterFile { location: location.clone(), partition, first_offset, last_offset, hour_start_ms })
}

fn parse_name(name: &str, topic: &str) -> Option<(i32, i64, i64)> {
    let rest = name.strip_prefix(topic)?.strip_prefix('-')?.strip_suffix(".parquet")?;
    let mut parts = rest.split('-');
    let p = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((p, first, last))
}

/// Encodes rows as one zstd Parquet file of [`quotes_schema`].
fn encode(rows: &[ArchivedQuote], location: &ObjectPath) -> Result<Vec<u8>, MasterError> {
    let format_err = |e: &dyn std::fmt::Display| MasterError::Format { file: location.to_string(), reason: e.to_string() };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.quote.symbol.as_str()))),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.quote.ts)).with_timezone("UTC")),
        Arc::new(
            Decimal128Array::from_iter_values(rows.iter().map(|r| r.quote.price.units()))
                .with_precision_and_scale(18, 6)
                .map_err(|e| format_err(&e))?,
        ),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.quote.size))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.pos.partition))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.pos.offset))),
    ];
    let batch = RecordBatch::try_new(quotes_schema(), columns).map_err(|e| format_err(&e))?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut writer = ArrowWriter::try_new(Vec::new(), quotes_schema(), Some(props)).map_err(|e| format_err(&e))?;
    writer.write(&batch).map_err(|e| format_err(&e))?;
    writer.into_inner().map_err(|e| format_err(&e))
}

/// Decodes a quotes file's rows.
fn decode(bytes: Bytes, location: &ObjectPath) -> Result<Vec<ArchivedQuote>, MasterError> {
    let format_err = |e: &dyn std::fmt::Display| MasterError::Format { file: location.to_string(), reason: e.to_string() };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| format_err(&e))?.build().map_err(|e| format_err(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format_err(&e))?;
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| format_err(&format!("no column {name}")));
        let symbol = col("symbol")?.as_any().downcast_ref::<StringArray>().ok_or_else(|| format_err(&"symbol is not Utf8"))?;
        let ts = col("ts")?.as_any().downcast_ref::<TimestampMillisecondArray>().ok_or_else(|| format_err(&"ts is not Timestamp(ms)"))?;
        let price = col("price")?.as_any().downcast_ref::<Decimal128Array>().ok_or_else(|| format_err(&"price is not Decimal128"))?;
        if price.scale() != 6 {
            return Err(format_err(&format!("price scale {} is not 6", price.scale())));
        }
        let size = col("size")?.as_any().downcast_ref::<Int64Array>().ok_or_else(|| format_err(&"size is not Int64"))?;
        let partition = col("partition")?.as_any().downcast_ref::<Int32Array>().ok_or_else(|| format_err(&"partition is not Int32"))?;
        let offset = col("offset")?.as_any().downcast_ref::<Int64Array>().ok_or_else(|| format_err(&"offset is not Int64"))?;
        for i in 0..batch.num_rows() {
            out.push(ArchivedQuote {
                quote: Quote {
                    symbol: symbol.value(i).to_string(),
                    ts: ts.value(i),
                    price: Decimal6::from_units(price.value(i)),
                    size: size.value(i),
                    bid: None,
                    ask: None,
                    exchange: None,
                },
                pos: LogPosition { partition: partition.value(i), offset: offset.value(i) },
            });
        }
    }
    Ok(out)
}
