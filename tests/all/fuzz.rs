//! Fuzzing troupe's readers of untrusted input (issue 14): the TOML readers, the SSE decoder (and
//! the two dialects' decoders behind it), built-in tools' arguments, and the GGUF guard (and
//! candle's reader and troupe's tokenizer behind it, on what the guard accepts).
//!
//! Why a hand-written mutator, not `cargo fuzz` or proptest: `cargo fuzz` needs nightly and this
//! project builds on stable only. proptest generates typed values from strategies and shrinks
//! them, which suits properties of values; these targets read bytes a file or a network delivers,
//! and the inputs that break parsers are real inputs slightly broken. So this is coverage-less,
//! AFL-style mutation over the committed corpora: bit flips, interesting bytes and integers, byte
//! insertion and deletion, chunk duplication, splicing two inputs, truncation, a bracket or quote
//! repeated up to 20,000 times, numbers swapped for hostile ones (`NaN`, `1e999`, 2^64), a
//! dictionary per target, and for GGUF structure-aware mutations (entries, array elements and
//! tensors dropped, duplicated or retyped, then written out again). It costs no dependency, and
//! it is deterministic: each target's generator has a fixed seed, so every machine runs the same
//! inputs in the same order; only how many of them fit in the time budget differs.
//!
//! Feedback without coverage: each execution's outcome is reduced to a class (which diagnostics,
//! which error, which chunks); a mutant whose class was never seen joins the pool parents are
//! drawn from, so the search goes on from inputs that reached somewhere new.
//!
//! Each target first checks its seeds unmutated (they must give their expected outcome), then
//! runs mutants until its time budget or its execution cap, whichever comes first. Every
//! execution runs under `catch_unwind`: a panic, or an invariant asserted inside the target,
//! writes the input to a temporary file, prints its path and hex, and fails the test. See each
//! target's executions and distinct outcomes with
//! `cargo test --locked --test all fuzz -- --nocapture`.
//!
//! Corpora, in `fixtures/fuzz/<target>/`: `agent-toml` (the project's agents), `workbench-toml`
//! (its experiments and `troupe.toml`, plus the dataset and script they name), `sse` (OpenAI and
//! Anthropic streams shaped as the APIs document them), `tool-args` (arguments of every built-in
//! tool), `gguf` (a tiny valid file written by hand as version 3 and by candle's writer as version
//! 2, and cuts of it; `fuzz_gguf_corpus_is_what_its_helpers_write` keeps the files equal to the
//! code that wrote them).

use std::collections::{BTreeSet, HashSet};
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use toktrie::TokenizerEnv;
use troupe::config::{Diagnostic, Severity, check_agent_text, load_workbench, render_diagnostics_with};
use troupe::model::local::gguf_guard::{self, GgufError};
use troupe::model::local::tokenizer::{GgufTokenizer, TokEnvironment};
use troupe::model::remote::sse::{SseDecoder, SseEvent};
use troupe::model::remote::wire::Dialect;
use troupe::model::remote::{AnthropicDialect, OpenAiDialect};
use troupe::model::{ModelChunk, ModelRequest};
use troupe::protocol::{BUILTIN_TOOLS, ChatMessage, ToolSpec};
use troupe::runtime::tools::{BuiltinCall, MAX_WAIT_SECONDS, parse_builtin};

use crate::model_stream::request;

/// How long a target runs, and at most how many executions (the cap keeps a fast machine's run
/// short). About a minute in all.
struct Budget {
    wall: Duration,
    max_execs: u64,
}

const AGENT_TOML: Budget = Budget { wall: Duration::from_secs(12), max_execs: 100_000 };
/// Fewer executions: each writes a file and reads the whole workbench.
const WORKBENCH_TOML: Budget = Budget { wall: Duration::from_secs(10), max_execs: 20_000 };
const SSE: Budget = Budget { wall: Duration::from_secs(12), max_execs: 1_000_000 };
const TOOL_ARGS: Budget = Budget { wall: Duration::from_secs(10), max_execs: 1_000_000 };
const GGUF: Budget = Budget { wall: Duration::from_secs(14), max_execs: 500_000 };

/// Mutants are cut to this size: repeated duplication would grow them without end.
const MAX_INPUT: usize = 64 * 1024;
/// Inputs kept for reaching a new outcome, seeds included.
const MAX_POOL: usize = 2048;
/// Mixed into every target's seed: the issue this fuzzer was written for.
const ISSUE: u64 = 14;

// ---------------------------------------------------------------------------------------------
// The engine.

/// A small, seeded generator (SplitMix64): the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn seeded(label: &str) -> Rng {
        // FNV-1a of the label: each target has its own fixed sequence.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in label.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(hash ^ ISSUE)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One committed input.
struct Seed {
    name: String,
    bytes: Vec<u8>,
}

/// What a target is given: the bytes, the name of the seed they descend from (a tool's name, a
/// file's name), and a number for the target's own choices (how to chunk a stream).
struct Case<'a> {
    bytes: &'a [u8],
    origin: &'a str,
    salt: u64,
}

/// A structure-aware mutator: a fresh mutant and the name of its origin.
type Structured<'a> = &'a mut dyn FnMut(&mut Rng) -> (String, Vec<u8>);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/fuzz")
}

/// The files of `fixtures/fuzz/<target>/` ending in `.<extension>`, by name.
fn seeds(target: &str, extension: &str) -> Vec<Seed> {
    let dir = fixtures().join(target);
    let mut seeds: Vec<Seed> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|e| e == extension))
        .map(|path| Seed {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            bytes: std::fs::read(&path).unwrap(),
        })
        .collect();
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!seeds.is_empty(), "no *.{extension} seeds in {}", dir.display());
    seeds
}

/// Runs `target`: every seed once, then mutants until the budget is spent; returns how many
/// distinct outcomes were seen. `run` returns an outcome's class, and panics (an assertion) when
/// the input broke an invariant.
fn fuzz(
    target: &'static str,
    seeds: &[Seed],
    dictionary: &[&[u8]],
    budget: &Budget,
    mut structured: Option<Structured<'_>>,
    mut run: impl FnMut(&Case<'_>) -> String,
) -> usize {
    save_input_on_panic();
    let started = Instant::now();
    let mut rng = Rng::seeded(target);
    let mut pool: Vec<(String, Vec<u8>)> = seeds.iter().map(|s| (s.name.clone(), s.bytes.clone())).collect();
    let mut outcomes = HashSet::new();
    let mut execs = 0u64;
    for seed in seeds {
        outcomes.insert(execute(target, &seed.name, &seed.bytes, 0, execs, &mut run));
        execs += 1;
    }
    while execs < budget.max_execs && started.elapsed() < budget.wall {
        let (origin, mut input, rounds) = match structured.as_mut() {
            // Structured mutants get at most one byte-level mutation on top.
            Some(make) if rng.one_in(2) => {
                let (origin, input) = make(&mut rng);
                (origin, input, rng.below(2))
            }
            _ => {
                let (origin, input) = rng.pick(&pool).clone();
                (origin, input, 1 << rng.below(3))
            }
        };
        for _ in 0..rounds {
            mutate(&mut rng, &mut input, &pool, dictionary);
        }
        let salt = rng.next();
        let outcome = execute(target, &origin, &input, salt, execs, &mut run);
        execs += 1;
        if outcomes.insert(outcome) && pool.len() < MAX_POOL {
            pool.push((origin, input));
        }
    }
    CURRENT.with(|current| current.borrow_mut().take());
    println!(
        "fuzz {target}: {execs} executions ({} seeds, {} mutants) in {:.1} s, {} distinct outcomes, {} inputs in the pool",
        seeds.len(),
        execs - seeds.len() as u64,
        started.elapsed().as_secs_f64(),
        outcomes.len(),
        pool.len()
    );
    outcomes.len()
}

/// The input a fuzzing thread is executing: target, execution, bytes.
type Current = Option<(String, u64, Vec<u8>)>;

thread_local! {
    static CURRENT: std::cell::RefCell<Current> = const { std::cell::RefCell::new(None) };
}

/// Where an execution's input is saved when it fails.
fn crash_path(target: &str, index: u64) -> PathBuf {
    std::env::temp_dir().join(format!("troupe-fuzz-{target}-{index}.bin"))
}

/// A panic hook that saves the input of the fuzzing thread that panics. `catch_unwind` reports
/// an ordinary panic itself; this is for the panics that abort the process instead (a failed
/// `unsafe` precondition in a dependency), where nothing after the hook runs.
fn save_input_on_panic() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            CURRENT.with(|current| {
                if let Ok(current) = current.try_borrow()
                    && let Some((target, index, input)) = current.as_ref()
                {
                    let path = crash_path(target, *index);
                    match std::fs::write(&path, input) {
                        Ok(()) => eprintln!("fuzz {target}: execution {index}'s input is saved to {}", path.display()),
                        Err(e) => eprintln!("fuzz {target}: execution {index}'s input could not be saved: {e}"),
                    }
                }
            });
            previous(info);
        }));
    });
}

/// One execution; a panic becomes a report of the input that caused it, and fails the test.
fn execute(
    target: &str,
    origin: &str,
    input: &[u8],
    salt: u64,
    index: u64,
    run: &mut impl FnMut(&Case<'_>) -> String,
) -> String {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        match current.as_mut() {
            Some((name, at, bytes)) if name == target => {
                *at = index;
                bytes.clear();
                bytes.extend_from_slice(input);
            }
            _ => *current = Some((target.to_owned(), index, input.to_vec())),
        }
    });
    let result = catch_unwind(AssertUnwindSafe(|| run(&Case { bytes: input, origin, salt })));
    match result {
        Ok(outcome) => outcome,
        Err(payload) => {
            CURRENT.with(|current| current.borrow_mut().take());
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            let path = crash_path(target, index);
            let saved = match std::fs::write(&path, input) {
                Ok(()) => path.display().to_string(),
                Err(e) => format!("nowhere ({e})"),
            };
            panic!(
                "fuzz target `{target}` failed on execution {index} (from `{origin}`, salt {salt}): {message}\n\
                 input ({} bytes) saved to {saved}\nhex: {}",
                input.len(),
                hex(input)
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 8192;
    let mut out: String = bytes.iter().take(SHOWN).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > SHOWN {
        out.push_str(&format!("… ({} more bytes in the file)", bytes.len() - SHOWN));
    }
    out
}

const INTERESTING_BYTES: &[u8] = b"\0\x01\x7f\x80\xff\n\r\t \"'\\[]{}=:,#.-";
const INTERESTING_INTEGERS: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    9,
    16,
    31,
    32,
    33,
    64,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 60,
    i64::MAX as u64,
    u64::MAX,
];
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1.5",
    "1e999",
    "-1e999",
    "1e-999",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "0x10",
    "1_000",
    "007",
    "99999999999999999999999999",
];
/// Openers, closers and quotes a parser may recurse or scan on.
const REPEATED: &[&[u8]] =
    &[b"[", b"{", b"\"", b"'", b"\"\"\"", b"'''", b"[[", b"]", b"}", b"\\", b"(", b":", b"\n", b"\r", b"a = ["];

/// One random mutation of `data`, in place.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[(String, Vec<u8>)], dictionary: &[&[u8]]) {
    let len = data.len();
    match rng.below(13) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = *rng.pick(INTERESTING_BYTES);
        }
        2 => {
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..1 + rng.below(4)).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let most = if rng.one_in(8) { len - at } else { (len - at).min(16) };
            let n = 1 + rng.below(most);
            data.drain(at..at + n);
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            let chunk = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, chunk);
        }
        5 => {
            let (_, other) = rng.pick(pool);
            let from = rng.below(other.len() + 1);
            let tail = other[from..].to_vec();
            data.truncate(rng.below(len + 1));
            data.extend_from_slice(&tail);
        }
        6 => data.truncate(rng.below(len + 1)),
        7 => {
            let token = rng.pick(REPEATED);
            let times = if rng.one_in(4) { 1000 + rng.below(20_000) } else { 2 + rng.below(64) };
            let at = rng.below(len + 1);
            data.splice(at..at, token.repeat(times));
        }
        8 if !dictionary.is_empty() => {
            let token = rng.pick(dictionary);
            let at = rng.below(len + 1);
            data.splice(at..at, token.iter().copied());
        }
        9 if !dictionary.is_empty() && len > 0 => {
            let token = rng.pick(dictionary);
            let at = rng.below(len);
            let end = (at + token.len()).min(len);
            data.splice(at..end, token.iter().copied());
        }
        10 => {
            let width = 1 << rng.below(4);
            if len >= width {
                let at = rng.below(len - width + 1);
                let mut current = [0u8; 8];
                current[..width].copy_from_slice(&data[at..at + width]);
                let value = match rng.below(4) {
                    0 => u64::from_le_bytes(current).wrapping_add(1 + rng.below(16) as u64),
                    1 => u64::from_le_bytes(current).wrapping_sub(1 + rng.below(16) as u64),
                    2 => len as u64,
                    _ => *rng.pick(INTERESTING_INTEGERS),
                };
                data[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
        }
        11 => {
            let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let start = *rng.pick(&digits);
                let end = (start..len).find(|&i| !data[i].is_ascii_digit()).unwrap_or(len);
                data.splice(start..end, rng.pick(INTERESTING_NUMBERS).bytes());
            }
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, rng.next() as u8);
        }
    }
    data.truncate(MAX_INPUT);
}

/// A message reduced to its kind: quoted text and numbers dropped, cut short, so outcomes differ
/// by what went wrong rather than by the value quoted.
fn shape(message: &str) -> String {
    let mut out = String::new();
    let mut quote = None;
    for c in message.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), _) => {}
            (None, '`' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, c) if c.is_ascii_digit() => {}
            (None, c) => out.push(c),
        }
        if out.len() >= 60 {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// (1) The TOML readers.

const TOML_WORDS: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[",
    b"]]",
    b" = ",
    b"\"",
    b"'",
    b"\"\"\"",
    b"'''",
    b"#",
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b",",
    b".",
    b"true",
    b"false",
    b"inf",
    b"nan",
    b"1979-05-27T07:32:00Z",
    b"\\u0000",
    b"\\U0010FFFF",
    b"\\",
    b"name",
    b"model",
    b"tools",
    b"experts",
    b"system_prompt",
    b"max_turns",
    b"max_children",
    b"tool_plan",
    b"tool_choice",
    b"self_copies",
    b"root",
    b"task",
    b"tasks",
    b"dataset",
    b"repetitions",
    b"variants",
    b"checks",
    b"[[variants]]",
    b"[[checks]]",
    b"[models.small]",
    b"[limits]",
    b"[memory]",
    b"[routing]",
    b"[mcp.servers.time]",
    b"provider = \"scripted\"",
    b"provider = \"openai\"",
    b"type = \"regex\"",
    b"type = \"json_schema\"",
    b"type = \"exec\"",
    b"pattern = \"(\"",
    b"schema = \"../../etc\"",
    b"agents",
    b"\"call_agent\"",
    b"\"mcp:time/*\"",
    b"\"auto\"",
    b"on_finish",
    b"price_input_per_mtok",
    b"max_cost",
    b"seed",
];

/// A workbench in a temporary folder, from the corpora: `troupe.toml`, the agents, the
/// experiments, and the dataset and script they name.
fn workbench() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let corpus = fixtures().join("workbench-toml");
    std::fs::create_dir_all(root.join("agents")).unwrap();
    std::fs::copy(corpus.join("troupe.toml"), root.join("troupe.toml")).unwrap();
    for seed in seeds("agent-toml", "toml") {
        std::fs::write(root.join("agents").join(&seed.name), &seed.bytes).unwrap();
    }
    std::fs::create_dir_all(root.join("experiments/data")).unwrap();
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    for seed in seeds("workbench-toml", "toml").into_iter().filter(|s| s.name != "troupe.toml") {
        std::fs::write(root.join("experiments").join(&seed.name), &seed.bytes).unwrap();
    }
    std::fs::copy(corpus.join("data/questions.jsonl"), root.join("experiments/data/questions.jsonl")).unwrap();
    std::fs::copy(corpus.join("scripts/smoke.toml"), root.join("scripts/smoke.toml")).unwrap();
    dir
}

/// A diagnostic about `text` points inside it: a line it has, a column on that line (or just
/// past its end).
fn assert_within(diag: &Diagnostic, text: &str) {
    let lines: Vec<&str> = text.split('\n').collect();
    let line = diag.location.line as usize;
    assert!((1..=lines.len()).contains(&line), "{diag}: line {line} of a text of {} lines", lines.len());
    let width = lines[line - 1].chars().count();
    let col = diag.location.col as usize;
    assert!((1..=width + 1).contains(&col), "{diag}: column {col} of a line of {width} characters");
    assert!(!diag.message.trim().is_empty(), "a diagnostic without a message at {}", diag.location.path.display());
}

/// The diagnostics' kinds, as one outcome class.
fn diagnostics_class(diags: &[Diagnostic]) -> String {
    let kinds: BTreeSet<String> = diags
        .iter()
        .map(|d| format!("{}:{}", if d.severity == Severity::Error { "E" } else { "W" }, shape(&d.message)))
        .collect();
    kinds.into_iter().collect::<Vec<_>>().join(" | ")
}

#[test]
fn fuzz_agent_toml() {
    // The whole workbench: agents name aliases that experiments define (`planner` uses `big`).
    let dir = workbench();
    let root = dir.path();
    let seeds = seeds("agent-toml", "toml");
    for seed in &seeds {
        let path = root.join("agents").join(&seed.name);
        let diags = check_agent_text(root, &path, std::str::from_utf8(&seed.bytes).unwrap());
        assert!(
            diags.iter().all(|d| d.severity != Severity::Error),
            "the seed {} has errors: {}",
            seed.name,
            troupe::config::render_diagnostics(&diags)
        );
    }
    let outcomes = fuzz("agent-toml", &seeds, TOML_WORDS, &AGENT_TOML, None, |case| {
        let text = String::from_utf8_lossy(case.bytes);
        let path = root.join("agents").join(case.origin);
        let diags = check_agent_text(root, &path, &text);
        for diag in &diags {
            assert_eq!(diag.location.path, path, "only the checked file's diagnostics: {diag}");
            assert_within(diag, &text);
        }
        let rendered = render_diagnostics_with(&diags, |_| Some(text.to_string()));
        assert!(diags.iter().all(|d| rendered.contains(&d.to_string())), "a diagnostic left out of the rendering");
        diagnostics_class(&diags)
    });
    assert!(outcomes > 1, "every mutant gave the same outcome: the target is not reached");
}

#[test]
fn fuzz_workbench_toml() {
    let dir = workbench();
    let root = dir.path();
    let seeds = seeds("workbench-toml", "toml");
    let loaded = load_workbench(root);
    assert!(
        loaded.workbench.is_some(),
        "the seeds do not load: {}",
        troupe::config::render_diagnostics(&loaded.diagnostics)
    );
    let place = |origin: &str| match origin {
        "troupe.toml" => root.join("troupe.toml"),
        experiment => root.join("experiments").join(experiment),
    };
    let outcomes = fuzz("workbench-toml", &seeds, TOML_WORDS, &WORKBENCH_TOML, None, |case| {
        let path = place(case.origin);
        let original = seeds.iter().find(|s| s.name == case.origin).map(|s| s.bytes.clone()).unwrap();
        std::fs::write(&path, case.bytes).unwrap();
        let loaded = load_workbench(root);
        let rendered = troupe::config::render_diagnostics(&loaded.diagnostics);
        std::fs::write(&path, original).unwrap();
        assert_eq!(loaded.workbench.is_some(), !loaded.has_errors(), "a workbench iff no error: {rendered}");
        assert!(loaded.workbench.is_some() || !loaded.diagnostics.is_empty(), "neither a workbench nor a diagnostic");
        let text = String::from_utf8_lossy(case.bytes);
        for diag in loaded.diagnostics.iter().filter(|d| d.location.path == path) {
            assert_within(diag, &text);
        }
        let mine: Vec<Diagnostic> = loaded.diagnostics.iter().filter(|d| d.location.path == path).cloned().collect();
        format!("{} {}", loaded.workbench.is_some(), diagnostics_class(&mine))
    });
    assert!(outcomes > 1, "every mutant gave the same outcome: the target is not reached");
}

// ---------------------------------------------------------------------------------------------
// (2) The SSE decoder, and the dialects' decoders it feeds.

const SSE_WORDS: &[&[u8]] = &[
    b"data:",
    b"data: ",
    b"event:",
    b"event: ",
    b"id: 1",
    b"retry: 10",
    b": ping",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\n\r\n",
    b"\xEF\xBB\xBF",
    b"\xff",
    b"\xe4\xb8",
    b"[DONE]",
    b"data: [DONE]\n\n",
    b"{\"",
    b"\"}",
    b"null",
    b"\"type\":\"",
    b"message_start",
    b"content_block_start",
    b"content_block_delta",
    b"content_block_stop",
    b"message_delta",
    b"message_stop",
    b"error",
    b"input_json_delta",
    b"text_delta",
    b"tool_use",
    b"\"index\":",
    b"\"index\":99999999999",
    b"\"index\":-1",
    b"\"tool_calls\":[",
    b"\"finish_reason\":\"tool_calls\"",
    b"\"arguments\":\"",
    b"\"partial_json\":\"{\\\"",
    b"\"usage\":",
    b"\"output_tokens\":18446744073709551615",
    b"\"choices\":[]",
];

/// `bytes` decoded in pieces of random sizes (from `salt`): the events (or the decoder's error,
/// which ends the stream), and whether a partial event was left at the end.
fn decode_in_pieces(bytes: &[u8], salt: u64) -> (Result<Vec<SseEvent>, String>, bool) {
    let mut rng = Rng(salt);
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let most = if rng.one_in(4) { rest.len() } else { rest.len().min(8) };
        let n = 1 + rng.below(most);
        match decoder.push(&rest[..n]) {
            Ok(more) => events.extend(more),
            Err(error) => return (Err(error.to_string()), decoder.finish()),
        }
        rest = &rest[n..];
    }
    (Ok(events), decoder.finish())
}

/// The events through one dialect's decoder as the transport drives it (an error ends the
/// stream); tool calls of built-in tools go on to argument parsing, as the runtime does.
fn through(dialect: &dyn Dialect, request: &ModelRequest, events: &[SseEvent]) -> String {
    let mut decoder = dialect.decoder(request);
    let mut chunks = Vec::new();
    for event in events {
        match decoder.event(event.event.as_deref(), &event.data) {
            Ok(more) => chunks.extend(more),
            Err(message) => {
                assert!(!message.trim().is_empty(), "an empty error");
                return format!("{} error: {}", chunk_kinds(&chunks), shape(&message));
            }
        }
    }
    let end = decoder.finish();
    let end = match end {
        Ok(more) => {
            chunks.extend(more);
            "end".to_owned()
        }
        Err(message) => format!("cut: {}", shape(&message)),
    };
    for chunk in &chunks {
        if let ModelChunk::ToolCall(call) = chunk {
            if BUILTIN_TOOLS.contains(&call.name.as_str()) {
                let _ = parse_builtin(&call.name, &call.arguments);
            }
        }
    }
    format!("{} {end}", chunk_kinds(&chunks))
}

fn chunk_kinds(chunks: &[ModelChunk]) -> String {
    let kinds: BTreeSet<&str> = chunks
        .iter()
        .map(|chunk| match chunk {
            ModelChunk::TextDelta(_) => "text",
            ModelChunk::ToolCall(_) => "call",
            ModelChunk::Usage(_) => "usage",
            ModelChunk::Notice(_) => "notice",
        })
        .collect();
    kinds.into_iter().collect::<Vec<_>>().join("+")
}

#[test]
fn fuzz_sse() {
    let tools: Vec<ToolSpec> = BUILTIN_TOOLS
        .iter()
        .map(|name| ToolSpec {
            name: (*name).to_owned(),
            description: format!("The {name} tool."),
            parameters: json!({"type": "object"}),
        })
        .collect();
    let request = request(vec![ChatMessage::user("How many hearts has an octopus?")], tools);
    let seeds = seeds("sse", "sse");
    for seed in &seeds {
        let events = SseDecoder::new().push(&seed.bytes).unwrap();
        assert!(events.len() >= 2, "the seed {} decodes to {} events", seed.name, events.len());
        let dialect: &dyn Dialect = if seed.name.starts_with("openai") { &OpenAiDialect } else { &AnthropicDialect };
        let outcome = through(dialect, &request, &events);
        assert_eq!(outcome.contains("error"), seed.name.contains("error"), "{}: {outcome}", seed.name);
    }
    let outcomes = fuzz("sse", &seeds, SSE_WORDS, &SSE, None, |case| {
        let mut whole = SseDecoder::new();
        let events = whole.push(case.bytes).map_err(|e| e.to_string());
        let partial = whole.finish();
        // The decoder's invariant: any split of the same bytes yields the same events (or the
        // same error, for a line or event past its cap).
        let (pieces, partial_in_pieces) = decode_in_pieces(case.bytes, case.salt);
        assert_eq!(pieces, events, "the events differ when the bytes arrive in pieces");
        let events = match events {
            Ok(events) => events,
            Err(error) => return format!("refused: {}", shape(&error)),
        };
        assert_eq!(partial_in_pieces, partial, "`finish` differs when the bytes arrive in pieces");
        let openai = through(&OpenAiDialect, &request, &events);
        let anthropic = through(&AnthropicDialect, &request, &events);
        format!("{} events, partial {partial}; openai {openai}; anthropic {anthropic}", events.len().min(4))
    });
    assert!(outcomes > 1, "every mutant gave the same outcome: the target is not reached");
}

// ---------------------------------------------------------------------------------------------
// (3) Built-in tools' arguments.

const JSON_WORDS: &[&[u8]] = &[
    b"null",
    b"true",
    b"false",
    b"\"NaN\"",
    b"\"inf\"",
    b"\"-inf\"",
    b"\"1e999\"",
    b"1e999",
    b"-1",
    b"-0.0",
    b"1e-400",
    b"18446744073709551616",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b"\\u0000",
    b"\\ud800",
    b"\"\"",
    b"\" \"",
    b"\"task\"",
    b"\"agent\"",
    b"\"model\"",
    b"\"prompt\"",
    b"\"system\"",
    b"\"max_tokens\"",
    b"\"uri\"",
    b"\"wait_seconds\"",
    b"\"scope\"",
    b"\"expert\"",
    b"\"global\"",
    b"\"text\"",
    b"\"query\"",
    b"\"k\"",
    b"\"subtask://aaaaaa\"",
    b":",
    b",",
];

/// The tool a seed's file names: `call_slm-quoted-number.json` is `call_slm`'s.
fn tool_of(origin: &str) -> &str {
    origin.split(['-', '.']).next().unwrap_or(origin)
}

/// What `parse_builtin` promises of what it accepts: required texts are not blank, and numbers
/// are clamped into their documented ranges.
fn assert_in_range(call: &BuiltinCall) {
    let blank = |text: &str| text.trim().is_empty();
    match call {
        BuiltinCall::CallAgent { task, agent, model } => {
            assert!(!blank(task), "a blank task");
            assert!(!agent.as_deref().is_some_and(blank) && !model.as_deref().is_some_and(blank), "a blank name");
        }
        BuiltinCall::CallSlm { prompt, max_tokens, .. } => {
            assert!(!blank(prompt), "a blank prompt");
            if let Some(n) = max_tokens {
                assert!((1..=4096).contains(n), "max_tokens {n} is outside 1..=4096");
            }
        }
        BuiltinCall::GetTaskStatus { uri, wait_seconds } => {
            assert!(!blank(uri), "a blank uri");
            assert!((0.0..=MAX_WAIT_SECONDS).contains(wait_seconds), "wait_seconds {wait_seconds} is outside 0..=300");
        }
        BuiltinCall::CancelTask { uri } => assert!(!blank(uri), "a blank uri"),
        BuiltinCall::ListTasks => {}
        BuiltinCall::Remember { text, .. } => assert!(!blank(text), "a blank text"),
        BuiltinCall::Recall { query, k } => {
            assert!(!blank(query), "a blank query");
            assert!((1..=20).contains(k), "k {k} is outside 1..=20");
        }
    }
}

fn call_kind(call: &BuiltinCall) -> String {
    let text = format!("{call:?}");
    text.split([' ', '{']).next().unwrap_or_default().to_owned()
}

#[test]
fn fuzz_tool_args() {
    let seeds = seeds("tool-args", "json");
    for seed in &seeds {
        let value: Value = serde_json::from_slice(&seed.bytes).unwrap();
        let call = parse_builtin(tool_of(&seed.name), &value).unwrap_or_else(|e| panic!("{}: {e}", seed.name));
        assert_in_range(&call);
    }
    let covered: BTreeSet<&str> = seeds.iter().map(|s| tool_of(&s.name)).collect();
    assert_eq!(covered, BUILTIN_TOOLS.iter().copied().collect(), "a seed for every built-in tool");
    let outcomes = fuzz("tool-args", &seeds, JSON_WORDS, &TOOL_ARGS, None, |case| {
        let Ok(value) = serde_json::from_slice::<Value>(case.bytes) else {
            return "not JSON".to_owned();
        };
        // Mostly the seed's own tool; now and then another's, as a confused model would call it.
        let tool = if case.salt % 5 == 0 {
            BUILTIN_TOOLS[(case.salt / 5) as usize % BUILTIN_TOOLS.len()]
        } else {
            tool_of(case.origin)
        };
        match parse_builtin(tool, &value) {
            Ok(call) => {
                assert_in_range(&call);
                format!("{tool}: {}", call_kind(&call))
            }
            Err(message) => {
                assert!(!message.trim().is_empty(), "an empty error");
                format!("{tool}: {}", shape(&message))
            }
        }
    });
    assert!(outcomes > 1, "every mutant gave the same outcome: the target is not reached");
}

// ---------------------------------------------------------------------------------------------
// (4) GGUF: the guard, then candle's reader, tensor loads and troupe's tokenizer on what it
// accepts.

/// A metadata value as the spec writes it; `Bool` keeps its byte so a mutant may hold a 2.
#[derive(Clone, Debug)]
enum Gv {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(u8),
    Str(Vec<u8>),
    /// The declared element type, and the elements (a mutant's may not match it).
    Arr(u32, Vec<Gv>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Gv {
    fn kind(&self) -> u32 {
        match self {
            Gv::U8(_) => 0,
            Gv::I8(_) => 1,
            Gv::U16(_) => 2,
            Gv::I16(_) => 3,
            Gv::U32(_) => 4,
            Gv::I32(_) => 5,
            Gv::F32(_) => 6,
            Gv::Bool(_) => 7,
            Gv::Str(_) => 8,
            Gv::Arr(..) => 9,
            Gv::U64(_) => 10,
            Gv::I64(_) => 11,
            Gv::F64(_) => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Gv::U8(v) => out.push(*v),
            Gv::I8(v) => out.extend(v.to_le_bytes()),
            Gv::U16(v) => out.extend(v.to_le_bytes()),
            Gv::I16(v) => out.extend(v.to_le_bytes()),
            Gv::U32(v) => out.extend(v.to_le_bytes()),
            Gv::I32(v) => out.extend(v.to_le_bytes()),
            Gv::F32(v) => out.extend(v.to_le_bytes()),
            Gv::Bool(v) => out.push(*v),
            Gv::Str(s) => {
                out.extend((s.len() as u64).to_le_bytes());
                out.extend(s);
            }
            Gv::Arr(kind, items) => {
                out.extend(kind.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
            Gv::U64(v) => out.extend(v.to_le_bytes()),
            Gv::I64(v) => out.extend(v.to_le_bytes()),
            Gv::F64(v) => out.extend(v.to_le_bytes()),
        }
    }

    /// The same value for candle's writer (the seeds hold only values it can write).
    fn to_candle(&self) -> gguf_file::Value {
        use gguf_file::Value as V;
        match self {
            Gv::U8(v) => V::U8(*v),
            Gv::I8(v) => V::I8(*v),
            Gv::U16(v) => V::U16(*v),
            Gv::I16(v) => V::I16(*v),
            Gv::U32(v) => V::U32(*v),
            Gv::I32(v) => V::I32(*v),
            Gv::F32(v) => V::F32(*v),
            Gv::Bool(v) => V::Bool(*v != 0),
            Gv::Str(s) => V::String(String::from_utf8_lossy(s).into_owned()),
            Gv::Arr(_, items) => V::Array(items.iter().map(Gv::to_candle).collect()),
            Gv::U64(v) => V::U64(*v),
            Gv::I64(v) => V::I64(*v),
            Gv::F64(v) => V::F64(*v),
        }
    }
}

fn text(s: &str) -> Gv {
    Gv::Str(s.as_bytes().to_vec())
}

#[derive(Clone, Debug)]
struct TensorEntry {
    name: Vec<u8>,
    dims: Vec<u64>,
    dtype: u32,
    offset: u64,
}

/// A GGUF file as its parts, written out by [`GgufModel::write`].
#[derive(Clone, Debug)]
struct GgufModel {
    version: u32,
    entries: Vec<(Vec<u8>, Gv)>,
    tensors: Vec<TensorEntry>,
    data: Vec<u8>,
}

impl GgufModel {
    /// The file, and where its metadata, its tensor table and its data begin.
    fn write(&self) -> (Vec<u8>, [usize; 3]) {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.entries.len() as u64).to_le_bytes());
        let metadata_at = out.len();
        for (key, value) in &self.entries {
            Gv::Str(key.clone()).write(&mut out);
            out.extend(value.kind().to_le_bytes());
            value.write(&mut out);
        }
        let tensors_at = out.len();
        for tensor in &self.tensors {
            Gv::Str(tensor.name.clone()).write(&mut out);
            out.extend((tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend(dim.to_le_bytes());
            }
            out.extend(tensor.dtype.to_le_bytes());
            out.extend(tensor.offset.to_le_bytes());
        }
        // The seed's `general.alignment` is 32.
        out.resize(out.len().next_multiple_of(32), 0);
        let data_at = out.len();
        out.extend(&self.data);
        (out, [metadata_at, tensors_at, data_at])
    }
}

const TOKENS: &[&str] =
    &["<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "e", "l", "o", "Ġ", "4", "2", "he", "ll", "hell", "hello"];

/// A tiny model file as the spec lays it out: the metadata troupe's loader and tokenizer read
/// (byte-level BPE vocabulary, merges, token types, end-of-sequence id, chat template), a nested
/// array, and two tensors (F32 4×2, one Q8_0 block) with their data.
fn tiny_model() -> GgufModel {
    let types = TOKENS.iter().enumerate().map(|(i, _)| Gv::I32(if i < 3 { 3 } else { 1 })).collect();
    let entries = vec![
        ("general.architecture", text("llama")),
        ("general.name", text("troupe fuzz seed")),
        ("general.alignment", Gv::U32(32)),
        ("llama.context_length", Gv::U32(64)),
        ("llama.rope.freq_base", Gv::F32(10_000.0)),
        ("tokenizer.ggml.model", text("gpt2")),
        ("tokenizer.ggml.pre", text("smollm")),
        ("tokenizer.ggml.tokens", Gv::Arr(8, TOKENS.iter().map(|t| text(t)).collect())),
        ("tokenizer.ggml.token_type", Gv::Arr(5, types)),
        ("tokenizer.ggml.merges", Gv::Arr(8, ["h e", "l l", "he ll", "hell o"].iter().map(|m| text(m)).collect())),
        ("tokenizer.ggml.eos_token_id", Gv::U32(2)),
        ("tokenizer.ggml.add_bos_token", Gv::Bool(0)),
        (
            "tokenizer.chat_template",
            text(
                "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}",
            ),
        ),
        ("troupe.fuzz.nested", Gv::Arr(9, vec![Gv::Arr(0, vec![Gv::U8(1), Gv::U8(2)]), Gv::Arr(0, vec![])])),
        ("troupe.fuzz.signed", Gv::I64(-7)),
        ("troupe.fuzz.scale", Gv::F64(0.5)),
        ("troupe.fuzz.small", Gv::I16(-2)),
        ("troupe.fuzz.tiny", Gv::I8(-3)),
        ("troupe.fuzz.width", Gv::U16(512)),
        ("troupe.fuzz.flag", Gv::Bool(1)),
    ];
    let mut data: Vec<u8> = (0..8).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
    // One Q8_0 block: an f16 scale of 1.0, then 32 signed bytes.
    data.extend([0x00, 0x3c]);
    data.extend((0..32).map(|i| (i as i8 - 16) as u8));
    data.resize(96, 0);
    GgufModel {
        version: 3,
        entries: entries.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect(),
        tensors: vec![
            TensorEntry { name: b"token_embd.weight".to_vec(), dims: vec![4, 2], dtype: 0, offset: 0 },
            TensorEntry { name: b"output.weight".to_vec(), dims: vec![32], dtype: 8, offset: 32 },
        ],
        data,
    }
}

/// The same model as candle's own writer writes it (GGUF version 2, as troupe's Q8_0 copy).
fn candle_written() -> Vec<u8> {
    let model = tiny_model();
    let metadata: Vec<(String, gguf_file::Value)> =
        model.entries.iter().map(|(k, v)| (String::from_utf8(k.clone()).unwrap(), v.to_candle())).collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let cpu = Device::Cpu;
    let embd = Tensor::from_vec((0..8).map(|i| i as f32 * 0.25).collect::<Vec<f32>>(), (2, 4), &cpu).unwrap();
    let out = Tensor::from_vec((0..32).map(|i| (i as f32 - 16.0) / 16.0).collect::<Vec<f32>>(), (32,), &cpu).unwrap();
    let embd = QTensor::quantize(&embd, GgmlDType::F32).unwrap();
    let out = QTensor::quantize(&out, GgmlDType::Q8_0).unwrap();
    let mut file = Cursor::new(Vec::new());
    gguf_file::write(&mut file, &metadata, &[("token_embd.weight", &embd), ("output.weight", &out)]).unwrap();
    file.into_inner()
}

/// The committed GGUF corpus, by file name: two valid files, and the first cut at four places.
fn gguf_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let (tiny, [metadata_at, tensors_at, data_at]) = tiny_model().write();
    vec![
        ("tiny-v3.gguf", tiny.clone()),
        ("candle-v2.gguf", candle_written()),
        ("cut-in-header.gguf", tiny[..20].to_vec()),
        ("cut-in-metadata.gguf", tiny[..(metadata_at + tensors_at) / 2].to_vec()),
        ("cut-in-tensor-table.gguf", tiny[..(tensors_at + data_at) / 2].to_vec()),
        ("cut-in-data.gguf", tiny[..tiny.len() - 40].to_vec()),
    ]
}

const GGUF_WORDS: &[&[u8]] = &[
    b"GGUF",
    b"general.alignment",
    b"tokenizer.ggml.tokens",
    b"tokenizer.ggml.token_type",
    b"tokenizer.ggml.merges",
    b"tokenizer.ggml.eos_token_id",
    b"tokenizer.ggml.model",
    b"gpt2",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x07\x00\x00\x00",
    b"\x08\x00\x00\x00",
    b"\x09\x00\x00\x00",
    b"\x00\x00\x00\x00\x00\x00\x00\x10",
];

/// A structure-aware mutant of the tiny model: entries, array elements and tensors dropped,
/// duplicated, retyped or given hostile values, then written out as a file.
fn mutate_model(rng: &mut Rng, model: &GgufModel) -> Vec<u8> {
    let mut model = model.clone();
    for _ in 0..1 + rng.below(3) {
        let entries = model.entries.len();
        let arrays: Vec<usize> = (0..entries).filter(|&i| matches!(model.entries[i].1, Gv::Arr(..))).collect();
        match rng.below(11) {
            0 if entries > 0 => {
                model.entries.remove(rng.below(entries));
            }
            1 if entries > 0 => {
                let entry = model.entries[rng.below(entries)].clone();
                model.entries.insert(rng.below(entries + 1), entry);
            }
            2 | 3 if !arrays.is_empty() => {
                let index = *rng.pick(&arrays);
                if let Gv::Arr(_, items) = &mut model.entries[index].1 {
                    if rng.one_in(2) && !items.is_empty() {
                        items.remove(rng.below(items.len()));
                    } else if !items.is_empty() {
                        let item = items[rng.below(items.len())].clone();
                        for _ in 0..1 + rng.below(3) {
                            items.push(item.clone());
                        }
                    }
                }
            }
            4 if entries > 1 => {
                // A key given another entry's value (and so its type).
                let value = model.entries[rng.below(entries)].1.clone();
                let index = rng.below(entries);
                model.entries[index].1 = value;
            }
            5 if entries > 0 => {
                let index = rng.below(entries);
                let n = *rng.pick(INTERESTING_INTEGERS);
                model.entries[index].1 = match rng.below(8) {
                    0 => Gv::U32(n as u32),
                    1 => Gv::I32(n as i32),
                    2 => Gv::U64(n),
                    3 => Gv::I64(n as i64),
                    4 => Gv::U8(n as u8),
                    5 => Gv::Bool(n as u8),
                    6 => Gv::F32(f32::from_bits(n as u32)),
                    _ => Gv::Str(vec![b'x'; (n % 300) as usize]),
                };
            }
            6 if !arrays.is_empty() => {
                // An array whose declared element type differs from its elements.
                let index = *rng.pick(&arrays);
                if let Gv::Arr(kind, _) = &mut model.entries[index].1 {
                    *kind = rng.below(14) as u32;
                }
            }
            7 if entries > 0 => {
                let index = rng.below(entries);
                let inner = model.entries[index].1.clone();
                model.entries[index].1 = Gv::Arr(inner.kind(), vec![inner]);
            }
            8 if !model.tensors.is_empty() => {
                let index = rng.below(model.tensors.len());
                let tensor = &mut model.tensors[index];
                match rng.below(4) {
                    0 => {
                        let dim = rng.below(tensor.dims.len().max(1));
                        if dim < tensor.dims.len() {
                            tensor.dims[dim] = *rng.pick(INTERESTING_INTEGERS);
                        }
                    }
                    1 => tensor.dims.push(*rng.pick(INTERESTING_INTEGERS)),
                    2 => tensor.dtype = rng.below(32) as u32,
                    _ => tensor.offset = *rng.pick(INTERESTING_INTEGERS),
                }
            }
            9 if !model.tensors.is_empty() => {
                let index = rng.below(model.tensors.len());
                if rng.one_in(2) {
                    model.tensors.remove(index);
                } else {
                    let tensor = model.tensors[index].clone();
                    model.tensors.push(tensor);
                }
            }
            _ => model.version = *rng.pick(&[1, 2, 3, 4]),
        }
    }
    model.write().0
}

/// The outcome class of an error: its kind and field, without values.
fn guard_class(err: &GgufError) -> String {
    let kind = format!("{err:?}");
    format!("refused {} {:?}", kind.split([' ', '{']).next().unwrap_or_default(), err.field())
}

/// Everything troupe does with a GGUF file before inference, on one input.
fn read_gguf(bytes: &[u8]) -> String {
    let mut file = Cursor::new(bytes);
    let layout = match gguf_guard::check(&mut file) {
        Ok(layout) => layout,
        Err(err) => {
            assert!(!err.to_string().is_empty());
            return guard_class(&err);
        }
    };
    assert_eq!(file.position(), 0, "the guard leaves the reader where it found it");
    let content = match Content::read(&mut file) {
        Ok(content) => content,
        Err(err) => return format!("accepted; candle refused: {}", shape(&err.to_string())),
    };
    assert_eq!(content.tensor_data_offset, layout.tensor_data_offset, "the guard and candle disagree on the data");
    assert!(
        content.metadata.len() as u64 <= layout.metadata_count
            && content.tensor_infos.len() as u64 <= layout.tensor_count
    );
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let loaded = names.iter().filter(|name| content.tensor(&mut file, name, &Device::Cpu).is_ok()).count();
    let tokenizer = match GgufTokenizer::from_gguf(&content) {
        Ok(tokenizer) => tokenizer,
        Err(err) => return format!("accepted; {loaded} tensors; tokenizer refused: {}", shape(&err.to_string())),
    };
    let round_trip = tokenizer.encode("hello 42<|im_end|>").and_then(|ids| tokenizer.decode(&ids)).is_ok();
    let env = TokEnvironment::new(Arc::new(tokenizer));
    let ids = env.tokenize_bytes(b"hello");
    format!("accepted; {loaded} tensors; tokenizer, round trip {round_trip}, {} ids", ids.len().min(3))
}

#[test]
fn fuzz_gguf_corpus_is_what_its_helpers_write() {
    let dir = fixtures().join("gguf");
    let write = std::env::var_os("TROUPE_WRITE_FUZZ_CORPUS").is_some();
    for (name, bytes) in gguf_corpus() {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == bytes, "{name} is not what its helper writes; TROUPE_WRITE_FUZZ_CORPUS=1 rewrites it");
        let outcome = read_gguf(&bytes);
        if name.starts_with("cut-") {
            assert!(outcome.starts_with("refused"), "{name}: {outcome}");
        } else {
            assert_eq!(outcome, "accepted; 2 tensors; tokenizer, round trip true, 1 ids", "{name}");
        }
    }
}

#[test]
fn fuzz_gguf() {
    let seeds = seeds("gguf", "gguf");
    let model = tiny_model();
    let mut structured = |rng: &mut Rng| ("tiny-v3.gguf (structured)".to_owned(), mutate_model(rng, &model));
    let outcomes = fuzz("gguf", &seeds, GGUF_WORDS, &GGUF, Some(&mut structured), |case| read_gguf(case.bytes));
    assert!(outcomes > 1, "every mutant gave the same outcome: the target is not reached");
}
