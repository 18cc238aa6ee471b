//! Consumer offsets kept in the view store (not in the log): a consumer resumes from what it
//! committed together with its results.

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{db, StoreError, ViewStore};

/// A consumer's position in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerOffset {
    /// Partition.
    pub partition: i32,
    /// Next offset to consume (Kafka's committed-offset convention).
    pub next_offset: i64,
    /// Max event time consumed from this partition, UTC ms.
    pub max_event_ts_ms: Option<i64>,
}

impl ViewStore {
    /// The committed positions of `consumer` on `topic` (partitions it never committed are
    /// absent).
    pub async fn consumer_offsets(&self, consumer: &str, topic: &str) -> Result<Vec<ConsumerOffset>, StoreError> {
        let rows = sqlx::query(
            "SELECT partition, next_offset, max_event_ts_ms FROM consumer_offsets
             WHERE consumer = ? AND topic = ? ORDER BY partition",
        )
        .bind(consumer)
        .bind(topic)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading consumer offsets"))?;
        Ok(rows
            .iter()
            .map(|r| ConsumerOffset {
                partition: r.get::<i64, _>(0) as i32,
                next_offset: r.get(1),
                max_event_ts_ms: r.get(2),
            })
            .collect())
    }

    /// Every consumer that committed on `topic`, with its offsets (for `/v1/status`).
    pub async fn all_consumer_offsets(&self, topic: &str) -> Result<Vec<(String, ConsumerOffset)>, StoreError> {
        let rows = sqlx::query(
            "SELECT consumer, partition, next_offset, max_event_ts_ms FROM consumer_offsets
             WHERE topic = ? ORDER BY consumer, partition",
        )
        .bind(topic)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading consumer offsets"))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    ConsumerOffset {
                        partition: r.get::<i64, _>(1) as i32,
                        next_offset: r.get(2),
                        max_event_ts_ms: r.get(3),
                    },
                )
            })
            .collect())
    }

    /// Commits offsets alone (for consumers whose output is outside the store, like the
    /// archiver, which commits after its files are visible).
    pub async fn commit_offsets(&self, consumer: &str, topic: &str, offsets: &[ConsumerOffset]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning an offsets commit"))?;
        write_offsets(&mut tx, consumer, topic, offsets).await?;
        tx.commit().await.map_err(db("committing offsets"))
    }
}

/// Upserts offsets inside a caller's transaction.
pub(crate) async fn write_offsets(
    tx: &mut Transaction<'_, Sqlite>,
    consumer: &str,
    topic: &str,
    offsets: &[ConsumerOffset],
) -> Result<(), StoreError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, max_event_ts_ms) ",
    );
    q.push_values(offsets, |mut b, o| {
        b.push_bind(consumer)
            .push_bind(topic)
            .push_bind(o.partition as i64)
            .push_bind(o.next_offset)
            .push_bind(o.max_event_ts_ms);
    });
    q.push(
        " ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = excluded.next_offset,
          max_event_ts_ms = excluded.max_event_ts_ms",
    );
    q.build().execute(&mut **tx).await.map_err(db("writing consumer offsets"))?;
    Ok(())
}
