//! What a run asks of MCP servers, seen from the runtime: the tools an agent's `mcp:` entries
//! stand for, and calling one. The client (connections, processes, the protocol) lives in
//! `crate::mcp`; the runtime knows only this trait, so it stays free of rmcp.
//!
//! Invariant: an MCP server is a tool provider, never a reason for a run to fail: a server that
//! cannot be reached leaves its tools out (said in the `mcp_tools` event), and a call that
//! fails is a tool error the model reads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::protocol::ToolSpec;

/// A boxed future, so the trait stays object-safe.
pub type McpFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An MCP tool given to an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct McpTool {
    /// What the model sees: its name (`<server>__<tool>`, valid for every provider), the
    /// server's description and input schema as they are.
    pub spec: ToolSpec,
    /// `mcp:<server>/<tool>`.
    pub reference: String,
    pub server: String,
    /// The tool's name on its server.
    pub tool: String,
}

/// The tools some `mcp:` entries stand for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct McpResolved {
    pub tools: Vec<McpTool>,
    /// A line per server that could not be reached, or entry that matched nothing.
    pub problems: Vec<String>,
}

/// A call's result as the model reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct McpReply {
    pub content: Value,
    /// The server said the call failed (`isError`): the model reads why.
    pub is_error: bool,
}

/// What a call came to: an answer, or a task the server runs (the Tasks extension), which
/// troupe follows as a subtask of kind `mcp`.
#[derive(Clone, Debug, PartialEq)]
pub enum McpOutcome {
    Done(McpReply),
    Task {
        task_id: String,
        /// How often the server asks to be polled.
        poll: std::time::Duration,
    },
}

/// Where a server's task stands.
#[derive(Clone, Debug, PartialEq)]
pub enum McpTaskState {
    Working { message: Option<String> },
    Done(McpReply),
    Failed(String),
    Cancelled,
}

/// Progress of a call, as lines for the calling task's `status_message`.
pub type McpProgress = Arc<dyn Fn(String) + Send + Sync>;

/// The MCP servers of a workbench, as a run uses them.
pub trait McpTools: Send + Sync {
    /// The tools `references` (an expert's `mcp:<server>/<tool>` and `mcp:<server>/*` entries)
    /// stand for, starting their servers if needed.
    fn resolve<'a>(&'a self, references: &'a [String]) -> McpFuture<'a, McpResolved>;

    /// Calls `tool` with `arguments`. `Err` when the call could not be made or answered (the
    /// server is down, hung past its timeout, or answered garbage); `cancel` abandons it (the
    /// server is told).
    fn call<'a>(
        &'a self,
        tool: &'a McpTool,
        arguments: Value,
        progress: McpProgress,
        cancel: CancellationToken,
    ) -> McpFuture<'a, Result<McpOutcome, String>>;

    /// Where `tool`'s server's task `task_id` stands (`tasks/get`).
    fn task_state<'a>(&'a self, tool: &'a McpTool, task_id: &'a str) -> McpFuture<'a, Result<McpTaskState, String>>;

    /// Asks `tool`'s server to cancel its task `task_id` (`tasks/cancel`) without waiting for
    /// the answer: it is called from a drop guard, when the subtask following the task is
    /// abandoned. The request is the client's to finish: closing the client waits for it, so a
    /// run that ends because it was cancelled still reaches the server.
    fn cancel_task(&self, tool: &McpTool, task_id: String);
}
