//! Realtime rows read from SQLite packed into one JSON text per answer part (or per page).
//!
//! sqlx runs each SQLite connection on a worker thread and hands every result row to the
//! calling task through a channel, duplicating each of its values (`sqlite3_value_dup`). A
//! 13-year daily answer read from realtime rows was 3,270 rows of 33 values (the row's own and
//! the snapshot statement's other, NULL, columns): a `perf` profile
//! of it spent most of its 25–45 ms in thread wake-ups (one per row, the reader being faster
//! than the worker) and in `malloc`/`free` of the copied values, against about 2 ms for
//! SQLite's own lookups. Packed as `json_group_array(json_array(…))`, a part is one value
//! (SQLite's JSON functions render integers and text exactly), parsed here in one pass.
//!
//! The hand-off reads a chunk's base rows of every key the same way, in pages of
//! [`PAGE_ROWS`] rows in (window start, key, partition) order within one read transaction
//! ([`realtime_rows_between_paged`]): it handed off about 100,000 rows a second through sqlx's
//! row-by-row path, which made it the bound of a Kappa lab catch-up.
//!
//! A packed row is `[window_start, <the view's columns in order>]` for the rows of one key
//! ([`Packing::OfKey`]: the key is the one asked for) or `[window_start, key, partition,
//! <columns>]` ([`Packing::Keyed`]); values are integers for [`ColumnType::Int`],
//! [`ColumnType::Price`] (micro-units) and [`ColumnType::Time`] (UTC ms), strings for
//! [`ColumnType::Money`] (decimal text) and [`ColumnType::Text`]. The interval is the query's
//! own, so it is not packed.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};
use sqlx::SqlitePool;

use super::{db, StoreError};
use crate::decimal::Decimal6;
use crate::view::columns::{ColumnType, Value};
use crate::view::{View, ViewRow};

/// Rows per page of [`realtime_rows_between_paged`] (about 3 MB of JSON for `ohlcv`).
pub(crate) const PAGE_ROWS: i64 = 20_000;

/// Which rows a packed text holds, and so the shape of each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Packing<'a> {
    /// Rows of this key: `[window_start, <columns>]`.
    OfKey(&'a str),
    /// Rows of any key: `[window_start, key, partition, <columns>]`.
    Keyed,
}

/// The SQL aggregate packing the rows of a subquery over `view`'s realtime table into one JSON
/// text (`[]` when there are none), for [`Packing::OfKey`] or, when `keyed`, [`Packing::Keyed`].
/// The subquery must output `window_start`, the key column and `partition` (when `keyed`) and
/// the view's columns under their own names.
pub(crate) fn packed_rows_expr<V: View>(view: &V, keyed: bool) -> String {
    let mut cols = vec!["window_start"];
    if keyed {
        cols.extend([view.key_column(), "partition"]);
    }
    cols.extend(view.columns().iter().map(|c| c.name));
    format!("json_group_array(json_array({}))", cols.join(", "))
}

/// Appends `view`'s rows from a JSON text built by [`packed_rows_expr`] to `out`, in the
/// text's order; returns the partition of the last row when the packing is
/// [`Packing::Keyed`] and the text not empty.
///
/// Errors: [`StoreError::BadValue`] when the text is not such an array (a value of the wrong
/// type, a row of the wrong length, a money value that is not a decimal) or the view cannot
/// decode a row's values.
pub(crate) fn decode_packed_rows<V: View>(
    view: &V,
    packing: Packing<'_>,
    json: &str,
    out: &mut Vec<ViewRow<V::Agg>>,
) -> Result<Option<i64>, StoreError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let visitor = RowsVisitor { view, packing, rows: out, values: Vec::with_capacity(view.columns().len()) };
    let last_partition = de
        .deserialize_seq(visitor)
        .and_then(|last| de.end().map(|()| last))
        .map_err(|e| StoreError::BadValue(format!("packed realtime rows of {}: {e}", view.name())))?;
    Ok(last_partition)
}

/// `view` `version`'s rows at `interval_ms` with window start in `[from_ms, to_ms)`, every
/// key, in (window start, key, partition) order, read from SQLite a page of [`PAGE_ROWS`] at a
/// time (keyset pagination over the window index) in one read transaction, so that every page
/// belongs to the same snapshot.
///
/// Errors: [`StoreError::Db`], [`StoreError::BadValue`] as [`decode_packed_rows`].
pub(crate) async fn realtime_rows_between_paged<V: View>(
    pool: &SqlitePool,
    view: &V,
    version: i64,
    interval_ms: i64,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ViewRow<V::Agg>>, StoreError> {
    // ?1 view, ?2 version, ?3 interval, ?4 window start of the cursor, ?5 to, ?6 key and
    // ?7 partition of the cursor (exclusive), ?8 page size. The plain range on window_start
    // keeps the index range scan; the cursor's tie-break is a filter on its first window.
    let sql = format!(
        "SELECT {packed} FROM (SELECT window_start, {key}, partition, {cols} FROM {table}
           WHERE view = ?1 AND view_version = ?2 AND interval_ms = ?3 AND window_start >= ?4 AND window_start < ?5
             AND (window_start > ?4 OR ({key}, partition) > (?6, ?7))
           ORDER BY window_start, {key}, partition LIMIT ?8)",
        packed = packed_rows_expr(view, true),
        key = view.key_column(),
        cols = view.columns().iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
        table = view.realtime_table(),
    );
    let mut tx = pool.begin().await.map_err(db("reading realtime rows"))?;
    let mut out = Vec::new();
    // Before every row: any key is >= "" and any partition > -1.
    let (mut cursor_start, mut cursor_key, mut cursor_partition) = (from_ms, String::new(), -1i64);
    loop {
        let json: String = sqlx::query_scalar(&sql)
            .bind(view.name())
            .bind(version)
            .bind(interval_ms)
            .bind(cursor_start)
            .bind(to_ms)
            .bind(&cursor_key)
            .bind(cursor_partition)
            .bind(PAGE_ROWS)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading realtime rows"))?;
        let before = out.len();
        let last_partition = decode_packed_rows(view, Packing::Keyed, &json, &mut out)?;
        match (out.last(), last_partition) {
            (Some(last), Some(partition)) if (out.len() - before) as i64 == PAGE_ROWS => {
                (cursor_start, cursor_key, cursor_partition) = (last.window_start_ms, last.key.clone(), partition);
            }
            _ => break,
        }
    }
    tx.rollback().await.map_err(db("reading realtime rows"))?;
    Ok(out)
}

/// Visits the outer array, one [`RowSeed`] per element; the values buffer is reused. Its value
/// is the last row's partition ([`Packing::Keyed`]).
struct RowsVisitor<'a, V: View> {
    view: &'a V,
    packing: Packing<'a>,
    rows: &'a mut Vec<ViewRow<V::Agg>>,
    values: Vec<Value>,
}

impl<'de, V: View> Visitor<'de> for RowsVisitor<'_, V> {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of packed realtime rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Option<i64>, A::Error> {
        let mut last_partition = None;
        while let Some((window_start_ms, key, partition)) =
            seq.next_element_seed(RowSeed { view: self.view, packing: self.packing, values: &mut self.values })?
        {
            let agg = self.view.decode(&self.values).map_err(A::Error::custom)?;
            last_partition = partition.or(last_partition);
            self.rows.push(ViewRow { key, window_start_ms, agg });
        }
        Ok(last_partition)
    }
}

/// One packed row: reads its window start, key and partition ([`Packing::Keyed`]; else the key
/// asked for and no partition), returned, and its values (into `values`).
struct RowSeed<'a, V> {
    view: &'a V,
    packing: Packing<'a>,
    values: &'a mut Vec<Value>,
}

impl<'de, V: View> DeserializeSeed<'de> for RowSeed<'_, V> {
    type Value = (i64, String, Option<i64>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, V: View> Visitor<'de> for RowSeed<'_, V> {
    type Value = (i64, String, Option<i64>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "[window_start, then the {} columns of {}]", self.view.columns().len(), self.view.name())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let short = || A::Error::custom(format!("a packed row of {} is short", self.view.name()));
        let window_start_ms: i64 = seq.next_element()?.ok_or_else(short)?;
        let (key, partition) = match self.packing {
            Packing::Keyed => (seq.next_element::<String>()?.ok_or_else(short)?, Some(seq.next_element::<i64>()?.ok_or_else(short)?)),
            Packing::OfKey(key) => (key.to_string(), None),
        };
        self.values.clear();
        for c in self.view.columns() {
            let value = match c.ty {
                ColumnType::Int => Value::Int(seq.next_element()?.ok_or_else(short)?),
                ColumnType::Price => Value::Price(Decimal6::from_units(seq.next_element::<i64>()?.ok_or_else(short)?.into())),
                ColumnType::Money => {
                    let text: &str = seq.next_element()?.ok_or_else(short)?;
                    Value::Money(text.parse().map_err(|e| A::Error::custom(format!("{} {text:?}: {e}", c.name)))?)
                }
                ColumnType::Time => Value::Time(seq.next_element()?.ok_or_else(short)?),
                ColumnType::Text => Value::Text(seq.next_element()?.ok_or_else(short)?),
            };
            self.values.push(value);
        }
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            return Err(A::Error::custom(format!("a packed row of {} is too long", self.view.name())));
        }
        Ok((window_start_ms, key, partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::access::{Access, AccessView};
    use crate::view::ohlcv::OhlcvView;
    use crate::view::Monoid;

    fn access_json(a: &Access) -> String {
        // As SQLite's json_array renders it: the text column as a JSON string.
        serde_json::to_string(&serde_json::json!([a.requests, a.bytes, a.latency.to_text()])).expect("json")
    }

    #[test]
    fn reads_rows_in_order_with_text_columns_and_escapes() {
        let v = AccessView::standard(0);
        let (a, b) = (Access::of_request(10, Some(3)), Access::of_request(7, None).merge(&Access::of_request(1, Some(900))));
        let row = |start: i64, agg: &Access| format!("[{start},{}", &access_json(agg)[1..]);
        let json = format!("[{},{}]", row(120_000, &b), row(60_000, &a));
        let mut rows = Vec::new();
        assert_eq!(decode_packed_rows(&v, Packing::OfKey("h\"ost 2xx"), &json, &mut rows).expect("decoded"), None);
        let got: Vec<_> = rows.iter().map(|r| (r.key.as_str(), r.window_start_ms, r.agg.clone())).collect();
        assert_eq!(got, vec![("h\"ost 2xx", 120_000, b), ("h\"ost 2xx", 60_000, a.clone())]);
        let mut none = Vec::new();
        assert_eq!(decode_packed_rows(&v, Packing::Keyed, "[]", &mut none).expect("empty"), None);
        assert!(none.is_empty());
        // Keyed: the key (any text) and partition follow the window start.
        let keyed = format!("[60000,\"a\\\"b\",3,{}", &access_json(&a)[1..]);
        let mut rows = Vec::new();
        assert_eq!(decode_packed_rows(&v, Packing::Keyed, &format!("[{keyed}]"), &mut rows).expect("keyed"), Some(3));
        assert_eq!((rows[0].key.as_str(), rows[0].window_start_ms, &rows[0].agg), ("a\"b", 60_000, &a));
    }

    #[test]
    fn a_malformed_packing_is_a_bad_value_naming_the_view() {
        let v = OhlcvView::standard(0);
        let ok = "[60000,1000000,60001,0,1,1000000,1000000,1000000,60001,0,1,5,\"5.000000\",1]";
        assert_eq!(decode_packed_rows(&v, Packing::OfKey("A"), &format!("[{ok}]"), &mut Vec::new()).expect("one row"), None);
        for bad in [
            "[[60000,1]]".to_string(),
            format!("[{},7]]", &ok[..ok.len() - 1]),
            ok.replace("\"5.000000\"", "5"),
            format!("[{}]", ok.replace("\"5.000000\"", "\"five\"")),
            "{}".to_string(),
            format!("[{ok}] trailing"),
        ] {
            match decode_packed_rows(&v, Packing::OfKey("A"), &bad, &mut Vec::new()) {
                Err(StoreError::BadValue(m)) => assert!(m.contains("ohlcv"), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
