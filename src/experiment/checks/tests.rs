//! Tests of `experiment::checks`.

use super::*;
use crate::config::Location;
use crate::model::{ModelInfo, ModelStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

fn task(expected: Option<&str>) -> TaskSpec {
    TaskSpec { id: "t1".into(), input: "What is six times seven?".into(), expected: expected.map(str::to_owned) }
}

fn check(kind: CheckKind) -> CheckSpec {
    CheckSpec { name: format!("{}-1", kind.as_str()), kind, location: Location::default() }
}

fn text(kind: CheckKind, answer: &str, task: &TaskSpec) -> (bool, String) {
    match check_text(&kind, answer, task) {
        Some(outcome) => outcome,
        None => panic!("{} is a text check", kind.as_str()),
    }
}

fn contains(value: Option<&str>, case_sensitive: bool) -> CheckKind {
    CheckKind::Contains { value: value.map(str::to_owned), case_sensitive }
}

fn equals(value: Option<&str>, case_sensitive: bool) -> CheckKind {
    CheckKind::Equals { value: value.map(str::to_owned), case_sensitive }
}

#[test]
fn contains_ignores_case_unless_asked() {
    let t = task(None);
    assert!(text(contains(Some("paris"), false), "It is Paris.", &t).0);
    let (pass, detail) = text(contains(Some("paris"), true), "It is Paris.", &t);
    assert!(!pass);
    assert!(detail.contains("`paris`") && detail.contains("case-sensitive"), "{detail}");
    let (pass, detail) = text(contains(Some("London"), false), "It is Paris.", &t);
    assert!(!pass);
    assert!(detail.contains("`London`") && detail.contains("`It is Paris.`"), "{detail}");
}

#[test]
fn equals_trims_and_ignores_case_but_nothing_else() {
    let t = task(None);
    assert!(text(equals(Some("Paris"), false), "  paris\n", &t).0);
    assert!(!text(equals(Some("Paris"), true), "paris", &t).0);
    let (pass, detail) = text(equals(Some("Paris"), false), "Paris.", &t);
    assert!(!pass, "a trailing period is not forgiven");
    assert_eq!(detail, "expected `Paris`, found `Paris.`");
}

#[test]
fn a_missing_value_falls_back_to_the_tasks_expected() {
    let t = task(Some("42"));
    assert!(text(contains(None, false), "The answer is 42.", &t).0);
    assert!(!text(contains(None, false), "The answer is 41.", &t).0);
    assert!(text(equals(None, false), " 42 ", &t).0);
    assert!(text(CheckKind::Number { value: None, tolerance: 0.0 }, "so 42", &t).0);
}

#[test]
fn no_value_and_no_expected_fails_and_says_so() {
    let t = task(None);
    for kind in [contains(None, false), equals(None, false), CheckKind::Number { value: None, tolerance: 0.0 }] {
        let (pass, detail) = text(kind, "42", &t);
        assert!(!pass);
        assert!(detail.contains("no `expected`") && detail.contains("no `value`"), "{detail}");
    }
}

#[test]
fn regex_matches_and_a_bad_pattern_fails_the_check() {
    let t = task(None);
    let (pass, detail) = text(CheckKind::Regex { pattern: r"\b4\d\b".into() }, "maybe 42", &t);
    assert!(pass);
    assert!(detail.contains("`42`"), "{detail}");
    assert!(!text(CheckKind::Regex { pattern: r"^\d+$".into() }, "maybe 42", &t).0);
    let (pass, detail) = text(CheckKind::Regex { pattern: "(unclosed".into() }, "x", &t);
    assert!(!pass);
    assert!(detail.starts_with("bad pattern /(unclosed/"), "{detail}");
}

#[test]
fn numbers_are_the_last_in_the_answer() {
    assert_eq!(last_number("The answer is 1,234.5."), Some(1234.5));
    assert_eq!(last_number("-3"), Some(-3.0));
    assert_eq!(last_number("3 apples and 4 pears make 7"), Some(7.0));
    assert_eq!(last_number("growth of 12.5%"), Some(12.5));
    assert_eq!(last_number("it is -0.25, I think"), Some(-0.25));
    assert_eq!(last_number("pages 3-5"), Some(5.0), "a dash between numbers is no minus");
    assert_eq!(last_number("1,2,3"), Some(3.0));
    assert_eq!(last_number("about 1e3"), Some(1000.0));
    assert_eq!(last_number("no digits"), None);
}

#[test]
fn number_passes_within_tolerance() {
    let t = task(None);
    let (pass, detail) = text(CheckKind::Number { value: Some(42.0), tolerance: 0.5 }, "about 41.8", &t);
    assert!(pass);
    assert_eq!(detail, "expected 42 ± 0.5, found 41.8");
    let (pass, detail) = text(CheckKind::Number { value: Some(42.0), tolerance: 0.5 }, "about 41.4", &t);
    assert!(!pass);
    assert_eq!(detail, "expected 42 ± 0.5, found 41.4");
    assert!(text(CheckKind::Number { value: Some(1234.5), tolerance: 0.0 }, "The answer is 1,234.5.", &t).0);
    let (pass, detail) = text(CheckKind::Number { value: Some(1.0), tolerance: 0.0 }, "none", &t);
    assert!(!pass);
    assert!(detail.contains("found no number"), "{detail}");
    let (pass, detail) = text(CheckKind::Number { value: None, tolerance: 0.0 }, "7", &task(Some("seven")));
    assert!(!pass);
    assert!(detail.contains("is not a number"), "{detail}");
}

fn person_schema() -> CheckKind {
    CheckKind::JsonSchema {
        schema: serde_json::json!({
            "type": "object",
            "required": ["name", "age"],
            "properties": {
                "name": { "type": "string" },
                "age": { "type": "integer", "minimum": 0 },
                "tags": { "type": "array", "items": { "type": "string" } }
            }
        }),
    }
}

#[test]
fn json_schema_accepts_plain_fenced_and_embedded_json() {
    let t = task(None);
    let (pass, detail) = text(person_schema(), r#"{"name": "Ada", "age": 36}"#, &t);
    assert!(pass, "{detail}");
    let fenced = "Here you go:\n```json\n{\"name\": \"Ada\", \"age\": 36}\n```\nAnything else?";
    let (pass, detail) = text(person_schema(), fenced, &t);
    assert!(pass, "{detail}");
    assert!(detail.contains("```json block"), "{detail}");
    let (pass, detail) = text(person_schema(), r#"Sure: {"name": "Ada", "age": 36} is it."#, &t);
    assert!(pass, "{detail}");
}

#[test]
fn json_schema_names_the_first_error_with_its_pointer() {
    let t = task(None);
    let answer = "```json\n{\"name\": \"Ada\", \"age\": 36, \"tags\": [\"x\", 7]}\n```";
    let (pass, detail) = text(person_schema(), answer, &t);
    assert!(!pass);
    assert!(detail.contains("`/tags/1`") && detail.contains("string"), "{detail}");
    let (pass, detail) = text(person_schema(), r#"{"name": "Ada"}"#, &t);
    assert!(!pass);
    assert!(detail.contains("the root") && detail.contains("age"), "{detail}");
    let (pass, detail) = text(person_schema(), "no json here", &t);
    assert!(!pass);
    assert!(detail.contains("expected JSON"), "{detail}");
    let bad = CheckKind::JsonSchema { schema: serde_json::json!({ "type": "nonsense" }) };
    let (pass, detail) = text(bad, "{}", &t);
    assert!(!pass);
    assert!(detail.contains("schema is invalid"), "{detail}");
}

#[test]
fn exec_and_judge_are_not_text_checks() {
    let exec =
        CheckKind::Exec { command: vec!["true".into()], timeout_seconds: 1, cwd: PathBuf::from("/"), env: Vec::new() };
    assert_eq!(check_text(&exec, "x", &task(None)), None);
    let judge = CheckKind::Judge { model: "j".into(), rubric: "r".into() };
    assert_eq!(check_text(&judge, "x", &task(None)), None);
}

fn exec(script: &str, timeout_seconds: u64) -> CheckSpec {
    check(CheckKind::Exec {
        command: vec!["sh".into(), "-c".into(), script.into()],
        timeout_seconds,
        cwd: std::env::temp_dir(),
        env: Vec::new(),
    })
}

async fn one(check: CheckSpec, answer: Option<&str>, task: &TaskSpec, judge: &dyn JudgeModels) -> CheckOutcome {
    let mut outcomes = run_checks(&[check], answer, task, judge).await;
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

#[tokio::test]
async fn exec_passes_on_exit_zero_with_the_answer_on_stdin() {
    let none = ModelTable::default();
    let t = task(None);
    let outcome = one(exec("grep -q 42", 10), Some("it is 42"), &t, &none).await;
    assert!(outcome.pass, "{}", outcome.detail);
    assert_eq!(outcome.kind, "exec");
    assert_eq!(outcome.detail, "exit 0");
    let outcome = one(exec("grep -q 42", 10), Some("it is 41"), &t, &none).await;
    assert!(!outcome.pass);
    assert_eq!(outcome.detail, "exit 1");
}

#[tokio::test]
async fn exec_reports_the_exit_code_and_the_end_of_its_output() {
    let none = ModelTable::default();
    let script = "yes 'filler line' | head -n 5000; echo 'wrong answer' >&2; exit 3";
    let outcome = one(exec(script, 10), Some("x"), &task(None), &none).await;
    assert!(!outcome.pass);
    assert!(outcome.detail.starts_with("exit 3; stderr: wrong answer; stdout: …"), "{}", outcome.detail);
    assert!(outcome.detail.len() < 600, "{}", outcome.detail);
}

#[tokio::test]
async fn exec_reads_the_task_from_troupe_task() {
    let none = ModelTable::default();
    let t = task(Some("42"));
    let script =
        r#"case "$TROUPE_TASK" in *'"id":"t1"'*'"expected":"42"'*) exit 0;; *) echo "$TROUPE_TASK"; exit 1;; esac"#;
    let outcome = one(exec(script, 10), Some("x"), &t, &none).await;
    assert!(outcome.pass, "{}", outcome.detail);
    let outcome = one(exec(script, 10), Some("x"), &task(None), &none).await;
    assert!(!outcome.pass);
    assert!(outcome.detail.contains(r#""expected":null"#), "{}", outcome.detail);
}

#[test]
fn exec_gets_path_home_and_only_the_variables_it_lists() {
    let troupe_env = |name: &str| {
        let value = match name {
            "PATH" => "/usr/bin",
            "HOME" => "/home/me",
            "GRADER_TOKEN" => "g-123",
            "OPENAI_API_KEY" => "sk-not-for-checks",
            "TROUPE_TASK" => "troupe's own, not the task",
            _ => return None,
        };
        Some(OsString::from(value))
    };
    let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    // (the check's `env`, the environment its program gets)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let table: &[Case] = &[
        (&[], &[("PATH", "/usr/bin"), ("HOME", "/home/me")]),
        (&["GRADER_TOKEN"], &[("PATH", "/usr/bin"), ("HOME", "/home/me"), ("GRADER_TOKEN", "g-123")]),
        // Unset names are left out; repeats and the task's own variable are ignored.
        (&["MISSING", "HOME", "TROUPE_TASK"], &[("PATH", "/usr/bin"), ("HOME", "/home/me")]),
    ];
    for (listed, expected) in table {
        let env = exec_env(&names(listed), troupe_env);
        let expected: Vec<(String, OsString)> =
            expected.iter().map(|(n, v)| ((*n).to_owned(), OsString::from(v))).collect();
        assert_eq!(env, expected, "{listed:?}");
    }
}

#[tokio::test]
async fn exec_sees_no_variable_it_was_not_given() {
    let none = ModelTable::default();
    // `env` lists how the program found its environment; the check passes on exactly
    // PATH, HOME (when the test has one), PWD (the shell's own) and TROUPE_TASK.
    let script = "env | cut -d= -f1 | grep -v -x -e PATH -e HOME -e PWD -e TROUPE_TASK -e SHLVL -e _ ; test $? -eq 1";
    let outcome = one(exec(script, 10), Some("x"), &task(None), &none).await;
    assert!(outcome.pass, "{}", outcome.detail);
}

#[tokio::test]
async fn exec_that_hangs_is_killed_at_its_time_limit() {
    let none = ModelTable::default();
    let started = Instant::now();
    // The shell's child `sleep` holds the output pipe: killing only `sh` would leave the
    // check waiting for it.
    let outcome = one(exec("sleep 30; echo done", 1), Some("x"), &task(None), &none).await;
    assert!(!outcome.pass);
    assert!(outcome.detail.starts_with("timed out after 1s"), "{}", outcome.detail);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn exec_that_leaves_a_background_process_still_finishes() {
    let none = ModelTable::default();
    let started = Instant::now();
    let outcome = one(exec("sleep 30 & exit 0", 20), Some("x"), &task(None), &none).await;
    assert!(outcome.pass, "{}", outcome.detail);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn exec_of_a_missing_program_fails_with_its_name() {
    let none = ModelTable::default();
    let spec = check(CheckKind::Exec {
        command: vec!["troupe-no-such-program".into()],
        timeout_seconds: 5,
        cwd: std::env::temp_dir(),
        env: Vec::new(),
    });
    let outcome = one(spec, Some("x"), &task(None), &none).await;
    assert!(!outcome.pass);
    assert!(outcome.detail.starts_with("cannot start `troupe-no-such-program`"), "{}", outcome.detail);
    let empty =
        check(CheckKind::Exec { command: Vec::new(), timeout_seconds: 5, cwd: std::env::temp_dir(), env: Vec::new() });
    assert!(!one(empty, Some("x"), &task(None), &none).await.pass);
}

/// A judge that replies with fixed text, errs, or never finishes; it keeps the last request.
enum Behaviour {
    Reply(&'static str),
    Error(&'static str),
    Hang,
}

struct StubJudge {
    behaviour: Behaviour,
    seen: Mutex<Option<ModelRequest>>,
}

impl Model for StubJudge {
    fn info(&self) -> ModelInfo {
        ModelInfo { provider: "stub", model: "stub".into(), digest: None }
    }

    fn stream(&self, request: ModelRequest, cancel: CancellationToken) -> ModelStream {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(request);
        let (tx, stream) = ModelStream::channel();
        match self.behaviour {
            Behaviour::Reply(text) => {
                // Two deltas, as a provider streams them.
                let (a, b) = text.split_at(text.len() / 2);
                for delta in [a, b] {
                    let _ = tx.try_send(Ok(ModelChunk::TextDelta(delta.to_owned())));
                }
            }
            Behaviour::Error(message) => {
                let _ = tx.try_send(Err(ModelError::Provider(message.to_owned())));
            }
            Behaviour::Hang => {
                tokio::spawn(async move {
                    cancel.cancelled().await;
                    drop(tx);
                });
            }
        }
        stream
    }
}

fn judges(behaviour: Behaviour) -> (ModelTable, Arc<StubJudge>) {
    let stub = Arc::new(StubJudge { behaviour, seen: Mutex::new(None) });
    let model: Arc<dyn Model> = stub.clone();
    (ModelTable::from_models([("grader".to_owned(), model)]), stub)
}

fn judge_check() -> CheckSpec {
    check(CheckKind::Judge { model: "grader".into(), rubric: "The answer must be a number.".into() })
}

#[tokio::test]
async fn judge_pass_records_verdict_and_reasoning() {
    let (table, stub) = judges(Behaviour::Reply("PASS\nbecause 42 is the product."));
    let outcome = one(judge_check(), Some("It is 42."), &task(Some("42")), &table).await;
    assert!(outcome.pass, "{}", outcome.detail);
    assert_eq!(outcome.kind, "judge");
    assert_eq!(outcome.detail, "judge `grader`: PASS: because 42 is the product.");

    let request = stub.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(request) = request else { panic!("the judge was not asked") };
    assert_eq!(request.sampling.temperature, Some(0.0));
    assert!(request.tools.is_empty());
    let prompt = &request.messages[1].content;
    for part in ["The answer must be a number.", "What is six times seven?", "## Expected answer\n42", "It is 42."] {
        assert!(prompt.contains(part), "{part} missing from {prompt}");
    }
}

#[tokio::test]
async fn judge_fail_fails_the_check() {
    let (table, _) = judges(Behaviour::Reply("**Verdict: fail** - the answer is a word."));
    let outcome = one(judge_check(), Some("forty-two"), &task(None), &table).await;
    assert!(!outcome.pass);
    assert_eq!(outcome.detail, "judge `grader`: FAIL: the answer is a word.");
}

#[tokio::test]
async fn judge_garbage_is_a_failed_check() {
    let (table, _) = judges(Behaviour::Reply("banana"));
    let outcome = one(judge_check(), Some("42"), &task(None), &table).await;
    assert!(!outcome.pass);
    assert!(outcome.detail.contains("no PASS/FAIL verdict") && outcome.detail.contains("banana"), "{}", outcome.detail);
}

#[tokio::test]
async fn judge_model_error_is_a_failed_check() {
    let (table, _) = judges(Behaviour::Error("HTTP 500 from the provider"));
    let outcome = one(judge_check(), Some("42"), &task(None), &table).await;
    assert!(!outcome.pass);
    assert_eq!(outcome.detail, "judge `grader` failed: HTTP 500 from the provider");
}

#[tokio::test]
async fn judge_with_an_unknown_alias_is_a_failed_check() {
    let (table, _) = judges(Behaviour::Reply("PASS"));
    let spec = check(CheckKind::Judge { model: "missing".into(), rubric: "r".into() });
    let outcome = one(spec, Some("42"), &task(None), &table).await;
    assert!(!outcome.pass);
    assert!(outcome.detail.contains("no model alias `missing`"), "{}", outcome.detail);
}

#[tokio::test(start_paused = true)]
async fn judge_that_never_answers_fails_at_the_time_limit() {
    let (table, _) = judges(Behaviour::Hang);
    let outcome = one(judge_check(), Some("42"), &task(None), &table).await;
    assert!(!outcome.pass);
    assert_eq!(outcome.detail, "judge `grader` gave no verdict within 120s");
}

#[test]
fn verdicts_are_read_leniently() {
    assert_eq!(parse_verdict("PASS"), Some((true, "")));
    assert_eq!(parse_verdict("pass: fine"), Some((true, "fine")));
    assert_eq!(parse_verdict("\n**FAIL**\nwrong number"), Some((false, "wrong number")));
    assert_eq!(parse_verdict("Verdict: PASSED. good"), Some((true, "good")));
    assert_eq!(parse_verdict("The answer is right.\nPASS"), Some((true, "The answer is right.")));
    assert_eq!(parse_verdict("passage of time"), None);
    assert_eq!(parse_verdict("banana"), None);
    assert_eq!(parse_verdict(""), None);
}

#[tokio::test]
async fn no_answer_fails_every_check() {
    let (table, stub) = judges(Behaviour::Reply("PASS"));
    let checks = [check(contains(Some("x"), false)), exec("exit 0", 5), judge_check()];
    let outcomes = run_checks(&checks, None, &task(Some("x")), &table).await;
    assert_eq!(outcomes.len(), 3);
    for outcome in &outcomes {
        assert!(!outcome.pass);
        assert_eq!(outcome.detail, NO_ANSWER);
    }
    assert_eq!(outcomes.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["contains-1", "exec-1", "judge-1"]);
    assert!(stub.seen.lock().unwrap_or_else(|p| p.into_inner()).is_none(), "no judge is asked without an answer");
}
