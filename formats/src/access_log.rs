//! Access-log lines → the fields of a `prism.access_logs` event (DESIGN §3), for the log-file
//! source (issue 9).
//!
//! Formats, from the Apache HTTP Server documentation (mod_log_config, "Common Log Format" and
//! "Combined Log Format"; nginx's default `combined` is the same):
//!
//! ```text
//! common:   %h %l %u %t "%r" %>s %b
//! combined: %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"
//! ```
//!
//! - `%l` (ident) and `%u` (user) are `-` when absent; `%b` is `-` for no body (0 bytes).
//! - `%t` is `[dd/Mon/yyyy:HH:MM:SS ±zzzz]`; the event time is that instant in UTC ms.
//! - `%r` is the request line, `METHOD PATH PROTOCOL`; it may be empty (`""`, a client that
//!   sent nothing) or not HTTP at all: then the method, path and protocol are absent and the line
//!   still counts.
//! - Quoted fields escape `"` as `\"` (Apache) or `\x22` (nginx); both are read.
//! - Fields after the combined ones (many servers append e.g. a response time or a virtual
//!   host) are tolerated and ignored.
//!
//! A line that is a JSON object is read as the event itself (`ts` as RFC 3339 or UTC ms, and
//! the fields above by name). A line that fits neither is refused with the reason, for the
//! dead-letter topic.

use chrono::DateTime;
use serde::{Deserialize, Serialize};

/// One parsed access-log line: the fields of a `prism.access_logs` event (DESIGN §3) without
/// its source file and line number, which the tailer adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLine {
    /// When the request was logged, UTC ms.
    #[serde(deserialize_with = "crate::time::deserialize_ts_ms")]
    pub ts: i64,
    /// The client (`%h`): an address or a host name.
    pub host: String,
    /// RFC 1413 identity (`%l`); `None` for `-`.
    #[serde(default)]
    pub ident: Option<String>,
    /// Authenticated user (`%u`); `None` for `-`.
    #[serde(default)]
    pub user: Option<String>,
    /// Request method; `None` when the request line was empty or not HTTP.
    #[serde(default)]
    pub method: Option<String>,
    /// Request target as sent (not decoded).
    #[serde(default)]
    pub path: Option<String>,
    /// `HTTP/1.1` etc.; `None` for an HTTP/0.9 request line (method and path only).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Final status (`%>s`), 100–599.
    pub status: u16,
    /// Response body bytes (`%b`; 0 for `-`).
    #[serde(default)]
    pub bytes: u64,
    /// `Referer` header (combined format); `None` for `-` or absent.
    #[serde(default)]
    pub referer: Option<String>,
    /// `User-Agent` header (combined format); `None` for `-` or absent.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Time taken to serve the request, ms, when the line says (JSON lines only).
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// Why a line was refused (the reason sent to the dead-letter topic with file:line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessLineError {
    /// The line does not have the common/combined shape.
    #[error("not a common or combined access-log line: {0}")]
    Shape(String),
    /// A field has the right place but a bad value.
    #[error("bad {field}: {reason}")]
    Field {
        /// The field (`time`, `status`, `bytes`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON line that is not an access event.
    #[error("not an access event: {0}")]
    Json(String),
}

/// One field of a line: a bare token, a `"quoted"` string (unescaped) or a `[bracketed]` one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Bare(String),
    Quoted(String),
    Bracketed(String),
}

/// Parses one line (without its line ending). Errors: [`AccessLineError`] naming what is wrong.
pub fn parse_line(line: &str) -> Result<AccessLine, AccessLineError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim_start().starts_with('{') {
        return serde_json::from_str::<AccessLine>(line).map_err(|e| AccessLineError::Json(e.to_string())).and_then(checked);
    }
    let fields = split_fields(line)?;
    let bare = |i: usize, name: &str| match fields.get(i) {
        Some(Field::Bare(s)) => Ok(s.clone()),
        _ => Err(AccessLineError::Shape(format!("field {} ({name}) missing or not a bare token", i + 1))),
    };
    let host = bare(0, "host")?;
    let ident = dash_none(bare(1, "ident")?);
    let user = dash_none(bare(2, "user")?);
    let ts = match fields.get(3) {
        Some(Field::Bracketed(t)) => parse_time(t)?,
        _ => return Err(AccessLineError::Shape("field 4 (time) is not [dd/Mon/yyyy:HH:MM:SS ±zzzz]".into())),
    };
    let request = match fields.get(4) {
        Some(Field::Quoted(r)) => r.clone(),
        _ => return Err(AccessLineError::Shape("field 5 (request) is not a quoted string".into())),
    };
    let status = bare(5, "status")?;
    let status: u16 = status
        .parse()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| AccessLineError::Field { field: "status", reason: format!("{status:?} is not an HTTP status 100-599") })?;
    let bytes = bare(6, "bytes")?;
    let bytes = if bytes == "-" {
        0
    } else {
        bytes
            .parse::<u64>()
            .map_err(|_| AccessLineError::Field { field: "bytes", reason: format!("{bytes:?} is not a byte count or -") })?
    };
    let quoted = |i: usize| match fields.get(i) {
        Some(Field::Quoted(s)) => dash_none(s.clone()),
        _ => None,
    };
    let (method, path, protocol) = request_parts(&request);
    Ok(AccessLine {
        ts,
        host,
        ident,
        user,
        method,
        path,
        protocol,
        status,
        bytes,
        referer: quoted(7),
        user_agent: quoted(8),
        duration_ms: None,
    })
}

/// A JSON line's values checked as a text line's are.
fn checked(line: AccessLine) -> Result<AccessLine, AccessLineError> {
    if !(100..=599).contains(&line.status) {
        return Err(AccessLineError::Field { field: "status", reason: format!("{} is not an HTTP status 100-599", line.status) });
    }
    if line.host.is_empty() {
        return Err(AccessLineError::Json("host is empty".into()));
    }
    Ok(line)
}

fn dash_none(s: String) -> Option<String> {
    (s != "-" && !s.is_empty()).then_some(s)
}

/// `METHOD PATH PROTOCOL`, `METHOD PATH` (HTTP/0.9), or anything else (all absent).
fn request_parts(request: &str) -> (Option<String>, Option<String>, Option<String>) {
    let parts: Vec<&str> = request.split(' ').filter(|p| !p.is_empty()).collect();
    let is_method = |m: &str| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
    match parts.as_slice() {
        [m, p, v] if is_method(m) && v.starts_with("HTTP/") => (Some(m.to_string()), Some(p.to_string()), Some(v.to_string())),
        [m, p] if is_method(m) => (Some(m.to_string()), Some(p.to_string()), None),
        _ => (None, None, None),
    }
}

/// `dd/Mon/yyyy:HH:MM:SS ±zzzz` → UTC ms.
fn parse_time(t: &str) -> Result<i64, AccessLineError> {
    DateTime::parse_from_str(t, "%d/%b/%Y:%H:%M:%S %z")
        .map(|d| d.timestamp_millis())
        .map_err(|e| AccessLineError::Field { field: "time", reason: format!("{t:?}: {e} (want dd/Mon/yyyy:HH:MM:SS ±zzzz)") })
}

/// Splits a line into bare, quoted and bracketed fields separated by spaces.
fn split_fields(line: &str) -> Result<Vec<Field>, AccessLineError> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, 'x')) => {
                                // nginx: \xHH
                                let hex: String = [chars.next(), chars.next()].iter().flatten().map(|(_, c)| *c).collect();
                                match u8::from_str_radix(&hex, 16) {
                                    Ok(b) if b.is_ascii() => s.push(b as char),
                                    _ => {
                                        s.push_str("\\x");
                                        s.push_str(&hex);
                                    }
                                }
                            }
                            Some((_, escaped)) => s.push(escaped),
                            None => s.push('\\'),
                        },
                        other => s.push(other),
                    }
                }
                if !closed {
                    return Err(AccessLineError::Shape(format!("unterminated quoted field at column {}", i + 1)));
                }
                out.push(Field::Quoted(s));
            }
            '[' => {
                let rest = &line[i + 1..];
                let Some(end) = rest.find(']') else {
                    return Err(AccessLineError::Shape(format!("unterminated [ at column {}", i + 1)));
                };
                out.push(Field::Bracketed(rest[..end].to_string()));
                // Skip past the closing bracket.
                while let Some(&(j, _)) = chars.peek() {
                    if j > i + end + 1 {
                        break;
                    }
                    chars.next();
                }
            }
            _ => {
                let rest = &line[i..];
                let end = rest.find([' ', '\t']).unwrap_or(rest.len());
                out.push(Field::Bare(rest[..end].to_string()));
                while let Some(&(j, _)) = chars.peek() {
                    if j >= i + end {
                        break;
                    }
                    chars.next();
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2000-10-10T20:55:36Z, the Apache documentation's example instant.
    const APACHE_EXAMPLE_MS: i64 = 971_211_336_000;

    #[test]
    fn reads_the_apache_documentation_examples() {
        let common =
            parse_line(r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#).expect("common");
        assert_eq!(common.ts, APACHE_EXAMPLE_MS);
        assert_eq!((common.host.as_str(), common.ident.as_deref(), common.user.as_deref()), ("127.0.0.1", None, Some("frank")));
        assert_eq!(
            (common.method.as_deref(), common.path.as_deref(), common.protocol.as_deref()),
            (Some("GET"), Some("/apache_pb.gif"), Some("HTTP/1.0"))
        );
        assert_eq!((common.status, common.bytes, common.referer.as_deref(), common.user_agent.as_deref()), (200, 2326, None, None));
        let combined = parse_line(
            r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#,
        )
        .expect("combined");
        assert_eq!(combined.referer.as_deref(), Some("http://www.example.com/start.html"));
        assert_eq!(combined.user_agent.as_deref(), Some("Mozilla/4.08 [en] (Win98; I ;Nav)"));
        assert_eq!(common, AccessLine { referer: None, user_agent: None, ..combined });
    }

    #[test]
    fn tolerates_empty_requests_dashes_escapes_and_extra_fields() {
        let empty = parse_line(r#"10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "" 400 - "-" "-""#).expect("empty request");
        assert_eq!(
            (empty.method, empty.path, empty.protocol, empty.bytes, empty.referer, empty.user_agent),
            (None, None, None, 0, None, None)
        );
        assert_eq!(empty.ts, 1_704_067_200_000);
        let extra =
            parse_line(r#"h.example - - [01/Jan/2024:00:00:01 +0100] "POST /a?b=c HTTP/1.1" 201 12 "-" "curl/8" 0.004 vhost.example"#)
                .expect("extra fields");
        assert_eq!((extra.ts, extra.status, extra.user_agent.as_deref()), (1_704_063_601_000, 201, Some("curl/8")));
        let apache = parse_line(r#"::1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "say \"hi\"""#).expect("apache escape");
        assert_eq!(apache.user_agent.as_deref(), Some(r#"say "hi""#));
        let nginx =
            parse_line(r#"::1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "say \x22hi\x22""#).expect("nginx escape");
        assert_eq!(nginx.user_agent.as_deref(), Some(r#"say "hi""#));
        let junk_request =
            parse_line(r#"1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "\x16\x03\x01" 400 0"#).expect("a TLS hello on the HTTP port");
        assert_eq!((junk_request.method, junk_request.status), (None, 400));
        let http09 = parse_line(r#"1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET /" 200 0"#).expect("HTTP/0.9");
        assert_eq!((http09.method.as_deref(), http09.path.as_deref(), http09.protocol), (Some("GET"), Some("/"), None));
    }

    #[test]
    fn json_lines_are_events() {
        let line = parse_line(
            r#"{"ts":"2024-01-01T00:00:00Z","host":"10.0.0.2","method":"GET","path":"/x","status":503,"bytes":7,"duration_ms":31}"#,
        )
        .expect("json");
        assert_eq!((line.ts, line.status, line.duration_ms, line.user), (1_704_067_200_000, 503, Some(31), None));
        let refused = parse_line(r#"{"ts":1,"host":"h","status":42}"#).expect_err("status out of range");
        assert!(refused.to_string().contains("status"), "{refused}");
        assert!(matches!(parse_line(r#"{"host":"h"}"#), Err(AccessLineError::Json(_))));
    }

    #[test]
    fn refuses_malformed_lines_with_a_reason() {
        let cases = [
            ("", "field 1"),
            (r#"1.2.3.4 - - 01/Jan/2024 "GET / HTTP/1.1" 200 1"#, "time"),
            (r#"1.2.3.4 - - [32/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1"#, "bad time"),
            (r#"1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] GET / HTTP/1.1 200 1"#, "request"),
            (r#"1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 99 1"#, "bad status"),
            (r#"1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 12kB"#, "bad bytes"),
            (r#"1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1 200 1"#, "unterminated"),
            (r#"1.2.3.4 - - [01/Jan/2024:00:00:00 +0000 "GET / HTTP/1.1" 200 1"#, "unterminated ["),
        ];
        for (line, want) in cases {
            let e = parse_line(line).expect_err(line).to_string();
            assert!(e.contains(want), "{line:?}: {e}");
        }
    }

    proptest! {
        /// Hostile input never panics: any line is parsed or refused.
        #[test]
        fn any_line_is_parsed_or_refused(line in "\\PC{0,200}") {
            let _ = parse_line(&line);
        }

        /// Any printable field values survive a combined line written the way Apache writes it.
        #[test]
        fn combined_lines_round_trip(
            host in "[a-z0-9.:]{1,20}",
            path in "/[!-~]{0,40}",
            status in 100u16..600,
            bytes in 0u64..10_000_000,
            agent in "[ -~]{1,40}",
            secs in 0i64..2_000_000_000,
        ) {
            let t = DateTime::from_timestamp(secs, 0).expect("instant");
            // Apache escapes `"` and `\` in quoted fields.
            let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let line = format!(
                "{host} - - [{}] \"GET {} HTTP/1.1\" {status} {bytes} \"-\" \"{}\"",
                t.format("%d/%b/%Y:%H:%M:%S %z"),
                escape(&path),
                escape(&agent)
            );
            let parsed = parse_line(&line).expect("a valid line");
            prop_assert_eq!(parsed.ts, secs * 1000);
            prop_assert_eq!(parsed.path.as_deref(), Some(path.as_str()));
            prop_assert_eq!((parsed.status, parsed.bytes), (status, bytes));
            prop_assert_eq!(parsed.user_agent.as_deref(), if agent == "-" { None } else { Some(agent.as_str()) });
        }
    }
}
