//! An expert as the driver runs it ([`Profile`]): its spec with the run's limits filled in,
//! and the built-in tools' schemas for who it may call, built once when the run starts.
//!
//! Invariant: a profile is immutable once built; a subtask on another model alias gets a copy
//! (`call_agent`'s `model`), never a change to the shared one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::RunConfig;
use crate::config::AgentSpec;
use crate::model::Sampling;
use crate::protocol::{OnFinish, ToolSpec};
use crate::runtime::tools::{ExpertOffer, ToolContext, builtin_spec, experts_allow};

/// An expert as the driver runs it.
#[derive(Clone)]
pub(super) struct Profile {
    pub(super) name: Arc<str>,
    pub(super) model: Arc<str>,
    pub(super) spec: Arc<AgentSpec>,
    pub(super) tools: Vec<ToolSpec>,
    pub(super) max_turns: u32,
    pub(super) max_children: u32,
    pub(super) wall: Duration,
    pub(super) on_finish: OnFinish,
    pub(super) sampling: Sampling,
    /// The most of a tool result its model reads.
    pub(super) max_tool_result_bytes: usize,
    /// Whether `call_agent` may start it: every expert but an external root (the MCP client
    /// of `troupe mcp serve`, which runs no model and is never anyone's sub-agent).
    pub(super) callable: bool,
}

pub(super) fn build_profiles(config: &RunConfig) -> BTreeMap<String, Arc<Profile>> {
    let limits = &config.limits;
    let callable = |name: &str| !(config.external_root && name == config.root_agent);
    config
        .agents
        .iter()
        .map(|(name, spec)| {
            let allowed: Vec<ExpertOffer> = config
                .agents
                .values()
                .filter(|other| callable(&other.name) && experts_allow(&spec.experts, &other.name))
                .map(|other| ExpertOffer { name: other.name.clone(), description: other.description.clone() })
                .collect();
            let models = if spec.choose_model { config.models.runnable() } else { Vec::new() };
            let context = ToolContext { experts: allowed, self_copies: spec.self_copies, models };
            let tools: Vec<ToolSpec> = spec.tools.iter().filter_map(|t| builtin_spec(t, &context)).collect();
            let profile = Profile {
                name: Arc::from(name.as_str()),
                model: Arc::from(spec.model.as_str()),
                tools,
                max_turns: spec.max_turns.unwrap_or(limits.max_turns_per_agent),
                max_children: spec.max_children.unwrap_or(limits.max_children_per_agent),
                wall: Duration::from_secs(spec.max_wall_seconds.unwrap_or(limits.max_wall_seconds_per_subtask)),
                on_finish: spec.on_finish.unwrap_or(limits.on_finish),
                callable: callable(name),
                max_tool_result_bytes: usize::try_from(
                    spec.max_tool_result_bytes.unwrap_or(limits.max_tool_result_bytes),
                )
                .unwrap_or(usize::MAX),
                sampling: Sampling {
                    temperature: spec.temperature,
                    top_p: spec.top_p,
                    max_tokens: spec.max_tokens,
                    seed: spec.seed.or(config.seed),
                },
                spec: Arc::new(spec.clone()),
            };
            (name.clone(), Arc::new(profile))
        })
        .collect()
}
