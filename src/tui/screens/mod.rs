//! The workbench's screens, one module each: its state, its keys and the shell reports it folds
//! in. [`crate::tui::app`] owns which screen is up and routes keys and reports here; a screen
//! never reaches another screen or the app, only what [`Outside`] lends it.
//!
//! Invariants: pure, like the app (no I/O, no clock, no channels): time and the workbench's
//! folder come in as arguments, what the shell must do goes out as [`Command`]s.

pub mod agents;
pub mod experiments;
pub mod findings;
pub mod memory;
pub mod run;

use ratatui_textarea::TextArea;

use super::messages::{Command, Prompt};

/// Which part of a screen takes keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    List,
    Editor,
}

/// What a screen's keys and reports may change beyond the screen itself, lent by the app for
/// one call: the commands for the shell, the message line and the question to the user.
pub struct Outside<'a> {
    pub commands: &'a mut Vec<Command>,
    pub flash: &'a mut Option<(String, bool)>,
    pub prompt: &'a mut Option<Prompt>,
}

impl Outside<'_> {
    /// Says `text` on the message line (in red when `is_error`), replacing what was said.
    pub fn say(&mut self, text: impl Into<String>, is_error: bool) {
        *self.flash = Some((text.into(), is_error));
    }

    /// Asks the user `prompt`; nothing else takes keys until it is answered.
    pub fn ask(&mut self, prompt: Prompt) {
        *self.prompt = Some(prompt);
    }

    pub fn send(&mut self, command: Command) {
        self.commands.push(command);
    }
}

/// An editor's text as a file holds it: lines joined, ending with a newline.
pub(crate) fn buffer_text(editor: &TextArea<'_>) -> String {
    let mut text = editor.lines().join("\n");
    text.push('\n');
    text
}
