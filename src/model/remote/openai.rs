//! OpenAI-compatible chat completions (`POST {base}/chat/completions`, streamed): how a
//! [`ModelRequest`] becomes the JSON body, and how the `chat.completion.chunk` events become
//! [`ModelChunk`]s. The same format is spoken by many servers (vLLM, llama.cpp, Ollama,
//! OpenRouter, ...), so the decoder is lenient where they differ harmlessly.
//!
//! Owns the translation of troupe's chat vocabulary to OpenAI's (tool calls with JSON-string
//! arguments, tool results as `tool` messages) and the reassembly of streamed tool calls:
//! fragments keyed by `index`, id and name first, arguments in pieces, several calls at once.
//!
//! Invariant: pure, no I/O — everything here is a function of its arguments, so the format is
//! tested with recorded events alone.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::wire::{Dialect, StreamDecoder};
use crate::model::{ModelChunk, ModelRequest, Sampling, estimate_tokens};
use crate::protocol::{ChatMessage, Role, ToolCall, ToolChoice, ToolSpec, Usage, shorten};

/// Where requests go when the alias sets no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The chat completions request format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenAiDialect;

impl Dialect for OpenAiDialect {
    fn provider(&self) -> &'static str {
        "openai"
    }

    fn url(&self, base_url: Option<&str>) -> String {
        let base = base_url.map(str::trim).filter(|base| !base.is_empty()).unwrap_or(DEFAULT_BASE_URL);
        let base = base.trim_end_matches('/');
        // Users sometimes paste the whole endpoint rather than the API root.
        let base = base.strip_suffix("/chat/completions").unwrap_or(base);
        format!("{base}/chat/completions")
    }

    fn headers(&self, api_key: Option<&str>) -> Vec<(String, String)> {
        // A key read from a file or a shell often carries a trailing newline, which the server
        // would reject as a different key. Local servers need no key at all.
        api_key
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(|key| ("authorization".to_owned(), format!("Bearer {key}")))
            .into_iter()
            .collect()
    }

    fn body(&self, model: &str, request: &ModelRequest, defaults: &Sampling) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert("messages".into(), Value::Array(request.messages.iter().map(message).collect()));
        if !request.tools.is_empty() {
            body.insert("tools".into(), Value::Array(request.tools.iter().map(tool_definition).collect()));
            let choice = match (&request.forced_tool, request.tool_choice) {
                (Some(name), _) => json!({"type": "function", "function": {"name": name}}),
                (None, ToolChoice::Required) => json!("required"),
                (None, ToolChoice::Auto) => json!("auto"),
            };
            body.insert("tool_choice".into(), choice);
        }
        body.insert("stream".into(), json!(true));
        // Without this the API sends no token counts on a streamed reply.
        body.insert("stream_options".into(), json!({"include_usage": true}));
        let own = &request.sampling;
        if let Some(temperature) = own.temperature.or(defaults.temperature) {
            body.insert("temperature".into(), decimal(temperature));
        }
        if let Some(top_p) = own.top_p.or(defaults.top_p) {
            body.insert("top_p".into(), decimal(top_p));
        }
        // `max_tokens` rather than the newer `max_completion_tokens`: every compatible server
        // reads it, and OpenAI still accepts it for its chat models.
        if let Some(max_tokens) = own.max_tokens.or(defaults.max_tokens) {
            body.insert("max_tokens".into(), json!(max_tokens));
        }
        if let Some(seed) = own.seed.or(defaults.seed) {
            body.insert("seed".into(), json!(seed));
        }
        Value::Object(body)
    }

    fn decoder(&self, request: &ModelRequest) -> Box<dyn StreamDecoder> {
        Box::new(OpenAiDecoder::new(request))
    }

    fn error_message(&self, status: u16, body: &str) -> String {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        if let Some(message) = parsed.as_ref().and_then(error_text) {
            return message;
        }
        let body = body.trim();
        if body.is_empty() { format!("HTTP {status} with an empty body") } else { shorten(body, 500) }
    }
}

/// The message of an error object: OpenAI's `{"error": {"message": ...}}`, or the shapes
/// compatible servers use instead (`{"error": "..."}`, `{"message": ...}`, `{"detail": ...}`).
fn error_text(value: &Value) -> Option<String> {
    let text = |value: &Value| value.as_str().map(str::to_owned);
    match value.get("error") {
        Some(Value::String(message)) => Some(message.clone()),
        Some(error) => error.get("message").and_then(text),
        None => value.get("message").or_else(|| value.get("detail")).and_then(text),
    }
    .map(|message| shorten(&message, 500))
}

/// A sampling setting as the user wrote it: `0.9f32` widened to `f64` directly would go out as
/// `0.8999999761581543`.
fn decimal(value: f32) -> Value {
    value.to_string().parse::<f64>().map_or_else(|_| json!(value), |value| json!(value))
}

fn message(message: &ChatMessage) -> Value {
    match message.role {
        Role::System => json!({"role": "system", "content": message.content}),
        Role::User => json!({"role": "user", "content": message.content}),
        Role::Assistant if message.tool_calls.is_empty() => {
            json!({"role": "assistant", "content": message.content})
        }
        Role::Assistant => {
            let calls: Vec<Value> = message.tool_calls.iter().map(tool_call).collect();
            // The API wants `null`, not `""`, for an assistant turn that only calls tools.
            let content = if message.content.is_empty() { Value::Null } else { json!(message.content) };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id.as_deref().unwrap_or_default(),
            "content": message.content,
        }),
    }
}

fn tool_call(call: &ToolCall) -> Value {
    // Arguments that were not an object (a model's malformed JSON, kept as a string) were
    // answered with an error result quoting them; `{}` keeps the history acceptable to servers
    // that parse the arguments of past calls (vLLM's chat templates do).
    let arguments = match &call.arguments {
        Value::Object(_) => call.arguments.to_string(),
        _ => "{}".to_owned(),
    };
    json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
}

fn tool_definition(tool: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    })
}

/// A tool call still streaming.
#[derive(Debug, Default)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
}

impl PendingCall {
    fn into_call(self, index: u64) -> ToolCall {
        let raw = self.arguments;
        let arguments = if raw.trim().is_empty() {
            // A call without parameters may stream no argument text at all.
            json!({})
        } else {
            // Malformed arguments reach the runtime as the raw text, so the error it sends
            // back can quote what the model wrote.
            serde_json::from_str(&raw).unwrap_or(Value::String(raw))
        };
        // Some compatible servers leave out the id; the runtime pairs results by it.
        let id = if self.id.is_empty() { format!("call_{index}") } else { self.id };
        ToolCall { id, name: self.name, arguments }
    }
}

/// The decoder of one streamed response.
#[derive(Debug)]
pub struct OpenAiDecoder {
    /// Whether content, a tool-call fragment or a finish reason came: retrying is unsafe after.
    started: bool,
    /// `data: [DONE]` came: the stream is whole, and anything after it is ignored.
    done: bool,
    /// The finish reason of choice 0 (`stop`, `tool_calls`, `length`, ...), once sent.
    finish_reason: Option<String>,
    /// Calls being assembled, by their `index`.
    calls: BTreeMap<u64, PendingCall>,
    /// The server's counts from the `usage` chunk.
    usage: Option<(u64, u64)>,
    /// Estimates for when the server sends no usage: the request's tokens, and the
    /// characters streamed (text, tool names and arguments).
    estimated_input: u64,
    output_chars: u64,
}

impl OpenAiDecoder {
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
        OpenAiDecoder {
            started: false,
            done: false,
            finish_reason: None,
            calls: BTreeMap::new(),
            usage: None,
            estimated_input,
            output_chars: 0,
        }
    }

    /// Why generation stopped, once the server said so.
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }

    fn usage(&self) -> Usage {
        let (input_tokens, output_tokens) = self.usage.unwrap_or((self.estimated_input, self.output_chars.div_ceil(4)));
        Usage { input_tokens, output_tokens, model_calls: 1 }
    }

    fn count_output(&mut self, text: &str) {
        self.output_chars = self.output_chars.saturating_add(text.chars().count() as u64);
    }

    /// Every assembled call, in index order.
    fn flush_calls(&mut self, out: &mut Vec<ModelChunk>) {
        for (index, call) in std::mem::take(&mut self.calls) {
            out.push(ModelChunk::ToolCall(call.into_call(index)));
        }
    }

    /// One element of `delta.tool_calls`.
    fn tool_fragment(&mut self, fragment: &Value) {
        let id = fragment.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let index = match fragment.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            // Servers that omit `index` send a new id to open each call, and nothing but
            // arguments afterwards.
            None => {
                let last = self.calls.iter().next_back();
                match (last, id) {
                    (Some((&index, call)), Some(id)) if call.id == id => index,
                    (Some((&index, _)), None) => index,
                    (Some((&index, _)), Some(_)) => index.saturating_add(1),
                    (None, _) => 0,
                }
            }
        };
        let function = fragment.get("function").unwrap_or(&Value::Null);
        let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
        let arguments = function.get("arguments").and_then(Value::as_str).unwrap_or_default();
        self.count_output(name);
        self.count_output(arguments);
        let call = self.calls.entry(index).or_default();
        if let Some(id) = id.filter(|_| call.id.is_empty()) {
            id.clone_into(&mut call.id);
        }
        // OpenAI sends the name whole in the first fragment; some servers repeat it in each.
        if call.name.is_empty() {
            name.clone_into(&mut call.name);
        } else if call.name != name {
            call.name.push_str(name);
        }
        call.arguments.push_str(arguments);
        self.started = true;
    }
}

impl StreamDecoder for OpenAiDecoder {
    fn event(&mut self, _name: Option<&str>, data: &str) -> Result<Vec<ModelChunk>, String> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            self.flush_calls(&mut out);
            out.push(ModelChunk::Usage(self.usage()));
            return Ok(out);
        }
        if data.is_empty() {
            return Ok(out);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|err| format!("unreadable event from the OpenAI API ({err}): {}", shorten(data, 200)))?;
        if chunk.get("error").is_some_and(|error| !error.is_null()) {
            let message = error_text(&chunk).unwrap_or_else(|| shorten(data, 200));
            return Err(format!("the stream carried an error: {message}"));
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| !usage.is_null()) {
            let count = |key: &str| usage.get(key).and_then(Value::as_u64);
            if let (Some(input), Some(output)) = (count("prompt_tokens"), count("completion_tokens")) {
                self.usage = Some((input, output));
            }
        }
        // troupe asks for one choice; any other index belongs to no one.
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0));
        let Some(choice) = choice else { return Ok(out) };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|text| !text.is_empty()) {
            self.count_output(text);
            self.started = true;
            out.push(ModelChunk::TextDelta(text.to_owned()));
        }
        if let Some(fragments) = delta.get("tool_calls").and_then(Value::as_array) {
            for fragment in fragments {
                self.tool_fragment(fragment);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.started = true;
            self.finish_reason = Some(reason.to_owned());
            // The calls are whole: hand them over now rather than after the usage chunk.
            self.flush_calls(&mut out);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<ModelChunk>, String> {
        if self.done {
            return Ok(Vec::new());
        }
        if self.finish_reason.is_none() {
            return Err(
                "the OpenAI API's stream ended before a finish reason or [DONE]: the reply was cut off".to_owned()
            );
        }
        // A finish reason and then the end without `[DONE]`: some compatible servers close so.
        self.done = true;
        let mut out = Vec::new();
        self.flush_calls(&mut out);
        out.push(ModelChunk::Usage(self.usage()));
        Ok(out)
    }

    fn started(&self) -> bool {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::remote::wire::fixtures::{call, request, tool};
    use pretty_assertions::assert_eq;

    /// Feeds `data:` payloads to a fresh decoder, then finishes it.
    fn decode(events: &[&str]) -> (OpenAiDecoder, Result<Vec<ModelChunk>, String>) {
        let mut decoder = OpenAiDecoder::new(&request(vec![ChatMessage::user("What is the weather?")]));
        let mut chunks = Vec::new();
        for data in events {
            match decoder.event(None, data) {
                Ok(more) => chunks.extend(more),
                Err(err) => return (decoder, Err(err)),
            }
        }
        let result = decoder.finish().map(|more| {
            chunks.extend(more);
            chunks
        });
        (decoder, result)
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> ModelChunk {
        ModelChunk::Usage(Usage { input_tokens, output_tokens, model_calls: 1 })
    }

    fn text(text: &str) -> ModelChunk {
        ModelChunk::TextDelta(text.into())
    }

    #[test]
    fn url_defaults_and_tolerates_pasted_endpoints() {
        let dialect = OpenAiDialect;
        assert_eq!(dialect.url(None), "https://api.openai.com/v1/chat/completions");
        assert_eq!(dialect.url(Some(" ")), "https://api.openai.com/v1/chat/completions");
        assert_eq!(dialect.url(Some("http://localhost:8000/v1/")), "http://localhost:8000/v1/chat/completions");
        assert_eq!(dialect.url(Some("http://h/v1/chat/completions")), "http://h/v1/chat/completions");
    }

    #[test]
    fn bearer_key_only_when_one_is_set() {
        let dialect = OpenAiDialect;
        assert_eq!(dialect.headers(Some("sk-test\n")), vec![("authorization".into(), "Bearer sk-test".into())]);
        assert_eq!(dialect.headers(Some("")), vec![]);
        assert_eq!(dialect.headers(None), vec![]);
    }

    #[test]
    fn body_carries_messages_tools_and_sampling() {
        let get_weather = call("call_1", "get_weather", json!({"location": "Paris"}));
        let mut request = request(vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Weather?"),
            ChatMessage::assistant("", vec![get_weather.clone(), call("call_2", "broken", json!("{oops"))]),
            ChatMessage::tool_result(&get_weather, "sunny", false),
            ChatMessage::assistant("It is sunny.", vec![]),
        ]);
        request.tools = vec![tool("get_weather")];
        request.tool_choice = ToolChoice::Required;
        request.sampling = Sampling { temperature: Some(0.2), ..Sampling::default() };
        let defaults = Sampling { temperature: Some(0.9), top_p: Some(0.9), max_tokens: Some(256), seed: Some(7) };
        let body = OpenAiDialect.body("gpt-4o-mini", &request, &defaults);
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {"role": "assistant", "content": "It is sunny."},
                ],
                "tools": [{"type": "function", "function": {
                    "name": "get_weather",
                    "description": "The get_weather tool.",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
                }}],
                "tool_choice": "required",
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.2,
                "top_p": 0.9,
                "max_tokens": 256,
                "seed": 7,
            })
        );
    }

    #[test]
    fn tool_choice_forms() {
        let mut request = request(vec![ChatMessage::user("Hi")]);
        assert_eq!(OpenAiDialect.body("m", &request, &Sampling::default()).get("tool_choice"), None);
        request.tools = vec![tool("a"), tool("b")];
        let choice =
            |request: &ModelRequest| OpenAiDialect.body("m", request, &Sampling::default())["tool_choice"].clone();
        assert_eq!(choice(&request), json!("auto"));
        request.forced_tool = Some("b".into());
        assert_eq!(choice(&request), json!({"type": "function", "function": {"name": "b"}}));
    }

    #[test]
    fn streamed_text_then_usage() {
        let (decoder, chunks) = decode(&[
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" there!"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
            "[DONE]",
        ]);
        assert_eq!(chunks, Ok(vec![text("Hello"), text(" there!"), usage(9, 3)]));
        assert_eq!(decoder.finish_reason(), Some("stop"));
    }

    #[test]
    fn no_usage_is_estimated() {
        let (_, chunks) = decode(&[
            r#"{"choices":[{"index":0,"delta":{"content":"12345678"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        // "What is the weather?" is 20 characters: 5 tokens; 8 characters out: 2.
        assert_eq!(chunks, Ok(vec![text("12345678"), usage(5, 2)]));
    }

    #[test]
    fn tool_calls_assemble_from_fragments_in_parallel() {
        let (_, chunks) = decode(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Pa"}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ris\"}"}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":80,"completion_tokens":30,"total_tokens":110}}"#,
            "[DONE]",
        ]);
        assert_eq!(
            chunks,
            Ok(vec![
                ModelChunk::ToolCall(call("call_a", "get_weather", json!({"location": "Paris"}))),
                ModelChunk::ToolCall(call("call_b", "get_time", json!({}))),
                usage(80, 30),
            ])
        );
    }

    #[test]
    fn malformed_arguments_arrive_as_the_raw_string() {
        let (_, chunks) = decode(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_x","function":{"name":"f","arguments":"{\"a\": 1,"}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let chunks = chunks.unwrap();
        assert_eq!(chunks[0], ModelChunk::ToolCall(call("call_x", "f", json!("{\"a\": 1,"))));
    }

    #[test]
    fn servers_without_index_or_id_still_assemble() {
        let (_, chunks) = decode(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{\"x\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"c2","function":{"name":"g","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":3,"function":{"name":"h"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
        ]);
        let calls: Vec<ModelChunk> =
            chunks.unwrap().into_iter().filter(|c| matches!(c, ModelChunk::ToolCall(_))).collect();
        assert_eq!(
            calls,
            vec![
                ModelChunk::ToolCall(call("c1", "f", json!({"x": 1}))),
                ModelChunk::ToolCall(call("c2", "g", json!({}))),
                ModelChunk::ToolCall(call("call_3", "h", json!({}))),
            ]
        );
    }

    #[test]
    fn a_stream_without_done_or_finish_reason_was_cut() {
        let (decoder, result) =
            decode(&[r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#]);
        assert!(result.unwrap_err().contains("cut off"));
        assert!(decoder.started());
        // A finish reason without `[DONE]` is whole.
        let (_, result) = decode(&[r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#]);
        assert_eq!(result, Ok(vec![text("Hi"), usage(5, 1)]));
    }

    #[test]
    fn nothing_started_until_content_comes() {
        let mut decoder = OpenAiDecoder::new(&request(vec![]));
        let role_only = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(decoder.event(None, role_only), Ok(vec![]));
        assert!(!decoder.started());
        assert_eq!(decoder.event(None, r#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#), Ok(vec![text("x")]));
        assert!(decoder.started());
    }

    #[test]
    fn errors_in_the_stream_and_in_bodies() {
        let (_, result) = decode(&[r#"{"error":{"message":"The server had an error","type":"server_error"}}"#]);
        assert_eq!(result, Err("the stream carried an error: The server had an error".into()));
        let (_, result) = decode(&["not json"]);
        assert!(result.unwrap_err().starts_with("unreadable event from the OpenAI API"));

        let dialect = OpenAiDialect;
        let body = r#"{"error":{"message":"Invalid 'messages[1].role'","type":"invalid_request_error","param":"messages","code":null}}"#;
        assert_eq!(dialect.error_message(400, body), "Invalid 'messages[1].role'");
        assert_eq!(dialect.error_message(400, r#"{"error":"model not found"}"#), "model not found");
        assert_eq!(dialect.error_message(422, r#"{"detail":"bad field"}"#), "bad field");
        assert_eq!(dialect.error_message(502, "  "), "HTTP 502 with an empty body");
        let long = "x".repeat(600);
        assert_eq!(dialect.error_message(502, &long).chars().count(), 501);
    }

    #[test]
    fn events_after_done_are_ignored() {
        let mut decoder = OpenAiDecoder::new(&request(vec![]));
        let _ = decoder.event(None, r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#);
        let _ = decoder.event(None, "[DONE]");
        assert_eq!(decoder.event(None, r#"{"choices":[{"index":0,"delta":{"content":"late"}}]}"#), Ok(vec![]));
        assert_eq!(decoder.finish(), Ok(vec![]));
    }
}
