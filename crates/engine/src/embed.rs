//! Sentence embedders as the engine sees them.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use anectx_core::Backend;
use anectx_models::{CandleBackend, TextTokenizer, WeightDtype};
use anectx_store::EmbedderInfo;

use crate::{EngineError, Result};

/// Turns texts into L2-normalised vectors. Implementations must be
/// deterministic for a given [`EmbedderInfo::fingerprint`].
pub trait TextEmbedder: Send + Sync {
    /// Identity of the model (fingerprint, description, dimension).
    fn info(&self) -> &EmbedderInfo;
    /// Row-major `(texts.len(), dim)` embeddings.
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>>;
}

/// A [`Backend`] plus its tokenizer. The backend runs one batch at a time.
pub struct ModelEmbedder {
    backend: Mutex<Box<dyn Backend>>,
    tokenizer: TextTokenizer,
    info: EmbedderInfo,
}

impl std::fmt::Debug for ModelEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEmbedder")
            .field("info", &self.info)
            .finish()
    }
}

impl ModelEmbedder {
    /// Wraps a backend whose embedder is described by `info`.
    pub fn new(backend: Box<dyn Backend>, tokenizer: TextTokenizer, info: EmbedderInfo) -> Self {
        Self {
            backend: Mutex::new(backend),
            tokenizer,
            info,
        }
    }

    /// The embedder built into the binary (`anectx_models::default_model`),
    /// on the CPU backend.
    pub fn embedded_default(dtype: WeightDtype) -> Result<Self> {
        let (model, tokenizer) = anectx_models::default_model::load_with_tokenizer(dtype)?;
        let dim = model.dim();
        let id = anectx_models::default_model::id();
        let backend = CandleBackend::new(Some(model), None);
        let info = EmbedderInfo {
            fingerprint: format!("{id}:{dtype:?}"),
            description: format!("built-in {id} ({dtype:?})"),
            dim,
        };
        Ok(Self::new(Box::new(backend), tokenizer, info))
    }

    /// Loads a model directory onto the CPU backend.
    pub fn load(dir: &Path, dtype: WeightDtype) -> Result<Self> {
        let (model, tokenizer) = anectx_models::load_embedder(dir, dtype)?;
        let dim = model.dim();
        let kind = format!("{:?}", model.kind());
        let backend = CandleBackend::new(Some(model), None);
        let info = EmbedderInfo {
            fingerprint: fingerprint_model_dir(dir, &format!("{dtype:?}"))?,
            description: format!("{kind} from {} ({dtype:?})", dir.display()),
            dim,
        };
        Ok(Self::new(Box::new(backend), tokenizer, info))
    }
}

impl TextEmbedder for ModelEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.tokenizer.encode_batch(texts)?;
        for t in &batch.truncations {
            tracing::debug!(
                index = t.index,
                tokens = t.original_len,
                kept = t.kept,
                "text cut to the embedder's maximum length"
            );
        }
        let backend = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        let e = backend.embed(&batch)?;
        if e.dim != self.info.dim || e.rows != texts.len() {
            return Err(EngineError::Invalid(format!(
                "embedder returned {}x{}, expected {}x{}",
                e.rows,
                e.dim,
                texts.len(),
                self.info.dim
            )));
        }
        Ok(e.data)
    }
}

/// A fingerprint of a model directory: blake3 over `config.json`,
/// `tokenizer.json`, the pooling config, the weight file's size and its first
/// and last 4 MiB, and the compute dtype. Cheap enough for every `context`
/// call; it changes whenever the model does in practice.
pub fn fingerprint_model_dir(dir: &Path, dtype: &str) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(dtype.as_bytes());
    for name in [
        "config.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        "modules.json",
    ] {
        let p = dir.join(name);
        if let Ok(bytes) = std::fs::read(&p) {
            h.update(name.as_bytes());
            h.update(&bytes);
        }
    }
    let w = dir.join("model.safetensors");
    let mut f = std::fs::File::open(&w).map_err(|e| EngineError::path(&w, e.to_string()))?;
    let len = f
        .metadata()
        .map_err(|e| EngineError::path(&w, e.to_string()))?
        .len();
    h.update(&len.to_le_bytes());
    const SPAN: u64 = 4 << 20;
    let mut buf = Vec::new();
    (&mut f)
        .take(SPAN)
        .read_to_end(&mut buf)
        .map_err(|e| EngineError::path(&w, e.to_string()))?;
    if len > SPAN {
        f.seek(SeekFrom::Start(len.saturating_sub(SPAN).max(SPAN)))
            .map_err(|e| EngineError::path(&w, e.to_string()))?;
        f.read_to_end(&mut buf)
            .map_err(|e| EngineError::path(&w, e.to_string()))?;
    }
    h.update(&buf);
    Ok(h.finalize().to_hex()[..16].to_string())
}
