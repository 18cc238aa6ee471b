//! `GET /v1/changes/{table}` and `GET /v1/changes/{table}/rows/{key}`: the `changes` view of a
//! CDC table (DESIGN §4) — change counts per operation and bucket, merged from the batch view
//! (segments) and the realtime view like `/v1/bars`, and the current row per primary key for
//! tables that keep it.

use std::collections::BTreeMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use prism_core::log::EventLog;
use prism_core::time::format_rfc3339;
use prism_core::view::changes::{canonical_key, ChangesView, CHANGE_OPS};
use prism_core::view::View;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::bars::{bucket_range, cut_page, horizons, key_rows, layer_name, served_pointer, sized_json, BarInterval, BucketRange, Horizons};
use crate::error::ApiError;
use crate::merge::{merge_bars, Layer, MergedBar};
use crate::ServingState;

/// Query parameters of `/v1/changes/{table}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Only this operation: `c` insert, `u` update, `d` delete, `r` snapshot read, `t` truncate.
    /// Default: every operation.
    pub op: Option<String>,
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

/// One bucket of the `changes` view: changes committed in it (by commit time), per operation.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ChangesBucket {
    /// Bucket start, RFC 3339 UTC.
    pub start: String,
    /// Changes of the selected operations, each counted once (redeliveries dropped).
    pub changes: i64,
    /// Per operation (`c`, `u`, `d`, `r`, `t`), those with changes.
    pub by_op: BTreeMap<String, i64>,
    /// `batch`, `segment` (Kappa), `realtime`, or `both` for a roll-up straddling the horizon.
    pub layer: String,
}

/// Answer of `/v1/changes/{table}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChangesResponse {
    /// The view read (`changes.<db>.<schema>.<table>`).
    pub view: String,
    /// `<schema>.<table>`.
    pub table: String,
    /// The operation filter, if any.
    pub op: Option<String>,
    /// The interval.
    pub interval: String,
    /// Where the answer's buckets come from.
    #[serde(flatten)]
    pub horizons: Horizons,
    /// Buckets ascending by start (only buckets with changes).
    pub buckets: Vec<ChangesBucket>,
    /// Present when `limit` cut the answer: pass it as `from` for the next page.
    pub next_from: Option<String>,
}

/// The current row of one primary key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CurrentRow {
    /// The view read.
    pub view: String,
    /// `<schema>.<table>`.
    pub table: String,
    /// The primary key, as canonical JSON (keys sorted).
    pub key: String,
    /// The row after its last change (columns as in the CDC envelope's `after`).
    #[schema(value_type = Object)]
    pub row: serde_json::Value,
    /// Commit LSN of the last change (the snapshot's consistent point for a row not changed
    /// since).
    pub commit_lsn: i64,
    /// LSN of the last change (0 for a snapshot row).
    pub lsn: i64,
}

fn changes_view<L>(state: &ServingState<L>, table: &str) -> Result<std::sync::Arc<ChangesView>, ApiError> {
    state.views.changes(table).ok_or_else(|| {
        let known: Vec<String> = state.views.changes_views().iter().map(|v| v.table()).collect();
        ApiError::not_found(format!(
            "no changes view of table {table:?} (schema.table) in this deployment; registered: {known:?} (--views changes:<db>.<schema>.<table>[:rows])"
        ))
    })
}

/// Change counts of a CDC table per bucket and operation, merged from the batch view and the
/// realtime view.
#[utoipa::path(
    get,
    path = "/v1/changes/{table}",
    tag = "views",
    params(("table" = String, Path, description = "`<schema>.<table>`, e.g. `public.flights`"), ChangesQuery),
    responses(
        (status = 200, description = "Buckets", body = ChangesResponse),
        (status = 400, description = "Bad parameter", body = ApiError),
        (status = 404, description = "No changes view of that table", body = ApiError),
        (status = 409, description = "The served version was built under another view definition", body = ApiError),
        (status = 500, description = "Internal failure", body = ApiError),
        (status = 503, description = "A dependency is unavailable", body = ApiError)
    )
)]
pub async fn get_changes<L: EventLog>(
    State(state): State<ServingState<L>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(table) = path.map_err(|e| ApiError::bad_request(format!("table: {}", e.body_text())))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let view = changes_view(&state, &table)?;
    let ops: Vec<&str> = match q.op.as_deref() {
        None => CHANGE_OPS.to_vec(),
        Some(op) if CHANGE_OPS.contains(&op) => vec![op],
        Some(op) => return Err(ApiError::bad_request(format!("op {op:?}: use c, u, d, r or t"))),
    };
    let BucketRange { interval, size, limit, row_from, row_to, max_rows } =
        bucket_range(&*view, q.interval, q.limit, q.from.as_deref(), q.to.as_deref())?;
    // Merge each operation's rows into buckets, then the operations into one bucket list.
    let mut by_start: BTreeMap<i64, (BTreeMap<String, i64>, Layer)> = BTreeMap::new();
    let mut pointer = None;
    for op in &ops {
        let rows = key_rows(&state, &*view, op, size, row_from, row_to, max_rows).await?;
        pointer = Some((rows.pointer, rows.max_event_ts_ms));
        for b in merge_bars(&rows.batch, &rows.realtime, size) {
            let (counts, layer) = by_start.entry(b.start_ms).or_insert_with(|| (BTreeMap::new(), b.layer));
            *layer = layer.with(b.layer);
            *counts.entry(op.to_string()).or_default() += b.agg.changes;
        }
    }
    let (pointer, max_event_ts_ms) = match pointer {
        Some(p) => p,
        None => served_pointer(&state.store, &*view).await?,
    };
    let mut merged: Vec<MergedBar<BTreeMap<String, i64>>> =
        by_start.into_iter().map(|(start_ms, (agg, layer))| MergedBar { start_ms, agg, layer }).collect();
    let next_from = cut_page(&mut merged, limit, size);
    let buckets = merged
        .into_iter()
        .map(|b| ChangesBucket {
            start: format_rfc3339(b.start_ms),
            changes: b.agg.values().sum(),
            layer: layer_name(b.layer, state.architecture).to_string(),
            by_op: b.agg,
        })
        .collect();
    let answer = ChangesResponse {
        view: view.name().to_string(),
        table: view.table(),
        op: q.op,
        interval: interval.name().to_string(),
        horizons: horizons(&state, &*view, &pointer, max_event_ts_ms),
        buckets,
        next_from,
    };
    sized_json(&answer, 256 + answer.buckets.len() * 120)
}

/// The current row of a primary key in a CDC table whose `changes` view keeps rows
/// (`changes:<db>.<schema>.<table>:rows`): the row after its last change by (commit LSN, LSN),
/// from the serving realtime version.
#[utoipa::path(
    get,
    path = "/v1/changes/{table}/rows/{key}",
    tag = "views",
    params(
        ("table" = String, Path, description = "`<schema>.<table>`, e.g. `public.flights`"),
        ("key" = String, Path, description = "The primary key as a JSON object (URL-encoded), e.g. `{\"id\":42}`")
    ),
    responses(
        (status = 200, description = "The current row", body = CurrentRow),
        (status = 400, description = "The key is not a JSON object, or the table keeps no rows", body = ApiError),
        (status = 404, description = "No changes view of that table, or no such row (never seen, deleted, or truncated since)", body = ApiError),
        (status = 500, description = "Internal failure", body = ApiError),
        (status = 503, description = "A dependency is unavailable", body = ApiError)
    )
)]
pub async fn get_current_row<L: EventLog>(
    State(state): State<ServingState<L>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<CurrentRow>, ApiError> {
    let Path((table, key)) = path.map_err(|e| ApiError::bad_request(format!("path: {}", e.body_text())))?;
    let view = changes_view(&state, &table)?;
    if !view.keeps_rows() {
        return Err(ApiError::bad_request(format!(
            "table {table} keeps no current rows: register its view as changes:{}.{table}:rows",
            view.db()
        )));
    }
    let key = canonical_key(key.as_bytes()).map_err(|e| ApiError::bad_request(format!("key: {e}")))?;
    if key == "{}" {
        return Err(ApiError::bad_request("key: name the primary key's columns, e.g. {\"id\":42}"));
    }
    let version = state.store.view_pointer(view.name()).await?.realtime_version;
    let missing = || ApiError::not_found(format!("no row of {table} with key {key}"));
    let entity = state.store.entity(view.name(), version, &key).await?.ok_or_else(missing)?;
    let truncated = state.store.entity(view.name(), version, "{}").await?;
    if entity.deleted || truncated.is_some_and(|t| t.state_seq > entity.state_seq) {
        return Err(missing());
    }
    let text = entity.state.ok_or_else(missing)?;
    let row = serde_json::from_str(&text).map_err(|e| ApiError::internal(&format!("a stored row of {} is not JSON: {e}", view.name())))?;
    Ok(Json(CurrentRow {
        view: view.name().to_string(),
        table: view.table(),
        key,
        row,
        commit_lsn: entity.state_seq.major,
        lsn: entity.state_seq.minor,
    }))
}
