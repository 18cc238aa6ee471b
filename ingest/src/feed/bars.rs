//! Daily OHLCV bars from CSV files (plain or gzip, detected by content).
//!
//! Columns are found by header name, in any case and order: `date`, `open`, `high`, `low`,
//! `close`, `volume`, and `ticker` or `symbol` (a file without one takes the feed's symbol
//! option). Other columns (`Adj Close`, …) are ignored. Dates are `YYYY-MM-DD` (also
//! `YYYY/MM/DD`, `YYYYMMDD`, `MM/DD/YYYY`, or a date followed by a time of day, whose date part
//! is used). Rows may come in any order.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use chrono::NaiveDate;
use flate2::read::MultiGzDecoder;
use prism_core::decimal::Decimal6;

/// One validated daily bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyBar {
    /// Ticker symbol.
    pub symbol: String,
    /// Trading date (the session is 14:30–21:00 UTC that day).
    pub date: NaiveDate,
    /// Open price, scale 6.
    pub open: Decimal6,
    /// High price, scale 6.
    pub high: Decimal6,
    /// Low price, scale 6.
    pub low: Decimal6,
    /// Close price, scale 6.
    pub close: Decimal6,
    /// Day's volume, shares.
    pub volume: i64,
    /// The file the bar came from.
    pub file: String,
    /// Its 1-based line in that file (the header is line 1).
    pub line: u64,
}

/// A refused input row, naming file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct RowError {
    /// File name.
    pub file: String,
    /// 1-based line number (the header is line 1).
    pub line: u64,
    /// Why the row was refused.
    pub reason: String,
    /// The row's raw text.
    pub raw: String,
}

/// Errors that stop reading a whole file.
#[derive(Debug, thiserror::Error)]
pub enum BarFileError {
    /// The file cannot be opened or read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// File name.
        file: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The header lacks a required column.
    #[error("{file}: no {column:?} column in the header (found: {found})")]
    MissingColumn {
        /// File name.
        file: String,
        /// The missing column.
        column: &'static str,
        /// The header as read.
        found: String,
    },
    /// No symbol column and no symbol given.
    #[error("{file}: no ticker or symbol column; pass --feed-symbol to name the symbol")]
    NoSymbol {
        /// File name.
        file: String,
    },
}

/// The bars of one file, and the rows it refused.
#[derive(Debug, Default)]
pub struct BarFile {
    /// Valid bars in file order.
    pub bars: Vec<DailyBar>,
    /// Refused rows.
    pub refused: Vec<RowError>,
}

/// Reads a daily-bar CSV file (plain or gzip). `default_symbol` names the symbol when the file
/// has no `ticker`/`symbol` column.
///
/// Errors: [`BarFileError`] for problems with the whole file; bad rows are returned in
/// [`BarFile::refused`] and the rest is read.
pub fn read_bar_file(path: &Path, default_symbol: Option<&str>) -> Result<BarFile, BarFileError> {
    let file_name = path.display().to_string();
    let io = |source| BarFileError::Io { file: file_name.clone(), source };
    let mut raw = Vec::new();
    BufReader::new(File::open(path).map_err(io)?).read_to_end(&mut raw).map_err(io)?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(io)?;
        out
    } else {
        raw
    };
    parse_bars(&text, &file_name, default_symbol)
}

/// Parses CSV bytes as daily bars; see [`read_bar_file`].
pub fn parse_bars(text: &[u8], file: &str, default_symbol: Option<&str>) -> Result<BarFile, BarFileError> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| BarFileError::Io { file: file.into(), source: std::io::Error::other(e.to_string()) })?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let find = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let col = |name: &'static str| {
        find(&[name]).ok_or_else(|| BarFileError::MissingColumn { file: file.into(), column: name, found: header.join(",") })
    };
    let (date, open, high, low, close, volume) = (col("date")?, col("open")?, col("high")?, col("low")?, col("close")?, col("volume")?);
    let symbol_col = find(&["ticker", "symbol"]);
    if symbol_col.is_none() && default_symbol.is_none() {
        return Err(BarFileError::NoSymbol { file: file.into() });
    }
    let mut out = BarFile::default();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                out.refused.push(RowError { file: file.into(), line, reason: e.to_string(), raw: String::new() });
                continue;
            }
        };
        let line = record.position().map_or(line, |p| p.line());
        let raw = record.iter().collect::<Vec<_>>().join(",");
        if raw.chars().all(|c| c == ',') {
            continue; // blank line
        }
        let field = |c: usize| record.get(c).unwrap_or("");
        let symbol = symbol_col.map(field).or(default_symbol).unwrap_or("").to_string();
        let parsed = parse_row(&symbol, field(date), [field(open), field(high), field(low), field(close)], field(volume));
        match parsed {
            Ok((date, [open, high, low, close], volume)) => {
                out.bars.push(DailyBar { symbol, date, open, high, low, close, volume, file: file.to_string(), line })
            }
            Err(reason) => out.refused.push(RowError { file: file.into(), line, reason, raw }),
        }
    }
    Ok(out)
}

type ParsedRow = (NaiveDate, [Decimal6; 4], i64);

fn parse_row(symbol: &str, date: &str, prices: [&str; 4], volume: &str) -> Result<ParsedRow, String> {
    if symbol.is_empty() {
        return Err("empty symbol".into());
    }
    let date = parse_date(date)?;
    let names = ["open", "high", "low", "close"];
    let mut p = [Decimal6::ZERO; 4];
    for i in 0..4 {
        p[i] = prices[i].parse().map_err(|e| format!("{}: {e}", names[i]))?;
        if p[i] <= Decimal6::ZERO || !p[i].fits_price() {
            return Err(format!("{} {} must be > 0 and fit NUMERIC(18,6)", names[i], prices[i]));
        }
    }
    let volume_dec: Decimal6 = volume.parse().map_err(|e| format!("volume: {e}"))?;
    if volume_dec.units() % prism_core::decimal::UNITS_PER_ONE != 0 {
        return Err(format!("volume {volume} is not a whole number of shares"));
    }
    let volume =
        i64::try_from(volume_dec.units() / prism_core::decimal::UNITS_PER_ONE).map_err(|_| format!("volume {volume} is out of range"))?;
    let [open, high, low, close] = p;
    if high < low {
        return Err(format!("high {high} < low {low}"));
    }
    for (name, v) in [("open", open), ("close", close)] {
        if v < low || v > high {
            return Err(format!("{name} {v} is outside [low {low}, high {high}]"));
        }
    }
    let needed = super::expand::min_trades(open, high, low, close);
    if volume < needed as i64 {
        return Err(format!("volume {volume} is too small to carry the bar's {needed} required trades with whole shares"));
    }
    Ok((date, p, volume))
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    for format in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%m/%d/%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, format) {
            return Ok(d);
        }
    }
    // `2013-03-01 00:00:00` and the like: a date followed by a time of day.
    if let (Some(date), Some(sep)) = (s.get(..10), s.as_bytes().get(10)) {
        if matches!(sep, b' ' | b'T') {
            if let Ok(d) = NaiveDate::parse_from_str(date, "%Y-%m-%d") {
                return Ok(d);
            }
        }
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(dt.date_naive());
    }
    Err(format!("date {s:?} is not YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_any_case_any_order_and_refuses_bad_rows() {
        let csv = "\u{feff}Date,VOLUME,open,High,low,Close,Adj Close,Ticker\n\
                   2000-03-01,9616100,118.56,132.06,118.5,130.31,4.18,AAPL\n\
                   2000-03-02,100,127.0,120.0,125.0,122.0,1,AAPL\n\
                   2000-03-03,100,1.0000001,2,1,1.5,1,AAPL\n\
                   2000-03-06,2,1,3,1,2,1,AAPL\n\
                   2000-03-07,abc,1,3,1,2,1,AAPL\n\
                   2000-03-08,10,4,3,1,2,1,AAPL\n\
                   20000309,10,1,1,1,1,1,IBM\n";
        let f = parse_bars(csv.as_bytes(), "x.csv", None).expect("parse");
        assert_eq!(f.bars.len(), 2);
        assert_eq!(f.bars[0].open.units(), 118_560_000);
        assert_eq!(f.bars[0].volume, 9_616_100);
        assert_eq!((f.bars[0].file.as_str(), f.bars[0].line), ("x.csv", 2));
        assert_eq!(f.bars[1].symbol, "IBM");
        let lines: Vec<u64> = f.refused.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7]);
        assert!(f.refused[0].reason.contains("high"), "{}", f.refused[0]);
        assert!(f.refused[1].reason.contains("6 decimal"), "{}", f.refused[1]);
        assert!(f.refused[2].reason.contains("too small"), "{}", f.refused[2]);
        assert!(f.refused[4].reason.contains("outside"), "{}", f.refused[4]);
    }

    #[test]
    fn symbol_from_option_and_missing_columns() {
        let csv = "date,open,high,low,close,volume\n2001-01-02,1,2,1,2,100\n";
        assert!(matches!(parse_bars(csv.as_bytes(), "y.csv", None), Err(BarFileError::NoSymbol { .. })));
        let f = parse_bars(csv.as_bytes(), "y.csv", Some("XYZ")).expect("parse");
        assert_eq!(f.bars[0].symbol, "XYZ");
        let bad = "date,open,high,low,volume\n";
        for date in ["2001-01-02 00:00:00", "01/02/2001", "2001/01/02", "20010102", "2001-01-02T00:00:00Z"] {
            assert_eq!(parse_date(date), Ok(chrono::NaiveDate::from_ymd_opt(2001, 1, 2).expect("date")), "{date}");
        }
        assert!(parse_date("02-01-2001x").is_err());
        assert!(matches!(parse_bars(bad.as_bytes(), "z.csv", Some("X")), Err(BarFileError::MissingColumn { column: "close", .. })));
    }
}
