//! The master dataset: immutable Parquet files of every event of every archived topic,
//! Hive-partitioned by UTC event date (DESIGN §3, §5):
//!
//! `<root>/<folder>/date=YYYY-MM-DD/<topic>-<partition>-<first offset>-<last offset>.parquet`
//!
//! with `<folder>` = `quotes`, `access_logs` or `cdc.<db>.<schema>.<table>` ([`prefix_of`]).
//! Each topic's event type is a [`MasterRecord`] with its own typed schema: quotes below, access
//! logs in `access_codec`, CDC changes in `cdc_codec` ([`access_schema`], [`cdc_schema`]).
//!
//! One file holds rows of one log partition and one UTC day, sorted by offset; its name is its
//! identity, so rewriting it after a crash is idempotent. `<root>` is a local folder or an
//! S3-compatible bucket/prefix (an [`ObjectLocation`]); every file appears atomically. Other
//! prefixes of the root (the batch job's `segments/`) are not the dataset's and are ignored.
//!
//! **Quotes schema** (lossless: every field of [`Quote`] plus its log position; zstd):
//!
//! | column | Arrow type | null |
//! |---|---|---|
//! | `symbol` | Utf8 | no |
//! | `ts` | Timestamp(ms, "UTC") — event time | no |
//! | `price` | Decimal128(18,6) | no |
//! | `size` | Int64 — shares | no |
//! | `bid` | Decimal128(18,6) | yes |
//! | `ask` | Decimal128(18,6) | yes |
//! | `exchange` | Utf8 | yes |
//! | `partition` | Int32 — log partition | no |
//! | `offset` | Int64 — log offset | no |
//!
//! Spark, Trino and DuckDB read the layout as is (`date` is the Hive partition column).
//!
//! **Earlier data.** Files of the previous layout, `quotes/date=YYYY-MM-DD/hour=HH/<name>`, and of
//! the first schema (no `bid`, `ask`, `exchange`: read as `None`) are still listed and read;
//! [`compaction`](crate::compaction) rewrites them into day files.
//!
//! **Visibility.** Compaction writes one large file over many small ones, then deletes the small
//! ones later. [`MasterDataset::list_files`] therefore returns only the visible files: within one
//! (partition, day), a file is *superseded* — not returned — when a day-layout file's offset
//! range `[first, last]` contains its own (an equal range counts for a legacy hour file). Legacy
//! hour files never supersede anything: one flush wrote one file per hour, so ranges of one day's
//! hour files interleave without containing each other's rows.

mod access_codec;
mod cdc_codec;
mod codec;
pub mod record;

use std::cmp::Reverse;
use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;
use prism_core::event::{LogPosition, Quote, ACCESS_LOGS_TOPIC, CDC_TOPIC_PREFIX, QUOTES_TOPIC};
use prism_core::objects::{ObjectError, ObjectLocation};
use prism_core::time::DAY_MS;

pub use access_codec::access_schema;
pub use cdc_codec::{cdc_schema, CdcRecord};
pub use codec::quotes_schema;
pub use record::{Archived, MasterRecord, RecordKind};

/// The prefix of every quotes file in the dataset's root.
pub const QUOTES_PREFIX: &str = "quotes";

/// Errors of master-dataset I/O.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// A local file or folder operation failed.
    #[error("master dataset I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The object store refused or failed a request (S3: network, credentials, bucket).
    #[error("master dataset {context}: {source}")]
    Store {
        /// What was being done (and on which object).
        context: String,
        /// What the object store said.
        #[source]
        source: object_store::Error,
    },
    /// The dataset location cannot be used.
    #[error("master dataset location {0}")]
    Location(String),
    /// Parquet or Arrow refused the data, or rows do not belong in the file.
    #[error("master dataset file {file}: {reason}")]
    Format {
        /// The file.
        file: String,
        /// What Parquet/Arrow said, or which rule the rows break.
        reason: String,
    },
}

impl From<ObjectError> for MasterError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::Io { context, source } => MasterError::Io { context, source },
            ObjectError::Store { context, source } => MasterError::Store { context, source },
            ObjectError::Location(m) => MasterError::Location(m),
        }
    }
}

impl MasterError {
    /// True when retrying will not help until an operator acts: the location is unusable, the
    /// store denies access (credentials, permissions), lacks the operation, or the local disk is
    /// full or read-only. Network failures, server errors, missing objects and unreadable files
    /// are not persistent in this sense.
    pub fn is_persistent(&self) -> bool {
        use std::io::ErrorKind as K;
        let io_persistent = |mut e: Option<&(dyn std::error::Error + 'static)>| {
            while let Some(err) = e {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    if matches!(io.kind(), K::PermissionDenied | K::StorageFull | K::ReadOnlyFilesystem | K::QuotaExceeded) {
                        return true;
                    }
                }
                e = err.source();
            }
            false
        };
        match self {
            MasterError::Location(_) => true,
            MasterError::Format { .. } => false,
            MasterError::Io { source, .. } => io_persistent(Some(source)),
            MasterError::Store { source, .. } => {
                matches!(
                    source,
                    object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                        | object_store::Error::NotSupported { .. }
                        | object_store::Error::NotImplemented { .. }
                        | object_store::Error::UnknownConfigurationKey { .. }
                ) || io_persistent(Some(source))
            }
        }
    }
}

/// One archived quote with its log position.
pub type ArchivedQuote = Archived<Quote>;

/// The dataset folder of `topic`'s files: `quotes` for `prism.quotes`, `access_logs` for
/// `prism.access_logs`, `cdc.<db>.<schema>.<table>` for `prism.cdc.<db>.<schema>.<table>`, else
/// the topic's name.
pub fn prefix_of(topic: &str) -> String {
    match topic {
        QUOTES_TOPIC => QUOTES_PREFIX.to_string(),
        ACCESS_LOGS_TOPIC => "access_logs".to_string(),
        t => match t.strip_prefix(CDC_TOPIC_PREFIX) {
            Some(table) => format!("cdc.{table}"),
            None => t.to_string(),
        },
    }
}

/// A quotes file, as its location names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterFile {
    /// Location in the dataset: `quotes/date=…/<name>.parquet` (or `…/hour=HH/<name>.parquet`).
    pub location: ObjectPath,
    /// Log partition its rows came from.
    pub partition: i32,
    /// Smallest offset in the file.
    pub first_offset: i64,
    /// Largest offset in the file.
    pub last_offset: i64,
    /// Start of its UTC day (the `date=` partition), UTC ms.
    pub day_start_ms: i64,
    /// The hour (0–23) of a file of the previous `date=/hour=` layout; `None` for a day file.
    pub legacy_hour: Option<u32>,
}

/// A quotes file as stored, visible or superseded ([`MasterDataset::list_all_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// The file.
    pub file: MasterFile,
    /// Its size, bytes.
    pub size: u64,
    /// When it was written (the store's clock).
    pub last_modified: DateTime<Utc>,
    /// `None` when visible; otherwise since when it is superseded: the earliest `last_modified`
    /// of the files that supersede it.
    pub superseded_since: Option<DateTime<Utc>>,
}

/// Start (UTC ms, 00:00) of the UTC day of an event time in UTC ms.
pub fn day_start(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS) * DAY_MS
}

/// `quotes/date=YYYY-MM-DD/<topic>-<partition>-<first>-<last>.parquet`.
pub fn file_location(topic: &str, partition: i32, day_start_ms: i64, first_offset: i64, last_offset: i64) -> ObjectPath {
    // Event times are validated to years 0001–9999, which chrono represents.
    let day = DateTime::<Utc>::from_timestamp_millis(day_start_ms).unwrap_or_default();
    ObjectPath::from(format!(
        "{}/date={}/{topic}-{partition}-{first_offset}-{last_offset}.parquet",
        prefix_of(topic),
        day.format("%Y-%m-%d")
    ))
}

/// The master dataset: a thin layer over an [`ObjectLocation`] (local folder or S3-compatible
/// bucket/prefix) that knows the quotes layout. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MasterDataset {
    objects: ObjectLocation,
}

impl MasterDataset {
    /// Opens the dataset `spec` names: a local path or `file:///path` (created if missing), or
    /// `s3://bucket[/prefix]` configured by the standard `AWS_*` variables (see
    /// [`ObjectLocation::open`]).
    ///
    /// Errors: [`MasterError::Location`] for another scheme or a bad S3 configuration;
    /// [`MasterError::Io`] when the local folder cannot be created.
    pub fn open(spec: &str) -> Result<MasterDataset, MasterError> {
        Ok(MasterDataset { objects: ObjectLocation::open(spec)? })
    }

    /// The dataset in local folder `root` (created if missing).
    ///
    /// Errors: [`MasterError::Io`], [`MasterError::Location`].
    pub fn local(root: &Path) -> Result<MasterDataset, MasterError> {
        Ok(MasterDataset { objects: ObjectLocation::local(root)? })
    }

    /// The dataset at an already opened storage root.
    pub fn from_location(objects: ObjectLocation) -> MasterDataset {
        MasterDataset { objects }
    }

    /// The storage root, shared with the batch job's `segments/` (which this dataset ignores).
    pub fn location(&self) -> &ObjectLocation {
        &self.objects
    }

    /// Where the dataset is (a folder or an `s3://` URL).
    pub fn url(&self) -> &str {
        self.objects.url()
    }

    /// Checks that the dataset answers (for `/readyz`): lists the quotes prefix.
    ///
    /// Errors: [`MasterError::Store`].
    pub async fn check(&self) -> Result<(), MasterError> {
        Ok(self.objects.check(QUOTES_PREFIX).await?)
    }

    /// Writes one file of `rows` (all of one partition and one UTC day; sorted by offset here)
    /// at its Hive location, atomically: it appears whole or not at all (and a local file is
    /// fsynced). Rewriting the same rows writes the same file. Returns its location.
    ///
    /// Errors: [`MasterError::Format`] when `rows` is empty or spans partitions or days;
    /// [`MasterError::Store`]/[`MasterError::Io`] when the write fails.
    pub async fn write_file<R: MasterRecord>(&self, topic: &str, rows: Vec<Archived<R>>) -> Result<ObjectPath, MasterError> {
        Ok(self.write_rows(topic, rows).await?.0)
    }

    /// [`write_file`](Self::write_file), also returning the file's size in bytes.
    pub(crate) async fn write_rows<R: MasterRecord>(
        &self,
        topic: &str,
        mut rows: Vec<Archived<R>>,
    ) -> Result<(ObjectPath, u64), MasterError> {
        let bad = |reason: String| MasterError::Format { file: format!("{} ({topic})", self.url()), reason };
        let Some(first) = rows.first() else { return Err(bad("no rows to write".into())) };
        let (partition, day) = (first.pos.partition, day_start(first.record.event_time()));
        if let Some(r) = rows.iter().find(|r| r.pos.partition != partition || day_start(r.record.event_time()) != day) {
            return Err(bad(format!(
                "one file holds one partition and one UTC day: {}@{} (ts {}) does not go with {}@{} (ts {})",
                r.pos.partition,
                r.pos.offset,
                r.record.event_time(),
                partition,
                first.pos.offset,
                first.record.event_time()
            )));
        }
        rows.sort_unstable_by_key(|r| r.pos.offset);
        let (first_offset, last_offset) = match (rows.first(), rows.last()) {
            (Some(a), Some(b)) => (a.pos.offset, b.pos.offset),
            _ => return Err(bad("no rows to write".into())),
        };
        let location = file_location(topic, partition, day, first_offset, last_offset);
        // Encoding (Parquet) is CPU work: off the async threads, below serving's priority.
        let name = location.to_string();
        let bytes = prism_core::background::run_at_low_priority("master-dataset encoder", move || R::encode(&rows, &name))
            .await
            .map_err(|e| MasterError::Format { file: location.to_string(), reason: e.to_string() })??;
        let size = bytes.len() as u64;
        self.objects.put_atomic(&location, Bytes::from(bytes)).await?;
        Ok((location, size))
    }

    /// Lists the visible quotes files of `topic` (see the module docs: superseded files, other
    /// topics and other objects are left out), sorted by (day, partition, first offset).
    ///
    /// Errors: [`MasterError::Store`].
    pub async fn list_files(&self, topic: &str) -> Result<Vec<MasterFile>, MasterError> {
        Ok(self.list_all_files(topic).await?.into_iter().filter(|f| f.superseded_since.is_none()).map(|f| f.file).collect())
    }

    /// Lists every quotes file of `topic`, superseded ones included, sorted by (day, partition,
    /// first offset).
    ///
    /// Errors: [`MasterError::Store`].
    pub async fn list_all_files(&self, topic: &str) -> Result<Vec<ListedFile>, MasterError> {
        let mut files: Vec<ListedFile> = self
            .objects
            .list(&prefix_of(topic))
            .await?
            .into_iter()
            .filter_map(|meta| {
                let file = parse_location(&meta.location, topic)?;
                Some(ListedFile { file, size: meta.size, last_modified: meta.last_modified, superseded_since: None })
            })
            .collect();
        mark_superseded(&mut files);
        files.sort_by(|a, b| {
            let key = |f: &MasterFile| (f.day_start_ms, f.partition, f.first_offset, Reverse(f.last_offset), f.legacy_hour);
            key(&a.file).cmp(&key(&b.file))
        });
        Ok(files)
    }

    /// Removes files whose rows were never committed (first offset at or past the committed
    /// next offset of their partition, `committed_next[partition]`; the archiver writes them
    /// again) and `.tmp` leftovers of earlier versions. A committed file — compacted or not —
    /// starts below the committed offset and is never removed. Returns how many were removed.
    ///
    /// Errors: [`MasterError::Store`].
    pub async fn remove_uncommitted(&self, topic: &str, committed_next: &[i64]) -> Result<usize, MasterError> {
        let mut removed = 0;
        for meta in self.objects.list(&prefix_of(topic)).await? {
            let uncommitted = match parse_location(&meta.location, topic) {
                Some(f) => f.first_offset >= next_offset(committed_next, f.partition),
                None => meta.location.as_ref().ends_with(".tmp"),
            };
            if uncommitted {
                self.objects.delete(&meta.location).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Reads every row of a quotes file, in file order (by offset), decoding on a background
    /// thread (`prism_core::background`: below serving's priority).
    ///
    /// Errors: [`MasterError::Store`] when it cannot be read, [`MasterError::Format`] when it is
    /// not a quotes file.
    pub async fn read_file<R: MasterRecord>(&self, file: &MasterFile) -> Result<Vec<Archived<R>>, MasterError> {
        let bytes = self.objects.get(&file.location).await?;
        let name = file.location.to_string();
        prism_core::background::run_at_low_priority("master-dataset decoder", move || {
            let mut out = Vec::new();
            R::for_each_row(bytes, &name, &mut |record, pos| out.push(Archived { record: record.clone(), pos }))?;
            Ok(out)
        })
        .await
        .map_err(|e| MasterError::Format { file: file.location.to_string(), reason: e.to_string() })?
    }

    /// Folds every row of a quotes file, in file order, into `acc` with `f` on a background thread,
    /// without materialising the rows (each row is lent as a [`Quote`] and its log position);
    /// returns `acc`.
    ///
    /// Errors: as [`MasterDataset::read_file`].
    pub async fn fold_file<R, T, F>(&self, file: &MasterFile, mut acc: T, mut f: F) -> Result<T, MasterError>
    where
        R: MasterRecord,
        T: Send + 'static,
        F: FnMut(&mut T, &R, LogPosition) + Send + 'static,
    {
        let bytes = self.objects.get(&file.location).await?;
        let name = file.location.to_string();
        prism_core::background::run_at_low_priority("master-dataset decoder", move || {
            R::for_each_row(bytes, &name, &mut |record, pos| f(&mut acc, record, pos))?;
            Ok(acc)
        })
        .await
        .map_err(|e| MasterError::Format { file: file.location.to_string(), reason: e.to_string() })?
    }

    /// Deletes one file (already gone is fine).
    ///
    /// Errors: [`MasterError::Store`].
    pub(crate) async fn delete(&self, location: &ObjectPath) -> Result<(), MasterError> {
        Ok(self.objects.delete(location).await?)
    }
}

/// The committed next offset of `partition` (0 when unknown).
pub(crate) fn next_offset(committed_next: &[i64], partition: i32) -> i64 {
    usize::try_from(partition).ok().and_then(|p| committed_next.get(p)).copied().unwrap_or(0)
}

/// Sets `superseded_since` of every file (see the module docs), in O(n · overlap) per
/// (partition, day): a sweep by first offset keeps the day files whose range is still open.
fn mark_superseded(files: &mut [ListedFile]) {
    let mut order: Vec<usize> = (0..files.len()).collect();
    // Containers first: by first offset, then the longer range, then day files before legacy.
    order.sort_by_key(|&i| {
        let f = &files[i].file;
        (f.partition, f.day_start_ms, f.first_offset, Reverse(f.last_offset), f.legacy_hour.is_some())
    });
    let mut active: Vec<usize> = Vec::new();
    let mut group = None;
    for i in order {
        let (first, last, legacy) = (files[i].file.first_offset, files[i].file.last_offset, files[i].file.legacy_hour.is_some());
        let this_group = Some((files[i].file.partition, files[i].file.day_start_ms));
        if group != this_group {
            active.clear();
            group = this_group;
        }
        // Later files start at or after `first`: a range closed before it contains none of them.
        active.retain(|&a| files[a].file.last_offset >= first);
        files[i].superseded_since = active.iter().filter(|&&a| files[a].file.last_offset >= last).map(|&a| files[a].last_modified).min();
        if !legacy {
            active.push(i);
        }
    }
}

/// `quotes/date=YYYY-MM-DD[/hour=HH]/<topic>-<partition>-<first>-<last>.parquet` → its parts.
fn parse_location(location: &ObjectPath, topic: &str) -> Option<MasterFile> {
    let parts: Vec<String> = location.parts().map(|p| p.as_ref().to_string()).collect();
    let prefix = prefix_of(topic);
    let (date, hour, name) = match parts.as_slice() {
        [folder, date, name] if *folder == prefix => (date, None, name),
        [folder, date, hour, name] if *folder == prefix => (date, Some(hour), name),
        _ => return None,
    };
    let day = chrono::NaiveDate::parse_from_str(date.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let legacy_hour = match hour {
        Some(h) => Some(h.strip_prefix("hour=")?.parse::<u32>().ok().filter(|h| *h < 24)?),
        None => None,
    };
    let day_start_ms = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    let (partition, first_offset, last_offset) = parse_name(name, topic)?;
    (first_offset <= last_offset).then(|| MasterFile {
        location: location.clone(),
        partition,
        first_offset,
        last_offset,
        day_start_ms,
        legacy_hour,
    })
}

fn parse_name(name: &str, topic: &str) -> Option<(i32, i64, i64)> {
    let rest = name.strip_prefix(topic)?.strip_prefix('-')?.strip_suffix(".parquet")?;
    let mut parts = rest.split('-');
    let p = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((p, first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, modified_s: i64) -> ListedFile {
        let file = parse_location(&ObjectPath::from(name), QUOTES_TOPIC).expect("a quotes file name");
        let last_modified = DateTime::<Utc>::from_timestamp(modified_s, 0).expect("time");
        ListedFile { file, size: 1, last_modified, superseded_since: None }
    }

    fn superseded(names: &[(&str, i64)]) -> Vec<Option<i64>> {
        let mut files: Vec<ListedFile> = names.iter().map(|(n, t)| listed(n, *t)).collect();
        mark_superseded(&mut files);
        files.iter().map(|f| f.superseded_since.map(|t| t.timestamp())).collect()
    }

    #[test]
    fn locations_parse_in_both_layouts_and_nothing_else() {
        let day = parse_location(&ObjectPath::from("quotes/date=2024-01-02/prism.quotes-3-10-20.parquet"), QUOTES_TOPIC).expect("day file");
        assert_eq!((day.partition, day.first_offset, day.last_offset, day.legacy_hour), (3, 10, 20, None));
        assert_eq!(day.day_start_ms, 1_704_153_600_000);
        let hour = parse_location(&ObjectPath::from("quotes/date=2024-01-02/hour=14/prism.quotes-0-1-2.parquet"), QUOTES_TOPIC)
            .expect("hour file");
        assert_eq!((hour.day_start_ms, hour.legacy_hour), (1_704_153_600_000, Some(14)));
        for other in [
            "quotes/date=2024-01-02/u-0-1-2.parquet",
            "quotes/date=2024-01-02/prism.quotes-0-2-1.parquet",
            "quotes/date=2024-01-02/hour=24/prism.quotes-0-1-2.parquet",
            "quotes/date=2024-13-02/prism.quotes-0-1-2.parquet",
            "segments/date=2024-01-02/prism.quotes-0-1-2.parquet",
            "access_logs/date=2024-01-02/prism.quotes-0-1-2.parquet",
            "quotes/prism.quotes-0-1-2.parquet",
        ] {
            assert_eq!(parse_location(&ObjectPath::from(other), QUOTES_TOPIC), None, "{other}");
        }
        assert_eq!(file_location(QUOTES_TOPIC, 3, day.day_start_ms, 10, 20), day.location);
        assert_eq!(day_start(1_704_205_800_000), 1_704_153_600_000);
        assert_eq!(day_start(-1), -DAY_MS);
        // Every archived topic has its own folder; a file parses only under its topic's.
        assert_eq!(prefix_of("prism.access_logs"), "access_logs");
        let cdc = "prism.cdc.lab.public.flights";
        let at = file_location(cdc, 1, day.day_start_ms, 5, 9);
        assert_eq!(at.as_ref(), "cdc.lab.public.flights/date=2024-01-02/prism.cdc.lab.public.flights-1-5-9.parquet");
        assert_eq!(parse_location(&at, cdc).map(|f| (f.partition, f.first_offset, f.last_offset)), Some((1, 5, 9)));
        assert_eq!(parse_location(&at, QUOTES_TOPIC), None);
    }

    #[test]
    fn access_and_full_disks_are_persistent_failures_networks_and_data_are_not() {
        let store = |source: object_store::Error| MasterError::Store { context: "writing x".into(), source };
        let io = |kind: std::io::ErrorKind| std::io::Error::new(kind, "x");
        let boxed = |kind| -> Box<dyn std::error::Error + Send + Sync> { Box::new(io(kind)) };
        let denied = object_store::Error::PermissionDenied { path: "x".into(), source: boxed(std::io::ErrorKind::Other) };
        assert!(store(denied).is_persistent());
        let full = object_store::Error::Generic { store: "LocalFileSystem", source: boxed(std::io::ErrorKind::StorageFull) };
        assert!(store(full).is_persistent(), "found in the source chain");
        assert!(MasterError::Io { context: "x".into(), source: io(std::io::ErrorKind::ReadOnlyFilesystem) }.is_persistent());
        assert!(MasterError::Location("x".into()).is_persistent());
        let network = object_store::Error::Generic { store: "S3", source: boxed(std::io::ErrorKind::ConnectionRefused) };
        assert!(!store(network).is_persistent());
        assert!(!store(object_store::Error::NotFound { path: "x".into(), source: boxed(std::io::ErrorKind::NotFound) }).is_persistent());
        assert!(!MasterError::Format { file: "x".into(), reason: "y".into() }.is_persistent());
    }

    #[test]
    fn containment_within_one_partition_and_day_supersedes() {
        let d = "quotes/date=2024-01-02";
        assert_eq!(
            superseded(&[
                (&format!("{d}/prism.quotes-0-0-4.parquet"), 50),
                (&format!("{d}/prism.quotes-0-0-9.parquet"), 100),
                (&format!("{d}/prism.quotes-0-5-9.parquet"), 60),
                (&format!("{d}/prism.quotes-0-10-12.parquet"), 70),
                (&format!("{d}/prism.quotes-1-0-4.parquet"), 70),
                (&format!("{d}/prism.quotes-0-0-19.parquet"), 90),
                ("quotes/date=2024-01-03/prism.quotes-0-1-2.parquet", 70),
            ]),
            // The earliest superseding file counts: 0-4 is inside 0-9 (100) and 0-19 (90).
            vec![Some(90), Some(90), Some(90), Some(90), None, None, None]
        );
        // Hour files of one day interleave and never supersede; a day file with an equal or
        // larger range supersedes them.
        assert_eq!(
            superseded(&[(&format!("{d}/hour=14/prism.quotes-0-0-2.parquet"), 1), (&format!("{d}/hour=15/prism.quotes-0-1-1.parquet"), 1)]),
            vec![None, None]
        );
        assert_eq!(
            superseded(&[
                (&format!("{d}/hour=14/prism.quotes-0-0-2.parquet"), 1),
                (&format!("{d}/hour=15/prism.quotes-0-1-1.parquet"), 1),
                (&format!("{d}/prism.quotes-0-0-2.parquet"), 5),
            ]),
            vec![Some(5), Some(5), None]
        );
    }
}
