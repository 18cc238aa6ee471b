//! One poll over HTTP: GET the URL, read a 2xx body of at most [`MAX_RESPONSE_BYTES`].

use std::time::Duration;

/// Largest response body read (bytes); a larger one is an error of kind `too_large`.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a poll got no response body to read. `kind` is the `prism_poller_errors_total` label:
/// `connect` (no connection), `timeout` (no full answer within the request timeout), `status`
/// (a non-2xx answer), `too_large`, `body` (the body broke off) or `request` (any other
/// client error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchError {
    pub kind: &'static str,
    pub message: String,
}

/// The HTTP client of the poller: `timeout` per request (connecting included), plain HTTP or
/// HTTPS (rustls with the ring provider).
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    // The workspace builds reqwest without a crypto provider; a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("prism-quote-poller/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

fn error(e: reqwest::Error) -> FetchError {
    // `{:#}`-style: reqwest's Display hides the cause (connection refused, …).
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    FetchError { kind: classify(&e), message }
}

/// GETs `url` and returns its body.
///
/// Errors: [`FetchError`].
pub(crate) async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let mut response = client.get(url).header(reqwest::header::ACCEPT, "application/json").send().await.map_err(error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError { kind: "status", message: format!("HTTP {status}") });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(FetchError { kind: "too_large", message: format!("response larger than {MAX_RESPONSE_BYTES} bytes") });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
