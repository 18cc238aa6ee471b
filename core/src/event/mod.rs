//! Event schemas on the log (DESIGN §3).

mod access;
mod canonical;
mod cdc;

pub use access::{status_class, AccessEvent, ACCESS_LOGS_TOPIC, MAX_HOST_LEN};
pub use cdc::{CdcEnvelope, CdcSource, CDC_TOPIC_PREFIX};

use serde::{Deserialize, Serialize};

use crate::decimal::Decimal6;

/// Topic of trades/quotes, keyed by symbol.
pub const QUOTES_TOPIC: &str = "prism.quotes";
/// Dead-letter topic: rejected bytes, their source, the reason and the time.
pub const DLQ_TOPIC: &str = "prism.dlq";

/// Earliest accepted event time: 0001-01-01T00:00:00Z, UTC ms (what RFC 3339 and SQL
/// timestamps can carry).
pub const MIN_TS_MS: i64 = -62_135_596_800_000;
/// Latest accepted event time: 9999-12-31T23:59:59.999Z, UTC ms.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Largest accepted trade size, shares (keeps every sum far from overflow).
pub const MAX_SIZE_SHARES: i64 = 1_000_000_000_000;

/// Longest accepted symbol, in bytes.
pub const MAX_SYMBOL_LEN: usize = 32;

/// Where a record sits in the log: the tie-breaker for equal event times and the key for
/// idempotent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// Partition number within the topic.
    pub partition: i32,
    /// Offset within the partition (0-based, dense).
    pub offset: i64,
}

/// A trade or quote on `prism.quotes` (value JSON; key = symbol).
///
/// Shape: `{"symbol": "AAPL", "ts": 1362148200000, "price": "118.56", "size": 100,
/// "bid": "118.55", "ask": "118.57", "exchange": "XNAS"}`; `ts` is event time, UTC ms (RFC 3339
/// accepted on input); prices are exact decimals at scale 6; `size` is in shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quote {
    /// Ticker symbol: 1–32 bytes of `A-Z a-z 0-9 . - _ ^ /`.
    pub symbol: String,
    /// Event time, UTC milliseconds since the Unix epoch.
    #[serde(deserialize_with = "crate::time::deserialize_ts_ms")]
    pub ts: i64,
    /// Trade price, currency units at scale 6; > 0 and fits `Decimal128(18,6)`.
    #[schema(value_type = String, example = "118.560000")]
    pub price: Decimal6,
    /// Trade size in shares; 1 ..= 10¹².
    pub size: i64,
    /// Best bid at the trade, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub bid: Option<Decimal6>,
    /// Best ask at the trade, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub ask: Option<Decimal6>,
    /// Exchange code (e.g. a MIC), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not valid JSON of the documented shape (the serde message says where).
    #[error("malformed event: {0}")]
    Malformed(String),
    /// Well-formed but breaks a rule of the schema.
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl Quote {
    /// Parses and validates one JSON quote. Errors: [`EventError`] with the reason.
    pub fn from_json(bytes: &[u8]) -> Result<Quote, EventError> {
        // The form Prism writes to the log takes a fast path; everything else goes to serde.
        let quote: Quote = match canonical::parse(bytes) {
            Some(q) => q,
            None => serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?,
        };
        quote.validate()?;
        Ok(quote)
    }

    /// Parses like [`Quote::from_json`], and says whether `bytes` are in the canonical form
    /// Prism's readers take a fast path on (`true`): then they can be appended to the log as
    /// they came, since every reader parses them to this same quote, instead of serializing it
    /// again with [`Quote::to_json`].
    ///
    /// Errors: as [`Quote::from_json`].
    pub fn from_json_with_form(bytes: &[u8]) -> Result<(Quote, bool), EventError> {
        let (quote, canonical) = match canonical::parse(bytes) {
            Some(q) => (q, true),
            None => (serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?, false),
        };
        quote.validate()?;
        Ok((quote, canonical))
    }

    /// Serializes to the log's JSON value.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, integers and decimals cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks the rules serde cannot: symbol charset, positive price and size, ranges.
    pub fn validate(&self) -> Result<(), EventError> {
        let bad = |m: String| Err(EventError::Invalid(m));
        validate_symbol(&self.symbol)?;
        for (name, value) in [("price", Some(self.price)), ("bid", self.bid), ("ask", self.ask)] {
            if let Some(v) = value {
                if v <= Decimal6::ZERO {
                    return bad(format!("{name} must be > 0, got {v}"));
                }
                if !v.fits_price() {
                    return bad(format!("{name} {v} does not fit NUMERIC(18,6)"));
                }
            }
        }
        if self.size <= 0 || self.size > MAX_SIZE_SHARES {
            return bad(format!("size must be a whole number of shares in 1..={MAX_SIZE_SHARES}, got {}", self.size));
        }
        // Years 0001..9999: what RFC 3339 and SQL timestamps can carry.
        if !(MIN_TS_MS..=MAX_TS_MS).contains(&self.ts) {
            return bad(format!("ts {} ms is outside years 0001–9999", self.ts));
        }
        Ok(())
    }
}

/// Checks a ticker symbol: 1–32 bytes of `A-Z a-z 0-9 . - _ ^ /`.
///
/// Errors: [`EventError::Invalid`] saying which rule the symbol breaks.
pub fn validate_symbol(symbol: &str) -> Result<(), EventError> {
    if symbol.is_empty() || symbol.len() > MAX_SYMBOL_LEN {
        return Err(EventError::Invalid(format!("symbol must be 1–{MAX_SYMBOL_LEN} bytes")));
    }
    if !symbol.bytes().all(is_symbol_byte) {
        return Err(EventError::Invalid(format!("symbol {symbol:?} may only hold letters, digits and . - _ ^ /")));
    }
    Ok(())
}

fn is_symbol_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'^' | b'/')
}

/// A record on `prism.dlq`: the rejected bytes (as lossy UTF-8 text), where they came from,
/// why they were rejected and when (UTC ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Source, e.g. `prism.quotes/2@1734` or `feed:stocks.csv:17`.
    pub source: String,
    /// Why the record was rejected.
    pub reason: String,
    /// The rejected bytes, as UTF-8 (invalid sequences replaced).
    pub payload: String,
    /// When it was rejected, UTC ms.
    pub rejected_at_ms: i64,
}

impl DeadLetter {
    /// The `prism.dlq` record for this letter, keyed by the original record's key.
    pub fn into_record(self, key: impl Into<Vec<u8>>) -> crate::log::NewRecord {
        // A struct of strings and an integer always serializes.
        crate::log::NewRecord::new(key, serde_json::to_vec(&self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let q = Quote::from_json(br#"{"symbol":"AAPL","ts":"2013-03-01T14:30:00Z","price":118.56,"size":100}"#).expect("valid");
        assert_eq!(q.ts, 1_362_148_200_000);
        assert_eq!(q.price.units(), 118_560_000);
        let back = Quote::from_json(&q.to_json()).expect("round trip");
        assert_eq!(back, q);

        let cases: &[&[u8]] = &[
            br#"{"symbol":"AAPL","ts":1,"price":1.1234567,"size":1}"#,
            br#"{"symbol":"AAPL","ts":1,"price":1,"size":-5}"#,
            br#"{"symbol":"AAPL","ts":1,"price":0,"size":5}"#,
            br#"{"symbol":"","ts":1,"price":1,"size":5}"#,
            br#"{"symbol":"A B","ts":1,"price":1,"size":5}"#,
            br#"{"symbol":"A","ts":1.5,"price":1,"size":5}"#,
            br#"{"symbol":"A","ts":1,"price":1,"size":5,"extra":1}"#,
            br#"{"symbol":"A","ts":1,"price":1}"#,
            br#"not json"#,
        ];
        for c in cases {
            assert!(Quote::from_json(c).is_err(), "{}", String::from_utf8_lossy(c));
        }
    }
}
