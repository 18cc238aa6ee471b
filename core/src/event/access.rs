//! Access-log events on `prism.access_logs` (DESIGN §3), written by `prism ingest-logs` and
//! read by the `access` view.

use serde::{Deserialize, Serialize};

use super::{EventError, MAX_TS_MS, MIN_TS_MS};

/// Topic of parsed access-log lines, keyed by the client host.
pub const ACCESS_LOGS_TOPIC: &str = "prism.access_logs";

/// Longest accepted host, bytes (a DNS name is at most 253).
pub const MAX_HOST_LEN: usize = 255;

/// One access-log line (value JSON; key = `host`).
///
/// Shape: `{"ts": 1362148200000, "host": "203.0.113.9", "ident": null, "user": null, "method":
/// "GET", "path": "/index.html", "protocol": "HTTP/1.1", "status": 200, "bytes": 5120,
/// "referer": null, "user_agent": "curl/8.5.0", "duration_ms": 12, "source_file":
/// "/var/log/nginx/access.log", "line": 17}`. `ts` is the time in the line (the event time), UTC
/// ms on the log (RFC 3339 accepted on input); `bytes` is the response body size; `duration_ms`
/// is the time taken to serve the request, when the line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessEvent {
    /// When the request was logged (event time), UTC ms.
    #[serde(deserialize_with = "crate::time::deserialize_ts_ms")]
    pub ts: i64,
    /// The client (`%h`): an address or a host name; 1–255 bytes, no whitespace.
    pub host: String,
    /// RFC 1413 identity (`%l`), if any.
    #[serde(default)]
    pub ident: Option<String>,
    /// Authenticated user (`%u`), if any.
    #[serde(default)]
    pub user: Option<String>,
    /// Request method; `None` when the request line was empty or not HTTP.
    #[serde(default)]
    pub method: Option<String>,
    /// Request target as sent.
    #[serde(default)]
    pub path: Option<String>,
    /// `HTTP/1.1` etc., if the request line had one.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Final status, 100–599.
    pub status: u16,
    /// Response body bytes; 0 ..= 2⁶³−1.
    #[serde(default)]
    pub bytes: u64,
    /// `Referer` header, if logged.
    #[serde(default)]
    pub referer: Option<String>,
    /// `User-Agent` header, if logged.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Time taken to serve the request, ms, if logged.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The file the line was read from, as the tailer named it.
    #[serde(default)]
    pub source_file: Option<String>,
    /// The line's 1-based number in that file.
    #[serde(default)]
    pub line: Option<u64>,
}

impl AccessEvent {
    /// Parses and validates one JSON event. Errors: [`EventError`] with the reason.
    pub fn from_json(bytes: &[u8]) -> Result<AccessEvent, EventError> {
        let event: AccessEvent = serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
        event.validate()?;
        Ok(event)
    }

    /// Serializes to the log's JSON value.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and options always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks the rules serde cannot: host, status and ranges.
    ///
    /// Errors: [`EventError::Invalid`] naming the rule broken.
    pub fn validate(&self) -> Result<(), EventError> {
        let bad = |m: String| Err(EventError::Invalid(m));
        if self.host.is_empty() || self.host.len() > MAX_HOST_LEN || self.host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad(format!("host must be 1–{MAX_HOST_LEN} bytes without whitespace, got {:?}", self.host));
        }
        if !(100..=599).contains(&self.status) {
            return bad(format!("status must be an HTTP status 100–599, got {}", self.status));
        }
        if i64::try_from(self.bytes).is_err() {
            return bad(format!("bytes {} is too large", self.bytes));
        }
        if self.duration_ms.is_some_and(|d| i64::try_from(d).is_err()) {
            return bad("duration_ms is too large".into());
        }
        if !(MIN_TS_MS..=MAX_TS_MS).contains(&self.ts) {
            return bad(format!("ts {} ms is outside years 0001–9999", self.ts));
        }
        Ok(())
    }

    /// The status class: `1xx` … `5xx`.
    pub fn status_class(&self) -> &'static str {
        status_class(self.status)
    }
}

/// The class of an HTTP status (RFC 9110 §15): `1xx` … `5xx`; `other` outside 100–599.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let e = AccessEvent::from_json(br#"{"ts":"2013-03-01T14:30:00Z","host":"203.0.113.9","status":404,"bytes":10,"line":3}"#)
            .expect("valid");
        assert_eq!((e.ts, e.status_class(), e.line), (1_362_148_200_000, "4xx", Some(3)));
        assert_eq!(AccessEvent::from_json(&e.to_json()).expect("round trip"), e);
        for bad in [
            r#"{"ts":1,"host":"a b","status":200}"#,
            r#"{"ts":1,"host":"","status":200}"#,
            r#"{"ts":1,"host":"h","status":99}"#,
            r#"{"ts":1,"host":"h","status":200,"bytes":-1}"#,
            r#"{"ts":1,"host":"h","status":200,"bytes":9223372036854775808}"#,
            r#"{"ts":1,"host":"h","status":200,"extra":1}"#,
            r#"{"host":"h","status":200}"#,
        ] {
            assert!(AccessEvent::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
