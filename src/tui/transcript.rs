//! A task's conversation as wrapped lines for the transcript pane: roles labelled, tool calls
//! and results marked, the text still streaming shown last.
//!
//! Invariant: pure, and independent of ratatui: a line carries a [`LineKind`], the drawing
//! picks the colours.

use unicode_width::UnicodeWidthChar;

use crate::protocol::Role;

use super::tree::{Entry, TaskNode};

/// What a line is, for its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Label,
    System,
    User,
    Assistant,
    ToolCall,
    ToolResult,
    ToolError,
    Note,
    Error,
    Streaming,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    pub text: String,
}

/// The longest a tool result, system prompt or streaming tail is shown; the findings keep all.
const MAX_BLOCK_CHARS: usize = 4_000;

fn block(kind: LineKind, label: &str, text: &str, width: usize, out: &mut Vec<Line>) {
    out.push(Line { kind: LineKind::Label, text: label.to_owned() });
    for paragraph in text.lines() {
        wrap_into(paragraph, width, kind, out);
    }
}

/// The text still streaming, wrapped: only its tail when long, since the newest tokens are
/// what a person watches. Kept apart from [`entry_lines`] so a delta re-wraps only this.
pub fn streaming_lines(node: &TaskNode, width: usize) -> Vec<Line> {
    let mut out = Vec::new();
    if !node.streaming.is_empty() {
        let text = &node.streaming;
        let skip = text.chars().count().saturating_sub(MAX_BLOCK_CHARS);
        let tail = match text.char_indices().nth(skip) {
            Some((at, _)) if skip > 0 => format!("({skip} chars above)… {}▌", &text[at..]),
            _ => format!("{text}▌"),
        };
        block(LineKind::Streaming, "── assistant (streaming)", &tail, width.max(8), &mut out);
    }
    out
}

/// `node`'s finished entries wrapped to `width` columns.
pub fn entry_lines(node: &TaskNode, width: usize) -> Vec<Line> {
    let width = width.max(8);
    let mut out = Vec::new();
    for entry in &node.entries {
        match entry {
            Entry::Message { role, content } => {
                let (kind, label) = match role {
                    Role::System => (LineKind::System, "── system"),
                    Role::User => (LineKind::User, "── user"),
                    Role::Assistant => (LineKind::Assistant, "── assistant"),
                    Role::Tool => (LineKind::ToolResult, "── tool"),
                };
                if content.trim().is_empty() {
                    continue;
                }
                // Answers are shown whole; a system prompt is context, cut when long.
                let text = if *role == Role::System { clip(content, MAX_BLOCK_CHARS) } else { content.into() };
                block(kind, label, &text, width, &mut out);
            }
            Entry::ToolCall { tool, arguments } => {
                wrap_into(&format!("→ {tool} {arguments}"), width, LineKind::ToolCall, &mut out);
            }
            Entry::ToolResult { tool, result, is_error } => {
                let kind = if *is_error { LineKind::ToolError } else { LineKind::ToolResult };
                for part in format!("← {tool}: {}", clip(result, MAX_BLOCK_CHARS)).lines() {
                    wrap_into(part, width, kind, &mut out);
                }
            }
            Entry::Note { text, is_error } => {
                let kind = if *is_error { LineKind::Error } else { LineKind::Note };
                for part in format!("• {text}").lines() {
                    wrap_into(part, width, kind, &mut out);
                }
            }
        }
    }
    out
}

fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((cut, _)) => {
            format!("{}… ({} more chars in the findings)", &text[..cut], text[cut..].chars().count()).into()
        }
        None => text.into(),
    }
}

/// Greedy word wrap by display width; words longer than a line are split.
fn wrap_into(text: &str, width: usize, kind: LineKind, out: &mut Vec<Line>) {
    let mut line = String::new();
    let mut used = 0;
    let flush = |line: &mut String, used: &mut usize, out: &mut Vec<Line>| {
        out.push(Line { kind, text: std::mem::take(line) });
        *used = 0;
    };
    for word in text.split(' ') {
        let word_width: usize = word.chars().map(|c| c.width().unwrap_or(0)).sum();
        let gap = usize::from(used > 0);
        if used + gap + word_width <= width {
            if gap == 1 {
                line.push(' ');
            }
            line.push_str(word);
            used += gap + word_width;
            continue;
        }
        if used > 0 {
            flush(&mut line, &mut used, out);
        }
        for c in word.chars() {
            let w = c.width().unwrap_or(0);
            if used + w > width {
                flush(&mut line, &mut used, out);
            }
            line.push(c);
            used += w;
        }
    }
    flush(&mut line, &mut used, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn texts(text: &str, width: usize) -> Vec<String> {
        let mut out = Vec::new();
        wrap_into(text, width, LineKind::User, &mut out);
        out.into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn wraps_by_words_and_splits_long_ones() {
        assert_eq!(texts("the quick brown fox", 9), vec!["the quick", "brown fox"]);
        assert_eq!(texts("abcdefghijkl", 5), vec!["abcde", "fghij", "kl"]);
        assert_eq!(texts("", 5), vec![""]);
        assert_eq!(texts("🐙🐙🐙", 4), vec!["🐙🐙", "🐙"], "wide characters count twice");
    }
}
