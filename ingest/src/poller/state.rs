//! What the poller remembers: per polled symbol, the last quote it appended — in its checkpoint
//! file, and in the headers of every record it appends, from which a restart recovers what
//! landed after the checkpoint.
//!
//! Headers: [`SOURCE_HEADER`](crate::append::SOURCE_HEADER) `poller:<symbol>` (the polled
//! symbol) and [`POSITION_HEADER`](crate::append::POSITION_HEADER) `<ts>:<price>:<size>` (UTC ms,
//! the price with 6 decimals, shares), e.g. `1362148200000:118.560000:300`.
//!
//! Checkpoint file (JSON, replaced atomically): `{"version": 1, "symbols": {"AAPL": {"ts":
//! 1362148200000, "price": "118.560000", "size": 300}}, "log_end_offsets": [12, 7]}`, the
//! offsets being `prism.quotes`' log end offsets when it was saved.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use prism_core::decimal::Decimal6;
use prism_core::event::{Quote, QUOTES_TOPIC};
use prism_core::log::{EventLog, LogError};
use serde::{Deserialize, Serialize};

use crate::append::recover_positions;

/// The version of the checkpoint file's format.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Prefix of the poller's source header values.
pub(crate) const SOURCE_PREFIX: &str = "poller:";

/// What identifies a quote for the "unchanged" test: its time, price and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastQuote {
    /// Event time, UTC ms.
    pub ts: i64,
    /// Price, currency units at scale 6.
    pub price: Decimal6,
    /// Size, shares.
    pub size: i64,
}

impl LastQuote {
    /// The identity of `quote`.
    pub fn of(quote: &Quote) -> LastQuote {
        LastQuote { ts: quote.ts, price: quote.price, size: quote.size }
    }

    /// Its position header: `<ts>:<price>:<size>`.
    pub fn position(&self) -> String {
        format!("{}:{}:{}", self.ts, self.price, self.size)
    }

    /// Parses a position header.
    pub fn parse(position: &str) -> Option<LastQuote> {
        let mut parts = position.splitn(3, ':');
        let ts = parts.next()?.parse().ok()?;
        let price = parts.next()?.parse().ok()?;
        let size = parts.next()?.parse().ok()?;
        Some(LastQuote { ts, price, size })
    }
}

/// The source header value of the records polled for `symbol`.
pub(crate) fn source_of(symbol: &str) -> String {
    format!("{SOURCE_PREFIX}{symbol}")
}

/// The poller's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    #[serde(default)]
    pub version: u32,
    /// Per polled symbol, the last quote appended.
    #[serde(default)]
    pub symbols: BTreeMap<String, LastQuote>,
    /// `prism.quotes`' log end offsets at the save.
    #[serde(default)]
    pub log_end_offsets: Vec<i64>,
}

impl Checkpoint {
    /// Reads the checkpoint at `path`; a missing file is an empty checkpoint (a first start, or
    /// a lost file: the recovery then scans the topic from its start).
    ///
    /// Errors: a message naming the file when it cannot be read or is not a checkpoint.
    pub fn load(path: &Path) -> Result<Checkpoint, String> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let c: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a poller checkpoint: {e}", path.display()))?;
        if c.version != CHECKPOINT_VERSION {
            return Err(format!("{}: version {} is not the supported version {CHECKPOINT_VERSION}", path.display(), c.version));
        }
        Ok(c)
    }

    /// Saves it at `path` atomically: writes `<path>.tmp`, syncs it, renames it over `path` and
    /// syncs the directory, so a crash leaves the old or the new checkpoint, whole.
    ///
    /// Errors: a message naming the file.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        let file = Checkpoint { version: CHECKPOINT_VERSION, ..self.clone() };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| format!("encoding the poller checkpoint: {e}"))?;
        json.push(b'\n');
        let write = || -> io::Result<()> {
            let mut f = File::create(tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(tmp, path)?;
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("saving the poller checkpoint {}: {e}", path.display()))
    }
}

/// What [`recover`] found past the checkpoint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// The poller's records found.
    pub records: usize,
    /// Symbols whose last quote moved.
    pub symbols: usize,
    /// Records whose position header could not be read (ignored).
    pub unreadable: usize,
}

/// Reads the poller's records after `checkpoint.log_end_offsets` back from `prism.quotes` and
/// moves each symbol's last quote to the last one found (in log order: a symbol's records share
/// a partition). Leaves `log_end_offsets` alone.
///
/// Errors: [`LogError`].
pub(crate) async fn recover<L: EventLog>(log: &L, checkpoint: &mut Checkpoint) -> Result<Recovery, LogError> {
    let found = recover_positions(log, QUOTES_TOPIC, &checkpoint.log_end_offsets, |s| s.starts_with(SOURCE_PREFIX)).await?;
    let mut recovery = Recovery::default();
    let mut by_symbol: HashMap<String, LastQuote> = HashMap::new();
    for (source, records) in found {
        let Some(symbol) = source.strip_prefix(SOURCE_PREFIX) else { continue };
        recovery.records += records.len();
        let mut last = None;
        for r in &records {
            match LastQuote::parse(&r.position) {
                Some(q) => last = Some(q),
                None => recovery.unreadable += 1,
            }
        }
        if let Some(q) = last {
            by_symbol.insert(symbol.to_string(), q);
        }
    }
    for (symbol, q) in by_symbol {
        if checkpoint.symbols.insert(symbol, q) != Some(q) {
            recovery.symbols += 1;
        }
    }
    Ok(recovery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let q = LastQuote { ts: -5, price: Decimal6::from_units(118_560_000), size: 300 };
        assert_eq!(q.position(), "-5:118.560000:300");
        assert_eq!(LastQuote::parse(&q.position()), Some(q));
        for bad in ["", "1:2", "1:x:3", "a:1:1", "1:1:1.5"] {
            assert_eq!(LastQuote::parse(bad), None, "{bad}");
        }
        assert_eq!(source_of("BRK.B"), "poller:BRK.B");
    }

    #[test]
    fn the_checkpoint_saves_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("poller.json");
        assert_eq!(Checkpoint::load(&path), Ok(Checkpoint::default()), "missing: empty");
        let mut c = Checkpoint { log_end_offsets: vec![3, 0], ..Checkpoint::default() };
        c.symbols.insert("AAPL".into(), LastQuote { ts: 1, price: Decimal6::from_units(1), size: 2 });
        c.save(&path).expect("save");
        assert_eq!(Checkpoint::load(&path), Ok(Checkpoint { version: CHECKPOINT_VERSION, ..c }));
        std::fs::write(&path, "{").expect("write");
        assert!(Checkpoint::load(&path).expect_err("broken").contains("poller.json"));
        std::fs::write(&path, r#"{"version":9}"#).expect("write");
        assert!(Checkpoint::load(&path).expect_err("version").contains("version 9"));
    }
}
