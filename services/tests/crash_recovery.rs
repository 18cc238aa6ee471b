//! Crash: SIGKILL the running `prism up` process mid-feed (once, and then again and again at
//! random points while the archiver flushes and compacts and the batch job builds and
//! publishes segments), start it again on the same data dir, and check that the final bars
//! equal an uninterrupted run's exactly (exactly-once through feed, log, speed layer, archiver,
//! compaction and batch job).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A slice of the real lab data with all five symbols (FB trades from 2012-05-18).
fn write_subset(dir: &Path) -> PathBuf {
    let path = dir.join("lab-2012.csv");
    let mut f = std::fs::File::create(&path).expect("create subset");
    writeln!(f, "Ticker,Date,Open,High,Low,Close,Volume").expect("write");
    for b in read_lab_csv().iter().filter(|b| b.date.as_str() >= "2012-05-18" && b.date.as_str() < "2012-09-01") {
        writeln!(f, "{},{},{},{},{},{},{}", b.symbol, b.date, b.open, b.high, b.low, b.close, b.volume).expect("write");
    }
    path
}

fn spawn(data_dir: &Path, feed: &Path, port: u16, speed: &str) -> Child {
    spawn_with(data_dir, feed, port, speed, &["--batch-interval", "1h"])
}

fn spawn_with(data_dir: &Path, feed: &Path, port: u16, speed: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["up", "--partitions", "2", "--feed-trades-per-day", "30"])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--feed")
        .arg(feed)
        .args(["--feed-speed", speed, "--http-addr", &format!("127.0.0.1:{port}")])
        .env("PRISM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn prism up")
}

async fn wait_listening(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "prism up did not listen on {base}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn final_bars(client: &reqwest::Client, base: &str) -> Vec<(String, Vec<Value>)> {
    wait_caught_up(client, base, true, Duration::from_secs(300)).await;
    // A full rebuild: every bar before the horizon comes from the master dataset as it is now.
    let resp = client.post(format!("{base}/v1/admin/batch-runs?full=true")).send().await.expect("POST batch run");
    assert_eq!(resp.status().as_u16(), 201, "batch run answers 201");
    let mut out = Vec::new();
    for symbol in ["AAPL", "FB", "GOOG", "IBM", "MSFT"] {
        for interval in ["1m", "1d"] {
            out.push((format!("{symbol} {interval}"), all_bars(client, base, symbol, interval).await));
        }
    }
    out
}

fn stop(mut child: Child) {
    // SIGTERM for a graceful stop; the exit status says it stopped cleanly.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "prism up exits 0 on SIGTERM: {status}");
}

/// The bars of an uninterrupted run over `feed` (in `work/reference`).
async fn reference_bars(client: &reqwest::Client, work: &Path, feed: &Path) -> Vec<(String, Vec<Value>)> {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let reference = spawn(&work.join("reference"), feed, port, "max");
    wait_listening(client, &base).await;
    let expected = final_bars(client, &base).await;
    stop(reference);
    assert!(expected.iter().all(|(_, bars)| !bars.is_empty()));
    expected
}

/// Starts `prism up` on `data` once more (feed at full speed, `extra` flags), and checks that
/// its final bars equal `expected` and that no trade was appended twice.
async fn restart_and_compare(
    client: &reqwest::Client,
    data: &Path,
    feed: &Path,
    extra: &[&str],
    expected: &[(String, Vec<Value>)],
    what: &str,
) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let restarted = spawn_with(data, feed, port, "max", extra);
    wait_listening(client, &base).await;
    let got = final_bars(client, &base).await;
    let (_, status) = get_json(client, &base, "/v1/status").await;
    stop(restarted);
    for ((name, want), (_, have)) in expected.iter().zip(&got) {
        // Which bars, when the counts differ: a lost or doubled day shows as its starts.
        let starts =
            |bars: &[Value]| bars.iter().map(|b| b["start"].as_str().unwrap_or("?").to_string()).collect::<std::collections::BTreeSet<_>>();
        let (w, h) = (starts(want), starts(have));
        let missing: Vec<&String> = w.difference(&h).take(5).collect();
        let extra: Vec<&String> = h.difference(&w).take(5).collect();
        assert_eq!(
            want.len(),
            have.len(),
            "{name}: bar count ({what}); missing starts {missing:?}, extra starts {extra:?}; status {status}"
        );
        assert_eq!(want, have, "{name}: bars differ ({what})");
    }
    let accepted = status["ingest"][0]["accepted"].as_i64().unwrap_or(-1);
    let log_end: i64 = status["partitions"].as_array().expect("partitions").iter().map(|p| p["log_end_offset"].as_i64().unwrap_or(0)).sum();
    assert_eq!(log_end, accepted, "no trade appended twice ({what}): {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_feed_then_restart_gives_the_same_bars() {
    let work = tempfile::tempdir().expect("tempdir");
    let feed = write_subset(work.path());
    let client = prism::http_client();
    let expected = reference_bars(&client, work.path(), &feed).await;

    // Crashed run: SIGKILL once the feed is part way, then restart on the same data dir.
    let data = work.path().join("crashed");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn(&data, &feed, port, "40");
    wait_listening(&client, &base).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = get_json(&client, &base, "/v1/status").await;
        let days = status["feeds"][0]["days_done"].as_i64().unwrap_or(0);
        if days >= 20 {
            assert_eq!(status["feeds"][0]["done"], false, "killed mid-feed");
            break;
        }
        assert!(Instant::now() < deadline, "feed did not progress: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    restart_and_compare(&client, &data, &feed, &["--batch-interval", "1h"], &expected, "after the crash").await;
}

/// Kill points spread over a run, from the clock's nanoseconds (printed, so a failing order can
/// be replayed by reading the log).
fn random_delays(n: usize) -> Vec<Duration> {
    let mut x = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7) | 1;
    (0..n)
        .map(|_| {
            // xorshift64: enough to spread kill points; no statistics rest on it.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(150 + x % 1_350)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_of_archiving_compaction_and_batch_runs_loses_and_duplicates_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let feed = write_subset(work.path());
    let client = prism::http_client();
    let expected = reference_bars(&client, work.path(), &feed).await;

    // Compaction every 100 ms with a 1 s grace and a batch run every 250 ms: a kill lands in a
    // flush, a compaction pass, a superseded-file removal or a segment build/publish.
    let busy = ["--compact-interval", "100ms", "--compact-grace", "1s", "--batch-interval", "250ms"];
    let data = work.path().join("killed");
    let delays = random_delays(6);
    eprintln!("kill points after listening: {delays:?}");
    for delay in &delays {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = spawn_with(&data, &feed, port, "60", &busy);
        wait_listening(&client, &base).await;
        tokio::time::sleep(*delay).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    restart_and_compare(&client, &data, &feed, &busy, &expected, &format!("kill points {delays:?}")).await;
}

/// Kappa: SIGKILL right after a replay starts; the next start resumes the replay from its
/// committed offsets (or finds it already switched), and the bars equal those before, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_replay_resumes_it_and_answers_stay_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = write_subset(dir.path());
    let data = dir.path().join("data");
    let client = prism::http_client();
    let kappa = ["--architecture", "kappa", "--handoff-interval", "200ms"];
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = spawn_with(&data, &feed, port, "max", &kappa);
    wait_listening(&client, &base).await;
    let settled = |base: String, want_version: i64| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let (_, s) = get_json(&client, &base, "/v1/status").await;
                let serving = format!("speed-layer.ohlcv.v{want_version}");
                let feeds_done = s["feeds"].as_array().is_some_and(|f| !f.is_empty() && f.iter().all(|f| f["done"] == true));
                let at_end = s["partitions"].as_array().is_some_and(|ps| {
                    ps.iter().all(|p| {
                        p["consumers"].as_array().is_some_and(|cs| cs.iter().any(|c| c["consumer"] == serving.as_str() && c["lag"] == 0))
                    })
                });
                if s["realtime_version"] == want_version && feeds_done && at_end {
                    return;
                }
                assert!(Instant::now() < deadline, "not settled on version {want_version}: {s}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    settled(base.clone(), 1).await;
    let mut reference = Vec::new();
    for symbol in ["AAPL", "FB", "MSFT"] {
        for interval in ["1m", "1d"] {
            reference.push(bar_values(&all_bars(&client, &base, symbol, interval).await));
        }
        // Before the replay every day is served (from segments and realtime rows): one daily
        // bar per day of the symbol in the feed file, 30 trades per day.
        let days = std::fs::read_to_string(&feed).expect("feed").lines().filter(|l| l.starts_with(&format!("{symbol},"))).count();
        let daily = reference.last().expect("daily bars");
        assert_eq!(daily.len(), days, "{symbol}: one daily bar per feed day");
        assert_eq!(reference[reference.len() - 2].len(), days * 30, "{symbol}: one minute bar per trade");
    }
    let resp = client.post(format!("{base}/v1/admin/replays?switch_lag=0")).send().await.expect("POST replay");
    assert_eq!(resp.status().as_u16(), 202);
    let mut child = child;
    let _ = Command::new("kill").arg("-KILL").arg(child.id().to_string()).status();
    let _ = child.wait();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = spawn_with(&data, &feed, port, "max", &kappa);
    wait_listening(&client, &base).await;
    let (_, replays) = get_json(&client, &base, "/v1/admin/replays").await;
    let resumed = replays["replays"].as_array().is_some_and(|r| r.iter().any(|r| r["id"] == "ohlcv.v2"));
    // The kill came milliseconds after the start, long before the replay could catch up (its
    // first commit takes 100 ms): it is resumed from the store, not found finished.
    assert!(resumed, "the replay resumes at the next start: {replays}");
    settled(base.clone(), 2).await;
    let mut after = Vec::new();
    for symbol in ["AAPL", "FB", "MSFT"] {
        for interval in ["1m", "1d"] {
            after.push(bar_values(&all_bars(&client, &base, symbol, interval).await));
        }
    }
    for (i, (a, r)) in after.iter().zip(&reference).enumerate() {
        let first = a.iter().zip(r).position(|(x, y)| x != y);
        assert!(
            a == r,
            "the replayed version answers exactly as before the kill: answer {i}: {} bars against {}, first difference at {first:?}: {:?} against {:?}",
            a.len(),
            r.len(),
            first.and_then(|f| a.get(f)),
            first.and_then(|f| r.get(f))
        );
    }
    assert_eq!(after.len(), reference.len());
    stop(child);
}
