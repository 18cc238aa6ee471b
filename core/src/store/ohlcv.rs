//! The `ohlcv` view's tables: `ohlcv_realtime` (speed layer), `ohlcv_batch` (batch job), the
//! serving pointer, and the one-snapshot read that the serving layer merges.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::offsets::{write_offsets, ConsumerOffset};
use super::{db, StoreError, ViewStore};
use crate::decimal::Decimal6;
use crate::ohlcv::{EventKey, Ohlcv, OhlcvKey, OhlcvRow, PricePoint};

const COLUMNS: &str = "symbol, window_start_ms, open_units, open_ts_ms, open_partition, open_offset, \
    high_units, low_units, close_units, close_ts_ms, close_partition, close_offset, volume, notional, trades";
/// Rows per multi-row statement: 16 binds a row stays under SQLite's 32,766 variables.
const CHUNK_ROWS: usize = 1_000;

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

/// Where rows go: the realtime table (1-minute windows), or the batch table at one interval.
#[derive(Debug, Clone, Copy)]
enum Target {
    Realtime,
    Batch { interval_ms: i64 },
}

async fn insert_rows(
    conn: &mut sqlx::SqliteConnection,
    target: Target,
    version: i64,
    rows: &[OhlcvRow],
) -> Result<(), StoreError> {
    let (table, extra_column, interval_ms) = match target {
        Target::Realtime => ("ohlcv_realtime", "", None),
        Target::Batch { interval_ms } => ("ohlcv_batch", "interval_ms, ", Some(interval_ms)),
    };
    let conflict_key = if interval_ms.is_some() { "view_version, interval_ms, symbol, window_start_ms" } else { "view_version, symbol, window_start_ms" };
    for chunk in rows.chunks(CHUNK_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(format!("INSERT INTO {table} (view_version, {extra_column}{COLUMNS}) "));
        let mut bad = None;
        q.push_values(chunk, |mut b, row| {
            let a = &row.agg;
            let (Some(open), Some(high), Some(low), Some(close)) = (a.open, a.high, a.low, a.close) else {
                bad = Some(row.key.clone());
                return;
            };
            b.push_bind(version);
            if let Some(i) = interval_ms {
                b.push_bind(i);
            }
            b.push_bind(row.key.symbol.as_str())
                .push_bind(row.key.window_start_ms)
                .push_bind(open.price.units() as i64)
                .push_bind(open.key.ts_ms)
                .push_bind(open.key.partition as i64)
                .push_bind(open.key.offset)
                .push_bind(high.units() as i64)
                .push_bind(low.units() as i64)
                .push_bind(close.price.units() as i64)
                .push_bind(close.key.ts_ms)
                .push_bind(close.key.partition as i64)
                .push_bind(close.key.offset)
                .push_bind(a.volume)
                .push_bind(a.notional.to_string())
                .push_bind(a.trades);
        });
        if let Some(key) = bad {
            return Err(StoreError::BadValue(format!("empty aggregate for {key:?} cannot be stored")));
        }
        q.push(format!(
            " ON CONFLICT ({conflict_key}) DO UPDATE SET
              open_units = excluded.open_units, open_ts_ms = excluded.open_ts_ms,
              open_partition = excluded.open_partition, open_offset = excluded.open_offset,
              high_units = excluded.high_units, low_units = excluded.low_units,
              close_units = excluded.close_units, close_ts_ms = excluded.close_ts_ms,
              close_partition = excluded.close_partition, close_offset = excluded.close_offset,
              volume = excluded.volume, notional = excluded.notional, trades = excluded.trades"
        ));
        q.build().execute(&mut *conn).await.map_err(db("writing ohlcv rows"))?;
    }
    Ok(())
}

fn decode_row(r: &SqliteRow) -> Result<OhlcvRow, StoreError> {
    let notional: String = r.get(13);
    let notional: Decimal6 = notional
        .parse()
        .map_err(|e| StoreError::BadValue(format!("notional {notional:?}: {e}")))?;
    let point = |units: i64, ts: i64, p: i64, o: i64| PricePoint {
        key: EventKey { ts_ms: ts, partition: p as i32, offset: o },
        price: Decimal6::from_units(units as i128),
    };
    Ok(OhlcvRow {
        key: OhlcvKey { symbol: r.get(0), window_start_ms: r.get(1) },
        agg: Ohlcv {
            open: Some(point(r.get(2), r.get(3), r.get(4), r.get(5))),
            high: Some(Decimal6::from_units(r.get::<i64, _>(6) as i128)),
            low: Some(Decimal6::from_units(r.get::<i64, _>(7) as i128)),
            close: Some(point(r.get(8), r.get(9), r.get(10), r.get(11))),
            volume: r.get(12),
            notional,
            trades: r.get(14),
        },
    })
}

impl ViewStore {
    /// The speed layer's commit: upserts changed realtime rows of `version`, deletes realtime
    /// rows with window start before `drop_before_ms` (covered by a published batch version),
    /// and writes `consumer`'s offsets — all in one transaction.
    pub async fn commit_realtime(
        &self,
        consumer: &str,
        topic: &str,
        version: i64,
        rows: &[OhlcvRow],
        offsets: &[ConsumerOffset],
        drop_before_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning a realtime commit"))?;
        insert_rows(&mut tx, Target::Realtime, version, rows).await?;
        if let Some(h) = drop_before_ms {
            sqlx::query("DELETE FROM ohlcv_realtime WHERE view_version = ? AND window_start_ms < ?")
                .bind(version)
                .bind(h)
                .execute(&mut *tx)
                .await
                .map_err(db("dropping realtime windows behind the batch horizon"))?;
        }
        write_offsets(&mut tx, consumer, topic, offsets).await?;
        tx.commit().await.map_err(db("committing realtime rows"))
    }

    /// Realtime rows of `version` with window start ≥ `from_ms` (the speed layer's warm cache).
    pub async fn realtime_rows_since(&self, version: i64, from_ms: i64) -> Result<Vec<OhlcvRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ohlcv_realtime WHERE view_version = ? AND window_start_ms >= ?"
        ))
        .bind(version)
        .bind(from_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading realtime rows"))?;
        rows.iter().map(decode_row).collect()
    }

    /// One realtime row, if stored.
    pub async fn realtime_row(&self, version: i64, key: &OhlcvKey) -> Result<Option<Ohlcv>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ohlcv_realtime WHERE view_version = ? AND symbol = ? AND window_start_ms = ?"
        ))
        .bind(version)
        .bind(&key.symbol)
        .bind(key.window_start_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a realtime row"))?;
        row.as_ref().map(decode_row).transpose().map(|r| r.map(|r| r.agg))
    }

    /// The pointer serving reads.
    pub async fn serving_state(&self) -> Result<ServingState, StoreError> {
        let r = sqlx::query("SELECT batch_version, batch_horizon_ms, realtime_version FROM serving_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the serving state"))?;
        Ok(ServingState { batch_version: r.get(0), batch_horizon_ms: r.get(1), realtime_version: r.get(2) })
    }

    /// A fresh batch-view version number (above every version ever written, published or not).
    pub async fn next_batch_version(&self) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "SELECT MAX(v) FROM (SELECT MAX(view_version) AS v FROM batch_versions
             UNION ALL SELECT MAX(view_version) FROM ohlcv_batch)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("reading batch versions"))?;
        Ok(r.get::<Option<i64>, _>(0).unwrap_or(0) + 1)
    }

    /// Writes rows of an unpublished batch version at one interval (`interval_ms`: 60,000 for
    /// the 1-minute base rows, or a roll-up's length), in chunks of their own transactions:
    /// nobody reads a version before [`ViewStore::publish_batch_version`] points at it.
    pub async fn write_batch_rows(&self, version: i64, interval_ms: i64, rows: &[OhlcvRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(20 * CHUNK_ROWS) {
            let mut tx = self.pool.begin().await.map_err(db("beginning a batch write"))?;
            insert_rows(&mut tx, Target::Batch { interval_ms }, version, chunk).await?;
            tx.commit().await.map_err(db("committing batch rows"))?;
        }
        Ok(())
    }

    /// Publishes (horizon, version) in one transaction; queries switch to it atomically.
    pub async fn publish_batch_version(
        &self,
        version: i64,
        batch_horizon_ms: i64,
        rows: i64,
        events: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning a batch publish"))?;
        sqlx::query(
            "INSERT INTO batch_versions (view_version, batch_horizon_ms, rows, events, created_at_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(version)
        .bind(batch_horizon_ms)
        .bind(rows)
        .bind(events)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(db("recording a batch version"))?;
        sqlx::query("UPDATE serving_state SET batch_version = ?, batch_horizon_ms = ? WHERE id = 1")
            .bind(version)
            .bind(batch_horizon_ms)
            .execute(&mut *tx)
            .await
            .map_err(db("publishing a batch version"))?;
        tx.commit().await.map_err(db("committing a batch publish"))
    }

    /// Deletes batch rows of every version but the published one (old versions, and the
    /// leftovers of a run that crashed before publishing), in small transactions.
    pub async fn delete_unpublished_batch_rows(&self) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM ohlcv_batch WHERE rowid IN (SELECT rowid FROM ohlcv_batch
                 WHERE view_version IS NOT (SELECT batch_version FROM serving_state WHERE id = 1) LIMIT 20000)",
            )
            .execute(&self.pool)
            .await
            .map_err(db("deleting old batch versions"))?
            .rows_affected();
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
        let mut tx = self.pool.begin().await.map_err(db("beginning a read"))?;
        let r = sqlx::query("SELECT batch_version, batch_horizon_ms, realtime_version FROM serving_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the serving state"))?;
        let state = ServingState { batch_version: r.get(0), batch_horizon_ms: r.get(1), realtime_version: r.get(2) };
        const BATCH: &str = "SELECT symbol, window_start_ms, open_units, open_ts_ms, open_partition, open_offset, \
            high_units, low_units, close_units, close_ts_ms, close_partition, close_offset, volume, notional, trades \
            FROM ohlcv_batch WHERE view_version = ? AND interval_ms = ? AND symbol = ? AND window_start_ms >= ? AND window_start_ms < ? \
            ORDER BY window_start_ms LIMIT ?";
        let mut batch = Vec::new();
        let mut realtime_from = from_ms;
        if let (Some(v), Some(h)) = (state.batch_version, state.batch_horizon_ms) {
            // Buckets wholly before H come pre-rolled; the bucket holding H from 1-minute rows.
            let cut = crate::window::window_start(h, interval_ms).max(from_ms);
            let reads = [(interval_ms, from_ms, to_ms.min(cut)), (crate::time::MINUTE_MS, cut, to_ms.min(h))];
            for (i, (read_interval, lo, hi)) in reads.into_iter().enumerate() {
                if lo >= hi || (i == 1 && read_interval == interval_ms) {
                    continue;
                }
                let rows = sqlx::query(BATCH)
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
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ohlcv_realtime WHERE view_version = ? AND symbol = ? AND window_start_ms >= ? AND window_start_ms < ? ORDER BY window_start_ms LIMIT ?"
        ))
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
    }

    /// Whether `symbol` has any row in the served views (published batch or realtime version).
    pub async fn symbol_known(&self, symbol: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM ohlcv_batch WHERE interval_ms = 86400000 AND symbol = ?1 AND view_version = (SELECT batch_version FROM serving_state WHERE id = 1))
                 OR EXISTS (SELECT 1 FROM ohlcv_realtime WHERE symbol = ?1 AND view_version = (SELECT realtime_version FROM serving_state WHERE id = 1))",
        )
        .bind(symbol)
        .fetch_one(&self.pool)
        .await
        .map_err(db("looking up a symbol"))?;
        Ok(r.get::<i64, _>(0) != 0)
    }

    /// Symbols present in the served views (published batch version or realtime version).
    pub async fn symbols(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT symbol FROM ohlcv_batch WHERE interval_ms = 86400000 AND view_version = (SELECT batch_version FROM serving_state WHERE id = 1)
             UNION SELECT DISTINCT symbol FROM ohlcv_realtime WHERE view_version = (SELECT realtime_version FROM serving_state WHERE id = 1)
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing symbols"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
