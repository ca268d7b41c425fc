//! Front ends other than the TUI. (Being written.)
