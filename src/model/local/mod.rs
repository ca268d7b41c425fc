//! The `local` provider: SmolLM2-135M-Instruct running inside troupe with candle, no network.
//!
//! - [`tokenizer`]: ids identical to llama.cpp's, from the GGUF's own metadata.
//! - [`prompt`]: the GGUF's chat template, tools in the system message, replies parsed back.
//! - [`grammar`]: the constrained-decoding grammar for turns with tools (llguidance).
//! - [`engine`]: the inference thread, its fair queue and per-task KV caches.
//!
//! The file as shipped is Q4_1, for which candle has no SIMD kernel; the first load writes a
//! Q8_0 copy beside it (about 1 s, once) and every load after reads that copy: roughly twice the
//! decode speed for 40 MB more memory (see `../shared/notes/embedded-models.md`).

pub mod bench;
pub mod engine;
pub mod grammar;
pub mod prompt;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use tokio_util::sync::CancellationToken;

use self::engine::{EngineHandle, Job};
use super::{Model, ModelInfo, ModelRequest, ModelStream, Sampling};

/// The embedded model, shared by every alias that names it in one [`super::ModelTable`].
pub struct LocalModel {
    engine: std::sync::Arc<EngineHandle>,
    name: String,
    digest: Option<String>,
    defaults: Sampling,
}

impl LocalModel {
    /// A provider for `engine` with an alias's defaults.
    pub fn new(engine: std::sync::Arc<EngineHandle>, name: String, digest: Option<String>, defaults: Sampling) -> Self {
        LocalModel { engine, name, digest, defaults }
    }
}

impl Model for LocalModel {
    fn info(&self) -> ModelInfo {
        ModelInfo { provider: "local", model: self.name.clone(), digest: self.digest.clone() }
    }

    fn stream(&self, request: ModelRequest, cancel: CancellationToken) -> ModelStream {
        let (tx, stream) = ModelStream::channel();
        self.engine.submit(Job { request, defaults: self.defaults, cancel, tx });
        stream
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot convert {path} to Q8_0: {message}")]
    Convert { path: String, message: String },
    #[error(
        "this processor lacks {missing}, which troupe's build of the embedded model needs (x86-64-v3: AVX2, FMA, F16C); build troupe without the rustflags in .cargo/config.toml to run it here, more slowly"
    )]
    Cpu { missing: &'static str },
}

/// Fails clearly on a processor the build cannot run on (see `.cargo/config.toml`).
pub fn check_cpu() -> Result<(), PrepareError> {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(target_feature = "avx2") && !std::arch::is_x86_feature_detected!("avx2") {
            return Err(PrepareError::Cpu { missing: "AVX2" });
        }
        if cfg!(target_feature = "fma") && !std::arch::is_x86_feature_detected!("fma") {
            return Err(PrepareError::Cpu { missing: "FMA" });
        }
    }
    Ok(())
}

/// The Q8_0 copy of `source` (written on first use); its path.
pub fn q8_copy(source: &Path) -> Result<PathBuf, PrepareError> {
    let target = source.with_extension("q8_0.gguf");
    if target.is_file() {
        return Ok(target);
    }
    let shown = source.display().to_string();
    let fail = |message: String| PrepareError::Convert { path: shown.clone(), message };
    let mut file = std::fs::File::open(source).map_err(|e| fail(e.to_string()))?;
    let content = Content::read(&mut file).map_err(|e| fail(e.to_string()))?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(&mut file, name, &Device::Cpu).map_err(|e| fail(e.to_string()))?;
        let tensor = if tensor.dtype() == GgmlDType::Q4_1 {
            let dense = tensor.dequantize(&Device::Cpu).map_err(|e| fail(e.to_string()))?;
            QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(|e| fail(e.to_string()))?
        } else {
            tensor
        };
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // Written under a unique name and renamed, so a crash or a second process never leaves a
    // half-written copy under the final name.
    let temporary = target.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| -> Result<(), String> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&temporary).map_err(|e| e.to_string())?);
        gguf_file::write(&mut out, &metadata, &refs).map_err(|e| e.to_string())?;
        let file = out.into_inner().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&temporary, &target).map_err(|e| e.to_string())
    })();
    if let Err(message) = result {
        let _ = std::fs::remove_file(&temporary); // nothing to clean if it was never created
        return Err(fail(message));
    }
    Ok(target)
}
