//! Drawing the Experiments screen.

use std::path::Path;

use ratatui::Frame;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};

use crate::tui::layout::Areas;
use crate::tui::screens::experiments::ExperimentsScreen;

use super::widgets::list_block;

/// The Experiments screen: the list, the selected one's description, the workbench's problems.
pub fn draw(frame: &mut Frame, experiments: &ExperimentsScreen, root: &Path, areas: &Areas) {
    let problems = if experiments.problems.is_empty() {
        String::new()
    } else {
        format!(" · {} problems: run `troupe check`", experiments.problems.len())
    };
    frame.render_widget(Line::from(format!("experiments/ in {}{problems}", root.display())).dim(), areas.header);
    let items: Vec<ListItem> = experiments.items.iter().map(|e| ListItem::new(e.name.clone())).collect();
    let mut state = ListState::default().with_selected(Some(experiments.selected));
    let list = List::new(items)
        .block(list_block(format!(" experiments ({}) ", experiments.items.len()), true))
        .highlight_style(Style::new().bg(Color::DarkGray).bold())
        .highlight_symbol("▸ ");
    frame.render_stateful_widget(list, areas.list, &mut state);
    let detail = match experiments.items.get(experiments.selected) {
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
    for problem in &experiments.problems {
        lines.push(Line::styled(problem.clone(), Style::new().fg(Color::Red)));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered()), areas.detail);
}
