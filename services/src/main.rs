//! `prism`: the Prism platform's one binary. See `prism --help`.

use clap::{Parser, Subcommand};

mod allocator;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Prism: a reference platform for the Lambda and Kappa architectures.
#[derive(Parser)]
#[command(name = "prism", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every layer in one process on embedded defaults, fed by the stock-quote lab.
    // Boxed: by far the largest flag set (clippy::large_enum_variant).
    Up(Box<prism::up::UpConfig>),
    /// HTTP ingest into Kafka (distributed deployment).
    IngestApi(prism::micro::IngestApiConfig),
    /// Capture a PostgreSQL database's changes into Kafka (`prism.cdc.<db>.<schema>.<table>`).
    IngestCdc(prism::sources::IngestCdcConfig),
    /// Tail access-log files into Kafka (`prism.access_logs`).
    IngestLogs(prism::sources::IngestLogsConfig),
    /// Poll a JSON quote API into Kafka (`prism.quotes`).
    QuotePoller(prism::sources::QuotePollerConfig),
    /// Serve a simulated exchange quote API (random walks) for the quote poller to poll.
    QuoteSim(prism::sources::QuoteSimConfig),
    /// Replay daily-bar files (the stock-quote lab by default) as trades into Kafka.
    Feed(prism::sources::FeedServiceConfig),
    /// Exit 0 when a URL (a service's /readyz) answers 2xx: container healthchecks.
    Healthcheck(prism::sources::HealthcheckArgs),
    /// The speed layer: Kafka → realtime views in PostgreSQL.
    SpeedLayer(prism::micro::SpeedLayerConfig),
    /// The archiver: Kafka → the Parquet master dataset.
    Archiver(prism::micro::ArchiverServiceConfig),
    /// The batch layer: the master dataset → batch views in PostgreSQL.
    BatchLayer(prism::micro::BatchLayerConfig),
    /// The serving layer: the query API over PostgreSQL.
    Serving(prism::micro::ServingServiceConfig),
    /// Measure the layers' throughput and print a JSON report.
    Bench(prism::bench::BenchConfig),
    /// Measure the stock-quote lab end to end (catch-up, batch runs, query latency, RSS) and
    /// print a JSON report.
    BenchLab(prism::bench_lab::LabBenchConfig),
    /// Rebuild views from the log into a new version and switch over (asks a running Prism;
    /// shows progress until the switch).
    Replay(prism::replay_cli::ReplayArgs),
    /// Print the OpenAPI document (the committed docs/openapi.json is this output).
    Openapi,
}

fn main() -> std::process::ExitCode {
    allocator::tune();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("PRISM_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(config) => prism::up::run_up(*config, signal_token(), None).await,
            Command::IngestApi(config) => prism::micro::run_ingest_api(config, signal_token()).await,
            Command::IngestCdc(config) => prism::sources::run_ingest_cdc(config, signal_token()).await,
            Command::IngestLogs(config) => prism::sources::run_ingest_logs(config, signal_token()).await,
            Command::QuotePoller(config) => prism::sources::run_quote_poller(config, signal_token()).await,
            Command::QuoteSim(config) => prism::sources::run_quote_sim(config, signal_token()).await,
            Command::Feed(config) => prism::sources::run_feed_service(config, signal_token()).await,
            Command::Healthcheck(args) => prism::sources::run_healthcheck(args).await,
            Command::SpeedLayer(config) => prism::micro::run_speed_layer_service(config, signal_token()).await,
            Command::Archiver(config) => prism::micro::run_archiver_service(config, signal_token()).await,
            Command::BatchLayer(config) => prism::micro::run_batch_layer_service(config, signal_token()).await,
            Command::Serving(config) => prism::micro::run_serving_service(config, signal_token()).await,
            Command::BenchLab(config) => {
                let report = prism::bench_lab::run_lab_bench(config).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Command::Bench(config) => {
                let report = prism::bench::run_bench(config).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Command::Replay(args) => prism::replay_cli::run_replay(args, signal_token()).await,
            Command::Openapi => {
                println!("{}", prism::app::api_doc().to_pretty_json()?);
                Ok(())
            }
        }
    })
}

/// A token that SIGINT or SIGTERM cancels.
fn signal_token() -> CancellationToken {
    let token = CancellationToken::new();
    tokio::spawn(stop_on_signal(token.clone()));
    token
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn stop_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops prism");
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    /// clap's own consistency checks over every subcommand: a flag declared twice by two
    /// flattened `Args` structs (or two env fallbacks clashing) fails here.
    #[test]
    fn every_subcommand_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn layer_flags_reach_their_structs() {
        let cli = Cli::try_parse_from([
            "prism",
            "up",
            "--partitions",
            "3",
            "--batch-interval",
            "5m",
            "--commit-max-events",
            "7",
            "--no-feed",
            "--max-body-bytes",
            "1024",
        ])
        .expect("flags parse");
        let Command::Up(up) = cli.command else { panic!("not up") };
        assert_eq!(up.deployment.partitions, 3);
        assert_eq!(up.batch.batch_interval, std::time::Duration::from_secs(300));
        assert_eq!(up.speed.commit_max_events, 7);
        assert!(up.feed.no_feed);
        assert_eq!(up.ingest.max_body_bytes, 1024);

        let cli = Cli::try_parse_from([
            "prism",
            "batch-layer",
            "--kafka-brokers",
            "127.0.0.1:9092",
            "--database-url",
            "postgres://u@127.0.0.1/db",
            "--master-dataset",
            "s3://bucket/prefix",
            "--no-batch-on-catch-up",
        ])
        .expect("flags parse");
        let Command::BatchLayer(batch) = cli.command else { panic!("not batch-layer") };
        assert_eq!(batch.master.master_dataset, "s3://bucket/prefix");
        assert!(batch.batch.no_batch_on_catch_up);
        assert!(Cli::try_parse_from(["prism", "up", "--batch-interval", "soon"]).is_err());
    }

    #[test]
    fn quote_flags_reach_their_structs() {
        let url = "http://127.0.0.1:8090/v1/quotes/{symbol}";
        let cli =
            Cli::try_parse_from(["prism", "up", "--no-feed", "--poll-url", url, "--poll-symbols", "AAPL,MSFT", "--poll-interval", "250ms"])
                .expect("flags parse");
        let Command::Up(up) = cli.command else { panic!("not up") };
        assert!(up.poll.enabled() && !up.logs.tail.iter().any(|t| !t.is_empty()));
        assert_eq!(
            (up.poll.poll_symbols, up.poll.poll_interval),
            (vec!["AAPL".to_string(), "MSFT".to_string()], std::time::Duration::from_millis(250))
        );
        let Command::Up(up) = Cli::try_parse_from(["prism", "up"]).expect("flags parse").command else { panic!("not up") };
        assert!(!up.poll.enabled(), "no poller without --poll-url");

        let deps = ["--kafka-brokers", "127.0.0.1:9092", "--database-url", "postgres://u@127.0.0.1/db"];
        let args = ["prism", "quote-poller"].into_iter().chain(deps).chain(["--poll-url", url, "--poll-symbols", "AAPL"]);
        let Command::QuotePoller(poller) = Cli::try_parse_from(args).expect("flags parse").command else { panic!("not quote-poller") };
        assert_eq!(poller.http_addr.to_string(), "127.0.0.1:8086");
        assert_eq!(poller.data_dir, std::path::PathBuf::from("./prism-quote-poller"));
        assert_eq!(poller.poll.poll_url.as_deref(), Some(url));

        let cli = Cli::try_parse_from(["prism", "quote-sim", "--sim-step", "200ms", "--sim-seed", "7"]).expect("flags parse");
        let Command::QuoteSim(sim) = cli.command else { panic!("not quote-sim") };
        assert_eq!(
            (sim.http_addr.to_string(), sim.sim.sim_seed, sim.sim.sim_step),
            ("127.0.0.1:8090".to_string(), 7, std::time::Duration::from_millis(200))
        );
        assert_eq!(sim.sim.sim_symbols, ["AAPL", "MSFT", "GOOG", "IBM", "FB"]);
    }

    /// Under `--architecture kappa` the archiver and the batch layer refuse to start, with a
    /// message saying why, before they connect to anything.
    #[tokio::test]
    async fn kappa_refuses_the_batch_layer_services() {
        let deps = ["--kafka-brokers", "127.0.0.1:1", "--database-url", "postgres://u@127.0.0.1:1/db", "--architecture", "kappa"];
        let parse = |service: &str| Cli::try_parse_from(["prism", service].into_iter().chain(deps)).expect("flags parse").command;
        let stop = tokio_util::sync::CancellationToken::new();
        let Command::Archiver(archiver) = parse("archiver") else { panic!("not archiver") };
        let refused = prism::micro::run_archiver_service(archiver, stop.clone()).await.expect_err("refused");
        assert!(refused.to_string().contains("archiver does not run in a kappa deployment"), "{refused}");
        let Command::BatchLayer(batch) = parse("batch-layer") else { panic!("not batch-layer") };
        let refused = prism::micro::run_batch_layer_service(batch, stop).await.expect_err("refused");
        assert!(refused.to_string().contains("batch-layer does not run in a kappa deployment"), "{refused}");
    }
}
