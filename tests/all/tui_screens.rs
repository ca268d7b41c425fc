//! Every screen of the workbench, drawn into ratatui's `TestBackend` from recorded events and
//! snapshotted with insta. Inputs are fixed (a recorded smoke run, a fixed `now`, a fixed
//! root), so no filtering of ids or times is needed. A visible change ships with its
//! reviewed snapshot (`cargo insta review`, or INSTA_UPDATE=always and read the diff).

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::buffer::Buffer;
use troupe::config::{Diagnostic, Location};
use troupe::findings::{PastOutcome, PastRun, read_events};
use troupe::protocol::{Event, TaskCounts, Usage};
use troupe::tui::app::{AgentFileText, App, Command, ExperimentItem, Report, Screen};
use troupe::tui::render::to_buffer;

fn recorded() -> Vec<Event> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/smoke-events.jsonl");
    read_events(&path).unwrap().0
}

fn text(buffer: &Buffer) -> String {
    let width = buffer.area.width as usize;
    buffer
        .content
        .chunks(width)
        .map(|row| row.iter().map(|cell| cell.symbol()).collect::<String>().trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
}

/// An app with the shipped-like workbench listed and `events` of a live run applied.
fn app_with(events: &[Event]) -> App {
    let mut app = App::new(PathBuf::from("/bench"));
    app.handle_report(Report::Workbench {
        agents: vec![
            AgentFileText {
                path: "/bench/agents/coordinator.toml".into(),
                text: "name = \"coordinator\"\nmodel = \"small\"\ntools = [\"call_agent\"]\n".into(),
            },
            AgentFileText {
                path: "/bench/agents/writer.toml".into(),
                text: "name = \"writer\"\nmodel = \"small\"\nmax_turns = 2\n# plain text only\nsystem_prompt = \"\"\"\nYou write.\n\"\"\"\n".into(),
            },
        ],
        experiments: vec![
            ExperimentItem {
                name: "hello".into(),
                description: "A host delegates to a sub-agent and to the small model".into(),
                root: "host".into(),
                path: "/bench/experiments/hello.toml".into(),
            },
            ExperimentItem {
                name: "smoke".into(),
                description: "Scripted delegation, in well under a second".into(),
                root: "coordinator".into(),
                path: "/bench/experiments/smoke.toml".into(),
            },
        ],
        problems: vec![],
    });
    if !events.is_empty() {
        app.handle_report(Report::RunStarting { experiment: "smoke".into() });
        for event in events {
            app.handle_report(Report::RunEvent(event.clone()));
        }
        app.now = events.last().unwrap().ts;
    }
    app
}

#[test]
fn run_screen_mid_run_shows_working_tasks_and_the_stream() {
    let events = recorded();
    // Stop where the critic and the researcher are both still working.
    let cut = events
        .iter()
        .position(|e| e.body.type_name() == "task_status" && serde_json::to_value(e).unwrap()["status"] == "completed")
        .unwrap();
    let mut app = app_with(&events[..cut]);
    app.now += 1_234;
    insta::assert_snapshot!("run_mid_80x24", text(&to_buffer(&mut app, 80, 24)));
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!("run_mid_child_120x40", text(&to_buffer(&mut app, 120, 40)));
}

#[test]
fn run_screen_finished_with_cancel_refused_and_folding() {
    let mut app = app_with(&recorded());
    app.handle_report(Report::RunClosed);
    insta::assert_snapshot!("run_done_120x40", text(&to_buffer(&mut app, 120, 40)));
    key(&mut app, KeyCode::Left);
    key(&mut app, KeyCode::Char('c'));
    insta::assert_snapshot!("run_done_folded_200x60", text(&to_buffer(&mut app, 200, 60)));
}

#[test]
fn cancelling_a_working_subtree_asks_first_then_sends_the_op() {
    let events = recorded();
    let cut = events.len() / 3;
    let mut app = app_with(&events[..cut]);
    key(&mut app, KeyCode::Char('w'));
    assert!(key(&mut app, KeyCode::Char('c')).is_empty(), "nothing is cancelled before the answer");
    insta::assert_snapshot!("run_cancel_prompt_80x24", text(&to_buffer(&mut app, 80, 24)));
    let commands = key(&mut app, KeyCode::Char('y'));
    assert!(matches!(commands.as_slice(), [Command::CancelTask { .. }]), "{commands:?}");
}

#[test]
fn agents_screen_shows_highlighted_toml_and_live_diagnostics() {
    let mut app = app_with(&[]);
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    let typed = key(&mut app, KeyCode::Char('x'));
    let Some(Command::Validate { path, version, .. }) = typed.last().cloned() else { panic!("{typed:?}") };
    let mut diagnostic = Diagnostic::error(Location { path: path.clone(), line: 1, col: 1 }, "unknown key `xname`");
    diagnostic.hint = Some("did you mean `name`?".into());
    app.handle_report(Report::Validated { path: path.clone(), version, diagnostics: vec![diagnostic] });
    insta::assert_snapshot!("agents_invalid_80x24", text(&to_buffer(&mut app, 80, 24)));
    let buffer = to_buffer(&mut app, 80, 24);
    let marked = (0..80).any(|x| (0..24).any(|y| buffer[(x, y)].bg == ratatui::style::Color::Red));
    assert!(marked, "the line with the error is marked");
    // Saving invalid text asks first; `n` keeps the text and writes nothing.
    let save = app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert!(save.is_empty());
    assert!(key(&mut app, KeyCode::Char('n')).is_empty());
    assert!(app.agents[1].text().starts_with("xname"), "the user's text is kept");
    app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    let confirmed = key(&mut app, KeyCode::Char('y'));
    assert!(
        matches!(&confirmed[..], [Command::Save { path: p, text }] if *p == path && text.starts_with("xname")),
        "{confirmed:?}"
    );
    // A failed save keeps the buffer and says so.
    app.handle_report(Report::SaveFailed { path, error: "disk full".into() });
    assert!(app.agents[1].is_dirty());
    insta::assert_snapshot!("agents_save_failed_120x40", text(&to_buffer(&mut app, 120, 40)));
}

#[test]
fn new_and_duplicated_experts_get_free_names() {
    let mut app = app_with(&[]);
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('n'));
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('n'));
    key(&mut app, KeyCode::Esc);
    let names: Vec<String> = app.agents.iter().map(|a| a.name()).collect();
    assert_eq!(names, vec!["coordinator", "expert-1", "expert-2", "writer"]);
    app.agent_selected = 3;
    key(&mut app, KeyCode::Char('d'));
    let copy = app.agents.iter().find(|a| a.name() == "writer-copy").expect("a copy");
    assert!(copy.text().starts_with("name = \"writer-copy\"\n"), "{}", copy.text());
    assert!(copy.text().contains("max_turns = 2"));
}

#[test]
fn experiments_screen_lists_and_launches() {
    let mut app = app_with(&[]);
    assert_eq!(app.screen, Screen::Experiments);
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!("experiments_80x24", text(&to_buffer(&mut app, 80, 24)));
    assert_eq!(key(&mut app, KeyCode::Enter), vec![Command::StartRun { experiment: "smoke".into() }]);
}

#[test]
fn findings_screen_lists_runs_opens_one_and_edits_notes() {
    let mut app = app_with(&[]);
    let run = |id: &str, outcome, started| PastRun {
        id: id.into(),
        dir: PathBuf::from(format!("/bench/findings/{id}")),
        started: Some(started),
        experiment: "smoke".into(),
        root_agent: "coordinator".into(),
        task: "t".into(),
        outcome,
        usage: Usage { input_tokens: 2_670, output_tokens: 370, model_calls: 9 },
        elapsed_ms: Some(143),
        tasks: Some(TaskCounts { working: 0, completed: 4, failed: 0, cancelled: 1 }),
        problem: None,
    };
    let opened = key(&mut app, KeyCode::Char('4'));
    assert_eq!(opened, vec![Command::ListFindings]);
    let loads = app.handle_report(Report::Findings(vec![
        run("20261125-123815-smoke-b3c8", PastOutcome::Completed, 1_795_000_000_000),
        run("20261124-090000-smoke-0001", PastOutcome::Unfinished, 1_794_900_000_000),
    ]));
    let dir = PathBuf::from("/bench/findings/20261125-123815-smoke-b3c8");
    assert_eq!(loads, vec![Command::LoadNotes { dir: dir.clone() }]);
    app.handle_report(Report::Notes { dir: dir.clone(), text: "# Notes\n".into() });
    key(&mut app, KeyCode::Char('e'));
    app.now = 1_000;
    for c in " ok".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert!(app.tick(1_100).is_empty(), "not saved while the user types");
    let saved = app.tick(1_000 + 10_000);
    assert!(
        matches!(&saved[..], [Command::Save { path, text }] if *path == dir.join("notes.md") && text.contains("ok")),
        "{saved:?}"
    );
    insta::assert_snapshot!("findings_80x24", text(&to_buffer(&mut app, 80, 24)));
    key(&mut app, KeyCode::Esc);
    assert_eq!(key(&mut app, KeyCode::Enter), vec![Command::OpenPastRun { dir: dir.clone() }]);
    app.handle_report(Report::PastRun { dir, events: recorded(), warning: None });
    assert_eq!(app.screen, Screen::Run);
    insta::assert_snapshot!("findings_replayed_120x40", text(&to_buffer(&mut app, 120, 40)));
}

#[test]
fn help_and_quit_while_running_ask_and_explain() {
    let events = recorded();
    let mut app = app_with(&events[..10]);
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!("help_120x40", text(&to_buffer(&mut app, 120, 40)));
    key(&mut app, KeyCode::Char('x'));
    assert!(key(&mut app, KeyCode::Char('q')).is_empty(), "a working run is not dropped without asking");
    assert_eq!(key(&mut app, KeyCode::Char('y')), vec![Command::CancelRun]);
    let after = app.handle_report(Report::RunClosed);
    assert!(after.contains(&Command::Quit), "quits once the findings are written: {after:?}");
}

#[test]
fn a_corrupt_or_foreign_event_stream_is_shown_not_fatal() {
    let mut events = recorded();
    events.retain(|e| e.body.type_name() != "task_created" || e.seq % 2 == 0);
    let mut app = app_with(&events);
    let drawn = text(&to_buffer(&mut app, 80, 24));
    assert!(drawn.contains("smoke"), "{drawn}");
    assert!(!app.live.as_ref().unwrap().view.problems.is_empty());
}
