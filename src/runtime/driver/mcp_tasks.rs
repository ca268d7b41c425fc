//! MCP in a run: the tools an agent's `mcp:` entries stand for (an `mcp_tools` event), calling
//! one, and following a task a server runs for a call as a subtask of kind `mcp`.
//!
//! Invariants: an MCP server is a tool provider, never a reason for a run to fail (a server
//! that cannot be reached is a problem line, a failed call a tool error); a followed task that
//! is dropped unfinished (cancelled, timed out) is cancelled on its server by a drop guard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::profile::Profile;
use super::state::RunDriver;
use super::supervise::SubtaskWork;
use crate::protocol::{EventBody, TaskId, TaskKind, ToolCall, ToolSpec};
use crate::runtime::mcp::{McpOutcome, McpTaskState, McpTool, McpTools};
use crate::runtime::registry::NewTask;

/// Asks an MCP server to cancel its task when the subtask following it is dropped unfinished.
struct CancelMcpTask {
    mcp: Option<Arc<dyn McpTools>>,
    tool: McpTool,
    task_id: String,
}

impl Drop for CancelMcpTask {
    fn drop(&mut self) {
        let Some(mcp) = self.mcp.take() else { return };
        mcp.cancel_task(&self.tool, std::mem::take(&mut self.task_id));
    }
}

impl RunDriver {
    /// The tools an agent is offered: its built-ins, and the MCP tools its `mcp:` entries stand
    /// for (by the name its model sees). The MCP tools, and servers that could not be reached,
    /// are an `mcp_tools` event.
    pub(super) async fn agent_tools(&self, id: TaskId, profile: &Profile) -> (Vec<ToolSpec>, HashMap<String, McpTool>) {
        let mut tools = profile.tools.clone();
        let references: Vec<String> =
            profile.spec.tools.iter().filter(|t| t.starts_with(crate::config::MCP_TOOL_PREFIX)).cloned().collect();
        if references.is_empty() {
            return (tools, HashMap::new());
        }
        let resolved = match &self.mcp {
            Some(mcp) => {
                self.set_status_message(id, "reaching its MCP servers".into());
                mcp.resolve(&references).await
            }
            None => crate::runtime::mcp::McpResolved {
                tools: Vec::new(),
                problems: vec!["this run has no MCP client: its MCP tools are left out".to_owned()],
            },
        };
        let names = resolved
            .tools
            .iter()
            .map(|t| crate::protocol::McpToolName { name: t.spec.name.clone(), reference: t.reference.clone() })
            .collect();
        self.emit_now(EventBody::McpTools { uri: id, tools: names, problems: resolved.problems });
        let mut by_name = HashMap::new();
        for tool in resolved.tools {
            tools.push(tool.spec.clone());
            by_name.insert(tool.spec.name.clone(), tool);
        }
        (tools, by_name)
    }

    /// Calls an MCP tool for agent `id`; the server's progress becomes the task's status.
    pub(super) async fn run_mcp(
        self: &Arc<Self>,
        id: TaskId,
        profile: &Profile,
        tool: &McpTool,
        call: &ToolCall,
        cancel: &CancellationToken,
    ) -> Result<(Value, bool), String> {
        let Some(mcp) = self.mcp.clone() else { return Err("this run has no MCP client".to_owned()) };
        let driver = Arc::downgrade(self);
        let name = call.name.clone();
        let progress: crate::runtime::mcp::McpProgress = Arc::new(move |line: String| {
            if let Some(driver) = driver.upgrade() {
                driver.set_status_message(id, format!("{name}: {line}"));
            }
        });
        match mcp.call(tool, call.arguments.clone(), progress, cancel.clone()).await? {
            McpOutcome::Done(reply) => Ok((reply.content, reply.is_error)),
            // The server runs the call as a task: it becomes a subtask of the caller, with the
            // same resource model as `call_agent`.
            McpOutcome::Task { task_id, poll } => {
                let new = NewTask {
                    parent: Some(id),
                    kind: TaskKind::Mcp,
                    agent: Arc::from(tool.reference.as_str()),
                    model: Arc::from(tool.server.as_str()),
                    task: call.arguments.to_string(),
                };
                let wall = Duration::from_secs(self.limits.max_wall_seconds_per_subtask);
                let work = SubtaskWork::Mcp { tool: Box::new(tool.clone()), task_id, poll };
                let uri = self.start_subtask(id, profile, new, work, wall)?;
                Ok((json!({"uri": uri, "status": "working"}), false))
            }
        }
    }

    /// Polls an MCP server's task until it ends, as subtask `id`'s work. A cancelled or timed
    /// out subtask's work is dropped: the guard then asks the server to cancel the task.
    pub(super) async fn follow_mcp_task(self: &Arc<Self>, id: TaskId, tool: McpTool, task_id: String, poll: Duration) {
        let Some(mcp) = self.mcp.clone() else {
            self.fail(id, "this run has no MCP client".into());
            return;
        };
        let mut guard = CancelMcpTask { mcp: Some(mcp.clone()), tool: tool.clone(), task_id: task_id.clone() };
        loop {
            match mcp.task_state(&tool, &task_id).await {
                Ok(McpTaskState::Working { message }) => {
                    if let Some(message) = message {
                        self.set_status_message(id, message);
                    }
                }
                Ok(McpTaskState::Done(reply)) => {
                    guard.mcp = None;
                    let text = match reply.content {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    if reply.is_error {
                        self.fail(id, text)
                    } else {
                        self.complete(id, text)
                    }
                    return;
                }
                Ok(McpTaskState::Failed(error)) | Err(error) => {
                    guard.mcp = None;
                    self.fail(id, error);
                    return;
                }
                Ok(McpTaskState::Cancelled) => {
                    guard.mcp = None;
                    self.cancel_subtree(id, "the MCP server cancelled its task");
                    return;
                }
            }
            tokio::time::sleep(poll).await;
        }
    }
}
