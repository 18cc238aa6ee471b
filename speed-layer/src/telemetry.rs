//! Every metric the speed layer emits, named once. Each carries a `view` label.

/// Records consumed from the view's source topic (valid or not).
pub const EVENTS_TOTAL: &str = "prism_speed_events_total";
/// Events behind the watermark when they arrived (applied anyway; the batch job corrects).
pub const LATE_EVENTS_TOTAL: &str = "prism_speed_late_events_total";
/// Malformed records sent to `prism.dlq`.
pub const DEAD_LETTERS_TOTAL: &str = "prism_speed_dead_letters_total";
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
