//! The workbench: the terminal app `troupe` opens. This module is its shell: it owns the
//! terminal, the input, the live run and the file work, and drives the pure parts.
//!
//! Code map: [`tree`] is the run view model (pure, reduces events); [`run_pane`] is one run on
//! screen; [`matrix`] is a matrix run's (progress, per-variant comparison, one trial's run at a
//! time); [`transcript`] wraps a task's conversation into lines; [`messages`] are what the app,
//! the screens and this shell say to each other; [`app`] dispatches keys and reports to the
//! [`screens`], each owning its state, keys and reports; [`layout`] places regions; [`render`]
//! (a module per screen) and [`highlight`] draw.
//!
//! Every run goes through the matrix runner, as `troupe run` does, so a run ends the same way
//! wherever it was started (record, checks, use counts, episode, reflection). An experiment of
//! one trial is shown as a live run: its events are forwarded as run events and the user's ops
//! (cancel a task) reach it; one of several trials (and a fork's re-runs) is shown as a matrix.
//!
//! Invariants: the shell never blocks on model, run or file work: runs are pumped by their own
//! task and files are read, written and validated on blocking threads that report back. A
//! burst of events or keys is drained before one frame is drawn, and frames are at most one
//! per [`FRAME`]. The terminal is restored on every way out: quit, error, panic, SIGTERM and
//! SIGINT.
//!
//! Longer than most files on purpose: the shell is one event loop (input, reports, ticks,
//! signals) and the pumps it spawns share its channels; the screens, their drawing and the
//! messages are modules of their own. The pumps are the next candidates to move out.

pub mod app;
pub mod catalog;
pub mod highlight;
pub mod layout;
pub mod matrix;
pub mod messages;
pub mod render;
pub mod run_pane;
pub mod screens;
pub mod transcript;
pub mod tree;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream};
use futures_core::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ExperimentSpec, Severity, Workbench, check_agent_text, load_workbench};
use crate::experiment::fork::{ForkPlan, ForkRequest, Original, plan_fork, run_fork};
use crate::experiment::plan::plan;
use crate::experiment::runner::{MatrixEnv, MatrixOptions, run_matrix, run_single_spec};
use crate::experiment::store;
use crate::experiment::update::MatrixUpdate;
use crate::findings;
use crate::launch;
use crate::memory::service::{Memory, ServiceError};
use crate::memory::store::{Author, Filter, ItemKind, Provenance, Scope};
use crate::protocol::{Op, TaskId};
use crate::runtime::{Clock, SystemClock};

use app::App;
use matrix::ForkOrigin;
use messages::{AgentFileText, Command, ExperimentItem, ShellReport};
use screens::memory;

/// The shortest time between two frames: 60 a second at most, so a token delta is on screen
/// well within 33 ms while a burst of thousands costs one draw.
pub const FRAME: Duration = Duration::from_millis(16);
/// How often the clock moves the spinners and elapsed times (and notes autosave is checked).
const TICK: Duration = Duration::from_millis(100);

/// How the workbench starts.
#[derive(Clone, Debug)]
pub struct Options {
    pub root: PathBuf,
    /// Start this experiment at once (`troupe watch`).
    pub watch: Option<String>,
}

/// Why the workbench could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(
        "the workbench needs a terminal: {0}\n  = hint: run it in a terminal, or use `troupe run <experiment>` for a headless run"
    )]
    Terminal(std::io::Error),
}

/// How the workbench ended, for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Quit,
    /// SIGINT or SIGTERM from outside.
    Signalled,
}

/// Puts the terminal back however the workbench ends, including by unwinding.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture); // nothing to do if it fails
        ratatui::restore();
    }
}

/// Runs the workbench until the user quits.
pub async fn run(options: Options) -> Result<Exit, TuiError> {
    // Checked before touching the terminal so the error is readable.
    crossterm::terminal::enable_raw_mode().map_err(TuiError::Terminal)?;
    let _ = crossterm::terminal::disable_raw_mode();
    // `init` also restores the terminal before a panic message is printed.
    let mut terminal = ratatui::try_init().map_err(TuiError::Terminal)?;
    let _guard = TerminalGuard;
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture); // mouse is optional
    let mut shell = Shell::new(options.root.clone());
    if let Some(experiment) = options.watch {
        shell.execute(Command::StartRun { experiment });
    }
    let exit = shell.run(&mut terminal).await;
    // MCP servers started for runs exit with the workbench, closed cleanly.
    shell.mcp.close().await;
    Ok(exit)
}

/// The live run's pump: ops go in, events come out as reports. A matrix takes no ops: its
/// token cancels it (running trials stop, finished ones are kept).
struct LiveRun {
    ops: mpsc::UnboundedSender<Op>,
    cancel: CancellationToken,
}

impl LiveRun {
    fn new() -> (Self, mpsc::UnboundedReceiver<Op>) {
        let (ops, receiver) = mpsc::unbounded_channel();
        (LiveRun { ops, cancel: CancellationToken::new() }, receiver)
    }

    /// Cancels the run, whichever kind it turned out to be.
    fn cancel_all(&self) {
        let _ = self.ops.send(Op::CancelRun); // the run may have just ended, or be a matrix
        self.cancel.cancel();
    }
}

/// The shell's handles a spawned pump takes with it.
struct PumpHandles {
    reports: mpsc::UnboundedSender<ShellReport>,
    root: PathBuf,
    clock: Arc<dyn Clock>,
    engines: crate::model::EnginePool,
    mcp: crate::mcp::client::SharedPool,
}

struct Shell {
    app: App,
    clock: Arc<dyn Clock>,
    reports_tx: mpsc::UnboundedSender<ShellReport>,
    reports: mpsc::UnboundedReceiver<ShellReport>,
    validate_tx: mpsc::UnboundedSender<(PathBuf, String, u64)>,
    live: Option<LiveRun>,
    /// The embedded model stays loaded between runs (loading it takes a second or more).
    engines: crate::model::EnginePool,
    /// The workbench's MCP servers, kept connected between runs.
    mcp: crate::mcp::client::SharedPool,
    /// The memory, opened on first use and kept, so its embedder loads once.
    memory: MemorySlot,
    quit: bool,
}

impl Shell {
    fn new(root: PathBuf) -> Self {
        let root = std::path::absolute(&root).unwrap_or(root);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let validate_tx = spawn_validator(root.clone(), reports_tx.clone());
        let mut shell = Shell {
            app: App::new(root.clone()),
            clock: Arc::new(SystemClock),
            reports_tx,
            reports,
            validate_tx,
            live: None,
            engines: crate::model::EnginePool::default(),
            mcp: crate::mcp::client::SharedPool::default(),
            memory: MemorySlot::default(),
            quit: false,
        };
        shell.app.now = shell.clock.now();
        shell.read_workbench();
        shell.execute(Command::ListFindings);
        shell
    }

    async fn run(&mut self, terminal: &mut ratatui::DefaultTerminal) -> Exit {
        let mut input = EventStream::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut signals = Signals::new();
        let mut dirty = true;
        let mut last_draw = Instant::now() - FRAME;
        loop {
            if dirty && last_draw.elapsed() >= FRAME {
                let now = self.clock.now();
                for command in self.app.tick(now) {
                    self.execute(command);
                }
                let _ = terminal.draw(|frame| {
                    self.app.prepare_frame(frame.area());
                    render::draw(frame, &self.app);
                });
                last_draw = Instant::now();
                dirty = false;
            }
            if self.quit {
                return Exit::Quit;
            }
            let next_frame = last_draw + FRAME;
            tokio::select! {
                event = next_input(&mut input) => {
                    match event {
                        Some(Ok(event)) => self.handle_input(event),
                        // The terminal is gone: nobody can quit by key any more.
                        Some(Err(_)) | None => return self.shut_down().await,
                    }
                    dirty = true;
                }
                Some(report) = self.reports.recv() => {
                    self.handle_report(report);
                    // Drain the burst so it costs one frame.
                    while let Ok(report) = self.reports.try_recv() {
                        self.handle_report(report);
                    }
                    dirty = true;
                }
                _ = tick.tick() => {
                    dirty = true;
                }
                () = tokio::time::sleep_until(next_frame), if dirty => {}
                () = signals.next() => return self.shut_down().await,
            }
        }
    }

    /// SIGINT, SIGTERM or a lost terminal: cancel the run, let its findings be written, leave.
    async fn shut_down(&mut self) -> Exit {
        if let Some(live) = &self.live {
            live.cancel_all();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.live.is_some() {
                match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                    Ok(Some(ShellReport::RunClosed | ShellReport::ForkRefused { .. })) | Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
        }
        Exit::Signalled
    }

    fn handle_input(&mut self, event: TermEvent) {
        if matches!(event, TermEvent::Key(_)) {
            // A message lasts until the next key; whatever that key says replaces it.
            self.app.flash = None;
        }
        let commands = match event {
            TermEvent::Key(key) => self.app.handle_key(key),
            TermEvent::Mouse(mouse) => self.app.handle_mouse(mouse),
            TermEvent::Paste(text) => {
                let mut commands = Vec::new();
                for c in text.chars() {
                    let code =
                        if c == '\n' { crossterm::event::KeyCode::Enter } else { crossterm::event::KeyCode::Char(c) };
                    commands.extend(self.app.handle_key(crossterm::event::KeyEvent::from(code)));
                }
                commands
            }
            TermEvent::Resize(..) | TermEvent::FocusGained | TermEvent::FocusLost => Vec::new(),
        };
        for command in commands {
            self.execute(command);
        }
    }

    fn handle_report(&mut self, report: ShellReport) {
        if matches!(report, ShellReport::RunClosed | ShellReport::ForkRefused { .. }) {
            self.live = None;
        }
        let saved_agent =
            matches!(&report, ShellReport::Saved { path, .. } if path.extension().is_some_and(|e| e == "toml"));
        for command in self.app.handle_report(report) {
            self.execute(command);
        }
        if saved_agent {
            self.read_workbench();
        }
    }

    fn execute(&mut self, command: Command) {
        let reports = self.reports_tx.clone();
        match command {
            Command::StartRun { experiment } => self.start_run(experiment),
            Command::CancelTask { uri } => {
                if let Some(live) = &self.live {
                    let _ = live.ops.send(Op::CancelTask { uri }); // the run may have just ended
                }
            }
            Command::CancelRun => match &self.live {
                Some(live) => live.cancel_all(),
                None if self.app.quitting => self.quit = true,
                None => {}
            },
            Command::Save { path, text } => {
                blocking(reports, move || match crate::fsutil::write_atomic(&path, text.as_bytes()) {
                    Ok(()) => ShellReport::Saved { path, text },
                    Err(err) => ShellReport::SaveFailed { path, error: err.to_string() },
                });
            }
            Command::Validate { path, text, version } => {
                let _ = self.validate_tx.send((path, text, version)); // the validator lives as long as the shell
            }
            Command::ListFindings => {
                let dir = self.app.root.join("findings");
                blocking(reports, move || ShellReport::Findings(catalog::list_runs(&dir)));
            }
            Command::OpenPastRun { dir } => {
                blocking(reports, move || match findings::read_events(&dir.join("events.jsonl")) {
                    Ok((events, warning)) => ShellReport::PastRun { dir, events, warning },
                    Err(err) => ShellReport::Status(format!("cannot open the run: {err}")),
                });
            }
            Command::FollowPastRun { dir, offset } => {
                blocking(reports, move || match findings::read_events_from(&dir.join("events.jsonl"), offset) {
                    Ok((events, offset)) => ShellReport::PastRunGrew { dir, events, offset },
                    Err(err) => ShellReport::Status(format!("stopped following the run: {err}")),
                });
            }
            Command::OpenPastMatrix { dir } => {
                blocking(reports, move || {
                    let read = store::read_matrix(&dir).and_then(|matrix| Ok((matrix, store::read_records(&dir)?)));
                    match read {
                        Ok((matrix, records)) => ShellReport::PastMatrix { dir, matrix, records },
                        Err(err) => ShellReport::Status(format!("cannot open the matrix: {err}")),
                    }
                });
            }
            Command::LoadNotes { dir } => {
                blocking(reports, move || {
                    let text = std::fs::read_to_string(screens::findings::notes_path(&dir)).unwrap_or_default();
                    ShellReport::Notes { dir, text }
                });
            }
            Command::Fork { run, uri } => self.start_fork(run, uri),
            Command::MemoryList => {
                let access = self.memory_access();
                blocking(reports, move || {
                    ShellReport::MemoryListed(
                        access.with(|m| Ok((m.path().to_path_buf(), m.list(&lessons(), memory::LIST_LIMIT)?))),
                    )
                });
            }
            Command::MemorySearch { query } => {
                let access = self.memory_access();
                blocking(reports, move || {
                    let hits = access.with(|m| m.search(&query, memory::SEARCH_K, lessons()));
                    ShellReport::MemorySearched { query, hits }
                });
            }
            Command::MemoryEdit { id, text } => {
                let access = self.memory_access();
                blocking(reports, move || ShellReport::MemoryEdited { id, edited: access.with(|m| m.edit(id, &text)) });
            }
            Command::MemoryAdd { text } => {
                let access = self.memory_access();
                blocking(reports, move || {
                    ShellReport::MemoryAdded(
                        access.with(|m| m.add(&text, Scope::Global, Author::User, Provenance::default())),
                    )
                });
            }
            Command::LearnNotes { dir, lessons } => {
                let access = self.memory_access();
                let run_id = dir.file_name().map(|name| name.to_string_lossy().into_owned());
                blocking(reports, move || {
                    ShellReport::NotesLearned(access.with(|m| keep_notes_lessons(m, run_id.as_deref(), &lessons)))
                });
            }
            Command::MemoryUsedIn { id } => {
                let findings = self.app.root.join("findings");
                blocking(reports, move || ShellReport::MemoryUsedIn {
                    id,
                    runs: catalog::runs_recalling(&findings, id),
                });
            }
            Command::MemoryForget { id } => {
                let access = self.memory_access();
                blocking(reports, move || ShellReport::MemoryForgotten {
                    id,
                    forgotten: access.with(|m| m.forget(id)),
                });
            }
            Command::OpenMemoryRun { run_id, seq } => {
                let findings = self.app.root.join("findings");
                blocking(reports, move || {
                    let opened = match run_folder(&findings, &run_id) {
                        Some(dir) => match findings::read_events(&dir.join(findings::EVENTS_FILE)) {
                            Ok((events, warning)) => Ok((dir, events, warning)),
                            Err(err) => Err(format!("cannot open run {run_id}: {err}")),
                        },
                        None => Err(format!(
                            "run {run_id} is no longer in {}: its folder was deleted or moved",
                            findings.display()
                        )),
                    };
                    ShellReport::MemoryRun { run_id, seq, opened }
                });
            }
            Command::LoadTrial { key, dir } => {
                blocking(reports, move || {
                    let events = findings::read_events(&dir.join("events.jsonl"))
                        .map(|(events, _)| events)
                        .map_err(|err| err.to_string());
                    ShellReport::TrialEvents { key, dir, events }
                });
            }
            Command::Quit => {
                if self.live.is_none() {
                    self.quit = true;
                }
            }
        }
    }

    /// What a memory operation needs to reach the memory from a blocking thread.
    fn memory_access(&self) -> MemoryAccess {
        MemoryAccess { slot: self.memory.clone(), root: self.app.root.clone(), reports: self.reports_tx.clone() }
    }

    /// What a spawned pump takes from the shell: its own clones of the shell's handles.
    fn pump_handles(&self) -> PumpHandles {
        PumpHandles {
            reports: self.reports_tx.clone(),
            root: self.app.root.clone(),
            clock: self.clock.clone(),
            engines: self.engines.clone(),
            mcp: self.mcp.clone(),
        }
    }

    /// Reads the agent files and experiments as they are on disk.
    fn read_workbench(&mut self) {
        let root = self.app.root.clone();
        blocking(self.reports_tx.clone(), move || workbench_report(&root));
    }

    fn start_run(&mut self, experiment: String) {
        if self.live.is_some() {
            return;
        }
        let (live, ops) = LiveRun::new();
        let cancel = live.cancel.clone();
        self.live = Some(live);
        let PumpHandles { reports, root, clock, engines, mcp } = self.pump_handles();
        let _ = reports.send(ShellReport::RunStarting { experiment: experiment.clone() }); // the receiver is ours
        tokio::spawn(async move {
            match load_experiment(root, experiment.clone()).await {
                Ok((workbench, spec)) if plan(&spec).is_single() => {
                    let mcp = mcp.for_servers(&workbench.settings.mcp_servers);
                    pump_single(workbench, spec, (engines, mcp), clock, reports.clone(), cancel, ops).await;
                }
                Ok((workbench, spec)) => {
                    let info = plan(&spec).info;
                    let _ =
                        reports.send(ShellReport::MatrixStarting { experiment: spec.name.clone(), info, fork: None });
                    let target = MatrixTarget::Experiment(experiment);
                    let mcp = mcp.for_servers(&workbench.settings.mcp_servers);
                    pump_matrix(workbench, spec, target, (engines, mcp), clock, reports.clone(), cancel).await;
                }
                Err(error) => {
                    let _ = reports.send(ShellReport::RunRefused { error }); // the shell may be quitting
                }
            }
            let _ = reports.send(ShellReport::RunClosed);
        });
    }

    /// Forks `uri` of the finished run in `run` and runs the fork's matrix like any other.
    fn start_fork(&mut self, run: PathBuf, uri: TaskId) {
        if self.live.is_some() {
            // The app counts the fork as started: it must hear that it did not.
            let error = "a run is still closing; fork again in a moment".to_owned();
            let _ = self.reports_tx.send(ShellReport::ForkRefused { error }); // the receiver is ours
            return;
        }
        let (live, _ops) = LiveRun::new(); // a matrix takes no ops
        let cancel = live.cancel.clone();
        self.live = Some(live);
        let PumpHandles { reports, root, clock, engines, mcp } = self.pump_handles();
        tokio::spawn(async move {
            let request = ForkRequest {
                run,
                uri: uri.to_string(),
                agent: None,
                model: None,
                repetitions: messages::FORK_REPETITIONS,
            };
            let planned = tokio::task::spawn_blocking(move || {
                let workbench = load(&root)?;
                plan_fork(&workbench, &request).map_err(|err| format!("cannot fork: {err}"))
            })
            .await
            .map_err(|join| format!("forking failed: {join}"))
            .and_then(|planned| planned);
            let forked = match planned {
                Ok(forked) if !cancel.is_cancelled() => forked,
                Ok(_) => {
                    let _ = reports.send(ShellReport::ForkRefused { error: "the fork was cancelled".to_owned() });
                    return;
                }
                Err(error) => {
                    let _ = reports.send(ShellReport::ForkRefused { error }); // the shell may be quitting
                    return;
                }
            };
            let ForkPlan { workbench, spec, original, from_snapshot } = forked;
            let fork = ForkOrigin {
                run: original.run.clone(),
                uri,
                agent: original.agent.clone(),
                model: original.model.clone(),
            };
            let info = plan(&spec).info;
            let _ = reports.send(ShellReport::MatrixStarting { experiment: spec.name.clone(), info, fork: Some(fork) });
            if !from_snapshot {
                let _ = reports.send(ShellReport::Status(
                    "the run's config snapshot could not be loaded, so the current files are used".to_owned(),
                ));
            }
            let target = MatrixTarget::Fork(Box::new(original));
            let mcp = mcp.for_servers(&workbench.settings.mcp_servers);
            pump_matrix(workbench, spec, target, (engines, mcp), clock, reports.clone(), cancel).await;
            let _ = reports.send(ShellReport::RunClosed);
        });
    }
}

/// What a matrix is of.
enum MatrixTarget {
    /// An experiment of the workbench, by the name it was started with.
    Experiment(String),
    /// A fork's re-runs; its report is written when they end.
    Fork(Box<Original>),
}

/// The workbench as it is on disk and its experiment `experiment`, loaded off the workers.
async fn load_experiment(root: PathBuf, experiment: String) -> Result<(Workbench, ExperimentSpec), String> {
    tokio::task::spawn_blocking(move || {
        let workbench = load(&root)?;
        let spec = launch::find_experiment(&workbench, &experiment).map_err(|err| err.to_string())?.clone();
        Ok((workbench, spec))
    })
    .await
    .map_err(|join| format!("starting the run failed: {join}"))?
}

/// The workbench as it is on disk, or why it cannot run.
fn load(root: &Path) -> Result<Workbench, String> {
    let loaded = load_workbench(root);
    loaded.workbench.ok_or_else(|| {
        let errors: Vec<String> =
            loaded.diagnostics.iter().filter(|d| d.severity == Severity::Error).map(ToString::to_string).collect();
        format!("the workbench has errors; `troupe check` shows them all: {}", errors.join("; "))
    })
}

/// Runs a matrix through the runner, forwarding its updates as reports, and reports how it
/// ended ([`ShellReport::MatrixFinished`], or [`ShellReport::RunRefused`] with the runner's error). The
/// caller sends [`ShellReport::RunClosed`] after.
async fn pump_matrix(
    workbench: Workbench,
    spec: ExperimentSpec,
    target: MatrixTarget,
    (engines, mcp): (crate::model::EnginePool, Arc<crate::mcp::client::McpPool>),
    clock: Arc<dyn Clock>,
    reports: mpsc::UnboundedSender<ShellReport>,
    cancel: CancellationToken,
) {
    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    let options = MatrixOptions { shard: None, concurrency: None, forward_events: true, memory: None };
    let env = MatrixEnv { pool: engines, clock, updates: updates_tx, cancel, mcp };
    let run = async {
        match &target {
            MatrixTarget::Experiment(name) => run_matrix(&workbench, name, options, env).await,
            MatrixTarget::Fork(original) => run_fork(&workbench, spec, original, options, env).await,
        }
    };
    // Ends when the runner drops its last sender, that is once every trial has reported.
    let forward = async {
        while let Some(update) = updates.recv().await {
            let _ = reports.send(ShellReport::Matrix(update)); // the shell may be quitting
        }
    };
    let (outcome, ()) = tokio::join!(run, forward);
    match outcome {
        Ok(outcome) => {
            let _ = reports.send(ShellReport::MatrixFinished {
                summary: outcome.summary,
                complete: outcome.complete,
                cancelled: outcome.cancelled,
            });
        }
        Err(err) => {
            let _ = reports.send(ShellReport::RunRefused { error: err.to_string() });
        }
    }
}

/// Runs an experiment of one trial through the runner, exactly as `troupe run` does (its
/// record, checks, use counts, episode and reflection), and shows it as a live run: its events
/// become [`ShellReport::RunEvent`]s and `ops` (cancelling a task) reach it. The caller sends
/// [`ShellReport::RunClosed`] after.
async fn pump_single(
    workbench: Workbench,
    spec: ExperimentSpec,
    (engines, mcp): (crate::model::EnginePool, Arc<crate::mcp::client::McpPool>),
    clock: Arc<dyn Clock>,
    reports: mpsc::UnboundedSender<ShellReport>,
    cancel: CancellationToken,
    ops: mpsc::UnboundedReceiver<Op>,
) {
    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    let options = MatrixOptions { shard: None, concurrency: None, forward_events: true, memory: None };
    let env = MatrixEnv { pool: engines, clock, updates: updates_tx, cancel, mcp };
    let run = run_single_spec(&workbench, spec, options, env, ops);
    // Ends when the runner drops its last sender, that is once the run is scored and learned from.
    let forward = async {
        let mut folder = None;
        let mut started = false;
        while let Some(update) = updates.recv().await {
            // The shell may be quitting: every send below may fail, harmlessly.
            match update {
                MatrixUpdate::TrialStarted { dir, .. } => folder = Some(dir),
                MatrixUpdate::Event { event, .. } => {
                    // The folder exists once the run has started, that is by its first event.
                    if !started && let Some(dir) = folder.take() {
                        let _ = reports.send(ShellReport::RunFolder { dir });
                    }
                    started = true;
                    let _ = reports.send(ShellReport::RunEvent(event));
                }
                MatrixUpdate::TrialFinished { record } => match record.error {
                    Some(error) if !started => {
                        let _ = reports.send(ShellReport::RunRefused { error });
                    }
                    _ if !record.checks.is_empty() => {
                        let passed = record.checks.iter().filter(|c| c.pass).count();
                        let _ = reports.send(ShellReport::RunScored { passed, total: record.checks.len() });
                    }
                    _ => {}
                },
                MatrixUpdate::Status(line) => {
                    let _ = reports.send(ShellReport::Status(line));
                }
                MatrixUpdate::Planned { .. } => {}
            }
        }
    };
    let (outcome, ()) = tokio::join!(run, forward);
    if let Err(err) = outcome {
        let _ = reports.send(ShellReport::RunRefused { error: err.to_string() }); // the shell may be quitting
    }
}

/// The memory once opened; `None` before, and after a store error (so the next operation opens
/// the store again, say once a damaged file was moved aside).
type MemorySlot = Arc<Mutex<Option<Arc<Memory>>>>;

/// The memory as a blocking thread reaches it.
struct MemoryAccess {
    slot: MemorySlot,
    root: PathBuf,
    reports: mpsc::UnboundedSender<ShellReport>,
}

impl MemoryAccess {
    /// Runs `op` on the memory, opening it first if needed; an error is its message. Opening is
    /// serialised; operations then run side by side (a listing does not wait for a search that
    /// loads the embedder).
    fn with<T>(&self, op: impl FnOnce(&Memory) -> Result<T, ServiceError>) -> Result<T, String> {
        let memory = self.open()?;
        op(&memory).map_err(|err| {
            if matches!(err, ServiceError::Store(_)) {
                *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
            err.to_string()
        })
    }

    fn open(&self) -> Result<Arc<Memory>, String> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(memory) = slot.as_ref() {
            return Ok(memory.clone());
        }
        // `[memory]` in troupe.toml says where the store is.
        let workbench = load(&self.root).map_err(|err| format!("cannot open the memory: {err}"))?;
        let reports = self.reports.clone();
        let memory = Memory::open(&workbench.settings.memory, &workbench.root)
            .map_err(|err| err.to_string())?
            .with_status(move |line| {
                let _ = reports.send(ShellReport::Status(line.to_owned())); // the shell may be quitting
            });
        let memory = Arc::new(memory);
        *slot = Some(memory.clone());
        Ok(memory)
    }
}

/// Keeps the lessons of run `run_id`'s notes in memory, written by the user through the notes
/// (author `notes`, the run as provenance): each is added, or merged into the lesson it repeats,
/// so saving the same notes again (in another session) adds nothing. Returns (added, merged).
fn keep_notes_lessons(
    memory: &Memory,
    run_id: Option<&str>,
    lessons: &[String],
) -> Result<(usize, usize), ServiceError> {
    let (mut added, mut merged) = (0, 0);
    for lesson in lessons {
        let provenance = Provenance { run_id: run_id.map(str::to_owned), seq: None, expert: None };
        match memory.add(lesson, Scope::Global, Author::Notes, provenance)?.remembered {
            crate::memory::store::Remembered::Added(_) => added += 1,
            crate::memory::store::Remembered::Merged { .. } => merged += 1,
        }
    }
    Ok((added, merged))
}

/// What the Memory screen lists and searches: lessons (episodes are the runs' own record).
fn lessons() -> Filter {
    Filter { kind: Some(ItemKind::Lesson), ..Filter::default() }
}

/// The folder of the run `run_id` under `findings`: `findings/<run_id>`, or for a matrix's trial
/// (`<matrix>--<variant>--<task>--r<n>`) `findings/<matrix>/trials/<variant>--<task>--r<n>`;
/// `None` when no such folder holds an event log. An id that is not one plain name is refused.
fn run_folder(findings: &Path, run_id: &str) -> Option<PathBuf> {
    let plain = |name: &str| {
        let mut parts = Path::new(name).components();
        matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None))
    };
    if !plain(run_id) {
        return None;
    }
    let has_log = |dir: &Path| dir.join(findings::EVENTS_FILE).is_file();
    let dir = findings.join(run_id);
    if has_log(&dir) {
        return Some(dir);
    }
    run_id.match_indices("--").find_map(|(at, _)| {
        let dir = findings.join(&run_id[..at]).join("trials").join(&run_id[at + 2..]);
        has_log(&dir).then_some(dir)
    })
}

/// Runs `work` on a blocking thread and reports its outcome.
fn blocking(reports: mpsc::UnboundedSender<ShellReport>, work: impl FnOnce() -> ShellReport + Send + 'static) {
    tokio::task::spawn_blocking(move || {
        let _ = reports.send(work()); // the shell may be quitting
    });
}

/// Validates agent buffers off the UI: of several versions of a file queued, only the newest
/// is checked.
fn spawn_validator(
    root: PathBuf,
    reports: mpsc::UnboundedSender<ShellReport>,
) -> mpsc::UnboundedSender<(PathBuf, String, u64)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(PathBuf, String, u64)>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut latest: HashMap<PathBuf, (String, u64)> = HashMap::new();
            latest.insert(first.0, (first.1, first.2));
            while let Ok((path, text, version)) = rx.try_recv() {
                latest.insert(path, (text, version));
            }
            let root = root.clone();
            let reports = reports.clone();
            let done = tokio::task::spawn_blocking(move || {
                for (path, (text, version)) in latest {
                    let diagnostics = check_agent_text(&root, &path, &text);
                    let _ = reports.send(ShellReport::Validated { path, version, diagnostics }); // the shell may be quitting
                }
            });
            let _ = done.await;
        }
    });
    tx
}

/// The agent files' texts and the experiments, as the Agents and Experiments screens list them.
fn workbench_report(root: &Path) -> ShellReport {
    let mut agents = Vec::new();
    let mut problems = Vec::new();
    match std::fs::read_dir(root.join("agents")) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    match std::fs::read_to_string(&path) {
                        Ok(text) => agents.push(AgentFileText { path, text }),
                        Err(err) => problems.push(format!("{}: {err}", path.display())),
                    }
                }
            }
        }
        Err(err) => problems.push(format!("{}: {err}", root.join("agents").display())),
    }
    agents.sort_by(|a, b| a.path.cmp(&b.path));
    let loaded = load_workbench(root);
    problems.extend(loaded.diagnostics.iter().filter(|d| d.severity == Severity::Error).map(ToString::to_string));
    let experiments = loaded
        .workbench
        .map(|w| {
            w.experiments
                .values()
                .map(|e| ExperimentItem {
                    name: e.name.clone(),
                    description: e.description.clone(),
                    root: e.root.clone(),
                    path: e.path.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    ShellReport::Workbench { agents, experiments, problems }
}

async fn next_input(input: &mut EventStream) -> Option<std::io::Result<TermEvent>> {
    std::future::poll_fn(|cx| Pin::new(&mut *input).poll_next(cx)).await
}

/// SIGINT and SIGTERM from outside the terminal (raw mode turns a typed Ctrl-C into a key).
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals { interrupt: signal(SignalKind::interrupt()).ok(), terminate: signal(SignalKind::terminate()).ok() }
    }

    async fn next(&mut self) {
        let interrupt = async {
            match self.interrupt.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let terminate = async {
            match self.terminate.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
    }
}

#[cfg(test)]
mod tests;
