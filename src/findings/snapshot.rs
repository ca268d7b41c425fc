//! The `config/` snapshot: a copy of every file that shaped a run, so the run can be read and
//! repeated later even after the files changed.
//!
//! Invariant: copies are redacted, so a key pasted into `troupe.toml` does not land in a folder
//! meant to be shared. Files are laid out by their path under the project root; a file outside
//! it goes to `config/external/`, and no path from a config can place a copy outside `config/`.

use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use super::{CONFIG_DIR, FindingsError, Redactor};

/// Copies each of `files` into `dir/config/<its path relative to root>` (or
/// `dir/config/external/<its name>`), redacted. Config files are text; a file that is not UTF-8
/// is copied with its invalid bytes replaced, since a byte-exact copy could not be redacted.
pub fn snapshot_config(dir: &Path, root: &Path, files: &[PathBuf], redactor: &Redactor) -> Result<(), FindingsError> {
    let config = dir.join(CONFIG_DIR);
    let mut sources = HashSet::new();
    let mut targets = HashSet::new();
    for file in files {
        if !sources.insert(file.clone()) {
            continue;
        }
        let relative = match inside(root, file) {
            Some(relative) => relative,
            None => external_name(file, &targets),
        };
        let target = config.join(&relative);
        targets.insert(relative);
        let bytes = fs::read(file).map_err(FindingsError::io("read", file))?;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(FindingsError::io("create", parent))?;
        }
        fs::write(&target, redactor.redact(&text).as_bytes()).map_err(FindingsError::io("write", &target))?;
    }
    Ok(())
}

/// The files of `files` (under `root`) whose text differs from their copy in `dir/config/`, or
/// that have no copy: what changed since the run in `dir` started. A copy that redaction
/// changed counts as changed too, which errs on the side of not mixing configurations.
pub fn changed_since_snapshot(dir: &Path, root: &Path, files: &[PathBuf]) -> Vec<PathBuf> {
    let config = dir.join(CONFIG_DIR);
    files
        .iter()
        .filter(|file| {
            let Some(relative) = inside(root, file) else { return false };
            let current = fs::read(file).map(|b| String::from_utf8_lossy(&b).into_owned());
            let kept = fs::read(config.join(relative)).map(|b| String::from_utf8_lossy(&b).into_owned());
            !matches!((current, kept), (Ok(a), Ok(b)) if a == b)
        })
        .cloned()
        .collect()
}

/// `file`'s path under `root`, if it is under it, made only of plain names (no `..`).
fn inside(root: &Path, file: &Path) -> Option<PathBuf> {
    let plain = |relative: &Path| {
        let ok = relative.components().count() > 0 && relative.components().all(|c| matches!(c, Component::Normal(_)));
        ok.then(|| relative.to_owned())
    };
    if let Some(relative) = file.strip_prefix(root).ok().and_then(plain) {
        return Some(relative);
    }
    // One side may be relative or go through a symlink; compare where they really are.
    let root = root.canonicalize().ok()?;
    let file = file.canonicalize().ok()?;
    file.strip_prefix(&root).ok().and_then(plain)
}

/// `external/<name>`, or `external/<stem>-2.<ext>` and so on when two outside files share a name.
fn external_name(file: &Path, taken: &HashSet<PathBuf>) -> PathBuf {
    let external = Path::new("external");
    let name = file.file_name().map_or_else(|| "unnamed".into(), |n| n.to_string_lossy().into_owned());
    let first = external.join(&name);
    if !taken.contains(&first) {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (name.clone(), String::new()),
    };
    (2..)
        .map(|n| external.join(format!("{stem}-{n}{ext}")))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or(first)
}
