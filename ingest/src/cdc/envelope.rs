//! Rows → the records of `prism.cdc.<db>.<schema>.<table>` (DESIGN §3): the key (the primary
//! key as a JSON object) and the Debezium-style envelope.

use prism_core::event::{CdcEnvelope, CdcSource};
use serde_json::{Map, Value};

use crate::cdc_value::to_json;
use crate::pgoutput::Column;

/// PostgreSQL's epoch (2000-01-01 UTC) in UTC ms since the Unix epoch.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// Microseconds since 2000-01-01 (PostgreSQL's timestamps) → UTC ms since the Unix epoch.
pub fn pg_micros_to_ms(us: i64) -> i64 {
    us / 1000 + PG_EPOCH_MS
}

/// The topic of a table.
pub fn topic_of(db: &str, schema: &str, table: &str) -> String {
    format!("prism.cdc.{db}.{schema}.{table}")
}

/// One column of a table as the envelope needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// Name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Part of the record key.
    pub key: bool,
}

/// A table's shape: where its records go and which columns make the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// Schema.
    pub schema: String,
    /// Name.
    pub table: String,
    /// Columns in order.
    pub columns: Vec<TableColumn>,
}

impl TableShape {
    /// True when some column is part of the key (a table without one cannot be keyed).
    pub fn has_key(&self) -> bool {
        self.columns.iter().any(|c| c.key)
    }

    /// The row as a JSON object (`None` columns — unchanged TOAST — left out); with
    /// `key_only`, only the key columns.
    pub fn row(&self, values: &[Column], key_only: bool) -> Value {
        let mut map = Map::new();
        for (column, value) in self.columns.iter().zip(values) {
            if key_only && !column.key {
                continue;
            }
            if let Some(v) = to_json(column.type_oid, value) {
                map.insert(column.name.clone(), v);
            }
        }
        Value::Object(map)
    }

    /// The record key of a row: its key columns as a JSON object.
    pub fn key(&self, values: &[Column]) -> Vec<u8> {
        self.row(values, true).to_string().into_bytes()
    }
}

/// Where a change came from (`source` of the envelope).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Database name.
    pub db: &'a str,
    /// The change's LSN (the snapshot's consistent point for snapshot rows).
    pub lsn: u64,
    /// The transaction's commit LSN (the consistent point for snapshot rows).
    pub commit_lsn: u64,
    /// Transaction id (none for snapshot rows).
    pub tx_id: Option<u32>,
    /// Commit time, UTC ms (the snapshot's time for snapshot rows).
    pub commit_ms: i64,
    /// A snapshot row.
    pub snapshot: bool,
}

/// The envelope of one change.
pub fn envelope(shape: &TableShape, origin: Origin<'_>, op: &str, before: Value, after: Value) -> Vec<u8> {
    let object = |v: Value| match v {
        Value::Object(m) => Some(m),
        _ => None,
    };
    let envelope = CdcEnvelope {
        before: object(before),
        after: object(after),
        source: CdcSource {
            connector: "postgresql".into(),
            db: origin.db.to_string(),
            schema: shape.schema.clone(),
            table: shape.table.clone(),
            lsn: origin.lsn,
            commit_lsn: Some(origin.commit_lsn),
            tx_id: origin.tx_id,
            ts_ms: origin.commit_ms,
            snapshot: origin.snapshot,
        },
        op: op.to_string(),
        ts_ms: prism_core::time::now_ms(),
    };
    // Strings, numbers and JSON maps always serialize.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shape() -> TableShape {
        let col = |name: &str, type_oid, key| TableColumn { name: name.into(), type_oid, key };
        TableShape {
            schema: "s".into(),
            table: "t".into(),
            columns: vec![col("id", 23, true), col("note", 25, false), col("big", 25, false)],
        }
    }

    #[test]
    fn keys_rows_and_envelopes() {
        let values = [Column::Text("7".into()), Column::Null, Column::UnchangedToast];
        let s = shape();
        assert_eq!(s.key(&values), br#"{"id":7}"#);
        assert_eq!(s.row(&values, false), json!({"id": 7, "note": null}));
        let origin = Origin { db: "d", lsn: 42, commit_lsn: 50, tx_id: Some(9), commit_ms: 5, snapshot: false };
        let env: Value = serde_json::from_slice(&envelope(&s, origin, "c", Value::Null, s.row(&values, false))).expect("json");
        assert_eq!(
            env["source"],
            json!({"connector": "postgresql", "db": "d", "schema": "s", "table": "t", "lsn": 42, "commit_lsn": 50, "txId": 9, "ts_ms": 5, "snapshot": false})
        );
        assert_eq!((env["op"].clone(), env["before"].clone()), (json!("c"), Value::Null));
        assert_eq!(topic_of("d", "s", "t"), "prism.cdc.d.s.t");
        assert_eq!(pg_micros_to_ms(0), 946_684_800_000);
    }
}
