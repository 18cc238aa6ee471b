//! `Idempotency-Key` on HTTP ingest: a retried batch appends nothing new and gets the first
//! answer again, across a restart; another body under the same key is refused; a request that
//! died after appending part of its batch is completed by the retry without duplicates.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use prism_core::event::QUOTES_TOPIC;
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::{EventLog, LogRecord, NewRecord};
use prism_core::store::{IdempotencyClaim, ViewStore};
use prism_ingest::append::{POSITION_HEADER, SOURCE_HEADER};
use prism_ingest::http::{router, IngestState};
use serde_json::Value;
use tower::ServiceExt;

fn quote(i: usize) -> String {
    let symbol = ["AAA", "BBB", "CCC", "DDD"][i % 4];
    format!(r#"{{"symbol":"{symbol}","ts":{},"price":"10.{i:02}","size":{}}}"#, 1_700_000_000_000i64 + i as i64 * 1000, i + 1)
}

fn body(n: usize, salt: usize) -> String {
    (0..n).map(|i| quote(i + salt)).collect::<Vec<_>>().join("\n")
}

async fn post(app: &axum::Router, key: Option<&str>, body: &str) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::post("/v1/events/quotes");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = app.clone().oneshot(request.body(Body::from(body.to_string())).expect("request")).await.expect("answer");
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap_or("").to_string());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, replayed, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn all_records(log: &EmbeddedLog) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for p in 0..log.end_offsets(QUOTES_TOPIC).await.expect("ends").len() {
        out.extend(log.read(QUOTES_TOPIC, p as i32, 0, 100_000, Duration::ZERO).await.expect("read"));
    }
    out
}

fn positions(answer: &Value) -> Vec<(i64, i64)> {
    answer["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| (o["partition"].as_i64().expect("partition"), o["offset"].as_i64().expect("offset")))
        .collect()
}

#[tokio::test]
async fn a_retried_batch_is_appended_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log"));
    log.ensure_topic(QUOTES_TOPIC, 3).await.expect("topic");
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
    let app = router(IngestState::new(log.clone(), store.clone(), Duration::from_secs(3600)), 1 << 20);

    let batch = body(10, 0);
    let (status, replayed, first) = post(&app, Some("batch-1"), &batch).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(replayed, None);
    assert_eq!(first["accepted"], 10);
    assert_eq!(all_records(&log).await.len(), 10);

    // The retry: the first answer again, nothing appended.
    let (status, replayed, again) = post(&app, Some("batch-1"), &batch).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, first);
    assert_eq!(all_records(&log).await.len(), 10);

    // The same key with another body: 422, nothing appended. A malformed key: 400.
    let (status, _, answer) = post(&app, Some("batch-1"), &body(10, 1)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, _, answer) = post(&app, Some("two words"), &batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(all_records(&log).await.len(), 10);

    // Without a key the same body is appended again (at-least-once from a client that retries).
    let (status, _, _) = post(&app, None, &batch).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(all_records(&log).await.len(), 20);

    // After a restart (a new process: new state, the same store), the key is still remembered.
    drop(app);
    store.close().await;
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
    let app = router(IngestState::new(log.clone(), store.clone(), Duration::from_secs(3600)), 1 << 20);
    let (status, replayed, again) = post(&app, Some("batch-1"), &batch).await;
    assert_eq!((status, replayed.as_deref()), (StatusCode::ACCEPTED, Some("true")));
    assert_eq!(again, first);
    assert_eq!(all_records(&log).await.len(), 20);

    // A key past the window is forgotten: a new claim.
    let now = prism_core::time::now_ms();
    let claim = store.claim_idempotency_key("batch-1", "x", &[], now + 7_200_000, 3_600_000, 30_000).await.expect("claim");
    assert_eq!(claim, IdempotencyClaim::Claimed);
}

#[tokio::test]
async fn a_retry_completes_a_batch_whose_request_died_midway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log"));
    log.ensure_topic(QUOTES_TOPIC, 3).await.expect("topic");
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
    // Other traffic before.
    log.append(QUOTES_TOPIC, vec![NewRecord::new("ZZZ", quote(99))]).await.expect("append");

    // A request claimed the key, appended items 1 and 3 of its 6 and died.
    let batch = body(6, 0);
    let hash = prism_ingest::http::idempotency::request_hash(batch.as_bytes());
    let ends = log.end_offsets(QUOTES_TOPIC).await.expect("ends");
    let claimed = store.claim_idempotency_key("k-7", &hash, &ends, prism_core::time::now_ms(), 3_600_000, 30_000).await.expect("claim");
    assert_eq!(claimed, IdempotencyClaim::Claimed);
    let lines: Vec<String> = (0..6).map(quote).collect();
    let symbols = ["AAA", "BBB", "CCC", "DDD"];
    let partial: Vec<NewRecord> = [1usize, 3]
        .iter()
        .map(|&i| {
            NewRecord::new(symbols[i % 4], lines[i].clone())
                .with_header(SOURCE_HEADER, "http:k-7")
                .with_header(POSITION_HEADER, i.to_string())
        })
        .collect();
    let landed = log.append(QUOTES_TOPIC, partial).await.expect("append");
    // Still in progress (fresh claim): 409.
    let app = router(IngestState::new(log.clone(), store.clone(), Duration::from_secs(3600)), 1 << 20);
    let (status, _, answer) = post(&app, Some("k-7"), &batch).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    // The holder is gone (its claim stale): the retry appends the 4 missing items only.
    store.abandon_idempotency_key("k-7").await.expect("abandon");
    let (status, replayed, answer) = post(&app, Some("k-7"), &batch).await;
    assert_eq!((status, replayed), (StatusCode::ACCEPTED, None), "{answer}");
    let got = positions(&answer);
    assert_eq!(got.len(), 6);
    assert_eq!(got[1], (landed[0].partition as i64, landed[0].offset));
    assert_eq!(got[3], (landed[1].partition as i64, landed[1].offset));
    let records = all_records(&log).await;
    assert_eq!(records.len(), 1 + 6, "each item once, plus the other traffic");
    // Each answered position holds its item.
    for (i, (p, o)) in got.iter().enumerate() {
        let r = records.iter().find(|r| r.partition as i64 == *p && r.offset == *o).expect("answered position exists");
        let want: Value = serde_json::from_str(&lines[i]).expect("json");
        let have: Value = serde_json::from_slice(&r.value).expect("json");
        assert_eq!(have["size"], want["size"], "item {i}");
    }
    // And the retry after that is a replay.
    let (status, replayed, again) = post(&app, Some("k-7"), &batch).await;
    assert_eq!((status, replayed.as_deref()), (StatusCode::ACCEPTED, Some("true")));
    assert_eq!(again, answer);
    assert_eq!(all_records(&log).await.len(), 7);
}
