//! The workbench in a real terminal: `troupe watch smoke` inside a detached tmux session, driven
//! by keys and read back with `capture-pane`. Needs tmux (`.ci/run` installs it).
//!
//! Each test has its own tmux server (`-L`, a name unique to the process and test) so parallel
//! tests and the user's own tmux never see each other; a guard kills it however the test ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::cli::workbench;

const BIN: &str = env!("CARGO_BIN_EXE_troupe");
/// How long any one expected screen may take to appear: generous, for a loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const WIDTH: u16 = 120;
const HEIGHT: u16 = 40;

/// A detached tmux session on a server of its own, killed on drop.
pub(crate) struct Tmux {
    server: String,
    session: String,
    socket: Option<PathBuf>,
    /// The last screen captured, for failure messages.
    screen: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a new `WIDTH`×`HEIGHT` session.
    pub(crate) fn start(command: &str) -> Tmux {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("troupe-e2e-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut tmux = Tmux { server: name.clone(), session: name, socket: None, screen: String::new() };
        let (width, height) = (WIDTH.to_string(), HEIGHT.to_string());
        let session = tmux.session.clone();
        let output = tmux.run(&["new-session", "-d", "-s", &session, "-x", &width, "-y", &height, command]);
        assert!(output.status.success(), "tmux new-session failed: {}", String::from_utf8_lossy(&output.stderr));
        // Remembered so the guard can remove the socket file, which tmux leaves behind.
        let output = tmux.run(&["display-message", "-p", "-t", &session, "#{socket_path}"]);
        let socket = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        tmux.socket = (output.status.success() && !socket.is_empty()).then(|| PathBuf::from(socket));
        tmux
    }

    /// `tmux` on this session's server, ignoring the user's configuration and any tmux the test
    /// runs inside.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.server, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run tmux ({err}); install it (.ci/run does: apt-get install tmux)"))
    }

    /// What the pane shows now; also kept as the last screen.
    pub(crate) fn capture(&mut self) -> &str {
        let output = self.run(&["capture-pane", "-p", "-t", &self.session]);
        self.screen = if output.status.success() {
            String::from_utf8_lossy(&output.stdout).into_owned()
        } else {
            format!("(capture-pane failed: {})", String::from_utf8_lossy(&output.stderr).trim())
        };
        &self.screen
    }

    /// Sends tmux key names (`Down`, `Enter`, `q`, …).
    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        let output = self.run(&args);
        assert!(
            output.status.success(),
            "tmux send-keys {keys:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.last_screen()
        );
    }

    /// Polls the screen until `ready` holds; fails with the last screen after `DEADLINE`.
    pub(crate) fn wait_for(&mut self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if ready(self.capture()) {
                return self.screen.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {DEADLINE:?} waiting for {what}\n{}",
                self.last_screen()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The last captured screen, framed for a failure message.
    fn last_screen(&self) -> String {
        format!("--- last screen ({WIDTH}x{HEIGHT}) ---\n{}\n--- end of screen ---", self.screen.trim_end())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Our own server: killing it ends the session and troupe with it. Nothing to do if it
        // has already gone.
        let _ = self.run(&["kill-server"]);
        if let Some(socket) = &self.socket {
            let _ = fs::remove_file(socket);
        }
    }
}

/// A row of the task tree (the left pane): its status mark and depth.
#[derive(Debug, PartialEq)]
struct Row {
    mark: char,
    depth: usize,
}

/// The tree row for `agent`, if the screen shows one. A row is `│` + two spaces per level + a
/// fold mark (`▾`, `▸` or a space) + the status mark + ` agent kind model …`.
fn tree_row(screen: &str, agent: &str) -> Option<Row> {
    screen.lines().find_map(|line| {
        let cell = line.strip_prefix('│')?.split('│').next()?;
        let indent = cell.chars().take_while(|&c| c == ' ').count();
        let rest = cell.trim_start_matches([' ', '▾', '▸']);
        let mark = rest.chars().next()?;
        let after = rest[mark.len_utf8()..].strip_prefix(' ')?;
        let (name, _) = after.split_once(' ')?;
        (name == agent).then_some(Row { mark, depth: indent / 2 })
    })
}

/// The header line of the Run screen (below the tabs).
fn header(screen: &str) -> &str {
    screen.lines().nth(1).unwrap_or_default()
}

/// The tab line: it says `running` while a live run works (or is writing its findings).
fn tabs(screen: &str) -> &str {
    screen.lines().next().unwrap_or_default()
}

/// The finished smoke run, as the tree must show it.
const SMOKE_TREE: [(&str, char, usize); 5] =
    [("coordinator", '✓', 0), ("researcher", '✓', 1), ("summarizer", '✓', 2), ("critic", '⊘', 1), ("slm", '✓', 1)];

fn smoke_finished(screen: &str) -> bool {
    header(screen).starts_with("smoke ")
        && header(screen).contains("completed")
        && !tabs(screen).contains("running")
        && SMOKE_TREE.iter().all(|&(agent, mark, depth)| tree_row(screen, agent) == Some(Row { mark, depth }))
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn watch_smoke_then_browse_the_run_and_its_findings() {
    let started = Instant::now();
    let dir = workbench();
    let root = dir.path();
    let exit_file = root.join("exit-status");
    let command = format!(
        "{} --root {} watch smoke; echo EXIT=$? > {}; sleep 5",
        shell_quote(Path::new(BIN)),
        shell_quote(root),
        shell_quote(&exit_file)
    );
    let mut tmux = Tmux::start(&command);

    // The run starts at once and finishes; its findings are written (the tabs stop saying
    // `running`), so quitting later needs no confirmation.
    let screen = tmux.wait_for("the finished smoke run on the Run screen", smoke_finished);
    assert!(
        ["4 done", "0 failed", "1 cancelled"].iter().all(|count| header(&screen).contains(count)),
        "the header does not count the tasks\n{}",
        tmux.last_screen()
    );
    assert!(screen.contains("┌ coordinator · subtask://"), "the root is not selected at first\n{}", tmux.last_screen());

    // Down selects the first child; the transcript pane follows it.
    tmux.keys(&["Down"]);
    tmux.wait_for("the researcher's transcript", |s| {
        s.contains("┌ researcher · subtask://") && s.contains(" · completed ─")
    });

    // Findings lists the run; Enter on it (the newest, selected first) replays it.
    tmux.keys(&["4"]);
    tmux.wait_for("the run in Findings", |s| {
        // The row under the list's title is the first, selected one.
        let mut lines = s.lines().skip_while(|line| !line.starts_with("┌ runs (1) "));
        lines.nth(1).is_some_and(|row| row.contains("smoke completed"))
    });
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the past run on the Run screen", |s| header(s).starts_with("past run smoke "));
    assert!(
        smoke_finished(&screen.replacen("past run ", "", 1)),
        "the replay differs from the live run\n{}",
        tmux.last_screen()
    );

    // q quits at once (no run works) with status 0.
    tmux.keys(&["q"]);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        match fs::read_to_string(&exit_file) {
            Ok(text) if text.ends_with('\n') => break text,
            _ => {}
        }
        if Instant::now() >= deadline {
            tmux.capture();
            panic!("troupe did not exit within {DEADLINE:?} of q\n{}", tmux.last_screen());
        }
        std::thread::sleep(POLL);
    };
    tmux.capture();
    assert!(status.trim() == "EXIT=0", "troupe exited with {}\n{}", status.trim(), tmux.last_screen());

    // One run folder with the findings.
    let entries: Vec<PathBuf> = fs::read_dir(root.join("findings"))
        .unwrap_or_else(|err| panic!("no findings/ folder: {err}\n{}", tmux.last_screen()))
        .map(|entry| entry.unwrap().path())
        .collect();
    let runs: Vec<&PathBuf> = entries.iter().filter(|path| path.is_dir()).collect();
    assert!(runs.len() == 1, "expected one run folder in findings/, found {entries:?}\n{}", tmux.last_screen());
    for file in ["events.jsonl", "transcript.md", "report.md", "notes.md"] {
        let path = runs[0].join(file);
        let listing: Vec<String> = fs::read_dir(runs[0])
            .map(|dir| dir.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        assert!(path.is_file(), "the run folder lacks {file}; it holds {listing:?}\n{}", tmux.last_screen());
    }
    eprintln!("tui_e2e: the whole session took {:?}", started.elapsed());
}

#[test]
fn a_single_run_in_the_workbench_ends_like_troupe_run_and_memory_learns_from_it() {
    use super::memory_run::{items, troupe, workbench};

    let _model = crate::local_model::one_model_at_a_time();
    let dir = workbench();
    let root = dir.path();
    fs::write(
        root.join("experiments/checked.toml"),
        "root = \"guide\"\ntask = \"How should I get around in Lisbon?\"\n\n[[checks]]\ntype = \"contains\"\nname = \"train\"\nvalue = \"train\"\n",
    )
    .unwrap();
    troupe(root, &["memory", "add", "In Lisbon, the 28 tram is the best way to get around the old town."]);

    let exit_file = root.join("exit-status");
    let command = format!(
        "{} --root {} watch checked; echo EXIT=$? > {}; sleep 5",
        shell_quote(Path::new(BIN)),
        shell_quote(root),
        shell_quote(&exit_file)
    );
    let mut tmux = Tmux::start(&command);
    // Said once the run is scored, learned from and its findings written.
    tmux.wait_for("the run's end with its checks", |s| {
        s.contains("run completed; 1 of 1 checks passed; findings written") && !tabs(s).contains("running")
    });
    tmux.keys(&["q"]);
    let deadline = Instant::now() + DEADLINE;
    while !fs::read_to_string(&exit_file).is_ok_and(|text| text.ends_with('\n')) {
        assert!(Instant::now() < deadline, "troupe did not exit within {DEADLINE:?} of q\n{}", tmux.last_screen());
        std::thread::sleep(POLL);
    }
    assert_eq!(fs::read_to_string(&exit_file).unwrap().trim(), "EXIT=0", "{}", tmux.last_screen());

    // The run folder holds what `troupe run` leaves: its record and its checks in the report.
    let runs: Vec<PathBuf> =
        fs::read_dir(root.join("findings")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    let record: serde_json::Value =
        serde_json::from_str(fs::read_to_string(run.join("trials.jsonl")).unwrap().trim()).unwrap();
    assert_eq!((record["status"].as_str(), record["pass"].as_bool()), (Some("completed"), Some(true)), "{record}");
    let report = fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("## Checks") && report.contains("1 of 1 passed"), "{report}");

    // Memory learned from it: its episode, and the use of the lesson it was given.
    let episodes = items(root, "episode");
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    assert_eq!(episodes[0]["provenance"]["run_id"], run.file_name().unwrap().to_string_lossy().as_ref());
    assert_eq!(episodes[0]["data"]["checks"], serde_json::json!([{"name": "train", "pass": true}]));
    let lessons = items(root, "lesson");
    assert_eq!(lessons.len(), 1, "{lessons:?}");
    assert_eq!((lessons[0]["uses"].as_u64(), lessons[0]["successes"].as_u64()), (Some(1), Some(1)), "{lessons:?}");
}

#[test]
fn a_run_another_process_is_writing_grows_in_the_workbench_until_it_ends() {
    let dir = workbench();
    let root = dir.path();
    // A real run's log, cut in two: the workbench sees the first half, then the rest arrives
    // as it would from `troupe mcp serve` or a run in another terminal.
    let output =
        Command::new(BIN).arg("--root").arg(root).args(["run", "smoke"]).stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let finished = PathBuf::from(String::from_utf8_lossy(&output.stdout).lines().last().unwrap());
    let log = fs::read_to_string(finished.join("events.jsonl")).unwrap();
    fs::remove_dir_all(&finished).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let half = lines.len() / 2;
    let growing = root.join("findings").join(finished.file_name().unwrap());
    fs::create_dir_all(&growing).unwrap();
    fs::write(growing.join("events.jsonl"), lines[..half].iter().map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();

    let mut tmux = Tmux::start(&format!("{} --root {}", shell_quote(Path::new(BIN)), shell_quote(root)));
    tmux.keys(&["4"]);
    tmux.wait_for("the unfinished run in Findings", |s| s.contains("┌ runs (1) "));
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the unfinished run on the Run screen", |s| header(s).starts_with("following smoke "));
    assert!(
        !smoke_finished(&screen.replacen("following ", "", 1)),
        "half a log is not the finished run\n{}",
        tmux.last_screen()
    );

    let mut file = fs::OpenOptions::new().append(true).open(growing.join("events.jsonl")).unwrap();
    for line in &lines[half..] {
        std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    }
    tmux.wait_for("the run grown to its end", |s| smoke_finished(&s.replacen("past run ", "", 1)));
    tmux.keys(&["q"]);
}
