//! Drawing the Run screen: the run's header, its task tree (only the visible rows) and the
//! selected task's transcript (only the visible lines); for a matrix, its progress, the
//! per-variant comparison and the shown trial.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Bar, BarChart, Block, Paragraph, Wrap};

use crate::experiment::record::Metric;
use crate::protocol::{Millis, TaskKind, TaskStatus};
use crate::tui::layout::Areas;
use crate::tui::matrix::MatrixPane;
use crate::tui::run_pane::RunPane;
use crate::tui::screens::run::RunScreen;
use crate::tui::transcript::LineKind;

use super::widgets::{dollars, duration, status_mark, tokens, usage_text};

/// The Run screen: the run or matrix shown, at `now`.
pub fn draw(frame: &mut Frame, run: &RunScreen, now: Millis, areas: &Areas) {
    if let Some(matrix) = run.shown_matrix() {
        draw_matrix(frame, run, matrix, now, areas);
        return;
    }
    let Some(pane) = run.shown_run() else {
        let text = Text::from(vec![
            Line::from("No run yet."),
            Line::from(""),
            Line::from("Pick an experiment on the Experiments screen (3) and press Enter,"),
            Line::from("or start troupe with `troupe watch <experiment>`."),
        ]);
        frame.render_widget(
            Paragraph::new(text).block(Block::bordered().title(" Run ")),
            areas.list.union(areas.detail),
        );
        return;
    };
    let view = &pane.view;
    let now = if view.is_finished() || run.past_run().is_some() { view.last_ts().unwrap_or(now) } else { now };
    // Header: the run's totals.
    let counts = view.counts();
    let mut header = vec![];
    match run.past_run() {
        // Another process is still writing it (a `troupe mcp serve` session, say).
        Some(past) if past.tail.is_some() => {
            header.push(Span::styled("following ", Style::new().fg(Color::Magenta).bold()));
        }
        Some(_) => header.push(Span::styled("past run ", Style::new().fg(Color::Magenta).bold())),
        None => {}
    }
    if let Some(info) = &view.info {
        header.push(Span::styled(info.experiment.clone(), Style::new().bold()));
        header.push(Span::raw(" · "));
    }
    header.push(match &view.end {
        Some(end) => Span::styled(end.status.as_str().to_owned(), run_status_style(end.status.as_str())),
        None => Span::styled("working", Style::new().fg(Color::Cyan)),
    });
    // Most telling first, so a narrow terminal cuts the least useful part.
    header.push(Span::raw(format!(
        " {} · tasks {} working {} done {} failed {} cancelled · tokens {} · cost {}",
        duration(view.elapsed_ms(now)),
        counts.working,
        counts.completed,
        counts.failed,
        counts.cancelled,
        usage_text(&view.usage()),
        view.cost().map_or_else(|| "n/a".to_owned(), dollars),
    )));
    frame.render_widget(Line::from(header), areas.header);
    draw_tree(frame, pane, now, areas.list, format!(" tasks ({}) ", view.nodes().len()));
    draw_transcript(frame, pane, areas.detail);
}

/// A matrix: its progress in the header, the per-variant comparison in the panel, and the
/// shown trial's tree and transcript below.
fn draw_matrix(frame: &mut Frame, run: &RunScreen, matrix: &MatrixPane, now: Millis, areas: &Areas) {
    // Opened from Findings: ended before this session, whatever runs now.
    let past = run.past_matrix().is_some();
    let mut header = vec![];
    if past {
        header.push(Span::styled("past ", Style::new().fg(Color::Magenta).bold()));
    }
    match &matrix.fork {
        Some(fork) => header.push(Span::styled(
            format!("fork of {} {} ", fork.agent, fork.uri),
            Style::new().fg(Color::Magenta).bold(),
        )),
        None => header.push(Span::styled("matrix ", Style::new().fg(Color::Cyan).bold())),
    }
    header.push(Span::styled(matrix.experiment.clone(), Style::new().bold()));
    header.push(Span::raw(" · "));
    let line = matrix.progress.line(now, (now / 100) as usize);
    let working = run.running && !past && matrix.end.is_none() && matrix.error.is_none();
    if working {
        header.push(Span::styled(line, Style::new().fg(Color::Cyan)));
        if let Some(concurrency) = matrix.concurrency {
            header.push(Span::raw(format!(" · {concurrency} at a time")));
        }
    } else {
        // Ended: no spinner, and no time left to estimate.
        let (status, style) = match (matrix.end, &matrix.error) {
            (_, Some(_)) => ("failed", run_status_style("failed")),
            (Some(end), None) if end.cancelled => ("cancelled", run_status_style("cancelled")),
            (Some(end), None) if end.complete => ("completed", run_status_style("completed")),
            // Its folder cannot tell killed from cancelled: the word the Findings list uses.
            (Some(_), None) if past => ("unfinished", run_status_style("unfinished")),
            _ => ("ended", run_status_style("ended")),
        };
        // The progress line without its spinner, what is running and the time left.
        let counts = line.split_once(' ').map_or(line.as_str(), |(_, rest)| rest);
        let mut counts: Vec<&str> =
            counts.split(" · ").filter(|part| !part.ends_with(" running") && !part.starts_with("ETA ")).collect();
        let stopped = matrix.stopped();
        let stopped = format!("{stopped} stopped, not recorded");
        if matrix.stopped() > 0 {
            counts.push(&stopped);
        }
        header.push(Span::styled(status, style));
        header.push(Span::raw(format!(" {}", counts.join(" · "))));
    }
    frame.render_widget(Line::from(header), areas.header);
    draw_comparison(frame, matrix, areas.panel);

    let Some(slot) = matrix.shown_slot() else {
        let text = if working { "No trial has started yet: readying the models…" } else { "No trial ran." };
        frame.render_widget(Paragraph::new(text).block(Block::bordered().title(" trials ")), areas.list);
        frame.render_widget(Block::bordered().title(" transcript "), areas.detail);
        return;
    };
    let title = format!(" trial {}/{} {} {} ", matrix.shown + 1, matrix.trials.len(), slot.spec.key, slot.verdict());
    let placeholder = match &slot.pane {
        None if slot.loading => Some(format!("reading {}/events.jsonl…", slot.dir.display())),
        None => Some(format!(
            "{} (its run is in {})",
            slot.load_error.as_deref().unwrap_or("not in memory"),
            slot.dir.display()
        )),
        Some(pane) if pane.view.nodes().is_empty() => Some(match &slot.record {
            Some(record) => format!("it did not run: {}", record.error.as_deref().unwrap_or(&record.status)),
            None => "starting…".to_owned(),
        }),
        Some(_) => None,
    };
    match (&slot.pane, placeholder) {
        (Some(pane), None) => {
            let view = &pane.view;
            let now = if view.is_finished() || !run.running || past { view.last_ts().unwrap_or(now) } else { now };
            draw_tree(frame, pane, now, areas.list, format!("{title}· tasks ({}) ", view.nodes().len()));
            draw_transcript(frame, pane, areas.detail);
        }
        (_, placeholder) => {
            let text = placeholder.unwrap_or_default();
            frame.render_widget(
                Paragraph::new(text).wrap(Wrap { trim: false }).block(Block::bordered().title(title)),
                areas.list,
            );
            frame.render_widget(Block::bordered().title(" transcript "), areas.detail);
        }
    }
}

/// Per variant: passed of trials, pass rate with its Wilson 95 % interval and mean tokens as a
/// table, and the pass rates as a bar chart beside it.
fn draw_comparison(frame: &mut Frame, matrix: &MatrixPane, area: Rect) {
    if area.height == 0 {
        return;
    }
    let variants = &matrix.summary.variants;
    let name_width = variants.iter().map(|v| v.variant.chars().count()).max().unwrap_or(0).clamp(7, 24);
    // (heading, width, right-aligned) after the name, each after two spaces.
    const COLUMNS: [(&str, usize, bool); 4] =
        [("passed", 7, true), ("rate", 5, true), ("95 % CI", 10, false), ("mean tokens", 11, true)];
    let full = name_width + COLUMNS.iter().map(|(_, width, _)| width + 2).sum::<usize>();
    // The table as wide as its columns, leaving the chart room for its bars; a column that does
    // not fit is left out whole rather than cut (a cut number reads as another number).
    let table_width = (full as u16 + 2).min(area.width.saturating_sub(24));
    let inner = table_width.saturating_sub(2) as usize;
    let mut shown = 0;
    let mut used = name_width;
    for (_, width, _) in COLUMNS {
        if used + width + 2 > inner {
            break;
        }
        used += width + 2;
        shown += 1;
    }
    let row = |cells: [String; 4]| -> String {
        let mut out = String::new();
        for ((_, width, right), cell) in COLUMNS.iter().zip(cells).take(shown) {
            if *right {
                out.push_str(&format!("  {cell:>width$}"));
            } else {
                out.push_str(&format!("  {cell:<width$}"));
            }
        }
        out
    };
    let headings = COLUMNS.map(|(heading, ..)| heading.to_owned());
    let mut lines = vec![Line::styled(format!("{:<name_width$}{}", "variant", row(headings)), Style::new().dim())];
    for variant in variants {
        let rate = variant.pass_rate.map_or_else(|| "–".to_owned(), |r| format!("{:.0} %", r * 100.0));
        let interval = variant
            .pass_interval
            .map_or_else(|| "–".to_owned(), |b| format!("{:.0}–{:.0} %", b.low * 100.0, b.high * 100.0));
        let mean = variant.metric(Metric::Tokens).map_or_else(|| "–".to_owned(), |m| tokens(m.mean.round() as u64));
        let name: String = variant.variant.chars().take(name_width).collect();
        let passed = format!("{}/{}", variant.passed, variant.trials);
        lines.push(Line::from(vec![
            Span::styled(format!("{name:<name_width$}"), Style::new().bold()),
            Span::raw(row([passed, rate, interval, mean])),
        ]));
    }
    let [table, chart] = Layout::horizontal([Constraint::Length(table_width), Constraint::Min(10)]).areas::<2>(area);
    let title = format!(" variants · baseline {} ", matrix.summary.baseline);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), table);
    let bars: Vec<Bar> = variants
        .iter()
        .map(|variant| {
            let percent = variant.pass_rate.map_or(0, |r| (r * 100.0).round() as u64);
            // ASCII: the chart measures a value's text in bytes.
            let text = if variant.trials == 0 { "no trials yet".to_owned() } else { format!("{percent} %") };
            Bar::with_label(Line::from(variant.variant.clone()), percent).text_value(text)
        })
        .collect();
    let chart_widget = BarChart::horizontal(bars)
        .block(Block::bordered().title(" pass rate "))
        .max(100)
        .bar_width(1)
        .bar_gap(0)
        .bar_style(Style::new().fg(Color::Green))
        .value_style(Style::new().fg(Color::Black).bg(Color::Green).bold());
    frame.render_widget(chart_widget, chart);
}

fn run_status_style(status: &str) -> Style {
    match status {
        "completed" => Style::new().fg(Color::Green).bold(),
        "failed" => Style::new().fg(Color::Red).bold(),
        _ => Style::new().fg(Color::DarkGray).bold(),
    }
}

fn draw_tree(frame: &mut Frame, pane: &RunPane, now: Millis, area: Rect, title: String) {
    let view = &pane.view;
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height as usize;
    let selected = pane.selected;
    let rows = view.rows();
    let end = (pane.tree_top + height).min(rows.len());
    let buf = frame.buffer_mut();
    for (y, row) in rows[pane.tree_top.min(end)..end].iter().enumerate() {
        let node = &view.nodes()[row.node];
        let fold = match (node.children.is_empty(), node.expanded) {
            (true, _) => " ",
            (false, true) => "▾",
            (false, false) => "▸",
        };
        let kind = match node.kind {
            TaskKind::Agent => "agent",
            TaskKind::Slm => "slm",
            TaskKind::Mcp => "mcp",
        };
        let branch = if node.children.is_empty() {
            tokens(node.usage.total_tokens())
        } else {
            format!("{}/{}", tokens(node.usage.total_tokens()), tokens(node.branch_usage.total_tokens()))
        };
        let cost = node.branch_cost.map(|c| format!("{} ", dollars(c))).unwrap_or_default();
        let spans = vec![
            Span::raw("  ".repeat(row.depth as usize)),
            Span::raw(fold),
            status_mark(node.status, now),
            Span::raw(" "),
            Span::styled(node.agent.clone(), Style::new().bold()),
            Span::styled(format!(" {kind} {} ", node.model), Style::new().dim()),
            Span::raw(format!("{} ", duration(node.elapsed_ms(now)))),
            Span::styled(format!("{branch}t "), Style::new().fg(Color::Blue)),
            Span::styled(cost, Style::new().fg(Color::Yellow)),
            Span::styled(node.doing(), doing_style(node.status)),
        ];
        let line_area = Rect::new(inner.x, inner.y + y as u16, inner.width, 1);
        let mut line = Line::from(spans);
        if Some(node.uri) == selected {
            line = line.patch_style(Style::new().bg(Color::DarkGray));
            buf.set_style(line_area, Style::new().bg(Color::DarkGray));
        }
        ratatui::widgets::Widget::render(line, line_area, buf);
    }
}

fn doing_style(status: TaskStatus) -> Style {
    match status {
        TaskStatus::Failed => Style::new().fg(Color::Red),
        TaskStatus::Working | TaskStatus::InputRequired => Style::new().fg(Color::Cyan),
        TaskStatus::Completed | TaskStatus::Cancelled => Style::new().dim(),
    }
}

fn draw_transcript(frame: &mut Frame, pane: &RunPane, area: Rect) {
    let node = pane.selected.and_then(|uri| pane.view.node(uri));
    let title = match node {
        Some(node) => format!(" {} · {} · {} ", node.agent, node.uri, node.status.as_str()),
        None => " transcript ".to_owned(),
    };
    let follow = if pane.follow { " following " } else { " scrolled · f to follow " };
    let block = Block::bordered().title(title).title_bottom(Line::from(follow).right_aligned());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height as usize;
    let first = pane.transcript_first(height);
    let lines: Vec<Line> =
        pane.visible_lines(first, height).map(|line| Line::styled(line.text.clone(), line_style(line.kind))).collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn line_style(kind: LineKind) -> Style {
    match kind {
        LineKind::Label => Style::new().dim().add_modifier(Modifier::ITALIC),
        LineKind::System => Style::new().fg(Color::DarkGray),
        LineKind::User => Style::new().fg(Color::White),
        LineKind::Assistant => Style::new().fg(Color::Green),
        LineKind::Streaming => Style::new().fg(Color::LightGreen),
        LineKind::ToolCall => Style::new().fg(Color::Yellow),
        LineKind::ToolResult => Style::new().fg(Color::Blue),
        LineKind::ToolError | LineKind::Error => Style::new().fg(Color::Red),
        LineKind::Note => Style::new().fg(Color::Magenta),
    }
}
