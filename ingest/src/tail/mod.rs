//! Following log files through rotation: the file-following core of the log-file source
//! (`prism ingest-logs`), after Vector's `file` source.
//!
//! A [`Follower`] tails the files matching glob patterns and hands out complete lines with
//! their exact byte positions ([`Line`]). It knows nothing about the event log: the caller
//! parses the lines, appends them, and only once the log acknowledged them records them in its
//! [`Checkpoints`] ([`Checkpoints::record`]) and saves those. The code is synchronous std I/O;
//! run [`Follower::poll`] on a blocking thread (`tokio::task::spawn_blocking`).
//!
//! Rules:
//!
//! - **Identity is content** (Vector's `checksum` fingerprint strategy): a file is its
//!   [`Fingerprint`], the CRC-32C of its first line including the `\n` (or of its first 4096
//!   bytes when they hold no newline). A file without a fingerprint yet (first line incomplete
//!   and shorter than 4096 bytes) is skipped until it has one. Two files with identical first
//!   lines are one file to the tailer; an open file is also tracked by its (device, inode).
//! - **Checkpoints** are per fingerprint: the byte offset after the last acknowledged line and
//!   the number of lines before it. A file found on start or rotation continues from its
//!   fingerprint's position; a file shorter than that position is a truncation, read from 0.
//!   Delivery is at least once: lines handed out but not acknowledged before a restart are
//!   handed out again.
//! - **Rename + create rotation**: the renamed file is read through its open handle to its end
//!   (a writer may still append to it briefly) and closed once it has been at its end for
//!   [`FollowOptions::rotate_wait`] after its path stopped naming it. The new file at the old
//!   path has a new fingerprint and is read from 0. When the globs also match the rotated name,
//!   that name is the same file: skipped while the handle is open, reopened at its read position
//!   after the handle closed; nothing is read twice.
//! - **`copytruncate`** (logrotate): the copy has the old fingerprint; the original is
//!   truncated. A handle whose file became shorter than what was read, or whose first line
//!   changed, was truncated (checked on each poll, and after each read that found bytes: what a
//!   read finds after the first line changed is the new content, not handed out under the old
//!   fingerprint): a warning, the handle is dropped, the old fingerprint's position is
//!   kept (the copy continues from it when the globs match the copy) and the path is read afresh
//!   from 0. Lines written between logrotate's copy and its truncate are lost unless the globs
//!   also match the copy (logrotate documents that window for `copytruncate`).
//! - **Lines**: only complete lines (ending in `\n`) are handed out; a trailing partial line
//!   waits until it is complete (a last line never completed is never handed out). `\r\n` ends
//!   a line like `\n`. A line longer than [`FollowOptions::max_line_bytes`] is handed out once,
//!   cut, with [`Line::too_long`] set (for the dead-letter topic); its rest is skipped.

mod checkpoint;
mod fingerprint;
mod follower;
mod reader;
#[cfg(test)]
mod tests;

pub use checkpoint::{Checkpoints, FileCheckpoint, CHECKPOINT_VERSION};
pub use fingerprint::{Fingerprint, FINGERPRINT_MAX_BYTES};
pub use follower::{FollowOptions, Follower, Line};

/// Why tailing or its checkpoints failed.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// A file-name pattern that is not a valid glob.
    #[error("invalid glob {pattern:?}: {reason}")]
    Glob {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file that cannot be read back (corrupt, or of an unknown version).
    #[error("checkpoint file {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl TailError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> TailError {
        TailError::Io { path: path.as_ref().display().to_string(), source }
    }
}
