//! Where SQLite and PostgreSQL disagree: placeholders, money and time.
//!
//! Queries are written with `?` placeholders and with the fragments below around money and time
//! values; Rust always binds and reads plain `i64` micro-units, `i64` UTC milliseconds and
//! decimal text for sums, whatever the backend.

/// A view-store SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: prices INTEGER micro-units, sums TEXT, times INTEGER UTC ms.
    Sqlite,
    /// PostgreSQL: prices NUMERIC(18,6), sums NUMERIC(38,6), times timestamptz.
    Postgres,
}

impl Dialect {
    /// Rewrites `?` placeholders as `$1, $2, …` for PostgreSQL (the queries hold no `?` in
    /// literals); SQLite keeps them.
    pub fn sql(self, query: &str) -> String {
        match self {
            Dialect::Sqlite => query.to_string(),
            Dialect::Postgres => {
                let mut out = String::with_capacity(query.len() + 16);
                let mut n = 0;
                for c in query.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    /// The statement that starts a transaction which writes. SQLite: `BEGIN IMMEDIATE`, which
    /// takes the write lock up front (waiting up to the busy timeout) — a deferred transaction
    /// that reads first and then writes gets `SQLITE_BUSY` at once, without waiting, when
    /// another writer committed in between (SQLite docs, "Transaction", and its WAL notes).
    /// PostgreSQL: a plain `BEGIN`.
    pub fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// A price parameter bound as `i64` micro-units.
    pub fn price_param(self) -> &'static str {
        match self {
            Dialect::Sqlite => "?",
            Dialect::Postgres => "(CAST(? AS NUMERIC) / 1000000)",
        }
    }

    /// A price column read as `i64` micro-units.
    pub fn price_column(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => column.to_string(),
            Dialect::Postgres => format!("CAST({column} * 1000000 AS BIGINT)"),
        }
    }

    /// A sum-of-money parameter bound as decimal text.
    pub fn sum_param(self) -> &'static str {
        match self {
            Dialect::Sqlite => "?",
            Dialect::Postgres => "CAST(? AS NUMERIC)",
        }
    }

    /// A sum-of-money column read as decimal text.
    pub fn sum_column(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => column.to_string(),
            Dialect::Postgres => format!("CAST({column} AS TEXT)"),
        }
    }

    /// A time parameter bound as `i64` UTC milliseconds.
    pub fn time_param(self) -> &'static str {
        match self {
            Dialect::Sqlite => "?",
            Dialect::Postgres => "(TIMESTAMPTZ 'epoch' + CAST(? AS BIGINT) * INTERVAL '1 millisecond')",
        }
    }

    /// A time column read as `i64` UTC milliseconds.
    pub fn time_column(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => column.to_string(),
            Dialect::Postgres => format!("CAST(EXTRACT(EPOCH FROM {column}) * 1000 AS BIGINT)"),
        }
    }

    /// The physical row id, for deleting in chunks.
    pub fn row_id(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "ctid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_for_postgres() {
        assert_eq!(Dialect::Postgres.sql("a = ? AND b IN (?, ?)"), "a = $1 AND b IN ($2, $3)");
        assert_eq!(Dialect::Sqlite.sql("a = ?"), "a = ?");
    }
}
