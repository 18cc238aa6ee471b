//! `prism quote-sim`: a simulated exchange quote API on 127.0.0.1, for trying the quote poller
//! ([`crate::poller`]) without a market-data subscription.
//!
//! **Endpoints** (axum, [`router`]):
//!
//! - `GET /v1/quotes/{symbol}` → `200 {"symbol":"AAPL","bid":"118.550000","ask":"118.570000",
//!   "last":"118.560000","size":300,"time":"2024-05-01T14:30:01Z"}`: prices are decimal strings
//!   (currency units, 6 decimals), `size` in shares, `time` the start of the current step,
//!   RFC 3339 UTC. `404 {"error":"…"}` for a symbol the simulator does not serve.
//! - `GET /v1/quotes` → `200 {"quotes":[…]}`: every symbol, in configured order.
//! - `GET /healthz` → `200 ok`.
//!
//! **The walk.** Each symbol's last price is a random walk in whole ticks of 0.01 (kept as an
//! integer, never a float), deterministic in (`--sim-seed`, symbol, UTC day): it starts at
//! 00:00 UTC from a price in 20.00–500.00 and takes one step of −3…+3 ticks every
//! `--sim-step` (reflected at 1.00, so it stays positive). The current step is derived from the
//! wall clock — step `i` of a day covers `[00:00 + i × step, 00:00 + (i + 1) × step)` — so two
//! polls in one step see the same quote, and a restarted simulator serves the same quotes at the
//! same times. Each step also draws a size (100–1000 shares, round lots) and a spread (1–3 ticks
//! each side of `last`). [`quote_at`] is the walk as a pure function; [`Simulator`] serves it
//! with a per-symbol cursor so that each request costs only the steps since the previous one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prism_core::decimal::Decimal6;
use prism_core::event::validate_symbol;
use prism_core::time::DAY_MS;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// One tick of the walk: 0.01 currency units, in micro-units.
pub const TICK_UNITS: i128 = 10_000;
/// The floor the walk is reflected at: 1.00, in ticks.
const MIN_TICKS: i64 = 100;

/// The simulator's flags (each with a `PRISM_*` environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Symbols served (comma-separated).
    #[arg(long, env = "PRISM_SIM_SYMBOLS", value_delimiter = ',', default_value = "AAPL,MSFT,GOOG,IBM,FB")]
    pub sim_symbols: Vec<String>,
    /// Seed of the random walks (the same seed serves the same quotes at the same times).
    #[arg(long, env = "PRISM_SIM_SEED", default_value_t = 1)]
    pub sim_seed: u64,
    /// Wall time between two steps of the walk (whole milliseconds, at least 1ms).
    #[arg(long, env = "PRISM_SIM_STEP", default_value = "1s", value_parser = prism_core::config::parse_duration)]
    pub sim_step: Duration,
}

impl SimArgs {
    /// The simulator's settings. Errors: a symbol Prism would refuse, no symbol, or a step that
    /// is not whole milliseconds.
    pub fn config(&self) -> Result<SimConfig, String> {
        let mut symbols: Vec<String> = Vec::new();
        for s in self.sim_symbols.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            validate_symbol(s).map_err(|e| format!("--sim-symbols: {e}"))?;
            if !symbols.iter().any(|have| have == s) {
                symbols.push(s.to_string());
            }
        }
        if symbols.is_empty() {
            return Err("--sim-symbols: give at least one symbol".into());
        }
        let config = SimConfig { symbols, seed: self.sim_seed, step: self.sim_step };
        config.step_ms()?;
        Ok(config)
    }
}

/// The simulator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Symbols served, in the order `GET /v1/quotes` lists them.
    pub symbols: Vec<String>,
    /// Seed of the walks.
    pub seed: u64,
    /// Wall time between two steps (whole milliseconds, ≥ 1 ms).
    pub step: Duration,
}

impl SimConfig {
    /// The step in milliseconds. Errors: zero or not whole milliseconds.
    pub fn step_ms(&self) -> Result<i64, String> {
        let ms = i64::try_from(self.step.as_millis()).map_err(|_| "--sim-step is too long".to_string())?;
        if ms < 1 || Duration::from_millis(ms as u64) != self.step {
            return Err(format!("--sim-step {:?} must be whole milliseconds, at least 1ms", self.step));
        }
        Ok(ms)
    }
}

/// One simulated quote, as served (JSON: `time` is RFC 3339 UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimQuote {
    /// The symbol.
    pub symbol: String,
    /// Best bid, currency units at scale 6.
    pub bid: Decimal6,
    /// Best ask, currency units at scale 6.
    pub ask: Decimal6,
    /// Last trade price, currency units at scale 6.
    pub last: Decimal6,
    /// Last trade size, shares.
    pub size: i64,
    /// Start of the step, UTC ms (served as RFC 3339 `time`).
    #[serde(rename = "time", serialize_with = "serialize_rfc3339")]
    pub time_ms: i64,
}

fn serialize_rfc3339<S: serde::Serializer>(ts_ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&prism_core::time::format_rfc3339(*ts_ms))
}

/// The quote the simulator with `seed` and `step_ms` serves for `symbol` at wall time `at_ms`
/// (UTC ms): the pure form of the walk (costs one iteration per step since 00:00 UTC).
pub fn quote_at(seed: u64, symbol: &str, step_ms: i64, at_ms: i64) -> SimQuote {
    let (day, index) = step_of(step_ms, at_ms);
    let mut walk = Walk::start(seed, symbol, day);
    walk.advance_to(index);
    walk.quote(symbol, step_ms)
}

/// (UTC day number, step index within the day) of wall time `at_ms`.
fn step_of(step_ms: i64, at_ms: i64) -> (i64, u64) {
    let day = at_ms.div_euclid(DAY_MS);
    let index = (at_ms - day * DAY_MS) / step_ms.max(1);
    (day, index as u64)
}

/// splitmix64: a counter-based generator (each draw a function of its input alone).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One symbol's walk through one UTC day, at some step.
#[derive(Debug, Clone)]
struct Walk {
    key: u64,
    day: i64,
    index: u64,
    /// Last price, in ticks of 0.01.
    ticks: i64,
}

impl Walk {
    fn start(seed: u64, symbol: &str, day: i64) -> Walk {
        // FNV-1a of the symbol, mixed with the seed and the day.
        let fnv = symbol.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
        let key = mix(mix(seed ^ fnv) ^ day as u64);
        let ticks = 2_000 + (mix(key ^ u64::MAX) % 48_000) as i64;
        Walk { key, day, index: 0, ticks }
    }

    fn draw(&self, index: u64) -> u64 {
        mix(self.key ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }

    fn advance_to(&mut self, index: u64) {
        while self.index < index {
            self.index += 1;
            let delta = (self.draw(self.index) % 7) as i64 - 3;
            self.ticks += delta;
            if self.ticks < MIN_TICKS {
                self.ticks = 2 * MIN_TICKS - self.ticks;
            }
        }
    }

    fn quote(&self, symbol: &str, step_ms: i64) -> SimQuote {
        let r = self.draw(self.index) >> 8;
        let size = 100 * (1 + (r % 10) as i64);
        let spread = 1 + ((r >> 8) % 3) as i64;
        let units = |ticks: i64| Decimal6::from_units(ticks as i128 * TICK_UNITS);
        SimQuote {
            symbol: symbol.to_string(),
            bid: units(self.ticks - spread),
            ask: units(self.ticks + spread),
            last: units(self.ticks),
            size,
            time_ms: self.day * DAY_MS + self.index as i64 * step_ms,
        }
    }
}

/// The wall clock the simulator reads (UTC ms).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The simulated exchange: the walks of its symbols, each with a cursor at the last step served.
pub struct Simulator {
    config: SimConfig,
    step_ms: i64,
    clock: Clock,
    walks: Mutex<HashMap<String, Walk>>,
}

impl Simulator {
    /// A simulator of `config` on the wall clock. Errors: a bad step (see
    /// [`SimConfig::step_ms`]).
    pub fn new(config: SimConfig) -> Result<Simulator, String> {
        Ok(Simulator { step_ms: config.step_ms()?, config, clock: Arc::new(prism_core::time::now_ms), walks: Mutex::default() })
    }

    /// The same simulator reading `clock` instead of the wall clock (tests freeze time with it).
    pub fn with_clock(self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Simulator {
        Simulator { clock: Arc::new(clock), ..self }
    }

    /// Its settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The current quote of `symbol`, or `None` when the simulator does not serve it.
    pub fn quote(&self, symbol: &str) -> Option<SimQuote> {
        if !self.config.symbols.iter().any(|s| s == symbol) {
            return None;
        }
        let (day, index) = step_of(self.step_ms, (self.clock)());
        let mut walks = self.walks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let walk = walks.entry(symbol.to_string()).or_insert_with(|| Walk::start(self.config.seed, symbol, day));
        if walk.day != day || walk.index > index {
            *walk = Walk::start(self.config.seed, symbol, day);
        }
        walk.advance_to(index);
        Some(walk.quote(symbol, self.step_ms))
    }
}

/// `GET /v1/quotes/{symbol}`, `GET /v1/quotes` and `GET /healthz` over `sim`.
pub fn router(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route("/v1/quotes", get(all_quotes))
        .route("/v1/quotes/{symbol}", get(one_quote))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(sim)
}

async fn one_quote(State(sim): State<Arc<Simulator>>, Path(symbol): Path<String>) -> Response {
    match sim.quote(&symbol) {
        Some(q) => Json(q).into_response(),
        None => {
            let error = format!("unknown symbol {symbol:?}; this simulator serves {}", sim.config.symbols.join(", "));
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": error }))).into_response()
        }
    }
}

async fn all_quotes(State(sim): State<Arc<Simulator>>) -> Json<serde_json::Value> {
    let quotes: Vec<SimQuote> = sim.config.symbols.iter().filter_map(|s| sim.quote(s)).collect();
    Json(serde_json::json!({ "quotes": quotes }))
}

/// Serves `sim` on `listener` until `cancel` fires.
///
/// Errors: the server's I/O error.
pub async fn serve_quote_sim(sim: Arc<Simulator>, listener: tokio::net::TcpListener, cancel: CancellationToken) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(
        addr = ?addr, symbols = ?sim.config.symbols, seed = sim.config.seed, step_ms = sim.step_ms,
        "quote simulator serving GET /v1/quotes/{{symbol}}"
    );
    axum::serve(listener, router(sim)).with_graceful_shutdown(async move { cancel.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn flags_become_the_config() {
        let config = Cli::parse_from(["prism"]).sim.config().expect("defaults");
        assert_eq!(
            config,
            SimConfig {
                symbols: vec!["AAPL".into(), "MSFT".into(), "GOOG".into(), "IBM".into(), "FB".into()],
                seed: 1,
                step: Duration::from_secs(1)
            }
        );
        let config =
            Cli::parse_from(["prism", "--sim-symbols", "A, B,A", "--sim-step", "250ms", "--sim-seed", "9"]).sim.config().expect("valid");
        assert_eq!((config.step_ms(), config.seed, config.symbols), (Ok(250), 9, vec!["A".to_string(), "B".to_string()]));
        assert!(Cli::parse_from(["prism", "--sim-symbols", "A B"]).sim.config().is_err());
        assert!(Cli::parse_from(["prism", "--sim-step", "1500us"]).sim.config().is_err());
    }

    #[test]
    fn the_walk_is_deterministic_positive_and_steps_with_the_clock() {
        let day0 = 19_800 * DAY_MS;
        let a = quote_at(7, "AAPL", 1000, day0 + 5_400);
        assert_eq!(a, quote_at(7, "AAPL", 1000, day0 + 5_999), "one step: one quote");
        assert_eq!(a.time_ms, day0 + 5_000);
        assert_ne!(quote_at(7, "AAPL", 1000, day0 + 6_000), a, "the next step moves (time at least)");
        assert_ne!(quote_at(8, "AAPL", 1000, day0 + 5_400).last, a.last, "another seed, another walk");
        assert_ne!(quote_at(7, "MSFT", 1000, day0 + 5_400).last, a.last, "another symbol, another walk");
        let mut prev = quote_at(7, "IBM", 10, day0);
        for i in 1..3_000 {
            let q = quote_at(7, "IBM", 10, day0 + i * 10);
            let moved = (q.last.units() - prev.last.units()).abs();
            assert!(moved <= 3 * TICK_UNITS && q.last.units() >= MIN_TICKS as i128 * TICK_UNITS, "step {i}: {prev:?} → {q:?}");
            assert!(q.bid < q.last && q.last < q.ask && q.bid > Decimal6::ZERO);
            assert!((100..=1000).contains(&q.size) && q.size % 100 == 0);
            prev = q;
        }
    }

    #[test]
    fn the_simulator_serves_the_pure_walk() {
        let now = Arc::new(std::sync::atomic::AtomicI64::new(19_800 * DAY_MS + 123));
        let clock = now.clone();
        let sim = Simulator::new(SimConfig { symbols: vec!["AAPL".into()], seed: 3, step: Duration::from_millis(100) })
            .expect("sim")
            .with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst));
        for t in [123, 150, 999, 5_000, 4_000, DAY_MS + 7] {
            let at = 19_800 * DAY_MS + t;
            now.store(at, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(sim.quote("AAPL"), Some(quote_at(3, "AAPL", 100, at)), "at +{t} ms");
        }
        assert_eq!(sim.quote("MSFT"), None);
        let json = serde_json::to_value(sim.quote("AAPL").expect("quote")).expect("json");
        assert_eq!(json["time"], "2024-03-19T00:00:00Z", "{json}");
        assert!(json["last"].as_str().is_some_and(|p| p.parse::<Decimal6>().is_ok()), "{json}");
    }
}
