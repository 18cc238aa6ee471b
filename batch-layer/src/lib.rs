//! Prism batch layer (DESIGN §5): the [`archiver`] (log → Parquet master dataset, with
//! [`compaction`]) and the [`batch_job`] (master dataset → batch views as versioned segments,
//! published with the batch horizon; [`chunks`] and [`build`] are its time chunks and its
//! segment builder). [`master`] holds the master dataset's layout and file formats; [`views`]
//! says which archived records each view type is built from.

pub mod archiver;
pub mod batch_job;
pub mod build;
pub mod chunks;
pub mod compaction;
pub mod master;
pub mod telemetry;
pub mod views;

use prism_core::log::LogError;
use prism_core::store::StoreError;

/// Errors of the batch layer.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The view store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Consuming the log failed.
    #[error(transparent)]
    Consumer(#[from] prism_core::consumer::ConsumerError),
    /// The master dataset failed.
    #[error(transparent)]
    Master(#[from] master::MasterError),
    /// A batch-view segment could not be written.
    #[error(transparent)]
    Segment(#[from] prism_core::segment::SegmentError),
    /// Object storage failed (segments, their cleanup).
    #[error("segment store: {0}")]
    Object(#[from] prism_core::objects::ObjectError),
    /// A blocking task panicked or was cancelled.
    #[error("batch layer task failed: {0}")]
    Task(String),
    /// Work on the background pool (`prism_core::background`) panicked or was cancelled.
    #[error(transparent)]
    Background(#[from] prism_core::background::BackgroundError),
    /// The master dataset holds archived files but the view store has no archiver progress:
    /// the dataset was archived with another view store. Starting anyway would take its files
    /// for uncommitted ones and delete them, so the archiver refuses.
    #[error(
        "the master dataset {dataset} already holds {files} archived files, but this view store has no archiver progress: \
         it was archived with another view store. Start with the view store it was archived with, or point \
         PRISM_MASTER_DATASET at an empty location (starting here would delete those files as uncommitted)"
    )]
    ForeignMasterDataset {
        /// The dataset's URL.
        dataset: String,
        /// Archived files found in it.
        files: usize,
    },
}
