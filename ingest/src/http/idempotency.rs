//! `Idempotency-Key` on `POST /v1/events/quotes`: exactly-once delivery from an HTTP client
//! that retries (IETF draft "The Idempotency-Key HTTP Header Field",
//! draft-ietf-httpapi-idempotency-key-header; Stripe's API behaves the same way).
//!
//! - The first request with a key claims it in the view store (durable, shared by every ingest
//!   instance), appends its events — each carrying the headers `prism.source = http:<key>` and
//!   `prism.source.position = <index in the request>` — and records its `202` answer.
//! - A retry with the same key and the same body appends nothing and gets that answer again, with
//!   `Idempotent-Replayed: true`, for as long as the key is remembered (`--idempotency-window`,
//!   default 24 h).
//! - The same key with another body is `422`; a retry while the first request still runs is `409`.
//! - A request that failed (`503`), or whose process died, after it may have appended leaves its
//!   claim behind; the next retry takes the claim over, reads the log from the end offsets saved
//!   with it for events carrying the key, appends only the missing ones, and answers with every
//!   event's position — so nothing is lost and nothing is appended twice.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prism_core::event::{LogPosition, Quote, QUOTES_TOPIC};
use prism_core::log::{EventLog, NewRecord};
use prism_core::store::IdempotencyClaim;

use super::{accepted_json, accepted_response, append_counted, log_failed, refused, IngestState};
use crate::append::{recover_positions, POSITION_HEADER, SOURCE_HEADER};

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header set on a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Longest accepted key, bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// A claim still `pending` this long after it was made is presumed dead and may be taken over
/// (an append that takes longer has failed anyway: the log's own time-outs are shorter).
pub const STALE_CLAIM: Duration = Duration::from_secs(30);

/// The request's idempotency key, if any: 1–255 visible ASCII characters, optionally in double
/// quotes (the draft's structured-field string form).
///
/// Errors: the reason, for a `400`.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, String> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err("send one Idempotency-Key header, not several".into());
    }
    let text = value.to_str().map_err(|_| "Idempotency-Key must be visible ASCII".to_string())?;
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    if text.is_empty() || text.len() > MAX_KEY_BYTES || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("Idempotency-Key must be 1–{MAX_KEY_BYTES} visible ASCII characters"));
    }
    Ok(Some(text.to_string()))
}

/// A digest of the request body, to tell a retry from a reuse of the key: its length and its
/// CRC-32C (enough to catch a client bug; the key itself is the client's promise).
pub fn request_hash(body: &[u8]) -> String {
    format!("{}-{:08x}", body.len(), crc32c::crc32c(body))
}

/// Removes a key from the in-process set when the request ends, however it ends.
struct InFlight<'a> {
    keys: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

/// Serves a validated batch sent with an idempotency key.
pub(super) async fn post_once<L: EventLog>(state: &IngestState<L>, key: &str, body: &[u8], quotes: &[Quote]) -> Response {
    let newly_held = state.in_flight.lock().map(|mut keys| keys.insert(key.to_string())).unwrap_or(false);
    if !newly_held {
        return in_progress();
    }
    let _held = InFlight { keys: &state.in_flight, key: key.to_string() };
    let hash = request_hash(body);
    let log = state.path.log();
    let ends = match log.end_offsets(QUOTES_TOPIC).await {
        Ok(ends) => ends,
        Err(e) => return log_failed(e),
    };
    let stale_ms = STALE_CLAIM.as_millis() as i64;
    let now = prism_core::time::now_ms();
    let claim = match state.store.claim_idempotency_key(key, &hash, &ends, now, state.idempotency_window_ms, stale_ms).await {
        Ok(claim) => claim,
        Err(e) => {
            tracing::error!(error = %e, "could not claim an idempotency key");
            return refused(StatusCode::SERVICE_UNAVAILABLE, "the view store is unavailable; nothing was appended", Vec::new());
        }
    };
    let source = format!("http:{key}");
    let mut have = match claim {
        IdempotencyClaim::Done { request_hash, status, response } if request_hash == hash => {
            metrics::counter!(crate::telemetry::HTTP_IDEMPOTENT_REPLAYS_TOTAL).increment(1);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
            let mut answer =
                (status, [(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], response).into_response();
            answer.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            return answer;
        }
        IdempotencyClaim::Done { .. } => return reused(),
        IdempotencyClaim::InProgress { request_hash } if request_hash != hash => return reused(),
        IdempotencyClaim::InProgress { .. } => return in_progress(),
        IdempotencyClaim::Claimed => vec![None; quotes.len()],
        IdempotencyClaim::TakenOver { end_offsets } => {
            // An earlier holder may have appended part of this request: find it.
            let found = match recover_positions(&**log, QUOTES_TOPIC, &end_offsets, |s| s == source).await {
                Ok(found) => found,
                Err(e) => return abandon(state, key, e).await,
            };
            let mut have = vec![None; quotes.len()];
            for r in found.get(&source).into_iter().flatten() {
                if let Some(slot) = r.position.parse::<usize>().ok().and_then(|i| have.get_mut(i)) {
                    *slot = Some(r.at);
                }
            }
            let recovered = have.iter().flatten().count();
            tracing::info!(key, recovered, total = quotes.len(), "took over an abandoned idempotency key");
            have
        }
    };
    let missing: Vec<usize> = have.iter().enumerate().filter(|(_, p)| p.is_none()).map(|(i, _)| i).collect();
    let records: Vec<NewRecord> = missing
        .iter()
        .map(|&i| {
            let q = &quotes[i];
            NewRecord::new(q.symbol.clone(), q.to_json())
                .with_header(SOURCE_HEADER, source.clone())
                .with_header(POSITION_HEADER, i.to_string())
        })
        .collect();
    if !records.is_empty() {
        match append_counted(state, records).await {
            Ok(positions) => {
                for (i, p) in missing.iter().zip(positions) {
                    have[*i] = Some(p);
                }
            }
            Err(e) => return abandon(state, key, e).await,
        }
    }
    let positions: Vec<LogPosition> = have.into_iter().flatten().collect();
    let json = accepted_json(&positions);
    if let Err(e) = state.store.complete_idempotency_key(key, StatusCode::ACCEPTED.as_u16(), &String::from_utf8_lossy(&json)).await {
        // The events are appended and durable; a retry would take the claim over and find them.
        tracing::warn!(error = %e, "could not record an idempotency key's answer");
    }
    accepted_response(json)
}

async fn abandon<L: EventLog>(state: &IngestState<L>, key: &str, e: prism_core::log::LogError) -> Response {
    if let Err(store) = state.store.abandon_idempotency_key(key).await {
        tracing::warn!(error = %store, "could not release an idempotency key");
    }
    log_failed(e)
}

fn in_progress() -> Response {
    refused(StatusCode::CONFLICT, "a request with this Idempotency-Key is in progress; retry later", Vec::new())
}

fn reused() -> Response {
    refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "this Idempotency-Key was used with another request body; use a new key per batch",
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(key_of(&h), Ok(None));
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("\"8e03978e-40d5-43e8-bc93-6894a57f9324\""));
        assert_eq!(key_of(&h), Ok(Some("8e03978e-40d5-43e8-bc93-6894a57f9324".into())));
        for bad in ["", "\"\"", "a b"] {
            h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(bad));
            assert!(key_of(&h).is_err(), "{bad:?}");
        }
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&"k".repeat(256)).expect("header"));
        assert!(key_of(&h).is_err());
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k1"));
        h.append(IDEMPOTENCY_KEY, HeaderValue::from_static("k2"));
        assert!(key_of(&h).is_err());
        assert_ne!(request_hash(b"{\"a\":1}"), request_hash(b"{\"a\":2}"));
    }
}
