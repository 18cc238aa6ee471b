-- Realtime versions and replay (DESIGN §6). A replay builds realtime version v+1 of a view from
-- offset 0 while v serves (state 'replaying'), then switches the pointer to it ('serving'; v
-- becomes 'retired', a cancelled replay 'cancelled'; both 'expired' once their rows are deleted).
-- In Kappa mode each realtime version also hands its finalized windows off to
-- immutable segments. A hand-off manifest is a view_versions row of state 'handoff' (then
-- 'retired' and 'expired' like a batch version); realtime_versions says which manifest and which
-- segment horizon belong to each realtime version, so that a version being replayed keeps its
-- own until it is switched to. view_pointers' batch_version and batch_horizon then hold the
-- serving realtime version's manifest and horizon (serving reads segments before it either way).
-- Times are INTEGER UTC ms.
CREATE TABLE realtime_versions (
    view             TEXT        NOT NULL,
    realtime_version INTEGER     NOT NULL,
    state            TEXT        NOT NULL,
    fingerprint      TEXT,
    switch_lag       INTEGER,
    segment_version  INTEGER,
    segment_horizon  INTEGER,
    created_at       INTEGER     NOT NULL,
    retired_at       INTEGER,
    PRIMARY KEY (view, realtime_version)
);
