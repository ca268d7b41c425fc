//! The grammar a turn with tools is decoded under: either a plain-text answer, or
//! `<tool_call>[...]</tool_call>` whose JSON is a list of calls, each naming an offered tool and
//! carrying arguments valid against that tool's schema.
//!
//! llguidance (the engine behind llama.cpp's and vLLM's structured output) compiles the Lark
//! grammar with its `%json` schemas into a token mask computed in well under a millisecond per
//! step; writing an incremental JSON-schema matcher over a BPE vocabulary by hand would cost far
//! more than the dependency.
//!
//! Invariant: pure. Schemas are tightened for a small model before they are compiled: strings
//! get a length bound (a small model can otherwise loop inside a string until it runs out of
//! tokens), which every call valid under the tightened schema still satisfies. troupe's own
//! tools get more: their `uri` arguments are limited to the URIs the conversation has handed
//! out, and their numbers of seconds become waits of 60 to 120 s. Other tools' schemas (an MCP
//! server's) are otherwise compiled as they are, so the calls validate against the server's own
//! schema.

use serde_json::{Map, Value, json};

use super::prompt::{TOOL_CALL_CLOSE, TOOL_CALL_OPEN};
use crate::protocol::{BUILTIN_TOOLS, ToolSpec};

/// Longest string argument the small model may write.
pub const MAX_STRING: u64 = 400;
/// Most calls in one turn.
pub const MAX_CALLS: u64 = 4;

/// The Lark source of the grammar for a turn offering `tools`; with `required`, the turn must
/// be calls. A built-in tool that takes a `uri` is left out until the conversation has handed
/// out a URI (a small model otherwise invents one, or copies the example from the
/// description); with no tool left, the turn is an answer.
pub fn tool_turn_grammar(tools: &[ToolSpec], known_uris: &[String], required: bool, forced: Option<&str>) -> String {
    let variants: Vec<Value> = tools
        .iter()
        .filter(|tool| forced.is_none_or(|name| tool.name == name))
        .filter(|tool| !(known_uris.is_empty() && is_builtin(tool) && takes_uri(tool)))
        .map(|tool| {
            let arguments = tighten(&tool.parameters, is_builtin(tool).then_some(known_uris), None);
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": tool.name},
                    "arguments": arguments,
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    if variants.is_empty() {
        return answer_grammar();
    }
    let schema = json!({
        "x-guidance": {"whitespace_flexible": false},
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_CALLS,
        "items": {"anyOf": variants},
    });
    let start = if required || forced.is_some() { "start: call" } else { "start: answer | call" };
    format!(
        "{start}\n\
         answer: TEXT\n\
         TEXT: /[^<{{\\[\\s][^<]*/\n\
         call: {open} calls {close}\n\
         calls: %json {schema}\n",
        open = lark_string(TOOL_CALL_OPEN),
        close = lark_string(TOOL_CALL_CLOSE),
    )
}

/// A plain-text answer that does not open like a tool call (or like one of troupe's own
/// `[troupe]` notes): for turns without tools in a conversation that had calls, which a small
/// model otherwise imitates.
pub fn answer_grammar() -> String {
    "start: TEXT\nTEXT: /[^<{\\[\\s][\\s\\S]*/\n".to_owned()
}

/// One of troupe's own tools, whose arguments troupe knows the meaning of.
fn is_builtin(tool: &ToolSpec) -> bool {
    BUILTIN_TOOLS.contains(&tool.name.as_str())
}

fn takes_uri(tool: &ToolSpec) -> bool {
    tool.parameters.get("properties").and_then(|p| p.get("uri")).is_some()
}

fn lark_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// A copy of `schema` fit for a small model (see the module header); `builtin_uris` is given
/// for troupe's own tools only: the URIs handed out so far.
fn tighten(schema: &Value, builtin_uris: Option<&[String]>, key: Option<&str>) -> Value {
    let Value::Object(map) = schema else { return schema.clone() };
    let mut out: Map<String, Value> = map.clone();
    let builtin = builtin_uris.is_some();
    match map.get("type").and_then(Value::as_str) {
        Some("string") => {
            if let Some(known_uris) = builtin_uris.filter(|uris| key == Some("uri") && !uris.is_empty()) {
                out.remove("pattern");
                out.insert("enum".into(), json!(known_uris));
            } else {
                let bound = map.get("maxLength").and_then(Value::as_u64).map_or(MAX_STRING, |m| m.min(MAX_STRING));
                out.insert("maxLength".into(), json!(bound));
            }
        }
        Some("number") if builtin && key.is_some_and(|k| k.ends_with("seconds")) => {
            out.insert("type".into(), json!("integer"));
            // A small model polling with a short wait burns its turns on a busy machine (CI saw a
            // 135M writer still working after two 15 s polls); a wait returns as soon as the
            // subtask ends, so a long floor costs nothing when the work is quick.
            out.insert("minimum".into(), json!(60));
            out.insert("maximum".into(), json!(120));
        }
        Some("object") => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                let tightened: Map<String, Value> =
                    properties.iter().map(|(k, v)| (k.clone(), tighten(v, builtin_uris, Some(k)))).collect();
                out.insert("properties".into(), Value::Object(tightened));
            }
        }
        _ => {}
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn uris_are_limited_to_those_handed_out_and_strings_are_bounded() {
        let params = json!({"type": "object", "properties": {
            "uri": {"type": "string", "pattern": "^subtask://[0-9a-z]{6}$"},
            "task": {"type": "string", "maxLength": 4000},
            "wait_seconds": {"type": "number", "minimum": 0, "maximum": 300},
        }});
        let uris = ["subtask://abc123".to_owned()];
        let tightened = tighten(&params, Some(&uris), None);
        assert_eq!(tightened["properties"]["uri"], json!({"type": "string", "enum": ["subtask://abc123"]}));
        assert_eq!(tightened["properties"]["task"]["maxLength"], json!(MAX_STRING));
        assert_eq!(tightened["properties"]["wait_seconds"], json!({"type": "integer", "minimum": 60, "maximum": 120}));
        let untouched = tighten(&params, Some(&[]), None);
        assert_eq!(untouched["properties"]["uri"]["pattern"], json!("^subtask://[0-9a-z]{6}$"));
    }

    #[test]
    fn another_servers_schema_keeps_its_meaning_and_only_gets_bounded_strings() {
        let params = json!({"type": "object", "properties": {
            "uri": {"type": "string", "format": "uri"},
            "timeout_seconds": {"type": "number", "minimum": 0, "maximum": 5},
            "name": {"type": "string", "maxLength": 40},
        }, "required": ["uri"]});
        let mcp =
            ToolSpec { name: "files__fetch".into(), description: "Fetch a page".into(), parameters: params.clone() };
        let tightened = tighten(&params, None, None);
        assert_eq!(tightened["properties"]["uri"], json!({"type": "string", "format": "uri", "maxLength": MAX_STRING}));
        assert_eq!(tightened["properties"]["timeout_seconds"], params["properties"]["timeout_seconds"]);
        assert_eq!(tightened["properties"]["name"]["maxLength"], json!(40));
        // Offered before any subtask exists, although it takes a `uri`.
        assert!(tool_turn_grammar(&[mcp], &[], true, None).contains("files__fetch"));
    }

    #[test]
    fn tools_that_need_a_uri_wait_for_one() {
        let status = ToolSpec {
            name: "get_task_status".into(),
            description: "Read a subtask, like subtask://k3v9q2".into(),
            parameters: json!({"type": "object", "properties": {"uri": {"type": "string"}}}),
        };
        assert_eq!(tool_turn_grammar(std::slice::from_ref(&status), &[], true, None), answer_grammar());
        assert!(tool_turn_grammar(&[status], &["subtask://abc123".into()], true, None).contains("get_task_status"));
    }

    #[test]
    fn the_grammar_compiles_with_llguidance() {
        let tools = vec![ToolSpec {
            name: "get_task_status".into(),
            description: "Read a subtask".into(),
            parameters: json!({"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"], "additionalProperties": false}),
        }];
        let env = toktrie::ApproximateTokEnv::single_byte_env();
        let factory = llguidance::ParserFactory::new_simple(&env).unwrap();
        for lark in [
            tool_turn_grammar(&tools, &["subtask://abc123".into()], false, None),
            tool_turn_grammar(&tools, &["subtask://abc123".into()], true, Some("get_task_status")),
            answer_grammar(),
        ] {
            let parser = factory.create_parser(llguidance::api::TopLevelGrammar::from_lark(lark.clone()));
            assert!(parser.is_ok(), "{lark}\n{:?}", parser.err());
        }
    }
}
