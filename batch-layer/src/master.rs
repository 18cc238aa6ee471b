//! The master dataset: immutable Parquet files of every quote, Hive-partitioned by event date
//! and hour (DESIGN §5):
//!
//! `<root>/quotes/date=YYYY-MM-DD/hour=HH/<topic>-<partition>-<first offset>-<last offset>.parquet`
//!
//! Columns: `symbol` Utf8, `ts` Timestamp(ms, UTC), `price` Decimal128(18,6), `size` Int64,
//! `partition` Int32, `offset` Int64; zstd. Spark, Trino and DuckDB read the layout as is.
//! A file is written under a `.tmp` name, synced, then renamed into place.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Decimal128Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
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
    /// Full path.
    pub path: PathBuf,
    /// Log partition its rows came from.
    pub partition: i32,
    /// Smallest offset in the file.
    pub first_offset: i64,
    /// Largest offset in the file.
    pub last_offset: i64,
    /// Start of its hour partition, UTC ms.
    pub hour_start_ms: i64,
}

/// `<root>/quotes`.
pub fn quotes_dir(root: &Path) -> PathBuf {
    root.join("quotes")
}

/// Hour partition start (UTC ms) of an event time.
pub fn hour_start(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(3_600_000) * 3_600_000
}

fn hour_dir(root: &Path, hour_start_ms: i64) -> PathBuf {
    let t = DateTime::<Utc>::from_timestamp_millis(hour_start_ms).unwrap_or_default();
    quotes_dir(root).join(format!("date={}", t.format("%Y-%m-%d"))).join(format!("hour={}", t.format("%H")))
}

/// Writes one file of rows (all from one partition and one hour) and renames it into place.
/// Returns its final path. Errors: [`MasterError`].
pub fn write_file(root: &Path, topic: &str, rows: &[ArchivedQuote]) -> Result<PathBuf, MasterError> {
    let (Some(first), Some(_)) = (rows.first(), rows.last()) else {
        return Err(MasterError::Format { file: root.display().to_string(), reason: "no rows to write".into() });
    };
    let first_offset = rows.iter().map(|r| r.pos.offset).min().unwrap_or(0);
    let last_offset = rows.iter().map(|r| r.pos.offset).max().unwrap_or(0);
    let dir = hour_dir(root, hour_start(first.quote.ts));
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let name = format!("{topic}-{}-{first_offset}-{last_offset}.parquet", first.pos.partition);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let format_err = |e: &dyn std::fmt::Display| MasterError::Format { file: path.display().to_string(), reason: e.to_string() };

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
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let file = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let mut writer = ArrowWriter::try_new(file, quotes_schema(), Some(props)).map_err(|e| format_err(&e))?;
    writer.write(&batch).map_err(|e| format_err(&e))?;
    let file = writer.into_inner().map_err(|e| format_err(&e))?;
    file.sync_all().map_err(io(format!("syncing {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io(format!("renaming {}", tmp.display())))?;
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io(format!("syncing {}", dir.display())))?;
    Ok(path)
}

/// Lists the quotes files under `root` (skipping `.tmp` leftovers), with their name parts.
pub fn list_files(root: &Path, topic: &str) -> Result<Vec<MasterFile>, MasterError> {
    let mut out = Vec::new();
    let dir = quotes_dir(root);
    if !dir.exists() {
        return Ok(out);
    }
    for date in fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))? {
        let date = date.map_err(io("listing dates"))?;
        let Some(day) = date.file_name().to_str().and_then(|n| n.strip_prefix("date=")).map(str::to_string) else { continue };
        for hour in fs::read_dir(date.path()).map_err(io(format!("listing {}", date.path().display())))? {
            let hour = hour.map_err(io("listing hours"))?;
            let Some(h) = hour.file_name().to_str().and_then(|n| n.strip_prefix("hour=")).and_then(|h| h.parse::<u32>().ok()) else { continue };
            let Some(hour_start_ms) = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(h, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
            else {
                continue;
            };
            for f in fs::read_dir(hour.path()).map_err(io(format!("listing {}", hour.path().display())))? {
                let f = f.map_err(io("listing files"))?;
                if let Some(parsed) = parse_name(&f.file_name().to_string_lossy(), topic) {
                    out.push(MasterFile { path: f.path(), partition: parsed.0, first_offset: parsed.1, last_offset: parsed.2, hour_start_ms });
                }
            }
        }
    }
    out.sort_by_key(|f| (f.hour_start_ms, f.partition, f.first_offset));
    Ok(out)
}

/// Removes `.tmp` leftovers and files whose rows were never committed (first offset at or past
/// the committed next offset of their partition): the archiver writes them again.
pub fn remove_uncommitted(root: &Path, topic: &str, committed_next: &[i64]) -> Result<usize, MasterError> {
    let mut removed = 0;
    for f in list_files(root, topic)? {
        let next = committed_next.get(f.partition as usize).copied().unwrap_or(0);
        if f.first_offset >= next {
            fs::remove_file(&f.path).map_err(io(format!("removing {}", f.path.display())))?;
            removed += 1;
        }
    }
    let dir = quotes_dir(root);
    if dir.exists() {
        for tmp in walk_tmp(&dir) {
            fs::remove_file(&tmp).map_err(io(format!("removing {}", tmp.display())))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn walk_tmp(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_tmp(&p));
        } else if p.extension().is_some_and(|x| x == "tmp") {
            out.push(p);
        }
    }
    out
}

fn parse_name(name: &str, topic: &str) -> Option<(i32, i64, i64)> {
    let rest = name.strip_prefix(topic)?.strip_prefix('-')?.strip_suffix(".parquet")?;
    let mut parts = rest.split('-');
    let p = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((p, first, last))
}

/// Reads every row of a quotes file. Errors: [`MasterError`].
pub fn read_file(path: &Path) -> Result<Vec<ArchivedQuote>, MasterError> {
    let format_err = |e: &dyn std::fmt::Display| MasterError::Format { file: path.display().to_string(), reason: e.to_string() };
    let file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format_err(&e))?.build().map_err(|e| format_err(&e))?;
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
