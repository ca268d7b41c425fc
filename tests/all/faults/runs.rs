//! Fault cases: runs that are stopped, starved or abused, and secrets that must reach no channel.
//! Each drives the real binary and asserts what a user finds afterwards: an exit code that says
//! what happened, a log whose every line is whole, and no secret in any file or on the terminal.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use troupe::findings::read_events;
use troupe::protocol::{EventBody, RunStatus};

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

/// A secret the tests put in troupe's environment: its name looks secret, so it is redacted.
const SECRET_NAME: &str = "FAULTS_API_TOKEN";
const SECRET: &str = "sk-faults-0123456789abcdef";

fn workbench(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        ("troupe.toml", "[models.m]\nprovider = \"scripted\"\nscript = \"scripts/s.toml\"\n"),
        (
            "agents/boss.toml",
            "model = \"m\"\ntools = [\"call_agent\", \"get_task_status\", \"remember\"]\nsystem_prompt = \"Delegate.\"\n",
        ),
    ];
    for (path, text) in base.iter().chain(files) {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn troupe(root: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.arg("--root").arg(root).env(SECRET_NAME, SECRET).stdin(Stdio::null());
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The single run folder under `findings/`.
fn only_run(root: &Path) -> PathBuf {
    let mut runs: Vec<PathBuf> = fs::read_dir(root.join("findings")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.remove(0)
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A root that starts a worker which thinks for ten minutes: the run ends only if stopped.
const SLOW: &str = r#"
[[conversation]]
task_contains = "Wait"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { task = "think for a long time" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 600 }
[[conversation.turn]]
text = "done"

[[conversation]]
task_contains = "think"
[[conversation.turn]]
delay_ms = 600000
text = "late"
"#;

/// Starts the slow run and waits until its worker is working.
fn start_slow(root: &Path) -> (Child, PathBuf) {
    let child = troupe(root).args(["run", "slow"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the run folder", || root.join("findings").read_dir().is_ok_and(|mut d| d.next().is_some()));
    let dir = only_run(root);
    wait_for("the worker to start", || {
        read_events(&dir.join("events.jsonl")).is_ok_and(|(events, _)| {
            events.iter().filter(|e| matches!(e.body, EventBody::TaskCreated { .. })).count() >= 2
        })
    });
    (child, dir)
}

fn slow_workbench() -> tempfile::TempDir {
    workbench(&[
        ("scripts/s.toml", SLOW),
        ("experiments/slow.toml", "root = \"boss\"\ntask = \"Wait.\"\nmemory = \"off\"\n"),
    ])
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn last_event(dir: &Path) -> EventBody {
    let (events, warning) = read_events(&dir.join("events.jsonl")).unwrap();
    assert_eq!(warning, None, "every line is whole");
    events.last().unwrap().body.clone()
}

#[test]
fn sigterm_mid_run_cancels_every_task_and_finishes_the_findings() {
    let wb = slow_workbench();
    let (child, dir) = start_slow(wb.path());
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let last = last_event(&dir);
    assert!(
        matches!(last, EventBody::RunFinished { status: RunStatus::Cancelled, .. }),
        "{last:?}\n{}",
        stderr(&output)
    );
    assert!(dir.join("transcript.md").is_file() && dir.join("report.md").is_file());
}

#[test]
fn ctrl_c_twice_quits_at_once_and_leaves_a_readable_log() {
    let wb = slow_workbench();
    let (child, dir) = start_slow(wb.path());
    signal(&child, "INT");
    signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let (events, _) = read_events(&dir.join("events.jsonl")).unwrap();
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64), "no event lost before the stop");
}

#[test]
fn kill_9_mid_run_leaves_only_whole_lines() {
    let wb = slow_workbench();
    let (mut child, dir) = start_slow(wb.path());
    signal(&child, "KILL");
    let _ = child.wait();
    let (events, _) = read_events(&dir.join("events.jsonl")).unwrap();
    assert!(events.len() >= 3);
    let rerender = troupe(wb.path()).args(["rerender", dir.to_str().unwrap()]).output().unwrap();
    assert!(rerender.status.success(), "{}", stderr(&rerender));
}

#[test]
fn a_full_disk_fails_the_run_and_keeps_every_whole_line() {
    // A long answer streamed in many deltas: the log outgrows the file-size limit mid-run.
    let answer = "lorem ipsum dolor sit amet ".repeat(2400);
    let script = format!("[[conversation]]\n[[conversation.turn]]\ntext = \"{answer}\"\n");
    let wb = workbench(&[
        ("scripts/s.toml", &script),
        ("experiments/big.toml", "root = \"boss\"\ntask = \"Talk.\"\nmemory = \"off\"\n"),
    ]);
    // `ulimit -f` counts 512-byte blocks in sh: 128 KiB per file, more than the script's 65 KB
    // (copied into the run's config/) and less than the log of its streamed answer.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f 256; exec '{BIN}' --root '{}' run big", wb.path().display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "a run whose log cannot be written fails: {}", stderr(&output));
    assert!(stderr(&output).contains("could not append to"), "{}", stderr(&output));
    let dir = only_run(wb.path());
    let bytes = fs::read(dir.join("events.jsonl")).unwrap();
    assert!(bytes.len() <= 128 * 1024 && bytes.ends_with(b"\n"), "cut back to its last whole line");
    let (events, warning) = read_events(&dir.join("events.jsonl")).unwrap();
    assert_eq!(warning, None);
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64), "a prefix of the run, without holes");
}

#[test]
fn a_fork_bomb_of_call_agent_stops_at_the_run_limits() {
    // Every agent, whatever its task, starts another copy of itself on every turn.
    let script = r#"
[[conversation]]
repeat = true
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { task = "copy yourself" }
[[conversation.turn.call]]
tool = "call_agent"
arguments = { task = "copy yourself again" }
"#;
    let wb = workbench(&[
        ("scripts/s.toml", script),
        (
            "experiments/bomb.toml",
            "root = \"boss\"\ntask = \"Go.\"\nmemory = \"off\"\n\n[limits]\nmax_subtasks_per_run = 40\nmax_turns_per_agent = 4\n",
        ),
    ]);
    let start = Instant::now();
    let output = troupe(wb.path()).args(["run", "bomb"]).output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(60), "the limits end it");
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    let dir = only_run(wb.path());
    let (events, _) = read_events(&dir.join("events.jsonl")).unwrap();
    let created = events.iter().filter(|e| matches!(e.body, EventBody::TaskCreated { .. })).count();
    assert!(created <= 41, "at most the limit's subtasks and the root: {created}");
    assert!(events.iter().any(|e| matches!(e.body, EventBody::LimitHit { .. })), "the limit says so");
    assert!(matches!(events.last().unwrap().body, EventBody::RunFinished { .. }));
}

#[test]
fn an_unreadable_memory_file_is_named_and_the_run_goes_on_without_memory() {
    let script = "[[conversation]]\nrepeat = true\n[[conversation.turn]]\ntext = \"fine\"\n";
    let wb = workbench(&[("scripts/s.toml", script), ("experiments/e.toml", "root = \"boss\"\ntask = \"Go.\"\n")]);
    fs::create_dir_all(wb.path().join(".troupe")).unwrap();
    fs::write(wb.path().join(".troupe/memory.sqlite"), b"this is not a database, it was damaged").unwrap();
    let output = troupe(wb.path()).args(["run", "e"]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("without memory") && err.contains("memory.sqlite"), "{err}");
    let list = troupe(wb.path()).args(["memory", "list"]).output().unwrap();
    assert!(!list.status.success());
    assert!(stderr(&list).contains("memory.sqlite"), "{}", stderr(&list));
    assert_eq!(
        fs::read(wb.path().join(".troupe/memory.sqlite")).unwrap(),
        b"this is not a database, it was damaged",
        "a damaged store is left alone"
    );
}

#[test]
fn a_secret_the_run_sees_reaches_no_file_no_memory_and_no_terminal() {
    // The task and the model's answer carry the secret and terminal escapes; the run keeps an
    // episode of its task in memory.
    let script = format!(
        "[[conversation]]\nrepeat = true\n[[conversation.turn]]\ntext = \"the key is {SECRET} \\u001b]0;owned\\u0007\\u001b[2J done\"\n"
    );
    let experiment = format!("root = \"boss\"\ntask = \"Use {SECRET} to log in.\"\n");
    let wb = workbench(&[("scripts/s.toml", &script), ("experiments/e.toml", &experiment)]);
    let output = troupe(wb.path()).args(["run", "e"]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(SECRET), "{text}");
        assert!(
            !stream.contains(&0x1b) && !stream.contains(&0x07),
            "no control character reaches the terminal: {text:?}"
        );
    }
    for file in walk(wb.path()) {
        if file.extension().is_some_and(|e| e == "toml") && !file.starts_with(wb.path().join("findings")) {
            continue; // the user's own files, which hold the secret as the test wrote them
        }
        let bytes = fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(SECRET), "{} holds the secret", file.display());
    }
    let memory = wb.path().join(".troupe/memory.sqlite");
    assert!(memory.is_file(), "the run kept its episode");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(fs::metadata(&memory).unwrap().permissions().mode() & 0o077, 0, "only its owner reads the memory");
    assert!(fs::read_to_string(wb.path().join(".troupe/.gitignore")).unwrap().contains('*'), "kept out of git");
    let listed = troupe(wb.path()).args(["memory", "list", "--kind", "episode"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("[redacted]") && !listed.contains(SECRET), "{listed}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn sigterm_to_the_workbench_restores_the_terminal() {
    let wb = slow_workbench();
    let command = format!(
        "'{BIN}' --root '{}' watch slow; echo troupe-exited-$?; stty -a | tr ' ' '\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; echo; sleep 60",
        wb.path().display()
    );
    let mut tmux = crate::tui_e2e::Tmux::start(&command);
    tmux.wait_for("the run to be shown", |screen| screen.contains("boss") && screen.contains("working"));
    let pane = tmux.run(&["display-message", "-p", "#{pane_pid}"]);
    let shell = String::from_utf8_lossy(&pane.stdout).trim().to_owned();
    let troupe = Command::new("pgrep").args(["-P", &shell]).output().unwrap();
    let pid = String::from_utf8_lossy(&troupe.stdout).lines().next().unwrap_or_default().to_owned();
    assert!(!pid.is_empty(), "troupe runs under the pane's shell");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let screen = tmux.wait_for("the shell to be back", |screen| screen.contains("troupe-exited-"));
    assert!(screen.contains("icanon echo"), "cooked mode, echo on:\n{screen}");
    assert!(!screen.contains("boss"), "the alternate screen is left:\n{screen}");
    let dir = only_run(wb.path());
    assert!(matches!(last_event(&dir), EventBody::RunFinished { .. }), "the run was finished and recorded");
}
