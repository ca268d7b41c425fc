//! One integration-test binary, so linking is paid once.
//!
//! - `runtime`: the driver through the library API, with scripted models.
//! - `cli`: the `troupe` binary as a user runs it.
//! - `local_model`: the embedded model, for real.
//! - `tui_screens`: the workbench's screens as snapshots, driven by recorded events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod local_model;
mod runtime;
mod tui_e2e;
mod tui_screens;
