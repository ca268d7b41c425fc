//! The shared MCP client ([`McpPool`]): one connection per `[mcp.servers.<name>]` per troupe
//! process, shared by every agent of every run in it. A server starts on first use (or with the
//! pool, when `start = "eager"`), is initialized once, and its calls are multiplexed on its one
//! connection. [`RunMcp`] is a run's view of the pool: the runtime's `McpTools`, with the
//! servers' stderr copied into the run folder (`mcp/<server>.stderr`).
//!
//! Invariants:
//! - A server's trouble is its calls' trouble, never the run's: a server that will not start,
//!   exits, hangs past `timeout_seconds` or answers garbage makes that call a tool error with
//!   a message saying which and what the server last wrote on stderr.
//! - A server that exited is started again on its next call, after a backoff, at most
//!   [`MAX_RESTARTS`] times in a row; then its calls fail at once, saying so.
//! - Only what `env` lists reaches a server's environment.
//! - A server's stderr is copied with bounded memory and disk: a line is cut at
//!   [`STDERR_LINE_BYTES`] (and says so), and past [`STDERR_BYTES_PER_RUN`] per server and run
//!   one line says the rest was dropped; the pipe is still drained, so the server never blocks.
//! - Cancelling a call (its subtask was cancelled) sends `notifications/cancelled`.
//!
//! Longer than most files on purpose: a server's whole lifecycle (start, handshake, restart with
//! its bound, calls, cancellation, tasks, close) shares one slot and its lock; split apart, each
//! piece would need the others' internals. What a run sees (`RunMcp`) and the stderr copy are
//! the next candidates to move out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CancelTaskParams, CancelledNotificationParam, ClientCapabilities, ClientNotification,
    ClientRequest, GetTaskParams, Implementation, InitializeRequestParams, Notification, ProgressNotificationParam,
    ProgressToken, ProtocolVersion, Request, ServerResult, TaskPayload,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, ServiceExt as _};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::content;
use super::http_client::{McpHttpClient, REFUSED_MARK};
use super::names::{glob_matches, model_name, parse_reference};
use crate::config::{McpServerSpec, McpStart, McpTransport};
use crate::findings::Redactor;
use crate::model::expand_env;
use crate::protocol::ToolSpec;
use crate::runtime::mcp::{McpFuture, McpOutcome, McpProgress, McpReply, McpResolved, McpTaskState, McpTool, McpTools};
use crate::urls::redact_url_credentials;

/// Times in a row an exited server is started again before its calls fail at once.
pub const MAX_RESTARTS: u32 = 3;
/// Lines of a server's stderr kept to explain its failures.
const STDERR_TAIL: usize = 12;
/// The longest line of a server's stderr kept; the rest of the line is cut and counted.
pub const STDERR_LINE_BYTES: usize = 16 * 1024;
/// The most of one server's stderr copied into one run's folder.
pub const STDERR_BYTES_PER_RUN: usize = 4 * 1024 * 1024;
/// The least time a server is given to start and answer `initialize` and `tools/list`.
const MIN_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server's stderr may still arrive after it failed to start.
const STDERR_GRACE: Duration = Duration::from_millis(500);
/// How long a cancellation sent for an abandoned call or task may take.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing waits for each server to exit (rmcp closes stdin, then signals).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(8);

/// Reads an environment variable (troupe's, or a test's stand-in).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The MCP servers of a workbench, connected on demand and shared.
pub struct McpPool {
    servers: BTreeMap<String, Arc<Server>>,
    env: EnvLookup,
    /// Requests sent on behalf of abandoned calls and tasks (`notifications/cancelled`,
    /// `tasks/cancel`): nobody waits for them but [`McpPool::close`], so a run cancelled just
    /// before troupe exits still tells its servers.
    farewells: TaskTracker,
    /// Set by [`McpPool::close`]: nothing starts a server after it (a late cancellation, an
    /// eager start racing the exit).
    closed: AtomicBool,
}

impl std::fmt::Debug for McpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpPool").field("servers", &self.servers.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

struct Server {
    spec: McpServerSpec,
    slot: tokio::sync::Mutex<Slot>,
    /// Run folders whose `mcp/<server>.stderr` receives this server's stderr, each with the
    /// redaction its findings get and what it has received so far.
    sinks: Arc<Mutex<Vec<StderrSink>>>,
    /// The last lines of its stderr.
    tail: Arc<Mutex<VecDeque<String>>>,
}

enum Slot {
    Idle,
    Up(Arc<Connection>),
    /// It could not start (or exited); `restarts` attempts in a row so far.
    Down {
        message: String,
        restarts: u32,
    },
}

struct Connection {
    peer: Peer<RoleClient>,
    tools: Vec<rmcp::model::Tool>,
    routes: ProgressRoutes,
    stop: CancellationToken,
    /// Ends when the connection has closed and the process has exited.
    done: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Restarts in a row before this connection came up.
    restarts: u32,
    /// Whether a call was answered on it: a server that served and then exited starts a new
    /// count of restarts in a row, one that exits on every call runs out of them.
    answered: AtomicBool,
}

impl Connection {
    /// Waits (briefly) until the connection has closed and the server's last stderr is read,
    /// so that a call failing because the server exited can quote what it said.
    async fn exited(&self) {
        let started = std::time::Instant::now();
        while started.elapsed() < STDERR_GRACE {
            let finished = lock(&self.done).as_ref().is_none_or(tokio::task::JoinHandle::is_finished);
            if finished {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Where progress notifications go, by the progress token of the request they are about.
#[derive(Clone, Default)]
struct ProgressRoutes(Arc<Mutex<Routes>>);

#[derive(Default)]
struct Routes {
    by_token: HashMap<ProgressToken, McpProgress>,
    /// The latest line for a token with no route yet: rmcp hands out a request's token only
    /// once the request is on its way, so a quick server's first progress can come before the
    /// route does.
    early: HashMap<ProgressToken, String>,
}

/// Early lines kept at most (a server sending progress for tokens nobody asked about must not
/// grow the map).
const EARLY_PROGRESS: usize = 64;

impl ProgressRoutes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes `token`'s progress to `progress` until the guard drops, passing on a line that
    /// came before.
    fn route(&self, token: ProgressToken, progress: McpProgress) -> RouteGuard {
        let early = {
            let mut routes = self.lock();
            routes.by_token.insert(token.clone(), progress.clone());
            routes.early.remove(&token)
        };
        if let Some(line) = early {
            progress(line);
        }
        RouteGuard(self.clone(), token)
    }

    fn deliver(&self, token: &ProgressToken, line: String) {
        let route = {
            let mut routes = self.lock();
            let route = routes.by_token.get(token).cloned();
            if route.is_none() {
                if routes.early.len() >= EARLY_PROGRESS {
                    routes.early.clear();
                }
                routes.early.insert(token.clone(), line.clone());
            }
            route
        };
        if let Some(route) = route {
            route(line);
        }
    }
}

/// Removes a call's progress route when the call ends, however it ends.
struct RouteGuard(ProgressRoutes, ProgressToken);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let mut routes = self.0.lock();
        routes.by_token.remove(&self.1);
        routes.early.remove(&self.1);
    }
}

/// troupe's side of a connection: it identifies itself and routes progress notifications.
struct TroupeClient {
    routes: ProgressRoutes,
}

impl ClientHandler for TroupeClient {
    fn get_info(&self) -> InitializeRequestParams {
        // The Tasks extension: a server may run a long call as a task, which troupe follows as
        // a subtask of kind `mcp`.
        InitializeRequestParams::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("troupe", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.routes.deliver(&params.progress_token, progress_line(&params));
    }
}

/// `step 2 of 5 (2/5)`: the server's message and the numbers, as the live tree shows them.
fn progress_line(params: &ProgressNotificationParam) -> String {
    let numbers = match params.total {
        Some(total) => format!("{}/{}", params.progress, total),
        None => format!("{}", params.progress),
    };
    match params.message.as_deref().filter(|m| !m.trim().is_empty()) {
        Some(message) => format!("{message} ({numbers})"),
        None => format!("progress {numbers}"),
    }
}

/// What `troupe mcp list` shows of one server.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerReport {
    pub name: String,
    /// `ok`, or `failed` with `error`.
    pub health: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_info: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    pub tools: Vec<Value>,
    pub resources: Vec<Value>,
    pub prompts: Vec<Value>,
}

impl McpPool {
    /// A pool of `servers`, none started; `${NAME}` in `env` and `headers` read from troupe's
    /// environment.
    pub fn new(servers: &BTreeMap<String, McpServerSpec>) -> Arc<McpPool> {
        McpPool::with_env(servers, Arc::new(|name| std::env::var(name).ok()))
    }

    /// [`McpPool::new`] reading variables through `env`.
    pub fn with_env(servers: &BTreeMap<String, McpServerSpec>, env: EnvLookup) -> Arc<McpPool> {
        let servers = servers
            .iter()
            .map(|(name, spec)| {
                let server = Server {
                    spec: spec.clone(),
                    slot: tokio::sync::Mutex::new(Slot::Idle),
                    sinks: Arc::default(),
                    tail: Arc::default(),
                };
                (name.clone(), Arc::new(server))
            })
            .collect();
        Arc::new(McpPool { servers, env, farewells: TaskTracker::new(), closed: Default::default() })
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Whether this pool was made for exactly `servers`.
    fn serves(&self, servers: &BTreeMap<String, McpServerSpec>) -> bool {
        self.servers.len() == servers.len()
            && self.servers.iter().all(|(name, server)| servers.get(name) == Some(&server.spec))
    }

    /// Starts the `start = "eager"` servers in the background.
    pub fn start_eager(self: &Arc<Self>) {
        for (name, server) in &self.servers {
            if server.spec.start == McpStart::Eager {
                let (pool, name) = (self.clone(), name.clone());
                tokio::spawn(async move {
                    let _ = pool.connect(&name).await;
                });
            }
        }
    }

    /// A run's view of the pool, copying the servers' stderr into `run_dir/mcp/` through
    /// `redactor` (the run's).
    pub fn for_run(self: &Arc<Self>, run_dir: &Path, redactor: &Redactor) -> RunMcp {
        for server in self.servers.values() {
            lock(&server.sinks).push(StderrSink::new(run_dir, redactor, STDERR_BYTES_PER_RUN));
        }
        RunMcp { pool: self.clone(), dir: run_dir.to_path_buf() }
    }

    /// The connection to `name`, started (or restarted) if needed.
    async fn connect(&self, name: &str) -> Result<Arc<Connection>, String> {
        let server = self.servers.get(name).ok_or_else(|| format!("no MCP server `{name}` in troupe.toml"))?;
        let mut slot = server.slot.lock().await;
        if self.closed.load(Ordering::Relaxed) {
            return Err(format!("MCP server `{name}` is not started: troupe is closing its MCP connections"));
        }
        let restarts = match &*slot {
            Slot::Up(connection) if !connection.peer.is_transport_closed() => return Ok(connection.clone()),
            Slot::Up(connection) if connection.answered.load(Ordering::Relaxed) => 1,
            Slot::Up(connection) if connection.restarts >= MAX_RESTARTS => {
                let message = format!(
                    "MCP server `{name}` exited again after {} restarts in a row without answering a call{}",
                    connection.restarts,
                    said(&server.tail)
                );
                *slot = Slot::Down { message: message.clone(), restarts: connection.restarts };
                return Err(format!("{message}; it is not started again until troupe restarts"));
            }
            Slot::Up(connection) => connection.restarts + 1,
            Slot::Down { message, restarts } if *restarts >= MAX_RESTARTS => {
                return Err(format!(
                    "{message} (tried {} times; not started again until troupe restarts)",
                    restarts + 1
                ));
            }
            Slot::Down { restarts, .. } => restarts + 1,
            Slot::Idle => 0,
        };
        if restarts > 0 {
            // 0.25 s, 0.5 s, 1 s: a server that crashes at once is not restarted in a loop.
            tokio::time::sleep(Duration::from_millis(250 << (restarts - 1).min(4))).await;
        }
        match self.start(server, restarts).await {
            Ok(connection) => {
                *slot = Slot::Up(connection.clone());
                Ok(connection)
            }
            Err(message) => {
                *slot = Slot::Down { message: message.clone(), restarts };
                Err(message)
            }
        }
    }

    async fn start(&self, server: &Server, restarts: u32) -> Result<Arc<Connection>, String> {
        let name = &server.spec.name;
        let routes = ProgressRoutes::default();
        let stop = CancellationToken::new();
        let limit = Duration::from_secs(server.spec.timeout_seconds).max(MIN_START_TIMEOUT);
        let handler = TroupeClient { routes: routes.clone() };
        lock(&server.tail).clear();
        let (outcome, pump) = match &server.spec.transport {
            McpTransport::Stdio { command, args, env, cwd } => {
                let program = find_program(command)
                    .ok_or_else(|| format!("MCP server `{name}`: `{command}` was not found (looked in PATH)"))?;
                let mut cmd = tokio::process::Command::new(&program);
                cmd.args(args).env_clear().current_dir(cwd);
                for (key, template) in env {
                    cmd.env(key, expand_env(template, |var| (self.env)(var)));
                }
                let (transport, stderr) = TokioChildProcess::builder(cmd)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|err| format!("MCP server `{name}`: could not start `{}`: {err}", program.display()))?;
                let pump = stderr.map(|stderr| {
                    let (sinks, tail, name) = (server.sinks.clone(), server.tail.clone(), name.clone());
                    tokio::spawn(async move {
                        let deliver = |line: String| {
                            copy_stderr(&sinks, &name, &line);
                            let mut tail = lock(&tail);
                            if tail.len() == STDERR_TAIL {
                                tail.pop_front();
                            }
                            tail.push_back(line);
                        };
                        // Read in pieces, not by line: a line that never ends must not grow.
                        let mut stderr = stderr;
                        let mut buffer = vec![0u8; 8 * 1024];
                        let mut lines = StderrLines::new(STDERR_LINE_BYTES);
                        while let Ok(read @ 1..) = stderr.read(&mut buffer).await {
                            lines.push(&buffer[..read]).into_iter().for_each(deliver);
                        }
                        lines.finish().into_iter().for_each(deliver);
                    })
                });
                (handshake(handler, transport, &stop, limit).await, pump)
            }
            McpTransport::Http { url, headers } => {
                let transport = self.http_transport(name, url, headers)?;
                (handshake(handler, transport, &stop, limit).await, None)
            }
        };
        let (running, tools) = match outcome {
            Ok(Ok(pair)) => pair,
            Ok(Err(err)) => {
                stop.cancel();
                if let Some(pump) = pump {
                    let _ = tokio::time::timeout(STDERR_GRACE, pump).await;
                }
                let hint = if err.contains("Auth required") {
                    ". It asks for a bearer token: add headers = { Authorization = \"Bearer ${MY_TOKEN}\" } to its table, with the token in MY_TOKEN"
                } else {
                    ""
                };
                // rmcp's and reqwest's errors quote the server's URL, credentials and all.
                let err = redact_url_credentials(&err);
                return Err(format!("MCP server `{name}` did not start: {err}{hint}{}", said(&server.tail)));
            }
            Err(_) => {
                stop.cancel();
                return Err(format!(
                    "MCP server `{name}` did not answer `initialize` and `tools/list` within {}s{}",
                    limit.as_secs(),
                    said(&server.tail)
                ));
            }
        };
        let peer = running.peer().clone();
        let done = tokio::spawn(async move {
            let _ = running.waiting().await;
            if let Some(pump) = pump {
                let _ = tokio::time::timeout(STDERR_GRACE, pump).await;
            }
        });
        Ok(Arc::new(Connection {
            peer,
            tools,
            routes,
            stop,
            done: Mutex::new(Some(done)),
            restarts,
            answered: AtomicBool::new(false),
        }))
    }

    /// The streamable HTTP transport to `url`, with `headers` (their `${NAME}` read now); an
    /// `Authorization: Bearer …` header becomes the transport's bearer token.
    fn http_transport(
        &self,
        name: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<StreamableHttpClientTransport<McpHttpClient>, String> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
        let mut custom = HashMap::new();
        for (key, template) in headers {
            let value = expand_env(template, |var| (self.env)(var));
            if key.eq_ignore_ascii_case("authorization") {
                let token = value.strip_prefix("Bearer ").unwrap_or(&value).trim().to_owned();
                config = config.auth_header(token);
                continue;
            }
            let header = http::HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("MCP server `{name}`: `{key}` is not a valid header name"))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| format!("MCP server `{name}`: the value of header `{key}` is not valid in a header"))?;
            custom.insert(header, value);
        }
        if !custom.is_empty() {
            config = config.custom_headers(custom);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| format!("MCP server `{name}`: no HTTP client: {err}"))?;
        Ok(StreamableHttpClientTransport::with_client(McpHttpClient(client), config))
    }

    /// The tools `references` stand for, with the name each model sees.
    pub async fn resolve(&self, references: &[String]) -> McpResolved {
        let mut resolved = McpResolved::default();
        let mut taken = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut servers: Vec<&str> = Vec::new();
        for reference in references.iter().filter_map(|r| parse_reference(r)) {
            if !servers.contains(&reference.server) {
                servers.push(reference.server);
            }
        }
        for server in servers {
            let connection = match self.connect(server).await {
                Ok(connection) => connection,
                Err(message) => {
                    resolved.problems.push(message);
                    continue;
                }
            };
            for entry in references {
                let Some(reference) = parse_reference(entry).filter(|r| r.server == server) else { continue };
                let matching: Vec<&rmcp::model::Tool> =
                    connection.tools.iter().filter(|t| glob_matches(reference.pattern, &t.name)).collect();
                if matching.is_empty() {
                    let names: Vec<&str> = connection.tools.iter().map(|t| t.name.as_ref()).collect();
                    resolved.problems.push(format!(
                        "`{entry}` matches no tool of `{server}` (it has: {})",
                        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                    ));
                }
                for tool in matching {
                    if !seen.insert((server.to_owned(), tool.name.to_string())) {
                        continue;
                    }
                    let name = model_name(server, &tool.name, &mut taken);
                    resolved.tools.push(McpTool {
                        spec: ToolSpec {
                            name,
                            description: tool.description.as_deref().unwrap_or_default().to_owned(),
                            parameters: Value::Object((*tool.input_schema).clone()),
                        },
                        reference: format!("mcp:{server}/{}", tool.name),
                        server: server.to_owned(),
                        tool: tool.name.to_string(),
                    });
                }
            }
        }
        resolved
    }

    /// Calls `tool` on its server. See [`McpTools::call`].
    pub async fn call(
        &self,
        tool: &McpTool,
        arguments: Value,
        progress: McpProgress,
        cancel: CancellationToken,
    ) -> Result<McpOutcome, String> {
        let server = tool.server.as_str();
        let connection = tokio::select! {
            connection = self.connect(server) => connection?,
            () = cancel.cancelled() => return Err("cancelled before the server started".to_owned()),
        };
        let timeout = self.servers.get(server).map_or(60, |s| s.spec.timeout_seconds);
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => return Err(format!("the arguments must be a JSON object, found {other}")),
        };
        let params = CallToolRequestParams::new(tool.tool.clone()).with_arguments(arguments);
        let request = ClientRequest::CallToolRequest(Request::new(params));
        let options = PeerRequestOptions::with_timeout(Duration::from_secs(timeout));
        let handle = connection
            .peer
            .send_request_with_option(request, options)
            .await
            .map_err(|err| self.failure(server, &tool.tool, err, timeout))?;
        let _route = connection.routes.route(handle.progress_token.clone(), progress);
        // A cancelled subtask's work is usually dropped rather than told: the guard then tells
        // the server, and disarms once the answer is in.
        let mut guard =
            CancelOnDrop { peer: Some(handle.peer.clone()), id: handle.id.clone(), farewells: self.farewells.clone() };
        let response = tokio::select! {
            response = handle.await_response() => response,
            // The guard, still armed, tells the server.
            () = cancel.cancelled() => return Err("cancelled".to_owned()),
        };
        guard.peer = None;
        if matches!(response, Ok(_) | Err(ServiceError::McpError(_))) {
            connection.answered.store(true, Ordering::Relaxed);
        }
        match response {
            Ok(ServerResult::CallToolResult(result)) => {
                let json = serde_json::to_value(&result).unwrap_or(Value::Null);
                Ok(McpOutcome::Done(reply_of(&json, result.is_error == Some(true))))
            }
            Ok(ServerResult::CreateTaskResult(created)) => Ok(McpOutcome::Task {
                task_id: created.task.task_id,
                poll: Duration::from_millis(created.task.poll_interval_ms.unwrap_or(500).clamp(50, 5_000)),
            }),
            Ok(other) => Err(format!(
                "MCP server `{server}` answered `{}` with something that is not a tool result: {}",
                tool.tool,
                crate::protocol::shorten(&serde_json::to_string(&other).unwrap_or_default(), 200)
            )),
            Err(err) => {
                if matches!(err, ServiceError::TransportClosed) {
                    connection.exited().await;
                }
                Err(self.failure(server, &tool.tool, err, timeout))
            }
        }
    }

    /// Where `tool`'s server's task `task_id` stands.
    pub async fn task_state(&self, tool: &McpTool, task_id: &str) -> Result<McpTaskState, String> {
        let server = tool.server.as_str();
        // A task lives in the process that runs it: a server started again knows nothing of it.
        let connection = self.live(server).await.ok_or_else(|| {
            format!("MCP server `{server}` exited while it ran the task for `{}`; the task is lost", tool.tool)
        })?;
        let got = connection
            .peer
            .get_task(GetTaskParams::new(task_id.to_owned()))
            .await
            .map_err(|err| format!("MCP server `{server}`: tasks/get for `{}` failed: {err}", tool.tool))?;
        connection.answered.store(true, Ordering::Relaxed);
        let message = got.task.task.status_message.clone();
        Ok(match got.task.payload {
            TaskPayload::Completed { result } => {
                let json = Value::Object(result);
                let is_error = json.get("isError").and_then(Value::as_bool).unwrap_or(false);
                McpTaskState::Done(reply_of(&json, is_error))
            }
            TaskPayload::Failed { error } => McpTaskState::Failed(format!(
                "MCP server `{server}`'s task for `{}` failed: {}",
                tool.tool,
                error.get("message").and_then(Value::as_str).unwrap_or("no reason given")
            )),
            TaskPayload::Cancelled => McpTaskState::Cancelled,
            _ => McpTaskState::Working { message },
        })
    }

    /// Asks `tool`'s server to cancel its task `task_id`.
    pub async fn cancel_task(&self, tool: &McpTool, task_id: &str) -> Result<(), String> {
        let server = tool.server.as_str();
        // Nothing to cancel in a server that exited: its tasks went with it.
        let Some(connection) = self.live(server).await else { return Ok(()) };
        connection
            .peer
            .cancel_task(CancelTaskParams::new(task_id.to_owned()))
            .await
            .map_err(|err| format!("MCP server `{server}`: tasks/cancel failed: {err}"))
    }

    /// `name`'s connection if it is up, without starting it.
    async fn live(&self, name: &str) -> Option<Arc<Connection>> {
        let slot = self.servers.get(name)?.slot.lock().await;
        match &*slot {
            Slot::Up(connection) if !connection.peer.is_transport_closed() => Some(connection.clone()),
            Slot::Up(_) | Slot::Down { .. } | Slot::Idle => None,
        }
    }

    /// A failed call, said for the model and the transcript (never with the credentials of a
    /// server's `url`, which a transport error may quote).
    fn failure(&self, server: &str, tool: &str, err: ServiceError, timeout: u64) -> String {
        let tail = self.servers.get(server).map(|s| said(&s.tail)).unwrap_or_default();
        let message = failure_text(server, tool, err, timeout, &tail);
        redact_url_credentials(&message).into_owned()
    }

    /// Starts `name` if needed and describes it: its tools, resources and prompts.
    pub async fn describe(&self, name: &str) -> ServerReport {
        let mut report = ServerReport {
            name: name.to_owned(),
            health: "ok",
            error: None,
            server_info: None,
            protocol_version: None,
            tools: Vec::new(),
            resources: Vec::new(),
            prompts: Vec::new(),
        };
        let connection = match self.connect(name).await {
            Ok(connection) => connection,
            Err(error) => {
                report.health = "failed";
                report.error = Some(error);
                return report;
            }
        };
        let to_json = |v: &dyn erased::Ser| v.json();
        report.tools = connection.tools.iter().map(|t| to_json(t)).collect();
        if let Some(info) = connection.peer.peer_info() {
            report.server_info = serde_json::to_value(&info.server_info).ok();
            report.protocol_version = Some(info.protocol_version.to_string());
            let capabilities = &info.capabilities;
            if capabilities.resources.is_some() {
                match connection.peer.list_all_resources().await {
                    Ok(resources) => report.resources = resources.iter().map(|r| to_json(r)).collect(),
                    Err(err) => report.error = Some(format!("resources/list failed: {err}")),
                }
            }
            if capabilities.prompts.is_some() {
                match connection.peer.list_all_prompts().await {
                    Ok(prompts) => report.prompts = prompts.iter().map(|p| to_json(p)).collect(),
                    Err(err) => report.error = Some(format!("prompts/list failed: {err}")),
                }
            }
        }
        report
    }

    /// The names of the servers, in order.
    pub fn names(&self) -> Vec<String> {
        self.servers.keys().cloned().collect()
    }

    /// Closes every connection and waits (bounded) for the servers to exit.
    pub async fn close(&self) {
        // Abandoned calls' cancellations go out before the connections close.
        self.closed.store(true, Ordering::Relaxed);
        self.farewells.close();
        let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.farewells.wait()).await;
        for server in self.servers.values() {
            let mut slot = server.slot.lock().await;
            if let Slot::Up(connection) = std::mem::replace(&mut *slot, Slot::Idle) {
                connection.stop.cancel();
                let done = lock(&connection.done).take();
                if let Some(done) = done {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, done).await;
                }
            }
        }
    }
}

/// What a failed call says, from rmcp's error.
fn failure_text(server: &str, tool: &str, err: ServiceError, timeout: u64, tail: &str) -> String {
    match err {
        ServiceError::Timeout { .. } => {
            format!("MCP server `{server}` did not answer `{tool}` within {timeout}s; the call was cancelled")
        }
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => format!(
            "MCP server `{server}` exited during the call to `{tool}`{tail}; it is started again on the next call"
        ),
        // troupe's own error for an answer too large to read (see `http_client`).
        ServiceError::McpError(error) if error.data.as_ref().is_some_and(|d| d.get(REFUSED_MARK).is_some()) => {
            format!("MCP server `{server}` answered `{tool}`, but {}", error.message)
        }
        ServiceError::McpError(error) => {
            format!("MCP server `{server}` refused the call to `{tool}`: {} (code {})", error.message, error.code.0)
        }
        other => format!("MCP server `{server}` failed the call to `{tool}`: {other}{tail}"),
    }
}

/// Tells the server a request was abandoned, if it is dropped before its answer came.
struct CancelOnDrop {
    peer: Option<Peer<RoleClient>>,
    id: rmcp::model::RequestId,
    farewells: TaskTracker,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(peer) = self.peer.take() else { return };
        let notice = cancelled_notice(self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.farewells.spawn_on(
                async move {
                    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, peer.send_notification(notice)).await;
                },
                &runtime,
            );
        }
    }
}

fn cancelled_notice(id: rmcp::model::RequestId) -> ClientNotification {
    let params = CancelledNotificationParam::new(Some(id), Some("the calling subtask was cancelled".to_owned()));
    ClientNotification::CancelledNotification(Notification::new(params))
}

/// Connects over `transport`: `initialize`, then every page of `tools/list`, within `limit`.
async fn handshake<T, E, A>(
    handler: TroupeClient,
    transport: T,
    stop: &CancellationToken,
    limit: Duration,
) -> Result<
    Result<(RunningService<RoleClient, TroupeClient>, Vec<rmcp::model::Tool>), String>,
    tokio::time::error::Elapsed,
>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let started = async {
        let running = handler.serve_with_ct(transport, stop.clone()).await.map_err(|err| err.to_string())?;
        let tools = running.peer().list_all_tools().await.map_err(|err| format!("tools/list failed: {err}"))?;
        Ok((running, tools))
    };
    tokio::time::timeout(limit, started).await
}

/// Serializing rmcp's models for reports without naming each type.
mod erased {
    pub trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// The pool for a workbench whose `[mcp]` may change while troupe runs (the workbench app):
/// the same pool while the servers' settings stay the same, a new one (the old one closed)
/// when they change.
#[derive(Clone, Default)]
pub struct SharedPool(Arc<Mutex<Option<Arc<McpPool>>>>);

impl SharedPool {
    /// The pool for `servers`.
    pub fn for_servers(&self, servers: &BTreeMap<String, McpServerSpec>) -> Arc<McpPool> {
        let mut current = lock(&self.0);
        if let Some(pool) = current.as_ref().filter(|pool| pool.serves(servers)) {
            return pool.clone();
        }
        let pool = McpPool::new(servers);
        pool.start_eager();
        if let Some(old) = current.replace(pool.clone()) {
            tokio::spawn(async move { old.close().await });
        }
        pool
    }

    /// Closes the current pool's connections.
    pub async fn close(&self) {
        let pool = lock(&self.0).clone();
        if let Some(pool) = pool {
            pool.close().await;
        }
    }
}

/// A run's view of the pool: the runtime's [`McpTools`], and the run folder that receives the
/// servers' stderr while the run lasts.
pub struct RunMcp {
    pool: Arc<McpPool>,
    dir: PathBuf,
}

impl Drop for RunMcp {
    fn drop(&mut self) {
        for server in self.pool.servers.values() {
            let mut sinks = lock(&server.sinks);
            if let Some(at) = sinks.iter().position(|sink| sink.dir == self.dir) {
                sinks.remove(at);
            }
        }
    }
}

impl McpTools for RunMcp {
    fn resolve<'a>(&'a self, references: &'a [String]) -> McpFuture<'a, McpResolved> {
        Box::pin(self.pool.resolve(references))
    }

    fn call<'a>(
        &'a self,
        tool: &'a McpTool,
        arguments: Value,
        progress: McpProgress,
        cancel: CancellationToken,
    ) -> McpFuture<'a, Result<McpOutcome, String>> {
        Box::pin(self.pool.call(tool, arguments, progress, cancel))
    }

    fn task_state<'a>(&'a self, tool: &'a McpTool, task_id: &'a str) -> McpFuture<'a, Result<McpTaskState, String>> {
        Box::pin(self.pool.task_state(tool, task_id))
    }

    fn cancel_task(&self, tool: &McpTool, task_id: String) {
        let (pool, tool) = (self.pool.clone(), tool.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.pool.farewells.spawn_on(
            async move {
                let asked = tokio::time::timeout(FAREWELL_TIMEOUT, pool.cancel_task(&tool, &task_id)).await;
                if let Ok(Err(err)) = asked {
                    tracing::warn!("{err}");
                }
            },
            &runtime,
        );
    }
}

/// A tool result (as JSON) as the model reads it.
fn reply_of(result: &Value, is_error: bool) -> McpReply {
    McpReply { content: Value::String(content::for_model(result)), is_error }
}

/// Appends a line of `server`'s stderr to `mcp/<server>.stderr` in every run folder using it,
/// within each run's budget.
fn copy_stderr(sinks: &Mutex<Vec<StderrSink>>, server: &str, line: &str) {
    // Decided under the lock, written outside it: a slow disk must not hold up other servers.
    let writes: Vec<(PathBuf, String)> =
        lock(sinks).iter_mut().filter_map(|sink| Some((sink.dir.clone(), sink.admit(line)?))).collect();
    for (dir, text) in writes {
        let folder = dir.join("mcp");
        let appended = std::fs::create_dir_all(&folder).and_then(|()| {
            let mut file =
                std::fs::OpenOptions::new().create(true).append(true).open(folder.join(format!("{server}.stderr")))?;
            file.write_all(text.as_bytes())
        });
        if let Err(err) = appended {
            tracing::warn!("could not copy MCP server {server}'s stderr into {}: {err}", folder.display());
        }
    }
}

/// One run folder receiving a server's stderr, and how much of it so far.
struct StderrSink {
    dir: PathBuf,
    redactor: Redactor,
    budget: usize,
    copied: usize,
    /// The budget ran out and the line saying so was written.
    full: bool,
}

impl StderrSink {
    fn new(dir: &Path, redactor: &Redactor, budget: usize) -> Self {
        StderrSink { dir: dir.to_path_buf(), redactor: redactor.clone(), budget, copied: 0, full: false }
    }

    /// The text to append for `line` (redacted, with its line break): the line while the
    /// budget lasts, then once a line saying the rest is dropped, then nothing.
    fn admit(&mut self, line: &str) -> Option<String> {
        if self.full {
            return None;
        }
        let text = format!("{}\n", self.redactor.redact(line));
        if self.copied.saturating_add(text.len()) > self.budget {
            self.full = true;
            return Some(format!(
                "[troupe: this server wrote more than {} of stderr during the run; the rest is dropped]\n",
                size(self.budget)
            ));
        }
        self.copied += text.len();
        Some(text)
    }
}

/// `4 MiB`, `2 KiB` or `100 bytes`.
fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A server's stderr split into lines of at most `max` bytes (pure): a longer line keeps its
/// first `max` bytes (to a character boundary) and ends with `… [cut N bytes]`.
struct StderrLines {
    max: usize,
    line: Vec<u8>,
    /// Bytes of the current line beyond `max`, dropped.
    cut: usize,
}

impl StderrLines {
    fn new(max: usize) -> Self {
        StderrLines { max, line: Vec::new(), cut: 0 }
    }

    /// The lines `bytes` complete.
    fn push(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let piece = &bytes[..end.unwrap_or(bytes.len())];
            let room = self.max.saturating_sub(self.line.len());
            self.line.extend_from_slice(&piece[..piece.len().min(room)]);
            self.cut += piece.len().saturating_sub(room);
            match end {
                Some(end) => {
                    lines.push(self.take());
                    bytes = &bytes[end + 1..];
                }
                None => break,
            }
        }
        lines
    }

    /// The last line, when the stream ended without a line break.
    fn finish(&mut self) -> Option<String> {
        (!self.line.is_empty() || self.cut > 0).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.line);
        let mut cut = std::mem::take(&mut self.cut);
        if line.last() == Some(&b'\r') && cut == 0 {
            line.pop();
        }
        if cut > 0 {
            // A character the cut went through is dropped whole rather than shown broken.
            let whole = match std::str::from_utf8(&line) {
                Err(err) if err.error_len().is_none() => err.valid_up_to(),
                _ => line.len(),
            };
            cut += line.len() - whole;
            line.truncate(whole);
            return format!("{}… [cut {cut} bytes]", String::from_utf8_lossy(&line));
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

/// `: it said "…"` from the end of a server's stderr, or nothing.
fn said(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = lock(tail);
    let lines: Vec<&str> = tail.iter().map(String::as_str).filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => String::new(),
        n => format!(" (its stderr ends: \"{}\")", lines[n.saturating_sub(3)..].join(" / ")),
    }
}

/// `command` as a path: as written when it holds a `/`, else the first match in troupe's PATH
/// (the server's own environment has only what `env` lists, so it cannot be searched there).
fn find_program(command: &str) -> Option<PathBuf> {
    if command.contains('/') {
        return Some(PathBuf::from(command));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(command)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
