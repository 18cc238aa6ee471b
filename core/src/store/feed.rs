//! Ingest progress in the view store: the historical feed's checkpoint and per-source
//! accepted/refused counters (read by `/v1/status`, so that status works across processes).

use sqlx::Row;

use super::{db, StoreError, ViewStore};

/// Where a historical feed stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCheckpoint {
    /// Feed identity (its input files).
    pub feed_id: String,
    /// Settings that shape the trade sequence (trades per day, files' sizes); a restart with
    /// other settings must not continue this sequence.
    pub fingerprint: String,
    /// Sequence number of the next trade to append (trades are numbered from 0 across the
    /// whole feed).
    pub next_seq: i64,
    /// Log end offsets of `prism.quotes` when this checkpoint was written; on restart the feed
    /// scans from here for trades it appended after the checkpoint.
    pub end_offsets: Vec<i64>,
    /// Trading days fully appended.
    pub days_done: i64,
    /// Trading days in the input.
    pub days_total: i64,
    /// Input rows refused so far.
    pub rows_refused: i64,
    /// Date of the day in progress (`YYYY-MM-DD`).
    pub feed_date: Option<String>,
    /// All input appended.
    pub done: bool,
}

/// Events accepted and refused by one ingest source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestCounters {
    /// Source name, e.g. `http` or `feed`.
    pub source: String,
    /// Events appended to the log.
    pub accepted: i64,
    /// Events (or input rows) refused.
    pub refused: i64,
}

impl ViewStore {
    /// The checkpoint of feed `feed_id`, if any.
    pub async fn feed_checkpoint(&self, feed_id: &str) -> Result<Option<FeedCheckpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT feed_id, fingerprint, next_seq, end_offsets, days_done, days_total, rows_refused, feed_date, done
             FROM feed_checkpoints WHERE feed_id = ?",
        )
        .bind(feed_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a feed checkpoint"))?;
        row.map(|r| {
            let offsets: String = r.get(3);
            Ok(FeedCheckpoint {
                feed_id: r.get(0),
                fingerprint: r.get(1),
                next_seq: r.get(2),
                end_offsets: serde_json::from_str(&offsets)
                    .map_err(|e| StoreError::BadValue(format!("feed end offsets {offsets:?}: {e}")))?,
                days_done: r.get(4),
                days_total: r.get(5),
                rows_refused: r.get(6),
                feed_date: r.get(7),
                done: r.get::<i64, _>(8) != 0,
            })
        })
        .transpose()
    }

    /// Every feed's checkpoint (for `/v1/status`).
    pub async fn feed_checkpoints(&self) -> Result<Vec<FeedCheckpoint>, StoreError> {
        let ids: Vec<String> = sqlx::query("SELECT feed_id FROM feed_checkpoints ORDER BY feed_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing feeds"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = self.feed_checkpoint(&id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Saves a feed checkpoint and adds to the feed's counters, in one transaction.
    pub async fn save_feed_checkpoint(
        &self,
        c: &FeedCheckpoint,
        accepted_delta: i64,
        refused_delta: i64,
    ) -> Result<(), StoreError> {
        let offsets = serde_json::to_string(&c.end_offsets).unwrap_or_else(|_| "[]".into());
        let mut tx = self.pool.begin().await.map_err(db("beginning a feed checkpoint"))?;
        sqlx::query(
            "INSERT INTO feed_checkpoints (feed_id, fingerprint, next_seq, end_offsets, days_done, days_total,
                 rows_refused, feed_date, done, updated_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (feed_id) DO UPDATE SET fingerprint = excluded.fingerprint, next_seq = excluded.next_seq,
                 end_offsets = excluded.end_offsets, days_done = excluded.days_done, days_total = excluded.days_total,
                 rows_refused = excluded.rows_refused, feed_date = excluded.feed_date, done = excluded.done,
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&c.feed_id)
        .bind(&c.fingerprint)
        .bind(c.next_seq)
        .bind(offsets)
        .bind(c.days_done)
        .bind(c.days_total)
        .bind(c.rows_refused)
        .bind(&c.feed_date)
        .bind(c.done as i64)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(db("writing a feed checkpoint"))?;
        add_counters(&mut tx, "feed", accepted_delta, refused_delta).await?;
        tx.commit().await.map_err(db("committing a feed checkpoint"))
    }

    /// Adds to a source's accepted/refused counters.
    pub async fn add_ingest_counts(&self, source: &str, accepted: i64, refused: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning a counter update"))?;
        add_counters(&mut tx, source, accepted, refused).await?;
        tx.commit().await.map_err(db("committing counters"))
    }

    /// Every source's counters.
    pub async fn ingest_counters(&self) -> Result<Vec<IngestCounters>, StoreError> {
        let rows = sqlx::query("SELECT source, accepted, refused FROM ingest_counters ORDER BY source")
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading ingest counters"))?;
        Ok(rows
            .iter()
            .map(|r| IngestCounters { source: r.get(0), accepted: r.get(1), refused: r.get(2) })
            .collect())
    }
}

async fn add_counters(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    source: &str,
    accepted: i64,
    refused: i64,
) -> Result<(), StoreError> {
    if accepted == 0 && refused == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ingest_counters (source, accepted, refused) VALUES (?, ?, ?)
         ON CONFLICT (source) DO UPDATE SET accepted = accepted + excluded.accepted, refused = refused + excluded.refused",
    )
    .bind(source)
    .bind(accepted)
    .bind(refused)
    .execute(&mut **tx)
    .await
    .map_err(db("updating ingest counters"))?;
    Ok(())
}
