//! Models: the [`Model`] trait every provider implements, and the table that maps a run's
//! model aliases to providers.
//!
//! A provider turns a [`ModelRequest`] (messages, tool schemas, sampling) into a stream of
//! [`ModelChunk`]s: text deltas, whole tool calls (a provider assembles argument fragments
//! itself), usage, and notices such as "waiting for the model". Streams are channels so that a
//! provider may produce them from a tokio task (HTTP) or from a blocking thread (in-process
//! inference) alike.
//!
//! Invariant: the runtime knows providers only through this trait; nothing outside `model/`
//! names a concrete provider except [`ModelTable::build`].

pub mod files;
pub mod local;
pub mod remote;
pub mod scripted;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{ModelSpec, ProviderKind};
use crate::protocol::{ChatMessage, TaskId, ToolCall, ToolChoice, ToolSpec, Usage};

/// Sampling settings of one request. `None` leaves the provider's default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
}

/// One chat completion to stream.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRequest {
    /// The task asking: providers may key caches by it; the scripted provider matches on it.
    pub task: TaskId,
    /// The expert's name (`slm` for `call_slm`).
    pub agent: String,
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call this turn; empty means it must answer in text.
    pub tools: Vec<ToolSpec>,
    /// With tools offered: whether the model must call one.
    pub tool_choice: ToolChoice,
    /// With tools offered: the one tool this turn must call (an expert's `tool_plan`).
    pub forced_tool: Option<String>,
    pub sampling: Sampling,
}

/// A piece of a streamed reply.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelChunk {
    /// More assistant text.
    TextDelta(String),
    /// A complete tool call with parsed arguments.
    ToolCall(ToolCall),
    /// Tokens spent by this request (sent once, at the end).
    Usage(Usage),
    /// Something the user should see while waiting (queued for the model, retrying, ...).
    Notice(String),
}

/// Why a model call failed. Each is shown to the user and recorded; none crashes a run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("the request was cancelled")]
    Cancelled,
    #[error("model alias `{alias}` uses provider `{provider}`, which this build of troupe cannot run yet")]
    Unavailable { alias: String, provider: &'static str },
    #[error("no model alias `{alias}` (known aliases: {known}); add [models.{alias}] to troupe.toml")]
    UnknownAlias { alias: String, known: String },
    #[error("scripted model: {0}")]
    Script(String),
    #[error("{0}")]
    Provider(String),
}

/// The receiving end of a model's reply.
pub struct ModelStream {
    rx: mpsc::Receiver<Result<ModelChunk, ModelError>>,
}

impl ModelStream {
    /// A stream and the sender a provider feeds it with. The bound keeps a fast producer from
    /// running far ahead of the runtime.
    pub fn channel() -> (mpsc::Sender<Result<ModelChunk, ModelError>>, ModelStream) {
        let (tx, rx) = mpsc::channel(64);
        (tx, ModelStream { rx })
    }

    /// The next chunk; `None` when the reply is complete.
    pub async fn next(&mut self) -> Option<Result<ModelChunk, ModelError>> {
        self.rx.recv().await
    }
}

/// What a provider says about itself, for `task_created` events and the config snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub provider: &'static str,
    /// The provider's model name, or the script's path for `scripted`.
    pub model: String,
    /// A content digest of the weights or script, when known, so a run can be repeated.
    pub digest: Option<String>,
}

/// A chat model. Implementations must be cheap to call concurrently from many agents.
pub trait Model: Send + Sync {
    fn info(&self) -> ModelInfo;

    /// Starts streaming a reply. Never blocks: work happens on a task or thread the provider
    /// owns. When `cancel` fires the provider stops promptly and may end the stream with
    /// [`ModelError::Cancelled`].
    fn stream(&self, request: ModelRequest, cancel: CancellationToken) -> ModelStream;
}

/// The models of one run, by alias.
/// A remote alias's settings: its key read from the environment variable it names (a missing
/// variable is caught before a run starts, by `launch`), `${NAME}` in header values expanded.
fn remote_settings(spec: &ModelSpec) -> remote::RemoteSettings {
    let mut settings = remote::RemoteSettings::new(spec.model.clone().unwrap_or_default());
    settings.base_url = spec.base_url.clone();
    settings.api_key = spec.api_key_env.as_ref().and_then(|name| std::env::var(name).ok());
    settings.extra_headers =
        spec.headers.iter().map(|(name, value)| (name.clone(), expand_env(value, |n| std::env::var(n).ok()))).collect();
    settings.defaults =
        Sampling { temperature: spec.temperature, top_p: spec.top_p, max_tokens: spec.max_tokens, seed: spec.seed };
    if let Some(secs) = spec.timeout_seconds {
        settings.timeouts.first_byte = std::time::Duration::from_secs(secs);
        settings.timeouts.between_chunks = std::time::Duration::from_secs(secs);
    }
    if let Some(secs) = spec.connect_timeout_seconds {
        settings.timeouts.connect = std::time::Duration::from_secs(secs);
    }
    if let Some(retries) = spec.max_retries {
        settings.max_retries = retries;
    }
    settings
}

/// `text` with every `${NAME}` replaced by `lookup(NAME)` (empty when unset).
pub fn expand_env(text: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(len) => {
                out.push_str(&lookup(&rest[start + 2..start + 2 + len]).unwrap_or_default());
                rest = &rest[start + 3 + len..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The environment variables `${NAME}` in `text` names.
pub fn env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let _ = expand_env(text, |name| {
        names.push(name.to_owned());
        None
    });
    names
}

/// Embedded models kept loaded between the runs of one process (the workbench): a run whose
/// model is loaded already reuses it, and the caches it kept, instead of loading it again.
/// A fresh pool per run (what [`ModelTable::build`] uses) loads the model each time.
#[derive(Clone, Default)]
pub struct EnginePool {
    engines: Arc<std::sync::Mutex<BTreeMap<std::path::PathBuf, Arc<local::engine::EngineHandle>>>>,
}

impl EnginePool {
    fn engine(&self, gguf: &std::path::Path) -> Result<Arc<local::engine::EngineHandle>, std::io::Error> {
        let mut engines = self.engines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(handle) = engines.get(gguf) {
            return Ok(handle.clone());
        }
        let handle = Arc::new(local::engine::EngineHandle::spawn(gguf.to_path_buf())?);
        engines.insert(gguf.to_path_buf(), handle.clone());
        Ok(handle)
    }
}

#[derive(Clone, Default)]
pub struct ModelTable {
    models: BTreeMap<String, Arc<dyn Model>>,
    /// Aliases whose provider this build cannot run, with the provider's name.
    unavailable: BTreeMap<String, &'static str>,
}

impl ModelTable {
    /// Builds a provider for each alias. Aliases whose provider this build cannot run (or, for
    /// `local`, whose model file was not provided) are left out; [`ModelTable::get`] then
    /// reports them as unavailable. Every `local` alias shares one loaded model.
    pub fn build(
        specs: &BTreeMap<String, ModelSpec>,
        local: Option<&LocalFiles>,
    ) -> Result<ModelTable, ModelBuildError> {
        ModelTable::build_in(specs, local, &EnginePool::default())
    }

    /// [`ModelTable::build`], taking the embedded model from `pool` when it is loaded there
    /// already (and leaving it there for the next run).
    pub fn build_in(
        specs: &BTreeMap<String, ModelSpec>,
        local: Option<&LocalFiles>,
        pool: &EnginePool,
    ) -> Result<ModelTable, ModelBuildError> {
        let mut models: BTreeMap<String, Arc<dyn Model>> = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        let mut engine: Option<Arc<local::engine::EngineHandle>> = None;
        for (alias, spec) in specs {
            match spec.provider {
                ProviderKind::Scripted => {
                    let script = spec.script.as_deref().ok_or_else(|| ModelBuildError {
                        alias: alias.clone(),
                        message: "provider `scripted` needs `script = \"<file>\"`".into(),
                    })?;
                    let model = scripted::ScriptedModel::load(script)
                        .map_err(|err| ModelBuildError { alias: alias.clone(), message: err.to_string() })?;
                    models.insert(alias.clone(), Arc::new(model));
                }
                ProviderKind::Local => {
                    let Some(files) = local else {
                        unavailable.insert(alias.clone(), spec.provider.as_str());
                        continue;
                    };
                    let handle = match &engine {
                        Some(handle) => handle.clone(),
                        None => {
                            let handle = pool.engine(&files.gguf).map_err(|err| ModelBuildError {
                                alias: alias.clone(),
                                message: format!("cannot start the model thread: {err}"),
                            })?;
                            engine = Some(handle.clone());
                            handle
                        }
                    };
                    let defaults = Sampling {
                        temperature: spec.temperature,
                        top_p: None,
                        max_tokens: spec.max_tokens,
                        seed: None,
                    };
                    let name = spec.model.clone().unwrap_or_else(|| "smollm2-135m-instruct".to_owned());
                    models.insert(
                        alias.clone(),
                        Arc::new(local::LocalModel::new(handle, name, Some(files.digest.clone()), defaults)),
                    );
                }
                ProviderKind::Openai | ProviderKind::Anthropic => {
                    let dialect: Arc<dyn remote::wire::Dialect> = match spec.provider {
                        ProviderKind::Anthropic => Arc::new(remote::AnthropicDialect),
                        _ => Arc::new(remote::OpenAiDialect),
                    };
                    let model = remote::RemoteModel::new(dialect, remote_settings(spec))
                        .map_err(|err| ModelBuildError { alias: alias.clone(), message: err.to_string() })?;
                    models.insert(alias.clone(), Arc::new(model));
                }
            }
        }
        Ok(ModelTable { models, unavailable })
    }

    /// A table from ready-made models (tests, benches).
    pub fn from_models(models: impl IntoIterator<Item = (String, Arc<dyn Model>)>) -> Self {
        ModelTable { models: models.into_iter().collect(), unavailable: BTreeMap::new() }
    }

    /// The aliases that can run, sorted.
    pub fn runnable(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    /// Whether `alias` is defined, runnable or not.
    pub fn contains(&self, alias: &str) -> bool {
        self.models.contains_key(alias) || self.unavailable.contains_key(alias)
    }

    pub fn get(&self, alias: &str) -> Result<&Arc<dyn Model>, ModelError> {
        if let Some(model) = self.models.get(alias) {
            return Ok(model);
        }
        match self.unavailable.get(alias) {
            Some(provider) => Err(ModelError::Unavailable { alias: alias.to_owned(), provider }),
            None => Err(ModelError::UnknownAlias {
                alias: alias.to_owned(),
                known: self.aliases().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Every defined alias, runnable or not, sorted.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        let mut all: Vec<&str> = self.models.keys().chain(self.unavailable.keys()).map(String::as_str).collect();
        all.sort_unstable();
        all.into_iter()
    }
}

/// The embedded model's file, made ready by the caller (fetched, converted).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalFiles {
    /// The GGUF file the engine loads.
    pub gguf: std::path::PathBuf,
    /// The digest of the file as distributed, recorded in each run's `config/run.json`.
    pub digest: String,
}

/// A model alias that could not be set up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model alias `{alias}`: {message}")]
pub struct ModelBuildError {
    pub alias: String,
    pub message: String,
}

/// A rough token count for providers that cannot count (the scripted one): about four
/// characters a token, as for English text with common tokenizers.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn header_values_name_environment_variables() {
        let lookup = |name: &str| (name == "TOKEN").then(|| "s3cret".to_owned());
        let cases = [
            ("Bearer ${TOKEN}", "Bearer s3cret"),
            ("${TOKEN}-${TOKEN}", "s3cret-s3cret"),
            ("x ${UNSET} y", "x  y"),
            ("no variables", "no variables"),
            ("open ${TOKEN", "open ${TOKEN"),
        ];
        for (text, want) in cases {
            assert_eq!(expand_env(text, lookup), want, "{text}");
        }
        assert_eq!(env_names("a ${ONE} b ${TWO}"), vec!["ONE", "TWO"]);
    }
}
