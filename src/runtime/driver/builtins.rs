//! Executing the built-in tools for a caller (an agent, or an external root): starting
//! subtasks (`call_agent`, `call_slm`) under the creation limits, reading and waiting on them,
//! cancelling them, listing them, and memory's `remember` and `recall`.
//!
//! Invariants: whatever a model sends is a tool error it can read, never a panic; a caller
//! reaches only tasks within its own subtree; who may call which expert is decided by the pure
//! `tools::callee`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::profile::Profile;
use super::state::RunDriver;
use super::supervise::{SubtaskWork, spawn_task};
use crate::config::AUTO_MODEL;
use crate::protocol::{EventBody, TaskId, TaskKind, ToolCall, shorten};
use crate::runtime::registry::{CreateError, CreateLimits, NewTask};
use crate::runtime::tools::{BuiltinCall, Callee, callee, parse_builtin};

impl RunDriver {
    /// Executes a built-in tool for `caller`. `Err` is a tool error the model reads.
    pub(super) async fn run_builtin(
        self: &Arc<Self>,
        caller: TaskId,
        profile: &Arc<Profile>,
        call: &ToolCall,
        // The call's `tool_call` event, which a lesson kept by `remember` points at.
        seq: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<Value, String> {
        match parse_builtin(&call.name, &call.arguments)? {
            BuiltinCall::CallAgent { task, agent, model } => {
                let known: Vec<&str> =
                    self.profiles.iter().filter(|(_, p)| p.callable).map(|(name, _)| name.as_str()).collect();
                let child = match callee(&profile.spec.experts, profile.spec.self_copies, agent.as_deref(), &known)? {
                    Callee::SelfCopy => profile.clone(),
                    // `callee` accepts only names in `known`, the keys of `profiles`.
                    Callee::Expert(name) => {
                        self.profiles.get(name).cloned().ok_or_else(|| format!("there is no expert `{name}`"))?
                    }
                };
                let child = match model {
                    // The same expert on another model alias (the caller's `model` argument).
                    Some(alias) => Arc::new(Profile { model: self.chosen_model(profile, &alias)?, ..(*child).clone() }),
                    None => child,
                };
                if &*child.model != AUTO_MODEL {
                    self.models.get(&child.model).map_err(|e| e.to_string())?;
                }
                let wall = child.wall;
                let new = NewTask {
                    parent: Some(caller),
                    kind: TaskKind::Agent,
                    agent: child.name.clone(),
                    model: child.model.clone(),
                    task: task.clone(),
                };
                let id = self.start_subtask(caller, profile, new, SubtaskWork::Agent { profile: child, task }, wall)?;
                Ok(json!({"uri": id, "status": "working"}))
            }
            BuiltinCall::CallSlm { prompt, system, max_tokens, model } => {
                let alias: Arc<str> = match model {
                    Some(alias) => self.chosen_model(profile, &alias)?,
                    None => Arc::from(self.slm_alias.as_str()),
                };
                self.models.get(&alias).map_err(|e| e.to_string())?;
                let new = NewTask {
                    parent: Some(caller),
                    kind: TaskKind::Slm,
                    agent: Arc::from("slm"),
                    model: alias.clone(),
                    task: prompt.clone(),
                };
                let wall = Duration::from_secs(self.limits.max_wall_seconds_per_subtask);
                let id = self.start_subtask(
                    caller,
                    profile,
                    new,
                    SubtaskWork::Slm { alias, prompt, system, max_tokens },
                    wall,
                )?;
                Ok(json!({"uri": id, "status": "working"}))
            }
            BuiltinCall::GetTaskStatus { uri, wait_seconds } => {
                let id = self.known_task(caller, &uri)?;
                if wait_seconds > 0.0 {
                    self.set_status_message(caller, format!("waiting on {id}"));
                    self.wait_terminal(id, Some(Duration::from_secs_f64(wait_seconds)), cancel).await;
                }
                let resource = self.lock().registry.resource(id).map_err(|e| e.to_string())?;
                serde_json::to_value(resource).map_err(|e| e.to_string())
            }
            BuiltinCall::CancelTask { uri } => {
                let id = self.known_task(caller, &uri)?;
                self.cancel_subtree(id, &format!("cancelled by {caller}"));
                let resource = self.lock().registry.resource(id).map_err(|e| e.to_string())?;
                serde_json::to_value(resource).map_err(|e| e.to_string())
            }
            BuiltinCall::Remember { text, expert_scope } => {
                let memory = self.memory.clone().ok_or("memory is off for this run: nothing was kept")?;
                let expert = profile.name.to_string();
                let provenance = crate::runtime::memory::Provenance { run_id: self.run_id.clone(), seq };
                let kept =
                    tokio::task::spawn_blocking(move || memory.remember(&expert, &text, expert_scope, provenance))
                        .await
                        .map_err(|e| format!("remembering stopped: {e}"))??;
                Ok(json!({"id": kept.id, "merged": kept.merged, "truncated": kept.truncated}))
            }
            BuiltinCall::Recall { query, k } => {
                let memory = self.memory.clone().ok_or("memory is off for this run: there is nothing to recall")?;
                let expert = profile.name.to_string();
                let lessons = tokio::task::spawn_blocking(move || memory.search(&expert, &query, k))
                    .await
                    .map_err(|e| format!("recalling stopped: {e}"))??;
                Ok(json!({"lessons": lessons}))
            }
            BuiltinCall::ListTasks => {
                let ledger = self.lock();
                let children = ledger.registry.children(caller).map_err(|e| e.to_string())?;
                let list: Vec<Value> = children
                    .into_iter()
                    .filter_map(|c| ledger.registry.resource(c).ok())
                    .map(|r| json!({"uri": r.uri, "kind": r.kind, "agent": r.agent, "status": r.status, "task": shorten(&r.task, 120)}))
                    .collect();
                Ok(json!({"tasks": list}))
            }
        }
    }

    /// Parses a URI a model gave and checks the task exists, with a hint listing the caller's
    /// own subtasks when it does not.
    pub(super) fn known_task(&self, caller: TaskId, uri: &str) -> Result<TaskId, String> {
        let ledger = self.lock();
        let yours = || {
            let children = ledger.registry.children(caller).unwrap_or_default();
            if children.is_empty() {
                "you have started no subtasks".to_owned()
            } else {
                format!("your subtasks: {}", children.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            }
        };
        let id = TaskId::parse(uri).map_err(|e| format!("{e}; {}", yours()))?;
        if ledger.registry.status(id).is_err() {
            return Err(format!("no task {id} in this run; {}", yours()));
        }
        // Only what the caller started, directly or below: waiting on itself or an ancestor
        // could only stall, and other branches' work is theirs.
        if id == caller || !ledger.registry.is_within(id, caller).unwrap_or(false) {
            return Err(format!("{id} is not one of your subtasks; {}", yours()));
        }
        Ok(id)
    }

    /// Creates and spawns a subtask of `caller`, or reports the limit that refused it.
    pub(super) fn start_subtask(
        self: &Arc<Self>,
        caller: TaskId,
        caller_profile: &Profile,
        new: NewTask,
        work: SubtaskWork,
        wall: Duration,
    ) -> Result<TaskId, String> {
        let limits = CreateLimits {
            max_depth: self.limits.max_depth,
            max_children: caller_profile.max_children,
            max_concurrent: self.limits.max_concurrent_subtasks,
            max_total: self.limits.max_subtasks_per_run,
        };
        let (id, token) = {
            let mut ledger = self.lock();
            let parent_token =
                ledger.tokens.get(&caller).cloned().ok_or_else(|| format!("{caller} has already ended"))?;
            let (kind, agent, model, task) = (new.kind, new.agent.to_string(), new.model.to_string(), new.task.clone());
            match ledger.registry.create(new, &limits, self.clock.now()) {
                Ok(id) => {
                    self.emit(
                        &mut ledger,
                        EventBody::TaskCreated { uri: id, parent: Some(caller), kind, agent, model, task },
                    );
                    let token = parent_token.child_token();
                    ledger.tokens.insert(id, token.clone());
                    (id, token)
                }
                Err(CreateError::Limit(hit)) => {
                    self.emit(
                        &mut ledger,
                        EventBody::LimitHit {
                            uri: caller,
                            limit: hit.limit.to_owned(),
                            value: hit.value,
                            message: hit.message.clone(),
                        },
                    );
                    return Err(hit.message);
                }
                Err(CreateError::Registry(err)) => return Err(err.to_string()),
            }
        };
        spawn_task(self.clone(), id, work, token, wall);
        Ok(id)
    }
}
