//! The Parquet format of a quotes file: [`quotes_schema`], encoding and decoding (CPU work: the
//! callers run it on blocking threads).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Decimal128Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use prism_core::decimal::Decimal6;
use prism_core::event::{LogPosition, Quote};

use super::record::{column, for_each_batch, format_err, required, write_parquet, Archived};
use super::MasterError;

/// The Arrow schema of a quotes file (see the [module docs](super) for the columns).
pub fn quotes_schema() -> SchemaRef {
    let price = || DataType::Decimal128(18, 6);
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("price", price(), false),
        Field::new("size", DataType::Int64, false),
        Field::new("bid", price(), true),
        Field::new("ask", price(), true),
        Field::new("exchange", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]))
}

/// Encodes rows as one zstd Parquet file of [`quotes_schema`] (rows in the given order).
///
/// Errors: [`MasterError::Format`] naming `file` when a price does not fit `Decimal128(18,6)`.
pub(super) fn encode(rows: &[Archived<Quote>], file: &str) -> Result<Vec<u8>, MasterError> {
    let err = format_err(file);
    let decimals = |values: Vec<Option<i128>>| -> Result<ArrayRef, MasterError> {
        Ok(Arc::new(Decimal128Array::from(values).with_precision_and_scale(18, 6).map_err(|e| err(&e))?))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.record.symbol.as_str()))),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.record.ts)).with_timezone("UTC")),
        decimals(rows.iter().map(|r| Some(r.record.price.units())).collect())?,
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.record.size))),
        decimals(rows.iter().map(|r| r.record.bid.map(Decimal6::units)).collect())?,
        decimals(rows.iter().map(|r| r.record.ask.map(Decimal6::units)).collect())?,
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.record.exchange.as_deref()))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.pos.partition))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.pos.offset))),
    ];
    write_parquet(quotes_schema(), columns, file)
}

fn money<'a>(batch: &'a RecordBatch, name: &str, file: &str) -> Result<Option<&'a Decimal128Array>, MasterError> {
    let col: Option<&Decimal128Array> = column(batch, name, file)?;
    if let Some(c) = col.filter(|c| c.scale() != 6) {
        return Err(format_err(file)(&format!("{name} scale {} is not 6", c.scale())));
    }
    Ok(col)
}

/// Calls `f` with every row of a quotes file, in file order, through one reused [`Quote`] (no
/// allocation per row) and its log position; returns the number of rows. Files of the first
/// schema (without `bid`, `ask` and `exchange`) decode with those fields `None`.
///
/// Errors: [`MasterError::Format`] naming `file` when it is not Parquet or lacks a required
/// column of the right type.
pub(super) fn for_each_row(bytes: Bytes, file: &str, f: &mut dyn FnMut(&Quote, LogPosition)) -> Result<u64, MasterError> {
    let err = format_err(file);
    let mut quote = Quote { symbol: String::new(), ts: 0, price: Decimal6::ZERO, size: 0, bid: None, ask: None, exchange: None };
    for_each_batch(bytes, file, |batch| {
        let symbol: &StringArray = required(batch, "symbol", file)?;
        let ts: &TimestampMillisecondArray = required(batch, "ts", file)?;
        let price = money(batch, "price", file)?.ok_or_else(|| err(&"no column price"))?;
        let size: &Int64Array = required(batch, "size", file)?;
        let bid = money(batch, "bid", file)?;
        let ask = money(batch, "ask", file)?;
        let exchange: Option<&StringArray> = column(batch, "exchange", file)?;
        let partition: &Int32Array = required(batch, "partition", file)?;
        let offset: &Int64Array = required(batch, "offset", file)?;
        let opt_money = |c: Option<&Decimal128Array>, i: usize| c.filter(|c| c.is_valid(i)).map(|c| Decimal6::from_units(c.value(i)));
        for i in 0..batch.num_rows() {
            quote.symbol.clear();
            quote.symbol.push_str(symbol.value(i));
            quote.ts = ts.value(i);
            quote.price = Decimal6::from_units(price.value(i));
            quote.size = size.value(i);
            quote.bid = opt_money(bid, i);
            quote.ask = opt_money(ask, i);
            match (exchange.filter(|c| c.is_valid(i)).map(|c| c.value(i)), &mut quote.exchange) {
                (Some(v), Some(held)) => {
                    held.clear();
                    held.push_str(v);
                }
                (v, held) => *held = v.map(str::to_string),
            }
            f(&quote, LogPosition { partition: partition.value(i), offset: offset.value(i) });
        }
        Ok(())
    })
}
