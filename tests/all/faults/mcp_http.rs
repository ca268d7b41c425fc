//! Fault cases of `troupe mcp serve --http`: hostile HTTP clients (no token, a wrong one,
//! malformed JSON, half-sent requests, too many sessions, a call for the internal client agent,
//! a secret in the server's environment) and two clients side by side (neither lists, reads or
//! cancels the other's subtasks; notifications reach only the subscriber; each session has its
//! own run folder, finished when its client leaves). The real binary, spoken to in raw HTTP so
//! every byte is the test's choice, and only ever on 127.0.0.1.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_troupe");
const TOKEN_VAR: &str = "TROUPE_FAULT_MCP_TOKEN";
const TOKEN: &str = "fault-token-0123456789";
const TOKEN_HEADER: &str = "Bearer fault-token-0123456789";
/// The longest any one read waits: generous, so a slow machine does not fail a case, and
/// bounded, so a server that never answers fails it rather than hanging it.
const PATIENCE: Duration = Duration::from_secs(60);
/// The protocol revision with sessions (`initialize`, `Mcp-Session-Id`).
const PROTOCOL: &str = "2025-11-25";

/// A workbench with two scripted experts: `greeter` answers `greeting` after 0.3 s, `sleeper`
/// takes two minutes.
fn workbench(greeting: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "[[conversation]]\nagent = \"greeter\"\nrepeat = true\n[[conversation.turn]]\ndelay_ms = 300\ntext = \"{greeting}\"\n\n\
         [[conversation]]\nagent = \"sleeper\"\nrepeat = true\n[[conversation.turn]]\ndelay_ms = 120000\ntext = \"awake\"\n"
    );
    let files = [
        ("troupe.toml", "[models.m]\nprovider = \"scripted\"\nscript = \"scripts/s.toml\"\n".to_owned()),
        ("agents/greeter.toml", "description = \"Says hello\"\nmodel = \"m\"\nsystem_prompt = \"Greet.\"\n".to_owned()),
        ("agents/sleeper.toml", "description = \"Sleeps\"\nmodel = \"m\"\nsystem_prompt = \"Sleep.\"\n".to_owned()),
        ("scripts/s.toml", script),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// `troupe mcp serve --http 127.0.0.1:0`, its stderr collected as it comes.
struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// With the test's token (in [`TOKEN_VAR`]) and `env`.
    fn start(root: &Path, env: &[(&str, &str)]) -> Server {
        let mut env = env.to_vec();
        env.push((TOKEN_VAR, TOKEN));
        Server::start_with(root, &["--token-env", TOKEN_VAR], &env)
    }

    fn start_with(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .arg("--root")
            .arg(root)
            .args(["mcp", "serve", "--http", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (first, first_line) = mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let _ = first.send(line.clone()); // only the first is waited for
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let line = first_line.recv_timeout(PATIENCE).expect("the server said nothing");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split("/mcp").next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Server { child, addr, stderr }
    }

    /// With no token given: the server's default. Returns the token it generated and printed.
    fn start_default(root: &Path) -> (Server, String) {
        let server = Server::start_with(root, &[], &[]);
        let line = server.wait_for_line("Authorization: Bearer ");
        let token = line.rsplit("Bearer ").next().unwrap().trim().to_owned();
        (server, token)
    }

    /// Waits until stderr has a line containing `needle`, and returns that line.
    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.stderr.lock().unwrap().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no line with {needle:?} in: {}", self.stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as Ctrl-C does and waits for it (its sessions are then written).
    fn stop(mut self) {
        Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        assert!(self.child.wait().unwrap().success(), "{}", self.stderr.lock().unwrap());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill(); // already gone after `stop`
        let _ = self.child.wait();
    }
}

/// An HTTP response: status, headers (names in lower case), and the body (for an event
/// stream, the data of the first event that answers a request: a JSON-RPC response).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request, as HTTP/1.0 (so a streamed body ends with the connection, never chunked).
fn request(addr: &str, method: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut text = format!("{method} /mcp HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let stream = headers.iter().any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"));
    let mut body = String::new();
    if stream {
        // The stream may stay open after the answer: read up to the event that answers.
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let Some(data) = line.trim_end().strip_prefix("data:") else { continue };
            if serde_json::from_str::<Value>(data.trim()).is_ok_and(|v| v.get("id").is_some()) {
                body = data.trim().to_owned();
                break;
            }
        }
    } else {
        reader.read_to_string(&mut body).unwrap();
    }
    Reply { status, headers, body }
}

fn initialize_body() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "faults", "version": "0"}}})
    .to_string()
}

const JSON_HEADERS: [(&str, &str); 2] =
    [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json")];

/// A raw `initialize` with this `Authorization` header (or none).
fn initialize_with(addr: &str, authorization: Option<&str>) -> Reply {
    let mut headers = JSON_HEADERS.to_vec();
    headers.extend(authorization.map(|value| ("Authorization", value)));
    request(addr, "POST", &headers, &initialize_body())
}

/// A client's MCP session, spoken in raw JSON-RPC over HTTP.
struct Session {
    addr: String,
    id: String,
    next: u64,
}

impl Session {
    /// `initialize` and `notifications/initialized`; panics with the answer if refused.
    fn open(addr: &str) -> Session {
        Session::try_open(addr).unwrap_or_else(|answer| panic!("initialize refused: {answer}"))
    }

    fn try_open(addr: &str) -> Result<Session, Value> {
        let reply = initialize_with(addr, Some(TOKEN_HEADER));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answer = reply.json();
        if answer.get("error").is_some() {
            return Err(answer);
        }
        let id = reply.header("mcp-session-id").unwrap_or_else(|| panic!("no session id: {answer}")).to_owned();
        let session = Session { addr: addr.to_owned(), id, next: 2 };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        let reply = request(addr, "POST", &session.headers(), &initialized);
        assert_eq!(reply.status, 202, "{}", reply.body);
        Ok(session)
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = JSON_HEADERS.to_vec();
        headers.extend([("Mcp-Session-Id", self.id.as_str()), ("MCP-Protocol-Version", PROTOCOL)]);
        headers.push(("Authorization", TOKEN_HEADER));
        headers
    }

    /// A request's whole JSON-RPC answer.
    fn rpc(&mut self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params}).to_string();
        self.next += 1;
        let reply = request(&self.addr, "POST", &self.headers(), &body);
        assert_eq!(reply.status, 200, "{method}: {}", reply.body);
        reply.json()
    }

    /// A tool's answer as JSON (its structured content, else its text read as JSON) and
    /// whether it is an error; the raw answer too, for what no field should show.
    fn call(&mut self, tool: &str, arguments: Value) -> (Value, bool, String) {
        let answer = self.rpc("tools/call", json!({"name": tool, "arguments": arguments}));
        let result = answer.get("result").unwrap_or_else(|| panic!("{tool}: {answer}"));
        let is_error = result["isError"] == true;
        let value = match result.get("structuredContent") {
            Some(value) => value.clone(),
            None => {
                let text = result["content"][0]["text"].as_str().unwrap_or_default();
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
            }
        };
        (value, is_error, answer.to_string())
    }

    /// `call_agent`; the new subtask's URI.
    fn start(&mut self, agent: &str, task: &str) -> String {
        let (handle, is_error, raw) = self.call("call_agent", json!({"agent": agent, "task": task}));
        assert!(!is_error, "{raw}");
        handle["uri"].as_str().unwrap_or_else(|| panic!("{raw}")).to_owned()
    }

    /// The events the server sends on the session's own stream (GET), as they come: what
    /// notifications reach this client.
    fn listen(&self) -> Arc<Mutex<String>> {
        let seen = Arc::new(Mutex::new(String::new()));
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        let text = format!(
            "GET /mcp HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {}\r\nMCP-Protocol-Version: {PROTOCOL}\r\nAuthorization: {TOKEN_HEADER}\r\n\r\n",
            self.addr, self.id
        );
        stream.write_all(text.as_bytes()).unwrap();
        let collected = seen.clone();
        // Ends when the server closes the stream (at its stop).
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        seen
    }

    /// Ends the session as a client leaving does (HTTP DELETE).
    fn leave(self) {
        let reply = request(&self.addr, "DELETE", &self.headers(), "");
        assert!(reply.status < 300, "DELETE answered {}: {}", reply.status, reply.body);
    }
}

/// A request without a session (protocol 2026-07-28: each request carries its protocol
/// version and capabilities); its whole JSON-RPC answer.
fn sessionless(addr: &str, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "faults", "version": "0"},
    });
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
    // The revision's standard headers repeat the method and what it names (SEP-2243).
    let name = params.get("name").or_else(|| params.get("uri")).and_then(Value::as_str).unwrap_or_default();
    let mut headers = JSON_HEADERS.to_vec();
    headers.extend([("Authorization", TOKEN_HEADER), ("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", method)]);
    if !name.is_empty() {
        headers.push(("Mcp-Name", name));
    }
    let reply = request(addr, "POST", &headers, &body);
    assert_eq!(reply.status, 200, "{method}: {}", reply.body);
    reply.json()
}

/// The run folders under `root/findings`.
fn run_folders(root: &Path) -> Vec<PathBuf> {
    match fs::read_dir(root.join("findings")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The run folder whose log mentions `text`.
fn folder_with(root: &Path, text: &str) -> PathBuf {
    let found: Vec<PathBuf> = run_folders(root)
        .into_iter()
        .filter(|dir| fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default().contains(text))
        .collect();
    assert_eq!(found.len(), 1, "{text:?} in {found:?}");
    found[0].clone()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_request_without_a_token_is_refused_with_401() {
    let wb = workbench("hello");
    let (server, _) = Server::start_default(wb.path());
    let reply = initialize_with(&server.addr, None);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert!(run_folders(wb.path()).is_empty());
}

#[test]
fn a_wrong_token_of_the_same_length_is_refused() {
    let wb = workbench("hello");
    let (server, token) = Server::start_default(wb.path());
    // The token with its last character changed.
    let mut wrong = token.clone();
    let last = if wrong.pop() == Some('0') { '1' } else { '0' };
    wrong.push(last);
    assert_eq!(wrong.len(), token.len());
    assert_eq!(initialize_with(&server.addr, Some(&format!("Bearer {wrong}"))).status, 401);
    assert_eq!(initialize_with(&server.addr, Some(&format!("Bearer {token}"))).status, 200);
}

#[test]
fn a_wrong_token_of_another_length_is_refused() {
    let wb = workbench("hello");
    let (server, token) = Server::start_default(wb.path());
    for wrong in [&token[..token.len() - 1], &format!("{token}0"), &token[..8], "x"] {
        assert_eq!(initialize_with(&server.addr, Some(&format!("Bearer {wrong}"))).status, 401, "{wrong}");
    }
    assert_eq!(initialize_with(&server.addr, Some("Bearer")).status, 401, "a scheme without a token");
    assert_eq!(initialize_with(&server.addr, Some(&token)).status, 401, "a token without a scheme");
    assert_eq!(initialize_with(&server.addr, Some(&format!("Basic {token}"))).status, 401, "another scheme");
}

#[test]
fn the_bearer_scheme_is_accepted_in_any_case() {
    let wb = workbench("hello");
    let server = Server::start(wb.path(), &[]);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let reply = initialize_with(&server.addr, Some(&format!("{scheme} {TOKEN}")));
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.body);
        assert!(reply.json().get("result").is_some(), "{scheme}: {}", reply.body);
    }
}

#[test]
fn without_a_token_given_one_is_generated_printed_and_required() {
    let wb = workbench("hello");
    let (server, token) = Server::start_default(wb.path());
    assert!(token.len() >= 32, "a token worth the name: {token}");
    assert_eq!(initialize_with(&server.addr, None).status, 401, "a token is required over HTTP");
    let reply = initialize_with(&server.addr, Some(&format!("Bearer {token}")));
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Another server gets a token of its own.
    let (_other, other_token) = Server::start_default(wb.path());
    assert_ne!(other_token, token);
}

#[test]
fn malformed_json_is_answered_with_a_jsonrpc_parse_error() {
    let wb = workbench("hello");
    let server = Server::start(wb.path(), &[]);
    let mut headers = JSON_HEADERS.to_vec();
    headers.push(("Authorization", TOKEN_HEADER));
    let reply = request(&server.addr, "POST", &headers, r#"{"jsonrpc": "2.0", "id": 1, "method": "#);
    assert_eq!(reply.status, 400, "{}", reply.body);
    let error = reply.json();
    assert_eq!(error["jsonrpc"], "2.0");
    assert_eq!(error["id"], Value::Null);
    assert_eq!(error["error"]["code"], -32700, "{error}");
    // JSON that is no JSON-RPC message is an invalid request, not a parse error.
    let reply = request(&server.addr, "POST", &headers, r#"{"hello": "world"}"#);
    assert_eq!((reply.status, reply.json()["error"]["code"].clone()), (400, json!(-32600)), "{}", reply.body);
}

#[test]
fn half_sent_requests_are_dropped_and_do_not_keep_a_client_from_being_served() {
    let wb = workbench("hello");
    let server = Server::start(wb.path(), &[]);
    // More than the server holds open at once (64), each stopping in the middle of a header.
    let hostile: Vec<TcpStream> = (0..80)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.addr).unwrap();
            stream.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty").unwrap();
            stream
        })
        .collect();
    let reply = initialize_with(&server.addr, Some(TOKEN_HEADER));
    assert_eq!(reply.status, 200, "a well-behaved client is served: {}", reply.body);
    // The server hangs up on a connection that never finished its headers.
    let mut first = &hostile[0];
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    match first.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(err) => assert!(
            !matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "the half-sent request was still held after {PATIENCE:?}"
        ),
    }
}

#[test]
fn call_agent_cannot_start_the_internal_client_agent() {
    let wb = workbench("hello");
    let server = Server::start(wb.path(), &[]);
    let mut session = Session::open(&server.addr);
    let tools = session.rpc("tools/list", json!({}));
    let call_agent = tools["result"]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "call_agent").unwrap();
    let offered = call_agent["inputSchema"]["properties"]["agent"].to_string();
    assert!(offered.contains("greeter") && !offered.contains("mcp-client"), "{offered}");
    let (answer, is_error, raw) = session.call("call_agent", json!({"agent": "mcp-client", "task": "Be the client"}));
    assert!(is_error, "refused: {raw}");
    assert!(answer.as_str().is_some_and(|m| m.contains("mcp-client") && m.contains("greeter")), "{answer}");
    let (listed, _, _) = session.call("list_tasks", json!({}));
    assert!(!listed.to_string().contains("Be the client"), "nothing was started: {listed}");
}

#[test]
fn get_task_status_never_answers_a_secret_from_the_servers_environment() {
    let secret = "sk-fault-secret-value-0042";
    let wb = workbench(&format!("the key is {secret}"));
    let server = Server::start(wb.path(), &[("TROUPE_TEST_SECRET_TOKEN", secret)]);
    let mut session = Session::open(&server.addr);
    let uri = session.start("greeter", &format!("Keep {secret} safe"));
    let (status, is_error, raw) = session.call("get_task_status", json!({"uri": uri, "wait_seconds": 30}));
    assert!(!is_error, "{raw}");
    assert_eq!(status["status"], "completed", "{raw}");
    assert!(!raw.contains(secret), "the answer shows the secret: {raw}");
    assert_eq!(status["result"], "the key is [redacted]", "{raw}");
    assert_eq!(status["task"], "Keep [redacted] safe", "{raw}");
    let read = session.rpc("resources/read", json!({"uri": uri})).to_string();
    assert!(!read.contains(secret) && read.contains("[redacted]"), "{read}");
    let listed = session.rpc("resources/list", json!({})).to_string();
    assert!(!listed.contains(secret) && listed.contains("[redacted]"), "{listed}");
    let (_, _, tasks) = session.call("list_tasks", json!({}));
    assert!(!tasks.contains(secret), "{tasks}");
    server.stop();
    // The run's own record hid it too: the answers match what the log shows.
    let log = fs::read_to_string(folder_with(wb.path(), "Keep [redacted] safe").join("events.jsonl")).unwrap();
    assert!(!log.contains(secret) && log.contains("the key is [redacted]"));
}

#[test]
fn two_sessions_cannot_list_read_or_cancel_each_others_subtasks_and_each_has_its_own_run_folder() {
    let wb = workbench("hello");
    let server = Server::start(wb.path(), &[]);
    let mut alice = Session::open(&server.addr);
    let mut bob = Session::open(&server.addr);
    let alices = alice.start("sleeper", "Alice's private plan");
    let bobs = bob.start("greeter", "Bob's errand");

    let listed = bob.rpc("resources/list", json!({})).to_string();
    assert!(listed.contains(&bobs) && !listed.contains(&alices), "Bob lists only his own: {listed}");
    assert!(!listed.contains("Alice's private plan"), "{listed}");
    let read = bob.rpc("resources/read", json!({"uri": alices}));
    assert!(read.get("error").is_some(), "Bob reads Alice's subtask: {read}");
    assert!(!read.to_string().contains("Alice's private plan"), "{read}");
    let (_, is_error, raw) = bob.call("get_task_status", json!({"uri": alices}));
    assert!(is_error && !raw.contains("Alice's private plan"), "{raw}");
    let (_, is_error, raw) = bob.call("cancel_task", json!({"uri": alices}));
    assert!(is_error, "Bob cancels Alice's subtask: {raw}");
    let (tasks, _, raw) = bob.call("list_tasks", json!({}));
    assert!(!raw.contains(&alices) && raw.contains(&bobs), "{tasks}");
    let (status, _, raw) = alice.call("get_task_status", json!({"uri": alices}));
    assert_eq!(status["status"], "working", "Alice's subtask is untouched: {raw}");

    // Each session is a run of its own, and a client that leaves has its run finished.
    let alices_folder = folder_with(wb.path(), "Alice's private plan");
    let bobs_folder = folder_with(wb.path(), "Bob's errand");
    assert_ne!(alices_folder, bobs_folder);
    alice.leave();
    wait_until("Alice's run is finished once she left", || alices_folder.join("transcript.md").is_file());
    let log = fs::read_to_string(alices_folder.join("events.jsonl")).unwrap();
    assert!(log.contains("\"run_finished\""), "{log}");
    assert!(!log.contains("Bob's errand"));
    assert!(!bobs_folder.join("transcript.md").exists(), "Bob's session goes on");
    let (status, _, raw) = bob.call("get_task_status", json!({"uri": bobs, "wait_seconds": 30}));
    assert_eq!(status["result"], "hello", "{raw}");
    server.stop();
    assert!(bobs_folder.join("transcript.md").is_file(), "the server's stop finishes the sessions left");
    assert_eq!(run_folders(wb.path()).len(), 2);
}

#[test]
fn requests_without_a_session_cannot_reach_a_sessions_subtasks() {
    let wb = workbench("hello");
    let server = Server::start(wb.path(), &[]);
    let mut alice = Session::open(&server.addr);
    let alices = alice.start("sleeper", "Alice's private plan");
    let read = sessionless(&server.addr, "resources/read", json!({"uri": alices}));
    assert!(read.get("error").is_some() && !read.to_string().contains("Alice's private plan"), "{read}");
    let status =
        sessionless(&server.addr, "tools/call", json!({"name": "get_task_status", "arguments": {"uri": alices}}));
    assert_eq!(status["result"]["isError"], true, "{status}");
    let cancel = sessionless(&server.addr, "tools/call", json!({"name": "cancel_task", "arguments": {"uri": alices}}));
    assert_eq!(cancel["result"]["isError"], true, "{cancel}");
    let listed = sessionless(&server.addr, "resources/list", json!({}));
    assert!(!listed.to_string().contains(&alices), "{listed}");
    // Requests without a session share their own run: what one started, the next one reads.
    let started = sessionless(
        &server.addr,
        "tools/call",
        json!({"name": "call_agent", "arguments": {"agent": "greeter", "task": "Sessionless errand"}}),
    );
    let uri = started["result"]["structuredContent"]["uri"].as_str().unwrap_or_else(|| panic!("{started}")).to_owned();
    let read = sessionless(&server.addr, "resources/read", json!({"uri": uri}));
    assert!(read.to_string().contains("Sessionless errand"), "{read}");
    assert!(alice.rpc("resources/read", json!({"uri": uri})).get("error").is_some(), "nor the other way round");
    let (status, _, raw) = alice.call("get_task_status", json!({"uri": alices}));
    assert_eq!(status["status"], "working", "{raw}");
    server.stop();
    assert_ne!(folder_with(wb.path(), "Alice's private plan"), folder_with(wb.path(), "Sessionless errand"));
}

#[test]
fn notifications_go_only_to_the_session_that_subscribed() {
    let wb = workbench("hello");
    let server = Server::start(wb.path(), &[]);
    let mut alice = Session::open(&server.addr);
    let mut bob = Session::open(&server.addr);
    let alices_stream = alice.listen();
    let bobs_stream = bob.listen();
    // Alice subscribes first, to a subtask of her own, then Bob to one of his.
    let alices = alice.start("sleeper", "Sleep");
    assert!(alice.rpc("resources/subscribe", json!({"uri": alices})).get("result").is_some());
    let bobs = bob.start("greeter", "Greet");
    assert!(bob.rpc("resources/subscribe", json!({"uri": bobs})).get("result").is_some());
    // Bob's subscription to Alice's subtask is refused: it is not his.
    assert!(bob.rpc("resources/subscribe", json!({"uri": alices})).get("error").is_some());
    let (status, _, raw) = bob.call("get_task_status", json!({"uri": bobs, "wait_seconds": 30}));
    assert_eq!(status["status"], "completed", "{raw}");
    wait_until("Bob is told his subtask changed", || bobs_stream.lock().unwrap().contains(&bobs));
    // Alice cancels hers: that update is hers alone.
    let (_, is_error, raw) = alice.call("cancel_task", json!({"uri": alices}));
    assert!(!is_error, "{raw}");
    wait_until("Alice is told her subtask changed", || alices_stream.lock().unwrap().contains(&alices));
    assert!(!alices_stream.lock().unwrap().contains(&bobs), "Alice got Bob's notification");
    assert!(!bobs_stream.lock().unwrap().contains(&alices), "Bob got Alice's notification");
    server.stop();
}

#[test]
fn more_sessions_than_the_server_holds_are_refused_until_one_ends() {
    let wb = workbench("hello");
    let server = Server::start(wb.path(), &[]);
    let mut open: Vec<Session> = (0..32).map(|_| Session::open(&server.addr)).collect();
    let refused = Session::try_open(&server.addr).err().expect("a 33rd session is refused");
    assert!(refused.to_string().contains("at most 32 sessions"), "{refused}");
    open.pop().unwrap().leave();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match Session::try_open(&server.addr) {
            Ok(_) => break,
            Err(refused) => assert!(Instant::now() < deadline, "no session after one left: {refused}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_session_whose_run_failed_to_start_starts_it_on_the_next_call() {
    let wb = workbench("hello");
    // A file where the run folders go: the run cannot be recorded, so it does not start.
    fs::write(wb.path().join("findings"), "in the way").unwrap();
    let server = Server::start(wb.path(), &[]);
    let mut session = Session::open(&server.addr);
    let (_, is_error, raw) = session.call("call_agent", json!({"agent": "greeter", "task": "First try"}));
    assert!(is_error, "{raw}");
    fs::remove_file(wb.path().join("findings")).unwrap();
    let uri = session.start("greeter", "Second try");
    let (status, _, raw) = session.call("get_task_status", json!({"uri": uri, "wait_seconds": 30}));
    assert_eq!(status["result"], "hello", "{raw}");
    server.stop();
    assert_eq!(run_folders(wb.path()).len(), 1);
}
