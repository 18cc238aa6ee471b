-- The generic view engine (DESIGN §4, §5), PostgreSQL dialect: the same tables as the SQLite
-- dialect with NUMERIC money and timestamptz times. See the SQLite migration for the upgrade
-- notes (old batch and realtime rows dropped; the speed layer rebuilds from the log).
DROP TABLE ohlcv_batch;
DROP TABLE ohlcv_realtime;
DROP TABLE batch_versions;
DROP TABLE serving_state;
DELETE FROM consumer_offsets WHERE consumer LIKE 'speed-layer.%';
DELETE FROM consumer_leases WHERE consumer LIKE 'speed-layer.%';

CREATE TABLE ohlcv_realtime (
    view            TEXT           NOT NULL,
    view_version    BIGINT         NOT NULL,
    interval_ms     BIGINT         NOT NULL,
    symbol          TEXT           NOT NULL,
    window_start    TIMESTAMPTZ    NOT NULL,
    partition       BIGINT         NOT NULL,
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
    PRIMARY KEY (view, view_version, interval_ms, symbol, window_start)
);
CREATE INDEX ohlcv_realtime_by_window ON ohlcv_realtime (view, view_version, interval_ms, window_start);

CREATE TABLE view_pointers (
    view             TEXT        PRIMARY KEY,
    batch_version    BIGINT,
    batch_horizon    TIMESTAMPTZ,
    realtime_version BIGINT      NOT NULL
);

CREATE TABLE view_versions (
    view          TEXT        NOT NULL,
    view_version  BIGINT      NOT NULL,
    fingerprint   TEXT        NOT NULL,
    state         TEXT        NOT NULL,
    batch_horizon TIMESTAMPTZ,
    rows          BIGINT      NOT NULL,
    events        BIGINT      NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    retired_at    TIMESTAMPTZ,
    PRIMARY KEY (view, view_version)
);

CREATE TABLE view_segments (
    view          TEXT        NOT NULL,
    view_version  BIGINT      NOT NULL,
    chunk_start   TIMESTAMPTZ NOT NULL,
    chunk_end     TIMESTAMPTZ NOT NULL,
    covered_until TIMESTAMPTZ NOT NULL,
    path          TEXT        NOT NULL,
    rows          BIGINT      NOT NULL,
    events        BIGINT      NOT NULL,
    inputs        TEXT        NOT NULL,
    PRIMARY KEY (view, view_version, chunk_start)
);
CREATE INDEX view_segments_by_path ON view_segments (path);
