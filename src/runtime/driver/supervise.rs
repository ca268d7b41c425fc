//! Supervision and cancellation: each subtask's work runs as its own tokio task under a
//! supervisor that fails it when it panics, runs out of wall time, or returns without a result;
//! cancelling a subtree; long polls; and the run's supervisor, which closes the run with
//! `run_finished` once the root has ended.
//!
//! Invariants: a task always ends. A token is cancelled only after the registry has marked its
//! task (and, when a task fails, its working children are cancelled first), so nothing is ever
//! `failed` that was `cancelled`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::RunSummary;
use super::profile::Profile;
use super::state::{RunDriver, RunLedger};
use crate::protocol::{EventBody, OnFinish, Op, RunStatus, TaskId, TaskStatus};
use crate::runtime::mcp::McpTool;
use crate::runtime::registry::Outcome;

/// What a spawned task runs.
pub(super) enum SubtaskWork {
    Agent {
        profile: Arc<Profile>,
        task: String,
    },
    Slm {
        alias: Arc<str>,
        prompt: String,
        system: Option<String>,
        max_tokens: Option<u32>,
    },
    /// Following a task an MCP server runs for a tool call.
    Mcp {
        tool: Box<McpTool>,
        task_id: String,
        poll: Duration,
    },
}

pub(super) fn spawn_task(
    driver: Arc<RunDriver>,
    id: TaskId,
    work: SubtaskWork,
    token: CancellationToken,
    wall: Duration,
) {
    tokio::spawn(async move {
        // The work runs as its own task so that a panic in it is caught here and fails the
        // subtask instead of leaving it `working` forever.
        let worker = {
            let driver = driver.clone();
            let token = token.clone();
            tokio::spawn(async move {
                match work {
                    SubtaskWork::Agent { profile, task } => driver.run_agent(id, profile, task, &token).await,
                    SubtaskWork::Slm { alias, prompt, system, max_tokens } => {
                        driver.run_slm(id, alias, prompt, system, max_tokens, &token).await
                    }
                    SubtaskWork::Mcp { tool, task_id, poll } => driver.follow_mcp_task(id, *tool, task_id, poll).await,
                }
            })
        };
        let abort = worker.abort_handle();
        tokio::select! {
            // Whoever cancelled the token has already marked the task and its subtree.
            () = token.cancelled() => abort.abort(),
            outcome = tokio::time::timeout(wall, worker) => match outcome {
                Err(_elapsed) => {
                    abort.abort();
                    let secs = wall.as_secs();
                    let message = format!("max_wall_seconds_per_subtask is {secs}: the subtask ran out of time");
                    driver.limit_hit(id, "max_wall_seconds_per_subtask", secs, message.clone());
                    driver.fail(id, message);
                }
                Ok(Err(join)) if join.is_panic() => {
                    tracing::error!(task = %id, "a subtask panicked: {join}");
                    driver.fail(id, "internal error: the subtask crashed (a bug in troupe; please report it)".into());
                }
                Ok(_) => {}
            },
        }
        // Every path above should have ended the task; make sure, so the run can finish.
        if !driver.is_terminal(id) {
            driver.fail(id, "the subtask stopped without a result".into());
        }
    });
}

impl RunDriver {
    pub(super) fn handle_op(&self, op: Op) {
        match op {
            Op::CancelTask { uri } => self.cancel_subtree(uri, "cancelled by the user"),
            Op::CancelRun => {
                let root = self.lock().root;
                if let Some(root) = root {
                    self.cancel_subtree(root, "cancelled by the user");
                }
            }
        }
    }

    /// Fails a task; its children still working are orphans and are cancelled first, so that no
    /// task ever sees its token cancelled before the registry has marked it.
    pub(super) fn fail(&self, id: TaskId, error: String) {
        let mut ledger = self.lock();
        if ledger.registry.status(id).map_or(true, TaskStatus::is_terminal) {
            return;
        }
        let working = ledger.registry.working_children(id).unwrap_or_default();
        if !working.is_empty() {
            self.emit(
                &mut ledger,
                EventBody::ChildrenOnFinish { uri: id, policy: OnFinish::CancelChildren, children: working.clone() },
            );
            for child in working {
                self.cancel_subtree_locked(&mut ledger, child, "its parent failed");
            }
        }
        self.finish_locked(&mut ledger, id, Outcome::Failed(error));
    }

    pub(super) fn cancel_subtree(&self, id: TaskId, reason: &str) {
        let mut ledger = self.lock();
        self.cancel_subtree_locked(&mut ledger, id, reason);
    }

    /// Marks `id` and its working descendants cancelled, then cancels their tokens.
    pub(super) fn cancel_subtree_locked(&self, ledger: &mut RunLedger, id: TaskId, reason: &str) {
        let now = self.clock.now();
        let Ok(cancelled) = ledger.registry.cancel_subtree(id, reason, now) else { return };
        for task in &cancelled {
            if let Some(notify) = ledger.waiters.remove(task) {
                notify.notify_waiters();
            }
            self.emit(
                ledger,
                EventBody::TaskStatus {
                    uri: *task,
                    status: TaskStatus::Cancelled,
                    status_message: None,
                    result: None,
                    error: Some(reason.to_owned()),
                },
            );
        }
        for task in cancelled {
            if let Some(token) = ledger.tokens.remove(&task) {
                token.cancel();
            }
        }
    }

    /// Waits until `id` is terminal (true), or the deadline passes or `cancel` fires (false).
    pub(super) async fn wait_terminal(
        &self,
        id: TaskId,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> bool {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let notify = {
                let mut ledger = self.lock();
                match ledger.registry.status(id) {
                    Ok(status) if !status.is_terminal() => {}
                    _ => return true,
                }
                ledger.waiters.entry(id).or_insert_with(|| Arc::new(Notify::new())).clone()
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_terminal(id) {
                return true;
            }
            let sleep = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = &mut notified => {}
                () = cancel.cancelled() => return false,
                () = sleep => return self.is_terminal(id),
            }
        }
    }

    /// Waits for the root to end, sweeps what is left, and closes the run.
    pub(super) async fn supervise(self: Arc<Self>, root: TaskId) -> RunSummary {
        let never = CancellationToken::new();
        self.wait_terminal(root, None, &never).await;
        let mut ledger = self.lock();
        let leftovers: Vec<TaskId> = ledger.tokens.keys().copied().collect();
        for task in leftovers {
            self.cancel_subtree_locked(&mut ledger, task, "the run ended");
        }
        let summary = self.summary_locked(&ledger, root);
        self.emit(
            &mut ledger,
            EventBody::RunFinished {
                status: summary.status,
                result: summary.result.clone(),
                error: summary.error.clone(),
                usage: summary.usage,
                tasks: summary.tasks,
                elapsed_ms: summary.elapsed_ms,
            },
        );
        ledger.closed = true;
        summary
    }

    pub(super) fn summary_locked(&self, ledger: &RunLedger, root: TaskId) -> RunSummary {
        let resource = ledger.registry.resource(root).ok();
        let status = match resource.as_ref().map(|r| r.status) {
            Some(TaskStatus::Completed) => RunStatus::Completed,
            Some(TaskStatus::Cancelled) => RunStatus::Cancelled,
            _ => RunStatus::Failed,
        };
        RunSummary {
            status,
            root,
            result: resource.as_ref().and_then(|r| r.result.clone()),
            error: resource.as_ref().and_then(|r| r.error.clone()),
            usage: ledger.registry.run_usage(),
            tasks: ledger.registry.counts(),
            elapsed_ms: self.clock.now().saturating_sub(self.started_at),
        }
    }

    pub(super) fn summary_after_crash(&self, root: TaskId, why: &str) -> RunSummary {
        let ledger = self.lock();
        let mut summary = self.summary_locked(&ledger, root);
        summary.status = RunStatus::Failed;
        summary.error = Some(format!("the run's supervisor stopped: {why}"));
        summary
    }
}
