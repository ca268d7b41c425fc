//! The `troupe` command line: parses arguments, maps outcomes to exit codes, and drives the
//! headless view. Everything else lives in the library.
//!
//! Exit codes: 0 success, 1 the run failed, 2 bad configuration or usage, 130 interrupted.
//! Output never panics: a closed or full stderr/stdout loses text, not the run.

#[macro_use]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::mcp::{McpCommand, mcp};
use cli::memory::{MemoryCommand, memory};
use cli::models::{ModelsCommand, models};
use cli::run::{Target, fork, merge, migrate, rerender, run};
use cli::{EXIT_CONFIG, EXIT_FAILED, async_runtime, check, in_root, workbench};
use troupe::experiment::fork::ForkRequest;
use troupe::experiment::runner::MatrixOptions;

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
        /// An experiment's name or its file (optional with --resume).
        #[arg(required_unless_present = "resume")]
        experiment: Option<String>,
        /// Run only this share of the matrix's trials: i/n (the same split on every machine).
        #[arg(long, value_name = "I/N")]
        shard: Option<troupe::experiment::plan::Shard>,
        /// Finish the matrix in this run folder, without redoing its recorded trials.
        #[arg(long, value_name = "RUN FOLDER", conflicts_with = "experiment")]
        resume: Option<PathBuf>,
        /// Trials at once (default: the experiment's `concurrency`; 1 on the embedded model, else 4).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
        /// Long-term memory: on (recall and learn), off, or frozen (recall, never write);
        /// overrides the experiment's and its variants' `memory`.
        #[arg(long, value_name = "on|off|frozen")]
        memory: Option<troupe::config::MemoryMode>,
    },
    /// Re-run one subtask of a finished run from its recorded start, as a small matrix: the
    /// same setup again, and with another expert or model.
    Fork {
        /// The run folder (or a trial's folder inside a matrix).
        run: PathBuf,
        /// The subtask to re-run: subtask://…
        uri: String,
        /// Re-run it with this expert instead.
        #[arg(long)]
        agent: Option<String>,
        /// Re-run it on this model alias instead.
        #[arg(long)]
        model: Option<String>,
        /// Runs of each setup.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repetitions: u32,
    },
    /// Join the run folders of a sharded matrix into one run with one report.
    Merge {
        /// The shards' run folders.
        #[arg(required = true, num_args = 1..)]
        runs: Vec<PathBuf>,
    },
    /// Render transcript.md and report.md again from a run folder's events.jsonl (for a run
    /// that was killed); for a matrix folder, also its summary, report and charts.
    Rerender {
        /// The run folder (relative to the current folder or to --root).
        run: PathBuf,
        /// Write the renderings into this folder instead, leaving the run folder as it is.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Rewrite a run folder written by an older troupe in the current format, atomically.
    /// (Older folders are always read as they are; this only saves upgrading them each time.)
    Migrate {
        /// The run folder (relative to the current folder or to --root).
        run: PathBuf,
    },
    /// The embedded models' files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// The workbench's memory (.troupe/memory.sqlite): see, search and correct its lessons and
    /// episodes, and keep them in git as JSON lines.
    Memory {
        #[command(subcommand)]
        command: MemoryCommand,
    },
    /// MCP servers: the ones experts use ([mcp.servers.<name>] in troupe.toml).
    Mcp {
        #[command(subcommand)]
        command: McpCommand,
    },
}

fn main() -> ExitCode {
    // Before anything else: this build uses x86-64-v3 instructions throughout.
    if let Err(err) = troupe::model::local::check_cpu() {
        say!("error: {err}");
        return ExitCode::from(EXIT_FAILED);
    }
    let cli = Cli::parse();
    // The terminal app owns the screen: its diagnostics go to a file under the workbench.
    let log = match &cli.command {
        // (Only in a folder that exists: a wrong --root is an error, not a folder to create.)
        None | Some(Command::Watch { .. }) if cli.root.is_dir() => troupe::logging::workbench_log(&cli.root)
            .map(troupe::logging::LogTarget::File)
            .map_err(|e| format!("{}: {e}", cli.root.join(".troupe").display())),
        None | Some(_) => Ok(troupe::logging::LogTarget::Stderr),
    };
    if let Err(err) = log.and_then(troupe::logging::install) {
        say!("warning: troupe's log cannot be written ({err}); its warnings are dropped");
    }
    match cli.command {
        None => workbench(&cli.root, None),
        Some(Command::Watch { experiment }) => workbench(&cli.root, Some(experiment)),
        Some(Command::Check) => check(&cli.root),
        Some(Command::Run { experiment, shard, resume, concurrency, memory }) => {
            let Some(runtime) = async_runtime() else { return ExitCode::from(EXIT_FAILED) };
            let resume = resume.map(|dir| in_root(&cli.root, dir));
            let target = match (experiment, resume) {
                (_, Some(dir)) => Target::Resume(dir),
                (Some(experiment), None) => Target::Experiment(experiment),
                (None, None) => return ExitCode::from(EXIT_CONFIG),
            };
            let options = MatrixOptions { shard, concurrency, forward_events: true, memory };
            runtime.block_on(run(&cli.root, target, options))
        }
        Some(Command::Merge { runs }) => merge(&cli.root, runs),
        Some(Command::Fork { run, uri, agent, model, repetitions }) => {
            let Some(runtime) = async_runtime() else { return ExitCode::from(EXIT_FAILED) };
            let request = ForkRequest { run: in_root(&cli.root, run), uri, agent, model, repetitions };
            runtime.block_on(fork(&cli.root, request))
        }
        Some(Command::Rerender { run, out }) => rerender(&in_root(&cli.root, run), out.as_deref()),
        Some(Command::Migrate { run }) => migrate(&in_root(&cli.root, run)),
        Some(Command::Models { command }) => models(command),
        Some(Command::Memory { command }) => memory(&cli.root, command),
        Some(Command::Mcp { command }) => {
            let Some(runtime) = async_runtime() else { return ExitCode::from(EXIT_FAILED) };
            runtime.block_on(mcp(&cli.root, command))
        }
    }
}
