//! Running a matrix: the async shell around [`plan`](super::plan), `launch` and
//! [`checks`](super::checks). Trials run concurrently up to a limit, each as an ordinary run in
//! its own folder; each finished trial is scored and appended to `trials.jsonl`; the summary,
//! report and charts are written at the end. Also `--resume` and `troupe merge`. A run of one
//! trial is the same path with no matrix files; a live view may steer it ([`run_single_spec`]).
//! After its record, each trial's run is learned from ([`learn`](super::learn)).
//!
//! Invariants: one trial's failure (a model error, a failed start, a crashed check) is that
//! trial's record and never stops the others; a trial cancelled by the user is not recorded, so
//! `--resume` runs it again; a matrix folder is only ever appended to, except the folder of an
//! unrecorded trial, which `--resume` clears before running that trial again.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::checks::run_checks;
use super::learn::{EndedRun, learn_from_run};
use super::meter::Meter;
use super::plan::{Plan, Shard, TrialSpec, plan, trial_setup, variants};
use super::record::{MatrixInfo, TrialRecord};
use super::store::{self, MatrixFile, StoreError, TrialLog};
use super::summary::Summary;
use crate::config::{ExperimentSpec, MemoryMode, VariantSpec, Workbench};
use crate::findings;
use crate::launch::{self, LaunchError, RunOptions};
use crate::mcp::client::McpPool;
use crate::memory::recall::RunRecall;
use crate::model::EnginePool;
use crate::protocol::{Op, RunStatus};
use crate::runtime::Clock;

/// Trials at once when neither the experiment nor the command line says, and no trial reaches
/// the embedded model (which answers one request at a time: more trials would only queue on
/// it, and their wall-time limits would run while they wait).
const DEFAULT_CONCURRENCY: u32 = 4;

/// How a matrix runs.
#[derive(Clone, Debug, Default)]
pub struct MatrixOptions {
    pub shard: Option<Shard>,
    /// Overrides the experiment's `concurrency`.
    pub concurrency: Option<u32>,
    /// Forward every trial's events as [`MatrixUpdate::Event`] (the workbench shows them).
    pub forward_events: bool,
    /// Overrides the experiment's and the variants' `memory` (`--memory`).
    pub memory: Option<MemoryMode>,
}

/// What a matrix runs with and reports to, the same for every entry point.
pub struct MatrixEnv {
    /// The embedded model, loaded once for every trial (and kept by the workbench across runs).
    pub pool: EnginePool,
    pub clock: Arc<dyn Clock>,
    pub updates: mpsc::UnboundedSender<MatrixUpdate>,
    /// Cancels the running trials (not recorded, so `--resume` runs them again).
    pub cancel: CancellationToken,
    /// The workbench's MCP servers, shared by every trial.
    pub mcp: Arc<McpPool>,
}

use super::update::MatrixUpdate;

/// How a matrix run ended.
#[derive(Debug)]
pub struct MatrixOutcome {
    pub dir: PathBuf,
    pub info: MatrixInfo,
    pub records: Vec<TrialRecord>,
    pub summary: Summary,
    /// Every trial of this folder's share is recorded.
    pub complete: bool,
    pub cancelled: bool,
}

/// Why a matrix could not run.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("{0}")]
    Launch(#[from] LaunchError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Findings(#[from] findings::FindingsError),
    #[error("{0}")]
    Refused(String),
}

impl MatrixError {
    /// Whether the user's configuration or command is at fault (exit 2) rather than the run.
    pub fn is_config(&self) -> bool {
        match self {
            MatrixError::Launch(err) => {
                !matches!(err, LaunchError::LocalModel(_) | LaunchError::Findings(_) | LaunchError::Start(_))
            }
            MatrixError::Refused(_) => true,
            MatrixError::Store(_) | MatrixError::Findings(_) => false,
        }
    }
}

/// What every trial of one matrix shares.
struct MatrixContext {
    workbench: Workbench,
    spec: ExperimentSpec,
    dir: PathBuf,
    run_id: String,
    single: bool,
    pool: EnginePool,
    clock: Arc<dyn Clock>,
    updates: mpsc::UnboundedSender<MatrixUpdate>,
    /// `None` for a run of one trial, recorded once it ends.
    log: Option<Mutex<TrialLog>>,
    forward_events: bool,
    cancel: CancellationToken,
    /// What the findings hide: records quote answers, and answers may quote a key.
    redactor: findings::Redactor,
    /// `--memory`, over the variants' and the experiment's `memory`.
    memory_override: Option<MemoryMode>,
    /// The workbench's memory, opened once per mode for all the trials (its embedder loads once).
    memories: Mutex<HashMap<MemoryMode, Option<Arc<RunRecall>>>>,
    mcp: Arc<McpPool>,
    /// What a live view of a run of one trial sends it (cancelling a task); the trial takes it.
    ops: Mutex<Option<mpsc::UnboundedReceiver<Op>>>,
}

impl MatrixContext {
    /// The memory a trial of `variant` runs with.
    fn memory_for(&self, variant: &VariantSpec) -> Option<Arc<RunRecall>> {
        let mode = self.memory_override.or(variant.memory).or(self.spec.memory).unwrap_or_default();
        let mut memories = match self.memories.lock() {
            Ok(memories) => memories,
            Err(poisoned) => poisoned.into_inner(),
        };
        memories
            .entry(mode)
            .or_insert_with(|| {
                let updates = self.updates.clone();
                launch::run_memory(&self.workbench, mode, move |line| {
                    let _ = updates.send(MatrixUpdate::Status(line.to_owned())); // the view may be gone
                })
            })
            .clone()
    }
}

/// Runs `experiment`'s matrix (this shard's share of it) in a new folder under `findings/`.
pub async fn run_matrix(
    workbench: &Workbench,
    experiment: &str,
    options: MatrixOptions,
    env: MatrixEnv,
) -> Result<MatrixOutcome, MatrixError> {
    let spec = launch::find_experiment(workbench, experiment)?.clone();
    run_matrix_spec(workbench, spec, options, env).await
}

/// [`run_matrix`] for an experiment that is not in the workbench's files (a fork's).
pub async fn run_matrix_spec(
    workbench: &Workbench,
    spec: ExperimentSpec,
    options: MatrixOptions,
    env: MatrixEnv,
) -> Result<MatrixOutcome, MatrixError> {
    start_matrix(workbench, spec, options, env, None).await
}

/// A new matrix folder for `spec` and its trials run; `ops` go to a run of one trial.
async fn start_matrix(
    workbench: &Workbench,
    spec: ExperimentSpec,
    options: MatrixOptions,
    env: MatrixEnv,
    ops: Option<mpsc::UnboundedReceiver<Op>>,
) -> Result<MatrixOutcome, MatrixError> {
    let plan = plan(&spec);
    preflight(workbench, &spec, &env).await?;
    let now = env.clock.now();
    let run_id = launch::fresh_run_id(&workbench.root.join("findings"), &spec.name, now);
    let dir = workbench.root.join("findings").join(&run_id);
    if dir.exists() {
        return Err(findings::FindingsError::AlreadyExists { path: dir }.into());
    }
    if !plan.is_single() {
        std::fs::create_dir_all(&dir).map_err(findings::FindingsError::io("create", &dir))?;
        findings::snapshot_config(&dir, &workbench.root, &workbench.files(), &launch::redactor(workbench, &spec))?;
        findings::write_notes_stub(&dir)?;
    }
    let matrix = MatrixFile {
        format: store::FORMAT,
        run_id: run_id.clone(),
        experiment_file: relative(&workbench.root, &spec.path),
        info: plan.info.clone(),
        shard: options.shard,
        trials: plan.trials.clone(),
        troupe_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let to_run: Vec<TrialSpec> =
        plan.trials.iter().filter(|t| options.shard.is_none_or(|s| s.contains(t))).cloned().collect();
    run_trials(workbench, spec, plan, matrix, dir, to_run, Vec::new(), &options, env, ops).await
}

/// Runs `spec`, an experiment of one trial, exactly as `troupe run` does ([`run_matrix_spec`]:
/// the same folder, seed, record, checks and learning), with a live view steering it through
/// `ops`: `Op::CancelTask` reaches the run; `Op::CancelRun` cancels it as `env.cancel` does (the
/// run is then not recorded and memory learns nothing from it). Refuses an experiment of
/// several trials, whose trials take no ops.
pub async fn run_single_spec(
    workbench: &Workbench,
    spec: ExperimentSpec,
    options: MatrixOptions,
    env: MatrixEnv,
    ops: mpsc::UnboundedReceiver<Op>,
) -> Result<MatrixOutcome, MatrixError> {
    if !plan(&spec).is_single() || options.shard.is_some() {
        return Err(MatrixError::Refused(format!(
            "experiment `{}` is a matrix of several trials: run it as a matrix",
            spec.name
        )));
    }
    start_matrix(workbench, spec, options, env, Some(ops)).await
}

/// Finishes the matrix in `dir`: runs the trials of its share that `trials.jsonl` does not hold.
/// Refuses when the experiment or any file that shaped it changed since the matrix started.
pub async fn resume_matrix(
    workbench: &Workbench,
    dir: &Path,
    options: MatrixOptions,
    env: MatrixEnv,
) -> Result<MatrixOutcome, MatrixError> {
    let matrix = store::read_matrix(dir)?;
    let spec = launch::find_experiment(workbench, &matrix.info.experiment)?.clone();
    let plan = plan(&spec);
    if plan.is_single() {
        return Err(MatrixError::Refused(format!(
            "{} is a run of one trial: there is nothing to resume; run the experiment again",
            dir.display()
        )));
    }
    if plan.info != matrix.info || plan.trials != matrix.trials {
        return Err(MatrixError::Refused(format!(
            "experiment `{}` is not the matrix recorded in {}: its tasks, variants, repetitions or checks changed\n  = hint: put back the files kept in {}/config/, or start a new run",
            spec.name,
            dir.join(store::MATRIX_FILE).display(),
            dir.display()
        )));
    }
    let changed = findings::changed_since_snapshot(dir, &workbench.root, &workbench.files());
    if !changed.is_empty() {
        let list: Vec<String> = changed.iter().map(|p| relative(&workbench.root, p)).collect();
        return Err(MatrixError::Refused(format!(
            "these files changed since the matrix in {} started: {}; resuming would mix two configurations\n  = hint: put back the versions kept in {}/config/, or start a new run",
            dir.display(),
            list.join(", "),
            dir.display()
        )));
    }
    preflight(workbench, &spec, &env).await?;
    let recorded = store::read_records(dir)?;
    let done: BTreeSet<&str> = recorded.iter().map(|r| r.key.as_str()).collect();
    let shard = options.shard.or(matrix.shard);
    let to_run: Vec<TrialSpec> = plan
        .trials
        .iter()
        .filter(|t| shard.is_none_or(|s| s.contains(t)) && !done.contains(t.key.as_str()))
        .cloned()
        .collect();
    // Folders of trials that started but were never recorded: what a kill left half-written.
    for trial in &to_run {
        let folder = dir.join(&trial.folder);
        if trial.folder.starts_with("trials/") && folder.exists() {
            std::fs::remove_dir_all(&folder)
                .map_err(findings::FindingsError::io("clear the unfinished trial folder", &folder))?;
        }
    }
    let options = MatrixOptions { shard, ..options };
    run_trials(workbench, spec, plan, matrix, dir.to_path_buf(), to_run, recorded, &options, env, None).await
}

/// Every variant must be able to start (models buildable, keys set) before any trial runs: a
/// missing API key is a configuration error, not a column of failed trials. Readying may fetch
/// and load the embedded model, so it runs on a blocking thread, never on the async workers.
async fn preflight(workbench: &Workbench, spec: &ExperimentSpec, env: &MatrixEnv) -> Result<(), MatrixError> {
    let Some(task) = spec.tasks.first().cloned() else {
        return Err(MatrixError::Refused(format!("experiment `{}` has no tasks", spec.name)));
    };
    let (workbench, spec, pool, updates) = (workbench.clone(), spec.clone(), env.pool.clone(), env.updates.clone());
    let ready = tokio::task::spawn_blocking(move || {
        let mut status = |line: &str| {
            let _ = updates.send(MatrixUpdate::Status(line.to_owned()));
        };
        for variant in variants(&spec) {
            let (workbench, spec) = trial_setup(&workbench, &spec, &variant, &task);
            launch::prepare_spec(&workbench, &spec, 0, 0, &mut status, &pool, &RunOptions::default())?;
        }
        Ok::<(), MatrixError>(())
    });
    ready.await.map_err(|err| MatrixError::Refused(format!("readying the models stopped: {err}")))?
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

#[allow(clippy::too_many_arguments)] // the plan's parts, each from a different source per entry point
async fn run_trials(
    workbench: &Workbench,
    spec: ExperimentSpec,
    plan: Plan,
    matrix: MatrixFile,
    dir: PathBuf,
    to_run: Vec<TrialSpec>,
    recorded: Vec<TrialRecord>,
    options: &MatrixOptions,
    env: MatrixEnv,
    ops: Option<mpsc::UnboundedReceiver<Op>>,
) -> Result<MatrixOutcome, MatrixError> {
    let MatrixEnv { pool, clock, updates, cancel, mcp } = env;
    let single = plan.is_single();
    let concurrency = options.concurrency.or(spec.concurrency).unwrap_or_else(|| {
        let local = variants(&spec).iter().any(|variant| {
            let task = spec.tasks.first().cloned().unwrap_or_else(|| crate::config::TaskSpec {
                id: String::new(),
                input: String::new(),
                expected: None,
            });
            let (workbench, spec) = trial_setup(workbench, &spec, variant, &task);
            launch::reaches_local(&workbench, &spec)
        });
        if local { 1 } else { DEFAULT_CONCURRENCY }
    });
    if !single {
        store::write_matrix(&dir, &matrix)?;
    }
    let _ = updates.send(MatrixUpdate::Planned {
        dir: dir.clone(),
        total: plan.info.trials,
        to_run: u32::try_from(to_run.len()).unwrap_or(u32::MAX),
        recorded: u32::try_from(recorded.len()).unwrap_or(u32::MAX),
        concurrency,
    });
    // A run of one trial writes its folder through `launch`; its log opens once the folder exists.
    let log = if single { None } else { Some(TrialLog::open(&dir)?) };
    let shared = Arc::new(MatrixContext {
        workbench: workbench.clone(),
        spec: spec.clone(),
        dir: dir.clone(),
        run_id: matrix.run_id.clone(),
        single,
        pool,
        clock,
        updates: updates.clone(),
        log: log.map(Mutex::new),
        forward_events: options.forward_events,
        cancel: cancel.clone(),
        redactor: launch::redactor(workbench, &spec),
        memory_override: options.memory,
        memories: Mutex::new(HashMap::new()),
        mcp,
        ops: Mutex::new(ops.filter(|_| single)),
    });
    let permits = Arc::new(Semaphore::new(usize::try_from(concurrency.max(1)).unwrap_or(1)));
    let mut running = tokio::task::JoinSet::new();
    for trial in to_run {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = cancel.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        if cancel.is_cancelled() {
            break;
        }
        let shared = shared.clone();
        running.spawn(async move {
            let record = run_trial(&shared, &trial).await;
            drop(permit);
            record
        });
    }
    let mut fresh = Vec::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(Some(record)) => fresh.push(record),
            Ok(None) => {}
            Err(err) => {
                let _ = updates.send(MatrixUpdate::Status(format!("a trial's task ended abnormally: {err}")));
            }
        }
    }
    let cancelled = cancel.is_cancelled();
    let records = if single {
        if let Some(record) = fresh.first() {
            let mut log = TrialLog::open(&dir)?;
            log.append(record)?;
            store::append_checks(&dir, record)?;
        }
        fresh
    } else {
        store::read_records(&dir)?
    };
    let summary = if single {
        let summary = super::summary::summarize(&plan.info, &records);
        if dir.is_dir() {
            store::write_summary(&dir, &summary)?;
        }
        summary
    } else {
        store::write_outputs(&dir, &plan.info, &records)?
    };
    let share: BTreeSet<&str> =
        plan.trials.iter().filter(|t| options.shard.is_none_or(|s| s.contains(t))).map(|t| t.key.as_str()).collect();
    let recorded: BTreeSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let complete = share.is_subset(&recorded);
    Ok(MatrixOutcome { dir, info: plan.info, records, summary, complete, cancelled })
}

/// Runs one trial to its end and scores it; `None` when the user cancelled it (not recorded).
async fn run_trial(shared: &MatrixContext, trial: &TrialSpec) -> Option<TrialRecord> {
    let variant = variants(&shared.spec).into_iter().find(|v| v.name == trial.variant)?;
    let task = shared.spec.tasks.iter().find(|t| t.id == trial.task_id)?.clone();
    let (workbench, spec) = trial_setup(&shared.workbench, &shared.spec, &variant, &task);
    let dir = if shared.single { shared.dir.clone() } else { shared.dir.join(&trial.folder) };
    let _ = shared.updates.send(MatrixUpdate::TrialStarted { trial: trial.clone(), dir: dir.clone() });
    let mut record = TrialRecord::unscored(
        trial.index,
        trial.key.clone(),
        trial.variant.clone(),
        trial.task_id.clone(),
        trial.repetition,
        trial.seed,
        trial.folder.clone(),
    );
    let options = RunOptions {
        dir: Some(dir.clone()),
        run_id: Some(if shared.single {
            shared.run_id.clone()
        } else {
            format!("{}--{}", shared.run_id, trial.folder.trim_start_matches("trials/"))
        }),
        seed: Some(trial.seed),
        trial: !shared.single,
        memory: shared.memory_for(&variant),
        mcp: Some(shared.mcp.clone()),
        external_root: false,
    };
    let memory = options.memory.clone();
    let now = shared.clock.now();
    let prepared = {
        let updates = shared.updates.clone();
        let mut status = move |line: &str| {
            let _ = updates.send(MatrixUpdate::Status(line.to_owned()));
        };
        launch::prepare_spec(&workbench, &spec, now, uri_salt(trial.seed), &mut status, &shared.pool, &options)
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            record.error = Some(err.to_string());
            return Some(finish_record(shared, record));
        }
    };
    let models = prepared.config.models.clone();
    let mut launched = match launch::launch(prepared, shared.clock.clone()) {
        Ok(launched) => launched,
        Err(err) => {
            record.error = Some(err.to_string());
            return Some(finish_record(shared, record));
        }
    };
    let mut meter = Meter::default();
    let mut cancel_sent = false;
    let mut ops = shared.ops.lock().unwrap_or_else(PoisonError::into_inner).take();
    loop {
        tokio::select! {
            event = launched.next_event() => {
                let Some(event) = event else { break };
                meter.apply(&event);
                if shared.forward_events {
                    let _ = shared.updates.send(MatrixUpdate::Event { key: trial.key.clone(), event });
                }
            }
            () = shared.cancel.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                launched.send(Op::CancelRun);
            }
            op = next_op(&mut ops), if ops.is_some() => match op {
                // Cancelling the whole run is the runner's cancellation, so that it is treated
                // (not recorded) the same whichever way it was asked for.
                Some(Op::CancelRun) => shared.cancel.cancel(),
                Some(op @ Op::CancelTask { .. }) => launched.send(op),
                None => ops = None,
            },
        }
    }
    let unrecorded = launched.finish().await.err().map(|err| err.to_string());
    let measured = meter.finish();
    if cancel_sent {
        return None;
    }
    record.apply(&measured);
    if let Some(error) = unrecorded {
        // The log could not be written: whatever the run did after, it failed as a record.
        record.status = RunStatus::Failed.as_str().to_owned();
        record.error = Some(error);
    }
    record.checks = run_checks(&spec.checks, measured.answer.as_deref(), &task, &models).await;
    let recalled = measured.recalled.clone();
    let completed = measured.status == Some(RunStatus::Completed);
    if record.checks.is_empty() {
        record.score_by_completion(completed);
    } else {
        let passed = record.checks.iter().filter(|c| c.pass).count();
        record.pass = passed == record.checks.len();
        record.score = passed as f64 / record.checks.len() as f64;
    }
    let record = finish_record(shared, record);
    if let Some(memory) = memory {
        let run_id = options.run_id.clone().unwrap_or_default();
        let ended = EndedRun {
            workbench: &workbench,
            spec: &spec,
            task: &task.input,
            dir: &dir,
            run_id: &run_id,
            models: &models,
            record: &record,
            recalled: &recalled,
            ended_ms: i64::try_from(shared.clock.now()).unwrap_or(i64::MAX),
        };
        let status = |line: String| {
            let _ = shared.updates.send(MatrixUpdate::Status(line)); // the view may be gone
        };
        learn_from_run(ended, &memory, &status).await;
    }
    Some(record)
}

/// The salt of a trial's subtask URIs, from its seed: a trial run again (or its variant
/// twin) hands its models the same URIs, so a small model's replies differ only where the work
/// really did, not because `subtask://k3v9q2` became `subtask://x81f0c`.
fn uri_salt(seed: u64) -> u32 {
    (seed ^ (seed >> 32)) as u32
}

/// The next op of a live view; `None` once it is gone (or there is none).
async fn next_op(ops: &mut Option<mpsc::UnboundedReceiver<Op>>) -> Option<Op> {
    match ops {
        Some(ops) => ops.recv().await,
        None => None,
    }
}

/// Records a finished trial (a matrix appends it at once) and tells the view.
fn finish_record(shared: &MatrixContext, mut record: TrialRecord) -> TrialRecord {
    let redact = |text: &mut String| *text = shared.redactor.redact(text).into_owned();
    if let Some(answer) = record.answer.as_mut() {
        redact(answer);
    }
    if let Some(error) = record.error.as_mut() {
        redact(error);
    }
    for check in &mut record.checks {
        redact(&mut check.detail);
    }
    if let Some(log) = &shared.log {
        let appended = match log.lock() {
            Ok(mut log) => log.append(&record),
            Err(poisoned) => poisoned.into_inner().append(&record),
        };
        if let Err(err) = appended {
            let _ = shared.updates.send(MatrixUpdate::Status(format!("trial {} not recorded: {err}", record.key)));
        }
    }
    let _ = shared.updates.send(MatrixUpdate::TrialFinished { record: record.clone() });
    record
}

/// `troupe merge`: joins the folders of a sharded matrix into a new folder under `findings/`
/// with one `trials.jsonl`, the trials' folders, and one report — the report the same matrix
/// run on one machine would have. The shard folders are left as they are.
pub fn merge(
    findings_dir: &Path,
    dirs: &[PathBuf],
    now: crate::protocol::Millis,
) -> Result<MatrixOutcome, MatrixError> {
    let Some(first) = dirs.first() else {
        return Err(MatrixError::Refused("name at least one run folder to merge".to_owned()));
    };
    let base = store::read_matrix(first)?;
    // Everything is read and checked before anything is written.
    let mut records: Vec<(TrialRecord, PathBuf)> = Vec::new();
    for dir in dirs {
        let matrix = store::read_matrix(dir)?;
        if matrix.info != base.info || matrix.trials != base.trials {
            return Err(MatrixError::Refused(format!(
                "{} and {} are not shards of the same matrix (their experiments, tasks, variants or checks differ)",
                first.display(),
                dir.display()
            )));
        }
        for record in store::read_records(dir)? {
            // A record names its own folder: it must be the one the plan gives its trial, so a
            // shard's line can only ever copy that shard's own trial folder.
            let planned = base.trials.iter().find(|t| t.key == record.key);
            if planned.is_none_or(|t| t.folder != record.folder) {
                return Err(MatrixError::Refused(format!(
                    "{}: trial {} names the folder {:?}, but the matrix's plan {}; refusing to merge a shard edited by hand",
                    dir.join(store::TRIALS_FILE).display(),
                    record.key,
                    record.folder,
                    planned.map_or_else(|| "has no such trial".to_owned(), |t| format!("puts it in {:?}", t.folder))
                )));
            }
            match records.iter().find(|(r, _)| r.key == record.key) {
                Some((existing, other)) if existing != &record => {
                    return Err(MatrixError::Refused(format!(
                        "trial {} is recorded in both {} and {}, differently; merge each trial from one folder only",
                        record.key,
                        other.display(),
                        dir.display()
                    )));
                }
                Some(_) => {}
                None => records.push((record, dir.clone())),
            }
        }
    }
    records.sort_by_key(|(r, _)| r.index);
    let run_id = launch::fresh_run_id(findings_dir, &base.info.experiment, now);
    let dir = findings_dir.join(&run_id);
    if dir.exists() {
        return Err(findings::FindingsError::AlreadyExists { path: dir }.into());
    }
    for (record, source) in &records {
        copy_dir(&source.join(&record.folder), &dir.join(&record.folder))?;
    }
    let config = first.join(findings::CONFIG_DIR);
    if config.is_dir() {
        copy_dir(&config, &dir.join(findings::CONFIG_DIR))?;
    }
    std::fs::create_dir_all(&dir).map_err(findings::FindingsError::io("create", &dir))?;
    findings::write_notes_stub(&dir)?;
    let matrix = MatrixFile { run_id, shard: None, ..base };
    store::write_matrix(&dir, &matrix)?;
    let records: Vec<TrialRecord> = records.into_iter().map(|(r, _)| r).collect();
    let mut log = TrialLog::open(&dir)?;
    for record in &records {
        log.append(record)?;
    }
    let summary = store::write_outputs(&dir, &matrix.info, &records)?;
    let recorded: BTreeSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let complete = matrix.trials.iter().all(|t| recorded.contains(t.key.as_str()));
    Ok(MatrixOutcome { dir, info: matrix.info, records, summary, complete, cancelled: false })
}

/// Copies a folder tree (a trial's run folder, a config snapshot). A symbolic link is refused,
/// not followed: a shard is data, and a link in it could pull any file of this machine into
/// the merged folder that is then shared.
fn copy_dir(from: &Path, to: &Path) -> Result<(), MatrixError> {
    let failed = findings::FindingsError::io;
    std::fs::create_dir_all(to).map_err(failed("create", to))?;
    for entry in std::fs::read_dir(from).map_err(failed("read", from))? {
        let entry = entry.map_err(failed("read", from))?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(failed("read", &entry.path()))?;
        if kind.is_symlink() {
            return Err(MatrixError::Refused(format!(
                "{} is a symbolic link; a run folder holds only files and folders, so this one is refused",
                entry.path().display()
            )));
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(failed("copy", &entry.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
