//! Turning a conversation into the embedded model's prompt, and its constrained output back
//! into text or tool calls.
//!
//! The prompt is rendered with the chat template stored in the GGUF file (minijinja), so it is
//! byte-identical to what the model was trained on. SmolLM2's template knows only plain
//! messages, so tools are described in the system message in the `<tools>` / `<tool_call>`
//! convention common to small instruction-tuned models, with one short worked example, and tool
//! results come back as user messages.
//!
//! Invariant: pure. What the model may emit is exactly what [`parse_reply`] accepts, because
//! the grammar ([`super::grammar`]) is built from the same [`TOOL_CALL_OPEN`] and
//! [`TOOL_CALL_CLOSE`].

use serde_json::{Value, json};

use crate::protocol::{ChatMessage, Role, ToolCall, ToolSpec};

pub const TOOL_CALL_OPEN: &str = "<tool_call>";
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";

#[derive(Debug, thiserror::Error)]
#[error("the chat template: {0}")]
pub struct TemplateError(pub String);

/// Renders `messages` with the GGUF's chat template, ready for the assistant's reply.
pub fn render(template: &str, messages: &[ChatMessage], tools: &[ToolSpec]) -> Result<String, TemplateError> {
    let mut env = minijinja::Environment::new();
    env.add_template("chat", template).map_err(|e| TemplateError(e.to_string()))?;
    let rendered: Vec<minijinja::Value> = as_template_messages(messages, tools)
        .into_iter()
        .map(|(role, content)| {
            minijinja::Value::from(std::collections::BTreeMap::from([("role", role.to_owned()), ("content", content)]))
        })
        .collect();
    env.get_template("chat")
        .and_then(|t| t.render(minijinja::context! { messages => rendered, add_generation_prompt => true }))
        .map_err(|e| TemplateError(e.to_string()))
}

/// The conversation as the template's `(role, content)` list.
fn as_template_messages(messages: &[ChatMessage], tools: &[ToolSpec]) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    let tool_block = if tools.is_empty() { None } else { Some(tools_instructions(tools, &subtasks_seen(messages))) };
    let mut system_done = false;
    for message in messages {
        match message.role {
            Role::System => {
                let mut content = message.content.trim().to_owned();
                if let Some(block) = &tool_block {
                    content.push_str("\n\n");
                    content.push_str(block);
                }
                out.push(("system", content));
                system_done = true;
            }
            Role::User => {
                if !system_done {
                    if let Some(block) = &tool_block {
                        out.push(("system", block.clone()));
                    }
                    system_done = true;
                }
                out.push(("user", message.content.clone()));
            }
            Role::Assistant => {
                let mut content = message.content.trim().to_owned();
                if !message.tool_calls.is_empty() {
                    let calls: Vec<Value> =
                        message.tool_calls.iter().map(|c| json!({"name": c.name, "arguments": c.arguments})).collect();
                    content = format!("{TOOL_CALL_OPEN}{}{TOOL_CALL_CLOSE}", Value::Array(calls));
                }
                out.push(("assistant", content));
            }
            Role::Tool => {
                let name = message.tool_name.as_deref().unwrap_or("tool");
                let what = if message.is_error { "Error from" } else { "Result of" };
                out.push(("user", format!("{what} {name}: {}", message.content)));
            }
        }
    }
    out
}

/// Subtask URIs handed out so far, with the tool that made each, newest last.
pub fn subtasks_seen(messages: &[ChatMessage]) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for message in messages.iter().filter(|m| m.role == Role::Tool && !m.is_error) {
        if let Some(tool @ ("call_agent" | "call_slm")) = message.tool_name.as_deref() {
            if let Ok(value) = serde_json::from_str::<Value>(&message.content) {
                if let Some(uri) = value.get("uri").and_then(Value::as_str) {
                    seen.push((uri.to_owned(), tool.to_owned()));
                }
            }
        }
    }
    seen
}

/// Subtask URIs handed out whose result the conversation has not yet seen: the only ones worth
/// polling or cancelling. When every one has been read, all of them are returned, so a tool
/// that needs a URI is still callable.
pub fn open_subtasks(messages: &[ChatMessage]) -> Vec<String> {
    let all: Vec<String> = subtasks_seen(messages).into_iter().map(|(uri, _)| uri).collect();
    let finished: Vec<String> = messages
        .iter()
        .filter(|m| m.role == Role::Tool && !m.is_error)
        .filter_map(|m| serde_json::from_str::<Value>(&m.content).ok())
        .filter(|v| matches!(v.get("status").and_then(Value::as_str), Some("completed" | "failed" | "cancelled")))
        .filter_map(|v| v.get("uri").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let open: Vec<String> = all.iter().filter(|u| !finished.contains(u)).cloned().collect();
    if open.is_empty() { all } else { open }
}

fn tools_instructions(tools: &[ToolSpec], subtasks: &[(String, String)]) -> String {
    let listed: Vec<Value> = tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
        .collect();
    let mut text = format!(
        "You can call tools. They are:\n<tools>\n{}\n</tools>\n\
         To call tools, reply with only {TOOL_CALL_OPEN}[...]{TOOL_CALL_CLOSE} holding a JSON list of calls, each with \"name\" and \"arguments\". \
         Otherwise, reply with your final answer in plain text.\n\
         Example: to look up the weather in Oslo with a tool named get_weather, reply:\n\
         {TOOL_CALL_OPEN}[{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Oslo\"}}}}]{TOOL_CALL_CLOSE}",
        Value::Array(listed)
    );
    if !subtasks.is_empty() {
        text.push_str("\nSubtasks you have started (use these exact URIs):");
        for (uri, tool) in subtasks {
            text.push_str(&format!("\n- {uri} (from {tool})"));
        }
    }
    text
}

/// What the model said: text, or calls when it opened with [`TOOL_CALL_OPEN`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Text(String),
    Calls(Vec<ToolCall>),
}

/// Parses a finished reply. A call list that does not parse (possible only when decoding was
/// cut short, e.g. by `max_tokens`) is returned as text so the runtime records what happened.
pub fn parse_reply(text: &str, turn_id: &str) -> Reply {
    let trimmed = text.trim();
    let Some(body) = trimmed.strip_prefix(TOOL_CALL_OPEN) else { return Reply::Text(trimmed.to_owned()) };
    let body = body.trim().strip_suffix(TOOL_CALL_CLOSE).unwrap_or(body).trim();
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(body) else { return Reply::Text(trimmed.to_owned()) };
    let calls: Vec<ToolCall> = items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let name = item.get("name")?.as_str()?.to_owned();
            let arguments = item.get("arguments").cloned().unwrap_or_else(|| json!({}));
            Some(ToolCall { id: format!("{turn_id}_{}", i + 1), name, arguments })
        })
        .collect();
    if calls.is_empty() { Reply::Text(trimmed.to_owned()) } else { Reply::Calls(calls) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_exactly() {
        let prompt =
            render(SMOLLM2_TEMPLATE, &[ChatMessage::system("Be brief."), ChatMessage::user("Hi!")], &[]).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
        let default_system = render(SMOLLM2_TEMPLATE, &[ChatMessage::user("Hi!")], &[]).unwrap();
        assert!(default_system.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
    }

    #[test]
    fn tools_go_into_the_system_message_and_calls_round_trip() {
        let tool = ToolSpec {
            name: "list_tasks".into(),
            description: "List them.".into(),
            parameters: json!({"type": "object"}),
        };
        let call = ToolCall { id: "c1".into(), name: "call_agent".into(), arguments: json!({"task": "x"}) };
        let messages = vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Go"),
            ChatMessage::assistant("", vec![call.clone()]),
            ChatMessage::tool_result(&call, r#"{"uri":"subtask://abc123","status":"working"}"#, false),
        ];
        let prompt = render(SMOLLM2_TEMPLATE, &messages, &[tool]).unwrap();
        assert!(prompt.contains("<tools>\n[{\"name\":\"list_tasks\",\"description\":\"List them.\""), "{prompt}");
        assert!(prompt.contains("- subtask://abc123 (from call_agent)"), "{prompt}");
        assert!(prompt.contains(
            "<|im_start|>assistant\n<tool_call>[{\"name\":\"call_agent\",\"arguments\":{\"task\":\"x\"}}]</tool_call><|im_end|>"
        ));
        assert!(prompt.contains("<|im_start|>user\nResult of call_agent: {\"uri\""));

        let reply = parse_reply(r#"<tool_call>[{"name": "call_agent", "arguments": {"task": "y"}}]</tool_call>"#, "t2");
        assert_eq!(
            reply,
            Reply::Calls(vec![ToolCall {
                id: "t2_1".into(),
                name: "call_agent".into(),
                arguments: json!({"task": "y"})
            }])
        );
        assert_eq!(parse_reply("  Paris. ", "t"), Reply::Text("Paris.".into()));
        assert_eq!(parse_reply("<tool_call>[{\"name\"", "t"), Reply::Text("<tool_call>[{\"name\"".into()));
    }
}
