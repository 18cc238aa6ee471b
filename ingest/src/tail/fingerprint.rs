//! A file's identity by content: Vector's `checksum` fingerprint strategy.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// How many bytes of a file the fingerprint reads at most (bytes).
pub const FINGERPRINT_MAX_BYTES: usize = 4096;

/// The identity of a followed file: the CRC-32C of its first line including its `\n`, or of its
/// first [`FINGERPRINT_MAX_BYTES`] bytes when they hold no newline (Vector's `file` source,
/// fingerprint strategy `checksum`).
///
/// Appending never changes it, renaming keeps it, a copy shares it; truncating and rewriting
/// changes it unless the new first line equals the old one. Two files with identical first
/// lines are one file to the tailer. Serialized as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub u32);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl Fingerprint {
    /// The fingerprint of a file starting with `prefix` (its first bytes, as many as there are,
    /// up to at least [`FINGERPRINT_MAX_BYTES`]); `None` while its first line is incomplete and
    /// shorter than [`FINGERPRINT_MAX_BYTES`].
    pub fn of_prefix(prefix: &[u8]) -> Option<Fingerprint> {
        let head = &prefix[..prefix.len().min(FINGERPRINT_MAX_BYTES)];
        match head.iter().position(|&b| b == b'\n') {
            Some(newline) => Some(Fingerprint(crc32c::crc32c(&head[..=newline]))),
            None if head.len() == FINGERPRINT_MAX_BYTES => Some(Fingerprint(crc32c::crc32c(head))),
            None => None,
        }
    }

    /// The fingerprint of the file behind `file`, read with positioned reads (the handle's
    /// cursor is untouched); `None` as for [`Fingerprint::of_prefix`].
    pub fn of_file(file: &File) -> io::Result<Option<Fingerprint>> {
        let mut head = vec![0u8; FINGERPRINT_MAX_BYTES];
        let mut filled = 0;
        while filled < head.len() {
            match file.read_at(&mut head[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    if head[filled - n..filled].contains(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Fingerprint::of_prefix(&head[..filled]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_first_line_with_its_newline_or_the_first_4096_bytes() {
        assert_eq!(Fingerprint::of_prefix(b"GET /a\nGET /b\n"), Some(Fingerprint(crc32c::crc32c(b"GET /a\n"))));
        assert_eq!(Fingerprint::of_prefix(b"GET /a\n"), Fingerprint::of_prefix(b"GET /a\nmore"));
        assert_ne!(Fingerprint::of_prefix(b"GET /a\n"), Fingerprint::of_prefix(b"GET /b\n"));
        // Not complete yet: no fingerprint.
        assert_eq!(Fingerprint::of_prefix(b""), None);
        assert_eq!(Fingerprint::of_prefix(b"GET /a"), None);
        // A first line of 4096 bytes or more: its first 4096 bytes.
        let long = vec![b'x'; 5000];
        assert_eq!(Fingerprint::of_prefix(&long), Some(Fingerprint(crc32c::crc32c(&long[..4096]))));
        assert_eq!(Fingerprint::of_prefix(&long[..4096]), Fingerprint::of_prefix(&long));
        assert_eq!(Fingerprint::of_prefix(&long[..4095]), None);
    }

    #[test]
    fn of_file_reads_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"first").unwrap();
        assert_eq!(Fingerprint::of_file(&File::open(&path).unwrap()).unwrap(), None);
        file.write_all(b" line\nsecond\n").unwrap();
        let fp = Fingerprint::of_file(&File::open(&path).unwrap()).unwrap();
        assert_eq!(fp, Some(Fingerprint(crc32c::crc32c(b"first line\n"))));
        assert_eq!(serde_json::to_string(&fp.unwrap()).unwrap(), crc32c::crc32c(b"first line\n").to_string());
    }
}
