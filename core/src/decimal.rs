//! Exact fixed-point money at scale 6 (DESIGN §3).
//!
//! Prices and sums of money are never `f64`. A [`Decimal6`] holds an integer count of
//! micro-units (10⁻⁶ of the currency unit) in an `i128`, which maps 1:1 onto Arrow
//! `Decimal128(p, 6)` and SQL `NUMERIC(p, 6)`. Prices fit `Decimal128(18,6)`; sums of money
//! (notional) use the full `i128` range, `Decimal128(38,6)`.
//!
//! Parsing is exact: input with more than 6 decimals is refused ([`DecimalError::TooManyDecimals`]),
//! never rounded. JSON may carry a string (`"123.45"`) or a number (`123.45`, `1.2345e2`); the
//! workspace enables serde_json's `arbitrary_precision`, so a number's exact text reaches the parser.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// Decimal places of every money value in Prism.
pub const SCALE: u32 = 6;
/// 10^SCALE: micro-units per currency unit.
pub const UNITS_PER_ONE: i128 = 1_000_000;
/// Largest magnitude of a price: 18 significant digits at scale 6 (`Decimal128(18,6)`).
pub const MAX_PRICE_UNITS: i128 = 999_999_999_999_999_999;

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// The text is not a decimal number (`[-+]digits[.digits][e[-+]digits]`).
    #[error("not a decimal number: {0:?}")]
    Invalid(String),
    /// More than 6 decimal places; Prism refuses rather than rounds.
    #[error("{0:?} has more than 6 decimal places")]
    TooManyDecimals(String),
    /// The value does not fit the 38-digit range.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// An exact decimal with 6 decimal places, stored as micro-units in an `i128`.
///
/// `Decimal6::from_units(1_500_000)` is `1.5`. Ordering and equality are numeric.
///
/// Aligned to 8 bytes, not `i128`'s 16: an `Option<Decimal6>` then takes 24 bytes, not 32, and
/// the `ohlcv` aggregate (six of them, two inside price points) 176 instead of 224 — the windows
/// a replay or a batch build holds in memory are mostly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(C, packed(8))]
pub struct Decimal6(i128);

impl Decimal6 {
    /// Zero.
    pub const ZERO: Decimal6 = Decimal6(0);

    /// From micro-units (10⁻⁶).
    pub const fn from_units(units: i128) -> Self {
        Decimal6(units)
    }

    /// The value in micro-units (10⁻⁶).
    pub const fn units(self) -> i128 {
        self.0
    }

    /// `self × n` exactly (a price times a share count); `None` on i128 overflow.
    pub fn checked_mul_int(self, n: i64) -> Option<Decimal6> {
        self.0.checked_mul(n as i128).map(Decimal6)
    }

    /// `self + other` exactly; `None` on i128 overflow.
    pub fn checked_add(self, other: Decimal6) -> Option<Decimal6> {
        self.0.checked_add(other.0).map(Decimal6)
    }

    /// `self / n` rounded half away from zero to scale 6 (used only for display values such as
    /// VWAP, which are derived at read time and never summed). `None` when `n` is 0.
    pub fn div_round(self, n: i128) -> Option<Decimal6> {
        if n == 0 {
            return None;
        }
        let q = self.0 / n;
        let r = self.0 % n;
        let away = if r.unsigned_abs() * 2 >= n.unsigned_abs() {
            if (self.0 < 0) != (n < 0) {
                -1
            } else {
                1
            }
        } else {
            0
        };
        Some(Decimal6(q + away))
    }

    /// True when the magnitude fits a price column, `Decimal128(18,6)`.
    pub fn fits_price(self) -> bool {
        self.0.abs() <= MAX_PRICE_UNITS
    }
}

impl FromStr for Decimal6 {
    type Err = DecimalError;

    /// Parses `[-+]int[.frac][(e|E)[-+]exp]` exactly. Errors: [`DecimalError`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || DecimalError::Invalid(text.to_string());
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = s[i + 1..].parse().map_err(|_| invalid())?;
                (&s[..i], exp)
            }
            None => (s, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        // All digits as one integer, and the power of ten that scales it; read in place (this
        // runs for every price of every event).
        let all = || int_part.bytes().chain(frac_part.bytes());
        let leading_zeros = all().take_while(|b| *b == b'0').count();
        let significant = int_part.len() + frac_part.len() - leading_zeros;
        let trailing_zeros = all().rev().take_while(|b| *b == b'0').count().min(significant);
        let mut decimals = frac_part.len() as i64 - exponent as i64;
        // Trailing zeros beyond scale 6 are exact (1.2300000 == 1.23): drop them.
        let dropped = (trailing_zeros as i64).min((decimals - SCALE as i64).max(0));
        decimals -= dropped;
        let len = significant - dropped as usize;
        if len == 0 {
            return Ok(Decimal6::ZERO);
        }
        if decimals > SCALE as i64 {
            return Err(DecimalError::TooManyDecimals(text.to_string()));
        }
        let shift = SCALE as i64 - decimals;
        if len as i64 + shift > 38 {
            return Err(DecimalError::OutOfRange(text.to_string()));
        }
        let out_of_range = || DecimalError::OutOfRange(text.to_string());
        let mut units: i128 = 0;
        for b in all().skip(leading_zeros).take(len) {
            units = units.checked_mul(10).and_then(|u| u.checked_add(i128::from(b - b'0'))).ok_or_else(out_of_range)?;
        }
        for _ in 0..shift {
            units = units.checked_mul(10).ok_or_else(out_of_range)?;
        }
        Ok(Decimal6(if negative { -units } else { units }))
    }
}

impl fmt::Display for Decimal6 {
    /// Always 6 decimals: `123.450000`, `-0.000001`. The digits are put together in a buffer
    /// and written at once (serving formats thousands of these per answer; `write!` with three
    /// arguments made a `to_string` grow its buffer three times).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // i128 has at most 39 digits; a sign and a point.
        let mut buf = [0u8; 42];
        let mut at = buf.len();
        let mut put = |digit: u8| {
            at -= 1;
            buf[at] = digit;
        };
        let abs = self.0.unsigned_abs();
        let one = UNITS_PER_ONE as u128;
        // 64-bit arithmetic when it fits (every price, most sums): u128 division is several
        // times slower.
        let (mut int, mut frac) = match u64::try_from(abs) {
            Ok(abs) => ((abs / one as u64) as u128, (abs % one as u64) as u128),
            Err(_) => (abs / one, abs % one),
        };
        for _ in 0..6 {
            put(b'0' + (frac % 10) as u8);
            frac /= 10;
        }
        put(b'.');
        match u64::try_from(int) {
            Ok(mut small) => loop {
                put(b'0' + (small % 10) as u8);
                small /= 10;
                if small == 0 {
                    break;
                }
            },
            Err(_) => loop {
                put(b'0' + (int % 10) as u8);
                int /= 10;
                if int == 0 {
                    break;
                }
            },
        }
        if self.0 < 0 {
            put(b'-');
        }
        // Only ASCII digits, '.' and '-' were written.
        f.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Decimal6 {
    /// As a JSON string with 6 decimals, so no client parses money through a float.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal6 {
    /// From a JSON string or number, exactly; see [`Decimal6::from_str`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => s.parse().map_err(de::Error::custom),
            serde_json::Value::Number(n) => n.to_string().parse().map_err(de::Error::custom),
            other => Err(de::Error::custom(format!("expected a decimal string or number, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal6 {
        s.parse().expect("valid decimal")
    }

    proptest! {
        /// The buffer formatting equals the arithmetic it stands for, over the whole i128 range.
        #[test]
        fn displays_integer_point_six_digits(units in any::<i128>()) {
            let abs = units.unsigned_abs();
            let want = format!("{}{}.{:06}", if units < 0 { "-" } else { "" }, abs / 1_000_000, abs % 1_000_000);
            prop_assert_eq!(Decimal6::from_units(units).to_string(), want);
        }
    }

    /// The parser before it read digits in place (two `String`s per call): the reference the
    /// in-place one must agree with.
    fn parse_with_strings(text: &str) -> Result<Decimal6, DecimalError> {
        let invalid = || DecimalError::Invalid(text.to_string());
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().map_err(|_| invalid())?),
            None => (s, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        let mut digits = format!("{int_part}{frac_part}").trim_start_matches('0').to_string();
        let mut decimals = frac_part.len() as i64 - exponent as i64;
        while decimals > SCALE as i64 && digits.ends_with('0') {
            digits.pop();
            decimals -= 1;
        }
        if digits.is_empty() {
            return Ok(Decimal6::ZERO);
        }
        if decimals > SCALE as i64 {
            return Err(DecimalError::TooManyDecimals(text.to_string()));
        }
        let shift = SCALE as i64 - decimals;
        if digits.len() as i64 + shift > 38 {
            return Err(DecimalError::OutOfRange(text.to_string()));
        }
        let mut units: i128 = digits.parse().map_err(|_| DecimalError::OutOfRange(text.to_string()))?;
        for _ in 0..shift {
            units = units.checked_mul(10).ok_or_else(|| DecimalError::OutOfRange(text.to_string()))?;
        }
        Ok(Decimal6(if negative { -units } else { units }))
    }

    proptest! {
        /// Decimal text of every shape (signs, leading and trailing zeros, exponents, too many
        /// digits or decimals, junk) parses as the string-building reference parses it.
        #[test]
        fn parses_as_the_reference_does(text in r"[-+]?0{0,3}[0-9]{0,22}0{0,4}(\.0{0,3}[0-9]{0,9}0{0,9})?([eE][-+]?[0-9]{1,2})?|[0-9a-e.+-]{0,12}") {
            prop_assert_eq!(text.parse::<Decimal6>(), parse_with_strings(&text));
        }

        /// Near the 38 digits `Decimal128(38,6)` holds, on both sides.
        #[test]
        fn parses_long_numbers_as_the_reference_does(text in r"-?[1-9][0-9]{28,33}(\.[0-9]{0,7})?") {
            prop_assert_eq!(text.parse::<Decimal6>(), parse_with_strings(&text));
        }
    }

    #[test]
    fn displays_edges() {
        for (units, text) in
            [(0, "0.000000"), (-1, "-0.000001"), (123_450_000, "123.450000"), (i128::MIN, "-170141183460469231731687303715884.105728")]
        {
            assert_eq!(Decimal6::from_units(units).to_string(), text);
        }
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(d("123.45").units(), 123_450_000);
        assert_eq!(d("-0.000001").units(), -1);
        assert_eq!(d("118.5").units(), 118_500_000);
        assert_eq!(d("1.2345e2").units(), 123_450_000);
        assert_eq!(d("5E-6").units(), 5);
        assert_eq!(d("1.2300000000").units(), 1_230_000);
        assert_eq!(d(".5").units(), 500_000);
        assert_eq!(d("7.").units(), 7_000_000);
        assert_eq!(d("0").units(), 0);
    }

    #[test]
    fn refuses_rather_than_rounds() {
        assert_eq!("1.0000001".parse::<Decimal6>(), Err(DecimalError::TooManyDecimals("1.0000001".into())));
        assert!(matches!("1e-7".parse::<Decimal6>(), Err(DecimalError::TooManyDecimals(_))));
        for bad in ["", "-", "abc", "1.2.3", "1e", "0x10", "1,5", "NaN", "inf", " . "] {
            assert!(matches!(bad.parse::<Decimal6>(), Err(DecimalError::Invalid(_))), "{bad}");
        }
        assert!(matches!("1e40".parse::<Decimal6>(), Err(DecimalError::OutOfRange(_))));
    }

    #[test]
    fn json_number_and_string_are_exact() {
        let n: Decimal6 = serde_json::from_str("123.456789").expect("number");
        let s: Decimal6 = serde_json::from_str("\"123.456789\"").expect("string");
        assert_eq!(n, s);
        assert_eq!(n.units(), 123_456_789);
        // A digit past f64's precision survives: arbitrary_precision is on.
        let big: Decimal6 = serde_json::from_str("12345678901234.123456").expect("big");
        assert_eq!(big.units(), 12_345_678_901_234_123_456);
        assert!(serde_json::from_str::<Decimal6>("1.1234567").is_err());
        assert!(serde_json::from_str::<Decimal6>("true").is_err());
        assert_eq!(serde_json::to_string(&n).expect("ser"), "\"123.456789\"");
    }

    #[test]
    fn displays_six_decimals_on_both_sides_of_64_bits() {
        let big = u64::MAX as i128 + 1;
        for (units, text) in [
            (0, "0.000000"),
            (-1, "-0.000001"),
            (123_450_000, "123.450000"),
            (u64::MAX as i128, "18446744073709.551615"),
            (big, "18446744073709.551616"),
            (-big, "-18446744073709.551616"),
            (i128::MAX, "170141183460469231731687303715884.105727"),
        ] {
            assert_eq!(Decimal6::from_units(units).to_string(), text);
        }
    }

    #[test]
    fn vwap_rounding() {
        assert_eq!(Decimal6::from_units(10).div_round(4), Some(Decimal6::from_units(3)));
        assert_eq!(Decimal6::from_units(-10).div_round(4), Some(Decimal6::from_units(-3)));
        assert_eq!(Decimal6::from_units(9).div_round(4), Some(Decimal6::from_units(2)));
        assert_eq!(Decimal6::from_units(9).div_round(0), None);
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(units in any::<i64>()) {
            let v = Decimal6::from_units(units as i128);
            prop_assert_eq!(v.to_string().parse::<Decimal6>(), Ok(v));
        }

        #[test]
        fn sums_are_exact(parts in proptest::collection::vec(-1_000_000_000_000i64..1_000_000_000_000, 0..50)) {
            // Summing parsed strings equals summing the integers: no drift, whatever the order.
            let mut forward = Decimal6::ZERO;
            for p in &parts {
                let v: Decimal6 = Decimal6::from_units(*p as i128).to_string().parse().expect("parse");
                forward = forward.checked_add(v).expect("no overflow");
            }
            let mut backward = Decimal6::ZERO;
            for p in parts.iter().rev() {
                backward = backward.checked_add(Decimal6::from_units(*p as i128)).expect("no overflow");
            }
            let expected: i128 = parts.iter().map(|p| *p as i128).sum();
            prop_assert_eq!(forward.units(), expected);
            prop_assert_eq!(backward, forward);
        }
    }
}
