//! The workbench's top-level state and its dispatch: which screen is up, the help, the question
//! being asked, the message line, and one state per screen ([`super::screens`]). Keys come in
//! through [`App::handle_key`] and go to the screen up; what the shell must do comes out as
//! [`Command`]s; what the shell did comes back through [`App::handle_report`] and goes to the
//! screen it is about. What involves several screens (quitting, a lesson's run opened in the
//! Run screen) is decided here.
//!
//! Invariants: no I/O, no clock, no channels: `now` is set by the shell, files are read and
//! written by the shell. The user's text lives in the screens until a save is reported done; a
//! failed save keeps it and says why. [`App::prepare_frame`] is the only place layout-dependent
//! state (scroll offsets, wrapped transcript lines) changes, so drawing only reads.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent};
use ratatui::layout::Rect;

use crate::protocol::{Event, Millis};

use super::layout::{self, Areas};
use super::matrix::MatrixEnd;
use super::messages::{Command, Prompt, Screen, ShellReport};
use super::screens::Outside;
use super::screens::agents::AgentsScreen;
use super::screens::experiments::ExperimentsScreen;
use super::screens::findings::FindingsScreen;
use super::screens::memory::{self, MemoryPane};
use super::screens::run::RunScreen;

/// Everything the workbench shows.
pub struct App {
    pub root: PathBuf,
    pub screen: Screen,
    pub now: Millis,
    pub help: bool,
    pub prompt: Option<Prompt>,
    /// A one-line message at the bottom: what just happened, or went wrong.
    pub flash: Option<(String, bool)>,
    pub run: RunScreen,
    pub agents: AgentsScreen,
    pub experiments: ExperimentsScreen,
    pub findings: FindingsScreen,
    pub memory: MemoryPane,
    pub quitting: bool,
    pub size: Rect,
}

/// Lends a screen what it may change beyond itself, borrowing `$app`'s fields one by one so the
/// screens' own fields stay free to borrow beside it.
macro_rules! outside {
    ($app:ident, $commands:expr) => {
        Outside { commands: $commands, flash: &mut $app.flash, prompt: &mut $app.prompt }
    };
}

impl App {
    pub fn new(root: PathBuf) -> Self {
        App {
            root,
            screen: Screen::Experiments,
            now: 0,
            help: false,
            prompt: None,
            flash: None,
            run: RunScreen::default(),
            agents: AgentsScreen::default(),
            experiments: ExperimentsScreen::default(),
            findings: FindingsScreen::default(),
            memory: MemoryPane::default(),
            quitting: false,
            size: Rect::new(0, 0, 80, 24),
        }
    }

    /// The regions of the current screen at `size`.
    pub fn areas(&self, size: Rect) -> Areas {
        self.areas_of(size, self.screen)
    }

    fn areas_of(&self, size: Rect, screen: Screen) -> Areas {
        layout::areas_with_panel(size, screen, self.flash.is_some(), self.run.matrix_panel_height())
    }

    fn say(&mut self, text: impl Into<String>, is_error: bool) {
        self.flash = Some((text.into(), is_error));
    }

    /// Folds in what the shell reports; may answer with commands.
    pub fn handle_report(&mut self, report: ShellReport) -> Vec<Command> {
        let mut commands = Vec::new();
        let (root, now) = (self.root.clone(), self.now);
        let out = &mut outside!(self, &mut commands);
        match report {
            ShellReport::Workbench { agents, experiments, problems } => {
                self.agents.set_files(agents, out);
                self.experiments.set(experiments, problems);
            }
            ShellReport::RunStarting { experiment } => {
                self.run.starting(experiment, out);
                self.screen = Screen::Run;
            }
            ShellReport::RunEvent(event) => self.run.event(event),
            ShellReport::RunFolder { dir } => self.run.folder(dir, &root, out),
            ShellReport::RunScored { passed, total } => self.run.scored(passed, total),
            ShellReport::RunRefused { error } => self.run.refused(error, out),
            ShellReport::RunClosed => {
                self.run.closed(&root, out);
                if self.screen == Screen::Memory {
                    // The run may have recalled lessons (their counts) or learned some.
                    self.memory.opened(out);
                }
                if self.quitting {
                    out.send(Command::Quit);
                }
            }
            ShellReport::MatrixStarting { experiment, info, fork } => {
                self.run.matrix_starting(experiment, info, fork, out);
                self.screen = Screen::Run;
            }
            ShellReport::Matrix(update) => self.run.matrix_update(update, &root, now, out),
            ShellReport::MatrixFinished { summary, complete, cancelled } => {
                self.run.matrix_finished(summary, MatrixEnd { complete, cancelled });
            }
            ShellReport::TrialEvents { key, dir, events } => self.run.trial_events(key, dir, events, out),
            ShellReport::ForkRefused { error } => {
                self.run.fork_refused(error, out);
                if self.quitting {
                    out.send(Command::Quit);
                }
            }
            ShellReport::Validated { path, version, diagnostics } => {
                self.agents.validated(path, version, diagnostics);
            }
            ShellReport::Saved { path, text } => {
                if self.agents.holds(&path) {
                    self.agents.saved(path, text, out);
                } else {
                    self.findings.saved(&path, text);
                }
            }
            ShellReport::SaveFailed { path, error } => {
                out.say(format!("not saved: {}: {error} (your text is still here)", path.display()), true);
            }
            ShellReport::Findings(runs) => self.findings.listed(runs, out),
            ShellReport::PastRun { dir, events, warning } => {
                self.run.open_past_run(dir, events, warning, out);
                self.screen = Screen::Run;
            }
            ShellReport::PastRunGrew { dir, events, offset } => self.run.past_run_grew(dir, events, offset, out),
            ShellReport::PastMatrix { dir, matrix, records } => {
                self.run.open_past_matrix(dir, matrix, records, now, out);
                self.screen = Screen::Run;
            }
            ShellReport::Notes { dir, text } => self.findings.notes_read(dir, text),
            ShellReport::MemoryListed(listed) => self.memory.listed(listed),
            ShellReport::MemorySearched { query, hits } => self.memory.searched(query, hits),
            ShellReport::MemoryEdited { id, edited } => self.memory.edited(id, edited, out),
            ShellReport::MemoryAdded(learned) => self.memory.added(learned, out),
            ShellReport::NotesLearned(Ok((added, merged))) => {
                let lessons = if added + merged == 1 { "lesson" } else { "lessons" };
                out.say(format!("kept {} {lessons} from the notes in memory ({added} new)", added + merged), false);
            }
            ShellReport::MemoryUsedIn { id, runs } => self.memory.set_used_in(id, runs),
            ShellReport::NotesLearned(Err(error)) => {
                out.say(format!("the notes' lessons were not kept in memory: {error}"), true);
            }
            ShellReport::MemoryForgotten { id, forgotten } => self.memory.forgotten(id, forgotten, out),
            ShellReport::MemoryRun { run_id, seq, opened } => self.lesson_run(run_id, seq, opened, &mut commands),
            ShellReport::Status(text) => out.say(text, false),
        }
        commands
    }

    /// The run a lesson came from, read back from its folder (or why not): shown in the Run
    /// screen with the task that wrote the lesson selected.
    fn lesson_run(
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
        let uri = memory::source_task(seq, &events);
        self.run.open_past_run(dir, events, warning.clone(), &mut outside!(self, commands));
        self.screen = Screen::Run;
        if let Some(uri) = uri {
            self.run.select_in_past(uri);
        }
        if warning.is_none() {
            let at = seq.map(|seq| format!(", event {seq}")).unwrap_or_default();
            self.say(format!("run {run_id}{at}: the lesson's source (Esc goes back)"), false);
        }
    }

    /// Commands for a pressed key.
    pub fn handle_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let mut commands = Vec::new();
        if key.kind == KeyEventKind::Release {
            return commands;
        }
        if let Some(prompt) = self.prompt.take() {
            self.answer(prompt, key, &mut commands);
            return commands;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            self.ask_quit(&mut commands);
            return commands;
        }
        if self.help {
            self.help = false;
            return commands;
        }
        if self.editing() {
            self.edit_key(key, &mut commands);
            return commands;
        }
        match key.code {
            KeyCode::Char('q') => self.ask_quit(&mut commands),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => self.switch(self.screen_offset(1), &mut commands),
            KeyCode::BackTab => self.switch(self.screen_offset(Screen::ALL.len() - 1), &mut commands),
            KeyCode::Char(c @ '1'..='5') => {
                let screen = Screen::ALL[(c as u8 - b'1') as usize];
                self.switch(screen, &mut commands);
            }
            _ => self.screen_key(key, &mut commands),
        }
        commands
    }

    /// A key for the screen up, once the app's own keys are ruled out.
    fn screen_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        let (tree_height, transcript_height) = (self.tree_height(), self.transcript_height());
        let selected_experiment = self.experiments.selected_name();
        let out = &mut outside!(self, commands);
        match self.screen {
            Screen::Run => self.run.key(key, tree_height, transcript_height, selected_experiment, out),
            Screen::Agents => self.agents.key(key, &self.root, out),
            Screen::Experiments => self.experiments.key(key, self.run.running, out),
            Screen::Findings => self.findings.key(key, out),
            Screen::Memory => self.memory.key(key, out),
        }
    }

    /// Whether keys go to a text editor.
    pub fn editing(&self) -> bool {
        match self.screen {
            Screen::Agents => self.agents.editing(),
            Screen::Findings => self.findings.editing(),
            Screen::Memory => self.memory.takes_text(),
            Screen::Run | Screen::Experiments => false,
        }
    }

    fn edit_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        let out = &mut outside!(self, commands);
        match self.screen {
            Screen::Agents => self.agents.edit_key(key, out),
            Screen::Findings => self.findings.edit_key(key, self.now, out),
            Screen::Memory => self.memory.text_key(key, out),
            Screen::Run | Screen::Experiments => {}
        }
    }

    fn screen_offset(&self, by: usize) -> Screen {
        let at = Screen::ALL.iter().position(|&s| s == self.screen).unwrap_or(0);
        Screen::ALL[(at + by) % Screen::ALL.len()]
    }

    fn switch(&mut self, screen: Screen, commands: &mut Vec<Command>) {
        if screen == Screen::Findings && self.screen != Screen::Findings {
            commands.push(Command::ListFindings);
        }
        if screen == Screen::Memory && self.screen != Screen::Memory {
            self.memory.opened(&mut outside!(self, commands));
        }
        self.screen = screen;
    }

    fn ask_quit(&mut self, commands: &mut Vec<Command>) {
        let mut unsaved = self.agents.unsaved();
        if let Some(editor) = self.memory.editor.as_ref().filter(|e| e.is_dirty()) {
            unsaved.push(editor.name());
        }
        if self.run.running {
            self.prompt = Some(Prompt::QuitWhileRunning);
        } else if !unsaved.is_empty() {
            self.prompt = Some(Prompt::QuitUnsaved { files: unsaved });
        } else {
            self.quit(commands);
        }
    }

    fn quit(&mut self, commands: &mut Vec<Command>) {
        let out = &mut outside!(self, commands);
        self.findings.save_notes_now(out);
        self.findings.learn_notes(out);
        out.send(Command::Quit);
    }

    fn answer(&mut self, prompt: Prompt, key: KeyEvent, commands: &mut Vec<Command>) {
        let yes = matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y'));
        if !yes {
            self.say("never mind", false);
            return;
        }
        let out = &mut outside!(self, commands);
        match prompt {
            Prompt::CancelSubtree { uri, .. } => out.send(Command::CancelTask { uri }),
            Prompt::CancelMatrix { .. } => {
                out.send(Command::CancelRun);
                out.say("cancelling the matrix; finished trials are kept…", false);
            }
            Prompt::SaveInvalid { path, .. } => self.agents.save_anyway(path, out),
            Prompt::QuitWhileRunning => {
                // The run is cancelled; quitting waits for its findings (RunClosed).
                self.quitting = true;
                self.findings.save_notes_now(out);
                out.send(Command::CancelRun);
                out.say("cancelling the run; quitting once its findings are written…", false);
            }
            Prompt::QuitUnsaved { .. } => self.quit(commands),
            prompt @ (Prompt::ForgetLesson { .. } | Prompt::DiscardLesson { .. }) => self.memory.answer(prompt, out),
        }
    }

    /// Called by the shell on every tick: notes untouched for a moment are saved, a past run
    /// still being written and the Findings list are read again.
    pub fn tick(&mut self, now: Millis) -> Vec<Command> {
        self.now = now;
        let mut commands = Vec::new();
        let out = &mut outside!(self, &mut commands);
        self.findings.autosave(now, out);
        self.run.tick(now, out);
        self.findings.refresh(now, self.screen == Screen::Findings, out);
        // The detail pane follows the selection within a tick, whatever moved it.
        if self.screen == Screen::Memory
            && let Some(id) = self.memory.want_used_in()
        {
            out.send(Command::MemoryUsedIn { id });
        }
        commands
    }

    /// Mouse: a click selects a row or a list item; the wheel scrolls what is under it.
    pub fn handle_mouse(&mut self, mouse: MouseEvent) -> Vec<Command> {
        if self.screen == Screen::Run {
            let areas = self.areas(self.size);
            let height = self.transcript_height();
            self.run.mouse(mouse, &areas, height);
        }
        Vec::new()
    }

    fn transcript_height(&self) -> usize {
        self.areas_of(self.size, Screen::Run).detail.height.saturating_sub(2) as usize
    }

    fn tree_height(&self) -> usize {
        self.areas_of(self.size, Screen::Run).list.height.saturating_sub(2) as usize
    }

    /// Settles everything that depends on the frame's size, so drawing only reads.
    pub fn prepare_frame(&mut self, size: Rect) {
        self.size = size;
        let Areas { list, detail, .. } = self.areas_of(size, Screen::Run);
        self.run.prepare(list.height.saturating_sub(2) as usize, detail.width.saturating_sub(2));
    }
}

#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod tests;
