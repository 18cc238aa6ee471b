//! The `ohlcv` view (DESIGN §4): symbol × 1-minute tumbling event-time window → open, high,
//! low, close, volume (shares), notional (Σ price × size, exact) and trade count.
//!
//! [`Ohlcv`] is a commutative monoid: [`Ohlcv::EMPTY`] is the identity and [`Ohlcv::merge`] is
//! associative and commutative. The batch layer, the speed layer and the serving layer's
//! roll-ups (1m → 5m/15m/1h/1d) all use this one type, so they produce identical rows for the
//! same events in any order. Open and close are the prices of the first and last event ordered
//! by (event time, partition, offset), which makes them order-independent too.

use super::columns::{Column, ColumnType, DecodeError, Value, ValueReader};
use super::{Monoid, View, ViewRow};
use crate::decimal::Decimal6;
use crate::event::{EventError, LogPosition, Quote, QUOTES_TOPIC};
use crate::time::{DAY_MS, MINUTE_MS};

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
    pub const EMPTY: Ohlcv = Ohlcv { open: None, high: None, low: None, close: None, volume: 0, notional: Decimal6::ZERO, trades: 0 };

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

    /// Merges `other` into `self`: the same result as [`Ohlcv::merge`], in place.
    pub fn merge_from(&mut self, other: &Ohlcv) {
        keep(&mut self.open, other.open, |a, b| a.key <= b.key);
        keep(&mut self.high, other.high, |a, b| a >= b);
        keep(&mut self.low, other.low, |a, b| a <= b);
        keep(&mut self.close, other.close, |a, b| a.key >= b.key);
        self.volume = self.volume.saturating_add(other.volume);
        self.notional = Decimal6::from_units(self.notional.units().saturating_add(other.notional.units()));
        self.trades = self.trades.saturating_add(other.trades);
    }

    /// Volume-weighted average price = notional / volume, rounded half away from zero to
    /// scale 6 (derived at read time, never stored or summed). `None` when volume is 0.
    pub fn vwap(&self) -> Option<Decimal6> {
        self.notional.div_round(self.volume as i128)
    }
}

/// [`pick`] into `held`.
fn keep<T: Copy>(held: &mut Option<T>, other: Option<T>, keep_held: impl Fn(&T, &T) -> bool) {
    match (held.as_ref(), other) {
        (Some(h), Some(o)) if !keep_held(h, &o) => *held = Some(o),
        (None, o) => *held = o,
        _ => {}
    }
}

fn pick<T: Copy>(a: Option<T>, b: Option<T>, keep_a: impl Fn(&T, &T) -> bool) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if keep_a(&x, &y) { x } else { y }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// One row of an `ohlcv` view.
pub type OhlcvRow = ViewRow<Ohlcv>;

/// Window size of the standard `ohlcv` view: 1 minute.
pub const OHLCV_WINDOW_MS: i64 = crate::time::MINUTE_MS;

/// Served intervals of the standard `ohlcv` view: 1m, 5m, 15m, 1h, 1d (UTC days).
pub const OHLCV_INTERVALS_MS: [i64; 5] = [MINUTE_MS, 5 * MINUTE_MS, 15 * MINUTE_MS, 60 * MINUTE_MS, DAY_MS];

/// Version of the `ohlcv` aggregate's code; part of the fingerprint (bump it when the aggregate
/// or its codec changes what rows hold).
const OHLCV_CODE_VERSION: u32 = 1;

/// The stored columns of an [`Ohlcv`] (DESIGN §4): open (price and the event key that carried
/// it), high, low, close (price and event key), volume (shares), notional (Σ price × size,
/// exact), trades.
pub const OHLCV_COLUMNS: [Column; 13] = [
    Column::new("open_price", ColumnType::Price),
    Column::new("open_ts", ColumnType::Time),
    Column::new("open_partition", ColumnType::Int),
    Column::new("open_offset", ColumnType::Int),
    Column::new("high_price", ColumnType::Price),
    Column::new("low_price", ColumnType::Price),
    Column::new("close_price", ColumnType::Price),
    Column::new("close_ts", ColumnType::Time),
    Column::new("close_partition", ColumnType::Int),
    Column::new("close_offset", ColumnType::Int),
    Column::new("volume", ColumnType::Int),
    Column::new("notional", ColumnType::Money),
    Column::new("trades", ColumnType::Int),
];

/// An `ohlcv`-shaped view of `prism.quotes`: symbol × tumbling window of `window_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OhlcvView {
    name: String,
    window_ms: i64,
    intervals_ms: Vec<i64>,
    allowed_lateness_ms: i64,
}

impl OhlcvView {
    /// The standard `ohlcv` view: 1-minute bars served at 1m, 5m, 15m, 1h and 1d.
    pub fn standard(allowed_lateness_ms: i64) -> OhlcvView {
        OhlcvView { name: "ohlcv".into(), window_ms: OHLCV_WINDOW_MS, intervals_ms: OHLCV_INTERVALS_MS.to_vec(), allowed_lateness_ms }
    }

    /// A view named `name` with bars of `window_ms`, also served at every standard interval
    /// longer than it (each standard interval must be a multiple of `window_ms`).
    pub fn with_window(name: &str, window_ms: i64, allowed_lateness_ms: i64) -> OhlcvView {
        let mut intervals_ms = vec![window_ms];
        intervals_ms.extend(OHLCV_INTERVALS_MS.iter().copied().filter(|i| *i > window_ms && i % window_ms == 0));
        OhlcvView { name: name.into(), window_ms, intervals_ms, allowed_lateness_ms }
    }
}

impl View for OhlcvView {
    type Event = Quote;
    type Agg = Ohlcv;

    fn name(&self) -> &str {
        &self.name
    }

    fn source_topic(&self) -> &str {
        QUOTES_TOPIC
    }

    fn realtime_table(&self) -> &'static str {
        "ohlcv_realtime"
    }

    fn key_column(&self) -> &'static str {
        "symbol"
    }

    fn parse(&self, value: &[u8]) -> Result<Quote, EventError> {
        Quote::from_json(value)
    }

    fn key<'e>(&self, event: &'e Quote) -> &'e str {
        &event.symbol
    }

    fn event_time(&self, event: &Quote) -> i64 {
        event.ts
    }

    fn contribution(&self, event: &Quote, pos: LogPosition) -> Ohlcv {
        Ohlcv::of_trade(EventKey::new(event.ts, pos), event.price, event.size)
    }

    fn window_ms(&self) -> i64 {
        self.window_ms
    }

    fn intervals_ms(&self) -> &[i64] {
        &self.intervals_ms
    }

    fn allowed_lateness_ms(&self) -> i64 {
        self.allowed_lateness_ms
    }

    fn events_in(&self, agg: &Ohlcv) -> i64 {
        agg.trades
    }

    fn columns(&self) -> &'static [Column] {
        &OHLCV_COLUMNS
    }

    fn encode(&self, a: &Ohlcv, out: &mut Vec<Value>) {
        // An empty aggregate is never stored (rows exist only for windows with events); encode
        // it as zeros rather than fail.
        let zero = PricePoint { key: EventKey { ts_ms: 0, partition: 0, offset: 0 }, price: Decimal6::ZERO };
        let (open, close) = (a.open.unwrap_or(zero), a.close.unwrap_or(zero));
        out.extend([
            Value::Price(open.price),
            Value::Time(open.key.ts_ms),
            Value::Int(open.key.partition as i64),
            Value::Int(open.key.offset),
            Value::Price(a.high.unwrap_or(Decimal6::ZERO)),
            Value::Price(a.low.unwrap_or(Decimal6::ZERO)),
            Value::Price(close.price),
            Value::Time(close.key.ts_ms),
            Value::Int(close.key.partition as i64),
            Value::Int(close.key.offset),
            Value::Int(a.volume),
            Value::Money(a.notional),
            Value::Int(a.trades),
        ]);
    }

    fn decode(&self, values: &[Value]) -> Result<Ohlcv, DecodeError> {
        let mut r = ValueReader::new(&OHLCV_COLUMNS, values);
        let point = |r: &mut ValueReader<'_>| -> Result<PricePoint, DecodeError> {
            let price = r.price()?;
            let ts_ms = r.time()?;
            let partition = r.int()? as i32;
            let offset = r.int()?;
            Ok(PricePoint { key: EventKey { ts_ms, partition, offset }, price })
        };
        let open = point(&mut r)?;
        let high = r.price()?;
        let low = r.price()?;
        let close = point(&mut r)?;
        Ok(Ohlcv {
            open: Some(open),
            high: Some(high),
            low: Some(low),
            close: Some(close),
            volume: r.int()?,
            notional: r.money()?,
            trades: r.int()?,
        })
    }

    fn fingerprint(&self) -> String {
        format!(
            "ohlcv/code={OHLCV_CODE_VERSION};window_ms={};intervals_ms={:?};allowed_lateness_ms={}",
            self.window_ms, self.intervals_ms, self.allowed_lateness_ms
        )
    }
}

impl Monoid for Ohlcv {
    fn empty() -> Self {
        Ohlcv::EMPTY
    }

    fn merge(&self, other: &Self) -> Self {
        Ohlcv::merge(self, other)
    }

    fn merge_from(&mut self, other: &Self) {
        Ohlcv::merge_from(self, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Replays and batch builds hold a year of the lab's windows as these: keep them small
    /// (Decimal6 is 8-byte aligned; see its docs).
    #[test]
    fn aggregate_is_compact() {
        assert_eq!(std::mem::size_of::<Option<Decimal6>>(), 24);
        assert_eq!(std::mem::size_of::<Option<PricePoint>>(), 48);
        assert_eq!(std::mem::size_of::<Ohlcv>(), 176);
    }

    fn arb_ohlcv() -> impl Strategy<Value = Ohlcv> {
        proptest::collection::vec((0i64..10_000, 0i32..3, 0i64..1000, 1i128..10_000_000, 1i64..1000), 0..6).prop_map(|trades| {
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
        fn merge_in_place_equals_merge(a in arb_ohlcv(), b in arb_ohlcv()) {
            let mut in_place = a;
            in_place.merge_from(&b);
            prop_assert_eq!(in_place, a.merge(&b));
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
    fn codec_round_trips() {
        let view = OhlcvView::standard(5_000);
        let a = Ohlcv::of_trade(EventKey { ts_ms: 7, partition: 2, offset: 9 }, Decimal6::from_units(1_234_567), 10)
            .merge(&Ohlcv::of_trade(EventKey { ts_ms: 8, partition: 2, offset: 10 }, Decimal6::from_units(99), 3));
        let mut values = Vec::new();
        view.encode(&a, &mut values);
        assert_eq!(values.len(), view.columns().len());
        assert_eq!(view.decode(&values), Ok(a));
        values[0] = Value::Int(1);
        assert!(view.decode(&values).is_err(), "a value of the wrong type is an error, not a panic");
        assert!(view.decode(&values[..3]).is_err());
    }

    #[test]
    fn fingerprint_names_every_parameter() {
        let a = OhlcvView::standard(5_000);
        assert_ne!(a.fingerprint(), OhlcvView::standard(6_000).fingerprint());
        let b = OhlcvView::with_window("ohlcv_30s", 30_000, 5_000);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(b.intervals_ms(), &[30_000, 60_000, 300_000, 900_000, 3_600_000, 86_400_000]);
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
