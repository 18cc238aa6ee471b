//! Consumer offsets kept in the view store (not in the log): a consumer resumes from what it
//! committed together with its results.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{db, with_pool, Dialect, StoreError, ViewStore};

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

/// Reads column `i` of a row, as a store error rather than a panic when the type is off.
pub(crate) fn col<'r, R, T>(row: &'r R, i: usize) -> Result<T, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(i).map_err(db("decoding a row"))
}

fn select_sql(d: Dialect, with_consumer: bool) -> String {
    let consumer = if with_consumer { "consumer, " } else { "" };
    let filter = if with_consumer { "topic = ? ORDER BY consumer, partition" } else { "consumer = ? AND topic = ? ORDER BY partition" };
    d.sql(&format!("SELECT {consumer}partition, next_offset, {} FROM consumer_offsets WHERE {filter}", d.time_column("max_event_ts")))
}

/// The upsert of `rows` offsets (binds: consumer, topic, partition, next offset, max ts).
pub(crate) fn upsert_sql(d: Dialect, rows: usize) -> String {
    let one = format!("(?, ?, ?, ?, {})", d.time_param());
    let values = vec![one; rows].join(", ");
    d.sql(&format!(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, max_event_ts) VALUES {values}
         ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = excluded.next_offset,
         max_event_ts = excluded.max_event_ts"
    ))
}

/// Upserts offsets inside a caller's transaction (`$tx`: a `&mut Transaction` of either backend).
macro_rules! write_offsets {
    ($tx:expr, $dialect:expr, $consumer:expr, $topic:expr, $offsets:expr) => {{
        let offsets: &[$crate::store::ConsumerOffset] = $offsets;
        if !offsets.is_empty() {
            let sql = $crate::store::offsets::upsert_sql($dialect, offsets.len());
            let mut q = sqlx::query(&sql);
            for o in offsets {
                q = q.bind($consumer).bind($topic).bind(o.partition as i64).bind(o.next_offset).bind(o.max_event_ts_ms);
            }
            q.execute(&mut **$tx).await.map_err($crate::store::db("writing consumer offsets"))?;
        }
    }};
}
pub(crate) use write_offsets;

impl ViewStore {
    /// The committed positions of `consumer` on `topic` (partitions it never committed are
    /// absent).
    pub async fn consumer_offsets(&self, consumer: &str, topic: &str) -> Result<Vec<ConsumerOffset>, StoreError> {
        let sql = select_sql(self.dialect(), false);
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(consumer).bind(topic).fetch_all(pool).await.map_err(db("reading consumer offsets"))?;
            rows.iter()
                .map(|r| Ok(ConsumerOffset { partition: col::<_, i64>(r, 0)? as i32, next_offset: col(r, 1)?, max_event_ts_ms: col(r, 2)? }))
                .collect()
        })
    }

    /// Every consumer that committed on `topic`, with its offsets (for `/v1/status`).
    pub async fn all_consumer_offsets(&self, topic: &str) -> Result<Vec<(String, ConsumerOffset)>, StoreError> {
        let sql = select_sql(self.dialect(), true);
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(topic).fetch_all(pool).await.map_err(db("reading consumer offsets"))?;
            rows.iter()
                .map(|r| {
                    Ok((
                        col(r, 0)?,
                        ConsumerOffset { partition: col::<_, i64>(r, 1)? as i32, next_offset: col(r, 2)?, max_event_ts_ms: col(r, 3)? },
                    ))
                })
                .collect()
        })
    }

    /// Commits offsets alone (for consumers whose output is outside the store, like the
    /// archiver, which commits after its files are visible).
    pub async fn commit_offsets(&self, consumer: &str, topic: &str, offsets: &[ConsumerOffset]) -> Result<(), StoreError> {
        let dialect = self.dialect();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning an offsets commit"))?;
            write_offsets!(&mut tx, dialect, consumer, topic, offsets);
            tx.commit().await.map_err(db("committing offsets"))
        })
    }
}
