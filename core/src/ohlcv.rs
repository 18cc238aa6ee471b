//! The `ohlcv` view (DESIGN §4): symbol × 1-minute tumbling event-time window → open, high,
//! low, close, volume (shares), notional (Σ price × size, exact) and trade count.
//!
//! [`Ohlcv`] is a commutative monoid: [`Ohlcv::EMPTY`] is the identity and [`Ohlcv::merge`] is
//! associative and commutative. The batch layer, the speed layer and the serving layer's
//! roll-ups (1m → 5m/15m/1h/1d) all use this one type, so they produce identical rows for the
//! same events in any order. Open and close are the prices of the first and last event ordered
//! by (event time, partition, offset), which makes them order-independent too.

use crate::decimal::Decimal6;
use crate::event::{LogPosition, Quote};
use crate::window::window_start;

/// Total order of events in a view: event time, then log position (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    /// Event time, UTC ms.
    pub ts_ms: i64,
    /// Log partition.
    pub partition: i32,
    /// Log offset.
    pub offset: i64,
}

impl EventKey {
    /// The key of an event read from the log at `pos`.
    pub fn new(ts_ms: i64, pos: LogPosition) -> Self {
        EventKey { ts_ms, partition: pos.partition, offset: pos.offset }
    }
}

/// A price with the key of the event that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricePoint {
    /// Which event.
    pub key: EventKey,
    /// Its price, scale 6.
    pub price: Decimal6,
}

/// The `ohlcv` aggregate of one window (or a merge of windows).
///
/// Volume and trades add with saturation: at the validated input bounds (≤ 10¹² shares a
/// trade) they cannot saturate within any window Prism serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ohlcv {
    /// First event by [`EventKey`]; `None` only when empty.
    pub open: Option<PricePoint>,
    /// Highest price; `None` only when empty.
    pub high: Option<Decimal6>,
    /// Lowest price; `None` only when empty.
    pub low: Option<Decimal6>,
    /// Last event by [`EventKey`]; `None` only when empty.
    pub close: Option<PricePoint>,
    /// Σ size, shares.
    pub volume: i64,
    /// Σ price × size, currency units at scale 6, exact.
    pub notional: Decimal6,
    /// Number of events.
    pub trades: i64,
}

impl Default for Ohlcv {
    fn default() -> Self {
        Ohlcv::EMPTY
    }
}

impl Ohlcv {
    /// The identity of [`Ohlcv::merge`].
    pub const EMPTY: Ohlcv = Ohlcv {
        open: None,
        high: None,
        low: None,
        close: None,
        volume: 0,
        notional: Decimal6::ZERO,
        trades: 0,
    };

    /// The aggregate of one trade.
    pub fn of_trade(key: EventKey, price: Decimal6, size: i64) -> Ohlcv {
        let point = PricePoint { key, price };
        Ohlcv {
            open: Some(point),
            high: Some(price),
            low: Some(price),
            close: Some(point),
            volume: size,
            notional: Decimal6::from_units(price.units().saturating_mul(size as i128)),
            trades: 1,
        }
    }

    /// True for the identity.
    pub fn is_empty(&self) -> bool {
        self.trades == 0 && self.open.is_none()
    }

    /// Combines two aggregates (associative, commutative, with [`Ohlcv::EMPTY`] as identity).
    pub fn merge(&self, other: &Ohlcv) -> Ohlcv {
        Ohlcv {
            open: pick(self.open, other.open, |a, b| a.key <= b.key),
            high: pick(self.high, other.high, |a, b| a >= b),
            low: pick(self.low, other.low, |a, b| a <= b),
            close: pick(self.close, other.close, |a, b| a.key >= b.key),
            volume: self.volume.saturating_add(other.volume),
            notional: Decimal6::from_units(self.notional.units().saturating_add(other.notional.units())),
            trades: self.trades.saturating_add(other.trades),
        }
    }

    /// Volume-weighted average price = notional / volume, rounded half away from zero to
    /// scale 6 (derived at read time, never stored or summed). `None` when volume is 0.
    pub fn vwap(&self) -> Option<Decimal6> {
        self.notional.div_round(self.volume as i128)
    }
}

fn pick<T: Copy>(a: Option<T>, b: Option<T>, keep_a: impl Fn(&T, &T) -> bool) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if keep_a(&x, &y) { x } else { y }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The key of one `ohlcv` row: symbol × 1-minute window start (UTC ms).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OhlcvKey {
    /// Ticker symbol.
    pub symbol: String,
    /// Window start, UTC ms, a multiple of 60,000.
    pub window_start_ms: i64,
}

/// One row of the `ohlcv` view at its base granularity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OhlcvRow {
    /// Symbol × window.
    pub key: OhlcvKey,
    /// The aggregate.
    pub agg: Ohlcv,
}

/// Window size of the stored `ohlcv` view: 1 minute.
pub const OHLCV_WINDOW_MS: i64 = crate::time::MINUTE_MS;

/// Maps a quote read at `pos` to its view key and single-event aggregate — the one place
/// both layers turn an event into a view contribution.
pub fn ohlcv_contribution(quote: &Quote, pos: LogPosition) -> (OhlcvKey, Ohlcv) {
    let key = OhlcvKey {
        symbol: quote.symbol.clone(),
        window_start_ms: window_start(quote.ts, OHLCV_WINDOW_MS),
    };
    (key, Ohlcv::of_trade(EventKey::new(quote.ts, pos), quote.price, quote.size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_ohlcv() -> impl Strategy<Value = Ohlcv> {
        proptest::collection::vec((0i64..10_000, 0i32..3, 0i64..1000, 1i128..10_000_000, 1i64..1000), 0..6)
            .prop_map(|trades| {
                trades.into_iter().fold(Ohlcv::EMPTY, |acc, (ts, p, o, price, size)| {
                    let key = EventKey { ts_ms: ts, partition: p, offset: o };
                    acc.merge(&Ohlcv::of_trade(key, Decimal6::from_units(price), size))
                })
            })
    }

    proptest! {
        #[test]
        fn merge_is_associative(a in arb_ohlcv(), b in arb_ohlcv(), c in arb_ohlcv()) {
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
        }

        #[test]
        fn merge_is_commutative(a in arb_ohlcv(), b in arb_ohlcv()) {
            // Distinct keys are guaranteed in real data (a log position is unique); equal keys
            // with different prices cannot occur, so compare only when keys differ or agree.
            prop_assume!(a.open.map(|p| p.key) != b.open.map(|p| p.key) || a.open == b.open);
            prop_assume!(a.close.map(|p| p.key) != b.close.map(|p| p.key) || a.close == b.close);
            prop_assert_eq!(a.merge(&b), b.merge(&a));
        }

        #[test]
        fn empty_is_identity(a in arb_ohlcv()) {
            prop_assert_eq!(a.merge(&Ohlcv::EMPTY), a);
            prop_assert_eq!(Ohlcv::EMPTY.merge(&a), a);
        }

        #[test]
        fn aggregate_matches_direct_computation(
            trades in proptest::collection::vec((0i64..100_000, 1i128..1_000_000_000, 1i64..10_000), 1..40)
        ) {
            let agg = trades.iter().enumerate().fold(Ohlcv::EMPTY, |acc, (i, (ts, price, size))| {
                let key = EventKey { ts_ms: *ts, partition: 0, offset: i as i64 };
                acc.merge(&Ohlcv::of_trade(key, Decimal6::from_units(*price), *size))
            });
            let first = trades.iter().enumerate().min_by_key(|(i, t)| (t.0, *i)).map(|(_, t)| t.1);
            let last = trades.iter().enumerate().max_by_key(|(i, t)| (t.0, *i)).map(|(_, t)| t.1);
            prop_assert_eq!(agg.open.map(|p| p.price.units()), first);
            prop_assert_eq!(agg.close.map(|p| p.price.units()), last);
            prop_assert_eq!(agg.high.map(|p| p.units()), trades.iter().map(|t| t.1).max());
            prop_assert_eq!(agg.low.map(|p| p.units()), trades.iter().map(|t| t.1).min());
            prop_assert_eq!(agg.volume, trades.iter().map(|t| t.2).sum::<i64>());
            prop_assert_eq!(agg.notional.units(), trades.iter().map(|t| t.1 * t.2 as i128).sum::<i128>());
            prop_assert_eq!(agg.trades, trades.len() as i64);
        }
    }

    #[test]
    fn open_close_tie_break_by_position() {
        let p = |units| Decimal6::from_units(units);
        let a = Ohlcv::of_trade(EventKey { ts_ms: 5, partition: 1, offset: 0 }, p(2), 1);
        let b = Ohlcv::of_trade(EventKey { ts_ms: 5, partition: 0, offset: 9 }, p(1), 1);
        let m = a.merge(&b);
        assert_eq!(m.open.map(|o| o.price), Some(p(1)), "partition 0 sorts first at equal ts");
        assert_eq!(m.close.map(|o| o.price), Some(p(2)));
        assert_eq!(m.vwap(), Some(p(2)), "(2+1)/2 = 1.5 units rounds away from zero");
    }
}
