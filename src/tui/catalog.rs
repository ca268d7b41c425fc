//! The catalog of past runs: one [`PastRun`] per run folder under a findings directory, for the
//! workbench's Findings screen. A matrix's folder (several trials, no top-level log) is a row
//! too, with a [`MatrixBrief`] of its trials.
//!
//! Invariants:
//! - Listing never fails and never panics: a missing directory is an empty list, and a run whose
//!   log cannot be read is still listed, with what could be read and a `problem` naming the file.
//!   The same holds for a matrix's `matrix.json` and `trials.jsonl`.
//! - Cost does not grow with a run's length: only the first line of `events.jsonl` (the
//!   `run_started`) and its tail are read. The tail window starts at [`TAIL_WINDOW`] and grows
//!   only when it holds neither a `run_finished` nor a `usage` event, up to [`MAX_TAIL`].
//! - Reads stop at the length the file had when opened, so a run still being written is read
//!   as a consistent prefix.
//! - A matrix costs two small reads: `matrix.json` (the plan) and `trials.jsonl` (a line per
//!   recorded trial); its trials' logs are not opened.

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::experiment::store::{self, MATRIX_FILE};
use crate::findings::{EVENTS_FILE, started_from_id};
use crate::protocol::{Event, EventBody, Millis, RunStatus, TaskCounts, Usage};

/// The first look at a log's end. Holds a few hundred events, and a finished run's last line
/// (the `run_finished`) is almost always far shorter.
const TAIL_WINDOW: u64 = 64 * 1024;
/// How far back from the end a listing ever reads, and the longest first line it reads: beyond
/// this a run is listed with what was found, so one pathological log cannot stall the screen.
const MAX_TAIL: u64 = 8 * 1024 * 1024;

/// One run folder as the Findings screen lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PastRun {
    /// The folder's name (the run id, unless someone renamed the folder).
    pub id: String,
    pub dir: PathBuf,
    /// When `run_started` was written; `None` when the first line could not be read.
    pub started: Option<Millis>,
    pub experiment: String,
    pub root_agent: String,
    pub task: String,
    pub outcome: PastOutcome,
    /// From `run_finished`, or for an unfinished run the last `usage` event's running total.
    pub usage: Usage,
    /// From `run_finished`, or for an unfinished run the time from its start to its last event.
    pub elapsed_ms: Option<u64>,
    /// Only a finished run knows them without reading its whole log.
    pub tasks: Option<TaskCounts>,
    /// What was wrong with the log, naming the file and the line; `None` for a sound one.
    pub problem: Option<String>,
    /// Set when the folder is a matrix's (`matrix.json`, a folder per trial) rather than a run's.
    pub matrix: Option<MatrixBrief>,
}

/// A matrix folder's trials, as far as `matrix.json` and `trials.jsonl` tell.
///
/// For a matrix, [`PastRun::experiment`] is the matrix's, [`PastRun::task`] its shape
/// (`6 tasks × 2 variants × 1 repetition`), [`PastRun::usage`] the sum of its records, and the
/// outcome [`PastOutcome::Completed`] once every trial of its share is recorded, else
/// [`PastOutcome::Unfinished`] (killed, cancelled or still running: the folder does not say
/// which); [`PastOutcome::Unreadable`] when either file could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixBrief {
    /// Trials of this folder's share (all of the matrix's unless it is a shard); 0 when
    /// `matrix.json` could not be read.
    pub planned: u32,
    /// Trials recorded in `trials.jsonl`; 0 when it could not be read (the outcome is then
    /// [`PastOutcome::Unreadable`]).
    pub recorded: u32,
    /// Of `recorded`, those that passed.
    pub passed: u32,
    /// In the experiment's order.
    pub variants: Vec<String>,
}

impl PastRun {
    /// The row of `dir` before anything in it is read: named after the folder, unreadable.
    pub(crate) fn unread(dir: &Path) -> PastRun {
        PastRun {
            id: dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default(),
            dir: dir.to_owned(),
            started: None,
            experiment: String::new(),
            root_agent: String::new(),
            task: String::new(),
            outcome: PastOutcome::Unreadable,
            usage: Usage::default(),
            elapsed_ms: None,
            tasks: None,
            problem: None,
            matrix: None,
        }
    }
}

/// How a past run ended, as far as its log tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PastOutcome {
    Completed,
    Failed,
    Cancelled,
    /// No `run_finished`: the run was killed, or is still running.
    Unfinished,
    /// Nothing in the log could be read.
    Unreadable,
}

impl PastOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PastOutcome::Completed => "completed",
            PastOutcome::Failed => "failed",
            PastOutcome::Cancelled => "cancelled",
            PastOutcome::Unfinished => "unfinished",
            PastOutcome::Unreadable => "unreadable",
        }
    }
}

impl From<RunStatus> for PastOutcome {
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Completed => PastOutcome::Completed,
            RunStatus::Failed => PastOutcome::Failed,
            RunStatus::Cancelled => PastOutcome::Cancelled,
        }
    }
}

/// The runs under `findings_dir` whose agents were given the memory item `id` (a
/// `memory_recalled` event lists it), newest first: run ids as provenance names them, a
/// matrix's trial as `<matrix>--<trial folder>`. Only lines naming the event are parsed, so
/// the scan reads the logs once and costs little more than that.
pub fn runs_recalling(findings_dir: &Path, id: i64) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(findings_dir) else { return Vec::new() };
    let mut dirs: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    dirs.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    let mut runs = Vec::new();
    for (name, dir) in dirs {
        if recalls(&dir.join(EVENTS_FILE), id) {
            runs.push(name.clone());
        }
        let Ok(trials) = std::fs::read_dir(dir.join("trials")) else { continue };
        let mut trials: Vec<String> = trials.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        trials.sort_unstable();
        for trial in trials {
            if recalls(&dir.join("trials").join(&trial).join(EVENTS_FILE), id) {
                runs.push(format!("{name}--{trial}"));
            }
        }
    }
    runs
}

/// Whether the log at `path` has a `memory_recalled` event listing item `id`.
fn recalls(path: &Path, id: i64) -> bool {
    let Ok(file) = File::open(path) else { return false };
    BufReader::new(file).lines().map_while(Result::ok).filter(|line| line.contains("\"memory_recalled\"")).any(|line| {
        serde_json::from_str::<Event>(&line).is_ok_and(|event| {
            matches!(event.body, EventBody::MemoryRecalled { lessons, .. } if lessons.iter().any(|l| l.id == id))
        })
    })
}

/// Every run folder under `findings_dir` (a sub-folder holding an `events.jsonl`) and every
/// matrix folder (one holding a `matrix.json` instead), newest first: by start time, then by id,
/// with runs whose start could not be read last.
pub fn list_runs(findings_dir: &Path) -> Vec<PastRun> {
    // A findings directory appears with the first run, so its absence just means no runs yet.
    let Ok(entries) = std::fs::read_dir(findings_dir) else {
        return Vec::new();
    };
    let exists = |path: PathBuf| path.try_exists().unwrap_or(false);
    let mut runs: Vec<PastRun> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter_map(|dir| {
            // A log decides: a folder with both is a run, as it was listed before matrices were.
            if exists(dir.join(EVENTS_FILE)) {
                Some(read_run(&dir))
            } else if exists(dir.join(MATRIX_FILE)) {
                Some(read_matrix(&dir))
            } else {
                None
            }
        })
        .collect();
    runs.sort_by(|a, b| (b.started, &b.id).cmp(&(a.started, &a.id)));
    runs
}

/// What went wrong reading one log. Rendered into [`PastRun::problem`].
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}, line {line}: not a troupe event: {message}", path.display())]
    BadLine { path: PathBuf, line: usize, message: String },
    /// A line in a tail window that does not reach the file's start: its number is unknown
    /// without reading the whole file, so it is given from the end (as `tail -n` counts).
    #[error("{}, line {from_end} from the end (byte {offset}): not a troupe event: {message}", path.display())]
    BadTailLine { path: PathBuf, from_end: usize, offset: u64, message: String },
    #[error("{} is not a file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}, line 1: expected run_started, found {found}", path.display())]
    NotRunStarted { path: PathBuf, found: &'static str },
    #[error("{}, line 1: cut short, probably because the run was stopped while writing it", path.display())]
    FirstLineCut { path: PathBuf },
    #[error("{}, line 1: longer than {MAX_TAIL} bytes, not read", path.display())]
    FirstLineTooLong { path: PathBuf },
    #[error("{}: no complete line in its last {MAX_TAIL} bytes", path.display())]
    NoLineInTail { path: PathBuf },
    /// The log is of a format this troupe does not read (the message names who wrote it).
    #[error("{0}")]
    Newer(String),
}

/// The `run_started` fields a listing shows.
struct Head {
    started: Millis,
    experiment: String,
    root_agent: String,
    task: String,
}

/// What the end of a log told.
#[derive(Default)]
struct Tail {
    /// The last complete line's event time.
    last_ts: Option<Millis>,
    /// `status`, `usage`, `tasks`, `elapsed_ms` of the `run_finished`.
    finished: Option<(RunStatus, Usage, TaskCounts, u64)>,
    /// The running total of the last `usage` event after which nothing finished the run.
    usage: Option<Usage>,
    /// The latest unparsable complete line.
    problem: Option<Problem>,
}

impl Tail {
    /// Whether reading further back could change anything.
    fn settled(&self) -> bool {
        self.finished.is_some() || self.usage.is_some()
    }
}

fn read_run(dir: &Path) -> PastRun {
    let path = dir.join(EVENTS_FILE);
    let mut run = PastRun::unread(dir);
    let (file, len) = match open_log(&path) {
        Ok(opened) => opened,
        Err(problem) => {
            run.problem = Some(problem.to_string());
            return run;
        }
    };
    if len == 0 {
        // The writer creates the log just before its first line: a run starting now, or one
        // killed in that instant. Nothing is wrong with the file.
        run.outcome = PastOutcome::Unfinished;
        return run;
    }

    let head = read_head(&file, &path, len);
    let tail = read_tail(&file, &path, len);
    let mut problems = Vec::new();
    let mut head_cut = false;
    match head {
        Ok(head) => {
            run.started = Some(head.started);
            run.experiment = head.experiment;
            run.root_agent = head.root_agent;
            run.task = head.task;
        }
        Err(problem) => {
            head_cut = matches!(problem, Problem::FirstLineCut { .. });
            problems.push(problem);
        }
    }
    problems.extend(tail.problem);

    if let Some((status, usage, tasks, elapsed_ms)) = tail.finished {
        run.outcome = status.into();
        run.usage = usage;
        run.tasks = Some(tasks);
        run.elapsed_ms = Some(elapsed_ms);
    } else if run.started.is_some() || tail.last_ts.is_some() || head_cut {
        run.outcome = PastOutcome::Unfinished;
        run.usage = tail.usage.unwrap_or_default();
        run.elapsed_ms = run.started.zip(tail.last_ts).map(|(start, last)| last.saturating_sub(start));
    }
    if !problems.is_empty() {
        run.problem = Some(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    }
    run
}

/// A matrix folder's row: its plan from `matrix.json`, its counts and usage from `trials.jsonl`.
fn read_matrix(dir: &Path) -> PastRun {
    let mut run = PastRun::unread(dir);
    // The run id begins with the start time; a renamed folder falls back on when `matrix.json`
    // was last written (its start, or its last resume).
    run.started = started_from_id(&run.id).or_else(|| modified_millis(&dir.join(MATRIX_FILE)));
    let mut brief = MatrixBrief { planned: 0, recorded: 0, passed: 0, variants: Vec::new() };
    let mut problems = Vec::new();
    // A store error may end with a hint on a line of its own; a row's problem is one line.
    let mut note =
        |err: store::StoreError| problems.push(err.to_string().lines().map(str::trim).collect::<Vec<_>>().join(" "));
    let matrix = store::read_matrix(dir).map_err(&mut note).ok();
    let records = store::read_records(dir).map_err(&mut note).ok();
    if let Some(matrix) = &matrix {
        let info = &matrix.info;
        run.experiment.clone_from(&info.experiment);
        run.task = format!(
            "{} × {} × {}",
            count(info.tasks.len(), "task"),
            count(info.variants.len(), "variant"),
            count(info.repetitions as usize, "repetition")
        );
        if let Some(shard) = matrix.shard {
            run.task.push_str(&format!(" (shard {shard})"));
        }
        let share = matrix.trials.iter().filter(|t| matrix.shard.is_none_or(|s| s.contains(t)));
        brief.planned = u32::try_from(share.count()).unwrap_or(u32::MAX);
        brief.variants.clone_from(&info.variants);
    }
    if let Some(records) = &records {
        brief.recorded = u32::try_from(records.len()).unwrap_or(u32::MAX);
        brief.passed = u32::try_from(records.iter().filter(|r| r.pass).count()).unwrap_or(u32::MAX);
        for record in records {
            run.usage.input_tokens += record.input_tokens;
            run.usage.output_tokens += record.output_tokens;
            run.usage.model_calls += record.turns;
        }
    }
    if let (Some(matrix), Some(records)) = (&matrix, &records) {
        // As the runner decides it: every trial of the share has a record.
        let recorded: std::collections::HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
        let complete = matrix
            .trials
            .iter()
            .filter(|t| matrix.shard.is_none_or(|s| s.contains(t)))
            .all(|t| recorded.contains(t.key.as_str()));
        run.outcome = if complete { PastOutcome::Completed } else { PastOutcome::Unfinished };
    }
    if !problems.is_empty() {
        run.problem = Some(problems.join("; "));
    }
    run.matrix = Some(brief);
    run
}

/// `1 task`, `6 tasks`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// When `path` was last written, in milliseconds since the epoch.
fn modified_millis(path: &Path) -> Option<Millis> {
    let since = std::fs::metadata(path).and_then(|m| m.modified()).ok()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// Opens a log and tells its length. Checked before opening: opening a directory would succeed,
/// and opening a named pipe would block the listing.
fn open_log(path: &Path) -> Result<(File, u64), Problem> {
    let metadata =
        std::fs::metadata(path).map_err(|source| Problem::Io { action: "read", path: path.to_owned(), source })?;
    if !metadata.is_file() {
        return Err(Problem::NotAFile { path: path.to_owned() });
    }
    let file = File::open(path).map_err(|source| Problem::Io { action: "open", path: path.to_owned(), source })?;
    Ok((file, metadata.len()))
}

/// Reads and parses line 1, which must be the `run_started`.
fn read_head(mut file: &File, path: &Path, len: u64) -> Result<Head, Problem> {
    let io_problem = |source| Problem::Io { action: "read", path: path.to_owned(), source };
    file.seek(SeekFrom::Start(0)).map_err(io_problem)?;
    let limit = len.min(MAX_TAIL);
    let mut line = Vec::new();
    BufReader::new(file.take(limit)).read_until(b'\n', &mut line).map_err(io_problem)?;
    let whole = line.last() == Some(&b'\n');
    crate::findings::newer_format(&line, path).map_err(|e| Problem::Newer(e.to_string()))?;
    match serde_json::from_slice::<Event>(&line) {
        Ok(Event { ts, body: EventBody::RunStarted { experiment, root_agent, task, .. }, .. }) => {
            Ok(Head { started: ts, experiment, root_agent, task })
        }
        Ok(event) => Err(Problem::NotRunStarted { path: path.to_owned(), found: event.body.type_name() }),
        Err(_) if !whole && limit < len => Err(Problem::FirstLineTooLong { path: path.to_owned() }),
        Err(_) if !whole => Err(Problem::FirstLineCut { path: path.to_owned() }),
        Err(e) => Err(Problem::BadLine { path: path.to_owned(), line: 1, message: e.to_string() }),
    }
}

/// Reads the end of the log, widening the window until it settles or reaches a limit.
fn read_tail(mut file: &File, path: &Path, len: u64) -> Tail {
    let mut window = TAIL_WINDOW;
    loop {
        let start = len.saturating_sub(window);
        let mut bytes = Vec::new();
        let read = file.seek(SeekFrom::Start(start)).and_then(|_| file.take(len - start).read_to_end(&mut bytes));
        if let Err(source) = read {
            return Tail {
                problem: Some(Problem::Io { action: "read", path: path.to_owned(), source }),
                ..Tail::default()
            };
        }
        let tail = scan_tail(&bytes, start, path);
        if tail.settled() || start == 0 || window >= MAX_TAIL {
            if tail.last_ts.is_none() && tail.problem.is_none() && start > 0 {
                return Tail { problem: Some(Problem::NoLineInTail { path: path.to_owned() }), ..tail };
            }
            return tail;
        }
        window = window.saturating_mul(4).min(MAX_TAIL);
    }
}

/// Walks the complete lines of `bytes` (read from byte `start` of the file to its end) from the
/// last one back, until a `run_finished` or a `usage` event. A partial first line (the window
/// began mid-line) and a cut-short last line (a killed run) are skipped.
fn scan_tail(bytes: &[u8], start: u64, path: &Path) -> Tail {
    let mut tail = Tail::default();
    let (body, body_offset) = if start == 0 {
        (bytes, 0)
    } else {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(newline) => (&bytes[newline + 1..], start + newline as u64 + 1),
            None => return tail,
        }
    };
    let complete_len = body.iter().rposition(|&b| b == b'\n').map_or(0, |newline| newline + 1);
    let mut from_end = usize::from(complete_len < body.len());
    let mut end = complete_len;
    while end > 0 {
        let line_end = end - 1;
        let line_start = body[..line_end].iter().rposition(|&b| b == b'\n').map_or(0, |newline| newline + 1);
        let line = &body[line_start..line_end];
        end = line_start;
        from_end += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Event>(line) {
            Ok(event) => {
                tail.last_ts.get_or_insert(event.ts);
                match event.body {
                    EventBody::RunFinished { status, usage, tasks, elapsed_ms, .. } => {
                        tail.finished = Some((status, usage, tasks, elapsed_ms));
                        return tail;
                    }
                    EventBody::Usage { run_total, .. } => {
                        tail.usage = Some(run_total);
                        return tail;
                    }
                    _ => {}
                }
            }
            // Line 1 is the head's to report.
            Err(_) if start == 0 && line_start == 0 => {}
            Err(e) if tail.problem.is_none() => {
                tail.problem = Some(if start == 0 {
                    let line = 1 + body[..line_start].iter().filter(|&&b| b == b'\n').count();
                    Problem::BadLine { path: path.to_owned(), line, message: e.to_string() }
                } else {
                    let offset = body_offset + line_start as u64;
                    Problem::BadTailLine { path: path.to_owned(), from_end, offset, message: e.to_string() }
                });
            }
            Err(_) => {}
        }
    }
    tail
}

#[cfg(test)]
mod tests;
