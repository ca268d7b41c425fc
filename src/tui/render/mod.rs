//! Drawing: every screen as a function of [`App`], a module per screen ([`run`], [`agents`],
//! [`experiments`], [`findings`], [`memory`]) over shared [`widgets`]; here the frame around
//! them: tabs, message, key hints, the help and the question asked. Only visible tree rows and
//! transcript lines are turned into widgets.
//!
//! Invariant: reads state only (no I/O, no clock, no sends); anything that depends on the
//! frame's size was settled by [`App::prepare_frame`] before the draw.

mod agents;
mod experiments;
mod findings;
mod memory;
mod run;
pub mod widgets;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::app::App;
use super::messages::{Prompt, Screen};
use widgets::{SPINNER, centered};

pub use widgets::{dollars, duration, tokens};

pub fn draw(frame: &mut Frame, app: &App) {
    let areas = app.areas(frame.area());
    draw_tabs(frame, app, areas.tabs);
    match app.screen {
        Screen::Run => run::draw(frame, &app.run, app.now, &areas),
        Screen::Agents => agents::draw(frame, &app.agents, &app.root, &areas),
        Screen::Experiments => experiments::draw(frame, &app.experiments, &app.root, &areas),
        Screen::Findings => findings::draw(frame, &app.findings, &app.root, &areas),
        Screen::Memory => memory::draw(frame, &app.memory, &app.root, &areas),
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
    if app.run.running {
        let spin = SPINNER[(app.now / 100 % SPINNER.len() as u64) as usize];
        spans.push(Span::styled(format!("{spin} running"), Style::new().fg(Color::Cyan)));
    }
    frame.render_widget(Line::from(spans), area);
}

fn draw_hints(frame: &mut Frame, app: &App, area: Rect) {
    let hints = match (app.screen, app.editing()) {
        (Screen::Agents, true) => "Esc list · Ctrl-S save · Ctrl-Z undo · Ctrl-C quit",
        (Screen::Findings, true) => "Esc list (saves) · notes save by themselves · Ctrl-C quit",
        (Screen::Run, _) if app.run.past_matrix().is_some() => {
            "? keys · < > trials · ↑↓ select · ←→ fold · w/e next working/failed · [ ] scroll · Esc back · r run"
        }
        (Screen::Run, _) if app.run.shown_matrix().is_some() => {
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
