//! Every metric the speed layer emits, named once. Each carries a `view` label.

/// Records consumed from the view's source topic (valid or not).
pub const EVENTS_TOTAL: &str = "prism_speed_events_total";
/// Events behind the watermark when they arrived (applied anyway; the batch job corrects).
pub const LATE_EVENTS_TOTAL: &str = "prism_speed_late_events_total";
/// Events skipped because their base window starts before the segment horizon: in Lambda mode the
/// published batch horizon (served from the batch view only); in Kappa mode the hand-off
/// horizon (late beyond the allowed lateness: not applied).
pub const BEHIND_HORIZON_EVENTS_TOTAL: &str = "prism_speed_behind_horizon_events_total";
/// Malformed records sent to `prism.dlq`.
pub const DEAD_LETTERS_TOTAL: &str = "prism_speed_dead_letters_total";
/// Gauge: log end offset − next offset to read, per view and partition (owned by this instance).
pub const CONSUMER_LAG_EVENTS: &str = "prism_speed_consumer_lag_events";
/// Histogram: seconds from the log append of the oldest event a commit covers to that commit.
pub const END_TO_END_SECONDS: &str = "prism_speed_end_to_end_seconds";
/// Counter: redelivered changes dropped (sequence not above the entity's last), by view.
pub const DUPLICATE_EVENTS_TOTAL: &str = "prism_speed_duplicate_events_total";
/// Store transactions committed (rows + offsets).
pub const COMMITS_TOTAL: &str = "prism_speed_commits_total";
/// Duration of one commit, seconds.
pub const COMMIT_SECONDS: &str = "prism_speed_commit_seconds";
/// The realtime watermark, UTC ms.
pub const WATERMARK_MS: &str = "prism_speed_watermark_ms";
/// Rows (every interval) held in memory across all partitions' caches.
pub const CACHED_WINDOWS: &str = "prism_speed_cached_windows";
/// Partitions of the view's source topic this instance owns now.
pub const ASSIGNED_PARTITIONS: &str = "prism_speed_assigned_partitions";
/// Consumer-group assignments received (each one claims partitions).
pub const REBALANCES_TOTAL: &str = "prism_speed_rebalances_total";
/// Commits refused because another instance claimed a partition's lease (fencing).
pub const FENCED_COMMITS_TOTAL: &str = "prism_speed_fenced_commits_total";
/// Times this instance left and rejoined its consumer group because partitions stayed orphaned.
pub const GROUP_REJOINS_TOTAL: &str = "prism_speed_group_rejoins_total";

/// Kappa hand-off passes that published a manifest.
pub const HANDOFFS_TOTAL: &str = "prism_speed_handoffs_total";
/// Events a fresh Kappa version folded in bulk straight into segments ([`crate::bulk`]).
pub const BULK_EVENTS_TOTAL: &str = "prism_speed_bulk_events_total";
/// Kappa hand-off passes that failed (retried at the next interval).
pub const HANDOFF_FAILURES_TOTAL: &str = "prism_speed_handoff_failures_total";
/// The Kappa segment horizon: windows before it are served from hand-off segments, UTC ms.
pub const SEGMENT_HORIZON_MS: &str = "prism_speed_segment_horizon_ms";

/// Replays started.
pub const REPLAYS_TOTAL: &str = "prism_replays_total";
/// Replays that caught up and switched serving to their version.
pub const REPLAY_SWITCHES_TOTAL: &str = "prism_replay_switches_total";
/// Events the running replay has consumed (committed).
pub const REPLAY_EVENTS_DONE: &str = "prism_replay_events_done";
/// Events in the source topic while the replay runs (log end offsets, summed).
pub const REPLAY_EVENTS_TOTAL: &str = "prism_replay_events_total";
/// The running replay's lag, events.
pub const REPLAY_LAG_EVENTS: &str = "prism_replay_lag_events";
/// The running replay's recent rate, events/s.
pub const REPLAY_EVENTS_PER_SECOND: &str = "prism_replay_events_per_second";

/// Registers the HELP text of every speed-layer metric with the installed recorder (a no-op
/// without one; calling it again is harmless). The speed layer calls it when it starts.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS_TOTAL, "Records the speed layer consumed from the view's source topic (valid or not).");
    describe_counter!(LATE_EVENTS_TOTAL, "Events behind their partition's watermark when they arrived (applied anyway).");
    describe_counter!(
        BEHIND_HORIZON_EVENTS_TOTAL,
        "Events skipped because their window starts before the segment horizon (Lambda: served from the batch view; Kappa: late beyond the allowed lateness, not applied)."
    );
    describe_counter!(DEAD_LETTERS_TOTAL, "Malformed records the speed layer sent to the dead-letter topic.");
    describe_gauge!(
        CONSUMER_LAG_EVENTS,
        "Records of the view's source topic not read yet by this speed layer: log end offset minus next offset, per partition."
    );
    describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "End-to-end latency: from the log append of the oldest event a speed-layer commit covers to that commit (the event is then served)."
    );
    describe_counter!(
        DUPLICATE_EVENTS_TOTAL,
        "Redelivered changes dropped: their sequence (commit LSN, LSN) was not above the last one applied for their row."
    );
    describe_counter!(COMMITS_TOTAL, "Store transactions the speed layer committed (realtime rows and offsets together).");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Duration of one speed-layer commit.");
    describe_gauge!(WATERMARK_MS, Unit::Milliseconds, "The realtime watermark, UTC milliseconds since the epoch.");
    describe_gauge!(CACHED_WINDOWS, "Realtime rows (every interval) held in memory across the owned partitions' caches.");
    describe_gauge!(ASSIGNED_PARTITIONS, "Partitions of the view's source topic this instance owns.");
    describe_counter!(REBALANCES_TOTAL, "Consumer-group assignments received.");
    describe_counter!(FENCED_COMMITS_TOTAL, "Commits refused because another instance claimed a partition's lease.");
    describe_counter!(HANDOFFS_TOTAL, "Kappa hand-off passes that published finalized windows as segments.");
    describe_counter!(BULK_EVENTS_TOTAL, "Events a fresh Kappa realtime version (a replay) folded in bulk straight into segments.");
    describe_counter!(HANDOFF_FAILURES_TOTAL, "Kappa hand-off passes that failed (retried at the next interval).");
    describe_gauge!(
        SEGMENT_HORIZON_MS,
        Unit::Milliseconds,
        "Kappa segment horizon: windows before it are served from hand-off segments, UTC ms."
    );
    describe_counter!(REPLAYS_TOTAL, "Replays started (a new realtime version built from offset 0 of the log).");
    describe_counter!(REPLAY_SWITCHES_TOTAL, "Replays that caught up and switched serving to their version.");
    describe_gauge!(REPLAY_EVENTS_DONE, "Events the running replay has consumed and committed.");
    describe_gauge!(REPLAY_EVENTS_TOTAL, "Events in the source topic while the replay runs (log end offsets, summed).");
    describe_gauge!(REPLAY_LAG_EVENTS, "Events the running replay still has to consume.");
    describe_gauge!(REPLAY_EVENTS_PER_SECOND, "The running replay's recent rate, events per second.");
    describe_counter!(GROUP_REJOINS_TOTAL, "Times this instance left and rejoined its group because partitions stayed orphaned.");
}
