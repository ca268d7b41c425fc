//! The OpenAI-compatible provider over real HTTP, against the scripted server of
//! `http_server.rs`: streamed text and tool calls in OpenAI's documented chunk format, usage,
//! retries, timeouts, a cut stream, error bodies, cancellation, and the requests it sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use troupe::model::remote::{OpenAiDialect, RemoteModel, RemoteSettings};
use troupe::model::{Model, ModelChunk, ModelError, Sampling};
use troupe::protocol::{ChatMessage, ToolCall, ToolSpec, Usage};

use crate::http_server::{Framing, Reply, Server};
use crate::model_stream::{calls, collect, hello, notices, request, text_of, usages};

const KEY: &str = "sk-test-0123456789";

fn model(server: &Server, tweak: impl FnOnce(&mut RemoteSettings)) -> RemoteModel {
    let mut settings = RemoteSettings::new("gpt-4o-mini");
    settings.base_url = Some(format!("{}/v1", server.url()));
    settings.api_key = Some(KEY.to_owned());
    tweak(&mut settings);
    RemoteModel::new(Arc::new(OpenAiDialect), settings).unwrap()
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        }),
    }
}

/// A `chat.completion.chunk` event as OpenAI documents it, with `choices[0]` given.
fn chunk(choice: Value) -> String {
    let event = json!({
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1_694_268_190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [choice],
        "usage": null,
    });
    format!("data: {event}")
}

fn delta(delta: Value) -> String {
    chunk(json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}))
}

fn finish(reason: &str) -> String {
    chunk(json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}))
}

/// The last chunk when `stream_options.include_usage` is set: no choices, the counts.
fn usage_chunk(prompt: u64, completion: u64) -> String {
    let event = json!({
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1_694_268_190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    });
    format!("data: {event}")
}

const DONE: &str = "data: [DONE]";

/// "Hello there!" in three deltas, then the finish reason, usage and `[DONE]`.
fn text_reply() -> Vec<String> {
    vec![
        delta(json!({"role": "assistant", "content": "", "refusal": null})),
        delta(json!({"content": "Hello"})),
        delta(json!({"content": " there"})),
        delta(json!({"content": "!"})),
        finish("stop"),
        usage_chunk(12, 3),
        DONE.to_owned(),
    ]
}

fn tool_fragment(index: u64, id: Option<&str>, name: Option<&str>, arguments: &str) -> String {
    let mut call = json!({"index": index, "function": {"arguments": arguments}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    delta(json!({"tool_calls": [call]}))
}

#[tokio::test]
async fn streams_text_and_usage() {
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
            ModelChunk::Usage(Usage { input_tokens: 12, output_tokens: 3, model_calls: 1 }),
        ]
    );
    let info = model.info();
    assert_eq!((info.provider, info.model.as_str(), info.digest), ("openai", "gpt-4o-mini", None));
}

#[tokio::test]
async fn sends_the_documented_request() {
    let server = Server::start([Reply::sse(text_reply())]).await;
    let model = model(&server, |settings| {
        settings.extra_headers = vec![("OpenAI-Organization".into(), "org-test".into())];
        settings.defaults = Sampling { temperature: Some(0.7), max_tokens: Some(200), ..Sampling::default() };
    });
    let earlier =
        ToolCall { id: "call_abc".into(), name: "get_weather".into(), arguments: json!({"location": "Oslo"}) };
    let mut request = request(
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("Weather in Oslo?"),
            ChatMessage::assistant("", vec![earlier.clone()]),
            ChatMessage::tool_result(&earlier, "4 °C, rain", false),
        ],
        vec![weather_tool()],
    );
    request.sampling.temperature = Some(0.1);
    let (_, err) = collect(model.stream(request, CancellationToken::new())).await;
    assert_eq!(err, None);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(sent.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("openai-organization"), Some("org-test"));
    let body = &sent.body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["temperature"], json!(0.1), "the request's own setting wins");
    assert_eq!(body["max_tokens"], 200, "the alias's default fills the gap");
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        }}])
    );
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_abc", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Oslo\"}"},
            }]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "4 °C, rain"},
        ])
    );
}

#[tokio::test]
async fn a_tool_call_split_across_many_chunks_is_assembled() {
    let arguments = r#"{"location": "Boston, MA", "unit": "celsius"}"#;
    let mut events = vec![
        delta(json!({"role": "assistant", "content": null})),
        tool_fragment(0, Some("call_DdmO9pD3xa9XTPNJ32zg2hcA"), Some("get_weather"), ""),
    ];
    // Three characters a chunk, as the API streams arguments in small pieces.
    let pieces: Vec<String> =
        arguments.chars().collect::<Vec<_>>().chunks(3).map(|piece| piece.iter().collect()).collect();
    events.extend(pieces.iter().map(|piece| tool_fragment(0, None, None, piece)));
    events.extend([finish("tool_calls"), usage_chunk(80, 21), DONE.to_owned()]);
    let server = Server::start([Reply::sse(events)]).await;
    let (chunks, err) = collect(
        model(&server, |_| {})
            .stream(request(vec![ChatMessage::user("Boston?")], vec![weather_tool()]), CancellationToken::new()),
    )
    .await;
    assert_eq!(err, None);
    assert_eq!(
        chunks,
        vec![
            ModelChunk::ToolCall(ToolCall {
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                name: "get_weather".into(),
                arguments: json!({"location": "Boston, MA", "unit": "celsius"}),
            }),
            ModelChunk::Usage(Usage { input_tokens: 80, output_tokens: 21, model_calls: 1 }),
        ]
    );
}

#[tokio::test]
async fn two_parallel_tool_calls_interleave() {
    let events = vec![
        delta(json!({"role": "assistant", "content": null})),
        tool_fragment(0, Some("call_paris"), Some("get_weather"), ""),
        tool_fragment(0, None, None, "{\"locat"),
        tool_fragment(1, Some("call_tokyo"), Some("get_weather"), ""),
        tool_fragment(1, None, None, "{\"location\": "),
        tool_fragment(0, None, None, "ion\": \"Paris\"}"),
        tool_fragment(1, None, None, "\"Tokyo\"}"),
        finish("tool_calls"),
        usage_chunk(90, 40),
        DONE.to_owned(),
    ];
    let server = Server::start([Reply::sse(events)]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    let call = |id: &str, city: &str| ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: json!({"location": city}),
    };
    assert_eq!(calls(&chunks), vec![call("call_paris", "Paris"), call("call_tokyo", "Tokyo")]);
    assert_eq!(usages(&chunks).len(), 1);
}

#[tokio::test]
async fn malformed_tool_arguments_arrive_as_a_string() {
    let events = vec![
        tool_fragment(0, Some("call_1"), Some("get_weather"), "{\"location\": \"Par"),
        tool_fragment(0, None, None, "is\""),
        finish("tool_calls"),
        DONE.to_owned(),
    ];
    let server = Server::start([Reply::sse(events)]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    assert_eq!(calls(&chunks)[0].arguments, Value::String("{\"location\": \"Paris\"".into()));
}

#[tokio::test]
async fn without_a_usage_chunk_usage_is_estimated() {
    let events = vec![delta(json!({"content": "Hello, world"})), finish("stop"), DONE.to_owned()];
    let server = Server::start([Reply::sse(events)]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    // "Say hello." is 10 characters (3 tokens at four a token); "Hello, world" is 12 (3).
    assert_eq!(usages(&chunks), vec![Usage { input_tokens: 3, output_tokens: 3, model_calls: 1 }]);
    assert_eq!(notices(&chunks), Vec::<&str>::new(), "the estimate is not announced");
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_a_notice() {
    let server = Server::start([
        Reply::json(429, r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#).header("retry-after", "1"),
        Reply::sse(text_reply()),
    ])
    .await;
    let started = Instant::now();
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited as the server asked");
    assert_eq!(notices(&chunks), vec!["retrying in 1.0 s after HTTP 429 (attempt 2 of 4)"]);
    assert!(matches!(chunks[0], ModelChunk::Notice(_)), "the notice comes before the reply");
    assert_eq!(text_of(&chunks), "Hello there!");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_500_is_retried() {
    let server = Server::start([
        Reply::json(500, r#"{"error":{"message":"The server had an error while processing your request."}}"#),
        Reply::sse(text_reply()),
    ])
    .await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    let notices = notices(&chunks);
    assert_eq!(notices.len(), 1);
    assert!(notices[0].ends_with("after HTTP 500 (attempt 2 of 4)"), "{notices:?}");
    assert_eq!(text_of(&chunks), "Hello there!");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn retries_give_up_after_max_retries() {
    let busy = || Reply::json(503, r#"{"error":{"message":"overloaded"}}"#).header("retry-after", "0");
    let server = Server::start([busy(), busy(), busy()]).await;
    let (chunks, err) =
        collect(model(&server, |settings| settings.max_retries = 2).stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert_eq!(message, "HTTP 503 from openai: overloaded (gave up after 3 attempts)");
    assert_eq!(notices(&chunks).len(), 2);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_400_surfaces_its_message_without_retrying() {
    let body = r#"{"error":{"message":"Invalid value for 'tool_choice': 'required' is only allowed when 'tools' are specified.","type":"invalid_request_error","param":"tool_choice","code":null}}"#;
    let server = Server::start([Reply::json(400, body), Reply::sse(text_reply())]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    assert_eq!(
        err,
        Some(ModelError::Provider(
            "HTTP 400 from openai: Invalid value for 'tool_choice': 'required' is only allowed when 'tools' are specified."
                .into()
        ))
    );
    assert!(chunks.is_empty());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_error_never_quotes_the_key() {
    // A server (or proxy) that echoes the key it refused.
    let body = format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}."}}}}"#);
    let server = Server::start([Reply::json(401, &body)]).await;
    let (_, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert!(!message.contains(KEY), "{message}");
    assert_eq!(message, "HTTP 401 from openai: Incorrect API key provided: <api key>.");
}

#[tokio::test]
async fn a_stream_cut_halfway_is_an_error_not_a_retry() {
    let server = Server::start([Reply::sse(text_reply()).cut_after(3), Reply::sse(text_reply())]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert!(message.contains("broke off") || message.contains("cut off"), "{message}");
    assert_eq!(text_of(&chunks), "Hello there", "what came before the cut was streamed");
    assert_eq!(notices(&chunks), Vec::<&str>::new());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_content_length_body_ending_early_is_cut_too() {
    let body: String = text_reply()[..3].iter().map(|event| format!("{event}\n\n")).collect();
    let reply = Reply::status(200)
        .header("content-type", "text/event-stream")
        .framing(Framing::ContentLength)
        .piece(body, Duration::ZERO);
    // Complete as sent, but without a finish reason or `[DONE]`.
    let server = Server::start([reply]).await;
    let (chunks, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert!(message.contains("cut off"), "{message}");
    assert_eq!(text_of(&chunks), "Hello there");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_json_answer_to_a_streaming_request_is_not_retried() {
    let body = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#;
    let server = Server::start([Reply::json(200, body), Reply::json(200, body)]).await;
    let (_, err) = collect(model(&server, |_| {}).stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert!(message.starts_with("openai answered with JSON instead of a stream of events"), "{message}");
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
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert_eq!(message, "no response from openai within 0.3 s (first-byte timeout)");
    assert!(chunks.is_empty());
    // Generous: the alternative is waiting out a 30 s or 60 s delay.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_slow_first_byte_is_retried_when_retries_are_left() {
    let server =
        Server::start([Reply::sse(text_reply()).first_byte_after(Duration::from_secs(3)), Reply::sse(text_reply())])
            .await;
    let model = model(&server, |settings| settings.timeouts.first_byte = Duration::from_millis(300));
    let (chunks, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    assert_eq!(err, None);
    assert!(notices(&chunks)[0].contains("after a timeout (attempt 2 of 4)"), "{chunks:?}");
    assert_eq!(text_of(&chunks), "Hello there!");
}

#[tokio::test]
async fn a_stalled_stream_fails_on_the_between_chunks_timeout() {
    let events = text_reply();
    let reply = Reply::sse(&events[..3]).piece(format!("{}\n\n", events[3]), Duration::from_secs(3));
    let server = Server::start([reply]).await;
    let model = model(&server, |settings| settings.timeouts.between_chunks = Duration::from_millis(300));
    let (chunks, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert!(message.contains("between-chunks timeout"), "{message}");
    assert_eq!(text_of(&chunks), "Hello there");
    assert_eq!(server.requests().len(), 1, "a started reply is not sent again");
}

#[tokio::test]
async fn cancellation_mid_stream_ends_at_once() {
    let events = text_reply();
    // Two deltas now, the rest half a minute later.
    let mut reply = Reply::sse(&events[..2]);
    for event in &events[2..] {
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
}

#[tokio::test]
async fn cancellation_during_a_retry_wait_ends_at_once() {
    let server = Server::start([Reply::json(429, "{}").header("retry-after", "60")]).await;
    let cancel = CancellationToken::new();
    let mut stream = model(&server, |_| {}).stream(hello(), cancel.clone());
    let Some(Ok(ModelChunk::Notice(notice))) = stream.next().await else { panic!("expected a notice") };
    assert!(notice.starts_with("retrying in 60.0 s after HTTP 429"), "{notice}");
    let started = Instant::now();
    cancel.cancel();
    assert_eq!(stream.next().await, Some(Err(ModelError::Cancelled)));
    // Generous: the alternative is waiting out a 30 s or 60 s delay.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_naming_the_place() {
    // A port that was free a moment ago: nothing listens there now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut settings = RemoteSettings::new("gpt-4o-mini");
    settings.base_url = Some(format!("http://127.0.0.1:{port}/v1"));
    settings.max_retries = 0;
    let model = RemoteModel::new(Arc::new(OpenAiDialect), settings).unwrap();
    let (_, err) = collect(model.stream(hello(), CancellationToken::new())).await;
    let Some(ModelError::Provider(message)) = err else { panic!("expected a provider error, got {err:?}") };
    assert!(
        message.starts_with(&format!("cannot reach openai at http://127.0.0.1:{port}/v1/chat/completions: ")),
        "{message}"
    );
}
