-- Realtime rows of the changes views (DESIGN §4), one view per CDC table: operation × window,
-- pre-rolled at every served interval. A CDC topic is keyed by primary key, so one operation's
-- changes arrive on every partition: each partition's owner keeps its own row (partition is in
-- the primary key) and reads merge them.
CREATE TABLE changes_realtime (
    view         TEXT    NOT NULL,
    view_version BIGINT  NOT NULL,
    interval_ms  BIGINT  NOT NULL,
    op           TEXT    NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    partition    BIGINT  NOT NULL,
    changes      BIGINT  NOT NULL,
    PRIMARY KEY (view, view_version, interval_ms, op, window_start, partition)
);
CREATE INDEX changes_realtime_by_window ON changes_realtime (view, view_version, interval_ms, window_start);

-- Entities of views over an at-least-once change stream (core::view::EntityChange): per entity
-- (CDC: a row's primary key as canonical JSON) the last sequence applied from its own partition
-- (seen_*: redeliveries at or below it are dropped) and its last state by sequence (state_*,
-- deleted, state: last write wins; a primary-key update writes a tombstone for the former key,
-- with partition -1 when the former key has no row yet). Sequences are (commit LSN, LSN).
CREATE TABLE view_entities (
    view         TEXT    NOT NULL,
    view_version BIGINT  NOT NULL,
    entity_key   TEXT    NOT NULL,
    partition    BIGINT  NOT NULL,
    seen_major   BIGINT  NOT NULL,
    seen_minor   BIGINT  NOT NULL,
    state_major  BIGINT  NOT NULL,
    state_minor  BIGINT  NOT NULL,
    deleted      BOOLEAN NOT NULL,
    state        TEXT,
    PRIMARY KEY (view, view_version, entity_key)
);
CREATE INDEX view_entities_by_partition ON view_entities (view, view_version, partition);
