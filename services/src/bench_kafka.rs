//! The Kafka path of `prism bench`: produce throughput through the HTTP ingest API into Kafka,
//! the speed layer's throughput from Kafka, and end-to-end latency from an accepted
//! `POST /v1/events/quotes` to the event being visible in `GET /v1/bars`.
//!
//! The ingest and serving APIs run in this process on loopback ports, exactly as the
//! `ingest-api` and `serving` services do; the broker and the view store are the ones given.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use prism_core::config::{speed_consumer, Architecture};
use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, DLQ_TOPIC, QUOTES_TOPIC};
use prism_core::log::kafka::{KafkaLog, KafkaLogConfig};
use prism_core::log::EventLog;
use prism_core::store::ViewStore;
use prism_ingest::http::IngestState;
use prism_serving::ServingState;
use prism_speed::{run_speed_layer, SpeedConfig};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bench::{stage, StageResult};

/// What the Kafka path measured.
#[derive(Debug, Serialize)]
pub struct KafkaReport {
    /// The broker as the operator named it (e.g. `tansu 0.6.0`), and its address: a test broker
    /// is not a production Kafka, so say which one was measured.
    pub broker: String,
    /// librdkafka's version.
    pub librdkafka: String,
    /// `ingest_api_produce`, `speed_layer_from_kafka` and `replay` (version 2 of the view rebuilt
    /// from offset 0 of the Kafka topic, until the switch).
    pub stages: Vec<StageResult>,
    /// Accepted POST → visible in `GET /v1/bars`, milliseconds.
    pub end_to_end_latency_ms: LatencyReport,
}

/// Latency percentiles over the samples.
#[derive(Debug, Serialize)]
pub struct LatencyReport {
    /// Samples taken.
    pub samples: usize,
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
}

/// Where to measure.
pub struct KafkaBench<'a> {
    /// Bootstrap servers.
    pub brokers: &'a str,
    /// Name and version of the broker, for the report.
    pub broker_name: &'a str,
    /// View store URL (a fresh database); `None`: a SQLite file in `dir`.
    pub database_url: Option<&'a str>,
    /// Delete `prism.quotes` and `prism.dlq` first (test brokers only).
    pub reset_topics: bool,
    /// Partitions of `prism.quotes`.
    pub partitions: i32,
    /// Working folder.
    pub dir: &'a std::path::Path,
    /// Latency samples.
    pub latency_samples: usize,
}

/// Runs the Kafka path over `quotes`. Errors: unreachable dependencies, a non-empty topic or
/// store without `reset_topics`, failed requests.
pub async fn run_kafka_bench(b: KafkaBench<'_>, quotes: &[Quote]) -> anyhow::Result<KafkaReport> {
    let log = Arc::new(KafkaLog::connect(KafkaLogConfig::new(b.brokers)).await.with_context(|| format!("reaching {}", b.brokers))?);
    if b.reset_topics {
        log.delete_topics(&[QUOTES_TOPIC, DLQ_TOPIC]).await?;
    }
    log.ensure_topic(QUOTES_TOPIC, b.partitions).await?;
    log.ensure_topic(DLQ_TOPIC, 1).await?;
    let existing: i64 = log.end_offsets(QUOTES_TOPIC).await?.iter().sum();
    if existing > 0 {
        bail!("{QUOTES_TOPIC} on {} already holds {existing} events; the benchmark needs it empty: pass --kafka-reset-topics (test brokers only)", b.brokers);
    }
    let store = match b.database_url {
        Some(url) => ViewStore::open_url(url, Duration::from_secs(10)).await?,
        None => ViewStore::open_sqlite(&b.dir.join("kafka-views.sqlite")).await?,
    };
    let views = prism_core::view::ViewRegistry::standard(prism_core::window::DEFAULT_ALLOWED_LATENESS_MS);
    let view = views.ohlcv("ohlcv").context("the ohlcv view is registered")?;
    let consumer = speed_consumer(prism_core::view::View::name(&*view), 1);
    if !store.consumer_offsets(&consumer, QUOTES_TOPIC).await?.is_empty() {
        bail!("the view store already holds speed-layer offsets; give the benchmark a fresh database");
    }

    // The ingest and serving APIs, on loopback.
    let stop = CancellationToken::new();
    let ingest = prism_ingest::http::router(IngestState::new(log.clone(), store.clone(), std::time::Duration::from_secs(3600)), 64 << 20);
    let serving = prism_serving::router(ServingState {
        store: store.clone(),
        log: log.clone(),
        architecture: Architecture::Lambda,
        views: views.clone(),
        segments: None,
        batch_trigger: None,
        replays: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, ingest.merge(serving)).with_graceful_shutdown(async move { server_stop.cancelled().await }).await
    });
    let client = crate::http_client();

    let mut stages = Vec::new();
    let started = Instant::now();
    for chunk in quotes.chunks(5_000) {
        let body: Vec<u8> = chunk
            .iter()
            .flat_map(|q| {
                let mut line = q.to_json();
                line.push(b'\n');
                line
            })
            .collect();
        let r = client.post(format!("{base}/v1/events/quotes")).body(body).send().await?;
        if r.status().as_u16() != 202 {
            bail!("ingest answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        }
    }
    stages.push(stage("ingest_api_produce", quotes.len() as u64, started.elapsed()));
    let ends = log.end_offsets(QUOTES_TOPIC).await?;

    let started = Instant::now();
    let speed_stop = CancellationToken::new();
    let speed = tokio::spawn(run_speed_layer(
        view.clone(),
        SpeedConfig { partitions: b.partitions, commit_interval: Duration::from_millis(20), ..SpeedConfig::default() },
        log.clone(),
        store.clone(),
        speed_stop.clone(),
    ));
    crate::bench::wait_for_consumer(&store, &consumer, &ends).await?;
    stages.push(stage("speed_layer_from_kafka", quotes.len() as u64, started.elapsed()));

    // Latency: one trade at a time, each in a window of its own, polled until served.
    let mut latencies = Vec::with_capacity(b.latency_samples);
    let base_ts = quotes.iter().map(|q| q.ts).max().unwrap_or(0) + 3_600_000;
    for i in 0..b.latency_samples {
        let q = Quote {
            symbol: "LATENCY".into(),
            ts: base_ts + i as i64 * 60_000,
            price: Decimal6::from_units(1_000_000 + i as i128),
            size: 1,
            bid: None,
            ask: None,
            exchange: None,
        };
        let sent = Instant::now();
        let r = client.post(format!("{base}/v1/events/quotes")).body(q.to_json()).send().await?;
        if r.status().as_u16() != 202 {
            bail!("ingest answered {}", r.status());
        }
        // `from`/`to` select bars by start: ask for the minute that holds the trade.
        let minute = prism_core::window::window_start(q.ts, prism_core::time::MINUTE_MS);
        let url = format!("{base}/v1/bars/LATENCY?interval=1m&from={minute}&to={minute}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let resp = client.get(&url).send().await?;
            if resp.status().is_success() {
                let body: serde_json::Value = resp.json().await?;
                if body["bars"].as_array().is_some_and(|bars| !bars.is_empty()) {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("a posted event did not become visible within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    speed_stop.cancel();
    speed.await??;
    // The replay of version 2 from offset 0 of the Kafka topic (every event above, with the
    // latency probes).
    let events: i64 = log.end_offsets(QUOTES_TOPIC).await?.iter().sum();
    let segments = prism_batch::master::MasterDataset::local(&b.dir.join("kafka-replay-segments"))?.location().clone();
    stages.push(crate::bench::replay_stage(view.clone(), log.clone(), store.clone(), b.partitions, events as u64, segments).await?);
    stop.cancel();
    server.await??;
    store.close().await;

    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    Ok(KafkaReport {
        broker: format!("{} at {}", b.broker_name, b.brokers),
        librdkafka: rdkafka::util::get_rdkafka_version().1,
        stages,
        end_to_end_latency_ms: LatencyReport {
            samples: latencies.len(),
            p50: pct(0.5),
            p99: pct(0.99),
            max: latencies.last().copied().unwrap_or(0.0),
        },
    })
}
