//! Finding, after a crash, the lines the log already holds past the checkpoint (exactly-once
//! into `prism.access_logs`).
//!
//! Each record the tailer appends carries [`SOURCE_HEADER`](crate::append::SOURCE_HEADER)
//! `logs:<fingerprint>` (8 hex digits) and [`POSITION_HEADER`](crate::append::POSITION_HEADER)
//! `<end byte>:<line number>`. On start, [`recover`] reads them back from the log end offsets
//! the checkpoint saved and, per file:
//!
//! - the run of lines that continues the checkpoint (line `line + 1`, `line + 2`, …) moves the
//!   checkpoint past it (the path of a file the checkpoint did not know is left empty);
//! - lines found beyond a gap (a dead-lettered line, which `prism.access_logs` does not hold,
//!   or records of one batch that reached some partitions and not others) are [`Landed`]: when
//!   the follower hands them out again they are checkpointed without being appended, and the
//!   lines in the gap are appended (or dead-lettered) again.
//!
//! While landed lines remain ahead of the checkpoint, the saved `log_end_offsets` stay where
//! this recovery started, so a second crash finds them again.

use std::collections::HashMap;

use prism_core::event::ACCESS_LOGS_TOPIC;
use prism_core::log::{EventLog, LogError};

use crate::append::{recover_positions, Recovered};
use crate::tail::{Checkpoints, FileCheckpoint, Fingerprint, Line};

/// Prefix of the tailer's [`SOURCE_HEADER`](crate::append::SOURCE_HEADER) values.
pub(crate) const SOURCE_PREFIX: &str = "logs:";

/// The source header value of the lines of `fingerprint`: `logs:<8 hex digits>`.
pub(crate) fn source_of(fingerprint: Fingerprint) -> String {
    format!("{SOURCE_PREFIX}{fingerprint}")
}

/// The position header value of `line`: `<end byte>:<line number>`.
pub(crate) fn position_of(line: &Line) -> String {
    format!("{}:{}", line.end, line.line_no)
}

fn parse_source(source: &str) -> Option<Fingerprint> {
    let hex = source.strip_prefix(SOURCE_PREFIX)?;
    (hex.len() == 8).then(|| u32::from_str_radix(hex, 16).ok()).flatten().map(Fingerprint)
}

/// `<end>:<line>` → (line, end).
fn parse_position(position: &str) -> Option<(u64, u64)> {
    let (end, line) = position.split_once(':')?;
    Some((line.parse().ok()?, end.parse().ok()?))
}

/// Lines already in the log past their file's checkpoint, not continuing it: per fingerprint,
/// sorted inclusive runs of line numbers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Landed {
    runs: HashMap<Fingerprint, Vec<(u64, u64)>>,
}

impl Landed {
    /// True when no landed line is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// True when `line` is already in the log (checkpoint it, do not append it again).
    pub(crate) fn contains(&self, line: &Line) -> bool {
        let Some(runs) = self.runs.get(&line.fingerprint) else { return false };
        let i = runs.partition_point(|&(_, last)| last < line.line_no);
        runs.get(i).is_some_and(|&(first, _)| first <= line.line_no)
    }

    /// Forgets the landed lines of `fingerprint` (its file is being read again from its start:
    /// the line numbers no longer name the same lines).
    pub(crate) fn forget(&mut self, fingerprint: Fingerprint) {
        self.runs.remove(&fingerprint);
    }

    /// Forgets the files whose checkpoint has passed all their landed lines; true when none is
    /// left.
    pub(crate) fn settle(&mut self, checkpoints: &Checkpoints) -> bool {
        self.runs.retain(|fp, runs| runs.last().is_some_and(|&(_, last)| last > checkpoints.files.get(fp).map_or(0, |c| c.line)));
        self.runs.is_empty()
    }
}

/// What [`recover`] found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Records of the tailer found after the checkpoint's log end offsets.
    pub records: usize,
    /// Lines the checkpoints moved past.
    pub advanced_lines: u64,
    /// Files whose checkpoint moved.
    pub advanced_files: usize,
    /// Lines found beyond a gap, skipped when read again.
    pub landed_lines: u64,
    /// Records whose headers could not be read (ignored).
    pub unreadable: usize,
    /// The lines found beyond a gap.
    pub landed: Landed,
}

/// Reads the tailer's records after `checkpoints.log_end_offsets` back from `prism.access_logs`
/// and moves `checkpoints` past the lines they show landed (see the module docs). Leaves
/// `log_end_offsets` alone.
///
/// Errors: [`LogError`].
pub(crate) async fn recover<L: EventLog>(log: &L, checkpoints: &mut Checkpoints) -> Result<Recovery, LogError> {
    let from = checkpoints.log_end_offsets.clone();
    let found = recover_positions(log, ACCESS_LOGS_TOPIC, &from, |s| s.starts_with(SOURCE_PREFIX)).await?;
    Ok(apply(checkpoints, found))
}

/// The pure part of [`recover`].
pub(crate) fn apply(checkpoints: &mut Checkpoints, found: HashMap<String, Vec<Recovered>>) -> Recovery {
    let mut recovery = Recovery::default();
    for (source, records) in found {
        let Some(fingerprint) = parse_source(&source) else {
            recovery.unreadable += records.len();
            continue;
        };
        let mut lines: Vec<(u64, u64)> = records.iter().filter_map(|r| parse_position(&r.position)).collect();
        recovery.unreadable += records.len() - lines.len();
        recovery.records += lines.len();
        let old = checkpoints.files.get(&fingerprint);
        let (mut position, mut line) = old.map_or((0, 0), |c| (c.position, c.line));
        let start_line = line;
        lines.retain(|&(l, _)| l > start_line);
        lines.sort_unstable();
        lines.dedup_by_key(|&mut (l, _)| l);
        let mut rest = lines.into_iter().peekable();
        while let Some(&(l, end)) = rest.peek() {
            if l != line + 1 {
                break;
            }
            (line, position) = (l, end);
            rest.next();
        }
        if line > start_line {
            recovery.advanced_lines += line - start_line;
            recovery.advanced_files += 1;
            let path = old.map(|c| c.path.clone()).unwrap_or_default();
            checkpoints.files.insert(fingerprint, FileCheckpoint { fingerprint, path, position, line });
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (l, _) in rest {
            recovery.landed_lines += 1;
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == l => *last = l,
                _ => runs.push((l, l)),
            }
        }
        if !runs.is_empty() {
            recovery.landed.runs.insert(fingerprint, runs);
        }
    }
    recovery
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_core::event::LogPosition;

    fn found(fp: u32, positions: &[(u64, u64)]) -> HashMap<String, Vec<Recovered>> {
        let records = positions
            .iter()
            .map(|&(end, line)| Recovered { position: format!("{end}:{line}"), at: LogPosition { partition: 0, offset: 0 } })
            .collect();
        HashMap::from([(source_of(Fingerprint(fp)), records)])
    }

    fn line(fp: u32, line_no: u64) -> Line {
        Line { fingerprint: Fingerprint(fp), path: "a.log".into(), line_no, start: 0, end: 0, text: Vec::new(), too_long: false }
    }

    #[test]
    fn headers_round_trip() {
        assert_eq!(source_of(Fingerprint(0xab)), "logs:000000ab");
        assert_eq!(parse_source("logs:000000ab"), Some(Fingerprint(0xab)));
        assert_eq!(parse_source("logs:ab"), None);
        assert_eq!(parse_source("feed:000000ab"), None);
        let l = Line { end: 30, ..line(1, 3) };
        assert_eq!(parse_position(&position_of(&l)), Some((3, 30)));
        assert_eq!(parse_position("30"), None);
    }

    #[test]
    fn the_contiguous_run_moves_the_checkpoint_and_the_rest_is_landed() {
        let mut c = Checkpoints::default();
        c.files.insert(Fingerprint(7), FileCheckpoint { fingerprint: Fingerprint(7), path: "a.log".into(), position: 20, line: 2 });
        // Lines 1–2 (before the checkpoint, ignored), 3, 4 (twice), then 6, 8, 9 after gaps.
        let mut found = found(7, &[(10, 1), (20, 2), (30, 3), (40, 4), (40, 4), (60, 6), (80, 8), (90, 9)]);
        found.extend(self::found(9, &[(5, 1), (7, 2)]));
        found.insert("logs:zz".into(), vec![]);
        let r = apply(&mut c, found);
        assert_eq!((r.records, r.advanced_lines, r.advanced_files, r.landed_lines), (10, 4, 2, 3));
        assert_eq!(c.files[&Fingerprint(7)], FileCheckpoint { fingerprint: Fingerprint(7), path: "a.log".into(), position: 40, line: 4 });
        assert_eq!(c.files[&Fingerprint(9)], FileCheckpoint { fingerprint: Fingerprint(9), path: String::new(), position: 7, line: 2 });
        let mut landed = r.landed;
        assert_eq!(landed.runs[&Fingerprint(7)], vec![(6, 6), (8, 9)]);
        let hits: Vec<u64> = (1..=10).filter(|&n| landed.contains(&line(7, n))).collect();
        assert_eq!(hits, [6, 8, 9]);
        assert!(!landed.contains(&line(9, 1)));
        assert!(!landed.settle(&c));
        c.files.get_mut(&Fingerprint(7)).unwrap().line = 9;
        assert!(landed.settle(&c), "the checkpoint passed every landed line");
    }
}
