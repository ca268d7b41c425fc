//! Fork and re-run: from a finished run, one subtask's subtree run again from the state recorded
//! at its start — its expert as the run's `config/` snapshot kept it (with its trial's variant
//! patches and the experiment's limits), the task it was given, the model alias it ran on — as a
//! small matrix: the same setup again, and with another expert or model.
//!
//! A run folder is data, not configuration: models, routing, MCP servers, memory settings and
//! every secret come from the workbench the fork runs in, never from the snapshot, and the
//! report says which part came from where ([`Setup`]).
//!
//! A sub-agent starts from its own system prompt and the task its parent wrote (troupe does not
//! hand it the parent's conversation), so that task and configuration *are* its start state;
//! a `call_slm` subtask starts from its prompt and system message.
//!
//! Invariant: the source run folder is only read.

use std::path::{Path, PathBuf};

use crate::config::{AgentPatch, AgentSpec, ExperimentSpec, TaskSpec, VariantSpec, Workbench, load_workbench};
use crate::findings::{self, CONFIG_DIR};
use crate::protocol::{EventBody, Role, TaskId, TaskKind, TaskStatus, Usage};

/// What to fork.
#[derive(Clone, Debug)]
pub struct ForkRequest {
    /// The run folder (a run, or a trial's folder inside a matrix).
    pub run: PathBuf,
    /// The subtask: `subtask://…`.
    pub uri: String,
    /// Re-run it with this expert instead.
    pub agent: Option<String>,
    /// Re-run it on this model alias instead.
    pub model: Option<String>,
    pub repetitions: u32,
}

/// How the subtask went in the source run.
#[derive(Clone, Debug, PartialEq)]
pub struct Original {
    pub run: PathBuf,
    pub uri: String,
    pub kind: TaskKind,
    pub agent: String,
    pub model: String,
    pub task: String,
    pub status: TaskStatus,
    pub result: Option<String>,
    pub error: Option<String>,
    /// Its whole subtree's usage (the subtask and every subtask under it): what a re-run's
    /// record counts, so the two rows compare like with like.
    pub usage: Usage,
    pub wall_ms: Option<u64>,
    /// Where the fork's setup came from.
    pub setup: Setup,
}

/// Where each part of a fork's setup came from, for its report and `fork.json`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Setup {
    /// Taken from the run folder (its config snapshot, its matrix's plan).
    pub from_run: Vec<String>,
    /// Taken from the workbench the fork runs in.
    pub from_workbench: Vec<String>,
    /// In the run folder, and deliberately not used.
    pub ignored: Vec<String>,
}

/// A fork ready to run as a matrix.
pub struct ForkPlan {
    /// The source run's workbench (its snapshot), with the expert the fork runs.
    pub workbench: Workbench,
    pub spec: ExperimentSpec,
    pub original: Original,
    /// Whether the workbench came from the run's snapshot (else from the current files).
    pub from_snapshot: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    #[error("{0}")]
    Findings(#[from] findings::FindingsError),
    #[error("{uri} is not a task of the run in {}{hint}", run.display())]
    UnknownTask { uri: String, run: PathBuf, hint: String },
    #[error("{0}")]
    Invalid(String),
}

/// The variant that repeats the original setup.
pub const ORIGINAL_VARIANT: &str = "original";
/// The variant with `--agent` / `--model` applied.
pub const FORKED_VARIANT: &str = "forked";

/// Reads the source run and builds the fork's matrix. `current` is the workbench the command
/// runs in, and the only source of models, routing, MCP servers, memory settings and keys: a
/// run folder is data someone may have shared, so from its `config/` snapshot only what
/// describes the agents is taken (experts' prompts, tools, experts and limits; the trial's
/// variant patches and the experiment's `[limits]`), never a model, URL, key or command.
pub fn plan_fork(current: &Workbench, request: &ForkRequest) -> Result<ForkPlan, ForkError> {
    let (events, _) = findings::read_events(&request.run.join("events.jsonl"))?;
    let original = original(&request.run, &request.uri, &events)?;
    let experiment = events.iter().find_map(|e| match &e.body {
        EventBody::RunStarted { experiment, .. } => Some(experiment.clone()),
        _ => None,
    });
    let snapshot_dir = snapshot_of(&request.run);
    let snapshot = snapshot_dir.as_deref().and_then(|dir| load_workbench(dir).workbench);
    let from_snapshot = snapshot.is_some();
    let mut workbench = current.clone();
    let mut setup = Setup::default();
    let mut limits = crate::config::LimitsPatch::default();
    match (&snapshot, &snapshot_dir) {
        (Some(snapshot), Some(dir)) => {
            workbench.agents.clone_from(&snapshot.agents);
            setup.from_run.push(format!(
                "experts (prompts, tools, experts, limits) from the run's config snapshot {}",
                dir.display()
            ));
            let snapshot_experiment = experiment.as_deref().and_then(|name| snapshot.experiments.get(name));
            if let Some(spec) = snapshot_experiment {
                limits = spec.limits;
                if limits != crate::config::LimitsPatch::default() {
                    setup.from_run.push(format!("experiment `{}`'s [limits]", spec.name));
                }
                let mut ignored: Vec<String> = spec.models.keys().cloned().collect();
                if let Some(variant) =
                    trial_variant(&request.run).and_then(|name| spec.variants.iter().find(|v| v.name == name))
                {
                    // The trial's own setup: its expert patches and limits (its models, never).
                    let without_models = VariantSpec { models: Default::default(), ..variant.clone() };
                    let task = TaskSpec { id: "subtask".to_owned(), input: String::new(), expected: None };
                    let (patched, trial) = super::plan::trial_setup(&workbench, spec, &without_models, &task);
                    workbench = patched;
                    limits = trial.limits;
                    ignored.extend(variant.models.keys().cloned());
                    setup.from_run.push(format!("variant `{}`'s expert patches and limits", variant.name));
                }
                ignored.sort();
                ignored.dedup();
                if !ignored.is_empty() {
                    setup.ignored.push(format!(
                        "model aliases the run's experiment or variant defined ({}): models come from this workbench",
                        ignored.join(", ")
                    ));
                }
            }
        }
        _ => setup.from_run.push("nothing: the run's config snapshot could not be loaded".to_owned()),
    }
    setup.from_workbench.push(format!(
        "models, routing, MCP servers, memory settings and every key from {}",
        current.settings.path.as_deref().map_or_else(|| "troupe.toml".to_owned(), |p| p.display().to_string())
    ));
    if !from_snapshot {
        setup.from_workbench.push("experts, as this workbench defines them".to_owned());
    }
    // The source experiment's model overrides as this workbench has them, so aliases resolve as
    // they do in a run started here.
    let models = experiment
        .as_deref()
        .and_then(|name| current.experiments.get(name))
        .map(|e| e.models.clone())
        .unwrap_or_default();
    let known_alias =
        |alias: &str| alias == "auto" || workbench.settings.models.contains_key(alias) || models.contains_key(alias);
    let root = match original.kind {
        TaskKind::Mcp => {
            return Err(ForkError::Invalid(format!(
                "{} is a task an MCP server ran ({}): troupe cannot re-run it; fork the agent that called it",
                original.uri, original.agent
            )));
        }
        TaskKind::Agent => {
            if !workbench.agents.contains_key(&original.agent) {
                return Err(ForkError::Invalid(format!(
                    "expert `{}` that ran {} is in neither the run's config snapshot nor this workbench",
                    original.agent, original.uri
                )));
            }
            original.agent.clone()
        }
        TaskKind::Slm => {
            // The small model as an expert with no tools: one completion, like `call_slm`.
            let system = slm_system(&events, &original.uri).unwrap_or_default();
            let name = "slm-fork".to_owned();
            let spec = AgentSpec {
                description: format!("call_slm on {}", original.model),
                max_turns: Some(1),
                self_copies: false,
                system_prompt: system,
                ..AgentSpec::new(name.clone(), original.model.clone(), request.run.join("events.jsonl"))
            };
            workbench.agents.insert(name.clone(), spec);
            name
        }
    };
    if !known_alias(&original.model) && request.model.is_none() {
        return Err(ForkError::Invalid(format!(
            "{} ran on model `{}`, which this workbench does not define; a fork takes its models from this workbench, never from the run folder\n  = hint: add [models.{}] to troupe.toml, or fork onto another model with --model",
            original.uri, original.model, original.model
        )));
    }
    if let Some(agent) = &request.agent
        && !workbench.agents.contains_key(agent)
    {
        let known: Vec<&str> = workbench.agents.keys().map(String::as_str).collect();
        return Err(ForkError::Invalid(format!("no expert `{agent}`; known experts: {}", known.join(", "))));
    }
    // The original setup: the expert on the model the subtask really ran on (routing or the
    // parent's choice may have picked another than the expert's default).
    let mut original_variant = VariantSpec { name: ORIGINAL_VARIANT.to_owned(), ..VariantSpec::default() };
    if known_alias(&original.model) {
        original_variant
            .agents
            .insert(root.clone(), AgentPatch { model: Some(original.model.clone()), ..AgentPatch::default() });
    }
    let mut variants = vec![original_variant];
    if request.agent.is_some() || request.model.is_some() {
        let forked_root = request.agent.clone().unwrap_or_else(|| root.clone());
        let mut forked = VariantSpec {
            name: FORKED_VARIANT.to_owned(),
            description: describe_change(request),
            root: Some(forked_root.clone()),
            ..VariantSpec::default()
        };
        if let Some(model) = &request.model {
            forked.agents.insert(forked_root, AgentPatch { model: Some(model.clone()), ..AgentPatch::default() });
        }
        variants.push(forked);
    }
    let task = TaskSpec { id: "subtask".to_owned(), input: original.task.clone(), expected: None };
    let spec = ExperimentSpec {
        description: format!("{} of {} re-run", original.uri, request.run.display()),
        repetitions: request.repetitions.max(1),
        variants,
        models,
        limits,
        ..ExperimentSpec::new(
            format!("{}-fork", experiment.as_deref().unwrap_or("run")),
            root,
            vec![task],
            request.run.join("events.jsonl"),
        )
    };
    let original = Original { setup, ..original };
    Ok(ForkPlan { workbench, spec, original, from_snapshot })
}

/// The variant a run folder was a trial of, from its matrix's (checked) plan: a trial folder
/// inside a matrix, or a run of one trial that is its own matrix folder.
fn trial_variant(run: &Path) -> Option<String> {
    if run.join(super::store::MATRIX_FILE).is_file() {
        let matrix = super::store::read_matrix(run).ok()?;
        return matrix.trials.first().filter(|_| matrix.trials.len() == 1).map(|t| t.variant.clone());
    }
    let parent = run.parent()?;
    if parent.file_name().is_none_or(|n| n != "trials") {
        return None;
    }
    let folder = format!("trials/{}", run.file_name()?.to_str()?);
    let matrix = super::store::read_matrix(parent.parent()?).ok()?;
    matrix.trials.into_iter().find(|t| t.folder == folder).map(|t| t.variant)
}

fn describe_change(request: &ForkRequest) -> String {
    match (&request.agent, &request.model) {
        (Some(agent), Some(model)) => format!("expert `{agent}` on `{model}`"),
        (Some(agent), None) => format!("expert `{agent}`"),
        (None, Some(model)) => format!("model `{model}`"),
        (None, None) => String::new(),
    }
}

/// The `config/` snapshot that shaped `run`: its own, or its matrix's for a trial folder.
fn snapshot_of(run: &Path) -> Option<PathBuf> {
    let own = run.join(CONFIG_DIR);
    if own.join("agents").is_dir() {
        return Some(own);
    }
    let parent = run.parent()?;
    if parent.file_name().is_some_and(|n| n == "trials") {
        let matrix = parent.parent()?.join(CONFIG_DIR);
        return matrix.join("agents").is_dir().then_some(matrix);
    }
    None
}

fn original(run: &Path, uri: &str, events: &[crate::protocol::Event]) -> Result<Original, ForkError> {
    let id: Option<TaskId> = uri.parse().ok();
    let created = events.iter().find_map(|e| match &e.body {
        EventBody::TaskCreated { uri: u, kind, agent, model, task, .. } if Some(*u) == id => {
            Some((e.ts, *kind, agent.clone(), model.clone(), task.clone()))
        }
        _ => None,
    });
    let Some((started, kind, agent, mut model, task)) = created else {
        let tasks: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::TaskCreated { uri, agent, parent: Some(_), .. } => Some(format!("{uri} ({agent})")),
                _ => None,
            })
            .take(8)
            .collect();
        let hint = if tasks.is_empty() {
            "; it has no subtasks".to_owned()
        } else {
            format!("; its subtasks: {}", tasks.join(", "))
        };
        return Err(ForkError::UnknownTask { uri: uri.to_owned(), run: run.to_path_buf(), hint });
    };
    let mut original = Original {
        run: run.to_path_buf(),
        uri: uri.to_owned(),
        kind,
        agent,
        model: String::new(),
        task,
        status: TaskStatus::Working,
        result: None,
        error: None,
        usage: Usage::default(),
        wall_ms: None,
        setup: Setup::default(),
    };
    for event in events {
        match &event.body {
            EventBody::Routed { uri: u, alias, .. } if Some(*u) == id => model.clone_from(alias),
            EventBody::TaskStatus { uri: u, status, result, error, .. } if Some(*u) == id => {
                original.status = *status;
                if status.is_terminal() && original.wall_ms.is_none() {
                    original.wall_ms = Some(event.ts.saturating_sub(started));
                    original.result.clone_from(result);
                    original.error.clone_from(error);
                }
            }
            _ => {}
        }
    }
    original.model = model;
    if let Some(id) = id {
        original.usage = subtree_usage(events, id);
    }
    Ok(original)
}

/// The tokens and calls of `root` and every subtask under it, each task's last running total.
fn subtree_usage(events: &[crate::protocol::Event], root: TaskId) -> Usage {
    let mut in_subtree = std::collections::HashSet::from([root]);
    let mut totals: std::collections::HashMap<TaskId, Usage> = std::collections::HashMap::new();
    // A child is created after its parent, so one pass in order finds the whole subtree.
    for event in events {
        match &event.body {
            EventBody::TaskCreated { uri, parent: Some(parent), .. } if in_subtree.contains(parent) => {
                in_subtree.insert(*uri);
            }
            EventBody::Usage { uri, task_total, .. } if in_subtree.contains(uri) => {
                totals.insert(*uri, *task_total);
            }
            _ => {}
        }
    }
    totals.values().fold(Usage::default(), |sum, u| Usage {
        input_tokens: sum.input_tokens + u.input_tokens,
        output_tokens: sum.output_tokens + u.output_tokens,
        model_calls: sum.model_calls + u.model_calls,
    })
}

/// The system message a `call_slm` subtask was given.
fn slm_system(events: &[crate::protocol::Event], uri: &str) -> Option<String> {
    let id: TaskId = uri.parse().ok()?;
    events.iter().find_map(|e| match &e.body {
        EventBody::Message { uri, role: Role::System, content } if *uri == id => Some(content.clone()),
        _ => None,
    })
}

/// The report's section that puts the original beside the re-runs.
pub fn original_section(original: &Original, summary: &super::summary::Summary) -> String {
    use super::record::Metric;
    let mut out = String::new();
    out.push_str(&format!(
        "## Original and re-runs\n\nForked from `{}` in `{}`: expert `{}` on `{}`.\n\n",
        original.uri,
        original.run.display(),
        original.agent,
        original.model
    ));
    let setup = &original.setup;
    for (heading, lines) in [
        ("From the run folder", &setup.from_run),
        ("From this workbench", &setup.from_workbench),
        ("In the run folder but not used", &setup.ignored),
    ] {
        if !lines.is_empty() {
            out.push_str(&format!("{heading}: {}.\n", lines.join("; ")));
        }
    }
    out.push_str("\nTokens count the subtask's whole subtree, as each re-run's do.\n\n");
    out.push_str("| | runs | completed | tokens | wall time | answer |\n|---|---|---|---|---|---|\n");
    let answer = original.result.as_deref().or(original.error.as_deref()).unwrap_or("");
    out.push_str(&format!(
        "| original (recorded) | 1 | {} | {} | {} | {} |\n",
        if original.status == TaskStatus::Completed { "1" } else { "0" },
        original.usage.input_tokens + original.usage.output_tokens,
        original.wall_ms.map_or_else(|| "–".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
        cell(answer)
    ));
    for variant in &summary.variants {
        let tokens = variant.metric(Metric::Tokens).map_or_else(|| "–".to_owned(), |m| format!("{:.0}", m.mean));
        let wall = variant.metric(Metric::WallSeconds).map_or_else(|| "–".to_owned(), |m| format!("{:.1} s", m.mean));
        out.push_str(&format!(
            "| {} (re-run) | {} | {} | {tokens} (mean) | {wall} (mean) | see the trials below |\n",
            variant.variant, variant.trials, variant.passed
        ));
    }
    out.push('\n');
    out
}

fn cell(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|");
    crate::protocol::shorten(&one_line, 120)
}

/// Runs a planned fork as a matrix and writes its report beside the original: the one way both
/// `troupe fork` and the workbench run a fork.
pub async fn run_fork(
    workbench: &Workbench,
    spec: ExperimentSpec,
    original: &Original,
    options: super::runner::MatrixOptions,
    env: super::runner::MatrixEnv,
) -> Result<super::runner::MatrixOutcome, super::runner::MatrixError> {
    let outcome = super::runner::run_matrix_spec(workbench, spec, options, env).await?;
    write_fork_report(&outcome, original)?;
    Ok(outcome)
}

/// Writes `fork.json` (what was forked and how it went) into the fork's folder and puts the
/// original beside the re-runs at the top of its `report.md`.
pub fn write_fork_report(
    outcome: &super::runner::MatrixOutcome,
    original: &Original,
) -> Result<(), super::runner::MatrixError> {
    let io = findings::FindingsError::io;
    let json = serde_json::json!({
        "source_run": original.run,
        "uri": original.uri,
        "kind": original.kind.as_str(),
        "agent": original.agent,
        "model": original.model,
        "task": original.task,
        "status": original.status.as_str(),
        "result": original.result,
        "error": original.error,
        "usage": original.usage,
        "usage_counts": "the subtask's whole subtree",
        "wall_ms": original.wall_ms,
        "setup": original.setup,
    });
    let path = outcome.dir.join("fork.json");
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(io("write", &path))?;
    let path = outcome.dir.join(super::store::REPORT_FILE);
    let report = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    let section = original_section(original, &outcome.summary);
    // After the title, before the figures.
    let report = match report.split_once('\n') {
        Some((title, rest)) if title.starts_with("# ") => format!("{title}\n\n{section}{rest}"),
        _ => format!("{section}{report}"),
    };
    crate::fsutil::write_atomic(&path, report.as_bytes()).map_err(io("write", &path))?;
    Ok(())
}
