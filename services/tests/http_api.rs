//! The HTTP API's contract with clients: documented errors for bad input, nothing appended
//! for a refused batch, accepted events visible in the realtime view, and the committed
//! OpenAPI document in step with the code.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn total_log_end(up: &Running) -> i64 {
    let (_, status) = up.get("/v1/status").await;
    status["partitions"].as_array().expect("partitions").iter().map(|p| p["log_end_offset"].as_i64().unwrap_or(0)).sum()
}

async fn post(up: &Running, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = up
        .client
        .post(format!("{}/v1/events/quotes", up.base))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("POST");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_bad_input_and_serves_good_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.feed.no_feed = true;
    config.deployment.partitions = 2;
    let up = start(config).await;
    assert_eq!(total_log_end(&up).await, 0);

    // Each bad body: 400 naming the line and the reason, nothing appended.
    let good = r#"{"symbol":"ACME","ts":"2024-01-02T14:30:00Z","price":"10.50","size":100}"#;
    let cases: Vec<(String, usize, &str)> = vec![
        ("{not json".to_string(), 1, "malformed"),
        (format!("{good}\n{{\"symbol\":\"ACME\",\"ts\":1704205800000,\"price\":10.1234567,\"size\":1}}"), 2, "6 decimal"),
        (format!("{good}\n{good}\n{{\"symbol\":\"ACME\",\"ts\":1704205800000,\"price\":10,\"size\":-5}}"), 3, "size"),
        (r#"{"symbol":"ACME","ts":1704205800000,"price":"0","size":5}"#.to_string(), 1, "price"),
        (r#"{"symbol":"AC ME","ts":1704205800000,"price":"1","size":5}"#.to_string(), 1, "symbol"),
        (String::new(), 1, "empty"),
    ];
    for (body, bad_line, reason) in cases {
        let (code, answer) = post(&up, body.clone()).await;
        assert_eq!(code, 400, "{body}: {answer}");
        let lines = answer["lines"].as_array().expect("lines");
        assert_eq!(lines.len(), 1, "{answer}");
        assert_eq!(lines[0]["line"], bad_line, "{answer}");
        assert!(lines[0]["reason"].as_str().unwrap_or("").contains(reason), "{answer}");
        assert!(answer["error"].as_str().unwrap_or("").contains("nothing was appended"), "{answer}");
    }
    // A body over the limit (1 MiB in tests): 413 with a JSON reason.
    let huge = format!("{good}\n").repeat((1 << 20) / good.len() + 10);
    let (code, answer) = post(&up, huge).await;
    assert_eq!(code, 413, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    assert_eq!(total_log_end(&up).await, 0, "refused input appended nothing");

    // A valid batch: 202 with one offset per event, in input order.
    let batch = [
        r#"{"symbol":"ACME","ts":"2024-01-02T14:30:00Z","price":"10.50","size":100}"#,
        r#"{"symbol":"ACME","ts":1704205815000,"price":10.75,"size":50,"bid":"10.74","ask":"10.76","exchange":"XNAS"}"#,
        r#"{"symbol":"ACME","ts":"2024-01-02T14:31:10Z","price":"10.25","size":10}"#,
        r#"{"symbol":"BOLT","ts":"2024-01-02T14:30:05Z","price":"99.999999","size":1}"#,
    ]
    .join("\n");
    let (code, answer) = post(&up, batch).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["accepted"], 4);
    assert_eq!(answer["offsets"].as_array().map(|a| a.len()), Some(4));
    assert_eq!(total_log_end(&up).await, 4);
    // A JSON array with one bad item is refused whole, naming the item.
    let (code, answer) = post(&up, r#"[{"symbol":"BOLT","ts":1,"price":1,"size":1},{"symbol":"BOLT","ts":1,"price":1}]"#).await;
    assert_eq!(code, 400, "{answer}");
    assert_eq!(answer["lines"][0]["line"], 2, "{answer}");
    assert_eq!(total_log_end(&up).await, 4);
    // One JSON object (not NDJSON) is accepted too.
    let (code, _) = post(&up, "{\n  \"symbol\": \"BOLT\", \"ts\": 1704205806000,\n  \"price\": 100, \"size\": 2\n}").await;
    assert_eq!(code, 202);

    wait_caught_up(&up.client, &up.base, false, Duration::from_secs(60)).await;
    let (code, bars) = up.get("/v1/bars/ACME?interval=1m").await;
    assert_eq!(code, 200, "{bars}");
    assert_eq!(bars["architecture"], "lambda");
    assert_eq!(bars["batch_horizon"], Value::Null, "no batch run yet");
    assert_eq!(bars["realtime_watermark"], "2024-01-02T14:31:05Z");
    assert_eq!(
        bars["bars"],
        json!([
            {"start": "2024-01-02T14:30:00Z", "open": "10.500000", "high": "10.750000", "low": "10.500000",
             "close": "10.750000", "volume": 150, "notional": "1587.500000", "vwap": "10.583333", "trades": 2, "layer": "realtime"},
            {"start": "2024-01-02T14:31:00Z", "open": "10.250000", "high": "10.250000", "low": "10.250000",
             "close": "10.250000", "volume": 10, "notional": "102.500000", "vwap": "10.250000", "trades": 1, "layer": "realtime"}
        ])
    );
    let (_, d1) = up.get("/v1/bars/ACME?interval=1d&from=2024-01-02&to=2024-01-02").await;
    assert_eq!(d1["bars"][0]["volume"], 160);
    assert_eq!(d1["bars"][0]["close"], "10.250000");

    // Query errors: 404 for an unknown symbol, 400 for bad parameters, JSON bodies throughout.
    for (path, code) in [
        ("/v1/bars/NOSUCH", 404),
        ("/v1/bars/ACME?interval=2m", 400),
        ("/v1/bars/ACME?from=yesterday", 400),
        ("/v1/bars/ACME?from=2024-01-03&to=2024-01-02", 400),
        ("/v1/bars/ACME?limit=0", 400),
        ("/v1/bars/ACME?limit=abc", 400),
        ("/v1/bars/ACME?from=-9223372036854775808", 200),
        ("/v1/bars/ACME?to=9223372036854775807&from=-9223372036854775808", 200),
        ("/v1/bars/AC%20ME", 400),
        ("/v1/nothing-here", 404),
        ("/v1/bars/", 404),
    ] {
        let (got, body) = up.get(path).await;
        assert_eq!(got, code, "{path}: {body}");
        assert!(code == 200 || body["error"].is_string(), "{path}: {body}");
    }
    let (_, status) = up.get("/v1/status").await;
    let http = status["ingest"].as_array().expect("ingest").iter().find(|s| s["source"] == "http").cloned().expect("http counters");
    assert_eq!(http["accepted"], 5);
    assert!(http["refused"].as_i64().unwrap_or(0) >= 6, "{http}");

    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let resp = up.client.get(format!("{}{path}", up.base)).send().await.expect("GET");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let metrics = up.client.get(format!("{}/metrics", up.base)).send().await.expect("GET").text().await.expect("text");
    assert!(metrics.contains("prism_ingest_events_appended_total"), "{metrics}");
    // Every metric family Prism emits has HELP text, whichever layer emits it.
    for family in ["prism_ingest_events_appended_total", "prism_speed_events_total", "prism_speed_commits_total"] {
        if metrics.contains(&format!("\n{family}")) {
            assert!(metrics.contains(&format!("# HELP {family} ")), "{family} has no HELP text: {metrics}");
        }
    }
    let families: Vec<&str> =
        metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).collect();
    assert!(!families.is_empty(), "{metrics}");
    for family in families {
        assert!(metrics.contains(&format!("# HELP {family} ")), "{family} has no HELP text: {metrics}");
    }
    up.stop().await;
}

#[test]
fn committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let committed = std::fs::read_to_string(&path).expect("docs/openapi.json");
    let generated = prism::app::api_doc().to_pretty_json().expect("json");
    let first_difference = committed
        .lines()
        .zip(generated.lines())
        .enumerate()
        .find(|(_, (c, g))| c != g)
        .map(|(i, (c, g))| format!("line {}: committed {c:?}, code {g:?}", i + 1));
    assert!(
        committed.trim_end() == generated.trim_end(),
        "docs/openapi.json is stale ({}): run `cargo run -p prism -- openapi > docs/openapi.json`",
        first_difference.unwrap_or_else(|| "lengths differ".into())
    );
}

/// With `PRISM_API_TOKEN` and `PRISM_READ_TOKEN` set, `prism up` answers writes and admin calls
/// only with the API token, reads with either token, operations endpoints without one, and its
/// OpenAPI document declares the bearer scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_guard_writes_admin_and_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.feed.no_feed = true;
    config.auth.api_token = Some("write-s3cret".into());
    config.auth.read_token = Some("read-s3cret".into());
    let up = start(config).await;
    let body = r#"{"symbol":"ACME","ts":"2024-01-02T14:30:00Z","price":"10.50","size":100}"#;
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = up.client.request(method, format!("{}{path}", up.base)).header("content-type", "application/x-ndjson");
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request
    };
    let code = |r: reqwest::Response| r.status().as_u16();
    let post = send(reqwest::Method::POST, "/v1/events/quotes", None).body(body).send().await.expect("POST");
    assert_eq!(post.status().as_u16(), 401);
    assert!(post.headers().get("www-authenticate").is_some_and(|v| v.to_str().unwrap_or("").starts_with("Bearer")));
    let reason: Value = post.json().await.expect("JSON");
    assert!(reason["error"].as_str().unwrap_or("").contains("Bearer"), "{reason}");
    for (token, want) in [(Some("read-s3cret"), 401), (Some("write-s3cret"), 202)] {
        let r = send(reqwest::Method::POST, "/v1/events/quotes", token).body(body).send().await.expect("POST");
        assert_eq!(code(r), want, "POST with {token:?}");
    }
    for (token, want) in [(None, 401), (Some("read-s3cret"), 401), (Some("write-s3cret"), 201)] {
        let r = send(reqwest::Method::POST, "/v1/admin/batch-runs", token).send().await.expect("POST");
        assert_eq!(code(r), want, "admin with {token:?}");
    }
    for (token, want) in [(None, 401), (Some("nope"), 401), (Some("read-s3cret"), 200), (Some("write-s3cret"), 200)] {
        let r = send(reqwest::Method::GET, "/v1/status", token).send().await.expect("GET");
        assert_eq!(code(r), want, "read with {token:?}");
    }
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(code(send(reqwest::Method::GET, open, None).send().await.expect("GET")), 200, "{open}");
    }
    let doc: Value = send(reqwest::Method::GET, "/openapi.json", None).send().await.expect("GET").json().await.expect("JSON");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer", "{}", doc["components"]);
    assert_eq!(doc["paths"]["/v1/admin/batch-runs"]["post"]["security"], json!([{"bearer": []}]));
    assert_eq!(doc["paths"]["/v1/status"]["get"]["security"], json!([{}, {"bearer": []}]));
    up.stop().await;
}
