//! Ingest progress in the view store: the historical feed's checkpoint and per-source
//! accepted/refused counters (read by `/v1/status`, so that status works across processes).

use super::offsets::col;
use super::{db, with_pool, Dialect, StoreError, ViewStore};

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
    /// Date of the last day appended (`YYYY-MM-DD`).
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

const CHECKPOINT_COLUMNS: &str = "feed_id, fingerprint, next_seq, end_offsets, days_done, days_total, rows_refused, feed_date, done";

fn counters_sql(d: Dialect) -> String {
    d.sql(
        "INSERT INTO ingest_counters (source, accepted, refused) VALUES (?, ?, ?)
         ON CONFLICT (source) DO UPDATE SET accepted = ingest_counters.accepted + excluded.accepted,
             refused = ingest_counters.refused + excluded.refused",
    )
}

impl ViewStore {
    /// The checkpoint of feed `feed_id`, if any.
    pub async fn feed_checkpoint(&self, feed_id: &str) -> Result<Option<FeedCheckpoint>, StoreError> {
        Ok(self.read_checkpoints(Some(feed_id)).await?.pop())
    }

    /// Every feed's checkpoint (for `/v1/status`).
    pub async fn feed_checkpoints(&self) -> Result<Vec<FeedCheckpoint>, StoreError> {
        self.read_checkpoints(None).await
    }

    async fn read_checkpoints(&self, feed_id: Option<&str>) -> Result<Vec<FeedCheckpoint>, StoreError> {
        let filter = if feed_id.is_some() { "WHERE feed_id = ?" } else { "" };
        let sql = self.dialect().sql(&format!("SELECT {CHECKPOINT_COLUMNS} FROM feed_checkpoints {filter} ORDER BY feed_id"));
        with_pool!(self, pool => {
            let mut q = sqlx::query(&sql);
            if let Some(id) = feed_id {
                q = q.bind(id);
            }
            let rows = q.fetch_all(pool).await.map_err(db("reading feed checkpoints"))?;
            rows.iter()
                .map(|r| {
                    let offsets: String = col(r, 3)?;
                    Ok(FeedCheckpoint {
                        feed_id: col(r, 0)?,
                        fingerprint: col(r, 1)?,
                        next_seq: col(r, 2)?,
                        end_offsets: serde_json::from_str(&offsets)
                            .map_err(|e| StoreError::BadValue(format!("feed end offsets {offsets:?}: {e}")))?,
                        days_done: col(r, 4)?,
                        days_total: col(r, 5)?,
                        rows_refused: col(r, 6)?,
                        feed_date: col(r, 7)?,
                        done: col::<_, i64>(r, 8)? != 0,
                    })
                })
                .collect()
        })
    }

    /// Saves a feed checkpoint and adds to the feed's counters, in one transaction.
    pub async fn save_feed_checkpoint(&self, c: &FeedCheckpoint, accepted_delta: i64, refused_delta: i64) -> Result<(), StoreError> {
        let d = self.dialect();
        let offsets = serde_json::to_string(&c.end_offsets).unwrap_or_else(|_| "[]".into());
        let upsert = d.sql(&format!(
            "INSERT INTO feed_checkpoints ({CHECKPOINT_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {})
             ON CONFLICT (feed_id) DO UPDATE SET fingerprint = excluded.fingerprint, next_seq = excluded.next_seq,
                 end_offsets = excluded.end_offsets, days_done = excluded.days_done, days_total = excluded.days_total,
                 rows_refused = excluded.rows_refused, feed_date = excluded.feed_date, done = excluded.done,
                 updated_at = excluded.updated_at",
            d.time_param()
        ));
        let counters = counters_sql(d);
        let now = crate::time::now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a feed checkpoint"))?;
            sqlx::query(&upsert)
                .bind(&c.feed_id)
                .bind(&c.fingerprint)
                .bind(c.next_seq)
                .bind(&offsets)
                .bind(c.days_done)
                .bind(c.days_total)
                .bind(c.rows_refused)
                .bind(&c.feed_date)
                .bind(c.done as i64)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db("writing a feed checkpoint"))?;
            if accepted_delta != 0 || refused_delta != 0 {
                sqlx::query(&counters)
                    .bind("feed")
                    .bind(accepted_delta)
                    .bind(refused_delta)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("updating ingest counters"))?;
            }
            tx.commit().await.map_err(db("committing a feed checkpoint"))
        })
    }

    /// Adds to a source's accepted/refused counters.
    pub async fn add_ingest_counts(&self, source: &str, accepted: i64, refused: i64) -> Result<(), StoreError> {
        if accepted == 0 && refused == 0 {
            return Ok(());
        }
        let sql = counters_sql(self.dialect());
        with_pool!(self, pool => {
            sqlx::query(&sql).bind(source).bind(accepted).bind(refused).execute(pool).await.map_err(db("updating ingest counters"))?;
            Ok(())
        })
    }

    /// Every source's counters.
    pub async fn ingest_counters(&self) -> Result<Vec<IngestCounters>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query("SELECT source, accepted, refused FROM ingest_counters ORDER BY source")
                .fetch_all(pool)
                .await
                .map_err(db("reading ingest counters"))?;
            rows.iter().map(|r| Ok(IngestCounters { source: col(r, 0)?, accepted: col(r, 1)?, refused: col(r, 2)? })).collect()
        })
    }
}
