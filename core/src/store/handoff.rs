//! Kappa hand-off state (DESIGN §6): each realtime version of a view hands its finalized
//! windows off to immutable segments, published as manifests (`view_versions` rows of state
//! `handoff`, then `retired` and `expired` like batch versions) with a segment horizon. The
//! table `realtime_versions` holds each realtime version's current manifest and horizon, so a
//! version being replayed keeps its own; the serving version's are also the pointer's
//! `batch_version` and `batch_horizon`, which serving reads in Lambda and Kappa alike.

use super::offsets::col;
use super::versions::{insert_manifest, SegmentRecord};
use super::{db, with_pool, StoreError, ViewStore};

/// The segments of one realtime version (Kappa hand-off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandoffState {
    /// Its current hand-off manifest (a version number of `view_versions`); `None` before the
    /// first hand-off.
    pub segment_version: Option<i64>,
    /// Windows starting before this instant are in the manifest's segments (and no longer in the
    /// realtime rows), UTC ms.
    pub segment_horizon_ms: Option<i64>,
}

impl ViewStore {
    /// The hand-off state of realtime version `realtime_version` of `view`. The serving version
    /// before its first hand-off starts from the pointer's segments: after a switch from Lambda,
    /// the published batch version, which the first hand-off then carries over and retires.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn handoff_state(&self, view: &str, realtime_version: i64) -> Result<HandoffState, StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT segment_version, {} FROM realtime_versions WHERE view = ? AND realtime_version = ?",
            d.time_column("segment_horizon")
        ));
        let row = with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(view).bind(realtime_version).fetch_optional(pool).await.map_err(db("reading a realtime version"))?;
            row.map(|r| Ok::<_, StoreError>(HandoffState { segment_version: col(&r, 0)?, segment_horizon_ms: col(&r, 1)? })).transpose()?
        });
        // A row without a manifest (its fingerprint recorded, no hand-off yet) adopts like no row.
        if let Some(state) = row.filter(|s| s.segment_version.is_some()) {
            return Ok(state);
        }
        let pointer = self.view_pointer(view).await?;
        if pointer.realtime_version == realtime_version {
            return Ok(HandoffState { segment_version: pointer.batch_version, segment_horizon_ms: pointer.batch_horizon_ms });
        }
        Ok(HandoffState::default())
    }

    /// Publishes hand-off manifest `version` (started with [`ViewStore::begin_batch_version`])
    /// of realtime version `realtime_version` of `view`, in one transaction: its segments, the
    /// version marked `handoff` with `horizon_ms`, the `previous` manifest (if any) retired (its
    /// grace period starts), the realtime version's state moved, and — when it is the serving
    /// version — the pointer's segments and horizon moved. A reader sees the old manifest and
    /// horizon or the new ones, whole.
    ///
    /// Errors: [`StoreError::Db`]; [`StoreError::BadValue`] when `version` is not `building`.
    pub async fn publish_handoff(
        &self,
        view: &str,
        realtime_version: i64,
        version: i64,
        horizon_ms: i64,
        segments: &[SegmentRecord],
        previous: Option<i64>,
    ) -> Result<(), StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        let publish = d.sql(&format!(
            "UPDATE view_versions SET state = 'handoff', batch_horizon = {t}, rows = ?, events = ?
             WHERE view = ? AND view_version = ? AND state = 'building'"
        ));
        let retire = d.sql(&format!(
            "UPDATE view_versions SET state = 'retired', retired_at = {t}
             WHERE view = ? AND view_version = ? AND state IN ('handoff', 'published')"
        ));
        let state = d.sql(&format!(
            "INSERT INTO realtime_versions (view, realtime_version, state, segment_version, segment_horizon, created_at)
             VALUES (?, ?, 'serving', ?, {t}, {t})
             ON CONFLICT (view, realtime_version) DO UPDATE SET segment_version = excluded.segment_version,
             segment_horizon = excluded.segment_horizon"
        ));
        let pointer_row = d.sql("INSERT INTO view_pointers (view, realtime_version) VALUES (?, 1) ON CONFLICT (view) DO NOTHING");
        let pointer =
            d.sql(&format!("UPDATE view_pointers SET batch_version = ?, batch_horizon = {t} WHERE view = ? AND realtime_version = ?"));
        let rows: i64 = segments.iter().map(|s| s.rows).sum();
        let events: i64 = segments.iter().map(|s| s.events).sum();
        let now = crate::time::now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a hand-off publish"))?;
            insert_manifest!(tx, d, view, version, segments);
            let done = sqlx::query(&publish)
                .bind(horizon_ms)
                .bind(rows)
                .bind(events)
                .bind(view)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db("publishing a hand-off manifest"))?
                .rows_affected();
            if done != 1 {
                return Err(StoreError::BadValue(format!("hand-off manifest {version} of {view} is not being built")));
            }
            if let Some(previous) = previous {
                sqlx::query(&retire).bind(now).bind(view).bind(previous).execute(&mut *tx).await.map_err(db("retiring a hand-off manifest"))?;
            }
            sqlx::query(&state)
                .bind(view)
                .bind(realtime_version)
                .bind(version)
                .bind(horizon_ms)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db("recording a realtime version's segments"))?;
            sqlx::query(&pointer_row).bind(view).execute(&mut *tx).await.map_err(db("creating a view pointer"))?;
            sqlx::query(&pointer)
                .bind(version)
                .bind(horizon_ms)
                .bind(view)
                .bind(realtime_version)
                .execute(&mut *tx)
                .await
                .map_err(db("moving the view pointer"))?;
            tx.commit().await.map_err(db("committing a hand-off publish"))
        })
    }
}
