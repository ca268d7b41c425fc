//! `experiments/*.toml`: the root agent, its tasks (`task`, `[[tasks]]` or a `dataset`),
//! repetitions, `[[variants]]`, `[[checks]]`, and model-alias and limit overrides, read into an
//! [`ExperimentDraft`]. Variants are read by [`variants`](super::variants), checks by
//! [`checks`](super::checks).
//!
//! Invariant: as in [`agent`](super::agent), only what the file (and its dataset) alone can tell
//! is checked here; every name it uses that another file defines (agents, model aliases) is
//! recorded as a [`Reference`] and checked by [`workbench`](super::workbench).

use std::collections::BTreeSet;
use std::path::Path;

use toml::Spanned;
use toml::de::DeValue;

use super::agent::read_name;
use super::diagnostic::Diagnostic;
use super::reader::{
    Dirs, FileDiagnostics, Located, RefKind, Reference, Schema, Source, Table, non_empty, start_of, type_name,
};
use super::settings::{read_limits, read_models};
use super::types::{ExperimentSpec, Location, REFLECTOR, TaskSpec};

const EXPERIMENT_SCHEMA: Schema = &[
    ("name", "name = \"smoke\""),
    ("description", "description = \"Can the researcher delegate?\""),
    ("root", "root = \"researcher\""),
    ("task", "task = \"Summarize the three main causes of inflation.\""),
    ("tasks", "[[tasks]] followed by input = \"What is 6 × 7?\" and expected = \"42\""),
    ("dataset", "dataset = \"tasks.jsonl\""),
    ("repetitions", "repetitions = 5"),
    ("concurrency", "concurrency = 4"),
    ("memory", "memory = \"frozen\""),
    ("reflect", "reflect = true"),
    ("baseline", "baseline = \"inherit\""),
    ("variants", "[[variants]] followed by name = \"experts\""),
    ("checks", "[[checks]] followed by type = \"contains\""),
    ("models", "[models.small]"),
    ("limits", "[limits]"),
];

const TASK_SCHEMA: Schema =
    &[("input", "input = \"What is 6 × 7?\""), ("expected", "expected = \"42\""), ("id", "id = \"arithmetic\"")];

/// Repetitions above this are almost certainly a typo, and would fill the disk.
const MAX_REPETITIONS: u64 = 10_000;

/// One experiment file as read, before the workbench-wide checks.
#[derive(Clone, Debug)]
pub(crate) struct ExperimentDraft {
    /// `root` is empty when it was missing or mistyped (already reported).
    pub spec: ExperimentSpec,
    /// The `name` value, or 1:1 when the name is the file's stem.
    pub name_at: Location,
    /// The `root` value, when it was read.
    pub root_at: Option<Location>,
    /// Every alias of its `[models]` and its variants' `[models]`, including those whose
    /// tables had errors.
    pub aliases: BTreeSet<String>,
    /// Names defined elsewhere (besides `root`), to check across files.
    pub references: Vec<Reference>,
    /// False when the file could not be read or parsed.
    pub complete: bool,
    pub diags: Vec<Diagnostic>,
}

impl ExperimentDraft {
    fn empty(shown: &Path, abs: &Path) -> Self {
        let stem = shown.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        ExperimentDraft {
            spec: ExperimentSpec::new(stem, String::new(), Vec::new(), abs),
            name_at: start_of(shown),
            root_at: None,
            aliases: BTreeSet::new(),
            references: Vec::new(),
            complete: false,
            diags: Vec::new(),
        }
    }

    /// A file that could not be read.
    pub fn unreadable(shown: &Path, abs: &Path, diag: Diagnostic) -> Self {
        let mut draft = Self::empty(shown, abs);
        draft.diags.push(diag);
        draft
    }

    pub fn read(src: &Source, abs: &Path) -> Self {
        let mut draft = Self::empty(&src.path, abs);
        let mut cx = FileDiagnostics::new(src);
        let Some(doc) = src.parse(&mut cx.diags) else {
            draft.diags = cx.diags;
            return draft;
        };
        draft.complete = true;
        let dirs = Dirs::of_nested(&src.path, abs);
        let table = Table::document(&doc, EXPERIMENT_SCHEMA);
        table.check_unknown(&mut cx);
        let spec = &mut draft.spec;
        if let Some(name) = read_name(&mut cx, &table) {
            spec.name = name.value;
            draft.name_at = name.at;
        }
        if let Some(description) = table.string(&mut cx, "description") {
            spec.description = description.value;
        }
        if let Some(root) = non_empty(&mut cx, &table, "root") {
            spec.root = root.value;
            draft.root_at = Some(root.at);
        }
        let (tasks, dataset) = read_tasks(&mut cx, &table, &dirs);
        spec.tasks = tasks;
        spec.dataset = dataset;
        spec.repetitions =
            table.uint(&mut cx, "repetitions", true, MAX_REPETITIONS).and_then(|n| u32::try_from(n).ok()).unwrap_or(1);
        spec.concurrency = table.u32(&mut cx, "concurrency", true);
        spec.memory = table.choice(&mut cx, "memory", &super::types::MemoryMode::ALL).map(|m| m.value);
        spec.reflect = table.boolean(&mut cx, "reflect");
        if spec.reflect == Some(true)
            && let Some((key, _)) = table.table.get_key_value("reflect")
        {
            draft.references.push(Reference {
                kind: RefKind::Agent,
                name: REFLECTOR.to_owned(),
                at: cx.at(&key.span()),
                context: "`reflect = true` (the expert that writes lessons after each run)".to_owned(),
            });
        }
        if let Some(models) = table.get("models") {
            let (specs, aliases) = read_models(&mut cx, models, &dirs);
            spec.models = specs;
            draft.aliases = aliases;
        }
        if let Some(patch) = table.get("limits").and_then(|v| read_limits(&mut cx, v)) {
            spec.limits = patch;
        }
        if let Some(value) = table.get("variants") {
            let read = super::variants::read_variants(&mut cx, value, &dirs);
            spec.variants = read.variants;
            draft.aliases.extend(read.aliases);
            draft.references.extend(read.references);
        }
        if let Some(baseline) = table.string(&mut cx, "baseline") {
            check_baseline(&mut cx, &baseline, spec);
            spec.baseline = Some(baseline.value);
        }
        if let Some(value) = table.get("checks") {
            let read = super::checks::read_checks(&mut cx, value, &dirs, &spec.tasks);
            spec.checks = read.checks;
            draft.references.extend(read.references);
        }
        draft.diags = cx.diags;
        draft
    }
}

/// `baseline` must name one of the variants.
fn check_baseline(cx: &mut FileDiagnostics<'_>, baseline: &Located<String>, spec: &ExperimentSpec) {
    let names: Vec<&str> = spec.variants.iter().map(|v| v.name.as_str()).collect();
    if names.contains(&baseline.value.as_str()) {
        return;
    }
    let message = format!("`baseline` names `{}`, which is not one of the variants", baseline.value);
    let hint = if names.is_empty() {
        "without [[variants]] there is one variant, `default`: remove `baseline`".to_owned()
    } else {
        super::suggest::hint(&baseline.value, names.iter().copied(), "variants", None)
            .unwrap_or_else(|| format!("variants: {}", names.join(", ")))
    };
    cx.push(Diagnostic::error(baseline.at.clone(), message).with_hint(hint));
}

/// The tasks, from exactly one of `task`, `tasks` and `dataset`; and the dataset's path.
fn read_tasks(
    cx: &mut FileDiagnostics<'_>,
    table: &Table<'_, '_>,
    dirs: &Dirs,
) -> (Vec<TaskSpec>, Option<std::path::PathBuf>) {
    let given: Vec<&str> = ["task", "tasks", "dataset"].into_iter().filter(|k| table.get(k).is_some()).collect();
    if given.is_empty() {
        table.missing_with_hint(
            cx,
            "task",
            "for example: task = \"Summarize the three main causes of inflation.\", or [[tasks]] tables, or dataset = \"tasks.jsonl\"".to_owned(),
        );
        return (Vec::new(), None);
    }
    if let [first, second, ..] = given.as_slice()
        && let Some(value) = table.get(second)
    {
        let message = format!("`{second}` and `{first}` both give the tasks: keep one");
        cx.push(
            Diagnostic::error(cx.at(&value.span()), message)
                .with_hint("use `task` for one task, [[tasks]] for a few, `dataset` for a JSON-lines file"),
        );
        return (Vec::new(), None);
    }
    let mut tasks = Vec::new();
    let mut dataset = None;
    match given.first().copied() {
        Some("task") => {
            if let Some(task) = non_empty(cx, table, "task") {
                tasks.push((TaskSpec { id: "task-1".to_owned(), input: task.value, expected: None }, task.at));
            }
        }
        Some("tasks") => {
            if let Some(value) = table.get("tasks") {
                tasks = read_task_list(cx, table, value);
            }
        }
        _ => {
            if let Some(file) = table.string(cx, "dataset") {
                match dirs.inside(&file.value) {
                    Ok((shown, abs)) => {
                        tasks = read_dataset(cx, &file, &shown, &abs);
                        dataset = Some(abs);
                    }
                    Err(message) => cx.push(Diagnostic::error(file.at.clone(), message)),
                }
            }
        }
    }
    check_task_ids(cx, &tasks);
    (tasks.into_iter().map(|(task, _)| task).collect(), dataset)
}

/// A task and where it is written (its `id` when it has one).
type LocatedTask = (TaskSpec, Location);

/// `tasks = "…"`, `tasks = ["…", "…"]` or `[[tasks]]` tables.
fn read_task_list(
    cx: &mut FileDiagnostics<'_>,
    table: &Table<'_, '_>,
    value: &Spanned<DeValue<'_>>,
) -> Vec<LocatedTask> {
    let items = match value.get_ref() {
        DeValue::String(s) if !s.trim().is_empty() => {
            let task = TaskSpec { id: "task-1".to_owned(), input: s.to_string(), expected: None };
            return vec![(task, cx.at(&value.span()))];
        }
        DeValue::Array(items) if !items.is_empty() => items,
        DeValue::Array(_) | DeValue::String(_) => {
            table.value_error(cx, "tasks", value, "`tasks` must not be empty".to_owned());
            return Vec::new();
        }
        other => {
            table.value_error(
                cx,
                "tasks",
                value,
                format!("`tasks` must be a string or an array of [[tasks]] tables, found {}", type_name(other)),
            );
            return Vec::new();
        }
    };
    let mut tasks = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let default_id = format!("task-{}", i + 1);
        match item.get_ref() {
            DeValue::String(s) => {
                tasks.push((TaskSpec { id: default_id, input: s.to_string(), expected: None }, cx.at(&item.span())));
            }
            DeValue::Table(_) => {
                let example = "[[tasks]] followed by input = \"What is 6 × 7?\"";
                let Some(task) = Table::nested(cx, "tasks", item, example, TASK_SCHEMA) else { continue };
                task.check_unknown(cx);
                let input = non_empty(cx, &task, "input");
                let expected = task.get("expected").and_then(|v| match scalar_text(v.get_ref()) {
                    Some(text) => Some(text),
                    None => {
                        task.value_error(
                            cx,
                            "expected",
                            v,
                            format!("`expected` must be a string or a number, found {}", type_name(v.get_ref())),
                        );
                        None
                    }
                });
                let id = task.string(cx, "id");
                if let Some(input) = input {
                    let at = id.as_ref().map_or_else(|| task.header(cx), |id| id.at.clone());
                    let id = id.map_or(default_id, |id| id.value);
                    tasks.push((TaskSpec { id, input: input.value, expected }, at));
                }
            }
            other => {
                let message = format!("a task must be a string or a table, found {}", type_name(other));
                cx.push(
                    Diagnostic::error(cx.at(&item.span()), message)
                        .with_hint("for example: [[tasks]] followed by input = \"What is 6 × 7?\""),
                );
            }
        }
    }
    tasks
}

/// A string, or a number/boolean written as text (`expected = 42`).
fn scalar_text(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(_) | DeValue::Float(_) => super::reader::number_value(value)
            .map(|n| if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { n.to_string() }),
        DeValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The largest dataset troupe reads: tens of thousands of tasks.
const MAX_DATASET_BYTES: u64 = 64 * 1024 * 1024;

/// A JSON-lines dataset: one task per line (`{"input": …, "expected": …, "id": …}`); blank
/// lines are skipped. Errors point into the dataset at the line and column.
fn read_dataset(cx: &mut FileDiagnostics<'_>, file: &Located<String>, shown: &Path, abs: &Path) -> Vec<LocatedTask> {
    let text = match super::workbench::read_capped(abs, MAX_DATASET_BYTES) {
        Ok(text) => text,
        Err(err) => {
            cx.push(
                Diagnostic::error(file.at.clone(), format!("cannot read dataset {}: {err}", shown.display()))
                    .with_hint("`dataset` is relative to the experiment file; one JSON object per line"),
            );
            return Vec::new();
        }
    };
    let mut tasks = Vec::new();
    let at = |line: usize, col: usize| Location {
        path: shown.to_path_buf(),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        col: u32::try_from(col).unwrap_or(u32::MAX),
    };
    let hint = "each line is a JSON object like {\"input\": \"What is 6 × 7?\", \"expected\": \"42\"}";
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(err) => {
                let message = format!("dataset line is not JSON: {}", strip_position(&err.to_string()));
                cx.push(Diagnostic::error(at(i + 1, err.column().max(1)), message).with_hint(hint));
                continue;
            }
        };
        let Some(object) = value.as_object() else {
            cx.push(Diagnostic::error(at(i + 1, 1), "a dataset line must be a JSON object").with_hint(hint));
            continue;
        };
        let input = match object.get("input") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => {
                cx.push(Diagnostic::error(at(i + 1, 1), "`input` must be a non-empty string").with_hint(hint));
                continue;
            }
            None => {
                cx.push(Diagnostic::error(at(i + 1, 1), "missing required key `input`").with_hint(hint));
                continue;
            }
        };
        let expected = object.get("expected").map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let id = match object.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => format!("line-{}", i + 1),
        };
        for key in object.keys().filter(|k| !["input", "expected", "id"].contains(&k.as_str())) {
            cx.push(
                Diagnostic::warning(at(i + 1, 1), format!("unknown key `{key}` in a dataset line: ignored"))
                    .with_hint("dataset lines may hold `input`, `expected` and `id`"),
            );
        }
        tasks.push((TaskSpec { id, input, expected }, at(i + 1, 1)));
    }
    if tasks.is_empty() && !cx.diags.iter().any(Diagnostic::is_error) {
        cx.push(
            Diagnostic::error(file.at.clone(), format!("dataset {} holds no tasks", shown.display())).with_hint(hint),
        );
    }
    tasks
}

/// serde_json's message without its " at line 1 column 7" (the diagnostic has the position).
fn strip_position(message: &str) -> &str {
    message.find(" at line ").map_or(message, |i| &message[..i])
}

/// Task ids name folders and pair trials: they must be unique and usable as file names.
fn check_task_ids(cx: &mut FileDiagnostics<'_>, tasks: &[LocatedTask]) {
    let mut seen = BTreeSet::new();
    for (task, at) in tasks {
        let bad = task.id.is_empty()
            || task.id.len() > 80
            || !task.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || task.id.starts_with('.');
        if bad {
            cx.push(
                Diagnostic::error(at.clone(), format!("task id `{}` cannot name a folder", task.id))
                    .with_hint("ids use letters, digits, `-`, `_` and `.`, up to 80 characters"),
            );
        } else if !seen.insert(task.id.as_str()) {
            cx.push(
                Diagnostic::error(at.clone(), format!("duplicate task id `{}`", task.id))
                    .with_hint("each task's `id` must be unique in the experiment"),
            );
        }
    }
}
