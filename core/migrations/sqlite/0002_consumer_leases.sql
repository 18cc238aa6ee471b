-- Which instance of a consumer owns each partition (consumer-group scale-out). Every claim bumps
-- the epoch; a commit must hold the current epoch of every partition it writes, so an instance
-- that lost a partition in a rebalance (or a paused "zombie") can no longer commit for it.
-- renewed_at: the owner's last commit or heartbeat (a partition whose owner went silent is
-- orphaned).
-- claimed_at, renewed_at: UTC ms since the epoch.
CREATE TABLE consumer_leases (
    consumer   TEXT    NOT NULL,
    topic      TEXT    NOT NULL,
    partition  INTEGER NOT NULL,
    epoch      INTEGER NOT NULL,
    owner      TEXT    NOT NULL,
    claimed_at INTEGER NOT NULL,
    renewed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);
