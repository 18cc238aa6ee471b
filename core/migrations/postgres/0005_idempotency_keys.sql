-- HTTP ingest's Idempotency-Key records (issue 9): a client that retries a batch with the same key
-- appends nothing new and gets the first answer again. state: 'pending' while a request holds the
-- key (end_offsets: the topic's log end offsets before it appended, from which a takeover scans
-- for what it may have appended), 'done' once answered (status, response: the answer). Rows older
-- than the configured window are deleted.
CREATE TABLE ingest_idempotency_keys (
    idempotency_key TEXT        PRIMARY KEY,
    request_hash    TEXT        NOT NULL,
    state           TEXT        NOT NULL,
    end_offsets     TEXT        NOT NULL,
    status          BIGINT,
    response        TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    claimed_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX ingest_idempotency_keys_by_age ON ingest_idempotency_keys (created_at);
