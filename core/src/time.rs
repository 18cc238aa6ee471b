//! Event time (DESIGN §3): UTC milliseconds since the Unix epoch in memory and on the log;
//! RFC 3339 in JSON answers; RFC 3339 strings or integer milliseconds accepted as input.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Milliseconds in one minute.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in one UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// The wall clock now, UTC ms since the epoch (processing time, for audit columns; never used
/// as event time).
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Formats UTC milliseconds as RFC 3339 with a `Z` suffix (`2013-03-01T14:30:00Z`;
/// sub-second digits only when non-zero). Out-of-range values print as the raw number.
pub fn format_rfc3339(ts_ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ts_ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => ts_ms.to_string(),
    }
}

/// Parses an instant given as RFC 3339 (`2013-03-01T14:30:00Z`, any offset), a plain date
/// (`2013-03-01`, meaning 00:00 UTC) or integer milliseconds since the epoch.
///
/// Errors: a message naming the text and the accepted forms.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_millis());
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = date.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp_millis());
        }
    }
    Err(format!("{text:?} is not an instant: use RFC 3339 (2013-03-01T14:30:00Z), a date (2013-03-01) or milliseconds since the epoch"))
}

pub use prism_formats::time::deserialize_ts_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_362_148_200_000), "2013-03-01T14:30:00Z");
        assert_eq!(parse_instant("2013-03-01T14:30:00Z"), Ok(1_362_148_200_000));
        assert_eq!(parse_instant("2013-03-01T15:30:00+01:00"), Ok(1_362_148_200_000));
        assert_eq!(parse_instant("2013-03-01"), Ok(1_362_096_000_000));
        assert_eq!(parse_instant("1362148200000"), Ok(1_362_148_200_000));
        assert!(parse_instant("yesterday").is_err());
        assert!(parse_instant("2013-02-30").is_err());
    }
}
