//! The one append path of every source (issue 9): validate → append (keyed, batched) → flush →
//! count → dead-letter with a reason.
//!
//! A source parses and validates its input itself (each has its own format), and puts what it
//! accepted and what it refused into one [`Batch`]. [`AppendPath::commit`] then appends the
//! accepted records to the source's topic and the refused ones to `prism.dlq` (each with its
//! source — `file:line`, `table@lsn`, the HTTP line — and its reason), waits until the log has
//! acknowledged them ([`EventLog::flush`]: on disk for the embedded log, acknowledged by the
//! brokers for Kafka), and counts both in `prism_ingest_events_appended_total{source}` and
//! `prism_ingest_events_dead_lettered_total{source}`.
//!
//! **Checkpoints.** A source writes its checkpoint (file position, LSN, poll cursor) only after
//! `commit` returned: everything the checkpoint covers is then in the log. A crash between the
//! two repeats the batch on restart (at-least-once), unless the source recovers its position
//! from the log itself: each record may carry [`SOURCE_HEADER`] (which source instance wrote it)
//! and [`POSITION_HEADER`] (the source position just after it), and [`recover_positions`] reads
//! them back from the log end offsets the checkpoint saved — the way the historical feed and
//! `ingest-logs` resume exactly where the log stands (exactly-once into the log).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prism_core::event::{DeadLetter, LogPosition, DLQ_TOPIC};
use prism_core::log::{EventLog, LogError, LogRecord, NewRecord};

/// Header naming the source instance that appended a record (e.g. `logs:<fingerprint>`).
pub const SOURCE_HEADER: &str = "prism.source";
/// Header carrying the source's position just after the record (a byte offset, an LSN, an
/// index), as decimal text.
pub const POSITION_HEADER: &str = "prism.source.position";

/// Records accepted and refused from one piece of a source's input, appended together.
#[derive(Debug, Default)]
pub struct Batch {
    records: Vec<NewRecord>,
    dead_letters: Vec<NewRecord>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// A batch of accepted records.
    pub fn of(records: Vec<NewRecord>) -> Batch {
        Batch { records, dead_letters: Vec::new() }
    }

    /// Adds an accepted record for the source's topic.
    pub fn push(&mut self, record: NewRecord) {
        self.records.push(record);
    }

    /// Adds a refused input for `prism.dlq`: `key` is the record key it would have had (or the
    /// source's name), `source` where it came from (`access.log:17`, `public.flights@0/16B3748`),
    /// `reason` why it was refused and `payload` the refused bytes (kept as lossy UTF-8).
    pub fn refuse(&mut self, key: impl Into<Vec<u8>>, source: String, reason: String, payload: &[u8]) {
        let letter = DeadLetter {
            source,
            reason,
            payload: String::from_utf8_lossy(payload).into_owned(),
            rejected_at_ms: prism_core::time::now_ms(),
        };
        self.dead_letters.push(letter.into_record(key));
    }

    /// Accepted records so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when nothing was accepted or refused.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.dead_letters.is_empty()
    }

    /// Refused inputs so far.
    pub fn refused(&self) -> usize {
        self.dead_letters.len()
    }
}

/// What a commit appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Each accepted record's log position, in the order pushed.
    pub positions: Vec<LogPosition>,
    /// How many inputs went to the dead-letter topic.
    pub dead_lettered: usize,
}

/// One source's way into the log.
pub struct AppendPath<L> {
    log: Arc<L>,
    source: &'static str,
}

impl<L> Clone for AppendPath<L> {
    fn clone(&self) -> Self {
        AppendPath { log: self.log.clone(), source: self.source }
    }
}

impl<L: EventLog> AppendPath<L> {
    /// The path of source `source` (the metric label: `http`, `feed`, `logs`, `cdc`, `poller`).
    pub fn new(log: Arc<L>, source: &'static str) -> Self {
        AppendPath { log, source }
    }

    /// The log.
    pub fn log(&self) -> &Arc<L> {
        &self.log
    }

    /// Appends `batch` (records to `topic`, refusals to `prism.dlq`) and waits until the log has
    /// acknowledged all of it; returns where each record landed.
    ///
    /// Errors: [`LogError`]; then part of the batch may have landed (the source's checkpoint
    /// must not move past it).
    pub async fn commit(&self, topic: &str, batch: Batch) -> Result<Committed, LogError> {
        let committed = self.append(topic, batch).await?;
        self.acknowledge().await?;
        Ok(committed)
    }

    /// Appends `batch` without waiting for the acknowledgement: for sources that append often
    /// and checkpoint seldom, which call [`AppendPath::acknowledge`] before each checkpoint.
    ///
    /// Errors: [`LogError`].
    pub async fn append(&self, topic: &str, batch: Batch) -> Result<Committed, LogError> {
        let Batch { records, dead_letters } = batch;
        let dead_lettered = dead_letters.len();
        if !dead_letters.is_empty() {
            self.log.append(DLQ_TOPIC, dead_letters).await?;
            metrics::counter!(crate::telemetry::EVENTS_DEAD_LETTERED_TOTAL, "source" => self.source).increment(dead_lettered as u64);
        }
        let positions = if records.is_empty() { Vec::new() } else { self.log.append(topic, records).await? };
        metrics::counter!(crate::telemetry::EVENTS_APPENDED_TOTAL, "source" => self.source).increment(positions.len() as u64);
        Ok(Committed { positions, dead_lettered })
    }

    /// Waits until everything appended so far is acknowledged by the log.
    ///
    /// Errors: [`LogError`].
    pub async fn acknowledge(&self) -> Result<(), LogError> {
        self.log.flush().await
    }
}

/// How long [`for_each_after`] waits for records it knows exist.
const RECOVERY_READ_WAIT: Duration = Duration::from_secs(10);

/// A record found by [`recover_positions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Its [`POSITION_HEADER`].
    pub position: String,
    /// Where it is in the log.
    pub at: LogPosition,
}

/// Calls `each` with every record of `topic` after `from` (log end offsets per partition, as
/// a checkpoint saved them; missing partitions from 0) up to the log end offsets now, in log
/// order per partition: how a source finds, after a crash, what it appended past its
/// checkpoint.
///
/// Errors: [`LogError`], also [`LogError::Refused`] when a record below a partition's end
/// offset is not readable within 10 s (taking "none arrived" for "none there" would append it
/// twice).
pub async fn for_each_after<L: EventLog>(log: &L, topic: &str, from: &[i64], mut each: impl FnMut(&LogRecord)) -> Result<(), LogError> {
    let ends = log.end_offsets(topic).await?;
    for (p, end) in ends.iter().enumerate() {
        let mut offset = from.get(p).copied().unwrap_or(0);
        while offset < *end {
            // Records below the end offset exist: wait for them (a Kafka consumer fetches them
            // after the call, so a zero wait could see none), but never forever.
            let records = log.read(topic, p as i32, offset, 10_000, RECOVERY_READ_WAIT).await?;
            let Some(last) = records.last() else {
                return Err(LogError::Refused(format!(
                    "{topic}/{p}: no record readable at offset {offset} below the end offset {end} within {RECOVERY_READ_WAIT:?}"
                )));
            };
            offset = last.offset + 1;
            records.iter().for_each(&mut each);
        }
    }
    Ok(())
}

/// Every record of `topic` after `from` (as [`for_each_after`]) whose [`SOURCE_HEADER`]
/// `wanted` accepts, with its [`POSITION_HEADER`], grouped by source, in log order per
/// partition.
///
/// Errors: as [`for_each_after`].
pub async fn recover_positions<L: EventLog>(
    log: &L,
    topic: &str,
    from: &[i64],
    wanted: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Vec<Recovered>>, LogError> {
    let mut found: HashMap<String, Vec<Recovered>> = HashMap::new();
    for_each_after(log, topic, from, |r| {
        let Some(source) = r.header(SOURCE_HEADER).and_then(|s| std::str::from_utf8(s).ok()) else { return };
        if !wanted(source) {
            return;
        }
        let Some(position) = r.header(POSITION_HEADER).and_then(|s| std::str::from_utf8(s).ok()) else { return };
        found
            .entry(source.to_string())
            .or_default()
            .push(Recovered { position: position.to_string(), at: LogPosition { partition: r.partition, offset: r.offset } });
    })
    .await?;
    Ok(found)
}
