//! View versions and the serving pointer (DESIGN §5): per view, the published batch version
//! (a manifest of segments plus the batch horizon H) and the realtime version in service, and
//! the one-snapshot read that serving merges.
//!
//! A batch version goes `building` → `published` → `retired` → `expired` (or `building` →
//! `expired` when its run never published). Publishing inserts its manifest,
//! marks it published, retires the previous one and moves the pointer, in one transaction: a
//! reader sees version v or v+1, whole. A retired version's segments stay readable for a grace
//! period ([`ViewStore::expire_batch_versions`]) so that a query that started on it finishes.

use super::offsets::col;
use super::{db, with_pool, StoreError, ViewStore};

/// What serving reads first for a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ViewPointer {
    /// Published batch version; `None` before the first batch run (and in Kappa mode).
    pub batch_version: Option<i64>,
    /// Batch horizon H, UTC ms: windows starting before H come from the batch view.
    pub batch_horizon_ms: Option<i64>,
    /// Realtime version in service (1 until a replay switches).
    pub realtime_version: i64,
}

/// One segment of a batch version's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Chunk start, UTC ms (inclusive).
    pub chunk_start_ms: i64,
    /// Chunk end, UTC ms (exclusive).
    pub chunk_end_ms: i64,
    /// Events before this instant are in the segment: min(chunk end, H), UTC ms.
    pub covered_until_ms: i64,
    /// Path of the segment file under the storage root.
    pub path: String,
    /// Rows in the file (every interval).
    pub rows: i64,
    /// Events aggregated into it.
    pub events: i64,
    /// What it was built from (the batch job's own encoding; compared, never parsed here).
    pub inputs: String,
}

/// A batch version's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchVersion {
    /// Version number (per view, increasing).
    pub version: i64,
    /// The view definition's fingerprint it was built with.
    pub fingerprint: String,
    /// `building`, `published`, `retired` or `expired`.
    pub state: String,
    /// Its horizon H, UTC ms (set on publish).
    pub batch_horizon_ms: Option<i64>,
    /// Rows over all its segments.
    pub rows: i64,
    /// Events over all its segments.
    pub events: i64,
    /// When the build started, UTC ms.
    pub created_at_ms: i64,
}

/// Inserts a version's manifest rows (`view_segments`) in transaction `$tx`.
macro_rules! insert_manifest {
    ($tx:expr, $d:expr, $view:expr, $version:expr, $segments:expr) => {{
        let t = $d.time_param();
        let insert = $d.sql(&format!(
            "INSERT INTO view_segments (view, view_version, chunk_start, chunk_end, covered_until, path, rows, events, inputs)
             VALUES (?, ?, {t}, {t}, {t}, ?, ?, ?, ?)"
        ));
        for s in $segments {
            sqlx::query(&insert)
                .bind($view)
                .bind($version)
                .bind(s.chunk_start_ms)
                .bind(s.chunk_end_ms)
                .bind(s.covered_until_ms)
                .bind(s.path.as_str())
                .bind(s.rows)
                .bind(s.events)
                .bind(s.inputs.as_str())
                .execute(&mut *$tx)
                .await
                .map_err(db("recording a segment manifest"))?;
        }
    }};
}
pub(crate) use insert_manifest;

const VERSION_COLUMNS: &str = "view_version, fingerprint, state, {h}, rows, events, {c}";

impl ViewStore {
    /// The pointer of `view` (a view never published reads as no batch version, realtime 1).
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn view_pointer(&self, view: &str) -> Result<ViewPointer, StoreError> {
        let d = self.dialect();
        let sql =
            d.sql(&format!("SELECT batch_version, {}, realtime_version FROM view_pointers WHERE view = ?", d.time_column("batch_horizon")));
        with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(view).fetch_optional(pool).await.map_err(db("reading a view pointer"))?;
            match row {
                None => Ok(ViewPointer { realtime_version: 1, ..ViewPointer::default() }),
                Some(r) => Ok(ViewPointer { batch_version: col(&r, 0)?, batch_horizon_ms: col(&r, 1)?, realtime_version: col(&r, 2)? }),
            }
        })
    }

    /// Starts a new batch version of `view` (state `building`), numbered above every version
    /// ever started, and returns its number.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn begin_batch_version(&self, view: &str, fingerprint: &str) -> Result<i64, StoreError> {
        let d = self.dialect();
        let next = d.sql("SELECT COALESCE(MAX(view_version), 0) + 1 FROM view_versions WHERE view = ?");
        let insert = d.sql(&format!(
            "INSERT INTO view_versions (view, view_version, fingerprint, state, rows, events, created_at) VALUES (?, ?, ?, 'building', 0, 0, {})",
            d.time_param()
        ));
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a batch version"))?;
            let r = sqlx::query(&next).bind(view).fetch_one(&mut *tx).await.map_err(db("numbering a batch version"))?;
            let version: i64 = col(&r, 0)?;
            sqlx::query(&insert)
                .bind(view)
                .bind(version)
                .bind(fingerprint)
                .bind(crate::time::now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db("recording a batch version"))?;
            tx.commit().await.map_err(db("committing a batch version"))?;
            Ok(version)
        })
    }

    /// Publishes batch version `version` of `view` with its manifest and horizon, in one
    /// transaction: the manifest rows, the version marked published, the previously published
    /// version retired (its grace period starts), and the pointer moved.
    ///
    /// Errors: [`StoreError::Db`]; [`StoreError::BadValue`] when the version is not `building`.
    pub async fn publish_batch_version(
        &self,
        view: &str,
        version: i64,
        batch_horizon_ms: i64,
        segments: &[SegmentRecord],
    ) -> Result<(), StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        // The Kappa hand-off manifest the pointer held (after a switch from Kappa) is retired too.
        let retire = d.sql(&format!(
            "UPDATE view_versions SET state = 'retired', retired_at = {t} WHERE view = ? AND (state = 'published'
             OR (state = 'handoff' AND view_version = (SELECT batch_version FROM view_pointers WHERE view = ?)))"
        ));
        let publish = d.sql(&format!(
            "UPDATE view_versions SET state = 'published', batch_horizon = {t}, rows = ?, events = ?
             WHERE view = ? AND view_version = ? AND state = 'building'"
        ));
        let pointer = d.sql(&format!(
            "INSERT INTO view_pointers (view, batch_version, batch_horizon, realtime_version) VALUES (?, ?, {t}, 1)
             ON CONFLICT (view) DO UPDATE SET batch_version = excluded.batch_version, batch_horizon = excluded.batch_horizon"
        ));
        let rows: i64 = segments.iter().map(|s| s.rows).sum();
        let events: i64 = segments.iter().map(|s| s.events).sum();
        let now = crate::time::now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a batch publish"))?;
            insert_manifest!(tx, d, view, version, segments);
            sqlx::query(&retire).bind(now).bind(view).bind(view).execute(&mut *tx).await.map_err(db("retiring a batch version"))?;
            let done = sqlx::query(&publish)
                .bind(batch_horizon_ms)
                .bind(rows)
                .bind(events)
                .bind(view)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db("publishing a batch version"))?
                .rows_affected();
            if done != 1 {
                return Err(StoreError::BadValue(format!("batch version {version} of {view} is not being built")));
            }
            sqlx::query(&pointer).bind(view).bind(version).bind(batch_horizon_ms).execute(&mut *tx).await.map_err(db("moving the view pointer"))?;
            tx.commit().await.map_err(db("committing a batch publish"))
        })
    }

    /// The published batch version of `view`, if any.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn published_batch_version(&self, view: &str) -> Result<Option<BatchVersion>, StoreError> {
        let d = self.dialect();
        let cols = VERSION_COLUMNS.replace("{h}", &d.time_column("batch_horizon")).replace("{c}", &d.time_column("created_at"));
        let sql = d.sql(&format!("SELECT {cols} FROM view_versions WHERE view = ? AND state = 'published'"));
        with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(view).fetch_optional(pool).await.map_err(db("reading batch versions"))?;
            row.map(|r| Ok(BatchVersion {
                version: col(&r, 0)?,
                fingerprint: col(&r, 1)?,
                state: col(&r, 2)?,
                batch_horizon_ms: col(&r, 3)?,
                rows: col(&r, 4)?,
                events: col(&r, 5)?,
                created_at_ms: col(&r, 6)?,
            })).transpose()
        })
    }

    /// The manifest of batch version `version` of `view`, by chunk start.
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn batch_segments(&self, view: &str, version: i64) -> Result<Vec<SegmentRecord>, StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT {}, {}, {}, path, rows, events, inputs FROM view_segments WHERE view = ? AND view_version = ? ORDER BY chunk_start",
            d.time_column("chunk_start"),
            d.time_column("chunk_end"),
            d.time_column("covered_until")
        ));
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(view).bind(version).fetch_all(pool).await.map_err(db("reading a batch manifest"))?;
            rows.iter().map(segment_record).collect()
        })
    }

    /// Ends versions of `view` that no reader can still use: retired versions whose grace period
    /// ended before `retired_before_ms`, and versions left `building` since before it (a run or
    /// hand-off that never published; a younger one may still be in progress — during a Kappa
    /// replay two hand-offs of one view run). Returns the segment paths no remaining version
    /// references (the caller deletes the files).
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn expire_batch_versions(&self, view: &str, retired_before_ms: i64) -> Result<Vec<String>, StoreError> {
        let d = self.dialect();
        let doomed = format!(
            "SELECT view_version FROM view_versions WHERE view = ? AND ((state = 'building' AND created_at < {t}) OR (state = 'retired' AND retired_at < {t}))",
            t = d.time_param()
        );
        let orphans = d.sql(&format!(
            "SELECT DISTINCT path FROM view_segments WHERE view = ? AND view_version IN ({doomed})
             AND path NOT IN (SELECT path FROM view_segments WHERE view = ? AND view_version NOT IN ({doomed}))"
        ));
        let delete_segments = d.sql(&format!("DELETE FROM view_segments WHERE view = ? AND view_version IN ({doomed})"));
        // The version rows stay (state `expired`), so that numbers are never reused.
        let delete_versions = d.sql(&format!(
            "UPDATE view_versions SET state = 'expired' WHERE view = ? AND ((state = 'building' AND created_at < {t}) OR (state = 'retired' AND retired_at < {t}))",
            t = d.time_param()
        ));
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a version expiry"))?;
            let cutoff = retired_before_ms;
            let rows = sqlx::query(&orphans)
                .bind(view).bind(view).bind(cutoff).bind(cutoff)
                .bind(view).bind(view).bind(cutoff).bind(cutoff)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("finding expired segments"))?;
            let paths = rows.iter().map(|r| col(r, 0)).collect::<Result<Vec<String>, _>>()?;
            sqlx::query(&delete_segments).bind(view).bind(view).bind(cutoff).bind(cutoff).execute(&mut *tx).await.map_err(db("expiring manifests"))?;
            sqlx::query(&delete_versions).bind(view).bind(cutoff).bind(cutoff).execute(&mut *tx).await.map_err(db("expiring versions"))?;
            tx.commit().await.map_err(db("committing a version expiry"))?;
            Ok(paths)
        })
    }

    /// Every segment path any version of `view` references (to find files no manifest lists).
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn referenced_segment_paths(&self, view: &str) -> Result<Vec<String>, StoreError> {
        let sql = self.dialect().sql("SELECT DISTINCT path FROM view_segments WHERE view = ?");
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(view).fetch_all(pool).await.map_err(db("listing segment paths"))?;
            rows.iter().map(|r| col(r, 0)).collect()
        })
    }
}

fn segment_record<R>(r: &R) -> Result<SegmentRecord, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    super::snapshot::segment_record_at(r, 0)
}
