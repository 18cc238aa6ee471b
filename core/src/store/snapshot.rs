//! Snapshot reads for answers (DESIGN §5): the pointer, the published version's segments that
//! overlap the asked range and the realtime rows, as of one moment, so that no answer mixes a
//! batch horizon with realtime rows of another.

use super::offsets::col;
use super::packed::{decode_packed_rows, packed_rows_expr, Packing};
use super::realtime::{decode_row, select_columns};
use super::{db, with_pool, Dialect, SegmentRecord, StoreError, ViewPointer, ViewStore};
use crate::view::{View, ViewRow};

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

/// What an answer asks of one key: buckets of `interval_ms` starting in `[from_ms, to_ms)` (UTC
/// ms, clamped to the event range), at most `max_rows` realtime rows per part.
struct Ask<'a> {
    key: &'a str,
    interval_ms: i64,
    from_ms: i64,
    to_ms: i64,
    max_rows: i64,
}

impl ViewStore {
    /// Reads what a `/v1/…` answer for `key` of `view` at `interval_ms` merges, for buckets
    /// starting in `[from_ms, to_ms)` (`from_ms` aligned to the interval), in one snapshot (see
    /// [`ViewSnapshot`]). Each realtime read returns at most `max_rows` rows (the earliest).
    ///
    /// Issue 11: a request used to make eight round trips to the store (each a hand-off to the
    /// connection's thread on SQLite). SQLite now answers in **one statement** (one statement
    /// reads one snapshot); PostgreSQL in two statements of one `REPEATABLE READ` transaction.
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
        let (from_ms, to_ms) = (from_ms.max(crate::event::MIN_TS_MS), to_ms.min(crate::event::MAX_TS_MS));
        match self.dialect() {
            Dialect::Sqlite => self.snapshot_in_one_statement(view, Ask { key, interval_ms, from_ms, to_ms, max_rows }).await,
            Dialect::Postgres => self.snapshot_in_a_transaction(view, Ask { key, interval_ms, from_ms, to_ms, max_rows }).await,
        }
    }

    /// [`ViewStore::view_snapshot`] on SQLite: the pointer (with its fingerprints and the served
    /// version's event-time high-water mark), the overlapping segments and both realtime parts as
    /// one `UNION ALL`, rows told apart by their first column (0: pointer and segment, 1: base
    /// rows of the bucket holding H, 2: rows at the asked interval). Each realtime part is one
    /// row, its rows packed into one JSON text ([`super::packed`]: a row each through sqlx cost
    /// a thread wake-up and a copy of every value). The split at the horizon is computed in SQL
    /// as [`ViewStore::snapshot_in_a_transaction`] computes it in Rust.
    async fn snapshot_in_one_statement<V: View>(&self, view: &V, ask: Ask<'_>) -> Result<ViewSnapshot<V::Agg>, StoreError> {
        let Ask { key, interval_ms, from_ms, to_ms, max_rows } = ask;
        // ?1 view, ?2 topic, ?3 key, ?4 from, ?5 to, ?6 interval, ?7 base interval, ?8 max rows.
        // A realtime part is one row whose last column packs its rows (`packed`).
        let head_nulls = vec!["NULL"; 13].join(", ");
        let part = |n: i64, interval: &str, lo: &str, hi: &str| {
            format!(
                "SELECT {n}, {head_nulls}, {packed} FROM (SELECT t.window_start, {cols} FROM c JOIN {table} t ON t.view = c.view
                   AND t.view_version = c.rv AND t.interval_ms = {interval} AND t.{key} = ?3 AND t.window_start >= {lo}
                   AND t.window_start < {hi}
                 ORDER BY t.window_start LIMIT ?8)",
                packed = packed_rows_expr(view, false),
                cols = view.columns().iter().map(|c| format!("t.{}", c.name)).collect::<Vec<_>>().join(", "),
                table = view.realtime_table(),
                key = view.key_column()
            )
        };
        let sql = format!(
            "WITH b AS (SELECT q.view, p.batch_version AS bv, p.batch_horizon AS h, COALESCE(p.realtime_version, 1) AS rv,
                          CASE WHEN p.batch_version IS NOT NULL AND p.batch_horizon IS NOT NULL THEN MAX(?4, p.batch_horizon) ELSE ?4 END AS rfrom
                        FROM (SELECT ?1 AS view) q LEFT JOIN view_pointers p ON p.view = q.view),
                  c AS (SELECT b.*, MIN(?5, (rfrom + ?6 - 1) - ((((rfrom + ?6 - 1) % ?6) + ?6) % ?6)) AS cut FROM b)
             SELECT 0, c.bv, c.h, c.rv,
                    (SELECT fingerprint FROM view_versions v WHERE v.view = c.view AND v.view_version = c.bv),
                    (SELECT fingerprint FROM realtime_versions r WHERE r.view = c.view AND r.realtime_version = c.rv),
                    (SELECT MAX(o.max_event_ts) FROM consumer_offsets o WHERE o.consumer = {consumer} AND o.topic = ?2),
                    s.chunk_start, s.chunk_end, s.covered_until, s.path, s.rows, s.events, s.inputs, NULL
             FROM c LEFT JOIN view_segments s ON s.view = c.view AND s.view_version = c.bv
                  AND s.chunk_start < c.h AND s.chunk_start < ?5 AND s.chunk_end > ?4
             UNION ALL {base}
             UNION ALL {rest}",
            consumer = crate::config::speed_consumer_sql("c.view", "c.rv"),
            base = part(1, "?7", "c.rfrom", "MAX(c.cut, c.rfrom)"),
            rest = part(2, "?6", "c.cut", "?5"),
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(view.name())
                .bind(view.source_topic())
                .bind(key)
                .bind(from_ms)
                .bind(to_ms)
                .bind(interval_ms)
                .bind(view.window_ms())
                .bind(max_rows)
                .fetch_all(pool)
                .await
                .map_err(db("reading a view snapshot"))?;
            let mut head = Vec::new();
            let (mut realtime_base, mut realtime) = (Vec::new(), Vec::new());
            for r in &rows {
                match col::<_, i64>(r, 0)? {
                    0 => head.push(r),
                    1 => _ = decode_packed_rows(view, Packing::OfKey(key), &col::<_, String>(r, 14)?, &mut realtime_base)?,
                    _ => _ = decode_packed_rows(view, Packing::OfKey(key), &col::<_, String>(r, 14)?, &mut realtime)?,
                }
            }
            let first = head.first().ok_or_else(|| StoreError::BadValue("the snapshot read returned no pointer row".into()))?;
            let pointer = ViewPointer { batch_version: col(*first, 1)?, batch_horizon_ms: col(*first, 2)?, realtime_version: col(*first, 3)? };
            let mut segments = Vec::new();
            for r in &head {
                if col::<_, Option<String>>(*r, 10)?.is_some() {
                    segments.push(segment_record_at(*r, 7)?);
                }
            }
            segments.sort_by_key(|s: &SegmentRecord| s.chunk_start_ms);
            // Each part is read in order; a compound SELECT does not promise to keep it.
            realtime_base.sort_by_key(|r: &ViewRow<V::Agg>| r.window_start_ms);
            realtime.sort_by_key(|r: &ViewRow<V::Agg>| r.window_start_ms);
            Ok(ViewSnapshot {
                pointer,
                segments,
                realtime,
                realtime_base,
                segments_fingerprint: col(*first, 4)?,
                realtime_fingerprint: col(*first, 5)?,
                max_event_ts_ms: col(*first, 6)?,
            })
        })
    }

    /// [`ViewStore::view_snapshot`] on PostgreSQL: two statements in one read-only
    /// `REPEATABLE READ` transaction (the pointer with its fingerprints, the served version's
    /// event-time high-water mark and the overlapping segments, joined in one; then both
    /// realtime parts, as one `UNION ALL`).
    async fn snapshot_in_a_transaction<V: View>(&self, view: &V, ask: Ask<'_>) -> Result<ViewSnapshot<V::Agg>, StoreError> {
        let Ask { key, interval_ms, from_ms, to_ms, max_rows } = ask;
        let d = self.dialect();
        let t = d.time_param();
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
                Dialect::Postgres if self.snapshot_reads => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
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

/// A [`SegmentRecord`] from columns `first..first + 7` of `r`.
pub(super) fn segment_record_at<R>(r: &R, first: usize) -> Result<SegmentRecord, StoreError>
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
