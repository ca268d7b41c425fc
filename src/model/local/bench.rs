//! `troupe models bench`: how fast the embedded model runs here, measured the way the engine
//! runs it (prefill in chunks, then one token a step), so the figures are what agents get.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::engine::load;

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub load_seconds: f64,
    pub prompt_tokens: usize,
    pub prefill_tokens_per_second: f64,
    /// Prefill of the prompt plus the first sampled token.
    pub first_token_seconds: f64,
    /// From nothing loaded to the first token of a short question (42 tokens, the files
    /// already in the cache): what a user waits for on a first request.
    pub cold_first_token_seconds: f64,
    pub decode_tokens: usize,
    pub decode_tokens_per_second: f64,
    pub peak_rss_mib: u64,
}

const PARAGRAPH: &str = "Octopuses have three hearts and blue blood. Two hearts pump blood through the gills, \
while the third pumps it through the rest of the body. Most of their neurons are in their arms, which can \
taste what they touch. They are masters of camouflage and can change colour in a fraction of a second. ";

/// Loads `gguf`, reads a prompt of about `prompt_tokens` tokens and decodes `decode_tokens`.
pub fn run(gguf: &Path, prompt_tokens: usize, decode_tokens: usize) -> Result<BenchReport, String> {
    let started = Instant::now();
    let loaded = load(gguf).map_err(|e| e.to_string())?;
    let load_seconds = started.elapsed().as_secs_f64();
    let mut weights = loaded.weights.clone();

    let mut text = String::from("<|im_start|>system\nYou are a careful researcher.<|im_end|>\n<|im_start|>user\n");
    let mut ids = Vec::new();
    while ids.len() < prompt_tokens {
        text.push_str(PARAGRAPH);
        ids = loaded.tokenizer.encode(&text).map_err(|e| e.to_string())?;
    }
    ids.truncate(prompt_tokens);

    let forward = |weights: &mut candle_transformers::models::quantized_llama::ModelWeights,
                   chunk: &[u32],
                   position: usize|
     -> Result<Tensor, String> {
        let input = Tensor::new(chunk, &Device::Cpu).and_then(|t| t.unsqueeze(0)).map_err(|e| e.to_string())?;
        weights.forward(&input, position).and_then(|l| l.squeeze(0)).map_err(|e| e.to_string())
    };
    let argmax = |logits: &Tensor| -> Result<u32, String> {
        logits.argmax(0).and_then(|t| t.to_scalar::<u32>()).map_err(|e| e.to_string())
    };

    let short = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one word.<|im_end|>\n<|im_start|>assistant\n";
    let short_ids = loaded.tokenizer.encode(short).map_err(|e| e.to_string())?;
    let mut fresh = loaded.weights;
    argmax(&forward(&mut fresh, &short_ids, 0)?)?;
    let cold_first_token_seconds = started.elapsed().as_secs_f64();
    drop(fresh);

    let prefill_started = Instant::now();
    let mut position = 0;
    let mut logits = None;
    for chunk in ids.chunks(128) {
        logits = Some(forward(&mut weights, chunk, position)?);
        position += chunk.len();
    }
    let prefill_seconds = prefill_started.elapsed().as_secs_f64();
    let logits = logits.ok_or("empty prompt")?;
    let mut token = argmax(&logits)?;
    let first_token_seconds = prefill_started.elapsed().as_secs_f64();

    let decode_started = Instant::now();
    for _ in 0..decode_tokens {
        let logits = forward(&mut weights, &[token], position)?;
        position += 1;
        token = argmax(&logits)?;
    }
    let decode_seconds = decode_started.elapsed().as_secs_f64();

    Ok(BenchReport {
        load_seconds,
        prompt_tokens: ids.len(),
        prefill_tokens_per_second: ids.len() as f64 / prefill_seconds,
        first_token_seconds,
        cold_first_token_seconds,
        decode_tokens,
        decode_tokens_per_second: decode_tokens as f64 / decode_seconds,
        peak_rss_mib: peak_rss_kib() / 1024,
    })
}

/// The process's peak resident set (Linux `VmHWM`), in KiB; 0 where unknown.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}
