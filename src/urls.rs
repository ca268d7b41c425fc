//! Credentials written into URLs (`https://user:pass@host/v1`, a `base_url` or an MCP server's
//! `url`), hidden wherever such a URL can reach a message: errors, logs, the run folder.
//!
//! Owns [`redact_url_credentials`]. It sits at the bottom of the layers, beside `protocol`, so
//! that `model/`, `mcp/` and `config/` (which must not import `findings/`) apply it to their
//! own messages, and `findings::Redactor` applies it to everything a run folder receives.
//!
//! Invariant: pure, and works on free text rather than on a parsed URL: a library's error
//! message quotes the URL inside a sentence, and that sentence is what would leak.

use std::borrow::Cow;

/// What a URL's user information (`user:pass`) is replaced by.
pub const HIDDEN_CREDENTIALS: &str = "***";

/// `text` with the user information of every `scheme://user:pass@host` in it replaced by
/// [`HIDDEN_CREDENTIALS`] (`scheme://***@host`); borrowed when there was none, which is almost
/// always. A user name alone is hidden too: a token is often passed that way.
pub fn redact_url_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    // `copied`: how much of `text` is already in `out`; `from`: where the next search starts.
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let authority_start = from + found + 3;
        let rest = &text[authority_start..];
        // The authority ends where a path, query or fragment starts, or where the URL's
        // sentence goes on (a space, a quote, a closing bracket of the surrounding text).
        let authority_len = rest.find(ends_authority).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        // The last `@`: a password written with a raw `@` in it is still all hidden.
        if let Some(at) = authority.rfind('@').filter(|&at| at > 0) {
            out.push_str(&text[copied..authority_start]);
            out.push_str(HIDDEN_CREDENTIALS);
            copied = authority_start + at;
        }
        from = authority_start + authority_len;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '{' | '}' | '\\') || c.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn credentials_in_urls_are_hidden_wherever_the_url_stands() {
        let table: &[(&str, &str)] = &[
            ("https://user:pass@api.example.com/v1", "https://***@api.example.com/v1"),
            ("http://user:pass@127.0.0.1:8080", "http://***@127.0.0.1:8080"),
            ("http://token@host/mcp", "http://***@host/mcp"),
            // reqwest's own wording, with the URL in brackets.
            (
                "error sending request for url (http://bob:s3cret@host:1/v1/chat/completions)",
                "error sending request for url (http://***@host:1/v1/chat/completions)",
            ),
            ("cannot reach openai at http://u:p@h/v1: refused", "cannot reach openai at http://***@h/v1: refused"),
            ("`http://u:p@h`", "`http://***@h`"),
            ("\"https://u:p@h?x=1\"", "\"https://***@h?x=1\""),
            // A raw `@` in the password: everything before the host's `@` is hidden.
            ("http://u:p@ss@h/x", "http://***@h/x"),
            // Two URLs in one message.
            ("http://a:b@one/ then https://c:d@two/", "http://***@one/ then https://***@two/"),
            ("postgresql://alice:pw@db:5432/team", "postgresql://***@db:5432/team"),
            // IPv6 hosts keep their brackets.
            ("http://u:p@[::1]:8080/v1", "http://***@[::1]:8080/v1"),
            // Unicode around a URL is kept whole.
            ("→ http://ü:p@h/ ←", "→ http://***@h/ ←"),
        ];
        for (text, expected) in table {
            assert_eq!(redact_url_credentials(text), *expected, "{text}");
        }
    }

    #[test]
    fn text_without_credentials_is_borrowed_unchanged() {
        for text in [
            "",
            "no url here",
            "https://api.openai.com/v1",
            "http://127.0.0.1:8080/v1/chat?user=a@b",
            "http://host/path/with@at",
            "mail me at someone@example.com, or see http://host/",
            "http://@host/",
            "a broken :// and then @",
        ] {
            assert!(matches!(redact_url_credentials(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }
}
