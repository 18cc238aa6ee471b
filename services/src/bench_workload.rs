//! `prism bench`'s workloads, read a chunk at a time so that a 10 M-event file never sits in
//! memory whole: a JSONL file of `{"symbol", "ts" (UTC ms), "price", "size"}` lines, a Parquet
//! file with those columns (`price` Decimal128 of scale ≤ 6 or Float64; `ts` Int64 ms or
//! Timestamp(ms)), or a generated workload (500 symbols, event times 1 ms apart with up to 2 s
//! of arrival jitter, a random walk of prices on a cent grid; deterministic for a seed).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use arrow::array::{Array, Decimal128Array, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use prism_core::decimal::Decimal6;
use prism_core::event::Quote;
use prism_ingest::feed::expand::SplitMix64;

/// Events per chunk.
pub const CHUNK_EVENTS: usize = 10_000;

/// A workload being read: [`Workload::next_chunk`] gives up to [`CHUNK_EVENTS`] events at a
/// time, in file (arrival) order.
pub enum Workload {
    /// JSONL lines.
    Jsonl {
        /// The file, for error messages.
        path: PathBuf,
        /// Its lines.
        lines: std::io::Lines<BufReader<File>>,
        /// Lines read so far (1-based line numbers in errors).
        line: usize,
    },
    /// Parquet record batches.
    Parquet {
        /// The file, for error messages.
        path: PathBuf,
        /// Its batches.
        reader: ParquetRecordBatchReader,
        /// Rows read so far.
        row: usize,
    },
    /// Generated events.
    Generated {
        /// Events still to generate.
        left: usize,
        /// Events generated so far.
        done: usize,
        /// The generator.
        rng: SplitMix64,
        /// Each symbol's current price, micro-units.
        prices: Vec<i128>,
    },
}

/// 2024-01-02T14:30:00Z: the generated workload's first event time.
const GENERATED_START_MS: i64 = 1_704_205_800_000;

impl Workload {
    /// Opens a JSONL or Parquet file (told apart by Parquet's `PAR1` magic).
    ///
    /// Errors: the file cannot be opened, or is not valid Parquet after its magic.
    pub fn open(path: &Path) -> anyhow::Result<Workload> {
        use std::io::{Read, Seek};
        let mut magic = [0u8; 4];
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let is_parquet = file.read_exact(&mut magic).is_ok() && &magic == b"PAR1";
        file.rewind().with_context(|| format!("reading {}", path.display()))?;
        if is_parquet {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(CHUNK_EVENTS).build())
                .with_context(|| format!("reading {} as Parquet", path.display()))?;
            return Ok(Workload::Parquet { path: path.to_path_buf(), reader, row: 0 });
        }
        Ok(Workload::Jsonl { path: path.to_path_buf(), lines: BufReader::new(file).lines(), line: 0 })
    }

    /// The generated workload of `n` events for `seed`.
    pub fn generated(n: usize, seed: u64) -> Workload {
        let mut rng = SplitMix64(seed);
        let prices = (0..500).map(|_| 10_000_000 + rng.below(490_000_000) as i128 / 10_000 * 10_000).collect();
        Workload::Generated { left: n, done: 0, rng, prices }
    }

    /// The next chunk of events; empty at the end.
    ///
    /// Errors: an unreadable line or row, naming the file and line (or row).
    pub fn next_chunk(&mut self) -> anyhow::Result<Vec<Quote>> {
        let mut out = Vec::with_capacity(CHUNK_EVENTS);
        match self {
            Workload::Jsonl { path, lines, line } => {
                while out.len() < CHUNK_EVENTS {
                    let Some(text) = lines.next() else { break };
                    *line += 1;
                    let text = text.with_context(|| format!("{}:{}", path.display(), line))?;
                    if text.trim().is_empty() {
                        continue;
                    }
                    out.push(Quote::from_json(text.as_bytes()).with_context(|| format!("{}:{}", path.display(), line))?);
                }
            }
            Workload::Parquet { path, reader, row } => {
                if let Some(batch) = reader.next() {
                    let batch = batch.with_context(|| format!("reading {}", path.display()))?;
                    decode_batch(path, &batch, *row, &mut out)?;
                    *row += batch.num_rows();
                }
            }
            Workload::Generated { left, done, rng, prices } => {
                let n = (*left).min(CHUNK_EVENTS);
                for _ in 0..n {
                    let s = rng.below(500) as usize;
                    let step = (rng.below(21) as i128 - 10) * 10_000;
                    prices[s] = (prices[s] + step).max(10_000);
                    out.push(Quote {
                        symbol: format!("S{s:03}"),
                        ts: GENERATED_START_MS + *done as i64 - rng.below(2_000) as i64,
                        price: Decimal6::from_units(prices[s]),
                        size: 1 + rng.below(1_000) as i64,
                        bid: None,
                        ask: None,
                        exchange: None,
                    });
                    *done += 1;
                }
                *left -= n;
            }
        }
        Ok(out)
    }

    /// Every remaining event at once (for tests and the Kafka path's small workloads).
    ///
    /// Errors: as [`Workload::next_chunk`].
    pub fn read_all(mut self) -> anyhow::Result<Vec<Quote>> {
        let mut all = Vec::new();
        loop {
            let chunk = self.next_chunk()?;
            if chunk.is_empty() {
                return Ok(all);
            }
            all.extend(chunk);
        }
    }
}

/// The generated workload (see the module doc), whole.
pub fn generate_workload(n: usize, seed: u64) -> Vec<Quote> {
    // Generation cannot fail.
    Workload::generated(n, seed).read_all().unwrap_or_default()
}

/// Reads a JSONL or Parquet workload whole. Errors: unreadable file, bad line or column, with
/// where.
pub fn read_workload(path: &Path) -> anyhow::Result<Vec<Quote>> {
    Workload::open(path)?.read_all()
}

fn decode_batch(path: &Path, batch: &RecordBatch, first_row: usize, out: &mut Vec<Quote>) -> anyhow::Result<()> {
    let col = |name: &str| batch.column_by_name(name).with_context(|| format!("{}: no column {name}", path.display()));
    let symbols = col("symbol")?.as_any().downcast_ref::<StringArray>().context("symbol must be Utf8")?;
    let ts = col("ts")?;
    let price = col("price")?;
    let size = col("size")?.as_any().downcast_ref::<Int64Array>().context("size must be Int64")?;
    for i in 0..batch.num_rows() {
        let row = first_row + i;
        let ts_ms = if let Some(a) = ts.as_any().downcast_ref::<TimestampMillisecondArray>() {
            a.value(i)
        } else if let Some(a) = ts.as_any().downcast_ref::<Int64Array>() {
            a.value(i)
        } else {
            bail!("{}: ts must be Timestamp(ms) or Int64 ms", path.display());
        };
        let price = if let Some(a) = price.as_any().downcast_ref::<Decimal128Array>() {
            let scale = a.scale();
            if !(0..=6).contains(&scale) {
                bail!("{}: price scale {scale} is not within 0..=6", path.display());
            }
            Decimal6::from_units(a.value(i) * 10i128.pow((6 - scale) as u32))
        } else if let Some(a) = price.as_any().downcast_ref::<Float64Array>() {
            // Shortest round-trip text of the float, then the exact parser (refuses > 6 decimals).
            a.value(i).to_string().parse().with_context(|| format!("{} row {row}: price", path.display()))?
        } else {
            bail!("{}: price must be Decimal128 or Float64", path.display());
        };
        let q = Quote { symbol: symbols.value(i).to_string(), ts: ts_ms, price, size: size.value(i), bid: None, ask: None, exchange: None };
        q.validate().with_context(|| format!("{} row {row}", path.display()))?;
        out.push(q);
    }
    Ok(())
}
