//! Fork and re-run: from a finished run, one subtask's subtree run again from the state recorded
//! at its start — its expert as the run's `config/` snapshot kept it, the task it was given, the
//! model it ran on — as a small matrix: the same setup again, and with another expert or model.
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
    pub usage: Usage,
    pub wall_ms: Option<u64>,
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
/// runs in: used when the run's snapshot cannot be loaded, and for where findings go.
pub fn plan_fork(current: &Workbench, request: &ForkRequest) -> Result<ForkPlan, ForkError> {
    let (events, _) = findings::read_events(&request.run.join("events.jsonl"))?;
    let original = original(&request.run, &request.uri, &events)?;
    let (mut workbench, from_snapshot) = match snapshot_of(&request.run).and_then(|dir| load_workbench(&dir).workbench)
    {
        Some(snapshot) => (snapshot, true),
        None => (current.clone(), false),
    };
    // Findings of the fork go to the current workbench, whatever its snapshot's folder.
    workbench.root.clone_from(&current.root);
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
    if let Some(agent) = &request.agent
        && !workbench.agents.contains_key(agent)
    {
        let known: Vec<&str> = workbench.agents.keys().map(String::as_str).collect();
        return Err(ForkError::Invalid(format!("no expert `{agent}`; known experts: {}", known.join(", "))));
    }
    // The original setup: the expert on the model the subtask really ran on (routing or the
    // parent's choice may have picked another than the expert's default).
    let mut original_variant = VariantSpec { name: ORIGINAL_VARIANT.to_owned(), ..VariantSpec::default() };
    original_variant
        .agents
        .insert(root.clone(), AgentPatch { model: Some(original.model.clone()), ..AgentPatch::default() });
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
    let experiment = events.iter().find_map(|e| match &e.body {
        EventBody::RunStarted { experiment, .. } => Some(experiment.clone()),
        _ => None,
    });
    // The source experiment's model overrides, so the aliases resolve as they did.
    let models = experiment
        .as_deref()
        .and_then(|name| workbench.experiments.get(name))
        .map(|e| e.models.clone())
        .unwrap_or_default();
    let task = TaskSpec { id: "subtask".to_owned(), input: original.task.clone(), expected: None };
    let spec = ExperimentSpec {
        description: format!("{} of {} re-run", original.uri, request.run.display()),
        repetitions: request.repetitions.max(1),
        variants,
        models,
        ..ExperimentSpec::new(
            format!("{}-fork", experiment.as_deref().unwrap_or("run")),
            root,
            vec![task],
            request.run.join("events.jsonl"),
        )
    };
    Ok(ForkPlan { workbench, spec, original, from_snapshot })
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
    };
    for event in events {
        match &event.body {
            EventBody::Routed { uri: u, alias, .. } if Some(*u) == id => model.clone_from(alias),
            EventBody::Usage { uri: u, task_total, .. } if Some(*u) == id => original.usage = *task_total,
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
    Ok(original)
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
        "wall_ms": original.wall_ms,
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
