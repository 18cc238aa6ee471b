//! One open followed file: splitting what it holds past its read position into lines.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use super::{Fingerprint, Line};

/// Bytes read from a file at a time (bytes).
const CHUNK_BYTES: usize = 64 * 1024;

/// Where reading a fingerprint continues: the byte offset after the last line handed out and
/// the number of lines before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReadPos {
    pub position: u64,
    pub line: u64,
}

/// A line longer than the limit, being skipped up to its `\n`.
struct LongLine {
    start: u64,
    text: Vec<u8>,
}

/// An open followed file.
pub(super) struct OpenFile {
    pub fingerprint: Fingerprint,
    pub file: File,
    /// (device, inode) of the open file.
    pub id: (u64, u64),
    /// The path it was opened at: once that path names another file or nothing, it was rotated.
    pub watch_path: PathBuf,
    /// The last path it was seen at (handed out with its lines).
    pub path: String,
    /// Bytes read past the last line handed out (or past a long line's skipped part), ending at
    /// `read_off`.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no `\n`.
    scanned: usize,
    /// File offset of the next read (bytes).
    read_off: u64,
    long: Option<LongLine>,
    /// When the current run of reads that found nothing new began.
    pub eof_since: Option<Instant>,
    /// When a read last found nothing new.
    pub last_eof: Option<Instant>,
    /// When its watch path was first seen not to name it.
    pub detached_since: Option<Instant>,
    /// A read found the file no longer has its fingerprint (truncated, and perhaps written
    /// again): nothing more is read through this handle.
    replaced: bool,
}

impl OpenFile {
    pub fn new(fingerprint: Fingerprint, file: File, id: (u64, u64), path: PathBuf, position: u64) -> OpenFile {
        OpenFile {
            fingerprint,
            file,
            id,
            path: path.display().to_string(),
            watch_path: path,
            buf: Vec::new(),
            scanned: 0,
            read_off: position,
            long: None,
            eof_since: None,
            last_eof: None,
            detached_since: None,
            replaced: false,
        }
    }

    /// File offset up to which the file was read (bytes): a file now shorter was truncated.
    pub fn read_off(&self) -> u64 {
        self.read_off
    }

    /// True once a read found that the file no longer has its fingerprint (see
    /// [`OpenFile::next_line`]): the handle must be dropped like a truncated file's.
    pub fn replaced(&self) -> bool {
        self.replaced
    }

    /// The next complete line at `pos` (which this call advances past it), reading more of the
    /// file as needed; `None` at the end of what the file holds (a partial line stays buffered).
    pub fn next_line(&mut self, pos: &mut ReadPos, max_line_bytes: usize) -> io::Result<Option<Line>> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n').map(|i| self.scanned + i) {
                let end = self.read_off - (self.buf.len() - i) as u64 + 1;
                let (start, text, too_long) = match self.long.take() {
                    Some(long) => (long.start, long.text, true),
                    None => {
                        let mut text = self.buf[..i].to_vec();
                        if text.last() == Some(&b'\r') {
                            text.pop();
                        }
                        let too_long = text.len() > max_line_bytes;
                        text.truncate(max_line_bytes);
                        (pos.position, text, too_long)
                    }
                };
                self.buf.drain(..=i);
                self.scanned = 0;
                pos.position = end;
                pos.line += 1;
                let line = Line { fingerprint: self.fingerprint, path: self.path.clone(), line_no: pos.line, start, end, text, too_long };
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            if self.long.is_some() {
                self.buf.clear();
                self.scanned = 0;
            } else if self.buf.len() > max_line_bytes.saturating_add(1) {
                // Longer than the limit even if it ends in "\r\n": keep its head, skip the rest.
                self.long = Some(LongLine { start: pos.position, text: self.buf[..max_line_bytes].to_vec() });
                self.buf.clear();
                self.scanned = 0;
            }
            if self.read_more()? == 0 {
                if self.replaced {
                    return Ok(None);
                }
                let now = Instant::now();
                self.eof_since.get_or_insert(now);
                self.last_eof = Some(now);
                return Ok(None);
            }
            self.eof_since = None;
        }
    }

    /// Reads the next chunk past `read_off` into `buf`; 0 at the end of the file, or when the
    /// file no longer has its fingerprint after the read (`replaced`).
    fn read_more(&mut self) -> io::Result<usize> {
        if self.replaced {
            return Ok(0);
        }
        let old = self.buf.len();
        self.buf.resize(old + CHUNK_BYTES, 0);
        let read = loop {
            match self.file.read_at(&mut self.buf[old..], self.read_off) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                read => break read,
            }
        };
        let n = match &read {
            Ok(n) => *n,
            Err(_) => 0,
        };
        self.buf.truncate(old + n);
        // Truncated and written again since the follower last looked at the fingerprint
        // (`copytruncate` can land between that look and this read): what was read may be the new
        // content. Still the fingerprint after the read: what was read is this file's.
        if n > 0 {
            match Fingerprint::of_file(&self.file) {
                Ok(fingerprint) if fingerprint == Some(self.fingerprint) => {}
                Ok(_) => {
                    self.buf.truncate(old);
                    self.replaced = true;
                    return Ok(0);
                }
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
        self.read_off += n as u64;
        read
    }
}

/// Where reading a file of `len` bytes from its end starts: after its last `\n`, with the lines
/// before counted (reads the whole file once).
pub(super) fn end_position(file: &File, len: u64) -> io::Result<ReadPos> {
    let mut pos = ReadPos::default();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut off = 0u64;
    while off < len {
        let want = (len - off).min(CHUNK_BYTES as u64) as usize;
        let n = match file.read_at(&mut buf[..want], off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, &b)| b == b'\n') {
            pos.line += 1;
            pos.position = off + i as u64 + 1;
        }
        off += n as u64;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn open(content: &[u8]) -> (tempfile::TempDir, File, OpenFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut writer = File::create(&path).unwrap();
        writer.write_all(content).unwrap();
        let fingerprint = Fingerprint::of_prefix(content).expect("content with a first line");
        let reader = OpenFile::new(fingerprint, File::open(&path).unwrap(), (0, 0), path, 0);
        (dir, writer, reader)
    }

    fn texts(f: &mut OpenFile, pos: &mut ReadPos, max: usize) -> Vec<(Vec<u8>, u64, u64, bool)> {
        std::iter::from_fn(|| f.next_line(pos, max).unwrap()).map(|l| (l.text, l.start, l.end, l.too_long)).collect()
    }

    #[test]
    fn lines_across_chunks_and_a_long_line_in_pieces() {
        let big = vec![b'y'; CHUNK_BYTES * 2 + 5];
        let mut content = b"a\r\n".to_vec();
        content.extend_from_slice(&big);
        content.extend_from_slice(b"\nb\n");
        let (_dir, mut writer, mut f) = open(&content);
        let mut pos = ReadPos::default();
        let got = texts(&mut f, &mut pos, 10);
        assert_eq!(got[0], (b"a".to_vec(), 0, 3, false));
        assert_eq!(got[1], (vec![b'y'; 10], 3, 3 + big.len() as u64 + 1, true));
        assert_eq!(got[2], (b"b".to_vec(), 3 + big.len() as u64 + 1, content.len() as u64, false));
        assert_eq!(pos, ReadPos { position: content.len() as u64, line: 3 });
        // A long line arriving in pieces is handed out once, when its end arrives.
        writer.write_all(&[b'z'; 25]).unwrap();
        assert!(texts(&mut f, &mut pos, 10).is_empty());
        writer.write_all(&[b'z'; 25]).unwrap();
        assert!(texts(&mut f, &mut pos, 10).is_empty());
        writer.write_all(b"\nexactly10\r\n").unwrap();
        let got = texts(&mut f, &mut pos, 10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (vec![b'z'; 10], content.len() as u64, content.len() as u64 + 51, true));
        assert_eq!(got[1].0, b"exactly10".to_vec());
        assert!(!got[1].3);
        assert_eq!(pos.line, 5);
    }

    /// A `copytruncate` between the follower's fingerprint check (or its opening of the file)
    /// and its read: the bytes the read finds are the new content, not more of the file the
    /// fingerprint names, and are not handed out under it.
    #[test]
    fn what_is_read_after_the_file_was_truncated_and_rewritten_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"a1\na2\n").unwrap();
        let file = File::open(&path).unwrap();
        let fingerprint = Fingerprint::of_file(&file).unwrap().unwrap();
        let rewrite = |content: &[u8]| {
            let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            writer.set_len(0).unwrap();
            writer.write_all(content).unwrap();
        };
        // Opened (fingerprint taken) but not read yet.
        let mut f = OpenFile::new(fingerprint, file, (0, 0), path.clone(), 0);
        let mut pos = ReadPos::default();
        rewrite(b"b1\nb2\n");
        assert!(texts(&mut f, &mut pos, 100).is_empty(), "b1 and b2 are not lines 1 and 2 of a1's file");
        assert_eq!((pos, f.read_off(), f.replaced()), (ReadPos::default(), 0, true));
        // Read to its end, then rewritten longer than what was read.
        rewrite(b"a1\na2\n");
        let mut f = OpenFile::new(fingerprint, File::open(&path).unwrap(), (0, 0), path.clone(), 0);
        assert_eq!(texts(&mut f, &mut pos, 100).len(), 2);
        rewrite(b"c1\nc2\nc3\nc4\n");
        assert!(texts(&mut f, &mut pos, 100).is_empty(), "c3 and c4 are not lines 3 and 4 of a1's file");
        assert_eq!((pos, f.read_off(), f.replaced()), (ReadPos { position: 6, line: 2 }, 6, true));
    }

    #[test]
    fn end_position_is_after_the_last_newline() {
        let (_dir, _writer, f) = open(b"a\nbb\nccc");
        assert_eq!(end_position(&f.file, 8).unwrap(), ReadPos { position: 5, line: 2 });
        assert_eq!(end_position(&f.file, 0).unwrap(), ReadPos::default());
    }
}
