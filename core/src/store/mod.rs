//! The view store (DESIGN §7): realtime views, batch-view versions and their segment manifests,
//! per-view pointers, consumer offsets and leases, and service progress, on `sqlx`, in one of two backends:
//!
//! - **SQLite**, a file (the embedded default): WAL mode, `synchronous=FULL`; money as exact
//!   integers/text (SQLite has no exact decimal type);
//! - **PostgreSQL** (the distributed deployment): `NUMERIC` money, `timestamptz` times.
//!
//! One set of queries serves both: each query body is written once and expanded for each
//! backend's typed pool ([`with_pool!`]); [`Dialect`] supplies placeholders and the conversions
//! of money and time. Schema changes are migrations under `core/migrations/<dialect>/`.
//!
//! Every write that derives state from the log writes the consumed offsets in the same
//! transaction (exactly-once, DESIGN §5).

mod dialect;
pub(crate) mod entities;
mod feed;
mod handoff;
mod idempotency;
pub(crate) mod leases;
mod offsets;
mod packed;
mod realtime;
mod replays;
mod snapshot;
mod versions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use dialect::Dialect;
pub use entities::{EntityWrite, EntityWrites, StoredEntity};
pub use feed::{FeedCheckpoint, IngestCounters};
pub use handoff::HandoffState;
pub use idempotency::IdempotencyClaim;
pub use leases::{LeaseRecord, PartitionLease};
pub use offsets::ConsumerOffset;
pub use realtime::{DropBehind, RealtimeRow};
pub use replays::RealtimeVersion;
pub use snapshot::ViewSnapshot;
pub use versions::{BatchVersion, SegmentRecord, ViewPointer};

/// Errors of the view store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement, or could not be reached.
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
    /// A commit for partitions whose leases another instance has claimed since (see
    /// [`leases`]): nothing was written.
    #[error("consumer {consumer}: fenced: only {held} of the {expected} partition leases of this commit are still held (another instance claimed the rest)")]
    Fenced {
        /// Consumer name.
        consumer: String,
        /// Leases still held.
        held: usize,
        /// Leases the commit needed.
        expected: usize,
    },
    /// A stored value is not of the documented shape.
    #[error("view store holds a bad value: {0}")]
    BadValue(String),
    /// The request conflicts with the stored state (a replay already running, a version that is
    /// not replaying).
    #[error("{0}")]
    Conflict(String),
}

pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { context, source }
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's typed pool, expanding the body once per
/// backend: one source, two type-checked copies.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// A handle on the view store; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct ViewStore {
    backend: Backend,
    /// Whether answers are read in one snapshot (`REPEATABLE READ` on PostgreSQL); always true
    /// but in the test that shows what goes wrong without it.
    snapshot_reads: bool,
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
            .busy_timeout(Duration::from_secs(60))
            // A multi-row upsert's statement journal stays in memory instead of a temporary file
            // (a speed-layer commit upserts tens of thousands of rows). The page cache keeps
            // SQLite's default: 32 MiB per connection cost the lab 0.14 GB of peak RSS and the
            // speed layer nothing measurable.
            .pragma("temp_store", "memory");
        // No ping before each acquire (sqlx's default): a SQLite connection is a local file, and
        // the ping is one more hand-off to the connection's worker thread per request.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db("opening the SQLite file"))?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(ViewStore { backend: Backend::Sqlite(pool), snapshot_reads: true })
    }

    /// Connects to PostgreSQL at `url` (`postgres://user@host:port/db`) and runs its migrations.
    ///
    /// Errors: [`StoreError::Db`] when the server cannot be reached within `connect_timeout` or
    /// refuses the login, [`StoreError::Migrate`].
    pub async fn connect_postgres(url: &str, connect_timeout: Duration) -> Result<ViewStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(db("parsing the PostgreSQL URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(connect_timeout)
            .connect_with(options)
            .await
            .map_err(db("connecting to PostgreSQL"))?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(ViewStore { backend: Backend::Postgres(pool), snapshot_reads: true })
    }

    /// Opens the store a URL names: `postgres://…` or `postgresql://…` for PostgreSQL,
    /// `sqlite://<path>` or a plain path for SQLite.
    ///
    /// Errors: as [`ViewStore::open_sqlite`] and [`ViewStore::connect_postgres`].
    pub async fn open_url(url: &str, connect_timeout: Duration) -> Result<ViewStore, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            ViewStore::connect_postgres(url, connect_timeout).await
        } else {
            ViewStore::open_sqlite(Path::new(url.strip_prefix("sqlite://").unwrap_or(url))).await
        }
    }

    /// This store with answers read under PostgreSQL's default `READ COMMITTED` instead of one
    /// `REPEATABLE READ` snapshot. Serving never does this: it exists for the test that shows
    /// the anomaly snapshot reads prevent (windows vanishing from an answer while a batch
    /// version publishes and realtime rows are dropped).
    pub fn with_read_committed_answers(mut self) -> ViewStore {
        self.snapshot_reads = false;
        self
    }

    /// The SQL dialect of this store.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Checks that the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(db("ping")))
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}
