//! Drawing the Memory screen: the lessons (or a search's hits) in columns that give way on a
//! narrow terminal, the selected lesson or its editor, and its fields.

use std::path::Path;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};

use crate::memory::service::render::{one_line, scope_name, time};
use crate::memory::store::{Item, Scope};
use crate::tui::layout::Areas;
use crate::tui::screens::memory::{LIST_LIMIT, MemoryPane};

use super::widgets::list_block;

/// The Memory screen: the lessons or a search's hits, the selected lesson (or its editor) and
/// its fields.
pub fn draw(frame: &mut Frame, pane: &MemoryPane, root: &Path, areas: &Areas) {
    frame.render_widget(memory_header(pane, root), areas.header);
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
    draw_lesson_fields(frame, selected.map(|(item, _)| item), pane.selected_used_in(), areas.footer_panel);
}

/// The title line: where the lessons are, or the query being typed, or what the hits are for.
fn memory_header(pane: &MemoryPane, root: &Path) -> Line<'static> {
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
                    format!("lessons in {}, newest first", store.strip_prefix(root).unwrap_or(store).display())
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
            let more = if rows.len() >= LIST_LIMIT { "newest " } else { "" };
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
