//! The headless view of a run (`troupe run`): a reducer over [`Event`]s and the one-line
//! progress and closing summary it renders.
//!
//! Invariant: pure. It reads events and a `now` passed in, and returns strings; printing,
//! throttling and terminal detection belong to the binary.

use crate::protocol::{Event, EventBody, Millis, RunStatus, TaskStatus, Usage, shorten};

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// What the progress line knows about a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub run_id: String,
    pub experiment: String,
    pub started_at: Option<Millis>,
    pub working: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub usage: Usage,
    pub limits_hit: u64,
    pub finished: Option<Finished>,
}

/// The `run_finished` event, kept for the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub status: RunStatus,
    pub result: Option<String>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

impl Progress {
    pub fn apply(&mut self, event: &Event) {
        match &event.body {
            EventBody::RunStarted { run_id, experiment, .. } => {
                self.run_id = run_id.clone();
                self.experiment = experiment.clone();
                self.started_at = Some(event.ts);
            }
            EventBody::TaskCreated { .. } => self.working += 1,
            EventBody::TaskStatus { status, .. } => {
                let counter = match status {
                    TaskStatus::Working | TaskStatus::InputRequired => return,
                    TaskStatus::Completed => &mut self.completed,
                    TaskStatus::Failed => &mut self.failed,
                    TaskStatus::Cancelled => &mut self.cancelled,
                };
                *counter += 1;
                self.working = self.working.saturating_sub(1);
            }
            EventBody::Usage { run_total, .. } => self.usage = *run_total,
            EventBody::LimitHit { .. } => self.limits_hit += 1,
            EventBody::Routed { .. } | EventBody::MemoryRecalled { .. } | EventBody::McpTools { .. } => {}
            EventBody::RunFinished { status, result, error, usage, elapsed_ms, .. } => {
                self.usage = *usage;
                self.finished = Some(Finished {
                    status: *status,
                    result: result.clone(),
                    error: error.clone(),
                    elapsed_ms: *elapsed_ms,
                });
            }
            EventBody::Message { .. }
            | EventBody::MessageDelta { .. }
            | EventBody::ToolCall { .. }
            | EventBody::ToolResult { .. }
            | EventBody::ChildrenOnFinish { .. } => {}
        }
    }

    /// The live line: `⠹ smoke · 2 working · 5 done · 1 failed · 1.2k tokens · 3.4s`.
    pub fn line(&self, now: Millis, frame: usize) -> String {
        let elapsed = self.started_at.map_or(0, |start| now.saturating_sub(start));
        let mut line = format!(
            "{} {} · {} working · {} done",
            SPINNER[frame % SPINNER.len()],
            self.experiment,
            self.working,
            self.completed
        );
        if self.failed > 0 {
            line.push_str(&format!(" · {} failed", self.failed));
        }
        if self.cancelled > 0 {
            line.push_str(&format!(" · {} cancelled", self.cancelled));
        }
        line.push_str(&format!(" · {} tokens · {}", compact(self.usage.total_tokens()), seconds(elapsed)));
        line
    }

    /// The closing lines, for stderr.
    pub fn summary(&self) -> String {
        let Some(finished) = &self.finished else {
            return "the run ended without a run_finished event".to_owned();
        };
        let tasks = self.completed + self.failed + self.cancelled + self.working;
        let mut by_state = vec![format!("{} completed", self.completed)];
        if self.failed > 0 {
            by_state.push(format!("{} failed", self.failed));
        }
        if self.cancelled > 0 {
            by_state.push(format!("{} cancelled", self.cancelled));
        }
        let mut out = format!(
            "{} in {} · {} tasks ({}) · {} tokens ({} in / {} out) · {} model calls",
            finished.status.as_str(),
            seconds(finished.elapsed_ms),
            tasks,
            by_state.join(", "),
            compact(self.usage.total_tokens()),
            compact(self.usage.input_tokens),
            compact(self.usage.output_tokens),
            self.usage.model_calls
        );
        if self.limits_hit > 0 {
            out.push_str(&format!(" · {} limit hits", self.limits_hit));
        }
        match (&finished.result, &finished.error) {
            (Some(result), _) => out.push_str(&format!("\nresult: {}", one_line(result, 400))),
            (None, Some(error)) => out.push_str(&format!("\nerror: {}", one_line(error, 400))),
            (None, None) => {}
        }
        out
    }
}

/// `1234` → `1.2k`.
fn compact(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", n as f64 / 1_000.0),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

fn seconds(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1_000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1_000)
    }
}

fn one_line(text: &str, max: usize) -> String {
    shorten(&text.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{TaskCounts, TaskId, TaskKind};
    use pretty_assertions::assert_eq;

    fn event(ts: Millis, body: EventBody) -> Event {
        Event { seq: 0, ts, body }
    }

    #[test]
    fn counts_follow_the_events_and_render() {
        let id = TaskId::from_code(1);
        let mut progress = Progress::default();
        progress.apply(&event(
            1_000,
            EventBody::RunStarted {
                run_id: "r".into(),
                experiment: "smoke".into(),
                root_agent: "a".into(),
                task: "t".into(),
                prices: Default::default(),
                format: crate::protocol::EVENTS_FORMAT,
                troupe_version: None,
            },
        ));
        for _ in 0..3 {
            progress.apply(&event(
                1_000,
                EventBody::TaskCreated {
                    uri: id,
                    parent: None,
                    kind: TaskKind::Agent,
                    agent: "a".into(),
                    model: "m".into(),
                    task: "t".into(),
                },
            ));
        }
        progress.apply(&event(
            1_500,
            EventBody::TaskStatus {
                uri: id,
                status: TaskStatus::Working,
                status_message: Some("thinking".into()),
                result: None,
                error: None,
            },
        ));
        progress.apply(&event(
            2_000,
            EventBody::TaskStatus {
                uri: id,
                status: TaskStatus::Completed,
                status_message: None,
                result: Some("x".into()),
                error: None,
            },
        ));
        progress.apply(&event(
            2_000,
            EventBody::TaskStatus {
                uri: id,
                status: TaskStatus::Failed,
                status_message: None,
                result: None,
                error: Some("e".into()),
            },
        ));
        let run_total = Usage { input_tokens: 1_200, output_tokens: 34, model_calls: 3 };
        progress.apply(&event(
            2_000,
            EventBody::Usage { uri: id, input_tokens: 1, output_tokens: 1, task_total: run_total, run_total },
        ));
        assert_eq!(progress.line(4_400, 2), "⠹ smoke · 1 working · 1 done · 1 failed · 1.2k tokens · 3.4s");

        progress.apply(&event(
            5_000,
            EventBody::TaskStatus {
                uri: id,
                status: TaskStatus::Cancelled,
                status_message: None,
                result: None,
                error: Some("stop".into()),
            },
        ));
        progress.apply(&event(
            5_000,
            EventBody::RunFinished {
                status: RunStatus::Completed,
                result: Some("The answer\nis 42.".into()),
                error: None,
                usage: run_total,
                tasks: TaskCounts::default(),
                elapsed_ms: 4_000,
            },
        ));
        assert_eq!(
            progress.summary(),
            "completed in 4.0s · 3 tasks (1 completed, 1 failed, 1 cancelled) · 1.2k tokens (1.2k in / 34 out) · 3 model calls\nresult: The answer is 42."
        );
    }
}
