//! Where troupe's own diagnostics go (`tracing`'s warnings and errors: a log that stops, a
//! subtask that panicked, an accept that failed): stderr for the command line, a file under the
//! workbench (`.troupe/troupe.log`) for the terminal app, whose screen stderr would tear. The
//! level comes from `TROUPE_LOG`, else `RUST_LOG` (`error`, `warn`, `info`, `debug`, `trace`,
//! `off`; a directive list such as `troupe=debug,hyper=warn` gives its most verbose level),
//! and is `warn` by default.
//!
//! Invariant: every line is redacted (the environment's secret values) and stripped of control
//! characters before it is written, like anything else troupe prints.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::filter::LevelFilter;

use crate::findings::Redactor;

/// Where the log goes.
pub enum LogTarget {
    Stderr,
    /// Appended to this file (created with its folder, readable by its owner alone).
    File(PathBuf),
}

/// The log file of the workbench at `root`, in its own folder (kept out of git).
pub fn workbench_log(root: &Path) -> io::Result<PathBuf> {
    Ok(crate::fsutil::own_folder(root)?.join("troupe.log"))
}

/// The level `TROUPE_LOG` or `RUST_LOG` asks for.
pub fn level_from(troupe_log: Option<&str>, rust_log: Option<&str>) -> LevelFilter {
    let spec = troupe_log.filter(|s| !s.trim().is_empty()).or(rust_log.filter(|s| !s.trim().is_empty()));
    let Some(spec) = spec else { return LevelFilter::WARN };
    // `target=level` directives: the most verbose level any of them names.
    spec.split(',')
        .filter_map(|directive| directive.rsplit('=').next())
        .filter_map(|level| level.trim().parse::<LevelFilter>().ok())
        .max()
        .unwrap_or(LevelFilter::WARN)
}

/// Installs the process's subscriber. Returns why the log file could not be opened (then
/// nothing is installed and diagnostics are dropped, as before: a log is never a reason not to
/// start).
pub fn install(target: LogTarget) -> Result<(), String> {
    let level = level_from(std::env::var("TROUPE_LOG").ok().as_deref(), std::env::var("RUST_LOG").ok().as_deref());
    let redactor = Redactor::from_env(&[]);
    let (sink, ansi): (Box<dyn Write + Send>, bool) = match target {
        LogTarget::Stderr => {
            use std::io::IsTerminal as _;
            (Box::new(io::stderr()), io::stderr().is_terminal())
        }
        LogTarget::File(path) => {
            (Box::new(open_private(&path).map_err(|e| format!("{}: {e}", path.display()))?), false)
        }
    };
    let writer = CleanWriter { sink: Arc::new(Mutex::new(sink)), redactor: Arc::new(redactor), ansi };
    // `try_init`: a second install (tests, an embedding program) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(ansi)
        .with_target(true)
        .with_writer(move || writer.clone())
        .try_init();
    Ok(())
}

fn open_private(path: &Path) -> io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Writes each formatted event redacted and without control characters (but the colours the
/// subscriber itself adds on a terminal).
#[derive(Clone)]
struct CleanWriter {
    sink: Arc<Mutex<Box<dyn Write + Send>>>,
    redactor: Arc<Redactor>,
    ansi: bool,
}

impl Write for CleanWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = self.redactor.redact(&text);
        let clean = if self.ansi { text } else { crate::printable::printable(&text).into_owned().into() };
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        sink.write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.lock().unwrap_or_else(PoisonError::into_inner).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_comes_from_troupe_log_then_rust_log() {
        let table = [
            (None, None, LevelFilter::WARN),
            (Some("debug"), None, LevelFilter::DEBUG),
            (Some(""), Some("info"), LevelFilter::INFO),
            (Some("error"), Some("trace"), LevelFilter::ERROR),
            (None, Some("troupe=debug,hyper=warn"), LevelFilter::DEBUG),
            (None, Some("off"), LevelFilter::OFF),
            (None, Some("nonsense"), LevelFilter::WARN),
        ];
        for (troupe, rust, expected) in table {
            assert_eq!(level_from(troupe, rust), expected, "{troupe:?} {rust:?}");
        }
    }

    #[test]
    fn a_log_file_is_private_and_gets_clean_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".troupe/troupe.log");
        let file = open_private(&path).unwrap();
        let mut writer = CleanWriter {
            sink: Arc::new(Mutex::new(Box::new(file))),
            redactor: Arc::new(Redactor::new(vec!["sk-live-0123456789".into()])),
            ansi: false,
        };
        writer.write_all(b"WARN server said sk-live-0123456789 \x1b]0;owned\x07\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "WARN server said [redacted] ]0;owned\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
