//! A matrix run's `report.md`: the [`Summary`] and the records as Markdown a person reads top to
//! bottom: what was run and what is missing, a headline table, the comparisons with the
//! baseline in sentences, per-variant, per-task and per-check tables, and every trial with a
//! link to its folder.
//!
//! It owns the layout and the formatting for people (thousands separators, a few significant
//! decimals, percentages); the figures and sentences come from [`super::summary`]. Pure: no
//! I/O, no clock, so the same folder always renders the same report.

use std::fmt::Write as _;

use super::record::{METRICS, MatrixInfo, Metric, TrialRecord};
use super::summary::{Bounds, Comparison, Summary, VariantSummary, format_metric, format_number, format_percent};

/// How much of a failing check's detail the trials table shows: a table row, not a log.
const DETAIL_CHARS: usize = 80;

/// `report.md` for a matrix: `summary` must be `summarize(info, records)`.
pub fn render_report(info: &MatrixInfo, summary: &Summary, records: &[TrialRecord]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Experiment {}\n", code(&summary.experiment));
    overview(&mut out, info, summary);
    headline(&mut out, summary);
    comparisons(&mut out, summary);
    per_variant(&mut out, summary);
    per_task(&mut out, summary);
    per_check(&mut out, summary);
    trials(&mut out, records);
    out
}

fn overview(out: &mut String, info: &MatrixInfo, summary: &Summary) {
    let recorded = summary.trials_recorded;
    let planned = u64::from(summary.trials_planned);
    let _ = write!(
        out,
        "{recorded} of {planned} trials recorded ({} × {} × {}); baseline {}.",
        plural(info.variants.len() as u64, "variant", "variants"),
        plural(info.tasks.len() as u64, "task", "tasks"),
        plural(u64::from(info.repetitions), "repetition", "repetitions"),
        code(&summary.baseline),
    );
    if recorded < planned {
        let missing = planned - recorded;
        let _ = write!(
            out,
            " {} missing (a shard of the matrix, or a run that stopped before the end): the figures \
             below cover the recorded trials only; resume the run to record the rest.",
            if missing == 1 { "1 trial is".to_string() } else { format!("{missing} trials are") },
        );
    }
    out.push_str("\n\n");
}

fn headline(out: &mut String, summary: &Summary) {
    let with_cost = summary.variants.iter().any(|v| v.metric(Metric::Cost).is_some());
    let mut columns: Vec<(&str, Metric)> = vec![("Score", Metric::Score), ("Tokens (95 % CI)", Metric::Tokens)];
    if with_cost {
        columns.push(("Cost", Metric::Cost));
    }
    columns.extend([
        ("Wall time", Metric::WallSeconds),
        ("Subtasks", Metric::Subtasks),
        ("Tool errors", Metric::ToolErrors),
        ("Limit hits", Metric::LimitHits),
    ]);

    out.push_str("## Results\n\nMeans per trial.\n\n| Variant | Pass rate |");
    for (title, _) in &columns {
        let _ = write!(out, " {title} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(columns.len()));
    out.push('\n');
    for variant in &summary.variants {
        let _ = write!(out, "| {} | {} |", variant_label(variant, &summary.baseline), pass_rate(variant));
        for (_, metric) in &columns {
            let cell = match variant.metric(*metric) {
                None => "—".to_string(),
                Some(m) if *metric == Metric::Tokens => {
                    format!("{}{}", format_metric(*metric, m.mean), interval_suffix(*metric, m.interval))
                }
                Some(m) => format_metric(*metric, m.mean),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out.push_str("\n![Pass rate by variant](charts/pass_rate.svg)\n\n![Tokens by variant](charts/tokens.svg)\n\n");
}

/// "14/20 (70 %, 95 % CI 48–85 %)".
fn pass_rate(variant: &VariantSummary) -> String {
    match (variant.pass_rate, variant.pass_interval) {
        (Some(rate), Some(interval)) => format!(
            "{}/{} ({}, 95 % CI {}–{})",
            variant.passed,
            variant.trials,
            format_percent(rate),
            format_percent(interval.low).trim_end_matches(" %"),
            format_percent(interval.high),
        ),
        (Some(rate), None) => format!("{}/{} ({})", variant.passed, variant.trials, format_percent(rate)),
        _ => "0/0".to_string(),
    }
}

/// " (1,020–1,480)", or nothing without an interval.
fn interval_suffix(metric: Metric, interval: Option<Bounds>) -> String {
    interval.map(|i| format!(" ({})", range(metric, i))).unwrap_or_default()
}

/// "1,018–1,032", "2.02–2.03 s", "$0.01–$0.02".
fn range(metric: Metric, interval: Bounds) -> String {
    match metric {
        // The unit once, after both numbers.
        Metric::WallSeconds => format!("{}–{} s", format_number(interval.low), format_number(interval.high)),
        _ => format!("{}–{}", format_metric(metric, interval.low), format_metric(metric, interval.high)),
    }
}

fn comparisons(out: &mut String, summary: &Summary) {
    out.push_str("## Compared with the baseline\n\n");
    if summary.variants.len() < 2 {
        out.push_str("One variant: nothing to compare.\n\n");
        return;
    }
    let _ = writeln!(
        out,
        "On paired trials (the same task and repetition, so the same seed), each variant minus {}. \
         Metrics that were equal on every pair are left out.\n",
        code(&summary.baseline)
    );
    for comparison in &summary.comparisons {
        comparison_section(out, comparison);
    }
}

fn comparison_section(out: &mut String, comparison: &Comparison) {
    let _ = writeln!(out, "**{}**: {}.\n", code(&comparison.variant), capitalize(&comparison.pass.sentence));
    if comparison.paired == 0 {
        return;
    }
    let differing: Vec<_> = comparison.metrics.iter().filter(|m| m.differing > 0).collect();
    if differing.is_empty() {
        out.push_str("- No metric differed on any pair.\n\n");
        return;
    }
    for metric in differing {
        let _ = write!(out, "- {}.", capitalize(&metric.sentence));
        if let Some(w) = &metric.wilcoxon {
            let _ = write!(
                out,
                " Wilcoxon signed-rank test: {}, rank-biserial correlation {:.2}.",
                super::stats::format_p(w.p_value),
                w.rank_biserial,
            );
        }
        out.push('\n');
    }
    out.push('\n');
}

fn per_variant(out: &mut String, summary: &Summary) {
    out.push_str("## Per variant\n\n");
    for variant in &summary.variants {
        let _ = writeln!(out, "### {}\n", variant_label(variant, &summary.baseline));
        if variant.trials == 0 {
            out.push_str("No trials recorded.\n\n");
            continue;
        }
        let _ = writeln!(out, "{} passed.\n", pass_rate(variant));
        out.push_str("| Metric | n | Mean | 95 % CI | Min | Max |\n|---|---:|---:|---:|---:|---:|\n");
        for metric in METRICS {
            let Some(m) = variant.metric(metric) else { continue };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                metric_label(metric),
                m.n,
                format_metric(metric, m.mean),
                m.interval.map(|i| range(metric, i)).unwrap_or_else(|| "—".to_string()),
                format_metric(metric, m.min),
                format_metric(metric, m.max),
            );
        }
        out.push('\n');
    }
}

fn per_task(out: &mut String, summary: &Summary) {
    out.push_str("## Per task\n\nTrials passed of trials recorded.\n\n| Task |");
    for variant in &summary.variants {
        let _ = write!(out, " {} |", code(&variant.variant));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(summary.variants.len()));
    out.push('\n');
    for row in &summary.per_task {
        let _ = write!(out, "| {} |", code(&row.task_id));
        for cell in &row.cells {
            let text = if cell.trials == 0 { "—".to_string() } else { format!("{}/{}", cell.passed, cell.trials) };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn per_check(out: &mut String, summary: &Summary) {
    out.push_str("## Per check\n\n");
    // The check names in first-seen order over the variants (each variant lists the matrix's
    // checks first, so this is the matrix's order).
    let mut names: Vec<&str> = Vec::new();
    for variant in &summary.variants {
        for check in &variant.checks {
            if !names.contains(&check.name.as_str()) {
                names.push(&check.name);
            }
        }
    }
    if names.is_empty() {
        out.push_str("No checks: a trial passes when its run completes.\n\n");
        return;
    }
    out.push_str("Trials whose check passed, of trials that ran it.\n\n| Check |");
    for variant in &summary.variants {
        let _ = write!(out, " {} |", code(&variant.variant));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(summary.variants.len()));
    out.push('\n');
    for name in names {
        let _ = write!(out, "| {} |", code(name));
        for variant in &summary.variants {
            let text = match variant.checks.iter().find(|c| c.name == name) {
                Some(c) if c.of > 0 => format!("{}/{}", c.passed, c.of),
                _ => "—".to_string(),
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn trials(out: &mut String, records: &[TrialRecord]) {
    out.push_str("## Trials\n\n");
    if records.is_empty() {
        out.push_str("No trials recorded.\n");
        return;
    }
    let mut sorted: Vec<&TrialRecord> = records.iter().collect();
    sorted.sort_by(|a, b| (a.index, &a.key).cmp(&(b.index, &b.key)));
    out.push_str(
        "| # | Variant | Task | Rep | Pass | Score | Tokens | Wall | Run | First failure |\n\
         |---:|---|---|---:|---|---:|---:|---:|---|---|\n",
    );
    for r in sorted {
        let pass = match (r.pass, r.status.as_str()) {
            (true, _) => "pass".to_string(),
            (false, "completed") => "fail".to_string(),
            (false, status) => format!("fail ({})", cell(status)),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | [trial]({}) | {} |",
            r.index,
            code(&r.variant),
            code(&r.task_id),
            r.repetition,
            pass,
            format_number(r.score),
            format_number(r.tokens() as f64),
            format_metric(Metric::WallSeconds, r.wall_ms as f64 / 1000.0),
            transcript_link(&r.folder),
            cell(&truncate(&first_failure(r), DETAIL_CHARS)),
        );
    }
}

/// The first failing check as "name: detail", else the run's error, else nothing.
fn first_failure(record: &TrialRecord) -> String {
    if let Some(check) = record.checks.iter().find(|c| !c.pass) {
        return format!("{}: {}", check.name, check.detail);
    }
    record.error.as_deref().map(|e| format!("error: {e}")).unwrap_or_default()
}

/// The trial's transcript relative to the report, percent-encoding what would break a Markdown
/// link or a table cell (spaces, parentheses, `|`).
fn transcript_link(folder: &str) -> String {
    let folder = folder.trim_end_matches('/');
    let path = if folder.is_empty() || folder == "." {
        "transcript.md".to_string()
    } else {
        format!("{folder}/transcript.md")
    };
    let mut encoded = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// `name` as inline code in a table cell: `|` escaped (GitHub applies the escape before code
/// spans), and a fence longer than any run of backticks in it.
fn code(name: &str) -> String {
    let name = name.replace('|', "\\|").replace(['\n', '\r'], " ");
    let longest = name.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    if longest > 0 { format!("{fence} {name} {fence}") } else { format!("{fence}{name}{fence}") }
}

/// Free text in a table cell: one line, `|` escaped, and no raw HTML (an answer or a check's
/// detail may contain `<tags>` a renderer would swallow).
fn cell(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\n', '\r', '\t'], " ")
}

/// At most `limit` characters, ending with `…` when cut.
fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    let kept: String = text.chars().take(limit.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

fn variant_label(variant: &VariantSummary, baseline: &str) -> String {
    if variant.variant == baseline { format!("{} (baseline)", code(&variant.variant)) } else { code(&variant.variant) }
}

fn metric_label(metric: Metric) -> &'static str {
    match metric {
        Metric::Score => "Score",
        Metric::Tokens => "Tokens",
        Metric::Cost => "Cost",
        Metric::WallSeconds => "Wall time",
        Metric::Subtasks => "Subtasks",
        Metric::Depth => "Depth",
        Metric::ToolErrors => "Tool errors",
        Metric::LimitHits => "Limit hits",
        Metric::Turns => "Turns",
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The sentence with its first letter in upper case (the summary's sentences start lower case
/// so that they can also sit mid-sentence).
fn capitalize(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::record::CheckOutcome;
    use crate::experiment::summary::fixtures::{info, record};
    use crate::experiment::summary::summarize;

    /// A fixed 3-variant matrix: 2 tasks × 4 repetitions, `experts` passing more and using more
    /// tokens than `inherit`, `solo` like `inherit` except for a tool error and one pipe in a
    /// check's detail.
    fn matrix() -> (MatrixInfo, Vec<TrialRecord>) {
        let info = info(&["inherit", "experts", "solo"], &["sum", "sort"], 4);
        let mut records = Vec::new();
        let mut index = 0;
        for variant in ["inherit", "experts", "solo"] {
            for task in ["sum", "sort"] {
                for rep in 1..=4_u32 {
                    let pass = match variant {
                        "inherit" => rep <= 2,
                        "experts" => rep <= 3 || task == "sum",
                        _ => rep <= 2,
                    };
                    let tokens = match variant {
                        "experts" => 2_000 + 137 * u64::from(rep),
                        _ => 1_000 + 10 * u64::from(rep),
                    };
                    let mut r = record(index, variant, task, rep, pass, tokens);
                    if variant == "experts" {
                        r.subtasks = 2 + u64::from(rep % 2);
                        r.depth = 1;
                    }
                    if variant == "solo" && task == "sort" && rep == 4 {
                        r.tool_errors = 1;
                        r.checks[1].detail = "expected `a | b`, found <nothing> after a very long search through \
                                              every corner of the output, which goes on and on"
                            .into();
                    }
                    records.push(r);
                    index += 1;
                }
            }
        }
        (info, records)
    }

    fn render(info: &MatrixInfo, records: &[TrialRecord]) -> String {
        render_report(info, &summarize(info, records), records)
    }

    #[test]
    fn report_of_a_three_variant_matrix() {
        let (info, records) = matrix();
        insta::assert_snapshot!(render(&info, &records));
    }

    #[test]
    fn report_has_rows_sentences_and_links() {
        let (info, records) = matrix();
        let report = render(&info, &records);
        assert!(report.starts_with("# Experiment `demo`\n"));
        assert!(
            report.contains("24 of 24 trials recorded (3 variants × 2 tasks × 4 repetitions); baseline `inherit`.")
        );
        assert!(!report.contains("missing"));
        // Headline rows: 4/8 for the baseline, 7/8 for experts.
        assert!(report.contains("| `inherit` (baseline) | 4/8 (50 %, 95 % CI 22–78 %) |"), "{report}");
        assert!(report.contains("| `experts` | 7/8 (88 %, 95 % CI 53–98 %) |"), "{report}");
        // The McNemar sentence and a metric sentence for experts; solo's tokens do not differ.
        assert!(report.contains(
            "**`experts`**: Over 8 paired trials, `experts` passed 3 that `inherit` failed and `inherit` passed 0"
        ));
        assert!(
            report.contains("- `experts` used 1,318 more tokens per trial than `inherit` (mean of 8 paired"),
            "{report}"
        );
        assert!(report.contains("rank-biserial correlation 1.00"));
        assert!(
            report.contains("**`solo`**: Over 8 paired trials, `solo` and `inherit` passed and failed the same ones")
        );
        assert!(report.contains("- `solo` had 0.125 more tool errors per trial than `inherit`"), "{report}");
        assert!(!report.contains("`solo` and `inherit` had the same tokens"));
        // Links and escapes.
        assert!(report.contains("[trial](trials/experts/sort/3/transcript.md)"));
        assert!(report.contains("expected `a \\| b`, found &lt;nothing&gt;"));
        assert!(!report.contains("a | b"));
        assert!(report.contains("![Pass rate by variant](charts/pass_rate.svg)"));
        assert!(report.contains("![Tokens by variant](charts/tokens.svg)"));
        // The failing detail is cut to 80 characters.
        let line = report.lines().find(|l| l.contains("found &lt;nothing&gt;")).unwrap();
        let last = line.rsplit(" | ").next().unwrap();
        assert!(last.contains('…'), "{last}");
    }

    #[test]
    fn report_says_when_trials_are_missing() {
        let (info, records) = matrix();
        let report = render(&info, &records[..12]);
        assert!(report.contains("12 of 24 trials recorded"));
        assert!(report.contains("12 trials are missing"));
        // `solo` has no trials: still a row and a section.
        assert!(report.contains("| `solo` | 0/0 |"), "{report}");
        assert!(report.contains("### `solo`\n\nNo trials recorded."));
        assert!(report.contains("No paired trials of `solo` and `inherit` to compare"));
    }

    #[test]
    fn one_variant_has_nothing_to_compare() {
        let info = info(&["only"], &["t"], 2);
        let records = vec![record(0, "only", "t", 1, true, 10), record(1, "only", "t", 2, false, 20)];
        let report = render(&info, &records);
        assert!(report.contains("One variant: nothing to compare."));
        assert!(report.contains("2 of 2 trials recorded (1 variant × 1 task × 2 repetitions)"));
    }

    #[test]
    fn cells_are_escaped_and_links_encoded() {
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code("x`y"), "`` x`y ``");
        assert_eq!(cell("a | <b>\nc"), "a \\| &lt;b&gt; c");
        assert_eq!(transcript_link("."), "transcript.md");
        assert_eq!(transcript_link("trials/my variant/t (1)/2"), "trials/my%20variant/t%20%281%29/2/transcript.md");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        let mut r = record(0, "v", "t", 1, false, 10);
        r.checks.clear();
        r.error = Some("model | not found".into());
        assert_eq!(first_failure(&r), "error: model | not found");
        r.checks.push(CheckOutcome { name: "c".into(), kind: "regex".into(), pass: false, detail: "no match".into() });
        assert_eq!(first_failure(&r), "c: no match");
    }
}
