//! The findings writer: one thread owns a run's `events.jsonl`, takes commands over a channel,
//! and at the end writes `transcript.md` and `report.md` from everything it was sent.
//!
//! Invariants: `record` never blocks (an unbounded send; the disk is touched only on the
//! writer's own thread, never on the async runtime). Each event becomes exactly one line, written
//! with one `write_all` of the whole line including its newline, on an unbuffered file, so a
//! `kill -9` leaves only complete lines behind (at worst the last one cut short). Lines are
//! redacted before they exist. After a failed write nothing more is appended, so the file stays a
//! clean prefix of the run rather than a log with holes. Memory stays bounded however long a run
//! lives: past [`KEEP_AT_MOST`] events the renderings are made from the log read back.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::redact::DeltaGuard;
use super::{FindingsError, Redactor, RunFolder, render_report, render_transcript, write_replacing};
use crate::protocol::{Event, EventBody};

/// The most events a writer keeps in memory for the renderings. A longer run (a `troupe mcp
/// serve` session a client polls for days) drops them and `finish` reads the log back instead.
const KEEP_AT_MOST: usize = 20_000;

enum Command {
    Record(Event),
    /// Answered once every event sent before it is on disk.
    Flush(oneshot::Sender<Result<(), FindingsError>>),
    /// Answered after the renderings are written; the thread then ends.
    Finish(oneshot::Sender<Result<RunFolder, FindingsError>>),
}

/// The handle to a run folder's writer thread. Not `Clone`: one owner records and finishes.
#[derive(Debug)]
pub struct FindingsWriter {
    tx: mpsc::UnboundedSender<Command>,
    dir: PathBuf,
    /// Set after the first failed send, so a stopped writer is logged once, not per event.
    warned: AtomicBool,
    /// Why the log stopped (a full disk, a file-size limit), set by the writer thread at its
    /// first failed append, so the run can be stopped rather than go on unrecorded.
    failure: Arc<OnceLock<String>>,
}

impl FindingsWriter {
    /// Creates `dir` (and its parents) and a new `events.jsonl` in it, and starts the writer
    /// thread. Fails rather than append to, or overwrite, an existing run's log.
    pub fn create(dir: &Path, redactor: Redactor) -> Result<FindingsWriter, FindingsError> {
        FindingsWriter::create_keeping(dir, redactor, KEEP_AT_MOST)
    }

    /// [`create`](Self::create), keeping at most `keep_at_most` events in memory.
    pub(crate) fn create_keeping(
        dir: &Path,
        redactor: Redactor,
        keep_at_most: usize,
    ) -> Result<FindingsWriter, FindingsError> {
        std::fs::create_dir_all(dir).map_err(FindingsError::io("create", dir))?;
        let path = dir.join(super::EVENTS_FILE);
        let file = OpenOptions::new().append(true).create_new(true).open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                FindingsError::AlreadyExists { path: path.clone() }
            } else {
                FindingsError::io("create", &path)(e)
            }
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let state = WriterState {
            dir: dir.to_owned(),
            path,
            file,
            redactor,
            deltas: DeltaGuard::default(),
            kept: Some(Vec::new()),
            keep_at_most,
            failure: None,
            good_len: 0,
            told: Arc::default(),
        };
        let failure = state.told.clone();
        std::thread::Builder::new()
            .name("troupe-findings".to_owned())
            .spawn(move || state.run(rx))
            .map_err(FindingsError::io("start the writer thread for", dir))?;
        Ok(FindingsWriter { tx, dir: dir.to_owned(), warned: AtomicBool::new(false), failure })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues `event` to be appended as one line. Never blocks and never fails: a write error
    /// is reported by [`flush`](Self::flush) and [`finish`](Self::finish).
    pub fn record(&self, event: &Event) {
        if self.tx.send(Command::Record(event.clone())).is_err() && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::error!(dir = %self.dir.display(), "the findings writer has stopped; events are no longer recorded");
        }
    }

    /// Why the log stopped being written, once it has: the run should stop too.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Waits until every event recorded so far is written; reports the first write failure.
    pub async fn flush(&self) -> Result<(), FindingsError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Command::Flush(ack)).map_err(|_| self.stopped())?;
        done.await.map_err(|_| self.stopped())?
    }

    /// Waits until every recorded event is written, then writes `transcript.md` and
    /// `report.md` from them (redacted) and closes the log.
    pub async fn finish(self) -> Result<RunFolder, FindingsError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Command::Finish(ack)).map_err(|_| self.stopped())?;
        done.await.map_err(|_| self.stopped())?
    }

    fn stopped(&self) -> FindingsError {
        FindingsError::WriterStopped { dir: self.dir.clone() }
    }
}

/// Everything the writer thread owns.
struct WriterState {
    dir: PathBuf,
    path: PathBuf,
    /// Unbuffered on purpose: a `BufWriter` would hold lines a `kill -9` then loses.
    file: File,
    redactor: Redactor,
    deltas: DeltaGuard,
    /// The redacted events, deltas left out (the renderings skip them): what `finish` renders,
    /// so the renderings match the log exactly. `None` once more than `keep_at_most` came:
    /// `finish` then reads them back from the log.
    kept: Option<Vec<Event>>,
    keep_at_most: usize,
    /// The first failed append; from then on nothing more is appended.
    failure: Option<io::Error>,
    /// Bytes of whole lines written: a failed append is cut back to this, so the log ends on a
    /// whole line however the disk filled up.
    good_len: u64,
    /// The failure, told to the handle (see [`FindingsWriter::failure`]).
    told: Arc<OnceLock<String>>,
}

impl WriterState {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = rx.blocking_recv() {
            match command {
                Command::Record(event) => self.write(&event),
                Command::Flush(ack) => {
                    // The caller may have stopped waiting; the events are written either way.
                    let _ = ack.send(self.health());
                }
                Command::Finish(ack) => {
                    // As above: the files are written whether or not anyone still listens.
                    let _ = ack.send(self.finish());
                    return;
                }
            }
        }
        // Dropped without `finish` (an error path in the caller): still leave readable renderings.
        let dir = self.dir.clone();
        if let Err(error) = self.finish() {
            tracing::warn!(dir = %dir.display(), %error, "findings writer dropped without finish");
        }
    }

    fn write(&mut self, event: &Event) {
        let clean = match &event.body {
            EventBody::MessageDelta { uri, delta } => Event {
                seq: event.seq,
                ts: event.ts,
                body: EventBody::MessageDelta { uri: *uri, delta: self.deltas.push(&self.redactor, *uri, delta) },
            },
            body => {
                // The whole message (or the task's end) closes a stream of deltas.
                match body {
                    EventBody::Message { uri, .. } => self.deltas.end(*uri),
                    EventBody::TaskStatus { uri, status, .. } if status.is_terminal() => self.deltas.end(*uri),
                    _ => {}
                }
                self.redactor.redact_event(event)
            }
        };
        if self.failure.is_none() {
            match serde_json::to_string(&clean) {
                Ok(mut line) => {
                    line.push('\n');
                    match self.file.write_all(line.as_bytes()) {
                        Ok(()) => self.good_len += line.len() as u64,
                        Err(source) => {
                            // Part of the line may be on disk: cut it, so every line is whole.
                            let _ = self.file.set_len(self.good_len); // best effort: a reader skips a torn last line anyway
                            tracing::error!(path = %self.path.display(), %source, "could not append an event; the log stops here");
                            let _ = self.told.set(format!(
                                "could not append to {}: {source}; the log stops at its last whole line",
                                self.path.display()
                            )); // set once: this is the first failure
                            self.failure = Some(source);
                        }
                    }
                }
                Err(error) => {
                    // Unreachable for these types (string keys only), but not worth a panic.
                    tracing::error!(seq = event.seq, %error, "could not serialize an event; skipped");
                }
            }
        }
        if !matches!(clean.body, EventBody::MessageDelta { .. })
            && let Some(kept) = &mut self.kept
        {
            if kept.len() < self.keep_at_most {
                kept.push(clean);
            } else {
                self.kept = None;
            }
        }
    }

    /// The first write failure, retold: `io::Error` is not `Clone`, and a flush must not
    /// consume what `finish` will report again.
    fn health(&self) -> Result<(), FindingsError> {
        match &self.failure {
            None => Ok(()),
            Some(source) => Err(self.append_error(io::Error::new(source.kind(), source.to_string()))),
        }
    }

    fn append_error(&self, source: io::Error) -> FindingsError {
        FindingsError::Io { action: "append to", path: self.path.clone(), source }
    }

    fn finish(mut self) -> Result<RunFolder, FindingsError> {
        let folder = RunFolder { dir: self.dir.clone() };
        let failure = self.failure.take().map(|source| self.append_error(source));
        let events = match self.kept.take() {
            Some(kept) => kept,
            // The log holds exactly what was kept (redacted, one line per event); after a
            // failed append, the prefix that was written.
            None => match super::read_events(&self.path) {
                Ok((events, _)) => {
                    events.into_iter().filter(|e| !matches!(e.body, EventBody::MessageDelta { .. })).collect()
                }
                Err(error) => return Err(failure.unwrap_or(error)),
            },
        };
        // The events were redacted one by one; redacting the whole text again also catches a
        // secret that only a rendering puts together.
        let transcript = render_transcript(&events);
        let report = render_report(&events);
        let written = write_replacing(&folder.transcript(), &self.redactor.redact(&transcript))
            .and_then(|()| write_replacing(&folder.report(), &self.redactor.redact(&report)))
            .and_then(|()| {
                // The run is over: make its log durable, once, rather than per event.
                self.file.sync_all().map_err(FindingsError::io("sync", &self.path))
            });
        match failure {
            Some(failure) => Err(failure),
            None => written.map(|()| folder),
        }
    }
}
