//! Every screen of the workbench, drawn into ratatui's `TestBackend` from recorded events and
//! snapshotted with insta. Inputs are fixed (a recorded smoke run, a fixed `now`, a fixed
//! root), so no filtering of ids or times is needed. A visible change ships with its
//! reviewed snapshot (`cargo insta review`, or INSTA_UPDATE=always and read the diff).

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::buffer::Buffer;
use troupe::config::{Diagnostic, Location};
use troupe::experiment::plan::TrialSpec;
use troupe::experiment::record::{MatrixInfo, TrialRecord};
use troupe::experiment::store::MatrixFile;
use troupe::experiment::update::MatrixUpdate;
use troupe::findings::read_events;
use troupe::memory::store::{Author, Hit, Item, ItemKind, Provenance, Scope};
use troupe::protocol::{Event, TaskCounts, Usage};
use troupe::tui::app::App;
use troupe::tui::catalog::MatrixBrief;
use troupe::tui::catalog::{PastOutcome, PastRun};
use troupe::tui::messages::{AgentFileText, Command, ExperimentItem, Screen, ShellReport};
use troupe::tui::render::to_buffer;

fn recorded() -> Vec<Event> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/smoke-events.jsonl");
    read_events(&path).unwrap().0
}

/// The buffer's rows as text, trailing spaces trimmed.
pub(crate) fn text(buffer: &Buffer) -> String {
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
    app.handle_report(ShellReport::Workbench {
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
        app.handle_report(ShellReport::RunStarting { experiment: "smoke".into() });
        for event in events {
            app.handle_report(ShellReport::RunEvent(event.clone()));
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
    app.handle_report(ShellReport::RunClosed);
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
    app.handle_report(ShellReport::Validated { path: path.clone(), version, diagnostics: vec![diagnostic] });
    insta::assert_snapshot!("agents_invalid_80x24", text(&to_buffer(&mut app, 80, 24)));
    let buffer = to_buffer(&mut app, 80, 24);
    let marked = (0..80).any(|x| (0..24).any(|y| buffer[(x, y)].bg == ratatui::style::Color::Red));
    assert!(marked, "the line with the error is marked");
    // Saving invalid text asks first; `n` keeps the text and writes nothing.
    let save = app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert!(save.is_empty());
    assert!(key(&mut app, KeyCode::Char('n')).is_empty());
    assert!(app.agents.files[1].text().starts_with("xname"), "the user's text is kept");
    app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    let confirmed = key(&mut app, KeyCode::Char('y'));
    assert!(
        matches!(&confirmed[..], [Command::Save { path: p, text }] if *p == path && text.starts_with("xname")),
        "{confirmed:?}"
    );
    // A failed save keeps the buffer and says so.
    app.handle_report(ShellReport::SaveFailed { path, error: "disk full".into() });
    assert!(app.agents.files[1].is_dirty());
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
    let names: Vec<String> = app.agents.files.iter().map(|a| a.name()).collect();
    assert_eq!(names, vec!["coordinator", "expert-1", "expert-2", "writer"]);
    app.agents.selected = 3;
    key(&mut app, KeyCode::Char('d'));
    let copy = app.agents.files.iter().find(|a| a.name() == "writer-copy").expect("a copy");
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
        matrix: None,
    };
    let opened = key(&mut app, KeyCode::Char('4'));
    assert_eq!(opened, vec![Command::ListFindings]);
    let loads = app.handle_report(ShellReport::Findings(vec![
        run("20261125-123815-smoke-b3c8", PastOutcome::Completed, 1_795_000_000_000),
        run("20261124-090000-smoke-0001", PastOutcome::Unfinished, 1_794_900_000_000),
    ]));
    let dir = PathBuf::from("/bench/findings/20261125-123815-smoke-b3c8");
    assert_eq!(loads, vec![Command::LoadNotes { dir: dir.clone() }]);
    app.handle_report(ShellReport::Notes { dir: dir.clone(), text: "# Notes\n".into() });
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
    app.handle_report(ShellReport::PastRun { dir, events: recorded(), warning: None });
    assert_eq!(app.screen, Screen::Run);
    insta::assert_snapshot!("findings_replayed_120x40", text(&to_buffer(&mut app, 120, 40)));
}

#[test]
fn lessons_in_the_notes_go_to_memory_when_the_notes_are_saved_on_purpose() {
    let mut app = app_with(&[]);
    key(&mut app, KeyCode::Char('4'));
    let dir = PathBuf::from("/bench/findings/20261125-123815-smoke-b3c8");
    app.handle_report(ShellReport::Findings(vec![PastRun {
        id: "20261125-123815-smoke-b3c8".into(),
        dir: dir.clone(),
        started: Some(1_795_000_000_000),
        experiment: "smoke".into(),
        root_agent: "coordinator".into(),
        task: "t".into(),
        outcome: PastOutcome::Completed,
        usage: Usage::default(),
        elapsed_ms: Some(143),
        tasks: None,
        problem: None,
        matrix: None,
    }]));
    app.handle_report(ShellReport::Notes { dir: dir.clone(), text: "# Notes\n".into() });
    key(&mut app, KeyCode::Char('e'));
    app.now = 1_000;
    for c in "\n## Lessons\n- Check the units.\n- Quote the solver".chars() {
        key(&mut app, if c == '\n' { KeyCode::Enter } else { KeyCode::Char(c) });
    }
    let autosaved = app.tick(1_000 + 10_000);
    assert!(matches!(&autosaved[..], [Command::Save { .. }]), "the autosave keeps no half-typed lesson: {autosaved:?}");
    for c in "'s answer.".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let left = key(&mut app, KeyCode::Esc);
    assert!(matches!(&left[0], Command::Save { .. }), "{left:?}");
    assert_eq!(
        left[1..],
        [Command::LearnNotes {
            dir: dir.clone(),
            lessons: vec!["Check the units.".into(), "Quote the solver's answer.".into()]
        }]
    );
    key(&mut app, KeyCode::Char('e'));
    assert!(key(&mut app, KeyCode::Esc).is_empty(), "unchanged lessons are not sent again");
    app.handle_report(ShellReport::NotesLearned(Ok((1, 1))));
    let drawn = text(&to_buffer(&mut app, 100, 24));
    assert!(drawn.contains("kept 2 lessons from the notes in memory (1 new)"), "{drawn}");
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
    let after = app.handle_report(ShellReport::RunClosed);
    assert!(after.contains(&Command::Quit), "quits once the findings are written: {after:?}");
}

#[test]
fn a_corrupt_or_foreign_event_stream_is_shown_not_fatal() {
    let mut events = recorded();
    events.retain(|e| e.body.type_name() != "task_created" || e.seq % 2 == 0);
    let mut app = app_with(&events);
    let drawn = text(&to_buffer(&mut app, 80, 24));
    assert!(drawn.contains("smoke"), "{drawn}");
    assert!(!app.run.live_run().unwrap().view.problems.is_empty());
}

// ---------------------------------------------------------------------------------------------
// A matrix: three variants of one task, two repetitions each, two trials at a time.

const MATRIX_DIR: &str = "/bench/findings/20261125-130000-trio-c0de";

fn trial(index: u32) -> TrialSpec {
    let variant = ["inherit", "experts", "solo"][index as usize % 3];
    let repetition = index / 3 + 1;
    // From JSON, as `matrix.json` holds trials.
    serde_json::from_value(serde_json::json!({
        "index": index, "pair": index / 3, "key": format!("{variant}/t1/{repetition}"), "variant": variant,
        "task_id": "t1", "repetition": repetition, "seed": 7,
        "folder": format!("trials/{variant}--t1--r{repetition}"),
    }))
    .unwrap()
}

fn trial_record(spec: &TrialSpec, status: &str, pass: bool, tokens: u64, error: Option<&str>) -> TrialRecord {
    serde_json::from_value(serde_json::json!({
        "index": spec.index, "key": spec.key, "variant": spec.variant, "task_id": spec.task_id,
        "repetition": spec.repetition, "seed": spec.seed, "status": status, "pass": pass,
        "score": if pass { 1.0 } else { 0.0 }, "checks": [], "input_tokens": tokens - tokens / 8,
        "output_tokens": tokens / 8, "cost": null, "wall_ms": 140, "subtasks": 4, "depth": 2, "tool_errors": 0,
        "limit_hits": 0, "turns": 9, "answer": null, "error": error, "folder": spec.folder,
    }))
    .unwrap()
}

/// Feeds trial `index` its `events` (as the runner forwards them) after it starts.
fn run_trial(app: &mut App, index: u32, events: &[Event]) {
    let spec = trial(index);
    let dir = PathBuf::from(MATRIX_DIR).join(&spec.folder);
    app.handle_report(ShellReport::Matrix(MatrixUpdate::TrialStarted { trial: spec.clone(), dir }));
    for event in events {
        app.handle_report(ShellReport::Matrix(MatrixUpdate::Event { key: spec.key.clone(), event: event.clone() }));
    }
}

fn finish_trial(app: &mut App, record: TrialRecord) {
    app.now += 2_000;
    app.handle_report(ShellReport::Matrix(MatrixUpdate::TrialFinished { record }));
}

/// Five of six trials started: four finished (one could not run), the newest mid-run.
fn matrix_app() -> App {
    let events = recorded();
    let cut = events.len() / 2;
    let mut app = app_with(&[]);
    app.handle_report(ShellReport::RunStarting { experiment: "trio".into() });
    app.handle_report(ShellReport::MatrixStarting {
        experiment: "trio".into(),
        info: MatrixInfo {
            experiment: "trio".into(),
            variants: vec!["inherit".into(), "experts".into(), "solo".into()],
            baseline: "inherit".into(),
            tasks: vec!["t1".into()],
            repetitions: 2,
            trials: 6,
            checks: vec![],
        },
        fork: None,
    });
    app.now = events[0].ts;
    app.handle_report(ShellReport::Matrix(MatrixUpdate::Planned {
        dir: MATRIX_DIR.into(),
        total: 6,
        to_run: 6,
        recorded: 0,
        concurrency: 2,
    }));
    run_trial(&mut app, 0, &events);
    finish_trial(&mut app, trial_record(&trial(0), "completed", true, 3_040, None));
    run_trial(&mut app, 1, &events);
    finish_trial(&mut app, trial_record(&trial(1), "completed", false, 4_100, None));
    run_trial(&mut app, 2, &[]);
    finish_trial(&mut app, trial_record(&trial(2), "error", false, 0, Some("model `big` needs OPENAI_API_KEY")));
    run_trial(&mut app, 3, &events);
    finish_trial(&mut app, trial_record(&trial(3), "completed", true, 2_980, None));
    run_trial(&mut app, 4, &events[..cut]);
    app.now += 500;
    app
}

#[test]
fn a_matrix_run_shows_progress_the_variants_compared_and_the_newest_trial() {
    let mut app = matrix_app();
    assert_eq!(app.screen, Screen::Run);
    let drawn = text(&to_buffer(&mut app, 120, 40));
    insta::assert_snapshot!("matrix_mid_120x40", drawn);
    assert!(drawn.contains("trial 5/5 experts/t1/2 running"), "the newest trial is shown\n{drawn}");
    insta::assert_snapshot!("matrix_mid_80x24", text(&to_buffer(&mut app, 80, 24)));
    // A trial that could not run says why.
    for _ in 0..2 {
        key(&mut app, KeyCode::Char('<'));
    }
    let drawn = text(&to_buffer(&mut app, 120, 40));
    assert!(drawn.contains("trial 3/5 solo/t1/1 error"), "{drawn}");
    assert!(drawn.contains("OPENAI_API_KEY"), "{drawn}");
    // `c` cancels the whole matrix, after asking.
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(key(&mut app, KeyCode::Char('y')), vec![Command::CancelRun]);
}

#[test]
fn trial_keys_step_through_the_trials_trees() {
    let mut app = matrix_app();
    let shown = |app: &mut App| {
        let drawn = text(&to_buffer(app, 120, 40));
        let title = drawn.lines().find(|l| l.contains(" trial ")).unwrap_or_default().to_owned();
        (title, drawn)
    };
    let (newest, drawn) = shown(&mut app);
    assert!(newest.contains("trial 5/5 experts/t1/2 running"), "{newest}");
    assert!(drawn.contains(" working"), "the newest trial is mid-run\n{drawn}");
    assert!(key(&mut app, KeyCode::Char('<')).is_empty(), "its view is in memory: nothing to read back");
    let (before, drawn) = shown(&mut app);
    assert!(before.contains("trial 4/5 inherit/t1/2 pass"), "{before}");
    assert!(before.contains("tasks (5)"), "{before}");
    assert!(drawn.contains("smoke · completed") || drawn.contains("completed"), "{drawn}");
    assert_ne!(newest, before);
    // Stepping back stops following: a trial that starts now is not jumped to…
    run_trial(&mut app, 5, &[]);
    assert!(shown(&mut app).0.contains("trial 4/6 inherit/t1/2"));
    // …until the newest is reached again.
    key(&mut app, KeyCode::Char('>'));
    key(&mut app, KeyCode::Char('>'));
    assert!(shown(&mut app).0.contains("trial 6/6 solo/t1/2 running"), "{}", shown(&mut app).0);
    assert!(key(&mut app, KeyCode::Char('>')).is_empty());
    assert_eq!(app.flash.as_ref().map(|f| f.0.as_str()), Some("this is the newest trial"));
    // Selection and folding act on the shown trial's tree.
    key(&mut app, KeyCode::Char('<'));
    key(&mut app, KeyCode::Down);
    let (title, drawn) = shown(&mut app);
    assert!(title.contains("experts/t1/2"), "{title}");
    assert!(drawn.contains("┌ researcher · subtask://"), "{drawn}");
}

#[test]
fn a_finished_matrix_keeps_its_comparison_and_forks_a_trial_task() {
    let mut app = matrix_app();
    let events = recorded();
    // The newest trial ends; the last one is cancelled with the matrix.
    for event in &events[events.len() / 2..] {
        app.handle_report(ShellReport::Matrix(MatrixUpdate::Event { key: trial(4).key, event: event.clone() }));
    }
    finish_trial(&mut app, trial_record(&trial(4), "completed", true, 3_500, None));
    let summary = troupe::experiment::summary::summarize(
        &MatrixInfo {
            experiment: "trio".into(),
            variants: vec!["inherit".into(), "experts".into(), "solo".into()],
            baseline: "inherit".into(),
            tasks: vec!["t1".into()],
            repetitions: 2,
            trials: 6,
            checks: vec![],
        },
        &app.run.live_matrix().unwrap().records,
    );
    assert_eq!(summary, app.run.live_matrix().unwrap().summary, "the same figures the runner writes");
    app.handle_report(ShellReport::MatrixFinished { summary, complete: false, cancelled: true });
    app.handle_report(ShellReport::RunClosed);
    let drawn = text(&to_buffer(&mut app, 120, 40));
    insta::assert_snapshot!("matrix_cancelled_120x40", drawn);
    // The trial's folder is the run a subtask is forked from.
    key(&mut app, KeyCode::Down);
    let commands = key(&mut app, KeyCode::Char('F'));
    let folder = PathBuf::from(MATRIX_DIR).join("trials/experts--t1--r2");
    assert!(matches!(&commands[..], [Command::Fork { run, .. }] if *run == folder), "{commands:?}");
}

// ---------------------------------------------------------------------------------------------
// The same matrix from an earlier session: listed in Findings, opened from there.

fn trio_info() -> MatrixInfo {
    MatrixInfo {
        experiment: "trio".into(),
        variants: vec!["inherit".into(), "experts".into(), "solo".into()],
        baseline: "inherit".into(),
        tasks: vec!["t1".into()],
        repetitions: 2,
        trials: 6,
        checks: vec![],
    }
}

/// Its `matrix.json` and its six records, as the shell reads them from its folder.
fn past_trio() -> (MatrixFile, Vec<TrialRecord>) {
    let matrix = MatrixFile {
        format: 1,
        run_id: "20261125-130000-trio-c0de".into(),
        experiment_file: "experiments/trio.toml".into(),
        info: trio_info(),
        shard: None,
        trials: (0..6).map(trial).collect(),
        troupe_version: "0.1.0".into(),
    };
    let records = vec![
        trial_record(&trial(0), "completed", true, 3_040, None),
        trial_record(&trial(1), "completed", false, 4_100, None),
        trial_record(&trial(2), "error", false, 0, Some("model `big` needs OPENAI_API_KEY")),
        trial_record(&trial(3), "completed", true, 2_980, None),
        trial_record(&trial(4), "completed", true, 3_500, None),
        trial_record(&trial(5), "completed", false, 900, None),
    ];
    (matrix, records)
}

#[test]
fn findings_lists_a_past_matrix_beside_a_run_and_opens_it_with_its_comparison() {
    let mut app = app_with(&[]);
    key(&mut app, KeyCode::Char('4'));
    let (matrix, records) = past_trio();
    let dir = PathBuf::from(MATRIX_DIR);
    // What the catalog lists for the folder.
    let matrix_row = PastRun {
        id: "20261125-130000-trio-c0de".into(),
        dir: dir.clone(),
        started: Some(1_795_611_600_000), // its id's time, 2026-11-25 13:00
        experiment: "trio".into(),
        root_agent: String::new(),
        task: "1 task × 3 variants × 2 repetitions".into(),
        outcome: PastOutcome::Completed,
        usage: Usage {
            input_tokens: records.iter().map(|r| r.input_tokens).sum(),
            output_tokens: records.iter().map(|r| r.output_tokens).sum(),
            model_calls: records.iter().map(|r| r.turns).sum(),
        },
        elapsed_ms: None,
        tasks: None,
        problem: None,
        matrix: Some(MatrixBrief { planned: 6, recorded: 6, passed: 3, variants: trio_info().variants }),
    };
    let run_row = PastRun {
        id: "20261125-123815-smoke-b3c8".into(),
        dir: PathBuf::from("/bench/findings/20261125-123815-smoke-b3c8"),
        started: Some(1_795_000_000_000),
        experiment: "smoke".into(),
        root_agent: "coordinator".into(),
        task: "t".into(),
        outcome: PastOutcome::Completed,
        usage: Usage { input_tokens: 2_670, output_tokens: 370, model_calls: 9 },
        elapsed_ms: Some(143),
        tasks: Some(TaskCounts { working: 0, completed: 4, failed: 0, cancelled: 1 }),
        problem: None,
        matrix: None,
    };
    let loads = app.handle_report(ShellReport::Findings(vec![matrix_row, run_row]));
    assert_eq!(loads, vec![Command::LoadNotes { dir: dir.clone() }], "a matrix's notes are its folder's");
    app.handle_report(ShellReport::Notes { dir: dir.clone(), text: "# trio\n".into() });
    let drawn = text(&to_buffer(&mut app, 120, 40));
    insta::assert_snapshot!("findings_matrix_120x40", drawn);
    assert!(drawn.contains("trio matrix 6/6 · 3 passed"), "{drawn}");
    // Its notes are written to the matrix folder's notes.md.
    key(&mut app, KeyCode::Char('e'));
    key(&mut app, KeyCode::Char('!'));
    let saved = key(&mut app, KeyCode::Esc);
    assert!(
        matches!(&saved[..], [Command::Save { path, text }] if *path == dir.join("notes.md") && text.contains("!")),
        "{saved:?}"
    );

    let opened = key(&mut app, KeyCode::Enter);
    assert_eq!(opened, vec![Command::OpenPastMatrix { dir: dir.clone() }]);
    let loads = app.handle_report(ShellReport::PastMatrix { dir: dir.clone(), matrix, records });
    let first = dir.join("trials/inherit--t1--r1");
    assert_eq!(loads, vec![Command::LoadTrial { key: "inherit/t1/1".into(), dir: first.clone() }]);
    assert_eq!(app.screen, Screen::Run);
    let drawn = text(&to_buffer(&mut app, 120, 40));
    assert!(drawn.contains("│reading") && drawn.contains("t1--r1/events.jsonl…"), "read back when shown\n{drawn}");
    app.handle_report(ShellReport::TrialEvents { key: "inherit/t1/1".into(), dir: first, events: Ok(recorded()) });
    let drawn = text(&to_buffer(&mut app, 120, 40));
    insta::assert_snapshot!("matrix_past_120x40", drawn);
    assert!(drawn.contains("past matrix trio · completed 6/6 trials · 3 passed (50 %) · 1 could not run"), "{drawn}");
    assert!(drawn.contains("inherit      2/2  100 %"), "the comparison from the records\n{drawn}");
    assert!(drawn.contains("trial 1/6 inherit/t1/1 pass · tasks (5)"), "{drawn}");
    // Each trial's tree is read back from its own folder when stepped onto.
    assert_eq!(
        key(&mut app, KeyCode::Char('>')),
        vec![Command::LoadTrial { key: "experts/t1/1".into(), dir: dir.join("trials/experts--t1--r1") }]
    );
    assert!(text(&to_buffer(&mut app, 120, 40)).contains("trial 2/6 experts/t1/1 FAIL"));
    // Esc closes it, as it does a past run: the Run screen had no run of its own.
    key(&mut app, KeyCode::Esc);
    assert!(app.run.past_matrix().is_none());
    assert!(text(&to_buffer(&mut app, 120, 40)).contains("No run yet."));
}

// ---------------------------------------------------------------------------------------------
// The Memory screen: lessons as the shell lists them from the store, a search, the editor.

/// A lesson as the store holds it; `run` is (run id, event seq, expert).
fn lesson(id: i64, author: Author, scope: Scope, run: Option<(&str, u64, &str)>, uses: u64, text: &str) -> Item {
    Item {
        id,
        kind: ItemKind::Lesson,
        author,
        scope,
        provenance: Provenance {
            run_id: run.map(|(run, _, _)| run.to_owned()),
            seq: run.map(|(_, seq, _)| seq),
            expert: run.map(|(_, _, expert)| expert.to_owned()),
        },
        text: text.to_owned(),
        data: serde_json::Value::Null,
        created_ms: 1_795_000_000_000 + id * 3_600_000,
        last_used_ms: (uses > 0).then_some(1_795_100_000_000 + id * 60_000),
        uses,
        successes: uses * 2 / 3,
        embedding: vec![1.0],
        embedder: "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db".into(),
    }
}

/// Four lessons, newest first: an agent's from a run, a reflection from a matrix trial, the
/// user's own, a note's.
fn lessons() -> Vec<Item> {
    vec![
        lesson(
            14,
            Author::Agent,
            Scope::Expert("researcher".into()),
            Some(("20261125-123815-smoke-b3c8", 42, "researcher")),
            6,
            "When a question asks for a number, cite where the number comes from (a file and line, or \
             the tool result that returned it) before using it in an answer.\nRound only at the end.",
        ),
        lesson(
            12,
            Author::Reflection,
            Scope::Global,
            Some(("20261125-130000-trio-c0de--inherit--t1--r2", 118, "coordinator")),
            2,
            "Delegating to an expert pays off only when the subtask is self-contained; otherwise answer directly.",
        ),
        lesson(9, Author::User, Scope::Global, None, 0, "Prefer the scripted model for smoke tests."),
        lesson(
            4,
            Author::Notes,
            Scope::Expert("writer".into()),
            Some(("20261124-090000-smoke-0001", 7, "writer")),
            1,
            "Plain text only: no markdown tables.",
        ),
    ]
}

#[test]
fn memory_screen_lists_lessons_ranks_a_search_and_keeps_a_failed_edit() {
    let mut app = app_with(&[]);
    assert_eq!(key(&mut app, KeyCode::Char('5')), vec![Command::MemoryList]);
    let drawn = text(&to_buffer(&mut app, 120, 40));
    assert!(drawn.contains("reading the memory…"), "{drawn}");
    app.handle_report(ShellReport::MemoryListed(Ok(("/bench/.troupe/memory.sqlite".into(), lessons()))));
    let id = lessons()[0].id;
    assert_eq!(app.tick(5_000), vec![Command::MemoryUsedIn { id }], "the detail asks which runs were given it");
    assert!(app.tick(5_100).is_empty(), "asked once");
    let runs = ["20261125-140000-smoke-0001", "20261125-130000-trio-c0de--trials/solo--t1--r1", "a", "b"];
    app.handle_report(ShellReport::MemoryUsedIn { id, runs: runs.iter().map(|r| r.to_string()).collect() });
    let drawn = text(&to_buffer(&mut app, 120, 40));
    insta::assert_snapshot!("memory_120x40", drawn);
    assert!(drawn.contains("given to  20261125-140000-smoke-0001,"), "{drawn}");
    assert!(drawn.contains("5 Memory"), "{drawn}");
    assert!(drawn.contains("by 6 runs, 4 of which passed"), "{drawn}");
    assert!(drawn.contains("run 20261125-123815-smoke-b3c8"), "{drawn}");

    key(&mut app, KeyCode::Char('/'));
    for c in "cite numbers".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert!(text(&to_buffer(&mut app, 120, 40)).contains("search: cite numbers█"));
    assert_eq!(key(&mut app, KeyCode::Enter), vec![Command::MemorySearch { query: "cite numbers".into() }]);
    let found = lessons();
    let hits = vec![Hit { item: found[0].clone(), score: 0.71 }, Hit { item: found[2].clone(), score: 0.34 }];
    app.handle_report(ShellReport::MemorySearched { query: "cite numbers".into(), hits: Ok(hits) });
    let drawn = text(&to_buffer(&mut app, 120, 40));
    insta::assert_snapshot!("memory_search_120x40", drawn);
    assert!(drawn.contains("“cite numbers”: 2 lessons, most similar first"), "{drawn}");

    // The hit's text edited; the save fails (no embedder files): the text stays, and why is said.
    key(&mut app, KeyCode::Char('e'));
    for c in " Always.".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let save = app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert!(matches!(&save[..], [Command::MemoryEdit { id: 14, text }] if text.ends_with("at the end. Always.")));
    app.handle_report(ShellReport::MemoryEdited {
        id: 14,
        edited: Err("the memory's embedder: model.safetensors is missing from the model cache".into()),
    });
    insta::assert_snapshot!("memory_edit_failed_80x24", text(&to_buffer(&mut app, 80, 24)));

    // A store that cannot be read is a message in the list; the other screens go on.
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('y'));
    key(&mut app, KeyCode::Esc);
    app.handle_report(ShellReport::MemoryListed(Err("the memory store /bench/.troupe/memory.sqlite is busy".into())));
    let drawn = text(&to_buffer(&mut app, 80, 24));
    assert!(drawn.contains("is busy") && drawn.contains("R tries again"), "{drawn}");
    assert_eq!(key(&mut app, KeyCode::Char('4')), vec![Command::ListFindings]);
}
