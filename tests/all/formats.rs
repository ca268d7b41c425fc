//! Every run folder troupe has written stays readable: the matrices shipped in `findings/` and a
//! frozen copy of each format written so far (`fixtures/formats/`, described in its README) are
//! listed, opened in the workbench and rendered again through the same code a user's reach.

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use troupe::experiment::store;
use troupe::findings::read_events;
use troupe::tui::app::App;
use troupe::tui::catalog::{PastOutcome, list_runs};
use troupe::tui::messages::{Command, Screen, ShellReport};
use troupe::tui::render::to_buffer;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn screen_text(app: &mut App) -> String {
    crate::tui_screens::text(&to_buffer(app, 140, 40))
}

/// The folders of `dir` that are runs or matrices, by name.
fn run_folders(dir: &Path) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("events.jsonl").is_file() || p.join("matrix.json").is_file())
        .collect();
    folders.sort();
    folders
}

/// Opens the matrix in `dir` as the Findings screen does (the row from the catalog, Enter, the
/// shell's read of the folder, the first trial's events) and returns the Run screen's text.
fn open_in_workbench(dir: &Path) -> String {
    let findings = dir.parent().unwrap();
    let rows: Vec<_> = list_runs(findings).into_iter().filter(|row| row.dir == dir).collect();
    assert_eq!(rows.len(), 1, "{} is listed once", dir.display());
    let mut app = App::new(findings.parent().unwrap().to_path_buf());
    app.handle_report(ShellReport::Findings(rows));
    app.screen = Screen::Findings;
    let opened = app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!(opened, vec![Command::OpenPastMatrix { dir: dir.to_path_buf() }]);
    // What the shell does for `OpenPastMatrix`.
    let matrix = store::read_matrix(dir).unwrap();
    let records = store::read_records(dir).unwrap();
    let loads = app.handle_report(ShellReport::PastMatrix { dir: dir.to_path_buf(), matrix, records });
    for command in loads {
        if let Command::LoadTrial { key, dir } = command {
            let events = read_events(&dir.join("events.jsonl")).map(|(events, _)| events).map_err(|e| e.to_string());
            app.handle_report(ShellReport::TrialEvents { key, dir, events });
        }
    }
    screen_text(&mut app)
}

/// The matrices shipped in `findings/`, which the findings documents link.
const SHIPPED: [&str; 3] = [
    "20261125-145113-slm-vs-agent-0fab",
    "20261125-150122-experts-vs-inherit-ed4f",
    "20261125-151743-solo-vs-delegate-d9ec",
];

#[test]
fn the_shipped_matrices_open_with_their_comparison_and_render_again() {
    // The shipped findings by name: a user's own runs land in `findings/` too, and are not ours
    // to judge here.
    let findings = repo().join("findings");
    let folders: Vec<PathBuf> = SHIPPED.iter().map(|name| findings.join(name)).collect();
    for row in list_runs(&findings).into_iter().filter(|row| folders.contains(&row.dir)) {
        assert_eq!(row.problem, None, "{} lists without a problem", row.dir.display());
        assert_eq!(row.outcome, PastOutcome::Completed, "{}", row.dir.display());
    }
    for dir in folders {
        let matrix = store::read_matrix(&dir).unwrap();
        let shown = open_in_workbench(&dir);
        let head = format!(
            "past matrix {} · completed {}/{} trials",
            matrix.info.experiment, matrix.info.trials, matrix.info.trials
        );
        assert!(shown.contains(&head), "{}:\n{shown}", dir.display());
        for variant in &matrix.info.variants {
            assert!(shown.lines().any(|l| l.contains(variant.as_str()) && l.contains('%')), "{variant}:\n{shown}");
        }
        // Rendered again into another folder, the shipped one untouched.
        let out = tempfile::tempdir().unwrap();
        let before = std::fs::read(dir.join("report.md")).unwrap();
        store::rerender_matrix(&dir, out.path()).unwrap();
        assert_eq!(std::fs::read(dir.join("report.md")).unwrap(), before);
        let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
        assert!(
            report.contains(&format!("each variant minus `{}`", matrix.info.baseline)),
            "the comparison:\n{report}"
        );
        for chart in ["pass_rate.svg", "tokens.svg"] {
            assert!(std::fs::read_to_string(out.path().join("charts").join(chart)).unwrap().starts_with("<svg"));
        }
        for trial in &matrix.trials {
            let transcript = std::fs::read_to_string(out.path().join(&trial.folder).join("transcript.md")).unwrap();
            assert!(!transcript.is_empty(), "{}", trial.key);
        }
    }
}

#[test]
fn every_frozen_format_is_listed_opened_and_rendered_again() {
    let formats = repo().join("tests/all/fixtures/formats");
    let folders = run_folders(&formats);
    assert!(folders.len() >= 4, "a run and a matrix of each format written so far: {folders:?}");
    for row in list_runs(&formats) {
        assert_eq!(row.problem, None, "{} lists without a problem", row.dir.display());
        assert_eq!(row.outcome, PastOutcome::Completed, "{}", row.dir.display());
    }
    for dir in folders {
        let out = tempfile::tempdir().unwrap();
        // As the catalog decides: a folder with a log is a run (a run of one trial may also
        // have its own `matrix.json`).
        if !dir.join("events.jsonl").is_file() {
            let matrix = store::read_matrix(&dir).unwrap();
            assert!(matrix.trials.iter().all(|t| t.pair < matrix.info.trials), "{}", dir.display());
            let shown = open_in_workbench(&dir);
            assert!(shown.contains(&format!("past matrix {}", matrix.info.experiment)), "{shown}");
            store::rerender_matrix(&dir, out.path()).unwrap();
            assert!(out.path().join("report.md").is_file());
        } else {
            let (events, warning) = read_events(&dir.join("events.jsonl")).unwrap();
            assert_eq!(warning, None);
            assert!(!events.is_empty());
            if dir.join("matrix.json").is_file() {
                store::rerender_matrix(&dir, out.path()).unwrap();
            } else {
                troupe::findings::rerender_into(&dir, out.path()).unwrap();
            }
            let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
            assert!(report.contains("completed"), "{report}");
        }
    }
}

#[test]
fn a_folder_from_a_newer_troupe_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    // A matrix.
    let source = repo().join("tests/all/fixtures/formats");
    let matrix = run_folders(&source).into_iter().find(|d| !d.join("events.jsonl").is_file()).unwrap();
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(matrix.join("matrix.json")).unwrap()).unwrap();
    value["format"] = serde_json::json!(store::FORMAT + 1);
    value["troupe_version"] = serde_json::json!("9.9.9");
    std::fs::write(dir.path().join("matrix.json"), value.to_string()).unwrap();
    let err = store::read_matrix(dir.path()).unwrap_err().to_string();
    assert!(err.contains("newer troupe (troupe 9.9.9"), "{err}");
    // A run.
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let line = format!(
        "{{\"seq\":0,\"ts\":\"2027-01-01T00:00:00.000Z\",\"type\":\"run_started\",\"run_id\":\"r\",\"experiment\":\"e\",\"root_agent\":\"a\",\"task\":\"t\",\"format\":{},\"troupe_version\":\"9.9.9\"}}\n{{\"seq\":1,\"ts\":\"2027-01-01T00:00:00.000Z\",\"type\":\"an_event_of_the_future\"}}\n",
        troupe::protocol::EVENTS_FORMAT + 1
    );
    std::fs::write(run.join("events.jsonl"), line).unwrap();
    let err = read_events(&run.join("events.jsonl")).unwrap_err().to_string();
    assert!(err.contains("newer troupe (troupe 9.9.9"), "{err}");
    let row = list_runs(dir.path()).into_iter().find(|r| r.dir == run).unwrap();
    assert!(row.problem.unwrap_or_default().contains("newer troupe"));
}
