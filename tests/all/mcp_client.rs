//! troupe as an MCP client, through the binary, against real servers: the independent
//! `mcp-server-time` (PyPI) and `fixtures/mcp/misbehaving_server.py` for the faults (a crash
//! mid-call, a hang, garbage, slow progress, a server that cannot start). Scripted chat models
//! decide which tools are called; everything between troupe and the servers is real.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use troupe::findings::read_events;
use troupe::protocol::EventBody;

use crate::mcp_env::{fixtures, time_server};

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

/// A workbench with the time server, the misbehaving server (logging what it receives to
/// `server.log`) and a broken server, plus `agents` and `script`.
fn workbench(agents: &[(&str, &str)], script: &str, experiments: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let misbehaving = fixtures().join("misbehaving_server.py");
    let log = dir.path().join("server.log");
    let toml = format!(
        r#"[models.m]
provider = "scripted"
script = "scripts/s.toml"

[mcp.servers.time]
command = "{time}"
args = ["--local-timezone", "UTC"]

[mcp.servers.bad]
command = "python3"
args = ["{misbehaving}", "--log", "{log}"]
timeout_seconds = 2

[mcp.servers.broken]
command = "python3"
args = ["{misbehaving}", "--crash-on-start"]

[mcp.servers.patient]
command = "python3"
args = ["{misbehaving}", "--log", "{patient_log}"]
timeout_seconds = 600
"#,
        time = time_server().display(),
        misbehaving = misbehaving.display(),
        log = log.display(),
        patient_log = dir.path().join("patient.log").display()
    );
    let mut files: Vec<(String, String)> =
        vec![("troupe.toml".into(), toml), ("scripts/s.toml".into(), script.to_owned())];
    for (name, text) in agents {
        files.push((format!("agents/{name}.toml"), (*text).to_owned()));
    }
    for (name, text) in experiments {
        files.push((format!("experiments/{name}.toml"), (*text).to_owned()));
    }
    write_files(dir.path(), files);
    dir
}

/// Writes `files` (path under `root`, text), making their folders.
fn write_files<P: AsRef<Path>, T: AsRef<[u8]>>(root: &Path, files: impl IntoIterator<Item = (P, T)>) {
    for (path, text) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

fn troupe(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--root").arg(root).args(args).stdin(Stdio::null()).output().unwrap()
}

fn run_folder(output: &Output) -> PathBuf {
    assert!(output.status.success(), "{:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8_lossy(&output.stdout).lines().last().unwrap())
}

/// Each tool result of the run: (model-facing tool name, text, is_error).
fn results(run: &Path) -> Vec<(String, String, bool)> {
    let (events, _) = read_events(&run.join("events.jsonl")).unwrap();
    events
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::ToolResult { tool, result, is_error, .. } => {
                Some((tool, result.as_str().map_or_else(|| result.to_string(), str::to_owned), is_error))
            }
            _ => None,
        })
        .collect()
}

const CLOCK: &str = "model = \"m\"\ntools = [\"mcp:time/*\"]\nsystem_prompt = \"You tell the time.\"\n";

#[test]
fn mcp_list_shows_each_servers_tools_and_a_clear_error_for_one_that_fails() {
    let globby = "model = \"m\"\ntools = [\"mcp:time/get_*\", \"mcp:time/nothing*\"]\n";
    let wb = workbench(&[("globby", globby)], "", &[]);
    let output = troupe(wb.path(), &["mcp", "list", "--json"]);
    assert_eq!(output.status.code(), Some(1), "a failed server fails the listing");
    let reports: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = reports.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bad", "broken", "patient", "time"]);
    let time = &reports[3];
    assert_eq!(time["health"], "ok");
    let tools: Vec<&str> = time["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tools, ["get_current_time", "convert_time"]);
    assert_eq!(time["tools"][0]["inputSchema"]["required"], serde_json::json!(["timezone"]));
    let broken = &reports[1];
    assert_eq!(broken["health"], "failed");
    let error = broken["error"].as_str().unwrap();
    assert!(
        error.contains("MCP server `broken` did not start") && error.contains("cannot start: missing config"),
        "{error}"
    );

    let warnings = String::from_utf8_lossy(&output.stderr);
    assert!(
        warnings.contains("warning: agents/globby.toml: `mcp:time/nothing*` matches no tool of `time`"),
        "a glob that matches nothing is a warning: {warnings}"
    );
    assert!(!warnings.contains("mcp:time/get_*"), "a glob that matches is not: {warnings}");
    let text = String::from_utf8_lossy(&troupe(wb.path(), &["mcp", "list"]).stdout).into_owned();
    assert!(text.contains("time: ok (mcp-time") && text.contains("mcp:time/convert_time"), "{text}");
    assert!(text.contains("      timezone: string"), "{text}");
}

#[test]
fn an_expert_calls_a_real_mcp_tool_and_one_without_it_in_its_file_cannot() {
    let script = r#"
[[conversation]]
agent = "clock"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "time__get_current_time"
arguments = { timezone = "Europe/Lisbon" }
[[conversation.turn]]
text = "It is late."

[[conversation]]
agent = "plain"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "time__get_current_time"
arguments = { timezone = "UTC" }
[[conversation.turn]]
text = "I could not."
"#;
    let wb = workbench(
        &[("clock", CLOCK), ("plain", "model = \"m\"\nsystem_prompt = \"No tools.\"\n")],
        script,
        &[
            ("clock", "root = \"clock\"\ntask = \"What time is it in Lisbon?\"\n"),
            ("plain", "root = \"plain\"\ntask = \"What time is it?\"\n"),
        ],
    );
    let run = run_folder(&troupe(wb.path(), &["run", "clock"]));
    let results = results(&run);
    assert_eq!(results.len(), 1);
    let (tool, text, is_error) = &results[0];
    assert_eq!((tool.as_str(), *is_error), ("time__get_current_time", false));
    let time: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(time["timezone"], "Europe/Lisbon", "the server's own answer: {text}");
    assert!(time["datetime"].as_str().unwrap().starts_with("20"), "{text}");
    let transcript = fs::read_to_string(run.join("transcript.md")).unwrap();
    assert!(transcript.contains("- `time__get_current_time` = `mcp:time/get_current_time`"), "{transcript}");
    assert!(
        transcript.contains(
            "- Tool call `time__get_current_time` (`mcp:time/get_current_time`) `{\"timezone\":\"Europe/Lisbon\"}`"
        ),
        "both names are shown: {transcript}"
    );

    let run = run_folder(&troupe(wb.path(), &["run", "plain"]));
    let results = self::results(&run);
    assert!(results[0].2 && results[0].1.contains("unknown tool `time__get_current_time`"), "{results:?}");
}

#[test]
fn a_misbehaving_server_costs_its_calls_never_the_run() {
    let faulty = "model = \"m\"\ntools = [\"mcp:bad/*\", \"mcp:bad/nothing*\", \"mcp:broken/*\"]\nmax_turns = 12\nsystem_prompt = \"You test.\"\n";
    let calls = [
        ("bad__crash", "{}"),
        ("bad__echo", "{ text = \"back again\" }"),
        ("bad__hang", "{}"),
        ("bad__garbage", "{}"),
        ("bad__slow", "{ steps = 3, delay_ms = 150 }"),
        ("bad__image", "{}"),
        ("bad__fail", "{}"),
    ];
    let mut script = String::from("[[conversation]]\nagent = \"faulty\"\n");
    for (tool, arguments) in calls {
        script.push_str(&format!(
            "[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"{tool}\"\narguments = {arguments}\n"
        ));
    }
    script.push_str("[[conversation.turn]]\ntext = \"Survived.\"\n");
    let wb =
        workbench(&[("faulty", faulty)], &script, &[("faulty", "root = \"faulty\"\ntask = \"Test the server.\"\n")]);
    let run = run_folder(&troupe(wb.path(), &["run", "faulty"]));
    let results = results(&run);
    let by_tool = |name: &str| results.iter().find(|(tool, ..)| tool == name).unwrap().clone();

    let (_, crash, is_error) = by_tool("bad__crash");
    assert!(is_error && crash.contains("exited during the call") && crash.contains("crashing on purpose"), "{crash}");
    assert_eq!(by_tool("bad__echo"), ("bad__echo".into(), "back again".into(), false), "restarted after the crash");
    let (_, hang, is_error) = by_tool("bad__hang");
    assert!(is_error && hang.contains("did not answer `hang` within 2s"), "{hang}");
    let (_, garbage, is_error) = by_tool("bad__garbage");
    assert!(is_error && garbage.contains("not a tool result"), "{garbage}");
    assert_eq!(by_tool("bad__slow").1, "done after 3 steps");
    assert_eq!(by_tool("bad__image").1, "[image/png, 12 kB]\nan image\nstructured content: {\"width\":1,\"height\":1}");
    let (_, fail, is_error) = by_tool("bad__fail");
    assert!(is_error && fail == "it failed on purpose", "isError is a tool error the model reads: {fail}");

    let (events, _) = read_events(&run.join("events.jsonl")).unwrap();
    let progress: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::TaskStatus { status_message: Some(m), .. } if m.starts_with("bad__slow: step") => {
                Some(m.clone())
            }
            _ => None,
        })
        .collect();
    assert!(
        progress.contains(&"bad__slow: step 1 of 3 (1/3)".to_owned()),
        "progress is the task's status: {progress:?}"
    );
    let problems: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::McpTools { problems, .. } => Some(problems.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(problems.iter().any(|p| p.contains("`mcp:bad/nothing*` matches no tool of `bad`")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("MCP server `broken` did not start")), "{problems:?}");
    let summary = fs::read_to_string(run.join("report.md")).unwrap();
    assert!(summary.contains("completed"), "{summary}");

    let stderr = fs::read_to_string(run.join("mcp/bad.stderr")).unwrap();
    assert!(stderr.contains("crashing on purpose"), "the server's stderr is kept in the run folder: {stderr}");
    let log = fs::read_to_string(wb.path().join("server.log")).unwrap();
    assert!(log.contains("notifications/cancelled"), "a call past its timeout is cancelled at the server: {log}");
    assert_eq!(
        log.matches("\"method\": \"initialize\"").count() + log.matches("\"method\":\"initialize\"").count(),
        2,
        "started once, and once again after the crash: {log}"
    );
}

#[test]
fn a_server_that_exits_on_every_call_is_restarted_a_bounded_number_of_times() {
    let crasher = "model = \"m\"\ntools = [\"mcp:bad/crash\"]\nmax_turns = 8\nsystem_prompt = \"You test.\"\n";
    let mut script = String::from("[[conversation]]\nagent = \"crasher\"\n");
    for _ in 0..6 {
        script.push_str("[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"bad__crash\"\narguments = {}\n");
    }
    script.push_str("[[conversation.turn]]\ntext = \"Gave up.\"\n");
    let wb = workbench(&[("crasher", crasher)], &script, &[("crash", "root = \"crasher\"\ntask = \"Crash it.\"\n")]);
    let run = run_folder(&troupe(wb.path(), &["run", "crash"]));
    let errors: Vec<(String, bool)> = results(&run).into_iter().map(|(_, text, is_error)| (text, is_error)).collect();
    assert_eq!(errors.len(), 6, "{errors:?}");
    assert!(errors.iter().all(|(_, is_error)| *is_error), "{errors:?}");
    for (text, _) in &errors[..4] {
        assert!(text.contains("exited during the call") && text.contains("crashing on purpose"), "{text}");
    }
    for (text, _) in &errors[4..] {
        assert!(
            text.contains("exited again after 3 restarts in a row") && text.contains("not started again"),
            "the fifth call is refused at once: {text}"
        );
    }
    let log = fs::read_to_string(wb.path().join("server.log")).unwrap();
    let starts = log.matches("\"method\": \"initialize\"").count() + log.matches("\"method\":\"initialize\"").count();
    assert_eq!(starts, 4, "started once and restarted three times: {log}");
    let summary = fs::read_to_string(run.join("report.md")).unwrap();
    assert!(summary.contains("completed"), "the run went on: {summary}");

    // A call the server answered starts the count again: after crash, echo, the next four
    // crashes in a row are each a restart, not a refusal.
    let crasher = "model = \"m\"\ntools = [\"mcp:bad/crash\", \"mcp:bad/echo\"]\nmax_turns = 8\n";
    let mut script = String::from("[[conversation]]\nagent = \"crasher\"\n");
    script.push_str("[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"bad__crash\"\narguments = {}\n");
    script.push_str(
        "[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"bad__echo\"\narguments = { text = \"up\" }\n",
    );
    for _ in 0..4 {
        script.push_str("[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"bad__crash\"\narguments = {}\n");
    }
    script.push_str("[[conversation.turn]]\ntext = \"Gave up.\"\n");
    let wb = workbench(&[("crasher", crasher)], &script, &[("crash", "root = \"crasher\"\ntask = \"Crash it.\"\n")]);
    let run = run_folder(&troupe(wb.path(), &["run", "crash"]));
    let texts: Vec<String> = results(&run).into_iter().map(|(_, text, _)| text).collect();
    assert_eq!(texts[1], "up");
    for text in texts.iter().filter(|t| *t != "up") {
        assert!(text.contains("exited during the call"), "every crash reached the server: {text}");
    }
}

#[test]
fn agents_of_a_run_share_one_connection_and_cancelling_a_run_cancels_its_call() {
    let boss = "model = \"m\"\ntools = [\"call_agent\", \"get_task_status\", \"mcp:bad/echo\"]\nexperts = [\"helper\"]\nsystem_prompt = \"Boss.\"\n";
    let helper = "model = \"m\"\ntools = [\"mcp:bad/echo\", \"mcp:patient/hang\"]\nsystem_prompt = \"Helper.\"\n";
    let script = r#"
[[conversation]]
agent = "boss"
task_contains = "Share"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "helper", task = "Echo please" }
[[conversation.turn.call]]
tool = "bad__echo"
arguments = { text = "from the boss" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 10 }
[[conversation.turn]]
text = "Both echoed."

[[conversation]]
agent = "helper"
task_contains = "Echo"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "bad__echo"
arguments = { text = "from the helper" }
[[conversation.turn]]
text = "Echoed."

[[conversation]]
agent = "helper"
task_contains = "Wait"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "patient__hang"
arguments = {}
[[conversation.turn]]
text = "Never."
"#;
    let wb = workbench(
        &[("boss", boss), ("helper", helper)],
        script,
        &[
            ("share", "root = \"boss\"\ntask = \"Share the server.\"\n"),
            ("wait", "root = \"helper\"\ntask = \"Wait forever.\"\n[limits]\nmax_wall_seconds_per_subtask = 600\n"),
        ],
    );
    let run = run_folder(&troupe(wb.path(), &["run", "share"]));
    let echoed: Vec<String> =
        results(&run).into_iter().filter(|(t, ..)| t == "bad__echo").map(|(_, text, _)| text).collect();
    assert_eq!(echoed.len(), 2, "{echoed:?}");
    let log = fs::read_to_string(wb.path().join("server.log")).unwrap();
    let initializes = log.lines().filter(|l| l.contains("\"initialize\"")).count();
    assert_eq!(initializes, 1, "one connection for both agents: {log}");

    // The server gives the hang 600 s; the run is interrupted, and the call is cancelled.
    let child = Command::new(BIN)
        .arg("--root")
        .arg(wb.path())
        .args(["run", "wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !fs::read_to_string(wb.path().join("patient.log")).unwrap_or_default().contains("\"hang\"") {
        assert!(started.elapsed() < Duration::from_secs(30), "the hang call never reached the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    let log = fs::read_to_string(wb.path().join("patient.log")).unwrap();
    assert!(log.contains("notifications/cancelled"), "{log}");
}

/// The SDK's streamable HTTP server (`fixtures/mcp/http_server.py`) on a free port, with a token.
fn http_server(token: &str) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(crate::mcp_env::python())
        .arg(fixtures().join("http_server.py"))
        .arg(port.to_string())
        .args(["--token", token])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "the HTTP server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

#[test]
fn an_expert_calls_a_tool_of_a_streamable_http_server_with_its_token_from_the_environment() {
    let (mut server, port) = http_server("t0k");
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "troupe.toml".to_owned(),
            format!(
                "[models.m]\nprovider = \"scripted\"\nscript = \"s.toml\"\n\n[mcp.servers.adder]\nurl = \"http://127.0.0.1:{port}/mcp\"\nheaders = {{ Authorization = \"Bearer ${{ADDER_TOKEN}}\" }}\n\n[mcp.servers.nokey]\nurl = \"http://127.0.0.1:{port}/mcp\"\n"
            ),
        ),
        (
            "s.toml".to_owned(),
            "[[conversation]]\n[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"adder__add\"\narguments = { a = 2, b = 3 }\n[[conversation.turn]]\ntext = \"Five.\"\n".to_owned(),
        ),
        ("agents/sum.toml".to_owned(), "model = \"m\"\ntools = [\"mcp:adder/add\"]\n".to_owned()),
        ("experiments/sum.toml".to_owned(), "root = \"sum\"\ntask = \"Add 2 and 3.\"\n".to_owned()),
    ];
    write_files(dir.path(), files);
    let output = Command::new(BIN)
        .arg("--root")
        .arg(dir.path())
        .args(["run", "sum"])
        .env("ADDER_TOKEN", "t0k")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = run_folder(&output);
    assert_eq!(results(&run), [("adder__add".to_owned(), "5".to_owned(), false)]);

    let listed = Command::new(BIN).arg("--root").arg(dir.path()).args(["mcp", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("nokey: FAILED") && text.contains("It asks for a bearer token"), "{text}");
    server.kill().unwrap();
    let _ = server.wait();
}

#[test]
fn a_call_a_server_runs_as_an_mcp_task_is_a_subtask_of_kind_mcp_polled_to_its_end() {
    // The server: another troupe, serving a greeter; as a client troupe declares the Tasks
    // extension, so `call_agent` comes back as a task.
    let served = tempfile::tempdir().unwrap();
    for (path, text) in [
        (
            "troupe.toml",
            "[models.m]\nprovider = \"scripted\"\nscript = \"s.toml\"\n[models.slow]\nprovider = \"scripted\"\nscript = \"slow.toml\"\n",
        ),
        (
            "s.toml",
            "[[conversation]]\nrepeat = true\n[[conversation.turn]]\ndelay_ms = 300\ntext = \"hello from afar\"\n",
        ),
        ("agents/greeter.toml", "description = \"Says hello\"\nmodel = \"m\"\n"),
        ("agents/sleeper.toml", "description = \"Sleeps\"\nmodel = \"slow\"\n"),
        ("slow.toml", "[[conversation]]\nrepeat = true\n[[conversation.turn]]\ndelay_ms = 120000\ntext = \"awake\"\n"),
    ] {
        let path = served.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let client = tempfile::tempdir().unwrap();
    let files = [
        (
            "troupe.toml".to_owned(),
            format!(
                "[models.m]\nprovider = \"scripted\"\nscript = \"s.toml\"\n\n[mcp.servers.far]\ncommand = \"{BIN}\"\nargs = [\"--root\", \"{}\", \"mcp\", \"serve\"]\n",
                served.path().display()
            ),
        ),
        (
            "s.toml".to_owned(),
            "[[conversation]]\ntask_contains = \"sleep\"\n[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"far__call_agent\"\narguments = { task = \"Sleep\", agent = \"sleeper\" }\n[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"get_task_status\"\narguments = { uri = \"{{uri.1}}\", wait_seconds = 120 }\n[[conversation.turn]]\ntext = \"Never.\"\n\n[[conversation]]\n[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"far__call_agent\"\narguments = { task = \"Say hello\", agent = \"greeter\" }\n[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"get_task_status\"\narguments = { uri = \"{{uri.1}}\", wait_seconds = 30 }\n[[conversation.turn]]\ntext = \"They said: {{result.1}}\"\n".to_owned(),
        ),
        ("agents/caller.toml".to_owned(), "model = \"m\"\ntools = [\"mcp:far/call_agent\", \"get_task_status\"]\n".to_owned()),
        ("experiments/far.toml".to_owned(), "root = \"caller\"\ntask = \"Get a greeting.\"\n".to_owned()),
        ("experiments/sleep.toml".to_owned(), "root = \"caller\"\ntask = \"Let them sleep.\"\n".to_owned()),
    ];
    write_files(client.path(), files);
    let run = run_folder(&troupe(client.path(), &["run", "far"]));
    let (events, _) = read_events(&run.join("events.jsonl")).unwrap();
    let created = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::TaskCreated { uri, kind: troupe::protocol::TaskKind::Mcp, agent, model, .. } => {
                Some((*uri, agent.clone(), model.clone()))
            }
            _ => None,
        })
        .expect("an mcp subtask");
    assert_eq!((created.1.as_str(), created.2.as_str()), ("mcp:far/call_agent", "far"));
    let finished = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::TaskStatus { uri, status, result, .. } if *uri == created.0 && status.is_terminal() => {
                Some((*status, result.clone()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(finished.0, troupe::protocol::TaskStatus::Completed);
    assert!(finished.1.unwrap().contains("hello from afar"), "the task's result is the server's");
    let (_, answer, _) = results(&run).into_iter().find(|(tool, ..)| tool == "get_task_status").unwrap();
    assert!(answer.contains("\"kind\": \"mcp\"") || answer.contains("\"kind\":\"mcp\""), "{answer}");

    // Interrupting the client's run cancels the subtask, and so the server's task: the server's
    // own record of the session shows its subtask cancelled.
    for dir in fs::read_dir(served.path().join("findings")).unwrap() {
        fs::remove_dir_all(dir.unwrap().path()).unwrap();
    }
    let child = Command::new(BIN)
        .arg("--root")
        .arg(client.path())
        .args(["run", "sleep"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let served_events = || -> Option<PathBuf> {
        let dir = fs::read_dir(served.path().join("findings")).ok()?.next()?.ok()?.path();
        Some(dir.join("events.jsonl"))
    };
    while !served_events().and_then(|p| fs::read_to_string(p).ok()).is_some_and(|t| t.contains("\"agent\":\"sleeper\""))
    {
        assert!(started.elapsed() < Duration::from_secs(60), "the sleeper never started at the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    let (events, _) = read_events(&served_events().unwrap()).unwrap();
    let sleeper = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::TaskCreated { uri, agent, .. } if agent == "sleeper" => Some(*uri),
            _ => None,
        })
        .unwrap();
    let ended = events.iter().rev().find_map(|e| match &e.body {
        EventBody::TaskStatus { uri, status, .. } if *uri == sleeper => Some(*status),
        _ => None,
    });
    assert_eq!(ended, Some(troupe::protocol::TaskStatus::Cancelled));
    // The server cancels what is left when a client leaves, too; that `tasks/cancel` itself
    // came shows as the session's own `cancel_task` call.
    let asked = events.iter().any(|e| {
        matches!(&e.body, EventBody::ToolCall { tool, arguments, .. }
            if tool == "cancel_task" && arguments["uri"] == sleeper.to_string())
    });
    assert!(asked, "tasks/cancel reached the server before the client left");
}

#[test]
fn a_secret_a_server_echoes_is_redacted_from_the_findings() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "troupe.toml",
            "[models.m]\nprovider = \"scripted\"\nscript = \"s.toml\"\n\n[mcp.servers.leaky]\ncommand = \"sh\"\nargs = [\"-c\", \"echo \\\"my token is $API_TOKEN\\\" >&2; exit 1\"]\nenv = { API_TOKEN = \"${TROUPE_TEST_MCP_VALUE}\" }\n",
        ),
        ("s.toml", "[[conversation]]\n[[conversation.turn]]\ntext = \"No tools today.\"\n"),
        ("agents/user.toml", "model = \"m\"\ntools = [\"mcp:leaky/*\"]\n"),
        ("experiments/leak.toml", "root = \"user\"\ntask = \"Use the leaky server.\"\n"),
    ];
    write_files(dir.path(), files);
    let secret = "s3cret-value-4711";
    let output = Command::new(BIN)
        .arg("--root")
        .arg(dir.path())
        .args(["run", "leak"])
        .env("TROUPE_TEST_MCP_VALUE", secret)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = run_folder(&output);
    let events = fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(events.contains("my token is [redacted]"), "the server's stderr is quoted, redacted: {events}");
    for file in ["events.jsonl", "transcript.md", "report.md", "mcp/leaky.stderr"] {
        let text = fs::read_to_string(run.join(file)).unwrap();
        assert!(!text.contains(secret), "{file} holds the secret");
    }
}

#[test]
fn the_embedded_model_calls_a_real_mcp_tool_with_arguments_its_schema_accepts() {
    let _turn = crate::local_model::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "troupe.toml".to_owned(),
            format!(
                "[models.small]\nprovider = \"local\"\nmodel = \"smollm2-135m-instruct\"\ntemperature = 0.0\nmax_tokens = 96\n\n[mcp.servers.time]\ncommand = \"{}\"\nargs = [\"--local-timezone\", \"UTC\"]\n",
                time_server().display()
            ),
        ),
        (
            "agents/clock.toml".to_owned(),
            "model = \"small\"\ntools = [\"mcp:time/get_current_time\"]\ntool_choice = \"required\"\nmax_turns = 2\nsystem_prompt = \"You tell the time with your tool.\"\n".to_owned(),
        ),
        ("experiments/clock.toml".to_owned(), "root = \"clock\"\ntask = \"What time is it in Tokyo?\"\n".to_owned()),
    ];
    write_files(dir.path(), files);
    let run = run_folder(&troupe(dir.path(), &["run", "clock"]));
    let (events, _) = read_events(&run.join("events.jsonl")).unwrap();
    let schema = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::McpTools { tools, .. } => tools.first().cloned(),
            _ => None,
        })
        .expect("the expert was given the tool");
    assert_eq!(schema.name, "time__get_current_time");
    let report = troupe(dir.path(), &["mcp", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let input_schema = &listed["tools"][0]["inputSchema"];
    let validator = jsonschema::validator_for(input_schema).unwrap();
    let calls: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolCall { tool, arguments, .. } if tool == "time__get_current_time" => Some(arguments.clone()),
            _ => None,
        })
        .collect();
    assert!(!calls.is_empty(), "tool_choice = required: the model called the tool");
    for arguments in &calls {
        assert!(
            validator.is_valid(arguments),
            "the 135M model's call validates against the server's schema: {arguments}"
        );
    }
    let answered = results(&run).into_iter().filter(|(tool, ..)| tool == "time__get_current_time").count();
    assert_eq!(answered, calls.len(), "every call reached the server and came back");
}

#[test]
fn an_eager_server_starts_with_troupe_and_every_server_is_closed_cleanly_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let misbehaving = fixtures().join("misbehaving_server.py");
    let (eager_log, lazy_log, used_log) =
        (dir.path().join("eager.log"), dir.path().join("lazy.log"), dir.path().join("used.log"));
    let toml = format!(
        "[models.m]\nprovider = \"scripted\"\nscript = \"s.toml\"\n\n\
         [mcp.servers.eager]\ncommand = \"python3\"\nargs = [\"{m}\", \"--log\", \"{eager}\"]\nstart = \"eager\"\n\n\
         [mcp.servers.lazy]\ncommand = \"python3\"\nargs = [\"{m}\", \"--log\", \"{lazy}\"]\n\n\
         [mcp.servers.used]\ncommand = \"python3\"\nargs = [\"{m}\", \"--log\", \"{used}\"]\n",
        m = misbehaving.display(),
        eager = eager_log.display(),
        lazy = lazy_log.display(),
        used = used_log.display()
    );
    let files = [
        ("troupe.toml".to_owned(), toml),
        (
            "s.toml".to_owned(),
            "[[conversation]]\n[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"used__echo\"\narguments = { text = \"hi\" }\n[[conversation.turn]]\ndelay_ms = 1500\ntext = \"Done.\"\n".to_owned(),
        ),
        ("agents/user.toml".to_owned(), "model = \"m\"\ntools = [\"mcp:used/echo\"]\n".to_owned()),
        ("experiments/use.toml".to_owned(), "root = \"user\"\ntask = \"Echo.\"\n".to_owned()),
    ];
    write_files(dir.path(), files);
    let run = run_folder(&troupe(dir.path(), &["run", "use"]));
    assert_eq!(results(&run), [("used__echo".to_owned(), "hi".to_owned(), false)]);
    let read = |path: &Path| fs::read_to_string(path).unwrap_or_default();
    let (eager, used) = (read(&eager_log), read(&used_log));
    assert!(eager.contains("initialize"), "started with troupe although no agent used it: {eager}");
    assert!(!lazy_log.exists(), "a lazy server nobody used is never started");
    for (name, log) in [("eager", &eager), ("used", &used)] {
        assert!(log.trim_end().ends_with("<stdin closed>"), "{name} was closed cleanly when troupe exited: {log}");
    }
}
