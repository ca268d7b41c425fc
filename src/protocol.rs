//! The vocabulary every part of troupe shares: task ids and `subtask://` URIs, task states,
//! usage, chat messages, tool schemas, the [`Event`]s the runtime emits and the [`Op`]s views
//! send it.
//!
//! Invariant: pure data. Nothing here reads a clock, touches a file or knows tokio; time comes in
//! as [`Millis`] values chosen by the caller. The JSON shapes of [`Event`] and [`TaskResource`]
//! are a public contract (`events.jsonl` is read by other tools): rename nothing.

use std::fmt;
use std::str::FromStr;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch. The runtime's only notion of time.
pub type Millis = u64;

/// Formats a [`Millis`] as RFC 3339 in UTC with millisecond precision.
pub fn format_millis(ms: Millis) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Names of the built-in tools, in the order they are offered to models.
pub const BUILTIN_TOOLS: [&str; 7] =
    ["call_agent", "call_slm", "get_task_status", "cancel_task", "list_tasks", "remember", "recall"];

/// `text` cut to `max` characters, with `…` when something was cut. For messages that quote
/// what a user or a model wrote.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// The URI scheme of subtask resources.
pub const SUBTASK_SCHEME: &str = "subtask://";

/// Crockford's base32 alphabet, lower case: no `i`, `l`, `o` or `u`, so a small model copying a
/// URI has fewer look-alike characters to confuse.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Number of base32 characters in a task code: 6 × 5 = 30 bits.
const CODE_LEN: usize = 6;
/// The largest code plus one.
pub const CODE_SPACE: u32 = 1 << 30;

/// A subtask's identity: a 30-bit code shown as six base32 characters (`subtask://k3v9q2`).
///
/// Which code a task gets is the registry's business (it scrambles a counter so that sibling
/// URIs do not differ in one character only); this type only carries and prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u32);

impl TaskId {
    /// Wraps a code; codes above 30 bits are masked.
    pub fn from_code(code: u32) -> Self {
        TaskId(code & (CODE_SPACE - 1))
    }

    pub fn code(self) -> u32 {
        self.0
    }

    /// The six characters after `subtask://`.
    pub fn short(self) -> String {
        let mut out = String::with_capacity(CODE_LEN);
        for i in (0..CODE_LEN).rev() {
            let digit = (self.0 >> (5 * i)) & 31;
            out.push(ALPHABET[digit as usize] as char);
        }
        out
    }

    /// Parses `subtask://xxxxxx` or the bare six characters; case and surrounding whitespace
    /// are forgiven, since models copy URIs imperfectly.
    pub fn parse(text: &str) -> Result<Self, ParseTaskIdError> {
        let trimmed = text.trim().trim_matches(|c| c == '"' || c == '\'' || c == '`');
        let lower = trimmed.to_ascii_lowercase();
        let body = lower.strip_prefix(SUBTASK_SCHEME).unwrap_or(&lower);
        let body = body.trim_end_matches('/');
        if body.len() != CODE_LEN {
            return Err(ParseTaskIdError(text.to_owned()));
        }
        let mut code = 0u32;
        for byte in body.bytes() {
            let digit = ALPHABET.iter().position(|&a| a == byte).ok_or_else(|| ParseTaskIdError(text.to_owned()))?;
            code = (code << 5) | digit as u32;
        }
        Ok(TaskId(code))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SUBTASK_SCHEME}{}", self.short())
    }
}

impl FromStr for TaskId {
    type Err = ParseTaskIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskId::parse(s)
    }
}

impl Serialize for TaskId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TaskId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a subtask URI (expected subtask:// followed by six characters, like subtask://k3v9q2)")]
pub struct ParseTaskIdError(pub String);

/// A subtask's state, named as the Model Context Protocol names task states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Working,
    /// Reserved for a subtask that asks its parent a question; nothing enters it yet.
    InputRequired,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        match self {
            TaskStatus::Working | TaskStatus::InputRequired => false,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Working => "working",
            TaskStatus::InputRequired => "input_required",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What runs behind a subtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A full agent loop (the root, or `call_agent`).
    Agent,
    /// One completion of the small model (`call_slm`).
    Slm,
    /// A tool call an MCP server runs as a task (the Tasks extension), polled with `tasks/get`.
    Mcp,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Agent => "agent",
            TaskKind::Slm => "slm",
            TaskKind::Mcp => "mcp",
        }
    }
}

/// What one model alias costs, in dollars per million tokens (`troupe.toml`'s
/// `price_input_per_mtok` and `price_output_per_mtok`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// Dollars for `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input_per_mtok + usage.output_tokens as f64 * self.output_per_mtok) / 1e6
    }
}

/// Tokens and model calls spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub model_calls: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Saturating: a provider reporting absurd counts must not wrap the run's budget around.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.model_calls = self.model_calls.saturating_add(other.model_calls);
    }
}

/// A subtask resource as agents (`get_task_status`) and MCP clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResource {
    pub uri: TaskId,
    pub kind: TaskKind,
    pub parent: Option<TaskId>,
    pub agent: String,
    pub model: String,
    pub task: String,
    pub status: TaskStatus,
    pub status_message: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub usage: Usage,
    pub children: Vec<TaskId>,
}

/// Who speaks a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call as a model made it: `id` pairs it with its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One message of a conversation, in the shape every provider can translate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// Calls an assistant message makes (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a `tool` message: the tool's name (Anthropic and the transcript want it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// For a `tool` message: the result is an error the model should read and correct.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        ChatMessage { tool_calls, ..Self::plain(Role::Assistant, content) }
    }

    pub fn tool_result(call: &ToolCall, content: impl Into<String>, is_error: bool) -> Self {
        ChatMessage {
            tool_call_id: Some(call.id.clone()),
            tool_name: Some(call.name.clone()),
            is_error,
            ..Self::plain(Role::Tool, content)
        }
    }

    fn plain(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            tool_name: None,
            is_error: false,
        }
    }
}

/// A tool as offered to a model: a function name, what it does, and a JSON schema of its
/// arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// Whether a model must call a tool on a turn that offers tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model answers or calls tools, as it sees fit.
    #[default]
    Auto,
    /// Every turn that offers tools must call at least one; the agent's last turn offers none,
    /// so it still ends with an answer. Small models delegate reliably only this way.
    Required,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The root agent finished with an answer.
    Completed,
    /// The root agent failed: a model error, a limit, a bad tool loop.
    Failed,
    /// The user stopped the run.
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// What happens to children still working when their parent finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFinish {
    /// Cancel every child still working; the parent's result is final at once.
    CancelChildren,
    /// The parent stays `working` until every child is terminal, then completes.
    WaitForChildren,
}

impl OnFinish {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFinish::CancelChildren => "cancel_children",
            OnFinish::WaitForChildren => "wait_for_children",
        }
    }
}

/// Counts of tasks by state, for headers and summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    pub working: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl TaskCounts {
    pub fn total(&self) -> u64 {
        self.working + self.completed + self.failed + self.cancelled
    }
}

/// One fact from the runtime. Serialized as one line of `events.jsonl`:
/// `{"seq": 7, "ts": "2026-11-25T09:25:03.120Z", "type": "task_created", ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing from 0 within a run.
    pub seq: u64,
    #[serde(with = "rfc3339_millis")]
    pub ts: Millis,
    #[serde(flatten)]
    pub body: EventBody,
}

/// The format of `events.jsonl` this troupe writes and reads up to. Bumped when a change is not
/// additive; a log of a newer format is refused naming the troupe that wrote it.
pub const EVENTS_FORMAT: u32 = 1;

/// This troupe's version, as written into the files it makes.
pub const TROUPE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn first_events_format() -> u32 {
    1
}

/// The kinds of [`Event`]. Names and fields are stable: other tools read them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    RunStarted {
        run_id: String,
        experiment: String,
        root_agent: String,
        task: String,
        /// Prices of the aliases that have one: any view derives cost from tokens with them.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        prices: BTreeMap<String, Price>,
        /// The format of this `events.jsonl` ([`EVENTS_FORMAT`] when written); logs written
        /// before the field existed are format 1.
        #[serde(default = "first_events_format")]
        format: u32,
        /// The troupe that wrote the log, so a newer log can be named as such.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        troupe_version: Option<String>,
    },
    TaskCreated {
        uri: TaskId,
        /// `null` for the root agent.
        parent: Option<TaskId>,
        kind: TaskKind,
        agent: String,
        model: String,
        task: String,
    },
    TaskStatus {
        uri: TaskId,
        status: TaskStatus,
        status_message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A whole message of a task's conversation (system, user, assistant or tool).
    Message {
        uri: TaskId,
        role: Role,
        content: String,
    },
    /// A piece of assistant text as it streams; the whole text follows as a `message`.
    MessageDelta {
        uri: TaskId,
        delta: String,
    },
    ToolCall {
        uri: TaskId,
        call_id: String,
        tool: String,
        arguments: Value,
    },
    ToolResult {
        uri: TaskId,
        call_id: String,
        tool: String,
        result: Value,
        is_error: bool,
    },
    /// Spent by one model call of `uri`; `task_total` and `run_total` are running sums.
    Usage {
        uri: TaskId,
        input_tokens: u64,
        output_tokens: u64,
        task_total: Usage,
        run_total: Usage,
    },
    /// `model = "auto"` chose the alias `uri` runs on, and why.
    Routed {
        uri: TaskId,
        alias: String,
        reason: String,
    },
    /// Lessons from long-term memory added to an agent's system prompt as it started (an
    /// empty list is not emitted); `error` when recalling failed and the agent started without.
    MemoryRecalled {
        uri: TaskId,
        lessons: Vec<RecalledLesson>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The MCP tools an agent was given as it started: the name its model sees and the
    /// `mcp:<server>/<tool>` it stands for; `problems` names servers that could not be reached
    /// (their tools are missing from the list).
    McpTools {
        uri: TaskId,
        tools: Vec<McpToolName>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        problems: Vec<String>,
    },
    /// A limit stopped something. `limit` is the `troupe.toml` key.
    LimitHit {
        uri: TaskId,
        limit: String,
        value: u64,
        message: String,
    },
    /// A parent finished while children were still working; says what was done with them.
    ChildrenOnFinish {
        uri: TaskId,
        policy: OnFinish,
        children: Vec<TaskId>,
    },
    RunFinished {
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        usage: Usage,
        tasks: TaskCounts,
        elapsed_ms: u64,
    },
}

impl EventBody {
    /// The `type` field's value.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::RunStarted { .. } => "run_started",
            EventBody::TaskCreated { .. } => "task_created",
            EventBody::TaskStatus { .. } => "task_status",
            EventBody::Message { .. } => "message",
            EventBody::MessageDelta { .. } => "message_delta",
            EventBody::ToolCall { .. } => "tool_call",
            EventBody::ToolResult { .. } => "tool_result",
            EventBody::Usage { .. } => "usage",
            EventBody::Routed { .. } => "routed",
            EventBody::MemoryRecalled { .. } => "memory_recalled",
            EventBody::McpTools { .. } => "mcp_tools",
            EventBody::LimitHit { .. } => "limit_hit",
            EventBody::ChildrenOnFinish { .. } => "children_on_finish",
            EventBody::RunFinished { .. } => "run_finished",
        }
    }
}

/// An MCP tool as an agent's model sees it (`name`, a valid function name for every provider)
/// and what it is (`reference`, `mcp:<server>/<tool>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpToolName {
    pub name: String,
    pub reference: String,
}

/// A lesson from long-term memory recalled for an agent, with its similarity to the task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecalledLesson {
    /// The memory item's id (`troupe memory show <id>`).
    pub id: i64,
    pub score: f32,
    pub text: String,
}

/// Commands from a view (the CLI, the TUI, MCP) to the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Cancel one task and its whole subtree.
    CancelTask { uri: TaskId },
    /// Cancel every task of the run; the run finishes as `cancelled`.
    CancelRun,
}

mod rfc3339_millis {
    use super::Millis;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Millis, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_millis(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(deserializer)?;
        let time = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
        let since = time.duration_since(std::time::UNIX_EPOCH).map_err(serde::de::Error::custom)?;
        Ok(since.as_millis() as Millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn task_ids_round_trip_through_their_uri() {
        for code in [0, 1, 31, 32, 1_000_003, CODE_SPACE - 1] {
            let id = TaskId::from_code(code);
            assert_eq!(TaskId::parse(&id.to_string()), Ok(id));
            assert_eq!(TaskId::parse(&id.short()), Ok(id));
        }
    }

    #[test]
    fn sloppy_copies_of_a_uri_still_parse() {
        let id = TaskId::from_code(123_456);
        let uri = id.to_string();
        for sloppy in [format!("  {uri} "), format!("\"{uri}\""), uri.to_uppercase(), format!("{uri}/")] {
            assert_eq!(TaskId::parse(&sloppy), Ok(id), "{sloppy}");
        }
        assert!(TaskId::parse("subtask://abc").is_err());
        assert!(TaskId::parse("subtask://abcdei").is_err(), "i is not in the alphabet");
    }

    #[test]
    fn events_serialize_with_seq_ts_and_type() {
        let event = Event {
            seq: 3,
            ts: 1_764_062_703_120,
            body: EventBody::TaskStatus {
                uri: TaskId::from_code(5),
                status: TaskStatus::Completed,
                status_message: None,
                result: Some("done".into()),
                error: None,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "seq": 3, "ts": "2025-11-25T09:25:03.120Z", "type": "task_status",
                "uri": "subtask://000005", "status": "completed", "status_message": null,
                "result": "done"
            })
        );
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
