//! `GET /v1/access`: the `access` view (DESIGN §4) — requests, bytes and latency percentiles
//! per bucket, over the (host, status class) keys the filters select, merged from the batch view
//! (segments) and the realtime view like `/v1/bars`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use prism_core::event::MAX_HOST_LEN;
use prism_core::log::EventLog;
use prism_core::time::format_rfc3339;
use prism_core::view::access::{split_access_key, Access};
use prism_core::view::{View, ViewRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::bars::{
    bucket_range, cut_page, horizons, key_rows, known_keys, layer_name, served_pointer, sized_json, BarInterval, BucketRange, Horizons,
    KeyRows,
};
use crate::error::ApiError;
use crate::merge::merge_bars;
use crate::ServingState;

/// Most (host, status class) keys one answer merges; narrow the filters past it.
pub const MAX_KEYS: usize = 1_000;

/// Query parameters of `/v1/access`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessQuery {
    /// Only this client host (as logged: an address or a name). Default: every host.
    pub host: Option<String>,
    /// Only this status class: `1xx`, `2xx`, `3xx`, `4xx` or `5xx`. Default: every class.
    pub status_class: Option<String>,
    /// Bucket length: `1m`, `5m`, `15m`, `1h` or `1d` (UTC days); default `1m`.
    pub interval: Option<BarInterval>,
    /// First bucket start to include: RFC 3339, a date (00:00 UTC) or UTC ms. Default: the
    /// beginning.
    pub from: Option<String>,
    /// Last bucket start to include (inclusive): RFC 3339, UTC ms, or a date meaning the whole
    /// day. Default: the end.
    pub to: Option<String>,
    /// Most buckets to return (1..=100000, default 5000); when cut, `next_from` says where to go
    /// on.
    #[param(minimum = 1, maximum = 100000)]
    pub limit: Option<usize>,
}

/// One bucket of the `access` view.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct AccessBucket {
    /// Bucket start, RFC 3339 UTC.
    pub start: String,
    /// Requests logged.
    pub requests: i64,
    /// Σ response body bytes.
    pub bytes: i64,
    /// Requests whose line gave a duration (the latency percentiles cover these).
    pub timed_requests: i64,
    /// Median latency, ms (nearest rank; the highest value of its histogram bucket: exact below
    /// 64 ms, within 3.1 % above). Null without timed requests.
    pub p50_ms: Option<u64>,
    /// 95th-percentile latency, ms (as `p50_ms`).
    pub p95_ms: Option<u64>,
    /// 99th-percentile latency, ms (as `p50_ms`).
    pub p99_ms: Option<u64>,
    /// `batch`, `segment` (Kappa), `realtime`, or `both` for a roll-up straddling the horizon.
    pub layer: String,
}

/// Answer of `/v1/access`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessResponse {
    /// The view read (`access`).
    pub view: String,
    /// The host filter, if any.
    pub host: Option<String>,
    /// The status-class filter, if any.
    pub status_class: Option<String>,
    /// The interval.
    pub interval: String,
    /// Where the answer's buckets come from.
    #[serde(flatten)]
    pub horizons: Horizons,
    /// How many (host, status class) keys the buckets merge.
    pub keys: usize,
    /// Buckets ascending by start (only buckets with requests).
    pub buckets: Vec<AccessBucket>,
    /// Present when `limit` cut the answer: pass it as `from` for the next page.
    pub next_from: Option<String>,
}

/// Requests, bytes and latency percentiles of access-log lines, merged from the batch view and
/// the realtime view, over every (host, status class) the filters select.
#[utoipa::path(
    get,
    path = "/v1/access",
    tag = "views",
    params(AccessQuery),
    responses(
        (status = 200, description = "Buckets", body = AccessResponse),
        (status = 400, description = "Bad parameter, or more than 1000 keys selected", body = ApiError),
        (status = 404, description = "The access view is not registered", body = ApiError),
        (status = 409, description = "The served version was built under another view definition", body = ApiError),
        (status = 500, description = "Internal failure", body = ApiError),
        (status = 503, description = "A dependency is unavailable", body = ApiError)
    )
)]
pub async fn get_access<L: EventLog>(
    State(state): State<ServingState<L>>,
    query: Result<Query<AccessQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let view = state
        .views
        .access()
        .ok_or_else(|| ApiError::not_found("the access view is not registered in this deployment (--views access, or --tail)"))?;
    if let Some(host) = &q.host {
        if host.is_empty() || host.len() > MAX_HOST_LEN || host.chars().any(char::is_whitespace) {
            return Err(ApiError::bad_request(format!("host: 1–{MAX_HOST_LEN} bytes without whitespace")));
        }
    }
    if let Some(class) = &q.status_class {
        if !["1xx", "2xx", "3xx", "4xx", "5xx"].contains(&class.as_str()) {
            return Err(ApiError::bad_request(format!("status_class {class:?}: use 1xx, 2xx, 3xx, 4xx or 5xx")));
        }
    }
    let BucketRange { interval, size, limit, row_from, row_to, max_rows } =
        bucket_range(&*view, q.interval, q.limit, q.from.as_deref(), q.to.as_deref())?;

    let keys: Vec<String> = known_keys(&state, &*view)
        .await?
        .into_iter()
        .filter(|k| match split_access_key(k) {
            Some((host, class)) => q.host.as_deref().is_none_or(|h| h == host) && q.status_class.as_deref().is_none_or(|c| c == class),
            None => false,
        })
        .collect();
    if keys.len() > MAX_KEYS {
        return Err(ApiError::bad_request(format!(
            "{} (host, status class) pairs match; at most {MAX_KEYS} per answer: filter by host or status_class",
            keys.len()
        )));
    }
    let mut batch: Vec<ViewRow<Access>> = Vec::new();
    let mut realtime: Vec<ViewRow<Access>> = Vec::new();
    let mut pointer = None;
    for key in &keys {
        let rows: KeyRows<Access> = key_rows(&state, &*view, key, size, row_from, row_to, max_rows).await?;
        batch.extend(rows.batch);
        realtime.extend(rows.realtime);
        pointer = Some((rows.pointer, rows.max_event_ts_ms));
    }
    let (pointer, max_event_ts_ms) = match pointer {
        Some(p) => p,
        None => served_pointer(&state.store, &*view).await?,
    };
    let mut merged = merge_bars(&batch, &realtime, size);
    let next_from = cut_page(&mut merged, limit, size);
    let buckets = merged
        .into_iter()
        .map(|b| AccessBucket {
            start: format_rfc3339(b.start_ms),
            requests: b.agg.requests,
            bytes: b.agg.bytes,
            timed_requests: b.agg.latency.count(),
            p50_ms: b.agg.latency.quantile(500),
            p95_ms: b.agg.latency.quantile(950),
            p99_ms: b.agg.latency.quantile(990),
            layer: layer_name(b.layer, state.architecture).to_string(),
        })
        .collect();
    let answer = AccessResponse {
        view: view.name().to_string(),
        host: q.host,
        status_class: q.status_class,
        interval: interval.name().to_string(),
        horizons: horizons(&state, &*view, &pointer, max_event_ts_ms),
        keys: keys.len(),
        buckets,
        next_from,
    };
    sized_json(&answer, 256 + answer.buckets.len() * 200)
}
