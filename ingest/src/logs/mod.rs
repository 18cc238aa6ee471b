//! The log-file source, `prism ingest-logs` (issue 9): tails access-log files matching glob
//! patterns through rotation ([`crate::tail`]), parses each complete line
//! ([`crate::access_log`]) and appends it to `prism.access_logs` (keyed by the client host), or
//! sends it to `prism.dlq` with `file:line` and the reason.
//!
//! **Checkpoints** follow Vector's `file` source: per file identity (the CRC-32C fingerprint of
//! its first line), the byte offset after the last line the log acknowledged, saved atomically
//! as JSON at [`LogsConfig::checkpoint_path`] together with the log end offsets of
//! `prism.access_logs` at the save. A line is checkpointed only after the append that carried
//! it returned (the log acknowledged it); the checkpoint is saved at most every 200 ms while
//! busy, whenever the tailer goes idle, and at shutdown.
//!
//! **Delivery.** Into `prism.access_logs`: exactly once across crashes, for lines whose file
//! still exists when the tailer restarts. Every record carries the headers [`SOURCE_HEADER`]
//! `logs:<fingerprint, 8 hex digits>` and [`POSITION_HEADER`] `<end byte>:<line number>`; on
//! start the tailer reads the log from the checkpoint's end offsets and moves each file's
//! checkpoint past the lines it finds there (lines found beyond a gap, such as a dead-lettered
//! line, are skipped when read again), so what landed after the last save is not appended
//! again and what did not land is. A lost checkpoint file is recovered the same way, by
//! scanning the topic from its start (as far as retention kept it). Into `prism.dlq`: at least once (a refused line read
//! again after a crash is refused again).
//!
//! **Losses.** Lines are lost when their file is deleted before the tailer read them, or, with
//! logrotate's `copytruncate`, truncated while the globs do not match the copy (match the
//! rotated names too, e.g. `access.log*`: the copy continues from the checkpoint). And
//! `copytruncate` itself loses whatever the server writes between logrotate's copy and its
//! truncate (logrotate documents that window): those lines are in neither file.

mod recover;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::event::{AccessEvent, ACCESS_LOGS_TOPIC, DLQ_TOPIC};
use prism_core::log::{EventLog, LogError, NewRecord};
use tokio_util::sync::CancellationToken;

use crate::access_log;
use crate::append::{AppendPath, Batch, POSITION_HEADER, SOURCE_HEADER};
use crate::tail::{Checkpoints, FollowOptions, Follower, Line, TailError};
use crate::telemetry;

use recover::Landed;

/// Lines one poll hands out at most, by default.
pub const DEFAULT_BATCH_LINES: usize = 5000;
/// Bytes of lines (with their `\n`) one poll hands out at most (bytes; a poll stops at the
/// first line reaching it).
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// Shortest time between two checkpoint saves while lines keep coming.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Time between two progress lines in the log while lines keep coming.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The log-file source's flags (each with a `PRISM_*` environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Glob patterns of files to tail (repeatable / comma-separated), e.g. /var/log/nginx/access.log*
    #[arg(long = "tail", env = "PRISM_TAIL", value_delimiter = ',')]
    pub tail: Vec<String>,
    /// How long to wait before looking at the files again when they had no new line.
    #[arg(long, env = "PRISM_TAIL_POLL_INTERVAL", default_value = "250ms", value_parser = prism_core::config::parse_duration)]
    pub tail_poll_interval: Duration,
    /// How long a rotated file is kept open at its end for a writer still appending to it.
    #[arg(long, env = "PRISM_TAIL_ROTATE_WAIT", default_value = "5s", value_parser = prism_core::config::parse_duration)]
    pub tail_rotate_wait: Duration,
    /// Read files found at start that have no checkpoint from their end instead of their start.
    #[arg(long, env = "PRISM_TAIL_READ_FROM_END")]
    pub tail_read_from_end: bool,
}

impl LogsArgs {
    /// The tailer's settings, checkpointing to `checkpoint_path` and creating
    /// `prism.access_logs` with `partitions` partitions when it does not exist. Blank patterns
    /// are dropped.
    pub fn config(&self, checkpoint_path: PathBuf, partitions: i32) -> LogsConfig {
        LogsConfig {
            globs: self.tail.iter().map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect(),
            checkpoint_path,
            partitions,
            poll_interval: self.tail_poll_interval,
            batch_lines: DEFAULT_BATCH_LINES,
            follow: FollowOptions {
                read_from_end_for_new_files: self.tail_read_from_end,
                rotate_wait: self.tail_rotate_wait,
                ..FollowOptions::default()
            },
        }
    }
}

/// The log-file source's settings.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    /// Glob patterns of the files to tail (at least one).
    pub globs: Vec<String>,
    /// The checkpoint file (JSON, replaced atomically on each save).
    pub checkpoint_path: PathBuf,
    /// Partitions of `prism.access_logs` when the tailer creates it.
    pub partitions: i32,
    /// Pause between polls that found no new line.
    pub poll_interval: Duration,
    /// Lines appended per batch at most ([`DEFAULT_BATCH_LINES`]; 0 counts as 1).
    pub batch_lines: usize,
    /// How files are followed (rotation wait, read from end, longest line).
    pub follow: FollowOptions,
}

/// What one run of the tailer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsStats {
    /// Complete lines read from the files (including lines found already in the log).
    pub lines_read: u64,
    /// Events appended to `prism.access_logs`.
    pub appended: u64,
    /// Lines sent to `prism.dlq`.
    pub dead_lettered: u64,
}

/// Errors that stop the tailer. The caller may restart it: lines are read again from the
/// checkpoint and the recovery finds what already landed.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Following the files or saving the checkpoint failed.
    #[error(transparent)]
    Tail(#[from] TailError),
    /// A bad setting.
    #[error("ingest-logs: {0}")]
    Config(String),
    /// The blocking task polling the files failed (panicked).
    #[error("ingest-logs: the file-polling task failed: {0}")]
    Join(String),
}

/// Tails the files of `config` into `log` until `cancel` fires (see the [module docs](self)
/// for the delivery guarantee); on cancel it finishes the batch in flight, saves the
/// checkpoint and returns what this run did.
///
/// Errors: [`LogsError::Config`] without globs, [`LogsError::Tail`] for a bad glob, an
/// unreadable checkpoint file or a file read error, [`LogsError::Log`] when an append fails
/// (part of the batch may have landed; a restart recovers it).
pub async fn run_log_tailer<L: EventLog>(config: LogsConfig, log: Arc<L>, cancel: CancellationToken) -> Result<LogsStats, LogsError> {
    if config.globs.is_empty() {
        return Err(LogsError::Config("no files to tail: give --tail <glob> (or PRISM_TAIL)".into()));
    }
    log.ensure_topic(ACCESS_LOGS_TOPIC, config.partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let mut checkpoints = Checkpoints::load(&config.checkpoint_path)?;
    let scanned_from = checkpoints.log_end_offsets.clone();
    let recovery = recover::recover(&*log, &mut checkpoints).await?;
    tracing::info!(
        checkpoint = %config.checkpoint_path.display(), files = checkpoints.files.len(),
        recovered_records = recovery.records, advanced_files = recovery.advanced_files,
        advanced_lines = recovery.advanced_lines, landed_beyond_gaps = recovery.landed_lines,
        unreadable_headers = recovery.unreadable,
        "ingest-logs recovered the lines appended after its last checkpoint"
    );
    let follower = Follower::new(&config.globs, &checkpoints, config.follow.clone())?;
    let held_offsets = (!recovery.landed.is_empty()).then_some(scanned_from);
    let mut tailer = Tailer {
        path: AppendPath::new(log.clone(), "logs"),
        log,
        config,
        checkpoints,
        landed: recovery.landed,
        held_offsets,
        dirty: false,
        last_save: Instant::now(),
        stats: LogsStats::default(),
    };
    tailer.save().await?;
    tracing::info!(globs = ?tailer.config.globs, "ingest-logs tailing");
    tailer.run(follower, cancel).await?;
    tailer.save().await?;
    tracing::info!(
        lines_read = tailer.stats.lines_read,
        appended = tailer.stats.appended,
        dead_lettered = tailer.stats.dead_lettered,
        "ingest-logs stopped"
    );
    Ok(tailer.stats)
}

/// One run's state.
struct Tailer<L> {
    log: Arc<L>,
    path: AppendPath<L>,
    config: LogsConfig,
    checkpoints: Checkpoints,
    /// Lines already in the log beyond a gap (from the recovery).
    landed: Landed,
    /// While `landed` holds lines ahead of the checkpoint: the log end offsets the recovery
    /// scanned from, saved instead of the current ones so that a crash finds them again.
    held_offsets: Option<Vec<i64>>,
    /// Lines were checkpointed in memory since the last save.
    dirty: bool,
    last_save: Instant,
    stats: LogsStats,
}

impl<L: EventLog> Tailer<L> {
    /// Polls and appends until `cancel` fires.
    async fn run(&mut self, mut follower: Follower, cancel: CancellationToken) -> Result<(), LogsError> {
        let max_lines = self.config.batch_lines.max(1);
        let mut last_progress = Instant::now();
        let mut lines_at_progress = 0u64;
        while !cancel.is_cancelled() {
            // The poll is not interrupted by a cancel: it only reads files.
            let (back, polled, open_files, bytes_behind) = tokio::task::spawn_blocking(move || {
                let polled = follower.poll(max_lines, MAX_BATCH_BYTES);
                let (open, behind) = (follower.open_files(), follower.bytes_behind());
                (follower, polled, open, behind)
            })
            .await
            .map_err(|e| LogsError::Join(e.to_string()))?;
            follower = back;
            metrics::gauge!(telemetry::LOGS_OPEN_FILES).set(open_files as f64);
            metrics::gauge!(telemetry::LOGS_BYTES_BEHIND).set(bytes_behind as f64);
            let lines = polled?;
            if lines.is_empty() {
                if self.dirty {
                    self.save().await?;
                }
                self.report_checkpoint_age();
                tokio::select! {
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = cancel.cancelled() => break,
                }
                continue;
            }
            // Not interrupted by a cancel either: the batch is appended and checkpointed.
            self.commit(&lines).await?;
            if self.last_save.elapsed() >= CHECKPOINT_EVERY {
                self.save().await?;
            }
            self.report_checkpoint_age();
            if last_progress.elapsed() >= PROGRESS_EVERY {
                let lines_per_s = (self.stats.lines_read - lines_at_progress) as f64 / last_progress.elapsed().as_secs_f64();
                tracing::info!(
                    lines_read = self.stats.lines_read,
                    appended = self.stats.appended,
                    dead_lettered = self.stats.dead_lettered,
                    lines_per_s = lines_per_s as u64,
                    open_files,
                    bytes_behind,
                    "ingest-logs progress"
                );
                last_progress = Instant::now();
                lines_at_progress = self.stats.lines_read;
            }
        }
        Ok(())
    }

    /// Appends `lines` (events and dead letters) and, once the log acknowledged them, moves the
    /// in-memory checkpoint past them.
    async fn commit(&mut self, lines: &[Line]) -> Result<(), LogsError> {
        metrics::counter!(telemetry::LOGS_LINES_READ_TOTAL).increment(lines.len() as u64);
        self.stats.lines_read += lines.len() as u64;
        let mut batch = Batch::new();
        for line in lines {
            if self.checkpoints.files.get(&line.fingerprint).is_some_and(|c| line.line_no <= c.line) {
                // Read again from its start (truncated): its line numbers start over.
                self.landed.forget(line.fingerprint);
            }
            if self.landed.contains(line) {
                continue;
            }
            match self.event_of(line) {
                Ok(event) => batch.push(
                    NewRecord::new(event.host.clone(), event.to_json())
                        .with_header(SOURCE_HEADER, recover::source_of(line.fingerprint))
                        .with_header(POSITION_HEADER, recover::position_of(line)),
                ),
                Err((host, reason)) => {
                    let key = host.filter(|h| !h.is_empty()).unwrap_or_else(|| line.path.clone());
                    batch.refuse(key, format!("{}:{}", line.path, line.line_no), reason, &line.text);
                }
            }
        }
        let (appended, refused) = (batch.len() as u64, batch.refused() as u64);
        if !batch.is_empty() {
            self.path.commit(ACCESS_LOGS_TOPIC, batch).await?;
        }
        for line in lines {
            self.checkpoints.record(line);
        }
        self.dirty = true;
        self.stats.appended += appended;
        self.stats.dead_lettered += refused;
        Ok(())
    }

    /// The event of `line`, or the client host when known and the reason it is refused.
    fn event_of(&self, line: &Line) -> Result<AccessEvent, (Option<String>, String)> {
        if line.too_long {
            return Err((None, format!("line longer than {} bytes (cut here)", self.config.follow.max_line_bytes)));
        }
        let text = std::str::from_utf8(&line.text).map_err(|e| (None, format!("not UTF-8: {e}")))?;
        let parsed = access_log::parse_line(text).map_err(|e| (None, e.to_string()))?;
        let event = access_event(parsed, Some(line.path.clone()), Some(line.line_no));
        match event.validate() {
            Ok(()) => Ok(event),
            Err(e) => Err((Some(event.host), e.to_string())),
        }
    }

    /// Saves the checkpoint with the log end offsets of `prism.access_logs` (or the held ones
    /// while recovered lines remain ahead of it). The save is synchronous (a small file written,
    /// synced and renamed) so that it is never left half done by a cancelled task.
    async fn save(&mut self) -> Result<(), LogsError> {
        if self.held_offsets.is_some() && self.landed.settle(&self.checkpoints) {
            self.held_offsets = None;
        }
        self.checkpoints.log_end_offsets = match &self.held_offsets {
            Some(offsets) => offsets.clone(),
            None => self.log.end_offsets(ACCESS_LOGS_TOPIC).await?,
        };
        self.checkpoints.save(&self.config.checkpoint_path)?;
        self.dirty = false;
        self.last_save = Instant::now();
        Ok(())
    }

    /// Seconds since the last save while lines are checkpointed in memory only; 0 when the
    /// saved checkpoint covers every acknowledged line.
    fn report_checkpoint_age(&self) {
        let age = if self.dirty { self.last_save.elapsed().as_secs_f64() } else { 0.0 };
        metrics::gauge!(telemetry::LOGS_CHECKPOINT_AGE_SECONDS).set(age);
    }
}

/// The `prism.access_logs` event of a parsed line, read from `source_file` at 1-based `line`.
pub fn access_event(parsed: access_log::AccessLine, source_file: Option<String>, line: Option<u64>) -> AccessEvent {
    let access_log::AccessLine { ts, host, ident, user, method, path, protocol, status, bytes, referer, user_agent, duration_ms } = parsed;
    AccessEvent { ts, host, ident, user, method, path, protocol, status, bytes, referer, user_agent, duration_ms, source_file, line }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        logs: LogsArgs,
    }

    #[test]
    fn flags_become_the_config() {
        let cli = Cli::parse_from(["prism", "--tail", "/var/log/a.log*, /var/log/b.log", "--tail", "c.log", "--tail-rotate-wait", "1s"]);
        let config = cli.logs.config(PathBuf::from("tail.json"), 4);
        assert_eq!(config.globs, ["/var/log/a.log*", "/var/log/b.log", "c.log"]);
        assert_eq!((config.poll_interval, config.follow.rotate_wait), (Duration::from_millis(250), Duration::from_secs(1)));
        assert_eq!((config.partitions, config.batch_lines, config.follow.read_from_end_for_new_files), (4, DEFAULT_BATCH_LINES, false));
        assert!(Cli::try_parse_from(["prism", "--tail-poll-interval", "0s"]).is_err(), "a zero interval is refused");
    }

    #[tokio::test]
    async fn no_globs_is_a_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(prism_core::log::embedded::EmbeddedLog::open(dir.path(), Default::default()).expect("log"));
        let config = Cli::parse_from(["prism"]).logs.config(dir.path().join("tail.json"), 1);
        let err = run_log_tailer(config, log, CancellationToken::new()).await.expect_err("no globs");
        assert!(matches!(err, LogsError::Config(_)), "{err}");
    }
}
