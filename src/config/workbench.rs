//! The whole workbench: reads `troupe.toml`, `agents/*.toml` and `experiments/*.toml`, checks
//! the references between them, and builds a [`Workbench`] when nothing is wrong.
//!
//! Invariant: a [`Workbench`] is only built when no error was found, so every reference in it
//! resolves (see [`types`](super::types)). A file that could not be read or parsed suppresses
//! the checks that would need its contents, so one mistake is reported once, not as a cascade.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use super::agent::AgentDraft;
use super::diagnostic::{Diagnostic, Loaded, sort_diagnostics};
use super::experiment::ExperimentDraft;
use super::reader::RefKind;
use super::reader::{Source, start_of};
use super::settings::SettingsDraft;
use super::suggest;
use super::types::{ExperimentSpec, Limits, Location, ModelSpec, Workbench};

const SETTINGS_FILE: &str = "troupe.toml";
const AGENTS_DIR: &str = "agents";
const EXPERIMENTS_DIR: &str = "experiments";

/// Loads and validates the workbench in `root`. Paths in diagnostics are `root` joined with
/// the file's relative path, as given (not canonicalized); paths in the specs are absolute.
pub fn load_workbench(root: &Path) -> Loaded {
    let inputs = Inputs::read(root);
    let (workbench, diagnostics) = analyze(&inputs, None);
    Loaded { workbench, diagnostics }
}

/// Validates one agent file's `text` as if it were saved at `path` in the workbench `root`,
/// with the rest of the workbench (as on disk) as context. Returns the diagnostics of that
/// file only, located at `path` as given.
pub fn check_agent_text(root: &Path, path: &Path, text: &str) -> Vec<Diagnostic> {
    let mut inputs = Inputs::read(root);
    let edited = FileInput { shown: path.to_path_buf(), abs: absolute(path), text: Ok(text.to_owned()) };
    match inputs.agents.iter_mut().find(|f| same_file(f, path)) {
        Some(file) => *file = edited,
        None => {
            inputs.agents.push(edited);
            inputs.agents.sort_by(|a, b| a.shown.file_name().cmp(&b.shown.file_name()));
        }
    }
    let (_, diags) = analyze(&inputs, Some(path));
    diags.into_iter().filter(|d| d.location.path == path).collect()
}

impl Workbench {
    /// An experiment by name, or by path: relative to the current directory, to the workbench
    /// or to its `experiments/` folder, with or without `.toml`.
    pub fn experiment(&self, name_or_path: &str) -> Option<&ExperimentSpec> {
        if let Some(spec) = self.experiments.get(name_or_path) {
            return Some(spec);
        }
        let mut names = vec![PathBuf::from(name_or_path)];
        if Path::new(name_or_path).extension().is_none_or(|e| e != "toml") {
            names.push(PathBuf::from(format!("{name_or_path}.toml")));
        }
        let bases = [PathBuf::new(), self.root.clone(), self.root.join(EXPERIMENTS_DIR)];
        for base in &bases {
            for name in &names {
                let candidate = base.join(name);
                let abs = absolute(&candidate);
                let canonical = std::fs::canonicalize(&candidate).ok();
                let found = self.experiments.values().find(|spec| {
                    spec.path == abs || canonical.is_some() && std::fs::canonicalize(&spec.path).ok() == canonical
                });
                if found.is_some() {
                    return found;
                }
            }
        }
        None
    }

    /// The model an alias means in an experiment: the experiment's own `[models]` first.
    pub fn model_for<'a>(&'a self, experiment: &'a ExperimentSpec, alias: &str) -> Option<&'a ModelSpec> {
        experiment.models.get(alias).or_else(|| self.settings.models.get(alias))
    }

    /// Whether runs of `experiment` end with a reflection: its `reflect`, else `[memory] reflect`.
    pub fn reflects(&self, experiment: &ExperimentSpec) -> bool {
        experiment.reflect.unwrap_or(self.settings.memory.reflect)
    }

    /// The workbench's limits with the experiment's `[limits]` applied.
    pub fn limits_for(&self, experiment: &ExperimentSpec) -> Limits {
        self.settings.limits.patched(&experiment.limits)
    }

    /// Every file that shaped the workbench: `troupe.toml`, agents, experiments and scripts;
    /// absolute, sorted, without repeats.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = BTreeSet::new();
        files.extend(self.settings.path.iter().cloned());
        files.extend(self.agents.values().map(|a| a.path.clone()));
        files.extend(self.experiments.values().map(|e| e.path.clone()));
        let experiment_models = self
            .experiments
            .values()
            .flat_map(|e| e.models.values().chain(e.variants.iter().flat_map(|v| v.models.values())));
        let models = self.settings.models.values().chain(experiment_models);
        files.extend(models.filter_map(|m| m.script.clone()));
        files.extend(self.experiments.values().filter_map(|e| e.dataset.clone()));
        files.into_iter().collect()
    }
}

/// `path` made absolute against the current directory, without resolving links.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The largest `troupe.toml`, expert or experiment troupe reads: far beyond any prompt a person
/// writes, and a bound on what a file in a shared run folder's snapshot can make troupe hold.
pub(crate) const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// A file's text, or why not: unreadable, not UTF-8, or larger than `cap` (checked before
/// reading, and again while reading, since the file may grow in between).
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<String, String> {
    use std::io::Read as _;
    let too_big = |len: u64| {
        format!(
            "the file is {:.1} MiB; troupe reads files of this kind up to {} MiB",
            len as f64 / (1024.0 * 1024.0),
            cap / (1024 * 1024)
        )
    };
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len > cap {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// One file to read: the path diagnostics show, its absolute path, and its text (or why it
/// could not be read).
struct FileInput {
    shown: PathBuf,
    abs: PathBuf,
    text: Result<String, String>,
}

impl FileInput {
    fn read(shown: PathBuf, abs: PathBuf) -> Self {
        let text = read_capped(&abs, MAX_CONFIG_BYTES);
        FileInput { shown, abs, text }
    }

    fn unreadable(&self, error: &str) -> Diagnostic {
        Diagnostic::error(start_of(&self.shown), format!("cannot read file: {error}"))
    }
}

fn same_file(file: &FileInput, path: &Path) -> bool {
    if file.shown == path || file.abs == absolute(path) {
        return true;
    }
    match (std::fs::canonicalize(&file.abs), std::fs::canonicalize(path)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Everything read from disk, before any parsing.
struct Inputs {
    root_abs: PathBuf,
    /// `None` when there is no `troupe.toml`.
    settings: Option<FileInput>,
    agents: Vec<FileInput>,
    experiments: Vec<FileInput>,
    /// Folders that exist but could not be listed.
    errors: Vec<Diagnostic>,
}

impl Inputs {
    fn read(root: &Path) -> Self {
        let root_abs = absolute(root);
        let mut errors = Vec::new();
        let settings_abs = root_abs.join(SETTINGS_FILE);
        let settings = match std::fs::metadata(&settings_abs) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            _ => Some(FileInput::read(root.join(SETTINGS_FILE), settings_abs)),
        };
        let mut list = |dir: &str| match list_toml(root, &root_abs, dir) {
            Ok(files) => files,
            Err(diag) => {
                errors.push(diag);
                Vec::new()
            }
        };
        let agents = list(AGENTS_DIR);
        let experiments = list(EXPERIMENTS_DIR);
        Inputs { root_abs, settings, agents, experiments, errors }
    }
}

/// The `.toml` files in `root/dir`, sorted by name; none when the folder does not exist.
/// Hidden files (editors' lock and backup files) are skipped.
fn list_toml(root: &Path, root_abs: &Path, dir: &str) -> Result<Vec<FileInput>, Diagnostic> {
    let dir_abs = root_abs.join(dir);
    let entries = match std::fs::read_dir(&dir_abs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            let at = start_of(&root.join(dir));
            return Err(Diagnostic::error(at, format!("cannot read folder: {e}")));
        }
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| {
            let path = Path::new(name);
            path.extension().is_some_and(|e| e == "toml")
                && !name.to_string_lossy().starts_with('.')
                && dir_abs.join(name).is_file()
        })
        .collect();
    names.sort();
    Ok(names.into_iter().map(|name| FileInput::read(root.join(dir).join(&name), dir_abs.join(&name))).collect())
}

/// Parses every input, checks references across files, and builds the workbench if no
/// error was found. With `focus`, a duplicate name involving that file is reported there even
/// when it is the first of the two.
fn analyze(inputs: &Inputs, focus: Option<&Path>) -> (Option<Workbench>, Vec<Diagnostic>) {
    let settings = match &inputs.settings {
        None => SettingsDraft::absent(),
        Some(file) => match &file.text {
            Ok(text) => SettingsDraft::read(&Source::new(file.shown.clone(), text.clone()), &file.abs),
            Err(e) => SettingsDraft::unreadable(file.unreadable(e), file.abs.clone()),
        },
    };
    let mcp_servers = settings.complete.then_some(&settings.mcp_servers);
    let agents: Vec<AgentDraft> = inputs
        .agents
        .iter()
        .map(|file| match &file.text {
            Ok(text) => AgentDraft::read(&Source::new(file.shown.clone(), text.clone()), &file.abs, mcp_servers),
            Err(e) => AgentDraft::unreadable(&file.shown, &file.abs, file.unreadable(e)),
        })
        .collect();
    let experiments: Vec<ExperimentDraft> = inputs
        .experiments
        .iter()
        .map(|file| match &file.text {
            Ok(text) => ExperimentDraft::read(&Source::new(file.shown.clone(), text.clone()), &file.abs),
            Err(e) => ExperimentDraft::unreadable(&file.shown, &file.abs, file.unreadable(e)),
        })
        .collect();

    let mut diags = inputs.errors.clone();
    diags.extend(settings.diags.iter().cloned());
    for agent in &agents {
        diags.extend(agent.diags.iter().cloned());
    }
    for experiment in &experiments {
        diags.extend(experiment.diags.iter().cloned());
    }
    check_references(&settings, &agents, &experiments, focus, &mut diags);
    sort_diagnostics(&mut diags);

    if diags.iter().any(Diagnostic::is_error) {
        return (None, diags);
    }
    let workbench = Workbench {
        root: inputs.root_abs.clone(),
        settings: settings.settings,
        agents: agents.into_iter().map(|a| (a.spec.name.clone(), a.spec)).collect(),
        experiments: experiments.into_iter().map(|e| (e.spec.name.clone(), e.spec)).collect(),
    };
    (Some(workbench), diags)
}

/// The checks that need more than one file.
fn check_references(
    settings: &SettingsDraft,
    agents: &[AgentDraft],
    experiments: &[ExperimentDraft],
    focus: Option<&Path>,
    diags: &mut Vec<Diagnostic>,
) {
    let agent_names = agents.iter().map(|a| (a.spec.name.as_str(), &a.name_at));
    check_unique("agent", agent_names, focus, diags);
    let experiment_names = experiments.iter().map(|e| (e.spec.name.as_str(), &e.name_at));
    check_unique("experiment", experiment_names, focus, diags);

    // The first agent of each name (a second one is already reported).
    let mut by_name: BTreeMap<&str, &AgentDraft> = BTreeMap::new();
    for agent in agents {
        by_name.entry(agent.spec.name.as_str()).or_insert(agent);
    }
    let names = || by_name.keys().copied();
    let no_agents = Some("there are no agents: add a file to agents/");

    // Model aliases: defined in troupe.toml or in any experiment. Unknowable when one of
    // those files could not be parsed.
    let aliases_known = settings.complete && experiments.iter().all(|e| e.complete);
    let mut all_aliases: BTreeSet<&str> = settings.aliases.iter().map(String::as_str).collect();
    for experiment in experiments {
        all_aliases.extend(experiment.aliases.iter().map(String::as_str));
    }
    for agent in agents {
        let Some(model_at) = &agent.model_at else {
            continue;
        };
        let alias = agent.spec.model.as_str();
        if alias == super::types::AUTO_MODEL {
            if settings.complete && settings.settings.routing.is_none() {
                diags.push(
                    Diagnostic::error(model_at.clone(), "`model = \"auto\"` needs a [routing] table in troupe.toml")
                        .with_hint(
                            "for example: [routing] followed by default = \"small\" and [[routing.rules]] tables",
                        ),
                );
            }
            continue;
        }
        if aliases_known && !all_aliases.contains(alias) {
            let hint = suggest::hint(
                alias,
                all_aliases.iter().copied(),
                "known aliases",
                Some("no model aliases are defined: add a [models.<alias>] table to troupe.toml"),
            );
            diags.push(
                Diagnostic::error(model_at.clone(), format!("unknown model alias `{alias}`")).with_opt_hint(hint),
            );
        }
    }

    for agent in agents {
        for (expert, at) in agent.spec.experts.iter().zip(&agent.experts_at) {
            if expert == "*" || by_name.contains_key(expert.as_str()) {
                continue;
            }
            let hint = suggest::hint(expert, names(), "known agents", no_agents);
            diags.push(Diagnostic::error(at.clone(), format!("unknown expert `{expert}`")).with_opt_hint(hint));
        }
    }

    for experiment in experiments {
        for reference in &experiment.references {
            let known = match reference.kind {
                RefKind::Agent => by_name.contains_key(reference.name.as_str()),
                RefKind::Alias => !aliases_known || all_aliases.contains(reference.name.as_str()),
            };
            if known {
                continue;
            }
            let (what, hint) = match reference.kind {
                RefKind::Agent => ("agent", suggest::hint(&reference.name, names(), "known agents", no_agents)),
                RefKind::Alias => (
                    "model alias",
                    suggest::hint(
                        &reference.name,
                        all_aliases.iter().copied(),
                        "known aliases",
                        Some("no model aliases are defined: add a [models.<alias>] table to troupe.toml"),
                    ),
                ),
            };
            diags.push(
                Diagnostic::error(
                    reference.at.clone(),
                    format!("{} names unknown {what} `{}`", reference.context, reference.name),
                )
                .with_opt_hint(hint),
            );
        }
        let Some(root_at) = &experiment.root_at else {
            continue;
        };
        let root = experiment.spec.root.as_str();
        if !by_name.contains_key(root) {
            let hint = suggest::hint(root, names(), "known agents", no_agents);
            diags.push(Diagnostic::error(root_at.clone(), format!("unknown agent `{root}`")).with_opt_hint(hint));
            continue;
        }
        if !settings.complete {
            continue;
        }
        // Aliases defined only by other experiments must be defined here too for every agent
        // this experiment can reach.
        for agent in reachable(root, &by_name) {
            let alias = agent.spec.model.as_str();
            if alias == super::types::AUTO_MODEL
                || agent.model_at.is_none()
                || settings.aliases.contains(alias)
                || experiment.aliases.contains(alias)
                || !all_aliases.contains(alias)
            {
                continue;
            }
            diags.push(
                Diagnostic::error(
                    root_at.clone(),
                    format!(
                        "experiment `{}` reaches agent `{}`, whose model alias `{alias}` is defined neither in troupe.toml nor in this experiment",
                        experiment.spec.name, agent.spec.name
                    ),
                )
                .with_hint(format!(
                    "add [models.{alias}] to troupe.toml or to this experiment"
                )),
            );
        }
    }
}

/// The agents `root` can reach through `experts` (`*` meaning all), `root` included, sorted
/// by name.
fn reachable<'a>(root: &str, by_name: &BTreeMap<&str, &'a AgentDraft>) -> Vec<&'a AgentDraft> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut queue: VecDeque<&'a AgentDraft> = VecDeque::new();
    if let Some((name, agent)) = by_name.get_key_value(root) {
        seen.insert(name);
        queue.push_back(agent);
    }
    while let Some(agent) = queue.pop_front() {
        for expert in &agent.spec.experts {
            let next: Vec<(&&str, &&'a AgentDraft)> = if expert == "*" {
                by_name.iter().collect()
            } else {
                by_name.get_key_value(expert.as_str()).into_iter().collect()
            };
            for (name, next) in next {
                if seen.insert(name) {
                    queue.push_back(next);
                }
            }
        }
    }
    seen.into_iter().filter_map(|name| by_name.get(name).copied()).collect()
}

/// Reports every repeat of a name at the repeat, pointing back at the first. With `focus`, a
/// first occurrence in the focused file is reported too.
fn check_unique<'a>(
    what: &str,
    names: impl Iterator<Item = (&'a str, &'a Location)>,
    focus: Option<&Path>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut first: BTreeMap<&str, &Location> = BTreeMap::new();
    for (name, at) in names {
        let Some(earlier) = first.get(name).copied() else {
            first.insert(name, at);
            continue;
        };
        let hint = format!("{what} names must be unique; a file without `name` is named after the file");
        diags.push(
            Diagnostic::error(at.clone(), format!("duplicate {what} name `{name}`: already used by {}", show(earlier)))
                .with_hint(hint.clone()),
        );
        if focus == Some(earlier.path.as_path()) {
            diags.push(
                Diagnostic::error(
                    earlier.clone(),
                    format!("duplicate {what} name `{name}`: also used by {}", show(at)),
                )
                .with_hint(hint),
            );
        }
    }
}

fn show(at: &Location) -> String {
    format!("{}:{}:{}", at.path.display(), at.line, at.col)
}
