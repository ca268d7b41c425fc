//! The Agents screen: the workbench's `agents/*.toml` in editors, checked as they are typed;
//! new experts from a template or a copy; saving (asking first when the file is invalid).
//!
//! Invariants: pure. The user's text stays here until the shell reports it saved; a file read
//! again from disk never replaces a buffer with unsaved changes; a late check of older text is
//! ignored (`version`).

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui_textarea::TextArea;

use crate::config::{Diagnostic, Severity};

use super::{Focus, Outside, buffer_text};
use crate::tui::messages::{AgentFileText, Command, Prompt};

/// An agent file open in the editor.
pub struct AgentEditor {
    pub path: PathBuf,
    pub editor: TextArea<'static>,
    /// What is on disk, as far as troupe knows.
    pub saved: String,
    /// Bumped on every change, so a late validation of older text is ignored.
    pub version: u64,
    pub validated: u64,
    pub diagnostics: Vec<Diagnostic>,
}

impl AgentEditor {
    fn new(path: PathBuf, text: String, saved: Option<String>) -> Self {
        let mut editor = TextArea::new(text.lines().map(str::to_owned).collect());
        editor.set_line_number_style(ratatui::style::Style::default().fg(ratatui::style::Color::DarkGray));
        AgentEditor {
            path,
            editor,
            saved: saved.unwrap_or_default(),
            version: 1,
            validated: 0,
            diagnostics: Vec::new(),
        }
    }

    pub fn text(&self) -> String {
        buffer_text(&self.editor)
    }

    pub fn is_dirty(&self) -> bool {
        self.text() != self.saved
    }

    pub fn name(&self) -> String {
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }

    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }
}

/// The Agents screen's state.
pub struct AgentsScreen {
    /// The open files, sorted by path.
    pub files: Vec<AgentEditor>,
    pub selected: usize,
    pub focus: Focus,
}

impl Default for AgentsScreen {
    fn default() -> Self {
        AgentsScreen { files: Vec::new(), selected: 0, focus: Focus::List }
    }
}

impl AgentsScreen {
    /// Whether keys go to the editor.
    pub fn editing(&self) -> bool {
        self.focus == Focus::Editor && !self.files.is_empty()
    }

    /// The names of the files with unsaved changes.
    pub fn unsaved(&self) -> Vec<String> {
        self.files.iter().filter(|a| a.is_dirty()).map(AgentEditor::name).collect()
    }

    /// The agent files as the shell read them; each is checked again.
    pub fn set_files(&mut self, files: Vec<AgentFileText>, out: &mut Outside) {
        for file in files {
            match self.files.iter_mut().find(|a| a.path == file.path) {
                // Never replace what the user is typing with what is on disk.
                Some(open) if open.is_dirty() => {}
                Some(open) => {
                    *open = AgentEditor::new(file.path, file.text.clone(), Some(file.text));
                }
                None => self.files.push(AgentEditor::new(file.path, file.text.clone(), Some(file.text))),
            }
        }
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        for file in &self.files {
            out.send(Command::Validate { path: file.path.clone(), text: file.text(), version: file.version });
        }
    }

    pub fn validated(&mut self, path: PathBuf, version: u64, diagnostics: Vec<Diagnostic>) {
        if let Some(file) = self.files.iter_mut().find(|f| f.path == path)
            && version >= file.validated
        {
            file.validated = version;
            file.diagnostics = diagnostics;
        }
    }

    /// Whether `path` is one of the open files.
    pub fn holds(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f.path == path)
    }

    /// `path` was saved with `text`.
    pub fn saved(&mut self, path: PathBuf, text: String, out: &mut Outside) {
        if let Some(file) = self.files.iter_mut().find(|f| f.path == path) {
            file.saved = text;
            out.say(format!("saved {}", path.display()), false);
        }
    }

    /// `y` to saving `path` although it may be invalid.
    pub fn save_anyway(&mut self, path: PathBuf, out: &mut Outside) {
        if let Some(file) = self.files.iter().find(|a| a.path == path) {
            out.send(Command::Save { path, text: file.text() });
        }
    }

    /// Keys on the list; `root` is the workbench's folder.
    pub fn key(&mut self, key: KeyEvent, root: &Path, out: &mut Outside) {
        let count = self.files.len();
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(count.saturating_sub(1)),
            KeyCode::Enter | KeyCode::Char('e') if count > 0 => self.focus = Focus::Editor,
            KeyCode::Char('n') => self.new_agent(None, root, out),
            KeyCode::Char('d') => {
                if let Some(file) = self.files.get(self.selected) {
                    let text = file.text();
                    let base = file.name();
                    self.new_agent(Some((base, text)), root, out);
                }
            }
            KeyCode::Char('s') => self.save(out),
            _ => {}
        }
    }

    /// Keys in the editor: each change is checked at once.
    pub fn edit_key(&mut self, key: KeyEvent, out: &mut Outside) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if key.code == KeyCode::Esc {
            self.focus = Focus::List;
            return;
        }
        if ctrl && key.code == KeyCode::Char('s') {
            self.save(out);
            return;
        }
        let Some(file) = self.files.get_mut(self.selected) else { return };
        if file.editor.input(key) {
            file.version += 1;
            out.send(Command::Validate { path: file.path.clone(), text: file.text(), version: file.version });
        }
    }

    /// A new expert from the template, or a copy of `source`; it exists on disk once saved.
    fn new_agent(&mut self, source: Option<(String, String)>, root: &Path, out: &mut Outside) {
        let base = source.as_ref().map_or_else(|| "expert".to_owned(), |(name, _)| format!("{name}-copy"));
        let dir = root.join("agents");
        // The shell lists every agents/*.toml, so the names in hand are all the taken ones.
        let taken = |name: &str| self.files.iter().any(|a| a.name() == name);
        let name = (1..)
            .map(|n| if n == 1 && source.is_some() { base.clone() } else { format!("{base}-{n}") })
            .find(|name| !taken(name))
            .unwrap_or(base);
        let text = match source {
            Some((_, text)) => rename_agent(&text, &name),
            None => template(&name),
        };
        let path = dir.join(format!("{name}.toml"));
        let editor = AgentEditor::new(path.clone(), text.clone(), None);
        out.send(Command::Validate { path: path.clone(), text, version: editor.version });
        self.files.push(editor);
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        self.selected = self.files.iter().position(|a| a.path == path).unwrap_or(0);
        self.focus = Focus::Editor;
        out.say(format!("new expert {name}: edit, then Ctrl-S to save it as agents/{name}.toml"), false);
    }

    fn save(&mut self, out: &mut Outside) {
        let Some(file) = self.files.get(self.selected) else { return };
        let errors = file.errors();
        // A buffer changed since its last check may be invalid too: ask, since we cannot tell.
        if errors > 0 || file.validated < file.version {
            out.ask(Prompt::SaveInvalid { path: file.path.clone(), errors });
        } else {
            out.send(Command::Save { path: file.path.clone(), text: file.text() });
        }
    }
}

/// The text of a new expert.
fn template(name: &str) -> String {
    format!(
        r#"name = "{name}"
description = "What this expert is good at, in one line (other agents read it)"
model = "small"
temperature = 0.0
max_turns = 4
# Built-in tools: call_agent, call_slm, get_task_status, cancel_task, list_tasks
tools = []
experts = []
system_prompt = """
You are {name}. Say who you are and how you work.
"""
"#
    )
}

/// `text` with its `name = "..."` line naming `name`.
fn rename_agent(text: &str, name: &str) -> String {
    let mut renamed = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|line| {
            if !renamed && line.trim_start().starts_with("name") && line.contains('=') {
                renamed = true;
                format!("name = \"{name}\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !renamed {
        out.insert(0, format!("name = \"{name}\""));
    }
    let mut joined = out.join("\n");
    joined.push('\n');
    joined
}
