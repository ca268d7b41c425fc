//! The embedded model's tokenizer, built from the GGUF file's own metadata, and the token-byte
//! view of it that the constrained decoder (llguidance) needs.
//!
//! Invariant: ids equal llama.cpp's for the same text. GGUF says `tokenizer.ggml.pre = "smollm"`,
//! which generic GGUF loaders do not know: they fall back to GPT-2 settings that add a leading
//! space and split digits differently. SmolLM2's tokenizer splits every digit on its own, then
//! applies byte-level BPE without a prefix space; control tokens (`<|im_start|>`, `<|im_end|>`,
//! ...) are matched whole and never split.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};
use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// GGUF's token type for control tokens.
const CONTROL: i64 = 3;

/// A tokenizer and what the engine needs to know about its special tokens.
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    /// Token strings by id, as stored in GGUF (byte-level encoded).
    pub tokens: Vec<String>,
    /// Ids of control tokens.
    pub control: Vec<u32>,
    pub eos: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("the model file's tokenizer: {0}")]
pub struct TokenizerError(pub String);

fn metadata<'a>(content: &'a Content, key: &str) -> Result<&'a Value, TokenizerError> {
    content.metadata.get(key).ok_or_else(|| TokenizerError(format!("missing metadata `{key}`")))
}

fn strings(value: &Value, key: &str) -> Result<Vec<String>, TokenizerError> {
    let items = value.to_vec().map_err(|e| TokenizerError(format!("`{key}`: {e}")))?;
    items.iter().map(|v| v.to_string().cloned().map_err(|e| TokenizerError(format!("`{key}`: {e}")))).collect()
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::U8(v) => Some(i64::from(*v)),
        Value::I8(v) => Some(i64::from(*v)),
        Value::U16(v) => Some(i64::from(*v)),
        Value::I16(v) => Some(i64::from(*v)),
        Value::U32(v) => Some(i64::from(*v)),
        Value::I32(v) => Some(i64::from(*v)),
        Value::U64(v) => i64::try_from(*v).ok(),
        Value::I64(v) => Some(*v),
        _ => None,
    }
}

impl GgufTokenizer {
    pub fn from_gguf(content: &Content) -> Result<Self, TokenizerError> {
        let kind = metadata(content, "tokenizer.ggml.model")?.to_string().map_err(|e| TokenizerError(e.to_string()))?;
        if kind != "gpt2" {
            return Err(TokenizerError(format!("tokenizer model `{kind}` is not supported (only byte-level BPE)")));
        }
        let tokens = strings(metadata(content, "tokenizer.ggml.tokens")?, "tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> =
            strings(metadata(content, "tokenizer.ggml.merges")?, "tokenizer.ggml.merges")?
                .into_iter()
                .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
                .collect();
        let types: Vec<i64> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(value) => value
                .to_vec()
                .map_err(|e| TokenizerError(e.to_string()))?
                .iter()
                .map(|v| integer(v).unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        // One type per token: a longer list would mark ids past the vocabulary as control
        // tokens (found by fuzzing: it indexed out of `tokens` below).
        if types.len() != tokens.len() {
            return Err(TokenizerError(format!(
                "`tokenizer.ggml.token_type` has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let eos = metadata(content, "tokenizer.ggml.eos_token_id")
            .ok()
            .and_then(integer)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| TokenizerError("missing `tokenizer.ggml.eos_token_id`".into()))?;

        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| TokenizerError(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre = Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]);
        tokenizer.with_pre_tokenizer(Some(pre));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let control: Vec<u32> =
            types.iter().enumerate().filter(|(_, t)| **t == CONTROL).map(|(i, _)| i as u32).collect();
        let specials: Vec<AddedToken> =
            control.iter().map(|&id| AddedToken::from(tokens[id as usize].clone(), true)).collect();
        tokenizer.add_special_tokens(specials).map_err(|e| TokenizerError(e.to_string()))?;
        Ok(GgufTokenizer { tokenizer, tokens, control, eos })
    }

    /// Ids of `text`, control tokens matched whole, no BOS (SmolLM2 adds none).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError(format!("encoding: {e}")))
    }

    /// Text of `ids`, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer.decode(ids, true).map_err(|e| TokenizerError(format!("decoding: {e}")))
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The bytes each token stands for: byte-level characters mapped back to bytes; control
    /// tokens marked as special the way toktrie expects.
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        let table = unicode_to_byte();
        let mut words: Vec<Vec<u8>> = self
            .tokens
            .iter()
            .map(|token| {
                token
                    .chars()
                    .map(|c| table.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    // A token outside the byte-level alphabet cannot appear in text: mark it
                    // special so the grammar never produces it by accident.
                    .unwrap_or_else(|| special_bytes(token))
            })
            .collect();
        for &id in &self.control {
            if let Some(word) = words.get_mut(id as usize) {
                *word = special_bytes(&self.tokens[id as usize]);
            }
        }
        words
    }
}

fn special_bytes(token: &str) -> Vec<u8> {
    let mut bytes = vec![TokTrie::SPECIAL_TOKEN_MARKER];
    bytes.extend_from_slice(token.as_bytes());
    bytes
}

/// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for the
/// characters from U+0100 on, in order. Inverted here: character → byte.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut next = 0u32;
    for byte in 0u8..=255 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(byte)
        } else {
            let c = char::from_u32(256 + next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
        map.insert(c, byte);
    }
    map
}

/// The tokenizer as llguidance sees it.
pub struct TokEnvironment {
    trie: TokTrie,
    tokenizer: Arc<GgufTokenizer>,
}

impl TokEnvironment {
    pub fn new(tokenizer: Arc<GgufTokenizer>) -> Self {
        let words = tokenizer.token_bytes();
        let mut info = TokRxInfo::new(words.len() as u32, tokenizer.eos);
        info.tok_end_of_turn = Some(tokenizer.eos);
        TokEnvironment { trie: TokTrie::from(&info, &words), tokenizer }
    }
}

impl TokenizerEnv for TokEnvironment {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let text = String::from_utf8_lossy(s);
        match self.tokenizer.tokenizer.encode(text.as_ref(), false) {
            Ok(encoding) => encoding.get_ids().to_vec(),
            // llguidance re-tokenizes only text it produced itself, which always encodes; fall
            // back to the trie's greedy tokenization rather than lose the bytes.
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::VersionedMagic;

    use super::*;

    fn list(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String((*s).to_owned())).collect())
    }

    /// The metadata of a four-token vocabulary, with `types` as its token types.
    fn content(types: Vec<i32>) -> Content {
        let metadata: HashMap<String, Value> = [
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", list(&["<|im_end|>", "a", "b", "ab"])),
            ("tokenizer.ggml.merges", list(&["a b"])),
            ("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect())),
            ("tokenizer.ggml.eos_token_id", Value::U32(0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Content { magic: VersionedMagic::GgufV3, metadata, tensor_infos: HashMap::new(), tensor_data_offset: 0 }
    }

    #[test]
    fn a_vocabulary_with_one_type_per_token_is_read() {
        let tokenizer = GgufTokenizer::from_gguf(&content(vec![3, 1, 1, 1])).unwrap();
        assert_eq!(tokenizer.control, vec![0]);
        assert_eq!(tokenizer.encode("ab<|im_end|>").unwrap(), vec![3, 0]);
    }

    #[test]
    fn token_types_that_do_not_match_the_tokens_are_refused() {
        // A control type past the last token used to index out of the vocabulary (a panic).
        for types in [vec![3, 1, 1, 1, 3], vec![3, 1, 1]] {
            let err = GgufTokenizer::from_gguf(&content(types.clone())).err().unwrap();
            assert_eq!(
                err.to_string(),
                format!(
                    "the model file's tokenizer: `tokenizer.ggml.token_type` has {} entries for 4 tokens",
                    types.len()
                )
            );
        }
    }
}
