//! What a matrix run records per trial (`trials.jsonl`, one [`TrialRecord`] per line) and the
//! description of the matrix the records belong to ([`MatrixInfo`], kept in `matrix.json`).
//!
//! Invariant: these are the only inputs of the summary, the report and the charts, so a report
//! can be written again (after `--resume`, or by `troupe merge`) from the folder alone.

use serde::{Deserialize, Serialize};

use super::meter::Measured;
use crate::protocol::RunStatus;

/// The metrics every trial has, by the names `trials.jsonl`, `summary.json` and the report use.
/// `pass` is summarized apart (a rate with a Wilson interval, McNemar for pairs).
pub const METRICS: [Metric; 9] = [
    Metric::Score,
    Metric::Tokens,
    Metric::Cost,
    Metric::WallSeconds,
    Metric::Subtasks,
    Metric::Depth,
    Metric::ToolErrors,
    Metric::LimitHits,
    Metric::Turns,
];

/// A continuous (or count) metric of a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Score,
    Tokens,
    Cost,
    WallSeconds,
    Subtasks,
    Depth,
    ToolErrors,
    LimitHits,
    Turns,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Score => "score",
            Metric::Tokens => "tokens",
            Metric::Cost => "cost",
            Metric::WallSeconds => "wall_seconds",
            Metric::Subtasks => "subtasks",
            Metric::Depth => "depth",
            Metric::ToolErrors => "tool_errors",
            Metric::LimitHits => "limit_hits",
            Metric::Turns => "turns",
        }
    }

    /// Whether a smaller value is better (for the words of a comparison).
    pub fn lower_is_better(self) -> bool {
        !matches!(self, Metric::Score)
    }
}

/// One trial's line in `trials.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial's position in the whole matrix (0-based), the same on every shard.
    pub index: u32,
    /// `<variant>/<task id>/<repetition>`: unique in the matrix.
    pub key: String,
    pub variant: String,
    pub task_id: String,
    /// 1-based.
    pub repetition: u32,
    /// The sampling seed, derived from (experiment, task, repetition): the same for every
    /// variant, so the variants' trials pair up.
    pub seed: u64,
    /// How the run ended: `completed`, `failed` or `cancelled`; `error` when it could not start.
    pub status: String,
    /// Every check passed (with no checks: the run completed).
    pub pass: bool,
    /// The fraction of checks passed, 0 to 1 (with no checks: 1 if it completed, else 0).
    pub score: f64,
    pub checks: Vec<CheckOutcome>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Dollars, when the models it used have prices.
    pub cost: Option<f64>,
    pub wall_ms: u64,
    /// Subtasks created, the root not counted.
    pub subtasks: u64,
    /// The deepest subtask's depth (the root is 0).
    pub depth: u32,
    /// Tool results that were errors.
    pub tool_errors: u64,
    pub limit_hits: u64,
    /// Model calls of every agent of the run.
    pub turns: u64,
    /// The root agent's answer.
    pub answer: Option<String>,
    pub error: Option<String>,
    /// The trial's run folder, relative to the matrix folder (`trials/<…>`; `.` for a run of one
    /// trial).
    pub folder: String,
}

impl TrialRecord {
    /// A trial's record before its run says anything: `error` with nothing measured, so a
    /// run that cannot start is recorded as such.
    pub fn unscored(
        index: u32,
        key: String,
        variant: String,
        task_id: String,
        repetition: u32,
        seed: u64,
        folder: String,
    ) -> TrialRecord {
        TrialRecord {
            index,
            key,
            variant,
            task_id,
            repetition,
            seed,
            status: "error".to_owned(),
            pass: false,
            score: 0.0,
            checks: Vec::new(),
            input_tokens: 0,
            output_tokens: 0,
            cost: None,
            wall_ms: 0,
            subtasks: 0,
            depth: 0,
            tool_errors: 0,
            limit_hits: 0,
            turns: 0,
            answer: None,
            error: None,
            folder,
        }
    }

    /// Pass and score of a run without checks: whether it did what it was for.
    pub fn score_by_completion(&mut self, completed: bool) {
        self.pass = completed;
        self.score = if completed { 1.0 } else { 0.0 };
    }

    /// Takes how the run ended and what it measured (not its checks, pass or score).
    pub fn apply(&mut self, measured: &Measured) {
        self.status = measured.status.map_or("failed", RunStatus::as_str).to_owned();
        self.input_tokens = measured.usage.input_tokens;
        self.output_tokens = measured.usage.output_tokens;
        self.cost = measured.cost;
        self.wall_ms = measured.wall_ms;
        self.subtasks = measured.subtasks;
        self.depth = measured.depth;
        self.tool_errors = measured.tool_errors;
        self.limit_hits = measured.limit_hits;
        self.turns = measured.turns;
        self.error = self.error.take().or_else(|| measured.error.clone());
        self.answer.clone_from(&measured.answer);
    }

    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// The value of `metric`; `None` only for a cost no price gave.
    pub fn metric(&self, metric: Metric) -> Option<f64> {
        Some(match metric {
            Metric::Score => self.score,
            Metric::Tokens => self.tokens() as f64,
            Metric::Cost => return self.cost,
            Metric::WallSeconds => self.wall_ms as f64 / 1000.0,
            Metric::Subtasks => self.subtasks as f64,
            Metric::Depth => f64::from(self.depth),
            Metric::ToolErrors => self.tool_errors as f64,
            Metric::LimitHits => self.limit_hits as f64,
            Metric::Turns => self.turns as f64,
        })
    }
}

/// How one check went on one trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub name: String,
    /// `contains`, `regex`, … (`CheckKind::as_str`).
    pub kind: String,
    pub pass: bool,
    /// Why, in a line a person reads: what was expected and what was found, the judge's
    /// verdict and reasoning, an exec's exit status and the end of its output.
    pub detail: String,
}

/// The matrix a set of records belongs to: what the summary needs besides the records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatrixInfo {
    pub experiment: String,
    /// Variant names in the experiment's order.
    pub variants: Vec<String>,
    pub baseline: String,
    /// Task ids in the experiment's order.
    pub tasks: Vec<String>,
    pub repetitions: u32,
    /// Trials in the whole matrix (every shard).
    pub trials: u32,
    /// Names of the checks, in order.
    pub checks: Vec<String>,
}
