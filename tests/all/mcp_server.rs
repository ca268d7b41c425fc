//! `troupe mcp serve` driven by an independent client: the official Python SDK (`mcp` 2.3.0)
//! through `fixtures/mcp/drive_troupe_server.py`, over stdio and streamable HTTP, with and
//! without the Tasks extension, in both protocol eras. The experts are scripted; the protocol,
//! the transports and the runs are real.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::mcp_env::{fixtures, python};

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

/// Four experts: `greeter` answers after 0.6 s, `slowpoke` starts two `sleeper`s (which take
/// two minutes) and waits on them, `failer` fails.
fn workbench() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("troupe.toml", "[models.m]\nprovider = \"scripted\"\nscript = \"scripts/s.toml\"\n"),
        ("agents/greeter.toml", "description = \"Says hello\"\nmodel = \"m\"\nsystem_prompt = \"Greet.\"\n"),
        (
            "agents/slowpoke.toml",
            "description = \"Starts two sleepers and waits for them\"\nmodel = \"m\"\ntools = [\"call_agent\", \"get_task_status\"]\nexperts = [\"sleeper\"]\nsystem_prompt = \"Wait.\"\n",
        ),
        ("agents/sleeper.toml", "description = \"Sleeps\"\nmodel = \"m\"\nsystem_prompt = \"Sleep.\"\n"),
        // No conversation of the script is the failer's: its model call fails.
        ("agents/failer.toml", "description = \"Fails\"\nmodel = \"m\"\nsystem_prompt = \"Fail.\"\n"),
        (
            "scripts/s.toml",
            r#"
[[conversation]]
agent = "greeter"
repeat = true
[[conversation.turn]]
delay_ms = 600
text = "hello"

[[conversation]]
agent = "slowpoke"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "sleeper", task = "Sleep one" }
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "sleeper", task = "Sleep two" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 300 }
[[conversation.turn]]
text = "done"

[[conversation]]
agent = "sleeper"
repeat = true
[[conversation.turn]]
delay_ms = 120000
text = "awake"
"#,
        ),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// Runs the SDK driver with `args` and returns its report (it prints one JSON object).
fn drive(args: &[&str]) -> Value {
    drive_with_env(args, &[])
}

/// [`drive`] with `env` added to the driver's environment (a bearer token, say).
fn drive_with_env(args: &[&str], env: &[(&str, &str)]) -> Value {
    let output = Command::new(python())
        .envs(env.iter().copied())
        .arg(fixtures().join("drive_troupe_server.py"))
        .args(["--agent", "greeter", "--slow-agent", "slowpoke", "--failing-agent", "failer"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&output.stderr)));
    report
}

/// What every complete session shows, whatever the transport and era.
fn assert_session(report: &Value, how: &str) {
    assert_eq!(report["ok"], true, "{how}: failed at {}: {report:#}", report["failed_step"]);
    let steps = &report["steps"];
    let names: Vec<&str> =
        steps["list_tools"]["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    for tool in ["call_agent", "call_slm", "get_task_status", "cancel_task", "list_tasks"] {
        assert!(names.contains(&tool), "{how}: {names:?}");
    }
    let experts: Vec<&str> =
        steps["list_tools"]["agent_enum"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(experts, ["failer", "greeter", "sleeper", "slowpoke"], "{how}: the experts are the `agent` enum");
    assert_eq!(steps["call_agent"]["result"], "hello", "{how}: {:#}", steps["call_agent"]);
    assert_eq!(steps["resources"]["status"], "completed", "{how}");
    assert!(steps["subscribe"]["notifications"].as_u64().unwrap_or(0) >= 1, "{how}: {:#}", steps["subscribe"]);
    assert_eq!(steps["subscribe"]["final_status"], "completed", "{how}");
    let cancel = &steps["cancel"];
    assert_eq!(cancel["final_status"], "cancelled", "{how}: {cancel:#}");
    let children: Vec<&str> =
        cancel["children"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(children, ["cancelled", "cancelled"], "{how}: the subtree is cancelled");
    assert!(cancel["listed_in_list_tasks"] == true, "{how}: list_tasks lists the running call: {cancel:#}");
    let failing = &steps["failing"];
    assert_eq!(failing["final_status"], "failed", "{how}: {failing:#}");
    assert!(failing["error"].as_str().is_some_and(|e| !e.is_empty()), "{how}: the reason is readable: {failing:#}");
    if how.contains("tasks true") {
        assert_eq!(failing["task_final_status"], "failed", "{how}: the MCP task ends as its subtask did");
    }
}

/// The one session folder under `root/findings`, and its transcript.
fn session(root: &Path) -> (PathBuf, String) {
    let dirs: Vec<PathBuf> = fs::read_dir(root.join("findings")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let transcript = fs::read_to_string(dirs[0].join("transcript.md")).unwrap();
    (dirs[0].clone(), transcript)
}

#[test]
fn the_sdk_drives_troupe_over_stdio_with_and_without_tasks_and_each_session_is_a_run() {
    for (mode, tasks) in [("legacy", false), ("auto", false), ("auto", true)] {
        let wb = workbench();
        let root = wb.path().to_str().unwrap();
        let mut args = vec!["--transport", "stdio", "--command", BIN, "--root", root, "--mode", mode];
        if tasks {
            args.push("--tasks");
        }
        let how = format!("stdio, mode {mode}, tasks {tasks}");
        let report = drive(&args);
        assert_session(&report, &how);
        let era = report["steps"]["connect"]["protocol_version"].as_str().unwrap();
        assert_eq!(era, if mode == "legacy" { "2025-11-25" } else { "2026-07-28" }, "{how}");
        let (dir, transcript) = session(wb.path());
        assert!(dir.file_name().unwrap().to_string_lossy().contains("mcp-serve"), "{dir:?}");
        assert!(transcript.contains("Root agent: mcp-client"), "{how}: {transcript}");
        assert!(
            transcript.contains("- Tool call `call_agent` `{\"task\":\"Say hello\",\"agent\":\"greeter\"}`"),
            "{how}"
        );
        assert!(transcript.contains("agent greeter"), "{how}: the experts' work is in the run");
        // Memory learns from a session as from any run: its episode is what the client delegated.
        let listed = Command::new(BIN)
            .arg("--root")
            .arg(wb.path())
            .args(["memory", "list", "--kind", "episode", "--json"])
            .output()
            .unwrap();
        let episodes: Vec<Value> =
            String::from_utf8_lossy(&listed.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(episodes.len(), 1, "{how}: {episodes:?}");
        let episode = &episodes[0];
        // The client's own calls, in order; not what its experts delegated in turn (slowpoke's
        // sleepers), and the session failed, since the client cancelled one call.
        assert_eq!(
            episode["text"], "Say hello\nSay hello again\nWork on this for a long time; start helpers\nFail on purpose",
            "{how}"
        );
        assert_eq!(episode["data"]["pass"], false, "{how}: {episode}");
        assert_eq!(episode["provenance"]["run_id"], dir.file_name().unwrap().to_string_lossy().as_ref(), "{how}");
        assert_eq!(episode["data"]["experiment"], "mcp-serve", "{how}");
    }
}

/// The bearer token the HTTP tests' servers are given, and the variable it is passed in.
const TOKEN_VAR: &str = "TROUPE_TEST_TOKEN";
const TOKEN: &str = "s3cret-token-for-tests";

/// `troupe mcp serve --http` on a free port; returns it and its address.
fn serve_http(
    root: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, String, BufReader<std::process::ChildStderr>) {
    let mut child = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(["mcp", "serve", "--http", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr =
        line.split("http://").nth(1).and_then(|rest| rest.split("/mcp").next()).unwrap_or_else(|| panic!("{line}"));
    (child, addr.to_owned(), stderr)
}

/// The run folders under `root/findings`, each with its transcript, in no particular order.
fn sessions(root: &Path) -> Vec<(PathBuf, String)> {
    fs::read_dir(root.join("findings"))
        .unwrap()
        .map(|e| {
            let dir = e.unwrap().path();
            let transcript = fs::read_to_string(dir.join("transcript.md")).unwrap();
            (dir, transcript)
        })
        .collect()
}

/// A raw HTTP POST of an `initialize` request; returns the status line.
fn post(addr: &str, headers: &[&str]) -> String {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_sdk_drives_troupe_over_http_each_session_is_a_run_and_bad_origins_and_missing_tokens_are_refused() {
    let wb = workbench();
    let (mut child, addr, mut stderr) = serve_http(wb.path(), &["--token-env", TOKEN_VAR], &[(TOKEN_VAR, TOKEN)]);
    let url = format!("http://{addr}/mcp");
    for (mode, tasks) in [("legacy", false), ("auto", false), ("auto", true)] {
        let mut args = vec!["--transport", "http", "--url", &url, "--mode", mode, "--bearer-token-env", TOKEN_VAR];
        if tasks {
            args.push("--tasks");
        }
        assert_session(&drive_with_env(&args, &[(TOKEN_VAR, TOKEN)]), &format!("http, mode {mode}, tasks {tasks}"));
    }
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert!(post(&addr, &["Origin: http://evil.example", &bearer]).contains("403"), "a foreign Origin is refused");
    assert!(post(&addr, &["Origin: http://localhost:3000", &bearer]).contains("200"), "a local page may call");
    assert!(post(&addr, &[&bearer]).contains("200"), "a client without Origin may call");
    assert!(post(&addr, &[]).contains("401"), "no token, no answer");
    assert!(post(&addr, &["Authorization: Bearer wrong"]).contains("401"));

    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("session ended: its run is in"), "{rest}");
    // The legacy client opened a session (initialize): a run of its own. The two 2026-07-28
    // clients have no session: they share the server's sessionless run.
    let call = "- Tool call `call_agent` `{\"task\":\"Say hello\",\"agent\":\"greeter\"}`";
    let mut calls: Vec<usize> = sessions(wb.path()).iter().map(|(_, t)| t.matches(call).count()).collect();
    calls.sort_unstable();
    assert_eq!(calls, [1, 2], "one run per session, one for the sessionless requests");
    for (dir, transcript) in sessions(wb.path()) {
        assert!(transcript.contains("Root agent: mcp-client"), "{dir:?}");
    }

    // Off loopback, a token of one's own is required (a generated one is for this machine).
    let output = Command::new(BIN)
        .arg("--root")
        .arg(wb.path())
        .args(["mcp", "serve", "--http", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs a bearer token of your own: pass --token-env VAR"));
}
