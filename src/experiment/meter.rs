//! A trial's metrics, folded from its run's events as they stream: subtasks, depth, tool
//! errors, limit hits, model calls, tokens and cost.
//!
//! Invariant: pure and total over any sequence of events (a run cut short still measures what
//! it did); the figures are the same whether fed live or from `events.jsonl`.

use std::collections::{BTreeMap, HashMap};

use crate::protocol::{Event, EventBody, Price, RunStatus, TaskId, Usage};

/// What a finished (or cut short) run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    pub status: Option<RunStatus>,
    pub answer: Option<String>,
    pub error: Option<String>,
    pub usage: Usage,
    pub cost: Option<f64>,
    pub wall_ms: u64,
    pub subtasks: u64,
    pub depth: u32,
    pub tool_errors: u64,
    pub limit_hits: u64,
    pub turns: u64,
    /// Ids of the memory lessons recalled for any of its agents, without repeats.
    pub recalled: Vec<i64>,
}

#[derive(Default)]
pub struct Meter {
    measured: Measured,
    prices: BTreeMap<String, Price>,
    /// Depth and model alias of each task seen.
    tasks: HashMap<TaskId, (u32, String)>,
    cost: f64,
    /// Usage summed from `usage` events, for a run that never finished.
    usage: Usage,
}

impl Meter {
    pub fn apply(&mut self, event: &Event) {
        let m = &mut self.measured;
        match &event.body {
            EventBody::RunStarted { prices, .. } => self.prices.clone_from(prices),
            EventBody::TaskCreated { uri, parent, model, .. } => {
                let depth = parent.and_then(|p| self.tasks.get(&p)).map_or(0, |(d, _)| d + 1);
                if parent.is_some() {
                    m.subtasks += 1;
                    m.depth = m.depth.max(depth);
                }
                self.tasks.insert(*uri, (depth, model.clone()));
            }
            EventBody::Routed { uri, alias, .. } => {
                if let Some(task) = self.tasks.get_mut(uri) {
                    task.1.clone_from(alias);
                }
            }
            EventBody::ToolResult { is_error: true, .. } => m.tool_errors += 1,
            EventBody::LimitHit { .. } => m.limit_hits += 1,
            EventBody::MemoryRecalled { lessons, .. } => {
                for lesson in lessons {
                    if !m.recalled.contains(&lesson.id) {
                        m.recalled.push(lesson.id);
                    }
                }
            }
            EventBody::Usage { uri, input_tokens, output_tokens, .. } => {
                m.turns += 1;
                self.usage.input_tokens += input_tokens;
                self.usage.output_tokens += output_tokens;
                let alias = self.tasks.get(uri).map(|(_, alias)| alias.as_str());
                if let Some(price) = alias.and_then(|a| self.prices.get(a)) {
                    self.cost += *input_tokens as f64 * price.input_per_mtok / 1e6
                        + *output_tokens as f64 * price.output_per_mtok / 1e6;
                }
            }
            EventBody::RunFinished { status, result, error, usage, elapsed_ms, .. } => {
                m.status = Some(*status);
                m.answer.clone_from(result);
                m.error.clone_from(error);
                m.usage = *usage;
                m.wall_ms = *elapsed_ms;
            }
            _ => {}
        }
    }

    pub fn finish(mut self) -> Measured {
        if self.measured.status.is_none() {
            self.measured.usage = self.usage;
        }
        self.measured.cost = (!self.prices.is_empty()).then_some(self.cost);
        self.measured
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{TaskCounts, TaskKind};

    fn event(body: EventBody) -> Event {
        Event { seq: 0, ts: 0, body }
    }

    fn id(n: u32) -> TaskId {
        TaskId::from_code(n)
    }

    #[test]
    fn a_run_is_measured_from_its_events() {
        let mut meter = Meter::default();
        let created = |n, parent, model: &str| EventBody::TaskCreated {
            uri: id(n),
            parent,
            kind: TaskKind::Agent,
            agent: "a".into(),
            model: model.into(),
            task: "t".into(),
        };
        let usage = |n, i, o| EventBody::Usage {
            uri: id(n),
            input_tokens: i,
            output_tokens: o,
            task_total: Usage::default(),
            run_total: Usage::default(),
        };
        let prices = [("big".to_owned(), Price { input_per_mtok: 2.0, output_per_mtok: 10.0 })].into();
        let events = [
            EventBody::RunStarted {
                run_id: "r".into(),
                experiment: "e".into(),
                root_agent: "a".into(),
                task: "t".into(),
                prices,
                format: crate::protocol::EVENTS_FORMAT,
                troupe_version: None,
            },
            created(0, None, "big"),
            created(1, Some(id(0)), "small"),
            created(2, Some(id(1)), "big"),
            usage(0, 1_000_000, 100_000),
            usage(2, 500_000, 0),
            usage(1, 10, 10),
            EventBody::ToolResult {
                uri: id(1),
                call_id: "c".into(),
                tool: "x".into(),
                result: serde_json::json!({}),
                is_error: true,
            },
            EventBody::LimitHit { uri: id(2), limit: "max_depth".into(), value: 2, message: "m".into() },
            EventBody::RunFinished {
                status: RunStatus::Completed,
                result: Some("42".into()),
                error: None,
                usage: Usage { input_tokens: 1_500_010, output_tokens: 100_010, model_calls: 3 },
                tasks: TaskCounts::default(),
                elapsed_ms: 1234,
            },
        ];
        for body in events {
            meter.apply(&event(body));
        }
        let m = meter.finish();
        assert_eq!((m.subtasks, m.depth, m.tool_errors, m.limit_hits, m.turns), (2, 2, 1, 1, 3));
        assert_eq!(m.answer.as_deref(), Some("42"));
        assert_eq!(m.wall_ms, 1234);
        // big: 1.5 M input at $2 + 0.1 M output at $10; small has no price.
        assert!((m.cost.unwrap() - 4.0).abs() < 1e-9, "{:?}", m.cost);
    }

    #[test]
    fn a_run_cut_short_keeps_its_usage_and_has_no_cost_without_prices() {
        let mut meter = Meter::default();
        meter.apply(&event(EventBody::Usage {
            uri: id(0),
            input_tokens: 5,
            output_tokens: 6,
            task_total: Usage::default(),
            run_total: Usage::default(),
        }));
        let m = meter.finish();
        assert_eq!((m.status, m.usage.input_tokens, m.usage.output_tokens, m.cost), (None, 5, 6, None));
    }
}
