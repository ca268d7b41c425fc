//! The validated shapes of the files a user writes: `troupe.toml` ([`Settings`]),
//! `agents/*.toml` ([`AgentSpec`]) and `experiments/*.toml` ([`ExperimentSpec`]).
//!
//! Invariant: a value of these types has passed validation; every reference in it (an expert's
//! model alias, its experts, an experiment's root) names something that exists in the same
//! [`Workbench`]. Paths are absolute.
//!
//! Longer than most files on purpose: every validated shape in one place, so a reader sees every
//! field any configuration file can set, and its default, side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::protocol::{OnFinish, ToolChoice};

/// A place in a file, 1-based, for diagnostics.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Location {
    pub path: PathBuf,
    pub line: u32,
    pub col: u32,
}

/// Everything in one workbench folder, validated.
#[derive(Clone, Debug)]
pub struct Workbench {
    /// The workbench folder (`--root`), absolute.
    pub root: PathBuf,
    pub settings: Settings,
    /// Experts by name.
    pub agents: BTreeMap<String, AgentSpec>,
    /// Experiments by name.
    pub experiments: BTreeMap<String, ExperimentSpec>,
}

/// `troupe.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Where it was read from; `None` when the workbench has no `troupe.toml` (defaults apply).
    pub path: Option<PathBuf>,
    /// Model aliases (`[models.<alias>]`).
    pub models: BTreeMap<String, ModelSpec>,
    /// `[limits]`.
    pub limits: Limits,
    /// `[routing]`: how `model = "auto"` picks an alias per subtask.
    pub routing: Option<Routing>,
    /// `[memory]`: where the workbench's memory is kept and how it is searched.
    pub memory: MemorySettings,
    /// `[mcp.servers.<name>]`: the MCP servers experts' `mcp:` tools reach.
    pub mcp_servers: BTreeMap<String, McpServerSpec>,
}

/// One `[mcp.servers.<name>]`.
#[derive(Clone, Debug, PartialEq)]
pub struct McpServerSpec {
    pub name: String,
    pub transport: McpTransport,
    /// The longest one call may take (`timeout_seconds`, default 60).
    pub timeout_seconds: u64,
    pub start: McpStart,
    /// The table's header.
    pub location: Location,
}

/// How an MCP server is reached.
#[derive(Clone, Debug, PartialEq)]
pub enum McpTransport {
    /// A program troupe starts and speaks to over its stdin and stdout. Only `env` reaches it:
    /// nothing else of troupe's environment is passed.
    Stdio {
        /// A bare name (looked up in PATH) or an absolute path.
        command: String,
        args: Vec<String>,
        /// Values are templates: `${NAME}` is read from troupe's environment at start.
        env: BTreeMap<String, String>,
        /// Absolute (default: the folder of troupe.toml).
        cwd: PathBuf,
    },
    /// A streamable HTTP endpoint.
    Http {
        url: String,
        /// Values are templates, as `env`'s.
        headers: BTreeMap<String, String>,
    },
}

/// When an MCP server is started (`start`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum McpStart {
    /// When a run first needs one of its tools.
    #[default]
    Lazy,
    /// When troupe starts a run or the workbench, so the first call pays nothing.
    Eager,
}

/// `[memory]` in `troupe.toml`, after defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct MemorySettings {
    /// The SQLite store (`path`). Absolute, except in a workbench without `troupe.toml`, where
    /// it is `.troupe/memory.sqlite` relative to the workbench: [`MemorySettings::store_path`]
    /// resolves both.
    pub path: PathBuf,
    /// Items a search returns (`k`).
    pub k: u32,
    /// The lowest cosine a recalled item may score (`min_score`), in [-1, 1].
    pub min_score: f32,
    /// The cosine at or above which a new item merges into an existing one (`merge_threshold`).
    pub merge_threshold: f32,
    pub backend: MemoryBackend,
    /// `reflect = true`: after each run the `reflector` expert writes lessons from it.
    pub reflect: bool,
}

/// Where the memory is kept (`backend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryBackend {
    /// One SQLite file per workbench (the default).
    Sqlite,
    /// PostgreSQL with pgvector, shared by a team, reached at the URL in the environment
    /// variable `url_env` (the URL holds a password, so it never sits in a file).
    Postgres { url_env: String },
}

impl MemoryBackend {
    pub fn as_str(&self) -> &'static str {
        match self {
            MemoryBackend::Sqlite => "sqlite",
            MemoryBackend::Postgres { .. } => "postgres",
        }
    }
}

impl MemorySettings {
    /// Items a search returns when `[memory]` does not say.
    pub const DEFAULT_K: u32 = 3;
    /// The lowest score a recalled item may have when `[memory]` does not say: MiniLM scores
    /// unrelated sentences below about 0.1 and related ones above 0.4.
    pub const DEFAULT_MIN_SCORE: f32 = 0.3;

    /// Cosine at or above which two items are the same memory when `[memory]` does not say.
    /// MiniLM puts paraphrases of one sentence at 0.85–0.95 and restatements with a word changed
    /// at 0.95 and above; 0.95 merges restatements while keeping related-but-different lessons
    /// apart.
    pub const DEFAULT_MERGE_THRESHOLD: f32 = 0.95;

    /// Where the SQLite store of the workbench in `folder` lives by default: its own folder.
    pub fn default_store_path(folder: &Path) -> PathBuf {
        folder.join(".troupe").join("memory.sqlite")
    }

    /// The defaults for the workbench in `folder` (the folder of `troupe.toml`): the store is
    /// `<folder>/.troupe/memory.sqlite`.
    pub fn in_folder(folder: &Path) -> Self {
        MemorySettings {
            path: Self::default_store_path(folder),
            k: Self::DEFAULT_K,
            min_score: Self::DEFAULT_MIN_SCORE,
            merge_threshold: Self::DEFAULT_MERGE_THRESHOLD,
            backend: MemoryBackend::Sqlite,
            reflect: false,
        }
    }

    /// The store's file for the workbench at `root`: `path` when absolute, else under `root`.
    pub fn store_path(&self, root: &Path) -> PathBuf {
        root.join(&self.path)
    }
}

/// The model alias an expert writes to be routed per subtask.
pub const AUTO_MODEL: &str = "auto";

/// The expert that reflects on a run when `reflect = true` (troupe ships `agents/reflector.toml`).
pub const REFLECTOR: &str = "reflector";

/// How hard an expert says its tasks are (`difficulty`), for routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difficulty {
    Easy,
    Medium,
    Hard,
}

impl Difficulty {
    pub const ALL: [(&'static str, Difficulty); 3] =
        [("easy", Difficulty::Easy), ("medium", Difficulty::Medium), ("hard", Difficulty::Hard)];

    pub fn as_str(self) -> &'static str {
        match self {
            Difficulty::Easy => "easy",
            Difficulty::Medium => "medium",
            Difficulty::Hard => "hard",
        }
    }
}

/// `[routing]` in `troupe.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// The alias when no rule matches (and no classification decides).
    pub default: String,
    /// Tried in order; the first that matches decides.
    pub rules: Vec<RouteRule>,
    /// Ask a small model whether the task is simple or complex when no rule matched.
    pub classify: Option<Classify>,
}

impl Routing {
    /// Every alias routing can send a subtask to (or asks to classify one).
    pub fn aliases(&self) -> Vec<String> {
        let mut all = vec![self.default.clone()];
        all.extend(self.rules.iter().map(|r| r.alias.clone()));
        if let Some(classify) = &self.classify {
            all.extend([classify.with.clone(), classify.simple.clone(), classify.complex.clone()]);
        }
        all
    }
}

/// `[[routing.rules]]`: every condition given must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRule {
    /// The alias this rule sends the subtask to (`use`).
    pub alias: String,
    pub difficulty: Option<Difficulty>,
    pub max_task_chars: Option<u64>,
    pub min_task_chars: Option<u64>,
    /// Any of them in the task, ignoring case.
    pub keywords: Vec<String>,
}

/// `[routing.classify]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Classify {
    /// The alias asked.
    pub with: String,
    pub simple: String,
    pub complex: String,
}

/// Which code serves a model alias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// The embedded model, in-process.
    Local,
    /// An OpenAI-compatible chat-completions endpoint.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// A deterministic script of replies: a test tool.
    Scripted,
}

impl ProviderKind {
    pub const ALL: [(&'static str, ProviderKind); 4] = [
        ("local", ProviderKind::Local),
        ("openai", ProviderKind::Openai),
        ("anthropic", ProviderKind::Anthropic),
        ("scripted", ProviderKind::Scripted),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Scripted => "scripted",
        }
    }
}

/// One `[models.<alias>]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub alias: String,
    pub provider: ProviderKind,
    /// The provider's model name (`gpt-4o-mini`, `smollm2-135m-instruct`, ...).
    pub model: Option<String>,
    /// `openai` / `anthropic`: the endpoint.
    pub base_url: Option<String>,
    /// The *name* of the environment variable holding the API key; never the key.
    pub api_key_env: Option<String>,
    /// `scripted`: the script file, absolute.
    pub script: Option<PathBuf>,
    /// Defaults for requests to this alias; an expert's own values win.
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    /// `openai` / `anthropic`: extra request headers. A value may name environment variables
    /// as `${NAME}`; keys never sit in the file.
    pub headers: Vec<(String, String)>,
    /// `openai` / `anthropic`: the longest wait for the first byte and between two chunks.
    pub timeout_seconds: Option<u64>,
    pub connect_timeout_seconds: Option<u64>,
    /// `openai` / `anthropic`: retries of connect errors, timeouts, 429 and 5xx (default 3).
    pub max_retries: Option<u32>,
    /// Prices in dollars per million tokens, for the cost of runs.
    pub price_input_per_mtok: Option<f64>,
    pub price_output_per_mtok: Option<f64>,
    /// Where the table starts, for diagnostics found later (at run time).
    pub location: Location,
}

impl ModelSpec {
    /// An alias of `provider` with every optional setting left out.
    pub fn new(alias: impl Into<String>, provider: ProviderKind) -> Self {
        ModelSpec {
            alias: alias.into(),
            provider,
            model: None,
            base_url: None,
            api_key_env: None,
            script: None,
            temperature: None,
            max_tokens: None,
            top_p: None,
            seed: None,
            headers: Vec::new(),
            timeout_seconds: None,
            connect_timeout_seconds: None,
            max_retries: None,
            price_input_per_mtok: None,
            price_output_per_mtok: None,
            location: Location::default(),
        }
    }
}

/// `[limits]` in `troupe.toml`, after defaults and overrides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Root is depth 0; a subtask of the root is depth 1.
    pub max_depth: u32,
    pub max_children_per_agent: u32,
    /// Subtasks (not counting the root) in `working` at once.
    pub max_concurrent_subtasks: u32,
    /// Subtasks created in one run, not counting the root.
    pub max_subtasks_per_run: u32,
    /// Model calls one agent may make.
    pub max_turns_per_agent: u32,
    /// Wall time of one subtask, root included.
    pub max_wall_seconds_per_subtask: u64,
    /// Input + output tokens of the whole run.
    pub max_tokens_per_run: u64,
    /// Dollars the whole run may cost, counted with the aliases' prices (`max_cost`).
    pub max_cost: Option<f64>,
    pub on_finish: OnFinish,
    /// The most of one tool result a model reads (and an event records); a longer result is
    /// cut and ends with `[truncated N bytes]`.
    pub max_tool_result_bytes: u64,
}

/// `max_tool_result_bytes` when nothing sets it: a long web page or file, not a whole log.
pub const DEFAULT_MAX_TOOL_RESULT_BYTES: u64 = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 4,
            max_children_per_agent: 8,
            max_concurrent_subtasks: 16,
            max_subtasks_per_run: 200,
            max_turns_per_agent: 12,
            max_wall_seconds_per_subtask: 600,
            max_tokens_per_run: 500_000,
            max_cost: None,
            on_finish: OnFinish::CancelChildren,
            max_tool_result_bytes: DEFAULT_MAX_TOOL_RESULT_BYTES,
        }
    }
}

/// `[limits]` as written in an experiment: only the keys present override the workbench's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimitsPatch {
    pub max_depth: Option<u32>,
    pub max_children_per_agent: Option<u32>,
    pub max_concurrent_subtasks: Option<u32>,
    pub max_subtasks_per_run: Option<u32>,
    pub max_turns_per_agent: Option<u32>,
    pub max_wall_seconds_per_subtask: Option<u64>,
    pub max_tokens_per_run: Option<u64>,
    pub max_cost: Option<f64>,
    pub on_finish: Option<OnFinish>,
    pub max_tool_result_bytes: Option<u64>,
}

impl Limits {
    pub fn patched(mut self, patch: &LimitsPatch) -> Limits {
        let LimitsPatch {
            max_depth,
            max_children_per_agent,
            max_concurrent_subtasks,
            max_subtasks_per_run,
            max_turns_per_agent,
            max_wall_seconds_per_subtask,
            max_tokens_per_run,
            max_cost,
            on_finish,
            max_tool_result_bytes,
        } = *patch;
        if let Some(v) = max_depth {
            self.max_depth = v;
        }
        if let Some(v) = max_children_per_agent {
            self.max_children_per_agent = v;
        }
        if let Some(v) = max_concurrent_subtasks {
            self.max_concurrent_subtasks = v;
        }
        if let Some(v) = max_subtasks_per_run {
            self.max_subtasks_per_run = v;
        }
        if let Some(v) = max_turns_per_agent {
            self.max_turns_per_agent = v;
        }
        if let Some(v) = max_wall_seconds_per_subtask {
            self.max_wall_seconds_per_subtask = v;
        }
        if let Some(v) = max_tokens_per_run {
            self.max_tokens_per_run = v;
        }
        if max_cost.is_some() {
            self.max_cost = max_cost;
        }
        if let Some(v) = on_finish {
            self.on_finish = v;
        }
        if let Some(v) = max_tool_result_bytes {
            self.max_tool_result_bytes = v;
        }
        self
    }
}

/// One expert, `agents/<name>.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSpec {
    /// Unique in the workbench; defaults to the file's stem.
    pub name: String,
    /// Shown to agents that may call this expert.
    pub description: String,
    /// A model alias from `troupe.toml` (or the experiment's overrides).
    pub model: String,
    /// How hard this expert's tasks are, for `model = "auto"` routing.
    pub difficulty: Option<Difficulty>,
    /// Whether `call_agent` and `call_slm` may name the model alias a subtask runs on.
    pub choose_model: bool,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
    /// Overrides `limits.max_turns_per_agent`.
    pub max_turns: Option<u32>,
    /// Overrides `limits.max_children_per_agent`.
    pub max_children: Option<u32>,
    /// Overrides `limits.max_wall_seconds_per_subtask` for subtasks running this expert.
    pub max_wall_seconds: Option<u64>,
    /// Overrides `limits.on_finish`.
    pub on_finish: Option<OnFinish>,
    /// Overrides `limits.max_tool_result_bytes` for this expert's tool results.
    pub max_tool_result_bytes: Option<u64>,
    /// `"required"`: every turn that offers tools must call one (the last turn answers).
    pub tool_choice: ToolChoice,
    /// Turn by turn, the tool each of the first turns must call: a scaffold for small models
    /// (`tool_plan = ["call_agent", "call_slm", "get_task_status"]`). Names come from `tools`.
    pub tool_plan: Vec<String>,
    /// Tool names: built-ins (`call_agent`, ...) now, `mcp:<server>/<tool>` later.
    pub tools: Vec<String>,
    /// Experts this one may `call_agent` by name; `"*"` allows all.
    pub experts: Vec<String>,
    /// Whether `call_agent` without `agent` may start a copy of this expert (default true).
    /// False makes `agent` a required argument, naming one of `experts`.
    pub self_copies: bool,
    /// Overrides `[memory] k`: how many lessons are recalled into this expert's prompt (0: none).
    pub recall_k: Option<u32>,
    /// Overrides `[memory] min_score`: the least similarity a recalled lesson must have.
    pub recall_min_score: Option<f32>,
    pub system_prompt: String,
    /// The file, absolute.
    pub path: PathBuf,
}

impl AgentSpec {
    /// An expert on `model` with every optional setting left out, as a file with only `model`
    /// would read: no tools, copies of itself allowed.
    pub fn new(name: impl Into<String>, model: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        AgentSpec {
            name: name.into(),
            description: String::new(),
            model: model.into(),
            difficulty: None,
            choose_model: false,
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            max_turns: None,
            max_children: None,
            max_wall_seconds: None,
            on_finish: None,
            max_tool_result_bytes: None,
            tool_choice: ToolChoice::Auto,
            tool_plan: Vec::new(),
            tools: Vec::new(),
            experts: Vec::new(),
            self_copies: true,
            recall_k: None,
            recall_min_score: None,
            system_prompt: String::new(),
            path: path.into(),
        }
    }
}

/// One experiment, `experiments/<name>.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentSpec {
    /// Unique in the workbench; defaults to the file's stem.
    pub name: String,
    pub description: String,
    /// The root agent: an expert's name.
    pub root: String,
    /// What the root agent is asked: `task`, `[[tasks]]` or `dataset`, in order; never empty.
    pub tasks: Vec<TaskSpec>,
    /// How many times each task runs under each variant (`repetitions`, default 1).
    pub repetitions: u32,
    /// `[[variants]]`; empty means one variant, `default`, with no overrides.
    pub variants: Vec<VariantSpec>,
    /// The variant the others are compared with: `baseline`, or the first.
    pub baseline: Option<String>,
    /// `[[checks]]`: how a trial is scored.
    pub checks: Vec<CheckSpec>,
    /// Trials run at once (`concurrency`); `None` lets troupe choose.
    pub concurrency: Option<u32>,
    /// `memory = "on" | "off" | "frozen"` (default on).
    pub memory: Option<MemoryMode>,
    /// `reflect = true | false`: overrides `[memory] reflect` for this experiment's runs.
    pub reflect: Option<bool>,
    /// `[models.<alias>]` tables that replace the workbench's aliases for this experiment.
    pub models: BTreeMap<String, ModelSpec>,
    /// `[limits]` overrides for this experiment.
    pub limits: LimitsPatch,
    /// `dataset`, absolute, when the tasks came from one (a file that shaped the run).
    pub dataset: Option<PathBuf>,
    /// The file, absolute.
    pub path: PathBuf,
}

impl ExperimentSpec {
    /// An experiment of `root` on `tasks`, once each, with nothing else set.
    pub fn new(
        name: impl Into<String>,
        root: impl Into<String>,
        tasks: Vec<TaskSpec>,
        path: impl Into<PathBuf>,
    ) -> Self {
        ExperimentSpec {
            name: name.into(),
            description: String::new(),
            root: root.into(),
            tasks,
            repetitions: 1,
            variants: Vec::new(),
            baseline: None,
            checks: Vec::new(),
            concurrency: None,
            memory: None,
            reflect: None,
            models: BTreeMap::new(),
            limits: LimitsPatch::default(),
            dataset: None,
            path: path.into(),
        }
    }

    /// The first task's input: what a single run asks.
    pub fn first_task(&self) -> &str {
        self.tasks.first().map_or("", |t| t.input.as_str())
    }
}

/// One task of an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    /// Unique in the experiment: `id`, or `task-<n>` (1-based) when not given.
    pub id: String,
    /// What the root agent is asked.
    pub input: String,
    /// The answer checks compare with when they name no value of their own.
    pub expected: Option<String>,
}

/// The name of the one variant of an experiment without `[[variants]]`.
pub const DEFAULT_VARIANT: &str = "default";

/// `[[variants]]`: a name and what it changes. Everything it does not name is the experiment's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantSpec {
    pub name: String,
    pub description: String,
    /// Another root agent.
    pub root: Option<String>,
    /// `[variants.models.<alias>]`: aliases replaced for this variant.
    pub models: BTreeMap<String, ModelSpec>,
    /// `[variants.limits]`.
    pub limits: LimitsPatch,
    /// `[variants.agents.<name>]`: fields of experts replaced for this variant.
    pub agents: BTreeMap<String, AgentPatch>,
    /// `memory = "on" | "off" | "frozen"` for this variant's trials.
    pub memory: Option<MemoryMode>,
}

/// Whether a run uses long-term memory: `on` recalls lessons and keeps what it learns, `off`
/// neither, `frozen` recalls but never writes (to compare runs against a fixed memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MemoryMode {
    #[default]
    On,
    Off,
    Frozen,
}

impl MemoryMode {
    pub const ALL: [(&'static str, MemoryMode); 3] =
        [("on", MemoryMode::On), ("off", MemoryMode::Off), ("frozen", MemoryMode::Frozen)];

    pub fn as_str(self) -> &'static str {
        match self {
            MemoryMode::On => "on",
            MemoryMode::Off => "off",
            MemoryMode::Frozen => "frozen",
        }
    }
}

impl std::str::FromStr for MemoryMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        MemoryMode::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| format!("`{text}` is not a memory mode: use on, off or frozen"))
    }
}

/// The fields of an expert a variant may replace; `None` keeps the expert's own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentPatch {
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub tools: Option<Vec<String>>,
    pub experts: Option<Vec<String>>,
    pub tool_plan: Option<Vec<String>>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub max_turns: Option<u32>,
    pub max_children: Option<u32>,
    pub max_wall_seconds: Option<u64>,
    pub max_tool_result_bytes: Option<u64>,
    pub self_copies: Option<bool>,
}

impl AgentPatch {
    /// `agent` with this patch applied.
    pub fn apply(&self, agent: &AgentSpec) -> AgentSpec {
        let mut out = agent.clone();
        let AgentPatch {
            model,
            system_prompt,
            tools,
            experts,
            tool_plan,
            temperature,
            top_p,
            max_tokens,
            max_turns,
            max_children,
            max_wall_seconds,
            max_tool_result_bytes,
            self_copies,
        } = self;
        if let Some(v) = model {
            out.model.clone_from(v);
        }
        if let Some(v) = system_prompt {
            out.system_prompt.clone_from(v);
        }
        if let Some(v) = tools {
            out.tools.clone_from(v);
        }
        if let Some(v) = experts {
            out.experts.clone_from(v);
        }
        if let Some(v) = tool_plan {
            out.tool_plan.clone_from(v);
        }
        out.temperature = temperature.or(out.temperature);
        out.top_p = top_p.or(out.top_p);
        out.max_tokens = max_tokens.or(out.max_tokens);
        out.max_turns = max_turns.or(out.max_turns);
        out.max_children = max_children.or(out.max_children);
        out.max_wall_seconds = max_wall_seconds.or(out.max_wall_seconds);
        out.max_tool_result_bytes = max_tool_result_bytes.or(out.max_tool_result_bytes);
        out.self_copies = self_copies.unwrap_or(out.self_copies);
        out
    }
}

/// `[[checks]]`: one way a trial's answer is scored.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    /// `name`, or the kind and its position (`contains-1`).
    pub name: String,
    pub kind: CheckKind,
    /// Where the table starts.
    pub location: Location,
}

/// What a check tests. A `value` left out means the task's `expected`.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// The answer contains `value` (ignoring case unless `case_sensitive`).
    Contains { value: Option<String>, case_sensitive: bool },
    /// The answer matches the regular expression `pattern` (checked when read).
    Regex { pattern: String },
    /// The answer, trimmed, equals `value` trimmed (ignoring case unless `case_sensitive`).
    Equals { value: Option<String>, case_sensitive: bool },
    /// The last number in the answer is within `tolerance` of `value`.
    Number { value: Option<f64>, tolerance: f64 },
    /// The answer (or its first fenced JSON block) is JSON valid against `schema`.
    JsonSchema { schema: serde_json::Value },
    /// `command` gets the answer on stdin and the task as JSON in `TROUPE_TASK`; exit 0 passes.
    /// Its environment is only `PATH`, `HOME`, `TROUPE_TASK` and the variables `env` names.
    Exec { command: Vec<String>, timeout_seconds: u64, cwd: PathBuf, env: Vec<String> },
    /// The model `model` grades the answer against `rubric`.
    Judge { model: String, rubric: String },
}

impl CheckKind {
    pub const NAMES: [&'static str; 7] = ["contains", "regex", "equals", "number", "json_schema", "exec", "judge"];

    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Contains { .. } => "contains",
            CheckKind::Regex { .. } => "regex",
            CheckKind::Equals { .. } => "equals",
            CheckKind::Number { .. } => "number",
            CheckKind::JsonSchema { .. } => "json_schema",
            CheckKind::Exec { .. } => "exec",
            CheckKind::Judge { .. } => "judge",
        }
    }
}
