//! Loading and validating the workbench's files (`troupe.toml`, `agents/*.toml`,
//! `experiments/*.toml`) into a [`Workbench`], with [`Diagnostic`]s that point at a file, line
//! and column, say what was expected and hint at a fix.
//!
//! Invariant: nothing outside this module parses these files; a [`Workbench`] exists only when
//! loading found no error (warnings allowed), so its references all resolve.
//!
//! Map: [`types`] (the validated shapes), `diagnostic` (diagnostics and their rendering),
//! `reader` (typed access to a spanned TOML table), `suggest` (did-you-mean), `settings`
//! (`troupe.toml`, model and limit tables), `mcp` (`[mcp.servers.<name>]`), `agent`, `experiment` (with `variants` and
//! `checks`), `workbench` (reading the folder, cross-file checks, lookups).

mod agent;
mod checks;
mod diagnostic;
mod experiment;
mod mcp;
mod reader;
mod settings;
mod suggest;
pub mod types;
mod variants;
mod workbench;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_matrix;

pub use agent::{BUILTIN_TOOLS, MCP_TOOL_PREFIX};
pub use diagnostic::{Diagnostic, Loaded, Severity, render_diagnostics, render_diagnostics_with};
pub use mcp::DEFAULT_MCP_TIMEOUT_SECONDS;
pub use types::*;
pub use workbench::{check_agent_text, load_workbench};
