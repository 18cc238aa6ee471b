//! Prism core: what every layer shares (DESIGN §2).
//!
//! - [`decimal`]: exact money at scale 6.
//! - [`event`]: the events on the log (`prism.quotes`, `prism.dlq`) and log positions.
//! - [`time`]: event time in UTC ms, RFC 3339 in and out.
//! - [`window`]: tumbling event-time windows, intervals and the watermark.
//! - [`view`]: view definitions (the `View` trait, its row codec, the registry) and `ohlcv`.
//! - [`log`]: the [`log::EventLog`] trait and the embedded log.
//! - [`objects`]: object storage (local folder or S3) for the master dataset and segments.
//! - [`segment`]: batch-view segments (Parquet files of one view and time chunk).
//! - [`store`]: the view store on `sqlx`.
//! - [`config`]: settings shared by every service.
//! - [`consumer`]: a consumer whose offsets live in the view store.
//! - [`batch_run`]: the batch-run request/report passed between serving and the batch layer.

pub mod background;
pub mod batch_run;
pub mod chunk;
pub mod config;
pub mod consumer;
pub mod decimal;
pub mod event;
pub mod log;
pub mod objects;
pub mod replay;
pub mod segment;
pub mod store;
pub mod time;
pub mod view;
pub mod window;
