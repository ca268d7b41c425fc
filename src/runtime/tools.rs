//! The built-in tools: their names, JSON schemas and descriptions as models see them, the
//! parsing of a call's arguments into a typed [`BuiltinCall`], who a `call_agent` may start
//! ([`experts_allow`], [`callee`]), and the cutting of any tool's result to
//! `max_tool_result_bytes` ([`bound_tool_result`]).
//!
//! Invariant: pure. Executing a call is the driver's job; an argument that does not fit the
//! schema becomes a message the model can act on, never a panic.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::protocol::ToolSpec;

pub use crate::protocol::BUILTIN_TOOLS;

/// The longest `wait_seconds` honoured, so one poll cannot outlive a reasonable turn.
pub const MAX_WAIT_SECONDS: f64 = 300.0;

/// An expert another agent may call, as shown in `call_agent`'s schema.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpertOffer {
    pub name: String,
    pub description: String,
}

/// What the schemas depend on: who the caller may delegate to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolContext {
    pub experts: Vec<ExpertOffer>,
    /// Whether `call_agent` without `agent` may copy the caller.
    pub self_copies: bool,
    /// Model aliases the caller may run a subtask on (`choose_model = true`); empty: none.
    pub models: Vec<String>,
}

impl ToolContext {
    /// The optional `model` argument, when the caller may choose.
    fn model_property(&self) -> Option<(&'static str, Value)> {
        (!self.models.is_empty()).then(|| {
            ("model", json!({"type": "string", "enum": self.models, "description": "A model alias to run it on instead of the default; smaller models for simpler tasks."}))
        })
    }
}

/// The schema of a built-in tool, or `None` for an unknown name.
pub fn builtin_spec(name: &str, context: &ToolContext) -> Option<ToolSpec> {
    let (description, parameters) = match name {
        "call_agent" => {
            let mut agent = json!({
                "type": "string",
                "description": "An expert's name. Leave it out to start a copy of yourself (same instructions, model and tools) on the task."
            });
            let mut description = String::from(
                "Start a sub-agent on a task. Returns at once with {uri, status: \"working\"}; the sub-agent works concurrently. Read its result later with get_task_status.",
            );
            if context.experts.is_empty() {
                if let Value::Object(map) = &mut agent {
                    map.insert("enum".into(), json!([]));
                }
            } else {
                description.push_str(" Experts you may call:");
                for expert in &context.experts {
                    description.push_str(&format!("\n- {}: {}", expert.name, expert.description));
                }
                if let Value::Object(map) = &mut agent {
                    let names: Vec<&str> = context.experts.iter().map(|e| e.name.as_str()).collect();
                    map.insert("enum".into(), json!(names));
                }
            }
            let model = context.model_property();
            if context.experts.is_empty() {
                // No experts allowed: the property would only invite refused calls.
                let properties: Vec<(&str, Value)> = [("task", task_schema())].into_iter().chain(model).collect();
                (description, object(&properties, &["task"]))
            } else if context.self_copies {
                let properties: Vec<(&str, Value)> =
                    [("task", task_schema()), ("agent", agent)].into_iter().chain(model).collect();
                (description, object(&properties, &["task"]))
            } else {
                let properties: Vec<(&str, Value)> =
                    [("agent", agent), ("task", task_schema())].into_iter().chain(model).collect();
                (description, object(&properties, &["agent", "task"]))
            }
        }
        "call_slm" => (
            "Ask the small, fast language model a simple, self-contained question. Returns at once with {uri, status: \"working\"}; read the answer later with get_task_status.".to_owned(),
            object(
                &[
                    ("prompt", json!({"type": "string", "minLength": 1, "maxLength": 4000, "description": "The whole question; the small model sees nothing else."})),
                    ("system", json!({"type": "string", "maxLength": 2000, "description": "Optional instructions for the small model."})),
                    ("max_tokens", json!({"type": "integer", "minimum": 1, "maximum": 4096})),
                ]
                .into_iter()
                .chain(context.model_property())
                .collect::<Vec<_>>(),
                &["prompt"],
            ),
        ),
        "get_task_status" => (
            "Read a subtask: its status (working, completed, failed, cancelled), result or error, and usage. With wait_seconds, waits up to that long for it to finish.".to_owned(),
            object(
                &[
                    ("uri", uri_schema()),
                    ("wait_seconds", json!({"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "description": "Wait up to this many seconds for the subtask to finish."})),
                ],
                &["uri"],
            ),
        ),
        "cancel_task" => (
            "Cancel a subtask you started, and everything it started.".to_owned(),
            object(&[("uri", uri_schema())], &["uri"]),
        ),
        "list_tasks" => (
            "List the subtasks you have started, with their status.".to_owned(),
            object(&[], &[]),
        ),
        "remember" => (
            "Keep a lesson for later runs: one short, general sentence worth knowing next time (not a fact about this task alone). Returns its id.".to_owned(),
            object(
                &[
                    ("text", json!({"type": "string", "minLength": 1, "maxLength": 1000, "description": "The lesson, in one or two sentences."})),
                    ("scope", json!({"type": "string", "enum": ["global", "expert"], "description": "global: every expert may recall it; expert: only experts with your name."})),
                ],
                &["text"],
            ),
        ),
        "recall" => (
            "Search the lessons kept from earlier runs. Returns the most similar ones with their ids and scores.".to_owned(),
            object(
                &[
                    ("query", json!({"type": "string", "minLength": 1, "maxLength": 1000, "description": "What you want to know."})),
                    ("k", json!({"type": "integer", "minimum": 1, "maximum": 20, "description": "How many lessons at most (default 5)."})),
                ],
                &["query"],
            ),
        ),
        _ => return None,
    };
    Some(ToolSpec { name: name.to_owned(), description, parameters })
}

fn task_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 4000, "description": "What to do, stated fully: the sub-agent sees nothing else."})
}

fn uri_schema() -> Value {
    json!({"type": "string", "pattern": "^subtask://[0-9a-z]{6}$", "description": "A subtask URI, like subtask://k3v9q2."})
}

fn object(properties: &[(&str, Value)], required: &[&str]) -> Value {
    let properties: Map<String, Value> = properties.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// Whether an expert's `experts` list lets it call the expert `name`: listed by name, or `*`
/// (any expert of the workbench). The schemas offer, and `call_agent` accepts, exactly these.
pub fn experts_allow(experts: &[String], name: &str) -> bool {
    experts.iter().any(|e| e == "*" || e == name)
}

/// Who a `call_agent` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callee<'a> {
    /// A copy of the caller: same instructions, model and tools.
    SelfCopy,
    /// An expert of the workbench that the caller's `experts` allow.
    Expert(&'a str),
}

/// Who a `call_agent` naming `agent` (or no one) starts for a caller with `experts` and
/// `self_copies`, among the workbench's experts `known` (in the order a refusal lists them).
/// `Err` is the tool error the model reads: it names who the caller may call instead.
///
/// An external root (the MCP client of `troupe mcp serve`) is never in `known`: the driver
/// leaves it out, since it is nobody's sub-agent.
pub fn callee<'a>(
    experts: &[String],
    self_copies: bool,
    agent: Option<&'a str>,
    known: &[&str],
) -> Result<Callee<'a>, String> {
    let Some(name) = agent else {
        if self_copies {
            return Ok(Callee::SelfCopy);
        }
        return Err(format!(
            "name an expert in `agent` ({}): this agent may not start copies of itself",
            experts.join(", ")
        ));
    };
    let exists = known.contains(&name);
    if exists && experts_allow(experts, name) {
        return Ok(Callee::Expert(name));
    }
    let may: Vec<&str> = known.iter().copied().filter(|n| experts_allow(experts, n)).collect();
    let what = if exists { "you may not call" } else { "there is no" };
    Err(format!(
        "{what} expert `{name}`; {}",
        if may.is_empty() {
            "you may call no experts: leave `agent` out to start a copy of yourself".to_owned()
        } else {
            format!("you may call: {} (or leave `agent` out to start a copy of yourself)", may.join(", "))
        }
    ))
}

/// `text` cut to at most `max` bytes, at a character boundary, followed by a line
/// `[truncated N bytes]` (N: the bytes cut off) that the model reads; unchanged when it fits.
pub fn truncate_tool_text(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}\n[truncated {} bytes]", &text[..end], text.len() - end))
}

/// A tool's result as the event records it and as the model reads it, cut to `max` bytes (see
/// [`truncate_tool_text`]). A JSON result that is too long is recorded as the cut text: half a
/// JSON document is no longer JSON.
pub fn bound_tool_result(content: Value, max: usize) -> (Value, String) {
    match content {
        Value::String(text) => match truncate_tool_text(&text, max) {
            Cow::Borrowed(_) => (Value::String(text.clone()), text),
            Cow::Owned(cut) => (Value::String(cut.clone()), cut),
        },
        other => {
            let text = other.to_string();
            match truncate_tool_text(&text, max) {
                Cow::Borrowed(_) => (other, text),
                Cow::Owned(cut) => (Value::String(cut.clone()), cut),
            }
        }
    }
}

/// A built-in call with its arguments checked.
#[derive(Clone, Debug, PartialEq)]
pub enum BuiltinCall {
    CallAgent {
        task: String,
        agent: Option<String>,
        model: Option<String>,
    },
    CallSlm {
        prompt: String,
        system: Option<String>,
        max_tokens: Option<u32>,
        model: Option<String>,
    },
    GetTaskStatus {
        uri: String,
        wait_seconds: f64,
    },
    CancelTask {
        uri: String,
    },
    ListTasks,
    /// `expert_scope`: only experts of the caller's name may recall it.
    Remember {
        text: String,
        expert_scope: bool,
    },
    Recall {
        query: String,
        k: usize,
    },
}

/// Checks a call's arguments against the tool's schema. The error names the argument and says
/// what was expected, for the model to correct.
pub fn parse_builtin(name: &str, arguments: &Value) -> Result<BuiltinCall, String> {
    let args = Args::new(name, arguments)?;
    let call = match name {
        "call_agent" => BuiltinCall::CallAgent {
            task: args.required_text("task")?,
            agent: args.optional_text("agent")?.filter(|a| !a.trim().is_empty()),
            model: args.optional_text("model")?.filter(|m| !m.trim().is_empty()),
        },
        "call_slm" => BuiltinCall::CallSlm {
            prompt: args.required_text("prompt")?,
            system: args.optional_text("system")?,
            max_tokens: args.optional_number("max_tokens")?.map(|n| n.clamp(1.0, 4096.0) as u32),
            model: args.optional_text("model")?.filter(|m| !m.trim().is_empty()),
        },
        "get_task_status" => BuiltinCall::GetTaskStatus {
            uri: args.required_text("uri")?,
            wait_seconds: args.optional_number("wait_seconds")?.unwrap_or(0.0).clamp(0.0, MAX_WAIT_SECONDS),
        },
        "cancel_task" => BuiltinCall::CancelTask { uri: args.required_text("uri")? },
        "list_tasks" => BuiltinCall::ListTasks,
        "remember" => BuiltinCall::Remember {
            text: args.required_text("text")?,
            expert_scope: match args.optional_text("scope")?.as_deref() {
                None | Some("global") => false,
                Some("expert") => true,
                Some(other) => return Err(format!("`scope` must be \"global\" or \"expert\", not \"{other}\"")),
            },
        },
        "recall" => BuiltinCall::Recall {
            query: args.required_text("query")?,
            k: args.optional_number("k")?.map_or(5, |k| k.clamp(1.0, 20.0) as usize),
        },
        other => return Err(format!("`{other}` is not a built-in tool")),
    };
    args.reject_unknown(match name {
        "call_agent" => &["task", "agent", "model"],
        "call_slm" => &["prompt", "system", "max_tokens", "model"],
        "get_task_status" => &["uri", "wait_seconds"],
        "cancel_task" => &["uri"],
        "remember" => &["text", "scope"],
        "recall" => &["query", "k"],
        _ => &[],
    })?;
    Ok(call)
}

struct Args<'a> {
    tool: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    fn new(tool: &'a str, value: &'a Value) -> Result<Self, String> {
        match value {
            Value::Object(map) => Ok(Args { tool, map }),
            other => Err(format!("the arguments of `{tool}` must be a JSON object, got {other}")),
        }
    }

    fn required_text(&self, key: &str) -> Result<String, String> {
        match self.optional_text(key)? {
            Some(text) if !text.trim().is_empty() => Ok(text),
            Some(_) => Err(format!("`{key}` of `{}` must not be empty", self.tool)),
            None => Err(format!("`{}` needs the argument `{key}` (a string)", self.tool)),
        }
    }

    fn optional_text(&self, key: &str) -> Result<Option<String>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("`{key}` of `{}` must be a string, got {other}", self.tool)),
        }
    }

    fn optional_number(&self, key: &str) -> Result<Option<f64>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            // Small models often quote numbers; accept what parses to a finite number (Rust
            // parses "nan" and "inf" too, and clamping keeps a NaN).
            Some(Value::String(s)) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                Ok(s.trim().parse::<f64>().ok())
            }
            Some(other) => Err(format!("`{key}` of `{}` must be a number, got {other}", self.tool)),
        }
    }

    fn reject_unknown(&self, known: &[&str]) -> Result<(), String> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(format!(
                "`{}` has no argument `{key}`; its arguments are: {}",
                self.tool,
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn every_builtin_has_an_object_schema() {
        let context = ToolContext {
            experts: vec![ExpertOffer { name: "critic".into(), description: "Finds flaws".into() }],
            self_copies: true,
            models: Vec::new(),
        };
        for name in BUILTIN_TOOLS {
            let spec = builtin_spec(name, &context).unwrap();
            assert_eq!(spec.parameters["type"], "object", "{name}");
            assert!(!spec.description.is_empty());
        }
        let call_agent = builtin_spec("call_agent", &context).unwrap();
        assert_eq!(call_agent.parameters["properties"]["agent"]["enum"], json!(["critic"]));
        assert!(call_agent.description.contains("- critic: Finds flaws"));
        assert_eq!(builtin_spec("rm", &context), None);
        assert!(call_agent.parameters["properties"].get("model").is_none(), "no model choice unless allowed");
        let choosing = ToolContext { models: vec!["big".into(), "small".into()], ..context };
        for name in ["call_agent", "call_slm"] {
            let spec = builtin_spec(name, &choosing).unwrap();
            assert_eq!(spec.parameters["properties"]["model"]["enum"], json!(["big", "small"]), "{name}");
        }
    }

    #[test]
    fn arguments_are_checked_with_messages_a_model_can_act_on() {
        let table: &[(&str, Value, Result<BuiltinCall, &str>)] = &[
            (
                "call_agent",
                json!({"task": "t"}),
                Ok(BuiltinCall::CallAgent { task: "t".into(), agent: None, model: None }),
            ),
            (
                "call_agent",
                json!({"task": "t", "agent": "", "model": "big"}),
                Ok(BuiltinCall::CallAgent { task: "t".into(), agent: None, model: Some("big".into()) }),
            ),
            ("call_agent", json!({}), Err("`call_agent` needs the argument `task` (a string)")),
            ("call_agent", json!({"task": 3}), Err("`task` of `call_agent` must be a string, got 3")),
            (
                "call_agent",
                json!({"task": "t", "agnet": "x"}),
                Err("`call_agent` has no argument `agnet`; its arguments are: task, agent, model"),
            ),
            (
                "get_task_status",
                json!({"uri": "subtask://abcdef", "wait_seconds": "2.5"}),
                Ok(BuiltinCall::GetTaskStatus { uri: "subtask://abcdef".into(), wait_seconds: 2.5 }),
            ),
            (
                "get_task_status",
                json!({"uri": "u", "wait_seconds": 1e9}),
                Ok(BuiltinCall::GetTaskStatus { uri: "u".into(), wait_seconds: MAX_WAIT_SECONDS }),
            ),
            ("call_slm", json!({"prompt": "  "}), Err("`prompt` of `call_slm` must not be empty")),
            ("list_tasks", json!({}), Ok(BuiltinCall::ListTasks)),
        ];
        for (tool, args, expected) in table {
            let got = parse_builtin(tool, args);
            assert_eq!(got, expected.clone().map_err(str::to_owned), "{tool} {args}");
        }
    }

    #[test]
    fn long_results_are_cut_at_a_character_boundary_and_say_how_much_was_cut() {
        // (text, max, expected): `é` is 2 bytes, `€` 3, `🎉` 4.
        let table: &[(&str, usize, &str)] = &[
            ("short", 64, "short"),
            ("exactly8", 8, "exactly8"),
            ("0123456789", 8, "01234567\n[truncated 2 bytes]"),
            ("", 0, ""),
            ("abc", 0, "\n[truncated 3 bytes]"),
            // The cut would split `é`: it falls back to before it.
            ("aé", 2, "a\n[truncated 2 bytes]"),
            ("aé", 3, "aé"),
            ("€€€", 4, "€\n[truncated 6 bytes]"),
            ("€€€", 6, "€€\n[truncated 3 bytes]"),
            ("🎉🎉", 7, "🎉\n[truncated 4 bytes]"),
            ("🎉🎉", 3, "\n[truncated 8 bytes]"),
        ];
        for (text, max, expected) in table {
            let got = truncate_tool_text(text, *max);
            assert_eq!(got, *expected, "{text:?} at {max}");
            let kept = got.split("\n[truncated").next().unwrap_or_default();
            assert!(kept.len() <= *max, "{text:?} at {max} kept {kept:?}");
            assert!(text.starts_with(kept));
        }
        assert!(matches!(truncate_tool_text("fits", 4), Cow::Borrowed(_)));
    }

    #[test]
    fn a_bound_result_is_the_same_text_in_the_event_and_for_the_model() {
        let (event, model) = bound_tool_result(json!("x".repeat(10)), 4);
        assert_eq!(model, "xxxx\n[truncated 6 bytes]");
        assert_eq!(event, json!(model));
        // JSON that fits is kept as JSON; too long, it becomes its cut text.
        let list = json!({"tasks": [{"uri": "subtask://abcdef", "status": "working"}]});
        let (event, model) = bound_tool_result(list.clone(), 1000);
        assert_eq!((event, model), (list.clone(), list.to_string()));
        let (event, model) = bound_tool_result(list.clone(), 10);
        assert_eq!(model, format!("{}\n[truncated {} bytes]", &list.to_string()[..10], list.to_string().len() - 10));
        assert_eq!(event, json!(model));
    }

    #[test]
    fn a_quoted_nan_or_infinity_is_not_a_number() {
        for text in ["nan", "NaN", "inf", "-infinity"] {
            let err =
                parse_builtin("get_task_status", &serde_json::json!({"uri": "subtask://k3v9q2", "wait_seconds": text}))
                    .unwrap_err();
            assert!(err.contains("must be a number"), "{text}: {err}");
        }
    }

    #[test]
    fn who_a_caller_may_start() {
        let known = ["critic", "mcp-client", "solver"];
        let check = |experts: &[&str], self_copies: bool, agent: Option<&str>, expected: Result<Callee, &str>| {
            let experts: Vec<String> = experts.iter().map(|e| (*e).to_owned()).collect();
            let got = callee(&experts, self_copies, agent, &known);
            assert_eq!(
                got,
                expected.map_err(str::to_owned),
                "experts {experts:?}, self_copies {self_copies}, agent {agent:?}"
            );
        };
        // Listed by name, or by `*`.
        check(&["solver"], false, Some("solver"), Ok(Callee::Expert("solver")));
        check(&["*"], false, Some("critic"), Ok(Callee::Expert("critic")));
        check(&["solver", "*"], true, Some("critic"), Ok(Callee::Expert("critic")));
        // Not listed: refused, naming who may be called.
        check(
            &["solver"],
            true,
            Some("critic"),
            Err(
                "you may not call expert `critic`; you may call: solver (or leave `agent` out to start a copy of yourself)",
            ),
        );
        // Unknown, even under `*`.
        check(
            &["*"],
            true,
            Some("stranger"),
            Err(
                "there is no expert `stranger`; you may call: critic, mcp-client, solver (or leave `agent` out to start a copy of yourself)",
            ),
        );
        check(
            &[],
            true,
            Some("critic"),
            Err(
                "you may not call expert `critic`; you may call no experts: leave `agent` out to start a copy of yourself",
            ),
        );
        // A list naming experts the workbench lacks offers only those it has.
        check(
            &["ghost", "solver"],
            true,
            Some("ghost"),
            Err("there is no expert `ghost`; you may call: solver (or leave `agent` out to start a copy of yourself)"),
        );
        // No `agent`: a copy of the caller, when self copies are allowed.
        check(&["solver"], true, None, Ok(Callee::SelfCopy));
        check(&[], true, None, Ok(Callee::SelfCopy));
        check(
            &["solver", "critic"],
            false,
            None,
            Err("name an expert in `agent` (solver, critic): this agent may not start copies of itself"),
        );
        check(&[], false, None, Err("name an expert in `agent` (): this agent may not start copies of itself"));
        // An MCP client's root names the workbench's experts, not itself, and copies nothing.
        check(&["critic", "solver"], false, Some("solver"), Ok(Callee::Expert("solver")));
        check(
            &["critic", "solver"],
            false,
            Some("mcp-client"),
            Err(
                "you may not call expert `mcp-client`; you may call: critic, solver (or leave `agent` out to start a copy of yourself)",
            ),
        );
        check(
            &["critic", "solver"],
            false,
            None,
            Err("name an expert in `agent` (critic, solver): this agent may not start copies of itself"),
        );

        // The schemas offer the same experts `callee` accepts.
        let allow = |experts: &[&str], name: &str, expected: bool| {
            let experts: Vec<String> = experts.iter().map(|e| (*e).to_owned()).collect();
            assert_eq!(experts_allow(&experts, name), expected, "{experts:?} allow {name}");
        };
        allow(&["*"], "anyone", true);
        allow(&["solver"], "solver", true);
        allow(&["solver"], "critic", false);
        allow(&[], "solver", false);
        allow(&["Solver"], "solver", false);
    }
}
