//! The run folder ("findings"): one directory per run holding `events.jsonl` (every event,
//! appended and flushed as it happens), `transcript.md` and `report.md` (rendered from those
//! events for people), `config/` (a redacted snapshot of the files that shaped the run) and
//! `notes.md` (the user's; [`notes`] reads the lessons under its `## Lessons` heading).
//!
//! Invariants:
//! - One thread owns `events.jsonl` ([`FindingsWriter`]); every line is written whole with one
//!   `write_all`, so a killed run leaves complete lines, and at worst one cut-short last line,
//!   which [`read_events`] tolerates.
//! - Nothing written here holds a secret: events, renderings and config copies all pass through
//!   a [`Redactor`] first.
//! - A run folder is never overwritten: `events.jsonl` is created with `create_new`, and
//!   `notes.md` is created only when absent.
//! - Rendering ([`render_transcript`], [`render_report`]) is pure and works on any prefix of a
//!   run, so a killed run can be rendered again from its log ([`rerender`]).

pub mod notes;
mod redact;
mod report;
mod run_id;
mod snapshot;
mod transcript;
mod view;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

pub use redact::{REDACTED, Redactor, name_looks_secret};
pub use report::render_report;
pub use run_id::{new_run_id, slugify, started_from_id};
pub use snapshot::{changed_since_snapshot, snapshot_config};
pub use transcript::render_transcript;
pub use writer::FindingsWriter;

use crate::protocol::Event;

pub const EVENTS_FILE: &str = "events.jsonl";
pub const TRANSCRIPT_FILE: &str = "transcript.md";
pub const REPORT_FILE: &str = "report.md";
pub const NOTES_FILE: &str = "notes.md";
pub const CONFIG_DIR: &str = "config";

/// What `notes.md` starts as: an invitation, never anything the user would lose.
const NOTES_STUB: &str =
    "<!-- Your notes on this run go here. troupe created this file and never overwrites it. -->\n\n";

/// Failures of the run folder. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum FindingsError {
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being attempted ("create", "append to", ...), for a readable message.
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} already exists: a run folder is never overwritten (start the run under a new id)", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("{}, line {line}: not a troupe event: {message}", path.display())]
    BadLine { path: PathBuf, line: usize, message: String },
    #[error("the findings writer for {} has stopped, so recent events may be missing", dir.display())]
    WriterStopped { dir: PathBuf },
    #[error(
        "{} was written by a newer troupe ({written_by}, events format {format}; this one is troupe {} and reads up to format {}): upgrade troupe to read it",
        path.display(), crate::protocol::TROUPE_VERSION, crate::protocol::EVENTS_FORMAT
    )]
    NewerFormat { path: PathBuf, format: u64, written_by: String },
}

impl FindingsError {
    /// Maps an I/O error to [`FindingsError::Io`] naming `path` and what was being done.
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FindingsError {
        let path = path.to_owned();
        move |source| FindingsError::Io { action, path, source }
    }
}

/// A run folder and where its files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFolder {
    pub dir: PathBuf,
}

impl RunFolder {
    pub fn events(&self) -> PathBuf {
        self.dir.join(EVENTS_FILE)
    }

    pub fn transcript(&self) -> PathBuf {
        self.dir.join(TRANSCRIPT_FILE)
    }

    pub fn report(&self) -> PathBuf {
        self.dir.join(REPORT_FILE)
    }

    pub fn notes(&self) -> PathBuf {
        self.dir.join(NOTES_FILE)
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join(CONFIG_DIR)
    }
}

/// Creates `notes.md` in `dir` with a one-line invitation, unless it already exists: the
/// user's notes are never overwritten.
pub fn write_notes_stub(dir: &Path) -> Result<(), FindingsError> {
    let path = dir.join(NOTES_FILE);
    match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(mut file) => file.write_all(NOTES_STUB.as_bytes()).map_err(FindingsError::io("write", &path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(FindingsError::io("create", &path)(e)),
    }
}

/// The events of an `events.jsonl`, and a warning if its last line was cut short (a run killed
/// while writing it): that line is skipped. Any other line that is not an event is an error
/// naming its line number, since it means the file is not what troupe wrote.
pub fn read_events(path: &Path) -> Result<(Vec<Event>, Option<String>), FindingsError> {
    let bytes = fs::read(path).map_err(FindingsError::io("read", path))?;
    // Bytes, not a `String`: a cut can fall inside a multi-byte character, and that must only
    // spoil the last line, not the whole file.
    let ends_whole = bytes.last().is_none_or(|&b| b == b'\n');
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if let Some(first) = lines.first() {
        newer_format(first, path)?;
    }
    let mut events = Vec::with_capacity(lines.len());
    let mut warning = None;
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_event(line) {
            Ok(event) => events.push(event),
            Err(_) if i + 1 == lines.len() && !ends_whole => {
                warning = Some(format!(
                    "{}: the last line ({}) is cut short, probably because the run was stopped \
                     while writing it; it was skipped",
                    path.display(),
                    i + 1
                ));
            }
            Err(message) => {
                return Err(FindingsError::BadLine { path: path.to_owned(), line: i + 1, message });
            }
        }
    }
    Ok((events, warning))
}

/// Refuses a log whose first line says a newer troupe wrote it, before any of its lines is
/// taken for a damaged one: a newer format may hold events this troupe does not know.
pub fn newer_format(first_line: &[u8], path: &Path) -> Result<(), FindingsError> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(first_line) else { return Ok(()) };
    let format = value.get("format").and_then(serde_json::Value::as_u64).unwrap_or(1);
    if value.get("type").and_then(serde_json::Value::as_str) != Some("run_started")
        || format <= u64::from(crate::protocol::EVENTS_FORMAT)
    {
        return Ok(());
    }
    let written_by = value
        .get("troupe_version")
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| "an unknown version".to_owned(), |v| format!("troupe {v}"));
    Err(FindingsError::NewerFormat { path: path.to_owned(), format, written_by })
}

/// One line of `events.jsonl` as an event, or why it is not one. Bytes, not a `str`: a cut
/// can fall inside a multi-byte character.
fn parse_event(line: &[u8]) -> Result<Event, String> {
    let text = std::str::from_utf8(line).map_err(|e| e.to_string())?;
    serde_json::from_str::<Event>(text).map_err(|e| e.to_string())
}

/// The events another process appended to `path` from byte `offset` on, and the offset just
/// past the last whole line: for following a run as it is written (a `troupe mcp serve`
/// session, a run in another terminal). A line still being written is left for the next read.
pub fn read_events_from(path: &Path, offset: u64) -> Result<(Vec<Event>, u64), FindingsError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = fs::File::open(path).map_err(FindingsError::io("read", path))?;
    file.seek(SeekFrom::Start(offset)).map_err(FindingsError::io("read", path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(FindingsError::io("read", path))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
    let mut events = Vec::new();
    for (i, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_event(line) {
            Ok(event) => events.push(event),
            Err(message) => {
                // Only now is the file's own line number worth counting the lines before `offset`.
                let before = fs::read(path).map_or(0, |all| {
                    all[..usize::try_from(offset).unwrap_or(usize::MAX).min(all.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                });
                return Err(FindingsError::BadLine { path: path.to_owned(), line: before + i + 1, message });
            }
        }
    }
    Ok((events, offset + whole as u64))
}

/// Rebuilds `transcript.md` and `report.md` of an existing run folder from its `events.jsonl`
/// (for a run that was killed before it could write them, or after the renderers improved).
/// The log was redacted when written, so no redactor is needed.
pub fn rerender(dir: &Path) -> Result<RunFolder, FindingsError> {
    rerender_into(dir, dir)
}

/// [`rerender`], writing `transcript.md` and `report.md` into `out` (created if needed) and
/// leaving `dir` as it is.
pub fn rerender_into(dir: &Path, out: &Path) -> Result<RunFolder, FindingsError> {
    let source = RunFolder { dir: dir.to_owned() };
    let (events, warning) = read_events(&source.events())?;
    let mut transcript = render_transcript(&events);
    let mut report = render_report(&events);
    if let Some(warning) = warning {
        let note = format!("\n---\n\n_Note: {warning}._\n");
        transcript.push_str(&note);
        report.push_str(&note);
    }
    fs::create_dir_all(out).map_err(FindingsError::io("create", out))?;
    let folder = RunFolder { dir: out.to_owned() };
    write_replacing(&folder.transcript(), &transcript)?;
    write_replacing(&folder.report(), &report)?;
    Ok(folder)
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader (or a crash)
/// sees the old file or the new one, never half of one.
fn write_replacing(path: &Path, text: &str) -> Result<(), FindingsError> {
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(FindingsError::io("replace", path))
}
