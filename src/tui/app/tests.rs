//! The Run and Findings screens through the app: keys and shell reports in, commands and what
//! is shown out.

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;

use super::App;
use crate::experiment::record::{MatrixInfo, TrialRecord};
use crate::experiment::store::MatrixFile;
use crate::protocol::Event;
use crate::tui::messages::{Command, Screen, ShellReport};
use crate::tui::screens::Focus;
use crate::tui::screens::findings::FINDINGS_REFRESH_MS;
use crate::tui::screens::run::FOLLOW_MS;
use crate::tui::tree::RunView;

fn recorded() -> Vec<Event> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/smoke-events.jsonl");
    crate::findings::read_events(&path).unwrap().0
}

fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
    app.handle_key(KeyEvent::from(code))
}

fn error_said(app: &App) -> String {
    match &app.flash {
        Some((text, true)) => text.clone(),
        other => panic!("no error said: {other:?}"),
    }
}

/// A live smoke run on the Run screen, its first `events` applied, recorded in `/w/run`.
fn live(events: &[Event]) -> App {
    let mut app = App::new(PathBuf::from("/w"));
    app.handle_report(ShellReport::RunStarting { experiment: "smoke".into() });
    app.handle_report(ShellReport::RunFolder { dir: "/w/run".into() });
    for event in events {
        app.handle_report(ShellReport::RunEvent(event.clone()));
    }
    app.prepare_frame(Rect::new(0, 0, 120, 40));
    app
}

#[test]
fn fork_is_refused_while_the_run_works_and_on_the_root() {
    let events = recorded();
    let mut app = live(&events[..events.len() / 2]);
    key(&mut app, KeyCode::Down);
    assert!(key(&mut app, KeyCode::Char('F')).is_empty());
    assert!(error_said(&app).contains("still working"), "{:?}", app.flash);

    let mut app = live(&events);
    app.handle_report(ShellReport::RunClosed);
    assert!(key(&mut app, KeyCode::Char('F')).is_empty(), "the root is selected at first");
    assert!(error_said(&app).contains("is the root"), "{:?}", app.flash);
    assert!(!app.run.running);

    key(&mut app, KeyCode::Down);
    let child = app.run.shown_run().and_then(|p| p.selected).unwrap();
    assert_eq!(key(&mut app, KeyCode::Char('F')), vec![Command::Fork { run: "/w/run".into(), uri: child }]);
    assert!(app.run.running, "no other run starts while the fork does");
    assert!(key(&mut app, KeyCode::Char('F')).is_empty());
    assert!(error_said(&app).contains("still working"), "{:?}", app.flash);
    app.handle_report(ShellReport::ForkRefused { error: "cannot fork: no".into() });
    assert!(!app.run.running);
    assert_eq!(error_said(&app), "cannot fork: no");
}

#[test]
fn a_past_run_forks_while_nothing_runs_and_without_a_run_there_is_nothing_to_fork() {
    let mut app = App::new(PathBuf::from("/w"));
    app.screen = Screen::Run;
    assert!(key(&mut app, KeyCode::Char('F')).is_empty());
    assert!(error_said(&app).contains("no run to fork from"));
    app.handle_report(ShellReport::PastRun { dir: "/w/findings/old".into(), events: recorded(), warning: None });
    app.prepare_frame(Rect::new(0, 0, 120, 40));
    key(&mut app, KeyCode::Down);
    let commands = key(&mut app, KeyCode::Char('F'));
    assert!(
        matches!(&commands[..], [Command::Fork { run, .. }] if run == Path::new("/w/findings/old")),
        "{commands:?}"
    );
}

#[test]
fn a_past_run_still_being_written_is_followed_until_it_ends() {
    let events = recorded();
    let dir = PathBuf::from("/w/findings/serving");
    let mut app = App::new(PathBuf::from("/w"));
    app.handle_report(ShellReport::PastRun { dir: dir.clone(), events: events[..5].to_vec(), warning: None });
    assert!(app.tick(FOLLOW_MS - 1).is_empty(), "not read again at once");
    assert_eq!(app.tick(FOLLOW_MS), vec![Command::FollowPastRun { dir: dir.clone(), offset: 0 }]);
    assert!(app.tick(3 * FOLLOW_MS).is_empty(), "one read at a time");

    // The first read is of the whole file: what was replayed is not applied twice.
    let commands =
        app.handle_report(ShellReport::PastRunGrew { dir: dir.clone(), events: events[..9].to_vec(), offset: 900 });
    assert!(commands.is_empty());
    let pane = app.run.past_run().unwrap();
    assert_eq!(pane.view.nodes(), RunView::replay(&events[..9]).nodes());
    assert_eq!(app.tick(4 * FOLLOW_MS), vec![Command::FollowPastRun { dir: dir.clone(), offset: 900 }]);

    // A report for a run no longer shown changes nothing.
    let other = app.handle_report(ShellReport::PastRunGrew {
        dir: "/w/findings/other".into(),
        events: events.clone(),
        offset: 1,
    });
    assert!(other.is_empty());
    let commands =
        app.handle_report(ShellReport::PastRunGrew { dir: dir.clone(), events: events[9..].to_vec(), offset: 2000 });
    assert_eq!(commands, vec![Command::ListFindings], "its end is a new row in Findings");
    let pane = app.run.past_run().unwrap();
    assert_eq!(pane.view.nodes(), RunView::replay(&events).nodes(), "the same tree as the finished run's");
    assert!(pane.tail.is_none());
    assert!(app.tick(10 * FOLLOW_MS).is_empty(), "an ended run is not read again");

    // A finished run is not followed at all.
    app.handle_report(ShellReport::PastRun { dir: dir.clone(), events: events.clone(), warning: None });
    assert!(app.tick(20 * FOLLOW_MS).is_empty());
}

#[test]
fn findings_are_read_again_while_shown_and_the_selection_stays_on_its_run() {
    let mut app = App::new(PathBuf::from("/w"));
    app.screen = Screen::Findings;
    let run = |name: &str| crate::tui::catalog::PastRun::unread(&Path::new("/w/findings").join(name));
    app.handle_report(ShellReport::Findings(vec![run("b"), run("a")]));
    app.findings.selected = 1;
    assert!(app.tick(FINDINGS_REFRESH_MS).contains(&Command::ListFindings));
    assert!(!app.tick(FINDINGS_REFRESH_MS + 100).contains(&Command::ListFindings));
    // A new run appears above the selected one.
    app.handle_report(ShellReport::Findings(vec![run("c"), run("b"), run("a")]));
    assert_eq!(app.findings.runs[app.findings.selected].dir, Path::new("/w/findings/a"));
    app.findings.focus = Focus::Editor;
    assert!(!app.tick(5 * FINDINGS_REFRESH_MS).contains(&Command::ListFindings), "not while notes are written");
    app.findings.focus = Focus::List;
    app.screen = Screen::Run;
    assert!(!app.tick(10 * FINDINGS_REFRESH_MS).contains(&Command::ListFindings), "only while shown");
}

#[test]
fn a_finished_run_says_how_its_checks_went() {
    let events = recorded();
    let mut app = live(&events);
    app.handle_report(ShellReport::RunScored { passed: 1, total: 2 });
    app.handle_report(ShellReport::RunClosed);
    assert_eq!(app.flash, Some(("run completed; 1 of 2 checks passed; findings written".to_owned(), false)));
    // Without checks, nothing is said of them.
    let mut app = live(&events);
    app.handle_report(ShellReport::RunClosed);
    assert_eq!(app.flash, Some(("run completed; findings written".to_owned(), false)));
}

#[test]
fn a_refused_run_keeps_its_error_on_screen() {
    let mut app = live(&[]);
    app.handle_report(ShellReport::RunRefused { error: "no such model".into() });
    app.handle_report(ShellReport::RunClosed);
    assert_eq!(error_said(&app), "no such model");
}

/// A past matrix's plan (two variants of one task, twice) and the records of its trials.
fn past_matrix() -> (MatrixFile, Vec<TrialRecord>) {
    let trials: Vec<crate::experiment::plan::TrialSpec> = (0..4u32)
        .map(|index| {
            let variant = ["a", "b"][index as usize % 2];
            let repetition = index / 2 + 1;
            serde_json::from_value(serde_json::json!({
                "index": index, "pair": index / 2, "key": format!("{variant}/t/{repetition}"),
                "variant": variant, "task_id": "t", "repetition": repetition, "seed": 1,
                "folder": format!("trials/{variant}--t--r{repetition}"),
            }))
            .unwrap()
        })
        .collect();
    let records = trials
        .iter()
        .map(|t| {
            serde_json::from_value(serde_json::json!({
                "index": t.index, "key": t.key, "variant": t.variant, "task_id": "t",
                "repetition": t.repetition, "seed": 1, "status": "completed", "pass": true, "score": 1.0,
                "checks": [], "input_tokens": 10, "output_tokens": 1, "cost": null, "wall_ms": 1,
                "subtasks": 0, "depth": 0, "tool_errors": 0, "limit_hits": 0, "turns": 1, "answer": null,
                "error": null, "folder": t.folder,
            }))
            .unwrap()
        })
        .collect();
    let info = MatrixInfo {
        experiment: "m".into(),
        variants: vec!["a".into(), "b".into()],
        baseline: "a".into(),
        tasks: vec!["t".into()],
        repetitions: 2,
        trials: 4,
        checks: vec![],
    };
    let matrix = MatrixFile {
        format: 1,
        run_id: "m".into(),
        experiment_file: "experiments/m.toml".into(),
        info,
        shard: None,
        trials,
        troupe_version: "0".into(),
    };
    (matrix, records)
}

#[test]
fn a_past_matrix_takes_only_the_trial_events_it_asked_for() {
    let mut app = App::new(PathBuf::from("/w"));
    let (matrix, records) = past_matrix();
    let dir = PathBuf::from("/w/findings/m");
    let commands = app.handle_report(ShellReport::PastMatrix { dir: dir.clone(), matrix, records });
    let trial = dir.join("trials/a--t--r1");
    assert_eq!(commands, vec![Command::LoadTrial { key: "a/t/1".into(), dir: trial.clone() }]);
    assert_eq!(app.screen, Screen::Run);
    let waiting = |app: &App| app.run.past_matrix().is_some_and(|m| m.awaits("a/t/1", &trial));
    // The same key in another folder (another matrix of the same experiment) is not its trial.
    let other = PathBuf::from("/w/findings/other/trials/a--t--r1");
    app.handle_report(ShellReport::TrialEvents { key: "a/t/1".into(), dir: other, events: Err("gone".into()) });
    assert!(waiting(&app));
    assert_eq!(app.flash, None, "nobody asked for it, so nothing is said");
    app.handle_report(ShellReport::TrialEvents { key: "a/t/1".into(), dir: trial.clone(), events: Ok(recorded()) });
    assert!(!waiting(&app));
    assert!(app.run.shown_run().is_some_and(|pane| !pane.view.nodes().is_empty()));
    // A past matrix cannot be cancelled, and Esc goes back.
    assert!(key(&mut app, KeyCode::Char('c')).is_empty());
    assert!(error_said(&app).contains("past matrix"));
    assert_eq!(key(&mut app, KeyCode::Char('r')), vec![Command::StartRun { experiment: "m".into() }]);
    key(&mut app, KeyCode::Esc);
    assert!(app.run.past_matrix().is_none() && app.run.shown_matrix().is_none());
}
