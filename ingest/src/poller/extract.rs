//! A polled response → a [`Quote`]: each field found by its JSON pointer (RFC 6901).
//!
//! - price, bid, ask: a decimal string or a JSON number (exact: the workspace's serde_json keeps
//!   a number's text), at most 6 decimals;
//! - size: a whole number of shares, as a JSON integer or a string of digits;
//! - time: an RFC 3339 string (any offset) or whole UTC milliseconds (a JSON integer);
//! - symbol: a string, when a symbol pointer is set (else the polled symbol).
//!
//! A missing or `null` required field, a field of the wrong type, or a quote that fails
//! [`Quote::validate`] is refused with a reason naming the field and its pointer. Bid and ask
//! are optional: missing or `null` leaves them out of the quote.

use prism_core::decimal::Decimal6;
use prism_core::event::Quote;
use serde_json::Value;

/// Where each field of a quote is in the polled JSON (RFC 6901 pointers: `""` is the whole
/// document, `/last` the member `last`, `/data/0/px` a nested one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPointers {
    /// The last trade price (required).
    pub price: String,
    /// The last trade size, shares (required).
    pub size: String,
    /// The quote's time (required).
    pub ts: String,
    /// The best bid (read when set; a missing field is no bid).
    pub bid: Option<String>,
    /// The best ask (read when set; a missing field is no ask).
    pub ask: Option<String>,
    /// The symbol (when unset: the polled symbol).
    pub symbol: Option<String>,
}

impl FieldPointers {
    /// Checks that every pointer is `""` or starts with `/`. Errors: the first that does not.
    pub fn validate(&self) -> Result<(), String> {
        let named = [("price", Some(&self.price)), ("size", Some(&self.size)), ("ts", Some(&self.ts))];
        let optional = [("bid", self.bid.as_ref()), ("ask", self.ask.as_ref()), ("symbol", self.symbol.as_ref())];
        for (name, pointer) in named.into_iter().chain(optional) {
            if let Some(p) = pointer {
                if !p.is_empty() && !p.starts_with('/') {
                    return Err(format!("--poll-{name}-pointer {p:?} is not a JSON pointer (RFC 6901): start it with /"));
                }
            }
        }
        Ok(())
    }
}

/// The quote in `body`, polled for `symbol`, or why it is refused.
pub(crate) fn quote_of(body: &[u8], symbol: &str, fields: &FieldPointers) -> Result<Quote, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let symbol = match &fields.symbol {
        Some(p) => match required(&doc, p, "symbol")? {
            Value::String(s) => s.clone(),
            other => return Err(format!("symbol at {p:?}: expected a string, got {}", kind(other))),
        },
        None => symbol.to_string(),
    };
    let price = decimal(required(&doc, &fields.price, "price")?).map_err(|e| format!("price at {:?}: {e}", fields.price))?;
    let size = shares(required(&doc, &fields.size, "size")?).map_err(|e| format!("size at {:?}: {e}", fields.size))?;
    let ts = time_ms(required(&doc, &fields.ts, "time")?).map_err(|e| format!("time at {:?}: {e}", fields.ts))?;
    let optional_decimal = |pointer: &Option<String>, name: &str| -> Result<Option<Decimal6>, String> {
        let Some(p) = pointer else { return Ok(None) };
        match doc.pointer(p) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => decimal(v).map(Some).map_err(|e| format!("{name} at {p:?}: {e}")),
        }
    };
    let bid = optional_decimal(&fields.bid, "bid")?;
    let ask = optional_decimal(&fields.ask, "ask")?;
    let quote = Quote { symbol, ts, price, size, bid, ask, exchange: None };
    quote.validate().map_err(|e| e.to_string())?;
    Ok(quote)
}

fn required<'a>(doc: &'a Value, pointer: &str, name: &str) -> Result<&'a Value, String> {
    match doc.pointer(pointer) {
        None | Some(Value::Null) => Err(format!("no {name} at {pointer:?}")),
        Some(v) => Ok(v),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn decimal(v: &Value) -> Result<Decimal6, String> {
    match v {
        Value::String(s) => s.parse().map_err(|e: prism_core::decimal::DecimalError| e.to_string()),
        Value::Number(n) => n.to_string().parse().map_err(|e: prism_core::decimal::DecimalError| e.to_string()),
        other => Err(format!("expected a decimal string or number, got {}", kind(other))),
    }
}

fn shares(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not a whole number of shares")),
        Value::String(s) => s.trim().parse().map_err(|_| format!("{s:?} is not a whole number of shares")),
        other => Err(format!("expected a whole number of shares, got {}", kind(other))),
    }
}

fn time_ms(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not whole UTC milliseconds")),
        Value::String(s) => {
            chrono::DateTime::parse_from_rfc3339(s.trim()).map(|t| t.timestamp_millis()).map_err(|e| format!("{s:?} is not RFC 3339: {e}"))
        }
        other => Err(format!("expected an RFC 3339 string or UTC milliseconds, got {}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> FieldPointers {
        FieldPointers {
            price: "/last".into(),
            size: "/size".into(),
            ts: "/time".into(),
            bid: Some("/bid".into()),
            ask: Some("/ask".into()),
            symbol: None,
        }
    }

    fn d(s: &str) -> Decimal6 {
        s.parse().expect("decimal")
    }

    #[test]
    fn reads_the_fields_by_pointer() {
        let body = br#"{"symbol":"X","bid":"118.55","ask":118.57,"last":"118.560000","size":300,"time":"2013-03-01T15:30:00+01:00"}"#;
        let q = quote_of(body, "AAPL", &fields()).expect("valid");
        assert_eq!(
            q,
            Quote {
                symbol: "AAPL".into(),
                ts: 1_362_148_200_000,
                price: d("118.56"),
                size: 300,
                bid: Some(d("118.55")),
                ask: Some(d("118.57")),
                exchange: None
            }
        );
        let nested = br#"{"data":{"sym":"MSFT","px":[1.5],"qty":"7","t":1362148200000}}"#;
        let f = FieldPointers {
            price: "/data/px/0".into(),
            size: "/data/qty".into(),
            ts: "/data/t".into(),
            symbol: Some("/data/sym".into()),
            ..fields()
        };
        let q = quote_of(nested, "ignored", &f).expect("valid");
        assert_eq!((q.symbol.as_str(), q.price, q.size, q.ts, q.bid, q.ask), ("MSFT", d("1.5"), 7, 1_362_148_200_000, None, None));
    }

    #[test]
    fn says_why_a_response_is_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"<html>", "not JSON"),
            (br#"{"last":"abc","size":1,"time":0}"#, r#"price at "/last": not a decimal number: "abc""#),
            (br#"{"last":"1.5","time":0}"#, r#"no size at "/size""#),
            (br#"{"last":"1.5","size":null,"time":0}"#, r#"no size at "/size""#),
            (br#"{"last":"1.5","size":1.5,"time":0}"#, "is not a whole number of shares"),
            (br#"{"last":"1.5","size":1,"time":"yesterday"}"#, "is not RFC 3339"),
            (br#"{"last":"1.5","size":1,"time":true}"#, "got a boolean"),
            (br#"{"last":"1.1234567","size":1,"time":0}"#, "more than 6 decimal places"),
            (br#"{"last":"-1","size":1,"time":0}"#, "price must be > 0"),
            (br#"{"last":"1","size":0,"time":0}"#, "size must be a whole number of shares"),
            (br#"{"last":"1","size":1,"time":0,"bid":"x"}"#, r#"bid at "/bid""#),
        ];
        for (body, want) in cases {
            let err = quote_of(body, "AAPL", &fields()).expect_err(&String::from_utf8_lossy(body));
            assert!(err.contains(want), "{}: {err}", String::from_utf8_lossy(body));
        }
        let f = FieldPointers { symbol: Some("/s".into()), ..fields() };
        let err = quote_of(br#"{"s":"A B","last":"1","size":1,"time":0}"#, "AAPL", &f).expect_err("bad symbol");
        assert!(err.contains("symbol"), "{err}");
    }

    #[test]
    fn pointers_must_be_pointers() {
        assert!(fields().validate().is_ok());
        assert!(FieldPointers { price: String::new(), ..fields() }.validate().is_ok(), "the whole document");
        let err = FieldPointers { size: "size".into(), ..fields() }.validate().expect_err("no slash");
        assert!(err.contains("--poll-size-pointer"), "{err}");
    }
}
