//! `prism bench-lab`: the stock-quote lab measured end to end (issue targets, DESIGN §11), as a
//! JSON report for `bench/reports/`.
//!
//! It starts `prism up` in this process on a fresh data dir with the bundled lab file (4.74 M
//! trades), and meanwhile a client polls all five symbols' 13-year daily bars once a second.
//! Measured:
//!
//! - time from start until every one of the lab's daily bars is served exact (open, high, low,
//!   close, volume equal to the CSV) and from batch segments;
//! - the 13-year `1d` query's latency while the layers catch up (max, p99) and after (p50, p99
//!   over repeated requests), from sending the request until the whole answer has arrived (its
//!   JSON is parsed afterwards, outside the measured time);
//! - a full batch rebuild (`?full=true`) and an incremental run after one new trading day;
//! - master-dataset files per (partition, UTC day) once compaction ran;
//! - the process's peak RSS (Linux VmHWM).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use prism_batch::archiver::ArchiverArgs;
use prism_batch::batch_job::BatchArgs;
use prism_batch::master::MasterDataset;
use prism_core::config::DeploymentArgs;
use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, QUOTES_TOPIC};
use prism_core::log::embedded::FsyncPolicy;
use prism_ingest::feed::bars::parse_bars;
use prism_ingest::feed::{FeedArgs, FeedSpeed};
use prism_ingest::http::IngestArgs;
use prism_speed::handoff::HandoffArgs;
use prism_speed::SpeedArgs;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::up::{run_up, DataDir, UpConfig};

/// Flags of `prism bench-lab`.
#[derive(Debug, Clone, Args)]
pub struct LabBenchConfig {
    /// Folder to work in (must not exist; removed afterwards unless --keep). Default: a new
    /// folder under the system temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working folder.
    #[arg(long)]
    pub keep: bool,
    /// Give up when the lab is not served from segments within this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Requests of the 13-year daily query per symbol once caught up (for p50/p99).
    #[arg(long, default_value_t = 40)]
    pub samples: usize,
}

/// Latency figures, ms.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub requests: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<f64>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Latency { requests: samples.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// The report `prism bench-lab` prints.
#[derive(Debug, Serialize)]
pub struct LabReport {
    /// Prism version.
    pub prism_version: String,
    /// Build profile.
    pub profile: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Daily bars in the lab file.
    pub daily_bars: usize,
    /// Seconds from start until every daily bar was served exact from batch segments (the
    /// newest day's bar merged with the realtime minutes after the batch horizon).
    pub seconds_to_all_bars_from_segments: f64,
    /// The 13-year daily query while the layers caught up (one request per symbol a second).
    pub daily_query_during_catch_up: Latency,
    /// The 13-year daily query once caught up.
    pub daily_query_caught_up: Latency,
    /// A full rebuild: the batch layer's own time, ms.
    pub full_rebuild_ms: u64,
    /// Segments in the fully rebuilt version.
    pub full_rebuild_segments: u64,
    /// An incremental run after one new trading day (5 symbols × 390 trades): the batch
    /// layer's own time, ms.
    pub incremental_run_ms: u64,
    /// Segments that run rebuilt, and carried over.
    pub incremental_segments_built: u64,
    /// Segments carried over by that run.
    pub incremental_segments_carried: u64,
    /// The most master-dataset files (visible to readers) in any (partition, UTC day).
    pub max_master_files_per_partition_day: usize,
    /// Visible master-dataset files.
    pub master_files: usize,
    /// The same lab in Kappa mode, then a full replay of `ohlcv`.
    pub kappa: KappaLabReport,
    /// Peak RSS of the whole process (every layer and the client, Lambda and Kappa runs), bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// The lab in Kappa mode (a fresh data dir): catch-up through the hand-off, then a full replay.
#[derive(Debug, Serialize)]
pub struct KappaLabReport {
    /// Seconds from start until every daily bar was served exact from hand-off segments (the
    /// newest day from realtime rows).
    pub seconds_to_all_bars_from_segments: f64,
    /// The 13-year daily query once caught up.
    pub daily_query_caught_up: Latency,
    /// A full replay of `ohlcv` (from offset 0 to the switch-over), seconds.
    pub replay_seconds: f64,
    /// Events the replay consumed.
    pub replay_events: i64,
    /// `replay_events / replay_seconds`.
    pub replay_events_per_second: f64,
    /// The 13-year daily query during the replay (every answer checked exact).
    pub daily_query_during_replay: Latency,
}

/// Runs the lab benchmark. Errors: a failed step, with context.
pub async fn run_lab_bench(config: LabBenchConfig) -> anyhow::Result<LabReport> {
    let dir = match &config.dir {
        Some(d) => {
            if d.exists() {
                bail!("{} exists; give bench-lab a new folder", d.display());
            }
            d.clone()
        }
        None => std::env::temp_dir().join(format!("prism-bench-lab-{}", std::process::id())),
    };
    let result = bench(&dir, &config).await;
    if !config.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// One daily bar of the lab: (date `YYYY-MM-DD`, open, high, low, close, volume).
type LabBar = (String, Decimal6, Decimal6, Decimal6, Decimal6, i64);
/// The lab's daily bars by symbol.
type Expected = BTreeMap<String, Vec<LabBar>>;

/// The lab's daily bars, by symbol: (date `YYYY-MM-DD`, open, high, low, close, volume).
fn expected_bars() -> anyhow::Result<Expected> {
    use std::io::Read;
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(crate::lab::LAB_DATA).read_to_end(&mut text).context("gunzip the lab data")?;
    let file = parse_bars(&text, crate::lab::LAB_FILE_NAME, None).context("parsing the lab data")?;
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for b in file.bars {
        out.entry(b.symbol.clone()).or_default().push((b.date.format("%Y-%m-%d").to_string(), b.open, b.high, b.low, b.close, b.volume));
    }
    for bars in out.values_mut() {
        bars.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(out)
}

/// One poll of every symbol's 13-year daily bars: the latency of each request, and whether all
/// bars were exact and from batch segments.
/// `segment_layer`: the layer every bar but the newest must come from (`batch`, `segment`), or
/// `None` to check values only.
async fn poll_daily(
    client: &reqwest::Client,
    base: &str,
    expected: &Expected,
    segment_layer: Option<&str>,
) -> anyhow::Result<(Vec<f64>, bool)> {
    let mut latencies = Vec::new();
    let mut all_good = true;
    let newest_layer = if segment_layer == Some("segment") { "realtime" } else { "both" };
    for (symbol, bars) in expected {
        let started = Instant::now();
        let r = client.get(format!("{base}/v1/bars/{symbol}?interval=1d&limit=100000")).send().await?;
        let status = r.status().as_u16();
        // The latency ends when the whole answer has arrived; parsing it is the client's work
        // (and this client shares the server's runtime and cores).
        let bytes = r.bytes().await.unwrap_or_default();
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if status != 200 {
            all_good = false;
            continue;
        }
        let served = body["bars"].as_array().cloned().unwrap_or_default();
        let dec = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<Decimal6>().ok());
        // Segments hold every event before the horizon H, which trails the newest event time by
        // the allowed lateness (DESIGN §5): the newest day's bar straddles H and is merged from
        // both layers ("both"; Kappa's day-aligned hand-off leaves it "realtime"); every other
        // bar must come from segments alone.
        let last = served.len().saturating_sub(1);
        let good = served.len() == bars.len()
            && served.iter().zip(bars).enumerate().all(|(i, (s, (date, o, h, l, c, v)))| {
                (segment_layer.is_none_or(|l| s["layer"] == l) || (i == last && s["layer"] == newest_layer))
                    && s["start"].as_str().is_some_and(|t| t.starts_with(date.as_str()))
                    && dec(&s["open"]) == Some(*o)
                    && dec(&s["high"]) == Some(*h)
                    && dec(&s["low"]) == Some(*l)
                    && dec(&s["close"]) == Some(*c)
                    && s["volume"].as_i64() == Some(*v)
            });
        all_good &= good;
    }
    Ok((latencies, all_good))
}

async fn batch_run(client: &reqwest::Client, base: &str, full: bool) -> anyhow::Result<serde_json::Value> {
    let r = client.post(format!("{base}/v1/admin/batch-runs?full={full}")).send().await?;
    if r.status().as_u16() != 201 {
        bail!("batch run answered {}: {}", r.status(), r.text().await.unwrap_or_default());
    }
    let body: serde_json::Value = r.json().await?;
    Ok(body["runs"][0].clone())
}

/// Starts `prism up` in this process: its stop token, its task and its base URL.
async fn start_up(up: UpConfig) -> anyhow::Result<(CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>, String)> {
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(run_up(up, shutdown.clone(), Some(tx)));
    let addr = tokio::time::timeout(Duration::from_secs(60), rx).await.context("prism up did not listen")??;
    Ok((shutdown, handle, format!("http://{addr}")))
}

async fn bench(dir: &std::path::Path, config: &LabBenchConfig) -> anyhow::Result<LabReport> {
    let expected = expected_bars()?;
    let daily_bars = expected.values().map(Vec::len).sum();
    let up = UpConfig {
        data_dir: dir.to_path_buf(),
        http_addr: "127.0.0.1:0".parse()?,
        fsync: FsyncPolicy::Interval(Duration::from_millis(200)),
        deployment: DeploymentArgs {
            architecture: prism_core::config::Architecture::Lambda,
            partitions: 4,
            allowed_lateness_ms: 5_000,
            views: vec!["ohlcv".into()],
        },
        feed: FeedArgs { feed: Vec::new(), no_feed: false, feed_symbol: None, feed_speed: FeedSpeed::Max, feed_trades_per_day: 390 },
        ingest: IngestArgs::default(),
        speed: SpeedArgs { commit_interval: Duration::from_millis(100), commit_max_events: 100_000 },
        archiver: ArchiverArgs { compact_interval: Duration::from_secs(60), compact_grace: Duration::from_secs(600) },
        batch: BatchArgs { batch_interval: Duration::from_secs(60), no_batch_on_catch_up: false, batch_parallelism: 2 },
        handoff: HandoffArgs { handoff_interval: Duration::from_secs(1) },
        logs: prism_ingest::logs::LogsArgs {
            tail: Vec::new(),
            tail_poll_interval: Duration::from_millis(100),
            tail_rotate_wait: Duration::from_secs(5),
            tail_read_from_end: false,
        },
        poll: prism_ingest::poller::PollerArgs::default(),
        cdc: prism_ingest::cdc::CdcArgs::default(),
        auth: prism_serving::auth::AuthArgs::default(),
    };
    let started = Instant::now();
    let (shutdown, handle, base) = start_up(up.clone()).await?;
    let client = crate::http_client();

    // Catch-up: poll once a second until every bar is exact and from segments.
    let mut during = Vec::new();
    let deadline = started + Duration::from_secs(config.timeout_secs);
    let to_segments = loop {
        let tick = Instant::now();
        let (latencies, done) = poll_daily(&client, &base, &expected, Some("batch")).await?;
        if done {
            break started.elapsed().as_secs_f64();
        }
        during.extend(latencies);
        if Instant::now() > deadline {
            bail!("the lab was not served from segments within {} s", config.timeout_secs);
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    };
    tracing::info!(seconds = to_segments, "every daily bar is served exact from batch segments");
    let mut after = Vec::new();
    for _ in 0..config.samples {
        let (latencies, done) = poll_daily(&client, &base, &expected, Some("batch")).await?;
        if !done {
            bail!("a daily bar changed after the catch-up");
        }
        after.extend(latencies);
    }

    let full = batch_run(&client, &base, true).await?;
    // The incremental run is measured on a restart with catch-up runs off, so that the run
    // which takes the new day in is the one requested here (not a catch-up run racing it).
    shutdown.cancel();
    handle.await.context("prism up task")??;
    let up_kappa = up.clone();
    let up = UpConfig { batch: BatchArgs { no_batch_on_catch_up: true, ..up.batch }, ..up };
    let (shutdown, handle, base) = start_up(up).await?;
    // One new trading day after the lab's last (2013-03-01 was a Friday): Monday 2013-03-04.
    let day_start =
        chrono::NaiveDate::from_ymd_opt(2013, 3, 4).and_then(|d| d.and_hms_opt(14, 30, 0)).context("date")?.and_utc().timestamp_millis();
    let mut body = Vec::new();
    for (s, symbol) in expected.keys().enumerate() {
        for i in 0..390i64 {
            let q = Quote {
                symbol: symbol.clone(),
                ts: day_start + i * 60_000 + s as i64,
                price: Decimal6::from_units(100_000_000 + (i as i128 % 17) * 10_000),
                size: 100,
                bid: None,
                ask: None,
                exchange: None,
            };
            body.extend(q.to_json());
            body.push(b'\n');
        }
    }
    let r = client.post(format!("{base}/v1/events/quotes")).header("content-type", "application/x-ndjson").body(body).send().await?;
    if r.status().as_u16() != 202 {
        bail!("ingest answered {}", r.status());
    }
    // Let the archiver and the speed layer take the day in (its H then moves past it).
    let archived = Instant::now();
    loop {
        let status: serde_json::Value = client.get(format!("{base}/v1/status")).send().await?.json().await?;
        let parts = status["partitions"].as_array().cloned().unwrap_or_default();
        let done = parts.iter().all(|p| p["consumers"].as_array().is_some_and(|c| c.iter().all(|c| c["lag"] == 0)));
        if done || archived.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let incremental = batch_run(&client, &base, false).await?;

    let master = MasterDataset::local(&DataDir::new(dir).master)?;
    let files = master.list_files(QUOTES_TOPIC).await?;
    let mut per_day: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for f in &files {
        *per_day.entry((f.partition, f.day_start_ms)).or_default() += 1;
    }
    shutdown.cancel();
    handle.await.context("prism up task")??;
    let kappa = kappa_bench(&dir.join("kappa"), up_kappa, config, &expected).await?;
    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    Ok(LabReport {
        prism_version: env!("CARGO_PKG_VERSION").into(),
        profile: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        daily_bars,
        seconds_to_all_bars_from_segments: to_segments,
        daily_query_during_catch_up: Latency::of(during),
        daily_query_caught_up: Latency::of(after),
        full_rebuild_ms: num(&full, "elapsed_ms"),
        full_rebuild_segments: num(&full, "segments_built"),
        incremental_run_ms: num(&incremental, "elapsed_ms"),
        incremental_segments_built: num(&incremental, "segments_built"),
        incremental_segments_carried: num(&incremental, "segments_carried"),
        max_master_files_per_partition_day: per_day.values().copied().max().unwrap_or(0),
        master_files: files.len(),
        kappa,
        peak_rss_bytes: crate::bench::peak_rss_bytes(),
    })
}

/// The Kappa part: `prism up --architecture kappa` on a fresh `dir`, caught up, then a full
/// replay of `ohlcv` while a client polls every symbol's daily bars.
async fn kappa_bench(dir: &std::path::Path, up: UpConfig, config: &LabBenchConfig, expected: &Expected) -> anyhow::Result<KappaLabReport> {
    let mut up = UpConfig { data_dir: dir.to_path_buf(), ..up };
    up.deployment.architecture = prism_core::config::Architecture::Kappa;
    let started = Instant::now();
    let (shutdown, handle, base) = start_up(up).await?;
    let client = crate::http_client();
    let deadline = started + Duration::from_secs(config.timeout_secs);
    let to_segments = loop {
        let (_, done) = poll_daily(&client, &base, expected, Some("segment")).await?;
        if done {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("Kappa: the lab was not served from segments within {} s", config.timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut after = Vec::new();
    for _ in 0..config.samples {
        let (latencies, done) = poll_daily(&client, &base, expected, Some("segment")).await?;
        if !done {
            bail!("Kappa: a daily bar changed after the catch-up");
        }
        after.extend(latencies);
    }
    let replay_started = Instant::now();
    let r = client.post(format!("{base}/v1/admin/replays?view=ohlcv&switch_lag=1000")).send().await?;
    if r.status().as_u16() != 202 {
        bail!("replay answered {}: {}", r.status(), r.text().await.unwrap_or_default());
    }
    let body: serde_json::Value = r.json().await?;
    let id = body["replays"][0]["id"].as_str().context("a replay id")?.to_string();
    let mut during = Vec::new();
    let replay = loop {
        // A client polls every symbol's daily bars once a second, as during the catch-up. Served
        // bars move between segments and realtime rows as the new version takes over; their
        // values must not change.
        let tick = Instant::now();
        let (latencies, exact) = poll_daily(&client, &base, expected, None).await?;
        if !exact {
            bail!("Kappa: a daily bar was wrong during the replay");
        }
        during.extend(latencies);
        let replay: serde_json::Value = client.get(format!("{base}/v1/admin/replays/{id}")).send().await?.json().await?;
        match replay["state"].as_str() {
            Some("switched") => break replay,
            Some("replaying") => {}
            other => bail!("the replay ended {other:?}: {replay}"),
        }
        if replay_started.elapsed() > Duration::from_secs(config.timeout_secs) {
            bail!("the replay did not switch within {} s", config.timeout_secs);
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    };
    let replay_seconds = replay_started.elapsed().as_secs_f64();
    let replay_events = replay["events_done"].as_i64().unwrap_or(0);
    shutdown.cancel();
    handle.await.context("prism up task")??;
    Ok(KappaLabReport {
        seconds_to_all_bars_from_segments: to_segments,
        daily_query_caught_up: Latency::of(after),
        replay_seconds,
        replay_events,
        replay_events_per_second: replay_events as f64 / replay_seconds.max(1e-9),
        daily_query_during_replay: Latency::of(during),
    })
}
