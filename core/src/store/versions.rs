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
use super::realtime::{decode_row, select_columns};
use super::{db, with_pool, StoreError, ViewStore};
use crate::view::{View, ViewRow};

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

/// One consistent read for a `/v1/…` answer: the pointer, the published version's segments
/// that overlap the range, and the realtime rows — all from one transaction (PostgreSQL:
/// `REPEATABLE READ`, read-only; SQLite: one WAL snapshot).
#[derive(Debug, Clone)]
pub struct ViewSnapshot<A> {
    /// The pointer the rest was read under.
    pub pointer: ViewPointer,
    /// Segments of the published batch version overlapping `[from, min(to, H))`, by chunk start.
    pub segments: Vec<SegmentRecord>,
    /// Realtime rows at the asked interval for buckets starting at or after H (all buckets
    /// before the first batch run), ascending.
    pub realtime: Vec<ViewRow<A>>,
    /// Realtime rows at the base interval from H to the end of the bucket that holds H (that
    /// bucket's batch part comes from the segment), ascending.
    pub realtime_base: Vec<ViewRow<A>>,
    /// The definition fingerprint the pointer's segment manifest was built with.
    pub segments_fingerprint: Option<String>,
    /// The definition fingerprint the pointer's realtime version was built with (`None` when
    /// not recorded).
    pub realtime_fingerprint: Option<String>,
    /// The latest event time the speed layer committed for the pointer's realtime version, UTC
    /// ms, over every partition (`None` before its first commit): the realtime watermark plus
    /// the view's allowed lateness.
    pub max_event_ts_ms: Option<i64>,
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

    /// Reads what a `/v1/…` answer for `key` of `view` at `interval_ms` merges, for buckets
    /// starting in `[from_ms, to_ms)` (`from_ms` aligned to the interval), in one snapshot (see
    /// [`ViewSnapshot`]). Each realtime read returns at most `max_rows` rows (the earliest).
    ///
    /// Two statements in one read transaction (issue 11: a request used to make seven round
    /// trips to the store, each a thread hand-off on SQLite): the pointer with its fingerprints,
    /// the served version's event-time high-water mark and the overlapping segments, joined in
    /// one; then both realtime parts, as one `UNION ALL`.
    ///
    /// Errors: [`StoreError::Db`], [`StoreError::BadValue`].
    pub async fn view_snapshot<V: View>(
        &self,
        view: &V,
        key: &str,
        interval_ms: i64,
        from_ms: i64,
        to_ms: i64,
        max_rows: i64,
    ) -> Result<ViewSnapshot<V::Agg>, StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        let (from_ms, to_ms) = (from_ms.max(crate::event::MIN_TS_MS), to_ms.min(crate::event::MAX_TS_MS));
        // One row when no segment overlaps, else one per segment; the pointer's columns repeat.
        let pointer_sql = d.sql(&format!(
            "SELECT p.batch_version, {horizon}, COALESCE(p.realtime_version, 1),
                    (SELECT fingerprint FROM view_versions v WHERE v.view = q.view AND v.view_version = p.batch_version),
                    (SELECT fingerprint FROM realtime_versions r
                      WHERE r.view = q.view AND r.realtime_version = COALESCE(p.realtime_version, 1)),
                    (SELECT {max_ts} FROM consumer_offsets o
                      WHERE o.consumer = {consumer} AND o.topic = CAST(? AS TEXT)),
                    {chunk_start}, {chunk_end}, {covered}, s.path, s.rows, s.events, s.inputs
             FROM (SELECT CAST(? AS TEXT) AS view) q
             LEFT JOIN view_pointers p ON p.view = q.view
             LEFT JOIN view_segments s ON s.view = q.view AND s.view_version = p.batch_version
                  AND s.chunk_start < p.batch_horizon AND s.chunk_start < {t} AND s.chunk_end > {t}
             ORDER BY s.chunk_start",
            horizon = d.time_column("p.batch_horizon"),
            max_ts = d.time_column("MAX(o.max_event_ts)"),
            consumer = crate::config::speed_consumer_sql("q.view", "COALESCE(p.realtime_version, 1)"),
            chunk_start = d.time_column("s.chunk_start"),
            chunk_end = d.time_column("s.chunk_end"),
            covered = d.time_column("s.covered_until"),
        ));
        let part = |n: i64| {
            format!(
                "SELECT * FROM (SELECT CAST({n} AS BIGINT) AS part, {cols} FROM {table} WHERE view = ? AND view_version = ? AND interval_ms = ?
                 AND {key} = ? AND window_start >= {t} AND window_start < {t} ORDER BY window_start LIMIT ?) part{n}",
                cols = select_columns(d, view),
                table = view.realtime_table(),
                key = view.key_column()
            )
        };
        let realtime_sql = d.sql(&format!("{} UNION ALL {}", part(0), part(1)));
        let base_ms = view.window_ms();
        with_pool!(self, pool => {
            let begin = match d {
                super::Dialect::Postgres if self.snapshot_reads => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                _ => "BEGIN",
            };
            let mut tx = pool.begin_with(begin).await.map_err(db("beginning a read"))?;
            let rows = sqlx::query(&pointer_sql)
                .bind(view.source_topic())
                .bind(view.name())
                .bind(to_ms)
                .bind(from_ms)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("reading a view pointer"))?;
            let first = rows.first().ok_or_else(|| StoreError::BadValue("the pointer read returned no row".into()))?;
            let pointer = ViewPointer { batch_version: col(first, 0)?, batch_horizon_ms: col(first, 1)?, realtime_version: col(first, 2)? };
            let (segments_fingerprint, realtime_fingerprint, max_event_ts_ms) = (col(first, 3)?, col(first, 4)?, col(first, 5)?);
            let mut segments = Vec::new();
            for r in &rows {
                if col::<_, Option<String>>(r, 9)?.is_some() {
                    segments.push(segment_record_at(r, 6)?);
                }
            }
            let realtime_from = match (pointer.batch_version, pointer.batch_horizon_ms) {
                (Some(_), Some(h)) => from_ms.max(h),
                _ => from_ms,
            };
            // The bucket holding H: its realtime part from base rows; whole buckets pre-rolled.
            let cut = crate::window::window_start(realtime_from.saturating_add(interval_ms - 1), interval_ms).min(to_ms);
            let mut query = sqlx::query(&realtime_sql);
            for (read_interval, lo, hi) in [(base_ms, realtime_from, cut), (interval_ms, cut, to_ms)] {
                query = query.bind(view.name()).bind(pointer.realtime_version).bind(read_interval).bind(key).bind(lo).bind(hi.max(lo)).bind(max_rows);
            }
            let rows = query.fetch_all(&mut *tx).await.map_err(db("reading realtime rows"))?;
            tx.commit().await.map_err(db("ending a read"))?;
            let (mut realtime_base, mut realtime) = (Vec::new(), Vec::new());
            for r in &rows {
                let row = decode_row(view, r, 1)?.row;
                if col::<_, i64>(r, 0)? == 0 { realtime_base.push(row) } else { realtime.push(row) }
            }
            // Each part is read in order; a compound SELECT does not promise to keep it.
            realtime_base.sort_by_key(|r| r.window_start_ms);
            realtime.sort_by_key(|r| r.window_start_ms);
            Ok(ViewSnapshot { pointer, segments, realtime, realtime_base, segments_fingerprint, realtime_fingerprint, max_event_ts_ms })
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
    segment_record_at(r, 0)
}

/// A [`SegmentRecord`] from columns `first..first + 7` of `r`.
fn segment_record_at<R>(r: &R, first: usize) -> Result<SegmentRecord, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SegmentRecord {
        chunk_start_ms: col(r, first)?,
        chunk_end_ms: col(r, first + 1)?,
        covered_until_ms: col(r, first + 2)?,
        path: col(r, first + 3)?,
        rows: col(r, first + 4)?,
        events: col(r, first + 5)?,
        inputs: col(r, first + 6)?,
    })
}
