//! Checkpoints: how far each followed file was acknowledged, saved atomically as JSON.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Fingerprint, Line, TailError};

/// The version of the checkpoint file's format (its `"version"` field).
pub const CHECKPOINT_VERSION: u32 = 1;

/// How far one file (one [`Fingerprint`]) was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// The file's identity.
    pub fingerprint: Fingerprint,
    /// The last path it was seen at, for people (identity is the fingerprint).
    pub path: String,
    /// Byte offset just after the last acknowledged line (bytes).
    pub position: u64,
    /// Lines before `position`: the next line is line `line + 1`.
    pub line: u64,
}

/// The tailer's checkpoints: per file, the position after the last line the event log
/// acknowledged; plus an opaque field the caller keeps alongside.
///
/// On disk (see [`Checkpoints::save`]): `{"version": 1, "files": [FileCheckpoint…],
/// "log_end_offsets": […]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CheckpointsFile", into = "CheckpointsFile")]
pub struct Checkpoints {
    /// Per fingerprint, how far the file was acknowledged.
    pub files: BTreeMap<Fingerprint, FileCheckpoint>,
    /// The caller's: opaque to this module (e.g. the event log's end offsets at the last save);
    /// empty by default.
    pub log_end_offsets: Vec<i64>,
}

/// The on-disk form: JSON object keys must be strings, so the files are a list.
#[derive(Serialize, Deserialize)]
struct CheckpointsFile {
    version: u32,
    #[serde(default)]
    files: Vec<FileCheckpoint>,
    #[serde(default)]
    log_end_offsets: Vec<i64>,
}

impl TryFrom<CheckpointsFile> for Checkpoints {
    type Error = String;

    fn try_from(file: CheckpointsFile) -> Result<Checkpoints, String> {
        if file.version != CHECKPOINT_VERSION {
            return Err(format!("version {} is not the supported version {CHECKPOINT_VERSION}", file.version));
        }
        let files = file.files.into_iter().map(|f| (f.fingerprint, f)).collect();
        Ok(Checkpoints { files, log_end_offsets: file.log_end_offsets })
    }
}

impl From<Checkpoints> for CheckpointsFile {
    fn from(c: Checkpoints) -> CheckpointsFile {
        CheckpointsFile { version: CHECKPOINT_VERSION, files: c.files.into_values().collect(), log_end_offsets: c.log_end_offsets }
    }
}

impl Checkpoints {
    /// Reads the checkpoints saved at `path`; a missing file is no checkpoints (a first start).
    /// A file that is not valid checkpoint JSON is [`TailError::Checkpoint`] naming it.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoints, TailError> {
        let path = path.as_ref();
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checkpoints::default()),
            Err(e) => return Err(TailError::io(path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| TailError::Checkpoint { path: path.display().to_string(), reason: e.to_string() })
    }

    /// Saves the checkpoints to `path` atomically: writes `<path>.tmp`, syncs it, renames it over
    /// `path` and syncs the directory, so a crash leaves the old or the new checkpoints, whole.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TailError> {
        let path = path.as_ref();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| TailError::Checkpoint { path: path.display().to_string(), reason: e.to_string() })?;
        json.push(b'\n');
        let write = || -> io::Result<()> {
            let mut file = File::create(tmp)?;
            file.write_all(&json)?;
            file.sync_all()
        };
        write().map_err(|e| TailError::io(tmp, e))?;
        fs::rename(tmp, path).map_err(|e| TailError::io(path, e))?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| TailError::io(dir, e))
    }

    /// Records that the event log acknowledged `line` (and every line of its file before it):
    /// its file continues after it. Record lines in the order [`super::Follower::poll`] handed
    /// them out.
    pub fn record(&mut self, line: &Line) {
        self.files.insert(
            line.fingerprint,
            FileCheckpoint { fingerprint: line.fingerprint, path: line.path.clone(), position: line.end, line: line.line_no },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoints {
        let mut c = Checkpoints { log_end_offsets: vec![17, -1, 0], ..Checkpoints::default() };
        for (fp, path, position, line) in [(7, "/var/log/access.log", 1234, 10), (u32::MAX, "/var/log/access.log.1", 0, 0)] {
            c.files.insert(Fingerprint(fp), FileCheckpoint { fingerprint: Fingerprint(fp), path: path.into(), position, line });
        }
        c
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail.json");
        assert_eq!(Checkpoints::load(&path).unwrap(), Checkpoints::default(), "missing file: no checkpoints");
        sample().save(&path).unwrap();
        assert_eq!(Checkpoints::load(&path).unwrap(), sample());
        assert!(!dir.path().join("tail.json.tmp").exists());
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["version"], serde_json::json!(1));
        assert_eq!(json["files"][0]["fingerprint"], serde_json::json!(7));
        // Saving again replaces the file.
        let mut fewer = sample();
        fewer.files.remove(&Fingerprint(7));
        fewer.save(&path).unwrap();
        assert_eq!(Checkpoints::load(&path).unwrap(), fewer);
    }

    #[test]
    fn a_corrupt_or_unknown_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail.json");
        fs::write(&path, b"{\"version\": 1, \"files\": [{\"fingerprint\": 7, \"pa").unwrap();
        let err = Checkpoints::load(&path).unwrap_err();
        assert!(matches!(err, TailError::Checkpoint { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        fs::write(&path, b"{\"version\": 2, \"files\": []}").unwrap();
        let err = Checkpoints::load(&path).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn record_moves_the_file_past_the_line() {
        let mut c = Checkpoints::default();
        let line = Line {
            fingerprint: Fingerprint(9),
            path: "a.log".into(),
            line_no: 3,
            start: 20,
            end: 30,
            text: b"x".to_vec(),
            too_long: false,
        };
        c.record(&line);
        assert_eq!(c.files[&Fingerprint(9)], FileCheckpoint { fingerprint: Fingerprint(9), path: "a.log".into(), position: 30, line: 3 });
    }
}
