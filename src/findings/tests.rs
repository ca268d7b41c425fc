//! Tests of the run folder as a whole: the writer, the renderings, redaction end to end, and
//! reading back a log a killed run left.

use std::fs;
use std::path::PathBuf;

use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::protocol::{EventBody, OnFinish, Role, RunStatus, TaskCounts, TaskId, TaskKind, TaskStatus, Usage};

const T0: u64 = 1_795_598_703_120; // 2026-11-25T09:25:03.120Z

fn root() -> TaskId {
    TaskId::from_code(0x0012_3456)
}
fn child() -> TaskId {
    TaskId::from_code(0x0765_4321)
}
fn grandchild() -> TaskId {
    TaskId::from_code(0x0000_0abc)
}

fn usage(input: u64, output: u64, calls: u64) -> Usage {
    Usage { input_tokens: input, output_tokens: output, model_calls: calls }
}

/// A small complete run: a coordinator calls a researcher, which calls the small model.
fn run_events() -> Vec<Event> {
    let bodies = vec![
        EventBody::RunStarted {
            run_id: "20261125-092503-smoke-3f2a".into(),
            experiment: "smoke".into(),
            root_agent: "coordinator".into(),
            task: "Find the capital of France".into(),
            prices: Default::default(),
            format: crate::protocol::EVENTS_FORMAT,
            troupe_version: None,
        },
        EventBody::TaskCreated {
            uri: root(),
            parent: None,
            kind: TaskKind::Agent,
            agent: "coordinator".into(),
            model: "small".into(),
            task: "Find the capital of France".into(),
        },
        EventBody::TaskStatus {
            uri: root(),
            status: TaskStatus::Working,
            status_message: None,
            result: None,
            error: None,
        },
        EventBody::Message { uri: root(), role: Role::System, content: "You coordinate experts.".into() },
        EventBody::Message { uri: root(), role: Role::User, content: "Find the capital of France".into() },
        EventBody::MessageDelta { uri: root(), delta: "Let me ask".into() },
        EventBody::Message { uri: root(), role: Role::Assistant, content: "Let me ask the researcher.".into() },
        EventBody::ToolCall {
            uri: root(),
            call_id: "call-1".into(),
            tool: "call_agent".into(),
            arguments: json!({"agent": "researcher", "task": "capital of France?"}),
        },
        EventBody::TaskCreated {
            uri: child(),
            parent: Some(root()),
            kind: TaskKind::Agent,
            agent: "researcher".into(),
            model: "small".into(),
            task: "capital of France?".into(),
        },
        EventBody::ToolResult {
            uri: root(),
            call_id: "call-1".into(),
            tool: "call_agent".into(),
            result: json!(child().to_string()),
            is_error: false,
        },
        EventBody::Usage {
            uri: root(),
            input_tokens: 100,
            output_tokens: 20,
            task_total: usage(100, 20, 1),
            run_total: usage(100, 20, 1),
        },
        EventBody::ToolCall {
            uri: child(),
            call_id: "call-2".into(),
            tool: "call_slm".into(),
            arguments: json!({"prompt": "capital of France"}),
        },
        EventBody::TaskCreated {
            uri: grandchild(),
            parent: Some(child()),
            kind: TaskKind::Slm,
            agent: "slm".into(),
            model: "tiny".into(),
            task: "capital of France".into(),
        },
        EventBody::TaskStatus {
            uri: grandchild(),
            status: TaskStatus::Completed,
            status_message: None,
            result: Some("Paris".into()),
            error: None,
        },
        EventBody::LimitHit {
            uri: child(),
            limit: "max_turns".into(),
            value: 8,
            message: "stopped after 8 turns".into(),
        },
        EventBody::Usage {
            uri: child(),
            input_tokens: 50,
            output_tokens: 5,
            task_total: usage(50, 5, 1),
            run_total: usage(150, 25, 2),
        },
        EventBody::TaskStatus {
            uri: child(),
            status: TaskStatus::Completed,
            status_message: None,
            result: Some("Paris is the capital.".into()),
            error: None,
        },
        EventBody::ChildrenOnFinish { uri: root(), policy: OnFinish::CancelChildren, children: vec![] },
        EventBody::TaskStatus {
            uri: root(),
            status: TaskStatus::Completed,
            status_message: None,
            result: Some("The capital of France is Paris.".into()),
            error: None,
        },
        EventBody::RunFinished {
            status: RunStatus::Completed,
            result: Some("The capital of France is Paris.".into()),
            error: None,
            usage: usage(150, 25, 2),
            tasks: TaskCounts { working: 0, completed: 3, failed: 0, cancelled: 0 },
            elapsed_ms: 4_500,
        },
    ];
    bodies.into_iter().enumerate().map(|(i, body)| Event { seq: i as u64, ts: T0 + 200 * i as u64, body }).collect()
}

fn position(haystack: &str, needle: &str) -> usize {
    haystack.find(needle).unwrap_or_else(|| panic!("missing {needle:?} in:\n{haystack}"))
}

async fn write_run(dir: &std::path::Path, events: &[Event], redactor: Redactor) -> RunFolder {
    let writer = FindingsWriter::create(dir, redactor).unwrap();
    for event in events {
        writer.record(event);
    }
    writer.finish().await.unwrap()
}

#[tokio::test]
async fn the_writer_logs_every_event_as_a_line_and_finish_renders_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("findings").join("20261125-092503-smoke-3f2a");
    let events = run_events();
    let folder = write_run(&dir, &events, Redactor::default()).await;
    assert_eq!(folder, RunFolder { dir: dir.clone() });

    let log = fs::read_to_string(folder.events()).unwrap();
    assert!(log.ends_with('\n'));
    let lines: Vec<Event> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, events);
    assert_eq!(read_events(&folder.events()).unwrap(), (events.clone(), None));

    let transcript = fs::read_to_string(folder.transcript()).unwrap();
    assert_eq!(transcript, render_transcript(&events));
    let title = position(&transcript, "# Transcript of run 20261125-092503-smoke-3f2a");
    let root_heading =
        position(&transcript, &format!("\n## {} · agent coordinator · model small · completed\n", root()));
    let child_heading =
        position(&transcript, &format!("\n### {} · agent researcher · model small · completed\n", child()));
    let grandchild_heading =
        position(&transcript, &format!("\n#### {} · slm · model tiny · completed\n", grandchild()));
    assert!(title < root_heading && root_heading < child_heading && child_heading < grandchild_heading);
    let system = position(&transcript, "<details><summary>System prompt</summary>");
    let prompt = position(&transcript, "You coordinate experts.");
    let call =
        position(&transcript, r#"- Tool call `call_agent` `{"agent":"researcher","task":"capital of France?"}`"#);
    assert!(root_heading < system && system < prompt && prompt < call && call < child_heading);
    let result = position(
        &transcript,
        &format!("- Tool result from `call_agent` _(call call-1)_:\n\n```text\n{}\n```", child()),
    );
    assert!(call < result && result < child_heading);
    let limit = position(&transcript, "**Limit hit:** `max_turns` = 8: stopped after 8 turns");
    assert!(child_heading < limit && limit < grandchild_heading);
    assert!(transcript.contains("> Let me ask the researcher.\n"));
    assert!(transcript.contains("(cancel_children)"));
    assert!(transcript.contains("> The capital of France is Paris.\n"));
    assert!(!transcript.contains("Let me ask\n"), "deltas are not rendered");

    let report = fs::read_to_string(folder.report()).unwrap();
    assert_eq!(report, render_report(&events));
    for piece in [
        "# Report of run 20261125-092503-smoke-3f2a",
        "## Outcome\n\n**completed**\n",
        "> The capital of France is Paris.",
        "| input tokens | 150 |",
        "| output tokens | 25 |",
        "| model calls | 2 |",
        "- Elapsed: 4.5 s",
        "| completed | 3 |",
        &format!("- {} (researcher): `max_turns` = 8: stopped after 8 turns", child()),
        &format!("| {} | agent | coordinator | small | completed | 100 / 20 | 3.4 s |", root()),
        &format!("| \u{2003}↳ {} | agent | researcher | small | completed | 50 / 5 | 1.6 s |", child()),
        &format!("| \u{2003}\u{2003}↳ {} | slm | slm | tiny | completed | 0 / 0 | 200 ms |", grandchild()),
    ] {
        position(&report, piece);
    }
}

#[tokio::test]
async fn a_run_longer_than_the_writer_keeps_in_memory_renders_the_same_from_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let events = run_events();
    assert!(events.len() > 3);
    let writer = FindingsWriter::create_keeping(tmp.path(), Redactor::default(), 3).unwrap();
    for event in &events {
        writer.record(event);
    }
    let folder = writer.finish().await.unwrap();
    assert_eq!(fs::read_to_string(folder.transcript()).unwrap(), render_transcript(&events));
    assert_eq!(fs::read_to_string(folder.report()).unwrap(), render_report(&events));
}

#[tokio::test]
async fn flush_waits_until_recorded_events_are_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let events = run_events();
    let writer = FindingsWriter::create(tmp.path(), Redactor::default()).unwrap();
    for event in &events[..4] {
        writer.record(event);
    }
    writer.flush().await.unwrap();
    let (read, warning) = read_events(&tmp.path().join(EVENTS_FILE)).unwrap();
    assert_eq!((read.as_slice(), warning), (&events[..4], None));
    writer.finish().await.unwrap();
}

#[tokio::test]
async fn a_secret_never_reaches_the_run_folder() {
    let secret = "sk-live-0123456789abcdef";
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    fs::create_dir_all(project.join("agents")).unwrap();
    fs::write(project.join("troupe.toml"), format!("[models.small]\napi_key = \"{secret}\"\n")).unwrap();
    fs::write(project.join("agents/researcher.toml"), "name = \"researcher\"\n").unwrap();
    let outside = tmp.path().join("elsewhere").join("shared.toml");
    fs::create_dir_all(outside.parent().unwrap()).unwrap();
    fs::write(&outside, format!("token = '{secret}'\n")).unwrap();

    let mut events = run_events();
    let at = 6;
    events[at].body = EventBody::Message {
        uri: root(),
        role: Role::Assistant,
        content: format!("The key is {secret}, as you asked."),
    };
    events[7].body = EventBody::ToolCall {
        uri: root(),
        call_id: "call-1".into(),
        tool: "call_agent".into(),
        arguments: json!({"agent": "researcher", "task": format!("use \"{secret}\"")}),
    };
    // The root's answer, and so the run's result, repeats it.
    let last = events.len() - 1;
    if let EventBody::RunFinished { result, .. } = &mut events[last].body {
        *result = Some(format!("Done; the key was {secret}"));
    }
    // The model streams it in two pieces before the whole message.
    events[5].body = EventBody::MessageDelta { uri: root(), delta: "The key is sk-live-0123".into() };
    events.insert(
        6,
        Event {
            seq: 5,
            ts: events[5].ts,
            body: EventBody::MessageDelta { uri: root(), delta: "456789abcdef, as".into() },
        },
    );
    let events: Vec<Event> = events.into_iter().enumerate().map(|(i, e)| Event { seq: i as u64, ..e }).collect();

    let run = tmp.path().join("findings").join("run");
    let redactor = Redactor::new(vec![secret.to_owned()]);
    let folder = write_run(&run, &events, redactor.clone()).await;
    let files = [project.join("troupe.toml"), project.join("agents/researcher.toml"), outside.clone()];
    snapshot_config(&run, &project, &files, &redactor).unwrap();

    let snapshot_toml = folder.config().join("troupe.toml");
    let snapshot_agent = folder.config().join("agents").join("researcher.toml");
    let snapshot_outside = folder.config().join("external").join("shared.toml");
    for path in [folder.events(), folder.transcript(), folder.report(), snapshot_toml.clone(), snapshot_outside.clone()]
    {
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(secret), "{} holds the secret:\n{text}", path.display());
        assert!(!text.contains("0123456789"), "{} holds part of the secret:\n{text}", path.display());
        assert!(text.contains(REDACTED), "{} shows no redaction:\n{text}", path.display());
    }
    assert_eq!(fs::read_to_string(&snapshot_toml).unwrap(), "[models.small]\napi_key = \"[redacted]\"\n");
    assert_eq!(fs::read_to_string(&snapshot_agent).unwrap(), "name = \"researcher\"\n");
    // The log stays parseable, with the secret replaced inside its strings.
    let (logged, warning) = read_events(&folder.events()).unwrap();
    assert_eq!(warning, None);
    assert_eq!(logged.len(), events.len());
    assert_eq!(
        logged[7].body,
        EventBody::Message {
            uri: root(),
            role: Role::Assistant,
            content: "The key is [redacted], as you asked.".into()
        }
    );
    let transcript = fs::read_to_string(folder.transcript()).unwrap();
    assert!(transcript.contains(r#"{"agent":"researcher","task":"use \"[redacted]\""}"#), "{transcript}");
}

#[test]
fn a_cut_short_last_line_is_skipped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(EVENTS_FILE);
    let events = run_events();
    let mut text: String = events[..3].iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    let next = serde_json::to_string(&events[3]).unwrap();
    text.push_str(&next[..next.len() / 2]);
    fs::write(&path, &text).unwrap();
    let (read, warning) = read_events(&path).unwrap();
    assert_eq!(read, events[..3]);
    let warning = warning.unwrap();
    assert!(warning.contains("(4) is cut short"), "{warning}");

    // A cut inside a multi-byte character spoils only that line.
    let mut bytes = text.as_bytes()[..text.len() - next.len() / 2].to_vec();
    bytes.extend_from_slice(&"{\"seq\":3,\"content\":\"é".as_bytes()[..22]);
    fs::write(&path, &bytes).unwrap();
    let (read, warning) = read_events(&path).unwrap();
    assert_eq!((read.len(), warning.is_some()), (3, true));
}

#[test]
fn a_bad_line_in_the_middle_is_an_error_with_its_number() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(EVENTS_FILE);
    let events = run_events();
    let lines = [
        serde_json::to_string(&events[0]).unwrap(),
        "{\"seq\": 1, \"ts\": \"not a time\"}".to_owned(),
        serde_json::to_string(&events[2]).unwrap(),
    ];
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    match read_events(&path) {
        Err(FindingsError::BadLine { line, path: reported, .. }) => {
            assert_eq!((line, reported), (2, path.clone()));
        }
        other => panic!("expected a bad line, got {other:?}"),
    }
    // A whole last line (it ends in a newline) that is not an event is corruption too.
    fs::write(&path, format!("{}\ngarbage\n", lines[0])).unwrap();
    assert!(matches!(read_events(&path), Err(FindingsError::BadLine { line: 2, .. })));
}

#[test]
fn a_prefix_of_a_run_renders_as_unfinished() {
    let events = run_events();
    // Killed after the grandchild finished, while the child and the root still work.
    let prefix = &events[..14];
    let transcript = render_transcript(prefix);
    let root_heading = position(
        &transcript,
        &format!("\n## {} · agent coordinator · model small · still working when the log ends\n", root()),
    );
    let child_heading = position(
        &transcript,
        &format!("\n### {} · agent researcher · model small · still working when the log ends\n", child()),
    );
    position(&transcript, &format!("\n#### {} · slm · model tiny · completed\n", grandchild()));
    assert!(root_heading < child_heading);
    assert!(transcript.contains("- Outcome: unfinished (the log ends before `run_finished`)"));
    assert_eq!(transcript.matches("_Still working when the log ends._").count(), 2);

    let report = render_report(prefix);
    for piece in [
        "**unfinished** (the log ends before run_finished)",
        "## Usage (so far)",
        "| input tokens | 100 |",
        "| working | 2 |",
        "| completed | 1 |",
        "- Elapsed: at least 2.6 s (first to last event)",
        &format!("| {} | agent | coordinator | small | working (unfinished) | 100 / 20 | ≥ 2.4 s |", root()),
    ] {
        position(&report, piece);
    }
    // Every prefix renders without panicking.
    for n in 0..=events.len() {
        render_transcript(&events[..n]);
        render_report(&events[..n]);
    }
}

#[test]
fn long_tool_results_are_cut_with_a_note() {
    let mut events = run_events();
    events[9].body = EventBody::ToolResult {
        uri: root(),
        call_id: "call-1".into(),
        tool: "fetch".into(),
        result: json!("x".repeat(5000)),
        is_error: true,
    };
    let transcript = render_transcript(&events);
    position(&transcript, "- Tool error from `fetch`");
    position(
        &transcript,
        &format!("```text\n{}\n```\n\n_(cut: 3000 more characters are in events.jsonl)_", "x".repeat(2000)),
    );
    assert!(!transcript.contains(&"x".repeat(2001)));
}

#[tokio::test]
async fn an_existing_run_folder_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let events = run_events();
    let folder = write_run(tmp.path(), &events[..2], Redactor::default()).await;
    let before = fs::read_to_string(folder.events()).unwrap();
    match FindingsWriter::create(tmp.path(), Redactor::default()) {
        Err(FindingsError::AlreadyExists { path }) => assert_eq!(path, folder.events()),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(folder.events()).unwrap(), before);
}

#[test]
fn notes_are_created_once_and_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let notes = tmp.path().join(NOTES_FILE);
    write_notes_stub(tmp.path()).unwrap();
    let stub = fs::read_to_string(&notes).unwrap();
    assert!(stub.starts_with("<!--") && stub.lines().count() == 1 + 1, "{stub:?}");
    fs::write(&notes, "My observation: the researcher looped.\n").unwrap();
    write_notes_stub(tmp.path()).unwrap();
    assert_eq!(fs::read_to_string(&notes).unwrap(), "My observation: the researcher looped.\n");
}

#[test]
fn a_killed_run_is_rendered_again_from_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let events = run_events();
    let mut text: String = events[..10].iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    text.push_str("{\"seq\":10,\"ts\":\"2026-");
    fs::write(tmp.path().join(EVENTS_FILE), text).unwrap();
    let folder = rerender(tmp.path()).unwrap();
    let transcript = fs::read_to_string(folder.transcript()).unwrap();
    assert!(transcript.starts_with(&render_transcript(&events[..10])), "{transcript}");
    position(&transcript, "_Note: ");
    position(&transcript, "is cut short");
    let report = fs::read_to_string(folder.report()).unwrap();
    position(&report, "**unfinished** (the log ends before run_finished)");
    let leftovers: Vec<PathBuf> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert_eq!(leftovers, Vec::<PathBuf>::new());
}

#[test]
fn snapshots_keep_the_layout_and_stay_inside_config() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    fs::create_dir_all(project.join("agents")).unwrap();
    fs::write(project.join("agents").join("a.toml"), "a").unwrap();
    fs::create_dir_all(tmp.path().join("x")).unwrap();
    fs::create_dir_all(tmp.path().join("y")).unwrap();
    fs::write(tmp.path().join("x").join("same.toml"), "x").unwrap();
    fs::write(tmp.path().join("y").join("same.toml"), "y").unwrap();
    let run = tmp.path().join("run");
    let files = [
        project.join("agents").join("a.toml"),
        // Lexically under the root, really outside it.
        project.join("..").join("x").join("same.toml"),
        tmp.path().join("y").join("same.toml"),
    ];
    snapshot_config(&run, &project, &files, &Redactor::default()).unwrap();
    let read = |p: &str| fs::read_to_string(run.join(CONFIG_DIR).join(p)).unwrap();
    assert_eq!(read("agents/a.toml"), "a");
    assert_eq!(read("external/same.toml"), "x");
    assert_eq!(read("external/same-2.toml"), "y");
    assert!(!run.join("x").exists());
}

#[test]
fn a_run_being_written_is_read_a_whole_line_at_a_time_from_where_the_last_read_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(EVENTS_FILE);
    let lines: Vec<String> = run_events().iter().map(|e| serde_json::to_string(e).unwrap()).collect();
    let (first, second) = (&lines[0], &lines[1]);
    let (head, tail) = second.split_at(second.len() / 2);
    fs::write(&path, format!("{first}\n{head}")).unwrap();
    let (events, offset) = read_events_from(&path, 0).unwrap();
    assert_eq!(events.len(), 1, "the line still being written waits");
    assert_eq!(offset, first.len() as u64 + 1);
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, format!("{tail}\nnot json\n").as_bytes()).unwrap();
    let err = read_events_from(&path, offset).unwrap_err().to_string();
    assert!(err.contains("line 3"), "a bad line is named by its line in the file: {err}");
    fs::write(&path, format!("{first}\n{second}\n")).unwrap();
    let (events, end) = read_events_from(&path, offset).unwrap();
    assert_eq!((events.len(), end), (1, (first.len() + second.len() + 2) as u64));
    assert_eq!(read_events_from(&path, end).unwrap(), (Vec::new(), end), "nothing new: nothing read");
}
