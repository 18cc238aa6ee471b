-- Kappa mode (DESIGN §6): each realtime version of a view hands its finalized windows off to
-- immutable segments. A hand-off manifest is a view_versions row of state 'handoff' (then
-- 'retired' and 'expired' like a batch version); realtime_versions says which manifest and which
-- segment horizon belong to each realtime version, so that a version being replayed keeps its
-- own until it is switched to. view_pointers' batch_version and batch_horizon then hold the
-- serving realtime version's manifest and horizon (serving reads segments before it either way).
-- Times are INTEGER UTC ms.
CREATE TABLE realtime_versions (
    view             TEXT    NOT NULL,
    realtime_version INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    segment_version  INTEGER,
    segment_horizon  INTEGER,
    created_at       INTEGER NOT NULL,
    retired_at       INTEGER,
    PRIMARY KEY (view, realtime_version)
);
