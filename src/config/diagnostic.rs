//! Diagnostics: what is wrong (or doubtful) in a workbench file, where, and how to fix it; and
//! their rendering for a terminal (`troupe check`).
//!
//! Invariant: a [`Diagnostic`]'s location is 1-based and its column counts characters, so it
//! can be shown next to the source line as written; [`Loaded::workbench`] is `Some` exactly when
//! no diagnostic has [`Severity::Error`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::types::{Location, Workbench};

/// How bad a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The workbench cannot be used until it is fixed.
    Error,
    /// Probably a mistake, but the workbench still loads.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One finding about a workbench file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(location: Location, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, location, message: message.into(), hint: None }
    }

    pub fn warning(location: Location, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, location, message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_opt_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `path:line:col: error: message`, then `  = hint: ...` on its own line when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Location { path, line, col } = &self.location;
        write!(f, "{}:{line}:{col}: {}: {}", path.display(), self.severity.as_str(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Sorts diagnostics by path, then line, then column; ties keep the order they were found in.
/// Sorts by place and drops repeats: a file several others read (a dataset shared by
/// experiments) is reported once, not once per reader.
pub(crate) fn sort_diagnostics(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (&a.location.path, a.location.line, a.location.col).cmp(&(&b.location.path, b.location.line, b.location.col))
    });
    let mut kept: Vec<Diagnostic> = Vec::with_capacity(diags.len());
    for diag in diags.drain(..) {
        if !kept.contains(&diag) {
            kept.push(diag);
        }
    }
    *diags = kept;
}

/// The result of [`load_workbench`](super::load_workbench).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// `Some` iff `diagnostics` holds no error.
    pub workbench: Option<Workbench>,
    /// Sorted by path, line, column.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// Renders diagnostics for a terminal, reading each file's text from disk: every diagnostic's
/// `Display`, the offending source line and a caret under the column (like rustc), and a final
/// `N errors, M warnings` line.
pub fn render_diagnostics(diags: &[Diagnostic]) -> String {
    render_diagnostics_with(diags, |path| std::fs::read_to_string(path).ok())
}

/// [`render_diagnostics`] with the files' texts supplied by `source` (for text not on disk,
/// such as an editor's buffer). A file `source` cannot supply is rendered without its lines.
pub fn render_diagnostics_with(diags: &[Diagnostic], mut source: impl FnMut(&Path) -> Option<String>) -> String {
    let mut texts: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut out = String::new();
    for diag in diags {
        out.push_str(&diag.to_string());
        out.push('\n');
        let text = texts.entry(diag.location.path.clone()).or_insert_with(|| source(&diag.location.path));
        if let Some(snippet) = text.as_deref().and_then(|text| snippet(text, diag.location.line, diag.location.col)) {
            out.push_str(&snippet);
        }
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    out.push_str(&format!(
        "{errors} {}, {warnings} {}\n",
        if errors == 1 { "error" } else { "errors" },
        if warnings == 1 { "warning" } else { "warnings" },
    ));
    out
}

/// ` 3 | source line` and `   |     ^`, or `None` when the line does not exist.
fn snippet(text: &str, line: u32, col: u32) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let source_line = text.lines().nth(index)?;
    let source_line = source_line.strip_suffix('\r').unwrap_or(source_line);
    let number = line.to_string();
    let gutter = " ".repeat(number.len());
    // Keep tabs so the caret lines up under the same column as the text above it.
    let pad: String = source_line
        .chars()
        .take(usize::try_from(col).unwrap_or(1).saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    Some(format!("{gutter} |\n{number} | {source_line}\n{gutter} | {pad}^\n"))
}
