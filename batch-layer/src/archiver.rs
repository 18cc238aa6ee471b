//! The archiver: `prism.quotes` → the Parquet master dataset (DESIGN §5).
//!
//! It reads every partition from the offsets committed in the view store (consumer
//! `archiver`), buffers rows, and on each flush writes one file per (partition, event hour),
//! each made visible by rename, and only then commits the new offsets together with the max
//! event time archived per partition (which the batch horizon is computed from). On start it
//! deletes files written after the last committed offsets (a crash between rename and commit):
//! they are written again from the log, so no row is lost or archived twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_core::config::ARCHIVER_CONSUMER;
use prism_core::event::{LogPosition, Quote, QUOTES_TOPIC};
use prism_core::log::EventLog;
use prism_core::consumer::StoreConsumer;
use prism_core::store::{ConsumerOffset, ViewStore};
use tokio_util::sync::CancellationToken;

use crate::master::{hour_start, ArchivedQuote, MasterDataset};
use crate::{telemetry, BatchError};

/// Settings of the archiver.
#[derive(Debug, Clone)]
pub struct ArchiverConfig {
    /// The master dataset (a local folder or object storage).
    pub master: MasterDataset,
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush at least this often while rows are buffered.
    pub flush_interval: Duration,
    /// Partitions of `prism.quotes` if the archiver has to create it.
    pub partitions: i32,
}

/// Runs the archiver until `cancel` fires; flushes and commits before returning.
///
/// Errors: [`BatchError`] when the log, the store or the master dataset fails.
pub async fn run_archiver<L: EventLog>(
    config: ArchiverConfig,
    log: Arc<L>,
    store: ViewStore,
    cancel: CancellationToken,
) -> Result<(), BatchError> {
    let partitions = log.ensure_topic(QUOTES_TOPIC, config.partitions).await?;
    let mut consumer = StoreConsumer::resume(&store, ARCHIVER_CONSUMER, QUOTES_TOPIC, partitions).await?;
    let committed = consumer.next_offsets();
    let removed = config.master.remove_uncommitted(QUOTES_TOPIC, &committed).await?;
    if removed > 0 {
        tracing::warn!(removed, "archiver removed files written after its last commit; they will be written again");
    }
    tracing::info!(partitions, offsets = ?consumer.next_offsets(), "archiver starting");

    let mut buffer: Vec<ArchivedQuote> = Vec::new();
    let mut consumed_since_flush = 0usize;
    let mut last_flush = Instant::now();
    loop {
        let records = tokio::select! {
            r = consumer.poll(&*log, 10_000) => r?,
            _ = cancel.cancelled() => break,
        };
        for r in &records {
            // Malformed records are the speed layer's to dead-letter; the archive skips them.
            match Quote::from_json(&r.value) {
                Ok(quote) => {
                    consumer.advance(r, Some(quote.ts));
                    buffer.push(ArchivedQuote { quote, pos: LogPosition { partition: r.partition, offset: r.offset } });
                }
                Err(_) => {
                    metrics::counter!(telemetry::ARCHIVER_SKIPPED_TOTAL).increment(1);
                    consumer.advance(r, None);
                }
            }
            consumed_since_flush += 1;
        }
        if consumed_since_flush > 0
            && (buffer.len() >= config.flush_rows || last_flush.elapsed() >= config.flush_interval)
        {
            flush(&config, &store, &mut buffer, &consumer.offsets).await?;
            consumed_since_flush = 0;
            last_flush = Instant::now();
        }
    }
    if consumed_since_flush > 0 {
        flush(&config, &store, &mut buffer, &consumer.offsets).await?;
    }
    tracing::info!("archiver stopped after its final flush");
    Ok(())
}

/// Writes the buffer as one file per (partition, hour), then commits the offsets.
async fn flush(
    config: &ArchiverConfig,
    store: &ViewStore,
    buffer: &mut Vec<ArchivedQuote>,
    offsets: &[ConsumerOffset],
) -> Result<(), BatchError> {
    let started = Instant::now();
    let rows = std::mem::take(buffer);
    let count = rows.len();
    let mut groups: BTreeMap<(i32, i64), Vec<ArchivedQuote>> = BTreeMap::new();
    for row in rows {
        groups.entry((row.pos.partition, hour_start(row.quote.ts))).or_default().push(row);
    }
    let files = groups.len();
    for group in groups.into_values() {
        config.master.write_file(QUOTES_TOPIC, group).await?;
    }
    store.commit_offsets(ARCHIVER_CONSUMER, QUOTES_TOPIC, offsets).await?;
    metrics::counter!(telemetry::ARCHIVED_EVENTS_TOTAL).increment(count as u64);
    metrics::counter!(telemetry::ARCHIVED_FILES_TOTAL).increment(files as u64);
    metrics::histogram!(telemetry::ARCHIVER_FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
    tracing::debug!(rows = count, files, elapsed_ms = started.elapsed().as_millis() as u64, "archiver flushed");
    Ok(())
}
