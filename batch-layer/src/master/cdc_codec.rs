//! The Parquet format of a CDC file of the master dataset (`cdc.<db>.<schema>.<table>/date=…/`):
//! every field of a [`CdcEnvelope`] and its record key, plus the log position (zstd). The rows
//! themselves (`before`, `after`) are JSON text: their columns differ per table and change with
//! `ALTER TABLE`; DuckDB reads them with `json_extract`.
//!
//! | column | Arrow type | null |
//! |---|---|---|
//! | `key` | Utf8 — the primary key as JSON | no |
//! | `op` | Utf8 — `c`, `u`, `d`, `r`, `t` | no |
//! | `before`, `after` | Utf8 — JSON objects | yes |
//! | `db`, `schema`, `table` | Utf8 | no |
//! | `lsn` | UInt64 | no |
//! | `commit_lsn` | UInt64 | yes |
//! | `tx_id` | UInt32 | yes |
//! | `commit_ts` | Timestamp(ms, "UTC") — `source.ts_ms`, the event time | no |
//! | `snapshot` | Boolean | no |
//! | `processed_at` | Timestamp(ms, "UTC") — the envelope's `ts_ms` | no |
//! | `partition` | Int32 | no |
//! | `offset` | Int64 | no |

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use prism_core::event::{CdcEnvelope, CdcSource, EventError, LogPosition};
use serde_json::{Map, Value};

use super::record::{arc, for_each_batch, format_err, required, write_parquet, Archived, MasterRecord};
use super::MasterError;

/// One change as the log holds it: the record key and the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct CdcRecord {
    /// The record key: the primary key as JSON (`{}` for a truncate).
    pub key: String,
    /// The envelope.
    pub envelope: CdcEnvelope,
}

/// The Arrow schema of a CDC file.
pub fn cdc_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
        Field::new("before", DataType::Utf8, true),
        Field::new("after", DataType::Utf8, true),
        Field::new("db", DataType::Utf8, false),
        Field::new("schema", DataType::Utf8, false),
        Field::new("table", DataType::Utf8, false),
        Field::new("lsn", DataType::UInt64, false),
        Field::new("commit_lsn", DataType::UInt64, true),
        Field::new("tx_id", DataType::UInt32, true),
        Field::new("commit_ts", ts(), false),
        Field::new("snapshot", DataType::Boolean, false),
        Field::new("processed_at", ts(), false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]))
}

fn json_text(row: &Option<Map<String, Value>>) -> Option<String> {
    row.as_ref().map(|m| Value::Object(m.clone()).to_string())
}

impl MasterRecord for CdcRecord {
    fn from_log(key: &[u8], value: &[u8]) -> Result<CdcRecord, EventError> {
        let envelope: CdcEnvelope = serde_json::from_slice(value).map_err(|e| EventError::Malformed(e.to_string()))?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| EventError::Malformed("the record key is not UTF-8".into()))?;
        Ok(CdcRecord { key, envelope })
    }

    fn event_time(&self) -> i64 {
        self.envelope.source.ts_ms
    }

    fn encode(rows: &[Archived<CdcRecord>], file: &str) -> Result<Vec<u8>, MasterError> {
        fn e(r: &Archived<CdcRecord>) -> &CdcEnvelope {
            &r.record.envelope
        }
        let text = |f: fn(&CdcEnvelope) -> &str| arc(StringArray::from_iter_values(rows.iter().map(|r| f(e(r)))));
        let columns = vec![
            arc(StringArray::from_iter_values(rows.iter().map(|r| r.record.key.as_str()))),
            text(|e| &e.op),
            arc(StringArray::from_iter(rows.iter().map(|r| json_text(&e(r).before)))),
            arc(StringArray::from_iter(rows.iter().map(|r| json_text(&e(r).after)))),
            text(|e| &e.source.db),
            text(|e| &e.source.schema),
            text(|e| &e.source.table),
            arc(UInt64Array::from_iter_values(rows.iter().map(|r| e(r).source.lsn))),
            arc(UInt64Array::from_iter(rows.iter().map(|r| e(r).source.commit_lsn))),
            arc(UInt32Array::from_iter(rows.iter().map(|r| e(r).source.tx_id))),
            arc(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| e(r).source.ts_ms)).with_timezone("UTC")),
            arc(BooleanArray::from_iter(rows.iter().map(|r| Some(e(r).source.snapshot)))),
            arc(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| e(r).ts_ms)).with_timezone("UTC")),
            arc(Int32Array::from_iter_values(rows.iter().map(|r| r.pos.partition))),
            arc(Int64Array::from_iter_values(rows.iter().map(|r| r.pos.offset))),
        ];
        write_parquet(cdc_schema(), columns, file)
    }

    fn for_each_row(bytes: Bytes, file: &str, f: &mut dyn FnMut(&CdcRecord, LogPosition)) -> Result<u64, MasterError> {
        let err = format_err(file);
        for_each_batch(bytes, file, |batch| {
            let s = |name: &str| required::<StringArray>(batch, name, file);
            let (key, op, before, after, db, schema, table) =
                (s("key")?, s("op")?, s("before")?, s("after")?, s("db")?, s("schema")?, s("table")?);
            let lsn: &UInt64Array = required(batch, "lsn", file)?;
            let commit_lsn: &UInt64Array = required(batch, "commit_lsn", file)?;
            let tx_id: &UInt32Array = required(batch, "tx_id", file)?;
            let commit_ts: &TimestampMillisecondArray = required(batch, "commit_ts", file)?;
            let snapshot: &BooleanArray = required(batch, "snapshot", file)?;
            let processed: &TimestampMillisecondArray = required(batch, "processed_at", file)?;
            let partition: &Int32Array = required(batch, "partition", file)?;
            let offset: &Int64Array = required(batch, "offset", file)?;
            let object = |c: &StringArray, i: usize| -> Result<Option<Map<String, Value>>, MasterError> {
                if !c.is_valid(i) {
                    return Ok(None);
                }
                match serde_json::from_str(c.value(i)) {
                    Ok(Value::Object(m)) => Ok(Some(m)),
                    _ => Err(err(&format!("row {i}: before/after is not a JSON object"))),
                }
            };
            for i in 0..batch.num_rows() {
                let envelope = CdcEnvelope {
                    before: object(before, i)?,
                    after: object(after, i)?,
                    source: CdcSource {
                        connector: "postgresql".into(),
                        db: db.value(i).to_string(),
                        schema: schema.value(i).to_string(),
                        table: table.value(i).to_string(),
                        lsn: lsn.value(i),
                        commit_lsn: commit_lsn.is_valid(i).then(|| commit_lsn.value(i)),
                        tx_id: tx_id.is_valid(i).then(|| tx_id.value(i)),
                        ts_ms: commit_ts.value(i),
                        snapshot: snapshot.value(i),
                    },
                    op: op.value(i).to_string(),
                    ts_ms: processed.value(i),
                };
                let record = CdcRecord { key: key.value(i).to_string(), envelope };
                f(&record, LogPosition { partition: partition.value(i), offset: offset.value(i) });
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
        let change = br#"{"before":{"id":1},"after":{"id":2,"n":"1.50","tags":["a"],"j":{"k":null}},"source":{"connector":"postgresql","db":"lab","schema":"public","table":"t","lsn":100,"commit_lsn":120,"txId":7,"ts_ms":1700000000000,"snapshot":false},"op":"u","ts_ms":1700000000500}"#;
        let snapshot = br#"{"before":null,"after":{"id":3},"source":{"connector":"postgresql","db":"lab","schema":"public","table":"t","lsn":90,"txId":null,"ts_ms":1699999999000,"snapshot":true},"op":"r","ts_ms":1}"#;
        let rows = vec![
            Archived { record: CdcRecord::from_log(br#"{"id":2}"#, change).expect("change"), pos: LogPosition { partition: 0, offset: 4 } },
            Archived {
                record: CdcRecord::from_log(br#"{"id":3}"#, snapshot).expect("snapshot"),
                pos: LogPosition { partition: 0, offset: 5 },
            },
        ];
        assert_eq!(rows[0].record.event_time(), 1_700_000_000_000);
        let bytes = CdcRecord::encode(&rows, "t").expect("encode");
        let mut back = Vec::new();
        CdcRecord::for_each_row(bytes.into(), "t", &mut |r, pos| back.push(Archived { record: r.clone(), pos })).expect("decode");
        assert_eq!(back, rows);
        assert!(CdcRecord::from_log(b"{}", b"{\"op\":\"c\"}").is_err());
        assert!(CdcRecord::from_log(&[0xff], change).is_err());
    }
}
