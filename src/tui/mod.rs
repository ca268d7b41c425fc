//! The workbench: the terminal app `troupe` opens. This module is its shell: it owns the
//! terminal, the input, the live run and the file work, and drives the pure parts.
//!
//! Code map: [`tree`] is the run view model (pure, reduces events); [`transcript`] wraps a
//! task's conversation into lines; [`app`] holds the screens' state and turns keys into
//! [`app::Command`]s; [`layout`] places regions; [`render`] and [`highlight`] draw.
//!
//! Invariants: the shell never blocks on model, run or file work: runs are pumped by their own
//! task and files are read, written and validated on blocking threads that report back. A
//! burst of events or keys is drained before one frame is drawn, and frames are at most one
//! per [`FRAME`]. The terminal is restored on every way out: quit, error, panic, SIGTERM and
//! SIGINT.

pub mod app;
pub mod highlight;
pub mod layout;
pub mod render;
pub mod transcript;
pub mod tree;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream};
use futures_core::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Severity, check_agent_text, load_workbench};
use crate::findings;
use crate::launch;
use crate::protocol::Op;
use crate::runtime::{Clock, SystemClock};

use app::{AgentFileText, App, Command, ExperimentItem, Report};

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
    Ok(exit)
}

/// The live run's pump: ops go in, events come out as reports.
struct LiveRun {
    ops: mpsc::UnboundedSender<Op>,
}

struct Shell {
    app: App,
    clock: Arc<dyn Clock>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports: mpsc::UnboundedReceiver<Report>,
    validate_tx: mpsc::UnboundedSender<(PathBuf, String, u64)>,
    live: Option<LiveRun>,
    /// The embedded model stays loaded between runs (loading it takes a second or more).
    engines: crate::model::EnginePool,
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
            let _ = live.ops.send(Op::CancelRun); // the run may have just ended
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.live.is_some() {
                match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                    Ok(Some(Report::RunClosed)) | Ok(None) | Err(_) => break,
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

    fn handle_report(&mut self, report: Report) {
        if matches!(report, Report::RunClosed) {
            self.live = None;
        }
        let saved_agent =
            matches!(&report, Report::Saved { path, .. } if path.extension().is_some_and(|e| e == "toml"));
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
                Some(live) => {
                    let _ = live.ops.send(Op::CancelRun); // the run may have just ended
                }
                None if self.app.quitting => self.quit = true,
                None => {}
            },
            Command::Save { path, text } => {
                blocking(reports, move || match crate::fsutil::write_atomic(&path, text.as_bytes()) {
                    Ok(()) => Report::Saved { path, text },
                    Err(err) => Report::SaveFailed { path, error: err.to_string() },
                });
            }
            Command::Validate { path, text, version } => {
                let _ = self.validate_tx.send((path, text, version)); // the validator lives as long as the shell
            }
            Command::ListFindings => {
                let dir = self.app.root.join("findings");
                blocking(reports, move || Report::Findings(findings::list_runs(&dir)));
            }
            Command::OpenPastRun { dir } => {
                blocking(reports, move || match findings::read_events(&dir.join("events.jsonl")) {
                    Ok((events, warning)) => Report::PastRun { dir, events, warning },
                    Err(err) => Report::Status(format!("cannot open the run: {err}")),
                });
            }
            Command::LoadNotes { dir } => {
                blocking(reports, move || {
                    let text = std::fs::read_to_string(app::notes_path(&dir)).unwrap_or_default();
                    Report::Notes { dir, text }
                });
            }
            Command::Quit => {
                if self.live.is_none() {
                    self.quit = true;
                }
            }
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
        let (ops_tx, mut ops) = mpsc::unbounded_channel::<Op>();
        self.live = Some(LiveRun { ops: ops_tx });
        let reports = self.reports_tx.clone();
        let root = self.app.root.clone();
        let clock = self.clock.clone();
        let engines = self.engines.clone();
        let _ = reports.send(Report::RunStarting { experiment: experiment.clone() }); // the receiver is ours
        tokio::spawn(async move {
            match launch_run(root, experiment, clock, engines, reports.clone()).await {
                Ok(mut launched) => {
                    let _ = reports.send(Report::RunFolder { dir: launched.dir().to_path_buf() });
                    let mut ops_open = true;
                    loop {
                        tokio::select! {
                            event = launched.next_event() => match event {
                                Some(event) => { let _ = reports.send(Report::RunEvent(event)); }
                                None => break,
                            },
                            op = ops.recv(), if ops_open => match op {
                                Some(op) => launched.send(op),
                                None => ops_open = false,
                            },
                        }
                    }
                    if let Err(err) = launched.finish().await {
                        let _ = reports.send(Report::Status(format!("writing the findings failed: {err}")));
                    }
                }
                Err(error) => {
                    let _ = reports.send(Report::RunRefused { error }); // the shell may be quitting
                }
            }
            let _ = reports.send(Report::RunClosed);
        });
    }
}

/// Loads the workbench as it is on disk and starts `experiment`, exactly as `troupe run` does.
/// Loading and readying the model (maybe fetching it) is blocking work, done off the workers.
async fn launch_run(
    root: PathBuf,
    experiment: String,
    clock: Arc<dyn Clock>,
    engines: crate::model::EnginePool,
    reports: mpsc::UnboundedSender<Report>,
) -> Result<launch::Launched, String> {
    let prepare_clock = clock.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let loaded = load_workbench(&root);
        let Some(workbench) = loaded.workbench else {
            let errors: Vec<String> =
                loaded.diagnostics.iter().filter(|d| d.severity == Severity::Error).map(ToString::to_string).collect();
            return Err(format!("the workbench has errors; `troupe check` shows them all: {}", errors.join("; ")));
        };
        let now = prepare_clock.now();
        let mut status = |line: &str| {
            let _ = reports.send(Report::Status(line.to_owned())); // the shell may be quitting
        };
        launch::prepare_in(&workbench, &experiment, now, launch::run_salt(now), &mut status, &engines)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|join| format!("starting the run failed: {join}"))??;
    launch::launch(prepared, clock).map_err(|err| err.to_string())
}

/// Runs `work` on a blocking thread and reports its outcome.
fn blocking(reports: mpsc::UnboundedSender<Report>, work: impl FnOnce() -> Report + Send + 'static) {
    tokio::task::spawn_blocking(move || {
        let _ = reports.send(work()); // the shell may be quitting
    });
}

/// Validates agent buffers off the UI: of several versions of a file queued, only the newest
/// is checked.
fn spawn_validator(
    root: PathBuf,
    reports: mpsc::UnboundedSender<Report>,
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
                    let _ = reports.send(Report::Validated { path, version, diagnostics }); // the shell may be quitting
                }
            });
            let _ = done.await;
        }
    });
    tx
}

/// The agent files' texts and the experiments, as the Agents and Experiments screens list them.
fn workbench_report(root: &Path) -> Report {
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
    Report::Workbench { agents, experiments, problems }
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
