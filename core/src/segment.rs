//! Batch-view segments (DESIGN §5): immutable Parquet files, one per view and time chunk,
//! holding that chunk's rows at every interval the view serves.
//!
//! Layout of a segment file (DuckDB, Spark and Trino read it as is):
//!
//! - columns: `interval_ms` Int64, the view's key column (`symbol` for `ohlcv`) Utf8,
//!   `window_start` Timestamp(ms, UTC), then the aggregate's columns
//!   ([`crate::view::columns`]: Int64, Decimal128(18,6) prices, Decimal128(38,6) sums of money,
//!   Timestamp(ms, UTC) instants, Utf8 text); LZ4 (Parquet's `LZ4_RAW`, the block format);
//! - rows sorted by (interval, key, window start), shortest interval first; row groups of at
//!   most [`ROW_GROUP_ROWS`] rows that never mix intervals, with Parquet's min/max statistics
//!   on `interval_ms`, the key and `window_start` (readers prune row groups by them);
//! - key-value metadata: `prism.view`, `prism.fingerprint`, `prism.chunk_start`,
//!   `prism.chunk_end`, `prism.covered_until` (UTC ms).
//!
//! Reads are ranged: the footer once (callers cache [`SegmentFile`]), then only the row groups
//! that can hold the asked interval, key and time range.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Decimal128Array, Decimal128Builder, Int64Array, Int64Builder, StringArray, StringBuilder, TimestampMillisecondArray,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, MetadataSuffixFetch, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::decimal::Decimal6;
use crate::objects::{ObjectError, ObjectLocation};
use crate::view::columns::{ColumnType, Value};
use crate::view::{View, ViewRow};

/// Errors of segment I/O.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The object store failed.
    #[error("segment {0}")]
    Object(#[from] ObjectError),
    /// The file is not a segment of the expected shape, or Parquet/Arrow refused the data.
    #[error("segment {path}: {reason}")]
    Format {
        /// The segment's path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Most rows in one row group: small enough that a query for one key decodes little more than
/// its own rows.
pub const ROW_GROUP_ROWS: usize = 8_192;

/// How much of a segment's end is read to find its footer: the footer of a year chunk of the lab
/// (64 row groups) is about 125 KB, so one read almost always holds it whole.
const FOOTER_HINT_BYTES: usize = 192 * 1024;

/// What a segment covers (stored in its footer, and in the version manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    /// The view's registered name.
    pub view: String,
    /// The view's definition fingerprint when the segment was built.
    pub fingerprint: String,
    /// Chunk start, UTC ms (inclusive).
    pub chunk_start_ms: i64,
    /// Chunk end, UTC ms (exclusive).
    pub chunk_end_ms: i64,
    /// Events with event time before this (≤ chunk end) are in the segment: min(chunk end, H).
    pub covered_until_ms: i64,
}

impl SegmentMeta {
    /// The metadata of `view`'s segment for `chunk`, built now under its current definition,
    /// holding events before `covered_until_ms` (≤ the chunk's end).
    pub fn for_chunk<V: View>(view: &V, chunk: &crate::chunk::Chunk, covered_until_ms: i64) -> SegmentMeta {
        SegmentMeta {
            view: view.name().to_string(),
            fingerprint: view.fingerprint(),
            chunk_start_ms: chunk.start_ms,
            chunk_end_ms: chunk.end_ms,
            covered_until_ms: covered_until_ms.min(chunk.end_ms),
        }
    }
}

/// Where the segment of `view` for `chunk` written by version `version` is stored, under the
/// storage root: `segments/<view>/<chunk label>/v<version>.parquet`. Version numbers are unique
/// per view (batch versions and Kappa hand-off manifests share one sequence), so a path is
/// written once.
pub fn segment_path(view: &str, chunk: &crate::chunk::Chunk, version: i64) -> ObjectPath {
    ObjectPath::from(format!("segments/{view}/{}/v{version}.parquet", chunk.label()))
}

/// The Arrow schema of `view`'s segments.
pub fn segment_schema<V: View>(view: &V) -> SchemaRef {
    let mut fields = vec![
        Field::new("interval_ms", DataType::Int64, false),
        Field::new(view.key_column(), DataType::Utf8, false),
        Field::new("window_start", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
    ];
    fields.extend(view.columns().iter().map(|c| Field::new(c.name, arrow_type(c.ty), false)));
    Arc::new(Schema::new(fields))
}

fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Int => DataType::Int64,
        ColumnType::Price => DataType::Decimal128(18, 6),
        ColumnType::Money => DataType::Decimal128(38, 6),
        ColumnType::Time => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ColumnType::Text => DataType::Utf8,
    }
}

enum ColumnBuilder {
    Int(Int64Builder),
    Decimal(Decimal128Builder, u8),
    Time(TimestampMillisecondBuilder),
    Text(StringBuilder),
}

impl ColumnBuilder {
    /// A builder for `rows` values (text: 16 bytes each to start with).
    fn with_capacity(ty: ColumnType, rows: usize) -> Self {
        match ty {
            ColumnType::Int => ColumnBuilder::Int(Int64Builder::with_capacity(rows)),
            ColumnType::Price => ColumnBuilder::Decimal(Decimal128Builder::with_capacity(rows), 18),
            ColumnType::Money => ColumnBuilder::Decimal(Decimal128Builder::with_capacity(rows), 38),
            ColumnType::Time => ColumnBuilder::Time(TimestampMillisecondBuilder::with_capacity(rows)),
            ColumnType::Text => ColumnBuilder::Text(StringBuilder::with_capacity(rows, rows * 16)),
        }
    }

    fn push(&mut self, value: &Value) -> Result<(), String> {
        match (self, value) {
            (ColumnBuilder::Int(b), Value::Int(v)) => b.append_value(*v),
            (ColumnBuilder::Decimal(b, _), Value::Price(v) | Value::Money(v)) => b.append_value(v.units()),
            (ColumnBuilder::Time(b), Value::Time(v)) => b.append_value(*v),
            (ColumnBuilder::Text(b), Value::Text(v)) => b.append_value(v),
            (_, v) => return Err(format!("value {v:?} does not match its column type")),
        }
        Ok(())
    }

    fn finish(self) -> Result<ArrayRef, String> {
        Ok(match self {
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(mut b, precision) => {
                Arc::new(b.finish().with_precision_and_scale(precision, 6).map_err(|e| e.to_string())?)
            }
            ColumnBuilder::Time(mut b) => Arc::new(b.finish().with_timezone("UTC")),
            ColumnBuilder::Text(mut b) => Arc::new(b.finish()),
        })
    }
}

/// Encodes one segment: `by_interval` holds, for each served interval (ms, ascending), that
/// interval's rows sorted by (key, window start).
///
/// Errors: [`SegmentError::Format`] when a value does not match its column or Parquet fails.
pub fn encode_segment<V: View>(view: &V, meta: &SegmentMeta, by_interval: &[(i64, Vec<ViewRow<V::Agg>>)]) -> Result<Vec<u8>, SegmentError> {
    let mut writer = SegmentWriter::new(view, meta)?;
    for (interval_ms, rows) in by_interval {
        writer.write_interval(*interval_ms, rows)?;
    }
    writer.finish()
}

/// Writes a segment one interval at a time (ascending intervals, each one's rows sorted by
/// (key, window start)), so that a builder can drop an interval's rows once written. The same
/// file as [`encode_segment`].
pub struct SegmentWriter<'v, V: View> {
    view: &'v V,
    meta: SegmentMeta,
    schema: SchemaRef,
    writer: ArrowWriter<Vec<u8>>,
    values: Vec<Value>,
}

impl<'v, V: View> SegmentWriter<'v, V> {
    /// A writer for `view`'s segment described by `meta`.
    ///
    /// Errors: [`SegmentError::Format`] when Parquet refuses the schema.
    pub fn new(view: &'v V, meta: &SegmentMeta) -> Result<Self, SegmentError> {
        let schema = segment_schema(view);
        // Dictionary encoding pays for the interval and key columns (few distinct values); the
        // aggregate's columns are mostly distinct, where building a dictionary only costs time.
        // Row-group (chunk) statistics are what readers prune by; page statistics are not kept.
        // LZ4 rather than zstd: Parquet's zstd codec builds a compression and a decompression
        // context per column chunk it reads, which made the first answer from a new version
        // (15 year segments of the lab) take 25-37 ms instead of 17-23 ms; the lab's segments are
        // 12 % larger for it (delta encoding has already taken most of the redundancy).
        let mut props = WriterProperties::builder()
            .set_compression(Compression::LZ4_RAW)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::Chunk);
        for dictionary in ["interval_ms", view.key_column()] {
            props = props.set_column_dictionary_enabled(ColumnPath::from(dictionary), true);
        }
        // 64-bit integers (times, offsets, counts and prices, which Parquet stores as INT64 at
        // precision 18) are delta-encoded: rows sorted by key and window start make the deltas
        // small, so there is less left to compress.
        let int64 = view.columns().iter().filter(|c| matches!(c.ty, ColumnType::Int | ColumnType::Time | ColumnType::Price));
        for column in int64.map(|c| c.name).chain(["window_start"]) {
            props = props.set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(|e| format_error(meta, e.to_string()))?;
        Ok(SegmentWriter { view, meta: meta.clone(), schema, writer, values: Vec::with_capacity(view.columns().len()) })
    }

    /// Appends the rows of `interval_ms`, a row group per [`ROW_GROUP_ROWS`] rows.
    ///
    /// Errors: [`SegmentError::Format`] when a value does not match its column or Parquet fails.
    pub fn write_interval(&mut self, interval_ms: i64, rows: &[ViewRow<V::Agg>]) -> Result<(), SegmentError> {
        let meta = &self.meta;
        let format_err = |reason: String| format_error(meta, reason);
        // One record batch per row group's worth of rows: the Arrow arrays of a whole year chunk
        // would hold another copy of its half a million rows.
        for rows in rows.chunks(ROW_GROUP_ROWS) {
            let mut interval = Int64Builder::with_capacity(rows.len());
            let mut keys = StringBuilder::with_capacity(rows.len(), rows.iter().map(|r| r.key.len()).sum());
            let mut starts = TimestampMillisecondBuilder::with_capacity(rows.len());
            let mut columns: Vec<ColumnBuilder> =
                self.view.columns().iter().map(|c| ColumnBuilder::with_capacity(c.ty, rows.len())).collect();
            for row in rows {
                interval.append_value(interval_ms);
                keys.append_value(&row.key);
                starts.append_value(row.window_start_ms);
                self.values.clear();
                self.view.encode(&row.agg, &mut self.values);
                if self.values.len() != columns.len() {
                    return Err(format_err(format!("the codec gave {} values for {} columns", self.values.len(), columns.len())));
                }
                for (b, v) in columns.iter_mut().zip(&self.values) {
                    b.push(v).map_err(&format_err)?;
                }
            }
            let mut arrays: Vec<ArrayRef> =
                vec![Arc::new(interval.finish()), Arc::new(keys.finish()), Arc::new(starts.finish().with_timezone("UTC"))];
            for b in columns {
                arrays.push(b.finish().map_err(&format_err)?);
            }
            let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| format_err(e.to_string()))?;
            self.writer.write(&batch).map_err(|e| format_err(e.to_string()))?;
            self.writer.flush().map_err(|e| format_err(e.to_string()))?;
        }
        Ok(())
    }

    /// Writes the footer (with the segment's metadata) and returns the file's bytes.
    ///
    /// Errors: [`SegmentError::Format`] when Parquet fails.
    pub fn finish(mut self) -> Result<Vec<u8>, SegmentError> {
        let m = &self.meta;
        for (k, v) in [
            ("prism.view", m.view.clone()),
            ("prism.fingerprint", m.fingerprint.clone()),
            ("prism.chunk_start", m.chunk_start_ms.to_string()),
            ("prism.chunk_end", m.chunk_end_ms.to_string()),
            ("prism.covered_until", m.covered_until_ms.to_string()),
        ] {
            self.writer.append_key_value_metadata(KeyValue::new(k.to_string(), v));
        }
        let meta = self.meta;
        self.writer.into_inner().map_err(|e| format_error(&meta, e.to_string()))
    }
}

fn format_error(meta: &SegmentMeta, reason: String) -> SegmentError {
    SegmentError::Format { path: format!("{}:{}", meta.view, meta.chunk_start_ms), reason }
}

/// What one row group holds, from its statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroupInfo {
    /// The interval of its rows, ms.
    pub interval_ms: i64,
    /// Smallest and largest key (bytes, possibly truncated to a bound by the writer).
    pub keys: (Vec<u8>, Vec<u8>),
    /// Smallest and largest window start, UTC ms.
    pub window_starts: (i64, i64),
    /// Rows.
    pub rows: usize,
}

impl RowGroupInfo {
    /// Whether the group can hold rows of `interval_ms` for `key` (any key when `None`) with
    /// window start in `[from_ms, to_ms)`.
    pub fn may_hold(&self, interval_ms: i64, key: Option<&str>, from_ms: i64, to_ms: i64) -> bool {
        self.interval_ms == interval_ms
            && key.is_none_or(|k| self.keys.0.as_slice() <= k.as_bytes() && k.as_bytes() <= self.keys.1.as_slice())
            && self.window_starts.0 < to_ms
            && self.window_starts.1 >= from_ms
    }
}

/// A segment's footer, read once and cached by readers.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    /// Its path under the storage root.
    pub path: ObjectPath,
    metadata: ArrowReaderMetadata,
    /// Its row groups, in file order.
    pub row_groups: Vec<RowGroupInfo>,
    /// What the segment covers.
    pub meta: SegmentMeta,
}

fn stat_i64(s: Option<&parquet::file::statistics::Statistics>) -> Option<(i64, i64)> {
    let s = s?;
    let le = |b: &[u8]| b.try_into().ok().map(i64::from_le_bytes);
    Some((le(s.min_bytes_opt()?)?, le(s.max_bytes_opt()?)?))
}

impl SegmentFile {
    /// Reads the footer of the segment at `path`.
    ///
    /// Errors: [`SegmentError`] when it cannot be read or is not a segment (its statistics and
    /// metadata missing).
    pub async fn open(location: &ObjectLocation, path: &ObjectPath) -> Result<SegmentFile, SegmentError> {
        let format_err = |reason: String| SegmentError::Format { path: path.to_string(), reason };
        // One ranged read of the file's end: the footer and its length (no size lookup first).
        let mut reader = RangeReader { location: location.clone(), path: path.clone() };
        let metadata = ArrowReaderMetadata::load_async(&mut reader, Default::default()).await.map_err(|e| parquet_error(path, e))?;
        let kv: HashMap<String, String> = metadata
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kvs| kvs.iter().filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?))).collect())
            .unwrap_or_default();
        let get = |k: &str| kv.get(k).cloned().ok_or_else(|| format_err(format!("no {k} in its metadata")));
        let int = |k: &str| get(k)?.parse::<i64>().map_err(|e| format_err(format!("{k}: {e}")));
        let mut row_groups = Vec::new();
        for rg in metadata.metadata().row_groups() {
            let missing = || format_err("a row group lacks the statistics of interval_ms, the key or window_start".into());
            if rg.num_columns() < 3 {
                return Err(missing());
            }
            let (interval_min, interval_max) = stat_i64(rg.column(0).statistics()).ok_or_else(missing)?;
            if interval_min != interval_max {
                return Err(format_err("a row group mixes intervals".into()));
            }
            let key_stats = rg.column(1).statistics().ok_or_else(missing)?;
            let keys = (key_stats.min_bytes_opt().ok_or_else(missing)?.to_vec(), key_stats.max_bytes_opt().ok_or_else(missing)?.to_vec());
            let window_starts = stat_i64(rg.column(2).statistics()).ok_or_else(missing)?;
            row_groups.push(RowGroupInfo { interval_ms: interval_min, keys, window_starts, rows: rg.num_rows() as usize });
        }
        let meta = SegmentMeta {
            view: get("prism.view")?,
            fingerprint: get("prism.fingerprint")?,
            chunk_start_ms: int("prism.chunk_start")?,
            chunk_end_ms: int("prism.chunk_end")?,
            covered_until_ms: int("prism.covered_until")?,
        };
        Ok(SegmentFile { path: path.clone(), metadata, row_groups, meta })
    }

    /// Reads every row of row group `index` (sorted by key, window start).
    ///
    /// Errors: [`SegmentError`] when the file cannot be read or its columns are not `view`'s.
    pub async fn read_row_group<V: View>(
        &self,
        location: &ObjectLocation,
        view: &V,
        index: usize,
    ) -> Result<Vec<ViewRow<V::Agg>>, SegmentError> {
        let format_err = |reason: String| SegmentError::Format { path: self.path.to_string(), reason };
        if index >= self.row_groups.len() {
            return Err(format_err(format!("no row group {index}")));
        }
        // The reader fetches the group's column chunks in one request (`get_byte_ranges`).
        let reader = RangeReader { location: location.clone(), path: self.path.clone() };
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.metadata.clone())
            .with_row_groups(vec![index])
            .with_batch_size(ROW_GROUP_ROWS)
            .build()
            .map_err(|e| format_err(e.to_string()))?;
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| parquet_error(&self.path, e))?;
        let mut out = Vec::with_capacity(self.row_groups[index].rows);
        for batch in &batches {
            decode_batch(view, batch, &mut out).map_err(format_err)?;
        }
        Ok(out)
    }

    /// Reads the rows at `interval_ms` for `key` (every key when `None`) with window start in
    /// `[from_ms, to_ms)`, sorted by (key, window start), decoding only the row groups that can
    /// hold them.
    ///
    /// Errors: as [`SegmentFile::read_row_group`].
    pub async fn read_rows<V: View>(
        &self,
        location: &ObjectLocation,
        view: &V,
        interval_ms: i64,
        key: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ViewRow<V::Agg>>, SegmentError> {
        let mut out = Vec::new();
        for (i, rg) in self.row_groups.iter().enumerate() {
            if rg.may_hold(interval_ms, key, from_ms, to_ms) {
                let rows = self.read_row_group(location, view, i).await?;
                out.extend(
                    rows.into_iter()
                        .filter(|r| key.is_none_or(|k| r.key == k) && r.window_start_ms >= from_ms && r.window_start_ms < to_ms),
                );
            }
        }
        Ok(out)
    }
}

/// Parquet's async reader over ranged reads of one object: a row group's column chunks in one
/// request (`get_ranges`: one file open locally, coalesced ranges on S3), the footer by one read
/// of the file's end.
struct RangeReader {
    location: ObjectLocation,
    path: ObjectPath,
}

fn store_error(e: ObjectError) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for RangeReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.location.get_range(&self.path, range).await.map_err(store_error) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<std::ops::Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.location.get_ranges(&self.path, &ranges).await.map_err(store_error) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_HINT_BYTES))
                .load_via_suffix_and_finish(self)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut RangeReader {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.location.get_suffix(&self.path, suffix as u64).await.map_err(store_error) }.boxed()
    }
}

/// A [`SegmentError`] from a Parquet read: the object store's own error when the store failed
/// (so callers can tell an unreachable store from a bad file), a format error otherwise.
fn parquet_error(path: &ObjectPath, e: ParquetError) -> SegmentError {
    match e {
        ParquetError::External(source) => match source.downcast::<ObjectError>() {
            Ok(store) => SegmentError::Object(*store),
            Err(other) => SegmentError::Format { path: path.to_string(), reason: other.to_string() },
        },
        other => SegmentError::Format { path: path.to_string(), reason: other.to_string() },
    }
}

/// Decodes a segment record batch into rows.
fn decode_batch<V: View>(view: &V, batch: &RecordBatch, out: &mut Vec<ViewRow<V::Agg>>) -> Result<(), String> {
    let col = |i: usize| batch.columns().get(i).ok_or_else(|| format!("column {i} missing"));
    let keys = col(1)?.as_any().downcast_ref::<StringArray>().ok_or("the key column is not Utf8")?;
    let starts = col(2)?.as_any().downcast_ref::<TimestampMillisecondArray>().ok_or("window_start is not Timestamp(ms)")?;
    let readers: Vec<ColumnReader<'_>> = view
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| ColumnReader::new(c.ty, col(3 + i)?.as_ref()).ok_or_else(|| format!("column {} has the wrong type", c.name)))
        .collect::<Result<_, String>>()?;
    let mut values = Vec::with_capacity(readers.len());
    for row in 0..batch.num_rows() {
        values.clear();
        values.extend(readers.iter().map(|r| r.value(row)));
        let agg = view.decode(&values).map_err(|e| e.to_string())?;
        out.push(ViewRow { key: keys.value(row).to_string(), window_start_ms: starts.value(row), agg });
    }
    Ok(())
}

enum ColumnReader<'a> {
    Int(&'a Int64Array),
    Price(&'a Decimal128Array),
    Money(&'a Decimal128Array),
    Time(&'a TimestampMillisecondArray),
    Text(&'a StringArray),
}

impl<'a> ColumnReader<'a> {
    fn new(ty: ColumnType, array: &'a dyn Array) -> Option<Self> {
        let any = array.as_any();
        Some(match ty {
            ColumnType::Int => ColumnReader::Int(any.downcast_ref()?),
            ColumnType::Price => ColumnReader::Price(any.downcast_ref::<Decimal128Array>().filter(|a| a.scale() == 6)?),
            ColumnType::Money => ColumnReader::Money(any.downcast_ref::<Decimal128Array>().filter(|a| a.scale() == 6)?),
            ColumnType::Time => ColumnReader::Time(any.downcast_ref()?),
            ColumnType::Text => ColumnReader::Text(any.downcast_ref()?),
        })
    }

    fn value(&self, row: usize) -> Value {
        match self {
            ColumnReader::Int(a) => Value::Int(a.value(row)),
            ColumnReader::Price(a) => Value::Price(Decimal6::from_units(a.value(row))),
            ColumnReader::Money(a) => Value::Money(Decimal6::from_units(a.value(row))),
            ColumnReader::Time(a) => Value::Time(a.value(row)),
            ColumnReader::Text(a) => Value::Text(a.value(row).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LogPosition;
    use crate::view::ohlcv::{Ohlcv, OhlcvView};
    use crate::view::{roll_up, View};

    fn rows(view: &OhlcvView, keys: &[&str], minutes: i64) -> Vec<ViewRow<Ohlcv>> {
        let mut out = Vec::new();
        for (k, key) in keys.iter().enumerate() {
            for m in 0..minutes {
                let q = crate::event::Quote {
                    symbol: key.to_string(),
                    ts: m * 60_000 + 1,
                    price: Decimal6::from_units(1_000_000 + m as i128 * 7 + k as i128),
                    size: 1 + m,
                    bid: None,
                    ask: None,
                    exchange: None,
                };
                let agg = view.contribution(&q, LogPosition { partition: k as i32, offset: m });
                out.push(ViewRow { key: key.to_string(), window_start_ms: m * 60_000, agg });
            }
        }
        out
    }

    #[tokio::test]
    async fn round_trip_with_row_group_pruning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = ObjectLocation::local(dir.path()).expect("location");
        let view = OhlcvView::standard(5_000);
        // 3 keys × 10,000 minutes: several row groups per key at 1m.
        let base = rows(&view, &["AAA", "BBB", "CCC"], 10_000);
        let by_interval: Vec<(i64, Vec<ViewRow<Ohlcv>>)> =
            view.intervals_ms().iter().map(|i| (*i, if *i == 60_000 { base.clone() } else { roll_up(&base, *i) })).collect();
        let meta = SegmentMeta {
            view: "ohlcv".into(),
            fingerprint: view.fingerprint(),
            chunk_start_ms: 0,
            chunk_end_ms: 86_400_000 * 31,
            covered_until_ms: 86_400_000 * 31,
        };
        let bytes = encode_segment(&view, &meta, &by_interval).expect("encode");
        let path = ObjectPath::from("segments/ohlcv/x/v1.parquet");
        location.put_atomic(&path, bytes.into()).await.expect("put");
        let file = SegmentFile::open(&location, &path).await.expect("open");
        assert_eq!(file.meta, meta);
        assert!(file.row_groups.len() > 5, "1m rows span several row groups");
        for (interval, expected) in &by_interval {
            let all = file.read_rows(&location, &view, *interval, None, i64::MIN, i64::MAX).await.expect("read");
            assert_eq!(&all, expected, "interval {interval}");
        }
        // One key, one hour: only the row groups that can hold it are decoded, rows exact.
        let (from, to) = (5_000 * 60_000, 5_060 * 60_000);
        let bbb = file.read_rows(&location, &view, 60_000, Some("BBB"), from, to).await.expect("read");
        let want: Vec<_> = base.iter().filter(|r| r.key == "BBB" && r.window_start_ms >= from && r.window_start_ms < to).cloned().collect();
        assert_eq!(bbb, want);
        assert_eq!(bbb.len(), 60);
        let holding = file.row_groups.iter().filter(|g| g.may_hold(60_000, Some("BBB"), from, to)).count();
        assert!(holding <= 2, "pruned to the groups holding BBB's hour, got {holding}");
        assert!(file.read_rows(&location, &view, 60_000, Some("ZZZ"), from, to).await.expect("read").is_empty());
    }

    /// A missing segment is the object store's not-found (serving tells it from a bad file), and
    /// a file that is not Parquet is a format error naming it.
    #[tokio::test]
    async fn a_missing_segment_is_not_found_and_a_bad_one_a_format_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = ObjectLocation::local(dir.path()).expect("location");
        let missing = SegmentFile::open(&location, &ObjectPath::from("segments/ohlcv/x/v9.parquet")).await.expect_err("missing");
        assert!(matches!(&missing, SegmentError::Object(o) if o.is_not_found()), "{missing:?}");
        let bad = ObjectPath::from("segments/ohlcv/x/v1.parquet");
        location.put_atomic(&bad, Bytes::from_static(b"not a parquet file")).await.expect("put");
        let refused = SegmentFile::open(&location, &bad).await.expect_err("not parquet");
        assert!(matches!(&refused, SegmentError::Format { path, .. } if path == bad.as_ref()), "{refused:?}");
    }
}
