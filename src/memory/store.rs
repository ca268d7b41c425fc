//! The long-term memory's data model and the [`MemoryStore`] trait every backend implements
//! (SQLite now, PostgreSQL with pgvector later), with the rules they share: what input is
//! refused ([`check_new`]), how a near-duplicate is merged ([`merged`]), and the typed errors.
//!
//! The trait is free of any backend's types: ids are `i64`, vectors `f32` slices, and times
//! milliseconds since the Unix epoch supplied by the caller (so a replayed run stamps the same
//! times). The store never embeds: the caller passes each vector and its embedder's digest.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An item's id: assigned by the store, never reused after the item is forgotten, so a recall
/// recorded in an old run's events never points at a different item.
pub type ItemId = i64;

/// Cosine at or above which [`MemoryStore::add_or_merge`] treats two items as the same memory by
/// default (the settings' default, where the reasoning behind 0.95 is kept).
pub const DUPLICATE_THRESHOLD: f32 = crate::config::MemorySettings::DEFAULT_MERGE_THRESHOLD;

/// The embedder digest of an item whose vector is not computed yet: an episode kept at the end
/// of a run that had no embedder loaded (loading MiniLM for every run would cost each run up to
/// 0.3 s and, on a fresh machine, a download). Its placeholder vector (`[1.0]`) is never compared:
/// searches only compare the current embedder's vectors, and the first operation that loads the
/// embedder embeds it, through the same path as a change of embedder.
pub const PENDING_EMBEDDER: &str = "pending";

/// How far from 1 an embedding's length may be: the embedder's vectors are unit length to about
/// 1e-6, so anything further off is a vector that was never normalised (and cosine would no
/// longer be the dot product that search computes).
const UNIT_TOLERANCE: f32 = 1e-3;

/// What kind of memory an item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// Semantic memory: a short piece of advice or fact.
    Lesson,
    /// Episodic memory: what happened in one run, embedded by its task.
    Episode,
}

impl ItemKind {
    /// The name stored in the database (and shown to people).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Lesson => "lesson",
            ItemKind::Episode => "episode",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [ItemKind::Lesson, ItemKind::Episode].into_iter().find(|k| k.as_str() == name)
    }
}

/// Who wrote an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// A person, through the workbench.
    User,
    /// An agent, through the `remember` tool.
    Agent,
    /// The reflection step at the end of a run.
    Reflection,
    /// A findings note written by a person.
    Notes,
    /// troupe itself, at the end of a run: its episode.
    Run,
}

impl Author {
    const ALL: [Author; 5] = [Author::User, Author::Agent, Author::Reflection, Author::Notes, Author::Run];

    /// The name stored in the database (and shown to people).
    pub fn as_str(self) -> &'static str {
        match self {
            Author::User => "user",
            Author::Agent => "agent",
            Author::Reflection => "reflection",
            Author::Notes => "notes",
            Author::Run => "run",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Author::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Who an item is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every agent.
    Global,
    /// Only the expert with this name.
    Expert(String),
}

/// Where an item came from; every part is optional because a person's lesson has no run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The run (its folder's name) that produced the item.
    pub run_id: Option<String>,
    /// The event (its `seq` in the run's `events.jsonl`) that produced it.
    pub seq: Option<u64>,
    /// The expert whose agent wrote it.
    pub expert: Option<String>,
}

/// An item to store: everything but what the store assigns (the id, the use counters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewItem {
    pub kind: ItemKind,
    pub author: Author,
    pub scope: Scope,
    pub provenance: Provenance,
    /// The lesson, or the episode's task: what the embedding was computed from. Never empty.
    pub text: String,
    /// An episode's details (experiment, root agent, outcome, checks, usage, duration, run
    /// folder); `null` for a lesson.
    pub data: serde_json::Value,
    pub created_ms: i64,
    /// Unit length, from the embedder whose digest is `embedder`.
    pub embedding: Vec<f32>,
    /// The embedder's digest (`sha256:…`): vectors from different embedders are never compared.
    pub embedder: String,
}

/// A stored item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: ItemId,
    pub kind: ItemKind,
    pub author: Author,
    pub scope: Scope,
    pub provenance: Provenance,
    pub text: String,
    pub data: serde_json::Value,
    pub created_ms: i64,
    /// When a run last recalled it, or it was last re-learned (merged); `None` until then.
    pub last_used_ms: Option<i64>,
    /// Runs that recalled it.
    pub uses: u64,
    /// Of those, the runs that succeeded.
    pub successes: u64,
    pub embedding: Vec<f32>,
    pub embedder: String,
}

impl Item {
    /// The item an [`MemoryStore::add`] of `new` stores under `id`.
    pub fn stored(id: ItemId, new: NewItem) -> Item {
        Item {
            id,
            kind: new.kind,
            author: new.author,
            scope: new.scope,
            provenance: new.provenance,
            text: new.text,
            data: new.data,
            created_ms: new.created_ms,
            last_used_ms: None,
            uses: 0,
            successes: 0,
            embedding: new.embedding,
            embedder: new.embedder,
        }
    }
}

/// Which scopes a list or search looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ScopeFilter {
    #[default]
    Any,
    /// Only items for every agent.
    Global,
    /// Only this expert's own items.
    Expert(String),
    /// What this expert may recall: global items and its own.
    VisibleTo(String),
}

impl ScopeFilter {
    /// Exactly the items of `scope`.
    pub fn exactly(scope: &Scope) -> Self {
        match scope {
            Scope::Global => ScopeFilter::Global,
            Scope::Expert(name) => ScopeFilter::Expert(name.clone()),
        }
    }

    pub fn matches(&self, scope: &Scope) -> bool {
        match (self, scope) {
            (ScopeFilter::Any, _) | (ScopeFilter::Global | ScopeFilter::VisibleTo(_), Scope::Global) => true,
            (ScopeFilter::Expert(want) | ScopeFilter::VisibleTo(want), Scope::Expert(name)) => want == name,
            (ScopeFilter::Global, Scope::Expert(_)) | (ScopeFilter::Expert(_), Scope::Global) => false,
        }
    }
}

/// Which items a list or search looks at; `Filter::default()` is every item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub kind: Option<ItemKind>,
    pub author: Option<Author>,
    pub scope: ScopeFilter,
}

impl Filter {
    pub fn matches(&self, kind: ItemKind, author: Author, scope: &Scope) -> bool {
        self.kind.is_none_or(|k| k == kind) && self.author.is_none_or(|a| a == author) && self.scope.matches(scope)
    }
}

/// A similarity search.
#[derive(Clone, Debug)]
pub struct Query<'a> {
    /// Unit length, from the embedder `embedder`.
    pub vector: &'a [f32],
    /// Only items embedded by this embedder are compared (the others wait for re-embedding).
    pub embedder: &'a str,
    /// At most this many hits.
    pub k: usize,
    pub filter: Filter,
    /// Hits score at least this cosine (`-1.0` for no floor).
    pub min_score: f32,
}

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub item: Item,
    /// Cosine similarity with the query, in [-1, 1].
    pub score: f32,
}

/// What [`MemoryStore::add_or_merge`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Remembered {
    Added(Item),
    /// Merged into an existing item as similar as `similarity`: the result.
    Merged {
        item: Item,
        similarity: f32,
    },
}

impl Remembered {
    pub fn item(&self) -> &Item {
        match self {
            Remembered::Added(item) | Remembered::Merged { item, .. } => item,
        }
    }
}

/// Size of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub items: u64,
    pub lessons: u64,
    pub episodes: u64,
    /// Space the store takes on disk (for SQLite, the file and its write-ahead log).
    pub bytes: u64,
}

/// Why a memory operation failed. Each message names the store and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "the memory store {} is damaged ({reason}). Move it aside (troupe then starts a new, empty \
         store there) and keep the old file if you want to try recovering it with `sqlite3 FILE .recover`",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },

    #[error(
        "the memory store {} is busy: another process held it for more than {}. Close the other \
         troupe using this workbench, or try again",
        path.display(), humantime::format_duration(*waited)
    )]
    Busy { path: PathBuf, waited: Duration },

    #[error(
        "the memory store {} was written by a newer troupe (store format {found}; this troupe reads \
         up to {supported}). Upgrade troupe to use it; it was left untouched",
        path.display()
    )]
    NewerVersion { path: PathBuf, found: i64, supported: i64 },

    #[error(
        "{} is a database but not a troupe memory store: it was left untouched. Move it away or \
         point troupe at another file",
        path.display()
    )]
    NotAStore { path: PathBuf },

    #[error("could not create the folder {} for the memory store: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },

    #[error("the memory store {} could not {action}: {reason}", path.display())]
    Backend { path: PathBuf, action: &'static str, reason: String },

    #[error("a memory item's text is empty: write what should be remembered")]
    EmptyText,

    #[error("a memory item's embedder digest is empty: pass the digest of the embedder that made its vector")]
    NoEmbedder,

    #[error("the vector {0}: pass a unit-length vector from the embedder, as `Embedder::embed` returns it")]
    BadVector(String),

    #[error(
        "a vector of {got} dimensions where the store's vectors from embedder {embedder} have {expected}: \
         embed with the same model, or re-embed the store"
    )]
    Dimensions { embedder: String, expected: usize, got: usize },

    #[error("memory item {0} does not exist (it may have been forgotten)")]
    NotFound(ItemId),
}

/// A store of lessons and episodes, searched by similarity. One per workbench; safe to share
/// between threads, and (for the backends so far) between processes using the same store.
///
/// Every write is durable when it returns. Ids are never reused.
pub trait MemoryStore: Send + Sync {
    /// Stores one item and returns it with its id.
    fn add(&self, item: NewItem) -> Result<Item, MemoryError>;

    /// Stores several items at once (an import, a re-embedding): all or none, far faster than
    /// one [`MemoryStore::add`] each because they share one durable commit.
    fn add_many(&self, items: Vec<NewItem>) -> Result<Vec<Item>, MemoryError>;

    fn get(&self, id: ItemId) -> Result<Option<Item>, MemoryError>;

    /// Replaces an item's text and its vector (re-embedding passes the same text and the new
    /// embedder's vector and digest). [`MemoryError::NotFound`] when it does not exist.
    fn update(&self, id: ItemId, text: &str, embedding: &[f32], embedder: &str) -> Result<Item, MemoryError>;

    /// Merges `duplicate` into the existing item `into`, as [`merged`] says, and returns the result.
    fn merge(&self, into: ItemId, duplicate: &NewItem) -> Result<Item, MemoryError>;

    /// Forgets an item for good (really deleted, not hidden); `false` if there was none.
    fn delete(&self, id: ItemId) -> Result<bool, MemoryError>;

    /// Items matching `filter`, newest first, at most `limit`.
    fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<Item>, MemoryError>;

    /// The `query.k` items most similar to `query.vector` among those matching its filter and
    /// embedder with a cosine of at least `query.min_score`, best first. Exact, not approximate.
    fn search(&self, query: &Query<'_>) -> Result<Vec<Hit>, MemoryError>;

    /// Records that one run recalled `ids` (each counted once) and whether it succeeded, at
    /// `at_ms`. Returns how many of them still exist (forgotten ones are skipped).
    fn record_use(&self, ids: &[ItemId], succeeded: bool, at_ms: i64) -> Result<usize, MemoryError>;

    /// Items whose vectors came from an embedder other than `embedder` (search skips them until
    /// they are re-embedded with [`MemoryStore::update`]), oldest first, at most `limit`.
    fn needing_reembedding(&self, embedder: &str, limit: usize) -> Result<Vec<Item>, MemoryError>;

    fn stats(&self) -> Result<Stats, MemoryError>;

    /// Stores `item`, or merges it into the most similar item of the same kind and scope if that
    /// one's cosine is at least `threshold` (see [`DUPLICATE_THRESHOLD`]).
    ///
    /// Two processes remembering the same thing at the same instant may both add it; the next
    /// similar item then merges into one of them.
    fn add_or_merge(&self, item: NewItem, threshold: f32) -> Result<Remembered, MemoryError> {
        check_new(&item)?;
        let query = Query {
            vector: &item.embedding,
            embedder: &item.embedder,
            k: 1,
            filter: Filter { kind: Some(item.kind), author: None, scope: ScopeFilter::exactly(&item.scope) },
            min_score: threshold,
        };
        match self.search(&query)?.into_iter().next() {
            Some(hit) => Ok(Remembered::Merged { item: self.merge(hit.item.id, &item)?, similarity: hit.score }),
            None => Ok(Remembered::Added(self.add(item)?)),
        }
    }
}

/// Refuses what no backend should store: empty text, no embedder, or a vector that is empty,
/// not finite or not unit length.
pub fn check_new(item: &NewItem) -> Result<(), MemoryError> {
    check_text(&item.text)?;
    check_vector(&item.embedding, &item.embedder)
}

/// Refuses a text that is empty or only white space.
pub fn check_text(text: &str) -> Result<(), MemoryError> {
    if text.trim().is_empty() { Err(MemoryError::EmptyText) } else { Ok(()) }
}

/// Refuses a vector search could not compare: empty, not finite, not unit length, or without
/// its embedder's digest.
pub fn check_vector(vector: &[f32], embedder: &str) -> Result<(), MemoryError> {
    if embedder.trim().is_empty() {
        return Err(MemoryError::NoEmbedder);
    }
    if vector.is_empty() {
        return Err(MemoryError::BadVector("is empty".into()));
    }
    if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
        return Err(MemoryError::BadVector(format!("has a non-finite value ({}) at {i}", vector[i])));
    }
    let norm = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if (norm - 1.0).abs() > f64::from(UNIT_TOLERANCE) {
        return Err(MemoryError::BadVector(format!("has length {norm:.4}, not 1")));
    }
    Ok(())
}

/// `old` after merging its near-duplicate `new` into it:
/// - it keeps its id, kind, author, scope, provenance, creation time and use counters: the
///   older item is the memory, the newer one is evidence it still holds;
/// - it takes the longer text (the newer one on a tie, as the fresher wording), with that text's
///   vector and embedder, so the vector always matches the text. A restatement usually adds a
///   detail rather than drops one; the cost is that a shorter, sharper rewording is not kept;
/// - it is bumped: `last_used_ms` becomes the newer item's creation time if later, so recency
///   ranking sees a lesson that keeps being re-learned as current;
/// - it keeps its `data`, or takes the newer item's if it had none.
pub fn merged(old: Item, new: &NewItem) -> Item {
    let take_new_text = new.text.chars().count() >= old.text.chars().count();
    let (text, embedding, embedder) = if take_new_text {
        (new.text.clone(), new.embedding.clone(), new.embedder.clone())
    } else {
        (old.text, old.embedding, old.embedder)
    };
    let last_used_ms = Some(old.last_used_ms.map_or(new.created_ms, |t| t.max(new.created_ms)));
    let data = if old.data.is_null() { new.data.clone() } else { old.data };
    Item { text, embedding, embedder, last_used_ms, data, ..old }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_item(text: &str, embedding: Vec<f32>) -> NewItem {
        NewItem {
            kind: ItemKind::Lesson,
            author: Author::Agent,
            scope: Scope::Global,
            provenance: Provenance::default(),
            text: text.into(),
            data: serde_json::Value::Null,
            created_ms: 2_000,
            embedding,
            embedder: "sha256:e".into(),
        }
    }

    #[test]
    fn kinds_and_authors_round_trip_through_their_names() {
        for kind in [ItemKind::Lesson, ItemKind::Episode] {
            assert_eq!(ItemKind::parse(kind.as_str()), Some(kind));
        }
        for author in Author::ALL {
            assert_eq!(Author::parse(author.as_str()), Some(author));
        }
        assert_eq!(ItemKind::parse("Lesson"), None);
        assert_eq!(Author::parse(""), None);
    }

    #[test]
    fn scope_filters_select_what_an_expert_may_see() {
        let (global, mine, theirs) = (Scope::Global, Scope::Expert("me".into()), Scope::Expert("them".into()));
        let visible = ScopeFilter::VisibleTo("me".into());
        assert!(visible.matches(&global) && visible.matches(&mine) && !visible.matches(&theirs));
        let own = ScopeFilter::Expert("me".into());
        assert!(!own.matches(&global) && own.matches(&mine) && !own.matches(&theirs));
        assert!(ScopeFilter::Global.matches(&global) && !ScopeFilter::Global.matches(&mine));
        assert!([&global, &mine, &theirs].iter().all(|s| ScopeFilter::Any.matches(s)));
        assert_eq!(ScopeFilter::exactly(&mine), own);
    }

    #[test]
    fn filters_combine_kind_author_and_scope() {
        let filter = Filter { kind: Some(ItemKind::Lesson), author: Some(Author::User), scope: ScopeFilter::Global };
        assert!(filter.matches(ItemKind::Lesson, Author::User, &Scope::Global));
        assert!(!filter.matches(ItemKind::Episode, Author::User, &Scope::Global));
        assert!(!filter.matches(ItemKind::Lesson, Author::Agent, &Scope::Global));
        assert!(!filter.matches(ItemKind::Lesson, Author::User, &Scope::Expert("x".into())));
        assert!(Filter::default().matches(ItemKind::Episode, Author::Notes, &Scope::Expert("x".into())));
    }

    #[test]
    fn bad_items_are_refused_with_what_is_wrong() {
        assert!(matches!(check_new(&new_item("", vec![1.0])), Err(MemoryError::EmptyText)));
        assert!(matches!(check_new(&new_item(" \n\t", vec![1.0])), Err(MemoryError::EmptyText)));
        let message = check_new(&new_item("x", vec![])).unwrap_err().to_string();
        assert!(message.contains("is empty"), "{message}");
        let message = check_new(&new_item("x", vec![f32::NAN, 1.0])).unwrap_err().to_string();
        assert!(message.contains("non-finite"), "{message}");
        let message = check_new(&new_item("x", vec![3.0, 4.0])).unwrap_err().to_string();
        assert!(message.contains("length 5.0000"), "{message}");
        let mut no_digest = new_item("x", vec![0.6, 0.8]);
        no_digest.embedder = " ".into();
        assert!(matches!(check_new(&no_digest), Err(MemoryError::NoEmbedder)));
        check_new(&new_item("Ünïcödé 🦀", vec![0.6, 0.8])).unwrap();
    }

    #[test]
    fn a_merge_keeps_the_older_identity_and_the_longer_text() {
        let mut old = Item::stored(7, new_item("Run cargo test.", vec![1.0, 0.0]));
        old.provenance = Provenance { run_id: Some("r1".into()), seq: Some(3), expert: Some("coder".into()) };
        old.created_ms = 1_000;
        old.uses = 4;
        old.successes = 3;
        old.data = serde_json::json!({"from": "old"});

        let longer = new_item("Run cargo test --lib before committing.", vec![0.0, 1.0]);
        let result = merged(old.clone(), &longer);
        assert_eq!((result.id, result.created_ms, result.uses, result.successes), (7, 1_000, 4, 3));
        assert_eq!(result.provenance, old.provenance);
        assert_eq!(result.text, longer.text);
        assert_eq!(result.embedding, longer.embedding, "the vector goes with its text");
        assert_eq!(result.last_used_ms, Some(2_000), "bumped to the newer item's time");
        assert_eq!(result.data, serde_json::json!({"from": "old"}));

        let shorter = new_item("Run tests.", vec![0.0, 1.0]);
        let result = merged(old.clone(), &shorter);
        assert_eq!((result.text.as_str(), result.embedding.as_slice()), ("Run cargo test.", &[1.0, 0.0][..]));

        // On a tie the newer wording wins; a later use is never moved back.
        let same_length = new_item("Run cargo TEST.", vec![0.0, 1.0]);
        old.last_used_ms = Some(5_000);
        let result = merged(old, &same_length);
        assert_eq!(result.text, "Run cargo TEST.");
        assert_eq!(result.last_used_ms, Some(5_000));
    }

    #[test]
    fn a_merge_into_an_item_without_data_takes_the_newer_data() {
        let old = Item::stored(1, new_item("a", vec![1.0]));
        let mut new = new_item("b", vec![1.0]);
        new.data = serde_json::json!({"outcome": "passed"});
        assert_eq!(merged(old, &new).data, serde_json::json!({"outcome": "passed"}));
    }
}
