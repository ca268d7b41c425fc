//! Tests of the experiment keys that make a matrix: tasks, datasets, repetitions, variants and
//! checks, with the exact diagnostics a user sees.

use pretty_assertions::assert_eq;

use super::tests::{MODELS, diagnostics, write};
use super::*;

const AGENTS: [(&str, &str); 2] = [
    ("agents/writer.toml", "model = \"small\"\n"),
    ("agents/host.toml", "model = \"small\"\ntools = [\"call_agent\"]\nexperts = [\"writer\"]\n"),
];

fn with_experiment(text: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut files = vec![("troupe.toml", MODELS), ("experiments/e.toml", text)];
    files.extend(AGENTS);
    files
}

#[test]
fn a_full_matrix_experiment_loads() {
    let text = r#"
root = "host"
repetitions = 3
baseline = "experts"
concurrency = 2

[[tasks]]
input = "What is 6 times 7?"
expected = 42
id = "mul"

[[tasks]]
input = "Capital of France?"
expected = "Paris"

[[variants]]
name = "inherit"

[[variants]]
name = "experts"
root = "writer"
[variants.agents.host]
model = "slm"
temperature = 0.7
tools = ["call_agent", "get_task_status"]
[variants.limits]
max_depth = 1

[[checks]]
type = "contains"

[[checks]]
type = "regex"
name = "has a digit"
pattern = '\d'

[[checks]]
type = "number"
tolerance = 0.5

[[checks]]
type = "json_schema"
schema = { type = "object", required = ["answer"] }

[[checks]]
type = "exec"
command = "grep -q 42"
env = ["GRADER_TOKEN", "LANG"]

[[checks]]
type = "judge"
model = "small"
rubric = "Pass if correct."
"#;
    let dir = write(&with_experiment(text));
    let loaded = load_workbench(dir.path());
    assert_eq!(shown_all(&loaded), Vec::<String>::new());
    let wb = loaded.workbench.unwrap();
    let e = &wb.experiments["e"];
    assert_eq!(e.repetitions, 3);
    assert_eq!(e.concurrency, Some(2));
    assert_eq!(e.baseline.as_deref(), Some("experts"));
    assert_eq!(
        e.tasks,
        vec![
            TaskSpec { id: "mul".into(), input: "What is 6 times 7?".into(), expected: Some("42".into()) },
            TaskSpec { id: "task-2".into(), input: "Capital of France?".into(), expected: Some("Paris".into()) },
        ]
    );
    let names: Vec<&str> = e.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["inherit", "experts"]);
    let experts = &e.variants[1];
    assert_eq!(experts.root.as_deref(), Some("writer"));
    assert_eq!(experts.limits.max_depth, Some(1));
    let patch = &experts.agents["host"];
    assert_eq!(patch.model.as_deref(), Some("slm"));
    assert_eq!(patch.temperature, Some(0.7));
    let patched = patch.apply(&wb.agents["host"]);
    assert_eq!(
        (patched.model.as_str(), patched.tools.len(), patched.experts.clone()),
        ("slm", 2, vec!["writer".to_owned()])
    );
    let kinds: Vec<&str> = e.checks.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["contains", "regex", "number", "json_schema", "exec", "judge"]);
    assert_eq!(e.checks[1].name, "has a digit");
    assert_eq!(e.checks[0].name, "contains-1");
    assert_eq!(
        e.checks[4].kind,
        CheckKind::Exec {
            command: vec!["sh".into(), "-c".into(), "grep -q 42".into()],
            timeout_seconds: 60,
            cwd: dir.path().join("experiments"),
            env: vec!["GRADER_TOKEN".into(), "LANG".into()],
        }
    );
    assert_eq!(
        e.checks[3].kind,
        CheckKind::JsonSchema { schema: serde_json::json!({"type": "object", "required": ["answer"]}) }
    );
}

fn shown_all(loaded: &Loaded) -> Vec<String> {
    loaded.diagnostics.iter().map(|d| d.to_string()).collect()
}

#[test]
fn a_dataset_is_read_line_by_line() {
    let mut files = with_experiment("root = \"host\"\ndataset = \"data/tasks.jsonl\"\n");
    files.push((
        "experiments/data/tasks.jsonl",
        "{\"input\": \"one\", \"expected\": \"1\", \"id\": \"a\"}\n\n{\"input\": \"two\", \"expected\": 2}\n",
    ));
    let dir = write(&files);
    let loaded = load_workbench(dir.path());
    let wb = loaded.workbench.unwrap();
    let e = &wb.experiments["e"];
    assert_eq!(
        e.tasks,
        vec![
            TaskSpec { id: "a".into(), input: "one".into(), expected: Some("1".into()) },
            TaskSpec { id: "line-3".into(), input: "two".into(), expected: Some("2".into()) },
        ]
    );
    assert_eq!(e.dataset, Some(dir.path().join("experiments/data/tasks.jsonl")));
    assert!(wb.files().contains(&dir.path().join("experiments/data/tasks.jsonl")), "the dataset is snapshotted");
}

/// A case's name, its files, and the diagnostics expected.
type Case = (&'static str, Vec<(&'static str, &'static str)>, Vec<&'static str>);

#[test]
fn matrix_mistakes_are_diagnosed_where_they_are() {
    let cases: Vec<Case> = vec![
        (
            "a dataset line that is not JSON",
            {
                let mut f = with_experiment("root = \"host\"\ndataset = \"t.jsonl\"\n");
                f.push(("experiments/t.jsonl", "{\"input\": \"ok\"}\n{\"input\": oops}\n"));
                f
            },
            vec![
                "<root>/experiments/t.jsonl:2:11: error: dataset line is not JSON: expected value\n  = hint: each line is a JSON object like {\"input\": \"What is 6 × 7?\", \"expected\": \"42\"}",
            ],
        ),
        (
            "two ways of giving tasks",
            with_experiment("root = \"host\"\ntask = \"a\"\ntasks = [\"b\"]\n"),
            vec![
                "<root>/experiments/e.toml:3:9: error: `tasks` and `task` both give the tasks: keep one\n  = hint: use `task` for one task, [[tasks]] for a few, `dataset` for a JSON-lines file",
            ],
        ),
        (
            "an override naming an unknown agent",
            with_experiment(
                "root = \"host\"\ntask = \"a\"\n[[variants]]\nname = \"v\"\n[variants.agents.hots]\nmodel = \"small\"\n",
            ),
            vec![
                "<root>/experiments/e.toml:5:18: error: variant `v` names unknown agent `hots`\n  = hint: did you mean `host`?",
            ],
        ),
        (
            "an override naming an unknown field",
            with_experiment(
                "root = \"host\"\ntask = \"a\"\n[[variants]]\nname = \"v\"\n[variants.agents.host]\nmodle = \"small\"\n",
            ),
            vec!["<root>/experiments/e.toml:6:1: error: unknown key `modle`\n  = hint: did you mean `model`?"],
        ),
        (
            "an override naming an unknown alias",
            with_experiment(
                "root = \"host\"\ntask = \"a\"\n[[variants]]\nname = \"v\"\n[variants.agents.host]\nmodel = \"huge\"\n",
            ),
            vec![
                "<root>/experiments/e.toml:6:9: error: variant `v` names unknown model alias `huge`\n  = hint: known aliases: slm, small",
            ],
        ),
        (
            "a check of an unknown type",
            with_experiment("root = \"host\"\ntask = \"a\"\n[[checks]]\ntype = \"containz\"\nvalue = \"x\"\n"),
            vec![
                "<root>/experiments/e.toml:4:8: error: `type` must be one of `contains`, `regex`, `equals`, `number`, `json_schema`, `exec`, `judge`, found `containz`\n  = hint: did you mean `contains`?",
            ],
        ),
        (
            "a key another check type uses",
            with_experiment(
                "root = \"host\"\ntask = \"a\"\n[[checks]]\ntype = \"contains\"\nvalue = \"x\"\npattern = \"y\"\n",
            ),
            vec![
                "<root>/experiments/e.toml:6:1: error: `pattern` does not apply to a `contains` check\n  = hint: a `contains` check uses `value`, `case_sensitive`",
            ],
        ),
        (
            "a bad regular expression",
            with_experiment("root = \"host\"\ntask = \"a\"\n[[checks]]\ntype = \"regex\"\npattern = \"(unclosed\"\n"),
            vec![
                "<root>/experiments/e.toml:5:11: error: `pattern` is not a valid regular expression: error: unclosed group\n  = hint: for example: pattern = '^\\d+$'",
            ],
        ),
        (
            "an exec check's env entry that is not a variable's name",
            with_experiment(
                "root = \"host\"\ntask = \"a\"\n[[checks]]\ntype = \"exec\"\ncommand = \"true\"\nenv = [\"OK_NAME\", \"NOT A NAME\", \"sk-proj-0123456789abcdefABCDEF\"]\n",
            ),
            vec![
                "<root>/experiments/e.toml:6:19: error: `env` lists `NOT A NAME`, which is not an environment variable's name\n  = hint: a name is letters, digits and `_`, not starting with a digit: env = [\"GRADER_TOKEN\"]",
                "<root>/experiments/e.toml:6:33: error: `env` lists names of environment variables, not their values\n  = hint: a name is letters, digits and `_`, not starting with a digit: env = [\"GRADER_TOKEN\"]",
            ],
        ),
        (
            "env on a check that runs no program",
            with_experiment(
                "root = \"host\"\ntask = \"a\"\n[[checks]]\ntype = \"contains\"\nvalue = \"x\"\nenv = [\"A\"]\n",
            ),
            vec![
                "<root>/experiments/e.toml:6:1: error: `env` does not apply to a `contains` check\n  = hint: a `contains` check uses `value`, `case_sensitive`",
            ],
        ),
        (
            "a baseline that is not a variant",
            with_experiment("root = \"host\"\ntask = \"a\"\nbaseline = \"expert\"\n[[variants]]\nname = \"experts\"\n"),
            vec![
                "<root>/experiments/e.toml:3:12: error: `baseline` names `expert`, which is not one of the variants\n  = hint: did you mean `experts`?",
            ],
        ),
        (
            "a check without value on tasks without expected",
            with_experiment("root = \"host\"\ntask = \"a\"\n[[checks]]\ntype = \"contains\"\n"),
            vec![
                "<root>/experiments/e.toml:3:1: warning: this check has no `value` and task-1 give no `expected`: it fails on them\n  = hint: add `value = \"…\"` to the check, or `expected` to each task",
            ],
        ),
        (
            "duplicate variant names",
            with_experiment("root = \"host\"\ntask = \"a\"\n[[variants]]\nname = \"v\"\n[[variants]]\nname = \"v\"\n"),
            vec![
                "<root>/experiments/e.toml:6:8: error: duplicate variant name `v`: already used at line 4\n  = hint: each variant needs its own `name`",
            ],
        ),
        (
            "no tasks at all",
            with_experiment("root = \"host\"\n"),
            vec![
                "<root>/experiments/e.toml:1:1: error: missing required key `task`\n  = hint: for example: task = \"Summarize the three main causes of inflation.\", or [[tasks]] tables, or dataset = \"tasks.jsonl\"",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, files, expected) in cases {
        let got = diagnostics(&files);
        if got != expected {
            failures.push(format!("{name}:\n  got:      {got:?}\n  expected: {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_dataset_shared_by_two_experiments_is_reported_once() {
    let mut files = with_experiment("root = \"host\"\ndataset = \"t.jsonl\"\n");
    files.push(("experiments/f.toml", "root = \"host\"\ndataset = \"t.jsonl\"\n"));
    files.push(("experiments/t.jsonl", "{\"input\": oops}\n"));
    let got = diagnostics(&files);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("<root>/experiments/t.jsonl:1:11: error: dataset line is not JSON"), "{got:?}");
}
