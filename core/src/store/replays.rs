//! Realtime versions and replay (DESIGN §6): a replay builds realtime version v+1 of a view
//! from offset 0 of the log while v serves, then switches the pointer to v+1 in one transaction.
//!
//! States of a `realtime_versions` row: `replaying` → `serving` (switched to) or `cancelled`;
//! `serving` → `retired` (when a newer version is switched to); `retired` and `cancelled` →
//! `expired` once their rows, offsets and leases are deleted after the grace period
//! ([`ViewStore::expire_realtime_versions`]). A version without a row is the serving version of
//! a view that never replayed.

use super::offsets::col;
use super::{db, with_pool, StoreError, ViewStore};
use crate::config::speed_consumer;
use crate::view::View;

/// One realtime version's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeVersion {
    /// The view.
    pub view: String,
    /// Version number (per view, increasing).
    pub realtime_version: i64,
    /// `replaying`, `serving`, `retired`, `cancelled` or `expired`.
    pub state: String,
    /// The view definition's fingerprint it is built with (`None` for a version that never
    /// replayed).
    pub fingerprint: Option<String>,
    /// A replay switches once its lag is below this many events.
    pub switch_lag: Option<i64>,
    /// When it was started, UTC ms.
    pub created_at_ms: i64,
    /// When it stopped serving or was cancelled, UTC ms.
    pub retired_at_ms: Option<i64>,
}

impl ViewStore {
    /// Starts a replay of `view`: a new realtime version numbered above every version ever
    /// started, in state `replaying`, built with `fingerprint`, switching once its lag is below
    /// `switch_lag` events. Returns its number.
    ///
    /// Errors: [`StoreError::Conflict`] when a replay of `view` is already running;
    /// [`StoreError::Db`].
    pub async fn begin_replay(&self, view: &str, fingerprint: &str, switch_lag: i64) -> Result<i64, StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        let running = d.sql("SELECT realtime_version FROM realtime_versions WHERE view = ? AND state = 'replaying'");
        let pointer_row = d.sql("INSERT INTO view_pointers (view, realtime_version) VALUES (?, 1) ON CONFLICT (view) DO NOTHING");
        let next = d.sql(
            "SELECT MAX(v) + 1 FROM (SELECT realtime_version AS v FROM view_pointers WHERE view = ?
             UNION ALL SELECT realtime_version AS v FROM realtime_versions WHERE view = ?) AS versions",
        );
        let insert = d.sql(&format!(
            "INSERT INTO realtime_versions (view, realtime_version, state, fingerprint, switch_lag, created_at)
             VALUES (?, ?, 'replaying', ?, ?, {t})"
        ));
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a replay"))?;
            if let Some(r) = sqlx::query(&running).bind(view).fetch_optional(&mut *tx).await.map_err(db("reading replays"))? {
                let version: i64 = col(&r, 0)?;
                return Err(StoreError::Conflict(format!("a replay of {view} is already running (version {version}); cancel it first")));
            }
            sqlx::query(&pointer_row).bind(view).execute(&mut *tx).await.map_err(db("creating a view pointer"))?;
            let r = sqlx::query(&next).bind(view).bind(view).fetch_one(&mut *tx).await.map_err(db("numbering a realtime version"))?;
            let version: i64 = col(&r, 0)?;
            sqlx::query(&insert)
                .bind(view)
                .bind(version)
                .bind(fingerprint)
                .bind(switch_lag)
                .bind(crate::time::now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db("recording a replay"))?;
            tx.commit().await.map_err(db("committing a replay"))?;
            Ok(version)
        })
    }

    /// Records that realtime version `version` of `view` is built with `fingerprint`, unless it
    /// already has one (a version first recorded here is the serving one). Returns the
    /// fingerprint it was built with: `fingerprint`, or the one recorded before.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn record_realtime_fingerprint(&self, view: &str, version: i64, fingerprint: &str) -> Result<String, StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        let upsert = d.sql(&format!(
            "INSERT INTO realtime_versions (view, realtime_version, state, fingerprint, created_at) VALUES (?, ?, 'serving', ?, {t})
             ON CONFLICT (view, realtime_version) DO UPDATE SET fingerprint = excluded.fingerprint
             WHERE realtime_versions.fingerprint IS NULL"
        ));
        let read = d.sql("SELECT fingerprint FROM realtime_versions WHERE view = ? AND realtime_version = ?");
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a fingerprint record"))?;
            sqlx::query(&upsert)
                .bind(view)
                .bind(version)
                .bind(fingerprint)
                .bind(crate::time::now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db("recording a fingerprint"))?;
            let r = sqlx::query(&read).bind(view).bind(version).fetch_one(&mut *tx).await.map_err(db("reading a fingerprint"))?;
            let recorded: Option<String> = col(&r, 0)?;
            tx.commit().await.map_err(db("committing a fingerprint record"))?;
            Ok(recorded.unwrap_or_else(|| fingerprint.to_string()))
        })
    }

    /// Every recorded realtime version of `view`, oldest first.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn realtime_versions(&self, view: &str) -> Result<Vec<RealtimeVersion>, StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT view, realtime_version, state, fingerprint, switch_lag, {}, {} FROM realtime_versions WHERE view = ?
             ORDER BY realtime_version",
            d.time_column("created_at"),
            d.time_column("retired_at")
        ));
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(view).fetch_all(pool).await.map_err(db("reading realtime versions"))?;
            rows.iter()
                .map(|r| Ok(RealtimeVersion {
                    view: col(r, 0)?,
                    realtime_version: col(r, 1)?,
                    state: col(r, 2)?,
                    fingerprint: col(r, 3)?,
                    switch_lag: col(r, 4)?,
                    created_at_ms: col(r, 5)?,
                    retired_at_ms: col(r, 6)?,
                }))
                .collect()
        })
    }

    /// Switches `view`'s serving realtime version to the replaying `version` in one transaction:
    /// the pointer's realtime version (and, with `take_segments` — Kappa mode — its segment
    /// manifest and horizon, the replayed version's hand-off) moves; the version serving until
    /// now is `retired` (its grace period starts) with its hand-off manifest; `version` is
    /// `serving`. Returns the retired version.
    ///
    /// Errors: [`StoreError::Conflict`] when `version` is not replaying; [`StoreError::Db`].
    pub async fn switch_realtime_version(&self, view: &str, version: i64, take_segments: bool) -> Result<i64, StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        let pointer = d.sql("SELECT realtime_version, batch_version FROM view_pointers WHERE view = ?");
        let replaying = d.sql(&format!(
            "SELECT segment_version, {} FROM realtime_versions WHERE view = ? AND realtime_version = ? AND state = 'replaying'",
            d.time_column("segment_horizon")
        ));
        let old_row = d.sql(&format!(
            "INSERT INTO realtime_versions (view, realtime_version, state, created_at) VALUES (?, ?, 'serving', {t})
             ON CONFLICT (view, realtime_version) DO NOTHING"
        ));
        let retire_old =
            d.sql(&format!("UPDATE realtime_versions SET state = 'retired', retired_at = {t} WHERE view = ? AND realtime_version = ?"));
        let serve_new = d.sql("UPDATE realtime_versions SET state = 'serving' WHERE view = ? AND realtime_version = ?");
        let retire_manifest = d.sql(&format!(
            "UPDATE view_versions SET state = 'retired', retired_at = {t} WHERE view = ? AND view_version = ? AND state = 'handoff'"
        ));
        let move_pointer = d.sql("UPDATE view_pointers SET realtime_version = ? WHERE view = ?");
        let move_segments = d.sql(&format!("UPDATE view_pointers SET batch_version = ?, batch_horizon = {t} WHERE view = ?"));
        let now = crate::time::now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a switch"))?;
            let Some(r) = sqlx::query(&replaying).bind(view).bind(version).fetch_optional(&mut *tx).await.map_err(db("reading a replay"))? else {
                return Err(StoreError::Conflict(format!("realtime version {version} of {view} is not replaying")));
            };
            let (segment_version, segment_horizon): (Option<i64>, Option<i64>) = (col(&r, 0)?, col(&r, 1)?);
            let p = sqlx::query(&pointer).bind(view).fetch_one(&mut *tx).await.map_err(db("reading a view pointer"))?;
            let (old, old_manifest): (i64, Option<i64>) = (col(&p, 0)?, col(&p, 1)?);
            sqlx::query(&old_row).bind(view).bind(old).bind(now).execute(&mut *tx).await.map_err(db("recording a realtime version"))?;
            sqlx::query(&retire_old).bind(now).bind(view).bind(old).execute(&mut *tx).await.map_err(db("retiring a realtime version"))?;
            sqlx::query(&serve_new).bind(view).bind(version).execute(&mut *tx).await.map_err(db("serving a realtime version"))?;
            sqlx::query(&move_pointer).bind(version).bind(view).execute(&mut *tx).await.map_err(db("moving the view pointer"))?;
            if take_segments {
                if let Some(manifest) = old_manifest {
                    sqlx::query(&retire_manifest).bind(now).bind(view).bind(manifest).execute(&mut *tx).await.map_err(db("retiring a hand-off manifest"))?;
                }
                sqlx::query(&move_segments).bind(segment_version).bind(segment_horizon).bind(view).execute(&mut *tx).await.map_err(db("moving the view pointer"))?;
            }
            tx.commit().await.map_err(db("committing a switch"))?;
            Ok(old)
        })
    }

    /// Cancels the replaying `version` of `view`: `cancelled` (its rows go after the grace
    /// period), its hand-off manifest retired; the serving version is untouched.
    ///
    /// Errors: [`StoreError::Conflict`] when `version` is not replaying; [`StoreError::Db`].
    pub async fn cancel_replay(&self, view: &str, version: i64) -> Result<(), StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        let cancel = d.sql(&format!(
            "UPDATE realtime_versions SET state = 'cancelled', retired_at = {t} WHERE view = ? AND realtime_version = ? AND state = 'replaying'"
        ));
        let retire_manifest = d.sql(&format!(
            "UPDATE view_versions SET state = 'retired', retired_at = {t} WHERE view = ? AND state = 'handoff'
             AND view_version = (SELECT segment_version FROM realtime_versions WHERE view = ? AND realtime_version = ?)"
        ));
        let now = crate::time::now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a cancel"))?;
            let done = sqlx::query(&cancel).bind(now).bind(view).bind(version).execute(&mut *tx).await.map_err(db("cancelling a replay"))?.rows_affected();
            if done != 1 {
                return Err(StoreError::Conflict(format!("realtime version {version} of {view} is not replaying")));
            }
            sqlx::query(&retire_manifest).bind(now).bind(view).bind(view).bind(version).execute(&mut *tx).await.map_err(db("retiring a hand-off manifest"))?;
            tx.commit().await.map_err(db("committing a cancel"))
        })
    }

    /// Deletes the realtime rows, offsets and leases of `view`'s versions retired or cancelled
    /// before `retired_before_ms` (no query can still be reading them) and marks them `expired`.
    /// Returns the versions expired.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn expire_realtime_versions<V: View>(&self, view: &V, retired_before_ms: i64) -> Result<Vec<i64>, StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        let doomed = d.sql(&format!(
            "SELECT realtime_version FROM realtime_versions WHERE view = ? AND state IN ('retired', 'cancelled') AND retired_at < {t}"
        ));
        let rows = d.sql(&format!("DELETE FROM {} WHERE view = ? AND view_version = ?", view.realtime_table()));
        let entities = d.sql("DELETE FROM view_entities WHERE view = ? AND view_version = ?");
        let offsets = d.sql("DELETE FROM consumer_offsets WHERE consumer = ?");
        let leases = d.sql("DELETE FROM consumer_leases WHERE consumer = ?");
        let expire = d.sql("UPDATE realtime_versions SET state = 'expired' WHERE view = ? AND realtime_version = ?");
        with_pool!(self, pool => {
            let found = sqlx::query(&doomed).bind(view.name()).bind(retired_before_ms).fetch_all(pool).await.map_err(db("finding expired versions"))?;
            let versions = found.iter().map(|r| col(r, 0)).collect::<Result<Vec<i64>, _>>()?;
            for &version in &versions {
                let consumer = speed_consumer(view.name(), version);
                let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a version expiry"))?;
                sqlx::query(&rows).bind(view.name()).bind(version).execute(&mut *tx).await.map_err(db("deleting a version's rows"))?;
                sqlx::query(&entities).bind(view.name()).bind(version).execute(&mut *tx).await.map_err(db("deleting a version's entities"))?;
                sqlx::query(&offsets).bind(&consumer).execute(&mut *tx).await.map_err(db("deleting a version's offsets"))?;
                sqlx::query(&leases).bind(&consumer).execute(&mut *tx).await.map_err(db("deleting a version's leases"))?;
                sqlx::query(&expire).bind(view.name()).bind(version).execute(&mut *tx).await.map_err(db("expiring a version"))?;
                tx.commit().await.map_err(db("committing a version expiry"))?;
            }
            Ok(versions)
        })
    }
}
