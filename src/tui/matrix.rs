//! A matrix run as the Run screen shows it: progress (trials done of total, passes, ETA), the
//! per-variant comparison (pass rate with its Wilson interval, mean tokens), and the tree and
//! transcript of one trial at a time, stepped through in the order the trials started.
//!
//! Invariants: pure (no I/O, no clock, no channels: `now` comes in, files are read by the
//! shell). The summary is recomputed when a trial finishes, never per frame. Memory is bounded:
//! a trial's run view is kept while the trial runs, while it is shown, and for the
//! [`KEEP_FINISHED`] finished trials looked at last; an older one is dropped, and read back from
//! the trial's `events.jsonl` when the user steps onto it again.
//!
//! A matrix that ended before this session (opened from Findings) is the same pane built from
//! its folder's files ([`MatrixPane::recorded`]): every trial starts dropped and is read back
//! when shown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::experiment::plan::TrialSpec;
use crate::experiment::record::{MatrixInfo, TrialRecord};
use crate::experiment::store::MatrixFile;
use crate::experiment::summary::{Summary, summarize};
use crate::experiment::update::MatrixUpdate;
use crate::protocol::{Event, Millis, TaskId};
use crate::serve::matrix_progress::MatrixProgress;

use super::run_pane::RunPane;
use super::tree::RunView;

/// Finished trials whose run views are kept, besides the running trials and the shown one.
pub const KEEP_FINISHED: usize = 4;

/// What a fork re-runs, for the header and for `r` (which forks the same task again).
#[derive(Clone, Debug, PartialEq)]
pub struct ForkOrigin {
    /// The source run's folder.
    pub run: PathBuf,
    pub uri: TaskId,
    pub agent: String,
    pub model: String,
}

/// A trial that has started.
#[derive(Debug)]
pub struct TrialSlot {
    pub spec: TrialSpec,
    /// Its run folder.
    pub dir: PathBuf,
    /// Its run, while kept in memory (see the module's invariants).
    pub pane: Option<RunPane>,
    /// Set once it finished (and was scored).
    pub record: Option<TrialRecord>,
    /// Its events are being read back from its folder.
    pub loading: bool,
    /// Reading them back failed.
    pub load_error: Option<String>,
    /// The matrix ended before it did: cancelled, so not recorded.
    pub stopped: bool,
}

impl TrialSlot {
    /// `pass`, `FAIL`, `error` once finished; `running` before; `stopped` if cancelled.
    pub fn verdict(&self) -> &'static str {
        match &self.record {
            None if self.stopped => "stopped, not recorded",
            None => "running",
            Some(record) if record.status == "error" => "error",
            Some(record) if record.pass => "pass",
            Some(_) => "FAIL",
        }
    }
}

/// How the matrix ended, as the runner says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatrixEnd {
    /// Every trial is recorded.
    pub complete: bool,
    pub cancelled: bool,
}

/// A matrix run on the Run screen.
#[derive(Debug)]
pub struct MatrixPane {
    pub experiment: String,
    pub info: MatrixInfo,
    /// Set when the matrix is a fork's re-runs.
    pub fork: Option<ForkOrigin>,
    /// The matrix folder, once planned.
    pub dir: Option<PathBuf>,
    /// Trials at once, once planned.
    pub concurrency: Option<u32>,
    pub progress: MatrixProgress,
    /// The trials started, in the order they started.
    pub trials: Vec<TrialSlot>,
    by_key: HashMap<String, usize>,
    /// The trial whose tree and transcript are shown (an index into `trials`).
    pub shown: usize,
    /// Show each trial as it starts; off once the user steps back, on again at the newest.
    pub follow: bool,
    /// Every finished trial's record, in the order they finished.
    pub records: Vec<TrialRecord>,
    /// Of `records`, as the runner will write it (recomputed when a trial finishes).
    pub summary: Summary,
    /// Finished trials whose views are kept, least recently looked at first.
    kept: VecDeque<usize>,
    pub end: Option<MatrixEnd>,
    /// The matrix stopped on an error (its message was shown).
    pub error: Option<String>,
}

impl MatrixPane {
    pub fn new(experiment: String, info: MatrixInfo, fork: Option<ForkOrigin>) -> Self {
        // Every variant is present from the start, with no trials, so the chart does not jump.
        let summary = summarize(&info, &[]);
        MatrixPane {
            experiment,
            info,
            fork,
            dir: None,
            concurrency: None,
            progress: MatrixProgress::default(),
            trials: Vec::new(),
            by_key: HashMap::new(),
            shown: 0,
            follow: true,
            records: Vec::new(),
            summary,
            kept: VecDeque::new(),
            end: None,
            error: None,
        }
    }

    /// A past matrix, from its folder `dir`: its plan (`matrix.json`) and its records
    /// (`trials.jsonl`, in matrix order). A trial per record, in that order, the first one shown;
    /// none is in memory, so the caller reads the first back (`step(0)` says which). Trials of
    /// its share without a record are not steppable: a kill may have left their folders half
    /// written, and `--resume` runs them again.
    pub fn recorded(dir: PathBuf, matrix: MatrixFile, records: Vec<TrialRecord>, now: Millis) -> Self {
        let MatrixFile { info, shard, trials, .. } = matrix;
        let mut pane = MatrixPane::new(info.experiment.clone(), info, None);
        let share: Vec<&TrialSpec> = trials.iter().filter(|t| shard.is_none_or(|s| s.contains(t))).collect();
        let keys: HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
        let complete = share.iter().all(|t| keys.contains(t.key.as_str()));
        // The progress as if this session had run the share and seen each record finish, so the
        // header counts trials, passes and errors the way it does for a live matrix.
        let to_run = u32::try_from(share.len()).unwrap_or(u32::MAX);
        let planned =
            MatrixUpdate::Planned { dir: dir.clone(), total: pane.info.trials, to_run, recorded: 0, concurrency: 0 };
        pane.progress.apply(&planned, now);
        for record in &records {
            pane.progress.apply(&MatrixUpdate::TrialFinished { record: record.clone() }, now);
        }
        for record in &records {
            // The plan's spec; a record the plan does not hold (hand-edited files) stands in.
            let spec = trials.iter().find(|t| t.key == record.key).cloned().unwrap_or_else(|| TrialSpec {
                index: record.index,
                pair: record.index,
                key: record.key.clone(),
                variant: record.variant.clone(),
                task_id: record.task_id.clone(),
                repetition: record.repetition,
                seed: record.seed,
                folder: record.folder.clone(),
            });
            pane.by_key.insert(record.key.clone(), pane.trials.len());
            pane.trials.push(TrialSlot {
                spec,
                dir: dir.join(&record.folder),
                pane: None,
                record: Some(record.clone()),
                loading: false,
                load_error: None,
                stopped: false,
            });
        }
        pane.summary = summarize(&pane.info, &records);
        pane.records = records;
        pane.follow = false;
        pane.dir = Some(dir);
        pane.end = Some(MatrixEnd { complete, cancelled: false });
        pane
    }

    /// Folds in what the runner reports.
    pub fn apply(&mut self, update: MatrixUpdate, now: Millis) {
        self.progress.apply(&update, now);
        match update {
            MatrixUpdate::Planned { dir, concurrency, .. } => {
                self.dir = Some(dir);
                self.concurrency = Some(concurrency);
            }
            MatrixUpdate::TrialStarted { trial, dir } => {
                let index = self.trials.len();
                let mut pane = RunPane::new();
                pane.dir = Some(dir.clone());
                self.by_key.insert(trial.key.clone(), index);
                self.trials.push(TrialSlot {
                    spec: trial,
                    dir,
                    pane: Some(pane),
                    record: None,
                    loading: false,
                    load_error: None,
                    stopped: false,
                });
                if self.follow {
                    self.shown = index;
                }
            }
            MatrixUpdate::Event { key, event } => {
                let Some(pane) = self.by_key.get(&key).and_then(|&i| self.trials.get_mut(i)?.pane.as_mut()) else {
                    return;
                };
                pane.view.apply(&event);
                if pane.selected.is_none() {
                    pane.selected = pane.view.nodes().first().map(|n| n.uri);
                }
            }
            MatrixUpdate::TrialFinished { record } => {
                if let Some(&index) = self.by_key.get(&record.key)
                    && let Some(slot) = self.trials.get_mut(index)
                {
                    slot.record = Some(record.clone());
                    self.keep(index);
                }
                self.records.push(record);
                self.summary = summarize(&self.info, &self.records);
            }
            MatrixUpdate::Status(_) => {}
        }
    }

    /// The matrix ended: the runner's summary replaces the one computed here (it is the same
    /// figures over the same records, and it is what the folder holds).
    pub fn finish(&mut self, summary: Summary, end: MatrixEnd) {
        self.summary = summary;
        self.end = Some(end);
        for slot in self.trials.iter_mut().filter(|slot| slot.record.is_none()) {
            slot.stopped = true;
        }
    }

    /// The matrix stopped on an error: what had not finished never will.
    pub fn fail(&mut self, error: String) {
        self.error = Some(error);
        for slot in self.trials.iter_mut().filter(|slot| slot.record.is_none()) {
            slot.stopped = true;
        }
    }

    pub fn shown_slot(&self) -> Option<&TrialSlot> {
        self.trials.get(self.shown)
    }

    pub fn shown_pane(&self) -> Option<&RunPane> {
        self.shown_slot().and_then(|slot| slot.pane.as_ref())
    }

    pub fn shown_pane_mut(&mut self) -> Option<&mut RunPane> {
        self.trials.get_mut(self.shown).and_then(|slot| slot.pane.as_mut())
    }

    /// Trials started and not finished.
    pub fn running(&self) -> usize {
        self.trials.iter().filter(|slot| slot.record.is_none() && !slot.stopped).count()
    }

    /// Trials the end of the matrix cut short.
    pub fn stopped(&self) -> usize {
        self.trials.iter().filter(|slot| slot.stopped).count()
    }

    /// Shows the trial `by` places from the shown one, in the order they started. Reaching the
    /// newest follows new trials again. Returns the trial (key, folder) whose events must be
    /// read back, when its view was dropped.
    pub fn step(&mut self, by: isize) -> Option<(String, PathBuf)> {
        let last = self.trials.len().checked_sub(1)?;
        let next = (self.shown as isize).saturating_add(by).clamp(0, last as isize) as usize;
        self.shown = next;
        self.follow = next == last;
        let slot = self.trials.get_mut(next)?;
        if slot.pane.is_some() {
            if slot.record.is_some() {
                self.keep(next);
            }
            return None;
        }
        if slot.loading {
            return None;
        }
        slot.loading = true;
        slot.load_error = None;
        Some((slot.spec.key.clone(), slot.dir.clone()))
    }

    /// Whether trial `key` of folder `dir` is being read back for this matrix: its events are
    /// this matrix's, not those of another matrix whose trial has the same key.
    pub fn awaits(&self, key: &str, dir: &Path) -> bool {
        self.by_key.get(key).and_then(|&i| self.trials.get(i)).is_some_and(|slot| slot.loading && slot.dir == dir)
    }

    /// A dropped trial's events, read back from its folder.
    pub fn loaded(&mut self, key: &str, events: Result<Vec<Event>, String>) {
        let Some(&index) = self.by_key.get(key) else { return };
        let Some(slot) = self.trials.get_mut(index) else { return };
        slot.loading = false;
        match events {
            Ok(events) if slot.pane.is_none() => {
                let mut pane = RunPane::new();
                pane.view = RunView::replay(&events);
                pane.selected = pane.view.nodes().first().map(|n| n.uri);
                pane.dir = Some(slot.dir.clone());
                slot.pane = Some(pane);
                self.keep(index);
            }
            Ok(_) => {}
            Err(error) => slot.load_error = Some(error),
        }
    }

    /// Marks finished trial `index` as just looked at, and drops the views of the finished
    /// trials looked at longest ago beyond [`KEEP_FINISHED`] (never the shown one).
    fn keep(&mut self, index: usize) {
        self.kept.retain(|&k| k != index);
        self.kept.push_back(index);
        while self.kept.len() > KEEP_FINISHED {
            let Some(at) = self.kept.iter().position(|&k| k != self.shown) else { break };
            if let Some(dropped) = self.kept.remove(at)
                && let Some(slot) = self.trials.get_mut(dropped)
                && slot.record.is_some()
            {
                slot.pane = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EventBody;

    fn info() -> MatrixInfo {
        MatrixInfo {
            experiment: "m".into(),
            variants: vec!["a".into(), "b".into()],
            baseline: "a".into(),
            tasks: vec!["t".into()],
            repetitions: 4,
            trials: 8,
            checks: vec![],
        }
    }

    // From JSON, as the runner's files hold them, so a field added with a default does not
    // break these tests.
    fn spec(index: u32) -> TrialSpec {
        let variant = if index % 2 == 0 { "a" } else { "b" };
        let repetition = index / 2 + 1;
        serde_json::from_value(serde_json::json!({
            "index": index, "pair": index / 2, "key": format!("{variant}/t/{repetition}"), "variant": variant,
            "task_id": "t", "repetition": repetition, "seed": 1, "folder": format!("trials/{variant}--t--r{repetition}"),
        }))
        .unwrap()
    }

    fn record(spec: &TrialSpec, pass: bool) -> TrialRecord {
        serde_json::from_value(serde_json::json!({
            "index": spec.index, "key": spec.key, "variant": spec.variant, "task_id": spec.task_id,
            "repetition": spec.repetition, "seed": spec.seed, "status": "completed", "pass": pass,
            "score": if pass { 1.0 } else { 0.0 }, "checks": [], "input_tokens": 100, "output_tokens": 10,
            "cost": null, "wall_ms": 1_000, "subtasks": 0, "depth": 0, "tool_errors": 0, "limit_hits": 0,
            "turns": 1, "answer": null, "error": null, "folder": spec.folder,
        }))
        .unwrap()
    }

    fn started(matrix: &mut MatrixPane, index: u32) {
        let trial = spec(index);
        let dir = PathBuf::from("/m").join(&trial.folder);
        matrix.apply(MatrixUpdate::TrialStarted { trial, dir }, 0);
    }

    #[test]
    fn the_newest_trial_is_shown_until_the_user_steps_back() {
        let mut matrix = MatrixPane::new("m".into(), info(), None);
        started(&mut matrix, 0);
        started(&mut matrix, 1);
        assert_eq!(matrix.shown, 1);
        assert_eq!(matrix.step(-1), None);
        assert_eq!((matrix.shown, matrix.follow), (0, false));
        started(&mut matrix, 2);
        assert_eq!(matrix.shown, 0, "stepping back stops following");
        matrix.step(5);
        assert_eq!((matrix.shown, matrix.follow), (2, true), "the newest follows again");
        started(&mut matrix, 3);
        assert_eq!(matrix.shown, 3);
    }

    #[test]
    fn the_summary_follows_finished_trials() {
        let mut matrix = MatrixPane::new("m".into(), info(), None);
        assert_eq!(matrix.summary.variants.len(), 2, "every variant from the start");
        for (index, pass) in [(0, true), (1, false), (2, true)] {
            started(&mut matrix, index);
            matrix.apply(MatrixUpdate::TrialFinished { record: record(&spec(index), pass) }, 0);
        }
        let a = &matrix.summary.variants[0];
        assert_eq!((a.trials, a.passed), (2, 2));
        assert_eq!(matrix.summary.variants[1].passed, 0);
        assert_eq!(matrix.running(), 0);
    }

    #[test]
    fn old_finished_trials_are_dropped_and_read_back_on_demand() {
        let mut matrix = MatrixPane::new("m".into(), info(), None);
        for index in 0..8 {
            started(&mut matrix, index);
            let event = Event {
                seq: 0,
                ts: 1,
                body: EventBody::RunStarted {
                    run_id: format!("r{index}"),
                    experiment: "m".into(),
                    root_agent: "x".into(),
                    task: "t".into(),
                    prices: Default::default(),
                    format: crate::protocol::EVENTS_FORMAT,
                    troupe_version: None,
                },
            };
            matrix.apply(MatrixUpdate::Event { key: spec(index).key, event }, 0);
            matrix.apply(MatrixUpdate::TrialFinished { record: record(&spec(index), true) }, 0);
        }
        let kept: Vec<usize> = (0..8).filter(|&i| matrix.trials[i].pane.is_some()).collect();
        assert_eq!(kept, vec![4, 5, 6, 7], "the shown one and the last finished");
        let load = matrix.step(-7);
        assert_eq!(load, Some(("a/t/1".to_owned(), PathBuf::from("/m/trials/a--t--r1"))));
        assert!(matrix.trials[0].loading);
        assert_eq!(matrix.step(0), None, "asked once");
        matrix.loaded("a/t/1", Ok(vec![]));
        assert!(matrix.shown_pane().is_some());
        let kept = (0..8).filter(|&i| matrix.trials[i].pane.is_some()).count();
        assert_eq!(kept, KEEP_FINISHED);
    }

    #[test]
    fn a_recorded_matrix_shows_its_records_and_reads_each_trial_back_when_shown() {
        let matrix = MatrixFile {
            format: crate::experiment::store::FORMAT,
            run_id: "20261125-130000-m-0001".into(),
            experiment_file: "experiments/m.toml".into(),
            info: info(),
            shard: None,
            trials: (0..8).map(spec).collect(),
            troupe_version: "0.1.0".into(),
        };
        // Killed after three trials.
        let records: Vec<TrialRecord> =
            [(0, true), (1, false), (2, true)].map(|(i, pass)| record(&spec(i), pass)).into();
        let mut pane = MatrixPane::recorded(PathBuf::from("/m"), matrix.clone(), records, 5);
        assert_eq!(pane.end, Some(MatrixEnd { complete: false, cancelled: false }));
        assert_eq!((pane.trials.len(), pane.running(), pane.stopped()), (3, 0, 0));
        assert!(pane.trials.iter().all(|slot| slot.pane.is_none() && slot.record.is_some()));
        assert_eq!(pane.trials.iter().map(TrialSlot::verdict).collect::<Vec<_>>(), ["pass", "FAIL", "pass"]);
        let a = &pane.summary.variants[0];
        assert_eq!((a.trials, a.passed), (2, 2));
        assert!(pane.progress.line(5, 0).starts_with("⠋ 3/8 trials · 2 passed (67 %)"), "{}", pane.progress.line(5, 0));

        let first = pane.step(0);
        assert_eq!(first, Some(("a/t/1".to_owned(), PathBuf::from("/m/trials/a--t--r1"))));
        assert!(pane.awaits("a/t/1", Path::new("/m/trials/a--t--r1")));
        assert!(!pane.awaits("a/t/1", Path::new("/other/trials/a--t--r1")), "another matrix's trial");
        assert!(!pane.awaits("b/t/1", Path::new("/m/trials/b--t--r1")), "not asked for");
        pane.loaded("a/t/1", Ok(vec![]));
        assert!(pane.shown_pane().is_some());
        assert!(!pane.awaits("a/t/1", Path::new("/m/trials/a--t--r1")));
        assert_eq!(pane.step(1), Some(("b/t/1".to_owned(), PathBuf::from("/m/trials/b--t--r1"))));

        let all: Vec<TrialRecord> = (0..8).map(|i| record(&spec(i), true)).collect();
        let pane = MatrixPane::recorded(PathBuf::from("/m"), matrix, all, 5);
        assert_eq!(pane.end, Some(MatrixEnd { complete: true, cancelled: false }));
    }
}
