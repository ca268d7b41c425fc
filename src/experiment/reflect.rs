//! Reflection, after Reflexion: when a run ends with `reflect = true`, the `reflector` expert
//! reads what happened (the task, the outcome, the checks, and the notable events, each with its
//! `seq`) and writes at most [`MAX_LESSONS`] lessons, each citing the events it learned from.
//! The lessons go into memory (author `reflection`, provenance: the run and the first cited
//! event); the reflector's reply and what was kept are written to the run's `reflection.md`.
//!
//! The digest of a run, the prompt and the reading of the reply are pure ([`digest`],
//! [`prompt`], [`read_lessons`]); [`reflect`] makes the one model call and keeps the lessons.
//!
//! Invariant: reflecting is advice about a run that already ended: it never changes the run's
//! record, and a reflector that errs, stalls or answers garbage leaves a `reflection.md` that
//! says so and no lesson.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use regex::Regex;
use tokio_util::sync::CancellationToken;

use crate::config::AgentSpec;
use crate::experiment::checks::{JudgeModels, collect_text};
use crate::experiment::record::TrialRecord;
use crate::memory::service::Memory;
use crate::memory::store::{Author, Provenance, Remembered, Scope};
use crate::model::{ModelRequest, Sampling};
use crate::protocol::{ChatMessage, Event, EventBody, TaskId, TaskStatus, ToolChoice, shorten};

/// The most lessons one reflection keeps: a few sharp lessons recall better than many vague ones.
pub const MAX_LESSONS: usize = 3;
/// The most events the digest shows; failures first, so a long run's digest still fits a small
/// model's context.
const MAX_EVENT_LINES: usize = 40;
/// How much of a task, answer or result a digest line quotes.
const QUOTE_CHARS: usize = 160;
/// The longest the reflector may take: a stalled provider must not stall a matrix.
const TIME_LIMIT: Duration = Duration::from_secs(120);
const MAX_TOKENS: u32 = 400;
/// The file a reflection leaves in the run's folder.
pub const REFLECTION_FILE: &str = "reflection.md";

/// What the reflector reads about one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Digest {
    /// `[event 12] researcher: tool call_agent failed: …`, in `seq` order.
    pub lines: Vec<String>,
    /// The events the lines show: the only ones a lesson may cite.
    pub seqs: BTreeSet<u64>,
    /// The `run_finished` event: what a lesson citing nothing is about.
    pub finished: Option<u64>,
}

/// The notable events of a run: failures, tool errors, limits hit, subtasks started and their
/// answers, and the end. Failures are kept first when there are more than the digest shows.
pub fn digest(events: &[Event]) -> Digest {
    let mut agents: BTreeMap<TaskId, String> = BTreeMap::new();
    // (seq, is a failure, line)
    let mut notable: Vec<(u64, bool, String)> = Vec::new();
    let mut finished = None;
    for event in events {
        let seq = event.seq;
        let agent = |uri: &TaskId| agents.get(uri).cloned().unwrap_or_else(|| uri.to_string());
        let line = match &event.body {
            EventBody::TaskCreated { uri, parent, kind, agent: name, task, .. } => {
                agents.insert(*uri, name.clone());
                parent.map(|parent| {
                    let by = agents.get(&parent).cloned().unwrap_or_else(|| parent.to_string());
                    (false, format!("{by} started {} `{name}` on: {}", kind.as_str(), quote(task)))
                })
            }
            EventBody::ToolResult { uri, tool, result, is_error: true, .. } => {
                let text = result.as_str().map_or_else(|| result.to_string(), str::to_owned);
                Some((true, format!("{}: tool `{tool}` failed: {}", agent(uri), quote(&text))))
            }
            EventBody::TaskStatus { uri, status: TaskStatus::Failed | TaskStatus::Cancelled, error, .. } => {
                let how = error.as_deref().map_or_else(String::new, |e| format!(": {}", quote(e)));
                Some((true, format!("{} stopped{how}", agent(uri))))
            }
            EventBody::TaskStatus { uri, status: TaskStatus::Completed, result: Some(result), .. } => {
                Some((false, format!("{} answered: {}", agent(uri), quote(result))))
            }
            EventBody::LimitHit { uri, limit, message, .. } => {
                Some((true, format!("{} hit the limit `{limit}`: {}", agent(uri), quote(message))))
            }
            EventBody::RunFinished { status, error, .. } => {
                finished = Some(seq);
                let how = error.as_deref().map_or_else(String::new, |e| format!(": {}", quote(e)));
                Some((false, format!("the run ended {}{how}", status.as_str())))
            }
            _ => None,
        };
        if let Some((failure, text)) = line {
            notable.push((seq, failure, format!("[event {seq}] {text}")));
        }
    }
    if notable.len() > MAX_EVENT_LINES {
        // Keep every failure (up to the bound), then the rest, and the end; show them in order.
        let mut kept: Vec<usize> = (0..notable.len()).filter(|&i| notable[i].1).collect();
        kept.extend((0..notable.len()).filter(|&i| !notable[i].1));
        kept.truncate(MAX_EVENT_LINES - 1);
        if let Some(last) = notable.len().checked_sub(1).filter(|last| !kept.contains(last)) {
            kept.push(last);
        }
        kept.sort_unstable();
        notable = kept.into_iter().map(|i| notable[i].clone()).collect();
    }
    Digest {
        seqs: notable.iter().map(|(seq, _, _)| *seq).collect(),
        lines: notable.into_iter().map(|(_, _, line)| line).collect(),
        finished,
    }
}

fn quote(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("\"{}\"", shorten(&one_line, QUOTE_CHARS))
}

/// The reflector's user message: the task, the outcome with its checks, the answer, and the
/// digest, then the form lessons must take.
pub fn prompt(task: &str, record: &TrialRecord, digest: &Digest) -> String {
    let mut out = format!("## Task\n{}\n\n## Outcome\nThe run {}", task.trim(), record.status);
    if record.checks.is_empty() {
        out.push_str(".\n");
    } else {
        let passed = record.checks.iter().filter(|c| c.pass).count();
        let _ = writeln!(out, "; {passed} of {} checks passed.", record.checks.len());
        for check in &record.checks {
            let verdict = if check.pass { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "- check `{}` ({}): {verdict}: {}", check.name, check.kind, check.detail);
        }
    }
    if let Some(error) = &record.error {
        let _ = writeln!(out, "Error: {}", quote(error));
    }
    let answer = record.answer.as_deref().map_or_else(|| "(no answer)".to_owned(), quote);
    let _ = write!(out, "\n## Final answer\n{answer}\n\n## What happened\n");
    for line in &digest.lines {
        out.push_str(line);
        out.push('\n');
    }
    let _ = write!(
        out,
        "\nWrite at most {MAX_LESSONS} lessons that would help the next run of a task like this one, one \
         per line, each as:\nLESSON: <the advice, one sentence> [events <the event numbers it comes from>]\n\
         If there is nothing worth keeping, write NONE."
    );
    out
}

/// A lesson read from the reflector's reply.
#[derive(Clone, Debug, PartialEq)]
pub struct DraftLesson {
    pub text: String,
    /// Events of the digest it cites; the run's end when it cites none of them.
    pub events: Vec<u64>,
}

static LESSON_LINE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*(?:[-*•]\s*|\d+[.)]\s*)?\**lesson\s*\d*\**\s*[:\-–]\s*(.+)$").ok());
static CITATION: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)[\[(]\s*(?:events?|seq)\b([^\])]*)[\])]").ok());
static NUMBER: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"[0-9]+").ok());

/// The lessons of a reply: lines starting `LESSON:` (bullets, numbering and bold allowed), at
/// most [`MAX_LESSONS`], with their citations of digest events. Citations of events the digest
/// does not show are dropped (a model inventing event numbers points at nothing).
pub fn read_lessons(reply: &str, digest: &Digest) -> Vec<DraftLesson> {
    let (Some(line_re), Some(citation_re), Some(number_re)) = (&*LESSON_LINE, &*CITATION, &*NUMBER) else {
        return Vec::new();
    };
    let mut lessons: Vec<DraftLesson> = Vec::new();
    for line in reply.lines() {
        let Some(body) = line_re.captures(line).and_then(|c| c.get(1)) else { continue };
        let body = body.as_str();
        let mut events = BTreeSet::new();
        for citation in citation_re.captures_iter(body) {
            if let Some(numbers) = citation.get(1) {
                events.extend(
                    number_re
                        .find_iter(numbers.as_str())
                        .filter_map(|n| n.as_str().parse::<u64>().ok())
                        .filter(|seq| digest.seqs.contains(seq)),
                );
            }
        }
        let text = citation_re.replace_all(body, "");
        let text = text.trim().trim_matches('*').trim();
        if text.is_empty() || text.eq_ignore_ascii_case("none") || lessons.iter().any(|l| l.text == text) {
            continue;
        }
        let events =
            if events.is_empty() { digest.finished.into_iter().collect() } else { events.into_iter().collect() };
        lessons.push(DraftLesson { text: text.to_owned(), events });
        if lessons.len() == MAX_LESSONS {
            break;
        }
    }
    lessons
}

/// A lesson a reflection kept.
#[derive(Clone, Debug, PartialEq)]
pub struct KeptLesson {
    pub id: i64,
    pub text: String,
    pub events: Vec<u64>,
    pub merged: bool,
}

/// What a reflection did, as `reflection.md` tells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reflection {
    pub reply: Option<String>,
    pub kept: Vec<KeptLesson>,
    /// Why the reflection stopped early, or what could not be kept.
    pub problems: Vec<String>,
}

/// What [`reflect`] needs about the run it reflects on.
pub struct RunToReflect<'a> {
    pub dir: &'a Path,
    pub run_id: &'a str,
    pub task: &'a str,
    pub record: &'a TrialRecord,
    pub events: &'a [Event],
}

/// Asks `reflector` (on its model from `models`) for lessons from `run`, keeps them in `memory`,
/// and writes `reflection.md` in the run's folder.
pub async fn reflect(
    run: RunToReflect<'_>,
    reflector: &AgentSpec,
    models: &dyn JudgeModels,
    memory: Arc<Memory>,
) -> Reflection {
    let mut reflection = Reflection::default();
    let digest = digest(run.events);
    let request = ModelRequest {
        // The reflector is no subtask of the run; the code only keys provider caches and scripts.
        task: TaskId::from_code(0),
        agent: reflector.name.clone(),
        messages: vec![
            ChatMessage::system(reflector.system_prompt.trim()),
            ChatMessage::user(prompt(run.task, run.record, &digest)),
        ],
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
        forced_tool: None,
        sampling: Sampling {
            temperature: Some(reflector.temperature.unwrap_or(0.0)),
            top_p: reflector.top_p,
            max_tokens: Some(reflector.max_tokens.unwrap_or(MAX_TOKENS)),
            seed: reflector.seed,
        },
    };
    let reply = match models.judge_model(&reflector.model) {
        Err(err) => Err(format!("the reflector's model `{}`: {err}", reflector.model)),
        Ok(model) => {
            let cancel = CancellationToken::new();
            match tokio::time::timeout(TIME_LIMIT, collect_text(model.as_ref(), request, &cancel)).await {
                Ok(Ok(text)) => Ok(text),
                Ok(Err(err)) => Err(format!("the reflector failed: {err}")),
                Err(_) => {
                    cancel.cancel();
                    Err(format!("the reflector gave no reply within {}s", TIME_LIMIT.as_secs()))
                }
            }
        }
    };
    match reply {
        Err(problem) => reflection.problems.push(problem),
        Ok(reply) => {
            let drafts = read_lessons(&reply, &digest);
            if drafts.is_empty() && !reply.to_ascii_uppercase().contains("NONE") {
                reflection.problems.push("the reply has no line starting `LESSON:`; nothing was kept".to_owned());
            }
            reflection.reply = Some(reply);
            let (run_id, dir) = (run.run_id.to_owned(), run.dir.display().to_string());
            let expert = reflector.name.clone();
            let kept = tokio::task::spawn_blocking(move || keep(&memory, drafts, &run_id, &expert, &dir)).await;
            match kept {
                Ok((kept, problems)) => {
                    reflection.kept = kept;
                    reflection.problems.extend(problems);
                }
                Err(err) => reflection.problems.push(format!("keeping the lessons stopped: {err}")),
            }
        }
    }
    if let Err(err) = std::fs::write(run.dir.join(REFLECTION_FILE), render(&reflection, &reflector.name)) {
        reflection.problems.push(format!("could not write {REFLECTION_FILE}: {err}"));
    }
    reflection
}

/// Stores each draft as a global lesson by the reflection, pointing at the run and the events.
fn keep(
    memory: &Memory,
    drafts: Vec<DraftLesson>,
    run_id: &str,
    expert: &str,
    dir: &str,
) -> (Vec<KeptLesson>, Vec<String>) {
    let (mut kept, mut problems) = (Vec::new(), Vec::new());
    for draft in drafts {
        let provenance = Provenance {
            run_id: Some(run_id.to_owned()),
            seq: draft.events.first().copied(),
            expert: Some(expert.to_owned()),
        };
        let data = serde_json::json!({"events": draft.events, "run": dir});
        match memory.add_with_data(&draft.text, Scope::Global, Author::Reflection, provenance, data) {
            Ok(learned) => {
                let (item, merged) = match &learned.remembered {
                    Remembered::Added(item) => (item, false),
                    Remembered::Merged { item, .. } => (item, true),
                };
                kept.push(KeptLesson { id: item.id, text: draft.text, events: draft.events, merged });
            }
            Err(err) => problems.push(format!("lesson \"{}\" not kept: {err}", draft.text)),
        }
    }
    (kept, problems)
}

/// `reflection.md`: what was kept, what went wrong, and the reflector's reply as it came.
pub fn render(reflection: &Reflection, reflector: &str) -> String {
    let mut out = format!("# Reflection\n\nBy the `{reflector}` expert, after the run ended.\n\n## Lessons kept\n\n");
    if reflection.kept.is_empty() {
        out.push_str("None.\n");
    }
    for lesson in &reflection.kept {
        let events: Vec<String> = lesson.events.iter().map(u64::to_string).collect();
        let merged = if lesson.merged { ", merged into an existing lesson" } else { "" };
        let _ = writeln!(out, "- #{}: {} (events {}{merged})", lesson.id, lesson.text, events.join(", "));
    }
    if !reflection.problems.is_empty() {
        out.push_str("\n## Problems\n\n");
        for problem in &reflection.problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    if let Some(reply) = &reflection.reply {
        let _ = write!(out, "\n## The reflector's reply\n\n```text\n{}\n```\n", reply.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::record::CheckOutcome;
    use crate::protocol::{RunStatus, TaskCounts, TaskKind, Usage};
    use serde_json::json;

    fn event(seq: u64, body: EventBody) -> Event {
        Event { seq, ts: seq * 10, body }
    }

    fn run_events() -> Vec<Event> {
        let (root, child) = (TaskId::from_code(1), TaskId::from_code(2));
        vec![
            event(
                0,
                EventBody::TaskCreated {
                    uri: root,
                    parent: None,
                    kind: TaskKind::Agent,
                    agent: "boss".into(),
                    model: "m".into(),
                    task: "Add 2 and 3".into(),
                },
            ),
            event(
                1,
                EventBody::TaskCreated {
                    uri: child,
                    parent: Some(root),
                    kind: TaskKind::Agent,
                    agent: "adder".into(),
                    model: "m".into(),
                    task: "What is 2 + 3?".into(),
                },
            ),
            event(
                2,
                EventBody::ToolResult {
                    uri: root,
                    call_id: "c1".into(),
                    tool: "get_task_status".into(),
                    result: json!("unknown task subtask://9"),
                    is_error: true,
                },
            ),
            event(
                3,
                EventBody::TaskStatus {
                    uri: child,
                    status: TaskStatus::Completed,
                    status_message: None,
                    result: Some("5".into()),
                    error: None,
                },
            ),
            event(4, EventBody::MessageDelta { uri: root, delta: "ignored".into() }),
            event(
                5,
                EventBody::RunFinished {
                    status: RunStatus::Completed,
                    result: Some("six".into()),
                    error: None,
                    usage: Usage::default(),
                    tasks: TaskCounts::default(),
                    elapsed_ms: 50,
                },
            ),
        ]
    }

    fn record() -> TrialRecord {
        TrialRecord {
            index: 0,
            key: "default/t1/1".into(),
            variant: "default".into(),
            task_id: "t1".into(),
            repetition: 1,
            seed: 7,
            status: "completed".into(),
            pass: false,
            score: 0.0,
            checks: vec![CheckOutcome {
                name: "sum".into(),
                kind: "number".into(),
                pass: false,
                detail: "expected 5, found no number".into(),
            }],
            input_tokens: 10,
            output_tokens: 5,
            cost: None,
            wall_ms: 50,
            subtasks: 1,
            depth: 1,
            tool_errors: 1,
            limit_hits: 0,
            turns: 3,
            answer: Some("six".into()),
            error: None,
            folder: ".".into(),
        }
    }

    #[test]
    fn the_digest_names_agents_and_keeps_failures_answers_and_the_end() {
        let digest = digest(&run_events());
        assert_eq!(
            digest.lines,
            [
                "[event 1] boss started agent `adder` on: \"What is 2 + 3?\"",
                "[event 2] boss: tool `get_task_status` failed: \"unknown task subtask://9\"",
                "[event 3] adder answered: \"5\"",
                "[event 5] the run ended completed",
            ]
        );
        assert_eq!(digest.seqs, BTreeSet::from([1, 2, 3, 5]));
        assert_eq!(digest.finished, Some(5));
    }

    #[test]
    fn a_long_run_keeps_its_failures_and_its_end_within_the_bound() {
        let root = TaskId::from_code(1);
        let mut events = vec![event(
            0,
            EventBody::TaskCreated {
                uri: root,
                parent: None,
                kind: TaskKind::Agent,
                agent: "boss".into(),
                model: "m".into(),
                task: "t".into(),
            },
        )];
        for seq in 1..=100 {
            let failed = seq % 10 == 0;
            events.push(event(
                seq,
                EventBody::ToolResult {
                    uri: root,
                    call_id: format!("c{seq}"),
                    tool: "call_slm".into(),
                    result: json!("x"),
                    is_error: failed,
                },
            ));
            events.push(event(
                1000 + seq,
                EventBody::TaskStatus {
                    uri: root,
                    status: TaskStatus::Completed,
                    status_message: None,
                    result: Some(format!("r{seq}")),
                    error: None,
                },
            ));
        }
        events.push(event(
            2000,
            EventBody::RunFinished {
                status: RunStatus::Failed,
                result: None,
                error: Some("out of turns".into()),
                usage: Usage::default(),
                tasks: TaskCounts::default(),
                elapsed_ms: 1,
            },
        ));
        let digest = digest(&events);
        assert_eq!(digest.lines.len(), MAX_EVENT_LINES);
        for seq in (10..=100).step_by(10) {
            assert!(digest.seqs.contains(&seq), "failure {seq} kept");
        }
        assert_eq!(
            digest.lines.last().map(String::as_str),
            Some("[event 2000] the run ended failed: \"out of turns\"")
        );
    }

    #[test]
    fn the_prompt_states_outcome_checks_answer_and_events() {
        let text = prompt("Add 2 and 3", &record(), &digest(&run_events()));
        assert!(text.starts_with("## Task\nAdd 2 and 3\n\n## Outcome\nThe run completed; 0 of 1 checks passed.\n"));
        assert!(text.contains("- check `sum` (number): FAIL: expected 5, found no number\n"), "{text}");
        assert!(text.contains("## Final answer\n\"six\"\n"), "{text}");
        assert!(text.contains("[event 2] boss: tool `get_task_status` failed"), "{text}");
        assert!(text.ends_with("If there is nothing worth keeping, write NONE."), "{text}");
    }

    #[test]
    fn lessons_are_read_with_their_citations_and_invented_events_are_dropped() {
        let digest = digest(&run_events());
        let reply = "Here is what I learned.\n\
            LESSON: Quote the sub-agent's answer instead of recomputing it. [events 3, 5]\n\
            - **Lesson 2:** Poll only URIs that call_agent returned (event 2, event 99)\n\
            3. lesson - Check the arithmetic before answering. [events 42]\n\
            LESSON: Quote the sub-agent's answer instead of recomputing it. [events 3]\n\
            LESSON: a fourth lesson is one too many [events 1]\n\
            LESSON: and a fifth";
        assert_eq!(
            read_lessons(reply, &digest),
            [
                DraftLesson {
                    text: "Quote the sub-agent's answer instead of recomputing it.".into(),
                    events: vec![3, 5]
                },
                DraftLesson { text: "Poll only URIs that call_agent returned".into(), events: vec![2] },
                DraftLesson { text: "Check the arithmetic before answering.".into(), events: vec![5] },
            ],
            "a duplicate is skipped, citations outside the digest dropped (the run's end instead), three at most"
        );
    }

    #[test]
    fn a_reply_of_none_or_prose_has_no_lessons() {
        let digest = digest(&run_events());
        assert!(read_lessons("NONE", &digest).is_empty());
        assert!(read_lessons("LESSON: NONE", &digest).is_empty());
        assert!(read_lessons("The run went fine; I would keep going like this.", &digest).is_empty());
    }

    #[test]
    fn the_file_lists_kept_lessons_problems_and_the_reply() {
        let reflection = Reflection {
            reply: Some("LESSON: Check sums. [events 3]\n".into()),
            kept: vec![KeptLesson { id: 4, text: "Check sums.".into(), events: vec![3], merged: true }],
            problems: vec!["lesson \"x\" not kept: the store is busy".into()],
        };
        assert_eq!(
            render(&reflection, "reflector"),
            "# Reflection\n\nBy the `reflector` expert, after the run ended.\n\n## Lessons kept\n\n\
             - #4: Check sums. (events 3, merged into an existing lesson)\n\n## Problems\n\n\
             - lesson \"x\" not kept: the store is busy\n\n## The reflector's reply\n\n```text\nLESSON: Check sums. [events 3]\n```\n"
        );
    }
}
