//! The `access` view (DESIGN §4): (client host, status class) × 1-minute tumbling event-time
//! window → requests, response bytes, and a latency histogram with integer buckets
//! ([`LatencyHistogram`]) giving p50/p95/p99.
//!
//! The key is `"<host> <class>"` (a host holds no whitespace: [`AccessEvent::validate`]), e.g.
//! `"203.0.113.9 4xx"`. `prism.access_logs` is keyed by host, so every event of a key arrives on
//! one partition. [`Access`] is a commutative monoid (sums and a histogram merge), so every
//! layer stores identical bytes for the same events.

use super::columns::{Column, ColumnType, DecodeError, Value, ValueReader};
use super::latency::LatencyHistogram;
use super::{Monoid, View};
use crate::event::{AccessEvent, EventError, LogPosition, ACCESS_LOGS_TOPIC};
use crate::time::{DAY_MS, MINUTE_MS};

/// The `access` aggregate of one window (or a merge of windows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Requests logged.
    pub requests: i64,
    /// Σ response body bytes.
    pub bytes: i64,
    /// Latencies, ms, of the requests whose line says (JSON lines with `duration_ms`).
    pub latency: LatencyHistogram,
}

impl Access {
    /// The aggregate of one request.
    pub fn of_request(bytes: i64, duration_ms: Option<u64>) -> Access {
        Access { requests: 1, bytes, latency: duration_ms.map(LatencyHistogram::of).unwrap_or_default() }
    }
}

impl Monoid for Access {
    fn empty() -> Self {
        Access::default()
    }

    fn merge(&self, other: &Self) -> Self {
        let mut out = self.clone();
        out.merge_from(other);
        out
    }

    fn merge_from(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.latency.merge_from(&other.latency);
    }
}

/// A parsed access event with its view key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedAccess {
    /// The event.
    pub event: AccessEvent,
    /// `"<host> <class>"`.
    pub key: String,
}

/// The `access` view's key of `host` and status class `class` (`2xx`).
pub fn access_key(host: &str, class: &str) -> String {
    format!("{host} {class}")
}

/// Splits an `access` key into (host, status class). `None` for a key not of that shape.
pub fn split_access_key(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once(' ')
}

/// Served intervals of the `access` view: 1m, 5m, 15m, 1h, 1d (UTC days).
pub const ACCESS_INTERVALS_MS: [i64; 5] = [MINUTE_MS, 5 * MINUTE_MS, 15 * MINUTE_MS, 60 * MINUTE_MS, DAY_MS];

/// Version of the aggregate's code; part of the fingerprint.
const ACCESS_CODE_VERSION: u32 = 1;

/// The stored columns of an [`Access`]: requests, bytes, and the latency histogram as
/// `bucket:count,…` text ([`LatencyHistogram::to_text`]).
pub const ACCESS_COLUMNS: [Column; 3] =
    [Column::new("requests", ColumnType::Int), Column::new("bytes", ColumnType::Int), Column::new("latency_buckets", ColumnType::Text)];

/// The `access` view of `prism.access_logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessView {
    allowed_lateness_ms: i64,
}

impl AccessView {
    /// The standard `access` view: 1-minute windows served at 1m, 5m, 15m, 1h and 1d.
    pub fn standard(allowed_lateness_ms: i64) -> AccessView {
        AccessView { allowed_lateness_ms }
    }
}

impl View for AccessView {
    type Event = KeyedAccess;
    type Agg = Access;

    fn name(&self) -> &str {
        "access"
    }

    fn source_topic(&self) -> &str {
        ACCESS_LOGS_TOPIC
    }

    fn realtime_table(&self) -> &'static str {
        "access_realtime"
    }

    fn key_column(&self) -> &'static str {
        "host_status_class"
    }

    fn parse(&self, value: &[u8]) -> Result<KeyedAccess, EventError> {
        let event = AccessEvent::from_json(value)?;
        let key = access_key(&event.host, event.status_class());
        Ok(KeyedAccess { event, key })
    }

    fn key<'e>(&self, event: &'e KeyedAccess) -> &'e str {
        &event.key
    }

    fn event_time(&self, event: &KeyedAccess) -> i64 {
        event.event.ts
    }

    fn contribution(&self, event: &KeyedAccess, _pos: LogPosition) -> Access {
        // Validated: bytes fits i64.
        Access::of_request(i64::try_from(event.event.bytes).unwrap_or(i64::MAX), event.event.duration_ms)
    }

    fn window_ms(&self) -> i64 {
        MINUTE_MS
    }

    fn intervals_ms(&self) -> &[i64] {
        &ACCESS_INTERVALS_MS
    }

    fn allowed_lateness_ms(&self) -> i64 {
        self.allowed_lateness_ms
    }

    fn events_in(&self, agg: &Access) -> i64 {
        agg.requests
    }

    fn columns(&self) -> &'static [Column] {
        &ACCESS_COLUMNS
    }

    fn encode(&self, a: &Access, out: &mut Vec<Value>) {
        out.extend([Value::Int(a.requests), Value::Int(a.bytes), Value::Text(a.latency.to_text())]);
    }

    fn decode(&self, values: &[Value]) -> Result<Access, DecodeError> {
        let mut r = ValueReader::new(&ACCESS_COLUMNS, values);
        let requests = r.int()?;
        let bytes = r.int()?;
        let latency = LatencyHistogram::from_text(r.text()?).map_err(|reason| DecodeError { column: ACCESS_COLUMNS[2].name, reason })?;
        Ok(Access { requests, bytes, latency })
    }

    fn fingerprint(&self) -> String {
        format!(
            "access/code={ACCESS_CODE_VERSION};window_ms={MINUTE_MS};intervals_ms={:?};allowed_lateness_ms={};latency=log-linear-5bit-ms",
            ACCESS_INTERVALS_MS, self.allowed_lateness_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_access() -> impl Strategy<Value = Access> {
        proptest::collection::vec((0i64..100_000, proptest::option::of(0u64..100_000)), 0..8)
            .prop_map(|rs| rs.into_iter().fold(Access::empty(), |acc, (b, d)| acc.merge(&Access::of_request(b, d))))
    }

    proptest! {
        #[test]
        fn merge_is_a_commutative_monoid(a in arb_access(), b in arb_access(), c in arb_access()) {
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&Access::empty()), a.clone());
            let view = AccessView::standard(5_000);
            let mut values = Vec::new();
            view.encode(&a, &mut values);
            prop_assert_eq!(view.decode(&values), Ok(a));
        }
    }

    #[test]
    fn parses_keys_and_contributions() {
        let view = AccessView::standard(5_000);
        let e = view.parse(br#"{"ts":60000,"host":"10.0.0.1","status":503,"bytes":7,"duration_ms":120}"#).expect("valid");
        assert_eq!(view.key(&e), "10.0.0.1 5xx");
        assert_eq!(split_access_key(view.key(&e)), Some(("10.0.0.1", "5xx")));
        let a = view.contribution(&e, LogPosition { partition: 0, offset: 0 });
        assert_eq!((a.requests, a.bytes, a.latency.count(), a.latency.quantile(500)), (1, 7, 1, Some(121)));
        assert!(view.parse(br#"{"ts":60000,"host":"10.0.0.1","status":99}"#).is_err());
        let mut values = Vec::new();
        view.encode(&a, &mut values);
        values[2] = Value::Text("garbage".into());
        assert!(view.decode(&values).is_err());
    }
}
