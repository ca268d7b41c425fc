//! Anthropic's Messages API (`POST /v1/messages`, streamed): how a [`ModelRequest`] becomes its
//! JSON body, and how its server-sent events become [`ModelChunk`]s.
//!
//! Owns the translation of troupe's chat vocabulary to Anthropic's: system messages go to the
//! top-level `system` field, tool results become `tool_result` blocks of a *user* message, and
//! messages of one role are merged since the API requires user and assistant turns to
//! alternate. The decoder follows the documented event types (`message_start`,
//! `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`, `ping`, `error`)
//! and ignores any other, as Anthropic asks clients to do with event types it adds later.
//!
//! Invariant: pure, no I/O — everything here is a function of its arguments, so the format is
//! tested with recorded events alone.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::wire::{Dialect, StreamDecoder};
use crate::model::{ModelChunk, ModelRequest, Sampling, estimate_tokens};
use crate::protocol::{ChatMessage, Role, ToolCall, ToolChoice, ToolSpec, Usage, shorten};

/// Where requests go when the alias sets no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version troupe's format follows; Anthropic requires the header on every request.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when neither the request nor the alias sets it: the API has no default.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The Messages API's request format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnthropicDialect;

impl Dialect for AnthropicDialect {
    fn provider(&self) -> &'static str {
        "anthropic"
    }

    fn url(&self, base_url: Option<&str>) -> String {
        let base = base_url.map(str::trim).filter(|base| !base.is_empty()).unwrap_or(DEFAULT_BASE_URL);
        let base = base.trim_end_matches('/');
        // Users copy either the host or the versioned root (`.../v1`, as the SDKs print it), and
        // sometimes the whole endpoint: all three name the same endpoint.
        let base = base.strip_suffix("/v1/messages").unwrap_or(base);
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/messages")
    }

    fn headers(&self, api_key: Option<&str>) -> Vec<(String, String)> {
        let mut headers = Vec::with_capacity(2);
        // A key read from a file or a shell often carries a trailing newline, which the server
        // would reject as a different key.
        if let Some(key) = api_key.map(str::trim).filter(|key| !key.is_empty()) {
            headers.push(("x-api-key".to_owned(), key.to_owned()));
        }
        headers.push(("anthropic-version".to_owned(), API_VERSION.to_owned()));
        headers
    }

    fn body(&self, model: &str, request: &ModelRequest, defaults: &Sampling) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        let max_tokens = request.sampling.max_tokens.or(defaults.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
        body.insert("max_tokens".into(), json!(max_tokens));

        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|message| message.role == Role::System && !message.content.trim().is_empty())
            .map(|message| message.content.as_str())
            .collect();
        if !system.is_empty() {
            body.insert("system".into(), json!(system.join("\n\n")));
        }
        body.insert("messages".into(), Value::Array(messages(&request.messages)));

        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(tool_definition).collect();
            body.insert("tools".into(), Value::Array(tools));
            let choice = match (&request.forced_tool, request.tool_choice) {
                (Some(name), _) => json!({"type": "tool", "name": name}),
                (None, ToolChoice::Required) => json!({"type": "any"}),
                (None, ToolChoice::Auto) => json!({"type": "auto"}),
            };
            body.insert("tool_choice".into(), choice);
        }

        body.insert("stream".into(), json!(true));
        // Anthropic has no `seed`: a seed set for the alias is left out rather than refused.
        let temperature = request.sampling.temperature.or(defaults.temperature);
        if let Some(temperature) = temperature {
            body.insert("temperature".into(), decimal(temperature));
        }
        // Recent models (Sonnet 4.5, Opus 4.1 and later) refuse `temperature` and `top_p`
        // together, and Anthropic advises setting one only: `temperature` wins when both are set.
        if let (Some(top_p), None) = (request.sampling.top_p.or(defaults.top_p), temperature) {
            body.insert("top_p".into(), decimal(top_p));
        }
        Value::Object(body)
    }

    fn decoder(&self, request: &ModelRequest) -> Box<dyn StreamDecoder> {
        Box::new(AnthropicDecoder::new(request))
    }

    fn error_message(&self, status: u16, body: &str) -> String {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        if let Some(message) = parsed.as_ref().and_then(|value| value.get("error")).and_then(error_text) {
            return message;
        }
        let body = body.trim();
        if body.is_empty() { format!("HTTP {status} with an empty body") } else { shorten(body, 500) }
    }
}

/// `<type>: <message>` from the `error` object of an error body or an `error` event.
fn error_text(error: &Value) -> Option<String> {
    let kind = error.get("type").and_then(Value::as_str);
    match (kind, error.get("message").and_then(Value::as_str)) {
        (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
        (None, Some(message)) => Some(message.to_owned()),
        (Some(kind), None) => Some(kind.to_owned()),
        (None, None) => None,
    }
}

/// A sampling setting as the user wrote it: `0.9f32` widened to `f64` directly would go out as
/// `0.8999999761581543`, which the API accepts but which reads wrong in a logged body.
fn decimal(value: f32) -> Value {
    value.to_string().parse::<f64>().map_or_else(|_| json!(value), |value| json!(value))
}

/// A role of the wire format: Anthropic has only these two in `messages`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WireRole {
    User,
    Assistant,
}

impl WireRole {
    fn as_str(self) -> &'static str {
        match self {
            WireRole::User => "user",
            WireRole::Assistant => "assistant",
        }
    }
}

/// The `messages` array: system messages left out (they go to `system`), tool results turned
/// into user messages, and consecutive messages of one role merged into one.
fn messages(conversation: &[ChatMessage]) -> Vec<Value> {
    let mut turns: Vec<(WireRole, Vec<Value>)> = Vec::new();
    for message in conversation {
        let (role, blocks) = match message.role {
            Role::System => continue,
            Role::User => (WireRole::User, text_block(&message.content).into_iter().collect()),
            Role::Assistant => {
                let mut blocks: Vec<Value> = text_block(&message.content).into_iter().collect();
                blocks.extend(message.tool_calls.iter().map(tool_use_block));
                (WireRole::Assistant, blocks)
            }
            Role::Tool => (WireRole::User, vec![tool_result_block(message)]),
        };
        // A message with nothing to say (an assistant turn that was only whitespace) would be
        // refused as empty; dropping it loses nothing.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut blocks)| {
            if role == WireRole::User {
                // The API wants a user message's tool results before any text in it; a stable
                // sort keeps the results (and the texts) in their own order.
                blocks.sort_by_key(|block| block.get("type").and_then(Value::as_str) != Some("tool_result"));
            }
            json!({"role": role.as_str(), "content": blocks})
        })
        .collect()
}

fn tool_definition(tool: &ToolSpec) -> Value {
    json!({"name": tool.name, "description": tool.description, "input_schema": tool.parameters})
}

/// A text block, or none for blank text: the API refuses text blocks without visible text.
fn text_block(text: &str) -> Option<Value> {
    (!text.trim().is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn tool_use_block(call: &ToolCall) -> Value {
    // `input` must be an object. Arguments that were not one (a model's malformed JSON, kept as
    // a string) were answered with an error result that quotes them; sending them back as `{}`
    // keeps the conversation acceptable to the API.
    let input = match &call.arguments {
        Value::Object(_) => call.arguments.clone(),
        _ => json!({}),
    };
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

fn tool_result_block(message: &ChatMessage) -> Value {
    let mut block = Map::new();
    block.insert("type".into(), json!("tool_result"));
    block.insert("tool_use_id".into(), json!(message.tool_call_id.as_deref().unwrap_or_default()));
    block.insert("content".into(), json!(message.content));
    if message.is_error {
        block.insert("is_error".into(), json!(true));
    }
    Value::Object(block)
}

/// A `tool_use` block still streaming its input.
#[derive(Debug)]
struct PendingTool {
    id: String,
    name: String,
    /// The `partial_json` fragments so far, concatenated.
    json: String,
    /// The `input` of `content_block_start`: `{}` when the input streams as deltas, but used as
    /// the input when no delta came.
    start_input: Value,
}

impl PendingTool {
    fn into_call(self) -> ToolCall {
        let arguments = if self.json.trim().is_empty() {
            match self.start_input {
                Value::Object(map) => Value::Object(map),
                _ => json!({}),
            }
        } else {
            // Malformed input reaches the runtime as the raw text, so the error it sends back
            // can quote what the model wrote.
            serde_json::from_str(&self.json).unwrap_or(Value::String(self.json))
        };
        ToolCall { id: self.id, name: self.name, arguments }
    }
}

/// The decoder of one streamed response.
#[derive(Debug)]
pub struct AnthropicDecoder {
    /// Whether the reply itself has begun: text, a tool call, or its end. `message_start`, pings
    /// and empty blocks do not count, so an `overloaded_error` right after them (a common way
    /// for a stream to fail) leaves the request safe to send again, as nothing reached the reader.
    started: bool,
    /// Whether `message_stop` came: the stream is whole.
    stopped: bool,
    /// Open `tool_use` blocks by content-block index.
    tools: BTreeMap<u64, PendingTool>,
    /// Token counts from the server, latest first: `message_delta` counts are cumulative.
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// Why generation stopped (`end_turn`, `tool_use`, `max_tokens`, ...), from `message_delta`.
    stop_reason: Option<String>,
    /// Estimates for when the server (a proxy, say) sends no usage: the request's tokens, and
    /// the characters streamed (text and tool input).
    estimated_input: u64,
    output_chars: u64,
}

impl AnthropicDecoder {
    pub fn new(request: &ModelRequest) -> Self {
        let estimated_input = request
            .messages
            .iter()
            .map(|message| {
                let calls: u64 =
                    message.tool_calls.iter().map(|call| estimate_tokens(&call.arguments.to_string())).sum();
                estimate_tokens(&message.content).saturating_add(calls)
            })
            .sum();
        AnthropicDecoder {
            started: false,
            stopped: false,
            tools: BTreeMap::new(),
            input_tokens: None,
            output_tokens: None,
            stop_reason: None,
            estimated_input,
            output_chars: 0,
        }
    }

    /// Why generation stopped, once `message_delta` said so.
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.unwrap_or(self.estimated_input),
            // About four characters a token, as `estimate_tokens` counts.
            output_tokens: self.output_tokens.unwrap_or(self.output_chars.div_ceil(4)),
            model_calls: 1,
        }
    }

    /// Reads a `usage` object. Input counts include cached prompt tokens: Anthropic reports
    /// those apart from `input_tokens`, but the model read them all the same.
    fn read_usage(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage else { return };
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        let input = ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"].map(count);
        if input.iter().any(Option::is_some) {
            self.input_tokens = Some(input.iter().flatten().fold(0u64, |sum, n| sum.saturating_add(*n)));
        }
        if let Some(output) = count("output_tokens") {
            self.output_tokens = Some(output);
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<ModelChunk>) {
        if !text.is_empty() {
            self.started = true;
            self.output_chars = self.output_chars.saturating_add(text.chars().count() as u64);
            out.push(ModelChunk::TextDelta(text.to_owned()));
        }
    }

    /// Every tool block still open, in block order: the stream ended without closing them.
    fn flush_tools(&mut self, out: &mut Vec<ModelChunk>) {
        for (_, tool) in std::mem::take(&mut self.tools) {
            out.push(ModelChunk::ToolCall(tool.into_call()));
        }
    }
}

fn text_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl StreamDecoder for AnthropicDecoder {
    fn event(&mut self, name: Option<&str>, data: &str) -> Result<Vec<ModelChunk>, String> {
        let mut out = Vec::new();
        // Nothing after the end marker belongs to this reply.
        if self.stopped {
            return Ok(out);
        }
        let event: Value = if data.trim().is_empty() {
            // An event with no data still counts by its name (`message_stop` needs nothing more).
            Value::Null
        } else {
            match serde_json::from_str(data) {
                Ok(event) => event,
                Err(_) if name == Some("ping") => return Ok(out),
                Err(err) => {
                    return Err(format!("unreadable event from the Anthropic API ({err}): {}", shorten(data, 200)));
                }
            }
        };
        // The data repeats the event's name as `type`; either will do when one is missing.
        let kind = event.get("type").and_then(Value::as_str).or(name).unwrap_or_default();
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            // Keep-alives: the reply has not begun for them.
            "ping" => {}
            "error" => {
                let message = event
                    .get("error")
                    .and_then(error_text)
                    .unwrap_or_else(|| format!("error event: {}", shorten(data, 200)));
                // `started` stays as it was: an error before any content leaves the request
                // safe to send again.
                return Err(message);
            }
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.read_usage(message.get("usage"));
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match text_field(block, "type") {
                    "text" => self.text(text_field(block, "text"), &mut out),
                    "tool_use" => {
                        let tool = PendingTool {
                            id: text_field(block, "id").to_owned(),
                            name: text_field(block, "name").to_owned(),
                            json: String::new(),
                            start_input: block.get("input").cloned().unwrap_or(Value::Null),
                        };
                        self.tools.insert(index, tool);
                        self.started = true;
                    }
                    // Thinking, server tools (run by Anthropic, not by troupe), and later kinds.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match text_field(delta, "type") {
                    "text_delta" => self.text(text_field(delta, "text"), &mut out),
                    "input_json_delta" => {
                        // Fragments of a block troupe does not track (a server tool) are not ours.
                        if let Some(tool) = self.tools.get_mut(&index) {
                            let fragment = text_field(delta, "partial_json");
                            self.output_chars = self.output_chars.saturating_add(fragment.chars().count() as u64);
                            tool.json.push_str(fragment);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(tool) = self.tools.remove(&index) {
                    out.push(ModelChunk::ToolCall(tool.into_call()));
                }
            }
            "message_delta" => {
                self.started = true;
                self.read_usage(event.get("usage"));
                if let Some(reason) =
                    event.get("delta").and_then(|delta| delta.get("stop_reason")).and_then(Value::as_str)
                {
                    self.stop_reason = Some(reason.to_owned());
                }
            }
            "message_stop" => {
                self.flush_tools(&mut out);
                out.push(ModelChunk::Usage(self.usage()));
                self.started = true;
                self.stopped = true;
            }
            // Anthropic may add event types; clients are asked to ignore those they do not know.
            // A nameless, empty event (a keep-alive comment's leftover) is nothing either.
            _ => {}
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<ModelChunk>, String> {
        if self.stopped {
            // `message_stop` already sent the calls and the usage.
            Ok(Vec::new())
        } else {
            Err("the Anthropic API's stream ended before `message_stop`: the reply was cut off".to_owned())
        }
    }

    fn started(&self) -> bool {
        self.started
    }
}

#[cfg(test)]
mod tests;
