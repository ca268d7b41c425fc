//! The matrix of an experiment: every trial (variant × task × repetition) with its index, key,
//! folder and seed; the split of trials into shards; and the workbench a variant's trial runs.
//!
//! Invariant: pure and deterministic. The same experiment gives the same trials in the same
//! order with the same seeds on every machine, so shards split the same way everywhere and a
//! variant's trial pairs with the baseline's trial of the same task and repetition.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::MatrixInfo;
use crate::config::{DEFAULT_VARIANT, ExperimentSpec, LimitsPatch, TaskSpec, VariantSpec, Workbench};

/// One trial of the matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialSpec {
    pub index: u32,
    /// The (task, repetition) this trial belongs to: the variants' trials of one pair share it.
    pub pair: u32,
    /// `<variant>/<task id>/<repetition>`.
    pub key: String,
    pub variant: String,
    pub task_id: String,
    /// 1-based.
    pub repetition: u32,
    pub seed: u64,
    /// Relative to the matrix folder.
    pub folder: String,
}

/// Every trial of an experiment, and what the summary needs to know about the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub info: MatrixInfo,
    pub trials: Vec<TrialSpec>,
}

impl Plan {
    /// A plan of one trial runs as an ordinary run: its folder is the run folder itself.
    pub fn is_single(&self) -> bool {
        self.trials.len() == 1
    }
}

/// The experiment's variants: its `[[variants]]`, or one named `default` that changes nothing.
pub fn variants(spec: &ExperimentSpec) -> Vec<VariantSpec> {
    if spec.variants.is_empty() {
        vec![VariantSpec { name: DEFAULT_VARIANT.to_owned(), ..VariantSpec::default() }]
    } else {
        spec.variants.clone()
    }
}

/// The variant the others are compared with.
pub fn baseline(spec: &ExperimentSpec) -> String {
    spec.baseline.clone().unwrap_or_else(|| variants(spec).first().map(|v| v.name.clone()).unwrap_or_default())
}

/// A trial's key in `trials.jsonl`: `<variant>/<task id>/<repetition>`.
pub fn trial_key(variant: &str, task_id: &str, repetition: u32) -> String {
    format!("{variant}/{task_id}/{repetition}")
}

/// The matrix of `spec`. Trials are ordered task by task, repetition by repetition, and the
/// variants of one (task, repetition) side by side, so that a matrix cut short (or run on a
/// drifting machine) still holds comparable pairs.
pub fn plan(spec: &ExperimentSpec) -> Plan {
    let variants = variants(spec);
    let single = variants.len() == 1 && spec.tasks.len() == 1 && spec.repetitions <= 1;
    let mut trials = Vec::new();
    let mut pair = 0u32;
    for task in &spec.tasks {
        for repetition in 1..=spec.repetitions.max(1) {
            let seed = trial_seed(&spec.name, &task.id, repetition);
            for variant in &variants {
                let index = u32::try_from(trials.len()).unwrap_or(u32::MAX);
                let folder = if single {
                    ".".to_owned()
                } else {
                    format!("trials/{}--{}--r{repetition}", slug(&variant.name), task.id)
                };
                trials.push(TrialSpec {
                    index,
                    pair,
                    key: trial_key(&variant.name, &task.id, repetition),
                    variant: variant.name.clone(),
                    task_id: task.id.clone(),
                    repetition,
                    seed,
                    folder,
                });
            }
            pair += 1;
        }
    }
    let info = MatrixInfo {
        experiment: spec.name.clone(),
        variants: variants.iter().map(|v| v.name.clone()).collect(),
        baseline: baseline(spec),
        tasks: spec.tasks.iter().map(|t| t.id.clone()).collect(),
        repetitions: spec.repetitions.max(1),
        trials: u32::try_from(trials.len()).unwrap_or(u32::MAX),
        checks: spec.checks.iter().map(|c| c.name.clone()).collect(),
    };
    Plan { info, trials }
}

/// The seed of every variant's trial of `task_id`'s `repetition`: the first 8 bytes of a
/// SHA-256, so it is the same on every platform and in every version.
pub fn trial_seed(experiment: &str, task_id: &str, repetition: u32) -> u64 {
    let mut hash = Sha256::new();
    for part in [experiment.as_bytes(), task_id.as_bytes(), &repetition.to_le_bytes()] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A variant's name as a folder name: letters, digits, `-` and `_` kept, the rest `_`.
fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// `--shard i/n`: the trials whose pair (task and repetition) is `i - 1` modulo `n`. A pair's
/// variants stay together, so every shard's own report compares them; round-robin rather than
/// contiguous blocks, so every shard gets a similar mix of tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based.
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn contains(&self, trial: &TrialSpec) -> bool {
        trial.pair % self.count == self.index - 1
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a shard: write i/n with 1 ≤ i ≤ n, for example 2/4");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The workbench and the one-task experiment a trial of `variant` on `task` runs: the variant's
/// expert fields, aliases, limits and root applied over the experiment's.
pub fn trial_setup(
    workbench: &Workbench,
    spec: &ExperimentSpec,
    variant: &VariantSpec,
    task: &TaskSpec,
) -> (Workbench, ExperimentSpec) {
    let mut workbench = workbench.clone();
    for (name, patch) in &variant.agents {
        if let Some(agent) = workbench.agents.get_mut(name) {
            *agent = patch.apply(agent);
        }
    }
    let mut spec = spec.clone();
    spec.models.extend(variant.models.iter().map(|(alias, model)| (alias.clone(), model.clone())));
    spec.limits = merge_limits(&spec.limits, &variant.limits);
    if let Some(root) = &variant.root {
        spec.root.clone_from(root);
    }
    spec.tasks = vec![task.clone()];
    spec.repetitions = 1;
    spec.variants = Vec::new();
    (workbench, spec)
}

/// `over` on top of `base`: the keys `over` sets win.
fn merge_limits(base: &LimitsPatch, over: &LimitsPatch) -> LimitsPatch {
    LimitsPatch {
        max_depth: over.max_depth.or(base.max_depth),
        max_children_per_agent: over.max_children_per_agent.or(base.max_children_per_agent),
        max_concurrent_subtasks: over.max_concurrent_subtasks.or(base.max_concurrent_subtasks),
        max_subtasks_per_run: over.max_subtasks_per_run.or(base.max_subtasks_per_run),
        max_turns_per_agent: over.max_turns_per_agent.or(base.max_turns_per_agent),
        max_wall_seconds_per_subtask: over.max_wall_seconds_per_subtask.or(base.max_wall_seconds_per_subtask),
        max_tokens_per_run: over.max_tokens_per_run.or(base.max_tokens_per_run),
        max_cost: over.max_cost.or(base.max_cost),
        on_finish: over.on_finish.or(base.on_finish),
        max_tool_result_bytes: over.max_tool_result_bytes.or(base.max_tool_result_bytes),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn spec(variants: &[&str], tasks: usize, repetitions: u32) -> ExperimentSpec {
        let tasks =
            (1..=tasks).map(|i| TaskSpec { id: format!("t{i}"), input: format!("task {i}"), expected: None }).collect();
        ExperimentSpec {
            repetitions,
            variants: variants.iter().map(|n| VariantSpec { name: (*n).into(), ..VariantSpec::default() }).collect(),
            ..ExperimentSpec::new("e", "host", tasks, "/e.toml")
        }
    }

    #[test]
    fn seeds_are_stable_and_shared_by_the_variants_of_a_pair() {
        // A fixed value: changing the derivation would silently change every published matrix.
        assert_eq!(trial_seed("e", "t1", 1), trial_seed("e", "t1", 1));
        assert_ne!(trial_seed("e", "t1", 1), trial_seed("e", "t1", 2));
        assert_ne!(trial_seed("e", "t1", 1), trial_seed("e", "t2", 1));
        assert_ne!(trial_seed("e1", "t", 1), trial_seed("e", "1t", 1), "parts are length-prefixed");
        let plan = plan(&spec(&["a", "b", "c"], 2, 3));
        assert_eq!(plan.trials.len(), 18);
        for trial in &plan.trials {
            let same_pair =
                plan.trials.iter().filter(|t| t.task_id == trial.task_id && t.repetition == trial.repetition);
            assert!(same_pair.clone().all(|t| t.seed == trial.seed));
            assert_eq!(same_pair.count(), 3);
        }
        let seeds: BTreeSet<u64> = plan.trials.iter().map(|t| t.seed).collect();
        assert_eq!(seeds.len(), 6, "one seed per (task, repetition)");
    }

    #[test]
    fn the_seed_derivation_does_not_drift() {
        // Pinned (computed independently with Python's hashlib): a change here changes the
        // seeds of every published matrix.
        assert_eq!(trial_seed("hello", "task-1", 1), 0xf146_2605_82c8_825d);
    }

    #[test]
    fn keys_and_folders_are_unique_and_indexes_dense() {
        let plan = plan(&spec(&["a b", "c"], 3, 2));
        let keys: BTreeSet<&str> = plan.trials.iter().map(|t| t.key.as_str()).collect();
        let folders: BTreeSet<&str> = plan.trials.iter().map(|t| t.folder.as_str()).collect();
        assert_eq!((keys.len(), folders.len()), (12, 12));
        assert!(plan.trials.iter().enumerate().all(|(i, t)| t.index as usize == i));
        assert_eq!(plan.trials[0].folder, "trials/a_b--t1--r1");
        assert_eq!(plan.trials[1].key, "c/t1/1", "variants of one pair sit side by side");
        assert_eq!(plan.info.baseline, "a b");
    }

    #[test]
    fn a_plain_experiment_is_one_trial_in_the_run_folder() {
        let plan = plan(&spec(&[], 1, 1));
        assert!(plan.is_single());
        assert_eq!(plan.trials[0].folder, ".");
        assert_eq!(plan.trials[0].variant, DEFAULT_VARIANT);
    }

    #[test]
    fn shards_partition_the_matrix() {
        let plan = plan(&spec(&["a", "b"], 5, 3));
        for count in 1..=7 {
            let mut seen = vec![0; plan.trials.len()];
            for index in 1..=count {
                let shard = Shard { index, count };
                for trial in plan.trials.iter().filter(|t| shard.contains(t)) {
                    seen[trial.index as usize] += 1;
                }
                let shard_trials = plan.trials.iter().filter(|t| shard.contains(t));
                assert!(
                    shard_trials.clone().all(|t| plan
                        .trials
                        .iter()
                        .filter(|o| o.pair == t.pair)
                        .all(|o| shard.contains(o))),
                    "pairs stay together"
                );
            }
            assert!(seen.iter().all(|&n| n == 1), "{count} shards cover each trial once");
        }
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "2", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
