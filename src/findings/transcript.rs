//! `transcript.md`: the run's conversations as a tree a person can read, each task a heading
//! (deeper tasks, deeper headings) followed by its conversation in order.
//!
//! Invariant: pure over `&[Event]`, and correct on any prefix of a run: a task the log leaves
//! unfinished says so instead of being dropped or shown as done.

use std::fmt::Write as _;

use serde_json::Value;

use super::view::{RunView, TaskView, fenced, format_duration, inline_code, quoted, truncate_chars};
use crate::protocol::{Event, EventBody, Role, TaskKind, format_millis};

/// Characters of a tool result (or of a tool call's arguments) shown before it is cut.
const MAX_TOOL_TEXT: usize = 2000;

pub fn render_transcript(events: &[Event]) -> String {
    let view = RunView::new(events);
    let mut out = String::new();
    match &view.info {
        Some(info) => {
            let _ = writeln!(out, "# Transcript of run {}\n", info.run_id);
            let _ = writeln!(out, "- Experiment: {}", info.experiment);
            let _ = writeln!(out, "- Root agent: {}", info.root_agent);
            let _ = writeln!(out, "- Started: {}", format_millis(info.ts));
        }
        None => out.push_str("# Transcript\n\n- The log has no `run_started` event.\n"),
    }
    match &view.end {
        Some(end) => {
            let _ = writeln!(out, "- Outcome: {} after {}", end.status.as_str(), format_duration(end.elapsed_ms));
        }
        None => out.push_str("- Outcome: unfinished (the log ends before `run_finished`)\n"),
    }
    if let Some(info) = &view.info {
        out.push_str("\nTask:\n\n");
        out.push_str(&quoted(info.task));
    }
    if view.tasks.is_empty() {
        out.push_str("\n_No task was created._\n");
    }
    for (depth, task) in view.depth_first() {
        render_task(&mut out, &view, depth, task);
    }
    out
}

fn render_task(out: &mut String, view: &RunView<'_>, depth: usize, task: &TaskView<'_>) {
    // The title is `#`, roots are `##`; Markdown has no level past six.
    let hashes = "#".repeat((depth + 2).min(6));
    let status = if task.status.is_terminal() { task.status.as_str() } else { "still working when the log ends" };
    let kind = match task.kind {
        Some(TaskKind::Agent) | None => format!("agent {}", task.agent),
        Some(TaskKind::Slm) => "slm".to_owned(),
        Some(TaskKind::Mcp) => format!("MCP task {}", task.agent),
    };
    let _ = writeln!(out, "\n{hashes} {} · {kind} · model {} · {status}\n", task.uri, task.model);

    let mut facts = Vec::new();
    if let Some(parent) = task.parent {
        facts.push(format!("called by {parent}"));
    }
    if depth + 2 > 6 {
        facts.push(format!("depth {depth}"));
    }
    if let Some(created) = task.created {
        facts.push(format!("created {}", format_millis(created)));
    } else {
        facts.push("its `task_created` is missing from the log".to_owned());
    }
    if let (Some(created), Some(finished)) = (task.created, task.finished) {
        facts.push(format!("took {}", format_duration(finished.saturating_sub(created))));
    }
    if task.usage.model_calls > 0 {
        facts.push(format!(
            "{} tokens in, {} out, {} model call{}",
            task.usage.input_tokens,
            task.usage.output_tokens,
            task.usage.model_calls,
            if task.usage.model_calls == 1 { "" } else { "s" }
        ));
    }
    let _ = writeln!(out, "_{}_\n", facts.join(" · "));

    // The task text shows once: as the first user message if there is one, else here.
    let has_user_message = task.events.iter().any(|e| matches!(&e.body, EventBody::Message { role: Role::User, .. }));
    if !has_user_message && !task.task.is_empty() {
        out.push_str("**Task:**\n\n");
        out.push_str(&quoted(task.task));
        out.push('\n');
    }

    for event in &task.events {
        render_event(out, view, event);
    }

    if !task.status.is_terminal() {
        out.push_str("_Still working when the log ends._\n");
    }
}

/// What an MCP tool's model-facing name stands for in task `uri` (from its `mcp_tools` event).
fn mcp_reference<'v>(view: &'v RunView<'_>, uri: crate::protocol::TaskId, tool: &str) -> Option<&'v str> {
    view.task(uri)?.events.iter().find_map(|event| match &event.body {
        EventBody::McpTools { tools, .. } => tools.iter().find(|t| t.name == tool).map(|t| t.reference.as_str()),
        _ => None,
    })
}

fn render_event(out: &mut String, view: &RunView<'_>, event: &Event) {
    match &event.body {
        EventBody::Message { role, content, .. } => match role {
            Role::System => {
                out.push_str("<details><summary>System prompt</summary>\n\n");
                out.push_str(&fenced(content, "text"));
                out.push_str("\n</details>\n\n");
            }
            Role::User => {
                out.push_str("**User:**\n\n");
                out.push_str(&quoted(content));
                out.push('\n');
            }
            Role::Assistant => {
                // An assistant turn that only calls tools has no text worth a heading.
                if !content.trim().is_empty() {
                    out.push_str("**Assistant:**\n\n");
                    out.push_str(&quoted(content));
                    out.push('\n');
                }
            }
            Role::Tool => {
                out.push_str("**Tool message:**\n\n");
                push_tool_text(out, content);
            }
        },
        EventBody::ToolCall { uri, call_id, tool, arguments } => {
            let args = serde_json::to_string(arguments).unwrap_or_default();
            let (shown, dropped) = truncate_chars(&args, MAX_TOOL_TEXT);
            let _ = write!(out, "- Tool call {}", inline_code(tool));
            if let Some(reference) = mcp_reference(view, *uri, tool) {
                let _ = write!(out, " ({})", inline_code(reference));
            }
            let _ = write!(out, " {}", inline_code(shown));
            if dropped > 0 {
                let _ = write!(out, " _(arguments cut: {dropped} more characters)_");
            }
            let _ = writeln!(out, " _(call {call_id})_\n");
        }
        EventBody::ToolResult { call_id, tool, result, is_error, .. } => {
            let what = if *is_error { "Tool error" } else { "Tool result" };
            let _ = writeln!(out, "- {what} from {} _(call {call_id})_:\n", inline_code(tool));
            let text = match result {
                Value::String(text) => text.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            };
            push_tool_text(out, &text);
        }
        EventBody::Routed { alias, reason, .. } => {
            let _ = writeln!(out, "_Routed to model {}: {reason}_\n", inline_code(alias));
        }
        EventBody::TaskStatus { status, status_message, result, error, .. } => {
            let message = status_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            if status.is_terminal() {
                let _ = writeln!(out, "**Status: {status}**{message}\n");
            } else if !message.is_empty() {
                // A bare `working` says nothing the heading does not; one with a message does.
                let _ = writeln!(out, "_Status: {status}{message}_\n");
            }
            if let Some(result) = result {
                out.push_str("Result:\n\n");
                out.push_str(&quoted(result));
                out.push('\n');
            }
            if let Some(error) = error {
                out.push_str("Error:\n\n");
                out.push_str(&quoted(error));
                out.push('\n');
            }
        }
        EventBody::LimitHit { limit, value, message, .. } => {
            let _ = writeln!(out, "**Limit hit:** `{limit}` = {value}: {message}\n");
        }
        EventBody::MemoryRecalled { lessons, error, .. } => {
            if let Some(error) = error {
                let _ = writeln!(out, "_Memory could not be recalled: {error}_\n");
            }
            if !lessons.is_empty() {
                out.push_str("**Recalled from memory** (appended to the system prompt):\n\n");
                for lesson in lessons {
                    let _ = writeln!(out, "- #{} ({:.2}): {}", lesson.id, lesson.score, lesson.text.replace('\n', " "));
                }
                out.push('\n');
            }
        }
        EventBody::McpTools { tools, problems, .. } => {
            if !tools.is_empty() {
                out.push_str("**MCP tools** (the name the model sees, then what it is):\n\n");
                for tool in tools {
                    let _ = writeln!(out, "- {} = {}", inline_code(&tool.name), inline_code(&tool.reference));
                }
                out.push('\n');
            }
            for problem in problems {
                let _ = writeln!(out, "_MCP: {problem}_\n");
            }
        }
        EventBody::ChildrenOnFinish { policy, children, .. } => {
            let list: Vec<String> = children
                .iter()
                .map(|c| match view.task(*c) {
                    Some(child) => format!("{c} ({})", child.agent),
                    None => c.to_string(),
                })
                .collect();
            let _ = writeln!(
                out,
                "**Finished with children still working** ({}): {}\n",
                policy.as_str(),
                if list.is_empty() { "none".to_owned() } else { list.join(", ") }
            );
        }
        // Folded into the view or the headings instead of shown inline.
        EventBody::RunStarted { .. }
        | EventBody::TaskCreated { .. }
        | EventBody::MessageDelta { .. }
        | EventBody::Usage { .. }
        | EventBody::RunFinished { .. } => {}
    }
}

fn push_tool_text(out: &mut String, text: &str) {
    let (shown, dropped) = truncate_chars(text, MAX_TOOL_TEXT);
    out.push_str(&fenced(shown, "text"));
    if dropped > 0 {
        let _ = writeln!(out, "\n_(cut: {dropped} more characters are in events.jsonl)_");
    }
    out.push('\n');
}
