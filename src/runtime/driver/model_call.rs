//! Model calls: streaming one call into deltas and usage, the run's token and cost budgets,
//! `model = "auto"` (routing, asking a classifier), the model alias a caller may choose, and a
//! `call_slm` subtask's single call.
//!
//! Invariants: usage is recorded as it arrives, even for a task that has already ended (those
//! tokens were spent); a call with no usage reported counts as one model call; a provider may
//! end a request as cancelled only when it was asked to; a stream that closes with nothing is
//! a provider error, not an empty reply.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::profile::Profile;
use super::state::RunDriver;
use crate::config::AUTO_MODEL;
use crate::model::{ModelChunk, ModelError, ModelRequest, Sampling};
use crate::protocol::{ChatMessage, EventBody, TaskId, ToolCall, ToolChoice, Usage};
use crate::runtime::routing::{self, Route};

/// A model's whole reply.
pub(super) struct ModelReply {
    pub(super) text: String,
    pub(super) calls: Vec<ToolCall>,
}

impl RunDriver {
    /// Refuses a model call when the run's token budget or cost budget is spent.
    pub(super) fn check_token_budget(&self, id: TaskId) -> Result<(), String> {
        let (used, cost) = {
            let ledger = self.lock();
            (ledger.registry.run_usage().total_tokens(), ledger.run_cost)
        };
        let max = self.limits.max_tokens_per_run;
        if used >= max {
            let message = format!("max_tokens_per_run is {max}: the run has used {used} tokens");
            self.limit_hit(id, "max_tokens_per_run", max, message.clone());
            return Err(message);
        }
        if let Some(max_cost) = self.limits.max_cost
            && cost >= max_cost
        {
            let message = format!("max_cost is ${max_cost}: the run has cost ${cost:.4}");
            // `value` is whole cents: the event's field is an integer.
            self.limit_hit(id, "max_cost", (max_cost * 100.0).round() as u64, message.clone());
            return Err(message);
        }
        Ok(())
    }

    /// Streams one model call, reporting deltas and usage as they come.
    pub(super) async fn call_model(
        &self,
        id: TaskId,
        alias: &str,
        request: ModelRequest,
        cancel: &CancellationToken,
    ) -> Result<ModelReply, ModelError> {
        let model = self.models.get(alias)?.clone();
        let mut stream = model.stream(request, cancel.clone());
        let mut reply = ModelReply { text: String::new(), calls: Vec::new() };
        let mut usage_seen = false;
        loop {
            let chunk = tokio::select! {
                () = cancel.cancelled() => return Err(ModelError::Cancelled),
                chunk = stream.next() => chunk,
            };
            match chunk {
                None => break,
                // A provider may only end a request as cancelled when it was asked to.
                Some(Err(ModelError::Cancelled)) if !cancel.is_cancelled() => {
                    return Err(ModelError::Provider("the model stopped the request unasked".into()));
                }
                Some(Err(err)) => return Err(err),
                Some(Ok(ModelChunk::TextDelta(delta))) => {
                    reply.text.push_str(&delta);
                    self.emit_now(EventBody::MessageDelta { uri: id, delta });
                }
                Some(Ok(ModelChunk::ToolCall(call))) => reply.calls.push(call),
                Some(Ok(ModelChunk::Usage(usage))) => {
                    usage_seen = true;
                    self.add_usage(id, alias, usage);
                }
                Some(Ok(ModelChunk::Notice(notice))) => self.set_status_message(id, notice),
            }
        }
        if !usage_seen {
            if reply.text.is_empty() && reply.calls.is_empty() {
                // A stream that closes with nothing at all is a provider that died, not a reply.
                return Err(ModelError::Provider("the model ended the request without a reply".into()));
            }
            self.add_usage(id, alias, Usage { model_calls: 1, ..Usage::default() });
        }
        Ok(reply)
    }

    pub(super) fn add_usage(&self, id: TaskId, alias: &str, usage: Usage) {
        let mut ledger = self.lock();
        if let Some(price) = self.prices.get(alias) {
            ledger.run_cost += price.cost(&usage);
        }
        if let Ok((task_total, run_total)) = ledger.registry.add_usage(id, &usage) {
            self.emit(
                &mut ledger,
                EventBody::Usage {
                    uri: id,
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    task_total,
                    run_total,
                },
            );
        }
    }

    /// The alias `id` runs on: its expert's, or for `model = "auto"` the routing's choice,
    /// recorded as a `routed` event. `None` when the task ended instead (failed, cancelled).
    pub(super) async fn resolve_model(
        &self,
        id: TaskId,
        profile: &Profile,
        task: &str,
        cancel: &CancellationToken,
    ) -> Option<Arc<str>> {
        if &*profile.model != AUTO_MODEL {
            return Some(profile.model.clone());
        }
        let Some(routing) = &self.routing else {
            self.fail(id, "model = \"auto\" needs a [routing] table in troupe.toml".into());
            return None;
        };
        let route = match routing::route(routing, profile.spec.difficulty, task) {
            Route::Classify { with } => {
                self.set_status_message(id, format!("routing: asking {with} to classify the task"));
                let request = ModelRequest {
                    task: id,
                    agent: "router".into(),
                    messages: vec![ChatMessage::user(routing::classify_prompt(task))],
                    tools: Vec::new(),
                    tool_choice: ToolChoice::Auto,
                    forced_tool: None,
                    sampling: Sampling { temperature: Some(0.0), max_tokens: Some(4), ..Sampling::default() },
                };
                let verdict = match self.call_model(id, &with, request, cancel).await {
                    Ok(reply) => Some(reply.text),
                    Err(ModelError::Cancelled) => return None,
                    Err(_) => None,
                };
                routing::after_classifying(routing, verdict.as_deref())
            }
            decided => decided,
        };
        let Route::Alias { alias, reason } = route else {
            self.fail(id, "routing could not decide a model".into());
            return None;
        };
        if let Err(err) = self.models.get(&alias) {
            self.fail(id, format!("routing chose `{alias}`: {err}"));
            return None;
        }
        self.emit_now(EventBody::Routed { uri: id, alias: alias.clone(), reason });
        Some(Arc::from(alias.as_str()))
    }

    /// The alias a caller named for a subtask, if it may choose and the alias exists.
    pub(super) fn chosen_model(&self, caller: &Profile, alias: &str) -> Result<Arc<str>, String> {
        if !caller.spec.choose_model {
            return Err(format!(
                "you may not choose a model (`model` = `{alias}`): leave `model` out; an expert's file allows it with choose_model = true"
            ));
        }
        self.models.get(alias).map_err(|e| e.to_string())?;
        Ok(Arc::from(alias))
    }

    pub(super) async fn run_slm(
        &self,
        id: TaskId,
        alias: Arc<str>,
        prompt: String,
        system: Option<String>,
        max_tokens: Option<u32>,
        cancel: &CancellationToken,
    ) {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(ChatMessage::system(system));
        }
        messages.push(ChatMessage::user(prompt));
        for message in &messages {
            self.record_message(id, message);
        }
        if let Err(message) = self.check_token_budget(id) {
            self.fail(id, message);
            return;
        }
        self.set_status_message(id, "generating".into());
        let request = ModelRequest {
            task: id,
            agent: "slm".into(),
            messages,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            forced_tool: None,
            sampling: Sampling { max_tokens, seed: self.seed, ..Sampling::default() },
        };
        match self.call_model(id, &alias, request, cancel).await {
            Ok(reply) => {
                self.record_message(id, &ChatMessage::assistant(reply.text.clone(), Vec::new()));
                if reply.text.trim().is_empty() {
                    self.fail(id, "the small model returned an empty answer".into());
                } else {
                    self.complete(id, reply.text);
                }
            }
            Err(ModelError::Cancelled) => {}
            Err(err) => self.fail(id, format!("model error: {err}")),
        }
    }
}
