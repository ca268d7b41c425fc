//! The async driver: runs one run on tokio. It owns the [`Registry`], spawns a task per
//! subtask, feeds each agent's [`AgentMachine`] with model replies and tool results, executes
//! the built-in tools, enforces the limits that need a clock or a total, and emits every
//! [`Event`].
//!
//! Invariants:
//! - The registry and the event sequence live under one `std` mutex, never held across an
//!   `.await`; an event is sent while the state change it reports is applied, so `seq` order is
//!   the order things happened and a consumer never sees a result before its task.
//! - Every subtask has a cancellation token that is a child of its parent's, so cancelling a
//!   task reaches its whole subtree even before the registry sweep marks it.
//! - `run_finished` is the last event of a run; nothing is emitted after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::agent::{AgentEffect, AgentMachine, AgentSetup, SettledChild};
use super::mcp::{McpOutcome, McpTaskState, McpTool, McpTools};
use super::memory::{RecallLimits, RunMemory};
use super::registry::{CreateError, CreateLimits, NewTask, Outcome, Registry};
use super::routing::{self, Route};
use super::tools::{BuiltinCall, ExpertOffer, ToolContext, bound_tool_result, builtin_spec, parse_builtin};
use crate::config::{AUTO_MODEL, AgentSpec, Limits, Routing};
use crate::model::{ModelChunk, ModelError, ModelRequest, ModelTable, Sampling};
use crate::protocol::{
    ChatMessage, Event, EventBody, Millis, OnFinish, Op, Price, RunStatus, TaskCounts, TaskId, TaskKind, TaskResource,
    TaskStatus, ToolCall, ToolChoice, ToolSpec, Usage, shorten,
};

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
    /// model and stays working until [`RunHandle::finish_external`]; its tools are called
    /// through [`RunHandle::call_as_root`], with the same semantics as an agent's.
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

/// A running run: send it [`Op`]s, wait for its end, read its tasks.
pub struct RunHandle {
    shared: Arc<Shared>,
    root: TaskId,
    join: Option<JoinHandle<RunSummary>>,
}

impl RunHandle {
    pub fn root(&self) -> TaskId {
        self.root
    }

    /// Applies a command from a view.
    pub fn send(&self, op: Op) {
        self.shared.handle_op(op);
    }

    /// Waits for the run to end. Cancelling the run with [`Op::CancelRun`] ends it promptly.
    pub async fn wait(&mut self) -> RunSummary {
        match self.join.take() {
            Some(join) => match join.await {
                Ok(summary) => summary,
                Err(err) => self.shared.summary_after_crash(self.root, &err.to_string()),
            },
            None => self.shared.summary_after_crash(self.root, "the run was already waited for"),
        }
    }

    /// A task's resource, as `get_task_status` would return it.
    pub fn resource(&self, id: TaskId) -> Option<TaskResource> {
        self.shared.lock().registry.resource(id).ok()
    }

    pub fn counts(&self) -> TaskCounts {
        self.shared.lock().registry.counts()
    }

    /// The handle an external root's caller uses (see [`RunConfig::external_root`]).
    pub fn root_caller(&self) -> RootCaller {
        RootCaller { shared: self.shared.clone(), root: self.root }
    }
}

/// What calls an external root's tools: the MCP server's side of a session. Cheap to clone.
#[derive(Clone)]
pub struct RootCaller {
    shared: Arc<Shared>,
    root: TaskId,
}

impl RootCaller {
    pub fn root(&self) -> TaskId {
        self.root
    }

    /// The root's tools, as its file gives them (the schemas an agent's model would see).
    pub fn tools(&self) -> Vec<ToolSpec> {
        self.shared.profile_of(self.root).map(|p| p.tools.clone()).unwrap_or_default()
    }

    /// A task's resource, as `get_task_status` would return it.
    pub fn resource(&self, id: TaskId) -> Option<TaskResource> {
        self.shared.lock().registry.resource(id).ok()
    }

    /// Every task below the root, parents before their children.
    pub fn descendants(&self) -> Vec<TaskResource> {
        let state = self.shared.lock();
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from(state.registry.children(self.root).unwrap_or_default());
        while let Some(id) = queue.pop_front() {
            if let Ok(resource) = state.registry.resource(id) {
                out.push(resource);
            }
            queue.extend(state.registry.children(id).unwrap_or_default());
        }
        out
    }

    /// Calls one of the root's tools on behalf of an external root (see
    /// [`RunConfig::external_root`]), recorded as the root's `tool_call` and `tool_result`.
    /// `Err` is the tool error's text.
    pub async fn call_as_root(&self, call_id: String, tool: &str, arguments: Value) -> Result<Value, String> {
        let profile = self.shared.profile_of(self.root).ok_or("the run's root has no profile")?;
        let token = self.shared.lock().tokens.get(&self.root).cloned().ok_or("the session has ended")?;
        let call = ToolCall { id: call_id, name: tool.to_owned(), arguments };
        let seq = self.shared.emit_now(EventBody::ToolCall {
            uri: self.root,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
        });
        let outcome = self.shared.run_builtin(self.root, &profile, &call, seq, &token).await;
        let (result, is_error) = match &outcome {
            Ok(value) => (value.clone(), false),
            Err(message) => (Value::String(message.clone()), true),
        };
        self.shared.emit_now(EventBody::ToolResult {
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
        let working = self.shared.lock().registry.working_children(self.root).unwrap_or_default();
        for child in working {
            self.shared.cancel_subtree(child, "the MCP session ended");
        }
        self.shared.complete(self.root, result);
    }
}

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

/// An expert as the driver runs it.
#[derive(Clone)]
struct Profile {
    name: Arc<str>,
    model: Arc<str>,
    spec: Arc<AgentSpec>,
    tools: Vec<ToolSpec>,
    max_turns: u32,
    max_children: u32,
    wall: Duration,
    on_finish: OnFinish,
    sampling: Sampling,
    /// The most of a tool result its model reads.
    max_tool_result_bytes: usize,
}

struct State {
    registry: Registry,
    next_seq: u64,
    /// Tokens of tasks not yet terminal.
    tokens: HashMap<TaskId, CancellationToken>,
    /// Long-polls waiting for a task to end.
    waiters: HashMap<TaskId, Arc<Notify>>,
    /// Set once `run_finished` is sent.
    closed: bool,
    root: Option<TaskId>,
    /// Dollars spent so far, from the aliases' prices (calls to unpriced aliases count 0).
    run_cost: f64,
}

struct Shared {
    profiles: BTreeMap<String, Arc<Profile>>,
    limits: Limits,
    models: ModelTable,
    slm_alias: String,
    prices: BTreeMap<String, Price>,
    routing: Option<Routing>,
    seed: Option<u64>,
    memory: Option<Arc<dyn RunMemory>>,
    mcp: Option<Arc<dyn McpTools>>,
    run_id: String,
    clock: Arc<dyn Clock>,
    events: mpsc::UnboundedSender<Event>,
    state: Mutex<State>,
    started_at: Millis,
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
    let shared = Arc::new(Shared {
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
        state: Mutex::new(State {
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
        let mut state = shared.lock();
        shared.emit(
            &mut state,
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
        let root = match state.registry.create(new, &no_limits, started_at) {
            Ok(root) => root,
            Err(err) => return Err(StartError::Model(ModelError::Provider(err.to_string()))),
        };
        shared.emit(
            &mut state,
            EventBody::TaskCreated {
                uri: root,
                parent: None,
                kind: TaskKind::Agent,
                agent: root_profile.name.to_string(),
                model: root_profile.model.to_string(),
                task: config.task.clone(),
            },
        );
        state.tokens.insert(root, root_token.clone());
        state.root = Some(root);
        root
    };
    if config.external_root {
        shared.set_status_message(root, "waiting for its client's calls".into());
    } else {
        let work = Work::Agent { profile: root_profile.clone(), task: config.task.clone() };
        spawn_task(shared.clone(), root, work, root_token, root_profile.wall);
    }

    let run_shared = shared.clone();
    let join = tokio::spawn(async move { run_shared.supervise(root).await });
    Ok(RunHandle { shared, root, join: Some(join) })
}

fn build_profiles(config: &RunConfig) -> BTreeMap<String, Arc<Profile>> {
    let limits = &config.limits;
    config
        .agents
        .iter()
        .map(|(name, spec)| {
            let allowed: Vec<ExpertOffer> = config
                .agents
                .values()
                .filter(|other| spec.experts.iter().any(|e| e == "*" || *e == other.name))
                .map(|other| ExpertOffer { name: other.name.clone(), description: other.description.clone() })
                .collect();
            let models = if spec.choose_model { config.models.runnable() } else { Vec::new() };
            let context = ToolContext { experts: allowed, self_copies: spec.self_copies, models };
            let tools: Vec<ToolSpec> = spec.tools.iter().filter_map(|t| builtin_spec(t, &context)).collect();
            let profile = Profile {
                name: Arc::from(name.as_str()),
                model: Arc::from(spec.model.as_str()),
                tools,
                max_turns: spec.max_turns.unwrap_or(limits.max_turns_per_agent),
                max_children: spec.max_children.unwrap_or(limits.max_children_per_agent),
                wall: Duration::from_secs(spec.max_wall_seconds.unwrap_or(limits.max_wall_seconds_per_subtask)),
                on_finish: spec.on_finish.unwrap_or(limits.on_finish),
                max_tool_result_bytes: usize::try_from(
                    spec.max_tool_result_bytes.unwrap_or(limits.max_tool_result_bytes),
                )
                .unwrap_or(usize::MAX),
                sampling: Sampling {
                    temperature: spec.temperature,
                    top_p: spec.top_p,
                    max_tokens: spec.max_tokens,
                    seed: spec.seed.or(config.seed),
                },
                spec: Arc::new(spec.clone()),
            };
            (name.clone(), Arc::new(profile))
        })
        .collect()
}

/// What a spawned task runs.
enum Work {
    Agent {
        profile: Arc<Profile>,
        task: String,
    },
    Slm {
        alias: Arc<str>,
        prompt: String,
        system: Option<String>,
        max_tokens: Option<u32>,
    },
    /// Following a task an MCP server runs for a tool call.
    Mcp {
        tool: Box<McpTool>,
        task_id: String,
        poll: Duration,
    },
}

fn spawn_task(shared: Arc<Shared>, id: TaskId, work: Work, token: CancellationToken, wall: Duration) {
    tokio::spawn(async move {
        // The work runs as its own task so that a panic in it is caught here and fails the
        // subtask instead of leaving it `working` forever.
        let worker = {
            let shared = shared.clone();
            let token = token.clone();
            tokio::spawn(async move {
                match work {
                    Work::Agent { profile, task } => shared.run_agent(id, profile, task, &token).await,
                    Work::Slm { alias, prompt, system, max_tokens } => {
                        shared.run_slm(id, alias, prompt, system, max_tokens, &token).await
                    }
                    Work::Mcp { tool, task_id, poll } => shared.follow_mcp_task(id, *tool, task_id, poll).await,
                }
            })
        };
        let abort = worker.abort_handle();
        tokio::select! {
            // Whoever cancelled the token has already marked the task and its subtree.
            () = token.cancelled() => abort.abort(),
            outcome = tokio::time::timeout(wall, worker) => match outcome {
                Err(_elapsed) => {
                    abort.abort();
                    let secs = wall.as_secs();
                    let message = format!("max_wall_seconds_per_subtask is {secs}: the subtask ran out of time");
                    shared.limit_hit(id, "max_wall_seconds_per_subtask", secs, message.clone());
                    shared.fail(id, message);
                }
                Ok(Err(join)) if join.is_panic() => {
                    tracing::error!(task = %id, "a subtask panicked: {join}");
                    shared.fail(id, "internal error: the subtask crashed (a bug in troupe; please report it)".into());
                }
                Ok(_) => {}
            },
        }
        // Every path above should have ended the task; make sure, so the run can finish.
        if !shared.is_terminal(id) {
            shared.fail(id, "the subtask stopped without a result".into());
        }
    });
}

/// A model's whole reply.
struct Reply {
    text: String,
    calls: Vec<ToolCall>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would leave the registry as it was at the panic;
        // carrying on lets the run report and finish instead of cascading.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `body` as the next event and returns its `seq`; `None` when it was dropped (the run
    /// is closed, or the task already ended).
    fn emit(&self, state: &mut State, body: EventBody) -> Option<u64> {
        if state.closed {
            return None;
        }
        // Nothing more is said of a task after its final status (a chunk already in flight when
        // a cancellation lands is dropped); usage is the exception, since those tokens were spent.
        let late = match &body {
            EventBody::Message { uri, .. }
            | EventBody::MessageDelta { uri, .. }
            | EventBody::ToolCall { uri, .. }
            | EventBody::ToolResult { uri, .. }
            | EventBody::LimitHit { uri, .. }
            | EventBody::Routed { uri, .. }
            | EventBody::MemoryRecalled { uri, .. }
            | EventBody::McpTools { uri, .. }
            | EventBody::ChildrenOnFinish { uri, .. } => {
                state.registry.status(*uri).map_or(true, TaskStatus::is_terminal)
            }
            EventBody::RunStarted { .. }
            | EventBody::TaskCreated { .. }
            | EventBody::TaskStatus { .. }
            | EventBody::Usage { .. }
            | EventBody::RunFinished { .. } => false,
        };
        if late {
            return None;
        }
        let seq = state.next_seq;
        let event = Event { seq, ts: self.clock.now(), body };
        state.next_seq += 1;
        // The receiver is gone only when the view stopped listening; the run still finishes.
        let _ = self.events.send(event);
        Some(seq)
    }

    /// The profile of the expert task `id` runs.
    fn profile_of(&self, id: TaskId) -> Option<Arc<Profile>> {
        let agent = self.lock().registry.resource(id).ok()?.agent;
        self.profiles.get(agent.as_str()).cloned()
    }

    fn emit_now(&self, body: EventBody) -> Option<u64> {
        let mut state = self.lock();
        self.emit(&mut state, body)
    }

    fn is_terminal(&self, id: TaskId) -> bool {
        self.lock().registry.status(id).map_or(true, TaskStatus::is_terminal)
    }

    fn handle_op(&self, op: Op) {
        match op {
            Op::CancelTask { uri } => self.cancel_subtree(uri, "cancelled by the user"),
            Op::CancelRun => {
                let root = self.lock().root;
                if let Some(root) = root {
                    self.cancel_subtree(root, "cancelled by the user");
                }
            }
        }
    }

    fn set_status_message(&self, id: TaskId, message: String) {
        let mut state = self.lock();
        if state.registry.status(id).map_or(true, TaskStatus::is_terminal) {
            return;
        }
        if state.registry.set_status_message(id, Some(message.clone())).is_ok() {
            self.emit(
                &mut state,
                EventBody::TaskStatus {
                    uri: id,
                    status: TaskStatus::Working,
                    status_message: Some(message),
                    result: None,
                    error: None,
                },
            );
        }
    }

    /// Ends a task, tells its waiters, and reports it. False if it had already ended.
    fn finish_locked(&self, state: &mut State, id: TaskId, outcome: Outcome) -> bool {
        let (result, error) = match &outcome {
            Outcome::Completed(text) => (Some(text.clone()), None),
            Outcome::Failed(text) | Outcome::Cancelled(text) => (None, Some(text.clone())),
        };
        let Ok(status) = state.registry.finish(id, outcome, self.clock.now()) else { return false };
        // Stops whatever still runs for it (a model stream after a timeout, say).
        if let Some(token) = state.tokens.remove(&id) {
            token.cancel();
        }
        if let Some(notify) = state.waiters.remove(&id) {
            notify.notify_waiters();
        }
        self.emit(state, EventBody::TaskStatus { uri: id, status, status_message: None, result, error });
        true
    }

    fn complete(&self, id: TaskId, result: String) {
        let mut state = self.lock();
        self.finish_locked(&mut state, id, Outcome::Completed(result));
    }

    /// Fails a task; its children still working are orphans and are cancelled first, so that no
    /// task ever sees its token cancelled before the registry has marked it.
    fn fail(&self, id: TaskId, error: String) {
        let mut state = self.lock();
        if state.registry.status(id).map_or(true, TaskStatus::is_terminal) {
            return;
        }
        let working = state.registry.working_children(id).unwrap_or_default();
        if !working.is_empty() {
            self.emit(
                &mut state,
                EventBody::ChildrenOnFinish { uri: id, policy: OnFinish::CancelChildren, children: working.clone() },
            );
            for child in working {
                self.cancel_subtree_locked(&mut state, child, "its parent failed");
            }
        }
        self.finish_locked(&mut state, id, Outcome::Failed(error));
    }

    fn cancel_subtree(&self, id: TaskId, reason: &str) {
        let mut state = self.lock();
        self.cancel_subtree_locked(&mut state, id, reason);
    }

    /// Marks `id` and its working descendants cancelled, then cancels their tokens.
    fn cancel_subtree_locked(&self, state: &mut State, id: TaskId, reason: &str) {
        let now = self.clock.now();
        let Ok(cancelled) = state.registry.cancel_subtree(id, reason, now) else { return };
        for task in &cancelled {
            if let Some(notify) = state.waiters.remove(task) {
                notify.notify_waiters();
            }
            self.emit(
                state,
                EventBody::TaskStatus {
                    uri: *task,
                    status: TaskStatus::Cancelled,
                    status_message: None,
                    result: None,
                    error: Some(reason.to_owned()),
                },
            );
        }
        for task in cancelled {
            if let Some(token) = state.tokens.remove(&task) {
                token.cancel();
            }
        }
    }

    fn limit_hit(&self, id: TaskId, limit: &str, value: u64, message: String) {
        self.emit_now(EventBody::LimitHit { uri: id, limit: limit.to_owned(), value, message });
    }

    /// Waits until `id` is terminal (true), or the deadline passes or `cancel` fires (false).
    async fn wait_terminal(&self, id: TaskId, timeout: Option<Duration>, cancel: &CancellationToken) -> bool {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let notify = {
                let mut state = self.lock();
                match state.registry.status(id) {
                    Ok(status) if !status.is_terminal() => {}
                    _ => return true,
                }
                state.waiters.entry(id).or_insert_with(|| Arc::new(Notify::new())).clone()
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_terminal(id) {
                return true;
            }
            let sleep = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = &mut notified => {}
                () = cancel.cancelled() => return false,
                () = sleep => return self.is_terminal(id),
            }
        }
    }

    /// Waits for the root to end, sweeps what is left, and closes the run.
    async fn supervise(self: Arc<Self>, root: TaskId) -> RunSummary {
        let never = CancellationToken::new();
        self.wait_terminal(root, None, &never).await;
        let mut state = self.lock();
        let leftovers: Vec<TaskId> = state.tokens.keys().copied().collect();
        for task in leftovers {
            self.cancel_subtree_locked(&mut state, task, "the run ended");
        }
        let summary = self.summary_locked(&state, root);
        self.emit(
            &mut state,
            EventBody::RunFinished {
                status: summary.status,
                result: summary.result.clone(),
                error: summary.error.clone(),
                usage: summary.usage,
                tasks: summary.tasks,
                elapsed_ms: summary.elapsed_ms,
            },
        );
        state.closed = true;
        summary
    }

    fn summary_locked(&self, state: &State, root: TaskId) -> RunSummary {
        let resource = state.registry.resource(root).ok();
        let status = match resource.as_ref().map(|r| r.status) {
            Some(TaskStatus::Completed) => RunStatus::Completed,
            Some(TaskStatus::Cancelled) => RunStatus::Cancelled,
            _ => RunStatus::Failed,
        };
        RunSummary {
            status,
            root,
            result: resource.as_ref().and_then(|r| r.result.clone()),
            error: resource.as_ref().and_then(|r| r.error.clone()),
            usage: state.registry.run_usage(),
            tasks: state.registry.counts(),
            elapsed_ms: self.clock.now().saturating_sub(self.started_at),
        }
    }

    fn summary_after_crash(&self, root: TaskId, why: &str) -> RunSummary {
        let state = self.lock();
        let mut summary = self.summary_locked(&state, root);
        summary.status = RunStatus::Failed;
        summary.error = Some(format!("the run's supervisor stopped: {why}"));
        summary
    }

    fn record_message(&self, id: TaskId, message: &ChatMessage) {
        self.emit_now(EventBody::Message { uri: id, role: message.role, content: message.content.clone() });
    }

    /// Refuses a model call when the run's token budget or cost budget is spent.
    fn check_token_budget(&self, id: TaskId) -> Result<(), String> {
        let (used, cost) = {
            let state = self.lock();
            (state.registry.run_usage().total_tokens(), state.run_cost)
        };
        let max = self.limits.max_tokens_per_run;
        if used >= max {
            let message = format!("max_tokens_per_run is {max}: the run has used {used} tokens");
            self.limit_hit(id, "max_tokens_per_run", max, message.clone());
            return Err(message);
        }
        if let Some(max_cost) = self.limits.max_cost
            && cost >= max_cost
        {
            let message = format!("max_cost is ${max_cost}: the run has cost ${cost:.4}");
            // `value` is whole cents: the event's field is an integer.
            self.limit_hit(id, "max_cost", (max_cost * 100.0).round() as u64, message.clone());
            return Err(message);
        }
        Ok(())
    }

    /// Streams one model call, reporting deltas and usage as they come.
    async fn call_model(
        &self,
        id: TaskId,
        alias: &str,
        request: ModelRequest,
        cancel: &CancellationToken,
    ) -> Result<Reply, ModelError> {
        let model = self.models.get(alias)?.clone();
        let mut stream = model.stream(request, cancel.clone());
        let mut reply = Reply { text: String::new(), calls: Vec::new() };
        let mut usage_seen = false;
        loop {
            let chunk = tokio::select! {
                () = cancel.cancelled() => return Err(ModelError::Cancelled),
                chunk = stream.next() => chunk,
            };
            match chunk {
                None => break,
                // A provider may only end a request as cancelled when it was asked to.
                Some(Err(ModelError::Cancelled)) if !cancel.is_cancelled() => {
                    return Err(ModelError::Provider("the model stopped the request unasked".into()));
                }
                Some(Err(err)) => return Err(err),
                Some(Ok(ModelChunk::TextDelta(delta))) => {
                    reply.text.push_str(&delta);
                    self.emit_now(EventBody::MessageDelta { uri: id, delta });
                }
                Some(Ok(ModelChunk::ToolCall(call))) => reply.calls.push(call),
                Some(Ok(ModelChunk::Usage(usage))) => {
                    usage_seen = true;
                    self.add_usage(id, alias, usage);
                }
                Some(Ok(ModelChunk::Notice(notice))) => self.set_status_message(id, notice),
            }
        }
        if !usage_seen {
            if reply.text.is_empty() && reply.calls.is_empty() {
                // A stream that closes with nothing at all is a provider that died, not a reply.
                return Err(ModelError::Provider("the model ended the request without a reply".into()));
            }
            self.add_usage(id, alias, Usage { model_calls: 1, ..Usage::default() });
        }
        Ok(reply)
    }

    fn add_usage(&self, id: TaskId, alias: &str, usage: Usage) {
        let mut state = self.lock();
        if let Some(price) = self.prices.get(alias) {
            state.run_cost += price.cost(&usage);
        }
        if let Ok((task_total, run_total)) = state.registry.add_usage(id, &usage) {
            self.emit(
                &mut state,
                EventBody::Usage {
                    uri: id,
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    task_total,
                    run_total,
                },
            );
        }
    }

    /// The alias `id` runs on: its expert's, or for `model = "auto"` the routing's choice,
    /// recorded as a `routed` event. `None` when the task ended instead (failed, cancelled).
    async fn resolve_model(
        &self,
        id: TaskId,
        profile: &Profile,
        task: &str,
        cancel: &CancellationToken,
    ) -> Option<Arc<str>> {
        if &*profile.model != AUTO_MODEL {
            return Some(profile.model.clone());
        }
        let Some(routing) = &self.routing else {
            self.fail(id, "model = \"auto\" needs a [routing] table in troupe.toml".into());
            return None;
        };
        let route = match routing::route(routing, profile.spec.difficulty, task) {
            Route::Classify { with } => {
                self.set_status_message(id, format!("routing: asking {with} to classify the task"));
                let request = ModelRequest {
                    task: id,
                    agent: "router".into(),
                    messages: vec![ChatMessage::user(routing::classify_prompt(task))],
                    tools: Vec::new(),
                    tool_choice: ToolChoice::Auto,
                    forced_tool: None,
                    sampling: Sampling { temperature: Some(0.0), max_tokens: Some(4), ..Sampling::default() },
                };
                let verdict = match self.call_model(id, &with, request, cancel).await {
                    Ok(reply) => Some(reply.text),
                    Err(ModelError::Cancelled) => return None,
                    Err(_) => None,
                };
                routing::after_classifying(routing, verdict.as_deref())
            }
            decided => decided,
        };
        let Route::Alias { alias, reason } = route else {
            self.fail(id, "routing could not decide a model".into());
            return None;
        };
        if let Err(err) = self.models.get(&alias) {
            self.fail(id, format!("routing chose `{alias}`: {err}"));
            return None;
        }
        self.emit_now(EventBody::Routed { uri: id, alias: alias.clone(), reason });
        Some(Arc::from(alias.as_str()))
    }

    /// The expert's system prompt, with the lessons memory recalls for this task appended in a
    /// marked block (and a `memory_recalled` event saying which). Recalling never fails the
    /// agent: an error is reported in the event and the agent starts with its own prompt.
    async fn recall(&self, id: TaskId, profile: &Profile, task: &str) -> String {
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

    async fn run_agent(self: &Arc<Self>, id: TaskId, profile: Arc<Profile>, task: String, cancel: &CancellationToken) {
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
                        forced_tool: if offer_tools {
                            // A planned MCP tool is named in the file by its reference.
                            profile.spec.tool_plan.get(turn as usize - 1).map(|planned| {
                                mcp_tools
                                    .values()
                                    .find(|t| t.reference == *planned)
                                    .map_or_else(|| planned.clone(), |t| t.spec.name.clone())
                            })
                        } else {
                            None
                        },
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

    /// The tools an agent is offered: its built-ins, and the MCP tools its `mcp:` entries stand
    /// for (by the name its model sees). The MCP tools, and servers that could not be reached,
    /// are an `mcp_tools` event.
    async fn agent_tools(&self, id: TaskId, profile: &Profile) -> (Vec<ToolSpec>, HashMap<String, McpTool>) {
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
    async fn run_mcp(
        self: &Arc<Self>,
        id: TaskId,
        profile: &Profile,
        tool: &McpTool,
        call: &ToolCall,
        cancel: &CancellationToken,
    ) -> Result<(Value, bool), String> {
        let Some(mcp) = self.mcp.clone() else { return Err("this run has no MCP client".to_owned()) };
        let shared = Arc::downgrade(self);
        let name = call.name.clone();
        let progress: crate::runtime::mcp::McpProgress = Arc::new(move |line: String| {
            if let Some(shared) = shared.upgrade() {
                shared.set_status_message(id, format!("{name}: {line}"));
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
                let work = Work::Mcp { tool: Box::new(tool.clone()), task_id, poll };
                let uri = self.start_subtask(id, profile, new, work, wall)?;
                Ok((json!({"uri": uri, "status": "working"}), false))
            }
        }
    }

    /// Polls an MCP server's task until it ends, as subtask `id`'s work. A cancelled or timed
    /// out subtask's work is dropped: the guard then asks the server to cancel the task.
    async fn follow_mcp_task(self: &Arc<Self>, id: TaskId, tool: McpTool, task_id: String, poll: Duration) {
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

    /// The alias a caller named for a subtask, if it may choose and the alias exists.
    fn chosen_model(&self, caller: &Profile, alias: &str) -> Result<Arc<str>, String> {
        if !caller.spec.choose_model {
            return Err(format!(
                "you may not choose a model (`model` = `{alias}`): leave `model` out; an expert's file allows it with choose_model = true"
            ));
        }
        self.models.get(alias).map_err(|e| e.to_string())?;
        Ok(Arc::from(alias))
    }

    /// Every subtask `id` started, with how it ended, for its last turn.
    fn settled_children(&self, id: TaskId) -> Vec<SettledChild> {
        let state = self.lock();
        let children = state.registry.children(id).unwrap_or_default();
        children
            .into_iter()
            .filter_map(|child| state.registry.resource(child).ok())
            .map(|resource| SettledChild {
                agent: resource.agent,
                status: resource.status.as_str().to_owned(),
                text: resource.result.or(resource.error).unwrap_or_default(),
            })
            .collect()
    }

    /// Applies the expert's `on_finish` policy to children still working, then completes.
    async fn finish_agent(&self, id: TaskId, profile: &Profile, answer: String, cancel: &CancellationToken) {
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

    async fn run_slm(
        &self,
        id: TaskId,
        alias: Arc<str>,
        prompt: String,
        system: Option<String>,
        max_tokens: Option<u32>,
        cancel: &CancellationToken,
    ) {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(ChatMessage::system(system));
        }
        messages.push(ChatMessage::user(prompt));
        for message in &messages {
            self.record_message(id, message);
        }
        if let Err(message) = self.check_token_budget(id) {
            self.fail(id, message);
            return;
        }
        self.set_status_message(id, "generating".into());
        let request = ModelRequest {
            task: id,
            agent: "slm".into(),
            messages,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            forced_tool: None,
            sampling: Sampling { max_tokens, seed: self.seed, ..Sampling::default() },
        };
        match self.call_model(id, &alias, request, cancel).await {
            Ok(reply) => {
                self.record_message(id, &ChatMessage::assistant(reply.text.clone(), Vec::new()));
                if reply.text.trim().is_empty() {
                    self.fail(id, "the small model returned an empty answer".into());
                } else {
                    self.complete(id, reply.text);
                }
            }
            Err(ModelError::Cancelled) => {}
            Err(err) => self.fail(id, format!("model error: {err}")),
        }
    }

    /// Executes a built-in tool for `caller`. `Err` is a tool error the model reads.
    async fn run_builtin(
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
                let child = match agent {
                    None if !profile.spec.self_copies => {
                        return Err(format!(
                            "name an expert in `agent` ({}): this agent may not start copies of itself",
                            profile.spec.experts.join(", ")
                        ));
                    }
                    None => profile.clone(),
                    Some(name) => {
                        let allowed = profile.spec.experts.iter().any(|e| e == "*" || *e == name);
                        match self.profiles.get(&name) {
                            Some(expert) if allowed => expert.clone(),
                            _ => {
                                let may: Vec<&str> = self
                                    .profiles
                                    .keys()
                                    .filter(|n| profile.spec.experts.iter().any(|e| e == "*" || e == *n))
                                    .map(String::as_str)
                                    .collect();
                                let what =
                                    if self.profiles.contains_key(&name) { "you may not call" } else { "there is no" };
                                return Err(format!(
                                    "{what} expert `{name}`; {}",
                                    if may.is_empty() {
                                        "you may call no experts: leave `agent` out to start a copy of yourself"
                                            .to_owned()
                                    } else {
                                        format!(
                                            "you may call: {} (or leave `agent` out to start a copy of yourself)",
                                            may.join(", ")
                                        )
                                    }
                                ));
                            }
                        }
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
                let id = self.start_subtask(caller, profile, new, Work::Agent { profile: child, task }, wall)?;
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
                let id =
                    self.start_subtask(caller, profile, new, Work::Slm { alias, prompt, system, max_tokens }, wall)?;
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
                let state = self.lock();
                let children = state.registry.children(caller).map_err(|e| e.to_string())?;
                let list: Vec<Value> = children
                    .into_iter()
                    .filter_map(|c| state.registry.resource(c).ok())
                    .map(|r| json!({"uri": r.uri, "kind": r.kind, "agent": r.agent, "status": r.status, "task": shorten(&r.task, 120)}))
                    .collect();
                Ok(json!({"tasks": list}))
            }
        }
    }

    /// Parses a URI a model gave and checks the task exists, with a hint listing the caller's
    /// own subtasks when it does not.
    fn known_task(&self, caller: TaskId, uri: &str) -> Result<TaskId, String> {
        let state = self.lock();
        let yours = || {
            let children = state.registry.children(caller).unwrap_or_default();
            if children.is_empty() {
                "you have started no subtasks".to_owned()
            } else {
                format!("your subtasks: {}", children.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            }
        };
        let id = TaskId::parse(uri).map_err(|e| format!("{e}; {}", yours()))?;
        if state.registry.status(id).is_err() {
            return Err(format!("no task {id} in this run; {}", yours()));
        }
        // Only what the caller started, directly or below: waiting on itself or an ancestor
        // could only stall, and other branches' work is theirs.
        if id == caller || !state.registry.is_within(id, caller).unwrap_or(false) {
            return Err(format!("{id} is not one of your subtasks; {}", yours()));
        }
        Ok(id)
    }

    /// Creates and spawns a subtask of `caller`, or reports the limit that refused it.
    fn start_subtask(
        self: &Arc<Self>,
        caller: TaskId,
        caller_profile: &Profile,
        new: NewTask,
        work: Work,
        wall: Duration,
    ) -> Result<TaskId, String> {
        let limits = CreateLimits {
            max_depth: self.limits.max_depth,
            max_children: caller_profile.max_children,
            max_concurrent: self.limits.max_concurrent_subtasks,
            max_total: self.limits.max_subtasks_per_run,
        };
        let (id, token) = {
            let mut state = self.lock();
            let parent_token =
                state.tokens.get(&caller).cloned().ok_or_else(|| format!("{caller} has already ended"))?;
            let (kind, agent, model, task) = (new.kind, new.agent.to_string(), new.model.to_string(), new.task.clone());
            match state.registry.create(new, &limits, self.clock.now()) {
                Ok(id) => {
                    self.emit(
                        &mut state,
                        EventBody::TaskCreated { uri: id, parent: Some(caller), kind, agent, model, task },
                    );
                    let token = parent_token.child_token();
                    state.tokens.insert(id, token.clone());
                    (id, token)
                }
                Err(CreateError::Limit(hit)) => {
                    self.emit(
                        &mut state,
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
