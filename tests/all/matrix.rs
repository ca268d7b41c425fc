//! Matrices of trials through the `troupe` binary, on scripted models: the records a matrix
//! writes, sharding and merging, `--resume` after `kill -9`, and checks on a run of one trial.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::Value;
use troupe::experiment::record::TrialRecord;

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

/// A solver answers "Answer: <its task>" on the `good` model and "I do not know" on `bad`;
/// the tasks' inputs are their expected answers, so a `contains` check passes exactly on `good`.
fn workbench(delay_ms: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, String)> = vec![
        (
            "troupe.toml",
            "[models.good]\nprovider = \"scripted\"\nscript = \"scripts/good.toml\"\n\n[models.bad]\nprovider = \"scripted\"\nscript = \"scripts/bad.toml\"\n\n[models.judge]\nprovider = \"scripted\"\nscript = \"scripts/judge.toml\"\n".into(),
        ),
        ("agents/solver.toml", "model = \"good\"\nsystem_prompt = \"Answer.\"\n".into()),
        (
            "scripts/good.toml",
            format!("[[conversation]]\nrepeat = true\n[[conversation.turn]]\ndelay_ms = {delay_ms}\ntext = \"Answer: {{{{task}}}}\"\n"),
        ),
        (
            "scripts/bad.toml",
            format!("[[conversation]]\nrepeat = true\n[[conversation.turn]]\ndelay_ms = {delay_ms}\ntext = \"I do not know.\"\n"),
        ),
        ("scripts/judge.toml", "[[conversation]]\nrepeat = true\n[[conversation.turn]]\ntext = \"banana\"\n".into()),
        (
            "experiments/m.toml",
            r#"root = "solver"
repetitions = 2
concurrency = 2
tasks = [
  { input = "41", expected = "41", id = "a" },
  { input = "42", expected = "42", id = "b" },
  { input = "43", expected = "43", id = "c" },
]

[[variants]]
name = "good"

[[variants]]
name = "bad"
[variants.agents.solver]
model = "bad"

[[checks]]
type = "contains"

[[checks]]
type = "exec"
command = "grep -q Answer"
"#
            .into(),
        ),
        (
            "experiments/judged.toml",
            r#"root = "solver"
task = "42"

[[checks]]
type = "regex"
pattern = 'Answer: \d+'

[[checks]]
type = "judge"
name = "graded"
model = "judge"
rubric = "Pass if the answer is a number."
"#
            .into(),
        ),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn troupe(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--root").arg(root).args(args).stdin(Stdio::null()).output().unwrap()
}

fn folder(output: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "troupe failed: {stderr}");
    PathBuf::from(stdout.lines().last().unwrap_or_else(|| panic!("no stdout; stderr: {stderr}")))
}

fn records(dir: &Path) -> Vec<TrialRecord> {
    let text = fs::read_to_string(dir.join("trials.jsonl")).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// `summary.json` without what depends on the machine's speed.
fn summary_without_timing(dir: &Path) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|_, v| v.get("metric").and_then(Value::as_str) != Some("wall_seconds"));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => {
                items.retain(|v| v.get("metric").and_then(Value::as_str) != Some("wall_seconds"));
                items.iter_mut().for_each(strip);
            }
            _ => {}
        }
    }
    let mut summary: Value = serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    strip(&mut summary);
    summary
}

#[test]
fn a_matrix_records_every_trial_scores_it_and_compares_the_variants() {
    let wb = workbench(0);
    let output = troupe(wb.path(), &["run", "m"]);
    let dir = folder(&output);
    let records = records(&dir);
    assert_eq!(records.len(), 12, "2 variants × 3 tasks × 2 repetitions");
    let keys: BTreeSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), 12);
    for record in &records {
        assert_eq!(record.status, "completed", "{record:?}");
        assert_eq!(record.pass, record.variant == "good", "{record:?}");
        let expected_score = if record.variant == "good" { 1.0 } else { 0.0 };
        assert_eq!(record.score, expected_score, "both checks pass on good, both fail on bad: {record:?}");
        assert_eq!(record.checks.len(), 2);
        assert!(record.tokens() > 0);
        assert!(dir.join(&record.folder).join("events.jsonl").is_file(), "each trial has its run folder");
        assert!(dir.join(&record.folder).join("transcript.md").is_file());
    }
    // Paired: the variants of one task and repetition share a seed; repetitions differ.
    let mut seeds: BTreeMap<(&str, u32), BTreeSet<u64>> = BTreeMap::new();
    for record in &records {
        seeds.entry((record.task_id.as_str(), record.repetition)).or_default().insert(record.seed);
    }
    assert!(seeds.values().all(|s| s.len() == 1), "{seeds:?}");
    assert_eq!(seeds.values().flatten().collect::<BTreeSet<_>>().len(), 6);
    // The answer reached the check through the trial's own task.
    let good_b = records.iter().find(|r| r.key == "good/b/1").unwrap();
    assert_eq!(good_b.answer.as_deref(), Some("Answer: 42"));

    let summary: Value = serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let passed: Vec<u64> =
        summary["variants"].as_array().unwrap().iter().map(|v| v["passed"].as_u64().unwrap()).collect();
    assert_eq!(passed, [6, 0]);
    let report = fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("`good` passed 6 that `bad` failed") || report.contains("`bad` passed 0"), "{report}");
    assert!(report.contains("p = 0.031"), "exact McNemar, 6 discordant pairs: {report}");
    for chart in ["charts/pass_rate.svg", "charts/tokens.svg"] {
        let svg = fs::read_to_string(dir.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("good") && !svg.contains("NaN"), "{chart}");
    }
    assert!(dir.join("config/experiments/m.toml").is_file(), "the matrix keeps its configuration");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("good: 6/6 passed"), "{stderr}");
}

#[test]
fn two_shards_merged_equal_the_matrix_run_on_one_machine() {
    let wb = workbench(0);
    let whole = folder(&troupe(wb.path(), &["run", "m"]));
    let first = folder(&troupe(wb.path(), &["run", "m", "--shard", "1/2"]));
    let second = folder(&troupe(wb.path(), &["run", "m", "--shard", "2/2"]));
    let (a, b) = (records(&first), records(&second));
    assert_eq!((a.len(), b.len()), (6, 6));
    // Two variants: a pair is two neighbouring indexes, and pairs alternate between the shards.
    assert!(a.iter().all(|r| (r.index / 2) % 2 == 0) && b.iter().all(|r| (r.index / 2) % 2 == 1));
    for shard in [&first, &second] {
        let report = fs::read_to_string(shard.join("report.md")).unwrap();
        assert!(report.contains("p = "), "each shard compares its own pairs: {report}");
    }

    let merged = folder(&troupe(wb.path(), &["merge", first.to_str().unwrap(), second.to_str().unwrap()]));
    // In matrix order (a log is in the order trials finished), without the machine's speed.
    let strip = |records: Vec<TrialRecord>| -> Vec<TrialRecord> {
        let mut records: Vec<TrialRecord> = records.into_iter().map(|r| TrialRecord { wall_ms: 0, ..r }).collect();
        records.sort_by_key(|r| r.index);
        records
    };
    assert_eq!(strip(records(&merged)), strip(records(&whole)));
    assert_eq!(summary_without_timing(&merged), summary_without_timing(&whole));
    for record in records(&merged) {
        assert!(merged.join(&record.folder).join("events.jsonl").is_file(), "trial folders are copied");
    }

    // Folders of different matrices do not merge.
    let single = folder(&troupe(wb.path(), &["run", "judged"]));
    let refused = troupe(wb.path(), &["merge", first.to_str().unwrap(), single.to_str().unwrap()]);
    assert!(!refused.status.success());
}

#[test]
fn resume_after_kill_runs_only_the_trials_not_recorded() {
    let wb = workbench(150);
    fs::write(
        wb.path().join("experiments/m.toml"),
        fs::read_to_string(wb.path().join("experiments/m.toml")).unwrap().replace("concurrency = 2", "concurrency = 1"),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--root")
        .arg(wb.path())
        .args(["run", "m"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let findings = wb.path().join("findings");
    let deadline = Instant::now() + Duration::from_secs(120);
    let dir = loop {
        let dir = fs::read_dir(&findings).ok().and_then(|mut d| d.next()).map(|e| e.unwrap().path());
        if let Some(dir) = dir.filter(|d| d.join("trials.jsonl").is_file())
            && fs::read_to_string(dir.join("trials.jsonl")).unwrap().lines().count() >= 3
        {
            break dir;
        }
        assert!(Instant::now() < deadline, "no trials recorded in time");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = records(&dir);
    assert!(before.len() >= 3 && before.len() < 12, "killed mid-matrix: {}", before.len());
    let kept: BTreeMap<String, Vec<u8>> =
        before.iter().map(|r| (r.key.clone(), fs::read(dir.join(&r.folder).join("events.jsonl")).unwrap())).collect();

    let output = troupe(wb.path(), &["run", "--resume", dir.to_str().unwrap()]);
    assert_eq!(folder(&output), dir);
    let after = records(&dir);
    let keys: Vec<&str> = after.iter().map(|r| r.key.as_str()).collect();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!((keys.len(), unique.len()), (12, 12), "every trial exactly once: {keys:?}");
    for (key, events) in &kept {
        let record = after.iter().find(|r| &r.key == key).unwrap();
        assert_eq!(
            &fs::read(dir.join(&record.folder).join("events.jsonl")).unwrap(),
            events,
            "{key} was not run again"
        );
    }
    let report = fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("12 of 12") || !report.contains("missing"), "{report}");

    // Once every trial is recorded there is nothing left to do.
    let again = troupe(wb.path(), &["run", "--resume", dir.to_str().unwrap()]);
    assert_eq!(records(&folder(&again)).len(), 12);
}

#[test]
fn a_run_of_one_trial_is_scored_and_a_garbage_verdict_is_a_failed_check() {
    let wb = workbench(0);
    let output = troupe(wb.path(), &["run", "judged"]);
    let dir = folder(&output);
    assert!(dir.join("events.jsonl").is_file(), "one trial keeps the plain run layout");
    let records = records(&dir);
    assert_eq!(records.len(), 1);
    let checks = &records[0].checks;
    assert_eq!(
        checks.iter().map(|c| (c.name.as_str(), c.pass)).collect::<Vec<_>>(),
        [("regex-1", true), ("graded", false)]
    );
    assert!(checks[1].detail.contains("banana"), "the judge's garbage is quoted: {}", checks[1].detail);
    let report = fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("## Checks") && report.contains("1 of 2 passed"), "{report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("check FAIL graded"), "{stderr}");
}

#[test]
fn resume_refuses_a_matrix_whose_files_changed() {
    let wb = workbench(0);
    let dir = folder(&troupe(wb.path(), &["run", "m", "--shard", "1/2"]));
    fs::write(wb.path().join("agents/solver.toml"), "model = \"good\"\nsystem_prompt = \"Answer briefly.\"\n").unwrap();
    let output = troupe(wb.path(), &["run", "--resume", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("agents/solver.toml") && stderr.contains("changed"), "{stderr}");
    assert_eq!(records(&dir).len(), 6, "nothing was run or lost");
}

#[test]
fn a_fork_re_runs_a_subtree_beside_the_original() {
    // The shipped workbench's scripted smoke run: a coordinator delegates to a researcher, who
    // delegates to a summarizer.
    let wb = crate::cli::workbench();
    let run = folder(&troupe(wb.path(), &["run", "smoke"]));
    let (events, _) = troupe::findings::read_events(&run.join("events.jsonl")).unwrap();
    let researcher = events
        .iter()
        .find_map(|e| match &e.body {
            troupe::protocol::EventBody::TaskCreated { uri, agent, .. } if agent == "researcher" => {
                Some(uri.to_string())
            }
            _ => None,
        })
        .unwrap();
    let output =
        troupe(wb.path(), &["fork", run.to_str().unwrap(), &researcher, "--agent", "summarizer", "--repetitions", "2"]);
    let dir = folder(&output);
    let records = records(&dir);
    let mut variants: Vec<(String, u32)> = records.iter().map(|r| (r.variant.clone(), r.repetition)).collect();
    variants.sort();
    assert_eq!(variants, [("forked".into(), 1), ("forked".into(), 2), ("original".into(), 1), ("original".into(), 2)]);
    // The original setup re-ran the researcher's subtree: it delegated to the summarizer again.
    let original = records.iter().find(|r| r.variant == "original").unwrap();
    assert_eq!((original.status.as_str(), original.subtasks), ("completed", 1), "{original:?}");
    let forked = records.iter().find(|r| r.variant == "forked").unwrap();
    assert_eq!(forked.subtasks, 0, "the summarizer delegates to no one: {forked:?}");
    let (trial_events, _) = troupe::findings::read_events(&dir.join(&original.folder).join("events.jsonl")).unwrap();
    let task = trial_events.iter().find_map(|e| match &e.body {
        troupe::protocol::EventBody::RunStarted { task, .. } => Some(task.clone()),
        _ => None,
    });
    let recorded_task = events.iter().find_map(|e| match &e.body {
        troupe::protocol::EventBody::TaskCreated { uri, task, .. } if uri.to_string() == researcher => {
            Some(task.clone())
        }
        _ => None,
    });
    assert_eq!(task, recorded_task, "the re-run starts from the task the parent wrote");
    let report = fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("## Original and re-runs") && report.contains("original (recorded)"), "{report}");
    let fork: Value = serde_json::from_str(&fs::read_to_string(dir.join("fork.json")).unwrap()).unwrap();
    assert_eq!(fork["uri"], researcher.as_str());
    assert_eq!(fork["agent"], "researcher");

    let unknown = troupe(wb.path(), &["fork", run.to_str().unwrap(), "subtask://nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("researcher"), "the error lists the run's subtasks");
}

#[test]
fn an_exec_check_sees_a_variable_of_troupes_environment_only_when_its_env_lists_it() {
    let wb = workbench(0);
    fs::write(
        wb.path().join("experiments/env.toml"),
        r#"root = "solver"
task = "42"

[[checks]]
name = "unlisted"
type = "exec"
command = 'test -z "$SECRET_X" && test -n "$PATH" && test -n "$TROUPE_TASK"'

[[checks]]
name = "listed"
type = "exec"
command = 'test "$SECRET_X" = "not-for-model-answers"'
env = ["SECRET_X"]
"#,
    )
    .unwrap();
    let output = Command::new(BIN)
        .arg("--root")
        .arg(wb.path())
        .args(["run", "env"])
        .env("SECRET_X", "not-for-model-answers")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let records = records(&folder(&output));
    let checks: Vec<(&str, bool, &str)> =
        records[0].checks.iter().map(|c| (c.name.as_str(), c.pass, c.detail.as_str())).collect();
    assert_eq!(checks, [("unlisted", true, "exit 0"), ("listed", true, "exit 0")]);
}
