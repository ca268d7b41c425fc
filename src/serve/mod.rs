//! Front ends other than the terminal UI. Each one reads the event stream and sends ops,
//! and none owns runtime state.
//!
//! - [`progress`]: the headless progress line and summary of `troupe run`.
//! - [`matrix_progress`]: the same for a matrix of trials.
pub mod matrix_progress;
pub mod progress;
