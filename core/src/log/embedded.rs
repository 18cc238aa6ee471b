//! The embedded event log: the single-machine default (DESIGN §7).
//!
//! Layout: `<dir>/<topic>/<partition>/<base offset, 20 digits>.log`, each segment a run of
//! frames (see [`super::record`]). A segment is rolled when it would pass `segment_bytes`.
//! On open every segment is scanned and indexed; a torn or corrupt tail of a partition's last
//! segment is cut (like Kafka's log recovery after an unclean shutdown), while a bad frame in
//! an older, sealed segment is reported as [`LogError::Corrupt`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::partitioner::partition_for_key;
use super::record::{check_frame, decode, encode, Frame};
use super::{EventLog, LogError, LogRecord, NewRecord};
use crate::event::LogPosition;

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every append call: no acknowledged record is lost on power failure.
    Always,
    /// At most this long between syncs: a power failure loses at most that window.
    Interval(Duration),
    /// Leave it to the OS (records survive a process crash, not a power failure).
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    /// `always`, `never`, `interval` (1 s) or `interval:<ms>`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            "interval" => Ok(FsyncPolicy::Interval(Duration::from_secs(1))),
            other => other
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .map(|ms| FsyncPolicy::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| format!("fsync policy {s:?}: use always, never, interval or interval:<ms>")),
        }
    }
}

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct EmbeddedLogConfig {
    /// Partitions of a topic created implicitly by [`EventLog::ensure_topic`].
    pub fsync: FsyncPolicy,
    /// Roll a segment when it would grow past this many bytes (default 64 MiB).
    pub segment_bytes: u64,
}

impl Default for EmbeddedLogConfig {
    fn default() -> Self {
        EmbeddedLogConfig { fsync: FsyncPolicy::Interval(Duration::from_secs(1)), segment_bytes: 64 << 20 }
    }
}

/// The embedded, file-backed [`EventLog`].
pub struct EmbeddedLog {
    dir: PathBuf,
    config: EmbeddedLogConfig,
    topics: Mutex<HashMap<String, Arc<Vec<Mutex<Partition>>>>>,
    appended: Notify,
    /// Group commit of [`EventLog::flush`]: one pass of `fdatasync` covers every append that
    /// returned before the pass began, and the flushes that wait meanwhile share the next pass
    /// instead of each syncing every partition.
    flush_turn: tokio::sync::Mutex<()>,
    /// Append calls returned so far.
    appends: AtomicU64,
    /// Append calls covered by the last completed flush pass.
    flushed: AtomicU64,
}

struct Segment {
    base_offset: i64,
    path: PathBuf,
    file: File,
    /// Byte position of each record's frame; `positions.len()` records.
    positions: Vec<u64>,
    len: u64,
}

struct Partition {
    dir: PathBuf,
    segments: Vec<Segment>,
    next_offset: i64,
    dirty: bool,
    last_sync: Instant,
    /// Reused for the bytes of each read (a fresh zeroed buffer per read costs page faults).
    scratch: Vec<u8>,
}

impl EmbeddedLog {
    /// Opens (or creates) the log under `dir`, recovering every existing topic.
    ///
    /// Errors: [`LogError::Io`] when the folder cannot be read or created,
    /// [`LogError::Corrupt`] for a bad frame inside a sealed segment.
    pub fn open(dir: impl AsRef<Path>, config: EmbeddedLogConfig) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
        let mut topics = HashMap::new();
        for entry in fs::read_dir(&dir).map_err(|e| LogError::io(format!("listing {}", dir.display()), e))? {
            let entry = entry.map_err(|e| LogError::io("listing topics", e))?;
            if !entry.path().is_dir() {
                continue;
            }
            let topic = entry.file_name().to_string_lossy().to_string();
            let mut partitions = Vec::new();
            while entry.path().join(partitions.len().to_string()).is_dir() {
                let pdir = entry.path().join(partitions.len().to_string());
                partitions.push(Mutex::new(Partition::open(pdir)?));
            }
            if !partitions.is_empty() {
                topics.insert(topic, Arc::new(partitions));
            }
        }
        Ok(EmbeddedLog {
            dir,
            config,
            topics: Mutex::new(topics),
            appended: Notify::new(),
            flush_turn: tokio::sync::Mutex::new(()),
            appends: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        })
    }

    fn topic(&self, topic: &str) -> Result<Arc<Vec<Mutex<Partition>>>, LogError> {
        lock(&self.topics)?.get(topic).cloned().ok_or_else(|| LogError::OutOfRange(format!("no topic {topic:?} in the embedded log")))
    }

    fn append_sync(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<LogPosition>, LogError> {
        let partitions = self.topic(topic)?;
        let n = partitions.len() as i32;
        let mut by_partition: Vec<Vec<usize>> = vec![Vec::new(); n as usize];
        for (i, r) in records.iter().enumerate() {
            by_partition[partition_for_key(&r.key, n) as usize].push(i);
        }
        let mut out = vec![LogPosition { partition: 0, offset: 0 }; records.len()];
        let mut buf = Vec::new();
        for (p, idxs) in by_partition.iter().enumerate() {
            if idxs.is_empty() {
                continue;
            }
            let mut part = lock(&partitions[p])?;
            buf.clear();
            let mut frame_starts = Vec::with_capacity(idxs.len());
            for &i in idxs {
                frame_starts.push(buf.len() as u64);
                encode(&records[i], &mut buf)?;
            }
            let first = part.write(&buf, &frame_starts, &self.config)?;
            for (k, &i) in idxs.iter().enumerate() {
                out[i] = LogPosition { partition: p as i32, offset: first + k as i64 };
            }
        }
        Ok(out)
    }

    fn read_sync(&self, topic: &str, partition: i32, from: i64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let partitions = self.topic(topic)?;
        let part = partitions
            .get(usize::try_from(partition).unwrap_or(usize::MAX))
            .ok_or_else(|| LogError::OutOfRange(format!("{topic} has no partition {partition}")))?;
        let records = lock(part)?.read(partition, from, max);
        records
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, LogError> {
    m.lock().map_err(|_| LogError::Corrupt("a writer panicked while holding the log lock".into()))
}

impl Partition {
    fn open(dir: PathBuf) -> Result<Partition, LogError> {
        let mut paths: Vec<(i64, PathBuf)> = fs::read_dir(&dir)
            .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let base = name.strip_suffix(".log")?.parse::<i64>().ok()?;
                Some((base, e.path()))
            })
            .collect();
        paths.sort();
        let mut segments = Vec::new();
        let count = paths.len();
        for (i, (base, path)) in paths.into_iter().enumerate() {
            segments.push(Segment::recover(base, path, i + 1 == count)?);
        }
        let next_offset = segments.last().map_or(0, |s| s.base_offset + s.positions.len() as i64);
        let mut part = Partition { dir, segments, next_offset, dirty: false, last_sync: Instant::now(), scratch: Vec::new() };
        if part.segments.is_empty() {
            part.roll()?;
        }
        Ok(part)
    }

    fn roll(&mut self) -> Result<(), LogError> {
        let path = self.dir.join(format!("{:020}.log", self.next_offset));
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| LogError::io(format!("creating {}", path.display()), e))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment { base_offset: self.next_offset, path, file, positions: Vec::new(), len: 0 });
        Ok(())
    }

    /// Writes framed records in one `write` call; returns the first record's offset.
    fn write(&mut self, buf: &[u8], frame_starts: &[u64], config: &EmbeddedLogConfig) -> Result<i64, LogError> {
        let needs_roll = self.segments.last().is_some_and(|s| s.len > 0 && s.len + buf.len() as u64 > config.segment_bytes);
        if needs_roll {
            self.sync()?;
            self.roll()?;
        }
        let first = self.next_offset;
        let seg = self.segments.last_mut().ok_or_else(|| LogError::Corrupt("partition without a segment".into()))?;
        if let Err(e) = (&seg.file).write_all(buf) {
            // Leave no half-written frames behind a live writer: cut back to the last record.
            let _ = seg.file.set_len(seg.len);
            return Err(LogError::io(format!("appending to {}", seg.path.display()), e));
        }
        let base = seg.len;
        seg.positions.extend(frame_starts.iter().map(|s| base + s));
        seg.len += buf.len() as u64;
        self.next_offset += frame_starts.len() as i64;
        self.dirty = true;
        match config.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => self.sync()?,
            _ => {}
        }
        Ok(first)
    }

    /// For a flush pass: a handle of the file to sync when anything was written since the last
    /// sync (marked synced now; [`Partition::sync_failed`] undoes that), synced outside the
    /// partition's lock so that appends go on meanwhile.
    fn take_dirty(&mut self) -> Result<Option<(File, PathBuf)>, LogError> {
        if !self.dirty {
            return Ok(None);
        }
        let Some(seg) = self.segments.last() else { return Ok(None) };
        let file = seg.file.try_clone().map_err(|e| LogError::io(format!("opening {} to sync it", seg.path.display()), e))?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(Some((file, seg.path.clone())))
    }

    fn sync_failed(&mut self) {
        self.dirty = true;
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.dirty {
            if let Some(seg) = self.segments.last() {
                seg.file.sync_data().map_err(|e| LogError::io(format!("syncing {}", seg.path.display()), e))?;
            }
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn read(&mut self, partition: i32, from: i64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        if from < 0 || from > self.next_offset {
            return Err(LogError::OutOfRange(format!(
                "offset {from} is outside partition {partition} (log end offset {})",
                self.next_offset
            )));
        }
        let mut out = Vec::with_capacity(max.min((self.next_offset - from).max(0) as usize));
        let mut offset = from;
        let bytes = &mut self.scratch;
        // Segments are sorted by base offset; start at the last one whose base ≤ offset.
        let start = self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        for seg in &self.segments[start..] {
            if out.len() >= max || offset >= self.next_offset {
                break;
            }
            let idx = (offset - seg.base_offset) as usize;
            if idx >= seg.positions.len() {
                continue;
            }
            let take = (seg.positions.len() - idx).min(max - out.len());
            let begin = seg.positions[idx];
            let end = seg.positions.get(idx + take).copied().unwrap_or(seg.len);
            bytes.clear();
            bytes.resize((end - begin) as usize, 0);
            seg.file.read_exact_at(bytes, begin).map_err(|e| LogError::io(format!("reading {}", seg.path.display()), e))?;
            let mut at = 0usize;
            for _ in 0..take {
                match check_frame(&bytes[at..]) {
                    Frame::Valid { body, len } => {
                        out.push(decode(body, partition, offset)?);
                        at += len;
                        offset += 1;
                    }
                    Frame::Truncated | Frame::Bad(_) => {
                        return Err(LogError::Corrupt(format!(
                            "record at partition {partition} offset {offset} in {} fails its check",
                            seg.path.display()
                        )))
                    }
                }
            }
        }
        if self.scratch.capacity() > SCRATCH_KEEP_BYTES {
            self.scratch = Vec::new();
        }
        Ok(out)
    }
}

/// A read buffer larger than this is not kept for the next read.
const SCRATCH_KEEP_BYTES: usize = 8 << 20;

impl Segment {
    /// Scans a segment, indexing its frames. In the last segment a torn or bad tail is cut.
    fn recover(base_offset: i64, path: PathBuf, is_last: bool) -> Result<Segment, LogError> {
        let bytes = fs::read(&path).map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
        let mut positions = Vec::new();
        let mut at = 0usize;
        let mut problem = None;
        while at < bytes.len() {
            match check_frame(&bytes[at..]) {
                Frame::Valid { len, .. } => {
                    positions.push(at as u64);
                    at += len;
                }
                Frame::Truncated => {
                    problem = Some("torn write".to_string());
                    break;
                }
                Frame::Bad(why) => {
                    problem = Some(why);
                    break;
                }
            }
        }
        let file =
            OpenOptions::new().read(true).append(true).open(&path).map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
        if let Some(why) = problem {
            if !is_last {
                return Err(LogError::Corrupt(format!("{} at byte {at} of sealed segment {}", why, path.display())));
            }
            tracing::warn!(
                segment = %path.display(),
                kept_records = positions.len(),
                cut_bytes = bytes.len() - at,
                reason = %why,
                "cutting the log's torn tail"
            );
            file.set_len(at as u64).map_err(|e| LogError::io(format!("truncating {}", path.display()), e))?;
            file.sync_all().map_err(|e| LogError::io(format!("syncing {}", path.display()), e))?;
        }
        Ok(Segment { base_offset, path, file, positions, len: at as u64 })
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| LogError::io(format!("syncing folder {}", dir.display()), e))
}

impl EventLog for EmbeddedLog {
    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<i32, LogError> {
        if topic.is_empty() || topic.contains(['/', '\\']) || topic.starts_with('.') {
            return Err(LogError::Refused(format!("bad topic name {topic:?}")));
        }
        let mut topics = lock(&self.topics)?;
        if let Some(t) = topics.get(topic) {
            return Ok(t.len() as i32);
        }
        let mut parts = Vec::new();
        for p in 0..partitions.max(1) {
            let pdir = self.dir.join(topic).join(p.to_string());
            fs::create_dir_all(&pdir).map_err(|e| LogError::io(format!("creating {}", pdir.display()), e))?;
            parts.push(Mutex::new(Partition::open(pdir)?));
        }
        sync_dir(&self.dir)?;
        let n = parts.len() as i32;
        topics.insert(topic.to_string(), Arc::new(parts));
        Ok(n)
    }

    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<LogPosition>, LogError> {
        let out = self.append_sync(topic, records)?;
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.appended.notify_waiters();
        Ok(out)
    }

    async fn read(
        &self,
        topic: &str,
        partition: i32,
        from_offset: i64,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<LogRecord>, LogError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let notified = self.appended.notified();
            let records = self.read_sync(topic, partition, from_offset, max_records)?;
            if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(records);
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, LogError> {
        let partitions = self.topic(topic)?;
        partitions.iter().map(|p| Ok(lock(p)?.next_offset)).collect()
    }

    async fn start_offsets(&self, topic: &str) -> Result<Vec<i64>, LogError> {
        let partitions = self.topic(topic)?;
        partitions.iter().map(|p| Ok(lock(p)?.segments.first().map_or(0, |s| s.base_offset))).collect()
    }

    /// Everything appended before the call is on disk (`fdatasync`) when it returns. Concurrent
    /// calls are grouped: one pass syncs for all the appends before it began.
    async fn flush(&self) -> Result<(), LogError> {
        let mine = self.appends.load(Ordering::SeqCst);
        let _turn = self.flush_turn.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= mine {
            // A pass that began after our appends returned has synced them.
            return Ok(());
        }
        let upto = self.appends.load(Ordering::SeqCst);
        let topics: Vec<_> = lock(&self.topics)?.values().cloned().collect();
        // Every dirty partition's file is synced at once, each on a blocking thread: ext4 folds
        // concurrent `fdatasync`s into one journal commit, so a pass over the quotes topic's
        // partitions waits for about one sync instead of one after the other.
        let mut syncs = Vec::new();
        for parts in topics {
            for index in 0..parts.len() {
                let Some((file, path)) = lock(&parts[index])?.take_dirty()? else { continue };
                let parts = parts.clone();
                syncs.push(tokio::task::spawn_blocking(move || {
                    file.sync_data().map_err(|e| {
                        if let Ok(mut p) = lock(&parts[index]) {
                            p.sync_failed();
                        }
                        LogError::io(format!("syncing {}", path.display()), e)
                    })
                }));
            }
        }
        for done in futures_util::future::join_all(syncs).await {
            done.map_err(|e| LogError::Corrupt(format!("the flush task failed: {e}")))??;
        }
        self.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}
