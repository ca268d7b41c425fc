//! `[[checks]]` of an experiment: how each trial's answer is scored. Each check has a `type`
//! and only the keys that type uses; a regular expression is compiled and a JSON schema read
//! here, so a mistake in them is a diagnostic, not a failed trial.
//!
//! Invariant: a check is kept only when its table had no error. A judge's model alias is a
//! [`Reference`], checked by the workbench. An exec check's `env` holds only variable names.

use std::collections::BTreeSet;

use toml::Spanned;
use toml::de::DeValue;

use super::diagnostic::Diagnostic;
use super::reader::{Dirs, FileDiagnostics, Located, RefKind, Reference, Schema, Table, non_empty, type_name};
use super::settings::{is_env_var_name, looks_like_key};
use super::types::{CheckKind, CheckSpec, TaskSpec};

const CHECK_SCHEMA: Schema = &[
    ("type", "type = \"contains\""),
    ("name", "name = \"mentions the capital\""),
    ("value", "value = \"Paris\""),
    ("case_sensitive", "case_sensitive = true"),
    ("pattern", "pattern = '^\\d+$'"),
    ("tolerance", "tolerance = 0.5"),
    ("schema", "schema = { type = \"object\", required = [\"answer\"] }"),
    ("command", "command = [\"python3\", \"grade.py\"]"),
    ("timeout_seconds", "timeout_seconds = 30"),
    ("env", "env = [\"GRADER_TOKEN\"]"),
    ("model", "model = \"big\""),
    ("rubric", "rubric = \"Pass if the answer names a real octopus fact.\""),
];

const KINDS: [(&str, &str); 7] = [
    ("contains", "contains"),
    ("regex", "regex"),
    ("equals", "equals"),
    ("number", "number"),
    ("json_schema", "json_schema"),
    ("exec", "exec"),
    ("judge", "judge"),
];

/// The keys each type may use besides `type` and `name`.
fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "contains" | "equals" => &["value", "case_sensitive"],
        "regex" => &["pattern"],
        "number" => &["value", "tolerance"],
        "json_schema" => &["schema"],
        "exec" => &["command", "timeout_seconds", "env"],
        "judge" => &["model", "rubric"],
        _ => &[],
    }
}

/// An exec check's time limit when it gives none.
const DEFAULT_EXEC_SECONDS: u64 = 60;

pub(crate) struct ReadChecks {
    pub checks: Vec<CheckSpec>,
    pub references: Vec<Reference>,
}

pub(crate) fn read_checks(
    cx: &mut FileDiagnostics<'_>,
    value: &Spanned<DeValue<'_>>,
    dirs: &Dirs,
    tasks: &[TaskSpec],
) -> ReadChecks {
    let mut out = ReadChecks { checks: Vec::new(), references: Vec::new() };
    let DeValue::Array(items) = value.get_ref() else {
        cx.push(
            Diagnostic::error(cx.at(&value.span()), "`checks` must be an array of [[checks]] tables")
                .with_hint("for example: [[checks]] followed by type = \"contains\""),
        );
        return out;
    };
    let mut names = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let errors_before = cx.diags.iter().filter(|d| d.is_error()).count();
        let example = "[[checks]] followed by type = \"contains\"";
        let Some(table) = Table::nested(cx, "checks", item, example, CHECK_SCHEMA) else { continue };
        table.check_unknown(cx);
        let Some(kind) = table.choice(cx, "type", &KINDS) else {
            if table.get("type").is_none() {
                table.missing(cx, "type");
            }
            continue;
        };
        let kind_name = kind.value;
        for key in table.table.keys() {
            let key_name: &str = key.get_ref();
            let allowed = ["type", "name"].contains(&key_name) || keys_of(kind_name).contains(&key_name);
            if !allowed && CHECK_SCHEMA.iter().any(|(k, _)| *k == key_name) {
                let uses = keys_of(kind_name).iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
                cx.push(
                    Diagnostic::error(
                        cx.at(&key.span()),
                        format!("`{key_name}` does not apply to a `{kind_name}` check"),
                    )
                    .with_hint(format!("a `{kind_name}` check uses {uses}")),
                );
            }
        }
        let name = match table.string(cx, "name") {
            Some(name) => name.value,
            None => format!("{kind_name}-{}", i + 1),
        };
        if !names.insert(name.clone()) {
            let at = table.header(cx);
            cx.push(
                Diagnostic::error(at, format!("duplicate check name `{name}`"))
                    .with_hint("give each check its own `name`"),
            );
        }
        let location = table.header(cx);
        let parsed = match kind_name {
            "contains" | "equals" => {
                let value = text_value(cx, &table);
                let case_sensitive = table.boolean(cx, "case_sensitive").unwrap_or(false);
                warn_without_expected(cx, &table, value.is_some(), tasks);
                Some(if kind_name == "contains" {
                    CheckKind::Contains { value, case_sensitive }
                } else {
                    CheckKind::Equals { value, case_sensitive }
                })
            }
            "regex" => non_empty(cx, &table, "pattern").and_then(|pattern| compile(cx, &table, pattern)),
            "number" => {
                let value = table.number(cx, "value", f64::MIN, f64::MAX);
                let tolerance = table.number(cx, "tolerance", 0.0, f64::MAX).unwrap_or(0.0);
                warn_without_expected(cx, &table, value.is_some(), tasks);
                Some(CheckKind::Number { value, tolerance })
            }
            "json_schema" => read_schema(cx, &table, dirs).map(|schema| CheckKind::JsonSchema { schema }),
            "exec" => read_command(cx, &table).map(|command| CheckKind::Exec {
                command,
                timeout_seconds: table.u64(cx, "timeout_seconds", true).unwrap_or(DEFAULT_EXEC_SECONDS),
                cwd: dirs.abs.clone(),
                env: read_env_names(cx, &table),
            }),
            _ => {
                let model = non_empty(cx, &table, "model");
                let rubric = non_empty(cx, &table, "rubric");
                match (model, rubric) {
                    (Some(model), Some(rubric)) => {
                        out.references.push(Reference {
                            kind: RefKind::Alias,
                            name: model.value.clone(),
                            at: model.at,
                            context: format!("check `{name}`"),
                        });
                        Some(CheckKind::Judge { model: model.value, rubric: rubric.value })
                    }
                    _ => None,
                }
            }
        };
        let errors_after = cx.diags.iter().filter(|d| d.is_error()).count();
        if let Some(kind) = parsed.filter(|_| errors_after == errors_before) {
            out.checks.push(CheckSpec { name, kind, location });
        }
    }
    out
}

/// `value` as text: a string, or a number written as one.
fn text_value(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>) -> Option<String> {
    let value = table.get("value")?;
    match value.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(_) | DeValue::Float(_) => Some(cx.src.slice(value.span()).to_owned()),
        other => {
            table.value_error(cx, "value", value, format!("`value` must be a string, found {}", type_name(other)));
            None
        }
    }
}

/// A check without `value` compares with each task's `expected`: say so when a task has none.
fn warn_without_expected(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>, has_value: bool, tasks: &[TaskSpec]) {
    if has_value {
        return;
    }
    let missing: Vec<&str> = tasks.iter().filter(|t| t.expected.is_none()).map(|t| t.id.as_str()).collect();
    if missing.is_empty() {
        return;
    }
    let shown = if missing.len() > 3 { format!("{} tasks", missing.len()) } else { missing.join(", ") };
    let at = table.header(cx);
    cx.push(
        Diagnostic::warning(at, format!("this check has no `value` and {shown} give no `expected`: it fails on them"))
            .with_hint("add `value = \"…\"` to the check, or `expected` to each task"),
    );
}

fn compile(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>, pattern: Located<String>) -> Option<CheckKind> {
    match regex::Regex::new(&pattern.value) {
        Ok(_) => Some(CheckKind::Regex { pattern: pattern.value }),
        Err(err) => {
            let first = err.to_string().lines().last().unwrap_or_default().trim().to_owned();
            if let Some(raw) = table.get("pattern") {
                table.value_error(cx, "pattern", raw, format!("`pattern` is not a valid regular expression: {first}"));
            }
            None
        }
    }
}

/// `schema` inline (a TOML table) or as the path of a JSON file next to the experiment.
fn read_schema(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>, dirs: &Dirs) -> Option<serde_json::Value> {
    let Some(value) = table.get("schema") else {
        table.missing(cx, "schema");
        return None;
    };
    match value.get_ref() {
        DeValue::Table(_) => Some(to_json(value.get_ref())),
        DeValue::String(path) => {
            let parsed = dirs
                .inside(path.as_ref())
                .and_then(|(_, abs)| super::workbench::read_capped(&abs, super::workbench::MAX_CONFIG_BYTES))
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string()));
            match parsed {
                Ok(schema) => Some(schema),
                Err(err) => {
                    let shown = dirs.shown.join(path.as_ref());
                    table.value_error(
                        cx,
                        "schema",
                        value,
                        format!("cannot read the schema {}: {err}", shown.display()),
                    );
                    None
                }
            }
        }
        other => {
            let message = format!("`schema` must be a table or a JSON file's path, found {}", type_name(other));
            table.value_error(cx, "schema", value, message);
            None
        }
    }
}

/// A TOML value as JSON (dates become strings).
fn to_json(value: &DeValue<'_>) -> serde_json::Value {
    use serde_json::Value;
    match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(_) => {
            super::reader::integer_value(value).and_then(|i| i64::try_from(i).ok()).map_or(Value::Null, Value::from)
        }
        DeValue::Float(_) => super::reader::number_value(value).map_or(Value::Null, Value::from),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|i| to_json(i.get_ref())).collect()),
        DeValue::Table(table) => {
            Value::Object(table.iter().map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref()))).collect())
        }
    }
}

/// `env = ["NAME", …]`: the variables of troupe's environment an exec check's program sees
/// besides `PATH`, `HOME` and `TROUPE_TASK` (it gets nothing else: answers are model-written).
/// Each entry must be a variable's name; a bad one is reported where it is written.
fn read_env_names(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>) -> Vec<String> {
    let Some(names) = table.string_array(cx, "env") else { return Vec::new() };
    for name in names.iter().filter(|name| !is_env_var_name(&name.value)) {
        // A value pasted where its name belongs is a secret: it is not repeated.
        let message = if looks_like_key(&name.value) {
            "`env` lists names of environment variables, not their values".to_owned()
        } else {
            format!("`env` lists `{}`, which is not an environment variable's name", name.value)
        };
        cx.push(
            Diagnostic::error(name.at.clone(), message)
                .with_hint("a name is letters, digits and `_`, not starting with a digit: env = [\"GRADER_TOKEN\"]"),
        );
    }
    names.into_iter().map(|name| name.value).collect()
}

/// `command = ["prog", "arg"]`, or a string run by `sh -c`.
fn read_command(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>) -> Option<Vec<String>> {
    let Some(value) = table.get("command") else {
        table.missing(cx, "command");
        return None;
    };
    if let DeValue::String(line) = value.get_ref() {
        if line.trim().is_empty() {
            table.value_error(cx, "command", value, "`command` must not be empty".to_owned());
            return None;
        }
        return Some(vec!["sh".to_owned(), "-c".to_owned(), line.to_string()]);
    }
    let command = table.string_array(cx, "command")?;
    if command.first().is_none_or(|c| c.value.trim().is_empty()) {
        table.value_error(cx, "command", value, "`command` must name a program first".to_owned());
        return None;
    }
    Some(command.into_iter().map(|c| c.value).collect())
}
