//! The Python side of the MCP tests, installed the ordinary way: a virtual environment under
//! the cargo target folder with `fixtures/mcp/requirements.txt` (the official SDK `mcp` and
//! the independent `mcp-server-time`), made once per requirements file and reused; test
//! processes running side by side take turns through a lock folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/mcp")
}

/// The environment's folder (`bin/python`, `bin/mcp-server-time`), made if needed.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let requirements = std::fs::read_to_string(fixtures().join("requirements.txt")).unwrap();
        let digest: u64 =
            requirements.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mcp-venv-{digest:016x}"));
        // A venv cannot be moved (its scripts name its python by path), so it is built in place
        // by the process holding the lock folder; the others wait for `ready`.
        let lock = dir.with_extension("lock");
        let started = std::time::Instant::now();
        while !dir.join("ready").is_file() {
            if std::fs::create_dir(&lock).is_ok() {
                if !dir.join("ready").is_file() {
                    build(&dir);
                }
                let _ = std::fs::remove_dir(&lock);
                break;
            }
            let stale = std::fs::metadata(&lock)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() > 600));
            if stale {
                let _ = std::fs::remove_dir(&lock);
            }
            assert!(
                started.elapsed().as_secs() < 900,
                "waited 15 minutes for another process to build {}",
                dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        dir
    })
}

/// `mcp-server-time`'s program.
fn build(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let made = Command::new("python3").arg("-m").arg("venv").arg(dir).status().unwrap();
    assert!(
        made.success(),
        "python3 -m venv failed: the MCP tests need Python 3 with venv (apt-get install python3-venv)"
    );
    let pip = Command::new(dir.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(fixtures().join("requirements.txt"))
        .status()
        .unwrap();
    assert!(pip.success(), "pip could not install the MCP test requirements (it needs PyPI or pip's configured index)");
    std::fs::write(dir.join("ready"), "").unwrap();
}

pub fn time_server() -> PathBuf {
    venv().join("bin/mcp-server-time")
}

/// The environment's Python (with the SDK).
pub fn python() -> PathBuf {
    venv().join("bin/python")
}
