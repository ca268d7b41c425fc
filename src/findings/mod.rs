//! The run folder. (Being written.)
