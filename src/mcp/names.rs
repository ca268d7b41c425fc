//! The names MCP tools go by. An expert's file names a tool `mcp:<server>/<tool>` (or
//! `mcp:<server>/*`, or a `*` glob inside the tool's name); the model sees `<server>__<tool>`,
//! since every provider accepts only `^[A-Za-z0-9_-]{1,64}$` as a function name. Pure.
//!
//! The mapping is collision-free within an agent's tools: characters outside the allowed set
//! become `_`, a name too long is cut and given a hash of the full reference, and two references
//! that would still meet are told apart by that hash. It is reversible through the agent's
//! table of tools (the `mcp_tools` event records both names), not by parsing.

use std::collections::BTreeSet;

use sha2::{Digest as _, Sha256};

use crate::config::MCP_TOOL_PREFIX;

/// The longest function name every provider accepts.
pub const MAX_NAME: usize = 64;

/// A parsed `mcp:<server>/<pattern>` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference<'a> {
    pub server: &'a str,
    /// A tool's name, or a glob with `*`.
    pub pattern: &'a str,
}

/// `mcp:<server>/<pattern>`, or `None` for anything else (built-ins).
pub fn parse_reference(entry: &str) -> Option<Reference<'_>> {
    let rest = entry.strip_prefix(MCP_TOOL_PREFIX)?;
    let (server, pattern) = rest.split_once('/')?;
    (!server.is_empty() && !pattern.is_empty()).then_some(Reference { server, pattern })
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The function name for `<server>/<tool>`, unique among `taken` (which it joins).
pub fn model_name(server: &str, tool: &str, taken: &mut BTreeSet<String>) -> String {
    let clean = |text: &str| -> String {
        text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
    };
    let plain = format!("{}__{}", clean(server), clean(tool));
    let name = if plain.len() <= MAX_NAME && !taken.contains(&plain) {
        plain
    } else {
        let digest = Sha256::digest(format!("{server}/{tool}").as_bytes());
        let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let keep = plain.len().min(MAX_NAME - 9);
        // `plain` is ASCII, so any byte offset is a character boundary.
        format!("{}_{hash}", &plain[..keep])
    };
    taken.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        (1..=MAX_NAME).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn references_are_parsed_and_other_tools_are_not() {
        assert_eq!(
            parse_reference("mcp:time/get_current_time"),
            Some(Reference { server: "time", pattern: "get_current_time" })
        );
        assert_eq!(parse_reference("mcp:time/*"), Some(Reference { server: "time", pattern: "*" }));
        assert_eq!(parse_reference("call_agent"), None);
        assert_eq!(parse_reference("mcp:time"), None);
        assert_eq!(parse_reference("mcp:/x"), None);
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("get_*", "get_current_time"));
        assert!(glob_matches("*_time", "convert_time"));
        assert!(glob_matches("get_*_time", "get_current_time"));
        assert!(glob_matches("a*b*c", "a-b-c"));
        assert!(!glob_matches("a*b*c", "a-c-b"));
        assert!(!glob_matches("get_*", "convert_time"));
        assert!(!glob_matches("ab*ba", "aba"), "the ends may not overlap");
        assert!(glob_matches("exact", "exact") && !glob_matches("exact", "exactly"));
    }

    #[test]
    fn names_are_valid_readable_and_collision_free() {
        let mut taken = BTreeSet::new();
        assert_eq!(model_name("time", "get_current_time", &mut taken), "time__get_current_time");
        let dotted = model_name("files", "read.file", &mut taken);
        assert_eq!(dotted, "files__read_file");
        let clash = model_name("files", "read_file", &mut taken);
        assert!(clash.starts_with("files__read_file_") && clash != dotted && valid(&clash), "{clash}");
        let long_tool = "a".repeat(80);
        let long = model_name("server", &long_tool, &mut taken);
        assert!(valid(&long) && long.starts_with("server__aaa"), "{long}");
        let other_long = model_name("server", &format!("{long_tool}b"), &mut taken);
        assert!(valid(&other_long) && other_long != long, "two long names stay apart: {other_long}");
        let unicode = model_name("wiki", "sök", &mut taken);
        assert!(valid(&unicode), "{unicode}");
        assert_eq!(taken.len(), 6);
    }
}
