//! `troupe mcp serve`: the workbench's experts served over MCP, so that any MCP client can hand
//! work to a troupe expert and poll it.
//!
//! A client's session is a troupe run whose root is the client itself (`mcp-client`, an
//! external root that runs no model): its tools `call_agent`, `call_slm`, `get_task_status`,
//! `cancel_task` and `list_tasks` are the root's built-in tools, with the same semantics as
//! inside troupe, and the session is recorded like any run in `findings/<run-id>/`. Subtasks
//! are resources (`subtask://<id>`, JSON) that can be listed, read and subscribed to. A client
//! that declares the Tasks extension gets `call_agent` and `call_slm` as MCP tasks.
//!
//! Which session a request belongs to: over stdio, the process's one. Over HTTP (`http.rs`),
//! each client that opens a session with `initialize` (protocol revisions before 2026-07-28)
//! gets a `Session` of its own, with its own run, run folder, limits, budget and `subtask://`
//! namespace, closed when the client leaves (DELETE, or rmcp ends the idle session). Requests
//! without a session (the 2026-07-28 revision has none) share one sessionless run per server:
//! each such request stands alone, so a URI must stay readable by the next; that run is closed
//! after it has been idle (nothing working, nothing in flight) for a while, and the next such
//! request starts a new one.
//!
//! Invariants: nothing but JSON-RPC is written to stdout (status lines go to stderr). Nothing a
//! session answers (tool results, resources, task results and statuses, errors) carries a
//! secret: it passes through the same `Redactor` the run's findings do. A session sees only its
//! own run: a URI of another session is "not found".
//!
//! Longer than most files on purpose: the `ServerHandler` of `troupe mcp serve` and its session
//! (the run it drives) are one protocol surface; the HTTP hosting is in `server/http.rs`.

mod http;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock, CreateTaskResult,
    GetTaskParams, GetTaskResult, Implementation, InitializeRequestParams, InitializeResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams, UpdateTaskParams,
};
use rmcp::service::{RequestContext, RoleServer, SubscriptionContext};
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::{ErrorData as McpError, Peer, ServerHandler};
use serde_json::Value;
use tokio::sync::{OnceCell, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use self::http::{HttpOptions, Listening, serve_http};
use super::client::McpPool;
use crate::config::{AgentSpec, DEFAULT_VARIANT, ExperimentSpec, TaskSpec, Workbench};
use crate::experiment::learn::{EndedRun, learn_from_run};
use crate::experiment::meter::{Measured, Meter};
use crate::experiment::record::TrialRecord;
use crate::findings::Redactor;
use crate::launch::{self, RunOptions};
use crate::model::EnginePool;
use crate::protocol::{EventBody, TaskId, TaskStatus};
use crate::runtime::driver::RootCaller;
use crate::runtime::{Clock, SystemClock};

/// The root agent of a session: the MCP client.
pub const CLIENT_AGENT: &str = "mcp-client";
/// The tools a client calls, the root's built-ins.
const CLIENT_TOOLS: [&str; 5] = ["call_agent", "call_slm", "get_task_status", "cancel_task", "list_tasks"];
/// How often an MCP task checks its subtask.
const TASK_POLL: Duration = Duration::from_millis(100);
/// The longest memory may take to learn from a session once it ended.
const LEARNING_TIMEOUT: Duration = Duration::from_secs(120);

/// What serving needs: the workbench and the process-wide pools.
#[derive(Clone)]
pub struct ServeContext {
    pub workbench: Workbench,
    pub engines: EnginePool,
    pub mcp: Arc<McpPool>,
    /// Where status lines go (stderr for stdio).
    pub status: Arc<dyn Fn(&str) + Send + Sync>,
}

/// One MCP session: a troupe run whose root is the client, started on the session's first
/// call (so `initialize` is answered at once, whatever the models take to load).
pub struct Session {
    context: ServeContext,
    /// What every answer passes through: the secrets the run's findings hide.
    redactor: Redactor,
    /// The run, once a start succeeded. A failed start is not kept: the next request tries
    /// again (a model that was unreachable may be back).
    run: OnceCell<Running>,
    /// Cancelled when the session is closed: no run starts after that, and the tasks that
    /// forward notifications stop.
    ended: CancellationToken,
    tasks: TaskManager,
    updates: broadcast::Sender<String>,
    next_call: AtomicU64,
    legacy: Arc<Mutex<LegacySubscriptions>>,
}

#[derive(Default)]
struct LegacySubscriptions {
    uris: HashSet<String>,
    forwarding: bool,
}

struct Running {
    caller: RootCaller,
    dir: PathBuf,
    /// Ends once the run's findings are written.
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Session {
    pub fn new(context: ServeContext) -> Arc<Session> {
        let (updates, _) = broadcast::channel(1024);
        // The run's own redactor is built from the same workbench and experiment when it starts;
        // building it here too lets an answer be redacted before (or without) a run.
        let redactor = match session_workbench(&context.workbench) {
            Ok((workbench, spec)) => launch::redactor(&workbench, &spec),
            Err(_) => Redactor::from_env(&[]),
        };
        Arc::new(Session {
            context,
            redactor,
            run: OnceCell::new(),
            ended: CancellationToken::new(),
            tasks: TaskManager::new(),
            updates,
            next_call: AtomicU64::new(1),
            legacy: Arc::default(),
        })
    }

    /// `text` as a client may read it.
    fn clean(&self, text: &str) -> String {
        self.redactor.redact(text).into_owned()
    }

    /// The session's run, started on first use; a failed start is tried again next time.
    async fn running(&self) -> Result<&Running, McpError> {
        let run = self
            .run
            .get_or_try_init(|| async {
                // Checked inside the cell's initialisation, which `close` waits for: a start
                // that did not begin before the close never begins.
                if self.ended.is_cancelled() {
                    return Err("the session has ended".to_owned());
                }
                self.start().await
            })
            .await;
        run.map_err(|error| McpError::internal_error(self.clean(&error), None))
    }

    async fn start(&self) -> Result<Running, String> {
        let context = self.context.clone();
        let (prepared, learning) = tokio::task::spawn_blocking(move || {
            let (workbench, spec) = session_workbench(&context.workbench)?;
            let clock = SystemClock;
            let now = clock.now();
            let status = context.status.clone();
            let memory = launch::run_memory(&workbench, crate::config::MemoryMode::On, move |line| status(line));
            let options = RunOptions {
                memory: memory.clone(),
                mcp: Some(context.mcp.clone()),
                external_root: true,
                ..RunOptions::default()
            };
            let status = context.status.clone();
            let mut prepared = launch::prepare_spec(
                &workbench,
                &spec,
                now,
                launch::run_salt(now),
                &mut |line| status(line),
                &context.engines,
                &options,
            )
            .map_err(|err| err.to_string())?;
            prepared.unsnapshot(&spec.path);
            let learning =
                memory.map(|memory| Learning { workbench, spec, models: prepared.config.models.clone(), memory });
            Ok::<_, String>((prepared, learning))
        })
        .await
        .map_err(|err| format!("starting the session stopped: {err}"))??;
        let mut launched = launch::launch(prepared, Arc::new(SystemClock)).map_err(|err| err.to_string())?;
        let caller = launched.root_caller();
        let dir = launched.dir().to_path_buf();
        (self.context.status)(&format!("session recorded in {}", dir.display()));
        let updates = self.updates.clone();
        let status = self.context.status.clone();
        let folder = dir.clone();
        let pump = tokio::spawn(async move {
            let mut meter = Meter::default();
            let mut delegated = Delegated::default();
            while let Some(event) = launched.next_event().await {
                meter.apply(&event);
                delegated.apply(&event);
                match &event.body {
                    EventBody::TaskStatus { uri, .. } | EventBody::TaskCreated { uri, .. } => {
                        let _ = updates.send(uri.to_string()); // no subscriber is fine
                    }
                    _ => {}
                }
            }
            if let Err(err) = launched.finish().await {
                status(&format!("writing the session's findings failed: {err}"));
            }
            if let Some(learning) = learning
                && let Some(task) = delegated.task()
            {
                let learned =
                    learning.learn(&folder, &task, delegated.all_completed(), meter.finish(), status.as_ref());
                // Learning (a reflection is a model call) must not hold the server's exit for long.
                if tokio::time::timeout(LEARNING_TIMEOUT, learned).await.is_err() {
                    status("memory stopped learning from the session: it took too long");
                }
            }
        });
        Ok(Running { caller, dir, pump: Mutex::new(Some(pump)) })
    }

    /// Ends the session: its working subtasks are cancelled, its findings written, and memory
    /// has learned from it. Returns the run folder, if a run started and this call was the one
    /// that waited for it to be written (a second close returns `None` at once).
    pub async fn close(&self) -> Option<PathBuf> {
        self.ended.cancel();
        // Waits for a start in progress; starts none (the cell stays empty on `Err`).
        let running = self.run.get_or_try_init(|| async { Err::<Running, ()>(()) }).await.ok();
        self.tasks.shutdown();
        let running = running?;
        running.caller.finish_external("the MCP client disconnected".to_owned());
        let pump = running.pump.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        let _ = pump.await;
        Some(running.dir.clone())
    }

    /// Whether any subtask of the session is still working (a session that is busy is not
    /// idle, however long its client stays silent).
    fn busy(&self) -> bool {
        self.run.get().is_some_and(|running| running.caller.descendants().iter().any(|t| !t.status.is_terminal()))
    }

    /// A subtask of this session (the root, the client itself, is none), or "not found"; a
    /// session whose run has not started has none.
    fn subtask(&self, uri: &str) -> Result<(TaskId, crate::protocol::TaskResource), McpError> {
        let not_found =
            || McpError::resource_not_found(format!("no subtask {} in this session", self.clean(uri)), None);
        let id = TaskId::parse(uri).map_err(|_| not_found())?;
        let running = self.run.get().ok_or_else(not_found)?;
        let resource = running.caller.resource(id).filter(|_| id != running.caller.root()).ok_or_else(not_found)?;
        Ok((id, resource))
    }

    /// Calls one of the root's tools; the answer (or the tool error) as a client may read it.
    async fn call(&self, tool: &str, arguments: Value) -> Result<Value, String> {
        let running = self.running().await.map_err(|e| e.message.to_string())?;
        let call_id = format!("mcp_{}", self.next_call.fetch_add(1, Ordering::Relaxed));
        match running.caller.call_as_root(call_id, tool, arguments).await {
            Ok(value) => Ok(self.redactor.redact_value(&value)),
            Err(message) => Err(self.clean(&message)),
        }
    }

    /// Starts `tool` (`call_agent` or `call_slm`) as an MCP task that ends with the subtask.
    async fn call_as_task(self: &Arc<Self>, tool: &str, arguments: Value) -> Result<CallToolResponse, McpError> {
        let handle = self.call(tool, arguments).await.map_err(|e| McpError::invalid_params(e, None))?;
        let uri = handle.get("uri").and_then(Value::as_str).unwrap_or_default().to_owned();
        let id = TaskId::parse(&uri).map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let session = self.clone();
        // The status names the subtask, so a client can read or subscribe to its resource.
        let options = TaskOptions::new().with_poll_interval_ms(250).with_status_message(uri.clone());
        let task = self.tasks.spawn(options, move |context| {
            Box::pin(async move {
                loop {
                    let resource = session.running().await.ok().and_then(|r| r.caller.resource(id));
                    let Some(resource) = resource else {
                        return Err(TaskExit::Error(McpError::internal_error(format!("{uri} is gone"), None)));
                    };
                    // The MCP task ends as its subtask did: a failed subtask is a failed task
                    // (its error the task's, the resource in the error's data), a cancelled
                    // one a cancelled task. What the task keeps, a client reads: redacted.
                    let value = session.redactor.redact_value(&serde_json::to_value(&resource).unwrap_or(Value::Null));
                    match resource.status {
                        TaskStatus::Completed => return Ok(result_of(value, false)),
                        TaskStatus::Failed => {
                            let reason = resource.error.clone().unwrap_or_else(|| "it failed".to_owned());
                            let message = session.clean(&format!("{uri} failed: {reason}"));
                            return Err(TaskExit::Error(McpError::internal_error(message, Some(value))));
                        }
                        TaskStatus::Cancelled => return Err(TaskExit::Cancelled),
                        TaskStatus::Working | TaskStatus::InputRequired => {}
                    }
                    if let Some(message) = &resource.status_message {
                        context.set_status_message(session.clean(&format!("{uri}: {message}")));
                    }
                    tokio::select! {
                        () = context.cancelled() => {
                            let _ = session.call("cancel_task", serde_json::json!({"uri": uri})).await;
                            return Err(TaskExit::Cancelled);
                        }
                        () = tokio::time::sleep(TASK_POLL) => {}
                    }
                }
            })
        });
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    /// Forwards updates of the URIs subscribed with `resources/subscribe` to `peer`, the
    /// session's own client, until the session ends or the client stops listening.
    fn forward_legacy(&self, peer: Peer<RoleServer>) {
        let mut legacy = self.legacy.lock().unwrap_or_else(PoisonError::into_inner);
        if legacy.forwarding {
            return;
        }
        legacy.forwarding = true;
        let mut updates = self.updates.subscribe();
        // Not the session itself: the task must not keep a closed session alive.
        let (wanted, ended) = (self.legacy.clone(), self.ended.clone());
        tokio::spawn(async move {
            loop {
                let uri = tokio::select! {
                    () = ended.cancelled() => break,
                    update = updates.recv() => match update {
                        Ok(uri) => uri,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                };
                let subscribed = wanted.lock().unwrap_or_else(PoisonError::into_inner).uris.contains(&uri);
                if subscribed && peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)).await.is_err()
                {
                    break;
                }
            }
        });
    }
}

/// A value as a tool result: its JSON as text and as structured content.
fn result_of(value: Value, is_error: bool) -> CallToolResult {
    let text = serde_json::to_string(&value).unwrap_or_default();
    let mut result = if is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    if value.is_object() {
        result.structured_content = Some(value);
    }
    result
}

/// The workbench with the session's root (the client) added, and its one-task experiment.
fn session_workbench(workbench: &Workbench) -> Result<(Workbench, ExperimentSpec), String> {
    if workbench.agents.contains_key(CLIENT_AGENT) {
        return Err(format!(
            "an expert is named `{CLIENT_AGENT}`, the name troupe mcp serve gives its client: rename it"
        ));
    }
    let mut workbench = workbench.clone();
    let path = workbench.root.join("agents").join(format!("{CLIENT_AGENT}.toml"));
    // Its model is never called: an external root runs none.
    let mut client = AgentSpec::new(CLIENT_AGENT, crate::config::AUTO_MODEL, path.clone());
    client.description = "The MCP client of a troupe mcp serve session".to_owned();
    client.tools = CLIENT_TOOLS.iter().map(|t| (*t).to_owned()).collect();
    // The workbench's experts by name, not `*`: `*` would let the client start an agent with
    // its own profile (`mcp-client`, whose model is never meant to run).
    client.experts = workbench.agents.keys().cloned().collect();
    client.self_copies = false;
    client.max_children = Some(workbench.settings.limits.max_subtasks_per_run);
    client.max_wall_seconds = Some(u64::from(u32::MAX));
    workbench.agents.insert(CLIENT_AGENT.to_owned(), client);
    let task = TaskSpec { id: "session".to_owned(), input: "An MCP client's session".to_owned(), expected: None };
    let spec = ExperimentSpec::new("mcp-serve", CLIENT_AGENT, vec![task], path);
    Ok((workbench, spec))
}

/// What the client of a session delegated, and how each delegation ended, from the events:
/// the client's own calls only, not what the experts delegated in turn.
#[derive(Default)]
struct Delegated {
    root: Option<TaskId>,
    tasks: Vec<(TaskId, String)>,
    ended: std::collections::HashMap<TaskId, TaskStatus>,
}

impl Delegated {
    fn apply(&mut self, event: &crate::protocol::Event) {
        match &event.body {
            EventBody::TaskCreated { uri, parent: None, .. } => self.root = Some(*uri),
            EventBody::TaskCreated { uri, parent: Some(parent), task, .. } if Some(*parent) == self.root => {
                self.tasks.push((*uri, task.clone()));
            }
            EventBody::TaskStatus { uri, status, .. } if status.is_terminal() => {
                self.ended.insert(*uri, *status);
            }
            _ => {}
        }
    }

    /// The session's task, as its episode is found by: what the client delegated, in order.
    fn task(&self) -> Option<String> {
        (!self.tasks.is_empty())
            .then(|| self.tasks.iter().map(|(_, task)| task.as_str()).collect::<Vec<_>>().join("\n"))
    }

    /// Whether everything the client delegated completed: the session's outcome, since its root
    /// (the client) always ends completed.
    fn all_completed(&self) -> bool {
        self.tasks.iter().all(|(uri, _)| self.ended.get(uri) == Some(&TaskStatus::Completed))
    }
}

/// What memory needs to learn from a session once it ended, as from any run.
struct Learning {
    workbench: Workbench,
    spec: ExperimentSpec,
    models: crate::model::ModelTable,
    memory: Arc<crate::memory::recall::RunRecall>,
}

impl Learning {
    /// The lessons' use counts and the session's episode (its task: what the client delegated).
    async fn learn(
        self,
        dir: &Path,
        task: &str,
        completed: bool,
        measured: Measured,
        status: &(dyn Fn(&str) + Send + Sync),
    ) {
        let task_id = "session";
        let key = crate::experiment::plan::trial_key(DEFAULT_VARIANT, task_id, 1);
        let mut record =
            TrialRecord::unscored(0, key, DEFAULT_VARIANT.to_owned(), task_id.to_owned(), 1, 0, ".".to_owned());
        record.apply(&measured);
        record.score_by_completion(completed);
        let run_id = dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let ended = EndedRun {
            workbench: &self.workbench,
            spec: &self.spec,
            task,
            dir,
            run_id: &run_id,
            models: &self.models,
            record: &record,
            recalled: &measured.recalled,
            ended_ms: i64::try_from(SystemClock.now()).unwrap_or(i64::MAX),
        };
        learn_from_run(ended, &self.memory, &|line: String| status(&line)).await;
    }
}

/// The MCP face of a session.
#[derive(Clone)]
pub struct TroupeServer {
    scope: Scope,
}

/// Which session a handler's requests belong to.
#[derive(Clone)]
enum Scope {
    /// stdio: the process's one session.
    One(Arc<Session>),
    /// Streamable HTTP: rmcp makes a handler per stateful session (kept for its life) and per
    /// sessionless request. The handler whose `initialize` rmcp answered owns its session;
    /// any other is a sessionless request and uses the hub's sessionless run.
    Http { hub: Arc<http::Hub>, own: Arc<Owned> },
}

/// A stateful HTTP session's own `Session`, set by `initialize`; handed back to the hub to be
/// closed when rmcp drops the session's handler (the client sent DELETE, or its session ended).
struct Owned {
    session: OnceLock<Arc<Session>>,
    closing: mpsc::UnboundedSender<Arc<Session>>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // The hub's closer is gone only once the server stopped, which closes every session.
            let _ = self.closing.send(session);
        }
    }
}

impl TroupeServer {
    pub fn new(session: Arc<Session>) -> TroupeServer {
        TroupeServer { scope: Scope::One(session) }
    }

    fn http(hub: Arc<http::Hub>) -> TroupeServer {
        let own = Arc::new(Owned { session: OnceLock::new(), closing: hub.closing() });
        TroupeServer { scope: Scope::Http { hub, own } }
    }

    /// The session this request belongs to.
    fn session(&self) -> Arc<Session> {
        match &self.scope {
            Scope::One(session) => session.clone(),
            Scope::Http { hub, own } => match own.session.get() {
                Some(session) => session.clone(),
                None => hub.sessionless(),
            },
        }
    }

    /// Whether this handler serves a session of its own (stdio, or HTTP after `initialize`):
    /// only such a client has a connection to send `resources/subscribe` notifications on.
    fn has_own_session(&self) -> bool {
        match &self.scope {
            Scope::One(_) => true,
            Scope::Http { own, .. } => own.session.get().is_some(),
        }
    }

    fn workbench(&self) -> &Workbench {
        match &self.scope {
            Scope::One(session) => &session.context.workbench,
            Scope::Http { hub, .. } => hub.workbench(),
        }
    }

    fn tools(&self, redactor: &Redactor) -> Vec<Tool> {
        let (workbench, _) = match session_workbench(self.workbench()) {
            Ok(pair) => pair,
            Err(_) => return Vec::new(),
        };
        let context = crate::runtime::tools::ToolContext {
            experts: workbench
                .agents
                .values()
                .filter(|a| a.name != CLIENT_AGENT)
                .map(|a| crate::runtime::tools::ExpertOffer {
                    name: a.name.clone(),
                    description: redactor.redact(&a.description).into_owned(),
                })
                .collect(),
            self_copies: false,
            models: Vec::new(),
        };
        CLIENT_TOOLS
            .iter()
            .filter_map(|name| crate::runtime::tools::builtin_spec(name, &context))
            .filter_map(|spec| match spec.parameters {
                Value::Object(schema) => Some(Tool::new(spec.name, spec.description, Arc::new(schema))),
                _ => None,
            })
            .collect()
    }
}

impl ServerHandler for TroupeServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tasks()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("troupe", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "troupe's experts, as tools: call_agent starts one on a task and returns a subtask:// URI at once \
                 (or an MCP task, for clients with the Tasks extension); get_task_status reads it (wait_seconds waits \
                 for the end), cancel_task cancels it with its subtree, list_tasks lists them. Subtasks are also \
                 resources you can read and subscribe to.",
            )
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        // Over HTTP, rmcp answers `initialize` only for a client that opens a session: this
        // handler is that session's for its life, so the session gets its own run.
        if let Scope::Http { hub, own } = &self.scope
            && own.session.get().is_none()
        {
            let _ = own.session.set(hub.open_session()?);
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools(&self.session().redactor)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let session = self.session();
        let name = request.name.to_string();
        if !CLIENT_TOOLS.contains(&name.as_str()) {
            return Err(McpError::invalid_params(
                session.clean(&format!("unknown tool `{name}`: troupe serves {}", CLIENT_TOOLS.join(", "))),
                None,
            ));
        }
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let tasks = context.client_capabilities().is_some_and(|caps| caps.supports_tasks());
        if tasks && (name == "call_agent" || name == "call_slm") {
            return session.call_as_task(&name, arguments).await;
        }
        let outcome = tokio::select! {
            outcome = session.call(&name, arguments) => outcome,
            () = context.ct.cancelled() => return Err(McpError::internal_error("cancelled by the client", None)),
        };
        Ok(CallToolResponse::Complete(match outcome {
            Ok(value) => result_of(value, false),
            Err(message) => result_of(Value::String(message), true),
        }))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let session = self.session();
        let resources = match session.run.get() {
            Some(running) => running
                .caller
                .descendants()
                .into_iter()
                .map(|task| {
                    let name = session.clean(&format!("{} {}", task.kind.as_str(), task.agent));
                    let mut resource = Resource::new(task.uri.to_string(), name);
                    resource.description = Some(session.clean(&crate::protocol::shorten(&task.task, 200)));
                    resource.mime_type = Some("application/json".to_owned());
                    resource
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let session = self.session();
        let (id, resource) = session.subtask(&request.uri)?;
        let value = session.redactor.redact_value(&serde_json::to_value(&resource).unwrap_or(Value::Null));
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        let contents = ResourceContents::text(text, id.to_string()).with_mime_type("application/json");
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(vec![contents])))
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if !self.has_own_session() {
            return Err(McpError::invalid_request(
                "resources/subscribe needs a session (initialize first); without one, use subscriptions/listen",
                None,
            ));
        }
        let session = self.session();
        // Only the session's own subtasks: a foreign URI is not found, and the set stays as
        // small as the session's run.
        let (id, _) = session.subtask(&request.uri)?;
        session.legacy.lock().unwrap_or_else(PoisonError::into_inner).uris.insert(id.to_string());
        session.forward_legacy(context.peer.clone());
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Ok(id) = TaskId::parse(&request.uri)
            && self.has_own_session()
        {
            self.session().legacy.lock().unwrap_or_else(PoisonError::into_inner).uris.remove(&id.to_string());
        }
        Ok(())
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let session = self.session();
        let wanted: HashSet<String> = context
            .accepted()
            .resource_subscriptions
            .iter()
            .flatten()
            .filter_map(|uri| TaskId::parse(uri).ok().map(|id| id.to_string()))
            .collect();
        // This session's updates only, and of them only the ones this listener asked for.
        let mut updates = session.updates.subscribe();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = session.ended.cancelled() => return Ok(()),
                update = updates.recv() => match update {
                    Ok(uri) if wanted.contains(&uri) => {
                        if context.sink().notify_resource_updated(uri).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        Ok(GetTaskResult::new(self.session().tasks.get_task(&request.task_id)?))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.session().tasks.update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.session().tasks.cancel_task(&request.task_id)
    }
}

/// Serves one session over stdin and stdout until the client closes them, then records it.
pub async fn serve_stdio(context: ServeContext) -> Result<Option<PathBuf>, String> {
    use rmcp::ServiceExt as _;
    let session = Session::new(context);
    let server = TroupeServer::new(session.clone());
    let running =
        server.serve(rmcp::transport::stdio()).await.map_err(|err| format!("the MCP session did not start: {err}"))?;
    let _ = running.waiting().await;
    Ok(session.close().await)
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session dropped without `close` (its server stopped some other way): its run ends
        // too, and the run's own task writes the findings as far as the runtime lets it.
        if let Some(running) = self.run.get()
            && !self.ended.is_cancelled()
        {
            running.caller.finish_external("the MCP session ended".to_owned());
        }
    }
}
