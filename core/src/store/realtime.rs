//! Realtime views in the store, for any [`View`]: rows pre-rolled at every interval the view
//! serves, in the view's realtime table (`view`, `view_version`, `interval_ms`, key column,
//! `window_start`, `partition`, then the aggregate's columns from the view's row codec).
//!
//! The SQL is derived from the view's column list, once per call; values travel as
//! [`Value`]s and are bound and read per [`ColumnType`] through the [`Dialect`] (money as exact
//! decimals, times as UTC ms).

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::entities::{write_entities, EntityWrite};
use super::leases::{check_leases, PartitionLease};
use super::offsets::{col, write_offsets, ConsumerOffset};
use super::packed::realtime_rows_between_paged;
use super::{db, with_pool, Backend, Dialect, StoreError, ViewStore};
use crate::decimal::Decimal6;
use crate::view::columns::{Column, ColumnType, Value};
use crate::view::{Monoid, View, ViewRow};

/// Most bound values per statement (SQLite allows 32,766).
const MAX_BINDS: usize = 30_000;

/// A realtime row as stored: its interval and the log partition that owns its key.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeRow<A> {
    /// Interval length, ms.
    pub interval_ms: i64,
    /// The log partition the key's events arrive on.
    pub partition: i32,
    /// The row.
    pub row: ViewRow<A>,
}

/// Where a realtime commit drops rows: rows of every interval whose bucket ends at or before
/// `batch_horizon_ms` (covered by a published batch version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropBehind {
    /// The batch horizon H, UTC ms.
    pub batch_horizon_ms: i64,
}

pub(crate) fn param(d: Dialect, ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int | ColumnType::Text => "?",
        ColumnType::Price => d.price_param(),
        ColumnType::Money => d.sum_param(),
        ColumnType::Time => d.time_param(),
    }
}

pub(crate) fn select_expr(d: Dialect, c: &Column) -> String {
    match c.ty {
        ColumnType::Int | ColumnType::Text => c.name.to_string(),
        ColumnType::Price => d.price_column(c.name),
        ColumnType::Money => d.sum_column(c.name),
        ColumnType::Time => d.time_column(c.name),
    }
}

/// `interval_ms, <key>, window_start, partition, <agg columns…>` as read.
pub(crate) fn select_columns<V: View>(d: Dialect, view: &V) -> String {
    let mut cols = vec!["interval_ms".to_string(), view.key_column().to_string(), d.time_column("window_start"), "partition".into()];
    cols.extend(view.columns().iter().map(|c| select_expr(d, c)));
    cols.join(", ")
}

fn upsert_sql<V: View>(d: Dialect, view: &V, rows: usize) -> String {
    let names: Vec<&str> = view.columns().iter().map(|c| c.name).collect();
    let mut one = format!("(?, ?, ?, ?, {}, ?", d.time_param());
    for c in view.columns() {
        one.push_str(", ");
        one.push_str(param(d, c.ty));
    }
    one.push(')');
    let values = vec![one; rows].join(", ");
    let updates: Vec<String> = names.iter().map(|n| format!("{n} = excluded.{n}")).collect();
    // A key spread over partitions has a row per partition (its table's primary key says so).
    let (target, partition_update) =
        if view.key_spans_partitions() { (", partition", "") } else { ("", "partition = excluded.partition, ") };
    d.sql(&format!(
        "INSERT INTO {table} (view, view_version, interval_ms, {key}, window_start, partition, {cols}) VALUES {values}
         ON CONFLICT (view, view_version, interval_ms, {key}, window_start{target}) DO UPDATE SET {partition_update}{updates}",
        table = view.realtime_table(),
        key = view.key_column(),
        cols = names.join(", "),
        updates = updates.join(", ")
    ))
}

/// Decodes a row read with [`select_columns`] (from column `first` on).
pub(crate) fn decode_row<'r, V, R>(view: &V, r: &'r R, first: usize) -> Result<RealtimeRow<V::Agg>, StoreError>
where
    V: View,
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut values = Vec::with_capacity(view.columns().len());
    for (i, c) in view.columns().iter().enumerate() {
        let n = first + 4 + i;
        values.push(match c.ty {
            ColumnType::Int => Value::Int(col(r, n)?),
            ColumnType::Price => Value::Price(Decimal6::from_units(col::<R, i64>(r, n)? as i128)),
            ColumnType::Money => {
                let text: String = col(r, n)?;
                Value::Money(text.parse().map_err(|e| StoreError::BadValue(format!("{} {text:?}: {e}", c.name)))?)
            }
            ColumnType::Time => Value::Time(col(r, n)?),
            ColumnType::Text => Value::Text(col(r, n)?),
        });
    }
    let agg = view.decode(&values).map_err(|e| StoreError::BadValue(format!("{}: {e}", view.name())))?;
    Ok(RealtimeRow {
        interval_ms: col(r, first)?,
        partition: col::<R, i64>(r, first + 3)? as i32,
        row: ViewRow { key: col(r, first + 1)?, window_start_ms: col(r, first + 2)?, agg },
    })
}

/// Upserts realtime rows inside a caller's transaction, in multi-row statements.
macro_rules! upsert_rows {
    ($tx:expr, $dialect:expr, $view:expr, $version:expr, $rows:expr) => {{
        let per_row = 6 + $view.columns().len();
        let mut values = Vec::with_capacity($view.columns().len());
        for chunk in $rows.chunks((MAX_BINDS / per_row).max(1)) {
            let sql = upsert_sql($dialect, $view, chunk.len());
            let mut q = sqlx::query(&sql);
            for r in chunk {
                values.clear();
                $view.encode(&r.row.agg, &mut values);
                q = q
                    .bind($view.name())
                    .bind($version)
                    .bind(r.interval_ms)
                    .bind(r.row.key.as_str())
                    .bind(r.row.window_start_ms)
                    .bind(r.partition as i64);
                for v in values.drain(..) {
                    q = match v {
                        Value::Int(i) | Value::Time(i) => q.bind(i),
                        Value::Price(p) => q.bind(p.units() as i64),
                        Value::Money(m) => q.bind(m.to_string()),
                        Value::Text(t) => q.bind(t),
                    };
                }
            }
            q.execute(&mut **$tx).await.map_err(db("writing realtime rows"))?;
        }
    }};
}

impl ViewStore {
    /// The speed layer's commit for `view`: upserts changed realtime rows of `version` and the
    /// entity writes of its events (`entities`, [`super::EntityWrites::take_sorted`]), drops rows whose bucket
    /// ends at or before the batch horizon when `drop_behind` is given, and writes `consumer`'s
    /// offsets — all in one transaction, which first checks that the committing instance still
    /// holds `leases` (the partitions whose offsets it writes).
    ///
    /// Errors: [`StoreError::Fenced`] (nothing written) when another instance claimed one of
    /// those partitions since; [`StoreError::Db`].
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_realtime<V: View>(
        &self,
        view: &V,
        consumer: &str,
        version: i64,
        rows: &[RealtimeRow<V::Agg>],
        offsets: &[ConsumerOffset],
        leases: &[PartitionLease],
        drop_behind: Option<DropBehind>,
        entities: &[(String, EntityWrite)],
    ) -> Result<(), StoreError> {
        let d = self.dialect();
        let topic = view.source_topic();
        let drop_sql = d.sql(&format!(
            "DELETE FROM {} WHERE view = ? AND view_version = ? AND interval_ms = ? AND window_start <= {}",
            view.realtime_table(),
            d.time_param()
        ));
        // Upserted in primary-key order (a stable sort: a row given twice still ends as its
        // later value), so that the table's b-trees take them at mostly adjacent positions. SQLite
        // alone (243,000 rows of the `ohlcv` shape, Python's sqlite3): 105,000 rows/s in random
        // key order, as the speed layer's caches give them, 270,000 in key order. In Prism the
        // 2 M workload's bulk commit of those rows went from 1.19 s to 1.0–1.1 s: the rest is
        // sqlx binding the values and handing them to the connection's thread.
        let mut ordered: Vec<&RealtimeRow<V::Agg>> = rows.iter().collect();
        ordered.sort_by(|a, b| {
            (a.interval_ms, a.row.key.as_str(), a.row.window_start_ms, a.partition).cmp(&(
                b.interval_ms,
                b.row.key.as_str(),
                b.row.window_start_ms,
                b.partition,
            ))
        });
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(self.dialect().begin_write()).await.map_err(db("beginning a realtime commit"))?;
            check_leases!(&mut tx, d, consumer, topic, leases);
            upsert_rows!(&mut tx, d, view, version, ordered);
            write_entities!(&mut tx, d, view.name(), version, entities);
            if let Some(DropBehind { batch_horizon_ms: h }) = drop_behind {
                for &interval in view.intervals_ms() {
                    sqlx::query(&drop_sql)
                        .bind(view.name())
                        .bind(version)
                        .bind(interval)
                        .bind(h.saturating_sub(interval))
                        .execute(&mut *tx)
                        .await
                        .map_err(db("dropping realtime windows behind the batch horizon"))?;
                }
            }
            write_offsets!(&mut tx, d, consumer, topic, offsets);
            tx.commit().await.map_err(db("committing realtime rows"))
        })
    }

    /// Realtime rows of `view` `version` owned by `partition` with window start ≥ `from_ms`, at
    /// every interval.
    ///
    /// Errors: [`StoreError`].
    pub async fn realtime_rows_of_partition<V: View>(
        &self,
        view: &V,
        version: i64,
        partition: i32,
        from_ms: i64,
    ) -> Result<Vec<RealtimeRow<V::Agg>>, StoreError> {
        self.rows_of_partition(view, version, partition, None, from_ms).await
    }

    /// Realtime rows of `view` `version` owned by `partition` at `interval_ms` with window
    /// start ≥ `from_ms` (the speed layer's warm cache, each interval from its own floor: a
    /// day's floor would otherwise read every minute of the day).
    ///
    /// Errors: [`StoreError`].
    pub async fn realtime_rows_of_partition_at<V: View>(
        &self,
        view: &V,
        version: i64,
        partition: i32,
        interval_ms: i64,
        from_ms: i64,
    ) -> Result<Vec<RealtimeRow<V::Agg>>, StoreError> {
        self.rows_of_partition(view, version, partition, Some(interval_ms), from_ms).await
    }

    async fn rows_of_partition<V: View>(
        &self,
        view: &V,
        version: i64,
        partition: i32,
        interval_ms: Option<i64>,
        from_ms: i64,
    ) -> Result<Vec<RealtimeRow<V::Agg>>, StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT {} FROM {} WHERE view = ? AND view_version = ? AND partition = ?{} AND window_start >= {}",
            select_columns(d, view),
            view.realtime_table(),
            if interval_ms.is_some() { " AND interval_ms = ?" } else { "" },
            d.time_param()
        ));
        let from_ms = from_ms.max(crate::event::MIN_TS_MS);
        with_pool!(self, pool => {
            let mut q = sqlx::query(&sql).bind(view.name()).bind(version).bind(partition as i64);
            if let Some(i) = interval_ms {
                q = q.bind(i);
            }
            let rows = q.bind(from_ms).fetch_all(pool).await.map_err(db("reading realtime rows"))?;
            rows.iter().map(|r| decode_row(view, r, 0)).collect()
        })
    }

    /// One realtime row's aggregate, if stored: `partition`'s own row when the view's keys span
    /// partitions ([`View::key_spans_partitions`]), else the key's row.
    ///
    /// Errors: [`StoreError`].
    pub async fn realtime_row<V: View>(
        &self,
        view: &V,
        version: i64,
        interval_ms: i64,
        key: &str,
        window_start_ms: i64,
        partition: i32,
    ) -> Result<Option<V::Agg>, StoreError> {
        let d = self.dialect();
        let spans = view.key_spans_partitions();
        let sql = d.sql(&format!(
            "SELECT {} FROM {} WHERE view = ? AND view_version = ? AND interval_ms = ? AND {} = ? AND window_start = {}{}",
            select_columns(d, view),
            view.realtime_table(),
            view.key_column(),
            d.time_param(),
            if spans { " AND partition = ?" } else { "" }
        ));
        with_pool!(self, pool => {
            let mut q = sqlx::query(&sql).bind(view.name()).bind(version).bind(interval_ms).bind(key).bind(window_start_ms);
            if spans {
                q = q.bind(partition as i64);
            }
            let row = q
                .fetch_optional(pool)
                .await
                .map_err(db("reading a realtime row"))?;
            row.as_ref().map(|r| decode_row(view, r, 0)).transpose().map(|r| r.map(|r| r.row.agg))
        })
    }

    /// Realtime rows of `view` `version` at `interval_ms` with window start in `[from_ms, to_ms)`,
    /// every key, sorted by (key, window start), one row per (key, window) — the rows of a key
    /// spread over partitions merged (the Kappa hand-off reads finalized windows).
    /// Rows are decoded as they come (read in window order through the window index, sorted
    /// here): on PostgreSQL as they stream, on SQLite a page of packed rows at a time
    /// ([`super::packed`]), so memory holds the decoded rows and at most one page.
    ///
    /// Errors: [`StoreError`].
    pub async fn realtime_rows_between<V: View>(
        &self,
        view: &V,
        version: i64,
        interval_ms: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ViewRow<V::Agg>>, StoreError> {
        use futures_util::TryStreamExt;
        let (from_ms, to_ms) = (from_ms.max(crate::event::MIN_TS_MS), to_ms.min(crate::event::MAX_TS_MS));
        let mut out: Vec<ViewRow<V::Agg>> = match &self.backend {
            // sqlx hands SQLite rows over one at a time from the connection's thread: pages of
            // rows packed as JSON instead (`store::packed`).
            Backend::Sqlite(pool) => realtime_rows_between_paged(pool, view, version, interval_ms, from_ms, to_ms).await?,
            Backend::Postgres(pool) => {
                let d = Dialect::Postgres;
                let sql = d.sql(&format!(
                    "SELECT {} FROM {} WHERE view = ? AND view_version = ? AND interval_ms = ? AND window_start >= {t}
                       AND window_start < {t} ORDER BY window_start",
                    select_columns(d, view),
                    view.realtime_table(),
                    t = d.time_param(),
                ));
                let mut rows = sqlx::query(&sql).bind(view.name()).bind(version).bind(interval_ms).bind(from_ms).bind(to_ms).fetch(pool);
                let mut out = Vec::new();
                while let Some(r) = rows.try_next().await.map_err(db("reading realtime rows"))? {
                    out.push(decode_row(view, &r, 0)?.row);
                }
                out
            }
        };
        // Stable: each key's rows stay in window order.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        if view.key_spans_partitions() {
            // Partitions' rows of one (key, window) are adjacent now: merge them.
            let mut merged: Vec<ViewRow<V::Agg>> = Vec::with_capacity(out.len());
            for r in out {
                match merged.last_mut() {
                    Some(last) if last.key == r.key && last.window_start_ms == r.window_start_ms => last.agg.merge_from(&r.agg),
                    _ => merged.push(r),
                }
            }
            return Ok(merged);
        }
        Ok(out)
    }

    /// The earliest window start of `view` `version`'s realtime rows at `interval_ms`, UTC ms.
    ///
    /// Errors: [`StoreError`].
    pub async fn earliest_realtime_window<V: View>(&self, view: &V, version: i64, interval_ms: i64) -> Result<Option<i64>, StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT {} FROM {} WHERE view = ? AND view_version = ? AND interval_ms = ? ORDER BY window_start LIMIT 1",
            d.time_column("window_start"),
            view.realtime_table()
        ));
        with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(view.name()).bind(version).bind(interval_ms).fetch_optional(pool).await.map_err(db("reading realtime rows"))?;
            row.map(|r| col(&r, 0)).transpose()
        })
    }

    /// Keys with realtime rows in `view` `version` (for `/v1/symbols`).
    ///
    /// Errors: [`StoreError::Db`].
    pub async fn realtime_keys<V: View>(&self, view: &V, version: i64) -> Result<Vec<String>, StoreError> {
        let largest = view.intervals_ms().last().copied().unwrap_or(view.window_ms());
        let sql = self.dialect().sql(&format!(
            "SELECT DISTINCT {key} FROM {table} WHERE view = ? AND view_version = ? AND interval_ms = ? ORDER BY {key}",
            key = view.key_column(),
            table = view.realtime_table()
        ));
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(view.name()).bind(version).bind(largest).fetch_all(pool).await.map_err(db("listing keys"))?;
            rows.iter().map(|r| col(r, 0)).collect()
        })
    }
}
