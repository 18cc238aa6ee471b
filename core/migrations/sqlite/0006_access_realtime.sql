-- Realtime rows of the access view (DESIGN §4): (client host, status class) × window, pre-rolled at
-- every served interval. host_status_class: "<host> <class>", e.g. "203.0.113.9 4xx".
-- latency_buckets: the latency histogram as "bucket:count,…" text (integer buckets; see
-- core/src/view/latency.rs). Times are INTEGER UTC ms.
CREATE TABLE access_realtime (
    view              TEXT    NOT NULL,
    view_version      INTEGER NOT NULL,
    interval_ms       INTEGER NOT NULL,
    host_status_class TEXT    NOT NULL,
    window_start      INTEGER NOT NULL,
    partition         INTEGER NOT NULL,
    requests          INTEGER NOT NULL,
    bytes             INTEGER NOT NULL,
    latency_buckets   TEXT    NOT NULL,
    PRIMARY KEY (view, view_version, interval_ms, host_status_class, window_start)
);
CREATE INDEX access_realtime_by_window ON access_realtime (view, view_version, interval_ms, window_start);
