//! The quote poller's flags ([`PollerArgs`], flattened into `prism quote-poller` and `prism up`)
//! and settings ([`PollerConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use prism_core::event::validate_symbol;

use super::{FieldPointers, PollerError};

/// Timeout of one poll request (connecting, sending, reading the answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The quote poller's flags (each with a `PRISM_*` environment fallback).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct PollerArgs {
    /// URL of the quote API, `{symbol}` replaced by each symbol, e.g.
    /// http://127.0.0.1:8090/v1/quotes/{symbol} (with `prism up`: runs the quote poller)
    #[arg(long, env = "PRISM_POLL_URL")]
    pub poll_url: Option<String>,
    /// Symbols to poll (comma-separated), e.g. AAPL,MSFT
    #[arg(long, env = "PRISM_POLL_SYMBOLS", value_delimiter = ',')]
    pub poll_symbols: Vec<String>,
    /// Time between two polls of every symbol.
    #[arg(long, env = "PRISM_POLL_INTERVAL", default_value = "1s", value_parser = prism_core::config::parse_duration)]
    pub poll_interval: Duration,
    /// JSON pointer (RFC 6901) of the last trade price in the answer (decimal string or number).
    #[arg(long, env = "PRISM_POLL_PRICE_POINTER", default_value = "/last")]
    pub poll_price_pointer: String,
    /// JSON pointer of the last trade size, shares.
    #[arg(long, env = "PRISM_POLL_SIZE_POINTER", default_value = "/size")]
    pub poll_size_pointer: String,
    /// JSON pointer of the quote's time: RFC 3339 string or UTC milliseconds.
    #[arg(long, env = "PRISM_POLL_TS_POINTER", default_value = "/time")]
    pub poll_ts_pointer: String,
    /// JSON pointer of the best bid (missing in an answer: no bid; empty: never read).
    #[arg(long, env = "PRISM_POLL_BID_POINTER", default_value = "/bid")]
    pub poll_bid_pointer: String,
    /// JSON pointer of the best ask (missing in an answer: no ask; empty: never read).
    #[arg(long, env = "PRISM_POLL_ASK_POINTER", default_value = "/ask")]
    pub poll_ask_pointer: String,
    /// JSON pointer of the symbol in the answer (default: the polled symbol).
    #[arg(long, env = "PRISM_POLL_SYMBOL_POINTER")]
    pub poll_symbol_pointer: Option<String>,
}

impl Default for PollerArgs {
    /// The flags' defaults: no URL (the poller does not run), no symbols.
    fn default() -> Self {
        PollerArgs {
            poll_url: None,
            poll_symbols: Vec::new(),
            poll_interval: Duration::from_secs(1),
            poll_price_pointer: "/last".into(),
            poll_size_pointer: "/size".into(),
            poll_ts_pointer: "/time".into(),
            poll_bid_pointer: "/bid".into(),
            poll_ask_pointer: "/ask".into(),
            poll_symbol_pointer: None,
        }
    }
}

impl PollerArgs {
    /// True when `--poll-url` is given (non-blank).
    pub fn enabled(&self) -> bool {
        self.poll_url.as_deref().is_some_and(|u| !u.trim().is_empty())
    }

    /// The poller's settings, checkpointing to `checkpoint_path` and creating `prism.quotes` with
    /// `partitions` partitions when it does not exist.
    ///
    /// Errors: [`PollerError::Config`] without a URL or symbols, for a URL that is not
    /// `http(s)://…` (with `{symbol}` when several symbols are polled), a symbol Prism would
    /// refuse, or a field pointer that does not start with `/`.
    pub fn config(&self, checkpoint_path: PathBuf, partitions: i32) -> Result<PollerConfig, PollerError> {
        let url_template = self.poll_url.as_deref().map(str::trim).unwrap_or_default().to_string();
        let optional = |p: &str| Some(p.trim().to_string()).filter(|p| !p.is_empty());
        let mut symbols: Vec<String> = Vec::new();
        for s in self.poll_symbols.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if !symbols.iter().any(|have| have == s) {
                symbols.push(s.to_string());
            }
        }
        let config = PollerConfig {
            url_template,
            symbols,
            interval: self.poll_interval,
            fields: FieldPointers {
                price: self.poll_price_pointer.trim().to_string(),
                size: self.poll_size_pointer.trim().to_string(),
                ts: self.poll_ts_pointer.trim().to_string(),
                bid: optional(&self.poll_bid_pointer),
                ask: optional(&self.poll_ask_pointer),
                symbol: self.poll_symbol_pointer.as_deref().and_then(optional),
            },
            request_timeout: REQUEST_TIMEOUT,
            checkpoint_path,
            partitions,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The quote poller's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    /// `http(s)://…` with `{symbol}` where each polled symbol goes.
    pub url_template: String,
    /// The polled symbols (at least one).
    pub symbols: Vec<String>,
    /// Time between two polls of every symbol.
    pub interval: Duration,
    /// Where the fields are in an answer.
    pub fields: FieldPointers,
    /// Timeout of one request ([`REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// The checkpoint file (JSON, replaced atomically on each save).
    pub checkpoint_path: PathBuf,
    /// Partitions of `prism.quotes` when the poller creates it.
    pub partitions: i32,
}

impl PollerConfig {
    /// The URL polled for `symbol`: the template with `{symbol}` replaced by the symbol,
    /// percent-encoded (`^` → `%5E`, `/` → `%2F`).
    pub fn url_for(&self, symbol: &str) -> String {
        let mut encoded = String::with_capacity(symbol.len());
        for b in symbol.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        self.url_template.replace("{symbol}", &encoded)
    }

    /// Checks the settings. Errors: see [`PollerArgs::config`].
    pub fn validate(&self) -> Result<(), PollerError> {
        let bad = |m: String| Err(PollerError::Config(m));
        if self.url_template.is_empty() {
            return bad("no quote API to poll: give --poll-url (PRISM_POLL_URL)".into());
        }
        if self.symbols.is_empty() {
            return bad("no symbols to poll: give --poll-symbols A,B,… (PRISM_POLL_SYMBOLS)".into());
        }
        if self.symbols.len() > 1 && !self.url_template.contains("{symbol}") {
            return bad(format!("--poll-url {:?} has no {{symbol}}: every symbol would poll the same URL", self.url_template));
        }
        for symbol in &self.symbols {
            validate_symbol(symbol).map_err(|e| PollerError::Config(format!("--poll-symbols: {e}")))?;
            let url = self.url_for(symbol);
            match reqwest::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                Ok(_) => return bad(format!("--poll-url {url:?} is not an http:// or https:// URL")),
                Err(e) => return bad(format!("--poll-url {url:?}: {e}")),
            }
        }
        if self.interval.is_zero() || self.request_timeout.is_zero() {
            return bad("the poll interval and the request timeout must be positive".into());
        }
        self.fields.validate().map_err(PollerError::Config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        poll: PollerArgs,
    }

    #[test]
    fn defaults_match_the_flags() {
        assert_eq!(Cli::parse_from(["prism"]).poll, PollerArgs::default());
        assert!(!PollerArgs::default().enabled());
    }

    #[test]
    fn flags_become_the_config() {
        let cli = Cli::parse_from([
            "prism",
            "--poll-url",
            "http://127.0.0.1:8090/v1/quotes/{symbol}",
            "--poll-symbols",
            "AAPL, BRK^A,AAPL",
            "--poll-symbols",
            "X/Y",
            "--poll-interval",
            "250ms",
            "--poll-bid-pointer",
            "",
            "--poll-symbol-pointer",
            "/sym",
        ]);
        assert!(cli.poll.enabled());
        let config = cli.poll.config(PathBuf::from("poller.json"), 3).expect("valid");
        assert_eq!(config.symbols, ["AAPL", "BRK^A", "X/Y"]);
        assert_eq!(config.interval, Duration::from_millis(250));
        assert_eq!(
            (config.fields.bid.as_deref(), config.fields.ask.as_deref(), config.fields.symbol.as_deref()),
            (None, Some("/ask"), Some("/sym"))
        );
        assert_eq!(config.url_for("BRK^A"), "http://127.0.0.1:8090/v1/quotes/BRK%5EA");
        assert_eq!(config.url_for("X/Y"), "http://127.0.0.1:8090/v1/quotes/X%2FY");
        assert_eq!((config.partitions, config.request_timeout), (3, REQUEST_TIMEOUT));
    }

    #[test]
    fn bad_settings_are_refused() {
        let base = PollerArgs {
            poll_url: Some("http://localhost:1/q/{symbol}".into()),
            poll_symbols: vec!["A".into(), "B".into()],
            ..PollerArgs::default()
        };
        let refused = |args: PollerArgs| args.config(PathBuf::from("p.json"), 1).expect_err("refused").to_string();
        assert!(base.config(PathBuf::from("p.json"), 1).is_ok());
        assert!(refused(PollerArgs { poll_url: None, ..base.clone() }).contains("--poll-url"));
        assert!(refused(PollerArgs { poll_symbols: vec![], ..base.clone() }).contains("--poll-symbols"));
        assert!(refused(PollerArgs { poll_symbols: vec!["A B".into()], ..base.clone() }).contains("symbol"));
        assert!(refused(PollerArgs { poll_url: Some("http://localhost:1/q".into()), ..base.clone() }).contains("{symbol}"));
        assert!(refused(PollerArgs { poll_url: Some("ftp://localhost/{symbol}".into()), ..base.clone() }).contains("http"));
        assert!(refused(PollerArgs { poll_url: Some("localhost:1/{symbol}".into()), ..base.clone() }).contains("--poll-url"));
        assert!(refused(PollerArgs { poll_price_pointer: "last".into(), ..base.clone() }).contains("--poll-price-pointer"));
        let one = PollerArgs { poll_url: Some("http://[::1]:8090/quote".into()), poll_symbols: vec!["A".into()], ..PollerArgs::default() };
        assert!(one.config(PathBuf::from("p.json"), 1).is_ok(), "one symbol may poll a fixed URL");
    }
}
