//! Operational endpoints every Prism service serves: `/healthz` (the process is up),
//! `/readyz` (its dependencies answer) and `/metrics` (Prometheus text exposition format).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prism_core::store::ViewStore;

/// Renders the process's metrics in Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// A readiness check beyond the view store (e.g. the Kafka brokers answer): `Err` says why not.
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What the ops endpoints look at.
#[derive(Clone)]
pub struct OpsState {
    /// Checked by `/readyz`.
    pub store: ViewStore,
    /// Also checked by `/readyz`, when set.
    pub extra_check: Option<ReadinessCheck>,
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
    if let Err(e) = state.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n"));
    }
    if let Some(check) = &state.extra_check {
        if let Err(e) = check().await {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n"));
        }
    }
    (StatusCode::OK, "ready\n".to_string())
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], (state.metrics)())
}
