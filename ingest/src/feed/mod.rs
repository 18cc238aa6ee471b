//! The historical feed: the stock-quote lab's source (DESIGN §9). Not to be confused with
//! Kappa's replay, which re-reads the log.
//!
//! It reads daily-bar CSV files ([`bars`]), orders every bar by (date, symbol), expands each
//! day into trades ([`expand`]) and appends one trading day at a time to `prism.quotes`, at
//! full speed or N trading days per second.
//!
//! Restart without duplicates: trades are numbered from 0 across the feed, and each record
//! carries the headers `prism.feed.id` and `prism.feed.seq`. The feed checkpoints
//! `(next_seq, log end offsets)` in the view store after its appends; on restart it scans the
//! log from the checkpointed end offsets for its own later records, partition by partition,
//! appends again what an append cut by the crash left out of some partitions, and resumes
//! after the highest sequence number found ([`recover`]) — so a trade that landed just before
//! a crash is never appended again, and one that did not land is.

pub mod bars;
pub mod expand;
mod recover;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::event::{DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::{EventLog, LogError, NewRecord};
use prism_core::store::{FeedCheckpoint, StoreError, ViewStore};
use tokio_util::sync::CancellationToken;

use crate::append::{AppendPath, Batch};

use bars::{read_bar_file, BarFileError, DailyBar};
use expand::{expand_bar, trade_count};

/// Header naming the feed that appended a record.
pub const FEED_ID_HEADER: &str = "prism.feed.id";
/// Header carrying a record's sequence number within its feed.
pub const FEED_SEQ_HEADER: &str = "prism.feed.seq";

/// How fast the feed sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeedSpeed {
    /// As fast as the log takes it.
    Max,
    /// This many trading days per second.
    DaysPerSecond(f64),
}

impl std::str::FromStr for FeedSpeed {
    type Err = String;

    /// `max` or a positive number of trading days per second.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(FeedSpeed::Max);
        }
        match s.parse::<f64>() {
            Ok(n) if n > 0.0 && n.is_finite() => Ok(FeedSpeed::DaysPerSecond(n)),
            _ => Err(format!("feed speed {s:?}: use max or a positive number of trading days per second")),
        }
    }
}

/// The feed's settings.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Daily-bar CSV files, plain or gzip.
    pub files: Vec<PathBuf>,
    /// Symbol for files without a ticker/symbol column.
    pub symbol: Option<String>,
    /// Trades per day (≥ 4); fewer when a day's volume is smaller.
    pub trades_per_day: usize,
    /// Sending speed.
    pub speed: FeedSpeed,
    /// Partitions of `prism.quotes` when the feed creates it.
    pub partitions: i32,
}

/// The historical feed's flags (each with a `PRISM_*` environment fallback), flattened into
/// `prism up`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedArgs {
    /// Daily-bar CSV files (plain or gzip) for the historical feed. Default: the bundled
    /// stock-quote lab file (AAPL, IBM, MSFT, GOOG, FB, 2000–2013).
    #[arg(long, env = "PRISM_FEED", num_args = 1.., value_delimiter = ',')]
    pub feed: Vec<PathBuf>,
    /// Run without the historical feed (events come only through HTTP ingest).
    #[arg(long, env = "PRISM_NO_FEED")]
    pub no_feed: bool,
    /// Symbol for feed files without a ticker/symbol column.
    #[arg(long, env = "PRISM_FEED_SYMBOL")]
    pub feed_symbol: Option<String>,
    /// `max`, or trading days per second.
    #[arg(long, env = "PRISM_FEED_SPEED", default_value = "max")]
    pub feed_speed: FeedSpeed,
    /// Trades generated per trading day and symbol (at least 4).
    #[arg(long, env = "PRISM_FEED_TRADES_PER_DAY", default_value_t = 390)]
    pub feed_trades_per_day: usize,
}

impl FeedArgs {
    /// The feed's settings for `files` (the flags' files, or the caller's default when none
    /// are given) and `partitions`. Errors: a message naming the flag when
    /// `--feed-trades-per-day` is below 4 (open, high, low and close need a trade each).
    pub fn config(&self, files: Vec<PathBuf>, partitions: i32) -> Result<FeedConfig, String> {
        if self.feed_trades_per_day < 4 {
            return Err("--feed-trades-per-day must be at least 4 (open, high, low and close need a trade each)".into());
        }
        Ok(FeedConfig {
            files,
            symbol: self.feed_symbol.clone(),
            trades_per_day: self.feed_trades_per_day,
            speed: self.feed_speed,
            partitions,
        })
    }
}

/// Errors that stop the feed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// An input file cannot be used.
    #[error(transparent)]
    File(#[from] BarFileError),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The view store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bad setting.
    #[error("feed: {0}")]
    Config(String),
}

/// A trading day: every symbol's bar for one date.
struct Day {
    date: String,
    bars: Vec<DailyBar>,
    trades: i64,
}

/// Runs the feed to the end of its input or until `cancel` fires; checkpoints as it goes.
///
/// Returns the number of trades appended by this run. Errors: [`FeedError`].
pub async fn run_feed<L: EventLog>(config: FeedConfig, log: Arc<L>, store: ViewStore, cancel: CancellationToken) -> Result<i64, FeedError> {
    if config.trades_per_day < 4 {
        return Err(FeedError::Config("--feed-trades-per-day must be at least 4".into()));
    }
    let (days, refused) = load_days(&config)?;
    let feed_id = feed_id(&config);
    let fingerprint = fingerprint(&config, &days);
    log.ensure_topic(QUOTES_TOPIC, config.partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let path = AppendPath::new(log.clone(), "feed");

    let mut appended_again = 0i64;
    let mut checkpoint = match store.feed_checkpoint(&feed_id).await? {
        Some(c) if c.fingerprint != fingerprint => {
            return Err(FeedError::Config(format!(
                "this data dir holds feed {feed_id} with other settings ({}); now {fingerprint}. Use a new --data-dir or the same feed settings",
                c.fingerprint
            )))
        }
        Some(mut c) => {
            // Trades appended after the checkpoint (before a crash) are in the log: complete the
            // append the crash cut, skip them, and count them now, since the checkpoint that
            // would have counted them never came.
            let landed = recover::recover(&*log, &feed_id, &c.end_offsets, c.next_seq).await?;
            if landed.records > 0 {
                let refill: Vec<NewRecord> = numbered(&days)
                    .filter(|(first_seq, day)| first_seq + day.trades > c.next_seq)
                    .flat_map(|(first_seq, day)| day_records(day, &feed_id, first_seq, config.trades_per_day, |seq, key| landed.missing(seq, key)))
                    .collect();
                appended_again = refill.len() as i64;
                path.commit(QUOTES_TOPIC, Batch::of(refill)).await?;
                tracing::info!(
                    feed = %feed_id, trades = landed.records, appended_again,
                    "feed found trades appended after its last checkpoint"
                );
                c.next_seq = landed.next_seq();
                c.end_offsets = log.end_offsets(QUOTES_TOPIC).await?;
                store.save_feed_checkpoint(&c, landed.records + appended_again, 0).await?;
            }
            c
        }
        None => {
            dead_letter_refused_rows(&path, &refused).await?;
            store.save_feed_checkpoint(&new_checkpoint(&feed_id, &fingerprint, &days, &refused), 0, refused.len() as i64).await?;
            new_checkpoint(&feed_id, &fingerprint, &days, &refused)
        }
    };
    if checkpoint.done {
        tracing::info!(feed = %feed_id, "historical feed already complete");
        return Ok(appended_again);
    }
    let total_trades: i64 = days.iter().map(|d| d.trades).sum();
    tracing::info!(
        feed = %feed_id, days = days.len(), trades = total_trades, refused_rows = refused.len(),
        resume_at_seq = checkpoint.next_seq, "historical feed starting"
    );

    let started = Instant::now();
    let mut appended_total = appended_again;
    let mut pending_accepted = 0i64;
    let mut last_checkpoint = Instant::now();
    let mut last_progress = Instant::now();
    let mut days_sent_this_run = 0u64;
    for (day_index, (seq_at_day_start, day)) in numbered(&days).enumerate() {
        let day_end_seq = seq_at_day_start + day.trades;
        if day_end_seq <= checkpoint.next_seq {
            // Appended by an earlier run, possibly after its last checkpoint (recovered from the
            // log above): the day counts as done.
            checkpoint.days_done = day_index as i64 + 1;
            checkpoint.feed_date = Some(day.date.clone());
            continue;
        }
        if cancel.is_cancelled() {
            break;
        }
        if let FeedSpeed::DaysPerSecond(rate) = config.speed {
            let due = started + Duration::from_secs_f64(days_sent_this_run as f64 / rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = cancel.cancelled() => break,
            }
        }
        let resume_seq = checkpoint.next_seq;
        let records = day_records(day, &feed_id, seq_at_day_start, config.trades_per_day, |seq, _| seq >= resume_seq);
        let n = records.len() as i64;
        path.append(QUOTES_TOPIC, Batch::of(records)).await?;
        appended_total += n;
        pending_accepted += n;
        days_sent_this_run += 1;
        checkpoint.next_seq = day_end_seq;
        checkpoint.days_done = day_index as i64 + 1;
        checkpoint.feed_date = Some(day.date.clone());
        if last_checkpoint.elapsed() >= Duration::from_millis(200) {
            // The checkpoint covers only what the log has acknowledged.
            path.acknowledge().await?;
            checkpoint.end_offsets = log.end_offsets(QUOTES_TOPIC).await?;
            store.save_feed_checkpoint(&checkpoint, pending_accepted, 0).await?;
            pending_accepted = 0;
            last_checkpoint = Instant::now();
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            tracing::info!(
                date = %day.date, days_done = checkpoint.days_done, days_total = days.len(),
                trades_per_s = (appended_total as f64 / started.elapsed().as_secs_f64().max(1e-9)) as u64,
                "historical feed progress"
            );
            last_progress = Instant::now();
        }
    }
    checkpoint.done = checkpoint.days_done as usize == days.len();
    path.acknowledge().await?;
    checkpoint.end_offsets = log.end_offsets(QUOTES_TOPIC).await?;
    store.save_feed_checkpoint(&checkpoint, pending_accepted, 0).await?;
    tracing::info!(
        feed = %feed_id, appended = appended_total, complete = checkpoint.done,
        elapsed_ms = started.elapsed().as_millis() as u64, "historical feed stopped"
    );
    Ok(appended_total)
}

fn load_days(config: &FeedConfig) -> Result<(Vec<Day>, Vec<bars::RowError>), FeedError> {
    let mut all = Vec::new();
    let mut refused = Vec::new();
    for path in &config.files {
        let file = read_bar_file(path, config.symbol.as_deref())?;
        for r in &file.refused {
            tracing::warn!(row = %r, "historical feed refused a row");
        }
        metrics::counter!(crate::telemetry::FEED_ROWS_REFUSED_TOTAL).increment(file.refused.len() as u64);
        all.extend(file.bars);
        refused.extend(file.refused);
    }
    // One bar per (symbol, date): a repeated row is refused, the first one kept.
    all.sort_by(|a, b| (a.date, &a.symbol).cmp(&(b.date, &b.symbol)));
    let mut days: Vec<Day> = Vec::new();
    let mut last: Option<(chrono::NaiveDate, String)> = None;
    for bar in all {
        let key = (bar.date, bar.symbol.clone());
        if last.as_ref() == Some(&key) {
            refused.push(bars::RowError {
                file: bar.file.clone(),
                line: bar.line,
                reason: format!("second bar for {} on {}", bar.symbol, bar.date),
                raw: String::new(),
            });
            continue;
        }
        last = Some(key);
        let date = bar.date.to_string();
        let trades = trade_count(&bar, config.trades_per_day) as i64;
        match days.last_mut() {
            Some(d) if d.date == date => {
                d.trades += trades;
                d.bars.push(bar);
            }
            _ => days.push(Day { date, bars: vec![bar], trades }),
        }
    }
    Ok((days, refused))
}

/// Each day with the sequence number of its first trade (trades are numbered from 0 across
/// the feed, day after day).
fn numbered(days: &[Day]) -> impl Iterator<Item = (i64, &Day)> {
    days.iter().scan(0i64, |next, day| {
        let first = *next;
        *next += day.trades;
        Some((first, day))
    })
}

/// The day's trades, merged by event time (then symbol), numbered from `first_seq`, keeping
/// those `keep(seq, key)` accepts.
fn day_records(day: &Day, feed_id: &str, first_seq: i64, trades_per_day: usize, keep: impl Fn(i64, &[u8]) -> bool) -> Vec<NewRecord> {
    let mut trades: Vec<_> = day.bars.iter().flat_map(|b| expand_bar(b, trades_per_day)).collect();
    trades.sort_by(|a, b| (a.ts, &a.symbol).cmp(&(b.ts, &b.symbol)));
    let now = prism_core::time::now_ms();
    trades
        .into_iter()
        .enumerate()
        .map(|(i, q)| (first_seq + i as i64, q))
        .filter(|(seq, q)| keep(*seq, q.symbol.as_bytes()))
        .map(|(seq, q)| NewRecord {
            key: q.symbol.clone().into_bytes(),
            value: q.to_json(),
            headers: vec![
                (FEED_ID_HEADER.to_string(), feed_id.as_bytes().to_vec()),
                (FEED_SEQ_HEADER.to_string(), seq.to_string().into_bytes()),
            ],
            timestamp_ms: now,
        })
        .collect()
}

async fn dead_letter_refused_rows<L: EventLog>(path: &AppendPath<L>, refused: &[bars::RowError]) -> Result<(), FeedError> {
    if refused.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for r in refused {
        batch.refuse(r.file.clone(), format!("feed:{}:{}", r.file, r.line), r.reason.clone(), r.raw.as_bytes());
    }
    path.commit(QUOTES_TOPIC, batch).await?;
    Ok(())
}

fn new_checkpoint(feed_id: &str, fingerprint: &str, days: &[Day], refused: &[bars::RowError]) -> FeedCheckpoint {
    FeedCheckpoint {
        feed_id: feed_id.to_string(),
        fingerprint: fingerprint.to_string(),
        next_seq: 0,
        end_offsets: Vec::new(),
        days_done: 0,
        days_total: days.len() as i64,
        rows_refused: refused.len() as i64,
        feed_date: None,
        done: days.is_empty(),
    }
}

fn fnv64(parts: impl IntoIterator<Item = String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// A stable identity for the feed's inputs: the files' names, in order.
fn feed_id(config: &FeedConfig) -> String {
    let names = config.files.iter().map(|p| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().to_string()));
    format!("feed-{}", fnv64(names))
}

fn fingerprint(config: &FeedConfig, days: &[Day]) -> String {
    let trades: i64 = days.iter().map(|d| d.trades).sum();
    format!(
        "trades_per_day={} symbol={} days={} trades={}",
        config.trades_per_day,
        config.symbol.as_deref().unwrap_or("-"),
        days.len(),
        trades
    )
}
