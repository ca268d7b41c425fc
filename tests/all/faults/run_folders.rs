//! Fault cases: see `faults/mod.rs`.
