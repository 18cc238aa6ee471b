//! PostgreSQL column values (as `pgoutput` sends them, in each type's text output format) → the
//! JSON values of a CDC envelope's `before`/`after` (DESIGN §3), for the CDC source (issue 9).
//!
//! The mapping follows Debezium's PostgreSQL connector where JSON allows it (Debezium
//! documentation, "PostgreSQL connector: data type mappings"), keeping exactness first:
//!
//! | PostgreSQL | JSON |
//! |---|---|
//! | `boolean` | `true` / `false` |
//! | `smallint`, `integer`, `bigint`, `oid` | number |
//! | `real`, `double precision` | number; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | `numeric` | **string**, exactly as PostgreSQL prints it (Debezium's `decimal.handling.mode=string`): a JSON number would lose digits in most readers |
//! | `json`, `jsonb` | the JSON value itself |
//! | `timestamptz` | RFC 3339 string in UTC (`2013-01-01T05:15:00Z`); `infinity` kept as text |
//! | one-dimensional arrays of the types above | JSON array of the element mapping (`NULL` → `null`) |
//! | everything else (`text`, `varchar`, `date`, `timestamp`, `uuid`, `bytea` as hex, multi-dimensional arrays, …) | string: the text output |
//!
//! SQL NULL is JSON `null`. An unchanged TOASTed value (`pgoutput` does not send it under
//! `REPLICA IDENTITY DEFAULT`) has no JSON value: [`to_json`] returns `None`, and the envelope
//! leaves the column out of `after` (Debezium writes a placeholder string instead; leaving it out
//! keeps "absent" distinct from every real value). `REPLICA IDENTITY FULL` sends every value.

use serde_json::{Number, Value};

use crate::pgoutput::Column;

/// Type OIDs from PostgreSQL's `pg_type.dat` (stable across versions).
pub mod oid {
    /// `boolean`.
    pub const BOOL: u32 = 16;
    /// `bigint`.
    pub const INT8: u32 = 20;
    /// `smallint`.
    pub const INT2: u32 = 21;
    /// `integer`.
    pub const INT4: u32 = 23;
    /// `oid`.
    pub const OID: u32 = 26;
    /// `json`.
    pub const JSON: u32 = 114;
    /// `real`.
    pub const FLOAT4: u32 = 700;
    /// `double precision`.
    pub const FLOAT8: u32 = 701;
    /// `numeric`.
    pub const NUMERIC: u32 = 1700;
    /// `timestamp with time zone`.
    pub const TIMESTAMPTZ: u32 = 1184;
    /// `jsonb`.
    pub const JSONB: u32 = 3802;
    /// `boolean[]`.
    pub const BOOL_ARRAY: u32 = 1000;
    /// `smallint[]`.
    pub const INT2_ARRAY: u32 = 1005;
    /// `integer[]`.
    pub const INT4_ARRAY: u32 = 1007;
    /// `text[]`.
    pub const TEXT_ARRAY: u32 = 1009;
    /// `varchar[]`.
    pub const VARCHAR_ARRAY: u32 = 1015;
    /// `bigint[]`.
    pub const INT8_ARRAY: u32 = 1016;
    /// `real[]`.
    pub const FLOAT4_ARRAY: u32 = 1021;
    /// `double precision[]`.
    pub const FLOAT8_ARRAY: u32 = 1022;
    /// `timestamptz[]`.
    pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
    /// `numeric[]`.
    pub const NUMERIC_ARRAY: u32 = 1231;
}

/// The element type of a known one-dimensional array type.
fn element_of(array_oid: u32) -> Option<u32> {
    Some(match array_oid {
        oid::BOOL_ARRAY => oid::BOOL,
        oid::INT2_ARRAY => oid::INT2,
        oid::INT4_ARRAY => oid::INT4,
        oid::INT8_ARRAY => oid::INT8,
        oid::FLOAT4_ARRAY => oid::FLOAT4,
        oid::FLOAT8_ARRAY => oid::FLOAT8,
        oid::NUMERIC_ARRAY => oid::NUMERIC,
        oid::TIMESTAMPTZ_ARRAY => oid::TIMESTAMPTZ,
        oid::TEXT_ARRAY | oid::VARCHAR_ARRAY => 25,
        _ => return None,
    })
}

/// The JSON value of a column of type `type_oid`; `None` for an unchanged TOASTed value (see the
/// module docs). Never fails: text that does not read as its type is kept as a string.
pub fn to_json(type_oid: u32, column: &Column) -> Option<Value> {
    match column {
        Column::Null => Some(Value::Null),
        Column::UnchangedToast => None,
        Column::Binary(bytes) => Some(Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect())),
        Column::Text(text) => Some(text_to_json(type_oid, text)),
    }
}

fn text_to_json(type_oid: u32, text: &str) -> Value {
    let as_string = || Value::String(text.to_string());
    match type_oid {
        oid::BOOL => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => as_string(),
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => {
            text.parse::<i64>().map(|n| Value::Number(n.into())).unwrap_or_else(|_| as_string())
        }
        oid::FLOAT4 | oid::FLOAT8 => text.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number).unwrap_or_else(as_string),
        oid::JSON | oid::JSONB => serde_json::from_str(text).unwrap_or_else(|_| as_string()),
        oid::TIMESTAMPTZ => timestamptz(text).map(Value::String).unwrap_or_else(as_string),
        other => match element_of(other) {
            Some(element) => array(text, element).unwrap_or_else(as_string),
            None => as_string(),
        },
    }
}

/// PostgreSQL's ISO output (`2013-01-01 05:15:00+00`, `…:00.123456+05:30`) → RFC 3339 UTC.
fn timestamptz(text: &str) -> Option<String> {
    // Offsets print as +HH, +HH:MM or +HH:MM:SS; chrono wants +HH:MM.
    let (at, sign) = text.char_indices().rev().find(|(_, c)| *c == '+' || *c == '-')?;
    let (stamp, offset) = text.split_at(at);
    let digits: Vec<&str> = offset[1..].split(':').collect();
    let (h, m, s) = match digits.as_slice() {
        [h] => (*h, "00", "00"),
        [h, m] => (*h, *m, "00"),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    if s != "00" {
        return None;
    }
    let normalized = format!("{stamp}{sign}{h}:{m}");
    let parsed = chrono::DateTime::parse_from_str(&normalized, "%Y-%m-%d %H:%M:%S%.f%:z").ok()?;
    Some(parsed.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// A one-dimensional array literal (`{a,"b c",NULL}`) → a JSON array of its elements mapped as
/// `element_oid`; `None` for anything else (multi-dimensional, bounds, malformed).
fn array(text: &str, element_oid: u32) -> Option<Value> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    if inner.is_empty() {
        return Some(Value::Array(Vec::new()));
    }
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let (item, quoted) = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next()? {
                    '\\' => s.push(chars.next()?),
                    '"' => break,
                    c => s.push(c),
                }
            }
            (s, true)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '"' {
                    return None;
                }
                s.push(c);
                chars.next();
            }
            (s, false)
        };
        out.push(if !quoted && item == "NULL" { Value::Null } else { text_to_json(element_oid, &item) });
        match chars.next() {
            None => return Some(Value::Array(out)),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(type_oid: u32, text: &str) -> Value {
        to_json(type_oid, &Column::Text(text.into())).expect("a value")
    }

    #[test]
    fn maps_each_type_exactly() {
        assert_eq!(t(oid::BOOL, "t"), json!(true));
        assert_eq!(t(oid::INT8, "-9223372036854775808"), json!(i64::MIN));
        assert_eq!(t(oid::FLOAT8, "1.5"), json!(1.5));
        assert_eq!(t(oid::FLOAT8, "NaN"), json!("NaN"));
        assert_eq!(t(oid::NUMERIC, "12345678901234567890.123456789"), json!("12345678901234567890.123456789"));
        assert_eq!(t(oid::JSONB, r#"{"k": [1, null]}"#), json!({"k": [1, null]}));
        assert_eq!(t(oid::TIMESTAMPTZ, "2013-01-01 05:15:00+00"), json!("2013-01-01T05:15:00Z"));
        assert_eq!(t(oid::TIMESTAMPTZ, "2013-01-01 05:15:00.25-05:30"), json!("2013-01-01T10:45:00.250Z"));
        assert_eq!(t(oid::TIMESTAMPTZ, "infinity"), json!("infinity"));
        assert_eq!(t(25, "plain"), json!("plain"));
        assert_eq!(to_json(25, &Column::Null), Some(Value::Null));
        assert_eq!(to_json(25, &Column::UnchangedToast), None);
    }

    #[test]
    fn maps_one_dimensional_arrays() {
        assert_eq!(t(oid::TEXT_ARRAY, r#"{a,"b c","q\"x",NULL,"NULL"}"#), json!(["a", "b c", "q\"x", null, "NULL"]));
        assert_eq!(t(oid::INT4_ARRAY, "{1,-2,NULL}"), json!([1, -2, null]));
        assert_eq!(t(oid::NUMERIC_ARRAY, "{1.10,2}"), json!(["1.10", "2"]));
        assert_eq!(t(oid::INT4_ARRAY, "{}"), json!([]));
        // Not one-dimensional: kept as PostgreSQL printed it.
        assert_eq!(t(oid::INT4_ARRAY, "{{1,2},{3,4}}"), json!("{{1,2},{3,4}}"));
        assert_eq!(t(oid::INT4_ARRAY, "[0:1]={1,2}"), json!("[0:1]={1,2}"));
    }

    proptest::proptest! {
        /// Any text of any type maps to some value without a panic.
        #[test]
        fn any_text_maps(type_oid in proptest::sample::select(vec![16u32, 20, 21, 23, 26, 114, 700, 701, 1700, 1184, 3802, 1000, 1007, 1009, 1231, 25]),
                         text in "\\PC{0,60}") {
            let _ = to_json(type_oid, &Column::Text(text));
        }
    }
}
