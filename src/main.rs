//! The `troupe` command line: parses arguments, maps outcomes to exit codes, and drives the
//! headless view. Everything else lives in the library.
//!
//! Exit codes: 0 success, 1 the run failed, 2 bad configuration or usage, 130 interrupted.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use troupe::config::{Workbench, load_workbench, render_diagnostics};
use troupe::launch::{self, LaunchError};
use troupe::protocol::{Event, EventBody, Op, RunStatus};
use troupe::runtime::{Clock, SystemClock};
use troupe::serve::progress::Progress;

#[derive(Parser)]
#[command(name = "troupe", version, about = "A workbench for multi-agent LLM experiments")]
struct Cli {
    /// The workbench folder: troupe.toml, agents/, experiments/, findings/.
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        /// The run folder.
        run: PathBuf,
    },
}

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check => check(&cli.root),
        Command::Run { experiment } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("error: cannot start the async runtime: {err}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            runtime.block_on(run(&cli.root, &experiment))
        }
        Command::Rerender { run } => match troupe::findings::rerender(&run) {
            Ok(folder) => {
                println!("{}", folder.dir.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(EXIT_FAILED)
            }
        },
    }
}

/// Loads the workbench, printing diagnostics; `None` when it has errors.
fn load(root: &std::path::Path) -> Option<Workbench> {
    if !root.is_dir() {
        eprintln!(
            "error: the workbench folder {} does not exist\n  = hint: pass --root DIR, or run troupe inside a folder with troupe.toml and agents/",
            root.display()
        );
        return None;
    }
    let loaded = load_workbench(root);
    if !loaded.diagnostics.is_empty() {
        eprint!("{}", render_diagnostics(&loaded.diagnostics));
    }
    loaded.workbench
}

fn check(root: &std::path::Path) -> ExitCode {
    match load(root) {
        Some(workbench) => {
            eprintln!(
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

async fn run(root: &std::path::Path, experiment: &str) -> ExitCode {
    let Some(workbench) = load(root) else { return ExitCode::from(EXIT_CONFIG) };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let salt = (now as u32) ^ std::process::id().rotate_left(16);
    let prepared = match launch::prepare(&workbench, experiment, now, salt) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut launched = match launch::launch(prepared, clock.clone()) {
        Ok(launched) => launched,
        Err(err @ (LaunchError::Findings(_) | LaunchError::Start(_))) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
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
                    log_line(&event);
                }
            }
            signal = tokio::signal::ctrl_c() => {
                if signal.is_err() || interrupted {
                    // Second Ctrl-C: leave now; events.jsonl already holds everything so far.
                    clear_line(live);
                    eprintln!("interrupted again: stopping at once; the run folder is {}", launched.dir().display());
                    return ExitCode::from(EXIT_INTERRUPTED);
                }
                interrupted = true;
                clear_line(live);
                eprintln!("cancelling every task… (Ctrl-C again to quit at once)");
                launched.send(Op::CancelRun);
            }
            _ = tick.tick(), if live => {
                frame += 1;
                eprint!("\r\x1b[2K{}", progress.line(clock.now(), frame));
                let _ = std::io::stderr().flush(); // a closed stderr only loses the progress line
            }
        }
    }
    clear_line(live);
    let (summary, folder) = match launched.finish().await {
        Ok(done) => done,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    eprintln!("{}", progress.summary());
    eprintln!("findings: {}", folder.dir.display());
    println!("{}", folder.dir.display());
    match summary.status {
        RunStatus::Completed => ExitCode::SUCCESS,
        RunStatus::Cancelled if interrupted => ExitCode::from(EXIT_INTERRUPTED),
        RunStatus::Cancelled | RunStatus::Failed => ExitCode::from(EXIT_FAILED),
    }
}

fn clear_line(live: bool) {
    if live {
        eprint!("\r\x1b[2K");
    }
}

/// Without a terminal (CI logs, pipes), a line per task created or ended instead of a
/// redrawn progress line.
fn log_line(event: &Event) {
    match &event.body {
        EventBody::TaskCreated { uri, kind, agent, model, .. } => {
            eprintln!("started   {uri} {} {agent} ({model})", kind.as_str());
        }
        EventBody::TaskStatus { uri, status, error, .. } if status.is_terminal() => match error {
            Some(error) => eprintln!("{:<9} {uri}: {error}", status.as_str()),
            None => eprintln!("{:<9} {uri}", status.as_str()),
        },
        EventBody::LimitHit { uri, message, .. } => eprintln!("limit     {uri}: {message}"),
        _ => {}
    }
}
