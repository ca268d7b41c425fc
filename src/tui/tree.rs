//! The run view model: one run's tree of tasks and every task's conversation, rebuilt from the
//! event stream alone, live or replayed from `events.jsonl`.
//!
//! Invariants: pure (no tokio, no ratatui, no filesystem, no clock: times come from events and
//! from the `now` a caller passes). Applying an event costs O(depth) at most, and a token delta
//! only appends to one buffer. The flattened list of visible rows is rebuilt lazily by
//! [`RunView::refresh`], at most once a frame and only when the tree's shape or an expansion
//! changed, so a burst of events never re-lays the tree out per event.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::protocol::{
    Event, EventBody, Millis, OnFinish, Price, Role, RunStatus, TaskCounts, TaskId, TaskKind, TaskStatus, Usage,
    shorten,
};

/// `run_started`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment: String,
    pub root_agent: String,
    pub task: String,
    pub started: Millis,
    /// Prices by model alias; empty when none is known.
    pub prices: BTreeMap<String, Price>,
}

/// `run_finished`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEnd {
    pub status: RunStatus,
    pub result: Option<String>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
    pub at: Millis,
}

/// One line of a task's conversation as the transcript pane shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Message {
        role: Role,
        content: String,
    },
    ToolCall {
        tool: String,
        arguments: String,
    },
    ToolResult {
        tool: String,
        result: String,
        is_error: bool,
    },
    /// Something troupe did to the task: a limit, a final status, children left working.
    Note {
        text: String,
        is_error: bool,
    },
}

/// A task in the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskNode {
    pub uri: TaskId,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub depth: u16,
    pub kind: TaskKind,
    pub agent: String,
    pub model: String,
    pub task: String,
    pub status: TaskStatus,
    pub status_message: Option<String>,
    pub created: Millis,
    pub finished: Option<Millis>,
    /// Spent by this task's own model calls.
    pub usage: Usage,
    /// Spent by this task and everything under it: the cost of the branch.
    pub branch_usage: Usage,
    /// Dollars of this branch, when its models have prices.
    pub branch_cost: Option<f64>,
    pub entries: Vec<Entry>,
    /// Assistant text streaming in; replaced by the whole message when it arrives.
    pub streaming: String,
    /// The tool call under way, described for a person (`waiting on writer`).
    pub calling: Option<String>,
    pub expanded: bool,
}

impl TaskNode {
    /// What the task is doing now, in a few words.
    pub fn doing(&self) -> String {
        match self.status {
            TaskStatus::Working | TaskStatus::InputRequired => {
                if let Some(call) = &self.calling {
                    call.clone()
                } else if !self.streaming.is_empty() {
                    format!("streaming ({} chars)", self.streaming.chars().count())
                } else {
                    self.status_message.clone().unwrap_or_else(|| "starting".to_owned())
                }
            }
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => {
                self.status_message.clone().unwrap_or_default()
            }
        }
    }

    /// Milliseconds from creation to the end, or to `now` while working.
    pub fn elapsed_ms(&self, now: Millis) -> u64 {
        self.finished.unwrap_or(now).saturating_sub(self.created)
    }
}

/// A visible row of the tree: a node and how deep it is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub node: usize,
    pub depth: u16,
}

/// The whole run as a view sees it.
#[derive(Clone, Debug, Default)]
pub struct RunView {
    pub info: Option<RunInfo>,
    pub end: Option<RunEnd>,
    nodes: Vec<TaskNode>,
    index: HashMap<TaskId, usize>,
    roots: Vec<usize>,
    rows: Vec<Row>,
    rows_stale: bool,
    counts: TaskCounts,
    run_usage: Usage,
    run_cost: Option<f64>,
    last_ts: Option<Millis>,
    /// Events that could not be placed (a task never created, say): shown, never fatal.
    pub problems: Vec<String>,
}

impl RunView {
    pub fn new() -> Self {
        RunView::default()
    }

    /// A view of recorded events, in order.
    pub fn replay<'e>(events: impl IntoIterator<Item = &'e Event>) -> Self {
        let mut view = RunView::new();
        for event in events {
            view.apply(event);
        }
        view.refresh();
        view
    }

    pub fn nodes(&self) -> &[TaskNode] {
        &self.nodes
    }

    pub fn node(&self, uri: TaskId) -> Option<&TaskNode> {
        self.index.get(&uri).map(|&i| &self.nodes[i])
    }

    pub fn counts(&self) -> TaskCounts {
        self.counts
    }

    /// Tokens of the whole run so far.
    pub fn usage(&self) -> Usage {
        self.run_usage
    }

    /// Dollars of the whole run so far; `None` when no model it used has a price.
    pub fn cost(&self) -> Option<f64> {
        self.run_cost
    }

    /// The time of the latest event: `now` for a run that is no longer live.
    pub fn last_ts(&self) -> Option<Millis> {
        self.last_ts
    }

    pub fn is_finished(&self) -> bool {
        self.end.is_some()
    }

    /// Run time: to the end, or to `now` while the run works.
    pub fn elapsed_ms(&self, now: Millis) -> u64 {
        match (&self.end, &self.info) {
            (Some(end), _) => end.elapsed_ms,
            (None, Some(info)) => now.saturating_sub(info.started),
            (None, None) => 0,
        }
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        self.last_ts = Some(self.last_ts.map_or(event.ts, |t| t.max(event.ts)));
        match &event.body {
            EventBody::RunStarted { run_id, experiment, root_agent, task, prices, .. } => {
                self.info = Some(RunInfo {
                    run_id: run_id.clone(),
                    experiment: experiment.clone(),
                    root_agent: root_agent.clone(),
                    task: task.clone(),
                    started: event.ts,
                    prices: prices.clone(),
                });
            }
            EventBody::TaskCreated { uri, parent, kind, agent, model, task } => {
                self.create(event.ts, *uri, *parent, *kind, agent, model, task);
            }
            EventBody::TaskStatus { uri, status, status_message, result, error } => {
                let Some(i) = self.find(*uri, event) else { return };
                let before = self.nodes[i].status;
                if before != *status {
                    count(&mut self.counts, before, -1);
                    count(&mut self.counts, *status, 1);
                }
                let node = &mut self.nodes[i];
                node.status = *status;
                node.status_message.clone_from(status_message);
                if status.is_terminal() {
                    node.finished = Some(event.ts);
                    node.calling = None;
                    node.streaming.clear();
                    let (text, is_error) = match (result, error) {
                        (_, Some(error)) => (format!("{}: {error}", status.as_str()), true),
                        (Some(result), None) => (format!("{}: {}", status.as_str(), shorten(result, 200)), false),
                        (None, None) => (status.as_str().to_owned(), *status != TaskStatus::Completed),
                    };
                    node.entries.push(Entry::Note { text, is_error });
                }
            }
            EventBody::Message { uri, role, content } => {
                let Some(i) = self.find(*uri, event) else { return };
                let node = &mut self.nodes[i];
                if *role == Role::Assistant {
                    node.streaming.clear();
                }
                // Tool results are shown from their `tool_result` event, which names the tool.
                if *role != Role::Tool {
                    node.entries.push(Entry::Message { role: *role, content: content.clone() });
                }
            }
            EventBody::MessageDelta { uri, delta } => {
                let Some(i) = self.find(*uri, event) else { return };
                self.nodes[i].streaming.push_str(delta);
            }
            EventBody::ToolCall { uri, tool, arguments, .. } => {
                let Some(i) = self.find(*uri, event) else { return };
                let calling = self.describe_call(tool, arguments);
                let node = &mut self.nodes[i];
                node.streaming.clear();
                node.calling = Some(calling);
                node.entries.push(Entry::ToolCall { tool: tool.clone(), arguments: compact(arguments) });
            }
            EventBody::ToolResult { uri, tool, result, is_error, .. } => {
                let Some(i) = self.find(*uri, event) else { return };
                let node = &mut self.nodes[i];
                node.calling = None;
                let result = summarize_result(result);
                node.entries.push(Entry::ToolResult { tool: tool.clone(), result, is_error: *is_error });
            }
            EventBody::Usage { uri, input_tokens, output_tokens, task_total, run_total } => {
                self.run_usage = *run_total;
                let Some(i) = self.find(*uri, event) else { return };
                self.nodes[i].usage = *task_total;
                let spent = Usage { input_tokens: *input_tokens, output_tokens: *output_tokens, model_calls: 1 };
                let price = self.info.as_ref().and_then(|info| info.prices.get(&self.nodes[i].model)).copied();
                let cost = price.map(|p| p.cost(&spent));
                if let Some(cost) = cost {
                    self.run_cost = Some(self.run_cost.unwrap_or(0.0) + cost);
                }
                let mut at = Some(i);
                while let Some(j) = at {
                    let node = &mut self.nodes[j];
                    node.branch_usage.add(&spent);
                    if let Some(cost) = cost {
                        node.branch_cost = Some(node.branch_cost.unwrap_or(0.0) + cost);
                    }
                    at = node.parent;
                }
            }
            EventBody::Routed { uri, alias, reason } => {
                let Some(i) = self.find(*uri, event) else { return };
                let node = &mut self.nodes[i];
                node.model.clone_from(alias);
                node.entries.push(Entry::Note { text: format!("routed to {alias}: {reason}"), is_error: false });
            }
            EventBody::MemoryRecalled { uri, lessons, error } => {
                let Some(i) = self.find(*uri, event) else { return };
                let (text, is_error) = match error {
                    Some(error) => (format!("memory not recalled: {error}"), true),
                    None => {
                        let ids: Vec<String> = lessons.iter().map(|l| format!("#{} {:.2}", l.id, l.score)).collect();
                        (format!("recalled {} lessons: {}", lessons.len(), ids.join(", ")), false)
                    }
                };
                self.nodes[i].entries.push(Entry::Note { text, is_error });
            }
            EventBody::McpTools { uri, tools, problems } => {
                let Some(i) = self.find(*uri, event) else { return };
                if !tools.is_empty() {
                    let names: Vec<String> = tools.iter().map(|t| format!("{} ({})", t.name, t.reference)).collect();
                    self.nodes[i]
                        .entries
                        .push(Entry::Note { text: format!("MCP tools: {}", names.join(", ")), is_error: false });
                }
                for problem in problems {
                    self.nodes[i].entries.push(Entry::Note { text: format!("MCP: {problem}"), is_error: true });
                }
            }
            EventBody::LimitHit { uri, message, .. } => {
                let Some(i) = self.find(*uri, event) else { return };
                self.nodes[i].entries.push(Entry::Note { text: format!("limit: {message}"), is_error: true });
            }
            EventBody::ChildrenOnFinish { uri, policy, children } => {
                let Some(i) = self.find(*uri, event) else { return };
                let done = match policy {
                    OnFinish::CancelChildren => "cancelled",
                    OnFinish::WaitForChildren => "awaited",
                };
                let text = format!("answered with {} subtasks still working: {done}", children.len());
                self.nodes[i].entries.push(Entry::Note { text, is_error: false });
            }
            EventBody::RunFinished { status, result, error, usage, tasks, elapsed_ms } => {
                self.run_usage = *usage;
                self.counts = *tasks;
                self.end = Some(RunEnd {
                    status: *status,
                    result: result.clone(),
                    error: error.clone(),
                    elapsed_ms: *elapsed_ms,
                    at: event.ts,
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        ts: Millis,
        uri: TaskId,
        parent: Option<TaskId>,
        kind: TaskKind,
        agent: &str,
        model: &str,
        task: &str,
    ) {
        if self.index.contains_key(&uri) {
            self.problems.push(format!("{uri} was created twice"));
            return;
        }
        let parent_index = match parent {
            Some(p) => match self.index.get(&p) {
                Some(&i) => Some(i),
                None => {
                    self.problems.push(format!("{uri}'s parent {p} is unknown; shown at the top"));
                    None
                }
            },
            None => None,
        };
        let depth = parent_index.map_or(0, |p| self.nodes[p].depth.saturating_add(1));
        let i = self.nodes.len();
        self.nodes.push(TaskNode {
            uri,
            parent: parent_index,
            children: Vec::new(),
            depth,
            kind,
            agent: agent.to_owned(),
            model: model.to_owned(),
            task: task.to_owned(),
            status: TaskStatus::Working,
            status_message: None,
            created: ts,
            finished: None,
            usage: Usage::default(),
            branch_usage: Usage::default(),
            branch_cost: None,
            entries: Vec::new(),
            streaming: String::new(),
            calling: None,
            expanded: true,
        });
        self.index.insert(uri, i);
        count(&mut self.counts, TaskStatus::Working, 1);
        match parent_index {
            Some(p) => self.nodes[p].children.push(i),
            None => self.roots.push(i),
        }
        self.rows_stale = true;
    }

    fn find(&mut self, uri: TaskId, event: &Event) -> Option<usize> {
        let found = self.index.get(&uri).copied();
        if found.is_none() {
            self.problems.push(format!("event {} ({}) names unknown task {uri}", event.seq, event.body.type_name()));
        }
        found
    }

    /// A tool call in a person's words, naming the agent behind a subtask URI when known.
    fn describe_call(&self, tool: &str, arguments: &Value) -> String {
        let arg = |key: &str| arguments.get(key).and_then(Value::as_str);
        let who = |uri: &str| {
            TaskId::parse(uri).ok().and_then(|id| self.node(id)).map_or_else(|| uri.to_owned(), |n| n.agent.clone())
        };
        match tool {
            "get_task_status" => match (arg("uri"), arguments.get("wait_seconds").and_then(Value::as_f64)) {
                (Some(uri), Some(wait)) if wait > 0.0 => format!("waiting on {} ({uri})", who(uri)),
                (Some(uri), _) => format!("reading {} ({uri})", who(uri)),
                (None, _) => "calling get_task_status".to_owned(),
            },
            "call_agent" => format!("delegating to {}", arg("agent").unwrap_or("a copy of itself")),
            "call_slm" => "asking the small model".to_owned(),
            "cancel_task" => format!("cancelling {}", arg("uri").map_or_else(String::new, who)),
            other => format!("calling {other}"),
        }
    }

    /// Rebuilds the visible rows if the tree changed since the last call.
    pub fn refresh(&mut self) {
        if !self.rows_stale {
            return;
        }
        self.rows.clear();
        let mut stack: Vec<usize> = self.roots.iter().rev().copied().collect();
        while let Some(i) = stack.pop() {
            let node = &self.nodes[i];
            self.rows.push(Row { node: i, depth: node.depth });
            if node.expanded {
                stack.extend(node.children.iter().rev().copied());
            }
        }
        self.rows_stale = false;
    }

    /// The visible rows, as of the last [`RunView::refresh`].
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Where `uri` is among the visible rows.
    pub fn row_of(&self, uri: TaskId) -> Option<usize> {
        let i = *self.index.get(&uri)?;
        self.rows.iter().position(|row| row.node == i)
    }

    /// Expands or collapses `uri`'s children. Returns whether anything changed.
    pub fn set_expanded(&mut self, uri: TaskId, expanded: bool) -> bool {
        let Some(&i) = self.index.get(&uri) else { return false };
        let node = &mut self.nodes[i];
        if node.expanded == expanded || node.children.is_empty() {
            return false;
        }
        node.expanded = expanded;
        self.rows_stale = true;
        true
    }

    /// Makes `uri` visible by expanding its ancestors.
    pub fn reveal(&mut self, uri: TaskId) {
        let Some(&i) = self.index.get(&uri) else { return };
        let mut at = self.nodes[i].parent;
        while let Some(j) = at {
            if !self.nodes[j].expanded {
                self.nodes[j].expanded = true;
                self.rows_stale = true;
            }
            at = self.nodes[j].parent;
        }
    }

    /// The next task after `from` (in tree order, wrapping, hidden ones included) whose status
    /// matches.
    pub fn next_with(&self, from: Option<TaskId>, wanted: impl Fn(TaskStatus) -> bool) -> Option<TaskId> {
        let order = self.tree_order();
        let start = from.and_then(|uri| self.index.get(&uri)).and_then(|&i| order.iter().position(|&n| n == i));
        let n = order.len();
        (1..=n)
            .map(|step| order[(start.map_or(n - 1, |s| s) + step) % n])
            .find(|&i| wanted(self.nodes[i].status))
            .map(|i| self.nodes[i].uri)
    }

    /// Every node in depth-first order, collapsed or not.
    fn tree_order(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<usize> = self.roots.iter().rev().copied().collect();
        while let Some(i) = stack.pop() {
            order.push(i);
            stack.extend(self.nodes[i].children.iter().rev().copied());
        }
        order
    }

    /// How many tasks are under `uri` (not counting itself).
    pub fn descendants(&self, uri: TaskId) -> usize {
        let Some(&i) = self.index.get(&uri) else { return 0 };
        let mut stack = self.nodes[i].children.clone();
        let mut total = 0;
        while let Some(j) = stack.pop() {
            total += 1;
            stack.extend(self.nodes[j].children.iter().copied());
        }
        total
    }
}

fn count(counts: &mut TaskCounts, status: TaskStatus, delta: i64) {
    let slot = match status {
        TaskStatus::Working | TaskStatus::InputRequired => &mut counts.working,
        TaskStatus::Completed => &mut counts.completed,
        TaskStatus::Failed => &mut counts.failed,
        TaskStatus::Cancelled => &mut counts.cancelled,
    };
    *slot = slot.saturating_add_signed(delta);
}

/// A tool result as a person reads it: a subtask resource as its agent, state and answer; a
/// list of them as one line each. Anything else as compact JSON.
fn summarize_result(result: &Value) -> String {
    let resource = |v: &Value| -> Option<String> {
        let uri = v.get("uri")?.as_str()?;
        let status = v.get("status")?.as_str()?;
        let agent = v.get("agent").and_then(Value::as_str);
        let mut line = match agent {
            Some(agent) => format!("{agent} {uri} {status}"),
            None => format!("{uri} {status}"),
        };
        if let Some(text) = v.get("result").and_then(Value::as_str) {
            line.push_str(": ");
            line.push_str(text);
        } else if let Some(text) = v.get("error").and_then(Value::as_str) {
            line.push_str(": ");
            line.push_str(text);
        }
        Some(line)
    };
    match result {
        Value::String(text) => text.clone(),
        Value::Array(items) if !items.is_empty() && items.iter().all(|i| resource(i).is_some()) => {
            items.iter().filter_map(resource).map(|line| format!("\n  {line}")).collect::<String>()
        }
        other => resource(other).unwrap_or_else(|| compact(other)),
    }
}

/// JSON on one line, as a transcript shows arguments.
fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests;
