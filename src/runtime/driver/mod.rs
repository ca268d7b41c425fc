//! The async driver: runs one run on tokio. It owns the [`Registry`](super::registry::Registry),
//! spawns a task per subtask, feeds each agent's [`AgentMachine`](super::agent::AgentMachine)
//! with model replies and tool results, executes the built-in tools, enforces the limits that
//! need a clock or a total, and emits every [`Event`](crate::protocol::Event).
//!
//! This file owns what a caller configures and gets back (`RunConfig`, `RunSummary`,
//! `StartError`, the `Clock`); the parts of the driver live beside it:
//!
//! - `handle`: `spawn_run`, and the public handles (`RunHandle`, `RootCaller`).
//! - `profile`: an expert as the driver runs it, built once per run.
//! - `state`: the run's driver and its locked ledger; `emit` and the task endings.
//! - `supervise`: a supervisor per subtask (panics, wall time), cancellation, long polls, the
//!   run's end.
//! - `model_call`: streaming a model call, usage and budgets, `model = "auto"` routing, `call_slm`.
//! - `agent_loop`: an agent's machine driven against its model and tools.
//! - `mcp_tasks`: an agent's MCP tools, calling them, following a server's task.
//! - `builtins`: executing the built-in tools, starting subtasks.
//!
//! The rules these parts enforce without needing tokio (who may call which expert, what is not
//! said of a task after its end, the tool `tool_plan` forces) are pure functions in `tools`,
//! `registry` and `agent`.
//!
//! Invariants:
//! - The registry and the event sequence live under one `std` mutex, never held across an
//!   `.await`; an event is sent while the state change it reports is applied, so `seq` order is
//!   the order things happened and a consumer never sees a result before its task.
//! - Every subtask has a cancellation token that is a child of its parent's, so cancelling a
//!   task reaches its whole subtree even before the registry sweep marks it.
//! - `run_finished` is the last event of a run; nothing is emitted after it.

mod agent_loop;
mod builtins;
mod handle;
mod mcp_tasks;
mod model_call;
mod profile;
mod state;
mod supervise;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::mcp::McpTools;
use super::memory::RunMemory;
use crate::config::{AgentSpec, Limits, Routing};
use crate::model::{ModelError, ModelTable};
use crate::protocol::{Millis, Price, RunStatus, TaskCounts, TaskId, Usage};

pub use handle::{RootCaller, RunHandle, spawn_run};

/// The source of time for timestamps. Tests may substitute their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

/// Wall-clock time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
    }
}

/// Everything a run needs, resolved from the workbench and the experiment.
#[derive(Clone)]
pub struct RunConfig {
    pub run_id: String,
    pub experiment: String,
    /// The expert that runs as the root agent.
    pub root_agent: String,
    pub task: String,
    /// Every expert of the workbench, by name.
    pub agents: BTreeMap<String, AgentSpec>,
    pub limits: Limits,
    pub models: ModelTable,
    /// The alias `call_slm` uses when the call names none.
    pub slm_alias: String,
    /// Varies subtask URIs between runs.
    pub salt: u32,
    /// Prices of the aliases that have one, for cost and `max_cost`.
    pub prices: BTreeMap<String, Price>,
    /// How experts with `model = "auto"` are routed.
    pub routing: Option<Routing>,
    /// The sampling seed of every model call whose expert sets none: a matrix trial's seed.
    pub seed: Option<u64>,
    /// Long-term memory: lessons recalled into each agent's system prompt as it starts.
    pub memory: Option<Arc<dyn RunMemory>>,
    /// The workbench's MCP servers, for experts with `mcp:` tools.
    pub mcp: Option<Arc<dyn McpTools>>,
    /// The root is a caller outside troupe (an MCP client of `troupe mcp serve`): it runs no
    /// model and stays working until [`RootCaller::finish_external`]; its tools are called
    /// through [`RootCaller::call_as_root`], with the same semantics as an agent's.
    pub external_root: bool,
}

/// How a run ended, as `troupe run` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub status: RunStatus,
    pub root: TaskId,
    pub result: Option<String>,
    pub error: Option<String>,
    pub usage: Usage,
    pub tasks: TaskCounts,
    pub elapsed_ms: u64,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no expert named `{0}` in agents/")]
    UnknownRoot(String),
    #[error("{0}")]
    Model(#[from] ModelError),
}
