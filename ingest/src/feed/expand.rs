//! Expansion of a daily bar into a deterministic sequence of intraday trades whose 1-day
//! roll-up equals the bar exactly (DESIGN §9):
//!
//! - trades lie in the US regular session, 14:30:00–21:00:00 UTC, evenly spaced, strictly
//!   increasing; the first trade is at 14:30:00;
//! - the first trade's price is the open, the last's the close; one trade is at the high and
//!   one at the low; every price is within [low, high];
//! - sizes are whole shares ≥ 1 summing to the day's volume exactly;
//! - the count is `min(trades_per_day, volume)`.
//!
//! The sequence is a pure function of the bar and `trades_per_day` (a SplitMix64 stream seeded
//! by FNV-1a of symbol and date), written out here rather than taken from a random-number
//! crate so that the lab's trades never change with a library upgrade.

use chrono::NaiveDate;
use prism_core::decimal::Decimal6;
use prism_core::event::Quote;

use super::bars::DailyBar;

/// Session open, ms after UTC midnight (14:30).
pub const SESSION_OPEN_MS: i64 = (14 * 60 + 30) * 60_000;
/// Session length, ms (6 h 30 min).
pub const SESSION_MS: i64 = 390 * 60_000;

/// Trades a bar needs at least: the open first and the close last (one trade when
/// open = high = low = close), plus one at the high and one at the low where those differ from
/// the open and close.
pub fn min_trades(open: Decimal6, high: Decimal6, low: Decimal6, close: Decimal6) -> usize {
    if open == high && high == low && low == close {
        return 1;
    }
    let extra = [high, low].iter().filter(|p| **p != open && **p != close).count();
    2 + if high == low { extra.min(1) } else { extra }
}

/// How many trades [`expand_bar`] makes for `bar`.
pub fn trade_count(bar: &DailyBar, trades_per_day: usize) -> usize {
    (trades_per_day as i64).min(bar.volume).max(0) as usize
}

/// SplitMix64 (Steele, Lea & Flood, OOPSLA 2014): a tiny deterministic generator whose output
/// never changes across library versions, used for the lab's trades and the bench workload.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

fn seed(symbol: &str, date: NaiveDate) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in symbol.bytes().chain([0u8]).chain(date.to_string().bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Expands a validated bar into trades (see the module doc). Returns an empty vector when the
/// bar cannot be expanded (fewer than [`min_trades`] shares, or `trades_per_day` below it):
/// [`super::bars`] refuses such rows before they get here.
pub fn expand_bar(bar: &DailyBar, trades_per_day: usize) -> Vec<Quote> {
    let (open, high, low, close) = (bar.open, bar.high, bar.low, bar.close);
    let k = trade_count(bar, trades_per_day);
    let needed = min_trades(open, high, low, close);
    if k < needed || k == 0 {
        return Vec::new();
    }
    let mut rng = SplitMix64(seed(&bar.symbol, bar.date));
    let day_start = bar.date.and_hms_opt(0, 0, 0).map_or(0, |d| d.and_utc().timestamp_millis());

    let mut prices: Vec<Option<Decimal6>> = vec![None; k];
    prices[0] = Some(open);
    prices[k - 1] = Some(close);
    // Place the high and the low (when the open and close do not carry them) in distinct
    // random inner slots.
    let mut required: Vec<Decimal6> = [high, low].into_iter().filter(|p| *p != open && *p != close).collect();
    required.dedup();
    for price in required {
        let free: Vec<usize> = (1..k.saturating_sub(1)).filter(|&i| prices[i].is_none()).collect();
        if free.is_empty() {
            return Vec::new();
        }
        let slot = free[rng.below(free.len() as u64) as usize];
        prices[slot] = Some(price);
    }
    // Fill the rest with a random walk clamped to [low, high], on a cent grid when the bar's
    // range is on one.
    let tick: i128 = if low.units() % 10_000 == 0 && high.units() % 10_000 == 0 { 10_000 } else { 1 };
    let ticks_in_range = (high.units() - low.units()) / tick;
    let max_step = (ticks_in_range / 8).max(1);
    let mut last = open.units();
    for p in prices.iter_mut() {
        match p {
            Some(v) => last = v.units(),
            None => {
                let step = rng.below((2 * max_step + 1) as u64) as i128 - max_step;
                let v = (last + step * tick).clamp(low.units(), high.units());
                let v = low.units() + (v - low.units()) / tick * tick;
                *p = Some(Decimal6::from_units(v));
                last = v;
            }
        }
    }
    // Sizes: one share each, the remainder split by random weights, the rounding leftover one
    // share at a time to the first trades.
    let remainder = (bar.volume - k as i64) as i128;
    let weights: Vec<i128> = (0..k).map(|_| 1 + rng.below(1_000) as i128).collect();
    let total: i128 = weights.iter().sum();
    let mut sizes: Vec<i64> = weights.iter().map(|w| 1 + (remainder * w / total) as i64).collect();
    let mut leftover = bar.volume - sizes.iter().sum::<i64>();
    for s in sizes.iter_mut() {
        if leftover == 0 {
            break;
        }
        *s += 1;
        leftover -= 1;
    }

    (0..k)
        .map(|i| Quote {
            symbol: bar.symbol.clone(),
            ts: day_start + SESSION_OPEN_MS + (i as i64 * SESSION_MS) / k as i64,
            price: prices[i].unwrap_or(open),
            size: sizes[i],
            bid: None,
            ask: None,
            exchange: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bar(o: i128, h: i128, l: i128, c: i128, v: i64) -> DailyBar {
        DailyBar {
            symbol: "TEST".into(),
            date: NaiveDate::from_ymd_opt(2010, 6, 1).unwrap_or_default(),
            open: Decimal6::from_units(o),
            high: Decimal6::from_units(h),
            low: Decimal6::from_units(l),
            close: Decimal6::from_units(c),
            volume: v,
            file: "test".into(),
            line: 2,
        }
    }

    fn arb_bar() -> impl Strategy<Value = DailyBar> {
        (1i128..1_000_000_000, 0i128..500_000_000, any::<u64>(), any::<u64>(), any::<bool>(), 1i64..50_000_000).prop_map(
            |(low, range, a, b, cents, extra)| {
                let (low, range) = if cents { (low / 10_000 * 10_000 + 10_000, range / 10_000 * 10_000) } else { (low, range) };
                let high = low + range;
                let pick = |r: u64| {
                    if range == 0 {
                        low
                    } else if cents {
                        low + (r as i128 % (range / 10_000 + 1)) * 10_000
                    } else {
                        low + r as i128 % (range + 1)
                    }
                };
                let (open, close) = (pick(a), pick(b));
                let needed = min_trades(
                    Decimal6::from_units(open),
                    Decimal6::from_units(high),
                    Decimal6::from_units(low),
                    Decimal6::from_units(close),
                );
                bar(open, high, low, close, needed as i64 - 1 + extra)
            },
        )
    }

    proptest! {
        #[test]
        fn expansion_rolls_up_to_the_bar(b in arb_bar(), tpd in 4usize..500) {
            let trades = expand_bar(&b, tpd);
            prop_assert_eq!(trades.len(), trade_count(&b, tpd));
            prop_assert_eq!(trades.first().map(|t| t.price), Some(b.open));
            prop_assert_eq!(trades.last().map(|t| t.price), Some(b.close));
            prop_assert_eq!(trades.iter().map(|t| t.price).max(), Some(b.high));
            prop_assert_eq!(trades.iter().map(|t| t.price).min(), Some(b.low));
            prop_assert_eq!(trades.iter().map(|t| t.size).sum::<i64>(), b.volume);
            prop_assert!(trades.iter().all(|t| t.size >= 1));
            prop_assert!(trades.iter().all(|t| t.validate().is_ok()));
            let day = b.date.and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp_millis()).unwrap_or(0);
            prop_assert_eq!(trades[0].ts, day + SESSION_OPEN_MS);
            prop_assert!(trades.windows(2).all(|w| w[0].ts < w[1].ts));
            prop_assert!(trades.iter().all(|t| t.ts < day + SESSION_OPEN_MS + SESSION_MS));
            prop_assert_eq!(expand_bar(&b, tpd), trades, "deterministic");
        }
    }

    #[test]
    fn minimal_bars() {
        assert_eq!(min_trades(Decimal6::from_units(5), Decimal6::from_units(5), Decimal6::from_units(5), Decimal6::from_units(5)), 1);
        let one = expand_bar(&bar(5, 5, 5, 5, 1), 390);
        assert_eq!(one.len(), 1);
        // open = close inside the range needs four trades: open, high, low, close.
        let b = bar(5, 9, 1, 5, 4);
        assert_eq!(min_trades(b.open, b.high, b.low, b.close), 4);
        let t = expand_bar(&b, 390);
        assert_eq!(t.len(), 4);
        assert_eq!(t.iter().map(|q| q.size).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
    }
}
