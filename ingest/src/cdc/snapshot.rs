//! The initial snapshot: every published table read in the slot's exported snapshot, appended
//! as `op: "r"` envelopes; and the markers that tell a restart whether the slot's snapshot
//! finished.

use std::collections::HashSet;
use std::time::Duration;

use prism_core::log::{EventLog, NewRecord};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection, Row};
use tokio_util::sync::CancellationToken;

use super::envelope::{envelope, topic_of, Origin, TableShape};
use super::pg::{quote_ident, sql_error, table_shape};
use super::CdcError;
use crate::append::{AppendPath, Batch};
use crate::pgoutput::Column;
use crate::telemetry;

/// The topic of the snapshot markers: key = slot name, value
/// `{"slot", "state": "started" | "done", "lsn"}`; the last marker of a slot tells whether its
/// snapshot finished.
pub const SNAPSHOT_MARKERS_TOPIC: &str = "prism.cdc._snapshots";

/// Rows fetched and appended per batch.
const SNAPSHOT_CHUNK: usize = 5000;

/// Appends a marker for `slot` (and waits until the log acknowledged it).
pub async fn mark<L: EventLog>(path: &AppendPath<L>, slot: &str, state: &str, lsn: u64) -> Result<(), CdcError> {
    path.log().ensure_topic(SNAPSHOT_MARKERS_TOPIC, 1).await?;
    let value = json!({"slot": slot, "state": state, "lsn": lsn}).to_string();
    path.commit(SNAPSHOT_MARKERS_TOPIC, Batch::of(vec![NewRecord::new(slot, value)])).await?;
    Ok(())
}

/// True when the last marker of `slot` says its snapshot is done.
pub async fn snapshot_done<L: EventLog>(log: &L, slot: &str) -> Result<bool, CdcError> {
    log.ensure_topic(SNAPSHOT_MARKERS_TOPIC, 1).await?;
    let end = log.end_offsets(SNAPSHOT_MARKERS_TOPIC).await?.first().copied().unwrap_or(0);
    let (mut offset, mut done) = (0, false);
    while offset < end {
        let records = log.read(SNAPSHOT_MARKERS_TOPIC, 0, offset, 10_000, Duration::from_secs(10)).await?;
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        for r in records.iter().filter(|r| r.key == slot.as_bytes()) {
            let value: Value = serde_json::from_slice(&r.value).unwrap_or_default();
            done = value["state"] == "done";
        }
    }
    Ok(done)
}

/// What the snapshot reads with.
pub struct SnapshotRead<'a, L> {
    /// The append path.
    pub path: &'a AppendPath<L>,
    /// Database name (topics, `source.db`).
    pub db: &'a str,
    /// Partitions of new topics.
    pub partitions: i32,
    /// Topics already ensured.
    pub ensured: &'a mut HashSet<String>,
}

/// Reads `tables` in the exported snapshot `snapshot` and appends their rows as `r` envelopes
/// with `lsn` = the consistent point. Returns the rows appended, or `None` when `cancel` fired
/// first (the snapshot is then incomplete).
pub async fn read_snapshot<L: EventLog>(
    read: SnapshotRead<'_, L>,
    url: &str,
    snapshot: &str,
    consistent_point: u64,
    tables: &[(String, String)],
    cancel: &CancellationToken,
) -> Result<Option<u64>, CdcError> {
    let mut sql = super::pg::connect(url).await?;
    let mut tx = sql.begin().await.map_err(sql_error("beginning the snapshot transaction"))?;
    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await.map_err(sql_error("snapshot isolation"))?;
    tx.execute(format!("SET TRANSACTION SNAPSHOT '{}'", snapshot.replace('\'', "''")).as_str())
        .await
        .map_err(sql_error("importing the exported snapshot"))?;
    let started_ms = prism_core::time::now_ms();
    let mut rows_total = 0u64;
    for (schema, table) in tables {
        let shape = table_shape(&mut tx, schema, table).await?;
        if !shape.has_key() {
            return Err(CdcError::NoKey(format!("{schema}.{table}")));
        }
        let topic = topic_of(read.db, schema, table);
        if read.ensured.insert(topic.clone()) {
            read.path.log().ensure_topic(&topic, read.partitions).await?;
        }
        let columns: Vec<String> = shape.columns.iter().map(|c| format!("{}::text", quote_ident(&c.name))).collect();
        let select = format!(
            "DECLARE prism_cdc_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {}.{}",
            columns.join(", "),
            quote_ident(schema),
            quote_ident(table)
        );
        tx.execute(select.as_str()).await.map_err(sql_error("opening the snapshot cursor"))?;
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let rows = sqlx::query(&format!("FETCH {SNAPSHOT_CHUNK} FROM prism_cdc_snapshot"))
                .fetch_all(&mut *tx)
                .await
                .map_err(sql_error("reading the snapshot"))?;
            if rows.is_empty() {
                break;
            }
            let mut batch = Batch::new();
            for row in &rows {
                let values: Vec<Column> =
                    (0..shape.columns.len()).map(|i| row.get::<Option<String>, _>(i).map_or(Column::Null, Column::Text)).collect();
                let origin = Origin {
                    db: read.db,
                    lsn: consistent_point,
                    commit_lsn: consistent_point,
                    tx_id: None,
                    commit_ms: started_ms,
                    snapshot: true,
                };
                batch.push(NewRecord::new(shape.key(&values), envelope(&shape, origin, "r", Value::Null, shape.row(&values, false))));
            }
            read.path.commit(&topic, batch).await?;
            metrics::counter!(telemetry::CDC_CHANGES_TOTAL, "op" => "r").increment(rows.len() as u64);
            rows_total += rows.len() as u64;
        }
        tx.execute("CLOSE prism_cdc_snapshot").await.map_err(sql_error("closing the snapshot cursor"))?;
        tracing::info!(schema, table, rows_total, "ingest-cdc read a table's snapshot");
    }
    tx.commit().await.map_err(sql_error("ending the snapshot transaction"))?;
    Ok(Some(rows_total))
}

/// Shapes of `tables` (for a check before the snapshot).
pub async fn shapes(sql: &mut PgConnection, tables: &[(String, String)]) -> Result<Vec<TableShape>, CdcError> {
    let mut out = Vec::new();
    for (schema, table) in tables {
        out.push(table_shape(sql, schema, table).await?);
    }
    Ok(out)
}
