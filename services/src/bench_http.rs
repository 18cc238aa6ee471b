//! `prism bench`'s `http_ingest` stage (issue 11, target 3): durable HTTP ingest into the
//! embedded log under concurrent clients.
//!
//! [`CLIENTS`] clients at once POST NDJSON batches of [`LINES_PER_REQUEST`] quotes to
//! `POST /v1/events/quotes` of the ingest API (as `prism up` serves it) on a fresh embedded log
//! with `fsync=interval`; a `202` means the batch is in the log's files. The bodies are made
//! before the clock starts (at most [`MAX_EVENTS`] events of the workload, so the stage's memory
//! stays small); the stage is timed from the first request to the last answer, and checks that
//! the log holds every event.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use prism_core::event::{DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
use prism_core::log::EventLog;
use prism_core::store::ViewStore;
use prism_ingest::http::IngestState;
use tokio_util::sync::CancellationToken;

use crate::bench::{stage, StageResult};
use crate::bench_workload::Workload;
use crate::up::DataDir;

/// Concurrent clients.
pub const CLIENTS: usize = 8;
/// Quotes per request.
pub const LINES_PER_REQUEST: usize = 1_000;
/// At most this many events of the workload are posted.
pub const MAX_EVENTS: usize = 1_000_000;

/// Runs the stage in `dir` (a fresh log and view store) with the first events of `workload`.
///
/// Errors: the log, the store or the server fails, or an answer is not `202`.
pub(crate) async fn http_ingest_stage(dir: &Path, mut workload: Workload, partitions: i32) -> anyhow::Result<StageResult> {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut events = 0usize;
    while events < MAX_EVENTS {
        let chunk = workload.next_chunk()?;
        if chunk.is_empty() {
            break;
        }
        let take = chunk.len().min(MAX_EVENTS - events);
        for part in chunk[..take].chunks(LINES_PER_REQUEST) {
            let mut body = Vec::with_capacity(part.len() * 80);
            for q in part {
                body.extend_from_slice(&q.to_json());
                body.push(b'\n');
            }
            bodies.push(body);
        }
        events += take;
    }
    if events == 0 {
        bail!("the workload has no events");
    }

    let dirs = DataDir::new(dir);
    let log = Arc::new(EmbeddedLog::open(
        &dirs.log,
        EmbeddedLogConfig { fsync: FsyncPolicy::Interval(Duration::from_secs(1)), ..Default::default() },
    )?);
    log.ensure_topic(QUOTES_TOPIC, partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let store = ViewStore::open_sqlite(&dirs.store).await?;
    let app = prism_ingest::http::router(IngestState::new(log.clone(), store.clone(), Duration::from_secs(3600)), 64 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/events/quotes", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await }
    });

    let client = crate::http_client();
    let mut shares: Vec<Vec<Vec<u8>>> = (0..CLIENTS).map(|_| Vec::new()).collect();
    for (i, body) in bodies.into_iter().enumerate() {
        shares[i % CLIENTS].push(body);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            for body in share {
                let r = client.post(&url).header("content-type", "application/x-ndjson").body(body).send().await?;
                let status = r.status();
                // Read to the end, as a client that keeps its connection does: an answer dropped
                // unread closes the connection, and the next request pays a new one.
                let answer = r.bytes().await?;
                if status.as_u16() != 202 {
                    bail!("ingest answered {status}: {}", String::from_utf8_lossy(&answer));
                }
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a client task failed")??;
    }
    let elapsed = started.elapsed();
    let appended: i64 = log.end_offsets(QUOTES_TOPIC).await?.iter().sum();
    stop.cancel();
    server.await.context("the ingest server task")??;
    store.close().await;
    if appended != events as i64 {
        bail!("the log holds {appended} events after {events} were accepted");
    }
    Ok(stage("http_ingest", events as u64, elapsed))
}
