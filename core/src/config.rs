//! Settings shared by every service (each service's own flags live in its crate).

use std::fmt;
use std::str::FromStr;

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

/// The archiver's consumer name.
pub const ARCHIVER_CONSUMER: &str = "archiver";
