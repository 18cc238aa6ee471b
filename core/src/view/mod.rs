//! Views, defined once and run by every layer (DESIGN §4).
//!
//! A [`View`] is a source topic, a parser from log record to event (or a reason for the
//! dead-letter topic), a key, a tumbling event-time window, an aggregate that is a commutative
//! [`Monoid`], the roll-up intervals it serves, a row codec ([`columns`]) and a definition
//! fingerprint. The speed layer, the batch job and the serving layer are generic over it, and a
//! deployment runs the views of its [`ViewRegistry`]; adding a view is one module here (plus its
//! realtime table's migration), not a copy of each layer.
//!
//! Because merge is associative and commutative, every path gives identical rows: batch and
//! speed layers, roll-ups pre-rolled or at read time, one instance or many.

pub mod access;
pub mod changes;
pub mod columns;
pub mod latency;
pub mod ohlcv;

use std::fmt::Debug;
use std::sync::Arc;

use crate::event::{EventError, LogPosition};
use crate::window::window_start;
use columns::{Column, DecodeError, Value};

/// A commutative monoid: [`Monoid::empty`] is the identity of [`Monoid::merge`], which is
/// associative and commutative (tested per implementation with property tests).
pub trait Monoid: Clone + PartialEq + Debug + Send + Sync + 'static {
    /// The identity.
    fn empty() -> Self;
    /// Combines two aggregates.
    fn merge(&self, other: &Self) -> Self;
    /// Merges `other` into `self` in place: the same result as [`Monoid::merge`], without
    /// building a new value (aggregates can be large; hot loops use this).
    fn merge_from(&mut self, other: &Self) {
        *self = self.merge(other);
    }
}

/// A view definition (DESIGN §4). Implementations are plain data (their parameters) plus the
/// functions below; all layers call only these.
pub trait View: Send + Sync + 'static {
    /// The parsed event.
    type Event: Send + Sync + 'static;
    /// The aggregate of one window.
    type Agg: Monoid;

    /// Registered name (`ohlcv`); used in store rows, segment paths, consumer names, metrics.
    fn name(&self) -> &str;
    /// The topic the view reads.
    fn source_topic(&self) -> &str;
    /// The realtime table that holds this view's rows (created by a migration; several views of
    /// one row shape may share a table, told apart by the `view` column).
    fn realtime_table(&self) -> &'static str;
    /// Name of the key column in segments and in the realtime table (`symbol`).
    fn key_column(&self) -> &'static str;
    /// Parses a log record's value; the error is the reason sent to the dead-letter topic.
    ///
    /// Errors: [`EventError`].
    fn parse(&self, value: &[u8]) -> Result<Self::Event, EventError>;
    /// Parses a log record from its key and value; the layers call this. Default: the value
    /// alone ([`View::parse`]); a view whose events need the record key (CDC: the primary key)
    /// overrides it.
    ///
    /// Errors: [`EventError`].
    fn parse_record(&self, key: Option<&[u8]>, value: &[u8]) -> Result<Self::Event, EventError> {
        let _ = key;
        self.parse(value)
    }
    /// The event's key (text; composite keys are joined by the view).
    fn key<'e>(&self, event: &'e Self::Event) -> &'e str;
    /// The event's event time, UTC ms.
    fn event_time(&self, event: &Self::Event) -> i64;
    /// The aggregate of this one event, read from the log at `pos`.
    fn contribution(&self, event: &Self::Event, pos: LogPosition) -> Self::Agg;
    /// The tumbling window length, ms (the base interval).
    fn window_ms(&self) -> i64;
    /// Every interval the view serves, ms, shortest first; the first is [`View::window_ms`] and
    /// each is a multiple of the one before, so each bucket is a union of base windows.
    fn intervals_ms(&self) -> &[i64];
    /// Allowed lateness, ms: watermark = max event time − this.
    fn allowed_lateness_ms(&self) -> i64;
    /// How many events were folded into `agg` (`ohlcv`: its trades); segments record it.
    fn events_in(&self, agg: &Self::Agg) -> i64;
    /// The aggregate's stored columns, in order.
    fn columns(&self) -> &'static [Column];
    /// Appends the aggregate's values to `out`, one per column of [`View::columns`].
    fn encode(&self, agg: &Self::Agg, out: &mut Vec<Value>);
    /// Reads an aggregate back from its column values.
    ///
    /// Errors: [`DecodeError`] when a value is missing or of the wrong type.
    fn decode(&self, values: &[Value]) -> Result<Self::Agg, DecodeError>;
    /// The definition fingerprint: every parameter that changes the rows, and the code version
    /// of the aggregate. Stored with every view version; a version built under another
    /// fingerprint is not served.
    fn fingerprint(&self) -> String;
    /// Whether one key's events may arrive on several partitions (`changes`: its key is the
    /// operation, its topic is keyed by primary key). Realtime rows then carry their partition
    /// in their primary key, each partition's owner updates its own row, and reads merge the
    /// partitions' rows (the aggregate is a commutative monoid). Default: `false` (a key lives on
    /// one partition: DESIGN §3's topics are keyed by the view key).
    fn key_spans_partitions(&self) -> bool {
        false
    }
    /// Whether events carry [`EntityChange`]s ([`View::entity_change`]); the speed layer then
    /// loads and keeps each partition's entity sequences. Default: `false`.
    fn tracks_entities(&self) -> bool {
        false
    }
    /// For views over a change stream delivered at least once (CDC): the entity (row) the event
    /// changes and the change's sequence. Every layer drops an event whose sequence is not above
    /// the last one applied for its entity (a redelivery: the source's sequence grows strictly
    /// per entity), so the view counts each change once; and the last state per entity (last
    /// write by sequence wins) is kept in the view store. Default: `None` (every event counts).
    fn entity_change<'e>(&self, event: &'e Self::Event) -> Option<EntityChange<'e>> {
        let _ = event;
        None
    }
}

/// The position of a change in its source, compared as a pair: for PostgreSQL (commit LSN, LSN)
/// (DESIGN §4: last write by (commit LSN, event LSN) wins). Grows strictly per entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntitySeq {
    /// The transaction's position (PostgreSQL: the commit record's LSN).
    pub major: i64,
    /// The change's position inside it (PostgreSQL: the change's LSN).
    pub minor: i64,
}

/// The entity an event changes ([`View::entity_change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityChange<'e> {
    /// The entity's key (CDC: the primary key as canonical JSON, `{"id":7}`).
    pub entity: &'e str,
    /// The change's sequence.
    pub seq: EntitySeq,
    /// The entity's state after the change: `Some(row JSON)`, or `None` when the view keeps no
    /// state for it or it was deleted (see `deleted`).
    pub state: Option<&'e str>,
    /// The change deleted the entity (or, for the entity `{}`, truncated the whole table).
    pub deleted: bool,
    /// The entity's former key when the change moved it to a new one (a primary-key update): the
    /// former key is deleted as of `seq`.
    pub moved_from: Option<&'e str>,
}

/// One row of a view: a key × window and its aggregate, at one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRow<A> {
    /// The key (a symbol for `ohlcv`).
    pub key: String,
    /// Window (bucket) start, UTC ms, aligned to the row's interval.
    pub window_start_ms: i64,
    /// The aggregate.
    pub agg: A,
}

/// The identity of a row at one interval: (interval ms, key, window start ms).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowId {
    /// Interval length, ms.
    pub interval_ms: i64,
    /// The key.
    pub key: String,
    /// Window start, UTC ms.
    pub window_start_ms: i64,
}

/// Calls `f` with `base` (rows at `intervals[0]`, the view's window, sorted by key and window
/// start) and then with its roll-up to each longer interval of `intervals` (ascending, as
/// [`View::intervals_ms`]). When each interval divides the next (1m → 5m → 15m → 1h → 1d) each
/// roll-up starts from the previous one, which the monoid makes exact and which reads far fewer
/// rows; otherwise each starts from `base`. At most two intervals' rows are held at once in the
/// nested case. The batch job and the hand-off write segments through this, so both hold the
/// same rows.
///
/// Errors: the first error `f` returns (later intervals are not rolled up).
pub fn for_each_interval<A: Monoid, E>(
    intervals: &[i64],
    base: Vec<ViewRow<A>>,
    mut f: impl FnMut(i64, &[ViewRow<A>]) -> Result<(), E>,
) -> Result<(), E> {
    let Some((&first, longer)) = intervals.split_first() else { return Ok(()) };
    f(first, &base)?;
    if intervals.windows(2).all(|w| w[1] % w[0] == 0) {
        let mut finer = base;
        for &interval_ms in longer {
            let rolled = roll_up(&finer, interval_ms);
            f(interval_ms, &rolled)?;
            finer = rolled;
        }
    } else {
        for &interval_ms in longer {
            f(interval_ms, &roll_up(&base, interval_ms))?;
        }
    }
    Ok(())
}

/// Merges `rows` (any interval finer than `interval_ms`) into buckets of `interval_ms`, sorted
/// by (key, bucket start). Rows already sorted by (key, window start) — as the batch job and
/// segments hold them — are merged in one linear pass; other rows through an ordered map.
pub fn roll_up<A: Monoid>(rows: &[ViewRow<A>], interval_ms: i64) -> Vec<ViewRow<A>> {
    let sorted = rows.windows(2).all(|w| (w[0].key.as_str(), w[0].window_start_ms) <= (w[1].key.as_str(), w[1].window_start_ms));
    if !sorted {
        let mut out: std::collections::BTreeMap<(&str, i64), A> = std::collections::BTreeMap::new();
        for r in rows {
            let start = window_start(r.window_start_ms, interval_ms);
            out.entry((r.key.as_str(), start)).and_modify(|a| a.merge_from(&r.agg)).or_insert_with(|| r.agg.clone());
        }
        return out.into_iter().map(|((key, window_start_ms), agg)| ViewRow { key: key.to_string(), window_start_ms, agg }).collect();
    }
    // Sorted by (key, start): a key's buckets come in order, so each row merges into the last
    // output row or starts the next one. The output is counted first and allocated once (a
    // year of the lab's minutes rolls up into hundreds of thousands of rows: growing by
    // doubling copied them and faulted fresh pages in at every step).
    let buckets = 1 + rows
        .windows(2)
        .filter(|w| {
            w[0].key != w[1].key || window_start(w[0].window_start_ms, interval_ms) != window_start(w[1].window_start_ms, interval_ms)
        })
        .count();
    let mut out: Vec<ViewRow<A>> = Vec::with_capacity(if rows.is_empty() { 0 } else { buckets });
    for r in rows {
        let start = window_start(r.window_start_ms, interval_ms);
        match out.last_mut() {
            Some(last) if last.window_start_ms == start && last.key == r.key => last.agg.merge_from(&r.agg),
            _ => out.push(ViewRow { key: r.key.clone(), window_start_ms: start, agg: r.agg.clone() }),
        }
    }
    out
}

/// A view a deployment runs. One variant per view *type*; several registered views may share a
/// type with other parameters. Code generic over [`View`] reaches the concrete view through
/// [`with_view!`](crate::with_view).
#[derive(Debug, Clone)]
pub enum RegisteredView {
    /// An `ohlcv`-shaped view of `prism.quotes`.
    Ohlcv(Arc<ohlcv::OhlcvView>),
    /// The `access` view of `prism.access_logs`.
    Access(Arc<access::AccessView>),
    /// A `changes` view of one CDC table's topic.
    Changes(Arc<changes::ChangesView>),
}

/// Runs `$body` with `$view` bound to the concrete `&Arc<V>` of a [`RegisteredView`], expanding
/// the body once per view type (one source, one type-checked copy per view type).
#[macro_export]
macro_rules! with_view {
    ($registered:expr, $view:ident => $body:expr) => {
        match $registered {
            $crate::view::RegisteredView::Ohlcv($view) => $body,
            $crate::view::RegisteredView::Access($view) => $body,
            $crate::view::RegisteredView::Changes($view) => $body,
        }
    };
}

impl RegisteredView {
    /// The registered name.
    pub fn name(&self) -> &str {
        with_view!(self, v => v.name())
    }

    /// The topic the view reads.
    pub fn source_topic(&self) -> &str {
        with_view!(self, v => v.source_topic())
    }
}

/// The views a deployment runs.
#[derive(Debug, Clone)]
pub struct ViewRegistry {
    views: Vec<RegisteredView>,
}

impl ViewRegistry {
    /// The default registry: `ohlcv` (symbol × 1 minute) with `allowed_lateness_ms`.
    pub fn standard(allowed_lateness_ms: i64) -> ViewRegistry {
        ViewRegistry { views: vec![RegisteredView::Ohlcv(Arc::new(ohlcv::OhlcvView::standard(allowed_lateness_ms)))] }
    }

    /// The registry of the views named in `names`, each with `allowed_lateness_ms`: `ohlcv`
    /// (1-minute bars), `ohlcv_30s` (30-second bars, also served at 1m…1d; a second view of
    /// the same source, to show that the bar length is part of a view's definition) and
    /// `access` (access-log requests per host and status class) and
    /// `changes:<db>.<schema>.<table>[:rows]` (a CDC table's changes per operation, `:rows` also
    /// keeping its current rows).
    ///
    /// Errors: a message naming an unknown view, a repeated one, or an empty list.
    pub fn from_names(names: &[String], allowed_lateness_ms: i64) -> Result<ViewRegistry, String> {
        let mut views: Vec<RegisteredView> = Vec::new();
        for name in names {
            let view = match name.as_str() {
                "ohlcv" => RegisteredView::Ohlcv(Arc::new(ohlcv::OhlcvView::standard(allowed_lateness_ms))),
                "ohlcv_30s" => RegisteredView::Ohlcv(Arc::new(ohlcv::OhlcvView::with_window("ohlcv_30s", 30_000, allowed_lateness_ms))),
                "access" => RegisteredView::Access(Arc::new(access::AccessView::standard(allowed_lateness_ms))),
                other => match other.strip_prefix("changes:") {
                    Some(spec) => RegisteredView::Changes(Arc::new(changes::ChangesView::from_spec(spec, allowed_lateness_ms)?)),
                    None => {
                        return Err(format!(
                            "view {other:?} is not known: use ohlcv, ohlcv_30s, access, changes:<db>.<schema>.<table>[:rows]"
                        ))
                    }
                },
            };
            let name = view.name();
            if views.iter().any(|v| v.name() == name) {
                return Err(format!("view {name:?} is listed twice"));
            }
            if let RegisteredView::Changes(c) = &view {
                if views.iter().any(|v| matches!(v, RegisteredView::Changes(o) if o.table() == c.table())) {
                    return Err(format!("table {} is listed twice (one database's CDC per deployment)", c.table()));
                }
            }
            views.push(view);
        }
        if views.is_empty() {
            return Err("no view to run: list at least one (ohlcv)".into());
        }
        Ok(ViewRegistry { views })
    }

    /// Every registered view.
    pub fn views(&self) -> &[RegisteredView] {
        &self.views
    }

    /// The topics the registered views read, each once, in registry order.
    pub fn source_topics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in &self.views {
            if !out.iter().any(|t| t == v.source_topic()) {
                out.push(v.source_topic().to_string());
            }
        }
        out
    }

    /// The `ohlcv`-shaped view named `name`, if registered.
    pub fn ohlcv(&self, name: &str) -> Option<Arc<ohlcv::OhlcvView>> {
        self.views.iter().find_map(|v| match v {
            RegisteredView::Ohlcv(o) if o.name() == name => Some(o.clone()),
            _ => None,
        })
    }

    /// The `access` view, if registered.
    pub fn access(&self) -> Option<Arc<access::AccessView>> {
        self.views.iter().find_map(|v| match v {
            RegisteredView::Access(a) => Some(a.clone()),
            _ => None,
        })
    }

    /// The `changes` view of `table` (`<schema>.<table>`), if registered.
    pub fn changes(&self, table: &str) -> Option<Arc<changes::ChangesView>> {
        self.views.iter().find_map(|v| match v {
            RegisteredView::Changes(c) if c.table() == table => Some(c.clone()),
            _ => None,
        })
    }

    /// Every registered `changes` view.
    pub fn changes_views(&self) -> Vec<Arc<changes::ChangesView>> {
        self.views
            .iter()
            .filter_map(|v| match v {
                RegisteredView::Changes(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// Adds a `changes` view unless one of its table is registered already.
    pub fn with_changes(mut self, view: changes::ChangesView) -> ViewRegistry {
        if self.changes(&view.table()).is_none() {
            self.views.push(RegisteredView::Changes(Arc::new(view)));
        }
        self
    }

    /// Adds the `access` view (with `allowed_lateness_ms`) unless it is registered already.
    pub fn with_access(mut self, allowed_lateness_ms: i64) -> ViewRegistry {
        if self.access().is_none() {
            self.views.push(RegisteredView::Access(Arc::new(access::AccessView::standard(allowed_lateness_ms))));
        }
        self
    }

    /// The `ohlcv`-shaped views (the ones the batch layer builds from the master dataset of
    /// quotes).
    pub fn ohlcv_views(&self) -> Vec<Arc<ohlcv::OhlcvView>> {
        self.views
            .iter()
            .filter_map(|v| match v {
                RegisteredView::Ohlcv(o) => Some(o.clone()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A count and a sum: enough of a monoid to check the roll-up's bookkeeping.
    #[derive(Debug, Clone, PartialEq)]
    struct CountSum(i64, i64);

    impl Monoid for CountSum {
        fn empty() -> Self {
            CountSum(0, 0)
        }
        fn merge(&self, other: &Self) -> Self {
            CountSum(self.0 + other.0, self.1 + other.1)
        }
    }

    proptest! {
        /// The linear pass over sorted rows and the ordered map over any order agree with a
        /// bucket-by-bucket sum.
        #[test]
        fn roll_up_of_sorted_and_shuffled_rows_agree(
            cells in proptest::collection::btree_map((0u8..4, -3_000i64..3_000), 1i64..100, 0..200),
            interval in prop::sample::select(vec![5i64, 15, 60, 1_440]),
        ) {
            let rows: Vec<ViewRow<CountSum>> = cells
                .iter()
                .map(|((k, minute), v)| ViewRow { key: format!("K{k}"), window_start_ms: minute * 60_000, agg: CountSum(1, *v) })
                .collect();
            let interval_ms = interval * 60_000;
            let sorted = roll_up(&rows, interval_ms);
            let mut shuffled = rows.clone();
            shuffled.reverse();
            shuffled.rotate_left(rows.len() / 3);
            prop_assert_eq!(&sorted, &roll_up(&shuffled, interval_ms));
            let mut expected: std::collections::BTreeMap<(String, i64), CountSum> = std::collections::BTreeMap::new();
            for r in &rows {
                let e = expected.entry((r.key.clone(), window_start(r.window_start_ms, interval_ms))).or_insert(CountSum::empty());
                *e = e.merge(&r.agg);
            }
            let expected: Vec<ViewRow<CountSum>> =
                expected.into_iter().map(|((key, window_start_ms), agg)| ViewRow { key, window_start_ms, agg }).collect();
            prop_assert_eq!(sorted, expected);
        }

        /// Nested or not, every interval gets the roll-up of the base rows, in interval order.
        #[test]
        fn for_each_interval_gives_each_interval_the_roll_up_of_the_base(
            cells in proptest::collection::btree_map((0u8..4, -3_000i64..3_000), 1i64..100, 0..200),
            intervals in prop::sample::select(vec![vec![1i64, 5, 15, 60, 1_440], vec![1, 2, 3, 7], vec![1, 60]]),
        ) {
            let base: Vec<ViewRow<CountSum>> = cells
                .iter()
                .map(|((k, minute), v)| ViewRow { key: format!("K{k}"), window_start_ms: minute * 60_000, agg: CountSum(1, *v) })
                .collect();
            let intervals_ms: Vec<i64> = intervals.iter().map(|i| i * 60_000).collect();
            let mut seen = Vec::new();
            for_each_interval(&intervals_ms, base.clone(), |interval_ms, rows| -> Result<(), ()> {
                seen.push((interval_ms, rows.to_vec()));
                Ok(())
            }).expect("no error");
            let expected: Vec<(i64, Vec<ViewRow<CountSum>>)> =
                intervals_ms.iter().map(|&i| (i, if i == 60_000 { base.clone() } else { roll_up(&base, i) })).collect();
            prop_assert_eq!(seen, expected);
            // The first error stops it.
            let mut calls = 0;
            prop_assert_eq!(for_each_interval(&intervals_ms, base, |_, _| { calls += 1; if calls == 2 { Err("stop") } else { Ok(()) } }), Err("stop"));
            prop_assert_eq!(calls, 2);
        }
    }
}
