//! The `ohlcv` view's tables: `ohlcv_realtime` (speed layer, 1-minute windows), `ohlcv_batch`
//! (batch job, every served interval), the serving pointer, and the one-snapshot read that the
//! serving layer merges.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::leases::{check_leases, PartitionLease};
use super::offsets::{col, write_offsets, ConsumerOffset};
use super::{db, with_pool, Dialect, StoreError, ViewStore};
use crate::decimal::Decimal6;
use crate::ohlcv::{EventKey, Ohlcv, OhlcvKey, OhlcvRow, PricePoint};

/// Rows per multi-row statement: 17 binds a row stays under SQLite's 32,766 variables.
const CHUNK_ROWS: usize = 1_000;
/// 1-minute rows.
const MINUTE_MS: i64 = crate::time::MINUTE_MS;

/// What the serving layer reads first: the published batch version and its horizon, and the
/// realtime view version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingState {
    /// Published batch-view version; `None` before the first batch run.
    pub batch_version: Option<i64>,
    /// Batch horizon H, UTC ms: windows starting before H come from the batch view.
    pub batch_horizon_ms: Option<i64>,
    /// Realtime view version in service.
    pub realtime_version: i64,
}

/// One consistent read of a symbol's rows for the merge: taken in one transaction, so the
/// pointer, the batch rows and the realtime rows belong together.
#[derive(Debug, Clone)]
pub struct BarsSnapshot {
    /// The pointer the rows were read under.
    pub state: ServingState,
    /// Batch rows before H: rows at the asked interval, then 1-minute rows of the bucket that
    /// holds H (see [`ViewStore::bars_snapshot`]), each part ascending.
    pub batch: Vec<OhlcvRow>,
    /// Realtime rows with window start in `[max(from, H), to)`, ascending.
    pub realtime: Vec<OhlcvRow>,
}

/// The columns of a view row, read as plain integers and text in every dialect.
fn select_columns(d: Dialect) -> String {
    format!(
        "symbol, {}, {}, {}, open_partition, open_offset, {}, {}, {}, {}, close_partition, close_offset, volume, {}, trades",
        d.time_column("window_start"),
        d.price_column("open_price"),
        d.time_column("open_ts"),
        d.price_column("high_price"),
        d.price_column("low_price"),
        d.price_column("close_price"),
        d.time_column("close_ts"),
        d.sum_column("notional"),
    )
}

fn state_sql(d: Dialect) -> String {
    format!("SELECT batch_version, {}, realtime_version FROM serving_state WHERE id = 1", d.time_column("batch_horizon"))
}

/// The upsert of `rows` view rows into the realtime table, or the batch table (which has an
/// `interval_ms` column). Binds per row: version, [interval], symbol, window start, open price,
/// open ts, open partition, open offset, high, low, close price, close ts, close partition,
/// close offset, volume, notional, trades.
pub(crate) fn insert_sql(d: Dialect, batch: bool, rows: usize) -> String {
    let (table, interval_col, interval_param, key) = if batch {
        ("ohlcv_batch", "interval_ms, ", "?, ", "view_version, interval_ms, symbol, window_start")
    } else {
        ("ohlcv_realtime", "", "", "view_version, symbol, window_start")
    };
    let (t, p) = (d.time_param(), d.price_param());
    let one = format!("(?, {interval_param}?, {t}, {p}, {t}, ?, ?, {p}, {p}, {p}, {t}, ?, ?, ?, {}, ?)", d.sum_param());
    let values = vec![one; rows].join(", ");
    d.sql(&format!(
        "INSERT INTO {table} (view_version, {interval_col}symbol, window_start, open_price, open_ts, open_partition, open_offset,
             high_price, low_price, close_price, close_ts, close_partition, close_offset, volume, notional, trades)
         VALUES {values}
         ON CONFLICT ({key}) DO UPDATE SET
             open_price = excluded.open_price, open_ts = excluded.open_ts,
             open_partition = excluded.open_partition, open_offset = excluded.open_offset,
             high_price = excluded.high_price, low_price = excluded.low_price,
             close_price = excluded.close_price, close_ts = excluded.close_ts,
             close_partition = excluded.close_partition, close_offset = excluded.close_offset,
             volume = excluded.volume, notional = excluded.notional, trades = excluded.trades"
    ))
}

/// Checks rows can be stored (no empty aggregate) and returns their bind values.
fn bind_values(rows: &[OhlcvRow]) -> Result<Vec<RowBinds<'_>>, StoreError> {
    rows.iter()
        .map(|row| {
            let a = &row.agg;
            let (Some(open), Some(high), Some(low), Some(close)) = (a.open, a.high, a.low, a.close) else {
                return Err(StoreError::BadValue(format!("empty aggregate for {:?} cannot be stored", row.key)));
            };
            Ok(RowBinds {
                symbol: &row.key.symbol,
                window_start: row.key.window_start_ms,
                ints: [
                    open.price.units() as i64,
                    open.key.ts_ms,
                    open.key.partition as i64,
                    open.key.offset,
                    high.units() as i64,
                    low.units() as i64,
                    close.price.units() as i64,
                    close.key.ts_ms,
                    close.key.partition as i64,
                    close.key.offset,
                    a.volume,
                ],
                notional: a.notional.to_string(),
                trades: a.trades,
            })
        })
        .collect()
}

pub(crate) struct RowBinds<'a> {
    pub symbol: &'a str,
    pub window_start: i64,
    pub ints: [i64; 11],
    pub notional: String,
    pub trades: i64,
}

/// Upserts view rows inside a caller's transaction, in multi-row statements.
macro_rules! insert_rows {
    ($tx:expr, $dialect:expr, $version:expr, $interval:expr, $rows:expr) => {{
        let interval: Option<i64> = $interval;
        for chunk in $rows.chunks(CHUNK_ROWS) {
            let binds = bind_values(chunk)?;
            let sql = insert_sql($dialect, interval.is_some(), chunk.len());
            let mut q = sqlx::query(&sql);
            for b in &binds {
                q = q.bind($version);
                if let Some(i) = interval {
                    q = q.bind(i);
                }
                q = q.bind(b.symbol).bind(b.window_start);
                for v in b.ints {
                    q = q.bind(v);
                }
                q = q.bind(b.notional.as_str()).bind(b.trades);
            }
            q.execute(&mut **$tx).await.map_err(db("writing ohlcv rows"))?;
        }
    }};
}

fn decode_row<'r, R>(r: &'r R) -> Result<OhlcvRow, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let notional: String = col(r, 13)?;
    let notional: Decimal6 = notional.parse().map_err(|e| StoreError::BadValue(format!("notional {notional:?}: {e}")))?;
    let i = |n: usize| col::<R, i64>(r, n);
    let price = |n: usize| Ok::<_, StoreError>(Decimal6::from_units(col::<R, i64>(r, n)? as i128));
    let point = |p: usize, ts: usize, part: usize, off: usize| -> Result<PricePoint, StoreError> {
        Ok(PricePoint { key: EventKey { ts_ms: i(ts)?, partition: i(part)? as i32, offset: i(off)? }, price: price(p)? })
    };
    Ok(OhlcvRow {
        key: OhlcvKey { symbol: col(r, 0)?, window_start_ms: i(1)? },
        agg: Ohlcv {
            open: Some(point(2, 3, 4, 5)?),
            high: Some(price(6)?),
            low: Some(price(7)?),
            close: Some(point(8, 9, 10, 11)?),
            volume: i(12)?,
            notional,
            trades: i(14)?,
        },
    })
}

impl ViewStore {
    /// The speed layer's commit: upserts changed realtime rows of `version`, deletes realtime
    /// rows with window start before `drop_before_ms` (covered by a published batch version),
    /// and writes `consumer`'s offsets — all in one transaction, which first checks that the
    /// committing instance still holds `leases` (the partitions whose offsets it writes).
    ///
    /// Errors: [`StoreError::Fenced`] (nothing written) when another instance claimed one of
    /// those partitions since; [`StoreError::Db`].
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_realtime(
        &self,
        consumer: &str,
        topic: &str,
        version: i64,
        rows: &[OhlcvRow],
        offsets: &[ConsumerOffset],
        leases: &[PartitionLease],
        drop_before_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let d = self.dialect();
        let drop_sql = d.sql(&format!("DELETE FROM ohlcv_realtime WHERE view_version = ? AND window_start < {}", d.time_param()));
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db("beginning a realtime commit"))?;
            check_leases!(&mut tx, d, consumer, topic, leases);
            insert_rows!(&mut tx, d, version, None, rows);
            if let Some(h) = drop_before_ms {
                sqlx::query(&drop_sql)
                    .bind(version)
                    .bind(h)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("dropping realtime windows behind the batch horizon"))?;
            }
            write_offsets!(&mut tx, d, consumer, topic, offsets);
            tx.commit().await.map_err(db("committing realtime rows"))
        })
    }

    /// Realtime rows of `version` with window start ≥ `from_ms` (the speed layer's warm cache).
    pub async fn realtime_rows_since(&self, version: i64, from_ms: i64) -> Result<Vec<OhlcvRow>, StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT {} FROM ohlcv_realtime WHERE view_version = ? AND window_start >= {}",
            select_columns(d),
            d.time_param()
        ));
        let from_ms = from_ms.max(crate::event::MIN_TS_MS);
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(version).bind(from_ms).fetch_all(pool).await.map_err(db("reading realtime rows"))?;
            rows.iter().map(decode_row).collect()
        })
    }

    /// One realtime row, if stored.
    pub async fn realtime_row(&self, version: i64, key: &OhlcvKey) -> Result<Option<Ohlcv>, StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "SELECT {} FROM ohlcv_realtime WHERE view_version = ? AND symbol = ? AND window_start = {}",
            select_columns(d),
            d.time_param()
        ));
        with_pool!(self, pool => {
            let row = sqlx::query(&sql)
                .bind(version)
                .bind(&key.symbol)
                .bind(key.window_start_ms)
                .fetch_optional(pool)
                .await
                .map_err(db("reading a realtime row"))?;
            row.as_ref().map(decode_row).transpose().map(|r| r.map(|r| r.agg))
        })
    }

    /// The pointer serving reads.
    pub async fn serving_state(&self) -> Result<ServingState, StoreError> {
        let sql = state_sql(self.dialect());
        with_pool!(self, pool => {
            let r = sqlx::query(&sql).fetch_one(pool).await.map_err(db("reading the serving state"))?;
            Ok(ServingState { batch_version: col(&r, 0)?, batch_horizon_ms: col(&r, 1)?, realtime_version: col(&r, 2)? })
        })
    }

    /// A fresh batch-view version number (above every version ever written, published or not).
    pub async fn next_batch_version(&self) -> Result<i64, StoreError> {
        let sql = "SELECT MAX(v) FROM (SELECT MAX(view_version) AS v FROM batch_versions
                   UNION ALL SELECT MAX(view_version) AS v FROM ohlcv_batch) AS versions";
        with_pool!(self, pool => {
            let r = sqlx::query(sql).fetch_one(pool).await.map_err(db("reading batch versions"))?;
            Ok(col::<_, Option<i64>>(&r, 0)?.unwrap_or(0) + 1)
        })
    }

    /// Writes rows of an unpublished batch version at one interval (`interval_ms`: 60,000 for
    /// the 1-minute base rows, or a roll-up's length), in chunks of their own transactions:
    /// nobody reads a version before [`ViewStore::publish_batch_version`] points at it.
    pub async fn write_batch_rows(&self, version: i64, interval_ms: i64, rows: &[OhlcvRow]) -> Result<(), StoreError> {
        let d = self.dialect();
        for part in rows.chunks(20 * CHUNK_ROWS) {
            with_pool!(self, pool => {
                let mut tx = pool.begin().await.map_err(db("beginning a batch write"))?;
                insert_rows!(&mut tx, d, version, Some(interval_ms), part);
                tx.commit().await.map_err(db("committing batch rows"))?;
            });
        }
        Ok(())
    }

    /// Publishes (horizon, version) in one transaction; queries switch to it atomically.
    pub async fn publish_batch_version(&self, version: i64, batch_horizon_ms: i64, rows: i64, events: i64) -> Result<(), StoreError> {
        let d = self.dialect();
        let insert = d.sql(&format!(
            "INSERT INTO batch_versions (view_version, batch_horizon, rows, events, created_at) VALUES (?, {t}, ?, ?, {t})",
            t = d.time_param()
        ));
        let update = d.sql(&format!("UPDATE serving_state SET batch_version = ?, batch_horizon = {} WHERE id = 1", d.time_param()));
        let now = crate::time::now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db("beginning a batch publish"))?;
            sqlx::query(&insert)
                .bind(version)
                .bind(batch_horizon_ms)
                .bind(rows)
                .bind(events)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db("recording a batch version"))?;
            sqlx::query(&update).bind(version).bind(batch_horizon_ms).execute(&mut *tx).await.map_err(db("publishing a batch version"))?;
            tx.commit().await.map_err(db("committing a batch publish"))
        })
    }

    /// Deletes batch rows of every version but the published one (old versions, and the
    /// leftovers of a run that crashed before publishing), in small transactions.
    pub async fn delete_unpublished_batch_rows(&self) -> Result<u64, StoreError> {
        let id = self.dialect().row_id();
        let sql = format!(
            "DELETE FROM ohlcv_batch WHERE {id} IN (SELECT {id} FROM ohlcv_batch
             WHERE view_version IS DISTINCT FROM (SELECT batch_version FROM serving_state WHERE id = 1) LIMIT 20000)"
        );
        let mut deleted = 0;
        loop {
            let done = with_pool!(self, pool => sqlx::query(&sql).execute(pool).await.map_err(db("deleting old batch versions"))?.rows_affected());
            deleted += done;
            if done == 0 {
                return Ok(deleted);
            }
        }
    }

    /// Reads the rows a `/v1/bars` answer at `interval_ms` merges, in one transaction, for
    /// windows of `symbol` starting in `[from_ms, to_ms)` (`from_ms` aligned to the interval):
    ///
    /// - batch rows **at the interval** for buckets that end at or before the horizon H;
    /// - batch 1-minute rows from the start of the bucket holding H up to H;
    /// - realtime 1-minute rows from H on (all of them before the first batch run).
    ///
    /// At most `max_rows` rows of each read (the earliest) are returned.
    pub async fn bars_snapshot(
        &self,
        symbol: &str,
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
        max_rows: i64,
    ) -> Result<BarsSnapshot, StoreError> {
        let d = self.dialect();
        let (from_ms, to_ms) = (from_ms.max(crate::event::MIN_TS_MS), to_ms.min(crate::event::MAX_TS_MS));
        let t = d.time_param();
        let batch_sql = d.sql(&format!(
            "SELECT {} FROM ohlcv_batch WHERE view_version = ? AND interval_ms = ? AND symbol = ?
             AND window_start >= {t} AND window_start < {t} ORDER BY window_start LIMIT ?",
            select_columns(d)
        ));
        let realtime_sql = d.sql(&format!(
            "SELECT {} FROM ohlcv_realtime WHERE view_version = ? AND symbol = ?
             AND window_start >= {t} AND window_start < {t} ORDER BY window_start LIMIT ?",
            select_columns(d)
        ));
        let state_sql = state_sql(d);
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db("beginning a read"))?;
            let r = sqlx::query(&state_sql).fetch_one(&mut *tx).await.map_err(db("reading the serving state"))?;
            let state = ServingState { batch_version: col(&r, 0)?, batch_horizon_ms: col(&r, 1)?, realtime_version: col(&r, 2)? };
            let mut batch = Vec::new();
            let mut realtime_from = from_ms;
            if let (Some(v), Some(h)) = (state.batch_version, state.batch_horizon_ms) {
                // Buckets wholly before H come pre-rolled; the bucket holding H from 1-minute rows.
                let cut = crate::window::window_start(h, interval_ms).max(from_ms);
                for (read_interval, lo, hi) in [(interval_ms, from_ms, to_ms.min(cut)), (MINUTE_MS, cut, to_ms.min(h))] {
                    if lo >= hi {
                        continue;
                    }
                    let rows = sqlx::query(&batch_sql)
                        .bind(v)
                        .bind(read_interval)
                        .bind(symbol)
                        .bind(lo)
                        .bind(hi)
                        .bind(max_rows)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db("reading batch rows"))?;
                    for row in &rows {
                        batch.push(decode_row(row)?);
                    }
                }
                realtime_from = from_ms.max(h);
            }
            let rows = sqlx::query(&realtime_sql)
                .bind(state.realtime_version)
                .bind(symbol)
                .bind(realtime_from)
                .bind(to_ms)
                .bind(max_rows)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("reading realtime rows"))?;
            let realtime = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
            tx.commit().await.map_err(db("ending a read"))?;
            Ok(BarsSnapshot { state, batch, realtime })
        })
    }

    /// Whether `symbol` has any row in the served views (published batch or realtime version).
    pub async fn symbol_known(&self, symbol: &str) -> Result<bool, StoreError> {
        let sql = self.dialect().sql(
            "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM ohlcv_batch WHERE interval_ms = 86400000 AND symbol = ?
                 AND view_version = (SELECT batch_version FROM serving_state WHERE id = 1))
               OR EXISTS (SELECT 1 FROM ohlcv_realtime WHERE symbol = ?
                 AND view_version = (SELECT realtime_version FROM serving_state WHERE id = 1)) THEN 1 ELSE 0 END AS BIGINT)",
        );
        with_pool!(self, pool => {
            let r = sqlx::query(&sql).bind(symbol).bind(symbol).fetch_one(pool).await.map_err(db("looking up a symbol"))?;
            Ok(col::<_, i64>(&r, 0)? != 0)
        })
    }

    /// Symbols present in the served views (published batch version or realtime version).
    pub async fn symbols(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT symbol FROM ohlcv_batch WHERE interval_ms = 86400000
                     AND view_version = (SELECT batch_version FROM serving_state WHERE id = 1)
                   UNION SELECT DISTINCT symbol FROM ohlcv_realtime
                     WHERE view_version = (SELECT realtime_version FROM serving_state WHERE id = 1)
                   ORDER BY 1";
        with_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await.map_err(db("listing symbols"))?;
            rows.iter().map(|r| col(r, 0)).collect()
        })
    }
}
