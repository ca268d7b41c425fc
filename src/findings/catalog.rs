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

use super::EVENTS_FILE;
use crate::experiment::store::{self, MATRIX_FILE};
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

/// The start time a run id begins with (`20261125-092503-…`, UTC, see `run_id.rs`), to the
/// second; `None` when the name does not begin with a valid one.
fn started_from_id(id: &str) -> Option<Millis> {
    let stamp = id.get(..15)?;
    if !matches!(id.as_bytes().get(15), None | Some(b'-')) || stamp.as_bytes().get(8) != Some(&b'-') {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let text = stamp.get(range)?;
        if text.bytes().all(|b| b.is_ascii_digit()) { text.parse().ok() } else { None }
    };
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

/// Days from 1970-01-01 to a date from 1970 on, in the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`, the inverse of the one `run_id.rs` writes ids with).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
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
    super::newer_format(&line, path).map_err(|e| Problem::Newer(e.to_string()))?;
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
mod tests {
    use super::*;
    use crate::protocol::{Role, TaskId, TaskKind, TaskStatus};
    use pretty_assertions::assert_eq;
    use std::fs;

    const T0: Millis = 1_795_598_703_120; // 2026-11-25T09:25:03.120Z

    fn root() -> TaskId {
        TaskId::from_code(0x0012_3456)
    }

    fn usage(input: u64, output: u64, calls: u64) -> Usage {
        Usage { input_tokens: input, output_tokens: output, model_calls: calls }
    }

    fn started(id: &str, task: &str) -> EventBody {
        EventBody::RunStarted {
            run_id: id.into(),
            experiment: "smoke".into(),
            root_agent: "coordinator".into(),
            task: task.into(),
            prices: Default::default(),
            format: crate::protocol::EVENTS_FORMAT,
            troupe_version: None,
        }
    }

    fn created() -> EventBody {
        EventBody::TaskCreated {
            uri: root(),
            parent: None,
            kind: TaskKind::Agent,
            agent: "coordinator".into(),
            model: "small".into(),
            task: "Find the capital of France".into(),
        }
    }

    fn delta(text: &str) -> EventBody {
        EventBody::MessageDelta { uri: root(), delta: text.into() }
    }

    fn usage_event(run_total: Usage) -> EventBody {
        EventBody::Usage { uri: root(), input_tokens: 10, output_tokens: 5, task_total: run_total, run_total }
    }

    fn finished(status: RunStatus, result: &str) -> EventBody {
        EventBody::RunFinished {
            status,
            result: Some(result.into()),
            error: None,
            usage: usage(120, 30, 2),
            tasks: TaskCounts { working: 0, completed: 1, failed: 0, cancelled: 0 },
            elapsed_ms: 1_500,
        }
    }

    /// Events numbered from 0, one millisecond apart from `start`.
    fn events(start: Millis, bodies: Vec<EventBody>) -> Vec<Event> {
        bodies.into_iter().enumerate().map(|(i, body)| Event { seq: i as u64, ts: start + i as u64, body }).collect()
    }

    fn jsonl(events: &[Event]) -> String {
        events.iter().map(|event| serde_json::to_string(event).unwrap() + "\n").collect()
    }

    /// Writes a run folder `findings/id` whose log is `text`.
    fn write_log(findings: &Path, id: &str, text: &str) -> PathBuf {
        let dir = findings.join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(EVENTS_FILE), text).unwrap();
        dir
    }

    fn completed_run(id: &str, start: Millis) -> Vec<Event> {
        events(
            start,
            vec![
                started(id, "Find the capital of France"),
                created(),
                EventBody::Message { uri: root(), role: Role::User, content: "Find the capital of France".into() },
                usage_event(usage(120, 30, 2)),
                EventBody::TaskStatus {
                    uri: root(),
                    status: TaskStatus::Completed,
                    status_message: None,
                    result: Some("Paris".into()),
                    error: None,
                },
                finished(RunStatus::Completed, "Paris"),
            ],
        )
    }

    #[test]
    fn a_completed_run_is_listed_from_its_first_and_last_lines() {
        let findings = tempfile::tempdir().unwrap();
        let dir = write_log(findings.path(), "run-a", &jsonl(&completed_run("run-a", T0)));
        let runs = list_runs(findings.path());
        assert_eq!(
            runs,
            vec![PastRun {
                id: "run-a".into(),
                dir,
                started: Some(T0),
                experiment: "smoke".into(),
                root_agent: "coordinator".into(),
                task: "Find the capital of France".into(),
                outcome: PastOutcome::Completed,
                usage: usage(120, 30, 2),
                elapsed_ms: Some(1_500),
                tasks: Some(TaskCounts { working: 0, completed: 1, failed: 0, cancelled: 0 }),
                problem: None,
                matrix: None,
            }]
        );
    }

    #[test]
    fn failed_and_cancelled_runs_keep_their_status() {
        let findings = tempfile::tempdir().unwrap();
        for (id, status) in [("run-f", RunStatus::Failed), ("run-c", RunStatus::Cancelled)] {
            let log = events(T0, vec![started(id, "t"), finished(status, "")]);
            write_log(findings.path(), id, &jsonl(&log));
        }
        let outcomes: Vec<(String, PastOutcome)> =
            list_runs(findings.path()).into_iter().map(|run| (run.id, run.outcome)).collect();
        assert_eq!(
            outcomes,
            vec![("run-f".to_owned(), PastOutcome::Failed), ("run-c".to_owned(), PastOutcome::Cancelled)]
        );
    }

    #[test]
    fn a_killed_run_takes_its_last_usage_and_last_event_time() {
        let findings = tempfile::tempdir().unwrap();
        let log = events(
            T0,
            vec![started("run-k", "t"), created(), usage_event(usage(40, 8, 1)), usage_event(usage(90, 20, 2))]
                .into_iter()
                .chain((0..5).map(|_| delta("more")))
                .collect(),
        );
        // Killed while writing one more line: it is cut short and skipped, not a problem.
        let text = jsonl(&log) + r#"{"seq":9,"ts":"2026-11-25T09:25:03.1"#;
        write_log(findings.path(), "run-k", &text);
        let runs = list_runs(findings.path());
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!(run.outcome, PastOutcome::Unfinished);
        assert_eq!(run.usage, usage(90, 20, 2));
        assert_eq!(run.elapsed_ms, Some(8), "nine events, one millisecond apart");
        assert_eq!(run.tasks, None);
        assert_eq!(run.problem, None);
        assert_eq!(run.task, "t");
    }

    #[test]
    fn a_run_that_has_written_nothing_yet_is_unfinished() {
        let findings = tempfile::tempdir().unwrap();
        write_log(findings.path(), "run-empty", "");
        write_log(findings.path(), "run-started", &jsonl(&events(T0, vec![started("run-started", "t")])));
        // Killed while writing its very first line.
        write_log(findings.path(), "run-cut", r#"{"seq":0,"ts":"2026-11-25T09:25:03.120Z","type":"run_st"#);
        let runs = list_runs(findings.path());
        let summary: Vec<(&str, PastOutcome, Usage, Option<u64>)> =
            runs.iter().map(|run| (run.id.as_str(), run.outcome, run.usage, run.elapsed_ms)).collect();
        assert_eq!(
            summary,
            vec![
                ("run-started", PastOutcome::Unfinished, Usage::default(), Some(0)),
                ("run-empty", PastOutcome::Unfinished, Usage::default(), None),
                ("run-cut", PastOutcome::Unfinished, Usage::default(), None),
            ]
        );
        let problems: Vec<Option<&str>> = runs.iter().map(|run| run.problem.as_deref()).collect();
        assert_eq!(problems[..2], [None, None]);
        assert!(problems[2].is_some_and(|problem| problem.contains("line 1: cut short")), "{problems:?}");
    }

    #[test]
    fn a_corrupt_first_line_is_reported_and_the_rest_still_read() {
        let findings = tempfile::tempdir().unwrap();
        let mut log = completed_run("run-x", T0);
        log.remove(0);
        write_log(findings.path(), "run-x", &format!("this is not json\n{}", jsonl(&log)));
        let runs = list_runs(findings.path());
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!(run.outcome, PastOutcome::Completed);
        assert_eq!(run.started, None);
        assert_eq!(run.experiment, "");
        let problem = run.problem.as_deref().unwrap_or_default();
        assert!(problem.contains(&run.dir.join(EVENTS_FILE).display().to_string()), "{problem}");
        assert!(problem.contains("line 1: not a troupe event"), "{problem}");
    }

    #[test]
    fn a_log_with_nothing_readable_is_unreadable_and_the_other_runs_survive() {
        let findings = tempfile::tempdir().unwrap();
        write_log(findings.path(), "run-a", &jsonl(&completed_run("run-a", T0)));
        write_log(findings.path(), "garbage", "\u{0}\u{1}binary\nnot events either\n");
        // A log that is a directory cannot even be read.
        fs::create_dir_all(findings.path().join("run-dir").join(EVENTS_FILE)).unwrap();
        // A first line that is an event, but not the one a log starts with.
        let wrong = events(T0 + 5, vec![created(), finished(RunStatus::Completed, "Paris")]);
        write_log(findings.path(), "run-w", &jsonl(&wrong));
        let runs = list_runs(findings.path());
        let summary: Vec<(&str, PastOutcome)> = runs.iter().map(|run| (run.id.as_str(), run.outcome)).collect();
        assert_eq!(
            summary,
            vec![
                ("run-a", PastOutcome::Completed),
                ("run-w", PastOutcome::Completed),
                ("run-dir", PastOutcome::Unreadable),
                ("garbage", PastOutcome::Unreadable),
            ]
        );
        let problem = |id: &str| runs.iter().find(|run| run.id == id).and_then(|run| run.problem.clone());
        assert_eq!(problem("run-a"), None);
        let garbage = problem("garbage").unwrap_or_default();
        assert!(garbage.contains("garbage") && garbage.contains("line 1:"), "{garbage}");
        assert!(garbage.contains("line 2:"), "{garbage}");
        let dir = problem("run-dir").unwrap_or_default();
        assert!(dir.contains("run-dir") && dir.contains("is not a file"), "{dir}");
        let wrong = problem("run-w").unwrap_or_default();
        assert!(wrong.contains("expected run_started, found task_created"), "{wrong}");
    }

    #[test]
    fn a_corrupt_line_in_the_tail_of_a_long_log_is_counted_from_the_end() {
        let findings = tempfile::tempdir().unwrap();
        let filler: Vec<EventBody> = (0..2_000).map(|i| delta(&format!("token {i} of a long stream"))).collect();
        let mut bodies = vec![started("run-t", "t")];
        bodies.extend(filler);
        bodies.push(usage_event(usage(7, 3, 1)));
        let mut text = jsonl(&events(T0, bodies));
        assert!(text.len() as u64 > TAIL_WINDOW);
        text.push_str("{broken\n");
        text.push_str(&jsonl(&events(T0 + 5_000, vec![delta("after")])));
        write_log(findings.path(), "run-t", &text);
        let runs = list_runs(findings.path());
        let run = &runs[0];
        assert_eq!(run.outcome, PastOutcome::Unfinished);
        assert_eq!(run.usage, usage(7, 3, 1));
        assert_eq!(run.elapsed_ms, Some(5_000));
        let problem = run.problem.as_deref().unwrap_or_default();
        let offset = text.find("{broken").unwrap_or_default();
        assert!(problem.contains(&format!("line 2 from the end (byte {offset})")), "{problem}");
    }

    #[test]
    fn a_long_log_yields_its_run_finished_from_the_tail() {
        let findings = tempfile::tempdir().unwrap();
        let mut bodies = vec![started("run-long", "t"), created()];
        bodies.extend((0..3_000).map(|i| delta(&format!("token {i} of a long stream"))));
        bodies.push(finished(RunStatus::Completed, "Paris"));
        let text = jsonl(&events(T0, bodies));
        assert!(text.len() as u64 > 2 * TAIL_WINDOW);
        write_log(findings.path(), "run-long", &text);
        let run = &list_runs(findings.path())[0];
        assert_eq!((run.outcome, run.usage, run.elapsed_ms), (PastOutcome::Completed, usage(120, 30, 2), Some(1_500)));
        assert_eq!(run.started, Some(T0));
        assert_eq!(run.problem, None);
    }

    #[test]
    fn the_window_widens_for_a_far_usage_event_and_a_huge_last_line() {
        let findings = tempfile::tempdir().unwrap();
        // Killed while streaming a long answer: the last usage is more than a window back.
        let mut bodies = vec![started("run-stream", "t"), usage_event(usage(50, 10, 1))];
        bodies.extend((0..4_000).map(|i| delta(&format!("token {i} of a long stream"))));
        let stream = jsonl(&events(T0, bodies));
        assert!(stream.len() as u64 > 2 * TAIL_WINDOW);
        write_log(findings.path(), "run-stream", &stream);
        // A run whose final answer alone is longer than the first window.
        let answer = "Paris. ".repeat(20_000);
        let huge = jsonl(&events(T0 + 1, vec![started("run-huge", "t"), finished(RunStatus::Failed, &answer)]));
        write_log(findings.path(), "run-huge", &huge);
        let runs = list_runs(findings.path());
        let summary: Vec<(&str, PastOutcome, Usage)> =
            runs.iter().map(|run| (run.id.as_str(), run.outcome, run.usage)).collect();
        assert_eq!(
            summary,
            vec![
                ("run-huge", PastOutcome::Failed, usage(120, 30, 2)),
                ("run-stream", PastOutcome::Unfinished, usage(50, 10, 1)),
            ]
        );
        assert!(runs.iter().all(|run| run.problem.is_none()), "{runs:?}");
    }

    #[test]
    fn a_missing_findings_directory_lists_nothing() {
        let findings = tempfile::tempdir().unwrap();
        assert_eq!(list_runs(&findings.path().join("findings")), Vec::<PastRun>::new());
        assert_eq!(list_runs(findings.path()), Vec::<PastRun>::new());
    }

    #[test]
    fn only_folders_with_a_log_are_runs_and_the_newest_comes_first() {
        let findings = tempfile::tempdir().unwrap();
        // Ids that sort against their start times, to show the start time decides.
        write_log(findings.path(), "b-oldest", &jsonl(&completed_run("b-oldest", T0)));
        write_log(findings.path(), "a-newest", &jsonl(&completed_run("a-newest", T0 + 60_000)));
        write_log(findings.path(), "c-middle", &jsonl(&completed_run("c-middle", T0 + 30_000)));
        // Same start: the larger id first, as run ids begin with their time.
        write_log(findings.path(), "d-tie", &jsonl(&completed_run("d-tie", T0 + 30_000)));
        write_log(findings.path(), "z-no-start", "not an event\n");
        fs::create_dir_all(findings.path().join("no-log")).unwrap();
        fs::write(findings.path().join("no-log").join("notes.md"), "notes").unwrap();
        // What a matrix folder holds besides its `matrix.json` is not enough to make it one.
        fs::create_dir_all(findings.path().join("no-plan")).unwrap();
        fs::write(findings.path().join("no-plan").join(store::TRIALS_FILE), "").unwrap();
        fs::write(findings.path().join("no-plan").join(store::SUMMARY_FILE), "{}").unwrap();
        fs::write(findings.path().join("README.md"), "a file, not a run").unwrap();
        let ids: Vec<String> = list_runs(findings.path()).into_iter().map(|run| run.id).collect();
        assert_eq!(ids, vec!["a-newest", "d-tie", "c-middle", "b-oldest", "z-no-start"]);
    }

    // ---------------------------------------------------------------------------------------
    // Matrix folders.

    use crate::experiment::plan::{Shard, TrialSpec};
    use crate::experiment::record::{MatrixInfo, TrialRecord};
    use crate::experiment::store::{MatrixFile, TrialLog};

    /// Two tasks × two variants × one repetition: four trials, pairs by task.
    fn matrix_file(run_id: &str, shard: Option<Shard>) -> MatrixFile {
        let mut trials = Vec::new();
        for (pair, task) in ["t1", "t2"].into_iter().enumerate() {
            for variant in ["solo", "team"] {
                trials.push(TrialSpec {
                    index: trials.len() as u32,
                    pair: pair as u32,
                    key: format!("{variant}/{task}/1"),
                    variant: variant.into(),
                    task_id: task.into(),
                    repetition: 1,
                    seed: 7,
                    folder: format!("trials/{variant}--{task}--r1"),
                });
            }
        }
        MatrixFile {
            format: store::FORMAT,
            run_id: run_id.into(),
            experiment_file: "experiments/duo.toml".into(),
            info: MatrixInfo {
                experiment: "duo".into(),
                variants: vec!["solo".into(), "team".into()],
                baseline: "solo".into(),
                tasks: vec!["t1".into(), "t2".into()],
                repetitions: 1,
                trials: 4,
                checks: Vec::new(),
            },
            shard,
            trials,
            troupe_version: "0.1.0".into(),
        }
    }

    fn trial_record(spec: &TrialSpec, pass: bool) -> TrialRecord {
        TrialRecord {
            index: spec.index,
            key: spec.key.clone(),
            variant: spec.variant.clone(),
            task_id: spec.task_id.clone(),
            repetition: spec.repetition,
            seed: spec.seed,
            status: "completed".into(),
            pass,
            score: if pass { 1.0 } else { 0.0 },
            checks: Vec::new(),
            input_tokens: 100,
            output_tokens: 20,
            cost: None,
            wall_ms: 1_000,
            subtasks: 1,
            depth: 1,
            tool_errors: 0,
            limit_hits: 0,
            turns: 3,
            answer: Some("Paris".into()),
            error: None,
            folder: spec.folder.clone(),
        }
    }

    /// Writes a matrix folder `findings/id` with `matrix` and a record of each of `passes`'
    /// first trials.
    fn write_matrix_folder(findings: &Path, id: &str, matrix: &MatrixFile, passes: &[bool]) -> PathBuf {
        let dir = findings.join(id);
        fs::create_dir_all(&dir).unwrap();
        store::write_matrix(&dir, matrix).unwrap();
        let mut log = TrialLog::open(&dir).unwrap();
        for (spec, &pass) in matrix.trials.iter().zip(passes) {
            log.append(&trial_record(spec, pass)).unwrap();
        }
        dir
    }

    #[test]
    fn a_matrix_folder_is_listed_with_its_counts_among_the_runs() {
        let findings = tempfile::tempdir().unwrap();
        let id = "20261125-093000-duo-00aa"; // T0's minute, 5 minutes later
        let dir = write_matrix_folder(findings.path(), id, &matrix_file(id, None), &[true, false, true, true]);
        write_log(findings.path(), "run-a", &jsonl(&completed_run("run-a", T0)));
        // Killed after one trial; a shard's share is its pairs only.
        let shard = Some(Shard { index: 2, count: 2 });
        let old = "20261124-080000-duo-00bb";
        write_matrix_folder(findings.path(), old, &matrix_file(old, shard), &[]);
        let mut log = TrialLog::open(&findings.path().join(old)).unwrap();
        log.append(&trial_record(&matrix_file(old, shard).trials[2], false)).unwrap();

        let runs = list_runs(findings.path());
        let ids: Vec<&str> = runs.iter().map(|run| run.id.as_str()).collect();
        assert_eq!(ids, [id, "run-a", old], "newest first, matrices among the runs");
        assert_eq!(
            runs[0],
            PastRun {
                id: id.into(),
                dir,
                started: Some(T0 - 3_120 + 5 * 60_000),
                experiment: "duo".into(),
                root_agent: String::new(),
                task: "2 tasks × 2 variants × 1 repetition".into(),
                outcome: PastOutcome::Completed,
                usage: usage(400, 80, 12),
                elapsed_ms: None,
                tasks: None,
                problem: None,
                matrix: Some(MatrixBrief {
                    planned: 4,
                    recorded: 4,
                    passed: 3,
                    variants: vec!["solo".into(), "team".into()]
                }),
            }
        );
        let sharded = &runs[2];
        assert_eq!(sharded.outcome, PastOutcome::Unfinished);
        assert_eq!(sharded.task, "2 tasks × 2 variants × 1 repetition (shard 2/2)");
        assert_eq!(sharded.matrix.as_ref().map(|m| (m.planned, m.recorded, m.passed)), Some((2, 1, 0)));
        assert_eq!(sharded.problem, None);
    }

    #[test]
    fn a_damaged_trials_file_is_a_row_with_a_problem_naming_it() {
        let findings = tempfile::tempdir().unwrap();
        let id = "20261125-093000-duo-00aa";
        let dir = write_matrix_folder(findings.path(), id, &matrix_file(id, None), &[true]);
        let trials = dir.join(store::TRIALS_FILE);
        let mut text = fs::read_to_string(&trials).unwrap();
        text.push_str("{\"index\": \"not a number\"}\n");
        text.push_str(&serde_json::to_string(&trial_record(&matrix_file(id, None).trials[1], true)).unwrap());
        text.push('\n');
        fs::write(&trials, text).unwrap();
        // A second matrix whose plan is not JSON at all.
        let broken = findings.path().join("20261125-100000-duo-00cc");
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join(MATRIX_FILE), "{ not json").unwrap();

        let runs = list_runs(findings.path());
        assert_eq!(runs.len(), 2);
        let plan = &runs[0];
        assert_eq!((plan.outcome, plan.experiment.as_str()), (PastOutcome::Unreadable, ""));
        let problem = plan.problem.as_deref().unwrap_or_default();
        assert!(problem.contains(&broken.join(MATRIX_FILE).display().to_string()), "{problem}");
        assert!(plan.matrix.is_some(), "still a matrix row");

        let row = &runs[1];
        assert_eq!(row.outcome, PastOutcome::Unreadable);
        assert_eq!(row.experiment, "duo", "what matrix.json says is kept");
        assert_eq!(row.matrix.as_ref().map(|m| (m.planned, m.recorded)), Some((4, 0)));
        let problem = row.problem.as_deref().unwrap_or_default();
        assert!(problem.contains(&format!("{}, line 2", trials.display())), "{problem}");
    }

    #[test]
    fn run_ids_give_their_start_time_to_the_second() {
        for now in [T0, 0, 951_782_400_000, 978_307_199_999, 4_102_444_800_000] {
            let id = crate::findings::new_run_id("duo", now, 0xabcd);
            assert_eq!(started_from_id(&id), Some(now / 1000 * 1000), "{id}");
        }
        assert_eq!(started_from_id("20261125-092503"), Some(T0 / 1000 * 1000), "nothing after the time");
        for bad in ["", "run-a", "20261125-0925", "20261125_092503-x", "20260230-000000-x", "20261125-246000-x"] {
            assert_eq!(started_from_id(bad), None, "{bad}");
        }
        assert_eq!(started_from_id("20261125-0925031-x"), None, "a longer time is not one");
        assert_eq!(started_from_id("19691231-235959-x"), None, "before the epoch");
    }

    #[test]
    fn a_renamed_matrix_folder_takes_its_start_from_matrix_json() {
        let findings = tempfile::tempdir().unwrap();
        let dir = write_matrix_folder(findings.path(), "my-matrix", &matrix_file("x", None), &[]);
        let written = modified_millis(&dir.join(MATRIX_FILE));
        assert!(written.is_some());
        let runs = list_runs(findings.path());
        assert_eq!((runs[0].started, runs[0].outcome), (written, PastOutcome::Unfinished));
    }

    #[test]
    fn the_runs_that_recalled_an_item_are_found_in_runs_and_trials_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let findings = dir.path();
        let recalled = |ids: &[i64]| EventBody::MemoryRecalled {
            uri: root(),
            lessons: ids
                .iter()
                .map(|&id| crate::protocol::RecalledLesson { id, score: 0.5, text: format!("lesson {id}") })
                .collect(),
            error: None,
        };
        let run = |id: &str, ids: &[i64]| jsonl(&events(T0, vec![started(id, "t"), created(), recalled(ids)]));
        write_log(findings, "20261124-100000-a-0001", &run("a", &[7, 9]));
        write_log(findings, "20261125-100000-b-0002", &run("b", &[9]));
        write_log(findings, "20261125-110000-c-0003", &run("c", &[7]));
        let matrix = findings.join("20261125-120000-m-0004");
        write_log(&matrix.join("trials"), "solo--t1--r1", &run("m1", &[7]));
        write_log(&matrix.join("trials"), "solo--t1--r2", &run("m2", &[8]));
        // A run whose log mentions the id elsewhere only, and a torn line.
        write_log(
            findings,
            "20261125-130000-d-0005",
            &(jsonl(&events(T0, vec![started("d", "lesson 7")])) + "{\"seq\":1,\"type\":\"memory_recalled"),
        );

        assert_eq!(
            runs_recalling(findings, 7),
            ["20261125-120000-m-0004--solo--t1--r1", "20261125-110000-c-0003", "20261124-100000-a-0001"]
        );
        assert_eq!(runs_recalling(findings, 8), ["20261125-120000-m-0004--solo--t1--r2"]);
        assert!(runs_recalling(findings, 1).is_empty());
        assert!(runs_recalling(&findings.join("missing"), 7).is_empty());
    }
}
