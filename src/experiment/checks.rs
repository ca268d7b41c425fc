//! Scoring a trial's answer: one [`CheckOutcome`] per `[[checks]]` entry, in order.
//!
//! Owns the meaning of every check kind: `contains`, `regex`, `equals`, `number` and
//! `json_schema` are pure text tests ([`check_text`]); `exec` runs a program on the answer and
//! `judge` asks a model ([`run_checks`]).
//!
//! Invariants:
//! - An `exec` check's program runs model-written answers, so it gets a cleared environment:
//!   `PATH`, `HOME`, `TROUPE_TASK` and only the variables its `env` names (as the MCP stdio
//!   client does for servers). troupe's own keys and tokens never reach it unasked.
//!
//! Scoring never fails and never panics. A check that cannot be carried out (a bad
//! pattern, a program that does not start, a judge model that errs or stalls, a task without
//! the `expected` a check relies on) is a *failed* check whose `detail` says why, so a matrix of
//! hundreds of trials always yields a record per trial.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use regex::Regex;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::{CheckKind, CheckSpec, TaskSpec};
use crate::experiment::record::CheckOutcome;
use crate::model::{Model, ModelChunk, ModelError, ModelRequest, ModelTable, Sampling};
use crate::protocol::{ChatMessage, TaskId, ToolChoice, shorten};

/// The detail of every check of a run that gave no answer.
const NO_ANSWER: &str = "the run gave no answer";
/// How much of the answer a detail quotes.
const QUOTE_CHARS: usize = 80;
/// How much of an exec's stdout and stderr a detail quotes (the end: errors come last).
const OUTPUT_TAIL_CHARS: usize = 200;
/// How much of each output stream an exec keeps while reading: a bound on memory for a program
/// that prints a lot, and still more than the detail quotes.
const OUTPUT_KEEP_BYTES: usize = 4096;
/// After an exec's program exits, how long its output may stay open (a background process it
/// left holds the pipe) before the process group is killed and the output read so far is used.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// The longest a judge may take to reply: a stalled provider must not stall the matrix.
const JUDGE_TIME_LIMIT: Duration = Duration::from_secs(120);
/// Enough for a verdict and a few sentences of reasoning.
const JUDGE_MAX_TOKENS: u32 = 256;
/// How much of the judge's reasoning a detail keeps.
const JUDGE_REASON_CHARS: usize = 300;

/// How a judge check reaches its model. The runner passes the trial's [`ModelTable`] (the same
/// aliases the agents use, variant overrides included); tests pass a table of stub models.
pub trait JudgeModels: Send + Sync {
    /// The model behind `alias`, or why there is none (a readable sentence).
    fn judge_model(&self, alias: &str) -> Result<Arc<dyn Model>, String>;
}

impl JudgeModels for ModelTable {
    fn judge_model(&self, alias: &str) -> Result<Arc<dyn Model>, String> {
        self.get(alias).cloned().map_err(|err| err.to_string())
    }
}

/// Scores `answer` (the root agent's final answer; `None` when the run produced none) with
/// every check, in order. Checks run one after another: an exec or judge check is slow, but
/// trials already run concurrently, and a fixed order keeps a judge's load predictable.
pub async fn run_checks(
    checks: &[CheckSpec],
    answer: Option<&str>,
    task: &TaskSpec,
    judge: &dyn JudgeModels,
) -> Vec<CheckOutcome> {
    let mut outcomes = Vec::with_capacity(checks.len());
    for check in checks {
        let (pass, detail) = match answer {
            None => (false, NO_ANSWER.to_owned()),
            Some(answer) => match &check.kind {
                CheckKind::Exec { command, timeout_seconds, cwd, env } => {
                    let env = exec_env(env, |name| std::env::var_os(name));
                    run_exec(command, Duration::from_secs(*timeout_seconds), cwd, &env, answer, task).await
                }
                CheckKind::Judge { model, rubric } => run_judge(judge, model, rubric, answer, task).await,
                kind => check_text(kind, answer, task)
                    .unwrap_or_else(|| (false, format!("`{}` is not a text check", kind.as_str()))),
            },
        };
        outcomes.push(CheckOutcome { name: check.name.clone(), kind: check.kind.as_str().to_owned(), pass, detail });
    }
    outcomes
}

/// The checks that need no process and no model: whether `answer` passes, and a one-line
/// detail. `None` for `exec` and `judge`.
///
/// - `contains`: a substring, ignoring case unless `case_sensitive`.
/// - `equals`: both sides trimmed, then equal (ignoring case unless `case_sensitive`). Nothing
///   else is forgiven, not even a trailing period: a looser comparison belongs in `regex`.
/// - `regex`: the pattern matches somewhere in the answer.
/// - `number`: the *last* number in the answer (see [`last_number`]) is within `tolerance` of
///   the value.
/// - `json_schema`: the answer's JSON (see [`extract_json`]) is valid against the schema.
///
/// A `value` left out means the task's `expected`; a task without one fails the check.
pub fn check_text(kind: &CheckKind, answer: &str, task: &TaskSpec) -> Option<(bool, String)> {
    Some(match kind {
        CheckKind::Contains { value, case_sensitive } => match expected_text(value.as_deref(), task) {
            Err(detail) => (false, detail),
            Ok(value) => {
                let found = if *case_sensitive {
                    answer.contains(value)
                } else {
                    answer.to_lowercase().contains(&value.to_lowercase())
                };
                if found {
                    (true, format!("found {}", quote(value)))
                } else {
                    (
                        false,
                        format!("expected {}{}, not in {}", quote(value), case_note(*case_sensitive), quote(answer)),
                    )
                }
            }
        },
        CheckKind::Equals { value, case_sensitive } => match expected_text(value.as_deref(), task) {
            Err(detail) => (false, detail),
            Ok(value) => {
                let (want, got) = (value.trim(), answer.trim());
                let equal = if *case_sensitive { want == got } else { want.to_lowercase() == got.to_lowercase() };
                if equal {
                    (true, format!("equals {}", quote(want)))
                } else {
                    (false, format!("expected {}{}, found {}", quote(want), case_note(*case_sensitive), quote(got)))
                }
            }
        },
        CheckKind::Regex { pattern } => match Regex::new(pattern) {
            Err(err) => (false, format!("bad pattern /{pattern}/: {}", one_line(&err.to_string()))),
            Ok(re) => match re.find(answer) {
                Some(m) => (true, format!("/{pattern}/ matched {}", quote(m.as_str()))),
                None => (false, format!("expected a match for /{pattern}/, found none in {}", quote(answer))),
            },
        },
        CheckKind::Number { value, tolerance } => check_number(*value, *tolerance, answer, task),
        CheckKind::JsonSchema { schema } => check_json_schema(schema, answer),
        CheckKind::Exec { .. } | CheckKind::Judge { .. } => return None,
    })
}

/// The check's own value, or else the task's `expected`.
fn expected_text<'a>(value: Option<&'a str>, task: &'a TaskSpec) -> Result<&'a str, String> {
    value.or(task.expected.as_deref()).ok_or_else(|| no_expected(task))
}

fn no_expected(task: &TaskSpec) -> String {
    format!("the check names no `value` and task `{}` has no `expected`", task.id)
}

fn case_note(case_sensitive: bool) -> &'static str {
    if case_sensitive { " (case-sensitive)" } else { "" }
}

fn check_number(value: Option<f64>, tolerance: f64, answer: &str, task: &TaskSpec) -> (bool, String) {
    let want = match value {
        Some(want) => want,
        None => match task.expected.as_deref() {
            None => return (false, no_expected(task)),
            Some(expected) => match last_number(expected) {
                Some(want) => want,
                None => {
                    return (false, format!("task `{}`'s `expected` {} is not a number", task.id, quote(expected)));
                }
            },
        },
    };
    let expected = if tolerance > 0.0 { format!("expected {want} ± {tolerance}") } else { format!("expected {want}") };
    match last_number(answer) {
        None => (false, format!("{expected}, found no number in {}", quote(answer))),
        Some(found) => ((found - want).abs() <= tolerance, format!("{expected}, found {found}")),
    }
}

/// The last number in `text`: an integer or decimal, maybe negative, maybe with thousands
/// separators (`1,234.5`) or an exponent (`1e-3`); a trailing `%` or `.` is not part of it. The
/// last, because answers reason first and conclude last ("3 apples and 4 pears make 7").
pub fn last_number(text: &str) -> Option<f64> {
    // Thousands-separated first, so `1,234` is one number; `1,2,3` falls to the plain form.
    // An `Option`: a literal pattern cannot fail, but the crate forbids `expect`.
    static NUMBER: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"[-−]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?").ok()
    });
    let m = NUMBER.as_ref()?.find_iter(text).last()?;
    let mut digits: String = m.as_str().chars().filter(|c| *c != ',').collect();
    if let Some(rest) = digits.strip_prefix(['-', '−']) {
        // A dash right after a word or a number joins two things ("2020-05", "pages 3-5"); it is
        // a minus sign only at the start or after a space or punctuation.
        let joined = text[..m.start()].chars().next_back().is_some_and(char::is_alphanumeric);
        digits = if joined { rest.to_owned() } else { format!("-{rest}") };
    }
    digits.parse().ok()
}

fn check_json_schema(schema: &Value, answer: &str) -> (bool, String) {
    let validator = match jsonschema::validator_for(schema) {
        Ok(validator) => validator,
        Err(err) => return (false, format!("the check's schema is invalid: {}", one_line(&err.to_string()))),
    };
    let Some((instance, source)) = extract_json(answer) else {
        return (
            false,
            format!(
                "expected JSON (the whole answer, a ```json block or a {{…}}/[…] span), found none in {}",
                quote(answer)
            ),
        );
    };
    let mut errors = validator.iter_errors(&instance);
    let Some(first) = errors.next() else {
        return (true, format!("{source} is valid against the schema"));
    };
    let more = errors.count();
    let pointer = first.instance_path().as_str();
    let place = if pointer.is_empty() { "the root".to_owned() } else { format!("`{pointer}`") };
    let more = match more {
        0 => String::new(),
        1 => " (and 1 more error)".to_owned(),
        n => format!(" (and {n} more errors)"),
    };
    (false, format!("{source} is invalid at {place}: {}{more}", shorten(&one_line(&first.to_string()), 200)))
}

/// The JSON an answer holds, and where it was found: the whole answer; else the first
/// ```` ```json ```` fenced block (then any fenced block) that parses; else the first `{…}` or
/// `[…]` span that parses (models wrap JSON in prose).
pub fn extract_json(answer: &str) -> Option<(Value, &'static str)> {
    if let Ok(value) = serde_json::from_str(answer.trim()) {
        return Some((value, "the answer"));
    }
    let blocks = fenced_blocks(answer);
    let tagged = blocks.iter().filter(|(lang, _)| lang.eq_ignore_ascii_case("json"));
    for (_, body) in tagged {
        if let Ok(value) = serde_json::from_str(body.trim()) {
            return Some((value, "the ```json block"));
        }
    }
    for (_, body) in &blocks {
        if let Ok(value) = serde_json::from_str(body.trim()) {
            return Some((value, "a fenced block"));
        }
    }
    // Each `{` or `[` may start the value; the stream deserializer reads one value and leaves
    // the prose after it. Capped: an answer of many braces must not make scoring quadratic.
    for (start, _) in answer.match_indices(['{', '[']).take(200) {
        let mut values = serde_json::Deserializer::from_str(&answer[start..]).into_iter::<Value>();
        if let Some(Ok(value)) = values.next() {
            return Some((value, "the JSON in the answer"));
        }
    }
    None
}

/// The fenced code blocks of a Markdown text: (info string, body), in order. An unclosed fence
/// runs to the end of the text, as a model cut short writes it.
fn fenced_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let (lang, body_start) = match after.find('\n') {
            Some(nl) => (after[..nl].trim(), nl + 1),
            None => break,
        };
        let body = &after[body_start..];
        match body.find("```") {
            Some(close) => {
                blocks.push((lang, &body[..close]));
                rest = &body[close + 3..];
            }
            None => {
                blocks.push((lang, body));
                break;
            }
        }
    }
    blocks
}

/// Variables an exec check's program always gets, so that programs are found and behave.
const EXEC_BASE_ENV: [&str; 2] = ["PATH", "HOME"];

/// The environment of an exec check's program besides `TROUPE_TASK`: [`EXEC_BASE_ENV`] and the
/// check's `env` names, each with its value from `lookup` (troupe's environment); a variable
/// troupe does not have is left out, as is a name given twice.
fn exec_env(names: &[String], lookup: impl Fn(&str) -> Option<OsString>) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    let names = EXEC_BASE_ENV.into_iter().chain(names.iter().map(String::as_str));
    for name in names.filter(|name| *name != "TROUPE_TASK") {
        if env.iter().any(|(seen, _)| seen == name) {
            continue;
        }
        if let Some(value) = lookup(name) {
            env.push((name.to_owned(), value));
        }
    }
    env
}

/// Runs an exec check: `command` in `cwd` with only `env` and the task as JSON in
/// `TROUPE_TASK` for environment, the answer on stdin; exit 0 passes.
async fn run_exec(
    command: &[String],
    limit: Duration,
    cwd: &Path,
    env: &[(String, OsString)],
    answer: &str,
    task: &TaskSpec,
) -> (bool, String) {
    let Some((program, args)) = command.split_first() else {
        return (false, "the check's `command` is empty".to_owned());
    };
    let task_json = serde_json::json!({ "id": task.id, "input": task.input, "expected": task.expected }).to_string();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env("TROUPE_TASK", task_json)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A backstop: whatever path leaves this function, the program does not outlive it.
        .kill_on_drop(true);
    // Its own process group, so a time limit kills what a shell script started too.
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => return (false, format!("cannot start `{program}` in {}: {err}", cwd.display())),
    };
    let pid = child.id();

    // Stdin, stdout and stderr are served concurrently: a program that prints a lot before
    // reading (or never reads) must not deadlock against a full pipe.
    let stdin = child.stdin.take().map(|mut stdin| {
        let answer = answer.to_owned();
        tokio::spawn(async move {
            // A program that exits without reading its input closes the pipe: not an error.
            let _ = stdin.write_all(answer.as_bytes()).await;
            let _ = stdin.shutdown().await;
        })
    });
    let stdout = child.stdout.take().map(|out| tokio::spawn(read_tail(out)));
    let stderr = child.stderr.take().map(|err| tokio::spawn(read_tail(err)));

    let status = tokio::time::timeout(limit, child.wait()).await;
    let timed_out = status.is_err();
    if timed_out {
        // The group first, while its leader is not yet reaped and so still owns the group id.
        kill_group(pid).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if let Some(stdin) = stdin {
        stdin.abort();
    }
    let mut stdout = stdout;
    let mut stderr = stderr;
    let mut out = collect(&mut stdout).await;
    let mut err = collect(&mut stderr).await;
    if out.is_none() || err.is_none() {
        // Something the program started in the background still holds the output open.
        kill_group(pid).await;
        out = out.or(collect(&mut stdout).await);
        err = err.or(collect(&mut stderr).await);
    }
    for handle in [stdout, stderr].into_iter().flatten() {
        handle.abort();
    }
    let output = output_note(&out.unwrap_or_default(), &err.unwrap_or_default());

    match status {
        Err(_) => (false, format!("timed out after {}s{output}", limit.as_secs())),
        Ok(Err(err)) => (false, format!("could not wait for `{program}`: {err}{output}")),
        Ok(Ok(status)) => match status.code() {
            Some(0) => (true, format!("exit 0{output}")),
            Some(code) => (false, format!("exit {code}{output}")),
            None => (false, format!("killed by {}{output}", signal_name(&status))),
        },
    }
}

/// Waits a moment for an output reader to reach the end of its stream; `None` if it did not.
async fn collect(handle: &mut Option<tokio::task::JoinHandle<Vec<u8>>>) -> Option<Vec<u8>> {
    let Some(task) = handle.as_mut() else {
        return Some(Vec::new());
    };
    match tokio::time::timeout(OUTPUT_GRACE, task).await {
        Ok(Ok(bytes)) => {
            *handle = None;
            Some(bytes)
        }
        Ok(Err(_)) => {
            *handle = None;
            Some(Vec::new())
        }
        Err(_) => None,
    }
}

/// Kills the process group `pid` leads. Through the `kill` program: the crate has no unsafe
/// code, so no `libc::kill`; a missing `kill` leaves only the direct child killed.
async fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    #[cfg(not(unix))]
    let _ = pid;
}

fn signal_name(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal}");
        }
    }
    format!("{status}")
}

/// Reads a stream to its end, keeping only its last [`OUTPUT_KEEP_BYTES`].
async fn read_tail(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > OUTPUT_KEEP_BYTES {
                    kept.drain(..kept.len() - OUTPUT_KEEP_BYTES);
                }
            }
        }
    }
    kept
}

/// `; stderr: …; stdout: …` with the end of each non-empty stream, on one line.
fn output_note(stdout: &[u8], stderr: &[u8]) -> String {
    let mut note = String::new();
    for (name, bytes) in [("stderr", stderr), ("stdout", stdout)] {
        let text = one_line(&String::from_utf8_lossy(bytes));
        if !text.is_empty() {
            note.push_str(&format!("; {name}: {}", tail(&text, OUTPUT_TAIL_CHARS)));
        }
    }
    note
}

/// The last `max` characters of `text`, with `…` in front when cut.
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max { text.to_owned() } else { format!("…{}", text.chars().skip(count - max).collect::<String>()) }
}

/// Runs a judge check: asks the model `alias` whether `answer` meets `rubric`.
async fn run_judge(
    judge: &dyn JudgeModels,
    alias: &str,
    rubric: &str,
    answer: &str,
    task: &TaskSpec,
) -> (bool, String) {
    let model = match judge.judge_model(alias) {
        Ok(model) => model,
        Err(err) => return (false, format!("judge `{alias}`: {err}")),
    };
    let request = judge_request(rubric, answer, task);
    let cancel = CancellationToken::new();
    let reply = match tokio::time::timeout(JUDGE_TIME_LIMIT, collect_text(model.as_ref(), request, &cancel)).await {
        Ok(reply) => reply,
        Err(_) => {
            cancel.cancel();
            return (false, format!("judge `{alias}` gave no verdict within {}s", JUDGE_TIME_LIMIT.as_secs()));
        }
    };
    match reply {
        Err(err) => (false, format!("judge `{alias}` failed: {}", one_line(&err.to_string()))),
        Ok(text) => match parse_verdict(&text) {
            Some((pass, reason)) => {
                let verdict = if pass { "PASS" } else { "FAIL" };
                let reason = shorten(&one_line(reason), JUDGE_REASON_CHARS);
                if reason.is_empty() {
                    (pass, format!("judge `{alias}`: {verdict}"))
                } else {
                    (pass, format!("judge `{alias}`: {verdict}: {reason}"))
                }
            }
            None => {
                (false, format!("judge `{alias}` gave no PASS/FAIL verdict: {}", quote_n(&text, JUDGE_REASON_CHARS)))
            }
        },
    }
}

const JUDGE_SYSTEM: &str = "You grade answers. You are given a rubric, a task, sometimes the \
expected answer, and the answer to grade. Decide whether the answer meets the rubric. Reply with \
PASS or FAIL alone on the first line, then one or two sentences saying why. Write nothing before \
the verdict.";

/// The judge's request: temperature 0 for a repeatable verdict, no tools (a text reply only).
fn judge_request(rubric: &str, answer: &str, task: &TaskSpec) -> ModelRequest {
    let mut prompt = format!("## Rubric\n{}\n\n## Task\n{}\n\n", rubric.trim(), task.input.trim());
    if let Some(expected) = &task.expected {
        prompt.push_str(&format!("## Expected answer\n{}\n\n", expected.trim()));
    }
    prompt
        .push_str(&format!("## Answer to grade\n{}\n\nReply PASS or FAIL on the first line, then why.", answer.trim()));
    ModelRequest {
        // Judges are no subtask of the run; the code only keys provider caches and scripts.
        task: TaskId::from_code(0),
        agent: "judge".to_owned(),
        messages: vec![ChatMessage::system(JUDGE_SYSTEM), ChatMessage::user(prompt)],
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
        forced_tool: None,
        sampling: Sampling { temperature: Some(0.0), top_p: None, max_tokens: Some(JUDGE_MAX_TOKENS), seed: None },
    }
}

/// A reply's text, as the runtime's driver reads a stream: deltas appended, other chunks
/// ignored, an error or an empty stream an error.
pub(crate) async fn collect_text(
    model: &dyn Model,
    request: ModelRequest,
    cancel: &CancellationToken,
) -> Result<String, ModelError> {
    let mut stream = model.stream(request, cancel.clone());
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            // Nobody cancels a judge but the time limit, which stops waiting before it cancels.
            Err(ModelError::Cancelled) => {
                return Err(ModelError::Provider("the model stopped the request unasked".into()));
            }
            Err(err) => return Err(err),
            Ok(ModelChunk::TextDelta(delta)) => text.push_str(&delta),
            Ok(ModelChunk::ToolCall(_) | ModelChunk::Usage(_) | ModelChunk::Notice(_)) => {}
        }
    }
    if text.trim().is_empty() {
        return Err(ModelError::Provider("the model ended the request without a reply".into()));
    }
    Ok(text)
}

/// The verdict of a judge's reply and the reasoning after it. The verdict is sought at the start
/// of the first non-empty line, then of the last (small models often reason first); markup
/// around it (`**PASS**`, `Verdict: FAIL`, `"pass"`) and case are forgiven.
pub fn parse_verdict(reply: &str) -> Option<(bool, &str)> {
    let lines: Vec<&str> = reply.lines().filter(|line| !line.trim().is_empty()).collect();
    let first = lines.first()?;
    if let Some((pass, rest)) = verdict_at_start(first) {
        // The reasoning: the rest of the verdict line and every line after it.
        let offset = first.as_ptr() as usize - reply.as_ptr() as usize + (first.len() - rest.len());
        return Some((pass, reply[offset..].trim_start_matches(is_markup).trim()));
    }
    let last = lines.last()?;
    let (pass, _) = verdict_at_start(last)?;
    let offset = last.as_ptr() as usize - reply.as_ptr() as usize;
    Some((pass, reply[..offset].trim()))
}

fn is_markup(c: char) -> bool {
    !c.is_alphanumeric()
}

/// `PASS` or `FAIL` as the first word of `line` (after markup and an optional `verdict`), and
/// what follows it.
fn verdict_at_start(line: &str) -> Option<(bool, &str)> {
    let mut text = line.trim_start_matches(is_markup);
    if text.get(..7).is_some_and(|word| word.eq_ignore_ascii_case("verdict")) {
        text = text[7..].trim_start_matches(is_markup);
    }
    for (word, pass) in [("pass", true), ("fail", false)] {
        if text.get(..4).is_some_and(|w| w.eq_ignore_ascii_case(word)) {
            let rest = &text[4..];
            // A whole word (PASS, PASSED, FAILS), not the start of another ("passage").
            let rest = ["ed", "es", "s"]
                .iter()
                .find_map(|suffix| {
                    rest.get(..suffix.len()).filter(|s| s.eq_ignore_ascii_case(suffix)).map(|s| &rest[s.len()..])
                })
                .unwrap_or(rest);
            if !rest.starts_with(char::is_alphanumeric) {
                return Some((pass, rest));
            }
        }
    }
    None
}

/// `text` with every run of whitespace (newlines too) made one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` on one line, shortened, in backquotes: a quotation of the answer in a detail.
fn quote(text: &str) -> String {
    quote_n(text, QUOTE_CHARS)
}

fn quote_n(text: &str, max: usize) -> String {
    format!("`{}`", shorten(&one_line(text), max))
}

#[cfg(test)]
mod tests;
