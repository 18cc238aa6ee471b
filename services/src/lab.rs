//! The stock-quote lab's bundled data: daily bars of AAPL, IBM, MSFT, GOOG and FB, 2000–2013
//! (Quandl WIKI prices, public domain; see `data/PROVENANCE.md`). Compiled into the binary so
//! that `prism up` works from any folder.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// File name of the lab data.
pub const LAB_FILE_NAME: &str = "stocks-daily-2000-2013.csv.gz";
/// The lab data, gzip-compressed CSV (`Ticker,Date,Open,High,Low,Close,Volume,Adj Close`).
pub const LAB_DATA: &[u8] = include_bytes!("../../data/stocks-daily-2000-2013.csv.gz");

/// Writes the lab file into `<data_dir>/lab/` (unless an identical copy is there) and returns
/// its path. Errors: I/O errors, with the path.
pub fn install_lab_data(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("lab");
    let path = dir.join(LAB_FILE_NAME);
    if std::fs::read(&path).map(|b| b == LAB_DATA).unwrap_or(false) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, LAB_DATA).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
