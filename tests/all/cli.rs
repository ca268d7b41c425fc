//! The `troupe` binary as a user runs it: exit codes, diagnostics, the run folder, signals.
//! Each test works on a copy of the shipped workbench in a temporary folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::Value;
use troupe::findings::read_events;
use troupe::protocol::{EventBody, RunStatus, TaskKind};

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

/// A copy of the repository's workbench (troupe.toml, agents, experiments, scripts).
pub fn workbench() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    fs::copy(repo.join("troupe.toml"), dir.path().join("troupe.toml")).unwrap();
    for folder in ["agents", "experiments", "scripts"] {
        copy_tree(&repo.join(folder), &dir.path().join(folder));
    }
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() { copy_tree(&path, &target) } else { fs::copy(&path, target).map(|_| ()).unwrap() }
    }
}

fn troupe(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--root").arg(root).args(args).stdin(Stdio::null()).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The run folder: the last line of stdout.
fn run_folder(output: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or_else(|| panic!("no stdout; stderr: {}", stderr(output))))
}

/// A slow experiment for the signal tests: a root that waits on a worker that takes a minute.
fn add_slow_experiment(root: &Path) {
    fs::write(
        root.join("scripts/slow.toml"),
        r#"
[[conversation]]
agent = "coordinator"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "researcher", task = "take your time" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 120 }
[[conversation.turn]]
text = "{{result.1}}"

[[conversation]]
agent = "researcher"
[[conversation.turn]]
text = "Thinking slowly, word by word, so that the log keeps growing."
[[conversation.turn.call]]
tool = "list_tasks"
[[conversation.turn]]
delay_ms = 60000
text = "done at last"
"#,
    )
    .unwrap();
    fs::write(
        root.join("experiments/slow.toml"),
        r#"
name = "slow"
root = "coordinator"
task = "Wait for the researcher."
[models.small]
provider = "scripted"
script = "../scripts/slow.toml"
[models.slm]
provider = "scripted"
script = "../scripts/slow.toml"
"#,
    )
    .unwrap();
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `troupe run slow` and waits until its researcher is working.
fn start_slow(root: &Path) -> (Child, PathBuf) {
    add_slow_experiment(root);
    let child = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(["run", "slow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let findings = root.join("findings");
    let mut events_file = PathBuf::new();
    wait_for("the researcher to start", || {
        let Some(dir) = fs::read_dir(&findings).ok().and_then(|mut d| d.next()) else { return false };
        events_file = dir.unwrap().path().join("events.jsonl");
        fs::read_to_string(&events_file).is_ok_and(|text| text.contains("\"tool\":\"list_tasks\""))
    });
    (child, events_file)
}

#[test]
fn the_shipped_workbench_is_valid() {
    let root = workbench();
    let output = troupe(root.path(), &["check"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("10 agents, 6 experiments"), "{}", stderr(&output));
}

#[test]
fn check_points_at_file_line_and_column_with_a_hint() {
    let root = workbench();
    fs::write(
        root.path().join("agents/critic.toml"),
        "name = \"critic\"\nmodle = \"small\"\nmax_turns = \"three\"\ntools = [\"call_agnet\"]\n",
    )
    .unwrap();
    fs::write(root.path().join("experiments/broken.toml"), "root = \"nobody\"\ntask = \"x\"\n").unwrap();
    fs::write(
        root.path().join("agents/planner.toml"),
        "model = \"small\"\ntools = [\"call_slm\"]\ntool_plan = [\"call_slm\", \"get_task_status\"]\n",
    )
    .unwrap();
    let output = troupe(root.path(), &["check"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    let critic = root.path().join("agents/critic.toml").display().to_string();
    let broken = root.path().join("experiments/broken.toml").display().to_string();
    for expected in [
        format!("{critic}:2:1: error: unknown key `modle`\n  = hint: did you mean `model`?"),
        format!("{critic}:3:13: error: `max_turns` must be a positive integer, found a string"),
        format!("{critic}:4:10: error: unknown tool `call_agnet`\n  = hint: did you mean `call_agent`?"),
        format!("{broken}:1:8: error: unknown agent `nobody`"),
        format!(
            "{}:3:26: error: `tool_plan` names `get_task_status`, which is not in `tools`",
            root.path().join("agents/planner.toml").display()
        ),
    ] {
        assert!(text.contains(&expected), "missing:\n{expected}\n--- in ---\n{text}");
    }
}

#[test]
fn smoke_runs_the_whole_protocol_and_writes_the_run_folder() {
    let root = workbench();
    let output = troupe(root.path(), &["run", "smoke"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let folder = run_folder(&output);
    assert!(folder.starts_with(root.path().join("findings")), "{}", folder.display());
    for file in [
        "events.jsonl",
        "transcript.md",
        "report.md",
        "notes.md",
        "config/troupe.toml",
        "config/agents/coordinator.toml",
        "config/experiments/smoke.toml",
        "config/run.json",
    ] {
        assert!(folder.join(file).is_file(), "{file} missing");
    }

    let (events, warning) = read_events(&folder.join("events.jsonl")).unwrap();
    assert_eq!(warning, None);
    let mut depth = std::collections::HashMap::new();
    let mut deepest = 0;
    let mut tools = Vec::new();
    for event in &events {
        match &event.body {
            EventBody::TaskCreated { uri, parent, .. } => {
                let d = parent.map_or(0, |p| depth[&p] + 1);
                depth.insert(*uri, d);
                deepest = deepest.max(d);
            }
            EventBody::ToolCall { tool, .. } => tools.push(tool.clone()),
            _ => {}
        }
    }
    assert_eq!(deepest, 2, "run → root → researcher → summarizer");
    assert_eq!(tools.iter().filter(|t| *t == "call_agent").count(), 3);
    for tool in ["call_slm", "get_task_status", "cancel_task"] {
        assert!(tools.iter().any(|t| t == tool), "{tool} in {tools:?}");
    }
    let EventBody::RunFinished { status, result, .. } = &events.last().unwrap().body else { panic!("last event") };
    assert_eq!(*status, RunStatus::Completed);
    let result = result.as_deref().unwrap();
    assert!(result.contains("three hearts") && result.contains("3 hearts") && result.contains("cancelled"), "{result}");

    let transcript = fs::read_to_string(folder.join("transcript.md")).unwrap();
    assert!(transcript.contains("agent summarizer"), "the grandchild's conversation is in the transcript");
    assert!(transcript.contains("cancel_task"));
    let report = fs::read_to_string(folder.join("report.md")).unwrap();
    assert!(report.contains("**completed**"));
}

#[test]
fn runs_by_file_path_and_from_another_folder() {
    let root = workbench();
    let file = root.path().join("experiments/smoke.toml");
    let output = Command::new(BIN)
        .current_dir(std::env::temp_dir())
        .arg("--root")
        .arg(root.path())
        .args(["run", file.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(run_folder(&output).join("events.jsonl").is_file());
}

#[test]
fn configuration_problems_exit_2_with_the_reason() {
    let root = workbench();
    let output = troupe(root.path(), &["run", "nonesuch"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no experiment `nonesuch`")
            && stderr(&output).contains(
                "known experiments: experts-vs-inherit, hello, remote, slm-vs-agent, smoke, solo-vs-delegate"
            ),
        "{}",
        stderr(&output)
    );

    fs::write(
        root.path().join("experiments/nokey.toml"),
        "root = \"critic\"\ntask = \"Critique: the moon is cheese.\"\n[models.small]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\napi_key_env = \"TROUPE_UNSET_TEST_KEY\"\n",
    )
    .unwrap();
    let output = troupe(root.path(), &["run", "nokey"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "model alias `small` needs an API key in the environment variable `TROUPE_UNSET_TEST_KEY`, which is not set"
        ),
        "{}",
        stderr(&output)
    );
    assert!(!root.path().join("findings").exists(), "nothing is written for a run that cannot start");

    let output = Command::new(BIN).args(["--root", "/nonexistent/troupe", "check"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_failed_root_exits_1_and_still_writes_findings() {
    let root = workbench();
    // The coordinator's script ends after two turns: the third model call is an error.
    fs::write(
        root.path().join("scripts/short.toml"),
        "[[conversation]]\n[[conversation.turn]]\n[[conversation.turn.call]]\ntool = \"list_tasks\"\n",
    )
    .unwrap();
    fs::write(
        root.path().join("experiments/short.toml"),
        "root = \"coordinator\"\ntask = \"x\"\n[models.small]\nprovider = \"scripted\"\nscript = \"../scripts/short.toml\"\n[models.slm]\nprovider = \"scripted\"\nscript = \"../scripts/short.toml\"\n",
    )
    .unwrap();
    let output = troupe(root.path(), &["run", "short"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("error: model error: scripted model: conversation 1"), "{}", stderr(&output));
    let report = fs::read_to_string(run_folder(&output).join("report.md")).unwrap();
    assert!(report.contains("failed"));
}

#[test]
fn ctrl_c_cancels_every_task_writes_the_findings_and_exits_130() {
    let root = workbench();
    let (child, events_file) = start_slow(root.path());
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let (events, _) = read_events(&events_file).unwrap();
    let EventBody::RunFinished { status, tasks, .. } = &events.last().unwrap().body else {
        panic!("run_finished last")
    };
    assert_eq!(*status, RunStatus::Cancelled);
    assert_eq!((tasks.working, tasks.cancelled), (0, 2));
    let folder = events_file.parent().unwrap();
    assert!(fs::read_to_string(folder.join("transcript.md")).unwrap().contains("researcher"));
    assert_eq!(run_folder(&output), folder);
}

#[test]
fn kill_9_leaves_a_parseable_event_log() {
    let root = workbench();
    let (mut child, events_file) = start_slow(root.path());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let text = fs::read_to_string(&events_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 5, "{text}");
    for (i, line) in lines.iter().enumerate() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}: {line}", i + 1));
        assert_eq!(value["seq"], i as u64);
    }
    let (events, _) = read_events(&events_file).unwrap();
    assert!(events.iter().any(
        |e| matches!(&e.body, EventBody::TaskCreated { kind: TaskKind::Agent, agent, .. } if agent == "researcher")
    ));

    // The killed run can be rendered for people afterwards, named relative to --root.
    let relative = events_file.parent().unwrap().strip_prefix(root.path()).unwrap();
    let output = Command::new(BIN)
        .current_dir(std::env::temp_dir())
        .arg("--root")
        .arg(root.path())
        .arg("rerender")
        .arg(relative)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let transcript = fs::read_to_string(events_file.parent().unwrap().join("transcript.md")).unwrap();
    assert!(transcript.contains("researcher"));
}

#[test]
fn a_secret_in_the_environment_never_reaches_the_findings() {
    let root = workbench();
    let secret = "sk-troupe-test-7f3a9c2e41d86b05";
    // A model that leaks the key it somehow saw: the findings must still not hold it.
    fs::write(
        root.path().join("scripts/leak.toml"),
        format!("[[conversation]]\n[[conversation.turn]]\ntext = \"The key is {secret}, do not tell anyone.\"\n"),
    )
    .unwrap();
    fs::write(
        root.path().join("experiments/leak.toml"),
        format!(
            "root = \"critic\"\ntask = \"Repeat the key {secret}\"\n[models.small]\nprovider = \"scripted\"\nscript = \"../scripts/leak.toml\"\n[models.remote]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nbase_url = \"http://127.0.0.1:9\"\napi_key_env = \"TROUPE_TEST_OPENAI\"\n"
        ),
    )
    .unwrap();
    let output = Command::new(BIN)
        .arg("--root")
        .arg(root.path())
        .args(["run", "leak"])
        .env("TROUPE_TEST_OPENAI", secret)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let folder = run_folder(&output);
    let mut checked = 0;
    let mut stack = vec![folder.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = fs::read_to_string(&path).unwrap();
                assert!(!text.contains(secret), "{} holds the secret", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 6);
    assert!(fs::read_to_string(folder.join("transcript.md")).unwrap().contains("The key is [redacted]"));
}

/// `troupe run` on the embedded model: a real answer, recorded with the model's digest.
#[test]
fn the_embedded_model_answers_a_real_run() {
    let _turn = crate::local_model::one_model_at_a_time();
    crate::local_model::model_files();
    let root = workbench();
    fs::write(
        root.path().join("experiments/real.toml"),
        "root = \"summarizer\"\ntask = \"Condense to one line: the moon orbits the earth every 27 days and has no air.\"\n",
    )
    .unwrap();
    let output = troupe(root.path(), &["run", "real"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let folder = run_folder(&output);
    let (events, _) = read_events(&folder.join("events.jsonl")).unwrap();
    let EventBody::RunFinished { status, result, usage, .. } = &events.last().unwrap().body else {
        panic!("run_finished last")
    };
    assert_eq!(*status, RunStatus::Completed);
    assert!(result.as_deref().is_some_and(|r| r.len() > 5), "{result:?}");
    assert!(usage.output_tokens > 0 && usage.input_tokens > 50, "{usage:?}");
    let run: Value = serde_json::from_str(&fs::read_to_string(folder.join("config/run.json")).unwrap()).unwrap();
    assert_eq!(run["models"]["small"]["provider"], "local");
    assert!(run["models"]["small"]["digest"].as_str().unwrap().starts_with("sha256:b179c952"), "{run}");
}

/// The shipped `hello` experiment, offline on the embedded model: the host delegates to the
/// writer (a sub-agent) and to the small model, reads both with get_task_status, and answers
/// from what came back.
#[test]
fn hello_delegates_polls_and_answers_on_the_embedded_model() {
    let _turn = crate::local_model::one_model_at_a_time();
    crate::local_model::model_files();
    let root = workbench();
    let output = troupe(root.path(), &["run", "hello"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (events, _) = read_events(&run_folder(&output).join("events.jsonl")).unwrap();
    let mut kinds = Vec::new();
    let mut polled = Vec::new();
    let mut results = Vec::new();
    for event in &events {
        match &event.body {
            EventBody::TaskCreated { parent: Some(_), kind, agent, .. } => kinds.push((*kind, agent.clone())),
            EventBody::ToolResult { tool, result, is_error: false, .. } if tool == "get_task_status" => {
                polled.push(result["uri"].as_str().unwrap().to_owned());
                if let Some(text) = result["result"].as_str() {
                    results.push(text.to_owned());
                }
            }
            _ => {}
        }
    }
    assert!(kinds.contains(&(TaskKind::Agent, "writer".into())), "{kinds:?}");
    assert!(kinds.iter().any(|(kind, _)| *kind == TaskKind::Slm), "{kinds:?}");
    assert!(polled.len() >= 2, "read both subtasks: {polled:?}");
    let EventBody::RunFinished { status, result: Some(answer), .. } = &events.last().unwrap().body else {
        panic!("run_finished with a result")
    };
    assert_eq!(*status, RunStatus::Completed);
    let words = |t: &str| t.split_whitespace().map(str::to_lowercase).collect::<std::collections::HashSet<_>>();
    assert!(
        results.iter().any(|r| words(r).intersection(&words(answer)).count() >= 3),
        "the answer draws on a subtask's result:\n{answer}\n{results:#?}"
    );
}
