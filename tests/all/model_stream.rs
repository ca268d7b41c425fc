//! A model's side of the provider tests: a request to send, and its reply stream read back
//! (every chunk and the error that ended it, and the chunks of one kind).

use troupe::model::{ModelChunk, ModelError, ModelRequest, ModelStream, Sampling};
use troupe::protocol::{ChatMessage, TaskId, ToolCall, ToolChoice, ToolSpec, Usage};

pub fn request(messages: Vec<ChatMessage>, tools: Vec<ToolSpec>) -> ModelRequest {
    ModelRequest {
        task: TaskId::from_code(1),
        agent: "coordinator".into(),
        messages,
        tools,
        tool_choice: ToolChoice::Auto,
        forced_tool: None,
        sampling: Sampling::default(),
    }
}

pub fn hello() -> ModelRequest {
    request(vec![ChatMessage::user("Say hello.")], Vec::new())
}

/// Everything a stream yields: its chunks, and the error that ended it, if one did.
pub async fn collect(mut stream: ModelStream) -> (Vec<ModelChunk>, Option<ModelError>) {
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(err) => {
                assert!(stream.next().await.is_none(), "nothing follows an error");
                return (chunks, Some(err));
            }
        }
    }
    (chunks, None)
}

pub fn text_of(chunks: &[ModelChunk]) -> String {
    chunks
        .iter()
        .filter_map(|chunk| match chunk {
            ModelChunk::TextDelta(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

pub fn notices(chunks: &[ModelChunk]) -> Vec<&str> {
    chunks
        .iter()
        .filter_map(|chunk| match chunk {
            ModelChunk::Notice(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

pub fn calls(chunks: &[ModelChunk]) -> Vec<ToolCall> {
    chunks
        .iter()
        .filter_map(|chunk| match chunk {
            ModelChunk::ToolCall(call) => Some(call.clone()),
            _ => None,
        })
        .collect()
}

pub fn usages(chunks: &[ModelChunk]) -> Vec<Usage> {
    chunks
        .iter()
        .filter_map(|chunk| match chunk {
            ModelChunk::Usage(usage) => Some(*usage),
            _ => None,
        })
        .collect()
}
