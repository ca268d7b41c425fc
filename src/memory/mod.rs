//! Memory that learns across sessions (issue 8): the embedder and the store of lessons and
//! episodes it feeds.
//!
//! - [`embedder`]: all-MiniLM-L6-v2 in-process with candle: texts to unit vectors for similarity
//!   search, and the digest a store records to notice a change of embedder.
//! - [`store`]: items (lessons, episodes), filters and queries, the [`store::MemoryStore`] trait
//!   every backend implements, and the rules they share (input checks, near-duplicate merge).
//! - [`sqlite`]: the default store, one SQLite file per workbench (`.troupe/memory.sqlite`).
//! - [`search`]: exact top-k by dot product over an in-memory matrix of vectors.
//! - `vectors`: the in-memory copy of a store's vectors and filter fields that search scans.

pub mod embedder;
pub mod search;
pub mod sqlite;
pub mod store;
#[cfg(test)]
mod suite;
mod vectors;
