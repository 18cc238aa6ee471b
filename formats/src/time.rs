//! Event-time fields on input: UTC milliseconds since the Unix epoch, or RFC 3339 text
//! (DESIGN §3).

use chrono::DateTime;
use serde::de::{self, Deserialize, Deserializer};

/// Serde helper for event-time fields: accepts integer milliseconds or an RFC 3339 string and
/// gives UTC ms.
///
/// Errors: a serde error naming the value for a fraction, a non-RFC 3339 string or another type.
pub fn deserialize_ts_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| de::Error::custom(format!("ts {n} is not whole milliseconds"))),
        serde_json::Value::String(s) => DateTime::parse_from_rfc3339(&s)
            .map(|dt| dt.timestamp_millis())
            .map_err(|e| de::Error::custom(format!("ts {s:?} is not RFC 3339: {e}"))),
        other => Err(de::Error::custom(format!("ts must be milliseconds or an RFC 3339 string, got {other}"))),
    }
}
