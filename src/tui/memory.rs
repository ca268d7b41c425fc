//! The Memory screen's state and how it reacts: the lessons listed newest first, a search's
//! ranked hits, the lesson editor, and the keys and reports that change them.
//!
//! Invariants: pure like the rest of [`super::app`] (the shell lists, searches, edits and
//! forgets on blocking threads and reports back). The editor's text stays here until the shell
//! reports it saved; a failed save keeps it and says why. Every change is followed by a fresh
//! listing (and a fresh search when hits are shown), so the screen shows what the store holds.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui_textarea::{CursorMove, TextArea, WrapMode};

use crate::memory::service::render::one_line;
use crate::memory::service::{Edited, Learned};
use crate::memory::store::{Hit, Item, ItemId, Remembered};
use crate::protocol::{Event, EventBody, TaskId};

use super::app::App;
use super::messages::{Command, Prompt, ShellReport};

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

impl App {
    /// Opening the screen lists the lessons as they are now.
    pub(super) fn memory_opened(&mut self, commands: &mut Vec<Command>) {
        self.memory.listing = true;
        commands.push(Command::MemoryList);
    }

    /// Keys on the Memory screen when no text is being typed.
    pub(super) fn memory_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.memory.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.memory.move_selection(1),
            KeyCode::PageUp => self.memory.move_selection(-10),
            KeyCode::PageDown => self.memory.move_selection(10),
            KeyCode::Home | KeyCode::Char('g') => self.memory.move_selection(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.memory.move_selection(isize::MAX / 2),
            KeyCode::Char('/') => {
                let search = self.memory.search.get_or_insert_with(MemorySearch::default);
                search.typing = true;
            }
            KeyCode::Esc if self.memory.search.is_some() => self.memory.search = None,
            KeyCode::Char('R') => self.memory_opened(commands),
            KeyCode::Char('a') => {
                self.memory.editor = Some(LessonEditor::new(None, ""));
                self.say("a new lesson for every agent: write it, Ctrl-S saves it", false);
            }
            KeyCode::Char('e') => match self.memory.selected_item().map(|(item, _)| (item.id, item.text.clone())) {
                Some((id, text)) => self.memory.editor = Some(LessonEditor::new(Some(id), &text)),
                None => self.say("no lesson selected to edit", true),
            },
            KeyCode::Char('d') => match self.memory.selected_item() {
                Some((item, _)) => self.prompt = Some(Prompt::ForgetLesson { id: item.id }),
                None => self.say("no lesson selected to forget", true),
            },
            KeyCode::Enter | KeyCode::Char('o') => self.open_lesson_run(commands),
            _ => {}
        }
    }

    /// `Enter`: the run the selected lesson came from, opened in the Run screen.
    fn open_lesson_run(&mut self, commands: &mut Vec<Command>) {
        let Some((item, _)) = self.memory.selected_item() else { return };
        match &item.provenance.run_id {
            Some(run_id) => {
                let text = format!("opening run {run_id}…");
                commands.push(Command::OpenMemoryRun { run_id: run_id.clone(), seq: item.provenance.seq });
                self.say(text, false);
            }
            None => {
                let text = format!(
                    "lesson #{} was written outside a run (by {}): no run to open",
                    item.id,
                    item.author.as_str()
                );
                self.say(text, false);
            }
        }
    }

    /// Keys while the query or the editor takes text.
    pub(super) fn memory_text_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        if self.memory.editor.is_some() {
            return self.lesson_editor_key(key, commands);
        }
        let Some(search) = self.memory.search.as_mut() else { return };
        match key.code {
            KeyCode::Esc => self.memory.search = None,
            KeyCode::Enter => {
                let query = search.query.trim().to_owned();
                if query.is_empty() {
                    self.say("type what to look for, then Enter", true);
                    return;
                }
                search.typing = false;
                search.searched = Some(query.clone());
                search.pending = true;
                search.hits.clear();
                search.selected = 0;
                search.error = None;
                commands.push(Command::MemorySearch { query });
            }
            KeyCode::Backspace => {
                search.query.pop();
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => search.query.push(c),
            _ => {}
        }
    }

    fn lesson_editor_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        let Some(editor) = self.memory.editor.as_mut() else { return };
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if editor.saving {
            self.say("saving… (the embedder loads on first use)", false);
            return;
        }
        if key.code == KeyCode::Esc {
            if editor.is_dirty() {
                self.prompt = Some(Prompt::DiscardLesson { what: editor.name() });
            } else {
                self.memory.editor = None;
            }
            return;
        }
        if ctrl && key.code == KeyCode::Char('s') {
            let text = editor.text();
            match editor.id {
                Some(_) if !editor.is_dirty() => {
                    self.memory.editor = None;
                    self.say("unchanged", false);
                }
                Some(id) => {
                    editor.saving = true;
                    commands.push(Command::MemoryEdit { id, text });
                    self.say(format!("saving lesson #{id}…"), false);
                }
                None => {
                    editor.saving = true;
                    commands.push(Command::MemoryAdd { text });
                    self.say("saving the new lesson…", false);
                }
            }
            return;
        }
        editor.editor.input(key);
    }

    /// `y` to a Memory screen question.
    pub(super) fn memory_answer(&mut self, prompt: Prompt, commands: &mut Vec<Command>) {
        match prompt {
            Prompt::ForgetLesson { id } => {
                commands.push(Command::MemoryForget { id });
                self.say(format!("forgetting lesson #{id}…"), false);
            }
            Prompt::DiscardLesson { .. } => {
                if let Some(editor) = self.memory.editor.take() {
                    self.say(format!("changes to {} discarded", editor.name()), false);
                }
            }
            _ => {}
        }
    }

    pub(super) fn memory_listed(&mut self, listed: Result<(PathBuf, Vec<Item>), String>) {
        let pane = &mut self.memory;
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

    pub(super) fn memory_searched(&mut self, query: String, hits: Result<Vec<Hit>, String>) {
        let Some(search) = self.memory.search.as_mut().filter(|s| s.searched.as_deref() == Some(&query)) else {
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

    pub(super) fn memory_saved(
        &mut self,
        id: Option<ItemId>,
        saved: Result<String, String>,
        commands: &mut Vec<Command>,
    ) {
        let editing = self.memory.editor.as_mut().filter(|editor| editor.saving && editor.id == id);
        match saved {
            Ok(text) => {
                if editing.is_some() {
                    self.memory.editor = None;
                }
                self.say(text, false);
                self.memory.refresh(commands);
            }
            Err(error) => {
                let what = id.map_or_else(|| "the new lesson".to_owned(), |id| format!("lesson #{id}"));
                match editing {
                    Some(editor) => {
                        editor.saving = false;
                        editor.error = Some(error.clone());
                        self.say(format!("{what} not saved: {error} (your text is still here)"), true);
                    }
                    None => self.say(format!("{what} not saved: {error}"), true),
                }
            }
        }
    }

    pub(super) fn memory_edited(&mut self, id: ItemId, edited: Result<Edited, String>, commands: &mut Vec<Command>) {
        let saved = edited.map(|edited| {
            let note = edited.truncated.map(|t| format!("; note: {t}")).unwrap_or_default();
            format!("saved lesson #{id} and embedded it again{note}")
        });
        self.memory_saved(Some(id), saved, commands);
    }

    pub(super) fn memory_added(&mut self, learned: Result<Learned, String>, commands: &mut Vec<Command>) {
        if let Ok(learned) = &learned {
            self.memory.select_after = Some(learned.remembered.item().id);
            // The list shows it; a search shown would hide it.
            self.memory.search = None;
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
        self.memory_saved(None, saved, commands);
    }

    pub(super) fn memory_forgotten(
        &mut self,
        id: ItemId,
        forgotten: Result<Item, String>,
        commands: &mut Vec<Command>,
    ) {
        match forgotten {
            Ok(item) => {
                self.say(format!("forgot lesson #{id}: {}", one_line(&item.text, 80)), false);
                if let Some(search) = &mut self.memory.search {
                    search.hits.retain(|hit| hit.item.id != id);
                    search.selected = search.selected.min(search.hits.len().saturating_sub(1));
                }
                self.memory.items.retain(|item| item.id != id);
                self.memory.selected = self.memory.selected.min(self.memory.items.len().saturating_sub(1));
                self.memory.refresh(commands);
            }
            Err(error) => self.say(format!("lesson #{id} not forgotten: {error}"), true),
        }
    }

    /// The run a lesson came from, read back from its folder (or why not): shown in the Run
    /// screen with the task that wrote the lesson selected.
    pub(super) fn memory_run(
        &mut self,
        run_id: String,
        seq: Option<u64>,
        opened: Result<(PathBuf, Vec<Event>, Option<String>), String>,
        commands: &mut Vec<Command>,
    ) {
        let (dir, events, warning) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                self.say(error, true);
                return;
            }
        };
        let uri = seq.and_then(|seq| events.iter().find(|e| e.seq == seq)).and_then(|e| event_uri(&e.body));
        commands.extend(self.handle_report(ShellReport::PastRun { dir, events, warning: warning.clone() }));
        if let Some(pane) = self.past.as_mut()
            && let Some(uri) = uri
            && pane.view.node(uri).is_some()
        {
            pane.view.reveal(uri);
            pane.view.refresh();
            pane.selected = Some(uri);
        }
        if warning.is_none() {
            let at = seq.map(|seq| format!(", event {seq}")).unwrap_or_default();
            self.say(format!("run {run_id}{at}: the lesson's source (Esc goes back)"), false);
        }
    }
}

/// The task an event is about, if it is about one.
fn event_uri(body: &EventBody) -> Option<TaskId> {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crossterm::event::KeyEventKind;

    use super::*;
    use crate::memory::store::{Author, ItemKind, Provenance, Scope};
    use crate::tui::messages::Screen;

    fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
        app.handle_key(KeyEvent::from(code))
    }

    fn ctrl(app: &mut App, c: char) -> Vec<Command> {
        app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            key(app, KeyCode::Char(c));
        }
    }

    fn said(app: &App) -> (String, bool) {
        app.flash.clone().unwrap_or_default()
    }

    fn lesson(id: ItemId, text: &str, run: Option<(&str, u64)>) -> Item {
        Item {
            id,
            kind: ItemKind::Lesson,
            author: if run.is_some() { Author::Agent } else { Author::User },
            scope: Scope::Global,
            provenance: Provenance {
                run_id: run.map(|(run, _)| run.to_owned()),
                seq: run.map(|(_, seq)| seq),
                expert: run.map(|_| "researcher".to_owned()),
            },
            text: text.to_owned(),
            data: serde_json::Value::Null,
            created_ms: 1_795_000_000_000 + id * 1000,
            last_used_ms: None,
            uses: 0,
            successes: 0,
            embedding: vec![1.0],
            embedder: "sha256:test".to_owned(),
        }
    }

    /// The Memory screen open on two lessons: #2 (newest, from a run) and #1 (the user's).
    fn memory_app() -> App {
        let mut app = App::new(PathBuf::from("/w"));
        assert_eq!(key(&mut app, KeyCode::Char('5')), vec![Command::MemoryList]);
        assert_eq!(app.screen, Screen::Memory);
        assert!(app.memory.listing);
        let items =
            vec![lesson(2, "Cite the source of every number.", Some(("run-a", 7))), lesson(1, "Be brief.", None)];
        app.handle_report(ShellReport::MemoryListed(Ok(("/w/.troupe/memory.sqlite".into(), items))));
        app
    }

    fn hit(item: Item, score: f32) -> Hit {
        Hit { item, score }
    }

    #[test]
    fn search_takes_the_query_then_shows_ranked_hits_and_esc_goes_back() {
        let mut app = memory_app();
        assert!(key(&mut app, KeyCode::Char('/')).is_empty());
        assert!(app.editing(), "keys go to the query");
        // Digits and q are text here, not screens or quitting.
        typed(&mut app, "q5 numbersx");
        key(&mut app, KeyCode::Backspace);
        assert_eq!(app.screen, Screen::Memory);
        assert_eq!(app.memory.search.as_ref().map(|s| s.query.as_str()), Some("q5 numbers"));
        let searched = key(&mut app, KeyCode::Enter);
        assert_eq!(searched, vec![Command::MemorySearch { query: "q5 numbers".into() }]);
        assert!(!app.editing(), "the hits take the list's keys");
        // An answer to another query (given up meanwhile) is ignored.
        app.handle_report(ShellReport::MemorySearched { query: "other".into(), hits: Ok(vec![]) });
        assert!(app.memory.search.as_ref().is_some_and(|s| s.pending));
        let hits = vec![hit(lesson(1, "Be brief.", None), 0.41), hit(lesson(2, "Cite.", Some(("run-a", 7))), 0.83)];
        app.handle_report(ShellReport::MemorySearched { query: "q5 numbers".into(), hits: Ok(hits) });
        assert!(app.memory.shows_hits());
        assert_eq!(app.memory.selected_item().map(|(item, score)| (item.id, score)), Some((1, Some(0.41))));
        key(&mut app, KeyCode::Down);
        assert_eq!(app.memory.selected_item().map(|(item, _)| item.id), Some(2));
        // `/` again edits the same query; Esc leaves the search for the list.
        key(&mut app, KeyCode::Char('/'));
        assert!(app.editing());
        key(&mut app, KeyCode::Esc);
        assert!(app.memory.search.is_none() && !app.editing());
        assert_eq!(app.memory.selected_item().map(|(item, score)| (item.id, score)), Some((2, None)));
        // A failed search is said where the hits would be, and the list is still there after.
        key(&mut app, KeyCode::Char('/'));
        assert!(key(&mut app, KeyCode::Enter).is_empty(), "nothing to look for");
        assert!(said(&app).1);
        typed(&mut app, "x");
        key(&mut app, KeyCode::Enter);
        app.handle_report(ShellReport::MemorySearched { query: "x".into(), hits: Err("the embedder's files".into()) });
        assert_eq!(app.memory.search.as_ref().and_then(|s| s.error.as_deref()), Some("the embedder's files"));
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.memory.items.len(), 2);
    }

    #[test]
    fn forgetting_asks_first_then_deletes_and_lists_again() {
        let mut app = memory_app();
        assert!(key(&mut app, KeyCode::Char('d')).is_empty(), "nothing is deleted before the answer");
        assert_eq!(app.prompt, Some(Prompt::ForgetLesson { id: 2 }));
        assert!(key(&mut app, KeyCode::Char('n')).is_empty());
        assert_eq!(app.prompt, None);
        key(&mut app, KeyCode::Char('d'));
        assert_eq!(key(&mut app, KeyCode::Char('y')), vec![Command::MemoryForget { id: 2 }]);
        let failed = app.handle_report(ShellReport::MemoryForgotten { id: 2, forgotten: Err("busy".into()) });
        assert!(failed.is_empty());
        assert_eq!(said(&app), ("lesson #2 not forgotten: busy".to_owned(), true));
        assert_eq!(app.memory.items.len(), 2, "still there");
        let item = app.memory.items[0].clone();
        let after = app.handle_report(ShellReport::MemoryForgotten { id: 2, forgotten: Ok(item) });
        assert_eq!(after, vec![Command::MemoryList]);
        assert_eq!(app.memory.items.iter().map(|i| i.id).collect::<Vec<_>>(), vec![1]);
        assert!(said(&app).0.starts_with("forgot lesson #2"));
    }

    #[test]
    fn a_failed_save_keeps_the_text_and_says_why() {
        let mut app = memory_app();
        key(&mut app, KeyCode::Char('e'));
        assert!(app.editing());
        typed(&mut app, " Always.");
        let save = ctrl(&mut app, 's');
        let text = "Cite the source of every number. Always.".to_owned();
        assert_eq!(save, vec![Command::MemoryEdit { id: 2, text: text.clone() }]);
        // While saving, keys wait (the text sent is the text kept).
        typed(&mut app, "zz");
        assert_eq!(app.memory.editor.as_ref().map(LessonEditor::text), Some(text.clone()));
        let failed = app.handle_report(ShellReport::MemoryEdited { id: 2, edited: Err("the embedder's files".into()) });
        assert!(failed.is_empty());
        let editor = app.memory.editor.as_ref().expect("the editor stays open");
        assert_eq!(editor.text(), text);
        assert_eq!(editor.error.as_deref(), Some("the embedder's files"));
        assert!(!editor.saving);
        assert!(said(&app).1 && said(&app).0.contains("your text is still here"), "{:?}", app.flash);
        // Quitting now asks about it.
        assert!(key(&mut app, KeyCode::Esc).is_empty());
        assert_eq!(app.prompt, Some(Prompt::DiscardLesson { what: "lesson #2".into() }));
        key(&mut app, KeyCode::Char('n'));
        assert!(app.memory.editor.is_some(), "n keeps editing");
        assert!(ctrl(&mut app, 'c').is_empty());
        assert!(matches!(&app.prompt, Some(Prompt::QuitUnsaved { files }) if files == &["lesson #2"]));
        key(&mut app, KeyCode::Char('n'));
        // Saved: the editor closes and the list is read again.
        ctrl(&mut app, 's');
        let mut item = app.memory.items[0].clone();
        item.text = text;
        let edited = Edited { item, truncated: None };
        let after = app.handle_report(ShellReport::MemoryEdited { id: 2, edited: Ok(edited) });
        assert_eq!(after, vec![Command::MemoryList]);
        assert!(app.memory.editor.is_none() && !app.editing());
        assert_eq!(said(&app), ("saved lesson #2 and embedded it again".to_owned(), false));
    }

    #[test]
    fn an_added_lesson_is_selected_once_listed_and_esc_without_changes_just_closes() {
        let mut app = memory_app();
        key(&mut app, KeyCode::Char('e'));
        assert!(key(&mut app, KeyCode::Esc).is_empty());
        assert!(app.memory.editor.is_none() && app.prompt.is_none(), "nothing changed, nothing asked");
        key(&mut app, KeyCode::Char('a'));
        typed(&mut app, "Check the units.");
        assert_eq!(ctrl(&mut app, 's'), vec![Command::MemoryAdd { text: "Check the units.".into() }]);
        let added = lesson(3, "Check the units.", None);
        let learned = Learned { remembered: Remembered::Added(added.clone()), truncated: None };
        assert_eq!(app.handle_report(ShellReport::MemoryAdded(Ok(learned))), vec![Command::MemoryList]);
        assert!(app.memory.editor.is_none());
        let mut items = app.memory.items.clone();
        items.insert(0, added);
        key(&mut app, KeyCode::Down);
        app.handle_report(ShellReport::MemoryListed(Ok(("/w/m".into(), items))));
        assert_eq!(app.memory.selected_item().map(|(item, _)| item.id), Some(3));
        // A release (some terminals send them) types nothing.
        key(&mut app, KeyCode::Char('a'));
        app.handle_key(KeyEvent::new_with_kind(KeyCode::Char('x'), KeyModifiers::NONE, KeyEventKind::Release));
        assert_eq!(app.memory.editor.as_ref().map(LessonEditor::text), Some(String::new()));
    }

    #[test]
    fn enter_opens_the_lessons_run_at_the_task_that_wrote_it_or_says_why_not() {
        let mut app = memory_app();
        assert_eq!(
            key(&mut app, KeyCode::Enter),
            vec![Command::OpenMemoryRun { run_id: "run-a".into(), seq: Some(7) }]
        );
        app.handle_report(ShellReport::MemoryRun {
            run_id: "run-a".into(),
            seq: Some(7),
            opened: Err("run run-a is no longer in /w/findings: its folder was deleted or moved".into()),
        });
        assert_eq!(app.screen, Screen::Memory);
        assert!(said(&app).1 && said(&app).0.contains("no longer"));
        // The user's own lesson has no run.
        key(&mut app, KeyCode::Down);
        assert!(key(&mut app, KeyCode::Enter).is_empty());
        assert!(said(&app).0.contains("written outside a run"), "{:?}", app.flash);

        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/smoke-events.jsonl");
        let events = crate::findings::read_events(&path).unwrap().0;
        // The event of a task other than the root: its task is selected.
        let (seq, uri) = events
            .iter()
            .filter_map(|e| event_uri(&e.body).map(|uri| (e.seq, uri)))
            .find(|(_, uri)| events.first().and_then(|e| event_uri(&e.body)) != Some(*uri))
            .unwrap();
        let opened = Ok(("/w/findings/run-a".into(), events, None));
        app.handle_report(ShellReport::MemoryRun { run_id: "run-a".into(), seq: Some(seq), opened });
        assert_eq!(app.screen, Screen::Run);
        assert_eq!(app.past.as_ref().and_then(|p| p.selected), Some(uri));
        assert_eq!(app.past.as_ref().and_then(|p| p.dir.clone()), Some(PathBuf::from("/w/findings/run-a")));
    }

    #[test]
    fn a_store_that_cannot_be_read_is_said_and_reloading_asks_again() {
        let mut app = memory_app();
        app.handle_report(ShellReport::MemoryListed(Err("the memory store x is damaged".into())));
        assert!(app.memory.items.is_empty());
        assert_eq!(app.memory.error.as_deref(), Some("the memory store x is damaged"));
        assert!(app.memory.selected_item().is_none());
        for code in [KeyCode::Char('e'), KeyCode::Char('d'), KeyCode::Enter, KeyCode::Down] {
            assert!(key(&mut app, code).is_empty());
        }
        assert_eq!(key(&mut app, KeyCode::Char('R')), vec![Command::MemoryList]);
        // Other screens still work.
        assert_eq!(key(&mut app, KeyCode::Char('4')), vec![Command::ListFindings]);
    }
}
