//! `troupe run`, `run --resume`, `fork`, `merge`, `rerender` and `migrate`: runs and matrices
//! headless, with the progress line, signals (Ctrl-C, SIGTERM, a file-size limit) and exit codes.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use troupe::experiment::fork::{ForkPlan, ForkRequest, plan_fork};
use troupe::experiment::runner::{MatrixEnv, MatrixOptions, resume_matrix, run_matrix};
use troupe::experiment::update::MatrixUpdate;
use troupe::findings::Redactor;
use troupe::launch;
use troupe::mcp::client::McpPool;
use troupe::model::EnginePool;
use troupe::protocol::{Event, EventBody};
use troupe::runtime::{Clock, SystemClock};
use troupe::serve::matrix_progress::{MatrixProgress, trial_line};
use troupe::serve::progress::Progress;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, in_root, load};

/// What `troupe run` runs.
pub(crate) enum Target {
    Experiment(String),
    Resume(PathBuf),
    /// A fork's matrix, built from a finished run.
    Spec(Box<ForkPlan>),
}

pub(crate) async fn run(root: &Path, target: Target, options: MatrixOptions) -> ExitCode {
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
                    troupe::experiment::fork::run_fork(&workbench, spec, &original, options, env).await
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

pub(crate) async fn fork(root: &Path, request: ForkRequest) -> ExitCode {
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
pub(crate) fn rerender(folder: &Path, out: Option<&Path>) -> ExitCode {
    let out = out.unwrap_or(folder);
    let rendered = if folder.join(troupe::experiment::store::MATRIX_FILE).is_file() {
        troupe::experiment::store::rerender_matrix(folder, out).map_err(|e| e.to_string())
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
pub(crate) fn migrate(folder: &Path) -> ExitCode {
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

pub(crate) fn merge(root: &Path, runs: Vec<PathBuf>) -> ExitCode {
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
