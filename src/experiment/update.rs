//! What a view hears while a matrix runs ([`MatrixUpdate`]): pure data the runner sends and the
//! progress line, the CLI and the workbench read, so those views need nothing of the runner.

use std::path::PathBuf;

use super::plan::TrialSpec;
use super::record::TrialRecord;
use crate::protocol::Event;

/// What a view hears while a matrix runs.
#[derive(Clone, Debug)]
pub enum MatrixUpdate {
    /// The folder is open and the trials to run are known.
    Planned {
        dir: PathBuf,
        total: u32,
        to_run: u32,
        recorded: u32,
        concurrency: u32,
    },
    TrialStarted {
        trial: TrialSpec,
        dir: PathBuf,
    },
    /// An event of a running trial (only with `forward_events`).
    Event {
        key: String,
        event: Event,
    },
    TrialFinished {
        record: TrialRecord,
    },
    /// A line for a person: fetching the model, a trial that could not start.
    Status(String),
}
