//! Anthropic's Messages API over real HTTP, against the scripted server of `http_server.rs`:
//! streamed text and tool calls in Anthropic's documented event format (`message_start`,
//! `content_block_*`, `message_delta`, `message_stop`, `ping`, `error`), usage, the request it
//! sends, retries (429, 529, an `overloaded_error` event), error bodies, a cut stream, timeouts
//! and cancellation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use troupe::model::remote::{AnthropicDialect, RemoteModel, RemoteSettings};
use troupe::model::{Model, ModelChunk, ModelError, Sampling};
use troupe::protocol::{ChatMessage, ToolCall, ToolSpec, Usage};

use crate::http_server::{Framing, Reply, Server};
use crate::model_stream::{collect, hello, notices, request, text_of, usages};

const KEY: &str = "sk-ant-test-0123456789";

/// A model at the test server's root, as users configure Anthropic (`base_url` without `/v1`).
fn model(server: &Server, tweak: impl FnOnce(&mut RemoteSettings)) -> RemoteModel {
    let mut settings = RemoteSettings::new("claude-sonnet-4-5");
    settings.base_url = Some(server.url());
    settings.api_key = Some(KEY.to_owned());
    tweak(&mut settings);
    RemoteModel::new(Arc::new(AnthropicDialect), settings).unwrap()
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Get the current weather in a given location".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        }),
    }
}

fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall { id: id.into(), name: name.into(), arguments }
}

fn usage(input_tokens: u64, output_tokens: u64) -> ModelChunk {
    ModelChunk::Usage(Usage { input_tokens, output_tokens, model_calls: 1 })
}

/// One event as Anthropic sends it: the `event:` line, and the same name as the data's `type`.
fn event(data: Value) -> String {
    let name = data["type"].as_str().expect("every event names its type").to_owned();
    format!("event: {name}\ndata: {data}")
}

fn message_start(input_tokens: u64) -> String {
    event(json!({
        "type": "message_start",
        "message": {
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-sonnet-4-5-20250929",
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }))
}

fn ping() -> String {
    event(json!({"type": "ping"}))
}

fn text_start(index: u64) -> String {
    event(json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}))
}

fn text_delta(index: u64, text: &str) -> String {
    event(json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}))
}

fn tool_start(index: u64, id: &str, name: &str) -> String {
    event(json!({
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
    }))
}

fn json_delta(index: u64, partial_json: &str) -> String {
    event(json!({
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial_json},
    }))
}

fn block_stop(index: u64) -> String {
    event(json!({"type": "content_block_stop", "index": index}))
}

fn message_delta(stop_reason: &str, output_tokens: u64) -> String {
    event(json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens},
    }))
}

fn message_stop() -> String {
    event(json!({"type": "message_stop"}))
}

fn error_event(kind: &str, message: &str) -> String {
    event(json!({"type": "error", "error": {"type": kind, "message": message}}))
}

/// Anthropic's error body for an HTTP error status.
fn error_body(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
        .to_string()
}

/// "Hello there!" in three deltas: 25 tokens in (from `message_start`), 15 out (from
/// `message_delta`). Events 3 to 5 are the deltas.
fn text_reply() -> Vec<String> {
    vec![
        message_start(25),
        text_start(0),
        ping(),
        text_delta(0, "Hello"),
        text_delta(0, " there"),
        text_delta(0, "!"),
        block_stop(0),
        message_delta("end_turn", 15),
        message_stop(),
    ]
}

/// `text` split into pieces of `size` characters, as the API streams tool input.
fn pieces(text: &str, size: usize) -> Vec<String> {
    text.chars().collect::<Vec<_>>().chunks(size).map(|piece| piece.iter().collect()).collect()
}

#[tokio::test]
async fn streams_text_deltas_in_order_then_usage() {
    let server = Server::start([Reply::sse(text_reply())]).await;
    let model = model(&server, |_| {});
    let (chunks, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    assert_eq!(
        chunks,
        vec![
            ModelChunk::TextDelta("Hello".into()),
            ModelChunk::TextDelta(" there".into()),
            ModelChunk::TextDelta("!".into()),
            usage(25, 15),
        ]
    );
    let info = model.info();
    assert_eq!((info.provider, info.model.as_str(), info.digest), ("anthropic", "claude-sonnet-4-5", None));
}

#[tokio::test]
async fn events_split_anywhere_across_the_network_decode_alike() {
    // The documented stream, but cut into 7-byte pieces regardless of event, line or UTF-8
    // character boundaries ("°" and "—" are two and three bytes).
    let events = [
        message_start(30),
        text_start(0),
        ping(),
        text_delta(0, "4 °C — "),
        text_delta(0, "drizzle"),
        block_stop(0),
        message_delta("end_turn", 9),
        message_stop(),
    ];
    let bytes: Vec<u8> = events.iter().flat_map(|event| format!("{event}\n\n").into_bytes()).collect();
    let mut reply = Reply::status(200).header("content-type", "text/event-stream").framing(Framing::Chunked);
    for piece in bytes.chunks(7) {
        reply = reply.piece(piece.to_vec(), Duration::from_millis(1));
    }
    let server = Server::start([reply]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    assert_eq!(text_of(&chunks), "4 °C — drizzle");
    assert_eq!(usages(&chunks), vec![Usage { input_tokens: 30, output_tokens: 9, model_calls: 1 }]);
}

#[tokio::test]
async fn a_tool_use_block_streamed_in_fragments_becomes_one_call() {
    // Anthropic's documented tool-use stream: text, then the input in fragments that split
    // keys and values (and an empty first fragment).
    let mut events = vec![
        message_start(472),
        text_start(0),
        ping(),
        text_delta(0, "Okay"),
        text_delta(0, ", let me check."),
        block_stop(0),
        tool_start(1, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
        json_delta(1, ""),
    ];
    let input = r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#;
    events.extend(pieces(input, 4).iter().map(|piece| json_delta(1, piece)));
    events.extend([block_stop(1), message_delta("tool_use", 89), message_stop()]);
    let server = Server::start([Reply::sse(events)]).await;
    let request = request(vec![ChatMessage::user("Weather in San Francisco?")], vec![weather_tool()]);
    let (chunks, err) = collect(model(&server, |_| {}).stream(request, CancellationToken::new())).await;
    assert_eq!(err, None);
    assert_eq!(
        chunks,
        vec![
            ModelChunk::TextDelta("Okay".into()),
            ModelChunk::TextDelta(", let me check.".into()),
            ModelChunk::ToolCall(call(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                json!({"location": "San Francisco, CA", "unit": "fahrenheit"}),
            )),
            usage(472, 89),
        ]
    );
}

#[tokio::test]
async fn two_tool_use_blocks_give_two_calls_in_order() {
    let events = vec![
        message_start(600),
        tool_start(0, "toolu_paris", "get_weather"),
        json_delta(0, ""),
        json_delta(0, "{\"locat"),
        json_delta(0, "ion\": \"Par"),
        json_delta(0, "is\"}"),
        block_stop(0),
        ping(),
        tool_start(1, "toolu_tokyo", "get_weather"),
        json_delta(1, "{\"location\": "),
        json_delta(1, "\"Tokyo\", \"unit\": \"celsius\"}"),
        block_stop(1),
        message_delta("tool_use", 70),
        message_stop(),
    ];
    let server = Server::start([Reply::sse(events)]).await;
    let request = request(vec![ChatMessage::user("Paris and Tokyo?")], vec![weather_tool()]);
    let (chunks, err) = collect(model(&server, |_| {}).stream(request, CancellationToken::new())).await;
    assert_eq!(err, None);
    assert_eq!(
        chunks,
        vec![
            ModelChunk::ToolCall(call("toolu_paris", "get_weather", json!({"location": "Paris"}))),
            ModelChunk::ToolCall(call("toolu_tokyo", "get_weather", json!({"location": "Tokyo", "unit": "celsius"}))),
            usage(600, 70),
        ]
    );
}

#[tokio::test]
async fn sends_the_documented_request() {
    let server = Server::start([Reply::sse(text_reply())]).await;
    let model = model(&server, |settings| {
        settings.extra_headers = vec![("anthropic-beta".into(), "fine-grained-tool-streaming-2025-05-14".into())];
        settings.defaults = Sampling { temperature: Some(0.7), max_tokens: Some(200), ..Sampling::default() };
    });
    let oslo = call("toolu_oslo", "get_weather", json!({"location": "Oslo"}));
    let bergen = call("toolu_bergen", "get_weather", json!({"location": "Bergen", "unit": "celsius"}));
    let mut request = request(
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("Weather in Oslo and Bergen?"),
            ChatMessage::assistant("Checking both.", vec![oslo.clone(), bergen.clone()]),
            ChatMessage::tool_result(&oslo, "4 °C, rain", false),
            ChatMessage::tool_result(&bergen, "the weather service timed out", true),
        ],
        vec![weather_tool()],
    );
    request.sampling.temperature = Some(0.1);
    let (_, err) = collect(model.stream(request, CancellationToken::new())).await;
    assert_eq!(err, None);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/messages"));
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("anthropic-beta"), Some("fine-grained-tool-streaming-2025-05-14"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("accept"), Some("text/event-stream"));
    assert_eq!(sent.header("authorization"), None, "Anthropic takes the key in x-api-key only");
    assert_eq!(
        sent.body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 200,
            "stream": true,
            // The request's own setting wins over the alias's 0.7.
            "temperature": 0.1,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo and Bergen?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_oslo", "name": "get_weather", "input": {"location": "Oslo"}},
                    {"type": "tool_use", "id": "toolu_bergen", "name": "get_weather",
                     "input": {"location": "Bergen", "unit": "celsius"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_oslo", "content": "4 °C, rain"},
                    {"type": "tool_result", "tool_use_id": "toolu_bergen",
                     "content": "the weather service timed out", "is_error": true},
                ]},
            ],
            "tools": [{
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": weather_tool().parameters,
            }],
            "tool_choice": {"type": "auto"},
        })
    );
}

#[tokio::test]
async fn a_base_url_ending_in_v1_reaches_the_same_endpoint() {
    let server = Server::start([Reply::sse(text_reply())]).await;
    let model = model(&server, |settings| settings.base_url = Some(format!("{}/v1/", server.url())));
    let (_, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    assert_eq!(server.requests()[0].path, "/v1/messages");
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_a_notice() {
    let body = error_body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit");
    let server = Server::start([Reply::json(429, &body).header("retry-after", "1"), Reply::sse(text_reply())]).await;
    let started = Instant::now();
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited as the server asked");
    assert_eq!(notices(&chunks), vec!["retrying in 1.0 s after HTTP 429 (attempt 2 of 4)"]);
    assert!(matches!(chunks[0], ModelChunk::Notice(_)), "the notice comes before the reply");
    assert_eq!(text_of(&chunks), "Hello there!");
    assert_eq!(usages(&chunks).len(), 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the same request is sent again");
}

#[tokio::test]
async fn an_http_529_overloaded_error_is_retried() {
    let server =
        Server::start([Reply::json(529, &error_body("overloaded_error", "Overloaded")), Reply::sse(text_reply())])
            .await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    let notices = notices(&chunks);
    assert_eq!(notices.len(), 1, "{notices:?}");
    // No `retry-after`: full-jitter backoff below 0.5 s.
    assert!(notices[0].starts_with("retrying in 0."), "{notices:?}");
    assert!(notices[0].ends_with("after HTTP 529 (attempt 2 of 4)"), "{notices:?}");
    assert_eq!(text_of(&chunks), "Hello there!");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn an_overloaded_error_event_before_any_content_is_retried() {
    // HTTP 200, then the stream fails before the reply begins: nothing reached the reader, so
    // the transport may and does send the request again.
    let overloaded = Reply::sse([message_start(25), ping(), error_event("overloaded_error", "Overloaded")]);
    let server = Server::start([overloaded, Reply::sse(text_reply())]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    let notices = notices(&chunks);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].ends_with("after a broken response (attempt 2 of 4)"), "{notices:?}");
    assert_eq!(
        chunks[1..],
        [
            ModelChunk::TextDelta("Hello".into()),
            ModelChunk::TextDelta(" there".into()),
            ModelChunk::TextDelta("!".into()),
            usage(25, 15),
        ],
        "the reply once, with the usage of the successful attempt only"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn an_error_event_after_text_fails_without_retrying() {
    let events =
        [message_start(25), text_start(0), text_delta(0, "Hello"), error_event("overloaded_error", "Overloaded")];
    let server = Server::start([Reply::sse(events), Reply::sse(text_reply())]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, Some(ModelError::Provider("anthropic: overloaded_error: Overloaded".into())));
    assert_eq!(chunks, vec![ModelChunk::TextDelta("Hello".into())], "no notice, no usage");
    assert_eq!(server.requests().len(), 1, "a started reply is not sent again");
}

#[tokio::test]
async fn retries_give_up_after_max_retries() {
    let overloaded = || Reply::json(529, &error_body("overloaded_error", "Overloaded"));
    let server = Server::start([overloaded(), overloaded()]).await;
    let (chunks, err) =
        collect(model(&server, |settings| settings.max_retries = 1).stream(hello(), CancellationToken::new())).await;
    assert_eq!(
        err,
        Some(ModelError::Provider(
            "HTTP 529 from anthropic: overloaded_error: Overloaded (gave up after 2 attempts)".into()
        ))
    );
    assert_eq!(notices(&chunks).len(), 1);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_400_surfaces_anthropics_message_without_retrying() {
    let body = error_body("invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\"");
    let server = Server::start([Reply::json(400, &body), Reply::sse(text_reply())]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(
        err,
        Some(ModelError::Provider(
            "HTTP 400 from anthropic: invalid_request_error: messages: roles must alternate between \"user\" and \
             \"assistant\""
                .into()
        ))
    );
    assert!(chunks.is_empty(), "{chunks:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_error_never_quotes_the_key() {
    // A proxy that echoes the key it refused.
    let body = error_body("authentication_error", &format!("invalid x-api-key: {KEY}"));
    let server = Server::start([Reply::json(401, &body)]).await;
    let (_, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(
        err,
        Some(ModelError::Provider(
            "HTTP 401 from anthropic: authentication_error: invalid x-api-key: <api key>".into()
        ))
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_stream_cut_halfway_is_an_error_not_a_retry() {
    // The connection closes after "Hello there", mid-body (chunked, no terminating chunk).
    let server = Server::start([Reply::sse(text_reply()).cut_after(5), Reply::sse(text_reply())]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert!(message.contains("broke off") || message.contains("cut off"), "{message}");
    assert_eq!(
        chunks,
        vec![ModelChunk::TextDelta("Hello".into()), ModelChunk::TextDelta(" there".into())],
        "what came before the cut was streamed, and no usage follows"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_stream_cut_before_the_reply_began_is_retried() {
    // Only `message_start` and a ping came before the cut: nothing reached the reader.
    let server = Server::start([Reply::sse(text_reply()).cut_after(3), Reply::sse(text_reply())]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    let notices = notices(&chunks);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].ends_with("after a broken response (attempt 2 of 4)"), "{notices:?}");
    assert_eq!(text_of(&chunks), "Hello there!");
    assert_eq!(usages(&chunks), vec![Usage { input_tokens: 25, output_tokens: 15, model_calls: 1 }]);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_whole_body_without_message_stop_is_cut_too() {
    // The body is complete as HTTP goes, but ends before `message_delta` and `message_stop`.
    let body: String = text_reply()[..5].iter().map(|event| format!("{event}\n\n")).collect();
    let reply = Reply::status(200)
        .header("content-type", "text/event-stream")
        .framing(Framing::ContentLength)
        .piece(body, Duration::ZERO);
    let server = Server::start([reply, Reply::sse(text_reply())]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert!(message.contains("before `message_stop`"), "{message}");
    assert_eq!(text_of(&chunks), "Hello there");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_slow_first_byte_fails_on_the_first_byte_timeout() {
    let server = Server::start([Reply::sse(text_reply()).first_byte_after(Duration::from_secs(30))]).await;
    let model = model(&server, |settings| {
        settings.timeouts.first_byte = Duration::from_millis(300);
        settings.max_retries = 0;
    });
    let started = Instant::now();
    let (chunks, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, Some(ModelError::Provider("no response from anthropic within 0.3 s (first-byte timeout)".into())));
    assert!(chunks.is_empty());
    // Generous: the alternative is waiting out a 30 s or 60 s delay.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn headers_at_once_but_no_event_in_time_is_a_first_byte_timeout_too() {
    // The status line and headers come at once; the first event only after 3 s.
    let events = text_reply();
    let mut reply = Reply::status(200).header("content-type", "text/event-stream").framing(Framing::Chunked);
    reply = reply.piece(format!("{}\n\n", events[0]), Duration::from_secs(30));
    let server = Server::start([reply]).await;
    let model = model(&server, |settings| {
        settings.timeouts.first_byte = Duration::from_millis(300);
        settings.max_retries = 0;
    });
    let started = Instant::now();
    let (chunks, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, Some(ModelError::Provider("no response from anthropic within 0.3 s (first-byte timeout)".into())));
    assert!(chunks.is_empty());
    // Generous: the alternative is waiting out a 30 s or 60 s delay.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_slow_first_byte_is_retried_when_retries_are_left() {
    let server =
        Server::start([Reply::sse(text_reply()).first_byte_after(Duration::from_secs(3)), Reply::sse(text_reply())])
            .await;
    let model = model(&server, |settings| settings.timeouts.first_byte = Duration::from_millis(300));
    let (chunks, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    assert!(notices(&chunks)[0].ends_with("after a timeout (attempt 2 of 4)"), "{chunks:?}");
    assert_eq!(text_of(&chunks), "Hello there!");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_stalled_stream_fails_on_the_between_chunks_timeout() {
    let events = text_reply();
    let reply = Reply::sse(&events[..5]).piece(format!("{}\n\n", events[5]), Duration::from_secs(3));
    let server = Server::start([reply]).await;
    let model = model(&server, |settings| settings.timeouts.between_chunks = Duration::from_millis(300));
    let (chunks, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    assert_eq!(
        err,
        Some(ModelError::Provider(
            "the stream from anthropic stalled: nothing for 0.3 s (between-chunks timeout)".into()
        ))
    );
    assert_eq!(text_of(&chunks), "Hello there");
    assert_eq!(server.requests().len(), 1, "a started reply is not sent again");
}

#[tokio::test]
async fn cancellation_mid_stream_ends_at_once() {
    let events = text_reply();
    // Up to the first delta now, the rest half a minute later.
    let mut reply = Reply::sse(&events[..4]);
    for event in &events[4..] {
        reply = reply.piece(format!("{event}\n\n"), Duration::from_secs(30));
    }
    let server = Server::start([reply]).await;
    let cancel = CancellationToken::new();
    let mut stream = model(&server, |_| {}).stream(hello(), cancel.clone());
    assert_eq!(stream.next().await, Some(Ok(ModelChunk::TextDelta("Hello".into()))));
    let started = Instant::now();
    cancel.cancel();
    assert_eq!(stream.next().await, Some(Err(ModelError::Cancelled)));
    assert_eq!(stream.next().await, None);
    // Generous: the alternative is waiting out a 30 s or 60 s delay.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn cancellation_during_a_retry_wait_ends_at_once() {
    let body = error_body("rate_limit_error", "Number of requests has exceeded your per-minute rate limit");
    let server = Server::start([Reply::json(429, &body).header("retry-after", "60")]).await;
    let cancel = CancellationToken::new();
    let mut stream = model(&server, |_| {}).stream(hello(), cancel.clone());
    let Some(Ok(ModelChunk::Notice(notice))) = stream.next().await else { panic!("expected a notice") };
    assert_eq!(notice, "retrying in 60.0 s after HTTP 429 (attempt 2 of 4)");
    let started = Instant::now();
    cancel.cancel();
    assert_eq!(stream.next().await, Some(Err(ModelError::Cancelled)));
    assert_eq!(stream.next().await, None);
    // Generous: the alternative is waiting out a 30 s or 60 s delay.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(server.requests().len(), 1);
}
