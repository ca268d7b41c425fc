//! The driver's public face: [`spawn_run`] starts a run (its `run_started`, the root task, the
//! root's work and the run's supervisor), [`RunHandle`] is what a view holds to send `Op`s and
//! wait for the end, and [`RootCaller`] calls an external root's tools (`troupe mcp serve`).
//!
//! Invariant: the handles hold no state of their own; everything they read or change goes
//! through the run's [`RunDriver`] under its lock, so a handle sees what the events said.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::profile::build_profiles;
use super::state::{RunDriver, RunLedger};
use super::supervise::{SubtaskWork, spawn_task};
use super::{Clock, RunConfig, RunSummary, StartError};
use crate::config::AUTO_MODEL;
use crate::model::ModelError;
use crate::protocol::{Event, EventBody, Op, TaskCounts, TaskId, TaskKind, TaskResource, ToolCall, ToolSpec};
use crate::runtime::registry::{CreateLimits, NewTask, Registry};

/// A running run: send it [`Op`]s, wait for its end, read its tasks.
pub struct RunHandle {
    driver: Arc<RunDriver>,
    root: TaskId,
    join: Option<JoinHandle<RunSummary>>,
}

impl RunHandle {
    pub fn root(&self) -> TaskId {
        self.root
    }

    /// Applies a command from a view.
    pub fn send(&self, op: Op) {
        self.driver.handle_op(op);
    }

    /// Waits for the run to end. Cancelling the run with [`Op::CancelRun`] ends it promptly.
    pub async fn wait(&mut self) -> RunSummary {
        match self.join.take() {
            Some(join) => match join.await {
                Ok(summary) => summary,
                Err(err) => self.driver.summary_after_crash(self.root, &err.to_string()),
            },
            None => self.driver.summary_after_crash(self.root, "the run was already waited for"),
        }
    }

    /// A task's resource, as `get_task_status` would return it.
    pub fn resource(&self, id: TaskId) -> Option<TaskResource> {
        self.driver.lock().registry.resource(id).ok()
    }

    pub fn counts(&self) -> TaskCounts {
        self.driver.lock().registry.counts()
    }

    /// The handle an external root's caller uses (see [`RunConfig::external_root`]).
    pub fn root_caller(&self) -> RootCaller {
        RootCaller { driver: self.driver.clone(), root: self.root }
    }
}

/// What calls an external root's tools: the MCP server's side of a session. Cheap to clone.
#[derive(Clone)]
pub struct RootCaller {
    driver: Arc<RunDriver>,
    root: TaskId,
}

impl RootCaller {
    pub fn root(&self) -> TaskId {
        self.root
    }

    /// The root's tools, as its file gives them (the schemas an agent's model would see).
    pub fn tools(&self) -> Vec<ToolSpec> {
        self.driver.profile_of(self.root).map(|p| p.tools.clone()).unwrap_or_default()
    }

    /// A task's resource, as `get_task_status` would return it.
    pub fn resource(&self, id: TaskId) -> Option<TaskResource> {
        self.driver.lock().registry.resource(id).ok()
    }

    /// Every task below the root, parents before their children.
    pub fn descendants(&self) -> Vec<TaskResource> {
        let ledger = self.driver.lock();
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from(ledger.registry.children(self.root).unwrap_or_default());
        while let Some(id) = queue.pop_front() {
            if let Ok(resource) = ledger.registry.resource(id) {
                out.push(resource);
            }
            queue.extend(ledger.registry.children(id).unwrap_or_default());
        }
        out
    }

    /// Calls one of the root's tools on behalf of an external root (see
    /// [`RunConfig::external_root`]), recorded as the root's `tool_call` and `tool_result`.
    /// `Err` is the tool error's text.
    pub async fn call_as_root(&self, call_id: String, tool: &str, arguments: Value) -> Result<Value, String> {
        let profile = self.driver.profile_of(self.root).ok_or("the run's root has no profile")?;
        let token = self.driver.lock().tokens.get(&self.root).cloned().ok_or("the session has ended")?;
        let call = ToolCall { id: call_id, name: tool.to_owned(), arguments };
        let seq = self.driver.emit_now(EventBody::ToolCall {
            uri: self.root,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
        });
        let outcome = self.driver.run_builtin(self.root, &profile, &call, seq, &token).await;
        let (result, is_error) = match &outcome {
            Ok(value) => (value.clone(), false),
            Err(message) => (Value::String(message.clone()), true),
        };
        self.driver.emit_now(EventBody::ToolResult {
            uri: self.root,
            call_id: call.id,
            tool: call.name,
            result,
            is_error,
        });
        outcome
    }

    /// Ends an external root's session: the root completes with `result` (its subtasks still
    /// working are cancelled) and the run finishes.
    pub fn finish_external(&self, result: String) {
        let working = self.driver.lock().registry.working_children(self.root).unwrap_or_default();
        for child in working {
            self.driver.cancel_subtree(child, "the MCP session ended");
        }
        self.driver.complete(self.root, result);
    }
}

/// Starts a run. Events go to `events` as they happen; the last is `run_finished`.
pub fn spawn_run(
    config: RunConfig,
    events: mpsc::UnboundedSender<Event>,
    clock: Arc<dyn Clock>,
) -> Result<RunHandle, StartError> {
    let profiles = build_profiles(&config);
    let root_profile =
        profiles.get(&config.root_agent).cloned().ok_or_else(|| StartError::UnknownRoot(config.root_agent.clone()))?;
    if &*root_profile.model != AUTO_MODEL && !config.external_root {
        config.models.get(&root_profile.model)?;
    }
    let started_at = clock.now();
    let driver = Arc::new(RunDriver {
        profiles,
        limits: config.limits,
        models: config.models.clone(),
        slm_alias: config.slm_alias.clone(),
        prices: config.prices.clone(),
        routing: config.routing.clone(),
        seed: config.seed,
        memory: config.memory.clone(),
        mcp: config.mcp.clone(),
        run_id: config.run_id.clone(),
        clock,
        events,
        ledger: Mutex::new(RunLedger {
            registry: Registry::new(config.salt),
            next_seq: 0,
            tokens: HashMap::new(),
            waiters: HashMap::new(),
            closed: false,
            root: None,
            run_cost: 0.0,
        }),
        started_at,
    });

    let root_token = CancellationToken::new();
    let root = {
        let mut ledger = driver.lock();
        driver.emit(
            &mut ledger,
            EventBody::RunStarted {
                run_id: config.run_id.clone(),
                experiment: config.experiment.clone(),
                root_agent: config.root_agent.clone(),
                task: config.task.clone(),
                prices: config.prices.clone(),
                format: crate::protocol::EVENTS_FORMAT,
                troupe_version: Some(crate::protocol::TROUPE_VERSION.to_owned()),
            },
        );
        let new = NewTask {
            parent: None,
            kind: TaskKind::Agent,
            agent: root_profile.name.clone(),
            model: root_profile.model.clone(),
            task: config.task.clone(),
        };
        let no_limits =
            CreateLimits { max_depth: u32::MAX, max_children: u32::MAX, max_concurrent: u32::MAX, max_total: u32::MAX };
        let root = match ledger.registry.create(new, &no_limits, started_at) {
            Ok(root) => root,
            Err(err) => return Err(StartError::Model(ModelError::Provider(err.to_string()))),
        };
        driver.emit(
            &mut ledger,
            EventBody::TaskCreated {
                uri: root,
                parent: None,
                kind: TaskKind::Agent,
                agent: root_profile.name.to_string(),
                model: root_profile.model.to_string(),
                task: config.task.clone(),
            },
        );
        ledger.tokens.insert(root, root_token.clone());
        ledger.root = Some(root);
        root
    };
    if config.external_root {
        driver.set_status_message(root, "waiting for its client's calls".into());
    } else {
        let work = SubtaskWork::Agent { profile: root_profile.clone(), task: config.task.clone() };
        spawn_task(driver.clone(), root, work, root_token, root_profile.wall);
    }

    let run_driver = driver.clone();
    let join = tokio::spawn(async move { run_driver.supervise(root).await });
    Ok(RunHandle { driver, root, join: Some(join) })
}
