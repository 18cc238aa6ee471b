//! `POST /v1/admin/replays`, `GET /v1/admin/replays[/{id}]`, `DELETE /v1/admin/replays/{id}`:
//! rebuild a view's realtime version from the log and switch over (DESIGN §6). The speed layer
//! runs replays; this API talks to it over [`ReplayControl`] channels.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use prism_core::log::EventLog;
use prism_core::replay::{ReplayCommand, ReplayError, ReplayStatus, DEFAULT_SWITCH_LAG};
use prism_core::time::format_rfc3339;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::ServingState;

/// Query parameters of `POST /v1/admin/replays`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// The view to replay, or `all` (default `all`).
    pub view: Option<String>,
    /// Switch serving to the new version once its lag is below this many events (default 1000).
    #[param(minimum = 0)]
    pub switch_lag: Option<i64>,
}

/// One replay.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Replay {
    /// `<view>.v<version>`: the path of `GET`/`DELETE /v1/admin/replays/{id}`.
    pub id: String,
    /// The view.
    pub view: String,
    /// The realtime version it builds.
    pub version: i64,
    /// `replaying`, `switched` (serving now), `cancelled` or `failed`.
    pub state: String,
    /// Events consumed so far.
    pub events_done: i64,
    /// Events in the source topic now.
    pub events_total: i64,
    /// Events still to consume.
    pub lag: i64,
    /// It switches once `lag` is below this.
    pub switch_lag: i64,
    /// Recent rate, events/s.
    pub events_per_second: f64,
    /// Estimated seconds until caught up.
    pub eta_seconds: Option<f64>,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// When it switched or was cancelled, RFC 3339.
    pub ended_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<ReplayStatus> for Replay {
    fn from(s: ReplayStatus) -> Self {
        Replay {
            id: s.id,
            view: s.view,
            version: s.version,
            state: s.state,
            events_done: s.events_done,
            events_total: s.events_total,
            // Before the first measurement the lag is unknown: the whole topic.
            lag: if s.lag == i64::MAX { s.events_total - s.events_done } else { s.lag },
            switch_lag: s.switch_lag,
            events_per_second: s.events_per_second,
            eta_seconds: s.eta_seconds,
            started_at: format_rfc3339(s.started_at_ms),
            ended_at: s.ended_at_ms.map(format_rfc3339),
            error: s.error,
        }
    }
}

/// Answer listing replays.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplaysResponse {
    /// The replays, per view oldest first.
    pub replays: Vec<Replay>,
}

fn replay_error(e: ReplayError) -> ApiError {
    match e {
        ReplayError::Conflict(m) => ApiError::conflict(m),
        ReplayError::NotFound(m) => ApiError::not_found(m),
        ReplayError::Failed(m) => ApiError::internal(&m),
    }
}

fn control<L>(state: &ServingState<L>) -> Result<&prism_core::replay::ReplayControl, ApiError> {
    state
        .replays
        .as_ref()
        .ok_or_else(|| ApiError::conflict("this process runs no speed layer: send replay requests to the process that does"))
}

async fn ask<T>(
    sender: &tokio::sync::mpsc::Sender<ReplayCommand>,
    command: impl FnOnce(oneshot::Sender<T>) -> ReplayCommand,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    sender.send(command(tx)).await.map_err(|_| ApiError::unavailable("the speed layer is not running"))?;
    rx.await.map_err(|_| ApiError::unavailable("the speed layer stopped"))
}

/// Starts a replay of one view (or of every view): version v+1 is built from offset 0 of the
/// log while v serves, and serving switches to it once its lag is below `switch_lag`.
#[utoipa::path(
    post,
    path = "/v1/admin/replays",
    tag = "admin",
    params(ReplayQuery),
    responses(
        (status = 202, description = "Replays started", body = ReplaysResponse),
        (status = 400, description = "Bad parameter", body = ApiError),
        (status = 404, description = "Unknown view", body = ApiError),
        (status = 409, description = "A replay of the view is already running, or no speed layer runs here", body = ApiError),
        (status = 503, description = "The speed layer is not running", body = ApiError)
    )
)]
pub async fn post_replay<L: EventLog>(
    State(state): State<ServingState<L>>,
    query: Result<Query<ReplayQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<ReplaysResponse>), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let switch_lag = q.switch_lag.unwrap_or(DEFAULT_SWITCH_LAG);
    if switch_lag < 0 {
        return Err(ApiError::bad_request(format!("switch_lag {switch_lag}: must not be negative")));
    }
    let control = control(&state)?;
    let names: Vec<String> = match q.view.as_deref() {
        None | Some("all") => {
            let mut all: Vec<String> = control.keys().cloned().collect();
            all.sort();
            all
        }
        Some(name) if control.contains_key(name) => vec![name.to_string()],
        Some(name) => return Err(ApiError::not_found(format!("no view named {name:?} is registered"))),
    };
    let mut replays = Vec::new();
    for name in names {
        let sender = &control[&name];
        let status = ask(sender, |reply| ReplayCommand::Start { switch_lag, reply }).await?.map_err(replay_error)?;
        replays.push(Replay::from(status));
    }
    Ok((StatusCode::ACCEPTED, Json(ReplaysResponse { replays })))
}

pub(crate) async fn list_all<L>(state: &ServingState<L>) -> Result<Vec<Replay>, ApiError> {
    let control = control(state)?;
    let mut names: Vec<&String> = control.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        out.extend(ask(&control[name], |reply| ReplayCommand::List { reply }).await?.into_iter().map(Replay::from));
    }
    Ok(out)
}

/// Every replay this process knows: running, resumed, and finished since it started.
#[utoipa::path(
    get,
    path = "/v1/admin/replays",
    tag = "admin",
    responses((status = 200, description = "Replays", body = ReplaysResponse), (status = 409, description = "No speed layer runs here", body = ApiError))
)]
pub async fn get_replays<L: EventLog>(State(state): State<ServingState<L>>) -> Result<Json<ReplaysResponse>, ApiError> {
    Ok(Json(ReplaysResponse { replays: list_all(&state).await? }))
}

/// One replay's progress: events done and total, lag, rate, ETA, state.
#[utoipa::path(
    get,
    path = "/v1/admin/replays/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "`<view>.v<version>`, e.g. ohlcv.v2")),
    responses((status = 200, description = "The replay", body = Replay), (status = 404, description = "No such replay", body = ApiError))
)]
pub async fn get_replay<L: EventLog>(
    State(state): State<ServingState<L>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Replay>, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let found = list_all(&state).await?.into_iter().rev().find(|r| r.id == id);
    found.map(Json).ok_or_else(|| ApiError::not_found(format!("no replay {id:?}; see GET /v1/admin/replays")))
}

/// Cancels a running replay; the serving version is untouched and the replay's rows are deleted
/// after the grace period.
#[utoipa::path(
    delete,
    path = "/v1/admin/replays/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "`<view>.v<version>`, e.g. ohlcv.v2")),
    responses(
        (status = 200, description = "Cancelled", body = Replay),
        (status = 400, description = "Not a replay id", body = ApiError),
        (status = 404, description = "No such running replay", body = ApiError)
    )
)]
pub async fn delete_replay<L: EventLog>(
    State(state): State<ServingState<L>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Replay>, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (name, version) = id
        .rsplit_once(".v")
        .and_then(|(n, v)| Some((n, v.parse::<i64>().ok()?)))
        .ok_or_else(|| ApiError::bad_request(format!("replay id {id:?}: expected <view>.v<version>")))?;
    let control = control(&state)?;
    let sender = control.get(name).ok_or_else(|| ApiError::not_found(format!("no view named {name:?} is registered")))?;
    let status = ask(sender, |reply| ReplayCommand::Cancel { version, reply }).await?.map_err(replay_error)?;
    Ok(Json(Replay::from(status)))
}
