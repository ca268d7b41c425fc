//! What a remote API's wire format must provide: how to build a request and how to turn its
//! server-sent events into [`ModelChunk`]s. The transport (HTTP, timeouts, retries,
//! cancellation) is shared and knows nothing of any one API; a dialect knows nothing of HTTP.
//!
//! Invariant: dialects and decoders are pure (no I/O, no clock), so each API's format is tested
//! with recorded events alone.

use serde_json::Value;

use crate::model::{ModelChunk, ModelRequest, Sampling};

/// One API's request format.
pub trait Dialect: Send + Sync + 'static {
    /// `openai` or `anthropic`, as `troupe.toml` names the provider.
    fn provider(&self) -> &'static str;

    /// The endpoint to POST to, from the alias's `base_url` (or the API's default when `None`).
    fn url(&self, base_url: Option<&str>) -> String;

    /// Headers the API needs besides `content-type: application/json` (authentication, version),
    /// given the key read from the alias's `api_key_env`, if any.
    fn headers(&self, api_key: Option<&str>) -> Vec<(String, String)>;

    /// The JSON body of a streaming request. `defaults` are the alias's sampling settings; the
    /// request's own settings win where both are set.
    fn body(&self, model: &str, request: &ModelRequest, defaults: &Sampling) -> Value;

    /// A decoder for one response stream of `request`.
    fn decoder(&self, request: &ModelRequest) -> Box<dyn StreamDecoder>;

    /// The server's own message from an error response body (status >= 400), for the user.
    fn error_message(&self, status: u16, body: &str) -> String;
}

/// Turns one response's server-sent events into chunks.
pub trait StreamDecoder: Send {
    /// One event: its `event:` name (if the server sent one) and its `data:` lines joined with
    /// `\n`. Returns the chunks it completes (text deltas at once; a tool call once its
    /// arguments are whole), or the error the stream carried.
    fn event(&mut self, name: Option<&str>, data: &str) -> Result<Vec<ModelChunk>, String>;

    /// The stream ended. Returns what is still owed (tool calls not yet sent, usage, or an
    /// estimate of it when the server sent none), or an error when the stream ended before
    /// the API's end marker (a cut stream).
    fn finish(&mut self) -> Result<Vec<ModelChunk>, String>;

    /// Whether anything has been decoded yet: a request is retried only while nothing was.
    fn started(&self) -> bool;
}

/// Requests and tool calls the dialects' tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::{Value, json};

    use crate::model::{ModelRequest, Sampling};
    use crate::protocol::{ChatMessage, TaskId, ToolCall, ToolChoice, ToolSpec};

    pub(crate) fn request(messages: Vec<ChatMessage>) -> ModelRequest {
        ModelRequest {
            task: TaskId::from_code(1),
            agent: "coordinator".into(),
            messages,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            forced_tool: None,
            sampling: Sampling::default(),
        }
    }

    pub(crate) fn tool(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: format!("The {name} tool."),
            parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}}),
        }
    }

    pub(crate) fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments }
    }
}
