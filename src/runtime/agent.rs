//! The agent state machine: one agent's loop of model turns and tool calls, as a sans-IO
//! machine. Inputs arrive through `handle_*`; what the driver must do next comes out of
//! [`AgentMachine::poll_effect`].
//!
//! Invariants: pure (no tokio, no clock, no I/O). The conversation only grows. Every tool call
//! a model makes gets exactly one result in the conversation, in call order, before the next
//! model turn. The turn limit is enforced here: the last allowed turn is told so and offered no
//! tools, and a model that still calls tools then fails the agent with the limit named.
//! Which tool an expert's `tool_plan` forces on a turn is decided here too ([`planned_tool`]).

use std::collections::VecDeque;

use serde_json::Value;

use crate::protocol::{ChatMessage, Role, ToolCall};

/// Who the agent is, as far as its loop is concerned.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSetup {
    pub system_prompt: String,
    pub task: String,
    /// Names of the tools the agent is offered; calls to anything else are refused.
    pub tool_names: Vec<String>,
    /// Model calls allowed, at least 1.
    pub max_turns: u32,
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentEffect {
    /// A message joined the conversation (record it).
    Message(ChatMessage),
    /// Ask the model for the next turn over [`AgentMachine::conversation`]. On the last turn
    /// `offer_tools` is false.
    CallModel { turn: u32, offer_tools: bool },
    /// Execute a tool call and report with [`AgentMachine::handle_tool_result`].
    RunTool(ToolCall),
    /// Before the last turn: wait until the subtasks this agent started have ended, then report
    /// them all with [`AgentMachine::handle_children_settled`], so the answer is written from
    /// their results rather than from whatever a too-short poll happened to see.
    AwaitChildren,
    /// A call the machine refused itself (unknown tool, arguments not an object); its error
    /// result is already in the conversation. Record it like a tool call and its result.
    ToolRefused { call: ToolCall, error: String },
    /// The agent answered.
    Finish(String),
    /// The agent cannot go on.
    Fail { error: String, limit: Option<TurnLimit> },
}

/// The turn limit, when it is what stopped the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnLimit {
    pub max_turns: u32,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    AwaitingModel,
    /// `remaining` counts the `None`s in `results`, so a turn with thousands of calls completes
    /// in linear time.
    AwaitingTools {
        calls: Vec<ToolCall>,
        results: Vec<Option<(String, bool)>>,
        remaining: usize,
    },
    /// The last turn waits for the subtasks still working.
    AwaitingChildren,
    Done,
}

/// How a subtask this agent started ended, as the last turn's note reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledChild {
    pub agent: String,
    /// `completed`, `failed`, `cancelled` (or `working` when the wait was cut short).
    pub status: String,
    /// The result, or the error.
    pub text: String,
}

/// The tool an expert's `tool_plan` forces on model turn `turn` (counted from 1, as
/// [`AgentEffect::CallModel`] counts): the plan's entry for that turn; none past the plan's end,
/// or on a turn that offers no tools (the last). An MCP tool is planned by its reference
/// (`mcp:<server>/<tool>`) but forced by the name its model sees: `mcp_name` gives it, and an
/// entry it does not know (a built-in, or an MCP tool left out) is forced as written.
pub fn planned_tool(
    tool_plan: &[String],
    turn: u32,
    offer_tools: bool,
    mcp_name: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    if !offer_tools {
        return None;
    }
    let index = usize::try_from(turn.checked_sub(1)?).ok()?;
    let planned = tool_plan.get(index)?;
    Some(mcp_name(planned).unwrap_or_else(|| planned.clone()))
}

/// One agent's loop.
#[derive(Debug)]
pub struct AgentMachine {
    setup: AgentSetup,
    conversation: Vec<ChatMessage>,
    turns_used: u32,
    state: State,
    effects: VecDeque<AgentEffect>,
}

impl AgentMachine {
    /// Starts the loop: the system prompt and the task join the conversation, and the first
    /// model turn is requested.
    pub fn new(setup: AgentSetup) -> Self {
        let mut machine = AgentMachine {
            conversation: Vec::new(),
            turns_used: 0,
            state: State::AwaitingModel,
            effects: VecDeque::new(),
            setup: AgentSetup { max_turns: setup.max_turns.max(1), ..setup },
        };
        if !machine.setup.system_prompt.trim().is_empty() {
            machine.push(ChatMessage::system(machine.setup.system_prompt.clone()));
        }
        machine.push(ChatMessage::user(machine.setup.task.clone()));
        machine.request_turn();
        machine
    }

    pub fn conversation(&self) -> &[ChatMessage] {
        &self.conversation
    }

    pub fn turns_used(&self) -> u32 {
        self.turns_used
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next thing to do, if any.
    pub fn poll_effect(&mut self) -> Option<AgentEffect> {
        self.effects.pop_front()
    }

    /// The model finished a turn.
    pub fn handle_model_reply(&mut self, text: String, tool_calls: Vec<ToolCall>) {
        if self.state != State::AwaitingModel {
            return;
        }
        let last_turn = self.turns_used >= self.setup.max_turns;
        let tool_calls = unique_ids(tool_calls, self.turns_used);
        self.push(ChatMessage::assistant(text.clone(), tool_calls.clone()));
        if tool_calls.is_empty() {
            if text.trim().is_empty() {
                self.push(ChatMessage::user(
                    "[troupe] Your reply was empty. Answer the task, or call one of your tools.",
                ));
                self.request_turn();
            } else {
                self.finish(AgentEffect::Finish(text));
            }
            return;
        }
        // An agent without tools that calls one anyway is told so (below, as a refused call);
        // only on the last turn is a call a failure, since no turn is left to answer in.
        if last_turn && !self.setup.tool_names.is_empty() {
            let max_turns = self.setup.max_turns;
            self.finish(AgentEffect::Fail {
                error: format!(
                    "max_turns_per_agent is {max_turns}: the agent still called tools on its last turn instead of answering"
                ),
                limit: Some(TurnLimit { max_turns }),
            });
            return;
        }
        let mut results = Vec::with_capacity(tool_calls.len());
        let mut remaining = 0;
        for call in &tool_calls {
            match self.refusal(call) {
                Some(error) => {
                    self.effects.push_back(AgentEffect::ToolRefused { call: call.clone(), error: error.clone() });
                    results.push(Some((error, true)));
                }
                None => {
                    self.effects.push_back(AgentEffect::RunTool(call.clone()));
                    results.push(None);
                    remaining += 1;
                }
            }
        }
        self.state = State::AwaitingTools { calls: tool_calls, results, remaining };
        self.complete_tools_if_ready();
    }

    /// The model call failed (after the provider's own retries).
    pub fn handle_model_error(&mut self, error: String) {
        if self.state != State::AwaitingModel {
            return;
        }
        self.finish(AgentEffect::Fail { error: format!("model error: {error}"), limit: None });
    }

    /// A tool call's result. Unknown call ids and late results are ignored.
    pub fn handle_tool_result(&mut self, call_id: &str, content: String, is_error: bool) {
        let State::AwaitingTools { calls, results, remaining } = &mut self.state else { return };
        // Results usually arrive in call order, so start looking where the next one should be:
        // a turn of thousands of calls then completes in linear time.
        let hint = results.len() - *remaining;
        let found = (hint..calls.len()).chain(0..hint).find(|&i| calls[i].id == call_id);
        let Some(index) = found else { return };
        if results[index].is_none() {
            results[index] = Some((content, is_error));
            *remaining -= 1;
        }
        self.complete_tools_if_ready();
    }

    /// The agent was cancelled: nothing more will be asked of the driver.
    pub fn handle_cancel(&mut self) {
        self.state = State::Done;
        self.effects.clear();
    }

    fn complete_tools_if_ready(&mut self) {
        let State::AwaitingTools { calls, results, remaining } = &self.state else { return };
        if *remaining > 0 {
            return;
        }
        let messages: Vec<ChatMessage> = calls
            .iter()
            .zip(results)
            .filter_map(|(call, result)| {
                result.as_ref().map(|(content, is_error)| ChatMessage::tool_result(call, content.clone(), *is_error))
            })
            .collect();
        // Tool results are recorded by the driver as `tool_result` events, so they are not
        // emitted again as `Message` effects.
        self.conversation.extend(messages);
        self.state = State::AwaitingModel;
        self.request_turn();
    }

    fn refusal(&self, call: &ToolCall) -> Option<String> {
        if !self.setup.tool_names.contains(&call.name) {
            let available = if self.setup.tool_names.is_empty() {
                "you have no tools; answer in text".to_owned()
            } else {
                format!("your tools are: {}", self.setup.tool_names.join(", "))
            };
            return Some(format!("unknown tool `{}`: {available}", call.name));
        }
        if !matches!(call.arguments, Value::Object(_)) {
            return Some(format!("the arguments of `{}` must be a JSON object, got {}", call.name, call.arguments));
        }
        None
    }

    fn request_turn(&mut self) {
        let max_turns = self.setup.max_turns;
        if self.turns_used >= max_turns {
            self.finish(AgentEffect::Fail {
                error: format!("max_turns_per_agent is {max_turns}: the agent used all its turns without answering"),
                limit: Some(TurnLimit { max_turns }),
            });
            return;
        }
        self.turns_used += 1;
        if self.turns_used == max_turns && !self.setup.tool_names.is_empty() {
            self.state = State::AwaitingChildren;
            self.effects.push_back(AgentEffect::AwaitChildren);
            return;
        }
        self.call_model();
    }

    /// The subtasks this agent started have ended (or the wait was cut short): the last turn
    /// is told the task again and every subtask's outcome, and offered no tools.
    pub fn handle_children_settled(&mut self, children: Vec<SettledChild>) {
        if self.state != State::AwaitingChildren {
            return;
        }
        let max_turns = self.setup.max_turns;
        // Restating the task and the results gathered keeps a small model on them instead of
        // echoing the note or the tool syntax.
        let mut note =
            format!("[troupe] Last turn (max_turns = {max_turns}): no more tools. Your task: {}", self.setup.task);
        let mut reported = self.results_so_far();
        for child in children {
            let line = match child.status.as_str() {
                "completed" => child.text,
                status => format!("({status}) {}", child.text),
            };
            if !reported.iter().any(|(who, text)| *who == child.agent && *text == line) {
                reported.push((child.agent, line));
            }
        }
        if reported.is_empty() {
            note.push_str("\nGive your final answer now.");
        } else {
            note.push_str("\nYour subtasks returned:");
            for (who, result) in reported {
                note.push_str(&format!("\n- {who}: {result}"));
            }
            note.push_str("\nCombine these results into your final answer.");
        }
        self.push(ChatMessage::user(note));
        self.call_model();
    }

    fn call_model(&mut self) {
        let last = self.turns_used == self.setup.max_turns;
        self.state = State::AwaitingModel;
        self.effects.push_back(AgentEffect::CallModel {
            turn: self.turns_used,
            offer_tools: !last && !self.setup.tool_names.is_empty(),
        });
    }

    /// `(agent, result)` of every subtask whose result a status read returned, in order.
    fn results_so_far(&self) -> Vec<(String, String)> {
        let mut results: Vec<(String, String, String)> = Vec::new();
        for message in &self.conversation {
            if message.role != Role::Tool || message.is_error {
                continue;
            }
            let Ok(value) = serde_json::from_str::<Value>(&message.content) else { continue };
            let (Some(uri), Some(result)) =
                (value.get("uri").and_then(Value::as_str), value.get("result").and_then(Value::as_str))
            else {
                continue;
            };
            let agent = value.get("agent").and_then(Value::as_str).unwrap_or("subtask");
            if !results.iter().any(|(u, _, _)| u == uri) {
                results.push((uri.to_owned(), agent.to_owned(), result.to_owned()));
            }
        }
        results.into_iter().map(|(_, agent, result)| (agent, result)).collect()
    }

    fn push(&mut self, message: ChatMessage) {
        self.effects.push_back(AgentEffect::Message(message.clone()));
        self.conversation.push(message);
    }

    fn finish(&mut self, effect: AgentEffect) {
        self.state = State::Done;
        self.effects.push_back(effect);
    }
}

/// Gives every call of a turn a distinct, non-empty id: providers (small local models in
/// particular) may send empty or repeated ids, and results are matched to calls by id.
fn unique_ids(calls: Vec<ToolCall>, turn: u32) -> Vec<ToolCall> {
    let mut seen = std::collections::HashSet::new();
    calls
        .into_iter()
        .enumerate()
        .map(|(i, mut call)| {
            if call.id.trim().is_empty() || !seen.insert(call.id.clone()) {
                call.id = format!("call_{turn}_{}", i + 1);
                seen.insert(call.id.clone());
            }
            call
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    fn setup(max_turns: u32) -> AgentSetup {
        AgentSetup {
            system_prompt: "You delegate.".into(),
            task: "Do the thing".into(),
            tool_names: vec!["call_agent".into(), "get_task_status".into()],
            max_turns,
        }
    }

    fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments }
    }

    fn drain(machine: &mut AgentMachine) -> Vec<AgentEffect> {
        std::iter::from_fn(|| machine.poll_effect()).collect()
    }

    #[test]
    fn starts_with_system_and_task_then_asks_the_model() {
        let mut machine = AgentMachine::new(setup(4));
        assert_eq!(
            drain(&mut machine),
            vec![
                AgentEffect::Message(ChatMessage::system("You delegate.")),
                AgentEffect::Message(ChatMessage::user("Do the thing")),
                AgentEffect::CallModel { turn: 1, offer_tools: true },
            ]
        );
    }

    #[test]
    fn a_text_reply_finishes() {
        let mut machine = AgentMachine::new(setup(4));
        drain(&mut machine);
        machine.handle_model_reply("All done.".into(), vec![]);
        assert_eq!(
            drain(&mut machine),
            vec![
                AgentEffect::Message(ChatMessage::assistant("All done.", vec![])),
                AgentEffect::Finish("All done.".into()),
            ]
        );
        assert!(machine.is_done());
    }

    #[test]
    fn tool_results_join_in_call_order_whatever_order_they_arrive_in() {
        let mut machine = AgentMachine::new(setup(4));
        drain(&mut machine);
        let a = call("1", "call_agent", json!({"task": "a"}));
        let b = call("2", "get_task_status", json!({"uri": "subtask://000001"}));
        machine.handle_model_reply(String::new(), vec![a.clone(), b.clone()]);
        let effects = drain(&mut machine);
        assert_eq!(effects[1..], [AgentEffect::RunTool(a.clone()), AgentEffect::RunTool(b.clone())]);

        machine.handle_tool_result("2", "B".into(), false);
        assert_eq!(drain(&mut machine), vec![], "waits for every result");
        machine.handle_tool_result("1", "A".into(), true);
        assert_eq!(drain(&mut machine), vec![AgentEffect::CallModel { turn: 2, offer_tools: true }]);
        let tail: Vec<_> =
            machine.conversation()[3..].iter().map(|m| (m.role, m.content.clone(), m.is_error)).collect();
        assert_eq!(tail, vec![(Role::Tool, "A".into(), true), (Role::Tool, "B".into(), false)]);
    }

    #[test]
    fn unknown_tools_and_bad_arguments_are_refused_as_tool_errors() {
        let mut machine = AgentMachine::new(setup(4));
        drain(&mut machine);
        let bad = call("1", "rm_rf", json!({}));
        let not_object = call("2", "call_agent", json!("task"));
        machine.handle_model_reply(String::new(), vec![bad.clone(), not_object.clone()]);
        let effects = drain(&mut machine);
        assert_eq!(
            effects[1..],
            [
                AgentEffect::ToolRefused {
                    call: bad,
                    error: "unknown tool `rm_rf`: your tools are: call_agent, get_task_status".into()
                },
                AgentEffect::ToolRefused {
                    call: not_object,
                    error: "the arguments of `call_agent` must be a JSON object, got \"task\"".into()
                },
                AgentEffect::CallModel { turn: 2, offer_tools: true },
            ]
        );
    }

    #[test]
    fn the_last_turn_offers_no_tools_and_calling_one_anyway_fails_with_the_limit() {
        let mut machine = AgentMachine::new(setup(2));
        drain(&mut machine);
        machine.handle_model_reply(String::new(), vec![call("1", "call_agent", json!({"task": "x"}))]);
        drain(&mut machine);
        machine.handle_tool_result("1", "{}".into(), false);
        assert_eq!(drain(&mut machine).last(), Some(&AgentEffect::AwaitChildren));
        // A model reply cannot arrive while the machine waits for the children.
        machine.handle_model_reply("early".into(), vec![]);
        assert_eq!(drain(&mut machine), vec![]);
        machine.handle_children_settled(vec![
            SettledChild { agent: "writer".into(), status: "completed".into(), text: "Welcome, Ada!".into() },
            SettledChild { agent: "slm".into(), status: "failed".into(), text: "timed out".into() },
        ]);
        let effects = drain(&mut machine);
        let [AgentEffect::Message(note), model_call] = effects.as_slice() else { panic!("{effects:?}") };
        assert!(note.content.starts_with("[troupe] Last turn (max_turns = 2): no more tools. Your task: Do the thing"));
        assert!(note.content.contains("\n- writer: Welcome, Ada!\n- slm: (failed) timed out\nCombine"), "{note:?}");
        assert_eq!(*model_call, AgentEffect::CallModel { turn: 2, offer_tools: false });

        machine.handle_model_reply(String::new(), vec![call("2", "call_agent", json!({"task": "y"}))]);
        let effects = drain(&mut machine);
        assert!(
            matches!(effects.last(), Some(AgentEffect::Fail { limit: Some(TurnLimit { max_turns: 2 }), .. })),
            "{effects:?}"
        );
    }

    #[test]
    fn an_agent_without_tools_that_calls_one_is_told_and_goes_on() {
        let mut machine = AgentMachine::new(AgentSetup { tool_names: vec![], ..setup(3) });
        drain(&mut machine);
        machine.handle_model_reply(String::new(), vec![call("1", "call_agent", json!({"task": "x"}))]);
        let effects = drain(&mut machine);
        assert!(
            matches!(&effects[1], AgentEffect::ToolRefused { error, .. } if error == "unknown tool `call_agent`: you have no tools; answer in text"),
            "{effects:?}"
        );
        assert_eq!(effects[2], AgentEffect::CallModel { turn: 2, offer_tools: false });
        machine.handle_model_reply("Fine, here it is.".into(), vec![]);
        assert_eq!(drain(&mut machine).last(), Some(&AgentEffect::Finish("Fine, here it is.".into())));
    }

    #[test]
    fn empty_and_repeated_call_ids_are_made_unique() {
        let mut machine = AgentMachine::new(setup(4));
        drain(&mut machine);
        machine.handle_model_reply(
            String::new(),
            vec![
                call("", "call_agent", json!({"task": "a"})),
                call("", "call_agent", json!({"task": "b"})),
                call("x", "call_agent", json!({"task": "c"})),
                call("x", "call_agent", json!({"task": "d"})),
            ],
        );
        let ids: Vec<String> = drain(&mut machine)
            .into_iter()
            .filter_map(|e| match e {
                AgentEffect::RunTool(call) => Some(call.id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec!["call_1_1", "call_1_2", "x", "call_1_4"]);
        for id in &ids {
            machine.handle_tool_result(id, "ok".into(), false);
        }
        assert_eq!(drain(&mut machine), vec![AgentEffect::CallModel { turn: 2, offer_tools: true }]);
    }

    #[test]
    fn empty_replies_are_nudged_and_count_as_turns() {
        let mut machine = AgentMachine::new(setup(2));
        drain(&mut machine);
        machine.handle_model_reply("  ".into(), vec![]);
        let effects = drain(&mut machine);
        assert!(effects.iter().any(|e| matches!(e, AgentEffect::Message(m) if m.content.contains("empty"))));
        machine.handle_children_settled(vec![]);
        assert!(
            drain(&mut machine)
                .iter()
                .any(|e| matches!(e, AgentEffect::Message(m) if m.content.contains("Give your final answer now")))
        );
        machine.handle_model_reply(String::new(), vec![]);
        let effects = drain(&mut machine);
        assert!(matches!(effects.last(), Some(AgentEffect::Fail { limit: Some(_), .. })), "{effects:?}");
    }

    #[test]
    fn model_errors_fail_and_cancel_silences() {
        let mut machine = AgentMachine::new(setup(3));
        drain(&mut machine);
        machine.handle_model_error("connection reset".into());
        assert_eq!(
            drain(&mut machine),
            vec![AgentEffect::Fail { error: "model error: connection reset".into(), limit: None }]
        );

        let mut machine = AgentMachine::new(setup(3));
        machine.handle_cancel();
        assert_eq!(drain(&mut machine), vec![]);
        machine.handle_model_reply("late".into(), vec![]);
        assert_eq!(drain(&mut machine), vec![]);
    }

    #[test]
    fn the_tool_plan_forces_its_entry_for_each_turn_that_offers_tools() {
        let plan: Vec<String> = ["call_agent", "mcp:files/read", "get_task_status"].map(str::to_owned).to_vec();
        let mcp_name = |reference: &str| (reference == "mcp:files/read").then(|| "files__read".to_owned());
        let check = |plan: &[String], turn: u32, offer_tools: bool, expected: Option<&str>| {
            assert_eq!(
                planned_tool(plan, turn, offer_tools, mcp_name),
                expected.map(str::to_owned),
                "turn {turn}, offer_tools {offer_tools}"
            );
        };
        check(&plan, 1, true, Some("call_agent"));
        // An MCP tool is planned by reference and forced by the name its model sees.
        check(&plan, 2, true, Some("files__read"));
        check(&plan, 3, true, Some("get_task_status"));
        // Past the plan: the model chooses.
        check(&plan, 4, true, None);
        check(&plan, u32::MAX, true, None);
        // The last turn offers no tools, so it forces none, whatever the plan says.
        check(&plan, 1, false, None);
        check(&plan, 2, false, None);
        // Turns count from 1; there is no turn 0.
        check(&plan, 0, true, None);
        // No plan, no forcing.
        check(&[], 1, true, None);
        // An MCP reference the run could not resolve is forced as written.
        check(&["mcp:gone/tool".to_owned()], 1, true, Some("mcp:gone/tool"));
    }
}
