//! One integration-test binary, so linking is paid once.
//!
//! - `runtime`: the driver through the library API, with scripted models.
//! - `cli`: the `troupe` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod local_model;
mod runtime;
