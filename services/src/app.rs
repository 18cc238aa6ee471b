//! The HTTP application of `prism up`: ingest, views, admin, ops, the OpenAPI document and
//! Swagger UI (assets vendored into the binary, so `/docs` works with no internet).

use std::sync::{Arc, OnceLock};

use axum::routing::get;
use axum::{Json, Router};
use prism_core::batch_run::BatchTrigger;
use prism_core::config::Architecture;
use prism_core::log::EventLog;
use prism_core::store::ViewStore;
use prism_ingest::http::{IngestApi, IngestState};
use prism_serving::ops::OpsState;
use prism_serving::{ServingApi, ServingState};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// What the app is built from.
pub struct AppParts<L> {
    /// The event log.
    pub log: Arc<L>,
    /// The view store.
    pub store: ViewStore,
    /// Lambda or Kappa.
    pub architecture: Architecture,
    /// The views this deployment runs.
    pub views: prism_core::view::ViewRegistry,
    /// Where batch-view segments are read from; `None` without a batch layer.
    pub segments: Option<prism_serving::segments::SegmentReader>,
    /// Batch-run requests; `None` without a batch layer.
    pub batch_trigger: Option<BatchTrigger>,
    /// Each view's replay runner; `None` without a speed layer in this process.
    pub replays: Option<prism_core::replay::ReplayControl>,
    /// HTTP ingest body limit, bytes.
    pub max_body_bytes: usize,
    /// How long HTTP ingest remembers an `Idempotency-Key`.
    pub idempotency_window: std::time::Duration,
    /// API tokens enforced on the ingest, view and admin routes.
    pub auth: prism_serving::auth::AuthArgs,
}

/// The whole OpenAPI document: serving + ingest.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    let mut doc = ServingApi::openapi();
    doc.merge(IngestApi::openapi());
    doc.info.title = "Prism".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "Lambda/Kappa reference platform: ingest quotes, query bars merged from the batch and realtime views at the batch horizon.".into(),
    );
    doc.info.license = Some(utoipa::openapi::License::new("Apache-2.0"));
    prism_serving::auth::document(&mut doc);
    doc
}

/// Rows of decoded batch-view segments a serving process keeps in memory (about 250 bytes
/// each for `ohlcv`): bounds the cache whatever clients ask.
pub const SEGMENT_CACHE_ROWS: usize = 400_000;

/// Installs the process-wide Prometheus recorder once and returns its renderer.
pub fn metrics_renderer() -> prism_serving::ops::MetricsRenderer {
    static HANDLE: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> = OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().ok();
        // HELP texts go to the recorder installed just now: a layer that described its metrics
        // before this point described them to no recorder.
        prism_ingest::telemetry::describe();
        prism_speed::telemetry::describe();
        prism_batch::telemetry::describe();
        metrics::describe_counter!(
            crate::micro::COMPONENT_RESTARTS_TOTAL,
            "Restarts of a failed component (speed layer, archiver, batch layer) by its service's supervisor."
        );
        handle
    });
    match handle.clone() {
        Some(h) => Arc::new(move || h.render()),
        None => Arc::new(|| "# metrics recorder unavailable\n".to_string()),
    }
}

/// Builds the router.
pub fn build_app<L: EventLog>(parts: AppParts<L>) -> Router {
    let serving = ServingState {
        store: parts.store.clone(),
        log: parts.log.clone(),
        architecture: parts.architecture,
        views: parts.views,
        segments: parts.segments,
        batch_trigger: parts.batch_trigger,
        replays: parts.replays,
    };
    let ingest = IngestState::new(parts.log, parts.store.clone(), parts.idempotency_window);
    let api = Router::new().merge(prism_serving::router(serving)).merge(prism_ingest::http::router(ingest, parts.max_body_bytes));
    Router::new()
        .merge(prism_serving::auth::protect(api, &parts.auth))
        .merge(prism_serving::ops::router(OpsState { store: parts.store, extra_check: None, metrics: metrics_renderer() }))
        .merge(docs_router())
}

/// `/openapi.json`, Swagger UI at `/docs`, a JSON 404 for unknown paths, and request tracing.
pub fn docs_router() -> Router {
    let doc = api_doc();
    let doc_json = doc.clone();
    Router::new()
        .route("/openapi.json", get(move || async move { Json(doc_json) }))
        .merge(SwaggerUi::new("/docs").url("/docs/openapi.json", doc))
        .fallback(|uri: axum::http::Uri| async move { prism_serving::error::ApiError::not_found(format!("no endpoint {uri}; see /docs")) })
        .layer(TraceLayer::new_for_http())
}

/// How long a stopping HTTP server waits for requests in flight before closing their connections.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` fires, then lets requests in flight finish for up to
/// [`DRAIN_TIMEOUT`] and closes what is still open: an event stream (the dashboard's) never ends
/// on its own, and a graceful shutdown must not wait for a browser tab.
///
/// Errors: the server failed.
pub async fn serve_until(listener: tokio::net::TcpListener, app: Router, stop: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    use anyhow::Context;
    let graceful = stop.clone();
    let server =
        std::future::IntoFuture::into_future(axum::serve(listener, app).with_graceful_shutdown(async move { graceful.cancelled().await }));
    tokio::select! {
        served = server => served.context("HTTP server"),
        () = async { stop.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
            tracing::warn!(drain_s = DRAIN_TIMEOUT.as_secs(), "HTTP connections still open after the stop (event streams): closing them");
            Ok(())
        }
    }
}
