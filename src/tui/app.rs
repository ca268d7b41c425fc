//! The workbench's state and how it reacts: which screen is up, what is selected, the editors'
//! buffers, the question being asked. Keys come in through [`App::handle_key`]; what the shell
//! must do comes out as [`Command`]s; what the shell did comes back through [`App::handle_report`].
//!
//! Invariants: no I/O, no clock, no channels: `now` is set by the shell, files are read and
//! written by the shell. The user's text lives here until a save is reported done; a failed
//! save keeps it and says why. [`App::prepare_frame`] is the only place layout-dependent state
//! (scroll offsets, wrapped transcript lines) changes, so drawing only reads.

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};
use ratatui_textarea::TextArea;

use crate::config::{Diagnostic, Severity};
use crate::experiment::runner::MatrixUpdate;
use crate::findings::PastRun;
use crate::protocol::{EventBody, Millis, TaskId, TaskStatus};

use super::layout::{self, Areas};
use super::matrix::{MatrixEnd, MatrixPane};
use super::memory::MemoryPane;
use super::messages::{AgentFileText, Command, ExperimentItem, FORK_REPETITIONS, Prompt, Screen, ShellReport};
use super::transcript::{self, Line};
use super::tree::RunView;

/// A run on the Run screen, live or replayed.
#[derive(Debug, Default)]
pub struct RunPane {
    pub view: RunView,
    pub selected: Option<TaskId>,
    /// The first visible tree row.
    pub tree_top: usize,
    /// Follow the end of the transcript; off once the user scrolls up.
    pub follow: bool,
    /// The first visible transcript line when not following.
    pub transcript_top: usize,
    /// The selected task's finished entries, wrapped to the pane's width by `prepare_frame`.
    pub lines: Vec<Line>,
    lines_key: Option<(TaskId, usize, u16)>,
    /// Its text still streaming, wrapped apart so a delta does not re-wrap the conversation.
    pub streaming_lines: Vec<Line>,
    streaming_key: Option<(TaskId, usize, u16)>,
    pub dir: Option<PathBuf>,
    /// Checks passed and run, once the run is scored.
    pub checks: Option<(usize, usize)>,
    /// A past run another process is still writing (no `run_finished` yet): followed until it
    /// ends.
    pub tail: Option<Tail>,
}

/// Following a run folder's `events.jsonl` as another process appends to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// Where the next read starts; 0 until the first read, which skips what was replayed.
    pub offset: u64,
    /// The last event shown: a read from the start skips up to it.
    pub last_seq: Option<u64>,
    /// A read was asked for and has not come back.
    pub asked: bool,
    pub asked_at: Millis,
}

impl RunPane {
    pub(crate) fn new() -> Self {
        RunPane { follow: true, ..RunPane::default() }
    }

    fn select_row(&mut self, row: usize) {
        if let Some(r) = self.view.rows().get(row) {
            self.selected = Some(self.view.nodes()[r.node].uri);
            self.follow = true;
        }
    }

    fn selected_row(&self) -> Option<usize> {
        self.selected.and_then(|uri| self.view.row_of(uri))
    }

    fn move_selection(&mut self, by: isize) {
        let rows = self.view.rows().len();
        if rows == 0 {
            return;
        }
        let at = self.selected_row().unwrap_or(0) as isize;
        self.select_row((at + by).clamp(0, rows as isize - 1) as usize);
    }

    fn jump(&mut self, wanted: impl Fn(TaskStatus) -> bool) -> bool {
        let Some(uri) = self.view.next_with(self.selected, wanted) else { return false };
        self.view.reveal(uri);
        self.view.refresh();
        self.selected = Some(uri);
        self.follow = true;
        true
    }

    /// Transcript lines in all: the finished entries, then the streaming text.
    pub fn line_count(&self) -> usize {
        self.lines.len() + self.streaming_lines.len()
    }

    /// The transcript's lines from `first`, at most `height` of them.
    pub fn visible_lines(&self, first: usize, height: usize) -> impl Iterator<Item = &Line> {
        self.lines.iter().chain(&self.streaming_lines).skip(first).take(height)
    }

    fn scroll_transcript(&mut self, by: isize, height: usize) {
        let max_top = self.line_count().saturating_sub(height);
        let top = if self.follow { max_top } else { self.transcript_top.min(max_top) };
        let next = (top as isize + by).clamp(0, max_top as isize) as usize;
        self.transcript_top = next;
        self.follow = next >= max_top;
    }

    /// The first transcript line shown for a pane `height` lines tall.
    pub fn transcript_first(&self, height: usize) -> usize {
        let max_top = self.line_count().saturating_sub(height);
        if self.follow { max_top } else { self.transcript_top.min(max_top) }
    }
}

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

/// How long notes wait after an edit before they are saved.
pub const NOTES_AUTOSAVE_MS: u64 = 700;
/// How often a past run that is still being written is read for new events.
pub const FOLLOW_MS: u64 = 500;
/// How often the Findings list is read again while it is shown (a run of another process, a
/// `troupe mcp serve` session, appears without a key).
pub const FINDINGS_REFRESH_MS: u64 = 2_000;

/// Which part of a screen takes keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    List,
    Editor,
}

/// Everything the workbench shows.
pub struct App {
    pub root: PathBuf,
    pub screen: Screen,
    pub now: Millis,
    pub help: bool,
    pub prompt: Option<Prompt>,
    /// A one-line message at the bottom: what just happened, or went wrong.
    pub flash: Option<(String, bool)>,
    pub live: Option<RunPane>,
    /// The last run when it is a matrix (then `live` is `None`): one trial shown at a time.
    pub matrix: Option<MatrixPane>,
    /// A past run opened from Findings; the Run screen shows it instead of the live one.
    pub past: Option<RunPane>,
    /// A past matrix opened from Findings, shown like `past`; at most one of the two is set.
    pub past_matrix: Option<MatrixPane>,
    /// A live run is starting or working.
    pub running: bool,
    pub last_experiment: Option<String>,
    pub agents: Vec<AgentEditor>,
    pub agent_selected: usize,
    pub agents_focus: Focus,
    pub experiments: Vec<ExperimentItem>,
    pub experiment_selected: usize,
    pub findings: Vec<PastRun>,
    pub finding_selected: usize,
    pub findings_focus: Focus,
    /// When the Findings list was last asked for.
    pub findings_listed_at: Millis,
    pub notes: Option<NotesEditor>,
    pub workbench_problems: Vec<String>,
    pub memory: MemoryPane,
    pub quitting: bool,
    pub size: Rect,
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
            live: None,
            matrix: None,
            past: None,
            past_matrix: None,
            running: false,
            last_experiment: None,
            agents: Vec::new(),
            agent_selected: 0,
            agents_focus: Focus::List,
            experiments: Vec::new(),
            experiment_selected: 0,
            findings: Vec::new(),
            finding_selected: 0,
            findings_focus: Focus::List,
            findings_listed_at: 0,
            notes: None,
            workbench_problems: Vec::new(),
            memory: MemoryPane::default(),
            quitting: false,
            size: Rect::new(0, 0, 80, 24),
        }
    }

    /// The run the Run screen shows (for a matrix, its shown trial).
    pub fn shown_run(&self) -> Option<&RunPane> {
        match (&self.past, self.shown_matrix()) {
            (Some(past), _) => Some(past),
            (None, Some(matrix)) => matrix.shown_pane(),
            (None, None) => self.live.as_ref(),
        }
    }

    fn shown_run_mut(&mut self) -> Option<&mut RunPane> {
        match (&mut self.past, &mut self.past_matrix, &mut self.matrix) {
            (Some(past), _, _) => Some(past),
            (None, Some(matrix), _) | (None, None, Some(matrix)) => matrix.shown_pane_mut(),
            (None, None, None) => self.live.as_mut(),
        }
    }

    /// The matrix the Run screen shows, if it shows one: a past one opened from Findings over
    /// the last live one.
    pub fn shown_matrix(&self) -> Option<&MatrixPane> {
        if self.past.is_some() { None } else { self.past_matrix.as_ref().or(self.matrix.as_ref()) }
    }

    fn shown_matrix_mut(&mut self) -> Option<&mut MatrixPane> {
        if self.past.is_some() { None } else { self.past_matrix.as_mut().or(self.matrix.as_mut()) }
    }

    /// Whether the Run screen shows something opened from Findings rather than the live run.
    pub fn shows_past(&self) -> bool {
        self.past.is_some() || self.past_matrix.is_some()
    }

    /// The regions of the current screen at `size`.
    pub fn areas(&self, size: Rect) -> Areas {
        self.areas_of(size, self.screen)
    }

    fn areas_of(&self, size: Rect, screen: Screen) -> Areas {
        layout::areas_with_panel(size, screen, self.flash.is_some(), self.matrix_panel_height())
    }

    /// The comparison panel's height: a row per variant under a heading, in a border.
    fn matrix_panel_height(&self) -> u16 {
        self.shown_matrix().map_or(0, |m| (m.summary.variants.len() + 1).clamp(2, 8) as u16 + 2)
    }

    pub(super) fn say(&mut self, text: impl Into<String>, is_error: bool) {
        self.flash = Some((text.into(), is_error));
    }

    /// Folds in what the shell reports; may answer with commands.
    pub fn handle_report(&mut self, report: ShellReport) -> Vec<Command> {
        let mut commands = Vec::new();
        match report {
            ShellReport::Workbench { agents, experiments, problems } => {
                self.set_agent_files(agents, &mut commands);
                self.experiments = experiments;
                self.experiment_selected = self.experiment_selected.min(self.experiments.len().saturating_sub(1));
                self.workbench_problems = problems;
            }
            ShellReport::RunStarting { experiment } => {
                self.live = Some(RunPane::new());
                self.matrix = None;
                self.past = None;
                self.past_matrix = None;
                self.running = true;
                self.screen = Screen::Run;
                self.say(format!("starting {experiment}…"), false);
                self.last_experiment = Some(experiment);
            }
            ShellReport::RunEvent(event) => {
                if let Some(live) = &mut self.live {
                    live.view.apply(&event);
                    if live.selected.is_none() {
                        live.selected = live.view.nodes().first().map(|n| n.uri);
                    }
                }
            }
            ShellReport::RunFolder { dir } => {
                let shown = dir.strip_prefix(&self.root).unwrap_or(&dir).display().to_string();
                self.say(format!("recording to {shown}"), false);
                if let Some(live) = &mut self.live {
                    live.dir = Some(dir);
                }
            }
            ShellReport::RunScored { passed, total } => {
                if let Some(live) = &mut self.live {
                    live.checks = Some((passed, total));
                }
            }
            ShellReport::RunRefused { error } => {
                self.running = false;
                self.live = None;
                // A matrix that got as far as running trials keeps them on screen.
                if let Some(matrix) = &mut self.matrix {
                    if matrix.trials.is_empty() {
                        self.matrix = None;
                    } else {
                        matrix.fail(error.clone());
                    }
                }
                self.say(error, true);
            }
            ShellReport::RunClosed => {
                self.running = false;
                match (&self.matrix, &self.live) {
                    // Why it failed was said, and stays.
                    (Some(matrix), _) if matrix.error.is_some() => {}
                    (Some(matrix), _) => {
                        let text = matrix_closed(matrix, &self.root);
                        self.say(text, false);
                    }
                    // Refused: its error stays.
                    (None, None) => {}
                    (None, Some(live)) => {
                        let outcome = live.view.end.as_ref().map_or("ended", |end| end.status.as_str());
                        let checks = live
                            .checks
                            .map_or_else(String::new, |(passed, total)| format!("; {passed} of {total} checks passed"));
                        self.say(format!("run {outcome}{checks}; findings written"), false);
                    }
                }
                commands.push(Command::ListFindings);
                if self.screen == Screen::Memory {
                    // The run may have recalled lessons (their counts) or learned some.
                    self.memory_opened(&mut commands);
                }
                if self.quitting {
                    commands.push(Command::Quit);
                }
            }
            ShellReport::MatrixStarting { experiment, info, fork } => {
                self.live = None;
                self.past = None;
                self.past_matrix = None;
                self.running = true;
                self.screen = Screen::Run;
                let text = match &fork {
                    Some(fork) => format!(
                        "forking {} ({}) on {}: {} trials of its original setup",
                        fork.agent, fork.uri, fork.model, info.trials
                    ),
                    None => format!("starting {experiment}: a matrix of {} trials…", info.trials),
                };
                self.say(text, false);
                if fork.is_none() {
                    self.last_experiment = Some(experiment.clone());
                }
                self.matrix = Some(MatrixPane::new(experiment, info, fork));
            }
            ShellReport::Matrix(update) => {
                match &update {
                    MatrixUpdate::Status(line) => self.say(line.clone(), false),
                    MatrixUpdate::Planned { dir, total, concurrency, .. } => {
                        let shown = dir.strip_prefix(&self.root).unwrap_or(dir).display().to_string();
                        self.say(format!("{total} trials, {concurrency} at a time; recording to {shown}"), false);
                    }
                    _ => {}
                }
                if let Some(matrix) = &mut self.matrix {
                    matrix.apply(update, self.now);
                }
            }
            ShellReport::MatrixFinished { summary, complete, cancelled } => {
                if let Some(matrix) = &mut self.matrix {
                    matrix.finish(summary, MatrixEnd { complete, cancelled });
                }
            }
            ShellReport::TrialEvents { key, dir, events } => {
                // A past matrix and the live one may share keys (the same experiment), and a
                // past matrix closed meanwhile awaits nothing: the folder tells whose they are.
                // Both wait for it when the past matrix is the live one, opened from Findings.
                let mut waiting: Vec<&mut MatrixPane> = [self.past_matrix.as_mut(), self.matrix.as_mut()]
                    .into_iter()
                    .flatten()
                    .filter(|matrix| matrix.awaits(&key, &dir))
                    .collect();
                let error = events.as_ref().err().map(|error| format!("cannot read trial {key} back: {error}"));
                if let Some(last) = waiting.pop() {
                    for matrix in waiting {
                        matrix.loaded(&key, events.clone());
                    }
                    last.loaded(&key, events);
                    if let Some(error) = error {
                        self.say(error, true);
                    }
                }
            }
            ShellReport::ForkRefused { error } => {
                self.running = false;
                self.say(error, true);
                if self.quitting {
                    commands.push(Command::Quit);
                }
            }
            ShellReport::Validated { path, version, diagnostics } => {
                if let Some(file) = self.agents.iter_mut().find(|f| f.path == path)
                    && version >= file.validated
                {
                    file.validated = version;
                    file.diagnostics = diagnostics;
                }
            }
            ShellReport::Saved { path, text } => {
                if let Some(file) = self.agents.iter_mut().find(|f| f.path == path) {
                    file.saved = text;
                    self.say(format!("saved {}", path.display()), false);
                } else if let Some(notes) = self.notes.as_mut().filter(|n| notes_path(&n.dir) == path) {
                    if buffer_text(&notes.editor) == text {
                        notes.dirty_since = None;
                    }
                    notes.saved = text;
                }
            }
            ShellReport::SaveFailed { path, error } => {
                self.say(format!("not saved: {}: {error} (your text is still here)", path.display()), true);
            }
            ShellReport::Findings(runs) => {
                // The selection stays on its run when runs come and go above it, so the notes
                // open beside it are never swapped for another run's.
                let selected = self.findings.get(self.finding_selected).map(|run| run.dir.clone());
                self.findings = runs;
                let kept = selected.and_then(|dir| self.findings.iter().position(|run| run.dir == dir));
                self.finding_selected =
                    kept.unwrap_or(self.finding_selected).min(self.findings.len().saturating_sub(1));
                self.load_selected_notes(&mut commands);
            }
            ShellReport::PastRun { dir, events, warning } => {
                let mut pane = RunPane::new();
                pane.view = RunView::replay(&events);
                pane.selected = pane.view.nodes().first().map(|n| n.uri);
                if !events.iter().any(|e| matches!(e.body, EventBody::RunFinished { .. })) {
                    pane.tail = Some(Tail { last_seq: events.last().map(|e| e.seq), ..Tail::default() });
                }
                pane.dir = Some(dir);
                self.past = Some(pane);
                self.past_matrix = None;
                self.screen = Screen::Run;
                if let Some(warning) = warning {
                    self.say(warning, true);
                }
            }
            ShellReport::PastRunGrew { dir, events, offset } => {
                let Some(pane) = self.past.as_mut().filter(|pane| pane.dir.as_deref() == Some(dir.as_path())) else {
                    return commands;
                };
                let Some(tail) = pane.tail.as_mut() else { return commands };
                tail.asked = false;
                tail.offset = offset;
                let mut ended = false;
                let shown = tail.last_seq;
                for event in events.iter().filter(|e| shown.is_none_or(|last| e.seq > last)) {
                    pane.view.apply(event);
                    tail.last_seq = Some(event.seq);
                    ended |= matches!(event.body, EventBody::RunFinished { .. });
                }
                if pane.selected.is_none() {
                    pane.selected = pane.view.nodes().first().map(|n| n.uri);
                }
                if ended {
                    pane.tail = None;
                    commands.push(Command::ListFindings);
                }
            }
            ShellReport::PastMatrix { dir, matrix, records } => {
                let mut pane = MatrixPane::recorded(dir, matrix, records, self.now);
                if let Some((key, dir)) = pane.step(0) {
                    commands.push(Command::LoadTrial { key, dir });
                }
                self.past_matrix = Some(pane);
                self.past = None;
                self.screen = Screen::Run;
            }
            ShellReport::Notes { dir, text } => {
                if self.notes.as_ref().is_some_and(|n| n.dir == dir && !n.loaded) {
                    let mut editor = TextArea::new(text.lines().map(str::to_owned).collect());
                    editor.set_cursor_line_style(ratatui::style::Style::default());
                    // Notes are added to: start typing where the text ends.
                    editor.move_cursor(ratatui_textarea::CursorMove::Bottom);
                    editor.move_cursor(ratatui_textarea::CursorMove::End);
                    self.notes =
                        Some(NotesEditor { dir, editor, saved: text, dirty_since: None, loaded: true, learned: None });
                }
            }
            ShellReport::MemoryListed(listed) => self.memory_listed(listed),
            ShellReport::MemorySearched { query, hits } => self.memory_searched(query, hits),
            ShellReport::MemoryEdited { id, edited } => self.memory_edited(id, edited, &mut commands),
            ShellReport::MemoryAdded(learned) => self.memory_added(learned, &mut commands),
            ShellReport::NotesLearned(Ok((added, merged))) => {
                let lessons = if added + merged == 1 { "lesson" } else { "lessons" };
                self.say(format!("kept {} {lessons} from the notes in memory ({added} new)", added + merged), false);
            }
            ShellReport::MemoryUsedIn { id, runs } => self.memory.set_used_in(id, runs),
            ShellReport::NotesLearned(Err(error)) => {
                self.say(format!("the notes' lessons were not kept in memory: {error}"), true);
            }
            ShellReport::MemoryForgotten { id, forgotten } => self.memory_forgotten(id, forgotten, &mut commands),
            ShellReport::MemoryRun { run_id, seq, opened } => self.memory_run(run_id, seq, opened, &mut commands),
            ShellReport::Status(text) => self.say(text, false),
        }
        commands
    }

    fn set_agent_files(&mut self, files: Vec<AgentFileText>, commands: &mut Vec<Command>) {
        for file in files {
            match self.agents.iter_mut().find(|a| a.path == file.path) {
                // Never replace what the user is typing with what is on disk.
                Some(open) if open.is_dirty() => {}
                Some(open) => {
                    *open = AgentEditor::new(file.path, file.text.clone(), Some(file.text));
                }
                None => self.agents.push(AgentEditor::new(file.path, file.text.clone(), Some(file.text))),
            }
        }
        self.agents.sort_by(|a, b| a.path.cmp(&b.path));
        for file in &self.agents {
            commands.push(Command::Validate { path: file.path.clone(), text: file.text(), version: file.version });
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
            _ => match self.screen {
                Screen::Run => self.run_key(key, &mut commands),
                Screen::Agents => self.agents_key(key, &mut commands),
                Screen::Experiments => self.experiments_key(key, &mut commands),
                Screen::Findings => self.findings_key(key, &mut commands),
                Screen::Memory => self.memory_key(key, &mut commands),
            },
        }
        commands
    }

    /// Whether keys go to a text editor.
    pub fn editing(&self) -> bool {
        match self.screen {
            Screen::Agents => self.agents_focus == Focus::Editor && !self.agents.is_empty(),
            Screen::Findings => self.findings_focus == Focus::Editor && self.notes.as_ref().is_some_and(|n| n.loaded),
            Screen::Memory => self.memory.takes_text(),
            Screen::Run | Screen::Experiments => false,
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
            self.memory_opened(commands);
        }
        self.screen = screen;
    }

    fn ask_quit(&mut self, commands: &mut Vec<Command>) {
        let mut unsaved: Vec<String> = self.agents.iter().filter(|a| a.is_dirty()).map(AgentEditor::name).collect();
        if let Some(editor) = self.memory.editor.as_ref().filter(|e| e.is_dirty()) {
            unsaved.push(editor.name());
        }
        if self.running {
            self.prompt = Some(Prompt::QuitWhileRunning);
        } else if !unsaved.is_empty() {
            self.prompt = Some(Prompt::QuitUnsaved { files: unsaved });
        } else {
            self.quit(commands);
        }
    }

    fn quit(&mut self, commands: &mut Vec<Command>) {
        self.save_notes_now(commands);
        self.learn_notes(commands);
        commands.push(Command::Quit);
    }

    fn answer(&mut self, prompt: Prompt, key: KeyEvent, commands: &mut Vec<Command>) {
        let yes = matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y'));
        if !yes {
            self.say("never mind", false);
            return;
        }
        match prompt {
            Prompt::CancelSubtree { uri, .. } => commands.push(Command::CancelTask { uri }),
            Prompt::CancelMatrix { .. } => {
                commands.push(Command::CancelRun);
                self.say("cancelling the matrix; finished trials are kept…", false);
            }
            Prompt::SaveInvalid { path, .. } => {
                if let Some(file) = self.agents.iter().find(|a| a.path == path) {
                    commands.push(Command::Save { path, text: file.text() });
                }
            }
            Prompt::QuitWhileRunning => {
                // The run is cancelled; quitting waits for its findings (RunClosed).
                self.quitting = true;
                self.save_notes_now(commands);
                commands.push(Command::CancelRun);
                self.say("cancelling the run; quitting once its findings are written…", false);
            }
            Prompt::QuitUnsaved { .. } => self.quit(commands),
            prompt @ (Prompt::ForgetLesson { .. } | Prompt::DiscardLesson { .. }) => {
                self.memory_answer(prompt, commands)
            }
        }
    }

    fn run_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        let height = self.transcript_height();
        let tree_height = self.tree_height();
        match key.code {
            KeyCode::Char('r') => {
                if self.running {
                    self.say("a run is already working; cancel it first (c on the root)", true);
                } else if let Some(fork) = self.shown_matrix().and_then(|m| m.fork.clone()) {
                    self.say(format!("forking {} ({}) again…", fork.agent, fork.uri), false);
                    self.running = true;
                    commands.push(Command::Fork { run: fork.run, uri: fork.uri });
                } else if let Some(experiment) = self.rerun_target() {
                    commands.push(Command::StartRun { experiment });
                } else {
                    self.say("no experiment yet: pick one on the Experiments screen (3)", true);
                }
                return;
            }
            KeyCode::Esc | KeyCode::Backspace if self.shows_past() => {
                self.past = None;
                self.past_matrix = None;
                return;
            }
            KeyCode::Char('<') => return self.step_trial(-1, commands),
            KeyCode::Char('>') => return self.step_trial(1, commands),
            KeyCode::Char('F') => return self.fork_selected(commands),
            KeyCode::Char('c') if self.shown_matrix().is_some() => {
                let running = self.shown_matrix().map_or(0, MatrixPane::running);
                if self.past_matrix.is_some() {
                    self.say("this is a past matrix; it cannot be cancelled", true);
                } else if self.running {
                    self.prompt = Some(Prompt::CancelMatrix { running });
                } else {
                    self.say("the matrix has ended", false);
                }
                return;
            }
            _ => {}
        }
        let Some(pane) = self.shown_run_mut() else {
            return;
        };
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => pane.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => pane.move_selection(1),
            KeyCode::PageUp => pane.move_selection(-(tree_height.max(2) as isize - 1)),
            KeyCode::PageDown => pane.move_selection(tree_height.max(2) as isize - 1),
            KeyCode::Home | KeyCode::Char('g') => pane.select_row(0),
            KeyCode::End | KeyCode::Char('G') => pane.select_row(pane.view.rows().len().saturating_sub(1)),
            KeyCode::Left | KeyCode::Char('h') => {
                if let Some(uri) = pane.selected
                    && !pane.view.set_expanded(uri, false)
                {
                    // Already collapsed (or a leaf): go to the parent, as file trees do.
                    let parent = pane.view.node(uri).and_then(|n| n.parent).map(|p| pane.view.nodes()[p].uri);
                    if parent.is_some() {
                        pane.selected = parent;
                    }
                }
                pane.view.refresh();
            }
            KeyCode::Right | KeyCode::Char('l') => {
                if let Some(uri) = pane.selected {
                    pane.view.set_expanded(uri, true);
                    pane.view.refresh();
                }
            }
            KeyCode::Enter | KeyCode::Char(' ') => {
                if let Some(uri) = pane.selected {
                    let expanded = pane.view.node(uri).is_some_and(|n| n.expanded);
                    pane.view.set_expanded(uri, !expanded);
                    pane.view.refresh();
                }
            }
            KeyCode::Char('w') => {
                let found = pane.jump(|s| !s.is_terminal());
                if !found {
                    self.say("nothing is working", false);
                }
            }
            KeyCode::Char('e') => {
                let found = pane.jump(|s| s == TaskStatus::Failed);
                if !found {
                    self.say("nothing failed", false);
                }
            }
            KeyCode::Char('K') | KeyCode::Char('[') => pane.scroll_transcript(-3, height),
            KeyCode::Char('J') | KeyCode::Char(']') => pane.scroll_transcript(3, height),
            KeyCode::Char('f') => pane.follow = true,
            KeyCode::Char('c') => {
                let is_live = !self.shows_past();
                let Some(pane) = self.shown_run() else { return };
                let Some(node) = pane.selected.and_then(|uri| pane.view.node(uri)) else { return };
                if !is_live {
                    self.say("this is a past run; it cannot be cancelled", true);
                } else if node.status.is_terminal() {
                    self.say(format!("{} has already ended ({})", node.agent, node.status.as_str()), false);
                } else {
                    self.prompt = Some(Prompt::CancelSubtree {
                        uri: node.uri,
                        agent: node.agent.clone(),
                        descendants: pane.view.descendants(node.uri),
                    });
                }
            }
            _ => {}
        }
    }

    /// Shows another trial of the matrix on screen: `<` the one started before, `>` after.
    fn step_trial(&mut self, by: isize, commands: &mut Vec<Command>) {
        let Some(matrix) = self.shown_matrix_mut() else {
            self.say("< and > step through a matrix's trials; this run is a single one", false);
            return;
        };
        if matrix.trials.is_empty() {
            let text = if matrix.end.is_some() { "no trial was recorded" } else { "no trial has started yet" };
            self.say(text, false);
            return;
        }
        let before = matrix.shown;
        if let Some((key, dir)) = matrix.step(by) {
            commands.push(Command::LoadTrial { key, dir });
        }
        if matrix.shown == before {
            let text = if by < 0 { "this is the first trial" } else { "this is the newest trial" };
            self.say(text, false);
        }
    }

    /// `F`: forks the selected subtask of the run on screen, once that run has ended.
    fn fork_selected(&mut self, commands: &mut Vec<Command>) {
        let live_shown = !self.shows_past();
        let Some(pane) = self.shown_run() else {
            self.say("no run to fork from: run an experiment, or open a past run from Findings (4)", true);
            return;
        };
        let dir = pane.dir.clone();
        let Some(node) = pane.selected.and_then(|uri| pane.view.node(uri)) else {
            self.say("select the subtask to fork first", true);
            return;
        };
        let (agent, uri, is_root) = (node.agent.clone(), node.uri, node.parent.is_none());
        let refusal = if self.running && live_shown {
            "the run is still working: fork its tasks once it has ended".to_owned()
        } else if self.running {
            "a run is working: fork once it has ended (one run at a time)".to_owned()
        } else if is_root {
            format!("{agent} is the root, the whole run: select a subtask to fork (r runs the experiment again)")
        } else if let Some(run) = dir {
            self.say(format!("forking {agent} ({uri}): its original setup, {FORK_REPETITIONS} times…"), false);
            self.running = true;
            commands.push(Command::Fork { run, uri });
            return;
        } else {
            "this run has no folder to fork from".to_owned()
        };
        self.say(refusal, true);
    }

    /// The experiment `r` runs: the one shown, else the last started, else the selected one.
    fn rerun_target(&self) -> Option<String> {
        self.shown_matrix()
            .map(|m| m.experiment.clone())
            .or_else(|| self.shown_run().and_then(|p| p.view.info.as_ref().map(|i| i.experiment.clone())))
            .or_else(|| self.last_experiment.clone())
            .or_else(|| self.experiments.get(self.experiment_selected).map(|e| e.name.clone()))
    }

    fn experiments_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        let count = self.experiments.len();
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.experiment_selected = self.experiment_selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.experiment_selected = (self.experiment_selected + 1).min(count.saturating_sub(1));
            }
            KeyCode::Enter | KeyCode::Char('r') => {
                if self.running {
                    self.say("a run is already working; watch it on the Run screen (1)", true);
                } else if let Some(experiment) = self.experiments.get(self.experiment_selected) {
                    commands.push(Command::StartRun { experiment: experiment.name.clone() });
                }
            }
            _ => {}
        }
    }

    fn agents_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        let count = self.agents.len();
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.agent_selected = self.agent_selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.agent_selected = (self.agent_selected + 1).min(count.saturating_sub(1))
            }
            KeyCode::Enter | KeyCode::Char('e') if count > 0 => self.agents_focus = Focus::Editor,
            KeyCode::Char('n') => self.new_agent(None, commands),
            KeyCode::Char('d') => {
                if let Some(file) = self.agents.get(self.agent_selected) {
                    let text = file.text();
                    let base = file.name();
                    self.new_agent(Some((base, text)), commands);
                }
            }
            KeyCode::Char('s') => self.save_agent(commands),
            _ => {}
        }
    }

    /// A new expert from the template, or a copy of `source`; it exists on disk once saved.
    fn new_agent(&mut self, source: Option<(String, String)>, commands: &mut Vec<Command>) {
        let base = source.as_ref().map_or_else(|| "expert".to_owned(), |(name, _)| format!("{name}-copy"));
        let dir = self.root.join("agents");
        // The shell lists every agents/*.toml, so the names in hand are all the taken ones.
        let taken = |name: &str| self.agents.iter().any(|a| a.name() == name);
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
        commands.push(Command::Validate { path: path.clone(), text, version: editor.version });
        self.agents.push(editor);
        self.agents.sort_by(|a, b| a.path.cmp(&b.path));
        self.agent_selected = self.agents.iter().position(|a| a.path == path).unwrap_or(0);
        self.agents_focus = Focus::Editor;
        self.say(format!("new expert {name}: edit, then Ctrl-S to save it as agents/{name}.toml"), false);
    }

    fn save_agent(&mut self, commands: &mut Vec<Command>) {
        let Some(file) = self.agents.get(self.agent_selected) else { return };
        let errors = file.errors();
        // A buffer changed since its last check may be invalid too: ask, since we cannot tell.
        if errors > 0 || file.validated < file.version {
            self.prompt = Some(Prompt::SaveInvalid { path: file.path.clone(), errors });
        } else {
            commands.push(Command::Save { path: file.path.clone(), text: file.text() });
        }
    }

    fn edit_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match self.screen {
            Screen::Agents => {
                if key.code == KeyCode::Esc {
                    self.agents_focus = Focus::List;
                    return;
                }
                if ctrl && key.code == KeyCode::Char('s') {
                    self.save_agent(commands);
                    return;
                }
                let Some(file) = self.agents.get_mut(self.agent_selected) else { return };
                if file.editor.input(key) {
                    file.version += 1;
                    commands.push(Command::Validate {
                        path: file.path.clone(),
                        text: file.text(),
                        version: file.version,
                    });
                }
            }
            Screen::Findings => {
                if key.code == KeyCode::Esc {
                    self.findings_focus = Focus::List;
                    self.save_notes_now(commands);
                    self.learn_notes(commands);
                    return;
                }
                let now = self.now;
                let Some(notes) = self.notes.as_mut() else { return };
                if ctrl && key.code == KeyCode::Char('s') {
                    self.save_notes_now(commands);
                    self.learn_notes(commands);
                    return;
                }
                if notes.editor.input(key) {
                    notes.dirty_since.get_or_insert(now);
                }
            }
            Screen::Memory => self.memory_text_key(key, commands),
            Screen::Run | Screen::Experiments => {}
        }
    }

    fn findings_key(&mut self, key: KeyEvent, commands: &mut Vec<Command>) {
        let count = self.findings.len();
        let before = self.finding_selected;
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.finding_selected = self.finding_selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.finding_selected = (self.finding_selected + 1).min(count.saturating_sub(1));
            }
            KeyCode::Enter | KeyCode::Char('o') => {
                if let Some(run) = self.findings.get(self.finding_selected) {
                    let dir = run.dir.clone();
                    commands.push(if run.matrix.is_some() {
                        Command::OpenPastMatrix { dir }
                    } else {
                        Command::OpenPastRun { dir }
                    });
                }
            }
            KeyCode::Char('e') | KeyCode::Char('n') if self.notes.as_ref().is_some_and(|n| n.loaded) => {
                self.findings_focus = Focus::Editor;
            }
            KeyCode::Char('R') => commands.push(Command::ListFindings),
            _ => {}
        }
        if self.finding_selected != before {
            self.save_notes_now(commands);
            self.learn_notes(commands);
            self.load_selected_notes(commands);
        }
    }

    fn load_selected_notes(&mut self, commands: &mut Vec<Command>) {
        let Some(run) = self.findings.get(self.finding_selected) else {
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
        commands.push(Command::LoadNotes { dir: run.dir.clone() });
    }

    fn save_notes_now(&mut self, commands: &mut Vec<Command>) {
        if let Some(notes) = &mut self.notes
            && notes.dirty_since.is_some()
        {
            commands.push(Command::Save { path: notes_path(&notes.dir), text: buffer_text(&notes.editor) });
            notes.dirty_since = None;
        }
    }

    /// Sends the notes' `## Lessons` to memory when they changed since last sent. Called when
    /// the notes are saved on purpose (leaving the editor, Ctrl-S, another run, quitting), not by
    /// the autosave, which would keep half-typed lessons.
    fn learn_notes(&mut self, commands: &mut Vec<Command>) {
        let Some(notes) = self.notes.as_mut().filter(|n| n.loaded) else { return };
        let lessons = crate::findings::notes::lessons_in_notes(&buffer_text(&notes.editor));
        if lessons.is_empty() || notes.learned.as_ref() == Some(&lessons) {
            return;
        }
        notes.learned = Some(lessons.clone());
        commands.push(Command::LearnNotes { dir: notes.dir.clone(), lessons });
    }

    /// Called by the shell on every tick: notes untouched for a moment are saved.
    pub fn tick(&mut self, now: Millis) -> Vec<Command> {
        self.now = now;
        let mut commands = Vec::new();
        if self.notes.as_ref().and_then(|n| n.dirty_since).is_some_and(|t| now.saturating_sub(t) >= NOTES_AUTOSAVE_MS) {
            self.save_notes_now(&mut commands);
        }
        if let Some(pane) = self.past.as_mut()
            && let (Some(dir), Some(tail)) = (&pane.dir, pane.tail.as_mut())
            && !tail.asked
            && now.saturating_sub(tail.asked_at) >= FOLLOW_MS
        {
            tail.asked = true;
            tail.asked_at = now;
            commands.push(Command::FollowPastRun { dir: dir.clone(), offset: tail.offset });
        }
        // Not while notes are being written: the list is not what the user looks at then.
        if self.screen == Screen::Findings
            && self.findings_focus == Focus::List
            && now.saturating_sub(self.findings_listed_at) >= FINDINGS_REFRESH_MS
        {
            self.findings_listed_at = now;
            commands.push(Command::ListFindings);
        }
        // The detail pane follows the selection within a tick, whatever moved it.
        if self.screen == Screen::Memory
            && let Some(id) = self.memory.want_used_in()
        {
            commands.push(Command::MemoryUsedIn { id });
        }
        commands
    }

    /// Mouse: a click selects a row or a list item; the wheel scrolls what is under it.
    pub fn handle_mouse(&mut self, mouse: MouseEvent) -> Vec<Command> {
        let areas = self.areas(self.size);
        let at = Position::new(mouse.column, mouse.row);
        let height = self.transcript_height();
        match (self.screen, mouse.kind) {
            (Screen::Run, MouseEventKind::Down(_)) if areas.list.contains(at) => {
                if let Some(pane) = self.shown_run_mut() {
                    let row = pane.tree_top + (mouse.row - areas.list.y).saturating_sub(1) as usize;
                    pane.select_row(row);
                }
            }
            (Screen::Run, MouseEventKind::ScrollUp) if areas.detail.contains(at) => {
                if let Some(pane) = self.shown_run_mut() {
                    pane.scroll_transcript(-3, height);
                }
            }
            (Screen::Run, MouseEventKind::ScrollDown) if areas.detail.contains(at) => {
                if let Some(pane) = self.shown_run_mut() {
                    pane.scroll_transcript(3, height);
                }
            }
            (Screen::Run, MouseEventKind::ScrollUp) => {
                if let Some(pane) = self.shown_run_mut() {
                    pane.move_selection(-1);
                }
            }
            (Screen::Run, MouseEventKind::ScrollDown) => {
                if let Some(pane) = self.shown_run_mut() {
                    pane.move_selection(1);
                }
            }
            _ => {}
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
        let tree_height = list.height.saturating_sub(2) as usize;
        let width = detail.width.saturating_sub(2);
        // Of a matrix, only the shown trial: the others are wrapped when stepped onto.
        let trial = self.matrix.as_mut().and_then(MatrixPane::shown_pane_mut);
        let past_trial = self.past_matrix.as_mut().and_then(MatrixPane::shown_pane_mut);
        for pane in [self.live.as_mut(), self.past.as_mut(), trial, past_trial].into_iter().flatten() {
            pane.view.refresh();
            if pane.selected.is_none() {
                pane.selected = pane.view.nodes().first().map(|n| n.uri);
            }
            if let Some(row) = pane.selected_row() {
                if row < pane.tree_top {
                    pane.tree_top = row;
                } else if tree_height > 0 && row >= pane.tree_top + tree_height {
                    pane.tree_top = row + 1 - tree_height;
                }
            }
            pane.tree_top = pane.tree_top.min(pane.view.rows().len().saturating_sub(tree_height.max(1)));
            let Some(node) = pane.selected.and_then(|uri| pane.view.node(uri)) else {
                pane.lines.clear();
                pane.streaming_lines.clear();
                pane.lines_key = None;
                pane.streaming_key = None;
                continue;
            };
            let key = (node.uri, node.entries.len(), width);
            if pane.lines_key != Some(key) {
                pane.lines = transcript::entry_lines(node, width as usize);
                pane.lines_key = Some(key);
            }
            let key = (node.uri, node.streaming.len(), width);
            if pane.streaming_key != Some(key) {
                pane.streaming_lines = transcript::streaming_lines(node, width as usize);
                pane.streaming_key = Some(key);
            }
        }
    }
}

/// What is said when a matrix's findings are complete.
fn matrix_closed(matrix: &MatrixPane, root: &Path) -> String {
    let recorded = matrix.records.len();
    let total = matrix.info.trials;
    let report = matrix
        .dir
        .as_ref()
        .map(|dir| format!("; report in {}", dir.strip_prefix(root).unwrap_or(dir).join("report.md").display()))
        .unwrap_or_default();
    match matrix.end {
        Some(end) if end.cancelled => {
            format!("matrix cancelled, finished trials kept: {recorded} of {total} recorded{report}")
        }
        Some(end) if end.complete => format!("matrix completed: {recorded} of {total} trials recorded{report}"),
        Some(_) => format!("matrix ended: {recorded} of {total} trials recorded{report}"),
        None => "the matrix ended before any trial ran".to_owned(),
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

/// The path a run folder's notes are saved to.
pub fn notes_path(dir: &Path) -> PathBuf {
    dir.join(crate::findings::NOTES_FILE)
}

/// An editor's text as a file holds it: lines joined, ending with a newline.
fn buffer_text(editor: &TextArea<'_>) -> String {
    let mut text = editor.lines().join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::record::{MatrixInfo, TrialRecord};
    use crate::experiment::store::MatrixFile;
    use crate::protocol::Event;

    fn recorded() -> Vec<Event> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/smoke-events.jsonl");
        crate::findings::read_events(&path).unwrap().0
    }

    fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
        app.handle_key(KeyEvent::from(code))
    }

    fn error_said(app: &App) -> String {
        match &app.flash {
            Some((text, true)) => text.clone(),
            other => panic!("no error said: {other:?}"),
        }
    }

    /// A live smoke run on the Run screen, its first `events` applied, recorded in `/w/run`.
    fn live(events: &[Event]) -> App {
        let mut app = App::new(PathBuf::from("/w"));
        app.handle_report(ShellReport::RunStarting { experiment: "smoke".into() });
        app.handle_report(ShellReport::RunFolder { dir: "/w/run".into() });
        for event in events {
            app.handle_report(ShellReport::RunEvent(event.clone()));
        }
        app.prepare_frame(Rect::new(0, 0, 120, 40));
        app
    }

    #[test]
    fn fork_is_refused_while_the_run_works_and_on_the_root() {
        let events = recorded();
        let mut app = live(&events[..events.len() / 2]);
        key(&mut app, KeyCode::Down);
        assert!(key(&mut app, KeyCode::Char('F')).is_empty());
        assert!(error_said(&app).contains("still working"), "{:?}", app.flash);

        let mut app = live(&events);
        app.handle_report(ShellReport::RunClosed);
        assert!(key(&mut app, KeyCode::Char('F')).is_empty(), "the root is selected at first");
        assert!(error_said(&app).contains("is the root"), "{:?}", app.flash);
        assert!(!app.running);

        key(&mut app, KeyCode::Down);
        let child = app.shown_run().and_then(|p| p.selected).unwrap();
        assert_eq!(key(&mut app, KeyCode::Char('F')), vec![Command::Fork { run: "/w/run".into(), uri: child }]);
        assert!(app.running, "no other run starts while the fork does");
        assert!(key(&mut app, KeyCode::Char('F')).is_empty());
        assert!(error_said(&app).contains("still working"), "{:?}", app.flash);
        app.handle_report(ShellReport::ForkRefused { error: "cannot fork: no".into() });
        assert!(!app.running);
        assert_eq!(error_said(&app), "cannot fork: no");
    }

    #[test]
    fn a_past_run_forks_while_nothing_runs_and_without_a_run_there_is_nothing_to_fork() {
        let mut app = App::new(PathBuf::from("/w"));
        app.screen = Screen::Run;
        assert!(key(&mut app, KeyCode::Char('F')).is_empty());
        assert!(error_said(&app).contains("no run to fork from"));
        app.handle_report(ShellReport::PastRun { dir: "/w/findings/old".into(), events: recorded(), warning: None });
        app.prepare_frame(Rect::new(0, 0, 120, 40));
        key(&mut app, KeyCode::Down);
        let commands = key(&mut app, KeyCode::Char('F'));
        assert!(
            matches!(&commands[..], [Command::Fork { run, .. }] if run == Path::new("/w/findings/old")),
            "{commands:?}"
        );
    }

    #[test]
    fn a_past_run_still_being_written_is_followed_until_it_ends() {
        let events = recorded();
        let dir = PathBuf::from("/w/findings/serving");
        let mut app = App::new(PathBuf::from("/w"));
        app.handle_report(ShellReport::PastRun { dir: dir.clone(), events: events[..5].to_vec(), warning: None });
        assert!(app.tick(FOLLOW_MS - 1).is_empty(), "not read again at once");
        assert_eq!(app.tick(FOLLOW_MS), vec![Command::FollowPastRun { dir: dir.clone(), offset: 0 }]);
        assert!(app.tick(3 * FOLLOW_MS).is_empty(), "one read at a time");

        // The first read is of the whole file: what was replayed is not applied twice.
        let commands =
            app.handle_report(ShellReport::PastRunGrew { dir: dir.clone(), events: events[..9].to_vec(), offset: 900 });
        assert!(commands.is_empty());
        let pane = app.past.as_ref().unwrap();
        assert_eq!(pane.view.nodes(), RunView::replay(&events[..9]).nodes());
        assert_eq!(app.tick(4 * FOLLOW_MS), vec![Command::FollowPastRun { dir: dir.clone(), offset: 900 }]);

        // A report for a run no longer shown changes nothing.
        let other = app.handle_report(ShellReport::PastRunGrew {
            dir: "/w/findings/other".into(),
            events: events.clone(),
            offset: 1,
        });
        assert!(other.is_empty());
        let commands = app.handle_report(ShellReport::PastRunGrew {
            dir: dir.clone(),
            events: events[9..].to_vec(),
            offset: 2000,
        });
        assert_eq!(commands, vec![Command::ListFindings], "its end is a new row in Findings");
        let pane = app.past.as_ref().unwrap();
        assert_eq!(pane.view.nodes(), RunView::replay(&events).nodes(), "the same tree as the finished run's");
        assert!(pane.tail.is_none());
        assert!(app.tick(10 * FOLLOW_MS).is_empty(), "an ended run is not read again");

        // A finished run is not followed at all.
        app.handle_report(ShellReport::PastRun { dir: dir.clone(), events: events.clone(), warning: None });
        assert!(app.tick(20 * FOLLOW_MS).is_empty());
    }

    #[test]
    fn findings_are_read_again_while_shown_and_the_selection_stays_on_its_run() {
        let mut app = App::new(PathBuf::from("/w"));
        app.screen = Screen::Findings;
        let run = |name: &str| crate::findings::PastRun::unread(&Path::new("/w/findings").join(name));
        app.handle_report(ShellReport::Findings(vec![run("b"), run("a")]));
        app.finding_selected = 1;
        assert!(app.tick(FINDINGS_REFRESH_MS).contains(&Command::ListFindings));
        assert!(!app.tick(FINDINGS_REFRESH_MS + 100).contains(&Command::ListFindings));
        // A new run appears above the selected one.
        app.handle_report(ShellReport::Findings(vec![run("c"), run("b"), run("a")]));
        assert_eq!(app.findings[app.finding_selected].dir, Path::new("/w/findings/a"));
        app.findings_focus = Focus::Editor;
        assert!(!app.tick(5 * FINDINGS_REFRESH_MS).contains(&Command::ListFindings), "not while notes are written");
        app.findings_focus = Focus::List;
        app.screen = Screen::Run;
        assert!(!app.tick(10 * FINDINGS_REFRESH_MS).contains(&Command::ListFindings), "only while shown");
    }

    #[test]
    fn a_finished_run_says_how_its_checks_went() {
        let events = recorded();
        let mut app = live(&events);
        app.handle_report(ShellReport::RunScored { passed: 1, total: 2 });
        app.handle_report(ShellReport::RunClosed);
        assert_eq!(app.flash, Some(("run completed; 1 of 2 checks passed; findings written".to_owned(), false)));
        // Without checks, nothing is said of them.
        let mut app = live(&events);
        app.handle_report(ShellReport::RunClosed);
        assert_eq!(app.flash, Some(("run completed; findings written".to_owned(), false)));
    }

    #[test]
    fn a_refused_run_keeps_its_error_on_screen() {
        let mut app = live(&[]);
        app.handle_report(ShellReport::RunRefused { error: "no such model".into() });
        app.handle_report(ShellReport::RunClosed);
        assert_eq!(error_said(&app), "no such model");
    }

    /// A past matrix's plan (two variants of one task, twice) and the records of its trials.
    fn past_matrix() -> (MatrixFile, Vec<TrialRecord>) {
        let trials: Vec<crate::experiment::plan::TrialSpec> = (0..4u32)
            .map(|index| {
                let variant = ["a", "b"][index as usize % 2];
                let repetition = index / 2 + 1;
                serde_json::from_value(serde_json::json!({
                    "index": index, "pair": index / 2, "key": format!("{variant}/t/{repetition}"),
                    "variant": variant, "task_id": "t", "repetition": repetition, "seed": 1,
                    "folder": format!("trials/{variant}--t--r{repetition}"),
                }))
                .unwrap()
            })
            .collect();
        let records = trials
            .iter()
            .map(|t| {
                serde_json::from_value(serde_json::json!({
                    "index": t.index, "key": t.key, "variant": t.variant, "task_id": "t",
                    "repetition": t.repetition, "seed": 1, "status": "completed", "pass": true, "score": 1.0,
                    "checks": [], "input_tokens": 10, "output_tokens": 1, "cost": null, "wall_ms": 1,
                    "subtasks": 0, "depth": 0, "tool_errors": 0, "limit_hits": 0, "turns": 1, "answer": null,
                    "error": null, "folder": t.folder,
                }))
                .unwrap()
            })
            .collect();
        let info = MatrixInfo {
            experiment: "m".into(),
            variants: vec!["a".into(), "b".into()],
            baseline: "a".into(),
            tasks: vec!["t".into()],
            repetitions: 2,
            trials: 4,
            checks: vec![],
        };
        let matrix = MatrixFile {
            format: 1,
            run_id: "m".into(),
            experiment_file: "experiments/m.toml".into(),
            info,
            shard: None,
            trials,
            troupe_version: "0".into(),
        };
        (matrix, records)
    }

    #[test]
    fn a_past_matrix_takes_only_the_trial_events_it_asked_for() {
        let mut app = App::new(PathBuf::from("/w"));
        let (matrix, records) = past_matrix();
        let dir = PathBuf::from("/w/findings/m");
        let commands = app.handle_report(ShellReport::PastMatrix { dir: dir.clone(), matrix, records });
        let trial = dir.join("trials/a--t--r1");
        assert_eq!(commands, vec![Command::LoadTrial { key: "a/t/1".into(), dir: trial.clone() }]);
        assert_eq!(app.screen, Screen::Run);
        let waiting = |app: &App| app.past_matrix.as_ref().is_some_and(|m| m.awaits("a/t/1", &trial));
        // The same key in another folder (another matrix of the same experiment) is not its trial.
        let other = PathBuf::from("/w/findings/other/trials/a--t--r1");
        app.handle_report(ShellReport::TrialEvents { key: "a/t/1".into(), dir: other, events: Err("gone".into()) });
        assert!(waiting(&app));
        assert_eq!(app.flash, None, "nobody asked for it, so nothing is said");
        app.handle_report(ShellReport::TrialEvents { key: "a/t/1".into(), dir: trial.clone(), events: Ok(recorded()) });
        assert!(!waiting(&app));
        assert!(app.shown_run().is_some_and(|pane| !pane.view.nodes().is_empty()));
        // A past matrix cannot be cancelled, and Esc goes back.
        assert!(key(&mut app, KeyCode::Char('c')).is_empty());
        assert!(error_said(&app).contains("past matrix"));
        assert_eq!(key(&mut app, KeyCode::Char('r')), vec![Command::StartRun { experiment: "m".into() }]);
        key(&mut app, KeyCode::Esc);
        assert!(app.past_matrix.is_none() && app.shown_matrix().is_none());
    }
}
