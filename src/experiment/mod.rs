//! Experiments as science: matrices of trials (tasks × variants × repetitions), each trial
//! scored by checks, each variant compared with a baseline on paired trials.
//!
//! - [`record`]: what a trial records (`trials.jsonl`) and what a matrix is (`matrix.json`).
//! - [`migrate`]: every `matrix.json` format ever written, read by this troupe.
//! - [`checks`]: scoring an answer: `contains`, `regex`, `equals`, `number`, `json_schema`,
//!   `exec`, `judge`.
//! - [`stats`]: Wilson, bootstrap, McNemar, permutation and signed-rank tests.
//! - [`summary`]: records → per-variant figures and paired comparisons (`summary.json`).
//! - [`report`]: the summary as `report.md`; [`charts`]: the same as SVG.
//! - [`reflect`]: after a run, the `reflector` expert's lessons from it (`reflect = true`).
//! - [`update`]: what a view hears while a matrix runs.
//! - [`learn`]: what memory learns when any run ends: use counts, the episode, reflection.

pub mod charts;
pub mod checks;
pub mod fork;
pub mod learn;
pub mod meter;
pub mod migrate;
pub mod plan;
pub mod record;
pub mod reflect;
pub mod report;
pub mod runner;
pub mod stats;
pub mod store;
pub mod summary;
pub mod update;
