//! `[mcp.servers.<name>]` in `troupe.toml`: the MCP servers whose tools experts name as
//! `mcp:<name>/<tool>`. A server is a child process spoken to over stdio (`command`, `args`,
//! `env`, `cwd`) or a streamable HTTP endpoint (`url`, `headers`); either may set
//! `timeout_seconds` (per call) and `start = "lazy" | "eager"`.
//!
//! Invariant: no secret is written here. `env` and `headers` values are templates whose
//! `${NAME}` parts are read from troupe's environment when the server starts, and a literal
//! credential in an `Authorization` header is refused.

use std::collections::BTreeMap;

use toml::Spanned;
use toml::de::DeValue;

use super::diagnostic::Diagnostic;
use super::reader::{Dirs, FileDiagnostics, Schema, Table};
use super::types::{McpServerSpec, McpStart, McpTransport};

const SERVER_SCHEMA: Schema = &[
    ("command", "command = \"uvx\""),
    ("args", "args = [\"mcp-server-time\"]"),
    ("env", "env = { PATH = \"${PATH}\", API_KEY = \"${MY_API_KEY}\" }"),
    ("cwd", "cwd = \"tools\""),
    ("url", "url = \"http://127.0.0.1:8000/mcp\""),
    ("headers", "headers = { Authorization = \"Bearer ${MY_TOKEN}\" }"),
    ("timeout_seconds", "timeout_seconds = 60"),
    ("start", "start = \"eager\""),
];

const MCP_SCHEMA: Schema = &[("servers", "[mcp.servers.time] followed by command = \"mcp-server-time\"")];

const START: [(&str, McpStart); 2] = [("lazy", McpStart::Lazy), ("eager", McpStart::Eager)];

/// The longest a call may take when `timeout_seconds` is not set.
pub const DEFAULT_MCP_TIMEOUT_SECONDS: u64 = 60;

/// `[mcp]`: the servers read without error, and every server name declared (so that experts'
/// `mcp:` tools naming a server whose table has an error are not reported twice).
pub(crate) fn read_mcp(
    cx: &mut FileDiagnostics<'_>,
    mcp: &Spanned<DeValue<'_>>,
    dirs: &Dirs,
) -> (BTreeMap<String, McpServerSpec>, Vec<String>) {
    let (mut specs, mut names) = (BTreeMap::new(), Vec::new());
    let Some(table) = Table::nested(cx, "mcp", mcp, "[mcp.servers.time]", MCP_SCHEMA) else {
        return (specs, names);
    };
    table.check_unknown(cx);
    let Some(servers) = table.get("servers") else { return (specs, names) };
    let example = "[mcp.servers.time] followed by command = \"mcp-server-time\"";
    let Some(servers) = Table::nested(cx, "mcp.servers", servers, example, &[]) else {
        return (specs, names);
    };
    for (name, value) in servers.table.iter() {
        let name = name.get_ref().to_string();
        names.push(name.clone());
        if let Some(spec) = read_server(cx, &name, value, dirs) {
            specs.insert(name, spec);
        }
    }
    (specs, names)
}

fn read_server(
    cx: &mut FileDiagnostics<'_>,
    name: &str,
    value: &Spanned<DeValue<'_>>,
    dirs: &Dirs,
) -> Option<McpServerSpec> {
    let errors_before = cx.diags.len();
    let key = format!("mcp.servers.{name}");
    let example = format!("[mcp.servers.{name}] followed by command = \"mcp-server-time\"");
    let table = Table::nested(cx, &key, value, &example, SERVER_SCHEMA)?;
    table.check_unknown(cx);
    if name.contains('/') || name.contains(':') || name.trim().is_empty() {
        cx.push(
            Diagnostic::error(table.header(cx), format!("`{name}` cannot name an MCP server"))
                .with_hint("experts write `mcp:<server>/<tool>`: use letters, digits, `_` and `-`"),
        );
    }
    let command = table.string(cx, "command");
    let url = table.string(cx, "url");
    let args = table.string_array(cx, "args");
    let env = table.string_table(cx, "env");
    let cwd = table.string(cx, "cwd");
    let headers = table.string_table(cx, "headers");
    let timeout_seconds = table.u64(cx, "timeout_seconds", true).unwrap_or(DEFAULT_MCP_TIMEOUT_SECONDS);
    let start = table.choice(cx, "start", &START).map_or(McpStart::Lazy, |s| s.value);
    for (key, value) in [("env", &env), ("headers", &headers)] {
        for (var, text) in value.iter().flatten() {
            let lower = var.to_ascii_lowercase();
            let secretive = ["authorization", "x-api-key"].contains(&lower.as_str())
                || lower.ends_with("_key")
                || lower.ends_with("_token")
                || lower.contains("password");
            if secretive && !text.value.contains("${") && !text.value.is_empty() {
                cx.push(
                    Diagnostic::error(text.at.clone(), format!("`{key}.{var}` would put a secret in this file"))
                        .with_hint(format!(
                            "name the variable that holds it: {var} = \"${{MY_{}}}\"",
                            var.to_ascii_uppercase().replace('-', "_")
                        )),
                );
            }
        }
    }
    let transport = match (command, url) {
        (Some(_), Some(url)) => {
            cx.push(
                Diagnostic::error(url.at, "a server has `command` (stdio) or `url` (streamable HTTP), not both")
                    .with_hint("keep the one this server speaks"),
            );
            None
        }
        (None, None) => {
            let hint = "for a program: command = \"mcp-server-time\"; for a server over HTTP: url = \"http://127.0.0.1:8000/mcp\"";
            cx.push(
                Diagnostic::error(table.header(cx), format!("[mcp.servers.{name}] needs `command` or `url`"))
                    .with_hint(hint),
            );
            None
        }
        (Some(command), None) => {
            if let Some((key, _)) = table.table.get_key_value("headers") {
                cx.push(
                    Diagnostic::error(cx.at(&key.span()), "`headers` is for servers reached by `url`")
                        .with_hint("a stdio server reads its settings from `args` and `env`"),
                );
            }
            if command.value.trim().is_empty() {
                cx.push(
                    Diagnostic::error(command.at.clone(), "`command` must name a program, found an empty string")
                        .with_hint("for example: command = \"mcp-server-time\""),
                );
            }
            // A path with a slash is relative to this file's folder; a bare name is looked up
            // in PATH when the server starts.
            let program = if command.value.contains('/') {
                dirs.abs.join(&command.value).to_string_lossy().into_owned()
            } else {
                command.value
            };
            Some(McpTransport::Stdio {
                command: program,
                args: args.unwrap_or_default().into_iter().map(|a| a.value).collect(),
                env: env.unwrap_or_default().into_iter().map(|(k, v)| (k, v.value)).collect(),
                cwd: cwd.map_or_else(|| dirs.abs.clone(), |c| dirs.abs.join(c.value)),
            })
        }
        (None, Some(url)) => {
            for key in ["args", "env", "cwd"] {
                if let Some((key, _)) = table.table.get_key_value(key) {
                    cx.push(
                        Diagnostic::error(
                            cx.at(&key.span()),
                            format!("`{}` is for servers started by `command`", key.get_ref()),
                        )
                        .with_hint("a server reached by `url` takes `headers`"),
                    );
                }
            }
            let scheme_ok = url.value.starts_with("http://") || url.value.starts_with("https://");
            if !scheme_ok {
                cx.push(
                    Diagnostic::error(
                        url.at.clone(),
                        format!(
                            "`url` must be an http:// or https:// address, found `{}`",
                            crate::urls::redact_url_credentials(&url.value)
                        ),
                    )
                    .with_hint("for example: url = \"http://127.0.0.1:8000/mcp\""),
                );
            }
            Some(McpTransport::Http {
                url: url.value,
                headers: headers.unwrap_or_default().into_iter().map(|(k, v)| (k, v.value)).collect(),
            })
        }
    };
    let had_errors = cx.diags.iter().skip(errors_before).any(Diagnostic::is_error);
    if had_errors {
        return None;
    }
    Some(McpServerSpec {
        name: name.to_owned(),
        transport: transport?,
        timeout_seconds,
        start,
        location: table.header(cx),
    })
}
