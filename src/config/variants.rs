//! `[[variants]]` of an experiment: a name and what it changes — the root agent, model aliases,
//! limits, and fields of experts (`[variants.agents.<name>]`).
//!
//! Invariant: a variant is kept only when its table had no error; names it uses that other files
//! define (agents, aliases) become [`Reference`]s, checked by the workbench.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;
use toml::de::DeValue;

use super::agent::{AGENT_TOOLS_EXAMPLE, check_tool};
use super::diagnostic::Diagnostic;
use super::reader::{Dirs, FileDiagnostics, RefKind, Reference, Schema, Table, non_empty, optional_non_empty};
use super::settings::{read_limits, read_models, read_tool_result_bytes};
use super::types::{AgentPatch, DEFAULT_VARIANT, VariantSpec};

const VARIANT_SCHEMA: Schema = &[
    ("name", "name = \"experts\""),
    ("description", "description = \"The root delegates to named experts\""),
    ("root", "root = \"researcher\""),
    ("models", "[variants.models.small]"),
    ("limits", "[variants.limits]"),
    ("agents", "[variants.agents.researcher] followed by model = \"big\""),
    ("memory", "memory = \"off\""),
];

/// The expert fields a variant may replace.
const PATCH_SCHEMA: Schema = &[
    ("model", "model = \"big\""),
    ("system_prompt", "system_prompt = \"You are terse.\""),
    ("tools", AGENT_TOOLS_EXAMPLE),
    ("experts", "experts = [\"summarizer\"]"),
    ("tool_plan", "tool_plan = [\"call_agent\", \"get_task_status\"]"),
    ("temperature", "temperature = 0.7"),
    ("top_p", "top_p = 0.9"),
    ("max_tokens", "max_tokens = 512"),
    ("max_turns", "max_turns = 8"),
    ("max_children", "max_children = 4"),
    ("max_wall_seconds", "max_wall_seconds = 300"),
    ("max_tool_result_bytes", "max_tool_result_bytes = 16384"),
    ("self_copies", "self_copies = false"),
];

/// What the variants tables gave.
pub(crate) struct ReadVariants {
    pub variants: Vec<VariantSpec>,
    /// Aliases their `[models]` declare (also those whose tables had errors).
    pub aliases: BTreeSet<String>,
    pub references: Vec<Reference>,
}

pub(crate) fn read_variants(cx: &mut FileDiagnostics<'_>, value: &Spanned<DeValue<'_>>, dirs: &Dirs) -> ReadVariants {
    let mut out = ReadVariants { variants: Vec::new(), aliases: BTreeSet::new(), references: Vec::new() };
    let DeValue::Array(items) = value.get_ref() else {
        let message = "`variants` must be an array of [[variants]] tables".to_owned();
        cx.push(
            Diagnostic::error(cx.at(&value.span()), message)
                .with_hint("for example: [[variants]] followed by name = \"experts\""),
        );
        return out;
    };
    let mut names: BTreeMap<String, super::types::Location> = BTreeMap::new();
    for item in items.iter() {
        let errors_before = cx.diags.iter().filter(|d| d.is_error()).count();
        let example = "[[variants]] followed by name = \"experts\"";
        let Some(table) = Table::nested(cx, "variants", item, example, VARIANT_SCHEMA) else { continue };
        table.check_unknown(cx);
        let mut variant = VariantSpec::default();
        let mut references = Vec::new();
        if let Some(name) = non_empty(cx, &table, "name") {
            if let Some(first) = names.get(&name.value) {
                let message = format!("duplicate variant name `{}`: already used at line {}", name.value, first.line);
                cx.push(Diagnostic::error(name.at.clone(), message).with_hint("each variant needs its own `name`"));
            } else if name.value.contains(['/', '\\']) || name.value.starts_with('.') {
                cx.push(
                    Diagnostic::error(name.at.clone(), format!("variant name `{}` cannot name a folder", name.value))
                        .with_hint("use letters, digits, `-` and `_`"),
                );
            }
            names.insert(name.value.clone(), name.at);
            variant.name = name.value;
        }
        let context = format!("variant `{}`", variant.name);
        if let Some(description) = table.string(cx, "description") {
            variant.description = description.value;
        }
        if let Some(root) = optional_non_empty(cx, &table, "root") {
            references.push(Reference {
                kind: RefKind::Agent,
                name: root.value.clone(),
                at: root.at,
                context: context.clone(),
            });
            variant.root = Some(root.value);
        }
        if let Some(models) = table.get("models") {
            let (specs, aliases) = read_models(cx, models, dirs);
            variant.models = specs;
            out.aliases.extend(aliases);
        }
        if let Some(patch) = table.get("limits").and_then(|v| read_limits(cx, v)) {
            variant.limits = patch;
        }
        variant.memory = table.choice(cx, "memory", &super::types::MemoryMode::ALL).map(|m| m.value);
        if let Some(agents) = table.get("agents") {
            variant.agents = read_patches(cx, agents, &context, &mut references);
        }
        let errors_after = cx.diags.iter().filter(|d| d.is_error()).count();
        out.references.extend(references);
        if errors_after == errors_before {
            out.variants.push(variant);
        }
    }
    if let Some(at) = names.get(DEFAULT_VARIANT).filter(|_| names.len() > 1) {
        cx.push(Diagnostic::warning(
            at.clone(),
            format!("a variant named `{DEFAULT_VARIANT}` among others reads as \"no changes\"; is that what it is?"),
        ));
    }
    out
}

/// `[variants.agents.<name>]` tables.
fn read_patches(
    cx: &mut FileDiagnostics<'_>,
    value: &Spanned<DeValue<'_>>,
    context: &str,
    references: &mut Vec<Reference>,
) -> BTreeMap<String, AgentPatch> {
    let mut patches = BTreeMap::new();
    let example = "[variants.agents.researcher] followed by model = \"big\"";
    let Some(agents) = Table::nested(cx, "agents", value, example, &[]) else { return patches };
    for (name, value) in agents.table.iter() {
        let agent = name.get_ref().to_string();
        references.push(Reference {
            kind: RefKind::Agent,
            name: agent.clone(),
            at: cx.at(&name.span()),
            context: context.to_owned(),
        });
        let Some(table) = Table::nested(cx, &format!("agents.{agent}"), value, example, PATCH_SCHEMA) else {
            continue;
        };
        table.check_unknown(cx);
        let mut patch = AgentPatch::default();
        if let Some(model) = optional_non_empty(cx, &table, "model") {
            references.push(Reference {
                kind: RefKind::Alias,
                name: model.value.clone(),
                at: model.at,
                context: context.to_owned(),
            });
            patch.model = Some(model.value);
        }
        patch.system_prompt = table.string(cx, "system_prompt").map(|s| s.value);
        if let Some(tools) = table.string_array(cx, "tools") {
            for tool in &tools {
                check_tool(cx, tool, None);
            }
            patch.tools = Some(tools.into_iter().map(|t| t.value).collect());
        }
        if let Some(experts) = table.string_array(cx, "experts") {
            for expert in experts.iter().filter(|e| e.value != "*") {
                references.push(Reference {
                    kind: RefKind::Agent,
                    name: expert.value.clone(),
                    at: expert.at.clone(),
                    context: context.to_owned(),
                });
            }
            patch.experts = Some(experts.into_iter().map(|e| e.value).collect());
        }
        patch.tool_plan = table.string_array(cx, "tool_plan").map(|p| p.into_iter().map(|t| t.value).collect());
        patch.temperature = table.f32(cx, "temperature", 0.0, 2.0);
        patch.top_p = table.f32(cx, "top_p", 0.0, 1.0);
        patch.max_tokens = table.u32(cx, "max_tokens", true);
        patch.max_turns = table.u32(cx, "max_turns", true);
        patch.max_children = table.u32(cx, "max_children", false);
        patch.max_wall_seconds = table.u64(cx, "max_wall_seconds", true);
        patch.max_tool_result_bytes = read_tool_result_bytes(cx, &table);
        patch.self_copies = table.boolean(cx, "self_copies");
        patches.insert(agent, patch);
    }
    patches
}
