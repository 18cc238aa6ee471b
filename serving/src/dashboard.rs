//! The live dashboard at `/` (assets vendored into the binary: it works offline) and the
//! server-sent event streams it follows (the HTML `EventSource` protocol, WHATWG HTML
//! "Server-sent events"):
//!
//! - `GET /v1/bars/{symbol}/stream?interval=&from=&to=&limit=&view=`: an event `bars` with the
//!   answer of `/v1/bars/{symbol}` whenever it changes (checked every second);
//! - `GET /v1/status/stream`: an event `status` with the answer of `/v1/status` whenever it
//!   changes.
//!
//! A failed look sends an event `error` with the reason and the stream goes on. Each stream
//! holds one answer (at most `limit` bars) in memory; the page is a candlestick chart per symbol
//! coloured by layer with the horizons marked, consumer lag per partition, the `access` and
//! `changes` views and the running replays.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use prism_core::log::EventLog;

use crate::bars::{bars_answer, BarsQuery};
use crate::error::ApiError;
use crate::ServingState;

/// How often a stream looks for a changed answer.
const STREAM_PERIOD: Duration = Duration::from_secs(1);

/// Most event streams one process serves at once (each holds an answer and recomputes it every
/// second): past it a new stream is refused with 503, so no number of open tabs exhausts the
/// process.
pub const MAX_STREAMS: usize = 64;

static STREAMS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_STREAMS);

/// A stream slot, or a 503 saying why not.
fn stream_slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    STREAMS
        .try_acquire()
        .map_err(|_| ApiError::unavailable(format!("{MAX_STREAMS} event streams are open already; close one or poll the plain endpoint")))
}

const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");
/// TradingView Lightweight Charts 4.2.3 (Apache-2.0; `assets/vendor/lightweight-charts-LICENSE.txt`).
const CHARTS: &str = include_str!("../assets/vendor/lightweight-charts-4.2.3.js");
const CHARTS_LICENSE: &str = include_str!("../assets/vendor/lightweight-charts-LICENSE.txt");

/// `GET /`: the dashboard page.
pub async fn get_page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /assets/{name}`: the page's script, style and the vendored chart library.
///
/// Errors: 404 for another name.
pub async fn get_asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (body, kind) = match name.as_str() {
        "dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        "lightweight-charts-4.2.3.js" => (CHARTS, "text/javascript; charset=utf-8"),
        "lightweight-charts-LICENSE.txt" => (CHARTS_LICENSE, "text/plain; charset=utf-8"),
        _ => return Err(ApiError::not_found(format!("no asset {name:?}"))),
    };
    Ok(([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response())
}

/// A stream that sends `first` (when given, else `produce()`'s JSON) as event `name` at once and
/// then `produce()`'s JSON whenever it changes (looked at every [`STREAM_PERIOD`]); a failed
/// look sends an `error` event.
fn changes_of<F, Fut>(
    name: &'static str,
    slot: tokio::sync::SemaphorePermit<'static>,
    first: Option<String>,
    produce: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<String, ApiError>> + Send,
{
    let mut ticker = tokio::time::interval(STREAM_PERIOD);
    if first.is_some() {
        // `first` is the answer of now: the first look is one period away.
        ticker.reset();
    }
    let sent_first = first.as_ref().map(|json| Ok(Event::default().event(name).data(json)));
    // The slot lives as long as the stream (it is dropped with the stream's state).
    let looks = futures_util::stream::unfold((ticker, first, (produce, slot)), move |(mut ticker, mut last, produce)| async move {
        loop {
            ticker.tick().await;
            let event = match (produce.0)().await {
                Ok(json) if last.as_deref() == Some(json.as_str()) => continue,
                Ok(json) => {
                    let event = Event::default().event(name).data(&json);
                    last = Some(json);
                    event
                }
                Err(e) => Event::default().event("error").data(e.error),
            };
            return Some((Ok(event), (ticker, last, produce)));
        }
    });
    Sse::new(futures_util::stream::iter(sent_first).chain(looks)).keep_alive(KeepAlive::default())
}

/// `GET /v1/bars/{symbol}/stream`: the bars of `/v1/bars/{symbol}` (same parameters), sent
/// again whenever they change.
///
/// Errors: a bad parameter is a 400 before the stream starts; later failures are `error` events.
#[utoipa::path(
    get,
    path = "/v1/bars/{symbol}/stream",
    tag = "views",
    params(("symbol" = String, Path, description = "Ticker symbol, e.g. AAPL"), BarsQuery),
    responses(
        (status = 200, description = "Server-sent events: `bars` (a BarsResponse as JSON) at once and whenever the answer changes; `error` (a reason) when a look fails", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad parameter", body = ApiError),
        (status = 404, description = "Unknown symbol or view", body = ApiError),
        (status = 503, description = "Too many event streams are open", body = ApiError)
    )
)]
pub async fn get_bars_stream<L: EventLog>(
    State(state): State<ServingState<L>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BarsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(symbol) = path.map_err(|e| ApiError::bad_request(format!("symbol: {}", e.body_text())))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let slot = stream_slot()?;
    // The first answer up front: a bad request is an HTTP error, not a stream of them.
    let first = serde_json::to_string(&bars_answer(&state, symbol.clone(), &q).await?).map_err(|e| ApiError::internal(&e))?;
    let sse = changes_of("bars", slot, Some(first), move || {
        let (state, symbol, q) = (state.clone(), symbol.clone(), q.clone());
        async move {
            let answer = bars_answer(&state, symbol, &q).await?;
            serde_json::to_string(&answer).map_err(|e| ApiError::internal(&e))
        }
    });
    Ok(sse.into_response())
}

/// `GET /v1/status/stream`: `/v1/status`, sent again whenever it changes.
#[utoipa::path(
    get,
    path = "/v1/status/stream",
    tag = "admin",
    responses(
        (status = 200, description = "Server-sent events: `status` (a StatusResponse as JSON) at once and whenever it changes; `error` (a reason) when a look fails", content_type = "text/event-stream", body = String),
        (status = 503, description = "Too many event streams are open", body = ApiError)
    )
)]
pub async fn get_status_stream<L: EventLog>(State(state): State<ServingState<L>>) -> Result<Response, ApiError> {
    let slot = stream_slot()?;
    Ok(changes_of("status", slot, None, move || {
        let state = state.clone();
        async move {
            let axum::Json(status) = crate::status::get_status(State(state)).await?;
            serde_json::to_string(&status).map_err(|e| ApiError::internal(&e))
        }
    })
    .into_response())
}
