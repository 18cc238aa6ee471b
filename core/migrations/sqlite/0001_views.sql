-- Prism view store, SQLite dialect (DESIGN §7).
-- Column names match the PostgreSQL dialect; the types differ. Money: SQLite has no exact
-- decimal type, so prices (*_price) are INTEGER micro-units (scale 6) and sums of money
-- (notional, which can pass i64) are TEXT decimals at scale 6. Times (window_start, *_ts,
-- batch_horizon, created_at, updated_at) are INTEGER UTC milliseconds.

-- Consumed positions per consumer (speed-layer, archiver, replay-vN), written in the same
-- transaction as what the consumer derived from them: the basis of exactly-once.
CREATE TABLE consumer_offsets (
    consumer        TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL,
    max_event_ts    INTEGER,
    PRIMARY KEY (consumer, topic, partition)
);

-- The ohlcv view, one table per layer; view_version separates versions. Realtime rows are
-- 1-minute windows.
CREATE TABLE ohlcv_realtime (
    view_version    INTEGER NOT NULL,
    symbol          TEXT    NOT NULL,
    window_start    INTEGER NOT NULL,
    open_price      INTEGER NOT NULL,
    open_ts         INTEGER NOT NULL,
    open_partition  INTEGER NOT NULL,
    open_offset     INTEGER NOT NULL,
    high_price      INTEGER NOT NULL,
    low_price       INTEGER NOT NULL,
    close_price     INTEGER NOT NULL,
    close_ts        INTEGER NOT NULL,
    close_partition INTEGER NOT NULL,
    close_offset    INTEGER NOT NULL,
    volume          INTEGER NOT NULL,
    notional        TEXT    NOT NULL,
    trades          INTEGER NOT NULL,
    PRIMARY KEY (view_version, symbol, window_start)
);

-- The batch view is stored at every served interval (1m, 5m, 15m, 1h, 1d): the batch job
-- rolls each up once, so queries over years read few rows.
CREATE TABLE ohlcv_batch (
    view_version    INTEGER NOT NULL,
    interval_ms     INTEGER NOT NULL,
    symbol          TEXT    NOT NULL,
    window_start    INTEGER NOT NULL,
    open_price      INTEGER NOT NULL,
    open_ts         INTEGER NOT NULL,
    open_partition  INTEGER NOT NULL,
    open_offset     INTEGER NOT NULL,
    high_price      INTEGER NOT NULL,
    low_price       INTEGER NOT NULL,
    close_price     INTEGER NOT NULL,
    close_ts        INTEGER NOT NULL,
    close_partition INTEGER NOT NULL,
    close_offset    INTEGER NOT NULL,
    volume          INTEGER NOT NULL,
    notional        TEXT    NOT NULL,
    trades          INTEGER NOT NULL,
    PRIMARY KEY (view_version, interval_ms, symbol, window_start)
);

-- Every batch-view version built, with the horizon it covers.
CREATE TABLE batch_versions (
    view_version     INTEGER PRIMARY KEY,
    batch_horizon    INTEGER NOT NULL,
    rows             INTEGER NOT NULL,
    events           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL
);

-- What serving reads: the published batch version and horizon, and the realtime version.
CREATE TABLE serving_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    batch_version    INTEGER,
    batch_horizon    INTEGER,
    realtime_version INTEGER NOT NULL
);
INSERT INTO serving_state (id, batch_version, batch_horizon, realtime_version) VALUES (1, NULL, NULL, 1);

-- Historical feed position (see prism-ingest's feed module).
CREATE TABLE feed_checkpoints (
    feed_id       TEXT    PRIMARY KEY,
    fingerprint   TEXT    NOT NULL,
    next_seq      INTEGER NOT NULL,
    end_offsets   TEXT    NOT NULL,
    days_done     INTEGER NOT NULL,
    days_total    INTEGER NOT NULL,
    rows_refused  INTEGER NOT NULL,
    feed_date  TEXT,
    done          INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Events accepted and refused per ingest source.
CREATE TABLE ingest_counters (
    source   TEXT    PRIMARY KEY,
    accepted INTEGER NOT NULL,
    refused  INTEGER NOT NULL
);

-- Range deletes behind the batch horizon and warm-cache loads scan by window start.
CREATE INDEX ohlcv_realtime_by_window ON ohlcv_realtime (view_version, window_start);
