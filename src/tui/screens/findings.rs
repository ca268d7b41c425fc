//! The Findings screen: the past runs and matrices in `findings/`, read again while shown, and
//! the selected run's notes, saved a moment after the last keystroke; the notes' `## Lessons`
//! go to memory when the notes are saved on purpose.
//!
//! Invariants: pure. The selection stays on its run when runs come and go above it, so the
//! notes beside it are never another run's; notes are saved before another run's are opened.

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui_textarea::TextArea;

use crate::protocol::Millis;
use crate::tui::catalog::PastRun;

use super::{Focus, Outside, buffer_text};
use crate::tui::messages::Command;

/// How long notes wait after an edit before they are saved.
pub const NOTES_AUTOSAVE_MS: u64 = 700;
/// How often the Findings list is read again while it is shown (a run of another process, a
/// `troupe mcp serve` session, appears without a key).
pub const FINDINGS_REFRESH_MS: u64 = 2_000;

/// A past run's notes, saved a moment after the last keystroke.
pub struct NotesEditor {
    pub dir: PathBuf,
    pub editor: TextArea<'static>,
    pub saved: String,
    /// When the first unsaved edit was made; the shell saves when it is old enough.
    pub dirty_since: Option<Millis>,
    pub loaded: bool,
    /// The `## Lessons` last sent to memory from these notes, so leaving the editor again
    /// without changing them costs nothing.
    pub learned: Option<Vec<String>>,
}

/// The path a run folder's notes are saved to.
pub fn notes_path(dir: &Path) -> PathBuf {
    dir.join(crate::findings::NOTES_FILE)
}

/// The Findings screen's state.
pub struct FindingsScreen {
    pub runs: Vec<PastRun>,
    pub selected: usize,
    pub focus: Focus,
    /// When the list was last asked for.
    pub listed_at: Millis,
    pub notes: Option<NotesEditor>,
}

impl Default for FindingsScreen {
    fn default() -> Self {
        FindingsScreen { runs: Vec::new(), selected: 0, focus: Focus::List, listed_at: 0, notes: None }
    }
}

impl FindingsScreen {
    /// Whether keys go to the notes.
    pub fn editing(&self) -> bool {
        self.focus == Focus::Editor && self.notes.as_ref().is_some_and(|n| n.loaded)
    }

    /// The runs as the shell listed them.
    pub fn listed(&mut self, runs: Vec<PastRun>, out: &mut Outside) {
        // The selection stays on its run when runs come and go above it, so the notes open
        // beside it are never swapped for another run's.
        let selected = self.runs.get(self.selected).map(|run| run.dir.clone());
        self.runs = runs;
        let kept = selected.and_then(|dir| self.runs.iter().position(|run| run.dir == dir));
        self.selected = kept.unwrap_or(self.selected).min(self.runs.len().saturating_sub(1));
        self.load_selected_notes(out);
    }

    /// A run's notes as read from its folder: the editor opens on them, if they are still the
    /// ones waited for.
    pub fn notes_read(&mut self, dir: PathBuf, text: String) {
        if self.notes.as_ref().is_some_and(|n| n.dir == dir && !n.loaded) {
            let mut editor = TextArea::new(text.lines().map(str::to_owned).collect());
            editor.set_cursor_line_style(ratatui::style::Style::default());
            // Notes are added to: start typing where the text ends.
            editor.move_cursor(ratatui_textarea::CursorMove::Bottom);
            editor.move_cursor(ratatui_textarea::CursorMove::End);
            self.notes = Some(NotesEditor { dir, editor, saved: text, dirty_since: None, loaded: true, learned: None });
        }
    }

    /// `path` was saved with `text`: if it is the notes', they are clean unless typed into since.
    pub fn saved(&mut self, path: &Path, text: String) {
        if let Some(notes) = self.notes.as_mut().filter(|n| notes_path(&n.dir) == path) {
            if buffer_text(&notes.editor) == text {
                notes.dirty_since = None;
            }
            notes.saved = text;
        }
    }

    /// Keys on the list.
    pub fn key(&mut self, key: KeyEvent, out: &mut Outside) {
        let count = self.runs.len();
        let before = self.selected;
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(count.saturating_sub(1));
            }
            KeyCode::Enter | KeyCode::Char('o') => {
                if let Some(run) = self.runs.get(self.selected) {
                    let dir = run.dir.clone();
                    out.send(if run.matrix.is_some() {
                        Command::OpenPastMatrix { dir }
                    } else {
                        Command::OpenPastRun { dir }
                    });
                }
            }
            KeyCode::Char('e') | KeyCode::Char('n') if self.notes.as_ref().is_some_and(|n| n.loaded) => {
                self.focus = Focus::Editor;
            }
            KeyCode::Char('R') => out.send(Command::ListFindings),
            _ => {}
        }
        if self.selected != before {
            self.save_notes_now(out);
            self.learn_notes(out);
            self.load_selected_notes(out);
        }
    }

    /// Keys in the notes' editor at `now`.
    pub fn edit_key(&mut self, key: KeyEvent, now: Millis, out: &mut Outside) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if key.code == KeyCode::Esc {
            self.focus = Focus::List;
            self.save_notes_now(out);
            self.learn_notes(out);
            return;
        }
        let Some(notes) = self.notes.as_mut() else { return };
        if ctrl && key.code == KeyCode::Char('s') {
            self.save_notes_now(out);
            self.learn_notes(out);
            return;
        }
        if notes.editor.input(key) {
            notes.dirty_since.get_or_insert(now);
        }
    }

    fn load_selected_notes(&mut self, out: &mut Outside) {
        let Some(run) = self.runs.get(self.selected) else {
            self.notes = None;
            return;
        };
        if self.notes.as_ref().is_some_and(|n| n.dir == run.dir) {
            return;
        }
        self.notes = Some(NotesEditor {
            dir: run.dir.clone(),
            editor: TextArea::default(),
            saved: String::new(),
            dirty_since: None,
            loaded: false,
            learned: None,
        });
        out.send(Command::LoadNotes { dir: run.dir.clone() });
    }

    /// Saves the notes now if they have unsaved edits.
    pub fn save_notes_now(&mut self, out: &mut Outside) {
        if let Some(notes) = &mut self.notes
            && notes.dirty_since.is_some()
        {
            out.send(Command::Save { path: notes_path(&notes.dir), text: buffer_text(&notes.editor) });
            notes.dirty_since = None;
        }
    }

    /// Sends the notes' `## Lessons` to memory when they changed since last sent. Called when
    /// the notes are saved on purpose (leaving the editor, Ctrl-S, another run, quitting), not by
    /// the autosave, which would keep half-typed lessons.
    pub fn learn_notes(&mut self, out: &mut Outside) {
        let Some(notes) = self.notes.as_mut().filter(|n| n.loaded) else { return };
        let lessons = crate::findings::notes::lessons_in_notes(&buffer_text(&notes.editor));
        if lessons.is_empty() || notes.learned.as_ref() == Some(&lessons) {
            return;
        }
        notes.learned = Some(lessons.clone());
        out.send(Command::LearnNotes { dir: notes.dir.clone(), lessons });
    }

    /// Notes untouched for [`NOTES_AUTOSAVE_MS`] are saved.
    pub fn autosave(&mut self, now: Millis, out: &mut Outside) {
        if self.notes.as_ref().and_then(|n| n.dirty_since).is_some_and(|t| now.saturating_sub(t) >= NOTES_AUTOSAVE_MS) {
            self.save_notes_now(out);
        }
    }

    /// While the list is shown, it is read again every [`FINDINGS_REFRESH_MS`]; not while notes
    /// are being written, since the list is not what the user looks at then.
    pub fn refresh(&mut self, now: Millis, shown: bool, out: &mut Outside) {
        if shown && self.focus == Focus::List && now.saturating_sub(self.listed_at) >= FINDINGS_REFRESH_MS {
            self.listed_at = now;
            out.send(Command::ListFindings);
        }
    }
}
