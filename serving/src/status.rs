//! `GET /v1/status`: where every layer stands.

use axum::extract::State;
use axum::Json;
use prism_core::event::QUOTES_TOPIC;
use prism_core::log::EventLog;
use prism_core::time::format_rfc3339;
use prism_core::view::View;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bars::realtime_watermark;
use crate::error::ApiError;
use crate::ServingState;
use prism_core::config::Architecture;

/// Answer of `/v1/status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    /// `lambda` or `kappa`.
    pub architecture: String,
    /// Published batch horizon of the `ohlcv` view, RFC 3339 (null in Kappa mode).
    pub batch_horizon: Option<String>,
    /// Published batch-view version of the `ohlcv` view (null in Kappa mode).
    pub batch_version: Option<i64>,
    /// Segment horizon of the `ohlcv` view, RFC 3339: the batch horizon (Lambda) or the Kappa
    /// hand-off's.
    pub segment_horizon: Option<String>,
    /// Realtime version of the `ohlcv` view in service.
    pub realtime_version: i64,
    /// Realtime watermark of the `ohlcv` view, RFC 3339.
    pub realtime_watermark: Option<String>,
    /// Every registered view's versions.
    pub views: Vec<ViewStatus>,
    /// Per partition of `prism.quotes` and of every registered view's source topic (`topic` says
    /// which): log end offset and each consumer's position and lag.
    pub partitions: Vec<PartitionStatus>,
    /// Events accepted and refused per ingest source.
    pub ingest: Vec<IngestStatus>,
    /// Historical feeds' progress.
    pub feeds: Vec<FeedStatus>,
    /// Replays this process runs or ran since it started, with their progress (what
    /// `GET /v1/admin/replays` answers); empty where no speed layer runs in the process (a
    /// `prism serving` of a distributed deployment).
    pub replays: Vec<crate::replays::Replay>,
}

/// Where one view stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ViewStatus {
    /// Registered name.
    pub view: String,
    /// The running code's definition fingerprint.
    pub fingerprint: String,
    /// Published batch-view version (Lambda mode; null in Kappa mode).
    pub batch_version: Option<i64>,
    /// Its batch horizon, RFC 3339 (Lambda mode; null in Kappa mode).
    pub batch_horizon: Option<String>,
    /// Segments in the served manifest: the batch version's (Lambda) or the hand-off's (Kappa).
    pub batch_segments: usize,
    /// The served segment manifest: the batch version (Lambda) or the Kappa hand-off manifest.
    pub segment_version: Option<i64>,
    /// Windows before it are served from segments, RFC 3339.
    pub segment_horizon: Option<String>,
    /// Realtime version in service.
    pub realtime_version: i64,
    /// Realtime watermark, RFC 3339.
    pub realtime_watermark: Option<String>,
}

/// One partition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset the next record will get.
    pub log_end_offset: i64,
    /// Consumers with committed offsets here.
    pub consumers: Vec<ConsumerLag>,
}

/// A consumer's position in one partition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsumerLag {
    /// Consumer name (`speed-layer.ohlcv.v1`, `archiver`, …).
    pub consumer: String,
    /// Next offset it will read.
    pub next_offset: i64,
    /// Records behind the log end.
    pub lag: i64,
    /// The instance holding this partition's lease (consumers that split partitions among
    /// instances, like the speed layer); absent for consumers without leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the owner last committed (every commit renews its lease), RFC 3339 UTC. A lease
    /// that stops being renewed belongs to an instance that died or stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_renewed_at: Option<String>,
}

/// One ingest source's counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestStatus {
    /// `http` or `feed`.
    pub source: String,
    /// Events appended.
    pub accepted: i64,
    /// Events or rows refused.
    pub refused: i64,
}

/// One historical feed's progress.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeedStatus {
    /// Feed identity.
    pub feed_id: String,
    /// Trading days appended.
    pub days_done: i64,
    /// Trading days in the input.
    pub days_total: i64,
    /// Date of the last day appended.
    pub feed_date: Option<String>,
    /// Input rows refused.
    pub rows_refused: i64,
    /// All input appended.
    pub done: bool,
}

async fn view_status<L: EventLog, V: View>(state: &ServingState<L>, view: &V) -> Result<ViewStatus, ApiError> {
    let pointer = state.store.view_pointer(view.name()).await?;
    let watermark = realtime_watermark(&state.store, view, pointer.realtime_version).await?;
    let batch_segments = match pointer.batch_version {
        Some(version) => state.store.batch_segments(view.name(), version).await?.len(),
        None => 0,
    };
    let lambda = state.architecture == Architecture::Lambda;
    Ok(ViewStatus {
        view: view.name().to_string(),
        fingerprint: view.fingerprint(),
        batch_version: pointer.batch_version.filter(|_| lambda),
        batch_horizon: pointer.batch_horizon_ms.filter(|_| lambda).map(format_rfc3339),
        batch_segments,
        segment_version: pointer.batch_version,
        segment_horizon: pointer.batch_horizon_ms.map(format_rfc3339),
        realtime_version: pointer.realtime_version,
        realtime_watermark: watermark.map(format_rfc3339),
    })
}

/// Where every layer stands.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "admin",
    responses((status = 200, description = "Status", body = StatusResponse), (status = 500, description = "Internal failure", body = ApiError), (status = 503, description = "A dependency is unavailable", body = ApiError))
)]
pub async fn get_status<L: EventLog>(State(state): State<ServingState<L>>) -> Result<Json<StatusResponse>, ApiError> {
    let mut views = Vec::new();
    for v in state.views.views() {
        views.push(prism_core::with_view!(v, view => view_status(&state, &**view).await?));
    }
    let main = views.iter().find(|v| v.view == "ohlcv").or(views.first());
    let (batch_horizon, batch_version, segment_horizon, realtime_version, realtime_watermark) = match main {
        Some(v) => (v.batch_horizon.clone(), v.batch_version, v.segment_horizon.clone(), v.realtime_version, v.realtime_watermark.clone()),
        None => (None, None, None, 1, None),
    };
    // Sources' progress first, the log's ends after: an answer saying a feed is done then shows
    // every event that feed appended in the log end offsets (and in the lag).
    let ingest = state
        .store
        .ingest_counters()
        .await?
        .into_iter()
        .map(|c| IngestStatus { source: c.source, accepted: c.accepted, refused: c.refused })
        .collect();
    let feeds = state
        .store
        .feed_checkpoints()
        .await?
        .into_iter()
        .map(|c| FeedStatus {
            feed_id: c.feed_id,
            days_done: c.days_done,
            days_total: c.days_total,
            feed_date: c.feed_date,
            rows_refused: c.rows_refused,
            done: c.done,
        })
        .collect();
    // Every topic a layer consumes: prism.quotes, and each registered view's source.
    let mut topics: Vec<&str> = vec![QUOTES_TOPIC];
    for v in state.views.views() {
        if !topics.contains(&v.source_topic()) {
            topics.push(v.source_topic());
        }
    }
    let mut partitions = Vec::new();
    for topic in topics {
        let ends = state.log.end_offsets(topic).await?;
        let consumers = state.store.all_consumer_offsets(topic).await?;
        let leases = state.store.leases(topic).await?;
        let lease = |consumer: &str, partition: i32| leases.iter().find(|l| l.consumer == consumer && l.partition == partition);
        partitions.extend(ends.iter().enumerate().map(|(p, end)| {
            PartitionStatus {
                topic: topic.to_string(),
                partition: p as i32,
                log_end_offset: *end,
                consumers: consumers
                    .iter()
                    .filter(|(_, o)| o.partition == p as i32)
                    .map(|(name, o)| ConsumerLag {
                        consumer: name.clone(),
                        next_offset: o.next_offset,
                        lag: end - o.next_offset,
                        owner: lease(name, o.partition).map(|l| l.owner.clone()),
                        owner_renewed_at: lease(name, o.partition).map(|l| format_rfc3339(l.renewed_at_ms)),
                    })
                    // A partition claimed (leased) but never committed: its owner starts at 0.
                    .chain(
                        leases
                            .iter()
                            .filter(|l| l.partition == p as i32)
                            .filter(|l| !consumers.iter().any(|(name, o)| *name == l.consumer && o.partition == l.partition))
                            .map(|l| ConsumerLag {
                                consumer: l.consumer.clone(),
                                next_offset: 0,
                                lag: *end,
                                owner: Some(l.owner.clone()),
                                owner_renewed_at: Some(format_rfc3339(l.renewed_at_ms)),
                            }),
                    )
                    .collect(),
            }
        }));
    }
    let replays = if state.replays.is_some() { crate::replays::list_all(&state).await? } else { Vec::new() };
    Ok(Json(StatusResponse {
        architecture: state.architecture.name().to_string(),
        batch_horizon,
        batch_version,
        segment_horizon,
        realtime_version,
        realtime_watermark,
        views,
        partitions,
        ingest,
        feeds,
        replays,
    }))
}
