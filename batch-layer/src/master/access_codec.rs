//! The Parquet format of an access-log file of the master dataset (`access_logs/date=…/`): every
//! field of [`AccessEvent`] plus its log position (zstd).
//!
//! | column | Arrow type | null |
//! |---|---|---|
//! | `ts` | Timestamp(ms, "UTC") — event time | no |
//! | `host` | Utf8 — client | no |
//! | `ident`, `user`, `method`, `path`, `protocol` | Utf8 | yes |
//! | `status` | UInt16 | no |
//! | `bytes` | UInt64 — response body | no |
//! | `referer`, `user_agent` | Utf8 | yes |
//! | `duration_ms` | UInt64 | yes |
//! | `source_file` | Utf8 | yes |
//! | `line` | UInt64 | yes |
//! | `partition` | Int32 | no |
//! | `offset` | Int64 | no |

use std::sync::Arc;

use arrow::array::{Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray, UInt16Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use prism_core::event::{AccessEvent, EventError, LogPosition};

use super::record::{arc, for_each_batch, required, write_parquet, Archived, MasterRecord};
use super::MasterError;

/// The optional text columns, in schema order.
const TEXT: [&str; 8] = ["ident", "user", "method", "path", "protocol", "referer", "user_agent", "source_file"];

/// The Arrow schema of an access-log file.
pub fn access_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("host", DataType::Utf8, false),
        text("ident"),
        text("user"),
        text("method"),
        text("path"),
        text("protocol"),
        Field::new("status", DataType::UInt16, false),
        Field::new("bytes", DataType::UInt64, false),
        text("referer"),
        text("user_agent"),
        Field::new("duration_ms", DataType::UInt64, true),
        text("source_file"),
        Field::new("line", DataType::UInt64, true),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]))
}

/// The optional text fields of `e`, in [`TEXT`] order.
fn texts(e: &AccessEvent) -> [&Option<String>; 8] {
    [&e.ident, &e.user, &e.method, &e.path, &e.protocol, &e.referer, &e.user_agent, &e.source_file]
}

impl MasterRecord for AccessEvent {
    fn from_log(_key: &[u8], value: &[u8]) -> Result<AccessEvent, EventError> {
        AccessEvent::from_json(value)
    }

    fn event_time(&self) -> i64 {
        self.ts
    }

    fn encode(rows: &[Archived<AccessEvent>], file: &str) -> Result<Vec<u8>, MasterError> {
        let text = |i: usize| arc(StringArray::from_iter(rows.iter().map(|r| texts(&r.record)[i].as_deref())));
        let columns = vec![
            arc(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.record.ts)).with_timezone("UTC")),
            arc(StringArray::from_iter_values(rows.iter().map(|r| r.record.host.as_str()))),
            text(0),
            text(1),
            text(2),
            text(3),
            text(4),
            arc(UInt16Array::from_iter_values(rows.iter().map(|r| r.record.status))),
            arc(UInt64Array::from_iter_values(rows.iter().map(|r| r.record.bytes))),
            text(5),
            text(6),
            arc(UInt64Array::from_iter(rows.iter().map(|r| r.record.duration_ms))),
            text(7),
            arc(UInt64Array::from_iter(rows.iter().map(|r| r.record.line))),
            arc(Int32Array::from_iter_values(rows.iter().map(|r| r.pos.partition))),
            arc(Int64Array::from_iter_values(rows.iter().map(|r| r.pos.offset))),
        ];
        write_parquet(access_schema(), columns, file)
    }

    fn for_each_row(bytes: Bytes, file: &str, f: &mut dyn FnMut(&AccessEvent, LogPosition)) -> Result<u64, MasterError> {
        for_each_batch(bytes, file, |batch| {
            let ts: &TimestampMillisecondArray = required(batch, "ts", file)?;
            let host: &StringArray = required(batch, "host", file)?;
            let status: &UInt16Array = required(batch, "status", file)?;
            let bytes: &UInt64Array = required(batch, "bytes", file)?;
            let duration: &UInt64Array = required(batch, "duration_ms", file)?;
            let line: &UInt64Array = required(batch, "line", file)?;
            let partition: &Int32Array = required(batch, "partition", file)?;
            let offset: &Int64Array = required(batch, "offset", file)?;
            let mut text_columns: Vec<&StringArray> = Vec::with_capacity(TEXT.len());
            for name in TEXT {
                text_columns.push(required(batch, name, file)?);
            }
            let opt_text = |i: usize, row: usize| text_columns[i].is_valid(row).then(|| text_columns[i].value(row).to_string());
            let opt_u64 = |c: &UInt64Array, row: usize| c.is_valid(row).then(|| c.value(row));
            for i in 0..batch.num_rows() {
                let event = AccessEvent {
                    ts: ts.value(i),
                    host: host.value(i).to_string(),
                    ident: opt_text(0, i),
                    user: opt_text(1, i),
                    method: opt_text(2, i),
                    path: opt_text(3, i),
                    protocol: opt_text(4, i),
                    status: status.value(i),
                    bytes: bytes.value(i),
                    referer: opt_text(5, i),
                    user_agent: opt_text(6, i),
                    duration_ms: opt_u64(duration, i),
                    source_file: opt_text(7, i),
                    line: opt_u64(line, i),
                };
                f(&event, LogPosition { partition: partition.value(i), offset: offset.value(i) });
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips() {
        let full = AccessEvent {
            ts: 1_700_000_000_123,
            host: "203.0.113.9".into(),
            ident: Some("-".into()),
            user: Some("frank".into()),
            method: Some("GET".into()),
            path: Some("/a b?c=d".into()),
            protocol: Some("HTTP/1.1".into()),
            status: 404,
            bytes: u64::MAX,
            referer: Some("https://example.org/".into()),
            user_agent: Some("curl/8".into()),
            duration_ms: Some(12),
            source_file: Some("access.log".into()),
            line: Some(7),
        };
        let bare = AccessEvent {
            ident: None,
            user: None,
            method: None,
            path: None,
            protocol: None,
            referer: None,
            user_agent: None,
            duration_ms: None,
            source_file: None,
            line: None,
            bytes: 0,
            ..full.clone()
        };
        let rows = vec![
            Archived { record: full, pos: LogPosition { partition: 1, offset: 5 } },
            Archived { record: bare, pos: LogPosition { partition: 1, offset: 6 } },
        ];
        let bytes = AccessEvent::encode(&rows, "t").expect("encode");
        let mut back = Vec::new();
        let n = AccessEvent::for_each_row(bytes.into(), "t", &mut |e, pos| back.push(Archived { record: e.clone(), pos })).expect("decode");
        assert_eq!((n, back), (2, rows));
        assert!(AccessEvent::for_each_row(Bytes::from_static(b"not parquet"), "t", &mut |_, _| {}).is_err());
    }
}
