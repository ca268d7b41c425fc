//! An agent's work: its model resolved, its lessons recalled, its tools gathered, then its
//! [`AgentMachine`]'s effects carried out one by one (model calls, tool calls, the wait for
//! children before the last turn), and its answer given under its `on_finish` policy.
//!
//! Invariants: the machine decides, this file only does what it asks; a tool result is cut to
//! the expert's `max_tool_result_bytes` before both the event and the model see it, so they
//! read the same text; nothing is reported after the task's token was cancelled.

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::profile::Profile;
use super::state::RunDriver;
use crate::model::{ModelError, ModelRequest};
use crate::protocol::{EventBody, OnFinish, TaskId};
use crate::runtime::agent::{AgentEffect, AgentMachine, AgentSetup, SettledChild, planned_tool};
use crate::runtime::memory::RecallLimits;
use crate::runtime::tools::bound_tool_result;

impl RunDriver {
    /// The expert's system prompt, with the lessons memory recalls for this task appended in a
    /// marked block (and a `memory_recalled` event saying which). Recalling never fails the
    /// agent: an error is reported in the event and the agent starts with its own prompt.
    pub(super) async fn recall(&self, id: TaskId, profile: &Profile, task: &str) -> String {
        let mut prompt = profile.spec.system_prompt.clone();
        let Some(memory) = self.memory.clone() else { return prompt };
        self.set_status_message(id, "recalling lessons".into());
        let (expert, task) = (profile.name.to_string(), task.to_owned());
        let limits = RecallLimits {
            k: profile.spec.recall_k.map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
            min_score: profile.spec.recall_min_score,
        };
        if limits.k == Some(0) {
            return prompt;
        }
        let recalled = tokio::task::spawn_blocking(move || memory.recall(&expert, &task, limits)).await;
        let (lessons, error) = match recalled {
            Ok(Ok(lessons)) => (lessons, None),
            Ok(Err(error)) => (Vec::new(), Some(error)),
            Err(error) => (Vec::new(), Some(format!("recalling stopped: {error}"))),
        };
        if lessons.is_empty() && error.is_none() {
            return prompt;
        }
        if !lessons.is_empty() {
            prompt.push_str(&crate::runtime::memory::memory_block(&lessons));
        }
        self.emit_now(EventBody::MemoryRecalled { uri: id, lessons, error });
        prompt
    }

    pub(super) async fn run_agent(
        self: &Arc<Self>,
        id: TaskId,
        profile: Arc<Profile>,
        task: String,
        cancel: &CancellationToken,
    ) {
        let Some(model) = self.resolve_model(id, &profile, &task, cancel).await else { return };
        let system_prompt = self.recall(id, &profile, &task).await;
        let (tools, mcp_tools) = self.agent_tools(id, &profile).await;
        let mut machine = AgentMachine::new(AgentSetup {
            system_prompt,
            task,
            tool_names: tools.iter().map(|t| t.name.clone()).collect(),
            max_turns: profile.max_turns,
        });
        while let Some(effect) = machine.poll_effect() {
            match effect {
                AgentEffect::Message(message) => self.record_message(id, &message),
                AgentEffect::CallModel { turn, offer_tools } => {
                    if let Err(message) = self.check_token_budget(id) {
                        self.fail(id, message);
                        return;
                    }
                    self.set_status_message(id, format!("turn {turn}/{}: thinking", profile.max_turns));
                    let request = ModelRequest {
                        task: id,
                        agent: profile.name.to_string(),
                        messages: machine.conversation().to_vec(),
                        tools: if offer_tools { tools.clone() } else { Vec::new() },
                        tool_choice: profile.spec.tool_choice,
                        // A planned MCP tool is named in the file by its reference.
                        forced_tool: planned_tool(&profile.spec.tool_plan, turn, offer_tools, |planned| {
                            mcp_tools.values().find(|t| t.reference == planned).map(|t| t.spec.name.clone())
                        }),
                        sampling: profile.sampling,
                    };
                    match self.call_model(id, &model, request, cancel).await {
                        Ok(reply) => machine.handle_model_reply(reply.text, reply.calls),
                        Err(ModelError::Cancelled) => {
                            machine.handle_cancel();
                            return;
                        }
                        Err(err) => machine.handle_model_error(err.to_string()),
                    }
                }
                AgentEffect::RunTool(call) => {
                    let seq = self.emit_now(EventBody::ToolCall {
                        uri: id,
                        call_id: call.id.clone(),
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                    });
                    self.set_status_message(id, format!("calling {}", call.name));
                    let outcome = match mcp_tools.get(&call.name) {
                        Some(tool) => self.run_mcp(id, &profile, tool, &call, cancel).await,
                        None => self.run_builtin(id, &profile, &call, seq, cancel).await.map(|value| (value, false)),
                    };
                    let (content, is_error) = match outcome {
                        Ok(reply) => reply,
                        Err(message) => (Value::String(message), true),
                    };
                    if cancel.is_cancelled() {
                        return;
                    }
                    // The event records what the model reads: both cut to the expert's limit.
                    let (content, text) = bound_tool_result(content, profile.max_tool_result_bytes);
                    self.emit_now(EventBody::ToolResult {
                        uri: id,
                        call_id: call.id.clone(),
                        tool: call.name.clone(),
                        result: content,
                        is_error,
                    });
                    machine.handle_tool_result(&call.id, text, is_error);
                }
                AgentEffect::AwaitChildren => {
                    let working = self.lock().registry.working_children(id).unwrap_or_default();
                    if !working.is_empty() {
                        self.set_status_message(
                            id,
                            format!("waiting for {} subtasks before its last turn", working.len()),
                        );
                    }
                    // Each child has its own wall-time limit, and this task's own limit drops
                    // the wait, so it cannot hang.
                    for child in working {
                        if !self.wait_terminal(child, None, cancel).await {
                            return;
                        }
                    }
                    machine.handle_children_settled(self.settled_children(id));
                }
                AgentEffect::ToolRefused { call, error } => {
                    self.emit_now(EventBody::ToolCall {
                        uri: id,
                        call_id: call.id.clone(),
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                    });
                    self.emit_now(EventBody::ToolResult {
                        uri: id,
                        call_id: call.id,
                        tool: call.name,
                        result: Value::String(error),
                        is_error: true,
                    });
                }
                AgentEffect::Finish(answer) => {
                    self.finish_agent(id, &profile, answer, cancel).await;
                    return;
                }
                AgentEffect::Fail { error, limit } => {
                    if let Some(limit) = limit {
                        self.limit_hit(id, "max_turns_per_agent", u64::from(limit.max_turns), error.clone());
                    }
                    self.fail(id, error);
                    return;
                }
            }
        }
        self.fail(id, "the agent stopped without an answer".into());
    }

    /// Every subtask `id` started, with how it ended, for its last turn.
    pub(super) fn settled_children(&self, id: TaskId) -> Vec<SettledChild> {
        let ledger = self.lock();
        let children = ledger.registry.children(id).unwrap_or_default();
        children
            .into_iter()
            .filter_map(|child| ledger.registry.resource(child).ok())
            .map(|resource| SettledChild {
                agent: resource.agent,
                status: resource.status.as_str().to_owned(),
                text: resource.result.or(resource.error).unwrap_or_default(),
            })
            .collect()
    }

    /// Applies the expert's `on_finish` policy to children still working, then completes.
    pub(super) async fn finish_agent(&self, id: TaskId, profile: &Profile, answer: String, cancel: &CancellationToken) {
        let working = self.lock().registry.working_children(id).unwrap_or_default();
        if working.is_empty() {
            self.complete(id, answer);
            return;
        }
        self.emit_now(EventBody::ChildrenOnFinish { uri: id, policy: profile.on_finish, children: working.clone() });
        match profile.on_finish {
            OnFinish::CancelChildren => {
                for child in working {
                    self.cancel_subtree(child, "its parent finished (on_finish = \"cancel_children\")");
                }
            }
            OnFinish::WaitForChildren => {
                self.set_status_message(id, format!("answered; waiting for {} subtasks", working.len()));
                for child in working {
                    if !self.wait_terminal(child, None, cancel).await {
                        return;
                    }
                }
            }
        }
        self.complete(id, answer);
    }
}
