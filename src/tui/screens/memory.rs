//! The Memory screen's state and how it reacts: the lessons listed newest first, a search's
//! ranked hits, the lesson editor, and the keys and reports that change them.
//!
//! Invariants: pure like the other screens (the shell lists, searches, edits and forgets on
//! blocking threads and reports back). The editor's text stays here until the shell
//! reports it saved; a failed save keeps it and says why. Every change is followed by a fresh
//! listing (and a fresh search when hits are shown), so the screen shows what the store holds.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui_textarea::{CursorMove, TextArea, WrapMode};

use crate::memory::service::render::one_line;
use crate::memory::service::{Edited, Learned};
use crate::memory::store::{Hit, Item, ItemId, Remembered};
use crate::protocol::{Event, EventBody, TaskId};

use super::Outside;
use crate::tui::messages::{Command, Prompt};

/// Lessons a listing shows at most (the newest).
pub const LIST_LIMIT: usize = 500;
/// Hits a search returns at most.
pub const SEARCH_K: usize = 20;

/// The Memory screen.
#[derive(Default)]
pub struct MemoryPane {
    /// The lessons, newest first, as last listed.
    pub items: Vec<Item>,
    pub selected: usize,
    /// The store's file, once it has been opened.
    pub store: Option<PathBuf>,
    /// A listing is under way.
    pub listing: bool,
    /// Why the store could not be listed (damaged, busy, settings unreadable): shown in place
    /// of the list.
    pub error: Option<String>,
    pub search: Option<MemorySearch>,
    pub editor: Option<LessonEditor>,
    /// The lesson to select once the next listing arrives (one just added).
    select_after: Option<ItemId>,
    /// The runs that were given a lesson (its id, theirs newest first), for the selected one.
    pub used_in: Option<(ItemId, Vec<String>)>,
    /// The lesson whose runs the shell is looking for.
    used_in_asked: Option<ItemId>,
}

/// A search: the query being typed, then its hits, best first.
#[derive(Clone, Debug, Default)]
pub struct MemorySearch {
    pub query: String,
    /// Keys go to the query.
    pub typing: bool,
    /// The query searched for (its hits replace the list), once Enter was pressed.
    pub searched: Option<String>,
    /// The shell has not answered yet.
    pub pending: bool,
    pub hits: Vec<Hit>,
    pub selected: usize,
    pub error: Option<String>,
}

/// A lesson's text being edited, or a new lesson's (author user, global).
pub struct LessonEditor {
    /// `None` for a new lesson.
    pub id: Option<ItemId>,
    pub editor: TextArea<'static>,
    /// The text it started with: leaving with other text asks first.
    pub original: String,
    /// Sent to the shell; keys wait until it answers.
    pub saving: bool,
    /// Why the last save failed.
    pub error: Option<String>,
}

impl LessonEditor {
    fn new(id: Option<ItemId>, text: &str) -> Self {
        let mut editor = TextArea::new(text.lines().map(str::to_owned).collect());
        editor.set_cursor_line_style(ratatui::style::Style::default());
        // A lesson is a paragraph or two: wrapped to the pane, not scrolled sideways.
        editor.set_wrap_mode(WrapMode::WordOrGlyph);
        editor.move_cursor(CursorMove::Bottom);
        editor.move_cursor(CursorMove::End);
        LessonEditor { id, editor, original: text.to_owned(), saving: false, error: None }
    }

    pub fn text(&self) -> String {
        self.editor.lines().join("\n")
    }

    pub fn is_dirty(&self) -> bool {
        self.text().trim() != self.original.trim()
    }

    /// How a prompt or message names what is edited.
    pub fn name(&self) -> String {
        self.id.map_or_else(|| "the new lesson".to_owned(), |id| format!("lesson #{id}"))
    }
}

impl MemoryPane {
    /// The lesson whose runs should be looked for now: the selected one, when they are neither
    /// known nor asked for. Marks it asked.
    pub fn want_used_in(&mut self) -> Option<ItemId> {
        let id = self.selected_item()?.0.id;
        let known = self.used_in.as_ref().is_some_and(|(known, _)| *known == id);
        if known || self.used_in_asked == Some(id) {
            return None;
        }
        self.used_in_asked = Some(id);
        Some(id)
    }

    /// The shell found the runs given lesson `id`.
    pub fn set_used_in(&mut self, id: ItemId, runs: Vec<String>) {
        if self.used_in_asked == Some(id) {
            self.used_in_asked = None;
        }
        self.used_in = Some((id, runs));
    }

    /// The runs given the selected lesson, once found.
    pub fn selected_used_in(&self) -> Option<&[String]> {
        let id = self.selected_item()?.0.id;
        self.used_in.as_ref().filter(|(known, _)| *known == id).map(|(_, runs)| runs.as_slice())
    }

    /// Whether the list pane shows a search's hits rather than the lessons.
    pub fn shows_hits(&self) -> bool {
        self.search.as_ref().is_some_and(|s| s.searched.is_some())
    }

    /// Whether keys go to the query or the editor.
    pub fn takes_text(&self) -> bool {
        self.editor.is_some() || self.search.as_ref().is_some_and(|s| s.typing)
    }

    /// The lesson the detail pane shows, with its score when it is a hit.
    pub fn selected_item(&self) -> Option<(&Item, Option<f32>)> {
        match &self.search {
            Some(search) if search.searched.is_some() => {
                search.hits.get(search.selected).map(|hit| (&hit.item, Some(hit.score)))
            }
            _ => self.items.get(self.selected).map(|item| (item, None)),
        }
    }

    fn move_selection(&mut self, by: isize) {
        let (at, count) = match &mut self.search {
            Some(search) if search.searched.is_some() => (&mut search.selected, search.hits.len()),
            _ => (&mut self.selected, self.items.len()),
        };
        *at = (*at as isize + by).clamp(0, count.saturating_sub(1) as isize) as usize;
    }

    /// The commands that bring the screen up to date after a change: a listing, and the search
    /// again when its hits are shown.
    fn refresh(&mut self, commands: &mut Vec<Command>) {
        self.listing = true;
        commands.push(Command::MemoryList);
        if let Some(search) = &mut self.search
            && let Some(query) = search.searched.clone()
        {
            search.pending = true;
            commands.push(Command::MemorySearch { query });
        }
    }
}

impl MemoryPane {
    /// Opening the screen lists the lessons as they are now.
    pub fn opened(&mut self, out: &mut Outside) {
        self.listing = true;
        out.send(Command::MemoryList);
    }

    /// Keys on the Memory screen when no text is being typed.
    pub fn key(&mut self, key: KeyEvent, out: &mut Outside) {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(isize::MAX / 2),
            KeyCode::Char('/') => {
                let search = self.search.get_or_insert_with(MemorySearch::default);
                search.typing = true;
            }
            KeyCode::Esc if self.search.is_some() => self.search = None,
            KeyCode::Char('R') => self.opened(out),
            KeyCode::Char('a') => {
                self.editor = Some(LessonEditor::new(None, ""));
                out.say("a new lesson for every agent: write it, Ctrl-S saves it", false);
            }
            KeyCode::Char('e') => match self.selected_item().map(|(item, _)| (item.id, item.text.clone())) {
                Some((id, text)) => self.editor = Some(LessonEditor::new(Some(id), &text)),
                None => out.say("no lesson selected to edit", true),
            },
            KeyCode::Char('d') => match self.selected_item() {
                Some((item, _)) => out.ask(Prompt::ForgetLesson { id: item.id }),
                None => out.say("no lesson selected to forget", true),
            },
            KeyCode::Enter | KeyCode::Char('o') => self.open_lesson_run(out),
            _ => {}
        }
    }

    /// `Enter`: the run the selected lesson came from, opened in the Run screen.
    fn open_lesson_run(&mut self, out: &mut Outside) {
        let Some((item, _)) = self.selected_item() else { return };
        match &item.provenance.run_id {
            Some(run_id) => {
                let text = format!("opening run {run_id}…");
                out.send(Command::OpenMemoryRun { run_id: run_id.clone(), seq: item.provenance.seq });
                out.say(text, false);
            }
            None => {
                let text = format!(
                    "lesson #{} was written outside a run (by {}): no run to open",
                    item.id,
                    item.author.as_str()
                );
                out.say(text, false);
            }
        }
    }

    /// Keys while the query or the editor takes text.
    pub fn text_key(&mut self, key: KeyEvent, out: &mut Outside) {
        if self.editor.is_some() {
            return self.lesson_editor_key(key, out);
        }
        let Some(search) = self.search.as_mut() else { return };
        match key.code {
            KeyCode::Esc => self.search = None,
            KeyCode::Enter => {
                let query = search.query.trim().to_owned();
                if query.is_empty() {
                    out.say("type what to look for, then Enter", true);
                    return;
                }
                search.typing = false;
                search.searched = Some(query.clone());
                search.pending = true;
                search.hits.clear();
                search.selected = 0;
                search.error = None;
                out.send(Command::MemorySearch { query });
            }
            KeyCode::Backspace => {
                search.query.pop();
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => search.query.push(c),
            _ => {}
        }
    }

    fn lesson_editor_key(&mut self, key: KeyEvent, out: &mut Outside) {
        let Some(editor) = self.editor.as_mut() else { return };
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if editor.saving {
            out.say("saving… (the embedder loads on first use)", false);
            return;
        }
        if key.code == KeyCode::Esc {
            if editor.is_dirty() {
                out.ask(Prompt::DiscardLesson { what: editor.name() });
            } else {
                self.editor = None;
            }
            return;
        }
        if ctrl && key.code == KeyCode::Char('s') {
            let text = editor.text();
            match editor.id {
                Some(_) if !editor.is_dirty() => {
                    self.editor = None;
                    out.say("unchanged", false);
                }
                Some(id) => {
                    editor.saving = true;
                    out.send(Command::MemoryEdit { id, text });
                    out.say(format!("saving lesson #{id}…"), false);
                }
                None => {
                    editor.saving = true;
                    out.send(Command::MemoryAdd { text });
                    out.say("saving the new lesson…", false);
                }
            }
            return;
        }
        editor.editor.input(key);
    }

    /// `y` to a Memory screen question.
    pub fn answer(&mut self, prompt: Prompt, out: &mut Outside) {
        match prompt {
            Prompt::ForgetLesson { id } => {
                out.send(Command::MemoryForget { id });
                out.say(format!("forgetting lesson #{id}…"), false);
            }
            Prompt::DiscardLesson { .. } => {
                if let Some(editor) = self.editor.take() {
                    out.say(format!("changes to {} discarded", editor.name()), false);
                }
            }
            _ => {}
        }
    }

    pub fn listed(&mut self, listed: Result<(PathBuf, Vec<Item>), String>) {
        let pane = self;
        pane.listing = false;
        match listed {
            Ok((store, items)) => {
                let keep = pane.select_after.take().or_else(|| pane.items.get(pane.selected).map(|item| item.id));
                pane.items = items;
                pane.store = Some(store);
                pane.error = None;
                pane.selected = keep
                    .and_then(|id| pane.items.iter().position(|item| item.id == id))
                    .unwrap_or(pane.selected)
                    .min(pane.items.len().saturating_sub(1));
            }
            Err(error) => {
                pane.items.clear();
                pane.selected = 0;
                pane.error = Some(error);
            }
        }
    }

    pub fn searched(&mut self, query: String, hits: Result<Vec<Hit>, String>) {
        let Some(search) = self.search.as_mut().filter(|s| s.searched.as_deref() == Some(&query)) else {
            return; // a search given up or replaced meanwhile
        };
        let selected = search.hits.get(search.selected).map(|hit| hit.item.id);
        search.pending = false;
        match hits {
            Ok(hits) => {
                search.hits = hits;
                search.error = None;
                search.selected = selected
                    .and_then(|id| search.hits.iter().position(|hit| hit.item.id == id))
                    .unwrap_or(search.selected)
                    .min(search.hits.len().saturating_sub(1));
            }
            Err(error) => {
                search.hits.clear();
                search.error = Some(error);
            }
        }
    }

    fn saved(&mut self, id: Option<ItemId>, saved: Result<String, String>, out: &mut Outside) {
        let editing = self.editor.as_mut().filter(|editor| editor.saving && editor.id == id);
        match saved {
            Ok(text) => {
                if editing.is_some() {
                    self.editor = None;
                }
                out.say(text, false);
                self.refresh(out.commands);
            }
            Err(error) => {
                let what = id.map_or_else(|| "the new lesson".to_owned(), |id| format!("lesson #{id}"));
                match editing {
                    Some(editor) => {
                        editor.saving = false;
                        editor.error = Some(error.clone());
                        out.say(format!("{what} not saved: {error} (your text is still here)"), true);
                    }
                    None => out.say(format!("{what} not saved: {error}"), true),
                }
            }
        }
    }

    pub fn edited(&mut self, id: ItemId, edited: Result<Edited, String>, out: &mut Outside) {
        let saved = edited.map(|edited| {
            let note = edited.truncated.map(|t| format!("; note: {t}")).unwrap_or_default();
            format!("saved lesson #{id} and embedded it again{note}")
        });
        self.saved(Some(id), saved, out);
    }

    pub fn added(&mut self, learned: Result<Learned, String>, out: &mut Outside) {
        if let Ok(learned) = &learned {
            self.select_after = Some(learned.remembered.item().id);
            // The list shows it; a search shown would hide it.
            self.search = None;
        }
        let saved = learned.map(|learned| {
            let note = learned.truncated.map(|t| format!("; note: {t}")).unwrap_or_default();
            match learned.remembered {
                Remembered::Added(item) => format!("added lesson #{}{note}", item.id),
                Remembered::Merged { item, similarity } => format!(
                    "a lesson this close was there already: merged into #{} (similarity {similarity:.2}){note}",
                    item.id
                ),
            }
        });
        self.saved(None, saved, out);
    }

    pub fn forgotten(&mut self, id: ItemId, forgotten: Result<Item, String>, out: &mut Outside) {
        match forgotten {
            Ok(item) => {
                out.say(format!("forgot lesson #{id}: {}", one_line(&item.text, 80)), false);
                if let Some(search) = &mut self.search {
                    search.hits.retain(|hit| hit.item.id != id);
                    search.selected = search.selected.min(search.hits.len().saturating_sub(1));
                }
                self.items.retain(|item| item.id != id);
                self.selected = self.selected.min(self.items.len().saturating_sub(1));
                self.refresh(out.commands);
            }
            Err(error) => out.say(format!("lesson #{id} not forgotten: {error}"), true),
        }
    }
}

/// The task that wrote the lesson, from the event `seq` of its run's `events`, if it names one.
pub fn source_task(seq: Option<u64>, events: &[Event]) -> Option<TaskId> {
    seq.and_then(|seq| events.iter().find(|e| e.seq == seq)).and_then(|e| event_uri(&e.body))
}

/// The task an event is about, if it is about one.
pub(crate) fn event_uri(body: &EventBody) -> Option<TaskId> {
    match body {
        EventBody::TaskCreated { uri, .. }
        | EventBody::TaskStatus { uri, .. }
        | EventBody::Message { uri, .. }
        | EventBody::MessageDelta { uri, .. }
        | EventBody::ToolCall { uri, .. }
        | EventBody::ToolResult { uri, .. }
        | EventBody::Usage { uri, .. }
        | EventBody::Routed { uri, .. }
        | EventBody::MemoryRecalled { uri, .. }
        | EventBody::LimitHit { uri, .. }
        | EventBody::ChildrenOnFinish { uri, .. } => Some(*uri),
        _ => None,
    }
}
