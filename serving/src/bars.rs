//! `GET /v1/bars/{symbol}` and `GET /v1/symbols`.

use std::borrow::Cow;
use std::collections::BTreeSet;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use prism_core::config::{speed_consumer, Architecture};
use prism_core::decimal::Decimal6;
use prism_core::event::{validate_symbol, MAX_TS_MS, MIN_TS_MS};
use prism_core::log::EventLog;
use prism_core::store::ViewStore;
use prism_core::time::{format_rfc3339, parse_instant, UtcTime, DAY_MS, MINUTE_MS};
use prism_core::view::ohlcv::OhlcvView;
use prism_core::view::View;
use prism_core::window::{window_start, Watermark};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::merge::{merge_bars, Layer};
use crate::ServingState;

/// Bars per answer by default.
pub const DEFAULT_LIMIT: usize = 5_000;
/// Most bars per answer.
pub const MAX_LIMIT: usize = 100_000;

/// A bar interval of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum BarInterval {
    /// 30 seconds (views with 30-second windows, e.g. `ohlcv_30s`).
    #[serde(rename = "30s")]
    S30,
    /// 1 minute.
    #[serde(rename = "1m")]
    M1,
    /// 5 minutes.
    #[serde(rename = "5m")]
    M5,
    /// 15 minutes.
    #[serde(rename = "15m")]
    M15,
    /// 1 hour.
    #[serde(rename = "1h")]
    H1,
    /// 1 UTC day.
    #[serde(rename = "1d")]
    D1,
}

impl BarInterval {
    /// Length, ms.
    pub fn size_ms(self) -> i64 {
        match self {
            BarInterval::S30 => 30_000,
            BarInterval::M1 => MINUTE_MS,
            BarInterval::M5 => 5 * MINUTE_MS,
            BarInterval::M15 => 15 * MINUTE_MS,
            BarInterval::H1 => 60 * MINUTE_MS,
            BarInterval::D1 => DAY_MS,
        }
    }

    /// The API name.
    pub fn name(self) -> &'static str {
        match self {
            BarInterval::S30 => "30s",
            BarInterval::M1 => "1m",
            BarInterval::M5 => "5m",
            BarInterval::M15 => "15m",
            BarInterval::H1 => "1h",
            BarInterval::D1 => "1d",
        }
    }
}

/// Query parameters of `/v1/bars/{symbol}`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BarsQuery {
    /// Bar length: `30s` (views with 30-second windows), `1m`, `5m`, `15m`, `1h` or `1d` (UTC
    /// days); default `1m`. A view answers the intervals it serves (400 otherwise).
    pub interval: Option<BarInterval>,
    /// First bar start to include: RFC 3339 (`2013-03-01T14:30:00Z`), a date (`2013-03-01`,
    /// 00:00 UTC) or UTC ms. Default: the beginning.
    pub from: Option<String>,
    /// Last bar start to include (inclusive): RFC 3339, UTC ms, or a date meaning the whole day.
    /// Default: the end.
    pub to: Option<String>,
    /// Most bars to return (1..=100000, default 5000); when cut, `next_from` says where to go on.
    #[param(minimum = 1, maximum = 100000)]
    pub limit: Option<usize>,
    /// The `ohlcv`-shaped view to read (default `ohlcv`).
    pub view: Option<String>,
}

/// One bar.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Bar {
    /// Bar start, RFC 3339 UTC.
    // Formatted as it is written: no `String` per bar.
    #[schema(value_type = String)]
    pub start: UtcTime,
    // The prices and sums are `Decimal6`, which serializes as that string: no `String` is built
    // per field (3,270 bars of 13 years took a third of their time formatting them).
    /// First trade's price (by event time, partition, offset), decimal string, scale 6.
    #[schema(value_type = String)]
    pub open: Decimal6,
    /// Highest price.
    #[schema(value_type = String)]
    pub high: Decimal6,
    /// Lowest price.
    #[schema(value_type = String)]
    pub low: Decimal6,
    /// Last trade's price.
    #[schema(value_type = String)]
    pub close: Decimal6,
    /// Shares traded.
    pub volume: i64,
    /// Σ price × size, exact, scale 6.
    #[schema(value_type = String)]
    pub notional: Decimal6,
    /// notional / volume, rounded half away from zero to scale 6.
    #[schema(value_type = String)]
    pub vwap: Decimal6,
    /// Number of trades.
    pub trades: i64,
    /// Where the bar came from: `batch` (Lambda: the batch view's segments), `segment` (Kappa:
    /// segments the stream job handed off), `realtime`, or `both` for a roll-up straddling the
    /// segment horizon.
    #[schema(value_type = String)]
    pub layer: Cow<'static, str>,
}

/// Answer of `/v1/bars/{symbol}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BarsResponse {
    /// The view read.
    pub view: String,
    /// The symbol.
    pub symbol: String,
    /// The interval.
    pub interval: String,
    /// Where the answer's buckets come from.
    #[serde(flatten)]
    pub horizons: Horizons,
    /// Bars ascending by start.
    pub bars: Vec<Bar>,
    /// Present when `limit` cut the answer: pass it as `from` for the next page.
    pub next_from: Option<String>,
}

/// The merge metadata every view answer carries (DESIGN §5): which architecture, and the
/// horizons that say which buckets come from which layer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Horizons {
    /// `lambda` or `kappa`.
    pub architecture: String,
    /// Batch horizon H, RFC 3339: buckets before it come from the batch view. Null before the
    /// first batch run, and in Kappa mode (which has no batch layer).
    pub batch_horizon: Option<String>,
    /// Segment horizon, RFC 3339: buckets before it are read from immutable segments — the batch
    /// views' in Lambda mode (equal to `batch_horizon`), the finalized windows the stream job
    /// handed off in Kappa mode. Null before the first segments.
    pub segment_horizon: Option<String>,
    /// Realtime watermark (max event time − allowed lateness), RFC 3339; null before any event.
    pub realtime_watermark: Option<String>,
}

/// The [`Horizons`] of an answer of `view` read under `pointer`, whose realtime version's
/// latest committed event time is `max_event_ts_ms` (UTC ms; [`KeyRows::max_event_ts_ms`]).
pub(crate) fn horizons<L, V: View>(
    state: &ServingState<L>,
    view: &V,
    pointer: &prism_core::store::ViewPointer,
    max_event_ts_ms: Option<i64>,
) -> Horizons {
    let watermark = Watermark::new(max_event_ts_ms, view.allowed_lateness_ms()).current_ms();
    Horizons {
        architecture: state.architecture.name().to_string(),
        batch_horizon: match state.architecture {
            Architecture::Lambda => pointer.batch_horizon_ms.map(format_rfc3339),
            Architecture::Kappa => None,
        },
        segment_horizon: pointer.batch_horizon_ms.map(format_rfc3339),
        realtime_watermark: watermark.map(format_rfc3339),
    }
}

/// The served pointer of `view` and its realtime version's latest committed event time (UTC
/// ms), for answers that read no key (so no [`KeyRows`]).
///
/// Errors: [`ApiError`] when the store fails.
pub(crate) async fn served_pointer<V: View>(
    store: &ViewStore,
    view: &V,
) -> Result<(prism_core::store::ViewPointer, Option<i64>), ApiError> {
    let pointer = store.view_pointer(view.name()).await?;
    let max_event_ts_ms = max_event_ts(store, view, pointer.realtime_version).await?;
    Ok((pointer, max_event_ts_ms))
}

/// Answer of `/v1/symbols`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SymbolsResponse {
    /// Symbols with rows in the served `ohlcv` view (batch or realtime), sorted.
    pub symbols: Vec<String>,
}

/// Realtime watermark of `view`'s realtime version `version`, UTC ms.
pub(crate) async fn realtime_watermark<V: View>(store: &ViewStore, view: &V, version: i64) -> Result<Option<i64>, ApiError> {
    Ok(Watermark::new(max_event_ts(store, view, version).await?, view.allowed_lateness_ms()).current_ms())
}

/// The latest event time the speed layer committed for `view`'s realtime version `version`, UTC
/// ms, over every partition (`None` before its first commit).
async fn max_event_ts<V: View>(store: &ViewStore, view: &V, version: i64) -> Result<Option<i64>, ApiError> {
    let offsets = store.consumer_offsets(&speed_consumer(view.name(), version), view.source_topic()).await?;
    Ok(offsets.iter().filter_map(|o| o.max_event_ts_ms).max())
}

pub(crate) fn parse_bound(name: &str, text: Option<&str>, end_of_day: bool) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let ms = parse_instant(text).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
    let is_date = text.trim().len() == 10 && text.contains('-');
    let ms = if end_of_day && is_date { ms.saturating_add(DAY_MS - 1) } else { ms };
    // Events exist only in years 0001–9999 (see `Quote`); bounds beyond select the same bars.
    Ok(Some(ms.clamp(MIN_TS_MS, MAX_TS_MS)))
}

fn view_named<L>(state: &ServingState<L>, name: Option<&str>) -> Result<std::sync::Arc<OhlcvView>, ApiError> {
    let name = name.unwrap_or("ohlcv");
    state.views.ohlcv(name).ok_or_else(|| ApiError::not_found(format!("no ohlcv-shaped view named {name:?} is registered")))
}

/// Bars of one symbol, merged from the batch view (segments, before the batch horizon) and the
/// realtime view (from it on), read in one consistent snapshot.
#[utoipa::path(
    get,
    path = "/v1/bars/{symbol}",
    tag = "views",
    params(("symbol" = String, Path, description = "Ticker symbol, e.g. AAPL"), BarsQuery),
    responses(
        (status = 200, description = "Bars", body = BarsResponse),
        (status = 400, description = "Bad parameter", body = ApiError),
        (status = 404, description = "Unknown symbol or view", body = ApiError),
        (status = 409, description = "The served version was built under another view definition: the body says what to run", body = ApiError),
        (status = 500, description = "Internal failure (logged; the body names an error id)", body = ApiError),
        (status = 503, description = "A dependency is unavailable", body = ApiError)
    )
)]
pub async fn get_bars<L: EventLog>(
    State(state): State<ServingState<L>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BarsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(symbol) = path.map_err(|e| ApiError::bad_request(format!("symbol: {}", e.body_text())))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let answer = bars_answer(&state, symbol, &q).await?;
    sized_json(&answer, 256 + answer.bars.len() * BAR_JSON_BYTES)
}

/// The answer of `/v1/bars/{symbol}` for `q` (also what `/v1/bars/{symbol}/stream` sends).
///
/// Errors: as `/v1/bars/{symbol}`.
pub(crate) async fn bars_answer<L: EventLog>(state: &ServingState<L>, symbol: String, q: &BarsQuery) -> Result<BarsResponse, ApiError> {
    validate_symbol(&symbol).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let view = view_named(state, q.view.as_deref())?;
    let BucketRange { interval, size, limit, row_from, row_to, max_rows } =
        bucket_range(&*view, q.interval, q.limit, q.from.as_deref(), q.to.as_deref())?;
    let KeyRows { pointer, max_event_ts_ms, batch, realtime } = key_rows(state, &*view, &symbol, size, row_from, row_to, max_rows).await?;
    let mut merged = merge_bars(&batch, &realtime, size);
    if merged.is_empty() && !known_keys(state, &*view).await?.contains(&symbol) {
        return Err(ApiError::not_found(format!("no bars for symbol {symbol:?}; see /v1/symbols")));
    }
    let next_from = cut_page(&mut merged, limit, size);
    let bars = merged
        .into_iter()
        .filter_map(|b| {
            let a = b.agg;
            Some(Bar {
                start: UtcTime(b.start_ms),
                open: a.open?.price,
                high: a.high?,
                low: a.low?,
                close: a.close?.price,
                volume: a.volume,
                notional: a.notional,
                vwap: a.vwap()?,
                trades: a.trades,
                layer: Cow::Borrowed(layer_name(b.layer, state.architecture)),
            })
        })
        .collect();
    let answer = BarsResponse {
        view: view.name().to_string(),
        symbol,
        interval: interval.name().to_string(),
        horizons: horizons(state, &*view, &pointer, max_event_ts_ms),
        bars,
        next_from,
    };
    Ok(answer)
}

/// The buckets a request asks for, validated.
pub(crate) struct BucketRange {
    /// The interval.
    pub interval: BarInterval,
    /// Its length, ms.
    pub size: i64,
    /// Most buckets to answer.
    pub limit: usize,
    /// First row start to read (the first whole bucket at or after `from`), UTC ms.
    pub row_from: i64,
    /// End (exclusive) of the row starts to read, UTC ms.
    pub row_to: i64,
    /// Most rows to read per part: at least `limit + 1` buckets, plus the base rows of the one
    /// bucket that straddles H.
    pub max_rows: usize,
}

/// Validates a request's `interval` (default `1m`, one `view` serves), `limit` (default
/// [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) and `from`/`to` bounds ([`parse_bound`]).
///
/// Errors: [`ApiError`] 400 with the reason.
pub(crate) fn bucket_range<V: View>(
    view: &V,
    interval: Option<BarInterval>,
    limit: Option<usize>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<BucketRange, ApiError> {
    let interval = interval.unwrap_or(BarInterval::M1);
    let size = interval.size_ms();
    if !view.intervals_ms().contains(&size) {
        return Err(ApiError::bad_request(format!("interval {}: view {} does not serve it", interval.name(), view.name())));
    }
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit {limit}: use 1..={MAX_LIMIT}")));
    }
    let from = parse_bound("from", from, false)?;
    let to = parse_bound("to", to, true)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad_request("from is after to"));
        }
    }
    // Whole buckets only: the first bucket starting at or after `from`, through the bucket that
    // starts at or before `to`.
    let row_from = from.map_or(MIN_TS_MS, |f| window_start(f.saturating_add(size - 1), size));
    let row_to = to.map_or(MAX_TS_MS, |t| window_start(t, size).saturating_add(size));
    let max_rows = limit + 1 + (size / view.window_ms()) as usize;
    Ok(BucketRange { interval, size, limit, row_from, row_to, max_rows })
}

/// Cuts `merged` to `limit` buckets; when it cut, the `next_from` to go on from (RFC 3339).
pub(crate) fn cut_page<A>(merged: &mut Vec<crate::merge::MergedBar<A>>, limit: usize, size: i64) -> Option<String> {
    if merged.len() > limit {
        merged.truncate(limit);
        merged.last().map(|b| format_rfc3339(b.start_ms + size))
    } else {
        None
    }
}

/// A bucket's `layer` as answered: `segment` for batch-layer rows in Kappa mode.
pub(crate) fn layer_name(layer: Layer, architecture: Architecture) -> &'static str {
    match (layer, architecture) {
        (Layer::Batch, Architecture::Kappa) => "segment",
        (layer, _) => layer.name(),
    }
}

/// Segments one answer reads at once.
const SEGMENT_READS_IN_FLIGHT: usize = 4;

/// One key's rows of a view, read in one consistent snapshot: the batch part (segments, before
/// the horizon) and the realtime part (from it on), at `size` or finer.
pub(crate) struct KeyRows<A> {
    /// The pointer the snapshot read.
    pub pointer: prism_core::store::ViewPointer,
    /// The latest event time committed for the pointer's realtime version, UTC ms (read in the
    /// same snapshot; see [`prism_core::store::ViewSnapshot::max_event_ts_ms`]).
    pub max_event_ts_ms: Option<i64>,
    /// Rows from segments.
    pub batch: Vec<prism_core::view::ViewRow<A>>,
    /// Rows from the realtime view.
    pub realtime: Vec<prism_core::view::ViewRow<A>>,
}

/// Reads [`KeyRows`] of `key` with window starts in `[row_from, row_to)`, at most about
/// `max_rows` per part; a version built under another definition is refused with a 409 that
/// says how to rebuild it (DESIGN §6).
///
/// Errors: [`ApiError`] (409 for a stale definition, 5xx for the store or segments).
pub(crate) async fn key_rows<L, V: View>(
    state: &ServingState<L>,
    view: &V,
    key: &str,
    size: i64,
    row_from: i64,
    row_to: i64,
    max_rows: usize,
) -> Result<KeyRows<V::Agg>, ApiError> {
    let snapshot = state.store.view_snapshot(view, key, size, row_from, row_to, max_rows as i64).await?;
    // A version built under another definition is not served (DESIGN §6).
    let current = view.fingerprint();
    if let Some(built) = snapshot.realtime_fingerprint.as_deref().filter(|f| *f != current) {
        return Err(ApiError::conflict(format!(
            "view {name}: its realtime version {version} was built under another definition ({built}); this deployment runs \
         {current}. Rebuild it from the log: `prism replay --view {name}` (POST /v1/admin/replays?view={name})",
            name = view.name(),
            version = snapshot.pointer.realtime_version
        )));
    }
    if let Some(built) = snapshot.segments_fingerprint.as_deref().filter(|f| *f != current) {
        let rebuild = match state.architecture {
            Architecture::Lambda => {
                "the batch layer rebuilds it in full on its next run (or POST /v1/admin/batch-runs?full=true)".to_string()
            }
            Architecture::Kappa => format!("replay the view: `prism replay --view {}`", view.name()),
        };
        return Err(ApiError::conflict(format!(
        "view {name}: its segments (version {version}) were built under another definition ({built}); this deployment runs {current}: {rebuild}",
        name = view.name(),
        version = snapshot.pointer.batch_version.unwrap_or_default()
    )));
    }
    let mut batch = Vec::new();
    if let Some(h) = snapshot.pointer.batch_horizon_ms {
        if !snapshot.segments.is_empty() {
            let segments = state
                .segments
                .as_ref()
                .ok_or_else(|| ApiError::internal(&"a batch version is published but this process has no segment store configured"))?;
            // A few segments at once, in order: a cold read (a new version's footers and row
            // groups) waits on file reads that overlap well; each read holds at most `max_rows`.
            // (Collected first: a stream over a borrowing closure is not provably `Send`.)
            let reads: Vec<_> =
                snapshot.segments.iter().map(|s| segments.rows(view, &s.path, size, key, row_from, row_to.min(h), max_rows)).collect();
            let mut reads = futures_util::stream::iter(reads).buffered(SEGMENT_READS_IN_FLIGHT);
            while let Some(rows) = reads.next().await {
                let room = max_rows - batch.len();
                batch.extend(rows?.into_iter().take(room));
                if batch.len() >= max_rows {
                    break;
                }
            }
        }
    }
    let mut realtime = snapshot.realtime_base;
    realtime.extend(snapshot.realtime);
    Ok(KeyRows { pointer: snapshot.pointer, max_event_ts_ms: snapshot.max_event_ts_ms, batch, realtime })
}

/// About how many bytes one bar takes in JSON (most are 200–240).
const BAR_JSON_BYTES: usize = 256;

/// `value` as a JSON response, serialized into a buffer of `capacity` bytes reserved up front:
/// a long answer (13 years of daily bars is about 750 KB) is written without regrowing the buffer,
/// which axum's `Json` (128 bytes, then doubling) spends a sixth of the request on.
///
/// Errors: an internal error when serialization fails (it cannot for these types).
pub(crate) fn sized_json<T: Serialize>(value: &T, capacity: usize) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut body, value).map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Keys of `view` in its served versions: realtime rows and the published batch segments.
pub(crate) async fn known_keys<L, V: View>(state: &ServingState<L>, view: &V) -> Result<BTreeSet<String>, ApiError> {
    let pointer = state.store.view_pointer(view.name()).await?;
    let mut keys: BTreeSet<String> = state.store.realtime_keys(view, pointer.realtime_version).await?.into_iter().collect();
    if let (Some(version), Some(segments)) = (pointer.batch_version, state.segments.as_ref()) {
        for s in state.store.batch_segments(view.name(), version).await? {
            keys.extend(segments.keys(view, &s.path).await?);
        }
    }
    Ok(keys)
}

/// Symbols with bars in the `ohlcv` view.
#[utoipa::path(
    get,
    path = "/v1/symbols",
    tag = "views",
    responses(
        (status = 200, description = "Symbols", body = SymbolsResponse),
        (status = 500, description = "Internal failure", body = ApiError),
        (status = 503, description = "A dependency is unavailable", body = ApiError)
    )
)]
pub async fn get_symbols<L: EventLog>(State(state): State<ServingState<L>>) -> Result<Json<SymbolsResponse>, ApiError> {
    let view = view_named(&state, None)?;
    Ok(Json(SymbolsResponse { symbols: known_keys(&state, &*view).await?.into_iter().collect() }))
}
