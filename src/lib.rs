//! troupe: a terminal workbench for experimenting with multi-agent LLM systems.
//!
//! Code map (see `ARCHITECTURE.md` for the invariants and the data flow):
//! - [`protocol`]: ids, `subtask://` URIs, states, [`protocol::Event`] and [`protocol::Op`].
//!   Pure data, the contract between the runtime and every view.
//! - [`config`]: `troupe.toml`, `agents/*.toml`, `experiments/*.toml`: load, validate, and
//!   diagnostics that point at a file, line and column.
//! - [`runtime`]: the pure agent state machine and subtask registry, the built-in tools, and
//!   the async driver that runs them against models.
//! - [`model`]: the [`model::Model`] trait and its providers.
//! - [`memory`]: memory that learns across sessions: the sentence embedder (MiniLM) and the
//!   store of lessons and episodes (SQLite, exact vector search).
//! - [`experiment`]: matrices of trials: plans, checks, statistics, reports, reflection.
//! - [`mcp`]: MCP both ways: the shared client of the experts' MCP servers.
//! - [`findings`]: the run folder: `events.jsonl`, `transcript.md`, `report.md`, `config/`.
//! - [`launch`]: from a workbench and an experiment to a running run with its run folder open.
//! - [`serve`]: front ends other than the terminal UI (the headless progress line).
//! - [`tui`]: the workbench, the terminal app: a pure run view model, the screens' state, and
//!   the shell that drives them.
//! - [`fsutil`]: atomic file writes, so a failed save never loses what was on disk.
//! - [`logging`]: troupe's own diagnostics: stderr, or a file for the terminal app; redacted.
//! - [`printable`]: outside text made safe for the terminal (no control characters).
//! - [`urls`]: credentials in URLs (`user:pass@`) hidden in messages.

pub mod config;
pub mod experiment;
pub mod findings;
pub mod fsutil;
pub mod launch;
pub mod logging;
pub mod mcp;
pub mod memory;
pub mod model;
pub mod printable;
pub mod protocol;
pub mod runtime;
pub mod serve;
pub mod tui;
pub mod urls;
