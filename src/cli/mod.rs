//! The command line's parts, a module per subcommand (`run`, `mcp`, `models`, `memory`), and
//! what they share: exit codes, printing that never panics and never lets outside text drive the
//! terminal, loading the workbench with its diagnostics, the async runtime.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use troupe::config::{Workbench, load_workbench, render_diagnostics};

pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_CONFIG: u8 = 2;
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// Writes a line to stderr, ignoring a closed or full stream.
/// Outside text (a model's answer, a server's error) reaches the terminal without its control
/// characters, so it cannot drive the user's terminal.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stderr(), "{}", troupe::printable::printable(&text));
    }};
}

pub(crate) mod mcp;
pub(crate) mod memory;
pub(crate) mod models;
pub(crate) mod run;

pub(crate) fn async_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(err) => {
            say!("error: cannot start the async runtime: {err}");
            None
        }
    }
}

/// The terminal app, on the workbench at `root`; `watch` starts an experiment at once.
pub(crate) fn workbench(root: &Path, watch: Option<String>) -> ExitCode {
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
pub(crate) fn load(root: &Path) -> Option<Workbench> {
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

pub(crate) fn check(root: &Path) -> ExitCode {
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
pub(crate) fn in_root(root: &Path, dir: PathBuf) -> PathBuf {
    if dir.is_dir() || dir.is_absolute() { dir } else { root.join(dir) }
}
