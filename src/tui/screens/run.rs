//! The Run screen: the run started here last (a single run or a matrix of trials), a run or
//! matrix opened from Findings shown over it, their keys (select, fold, scroll, cancel, step
//! through trials, fork, run again) and the shell's reports about runs.
//!
//! Invariants: pure. A single run and a matrix are never both the latest run, nor both the one
//! opened: each slot is one [`Shown`]. What is opened is shown until Esc, while the latest run
//! goes on taking its events behind it.

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, MouseEvent, MouseEventKind};
use ratatui::layout::Position;

use crate::experiment::record::{MatrixInfo, TrialRecord};
use crate::experiment::store::MatrixFile;
use crate::experiment::summary::Summary;
use crate::experiment::update::MatrixUpdate;
use crate::protocol::{Event, EventBody, Millis, TaskId, TaskStatus};

use super::Outside;
use crate::tui::layout::Areas;
use crate::tui::matrix::{ForkOrigin, MatrixEnd, MatrixPane};
use crate::tui::messages::{Command, FORK_REPETITIONS, Prompt};
use crate::tui::run_pane::{RunPane, Tail};
use crate::tui::tree::RunView;

/// How often a past run that is still being written is read for new events.
pub const FOLLOW_MS: u64 = 500;

/// A run as the Run screen holds it: one run, or a matrix of trials shown one at a time.
pub enum Shown {
    Run(RunPane),
    Matrix(MatrixPane),
}

impl Shown {
    pub fn run(&self) -> Option<&RunPane> {
        match self {
            Shown::Run(pane) => Some(pane),
            Shown::Matrix(_) => None,
        }
    }

    fn run_mut(&mut self) -> Option<&mut RunPane> {
        match self {
            Shown::Run(pane) => Some(pane),
            Shown::Matrix(_) => None,
        }
    }

    pub fn matrix(&self) -> Option<&MatrixPane> {
        match self {
            Shown::Matrix(matrix) => Some(matrix),
            Shown::Run(_) => None,
        }
    }

    fn matrix_mut(&mut self) -> Option<&mut MatrixPane> {
        match self {
            Shown::Matrix(matrix) => Some(matrix),
            Shown::Run(_) => None,
        }
    }

    /// The run on screen: the run itself, or the matrix's shown trial (if it is in memory).
    pub fn pane(&self) -> Option<&RunPane> {
        match self {
            Shown::Run(pane) => Some(pane),
            Shown::Matrix(matrix) => matrix.shown_pane(),
        }
    }

    fn pane_mut(&mut self) -> Option<&mut RunPane> {
        match self {
            Shown::Run(pane) => Some(pane),
            Shown::Matrix(matrix) => matrix.shown_pane_mut(),
        }
    }
}

/// The Run screen's state.
#[derive(Default)]
pub struct RunScreen {
    /// The run started last in this session (live while `running`).
    pub latest: Option<Shown>,
    /// A past run or matrix opened from Findings (or Memory): shown instead of `latest`.
    pub opened: Option<Shown>,
    /// A live run is starting or working.
    pub running: bool,
    pub last_experiment: Option<String>,
}

impl RunScreen {
    /// The latest run when it is a single one.
    pub fn live_run(&self) -> Option<&RunPane> {
        self.latest.as_ref().and_then(Shown::run)
    }

    /// The latest run when it is a matrix.
    pub fn live_matrix(&self) -> Option<&MatrixPane> {
        self.latest.as_ref().and_then(Shown::matrix)
    }

    /// The past run opened, if one is.
    pub fn past_run(&self) -> Option<&RunPane> {
        self.opened.as_ref().and_then(Shown::run)
    }

    /// The past matrix opened, if one is.
    pub fn past_matrix(&self) -> Option<&MatrixPane> {
        self.opened.as_ref().and_then(Shown::matrix)
    }

    /// What the screen shows: what was opened over the latest run.
    fn shown(&self) -> Option<&Shown> {
        self.opened.as_ref().or(self.latest.as_ref())
    }

    fn shown_mut(&mut self) -> Option<&mut Shown> {
        self.opened.as_mut().or(self.latest.as_mut())
    }

    /// The run the screen shows (for a matrix, its shown trial).
    pub fn shown_run(&self) -> Option<&RunPane> {
        self.shown().and_then(Shown::pane)
    }

    pub(crate) fn shown_run_mut(&mut self) -> Option<&mut RunPane> {
        self.shown_mut().and_then(Shown::pane_mut)
    }

    /// The matrix the screen shows, if it shows one: a past one opened from Findings over the
    /// last live one.
    pub fn shown_matrix(&self) -> Option<&MatrixPane> {
        self.shown().and_then(Shown::matrix)
    }

    fn shown_matrix_mut(&mut self) -> Option<&mut MatrixPane> {
        self.shown_mut().and_then(Shown::matrix_mut)
    }

    /// Whether the screen shows something opened from Findings rather than the live run.
    pub fn shows_past(&self) -> bool {
        self.opened.is_some()
    }

    /// The comparison panel's height: a row per variant under a heading, in a border.
    pub fn matrix_panel_height(&self) -> u16 {
        self.shown_matrix().map_or(0, |m| (m.summary.variants.len() + 1).clamp(2, 8) as u16 + 2)
    }

    /// A run of `experiment` is starting: it replaces the latest run and is shown.
    pub fn starting(&mut self, experiment: String, out: &mut Outside) {
        self.latest = Some(Shown::Run(RunPane::new()));
        self.opened = None;
        self.running = true;
        out.say(format!("starting {experiment}…"), false);
        self.last_experiment = Some(experiment);
    }

    pub fn event(&mut self, event: Event) {
        if let Some(live) = self.latest.as_mut().and_then(Shown::run_mut) {
            live.view.apply(&event);
            if live.selected.is_none() {
                live.selected = live.view.nodes().first().map(|n| n.uri);
            }
        }
    }

    pub fn folder(&mut self, dir: PathBuf, root: &Path, out: &mut Outside) {
        let shown = dir.strip_prefix(root).unwrap_or(&dir).display().to_string();
        out.say(format!("recording to {shown}"), false);
        if let Some(live) = self.latest.as_mut().and_then(Shown::run_mut) {
            live.dir = Some(dir);
        }
    }

    pub fn scored(&mut self, passed: usize, total: usize) {
        if let Some(live) = self.latest.as_mut().and_then(Shown::run_mut) {
            live.checks = Some((passed, total));
        }
    }

    pub fn refused(&mut self, error: String, out: &mut Outside) {
        self.running = false;
        self.latest = match self.latest.take() {
            // A matrix that got as far as running trials keeps them on screen.
            Some(Shown::Matrix(mut matrix)) if !matrix.trials.is_empty() => {
                matrix.fail(error.clone());
                Some(Shown::Matrix(matrix))
            }
            Some(Shown::Matrix(_) | Shown::Run(_)) | None => None,
        };
        out.say(error, true);
    }

    /// The live run's findings are complete: what became of it is said.
    pub fn closed(&mut self, root: &Path, out: &mut Outside) {
        self.running = false;
        match &self.latest {
            // Why it failed was said, and stays.
            Some(Shown::Matrix(matrix)) if matrix.error.is_some() => {}
            Some(Shown::Matrix(matrix)) => out.say(matrix_closed(matrix, root), false),
            // Refused: its error stays.
            None => {}
            Some(Shown::Run(live)) => {
                let outcome = live.view.end.as_ref().map_or("ended", |end| end.status.as_str());
                let checks = live
                    .checks
                    .map_or_else(String::new, |(passed, total)| format!("; {passed} of {total} checks passed"));
                out.say(format!("run {outcome}{checks}; findings written"), false);
            }
        }
        out.send(Command::ListFindings);
    }

    pub fn matrix_starting(
        &mut self,
        experiment: String,
        info: MatrixInfo,
        fork: Option<ForkOrigin>,
        out: &mut Outside,
    ) {
        self.opened = None;
        self.running = true;
        let text = match &fork {
            Some(fork) => format!(
                "forking {} ({}) on {}: {} trials of its original setup",
                fork.agent, fork.uri, fork.model, info.trials
            ),
            None => format!("starting {experiment}: a matrix of {} trials…", info.trials),
        };
        out.say(text, false);
        if fork.is_none() {
            self.last_experiment = Some(experiment.clone());
        }
        self.latest = Some(Shown::Matrix(MatrixPane::new(experiment, info, fork)));
    }

    pub fn matrix_update(&mut self, update: MatrixUpdate, root: &Path, now: Millis, out: &mut Outside) {
        match &update {
            MatrixUpdate::Status(line) => out.say(line.clone(), false),
            MatrixUpdate::Planned { dir, total, concurrency, .. } => {
                let shown = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
                out.say(format!("{total} trials, {concurrency} at a time; recording to {shown}"), false);
            }
            _ => {}
        }
        if let Some(matrix) = self.latest.as_mut().and_then(Shown::matrix_mut) {
            matrix.apply(update, now);
        }
    }

    pub fn matrix_finished(&mut self, summary: Summary, end: MatrixEnd) {
        if let Some(matrix) = self.latest.as_mut().and_then(Shown::matrix_mut) {
            matrix.finish(summary, end);
        }
    }

    pub fn trial_events(&mut self, key: String, dir: PathBuf, events: Result<Vec<Event>, String>, out: &mut Outside) {
        // A past matrix and the live one may share keys (the same experiment), and a past
        // matrix closed meanwhile awaits nothing: the folder tells whose they are. Both wait for
        // it when the past matrix is the live one, opened from Findings.
        let mut waiting: Vec<&mut MatrixPane> =
            [self.opened.as_mut().and_then(Shown::matrix_mut), self.latest.as_mut().and_then(Shown::matrix_mut)]
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
                out.say(error, true);
            }
        }
    }

    pub fn fork_refused(&mut self, error: String, out: &mut Outside) {
        self.running = false;
        out.say(error, true);
    }

    /// A past run read from its folder, opened over the latest run; followed while another
    /// process still writes it.
    pub fn open_past_run(&mut self, dir: PathBuf, events: Vec<Event>, warning: Option<String>, out: &mut Outside) {
        let mut pane = RunPane::new();
        pane.view = RunView::replay(&events);
        pane.selected = pane.view.nodes().first().map(|n| n.uri);
        if !events.iter().any(|e| matches!(e.body, EventBody::RunFinished { .. })) {
            pane.tail = Some(Tail { last_seq: events.last().map(|e| e.seq), ..Tail::default() });
        }
        pane.dir = Some(dir);
        self.opened = Some(Shown::Run(pane));
        if let Some(warning) = warning {
            out.say(warning, true);
        }
    }

    /// Selects `uri` in the past run opened, unfolding the tree to it, if the run has it.
    pub fn select_in_past(&mut self, uri: TaskId) {
        if let Some(pane) = self.opened.as_mut().and_then(Shown::run_mut)
            && pane.view.node(uri).is_some()
        {
            pane.view.reveal(uri);
            pane.view.refresh();
            pane.selected = Some(uri);
        }
    }

    pub fn past_run_grew(&mut self, dir: PathBuf, events: Vec<Event>, offset: u64, out: &mut Outside) {
        let Some(pane) =
            self.opened.as_mut().and_then(Shown::run_mut).filter(|pane| pane.dir.as_deref() == Some(dir.as_path()))
        else {
            return;
        };
        let Some(tail) = pane.tail.as_mut() else { return };
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
            out.send(Command::ListFindings);
        }
    }

    pub fn open_past_matrix(
        &mut self,
        dir: PathBuf,
        matrix: MatrixFile,
        records: Vec<TrialRecord>,
        now: Millis,
        out: &mut Outside,
    ) {
        let mut pane = MatrixPane::recorded(dir, matrix, records, now);
        if let Some((key, dir)) = pane.step(0) {
            out.send(Command::LoadTrial { key, dir });
        }
        self.opened = Some(Shown::Matrix(pane));
    }

    /// A past run still being written is read again every [`FOLLOW_MS`], one read at a time.
    pub fn tick(&mut self, now: Millis, out: &mut Outside) {
        if let Some(pane) = self.opened.as_mut().and_then(Shown::run_mut)
            && let (Some(dir), Some(tail)) = (&pane.dir, pane.tail.as_mut())
            && !tail.asked
            && now.saturating_sub(tail.asked_at) >= FOLLOW_MS
        {
            tail.asked = true;
            tail.asked_at = now;
            out.send(Command::FollowPastRun { dir: dir.clone(), offset: tail.offset });
        }
    }

    /// Keys on the Run screen. `tree_height` and `transcript_height` are the panes' inner
    /// heights; `selected_experiment` is the one the Experiments screen has selected.
    pub fn key(
        &mut self,
        key: KeyEvent,
        tree_height: usize,
        transcript_height: usize,
        selected_experiment: Option<String>,
        out: &mut Outside,
    ) {
        match key.code {
            KeyCode::Char('r') => {
                if self.running {
                    out.say("a run is already working; cancel it first (c on the root)", true);
                } else if let Some(fork) = self.shown_matrix().and_then(|m| m.fork.clone()) {
                    out.say(format!("forking {} ({}) again…", fork.agent, fork.uri), false);
                    self.running = true;
                    out.send(Command::Fork { run: fork.run, uri: fork.uri });
                } else if let Some(experiment) = self.rerun_target(selected_experiment) {
                    out.send(Command::StartRun { experiment });
                } else {
                    out.say("no experiment yet: pick one on the Experiments screen (3)", true);
                }
                return;
            }
            KeyCode::Esc | KeyCode::Backspace if self.shows_past() => {
                self.opened = None;
                return;
            }
            KeyCode::Char('<') => return self.step_trial(-1, out),
            KeyCode::Char('>') => return self.step_trial(1, out),
            KeyCode::Char('F') => return self.fork_selected(out),
            KeyCode::Char('c') if self.shown_matrix().is_some() => {
                let running = self.shown_matrix().map_or(0, MatrixPane::running);
                if self.past_matrix().is_some() {
                    out.say("this is a past matrix; it cannot be cancelled", true);
                } else if self.running {
                    out.ask(Prompt::CancelMatrix { running });
                } else {
                    out.say("the matrix has ended", false);
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
                    out.say("nothing is working", false);
                }
            }
            KeyCode::Char('e') => {
                let found = pane.jump(|s| s == TaskStatus::Failed);
                if !found {
                    out.say("nothing failed", false);
                }
            }
            KeyCode::Char('K') | KeyCode::Char('[') => pane.scroll_transcript(-3, transcript_height),
            KeyCode::Char('J') | KeyCode::Char(']') => pane.scroll_transcript(3, transcript_height),
            KeyCode::Char('f') => pane.follow = true,
            KeyCode::Char('c') => {
                let is_live = !self.shows_past();
                let Some(pane) = self.shown_run() else { return };
                let Some(node) = pane.selected.and_then(|uri| pane.view.node(uri)) else { return };
                if !is_live {
                    out.say("this is a past run; it cannot be cancelled", true);
                } else if node.status.is_terminal() {
                    out.say(format!("{} has already ended ({})", node.agent, node.status.as_str()), false);
                } else {
                    out.ask(Prompt::CancelSubtree {
                        uri: node.uri,
                        agent: node.agent.clone(),
                        descendants: pane.view.descendants(node.uri),
                    });
                }
            }
            _ => {}
        }
    }

    /// Mouse on the Run screen: a click selects a tree row; the wheel scrolls the transcript
    /// under it, else moves the selection.
    pub fn mouse(&mut self, mouse: MouseEvent, areas: &Areas, transcript_height: usize) {
        let at = Position::new(mouse.column, mouse.row);
        let Some(pane) = self.shown_run_mut() else { return };
        match mouse.kind {
            MouseEventKind::Down(_) if areas.list.contains(at) => {
                let row = pane.tree_top + (mouse.row - areas.list.y).saturating_sub(1) as usize;
                pane.select_row(row);
            }
            MouseEventKind::ScrollUp if areas.detail.contains(at) => pane.scroll_transcript(-3, transcript_height),
            MouseEventKind::ScrollDown if areas.detail.contains(at) => pane.scroll_transcript(3, transcript_height),
            MouseEventKind::ScrollUp => pane.move_selection(-1),
            MouseEventKind::ScrollDown => pane.move_selection(1),
            _ => {}
        }
    }

    /// Settles the size-dependent state of every run pane that can be shown: the latest run's
    /// and the one opened (of a matrix, only the shown trial: the others are wrapped when
    /// stepped onto).
    pub fn prepare(&mut self, tree_height: usize, width: u16) {
        for shown in [self.latest.as_mut(), self.opened.as_mut()].into_iter().flatten() {
            if let Some(pane) = shown.pane_mut() {
                pane.prepare(tree_height, width);
            }
        }
    }

    /// Shows another trial of the matrix on screen: `<` the one started before, `>` after.
    fn step_trial(&mut self, by: isize, out: &mut Outside) {
        let Some(matrix) = self.shown_matrix_mut() else {
            out.say("< and > step through a matrix's trials; this run is a single one", false);
            return;
        };
        if matrix.trials.is_empty() {
            let text = if matrix.end.is_some() { "no trial was recorded" } else { "no trial has started yet" };
            out.say(text, false);
            return;
        }
        let before = matrix.shown;
        if let Some((key, dir)) = matrix.step(by) {
            out.send(Command::LoadTrial { key, dir });
        }
        if matrix.shown == before {
            let text = if by < 0 { "this is the first trial" } else { "this is the newest trial" };
            out.say(text, false);
        }
    }

    /// `F`: forks the selected subtask of the run on screen, once that run has ended.
    fn fork_selected(&mut self, out: &mut Outside) {
        let live_shown = !self.shows_past();
        let Some(pane) = self.shown_run() else {
            out.say("no run to fork from: run an experiment, or open a past run from Findings (4)", true);
            return;
        };
        let dir = pane.dir.clone();
        let Some(node) = pane.selected.and_then(|uri| pane.view.node(uri)) else {
            out.say("select the subtask to fork first", true);
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
            out.say(format!("forking {agent} ({uri}): its original setup, {FORK_REPETITIONS} times…"), false);
            self.running = true;
            out.send(Command::Fork { run, uri });
            return;
        } else {
            "this run has no folder to fork from".to_owned()
        };
        out.say(refusal, true);
    }

    /// The experiment `r` runs: the one shown, else the last started, else the selected one.
    fn rerun_target(&self, selected_experiment: Option<String>) -> Option<String> {
        self.shown_matrix()
            .map(|m| m.experiment.clone())
            .or_else(|| self.shown_run().and_then(|p| p.view.info.as_ref().map(|i| i.experiment.clone())))
            .or_else(|| self.last_experiment.clone())
            .or(selected_experiment)
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
