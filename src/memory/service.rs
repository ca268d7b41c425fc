//! The memory as a person uses it: the operations behind `troupe memory …` (add, search, list,
//! show, edit, forget, export, import) over a store and an embedder, with the checks and
//! messages a person needs.
//!
//! A [`Memory`] is an opened store plus an embedder loaded on first need: `list`, `get`, `forget`
//! and `export` never touch the model, so they work without its files (and cost no model load).
//! The first operation that needs vectors loads it (fetching its files, with progress lines,
//! when they are missing) and first re-embeds every item whose vector came from another
//! embedder, so a change of model never mixes two vector spaces in one search.
//!
//! Texts are trimmed, refused when empty, and cut to the embedder's window ([`fit`]) with a
//! [`Truncation`] saying so: what is stored is what search sees.
//!
//! Import de-duplication, decided here: an exported line (it has `created_ms`) is restored as it
//! was (times, counters, provenance, data) unless an item of the same kind and scope with the
//! same text and creation time exists, which makes importing one file twice a no-op and keeps
//! episodes of the same task (same text, other times) apart. A line written by hand (no
//! `created_ms`) is remembered like `troupe memory add`: skipped when an item of its kind and
//! scope has exactly its text, else merged into a near-duplicate (cosine ≥ `merge_threshold`) or
//! added. Every line is read and checked before anything is written; a bad line names its number.
//!
//! Files: [`fit`] (the window, MiniLM behind the [`TextEmbedder`] trait), [`records`] (items as
//! JSON), [`render`] (items as text).

pub mod fit;
pub mod records;
pub mod render;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use fit::{Fitted, MiniLm, TextEmbedder, Truncation};
pub use records::{Record, Shown, parse_line};

use super::embedder::{EmbedError, EmbedderFiles, ready_files};
use super::postgres::PostgresStore;
use super::rank;
use super::sqlite::SqliteStore;
use super::store::{
    Author, Filter, Hit, Item, ItemId, ItemKind, MemoryError, MemoryStore, NewItem, PENDING_EMBEDDER, Provenance,
    Query, Remembered, Scope, check_text,
};
use crate::config::{MemoryBackend, MemorySettings};
use crate::findings::Redactor;

/// Items re-embedded per batch: enough to amortise the model's per-call cost, few enough that a
/// store of many thousands is never held in memory twice.
const REEMBED_BATCH: usize = 256;

/// Why a memory operation failed. Each message names the item, file or line, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store failed (damaged, busy, newer, not a store…): its message names the file.
    #[error(transparent)]
    Store(MemoryError),

    /// Boxed: candle's errors are large, and every result of the service carries this type.
    #[error("the memory's embedder: {0}")]
    Embed(Box<EmbedError>),

    #[error("no memory item #{0}: `troupe memory list` shows the ids")]
    NotFound(ItemId),

    #[error("the search query is empty: say what to look for")]
    EmptyQuery,

    #[error(
        "backend = \"postgres\" in [memory] of troupe.toml reads the server's URL from the environment variable {var}, which is not set\n  = hint: set it to postgresql://user:password@host:port/database, or remove the `backend` line to use the workbench's SQLite file"
    )]
    MissingUrl { var: String },

    #[error("{source_name} line {line}: {reason}. Nothing was imported: fix or remove the line and import again")]
    ImportLine { source_name: String, line: usize, reason: String },

    #[error("could not read {source_name}: {source}. Nothing was imported")]
    ImportRead { source_name: String, source: io::Error },

    #[error("could not write the export: {0}")]
    Export(io::Error),
}

impl From<MemoryError> for ServiceError {
    fn from(e: MemoryError) -> Self {
        match e {
            MemoryError::NotFound(id) => ServiceError::NotFound(id),
            other => ServiceError::Store(other),
        }
    }
}

impl From<EmbedError> for ServiceError {
    fn from(e: EmbedError) -> Self {
        ServiceError::Embed(Box::new(e))
    }
}

impl ServiceError {
    /// Whether the person asked for something that cannot be (an unknown id, an empty text, a
    /// bad import line, an unavailable backend), rather than something failing: the CLI exits
    /// with 2 for these, 1 for the others.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ServiceError::NotFound(_)
                | ServiceError::EmptyQuery
                | ServiceError::MissingUrl { .. }
                | ServiceError::ImportLine { .. }
                | ServiceError::Store(MemoryError::EmptyText)
        )
    }
}

/// Where a [`Memory`] gets its embedder when it first needs one.
#[derive(Clone)]
pub enum EmbedderSource {
    /// all-MiniLM-L6-v2 from the model cache, fetched (with progress lines) when missing.
    Cache,
    /// all-MiniLM-L6-v2 from these files.
    Files(EmbedderFiles),
    /// This embedder (tests, or a caller that holds one already).
    Given(Arc<dyn TextEmbedder>),
}

/// What [`Memory::add`] did: added or merged, and whether the text was cut to the window.
#[derive(Clone, Debug, PartialEq)]
pub struct Learned {
    pub remembered: Remembered,
    pub truncated: Option<Truncation>,
}

/// What [`Memory::edit`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Edited {
    pub item: Item,
    pub truncated: Option<Truncation>,
}

/// What [`Memory::import`] did, line by line.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Imported {
    /// New items.
    pub added: usize,
    /// Lines written by hand that merged into a near-duplicate.
    pub merged: usize,
    /// Lines whose item was there already (see the module's rule).
    pub present: usize,
    /// Lines whose text was cut to the embedder's window.
    pub truncated: usize,
}

/// A store in the workbench's own folder gets that folder's `.gitignore` (see
/// [`crate::fsutil::own_folder`]). Best effort: a folder that cannot be written is reported
/// when the store opens.
fn keep_out_of_git(root: &Path, store: &Path) {
    if store.starts_with(root.join(".troupe")) {
        let _ = crate::fsutil::own_folder(root); // the store's own open names any problem
    }
}

/// The workbench's memory: a store and, once needed, an embedder.
pub struct Memory {
    store: Box<dyn MemoryStore>,
    path: PathBuf,
    k: usize,
    min_score: f32,
    merge_threshold: f32,
    source: EmbedderSource,
    embedder: Mutex<Option<Arc<dyn TextEmbedder>>>,
    /// Whether the store's vectors are known to be the current embedder's.
    current: AtomicBool,
    status: Box<dyn Fn(&str) + Send + Sync>,
    now_ms: fn() -> i64,
    /// Every text and detail is redacted before it is stored: the store is meant to be
    /// exported and shared, so a secret a run saw must never reach it.
    redactor: Redactor,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Memory {
    /// Opens the memory `settings` describe for the workbench at `root`, creating an empty store
    /// if there is none. The embedder comes from the model cache; see [`Memory::with_embedder`].
    pub fn open(settings: &MemorySettings, root: &Path) -> Result<Memory, ServiceError> {
        Memory::open_with_env(settings, root, &|name| std::env::var(name).ok())
    }

    /// [`Memory::open`], reading environment variables (the PostgreSQL URL's) through `env`.
    pub(crate) fn open_with_env(
        settings: &MemorySettings,
        root: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Memory, ServiceError> {
        match &settings.backend {
            MemoryBackend::Sqlite => {
                let path = settings.store_path(root);
                keep_out_of_git(root, &path);
                let store = SqliteStore::open(&path)?;
                Ok(Memory::new(Box::new(store), path, settings))
            }
            MemoryBackend::Postgres { url_env } => {
                // The URL (with its password) stays in the environment, never in troupe.toml.
                let Some(url) = env(url_env).filter(|u| !u.trim().is_empty()) else {
                    return Err(ServiceError::MissingUrl { var: url_env.clone() });
                };
                let store = PostgresStore::connect(&url)?;
                let name = PathBuf::from(store.name());
                Ok(Memory::new(Box::new(store), name, settings))
            }
        }
    }

    /// A memory over `store` (at `path`, for messages) with `settings`' search and merge values.
    pub fn new(store: Box<dyn MemoryStore>, path: PathBuf, settings: &MemorySettings) -> Memory {
        Memory {
            store,
            path,
            k: usize::try_from(settings.k).unwrap_or(usize::MAX),
            min_score: settings.min_score,
            merge_threshold: settings.merge_threshold,
            source: EmbedderSource::Cache,
            embedder: Mutex::new(None),
            current: AtomicBool::new(false),
            status: Box::new(|_| {}),
            now_ms: system_now_ms,
            redactor: Redactor::from_env(&[]),
        }
    }

    /// Hides these secrets too (the workbench's `api_key_env` values, named in `troupe.toml`),
    /// besides the environment's secret-looking variables every memory hides.
    pub fn with_redactor(mut self, redactor: Redactor) -> Memory {
        self.redactor = redactor;
        self
    }

    /// Takes the embedder from `source` instead of the model cache.
    pub fn with_embedder(mut self, source: EmbedderSource) -> Memory {
        self.source = source;
        self
    }

    /// Sends progress lines (fetching the model's files, re-embedding, truncated import lines)
    /// to `status`.
    pub fn with_status(mut self, status: impl Fn(&str) + Send + Sync + 'static) -> Memory {
        self.status = Box::new(status);
        self
    }

    /// Stamps new items with `now_ms` (milliseconds since the epoch) instead of the system clock.
    pub fn with_clock(mut self, now_ms: fn() -> i64) -> Memory {
        self.now_ms = now_ms;
        self
    }

    /// Keeps search hits scoring at least `min_score` instead of the settings' value.
    pub fn with_min_score(mut self, min_score: f32) -> Memory {
        self.min_score = min_score;
        self
    }

    /// The store's file (or, for another backend, what names it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The least similarity a hit must have when the caller does not say (`min_score`).
    pub fn min_score(&self) -> f32 {
        self.min_score
    }

    /// How many hits a search returns when the caller does not say (`k` in `[memory]`).
    pub fn default_k(&self) -> usize {
        self.k
    }

    pub fn store(&self) -> &dyn MemoryStore {
        self.store.as_ref()
    }

    /// Remembers a lesson: trimmed, refused when empty, cut to the embedder's window, merged into
    /// a near-duplicate of the same scope (cosine ≥ `merge_threshold`) or added.
    pub fn add(
        &self,
        text: &str,
        scope: Scope,
        author: Author,
        provenance: Provenance,
    ) -> Result<Learned, ServiceError> {
        self.add_with_data(text, scope, author, provenance, serde_json::Value::Null)
    }

    /// [`Memory::add`] with details kept beside the lesson (a reflection's cited events).
    pub fn add_with_data(
        &self,
        text: &str,
        scope: Scope,
        author: Author,
        provenance: Provenance,
        data: serde_json::Value,
    ) -> Result<Learned, ServiceError> {
        let (text, data) = self.clean(text, &data);
        let text = text.as_str();
        check_text(text)?;
        let embedder = self.embedder()?;
        let fitted = embedder.fit(text)?;
        let embedding = embed_one(embedder.as_ref(), &fitted.text)?;
        let item = NewItem {
            kind: ItemKind::Lesson,
            author,
            scope,
            provenance,
            text: fitted.text,
            data,
            created_ms: (self.now_ms)(),
            embedding,
            embedder: embedder.digest().to_string(),
        };
        let remembered = self.store.add_or_merge(item, self.merge_threshold)?;
        Ok(Learned { remembered, truncated: fitted.truncated })
    }

    /// What is about to be stored, trimmed and without a secret.
    fn clean(&self, text: &str, data: &serde_json::Value) -> (String, serde_json::Value) {
        (self.redactor.redact(text.trim()).into_owned(), self.redactor.redact_value(data))
    }

    /// Keeps the episode of a run: its task (what similar runs are found by) and `data` (what
    /// happened). Embedded now when the embedder is already loaded; otherwise kept with a
    /// pending vector, embedded by the first search or lesson that loads the embedder, so that
    /// a run never loads (or downloads) the embedder only to record itself.
    pub fn add_episode(
        &self,
        task: &str,
        provenance: Provenance,
        data: serde_json::Value,
    ) -> Result<Item, ServiceError> {
        let (task, data) = self.clean(task, &data);
        let task = task.as_str();
        check_text(task)?;
        let loaded = lock(&self.embedder).clone();
        let (text, embedding, embedder) = match loaded {
            Some(embedder) => {
                let fitted = embedder.fit(task)?;
                let vector = embed_one(embedder.as_ref(), &fitted.text)?;
                (fitted.text, vector, embedder.digest().to_string())
            }
            None => (task.to_owned(), vec![1.0], PENDING_EMBEDDER.to_owned()),
        };
        let item = NewItem {
            kind: ItemKind::Episode,
            author: Author::Run,
            scope: Scope::Global,
            provenance,
            text,
            data,
            created_ms: (self.now_ms)(),
            embedding,
            embedder,
        };
        Ok(self.store.add(item)?)
    }

    /// The `k` items matching `filter` most similar to `query`, scoring at least the minimum
    /// score, best first.
    pub fn search(&self, query: &str, k: usize, filter: Filter) -> Result<Vec<Hit>, ServiceError> {
        self.search_above(query, k, filter, self.min_score)
    }

    /// [`Memory::search`] with its own minimum score (an expert's `recall_min_score`).
    pub fn search_above(
        &self,
        query: &str,
        k: usize,
        filter: Filter,
        min_score: f32,
    ) -> Result<Vec<Hit>, ServiceError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(ServiceError::EmptyQuery);
        }
        let embedder = self.embedder()?;
        let vector = embed_one(embedder.as_ref(), query)?;
        let query = Query { vector: &vector, embedder: embedder.digest(), k, filter, min_score };
        Ok(self.store.search(&query)?)
    }

    /// What a run recalls: [`Memory::search_above`]'s hits with near-ties going to the item
    /// that fared better, then to the more recently used ([`rank`](super::rank)). A person's
    /// search shows hits by similarity alone, beside their scores; an agent is given the lessons
    /// in this order.
    pub fn recall_above(
        &self,
        query: &str,
        k: usize,
        filter: Filter,
        min_score: f32,
    ) -> Result<Vec<Hit>, ServiceError> {
        // A few more candidates than asked for, so a near-tie just below the k-th is seen.
        let hits = self.search_above(query, rank::candidates(k), filter, min_score)?;
        Ok(rank::rerank(hits, k))
    }

    /// Items matching `filter`, newest first, at most `limit`. Needs no embedder.
    pub fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<Item>, ServiceError> {
        Ok(self.store.list(filter, limit)?)
    }

    /// One item; [`ServiceError::NotFound`] when there is none. Needs no embedder.
    pub fn get(&self, id: ItemId) -> Result<Item, ServiceError> {
        self.store.get(id)?.ok_or(ServiceError::NotFound(id))
    }

    /// Replaces an item's text (trimmed, cut to the window) and embeds it again. The item keeps
    /// its id, provenance, times and counters: a correction, not a new memory.
    pub fn edit(&self, id: ItemId, text: &str) -> Result<Edited, ServiceError> {
        let text = self.redactor.redact(text.trim()).into_owned();
        let text = text.as_str();
        check_text(text)?;
        // An unknown id is reported before the model is loaded for nothing.
        self.get(id)?;
        let embedder = self.embedder()?;
        let fitted = embedder.fit(text)?;
        let embedding = embed_one(embedder.as_ref(), &fitted.text)?;
        let item = self.store.update(id, &fitted.text, &embedding, embedder.digest())?;
        Ok(Edited { item, truncated: fitted.truncated })
    }

    /// Deletes an item for good and returns what it was. Needs no embedder.
    pub fn forget(&self, id: ItemId) -> Result<Item, ServiceError> {
        let item = self.get(id)?;
        if !self.store.delete(id)? {
            return Err(ServiceError::NotFound(id));
        }
        Ok(item)
    }

    /// Writes every item to `out` as JSON lines ([`Record`]), oldest first so that an export
    /// kept in git changes by appended lines. Returns how many. Needs no embedder.
    pub fn export(&self, out: &mut dyn Write) -> Result<usize, ServiceError> {
        let mut items = self.store.list(&Filter::default(), usize::MAX)?;
        items.sort_by_key(|item| item.id);
        for item in &items {
            let line = serde_json::to_string(&Record::of(item)).map_err(|e| ServiceError::Export(e.into()))?;
            writeln!(out, "{line}").map_err(ServiceError::Export)?;
        }
        out.flush().map_err(ServiceError::Export)?;
        Ok(items.len())
    }

    /// Reads JSON lines ([`Record`]) from `input` (named `source_name` in messages) and stores
    /// them as the module's rule says, embedding each with the current embedder. Blank lines are
    /// skipped. Every line is checked before anything is written.
    pub fn import(&self, input: impl BufRead, source_name: &str) -> Result<Imported, ServiceError> {
        let mut records = Vec::new();
        for (index, line) in input.lines().enumerate() {
            let line =
                line.map_err(|source| ServiceError::ImportRead { source_name: source_name.to_string(), source })?;
            if line.trim().is_empty() {
                continue;
            }
            let record = parse_line(&line).map_err(|reason| ServiceError::ImportLine {
                source_name: source_name.to_string(),
                line: index + 1,
                reason,
            })?;
            records.push((index + 1, record));
        }
        let mut imported = Imported::default();
        if records.is_empty() {
            return Ok(imported);
        }
        let embedder = self.embedder()?;
        let mut fitted = Vec::with_capacity(records.len());
        for (line, record) in &records {
            let fit = embedder.fit(&self.redactor.redact(record.text.trim()))?;
            if let Some(truncation) = &fit.truncated {
                imported.truncated += 1;
                (self.status)(&format!("{source_name} line {line}: {truncation}"));
            }
            fitted.push(fit.text);
        }

        let existing = self.store.list(&Filter::default(), usize::MAX)?;
        let mut exact: HashSet<(ItemKind, Scope, String, i64)> =
            existing.iter().map(|i| (i.kind, i.scope.clone(), i.text.clone(), i.created_ms)).collect();
        let mut any_time: HashSet<(ItemKind, Scope, String)> =
            existing.into_iter().map(|i| (i.kind, i.scope, i.text)).collect();
        let mut restore = Vec::new();
        let mut by_hand = Vec::new();
        for ((_, record), text) in records.iter().zip(fitted) {
            let raw = record.text.clone();
            match record.created_ms {
                Some(created) => {
                    let key = |text: String| (record.kind, record.scope.clone(), text, created);
                    if exact.contains(&key(raw.clone())) || !exact.insert(key(text.clone())) {
                        imported.present += 1;
                        continue;
                    }
                    any_time.insert((record.kind, record.scope.clone(), text.clone()));
                    restore.push((record, text));
                }
                None => {
                    let key = |text: String| (record.kind, record.scope.clone(), text);
                    if any_time.contains(&key(raw)) || !any_time.insert(key(text.clone())) {
                        imported.present += 1;
                        continue;
                    }
                    by_hand.push((record, text));
                }
            }
        }

        let texts: Vec<&str> = restore.iter().chain(&by_hand).map(|(_, text)| text.as_str()).collect();
        let mut vectors = embedder.embed(&texts)?.into_iter();
        let digest = embedder.digest().to_string();
        let now = (self.now_ms)();
        let mut new_item = |record: &Record, text: &String| -> Result<NewItem, ServiceError> {
            let embedding = vectors.next().ok_or_else(|| {
                ServiceError::from(EmbedError::Tokenize("the embedder returned fewer vectors than texts".into()))
            })?;
            Ok(NewItem {
                kind: record.kind,
                author: record.author,
                scope: record.scope.clone(),
                provenance: record.provenance.clone(),
                text: text.clone(),
                data: self.redactor.redact_value(&record.data),
                created_ms: record.created_ms.unwrap_or(now),
                embedding,
                embedder: digest.clone(),
            })
        };
        let restored: Vec<NewItem> = restore.iter().map(|(r, t)| new_item(r, t)).collect::<Result<_, _>>()?;
        let written: Vec<NewItem> = by_hand.iter().map(|(r, t)| new_item(r, t)).collect::<Result<_, _>>()?;

        // The exported items in one transaction, then their counters.
        let added = self.store.add_many(restored.clone())?;
        imported.added += added.len();
        let counters: Vec<(&Item, &NewItem, &Record)> =
            added.iter().zip(&restored).zip(&restore).map(|((item, new), (record, _))| (item, new, *record)).collect();
        self.restore_counters(&counters)?;

        for item in written {
            match self.store.add_or_merge(item, self.merge_threshold)? {
                Remembered::Added(_) => imported.added += 1,
                Remembered::Merged { .. } => imported.merged += 1,
            }
        }
        Ok(imported)
    }

    /// Gives freshly imported items the last use and counters their records carry. The store
    /// has no call that sets them, so they are replayed: a merge of the item with itself dated
    /// at its last use sets `last_used_ms` (see `store::merged`), then recalls are recorded
    /// round by round, two writes per unit of the largest `uses`, dated before any real time so
    /// they leave `last_used_ms` as set.
    fn restore_counters(&self, items: &[(&Item, &NewItem, &Record)]) -> Result<(), ServiceError> {
        for (item, new, record) in items {
            // A use without a recorded time is dated at the item's creation.
            let last_used = record.last_used_ms.or((record.uses > 0).then_some(item.created_ms));
            if let Some(at) = last_used {
                let same = NewItem { created_ms: at, ..(*new).clone() };
                self.store.merge(item.id, &same)?;
            }
        }
        let rounds = items.iter().map(|(_, _, r)| r.uses).max().unwrap_or(0);
        for round in 0..rounds {
            let ids = |succeeded: bool| -> Vec<ItemId> {
                items
                    .iter()
                    .filter(|(_, _, r)| round < r.uses && (round < r.successes) == succeeded)
                    .map(|(item, _, _)| item.id)
                    .collect()
            };
            for succeeded in [true, false] {
                let ids = ids(succeeded);
                if !ids.is_empty() {
                    self.store.record_use(&ids, succeeded, i64::MIN)?;
                }
            }
        }
        Ok(())
    }

    /// Embeds again every item whose vector came from an embedder other than the current one,
    /// loading the embedder if needed, and returns how many. The first operation that needs
    /// vectors does this by itself.
    pub fn reembed(&self) -> Result<usize, ServiceError> {
        let embedder = self.loaded_embedder()?;
        let count = self.reembed_with(embedder.as_ref())?;
        self.current.store(true, Ordering::Release);
        Ok(count)
    }

    /// The embedder, loaded on first call, with the store's vectors brought up to date once.
    fn embedder(&self) -> Result<Arc<dyn TextEmbedder>, ServiceError> {
        let embedder = self.loaded_embedder()?;
        if !self.current.load(Ordering::Acquire) {
            self.reembed_with(embedder.as_ref())?;
            self.current.store(true, Ordering::Release);
        }
        Ok(embedder)
    }

    fn loaded_embedder(&self) -> Result<Arc<dyn TextEmbedder>, ServiceError> {
        let mut slot = lock(&self.embedder);
        if let Some(embedder) = slot.as_ref() {
            return Ok(embedder.clone());
        }
        let loaded: Arc<dyn TextEmbedder> = match &self.source {
            EmbedderSource::Cache => {
                let files = ready_files(&mut |line| (self.status)(line))?;
                Arc::new(MiniLm::load(&files)?)
            }
            EmbedderSource::Files(files) => Arc::new(MiniLm::load(files)?),
            EmbedderSource::Given(embedder) => embedder.clone(),
        };
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// Re-embeds the items of other embedders than `embedder`, in batches, saying so.
    fn reembed_with(&self, embedder: &dyn TextEmbedder) -> Result<usize, ServiceError> {
        let digest = embedder.digest();
        let mut done = HashSet::new();
        // Episodes waiting for their first vector are embedded without a word; a change of
        // embedder is worth saying.
        let mut reembedded = 0;
        loop {
            let stale = self.store.needing_reembedding(digest, REEMBED_BATCH)?;
            // An item seen twice was not updated: stop rather than loop (search skips it).
            if stale.is_empty() || stale.iter().any(|item| done.contains(&item.id)) {
                break;
            }
            if done.is_empty() && stale[0].embedder != PENDING_EMBEDDER {
                (self.status)(&format!(
                    "re-embedding memory items made by another embedder ({} → {})…",
                    short_digest(&stale[0].embedder),
                    short_digest(digest)
                ));
            }
            let texts: Vec<&str> = stale.iter().map(|item| item.text.as_str()).collect();
            let vectors = embedder.embed(&texts)?;
            for (item, vector) in stale.iter().zip(&vectors) {
                self.store.update(item.id, &item.text, vector, digest)?;
                done.insert(item.id);
                reembedded += usize::from(item.embedder != PENDING_EMBEDDER);
            }
        }
        if reembedded > 0 {
            (self.status)(&format!("re-embedded {reembedded} memory items"));
        }
        Ok(done.len())
    }
}

/// `sha256:53aa51172d14…`: enough of a digest to tell two apart in a status line.
fn short_digest(digest: &str) -> String {
    match digest.char_indices().nth(19) {
        Some((at, _)) => format!("{}…", &digest[..at]),
        None => digest.to_string(),
    }
}

fn embed_one(embedder: &dyn TextEmbedder, text: &str) -> Result<Vec<f32>, ServiceError> {
    embedder
        .embed(&[text])?
        .into_iter()
        .next()
        .ok_or_else(|| ServiceError::from(EmbedError::Tokenize("the embedder returned no vector for a text".into())))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while loading left at worst no embedder: the next call loads it again.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn system_now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
