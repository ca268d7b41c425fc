//! The runtime. (Being written.)
