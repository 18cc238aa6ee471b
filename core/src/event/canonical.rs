//! A fast path for quotes in the exact form Prism writes to the log ([`Quote::to_json`]):
//! `{"symbol":"AAPL","ts":1362148200000,"price":"118.560000","size":100}`, then optionally
//! `"bid"`, `"ask"` and `"exchange"` in that order, no whitespace, no escapes.
//!
//! Every consumer of `prism.quotes` parses each record, and serde's general path (any field
//! order, whitespace, escapes, numbers or strings for decimals) costs more than the fold it
//! feeds. [`parse`] accepts only that one form and gives up (`None`) on anything else, so
//! [`Quote::from_json`] falls back to serde for every other input: the fast path never accepts
//! what serde would refuse, and never reads a value differently (checked by a property test
//! against serde on canonical and mutated input).

use super::Quote;
use crate::decimal::Decimal6;

/// The quote in `bytes` when they are in the canonical form (not yet validated), else `None`.
pub(super) fn parse(bytes: &[u8]) -> Option<Quote> {
    let mut c = Cursor { bytes, at: 0 };
    c.literal(b"{\"symbol\":\"")?;
    let symbol = c.plain_string()?;
    c.literal(b"\",\"ts\":")?;
    let ts = c.integer()?;
    c.literal(b",\"price\":\"")?;
    let price = c.decimal()?;
    c.literal(b"\",\"size\":")?;
    let size = c.integer()?;
    let bid = if c.eat(b",\"bid\":\"") { Some(c.decimal_then_quote()?) } else { None };
    let ask = if c.eat(b",\"ask\":\"") { Some(c.decimal_then_quote()?) } else { None };
    let exchange = if c.eat(b",\"exchange\":\"") {
        let e = c.plain_string()?;
        c.literal(b"\"")?;
        Some(e)
    } else {
        None
    };
    c.literal(b"}")?;
    (c.at == bytes.len()).then_some(Quote { symbol, ts, price, size, bid, ask, exchange })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(lit) {
            self.at += lit.len();
            true
        } else {
            false
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        self.eat(lit).then_some(())
    }

    /// Up to the next `"`: printable ASCII without `\` (an escape: serde's job).
    fn plain_string(&mut self) -> Option<String> {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().position(|b| *b == b'"')?;
        let text = &rest[..len];
        if !text.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'\\') {
            return None;
        }
        self.at += len;
        // Printable ASCII is UTF-8.
        std::str::from_utf8(text).ok().map(str::to_string)
    }

    /// A JSON integer of 1–18 digits without sign or leading zero (so it fits an i64).
    fn integer(&mut self) -> Option<i64> {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > 18 || (len > 1 && rest[0] == b'0') {
            return None;
        }
        let mut n = 0i64;
        for b in &rest[..len] {
            n = n * 10 + i64::from(b - b'0');
        }
        self.at += len;
        Some(n)
    }

    /// A decimal string's content, up to (not past) the closing `"`: digits and one `.`.
    fn decimal(&mut self) -> Option<Decimal6> {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().position(|b| *b == b'"')?;
        let text = &rest[..len];
        if text.is_empty() || !text.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
            return None;
        }
        let value = std::str::from_utf8(text).ok()?.parse().ok()?;
        self.at += len;
        Some(value)
    }

    fn decimal_then_quote(&mut self) -> Option<Decimal6> {
        let d = self.decimal()?;
        self.literal(b"\"")?;
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_quote(bytes: &[u8]) -> Option<Quote> {
        serde_json::from_slice::<Quote>(bytes).ok()
    }

    fn arb_quote() -> impl Strategy<Value = Quote> {
        (
            "[A-Za-z0-9._^/-]{1,8}",
            0i64..4_102_444_800_000,
            1i128..1_000_000_000_000,
            1i64..1_000_000,
            proptest::option::of(1i128..1_000_000_000),
            proptest::option::of(1i128..1_000_000_000),
            proptest::option::of("[ -~]{0,6}"),
        )
            .prop_map(|(symbol, ts, price, size, bid, ask, exchange)| Quote {
                symbol,
                ts,
                price: Decimal6::from_units(price),
                size,
                bid: bid.map(Decimal6::from_units),
                ask: ask.map(Decimal6::from_units),
                exchange,
            })
    }

    #[test]
    fn reads_the_canonical_form() {
        let q = parse(br#"{"symbol":"AAPL","ts":1362148200000,"price":"118.560000","size":100}"#).expect("canonical");
        assert_eq!((q.symbol.as_str(), q.ts, q.price.units(), q.size), ("AAPL", 1_362_148_200_000, 118_560_000, 100));
        for other in [
            &br#"{"symbol":"AAPL","ts":1362148200000,"price":118.56,"size":100}"#[..],
            br#"{ "symbol":"AAPL","ts":1362148200000,"price":"118.56","size":100}"#,
            br#"{"ts":1362148200000,"symbol":"AAPL","price":"118.56","size":100}"#,
            br#"{"symbol":"AA\u0050L","ts":1362148200000,"price":"118.56","size":100}"#,
            br#"{"symbol":"AAPL","ts":"2013-03-01T14:30:00Z","price":"118.56","size":100}"#,
            br#"{"symbol":"AAPL","ts":01362148200000,"price":"118.56","size":100}"#,
            br#"{"symbol":"AAPL","ts":1362148200000,"price":"118.56","size":100} "#,
            br#"{"symbol":"AAPL","ts":1362148200000,"price":"118.56","size":100,"venue":"X"}"#,
        ] {
            assert_eq!(parse(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    proptest! {
        /// What Prism writes, the fast path reads exactly as serde does.
        #[test]
        fn agrees_with_serde_on_what_prism_writes(q in arb_quote()) {
            let bytes = q.to_json();
            let escaped = q.exchange.as_deref().is_some_and(|e| e.contains(['"', '\\']));
            prop_assert_eq!(parse(&bytes), if escaped { None } else { Some(q.clone()) }, "escapes are serde's job");
            prop_assert_eq!(serde_quote(&bytes), Some(q));
        }

        /// On any change of those bytes the fast path gives up or reads what serde reads.
        #[test]
        fn never_disagrees_with_serde_on_mutated_input(q in arb_quote(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            let mut bytes = q.to_json();
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
            if let Some(fast) = parse(&bytes) {
                prop_assert_eq!(Some(fast), serde_quote(&bytes), "{}", String::from_utf8_lossy(&bytes));
            }
        }
    }
}
