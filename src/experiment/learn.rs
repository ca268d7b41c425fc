//! What memory learns when a run ends, the same for every way a run is started (`troupe run`,
//! a matrix's trials, the workbench, and any other caller with a finished run folder): how the
//! lessons it was given fared (their use counts), its episode, and with `reflect = true` the
//! reflector's lessons from it.
//!
//! Invariant: learning is advice about a run that already ended. It never changes the run's
//! record or folder (except the reflector's own `reflection.md`); every problem is a status
//! line, never an error of the run. Memory that is frozen (`--memory frozen`) learns nothing.

use std::path::Path;

use super::record::TrialRecord;
use super::reflect::{RunToReflect, reflect};
use crate::config::{ExperimentSpec, MemoryMode, REFLECTOR, Workbench};
use crate::findings;
use crate::memory::recall::RunRecall;
use crate::memory::store::{ItemId, Provenance};
use crate::model::ModelTable;
use crate::protocol::RunStatus;

/// A run that has ended, its folder finished, as memory learns from it.
pub struct EndedRun<'a> {
    /// The run's workbench (for a trial, with its variant applied): says whether to reflect,
    /// and holds the `reflector` expert.
    pub workbench: &'a Workbench,
    pub spec: &'a ExperimentSpec,
    /// The task the run was given: what its episode is found by.
    pub task: &'a str,
    /// The run folder: the reflector reads its `events.jsonl` and writes `reflection.md` there.
    pub dir: &'a Path,
    pub run_id: &'a str,
    /// The run's models: the reflector runs on them.
    pub models: &'a ModelTable,
    /// How it ended (status, pass, checks, usage): what the episode keeps and the reflector reads.
    pub record: &'a TrialRecord,
    /// The lessons its agents were given (the ids of its `memory_recalled` events; the
    /// experiment's `Meter` collects them without repeats).
    pub recalled: &'a [ItemId],
    /// When it ended, in milliseconds since the epoch: the recalled lessons' last use.
    pub ended_ms: i64,
}

/// What [`learn_from_run`] kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Recalled lessons whose use was counted (forgotten ones are skipped).
    pub uses_counted: usize,
    /// The run's episode.
    pub episode: Option<ItemId>,
    /// Lessons the reflector kept; `None` when the run does not reflect.
    pub reflected: Option<usize>,
}

/// Learns from `run` into `memory`: counts the use of the lessons it recalled (a success when
/// `run.record.pass`), keeps its episode, and reflects on it when the workbench or experiment
/// says `reflect = true`. Blocking store work runs on blocking threads. `status` hears every
/// problem and the reflection's result.
pub async fn learn_from_run(run: EndedRun<'_>, memory: &RunRecall, status: &(dyn Fn(String) + Send + Sync)) -> Learned {
    let mut learned = Learned::default();
    if memory.mode() != MemoryMode::On {
        return learned;
    }
    let record = run.record;
    // How the lessons it was given fared: what tells useful lessons from noise later. A run
    // someone cancelled (its root, say, from the workbench) says nothing of them either way.
    if !run.recalled.is_empty() && record.status != RunStatus::Cancelled.as_str() {
        let (store, ids, pass, at) = (memory.memory().clone(), run.recalled.to_vec(), record.pass, run.ended_ms);
        match tokio::task::spawn_blocking(move || store.store().record_use(&ids, pass, at)).await {
            Ok(Ok(counted)) => learned.uses_counted = counted,
            Ok(Err(err)) => status(format!("could not record which lessons were used: {err}")),
            Err(err) => status(format!("recording which lessons were used stopped: {err}")),
        }
    }

    let folder = run.dir.strip_prefix(&run.workbench.root).unwrap_or(run.dir).display().to_string();
    let data = serde_json::json!({
        "experiment": run.spec.name,
        "variant": record.variant,
        "task_id": record.task_id,
        "repetition": record.repetition,
        "root": run.spec.root,
        "status": record.status,
        "pass": record.pass,
        "score": record.score,
        "checks": record.checks.iter().map(|c| serde_json::json!({"name": c.name, "pass": c.pass})).collect::<Vec<_>>(),
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost": record.cost,
        "wall_ms": record.wall_ms,
        "run": folder,
    });
    let provenance = Provenance { run_id: Some(run.run_id.to_owned()), seq: None, expert: Some(run.spec.root.clone()) };
    let (episodes, task) = (memory.memory().clone(), run.task.to_owned());
    match tokio::task::spawn_blocking(move || episodes.add_episode(&task, provenance, data)).await {
        Ok(Ok(item)) => learned.episode = Some(item.id),
        Ok(Err(err)) => status(format!("the run's episode was not kept in memory: {err}")),
        Err(err) => status(format!("keeping the run's episode stopped: {err}")),
    }

    if !run.workbench.reflects(run.spec) {
        return learned;
    }
    let Some(reflector) = run.workbench.agents.get(REFLECTOR) else {
        status(format!(
            "reflect = true, but the workbench has no `{REFLECTOR}` expert: add agents/{REFLECTOR}.toml (troupe ships one)"
        ));
        return learned;
    };
    let events = match findings::read_events(&run.dir.join(findings::EVENTS_FILE)) {
        Ok((events, _)) => events,
        Err(err) => {
            status(format!("no reflection: {err}"));
            return learned;
        }
    };
    let digest_of = RunToReflect { dir: run.dir, run_id: run.run_id, task: run.task, record, events: &events };
    let reflection = reflect(digest_of, reflector, run.models, memory.memory().clone()).await;
    let kept = reflection.kept.len();
    learned.reflected = Some(kept);
    let mut line = format!("reflection on {}: {kept} lesson{} kept", record.key, if kept == 1 { "" } else { "s" });
    if let Some(problem) = reflection.problems.first() {
        line.push_str(&format!(" ({problem})"));
    }
    status(line);
    learned
}
