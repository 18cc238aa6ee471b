//! The serving merge (DESIGN §5), for any view: rows from the batch view (events before the
//! batch horizon H) and the realtime view (events from H on), at the asked interval or finer,
//! merged per bucket by the view's monoid. The snapshot hands over disjoint parts (batch `< H`,
//! realtime `≥ H`), so no event is counted twice or missed; the bucket that straddles H merges
//! both parts and says so.

use prism_core::view::{Monoid, ViewRow};
use prism_core::window::window_start;

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

    /// The layer of a bucket merged from rows of `self` and `other`.
    pub fn with(self, other: Layer) -> Layer {
        if self == other {
            self
        } else {
            Layer::Both
        }
    }
}

/// One merged bucket: its start (UTC ms), aggregate and layer.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedBar<A> {
    /// Bucket start, UTC ms, aligned to the interval.
    pub start_ms: i64,
    /// The merged aggregate.
    pub agg: A,
    /// Where its rows came from.
    pub layer: Layer,
}

/// Merges one key's batch and realtime rows (at `interval_ms` or finer) into buckets of
/// `interval_ms`, ascending by start.
pub fn merge_bars<A: Monoid>(batch: &[ViewRow<A>], realtime: &[ViewRow<A>], interval_ms: i64) -> Vec<MergedBar<A>> {
    // Both parts come in window order (segments and the store answer so), which puts the
    // buckets in order: one pass, each bucket merged into the bar before it. A stable sort
    // restores that order otherwise (a bucket's batch rows still merge before its realtime ones).
    let mut tagged: Vec<(i64, &A, Layer)> = batch
        .iter()
        .map(|r| (r, Layer::Batch))
        .chain(realtime.iter().map(|r| (r, Layer::Realtime)))
        .map(|(r, layer)| (window_start(r.window_start_ms, interval_ms), &r.agg, layer))
        .collect();
    if !tagged.is_sorted_by_key(|t| t.0) {
        tagged.sort_by_key(|t| t.0);
    }
    let mut bars: Vec<MergedBar<A>> = Vec::with_capacity(tagged.len());
    for (start_ms, agg, layer) in tagged {
        match bars.last_mut() {
            Some(bar) if bar.start_ms == start_ms => {
                bar.agg.merge_from(agg);
                bar.layer = bar.layer.with(layer);
            }
            _ => bars.push(MergedBar { start_ms, agg: agg.clone(), layer }),
        }
    }
    bars
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_core::decimal::Decimal6;
    use prism_core::view::ohlcv::{EventKey, Ohlcv, OhlcvRow};
    use prism_core::window::Interval;

    fn row(minute: i64, price: i128, size: i64) -> OhlcvRow {
        let ts = minute * 60_000;
        OhlcvRow {
            key: "S".into(),
            window_start_ms: ts,
            agg: Ohlcv::of_trade(EventKey { ts_ms: ts, partition: 0, offset: minute }, Decimal6::from_units(price), size),
        }
    }

    #[test]
    fn rolls_up_and_labels_layers() {
        // Batch has minutes 0..7, realtime 7..12 (H = minute 7).
        let batch: Vec<_> = (0..7).map(|m| row(m, 100 + m as i128, 1)).collect();
        let realtime: Vec<_> = (7..12).map(|m| row(m, 100 + m as i128, 1)).collect();
        let bars = merge_bars(&batch, &realtime, Interval::M5.size_ms());
        assert_eq!(
            bars.iter().map(|b| (b.start_ms / 60_000, b.layer)).collect::<Vec<_>>(),
            vec![(0, Layer::Batch), (5, Layer::Both), (10, Layer::Realtime)]
        );
        assert_eq!(bars[1].agg.trades, 5);
        assert_eq!(bars[1].agg.open.map(|p| p.price.units()), Some(105));
        assert_eq!(bars[1].agg.close.map(|p| p.price.units()), Some(109));
        let m1 = merge_bars(&batch, &realtime, Interval::M1.size_ms());
        assert_eq!(m1.len(), 12);
        let d1 = merge_bars(&batch, &realtime, Interval::D1.size_ms());
        assert_eq!(d1.len(), 1);
        assert_eq!(d1[0].agg.volume, 12);
    }

    #[test]
    fn parts_out_of_window_order_merge_as_in_order() {
        let batch: Vec<_> = (0..7).map(|m| row(m, 100 + m as i128, 1)).collect();
        let realtime: Vec<_> = (7..12).map(|m| row(m, 100 + m as i128, 1)).collect();
        let (mut batch_rev, mut realtime_rev) = (batch.clone(), realtime.clone());
        batch_rev.reverse();
        realtime_rev.reverse();
        for interval in [Interval::M1, Interval::M5, Interval::D1] {
            let want = merge_bars(&batch, &realtime, interval.size_ms());
            let got = merge_bars(&batch_rev, &realtime_rev, interval.size_ms());
            assert_eq!(got, want, "{interval:?}");
        }
        assert_eq!(merge_bars(&batch_rev, &realtime_rev, Interval::M5.size_ms()).len(), 3);
    }
}
