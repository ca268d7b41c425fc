//! `troupe mcp list` as text: a server's health, then its tools (name, description, the input
//! schema's parameters), resources and prompts. Pure.

use std::fmt::Write as _;

use serde_json::Value;

use super::client::ServerReport;

/// Warnings for an expert's `mcp:` entries that match none of a started server's tools, as
/// `<file>: \`<entry>\` matches no tool of \`<server>\` (it has: …)`. `experts` gives each
/// expert's file (as shown) and tools. Servers that failed are left out: their failure is
/// reported already, and their tools are unknown.
pub fn unmatched_entries<'a>(
    reports: &[ServerReport],
    experts: impl IntoIterator<Item = (String, &'a [String])>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (file, tools) in experts {
        for entry in tools {
            let Some(reference) = super::names::parse_reference(entry) else { continue };
            let Some(report) = reports.iter().find(|r| r.name == reference.server && r.health == "ok") else {
                continue;
            };
            let names: Vec<&str> = report.tools.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect();
            if !names.iter().any(|name| super::names::glob_matches(reference.pattern, name)) {
                let has = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
                warnings.push(format!("{file}: `{entry}` matches no tool of `{}` (it has: {has})", reference.server));
            }
        }
    }
    warnings
}

/// One server, as a block of lines.
pub fn render(report: &ServerReport) -> String {
    let mut out = String::new();
    match &report.error {
        Some(error) if report.health != "ok" => {
            let _ = writeln!(out, "{}: FAILED\n  {error}\n", report.name);
            return out;
        }
        _ => {}
    }
    let who = report
        .server_info
        .as_ref()
        .map(|info| {
            let name = info.get("name").and_then(Value::as_str).unwrap_or("?");
            let version = info.get("version").and_then(Value::as_str).unwrap_or("");
            format!(" ({})", format!("{name} {version}").trim_end())
        })
        .unwrap_or_default();
    let version = report.protocol_version.as_deref().map(|v| format!(", protocol {v}")).unwrap_or_default();
    let _ = writeln!(out, "{}: ok{who}{version}", report.name);
    if let Some(error) = &report.error {
        let _ = writeln!(out, "  warning: {error}");
    }
    let _ = writeln!(out, "  tools ({}):", report.tools.len());
    for tool in &report.tools {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("?");
        let description = tool
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(out, "    mcp:{}/{name}  {}", report.name, crate::protocol::shorten(&description, 100));
        let schema = tool.get("inputSchema").unwrap_or(&Value::Null);
        let required: Vec<&str> =
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        for (param, spec) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let kind = spec.get("type").and_then(Value::as_str).unwrap_or("any");
            let need = if required.contains(&param.as_str()) { "" } else { "?" };
            let what = spec.get("description").and_then(Value::as_str).unwrap_or("");
            let _ = writeln!(out, "      {param}{need}: {kind}  {}", crate::protocol::shorten(what, 80));
        }
    }
    for (title, items, key) in [("resources", &report.resources, "uri"), ("prompts", &report.prompts, "name")] {
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {title} ({}):", items.len());
        for item in items {
            let _ = writeln!(out, "    {}", item.get(key).and_then(Value::as_str).unwrap_or("?"));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_entry_matching_no_tool_of_a_started_server_is_a_warning() {
        let server = |name: &str, health: &'static str, tools: &[&str]| ServerReport {
            name: name.into(),
            health,
            error: None,
            server_info: None,
            protocol_version: None,
            tools: tools.iter().map(|t| serde_json::json!({"name": t})).collect(),
            resources: Vec::new(),
            prompts: Vec::new(),
        };
        let reports = [server("time", "ok", &["get_current_time", "convert_time"]), server("down", "failed", &[])];
        let tools: Vec<String> = ["mcp:time/get_*", "mcp:time/nothing*", "mcp:down/x", "call_slm", "mcp:gone/*"]
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
        assert_eq!(
            unmatched_entries(&reports, [("agents/clock.toml".to_owned(), &tools[..])]),
            [
                "agents/clock.toml: `mcp:time/nothing*` matches no tool of `time` (it has: get_current_time, convert_time)"
            ]
        );
    }

    use super::*;
    use serde_json::json;

    fn report() -> ServerReport {
        ServerReport {
            name: "time".into(),
            health: "ok",
            error: None,
            server_info: Some(json!({"name": "mcp-time", "version": "1.0"})),
            protocol_version: Some("2025-11-25".into()),
            tools: vec![json!({
                "name": "get_current_time",
                "description": "Get current time\\n in a timezone",
                "inputSchema": {"type": "object", "properties": {"timezone": {"type": "string", "description": "IANA name"}, "format": {"type": "string"}}, "required": ["timezone"]}
            })],
            resources: vec![json!({"uri": "time://zones", "name": "zones"})],
            prompts: vec![],
        }
    }

    #[test]
    fn a_healthy_server_lists_its_tools_parameters_and_resources() {
        assert_eq!(
            render(&report()),
            "time: ok (mcp-time 1.0), protocol 2025-11-25\n  tools (1):\n    mcp:time/get_current_time  Get current time\\n in a timezone\n      timezone: string  IANA name\n      format?: string  \n  resources (1):\n    time://zones\n\n"
        );
    }

    #[test]
    fn a_failed_server_says_why() {
        let mut failed = report();
        failed.health = "failed";
        failed.error = Some("`mcp-server-time` was not found (looked in PATH)".into());
        assert_eq!(render(&failed), "time: FAILED\n  `mcp-server-time` was not found (looked in PATH)\n\n");
    }
}
