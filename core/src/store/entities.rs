//! Entities of views over an at-least-once change stream ([`crate::view::EntityChange`]) in the
//! view store's `view_entities` table: per (view, version, entity) the last sequence applied from
//! the entity's own partition (redeliveries at or below it are dropped) and the last state by
//! sequence (last write wins, DESIGN §4). Written in the speed layer's commit transaction, with
//! the realtime rows and the offsets they cover, so dropping and counting stay exactly-once
//! across crashes.
//!
//! Both parts merge by maximum sequence, in SQL (`ON CONFLICT … CASE WHEN (a, b) > (c, d)`), so
//! writes commute: a tombstone for a moved primary key written by one partition's owner and the
//! key's own changes written by another's give the same row in any order.

use std::collections::HashMap;

use super::offsets::col;
use super::{db, with_pool, Dialect, StoreError, ViewStore};
use crate::view::{EntityChange, EntitySeq, View};

/// Most entity writes per statement (10 binds each; SQLite allows 32,766).
pub(crate) const WRITES_PER_STATEMENT: usize = 3_000;

/// A pending write of one entity: what the events of one commit did to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityWrite {
    /// The partition whose owner tracks the entity's sequence; `None` for a tombstone written
    /// on behalf of another partition's key (a moved primary key).
    pub partition: Option<i32>,
    /// The last sequence applied from the entity's own partition (`None` for a tombstone).
    pub seen: Option<EntitySeq>,
    /// The sequence of the state below.
    pub state_seq: EntitySeq,
    /// The entity was deleted (or, for `{}`, its table truncated).
    pub deleted: bool,
    /// The state (row JSON) when kept and not deleted.
    pub state: Option<String>,
    /// The partition whose event caused this write (to drop it when that partition is lost).
    pub origin_partition: i32,
}

impl EntityWrite {
    fn merge(&mut self, other: EntityWrite) {
        if other.seen > self.seen {
            self.seen = other.seen;
            self.partition = other.partition.or(self.partition);
        }
        if other.state_seq > self.state_seq {
            self.state_seq = other.state_seq;
            self.deleted = other.deleted;
            self.state = other.state;
        }
    }
}

/// The entity writes of one commit, one per entity (a statement may not touch a row twice).
#[derive(Debug, Default)]
pub struct EntityWrites {
    writes: HashMap<String, EntityWrite>,
}

impl EntityWrites {
    /// Records `change`, applied from `partition`: its entity's own write, and a tombstone for
    /// the former key when it moved.
    pub fn record(&mut self, change: &EntityChange<'_>, partition: i32) {
        let own = EntityWrite {
            partition: Some(partition),
            seen: Some(change.seq),
            state_seq: change.seq,
            deleted: change.deleted,
            state: if change.deleted { None } else { change.state.map(str::to_string) },
            origin_partition: partition,
        };
        self.put(change.entity, own);
        if let Some(former) = change.moved_from {
            let tombstone =
                EntityWrite { partition: None, seen: None, state_seq: change.seq, deleted: true, state: None, origin_partition: partition };
            self.put(former, tombstone);
        }
    }

    fn put(&mut self, entity: &str, write: EntityWrite) {
        match self.writes.get_mut(entity) {
            Some(w) => w.merge(write),
            None => {
                self.writes.insert(entity.to_string(), write);
            }
        }
    }

    /// Forgets the writes caused by events of `partitions` (lost to another instance).
    pub fn forget(&mut self, partitions: &[i32]) {
        self.writes.retain(|_, w| !partitions.contains(&w.origin_partition));
    }

    /// How many entities are pending.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Takes the pending writes, sorted by entity (a stable lock order across instances). A
    /// commit that was refused gives them back with [`EntityWrites::restore`].
    pub fn take_sorted(&mut self) -> Vec<(String, EntityWrite)> {
        let mut out: Vec<(String, EntityWrite)> = self.writes.drain().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Puts writes taken by [`EntityWrites::take_sorted`] back (merged with any recorded since).
    pub fn restore(&mut self, writes: Vec<(String, EntityWrite)>) {
        for (entity, write) in writes {
            self.put(&entity, write);
        }
    }

    /// Forgets every pending write (committed).
    pub fn clear(&mut self) {
        self.writes.clear();
    }
}

/// The upsert of `rows` entity writes (binds: view, version, entity, partition, seen major,
/// seen minor, state major, state minor, deleted, state).
pub(crate) fn upsert_sql(d: Dialect, rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ");
    let newer_seen = "(excluded.seen_major, excluded.seen_minor) > (view_entities.seen_major, view_entities.seen_minor)";
    let newer_state = "(excluded.state_major, excluded.state_minor) > (view_entities.state_major, view_entities.state_minor)";
    let pick = |cond: &str, column: &str| format!("{column} = CASE WHEN {cond} THEN excluded.{column} ELSE view_entities.{column} END");
    let sets = [
        format!("partition = CASE WHEN {newer_seen} AND excluded.partition >= 0 THEN excluded.partition ELSE view_entities.partition END"),
        pick(newer_seen, "seen_major"),
        pick(newer_seen, "seen_minor"),
        pick(newer_state, "state_major"),
        pick(newer_state, "state_minor"),
        pick(newer_state, "deleted"),
        pick(newer_state, "state"),
    ];
    d.sql(&format!(
        "INSERT INTO view_entities (view, view_version, entity_key, partition, seen_major, seen_minor, state_major, state_minor, deleted, state)
         VALUES {values} ON CONFLICT (view, view_version, entity_key) DO UPDATE SET {}",
        sets.join(", ")
    ))
}

/// Writes entity writes inside a caller's transaction (`$tx`: a `&mut Transaction`).
macro_rules! write_entities {
    ($tx:expr, $dialect:expr, $view:expr, $version:expr, $writes:expr) => {{
        let writes: &[(String, $crate::store::EntityWrite)] = $writes;
        for chunk in writes.chunks($crate::store::entities::WRITES_PER_STATEMENT) {
            let sql = $crate::store::entities::upsert_sql($dialect, chunk.len());
            let mut q = sqlx::query(&sql);
            for (entity, w) in chunk {
                let seen = w.seen.unwrap_or_default();
                q = q
                    .bind($view)
                    .bind($version)
                    .bind(entity.as_str())
                    .bind(w.partition.map_or(-1i64, i64::from))
                    .bind(seen.major)
                    .bind(seen.minor)
                    .bind(w.state_seq.major)
                    .bind(w.state_seq.minor)
                    .bind(w.deleted)
                    .bind(w.state.as_deref());
            }
            q.execute(&mut **$tx).await.map_err($crate::store::db("writing view entities"))?;
        }
    }};
}
pub(crate) use write_entities;

/// One entity's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntity {
    /// The sequence of the state.
    pub state_seq: EntitySeq,
    /// Deleted (or, for `{}`, the table truncated).
    pub deleted: bool,
    /// The state (row JSON) when kept and not deleted.
    pub state: Option<String>,
}

impl ViewStore {
    /// The last sequence applied per entity of `view` `version` owned by `partition` (the speed
    /// layer loads them when it takes the partition).
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn entity_sequences<V: View>(
        &self,
        view: &V,
        version: i64,
        partition: i32,
    ) -> Result<HashMap<String, EntitySeq>, StoreError> {
        let sql = self
            .dialect()
            .sql("SELECT entity_key, seen_major, seen_minor FROM view_entities WHERE view = ? AND view_version = ? AND partition = ?");
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(view.name())
                .bind(version)
                .bind(partition as i64)
                .fetch_all(pool)
                .await
                .map_err(db("reading entity sequences"))?;
            rows.iter().map(|r| Ok((col(r, 0)?, EntitySeq { major: col(r, 1)?, minor: col(r, 2)? }))).collect()
        })
    }

    /// The stored state of `entity` in `view` `version`, if any.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn entity(&self, view: &str, version: i64, entity: &str) -> Result<Option<StoredEntity>, StoreError> {
        let sql = self.dialect().sql(
            "SELECT state_major, state_minor, deleted, state FROM view_entities WHERE view = ? AND view_version = ? AND entity_key = ?",
        );
        with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(view).bind(version).bind(entity).fetch_optional(pool).await.map_err(db("reading an entity"))?;
            row.map(|r| {
                Ok(StoredEntity { state_seq: EntitySeq { major: col(&r, 0)?, minor: col(&r, 1)? }, deleted: col(&r, 2)?, state: col(&r, 3)? })
            })
            .transpose()
        })
    }

    /// How many entities of `view` `version` exist (not deleted, and newer than the last
    /// truncation, the entity `{}`).
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn live_entities(&self, view: &str, version: i64) -> Result<i64, StoreError> {
        let sql = self.dialect().sql(
            "SELECT COUNT(*) FROM view_entities e WHERE e.view = ? AND e.view_version = ? AND e.entity_key <> '{}' AND NOT e.deleted
             AND NOT EXISTS (SELECT 1 FROM view_entities t WHERE t.view = e.view AND t.view_version = e.view_version
                 AND t.entity_key = '{}' AND (t.state_major, t.state_minor) > (e.state_major, e.state_minor))",
        );
        with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(view).bind(version).fetch_one(pool).await.map_err(db("counting entities"))?;
            col(&row, 0)
        })
    }
}
