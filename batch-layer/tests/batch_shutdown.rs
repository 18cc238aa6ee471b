//! Shutdown does not wait for a batch run in progress: the run is abandoned, nothing of it is
//! published, and whoever asked for it hears that it stopped. The run is held in progress by a
//! master dataset whose S3 endpoint accepts connections on 127.0.0.1 but never answers.

use std::sync::Arc;
use std::time::Duration;

use prism_batch::batch_job::{run_batch_layer, BatchConfig};
use prism_batch::master::MasterDataset;
use prism_core::config::ARCHIVER_CONSUMER;
use prism_core::event::QUOTES_TOPIC;
use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::{EventLog, NewRecord};
use prism_core::store::{ConsumerOffset, ViewStore};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_batch_run_in_progress_is_abandoned_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log"));
    log.ensure_topic(QUOTES_TOPIC, 1).await.expect("topic");
    log.append(QUOTES_TOPIC, vec![NewRecord::new("AAA", b"{}".to_vec())]).await.expect("append");
    let store = ViewStore::open_sqlite(&dir.path().join("views.sqlite")).await.expect("store");
    // The archiver has archived the one record: the batch job has a horizon and must read files.
    let archived = ConsumerOffset { partition: 0, next_offset: 1, max_event_ts_ms: Some(1_704_205_800_000) };
    store.commit_offsets(ARCHIVER_CONSUMER, QUOTES_TOPIC, &[archived]).await.expect("offsets");

    // An S3 endpoint that accepts and never answers (credentials set, so nothing else is asked).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    for (k, v) in [
        ("AWS_ENDPOINT", format!("http://{}", silent.local_addr().expect("addr"))),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ] {
        std::env::set_var(k, v);
    }
    let master = MasterDataset::open("s3://silent/master").expect("dataset");
    let config = BatchConfig { interval: Duration::from_secs(3600), ..BatchConfig::new(master) };
    let views = vec![prism_core::view::RegisteredView::Ohlcv(Arc::new(prism_core::view::ohlcv::OhlcvView::standard(5_000)))];

    let (trigger, mut requests) = tokio::sync::mpsc::channel(1);
    let stop = CancellationToken::new();
    let (l, s, c) = (log.clone(), store.clone(), stop.clone());
    let layer = tokio::spawn(async move { run_batch_layer(views, config, l, s, &mut requests, c).await });
    let (reply, answer) = tokio::sync::oneshot::channel();
    trigger.send(prism_core::batch_run::BatchRunRequest { full: false, reply }).await.expect("request a run");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!layer.is_finished(), "the run is in progress (its listing hangs)");

    stop.cancel();
    // A guard against hanging forever, far below the object store's own 30 s request timeout.
    let stopped = tokio::time::timeout(Duration::from_secs(10), layer).await.expect("the batch layer stops without finishing the run");
    stopped.expect("join").expect("a clean stop");
    assert!(answer.await.is_err(), "the requester hears that the run stopped, not a report");
    assert_eq!(store.view_pointer("ohlcv").await.expect("pointer").batch_version, None, "nothing was published");
    drop(silent);
}
