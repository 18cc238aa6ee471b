//! Partition leases: which instance of a consumer owns each partition, fenced by epochs.
//!
//! When several instances of one consumer split a topic's partitions (a Kafka consumer group),
//! a partition can briefly have two holders: the instance that lost it in a rebalance (or stalled
//! past its session timeout, a "zombie") may still try to commit windows it built. Each claim
//! bumps the partition's **epoch**; every commit first checks, inside its transaction, that it
//! still holds the current epoch of every partition it writes, and fails with
//! [`StoreError::Fenced`] otherwise. This is the fencing-token scheme of Kafka's own producer
//! epochs (KIP-98) and of Kleppmann's "How to do distributed locking" (2016), kept in the view
//! store because that is where the results and offsets are committed.
//!
//! Every commit also renews its leases (`renewed_at`), so a partition whose owner went silent
//! shows as orphaned ([`LeaseRecord::renewed_at_ms`]).
//!
//! The check is an `UPDATE … SET renewed_at = now` so that it takes the row locks
//! in PostgreSQL and the write lock in SQLite before anything else in the transaction: a claim
//! that commits first makes the check fail; a commit that locks first finishes before the claim,
//! and the new owner then reads its rows and offsets.

use super::offsets::col;
use super::{db, with_pool, Dialect, StoreError, ViewStore};

/// One partition's lease as held by an instance: the epoch its claim returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLease {
    /// Partition.
    pub partition: i32,
    /// Epoch returned by the claim (1 for the first claim ever, +1 per claim).
    pub epoch: i64,
}

/// A stored lease, with its owner (for `/v1/status` and operators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Consumer name (`speed-layer.v1`, …).
    pub consumer: String,
    /// Partition.
    pub partition: i32,
    /// Current epoch.
    pub epoch: i64,
    /// Instance that claimed it last (`--instance-id`).
    pub owner: String,
    /// When it was claimed, UTC ms.
    pub claimed_at_ms: i64,
    /// The owner's last commit (every commit renews its leases), UTC ms.
    pub renewed_at_ms: i64,
}

fn claim_sql(d: Dialect) -> String {
    d.sql(&format!(
        "INSERT INTO consumer_leases (consumer, topic, partition, epoch, owner, claimed_at, renewed_at) VALUES (?, ?, ?, 1, ?, {t}, {t})
         ON CONFLICT (consumer, topic, partition) DO UPDATE SET epoch = consumer_leases.epoch + 1,
         owner = excluded.owner, claimed_at = excluded.claimed_at, renewed_at = excluded.renewed_at
         RETURNING epoch",
        t = d.time_param()
    ))
}

/// The fencing check for `leases` partitions, which also renews them (binds: now, consumer,
/// topic, then partition and epoch per lease). Affects exactly `leases` rows when every epoch is
/// still current.
pub(crate) fn fence_sql(d: Dialect, leases: usize) -> String {
    let held = vec!["(partition = ? AND epoch = ?)"; leases].join(" OR ");
    d.sql(&format!("UPDATE consumer_leases SET renewed_at = {} WHERE consumer = ? AND topic = ? AND ({held})", d.time_param()))
}

/// Checks, first thing in a caller's transaction, that `$leases` are all still current, and
/// renews them (`renewed_at` = now); otherwise returns [`StoreError::Fenced`] from the enclosing function (the transaction rolls
/// back when dropped).
macro_rules! check_leases {
    ($tx:expr, $dialect:expr, $consumer:expr, $topic:expr, $leases:expr) => {{
        let leases: &[$crate::store::PartitionLease] = $leases;
        if !leases.is_empty() {
            let sql = $crate::store::leases::fence_sql($dialect, leases.len());
            let mut q = sqlx::query(&sql).bind($crate::time::now_ms()).bind($consumer).bind($topic);
            for l in leases {
                q = q.bind(l.partition as i64).bind(l.epoch);
            }
            let held = q.execute(&mut **$tx).await.map_err($crate::store::db("checking partition leases"))?.rows_affected();
            if held != leases.len() as u64 {
                return Err($crate::store::StoreError::Fenced {
                    consumer: $consumer.to_string(),
                    held: held as usize,
                    expected: leases.len(),
                });
            }
        }
    }};
}
pub(crate) use check_leases;

impl ViewStore {
    /// Claims `partitions` of `topic` for `owner`, an instance of `consumer`: bumps each
    /// partition's epoch (creating it at 1) and returns the new leases, in input order. From now
    /// on, commits by any earlier holder of these partitions fail with [`StoreError::Fenced`].
    /// Call it before reading the partitions' offsets and rows.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn claim_partitions(
        &self,
        consumer: &str,
        topic: &str,
        partitions: &[i32],
        owner: &str,
        now_ms: i64,
    ) -> Result<Vec<PartitionLease>, StoreError> {
        let sql = claim_sql(self.dialect());
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a partition claim"))?;
            let mut leases = Vec::with_capacity(partitions.len());
            for &p in partitions {
                let row = sqlx::query(&sql)
                    .bind(consumer)
                    .bind(topic)
                    .bind(p as i64)
                    .bind(owner)
                    .bind(now_ms)
                    .bind(now_ms)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("claiming a partition"))?;
                leases.push(PartitionLease { partition: p, epoch: col(&row, 0)? });
            }
            tx.commit().await.map_err(db("committing a partition claim"))?;
            Ok(leases)
        })
    }

    /// The partitions among `leases` whose epoch has moved on (claimed by another instance since).
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn lost_leases(&self, consumer: &str, topic: &str, leases: &[PartitionLease]) -> Result<Vec<i32>, StoreError> {
        let current = self.leases(topic).await?;
        Ok(leases
            .iter()
            .filter(|l| !current.iter().any(|c| c.consumer == consumer && c.partition == l.partition && c.epoch == l.epoch))
            .map(|l| l.partition)
            .collect())
    }

    /// Every lease on `topic`, by consumer and partition.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn leases(&self, topic: &str) -> Result<Vec<LeaseRecord>, StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT consumer, partition, epoch, owner, {}, {} FROM consumer_leases WHERE topic = ? ORDER BY consumer, partition",
            d.time_column("claimed_at"),
            d.time_column("renewed_at")
        ));
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(topic).fetch_all(pool).await.map_err(db("reading partition leases"))?;
            rows.iter()
                .map(|r| {
                    Ok(LeaseRecord {
                        consumer: col(r, 0)?,
                        partition: col::<_, i64>(r, 1)? as i32,
                        epoch: col(r, 2)?,
                        owner: col(r, 3)?,
                        claimed_at_ms: col(r, 4)?,
                        renewed_at_ms: col(r, 5)?,
                    })
                })
                .collect()
        })
    }
}
