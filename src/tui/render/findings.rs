//! Drawing the Findings screen: a row per past run or matrix (outcome, date, experiment,
//! tokens, why it is unreadable), and the selected run's notes.

use std::path::Path;

use ratatui::Frame;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph};

use crate::tui::catalog::PastOutcome;
use crate::tui::layout::Areas;
use crate::tui::screens::Focus;
use crate::tui::screens::findings::FindingsScreen;

use super::widgets::{duration, list_block, tokens};

/// The Findings screen: the past runs and matrices, the selected one's notes.
pub fn draw(frame: &mut Frame, findings: &FindingsScreen, root: &Path, areas: &Areas) {
    frame.render_widget(Line::from(format!("findings/ in {}", root.display())).dim(), areas.header);
    let items: Vec<ListItem> = findings
        .runs
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
    let mut state = ListState::default().with_selected(Some(findings.selected));
    let list = List::new(items)
        .block(list_block(format!(" runs ({}) ", findings.runs.len()), findings.focus == Focus::List))
        .highlight_style(Style::new().bg(Color::DarkGray).bold())
        .highlight_symbol("▸ ");
    frame.render_stateful_widget(list, areas.list, &mut state);
    if findings.runs.is_empty() {
        frame.render_widget(
            Paragraph::new("No runs yet: each run writes a folder here.").block(Block::bordered()),
            areas.detail,
        );
        return;
    }
    let title = match findings.runs.get(findings.selected) {
        Some(run) if run.problem.is_some() => format!(" notes.md · {} ", run.problem.as_deref().unwrap_or_default()),
        Some(run) => format!(" {}/notes.md ", run.id),
        None => " notes ".to_owned(),
    };
    let block = list_block(title, findings.focus == Focus::Editor);
    let inner = block.inner(areas.detail);
    frame.render_widget(block, areas.detail);
    match &findings.notes {
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
