//! The subtask registry: every `subtask://` resource of one run, its state, result, usage and
//! place in the tree, and the limits that govern creating more.
//!
//! Invariants: pure (no clock, no tokio; `now` comes in as an argument). A terminal state is
//! final and a result is written once: later attempts are refused, not applied. Nothing but
//! usage is said of a task after its final status ([`Registry::drops_after_end`], which the
//! driver's `emit` asks of every event). A task's
//! parent exists before it and never changes, so the tree has no cycles.
//!
//! Tasks live in a `Vec` in creation order; a [`TaskId`]'s code is the index scrambled by a
//! bijection on 30 bits (multiply by an odd constant, add a per-run salt), so ids are unique
//! without a collision check, siblings' URIs differ in many characters (easier for a small model
//! to tell apart), and decoding an id is arithmetic, not a hash lookup.

use std::sync::Arc;

use crate::protocol::{
    CODE_SPACE, EventBody, Millis, TaskCounts, TaskId, TaskKind, TaskResource, TaskStatus, Usage, format_millis,
};

const MASK: u32 = CODE_SPACE - 1;
/// Odd, so multiplication by it is a bijection modulo 2^30.
const SCRAMBLE: u32 = 0x2545_F491 & MASK;

/// Modular inverse of [`SCRAMBLE`] modulo 2^32 (and so modulo 2^30), by Newton's iteration.
const fn inverse(a: u32) -> u32 {
    let mut x = a; // correct to 3 bits for odd a
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u32.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}
const UNSCRAMBLE: u32 = inverse(SCRAMBLE);

/// What a new task is.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub parent: Option<TaskId>,
    pub kind: TaskKind,
    /// Shared, since thousands of tasks name the same few experts and models.
    pub agent: Arc<str>,
    pub model: Arc<str>,
    pub task: String,
}

/// The limits checked when a task is created (the rest are the driver's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateLimits {
    pub max_depth: u32,
    /// For the parent: its expert's override or the run's default.
    pub max_children: u32,
    pub max_concurrent: u32,
    pub max_total: u32,
}

/// A limit that refused something. `limit` is the `troupe.toml` key, so the user knows what to
/// raise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LimitHit {
    pub limit: &'static str,
    pub value: u64,
    pub message: String,
}

/// How a task ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed(String),
    Failed(String),
    Cancelled(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("no task {0} in this run")]
    Unknown(TaskId),
    #[error("{0} is already {1}; its result is final")]
    AlreadyFinal(TaskId, TaskStatus),
}

#[derive(Debug)]
struct TaskRecord {
    kind: TaskKind,
    status: TaskStatus,
    depth: u16,
    parent: Option<u32>,
    agent: Arc<str>,
    model: Arc<str>,
    task: Box<str>,
    status_message: Option<Box<str>>,
    /// The result when completed, the reason when failed or cancelled.
    outcome_text: Option<Box<str>>,
    created_at: Millis,
    finished_at: Option<Millis>,
    usage: Usage,
    children: Vec<u32>,
}

/// All tasks of a run.
#[derive(Debug)]
pub struct Registry {
    salt: u32,
    tasks: Vec<TaskRecord>,
    /// Non-root tasks in a non-terminal state.
    working_subtasks: u32,
    run_usage: Usage,
}

impl Registry {
    /// `salt` varies the URIs between runs; the same salt gives the same URIs.
    pub fn new(salt: u32) -> Self {
        Registry { salt: salt & MASK, tasks: Vec::new(), working_subtasks: 0, run_usage: Usage::default() }
    }

    fn id_of(&self, index: u32) -> TaskId {
        TaskId::from_code(index.wrapping_mul(SCRAMBLE).wrapping_add(self.salt) & MASK)
    }

    fn index_of(&self, id: TaskId) -> Result<u32, RegistryError> {
        let index = id.code().wrapping_sub(self.salt).wrapping_mul(UNSCRAMBLE) & MASK;
        if (index as usize) < self.tasks.len() { Ok(index) } else { Err(RegistryError::Unknown(id)) }
    }

    fn record(&self, id: TaskId) -> Result<&TaskRecord, RegistryError> {
        Ok(&self.tasks[self.index_of(id)? as usize])
    }

    /// Creates a task in `working`, after checking the limits (not for the root: a run always
    /// gets its root).
    pub fn create(&mut self, new: NewTask, limits: &CreateLimits, now: Millis) -> Result<TaskId, CreateError> {
        let parent = match new.parent {
            None => None,
            Some(parent_id) => {
                let index = self.index_of(parent_id)?;
                let parent = &self.tasks[index as usize];
                if parent.status.is_terminal() {
                    return Err(RegistryError::AlreadyFinal(parent_id, parent.status).into());
                }
                let depth = u32::from(parent.depth) + 1;
                if depth > limits.max_depth {
                    return Err(limit(
                        "max_depth",
                        limits.max_depth,
                        format!(
                            "max_depth is {}: a subtask here would be at depth {depth}; do the work yourself or answer with what you have",
                            limits.max_depth
                        ),
                    ));
                }
                if parent.children.len() as u32 >= limits.max_children {
                    return Err(limit(
                        "max_children_per_agent",
                        limits.max_children,
                        format!(
                            "max_children_per_agent is {}: this agent has already started {} subtasks",
                            limits.max_children,
                            parent.children.len()
                        ),
                    ));
                }
                if self.working_subtasks >= limits.max_concurrent {
                    return Err(limit(
                        "max_concurrent_subtasks",
                        limits.max_concurrent,
                        format!(
                            "max_concurrent_subtasks is {}: wait for a working subtask with get_task_status before starting another",
                            limits.max_concurrent
                        ),
                    ));
                }
                let total = self.tasks.len().saturating_sub(1) as u32;
                if total >= limits.max_total {
                    return Err(limit(
                        "max_subtasks_per_run",
                        limits.max_total,
                        format!("max_subtasks_per_run is {}: this run has started {total} subtasks", limits.max_total),
                    ));
                }
                Some((index, depth))
            }
        };
        let index = self.tasks.len() as u32;
        if index >= CODE_SPACE {
            return Err(limit(
                "max_subtasks_per_run",
                u64::from(CODE_SPACE - 1) as u32,
                "a run cannot hold more tasks".into(),
            ));
        }
        self.tasks.push(TaskRecord {
            kind: new.kind,
            status: TaskStatus::Working,
            depth: parent.map_or(0, |(_, d)| d.min(u32::from(u16::MAX)) as u16),
            parent: parent.map(|(p, _)| p),
            agent: new.agent,
            model: new.model,
            task: new.task.into_boxed_str(),
            status_message: None,
            outcome_text: None,
            created_at: now,
            finished_at: None,
            usage: Usage::default(),
            children: Vec::new(),
        });
        if let Some((p, _)) = parent {
            self.tasks[p as usize].children.push(index);
            self.working_subtasks += 1;
        }
        Ok(self.id_of(index))
    }

    /// Ends a task. Refused if it already ended: a result is written once.
    pub fn finish(&mut self, id: TaskId, outcome: Outcome, now: Millis) -> Result<TaskStatus, RegistryError> {
        let index = self.index_of(id)? as usize;
        let record = &mut self.tasks[index];
        if record.status.is_terminal() {
            return Err(RegistryError::AlreadyFinal(id, record.status));
        }
        let (status, text) = match outcome {
            Outcome::Completed(text) => (TaskStatus::Completed, text),
            Outcome::Failed(text) => (TaskStatus::Failed, text),
            Outcome::Cancelled(text) => (TaskStatus::Cancelled, text),
        };
        record.status = status;
        record.outcome_text = Some(text.into_boxed_str());
        record.finished_at = Some(now);
        record.status_message = None;
        if record.parent.is_some() {
            self.working_subtasks = self.working_subtasks.saturating_sub(1);
        }
        Ok(status)
    }

    /// Cancels `id` and every descendant still working; returns those cancelled, parents
    /// before their children.
    pub fn cancel_subtree(&mut self, id: TaskId, reason: &str, now: Millis) -> Result<Vec<TaskId>, RegistryError> {
        let start = self.index_of(id)?;
        let mut cancelled = Vec::new();
        let mut stack = vec![start];
        while let Some(index) = stack.pop() {
            let task_id = self.id_of(index);
            if !self.tasks[index as usize].status.is_terminal() {
                self.finish(task_id, Outcome::Cancelled(reason.to_owned()), now)?;
                cancelled.push(task_id);
            }
            stack.extend(self.tasks[index as usize].children.iter().rev());
        }
        Ok(cancelled)
    }

    pub fn set_status_message(&mut self, id: TaskId, message: Option<String>) -> Result<(), RegistryError> {
        let index = self.index_of(id)? as usize;
        let record = &mut self.tasks[index];
        if !record.status.is_terminal() {
            record.status_message = message.map(String::into_boxed_str);
        }
        Ok(())
    }

    /// Adds one model call's usage to the task and the run; returns both totals.
    pub fn add_usage(&mut self, id: TaskId, usage: &Usage) -> Result<(Usage, Usage), RegistryError> {
        let index = self.index_of(id)? as usize;
        self.tasks[index].usage.add(usage);
        self.run_usage.add(usage);
        Ok((self.tasks[index].usage, self.run_usage))
    }

    pub fn run_usage(&self) -> Usage {
        self.run_usage
    }

    pub fn status(&self, id: TaskId) -> Result<TaskStatus, RegistryError> {
        Ok(self.record(id)?.status)
    }

    pub fn parent(&self, id: TaskId) -> Result<Option<TaskId>, RegistryError> {
        Ok(self.record(id)?.parent.map(|p| self.id_of(p)))
    }

    pub fn depth(&self, id: TaskId) -> Result<u32, RegistryError> {
        Ok(u32::from(self.record(id)?.depth))
    }

    pub fn children(&self, id: TaskId) -> Result<Vec<TaskId>, RegistryError> {
        Ok(self.record(id)?.children.iter().map(|&c| self.id_of(c)).collect())
    }

    /// Children not yet in a terminal state.
    pub fn working_children(&self, id: TaskId) -> Result<Vec<TaskId>, RegistryError> {
        Ok(self
            .record(id)?
            .children
            .iter()
            .filter(|&&c| !self.tasks[c as usize].status.is_terminal())
            .map(|&c| self.id_of(c))
            .collect())
    }

    /// Whether `id` is `ancestor` or lies below it.
    pub fn is_within(&self, id: TaskId, ancestor: TaskId) -> Result<bool, RegistryError> {
        let target = self.index_of(ancestor)?;
        let mut current = Some(self.index_of(id)?);
        while let Some(index) = current {
            if index == target {
                return Ok(true);
            }
            current = self.tasks[index as usize].parent;
        }
        Ok(false)
    }

    /// The resource as `get_task_status` returns it.
    pub fn resource(&self, id: TaskId) -> Result<TaskResource, RegistryError> {
        let record = self.record(id)?;
        let (result, error) = match record.status {
            TaskStatus::Completed => (record.outcome_text.as_deref().map(str::to_owned), None),
            TaskStatus::Failed | TaskStatus::Cancelled => (None, record.outcome_text.as_deref().map(str::to_owned)),
            TaskStatus::Working | TaskStatus::InputRequired => (None, None),
        };
        Ok(TaskResource {
            uri: id,
            kind: record.kind,
            parent: record.parent.map(|p| self.id_of(p)),
            agent: record.agent.to_string(),
            model: record.model.to_string(),
            task: record.task.to_string(),
            status: record.status,
            status_message: record.status_message.as_deref().map(str::to_owned),
            result,
            error,
            created_at: format_millis(record.created_at),
            finished_at: record.finished_at.map(format_millis),
            usage: record.usage,
            children: record.children.iter().map(|&c| self.id_of(c)).collect(),
        })
    }

    pub fn counts(&self) -> TaskCounts {
        let mut counts = TaskCounts::default();
        for record in &self.tasks {
            match record.status {
                TaskStatus::Working | TaskStatus::InputRequired => counts.working += 1,
                TaskStatus::Completed => counts.completed += 1,
                TaskStatus::Failed => counts.failed += 1,
                TaskStatus::Cancelled => counts.cancelled += 1,
            }
        }
        counts
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// The task an event speaks for, when the event must not be said once that task has reached its
/// final status: its messages, deltas, tool calls and results, limits hit, routing, recalled
/// lessons, MCP tools and children's policy (a chunk already in flight when a cancellation lands
/// is such an event). `None` for what is always said: the run's start and end, a task's creation
/// and statuses (its final status is how it ends), and usage, since those tokens were spent.
pub fn silenced_after_end(body: &EventBody) -> Option<TaskId> {
    match body {
        EventBody::Message { uri, .. }
        | EventBody::MessageDelta { uri, .. }
        | EventBody::ToolCall { uri, .. }
        | EventBody::ToolResult { uri, .. }
        | EventBody::LimitHit { uri, .. }
        | EventBody::Routed { uri, .. }
        | EventBody::MemoryRecalled { uri, .. }
        | EventBody::McpTools { uri, .. }
        | EventBody::ChildrenOnFinish { uri, .. } => Some(*uri),
        EventBody::RunStarted { .. }
        | EventBody::TaskCreated { .. }
        | EventBody::TaskStatus { .. }
        | EventBody::Usage { .. }
        | EventBody::RunFinished { .. } => None,
    }
}

impl Registry {
    /// Whether `body` must be dropped rather than said: it speaks for a task (see
    /// [`silenced_after_end`]) that has reached its final status, or that this run does not
    /// have.
    pub fn drops_after_end(&self, body: &EventBody) -> bool {
        silenced_after_end(body).is_some_and(|uri| self.status(uri).map_or(true, TaskStatus::is_terminal))
    }
}

/// Why a task could not be created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Limit(#[from] LimitHit),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn limit(name: &'static str, value: u32, message: String) -> CreateError {
    CreateError::Limit(LimitHit { limit: name, value: u64::from(value), message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const WIDE: CreateLimits = CreateLimits { max_depth: 10, max_children: 100, max_concurrent: 100, max_total: 1000 };

    fn new(parent: Option<TaskId>, task: &str) -> NewTask {
        NewTask { parent, kind: TaskKind::Agent, agent: "a".into(), model: "m".into(), task: task.into() }
    }

    #[test]
    fn ids_are_unique_decodable_and_unlike_their_siblings() {
        let mut reg = Registry::new(12345);
        let root = reg.create(new(None, "root"), &WIDE, 0).unwrap();
        let mut seen = std::collections::HashSet::new();
        seen.insert(root);
        let mut previous = root.short();
        for i in 0..500 {
            let id = reg
                .create(
                    new(Some(root), &format!("t{i}")),
                    &CreateLimits { max_children: 1000, max_concurrent: 1000, ..WIDE },
                    0,
                )
                .unwrap();
            assert!(seen.insert(id), "duplicate id {id}");
            assert_eq!(reg.resource(id).unwrap().task, format!("t{i}"));
            let short = id.short();
            let same = short.chars().zip(previous.chars()).filter(|(a, b)| a == b).count();
            assert!(same <= 4, "{short} vs {previous}");
            previous = short;
        }
        assert_eq!(
            reg.status(TaskId::parse("subtask://zzzzzz").unwrap()),
            Err(RegistryError::Unknown(TaskId::parse("zzzzzz").unwrap()))
        );
    }

    #[test]
    fn a_result_is_written_once() {
        let mut reg = Registry::new(1);
        let root = reg.create(new(None, "root"), &WIDE, 10).unwrap();
        assert_eq!(reg.finish(root, Outcome::Completed("first".into()), 20), Ok(TaskStatus::Completed));
        assert_eq!(
            reg.finish(root, Outcome::Failed("second".into()), 30),
            Err(RegistryError::AlreadyFinal(root, TaskStatus::Completed))
        );
        let resource = reg.resource(root).unwrap();
        assert_eq!(resource.result.as_deref(), Some("first"));
        assert_eq!(resource.finished_at, Some(format_millis(20)));
    }

    /// Each row: the limits, how many children the root already has (all still working), and
    /// the limit key that refuses one more, if any.
    #[test]
    fn creation_limits() {
        let table: &[(CreateLimits, u32, u32, Option<&str>)] = &[
            // (limits, children of root, depth of parent, refused by)
            (WIDE, 0, 0, None),
            (CreateLimits { max_depth: 1, ..WIDE }, 0, 1, Some("max_depth")),
            (CreateLimits { max_depth: 2, ..WIDE }, 0, 1, None),
            (CreateLimits { max_children: 3, ..WIDE }, 3, 0, Some("max_children_per_agent")),
            (CreateLimits { max_concurrent: 2, ..WIDE }, 2, 0, Some("max_concurrent_subtasks")),
            (CreateLimits { max_total: 2, ..WIDE }, 2, 0, Some("max_subtasks_per_run")),
        ];
        for (limits, children, depth, expected) in table {
            let mut reg = Registry::new(7);
            let root = reg.create(new(None, "root"), &WIDE, 0).unwrap();
            for i in 0..*children {
                reg.create(new(Some(root), &format!("c{i}")), &WIDE, 0).unwrap();
            }
            let mut parent = root;
            for _ in 0..*depth {
                parent = reg
                    .create(
                        new(Some(parent), "deeper"),
                        &CreateLimits { max_concurrent: 1000, max_children: 1000, ..WIDE },
                        0,
                    )
                    .unwrap();
            }
            let got = reg.create(new(Some(parent), "one more"), limits, 0);
            match expected {
                None => assert!(got.is_ok(), "{limits:?}: {got:?}"),
                Some(key) => match got {
                    Err(CreateError::Limit(hit)) => assert_eq!(hit.limit, *key, "{limits:?}: {}", hit.message),
                    other => panic!("{limits:?}: expected {key}, got {other:?}"),
                },
            }
        }
    }

    #[test]
    fn finished_children_free_a_concurrency_slot() {
        let limits = CreateLimits { max_concurrent: 1, ..WIDE };
        let mut reg = Registry::new(0);
        let root = reg.create(new(None, "root"), &WIDE, 0).unwrap();
        let first = reg.create(new(Some(root), "a"), &limits, 0).unwrap();
        assert!(reg.create(new(Some(root), "b"), &limits, 0).is_err());
        reg.finish(first, Outcome::Completed("ok".into()), 1).unwrap();
        assert!(reg.create(new(Some(root), "b"), &limits, 2).is_ok());
    }

    #[test]
    fn cancelling_a_subtree_spares_finished_tasks_and_other_branches() {
        let mut reg = Registry::new(99);
        let root = reg.create(new(None, "root"), &WIDE, 0).unwrap();
        let a = reg.create(new(Some(root), "a"), &WIDE, 0).unwrap();
        let a1 = reg.create(new(Some(a), "a1"), &WIDE, 0).unwrap();
        let a2 = reg.create(new(Some(a), "a2"), &WIDE, 0).unwrap();
        let a11 = reg.create(new(Some(a1), "a11"), &WIDE, 0).unwrap();
        let b = reg.create(new(Some(root), "b"), &WIDE, 0).unwrap();
        reg.finish(a2, Outcome::Completed("done".into()), 1).unwrap();

        let cancelled = reg.cancel_subtree(a, "stopped by the user", 2).unwrap();
        assert_eq!(cancelled, vec![a, a1, a11]);
        assert_eq!(reg.status(a2), Ok(TaskStatus::Completed));
        assert_eq!(reg.status(b), Ok(TaskStatus::Working));
        assert_eq!(reg.resource(a11).unwrap().error.as_deref(), Some("stopped by the user"));
        assert_eq!(reg.counts(), TaskCounts { working: 2, completed: 1, failed: 0, cancelled: 3 });
        assert_eq!(reg.is_within(a11, a), Ok(true));
        assert_eq!(reg.is_within(b, a), Ok(false));
        assert_eq!(reg.working_children(root), Ok(vec![b]));
    }

    #[test]
    fn usage_adds_up_per_task_and_per_run() {
        let mut reg = Registry::new(5);
        let root = reg.create(new(None, "root"), &WIDE, 0).unwrap();
        let child = reg.create(new(Some(root), "c"), &WIDE, 0).unwrap();
        let call = Usage { input_tokens: 100, output_tokens: 10, model_calls: 1 };
        reg.add_usage(root, &call).unwrap();
        let (task, run) = reg.add_usage(child, &call).unwrap();
        assert_eq!(task, call);
        assert_eq!(run, Usage { input_tokens: 200, output_tokens: 20, model_calls: 2 });
    }

    #[test]
    fn nothing_but_usage_is_said_of_a_task_after_its_final_status() {
        use crate::protocol::{ChatMessage, OnFinish, RunStatus};

        let mut reg = Registry::new(7);
        let working = reg.create(new(None, "root"), &WIDE, 0).unwrap();
        let completed = reg.create(new(Some(working), "done"), &WIDE, 0).unwrap();
        let failed = reg.create(new(Some(working), "broke"), &WIDE, 0).unwrap();
        let cancelled = reg.create(new(Some(working), "stopped"), &WIDE, 0).unwrap();
        reg.finish(completed, Outcome::Completed("ok".into()), 1).unwrap();
        reg.finish(failed, Outcome::Failed("no".into()), 1).unwrap();
        reg.cancel_subtree(cancelled, "user", 1).unwrap();
        // An id this run never created (another run's salt).
        let stranger = Registry::new(99).create(new(None, "elsewhere"), &WIDE, 0).unwrap();
        assert!(reg.status(stranger).is_err(), "the stranger must be unknown to this run");

        let body = |kind: &str, uri: TaskId| -> EventBody {
            let message = ChatMessage::user("hi");
            match kind {
                "message" => EventBody::Message { uri, role: message.role, content: message.content },
                "delta" => EventBody::MessageDelta { uri, delta: "x".into() },
                "tool_call" => {
                    EventBody::ToolCall { uri, call_id: "c".into(), tool: "t".into(), arguments: serde_json::json!({}) }
                }
                "tool_result" => EventBody::ToolResult {
                    uri,
                    call_id: "c".into(),
                    tool: "t".into(),
                    result: serde_json::json!("r"),
                    is_error: false,
                },
                "limit_hit" => EventBody::LimitHit { uri, limit: "l".into(), value: 1, message: "m".into() },
                "routed" => EventBody::Routed { uri, alias: "a".into(), reason: "r".into() },
                "memory_recalled" => EventBody::MemoryRecalled { uri, lessons: Vec::new(), error: None },
                "mcp_tools" => EventBody::McpTools { uri, tools: Vec::new(), problems: Vec::new() },
                "children_on_finish" => {
                    EventBody::ChildrenOnFinish { uri, policy: OnFinish::CancelChildren, children: Vec::new() }
                }
                "usage" => EventBody::Usage {
                    uri,
                    input_tokens: 1,
                    output_tokens: 1,
                    task_total: Usage::default(),
                    run_total: Usage::default(),
                },
                "task_status" => EventBody::TaskStatus {
                    uri,
                    status: TaskStatus::Completed,
                    status_message: None,
                    result: None,
                    error: None,
                },
                "task_created" => EventBody::TaskCreated {
                    uri,
                    parent: None,
                    kind: TaskKind::Agent,
                    agent: "a".into(),
                    model: "m".into(),
                    task: "t".into(),
                },
                "run_started" => EventBody::RunStarted {
                    run_id: "r".into(),
                    experiment: "e".into(),
                    root_agent: "a".into(),
                    task: "t".into(),
                    prices: Default::default(),
                    format: 1,
                    troupe_version: None,
                },
                "run_finished" => EventBody::RunFinished {
                    status: RunStatus::Completed,
                    result: None,
                    error: None,
                    usage: Usage::default(),
                    tasks: TaskCounts::default(),
                    elapsed_ms: 0,
                },
                other => unreachable!("no event kind {other} in this table"),
            }
        };
        let check = |kind: &str, uri: TaskId, dropped: bool| {
            assert_eq!(
                reg.drops_after_end(&body(kind, uri)),
                dropped,
                "{kind} of a task that is {:?}",
                reg.status(uri)
            );
        };

        let silenced = [
            "message",
            "delta",
            "tool_call",
            "tool_result",
            "limit_hit",
            "routed",
            "memory_recalled",
            "mcp_tools",
            "children_on_finish",
        ];
        for kind in silenced {
            check(kind, working, false);
            check(kind, completed, true);
            check(kind, failed, true);
            check(kind, cancelled, true);
            check(kind, stranger, true);
        }
        // Always said: usage (those tokens were spent), statuses, creation, the run's ends.
        for kind in ["usage", "task_status", "task_created", "run_started", "run_finished"] {
            for uri in [working, completed, failed, cancelled, stranger] {
                check(kind, uri, false);
            }
        }
    }
}
