//! The driver end to end through the library: scripted models, real tokio, every limit.
//! Assertions read the event stream, the same one the findings and the views read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use troupe::runtime::memory::RecallLimits;

use pretty_assertions::assert_eq;
use serde_json::Value;
use tokio::sync::mpsc;
use troupe::config::{AgentSpec, Limits};
use troupe::model::scripted::ScriptedModel;
use troupe::model::{Model, ModelTable};
use troupe::protocol::{Event, EventBody, OnFinish, Op, RunStatus, TaskId, TaskKind, TaskStatus};
use troupe::runtime::{RunConfig, RunSummary, SystemClock, spawn_run};

pub fn expert(name: &str, tools: &[&str], experts: &[&str]) -> AgentSpec {
    AgentSpec {
        description: format!("the {name}"),
        tools: tools.iter().map(|s| s.to_string()).collect(),
        experts: experts.iter().map(|s| s.to_string()).collect(),
        system_prompt: format!("You are the {name}."),
        ..AgentSpec::new(name, "m", format!("/agents/{name}.toml"))
    }
}

const ALL_TOOLS: &[&str] = &["call_agent", "call_slm", "get_task_status", "cancel_task", "list_tasks"];

pub struct Run {
    pub summary: RunSummary,
    pub events: Vec<Event>,
}

impl Run {
    fn of_type(&self, name: &str) -> Vec<&EventBody> {
        self.events.iter().map(|e| &e.body).filter(|b| b.type_name() == name).collect()
    }

    /// The final status of every task, by agent name and task text.
    fn finals(&self) -> Vec<(String, TaskStatus)> {
        let mut created: BTreeMap<TaskId, String> = BTreeMap::new();
        let mut out = Vec::new();
        for event in &self.events {
            match &event.body {
                EventBody::TaskCreated { uri, agent, task, .. } => {
                    created.insert(*uri, format!("{agent}: {task}"));
                }
                EventBody::TaskStatus { uri, status, .. } if status.is_terminal() => {
                    out.push((created[uri].clone(), *status));
                }
                _ => {}
            }
        }
        out.sort();
        out
    }

    fn limits_hit(&self) -> Vec<String> {
        self.of_type("limit_hit")
            .into_iter()
            .filter_map(|b| match b {
                EventBody::LimitHit { limit, .. } => Some(limit.clone()),
                _ => None,
            })
            .collect()
    }
}

pub fn config(script: &str, agents: Vec<AgentSpec>, root: &str, task: &str, limits: Limits) -> RunConfig {
    let model: Arc<dyn Model> = Arc::new(ScriptedModel::parse(Path::new("test-script.toml"), script).unwrap());
    RunConfig {
        run_id: "test-run".into(),
        experiment: "test".into(),
        root_agent: root.into(),
        task: task.into(),
        agents: agents.into_iter().map(|a| (a.name.clone(), a)).collect(),
        limits,
        models: ModelTable::from_models([("m".to_owned(), model.clone()), ("slm".to_owned(), model)]),
        slm_alias: "slm".into(),
        salt: 42,
        prices: Default::default(),
        routing: None,
        seed: None,
        memory: None,
        mcp: None,
        external_root: false,
    }
}

/// Runs to the end (or until `after` decides to send an op), collecting every event.
pub async fn run_with(config: RunConfig, mut on_event: impl FnMut(&Event) -> Option<Op>) -> Run {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handle = spawn_run(config, tx, Arc::new(SystemClock)).unwrap();
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        if let Some(op) = on_event(&event) {
            handle.send(op);
        }
        let last = matches!(event.body, EventBody::RunFinished { .. });
        events.push(event);
        if last {
            break;
        }
    }
    let summary = tokio::time::timeout(Duration::from_secs(10), handle.wait()).await.unwrap();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64, "seq is dense and ordered");
    }
    assert_nothing_after_the_end(&events);
    Run { summary, events }
}

/// Once a task's final status is out, nothing more is said of it (but the tokens it spent).
fn assert_nothing_after_the_end(events: &[Event]) {
    let mut ended = std::collections::HashSet::new();
    for event in events {
        let uri = match &event.body {
            EventBody::TaskStatus { uri, status, .. } => {
                assert!(!ended.contains(uri), "a second status for {uri} after its end: {event:?}");
                if status.is_terminal() {
                    ended.insert(*uri);
                }
                continue;
            }
            EventBody::Message { uri, .. }
            | EventBody::MessageDelta { uri, .. }
            | EventBody::ToolCall { uri, .. }
            | EventBody::ToolResult { uri, .. }
            | EventBody::LimitHit { uri, .. }
            | EventBody::ChildrenOnFinish { uri, .. } => uri,
            _ => continue,
        };
        assert!(!ended.contains(uri), "{} after {uri} ended: {event:?}", event.body.type_name());
    }
}

pub async fn run(config: RunConfig) -> Run {
    run_with(config, |_| None).await
}

#[tokio::test]
async fn a_root_that_answers_at_once_completes_the_run() {
    let script = r#"
[[conversation]]
[[conversation.turn]]
text = "Forty-two."
"#;
    let run =
        run(config(script, vec![expert("solo", &[], &[])], "solo", "What is six times seven?", Limits::default()))
            .await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.summary.result.as_deref(), Some("Forty-two."));
    let types: Vec<&str> = run.events.iter().map(|e| e.body.type_name()).collect();
    assert_eq!(types.first(), Some(&"run_started"));
    assert_eq!(types.last(), Some(&"run_finished"));
    assert!(types.contains(&"message_delta"));
    assert_eq!(run.summary.usage.model_calls, 1);
}

/// Three children that each think for 200 ms of (paused, virtual) time: the run takes about
/// 200 ms, not 600, only if they run concurrently.
#[tokio::test(start_paused = true)]
async fn children_run_at_the_same_time() {
    let started = tokio::time::Instant::now();
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "job one" }
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "job two" }
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "job three" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 10 }
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.2}}", wait_seconds = 10 }
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.3}}", wait_seconds = 10 }
[[conversation.turn]]
text = "{{result.1}} / {{result.2}} / {{result.3}}"

[[conversation]]
agent = "worker"
[[conversation.turn]]
delay_ms = 200
text = "finished {{task}}"
"#;
    let agents = vec![expert("boss", ALL_TOOLS, &["worker"]), expert("worker", &[], &[])];
    let run = run(config(script, agents, "boss", "Do three jobs", Limits::default())).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.summary.result.as_deref(), Some("finished job one / finished job two / finished job three"));

    let mut working = 0;
    let mut most = 0;
    for event in &run.events {
        match &event.body {
            EventBody::TaskCreated { kind: TaskKind::Agent, parent: Some(_), .. } => working += 1,
            EventBody::TaskStatus { status, .. } if status.is_terminal() => {
                working -= 1;
                most = most.max(working + 1);
            }
            _ => {}
        }
        most = most.max(working);
    }
    assert_eq!(most, 3, "all three workers were working at once");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(400), "three 200 ms children took {elapsed:?} of virtual time");
}

/// `wait_seconds` returns as soon as the task ends, and with the status as it is when the wait
/// runs out.
#[tokio::test]
async fn long_poll_returns_on_completion_or_after_the_wait() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "slow", task = "slow job" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 0.05 }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 30 }
[[conversation.turn]]
text = "{{status.1}}: {{result.1}}"

[[conversation]]
agent = "slow"
[[conversation.turn]]
delay_ms = 300
text = "slow result"
"#;
    let agents = vec![expert("boss", ALL_TOOLS, &["slow"]), expert("slow", &[], &[])];
    let run = run(config(script, agents, "boss", "wait for it", Limits::default())).await;
    let polls: Vec<&Value> = run
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolResult { tool, result, .. } if tool == "get_task_status" => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(polls[0]["status"], "working", "the short wait ran out first");
    assert_eq!(polls[1]["status"], "completed", "the long wait ended with the task");
    assert_eq!(polls[1]["result"], "slow result");
    assert_eq!(run.summary.result.as_deref(), Some("completed: slow result"));
    // The long poll ended when the child did, not after 30 s.
    assert!(run.summary.elapsed_ms < 20_000);
}

/// A user cancels a branch mid-flight: the whole subtree is cancelled, the other branch and the
/// root go on, and the root reads the cancellation.
#[tokio::test]
async fn cancelling_a_subtree_mid_flight_stops_all_of_it_and_nothing_else() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "manager", task = "branch A" }
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "branch B" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 30 }
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.2}}", wait_seconds = 30 }
[[conversation.turn]]
text = "A {{status.1}}, B {{status.2}}"

[[conversation]]
agent = "manager"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "deep in A" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 60 }
[[conversation.turn]]
text = "manager done"

[[conversation]]
agent = "worker"
task_contains = "deep"
[[conversation.turn]]
delay_ms = 60000
text = "never"

[[conversation]]
agent = "worker"
[[conversation.turn]]
delay_ms = 300
text = "B done"
"#;
    let agents = vec![
        expert("boss", ALL_TOOLS, &["manager", "worker"]),
        expert("manager", ALL_TOOLS, &["worker"]),
        expert("worker", &[], &[]),
    ];
    let mut manager = None;
    let run = run_with(config(script, agents, "boss", "two branches", Limits::default()), |event| match &event.body {
        EventBody::TaskCreated { uri, agent, .. } if agent == "manager" => {
            manager = Some(*uri);
            None
        }
        EventBody::TaskCreated { task, .. } if task == "deep in A" => manager.map(|uri| Op::CancelTask { uri }),
        _ => None,
    })
    .await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.summary.result.as_deref(), Some("A cancelled, B completed"));
    assert_eq!(
        run.finals(),
        vec![
            ("boss: two branches".into(), TaskStatus::Completed),
            ("manager: branch A".into(), TaskStatus::Cancelled),
            ("worker: branch B".into(), TaskStatus::Completed),
            ("worker: deep in A".into(), TaskStatus::Cancelled),
        ]
    );
}

/// An agent cancels its own child with `cancel_task`; a sibling that tries the same is refused.
#[tokio::test]
async fn cancel_task_reaches_only_the_callers_subtree() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "endless" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "meddler", task = "{{uri.1}}" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.2}}", wait_seconds = 10 }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "cancel_task"
arguments = { uri = "{{uri.1}}" }
[[conversation.turn]]
text = "stopped: {{status.1}}"

[[conversation]]
agent = "meddler"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "cancel_task"
arguments = { uri = "{{task}}" }
[[conversation.turn]]
text = "tried"

[[conversation]]
agent = "worker"
[[conversation.turn]]
delay_ms = 60000
text = "never"
"#;
    let agents = vec![
        expert("boss", ALL_TOOLS, &["worker", "meddler"]),
        expert("worker", ALL_TOOLS, &[]),
        expert("meddler", ALL_TOOLS, &[]),
    ];
    let run = run(config(script, agents, "boss", "cancel it", Limits::default())).await;
    assert_eq!(run.summary.result.as_deref(), Some("stopped: cancelled"));
    let refusals: Vec<&Value> = run
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolResult { tool, result, is_error: true, .. } if tool == "cancel_task" => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.len(), 1);
    assert!(refusals[0].as_str().unwrap().contains("is not one of your subtasks"), "{}", refusals[0]);
    let worker_end = run.events.iter().find_map(|e| match &e.body {
        EventBody::TaskStatus { status: TaskStatus::Cancelled, error, .. } => error.clone(),
        _ => None,
    });
    assert!(worker_end.unwrap().starts_with("cancelled by subtask://"), "the boss cancelled it, not the meddler");
}

/// A scripted agent that calls `call_agent` on itself forever: the run ends, failed or not, with
/// the limits reported, and no task is left working.
#[tokio::test]
async fn an_agent_that_delegates_forever_is_stopped_by_the_limits() {
    // The root thinks slowly so that its descendants reach the depth limit before it gives up.
    let script = r#"
[[conversation]]
task_contains = "loop"
repeat = true
[[conversation.turn]]
delay_ms = 150
[[conversation.turn.call]]
tool = "call_agent"
arguments = { task = "Do it again" }

[[conversation]]
repeat = true
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { task = "Do it again" }
"#;
    let limits = Limits {
        max_depth: 2,
        max_children_per_agent: 2,
        max_subtasks_per_run: 20,
        max_turns_per_agent: 4,
        ..Limits::default()
    };
    let run = run(config(script, vec![expert("looper", &["call_agent"], &[])], "looper", "loop", limits)).await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    assert!(run.summary.error.as_deref().unwrap_or("").contains("max_turns_per_agent"), "{:?}", run.summary.error);
    let hit = run.limits_hit();
    for key in ["max_depth", "max_children_per_agent", "max_turns_per_agent"] {
        assert!(hit.iter().any(|h| h == key), "{key} in {hit:?}");
    }
    assert_eq!(run.summary.tasks.working, 0);
    // At most two children per agent, two levels deep; fewer when a failing parent cancels its
    // children before they have delegated.
    assert!(run.summary.tasks.total() <= 1 + 2 + 4, "{:?}", run.summary.tasks);
}

#[tokio::test]
async fn the_run_total_caps_subtasks() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_slm"
arguments = { prompt = "one" }
[[conversation.turn.call]]
tool = "call_slm"
arguments = { prompt = "two" }
[[conversation.turn.call]]
tool = "call_slm"
arguments = { prompt = "three" }
[[conversation.turn]]
text = "done"

[[conversation]]
agent = "slm"
[[conversation.turn]]
text = "ok"
"#;
    let limits = Limits { max_subtasks_per_run: 2, on_finish: OnFinish::WaitForChildren, ..Limits::default() };
    let run = run(config(script, vec![expert("boss", ALL_TOOLS, &[])], "boss", "three questions", limits)).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.limits_hit(), vec!["max_subtasks_per_run"]);
    let errors: Vec<&Value> = run
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolResult { result, is_error: true, .. } => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(errors, vec![&Value::String("max_subtasks_per_run is 2: this run has started 2 subtasks".into())]);
}

#[tokio::test]
async fn concurrency_limit_refuses_while_full() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "a" }
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "b" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 10 }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "c" }
[[conversation.turn]]
text = "done"

[[conversation]]
agent = "worker"
[[conversation.turn]]
delay_ms = 100
text = "ok"
"#;
    let limits = Limits { max_concurrent_subtasks: 1, on_finish: OnFinish::WaitForChildren, ..Limits::default() };
    let agents = vec![expert("boss", ALL_TOOLS, &["worker"]), expert("worker", &[], &[])];
    let run = run(config(script, agents, "boss", "one at a time", limits)).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(run.limits_hit(), vec!["max_concurrent_subtasks"], "b was refused while a worked");
    assert_eq!(
        run.finals(),
        vec![
            ("boss: one at a time".into(), TaskStatus::Completed),
            ("worker: a".into(), TaskStatus::Completed),
            ("worker: c".into(), TaskStatus::Completed),
        ],
        "c started once a had finished"
    );
}

#[tokio::test]
async fn wall_time_limit_fails_the_subtask_not_the_run() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "sleeper", task = "sleep" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 30 }
[[conversation.turn]]
text = "sleeper {{status.1}}"

[[conversation]]
agent = "sleeper"
[[conversation.turn]]
delay_ms = 60000
text = "never"
"#;
    let mut sleeper = expert("sleeper", &[], &[]);
    sleeper.max_wall_seconds = Some(1);
    let agents = vec![expert("boss", ALL_TOOLS, &["sleeper"]), sleeper];
    let run = run(config(script, agents, "boss", "time out", Limits::default())).await;
    assert_eq!(run.summary.result.as_deref(), Some("sleeper failed"));
    assert_eq!(run.limits_hit(), vec!["max_wall_seconds_per_subtask"]);
}

#[tokio::test]
async fn the_token_budget_stops_the_run() {
    let script = r#"
[[conversation]]
repeat = true
[[conversation.turn]]
text = "thinking out loud for a while"
[[conversation.turn.call]]
tool = "list_tasks"
"#;
    let limits = Limits { max_tokens_per_run: 60, max_turns_per_agent: 100, ..Limits::default() };
    let run = run(config(script, vec![expert("talker", ALL_TOOLS, &[])], "talker", "talk", limits)).await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    assert_eq!(run.limits_hit(), vec!["max_tokens_per_run"]);
    assert!(run.summary.usage.total_tokens() >= 60);
}

/// Both policies for children still working when their parent answers, recorded as events.
#[tokio::test]
async fn children_left_working_are_cancelled_or_awaited_as_configured() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "background" }
[[conversation.turn]]
text = "answered early"

[[conversation]]
agent = "worker"
[[conversation.turn]]
delay_ms = 200
text = "background done"
"#;
    for (policy, child_status) in
        [(OnFinish::CancelChildren, TaskStatus::Cancelled), (OnFinish::WaitForChildren, TaskStatus::Completed)]
    {
        let mut boss = expert("boss", ALL_TOOLS, &["worker"]);
        boss.on_finish = Some(policy);
        let run = run(config(script, vec![boss, expert("worker", &[], &[])], "boss", "early", Limits::default())).await;
        assert_eq!(run.summary.status, RunStatus::Completed);
        assert_eq!(run.summary.result.as_deref(), Some("answered early"));
        let decision: Vec<OnFinish> = run
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::ChildrenOnFinish { policy, children, .. } if children.len() == 1 => Some(*policy),
                _ => None,
            })
            .collect();
        assert_eq!(decision, vec![policy]);
        assert!(run.finals().contains(&("worker: background".into(), child_status)), "{policy:?}: {:?}", run.finals());
    }
}

/// `max_cost` stops a run once its priced tokens cost that much; the price reaches every view
/// through `run_started`, and the report shows each task's cost.
#[tokio::test]
async fn the_cost_budget_stops_the_run_and_prices_travel_with_the_events() {
    let script = r#"
[[conversation]]
repeat = true
[[conversation.turn]]
text = "thinking out loud for a while"
[[conversation.turn.call]]
tool = "list_tasks"
"#;
    let limits = Limits { max_cost: Some(0.001), max_turns_per_agent: 100, ..Limits::default() };
    let mut config = config(script, vec![expert("talker", ALL_TOOLS, &[])], "talker", "talk", limits);
    // $10 per million input tokens, $30 per million output tokens.
    let price = troupe::protocol::Price { input_per_mtok: 10.0, output_per_mtok: 30.0 };
    config.prices = [("m".to_owned(), price)].into_iter().collect();
    let run = run(config).await;
    assert_eq!(run.summary.status, RunStatus::Failed);
    assert_eq!(run.limits_hit(), vec!["max_cost"]);
    let spent = price.cost(&run.summary.usage);
    assert!(spent >= 0.001, "stopped only once the budget was spent: ${spent}");
    let EventBody::RunStarted { prices, .. } = &run.events[0].body else { panic!("run_started first") };
    assert_eq!(prices.get("m"), Some(&price));
    let report = troupe::findings::render_report(&run.events);
    assert!(report.contains(&format!("| cost | ${spent:.4} |")), "{report}");
    assert!(report.contains("| tokens (in / out) | cost | duration |"), "{report}");
}

/// `model = "auto"`: each subtask is routed by the rules, or by the small model's verdict when
/// none matches; every decision is a `routed` event with its reason, and the task runs (and is
/// billed) on the alias chosen.
#[tokio::test]
async fn auto_routes_each_subtask_by_rules_then_by_classification() {
    use troupe::config::{Classify, Difficulty, RouteRule, Routing};
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "quick", task = "2+2?" }
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "thinker", task = "Plan the migration of our billing system to the new provider." }
[[conversation.turn]]
text = "done"

[[conversation]]
agent = "router"
[[conversation.turn]]
text = "complex"

[[conversation]]
agent = "quick"
[[conversation.turn]]
text = "4"

[[conversation]]
agent = "thinker"
[[conversation.turn]]
text = "step one, step two"
"#;
    let mut boss = expert("boss", ALL_TOOLS, &["quick", "thinker"]);
    boss.model = "auto".into();
    boss.difficulty = Some(Difficulty::Hard);
    boss.max_turns = Some(3);
    boss.on_finish = Some(OnFinish::WaitForChildren);
    let mut quick = expert("quick", &[], &[]);
    quick.model = "auto".into();
    let mut thinker = expert("thinker", &[], &[]);
    thinker.model = "auto".into();
    let mut config = config(script, vec![boss, quick, thinker], "boss", "route them", Limits::default());
    let model = config.models.get("m").unwrap().clone();
    config.models = ModelTable::from_models(["m", "slm", "big"].map(|alias| (alias.to_owned(), model.clone())));
    let rule = |alias: &str| RouteRule {
        alias: alias.into(),
        difficulty: None,
        max_task_chars: None,
        min_task_chars: None,
        keywords: vec![],
    };
    config.routing = Some(Routing {
        default: "m".into(),
        rules: vec![
            RouteRule { difficulty: Some(Difficulty::Hard), ..rule("big") },
            RouteRule { max_task_chars: Some(10), ..rule("m") },
        ],
        classify: Some(Classify { with: "slm".into(), simple: "m".into(), complex: "big".into() }),
    });
    let run = run(config).await;
    assert_eq!(run.summary.status, RunStatus::Completed, "{:?}", run.summary);
    let mut agents: BTreeMap<TaskId, String> = BTreeMap::new();
    let mut routed = Vec::new();
    for event in &run.events {
        match &event.body {
            EventBody::TaskCreated { uri, agent, .. } => {
                agents.insert(*uri, agent.clone());
            }
            EventBody::Routed { uri, alias, reason } => {
                routed.push((agents[uri].clone(), alias.clone(), reason.clone()))
            }
            _ => {}
        }
    }
    routed.sort();
    assert_eq!(
        routed,
        vec![
            ("boss".into(), "big".into(), "rule 1 (difficulty = hard)".into()),
            ("quick".into(), "m".into(), "rule 2 (task of 4 chars ≤ 10)".into()),
            ("thinker".into(), "big".into(), "slm classified the task as complex".into()),
        ]
    );
    let transcript = troupe::findings::render_transcript(&run.events);
    assert!(transcript.contains("_Routed to model `big`: slm classified the task as complex_"), "{transcript}");
}

/// A caller whose file says `choose_model = true` may name the alias a subtask runs on; one
/// that may not is told so, and the subtask is not started.
#[tokio::test]
async fn a_caller_may_choose_a_subtasks_model_only_when_allowed() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "big job", model = "big" }
[[conversation.turn.call]]
tool = "call_slm"
arguments = { prompt = "small question", model = "big" }
[[conversation.turn]]
text = "done"

[[conversation]]
agent = "worker"
[[conversation.turn]]
text = "worked"

[[conversation]]
agent = "slm"
[[conversation.turn]]
text = "answered"
"#;
    for allowed in [true, false] {
        let mut boss = expert("boss", ALL_TOOLS, &["worker"]);
        boss.choose_model = allowed;
        boss.max_turns = Some(3);
        boss.on_finish = Some(OnFinish::WaitForChildren);
        let mut config = config(script, vec![boss, expert("worker", &[], &[])], "boss", "go", Limits::default());
        let model = config.models.get("m").unwrap().clone();
        config.models = ModelTable::from_models(["m", "slm", "big"].map(|alias| (alias.to_owned(), model.clone())));
        let run = run(config).await;
        assert_eq!(run.summary.status, RunStatus::Completed);
        let created: Vec<(String, String)> = run
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::TaskCreated { parent: Some(_), agent, model, .. } => Some((agent.clone(), model.clone())),
                _ => None,
            })
            .collect();
        let errors: Vec<String> = run
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::ToolResult { is_error: true, result, .. } => Some(result.to_string()),
                _ => None,
            })
            .collect();
        if allowed {
            assert_eq!(created, vec![("worker".into(), "big".into()), ("slm".into(), "big".into())]);
            assert!(errors.is_empty(), "{errors:?}");
        } else {
            assert_eq!(created, vec![]);
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(errors[0].contains("you may not choose a model"), "{errors:?}");
        }
    }
}

/// An agent's last turn is not taken while subtasks it started still work: it waits for them and
/// is told how every one ended, so its answer can use their results even if it never polled.
#[tokio::test]
async fn the_last_turn_waits_for_working_children_and_reads_their_results() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "slow part" }
[[conversation.turn]]
text = "combined"

[[conversation]]
agent = "worker"
[[conversation.turn]]
delay_ms = 300
text = "the slow part is done"
"#;
    let mut boss = expert("boss", ALL_TOOLS, &["worker"]);
    boss.max_turns = Some(2);
    let run = run(config(script, vec![boss, expert("worker", &[], &[])], "boss", "do it", Limits::default())).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(
        run.finals(),
        vec![("boss: do it".into(), TaskStatus::Completed), ("worker: slow part".into(), TaskStatus::Completed)]
    );
    let last_note = run
        .events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Message { content, .. } if content.starts_with("[troupe] Last turn") => Some(content.clone()),
            _ => None,
        })
        .expect("the last turn is announced");
    assert!(last_note.contains("\n- worker: the slow part is done\n"), "{last_note}");
    assert!(run.of_type("children_on_finish").is_empty(), "nothing was left working when the boss answered");
}

/// Refusals a model must be able to read and act on, never crashes.
#[tokio::test]
async fn bad_calls_are_tool_errors_the_model_reads() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "stranger", task = "x" }
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "subtask://zzzzzz" }
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "not a uri" }
[[conversation.turn.call]]
tool = "delete_everything"
arguments = {}
[[conversation.turn]]
text = "coped"
"#;
    let run = run(config(
        script,
        vec![expert("boss", ALL_TOOLS, &["helper"]), expert("helper", &[], &[])],
        "boss",
        "subtask://000000",
        Limits::default(),
    ))
    .await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    let errors: Vec<String> = run
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolResult { result: Value::String(s), is_error: true, .. } => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].starts_with("there is no expert `stranger`; you may call: helper"), "{}", errors[0]);
    assert!(errors[1].starts_with("no task subtask://zzzzzz in this run"), "{}", errors[1]);
    assert!(errors[2].contains("is not a subtask URI"), "{}", errors[2]);
    assert!(errors[3].starts_with("unknown tool `delete_everything`"), "{}", errors[3]);
}

/// A sub-agent without `agent` inherits the caller's configuration: same expert, same model,
/// same tools, so it can delegate in turn.
#[tokio::test]
async fn a_sub_agent_without_an_expert_inherits_its_parent() {
    let script = r#"
[[conversation]]
task_contains = "top"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { task = "middle" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 10 }
[[conversation.turn]]
text = "top got: {{result.1}}"

[[conversation]]
task_contains = "middle"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_slm"
arguments = { prompt = "bottom" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 10 }
[[conversation.turn]]
text = "middle got: {{result.1}}"

[[conversation]]
agent = "slm"
[[conversation.turn]]
text = "bottom answer"
"#;
    let run = run(config(script, vec![expert("solo", ALL_TOOLS, &[])], "solo", "top", Limits::default())).await;
    assert_eq!(run.summary.result.as_deref(), Some("top got: middle got: bottom answer"));
    let created: Vec<(Option<TaskId>, String, TaskKind)> = run
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::TaskCreated { parent, agent, kind, .. } => Some((*parent, agent.clone(), *kind)),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 3);
    assert_eq!(created[1].1, "solo", "the sub-agent runs the parent's expert");
    assert_eq!(created[2].2, TaskKind::Slm);
}

#[tokio::test]
async fn cancelling_the_run_cancels_every_task() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "worker", task = "forever" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 300 }
[[conversation.turn]]
text = "never"

[[conversation]]
agent = "worker"
[[conversation.turn]]
delay_ms = 60000
text = "never"
"#;
    let agents = vec![expert("boss", ALL_TOOLS, &["worker"]), expert("worker", &[], &[])];
    let run = run_with(config(script, agents, "boss", "stop me", Limits::default()), |event| match &event.body {
        EventBody::TaskCreated { agent, .. } if agent == "worker" => Some(Op::CancelRun),
        _ => None,
    })
    .await;
    assert_eq!(run.summary.status, RunStatus::Cancelled);
    assert_eq!(run.summary.tasks.working, 0);
    assert_eq!(run.summary.tasks.cancelled, 2);
}

/// A provider that misbehaves in the ways real ones do.
struct Misbehaving {
    how: &'static str,
}

impl troupe::model::Model for Misbehaving {
    fn info(&self) -> troupe::model::ModelInfo {
        troupe::model::ModelInfo { provider: "test", model: self.how.into(), digest: None }
    }

    fn stream(
        &self,
        _request: troupe::model::ModelRequest,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> troupe::model::ModelStream {
        use troupe::model::{ModelChunk, ModelError, ModelStream};
        let (tx, stream) = ModelStream::channel();
        match self.how {
            "cancelled unasked" => {
                let _ = tx.try_send(Err(ModelError::Cancelled));
            }
            "absurd usage" => {
                let usage = troupe::protocol::Usage { input_tokens: u64::MAX, output_tokens: 1, model_calls: 1 };
                let _ = tx.try_send(Ok(ModelChunk::TextDelta("an answer".into())));
                let _ = tx.try_send(Ok(ModelChunk::Usage(usage)));
            }
            "panics" => panic!("a provider bug"),
            _ => {}
        }
        stream
    }
}

#[tokio::test]
async fn a_misbehaving_provider_never_hangs_or_crashes_a_run() {
    for (how, status, error) in [
        ("cancelled unasked", RunStatus::Failed, Some("model error: the model stopped the request unasked")),
        ("absurd usage", RunStatus::Completed, None),
        ("panics", RunStatus::Failed, Some("internal error: the subtask crashed (a bug in troupe; please report it)")),
        ("says nothing", RunStatus::Failed, Some("model error: the model ended the request without a reply")),
    ] {
        let mut config = config("", vec![expert("solo", &[], &[])], "solo", "hello", Limits::default());
        let model: Arc<dyn Model> = Arc::new(Misbehaving { how });
        config.models = ModelTable::from_models([("m".to_owned(), model)]);
        let run = tokio::time::timeout(Duration::from_secs(10), run(config)).await.expect(how);
        assert_eq!(run.summary.status, status, "{how}: {:?}", run.summary.error);
        if let Some(error) = error {
            assert_eq!(run.summary.error.as_deref(), Some(error), "{how}");
        }
        assert_eq!(run.summary.tasks.working, 0, "{how}");
    }
}

/// A memory that answers from a fixed list: a test tool standing in for the store, which has
/// its own tests; here what matters is what the runtime does with lessons.
/// The third field holds the limits each recall was asked with.
struct FixedMemory(
    Result<Vec<troupe::runtime::Recalled>, String>,
    std::sync::Mutex<Vec<(String, String)>>,
    std::sync::Mutex<Vec<RecallLimits>>,
);

impl troupe::runtime::RunMemory for FixedMemory {
    fn recall(&self, expert: &str, task: &str, limits: RecallLimits) -> Result<Vec<troupe::runtime::Recalled>, String> {
        self.1.lock().unwrap().push((expert.to_owned(), task.to_owned()));
        self.2.lock().unwrap().push(limits);
        self.0.clone()
    }

    fn search(&self, _expert: &str, _query: &str, _k: usize) -> Result<Vec<troupe::runtime::Recalled>, String> {
        self.0.clone()
    }

    fn remember(
        &self,
        expert: &str,
        text: &str,
        _expert_scope: bool,
        _provenance: troupe::runtime::memory::Provenance,
    ) -> Result<troupe::runtime::memory::Kept, String> {
        self.1.lock().unwrap().push((expert.to_owned(), format!("remember: {text}")));
        Ok(troupe::runtime::memory::Kept { id: 99, merged: false, truncated: false })
    }
}

#[tokio::test]
async fn recalled_lessons_reach_each_agents_system_prompt_and_are_an_event() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "helper", task = "Find the capital of France" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 5 }
[[conversation.turn]]
text = "Paris."

[[conversation]]
agent = "helper"
[[conversation.turn]]
text = "Paris."
"#;
    let lesson = troupe::runtime::Recalled { id: 7, score: 0.81, text: "Answer with the city only.".into() };
    let memory = Arc::new(FixedMemory(Ok(vec![lesson.clone()]), Default::default(), Default::default()));
    let mut config = config(
        script,
        vec![expert("boss", &["call_agent", "get_task_status"], &["helper"]), expert("helper", &[], &[])],
        "boss",
        "What is the capital of France?",
        Limits::default(),
    );
    config.memory = Some(memory.clone());
    let run = run(config).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    let asked = memory.1.lock().unwrap().clone();
    assert_eq!(
        asked,
        [
            ("boss".to_owned(), "What is the capital of France?".to_owned()),
            ("helper".to_owned(), "Find the capital of France".to_owned())
        ],
        "each agent recalls for its own task"
    );
    let recalled: Vec<&EventBody> = run.of_type("memory_recalled");
    assert_eq!(recalled.len(), 2);
    let systems: Vec<&String> = run
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Message { role: troupe::protocol::Role::System, content, .. } => Some(content),
            _ => None,
        })
        .collect();
    assert_eq!(systems.len(), 2);
    for system in systems {
        assert!(system.contains("[troupe memory]") && system.contains("- Answer with the city only. (#7)"), "{system}");
    }
}

#[tokio::test]
async fn an_experts_own_recall_settings_override_the_workbenchs_and_zero_turns_recall_off() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "helper", task = "Find the capital of France" }
[[conversation.turn]]
[[conversation.turn.call]]
tool = "get_task_status"
arguments = { uri = "{{uri.1}}", wait_seconds = 5 }
[[conversation.turn]]
text = "Paris."

[[conversation]]
agent = "helper"
[[conversation.turn]]
text = "Paris."
"#;
    let lesson = troupe::runtime::Recalled { id: 7, score: 0.81, text: "Answer with the city only.".into() };
    let memory = Arc::new(FixedMemory(Ok(vec![lesson]), Default::default(), Default::default()));
    let mut boss = expert("boss", &["call_agent", "get_task_status"], &["helper"]);
    boss.recall_k = Some(5);
    boss.recall_min_score = Some(0.6);
    let mut helper = expert("helper", &[], &[]);
    helper.recall_k = Some(0);
    let mut config = config(script, vec![boss, helper], "boss", "What is the capital of France?", Limits::default());
    config.memory = Some(memory.clone());
    let run = run(config).await;
    assert_eq!(run.summary.status, RunStatus::Completed);
    assert_eq!(
        memory.2.lock().unwrap().clone(),
        [RecallLimits { k: Some(5), min_score: Some(0.6) }],
        "the boss recalls with its own limits; the helper (recall_k = 0) never asks"
    );
    assert_eq!(run.of_type("memory_recalled").len(), 1);
}

#[tokio::test]
async fn a_memory_that_fails_is_reported_and_the_agent_still_works() {
    let script = "[[conversation]]\n[[conversation.turn]]\ntext = \"Forty-two.\"\n";
    let memory = Arc::new(FixedMemory(Err("the store is locked".into()), Default::default(), Default::default()));
    let mut config = config(script, vec![expert("solo", &[], &[])], "solo", "Six times seven?", Limits::default());
    config.memory = Some(memory);
    let run = run(config).await;
    assert_eq!(run.summary.result.as_deref(), Some("Forty-two."));
    match run.of_type("memory_recalled").as_slice() {
        [EventBody::MemoryRecalled { lessons, error: Some(error), .. }] => {
            assert!(lessons.is_empty());
            assert_eq!(error, "the store is locked");
        }
        other => panic!("expected one memory_recalled with an error, got {other:?}"),
    }
}

#[tokio::test]
async fn remember_and_recall_are_tools_and_say_so_when_memory_is_off() {
    let script = r#"
[[conversation]]
[[conversation.turn]]
[[conversation.turn.call]]
tool = "remember"
arguments = { text = "Quote results word for word.", scope = "expert" }
[[conversation.turn.call]]
tool = "recall"
arguments = { query = "how to report results", k = 2 }
[[conversation.turn]]
text = "Done."
"#;
    let lesson = troupe::runtime::Recalled { id: 7, score: 0.5, text: "Be brief.".into() };
    let agents = || vec![expert("solo", &["remember", "recall"], &[])];
    let memory = Arc::new(FixedMemory(Ok(vec![lesson]), Default::default(), Default::default()));
    let mut with_memory = config(script, agents(), "solo", "Report.", Limits::default());
    with_memory.memory = Some(memory.clone());
    let on = run(with_memory).await;
    let results: Vec<(String, bool, Value)> = on
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolResult { tool, result, is_error, .. } => Some((tool.clone(), *is_error, result.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(results[0].0, "remember");
    assert_eq!((results[0].1, &results[0].2["id"]), (false, &Value::from(99)));
    assert_eq!(results[1].2["lessons"][0]["text"], "Be brief.");
    assert!(
        memory.1.lock().unwrap().contains(&("solo".to_owned(), "remember: Quote results word for word.".to_owned()))
    );

    let off = run(config(script, agents(), "solo", "Report.", Limits::default())).await;
    let errors: Vec<String> = off
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ToolResult { result, is_error: true, .. } => Some(result.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("memory is off"), "{errors:?}");
    assert_eq!(off.summary.status, RunStatus::Completed);
}

/// An external root (the client of `troupe mcp serve`) runs no model and is nobody's sub-agent:
/// an expert that may call anyone (`experts = ["*"]`) is neither offered it nor allowed to start it.
#[tokio::test]
async fn an_expert_that_may_call_anyone_cannot_start_the_external_root() {
    let script = r#"
[[conversation]]
agent = "boss"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "call_agent"
arguments = { agent = "client", task = "be the client" }
[[conversation.turn]]
text = "done"
"#;
    let agents = vec![expert("client", ALL_TOOLS, &["boss"]), expert("boss", &["call_agent"], &["*"])];
    let mut config = config(script, agents, "client", "serve", Limits::default());
    config.external_root = true;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = spawn_run(config, tx, Arc::new(SystemClock)).unwrap();
    let caller = handle.root_caller();
    let started = caller
        .call_as_root("c1".into(), "call_agent", serde_json::json!({"task": "delegate", "agent": "boss"}))
        .await
        .unwrap();
    let uri = started["uri"].as_str().unwrap().to_owned();
    let status = caller
        .call_as_root("c2".into(), "get_task_status", serde_json::json!({"uri": uri, "wait_seconds": 30}))
        .await
        .unwrap();
    assert_eq!(status["status"], "completed", "{status}");
    caller.finish_external("done".into());
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        let last = matches!(event.body, EventBody::RunFinished { .. });
        events.push(event);
        if last {
            break;
        }
    }
    assert!(matches!(events.last().map(|e| &e.body), Some(EventBody::RunFinished { .. })), "the run ended");
    let refusal = events.iter().find_map(|e| match &e.body {
        EventBody::ToolResult { tool, result, is_error: true, .. } if tool == "call_agent" => Some(result.to_string()),
        _ => None,
    });
    assert!(refusal.as_deref().is_some_and(|r| r.contains("client")), "boss was refused: {refusal:?}");
    let started_client = events
        .iter()
        .any(|e| matches!(&e.body, EventBody::TaskCreated { agent, parent: Some(_), .. } if agent == "client"));
    assert!(!started_client, "no subtask runs the external root");
}
