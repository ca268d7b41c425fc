//! The memory store in PostgreSQL with pgvector (`backend = "postgres"` in `[memory]`): one
//! database shared by a team's workbenches, reached at the URL held by the environment variable
//! the settings name (`url_env`), never written in a file.
//!
//! Every write is its own transaction, committed before it returns (with the server's default
//! `synchronous_commit = on`, that is on disk). Search is exact and runs in the server: the
//! inner product `<#>` of unit vectors is minus their cosine, so `ORDER BY embedding <#> $1`
//! with the filters in `WHERE` is the contract's top-k, ties broken by the older id.
//!
//! The `embedding` column is an untyped `vector`: each embedder has its own length (the store
//! checks that an embedder's vectors agree, as SQLite's does), and a change of embedder
//! re-embeds items one by one, so two lengths live side by side for a while. The cost is that
//! pgvector's HNSW and IVFFlat indexes need a fixed length; none is used. An approximate index
//! would also break the contract's exactness and, with filters applied after the index scan,
//! can return fewer than k hits. The price: an exact scan of 100,000 items of 384 dimensions takes
//! about 110 ms on the bench's local server (`benches/memory.rs`; SQLite's in-memory scan, 3 ms),
//! 8 ms at 10,000. A team that outgrows it would add a partial HNSW index per embedder,
//! `CREATE INDEX … USING hnsw ((embedding::vector(384)) vector_ip_ops) WHERE embedder = '…'`.
//!
//! Schema (version [`SCHEMA_VERSION`]), prefixed so the store can share a database:
//! ```sql
//! troupe_memory_meta  (key text PRIMARY KEY, value text NOT NULL)  -- 'schema_version' → '1'
//! troupe_memory_items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
//!                      kind text, author text, scope text NULL,      -- NULL = global
//!                      run_id text NULL, seq bigint NULL, expert text NULL,
//!                      text text, data jsonb, created_ms bigint, last_used_ms bigint NULL,
//!                      uses bigint, successes bigint, embedder text, embedding vector)
//! ```
//!
//! The connection has no TLS (`NoTls`): fine for a server on the same machine or a private
//! network. A team reaching a server over the internet would add `postgres-native-tls` (or
//! `tokio-postgres-rustls`) and pass its connector in [`PostgresStore::connect`].

pub mod server;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use postgres::config::Host;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use super::store::{
    Author, Filter, Hit, Item, ItemId, ItemKind, MemoryError, MemoryStore, NewItem, Provenance, Query, Scope,
    ScopeFilter, Stats, check_new, check_text, check_vector, merged,
};

/// The store format this troupe writes; it refuses databases of a later one.
pub const SCHEMA_VERSION: i64 = 1;

/// How long connecting may take when the URL does not say (`connect_timeout`): a server that
/// does not answer in that time is down or unreachable, and saying so beats hanging.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Key of the advisory lock that makes creating the tables one step for concurrent processes.
const CREATE_LOCK: i64 = 0x7472_6f75_7065_6d31; // "troupem1"

const SCHEMA: &str = "
    CREATE TABLE troupe_memory_meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE troupe_memory_items (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind text NOT NULL,
        author text NOT NULL,
        scope text,
        run_id text,
        seq bigint,
        expert text,
        text text NOT NULL,
        data jsonb NOT NULL,
        created_ms bigint NOT NULL,
        last_used_ms bigint,
        uses bigint NOT NULL DEFAULT 0,
        successes bigint NOT NULL DEFAULT 0,
        embedder text NOT NULL,
        embedding vector NOT NULL
    );
    CREATE INDEX troupe_memory_items_by_time ON troupe_memory_items (created_ms, id);
    CREATE INDEX troupe_memory_items_by_embedder ON troupe_memory_items (embedder);
";

/// Stores one item; [`PostgresStore::insert`]'s statement.
const INSERT: &str = "INSERT INTO troupe_memory_items \
                      (kind, author, scope, run_id, seq, expert, text, data, created_ms, embedder, embedding) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11) RETURNING id";

/// The columns [`PostgresStore::read_item`] reads, in its order.
const COLUMNS: &str = "id, kind, author, scope, run_id, seq, expert, text, data::text, created_ms, last_used_ms, \
                       uses, successes, embedder, embedding";

/// A [`MemoryStore`] in a PostgreSQL database with the pgvector extension. One connection,
/// behind a mutex: each call is one or two statements, and the server orders concurrent
/// writers from other processes.
pub struct PostgresStore {
    /// `postgresql://user@host:port/database`, without the password: what messages call it.
    name: String,
    /// `None` only while dropping (see the `Drop` impl).
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing the client blocks on its own small runtime, which tokio refuses inside an
        // async task; hand it to a plain thread when dropped there.
        let client = match self.client.get_mut() {
            Ok(slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(client) = client {
            outside_runtime(move || drop(client));
        }
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgresql://user:password@host:port/database`, or
    /// libpq's `key=value` form), creating the store's tables (and the `vector` extension, if
    /// the user may) when missing. Refuses a store written by a newer troupe.
    pub fn connect(url: &str) -> Result<Self, MemoryError> {
        let mut config: Config = url.parse().map_err(|e: postgres::Error| MemoryError::Backend {
            path: PathBuf::from("postgresql://…"),
            action: "read its URL",
            reason: format!(
                "{e}; write it as postgresql://user:password@host:port/database (the password is never shown)"
            ),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let name = display_name(&config);
        let client = outside_runtime(|| config.connect(NoTls)).map_err(|e| MemoryError::Backend {
            path: PathBuf::from(&name),
            action: "connect",
            reason: format!(
                "{e}. Check that PostgreSQL is running and reachable there, and that the URL's user, password \
                 and database are right"
            ),
        })?;
        let store = PostgresStore { name, client: Mutex::new(Some(client)) };
        store.with_client("create its tables", |client| store.create(client))?;
        Ok(store)
    }

    /// `postgresql://user@host:port/database`: the server and database, without the password.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Option<Client>> {
        // A thread that panicked holding the lock left no transaction open (a dropped
        // `Transaction` rolls back), so the connection is still good.
        self.client.lock().unwrap_or_else(|poisoned| {
            self.client.clear_poison();
            poisoned.into_inner()
        })
    }

    /// Runs `f` on the connection, outside any tokio runtime (see [`outside_runtime`]).
    fn with_client<T: Send>(
        &self,
        action: &'static str,
        f: impl FnOnce(&mut Client) -> Result<T, MemoryError> + Send,
    ) -> Result<T, MemoryError> {
        let mut guard = self.lock();
        let Some(client) = guard.as_mut() else {
            return Err(self.backend(action, "the connection is closed".into()));
        };
        outside_runtime(|| f(client))
    }

    /// Runs `f` in one transaction and commits it: durable when this returns.
    fn write<T: Send>(
        &self,
        action: &'static str,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, MemoryError> + Send,
    ) -> Result<T, MemoryError> {
        self.with_client(action, |client| {
            let mut tx = client.transaction().map_err(self.err(action))?;
            let value = f(&mut tx)?;
            tx.commit().map_err(self.err(action))?;
            Ok(value)
        })
    }

    /// Turns the client's error into one that names the server and says what went wrong.
    fn err(&self, action: &'static str) -> impl Fn(postgres::Error) -> MemoryError + '_ {
        move |e| {
            let reason = match e.as_db_error() {
                Some(db) => match db.hint() {
                    Some(hint) => format!("{} ({}; hint: {hint})", db.message(), db.code().code()),
                    None => format!("{} ({})", db.message(), db.code().code()),
                },
                None if e.is_closed() => {
                    format!("{e}: the connection to the server was lost. Check that PostgreSQL is still running")
                }
                None => e.to_string(),
            };
            self.backend(action, reason)
        }
    }

    fn backend(&self, action: &'static str, reason: String) -> MemoryError {
        MemoryError::Backend { path: PathBuf::from(&self.name), action, reason }
    }

    /// A row that troupe did not write (an unknown kind, data that is not JSON…).
    fn bad_row(&self, reason: String) -> MemoryError {
        self.backend("read an item", format!("{reason}: the row was not written by troupe; fix or delete it"))
    }

    /// Creates the extension and tables if missing, all in one transaction under an advisory
    /// lock, so two processes connecting to a new database at once do not both create them.
    fn create(&self, client: &mut Client) -> Result<(), MemoryError> {
        let err = self.err("create its tables");
        let mut tx = client.transaction().map_err(&err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK]).map_err(&err)?;
        // Refuse a newer store before changing anything.
        if self.read_version(&mut tx)?.is_some() {
            return tx.commit().map_err(&err);
        }
        let has_vector =
            tx.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'vector'", &[]).map_err(&err)?.is_some();
        if !has_vector {
            tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector").map_err(|e| {
                let reason = match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => e.to_string(),
                };
                self.backend(
                    "enable the pgvector extension",
                    format!(
                        "{reason}. The store needs pgvector: install it on the server \
                         (https://github.com/pgvector/pgvector) and have a superuser run `CREATE EXTENSION vector;` \
                         in this database"
                    ),
                )
            })?;
        }
        tx.batch_execute(SCHEMA).map_err(&err)?;
        tx.execute(
            "INSERT INTO troupe_memory_meta (key, value) VALUES ('schema_version', $1)",
            &[&SCHEMA_VERSION.to_string()],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)
    }

    /// `None` if the store has no tables yet; its format version otherwise, refusing a newer one.
    fn read_version(&self, tx: &mut Transaction<'_>) -> Result<Option<i64>, MemoryError> {
        let err = self.err("read its format version");
        let exists: bool = tx
            .query_one("SELECT to_regclass('troupe_memory_meta') IS NOT NULL", &[])
            .and_then(|row| row.try_get(0))
            .map_err(&err)?;
        if !exists {
            return Ok(None);
        }
        let value: Option<String> = tx
            .query_opt("SELECT value FROM troupe_memory_meta WHERE key = 'schema_version'", &[])
            .map_err(&err)?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(&err)?;
        match value.as_deref().map(str::parse::<i64>) {
            Some(Ok(found)) if found > SCHEMA_VERSION => {
                Err(MemoryError::NewerVersion { path: PathBuf::from(&self.name), found, supported: SCHEMA_VERSION })
            }
            Some(Ok(found)) if found >= 1 => Ok(Some(found)),
            _ => Err(self.backend(
                "read its format version",
                format!(
                    "troupe_memory_meta holds no valid schema_version ({value:?}): the tables were not made by \
                     troupe; rename them or point the URL at another database"
                ),
            )),
        }
    }

    /// Refuses a vector whose length differs from the stored ones of its embedder (other than
    /// item `except`). Takes a lock on the embedder until the transaction ends, so two
    /// processes cannot store two lengths for one embedder at once.
    fn check_dims(
        &self,
        tx: &mut Transaction<'_>,
        embedder: &str,
        except: Option<ItemId>,
        got: usize,
    ) -> Result<(), MemoryError> {
        let err = self.err("read the vectors' length");
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended('troupe_memory:' || $1, 0))", &[&embedder])
            .map_err(&err)?;
        let known = self.dims_of(tx, embedder, except)?;
        match known {
            Some(expected) if expected != got => {
                Err(MemoryError::Dimensions { embedder: embedder.to_string(), expected, got })
            }
            _ => Ok(()),
        }
    }

    /// The length of the stored vectors of `embedder` (other than item `except`), if any.
    fn dims_of(
        &self,
        client: &mut impl postgres::GenericClient,
        embedder: &str,
        except: Option<ItemId>,
    ) -> Result<Option<usize>, MemoryError> {
        let row = client
            .query_opt(
                "SELECT vector_dims(embedding) FROM troupe_memory_items WHERE embedder = $1 AND id <> $2 LIMIT 1",
                &[&embedder, &except.unwrap_or(-1)],
            )
            .map_err(self.err("read the vectors' length"))?;
        let dims: Option<i32> = row.map(|r| r.try_get(0)).transpose().map_err(self.err("read the vectors' length"))?;
        Ok(dims.map(|d| usize::try_from(d).unwrap_or(0)))
    }

    /// Inserts `item` in `tx`; `dims` remembers each embedder's vector length within a batch.
    fn insert(
        &self,
        tx: &mut Transaction<'_>,
        insert: &Statement,
        item: NewItem,
        dims: &mut HashMap<String, usize>,
    ) -> Result<Item, MemoryError> {
        match dims.get(&item.embedder) {
            Some(&expected) if expected != item.embedding.len() => {
                return Err(MemoryError::Dimensions {
                    embedder: item.embedder.clone(),
                    expected,
                    got: item.embedding.len(),
                });
            }
            Some(_) => {}
            None => self.check_dims(tx, &item.embedder, None, item.embedding.len())?,
        }
        dims.insert(item.embedder.clone(), item.embedding.len());
        let (scope, seq, data) = self.columns_of(&item)?;
        let err = self.err("store an item");
        let row = tx
            .query_one(
                insert,
                &[
                    &item.kind.as_str(),
                    &item.author.as_str(),
                    &scope,
                    &item.provenance.run_id,
                    &seq,
                    &item.provenance.expert,
                    &item.text,
                    &data,
                    &item.created_ms,
                    &item.embedder,
                    &VectorParam(&item.embedding),
                ],
            )
            .map_err(&err)?;
        let id: ItemId = row.try_get(0).map_err(&err)?;
        Ok(Item::stored(id, item))
    }

    /// The scope, seq and data columns of `item`.
    fn columns_of(&self, item: &NewItem) -> Result<(Option<String>, Option<i64>, String), MemoryError> {
        let scope = match &item.scope {
            Scope::Global => None,
            Scope::Expert(name) => Some(name.clone()),
        };
        let seq = item.provenance.seq.map(i64::try_from).transpose().map_err(|_| {
            self.backend("store an item", format!("its event seq {:?} is too large for the store", item.provenance.seq))
        })?;
        let data =
            serde_json::to_string(&item.data).map_err(|e| self.backend("store an item's data", e.to_string()))?;
        Ok((scope, seq, data))
    }

    fn get_in(&self, client: &mut impl postgres::GenericClient, id: ItemId) -> Result<Option<Item>, MemoryError> {
        let row = client
            .query_opt(&format!("SELECT {COLUMNS} FROM troupe_memory_items WHERE id = $1"), &[&id])
            .map_err(self.err("read an item"))?;
        row.map(|r| self.read_item(&r)).transpose()
    }

    fn query_items(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        action: &'static str,
    ) -> Result<Vec<Item>, MemoryError> {
        let rows = self.with_client(action, |client| client.query(sql, params).map_err(self.err(action)))?;
        rows.iter().map(|r| self.read_item(r)).collect()
    }

    fn read_item(&self, row: &Row) -> Result<Item, MemoryError> {
        let err = self.err("read an item");
        let id: ItemId = row.try_get(0).map_err(&err)?;
        let bad = |what: String| self.bad_row(format!("item {id} {what}"));
        let kind: String = row.try_get(1).map_err(&err)?;
        let kind = ItemKind::parse(&kind).ok_or_else(|| bad(format!("has an unknown kind {kind:?}")))?;
        let author: String = row.try_get(2).map_err(&err)?;
        let author = Author::parse(&author).ok_or_else(|| bad(format!("has an unknown author {author:?}")))?;
        let scope: Option<String> = row.try_get(3).map_err(&err)?;
        let seq: Option<i64> = row.try_get(5).map_err(&err)?;
        let data: String = row.try_get(8).map_err(&err)?;
        let data = serde_json::from_str(&data).map_err(|e| bad(format!("has data that is not JSON ({e})")))?;
        let count = |n: i64| u64::try_from(n).map_err(|_| bad(format!("has a negative use count {n}")));
        let uses: i64 = row.try_get(11).map_err(&err)?;
        let successes: i64 = row.try_get(12).map_err(&err)?;
        let VectorValue(embedding) = row.try_get(14).map_err(&err)?;
        Ok(Item {
            id,
            kind,
            author,
            scope: scope.map_or(Scope::Global, Scope::Expert),
            provenance: Provenance {
                run_id: row.try_get(4).map_err(&err)?,
                seq: seq.and_then(|s| u64::try_from(s).ok()),
                expert: row.try_get(6).map_err(&err)?,
            },
            text: row.try_get(7).map_err(&err)?,
            data,
            created_ms: row.try_get(9).map_err(&err)?,
            last_used_ms: row.try_get(10).map_err(&err)?,
            uses: count(uses)?,
            successes: count(successes)?,
            embedding,
            embedder: row.try_get(13).map_err(&err)?,
        })
    }
}

impl MemoryStore for PostgresStore {
    fn add(&self, item: NewItem) -> Result<Item, MemoryError> {
        check_new(&item)?;
        self.write("store an item", |tx| {
            let insert = tx.prepare(INSERT).map_err(self.err("store an item"))?;
            self.insert(tx, &insert, item, &mut HashMap::new())
        })
    }

    fn add_many(&self, items: Vec<NewItem>) -> Result<Vec<Item>, MemoryError> {
        items.iter().try_for_each(check_new)?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.write("store items", |tx| {
            // Prepared once for the batch: each item is then one round trip to the server.
            let insert = tx.prepare(INSERT).map_err(self.err("store items"))?;
            let mut dims = HashMap::new();
            items.into_iter().map(|item| self.insert(tx, &insert, item, &mut dims)).collect()
        })
    }

    fn get(&self, id: ItemId) -> Result<Option<Item>, MemoryError> {
        self.with_client("read an item", |client| self.get_in(client, id))
    }

    fn update(&self, id: ItemId, text: &str, embedding: &[f32], embedder: &str) -> Result<Item, MemoryError> {
        check_text(text)?;
        check_vector(embedding, embedder)?;
        self.write("update an item", |tx| {
            self.check_dims(tx, embedder, Some(id), embedding.len())?;
            let changed = tx
                .execute(
                    "UPDATE troupe_memory_items SET text = $2, embedding = $3, embedder = $4 WHERE id = $1",
                    &[&id, &text, &VectorParam(embedding), &embedder],
                )
                .map_err(self.err("update an item"))?;
            if changed == 0 {
                return Err(MemoryError::NotFound(id));
            }
            self.get_in(tx, id)?.ok_or(MemoryError::NotFound(id))
        })
    }

    fn merge(&self, into: ItemId, duplicate: &NewItem) -> Result<Item, MemoryError> {
        check_new(duplicate)?;
        self.write("merge an item", |tx| {
            // FOR UPDATE: another process merging into the same item waits for this one.
            let row = tx
                .query_opt(&format!("SELECT {COLUMNS} FROM troupe_memory_items WHERE id = $1 FOR UPDATE"), &[&into])
                .map_err(self.err("merge an item"))?;
            let old = self.read_item(&row.ok_or(MemoryError::NotFound(into))?)?;
            let item = merged(old, duplicate);
            self.check_dims(tx, &item.embedder, Some(into), item.embedding.len())?;
            let data =
                serde_json::to_string(&item.data).map_err(|e| self.backend("store an item's data", e.to_string()))?;
            tx.execute(
                "UPDATE troupe_memory_items SET text = $2, embedding = $3, embedder = $4, last_used_ms = $5, \
                 data = $6::text::jsonb WHERE id = $1",
                &[&into, &item.text, &VectorParam(&item.embedding), &item.embedder, &item.last_used_ms, &data],
            )
            .map_err(self.err("merge an item"))?;
            Ok(item)
        })
    }

    fn delete(&self, id: ItemId) -> Result<bool, MemoryError> {
        self.write("forget an item", |tx| {
            let changed = tx
                .execute("DELETE FROM troupe_memory_items WHERE id = $1", &[&id])
                .map_err(self.err("forget an item"))?;
            Ok(changed > 0)
        })
    }

    fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<Item>, MemoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let clause = where_clause(filter, &mut params, Vec::new());
        params.push(&limit);
        let sql = format!(
            "SELECT {COLUMNS} FROM troupe_memory_items{clause} ORDER BY created_ms DESC, id DESC LIMIT ${}",
            params.len()
        );
        self.query_items(&sql, &params, "list items")
    }

    fn search(&self, query: &Query<'_>) -> Result<Vec<Hit>, MemoryError> {
        check_vector(query.vector, query.embedder)?;
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let k = i64::try_from(query.k).unwrap_or(i64::MAX);
        let vector = VectorParam(query.vector);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&vector, &query.embedder];
        let clause = where_clause(&query.filter, &mut params, vec!["embedder = $2".into()]);
        params.push(&k);
        // The scan ranks ids alone (`distance` is computed once per row, as the sort key), and
        // only the k hits' rows are read out: selecting every column for every row (the JSON
        // turned into text, the vector copied) made a search of 100,000 items a fifth slower. `min_score` is applied to the k best afterwards, which keeps exactly the
        // hits at or above it, best first.
        let sql = format!(
            "SELECT {COLUMNS}, distance FROM troupe_memory_items JOIN \
             (SELECT id AS hit, embedding <#> $1 AS distance FROM troupe_memory_items{clause} \
              ORDER BY distance, id LIMIT ${}) AS hits ON id = hit \
             ORDER BY distance, id",
            params.len()
        );
        let rows = self.with_client("search", |client| {
            // Vectors of another length would make pgvector fail with its own message.
            if let Some(expected) = self.dims_of(client, query.embedder, None)?
                && expected != query.vector.len()
            {
                return Err(MemoryError::Dimensions {
                    embedder: query.embedder.to_string(),
                    expected,
                    got: query.vector.len(),
                });
            }
            client.query(&sql, &params).map_err(self.err("search"))
        })?;
        let mut hits = Vec::with_capacity(rows.len());
        for row in &rows {
            let distance: f64 = row.try_get(COLUMN_COUNT).map_err(self.err("search"))?;
            // pgvector sums in `f32`, so the `f64` holds an `f32` exactly.
            let score = -distance as f32;
            if score < query.min_score {
                break;
            }
            hits.push(Hit { item: self.read_item(row)?, score });
        }
        Ok(hits)
    }

    fn record_use(&self, ids: &[ItemId], succeeded: bool, at_ms: i64) -> Result<usize, MemoryError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(0);
        }
        let success = i64::from(succeeded);
        self.write("record a recall", |tx| {
            let found = tx
                .execute(
                    "UPDATE troupe_memory_items SET uses = uses + 1, successes = successes + $2, \
                     last_used_ms = greatest(coalesce(last_used_ms, $3), $3) WHERE id = ANY($1)",
                    &[&ids, &success, &at_ms],
                )
                .map_err(self.err("record a recall"))?;
            Ok(usize::try_from(found).unwrap_or(usize::MAX))
        })
    }

    fn needing_reembedding(&self, embedder: &str, limit: usize) -> Result<Vec<Item>, MemoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!("SELECT {COLUMNS} FROM troupe_memory_items WHERE embedder <> $1 ORDER BY id LIMIT $2");
        self.query_items(&sql, &[&embedder, &limit], "list items to re-embed")
    }

    fn stats(&self) -> Result<Stats, MemoryError> {
        let err = self.err("count its items");
        let row = self.with_client("count its items", |client| {
            client
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE kind = 'lesson'), count(*) FILTER (WHERE kind = 'episode'), \
                     pg_total_relation_size('troupe_memory_items') + pg_total_relation_size('troupe_memory_meta') \
                     FROM troupe_memory_items",
                    &[],
                )
                .map_err(&err)
        })?;
        let count = |i: usize| -> Result<u64, MemoryError> {
            let n: i64 = row.try_get(i).map_err(&err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(Stats { items: count(0)?, lessons: count(1)?, episodes: count(2)?, bytes: count(3)? })
    }
}

/// How many columns [`COLUMNS`] lists: the index of what a query selects after them.
const COLUMN_COUNT: usize = 15;

/// ` WHERE …` for `filter` and `conditions` already made (empty for every item), pushing its
/// parameters after those in `params`.
fn where_clause<'a>(
    filter: &'a Filter,
    params: &mut Vec<&'a (dyn ToSql + Sync)>,
    mut conditions: Vec<String>,
) -> String {
    // The names as `&'static str` live as long as any borrow of them.
    static KINDS: [&str; 2] = ["lesson", "episode"];
    if let Some(kind) = filter.kind {
        params.push(match kind {
            ItemKind::Lesson => &KINDS[0],
            ItemKind::Episode => &KINDS[1],
        });
        conditions.push(format!("kind = ${}", params.len()));
    }
    if let Some(author) = &filter.author {
        params.push(author_name(*author));
        conditions.push(format!("author = ${}", params.len()));
    }
    match &filter.scope {
        ScopeFilter::Any => {}
        ScopeFilter::Global => conditions.push("scope IS NULL".into()),
        ScopeFilter::Expert(name) => {
            params.push(name);
            conditions.push(format!("scope = ${}", params.len()));
        }
        ScopeFilter::VisibleTo(name) => {
            params.push(name);
            conditions.push(format!("(scope IS NULL OR scope = ${})", params.len()));
        }
    }
    if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) }
}

/// An author's name as a `'static` parameter.
fn author_name(author: Author) -> &'static (dyn ToSql + Sync) {
    static NAMES: [&str; 5] = ["user", "agent", "reflection", "notes", "run"];
    match author {
        Author::User => &NAMES[0],
        Author::Agent => &NAMES[1],
        Author::Reflection => &NAMES[2],
        Author::Notes => &NAMES[3],
        Author::Run => &NAMES[4],
    }
}

/// `postgresql://user@host:port/database` for `config`: what messages name, never with the
/// password.
fn display_name(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) if host.contains(':') => format!("[{host}]"),
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("postgresql://{user}{host}:{port}/{db}")
}

/// Runs `f` on a plain thread when called inside a tokio runtime, else here. The sync client
/// drives each call on a runtime of its own, and tokio refuses to start one inside another
/// (troupe's async code calls the store from `spawn_blocking`, where this costs one spawn).
fn outside_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(payload) => std::panic::resume_unwind(payload),
    })
}

/// A vector as a query parameter, in pgvector's binary format: the length and a reserved zero
/// as big-endian `u16`s, then the `f32`s, big-endian. Bit for bit, so nothing is rounded.
#[derive(Debug)]
struct VectorParam<'a>(&'a [f32]);

impl ToSql for VectorParam<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let dims = u16::try_from(self.0.len())
            .map_err(|_| format!("a vector of {} dimensions; pgvector stores at most 16,000", self.0.len()))?;
        out.extend_from_slice(&dims.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        for x in self.0 {
            out.extend_from_slice(&x.to_be_bytes());
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == "vector"
    }

    to_sql_checked!();
}

/// A vector read from a `vector` column (see [`VectorParam`] for the format).
struct VectorValue(Vec<f32>);

impl<'a> FromSql<'a> for VectorValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let (head, body) = raw.split_at_checked(4).ok_or("a vector value shorter than its header")?;
        let dims = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if body.len() != dims * 4 {
            return Err(format!("a vector value of {dims} dimensions in {} bytes", body.len()).into());
        }
        Ok(VectorValue(body.chunks_exact(4).map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect()))
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == "vector"
    }
}

#[cfg(test)]
mod tests;
