//! TOML colours for the agent editor, painted over the cells the text area drew: the text
//! area has no syntax highlighting of its own, and re-styling what is visible costs a few
//! hundred cells a frame. Lines with diagnostics get a red line number.
//!
//! Invariant: changes only the style of cells inside the editor's area, never their text.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui_textarea::TextArea;
use unicode_width::UnicodeWidthChar;

/// What a run of characters is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    Key,
    Header,
    Str,
    Number,
    Bool,
    Comment,
    Plain,
}

impl Token {
    fn style(self) -> Option<Style> {
        match self {
            Token::Key => Some(Style::new().fg(Color::Cyan)),
            Token::Header => Some(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
            Token::Str => Some(Style::new().fg(Color::Green)),
            Token::Number | Token::Bool => Some(Style::new().fg(Color::Magenta)),
            Token::Comment => Some(Style::new().fg(Color::DarkGray)),
            Token::Plain => None,
        }
    }
}

/// The token of every char of `line`. `in_multiline` says whether the line starts inside a
/// `"""` string; the returned flag says whether the next one does.
pub fn tokens(line: &str, in_multiline: bool) -> (Vec<Token>, bool) {
    let chars: Vec<char> = line.chars().collect();
    let mut out = vec![Token::Plain; chars.len()];
    let mut i = 0;
    let mut in_ml = in_multiline;
    let triple = |at: usize| chars.get(at..at + 3).is_some_and(|s| s == ['"', '"', '"'] || s == ['\'', '\'', '\'']);
    if in_ml {
        while i < chars.len() {
            if triple(i) {
                out[i..i + 3].fill(Token::Str);
                i += 3;
                in_ml = false;
                break;
            }
            out[i] = Token::Str;
            i += 1;
        }
        if in_ml {
            return (out, true);
        }
    }
    let first = chars.iter().position(|c| !c.is_whitespace());
    if i == 0 && first.is_some_and(|f| chars[f] == '[') {
        let end = chars.iter().position(|&c| c == '#').unwrap_or(chars.len());
        out[..end].fill(Token::Header);
        out[end..].fill(Token::Comment);
        return (out, false);
    }
    let mut seen_eq = i > 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            out[i..].fill(Token::Comment);
            break;
        }
        if triple(i) {
            let start = i;
            i += 3;
            let mut closed = false;
            while i < chars.len() {
                if triple(i) {
                    i += 3;
                    closed = true;
                    break;
                }
                i += 1;
            }
            out[start..i].fill(Token::Str);
            in_ml = !closed;
            continue;
        }
        if c == '"' || c == '\'' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if c == '"' && chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(chars.len());
            out[start..i].fill(if seen_eq { Token::Str } else { Token::Key });
            continue;
        }
        if c == '=' {
            seen_eq = true;
        } else if !seen_eq && !c.is_whitespace() {
            out[i] = Token::Key;
        } else if seen_eq && (c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_' | '-' | '+')) {
                i += 1;
            }
            out[start..i].fill(Token::Number);
            continue;
        } else if seen_eq
            && (chars[i..].starts_with(&['t', 'r', 'u', 'e']) || chars[i..].starts_with(&['f', 'a', 'l', 's', 'e']))
        {
            let len = if c == 't' { 4 } else { 5 };
            out[i..i + len].fill(Token::Bool);
            i += len;
            continue;
        }
        i += 1;
    }
    (out, in_ml)
}

/// Paints TOML colours over `editor` as drawn in `area`, and marks `error_lines` (1-based).
pub fn toml_over(buf: &mut Buffer, area: Rect, editor: &TextArea<'_>, error_lines: &[usize]) {
    let (top, left) = editor.scroll_offset();
    let (top, left) = (top as usize, left as usize);
    let gutter = editor.line_number_width();
    let lines = editor.lines();
    let mut in_ml = false;
    // Multi-line strings can open above the viewport: scan from the start (cheap for a config).
    for line in lines.iter().take(top) {
        in_ml = tokens(line, in_ml).1;
    }
    for (row, line) in lines.iter().enumerate().skip(top).take(area.height as usize) {
        let (styles, next) = tokens(line, in_ml);
        in_ml = next;
        let y = area.y + (row - top) as u16;
        if error_lines.contains(&(row + 1)) {
            for x in area.x..(area.x + gutter).min(area.right()) {
                if let Some(cell) = buf.cell_mut((x, y)) {
                    cell.set_style(Style::new().fg(Color::White).bg(Color::Red));
                }
            }
        }
        let mut col = 0usize;
        for (c, token) in line.chars().zip(styles) {
            let width = if c == '\t' { editor.tab_length() as usize } else { c.width().unwrap_or(0) };
            if col >= left {
                let x = area.x as usize + gutter as usize + col - left;
                if x >= area.right() as usize {
                    break;
                }
                if let (Some(style), Some(cell)) = (token.style(), buf.cell_mut((x as u16, y))) {
                    cell.set_fg(style.fg.unwrap_or(Color::Reset));
                    if style.add_modifier.contains(Modifier::BOLD) {
                        cell.modifier.insert(Modifier::BOLD);
                    }
                }
            }
            col += width;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn kinds(line: &str, in_ml: bool) -> (String, bool) {
        let (tokens, next) = tokens(line, in_ml);
        let text = tokens
            .iter()
            .map(|t| match t {
                Token::Key => 'k',
                Token::Header => 'h',
                Token::Str => 's',
                Token::Number => 'n',
                Token::Bool => 'b',
                Token::Comment => 'c',
                Token::Plain => '.',
            })
            .collect();
        (text, next)
    }

    #[test]
    fn keys_values_headers_and_comments() {
        assert_eq!(kinds(r#"name = "host" # hi"#, false), ("kkkk...ssssss.cccc".into(), false));
        assert_eq!(kinds("max_turns = 5", false), ("kkkkkkkkk...n".into(), false));
        assert_eq!(kinds("on = true", false), ("kk...bbbb".into(), false));
        assert_eq!(kinds("[limits] # x", false), ("hhhhhhhhhccc".into(), false));
        assert_eq!(kinds(r#"system_prompt = """"#, false), ("kkkkkkkkkkkkk...sss".into(), true));
        assert_eq!(kinds(r#"You are "#, true), ("ssssssss".into(), true));
        assert_eq!(kinds(r#"end.""" # c"#, true), ("sssssss.ccc".into(), false));
    }
}
