//! The inference thread: owns the loaded model and serves every request for it.
//!
//! One thread, off the async workers, holds the weights once. Requests join a queue; the thread
//! advances the active generations in turn, one forward pass each (a prefill chunk or one
//! token), so concurrent agents share the model fairly instead of waiting for each other's whole
//! replies. Each task keeps its KV cache between turns (keyed by its subtask): an agent's next
//! turn feeds only the tokens after the longest prefix the cache already holds, instead of
//! re-reading the whole conversation.
//!
//! Invariants: nothing here blocks an async worker (replies go out with `blocking_send` from
//! this thread); cancellation is checked before every forward pass; a request's errors end its
//! own stream and never the thread.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling as Sampler};
use candle_transformers::models::quantized_llama::ModelWeights;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::grammar::{answer_grammar, tool_turn_grammar};
use super::prompt::{Reply, TOOL_CALL_OPEN, open_subtasks, parse_reply, render};
use super::tokenizer::{GgufTokenizer, TokEnvironment};
use crate::model::{ModelChunk, ModelError, ModelRequest, Sampling};
use crate::protocol::{TaskId, ToolSpec, Usage};

/// Tokens fed per forward pass while reading a prompt: large enough to use the matrix kernels
/// well, small enough that other requests get a turn within a fraction of a second.
const PREFILL_CHUNK: usize = 128;
/// KV caches kept for tasks between their turns.
const MAX_SESSIONS: usize = 16;
/// Tokens of KV cache kept in all (about 46 KB each, so ~110 MB): keeps the process within
/// its memory target however many agents run.
const MAX_CACHED_TOKENS: usize = 2400;
/// System-message snapshots kept for new tasks to start from.
const MAX_PREFIXES: usize = 8;
/// A system message shorter than this is cheaper to read again than to keep.
const MIN_PREFIX: usize = 64;
/// Replies are capped at this many tokens unless the request or the alias says otherwise.
pub const DEFAULT_MAX_TOKENS: u32 = 512;
/// llama.cpp's default repetition penalty over the last 64 tokens: a 135M model decoding
/// greedily otherwise loops on its own sentences.
const REPEAT_PENALTY: f32 = 1.1;
const REPEAT_WINDOW: usize = 64;
/// Tokens a tool call may run past `max_tokens` to close its JSON.
const CALL_OVERRUN: usize = 1024;
/// `<|endoftext|>`: also ends a reply (the model sometimes emits it instead of `<|im_end|>`).
const END_OF_TEXT: u32 = 0;

/// The loaded model, ready to serve.
pub struct Loaded {
    pub weights: ModelWeights,
    pub tokenizer: Arc<GgufTokenizer>,
    pub template: String,
    /// `None` if llguidance could not be set up for this vocabulary: tools are then refused.
    pub factory: Option<Arc<ParserFactory>>,
    pub context_length: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open the model file {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error(
        "the model file {path} is not a readable GGUF model ({message}); run `troupe models fetch --force` to fetch it again and rebuild its Q8_0 copy"
    )]
    Format { path: String, message: String },
    #[error(
        "{path}: not a GGUF file troupe can read: {source}; run `troupe models fetch --force` to fetch it again and rebuild its Q8_0 copy"
    )]
    Gguf {
        path: String,
        #[source]
        source: super::gguf_guard::GgufError,
    },
}

/// Reads a GGUF file: weights, tokenizer, chat template, grammar support.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let shown = path.display().to_string();
    let format = |message: String| LoadError::Format { path: shown.clone(), message };
    let mut file = std::fs::File::open(path).map_err(|source| LoadError::Open { path: shown.clone(), source })?;
    // candle panics or over-allocates on some hostile headers: they are refused here first.
    super::gguf_guard::check(&mut std::io::BufReader::new(&file))
        .map_err(|source| LoadError::Gguf { path: shown.clone(), source })?;
    let content = Content::read(&mut file).map_err(|e| format(e.to_string()))?;
    let tokenizer = Arc::new(GgufTokenizer::from_gguf(&content).map_err(|e| format(e.to_string()))?);
    let template = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| format("it has no tokenizer.chat_template".into()))?;
    let context_length = content
        .metadata
        .get("llama.context_length")
        .and_then(|v| v.to_u32().ok())
        .map_or(2048, |n| n as usize)
        .min(candle_transformers::models::quantized_llama::MAX_SEQ_LEN);
    let weights = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).map_err(|e| format(e.to_string()))?;
    let env: toktrie::TokEnv = Arc::new(TokEnvironment::new(tokenizer.clone()));
    let factory = match ParserFactory::new_simple(&env) {
        Ok(mut factory) => {
            factory.quiet();
            Some(Arc::new(factory))
        }
        Err(err) => {
            tracing::warn!("constrained decoding unavailable: {err}");
            None
        }
    };
    Ok(Loaded { weights, tokenizer, template, factory, context_length })
}

/// One request as the thread receives it.
pub struct Job {
    pub request: ModelRequest,
    /// The alias's defaults, under the request's own values.
    pub defaults: Sampling,
    pub cancel: CancellationToken,
    pub tx: mpsc::Sender<Result<ModelChunk, ModelError>>,
}

/// The handle the provider keeps: a queue into the thread.
pub struct EngineHandle {
    jobs: std_mpsc::Sender<Job>,
    /// Requests submitted and not yet finished, for the "waiting" notice.
    in_flight: Arc<AtomicUsize>,
}

impl EngineHandle {
    /// Starts the thread; it loads the model first, then serves. A load failure is reported to
    /// every request.
    pub fn spawn(path: std::path::PathBuf) -> Result<EngineHandle, std::io::Error> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = in_flight.clone();
        std::thread::Builder::new().name("troupe-model".into()).spawn(move || {
            // A panic in the model code must not leave requests waiting on a thread that is
            // gone: catch it, then answer everything still queued with an error.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match load(&path) {
                Ok(loaded) => {
                    Engine::new(loaded, counter.clone()).run(&rx);
                    None
                }
                Err(err) => Some(err.to_string()),
            }));
            let message = match outcome {
                Ok(None) => return,
                Ok(Some(message)) => message,
                Err(_) => "the model thread crashed (a bug in troupe; please report it)".to_owned(),
            };
            for job in rx.iter() {
                counter.fetch_sub(1, Ordering::Relaxed);
                let _ = job.tx.blocking_send(Err(ModelError::Provider(message.clone())));
            }
        })?;
        Ok(EngineHandle { jobs, in_flight })
    }

    pub fn submit(&self, job: Job) {
        let ahead = self.in_flight.fetch_add(1, Ordering::Relaxed);
        if ahead > 0 {
            // A fresh stream has room for this one notice.
            let _ = job.tx.try_send(Ok(ModelChunk::Notice(format!(
                "sharing the model with {ahead} other request{}",
                if ahead == 1 { "" } else { "s" }
            ))));
        }
        if let Err(std_mpsc::SendError(job)) = self.jobs.send(job) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = job.tx.try_send(Err(ModelError::Provider("the model thread has stopped".into())));
        }
    }
}

/// A task's model state between turns.
struct Session {
    weights: ModelWeights,
    /// Tokens whose keys and values are in `weights`' cache.
    ids: Vec<u32>,
    last_used: u64,
}

struct Generation {
    job: Job,
    task: TaskId,
    session: Session,
    /// Prompt tokens not yet fed.
    pending: Vec<u32>,
    /// When the session's cache reaches this many tokens (the end of the system message),
    /// keep a copy for other tasks that start with the same system message.
    snapshot_at: Option<usize>,
    /// The session right after reading the whole prompt: kept for the task's next turn.
    prompt_snapshot: Option<Session>,
    logits: Option<Tensor>,
    prompt_tokens: usize,
    generated: Vec<u32>,
    /// Bytes of the decoded reply already streamed.
    streamed: usize,
    matcher: Option<Matcher>,
    sampler: LogitsProcessor,
    max_new: usize,
    turn_id: String,
    started: Instant,
}

enum Step {
    Continue,
    Done,
}

struct Engine {
    base: ModelWeights,
    tokenizer: Arc<GgufTokenizer>,
    template: String,
    factory: Option<Arc<ParserFactory>>,
    context_length: usize,
    sessions: HashMap<TaskId, Session>,
    /// Snapshots of caches holding just a system message, shared by tasks that start with it.
    prefixes: Vec<Session>,
    /// `<|im_start|>`, which opens every message.
    im_start: Option<u32>,
    clock: u64,
    in_flight: Arc<AtomicUsize>,
}

impl Engine {
    fn new(loaded: Loaded, in_flight: Arc<AtomicUsize>) -> Self {
        let im_start = loaded.tokenizer.id("<|im_start|>");
        Engine {
            base: loaded.weights,
            tokenizer: loaded.tokenizer,
            template: loaded.template,
            factory: loaded.factory,
            context_length: loaded.context_length,
            im_start,
            sessions: HashMap::new(),
            prefixes: Vec::new(),
            clock: 0,
            in_flight,
        }
    }

    fn run(mut self, jobs: &std_mpsc::Receiver<Job>) {
        let mut active: VecDeque<Generation> = VecDeque::new();
        loop {
            if active.is_empty() {
                match jobs.recv() {
                    Ok(job) => self.start(job, &mut active),
                    Err(_) => return, // every handle is gone
                }
            }
            while let Ok(job) = jobs.try_recv() {
                self.start(job, &mut active);
            }
            let Some(mut generation) = active.pop_front() else { continue };
            if generation.job.cancel.is_cancelled() || generation.job.tx.is_closed() {
                // Never block here: a caller that cancelled may have stopped reading.
                let _ = generation.job.tx.try_send(Err(ModelError::Cancelled));
                self.retire(generation);
                continue;
            }
            match self.step(&mut generation) {
                Ok(Step::Continue) => active.push_back(generation),
                Ok(Step::Done) => self.finish(generation),
                Err(message) => {
                    let _ = generation.job.tx.blocking_send(Err(ModelError::Provider(message)));
                    self.retire(generation);
                }
            }
        }
    }

    fn start(&mut self, job: Job, active: &mut VecDeque<Generation>) {
        match self.prepare(job) {
            Ok(generation) => active.push_back(generation),
            Err((job, message)) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = job.tx.blocking_send(Err(ModelError::Provider(message)));
            }
        }
    }

    #[allow(clippy::result_large_err)] // the job goes back to the caller to report on
    fn prepare(&mut self, job: Job) -> Result<Generation, (Job, String)> {
        let request = &job.request;
        let tools = if request.tools.is_empty() || self.factory.is_none() { &[][..] } else { &request.tools[..] };
        let prompt = match render(&self.template, &request.messages, tools) {
            Ok(prompt) => prompt,
            Err(err) => return Err((job, err.to_string())),
        };
        let ids = match self.tokenizer.encode(&prompt) {
            Ok(ids) => ids,
            Err(err) => return Err((job, err.to_string())),
        };
        let sampling = merge(&request.sampling, &job.defaults);
        let max_new = sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS) as usize;
        if ids.len() + max_new.min(64) > self.context_length {
            let message = format!(
                "the conversation is {} tokens long; the model's context holds {}",
                ids.len(),
                self.context_length
            );
            return Err((job, message));
        }
        let max_new = max_new.min(self.context_length - ids.len());

        let had_calls = request.messages.iter().any(|m| !m.tool_calls.is_empty());
        let open = open_subtasks(&request.messages);
        let required = request.tool_choice == crate::protocol::ToolChoice::Required;
        let forced = request.forced_tool.as_deref();
        let lark = if !tools.is_empty() {
            Some(tool_turn_grammar(tools, &open, required, forced))
        } else if had_calls && self.factory.is_some() {
            Some(answer_grammar())
        } else {
            None
        };
        let matcher = match (lark, &self.factory) {
            (Some(lark), Some(factory)) => match factory.create_parser(TopLevelGrammar::from_lark(lark)) {
                Ok(parser) => Some(Matcher::new(Ok(parser))),
                Err(err) => {
                    // One tool's schema (an MCP server's, say) that the grammar cannot express
                    // must not cost the turn: the turn goes on without the tools that fail alone.
                    let compiles = |tool: &ToolSpec| {
                        let alone = tool_turn_grammar(std::slice::from_ref(tool), &open, true, None);
                        factory.create_parser(TopLevelGrammar::from_lark(alone)).is_ok()
                    };
                    let (usable, dropped): (Vec<ToolSpec>, Vec<ToolSpec>) = tools.iter().cloned().partition(compiles);
                    let names: Vec<&str> = dropped.iter().map(|t| t.name.as_str()).collect();
                    tracing::warn!(
                        "tools whose schemas do not compile to a grammar were left out of a turn: {names:?} ({err})"
                    );
                    let lark = tool_turn_grammar(&usable, &open, required, forced);
                    match factory.create_parser(TopLevelGrammar::from_lark(lark)) {
                        Ok(parser) => Some(Matcher::new(Ok(parser))),
                        Err(err) => {
                            return Err((job, format!("the tools' schemas do not compile to a grammar: {err}")));
                        }
                    }
                }
            },
            _ => None,
        };

        let task = request.task;
        let mut session = match self.sessions.remove(&task) {
            Some(session) => session,
            // A new task: start from a snapshot of a system prompt it shares (a sub-agent with
            // its parent's configuration, siblings of one expert), if one is kept.
            None => self.prefix_session(&ids),
        };
        let common = session.ids.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        // The cache can only be extended, not cut: reuse it when it is a prefix of the new
        // prompt (and leaves at least one token to feed), start over otherwise.
        if common < session.ids.len() || common == ids.len() {
            session.weights.clear_kv_cache();
            session.ids.clear();
        }
        let reused = session.ids.len();
        // Where the system message ends (at the second `<|im_start|>`): worth a snapshot if the
        // prompt is fed from before it.
        let snapshot_at =
            ids.iter().enumerate().filter(|(_, id)| Some(**id) == self.im_start).nth(1).map(|(i, _)| i).filter(|&at| {
                at > reused
                    && at >= MIN_PREFIX
                    && !self.prefixes.iter().any(|p| p.ids.len() == at && p.ids[..] == ids[..at])
            });
        let sampler = match (sampling.temperature, sampling.top_p) {
            (Some(t), _) if t <= 0.0 => Sampler::ArgMax,
            (None, _) => Sampler::ArgMax,
            (Some(t), Some(p)) if p < 1.0 => Sampler::TopP { p: f64::from(p), temperature: f64::from(t) },
            (Some(t), _) => Sampler::All { temperature: f64::from(t) },
        };
        self.clock += 1;
        Ok(Generation {
            turn_id: format!(
                "call_{}",
                request.messages.iter().filter(|m| m.role == crate::protocol::Role::Assistant).count() + 1
            ),
            pending: ids[reused..].to_vec(),
            snapshot_at,
            prompt_snapshot: None,
            prompt_tokens: ids.len(),
            task,
            session,
            logits: None,
            generated: Vec::new(),
            streamed: 0,
            matcher,
            sampler: LogitsProcessor::from_sampling(sampling.seed.unwrap_or(0), sampler),
            max_new,
            started: Instant::now(),
            job,
        })
    }

    fn step(&mut self, g: &mut Generation) -> Result<Step, String> {
        if !g.pending.is_empty() {
            let mut take = g.pending.len().min(PREFILL_CHUNK);
            if let Some(at) = g.snapshot_at {
                take = take.min(at.saturating_sub(g.session.ids.len()).max(2));
            }
            // candle computes a one-token pass with another kernel than a longer one, with
            // slightly different numbers: a prompt is never read in a one-token piece, so the
            // same prompt gives the same logits however it is split (or cached).
            if g.pending.len() - take == 1 {
                if take > 2 {
                    take -= 1;
                } else {
                    take += 1;
                }
            }
            let chunk: Vec<u32> = g.pending.drain(..take).collect();
            g.logits = Some(self.forward(&mut g.session, &chunk)?);
            if g.snapshot_at == Some(g.session.ids.len()) {
                g.snapshot_at = None;
                self.keep_prefix(&g.session);
            }
            if g.pending.is_empty() {
                // What the task's next turn may build on: the prompt as read, not the tokens
                // generated one at a time after it (those are read again, as prompt).
                g.prompt_snapshot =
                    Some(Session { weights: g.session.weights.clone(), ids: g.session.ids.clone(), last_used: 0 });
            }
            return Ok(Step::Continue);
        }
        let Some(logits) = g.logits.take() else { return Err("no logits to sample from".into()) };
        let token = self.sample(g, &logits)?;
        if token == self.tokenizer.eos || token == END_OF_TEXT {
            return Ok(Step::Done);
        }
        g.generated.push(token);
        if let Some(matcher) = &mut g.matcher {
            matcher.consume_token(token).map_err(|e| format!("grammar: {e}"))?;
        }
        self.stream_text(g);
        let grammar_done = g.matcher.as_ref().is_some_and(Matcher::is_stopped);
        if grammar_done {
            return Ok(Step::Done);
        }
        if g.generated.len() >= g.max_new {
            // A tool call cut off by `max_tokens` would not parse: let it finish, within a
            // bound (strings and call counts are bounded by the grammar, so calls are short).
            let in_call = g.matcher.is_some()
                && self.tokenizer.decode(&g.generated).is_ok_and(|t| {
                    let t = t.trim_start();
                    t.starts_with(TOOL_CALL_OPEN) || (!t.is_empty() && TOOL_CALL_OPEN.starts_with(t))
                });
            if !in_call {
                return Ok(Step::Done);
            }
            let limit = (g.max_new + CALL_OVERRUN).min(self.context_length.saturating_sub(g.prompt_tokens));
            if g.generated.len() >= limit {
                return Err(format!("the model did not finish its tool call within {limit} tokens"));
            }
        }
        g.logits = Some(self.forward(&mut g.session, &[token])?);
        Ok(Step::Continue)
    }

    /// A session for a new task: a copy of the longest kept system-message prefix of `ids`,
    /// or an empty one.
    fn prefix_session(&mut self, ids: &[u32]) -> Session {
        self.clock += 1;
        let clock = self.clock;
        let best = self
            .prefixes
            .iter_mut()
            .filter(|p| p.ids.len() < ids.len() && ids.starts_with(&p.ids))
            .max_by_key(|p| p.ids.len());
        match best {
            Some(prefix) => {
                prefix.last_used = clock;
                // Cloning shares the cached keys and values; extending the copy makes new
                // tensors, so the kept prefix stays as it is.
                Session { weights: prefix.weights.clone(), ids: prefix.ids.clone(), last_used: 0 }
            }
            None => Session { weights: self.base.clone(), ids: Vec::new(), last_used: 0 },
        }
    }

    fn keep_prefix(&mut self, session: &Session) {
        self.clock += 1;
        if self.prefixes.len() >= MAX_PREFIXES {
            if let Some(oldest) = self.prefixes.iter().enumerate().min_by_key(|(_, p)| p.last_used).map(|(i, _)| i) {
                self.prefixes.swap_remove(oldest);
            }
        }
        self.prefixes.push(Session {
            weights: session.weights.clone(),
            ids: session.ids.clone(),
            last_used: self.clock,
        });
        self.evict();
    }

    fn forward(&self, session: &mut Session, ids: &[u32]) -> Result<Tensor, String> {
        let input = Tensor::new(ids, &Device::Cpu).and_then(|t| t.unsqueeze(0)).map_err(|e| e.to_string())?;
        let logits = session.weights.forward(&input, session.ids.len()).map_err(|e| format!("forward pass: {e}"))?;
        session.ids.extend_from_slice(ids);
        logits.squeeze(0).map_err(|e| e.to_string())
    }

    fn sample(&self, g: &mut Generation, logits: &Tensor) -> Result<u32, String> {
        let recent = &g.generated[g.generated.len().saturating_sub(REPEAT_WINDOW)..];
        let penalized;
        let logits = if recent.is_empty() {
            logits
        } else {
            penalized = candle_transformers::utils::apply_repeat_penalty(logits, REPEAT_PENALTY, recent)
                .map_err(|e| format!("sampling: {e}"))?;
            &penalized
        };
        let Some(matcher) = &mut g.matcher else {
            return g.sampler.sample(logits).map_err(|e| format!("sampling: {e}"));
        };
        let mask = matcher.compute_mask().map_err(|e| format!("grammar: {e}"))?;
        let mut values: Vec<f32> = logits.to_vec1().map_err(|e| e.to_string())?;
        let mut allowed = 0usize;
        for (id, value) in values.iter_mut().enumerate() {
            if mask.is_allowed(id as u32) {
                allowed += 1;
            } else {
                *value = f32::NEG_INFINITY;
            }
        }
        if allowed == 0 {
            return Err("the grammar allows no token here".into());
        }
        let masked = Tensor::new(values, &Device::Cpu).map_err(|e| e.to_string())?;
        g.sampler.sample(&masked).map_err(|e| format!("sampling: {e}"))
    }

    /// Streams newly decoded text, holding it back while it could still be the start of a
    /// tool call (tool calls are sent whole at the end).
    fn stream_text(&self, g: &mut Generation) {
        let Ok(text) = self.tokenizer.decode(&g.generated) else { return };
        let start = text.trim_start();
        if g.matcher.is_some() && (start.starts_with(TOOL_CALL_OPEN) || TOOL_CALL_OPEN.starts_with(start)) {
            return;
        }
        // A character split across tokens decodes as U+FFFD until its last byte arrives.
        let complete = text.trim_end_matches('\u{FFFD}');
        if complete.len() > g.streamed && complete.is_char_boundary(g.streamed) {
            let delta = complete[g.streamed..].to_owned();
            g.streamed = complete.len();
            let _ = g.job.tx.blocking_send(Ok(ModelChunk::TextDelta(delta)));
        }
    }

    fn finish(&mut self, mut g: Generation) {
        let text = self.tokenizer.decode(&g.generated).unwrap_or_default();
        // Only a turn decoded under the tool grammar can hold calls: without tools offered, a
        // model imitating earlier calls in its history has written text, not a call.
        let reply = if g.matcher.is_some() { parse_reply(&text, &g.turn_id) } else { Reply::Text(text.clone()) };
        match reply {
            Reply::Calls(calls) => {
                for call in calls {
                    let _ = g.job.tx.blocking_send(Ok(ModelChunk::ToolCall(call)));
                }
            }
            Reply::Text(_) => {
                if text.len() > g.streamed && text.is_char_boundary(g.streamed) {
                    let rest = text[g.streamed..].to_owned();
                    g.streamed = text.len();
                    let _ = g.job.tx.blocking_send(Ok(ModelChunk::TextDelta(rest)));
                }
            }
        }
        let usage =
            Usage { input_tokens: g.prompt_tokens as u64, output_tokens: g.generated.len() as u64, model_calls: 1 };
        let _ = g.job.tx.blocking_send(Ok(ModelChunk::Usage(usage)));
        tracing::debug!(task = %g.task, tokens = g.generated.len(), elapsed = ?g.started.elapsed(), "generation done");
        self.retire(g);
    }

    /// Ends a generation: its stream closes; the cache of its prompt is kept for the task's
    /// next turn, within the memory bound.
    fn retire(&mut self, g: Generation) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.clock += 1;
        if let Some(mut snapshot) = g.prompt_snapshot {
            snapshot.last_used = self.clock;
            self.sessions.insert(g.task, snapshot);
        }
        self.evict();
    }

    /// Keeps the cached tokens of all sessions and prefixes under [`MAX_CACHED_TOKENS`],
    /// dropping the least recently used first.
    fn evict(&mut self) {
        loop {
            let cached: usize = self.sessions.values().chain(&self.prefixes).map(|s| s.ids.len()).sum();
            if cached <= MAX_CACHED_TOKENS && self.sessions.len() <= MAX_SESSIONS {
                return;
            }
            let oldest_session =
                self.sessions.iter().min_by_key(|(_, s)| s.last_used).map(|(id, s)| (*id, s.last_used));
            let oldest_prefix =
                self.prefixes.iter().enumerate().min_by_key(|(_, p)| p.last_used).map(|(i, p)| (i, p.last_used));
            match (oldest_session, oldest_prefix) {
                (Some((id, a)), Some((_, b))) if a <= b => {
                    self.sessions.remove(&id);
                }
                (_, Some((i, _))) => {
                    self.prefixes.swap_remove(i);
                }
                (Some((id, _)), None) => {
                    self.sessions.remove(&id);
                }
                (None, None) => return,
            }
        }
    }
}

/// The request's sampling values, falling back to the alias's.
fn merge(request: &Sampling, defaults: &Sampling) -> Sampling {
    Sampling {
        temperature: request.temperature.or(defaults.temperature),
        top_p: request.top_p.or(defaults.top_p),
        max_tokens: request.max_tokens.or(defaults.max_tokens),
        seed: request.seed.or(defaults.seed),
    }
}
