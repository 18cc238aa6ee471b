//! Streaming from the slot: pgoutput messages → envelopes, appended per transaction, the slot
//! confirmed only past what the log acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use prism_core::log::{EventLog, NewRecord};
use serde_json::Value;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use super::envelope::{envelope, pg_micros_to_ms, topic_of, Origin, TableShape};
use super::pg::table_shape;
use super::{CdcError, CdcStats};
use crate::append::{AppendPath, Batch};
use crate::pgoutput::{decode, Column, Message, OldTuple, Relation};
use crate::telemetry;

/// Envelopes of one transaction buffered at most before they are appended (the rest of a big
/// transaction follows in further chunks; the slot is confirmed only at its commit).
pub const MAX_BUFFERED: usize = 5000;

/// How long a cancel inside a transaction waits for its commit before the transaction is
/// dropped (it comes again after a restart).
const COMMIT_WAIT_ON_STOP: std::time::Duration = std::time::Duration::from_secs(2);

/// The streaming state of one run.
pub struct Streamer<'a, L> {
    /// The append path.
    pub path: &'a AppendPath<L>,
    /// For table shapes (primary keys) when a relation shows up.
    pub sql: PgConnection,
    /// Database name.
    pub db: String,
    /// Partitions of new topics.
    pub partitions: i32,
    /// Topics already ensured.
    pub ensured: HashSet<String>,
    /// Relation OID → (pgoutput relation, shape with the primary key).
    pub relations: HashMap<u32, (Relation, TableShape)>,
    /// The run's counts.
    pub stats: CdcStats,
    /// The position last confirmed on the slot (0 before the first).
    pub confirmed: u64,
}

/// The transaction being received.
struct Tx {
    xid: u32,
    /// The commit record's LSN (`Begin`'s final LSN).
    commit_lsn: u64,
    commit_ms: i64,
    /// Envelopes by topic.
    buffered: BTreeMap<String, Batch>,
    len: usize,
}

impl<L: EventLog> Streamer<'_, L> {
    /// Streams until `cancel` fires (between transactions; inside one, once its commit is
    /// handled or after [`COMMIT_WAIT_ON_STOP`] without it — the transaction is then dropped and
    /// comes again after a restart) or the stream fails.
    pub async fn run(&mut self, repl: &mut ReplicationClient, cancel: &CancellationToken) -> Result<(), CdcError> {
        let mut tx: Option<Tx> = None;
        loop {
            // On cancel between transactions: stop. Inside one: wait a little for its commit.
            let stop = async {
                cancel.cancelled().await;
                if tx.is_some() {
                    tokio::time::sleep(COMMIT_WAIT_ON_STOP).await;
                }
            };
            let event = tokio::select! {
                biased;
                () = stop => return Ok(()),
                event = repl.recv() => event.map_err(|e| CdcError::Replication(e.to_string()))?,
            };
            let Some(event) = event else { return Err(CdcError::Replication("the server ended the replication stream".into())) };
            match event {
                ReplicationEvent::Begin { xid, commit_time_micros, final_lsn } => {
                    tx = Some(Tx {
                        xid,
                        commit_lsn: final_lsn.as_u64(),
                        commit_ms: pg_micros_to_ms(commit_time_micros),
                        buffered: BTreeMap::new(),
                        len: 0,
                    });
                }
                ReplicationEvent::XLogData { wal_start, data, .. } => {
                    let message = decode(&data).map_err(|e| CdcError::Decode(format!("at {wal_start}: {e}")))?;
                    self.on_message(message, wal_start.as_u64(), tx.as_mut()).await?;
                    if let Some(t) = tx.as_mut().filter(|t| t.len >= MAX_BUFFERED) {
                        self.flush(t).await?;
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    if let Some(mut t) = tx.take() {
                        self.flush(&mut t).await?;
                    }
                    self.stats.transactions += 1;
                    metrics::counter!(telemetry::CDC_TRANSACTIONS_TOTAL).increment(1);
                    self.confirm(repl, end_lsn);
                }
                // Between transactions everything up to the keepalive's position was sent (and
                // what was sent is committed): confirm it, as PostgreSQL's own apply worker does,
                // so that an idle slot (or one whose tables see no changes) pins no WAL.
                ReplicationEvent::KeepAlive { wal_end, .. } if tx.is_none() => {
                    self.confirm(repl, wal_end);
                }
                _ => {}
            }
        }
    }

    /// Confirms `lsn` on the slot when past the last confirmed position.
    fn confirm(&mut self, repl: &ReplicationClient, lsn: Lsn) {
        if lsn.as_u64() > self.confirmed {
            repl.update_applied_lsn(lsn);
            metrics::gauge!(telemetry::CDC_CONFIRMED_LSN).set(lsn.as_u64() as f64);
            self.confirmed = lsn.as_u64();
        }
    }

    /// Waits (up to 5 s) until the session has reported the last confirmed position to the
    /// server: the crate sends it at its status interval, and a stop (`CopyDone`) does not send
    /// it first.
    pub async fn report_confirmed(&self, repl: &ReplicationClient) {
        let metrics = repl.metrics();
        for _ in 0..100 {
            if metrics.last_applied_lsn().as_u64() >= self.confirmed || !repl.is_running() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::warn!(
            confirmed = self.confirmed,
            "ingest-cdc: the last confirmed position was not reported before the stop; it comes again"
        );
    }

    /// Appends the buffered envelopes (every topic) and waits for the log's acknowledgement.
    async fn flush(&mut self, tx: &mut Tx) -> Result<(), CdcError> {
        for (topic, batch) in std::mem::take(&mut tx.buffered) {
            if !self.ensured.contains(&topic) {
                self.path.log().ensure_topic(&topic, self.partitions).await?;
                self.ensured.insert(topic.clone());
            }
            let refused = batch.refused() as u64;
            let committed = self.path.append(&topic, batch).await?;
            self.stats.changes += committed.positions.len() as u64;
            self.stats.dead_lettered += refused;
        }
        self.path.acknowledge().await?;
        tx.len = 0;
        Ok(())
    }

    async fn on_message(&mut self, message: Message, lsn: u64, tx: Option<&mut Tx>) -> Result<(), CdcError> {
        if let Message::Relation(relation) = message {
            let shape = table_shape(&mut self.sql, &relation.namespace, &relation.name).await?;
            // The catalog may have moved on (a later ALTER); the stream's columns rule.
            let shape = reconcile(&relation, shape);
            self.relations.insert(relation.oid, (relation, shape));
            return Ok(());
        }
        let Some(tx) = tx else { return Ok(()) };
        let origin = |db| Origin { db, lsn, commit_lsn: tx.commit_lsn, tx_id: Some(tx.xid), commit_ms: tx.commit_ms, snapshot: false };
        let (rel, op, before, after): (u32, &'static str, Option<OldTuple>, Option<Vec<Column>>) = match message {
            Message::Insert { relation, new } => (relation, "c", None, Some(new)),
            Message::Update { relation, old, new } => (relation, "u", old, Some(new)),
            Message::Delete { relation, old } => (relation, "d", Some(old), None),
            Message::Truncate { relations, .. } => {
                for oid in relations {
                    let shape = self.shape(oid)?;
                    let topic = topic_of(&self.db, &shape.schema, &shape.table);
                    let value = envelope(&shape, origin(&self.db), "t", Value::Null, Value::Null);
                    tx.buffered.entry(topic).or_default().push(NewRecord::new("{}", value));
                    tx.len += 1;
                    metrics::counter!(telemetry::CDC_CHANGES_TOTAL, "op" => "t").increment(1);
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let shape = self.shape(rel)?;
        let topic = topic_of(&self.db, &shape.schema, &shape.table);
        let batch = tx.buffered.entry(topic).or_default();
        tx.len += 1;
        let before_json = match &before {
            None => Value::Null,
            Some(OldTuple::Key(values)) => shape.row(values, true),
            Some(OldTuple::Full(values)) => shape.row(values, false),
        };
        let after_json = after.as_ref().map_or(Value::Null, |v| shape.row(v, false));
        let key_of = after.as_deref().or(match &before {
            Some(OldTuple::Key(v) | OldTuple::Full(v)) => Some(v.as_slice()),
            None => None,
        });
        if !shape.has_key() {
            let source = format!("{}.{}@{lsn}", shape.schema, shape.table);
            let payload = after_json.to_string();
            batch.refuse(
                shape.table.clone(),
                source,
                "table has neither a primary key nor REPLICA IDENTITY FULL".into(),
                payload.as_bytes(),
            );
            return Ok(());
        }
        let key = shape.key(key_of.unwrap_or_default());
        batch.push(NewRecord::new(key, envelope(&shape, origin(&self.db), op, before_json, after_json)));
        metrics::counter!(telemetry::CDC_CHANGES_TOTAL, "op" => op).increment(1);
        Ok(())
    }

    fn shape(&self, oid: u32) -> Result<TableShape, CdcError> {
        self.relations
            .get(&oid)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| CdcError::Decode(format!("a change of relation {oid} before its Relation message")))
    }
}

/// The stream's columns (names, types) with the catalog's key flags; without a primary key,
/// the replica identity's columns when the identity is `FULL`.
fn reconcile(relation: &Relation, catalog: TableShape) -> TableShape {
    let pk: HashSet<&str> = catalog.columns.iter().filter(|c| c.key).map(|c| c.name.as_str()).collect();
    let columns = relation
        .columns
        .iter()
        .map(|c| super::envelope::TableColumn {
            name: c.name.clone(),
            type_oid: c.type_oid,
            key: if pk.is_empty() { relation.replica_identity == 'f' && c.key } else { pk.contains(c.name.as_str()) },
        })
        .collect();
    TableShape { schema: relation.namespace.clone(), table: relation.name.clone(), columns }
}
