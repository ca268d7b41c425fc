//! A whole `troupe run` of the shipped `remote` experiment on two kinds of model at once: the
//! planner on an OpenAI-compatible server (the test's own, on 127.0.0.1, speaking OpenAI's
//! documented stream format) and the writer it delegates to on the embedded model.

// The model turn guard is a std mutex held across awaits on purpose: it only orders whole tests.
#![allow(clippy::await_holding_lock)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::http_server::{Reply, Server};

const KEY: &str = "sk-remote-run-test-0123456789";

fn chunk(choices: Value, usage: Value) -> String {
    let event = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "qwen2.5:7b-instruct",
        "choices": choices, "usage": usage,
    });
    format!("data: {event}")
}

/// The planner's first turn: a call to `call_agent`, its arguments in two pieces.
fn delegate() -> Vec<String> {
    let args = r#"{"agent": "writer", "task": "Write a two-sentence invitation to Friday's demo of our new search."}"#;
    let (a, b) = args.split_at(20);
    vec![
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_w1", "type": "function", "function": {"name": "call_agent", "arguments": ""}}]}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": b}}]}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]), Value::Null),
        chunk(json!([]), json!({"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340})),
        "data: [DONE]".to_owned(),
    ]
}

/// The planner's last turn: the answer, streamed.
fn answer() -> Vec<String> {
    vec![
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": "Team, "}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"content": "see you at Friday's search demo."}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]), Value::Null),
        chunk(json!([]), json!({"prompt_tokens": 500, "completion_tokens": 12, "total_tokens": 512})),
        "data: [DONE]".to_owned(),
    ]
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_experiment_runs_on_a_server_and_the_embedded_model() {
    let _turn = crate::local_model::one_model_at_a_time();
    crate::local_model::model_files();
    let server = Server::start([Reply::sse(delegate()), Reply::sse(answer())]).await;
    let root = crate::cli::workbench();
    // Point `big` at the test server, with a key and prices; give the planner two turns: one to
    // delegate, the last to answer once the writer has finished.
    let experiment = root.path().join("experiments/remote.toml");
    let text = fs::read_to_string(&experiment).unwrap();
    let text = text.replace("http://127.0.0.1:11434/v1", &format!("{}/v1", server.url()));
    let text = text.replace("price_input_per_mtok = 0.0", "price_input_per_mtok = 1.0");
    let text =
        text.replace("price_output_per_mtok = 0.0", "price_output_per_mtok = 2.0\napi_key_env = \"TROUPE_TEST_KEY\"");
    fs::write(&experiment, text).unwrap();
    let planner = root.path().join("agents/planner.toml");
    fs::write(&planner, fs::read_to_string(&planner).unwrap().replace("max_turns = 5", "max_turns = 2")).unwrap();

    let dir = root.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_troupe"))
            .env("TROUPE_TEST_KEY", KEY)
            .arg("--root")
            .arg(&dir)
            .args(["run", "remote"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let first = &requests[0];
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(first.body["stream"], json!(true));
    assert_eq!(first.body["model"], json!("qwen2.5:7b-instruct"));
    let tools: Vec<&str> =
        first.body["tools"].as_array().unwrap().iter().filter_map(|t| t["function"]["name"].as_str()).collect();
    assert_eq!(tools, vec!["call_agent", "get_task_status"]);
    // The second request carries the call's result under its id, and the last-turn note with
    // the writer's answer (the embedded model's text).
    let messages = requests[1].body["messages"].as_array().unwrap();
    let tool_result = messages.iter().find(|m| m["role"] == "tool").expect("the tool result is sent back");
    assert_eq!(tool_result["tool_call_id"], json!("call_w1"));
    let note = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(note.contains("- writer: "), "{note}");
    assert!(requests[1].body.get("tools").is_none(), "the last turn offers no tools");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let folder = Path::new(stdout.lines().last().unwrap());
    let report = fs::read_to_string(folder.join("report.md")).unwrap();
    // planner: 800 in × $1 + 52 out × $2 per million.
    assert!(report.contains("| planner | big | completed | 800 / 52 | $0.0009 |"), "{report}");
    assert!(report.contains("| writer | small | completed |"), "{report}");
    assert!(report.contains("$0.0000"), "the embedded model's task costs nothing: {report}");
    for file in files_under(folder) {
        let text = fs::read_to_string(&file).unwrap_or_default();
        assert!(!text.contains(KEY), "the key leaked into {}", file.display());
    }
}
