//! Experiments: matrices of trials (tasks × variants × repetitions), each variant compared with
//! a baseline on paired trials. For now this holds only [`stats`], the statistics their reports
//! use; running the matrix and writing the report come later.

pub mod stats;
