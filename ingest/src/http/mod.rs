//! HTTP ingest: `POST /v1/events/quotes`.
//!
//! The body is one JSON quote object or an NDJSON batch (one object per line; blank lines
//! ignored); a JSON array of quote objects is accepted too (errors then count array items). Every line is validated first; the batch is then either appended whole and made
//! durable (flushed to disk) before `202 Accepted` with each event's offset, or refused whole
//! with `400` naming each bad line — nothing of a refused batch is appended. A body over the
//! limit gets `413`.
//!
//! With an `Idempotency-Key` header, a retried batch appends nothing new and gets the first
//! answer again ([`idempotency`]), so delivery from an HTTP client can be exactly-once.

mod counts;
pub mod idempotency;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use prism_core::event::{LogPosition, Quote, QUOTES_TOPIC};
use prism_core::log::{EventLog, LogError, NewRecord};
use prism_core::store::ViewStore;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::append::{AppendPath, Batch};

/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 100_000;

/// HTTP ingest's flags (each with a `PRISM_*` environment fallback), flattened into `prism up`
/// and `prism ingest-api`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Largest ingest body, bytes (`413 Payload Too Large` past it).
    #[arg(long, env = "PRISM_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// How long an `Idempotency-Key` is remembered (a retry after that appends again), e.g.
    /// `24h`.
    #[arg(long, env = "PRISM_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = prism_core::config::parse_duration)]
    pub idempotency_window: Duration,
}

impl Default for IngestArgs {
    fn default() -> Self {
        IngestArgs { max_body_bytes: 8 << 20, idempotency_window: Duration::from_secs(24 * 3600) }
    }
}

/// Settings and handles of HTTP ingest.
pub struct IngestState<L> {
    /// The way into the log (source `http`).
    pub path: AppendPath<L>,
    /// Where accepted/refused counts and idempotency keys are kept.
    pub store: ViewStore,
    /// How long an idempotency key is remembered, ms.
    pub idempotency_window_ms: i64,
    /// Idempotency keys of requests in progress in this process.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// The `http` source's accepted/refused counters, written with group commit.
    counts: Arc<counts::GroupedCounts>,
}

impl<L: EventLog> IngestState<L> {
    /// HTTP ingest into `log`, with counters and idempotency keys in `store`, keys remembered for
    /// `idempotency_window`.
    pub fn new(log: Arc<L>, store: ViewStore, idempotency_window: Duration) -> Self {
        IngestState {
            path: AppendPath::new(log, "http"),
            store,
            idempotency_window_ms: i64::try_from(idempotency_window.as_millis()).unwrap_or(i64::MAX),
            in_flight: Arc::default(),
            counts: Arc::new(counts::GroupedCounts::new("http")),
        }
    }
}

impl<L> Clone for IngestState<L> {
    fn clone(&self) -> Self {
        IngestState {
            path: self.path.clone(),
            store: self.store.clone(),
            idempotency_window_ms: self.idempotency_window_ms,
            in_flight: self.in_flight.clone(),
            counts: self.counts.clone(),
        }
    }
}

/// `202` answer: where each event landed, in input order.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestAccepted {
    /// Events appended.
    pub accepted: usize,
    /// Topic they were appended to.
    pub topic: String,
    /// Log position of each event, in input order.
    pub offsets: Vec<EventOffset>,
}

/// A log position.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOffset {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// `400`/`413`/`503` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestRefused {
    /// What went wrong, in one sentence.
    pub error: String,
    /// Each bad line (1-based) and why; empty when the whole body was refused.
    pub lines: Vec<LineError>,
}

/// One refused line.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: usize,
    /// Why it was refused.
    pub reason: String,
}

/// The OpenAPI fragment of HTTP ingest (merged into the service's document).
#[derive(OpenApi)]
#[openapi(paths(post_quotes), components(schemas(IngestAccepted, EventOffset, IngestRefused, LineError)))]
pub struct IngestApi;

/// The ingest routes, with a body limit of `max_body_bytes`.
pub fn router<L: EventLog>(state: IngestState<L>, max_body_bytes: usize) -> Router {
    Router::new().route("/v1/events/quotes", post(post_quotes::<L>)).layer(DefaultBodyLimit::max(max_body_bytes)).with_state(state)
}

fn refused(status: StatusCode, error: impl Into<String>, lines: Vec<LineError>) -> Response {
    (status, Json(IngestRefused { error: error.into(), lines })).into_response()
}

/// Parses a body into quotes: a single JSON object, or NDJSON lines.
///
/// Errors: every bad line with its reason.
pub fn parse_quotes(body: &[u8]) -> Result<Vec<Quote>, Vec<LineError>> {
    Ok(parse_body(body)?.into_iter().map(|(q, _)| q).collect())
}

/// A parsed quote and, when it came in the log's canonical form (see
/// [`Quote::from_json_with_form`]), its line, to be appended as it came.
type ParsedQuote<'a> = (Quote, Option<&'a [u8]>);

/// [`parse_quotes`], keeping each canonical line.
fn parse_body(body: &[u8]) -> Result<Vec<ParsedQuote<'_>>, Vec<LineError>> {
    if let Ok((q, canonical)) = Quote::from_json_with_form(body) {
        return Ok(vec![(q, canonical.then_some(body))]);
    }
    // Clients that send a JSON array of quotes are served too; errors then name array items.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_slice(body).map_err(|e| vec![LineError { line: 1, reason: format!("malformed JSON array: {e}") }])?;
        let mut quotes = Vec::new();
        let mut errors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let parsed = serde_json::to_vec(item)
                .map_err(|e| prism_core::event::EventError::Malformed(e.to_string()))
                .and_then(|bytes| Quote::from_json(&bytes));
            match parsed {
                Ok(q) => quotes.push((q, None)),
                Err(e) => errors.push(LineError { line: i + 1, reason: format!("array item {}: {e}", i + 1) }),
            }
        }
        return if errors.is_empty() && !quotes.is_empty() {
            Ok(quotes)
        } else if errors.is_empty() {
            Err(vec![LineError { line: 1, reason: "empty array".into() }])
        } else {
            Err(errors)
        };
    }
    let mut quotes = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match Quote::from_json_with_form(line) {
            Ok((q, canonical)) => quotes.push((q, canonical.then_some(line))),
            Err(e) => errors.push(LineError { line: i + 1, reason: e.to_string() }),
        }
    }
    if quotes.is_empty() && errors.is_empty() {
        errors.push(LineError { line: 1, reason: "empty body: send a JSON quote or NDJSON lines".into() });
    }
    if errors.is_empty() {
        Ok(quotes)
    } else {
        Err(errors)
    }
}

/// Appends quotes to `prism.quotes`.
#[utoipa::path(
    post,
    path = "/v1/events/quotes",
    tag = "ingest",
    request_body(
        content = String,
        description = "One JSON quote `{\"symbol\":\"AAPL\",\"ts\":\"2013-03-01T14:30:00Z\",\"price\":\"118.56\",\"size\":100}` \
            or NDJSON lines of them. `ts`: RFC 3339 or UTC ms; `price`, `bid`, `ask`: decimal string or number with at most 6 decimals; `size`: shares ≥ 1.",
        content_type = "application/x-ndjson"
    ),
    responses(
        (status = 202, description = "Appended durably (or, for a retried Idempotency-Key, appended before: the first answer again, with `Idempotent-Replayed: true`)", body = IngestAccepted),
        (status = 400, description = "Refused; nothing appended", body = IngestRefused),
        (status = 409, description = "A request with this Idempotency-Key is in progress; retry later", body = IngestRefused),
        (status = 413, description = "Body over the limit; nothing appended", body = IngestRefused),
        (status = 422, description = "This Idempotency-Key was used with another body", body = IngestRefused),
        (status = 503, description = "The log failed; nothing acknowledged (retry with the same Idempotency-Key to append exactly once)", body = IngestRefused)
    ),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "A unique key per batch (e.g. a UUID; 1–255 visible ASCII characters). A retry with the same key and body appends nothing new and gets the first answer again, within the configured window (default 24 h).")
    )
)]
pub async fn post_quotes<L: EventLog>(
    State(state): State<IngestState<L>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            return refused(status, format!("request body refused: {}", rejection.body_text()), Vec::new());
        }
    };
    let parsed = match parse_body(&body) {
        Ok(q) if q.len() > MAX_BATCH_EVENTS => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{} events in one batch; at most {MAX_BATCH_EVENTS}", q.len()),
                Vec::new(),
            )
        }
        Ok(q) => q,
        Err(lines) => {
            let total = body.split(|b| *b == b'\n').filter(|l| !l.iter().all(|b| b.is_ascii_whitespace())).count().max(1);
            metrics::counter!(crate::telemetry::HTTP_EVENTS_REFUSED_TOTAL).increment(total as u64);
            if let Err(e) = state.counts.add(&state.store, 0, total as i64).await {
                tracing::warn!(error = %e, "could not count refused events");
            }
            return refused(StatusCode::BAD_REQUEST, format!("{} of {total} lines are invalid; nothing was appended", lines.len()), lines);
        }
    };
    let key = match idempotency::key_of(&headers) {
        Ok(key) => key,
        Err(reason) => return refused(StatusCode::BAD_REQUEST, reason, Vec::new()),
    };
    match key {
        Some(key) => {
            let quotes: Vec<Quote> = parsed.into_iter().map(|(q, _)| q).collect();
            idempotency::post_once(&state, &key, &body, &quotes).await
        }
        None => {
            // The request's records share one append time.
            let now = prism_core::time::now_ms();
            let records: Vec<NewRecord> = parsed
                .into_iter()
                .map(|(q, line)| {
                    let value = line.map_or_else(|| q.to_json(), <[u8]>::to_vec);
                    NewRecord::stamped(q.symbol, value, now)
                })
                .collect();
            match append_counted(&state, records).await {
                Ok(positions) => accepted(&positions),
                Err(e) => log_failed(e),
            }
        }
    }
}

/// Appends `records` through the append path, waits for the log's acknowledgement, and counts
/// them. The counts are stored while the log syncs (both wait for a disk), so a request waits
/// for one sync, not one after the other; events whose sync then fails were appended all the
/// same (readers see them) and stay counted.
async fn append_counted<L: EventLog>(state: &IngestState<L>, records: Vec<NewRecord>) -> Result<Vec<LogPosition>, LogError> {
    let committed = state.path.append(QUOTES_TOPIC, Batch::of(records)).await?;
    let (acknowledged, counted) =
        tokio::join!(state.path.acknowledge(), state.counts.add(&state.store, committed.positions.len() as i64, 0));
    if let Err(e) = counted {
        tracing::warn!(error = %e, "could not count accepted events");
    }
    acknowledged?;
    Ok(committed.positions)
}

/// The `202` answer's body for events at `positions`: an [`IngestAccepted`] as JSON, written into
/// a buffer sized for it at once (axum's `Json` starts from 128 bytes and grows through many
/// small writes: 9 % of the ingest's CPU at 1,000 events a request).
fn accepted_json(positions: &[LogPosition]) -> Vec<u8> {
    let offsets = positions.iter().map(|p| EventOffset { partition: p.partition, offset: p.offset }).collect();
    let answer = IngestAccepted { accepted: positions.len(), topic: QUOTES_TOPIC.into(), offsets };
    let mut json = Vec::with_capacity(64 + 40 * positions.len());
    // Integers and a topic name into memory: nothing here can fail.
    let _ = serde_json::to_writer(&mut json, &answer);
    json
}

/// The `202` answer for events at `positions`.
fn accepted(positions: &[LogPosition]) -> Response {
    accepted_response(accepted_json(positions))
}

/// A `202` answer with this [`accepted_json`] body.
fn accepted_response(json: Vec<u8>) -> Response {
    (StatusCode::ACCEPTED, [(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response()
}

fn log_failed(e: LogError) -> Response {
    tracing::error!(error = %e, "HTTP ingest could not append");
    refused(StatusCode::SERVICE_UNAVAILABLE, "the event log is unavailable; nothing was acknowledged", Vec::new())
}
