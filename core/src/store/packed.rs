//! Realtime rows of one key read from SQLite packed into a single JSON text per answer part.
//!
//! sqlx runs each SQLite connection on a worker thread and hands every result row to the
//! calling task through a channel, duplicating each of its values (`sqlite3_value_dup`). A
//! 13-year daily answer read from realtime rows is 3,270 rows of 16 values: a `perf` profile
//! of it spent most of its 25–45 ms in thread wake-ups (one per row, the reader being faster
//! than the worker) and in `malloc`/`free` of the copied values, against about 2 ms for
//! SQLite's own lookups. Packed as `json_group_array(json_array(…))`, a part is one value
//! (SQLite's JSON functions render integers and text exactly), parsed here in one pass.
//!
//! The packed row is `[window_start, <the view's columns in order>]`: integers for
//! [`ColumnType::Int`], [`ColumnType::Price`] (micro-units) and [`ColumnType::Time`] (UTC ms),
//! strings for [`ColumnType::Money`] (decimal text) and [`ColumnType::Text`]. The key is the one
//! asked for and the interval the part's own, so neither is packed.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};

use super::StoreError;
use crate::decimal::Decimal6;
use crate::view::columns::{ColumnType, Value};
use crate::view::{View, ViewRow};

/// The SQL aggregate packing the rows of a subquery over `view`'s realtime table into one JSON
/// text (`[]` when there are none). The subquery must output `window_start` and the view's
/// columns under their own names.
pub(crate) fn packed_rows_expr<V: View>(view: &V) -> String {
    let mut cols = vec!["window_start"];
    cols.extend(view.columns().iter().map(|c| c.name));
    format!("json_group_array(json_array({}))", cols.join(", "))
}

/// `view`'s rows of `key` from a JSON text built by [`packed_rows_expr`], in its order.
///
/// Errors: [`StoreError::BadValue`] when the text is not such an array (a value of the wrong
/// type, a row of the wrong length, a money value that is not a decimal) or the view cannot
/// decode a row's values.
pub(crate) fn decode_packed_rows<V: View>(view: &V, key: &str, json: &str) -> Result<Vec<ViewRow<V::Agg>>, StoreError> {
    let mut rows = Vec::new();
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_seq(RowsVisitor { view, key, rows: &mut rows, values: Vec::with_capacity(view.columns().len()) })
        .and_then(|()| de.end())
        .map_err(|e| StoreError::BadValue(format!("packed realtime rows of {}: {e}", view.name())))?;
    Ok(rows)
}

/// Visits the outer array, one [`RowSeed`] per element; the values buffer is reused.
struct RowsVisitor<'a, V: View> {
    view: &'a V,
    key: &'a str,
    rows: &'a mut Vec<ViewRow<V::Agg>>,
    values: Vec<Value>,
}

impl<'de, V: View> Visitor<'de> for RowsVisitor<'_, V> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of packed realtime rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.rows.reserve(n);
        }
        while let Some(window_start_ms) = seq.next_element_seed(RowSeed { view: self.view, values: &mut self.values })? {
            let agg = self.view.decode(&self.values).map_err(A::Error::custom)?;
            self.rows.push(ViewRow { key: self.key.to_string(), window_start_ms, agg });
        }
        Ok(())
    }
}

/// One packed row: reads its window start (returned) and its values (into `values`).
struct RowSeed<'a, V> {
    view: &'a V,
    values: &'a mut Vec<Value>,
}

impl<'de, V: View> DeserializeSeed<'de> for RowSeed<'_, V> {
    type Value = i64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<i64, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, V: View> Visitor<'de> for RowSeed<'_, V> {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "[window_start, then the {} columns of {}]", self.view.columns().len(), self.view.name())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<i64, A::Error> {
        let short = || A::Error::custom(format!("a packed row of {} is short", self.view.name()));
        let window_start_ms: i64 = seq.next_element()?.ok_or_else(short)?;
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
        Ok(window_start_ms)
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
        let rows = decode_packed_rows(&v, "h\"ost 2xx", &json).expect("decoded");
        let got: Vec<_> = rows.iter().map(|r| (r.key.as_str(), r.window_start_ms, r.agg.clone())).collect();
        assert_eq!(got, vec![("h\"ost 2xx", 120_000, b), ("h\"ost 2xx", 60_000, a)]);
        assert!(decode_packed_rows(&v, "k", "[]").expect("empty").is_empty());
    }

    #[test]
    fn a_malformed_packing_is_a_bad_value_naming_the_view() {
        let v = OhlcvView::standard(0);
        let ok = "[60000,1000000,60001,0,1,1000000,1000000,1000000,60001,0,1,5,\"5.000000\",1]";
        assert_eq!(decode_packed_rows(&v, "A", &format!("[{ok}]")).expect("one row").len(), 1);
        for bad in [
            "[[60000,1]]".to_string(),
            format!("[{},7]]", &ok[..ok.len() - 1]),
            ok.replace("\"5.000000\"", "5"),
            format!("[{}]", ok.replace("\"5.000000\"", "\"five\"")),
            "{}".to_string(),
            format!("[{ok}] trailing"),
        ] {
            match decode_packed_rows(&v, "A", &bad) {
                Err(StoreError::BadValue(m)) => assert!(m.contains("ohlcv"), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
