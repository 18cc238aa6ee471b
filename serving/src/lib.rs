//! Prism serving layer (DESIGN §5): an axum HTTP API, documented with utoipa, that answers
//! queries by merging the batch and realtime views at the batch horizon.
//!
//! - [`bars`]: `GET /v1/bars/{symbol}`, `GET /v1/symbols`.
//! - [`access`]: `GET /v1/access` (the access-log view).
//! - [`changes`]: `GET /v1/changes/{table}`, `GET /v1/changes/{table}/rows/{key}` (CDC tables).
//! - [`dashboard`]: the live dashboard at `/`, `GET /v1/bars/{symbol}/stream`, `GET /v1/status/stream`.
//! - [`schemas`]: `GET /v1/schemas[/{topic}]`, each topic's JSON Schema.
//! - [`status`]: `GET /v1/status`.
//! - [`admin`]: `POST /v1/admin/batch-runs`.
//! - [`replays`]: `POST`/`GET /v1/admin/replays`, `GET`/`DELETE /v1/admin/replays/{id}`.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`auth`]: API tokens (`PRISM_API_TOKEN`, `PRISM_READ_TOKEN`).
//! - [`merge`]: the merge rule at the batch horizon.
//! - [`segments`]: cached reads of batch-view segments.
//! - [`error`]: the JSON error body every endpoint answers with.

pub mod access;
pub mod admin;
pub mod auth;
pub mod bars;
pub mod changes;
pub mod dashboard;
pub mod error;
pub mod merge;
pub mod ops;
pub mod replays;
pub mod schemas;
pub mod segments;
pub mod status;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use prism_core::batch_run::BatchTrigger;
use prism_core::config::Architecture;
use prism_core::log::EventLog;
use prism_core::replay::ReplayControl;
use prism_core::store::ViewStore;
use prism_core::view::ViewRegistry;
use utoipa::OpenApi;

/// Handles and settings the API reads.
pub struct ServingState<L> {
    /// The view store.
    pub store: ViewStore,
    /// The event log (for end offsets and lag in `/v1/status`).
    pub log: Arc<L>,
    /// Lambda or Kappa.
    pub architecture: Architecture,
    /// The views this deployment runs.
    pub views: ViewRegistry,
    /// Where batch-view segments are read from (the master dataset's root); `None` where no
    /// batch view is served.
    pub segments: Option<segments::SegmentReader>,
    /// Requests batch runs; `None` where there is no batch layer (Kappa).
    pub batch_trigger: Option<BatchTrigger>,
    /// Each view's replay runner; `None` where no speed layer runs in this process.
    pub replays: Option<ReplayControl>,
}

impl<L> Clone for ServingState<L> {
    fn clone(&self) -> Self {
        ServingState {
            store: self.store.clone(),
            log: self.log.clone(),
            architecture: self.architecture,
            views: self.views.clone(),
            segments: self.segments.clone(),
            batch_trigger: self.batch_trigger.clone(),
            replays: self.replays.clone(),
        }
    }
}

/// The serving API's OpenAPI fragment.
#[derive(OpenApi)]
#[openapi(
    paths(
        bars::get_bars, dashboard::get_bars_stream, dashboard::get_status_stream, bars::get_symbols, access::get_access, changes::get_changes, changes::get_current_row, schemas::get_schemas, schemas::get_schema, status::get_status, admin::post_batch_run, replays::post_replay, replays::get_replays,
        replays::get_replay, replays::delete_replay
    ),
    components(schemas(
        bars::BarsResponse, bars::Horizons, bars::Bar, bars::BarInterval, bars::SymbolsResponse, access::AccessResponse, access::AccessBucket, changes::ChangesResponse, changes::ChangesBucket, changes::CurrentRow, schemas::SchemasResponse, schemas::TopicSchema, error::ApiError,
        status::StatusResponse, status::ViewStatus, status::PartitionStatus, status::ConsumerLag, status::IngestStatus,
        status::FeedStatus, admin::BatchRunResponse, admin::ViewBatchRun, replays::Replay, replays::ReplaysResponse
    )),
    tags((name = "views", description = "Merged batch + realtime views"), (name = "admin", description = "Operations"))
)]
pub struct ServingApi;

/// The serving routes.
pub fn router<L: EventLog>(state: ServingState<L>) -> Router {
    Router::new()
        .route("/", get(dashboard::get_page))
        .route("/assets/{name}", get(dashboard::get_asset))
        .route("/v1/bars/{symbol}", get(bars::get_bars::<L>))
        .route("/v1/bars/{symbol}/stream", get(dashboard::get_bars_stream::<L>))
        .route("/v1/status/stream", get(dashboard::get_status_stream::<L>))
        .route("/v1/symbols", get(bars::get_symbols::<L>))
        .route("/v1/access", get(access::get_access::<L>))
        .route("/v1/changes/{table}", get(changes::get_changes::<L>))
        .route("/v1/changes/{table}/rows/{key}", get(changes::get_current_row::<L>))
        .route("/v1/schemas", get(schemas::get_schemas))
        .route("/v1/schemas/{topic}", get(schemas::get_schema))
        .route("/v1/status", get(status::get_status::<L>))
        .route("/v1/admin/batch-runs", post(admin::post_batch_run::<L>))
        .route("/v1/admin/replays", post(replays::post_replay::<L>).get(replays::get_replays::<L>))
        .route("/v1/admin/replays/{id}", get(replays::get_replay::<L>).delete(replays::delete_replay::<L>))
        .with_state(state)
}
