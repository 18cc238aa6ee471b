//! Replays in the distributed deployment (issue 8, DESIGN §6): `prism serving` answers
//! `/v1/admin/replays` from the view store alone — a replay *is* its `realtime_versions` row —
//! and the `prism speed-layer` instances ([`crate::group_versions`]) build, switch and retire the
//! versions that the store names. No replay state lives in a process, so any serving instance
//! answers for any replay, and a restart of either side loses nothing.
//!
//! Progress (events done and total, lag) is measured from the offsets the replay's speed layers
//! committed and the log end offsets, as the embedded runner measures it; the rate is the one
//! between this agent's last two looks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use prism_core::config::speed_consumer;
use prism_core::log::EventLog;
use prism_core::replay::{progress, ReplayCommand, ReplayControl, ReplayError, ReplayStatus};
use prism_core::store::{RealtimeVersion, StoreError, ViewStore};
use prism_core::view::{View, ViewRegistry};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Starts one store-backed replay agent per registered view; returns their command channels for
/// [`prism_serving::ServingState::replays`]. The agents stop when `cancel` fires.
pub fn spawn_store_agents<L: EventLog>(views: &ViewRegistry, log: Arc<L>, store: ViewStore, cancel: CancellationToken) -> ReplayControl {
    let mut control = HashMap::new();
    for v in views.views() {
        let (commands, requests) = mpsc::channel(8);
        control.insert(v.name().to_string(), commands);
        prism_core::with_view!(v, view => tokio::spawn(run_agent(view.clone(), log.clone(), store.clone(), requests, cancel.clone())));
    }
    control
}

/// The last look at a replay: (when, events done), for its rate.
type Looks = HashMap<i64, (Instant, i64)>;

async fn run_agent<V: View, L: EventLog>(
    view: Arc<V>,
    log: Arc<L>,
    store: ViewStore,
    mut requests: mpsc::Receiver<ReplayCommand>,
    cancel: CancellationToken,
) {
    let name = view.name().to_string();
    let mut looks = Looks::new();
    loop {
        let command = tokio::select! {
            _ = cancel.cancelled() => return,
            c = requests.recv() => match c { Some(c) => c, None => return },
        };
        match command {
            ReplayCommand::Start { switch_lag, reply } => {
                let answer = match store.begin_replay(&name, &view.fingerprint(), switch_lag.max(0)).await {
                    Ok(version) => {
                        tracing::info!(view = %name, version, "replay recorded; the speed-layer instances start building it");
                        find(&*view, &*log, &store, &mut looks, version).await
                    }
                    Err(StoreError::Conflict(m)) => Err(ReplayError::Conflict(m)),
                    Err(e) => Err(ReplayError::Failed(e.to_string())),
                };
                let _ = reply.send(answer);
            }
            ReplayCommand::List { reply } => {
                let _ = reply.send(statuses(&*view, &*log, &store, &mut looks).await.unwrap_or_else(|e| {
                    tracing::warn!(view = %name, error = %e, "could not read the replays");
                    Vec::new()
                }));
            }
            ReplayCommand::Cancel { version, reply } => {
                let answer = match store.cancel_replay(&name, version).await {
                    Ok(()) => {
                        tracing::info!(view = %name, version, "replay cancelled; the serving version is unchanged");
                        find(&*view, &*log, &store, &mut looks, version).await
                    }
                    Err(StoreError::Conflict(_)) => {
                        Err(ReplayError::NotFound(format!("no replay of {name} is building version {version}")))
                    }
                    Err(e) => Err(ReplayError::Failed(e.to_string())),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

async fn find<V: View, L: EventLog>(
    view: &V,
    log: &L,
    store: &ViewStore,
    looks: &mut Looks,
    version: i64,
) -> Result<ReplayStatus, ReplayError> {
    let all = statuses(view, log, store, looks).await.map_err(ReplayError::Failed)?;
    all.into_iter()
        .find(|s| s.version == version)
        .ok_or_else(|| ReplayError::NotFound(format!("no replay of {} built version {version}", view.name())))
}

/// Every replay of `view` the store records (versions started by a replay), oldest first.
async fn statuses<V: View, L: EventLog>(view: &V, log: &L, store: &ViewStore, looks: &mut Looks) -> Result<Vec<ReplayStatus>, String> {
    let versions = store.realtime_versions(view.name()).await.map_err(|e| e.to_string())?;
    let ends = log.end_offsets(view.source_topic()).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for v in versions.iter().filter(|v| v.switch_lag.is_some()) {
        let offsets = store.consumer_offsets(&speed_consumer(view.name(), v.realtime_version), view.source_topic()).await;
        let (done, total) = progress(&ends, &offsets.map_err(|e| e.to_string())?);
        out.push(status(view.name(), v, &versions, done, total, looks));
    }
    Ok(out)
}

/// A replay's status from its version record: `replaying`; `cancelled`; otherwise `switched`
/// (it served: it serves now, or retired or expired since). An expired version that never
/// served was cancelled.
fn status(view: &str, v: &RealtimeVersion, all: &[RealtimeVersion], done: i64, total: i64, looks: &mut Looks) -> ReplayStatus {
    // It switched when the version serving before it retired: the first retirement of an
    // older version after it started.
    let switched_at = all
        .iter()
        .filter(|o| o.realtime_version < v.realtime_version)
        .filter_map(|o| o.retired_at_ms)
        .filter(|t| *t >= v.created_at_ms)
        .min();
    let (state, ended_at_ms) = match v.state.as_str() {
        "replaying" => ("replaying", None),
        "cancelled" => ("cancelled", v.retired_at_ms),
        "expired" if switched_at.is_none() => ("cancelled", v.retired_at_ms),
        _ => ("switched", switched_at),
    };
    let now = Instant::now();
    let rate = match looks.insert(v.realtime_version, (now, done)) {
        Some((then, before)) if now > then && state == "replaying" => {
            (done - before).max(0) as f64 / now.duration_since(then).as_secs_f64()
        }
        _ => 0.0,
    };
    let lag = (total - done).max(0);
    ReplayStatus {
        id: ReplayStatus::id_of(view, v.realtime_version),
        view: view.to_string(),
        version: v.realtime_version,
        state: state.into(),
        events_done: done,
        events_total: total,
        lag,
        switch_lag: v.switch_lag.unwrap_or(prism_core::replay::DEFAULT_SWITCH_LAG),
        events_per_second: rate,
        eta_seconds: (rate > 0.0).then(|| lag as f64 / rate),
        started_at_ms: v.created_at_ms,
        ended_at_ms,
        error: None,
    }
}
