//! The row codec of a view: the typed columns an aggregate is stored as, in the view store
//! (SQL) and in batch-view segments (Parquet), and the values that travel between them.
//!
//! A view lists its aggregate's [`Column`]s once; the store derives its SQL and the segment
//! writer its Arrow schema from that list, so a new view needs no store or segment code.

use crate::decimal::Decimal6;

/// The type of one stored column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A signed 64-bit integer (counts, shares, partitions, offsets).
    Int,
    /// A price: exact decimal at scale 6 that fits `NUMERIC(18,6)` / Arrow `Decimal128(18,6)`.
    Price,
    /// A sum of money: exact decimal at scale 6, `NUMERIC(38,6)` / Arrow `Decimal128(38,6)`.
    Money,
    /// An instant, UTC ms (`timestamptz` in SQL, Arrow `Timestamp(ms, UTC)`).
    Time,
    /// UTF-8 text.
    Text,
}

/// One column of a view's aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name in SQL and Parquet (snake case).
    pub name: &'static str,
    /// Its type.
    pub ty: ColumnType,
}

impl Column {
    /// A column named `name` of type `ty`.
    pub const fn new(name: &'static str, ty: ColumnType) -> Column {
        Column { name, ty }
    }
}

/// One stored value; its variant matches its column's [`ColumnType`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// [`ColumnType::Int`].
    Int(i64),
    /// [`ColumnType::Price`], scale 6.
    Price(Decimal6),
    /// [`ColumnType::Money`], scale 6.
    Money(Decimal6),
    /// [`ColumnType::Time`], UTC ms.
    Time(i64),
    /// [`ColumnType::Text`].
    Text(String),
}

/// Why stored values could not be decoded into an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct DecodeError {
    /// The column.
    pub column: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads typed values out of a decoded row, in column order.
#[derive(Debug)]
pub struct ValueReader<'a> {
    columns: &'a [Column],
    values: &'a [Value],
    next: usize,
}

impl<'a> ValueReader<'a> {
    /// A reader over `values`, which belong to `columns` (same length, same order).
    pub fn new(columns: &'a [Column], values: &'a [Value]) -> Self {
        ValueReader { columns, values, next: 0 }
    }

    fn take(&mut self) -> Result<(&'static str, &'a Value), DecodeError> {
        let i = self.next;
        self.next += 1;
        let column = self.columns.get(i).map_or("?", |c| c.name);
        let value = self.values.get(i).ok_or_else(|| DecodeError { column, reason: "missing".into() })?;
        Ok((column, value))
    }

    fn mismatch(column: &'static str, want: &str, got: &Value) -> DecodeError {
        DecodeError { column, reason: format!("expected {want}, found {got:?}") }
    }

    /// The next value as an integer.
    ///
    /// Errors: [`DecodeError`] when missing or of another type.
    pub fn int(&mut self) -> Result<i64, DecodeError> {
        match self.take()? {
            (_, Value::Int(v)) => Ok(*v),
            (c, v) => Err(Self::mismatch(c, "an integer", v)),
        }
    }

    /// The next value as a price.
    ///
    /// Errors: [`DecodeError`] when missing or of another type.
    pub fn price(&mut self) -> Result<Decimal6, DecodeError> {
        match self.take()? {
            (_, Value::Price(v)) => Ok(*v),
            (c, v) => Err(Self::mismatch(c, "a price", v)),
        }
    }

    /// The next value as a sum of money.
    ///
    /// Errors: [`DecodeError`] when missing or of another type.
    pub fn money(&mut self) -> Result<Decimal6, DecodeError> {
        match self.take()? {
            (_, Value::Money(v)) => Ok(*v),
            (c, v) => Err(Self::mismatch(c, "a sum of money", v)),
        }
    }

    /// The next value as an instant, UTC ms.
    ///
    /// Errors: [`DecodeError`] when missing or of another type.
    pub fn time(&mut self) -> Result<i64, DecodeError> {
        match self.take()? {
            (_, Value::Time(v)) => Ok(*v),
            (c, v) => Err(Self::mismatch(c, "a time", v)),
        }
    }

    /// The next value as text.
    ///
    /// Errors: [`DecodeError`] when missing or of another type.
    pub fn text(&mut self) -> Result<&'a str, DecodeError> {
        match self.take()? {
            (_, Value::Text(v)) => Ok(v),
            (c, v) => Err(Self::mismatch(c, "text", v)),
        }
    }
}
