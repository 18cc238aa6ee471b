//! The follower: discovers the files matching the globs, follows them through rotation and
//! truncation, and hands out their complete lines fairly.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::reader::{end_position, OpenFile, ReadPos};
use super::{Checkpoints, Fingerprint, TailError};

/// How the [`Follower`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowOptions {
    /// Files without a checkpoint found by the first poll are read from their end (from after
    /// their last complete line) instead of their start. Files appearing later are always read
    /// from their start (Vector's `read_from`, which applies to files present at startup).
    /// Default false.
    pub read_from_end_for_new_files: bool,
    /// How long a rotated file (its path now names another file, or nothing) is kept open at its
    /// end for a writer still appending to it before it is closed (Vector's `rotate_wait`).
    /// Default 5 s.
    pub rotate_wait: Duration,
    /// Longest line handed out whole (bytes, without its `\n` and `\r`); longer lines are cut
    /// and flagged [`Line::too_long`]. Default 1 MiB.
    pub max_line_bytes: usize,
}

impl Default for FollowOptions {
    fn default() -> FollowOptions {
        FollowOptions { read_from_end_for_new_files: false, rotate_wait: Duration::from_secs(5), max_line_bytes: 1 << 20 }
    }
}

/// One complete line of a followed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The file's identity.
    pub fingerprint: Fingerprint,
    /// The path the file was last seen at.
    pub path: String,
    /// The line's number in its file, from 1.
    pub line_no: u64,
    /// Byte offset of the line's first byte in its file (bytes).
    pub start: u64,
    /// Byte offset just after the line's `\n` (bytes): where its file continues once this line
    /// is acknowledged.
    pub end: u64,
    /// The line without its `\n` and a `\r` before it; cut to
    /// [`FollowOptions::max_line_bytes`] when `too_long`.
    pub text: Vec<u8>,
    /// The line was longer than [`FollowOptions::max_line_bytes`]: `text` is its head only (the
    /// caller dead-letters it).
    pub too_long: bool,
}

/// Follows the files matching glob patterns (see the [module docs](super) for the rules).
pub struct Follower {
    globs: Vec<String>,
    options: FollowOptions,
    /// Per fingerprint, where reading continues.
    positions: HashMap<Fingerprint, ReadPos>,
    files: Vec<OpenFile>,
    /// (device, inode) of files found truncated: read from 0 when next opened.
    fresh: HashSet<(u64, u64)>,
    /// Fingerprints whose file was truncated in this run: another file with it, shorter than its
    /// position, is the `copytruncate` copy, already read past its end through the original.
    truncated: HashSet<Fingerprint>,
    /// Paths already warned about (unreadable), so a poll loop does not repeat the warning.
    warned: HashSet<PathBuf>,
    first_poll: bool,
    /// Round-robin start of the next poll.
    next_start: usize,
}

impl Follower {
    /// A follower of the files matching `globs` (e.g. `/var/log/nginx/access.log*`), continuing
    /// each file known to `from` after its checkpoint. Opens nothing yet: [`Follower::poll`]
    /// does. An invalid pattern is [`TailError::Glob`] naming it.
    pub fn new(globs: &[String], from: &Checkpoints, options: FollowOptions) -> Result<Follower, TailError> {
        for pattern in globs {
            glob::Pattern::new(pattern).map_err(|e| TailError::Glob { pattern: pattern.clone(), reason: e.to_string() })?;
        }
        let positions = from.files.values().map(|c| (c.fingerprint, ReadPos { position: c.position, line: c.line })).collect();
        Ok(Follower {
            globs: globs.to_vec(),
            options,
            positions,
            files: Vec::new(),
            fresh: HashSet::new(),
            truncated: HashSet::new(),
            warned: HashSet::new(),
            first_poll: true,
            next_start: 0,
        })
    }

    /// Discovers the files matching the globs (again on every call), notices rotations and
    /// truncations, and reads the complete lines available: one line per file in turn, until
    /// `max_lines` lines or at least `max_bytes` bytes of lines (counting their `\n`) were read,
    /// or nothing more is available. Files vanishing while being looked at are skipped;
    /// unreadable ones are skipped with a warning. An error reading an open file is
    /// [`TailError::Io`] (polling again retries it).
    pub fn poll(&mut self, max_lines: usize, max_bytes: usize) -> Result<Vec<Line>, TailError> {
        self.check_open_files()?;
        self.discover();
        self.first_poll = false;
        let lines = self.read(max_lines, max_bytes as u64);
        self.close_rotated();
        lines
    }

    /// How many files are open (for a metric).
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Bytes the open files hold past their read positions (bytes): Σ(file length − read
    /// position). A file whose length cannot be read counts 0.
    pub fn bytes_behind(&self) -> u64 {
        let behind = |f: &OpenFile| {
            let position = self.positions.get(&f.fingerprint).map_or(0, |p| p.position);
            f.file.metadata().map_or(0, |m| m.len().saturating_sub(position))
        };
        self.files.iter().map(behind).sum()
    }

    /// Drops the handles of truncated files and notes which files were rotated away.
    fn check_open_files(&mut self) -> Result<(), TailError> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.files.len() {
            let f = &mut self.files[i];
            let len = f.file.metadata().map_err(|e| TailError::io(&f.path, e))?.len();
            let fingerprint = Fingerprint::of_file(&f.file).map_err(|e| TailError::io(&f.path, e))?;
            if f.replaced() || len < f.read_off() || fingerprint != Some(f.fingerprint) {
                tracing::warn!(
                    path = %f.path, fingerprint = %f.fingerprint, len, read = f.read_off(),
                    "tail: file truncated (copytruncate?); reading it again from its start"
                );
                self.fresh.insert(f.id);
                self.truncated.insert(f.fingerprint);
                self.files.remove(i);
                continue;
            }
            let names_it = fs::metadata(&f.watch_path).is_ok_and(|m| (m.dev(), m.ino()) == f.id);
            if names_it {
                f.detached_since = None;
            } else if f.detached_since.is_none() {
                tracing::debug!(path = %f.watch_path.display(), fingerprint = %f.fingerprint, "tail: file rotated away");
                f.detached_since = Some(now);
            }
            i += 1;
        }
        Ok(())
    }

    /// Opens the files matching the globs that are not open yet.
    fn discover(&mut self) {
        let mut paths = BTreeSet::new();
        for pattern in &self.globs {
            // Validated by `new`.
            let Ok(entries) = glob::glob(pattern) else { continue };
            for entry in entries {
                match entry {
                    Ok(path) => {
                        paths.insert(path);
                    }
                    Err(e) => warn_once(&mut self.warned, e.path(), e.error()),
                }
            }
        }
        let mut seen = HashSet::new();
        for path in paths {
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    warn_once(&mut self.warned, &path, &e);
                    continue;
                }
            };
            if !meta.is_file() {
                continue;
            }
            seen.insert((meta.dev(), meta.ino()));
            if let Some(f) = self.files.iter_mut().find(|f| f.id == (meta.dev(), meta.ino())) {
                if f.detached_since.is_some() {
                    f.path = path.display().to_string();
                }
                continue;
            }
            self.open(path);
        }
        self.fresh.retain(|id| seen.contains(id));
    }

    /// Opens `path` unless it has no fingerprint yet or is already open under its fingerprint.
    fn open(&mut self, path: PathBuf) {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => return warn_once(&mut self.warned, &path, &e),
        };
        let (meta, fingerprint) = match (file.metadata(), Fingerprint::of_file(&file)) {
            (Ok(meta), Ok(fingerprint)) => (meta, fingerprint),
            (Err(e), _) | (_, Err(e)) => return warn_once(&mut self.warned, &path, &e),
        };
        let id = (meta.dev(), meta.ino());
        let Some(fingerprint) = fingerprint else { return };
        // Replaced since it was looked at, or the same content as an open file (a rotated name or
        // a copy): read through the open handle.
        if self.files.iter().any(|f| f.id == id || f.fingerprint == fingerprint) {
            return;
        }
        let len = meta.len();
        let start = if self.fresh.remove(&id) {
            ReadPos::default()
        } else {
            match self.positions.get(&fingerprint) {
                Some(&pos) if pos.position <= len => pos,
                Some(_) if self.truncated.contains(&fingerprint) => return, // a copytruncate copy, already read
                Some(&pos) => {
                    tracing::warn!(
                        path = %path.display(), %fingerprint, len, position = pos.position,
                        "tail: file shorter than its checkpoint, truncated; reading it from its start"
                    );
                    ReadPos::default()
                }
                None if self.first_poll && self.options.read_from_end_for_new_files => match end_position(&file, len) {
                    Ok(pos) => pos,
                    Err(e) => return warn_once(&mut self.warned, &path, &e),
                },
                None => ReadPos::default(),
            }
        };
        tracing::debug!(path = %path.display(), %fingerprint, position = start.position, "tail: following file");
        self.warned.remove(&path);
        self.positions.insert(fingerprint, start);
        self.files.push(OpenFile::new(fingerprint, file, id, path, start.position));
    }

    /// One line per file in turn until a limit is reached or no file has a complete line.
    fn read(&mut self, max_lines: usize, max_bytes: u64) -> Result<Vec<Line>, TailError> {
        let mut lines = Vec::new();
        let mut bytes = 0u64;
        let n = self.files.len();
        if n == 0 {
            return Ok(lines);
        }
        let first = self.next_start % n;
        self.next_start = first + 1;
        let mut has_more = vec![true; n];
        while has_more.contains(&true) {
            for i in (first..n).chain(0..first) {
                if lines.len() >= max_lines || bytes >= max_bytes {
                    return Ok(lines);
                }
                if !has_more[i] {
                    continue;
                }
                let f = &mut self.files[i];
                let pos = self.positions.entry(f.fingerprint).or_default();
                match f.next_line(pos, self.options.max_line_bytes).map_err(|e| TailError::io(&f.path, e))? {
                    Some(line) => {
                        bytes += line.end - line.start;
                        lines.push(line);
                    }
                    None => has_more[i] = false,
                }
            }
        }
        Ok(lines)
    }

    /// Closes the rotated files that were read to their end after their rotation and stayed
    /// there for `rotate_wait`.
    fn close_rotated(&mut self) {
        let now = Instant::now();
        let wait = self.options.rotate_wait;
        self.files.retain(|f| {
            let (Some(detached), Some(eof_since), Some(last_eof)) = (f.detached_since, f.eof_since, f.last_eof) else { return true };
            let done = last_eof >= detached && now.saturating_duration_since(detached.max(eof_since)) >= wait;
            if done {
                tracing::debug!(path = %f.path, fingerprint = %f.fingerprint, "tail: closing rotated file");
            }
            !done
        });
    }
}

fn warn_once(warned: &mut HashSet<PathBuf>, path: &Path, error: &dyn std::fmt::Display) {
    if warned.insert(path.to_path_buf()) {
        tracing::warn!(path = %path.display(), %error, "tail: cannot read file; skipping it");
    }
}
