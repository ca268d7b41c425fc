//! The `scripted` provider: replays a deterministic script of replies. A test tool and a way to
//! make reproducible demos; never a default.
//!
//! A script is a TOML file of `[[conversation]]`s. Each request is matched to the first
//! conversation whose `agent` and `task_contains` fit, and answered with its turn number *n*,
//! where *n* counts the assistant messages already in the request: the provider is a pure
//! function of the conversation, like a real model, so it needs no state and no knowledge of the
//! runtime. Text and string arguments may use placeholders filled from the conversation:
//! `{{task}}` (the first user message), `{{uri.N}}` (the N-th subtask URI that appeared in a
//! `call_agent` / `call_slm` result, or an MCP tool's that the server runs as a task), `{{result.N}}` and `{{status.N}}` (the latest result and
//! status of that subtask seen in a `get_task_status` / `cancel_task` result).
//!
//! ```toml
//! [[conversation]]
//! agent = "coordinator"          # optional: the expert's name (`slm` for call_slm)
//! task_contains = "smoke"        # optional: a substring of the task
//! repeat = false                 # after the last turn: false = error, true = start over
//!
//! [[conversation.turn]]
//! delay_ms = 20                  # think time before the reply streams
//! text = "Delegating."
//! [[conversation.turn.call]]
//! tool = "call_agent"
//! arguments = { agent = "researcher", task = "Find three facts about otters" }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Model, ModelChunk, ModelError, ModelInfo, ModelRequest, ModelStream, estimate_tokens};
use crate::protocol::{ChatMessage, Role, ToolCall, Usage, shorten};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    #[serde(default)]
    conversation: Vec<Conversation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Conversation {
    agent: Option<String>,
    task_contains: Option<String>,
    #[serde(default)]
    repeat: bool,
    #[serde(default)]
    turn: Vec<Turn>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Turn {
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    text: String,
    #[serde(default)]
    call: Vec<ScriptedCall>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct ScriptedCall {
    tool: String,
    #[serde(default)]
    arguments: toml::Table,
}

/// Why a script could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read script {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// A loaded script.
pub struct ScriptedModel {
    path: PathBuf,
    digest: String,
    conversations: Vec<Conversation>,
}

impl ScriptedModel {
    pub fn load(path: &Path) -> Result<ScriptedModel, ScriptError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScriptError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Parses a script's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<ScriptedModel, ScriptError> {
        let file: ScriptFile = toml::from_str(text).map_err(|err| ScriptError::Parse {
            path: path.to_owned(),
            message: err.to_string().trim_end().to_owned(),
        })?;
        Ok(ScriptedModel {
            path: path.to_owned(),
            digest: format!("fnv1a64:{:016x}", fnv1a64(text.as_bytes())),
            conversations: file.conversation,
        })
    }

    /// Decides the reply to `request`. Pure.
    fn reply(&self, request: &ModelRequest) -> Result<(Turn, Vec<ToolCall>, String), ModelError> {
        let task = first_user_message(&request.messages).unwrap_or_default();
        let (index, conversation) = self
            .conversations
            .iter()
            .enumerate()
            .find(|(_, c)| {
                c.agent.as_deref().is_none_or(|a| a == request.agent)
                    && c.task_contains.as_deref().is_none_or(|t| task.contains(t))
            })
            .ok_or_else(|| {
                ModelError::Script(format!(
                    "no [[conversation]] in {} matches agent `{}` with task {:?}",
                    self.path.display(),
                    request.agent,
                    shorten(task, 80)
                ))
            })?;
        if conversation.turn.is_empty() {
            return Err(ModelError::Script(format!(
                "conversation {} in {} has no [[conversation.turn]]",
                index + 1,
                self.path.display()
            )));
        }
        let asked = request.messages.iter().filter(|m| m.role == Role::Assistant).count();
        let turn_index = if asked < conversation.turn.len() {
            asked
        } else if conversation.repeat {
            asked % conversation.turn.len()
        } else {
            return Err(ModelError::Script(format!(
                "conversation {} in {} (agent `{}`) has {} turns; turn {} was asked for",
                index + 1,
                self.path.display(),
                request.agent,
                conversation.turn.len(),
                asked + 1
            )));
        };
        let turn = conversation.turn[turn_index].clone();
        let facts = ConversationFacts::read(&request.messages);
        let text = facts.fill(&turn.text)?;
        let mut calls = Vec::with_capacity(turn.call.len());
        for (i, call) in turn.call.iter().enumerate() {
            let arguments = serde_json::to_value(&call.arguments)
                .map_err(|err| ModelError::Script(format!("arguments of `{}`: {err}", call.tool)))?;
            calls.push(ToolCall {
                id: format!("call_{}_{}", asked + 1, i + 1),
                name: call.tool.clone(),
                arguments: facts.fill_value(arguments)?,
            });
        }
        Ok((turn, calls, text))
    }
}

impl Model for ScriptedModel {
    fn info(&self) -> ModelInfo {
        ModelInfo { provider: "scripted", model: self.path.display().to_string(), digest: Some(self.digest.clone()) }
    }

    fn stream(&self, request: ModelRequest, cancel: CancellationToken) -> ModelStream {
        let (tx, stream) = ModelStream::channel();
        let reply = self.reply(&request);
        let input_tokens: u64 = request.messages.iter().map(|m| estimate_tokens(&m.content)).sum();
        tokio::spawn(async move {
            let (turn, calls, text) = match reply {
                Ok(reply) => reply,
                Err(err) => {
                    // The receiver may be gone if the caller was cancelled: nothing to tell.
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            };
            if turn.delay_ms > 0 {
                tokio::select! {
                    () = cancel.cancelled() => {
                        let _ = tx.send(Err(ModelError::Cancelled)).await;
                        return;
                    }
                    () = tokio::time::sleep(Duration::from_millis(turn.delay_ms)) => {}
                }
            }
            let mut output_tokens = 0;
            for piece in words(&text) {
                if cancel.is_cancelled() {
                    let _ = tx.send(Err(ModelError::Cancelled)).await;
                    return;
                }
                output_tokens += estimate_tokens(piece);
                if tx.send(Ok(ModelChunk::TextDelta(piece.to_owned()))).await.is_err() {
                    return; // the caller stopped listening
                }
            }
            for call in calls {
                output_tokens += estimate_tokens(&call.arguments.to_string()) + 1;
                if tx.send(Ok(ModelChunk::ToolCall(call))).await.is_err() {
                    return;
                }
            }
            let usage = Usage { input_tokens, output_tokens, model_calls: 1 };
            let _ = tx.send(Ok(ModelChunk::Usage(usage))).await;
        });
        stream
    }
}

/// What a scripted reply may refer to, read off the conversation so far.
struct ConversationFacts<'a> {
    task: &'a str,
    /// Subtask URIs in the order they were handed out.
    uris: Vec<String>,
    /// Latest `(uri, status, result)` seen per URI.
    seen: Vec<(String, String, Option<String>)>,
}

impl<'a> ConversationFacts<'a> {
    fn read(messages: &'a [ChatMessage]) -> Self {
        let mut facts = ConversationFacts {
            task: first_user_message(messages).unwrap_or_default(),
            uris: Vec::new(),
            seen: Vec::new(),
        };
        for message in messages.iter().filter(|m| m.role == Role::Tool && !m.is_error) {
            let Ok(value) = serde_json::from_str::<Value>(&message.content) else { continue };
            let Some(uri) = value.get("uri").and_then(Value::as_str) else { continue };
            match message.tool_name.as_deref() {
                Some("get_task_status" | "cancel_task") => {
                    let status = value.get("status").and_then(Value::as_str).unwrap_or("").to_owned();
                    let result = value.get("result").and_then(Value::as_str).map(str::to_owned);
                    facts.seen.retain(|(u, _, _)| u != uri);
                    facts.seen.push((uri.to_owned(), status, result));
                }
                // `call_agent`, `call_slm`, or an MCP tool the server runs as a task: a handle.
                Some(_) => facts.uris.push(uri.to_owned()),
                None => {}
            }
        }
        facts
    }

    fn fill(&self, template: &str) -> Result<String, ModelError> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| ModelError::Script(format!("unclosed `{{{{` in {:?}", shorten(template, 60))))?;
            out.push_str(&self.lookup(after[..end].trim())?);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn fill_value(&self, value: Value) -> Result<Value, ModelError> {
        Ok(match value {
            Value::String(s) => Value::String(self.fill(&s)?),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.fill_value(v)).collect::<Result<_, _>>()?)
            }
            Value::Object(map) => Value::Object(
                map.into_iter().map(|(k, v)| Ok((k, self.fill_value(v)?))).collect::<Result<_, ModelError>>()?,
            ),
            other => other,
        })
    }

    fn lookup(&self, key: &str) -> Result<String, ModelError> {
        if key == "task" {
            return Ok(self.task.to_owned());
        }
        let (field, n) = key.split_once('.').ok_or_else(|| unknown_placeholder(key))?;
        let n: usize = n.parse().map_err(|_| unknown_placeholder(key))?;
        let uri = n.checked_sub(1).and_then(|i| self.uris.get(i)).ok_or_else(|| {
            ModelError::Script(format!(
                "`{{{{{key}}}}}` refers to subtask {n}, but the conversation has handed out {} subtask URIs",
                self.uris.len()
            ))
        })?;
        let seen = self.seen.iter().find(|(u, _, _)| u == uri);
        match field {
            "uri" => Ok(uri.clone()),
            "status" => Ok(seen.map_or("unknown", |(_, s, _)| s.as_str()).to_owned()),
            "result" => Ok(seen.and_then(|(_, _, r)| r.clone()).unwrap_or_else(|| "(no result yet)".to_owned())),
            _ => Err(unknown_placeholder(key)),
        }
    }
}

fn unknown_placeholder(key: &str) -> ModelError {
    ModelError::Script(format!("unknown placeholder `{{{{{key}}}}}` (known: task, uri.N, result.N, status.N)"))
}

fn first_user_message(messages: &[ChatMessage]) -> Option<&str> {
    messages.iter().find(|m| m.role == Role::User).map(|m| m.content.as_str())
}

/// Splits text into words that keep their trailing whitespace, so deltas concatenate back to
/// the text exactly.
fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let space_end = rest[word_end..].find(|c: char| !c.is_whitespace()).map_or(rest.len(), |i| word_end + i);
        let (piece, tail) = rest.split_at(space_end);
        rest = tail;
        Some(piece)
    })
}

/// FNV-1a: a stable digest of the script for the run's config snapshot (not a security hash).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskId;
    use pretty_assertions::assert_eq;

    const SCRIPT: &str = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
text = "Starting on {{task}}."
[[conversation.turn.call]]
tool = "call_agent"
arguments = { task = "dig" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 5 }
[[conversation.turn]]
text = "Found: {{result.1}} ({{status.1}})"

[[conversation]]
task_contains = "loop"
repeat = true
[[conversation.turn]]
text = "again"
"#;

    fn request(agent: &str, messages: Vec<ChatMessage>) -> ModelRequest {
        ModelRequest {
            task: TaskId::from_code(1),
            agent: agent.into(),
            messages,
            tools: Vec::new(),
            tool_choice: Default::default(),
            forced_tool: None,
            sampling: Default::default(),
        }
    }

    fn model() -> ScriptedModel {
        ScriptedModel::parse(Path::new("script.toml"), SCRIPT).unwrap()
    }

    #[test]
    fn turns_follow_the_conversation_and_fill_placeholders() {
        let model = model();
        let call = |id: &str, name: &str| ToolCall { id: id.into(), name: name.into(), arguments: Value::Null };
        let mut messages = vec![ChatMessage::system("sys"), ChatMessage::user("the hole")];
        let (_, calls, text) = model.reply(&request("boss", messages.clone())).unwrap();
        assert_eq!(text, "Starting on the hole.");
        assert_eq!(calls[0].arguments, serde_json::json!({"task": "dig"}));

        messages.push(ChatMessage::assistant(text, calls));
        messages.push(ChatMessage::tool_result(
            &call("call_1_1", "call_agent"),
            r#"{"uri":"subtask://abcdef","status":"working"}"#,
            false,
        ));
        let (_, calls, _) = model.reply(&request("boss", messages.clone())).unwrap();
        assert_eq!(calls[0].arguments, serde_json::json!({"uri": "subtask://abcdef", "wait_seconds": 5}));

        messages.push(ChatMessage::assistant("", calls));
        messages.push(ChatMessage::tool_result(
            &call("call_2_1", "get_task_status"),
            r#"{"uri":"subtask://abcdef","status":"completed","result":"a bone"}"#,
            false,
        ));
        let (_, calls, text) = model.reply(&request("boss", messages.clone())).unwrap();
        assert!(calls.is_empty());
        assert_eq!(text, "Found: a bone (completed)");

        messages.push(ChatMessage::assistant(text, calls));
        let err = model.reply(&request("boss", messages)).err().unwrap();
        assert_eq!(
            err.to_string(),
            "scripted model: conversation 1 in script.toml (agent `boss`) has 3 turns; turn 4 was asked for"
        );
    }

    #[test]
    fn repeat_cycles_and_unmatched_requests_say_why() {
        let model = model();
        let mut messages = vec![ChatMessage::user("loop forever")];
        for _ in 0..3 {
            let (_, _, text) = model.reply(&request("anyone", messages.clone())).unwrap();
            assert_eq!(text, "again");
            messages.push(ChatMessage::assistant(text, Vec::new()));
        }
        let err = model.reply(&request("nobody", vec![ChatMessage::user("hi")])).err().unwrap();
        assert_eq!(
            err.to_string(),
            "scripted model: no [[conversation]] in script.toml matches agent `nobody` with task \"hi\""
        );
    }

    #[test]
    fn a_placeholder_for_a_uri_not_yet_seen_is_an_error() {
        let model = ScriptedModel::parse(
            Path::new("s.toml"),
            "[[conversation]]\n[[conversation.turn]]\ntext = \"{{result.2}}\"\n",
        )
        .unwrap();
        let err = model.reply(&request("a", vec![ChatMessage::user("x")])).err().unwrap();
        assert!(err.to_string().contains("refers to subtask 2, but the conversation has handed out 0"), "{err}");
    }

    #[test]
    fn a_bad_script_names_the_line() {
        let err =
            ScriptedModel::parse(Path::new("s.toml"), "[[conversation]]\nagnet = \"x\"\n").err().unwrap().to_string();
        assert!(err.starts_with("s.toml: "), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("agnet"), "{err}");
    }

    #[test]
    fn words_concatenate_back_to_the_text() {
        let text = "Hello,  world\nand more ";
        assert_eq!(words(text).collect::<String>(), text);
        assert_eq!(words(text).count(), 4);
    }
}
