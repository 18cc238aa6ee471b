//! `GET /v1/bars/{symbol}` and `GET /v1/symbols`.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use prism_core::config::speed_consumer;
use prism_core::event::{validate_symbol, MAX_TS_MS, MIN_TS_MS, QUOTES_TOPIC};
use prism_core::log::EventLog;
use prism_core::store::ViewStore;
use prism_core::time::{format_rfc3339, parse_instant, DAY_MS};
use prism_core::window::{window_start, Interval, Watermark};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::merge::merge_bars;
use crate::ServingState;

/// Bars per answer by default.
pub const DEFAULT_LIMIT: usize = 5_000;
/// Most bars per answer.
pub const MAX_LIMIT: usize = 100_000;

/// Query parameters of `/v1/bars/{symbol}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BarsQuery {
    /// `1m`, `5m`, `15m`, `1h` or `1d` (UTC days); default `1m`.
    pub interval: Option<String>,
    /// First bar start to include: RFC 3339 (`2013-03-01T14:30:00Z`), a date (`2013-03-01`,
    /// 00:00 UTC) or UTC ms. Default: the beginning.
    pub from: Option<String>,
    /// Last bar start to include (inclusive): RFC 3339, UTC ms, or a date meaning the whole day.
    /// Default: the end.
    pub to: Option<String>,
    /// Most bars to return (1..=100000, default 5000); when cut, `next_from` says where to go on.
    pub limit: Option<usize>,
}

/// One bar.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Bar {
    /// Bar start, RFC 3339 UTC.
    pub start: String,
    /// First trade's price (by event time, partition, offset), decimal string, scale 6.
    pub open: String,
    /// Highest price.
    pub high: String,
    /// Lowest price.
    pub low: String,
    /// Last trade's price.
    pub close: String,
    /// Shares traded.
    pub volume: i64,
    /// Σ price × size, exact, scale 6.
    pub notional: String,
    /// notional / volume, rounded half away from zero to scale 6.
    pub vwap: String,
    /// Number of trades.
    pub trades: i64,
    /// `batch`, `realtime`, or `both` for a roll-up straddling the batch horizon.
    pub layer: String,
}

/// Answer of `/v1/bars/{symbol}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BarsResponse {
    /// The symbol.
    pub symbol: String,
    /// The interval.
    pub interval: String,
    /// `lambda` or `kappa`.
    pub architecture: String,
    /// Batch horizon H, RFC 3339: bars before it come from the batch view. Null before the first
    /// batch run (and in Kappa mode).
    pub batch_horizon: Option<String>,
    /// Realtime watermark (max event time − allowed lateness), RFC 3339; null before any event.
    pub realtime_watermark: Option<String>,
    /// Bars ascending by start.
    pub bars: Vec<Bar>,
    /// Present when `limit` cut the answer: pass it as `from` for the next page.
    pub next_from: Option<String>,
}

/// Answer of `/v1/symbols`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SymbolsResponse {
    /// Symbols with rows in the served views, sorted.
    pub symbols: Vec<String>,
}

/// Realtime watermark of the served realtime version, UTC ms.
pub(crate) async fn realtime_watermark(store: &ViewStore, version: i64, lateness_ms: i64) -> Result<Option<i64>, ApiError> {
    let offsets = store.consumer_offsets(&speed_consumer(version), QUOTES_TOPIC).await?;
    Ok(Watermark::new(offsets.iter().filter_map(|o| o.max_event_ts_ms).max(), lateness_ms).current_ms())
}

fn parse_bound(name: &str, text: Option<&str>, end_of_day: bool) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let ms = parse_instant(text).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
    let is_date = text.trim().len() == 10 && text.contains('-');
    let ms = if end_of_day && is_date { ms.saturating_add(DAY_MS - 1) } else { ms };
    // Events exist only in years 0001–9999 (see `Quote`); bounds beyond select the same bars.
    Ok(Some(ms.clamp(MIN_TS_MS, MAX_TS_MS)))
}

/// Bars of one symbol, merged from the batch and realtime views.
#[utoipa::path(
    get,
    path = "/v1/bars/{symbol}",
    tag = "views",
    params(("symbol" = String, Path, description = "Ticker symbol, e.g. AAPL"), BarsQuery),
    responses(
        (status = 200, description = "Bars", body = BarsResponse),
        (status = 400, description = "Bad parameter", body = ApiError),
        (status = 404, description = "Unknown symbol", body = ApiError),
        (status = 503, description = "The view store failed", body = ApiError)
    )
)]
pub async fn get_bars<L: EventLog>(
    State(state): State<ServingState<L>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BarsQuery>, QueryRejection>,
) -> Result<Json<BarsResponse>, ApiError> {
    let Path(symbol) = path.map_err(|e| ApiError::bad_request(format!("symbol: {}", e.body_text())))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    validate_symbol(&symbol).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let interval = match q.interval.as_deref() {
        None => Interval::M1,
        Some(name) => Interval::parse(name)
            .ok_or_else(|| ApiError::bad_request(format!("interval {name:?}: use 1m, 5m, 15m, 1h or 1d")))?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit {limit}: use 1..={MAX_LIMIT}")));
    }
    let from = parse_bound("from", q.from.as_deref(), false)?;
    let to = parse_bound("to", q.to.as_deref(), true)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad_request("from is after to"));
        }
    }
    let size = interval.size_ms();
    // Whole bars only: the first bucket starting at or after `from`, through the bucket that
    // starts at or before `to`.
    let row_from = from.map_or(i64::MIN, |f| window_start(f.saturating_add(size - 1), size));
    let row_to = to.map_or(i64::MAX, |t| window_start(t, size).saturating_add(size));
    // Each bucket is one pre-rolled batch row or at most `ratio` 1-minute rows.
    let ratio = size / prism_core::time::MINUTE_MS;
    let max_rows = (limit as i64 + 1).saturating_mul(ratio);

    let snapshot = state.store.bars_snapshot(&symbol, row_from, row_to, size, max_rows).await?;
    if snapshot.batch.is_empty() && snapshot.realtime.is_empty() && !state.store.symbol_known(&symbol).await? {
        return Err(ApiError::not_found(format!("no bars for symbol {symbol:?}; see /v1/symbols")));
    }
    let watermark = realtime_watermark(&state.store, snapshot.state.realtime_version, state.allowed_lateness_ms).await?;
    let mut merged = merge_bars(&snapshot.batch, &snapshot.realtime, interval);
    // Each layer's rows were capped; a bucket past the earlier cap may be incomplete, so keep
    // only buckets both capped reads fully covered.
    let cut_at = [&snapshot.batch, &snapshot.realtime]
        .iter()
        .filter(|rows| rows.len() as i64 >= max_rows)
        .filter_map(|rows| rows.last().map(|r| window_start(r.key.window_start_ms, size)))
        .min();
    if let Some(cut) = cut_at {
        merged.retain(|b| b.start_ms < cut);
    }
    let next_from = if merged.len() > limit || cut_at.is_some() {
        merged.truncate(limit);
        merged.last().map(|b| format_rfc3339(b.start_ms + size))
    } else {
        None
    };
    let bars = merged
        .into_iter()
        .filter_map(|b| {
            let a = b.agg;
            Some(Bar {
                start: format_rfc3339(b.start_ms),
                open: a.open?.price.to_string(),
                high: a.high?.to_string(),
                low: a.low?.to_string(),
                close: a.close?.price.to_string(),
                volume: a.volume,
                notional: a.notional.to_string(),
                vwap: a.vwap()?.to_string(),
                trades: a.trades,
                layer: b.layer.name().to_string(),
            })
        })
        .collect();
    Ok(Json(BarsResponse {
        symbol,
        interval: interval.name().to_string(),
        architecture: state.architecture.name().to_string(),
        batch_horizon: snapshot.state.batch_horizon_ms.map(format_rfc3339),
        realtime_watermark: watermark.map(format_rfc3339),
        bars,
        next_from,
    }))
}

/// Symbols with bars.
#[utoipa::path(
    get,
    path = "/v1/symbols",
    tag = "views",
    responses((status = 200, description = "Symbols", body = SymbolsResponse), (status = 503, description = "The view store failed", body = ApiError))
)]
pub async fn get_symbols<L: EventLog>(State(state): State<ServingState<L>>) -> Result<Json<SymbolsResponse>, ApiError> {
    Ok(Json(SymbolsResponse { symbols: state.store.symbols().await? }))
}
