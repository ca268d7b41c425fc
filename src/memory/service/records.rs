//! Memory items as JSON: the lines of an export (JSON lines, one item each) and the objects
//! `--json` prints, in one shape, [`Record`].
//!
//! A record carries everything a person or git needs to see and restore an item: its text, kind,
//! author, scope, provenance, times, counters and data, and the digest of the embedder whose
//! vector it had. Not the vector: it is derived from the text, 384 floats a line would drown the
//! text in, and an import embeds again with whatever embedder is current.
//!
//! Reading is lenient about what a person leaves out (only `text` is required: a line written by
//! hand is `{"text": "…"}`) and strict about what it does not know: an unknown field is an error
//! naming the line, not a value silently dropped.

use serde::{Deserialize, Serialize};

use crate::memory::store::{Author, Item, ItemId, ItemKind, Provenance, Scope};

/// One memory item as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The item's id where it was exported. Shown for reference; an import ignores it (ids are
    /// assigned by the store and never reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ItemId>,
    #[serde(default = "lesson")]
    pub kind: ItemKind,
    #[serde(default = "user")]
    pub author: Author,
    /// `"global"`, or `{"expert": "<name>"}`.
    #[serde(default = "global")]
    pub scope: Scope,
    #[serde(default)]
    pub provenance: Provenance,
    pub text: String,
    #[serde(default)]
    pub data: serde_json::Value,
    /// Milliseconds since the Unix epoch. A line without it is a new memory (written by hand):
    /// an import stamps it with the time of the import.
    #[serde(default)]
    pub created_ms: Option<i64>,
    #[serde(default)]
    pub last_used_ms: Option<i64>,
    #[serde(default)]
    pub uses: u64,
    #[serde(default)]
    pub successes: u64,
    /// The digest of the embedder that made the item's vector: a record to read, not a promise
    /// (an import embeds again with the current embedder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
}

fn lesson() -> ItemKind {
    ItemKind::Lesson
}

fn user() -> Author {
    Author::User
}

fn global() -> Scope {
    Scope::Global
}

impl Record {
    /// The record of a stored item.
    pub fn of(item: &Item) -> Record {
        Record {
            id: Some(item.id),
            kind: item.kind,
            author: item.author,
            scope: item.scope.clone(),
            provenance: item.provenance.clone(),
            text: item.text.clone(),
            data: item.data.clone(),
            created_ms: Some(item.created_ms),
            last_used_ms: item.last_used_ms,
            uses: item.uses,
            successes: item.successes,
            embedder: Some(item.embedder.clone()),
        }
    }
}

/// An item as `--json` prints it: its [`Record`], with the search score when it is a hit.
#[derive(Serialize)]
pub struct Shown {
    #[serde(flatten)]
    pub record: Record,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

impl Shown {
    pub fn of(item: &Item, score: Option<f32>) -> Shown {
        Shown { record: Record::of(item), score }
    }
}

/// Reads one line of an import. The error says what is wrong with the line (the caller adds
/// which line it is).
pub fn parse_line(line: &str) -> Result<Record, String> {
    let record: Record = serde_json::from_str(line).map_err(|e| json_reason(&e))?;
    if record.text.trim().is_empty() {
        return Err("its `text` is empty: write what should be remembered".into());
    }
    if record.successes > record.uses {
        return Err(format!(
            "it has {} successes but only {} uses: a success is a use by a run that succeeded",
            record.successes, record.uses
        ));
    }
    if record.created_ms.is_none() && (record.uses > 0 || record.last_used_ms.is_some()) {
        return Err("it has `uses` or `last_used_ms` but no `created_ms`: counters belong to an exported item, \
                    which has all three; a new memory written by hand needs only `text`"
            .into());
    }
    Ok(record)
}

/// serde's message with the column, without its "at line 1" (the caller names the file's line).
fn json_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let message = message.strip_suffix(&position).unwrap_or(&message);
    if e.column() == 0 { message.to_string() } else { format!("{message} (column {})", e.column()) }
}
