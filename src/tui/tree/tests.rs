//! Tests of `tui::tree`.

use super::*;
use pretty_assertions::assert_eq;
use serde_json::json;

fn id(n: u32) -> TaskId {
    TaskId::from_code(n)
}

fn ev(seq: u64, body: EventBody) -> Event {
    Event { seq, ts: 1_000 + seq * 100, body }
}

fn created(seq: u64, uri: u32, parent: Option<u32>, agent: &str) -> Event {
    ev(
        seq,
        EventBody::TaskCreated {
            uri: id(uri),
            parent: parent.map(id),
            kind: if agent == "slm" { TaskKind::Slm } else { TaskKind::Agent },
            agent: agent.into(),
            model: "small".into(),
            task: format!("{agent}'s task"),
        },
    )
}

fn status(seq: u64, uri: u32, status: TaskStatus, message: &str) -> Event {
    ev(
        seq,
        EventBody::TaskStatus {
            uri: id(uri),
            status,
            status_message: Some(message.into()),
            result: (status == TaskStatus::Completed).then(|| "done".into()),
            error: (status == TaskStatus::Failed).then(|| "broke".into()),
        },
    )
}

fn tree(view: &RunView) -> Vec<(u16, String)> {
    view.rows().iter().map(|r| (r.depth, view.nodes()[r.node].agent.clone())).collect()
}

#[test]
fn the_tree_follows_creation_and_collapsing() {
    let mut view = RunView::new();
    for event in [
        created(0, 1, None, "host"),
        created(1, 2, Some(1), "writer"),
        created(2, 3, Some(2), "critic"),
        created(3, 4, Some(1), "slm"),
    ] {
        view.apply(&event);
    }
    view.refresh();
    let all = vec![(0, "host".into()), (1, "writer".into()), (2, "critic".into()), (1, "slm".into())];
    assert_eq!(tree(&view), all);
    assert!(view.set_expanded(id(2), false));
    view.refresh();
    assert_eq!(tree(&view), vec![(0, "host".into()), (1, "writer".into()), (1, "slm".into())]);
    view.reveal(id(3));
    view.refresh();
    assert_eq!(tree(&view), all);
    assert_eq!(view.descendants(id(1)), 3);
}

#[test]
fn counts_usage_and_doing_follow_the_events() {
    let mut view = RunView::new();
    view.apply(&created(0, 1, None, "host"));
    view.apply(&created(1, 2, Some(1), "writer"));
    view.apply(&ev(
        2,
        EventBody::ToolCall {
            uri: id(1),
            call_id: "c".into(),
            tool: "get_task_status".into(),
            arguments: json!({"uri": id(2).to_string(), "wait_seconds": 30}),
        },
    ));
    assert_eq!(view.node(id(1)).unwrap().doing(), format!("waiting on writer ({})", id(2)));
    view.apply(&ev(3, EventBody::MessageDelta { uri: id(2), delta: "Hel".into() }));
    view.apply(&ev(4, EventBody::MessageDelta { uri: id(2), delta: "lo".into() }));
    assert_eq!(view.node(id(2)).unwrap().doing(), "streaming (5 chars)");
    let spent = Usage { input_tokens: 10, output_tokens: 5, model_calls: 1 };
    view.apply(&ev(
        5,
        EventBody::Usage { uri: id(2), input_tokens: 10, output_tokens: 5, task_total: spent, run_total: spent },
    ));
    view.apply(&status(6, 2, TaskStatus::Completed, "answered"));
    let host = view.node(id(1)).unwrap();
    let writer = view.node(id(2)).unwrap();
    assert_eq!((host.usage, host.branch_usage), (Usage::default(), spent), "the branch pays for its child");
    assert_eq!(writer.elapsed_ms(99_999), 500);
    assert_eq!(writer.streaming, "", "a finished task streams nothing");
    assert_eq!(view.counts(), TaskCounts { working: 1, completed: 1, failed: 0, cancelled: 0 });
    assert_eq!(view.usage(), spent);
}

#[test]
fn cost_follows_each_tasks_alias_price_up_its_branch() {
    let mut view = RunView::new();
    let price = Price { input_per_mtok: 1_000_000.0, output_per_mtok: 2_000_000.0 };
    view.apply(&ev(
        0,
        EventBody::RunStarted {
            run_id: "r".into(),
            experiment: "e".into(),
            root_agent: "host".into(),
            task: "t".into(),
            prices: [("big".to_owned(), price)].into_iter().collect(),
            format: crate::protocol::EVENTS_FORMAT,
            troupe_version: None,
        },
    ));
    view.apply(&created(1, 1, None, "host"));
    let mut child = created(2, 2, Some(1), "writer");
    if let EventBody::TaskCreated { model, .. } = &mut child.body {
        *model = "big".into();
    }
    view.apply(&child);
    assert_eq!(view.cost(), None, "nothing priced spent yet");
    let spent = |uri, input, output| {
        let usage = Usage { input_tokens: input, output_tokens: output, model_calls: 1 };
        EventBody::Usage {
            uri: id(uri),
            input_tokens: input,
            output_tokens: output,
            task_total: usage,
            run_total: usage,
        }
    };
    view.apply(&ev(3, spent(1, 5, 5)));
    assert_eq!(view.cost(), None, "the host's model `small` has no price");
    view.apply(&ev(4, spent(2, 3, 1)));
    assert_eq!(view.cost(), Some(5.0));
    assert_eq!(view.node(id(1)).unwrap().branch_cost, Some(5.0), "the parent's branch pays for the child");
    assert_eq!(view.node(id(2)).unwrap().branch_cost, Some(5.0));
}

#[test]
fn events_for_unknown_tasks_are_problems_not_crashes() {
    let mut view = RunView::new();
    view.apply(&status(0, 9, TaskStatus::Completed, "x"));
    view.apply(&created(1, 2, Some(7), "orphan"));
    view.refresh();
    assert_eq!(view.problems.len(), 2, "{:?}", view.problems);
    assert_eq!(tree(&view), vec![(0, "orphan".into())]);
}

#[test]
fn subtask_resources_read_as_agent_state_and_answer() {
    let resource =
        json!({"uri": "subtask://abcdef", "agent": "writer", "status": "completed", "result": "Hi Ada", "usage": {}});
    assert_eq!(summarize_result(&resource), "writer subtask://abcdef completed: Hi Ada");
    assert_eq!(summarize_result(&json!({"uri": "subtask://abcdef", "status": "working"})), "subtask://abcdef working");
    assert_eq!(summarize_result(&json!([resource])), "\n  writer subtask://abcdef completed: Hi Ada");
    assert_eq!(summarize_result(&json!({"ok": true})), r#"{"ok":true}"#);
}

#[test]
fn next_with_wraps_in_tree_order() {
    let mut view = RunView::new();
    for event in [
        created(0, 1, None, "host"),
        created(1, 2, Some(1), "a"),
        created(2, 3, Some(1), "b"),
        status(3, 2, TaskStatus::Failed, "x"),
    ] {
        view.apply(&event);
    }
    let working = |s: TaskStatus| s == TaskStatus::Working;
    assert_eq!(view.next_with(Some(id(1)), working), Some(id(3)));
    assert_eq!(view.next_with(Some(id(3)), working), Some(id(1)));
    assert_eq!(view.next_with(None, |s| s == TaskStatus::Failed), Some(id(2)));
    assert_eq!(view.next_with(None, |s| s == TaskStatus::Cancelled), None);
}
