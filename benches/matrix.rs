//! The experiment matrix runner at scale: a 10 × 100 matrix (variants × trials per variant) on
//! an instant scripted model. Reports the wall time of the whole `run_matrix` and trials per
//! second, resident memory (before, after and peak), the time to write the report again from the
//! finished folder (summary, report and charts, and `summarize` alone), and the folder's size.
//!
//! Run with `cargo bench --bench matrix` (add `-- 8 1` to choose the concurrency levels; the
//! default is 8, then 1).
//!
//! The checks are `contains` and `regex`, not `exec`: an exec check spawns a process per trial,
//! and 1,000 fork/execs would measure the kernel, not troupe.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use troupe::config::{Workbench, load_workbench};
use troupe::experiment::record::TrialRecord;
use troupe::experiment::runner::{MatrixEnv, MatrixOptions, run_matrix};
use troupe::experiment::update::MatrixUpdate;
use troupe::experiment::{charts, report, store, summary};
use troupe::model::EnginePool;
use troupe::runtime::{Clock, SystemClock};

const TASKS: usize = 20;
const REPETITIONS: usize = 5;
/// Times the report is written again from the finished folder.
const REWRITES: usize = 7;

/// Variants in the experiment's order, and the trials each passes out of 100: the `flaky` model
/// does not know the tasks with a 7 in their id (q07 and q17), `bad` knows none.
const VARIANTS: [(&str, &str, usize); 10] = [
    ("baseline", "", 100),
    ("t0.3", "temperature = 0.3", 100),
    ("t0.7", "temperature = 0.7", 100),
    ("t1.0", "temperature = 1.0", 100),
    ("t1.5", "temperature = 1.5", 100),
    ("top-p", "top_p = 0.9", 100),
    ("short", "max_tokens = 64", 100),
    ("terse", "system_prompt = \"Answer tersely.\"", 100),
    ("flaky", "model = \"flaky\"", 90),
    ("bad", "model = \"bad\"", 0),
];

/// A workbench whose `solver` answers "Answer: <task>" at once (`delay_ms = 0`), with the
/// experiment `m` (10 variants × 20 tasks × 5 repetitions, tasks from a dataset) and `warmup`.
fn workbench() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = |conversations: &[(&str, &str)]| -> String {
        conversations
            .iter()
            .map(|(filter, text)| {
                format!("[[conversation]]\n{filter}repeat = true\n[[conversation.turn]]\ndelay_ms = 0\ntext = \"{text}\"\n\n")
            })
            .collect()
    };
    let dataset: String = (1..=TASKS)
        .map(|i| format!("{{\"id\": \"q{i:02}\", \"input\": \"q{i:02}\", \"expected\": \"q{i:02}\"}}\n"))
        .collect();
    let mut experiment = format!(
        "root = \"solver\"\ndataset = \"tasks.jsonl\"\nrepetitions = {REPETITIONS}\nconcurrency = 8\n\n\
         [[checks]]\ntype = \"contains\"\n\n[[checks]]\ntype = \"regex\"\npattern = '^Answer: q\\d+$'\n"
    );
    for (name, patch, _) in VARIANTS {
        experiment.push_str(&format!("\n[[variants]]\nname = \"{name}\"\n"));
        if !patch.is_empty() {
            experiment.push_str(&format!("[variants.agents.solver]\n{patch}\n"));
        }
    }
    let mut models = String::new();
    for alias in ["good", "flaky", "bad"] {
        models.push_str(&format!("[models.{alias}]\nprovider = \"scripted\"\nscript = \"scripts/{alias}.toml\"\n\n"));
    }
    let files: Vec<(&str, String)> = vec![
        ("troupe.toml", models),
        ("agents/solver.toml", "model = \"good\"\nsystem_prompt = \"Answer.\"\n".into()),
        ("scripts/good.toml", script(&[("", "Answer: {{task}}")])),
        ("scripts/flaky.toml", script(&[("task_contains = \"7\"\n", "I do not know."), ("", "Answer: {{task}}")])),
        ("scripts/bad.toml", script(&[("", "I do not know.")])),
        ("experiments/tasks.jsonl", dataset),
        ("experiments/m.toml", experiment),
        (
            "experiments/warmup.toml",
            "root = \"solver\"\nrepetitions = 2\ntasks = [{ input = \"w1\", id = \"w1\" }, { input = \"w2\", id = \"w2\" }]\n\n[[checks]]\ntype = \"contains\"\nvalue = \"Answer\"\n".into(),
        ),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// A `/proc/self/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(key: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so each run's peak is its own.
fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Bytes and files under `dir`, and the bytes of disk they take (blocks).
fn disk_usage(dir: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let (mut bytes, mut files, mut blocks) = (0, 0, 0);
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        blocks += meta.blocks() * 512;
        if meta.is_dir() {
            let (b, f, k) = disk_usage(&entry.path());
            (bytes, files, blocks) = (bytes + b, files + f, blocks + k);
        } else {
            bytes += meta.len();
            files += 1;
        }
    }
    (bytes, files, blocks)
}

struct Run {
    seconds: f64,
    trials: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    peak_kib: u64,
    peak_reset: bool,
    dir: std::path::PathBuf,
    records: Vec<TrialRecord>,
}

fn run(runtime: &tokio::runtime::Runtime, workbench: &Workbench, experiment: &str, concurrency: u32) -> Run {
    let peak_reset = reset_peak();
    let rss_before_kib = status_kib("VmRSS:");
    runtime.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Drained as the CLI does, so the channel does not grow for the whole run.
        let drain = tokio::spawn(async move {
            let (mut finished, mut statuses) = (0usize, Vec::new());
            while let Some(update) = rx.recv().await {
                match update {
                    MatrixUpdate::TrialFinished { .. } => finished += 1,
                    MatrixUpdate::Status(line) => statuses.push(line),
                    _ => {}
                }
            }
            (finished, statuses)
        });
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let options = MatrixOptions { concurrency: Some(concurrency), ..MatrixOptions::default() };
        let started = Instant::now();
        let outcome = run_matrix(
            workbench,
            experiment,
            options,
            MatrixEnv {
                pool: EnginePool::default(),
                clock,
                updates: tx,
                cancel: CancellationToken::new(),
                mcp: troupe::mcp::client::McpPool::new(&workbench.settings.mcp_servers),
            },
        )
        .await
        .unwrap_or_else(|err| panic!("{experiment}: {err}"));
        let seconds = started.elapsed().as_secs_f64();
        let (finished, statuses) = drain.await.unwrap();
        assert!(outcome.complete && !outcome.cancelled, "{experiment}: incomplete; {statuses:?}");
        assert_eq!(finished, outcome.records.len(), "{statuses:?}");
        let errors: Vec<&TrialRecord> = outcome.records.iter().filter(|r| r.status != "completed").collect();
        assert!(errors.is_empty(), "trials that did not complete: {:?}", &errors[..errors.len().min(3)]);
        Run {
            seconds,
            trials: outcome.records.len(),
            rss_before_kib,
            rss_after_kib: status_kib("VmRSS:"),
            peak_kib: status_kib("VmHWM:"),
            peak_reset,
            dir: outcome.dir,
            records: outcome.records,
        }
    })
}

/// Median and max of `samples`.
fn median_max(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(samples[samples.len() / 2]), ms(samples[samples.len() - 1]))
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

fn main() {
    let levels: Vec<u32> =
        std::env::args().skip(1).filter(|a| !a.starts_with('-')).filter_map(|a| a.parse().ok()).collect();
    let levels = if levels.is_empty() { vec![8, 1] } else { levels };
    let wb = workbench();
    let loaded = load_workbench(wb.path());
    let shown: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    let workbench = loaded.workbench.unwrap_or_else(|| panic!("the bench's workbench does not load: {shown:#?}"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // Warm up the runtime, the allocator and the page cache.
    let warm = run(&runtime, &workbench, "warmup", 4);
    assert_eq!(warm.trials, 4);

    let planned = VARIANTS.len() * TASKS * REPETITIONS;
    println!(
        "troupe matrix: {} variants × {} trials ({TASKS} tasks × {REPETITIONS} repetitions) = {planned} trials, instant scripted model, checks contains + regex",
        VARIANTS.len(),
        TASKS * REPETITIONS
    );
    println!(
        "workbench in {} ({} cores)",
        wb.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>11} {:>9} {:>9} {:>11} {:>11} {:>11} {:>11} {:>10}",
        "concurrency", "wall (s)", "trials/s", "ms/trial", "RSS before", "RSS after", "peak RSS", "growth"
    );
    let mut last = None;
    for &concurrency in &levels {
        let r = run(&runtime, &workbench, "m", concurrency);
        assert_eq!(r.trials, planned);
        for (name, _, passes) in VARIANTS {
            let passed = r.records.iter().filter(|t| t.variant == name && t.pass).count();
            assert_eq!(passed, passes, "variant {name}");
        }
        println!(
            "{:>11} {:>9.2} {:>9.0} {:>11.2} {:>7.1} MiB {:>7.1} MiB {:>7.1} MiB{} {:>6.1} MiB",
            concurrency,
            r.seconds,
            r.trials as f64 / r.seconds,
            r.seconds * 1e3 / r.trials as f64,
            mib(r.rss_before_kib),
            mib(r.rss_after_kib),
            mib(r.peak_kib),
            if r.peak_reset { " " } else { "*" },
            mib(r.rss_after_kib) - mib(r.rss_before_kib),
        );
        last = Some(r);
    }
    let Some(r) = last else { return };
    if !r.peak_reset {
        println!("* peak RSS could not be reset (/proc/self/clear_refs): it is the process's peak so far");
    }

    // Writing the report again from the last matrix's folder, as `--resume` and `merge` do.
    let (records, read) = time(|| store::read_records(&r.dir).unwrap());
    assert_eq!(records.len(), planned);
    let info = store::read_matrix(&r.dir).unwrap().info;
    let mut write = Vec::new();
    let mut summarize = Vec::new();
    let mut render = Vec::new();
    let mut svg = Vec::new();
    for _ in 0..REWRITES {
        write.push(time(|| store::write_outputs(&r.dir, &info, &records).unwrap()).1);
        let (s, took) = time(|| summary::summarize(&info, &records));
        summarize.push(took);
        render.push(time(|| report::render_report(&info, &s, &records)).1);
        svg.push(time(|| (charts::pass_rate_svg(&s), charts::tokens_svg(&s))).1);
    }
    println!("\nreport of {} records, written {REWRITES} times:", records.len());
    println!("{:>34} {:>11} {:>11}", "", "median (ms)", "max (ms)");
    println!(
        "{:>34} {:>11.1} {:>11.1}",
        "store::read_records (once)",
        read.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3
    );
    for (name, samples) in [
        ("store::write_outputs (all)", write),
        ("summary::summarize", summarize),
        ("report::render_report", render),
        ("charts (pass rate + tokens)", svg),
    ] {
        let (median, max) = median_max(samples);
        println!("{name:>34} {median:>11.1} {max:>11.1}");
    }

    let (bytes, files, blocks) = disk_usage(&r.dir);
    let trials_jsonl = fs::metadata(r.dir.join(store::TRIALS_FILE)).unwrap().len();
    let report_md = fs::metadata(r.dir.join(store::REPORT_FILE)).unwrap().len();
    let summary_json = fs::metadata(r.dir.join(store::SUMMARY_FILE)).unwrap().len();
    println!("\ndisk, one matrix folder:");
    println!(
        "  {files} files, {:.1} MiB of content, {:.1} MiB on disk ({:.1} KiB per trial)",
        bytes as f64 / 1048576.0,
        blocks as f64 / 1048576.0,
        blocks as f64 / 1024.0 / planned as f64
    );
    println!(
        "  trials.jsonl {:.0} KiB ({:.0} B per record), summary.json {:.0} KiB, report.md {:.0} KiB",
        trials_jsonl as f64 / 1024.0,
        trials_jsonl as f64 / planned as f64,
        summary_json as f64 / 1024.0,
        report_md as f64 / 1024.0
    );
    println!("peak RSS of the process: {:.1} MiB", mib(status_kib("VmHWM:")));
}
