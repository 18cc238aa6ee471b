//! The quote poller, `prism quote-poller` (issue 9): polls a JSON quote API for configured
//! symbols and appends each new quote to `prism.quotes` (keyed by symbol) through the append
//! path, as source `poller`.
//!
//! **Polling.** Every `--poll-interval` (default 1 s) it GETs the URL template with `{symbol}`
//! replaced by each symbol (percent-encoded), all symbols at once, each with a 5 s timeout. The
//! fields of a quote are read from the JSON answer by RFC 6901 pointers ([`FieldPointers`]:
//! `/last` price, `/size` shares, `/time` RFC 3339 or UTC ms, `/bid` and `/ask` optional, the
//! symbol from the configuration unless `--poll-symbol-pointer` is set), then validated like any
//! quote ([`Quote::validate`]). The poller's [`crate::quote_sim`] serves this shape.
//!
//! **Unchanged quotes.** A quote with the same (time, price, size) as the last one appended for
//! its polled symbol is skipped (counted in `prism_poller_unchanged_total`): polling faster than
//! the source changes appends each distinct quote once. The poller samples: a quote the source
//! held for less than an interval may never be seen.
//!
//! **Delivery** into `prism.quotes`: each distinct quote once, across restarts and crashes. Every
//! record carries [`SOURCE_HEADER`] `poller:<symbol>` and [`POSITION_HEADER`]
//! `<ts>:<price>:<size>`; after each commit the poller saves a checkpoint file (per symbol the
//! last quote appended, and the log end offsets), and on start it reads its records after the
//! checkpoint's offsets back from the log ([`crate::append::recover_positions`]), so what landed
//! after the last save is not appended again; without a checkpoint file it scans the topic from
//! its start. Into `prism.dlq`: a response that is not JSON, misses a field or fails validation
//! is refused with source `poll:<url>` and the reason, at least once — the same refusal for the
//! same symbol again in a row is not dead-lettered again (only counted as an error) until a
//! valid quote or another refusal comes in.
//!
//! **Errors** of the source never stop the poller: a connection failure, a timeout, a non-2xx
//! status or a broken body is logged (once when it starts, once when it clears) and counted in
//! `prism_poller_errors_total{kind}` (`connect`, `timeout`, `status`, `too_large`, `body`,
//! `request`, and `invalid` for refused responses), and the symbol is polled again next
//! interval. Only a failing event log or checkpoint file stops it ([`PollerError`]).
//!
//! **Shutdown**: on cancel, polls in flight are abandoned, a commit in flight finishes, and the
//! checkpoint is saved.

mod config;
mod extract;
mod fetch;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use prism_core::event::{Quote, DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::{EventLog, LogError, NewRecord};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::append::{AppendPath, Batch, POSITION_HEADER, SOURCE_HEADER};
use crate::telemetry;

pub use config::{PollerArgs, PollerConfig, REQUEST_TIMEOUT};
pub use extract::FieldPointers;
pub use fetch::MAX_RESPONSE_BYTES;
pub use state::{LastQuote, CHECKPOINT_VERSION};

use fetch::FetchError;
use state::Checkpoint;

/// What one run of the poller did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollerStats {
    /// Requests made (one per symbol per interval).
    pub polls: u64,
    /// Quotes appended to `prism.quotes`.
    pub appended: u64,
    /// Valid quotes equal to the last appended for their symbol (not appended).
    pub unchanged: u64,
    /// Responses sent to `prism.dlq`.
    pub dead_lettered: u64,
    /// Polls that gave no valid quote (no answer, an error status, or a refused response).
    pub errors: u64,
}

/// Errors that stop the poller (a restart resumes from the checkpoint and the log).
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The checkpoint file could not be read or saved.
    #[error("quote poller: {0}")]
    Checkpoint(String),
    /// A bad setting (or the HTTP client could not be built).
    #[error("quote poller: {0}")]
    Config(String),
}

/// Polls the quote API of `config` into `log` until `cancel` fires (see the
/// [module docs](self)); returns what this run did.
///
/// Errors: [`PollerError::Config`] for bad settings, [`PollerError::Checkpoint`] for an
/// unreadable or unwritable checkpoint file, [`PollerError::Log`] when an append fails (part of
/// the batch may have landed; a restart recovers it).
pub async fn run_quote_poller<L: EventLog>(
    config: PollerConfig,
    log: Arc<L>,
    cancel: CancellationToken,
) -> Result<PollerStats, PollerError> {
    config.validate()?;
    let client = fetch::client(config.request_timeout).map_err(PollerError::Config)?;
    log.ensure_topic(QUOTES_TOPIC, config.partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let mut checkpoint = Checkpoint::load(&config.checkpoint_path).map_err(PollerError::Checkpoint)?;
    let recovery = state::recover(&*log, &mut checkpoint).await?;
    tracing::info!(
        checkpoint = %config.checkpoint_path.display(), scanned_from = ?checkpoint.log_end_offsets,
        recovered_records = recovery.records, moved_symbols = recovery.symbols, unreadable_headers = recovery.unreadable,
        "quote poller recovered its last quotes from the log"
    );
    let targets = config
        .symbols
        .iter()
        .map(|symbol| Target { symbol: symbol.clone(), url: config.url_for(symbol), failing: None, last_refusal: None })
        .collect();
    let mut poller = Poller {
        path: AppendPath::new(log.clone(), "poller"),
        log,
        client,
        last: checkpoint.symbols,
        config,
        targets,
        stats: PollerStats::default(),
        saved_at: std::time::Instant::now(),
    };
    poller.save().await?;
    tracing::info!(
        url = %poller.config.url_template, symbols = ?poller.config.symbols, interval = ?poller.config.interval,
        "quote poller polling"
    );
    poller.run(cancel).await?;
    poller.save().await?;
    let s = poller.stats;
    tracing::info!(
        polls = s.polls,
        appended = s.appended,
        unchanged = s.unchanged,
        dead_lettered = s.dead_lettered,
        errors = s.errors,
        "quote poller stopped"
    );
    Ok(s)
}

/// One polled symbol.
struct Target {
    symbol: String,
    url: String,
    /// The kind of error its polls fail with, while they do (to log changes only).
    failing: Option<&'static str>,
    /// The last refusal dead-lettered for it (reason, body), until a valid quote or another
    /// refusal.
    last_refusal: Option<(String, Vec<u8>)>,
}

/// One run's state.
struct Poller<L> {
    log: Arc<L>,
    path: AppendPath<L>,
    client: reqwest::Client,
    config: PollerConfig,
    targets: Vec<Target>,
    /// Per polled symbol, the last quote the log acknowledged.
    last: BTreeMap<String, LastQuote>,
    stats: PollerStats,
    /// When the checkpoint was last saved.
    saved_at: std::time::Instant,
}

impl<L: EventLog> Poller<L> {
    /// Polls every interval until `cancel` fires.
    async fn run(&mut self, cancel: CancellationToken) -> Result<(), PollerError> {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            metrics::gauge!(telemetry::POLLER_CHECKPOINT_AGE_SECONDS).set(self.saved_at.elapsed().as_secs_f64());
            let answers = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                answers = self.poll_all() => answers,
            };
            // Not interrupted by a cancel: the batch is appended and checkpointed.
            self.commit(answers).await?;
        }
    }

    /// GETs every target's URL at once; the answers in target order.
    async fn poll_all(&self) -> Vec<Result<Vec<u8>, FetchError>> {
        let mut requests = JoinSet::new();
        for (i, target) in self.targets.iter().enumerate() {
            let (client, url) = (self.client.clone(), target.url.clone());
            requests.spawn(async move { (i, fetch::fetch(&client, &url).await) });
        }
        let mut answers: Vec<Result<Vec<u8>, FetchError>> =
            (0..self.targets.len()).map(|_| Err(FetchError { kind: "request", message: "the request task failed".into() })).collect();
        while let Some(done) = requests.join_next().await {
            if let Ok((i, answer)) = done {
                answers[i] = answer;
            }
        }
        answers
    }

    /// Appends the new quotes among `answers` and the refused answers, then moves the last
    /// quotes and saves the checkpoint.
    async fn commit(&mut self, answers: Vec<Result<Vec<u8>, FetchError>>) -> Result<(), PollerError> {
        let mut batch = Batch::new();
        let mut appended: Vec<(String, LastQuote)> = Vec::new();
        let mut refused: Vec<(usize, (String, Vec<u8>))> = Vec::new();
        let mut succeeded = false;
        for (i, answer) in answers.into_iter().enumerate() {
            metrics::counter!(telemetry::POLLER_POLLS_TOTAL).increment(1);
            self.stats.polls += 1;
            let body = match answer {
                Ok(body) => body,
                Err(e) => {
                    self.failed(i, e.kind, &e.message);
                    continue;
                }
            };
            let target = &self.targets[i];
            match extract::quote_of(&body, &target.symbol, &self.config.fields) {
                Ok(quote) => {
                    succeeded = true;
                    self.recovered(i);
                    let target = &self.targets[i];
                    let last = LastQuote::of(&quote);
                    if self.last.get(&target.symbol) == Some(&last) {
                        metrics::counter!(telemetry::POLLER_UNCHANGED_TOTAL).increment(1);
                        self.stats.unchanged += 1;
                        continue;
                    }
                    batch.push(record(&quote, &target.symbol, &last));
                    appended.push((target.symbol.clone(), last));
                }
                Err(reason) => {
                    let refusal = (reason, body);
                    if target.last_refusal.as_ref() != Some(&refusal) {
                        batch.refuse(target.symbol.clone(), format!("poll:{}", target.url), refusal.0.clone(), &refusal.1);
                        refused.push((i, refusal.clone()));
                    }
                    self.failed(i, "invalid", &refusal.0);
                }
            }
        }
        if !batch.is_empty() {
            self.path.commit(QUOTES_TOPIC, batch).await?;
        }
        self.stats.appended += appended.len() as u64;
        self.stats.dead_lettered += refused.len() as u64;
        for (i, refusal) in refused {
            self.targets[i].last_refusal = Some(refusal);
        }
        let moved = !appended.is_empty();
        self.last.extend(appended);
        if succeeded {
            metrics::gauge!(telemetry::POLLER_LAST_SUCCESS_TIMESTAMP_SECONDS).set(prism_core::time::now_ms() as f64 / 1000.0);
        }
        if moved {
            self.save().await?;
        }
        Ok(())
    }

    /// Counts and (when it starts or changes kind) logs a failed poll of target `i`.
    fn failed(&mut self, i: usize, kind: &'static str, message: &str) {
        metrics::counter!(telemetry::POLLER_ERRORS_TOTAL, "kind" => kind).increment(1);
        self.stats.errors += 1;
        let target = &mut self.targets[i];
        if target.failing != Some(kind) {
            tracing::warn!(symbol = %target.symbol, url = %target.url, kind, error = %message,
                "quote poll failed; polling again every interval");
            target.failing = Some(kind);
        } else {
            tracing::debug!(symbol = %target.symbol, kind, error = %message, "quote poll failed again");
        }
    }

    /// Target `i` answered a valid quote: clears its error state.
    fn recovered(&mut self, i: usize) {
        let target = &mut self.targets[i];
        target.last_refusal = None;
        if let Some(kind) = target.failing.take() {
            tracing::info!(symbol = %target.symbol, url = %target.url, after = kind, "quote poll answers again");
        }
    }

    /// Saves the checkpoint with `prism.quotes`' current log end offsets (everything appended
    /// so far is acknowledged: commits wait for it). Synchronous, so that a cancelled task never
    /// leaves it half done.
    async fn save(&mut self) -> Result<(), PollerError> {
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            symbols: self.last.clone(),
            log_end_offsets: self.log.end_offsets(QUOTES_TOPIC).await?,
        };
        checkpoint.save(&self.config.checkpoint_path).map_err(PollerError::Checkpoint)?;
        self.saved_at = std::time::Instant::now();
        Ok(())
    }
}

/// The `prism.quotes` record of `quote`, polled for `symbol`.
fn record(quote: &Quote, symbol: &str, last: &LastQuote) -> NewRecord {
    NewRecord::new(quote.symbol.clone(), quote.to_json())
        .with_header(SOURCE_HEADER, state::source_of(symbol))
        .with_header(POSITION_HEADER, last.position())
}
