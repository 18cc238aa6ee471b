//! The contract between whoever asks for a replay (`POST /v1/admin/replays`, `prism replay`)
//! and the speed layer that runs it (DESIGN §6). Layers never import each other, so commands
//! travel over a channel whose types live here.

use std::collections::HashMap;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Default switch threshold (`--switch-lag`): a replay switches serving to its version once
/// fewer than this many events remain behind the log end (issue 8, DESIGN §6).
pub const DEFAULT_SWITCH_LAG: i64 = 1_000;

/// Where a replay stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayStatus {
    /// Its id: `<view>.v<version>`.
    pub id: String,
    /// The view replayed.
    pub view: String,
    /// The realtime version it builds.
    pub version: i64,
    /// `replaying`, `switched` (now serving), `cancelled` or `failed`.
    pub state: String,
    /// Events of the source topic consumed so far (committed).
    pub events_done: i64,
    /// Events in the source topic now (its log end offsets, summed; grows while events arrive).
    pub events_total: i64,
    /// `events_total − events_done`.
    pub lag: i64,
    /// It switches once `lag` is below this.
    pub switch_lag: i64,
    /// Recent rate, events/s.
    pub events_per_second: f64,
    /// Estimated seconds until caught up at that rate (`None` before a rate is known).
    pub eta_seconds: Option<f64>,
    /// When it started, UTC ms.
    pub started_at_ms: i64,
    /// When it switched or was cancelled, UTC ms.
    pub ended_at_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl ReplayStatus {
    /// The id of the replay building `version` of `view`: `<view>.v<version>`.
    pub fn id_of(view: &str, version: i64) -> String {
        format!("{view}.v{version}")
    }
}

/// Why a replay command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// One replay per view at a time; or the replay is not running.
    #[error("{0}")]
    Conflict(String),
    /// No such replay.
    #[error("{0}")]
    NotFound(String),
    /// The store or the log failed.
    #[error("{0}")]
    Failed(String),
}

/// A command to a view's replay runner; the answer comes back on `reply`.
#[derive(Debug)]
pub enum ReplayCommand {
    /// Start a replay, switching once the lag is below `switch_lag` events.
    Start {
        /// Switch threshold, events.
        switch_lag: i64,
        /// The new replay's status.
        reply: oneshot::Sender<Result<ReplayStatus, ReplayError>>,
    },
    /// Every replay the runner knows (running and finished since it started, and resumed ones).
    List {
        /// Their statuses, oldest first.
        reply: oneshot::Sender<Vec<ReplayStatus>>,
    },
    /// Cancel the running replay `version`: the serving version is untouched.
    Cancel {
        /// The realtime version being replayed.
        version: i64,
        /// Its final status.
        reply: oneshot::Sender<Result<ReplayStatus, ReplayError>>,
    },
}

/// A version's progress through its source topic: (events consumed, events in the topic), from
/// the log end offsets (`ends`, indexed by partition) and the offsets its speed layer committed
/// (`offsets`; a partition without one has consumed nothing).
pub fn progress(ends: &[i64], offsets: &[crate::store::ConsumerOffset]) -> (i64, i64) {
    let done = ends
        .iter()
        .enumerate()
        .map(|(p, end)| offsets.iter().find(|o| o.partition == p as i32).map_or(0, |o| o.next_offset.min(*end)))
        .sum();
    (done, ends.iter().sum())
}

/// Each registered view's runner, by view name.
pub type ReplayControl = HashMap<String, mpsc::Sender<ReplayCommand>>;
