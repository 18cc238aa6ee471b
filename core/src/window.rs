//! Tumbling event-time windows and the watermark (DESIGN §4).

use serde::{Deserialize, Serialize};

use crate::time::{DAY_MS, MINUTE_MS};

/// Allowed lateness by default: 5 s.
pub const DEFAULT_ALLOWED_LATENESS_MS: i64 = 5_000;

/// Start of the tumbling window of `size_ms` (> 0) that holds `ts_ms` (windows are aligned to
/// the Unix epoch, so 1d windows are UTC days). Works for instants before 1970; never panics:
/// the one window whose start is below `i64::MIN` starts at `i64::MIN`.
pub fn window_start(ts_ms: i64, size_ms: i64) -> i64 {
    ts_ms.div_euclid(size_ms).saturating_mul(size_ms)
}

/// A bar interval served by the API. Views are stored at 1 minute; every other interval is a
/// roll-up by merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Interval {
    /// 1 minute.
    #[serde(rename = "1m")]
    M1,
    /// 5 minutes.
    #[serde(rename = "5m")]
    M5,
    /// 15 minutes.
    #[serde(rename = "15m")]
    M15,
    /// 1 hour.
    #[serde(rename = "1h")]
    H1,
    /// 1 UTC day.
    #[serde(rename = "1d")]
    D1,
}

impl Interval {
    /// All intervals, shortest first.
    pub const ALL: [Interval; 5] = [Interval::M1, Interval::M5, Interval::M15, Interval::H1, Interval::D1];

    /// Window length in ms.
    pub fn size_ms(self) -> i64 {
        match self {
            Interval::M1 => MINUTE_MS,
            Interval::M5 => 5 * MINUTE_MS,
            Interval::M15 => 15 * MINUTE_MS,
            Interval::H1 => 60 * MINUTE_MS,
            Interval::D1 => DAY_MS,
        }
    }

    /// The API name: `1m`, `5m`, `15m`, `1h`, `1d`.
    pub fn name(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::H1 => "1h",
            Interval::D1 => "1d",
        }
    }

    /// Parses an API name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// The watermark of a stream: max event time seen − allowed lateness (DESIGN §4).
///
/// A window `[start, start + size)` is final once `start + size <= watermark`; an event with
/// `ts < watermark` is late. Built from the max event time a consumer has recorded (per
/// partition, or over all partitions for the reported realtime watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    max_event_ts_ms: Option<i64>,
    allowed_lateness_ms: i64,
}

impl Watermark {
    /// The watermark after events up to `max_event_ts_ms` (UTC ms; `None`: nothing seen yet).
    pub fn new(max_event_ts_ms: Option<i64>, allowed_lateness_ms: i64) -> Self {
        Watermark { max_event_ts_ms, allowed_lateness_ms }
    }

    /// The watermark, UTC ms; `None` before the first event.
    pub fn current_ms(&self) -> Option<i64> {
        self.max_event_ts_ms.map(|m| m.saturating_sub(self.allowed_lateness_ms))
    }

    /// True when an event at `ts_ms` is behind the watermark.
    pub fn is_late(&self, ts_ms: i64) -> bool {
        self.current_ms().is_some_and(|w| ts_ms < w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_epoch() {
        assert_eq!(window_start(59_999, MINUTE_MS), 0);
        assert_eq!(window_start(60_000, MINUTE_MS), 60_000);
        assert_eq!(window_start(-1, MINUTE_MS), -60_000);
        assert_eq!(window_start(DAY_MS + 5, DAY_MS), DAY_MS);
        assert_eq!(window_start(i64::MIN, MINUTE_MS), i64::MIN, "saturates instead of overflowing");
        assert_eq!(window_start(i64::MAX, DAY_MS) % DAY_MS, 0);
        assert_eq!(Interval::parse("15m"), Some(Interval::M15));
        assert_eq!(Interval::parse("2m"), None);
    }

    #[test]
    fn watermark_trails_max_event_time() {
        assert_eq!(Watermark::new(None, 5_000).current_ms(), None);
        assert!(!Watermark::new(None, 5_000).is_late(i64::MIN), "nothing is late before the first event");
        let w = Watermark::new(Some(100_000), 5_000);
        assert_eq!(w.current_ms(), Some(95_000));
        assert!(!w.is_late(96_000), "within lateness is not late");
        assert!(!w.is_late(95_000));
        assert!(w.is_late(94_999), "behind the watermark is late");
    }
}
