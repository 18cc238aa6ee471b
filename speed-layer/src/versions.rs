//! A view's realtime versions, run by the speed layer (DESIGN §6): the serving version's speed
//! layer (and, in Kappa mode, its hand-off), and replays — version v+1 built from offset 0 of
//! the log by its own consumer (`speed-layer.<view>.v<N+1>`), writing into v+1 only (offsets,
//! rows, hand-off segments) while v keeps serving and following the log.
//!
//! Every [`PROGRESS_INTERVAL`] the runner measures a replay from the offsets its speed layer
//! committed (events done, log end offsets, lag, rate, ETA; also in `/metrics`). Once the lag is
//! below the replay's switch threshold it switches the pointer to v+1 in one store transaction
//! ([`ViewStore::switch_realtime_version`]) and stops v's speed layer; v's rows, offsets and
//! leases are deleted after the grace period. Because the switch is decided from committed
//! offsets, a replay never switches early, and one killed mid-way resumes from them at the next
//! start (its `replaying` row says so). A cancelled replay leaves v serving.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::config::speed_consumer;
use prism_core::log::EventLog;
use prism_core::replay::{ReplayCommand, ReplayError, ReplayStatus};
use prism_core::store::{StoreError, ViewStore};
use prism_core::time::now_ms;
use prism_core::view::View;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bulk::bulk_catch_up;
use crate::handoff::{run_handoff, HandoffConfig};
use crate::{run_speed_layer, telemetry, SpeedConfig, SpeedError};

/// How often a replay's progress is measured (and the switch decided).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Finished replays kept for `GET /v1/admin/replays/{id}`.
const FINISHED_KEPT: usize = 16;
/// How often retired versions are looked for and expired.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);

/// Settings of a view's version runner.
#[derive(Debug, Clone)]
pub struct VersionsConfig {
    /// The speed layer's settings (`view_version` is set per version).
    pub speed: SpeedConfig,
    /// Kappa mode: the hand-off's settings (`realtime_version` is set per version); `None` in
    /// Lambda mode.
    pub handoff: Option<HandoffConfig>,
    /// How long a retired or cancelled version's rows stay (longer than any query).
    pub grace: Duration,
}

/// One running realtime version: its speed layer and hand-off, stopped by `stop`.
struct Running {
    version: i64,
    stop: CancellationToken,
    tasks: JoinSet<Result<(), String>>,
    /// Events its bulk catch-up has read (nothing is committed until it ends).
    bulk_done: Arc<AtomicI64>,
}

/// A replay being built.
struct Replay {
    running: Running,
    /// Its progress; `status.switch_lag` is the switch threshold.
    status: ReplayStatus,
    /// (when, events done) samples of the last few seconds, for the rate.
    samples: VecDeque<(Instant, i64)>,
    /// Events behind the log end by the committed offsets (unknown: `i64::MAX`).
    committed_lag: i64,
}

fn start_version<V: View, L: EventLog>(view: &Arc<V>, config: &VersionsConfig, version: i64, log: &Arc<L>, store: &ViewStore) -> Running {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let speed = SpeedConfig { view_version: version, ..config.speed.clone() };
    let bulk_done = Arc::new(AtomicI64::new(0));
    // Kappa: a fresh version (a replay) first folds the log's history in bulk straight into
    // segments; the streaming speed layer resumes where that stopped.
    let bulk = config.handoff.as_ref().map(|h| HandoffConfig { realtime_version: version, ..h.clone() });
    let (v, l, s, t, done) = (view.clone(), log.clone(), store.clone(), stop.clone(), bulk_done.clone());
    tasks.spawn(async move {
        if let Some(h) = bulk {
            // Not raced against the stop: a store transaction dropped half-way would keep
            // SQLite's write lock until its connection is reused. The catch-up looks at the token
            // between reads and stops there.
            bulk_catch_up(&v, &h, &speed.instance_id, &*l, &s, &done, &t).await.map_err(|e| format!("bulk catch-up v{version}: {e}"))?;
            if t.is_cancelled() {
                return Ok(());
            }
        }
        run_speed_layer(v, speed, l, s, t).await.map_err(|e: SpeedError| format!("speed layer v{version}: {e}"))
    });
    if let Some(handoff) = &config.handoff {
        let handoff = HandoffConfig { realtime_version: version, ..handoff.clone() };
        let (v, s, l, t) = (view.clone(), store.clone(), log.clone(), stop.clone());
        tasks.spawn(async move { run_handoff(v, handoff, s, l, t).await.map_err(|e| format!("hand-off v{version}: {e}")) });
    }
    tracing::info!(view = %view.name(), version, "realtime version running");
    Running { version, stop, tasks, bulk_done }
}

async fn stop_version(mut running: Running) -> Result<(), String> {
    running.stop.cancel();
    let mut result = Ok(());
    while let Some(done) = running.tasks.join_next().await {
        let done = done.map_err(|e| e.to_string()).and_then(|r| r);
        if result.is_ok() {
            result = done;
        }
    }
    result
}

/// Runs `view`'s realtime versions until `cancel` fires: the serving version (the pointer's),
/// any replay left `replaying` by an earlier run (resumed), and replays asked for on
/// `commands`. Stops every version's speed layer (each commits what it holds) before returning.
///
/// Errors: the first failure of a speed layer or hand-off, or of the store or the log.
pub async fn run_versions<V: View, L: EventLog>(
    view: Arc<V>,
    config: VersionsConfig,
    log: Arc<L>,
    store: ViewStore,
    mut commands: mpsc::Receiver<ReplayCommand>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let name = view.name().to_string();
    let err = |e: StoreError| e.to_string();
    let serving_version = store.view_pointer(&name).await.map_err(err)?.realtime_version;
    // A serving version built under another definition is not continued with this code: it
    // stays as it is (and is not served) until a replay builds one under this definition.
    let built = store.record_realtime_fingerprint(&name, serving_version, &view.fingerprint()).await.map_err(err)?;
    let mut serving = if built == view.fingerprint() {
        Some(start_version(&view, &config, serving_version, &log, &store))
    } else {
        tracing::error!(view = %name, version = serving_version, built = %built, running = %view.fingerprint(),
            "the serving realtime version was built under another view definition: it is not served until a replay rebuilds it (prism replay)");
        None
    };
    let mut replay: Option<Replay> = None;
    let mut finished: VecDeque<ReplayStatus> = VecDeque::new();
    for v in store.realtime_versions(&name).await.map_err(err)? {
        if v.state == "replaying" && replay.is_none() {
            tracing::info!(view = %name, version = v.realtime_version, "resuming a replay from its committed offsets");
            let running = start_version(&view, &config, v.realtime_version, &log, &store);
            replay = Some(new_replay(&name, running, v.switch_lag.unwrap_or(prism_core::replay::DEFAULT_SWITCH_LAG), v.created_at_ms));
        }
    }
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    let mut last_expiry = Instant::now();
    let result: Result<(), String> = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            Some(done) = async { match serving.as_mut() { Some(s) => s.tasks.join_next().await, None => std::future::pending().await } } => {
                let version = serving.as_ref().map_or(0, |s| s.version);
                break Err(done.map_err(|e| e.to_string()).and_then(|r| r).err().unwrap_or_else(|| format!("{name} v{version} stopped")));
            }
            Some(done) = async { match replay.as_mut() { Some(r) => r.running.tasks.join_next().await, None => std::future::pending().await } } => {
                let error = done.map_err(|e| e.to_string()).and_then(|r| r).err().unwrap_or_else(|| "stopped".into());
                tracing::error!(view = %name, error = %error, "a replay failed; it resumes from its committed offsets at the next start");
                if let Some(mut r) = replay.take() {
                    let _ = stop_version(r.running).await;
                    r.status.state = "failed".into();
                    r.status.error = Some(error);
                    r.status.ended_at_ms = Some(now_ms());
                    keep(&mut finished, r.status);
                }
            }
            Some(command) = commands.recv() => {
                match command {
                    ReplayCommand::Start { switch_lag, reply } => {
                        let answer = match &replay {
                            Some(r) => Err(ReplayError::Conflict(format!("a replay of {name} is already running ({}); one at a time", r.status.id))),
                            None => match store.begin_replay(&name, &view.fingerprint(), switch_lag.max(0)).await {
                                Ok(version) => {
                                    metrics::counter!(telemetry::REPLAYS_TOTAL, "view" => name.clone()).increment(1);
                                    let running = start_version(&view, &config, version, &log, &store);
                                    let r = new_replay(&name, running, switch_lag.max(0), now_ms());
                                    let status = r.status.clone();
                                    replay = Some(r);
                                    Ok(status)
                                }
                                Err(StoreError::Conflict(m)) => Err(ReplayError::Conflict(m)),
                                Err(e) => Err(ReplayError::Failed(e.to_string())),
                            },
                        };
                        let _ = reply.send(answer);
                    }
                    ReplayCommand::List { reply } => {
                        let mut all: Vec<ReplayStatus> = finished.iter().cloned().collect();
                        all.extend(replay.as_ref().map(|r| r.status.clone()));
                        let _ = reply.send(all);
                    }
                    ReplayCommand::Cancel { version, reply } => {
                        let answer = match replay.take() {
                            Some(r) if r.running.version == version => {
                                let mut status = r.status.clone();
                                let stopped = stop_version(r.running).await;
                                match store.cancel_replay(&name, version).await {
                                    Ok(()) => {
                                        status.state = "cancelled".into();
                                        status.ended_at_ms = Some(now_ms());
                                        if let Err(e) = stopped {
                                            status.error = Some(e);
                                        }
                                        keep(&mut finished, status.clone());
                                        tracing::info!(view = %name, version, "replay cancelled; the serving version is unchanged");
                                        Ok(status)
                                    }
                                    Err(e) => Err(ReplayError::Failed(e.to_string())),
                                }
                            }
                            other => {
                                replay = other;
                                Err(ReplayError::NotFound(format!("no replay of {name} is building version {version}")))
                            }
                        };
                        let _ = reply.send(answer);
                    }
                }
            }
            _ = ticker.tick() => {
                if let Some(r) = replay.as_mut() {
                    if let Err(e) = measure(&*view, r, &*log, &store).await {
                        tracing::warn!(view = %name, error = %e, "could not measure a replay's progress");
                        continue;
                    }
                    if r.committed_lag < r.status.switch_lag.max(1) {
                        let version = r.running.version;
                        match store.switch_realtime_version(&name, version, config.handoff.is_some()).await {
                            Ok(retired) => {
                                let Some(mut done) = replay.take() else { continue };
                                if let Some(old) = serving.replace(done.running) {
                                    if let Err(e) = stop_version(old).await {
                                        tracing::warn!(view = %name, version = retired, error = %e, "the retired version stopped with an error");
                                    }
                                }
                                done.status.state = "switched".into();
                                done.status.ended_at_ms = Some(now_ms());
                                metrics::counter!(telemetry::REPLAY_SWITCHES_TOTAL, "view" => name.clone()).increment(1);
                                tracing::info!(view = %name, version, retired, lag = done.status.lag, "replay caught up: serving switched to it");
                                keep(&mut finished, done.status);
                            }
                            Err(e) => tracing::warn!(view = %name, version, error = %e, "switching to a replay failed; retrying"),
                        }
                    }
                }
                if last_expiry.elapsed() >= EXPIRY_INTERVAL {
                    last_expiry = Instant::now();
                    match store.expire_realtime_versions(&*view, now_ms() - config.grace.as_millis() as i64).await {
                        Ok(expired) if !expired.is_empty() => tracing::info!(view = %name, ?expired, "deleted retired realtime versions' rows"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(view = %name, error = %e, "expiring retired realtime versions failed"),
                    }
                }
            }
        }
    };
    let mut stopped = match serving {
        Some(s) => stop_version(s).await,
        None => Ok(()),
    };
    if let Some(r) = replay {
        let replay_stopped = stop_version(r.running).await;
        stopped = stopped.and(replay_stopped);
    }
    result.and(stopped)
}

fn new_replay(view: &str, running: Running, switch_lag: i64, started_at_ms: i64) -> Replay {
    let status = ReplayStatus {
        id: ReplayStatus::id_of(view, running.version),
        view: view.to_string(),
        version: running.version,
        state: "replaying".into(),
        events_done: 0,
        events_total: 0,
        // Unknown until the first measurement, which decides the switch: never below the
        // threshold before it.
        lag: i64::MAX,
        switch_lag,
        events_per_second: 0.0,
        eta_seconds: None,
        started_at_ms,
        ended_at_ms: None,
        error: None,
    };
    Replay { running, status, samples: VecDeque::new(), committed_lag: i64::MAX }
}

fn keep(finished: &mut VecDeque<ReplayStatus>, status: ReplayStatus) {
    finished.push_back(status);
    while finished.len() > FINISHED_KEPT {
        finished.pop_front();
    }
}

/// Updates a replay's progress from the offsets its speed layer committed and the log's end.
async fn measure<V: View, L: EventLog>(view: &V, r: &mut Replay, log: &L, store: &ViewStore) -> Result<(), String> {
    let topic = view.source_topic();
    let ends = log.end_offsets(topic).await.map_err(|e| e.to_string())?;
    let offsets = store.consumer_offsets(&speed_consumer(view.name(), r.running.version), topic).await.map_err(|e| e.to_string())?;
    let (committed, total) = prism_core::replay::progress(&ends, &offsets);
    // The switch is decided from committed offsets only; a bulk catch-up's reads show progress.
    r.committed_lag = total - committed;
    let done = committed.max(r.running.bulk_done.load(Ordering::Relaxed).min(total));
    let now = Instant::now();
    r.samples.push_back((now, done));
    while r.samples.len() > 2 && r.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(5)) {
        r.samples.pop_front();
    }
    let rate = match (r.samples.front(), r.samples.back()) {
        (Some((t0, d0)), Some((t1, d1))) if t1 > t0 => (d1 - d0) as f64 / t1.duration_since(*t0).as_secs_f64(),
        _ => 0.0,
    };
    let s = &mut r.status;
    s.events_done = done;
    s.events_total = total;
    s.lag = total - done;
    s.events_per_second = rate;
    s.eta_seconds = (rate > 0.0).then(|| s.lag as f64 / rate);
    let name = view.name().to_string();
    metrics::gauge!(telemetry::REPLAY_EVENTS_DONE, "view" => name.clone()).set(done as f64);
    metrics::gauge!(telemetry::REPLAY_EVENTS_TOTAL, "view" => name.clone()).set(total as f64);
    metrics::gauge!(telemetry::REPLAY_LAG_EVENTS, "view" => name.clone()).set(s.lag as f64);
    metrics::gauge!(telemetry::REPLAY_EVENTS_PER_SECOND, "view" => name).set(rate);
    Ok(())
}
