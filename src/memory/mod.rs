//! Memory that learns across sessions (lessons and episodes recalled into later runs): the embedder and the store of lessons and
//! episodes it feeds.
//!
//! - [`embedder`]: all-MiniLM-L6-v2 in-process with candle: texts to unit vectors for similarity
//!   search, and the digest a store records to notice a change of embedder.
//! - [`store`]: items (lessons, episodes), filters and queries, the [`store::MemoryStore`] trait
//!   every backend implements, and the rules they share (input checks, near-duplicate merge).
//! - [`sqlite`]: the default store, one SQLite file per workbench (`.troupe/memory.sqlite`).
//! - [`postgres`]: a store in PostgreSQL with pgvector (`backend = "postgres"`), shared by a
//!   team's workbenches; exact search in the server. Its `server` starts a throwaway local
//!   PostgreSQL for its tests and bench.
//! - [`rank`]: the order a run recalls lessons in: similarity, with past usefulness and recency
//!   breaking near-ties; shared by every backend.
//! - [`search`]: exact top-k by dot product over an in-memory matrix of vectors.
//! - `vectors`: the in-memory copy of a store's vectors and filter fields that search scans.
//! - [`service`]: the memory as a person uses it (`troupe memory …`): a store plus a lazily
//!   loaded embedder; add with truncation and near-duplicate merge, search, edit, forget,
//!   export and import as JSON lines, re-embedding after a change of embedder.
//! - [`recall`]: the memory as a run uses it (the runtime's `RunMemory`): lessons recalled for
//!   each agent's task, `remember` from a run, frozen memory that never writes.

pub mod embedder;
pub mod postgres;
pub mod rank;
pub mod recall;
pub mod search;
pub mod service;
pub mod sqlite;
pub mod store;
#[cfg(test)]
mod suite;
mod vectors;
