//! `troupe.toml`: model aliases, limits, routing, the memory's settings, and the names of
//! declared MCP servers; plus the `[models.<alias>]` and `[limits]` readers that experiments
//! share.
//!
//! Invariant: a [`ModelSpec`] is only produced from a table that had no error, and its `script`
//! is absolute and existed when read; an alias whose table had errors is still recorded in
//! [`SettingsDraft::aliases`] so that references to it are not reported a second time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::DeValue;

use super::diagnostic::Diagnostic;
use super::reader::{Dirs, FileDiagnostics, Located, Schema, Source, Table};
use super::types::{
    Classify, Difficulty, Limits, LimitsPatch, MemoryBackend, MemorySettings, ModelSpec, ProviderKind, RouteRule,
    Routing, Settings,
};
use crate::protocol::OnFinish;

pub(crate) const ON_FINISH: [(&str, OnFinish); 2] =
    [("cancel_children", OnFinish::CancelChildren), ("wait_for_children", OnFinish::WaitForChildren)];

const TOP_SCHEMA: Schema = &[
    ("models", "[models.small]"),
    ("limits", "[limits]"),
    ("routing", "[routing]"),
    ("mcp", "[mcp.servers.time]"),
    ("memory", "[memory]"),
];

const ROUTING_SCHEMA: Schema = &[
    ("default", "default = \"small\""),
    ("rules", "[[routing.rules]] followed by use = \"big\""),
    ("classify", "[routing.classify] followed by with = \"slm\""),
];

const RULE_SCHEMA: Schema = &[
    ("use", "use = \"big\""),
    ("difficulty", "difficulty = \"hard\""),
    ("max_task_chars", "max_task_chars = 200"),
    ("min_task_chars", "min_task_chars = 2000"),
    ("keywords", "keywords = [\"prove\", \"analyze\"]"),
];

const CLASSIFY_SCHEMA: Schema =
    &[("with", "with = \"slm\""), ("simple", "simple = \"small\""), ("complex", "complex = \"big\"")];

pub(crate) const MODEL_SCHEMA: Schema = &[
    ("provider", "provider = \"local\""),
    ("model", "model = \"smollm2-135m-instruct\""),
    ("base_url", "base_url = \"https://api.openai.com/v1\""),
    ("api_key_env", "api_key_env = \"OPENAI_API_KEY\""),
    ("script", "script = \"scripts/replies.toml\""),
    ("temperature", "temperature = 0.2"),
    ("max_tokens", "max_tokens = 512"),
    ("top_p", "top_p = 0.9"),
    ("seed", "seed = 7"),
    ("headers", "headers = { \"OpenAI-Organization\" = \"org-123\" }"),
    ("timeout_seconds", "timeout_seconds = 60"),
    ("connect_timeout_seconds", "connect_timeout_seconds = 10"),
    ("max_retries", "max_retries = 3"),
    ("price_input_per_mtok", "price_input_per_mtok = 0.15"),
    ("price_output_per_mtok", "price_output_per_mtok = 0.60"),
];

pub(crate) const LIMITS_SCHEMA: Schema = &[
    ("max_depth", "max_depth = 4"),
    ("max_children_per_agent", "max_children_per_agent = 8"),
    ("max_concurrent_subtasks", "max_concurrent_subtasks = 16"),
    ("max_subtasks_per_run", "max_subtasks_per_run = 200"),
    ("max_turns_per_agent", "max_turns_per_agent = 12"),
    ("max_wall_seconds_per_subtask", "max_wall_seconds_per_subtask = 600"),
    ("max_tokens_per_run", "max_tokens_per_run = 500000"),
    ("max_cost", "max_cost = 0.50"),
    ("on_finish", "on_finish = \"cancel_children\""),
    ("max_tool_result_bytes", "max_tool_result_bytes = 65536"),
];

const MEMORY_SCHEMA: Schema = &[
    ("path", "path = \".troupe/memory.sqlite\""),
    ("k", "k = 3"),
    ("min_score", "min_score = 0.3"),
    ("merge_threshold", "merge_threshold = 0.95"),
    ("backend", "backend = \"sqlite\""),
    ("url_env", "url_env = \"TROUPE_MEMORY_URL\""),
    ("reflect", "reflect = true"),
];

/// The memory's backends by name; whether each needs `url_env`.
const MEMORY_BACKENDS: [(&str, bool); 2] = [("sqlite", false), ("postgres", true)];

/// Below this a merge would fold related-but-different lessons into one (MiniLM puts them at
/// 0.4–0.8), losing what a person wrote; the range keeps `merge_threshold` a duplicate test.
const MIN_MERGE_THRESHOLD: f64 = 0.5;

const API_KEY_HINT: &str = "put the key in an environment variable and name the variable here";

/// What `troupe.toml` declares, as far as it could be read.
#[derive(Clone, Debug)]
pub(crate) struct SettingsDraft {
    /// The aliases that were read without error, and the limits.
    pub settings: Settings,
    /// Every alias declared, including those whose tables had errors.
    pub aliases: BTreeSet<String>,
    /// Names of the `[mcp.servers.<name>]` tables.
    pub mcp_servers: BTreeSet<String>,
    /// False when the file could not be read or parsed: references into it are not checked.
    pub complete: bool,
    pub diags: Vec<Diagnostic>,
}

impl SettingsDraft {
    fn defaults(path: Option<PathBuf>) -> Self {
        // Without troupe.toml the store's path stays relative to the workbench (see
        // `MemorySettings::store_path`); with it, it is under troupe.toml's folder.
        let folder = path.as_deref().and_then(Path::parent).unwrap_or(Path::new(""));
        let memory = MemorySettings::in_folder(folder);
        SettingsDraft {
            settings: Settings {
                path,
                models: BTreeMap::new(),
                limits: Limits::default(),
                routing: None,
                memory,
                mcp_servers: BTreeMap::new(),
            },
            aliases: BTreeSet::new(),
            mcp_servers: BTreeSet::new(),
            complete: true,
            diags: Vec::new(),
        }
    }

    /// `troupe.toml` is absent: every default applies.
    pub fn absent() -> Self {
        Self::defaults(None)
    }

    /// `troupe.toml` exists but could not be read.
    pub fn unreadable(diag: Diagnostic, abs_path: PathBuf) -> Self {
        let mut draft = Self::defaults(Some(abs_path));
        draft.complete = false;
        draft.diags.push(diag);
        draft
    }

    /// Reads `troupe.toml` from `src` (shown as `src.path`, found at `abs_path`).
    pub fn read(src: &Source, abs_path: &Path) -> Self {
        let mut draft = Self::defaults(Some(abs_path.to_path_buf()));
        let mut cx = FileDiagnostics::new(src);
        let Some(doc) = src.parse(&mut cx.diags) else {
            draft.complete = false;
            draft.diags = cx.diags;
            return draft;
        };
        let top = Table::document(&doc, TOP_SCHEMA);
        top.check_unknown(&mut cx);
        let dirs = Dirs::of(&src.path, abs_path);
        if let Some(models) = top.get("models") {
            let (specs, aliases) = read_models(&mut cx, models, &dirs);
            draft.settings.models = specs;
            draft.aliases = aliases;
        }
        if let Some(routing) = top.get("routing") {
            draft.settings.routing = read_routing(&mut cx, routing, &draft.aliases);
        }
        if let Some(patch) = top.get("limits").and_then(|v| read_limits(&mut cx, v)) {
            draft.settings.limits = Limits::default().patched(&patch);
        }
        if let Some(memory) = top.get("memory").and_then(|v| read_memory(&mut cx, v, &dirs)) {
            draft.settings.memory = memory;
        }
        if let Some(mcp) = top.get("mcp") {
            let (servers, names) = super::mcp::read_mcp(&mut cx, mcp, &dirs);
            draft.settings.mcp_servers = servers;
            draft.mcp_servers = names.into_iter().collect();
        }
        draft.diags = cx.diags;
        draft
    }
}

/// `[models.<alias>]` tables: the specs read without error, and every alias declared.
pub(crate) fn read_models(
    cx: &mut FileDiagnostics<'_>,
    models: &Spanned<DeValue<'_>>,
    dirs: &Dirs,
) -> (BTreeMap<String, ModelSpec>, BTreeSet<String>) {
    let mut specs = BTreeMap::new();
    let mut aliases = BTreeSet::new();
    let Some(table) = Table::nested(cx, "models", models, "[models.small]", &[]) else {
        return (specs, aliases);
    };
    for (alias, value) in table.table.iter() {
        let alias = alias.get_ref().to_string();
        aliases.insert(alias.clone());
        if let Some(spec) = read_model(cx, &alias, value, dirs) {
            specs.insert(alias, spec);
        }
    }
    (specs, aliases)
}

fn read_model(
    cx: &mut FileDiagnostics<'_>,
    alias: &str,
    value: &Spanned<DeValue<'_>>,
    dirs: &Dirs,
) -> Option<ModelSpec> {
    let errors_before = cx.diags.len();
    let example = format!("[models.{alias}] followed by provider = \"local\"");
    let table = Table::nested(cx, &format!("models.{alias}"), value, &example, MODEL_SCHEMA)?;
    table.check_unknown(cx);
    let provider = table.choice(cx, "provider", &ProviderKind::ALL).map(|p| p.value);
    if table.get("provider").is_none() {
        table.missing(cx, "provider");
    }
    let model = table.string(cx, "model").map(|m| m.value);
    if model.is_none() && table.get("model").is_none() {
        let example = match provider {
            Some(ProviderKind::Openai) => Some("model = \"gpt-4o-mini\""),
            Some(ProviderKind::Anthropic) => Some("model = \"claude-3-5-haiku-latest\""),
            _ => None,
        };
        if let Some(example) = example {
            table.missing_with_hint(cx, "model", format!("for example: {example}"));
        }
    }
    let base_url = table.string(cx, "base_url");
    let bad_url = |url: &&Located<String>| !(url.value.starts_with("http://") || url.value.starts_with("https://"));
    if let Some(url) = base_url.as_ref().filter(bad_url) {
        cx.push(
            Diagnostic::error(
                url.at.clone(),
                format!(
                    "`base_url` must start with http:// or https://, found `{}`",
                    crate::urls::redact_url_credentials(&url.value)
                ),
            )
            .with_hint("for example: base_url = \"https://api.openai.com/v1\""),
        );
    }
    let api_key_env = table.string(cx, "api_key_env");
    let bad_var = |v: &&Located<String>| !is_env_var_name(&v.value) || looks_like_key(&v.value);
    if let Some(var) = api_key_env.as_ref().filter(bad_var) {
        // Never echo the value: it may be a secret.
        let message = if looks_like_key(&var.value) {
            "`api_key_env` must be the name of an environment variable, not the key itself"
        } else {
            "`api_key_env` must be the name of an environment variable (letters, digits and `_`, not starting with a digit)"
        };
        cx.push(Diagnostic::error(var.at.clone(), message).with_hint(API_KEY_HINT));
    }
    let script = table.string(cx, "script");
    let script = match (&script, provider) {
        (None, Some(ProviderKind::Scripted)) if table.get("script").is_none() => {
            table.missing_with_hint(
                cx,
                "script",
                "provider \"scripted\" replays a script file, for example: script = \"scripts/replies.toml\""
                    .to_owned(),
            );
            None
        }
        (Some(script), Some(ProviderKind::Scripted)) => {
            let abs = match dirs.inside(&script.value) {
                Ok((_, abs)) => abs,
                Err(message) => {
                    cx.push(Diagnostic::error(script.at.clone(), message));
                    return None;
                }
            };
            if abs.is_file() {
                Some(abs)
            } else {
                let shown = dirs.shown.join(&script.value);
                let what = if abs.exists() { "is not a file" } else { "does not exist" };
                cx.push(Diagnostic::error(script.at.clone(), format!("script `{}` {what}", script.value)).with_hint(
                    format!("`script` is relative to the folder of this file; looked for {}", shown.display()),
                ));
                None
            }
        }
        (Some(script), Some(other)) => {
            cx.push(
                Diagnostic::warning(
                    script.at.clone(),
                    format!("`script` is ignored: provider is `{}`", other.as_str()),
                )
                .with_hint("only provider = \"scripted\" reads a script"),
            );
            None
        }
        _ => None,
    };
    let temperature = table.f32(cx, "temperature", 0.0, 2.0);
    let max_tokens = table.u32(cx, "max_tokens", true);
    let top_p = table.f32(cx, "top_p", 0.0, 1.0);
    let seed = table.u64(cx, "seed", false);
    let headers = table.string_table(cx, "headers").unwrap_or_default();
    for (name, value) in &headers {
        let lower = name.to_ascii_lowercase();
        if (lower == "authorization" || lower == "x-api-key") && !value.value.contains("${") {
            cx.push(
                Diagnostic::error(value.at.clone(), format!("header `{name}` would put a key in this file"))
                    .with_hint(API_KEY_HINT),
            );
        }
    }
    let timeout_seconds = table.u64(cx, "timeout_seconds", true);
    let connect_timeout_seconds = table.u64(cx, "connect_timeout_seconds", true);
    let max_retries = table.u32(cx, "max_retries", false);
    let price_input_per_mtok = table.number(cx, "price_input_per_mtok", 0.0, 1e6);
    let price_output_per_mtok = table.number(cx, "price_output_per_mtok", 0.0, 1e6);
    let had_errors = cx.diags.iter().skip(errors_before).any(Diagnostic::is_error);
    if had_errors {
        return None;
    }
    Some(ModelSpec {
        alias: alias.to_owned(),
        provider: provider?,
        model,
        base_url: base_url.map(|u| u.value),
        api_key_env: api_key_env.map(|v| v.value),
        script,
        temperature,
        max_tokens,
        top_p,
        seed,
        headers: headers.into_iter().map(|(name, value)| (name, value.value)).collect(),
        timeout_seconds,
        connect_timeout_seconds,
        max_retries,
        price_input_per_mtok,
        price_output_per_mtok,
        location: table.header(cx),
    })
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value that is probably an API key rather than a variable's name: a known key prefix, a
/// character no variable name has, or a long mixed-case string of letters and digits.
pub(crate) fn looks_like_key(value: &str) -> bool {
    let has = |f: fn(char) -> bool| value.chars().any(f);
    value.starts_with("sk-")
        || value.starts_with("sk_")
        || has(|c| c == '-' || c == '.' || c == '/' || c == '+' || c == '=')
        || value.len() >= 20
            && !has(|c| c == '_')
            && has(|c| c.is_ascii_lowercase())
            && has(|c| c.is_ascii_uppercase())
            && has(|c| c.is_ascii_digit())
}

/// `[routing]`; every alias it names must be one of `aliases`. `None` (reported) when wrong.
fn read_routing(
    cx: &mut FileDiagnostics<'_>,
    value: &Spanned<DeValue<'_>>,
    aliases: &BTreeSet<String>,
) -> Option<Routing> {
    let errors_before = cx.diags.len();
    let table = Table::nested(cx, "routing", value, "[routing] followed by default = \"small\"", ROUTING_SCHEMA)?;
    table.check_unknown(cx);
    let alias = |cx: &mut FileDiagnostics<'_>, located: Option<Located<String>>| -> String {
        let Some(located) = located else { return String::new() };
        if !aliases.contains(&located.value) {
            let hint = super::suggest::hint(
                &located.value,
                aliases.iter().map(String::as_str),
                "known aliases",
                Some("no model aliases are defined: add a [models.<alias>] table"),
            );
            cx.push(
                Diagnostic::error(located.at.clone(), format!("unknown model alias `{}`", located.value))
                    .with_opt_hint(hint),
            );
        }
        located.value
    };
    let default = table.required_string(cx, "default");
    let default = alias(cx, default);
    let mut rules = Vec::new();
    if let Some(value) = table.get("rules") {
        match value.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    let Some(rule) = Table::nested(cx, "routing.rules", item, "{ use = \"big\" }", RULE_SCHEMA) else {
                        continue;
                    };
                    rule.check_unknown(cx);
                    let target = rule.required_string(cx, "use");
                    let target = alias(cx, target);
                    rules.push(RouteRule {
                        alias: target,
                        difficulty: rule.choice(cx, "difficulty", &Difficulty::ALL).map(|c| c.value),
                        max_task_chars: rule.u64(cx, "max_task_chars", true),
                        min_task_chars: rule.u64(cx, "min_task_chars", false),
                        keywords: rule
                            .string_array(cx, "keywords")
                            .unwrap_or_default()
                            .into_iter()
                            .map(|k| k.value)
                            .collect(),
                    });
                }
            }
            _ => table.value_error(
                cx,
                "rules",
                value,
                "`rules` must be an array of tables: write each rule as [[routing.rules]]".to_owned(),
            ),
        }
    }
    let classify = table.get("classify").and_then(|value| {
        let classify = Table::nested(cx, "routing.classify", value, "[routing.classify]", CLASSIFY_SCHEMA)?;
        classify.check_unknown(cx);
        let with = classify.required_string(cx, "with");
        let simple = classify.required_string(cx, "simple");
        let complex = classify.required_string(cx, "complex");
        Some(Classify { with: alias(cx, with), simple: alias(cx, simple), complex: alias(cx, complex) })
    });
    let had_errors = cx.diags.iter().skip(errors_before).any(Diagnostic::is_error);
    (!had_errors).then_some(Routing { default, rules, classify })
}

/// A `[limits]` table as a patch: only the keys present are set. `None` when not a table.
pub(crate) fn read_limits(cx: &mut FileDiagnostics<'_>, value: &Spanned<DeValue<'_>>) -> Option<LimitsPatch> {
    let table = Table::nested(cx, "limits", value, "[limits]", LIMITS_SCHEMA)?;
    table.check_unknown(cx);
    Some(LimitsPatch {
        max_depth: table.u32(cx, "max_depth", false),
        max_children_per_agent: table.u32(cx, "max_children_per_agent", false),
        max_concurrent_subtasks: table.u32(cx, "max_concurrent_subtasks", true),
        max_subtasks_per_run: table.u32(cx, "max_subtasks_per_run", false),
        max_turns_per_agent: table.u32(cx, "max_turns_per_agent", true),
        max_wall_seconds_per_subtask: table.u64(cx, "max_wall_seconds_per_subtask", true),
        max_tokens_per_run: table.u64(cx, "max_tokens_per_run", true),
        max_cost: table.number(cx, "max_cost", 0.0, 1e9),
        on_finish: table.choice(cx, "on_finish", &ON_FINISH).map(|c| c.value),
        max_tool_result_bytes: read_tool_result_bytes(cx, &table),
    })
}

/// The largest `max_tool_result_bytes` accepted: far above any model's context, below what a
/// run folder's events should ever carry in one line.
pub(crate) const MAX_TOOL_RESULT_BYTES_SETTING: u64 = 64 * 1024 * 1024;

/// `max_tool_result_bytes` (in `[limits]`, an expert, or a variant's expert): from 1 byte to
/// [`MAX_TOOL_RESULT_BYTES_SETTING`].
pub(crate) fn read_tool_result_bytes(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>) -> Option<u64> {
    table.uint(cx, "max_tool_result_bytes", true, MAX_TOOL_RESULT_BYTES_SETTING)
}

/// `[memory]`: the keys present over the defaults. `None` (reported) when it has an error, so
/// the defaults stand and the workbench does not load.
fn read_memory(cx: &mut FileDiagnostics<'_>, value: &Spanned<DeValue<'_>>, dirs: &Dirs) -> Option<MemorySettings> {
    let errors_before = cx.diags.len();
    let table = Table::nested(cx, "memory", value, "[memory] followed by k = 3", MEMORY_SCHEMA)?;
    table.check_unknown(cx);
    let mut memory = MemorySettings::in_folder(&dirs.abs);
    if let Some(path) = table.string(cx, "path") {
        if path.value.trim().is_empty() {
            cx.push(
                Diagnostic::error(path.at.clone(), "`path` must name the memory's file, found an empty string")
                    .with_hint("for example: path = \".troupe/memory.sqlite\" (relative to the folder of this file)"),
            );
        } else {
            memory.path = dirs.abs.join(&path.value);
        }
    }
    if let Some(k) = table.u32(cx, "k", true) {
        memory.k = k;
    }
    if let Some(min_score) = table.f32(cx, "min_score", -1.0, 1.0) {
        memory.min_score = min_score;
    }
    if let Some(threshold) = table.f32(cx, "merge_threshold", MIN_MERGE_THRESHOLD, 1.0) {
        memory.merge_threshold = threshold;
    }
    if let Some(reflect) = table.boolean(cx, "reflect") {
        memory.reflect = reflect;
    }
    let needs_url = table.choice(cx, "backend", &MEMORY_BACKENDS).map(|b| b.value);
    let url_env = table.string(cx, "url_env");
    let bad_var = |v: &&Located<String>| !is_env_var_name(&v.value) || looks_like_key(&v.value);
    if let Some(var) = url_env.as_ref().filter(bad_var) {
        // Never echo the value: a database URL carries its password.
        cx.push(
            Diagnostic::error(
                var.at.clone(),
                "`url_env` must be the name of an environment variable holding the database URL, not the URL itself",
            )
            .with_hint("put the URL in an environment variable and name the variable here"),
        );
    }
    match (needs_url, url_env) {
        (Some(true), Some(var)) => memory.backend = MemoryBackend::Postgres { url_env: var.value },
        (Some(true), None) if table.get("url_env").is_none() => table.missing_with_hint(
            cx,
            "url_env",
            "backend \"postgres\" reads its URL from an environment variable, for example: url_env = \"TROUPE_MEMORY_URL\""
                .to_owned(),
        ),
        (Some(false) | None, Some(var)) => cx.push(
            Diagnostic::warning(var.at.clone(), "`url_env` is ignored: backend is `sqlite`")
                .with_hint("only backend = \"postgres\" reads a URL"),
        ),
        _ => {}
    }
    let had_errors = cx.diags.iter().skip(errors_before).any(Diagnostic::is_error);
    (!had_errors).then_some(memory)
}
