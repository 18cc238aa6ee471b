//! Settings shared by every service: the deployment's flags ([`DeploymentArgs`]), where the
//! master dataset lives ([`MasterDatasetArgs`]) and how durations are written on the command
//! line ([`parse_duration`]). Each layer's own flags are an `Args` struct in its crate
//! (`SpeedArgs`, `ArchiverArgs`, `BatchArgs`, `IngestArgs`, `FeedArgs`); the binary flattens them into `prism up`
//! and the microservices, so a flag is declared once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

use crate::view::ViewRegistry;

/// Flags every deployment shares, whichever processes run the layers (each with a `PRISM_*`
/// environment fallback).
#[derive(Debug, Clone, Args)]
pub struct DeploymentArgs {
    /// `lambda` (batch and speed layers merged at the batch horizon) or `kappa` (the speed layer
    /// only: no archiver and no batch job; reprocessing replays the log).
    #[arg(long, env = "PRISM_ARCHITECTURE", default_value = "lambda")]
    pub architecture: Architecture,
    /// Partitions of the source topics (`prism.quotes`) when they are created.
    #[arg(long, env = "PRISM_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Allowed lateness of event time, ms: how far behind the watermark an event may arrive and
    /// still count (part of every view's definition fingerprint).
    #[arg(long, env = "PRISM_ALLOWED_LATENESS_MS", default_value_t = 5_000)]
    pub allowed_lateness_ms: i64,
    /// The views the deployment runs, comma-separated: `ohlcv` (1-minute bars), `ohlcv_30s`
    /// (30-second bars). Every layer runs each one.
    #[arg(long, env = "PRISM_VIEWS", default_value = "ohlcv", value_delimiter = ',')]
    pub views: Vec<String>,
}

impl DeploymentArgs {
    /// Checks the values clap cannot: at least one partition and a non-negative lateness.
    /// Errors: a message naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions < 1 {
            return Err("--partitions must be at least 1".into());
        }
        if self.allowed_lateness_ms < 0 {
            return Err("--allowed-lateness-ms must not be negative".into());
        }
        self.registry().map(|_| ())
    }

    /// The views to run ([`ViewRegistry::from_names`]). Errors: `--views` names an unknown view.
    pub fn registry(&self) -> Result<ViewRegistry, String> {
        ViewRegistry::from_names(&self.views, self.allowed_lateness_ms).map_err(|e| format!("--views: {e}"))
    }
}

/// Where the master dataset (and, under its `segments/` prefix, the batch views' segments)
/// lives, for the services that share it: the archiver, the batch layer and serving.
#[derive(Debug, Clone, Args)]
pub struct MasterDatasetArgs {
    /// The master dataset: a local folder, `file:///path`, or `s3://bucket/prefix` (S3 settings
    /// from the standard `AWS_*` variables). Its `segments/` prefix holds the batch views.
    #[arg(long, env = "PRISM_MASTER_DATASET", default_value = "./prism-master")]
    pub master_dataset: String,
}

/// Parses a duration flag: `500ms`, `60s`, `5m`, `1h`, `1h 30m` (humantime's format). Errors:
/// a message naming the accepted forms; a zero duration is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| format!("duration {text:?}: {e} (use e.g. 500ms, 60s, 5m, 1h)"))?;
    if d.is_zero() {
        return Err(format!("duration {text:?} must be positive"));
    }
    Ok(d)
}

/// Which architecture a deployment runs (DESIGN §5, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Architecture {
    /// Batch layer + speed layer, merged at the batch horizon.
    #[default]
    Lambda,
    /// Speed layer only; reprocessing replays the log into a new view version.
    Kappa,
}

impl Architecture {
    /// `lambda` or `kappa`.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Lambda => "lambda",
            Architecture::Kappa => "kappa",
        }
    }
}

/// A component of a deployment: a layer's job, run in `prism up` or as a microservice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The archiver: the log → the master dataset.
    Archiver,
    /// The batch job: the master dataset → batch-view segments.
    BatchLayer,
    /// The speed layer: the log → realtime views.
    SpeedLayer,
    /// The Kappa hand-off: finalized realtime windows → segments.
    Handoff,
}

impl Component {
    /// The service name (`archiver`, `batch-layer`, `speed-layer`, `handoff`).
    pub fn name(self) -> &'static str {
        match self {
            Component::Archiver => "archiver",
            Component::BatchLayer => "batch-layer",
            Component::SpeedLayer => "speed-layer",
            Component::Handoff => "handoff",
        }
    }
}

impl Architecture {
    /// Whether a deployment of this architecture runs `component` — the one place that decides
    /// (DESIGN §5, §6): Lambda runs the archiver, the batch job and the speed layer; Kappa the
    /// speed layer and its hand-off. Ingest and serving run in both.
    pub fn runs(self, component: Component) -> bool {
        match (self, component) {
            (_, Component::SpeedLayer) => true,
            (Architecture::Lambda, Component::Archiver | Component::BatchLayer) => true,
            (Architecture::Lambda, Component::Handoff) => false,
            (Architecture::Kappa, Component::Archiver | Component::BatchLayer) => false,
            (Architecture::Kappa, Component::Handoff) => true,
        }
    }

    /// Refuses to start `component` under an architecture that does not run it. Errors: a
    /// message naming the component, the architecture and what to do.
    pub fn require(self, component: Component) -> Result<(), String> {
        if self.runs(component) {
            return Ok(());
        }
        Err(format!(
            "the {} does not run in a {self} deployment (PRISM_ARCHITECTURE={self}): {}",
            component.name(),
            match self {
                Architecture::Kappa => "Kappa mode has no batch layer; views are rebuilt by replaying the log (`prism replay`)",
                Architecture::Lambda => "the hand-off runs in Kappa mode only; in Lambda mode the batch job writes the segments",
            }
        ))
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Architecture {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lambda" => Ok(Architecture::Lambda),
            "kappa" => Ok(Architecture::Kappa),
            other => Err(format!("architecture {other:?}: use lambda or kappa")),
        }
    }
}

/// The speed layer's consumer name (and Kafka group id) for a view's realtime version
/// (`speed-layer.ohlcv.v1`): each view and version is its own consumer, so a replay into v+1
/// never moves v's offsets (DESIGN §6).
pub fn speed_consumer(view: &str, view_version: i64) -> String {
    format!("speed-layer.{view}.v{view_version}")
}

/// [`speed_consumer`] as a SQL expression (SQLite and PostgreSQL), of a text expression `view`
/// and an integer expression `view_version`: for reads that find a version and its consumer's
/// offsets in one statement.
pub fn speed_consumer_sql(view: &str, view_version: &str) -> String {
    format!("('speed-layer.' || {view} || '.v' || CAST({view_version} AS TEXT))")
}

/// The archiver's consumer name.
pub const ARCHIVER_CONSUMER: &str = "archiver";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("60").is_err(), "a unit is required");
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn each_architecture_runs_its_components() {
        use Component::*;
        let runs = |a: Architecture| [Archiver, BatchLayer, SpeedLayer, Handoff].map(|c| a.runs(c));
        assert_eq!(runs(Architecture::Lambda), [true, true, true, false]);
        assert_eq!(runs(Architecture::Kappa), [false, false, true, true]);
        let refused = Architecture::Kappa.require(BatchLayer).unwrap_err();
        assert!(refused.contains("batch-layer") && refused.contains("kappa"), "{refused}");
        assert!(Architecture::Kappa.require(SpeedLayer).is_ok());
    }

    #[test]
    fn deployment_flags_are_checked() {
        let ok = DeploymentArgs { architecture: Architecture::Lambda, partitions: 2, allowed_lateness_ms: 0, views: vec!["ohlcv".into()] };
        assert_eq!(ok.validate(), Ok(()));
        let kappa = DeploymentArgs { architecture: Architecture::Kappa, ..ok.clone() };
        assert_eq!(kappa.validate(), Ok(()));
        let none = DeploymentArgs { partitions: 0, ..ok.clone() };
        assert!(none.validate().unwrap_err().contains("--partitions"));
        let early = DeploymentArgs { allowed_lateness_ms: -1, ..ok.clone() };
        assert!(early.validate().unwrap_err().contains("--allowed-lateness-ms"));
        let two = DeploymentArgs { views: vec!["ohlcv".into(), "ohlcv_30s".into()], ..ok.clone() };
        assert_eq!(
            two.registry().map(|r| r.views().iter().map(|v| v.name().to_string()).collect::<Vec<_>>()),
            Ok(vec!["ohlcv".into(), "ohlcv_30s".into()])
        );
        let unknown = DeploymentArgs { views: vec!["candles".into()], ..ok.clone() };
        assert!(unknown.validate().unwrap_err().contains("--views"));
        let twice = DeploymentArgs { views: vec!["ohlcv".into(), "ohlcv".into()], ..ok };
        assert!(twice.validate().is_err());
    }
}
