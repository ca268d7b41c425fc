//! Memory that learns across sessions (issue 8); for now the embedder.
//!
//! - [`embedder`]: all-MiniLM-L6-v2 in-process with candle: texts to unit vectors for similarity
//!   search, and the digest a store records to notice a change of embedder.

pub mod embedder;
