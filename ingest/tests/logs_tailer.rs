//! The log-file source end to end: good lines reach `prism.access_logs`, bad ones `prism.dlq`
//! with `file:line` and a reason; and a tailer killed at random moments while its file is
//! written and rotated (rename and copytruncate) delivers every line exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::event::{AccessEvent, DeadLetter, ACCESS_LOGS_TOPIC, DLQ_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::{EventLog, LogRecord};
use prism_ingest::append::{POSITION_HEADER, SOURCE_HEADER};
use prism_ingest::logs::{run_log_tailer, LogsConfig, LogsError, LogsStats};
use prism_ingest::tail::{Checkpoints, FollowOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every record of `topic`, partition by partition.
async fn read_topic(log: &EmbeddedLog, topic: &str) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for p in 0..log.end_offsets(topic).await.expect("ends").len() {
        let mut offset = 0;
        loop {
            let records = log.read(topic, p as i32, offset, 10_000, Duration::ZERO).await.expect("read");
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            out.extend(records);
        }
    }
    out
}

/// The embedded log under `dir`, with the tailer's topics (so the test can read them at once).
async fn open_log(dir: &Path) -> Arc<EmbeddedLog> {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).expect("log");
    log.ensure_topic(ACCESS_LOGS_TOPIC, 3).await.expect("topic");
    log.ensure_topic(DLQ_TOPIC, 1).await.expect("topic");
    Arc::new(log)
}

async fn events(log: &EmbeddedLog) -> Vec<(LogRecord, AccessEvent)> {
    let records = read_topic(log, ACCESS_LOGS_TOPIC).await;
    records.into_iter().map(|r| (AccessEvent::from_json(&r.value).expect("an access event"), r)).map(|(e, r)| (r, e)).collect()
}

async fn letters(log: &EmbeddedLog) -> Vec<DeadLetter> {
    read_topic(log, DLQ_TOPIC).await.iter().map(|r| serde_json::from_slice(&r.value).expect("a dead letter")).collect()
}

fn config(glob: &Path, checkpoint: &Path) -> LogsConfig {
    LogsConfig {
        globs: vec![glob.display().to_string()],
        checkpoint_path: checkpoint.to_path_buf(),
        partitions: 3,
        poll_interval: Duration::from_millis(20),
        batch_lines: 5000,
        follow: FollowOptions { rotate_wait: Duration::ZERO, ..FollowOptions::default() },
    }
}

fn start(config: &LogsConfig, log: &Arc<EmbeddedLog>, cancel: &CancellationToken) -> JoinHandle<Result<LogsStats, LogsError>> {
    tokio::spawn(run_log_tailer(config.clone(), log.clone(), cancel.clone()))
}

/// Waits (up to `timeout`) until `done` holds.
async fn wait_until<F: std::future::Future<Output = bool>>(timeout: Duration, what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(task: JoinHandle<Result<LogsStats, LogsError>>, cancel: CancellationToken) -> LogsStats {
    cancel.cancel();
    task.await.expect("tailer task").expect("tailer")
}

const COMBINED: &str = r#"203.0.113.9 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_lines_become_events_and_bad_ones_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("access.log");
    let checkpoint = dir.path().join("tail.json");
    let name = file.display().to_string();
    let lines: Vec<Vec<u8>> = vec![
        COMBINED.into(),
        "this is not an access log line".into(),
        r#"10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 999 5"#.into(),
        r#"{"ts":"2024-01-01T00:00:00Z","host":"10.0.0.2","method":"GET","path":"/x","status":503,"bytes":7,"duration_ms":31}"#.into(),
        r#"10.0.0.3 - - [01/Jan/2024:00:00:01 +0000] "POST /form HTTP/1.1" 204 -"#.into(),
        b"10.0.0.4 - - [01/Jan/2024:00:00:02 +0000] \"GET /\xff HTTP/1.1\" 200 1".to_vec(),
        r#"{"ts":1,"host":"a b","status":200}"#.into(),
        vec![b'x'; 300],
        "10.0.0.5 - - [01/Jan/2024:00:00:03 +0000] \"GET /crlf HTTP/1.1\" 404 9\r".into(),
    ];
    let mut content = Vec::new();
    let mut ends = Vec::new();
    for line in &lines {
        content.extend_from_slice(line);
        content.push(b'\n');
        ends.push(content.len() as u64);
    }
    content.extend_from_slice(b"10.0.0.6 - - [01/Jan/2024:00:00:04 +0000] \"GET /partial"); // never completed
    fs::write(&file, &content).expect("write the log");
    let log = open_log(&dir.path().join("log")).await;
    let mut config = config(&file, &checkpoint);
    config.follow.max_line_bytes = 200;

    let cancel = CancellationToken::new();
    let task = start(&config, &log, &cancel);
    wait_until(Duration::from_secs(10), "4 events and 5 dead letters", || async {
        events(&log).await.len() >= 4 && letters(&log).await.len() >= 5
    })
    .await;
    let stats = stop(task, cancel).await;
    assert_eq!(stats, LogsStats { lines_read: 9, appended: 4, dead_lettered: 5 });

    let mut got = events(&log).await;
    got.sort_by_key(|(_, e)| e.line);
    let summary: Vec<_> =
        got.iter().map(|(_, e)| (e.line, e.host.as_str(), e.status, e.bytes, e.path.as_deref(), e.source_file.as_deref())).collect();
    assert_eq!(
        summary,
        [
            (Some(1), "203.0.113.9", 200, 2326, Some("/apache_pb.gif"), Some(name.as_str())),
            (Some(4), "10.0.0.2", 503, 7, Some("/x"), Some(name.as_str())),
            (Some(5), "10.0.0.3", 204, 0, Some("/form"), Some(name.as_str())),
            (Some(9), "10.0.0.5", 404, 9, Some("/crlf"), Some(name.as_str())),
        ]
    );
    let first = &got[0].1;
    assert_eq!((first.ts, first.user.as_deref(), first.method.as_deref()), (971_211_336_000, Some("frank"), Some("GET")));
    assert_eq!(first.user_agent.as_deref(), Some("Mozilla/4.08 [en] (Win98; I ;Nav)"));
    assert_eq!(got[1].1.duration_ms, Some(31));
    for (record, event) in &got {
        assert_eq!(record.key, event.host.as_bytes(), "keyed by the client host");
        let line = event.line.expect("line") as usize;
        let header = |name: &str| String::from_utf8(record.header(name).expect("header").to_vec()).expect("utf-8");
        assert_eq!(header(POSITION_HEADER), format!("{}:{line}", ends[line - 1]));
        assert!(header(SOURCE_HEADER).starts_with("logs:") && header(SOURCE_HEADER).len() == 13, "{}", header(SOURCE_HEADER));
    }

    let mut dead = letters(&log).await;
    dead.sort_by(|a, b| a.source.cmp(&b.source));
    let expected = [(2, "not a common or combined"), (3, "status"), (6, "not UTF-8"), (7, "host must be"), (8, "longer than 200 bytes")];
    assert_eq!(dead.len(), expected.len());
    for (letter, (line, reason)) in dead.iter().zip(expected) {
        assert_eq!(letter.source, format!("{name}:{line}"));
        assert!(letter.reason.contains(reason), "line {line}: {}", letter.reason);
    }
    assert_eq!(dead[0].payload, "this is not an access log line");

    // A restart continues after the checkpoint: only the new line is read.
    OpenOptions::new().append(true).open(&file).and_then(|mut f| f.write_all(b"\" 200 1\n")).expect("complete the last line");
    let cancel = CancellationToken::new();
    let task = start(&config, &log, &cancel);
    wait_until(Duration::from_secs(10), "5 events", || async { events(&log).await.len() >= 5 }).await;
    assert_eq!(stop(task, cancel).await, LogsStats { lines_read: 1, appended: 1, dead_lettered: 0 });
    let saved = Checkpoints::load(&checkpoint).expect("checkpoint");
    assert_eq!(saved.files.values().map(|c| (c.line, c.position)).collect::<Vec<_>>(), [(10, fs::metadata(&file).unwrap().len())]);

    // A lost checkpoint: the lines already in the log are found there, not appended again.
    // First a run that finds them but cannot read the file again (its glob matches nothing):
    // the checkpoint it saves must still let the next run find them.
    fs::remove_file(&checkpoint).expect("lose the checkpoint");
    let elsewhere = LogsConfig { globs: vec![dir.path().join("nothing*").display().to_string()], ..config.clone() };
    let cancel = CancellationToken::new();
    let task = start(&elsewhere, &log, &cancel);
    wait_until(Duration::from_secs(10), "a checkpoint is saved", || async { checkpoint.exists() }).await;
    assert_eq!(stop(task, cancel).await, LogsStats::default());
    let cancel = CancellationToken::new();
    let task = start(&config, &log, &cancel);
    wait_until(Duration::from_secs(10), "the checkpoint is back at line 10", || async {
        Checkpoints::load(&checkpoint).expect("checkpoint").files.values().any(|c| c.line == 10)
    })
    .await;
    let stats = stop(task, cancel).await;
    assert_eq!(stats.appended, 0, "{stats:?}");
    assert!(stats.dead_lettered <= 5, "{stats:?}");
    assert_eq!(events(&log).await.len(), 5);
}

/// xorshift64*: a reproducible random sequence.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn good_line(n: u64) -> String {
    format!(
        "10.{}.{}.{} - - [01/Jan/2024:{:02}:{:02}:{:02} +0000] \"GET /r/{n} HTTP/1.1\" 200 {n} \"-\" \"writer\"\n",
        n % 7,
        (n / 7) % 256,
        n % 251,
        (n / 3600) % 24,
        (n / 60) % 60,
        n % 60
    )
}

/// What the writer wrote.
struct Written {
    good: u64,
    bad: Vec<u64>,
    renames: u32,
    copytruncates: u32,
}

/// Appends unique lines to `dir/access.log` in bursts (one in 40 malformed, some written in two
/// pieces), rotating it now and then by rename + create (the writer keeps appending briefly to
/// the renamed file, as nginx does until it reopens) or by copytruncate (copy, then truncate,
/// nothing written in between).
fn write_and_rotate(dir: &Path, seed: u64, bursts: u32) -> Written {
    let mut rng = Rng(seed);
    let live = dir.join("access.log");
    let open = || OpenOptions::new().create(true).append(true).open(&live).expect("open access.log");
    let mut file = open();
    let mut written = Written { good: 0, bad: Vec::new(), renames: 0, copytruncates: 0 };
    let mut n = 0u64;
    let mut next_line = |rng: &mut Rng, written: &mut Written| {
        n += 1;
        if rng.below(40) == 0 {
            written.bad.push(n);
            format!("garbage line {n}\n")
        } else {
            written.good += 1;
            good_line(n)
        }
    };
    for _ in 0..bursts {
        for _ in 0..1 + rng.below(6) {
            let line = next_line(&mut rng, &mut written);
            if rng.below(25) == 0 {
                let (head, tail) = line.split_at(line.len() / 2);
                file.write_all(head.as_bytes()).expect("write");
                std::thread::sleep(Duration::from_millis(1));
                file.write_all(tail.as_bytes()).expect("write");
            } else {
                file.write_all(line.as_bytes()).expect("write");
            }
        }
        if rng.below(u64::from(bursts) / 10) == 0 {
            let rotated = dir.join(format!("access.log.{}", written.renames + written.copytruncates + 1));
            if written.renames <= written.copytruncates {
                written.renames += 1;
                fs::rename(&live, &rotated).expect("rename");
                for _ in 0..rng.below(4) {
                    let line = next_line(&mut rng, &mut written);
                    file.write_all(line.as_bytes()).expect("write to the renamed file");
                }
                file = open();
            } else {
                written.copytruncates += 1;
                fs::copy(&live, &rotated).expect("copy");
                file.set_len(0).expect("truncate");
            }
        }
        std::thread::sleep(Duration::from_micros(400));
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_every_line_lands_exactly_once() {
    const SEED: u64 = 0x5eed_1e55_c0ff_ee01;
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).expect("logs dir");
    let checkpoint = dir.path().join("tail.json");
    let log = open_log(&dir.path().join("log")).await;
    let config = config(&logs.join("access.log*"), &checkpoint);

    let writer_dir: PathBuf = logs.clone();
    let writer = std::thread::spawn(move || write_and_rotate(&writer_dir, SEED, 6000));
    let mut rng = Rng(SEED ^ 0x9e37_79b9_7f4a_7c15);
    let kills = 10 + rng.below(11);
    for _ in 0..kills {
        let task = start(&config, &log, &CancellationToken::new());
        tokio::time::sleep(Duration::from_millis(20 + rng.below(330))).await;
        // A crash: no graceful save.
        task.abort();
        match task.await {
            Err(e) if e.is_cancelled() => {}
            Err(e) => panic!("tailer panicked: {e}"),
            Ok(result) => panic!("the tailer stopped by itself: {result:?}"),
        }
    }
    let written = tokio::task::spawn_blocking(move || writer.join().expect("writer")).await.expect("join");
    assert!(written.renames >= 2 && written.copytruncates >= 2, "rotations: {} + {}", written.renames, written.copytruncates);

    // Run to quiescence.
    let cancel = CancellationToken::new();
    let task = start(&config, &log, &cancel);
    let paths = |events: &[(LogRecord, AccessEvent)]| events.iter().filter_map(|(_, e)| e.path.clone()).collect::<BTreeSet<_>>();
    wait_until(Duration::from_secs(15), "every written line is in the log", || async {
        paths(&events(&log).await).len() as u64 == written.good
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(task, cancel).await;

    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (_, event) in events(&log).await {
        let path = event.path.expect("path");
        let n: u64 = path.strip_prefix("/r/").and_then(|n| n.parse().ok()).expect("a written path");
        assert_eq!(event.bytes, n, "the event of line /r/{n}");
        *seen.entry(n).or_default() += 1;
    }
    let bad: BTreeSet<u64> = written.bad.iter().copied().collect();
    let total = written.good + bad.len() as u64;
    let missing: Vec<u64> = (1..=total).filter(|n| !bad.contains(n) && !seen.contains_key(n)).collect();
    let duplicated: Vec<(u64, u32)> = seen.iter().filter(|(_, &c)| c > 1).map(|(&n, &c)| (n, c)).collect();
    assert!(
        missing.is_empty() && duplicated.is_empty(),
        "{kills} kills, {} lines: {} missing (first {:?}), {} duplicated (first {:?})",
        written.good,
        missing.len(),
        &missing[..missing.len().min(10)],
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
    assert_eq!(seen.len() as u64, written.good);
    // Dead letters: at least once each.
    let dead: BTreeSet<String> = letters(&log).await.into_iter().map(|l| l.payload).collect();
    for n in &bad {
        assert!(dead.contains(&format!("garbage line {n}")), "garbage line {n} is not on the DLQ");
    }
    eprintln!(
        "{kills} kills, {} good and {} bad lines, {} renames, {} copytruncates",
        written.good,
        bad.len(),
        written.renames,
        written.copytruncates
    );
}
