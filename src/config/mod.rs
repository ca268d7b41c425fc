//! Loading and validating the workbench's files. (Being written.)

pub mod types;
pub use types::*;
