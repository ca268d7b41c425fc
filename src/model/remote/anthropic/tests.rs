//! Tests of `model::remote::anthropic`.

use super::*;
use crate::model::remote::wire::fixtures::{call, request, tool};
use pretty_assertions::assert_eq;

/// Feeds a recorded stream (`event:` / `data:` lines, blank lines between events) to a fresh
/// decoder, as the transport would.
fn decode(stream: &str) -> (AnthropicDecoder, Result<Vec<ModelChunk>, String>) {
    let mut decoder = AnthropicDecoder::new(&request(vec![ChatMessage::user("Hi")]));
    let result = feed(&mut decoder, stream);
    (decoder, result)
}

fn feed(decoder: &mut AnthropicDecoder, stream: &str) -> Result<Vec<ModelChunk>, String> {
    let mut chunks = Vec::new();
    for event in stream.split("\n\n").filter(|event| !event.trim().is_empty()) {
        let mut name = None;
        let mut data = Vec::new();
        for line in event.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        chunks.extend(decoder.event(name, &data.join("\n"))?);
    }
    chunks.extend(decoder.finish()?);
    Ok(chunks)
}

fn usage(input_tokens: u64, output_tokens: u64) -> ModelChunk {
    ModelChunk::Usage(Usage { input_tokens, output_tokens, model_calls: 1 })
}

/// Anthropic's documented basic streaming example.
const TEXT_STREAM: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}
"#;

/// Anthropic's documented tool-use streaming example: text, then a `tool_use` block whose
/// input arrives in fragments that split keys and values.
const TOOL_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-6","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let me check."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}
"#;

#[test]
fn text_streams_as_deltas_and_ends_with_usage() {
    let (decoder, chunks) = decode(TEXT_STREAM);
    assert_eq!(
        chunks,
        Ok(vec![ModelChunk::TextDelta("Hello".into()), ModelChunk::TextDelta("!".into()), usage(25, 15)])
    );
    assert_eq!(decoder.stop_reason(), Some("end_turn"));
    assert!(decoder.started());
}

#[test]
fn text_deltas_come_out_before_the_stream_ends() {
    let mut decoder = AnthropicDecoder::new(&request(vec![ChatMessage::user("Hi")]));
    let delta = r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}"#;
    assert_eq!(decoder.event(Some("content_block_delta"), delta), Ok(vec![ModelChunk::TextDelta("Hel".into())]));
}

#[test]
fn a_tool_call_is_assembled_from_its_fragments() {
    let (decoder, chunks) = decode(TOOL_STREAM);
    assert_eq!(
        chunks,
        Ok(vec![
            ModelChunk::TextDelta("Okay".into()),
            ModelChunk::TextDelta(", let me check.".into()),
            ModelChunk::ToolCall(call(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
            )),
            usage(472, 89),
        ])
    );
    assert_eq!(decoder.stop_reason(), Some("tool_use"));
}

#[test]
fn a_tool_call_is_sent_when_its_block_stops_not_before() {
    let mut decoder = AnthropicDecoder::new(&request(vec![ChatMessage::user("Hi")]));
    let start = r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"list_tasks","input":{}}}"#;
    let delta =
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 1}"}}"#;
    assert_eq!(decoder.event(Some("content_block_start"), start), Ok(vec![]));
    assert_eq!(decoder.event(Some("content_block_delta"), delta), Ok(vec![]));
    assert_eq!(
        decoder.event(Some("content_block_stop"), r#"{"type":"content_block_stop","index":0}"#),
        Ok(vec![ModelChunk::ToolCall(call("toolu_1", "list_tasks", json!({"a": 1})))])
    );
}

#[test]
fn two_tool_calls_come_out_in_order_with_their_own_inputs() {
    let stream = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":600,"cache_read_input_tokens":100,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_A","name":"call_agent","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"agent\": \"resea"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"rcher\", \"task\": \"otters\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_B","name":"list_tasks","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":40}}

event: message_stop
data: {"type":"message_stop"}
"#;
    let (_, chunks) = decode(stream);
    assert_eq!(
        chunks,
        Ok(vec![
            ModelChunk::ToolCall(call("toolu_A", "call_agent", json!({"agent": "researcher", "task": "otters"}))),
            // An empty input is an empty object, not a parse error.
            ModelChunk::ToolCall(call("toolu_B", "list_tasks", json!({}))),
            // Cached prompt tokens count as input.
            usage(700, 40),
        ])
    );
}

#[test]
fn malformed_partial_json_reaches_the_runtime_as_raw_text() {
    let stream = r#"event: message_start
data: {"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_X","name":"call_slm","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"task\": \"sum"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"marise\", "}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":12}}

event: message_stop
data: {"type":"message_stop"}
"#;
    let (decoder, chunks) = decode(stream);
    assert_eq!(
        chunks,
        Ok(vec![
            ModelChunk::ToolCall(call("toolu_X", "call_slm", Value::String(r#"{"task": "summarise", "#.into()))),
            usage(10, 12),
        ])
    );
    assert_eq!(decoder.stop_reason(), Some("max_tokens"));
}

#[test]
fn an_error_event_mid_stream_fails_the_reply() {
    let stream = r#"event: message_start
data: {"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Partial"}}

event: error
data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

event: message_stop
data: {"type":"message_stop"}
"#;
    let (decoder, chunks) = decode(stream);
    assert_eq!(chunks, Err("overloaded_error: Overloaded".into()));
    assert!(decoder.started(), "text was decoded before the error: not safe to retry");
}

#[test]
fn an_error_before_any_content_leaves_the_request_retryable() {
    let stream = r#"event: message_start
data: {"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: error
data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
"#;
    let (decoder, chunks) = decode(stream);
    assert_eq!(chunks, Err("overloaded_error: Overloaded".into()));
    assert!(!decoder.started(), "nothing reached the reader: the request may be sent again");

    let mut decoder = AnthropicDecoder::new(&request(vec![ChatMessage::user("Hi")]));
    let error = r#"{"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}"#;
    assert_eq!(decoder.event(Some("error"), error), Err("api_error: Internal server error".into()));
    assert!(!decoder.started());
}

#[test]
fn a_stream_cut_before_message_stop_is_an_error() {
    let cut = TEXT_STREAM.split("event: message_delta").next().unwrap_or_default();
    let (decoder, chunks) = decode(cut);
    let error = chunks.expect_err("a cut stream must fail");
    assert!(error.contains("message_stop"), "{error}");
    assert!(decoder.started());
    // So is a stream with nothing in it at all.
    let (decoder, chunks) = decode("");
    assert!(chunks.is_err());
    assert!(!decoder.started());
}

#[test]
fn a_tool_block_left_open_is_sent_at_message_stop() {
    let stream = r#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_O","name":"list_tasks","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}

event: message_stop
data: {"type":"message_stop"}
"#;
    let (_, chunks) = decode(stream);
    let chunks = chunks.expect("the stream ended properly");
    assert_eq!(chunks[0], ModelChunk::ToolCall(call("toolu_O", "list_tasks", json!({}))));
    // No usage came: an estimate stands in ("Hi" in, "{}" out), still counting one call.
    assert_eq!(chunks[1], usage(1, 1));
}

#[test]
fn unknown_events_and_blocks_are_ignored() {
    let stream = r#"event: message_start
data: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me see"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: brand_new_event
data: {"type":"brand_new_event","whatever":1}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Done."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":30}}

event: message_stop
data: {"type":"message_stop"}
"#;
    let (_, chunks) = decode(stream);
    assert_eq!(chunks, Ok(vec![ModelChunk::TextDelta("Done.".into()), usage(5, 30)]));
}

#[test]
fn unreadable_event_data_is_an_error() {
    let mut decoder = AnthropicDecoder::new(&request(vec![ChatMessage::user("Hi")]));
    assert!(decoder.event(Some("content_block_delta"), "{not json").is_err());
}

#[test]
fn an_event_without_data_counts_by_its_name() {
    let mut decoder = AnthropicDecoder::new(&request(vec![ChatMessage::user("Hi")]));
    assert_eq!(decoder.event(None, ""), Ok(vec![]));
    assert!(!decoder.started());
    let chunks = decoder.event(Some("message_stop"), "").expect("an end marker");
    assert!(matches!(chunks.as_slice(), [ModelChunk::Usage(_)]), "{chunks:?}");
    assert_eq!(decoder.finish(), Ok(vec![]));
}

#[test]
fn the_url_accepts_a_base_with_or_without_v1() {
    let dialect = AnthropicDialect;
    assert_eq!(dialect.url(None), "https://api.anthropic.com/v1/messages");
    for base in [
        "https://proxy.example/anthropic",
        "https://proxy.example/anthropic/",
        "https://proxy.example/anthropic/v1",
        "https://proxy.example/anthropic/v1/",
        "https://proxy.example/anthropic/v1/messages",
    ] {
        assert_eq!(dialect.url(Some(base)), "https://proxy.example/anthropic/v1/messages", "{base}");
    }
}

#[test]
fn headers_carry_the_key_and_the_version() {
    let dialect = AnthropicDialect;
    let pair = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    assert_eq!(
        dialect.headers(Some("sk-ant-123\n")),
        vec![pair("x-api-key", "sk-ant-123"), pair("anthropic-version", "2023-06-01")]
    );
    assert_eq!(dialect.headers(None), vec![pair("anthropic-version", "2023-06-01")]);
    assert_eq!(dialect.provider(), "anthropic");
}

#[test]
fn the_body_of_a_plain_request() {
    let request = request(vec![
        ChatMessage::system("You are terse."),
        ChatMessage::system("Answer in English."),
        ChatMessage::user("Hi"),
    ]);
    let body = AnthropicDialect.body("claude-sonnet-4-5", &request, &Sampling::default());
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "system": "You are terse.\n\nAnswer in English.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "stream": true,
        })
    );
}

#[test]
fn sampling_of_the_request_wins_over_the_alias_defaults() {
    let mut req = request(vec![ChatMessage::user("Hi")]);
    req.sampling = Sampling { temperature: Some(0.25), top_p: None, max_tokens: Some(100), seed: Some(7) };
    let defaults = Sampling { temperature: Some(1.0), top_p: Some(0.5), max_tokens: Some(2000), seed: None };
    let body = AnthropicDialect.body("m", &req, &defaults);
    assert_eq!(body["max_tokens"], json!(100));
    assert_eq!(body["temperature"], json!(0.25));
    // Recent models refuse both at once: temperature wins.
    assert_eq!(body.get("top_p"), None);
    assert_eq!(body.get("seed"), None);

    req.sampling = Sampling::default();
    let body = AnthropicDialect.body("m", &req, &defaults);
    assert_eq!(body["max_tokens"], json!(2000));
    assert_eq!(body["temperature"], json!(1.0));

    let top_p_only = Sampling { top_p: Some(0.9), ..Sampling::default() };
    let body = AnthropicDialect.body("m", &req, &top_p_only);
    assert_eq!(body["top_p"], json!(0.9));
    assert_eq!(body.get("temperature"), None);
}

#[test]
fn tool_results_become_one_user_message_after_the_tool_uses() {
    let first = call("toolu_1", "call_agent", json!({"agent": "researcher", "task": "otters"}));
    let second = call("toolu_2", "get_task_status", json!({"uri": "subtask://000001"}));
    let mut req = request(vec![
        ChatMessage::system("Coordinate."),
        ChatMessage::user("Find facts about otters."),
        ChatMessage::assistant("Delegating.", vec![first.clone(), second.clone()]),
        ChatMessage::tool_result(&first, "subtask://000001", false),
        ChatMessage::tool_result(&second, "no such task", true),
        ChatMessage::user("Keep going."),
    ]);
    req.tools = vec![tool("call_agent"), tool("get_task_status")];
    let body = AnthropicDialect.body("m", &req, &Sampling::default());
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Find facts about otters."}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Delegating."},
                {"type": "tool_use", "id": "toolu_1", "name": "call_agent",
                 "input": {"agent": "researcher", "task": "otters"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_task_status",
                 "input": {"uri": "subtask://000001"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "subtask://000001"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such task", "is_error": true},
                {"type": "text", "text": "Keep going."},
            ]},
        ])
    );
    assert_eq!(
        body["tools"],
        json!([
            {"name": "call_agent", "description": "The call_agent tool.", "input_schema": tool("call_agent").parameters},
            {"name": "get_task_status", "description": "The get_task_status tool.",
             "input_schema": tool("get_task_status").parameters},
        ])
    );
    assert_eq!(body["tool_choice"], json!({"type": "auto"}));
}

#[test]
fn same_role_messages_merge_and_blank_text_is_dropped() {
    let bad = call("toolu_9", "call_slm", Value::String("{\"task\": ".into()));
    let req = request(vec![
        ChatMessage::user("One."),
        ChatMessage::user("Two."),
        ChatMessage::assistant("  ", vec![bad.clone()]),
        ChatMessage::tool_result(&bad, "the arguments of `call_slm` must be a JSON object", true),
    ]);
    let body = AnthropicDialect.body("m", &req, &Sampling::default());
    assert_eq!(body.get("system"), None);
    assert_eq!(body.get("tools"), None);
    assert_eq!(body.get("tool_choice"), None);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]},
            // Malformed arguments go back as an empty object: the API wants one.
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "call_slm", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                "content": "the arguments of `call_slm` must be a JSON object", "is_error": true}]},
        ])
    );
}

#[test]
fn tool_choice_follows_the_request() {
    let mut req = request(vec![ChatMessage::user("Go.")]);
    req.tools = vec![tool("call_agent"), tool("call_slm")];
    req.tool_choice = ToolChoice::Required;
    assert_eq!(AnthropicDialect.body("m", &req, &Sampling::default())["tool_choice"], json!({"type": "any"}));
    req.forced_tool = Some("call_slm".into());
    assert_eq!(
        AnthropicDialect.body("m", &req, &Sampling::default())["tool_choice"],
        json!({"type": "tool", "name": "call_slm"})
    );
}

#[test]
fn error_bodies_give_the_servers_message() {
    let dialect = AnthropicDialect;
    let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"},"request_id":"req_011"}"#;
    assert_eq!(dialect.error_message(400, body), "invalid_request_error: max_tokens: Field required");
    let html = format!("<html>{}</html>", "x".repeat(1000));
    let message = dialect.error_message(502, &html);
    assert_eq!(message.chars().count(), 501, "500 characters and an ellipsis");
    assert!(message.starts_with("<html>xxx"));
    assert_eq!(dialect.error_message(503, " "), "HTTP 503 with an empty body");
}
