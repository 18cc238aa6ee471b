//! Time chunks of segments (batch views in Lambda mode, hand-off segments in Kappa mode).
//!
//! The trade-off (DESIGN §5): fine chunks make incremental runs cheap; coarse chunks make a
//! query over years open few files. Prism uses both, as Druid does when it compacts fine
//! segments into coarse ones:
//!
//! - the **current year** of the segment horizon H (the batch horizon, or the Kappa hand-off's) is chunked by **UTC calendar month**: an
//!   incremental run after a new day rebuilds one month;
//! - every **earlier year** is one **UTC calendar year** chunk: a 13-year daily query opens 13
//!   year segments plus at most 12 month segments. When H crosses New Year, the next run builds
//!   the closed year's segment in place of its month segments.
//!
//! Chunk boundaries are UTC midnights, so every interval a view serves must divide a day (true
//! of 1m…1d): no bucket straddles two chunks.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// A time chunk `[start_ms, end_ms)`, UTC ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Chunk {
    /// Start, UTC ms (a UTC midnight).
    pub start_ms: i64,
    /// End, UTC ms (exclusive).
    pub end_ms: i64,
}

fn midnight(year: i32, month: u32) -> Option<i64> {
    Some(NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

impl Chunk {
    /// The chunk holding the instant `ts_ms` while the batch horizon is `horizon_ms`: its UTC
    /// year when that year ended before H's year, else its UTC month. `None` only outside the
    /// years chrono represents (events are validated to years 0001–9999).
    pub fn of(ts_ms: i64, horizon_ms: i64) -> Option<Chunk> {
        let t = DateTime::<Utc>::from_timestamp_millis(ts_ms)?;
        let h = DateTime::<Utc>::from_timestamp_millis(horizon_ms)?;
        if t.year() < h.year() {
            Some(Chunk { start_ms: midnight(t.year(), 1)?, end_ms: midnight(t.year() + 1, 1)? })
        } else {
            let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
            Some(Chunk { start_ms: midnight(t.year(), t.month())?, end_ms: midnight(y, m)? })
        }
    }

    /// UTC midnight of 1 January of the year holding `ts_ms`: every chunk before it is a closed
    /// year's while the horizon is at `ts_ms` or later. `None` outside chrono's years.
    pub fn year_start(ts_ms: i64) -> Option<i64> {
        midnight(DateTime::<Utc>::from_timestamp_millis(ts_ms)?.year(), 1)
    }

    /// `YYYY-MM-DD_YYYY-MM-DD` (start and end dates), for segment paths.
    pub fn label(&self) -> String {
        let d = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d").to_string());
        format!("{}_{}", d(self.start_ms), d(self.end_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, m: u32, d: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0)
    }

    #[test]
    fn closed_years_are_one_chunk_the_current_year_months() {
        let h = ms(2013, 3, 5);
        assert_eq!(Chunk::of(ms(2012, 6, 7), h), Some(Chunk { start_ms: ms(2012, 1, 1), end_ms: ms(2013, 1, 1) }));
        assert_eq!(Chunk::of(ms(2013, 2, 7), h), Some(Chunk { start_ms: ms(2013, 2, 1), end_ms: ms(2013, 3, 1) }));
        assert_eq!(Chunk::of(ms(2013, 12, 31), h), Some(Chunk { start_ms: ms(2013, 12, 1), end_ms: ms(2014, 1, 1) }));
        assert_eq!(Chunk::of(ms(1969, 12, 31) + 5, h).map(|c| c.start_ms), Some(ms(1969, 1, 1)), "before 1970 too");
        assert_eq!(Chunk { start_ms: ms(2013, 2, 1), end_ms: ms(2013, 3, 1) }.label(), "2013-02-01_2013-03-01");
    }
}
