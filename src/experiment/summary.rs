//! A matrix run's records boiled down to the figures a person reads (`summary.json`): per
//! variant, the pass rate with its Wilson interval, each metric's mean with a bootstrap interval,
//! and per-check counts; per non-baseline variant, paired comparisons with the baseline (exact
//! McNemar on pass/fail, sign-flip permutation and Wilcoxon signed-rank on each metric), each with
//! a plain sentence; and a per-task pass matrix.
//!
//! It owns the arrangement and the words, not the math (that is [`super::stats`]), and it is
//! pure: no I/O, no clock.
//!
//! Invariant: deterministic. The same records in any order give an identical [`Summary`]: the
//! records are put in matrix order first, and every resampling seed is a stable hash of names
//! (FNV-1a, not `std`'s randomly keyed hasher), so re-summarizing a folder reproduces
//! `summary.json` byte for byte. Nothing in it is NaN (absent values are `None`), so it
//! round-trips through JSON and compares equal.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::record::{METRICS, MatrixInfo, Metric, TrialRecord};
use super::stats;

/// The confidence of every interval in the summary.
pub const CONFIDENCE: f64 = 0.95;
/// Bootstrap resamples per mean: enough that the 2.5 % and 97.5 % quantiles move by well under
/// the printed precision between seeds.
pub const BOOTSTRAP_RESAMPLES: usize = 2_000;
/// Random sign assignments when a permutation test has too many pairs to enumerate.
pub const PERMUTATION_RESAMPLES: usize = 10_000;

/// Everything `summary.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub experiment: String,
    pub baseline: String,
    /// Trials in the whole matrix (`MatrixInfo::trials`).
    pub trials_planned: u32,
    /// Distinct trials among the records (a key recorded twice counts once).
    pub trials_recorded: u64,
    pub repetitions: u32,
    /// Tasks in the matrix (`MatrixInfo::tasks`).
    pub tasks: u32,
    /// One per variant, in the experiment's order; variants with no records are present with
    /// `trials == 0`.
    pub variants: Vec<VariantSummary>,
    /// One per variant other than the baseline, in the experiment's order.
    pub comparisons: Vec<Comparison>,
    /// One row per task, in the experiment's order.
    pub per_task: Vec<TaskRow>,
}

/// A two-sided interval (a serializable copy of [`stats::Interval`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub low: f64,
    pub high: f64,
}

impl From<stats::Interval> for Bounds {
    fn from(interval: stats::Interval) -> Self {
        Self { low: tidy(interval.low), high: tidy(interval.high) }
    }
}

/// One variant's own figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    pub variant: String,
    pub trials: u64,
    pub passed: u64,
    /// `passed / trials`; `None` without trials.
    pub pass_rate: Option<f64>,
    /// The Wilson 95 % interval of the pass rate; `None` without trials.
    pub pass_interval: Option<Bounds>,
    /// In [`METRICS`] order; a metric no trial has (cost without prices) is left out.
    pub metrics: Vec<MetricSummary>,
    /// Every check's passes: the matrix's checks in order, then any others the records name.
    pub checks: Vec<CheckCount>,
}

impl VariantSummary {
    pub fn metric(&self, metric: Metric) -> Option<&MetricSummary> {
        self.metrics.iter().find(|m| m.metric == metric)
    }
}

/// One metric of one variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub metric: Metric,
    /// Trials that have a value (every trial, except cost).
    pub n: u64,
    pub mean: f64,
    /// Percentile-bootstrap 95 % interval of the mean.
    pub interval: Option<Bounds>,
    pub min: f64,
    pub max: f64,
}

/// How often one check passed on one variant's trials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckCount {
    pub name: String,
    pub passed: u64,
    /// Trials that ran the check.
    pub of: u64,
}

/// One variant against the baseline on paired trials: the same task and repetition, hence the
/// same seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub variant: String,
    pub baseline: String,
    /// Pairs: (task, repetition) recorded for both.
    pub paired: u64,
    pub pass: PassComparison,
    /// In [`METRICS`] order; a metric with no pair (cost without prices) is left out.
    pub metrics: Vec<MetricComparison>,
}

impl Comparison {
    pub fn metric(&self, metric: Metric) -> Option<&MetricComparison> {
        self.metrics.iter().find(|m| m.metric == metric)
    }
}

/// The exact McNemar test on the pairs' pass/fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassComparison {
    /// Pairs where the variant passed and the baseline failed.
    pub only_variant: u64,
    /// Pairs where the baseline passed and the variant failed.
    pub only_baseline: u64,
    pub p_value: f64,
    /// [`stats::describe_mcnemar`]'s sentence.
    pub sentence: String,
}

/// One metric's paired differences, `variant - baseline`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    pub metric: Metric,
    /// Pairs where both trials have the metric.
    pub pairs: u64,
    /// Pairs whose two values differ: with none, there is nothing to report.
    pub differing: u64,
    pub mean_difference: f64,
    /// The sign-flip permutation test's two-sided p-value.
    pub permutation_p: f64,
    /// `None` when every difference is zero.
    pub wilcoxon: Option<Wilcoxon>,
    /// E.g. "`experts` used 1,240 more tokens per trial than `inherit` (mean of 20 paired
    /// differences; permutation test, p = 0.003)".
    pub sentence: String,
}

/// The Wilcoxon signed-rank test (a serializable subset of [`stats::SignedRank`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wilcoxon {
    /// W+, the rank sum of the positive differences.
    pub w: f64,
    /// Non-zero differences ranked.
    pub n: u64,
    pub p_value: f64,
    pub exact: bool,
    /// Matched-pairs rank-biserial correlation, in [-1, 1].
    pub rank_biserial: f64,
}

/// One task's pass counts, one cell per variant in the summary's variant order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    pub task_id: String,
    pub cells: Vec<TaskCell>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCell {
    pub variant: String,
    pub passed: u64,
    pub trials: u64,
}

/// Summarizes `records` (any order, any subset of the matrix) as `summary.json` holds it.
pub fn summarize(info: &MatrixInfo, records: &[TrialRecord]) -> Summary {
    let records = canonical(records);
    let variants = ordered_names(&info.variants, records.iter().map(|r| r.variant.as_str()));
    let tasks = ordered_names(&info.tasks, records.iter().map(|r| r.task_id.as_str()));

    let variant_summaries = variants
        .iter()
        .map(|variant| {
            let own: Vec<&TrialRecord> = records.iter().copied().filter(|r| &r.variant == variant).collect();
            summarize_variant(info, variant, &own)
        })
        .collect();

    let comparisons = variants
        .iter()
        .filter(|variant| **variant != info.baseline)
        .map(|variant| compare(info, variant, &records))
        .collect();

    let per_task = tasks
        .iter()
        .map(|task| TaskRow {
            task_id: task.clone(),
            cells: variants
                .iter()
                .map(|variant| {
                    let (passed, trials) = records
                        .iter()
                        .filter(|r| &r.variant == variant && &r.task_id == task)
                        .fold((0, 0), |(passed, trials), r| (passed + u64::from(r.pass), trials + 1));
                    TaskCell { variant: variant.clone(), passed, trials }
                })
                .collect(),
        })
        .collect();

    Summary {
        experiment: info.experiment.clone(),
        baseline: info.baseline.clone(),
        trials_planned: info.trials,
        trials_recorded: records.len() as u64,
        repetitions: info.repetitions,
        tasks: u32::try_from(info.tasks.len()).unwrap_or(u32::MAX),
        variants: variant_summaries,
        comparisons,
        per_task,
    }
}

/// The records in matrix order, one per key.
///
/// Sorting by `(index, key)` makes the input order irrelevant; the last tie-break (the record
/// as JSON) only matters when a key was recorded twice, as when overlapping shards are merged,
/// and picks the same survivor whatever order they arrived in. Counting such a trial twice would
/// weigh it double and report more trials than the matrix has.
fn canonical(records: &[TrialRecord]) -> Vec<&TrialRecord> {
    let mut sorted: Vec<(&TrialRecord, String)> =
        records.iter().map(|r| (r, serde_json::to_string(r).unwrap_or_default())).collect();
    sorted.sort_by(|(a, a_json), (b, b_json)| (a.index, &a.key, a_json).cmp(&(b.index, &b.key, b_json)));
    let mut seen = BTreeSet::new();
    sorted.into_iter().filter(|(r, _)| seen.insert(r.key.as_str())).map(|(r, _)| r).collect()
}

/// The matrix's names in its order, then any others the records mention (sorted), so a record
/// that does not match `matrix.json` still shows rather than vanishing from the figures.
fn ordered_names<'a>(declared: &[String], found: impl Iterator<Item = &'a str>) -> Vec<String> {
    let extra: BTreeSet<&str> = found.filter(|name| !declared.iter().any(|d| d == name)).collect();
    let mut names: Vec<String> = Vec::new();
    for name in declared {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names.extend(extra.into_iter().map(str::to_string));
    names
}

fn summarize_variant(info: &MatrixInfo, variant: &str, records: &[&TrialRecord]) -> VariantSummary {
    let trials = records.len() as u64;
    let passed = records.iter().filter(|r| r.pass).count() as u64;
    let pass_rate = (trials > 0).then(|| tidy(passed as f64 / trials as f64));
    let pass_interval = stats::wilson(passed, trials, CONFIDENCE).map(Bounds::from);

    let metrics = METRICS
        .iter()
        .filter_map(|&metric| {
            // Non-finite values (a corrupt cost) would make every figure NaN; leave them out.
            let values: Vec<f64> = records.iter().filter_map(|r| r.metric(metric)).filter(|v| v.is_finite()).collect();
            let first = *values.first()?;
            let n = values.len() as u64;
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let (min, max) = values.iter().fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let seed = seed(&[&info.experiment, variant, metric.as_str(), "bootstrap"]);
            let interval = stats::bootstrap_mean(&values, BOOTSTRAP_RESAMPLES, CONFIDENCE, seed).map(Bounds::from);
            Some(MetricSummary { metric, n, mean: tidy(mean), interval, min: tidy(min), max: tidy(max) })
        })
        .collect();

    let check_names =
        ordered_names(&info.checks, records.iter().flat_map(|r| r.checks.iter().map(|c| c.name.as_str())));
    let checks = check_names
        .into_iter()
        .map(|name| {
            let (passed, of) = records
                .iter()
                .filter_map(|r| r.checks.iter().find(|c| c.name == name))
                .fold((0, 0), |(passed, of), c| (passed + u64::from(c.pass), of + 1));
            CheckCount { name, passed, of }
        })
        .collect();

    VariantSummary { variant: variant.to_string(), trials, passed, pass_rate, pass_interval, metrics, checks }
}

fn compare(info: &MatrixInfo, variant: &str, records: &[&TrialRecord]) -> Comparison {
    let by_trial = |name: &str| -> BTreeMap<(&str, u32), &TrialRecord> {
        records.iter().filter(|r| r.variant == name).map(|r| ((r.task_id.as_str(), r.repetition), *r)).collect()
    };
    let ours = by_trial(variant);
    let theirs = by_trial(&info.baseline);
    // BTreeMap order: pairs in (task, repetition) order, so the resampling sees the same sequence.
    let pairs: Vec<(&TrialRecord, &TrialRecord)> =
        ours.iter().filter_map(|(key, v)| theirs.get(key).map(|b| (*v, *b))).collect();
    let paired = pairs.len() as u64;

    let outcomes: Vec<(bool, bool)> = pairs.iter().map(|(v, b)| (v.pass, b.pass)).collect();
    let mcnemar = stats::mcnemar_exact(&outcomes);
    let pass = PassComparison {
        only_variant: mcnemar.only_variant,
        only_baseline: mcnemar.only_baseline,
        p_value: tidy(mcnemar.p_value),
        sentence: stats::describe_mcnemar(variant, &info.baseline, &mcnemar, paired),
    };

    let metrics = METRICS
        .iter()
        .filter_map(|&metric| {
            let diffs: Vec<f64> = pairs
                .iter()
                .filter_map(|(v, b)| Some(v.metric(metric)? - b.metric(metric)?))
                .filter(|d| d.is_finite())
                .collect();
            if diffs.is_empty() {
                return None;
            }
            let seed = seed(&[&info.experiment, variant, metric.as_str(), "permutation"]);
            let permutation = stats::paired_permutation(&diffs, PERMUTATION_RESAMPLES, seed);
            let rounded: Vec<f64> = diffs.iter().map(|&d| round_for_ties(d)).collect();
            let wilcoxon = stats::wilcoxon_signed_rank(&rounded).map(|w| Wilcoxon {
                w: tidy(w.w),
                n: w.n,
                p_value: tidy(w.p_value),
                exact: w.exact,
                rank_biserial: tidy(w.rank_biserial),
            });
            let differing = rounded.iter().filter(|d| **d != 0.0).count() as u64;
            let sentence = describe_difference(
                variant,
                &info.baseline,
                metric,
                permutation.mean_difference,
                diffs.len(),
                permutation.p_value,
            );
            Some(MetricComparison {
                metric,
                pairs: diffs.len() as u64,
                differing,
                mean_difference: tidy(permutation.mean_difference),
                permutation_p: tidy(permutation.p_value),
                wilcoxon,
                sentence,
            })
        })
        .collect();

    Comparison { variant: variant.to_string(), baseline: info.baseline.clone(), paired, pass, metrics }
}

/// `x` rounded to 12 significant digits (and to 22 decimals at most), applied to every number
/// the summary stores.
///
/// Why: `serde_json` without its `float_roundtrip` feature parses a 17-digit number to within a
/// unit in the last place, not exactly, so `summary.json` read back would not equal the summary
/// written. A decimal of at most 15 digits whose power of ten is within 10^±22 parses exactly
/// (one correctly rounded division or multiplication of exact operands), and so does its
/// shortest form, which is what is written. Twelve digits is far beyond anything the report
/// prints; what is lost is only noise below 5e-23 (a p-value that small prints as `p < 0.001`).
fn tidy(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let decimals = (12 - x.abs().log10().ceil() as i32).min(22);
    if decimals >= 0 {
        let scale = 10_f64.powi(decimals);
        (x * scale).round() / scale
    } else {
        let scale = 10_f64.powi(-decimals);
        (x / scale).round() * scale
    }
}

/// `d` rounded to 9 decimals, so differences that are equal in decimal (0.3 - 0.1 against 0.2)
/// tie in the signed-rank test, as its documentation asks. Values here are counts, seconds with
/// millisecond resolution, fractions of checks and dollars: 9 decimals lose nothing real.
fn round_for_ties(d: f64) -> f64 {
    if d.abs() < 1e6 { (d * 1e9).round() / 1e9 } else { d }
}

/// A resampling seed from names: FNV-1a 64 over the parts, each followed by a 0 byte so that
/// ("ab", "c") and ("a", "bc") differ. FNV because it is fixed by its definition, unlike
/// `std`'s hasher, whose keys are random per process and whose algorithm may change.
fn seed(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for &byte in part.as_bytes().iter().chain(&[0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// A metric's mean paired difference in one sentence, e.g. "`experts` used 1,240 more tokens
/// per trial than `inherit` (mean of 20 paired differences; permutation test, p = 0.003)".
pub fn describe_difference(
    variant: &str,
    baseline: &str,
    metric: Metric,
    mean_difference: f64,
    pairs: usize,
    p_value: f64,
) -> String {
    let plural = if pairs == 1 { "" } else { "s" };
    let basis = format!("mean of {pairs} paired difference{plural}; permutation test, {}", stats::format_p(p_value));
    let amount = mean_difference.abs();
    let shown = format_metric(metric, amount);
    // A difference that rounds to nothing in print reads as "the same", not "0 more".
    if mean_difference == 0.0 || shown == format_metric(metric, 0.0) {
        let noun = match metric {
            Metric::Score => "score",
            Metric::Tokens => "tokens",
            Metric::Cost => "cost",
            Metric::WallSeconds => "wall time",
            Metric::Subtasks => "subtasks",
            Metric::Depth => "subtask depth",
            Metric::ToolErrors => "tool errors",
            Metric::LimitHits => "limit hits",
            Metric::Turns => "model calls",
        };
        return format!("`{variant}` and `{baseline}` had the same {noun} per trial on average ({basis})");
    }
    let more = mean_difference > 0.0;
    let pick = |up: &'static str, down: &'static str| if more { up } else { down };
    let phrase = match metric {
        Metric::Score => format!("scored {shown} {} per trial", pick("higher", "lower")),
        Metric::Tokens => format!("used {shown} {} tokens per trial", pick("more", "fewer")),
        Metric::Cost => format!("cost {shown} {} per trial", pick("more", "less")),
        Metric::WallSeconds => format!("took {shown} {} per trial", pick("longer", "less")),
        Metric::Subtasks => format!("created {shown} {} subtasks per trial", pick("more", "fewer")),
        Metric::Depth => {
            let levels = if shown == "1" { "level" } else { "levels" };
            format!("nested subtasks {shown} {levels} {} per trial", pick("deeper", "shallower"))
        }
        Metric::ToolErrors => format!("had {shown} {} tool errors per trial", pick("more", "fewer")),
        Metric::LimitHits => format!("hit limits {shown} {} times per trial", pick("more", "fewer")),
        Metric::Turns => format!("made {shown} {} model calls per trial", pick("more", "fewer")),
    };
    format!("`{variant}` {phrase} than `{baseline}` ({basis})")
}

/// A metric's value as the report prints it: dollars with `$`, seconds with `s`, the rest bare.
pub fn format_metric(metric: Metric, value: f64) -> String {
    match metric {
        Metric::Cost => {
            let sign = if value < 0.0 { "-" } else { "" };
            format!("{sign}${}", format_number(value.abs()))
        }
        Metric::WallSeconds => format!("{} s", format_number(value)),
        _ => format_number(value),
    }
}

/// A number for people: thousands separators and no decimals from 100 up, then one, two or
/// three significant decimals as the magnitude shrinks (trailing zeros dropped); `n/a` for NaN
/// or infinity.
pub fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_string();
    }
    let magnitude = value.abs();
    let decimals = if magnitude >= 100.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else if magnitude == 0.0 {
        0
    } else {
        // Three significant digits below 1 (0.123, 0.0123), at most six decimals.
        let leading_zeros = (-magnitude.log10()).floor().max(0.0) as usize;
        (leading_zeros + 3).min(6)
    };
    let text = format!("{value:.decimals$}");
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = fraction.trim_end_matches('0');
    let whole = group_thousands(whole);
    // "-0" after rounding is just 0.
    let sign = if whole == "0" && fraction.is_empty() { "" } else { sign };
    if fraction.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{fraction}") }
}

/// `1234567` → `1,234,567`.
fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A fraction as a whole percentage ("70 %"), one decimal when it would otherwise read as 0 or
/// 100 while not being exactly that.
pub fn format_percent(fraction: f64) -> String {
    if !fraction.is_finite() {
        return "n/a".to_string();
    }
    let percent = fraction * 100.0;
    let whole = percent.round();
    if (whole == 0.0 && percent > 0.0) || (whole == 100.0 && percent < 100.0) {
        format!("{percent:.1} %")
    } else {
        format!("{whole:.0} %")
    }
}

/// Hand-built records and matrices for this module's tests and the report's and charts'.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::experiment::record::{CheckOutcome, MatrixInfo, TrialRecord};

    /// A record of `variant` on `task`, repetition `rep`, with the given pass and tokens.
    pub(crate) fn record(index: u32, variant: &str, task: &str, rep: u32, pass: bool, tokens: u64) -> TrialRecord {
        TrialRecord {
            index,
            key: format!("{variant}/{task}/{rep}"),
            variant: variant.to_string(),
            task_id: task.to_string(),
            repetition: rep,
            seed: u64::from(rep) * 1000 + task.len() as u64,
            status: "completed".to_string(),
            pass,
            score: if pass { 1.0 } else { 0.5 },
            checks: vec![
                CheckOutcome { name: "has-answer".into(), kind: "contains".into(), pass: true, detail: "found".into() },
                CheckOutcome {
                    name: "exact".into(),
                    kind: "equals".into(),
                    pass,
                    detail: if pass { "equal".into() } else { "expected 42, found 41".into() },
                },
            ],
            input_tokens: tokens / 2,
            output_tokens: tokens - tokens / 2,
            cost: None,
            wall_ms: 1_000 + tokens,
            subtasks: 0,
            depth: 0,
            tool_errors: 0,
            limit_hits: 0,
            turns: 2,
            answer: Some("42".into()),
            error: None,
            folder: format!("trials/{variant}/{task}/{rep}"),
        }
    }

    pub(crate) fn info(variants: &[&str], tasks: &[&str], repetitions: u32) -> MatrixInfo {
        MatrixInfo {
            experiment: "demo".into(),
            variants: variants.iter().map(|s| s.to_string()).collect(),
            baseline: variants[0].to_string(),
            tasks: tasks.iter().map(|s| s.to_string()).collect(),
            repetitions,
            trials: (variants.len() * tasks.len()) as u32 * repetitions,
            checks: vec!["has-answer".into(), "exact".into()],
        }
    }
}

#[cfg(test)]
mod tests;
