//! Operational endpoints every Prism service serves: `/healthz` (the process is up),
//! `/readyz` (its dependencies answer) and `/metrics` (Prometheus text exposition format).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prism_core::store::ViewStore;

/// Renders the process's metrics in Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the ops endpoints look at.
#[derive(Clone)]
pub struct OpsState {
    /// Checked by `/readyz`.
    pub store: ViewStore,
    /// Rendered by `/metrics`.
    pub metrics: MetricsRenderer,
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], (state.metrics)())
}
