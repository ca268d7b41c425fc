//! The run as a tree of tasks, folded from its events: what the transcript and the report both
//! render. Also the small Markdown helpers they share.
//!
//! Invariant: pure, and total over any sequence of events. A prefix of a run (killed mid-way),
//! events for a task whose `task_created` is missing, or events out of order still fold into a
//! view; nothing here fails or panics.

use std::collections::HashMap;

use crate::protocol::{Event, EventBody, Millis, RunStatus, TaskCounts, TaskId, TaskKind, TaskStatus, Usage};

/// What `run_started` said.
pub(crate) struct RunInfo<'e> {
    pub run_id: &'e str,
    pub experiment: &'e str,
    pub root_agent: &'e str,
    pub task: &'e str,
    pub ts: Millis,
    pub prices: &'e std::collections::BTreeMap<String, crate::protocol::Price>,
}

/// What `run_finished` said.
pub(crate) struct RunEnd<'e> {
    pub status: RunStatus,
    pub result: Option<&'e str>,
    pub error: Option<&'e str>,
    pub usage: Usage,
    pub tasks: TaskCounts,
    pub elapsed_ms: u64,
}

pub(crate) struct TaskView<'e> {
    pub uri: TaskId,
    pub parent: Option<TaskId>,
    /// `None` when the log never said (its `task_created` is missing).
    pub kind: Option<TaskKind>,
    pub agent: &'e str,
    pub model: &'e str,
    pub task: &'e str,
    pub created: Option<Millis>,
    pub status: TaskStatus,
    /// When it first reached a terminal status.
    pub finished: Option<Millis>,
    pub result: Option<&'e str>,
    pub error: Option<&'e str>,
    /// The latest running sum reported for this task.
    pub usage: Usage,
    pub children: Vec<TaskId>,
    /// This task's events, in log order (deltas left out: the whole message follows them).
    pub events: Vec<&'e Event>,
}

pub(crate) struct RunView<'e> {
    pub info: Option<RunInfo<'e>>,
    pub end: Option<RunEnd<'e>>,
    /// In creation order.
    pub tasks: Vec<TaskView<'e>>,
    index: HashMap<TaskId, usize>,
    pub limit_hits: Vec<&'e Event>,
    /// The latest running sum of the whole run's usage.
    pub run_usage: Option<Usage>,
    pub first_ts: Option<Millis>,
    pub last_ts: Option<Millis>,
}

impl<'e> RunView<'e> {
    pub(crate) fn new(events: &'e [Event]) -> RunView<'e> {
        let mut view = RunView {
            info: None,
            end: None,
            tasks: Vec::new(),
            index: HashMap::new(),
            limit_hits: Vec::new(),
            run_usage: None,
            first_ts: None,
            last_ts: None,
        };
        for event in events {
            view.apply(event);
        }
        view
    }

    pub(crate) fn task(&self, uri: TaskId) -> Option<&TaskView<'e>> {
        self.index.get(&uri).map(|&i| &self.tasks[i])
    }

    /// Tasks without a known parent, in creation order: the root, and any orphan.
    pub(crate) fn roots(&self) -> impl Iterator<Item = &TaskView<'e>> {
        self.tasks.iter().filter(|t| t.parent.is_none_or(|p| !self.index.contains_key(&p) || p == t.uri))
    }

    /// Every task depth-first (a parent, then its children in creation order), with its depth
    /// (0 for a root). Each task appears once, even if the log links tasks in a cycle.
    pub(crate) fn depth_first(&self) -> Vec<(usize, &TaskView<'e>)> {
        let mut out = Vec::with_capacity(self.tasks.len());
        let mut seen = vec![false; self.tasks.len()];
        let mut stack: Vec<(usize, TaskId)> =
            self.roots().map(|t| (0, t.uri)).collect::<Vec<_>>().into_iter().rev().collect();
        loop {
            while let Some((depth, uri)) = stack.pop() {
                let Some(&i) = self.index.get(&uri) else {
                    continue;
                };
                if std::mem::replace(&mut seen[i], true) {
                    continue;
                }
                let task = &self.tasks[i];
                out.push((depth, task));
                stack.extend(task.children.iter().rev().map(|&c| (depth + 1, c)));
            }
            // Tasks reachable from no root (a parent cycle): shown as roots rather than lost.
            match seen.iter().position(|s| !s) {
                Some(i) => stack.push((0, self.tasks[i].uri)),
                None => return out,
            }
        }
    }

    pub(crate) fn counts(&self) -> Vec<(TaskStatus, usize)> {
        let all = [
            TaskStatus::Working,
            TaskStatus::InputRequired,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ];
        all.into_iter()
            .map(|s| (s, self.tasks.iter().filter(|t| t.status == s).count()))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Usage of the whole run: as `run_finished` reports it, else the latest running sum.
    pub(crate) fn usage(&self) -> Usage {
        if let Some(end) = &self.end {
            return end.usage;
        }
        self.run_usage.unwrap_or_else(|| {
            let mut sum = Usage::default();
            for task in &self.tasks {
                sum.add(&task.usage);
            }
            sum
        })
    }

    fn task_mut(&mut self, uri: TaskId) -> &mut TaskView<'e> {
        let next = self.tasks.len();
        let i = *self.index.entry(uri).or_insert(next);
        if i == next {
            self.tasks.push(TaskView {
                uri,
                parent: None,
                kind: None,
                agent: "?",
                model: "?",
                task: "",
                created: None,
                status: TaskStatus::Working,
                finished: None,
                result: None,
                error: None,
                usage: Usage::default(),
                children: Vec::new(),
                events: Vec::new(),
            });
        }
        &mut self.tasks[i]
    }

    fn apply(&mut self, event: &'e Event) {
        self.first_ts = Some(self.first_ts.map_or(event.ts, |t| t.min(event.ts)));
        self.last_ts = Some(self.last_ts.map_or(event.ts, |t| t.max(event.ts)));
        match &event.body {
            EventBody::RunStarted { run_id, experiment, root_agent, task, prices, .. } => {
                self.info = Some(RunInfo { run_id, experiment, root_agent, task, ts: event.ts, prices });
            }
            EventBody::TaskCreated { uri, parent, kind, agent, model, task } => {
                let view = self.task_mut(*uri);
                view.parent = *parent;
                view.kind = Some(*kind);
                view.agent = agent;
                view.model = model;
                view.task = task;
                view.created = Some(event.ts);
                if let Some(parent) = parent.filter(|p| p != uri) {
                    let parent_view = self.task_mut(parent);
                    if !parent_view.children.contains(uri) {
                        parent_view.children.push(*uri);
                    }
                }
            }
            EventBody::TaskStatus { uri, status, result, error, .. } => {
                let view = self.task_mut(*uri);
                view.status = *status;
                if status.is_terminal() && view.finished.is_none() {
                    view.finished = Some(event.ts);
                }
                if result.is_some() {
                    view.result = result.as_deref();
                }
                if error.is_some() {
                    view.error = error.as_deref();
                }
                view.events.push(event);
            }
            EventBody::Message { uri, .. }
            | EventBody::ToolCall { uri, .. }
            | EventBody::ToolResult { uri, .. }
            | EventBody::MemoryRecalled { uri, .. }
            | EventBody::McpTools { uri, .. }
            | EventBody::ChildrenOnFinish { uri, .. } => self.task_mut(*uri).events.push(event),
            EventBody::MessageDelta { .. } => {}
            EventBody::Usage { uri, task_total, run_total, .. } => {
                self.task_mut(*uri).usage = *task_total;
                self.run_usage = Some(*run_total);
            }
            EventBody::LimitHit { uri, .. } => {
                self.task_mut(*uri).events.push(event);
                self.limit_hits.push(event);
            }
            EventBody::Routed { uri, alias, .. } => {
                let task = self.task_mut(*uri);
                // The report shows the model a task actually ran on, not `auto`.
                task.model = alias;
                task.events.push(event);
            }
            EventBody::RunFinished { status, result, error, usage, tasks, elapsed_ms } => {
                self.end = Some(RunEnd {
                    status: *status,
                    result: result.as_deref(),
                    error: error.as_deref(),
                    usage: *usage,
                    tasks: *tasks,
                    elapsed_ms: *elapsed_ms,
                });
            }
        }
    }
}

/// `1.2 s`, `350 ms`, `4 min 05 s`, `2 h 03 min`.
pub(crate) fn format_duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", ms / 1000, ms % 1000 / 100),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// The longest run of backticks in `text`.
fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `text` as an inline code span that its own backticks cannot close.
pub(crate) fn inline_code(text: &str) -> String {
    let ticks = "`".repeat(longest_backtick_run(text) + 1);
    // CommonMark strips one space each side, which lets a span start or end with a backtick.
    if text.starts_with('`') || text.ends_with('`') {
        format!("{ticks} {text} {ticks}")
    } else {
        format!("{ticks}{text}{ticks}")
    }
}

/// `text` as a fenced block that its own backticks cannot close.
pub(crate) fn fenced(text: &str, lang: &str) -> String {
    let ticks = "`".repeat(longest_backtick_run(text).max(2) + 1);
    let newline = if text.ends_with('\n') { "" } else { "\n" };
    format!("{ticks}{lang}\n{text}{newline}{ticks}\n")
}

/// `text` as a block quote: Markdown inside still renders, but its headings cannot break out
/// into the transcript's own structure.
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.trim_end().lines() {
        if line.is_empty() {
            out.push_str(">\n");
        } else {
            out.push_str("> ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        out.push_str("> _(empty)_\n");
    }
    out
}

/// At most `max` characters of `text`, and how many were left out.
pub(crate) fn truncate_chars(text: &str, max: usize) -> (&str, usize) {
    match text.char_indices().nth(max) {
        Some((cut, _)) => (&text[..cut], text[cut..].chars().count()),
        None => (text, 0),
    }
}

/// One line of text for a table cell: no pipes, no newlines, at most `max` characters.
pub(crate) fn cell(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let (kept, dropped) = truncate_chars(&one_line, max);
    let mut out = kept.replace('|', "\\|");
    if dropped > 0 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn durations_read_naturally() {
        let cases = [(0, "0 ms"), (999, "999 ms"), (1_250, "1.2 s"), (65_000, "1 min 05 s"), (7_380_000, "2 h 03 min")];
        for (ms, expected) in cases {
            assert_eq!(format_duration(ms), expected);
        }
    }

    #[test]
    fn code_cannot_be_closed_by_its_content() {
        assert_eq!(inline_code("a`b"), "``a`b``");
        assert_eq!(inline_code("`x"), "`` `x ``");
        assert_eq!(fenced("x\n```\ny", "text"), "````text\nx\n```\ny\n````\n");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("héllo", 2), ("hé", 3));
        assert_eq!(truncate_chars("hé", 5), ("hé", 0));
        assert_eq!(cell("a|b\nc", 10), "a\\|b c");
    }
}
