//! Event time (DESIGN §3): UTC milliseconds since the Unix epoch in memory and on the log;
//! RFC 3339 in JSON answers; RFC 3339 strings or integer milliseconds accepted as input.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};

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
    UtcTime(ts_ms).to_string()
}

/// An instant, UTC ms since the epoch, that displays (and serializes) as [`format_rfc3339`]'s
/// text without allocating: answers of thousands of bars format a start per bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(pub i64);

impl std::fmt::Display for UtcTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(t) = DateTime::<Utc>::from_timestamp_millis(self.0) else { return write!(f, "{}", self.0) };
        if !(1..=9999).contains(&t.year()) {
            // Signed or five-digit years: chrono's own RFC 3339 text.
            return f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        // chrono gives the calendar fields; they are written into one buffer
        // (`YYYY-MM-DDTHH:MM:SS[.mmm]Z`) instead of through chrono's formatter, which builds a
        // `String` per call.
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, value: u32, digits: usize| {
            let mut v = value;
            for i in (at..at + digits).rev() {
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, t.year().unsigned_abs(), 4);
        put(5, t.month(), 2);
        put(8, t.day(), 2);
        put(11, t.hour(), 2);
        put(14, t.minute(), 2);
        put(17, t.second(), 2);
        let milli = t.timestamp_subsec_millis();
        let text = if milli == 0 {
            buf[19] = b'Z';
            &buf[..20]
        } else {
            put(20, milli, 3);
            &buf[..]
        };
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(text).map_err(|_| std::fmt::Error)?)
    }
}

impl serde::Serialize for UtcTime {
    /// As [`format_rfc3339`]'s string.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for UtcTime {
    /// From any form [`parse_instant`] accepts.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_instant(&text).map(UtcTime).map_err(serde::de::Error::custom)
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

    /// First ms of year 0001 and last ms of year 9999 (the written-by-hand range).
    const FIRST_MS: i64 = -62_135_596_800_000;
    const LAST_MS: i64 = 253_402_300_799_999;

    proptest::proptest! {
        /// The hand-written format is chrono's RFC 3339 (AutoSi, `Z`) across years 0001–9999
        /// and its edges, and the chrono fallback beyond.
        #[test]
        fn utc_time_formats_as_chrono_does(ms in proptest::prop_oneof![
            FIRST_MS..=LAST_MS,
            (FIRST_MS - 5_000)..(FIRST_MS + 5_000),
            (LAST_MS - 5_000)..(LAST_MS + 5_000),
            -3 * DAY_MS..3 * DAY_MS,
        ]) {
            let chrono = DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            proptest::prop_assert_eq!(Some(UtcTime(ms).to_string()), chrono);
        }
    }

    #[test]
    fn utc_time_serializes_as_a_string_and_reads_back() {
        let json = serde_json::to_string(&UtcTime(1_362_148_200_123)).expect("serializes");
        assert_eq!(json, "\"2013-03-01T14:30:00.123Z\"");
        assert_eq!(serde_json::from_str::<UtcTime>(&json).expect("parses"), UtcTime(1_362_148_200_123));
        assert_eq!(UtcTime(-1).to_string(), "1969-12-31T23:59:59.999Z");
    }

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
