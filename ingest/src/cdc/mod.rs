//! The CDC source, `prism ingest-cdc` (issue 9): PostgreSQL logical replication (`pgoutput`,
//! PostgreSQL 15) → one topic per table, `prism.cdc.<db>.<schema>.<table>`, keyed by the primary
//! key as a JSON object (`{"id":7}`), valued by a Debezium-style envelope (DESIGN §3,
//! [`envelope`]).
//!
//! **Start.** The publication (`--cdc-publication`) is created when absent as
//! `FOR TABLES IN SCHEMA <--cdc-schemas>`; an existing one is used as it is. Every published
//! table needs a primary key or `REPLICA IDENTITY FULL` (then the whole row is the key): a
//! table without either stops the start with [`CdcError::NoKey`]; one that appears later (a new
//! table in a published schema) has its changes dead-lettered to `prism.dlq`
//! (`schema.table@lsn`).
//!
//! **Snapshot.** When the slot (`--cdc-slot`) is absent it is created with an exported snapshot;
//! every published table is read in that snapshot and appended as `op: "r"` envelopes
//! (`before` null, `source.snapshot` true, `source.lsn` the slot's consistent point,
//! `source.txId` null, `source.ts_ms` the snapshot's start), then the slot is streamed from its
//! consistent point: nothing is lost or repeated between the two. Markers on
//! [`snapshot::SNAPSHOT_MARKERS_TOPIC`] (`started` before the slot is created, `done` after the
//! last row was acknowledged) record whether the slot's snapshot finished: a crash (or a cancel)
//! during the snapshot leaves the slot, and the next start drops and recreates it and takes the
//! snapshot again (snapshot rows may then repeat; the `changes` view dedups by (table, LSN,
//! key)). A slot without a `done` marker (e.g. a fresh log) is treated the same way.
//!
//! **Streaming.** A present slot is streamed from its confirmed position (the checkpoint). A
//! transaction's envelopes are buffered and appended at its commit (in chunks of at most
//! [`stream::MAX_BUFFERED`] for big ones); only after the log acknowledged all of them is the
//! commit's end LSN confirmed on the slot: at-least-once, nothing lost across `kill -9` (a
//! transaction appended but not confirmed comes again). Between transactions the keepalive's
//! position is confirmed too, so an idle slot pins no WAL. Rolled-back transactions never reach
//! `pgoutput`.
//!
//! **Operations.** insert → `c` (`before` null); update → `u` (`before` the old row under
//! `REPLICA IDENTITY FULL`, the old key columns under `DEFAULT` when the key changed, else
//! null); delete → `d` (`after` null, `before` the old key or row); truncate → one `t`
//! envelope per table, key `{}`, `before` and `after` null. The key is that of the new row (of
//! the old row for deletes): an update that changes the primary key is one `u` under the new
//! key, with the old key in `before`. `source.lsn` is the change's WAL position (the XLogData
//! `wal_start`), `source.ts_ms` the commit time, `ts_ms` the processing time.
//!
//! **Shutdown.** On cancel the source stops between transactions (inside one it waits up to
//! 2 s for the commit; without it the transaction is dropped and comes again), waits until the
//! last confirmed position was reported to the server, and ends the replication session cleanly
//! (`CopyDone`), releasing the slot.

pub mod envelope;
pub mod pg;
pub mod snapshot;
pub mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pgwire_replication::{Lsn, ReplicationClient};
use prism_core::event::DLQ_TOPIC;
use prism_core::log::{EventLog, LogError};
use tokio_util::sync::CancellationToken;

use crate::append::AppendPath;
use pg::PgUrl;
use snapshot::{mark, read_snapshot, snapshot_done, SnapshotRead};

/// The CDC source's flags (each with a `PRISM_*` environment fallback).
#[derive(Clone, clap::Args)]
pub struct CdcArgs {
    /// PostgreSQL to capture, postgres://user[:password]@host[:port]/db (a user with REPLICATION).
    #[arg(long, env = "PRISM_CDC_DATABASE_URL", hide_env_values = true)]
    pub cdc_database_url: Option<String>,
    /// Logical replication slot (lower-case letters, digits, underscores).
    #[arg(long, env = "PRISM_CDC_SLOT", default_value = "prism_cdc")]
    pub cdc_slot: String,
    /// Publication (created FOR TABLES IN SCHEMA --cdc-schemas when absent).
    #[arg(long, env = "PRISM_CDC_PUBLICATION", default_value = "prism_cdc")]
    pub cdc_publication: String,
    /// Schemas to capture (comma-separated), for a publication created here.
    #[arg(long, env = "PRISM_CDC_SCHEMAS", default_value = "public", value_delimiter = ',')]
    pub cdc_schemas: Vec<String>,
    /// Tables (`schema.table`, comma-separated) whose `changes` view keeps the current row per
    /// primary key, served at `/v1/changes/{table}/rows/{key}` (`prism up` registers a `changes`
    /// view for every published table).
    #[arg(long, env = "PRISM_CDC_KEEP_ROWS", value_delimiter = ',')]
    pub cdc_keep_rows: Vec<String>,
}

impl std::fmt::Debug for CdcArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdcArgs")
            .field("cdc_slot", &self.cdc_slot)
            .field("cdc_publication", &self.cdc_publication)
            .field("cdc_schemas", &self.cdc_schemas)
            .field("cdc_keep_rows", &self.cdc_keep_rows)
            .finish_non_exhaustive()
    }
}

impl Default for CdcArgs {
    /// No database (CDC off), slot and publication `prism_cdc`, schema `public`.
    fn default() -> Self {
        CdcArgs {
            cdc_database_url: None,
            cdc_slot: "prism_cdc".into(),
            cdc_publication: "prism_cdc".into(),
            cdc_schemas: vec!["public".into()],
            cdc_keep_rows: Vec::new(),
        }
    }
}

impl CdcArgs {
    /// The source's settings, creating topics with `partitions` partitions.
    ///
    /// Errors: [`CdcError::Config`] without a database URL, for a bad slot name or no schema.
    pub fn config(&self, partitions: i32) -> Result<CdcConfig, CdcError> {
        let database_url = self
            .cdc_database_url
            .clone()
            .ok_or_else(|| CdcError::Config("no database to capture: give --cdc-database-url (or PRISM_CDC_DATABASE_URL)".into()))?;
        let config = CdcConfig {
            database_url,
            slot: self.cdc_slot.trim().to_string(),
            publication: self.cdc_publication.trim().to_string(),
            schemas: self.cdc_schemas.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            partitions,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The `changes` view specs (`changes:<db>.<schema>.<table>[:rows]`, see
/// `prism_core::view::changes`) of every table `config`'s publication holds (created first when
/// absent), `:rows` for those in `keep_rows` (`schema.table`).
///
/// Errors: [`CdcError`] when PostgreSQL cannot be reached or refuses.
pub async fn changes_view_specs(config: &CdcConfig, keep_rows: &[String]) -> Result<Vec<String>, CdcError> {
    config.validate()?;
    let db = PgUrl::parse(&config.database_url)?.database;
    let mut sql = pg::connect(&config.database_url).await?;
    pg::ensure_publication(&mut sql, &config.publication, &config.schemas).await?;
    let tables = pg::published_tables(&mut sql, &config.publication).await?;
    Ok(tables
        .into_iter()
        .map(|(schema, table)| {
            let rows = keep_rows.iter().any(|k| k.trim() == format!("{schema}.{table}"));
            format!("changes:{db}.{schema}.{table}{}", if rows { ":rows" } else { "" })
        })
        .collect())
}

/// The CDC source's settings.
#[derive(Clone)]
pub struct CdcConfig {
    /// `postgres://user[:password]@host[:port]/db` (never logged).
    pub database_url: String,
    /// Replication slot.
    pub slot: String,
    /// Publication.
    pub publication: String,
    /// Schemas of a publication created here.
    pub schemas: Vec<String>,
    /// Partitions of the topics the source creates.
    pub partitions: i32,
}

impl std::fmt::Debug for CdcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdcConfig")
            .field("database", &PgUrl::parse(&self.database_url).ok())
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("schemas", &self.schemas)
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl CdcConfig {
    fn validate(&self) -> Result<(), CdcError> {
        PgUrl::parse(&self.database_url)?;
        let slot_ok = !self.slot.is_empty() && self.slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !slot_ok {
            return Err(CdcError::Config(format!("bad slot name {:?}: lower-case letters, digits and underscores only", self.slot)));
        }
        if self.publication.is_empty() || self.schemas.is_empty() {
            return Err(CdcError::Config("a publication and at least one schema are needed".into()));
        }
        Ok(())
    }
}

/// What one run of the source did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CdcStats {
    /// Snapshot rows appended (`op: "r"`).
    pub snapshot_rows: u64,
    /// Streamed changes appended (`c`, `u`, `d`, `t`).
    pub changes: u64,
    /// Streamed changes dead-lettered (tables without a key).
    pub dead_lettered: u64,
    /// Transactions committed (appended and confirmed).
    pub transactions: u64,
}

/// Errors that stop the source. Messages never hold the database URL or its password. The
/// caller may restart it: it resumes from the slot's confirmed position.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A bad setting.
    #[error("ingest-cdc: {0}")]
    Config(String),
    /// A SQL statement failed.
    #[error("ingest-cdc: PostgreSQL: {0}")]
    Postgres(String),
    /// The replication session failed.
    #[error("ingest-cdc: replication: {0}")]
    Replication(String),
    /// A `pgoutput` message could not be decoded or used.
    #[error("ingest-cdc: pgoutput: {0}")]
    Decode(String),
    /// Published tables without a primary key or `REPLICA IDENTITY FULL`.
    #[error("ingest-cdc: tables without a primary key or REPLICA IDENTITY FULL cannot be keyed: {0}")]
    NoKey(String),
}

fn replication_error(context: &'static str) -> impl Fn(pgwire_replication::PgWireError) -> CdcError {
    move |e| CdcError::Replication(format!("{context}: {e}"))
}

/// Captures the database of `config` into `log` until `cancel` fires (see the
/// [module docs](self)); returns what this run did.
///
/// Errors: [`CdcError::Config`], [`CdcError::NoKey`] at start; [`CdcError::Postgres`],
/// [`CdcError::Replication`], [`CdcError::Decode`] and [`CdcError::Log`] on the way.
pub async fn run_cdc<L: EventLog>(config: CdcConfig, log: Arc<L>, cancel: CancellationToken) -> Result<CdcStats, CdcError> {
    config.validate()?;
    let url = PgUrl::parse(&config.database_url)?;
    let mut sql = pg::connect(&config.database_url).await?;
    pg::ensure_publication(&mut sql, &config.publication, &config.schemas).await?;
    let tables = pg::published_tables(&mut sql, &config.publication).await?;
    let keyless: Vec<String> =
        snapshot::shapes(&mut sql, &tables).await?.iter().filter(|s| !s.has_key()).map(|s| format!("{}.{}", s.schema, s.table)).collect();
    if !keyless.is_empty() {
        return Err(CdcError::NoKey(keyless.join(", ")));
    }
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let path = AppendPath::new(log.clone(), "cdc");
    let mut stats = CdcStats::default();
    let mut ensured = HashSet::new();
    let slot_exists = pg::slot_active(&mut sql, &config.slot).await?.is_some();
    let need_snapshot = !slot_exists || !snapshot_done(&*log, &config.slot).await?;
    if slot_exists && need_snapshot {
        tracing::warn!(slot = config.slot, "ingest-cdc: the slot's snapshot did not finish; dropping the slot to take it again");
        pg::drop_slot(&mut sql, &config.slot).await?;
    } else if slot_exists {
        pg::wait_slot_inactive(&mut sql, &config.slot).await?;
    }
    let mut repl = ReplicationClient::connect_gated(url.replication(&config.slot, &config.publication))
        .await
        .map_err(replication_error("connecting the replication session"))?;
    if need_snapshot {
        mark(&path, &config.slot, "started", 0).await?;
        let created = repl
            .simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')", config.slot))
            .await
            .map_err(replication_error("creating the replication slot"))?;
        // slot_name, consistent_point, snapshot_name, output_plugin
        let field =
            |i: usize| created.first().and_then(|row| row.get(i)).and_then(|v| v.as_ref()).map(|v| String::from_utf8_lossy(v).into_owned());
        let (Some(point), Some(snapshot_name)) = (field(1), field(2)) else {
            return Err(CdcError::Replication("CREATE_REPLICATION_SLOT returned no consistent point or snapshot".into()));
        };
        let point = Lsn::parse(&point).map_err(|e| CdcError::Replication(format!("consistent point {point}: {e:?}")))?.as_u64();
        tracing::info!(
            slot = config.slot,
            consistent_point = point,
            tables = tables.len(),
            "ingest-cdc created the slot; reading the snapshot"
        );
        let read = SnapshotRead { path: &path, db: &url.database, partitions: config.partitions, ensured: &mut ensured };
        match read_snapshot(read, &config.database_url, &snapshot_name, point, &tables, &cancel).await {
            Ok(Some(rows)) => stats.snapshot_rows = rows,
            Ok(None) => {
                repl.abort();
                return Ok(stats);
            }
            Err(e) => {
                repl.abort();
                return Err(e);
            }
        }
        mark(&path, &config.slot, "done", point).await?;
        tracing::info!(slot = config.slot, rows = stats.snapshot_rows, "ingest-cdc finished the snapshot");
    }
    repl.start().await.map_err(replication_error("starting replication"))?;
    tracing::info!(slot = config.slot, publication = config.publication, "ingest-cdc streaming");
    let mut streamer = stream::Streamer {
        path: &path,
        sql,
        db: url.database.clone(),
        partitions: config.partitions,
        ensured,
        relations: HashMap::new(),
        stats,
        confirmed: 0,
    };
    let watcher = tokio::spawn(watch_slot_lag(config.database_url.clone(), config.slot.clone(), cancel.child_token()));
    let result = streamer.run(&mut repl, &cancel).await;
    watcher.abort();
    if result.is_ok() {
        streamer.report_confirmed(&repl).await;
    }
    let shutdown = repl.shutdown().await;
    let stats = streamer.stats;
    result?;
    shutdown.map_err(replication_error("ending the replication session"))?;
    tracing::info!(snapshot_rows = stats.snapshot_rows, changes = stats.changes, transactions = stats.transactions, "ingest-cdc stopped");
    Ok(stats)
}

/// How often the slot's lag is measured.
const SLOT_LAG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets `prism_cdc_slot_lag_bytes` every [`SLOT_LAG_INTERVAL`]: the WAL the slot still holds
/// back, `pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)` (PostgreSQL docs,
/// "pg_replication_slots"). A failed look is logged at debug and tried again; it never stops the
/// source.
///
/// Also sets `prism_cdc_checkpoint_age_seconds`: how long the slot's confirmed flush LSN (the
/// source's checkpoint) has not moved, to this interval's resolution (an idle stream confirms
/// keepalives, so it grows only while confirming stalls).
async fn watch_slot_lag(url: String, slot: String, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(SLOT_LAG_INTERVAL);
    let mut sql = None;
    let mut checkpoint: Option<(String, std::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if sql.is_none() {
            sql = pg::connect(&url).await.ok();
        }
        let Some(connection) = sql.as_mut() else { continue };
        match pg::slot_lag_bytes(connection, &slot).await {
            Ok(Some((lag, confirmed))) => {
                metrics::gauge!(crate::telemetry::CDC_SLOT_LAG_BYTES).set(lag as f64);
                let since = match checkpoint.take() {
                    Some((lsn, since)) if lsn == confirmed => since,
                    _ => std::time::Instant::now(),
                };
                metrics::gauge!(crate::telemetry::CDC_CHECKPOINT_AGE_SECONDS).set(since.elapsed().as_secs_f64());
                checkpoint = Some((confirmed, since));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "could not measure the replication slot's lag");
                sql = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cdc: CdcArgs,
    }

    #[test]
    fn flags_become_the_config_and_hide_the_password() {
        let cli = Cli::parse_from(["prism", "--cdc-database-url", "postgres://u:s%40cret@db:6543/shop", "--cdc-schemas", "a, b"]);
        let config = cli.cdc.config(3).expect("config");
        assert_eq!((config.slot.as_str(), config.publication.as_str(), config.partitions), ("prism_cdc", "prism_cdc", 3));
        assert_eq!(config.schemas, ["a", "b"]);
        let url = PgUrl::parse(&config.database_url).expect("url");
        assert_eq!(
            (url.host.as_str(), url.port, url.user.as_str(), url.password.as_str(), url.database.as_str()),
            ("db", 6543, "u", "s@cret", "shop")
        );
        assert!(!format!("{config:?} {:?}", cli.cdc).contains("cret"));
        assert!(matches!(Cli::parse_from(["prism"]).cdc.config(1), Err(CdcError::Config(_))));
        let bad = Cli::parse_from(["prism", "--cdc-database-url", "postgres://u:pw@db/x", "--cdc-slot", "Bad-Slot"]).cdc.config(1);
        assert!(matches!(bad, Err(CdcError::Config(ref m)) if !m.contains("pw")));
        assert!(matches!(PgUrl::parse("mysql://u:secret@h/d"), Err(CdcError::Config(ref m)) if !m.contains("secret")));
    }
}
