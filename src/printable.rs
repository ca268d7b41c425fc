//! Text from outside (a model's answer, a server's error, a run folder's fields) made safe to
//! print on the user's terminal: C0 and C1 control characters are removed, so nothing a model
//! writes can move the cursor, retitle the window, rewrite the clipboard or hide what follows.
//! Newlines and tabs stay; so does everything printable, whatever its script.
//!
//! Invariant: pure; the only gate between outside text and the CLI's stdout and stderr (the
//! workbench draws through ratatui, whose buffer already drops control characters).

use std::borrow::Cow;

/// `text` without control characters other than `\n` and `\t`.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().filter(|&c| !is_unsafe(c)).collect())
}

/// C0 (including ESC and CR, which can overwrite a line already shown), DEL and C1 (8-bit
/// CSI, OSC and the like), but not the two a printed line needs.
fn is_unsafe(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_removed_and_text_is_kept() {
        let table = [
            ("plain text", "plain text"),
            ("two\nlines\tand a tab", "two\nlines\tand a tab"),
            ("\u{1b}[2J\u{1b}[Hcleared", "[2J[Hcleared"),
            ("\u{1b}]52;c;aGVsbG8=\u{7}clipboard", "]52;c;aGVsbG8=clipboard"),
            ("\u{9b}31mred", "31mred"),
            ("over\rwritten", "overwritten"),
            ("bell\u{7} and del\u{7f}", "bell and del"),
            ("naïve — 日本語 ✓", "naïve — 日本語 ✓"),
        ];
        for (input, expected) in table {
            assert_eq!(printable(input), expected, "{input:?}");
        }
    }

    #[test]
    fn clean_text_is_not_copied() {
        assert!(matches!(printable("nothing to remove\n"), Cow::Borrowed(_)));
    }
}
