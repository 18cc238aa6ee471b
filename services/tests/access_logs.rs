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
    let a = access(client, base, &format!("host={host}&interval=1m")).await;
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

/// SIGKILL `prism up --tail` at random points while a writer appends and rotates (both styles):
/// after the last restart every line is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_tailing_loses_and_repeats_no_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let data: PathBuf = dir.path().join("data");
    let file = logs.join("access.log");
    let client = prism::http_client();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut written = Vec::new();
    let mut next = 0u64;
    let mut kills = Vec::new();
    let mut rotations = 0;
    for _ in 0..8 {
        let port = free_port();
        let mut child = spawn_up(&data, &logs, port);
        // Write in small pieces while it runs; rotate now and then; kill at a random moment.
        let kill_after = Duration::from_millis(300 + rng.below(1_200));
        kills.push(kill_after);
        let started = Instant::now();
        while started.elapsed() < kill_after {
            let mut lines = Vec::new();
            // Bursts big enough to keep the tailer busy (it checkpoints when idle and every 200
            // ms), so kills land between its appends and its checkpoints.
            for _ in 0..(1 + rng.below(60)) {
                let (text, w) = line(&mut rng, next);
                next += 1;
                lines.push(text);
                written.push(w);
            }
            append(&file, &lines);
            match rng.below(12) {
                0 => {
                    rotations += 1;
                    std::fs::rename(&file, logs.join(format!("access.log.{rotations}"))).expect("rename");
                }
                1 if file.exists() => {
                    rotations += 1;
                    std::fs::copy(&file, logs.join(format!("access.log.{rotations}"))).expect("copy");
                    std::fs::OpenOptions::new().write(true).open(&file).and_then(|f| f.set_len(0)).expect("truncate");
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(1 + rng.below(4))).await;
        }
        let _ = Command::new("kill").arg("-KILL").arg(child.0.id().to_string()).status();
        let _ = child.0.wait();
    }
    eprintln!("kill points {kills:?}, {rotations} rotations, {} lines", written.len());
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
