-- Prism view store, PostgreSQL dialect (DESIGN §7): the same tables as the SQLite dialect,
-- with exact NUMERIC money (prices NUMERIC(18,6), sums NUMERIC(38,6)) and timestamptz times.

CREATE TABLE consumer_offsets (
    consumer     TEXT        NOT NULL,
    topic        TEXT        NOT NULL,
    partition    BIGINT      NOT NULL,
    next_offset  BIGINT      NOT NULL,
    max_event_ts TIMESTAMPTZ,
    PRIMARY KEY (consumer, topic, partition)
);

CREATE TABLE ohlcv_realtime (
    view_version    BIGINT         NOT NULL,
    symbol          TEXT           NOT NULL,
    window_start    TIMESTAMPTZ    NOT NULL,
    open_price      NUMERIC(18, 6) NOT NULL,
    open_ts         TIMESTAMPTZ    NOT NULL,
    open_partition  BIGINT         NOT NULL,
    open_offset     BIGINT         NOT NULL,
    high_price      NUMERIC(18, 6) NOT NULL,
    low_price       NUMERIC(18, 6) NOT NULL,
    close_price     NUMERIC(18, 6) NOT NULL,
    close_ts        TIMESTAMPTZ    NOT NULL,
    close_partition BIGINT         NOT NULL,
    close_offset    BIGINT         NOT NULL,
    volume          BIGINT         NOT NULL,
    notional        NUMERIC(38, 6) NOT NULL,
    trades          BIGINT         NOT NULL,
    PRIMARY KEY (view_version, symbol, window_start)
);
CREATE INDEX ohlcv_realtime_by_window ON ohlcv_realtime (view_version, window_start);

CREATE TABLE ohlcv_batch (
    view_version    BIGINT         NOT NULL,
    interval_ms     BIGINT         NOT NULL,
    symbol          TEXT           NOT NULL,
    window_start    TIMESTAMPTZ    NOT NULL,
    open_price      NUMERIC(18, 6) NOT NULL,
    open_ts         TIMESTAMPTZ    NOT NULL,
    open_partition  BIGINT         NOT NULL,
    open_offset     BIGINT         NOT NULL,
    high_price      NUMERIC(18, 6) NOT NULL,
    low_price       NUMERIC(18, 6) NOT NULL,
    close_price     NUMERIC(18, 6) NOT NULL,
    close_ts        TIMESTAMPTZ    NOT NULL,
    close_partition BIGINT         NOT NULL,
    close_offset    BIGINT         NOT NULL,
    volume          BIGINT         NOT NULL,
    notional        NUMERIC(38, 6) NOT NULL,
    trades          BIGINT         NOT NULL,
    PRIMARY KEY (view_version, interval_ms, symbol, window_start)
);

CREATE TABLE batch_versions (
    view_version  BIGINT      PRIMARY KEY,
    batch_horizon TIMESTAMPTZ NOT NULL,
    rows          BIGINT      NOT NULL,
    events        BIGINT      NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE serving_state (
    id               BIGINT PRIMARY KEY CHECK (id = 1),
    batch_version    BIGINT,
    batch_horizon    TIMESTAMPTZ,
    realtime_version BIGINT NOT NULL
);
INSERT INTO serving_state (id, batch_version, batch_horizon, realtime_version) VALUES (1, NULL, NULL, 1);

CREATE TABLE feed_checkpoints (
    feed_id      TEXT        PRIMARY KEY,
    fingerprint  TEXT        NOT NULL,
    next_seq     BIGINT      NOT NULL,
    end_offsets  TEXT        NOT NULL,
    days_done    BIGINT      NOT NULL,
    days_total   BIGINT      NOT NULL,
    rows_refused BIGINT      NOT NULL,
    feed_date    TEXT,
    done         BIGINT      NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE ingest_counters (
    source   TEXT   PRIMARY KEY,
    accepted BIGINT NOT NULL,
    refused  BIGINT NOT NULL
);
