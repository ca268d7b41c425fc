//! Tests of `tui::catalog`.

use super::*;
use crate::protocol::{Role, TaskId, TaskKind, TaskStatus};
use pretty_assertions::assert_eq;
use std::fs;

const T0: Millis = 1_795_598_703_120; // 2026-11-25T09:25:03.120Z

fn root() -> TaskId {
    TaskId::from_code(0x0012_3456)
}

fn usage(input: u64, output: u64, calls: u64) -> Usage {
    Usage { input_tokens: input, output_tokens: output, model_calls: calls }
}

fn started(id: &str, task: &str) -> EventBody {
    EventBody::RunStarted {
        run_id: id.into(),
        experiment: "smoke".into(),
        root_agent: "coordinator".into(),
        task: task.into(),
        prices: Default::default(),
        format: crate::protocol::EVENTS_FORMAT,
        troupe_version: None,
    }
}

fn created() -> EventBody {
    EventBody::TaskCreated {
        uri: root(),
        parent: None,
        kind: TaskKind::Agent,
        agent: "coordinator".into(),
        model: "small".into(),
        task: "Find the capital of France".into(),
    }
}

fn delta(text: &str) -> EventBody {
    EventBody::MessageDelta { uri: root(), delta: text.into() }
}

fn usage_event(run_total: Usage) -> EventBody {
    EventBody::Usage { uri: root(), input_tokens: 10, output_tokens: 5, task_total: run_total, run_total }
}

fn finished(status: RunStatus, result: &str) -> EventBody {
    EventBody::RunFinished {
        status,
        result: Some(result.into()),
        error: None,
        usage: usage(120, 30, 2),
        tasks: TaskCounts { working: 0, completed: 1, failed: 0, cancelled: 0 },
        elapsed_ms: 1_500,
    }
}

/// Events numbered from 0, one millisecond apart from `start`.
fn events(start: Millis, bodies: Vec<EventBody>) -> Vec<Event> {
    bodies.into_iter().enumerate().map(|(i, body)| Event { seq: i as u64, ts: start + i as u64, body }).collect()
}

fn jsonl(events: &[Event]) -> String {
    events.iter().map(|event| serde_json::to_string(event).unwrap() + "\n").collect()
}

/// Writes a run folder `findings/id` whose log is `text`.
fn write_log(findings: &Path, id: &str, text: &str) -> PathBuf {
    let dir = findings.join(id);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(EVENTS_FILE), text).unwrap();
    dir
}

fn completed_run(id: &str, start: Millis) -> Vec<Event> {
    events(
        start,
        vec![
            started(id, "Find the capital of France"),
            created(),
            EventBody::Message { uri: root(), role: Role::User, content: "Find the capital of France".into() },
            usage_event(usage(120, 30, 2)),
            EventBody::TaskStatus {
                uri: root(),
                status: TaskStatus::Completed,
                status_message: None,
                result: Some("Paris".into()),
                error: None,
            },
            finished(RunStatus::Completed, "Paris"),
        ],
    )
}

#[test]
fn a_completed_run_is_listed_from_its_first_and_last_lines() {
    let findings = tempfile::tempdir().unwrap();
    let dir = write_log(findings.path(), "run-a", &jsonl(&completed_run("run-a", T0)));
    let runs = list_runs(findings.path());
    assert_eq!(
        runs,
        vec![PastRun {
            id: "run-a".into(),
            dir,
            started: Some(T0),
            experiment: "smoke".into(),
            root_agent: "coordinator".into(),
            task: "Find the capital of France".into(),
            outcome: PastOutcome::Completed,
            usage: usage(120, 30, 2),
            elapsed_ms: Some(1_500),
            tasks: Some(TaskCounts { working: 0, completed: 1, failed: 0, cancelled: 0 }),
            problem: None,
            matrix: None,
        }]
    );
}

#[test]
fn failed_and_cancelled_runs_keep_their_status() {
    let findings = tempfile::tempdir().unwrap();
    for (id, status) in [("run-f", RunStatus::Failed), ("run-c", RunStatus::Cancelled)] {
        let log = events(T0, vec![started(id, "t"), finished(status, "")]);
        write_log(findings.path(), id, &jsonl(&log));
    }
    let outcomes: Vec<(String, PastOutcome)> =
        list_runs(findings.path()).into_iter().map(|run| (run.id, run.outcome)).collect();
    assert_eq!(outcomes, vec![("run-f".to_owned(), PastOutcome::Failed), ("run-c".to_owned(), PastOutcome::Cancelled)]);
}

#[test]
fn a_killed_run_takes_its_last_usage_and_last_event_time() {
    let findings = tempfile::tempdir().unwrap();
    let log = events(
        T0,
        vec![started("run-k", "t"), created(), usage_event(usage(40, 8, 1)), usage_event(usage(90, 20, 2))]
            .into_iter()
            .chain((0..5).map(|_| delta("more")))
            .collect(),
    );
    // Killed while writing one more line: it is cut short and skipped, not a problem.
    let text = jsonl(&log) + r#"{"seq":9,"ts":"2026-11-25T09:25:03.1"#;
    write_log(findings.path(), "run-k", &text);
    let runs = list_runs(findings.path());
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.outcome, PastOutcome::Unfinished);
    assert_eq!(run.usage, usage(90, 20, 2));
    assert_eq!(run.elapsed_ms, Some(8), "nine events, one millisecond apart");
    assert_eq!(run.tasks, None);
    assert_eq!(run.problem, None);
    assert_eq!(run.task, "t");
}

#[test]
fn a_run_that_has_written_nothing_yet_is_unfinished() {
    let findings = tempfile::tempdir().unwrap();
    write_log(findings.path(), "run-empty", "");
    write_log(findings.path(), "run-started", &jsonl(&events(T0, vec![started("run-started", "t")])));
    // Killed while writing its very first line.
    write_log(findings.path(), "run-cut", r#"{"seq":0,"ts":"2026-11-25T09:25:03.120Z","type":"run_st"#);
    let runs = list_runs(findings.path());
    let summary: Vec<(&str, PastOutcome, Usage, Option<u64>)> =
        runs.iter().map(|run| (run.id.as_str(), run.outcome, run.usage, run.elapsed_ms)).collect();
    assert_eq!(
        summary,
        vec![
            ("run-started", PastOutcome::Unfinished, Usage::default(), Some(0)),
            ("run-empty", PastOutcome::Unfinished, Usage::default(), None),
            ("run-cut", PastOutcome::Unfinished, Usage::default(), None),
        ]
    );
    let problems: Vec<Option<&str>> = runs.iter().map(|run| run.problem.as_deref()).collect();
    assert_eq!(problems[..2], [None, None]);
    assert!(problems[2].is_some_and(|problem| problem.contains("line 1: cut short")), "{problems:?}");
}

#[test]
fn a_corrupt_first_line_is_reported_and_the_rest_still_read() {
    let findings = tempfile::tempdir().unwrap();
    let mut log = completed_run("run-x", T0);
    log.remove(0);
    write_log(findings.path(), "run-x", &format!("this is not json\n{}", jsonl(&log)));
    let runs = list_runs(findings.path());
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.outcome, PastOutcome::Completed);
    assert_eq!(run.started, None);
    assert_eq!(run.experiment, "");
    let problem = run.problem.as_deref().unwrap_or_default();
    assert!(problem.contains(&run.dir.join(EVENTS_FILE).display().to_string()), "{problem}");
    assert!(problem.contains("line 1: not a troupe event"), "{problem}");
}

#[test]
fn a_log_with_nothing_readable_is_unreadable_and_the_other_runs_survive() {
    let findings = tempfile::tempdir().unwrap();
    write_log(findings.path(), "run-a", &jsonl(&completed_run("run-a", T0)));
    write_log(findings.path(), "garbage", "\u{0}\u{1}binary\nnot events either\n");
    // A log that is a directory cannot even be read.
    fs::create_dir_all(findings.path().join("run-dir").join(EVENTS_FILE)).unwrap();
    // A first line that is an event, but not the one a log starts with.
    let wrong = events(T0 + 5, vec![created(), finished(RunStatus::Completed, "Paris")]);
    write_log(findings.path(), "run-w", &jsonl(&wrong));
    let runs = list_runs(findings.path());
    let summary: Vec<(&str, PastOutcome)> = runs.iter().map(|run| (run.id.as_str(), run.outcome)).collect();
    assert_eq!(
        summary,
        vec![
            ("run-a", PastOutcome::Completed),
            ("run-w", PastOutcome::Completed),
            ("run-dir", PastOutcome::Unreadable),
            ("garbage", PastOutcome::Unreadable),
        ]
    );
    let problem = |id: &str| runs.iter().find(|run| run.id == id).and_then(|run| run.problem.clone());
    assert_eq!(problem("run-a"), None);
    let garbage = problem("garbage").unwrap_or_default();
    assert!(garbage.contains("garbage") && garbage.contains("line 1:"), "{garbage}");
    assert!(garbage.contains("line 2:"), "{garbage}");
    let dir = problem("run-dir").unwrap_or_default();
    assert!(dir.contains("run-dir") && dir.contains("is not a file"), "{dir}");
    let wrong = problem("run-w").unwrap_or_default();
    assert!(wrong.contains("expected run_started, found task_created"), "{wrong}");
}

#[test]
fn a_corrupt_line_in_the_tail_of_a_long_log_is_counted_from_the_end() {
    let findings = tempfile::tempdir().unwrap();
    let filler: Vec<EventBody> = (0..2_000).map(|i| delta(&format!("token {i} of a long stream"))).collect();
    let mut bodies = vec![started("run-t", "t")];
    bodies.extend(filler);
    bodies.push(usage_event(usage(7, 3, 1)));
    let mut text = jsonl(&events(T0, bodies));
    assert!(text.len() as u64 > TAIL_WINDOW);
    text.push_str("{broken\n");
    text.push_str(&jsonl(&events(T0 + 5_000, vec![delta("after")])));
    write_log(findings.path(), "run-t", &text);
    let runs = list_runs(findings.path());
    let run = &runs[0];
    assert_eq!(run.outcome, PastOutcome::Unfinished);
    assert_eq!(run.usage, usage(7, 3, 1));
    assert_eq!(run.elapsed_ms, Some(5_000));
    let problem = run.problem.as_deref().unwrap_or_default();
    let offset = text.find("{broken").unwrap_or_default();
    assert!(problem.contains(&format!("line 2 from the end (byte {offset})")), "{problem}");
}

#[test]
fn a_long_log_yields_its_run_finished_from_the_tail() {
    let findings = tempfile::tempdir().unwrap();
    let mut bodies = vec![started("run-long", "t"), created()];
    bodies.extend((0..3_000).map(|i| delta(&format!("token {i} of a long stream"))));
    bodies.push(finished(RunStatus::Completed, "Paris"));
    let text = jsonl(&events(T0, bodies));
    assert!(text.len() as u64 > 2 * TAIL_WINDOW);
    write_log(findings.path(), "run-long", &text);
    let run = &list_runs(findings.path())[0];
    assert_eq!((run.outcome, run.usage, run.elapsed_ms), (PastOutcome::Completed, usage(120, 30, 2), Some(1_500)));
    assert_eq!(run.started, Some(T0));
    assert_eq!(run.problem, None);
}

#[test]
fn the_window_widens_for_a_far_usage_event_and_a_huge_last_line() {
    let findings = tempfile::tempdir().unwrap();
    // Killed while streaming a long answer: the last usage is more than a window back.
    let mut bodies = vec![started("run-stream", "t"), usage_event(usage(50, 10, 1))];
    bodies.extend((0..4_000).map(|i| delta(&format!("token {i} of a long stream"))));
    let stream = jsonl(&events(T0, bodies));
    assert!(stream.len() as u64 > 2 * TAIL_WINDOW);
    write_log(findings.path(), "run-stream", &stream);
    // A run whose final answer alone is longer than the first window.
    let answer = "Paris. ".repeat(20_000);
    let huge = jsonl(&events(T0 + 1, vec![started("run-huge", "t"), finished(RunStatus::Failed, &answer)]));
    write_log(findings.path(), "run-huge", &huge);
    let runs = list_runs(findings.path());
    let summary: Vec<(&str, PastOutcome, Usage)> =
        runs.iter().map(|run| (run.id.as_str(), run.outcome, run.usage)).collect();
    assert_eq!(
        summary,
        vec![
            ("run-huge", PastOutcome::Failed, usage(120, 30, 2)),
            ("run-stream", PastOutcome::Unfinished, usage(50, 10, 1)),
        ]
    );
    assert!(runs.iter().all(|run| run.problem.is_none()), "{runs:?}");
}

#[test]
fn a_missing_findings_directory_lists_nothing() {
    let findings = tempfile::tempdir().unwrap();
    assert_eq!(list_runs(&findings.path().join("findings")), Vec::<PastRun>::new());
    assert_eq!(list_runs(findings.path()), Vec::<PastRun>::new());
}

#[test]
fn only_folders_with_a_log_are_runs_and_the_newest_comes_first() {
    let findings = tempfile::tempdir().unwrap();
    // Ids that sort against their start times, to show the start time decides.
    write_log(findings.path(), "b-oldest", &jsonl(&completed_run("b-oldest", T0)));
    write_log(findings.path(), "a-newest", &jsonl(&completed_run("a-newest", T0 + 60_000)));
    write_log(findings.path(), "c-middle", &jsonl(&completed_run("c-middle", T0 + 30_000)));
    // Same start: the larger id first, as run ids begin with their time.
    write_log(findings.path(), "d-tie", &jsonl(&completed_run("d-tie", T0 + 30_000)));
    write_log(findings.path(), "z-no-start", "not an event\n");
    fs::create_dir_all(findings.path().join("no-log")).unwrap();
    fs::write(findings.path().join("no-log").join("notes.md"), "notes").unwrap();
    // What a matrix folder holds besides its `matrix.json` is not enough to make it one.
    fs::create_dir_all(findings.path().join("no-plan")).unwrap();
    fs::write(findings.path().join("no-plan").join(store::TRIALS_FILE), "").unwrap();
    fs::write(findings.path().join("no-plan").join(store::SUMMARY_FILE), "{}").unwrap();
    fs::write(findings.path().join("README.md"), "a file, not a run").unwrap();
    let ids: Vec<String> = list_runs(findings.path()).into_iter().map(|run| run.id).collect();
    assert_eq!(ids, vec!["a-newest", "d-tie", "c-middle", "b-oldest", "z-no-start"]);
}

// ---------------------------------------------------------------------------------------
// Matrix folders.

use crate::experiment::plan::{Shard, TrialSpec};
use crate::experiment::record::{MatrixInfo, TrialRecord};
use crate::experiment::store::{MatrixFile, TrialLog};

/// Two tasks × two variants × one repetition: four trials, pairs by task.
fn matrix_file(run_id: &str, shard: Option<Shard>) -> MatrixFile {
    let mut trials = Vec::new();
    for (pair, task) in ["t1", "t2"].into_iter().enumerate() {
        for variant in ["solo", "team"] {
            trials.push(TrialSpec {
                index: trials.len() as u32,
                pair: pair as u32,
                key: format!("{variant}/{task}/1"),
                variant: variant.into(),
                task_id: task.into(),
                repetition: 1,
                seed: 7,
                folder: format!("trials/{variant}--{task}--r1"),
            });
        }
    }
    MatrixFile {
        format: store::FORMAT,
        run_id: run_id.into(),
        experiment_file: "experiments/duo.toml".into(),
        info: MatrixInfo {
            experiment: "duo".into(),
            variants: vec!["solo".into(), "team".into()],
            baseline: "solo".into(),
            tasks: vec!["t1".into(), "t2".into()],
            repetitions: 1,
            trials: 4,
            checks: Vec::new(),
        },
        shard,
        trials,
        troupe_version: "0.1.0".into(),
    }
}

fn trial_record(spec: &TrialSpec, pass: bool) -> TrialRecord {
    TrialRecord {
        index: spec.index,
        key: spec.key.clone(),
        variant: spec.variant.clone(),
        task_id: spec.task_id.clone(),
        repetition: spec.repetition,
        seed: spec.seed,
        status: "completed".into(),
        pass,
        score: if pass { 1.0 } else { 0.0 },
        checks: Vec::new(),
        input_tokens: 100,
        output_tokens: 20,
        cost: None,
        wall_ms: 1_000,
        subtasks: 1,
        depth: 1,
        tool_errors: 0,
        limit_hits: 0,
        turns: 3,
        answer: Some("Paris".into()),
        error: None,
        folder: spec.folder.clone(),
    }
}

/// Writes a matrix folder `findings/id` with `matrix` and a record of each of `passes`'
/// first trials.
fn write_matrix_folder(findings: &Path, id: &str, matrix: &MatrixFile, passes: &[bool]) -> PathBuf {
    let dir = findings.join(id);
    fs::create_dir_all(&dir).unwrap();
    store::write_matrix(&dir, matrix).unwrap();
    let mut log = TrialLog::open(&dir).unwrap();
    for (spec, &pass) in matrix.trials.iter().zip(passes) {
        log.append(&trial_record(spec, pass)).unwrap();
    }
    dir
}

#[test]
fn a_matrix_folder_is_listed_with_its_counts_among_the_runs() {
    let findings = tempfile::tempdir().unwrap();
    let id = "20261125-093000-duo-00aa"; // T0's minute, 5 minutes later
    let dir = write_matrix_folder(findings.path(), id, &matrix_file(id, None), &[true, false, true, true]);
    write_log(findings.path(), "run-a", &jsonl(&completed_run("run-a", T0)));
    // Killed after one trial; a shard's share is its pairs only.
    let shard = Some(Shard { index: 2, count: 2 });
    let old = "20261124-080000-duo-00bb";
    write_matrix_folder(findings.path(), old, &matrix_file(old, shard), &[]);
    let mut log = TrialLog::open(&findings.path().join(old)).unwrap();
    log.append(&trial_record(&matrix_file(old, shard).trials[2], false)).unwrap();

    let runs = list_runs(findings.path());
    let ids: Vec<&str> = runs.iter().map(|run| run.id.as_str()).collect();
    assert_eq!(ids, [id, "run-a", old], "newest first, matrices among the runs");
    assert_eq!(
        runs[0],
        PastRun {
            id: id.into(),
            dir,
            started: Some(T0 - 3_120 + 5 * 60_000),
            experiment: "duo".into(),
            root_agent: String::new(),
            task: "2 tasks × 2 variants × 1 repetition".into(),
            outcome: PastOutcome::Completed,
            usage: usage(400, 80, 12),
            elapsed_ms: None,
            tasks: None,
            problem: None,
            matrix: Some(MatrixBrief {
                planned: 4,
                recorded: 4,
                passed: 3,
                variants: vec!["solo".into(), "team".into()]
            }),
        }
    );
    let sharded = &runs[2];
    assert_eq!(sharded.outcome, PastOutcome::Unfinished);
    assert_eq!(sharded.task, "2 tasks × 2 variants × 1 repetition (shard 2/2)");
    assert_eq!(sharded.matrix.as_ref().map(|m| (m.planned, m.recorded, m.passed)), Some((2, 1, 0)));
    assert_eq!(sharded.problem, None);
}

#[test]
fn a_damaged_trials_file_is_a_row_with_a_problem_naming_it() {
    let findings = tempfile::tempdir().unwrap();
    let id = "20261125-093000-duo-00aa";
    let dir = write_matrix_folder(findings.path(), id, &matrix_file(id, None), &[true]);
    let trials = dir.join(store::TRIALS_FILE);
    let mut text = fs::read_to_string(&trials).unwrap();
    text.push_str("{\"index\": \"not a number\"}\n");
    text.push_str(&serde_json::to_string(&trial_record(&matrix_file(id, None).trials[1], true)).unwrap());
    text.push('\n');
    fs::write(&trials, text).unwrap();
    // A second matrix whose plan is not JSON at all.
    let broken = findings.path().join("20261125-100000-duo-00cc");
    fs::create_dir_all(&broken).unwrap();
    fs::write(broken.join(MATRIX_FILE), "{ not json").unwrap();

    let runs = list_runs(findings.path());
    assert_eq!(runs.len(), 2);
    let plan = &runs[0];
    assert_eq!((plan.outcome, plan.experiment.as_str()), (PastOutcome::Unreadable, ""));
    let problem = plan.problem.as_deref().unwrap_or_default();
    assert!(problem.contains(&broken.join(MATRIX_FILE).display().to_string()), "{problem}");
    assert!(plan.matrix.is_some(), "still a matrix row");

    let row = &runs[1];
    assert_eq!(row.outcome, PastOutcome::Unreadable);
    assert_eq!(row.experiment, "duo", "what matrix.json says is kept");
    assert_eq!(row.matrix.as_ref().map(|m| (m.planned, m.recorded)), Some((4, 0)));
    let problem = row.problem.as_deref().unwrap_or_default();
    assert!(problem.contains(&format!("{}, line 2", trials.display())), "{problem}");
}

#[test]
fn run_ids_give_their_start_time_to_the_second() {
    for now in [T0, 0, 951_782_400_000, 978_307_199_999, 4_102_444_800_000] {
        let id = crate::findings::new_run_id("duo", now, 0xabcd);
        assert_eq!(started_from_id(&id), Some(now / 1000 * 1000), "{id}");
    }
    assert_eq!(started_from_id("20261125-092503"), Some(T0 / 1000 * 1000), "nothing after the time");
    for bad in ["", "run-a", "20261125-0925", "20261125_092503-x", "20260230-000000-x", "20261125-246000-x"] {
        assert_eq!(started_from_id(bad), None, "{bad}");
    }
    assert_eq!(started_from_id("20261125-0925031-x"), None, "a longer time is not one");
    assert_eq!(started_from_id("19691231-235959-x"), None, "before the epoch");
}

#[test]
fn a_renamed_matrix_folder_takes_its_start_from_matrix_json() {
    let findings = tempfile::tempdir().unwrap();
    let dir = write_matrix_folder(findings.path(), "my-matrix", &matrix_file("x", None), &[]);
    let written = modified_millis(&dir.join(MATRIX_FILE));
    assert!(written.is_some());
    let runs = list_runs(findings.path());
    assert_eq!((runs[0].started, runs[0].outcome), (written, PastOutcome::Unfinished));
}

#[test]
fn the_runs_that_recalled_an_item_are_found_in_runs_and_trials_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let findings = dir.path();
    let recalled = |ids: &[i64]| EventBody::MemoryRecalled {
        uri: root(),
        lessons: ids
            .iter()
            .map(|&id| crate::protocol::RecalledLesson { id, score: 0.5, text: format!("lesson {id}") })
            .collect(),
        error: None,
    };
    let run = |id: &str, ids: &[i64]| jsonl(&events(T0, vec![started(id, "t"), created(), recalled(ids)]));
    write_log(findings, "20261124-100000-a-0001", &run("a", &[7, 9]));
    write_log(findings, "20261125-100000-b-0002", &run("b", &[9]));
    write_log(findings, "20261125-110000-c-0003", &run("c", &[7]));
    let matrix = findings.join("20261125-120000-m-0004");
    write_log(&matrix.join("trials"), "solo--t1--r1", &run("m1", &[7]));
    write_log(&matrix.join("trials"), "solo--t1--r2", &run("m2", &[8]));
    // A run whose log mentions the id elsewhere only, and a torn line.
    write_log(
        findings,
        "20261125-130000-d-0005",
        &(jsonl(&events(T0, vec![started("d", "lesson 7")])) + "{\"seq\":1,\"type\":\"memory_recalled"),
    );

    assert_eq!(
        runs_recalling(findings, 7),
        ["20261125-120000-m-0004--solo--t1--r1", "20261125-110000-c-0003", "20261124-100000-a-0001"]
    );
    assert_eq!(runs_recalling(findings, 8), ["20261125-120000-m-0004--solo--t1--r2"]);
    assert!(runs_recalling(findings, 1).is_empty());
    assert!(runs_recalling(&findings.join("missing"), 7).is_empty());
}
