//! MCP both ways, measured:
//!
//! 1. One tool call through the shared client over stdio (`McpPool::call`, `echo` on the
//!    fixture server in Python), p50 and p99 over 1,000 calls, beside the same server answering
//!    the same request written and read as a raw JSON line (no troupe, no rmcp): the difference
//!    is the client's overhead.
//! 2. 100 agents calling one server at once: 100 concurrent calls multiplexed on the one shared
//!    connection; wall time, and every answer checked against its caller.
//! 3. `troupe mcp serve` answering 1,000 `get_task_status` reads (through rmcp's client),
//!    p50, p99 and the rate.
//!
//! Run with `cargo bench --bench mcp`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use troupe::config::{McpServerSpec, McpStart, McpTransport};
use troupe::mcp::client::McpPool;
use troupe::protocol::ToolSpec;
use troupe::runtime::mcp::{McpOutcome, McpProgress, McpReply, McpTaskState, McpTool};

const CALLS: usize = 1_000;
const AGENTS: usize = 100;
const READS: usize = 1_000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/mcp/misbehaving_server.py")
}

fn server(name: &str, command: &str, args: Vec<String>, cwd: &Path) -> McpServerSpec {
    McpServerSpec {
        name: name.to_owned(),
        transport: McpTransport::Stdio {
            command: command.to_owned(),
            args,
            env: BTreeMap::new(),
            cwd: cwd.to_path_buf(),
        },
        timeout_seconds: 60,
        start: McpStart::Lazy,
        location: troupe::config::Location { path: cwd.join("troupe.toml"), line: 1, col: 1 },
    }
}

fn tool(server: &str, name: &str) -> McpTool {
    McpTool {
        spec: ToolSpec { name: format!("{server}__{name}"), description: String::new(), parameters: json!({}) },
        reference: format!("mcp:{server}/{name}"),
        server: server.to_owned(),
        tool: name.to_owned(),
    }
}

fn quiet() -> McpProgress {
    Arc::new(|_| {})
}

/// A call's answer (the fixture server never runs a call as a task).
fn answered(outcome: McpOutcome) -> McpReply {
    match outcome {
        McpOutcome::Done(reply) => reply,
        McpOutcome::Task { task_id, .. } => panic!("the server made task {task_id} of a quick call"),
    }
}

/// p50 and p99 in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

/// The fixture server spoken to directly: one JSON line out, one back.
fn raw_round_trips() -> (f64, f64) {
    let mut child = Command::new("python3")
        .arg(fixture())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut send = |message: Value, line: &mut String| {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        line.clear();
        stdout.read_line(line).unwrap();
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}});
    send(init, &mut line);
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let call = json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": format!("call {i}")}}});
        let started = Instant::now();
        send(call, &mut line);
        samples.push(started.elapsed());
        assert!(line.contains(&format!("call {i}")), "{line}");
    }
    drop(stdin);
    let _ = child.wait();
    percentiles(&mut samples)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (raw_p50, raw_p99) = raw_round_trips();
    println!("the fixture server over a raw pipe (no troupe): p50 {raw_p50:.3} ms, p99 {raw_p99:.3} ms per echo");

    runtime.block_on(async {
        let fixture = fixture().display().to_string();
        let servers = BTreeMap::from([("echo".to_owned(), server("echo", "python3", vec![fixture], dir.path()))]);
        let pool = McpPool::new(&servers);
        let echo = tool("echo", "echo");
        let started = Instant::now();
        pool.call(&echo, json!({"text": "warm"}), quiet(), CancellationToken::new()).await.unwrap();
        println!("first call (starts the server, initialize, tools/list): {:.0} ms", started.elapsed().as_secs_f64() * 1e3);

        let mut samples = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let text = format!("call {i}");
            let started = Instant::now();
            let reply = answered(pool.call(&echo, json!({"text": text}), quiet(), CancellationToken::new()).await.unwrap());
            samples.push(started.elapsed());
            assert_eq!(reply.content, Value::String(text));
        }
        let (p50, p99) = percentiles(&mut samples);
        println!(
            "one call through the shared client: p50 {p50:.3} ms, p99 {p99:.3} ms ({CALLS} calls); overhead over the raw pipe: p50 {:.3} ms",
            p50 - raw_p50
        );

        let started = Instant::now();
        let calls = (0..AGENTS).map(|agent| {
            let (pool, echo) = (pool.clone(), echo.clone());
            tokio::spawn(async move {
                let text = format!("agent {agent}");
                let reply = answered(pool.call(&echo, json!({"text": text}), quiet(), CancellationToken::new()).await.unwrap());
                reply.content == Value::String(text)
            })
        });
        let answers = futures_util::future::join_all(calls).await;
        let wall = started.elapsed();
        let correct = answers.into_iter().filter(|a| matches!(a, Ok(true))).count();
        println!(
            "{AGENTS} agents calling one server at once: {:.1} ms wall, {correct}/{AGENTS} answers correct",
            wall.as_secs_f64() * 1e3
        );
        assert_eq!(correct, AGENTS);
        pool.close().await;

        // troupe mcp serve, as a client's server: a scripted expert, then reads of its subtask.
        let workbench = dir.path().join("wb");
        std::fs::create_dir_all(workbench.join("agents")).unwrap();
        std::fs::write(workbench.join("troupe.toml"), "[models.m]\nprovider = \"scripted\"\nscript = \"s.toml\"\n").unwrap();
        std::fs::write(workbench.join("s.toml"), "[[conversation]]\nrepeat = true\n[[conversation.turn]]\ntext = \"hello\"\n").unwrap();
        std::fs::write(workbench.join("agents/greeter.toml"), "model = \"m\"\n").unwrap();
        let args = vec!["--root".to_owned(), workbench.display().to_string(), "mcp".to_owned(), "serve".to_owned()];
        let servers = BTreeMap::from([("troupe".to_owned(), server("troupe", env!("CARGO_BIN_EXE_troupe"), args, &workbench))]);
        let pool = McpPool::new(&servers);
        // troupe declares the Tasks extension, so the server runs `call_agent` as a task; its
        // result, once done, is the subtask's resource.
        let call_agent = tool("troupe", "call_agent");
        let outcome = pool
            .call(&call_agent, json!({"task": "Say hello", "agent": "greeter"}), quiet(), CancellationToken::new())
            .await
            .unwrap();
        let McpOutcome::Task { task_id, poll } = outcome else { panic!("call_agent was not run as a task") };
        let resource = loop {
            match pool.task_state(&call_agent, &task_id).await.unwrap() {
                McpTaskState::Done(reply) => break reply,
                McpTaskState::Working { .. } => tokio::time::sleep(poll).await,
                other => panic!("the task ended {other:?}"),
            }
        };
        let resource: Value = serde_json::from_str(resource.content.as_str().unwrap()).unwrap();
        let uri = resource["uri"].as_str().unwrap().to_owned();
        let status = tool("troupe", "get_task_status");
        let mut samples = Vec::with_capacity(READS);
        let all = Instant::now();
        for _ in 0..READS {
            let started = Instant::now();
            let reply = answered(pool.call(&status, json!({"uri": uri}), quiet(), CancellationToken::new()).await.unwrap());
            samples.push(started.elapsed());
            assert!(!reply.is_error, "{:?}", reply.content);
        }
        let total = all.elapsed();
        let (p50, p99) = percentiles(&mut samples);
        println!(
            "troupe mcp serve answering {READS} get_task_status reads: {:.0} ms in all ({:.0} reads/s), p50 {p50:.3} ms, p99 {p99:.3} ms",
            total.as_secs_f64() * 1e3,
            READS as f64 / total.as_secs_f64()
        );
        pool.close().await;
    });
}
