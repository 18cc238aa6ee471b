//! The view store (DESIGN §7): realtime and batch views, consumer offsets, the serving pointer
//! and service progress, on `sqlx`. The embedded default is a SQLite file (WAL mode,
//! `synchronous=FULL`); schema changes are migrations under `core/migrations/`.
//!
//! Every write that derives state from the log writes the consumed offsets in the same
//! transaction (exactly-once, DESIGN §5).

mod feed;
mod offsets;
mod ohlcv;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use feed::{FeedCheckpoint, IngestCounters};
pub use offsets::ConsumerOffset;
pub use ohlcv::{BarsSnapshot, ServingState};

/// Errors of the view store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("view store: {context}: {source}")]
    Db {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error("view store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not of the documented shape.
    #[error("view store holds a bad value: {0}")]
    BadValue(String),
}

pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { context, source }
}

/// A handle on the view store; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct ViewStore {
    pool: SqlitePool,
}

impl ViewStore {
    /// Opens (creating if needed) the SQLite view store at `path` and runs its migrations.
    ///
    /// Errors: [`StoreError::Db`] when the file cannot be opened, [`StoreError::Migrate`].
    pub async fn open_sqlite(path: &Path) -> Result<ViewStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db("parsing options"))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(60));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(db("opening the SQLite file"))?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(ViewStore { pool })
    }

    /// Checks that the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db("ping"))?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
