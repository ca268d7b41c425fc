//! Redaction: keeps the values of secret environment variables (API keys, tokens, passwords),
//! and credentials written into URLs (`https://user:pass@host`), out of everything troupe
//! writes to a run folder.
//!
//! Invariant: a [`Redactor`] never shows its secrets: not in `Debug`, not in errors, not in
//! logs. Redaction works on values, not on names: a key is caught wherever a model, a tool or a
//! config file repeats it, and also in its JSON-escaped spelling.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use crate::protocol::{Event, EventBody, TaskId};
use crate::urls::redact_url_credentials;

/// What a secret is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not treated as secrets: `DEBUG_AUTH=1` must not redact every
/// `1` in a transcript.
const MIN_SECRET_LEN: usize = 8;

/// Substrings of an environment variable's name (compared in upper case) that mark its value as
/// a secret.
const SECRET_NAME_MARKERS: [&str; 7] = ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH"];

/// Replaces known secret values by [`REDACTED`].
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole rather than leaving
    /// its remainder behind. Holds each secret and, where it differs, its JSON-escaped form.
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The count only: printing a redactor must not print what it hides.
        f.debug_struct("Redactor").field("secrets", &self.secrets.len()).finish()
    }
}

impl Redactor {
    /// A redactor for exactly these values (tests, or secrets known some other way). Empty
    /// values are dropped, since an empty pattern would match between every two characters.
    pub fn new(secrets: Vec<String>) -> Redactor {
        let mut all = Vec::with_capacity(secrets.len() * 2);
        for secret in secrets {
            if secret.is_empty() {
                continue;
            }
            if let Ok(quoted) = serde_json::to_string(&secret) {
                let escaped = &quoted[1..quoted.len() - 1];
                if escaped != secret {
                    all.push(escaped.to_owned());
                }
            }
            all.push(secret);
        }
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Redactor { secrets: all }
    }

    /// Secrets from this process's environment: the values of the variables named in
    /// `extra_names` (the `api_key_env` settings of `troupe.toml`) and of every variable whose
    /// name looks secret (KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL, AUTH), keeping only
    /// values of at least eight characters.
    pub fn from_env(extra_names: &[String]) -> Redactor {
        // `vars_os`, not `vars`: the latter panics on a variable that is not UTF-8.
        let vars =
            std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
        Redactor::from_vars(vars, extra_names)
    }

    fn from_vars(vars: impl IntoIterator<Item = (String, String)>, extra_names: &[String]) -> Redactor {
        let secrets = vars
            .into_iter()
            .filter(|(name, _)| extra_names.contains(name) || name_looks_secret(name))
            // A value read from a file often ends in a newline the key itself does not have.
            .map(|(_, value)| value.trim().to_owned())
            .filter(|value| value.chars().count() >= MIN_SECRET_LEN)
            .collect();
        Redactor::new(secrets)
    }

    /// How many patterns (secrets and their escaped forms) this redactor looks for.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced by [`REDACTED`], and the credentials of URLs by
    /// `***` (a `base_url` with `user:pass@` quoted in an error); borrowed when there was
    /// nothing to replace, which is almost always.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = redact_url_credentials(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    fn text(&self, text: &str) -> String {
        self.redact(text).into_owned()
    }

    fn opt(&self, text: &Option<String>) -> Option<String> {
        text.as_deref().map(|t| self.text(t))
    }

    /// Redacts every string of a JSON value, object keys included (tool arguments are free-form):
    /// what `troupe mcp serve` answers its clients and what the memory stores pass through here.
    pub fn redact_value(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.text(text)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.redact_value(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (self.text(k), self.redact_value(v))).collect())
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
        }
    }

    /// The event with every free-text field redacted. Done on the typed event rather than on
    /// its JSON line so that a replacement can never break the line's JSON or a typed field
    /// (a status, a URI, a time) that other tools parse.
    pub fn redact_event(&self, event: &Event) -> Event {
        let body = match &event.body {
            EventBody::RunStarted { run_id, experiment, root_agent, task, prices, format, troupe_version } => {
                EventBody::RunStarted {
                    run_id: self.text(run_id),
                    experiment: self.text(experiment),
                    root_agent: self.text(root_agent),
                    task: self.text(task),
                    prices: prices.clone(),
                    format: *format,
                    troupe_version: troupe_version.clone(),
                }
            }
            EventBody::TaskCreated { uri, parent, kind, agent, model, task } => EventBody::TaskCreated {
                uri: *uri,
                parent: *parent,
                kind: *kind,
                agent: self.text(agent),
                model: self.text(model),
                task: self.text(task),
            },
            EventBody::TaskStatus { uri, status, status_message, result, error } => EventBody::TaskStatus {
                uri: *uri,
                status: *status,
                status_message: self.opt(status_message),
                result: self.opt(result),
                error: self.opt(error),
            },
            EventBody::Message { uri, role, content } => {
                EventBody::Message { uri: *uri, role: *role, content: self.text(content) }
            }
            EventBody::MessageDelta { uri, delta } => EventBody::MessageDelta { uri: *uri, delta: self.text(delta) },
            EventBody::ToolCall { uri, call_id, tool, arguments } => EventBody::ToolCall {
                uri: *uri,
                call_id: self.text(call_id),
                tool: self.text(tool),
                arguments: self.redact_value(arguments),
            },
            EventBody::ToolResult { uri, call_id, tool, result, is_error } => EventBody::ToolResult {
                uri: *uri,
                call_id: self.text(call_id),
                tool: self.text(tool),
                result: self.redact_value(result),
                is_error: *is_error,
            },
            EventBody::Usage { .. } | EventBody::ChildrenOnFinish { .. } => event.body.clone(),
            EventBody::Routed { uri, alias, reason } => {
                EventBody::Routed { uri: *uri, alias: self.text(alias), reason: self.text(reason) }
            }
            EventBody::MemoryRecalled { uri, lessons, error } => EventBody::MemoryRecalled {
                uri: *uri,
                lessons: lessons
                    .iter()
                    .map(|l| crate::protocol::RecalledLesson { id: l.id, score: l.score, text: self.text(&l.text) })
                    .collect(),
                error: self.opt(error),
            },
            EventBody::McpTools { uri, tools, problems } => EventBody::McpTools {
                uri: *uri,
                tools: tools.clone(),
                problems: problems.iter().map(|p| self.text(p)).collect(),
            },
            EventBody::LimitHit { uri, limit, value, message } => {
                EventBody::LimitHit { uri: *uri, limit: self.text(limit), value: *value, message: self.text(message) }
            }
            EventBody::RunFinished { status, result, error, usage, tasks, elapsed_ms } => EventBody::RunFinished {
                status: *status,
                result: self.opt(result),
                error: self.opt(error),
                usage: *usage,
                tasks: *tasks,
                elapsed_ms: *elapsed_ms,
            },
        };
        Event { seq: event.seq, ts: event.ts, body }
    }

    /// The length in bytes of the longest end of `text` that is the beginning of a secret: what
    /// must be held back from a stream until the next piece shows whether the secret follows.
    fn secret_prefix_at_end(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        let mut longest = 0;
        for secret in &self.secrets {
            let most = (secret.len() - 1).min(bytes.len());
            for k in (longest + 1..=most).rev() {
                if bytes.ends_with(&secret.as_bytes()[..k]) && text.is_char_boundary(bytes.len() - k) {
                    longest = k;
                    break;
                }
            }
        }
        longest
    }
}

/// Whether a variable (or an MCP server's `env` key) named `name` holds a secret by its name.
pub fn name_looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_MARKERS.iter().any(|marker| upper.contains(marker))
}

/// Redaction across streamed `message_delta`s. A secret a model repeats can arrive split over
/// two deltas, where redacting each piece alone finds nothing; so the end of a stream that could
/// be the beginning of a secret is held back until the next delta decides it.
#[derive(Debug, Default)]
pub(crate) struct DeltaGuard {
    /// Per task: text received but not yet written, always shorter than the longest secret.
    held: HashMap<TaskId, String>,
}

impl DeltaGuard {
    /// The text of this delta that is safe to write now (possibly empty).
    pub(crate) fn push(&mut self, redactor: &Redactor, uri: TaskId, delta: &str) -> String {
        if redactor.is_empty() {
            return delta.to_owned();
        }
        let mut text = self.held.remove(&uri).unwrap_or_default();
        text.push_str(delta);
        let mut text = redactor.redact(&text).into_owned();
        let hold = redactor.secret_prefix_at_end(&text);
        if hold > 0 {
            let tail = text.split_off(text.len() - hold);
            self.held.insert(uri, tail);
        }
        text
    }

    /// Forgets what was held for `uri`: its stream has ended (the whole `message` follows, and
    /// is redacted as a whole). The held piece is dropped, not written: it may be half a secret.
    pub(crate) fn end(&mut self, uri: TaskId) {
        self.held.remove(&uri);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn secrets_are_replaced_longest_first() {
        let r = Redactor::new(vec!["sk-abcdef".into(), "sk-abcdef-0123456789".into()]);
        assert_eq!(r.redact("key sk-abcdef-0123456789 and sk-abcdef."), "key [redacted] and [redacted].");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_escaped_secrets_are_replaced_too() {
        let r = Redactor::new(vec![r#"pa"ss\word"#.into()]);
        assert_eq!(r.len(), 2);
        let json = serde_json::to_string(&serde_json::json!({ "p": r#"pa"ss\word"# })).unwrap();
        assert_eq!(r.redact(&json), r#"{"p":"[redacted]"}"#);
        assert_eq!(r.redact(r#"raw pa"ss\word"#), "raw [redacted]");
    }

    #[test]
    fn environment_secrets_are_chosen_by_name_and_length() {
        let r = Redactor::from_vars(
            vars(&[
                ("OPENAI_API_KEY", "sk-live-123456"),
                ("github_token", "ghp_abcdefgh\n"),
                ("MY_PROVIDER", "custom-provider-secret"),
                ("DEBUG_AUTH", "1"),
                ("DB_PASSWORD", "short"),
                ("HOME", "/home/someone"),
                ("CLOUD_CREDENTIALS", "creds-creds"),
            ]),
            &["MY_PROVIDER".to_string()],
        );
        let text = "sk-live-123456 ghp_abcdefgh custom-provider-secret 1 short /home/someone creds-creds";
        assert_eq!(r.redact(text), "[redacted] [redacted] [redacted] 1 short /home/someone [redacted]");
    }

    #[test]
    fn credentials_in_urls_are_hidden_even_without_secrets() {
        let r = Redactor::default();
        let text = "cannot reach openai at http://bob:hunter2@127.0.0.1:9/v1: connection refused";
        assert_eq!(r.redact(text), "cannot reach openai at http://***@127.0.0.1:9/v1: connection refused");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let r = Redactor::new(vec!["sk-very-secret".into()]);
        let shown = format!("{r:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
    }

    #[test]
    fn empty_secrets_are_ignored() {
        let r = Redactor::new(vec![String::new()]);
        assert!(r.is_empty());
        assert_eq!(r.redact("abc"), "abc");
    }

    #[test]
    fn events_are_redacted_in_every_text_field() {
        let r = Redactor::new(vec!["sk-secret-42".into()]);
        let uri = TaskId::from_code(1);
        let event = Event {
            seq: 1,
            ts: 5,
            body: EventBody::ToolCall {
                uri,
                call_id: "c1".into(),
                tool: "http".into(),
                arguments: serde_json::json!({"header": ["Bearer sk-secret-42"], "sk-secret-42": 1}),
            },
        };
        let clean = r.redact_event(&event);
        let line = serde_json::to_string(&clean).unwrap();
        assert!(!line.contains("sk-secret-42"), "{line}");
        assert!(line.contains(r#""header":["Bearer [redacted]"]"#), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), clean);
    }

    #[test]
    fn a_secret_split_across_deltas_never_reaches_the_output() {
        let r = Redactor::new(vec!["sk-secret-42".into()]);
        let uri = TaskId::from_code(1);
        let mut guard = DeltaGuard::default();
        let pieces = ["the key is sk-se", "cret", "-42, and ", "sk is fine"];
        let written: Vec<String> = pieces.iter().map(|p| guard.push(&r, uri, p)).collect();
        assert_eq!(written, ["the key is ", "", "[redacted], and ", "sk is fine"]);
        // A stream that ends on half a secret drops the half.
        assert_eq!(guard.push(&r, uri, "then sk-sec"), "then ");
        guard.end(uri);
        assert_eq!(guard.push(&r, uri, "ret-42"), "ret-42");
    }
}
