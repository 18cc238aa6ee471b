//! `prism replay`: asks a running Prism (`prism up`, or the process that runs the speed layer)
//! to rebuild views from the log (`POST /v1/admin/replays`), then follows each replay with a
//! progress bar (events done of total, lag, rate, ETA) until it switches over. Ctrl-C stops
//! watching only; the replay goes on (`DELETE /v1/admin/replays/{id}` cancels it).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Flags of `prism replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The view to rebuild (`ohlcv`), or `all`.
    #[arg(long, default_value = "all")]
    pub view: String,
    /// Switch serving to the new version once fewer than this many events remain.
    #[arg(long, default_value_t = prism_core::replay::DEFAULT_SWITCH_LAG)]
    pub switch_lag: i64,
    /// Base URL of the Prism API that runs the speed layer.
    #[arg(long, env = "PRISM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Start the replays and return without following them.
    #[arg(long)]
    pub no_wait: bool,
}

/// How often a replay's progress is printed as a line when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Starts the replays and follows them until each has switched (or failed, or was cancelled),
/// or until `stop` fires.
///
/// Errors: the API refused (the message says why: an unknown view, a replay already running),
/// or a replay ended other than switched.
pub async fn run_replay(args: ReplayArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let client = crate::http_client();
    let base = args.url.trim_end_matches('/');
    if !args.view.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        bail!("--view {:?}: a view name is letters, digits, '_' and '-'", args.view);
    }
    let resp = client
        .post(format!("{base}/v1/admin/replays?view={}&switch_lag={}", args.view, args.switch_lag))
        .send()
        .await
        .with_context(|| format!("cannot reach Prism at {base} (--url / PRISM_URL)"))?;
    let code = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !code.is_success() {
        bail!("{base} refused the replay ({code}): {}", body["error"].as_str().unwrap_or("no reason given"));
    }
    let ids: Vec<String> = body["replays"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str().map(str::to_string)).collect();
    if args.no_wait {
        for id in &ids {
            println!("started {id}: follow it at {base}/v1/admin/replays/{id}");
        }
        return Ok(());
    }
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} events  {msg}")
        .context("progress bar template")?
        .progress_chars("=> ");
    let mut watched: Vec<(String, ProgressBar)> = ids
        .iter()
        .map(|id| {
            let bar = bars.add(ProgressBar::new(0).with_style(style.clone()).with_prefix(id.clone()));
            (id.clone(), bar)
        })
        .collect();
    // Off a terminal (a log file, CI, a pipe) indicatif draws nothing: a line per replay every
    // few seconds and one at its end instead, on stderr.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line = std::time::Instant::now();
    let mut failures = Vec::new();
    while !watched.is_empty() {
        tokio::select! {
            _ = stop.cancelled() => {
                for (id, bar) in &watched {
                    bar.abandon_with_message(format!("still replaying; DELETE {base}/v1/admin/replays/{id} cancels it"));
                }
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        // A progress line per replay this round (every few seconds), besides the final ones.
        let due = plain && last_line.elapsed() >= PLAIN_PROGRESS_EVERY;
        if due {
            last_line = std::time::Instant::now();
        }
        let mut still = Vec::new();
        for (id, bar) in watched {
            let replay: Value = client.get(format!("{base}/v1/admin/replays/{id}")).send().await?.json().await?;
            let (done, total) = (replay["events_done"].as_i64().unwrap_or(0), replay["events_total"].as_i64().unwrap_or(0));
            bar.set_length(total.max(0) as u64);
            bar.set_position(done.max(0) as u64);
            let rate = replay["events_per_second"].as_f64().unwrap_or(0.0);
            let eta = replay["eta_seconds"].as_f64().map_or_else(|| "?".to_string(), |s| format!("{s:.0} s"));
            bar.set_message(format!("lag {}  {:.0} events/s  ETA {eta}", replay["lag"], rate));
            let state = replay["state"].as_str();
            if due || (plain && state != Some("replaying")) {
                eprintln!(
                    "{id}: {} — {done}/{total} events, lag {}, {rate:.0} events/s, ETA {eta}",
                    state.unwrap_or("unknown"),
                    replay["lag"]
                );
            }
            match state {
                Some("replaying") => still.push((id, bar)),
                Some("switched") => bar.finish_with_message("caught up: serving switched to it"),
                other => {
                    bar.abandon_with_message(other.unwrap_or("unknown").to_string());
                    failures.push(format!("{id}: {} {}", other.unwrap_or("unknown"), replay["error"].as_str().unwrap_or("")));
                }
            }
        }
        watched = still;
    }
    if !failures.is_empty() {
        bail!("replays did not switch: {}", failures.join("; "));
    }
    Ok(())
}
