//! Change-data-capture envelopes on `prism.cdc.<db>.<schema>.<table>` (DESIGN §3), written by
//! `prism ingest-cdc`: Debezium's envelope shape (Debezium documentation, "PostgreSQL connector:
//! data change events").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Prefix of every CDC topic: `prism.cdc.<db>.<schema>.<table>`.
pub const CDC_TOPIC_PREFIX: &str = "prism.cdc.";

/// One row change (value JSON; key = the row's primary key as a JSON object, `{"id":7}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CdcEnvelope {
    /// The row before the change: the whole old row under `REPLICA IDENTITY FULL`, the old key
    /// columns when a key changed under `DEFAULT`, for deletes the old key or row; else null.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Map<String, Value>>,
    /// The row after the change (null for deletes and truncates). Column values: numbers,
    /// booleans, JSON values and arrays as such; `numeric` as an exact string; `timestamptz` as
    /// RFC 3339 UTC; other types as their text. An unchanged TOASTed value is left out.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Map<String, Value>>,
    /// Where the change came from.
    pub source: CdcSource,
    /// `c` insert, `u` update, `d` delete, `r` snapshot read, `t` truncate.
    pub op: String,
    /// When the change was processed, UTC ms.
    pub ts_ms: i64,
}

/// The `source` block of a [`CdcEnvelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CdcSource {
    /// Always `postgresql`.
    pub connector: String,
    /// Database.
    pub db: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// The change's WAL position (LSN as a number); for snapshot rows the slot's consistent
    /// point.
    pub lsn: u64,
    /// The LSN of the transaction's commit record (pgoutput `Begin`'s final LSN); for snapshot
    /// rows the consistent point. With `lsn` it orders changes: (commit LSN, LSN) grows strictly
    /// per row (DESIGN §4). Absent in envelopes written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_lsn: Option<u64>,
    /// Transaction id; null for snapshot rows.
    #[serde(rename = "txId")]
    pub tx_id: Option<u32>,
    /// Commit time (the event time), UTC ms; for snapshot rows the snapshot's start.
    pub ts_ms: i64,
    /// True for snapshot rows (`op: "r"`).
    pub snapshot: bool,
}
