//! The serving merge (DESIGN §5): 1-minute rows from the batch view (windows before the batch
//! horizon H) and the realtime view (windows from H on) rolled up to the asked interval by the
//! `ohlcv` monoid's merge. The store hands over disjoint row sets (batch `< H`, realtime `≥ H`),
//! so no window is counted twice or missed; a roll-up bucket that straddles H merges both parts
//! and says so.

use std::collections::BTreeMap;

use prism_core::ohlcv::{Ohlcv, OhlcvRow};
use prism_core::window::{window_start, Interval};

/// Which layer a served bar came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Only batch-view rows.
    Batch,
    /// Only realtime-view rows.
    Realtime,
    /// A roll-up that straddles the batch horizon.
    Both,
}

impl Layer {
    /// `batch`, `realtime` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Batch => "batch",
            Layer::Realtime => "realtime",
            Layer::Both => "both",
        }
    }

    fn with(self, other: Layer) -> Layer {
        if self == other {
            self
        } else {
            Layer::Both
        }
    }
}

/// One merged bar: its start (UTC ms), aggregate and layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedBar {
    /// Bucket start, UTC ms, aligned to the interval.
    pub start_ms: i64,
    /// The merged aggregate.
    pub agg: Ohlcv,
    /// Where its rows came from.
    pub layer: Layer,
}

/// Rolls batch and realtime 1-minute rows up to `interval`, ascending by start.
pub fn merge_bars(batch: &[OhlcvRow], realtime: &[OhlcvRow], interval: Interval) -> Vec<MergedBar> {
    let mut buckets: BTreeMap<i64, (Ohlcv, Layer)> = BTreeMap::new();
    let tagged = batch.iter().map(|r| (r, Layer::Batch)).chain(realtime.iter().map(|r| (r, Layer::Realtime)));
    for (row, layer) in tagged {
        let start = window_start(row.key.window_start_ms, interval.size_ms());
        buckets
            .entry(start)
            .and_modify(|(agg, l)| {
                *agg = agg.merge(&row.agg);
                *l = l.with(layer);
            })
            .or_insert((row.agg, layer));
    }
    buckets.into_iter().map(|(start_ms, (agg, layer))| MergedBar { start_ms, agg, layer }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_core::decimal::Decimal6;
    use prism_core::ohlcv::{EventKey, OhlcvKey};

    fn row(minute: i64, price: i128, size: i64) -> OhlcvRow {
        let ts = minute * 60_000;
        OhlcvRow {
            key: OhlcvKey { symbol: "S".into(), window_start_ms: ts },
            agg: Ohlcv::of_trade(EventKey { ts_ms: ts, partition: 0, offset: minute }, Decimal6::from_units(price), size),
        }
    }

    #[test]
    fn rolls_up_and_labels_layers() {
        // Batch has minutes 0..7, realtime 7..12 (H = minute 7).
        let batch: Vec<_> = (0..7).map(|m| row(m, 100 + m as i128, 1)).collect();
        let realtime: Vec<_> = (7..12).map(|m| row(m, 100 + m as i128, 1)).collect();
        let bars = merge_bars(&batch, &realtime, Interval::M5);
        assert_eq!(bars.iter().map(|b| (b.start_ms / 60_000, b.layer)).collect::<Vec<_>>(),
            vec![(0, Layer::Batch), (5, Layer::Both), (10, Layer::Realtime)]);
        assert_eq!(bars[1].agg.trades, 5);
        assert_eq!(bars[1].agg.open.map(|p| p.price.units()), Some(105));
        assert_eq!(bars[1].agg.close.map(|p| p.price.units()), Some(109));
        let m1 = merge_bars(&batch, &realtime, Interval::M1);
        assert_eq!(m1.len(), 12);
        let d1 = merge_bars(&batch, &realtime, Interval::D1);
        assert_eq!(d1.len(), 1);
        assert_eq!(d1[0].agg.volume, 12);
    }
}
