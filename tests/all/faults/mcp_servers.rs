//! Fault cases: see `faults/mod.rs`.
//!
//! MCP servers that crash, hang, flood their stderr or answer too much, through the `troupe`
//! binary against `fixtures/mcp/hostile_server.py` (standard-library Python, over stdio or
//! HTTP on 127.0.0.1). What the user gets: the run ends as usual, the fault is a tool error the
//! model reads, the run folder stays bounded, and a huge result reaches the model cut, with the
//! marker saying by how much.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use troupe::findings::read_events;
use troupe::mcp::client::{STDERR_BYTES_PER_RUN, STDERR_LINE_BYTES};
use troupe::protocol::{EventBody, RunStatus};

use crate::http_server::{Reply, Server};
use crate::mcp_env::fixtures;

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

fn hostile() -> PathBuf {
    fixtures().join("hostile_server.py")
}

/// A workbench whose expert `user` (tools `mcp:hostile/*`) is driven by a scripted model that
/// calls `tool` with `arguments` once, then answers; `server` is the `[mcp.servers.hostile]`
/// table's body.
fn workbench(server: &str, tool: &str, arguments: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "[[conversation]]\n[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"hostile__{tool}\"\narguments = {arguments}\n[[conversation.turn]]\ntext = \"The run went on.\"\n"
    );
    let files = [
        (
            "troupe.toml",
            format!("[models.m]\nprovider = \"scripted\"\nscript = \"s.toml\"\n\n[mcp.servers.hostile]\n{server}"),
        ),
        ("s.toml", script),
        ("agents/user.toml", "model = \"m\"\ntools = [\"mcp:hostile/*\"]\n".to_owned()),
        ("experiments/fault.toml", "root = \"user\"\ntask = \"Use the server.\"\n".to_owned()),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn stdio_server(extra: &str) -> String {
    format!("command = \"python3\"\nargs = [\"{}\"]\n{extra}", hostile().display())
}

fn run_fault(root: &Path) -> (Output, PathBuf) {
    let output =
        Command::new(BIN).arg("--root").arg(root).args(["run", "fault"]).stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let folder = PathBuf::from(
        stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no run folder printed; stderr: {}", String::from_utf8_lossy(&output.stderr))),
    );
    (output, folder)
}

/// The run completed with the scripted answer, and its one tool result was (text, is_error).
fn the_run_went_on_with_one_result(output: &Output, folder: &Path) -> (String, bool) {
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let (events, _) = read_events(&folder.join("events.jsonl")).unwrap();
    let finished = events.iter().find_map(|e| match &e.body {
        EventBody::RunFinished { status, result, .. } => Some((*status, result.clone())),
        _ => None,
    });
    assert_eq!(finished, Some((RunStatus::Completed, Some("The run went on.".to_owned()))));
    let results: Vec<(String, bool)> = events
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::ToolResult { result, is_error, .. } => {
                Some((result.as_str().map_or_else(|| result.to_string(), str::to_owned), is_error))
            }
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 1, "{results:?}");
    results.into_iter().next().unwrap()
}

#[test]
fn a_server_that_crashes_mid_call_is_a_tool_error_saying_so() {
    let wb = workbench(&stdio_server(""), "crash", "{}");
    let (output, folder) = run_fault(wb.path());
    let (text, is_error) = the_run_went_on_with_one_result(&output, &folder);
    assert!(is_error, "{text}");
    assert!(text.contains("exited during the call to `crash`") && text.contains("crashing on purpose"), "{text}");
}

#[test]
fn a_server_that_hangs_is_cancelled_at_its_timeout_and_the_run_goes_on() {
    let wb = workbench(&stdio_server("timeout_seconds = 1\n"), "hang", "{}");
    let (output, folder) = run_fault(wb.path());
    let (text, is_error) = the_run_went_on_with_one_result(&output, &folder);
    assert!(is_error, "{text}");
    assert_eq!(text, "MCP server `hostile` did not answer `hang` within 1s; the call was cancelled");
}

#[test]
fn a_server_flooding_stderr_is_copied_capped_per_line_and_per_run() {
    // One line of 1 MiB, then 6 MiB of 1 KiB lines.
    let wb = workbench(&stdio_server(""), "flood", "{ mib = 6, long_kib = 1024 }");
    let (output, folder) = run_fault(wb.path());
    assert_eq!(the_run_went_on_with_one_result(&output, &folder), ("flooded".to_owned(), false));
    let copied = fs::read_to_string(folder.join("mcp/hostile.stderr")).unwrap();
    assert!(copied.len() <= STDERR_BYTES_PER_RUN + 200, "{} bytes copied", copied.len());
    let lines: Vec<&str> = copied.lines().collect();
    let long = format!("{}… [cut {} bytes]", "L".repeat(STDERR_LINE_BYTES), 1024 * 1024 - STDERR_LINE_BYTES);
    assert_eq!(lines[0], long, "the long line is cut and says by how much");
    assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() == 1023), "whole lines until the budget ran out");
    assert_eq!(
        lines.last().copied(),
        Some("[troupe: this server wrote more than 4 MiB of stderr during the run; the rest is dropped]")
    );
}

/// An OpenAI-compatible chunk: `choices[0]` given.
fn chunk(choice: Value) -> String {
    let event = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]});
    format!("data: {event}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_result_reaches_the_model_cut_with_the_marker_it_reads() {
    // The model is a remote one (the scripted HTTP server), so what it was sent is on record.
    let call = json!({"index": 0, "id": "call_h", "type": "function",
        "function": {"name": "hostile__huge", "arguments": "{\"bytes\": 2097152}"}});
    let calling = [
        chunk(json!({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null})),
        chunk(json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})),
        "data: [DONE]".to_owned(),
    ];
    let answering = [
        chunk(json!({"index": 0, "delta": {"content": "Too long to read."}, "finish_reason": null})),
        chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop"})),
        "data: [DONE]".to_owned(),
    ];
    let model = Server::start([Reply::sse(calling), Reply::sse(answering)]).await;
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "troupe.toml",
            format!(
                "[models.m]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\nmax_retries = 0\n\n[limits]\nmax_tool_result_bytes = 4096\n\n[mcp.servers.hostile]\n{}",
                model.url(),
                stdio_server("")
            ),
        ),
        // The expert's own limit wins over [limits]; 1001 falls inside an `é` (2 bytes).
        (
            "agents/user.toml",
            "model = \"m\"\ntools = [\"mcp:hostile/huge\"]\nmax_tool_result_bytes = 1001\n".to_owned(),
        ),
        ("experiments/fault.toml", "root = \"user\"\ntask = \"Read it all.\"\n".to_owned()),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let root = dir.path().to_owned();
    let (output, folder) = tokio::task::spawn_blocking(move || run_fault(&root)).await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let expected = format!("{}\n[truncated {} bytes]", "é".repeat(500), 2_097_152 - 1000);
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let messages = requests[1].body["messages"].as_array().unwrap();
    let read = messages.iter().find(|m| m["role"] == "tool").expect("the result was sent back");
    assert_eq!(read["content"].as_str(), Some(expected.as_str()), "what the model reads is cut and marked");
    let (events, _) = read_events(&folder.join("events.jsonl")).unwrap();
    let recorded = events.iter().find_map(|e| match &e.body {
        EventBody::ToolResult { result, is_error: false, .. } => result.as_str().map(str::to_owned),
        _ => None,
    });
    assert_eq!(recorded.as_deref(), Some(expected.as_str()), "the event records what the model read");
    let on_disk = fs::metadata(folder.join("events.jsonl")).unwrap().len();
    assert!(on_disk < 64 * 1024, "the run folder holds the cut result, not 2 MiB: {on_disk} bytes");
}

/// The hostile server over streamable HTTP on a free port; killed when dropped.
struct HttpServer(std::process::Child, u16);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_server() -> HttpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .arg(hostile())
        .args(["--http", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "the hostile HTTP server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    HttpServer(child, port)
}

#[test]
fn an_http_server_answering_more_than_the_body_limit_is_a_tool_error_not_a_crash() {
    let server = http_server();
    // 12 MiB of answer: past the client's 8 MiB limit on a body.
    let wb = workbench(
        &format!("url = \"http://127.0.0.1:{}/mcp\"\ntimeout_seconds = 20\n", server.1),
        "huge",
        "{ bytes = 12582912 }",
    );
    let (output, folder) = run_fault(wb.path());
    let (text, is_error) = the_run_went_on_with_one_result(&output, &folder);
    assert!(is_error, "{}", troupe::protocol::shorten(&text, 300));
    assert_eq!(
        text,
        "MCP server `hostile` answered `huge`, but its answer is larger than 8 MiB, more than troupe reads, and was dropped"
    );
}
