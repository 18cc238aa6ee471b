//! HTTP ingest's `Idempotency-Key` records (issue 9), in the view store so that they survive
//! restarts and are shared by every ingest instance.
//!
//! The rule follows the IETF draft "The Idempotency-Key HTTP Header Field"
//! (draft-ietf-httpapi-idempotency-key-header): the first request with a key *claims* it; a
//! retry with the same key and the same body gets the first answer again; the same key with
//! another body is a client error; a retry while the first is still in progress is a conflict.
//! A claim whose holder died (still `pending` after a stale period) may be taken over: the
//! record keeps the log end offsets from before the holder appended, so the new holder can find
//! what the dead one appended (see `prism_ingest::append::recover_positions`).

use super::offsets::col;
use super::{db, with_pool, StoreError, ViewStore};

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key was free: the caller holds it now and must [`ViewStore::complete_idempotency_key`]
    /// or [`ViewStore::abandon_idempotency_key`].
    Claimed,
    /// A holder of this key died (or failed) before answering: the caller holds it now, and the
    /// dead holder may have appended part of the request after `end_offsets`.
    TakenOver {
        /// The topic's log end offsets before the first holder appended, per partition.
        end_offsets: Vec<i64>,
    },
    /// The key was answered already.
    Done {
        /// Hash of the request that was answered.
        request_hash: String,
        /// Its HTTP status.
        status: u16,
        /// Its response body.
        response: String,
    },
    /// Another request holds the key right now.
    InProgress {
        /// Hash of that request.
        request_hash: String,
    },
}

impl ViewStore {
    /// Claims `key` for a request whose body hashes to `request_hash`, about to append after
    /// `end_offsets` (the topic's log end offsets now). Records older than `window_ms` are
    /// forgotten first; a `pending` record claimed more than `stale_ms` ago is taken over.
    /// Times are UTC ms (`now_ms`).
    ///
    /// Errors: [`StoreError`].
    pub async fn claim_idempotency_key(
        &self,
        key: &str,
        request_hash: &str,
        end_offsets: &[i64],
        now_ms: i64,
        window_ms: i64,
        stale_ms: i64,
    ) -> Result<IdempotencyClaim, StoreError> {
        let d = self.dialect();
        let t = d.time_param();
        let expire = d.sql(&format!("DELETE FROM ingest_idempotency_keys WHERE created_at < {t}"));
        let insert = d.sql(&format!(
            "INSERT INTO ingest_idempotency_keys (idempotency_key, request_hash, state, end_offsets, created_at, claimed_at)
             VALUES (?, ?, 'pending', ?, {t}, {t}) ON CONFLICT (idempotency_key) DO NOTHING"
        ));
        let select = d.sql(&format!(
            "SELECT request_hash, state, status, response, end_offsets, {} FROM ingest_idempotency_keys WHERE idempotency_key = ?",
            d.time_column("claimed_at")
        ));
        let take_over = d.sql(&format!(
            "UPDATE ingest_idempotency_keys SET claimed_at = {t}
             WHERE idempotency_key = ? AND state = 'pending' AND claimed_at < {t}"
        ));
        let offsets = serde_json::to_string(end_offsets).unwrap_or_else(|_| "[]".into());
        with_pool!(self, pool => {
            sqlx::query(&expire).bind(now_ms - window_ms).execute(pool).await.map_err(db("expiring idempotency keys"))?;
            let inserted = sqlx::query(&insert)
                .bind(key)
                .bind(request_hash)
                .bind(&offsets)
                .bind(now_ms)
                .bind(now_ms)
                .execute(pool)
                .await
                .map_err(db("claiming an idempotency key"))?;
            if inserted.rows_affected() == 1 {
                return Ok(IdempotencyClaim::Claimed);
            }
            let Some(row) = sqlx::query(&select).bind(key).fetch_optional(pool).await.map_err(db("reading an idempotency key"))? else {
                // Expired and deleted between the insert and the read: claim it afresh.
                return Box::pin(self.claim_idempotency_key(key, request_hash, end_offsets, now_ms, window_ms, stale_ms)).await;
            };
            let stored_hash: String = col(&row, 0)?;
            let state: String = col(&row, 1)?;
            if state == "done" {
                let status: Option<i64> = col(&row, 2)?;
                let response: Option<String> = col(&row, 3)?;
                let status = status.and_then(|s| u16::try_from(s).ok()).ok_or_else(|| StoreError::BadValue(format!("idempotency key {key:?} has no status")))?;
                return Ok(IdempotencyClaim::Done { request_hash: stored_hash, status, response: response.unwrap_or_default() });
            }
            if stored_hash != request_hash {
                return Ok(IdempotencyClaim::InProgress { request_hash: stored_hash });
            }
            let taken = sqlx::query(&take_over)
                .bind(now_ms)
                .bind(key)
                .bind(now_ms - stale_ms)
                .execute(pool)
                .await
                .map_err(db("taking over an idempotency key"))?;
            if taken.rows_affected() == 1 {
                let stored: String = col(&row, 4)?;
                let end_offsets = serde_json::from_str(&stored)
                    .map_err(|e| StoreError::BadValue(format!("idempotency key end offsets {stored:?}: {e}")))?;
                return Ok(IdempotencyClaim::TakenOver { end_offsets });
            }
            Ok(IdempotencyClaim::InProgress { request_hash: stored_hash })
        })
    }

    /// Records the answer to the request holding `key`.
    ///
    /// Errors: [`StoreError`].
    pub async fn complete_idempotency_key(&self, key: &str, status: u16, response: &str) -> Result<(), StoreError> {
        let sql =
            self.dialect().sql("UPDATE ingest_idempotency_keys SET state = 'done', status = ?, response = ? WHERE idempotency_key = ?");
        with_pool!(self, pool => {
            sqlx::query(&sql).bind(i64::from(status)).bind(response).bind(key).execute(pool).await.map_err(db("completing an idempotency key"))?;
            Ok(())
        })
    }

    /// Gives up a claim whose request failed after it may have appended: the record stays
    /// `pending` but is stale at once, so the client's next retry takes it over and finds what
    /// was appended.
    ///
    /// Errors: [`StoreError`].
    pub async fn abandon_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        let d = self.dialect();
        let sql = d.sql(&format!(
            "UPDATE ingest_idempotency_keys SET claimed_at = {} WHERE idempotency_key = ? AND state = 'pending'",
            d.time_param()
        ));
        with_pool!(self, pool => {
            sqlx::query(&sql).bind(0i64).bind(key).execute(pool).await.map_err(db("abandoning an idempotency key"))?;
            Ok(())
        })
    }
}
