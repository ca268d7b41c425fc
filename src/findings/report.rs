//! `report.md`: the run at a glance. Outcome, usage, timings, counts, limit hits, and the task
//! tree as a table.
//!
//! Invariant: pure over `&[Event]`, and correct on any prefix of a run: without `run_finished`
//! the run is reported as unfinished, with totals "so far", never as a success.

use std::fmt::Write as _;

use super::view::{RunView, cell, format_duration, quoted};
use crate::protocol::{Event, EventBody, TaskKind, format_millis};

pub fn render_report(events: &[Event]) -> String {
    let view = RunView::new(events);
    let mut out = String::new();

    match &view.info {
        Some(info) => {
            let _ = writeln!(out, "# Report of run {}\n", info.run_id);
            let _ = writeln!(out, "- Experiment: {}", info.experiment);
            let _ = writeln!(out, "- Root agent: {}", info.root_agent);
            let _ = writeln!(out, "- Task: {}", cell(info.task, 200));
            let _ = writeln!(out, "- Started: {}", format_millis(info.ts));
        }
        None => out.push_str("# Report\n\n- The log has no `run_started` event.\n"),
    }
    if let Some(last) = view.last_ts {
        let label = if view.end.is_some() { "Finished" } else { "Log ends" };
        let _ = writeln!(out, "- {label}: {}", format_millis(last));
    }

    out.push_str("\n## Outcome\n\n");
    match &view.end {
        Some(end) => {
            let _ = writeln!(out, "**{}**\n", end.status.as_str());
            if let Some(result) = end.result {
                out.push_str("Result:\n\n");
                out.push_str(&quoted(result));
                out.push('\n');
            }
            if let Some(error) = end.error {
                out.push_str("Error:\n\n");
                out.push_str(&quoted(error));
                out.push('\n');
            }
        }
        None => out.push_str("**unfinished** (the log ends before run_finished)\n\n"),
    }

    let usage = view.usage();
    let so_far = if view.end.is_some() { "" } else { " (so far)" };
    let _ = writeln!(out, "## Usage{so_far}\n");
    out.push_str("| | |\n|---|---:|\n");
    let _ = writeln!(out, "| input tokens | {} |", usage.input_tokens);
    let _ = writeln!(out, "| output tokens | {} |", usage.output_tokens);
    let _ = writeln!(out, "| total tokens | {} |", usage.total_tokens());
    let _ = writeln!(out, "| model calls | {} |", usage.model_calls);
    // Cost comes from the prices run_started carried, per task by its model alias.
    let prices = view.info.as_ref().map(|info| info.prices).filter(|p| !p.is_empty());
    let task_cost =
        |task: &super::view::TaskView<'_>| prices.and_then(|p| p.get(task.model)).map(|p| p.cost(&task.usage));
    if prices.is_some() {
        let total: f64 = view.tasks.iter().filter_map(task_cost).sum();
        let _ = writeln!(out, "| cost | ${total:.4} |");
    }

    let _ = writeln!(out, "\n## Timings\n");
    match (&view.end, view.first_ts, view.last_ts) {
        (Some(end), _, _) => {
            let _ = writeln!(out, "- Elapsed: {}", format_duration(end.elapsed_ms));
        }
        (None, Some(first), Some(last)) => {
            let _ = writeln!(
                out,
                "- Elapsed: at least {} (first to last event)",
                format_duration(last.saturating_sub(first))
            );
        }
        (None, _, _) => out.push_str("- Elapsed: unknown (no events)\n"),
    }
    let slowest =
        view.tasks.iter().filter_map(|t| Some((t, t.finished?.checked_sub(t.created?)?))).max_by_key(|&(_, d)| d);
    if let Some((task, ms)) = slowest {
        let _ = writeln!(out, "- Longest task: {} ({}), {}", task.uri, task.agent, format_duration(ms));
    }

    out.push_str("\n## Tasks by status\n\n");
    let counts = view.counts();
    if counts.is_empty() {
        out.push_str("No tasks.\n");
    } else {
        out.push_str("| status | tasks |\n|---|---:|\n");
        for (status, n) in &counts {
            let _ = writeln!(out, "| {status} | {n} |");
        }
        let _ = writeln!(out, "| total | {} |", view.tasks.len());
    }
    if let Some(end) = &view.end {
        // The runtime's own count, in case the log is missing task events.
        if end.tasks.total() != view.tasks.len() as u64 {
            let _ = writeln!(
                out,
                "\n_`run_finished` counts {} tasks but the log shows {}._",
                end.tasks.total(),
                view.tasks.len()
            );
        }
    }

    out.push_str("\n## Limit hits\n\n");
    if view.limit_hits.is_empty() {
        out.push_str("None.\n");
    }
    for hit in &view.limit_hits {
        if let EventBody::LimitHit { uri, limit, value, message } = &hit.body {
            let agent = view.task(*uri).map_or("?", |t| t.agent);
            let _ = writeln!(out, "- {uri} ({agent}): `{limit}` = {value}: {}", cell(message, 300));
        }
    }

    // Which lessons each agent was given: what a comparison of memory on and off must see.
    let recalled: Vec<(&super::view::TaskView<'_>, &Event)> = view
        .tasks
        .iter()
        .flat_map(|task| task.events.iter().map(move |e| (task, *e)))
        .filter(|(_, e)| matches!(e.body, EventBody::MemoryRecalled { .. }))
        .collect();
    if !recalled.is_empty() {
        out.push_str("\n## Lessons recalled from memory\n\n");
        for (task, event) in recalled {
            if let EventBody::MemoryRecalled { uri, lessons, error } = &event.body {
                if let Some(error) = error {
                    let _ = writeln!(out, "- {uri} ({}): not recalled: {}", task.agent, cell(error, 300));
                }
                for lesson in lessons {
                    let _ = writeln!(
                        out,
                        "- {uri} ({}): #{} ({:.2}) {}",
                        task.agent,
                        lesson.id,
                        lesson.score,
                        cell(&lesson.text, 200)
                    );
                }
            }
        }
    }

    out.push_str("\n## Task tree\n\n");
    if view.tasks.is_empty() {
        out.push_str("No tasks.\n");
        return out;
    }
    // The cost column appears only when some model has a price.
    if prices.is_some() {
        out.push_str("| task | kind | agent | model | status | tokens (in / out) | cost | duration |\n");
        out.push_str("|---|---|---|---|---|---:|---:|---:|\n");
    } else {
        out.push_str("| task | kind | agent | model | status | tokens (in / out) | duration |\n");
        out.push_str("|---|---|---|---|---|---:|---:|\n");
    }
    let end_of_log = view.last_ts;
    for (depth, task) in view.depth_first() {
        // Em spaces: table cells trim ASCII spaces, and the tree needs its indent.
        let indent = if depth == 0 { String::new() } else { format!("{}↳ ", "\u{2003}".repeat(depth)) };
        let kind = match task.kind {
            Some(TaskKind::Agent) => "agent",
            Some(TaskKind::Slm) => "slm",
            Some(TaskKind::Mcp) => "mcp",
            None => "?",
        };
        let status = if task.status.is_terminal() {
            task.status.as_str().to_owned()
        } else {
            format!("{} (unfinished)", task.status.as_str())
        };
        let duration = match (task.created, task.finished, end_of_log) {
            (Some(c), Some(f), _) => format_duration(f.saturating_sub(c)),
            (Some(c), None, Some(last)) => format!("≥ {}", format_duration(last.saturating_sub(c))),
            _ => "?".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {indent}{} | {kind} | {} | {} | {status} | {} / {} |{} {duration} |",
            task.uri,
            cell(task.agent, 40),
            cell(task.model, 40),
            task.usage.input_tokens,
            task.usage.output_tokens,
            match (prices, task_cost(task)) {
                (None, _) => String::new(),
                (Some(_), Some(cost)) => format!(" ${cost:.4} |"),
                (Some(_), None) => " — |".to_owned(),
            },
        );
    }
    out
}
