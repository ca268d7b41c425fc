//! `agents/*.toml`: one expert per file, read into an [`AgentDraft`] with the locations the
//! workbench-wide checks (model aliases, experts, duplicate names) need.
//!
//! Invariant: everything that can be checked from the file alone (and the MCP servers of
//! `troupe.toml`) is checked here; references to other files are left to
//! [`workbench`](super::workbench), which has them all.

use std::collections::BTreeSet;
use std::path::Path;

use super::diagnostic::Diagnostic;
use super::reader::{FileDiagnostics, Located, Schema, Source, Table, start_of};
use super::settings::{ON_FINISH, read_tool_result_bytes};
use super::suggest;
use super::types::{AgentSpec, Location};
use crate::protocol::ToolChoice;

/// The tools troupe provides itself.
pub use crate::protocol::BUILTIN_TOOLS;

const TOOL_CHOICE: [(&str, ToolChoice); 2] = [("auto", ToolChoice::Auto), ("required", ToolChoice::Required)];

/// The prefix of tools served by MCP servers: `mcp:<server>/<tool>` (or `/*`).
pub const MCP_TOOL_PREFIX: &str = "mcp:";

/// How `tools` is written, for hints here and in experiments' overrides.
pub(crate) const AGENT_TOOLS_EXAMPLE: &str = "tools = [\"call_agent\", \"get_task_status\"]";

const AGENT_SCHEMA: Schema = &[
    ("name", "name = \"researcher\""),
    ("description", "description = \"Finds facts and reports them briefly\""),
    ("model", "model = \"small\""),
    ("difficulty", "difficulty = \"hard\""),
    ("choose_model", "choose_model = true"),
    ("temperature", "temperature = 0.2"),
    ("top_p", "top_p = 0.9"),
    ("max_tokens", "max_tokens = 512"),
    ("seed", "seed = 42"),
    ("max_turns", "max_turns = 8"),
    ("max_children", "max_children = 4"),
    ("max_wall_seconds", "max_wall_seconds = 300"),
    ("on_finish", "on_finish = \"wait_for_children\""),
    ("max_tool_result_bytes", "max_tool_result_bytes = 16384"),
    ("tool_choice", "tool_choice = \"required\""),
    ("tool_plan", "tool_plan = [\"call_agent\", \"get_task_status\"]"),
    ("tools", AGENT_TOOLS_EXAMPLE),
    ("experts", "experts = [\"summarizer\"]"),
    ("self_copies", "self_copies = false"),
    ("recall_k", "recall_k = 5"),
    ("recall_min_score", "recall_min_score = 0.4"),
    ("system_prompt", "system_prompt = \"You are a careful researcher.\""),
];

/// One agent file as read, before the workbench-wide checks.
#[derive(Clone, Debug)]
pub(crate) struct AgentDraft {
    /// `model` is empty when it was missing or mistyped (already reported).
    pub spec: AgentSpec,
    /// The `name` value, or 1:1 when the name is the file's stem.
    pub name_at: Location,
    /// The `model` value, when it was read.
    pub model_at: Option<Location>,
    /// Where each of `spec.experts` is written.
    pub experts_at: Vec<Location>,
    /// False when the file could not be read or parsed.
    pub complete: bool,
    pub diags: Vec<Diagnostic>,
}

impl AgentDraft {
    fn empty(shown: &Path, abs: &Path) -> Self {
        let stem = shown.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        AgentDraft {
            spec: AgentSpec::new(stem, String::new(), abs),
            name_at: start_of(shown),
            model_at: None,
            experts_at: Vec::new(),
            complete: false,
            diags: Vec::new(),
        }
    }

    /// A file that could not be read: its stem still counts as a name.
    pub fn unreadable(shown: &Path, abs: &Path, diag: Diagnostic) -> Self {
        let mut draft = Self::empty(shown, abs);
        draft.diags.push(diag);
        draft
    }

    /// Reads an agent file. `mcp_servers` is `None` when `troupe.toml` could not be read, in
    /// which case `mcp:` tools are not checked.
    pub fn read(src: &Source, abs: &Path, mcp_servers: Option<&BTreeSet<String>>) -> Self {
        let mut draft = Self::empty(&src.path, abs);
        let mut cx = FileDiagnostics::new(src);
        let Some(doc) = src.parse(&mut cx.diags) else {
            draft.diags = cx.diags;
            return draft;
        };
        draft.complete = true;
        let table = Table::document(&doc, AGENT_SCHEMA);
        table.check_unknown(&mut cx);
        let spec = &mut draft.spec;
        if let Some(name) = read_name(&mut cx, &table) {
            spec.name = name.value;
            draft.name_at = name.at;
        }
        if let Some(description) = table.string(&mut cx, "description") {
            spec.description = description.value;
        }
        if let Some(model) = table.required_string(&mut cx, "model") {
            spec.model = model.value;
            draft.model_at = Some(model.at);
        }
        spec.temperature = table.f32(&mut cx, "temperature", 0.0, 2.0);
        spec.top_p = table.f32(&mut cx, "top_p", 0.0, 1.0);
        spec.max_tokens = table.u32(&mut cx, "max_tokens", true);
        spec.seed = table.u64(&mut cx, "seed", false);
        spec.max_turns = table.u32(&mut cx, "max_turns", true);
        spec.max_children = table.u32(&mut cx, "max_children", false);
        spec.max_wall_seconds = table.u64(&mut cx, "max_wall_seconds", true);
        spec.on_finish = table.choice(&mut cx, "on_finish", &ON_FINISH).map(|c| c.value);
        spec.max_tool_result_bytes = read_tool_result_bytes(&mut cx, &table);
        spec.self_copies = table.boolean(&mut cx, "self_copies").unwrap_or(true);
        spec.choose_model = table.boolean(&mut cx, "choose_model").unwrap_or(false);
        spec.recall_k = table.u32(&mut cx, "recall_k", false);
        spec.recall_min_score = table.f32(&mut cx, "recall_min_score", -1.0, 1.0);
        spec.difficulty = table.choice(&mut cx, "difficulty", &super::types::Difficulty::ALL).map(|c| c.value);
        spec.tool_choice = table.choice(&mut cx, "tool_choice", &TOOL_CHOICE).map_or(ToolChoice::Auto, |c| c.value);
        let tools = table.string_array(&mut cx, "tools");
        // When `tools` is mistyped (reported), whether it holds `call_agent` is unknown.
        let tools_known = tools.is_some() || table.get("tools").is_none();
        if let Some(tools) = tools {
            for tool in &tools {
                check_tool(&mut cx, tool, mcp_servers);
            }
            spec.tools = tools.into_iter().map(|t| t.value).collect();
        }
        if let Some(experts) = table.string_array(&mut cx, "experts") {
            let calls_agents = !tools_known || spec.tools.iter().any(|t| t == "call_agent");
            let key = table.table.get_key_value("experts").map(|(k, _)| k.span());
            if let Some(key) = key.filter(|_| !experts.is_empty() && !calls_agents) {
                cx.push(
                    Diagnostic::warning(cx.at(&key), "`experts` has no effect without the `call_agent` tool")
                        .with_hint("add \"call_agent\" to `tools`"),
                );
            }
            draft.experts_at = experts.iter().map(|e| e.at.clone()).collect();
            spec.experts = experts.into_iter().map(|e| e.value).collect();
        }
        if let Some(plan) = table.string_array(&mut cx, "tool_plan") {
            for step in &plan {
                if tools_known && !spec.tools.contains(&step.value) {
                    let hint = format!("add \"{}\" to `tools`, or plan only tools the agent has", step.value);
                    cx.push(
                        Diagnostic::error(
                            step.at.clone(),
                            format!("`tool_plan` names `{}`, which is not in `tools`", step.value),
                        )
                        .with_hint(hint),
                    );
                }
            }
            spec.tool_plan = plan.into_iter().map(|t| t.value).collect();
        }
        if let Some(prompt) = table.string(&mut cx, "system_prompt") {
            spec.system_prompt = prompt.value;
        }
        draft.diags = cx.diags;
        draft
    }
}

/// The longest name an agent or experiment may have.
const MAX_NAME_LEN: usize = 64;

/// An optional, non-empty `name` that is not the reserved `*` and can be a file's name (the
/// workbench saves an expert as `agents/<name>.toml`; a run folder's name includes the
/// experiment's): letters, digits, `-`, `_` and `.`, not starting with `.`.
pub(crate) fn read_name(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>) -> Option<Located<String>> {
    let name = table.string(cx, "name")?;
    let value = name.value.as_str();
    let problem = if value.trim().is_empty() {
        Some("`name` must not be empty".to_owned())
    } else if value == "*" {
        Some("`*` cannot be a name: in `experts` it means every agent".to_owned())
    } else if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Some(format!(
            "`name` must be usable as a file name, and {} is not allowed in it",
            if bad.is_control() {
                format!("the control character U+{:04X}", u32::from(bad))
            } else {
                format!("`{bad}`")
            }
        ))
    } else if value.starts_with('.') {
        Some("`name` must not start with `.` (it would be a hidden file)".to_owned())
    } else if value.len() > MAX_NAME_LEN {
        Some(format!("`name` is {} characters long; at most {MAX_NAME_LEN} are allowed", value.len()))
    } else {
        None
    };
    match problem {
        Some(message) => {
            cx.push(
                Diagnostic::error(name.at.clone(), message)
                    .with_hint("use letters, digits, `-`, `_` and `.`, for example: name = \"researcher\", or leave `name` out to use the file's name"),
            );
            None
        }
        None => Some(name),
    }
}

/// A tool must be a built-in or `mcp:<server>/<tool>` of a declared server.
pub(crate) fn check_tool(cx: &mut FileDiagnostics<'_>, tool: &Located<String>, mcp_servers: Option<&BTreeSet<String>>) {
    let name = tool.value.as_str();
    if BUILTIN_TOOLS.contains(&name) {
        return;
    }
    let Some(reference) = name.strip_prefix(MCP_TOOL_PREFIX) else {
        let hint = suggest::closest(name, BUILTIN_TOOLS).map_or_else(
            || format!("built-in tools: {}; MCP tools are written `mcp:<server>/<tool>`", suggest::list(BUILTIN_TOOLS)),
            |near| format!("did you mean `{near}`?"),
        );
        cx.push(Diagnostic::error(tool.at.clone(), format!("unknown tool `{name}`")).with_hint(hint));
        return;
    };
    let parts = reference.split_once('/');
    let Some((server, _)) = parts.filter(|(s, t)| !s.is_empty() && !t.is_empty()) else {
        cx.push(
            Diagnostic::error(tool.at.clone(), format!("`{name}` is not a valid MCP tool reference"))
                .with_hint("write `mcp:<server>/<tool>`, or `mcp:<server>/*` for all of a server's tools"),
        );
        return;
    };
    let Some(servers) = mcp_servers else {
        return;
    };
    if servers.contains(server) {
        return;
    }
    let hint = suggest::hint(server, servers.iter().map(String::as_str), "declared MCP servers", None);
    cx.push(
        Diagnostic::error(
            tool.at.clone(),
            format!("unknown MCP server `{server}`: no [mcp.servers.{server}] in troupe.toml"),
        )
        .with_opt_hint(hint),
    );
}
