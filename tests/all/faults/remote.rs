//! Fault cases: see `faults/mod.rs`.
//!
//! Remote models that fail or turn hostile, each through a whole run (the driver with an
//! OpenAI-compatible model on the scripted server of `http_server.rs`, on 127.0.0.1): what the
//! user gets is the run's end, the root's status and the reason it gives. Timeouts are set to
//! a fraction of a second so that a case takes about as long as its fault.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use troupe::config::Limits;
use troupe::model::remote::sse::{MAX_EVENT_BYTES, MAX_LINE_BYTES};
use troupe::model::remote::{OpenAiDialect, RemoteModel, RemoteSettings};
use troupe::model::{Model, ModelTable};
use troupe::protocol::{EventBody, RunStatus, TaskStatus};
use troupe::runtime::RunConfig;

use crate::http_server::{Reply, Server};
use crate::runtime::{Run, expert, run};

/// One `chat.completion.chunk` event with `choices[0]` given.
fn chunk(choice: Value) -> String {
    let event = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]});
    format!("data: {event}")
}

fn delta(text: &str) -> String {
    chunk(json!({"index": 0, "delta": {"content": text}, "finish_reason": null}))
}

fn finish(reason: &str) -> String {
    chunk(json!({"index": 0, "delta": {}, "finish_reason": reason}))
}

/// "All done." in two deltas, then the end of the stream.
fn answer() -> Vec<String> {
    vec![delta("All "), delta("done."), finish("stop"), "data: [DONE]".to_owned()]
}

/// A run of one expert (`solo`, with `list_tasks`) on an OpenAI-compatible model at `server`,
/// with settings `tweak`ed (quick timeouts, retries).
async fn run_on(server: &Server, tweak: impl FnOnce(&mut RemoteSettings)) -> Run {
    let mut settings = RemoteSettings::new("gpt-test");
    settings.base_url = Some(format!("{}/v1", server.url()));
    settings.api_key = Some("sk-fault-0123456789".to_owned());
    tweak(&mut settings);
    let model: Arc<dyn Model> = Arc::new(RemoteModel::new(Arc::new(OpenAiDialect), settings).unwrap());
    let solo = expert("solo", &["list_tasks"], &[]);
    let config = RunConfig {
        run_id: "fault-run".into(),
        experiment: "faults".into(),
        root_agent: "solo".into(),
        task: "Say something.".into(),
        agents: [(solo.name.clone(), solo)].into(),
        limits: Limits { max_turns_per_agent: 3, ..Limits::default() },
        models: ModelTable::from_models([("m".to_owned(), model)]),
        slm_alias: "m".into(),
        salt: 7,
        prices: Default::default(),
        routing: None,
        seed: None,
        memory: None,
        mcp: None,
        external_root: false,
    };
    run(config).await
}

/// The run failed, and the root says why: its error, which must contain each of `says`.
fn assert_failed_saying(run: &Run, says: &[&str]) -> String {
    assert_eq!(run.summary.status, RunStatus::Failed, "{:?}", run.summary);
    let error = run.summary.error.clone().unwrap_or_default();
    for part in says {
        assert!(error.contains(part), "the error should say `{part}`: {error}");
    }
    let root_failed = run.events.iter().any(|e| {
        matches!(&e.body, EventBody::TaskStatus { status: TaskStatus::Failed, error: Some(message), .. }
            if message == &error)
    });
    assert!(root_failed, "the root task failed with that reason");
    error
}

/// Status lines the run showed (retry notices among them).
fn status_messages(run: &Run) -> Vec<String> {
    run.events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::TaskStatus { status_message: Some(message), .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_server_silent_before_the_first_byte_fails_the_task_on_the_first_byte_timeout() {
    let server = Server::start([Reply::sse(answer()).first_byte_after(Duration::from_secs(30))]).await;
    let run = run_on(&server, |s| {
        s.timeouts.first_byte = Duration::from_millis(300);
        s.max_retries = 0;
    })
    .await;
    assert_failed_saying(&run, &["model error: no response from openai within 0.3 s (first-byte timeout)"]);
}

#[tokio::test]
async fn a_stream_that_stalls_between_chunks_fails_the_task_on_the_between_chunks_timeout() {
    let stalled = Reply::sse(&answer()[..1]).piece(format!("{}\n\n", delta("never")), Duration::from_secs(30));
    let server = Server::start([stalled]).await;
    let run = run_on(&server, |s| s.timeouts.between_chunks = Duration::from_millis(300)).await;
    assert_failed_saying(&run, &["the stream from openai stalled", "between-chunks timeout"]);
    assert_eq!(server.requests().len(), 1, "a reply that began is never asked for twice");
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_the_run_completes() {
    let limited = Reply::json(429, r#"{"error":{"message":"Rate limit reached"}}"#).header("retry-after", "1");
    let server = Server::start([limited, Reply::sse(answer())]).await;
    let run = run_on(&server, |_| {}).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{:?}", run.summary);
    assert_eq!(run.summary.result.as_deref(), Some("All done."));
    let notices = status_messages(&run);
    assert!(notices.iter().any(|m| m == "retrying in 1.0 s after HTTP 429 (attempt 2 of 4)"), "{notices:?}");
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_with_backoff_and_the_run_completes() {
    let limited = Reply::json(429, r#"{"error":{"message":"Rate limit reached"}}"#);
    let server = Server::start([limited, Reply::sse(answer())]).await;
    let run = run_on(&server, |_| {}).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{:?}", run.summary);
    let notices = status_messages(&run);
    assert!(notices.iter().any(|m| m.ends_with("after HTTP 429 (attempt 2 of 4)")), "{notices:?}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_429_asking_for_an_hour_fails_the_task_at_once_with_the_servers_message() {
    let limited = Reply::json(429, r#"{"error":{"message":"Quota exhausted"}}"#).header("retry-after", "3600");
    let server = Server::start([limited, Reply::sse(answer())]).await;
    let run = run_on(&server, |_| {}).await;
    assert_failed_saying(&run, &["HTTP 429 from openai: Quota exhausted"]);
    assert_eq!(server.requests().len(), 1, "troupe does not wait an hour");
}

#[tokio::test]
async fn a_server_answering_5xx_forever_fails_the_task_after_its_retries() {
    let busy = || Reply::json(503, r#"{"error":{"message":"overloaded"}}"#);
    let server = Server::start((0..10).map(|_| busy())).await;
    let run = run_on(&server, |s| s.max_retries = 2).await;
    assert_failed_saying(&run, &["HTTP 503 from openai: overloaded (gave up after 3 attempts)"]);
    assert_eq!(server.requests().len(), 3, "no more than max_retries retries");
}

#[tokio::test]
async fn a_stream_cut_mid_reply_fails_the_task_without_repeating_the_reply() {
    let server = Server::start([Reply::sse(answer()).cut_after(2), Reply::sse(answer())]).await;
    let run = run_on(&server, |_| {}).await;
    let error = assert_failed_saying(&run, &["model error:"]);
    assert!(error.contains("broke off") || error.contains("cut off"), "{error}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn invalid_tool_call_json_is_a_tool_error_the_model_reads_and_the_run_goes_on() {
    let call = |arguments: &str, id: Option<&str>| {
        let mut call = json!({"index": 0, "function": {"arguments": arguments}});
        if let Some(id) = id {
            call["id"] = json!(id);
            call["type"] = json!("function");
            call["function"]["name"] = json!("list_tasks");
        }
        chunk(json!({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}))
    };
    let broken = [
        call("", Some("call_1")),
        call("{\"filter\": [unclosed", None),
        finish("tool_calls"),
        "data: [DONE]".to_owned(),
    ];
    let server = Server::start([Reply::sse(broken), Reply::sse(answer())]).await;
    let run = run_on(&server, |_| {}).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{:?}", run.summary);
    let (result, is_error) = run
        .events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::ToolResult { result, is_error, .. } => Some((result.clone(), *is_error)),
            _ => None,
        })
        .expect("the call was answered");
    assert!(is_error, "{result}");
    assert!(result.as_str().unwrap_or_default().contains("must be a JSON object"), "{result}");
    let second = &server.requests()[1].body;
    let told = second["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").expect("a tool message");
    assert_eq!(told["tool_call_id"], "call_1");
    assert!(told["content"].as_str().unwrap_or_default().contains("must be a JSON object"), "{told}");
}

#[tokio::test]
async fn an_endless_sse_line_fails_the_task_at_the_line_limit_without_reading_on() {
    // `data: ` and then `x` for up to 64 MiB, never a line break.
    let endless =
        Reply::sse(Vec::<String>::new()).piece("data: ", Duration::ZERO).piece(vec![b'x'; 64 * 1024], Duration::ZERO);
    let server = Server::start([endless.repeat_last(1024)]).await;
    let run = run_on(&server, |_| {}).await;
    assert_failed_saying(&run, &["the stream from openai was refused", "longer than 4 MiB"]);
    // What was read stopped at the limit; the kernel's buffers may have taken some more.
    let (sent, whole) = (server.body_bytes_sent(), 6 + 1025 * 64 * 1024);
    assert!(sent > MAX_LINE_BYTES && sent < whole, "troupe stopped reading: the server sent {sent} of {whole} bytes");
    assert_eq!(server.requests().len(), 1, "a refused stream is not asked for again");
}

#[tokio::test]
async fn data_lines_without_a_blank_line_fail_the_task_at_the_event_limit() {
    // Short `data:` lines, each whole, but never the blank line that ends an event.
    let mut line = b"data: ".to_vec();
    line.extend(std::iter::repeat_n(b'y', 1018));
    line.push(b'\n');
    let endless = Reply::sse(Vec::<String>::new()).piece(line, Duration::ZERO);
    let server = Server::start([endless.repeat_last(64 * 1024)]).await;
    let run = run_on(&server, |_| {}).await;
    assert_failed_saying(&run, &["the stream from openai was refused", "more than 4 MiB of data"]);
    let (sent, whole) = (server.body_bytes_sent(), 1025 * (64 * 1024 + 1));
    assert!(sent > MAX_EVENT_BYTES && sent < whole, "troupe stopped reading: the server sent {sent} of {whole} bytes");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

#[tokio::test]
async fn base_url_credentials_are_never_printed_nor_written() {
    // Two aliases with credentials in `base_url`: one on a server that refuses (an HTTP error),
    // one where nothing listens (a connection error whose message names the place).
    let server = Server::start([Reply::json(401, r#"{"error":{"message":"bad credentials"}}"#)]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let address = server.url().trim_start_matches("http://").to_owned();
    let files = [
        (
            "troupe.toml".to_owned(),
            format!(
                "[models.refused]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"http://alice:pa55-refused@{address}/v1\"\nmax_retries = 0\n\n\
                 [models.nobody]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"http://bob:pa55-nobody@127.0.0.1:{closed}/v1\"\nmax_retries = 0\n"
            ),
        ),
        ("agents/refused.toml".to_owned(), "model = \"refused\"\n".to_owned()),
        ("agents/nobody.toml".to_owned(), "model = \"nobody\"\n".to_owned()),
        ("experiments/refused.toml".to_owned(), "root = \"refused\"\ntask = \"Hello?\"\n".to_owned()),
        ("experiments/nobody.toml".to_owned(), "root = \"nobody\"\ntask = \"Hello?\"\n".to_owned()),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let root = dir.path().to_owned();
    let outputs = tokio::task::spawn_blocking(move || {
        ["refused", "nobody"].map(|experiment| {
            Command::new(env!("CARGO_BIN_EXE_troupe"))
                .arg("--root")
                .arg(&root)
                .args(["run", experiment])
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
    })
    .await
    .unwrap();
    let mut printed = String::new();
    for output in &outputs {
        assert_ne!(output.status.code(), Some(0), "the run failed");
        printed.push_str(&String::from_utf8_lossy(&output.stdout));
        printed.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    let mut written = String::new();
    for file in files_under(&dir.path().join("findings")) {
        written.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
    }
    for secret in ["pa55-refused", "pa55-nobody", "alice:", "bob:"] {
        assert!(!printed.contains(secret), "`{secret}` was printed: {printed}");
        assert!(!written.contains(secret), "`{secret}` was written to the run folder");
    }
    assert!(written.contains("HTTP 401 from openai: bad credentials"), "the error itself is kept");
    assert!(written.contains(&format!("http://***@127.0.0.1:{closed}/v1")), "the place is named, hidden");
    assert!(written.contains(&format!("base_url = \"http://***@{address}/v1\"")), "the config snapshot hides it too");
}
