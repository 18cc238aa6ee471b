//! The CDC source's plain SQL side (sqlx): the connection URL, the publication, the slot's
//! state and the shapes of the published tables.

use std::time::Duration;

use pgwire_replication::ReplicationConfig;
use sqlx::{Connection, Executor, PgConnection, Row};

use super::envelope::{TableColumn, TableShape};
use super::CdcError;

/// The parts of a `postgres://user[:password]@host[:port]/db` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// Host.
    pub host: String,
    /// Port (5432 by default).
    pub port: u16,
    /// User.
    pub user: String,
    /// Password (empty when none).
    pub password: String,
    /// Database.
    pub database: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "postgres://{}@{}:{}/{}", self.user, self.host, self.port, self.database)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl PgUrl {
    /// Parses the URL (query parameters are ignored). The error never repeats the URL (it may
    /// hold a password).
    pub fn parse(url: &str) -> Result<PgUrl, CdcError> {
        let bad = |what: &str| CdcError::Config(format!("the CDC database URL is not postgres://user[:password]@host[:port]/db: {what}"));
        let rest = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")).ok_or_else(|| bad("scheme"))?;
        let rest = rest.split('?').next().unwrap_or_default();
        let (auth, rest) = rest.rsplit_once('@').ok_or_else(|| bad("no user@"))?;
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        let (host_port, database) = rest.split_once('/').ok_or_else(|| bad("no /database"))?;
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("port"))?),
            None => (host_port, 5432),
        };
        if user.is_empty() || host.is_empty() || database.is_empty() {
            return Err(bad("empty user, host or database"));
        }
        Ok(PgUrl {
            host: host.into(),
            port,
            user: percent_decode(user),
            password: percent_decode(password),
            database: percent_decode(database),
        })
    }

    /// The replication session's settings for `slot` and `publication`.
    pub fn replication(&self, slot: &str, publication: &str) -> ReplicationConfig {
        ReplicationConfig::new(&self.host, &self.user, &self.password, &self.database, slot, publication)
            .with_port(self.port)
            .with_status_interval(Duration::from_secs(1))
    }
}

/// A connection error without the URL.
pub fn sql_error(context: &str) -> impl Fn(sqlx::Error) -> CdcError + '_ {
    move |e| CdcError::Postgres(format!("{context}: {e}"))
}

/// Connects with sqlx.
pub async fn connect(url: &str) -> Result<PgConnection, CdcError> {
    PgConnection::connect(url).await.map_err(sql_error("connecting to the CDC database"))
}

/// The WAL `slot` holds back, bytes: `pg_wal_lsn_diff(pg_current_wal_lsn(),
/// confirmed_flush_lsn)`, with the confirmed flush LSN (as PostgreSQL writes it); `None` when
/// the slot does not exist or has confirmed nothing yet.
///
/// Errors: [`CdcError`] without the URL or password.
pub async fn slot_lag_bytes(sql: &mut PgConnection, slot: &str) -> Result<Option<(i64, String)>, CdcError> {
    let lag: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT CAST(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) AS bigint), confirmed_flush_lsn::text
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *sql)
    .await
    .map_err(sql_error("measuring the slot's lag"))?;
    Ok(match lag {
        Some((Some(bytes), Some(confirmed))) => Some((bytes, confirmed)),
        _ => None,
    })
}

/// Checks that the captured database answers (for `/readyz`): connects and closes.
///
/// Errors: [`CdcError`] without the URL or password.
pub async fn ping(url: &str) -> Result<(), CdcError> {
    let connection = connect(url).await?;
    let _ = sqlx::Connection::close(connection).await;
    Ok(())
}

/// `"name"` with `"` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the publication `FOR TABLES IN SCHEMA …` when absent (an existing one is used as is).
pub async fn ensure_publication(sql: &mut PgConnection, publication: &str, schemas: &[String]) -> Result<(), CdcError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
        .bind(publication)
        .fetch_one(&mut *sql)
        .await
        .map_err(sql_error("looking up the publication"))?;
    if !exists {
        let list: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
        let create = format!("CREATE PUBLICATION {} FOR TABLES IN SCHEMA {}", quote_ident(publication), list.join(", "));
        sql.execute(create.as_str()).await.map_err(sql_error("creating the publication"))?;
        tracing::info!(publication, ?schemas, "ingest-cdc created the publication");
    }
    Ok(())
}

/// The slot's state: `None` when absent, else whether a session uses it.
pub async fn slot_active(sql: &mut PgConnection, slot: &str) -> Result<Option<bool>, CdcError> {
    sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()")
        .bind(slot)
        .fetch_optional(&mut *sql)
        .await
        .map_err(sql_error("looking up the replication slot"))
}

/// Waits (up to 30 s) until no session uses the slot (a previous run's walsender exits a moment
/// after its session ended).
pub async fn wait_slot_inactive(sql: &mut PgConnection, slot: &str) -> Result<(), CdcError> {
    for _ in 0..300 {
        if slot_active(sql, slot).await? != Some(true) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(CdcError::Postgres(format!("replication slot {slot} stays in use by another session")))
}

/// Drops the slot.
pub async fn drop_slot(sql: &mut PgConnection, slot: &str) -> Result<(), CdcError> {
    wait_slot_inactive(sql, slot).await?;
    sqlx::query("SELECT pg_drop_replication_slot($1)").bind(slot).execute(&mut *sql).await.map_err(sql_error("dropping the slot"))?;
    Ok(())
}

/// The tables of the publication (schema, name).
pub async fn published_tables(sql: &mut PgConnection, publication: &str) -> Result<Vec<(String, String)>, CdcError> {
    let rows = sqlx::query("SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2")
        .bind(publication)
        .fetch_all(&mut *sql)
        .await
        .map_err(sql_error("listing the published tables"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A table's shape from the catalog: the key is its primary key; without one, under
/// `REPLICA IDENTITY FULL`, every column; otherwise none (the table cannot be keyed).
pub async fn table_shape(sql: &mut PgConnection, schema: &str, table: &str) -> Result<TableShape, CdcError> {
    let rows = sqlx::query(
        "SELECT a.attname::text, a.atttypid::int8, coalesce(a.attnum = ANY(i.indkey::int2[]), false), c.relreplident::text \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *sql)
    .await
    .map_err(sql_error("reading a table's columns"))?;
    let mut columns: Vec<TableColumn> =
        rows.iter().map(|r| TableColumn { name: r.get(0), type_oid: r.get::<i64, _>(1) as u32, key: r.get(2) }).collect();
    let full = rows.first().is_some_and(|r| r.get::<String, _>(3) == "f");
    if full && !columns.iter().any(|c| c.key) {
        columns.iter_mut().for_each(|c| c.key = true);
    }
    Ok(TableShape { schema: schema.into(), table: table.into(), columns })
}
