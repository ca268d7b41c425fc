//! How the runtime scales with the number of subtasks: a root agent starts N sub-agents in one
//! turn, each answers at once (an instant in-process model), and the root waits for all of them.
//! Reports wall time, throughput, live heap per finished subtask held in the registry, and peak
//! RSS, at 1,000, 10,000 and 100,000 subtasks.
//!
//! Run with `cargo bench --bench subtasks` (add `-- 1000 10000` to choose the sizes).
//! Targets (issue 2): ≤ 0.5 s for 10,000, linear cost, ≤ 4 KiB per finished subtask.

// The one `unsafe` in the project: a counting global allocator, so that memory per subtask is
// measured in live bytes rather than guessed from RSS.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use troupe::config::{AgentSpec, Limits};
use troupe::model::{Model, ModelChunk, ModelInfo, ModelRequest, ModelStream, ModelTable};
use troupe::protocol::{EventBody, OnFinish, Role, RunStatus, ToolCall, Usage};
use troupe::runtime::{RunConfig, SystemClock, spawn_run};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers every call to the system allocator unchanged and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Answers at once: the root's first turn starts `fan_out` workers, every other turn is text.
struct InstantModel {
    fan_out: usize,
}

impl Model for InstantModel {
    fn info(&self) -> ModelInfo {
        ModelInfo { provider: "bench", model: "instant".into(), digest: None }
    }

    fn stream(&self, request: ModelRequest, _cancel: CancellationToken) -> ModelStream {
        let (tx, stream) = ModelStream::channel();
        let usage = Usage { input_tokens: 20, output_tokens: 5, model_calls: 1 };
        let first_turn = !request.messages.iter().any(|m| m.role == Role::Assistant);
        if request.agent == "root" && first_turn {
            let fan_out = self.fan_out;
            tokio::spawn(async move {
                for i in 0..fan_out {
                    let call = ToolCall {
                        id: format!("c{i}"),
                        name: "call_agent".into(),
                        arguments: json!({"agent": "worker", "task": format!("job {i}")}),
                    };
                    if tx.send(Ok(ModelChunk::ToolCall(call))).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(Ok(ModelChunk::Usage(usage))).await;
            });
        } else {
            // Two chunks fit the channel's buffer: no task needed.
            let _ = tx.try_send(Ok(ModelChunk::TextDelta("ok".into())));
            let _ = tx.try_send(Ok(ModelChunk::Usage(usage)));
        }
        stream
    }
}

fn agent(name: &str, tools: &[&str], experts: &[&str]) -> AgentSpec {
    AgentSpec {
        max_turns: Some(3),
        on_finish: Some(OnFinish::WaitForChildren),
        tools: tools.iter().map(|s| s.to_string()).collect(),
        experts: experts.iter().map(|s| s.to_string()).collect(),
        system_prompt: "You are a benchmark.".into(),
        ..AgentSpec::new(name, "instant", "bench")
    }
}

struct Figures {
    seconds: f64,
    live_bytes_per_task: f64,
    events: usize,
}

fn measure(runtime: &tokio::runtime::Runtime, n: usize) -> Figures {
    let n32 = u32::try_from(n).unwrap();
    let limits = Limits {
        max_children_per_agent: n32,
        max_concurrent_subtasks: n32,
        max_subtasks_per_run: n32,
        max_tokens_per_run: u64::MAX,
        ..Limits::default()
    };
    let model: Arc<dyn Model> = Arc::new(InstantModel { fan_out: n });
    let config = RunConfig {
        run_id: format!("bench-{n}"),
        experiment: "bench".into(),
        root_agent: "root".into(),
        task: "fan out".into(),
        agents: BTreeMap::from([
            ("root".to_owned(), agent("root", &["call_agent", "get_task_status"], &["worker"])),
            ("worker".to_owned(), agent("worker", &[], &[])),
        ]),
        limits,
        models: ModelTable::from_models([("instant".to_owned(), model)]),
        slm_alias: "slm".into(),
        salt: 7,
        prices: Default::default(),
        routing: None,
        seed: None,
        memory: None,
        mcp: None,
        external_root: false,
    };
    runtime.block_on(async move {
        let baseline = LIVE.load(Ordering::Relaxed);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let started = Instant::now();
        let mut handle = spawn_run(config, tx, Arc::new(SystemClock)).unwrap();
        let drain = tokio::spawn(async move {
            let mut count = 0usize;
            while let Some(event) = rx.recv().await {
                count += 1;
                if matches!(event.body, EventBody::RunFinished { .. }) {
                    break;
                }
            }
            count
        });
        let summary = handle.wait().await;
        let seconds = started.elapsed().as_secs_f64();
        let events = drain.await.unwrap();
        assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
        assert_eq!(summary.tasks.completed as usize, n + 1);
        // Let finished tasks' last clones of shared state drop before counting what is held.
        tokio::task::yield_now().await;
        let held = LIVE.load(Ordering::Relaxed) - baseline;
        drop(handle);
        Figures { seconds, live_bytes_per_task: held as f64 / (n + 1) as f64, events }
    })
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1_000, 10_000, 100_000] } else { sizes };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // Warm up the runtime and the allocator.
    measure(&runtime, 100);

    println!("troupe runtime: a root agent starts N sub-agents at once; an instant model answers each");
    println!(
        "{:>9} {:>10} {:>14} {:>14} {:>14} {:>12}",
        "subtasks", "wall (s)", "subtasks/s", "µs/subtask", "held B/task", "events"
    );
    let mut per_task_us = Vec::new();
    for &n in &sizes {
        let f = measure(&runtime, n);
        let us = f.seconds * 1e6 / n as f64;
        per_task_us.push(us);
        println!(
            "{:>9} {:>10.3} {:>14.0} {:>14.1} {:>14.0} {:>12}",
            n,
            f.seconds,
            n as f64 / f.seconds,
            us,
            f.live_bytes_per_task,
            f.events
        );
    }
    if let (Some(first), Some(last)) = (per_task_us.first(), per_task_us.last()) {
        println!("cost per subtask, largest vs smallest size: {:.2}× (1.00× = linear)", last / first);
    }
    println!("peak RSS: {} MiB", troupe::model::local::bench::peak_rss_kib() / 1024);
}
