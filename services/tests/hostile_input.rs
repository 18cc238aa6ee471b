//! Nothing on input panics the server or gets past validation: arbitrary bodies at the ingest
//! endpoint and arbitrary paths and query strings at `/v1/bars` always get a 2xx or 4xx answer
//! with a JSON body, and refused input appends nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use prism::app::{build_app, AppParts};
use prism_core::config::Architecture;
use prism_core::event::QUOTES_TOPIC;
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::EventLog;
use prism_core::store::ViewStore;
use proptest::prelude::*;
use tower::ServiceExt;

struct Fixture {
    app: axum::Router,
    log: Arc<EmbeddedLog>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log"));
    log.ensure_topic(QUOTES_TOPIC, 2).await.expect("topic");
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
    let app = build_app(AppParts {
        log: log.clone(),
        store,
        architecture: Architecture::Lambda,
        views: prism_core::view::ViewRegistry::standard(5_000),
        segments: None,
        batch_trigger: None,
        replays: None,
        max_body_bytes: 64 << 10,
        idempotency_window: std::time::Duration::from_secs(3600),
        auth: prism_serving::auth::AuthArgs::default(),
    });
    Fixture { app, log, _dir: dir }
}

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = app.clone().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// Bodies that look almost like quotes: fragments of valid JSON glued at random.
fn near_quotes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        "{",
        "}",
        "\"symbol\":",
        "\"AAPL\"",
        "\"ts\":",
        "1704205800000",
        "\"2024-01-02T14:30:00Z\"",
        "\"price\":",
        "1.5",
        "1.1234567",
        "\"-3\"",
        "1e400",
        "\"size\":",
        "100",
        "-1",
        "9223372036854775808",
        ",",
        "\n",
        "[",
        "]",
        "null",
        "\"bid\":",
        "\u{0}",
        "\u{feff}",
        "\"\\ud800\"",
        "true",
    ]);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(pieces, 0..40).prop_map(|p| p.concat().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn ingest_answers_every_body_without_panicking(body in near_quotes()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let f = fixture().await;
            let request = Request::post("/v1/events/quotes").body(Body::from(body.clone())).expect("request");
            let (status, answer) = call(&f.app, request).await;
            let appended: i64 = f.log.end_offsets(QUOTES_TOPIC).await.expect("ends").iter().sum();
            match status {
                StatusCode::ACCEPTED => assert_eq!(answer["accepted"].as_i64(), Some(appended), "{answer}"),
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                    assert_eq!(appended, 0, "refused input appended nothing");
                    assert!(answer["error"].is_string(), "{answer}");
                }
                other => panic!("unexpected {other} for {:?}: {answer}", String::from_utf8_lossy(&body)),
            }
        });
    }

    #[test]
    fn bars_answer_every_query_without_panicking(
        symbol in "[A-Za-z0-9%._^/ -]{0,12}",
        query in proptest::collection::vec(
            (prop::sample::select(vec!["interval", "from", "to", "limit", "x"]),
             prop::sample::select(vec!["1m", "1d", "2m", "", "0", "-1", "99999999999999999999", "2013-03-01",
                 "2013-02-30", "1970-01-01T00:00:00Z", "-9223372036854775808", "9223372036854775807", "%ZZ", "100001"])),
            0..5),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let f = fixture().await;
            let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let uri = format!("/v1/bars/{}?{}", symbol.replace(' ', "%20"), qs.join("&"));
            let Ok(request) = Request::get(uri.as_str()).body(Body::empty()) else { return };
            let (status, answer) = call(&f.app, request).await;
            assert!(status.is_success() || status.is_client_error(), "{uri}: {status} {answer}");
            if !status.is_success() {
                assert!(answer["error"].is_string(), "{uri}: {answer}");
            }
        });
    }
}
