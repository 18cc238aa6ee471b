//! Scenario tests of the follower: growth, partial lines, restarts, rotation, truncation.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
}

fn truncate(path: &Path) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(0).unwrap();
}

fn follower(globs: &[&Path], from: &Checkpoints, options: FollowOptions) -> Follower {
    let globs: Vec<String> = globs.iter().map(|g| g.display().to_string()).collect();
    Follower::new(&globs, from, options).unwrap()
}

fn quick() -> FollowOptions {
    FollowOptions { rotate_wait: Duration::ZERO, ..FollowOptions::default() }
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines.iter().map(|l| String::from_utf8(l.text.clone()).unwrap()).collect()
}

/// Polls until three polls in a row found nothing.
fn drain(f: &mut Follower) -> Vec<Line> {
    let mut all = Vec::new();
    let mut quiet = 0;
    for _ in 0..1000 {
        let lines = f.poll(1000, 1 << 20).unwrap();
        quiet = if lines.is_empty() { quiet + 1 } else { 0 };
        all.extend(lines);
        if quiet == 3 {
            return all;
        }
    }
    panic!("the follower never went quiet");
}

#[test]
fn follows_one_file_as_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    File::create(&log).unwrap();
    let mut f = follower(&[&log], &Checkpoints::default(), FollowOptions::default());
    assert!(f.poll(100, 1 << 20).unwrap().is_empty());
    assert_eq!(f.open_files(), 0, "an empty file has no fingerprint yet");
    append(&log, b"a1\n");
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["a1"]);
    assert_eq!((lines[0].line_no, lines[0].start, lines[0].end), (1, 0, 3));
    assert_eq!(lines[0].fingerprint, Fingerprint(crc32c::crc32c(b"a1\n")));
    assert_eq!(lines[0].path, log.display().to_string());
    append(&log, b"a2\na3\n");
    assert_eq!(f.bytes_behind(), 6);
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["a2", "a3"]);
    assert_eq!(lines.iter().map(|l| (l.line_no, l.start, l.end)).collect::<Vec<_>>(), [(2, 3, 6), (3, 6, 9)]);
    assert_eq!((f.open_files(), f.bytes_behind()), (1, 0));
    // The limits: lines, then bytes (a line may pass the byte limit; the next one waits).
    append(&log, b"a4\na5\na6\n");
    assert_eq!(texts(&f.poll(1, 1 << 20).unwrap()), ["a4"]);
    assert_eq!(texts(&f.poll(100, 4).unwrap()), ["a5", "a6"]);
}

#[test]
fn a_partial_line_is_held_back_until_complete() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, b"a1\npar");
    let mut f = follower(&[&log], &Checkpoints::default(), FollowOptions::default());
    assert_eq!(texts(&f.poll(100, 1 << 20).unwrap()), ["a1"]);
    assert!(f.poll(100, 1 << 20).unwrap().is_empty());
    append(&log, b"tial");
    assert!(f.poll(100, 1 << 20).unwrap().is_empty());
    append(&log, b"\nnext\n");
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["partial", "next"]);
    assert_eq!((lines[0].line_no, lines[0].start, lines[0].end), (2, 3, 11));
}

#[test]
fn crlf_lines_lose_their_cr() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, b"a\r\nb\r\n\r\nc\rd\n");
    let mut f = follower(&[&log], &Checkpoints::default(), FollowOptions::default());
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["a", "b", "", "c\rd"]);
    assert_eq!(lines.iter().map(|l| l.end).collect::<Vec<_>>(), [3, 6, 8, 12]);
}

#[test]
fn two_files_are_read_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("a.log"), b"a1\na2\na3\n");
    append(&dir.path().join("b.log"), b"b1\nb2\nb3\n");
    append(&dir.path().join("c.txt"), b"not matched\n");
    let mut f = follower(&[&dir.path().join("*.log")], &Checkpoints::default(), FollowOptions::default());
    let mut first = texts(&f.poll(2, 1 << 20).unwrap());
    first.sort();
    assert_eq!(first, ["a1", "b1"], "one line of each file in turn");
    // Across polls too: the next poll starts with the other file.
    let mut one_each = [texts(&f.poll(1, 1 << 20).unwrap()), texts(&f.poll(1, 1 << 20).unwrap())].concat();
    one_each.sort();
    assert_eq!(one_each, ["a2", "b2"]);
    let mut rest = texts(&f.poll(100, 1 << 20).unwrap());
    rest.sort();
    assert_eq!(rest, ["a3", "b3"]);
    assert_eq!(f.open_files(), 2);
}

#[test]
fn a_restart_continues_after_the_saved_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let saved = dir.path().join("tail.json");
    append(&log, b"a1\na2\na3\n");
    let mut f = follower(&[&log], &Checkpoints::default(), FollowOptions::default());
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(lines.len(), 3);
    // Only the first two were acknowledged before the restart.
    let mut checkpoints = Checkpoints { log_end_offsets: vec![5], ..Checkpoints::default() };
    lines[..2].iter().for_each(|l| checkpoints.record(l));
    checkpoints.save(&saved).unwrap();
    drop(f);
    append(&log, b"a4\n");
    let mut f = follower(&[&log], &Checkpoints::load(&saved).unwrap(), FollowOptions::default());
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["a3", "a4"]);
    assert_eq!((lines[0].line_no, lines[0].start), (3, 6));
    // A file shorter than its checkpoint was truncated: read from its start.
    let mut beyond = Checkpoints::load(&saved).unwrap();
    beyond.files.values_mut().for_each(|c| (c.position, c.line) = (1000, 50));
    let mut f = follower(&[&log], &beyond, FollowOptions::default());
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["a1", "a2", "a3", "a4"]);
    assert_eq!(lines[0].line_no, 1);
}

#[test]
fn read_from_end_applies_to_files_present_at_the_first_poll() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("a.log"), b"a1\na2\npart");
    let options = FollowOptions { read_from_end_for_new_files: true, ..FollowOptions::default() };
    let mut f = follower(&[&dir.path().join("*.log")], &Checkpoints::default(), options);
    assert!(f.poll(100, 1 << 20).unwrap().is_empty());
    append(&dir.path().join("a.log"), b"ial\na3\n");
    append(&dir.path().join("b.log"), b"b1\n");
    let lines = f.poll(100, 1 << 20).unwrap();
    let mut got: Vec<_> = lines.iter().map(|l| (String::from_utf8(l.text.clone()).unwrap(), l.line_no)).collect();
    got.sort();
    assert_eq!(got, [("a3".into(), 4), ("b1".into(), 1), ("partial".into(), 3)]);
}

#[test]
fn rename_rotation_with_only_the_live_name_matched() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let old = dir.path().join("access.log.1");
    append(&log, b"a1\na2\n");
    let options = FollowOptions { rotate_wait: Duration::from_millis(300), ..FollowOptions::default() };
    let mut f = follower(&[&log], &Checkpoints::default(), options);
    assert_eq!(texts(&f.poll(100, 1 << 20).unwrap()), ["a1", "a2"]);
    // The writer keeps its handle across the rename and appends a little more.
    let mut writer = OpenOptions::new().append(true).open(&log).unwrap();
    fs::rename(&log, &old).unwrap();
    writer.write_all(b"a3\n").unwrap();
    append(&log, b"b1\n");
    let lines = f.poll(100, 1 << 20).unwrap();
    let mut got: Vec<_> = lines.iter().map(|l| (String::from_utf8(l.text.clone()).unwrap(), l.line_no)).collect();
    got.sort();
    assert_eq!(got, [("a3".into(), 3), ("b1".into(), 1)]);
    assert_eq!(f.open_files(), 2, "the rotated file stays open for rotate_wait");
    writer.write_all(b"a4\n").unwrap();
    assert_eq!(texts(&f.poll(100, 1 << 20).unwrap()), ["a4"]);
    std::thread::sleep(Duration::from_millis(350));
    assert!(f.poll(100, 1 << 20).unwrap().is_empty());
    assert_eq!(f.open_files(), 1, "closed after rotate_wait at its end");
}

#[test]
fn a_rotated_file_is_closed_only_once_read_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, b"a1\n");
    let mut f = follower(&[&log], &Checkpoints::default(), quick());
    assert_eq!(texts(&f.poll(100, 1 << 20).unwrap()), ["a1"]);
    let mut writer = OpenOptions::new().append(true).open(&log).unwrap();
    fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    writer.write_all(b"a2\n").unwrap();
    append(&log, b"b1\n");
    // Rotated and at its end at the last read, but not read since the rotation: kept open.
    assert!(f.poll(0, 1 << 20).unwrap().is_empty());
    assert_eq!(f.open_files(), 2);
    let mut got = texts(&f.poll(100, 1 << 20).unwrap());
    got.sort();
    assert_eq!(got, ["a2", "b1"]);
    assert_eq!(f.open_files(), 1, "rotate_wait 0: closed once read to its end");
}

#[test]
fn rename_rotation_with_the_rotated_names_matched_reads_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, b"a1\na2\n");
    let mut f = follower(&[&dir.path().join("access.log*")], &Checkpoints::default(), quick());
    assert_eq!(texts(&f.poll(1, 1 << 20).unwrap()), ["a1"]);
    let mut writer = OpenOptions::new().append(true).open(&log).unwrap();
    fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    writer.write_all(b"a3\n").unwrap();
    append(&log, b"b1\n");
    let lines = drain(&mut f);
    let mut got: Vec<_> = lines.iter().map(|l| (String::from_utf8(l.text.clone()).unwrap(), l.line_no)).collect();
    got.sort();
    assert_eq!(got, [("a2".into(), 2), ("a3".into(), 3), ("b1".into(), 1)]);
    let rotated = dir.path().join("access.log.1").display().to_string();
    assert!(lines.iter().filter(|l| l.text.starts_with(b"a")).all(|l| l.path == rotated), "the last path seen: {lines:?}");
    assert_eq!(f.open_files(), 2, "access.log.1 reopened at its read position, and access.log");
    // Appended after its handle closed: read through the rotated name, from where it stopped.
    writer.write_all(b"a4\n").unwrap();
    fs::rename(&log, dir.path().join("access.log.2")).unwrap();
    append(&log, b"c1\n");
    let lines = drain(&mut f);
    let mut got: Vec<_> = lines.iter().map(|l| (String::from_utf8(l.text.clone()).unwrap(), l.line_no)).collect();
    got.sort();
    assert_eq!(got, [("a4".into(), 4), ("c1".into(), 1)]);
}

#[test]
fn copytruncate_with_the_copies_matched_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, b"a1\na2\na3\n");
    let mut f = follower(&[&dir.path().join("access.log*")], &Checkpoints::default(), quick());
    assert_eq!(texts(&f.poll(2, 1 << 20).unwrap()), ["a1", "a2"]);
    // Polled between the copy and the truncate: the copy is the open file, skipped.
    fs::copy(&log, dir.path().join("access.log.1")).unwrap();
    assert_eq!(texts(&f.poll(100, 1 << 20).unwrap()), ["a3"]);
    append(&log, b"a4\n");
    assert_eq!(texts(&f.poll(100, 1 << 20).unwrap()), ["a4"]);
    truncate(&log);
    append(&log, b"b1\n");
    assert_eq!(texts(&drain(&mut f)), ["b1"], "the copy ends before what was read: nothing in it is new");
    // Not polled between: the copy continues where the original was read to.
    append(&log, b"b2\nb3\n");
    assert_eq!(texts(&f.poll(1, 1 << 20).unwrap()), ["b2"]);
    fs::copy(&log, dir.path().join("access.log.2")).unwrap();
    truncate(&log);
    append(&log, b"c1\n");
    let lines = drain(&mut f);
    let mut got: Vec<_> = lines.iter().map(|l| (String::from_utf8(l.text.clone()).unwrap(), l.line_no)).collect();
    got.sort();
    assert_eq!(got, [("b3".into(), 3), ("c1".into(), 1)]);
}

/// `copytruncate` racing the polls (a writer thread rotating small files as fast as it can,
/// writing each line's text and its `\n` separately): every line is handed out exactly once.
/// Truncations land anywhere in a poll, also between its look at a file's fingerprint and its
/// read of the file.
#[test]
fn copytruncate_racing_the_polls_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let writer = std::thread::spawn({
        let (dir, log) = (dir.path().to_path_buf(), log.clone());
        move || {
            let mut written = Vec::new();
            for rotation in 1..=200 {
                for i in 0..1 + rotation % 4 {
                    let text = format!("{rotation}-{i} {}", "x".repeat(rotation % 11));
                    append(&log, text.as_bytes());
                    append(&log, b"\n");
                    written.push(text);
                }
                fs::copy(&log, dir.join(format!("access.log.{rotation}"))).unwrap();
                truncate(&log);
            }
            written
        }
    });
    let mut f = follower(&[&dir.path().join("access.log*")], &Checkpoints::default(), quick());
    let mut read = Vec::new();
    while !writer.is_finished() {
        read.extend(texts(&f.poll(3, 1 << 20).unwrap()));
    }
    let mut written = writer.join().unwrap();
    read.extend(texts(&drain(&mut f)));
    written.sort();
    read.sort();
    let missing: Vec<_> = written.iter().filter(|w| read.binary_search(w).is_err()).collect();
    assert_eq!(read.len(), written.len(), "missing {missing:?}");
    assert_eq!(read, written);
}

#[test]
fn a_plain_truncation_reads_the_file_again_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, b"a1\na2\na3\n");
    let mut f = follower(&[&log], &Checkpoints::default(), quick());
    assert_eq!(f.poll(100, 1 << 20).unwrap().len(), 3);
    truncate(&log);
    append(&log, b"b1\n");
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["b1"]);
    assert_eq!((lines[0].line_no, lines[0].start, lines[0].end), (1, 0, 3));
    // Truncated and rewritten with the same first line (the same fingerprint), shorter than
    // what was read: from its start all the same.
    append(&log, b"b2\n");
    assert_eq!(texts(&f.poll(100, 1 << 20).unwrap()), ["b2"]);
    truncate(&log);
    append(&log, b"b1\n");
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["b1"]);
    assert_eq!(lines[0].line_no, 1);
}

#[test]
fn a_too_long_line_is_handed_out_once_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, b"short\n");
    append(&log, &[b'x'; 20]);
    let options = FollowOptions { max_line_bytes: 8, ..FollowOptions::default() };
    let mut f = follower(&[&log], &Checkpoints::default(), options);
    assert_eq!(texts(&f.poll(100, 1 << 20).unwrap()), ["short"]);
    append(&log, b"yyyy\r\n12345678\r\nnext\n");
    let lines = f.poll(100, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["xxxxxxxx", "12345678", "next"]);
    assert_eq!(lines.iter().map(|l| l.too_long).collect::<Vec<_>>(), [true, false, false]);
    assert_eq!((lines[0].line_no, lines[0].start, lines[0].end), (2, 6, 32));
    assert_eq!((lines[2].line_no, lines[2].start), (4, 42));
}

#[test]
fn an_invalid_glob_is_an_error_naming_it() {
    let err = Follower::new(&["/var/log/[access.log".to_string()], &Checkpoints::default(), FollowOptions::default()).err().unwrap();
    assert!(matches!(&err, TailError::Glob { pattern, .. } if pattern == "/var/log/[access.log"), "{err:?}");
    assert!(err.to_string().contains("/var/log/[access.log"), "{err}");
}

#[derive(Debug, Clone)]
enum Op {
    /// Append this many complete lines.
    Append(usize),
    /// Append a line without its `\n`; the next write (or the end) completes it.
    Partial,
    /// Rename to `access.log.N` and create a new `access.log`.
    Rename,
    /// Copy to `access.log.N`, then truncate (no append in between).
    CopyTruncate,
    /// Poll for at most this many lines.
    Poll(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..4usize).prop_map(Op::Append),
        1 => Just(Op::Partial),
        1 => Just(Op::Rename),
        1 => Just(Op::CopyTruncate),
        3 => (1..6usize).prop_map(Op::Poll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_written_line_is_handed_out_exactly_once(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        File::create(&log).unwrap();
        let mut f = follower(&[&dir.path().join("access.log*")], &Checkpoints::default(), quick());
        let (mut written, mut read) = (Vec::new(), Vec::new());
        let (mut counter, mut rotations) = (0usize, 0usize);
        let mut partial: Option<String> = None;
        let complete = |partial: &mut Option<String>, written: &mut Vec<String>| {
            if let Some(text) = partial.take() {
                append(&log, b"\n");
                written.push(text);
            }
        };
        for op in ops {
            match op {
                Op::Append(k) => {
                    complete(&mut partial, &mut written);
                    for _ in 0..k {
                        counter += 1;
                        let text = format!("line {counter} {}", "x".repeat(counter % 7));
                        append(&log, format!("{text}\n").as_bytes());
                        written.push(text);
                    }
                }
                Op::Partial => {
                    complete(&mut partial, &mut written);
                    counter += 1;
                    let text = format!("partial {counter}");
                    append(&log, text.as_bytes());
                    partial = Some(text);
                }
                Op::Rename => {
                    complete(&mut partial, &mut written);
                    rotations += 1;
                    fs::rename(&log, dir.path().join(format!("access.log.{rotations}"))).unwrap();
                    File::create(&log).unwrap();
                }
                Op::CopyTruncate => {
                    complete(&mut partial, &mut written);
                    rotations += 1;
                    fs::copy(&log, dir.path().join(format!("access.log.{rotations}"))).unwrap();
                    truncate(&log);
                }
                Op::Poll(max_lines) => read.extend(texts(&f.poll(max_lines, 1 << 20).unwrap())),
            }
        }
        complete(&mut partial, &mut written);
        read.extend(texts(&drain(&mut f)));
        written.sort();
        read.sort();
        prop_assert_eq!(read, written);
    }
}
