-- The generic view engine (DESIGN §4, §5): every view's realtime rows carry the view's name and
-- are pre-rolled at every interval it serves; batch views are immutable Parquet segments next to
-- the master dataset, listed per version in view_segments and published by one update of
-- view_pointers. Times are INTEGER UTC ms, prices INTEGER micro-units, sums TEXT decimals
-- (SQLite has no exact decimal type).
--
-- Upgrading a store of the previous schema: the old batch rows are dropped (the next batch run
-- rebuilds them from the master dataset as segments) and the old realtime rows too, with the
-- speed layer's offsets and leases, so that the speed layer rebuilds its realtime view from the
-- log (which keeps every offset on the embedded log).
DROP TABLE ohlcv_batch;
DROP TABLE ohlcv_realtime;
DROP TABLE batch_versions;
DROP TABLE serving_state;
DELETE FROM consumer_offsets WHERE consumer LIKE 'speed-layer.%';
DELETE FROM consumer_leases WHERE consumer LIKE 'speed-layer.%';

-- Realtime rows of ohlcv-shaped views (ohlcv, ohlcv_30s, …) at every served interval.
-- partition: the log partition the key's events arrive on (the speed-layer instance that owns
-- it reloads its windows by partition).
CREATE TABLE ohlcv_realtime (
    view            TEXT    NOT NULL,
    view_version    INTEGER NOT NULL,
    interval_ms     INTEGER NOT NULL,
    symbol          TEXT    NOT NULL,
    window_start    INTEGER NOT NULL,
    partition       INTEGER NOT NULL,
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
    PRIMARY KEY (view, view_version, interval_ms, symbol, window_start)
);
CREATE INDEX ohlcv_realtime_by_window ON ohlcv_realtime (view, view_version, interval_ms, window_start);

-- What serving reads first, per view: the published batch version and its horizon H, and the
-- realtime version in service.
CREATE TABLE view_pointers (
    view             TEXT    PRIMARY KEY,
    batch_version    INTEGER,
    batch_horizon    INTEGER,
    realtime_version INTEGER NOT NULL
);

-- Every batch-view version: state building -> published -> retired -> expired (retired_at starts
-- the grace period after which its segments may be deleted; building -> expired when its run
-- never published). Rows are kept so that version numbers are never reused.
CREATE TABLE view_versions (
    view          TEXT    NOT NULL,
    view_version  INTEGER NOT NULL,
    fingerprint   TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    batch_horizon INTEGER,
    rows          INTEGER NOT NULL,
    events        INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    retired_at    INTEGER,
    PRIMARY KEY (view, view_version)
);

-- The manifest of each batch version: its segments (a segment carried over is listed by every
-- version that uses it). inputs: what the segment was built from (per log partition, the last
-- offset of the master-dataset files of its chunk), to tell whether a chunk must be rebuilt.
CREATE TABLE view_segments (
    view          TEXT    NOT NULL,
    view_version  INTEGER NOT NULL,
    chunk_start   INTEGER NOT NULL,
    chunk_end     INTEGER NOT NULL,
    covered_until INTEGER NOT NULL,
    path          TEXT    NOT NULL,
    rows          INTEGER NOT NULL,
    events        INTEGER NOT NULL,
    inputs        TEXT    NOT NULL,
    PRIMARY KEY (view, view_version, chunk_start)
);
CREATE INDEX view_segments_by_path ON view_segments (path);
