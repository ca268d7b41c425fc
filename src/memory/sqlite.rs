//! The default memory store: one SQLite file per workbench (`.troupe/memory.sqlite`), in WAL
//! mode so several troupe processes can read while one writes, every write its own durable
//! transaction (`synchronous = FULL`: it returns only once it is on disk).
//!
//! Search scans an in-memory copy of the vectors (`VectorTable`), loaded on the first search
//! and kept in step with this store's own writes. When `PRAGMA data_version` says another
//! connection (another process, or another `SqliteStore` on the same file) committed, the
//! search first reads the `changes` log past the last change it applied and re-reads only
//! those items: a full reload of 100,000 vectors takes about a third of a second, a few
//! changes a few milliseconds.
//!
//! Schema (version [`SCHEMA_VERSION`]), vectors as little-endian `f32` BLOBs:
//! ```sql
//! meta  (key TEXT PRIMARY KEY, value TEXT NOT NULL)      -- 'schema_version' → '1'
//! items (id INTEGER PRIMARY KEY AUTOINCREMENT,           -- ids are never reused
//!        kind TEXT, author TEXT, scope TEXT NULL,          -- scope NULL = global, else the expert
//!        run_id TEXT NULL, seq INTEGER NULL, expert TEXT NULL,
//!        text TEXT, data TEXT (JSON), created_ms INTEGER, last_used_ms INTEGER NULL,
//!        uses INTEGER, successes INTEGER, embedder TEXT, embedding BLOB)
//! changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER)  -- items added, edited, forgotten
//! ```
//! The log keeps its last [`CHANGES_KEPT`] entries (trimmed when a store is opened and no other
//! process is writing; opening never waits for a writer); a reader that fell further behind
//! reloads.
//!
//! Longer than most files on purpose: the schema, its versions, the change log other processes
//! read and every query are one transactional unit; its tests are in `sqlite/tests.rs`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::search::WrongDims;
use super::store::{
    Author, Filter, Hit, Item, ItemId, ItemKind, MemoryError, MemoryStore, NewItem, Provenance, Query, Scope,
    ScopeFilter, Stats, check_new, check_text, check_vector, merged,
};
use super::vectors::{RowInfo, VectorTable};

/// The store format this troupe writes; it refuses files of a later one.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a write waits for another process's write to finish before giving up. Writes are
/// single rows (milliseconds), so five seconds means the other process is stuck or holding a
/// long transaction.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `<workbench>/.troupe/memory.sqlite`: the workbench's store.
pub fn default_path(workbench: &Path) -> PathBuf {
    crate::config::MemorySettings::default_store_path(workbench)
}

const SCHEMA: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        author TEXT NOT NULL,
        scope TEXT,
        run_id TEXT,
        seq INTEGER,
        expert TEXT,
        text TEXT NOT NULL,
        data TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_used_ms INTEGER,
        uses INTEGER NOT NULL DEFAULT 0,
        successes INTEGER NOT NULL DEFAULT 0,
        embedder TEXT NOT NULL,
        embedding BLOB NOT NULL
    );
    CREATE INDEX items_by_time ON items (created_ms, id);
    CREATE INDEX items_by_embedder ON items (embedder);
    CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER NOT NULL);
";

/// Entries of the `changes` log kept when a store is opened: enough for any reader that
/// searched recently; one further behind reloads every vector instead.
pub const CHANGES_KEPT: i64 = 10_000;

/// The columns [`SqliteStore::vector_row`] reads, in its order.
const VECTOR_COLUMNS: &str = "id, kind, author, scope, embedding";

/// The columns [`read_item`] reads, in its order.
const COLUMNS: &str = "id, kind, author, scope, run_id, seq, expert, text, data, created_ms, last_used_ms, \
                       uses, successes, embedder, embedding";

/// The store's file and how to describe its failures.
#[derive(Debug)]
struct Place {
    path: PathBuf,
    busy_timeout: Duration,
}

impl Place {
    /// Turns SQLite's error into one that names the file and says what to do.
    fn err(&self, action: &'static str) -> impl Fn(rusqlite::Error) -> MemoryError + '_ {
        move |e| match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => self.corrupt(e.to_string()),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                MemoryError::Busy { path: self.path.clone(), waited: self.busy_timeout }
            }
            // A column holding the wrong type was not written by troupe.
            _ if matches!(
                e,
                rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::FromSqlConversionFailure(..)
                    | rusqlite::Error::IntegralValueOutOfRange(..)
            ) =>
            {
                self.corrupt(e.to_string())
            }
            _ => MemoryError::Backend { path: self.path.clone(), action, reason: e.to_string() },
        }
    }

    /// An I/O error of the store's file, naming it.
    fn err_io(&self, action: &'static str) -> impl Fn(std::io::Error) -> MemoryError + '_ {
        move |e| MemoryError::Backend { path: self.path.clone(), action, reason: e.to_string() }
    }

    fn corrupt(&self, reason: impl Into<String>) -> MemoryError {
        MemoryError::Corrupt { path: self.path.clone(), reason: reason.into() }
    }
}

/// The vectors loaded for search, the `data_version` they are current for, and the last entry
/// of the `changes` log they include.
struct Loaded {
    data_version: i64,
    last_change: i64,
    table: VectorTable,
}

struct Inner {
    conn: Connection,
    loaded: Option<Loaded>,
    /// Full loads of the vectors so far, so tests can tell a reload from a refresh.
    #[cfg(test)]
    loads: usize,
}

/// A [`MemoryStore`] in one SQLite file. One connection, behind a mutex: SQLite serialises
/// writers anyway, and reads are a few point lookups after an in-memory scan.
pub struct SqliteStore {
    place: Place,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.place.path).finish_non_exhaustive()
    }
}

/// Creates an empty store file readable by its owner alone (SQLite gives its `-wal` and `-shm`
/// files the same mode), unless it exists: the memory holds what runs saw, and a shared machine
/// must not read it. An empty file is an empty SQLite database.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating it (and its folders) if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MemoryError> {
        Self::open_with_timeout(path, DEFAULT_BUSY_TIMEOUT)
    }

    /// [`SqliteStore::open`], waiting at most `busy_timeout` for another process's write.
    pub fn open_with_timeout(path: impl AsRef<Path>, busy_timeout: Duration) -> Result<Self, MemoryError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(|source| MemoryError::CreateDir { path: parent.to_path_buf(), source })?;
        }
        let place = Place { path, busy_timeout };
        create_private(&place.path).map_err(place.err_io("create the file"))?;
        let mut conn = Connection::open(&place.path).map_err(place.err("open the file"))?;
        conn.busy_timeout(busy_timeout).map_err(place.err("set its busy timeout"))?;
        // Refuse a newer store or another program's database before changing anything in it.
        read_version(&conn, &place)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(place.err("switch to write-ahead logging"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(MemoryError::Backend {
                path: place.path.clone(),
                action: "switch to write-ahead logging",
                reason: format!("SQLite kept the journal mode {mode:?}; put the workbench on a local file system"),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(place.err("make commits durable"))?;
        // Opening an existing store only reads, so it never waits for another process's
        // write (an import, a re-embedding). Only a new store takes the write lock: two
        // processes may create it at once, so the check and the creation are one transaction.
        if read_version(&conn, &place)?.is_none() {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(place.err("create its tables"))?;
            if read_version(&tx, &place)?.is_none() {
                tx.execute_batch(SCHEMA).map_err(place.err("create its tables"))?;
                tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?1)", [SCHEMA_VERSION.to_string()])
                    .map_err(place.err("create its tables"))?;
            }
            tx.commit().map_err(place.err("create its tables"))?;
        }
        trim_changes(&conn, &place, busy_timeout)?;
        Ok(SqliteStore {
            place,
            inner: Mutex::new(Inner {
                conn,
                loaded: None,
                #[cfg(test)]
                loads: 0,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.place.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            // A thread panicked holding the lock: the connection is fine (SQLite rolled back
            // any open transaction when its guard dropped) but the loaded vectors may be half
            // updated, so they are dropped and reloaded.
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                guard.loaded = None;
                self.inner.clear_poison();
                guard
            }
        }
    }

    /// Runs `apply` in its own write transaction and commits it (durably), then lets `track`
    /// update the loaded vectors, all under the lock so no other thread sees one without the
    /// other.
    fn write<T>(
        &self,
        action: &'static str,
        apply: impl FnOnce(&Transaction<'_>) -> Result<T, MemoryError>,
        track: impl FnOnce(&mut VectorTable, &T) -> Result<(), WrongDims>,
    ) -> Result<T, MemoryError> {
        let mut guard = self.lock();
        let Inner { conn, loaded, .. } = &mut *guard;
        // IMMEDIATE: take the write lock first, waiting up to the busy timeout, instead of
        // failing at once when a read would have to become a write after another commit.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.place.err(action))?;
        let value = apply(&tx)?;
        tx.commit().map_err(self.place.err(action))?;
        if let Some(l) = loaded.as_mut()
            && track(&mut l.table, &value).is_err()
        {
            // A vector that does not fit: reload at the next search, which says what is wrong.
            *loaded = None;
        }
        Ok(value)
    }

    /// Inserts `item` in `tx`; `dims` remembers each embedder's vector length within a batch.
    fn insert(
        &self,
        tx: &Transaction<'_>,
        item: NewItem,
        dims: &mut HashMap<String, usize>,
    ) -> Result<Item, MemoryError> {
        let known = match dims.get(&item.embedder) {
            Some(&d) => Some(d),
            None => self.dims_of(tx, &item.embedder, None)?,
        };
        self.check_dims(&item.embedder, known, item.embedding.len())?;
        dims.insert(item.embedder.clone(), item.embedding.len());
        let err = self.place.err("store an item");
        let (scope, seq, data) = columns_of(&item, &self.place)?;
        tx.prepare_cached(
            "INSERT INTO items (kind, author, scope, run_id, seq, expert, text, data, created_ms, embedder, embedding) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                item.kind.as_str(),
                item.author.as_str(),
                scope,
                item.provenance.run_id,
                seq,
                item.provenance.expert,
                item.text,
                data,
                item.created_ms,
                item.embedder,
                encode(&item.embedding),
            ])
        })
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        self.log_change(tx, id)?;
        Ok(Item::stored(id, item))
    }

    /// Notes in the `changes` log that item `id` was added, edited or forgotten, for the other
    /// connections' loaded vectors.
    fn log_change(&self, tx: &Transaction<'_>, id: ItemId) -> Result<(), MemoryError> {
        tx.prepare_cached("INSERT INTO changes (item) VALUES (?1)")
            .and_then(|mut stmt| stmt.execute([id]))
            .map_err(self.place.err("log a change"))?;
        Ok(())
    }

    /// The vector length of stored items from `embedder` (other than `except`), if any.
    fn dims_of(&self, conn: &Connection, embedder: &str, except: Option<ItemId>) -> Result<Option<usize>, MemoryError> {
        let bytes: Option<i64> = conn
            .prepare_cached("SELECT length(embedding) FROM items WHERE embedder = ?1 AND id != ?2 LIMIT 1")
            .and_then(|mut stmt| stmt.query_row(params![embedder, except.unwrap_or(-1)], |r| r.get(0)).optional())
            .map_err(self.place.err("read the vectors' length"))?;
        Ok(bytes.map(|b| usize::try_from(b / 4).unwrap_or(0)))
    }

    fn check_dims(&self, embedder: &str, known: Option<usize>, got: usize) -> Result<(), MemoryError> {
        match known {
            Some(expected) if expected != got => {
                Err(MemoryError::Dimensions { embedder: embedder.to_string(), expected, got })
            }
            _ => Ok(()),
        }
    }

    fn get_in(&self, conn: &Connection, id: ItemId) -> Result<Option<Item>, MemoryError> {
        let raw = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM items WHERE id = ?1"))
            .and_then(|mut stmt| stmt.query_row([id], read_item).optional())
            .map_err(self.place.err("read an item"))?;
        raw.map(|r| r.into_item(&self.place)).transpose()
    }

    fn query_items(&self, sql: &str, params: Vec<Value>, action: &'static str) -> Result<Vec<Item>, MemoryError> {
        let guard = self.lock();
        let raws: Vec<RawItem> = guard
            .conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_map(rusqlite::params_from_iter(params), read_item)?.collect())
            .map_err(self.place.err(action))?;
        drop(guard);
        raws.into_iter().map(|r: RawItem| r.into_item(&self.place)).collect()
    }

    /// Every vector of `embedder`, for search, current for `data_version`.
    fn load(&self, conn: &Connection, embedder: &str, dims: usize, data_version: i64) -> Result<Loaded, MemoryError> {
        let err = self.place.err("load the vectors for search");
        let last_change = last_change(conn).map_err(&err)?;
        let count: i64 =
            conn.query_row("SELECT count(*) FROM items WHERE embedder = ?1", [embedder], |r| r.get(0)).map_err(&err)?;
        let mut stmt =
            conn.prepare(&format!("SELECT {VECTOR_COLUMNS} FROM items WHERE embedder = ?1")).map_err(&err)?;
        let mut rows = stmt.query([embedder]).map_err(&err)?;
        let mut table: Option<VectorTable> = None;
        let mut vector = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            let (id, info) = self.vector_row(row, &mut vector)?;
            let table = table.get_or_insert_with(|| {
                let mut t = VectorTable::new(embedder, vector.len());
                t.reserve(usize::try_from(count).unwrap_or(0));
                t
            });
            table.upsert(id, info, &vector).map_err(|e| self.wrong_dims(id, embedder, e))?;
        }
        let table = table.unwrap_or_else(|| VectorTable::new(embedder, dims));
        Ok(Loaded { data_version, last_change, table })
    }

    /// Applies the `changes` logged since `loaded` was current: re-reads those items' vectors.
    /// `false` when that would not be cheaper than a reload, or the log no longer reaches back.
    fn refresh(&self, conn: &Connection, loaded: &mut Loaded, data_version: i64) -> Result<bool, MemoryError> {
        let err = self.place.err("refresh the vectors for search");
        let last_change = last_change(conn).map_err(&err)?;
        // With the log trimmed (or emptied) past what was applied, changes may be missing.
        let oldest: Option<i64> = conn.query_row("SELECT min(seq) FROM changes", [], |r| r.get(0)).map_err(&err)?;
        if oldest.unwrap_or(last_change + 1) > loaded.last_change + 1 {
            return Ok(false);
        }
        let ids: Vec<ItemId> = conn
            .prepare_cached("SELECT DISTINCT item FROM changes WHERE seq > ?1")
            .and_then(|mut stmt| stmt.query_map([loaded.last_change], |r| r.get(0))?.collect())
            .map_err(&err)?;
        // Point reads cost about as much per item as a reload does per row ten times over.
        if ids.len() > loaded.table.len() / 10 + 100 {
            return Ok(false);
        }
        let embedder = loaded.table.embedder().to_string();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {VECTOR_COLUMNS} FROM items WHERE id = ?1 AND embedder = ?2"))
            .map_err(&err)?;
        let mut vector = Vec::new();
        for id in ids {
            let mut rows = stmt.query(params![id, embedder]).map_err(&err)?;
            match rows.next().map_err(&err)? {
                Some(row) => {
                    let (id, info) = self.vector_row(row, &mut vector)?;
                    if loaded.table.upsert(id, info, &vector).is_err() {
                        // Another length than the loaded vectors: a reload says what is wrong.
                        return Ok(false);
                    }
                }
                // Forgotten, or re-embedded by another embedder.
                None => {
                    loaded.table.remove(id);
                }
            }
        }
        loaded.data_version = data_version;
        loaded.last_change = last_change;
        Ok(true)
    }

    /// One row of [`VECTOR_COLUMNS`]: the item's id and filter fields, its vector into `vector`.
    fn vector_row(&self, row: &Row<'_>, vector: &mut Vec<f32>) -> Result<(ItemId, RowInfo), MemoryError> {
        let err = self.place.err("read the vectors for search");
        let id: ItemId = row.get(0).map_err(&err)?;
        let text = |i: usize| row.get_ref(i).and_then(|v| Ok(v.as_str()?)).map_err(&err);
        let kind = ItemKind::parse(text(1)?).ok_or_else(|| self.unknown(id, "kind", text(1)))?;
        let author = Author::parse(text(2)?).ok_or_else(|| self.unknown(id, "author", text(2)))?;
        let scope = match row.get_ref(3).map_err(&err)? {
            ValueRef::Null => Scope::Global,
            v => Scope::Expert(v.as_str().map_err(|e| self.place.corrupt(e.to_string()))?.to_string()),
        };
        let blob = row.get_ref(4).and_then(|v| Ok(v.as_blob()?)).map_err(&err)?;
        decode_into(blob, vector).ok_or_else(|| self.bad_blob(id, blob.len()))?;
        Ok((id, RowInfo { kind, author, scope }))
    }

    fn wrong_dims(&self, id: ItemId, embedder: &str, e: WrongDims) -> MemoryError {
        self.place.corrupt(format!(
            "item {id}'s vector has {} dimensions where other vectors of embedder {embedder} have {}",
            e.got, e.expected
        ))
    }

    fn unknown(&self, id: ItemId, column: &str, value: Result<&str, MemoryError>) -> MemoryError {
        self.place.corrupt(format!("item {id} has an unknown {column} {:?}", value.unwrap_or_default()))
    }

    fn bad_blob(&self, id: ItemId, len: usize) -> MemoryError {
        self.place.corrupt(format!("item {id}'s vector is {len} bytes, not a whole number of 4-byte floats"))
    }
}

impl MemoryStore for SqliteStore {
    fn add(&self, item: NewItem) -> Result<Item, MemoryError> {
        check_new(&item)?;
        self.write("store an item", |tx| self.insert(tx, item, &mut HashMap::new()), track)
    }

    fn add_many(&self, items: Vec<NewItem>) -> Result<Vec<Item>, MemoryError> {
        items.iter().try_for_each(check_new)?;
        self.write(
            "store items",
            |tx| {
                let mut dims = HashMap::new();
                items.into_iter().map(|item| self.insert(tx, item, &mut dims)).collect()
            },
            |table, items: &Vec<Item>| items.iter().try_for_each(|item| track(table, item)),
        )
    }

    fn get(&self, id: ItemId) -> Result<Option<Item>, MemoryError> {
        let guard = self.lock();
        self.get_in(&guard.conn, id)
    }

    fn update(&self, id: ItemId, text: &str, embedding: &[f32], embedder: &str) -> Result<Item, MemoryError> {
        check_text(text)?;
        check_vector(embedding, embedder)?;
        self.write(
            "update an item",
            |tx| {
                let known = self.dims_of(tx, embedder, Some(id))?;
                self.check_dims(embedder, known, embedding.len())?;
                let changed = tx
                    .execute(
                        "UPDATE items SET text = ?2, embedding = ?3, embedder = ?4 WHERE id = ?1",
                        params![id, text, encode(embedding), embedder],
                    )
                    .map_err(self.place.err("update an item"))?;
                if changed == 0 {
                    return Err(MemoryError::NotFound(id));
                }
                self.log_change(tx, id)?;
                self.get_in(tx, id)?.ok_or(MemoryError::NotFound(id))
            },
            track,
        )
    }

    fn merge(&self, into: ItemId, duplicate: &NewItem) -> Result<Item, MemoryError> {
        check_new(duplicate)?;
        self.write(
            "merge an item",
            |tx| {
                let old = self.get_in(tx, into)?.ok_or(MemoryError::NotFound(into))?;
                let item = merged(old, duplicate);
                let known = self.dims_of(tx, &item.embedder, Some(into))?;
                self.check_dims(&item.embedder, known, item.embedding.len())?;
                let data = serde_json::to_string(&item.data).map_err(|e| self.json_error(&e))?;
                tx.execute(
                    "UPDATE items SET text = ?2, embedding = ?3, embedder = ?4, last_used_ms = ?5, data = ?6 \
                     WHERE id = ?1",
                    params![into, item.text, encode(&item.embedding), item.embedder, item.last_used_ms, data],
                )
                .map_err(self.place.err("merge an item"))?;
                self.log_change(tx, into)?;
                Ok(item)
            },
            track,
        )
    }

    fn delete(&self, id: ItemId) -> Result<bool, MemoryError> {
        self.write(
            "forget an item",
            |tx| {
                let changed =
                    tx.execute("DELETE FROM items WHERE id = ?1", [id]).map_err(self.place.err("forget an item"))?;
                if changed > 0 {
                    self.log_change(tx, id)?;
                }
                Ok(changed > 0)
            },
            |table, _| {
                table.remove(id);
                Ok(())
            },
        )
    }

    fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<Item>, MemoryError> {
        let (clause, mut params) = where_clause(filter);
        params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!("SELECT {COLUMNS} FROM items{clause} ORDER BY created_ms DESC, id DESC LIMIT ?");
        self.query_items(&sql, params, "list items")
    }

    fn search(&self, query: &Query<'_>) -> Result<Vec<Hit>, MemoryError> {
        check_vector(query.vector, query.embedder)?;
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let err = self.place.err("search");
        let mut guard = self.lock();
        let Inner {
            conn,
            loaded,
            #[cfg(test)]
            loads,
        } = &mut *guard;
        // One read transaction: the version check, a reload if needed and the hits' rows all
        // see the same snapshot of the file.
        let tx = conn.transaction().map_err(&err)?;
        let version: i64 = tx.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(&err)?;
        let current = match loaded.as_mut() {
            Some(l) if l.table.embedder() == query.embedder => {
                l.data_version == version || self.refresh(&tx, l, version)?
            }
            _ => false,
        };
        if !current {
            #[cfg(test)]
            {
                *loads += 1;
            }
            *loaded = None;
            *loaded = Some(self.load(&tx, query.embedder, query.vector.len(), version)?);
        }
        let Some(Loaded { table, .. }) = loaded.as_ref() else { return Ok(Vec::new()) };
        if !table.is_empty() && table.dims() != query.vector.len() {
            return Err(MemoryError::Dimensions {
                embedder: query.embedder.to_string(),
                expected: table.dims(),
                got: query.vector.len(),
            });
        }
        let mut hits = Vec::new();
        for (id, score) in table.search(query.vector, query.k, &query.filter, query.min_score) {
            // Within the snapshot every id in the table has its row; skipping a missing one is
            // only a guard.
            if let Some(item) = self.get_in(&tx, id)? {
                hits.push(Hit { item, score });
            }
        }
        tx.commit().map_err(&err)?;
        Ok(hits)
    }

    fn record_use(&self, ids: &[ItemId], succeeded: bool, at_ms: i64) -> Result<usize, MemoryError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.write(
            "record a recall",
            |tx| {
                let err = self.place.err("record a recall");
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE items SET uses = uses + 1, successes = successes + ?2, \
                         last_used_ms = max(coalesce(last_used_ms, ?3), ?3) WHERE id = ?1",
                    )
                    .map_err(&err)?;
                let mut found = 0;
                for id in &ids {
                    found += stmt.execute(params![id, i64::from(succeeded), at_ms]).map_err(&err)?;
                }
                Ok(found)
            },
            |_, _| Ok(()),
        )
    }

    fn needing_reembedding(&self, embedder: &str, limit: usize) -> Result<Vec<Item>, MemoryError> {
        let sql = format!("SELECT {COLUMNS} FROM items WHERE embedder != ? ORDER BY id LIMIT ?");
        let params = vec![Value::Text(embedder.to_string()), Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX))];
        self.query_items(&sql, params, "list items to re-embed")
    }

    fn stats(&self) -> Result<Stats, MemoryError> {
        let guard = self.lock();
        let (items, lessons, episodes): (i64, i64, i64) = guard
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(kind = 'lesson'), 0), coalesce(sum(kind = 'episode'), 0) FROM items",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(self.place.err("count its items"))?;
        drop(guard);
        let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.place.path.clone().into_os_string();
        wal.push("-wal");
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Stats {
            items: count(items),
            lessons: count(lessons),
            episodes: count(episodes),
            bytes: size(&self.place.path) + size(Path::new(&wal)),
        })
    }
}

impl SqliteStore {
    fn json_error(&self, e: &serde_json::Error) -> MemoryError {
        MemoryError::Backend { path: self.place.path.clone(), action: "store an item's data", reason: e.to_string() }
    }
}

/// Keeps the loaded vectors in step with a written item: its row is replaced, or dropped when
/// its vector now comes from another embedder than the loaded ones.
fn track(table: &mut VectorTable, item: &Item) -> Result<(), WrongDims> {
    if item.embedder == table.embedder() {
        let info = RowInfo { kind: item.kind, author: item.author, scope: item.scope.clone() };
        table.upsert(item.id, info, &item.embedding)
    } else {
        table.remove(item.id);
        Ok(())
    }
}

/// Trims the `changes` log to its last [`CHANGES_KEPT`] entries when it is longer, if the write
/// lock is free at once: trimming is housekeeping that any later open can do, never a reason
/// for opening to wait for (or fail on) another process's long write, or on a file it may only
/// read.
fn trim_changes(conn: &Connection, place: &Place, busy_timeout: Duration) -> Result<(), MemoryError> {
    let span: Option<i64> = conn
        .query_row("SELECT max(seq) - min(seq) + 1 FROM changes", [], |r| r.get(0))
        .map_err(place.err("read its change log"))?;
    if span.is_none_or(|span| span <= CHANGES_KEPT) {
        return Ok(());
    }
    conn.busy_timeout(Duration::ZERO).map_err(place.err("set its busy timeout"))?;
    let trimmed = conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - {CHANGES_KEPT}; COMMIT;"
    ));
    let restored = conn.busy_timeout(busy_timeout).map_err(place.err("set its busy timeout"));
    match trimmed {
        Ok(()) => restored,
        Err(e) => {
            // Someone else is writing (or the file is read-only): leave the log for a later
            // open. A failed BEGIN left no transaction; a failed DELETE or COMMIT did, and is
            // rolled back.
            if !matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)) {
                tracing::warn!("the memory's change log was not trimmed: {e}");
            }
            if !conn.is_autocommit() {
                conn.execute_batch("ROLLBACK").map_err(place.err("trim its change log"))?;
            }
            restored
        }
    }
}

/// The last entry ever made in the `changes` log (0 if none), even if trimmed since:
/// AUTOINCREMENT keeps it in `sqlite_sequence`.
fn last_change(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)", [], |r| r.get(0))
}

/// `None` if the store has no tables yet; its format version otherwise, refusing a newer
/// store or a database that is not a store.
fn read_version(conn: &Connection, place: &Place) -> Result<Option<i64>, MemoryError> {
    let err = place.err("read its format version");
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(&err)?;
    let has_meta: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(&err)?
        > 0;
    if !has_meta {
        return if tables == 0 { Ok(None) } else { Err(MemoryError::NotAStore { path: place.path.clone() }) };
    }
    let value: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .optional()
        .map_err(&err)?;
    match value.as_deref().map(str::parse::<i64>) {
        Some(Ok(found)) if found > SCHEMA_VERSION => {
            Err(MemoryError::NewerVersion { path: place.path.clone(), found, supported: SCHEMA_VERSION })
        }
        Some(Ok(found)) if found >= 1 => Ok(Some(found)),
        _ => Err(place.corrupt(format!("its meta table holds no valid schema_version ({value:?})"))),
    }
}

/// The scope, seq and data columns of `item`.
fn columns_of(item: &NewItem, place: &Place) -> Result<(Option<String>, Option<i64>, String), MemoryError> {
    let scope = match &item.scope {
        Scope::Global => None,
        Scope::Expert(name) => Some(name.clone()),
    };
    let seq = item.provenance.seq.map(i64::try_from).transpose().map_err(|_| MemoryError::Backend {
        path: place.path.clone(),
        action: "store an item",
        reason: format!("its event seq {:?} is too large for the store", item.provenance.seq),
    })?;
    let data = serde_json::to_string(&item.data).map_err(|e| MemoryError::Backend {
        path: place.path.clone(),
        action: "store an item's data",
        reason: e.to_string(),
    })?;
    Ok((scope, seq, data))
}

/// `WHERE …` for `filter` (empty for every item) and its parameters, in order.
fn where_clause(filter: &Filter) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(kind) = filter.kind {
        conditions.push("kind = ?");
        params.push(Value::Text(kind.as_str().into()));
    }
    if let Some(author) = filter.author {
        conditions.push("author = ?");
        params.push(Value::Text(author.as_str().into()));
    }
    match &filter.scope {
        ScopeFilter::Any => {}
        ScopeFilter::Global => conditions.push("scope IS NULL"),
        ScopeFilter::Expert(name) => {
            conditions.push("scope = ?");
            params.push(Value::Text(name.clone()));
        }
        ScopeFilter::VisibleTo(name) => {
            conditions.push("(scope IS NULL OR scope = ?)");
            params.push(Value::Text(name.clone()));
        }
    }
    let clause = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    (clause, params)
}

/// A row as SQLite holds it, before its text columns are checked.
struct RawItem {
    id: ItemId,
    kind: String,
    author: String,
    scope: Option<String>,
    run_id: Option<String>,
    seq: Option<i64>,
    expert: Option<String>,
    text: String,
    data: String,
    created_ms: i64,
    last_used_ms: Option<i64>,
    uses: i64,
    successes: i64,
    embedder: String,
    embedding: Vec<u8>,
}

fn read_item(row: &Row<'_>) -> rusqlite::Result<RawItem> {
    Ok(RawItem {
        id: row.get(0)?,
        kind: row.get(1)?,
        author: row.get(2)?,
        scope: row.get(3)?,
        run_id: row.get(4)?,
        seq: row.get(5)?,
        expert: row.get(6)?,
        text: row.get(7)?,
        data: row.get(8)?,
        created_ms: row.get(9)?,
        last_used_ms: row.get(10)?,
        uses: row.get(11)?,
        successes: row.get(12)?,
        embedder: row.get(13)?,
        embedding: row.get(14)?,
    })
}

impl RawItem {
    fn into_item(self, place: &Place) -> Result<Item, MemoryError> {
        let id = self.id;
        let bad = |what: String| place.corrupt(format!("item {id} {what}"));
        let kind = ItemKind::parse(&self.kind).ok_or_else(|| bad(format!("has an unknown kind {:?}", self.kind)))?;
        let author =
            Author::parse(&self.author).ok_or_else(|| bad(format!("has an unknown author {:?}", self.author)))?;
        let data = serde_json::from_str(&self.data).map_err(|e| bad(format!("has data that is not JSON ({e})")))?;
        let mut embedding = Vec::new();
        decode_into(&self.embedding, &mut embedding)
            .ok_or_else(|| bad(format!("has a vector of {} bytes, not whole 4-byte floats", self.embedding.len())))?;
        let count = |n: i64| u64::try_from(n).map_err(|_| bad(format!("has a negative use count {n}")));
        Ok(Item {
            id,
            kind,
            author,
            scope: self.scope.map_or(Scope::Global, Scope::Expert),
            provenance: Provenance {
                run_id: self.run_id,
                seq: self.seq.and_then(|s| u64::try_from(s).ok()),
                expert: self.expert,
            },
            text: self.text,
            data,
            created_ms: self.created_ms,
            last_used_ms: self.last_used_ms,
            uses: count(self.uses)?,
            successes: count(self.successes)?,
            embedding,
            embedder: self.embedder,
        })
    }
}

/// A vector as a BLOB: its floats, little-endian, one after another.
fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The floats of a BLOB into `out`; `None` if its length is not a whole number of floats.
fn decode_into(blob: &[u8], out: &mut Vec<f32>) -> Option<()> {
    if blob.len() % 4 != 0 {
        return None;
    }
    out.clear();
    out.extend(blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    Some(())
}

#[cfg(test)]
mod tests;
