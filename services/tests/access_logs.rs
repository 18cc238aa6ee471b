//! The log-file source and the `access` view end to end: `prism up --tail` reads an access log
//! through rotation, and `/v1/access` answers counts, bytes and latency percentiles equal to what
//! is computed independently from the lines written — in Lambda and in Kappa mode (where the
//! finalized windows are handed off to segments), across a restart, and across SIGKILLs of the
//! process at random points while lines are written and files rotated.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use prism_core::config::Architecture;
use serde_json::Value;

/// 2013-03-01T00:00:00Z, UTC ms.
const DAY0_MS: i64 = 1_362_096_000_000;
const HOSTS: [&str; 4] = ["203.0.113.9", "198.51.100.7", "crawler.example.org", "2001:db8::1"];
const STATUSES: [u16; 6] = [200, 200, 304, 404, 500, 201];

/// One written line and what it should count as.
#[derive(Debug, Clone)]
struct Written {
    host: &'static str,
    status: u16,
    bytes: u64,
    ts_ms: i64,
    duration_ms: Option<u64>,
}

/// xorshift64: reproducible choices.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Line `i`: combined format (with a trailing extra field now and then) or a JSON line with a
/// duration; `n` seconds after 2013-03-01T00:00:00Z.
fn line(rng: &mut Rng, i: u64) -> (String, Written) {
    let host = HOSTS[rng.below(HOSTS.len() as u64) as usize];
    let status = STATUSES[rng.below(STATUSES.len() as u64) as usize];
    let bytes = rng.below(50_000);
    let ts_ms = DAY0_MS + (i as i64) * 7_000;
    let t = chrono::DateTime::from_timestamp_millis(ts_ms).expect("time");
    if i.is_multiple_of(3) {
        let duration = rng.below(400);
        let text = format!(
            r#"{{"ts":"{}","host":"{host}","method":"GET","path":"/r/{i}","protocol":"HTTP/1.1","status":{status},"bytes":{bytes},"duration_ms":{duration}}}"#,
            t.format("%Y-%m-%dT%H:%M:%SZ")
        );
        return (text, Written { host, status, bytes, ts_ms, duration_ms: Some(duration) });
    }
    let extra = if i.is_multiple_of(5) { " 0.012" } else { "" };
    let text =
        format!(r#"{host} - - [{}] "GET /r/{i} HTTP/1.1" {status} {bytes} "-" "agent/{i}"{extra}"#, t.format("%d/%b/%Y:%H:%M:%S +0000"));
    (text, Written { host, status, bytes, ts_ms, duration_ms: None })
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open log");
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
    f.sync_all().expect("sync");
}

fn class(status: u16) -> String {
    format!("{}xx", status / 100)
}

/// Expected (requests, bytes) per (host, class) over everything written.
fn totals(written: &[Written]) -> BTreeMap<(String, String), (i64, i64)> {
    let mut out = BTreeMap::new();
    for w in written {
        let e = out.entry((w.host.to_string(), class(w.status))).or_insert((0, 0));
        e.0 += 1;
        e.1 += w.bytes as i64;
    }
    out
}

async fn access(client: &reqwest::Client, base: &str, query: &str) -> Value {
    let (code, body) = get_json(client, base, &format!("/v1/access?{query}")).await;
    assert_eq!(code, 200, "{query}: {body}");
    body
}

fn sum(answer: &Value, field: &str) -> i64 {
    answer["buckets"].as_array().expect("buckets").iter().map(|b| b[field].as_i64().unwrap_or(0)).sum()
}

/// Waits until `/v1/access` (1-day buckets) counts `want` requests.
async fn wait_requests(client: &reqwest::Client, base: &str, want: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let have = sum(&access(client, base, "interval=1d").await, "requests");
        if have == want {
            return;
        }
        assert!(have < want, "{what}: {have} requests served, only {want} written");
        assert!(Instant::now() < deadline, "{what}: {have} of {want} requests served after 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every count the API gives equals the independent one: per (host, class) totals, per-minute
/// buckets of one host, and latency percentiles (nearest rank, within the histogram's bucket).
async fn check_answers(client: &reqwest::Client, base: &str, written: &[Written], what: &str) {
    for ((host, class), (requests, bytes)) in totals(written) {
        let a = access(client, base, &format!("host={}&status_class={class}&interval=1h", urlencode(&host))).await;
        assert_eq!((sum(&a, "requests"), sum(&a, "bytes")), (requests, bytes), "{what}: {host} {class}");
        assert_eq!(a["keys"], 1, "{what}");
    }
    // One host's 1-minute buckets, every class merged.
    let host = HOSTS[0];
    let mut per_minute: BTreeMap<i64, (i64, Vec<u64>)> = BTreeMap::new();
    for w in written.iter().filter(|w| w.host == host) {
        let e = per_minute.entry(w.ts_ms - w.ts_ms.rem_euclid(60_000)).or_default();
        e.0 += 1;
        e.1.extend(w.duration_ms);
    }
    // More than the default 5000 buckets after a long kill test.
    let a = access(client, base, &format!("host={host}&interval=1m&limit=100000")).await;
    let buckets = a["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), per_minute.len(), "{what}: one bucket per minute with requests");
    for (b, (start, (requests, mut durations))) in buckets.iter().zip(per_minute) {
        let start_text = chrono::DateTime::from_timestamp_millis(start).expect("t").format("%Y-%m-%dT%H:%M:%SZ").to_string();
        assert_eq!(b["start"], start_text, "{what}");
        assert_eq!(b["requests"], requests, "{what}: {start_text}");
        assert_eq!(b["timed_requests"], durations.len() as i64, "{what}: {start_text}");
        durations.sort_unstable();
        for (field, q) in [("p50_ms", 500usize), ("p95_ms", 950), ("p99_ms", 990)] {
            if durations.is_empty() {
                assert!(b[field].is_null(), "{what}: {start_text} {field}");
                continue;
            }
            let truth = durations[(q * durations.len()).div_ceil(1000).max(1) - 1];
            let got = b[field].as_u64().expect("percentile");
            assert!(got >= truth && got <= truth + truth / 32 + 1, "{what}: {start_text} {field}: {got} vs nearest rank {truth}");
        }
    }
    // All hosts, one class.
    let a = access(client, base, "status_class=4xx&interval=1d").await;
    let want: i64 = written.iter().filter(|w| w.status / 100 == 4).count() as i64;
    assert_eq!(sum(&a, "requests"), want, "{what}: 4xx");
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A")
}

fn tail_config(dir: &Path, logs: &Path, architecture: Architecture) -> prism::up::UpConfig {
    let mut config = test_config(dir);
    config.feed.no_feed = true;
    config.deployment.partitions = 2;
    config.deployment.architecture = architecture;
    config.logs.tail = vec![format!("{}/access.log*", logs.display())];
    config
}

async fn tail_rotate_and_check(architecture: Architecture) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let file = logs.join("access.log");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written = Vec::new();
    let mut next = 0u64;
    let mut write = |n: u64, next: &mut u64, written: &mut Vec<Written>| {
        let mut lines = Vec::new();
        for _ in 0..n {
            let (text, w) = line(&mut rng, *next);
            *next += 1;
            lines.push(text);
            written.push(w);
        }
        append(&file, &lines);
    };
    write(300, &mut next, &mut written);
    // Bad lines go to the dead-letter topic, not into the view.
    append(
        &file,
        &["not an access log line".to_string(), r#"1.2.3.4 - - [01/Mar/2013:00:00:01 +0000] "GET / HTTP/1.1" 999 5"#.to_string()],
    );

    let up = start(tail_config(dir.path(), &logs, architecture)).await;
    let what = format!("{architecture:?}");
    wait_requests(&up.client, &up.base, written.len() as i64, &what).await;
    check_answers(&up.client, &up.base, &written, &what).await;

    // Rotation by rename + create, then copytruncate, while tailing.
    write(100, &mut next, &mut written);
    std::fs::rename(&file, logs.join("access.log.1")).expect("rename");
    write(150, &mut next, &mut written);
    std::fs::copy(&file, logs.join("access.log.2")).expect("copy");
    std::fs::OpenOptions::new().write(true).open(&file).and_then(|f| f.set_len(0)).expect("truncate");
    write(120, &mut next, &mut written);
    // Lines about 1.6 days later (on every host, so on both partitions), so that in Kappa mode the
    // watermark finalizes 2013-03-01 and hands it off to segments.
    next += 20_000;
    write(40, &mut next, &mut written);
    wait_requests(&up.client, &up.base, written.len() as i64, &what).await;
    check_answers(&up.client, &up.base, &written, &format!("{what} after rotation")).await;
    let metrics = up.client.get(format!("{}/metrics", up.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.lines().any(|l| l.starts_with("prism_ingest_events_dead_lettered_total{source=\"logs\"}") && l.ends_with(" 2")),
        "two dead letters counted: {metrics}"
    );
    if architecture == Architecture::Lambda {
        // The batch layer builds the access view from the archived lines: the day before the
        // last lines is read from segments, and every answer stays the same.
        let run = settle_and_run_batch(&up.client, &up.base, false, Duration::from_secs(60)).await;
        let access_run = run["runs"].as_array().and_then(|r| r.iter().find(|r| r["view"] == "access")).cloned().expect("an access run");
        assert!(access_run["batch_horizon"].is_string() && access_run["events"].as_u64() > Some(0), "{run}");
        let a = access(&up.client, &up.base, "interval=1d").await;
        assert_eq!(a["buckets"][0]["layer"], "batch", "{a}");
        check_answers(&up.client, &up.base, &written, "Lambda, with the batch view").await;
    }
    if architecture == Architecture::Kappa {
        // Windows behind the finalized watermark were handed off to segments.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let a = access(&up.client, &up.base, "interval=1d").await;
            if a["segment_horizon"].is_string() && a["buckets"][0]["layer"] == "segment" {
                break;
            }
            assert!(Instant::now() < deadline, "no hand-off to segments: {a}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        check_answers(&up.client, &up.base, &written, "Kappa, from segments").await;
        // A Kappa replay of the access view (bulk catch-up into version 2, then the switch)
        // answers the same.
        let resp = up.client.post(format!("{}/v1/admin/replays?view=access&switch_lag=0", up.base)).send().await.expect("POST");
        assert_eq!(resp.status().as_u16(), 202);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, replay) = up.get("/v1/admin/replays/access.v2").await;
            assert_eq!(code, 200, "{replay}");
            if replay["state"] == "switched" {
                break;
            }
            assert_eq!(replay["state"], "replaying", "{replay}");
            assert!(Instant::now() < deadline, "the access replay did not switch: {replay}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, status) = up.get("/v1/status").await;
        let access = status["views"].as_array().expect("views").iter().find(|v| v["view"] == "access").cloned().expect("access");
        assert_eq!(access["realtime_version"], 2, "{status}");
        check_answers(&up.client, &up.base, &written, "Kappa, after a replay of the access view").await;
    }
    up.stop().await;

    // A restart reads nothing twice and answers the same.
    let up = start(tail_config(dir.path(), &logs, architecture)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    wait_requests(&up.client, &up.base, written.len() as i64, &format!("{what} after restart")).await;
    check_answers(&up.client, &up.base, &written, &format!("{what} after restart")).await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_view_counts_every_line_once_in_lambda_mode() {
    tail_rotate_and_check(Architecture::Lambda).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_view_counts_every_line_once_in_kappa_mode_through_segments() {
    tail_rotate_and_check(Architecture::Kappa).await;
}

/// A child process killed when dropped (a failed assertion leaves no process behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_up(data: &Path, logs: &Path, port: u16) -> Killed {
    Killed(spawn_up_child(data, logs, port))
}

fn spawn_up_child(data: &Path, logs: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["up", "--no-feed", "--partitions", "2", "--tail-poll-interval", "20ms", "--tail-rotate-wait", "100ms"])
        .arg("--data-dir")
        .arg(data)
        .arg("--tail")
        .arg(format!("{}/access.log*", logs.display()))
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .env("PRISM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn prism up")
}

/// What the kill test did, with wall-clock times (UTC ms, comparable with the log's append
/// times): printed when a line is missing or repeated.
#[derive(Default)]
struct Diary {
    events: Vec<(i64, String)>,
    /// Per line number: the index of the event that wrote it.
    written_by: Vec<usize>,
}

impl Diary {
    fn note(&mut self, what: String) -> usize {
        self.events.push((prism_core::time::now_ms(), what));
        self.events.len() - 1
    }
}

fn file_id(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or_else(|_| "-".to_string(), |m| format!("ino {} len {}", m.ino(), m.len()))
}

/// `/r/<n>` of a line or an event path.
fn request_number(text: &str) -> Option<u64> {
    let rest = &text[text.find("/r/")? + 3..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

/// Reads `prism.access_logs` back (the process must be stopped) and, when some `/r/<n>` is
/// missing or repeated, says where it was written, what happened around it and where it is now.
async fn diagnose(data: &Path, logs: &Path, diary: &Diary, lines: u64) -> Option<String> {
    use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
    use prism_core::log::EventLog;
    use std::fmt::Write as _;
    let log = EmbeddedLog::open(data.join("log"), EmbeddedLogConfig::default()).expect("open the log");
    let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let ends = log.end_offsets(prism_core::event::ACCESS_LOGS_TOPIC).await.expect("ends");
    for p in 0..ends.len() {
        let mut offset = 0;
        loop {
            let records = log.read(prism_core::event::ACCESS_LOGS_TOPIC, p as i32, offset, 10_000, Duration::ZERO).await.expect("read");
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for r in records {
                let e = prism_core::event::AccessEvent::from_json(&r.value).expect("an access event");
                let n = e.path.as_deref().and_then(request_number).expect("a /r/<n> path");
                let header = |h| String::from_utf8_lossy(r.header(h).unwrap_or(b"-")).into_owned();
                seen.entry(n).or_default().push(format!(
                    "p{}@{} appended {} {} {} ({:?}:{:?})",
                    r.partition,
                    r.offset,
                    r.timestamp_ms,
                    header("prism.source"),
                    header("prism.source.position"),
                    e.source_file,
                    e.line
                ));
            }
        }
    }
    let missing: Vec<u64> = (0..lines).filter(|n| !seen.contains_key(n)).collect();
    let repeated: Vec<u64> = seen.iter().filter(|(_, v)| v.len() > 1).map(|(n, _)| *n).collect();
    if missing.is_empty() && repeated.is_empty() {
        return None;
    }
    let mut out = String::new();
    let _ = writeln!(out, "log end offsets {ends:?}; missing {missing:?}; repeated {repeated:?}");
    // The files now: name, size, fingerprint (of the first line), first and last request.
    let mut names: Vec<PathBuf> = std::fs::read_dir(logs).expect("ls").map(|e| e.expect("entry").path()).collect();
    names.sort();
    let mut texts = Vec::new();
    for name in &names {
        let bytes = std::fs::read(name).expect("read");
        let fp = prism_ingest::tail::Fingerprint::of_prefix(&bytes).map_or("-".into(), |f| f.to_string());
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let first = text.lines().next().and_then(request_number);
        let last = text.lines().last().and_then(request_number);
        let _ =
            writeln!(out, "file {} {} fp {fp} lines {} /r/{first:?}..=/r/{last:?}", name.display(), file_id(name), text.lines().count());
        texts.push((name.clone(), text));
    }
    let _ = writeln!(out, "checkpoint: {}", std::fs::read_to_string(data.join("tail-checkpoints.json")).unwrap_or_default());
    // Each run of missing or repeated lines (the first few), by its first line.
    let runs = |ns: &[u64]| {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &n in ns {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == n => *last = n,
                _ => runs.push((n, n)),
            }
        }
        runs
    };
    for (what, (first, last)) in
        runs(&missing).into_iter().map(|r| ("missing", r)).chain(runs(&repeated).into_iter().map(|r| ("repeated", r))).take(6)
    {
        let _ = writeln!(out, "--- {what} /r/{first}..=/r/{last}; /r/{first} in the log: {:?}", seen.get(&first));
        for (name, text) in &texts {
            let mut at = 0;
            for (i, l) in text.split_inclusive('\n').enumerate() {
                if request_number(l) == Some(first) {
                    let _ = writeln!(out, "  in {} line {} bytes {}..{}", name.display(), i + 1, at, at + l.len());
                }
                at += l.len();
            }
        }
        for m in [first.saturating_sub(1), last + 1] {
            let _ = writeln!(out, "  neighbour /r/{m} in the log: {:?}", seen.get(&m));
        }
        let e = diary.written_by[first as usize];
        for i in e.saturating_sub(8)..(e + 8).min(diary.events.len()) {
            let _ = writeln!(out, "  {}{} {}", if i == e { "=> " } else { "   " }, diary.events[i].0, diary.events[i].1);
        }
    }
    Some(out)
}

/// SIGKILL `prism up --tail` at random points while a writer appends and rotates (both styles):
/// after the last restart every line is in `prism.access_logs` and counted exactly once.
/// `PRISM_TEST_KILL_SEED` (decimal) varies the writes, rotations and kill times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_tailing_loses_and_repeats_no_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let data: PathBuf = dir.path().join("data");
    let file = logs.join("access.log");
    let client = prism::http_client();
    let seed = std::env::var("PRISM_TEST_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x2545_f491_4f6c_dd1d);
    let mut rng = Rng(seed);
    let mut written = Vec::new();
    let mut next = 0u64;
    let mut kills = Vec::new();
    let mut rotations = 0;
    let mut diary = Diary::default();
    for _ in 0..8 {
        let port = free_port();
        let mut child = spawn_up(&data, &logs, port);
        diary.note(format!("spawned pid {}", child.0.id()));
        // Write in small pieces while it runs; rotate now and then; kill at a random moment.
        let kill_after = Duration::from_millis(300 + rng.below(1_200));
        kills.push(kill_after);
        let started = Instant::now();
        while started.elapsed() < kill_after {
            let mut lines = Vec::new();
            let first = next;
            // Bursts big enough to keep the tailer busy (it checkpoints when idle and every 200
            // ms), so kills land between its appends and its checkpoints.
            for _ in 0..(1 + rng.below(60)) {
                let (text, w) = line(&mut rng, next);
                next += 1;
                lines.push(text);
                written.push(w);
            }
            let before = file_id(&file);
            append(&file, &lines);
            let e = diary.note(format!("appended /r/{first}..=/r/{} to access.log ({before} -> {})", next - 1, file_id(&file)));
            diary.written_by.resize(next as usize, e);
            match rng.below(12) {
                0 => {
                    rotations += 1;
                    std::fs::rename(&file, logs.join(format!("access.log.{rotations}"))).expect("rename");
                    diary.note(format!("renamed access.log to access.log.{rotations}"));
                }
                1 if file.exists() => {
                    rotations += 1;
                    std::fs::copy(&file, logs.join(format!("access.log.{rotations}"))).expect("copy");
                    std::fs::OpenOptions::new().write(true).open(&file).and_then(|f| f.set_len(0)).expect("truncate");
                    diary.note(format!("copied access.log to access.log.{rotations} and truncated it"));
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(1 + rng.below(4))).await;
        }
        let _ = Command::new("kill").arg("-KILL").arg(child.0.id().to_string()).status();
        let _ = child.0.wait();
        diary.note(format!("killed pid {}", child.0.id()));
    }
    eprintln!("kill points {kills:?}, {rotations} rotations, {} lines", written.len());
    let port = free_port();
    let mut child = spawn_up(&data, &logs, port);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &base, "prism up").await;
    // Until every line is counted (or 90 s passed), then from the log itself: no line missing
    // or repeated, with a diagnosis when one is (repeated lines can make the count complete
    // early: lines not read yet then show as missing too). Then a clean restart answers the same.
    let deadline = Instant::now() + Duration::from_secs(90);
    let served = loop {
        let have = sum(&access(&client, &base, "interval=1d").await, "requests");
        if have >= written.len() as i64 || Instant::now() >= deadline {
            break have;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status();
    let status = child.0.wait().expect("wait");
    if let Some(diagnosis) = diagnose(&data, &logs, &diary, next).await {
        panic!("seed {seed:#x}, kills at {kills:?}: {served} of {} requests served; {diagnosis}", written.len());
    }
    assert!(status.success(), "prism up stops cleanly on SIGTERM: {status}");
    let port = free_port();
    let mut child = spawn_up(&data, &logs, port);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &base, "prism up").await;
    wait_requests(&client, &base, written.len() as i64, &format!("after kills at {kills:?}")).await;
    check_answers(&client, &base, &written, &format!("after kills at {kills:?}")).await;
    let _ = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status();
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "prism up stops cleanly on SIGTERM: {status}");
}

/// The real access log of Debian's logstalgia (3,260 lines of combined format with an extra
/// field; fetched by `infra/test-env.sh`): the view's totals per (host, status class) equal a
/// count made independently by splitting each line at its quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_access_log_counts_match_an_independent_count() {
    let source = std::env::var("PRISM_TEST_ACCESS_LOG").expect("PRISM_TEST_ACCESS_LOG is not set: run ./infra/test.sh, which fetches it");
    let text = std::fs::read_to_string(&source).expect("read the real access log");
    let mut want: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let mut lines = 0i64;
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        // host ident user [time] "request" status bytes "referer" "agent" …
        let parts: Vec<&str> = l.split('"').collect();
        let host = parts[0].split_whitespace().next().expect("host");
        let mut after = parts[2].split_whitespace();
        let status: u16 = after.next().expect("status").parse().expect("numeric status");
        let bytes: i64 = after.next().map(|b| b.parse().unwrap_or(0)).unwrap_or(0);
        let e = want.entry((host.to_string(), class(status))).or_default();
        e.0 += 1;
        e.1 += bytes;
        lines += 1;
    }
    assert_eq!(lines, 3_260, "the example log has 3,260 lines");

    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    std::fs::copy(&source, logs.join("access.log")).expect("copy");
    let up = start(tail_config(dir.path(), &logs, Architecture::Lambda)).await;
    wait_requests(&up.client, &up.base, lines, "the real log").await;
    for ((host, class), (requests, bytes)) in &want {
        let a = access(&up.client, &up.base, &format!("host={}&status_class={class}&interval=1d", urlencode(host))).await;
        assert_eq!((sum(&a, "requests"), sum(&a, "bytes")), (*requests, *bytes), "{host} {class}");
    }
    let every = access(&up.client, &up.base, "interval=1h").await;
    assert_eq!(every["keys"], want.len(), "every (host, class) pair is a key");
    up.stop().await;
}
