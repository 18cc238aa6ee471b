//! Realtime versions in the distributed deployment (issue 8, DESIGN §6). Each `prism
//! speed-layer` instance follows the view store: it runs a consumer-group member (and, unless
//! started with `--no-handoff`, the Kappa hand-off) for every version the store says to build —
//! the serving version (the view pointer's) and any `replaying` one that `POST
//! /v1/admin/replays` recorded ([`crate::replay_agent`]) — and stops those that were retired
//! or cancelled. Each version's instances form their own consumer group
//! (`speed-layer.<view>.v<N>`), so a replay reads every partition from offset 0 while the
//! serving version follows the log.
//!
//! Every [`FOLLOW_INTERVAL`] each instance also measures each replay from its committed offsets
//! and the log end, and switches the pointer once the lag is below the replay's threshold
//! ([`ViewStore::switch_realtime_version`]: one transaction that only a `replaying` version
//! passes, so of instances racing to switch, one does and the rest see a conflict). Decided from
//! committed offsets, a switch is never early; a replay outlives any instance, since its state is
//! its store row.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::config::speed_consumer;
use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};
use prism_core::log::kafka_group::{GroupConfig, GroupMembership};
use prism_core::log::EventLog;
use prism_core::replay::{progress, DEFAULT_SWITCH_LAG};
use prism_core::store::{StoreError, ViewStore};
use prism_core::time::now_ms;
use prism_core::view::View;
use prism_speed::handoff::{run_handoff, HandoffConfig};
use prism_speed::{run_speed_layer_in_group, SpeedConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::micro::supervise;

/// How often an instance looks at the store for versions to start, stop or switch.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);
/// How often retired versions are looked for and expired.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);

/// Settings of one instance's version follower.
#[derive(Debug, Clone)]
pub struct GroupVersionsConfig {
    /// The speed layer's settings (`view_version` is set per version).
    pub speed: SpeedConfig,
    /// The hand-off's settings when this instance runs it (`realtime_version` is set per
    /// version); `None` in Lambda mode and with `--no-handoff`.
    pub handoff: Option<HandoffConfig>,
    /// Kappa mode: a switch also moves the pointer's segments to the replayed version's.
    pub kappa: bool,
    /// How long a retired or cancelled version's rows stay.
    pub grace: Duration,
    /// The brokers, for the consumer groups.
    pub kafka: KafkaLogConfig,
    /// Consumer-group session timeout.
    pub session_timeout: Duration,
    /// This instance's member and lease name.
    pub instance_id: String,
}

/// One version this instance runs: its group member and hand-off, stopped by `stop`.
struct Running {
    stop: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

/// Follows the store's versions of `view` until `cancel` fires, then stops every version it runs
/// (each commits what it holds).
///
/// Errors: a version's task failing for good (each restarts on its own first; see
/// [`supervise`]).
pub async fn run_group_versions<V: View>(
    view: Arc<V>,
    config: GroupVersionsConfig,
    log: Arc<KafkaLog>,
    store: ViewStore,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut running: BTreeMap<i64, Running> = BTreeMap::new();
    let mut ticker = tokio::time::interval(FOLLOW_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_expiry = Instant::now();
    // The serving version last reported as built under another definition (reported once).
    let mut warned = None;
    let mut built_with = None;
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            _ = ticker.tick() => {}
        }
        if let Some(e) = running
            .values_mut()
            .find_map(|r| r.tasks.try_join_next().and_then(|done| done.map_err(anyhow::Error::from).and_then(|r| r).err()))
        {
            break Err(e);
        }
        if let Err(e) = follow(&view, &config, &log, &store, &mut running, &mut warned, &mut built_with).await {
            tracing::warn!(view = %view.name(), error = %e, "could not follow the realtime versions; retrying");
        }
        if last_expiry.elapsed() >= EXPIRY_INTERVAL {
            last_expiry = Instant::now();
            match store.expire_realtime_versions(&*view, now_ms() - config.grace.as_millis() as i64).await {
                Ok(expired) if !expired.is_empty() => {
                    tracing::info!(view = %view.name(), ?expired, "deleted retired realtime versions' rows")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(view = %view.name(), error = %e, "expiring retired realtime versions failed"),
            }
        }
    };
    for (_, r) in std::mem::take(&mut running) {
        let stopped = stop(r).await;
        if result.is_ok() {
            stopped?;
        }
    }
    result
}

/// One look at the store: start the versions to build, stop the others, switch caught-up
/// replays.
async fn follow<V: View>(
    view: &Arc<V>,
    config: &GroupVersionsConfig,
    log: &Arc<KafkaLog>,
    store: &ViewStore,
    running: &mut BTreeMap<i64, Running>,
    warned: &mut Option<i64>,
    built_with: &mut Option<(i64, String)>,
) -> Result<(), StoreError> {
    let name = view.name();
    let fingerprint = view.fingerprint();
    let serving = store.view_pointer(name).await?.realtime_version;
    // The fingerprint a version was built with never changes: ask the store once per version,
    // not on every look.
    let built = match built_with {
        Some((version, built)) if *version == serving => built.clone(),
        _ => {
            let built = store.record_realtime_fingerprint(name, serving, &fingerprint).await?;
            *built_with = Some((serving, built.clone()));
            built
        }
    };
    let versions = store.realtime_versions(name).await?;
    let mut wanted = BTreeSet::new();
    if built == fingerprint {
        wanted.insert(serving);
    } else if warned.replace(serving) != Some(serving) {
        tracing::error!(view = %name, version = serving, built = %built, running = %fingerprint,
            "the serving realtime version was built under another view definition: it is not served until a replay rebuilds it (prism replay)");
    }
    let replaying: Vec<_> =
        versions.iter().filter(|v| v.state == "replaying" && v.fingerprint.as_deref() == Some(fingerprint.as_str())).collect();
    wanted.extend(replaying.iter().map(|v| v.realtime_version));
    for version in running.keys().copied().filter(|v| !wanted.contains(v)).collect::<Vec<_>>() {
        if let Some(r) = running.remove(&version) {
            if let Err(e) = stop(r).await {
                tracing::warn!(view = %name, version, error = %e, "a retired realtime version stopped with an error");
            }
            tracing::info!(view = %name, version, "realtime version no longer built here (retired or cancelled)");
        }
    }
    for &version in &wanted {
        running.entry(version).or_insert_with(|| start(view, config, version, log, store));
    }
    if replaying.is_empty() {
        return Ok(());
    }
    let ends = log.end_offsets(view.source_topic()).await.map_err(|e| StoreError::BadValue(e.to_string()))?;
    for v in replaying {
        let offsets = store.consumer_offsets(&speed_consumer(name, v.realtime_version), view.source_topic()).await?;
        let (done, total) = progress(&ends, &offsets);
        let label = name.to_string();
        metrics::gauge!(prism_speed::telemetry::REPLAY_EVENTS_DONE, "view" => label.clone()).set(done as f64);
        metrics::gauge!(prism_speed::telemetry::REPLAY_EVENTS_TOTAL, "view" => label.clone()).set(total as f64);
        metrics::gauge!(prism_speed::telemetry::REPLAY_LAG_EVENTS, "view" => label).set((total - done) as f64);
        if total - done >= v.switch_lag.unwrap_or(DEFAULT_SWITCH_LAG).max(1) {
            continue;
        }
        match store.switch_realtime_version(name, v.realtime_version, config.kappa).await {
            Ok(retired) => tracing::info!(view = %name, version = v.realtime_version, retired, lag = total - done,
                "replay caught up: serving switched to it"),
            // Another instance switched first, or it was cancelled meanwhile.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn start<V: View>(view: &Arc<V>, config: &GroupVersionsConfig, version: i64, log: &Arc<KafkaLog>, store: &ViewStore) -> Running {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    if let Some(handoff) = &config.handoff {
        let handoff = HandoffConfig { realtime_version: version, ..handoff.clone() };
        let (view, store, log, stop) = (view.clone(), store.clone(), log.clone(), stop.clone());
        tasks.spawn(async move {
            supervise("hand-off", stop.clone(), || run_handoff(view.clone(), handoff.clone(), store.clone(), log.clone(), stop.clone()))
                .await
        });
    }
    let group = GroupConfig {
        group_id: speed_consumer(view.name(), version),
        topic: view.source_topic().to_string(),
        session_timeout: config.session_timeout,
        revoke_timeout: Duration::from_secs(10),
    };
    let speed = SpeedConfig { view_version: version, ..config.speed.clone() };
    let (member_view, kafka, instance_id) = (view.clone(), config.kafka.clone(), config.instance_id.clone());
    let (log, store, member_stop) = (log.clone(), store.clone(), stop.clone());
    tasks.spawn(async move {
        supervise("speed layer", member_stop.clone(), || {
            let (view, speed, log, store, stop) = (member_view.clone(), speed.clone(), log.clone(), store.clone(), member_stop.clone());
            let membership = GroupMembership::join(&kafka, &group, &instance_id);
            async move { run_speed_layer_in_group(view, speed, log, store, membership?, stop).await }
        })
        .await
    });
    tracing::info!(view = %view.name(), version, instance = %config.instance_id, "realtime version running on this instance");
    Running { stop, tasks }
}

async fn stop(mut r: Running) -> anyhow::Result<()> {
    r.stop.cancel();
    let mut result = Ok(());
    while let Some(done) = r.tasks.join_next().await {
        let done = done.map_err(anyhow::Error::from).and_then(|r| r);
        if result.is_ok() {
            result = done;
        }
    }
    result
}
