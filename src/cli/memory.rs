//! `troupe memory …`: the workbench's lessons and episodes, seen, searched, corrected, exported.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::{EXIT_CONFIG, EXIT_FAILED, Workbench, load};

#[derive(Subcommand)]
pub(crate) enum MemoryCommand {
    /// The items, newest first, one line each: #id, kind, scope, author, text.
    List {
        #[arg(long)]
        kind: Option<KindArg>,
        /// Only `global` items, or only this expert's own.
        #[arg(long, value_name = "global|EXPERT")]
        scope: Option<String>,
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// JSON lines, one item a line.
        #[arg(long)]
        json: bool,
    },
    /// The items most similar to a text, best first, with their scores.
    Search {
        /// What to look for (several words need no quotes).
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
        /// At most this many hits (default: `k` in [memory] of troupe.toml, else 3).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        k: Option<u32>,
        /// Only hits scoring at least this cosine (default: `min_score` in [memory], else 0.3).
        #[arg(long, value_name = "SCORE", allow_negative_numbers = true)]
        min_score: Option<f32>,
        #[arg(long)]
        kind: Option<KindArg>,
        /// Only `global` items, or only this expert's own.
        #[arg(long, value_name = "global|EXPERT")]
        scope: Option<String>,
        /// JSON lines, one hit a line, each with its `score`.
        #[arg(long)]
        json: bool,
    },
    /// One item: every field, then its whole text.
    Show {
        /// The item: 12 or #12 (`troupe memory list` shows the ids).
        #[arg(value_parser = parse_item_id, value_name = "ID")]
        id: i64,
        /// The item as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Replace an item's text (it is embedded again; id, provenance and counters stay).
    Edit {
        /// The item: 12 or #12 (`troupe memory list` shows the ids).
        #[arg(value_parser = parse_item_id, value_name = "ID")]
        id: i64,
        /// The new text (several words need no quotes).
        #[arg(num_args = 0.., required_unless_present = "text_option", conflicts_with = "text_option")]
        text: Vec<String>,
        /// The new text, as an option.
        #[arg(long = "text", id = "text_option", value_name = "TEXT")]
        text_option: Option<String>,
        /// The outcome as one JSON object: {"outcome", "truncated", "item"}.
        #[arg(long)]
        json: bool,
    },
    /// Delete an item for good (not hidden: gone from the store).
    Forget {
        /// The item: 12 or #12 (`troupe memory list` shows the ids).
        #[arg(value_parser = parse_item_id, value_name = "ID")]
        id: i64,
        /// The outcome as one JSON object: {"outcome", "item"}.
        #[arg(long)]
        json: bool,
    },
    /// Remember a lesson, written by you; a near-duplicate merges into the existing item.
    Add {
        /// The lesson (several words need no quotes).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
        /// Only for this expert (default: every expert).
        #[arg(long, value_name = "EXPERT")]
        scope: Option<String>,
        /// The outcome as one JSON object: {"outcome", "similarity", "truncated", "item"}.
        #[arg(long)]
        json: bool,
    },
    /// Every item as JSON lines, oldest first (no vectors: an import embeds again).
    Export {
        /// Write to this file (replaced whole) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Accepted for symmetry: an export is always JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Items from JSON lines (an export, or lines written by hand such as {"text": "…"});
    /// items already present are skipped, so importing a file twice adds nothing.
    Import {
        /// The JSON-lines file.
        file: PathBuf,
        /// The counts as one JSON object: {"added", "merged", "present", "truncated"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum KindArg {
    Lesson,
    Episode,
}

impl KindArg {
    fn kind(self) -> troupe::memory::store::ItemKind {
        match self {
            KindArg::Lesson => troupe::memory::store::ItemKind::Lesson,
            KindArg::Episode => troupe::memory::store::ItemKind::Episode,
        }
    }
}

/// An item's id as a person writes it: `12` or `#12`.
fn parse_item_id(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix('#').unwrap_or(text);
    digits
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("`{text}` is not an item id such as 12 or #12"))
}

/// A memory command's failure: its exit code and message.
struct MemoryFailure {
    code: u8,
    message: String,
}

impl From<troupe::memory::service::ServiceError> for MemoryFailure {
    fn from(err: troupe::memory::service::ServiceError) -> Self {
        MemoryFailure { code: if err.is_usage() { EXIT_CONFIG } else { EXIT_FAILED }, message: err.to_string() }
    }
}

/// Writes to stdout, ignoring a closed or full stream (as `say!` does for stderr).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = write!(std::io::stdout(), "{}", troupe::printable::printable(&text));
    }};
}

pub(crate) fn memory(root: &Path, command: MemoryCommand) -> ExitCode {
    let Some(workbench) = load(root) else { return ExitCode::from(EXIT_CONFIG) };
    let result = troupe::memory::service::Memory::open(&workbench.settings.memory, &workbench.root)
        .map_err(MemoryFailure::from)
        .and_then(|memory| memory_command(&workbench, memory.with_status(|line| say!("{line}")), command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            say!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn memory_command(
    workbench: &Workbench,
    memory: troupe::memory::service::Memory,
    command: MemoryCommand,
) -> Result<(), MemoryFailure> {
    use troupe::memory::service::{Shown, render};
    use troupe::memory::store::{Author, Filter, Provenance, Remembered};

    match command {
        MemoryCommand::List { kind, scope, limit, json } => {
            let filter = Filter { kind: kind.map(KindArg::kind), author: None, scope: scope_filter(scope) };
            let items = memory.list(&filter, limit)?;
            if json {
                items.iter().for_each(|item| json_line(&Shown::of(item, None)));
            } else {
                out!("{}", render::table(&items.iter().map(|item| (item, None)).collect::<Vec<_>>()));
            }
            if items.is_empty() {
                say!(
                    "no memory items{} in {}",
                    if filter == Filter::default() { "" } else { " match" },
                    memory.path().display()
                );
            } else if items.len() == limit {
                say!("showing the newest {limit}; pass --limit N to see more");
            }
        }
        MemoryCommand::Search { query, k, min_score, kind, scope, json } => {
            let memory = match min_score {
                Some(score) => memory.with_min_score(score),
                None => memory,
            };
            let k = k.map_or(memory.default_k(), |k| usize::try_from(k).unwrap_or(usize::MAX));
            let filter = Filter { kind: kind.map(KindArg::kind), author: None, scope: scope_filter(scope) };
            let hits = memory.search(&query.join(" "), k, filter)?;
            if json {
                hits.iter().for_each(|hit| json_line(&Shown::of(&hit.item, Some(hit.score))));
            } else {
                out!("{}", render::table(&hits.iter().map(|hit| (&hit.item, Some(hit.score))).collect::<Vec<_>>()));
            }
            if hits.is_empty() {
                say!("nothing in memory is similar enough (pass --min-score to lower the bar)");
            }
        }
        MemoryCommand::Show { id, json } => {
            let item = memory.get(id)?;
            if json {
                json_line(&Shown::of(&item, None));
            } else {
                out!("{}", render::details(&item));
            }
        }
        MemoryCommand::Edit { id, text, text_option, json } => {
            let text = text_option.unwrap_or_else(|| text.join(" "));
            let edited = memory.edit(id, &text)?;
            if let Some(truncation) = &edited.truncated {
                say!("note: {truncation}");
            }
            if json {
                let value = serde_json::json!({
                    "outcome": "edited",
                    "truncated": edited.truncated,
                    "item": Shown::of(&edited.item, None),
                });
                json_line(&value);
            } else {
                out!("edited #{}: {}\n", edited.item.id, render::one_line(&edited.item.text, render::LINE_TEXT_CHARS));
            }
        }
        MemoryCommand::Forget { id, json } => {
            let item = memory.forget(id)?;
            if json {
                json_line(&serde_json::json!({ "outcome": "forgotten", "item": Shown::of(&item, None) }));
            } else {
                out!("forgot #{}: {}\n", item.id, render::one_line(&item.text, render::LINE_TEXT_CHARS));
            }
        }
        MemoryCommand::Add { text, scope, json } => {
            let scope = add_scope(workbench, scope)?;
            let learned = memory.add(&text.join(" "), scope, Author::User, Provenance::default())?;
            if let Some(truncation) = &learned.truncated {
                say!("note: {truncation}");
            }
            let item = learned.remembered.item();
            let similarity = match &learned.remembered {
                Remembered::Added(_) => None,
                Remembered::Merged { similarity, .. } => Some(*similarity),
            };
            if json {
                json_line(&serde_json::json!({
                    "outcome": if similarity.is_some() { "merged" } else { "added" },
                    "similarity": similarity,
                    "truncated": learned.truncated,
                    "item": Shown::of(item, None),
                }));
            } else {
                let text = render::one_line(&item.text, render::LINE_TEXT_CHARS);
                match similarity {
                    None => out!("added #{}: {text}\n", item.id),
                    Some(s) => out!("merged into #{} (similarity {s:.2}): {text}\n", item.id),
                }
            }
        }
        MemoryCommand::Export { out: file, json: _ } => match file {
            None => {
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                memory.export(&mut lock)?;
            }
            Some(file) => {
                let mut bytes = Vec::new();
                let count = memory.export(&mut bytes)?;
                troupe::fsutil::write_atomic(&file, &bytes)
                    .map_err(|err| MemoryFailure { code: EXIT_FAILED, message: format!("{err}") })?;
                say!("exported {count} memory items to {}", file.display());
            }
        },
        MemoryCommand::Import { file, json } => {
            let opened = std::fs::File::open(&file).map_err(|err| MemoryFailure {
                code: EXIT_CONFIG,
                message: format!("cannot read {}: {err}", file.display()),
            })?;
            let name = file.display().to_string();
            let imported = memory.import(std::io::BufReader::new(opened), &name)?;
            if json {
                json_line(&serde_json::json!(imported));
            } else {
                let truncated = if imported.truncated > 0 {
                    format!(", {} cut to the embedder's window", imported.truncated)
                } else {
                    String::new()
                };
                out!(
                    "imported {name}: {} added, {} merged, {} already present{truncated}\n",
                    imported.added,
                    imported.merged,
                    imported.present
                );
            }
        }
    }
    Ok(())
}

/// One line of JSON on stdout.
fn json_line(value: &impl serde::Serialize) {
    // Items, hits and counts are plain data (string keys only): serialising them cannot fail.
    out!("{}\n", serde_json::to_string(value).unwrap_or_default());
}

/// `--scope` of list and search: `global`, or an expert's own items.
fn scope_filter(scope: Option<String>) -> troupe::memory::store::ScopeFilter {
    use troupe::memory::store::ScopeFilter;
    match scope.as_deref() {
        None => ScopeFilter::Any,
        Some("global") => ScopeFilter::Global,
        Some(expert) => ScopeFilter::Expert(expert.to_string()),
    }
}

/// `--scope` of add: global by default, else an expert of this workbench (a lesson for an expert
/// that does not exist would never be recalled).
fn add_scope(workbench: &Workbench, scope: Option<String>) -> Result<troupe::memory::store::Scope, MemoryFailure> {
    use troupe::memory::store::Scope;
    match scope.as_deref() {
        None | Some("global") => Ok(Scope::Global),
        Some(expert) if workbench.agents.contains_key(expert) => Ok(Scope::Expert(expert.to_string())),
        Some(expert) => {
            let known: Vec<&str> = workbench.agents.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            Err(MemoryFailure {
                code: EXIT_CONFIG,
                message: format!(
                    "no expert `{expert}` in this workbench: --scope takes `global` or an expert's name (experts: {known})"
                ),
            })
        }
    }
}
