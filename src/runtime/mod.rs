//! The runtime: where agents run and delegate.
//!
//! - [`registry`]: the subtask resources of a run (pure).
//! - [`agent`]: one agent's loop as a state machine (pure).
//! - [`tools`]: the built-in tools' schemas and argument parsing (pure).
//! - [`memory`], [`mcp`]: what a run asks of long-term memory and of MCP servers (traits the
//!   shells implement).
//! - [`driver`]: the async shell that runs the machines against models on tokio and emits
//!   every event.
//!
//! Invariant: only `driver` knows tokio; the other three are tested without it.

pub mod agent;
pub mod driver;
pub mod mcp;
pub mod memory;
pub mod registry;
pub mod routing;
pub mod tools;

pub use driver::{Clock, RunConfig, RunHandle, RunSummary, StartError, SystemClock, spawn_run};
pub use memory::{Recalled, RunMemory};
