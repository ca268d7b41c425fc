//! `experiments/*.toml`: a task for a root agent, with optional model-alias and limit
//! overrides, read into an [`ExperimentDraft`].
//!
//! Invariant: as in [`agent`](super::agent), only what the file alone can tell is checked here;
//! the root agent and the aliases the agents it reaches need are checked by
//! [`workbench`](super::workbench).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::agent::read_name;
use super::diagnostic::Diagnostic;
use super::reader::{Cx, Located, Schema, Source, Table, start_of};
use super::settings::{Dirs, read_limits, read_models};
use super::types::{ExperimentSpec, LimitsPatch, Location};

const EXPERIMENT_SCHEMA: Schema = &[
    ("name", "name = \"smoke\""),
    ("description", "description = \"Can the researcher delegate?\""),
    ("root", "root = \"researcher\""),
    ("task", "task = \"Summarize the three main causes of inflation.\""),
    ("models", "[models.small]"),
    ("limits", "[limits]"),
];

/// One experiment file as read, before the workbench-wide checks.
#[derive(Clone, Debug)]
pub(crate) struct ExperimentDraft {
    /// `root` is empty when it was missing or mistyped (already reported).
    pub spec: ExperimentSpec,
    /// The `name` value, or 1:1 when the name is the file's stem.
    pub name_at: Location,
    /// The `root` value, when it was read.
    pub root_at: Option<Location>,
    /// Every alias of its `[models]`, including those whose tables had errors.
    pub aliases: BTreeSet<String>,
    /// False when the file could not be read or parsed.
    pub complete: bool,
    pub diags: Vec<Diagnostic>,
}

impl ExperimentDraft {
    fn empty(shown: &Path, abs: &Path) -> Self {
        let stem = shown.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        ExperimentDraft {
            spec: ExperimentSpec {
                name: stem,
                description: String::new(),
                root: String::new(),
                task: String::new(),
                models: BTreeMap::new(),
                limits: LimitsPatch::default(),
                path: abs.to_path_buf(),
            },
            name_at: start_of(shown),
            root_at: None,
            aliases: BTreeSet::new(),
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
        let mut cx = Cx::new(src);
        let Some(doc) = src.parse(&mut cx.diags) else {
            draft.diags = cx.diags;
            return draft;
        };
        draft.complete = true;
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
        if let Some(task) = non_empty(&mut cx, &table, "task") {
            spec.task = task.value;
        }
        if let Some(models) = table.get("models") {
            let (specs, aliases) = read_models(&mut cx, models, &Dirs::of(&src.path, abs));
            spec.models = specs;
            draft.aliases = aliases;
        }
        if let Some(patch) = table.get("limits").and_then(|v| read_limits(&mut cx, v)) {
            spec.limits = patch;
        }
        draft.diags = cx.diags;
        draft
    }
}

/// A required string that must not be blank.
fn non_empty(cx: &mut Cx<'_>, table: &Table<'_, '_>, key: &str) -> Option<Located<String>> {
    let value = table.required_string(cx, key)?;
    if value.value.trim().is_empty() {
        if let Some(raw) = table.get(key) {
            table.value_error(cx, key, raw, format!("`{key}` must not be empty"));
        }
        return None;
    }
    Some(value)
}
