//! The workbench's messages: the [`Screen`]s, the [`Command`]s the app gives the shell, the
//! [`ShellReport`]s the shell gives back (what it did or saw), and the [`Prompt`]s the user
//! answers. Plain data shared by the app, its screens and the shell, so none of them has to know
//! another to talk to it.

use std::path::PathBuf;

use crate::config::Diagnostic;
use crate::experiment::record::{MatrixInfo, TrialRecord};
use crate::experiment::store::MatrixFile;
use crate::experiment::summary::Summary;
use crate::experiment::update::MatrixUpdate;
use crate::memory::service::{Edited, Learned};
use crate::memory::store::{Hit, Item, ItemId};
use crate::protocol::{Event, TaskId};
use crate::tui::catalog::PastRun;

use super::matrix::ForkOrigin;

/// Re-runs of a forked subtask's original setup: enough to see whether its outcome repeats.
pub const FORK_REPETITIONS: u32 = 3;

/// The five screens, in tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Run,
    Agents,
    Experiments,
    Findings,
    Memory,
}

impl Screen {
    pub const ALL: [Screen; 5] = [Screen::Run, Screen::Agents, Screen::Experiments, Screen::Findings, Screen::Memory];

    pub fn title(self) -> &'static str {
        match self {
            Screen::Run => "Run",
            Screen::Agents => "Agents",
            Screen::Experiments => "Experiments",
            Screen::Findings => "Findings",
            Screen::Memory => "Memory",
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    StartRun {
        experiment: String,
    },
    CancelTask {
        uri: TaskId,
    },
    CancelRun,
    /// Write `text` to `path` atomically and report [`ShellReport::Saved`] or [`ShellReport::SaveFailed`].
    Save {
        path: PathBuf,
        text: String,
    },
    /// Validate an agent file's buffer and report [`ShellReport::Validated`].
    Validate {
        path: PathBuf,
        text: String,
        version: u64,
    },
    ListFindings,
    OpenPastRun {
        dir: PathBuf,
    },
    /// Read what was appended to a past run's `events.jsonl` from byte `offset` on (another
    /// process is still writing it) and report [`ShellReport::PastRunGrew`].
    FollowPastRun {
        dir: PathBuf,
        offset: u64,
    },
    /// Read a past matrix's `matrix.json` and `trials.jsonl` and report [`ShellReport::PastMatrix`].
    OpenPastMatrix {
        dir: PathBuf,
    },
    /// Read a past run's `notes.md` and report [`ShellReport::Notes`].
    LoadNotes {
        dir: PathBuf,
    },
    /// Fork `uri` of the run in `run`: its original setup re-run [`FORK_REPETITIONS`] times as a
    /// matrix, then its fork report written.
    Fork {
        run: PathBuf,
        uri: TaskId,
    },
    /// Read a matrix trial's events back from its folder and report [`ShellReport::TrialEvents`].
    LoadTrial {
        key: String,
        dir: PathBuf,
    },
    /// List the memory's lessons, newest first, and report [`ShellReport::MemoryListed`].
    MemoryList,
    /// Search the lessons and report [`ShellReport::MemorySearched`].
    MemorySearch {
        query: String,
    },
    /// Replace a lesson's text (embedding it again) and report [`ShellReport::MemoryEdited`].
    MemoryEdit {
        id: ItemId,
        text: String,
    },
    /// Remember a lesson of the user's, for every agent, and report [`ShellReport::MemoryAdded`].
    MemoryAdd {
        text: String,
    },
    /// Keep the lessons of a run's notes (its `## Lessons`) in memory and report
    /// [`ShellReport::NotesLearned`].
    LearnNotes {
        dir: PathBuf,
        lessons: Vec<String>,
    },
    /// Find the runs that were given lesson `id` and report [`ShellReport::MemoryUsedIn`].
    MemoryUsedIn {
        id: ItemId,
    },
    /// Delete a lesson for good and report [`ShellReport::MemoryForgotten`].
    MemoryForget {
        id: ItemId,
    },
    /// Find the folder of the run `run_id` (a trial's inside its matrix), read its events and
    /// report [`ShellReport::MemoryRun`].
    OpenMemoryRun {
        run_id: String,
        seq: Option<u64>,
    },
    /// Quit once the live run (if any) has written its findings.
    Quit,
}

/// An agent file as the shell found it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentFileText {
    pub path: PathBuf,
    pub text: String,
}

/// An experiment the Experiments screen lists.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentItem {
    pub name: String,
    pub description: String,
    pub root: String,
    pub path: PathBuf,
}

/// What the shell did or saw.
#[derive(Clone, Debug)]
pub enum ShellReport {
    /// The workbench's files, read at start (and after a change on disk).
    Workbench {
        agents: Vec<AgentFileText>,
        experiments: Vec<ExperimentItem>,
        problems: Vec<String>,
    },
    RunStarting {
        experiment: String,
    },
    RunEvent(Event),
    RunFolder {
        dir: PathBuf,
    },
    /// The run could not start (bad configuration, a model that would not load).
    RunRefused {
        error: String,
    },
    /// The live run's checks once it is scored: how many passed of how many. Only for a run
    /// whose experiment has checks.
    RunScored {
        passed: usize,
        total: usize,
    },
    /// The live run's findings are complete.
    RunClosed,
    /// The run is a matrix of several trials (or a fork's re-runs), shown as such from now on.
    MatrixStarting {
        experiment: String,
        info: MatrixInfo,
        fork: Option<ForkOrigin>,
    },
    /// What the matrix runner reports.
    Matrix(MatrixUpdate),
    /// The matrix ended: its summary as its folder holds it. [`ShellReport::RunClosed`] follows.
    MatrixFinished {
        summary: Summary,
        complete: bool,
        cancelled: bool,
    },
    /// A trial's events read back from its folder `dir` (its view had been dropped to bound
    /// memory, or it is a past matrix's).
    TrialEvents {
        key: String,
        dir: PathBuf,
        events: Result<Vec<Event>, String>,
    },
    /// A fork could not start; the run on screen stays. No [`ShellReport::RunClosed`] follows.
    ForkRefused {
        error: String,
    },
    Validated {
        path: PathBuf,
        version: u64,
        diagnostics: Vec<Diagnostic>,
    },
    Saved {
        path: PathBuf,
        text: String,
    },
    SaveFailed {
        path: PathBuf,
        error: String,
    },
    Findings(Vec<PastRun>),
    PastRun {
        dir: PathBuf,
        events: Vec<Event>,
        warning: Option<String>,
    },
    /// Events appended to a followed past run, and where the next read starts.
    PastRunGrew {
        dir: PathBuf,
        events: Vec<Event>,
        offset: u64,
    },
    /// A past matrix's folder read: its plan and its records.
    PastMatrix {
        dir: PathBuf,
        matrix: MatrixFile,
        records: Vec<TrialRecord>,
    },
    Notes {
        dir: PathBuf,
        text: String,
    },
    /// The memory's lessons, newest first, and the store's file; or why they cannot be listed.
    MemoryListed(Result<(PathBuf, Vec<Item>), String>),
    /// A search's hits, best first.
    MemorySearched {
        query: String,
        hits: Result<Vec<Hit>, String>,
    },
    MemoryEdited {
        id: ItemId,
        edited: Result<Edited, String>,
    },
    MemoryAdded(Result<Learned, String>),
    /// How many of a run's notes' lessons were new to memory and how many merged into lessons
    /// it had; or why they could not be kept.
    NotesLearned(Result<(usize, usize), String>),
    /// The runs given lesson `id`, newest first (run ids; a trial as `<matrix>--<trial>`).
    MemoryUsedIn {
        id: ItemId,
        runs: Vec<String>,
    },
    MemoryForgotten {
        id: ItemId,
        forgotten: Result<Item, String>,
    },
    /// The run a lesson came from: its folder and events (and a warning about them), or why it
    /// cannot be opened (its folder is gone).
    MemoryRun {
        run_id: String,
        seq: Option<u64>,
        opened: Result<(PathBuf, Vec<Event>, Option<String>), String>,
    },
    Status(String),
}

/// A question the user must answer with `y` or `n` before anything else.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    CancelSubtree {
        uri: TaskId,
        agent: String,
        descendants: usize,
    },
    CancelMatrix {
        running: usize,
    },
    SaveInvalid {
        path: PathBuf,
        errors: usize,
    },
    QuitWhileRunning,
    QuitUnsaved {
        files: Vec<String>,
    },
    /// Delete a memory lesson for good.
    ForgetLesson {
        id: ItemId,
    },
    /// Close the lesson editor, losing its changes to `what` ("lesson #12").
    DiscardLesson {
        what: String,
    },
}
