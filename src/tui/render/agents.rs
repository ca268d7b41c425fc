//! Drawing the Agents screen: the expert files, the selected one's editor with TOML colours
//! and its error lines marked, and its diagnostics under it.

use std::path::Path;

use ratatui::Frame;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};

use crate::config::Severity;
use crate::tui::highlight;
use crate::tui::layout::Areas;
use crate::tui::screens::Focus;
use crate::tui::screens::agents::AgentsScreen;

use super::widgets::list_block;

/// The Agents screen: the files, the selected one in its editor, its diagnostics.
pub fn draw(frame: &mut Frame, agents: &AgentsScreen, root: &Path, areas: &Areas) {
    frame.render_widget(
        Line::from(format!("agents/ in {} · edits are checked as you type, like `troupe check`", root.display())).dim(),
        areas.header,
    );
    let items: Vec<ListItem> = agents
        .files
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
    let mut state = ListState::default().with_selected(Some(agents.selected));
    let list = List::new(items)
        .block(list_block(format!(" experts ({}) ", agents.files.len()), agents.focus == Focus::List))
        .highlight_style(Style::new().bg(Color::DarkGray).bold())
        .highlight_symbol("▸ ");
    frame.render_stateful_widget(list, areas.list, &mut state);

    let Some(file) = agents.files.get(agents.selected) else {
        frame.render_widget(
            Paragraph::new("No experts yet. Press n to write one from the template.").block(Block::bordered()),
            areas.detail,
        );
        return;
    };
    let dirty = if file.is_dirty() { " · modified" } else { "" };
    let title = format!(" {}{dirty} ", file.path.strip_prefix(root).unwrap_or(&file.path).display());
    let block = list_block(title, agents.focus == Focus::Editor);
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
