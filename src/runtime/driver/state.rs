//! The run's driver ([`RunDriver`]: the run's fixed settings and its locked [`RunLedger`]) and
//! the one way events leave it ([`RunDriver::emit`]), with the state changes that emit them:
//! status messages, a task's end, limits hit, messages.
//!
//! Invariants: the ledger's lock is a `std` mutex never held across an `.await`; an event is
//! sent under it, in the same critical section as the change it reports, so `seq` is dense and
//! in the order things happened. Nothing is sent after `run_finished` (`closed`), and nothing
//! but usage is said of a task after its final status (the rule is the registry's
//! `drops_after_end`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Clock;
use super::profile::Profile;
use crate::config::{Limits, Routing};
use crate::model::ModelTable;
use crate::protocol::{ChatMessage, Event, EventBody, Millis, Price, TaskId, TaskStatus};
use crate::runtime::mcp::McpTools;
use crate::runtime::memory::RunMemory;
use crate::runtime::registry::{Outcome, Registry};

/// What changes while a run runs, kept under the run's one lock: the registry, the next event's
/// `seq`, a cancellation token and long-poll waiters per live task, whether the run is closed,
/// and the money spent.
pub(super) struct RunLedger {
    pub(super) registry: Registry,
    pub(super) next_seq: u64,
    /// Tokens of tasks not yet terminal.
    pub(super) tokens: HashMap<TaskId, CancellationToken>,
    /// Long-polls waiting for a task to end.
    pub(super) waiters: HashMap<TaskId, Arc<Notify>>,
    /// Set once `run_finished` is sent.
    pub(super) closed: bool,
    pub(super) root: Option<TaskId>,
    /// Dollars spent so far, from the aliases' prices (calls to unpriced aliases count 0).
    pub(super) run_cost: f64,
}

/// One run as the driver runs it, shared by every task's work: what was fixed at the start
/// (profiles, limits, models, prices, routing, memory, MCP, clock, the event channel) and the
/// locked [`RunLedger`].
pub(super) struct RunDriver {
    pub(super) profiles: BTreeMap<String, Arc<Profile>>,
    pub(super) limits: Limits,
    pub(super) models: ModelTable,
    pub(super) slm_alias: String,
    pub(super) prices: BTreeMap<String, Price>,
    pub(super) routing: Option<Routing>,
    pub(super) seed: Option<u64>,
    pub(super) memory: Option<Arc<dyn RunMemory>>,
    pub(super) mcp: Option<Arc<dyn McpTools>>,
    pub(super) run_id: String,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) ledger: Mutex<RunLedger>,
    pub(super) started_at: Millis,
}

impl RunDriver {
    pub(super) fn lock(&self) -> MutexGuard<'_, RunLedger> {
        // A panic while holding the lock would leave the registry as it was at the panic;
        // carrying on lets the run report and finish instead of cascading.
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `body` as the next event and returns its `seq`; `None` when it was dropped (the run
    /// is closed, or the task already ended).
    pub(super) fn emit(&self, ledger: &mut RunLedger, body: EventBody) -> Option<u64> {
        if ledger.closed {
            return None;
        }
        // Nothing more is said of a task after its final status (a chunk already in flight when
        // a cancellation lands is dropped); usage is the exception, since those tokens were spent.
        if ledger.registry.drops_after_end(&body) {
            return None;
        }
        let seq = ledger.next_seq;
        let event = Event { seq, ts: self.clock.now(), body };
        ledger.next_seq += 1;
        // The receiver is gone only when the view stopped listening; the run still finishes.
        let _ = self.events.send(event);
        Some(seq)
    }

    /// The profile of the expert task `id` runs.
    pub(super) fn profile_of(&self, id: TaskId) -> Option<Arc<Profile>> {
        let agent = self.lock().registry.resource(id).ok()?.agent;
        self.profiles.get(agent.as_str()).cloned()
    }

    pub(super) fn emit_now(&self, body: EventBody) -> Option<u64> {
        let mut ledger = self.lock();
        self.emit(&mut ledger, body)
    }

    pub(super) fn is_terminal(&self, id: TaskId) -> bool {
        self.lock().registry.status(id).map_or(true, TaskStatus::is_terminal)
    }

    pub(super) fn set_status_message(&self, id: TaskId, message: String) {
        let mut ledger = self.lock();
        if ledger.registry.status(id).map_or(true, TaskStatus::is_terminal) {
            return;
        }
        if ledger.registry.set_status_message(id, Some(message.clone())).is_ok() {
            self.emit(
                &mut ledger,
                EventBody::TaskStatus {
                    uri: id,
                    status: TaskStatus::Working,
                    status_message: Some(message),
                    result: None,
                    error: None,
                },
            );
        }
    }

    /// Ends a task, tells its waiters, and reports it. False if it had already ended.
    pub(super) fn finish_locked(&self, ledger: &mut RunLedger, id: TaskId, outcome: Outcome) -> bool {
        let (result, error) = match &outcome {
            Outcome::Completed(text) => (Some(text.clone()), None),
            Outcome::Failed(text) | Outcome::Cancelled(text) => (None, Some(text.clone())),
        };
        let Ok(status) = ledger.registry.finish(id, outcome, self.clock.now()) else { return false };
        // Stops whatever still runs for it (a model stream after a timeout, say).
        if let Some(token) = ledger.tokens.remove(&id) {
            token.cancel();
        }
        if let Some(notify) = ledger.waiters.remove(&id) {
            notify.notify_waiters();
        }
        self.emit(ledger, EventBody::TaskStatus { uri: id, status, status_message: None, result, error });
        true
    }

    pub(super) fn complete(&self, id: TaskId, result: String) {
        let mut ledger = self.lock();
        self.finish_locked(&mut ledger, id, Outcome::Completed(result));
    }

    pub(super) fn limit_hit(&self, id: TaskId, limit: &str, value: u64, message: String) {
        self.emit_now(EventBody::LimitHit { uri: id, limit: limit.to_owned(), value, message });
    }

    pub(super) fn record_message(&self, id: TaskId, message: &ChatMessage) {
        self.emit_now(EventBody::Message { uri: id, role: message.role, content: message.content.clone() });
    }
}
