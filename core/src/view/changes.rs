//! The `changes` view (DESIGN §4) of one CDC table: operation × 1-minute tumbling event-time
//! window → change count, plus, for tables that ask for it, the current row per primary key.
//!
//! One registered view per table (`changes:<db>.<schema>.<table>`, view name
//! `changes.<db>.<schema>.<table>`), reading `prism.cdc.<db>.<schema>.<table>`. The key is the
//! operation (`c`, `u`, `d`, `r`, `t`); the table is the view's. The event time is the commit
//! time (`source.ts_ms`).
//!
//! **Exactly-once over at-least-once delivery.** `prism ingest-cdc` may append a transaction
//! again after a crash. Each change names its row (the record key: the primary key as JSON) and
//! its sequence (commit LSN, LSN) — (consistent point, 0) for snapshot rows, so every streamed
//! change sorts after the snapshot — which grows strictly per row; the layers drop a change whose
//! sequence is not above the last one applied for its row ([`View::entity_change`]). The topic is
//! keyed by primary key, so an operation's changes span partitions
//! ([`View::key_spans_partitions`]).
//!
//! **Current rows** (`:rows`): the row after the last change by sequence, a delete leaving a
//! tombstone; a primary-key update also deletes the former key; a truncate (`t`, record key
//! `{}`) hides every row older than it. Under `REPLICA IDENTITY DEFAULT` an unchanged TOASTed
//! value is absent from `after` (see `docs/operations.md`), so the kept row lacks it.

use serde_json::{Map, Value as Json};

use super::columns::{Column, ColumnType, DecodeError, Value, ValueReader};
use super::{EntityChange, EntitySeq, Monoid, View};
use crate::event::{CdcEnvelope, EventError, LogPosition, CDC_TOPIC_PREFIX};
use crate::time::{DAY_MS, MINUTE_MS};

/// The `changes` aggregate of one window: how many changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changes applied (each counted once, redeliveries dropped).
    pub changes: i64,
}

impl Monoid for Changes {
    fn empty() -> Self {
        Changes::default()
    }

    fn merge(&self, other: &Self) -> Self {
        Changes { changes: self.changes.saturating_add(other.changes) }
    }
}

/// A parsed change: what the view needs of a [`CdcEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `c`, `u`, `d`, `r` or `t`.
    pub op: String,
    /// Commit time, UTC ms (the event time).
    pub commit_ms: i64,
    /// The row's primary key as canonical JSON (keys sorted), `{}` for a truncate.
    pub entity: String,
    /// The change's sequence.
    pub seq: EntitySeq,
    /// The row after the change as JSON, when the view keeps rows and the row exists.
    pub row: Option<String>,
    /// The former primary key, when an update changed it.
    pub moved_from: Option<String>,
}

/// Served intervals of the `changes` view: 1m, 5m, 15m, 1h, 1d (UTC days).
pub const CHANGES_INTERVALS_MS: [i64; 5] = [MINUTE_MS, 5 * MINUTE_MS, 15 * MINUTE_MS, 60 * MINUTE_MS, DAY_MS];

/// Operations a change may have: insert, update, delete, snapshot read, truncate.
pub const CHANGE_OPS: [&str; 5] = ["c", "u", "d", "r", "t"];

/// Version of the aggregate's code; part of the fingerprint.
const CHANGES_CODE_VERSION: u32 = 1;

/// The stored columns of a [`Changes`].
pub const CHANGES_COLUMNS: [Column; 1] = [Column::new("changes", ColumnType::Int)];

/// The `changes` view of one CDC table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesView {
    name: String,
    topic: String,
    db: String,
    schema: String,
    table: String,
    keep_rows: bool,
    allowed_lateness_ms: i64,
}

impl ChangesView {
    /// The `changes` view of `<db>.<schema>.<table>`, keeping current rows when `keep_rows`.
    ///
    /// Errors: a message when a part is empty or holds a character outside
    /// `A-Z a-z 0-9 _ -` (what a Kafka topic name can carry).
    pub fn new(db: &str, schema: &str, table: &str, keep_rows: bool, allowed_lateness_ms: i64) -> Result<ChangesView, String> {
        for (what, part) in [("database", db), ("schema", schema), ("table", table)] {
            if part.is_empty() || part.len() > 63 || !part.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
                return Err(format!("{what} {part:?}: 1–63 characters of A-Z a-z 0-9 _ -"));
            }
        }
        Ok(ChangesView {
            name: format!("changes.{db}.{schema}.{table}"),
            topic: format!("{CDC_TOPIC_PREFIX}{db}.{schema}.{table}"),
            db: db.into(),
            schema: schema.into(),
            table: table.into(),
            keep_rows,
            allowed_lateness_ms,
        })
    }

    /// Parses a registry entry `changes:<db>.<schema>.<table>[:rows]`'s part after `changes:`.
    ///
    /// Errors: a message saying the expected shape.
    pub fn from_spec(spec: &str, allowed_lateness_ms: i64) -> Result<ChangesView, String> {
        let (table, keep_rows) = match spec.strip_suffix(":rows") {
            Some(t) => (t, true),
            None => (spec, false),
        };
        let parts: Vec<&str> = table.split('.').collect();
        let [db, schema, table] = parts.as_slice() else {
            return Err(format!(
                "changes:{spec}: use changes:<db>.<schema>.<table>, or changes:<db>.<schema>.<table>:rows to keep current rows"
            ));
        };
        ChangesView::new(db, schema, table, keep_rows, allowed_lateness_ms)
    }

    /// `<schema>.<table>` (what `/v1/changes/{table}` names).
    pub fn table(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The database.
    pub fn db(&self) -> &str {
        &self.db
    }

    /// Whether the view keeps the current row per primary key.
    pub fn keeps_rows(&self) -> bool {
        self.keep_rows
    }
}

/// `value` (a JSON object) re-serialized canonically: keys sorted, no whitespace.
fn canonical(map: &Map<String, Json>) -> String {
    // serde_json's Map is a BTreeMap here (no `preserve_order`): keys come out sorted.
    Json::Object(map.clone()).to_string()
}

/// The canonical form of a primary key given as JSON text (an object), as the view stores it.
///
/// Errors: a message when `text` is not a JSON object.
pub fn canonical_key(text: &[u8]) -> Result<String, String> {
    match serde_json::from_slice::<Json>(text) {
        Ok(Json::Object(m)) => Ok(canonical(&m)),
        Ok(_) => Err("the primary key must be a JSON object, e.g. {\"id\":42}".into()),
        Err(e) => Err(format!("the primary key is not JSON: {e}")),
    }
}

impl View for ChangesView {
    type Event = Change;
    type Agg = Changes;

    fn name(&self) -> &str {
        &self.name
    }

    fn source_topic(&self) -> &str {
        &self.topic
    }

    fn realtime_table(&self) -> &'static str {
        "changes_realtime"
    }

    fn key_column(&self) -> &'static str {
        "op"
    }

    fn parse(&self, _value: &[u8]) -> Result<Change, EventError> {
        Err(EventError::Invalid("a change needs its record key (the primary key)".into()))
    }

    fn parse_record(&self, key: Option<&[u8]>, value: &[u8]) -> Result<Change, EventError> {
        let envelope: CdcEnvelope = serde_json::from_slice(value).map_err(|e| EventError::Malformed(e.to_string()))?;
        let s = &envelope.source;
        if (s.db.as_str(), s.schema.as_str(), s.table.as_str()) != (self.db.as_str(), self.schema.as_str(), self.table.as_str()) {
            return Err(EventError::Invalid(format!("a change of {}.{}.{} on the topic of {}", s.db, s.schema, s.table, self.name)));
        }
        if !CHANGE_OPS.contains(&envelope.op.as_str()) {
            return Err(EventError::Invalid(format!("op {:?}: use c, u, d, r or t", envelope.op)));
        }
        if s.snapshot != (envelope.op == "r") {
            return Err(EventError::Invalid("source.snapshot is true exactly for op \"r\"".into()));
        }
        let key = key.ok_or_else(|| EventError::Invalid("a change needs its record key (the primary key)".into()))?;
        let entity = canonical_key(key).map_err(EventError::Invalid)?;
        if (envelope.op == "t") != (entity == "{}") {
            return Err(EventError::Invalid("the record key is {} exactly for a truncate".into()));
        }
        let as_i64 = |v: u64, what: &str| i64::try_from(v).map_err(|_| EventError::Invalid(format!("{what} {v} is past 2^63")));
        let lsn = as_i64(s.lsn, "source.lsn")?;
        let commit = as_i64(s.commit_lsn.unwrap_or(s.lsn), "source.commit_lsn")?;
        // Snapshot rows at (consistent point, 0): before every change streamed after it.
        let seq = if s.snapshot { EntitySeq { major: commit, minor: 0 } } else { EntitySeq { major: commit, minor: lsn } };
        let row = match (&envelope.after, self.keep_rows) {
            (Some(after), true) => Some(canonical(after)),
            _ => None,
        };
        // A primary-key update: `before` holds the old key columns (or the old row).
        let moved_from = match (&envelope.op[..], &envelope.before, serde_json::from_str::<Json>(&entity)) {
            ("u", Some(before), Ok(Json::Object(new_key))) => {
                let old: Option<Map<String, Json>> = new_key.keys().map(|k| before.get(k).map(|v| (k.clone(), v.clone()))).collect();
                old.map(|o| canonical(&o)).filter(|o| *o != entity)
            }
            _ => None,
        };
        Ok(Change { op: envelope.op, commit_ms: s.ts_ms, entity, seq, row, moved_from })
    }

    fn key<'e>(&self, event: &'e Change) -> &'e str {
        &event.op
    }

    fn event_time(&self, event: &Change) -> i64 {
        event.commit_ms
    }

    fn contribution(&self, _event: &Change, _pos: LogPosition) -> Changes {
        Changes { changes: 1 }
    }

    fn window_ms(&self) -> i64 {
        MINUTE_MS
    }

    fn intervals_ms(&self) -> &[i64] {
        &CHANGES_INTERVALS_MS
    }

    fn allowed_lateness_ms(&self) -> i64 {
        self.allowed_lateness_ms
    }

    fn events_in(&self, agg: &Changes) -> i64 {
        agg.changes
    }

    fn columns(&self) -> &'static [Column] {
        &CHANGES_COLUMNS
    }

    fn encode(&self, a: &Changes, out: &mut Vec<Value>) {
        out.push(Value::Int(a.changes));
    }

    fn decode(&self, values: &[Value]) -> Result<Changes, DecodeError> {
        let mut r = ValueReader::new(&CHANGES_COLUMNS, values);
        Ok(Changes { changes: r.int()? })
    }

    fn fingerprint(&self) -> String {
        format!(
            "changes/code={CHANGES_CODE_VERSION};table={}.{}.{};rows={};window_ms={MINUTE_MS};intervals_ms={:?};allowed_lateness_ms={};seq=commit_lsn,lsn",
            self.db, self.schema, self.table, self.keep_rows, CHANGES_INTERVALS_MS, self.allowed_lateness_ms
        )
    }

    fn key_spans_partitions(&self) -> bool {
        true
    }

    fn tracks_entities(&self) -> bool {
        true
    }

    fn entity_change<'e>(&self, event: &'e Change) -> Option<EntityChange<'e>> {
        Some(EntityChange {
            entity: &event.entity,
            seq: event.seq,
            state: event.row.as_deref(),
            deleted: matches!(event.op.as_str(), "d" | "t"),
            moved_from: event.moved_from.as_deref(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn view(rows: bool) -> ChangesView {
        ChangesView::from_spec(if rows { "lab.public.flights:rows" } else { "lab.public.flights" }, 5_000).expect("valid spec")
    }

    fn envelope(op: &str, before: &str, after: &str, lsn: u64, commit: u64, snapshot: bool) -> Vec<u8> {
        format!(
            r#"{{"before":{before},"after":{after},"source":{{"connector":"postgresql","db":"lab","schema":"public","table":"flights","lsn":{lsn},"commit_lsn":{commit},"txId":null,"ts_ms":60000,"snapshot":{snapshot}}},"op":"{op}","ts_ms":1}}"#
        )
        .into_bytes()
    }

    #[test]
    fn parses_changes_with_sequences_rows_and_moved_keys() {
        let v = view(true);
        assert_eq!(v.name(), "changes.lab.public.flights");
        assert_eq!(v.source_topic(), "prism.cdc.lab.public.flights");
        assert_eq!(v.table(), "public.flights");
        let snap = v.parse_record(Some(br#"{"id": 1}"#), &envelope("r", "null", r#"{"id":1,"b":2,"a":1}"#, 100, 100, true)).expect("valid");
        assert_eq!((snap.entity.as_str(), snap.seq), (r#"{"id":1}"#, EntitySeq { major: 100, minor: 0 }));
        assert_eq!(snap.row.as_deref(), Some(r#"{"a":1,"b":2,"id":1}"#));
        let ins = v.parse_record(Some(br#"{"id":1}"#), &envelope("c", "null", r#"{"id":1}"#, 90, 100, false)).expect("valid");
        // A change of a transaction committed at the consistent point still sorts after the
        // snapshot row although its own LSN is lower.
        assert!(ins.seq > snap.seq);
        let moved = v.parse_record(Some(br#"{"id":2}"#), &envelope("u", r#"{"id":1}"#, r#"{"id":2}"#, 120, 130, false)).expect("valid");
        assert_eq!(moved.moved_from.as_deref(), Some(r#"{"id":1}"#));
        let same =
            v.parse_record(Some(br#"{"id":2}"#), &envelope("u", r#"{"id":2,"x":0}"#, r#"{"id":2}"#, 140, 150, false)).expect("valid");
        assert_eq!(same.moved_from, None);
        let del = v.parse_record(Some(br#"{"id":2}"#), &envelope("d", r#"{"id":2}"#, "null", 160, 170, false)).expect("valid");
        let change = v.entity_change(&del).expect("an entity change");
        assert!(change.deleted && change.state.is_none());
        let t = v.parse_record(Some(b"{}"), &envelope("t", "null", "null", 180, 190, false)).expect("valid");
        assert_eq!((t.entity.as_str(), v.key(&t)), ("{}", "t"));
        assert_eq!(
            view(false).parse_record(Some(br#"{"id":1}"#), &envelope("c", "null", r#"{"id":1}"#, 1, 2, false)).expect("valid").row,
            None
        );
    }

    #[test]
    fn refuses_what_breaks_the_contract() {
        let v = view(false);
        let ok = envelope("c", "null", r#"{"id":1}"#, 1, 2, false);
        assert!(v.parse_record(None, &ok).is_err(), "no record key");
        assert!(v.parse_record(Some(b"[1]"), &ok).is_err(), "key not an object");
        assert!(v.parse_record(Some(b"{}"), &ok).is_err(), "empty key for an insert");
        assert!(v.parse_record(Some(br#"{"id":1}"#), &envelope("x", "null", "null", 1, 2, false)).is_err(), "unknown op");
        assert!(v.parse_record(Some(br#"{"id":1}"#), &envelope("r", "null", "{}", 1, 2, false)).is_err(), "r without snapshot");
        let other = String::from_utf8(ok.clone()).expect("utf-8").replace("flights", "planes");
        assert!(v.parse_record(Some(br#"{"id":1}"#), other.as_bytes()).is_err(), "another table");
        assert!(v.parse_record(Some(br#"{"id":1}"#), b"not json").is_err());
        assert!(ChangesView::from_spec("lab.flights", 0).is_err());
        assert!(ChangesView::from_spec("lab.public.fl ights", 0).is_err());
    }

    proptest! {
        #[test]
        fn merge_is_a_commutative_monoid(a in 0i64..1_000_000, b in 0i64..1_000_000, c in 0i64..1_000_000) {
            let (a, b, c) = (Changes { changes: a }, Changes { changes: b }, Changes { changes: c });
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&Changes::empty()), a);
            let v = view(false);
            let mut values = Vec::new();
            v.encode(&a, &mut values);
            prop_assert_eq!(v.decode(&values), Ok(a));
        }
    }
}
