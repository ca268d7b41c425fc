//! The `local` provider: SmolLM2-135M-Instruct running inside troupe with candle, no network.
//!
//! - [`tokenizer`]: ids identical to llama.cpp's, from the GGUF's own metadata.
//! - [`prompt`]: the GGUF's chat template, tools in the system message, replies parsed back.
//! - [`grammar`]: the constrained-decoding grammar for turns with tools (llguidance).
//! - [`engine`]: the inference thread, its fair queue and per-task KV caches.
//! - [`gguf_guard`]: a bounded first read of a GGUF file, before every `Content::read`.
//!
//! The file as shipped is Q4_1, for which candle has no SIMD kernel; the first load writes a
//! Q8_0 copy beside it (about 1 s, once) and every load after reads that copy: roughly twice the
//! decode speed for 40 MB more memory (see `../shared/notes/embedded-models.md`).

pub mod bench;
pub mod engine;
pub mod gguf_guard;
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
    #[error("{path}: not a GGUF file troupe can read: {source}; run `troupe models fetch --force` to fetch it again")]
    Gguf {
        path: String,
        #[source]
        source: gguf_guard::GgufError,
    },
    #[error(
        "this processor lacks {missing}, which this build of troupe uses (it is compiled for x86-64-v3); build troupe without the rustflags in .cargo/config.toml to run it here, more slowly"
    )]
    Cpu { missing: &'static str },
}

/// Fails clearly on a processor the build cannot run on (see `.cargo/config.toml`): every
/// feature the build was compiled to use must be there.
pub fn check_cpu() -> Result<(), PrepareError> {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! require {
            ($($feature:tt),*) => {$(
                if cfg!(target_feature = $feature) && !std::arch::is_x86_feature_detected!($feature) {
                    return Err(PrepareError::Cpu { missing: $feature });
                }
            )*};
        }
        require!("avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "lzcnt", "movbe");
    }
    Ok(())
}

/// Where the Q8_0 copy of `source` (of sha256 `digest`) lives.
pub fn q8_path(source: &Path, digest: &str) -> PathBuf {
    let short: String = digest.chars().filter(char::is_ascii_hexdigit).take(12).collect();
    source.with_extension(format!("q8_0-{short}.gguf"))
}

/// Removes every Q8_0 copy beside `source` (they are made again on the next load).
pub fn remove_q8_copies(source: &Path) {
    let (Some(dir), Some(stem)) = (source.parent(), source.file_stem().and_then(|s| s.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{stem}.q8_0")) && name.ends_with(".gguf") {
            // A copy that cannot be removed is replaced by rename on the next conversion.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The Q8_0 copy of `source`, whose sha256 is `digest` (written on first use); its path. The
/// copy's name carries the source's digest, so a new source never meets an old copy.
pub fn q8_copy(source: &Path, digest: &str) -> Result<PathBuf, PrepareError> {
    let target = q8_path(source, digest);
    if target.is_file() {
        return Ok(target);
    }
    let shown = source.display().to_string();
    let fail = |message: String| PrepareError::Convert { path: shown.clone(), message };
    let mut file = std::fs::File::open(source).map_err(|e| fail(e.to_string()))?;
    // candle panics or over-allocates on some hostile headers: they are refused here first.
    gguf_guard::check(&mut std::io::BufReader::new(&file))
        .map_err(|source| PrepareError::Gguf { path: shown.clone(), source })?;
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
