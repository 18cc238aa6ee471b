//! Compaction of the master dataset (DESIGN §5): the archiver writes one small file per
//! (partition, UTC day) per flush; compaction merges, per (partition, day), every committed
//! visible file into one, named by the group's smallest first offset and largest last offset and
//! sorted by offset. Files of the previous hour layout are merged the same way (a lone one too),
//! which migrates them into day files.
//!
//! **Atomic for readers.** A pass (a) writes the large file atomically
//! ([`ObjectLocation::put_atomic`](prism_core::objects::ObjectLocation::put_atomic)); from that
//! moment [`MasterDataset::list_files`] no longer returns the small files, because the large
//! file's offset range contains theirs (the visibility rule in [`crate::master`]). A reader sees
//! the small files or the large one, never both and never neither. (b) The superseded small
//! files are deleted only once they have been superseded for longer than a grace period
//! (default [`DEFAULT_GRACE`]), as a reader that listed before (a) may still be reading them;
//! with a zero grace they are deleted right after (a).
//!
//! **Crash safety.** Nothing is renamed and no file is changed in place: a crash before (a)
//! leaves the small files visible; after (a) the large one; a crash during (b) leaves some
//! superseded files, which a later pass deletes. A rerun finds nothing left to merge for a group
//! whose large file exists and goes on. No row is lost or seen twice at any point.
//!
//! Memory holds one (partition, day) group's rows at a time; Parquet work runs on blocking
//! threads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;

use crate::master::{
    day_start, file_location, next_offset, Archived, ListedFile, MasterDataset, MasterError, MasterFile, MasterRecord, RecordKind,
};
use crate::telemetry;

/// Default time a superseded file stays readable after the file that supersedes it appeared.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// How often a long pass logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Groups (partition, day) merged into a new file.
    pub groups_compacted: u64,
    /// Groups left as they are because a file could not be read or its rows do not match its
    /// name (logged with the reason; the files stay visible and readable as before).
    pub groups_skipped: u64,
    /// Files merged into the new files.
    pub files_merged: u64,
    /// Superseded files deleted.
    pub files_removed: u64,
    /// Rows written into the new files.
    pub rows_written: u64,
    /// Bytes written (the new files' sizes).
    pub bytes_written: u64,
    /// Duration of the pass.
    pub elapsed: Duration,
}

/// The committed visible files of one (partition, UTC day) that one file will replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionGroup {
    /// Log partition.
    pub partition: i32,
    /// Start of the UTC day, UTC ms.
    pub day_start_ms: i64,
    /// The files, sorted by first offset (more than one, or hour-layout files to migrate).
    pub files: Vec<MasterFile>,
}

impl CompactionGroup {
    /// Where the merged file goes: the day location, named by the smallest first offset and the
    /// largest last offset of the group.
    pub fn target(&self, topic: &str) -> ObjectPath {
        let first = self.files.iter().map(|f| f.first_offset).min().unwrap_or(0);
        let last = self.files.iter().map(|f| f.last_offset).max().unwrap_or(0);
        file_location(topic, self.partition, self.day_start_ms, first, last)
    }
}

/// A merged file written by [`write_compacted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Its location.
    pub location: ObjectPath,
    /// Rows in it.
    pub rows: u64,
    /// Its size, bytes.
    pub bytes: u64,
}

/// Runs one compaction pass over `topic`'s files: deletes the files superseded for longer than
/// `grace`, then merges every (partition, day) group of committed visible files (last offset
/// below `committed_next[partition]`) that has more than one file or an hour-layout file.
/// Uncommitted files are left alone (the archiver may still remove and rewrite them).
///
/// Errors: [`MasterError::Store`]/[`MasterError::Io`] when listing, reading, writing or
/// deleting fails (the pass stops; everything it did so far is consistent). A group whose files
/// are unreadable ([`MasterError::Format`]) is skipped and counted, not an error.
pub async fn compact(
    master: &MasterDataset,
    topic: &str,
    committed_next: &[i64],
    grace: Duration,
) -> Result<CompactionReport, MasterError> {
    let started = Instant::now();
    let files = master.list_all_files(topic).await?;
    let mut report = CompactionReport { files_removed: remove_aged(master, &files, grace).await?, ..Default::default() };
    let groups = plan_from(&files, committed_next);
    drop(files);
    let mut last_progress = Instant::now();
    for (done, group) in groups.iter().enumerate() {
        let day = prism_core::time::format_rfc3339(group.day_start_ms);
        match write_compacted(master, topic, group).await {
            Ok(written) => {
                report.groups_compacted += 1;
                report.files_merged += group.files.len() as u64;
                report.rows_written += written.rows;
                report.bytes_written += written.bytes;
                metrics::counter!(telemetry::MASTER_COMPACTIONS_TOTAL).increment(1);
                metrics::counter!(telemetry::MASTER_FILES_COMPACTED_TOTAL).increment(group.files.len() as u64);
                tracing::debug!(partition = group.partition, day, files = group.files.len(), rows = written.rows, file = %written.location, "compacted");
                if grace.is_zero() {
                    for f in &group.files {
                        master.delete(&f.location).await?;
                        report.files_removed += 1;
                        metrics::counter!(telemetry::MASTER_SUPERSEDED_FILES_REMOVED_TOTAL).increment(1);
                    }
                }
            }
            Err(e @ MasterError::Format { .. }) => {
                report.groups_skipped += 1;
                tracing::error!(partition = group.partition, day, error = %e, "compaction skipped a group; its files stay visible as they are");
            }
            Err(e) => return Err(e),
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            tracing::info!(
                groups_done = done + 1,
                groups_total = groups.len(),
                files_merged = report.files_merged,
                bytes_written = report.bytes_written,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "compaction progress"
            );
            last_progress = Instant::now();
        }
    }
    report.elapsed = started.elapsed();
    let r = &report;
    if r.groups_compacted + r.groups_skipped + r.files_removed > 0 {
        tracing::info!(
            groups = r.groups_compacted,
            skipped = r.groups_skipped,
            files_merged = r.files_merged,
            files_removed = r.files_removed,
            rows = r.rows_written,
            bytes = r.bytes_written,
            elapsed_ms = r.elapsed.as_millis() as u64,
            "compaction pass done"
        );
    }
    Ok(report)
}

/// Step 0 of a pass: the groups to merge now (see [`compact`]).
///
/// Errors: [`MasterError::Store`] when listing fails.
pub async fn plan(master: &MasterDataset, topic: &str, committed_next: &[i64]) -> Result<Vec<CompactionGroup>, MasterError> {
    Ok(plan_from(&master.list_all_files(topic).await?, committed_next))
}

fn plan_from(files: &[ListedFile], committed_next: &[i64]) -> Vec<CompactionGroup> {
    let mut groups: BTreeMap<(i64, i32), Vec<MasterFile>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.superseded_since.is_none()) {
        if f.file.last_offset < next_offset(committed_next, f.file.partition) {
            groups.entry((f.file.day_start_ms, f.file.partition)).or_default().push(f.file.clone());
        }
    }
    groups
        .into_iter()
        .filter(|(_, files)| files.len() > 1 || files.iter().any(|f| f.legacy_hour.is_some()))
        .map(|((day_start_ms, partition), mut files)| {
            files.sort_by_key(|f| (f.first_offset, f.last_offset));
            CompactionGroup { partition, day_start_ms, files }
        })
        .collect()
}

/// Step (a): reads the group's rows, checks them, and writes the merged file atomically at
/// [`CompactionGroup::target`]. Writing it again (a rerun) writes the same file.
///
/// Errors: [`MasterError::Format`] when a file is unreadable, a row lies outside its file's
/// partition, day or offset range, or an offset appears twice (nothing is written then);
/// [`MasterError::Store`]/[`MasterError::Io`] when reading or writing fails.
pub async fn write_compacted(master: &MasterDataset, topic: &str, group: &CompactionGroup) -> Result<Compacted, MasterError> {
    let kind = RecordKind::of(topic).ok_or_else(|| MasterError::Location(format!("topic {topic} is not archived")))?;
    crate::with_record!(kind, R => write_compacted_as::<R>(master, topic, group).await)
}

async fn write_compacted_as<R: MasterRecord>(
    master: &MasterDataset,
    topic: &str,
    group: &CompactionGroup,
) -> Result<Compacted, MasterError> {
    let target = group.target(topic);
    let mut rows: Vec<Archived<R>> = Vec::new();
    for f in &group.files {
        let file_rows: Vec<Archived<R>> = master.read_file(f).await?;
        if let Some(r) = file_rows.iter().find(|r| {
            r.pos.partition != f.partition
                || day_start(r.record.event_time()) != f.day_start_ms
                || !(f.first_offset..=f.last_offset).contains(&r.pos.offset)
        }) {
            return Err(MasterError::Format {
                file: f.location.to_string(),
                reason: format!(
                    "row {}@{} (ts {}) does not belong in a file of this name",
                    r.pos.partition,
                    r.pos.offset,
                    r.record.event_time()
                ),
            });
        }
        rows.extend(file_rows);
    }
    rows.sort_unstable_by_key(|r| r.pos.offset);
    if let Some(w) = rows.windows(2).find(|w| w[0].pos.offset == w[1].pos.offset) {
        return Err(MasterError::Format {
            file: target.to_string(),
            reason: format!("offset {}@{} is in two of the files to merge", group.partition, w[0].pos.offset),
        });
    }
    let count = rows.len() as u64;
    // The merged file must carry the group's name, or it would not supersede the group's files.
    let (min, max) = (rows.first().map(|r| r.pos.offset), rows.last().map(|r| r.pos.offset));
    if target != file_location(topic, group.partition, group.day_start_ms, min.unwrap_or(-1), max.unwrap_or(-1)) {
        return Err(MasterError::Format {
            file: target.to_string(),
            reason: format!("the files' rows span offsets {min:?}..{max:?}, not what their names say"),
        });
    }
    let (location, bytes) = master.write_rows(topic, rows).await?;
    Ok(Compacted { location, rows: count, bytes })
}

/// Step (b): deletes `topic`'s files that have been superseded for longer than `grace` (zero:
/// every superseded file). Returns how many were deleted.
///
/// Errors: [`MasterError::Store`] when listing or deleting fails.
pub async fn remove_superseded(master: &MasterDataset, topic: &str, grace: Duration) -> Result<u64, MasterError> {
    remove_aged(master, &master.list_all_files(topic).await?, grace).await
}

async fn remove_aged(master: &MasterDataset, files: &[ListedFile], grace: Duration) -> Result<u64, MasterError> {
    let now = Utc::now();
    let mut removed = 0;
    for f in files {
        if f.superseded_since.is_some_and(|since| aged(since, grace, now)) {
            master.delete(&f.file.location).await?;
            removed += 1;
            metrics::counter!(telemetry::MASTER_SUPERSEDED_FILES_REMOVED_TOTAL).increment(1);
        }
    }
    Ok(removed)
}

/// True when `since` lies at least `grace` before `now` (always for a zero grace, whatever the
/// store's clock says).
fn aged(since: DateTime<Utc>, grace: Duration, now: DateTime<Utc>) -> bool {
    grace.is_zero() || chrono::Duration::from_std(grace).is_ok_and(|g| now.signed_duration_since(since) >= g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_measured_from_the_superseding_file() {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).expect("time");
        assert!(aged(t(100), Duration::from_secs(600), t(700)));
        assert!(!aged(t(100), Duration::from_secs(600), t(699)));
        assert!(aged(t(800), Duration::ZERO, t(700)), "a zero grace ignores clock skew");
        assert!(!aged(t(100), Duration::MAX, t(700)));
    }
}
