//! What the master dataset stores per topic: [`MasterRecord`], one implementation per event
//! type (quotes, access-log lines, CDC changes), each with its own typed Parquet schema — the
//! dataset is lossless and readable as is by DuckDB, Spark or Trino (DESIGN §3).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use prism_core::event::{EventError, LogPosition, Quote};

use super::{codec, MasterError};

/// One archived event with its log position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived<R> {
    /// The event, every field.
    pub record: R,
    /// Where it was read from.
    pub pos: LogPosition,
}

/// An event type the master dataset archives: how a log record becomes one, its event time
/// (files are split by its UTC day), and its Parquet codec.
pub trait MasterRecord: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Parses a log record (`key`, `value`) as the topic's producer wrote it.
    ///
    /// Errors: [`EventError`] for a record the views dead-letter too (the archiver skips and
    /// counts it).
    fn from_log(key: &[u8], value: &[u8]) -> Result<Self, EventError>;
    /// Event time, UTC ms.
    fn event_time(&self) -> i64;
    /// Encodes rows (in the given order) as one zstd Parquet file.
    ///
    /// Errors: [`MasterError::Format`] naming `file` when a value does not fit its column.
    fn encode(rows: &[Archived<Self>], file: &str) -> Result<Vec<u8>, MasterError>;
    /// Calls `f` with every row of a file, in file order; returns the number of rows.
    ///
    /// Errors: [`MasterError::Format`] naming `file` when it is not Parquet of this schema.
    fn for_each_row(bytes: Bytes, file: &str, f: &mut dyn FnMut(&Self, LogPosition)) -> Result<u64, MasterError>;
}

impl MasterRecord for Quote {
    fn from_log(_key: &[u8], value: &[u8]) -> Result<Quote, EventError> {
        Quote::from_json(value)
    }

    fn event_time(&self) -> i64 {
        self.ts
    }

    fn encode(rows: &[Archived<Quote>], file: &str) -> Result<Vec<u8>, MasterError> {
        codec::encode(rows, file)
    }

    fn for_each_row(bytes: Bytes, file: &str, f: &mut dyn FnMut(&Quote, LogPosition)) -> Result<u64, MasterError> {
        codec::for_each_row(bytes, file, f)
    }
}

/// A `MasterError::Format` for `file`.
pub(crate) fn format_err(file: &str) -> impl Fn(&dyn std::fmt::Display) -> MasterError + '_ {
    move |e| MasterError::Format { file: file.to_string(), reason: e.to_string() }
}

/// Writes `columns` (of `schema`) as one Parquet file, LZ4-compressed (`LZ4_RAW`).
///
/// LZ4 rather than zstd: a batch run decodes thousands of small files, and Parquet's zstd codec
/// builds a compression and a decompression context for every column chunk it reads. On the lab
/// a full rebuild took 5.2-6.0 s with zstd and 4.0-4.8 s with LZ4; the files are 40 % larger.
///
/// Errors: [`MasterError::Format`] naming `file` when the columns do not match the schema.
pub(crate) fn write_parquet(schema: SchemaRef, columns: Vec<ArrayRef>, file: &str) -> Result<Vec<u8>, MasterError> {
    let err = format_err(file);
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| err(&e))?;
    let props = WriterProperties::builder().set_compression(Compression::LZ4_RAW).build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| err(&e))?;
    writer.write(&batch).map_err(|e| err(&e))?;
    writer.into_inner().map_err(|e| err(&e))
}

/// Rows decoded per Arrow record batch.
pub(crate) const DECODE_BATCH_ROWS: usize = 8192;

/// Calls `f` with each record batch of a Parquet file.
///
/// Errors: [`MasterError::Format`] naming `file` when it is not Parquet, or what `f` returns.
pub(crate) fn for_each_batch(
    bytes: Bytes,
    file: &str,
    mut f: impl FnMut(&RecordBatch) -> Result<(), MasterError>,
) -> Result<u64, MasterError> {
    let err = format_err(file);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| err(&e))?
        .with_batch_size(DECODE_BATCH_ROWS)
        .build()
        .map_err(|e| err(&e))?;
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        f(&batch)?;
        rows += batch.num_rows() as u64;
    }
    Ok(rows)
}

/// The column `name` of `batch` as `T`; `None` when absent (only for optional columns).
///
/// Errors: [`MasterError::Format`] when it has another type.
pub(crate) fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, file: &str) -> Result<Option<&'a T>, MasterError> {
    let Some(col) = batch.column_by_name(name) else { return Ok(None) };
    col.as_any()
        .downcast_ref::<T>()
        .map(Some)
        .ok_or_else(|| format_err(file)(&format!("column {name} has type {}, not the dataset schema's", col.data_type())))
}

/// The column `name` of `batch` as `T`.
///
/// Errors: [`MasterError::Format`] when it is absent or has another type.
pub(crate) fn required<'a, T: 'static>(batch: &'a RecordBatch, name: &str, file: &str) -> Result<&'a T, MasterError> {
    column(batch, name, file)?.ok_or_else(|| format_err(file)(&format!("no column {name}")))
}

/// An `Arc`ed array, for column lists.
pub(crate) fn arc<A: Array + 'static>(a: A) -> ArrayRef {
    Arc::new(a)
}

/// The event type of a topic's records, for code that takes a topic name and must pick the
/// [`MasterRecord`] implementation ([`with_record!`](crate::with_record)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `prism.quotes`: [`Quote`].
    Quotes,
    /// `prism.access_logs`: [`prism_core::event::AccessEvent`].
    AccessLogs,
    /// `prism.cdc.<db>.<schema>.<table>`: [`super::CdcRecord`].
    Cdc,
}

impl RecordKind {
    /// The kind of `topic`'s records; `None` for a topic the master dataset does not archive.
    pub fn of(topic: &str) -> Option<RecordKind> {
        match topic {
            prism_core::event::QUOTES_TOPIC => Some(RecordKind::Quotes),
            prism_core::event::ACCESS_LOGS_TOPIC => Some(RecordKind::AccessLogs),
            t if t.starts_with(prism_core::event::CDC_TOPIC_PREFIX) => Some(RecordKind::Cdc),
            _ => None,
        }
    }
}

/// Runs `$body` with the type alias `$r` bound to the [`MasterRecord`] of `$kind` (a
/// [`RecordKind`]), expanding the body once per record type.
#[macro_export]
macro_rules! with_record {
    ($kind:expr, $r:ident => $body:expr) => {
        match $kind {
            $crate::master::record::RecordKind::Quotes => {
                type $r = prism_core::event::Quote;
                $body
            }
            $crate::master::record::RecordKind::AccessLogs => {
                type $r = prism_core::event::AccessEvent;
                $body
            }
            $crate::master::record::RecordKind::Cdc => {
                type $r = $crate::master::CdcRecord;
                $body
            }
        }
    };
}
