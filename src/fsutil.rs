//! File-system helpers shared by every part of troupe that replaces a file in place (renderings,
//! settings, notes written by the workbench), and the workbench's own folder, `.troupe/`.
//!
//! Invariant: [`write_atomic`] leaves the target either wholly old or wholly new, never half of
//! one, and never leaves its temporary file behind when it fails. A reader, a crash or a second
//! writer sees one complete version.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of one process; with the pid it makes a name no other writer
/// uses at the same time, so two threads replacing one file never write into each other's.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many temporary names to try when one is taken (a stale file left by a crashed process
/// that had the same pid): more than one collision in a row means something else is wrong.
const NAME_ATTEMPTS: u32 = 16;

/// Why [`write_atomic`] failed: what it was doing and on which file. It travels inside the
/// returned [`io::Error`] (whose kind is the underlying one), so callers that match on
/// [`io::ErrorKind`] keep working and messages still name the file.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {}: {source}", path.display())]
pub struct AtomicWriteError {
    /// What was being attempted ("create", "write", "replace", ...).
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn failure(action: &'static str, path: &Path, source: io::Error) -> io::Error {
    io::Error::new(source.kind(), AtomicWriteError { action, path: path.to_owned(), source })
}

/// Replaces the contents of `path` with `bytes` atomically: the bytes go to a hidden temporary
/// file in the same directory (a rename is atomic only within one file system), which is synced
/// and then renamed over the target. An existing target's permissions are kept; its owner is
/// not (only root could keep it). A symbolic link at `path` is replaced, not followed.
///
/// On failure the target is untouched and the temporary file is gone.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file");
        return Err(failure("write", path, source));
    };
    // `Path::parent` is `Some("")` for a bare file name, which means the current directory.
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // Read before writing so the new file never has looser permissions than the old one, even
    // for an instant after the rename.
    let permissions = match fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => Some(metadata.permissions()),
        _ => None,
    };

    let (temporary, file) = create_temporary(dir, &name.to_string_lossy())?;
    let written = fill(file, &temporary, bytes, permissions)
        .and_then(|()| fs::rename(&temporary, path).map_err(|e| failure("replace", path, e)));
    if let Err(error) = written {
        // The error being reported matters more than a failure to clean up after it.
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    sync_directory(dir);
    Ok(())
}

/// Creates a new temporary file next to the target, never opening one that already exists.
fn create_temporary(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut attempt = 0;
    loop {
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temporary = dir.join(format!(".{name}.{pid}.{count}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&temporary) {
            Ok(file) => return Ok((temporary, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < NAME_ATTEMPTS => attempt += 1,
            Err(e) => return Err(failure("create", &temporary, e)),
        }
    }
}

/// Writes, sets permissions and syncs the temporary file, then closes it: the rename must not
/// make visible a file whose bytes are still only in the page cache.
fn fill(mut file: File, temporary: &Path, bytes: &[u8], permissions: Option<Permissions>) -> io::Result<()> {
    file.write_all(bytes).map_err(|e| failure("write", temporary, e))?;
    file.flush().map_err(|e| failure("write", temporary, e))?;
    if let Some(permissions) = permissions {
        file.set_permissions(permissions).map_err(|e| failure("set permissions of", temporary, e))?;
    }
    file.sync_all().map_err(|e| failure("sync", temporary, e))
}

/// Makes the rename itself durable. Best effort: the target has already been replaced, so
/// reporting a failure here would wrongly tell the caller that nothing changed.
fn sync_directory(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The workbench's own folder (`.troupe/`: the memory database, the terminal app's log),
/// created on first use with a `.gitignore` that keeps it out of git: what it holds is what runs
/// saw, and `troupe memory export` is how lessons are shared.
pub fn own_folder(root: &Path) -> io::Result<PathBuf> {
    let own = root.join(".troupe");
    fs::create_dir_all(&own)?;
    let ignore = own.join(".gitignore");
    let note =
        "# troupe's own files (memory database, log): not for git; share lessons with `troupe memory export`\n*\n";
    match OpenOptions::new().write(true).create_new(true).open(&ignore) {
        Ok(mut file) => file.write_all(note.as_bytes())?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// Names in `dir` that look like this module's temporary files.
    fn temporaries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.') && name.ends_with(".tmp"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn creates_a_missing_file_and_replaces_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.md");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "first");
        write_atomic(&path, b"second, and longer than the first").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second, and longer than the first");
        write_atomic(&path, b"").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_missing_directory_fails_with_its_path_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("report.md");
        let error = write_atomic(&path, b"text").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains("absent"), "{error}");
        assert!(error.get_ref().is_some_and(|inner| inner.is::<AtomicWriteError>()), "{error:?}");
        assert!(!dir.path().join("absent").exists());
        assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_directory_in_the_way_is_left_alone_and_the_temporary_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.md");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), "kept").unwrap();
        let error = write_atomic(&path, b"text").unwrap_err();
        assert!(error.to_string().contains("notes.md"), "{error}");
        assert!(path.is_dir());
        assert_eq!(fs::read_to_string(path.join("inside")).unwrap(), "kept");
        assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_path_that_names_no_file_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        fs::write(&path, "old").unwrap();
        let error = write_atomic(&dir.path().join(".."), b"new").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    }

    #[cfg(unix)]
    #[test]
    fn keeps_the_permissions_of_the_file_it_replaces() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.txt");
        let contents: Vec<String> = (0..8).map(|i| format!("writer {i} ").repeat(2_000)).collect();
        std::thread::scope(|scope| {
            for content in &contents {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, content.as_bytes()).unwrap();
                    }
                });
            }
        });
        let last = fs::read_to_string(&path).unwrap();
        assert!(contents.contains(&last), "the file holds a mixture of writers");
        assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    }
}
