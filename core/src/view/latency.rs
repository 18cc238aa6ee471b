//! A mergeable latency histogram with integer buckets (for the `access` view, DESIGN §4).
//!
//! Values are whole milliseconds. Buckets follow HdrHistogram's log-linear layout with 5
//! significant bits: every value below 64 ms has its own bucket (exact), and each power of two
//! above is split into 32 equal buckets, so a bucket's width is at most 1/32 (3.1 %) of its
//! values. A histogram is a map bucket → count; merge adds counts, so it is a commutative monoid
//! whose result — and stored text — is identical whatever the order or the layer.
//!
//! Percentiles use the nearest-rank method (rank ⌈q·n⌉) and report the *highest* value of the
//! bucket holding that rank (HdrHistogram's "highest equivalent value"): exact below 64 ms,
//! at most 3.1 % above the true value beyond.

use std::collections::BTreeMap;

/// Values below this have their own bucket.
const EXACT_BELOW: u64 = 64;
/// Buckets per power of two above [`EXACT_BELOW`] (5 significant bits).
const SUB_BUCKETS: u64 = 32;

/// A latency histogram: counts per integer bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: BTreeMap<u16, i64>,
}

/// The bucket of `ms`.
pub fn bucket_of(ms: u64) -> u16 {
    if ms < EXACT_BELOW {
        return ms as u16;
    }
    let e = 63 - u64::from(ms.leading_zeros()); // ≥ 6
    let sub = (ms >> (e - 5)) - SUB_BUCKETS; // 0..32
    (EXACT_BELOW + (e - 6) * SUB_BUCKETS + sub) as u16
}

/// The lowest and highest value (ms) of bucket `b`.
pub fn bucket_bounds(b: u16) -> (u64, u64) {
    let b = u64::from(b);
    if b < EXACT_BELOW {
        return (b, b);
    }
    let e = 6 + (b - EXACT_BELOW) / SUB_BUCKETS;
    let sub = (b - EXACT_BELOW) % SUB_BUCKETS;
    let low = (SUB_BUCKETS + sub) << (e - 5);
    (low, low.saturating_add((1u64 << (e - 5)) - 1))
}

impl LatencyHistogram {
    /// The histogram of one value, ms.
    pub fn of(ms: u64) -> LatencyHistogram {
        LatencyHistogram { counts: BTreeMap::from([(bucket_of(ms), 1)]) }
    }

    /// Values counted.
    pub fn count(&self) -> i64 {
        self.counts.values().fold(0i64, |a, c| a.saturating_add(*c))
    }

    /// True when nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Adds `other`'s counts.
    pub fn merge_from(&mut self, other: &LatencyHistogram) {
        for (b, c) in &other.counts {
            let held = self.counts.entry(*b).or_insert(0);
            *held = held.saturating_add(*c);
        }
    }

    /// The `per_mille`/1000 quantile, ms (nearest rank, the bucket's highest value); `None` when
    /// empty. `per_mille` is clamped to 1..=1000 (p50 = 500, p99 = 990).
    pub fn quantile(&self, per_mille: u32) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let q = i128::from(per_mille.clamp(1, 1000));
        let rank = ((q * i128::from(n) + 999) / 1000).max(1);
        let mut seen = 0i128;
        for (b, c) in &self.counts {
            seen += i128::from(*c);
            if seen >= rank {
                return Some(bucket_bounds(*b).1);
            }
        }
        self.counts.keys().next_back().map(|b| bucket_bounds(*b).1)
    }

    /// The stored text: `bucket:count` pairs in bucket order, joined by `,` (empty when empty).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, (b, c)) in self.counts.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("{b}:{c}"));
        }
        out
    }

    /// Reads [`LatencyHistogram::to_text`] back.
    ///
    /// Errors: a message naming the bad pair.
    pub fn from_text(text: &str) -> Result<LatencyHistogram, String> {
        let mut counts = BTreeMap::new();
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let parsed = pair.split_once(':').and_then(|(b, c)| Some((b.parse::<u16>().ok()?, c.parse::<i64>().ok()?)));
            match parsed {
                Some((b, c)) if c > 0 && b <= bucket_of(u64::MAX) => {
                    if counts.insert(b, c).is_some() {
                        return Err(format!("bucket {b} appears twice"));
                    }
                }
                _ => return Err(format!("bad bucket:count pair {pair:?}")),
            }
        }
        Ok(LatencyHistogram { counts })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn buckets_are_exact_below_64_and_within_a_32nd_above() {
        for v in 0..64 {
            assert_eq!(bucket_bounds(bucket_of(v)), (v, v));
        }
        let mut last = 0;
        for v in [64u64, 65, 127, 128, 129, 1000, 1023, 1024, 60_000, 3_600_000, u64::MAX / 3, u64::MAX] {
            let b = bucket_of(v);
            let (lo, hi) = bucket_bounds(b);
            assert!(lo <= v && v <= hi, "{v} in [{lo}, {hi}]");
            assert!((hi - lo) <= lo / 32, "{v}: width {} of {lo}", hi - lo);
            assert!(b >= last);
            last = b;
        }
        assert_eq!(bucket_of(u64::MAX), 64 + 57 * 32 + 31);
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut h = LatencyHistogram::default();
        for v in 1..=100u64 {
            h.merge_from(&LatencyHistogram::of(v % 50));
        }
        // Values 0..=49 twice each: the 50th smallest is 24, the 95th 47, the 99th 49.
        assert_eq!((h.quantile(500), h.quantile(950), h.quantile(990)), (Some(24), Some(47), Some(49)));
        assert_eq!(LatencyHistogram::default().quantile(500), None);
        assert_eq!(LatencyHistogram::from_text(&h.to_text()), Ok(h));
        for bad in ["1", "1:0", "x:1", "1:1,1:2", "9999:1"] {
            assert!(LatencyHistogram::from_text(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Merge in any grouping and order gives the same histogram (and text); its quantiles
        /// bound the true nearest-rank values from above within a bucket.
        #[test]
        fn merge_is_order_free_and_quantiles_bound_the_truth(values in proptest::collection::vec(0u64..200_000, 1..200), split in 0usize..200) {
            let split = split.min(values.len());
            let fold = |vs: &[u64]| vs.iter().fold(LatencyHistogram::default(), |mut h, v| { h.merge_from(&LatencyHistogram::of(*v)); h });
            let whole = fold(&values);
            let mut parts = fold(&values[split..]);
            parts.merge_from(&fold(&values[..split]));
            prop_assert_eq!(&parts, &whole);
            prop_assert_eq!(parts.to_text(), whole.to_text());
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for q in [500u32, 950, 990] {
                let rank = (q as usize * sorted.len()).div_ceil(1000).max(1);
                let truth = sorted[rank - 1];
                let got = whole.quantile(q).expect("non-empty");
                prop_assert!(got >= truth && got - truth <= truth / 32 + 1, "q{q}: {got} vs {truth}");
            }
        }
    }
}
