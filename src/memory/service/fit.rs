//! Fitting a text to the embedder's window, and the embedder behind the service.
//!
//! MiniLM reads at most 256 tokens (its `sentence_bert_config.json`); [`Embedder::embed`] drops
//! the rest without a word. A memory item whose text runs past that would be found only by its
//! beginning while showing its end, so the service cuts such a text where the embedder stops
//! reading (at a word boundary) and says so with a [`Truncation`].

use std::fmt;
use std::fs;
use std::path::Path;

use tokenizers::Tokenizer;

use crate::memory::embedder::{EmbedError, Embedder, EmbedderFiles};

/// Bytes of a text that are tokenized to find where the window ends. 256 tokens of ordinary text
/// are a few kilobytes; the cap keeps a pasted megabyte from being tokenized whole. A text whose
/// first 64 KiB hold fewer than 256 tokens (mostly white space) is cut at 64 KiB.
pub const SCAN_LIMIT: usize = 64 * 1024;

/// What the embedder behind a [`super::Memory`] must do: MiniLM in troupe, a small stand-in in
/// tests that must not load a model.
pub trait TextEmbedder: Send + Sync {
    /// `sha256:…` of the model: vectors of different digests are never compared.
    fn digest(&self) -> &str;

    /// `text` as the embedder reads it whole: itself when it fits the window, else its longest
    /// start (cut at a word boundary, trailing white space removed) that does.
    fn fit(&self, text: &str) -> Result<Fitted, EmbedError>;

    /// One unit-length vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// A text was cut to the embedder's window.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Truncation {
    /// The window, in tokens (the model's special tokens included).
    pub window_tokens: usize,
    pub kept_chars: usize,
    pub original_chars: usize,
}

impl fmt::Display for Truncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the text is longer than the embedder reads ({} tokens): kept its first {} of {} characters",
            self.window_tokens, self.kept_chars, self.original_chars
        )
    }
}

/// A text ready to embed, and whether it had to be cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fitted {
    pub text: String,
    pub truncated: Option<Truncation>,
}

/// One token of a tokenized text: where it starts in the text (a byte offset), whether the
/// tokenizer added it (`[CLS]`, `[SEP]`), and whether it continues the previous token's word
/// (`##ing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub start: usize,
    pub special: bool,
    pub continues_word: bool,
}

/// The byte offset at which a text tokenized into `pieces` must be cut so that at most `window`
/// tokens (special ones included) remain; `None` when it fits already. The cut falls before the
/// word of the first token that does not fit, so no word is split into a different token; a
/// single word longer than the window is cut inside it rather than dropped whole.
pub(crate) fn cut_at(pieces: &[Piece], window: usize) -> Option<usize> {
    let special = pieces.iter().filter(|p| p.special).count();
    let words: Vec<&Piece> = pieces.iter().filter(|p| !p.special).collect();
    let keep = window.saturating_sub(special).max(1);
    let first_dropped = *words.get(keep)?;
    let mut start = keep;
    while start > 0 && words[start].continues_word {
        start -= 1;
    }
    Some(if start == 0 { first_dropped.start } else { words[start].start })
}

/// `text` cut as `cut_at` says for its first [`SCAN_LIMIT`] bytes, `scanned`, tokenized into
/// `pieces`.
pub(crate) fn fitted(text: &str, scanned: &str, pieces: &[Piece], window: usize) -> Fitted {
    let kept = match cut_at(pieces, window) {
        Some(cut) => &scanned[..floor_char_boundary(scanned, cut)],
        None if scanned.len() == text.len() => return Fitted { text: text.to_string(), truncated: None },
        None => scanned,
    };
    let kept = kept.trim_end();
    let truncated =
        Truncation { window_tokens: window, kept_chars: kept.chars().count(), original_chars: text.chars().count() };
    Fitted { text: kept.to_string(), truncated: Some(truncated) }
}

/// The first `limit` bytes of `text`, shortened to a character boundary.
pub(crate) fn prefix(text: &str, limit: usize) -> &str {
    &text[..floor_char_boundary(text, limit)]
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// all-MiniLM-L6-v2 with a tokenizer of its own that does not truncate, to see where the
/// embedder's window ends in a text.
pub struct MiniLm {
    embedder: Embedder,
    tokenizer: Tokenizer,
    window: usize,
}

impl fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniLm").field("embedder", &self.embedder).field("window", &self.window).finish()
    }
}

/// The parts of the model's configuration files that set its window.
#[derive(serde::Deserialize)]
struct SentenceConfig {
    max_seq_length: usize,
}

#[derive(serde::Deserialize)]
struct BertConfig {
    max_position_embeddings: usize,
}

impl MiniLm {
    /// Loads the model and its tokenizer from `files`.
    pub fn load(files: &EmbedderFiles) -> Result<MiniLm, EmbedError> {
        let embedder = Embedder::load(files)?;
        // The same window `Embedder::load` gives its tokenizer: what sentence-transformers
        // reads, never past what the position embeddings allow.
        let sentence: SentenceConfig =
            read_json(&files.dir.join("sentence_bert_config.json"), "sentence-transformers config")?;
        let bert: BertConfig = read_json(&files.dir.join("config.json"), "BERT config")?;
        let window = sentence.max_seq_length.min(bert.max_position_embeddings);
        let path = files.dir.join("tokenizer.json");
        let tokenizer_error =
            |e: tokenizers::Error| EmbedError::Tokenizer { path: path.clone(), reason: e.to_string() };
        let mut tokenizer = Tokenizer::from_file(&path).map_err(tokenizer_error)?;
        tokenizer.with_truncation(None).map_err(tokenizer_error)?;
        tokenizer.with_padding(None);
        Ok(MiniLm { embedder, tokenizer, window })
    }

    /// The window, in tokens.
    pub fn window(&self) -> usize {
        self.window
    }
}

impl TextEmbedder for MiniLm {
    fn digest(&self) -> &str {
        self.embedder.digest()
    }

    fn fit(&self, text: &str) -> Result<Fitted, EmbedError> {
        let scanned = prefix(text, SCAN_LIMIT);
        let encoding = self.tokenizer.encode(scanned, true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let pieces: Vec<Piece> = encoding
            .get_offsets()
            .iter()
            .zip(encoding.get_special_tokens_mask())
            .zip(encoding.get_tokens())
            .map(|((&(start, _), &special), token)| Piece {
                start,
                special: special != 0,
                continues_word: token.starts_with("##"),
            })
            .collect();
        Ok(fitted(text, scanned, &pieces, self.window))
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embedder.embed(texts)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, EmbedError> {
    let text = fs::read_to_string(path).map_err(|source| EmbedError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| EmbedError::Config { path: path.to_path_buf(), what, source })
}
