//! Drawing: every screen as a function of [`App`]. Only visible tree rows and transcript lines
//! are turned into widgets.
//!
//! Invariant: reads state only (no I/O, no clock, no sends); anything that depends on the
//! frame's size was settled by [`App::prepare_frame`] before the draw.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Bar, BarChart, Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap};

use crate::config::Severity;
use crate::experiment::record::Metric;
use crate::findings::PastOutcome;
use crate::memory::service::render::{one_line, scope_name, time};
use crate::memory::store::{Item, Scope};
use crate::protocol::{Millis, TaskKind, TaskStatus, Usage};

use super::app::{App, Focus, RunPane};
use super::highlight;
use super::layout::Areas;
use super::matrix::MatrixPane;
use super::memory::MemoryPane;
use super::messages::{Prompt, Screen};
use super::transcript::LineKind;

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

pub fn draw(frame: &mut Frame, app: &App) {
    let areas = app.areas(frame.area());
    draw_tabs(frame, app, areas.tabs);
    match app.screen {
        Screen::Run => draw_run(frame, app, &areas),
        Screen::Agents => draw_agents(frame, app, &areas),
        Screen::Experiments => draw_experiments(frame, app, &areas),
        Screen::Findings => draw_findings(frame, app, &areas),
        Screen::Memory => draw_memory(frame, app, &areas),
    }
    draw_message(frame, app, areas.message);
    draw_hints(frame, app, areas.hints);
    if app.help {
        draw_help(frame, frame.area());
    }
    if let Some(prompt) = &app.prompt {
        draw_prompt(frame, prompt, frame.area());
    }
}

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let mut spans = vec![Span::styled(" troupe ", Style::new().bold().reversed()), Span::raw(" ")];
    for (i, screen) in Screen::ALL.iter().enumerate() {
        let style =
            if *screen == app.screen { Style::new().bold().fg(Color::Yellow).underlined() } else { Style::new().dim() };
        spans.push(Span::styled(format!("{} {}", i + 1, screen.title()), style));
        spans.push(Span::raw("  "));
    }
    if app.running {
        let spin = SPINNER[(app.now / 100 % SPINNER.len() as u64) as usize];
        spans.push(Span::styled(format!("{spin} running"), Style::new().fg(Color::Cyan)));
    }
    frame.render_widget(Line::from(spans), area);
}

fn draw_hints(frame: &mut Frame, app: &App, area: Rect) {
    let hints = match (app.screen, app.editing()) {
        (Screen::Agents, true) => "Esc list · Ctrl-S save · Ctrl-Z undo · Ctrl-C quit",
        (Screen::Findings, true) => "Esc list (saves) · notes save by themselves · Ctrl-C quit",
        (Screen::Run, _) if app.past_matrix.is_some() && app.past.is_none() => {
            "? keys · < > trials · ↑↓ select · ←→ fold · w/e next working/failed · [ ] scroll · Esc back · r run"
        }
        (Screen::Run, _) if app.shown_matrix().is_some() => {
            "? keys · < > trials · ↑↓ select · ←→ fold · c cancel all · w/e next working/failed · [ ] scroll · f follow · r run"
        }
        (Screen::Run, _) => {
            // `? keys` first: a narrow terminal cuts the end of the line.
            "? keys · ↑↓ select · ←→ fold · c cancel · w/e next working/failed · [ ] scroll · f follow · r run"
        }
        (Screen::Agents, false) => {
            "? keys · ↑↓ select · Enter edit · n new · d duplicate · s save · Tab screens · q quit"
        }
        (Screen::Experiments, _) => "? keys · ↑↓ select · Enter run · Tab screens · q quit",
        (Screen::Findings, false) => "? keys · ↑↓ select · Enter open · e notes · R reload · Tab screens · q quit",
        (Screen::Memory, true) if app.memory.editor.is_some() => {
            "Ctrl-S save (embeds it again) · Esc cancel · Ctrl-C quit"
        }
        (Screen::Memory, true) => "type what to look for · Enter search · Esc back to the list · Ctrl-C quit",
        (Screen::Memory, false) if app.memory.shows_hits() => {
            "? keys · ↑↓ select · Enter open its run · e edit · d forget · / search again · Esc back to the list"
        }
        (Screen::Memory, false) => {
            "? keys · ↑↓ select · / search · Enter open its run · e edit · a add · d forget · R reload · q quit"
        }
    };
    frame.render_widget(Line::from(Span::styled(hints, Style::new().dim())), area);
}

fn draw_message(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.flash {
        Some((text, true)) => Line::from(Span::styled(text.clone(), Style::new().fg(Color::Red).bold())),
        Some((text, false)) => Line::from(Span::styled(text.clone(), Style::new().fg(Color::Green))),
        None => return,
    };
    frame.render_widget(line, area);
}

fn status_mark(status: TaskStatus, now: Millis) -> Span<'static> {
    match status {
        TaskStatus::Working => {
            Span::styled(SPINNER[(now / 100 % SPINNER.len() as u64) as usize], Style::new().fg(Color::Cyan))
        }
        TaskStatus::InputRequired => Span::styled("?", Style::new().fg(Color::Yellow)),
        TaskStatus::Completed => Span::styled("✓", Style::new().fg(Color::Green)),
        TaskStatus::Failed => Span::styled("✗", Style::new().fg(Color::Red).bold()),
        TaskStatus::Cancelled => Span::styled("⊘", Style::new().fg(Color::DarkGray)),
    }
}

pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        format!("{}.{}s", secs, (ms % 1000) / 100)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs / 60) % 60)
    }
}

pub fn tokens(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

pub fn dollars(cost: f64) -> String {
    if cost < 0.01 { format!("${cost:.4}") } else { format!("${cost:.2}") }
}

fn usage_text(usage: &Usage) -> String {
    format!("{} in / {} out", tokens(usage.input_tokens), tokens(usage.output_tokens))
}

fn draw_run(frame: &mut Frame, app: &App, areas: &Areas) {
    if let Some(matrix) = app.shown_matrix() {
        draw_matrix(frame, app, matrix, areas);
        return;
    }
    let Some(pane) = app.shown_run() else {
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
    let now = if view.is_finished() || app.past.is_some() { view.last_ts().unwrap_or(app.now) } else { app.now };
    // Header: the run's totals.
    let counts = view.counts();
    let mut header = vec![];
    match &app.past {
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
fn draw_matrix(frame: &mut Frame, app: &App, matrix: &MatrixPane, areas: &Areas) {
    // Opened from Findings: ended before this session, whatever runs now.
    let past = app.past_matrix.is_some();
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
    let line = matrix.progress.line(app.now, (app.now / 100) as usize);
    let working = app.running && !past && matrix.end.is_none() && matrix.error.is_none();
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
            let now =
                if view.is_finished() || !app.running || past { view.last_ts().unwrap_or(app.now) } else { app.now };
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

fn list_block(title: String, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused { block.border_style(Style::new().fg(Color::Yellow)) } else { block }
}

fn draw_agents(frame: &mut Frame, app: &App, areas: &Areas) {
    frame.render_widget(
        Line::from(format!("agents/ in {} · edits are checked as you type, like `troupe check`", app.root.display()))
            .dim(),
        areas.header,
    );
    let items: Vec<ListItem> = app
        .agents
        .iter()
        .map(|file| {
            let mark = match (file.is_dirty(), file.errors()) {
                (_, n) if n > 0 => Span::styled("✗ ", Style::new().fg(Color::Red)),
                (true, _) => Span::styled("● ", Style::new().fg(Color::Yellow)),
                (false, _) => Span::raw("  "),
            };
            ListItem::new(Line::from(vec![mark, Span::raw(file.name())]))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(app.agent_selected));
    let list = List::new(items)
        .block(list_block(format!(" experts ({}) ", app.agents.len()), app.agents_focus == Focus::List))
        .highlight_style(Style::new().bg(Color::DarkGray).bold())
        .highlight_symbol("▸ ");
    frame.render_stateful_widget(list, areas.list, &mut state);

    let Some(file) = app.agents.get(app.agent_selected) else {
        frame.render_widget(
            Paragraph::new("No experts yet. Press n to write one from the template.").block(Block::bordered()),
            areas.detail,
        );
        return;
    };
    let dirty = if file.is_dirty() { " · modified" } else { "" };
    let title = format!(" {}{dirty} ", file.path.strip_prefix(&app.root).unwrap_or(&file.path).display());
    let block = list_block(title, app.agents_focus == Focus::Editor);
    let inner = block.inner(areas.detail);
    frame.render_widget(block, areas.detail);
    frame.render_widget(&file.editor, inner);
    let error_lines: Vec<usize> = file.diagnostics.iter().map(|d| d.location.line as usize).collect();
    highlight::toml_over(frame.buffer_mut(), inner, &file.editor, &error_lines);

    let diag_lines: Vec<Line> = if file.validated < file.version {
        vec![Line::from("checking…").dim()]
    } else if file.diagnostics.is_empty() {
        vec![Line::styled("✓ valid", Style::new().fg(Color::Green))]
    } else {
        file.diagnostics
            .iter()
            .flat_map(|d| {
                let color = if d.severity == Severity::Error { Color::Red } else { Color::Yellow };
                let mut lines = vec![Line::from(vec![
                    Span::styled(format!("{}:{} ", d.location.line, d.location.col), Style::new().fg(color).bold()),
                    Span::raw(d.message.clone()),
                ])];
                if let Some(hint) = &d.hint {
                    lines.push(Line::styled(format!("  hint: {hint}"), Style::new().dim()));
                }
                lines
            })
            .collect()
    };
    frame.render_widget(
        Paragraph::new(diag_lines).wrap(Wrap { trim: false }).block(Block::bordered().title(" diagnostics ")),
        areas.footer_panel,
    );
}

fn draw_experiments(frame: &mut Frame, app: &App, areas: &Areas) {
    let problems = if app.workbench_problems.is_empty() {
        String::new()
    } else {
        format!(" · {} problems: run `troupe check`", app.workbench_problems.len())
    };
    frame.render_widget(Line::from(format!("experiments/ in {}{problems}", app.root.display())).dim(), areas.header);
    let items: Vec<ListItem> = app.experiments.iter().map(|e| ListItem::new(e.name.clone())).collect();
    let mut state = ListState::default().with_selected(Some(app.experiment_selected));
    let list = List::new(items)
        .block(list_block(format!(" experiments ({}) ", app.experiments.len()), true))
        .highlight_style(Style::new().bg(Color::DarkGray).bold())
        .highlight_symbol("▸ ");
    frame.render_stateful_widget(list, areas.list, &mut state);
    let detail = match app.experiments.get(app.experiment_selected) {
        Some(e) => Text::from(vec![
            Line::from(e.name.clone()).bold(),
            Line::from(e.description.clone()),
            Line::from(""),
            Line::from(vec![Span::raw("root agent: ").dim(), Span::raw(e.root.clone())]),
            Line::from(vec![Span::raw("file: ").dim(), Span::raw(e.path.display().to_string())]),
            Line::from(""),
            Line::from("Enter starts it; the Run screen opens.").fg(Color::Cyan),
        ]),
        None => Text::from("No experiments: add experiments/<name>.toml (see the README)."),
    };
    let mut lines = detail.lines;
    for problem in &app.workbench_problems {
        lines.push(Line::styled(problem.clone(), Style::new().fg(Color::Red)));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered()), areas.detail);
}

fn draw_findings(frame: &mut Frame, app: &App, areas: &Areas) {
    frame.render_widget(Line::from(format!("findings/ in {}", app.root.display())).dim(), areas.header);
    let items: Vec<ListItem> = app
        .findings
        .iter()
        .map(|run| {
            let (mark, color) = match run.outcome {
                PastOutcome::Completed => ("✓", Color::Green),
                PastOutcome::Failed => ("✗", Color::Red),
                PastOutcome::Cancelled => ("⊘", Color::DarkGray),
                PastOutcome::Unfinished => ("…", Color::Yellow),
                PastOutcome::Unreadable => ("!", Color::Red),
            };
            let date = run.started.map(crate::protocol::format_millis).unwrap_or_default();
            let date = date.get(..16).unwrap_or(&date).replace('T', " ");
            let mut spans = vec![
                Span::styled(format!("{mark} "), Style::new().fg(color)),
                Span::raw(format!("{date} ")),
                Span::styled(run.experiment.clone(), Style::new().bold()),
            ];
            match &run.matrix {
                // Trials recorded of planned in place of the outcome, in the matrix colour of
                // the Run screen's header, so a matrix stands out from the runs around it.
                Some(matrix) => {
                    let counts = if run.outcome == PastOutcome::Unreadable {
                        "unreadable".to_owned()
                    } else {
                        format!("{}/{} · {} passed", matrix.recorded, matrix.planned, matrix.passed)
                    };
                    spans.push(Span::styled(format!(" matrix {counts}"), Style::new().fg(Color::Cyan)));
                    spans.push(Span::styled(format!(" {}t", tokens(run.usage.total_tokens())), Style::new().dim()));
                }
                None => spans.push(Span::styled(
                    format!(
                        " {} {}t {}",
                        run.outcome.as_str(),
                        tokens(run.usage.total_tokens()),
                        run.elapsed_ms.map(duration).unwrap_or_default()
                    ),
                    Style::new().dim(),
                )),
            }
            if run.outcome == PastOutcome::Unreadable
                && let Some(problem) = &run.problem
            {
                spans.push(Span::styled(
                    format!(" · {}", problem_in_a_line(problem, &run.dir)),
                    Style::new().fg(Color::Red),
                ));
            }
            ListItem::new(Line::from(spans))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(app.finding_selected));
    let list = List::new(items)
        .block(list_block(format!(" runs ({}) ", app.findings.len()), app.findings_focus == Focus::List))
        .highlight_style(Style::new().bg(Color::DarkGray).bold())
        .highlight_symbol("▸ ");
    frame.render_stateful_widget(list, areas.list, &mut state);
    if app.findings.is_empty() {
        frame.render_widget(
            Paragraph::new("No runs yet: each run writes a folder here.").block(Block::bordered()),
            areas.detail,
        );
        return;
    }
    let title = match app.findings.get(app.finding_selected) {
        Some(run) if run.problem.is_some() => format!(" notes.md · {} ", run.problem.as_deref().unwrap_or_default()),
        Some(run) => format!(" {}/notes.md ", run.id),
        None => " notes ".to_owned(),
    };
    let block = list_block(title, app.findings_focus == Focus::Editor);
    let inner = block.inner(areas.detail);
    frame.render_widget(block, areas.detail);
    match &app.notes {
        Some(notes) if notes.loaded => frame.render_widget(&notes.editor, inner),
        _ => frame.render_widget(Paragraph::new("loading…").dim(), inner),
    }
}

/// Why a past run is unreadable, in one line: paths inside its folder are named from the folder
/// (`matrix.json: …`), since the row already says which run it is.
fn problem_in_a_line(problem: &str, dir: &std::path::Path) -> String {
    let prefix = format!("{}{}", dir.display(), std::path::MAIN_SEPARATOR);
    problem.replace(&prefix, "").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn draw_memory(frame: &mut Frame, app: &App, areas: &Areas) {
    let pane = &app.memory;
    frame.render_widget(memory_header(app), areas.header);
    draw_lessons(frame, pane, areas.list);
    let selected = pane.selected_item();
    match &pane.editor {
        Some(editor) => {
            let title = match editor.id {
                Some(id) => format!(" editing lesson #{id} "),
                None => " new lesson · yours, for every agent ".to_owned(),
            };
            let hint = if editor.saving { " saving… " } else { " Ctrl-S save · Esc cancel " };
            let block = list_block(title, true).title_bottom(Line::from(hint).right_aligned());
            let inner = block.inner(areas.detail);
            frame.render_widget(block, areas.detail);
            // Under the text, why the last save failed (at most half the pane).
            let error = editor.error.as_ref().map(|error| format!("not saved: {error}"));
            let error_height = error.as_ref().map_or(0, |error| {
                let width = usize::from(inner.width.max(1));
                (error.chars().count().div_ceil(width) + 1).min(usize::from(inner.height / 2)) as u16
            });
            let [text, below] = Layout::vertical([Constraint::Min(1), Constraint::Length(error_height)]).areas(inner);
            frame.render_widget(&editor.editor, text);
            if let Some(error) = error {
                let error = Line::styled(error, Style::new().fg(Color::Red));
                frame.render_widget(Paragraph::new(vec![Line::from(""), error]).wrap(Wrap { trim: false }), below);
            }
        }
        None => {
            let (title, text) = match selected {
                Some((item, score)) => {
                    let score = score.map(|s| format!(" · score {s:.2}")).unwrap_or_default();
                    let text: Vec<Line> = item.text.lines().map(|line| Line::from(line.to_owned())).collect();
                    (format!(" lesson #{}{score} ", item.id), text)
                }
                None => (" lesson ".to_owned(), Vec::new()),
            };
            frame.render_widget(
                Paragraph::new(text).wrap(Wrap { trim: false }).block(Block::bordered().title(title)),
                areas.detail,
            );
        }
    }
    draw_lesson_fields(frame, selected.map(|(item, _)| item), app.memory.selected_used_in(), areas.footer_panel);
}

/// The title line: where the lessons are, or the query being typed, or what the hits are for.
fn memory_header(app: &App) -> Line<'static> {
    let pane = &app.memory;
    let dim = Style::new().dim();
    match &pane.search {
        Some(search) if search.typing => Line::from(vec![
            Span::styled("search: ", Style::new().fg(Color::Yellow).bold()),
            Span::raw(search.query.clone()),
            Span::styled("█", Style::new().fg(Color::Yellow)),
        ]),
        Some(search) => {
            let query = search.searched.clone().unwrap_or_default();
            let found = match (search.pending, &search.error) {
                (true, _) => "searching…".to_owned(),
                (false, Some(_)) => "the search failed".to_owned(),
                (false, None) => format!("{} lessons, most similar first", search.hits.len()),
            };
            Line::from(vec![
                Span::styled(format!("“{query}”"), Style::new().fg(Color::Yellow).bold()),
                Span::raw(format!(": {found}")),
                Span::styled(" · / search again · Esc back to the list", dim),
            ])
        }
        None => {
            let text = match &pane.store {
                Some(store) => {
                    format!("lessons in {}, newest first", store.strip_prefix(&app.root).unwrap_or(store).display())
                }
                None if pane.error.is_some() => "the memory could not be read".to_owned(),
                None => "reading the memory…".to_owned(),
            };
            Line::styled(text, dim)
        }
    }
}

/// The lessons (or a search's hits), one line each: id, scope, author, passed/recalled, text.
fn draw_lessons(frame: &mut Frame, pane: &MemoryPane, area: Rect) {
    let focused = pane.editor.is_none();
    let (rows, selected, title, empty) = match &pane.search {
        Some(search) if search.searched.is_some() => {
            let rows = search.hits.iter().map(|hit| (&hit.item, Some(hit.score))).collect::<Vec<_>>();
            let empty = match (&search.error, search.pending) {
                (Some(error), _) => Some(Line::styled(error.clone(), Style::new().fg(Color::Red))),
                (None, true) => Some(Line::from("searching… (the embedder loads on first use)").dim()),
                (None, false) if rows.is_empty() => Some(Line::from("nothing in memory is similar enough")),
                (None, false) => None,
            };
            let title = format!(" hits ({}) ", rows.len());
            (rows, search.selected, title, empty)
        }
        _ => {
            let rows = pane.items.iter().map(|item| (item, None)).collect::<Vec<_>>();
            let empty = match (&pane.error, pane.listing) {
                (Some(error), _) => Some(Line::styled(error.clone(), Style::new().fg(Color::Red))),
                (None, _) if !rows.is_empty() => None,
                (None, true) => Some(Line::from("reading…").dim()),
                (None, false) => Some(Line::from(
                    "No lessons yet. Press a to write one; runs with memory on add what their agents remember.",
                )),
            };
            let more = if rows.len() >= super::memory::LIST_LIMIT { "newest " } else { "" };
            let title = format!(" lessons ({more}{}) ", rows.len());
            (rows, pane.selected, title, empty)
        }
    };
    if let Some(line) = empty {
        let block = list_block(title, focused);
        let mut lines = vec![line];
        if pane.error.is_some() && !pane.shows_hits() {
            lines.extend([
                Line::from(""),
                Line::from("R tries again; the rest of the workbench works as before.").dim(),
            ]);
        }
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), area);
        return;
    }
    // Column widths from the rows; the text takes what is left of the line.
    let width = |cell: &dyn Fn(&Item) -> String| rows.iter().map(|(item, _)| cell(item).chars().count()).max();
    let id_width = width(&|item| format!("#{}", item.id)).unwrap_or(0);
    let scope_width = width(&|item| scope_name(&item.scope).to_owned()).unwrap_or(0).min(14);
    let author_width = width(&|item| item.author.as_str().to_owned()).unwrap_or(0);
    let counts_width = width(&|item| format!("{}/{}", item.successes, item.uses)).unwrap_or(0);
    let score_width = if rows.iter().any(|(_, score)| score.is_some()) { 6 } else { 0 };
    // A narrow list drops the author, then the scope (the fields below show both), before the
    // text gets too short to tell lessons apart.
    let inner_width = area.width.saturating_sub(2) as usize;
    let fixed = 2 + score_width + id_width + 2 + counts_width + 2;
    let (scope_width, author_width) = match inner_width.saturating_sub(fixed) {
        room if room >= scope_width + author_width + 4 + 24 => (scope_width, author_width),
        room if room >= scope_width + 2 + 24 => (scope_width, 0),
        _ => (0, 0),
    };
    let cell = |width: usize| if width > 0 { width + 2 } else { 0 };
    let text_width = inner_width.saturating_sub(fixed + cell(scope_width) + cell(author_width)).max(10);
    // The title names the columns shown.
    let columns = [
        (score_width > 0, "score"),
        (true, "id"),
        (scope_width > 0, "scope"),
        (author_width > 0, "author"),
        (true, "passed/recalled"),
    ];
    let columns: Vec<&str> = columns.iter().filter(|(shown, _)| *shown).map(|(_, name)| *name).collect();
    let block = list_block(format!("{title}· {} ", columns.join(" ")), focused);
    let items: Vec<ListItem> = rows
        .iter()
        .map(|(item, score)| {
            let scope = one_line(scope_name(&item.scope), scope_width);
            let scope_style =
                if item.scope == Scope::Global { Style::new().dim() } else { Style::new().fg(Color::Magenta) };
            let mut spans = Vec::new();
            if let Some(score) = score {
                spans.push(Span::styled(format!("{score:.2}  "), Style::new().fg(Color::Yellow)));
            }
            spans.push(Span::styled(format!("{:>id_width$}  ", format!("#{}", item.id)), Style::new().bold()));
            if scope_width > 0 {
                spans.push(Span::styled(format!("{scope:<scope_width$}  "), scope_style));
            }
            if author_width > 0 {
                spans.push(Span::styled(
                    format!("{:<author_width$}  ", item.author.as_str()),
                    Style::new().fg(Color::Cyan),
                ));
            }
            spans.extend([
                Span::styled(
                    format!("{:>counts_width$}  ", format!("{}/{}", item.successes, item.uses)),
                    Style::new().fg(Color::Blue),
                ),
                Span::raw(one_line(&item.text, text_width)),
            ]);
            ListItem::new(Line::from(spans))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(selected));
    let list =
        List::new(items).block(block).highlight_style(Style::new().bg(Color::DarkGray).bold()).highlight_symbol("▸ ");
    frame.render_stateful_widget(list, area, &mut state);
}

/// How many of the runs given a lesson its fields name.
const USED_IN_SHOWN: usize = 3;

/// A lesson's fields: who wrote it for whom, when, how it fared, where it came from.
fn draw_lesson_fields(frame: &mut Frame, item: Option<&Item>, used_in: Option<&[String]>, area: Rect) {
    if area.height == 0 {
        return;
    }
    let Some(item) = item else {
        frame.render_widget(Block::bordered(), area);
        return;
    };
    let field = |name: &str, value: String| {
        Line::from(vec![Span::styled(format!("{name:<10}"), Style::new().dim()), Span::raw(value)])
    };
    let whom = match &item.scope {
        Scope::Global => "every agent".to_owned(),
        Scope::Expert(name) => format!("{name} only"),
    };
    let recalled = match (item.uses, item.successes) {
        (0, _) => "by no run yet".to_owned(),
        (1, passed) => format!("by 1 run, which {}", if passed > 0 { "passed" } else { "did not pass" }),
        (uses, passed) => format!("by {uses} runs, {passed} of which passed"),
    };
    let p = &item.provenance;
    let mut lines = vec![
        field("written", format!("by {}, for {whom}", item.author.as_str())),
        field("created", time(item.created_ms)),
        field("last used", item.last_used_ms.map_or_else(|| "never".to_owned(), time)),
        field("recalled", recalled),
        field(
            "from",
            p.run_id.as_ref().map_or_else(|| "no run: written outside a run".to_owned(), |r| format!("run {r}")),
        ),
    ];
    let mut at = Vec::new();
    if let Some(expert) = &p.expert {
        at.push(format!("expert {expert}"));
    }
    if let Some(seq) = p.seq {
        at.push(format!("event {seq}"));
    }
    if !at.is_empty() {
        lines.push(field("", at.join(" · ")));
    }
    let used_in = match used_in {
        None => "…".to_owned(),
        Some([]) => "no run in findings/".to_owned(),
        Some(runs) if runs.len() <= USED_IN_SHOWN => runs.join(", "),
        Some(runs) => format!("{}, and {} more", runs[..USED_IN_SHOWN].join(", "), runs.len() - USED_IN_SHOWN),
    };
    lines.push(field("given to", used_in));
    let mut block = Block::bordered().title(format!(" #{} ", item.id));
    if p.run_id.is_some() {
        block = block.title_bottom(Line::styled(" Enter opens the run ", Style::new().fg(Color::Cyan)).right_aligned());
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), area);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(area.x + (area.width - width) / 2, area.y + (area.height - height) / 2, width, height)
}

fn draw_prompt(frame: &mut Frame, prompt: &Prompt, area: Rect) {
    let question = match prompt {
        Prompt::CancelSubtree { agent, descendants, .. } => {
            format!("Cancel {agent} and its {descendants} subtasks?")
        }
        Prompt::CancelMatrix { running } => {
            format!("Cancel the matrix? The running trials ({running}) stop; finished trials are kept.")
        }
        Prompt::SaveInvalid { errors, .. } if *errors > 0 => {
            let noun = if *errors == 1 { "error" } else { "errors" };
            format!("This file has {errors} {noun}. Save it anyway?")
        }
        Prompt::SaveInvalid { .. } => "The check has not finished. Save anyway?".to_owned(),
        Prompt::QuitWhileRunning => "A run is working. Cancel it and quit? (its findings are kept)".to_owned(),
        Prompt::QuitUnsaved { files } => format!("Unsaved changes in {}. Quit and lose them?", files.join(", ")),
        Prompt::ForgetLesson { id } => format!("Forget lesson #{id} for good? It cannot be undone."),
        Prompt::DiscardLesson { what } => format!("Discard your changes to {what}?"),
    };
    let rect = centered(area, 64, 5);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(vec![Line::from(question), Line::from(""), Line::from("y yes · any other key no").dim()])
            .wrap(Wrap { trim: true })
            .alignment(Alignment::Center)
            .block(Block::bordered().border_style(Style::new().fg(Color::Yellow)).title(" confirm ")),
        rect,
    );
}

const HELP: &[(&str, &str)] = &[
    ("1 2 3 4 5, Tab", "Run, Agents, Experiments, Findings, Memory"),
    ("q, Ctrl-C", "quit (asks first if a run works or edits are unsaved)"),
    ("Run ↑↓ j k", "select a task; its conversation shows on the right"),
    ("Run ← → Enter", "collapse, expand, toggle"),
    ("Run w / e", "jump to the next working / failed task"),
    ("Run c", "cancel the selected task and its subtasks"),
    ("Run c in a matrix", "cancel the matrix; finished trials are kept"),
    ("Run [ ] K J", "scroll the transcript (stops following); f follows again"),
    ("Run r", "start the experiment again"),
    ("Run < >", "in a matrix: show the previous / next trial"),
    ("Run F", "fork the selected subtask of an ended run: 3 re-runs"),
    ("Run Esc", "back from a past run to the live one"),
    ("Agents Enter", "edit; Esc back; Ctrl-S save (asks if invalid)"),
    ("Agents n / d", "new expert from a template / duplicate the selected one"),
    ("Experiments Enter", "start the experiment"),
    ("Findings Enter", "replay the run in the Run screen"),
    ("Findings e", "write notes (saved as you type, to notes.md)"),
    ("Memory /", "search the lessons, most similar first; Esc back"),
    ("Memory e / a / d", "edit the lesson / add one of yours / forget it (asks)"),
    ("Memory Enter", "open the run a lesson came from, at the task that wrote it"),
    ("mouse", "click a task, wheel to scroll"),
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let rect = centered(area, 80, HELP.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![Span::styled(format!("{keys:>18}  "), Style::new().bold()), Span::raw(*what)])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys · any key closes ").borders(Borders::ALL)),
        rect,
    );
}

/// Draws `app` into a buffer of `width`×`height`: what the snapshot tests and the benchmark
/// look at.
pub fn to_buffer(app: &mut App, width: u16, height: u16) -> Buffer {
    let area = Rect::new(0, 0, width, height);
    app.prepare_frame(area);
    let mut terminal = match ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height)) {
        Ok(terminal) => terminal,
        Err(never) => match never {},
    };
    let _ = terminal.draw(|frame| draw(frame, app));
    terminal.backend().buffer().clone()
}
